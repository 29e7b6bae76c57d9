//! The one place that turns HCP errors into Python exceptions.
//!
//! Every exception class lives in `hcp.errors` (Python), one class per [`ErrorKind`], all
//! subclasses of `hcp.HcpError`; this module picks the class and fills its attributes (`kind`,
//! `code`, `field`, `job_id`, `operation`, `context`, `temporary`, `detail`).

use hcp_core::{Error, ErrorKind, JobState};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

use crate::types::Job;

/// Why a call failed, before it becomes a Python exception.
#[derive(Debug)]
pub enum Failure {
    /// An HCP error.
    Hcp(Error),
    /// The job a call waited for ended without succeeding.
    JobEnded(Box<Job>),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Hcp(e)
    }
}

/// Returns the name of the `hcp.errors` class for `kind`.
pub fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "NotFound",
        ErrorKind::Conflict => "Conflict",
        ErrorKind::FeatureNotSupported => "FeatureNotSupported",
        ErrorKind::InvalidSpec => "InvalidSpec",
        ErrorKind::QuotaExceeded => "QuotaExceeded",
        ErrorKind::ProviderUnavailable => "ProviderUnavailable",
        ErrorKind::ProviderError => "ProviderError",
        ErrorKind::Timeout => "Timeout",
        ErrorKind::Cancelled => "Cancelled",
        ErrorKind::Unauthorized => "Unauthorized",
        ErrorKind::Internal => "Internal",
        _ => "HcpError",
    }
}

static ERRORS_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    ERRORS_MODULE
        .get_or_try_init(py, || py.import("hcp.errors").map(Bound::unbind))
        .map(|m| m.bind(py))
}

impl Failure {
    /// Builds the Python exception for this failure.
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self.build(py) {
            Ok(err) => err,
            Err(import_error) => {
                PyRuntimeError::new_err(format!("cannot raise an HCP error: {import_error}"))
            }
        }
    }

    fn build(self, py: Python<'_>) -> PyResult<PyErr> {
        let module = errors_module(py)?;
        let kwargs = PyDict::new(py);
        let (class, message) = match self {
            Failure::Hcp(e) => {
                kwargs.set_item("kind", e.kind().as_str())?;
                kwargs.set_item("code", e.code())?;
                kwargs.set_item("field", e.field())?;
                kwargs.set_item("job_id", e.context_value("job"))?;
                kwargs.set_item("operation", e.operation().map(|o| o.as_str()))?;
                let context = PyDict::new(py);
                for (k, v) in e.context() {
                    context.set_item(*k, v)?;
                }
                kwargs.set_item("context", context)?;
                kwargs.set_item("temporary", e.is_temporary())?;
                kwargs.set_item("detail", e.to_string())?;
                (class_name(e.kind()), e.message().to_string())
            }
            Failure::JobEnded(job) => {
                let (kind, code) = match &job.error {
                    Some(e) => (e.kind.clone(), e.code.clone()),
                    None if job.state == JobState::Cancelled.as_str() => {
                        ("cancelled".into(), "CANCELLED".into())
                    }
                    None => ("internal".into(), "INTERNAL".into()),
                };
                let reason = job.error.as_ref().map_or_else(
                    || "no error was recorded".to_string(),
                    |e| e.message.clone(),
                );
                let message = format!(
                    "job `{}` ({} on vm `{}`) ended {}: {reason}",
                    job.id, job.operation, job.vm_id, job.state
                );
                kwargs.set_item("kind", kind)?;
                kwargs.set_item("code", code)?;
                kwargs.set_item("field", job.error.as_ref().and_then(|e| e.field.clone()))?;
                kwargs.set_item("job_id", job.id.clone())?;
                kwargs.set_item("operation", job.operation.clone())?;
                kwargs.set_item("detail", reason)?;
                kwargs.set_item("job", Py::new(py, *job)?)?;
                ("JobFailed", message)
            }
        };
        let exception = module.getattr(class)?.call((message,), Some(&kwargs))?;
        Ok(PyErr::from_value(exception))
    }
}

/// Raises the `JobFailed` exception of a job that ended without succeeding.
pub fn job_failed(py: Python<'_>, job: Job) -> PyErr {
    Failure::JobEnded(Box::new(job)).into_pyerr(py)
}
