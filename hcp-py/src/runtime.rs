//! The one tokio runtime every `hcp` object shares, and the two bridges from a Rust future to
//! Python: a blocking call that releases the GIL and turns Ctrl-C into `KeyboardInterrupt`, and
//! an awaitable for asyncio.

use std::future::Future;
use std::sync::OnceLock;
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
    // Awaitables run on the same runtime; a second call finds it already set, which is fine.
    let _ = pyo3_async_runtimes::tokio::init_with_runtime(rt);
    Ok(rt)
}

/// Runs `fut` to completion on the shared runtime while the calling thread waits without the
/// GIL.
///
/// # Behavior
/// The future runs as its own task, so work it started (a submission being written) finishes
/// even when the wait is interrupted. Every [`SIGNAL_POLL`] the waiting thread briefly takes the
/// GIL to run Python's signal handlers: Ctrl-C raises `KeyboardInterrupt` within about 50 ms and
/// abandons the wait (the task is aborted at its next await point).
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
    let mut handle = rt.spawn(fut);
    let joined = py.detach(|| {
        rt.block_on(async {
            let mut tick = tokio::time::interval(SIGNAL_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    joined = &mut handle => return Ok(joined),
                    _ = tick.tick() => {
                        if let Err(interrupt) = Python::attach(|py| py.check_signals()) {
                            handle.abort();
                            return Err(interrupt);
                        }
                    }
                }
            }
        })
    })?;
    match joined {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(failure)) => Err(failure.into_pyerr(py)),
        Err(e) => Err(PyRuntimeError::new_err(format!("an HCP task failed: {e}"))),
    }
}

/// Wraps `fut` in an asyncio future of the running event loop; the future runs on the shared
/// runtime and cancelling the asyncio future cancels it.
///
/// # Errors
/// A `RuntimeError` when no event loop is running in this thread.
pub fn awaitable<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    runtime()?;
    pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(Outcome(fut.await)) })
}

/// A result that becomes its value or raises its exception when handed to Python, so a failure
/// is turned into a Python exception on the thread that already holds the GIL.
struct Outcome<T>(Result<T, Failure>);

impl<'py, T> IntoPyObject<'py> for Outcome<T>
where
    T: IntoPyObject<'py>,
{
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        match self.0 {
            Ok(value) => value.into_bound_py_any(py),
            Err(failure) => Err(failure.into_pyerr(py)),
        }
    }
}
