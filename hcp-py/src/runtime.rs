//! The one tokio runtime every `hcp` object shares, and the two bridges from a Rust future to
//! Python: a blocking call that releases the GIL and turns Ctrl-C into `KeyboardInterrupt`, and
//! a [`Bridge`] that hands results to an asyncio event loop.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use pyo3::IntoPyObjectExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

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
    Ok(RUNTIME.get().expect("the runtime was just set"))
}

/// Runs `fut` to completion on the shared runtime while the calling thread waits without the
/// GIL.
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

/// A value a finished task hands to Python, converted once the GIL is held.
type Convert = Box<dyn for<'py> FnOnce(Python<'py>) -> PyResult<Py<PyAny>> + Send>;

/// How one task ended.
type Completion = Result<Convert, Failure>;

/// Hands results of tasks on the shared runtime to one asyncio event loop without ever taking
/// the GIL on a runtime thread.
///
/// # Behavior
/// A finished task queues its result and writes a byte to a socket pair; the loop watches the
/// other end (`loop.add_reader(bridge.fileno(), ...)`) and calls [`Bridge::drain`] in its own
/// thread, where results become Python objects and exceptions. Runtime threads therefore never
/// touch the interpreter, which keeps interpreter shutdown safe while tasks are still running.
#[pyclass(frozen, module = "hcp._hcp")]
pub struct Bridge {
    inner: Arc<BridgeInner>,
}

struct BridgeInner {
    reader: UnixStream,
    writer: UnixStream,
    done: Mutex<Vec<(u64, Completion)>>,
    tasks: Mutex<HashMap<u64, AbortHandle>>,
    next: AtomicU64,
}

impl BridgeInner {
    fn complete(&self, ticket: u64, completion: Completion) {
        lock(&self.done).push((ticket, completion));
        // A full socket buffer means the loop has a wake-up pending already.
        let _ = (&self.writer).write(&[1]);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bridge {
    /// Starts `fut` on the shared runtime and returns its ticket; its result arrives through
    /// [`Bridge::drain`].
    ///
    /// # Errors
    /// A `RuntimeError` when the runtime cannot start.
    pub fn spawn<T, F>(&self, fut: F) -> PyResult<u64>
    where
        F: Future<Output = Result<T, Failure>> + Send + 'static,
        T: for<'py> IntoPyObject<'py> + Send + 'static,
    {
        let rt = runtime()?;
        let ticket = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        let handle = rt.spawn(async move {
            let completion = fut
                .await
                .map(|value| -> Convert { Box::new(move |py| value.into_py_any(py)) });
            inner.complete(ticket, completion);
        });
        lock(&self.inner.tasks).insert(ticket, handle.abort_handle());
        Ok(ticket)
    }
}

#[pymethods]
impl Bridge {
    /// Creates a bridge for one event loop.
    #[new]
    fn new() -> PyResult<Self> {
        let (reader, writer) = UnixStream::pair().map_err(|e| {
            PyRuntimeError::new_err(format!("cannot create the asyncio bridge: {e}"))
        })?;
        for s in [&reader, &writer] {
            s.set_nonblocking(true).map_err(|e| {
                PyRuntimeError::new_err(format!("cannot create the asyncio bridge: {e}"))
            })?;
        }
        Ok(Bridge {
            inner: Arc::new(BridgeInner {
                reader,
                writer,
                done: Mutex::new(Vec::new()),
                tasks: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
            }),
        })
    }

    /// The file descriptor the event loop watches for finished tasks.
    fn fileno(&self) -> i32 {
        self.inner.reader.as_raw_fd()
    }

    /// Returns every finished task as ``(ticket, ok, value)``: the result when ``ok``, else the
    /// exception to raise.
    fn drain(&self, py: Python<'_>) -> Vec<(u64, bool, Py<PyAny>)> {
        let mut buf = [0u8; 256];
        while matches!((&self.inner.reader).read(&mut buf), Ok(n) if n > 0) {}
        let done = std::mem::take(&mut *lock(&self.inner.done));
        let mut tasks = lock(&self.inner.tasks);
        done.into_iter()
            .map(|(ticket, completion)| {
                tasks.remove(&ticket);
                let outcome = match completion {
                    Ok(convert) => convert(py),
                    Err(failure) => Err(failure.into_pyerr(py)),
                };
                match outcome {
                    Ok(value) => (ticket, true, value),
                    Err(err) => (ticket, false, err.into_value(py).into_any()),
                }
            })
            .collect()
    }

    /// Stops a task whose result is no longer wanted (its awaiting coroutine was cancelled).
    fn cancel(&self, ticket: u64) {
        if let Some(handle) = lock(&self.inner.tasks).remove(&ticket) {
            handle.abort();
        }
    }

    /// The number of tasks started and not yet drained.
    fn __len__(&self) -> usize {
        lock(&self.inner.tasks).len()
    }
}
