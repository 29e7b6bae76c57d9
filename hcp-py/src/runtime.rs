//! The one tokio runtime every `hcp` object shares, and the two bridges from a Rust future to
//! Python: a blocking call that releases the GIL and turns Ctrl-C into `KeyboardInterrupt`
//! ([`block_on`]), and an asyncio awaitable ([`awaitable`], pyo3-async-runtimes on the same
//! runtime). Neither needs a Unix socket, so the module builds on Windows and macOS too.

use std::future::Future;
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors::Failure;

/// How often a blocking call wakes up to let Python run its signal handlers.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Returns the shared multi-thread runtime, starting it on first use.
///
/// # Errors
/// A `RuntimeError` when the operating system refuses to start its threads.
pub fn runtime() -> PyResult<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hcp-runtime")
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start HCP's tokio runtime: {e}")))?;
    // Another thread may have won the race; its runtime is as good as ours.
    let _ = RUNTIME.set(rt);
    let rt = RUNTIME.get().expect("the runtime was just set");
    // pyo3-async-runtimes runs awaitables on this runtime too (a second call finds it set).
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(rt);
    Ok(rt)
}

/// Runs `fut` to completion on the shared runtime while the calling thread waits without the
/// GIL.
///
/// pyo3-async-runtimes has no blocking form that honours signals (its `run` drives an asyncio
/// loop), so this stays: a portable channel wait, no sockets.
///
/// # Behavior
/// The future runs as its own task, so work it started (a submission being written) finishes
/// even when the wait is interrupted. The calling thread waits on a channel with a timeout, not
/// on the runtime, and every [`SIGNAL_POLL`] briefly takes the GIL to run Python's signal
/// handlers: Ctrl-C raises `KeyboardInterrupt` within about 50 ms and abandons the wait (the
/// task is aborted at its next await point).
///
/// # Errors
/// The future's [`Failure`] as its Python exception, `KeyboardInterrupt` (or whatever a signal
/// handler raised), or a `RuntimeError` when the task panicked.
pub fn block_on<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: Send + 'static,
{
    let rt = runtime()?;
    let (tx, rx) = mpsc::sync_channel(1);
    let handle = rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let outcome = py.detach(move || {
        loop {
            match rx.recv_timeout(SIGNAL_POLL) {
                Ok(outcome) => return Ok(Some(outcome)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(interrupt) = Python::attach(|py| py.check_signals()) {
                        handle.abort();
                        return Err(interrupt);
                    }
                }
                // The task ended without sending: it panicked.
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    })?;
    match outcome {
        Some(Ok(value)) => Ok(value),
        Some(Err(failure)) => Err(failure.into_pyerr(py)),
        None => Err(PyRuntimeError::new_err(
            "an HCP task panicked; this is a bug in HCP",
        )),
    }
}

/// A task's outcome, turned into its Python value or exception where pyo3-async-runtimes hands
/// it to the event loop (on a blocking thread that holds the GIL), so no runtime worker thread
/// takes the GIL for it.
struct Outcome<T>(Result<T, Failure>);

impl<'py, T: IntoPyObject<'py>> IntoPyObject<'py> for Outcome<T> {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.0 {
            Ok(value) => value.into_bound_py_any(py),
            Err(failure) => Err(failure.into_pyerr(py)),
        }
    }
}

/// Runs `fut` on the shared runtime and returns an asyncio awaitable of its result, for the
/// event loop running in the calling thread (pyo3-async-runtimes).
///
/// # Behavior
/// Cancelling the awaitable drops the future at its next await point; work it had already
/// handed on (a submission being written) completes. The result becomes a Python object, or
/// the failure its `hcp` exception, when the loop receives it.
///
/// # Errors
/// A `RuntimeError` when the runtime cannot start, or when no event loop runs in this thread.
pub fn awaitable<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    runtime()?;
    pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(Outcome(fut.await)) })
}
