//! Hooks through which a shell records metrics about the engine (the service renders them as
//! Prometheus text). Field names used in logs and metrics live in [`fields`].

use std::fmt;
use std::time::Duration;

use crate::{ErrorKind, JobState, Operation};

/// Receives measurements from the engine. Every method must be cheap and must not block.
pub trait Observer: Send + Sync + fmt::Debug {
    /// A provider call ended after `elapsed`, with `error` when it failed.
    fn provider_call(
        &self,
        provider: &str,
        operation: Operation,
        elapsed: Duration,
        error: Option<ErrorKind>,
    ) {
        let _ = (provider, operation, elapsed, error);
    }

    /// A job ended in `state` after `elapsed` (from its first start; zero if it never started).
    fn job_finished(&self, operation: Operation, state: JobState, elapsed: Duration) {
        let _ = (operation, state, elapsed);
    }
}

/// An observer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl Observer for NoopObserver {}

/// The names of log and metric fields, shared by every emitter.
pub mod fields {
    /// The provider instance name.
    pub const PROVIDER: &str = "provider";
    /// The host name.
    pub const HOST: &str = "host";
    /// The operation name (see [`crate::Operation::as_str`]).
    pub const OPERATION: &str = "operation";
    /// HCP's VM id.
    pub const VM_ID: &str = "vm_id";
    /// The job id.
    pub const JOB_ID: &str = "job_id";
    /// The project id.
    pub const PROJECT: &str = "project";
    /// A job's state.
    pub const STATE: &str = "state";
    /// An error kind.
    pub const ERROR_KIND: &str = "error_kind";
}
