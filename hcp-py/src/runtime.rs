//! The one tokio runtime every `hcp` object shares, and the two bridges from a Rust future to
//! Python: a blocking call that releases the GIL and turns Ctrl-C into `KeyboardInterrupt`
//! ([`block_on`]), and an asyncio awaitable ([`awaitable`], pyo3-async-runtimes on the same
//! runtime). Neither needs a Unix socket, so the module builds on Windows and macOS too.
//!
//! # Interpreter exit
//! An awaitable's result reaches its event loop from a runtime thread that takes the GIL. A
//! thread that waits for the GIL while the interpreter finalizes is killed by CPython (3.11:
//! `pthread_exit`), and unwinding that thread out of a held GIL aborts the whole process. So
//! every such hand-over is tracked, and an `atexit` hook ([`drain`], registered when the
//! module loads) lets the ones in flight finish with the GIL released, then refuses new ones,
//! before the interpreter starts to finalize.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, OnceLock, mpsc};
use std::time::Duration;

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;
use pyo3_async_runtimes::generic::{ContextExt, Runtime as BridgeRuntime};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::errors::Failure;

/// How often a blocking call wakes up to let Python run its signal handlers.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// The longest the `atexit` hook waits for results being handed to event loops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The hand-overs of awaitables' results to their event loops (each takes the GIL).
static HANDOVERS: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Set by [`drain`]: the interpreter is exiting, so no runtime thread may take the GIL again.
static EXITING: AtomicBool = AtomicBool::new(false);

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
    Ok(RUNTIME.get().expect("the runtime was just set"))
}

/// Lets the results being handed to event loops arrive, then stops any later hand-over from
/// taking the GIL. The module registers it with `atexit`, which runs before the interpreter
/// finalizes.
///
/// # Behavior
/// Waits at most [`DRAIN_TIMEOUT`], with the GIL released. An awaitable still running after
/// this never delivers its result (nobody can await it any more).
#[pyfunction]
pub fn drain(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    HANDOVERS.close();
    let Some(rt) = RUNTIME.get() else {
        return;
    };
    py.detach(|| {
        rt.block_on(async {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, HANDOVERS.wait()).await;
        });
    });
}

/// pyo3-async-runtimes' view of the shared runtime: futures run on it as they are, the
/// GIL-taking hand-overs are tracked for [`drain`] and skipped once the interpreter exits.
struct Bridge;

tokio::task_local! {
    static LOCALS: TaskLocals;
}

fn shared() -> &'static Runtime {
    // `awaitable` starts the runtime before pyo3-async-runtimes can spawn anything.
    RUNTIME
        .get()
        .expect("the runtime starts before any awaitable exists")
}

impl BridgeRuntime for Bridge {
    type JoinError = tokio::task::JoinError;
    type JoinHandle = JoinHandle<()>;

    fn spawn<F>(fut: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        shared().spawn(fut)
    }

    fn spawn_blocking<F>(f: F) -> JoinHandle<()>
    where
        F: FnOnce() + Send + 'static,
    {
        HANDOVERS.spawn_blocking_on(
            move || {
                if !EXITING.load(Ordering::SeqCst) {
                    f();
                }
            },
            shared().handle(),
        )
    }
}

impl ContextExt for Bridge {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        Box::pin(LOCALS.scope(locals, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        LOCALS.try_with(Clone::clone).ok()
    }
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
    pyo3_async_runtimes::generic::future_into_py::<Bridge, _, _>(py, async move {
        Ok(Outcome(fut.await))
    })
}
