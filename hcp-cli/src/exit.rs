//! Exit codes: the one place that maps an error to the code `hcp` exits with.

use std::process::ExitCode;

use hcp_core::ErrorKind;

use crate::views::{Interrupted, JobFailed};

/// The command succeeded.
pub const SUCCESS: u8 = 0;
/// An unexpected error: an unreadable state file, a bug.
pub const FAILURE: u8 = 1;
/// Invalid input: a bad flag or value, an invalid name, an unknown image, flavor or zone, a
/// malformed hosts file. Clap's own usage errors exit with the same code.
pub const INVALID_INPUT: u8 = 2;
/// The project does not exist, or the VM or job does not exist in it.
pub const NOT_FOUND: u8 = 3;
/// The request conflicts with the current state: a name taken, a VM not running, an
/// idempotency key reused with a different request (`IDEMPOTENCY_KEY_REUSED`).
pub const CONFLICT: u8 = 4;
/// The zone, host or provider lacks a capability the request needs.
pub const FEATURE_NOT_SUPPORTED: u8 = 5;
/// A project quota or the hosts' capacity refuses the request.
pub const QUOTA_EXCEEDED: u8 = 6;
/// A provider or host cannot be reached, failed in an unclassified way, or timed out.
pub const UNAVAILABLE: u8 = 7;
/// The job ran and ended `FAILED` or `CANCELLED`; its error is printed.
pub const JOB_FAILED: u8 = 8;
/// The caller is not authenticated or not allowed (remote mode: a missing, invalid or
/// insufficient `--token`).
pub const UNAUTHORIZED: u8 = 9;
/// Interrupted with Ctrl-C while waiting for a job (which the interrupt asked to cancel).
pub const INTERRUPTED: u8 = 130;

/// The exit codes as `hcp --help` prints them.
pub const HELP: &str = "\
Exit codes:
    0  success
    1  unexpected error (unreadable state file, internal error)
    2  invalid input: bad flag or value, invalid name, unknown image/flavor/zone,
       malformed hosts file
    3  not found: no such project, or no such VM or job in the project
    4  conflict: name taken, VM in the wrong state, idempotency key reused (IDEMPOTENCY_KEY_REUSED)
    5  feature not supported by the zone, host or provider
    6  quota or capacity exceeded
    7  provider unavailable, provider error or timeout
    8  job failed: the job ran and ended FAILED or CANCELLED
    9  unauthorized
  130  interrupted (Ctrl-C) while waiting: the first Ctrl-C cancels the job and waits for
       its end, a second one stops waiting

Mutating commands (vm create/start/stop/reboot/delete) wait for their job in embedded mode;
--wait also shows its progress on stderr. With --url (HCP_URL) they return once the service
accepts the job, unless --wait is given; Ctrl-C then stops waiting and the job goes on.";

/// Returns the exit code of a command that failed with `error`.
pub fn code_of(error: &anyhow::Error) -> ExitCode {
    ExitCode::from(code(error))
}

fn code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<JobFailed>().is_some() {
        // A job cancelled because the user pressed Ctrl-C is an interrupt, not a failure.
        return if crate::progress::was_interrupted() {
            INTERRUPTED
        } else {
            JOB_FAILED
        };
    }
    if error.downcast_ref::<Interrupted>().is_some() {
        return INTERRUPTED;
    }
    match error.downcast_ref::<hcp_core::Error>() {
        Some(e) => code_of_kind(e.kind()),
        None => FAILURE,
    }
}

/// Maps an error kind to its exit code.
pub fn code_of_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidSpec => INVALID_INPUT,
        // One mapping for every NOT_FOUND, the project's included, so the exit code and the
        // printed code always agree.
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Conflict => CONFLICT,
        ErrorKind::FeatureNotSupported => FEATURE_NOT_SUPPORTED,
        ErrorKind::QuotaExceeded => QUOTA_EXCEEDED,
        ErrorKind::ProviderUnavailable | ErrorKind::ProviderError | ErrorKind::Timeout => {
            UNAVAILABLE
        }
        ErrorKind::Cancelled => JOB_FAILED,
        ErrorKind::Unauthorized => UNAUTHORIZED,
        _ => FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_documented_in_help() {
        for code in [
            SUCCESS,
            FAILURE,
            INVALID_INPUT,
            NOT_FOUND,
            CONFLICT,
            FEATURE_NOT_SUPPORTED,
            QUOTA_EXCEEDED,
            UNAVAILABLE,
            JOB_FAILED,
            UNAUTHORIZED,
            INTERRUPTED,
        ] {
            let line = format!("\n{code:>5}  ");
            assert!(
                HELP.contains(&line),
                "exit code {code} is missing from the help text"
            );
        }
    }

    #[test]
    fn kinds_map_to_distinct_codes() {
        assert_eq!(code_of_kind(ErrorKind::InvalidSpec), INVALID_INPUT);
        assert_eq!(code_of_kind(ErrorKind::NotFound), NOT_FOUND);
        // An unknown project is NOT_FOUND like any other missing object: one mapping.
        let e = anyhow::Error::new(
            hcp_core::Error::new(ErrorKind::NotFound, "project `x` not found")
                .with_field("project"),
        );
        assert_eq!(code(&e), NOT_FOUND);
        assert_eq!(
            code_of_kind(ErrorKind::FeatureNotSupported),
            FEATURE_NOT_SUPPORTED
        );
        assert_eq!(code_of_kind(ErrorKind::Conflict), CONFLICT);
        assert_eq!(code_of_kind(ErrorKind::Internal), FAILURE);
        let e = anyhow::Error::new(hcp_core::Error::not_found("vm", "vm-1"));
        assert_eq!(code(&e), NOT_FOUND);
        assert_eq!(code(&anyhow::anyhow!("disk full")), FAILURE);
    }
}
