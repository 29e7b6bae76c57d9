//! The one place where libvirt errors become HCP errors.
//!
//! [`parse_error`] classifies every [`virt::error::Error`] by its error number (`VIR_ERR_*`) and
//! origin (`VIR_FROM_*`) into an [`ErrorKind`] and a retry status; the rest of the crate never
//! inspects libvirt errors itself.

use hcp_core::{Error, ErrorKind};
use virt::error::{ErrorDomain, ErrorNumber};

/// Converts a libvirt error into an HCP error of the right kind, marking the ones worth retrying
/// temporary.
///
/// # Behavior
/// - no domain, volume, pool, network or snapshot → [`ErrorKind::NotFound`];
/// - an operation invalid in the object's state, an object that already exists, a busy
///   resource → [`ErrorKind::Conflict`];
/// - no connection, a broken or timed-out RPC, a system error on the connection's socket
///   (libvirtd restarting) → [`ErrorKind::ProviderUnavailable`], temporary;
/// - refused credentials or permissions → [`ErrorKind::ProviderUnavailable`], permanent;
/// - an unsupported call or configuration → [`ErrorKind::FeatureNotSupported`];
/// - malformed XML or arguments → [`ErrorKind::InvalidSpec`];
/// - a host out of memory → [`ErrorKind::QuotaExceeded`];
/// - anything else → [`ErrorKind::ProviderError`].
///
/// The message, which tenants read, says what kind of failure happened and names libvirt's
/// error number; libvirt's own words (which name domains, UUIDs, paths and URIs) go into the
/// operator-only detail, with any password in a URI redacted. The context records the libvirt
/// error number and origin.
pub fn parse_error(err: &virt::error::Error) -> Error {
    let code = err.code();
    let origin = err.domain();
    let (kind, temporary) = classify(
        code.unwrap_or(ErrorNumber::InternalError),
        origin.unwrap_or(ErrorDomain::None),
        err.message(),
    );
    let what = match kind {
        ErrorKind::NotFound => "libvirt could not find an object the operation needs",
        ErrorKind::Conflict => "libvirt refused the operation in the VM's current state",
        ErrorKind::ProviderUnavailable => "cannot reach libvirt on the VM's host",
        ErrorKind::Timeout => "libvirt did not answer in time",
        ErrorKind::Cancelled => "libvirt aborted the operation",
        ErrorKind::FeatureNotSupported => "libvirt does not support the operation",
        ErrorKind::InvalidSpec => "libvirt refused an argument of the operation",
        ErrorKind::QuotaExceeded => "the VM's host is out of memory",
        _ => "libvirt reported an error",
    };
    let number = match code {
        virt::enumutil::Enum::Known(c) => format!(" ({c:?})"),
        virt::enumutil::Enum::Unknown(n) => format!(" (libvirt error {n})"),
    };
    let mut e = Error::new(kind, format!("{what}{number}"))
        .with_detail(format!("libvirt: {}", redact(err.message())))
        .with_context("libvirt_code", code.to_raw())
        .with_context("libvirt_origin", origin.to_raw());
    if temporary {
        e = e.temporary();
    }
    e
}

/// Returns the kind and whether the error is temporary for a libvirt error number, origin and
/// message (see [`parse_error`]).
pub fn classify(code: ErrorNumber, origin: ErrorDomain, message: &str) -> (ErrorKind, bool) {
    use ErrorNumber as N;
    let lower = message.to_ascii_lowercase();
    match code {
        N::NoDomain
        | N::NoStorageVolume
        | N::NoStoragePool
        | N::NoNetwork
        | N::NoDomainSnapshot
        | N::NoDomainCheckpoint
        | N::NoNodeDevice
        | N::NoInterface
        | N::NoSecret
        | N::NoNwfilter
        | N::NoDomainMetadata
        | N::DeviceMissing => (ErrorKind::NotFound, false),
        N::OperationInvalid
        | N::DomExist
        | N::StorageVolExist
        | N::NetworkExist
        | N::ResourceBusy
        | N::BlockCopyActive
        | N::SnapshotRevertRisky
        | N::MultipleDomains
        | N::StoragePoolBuilt => (ErrorKind::Conflict, false),
        N::NoConnect
        | N::InvalidConn
        | N::Rpc
        | N::UnknownHost
        | N::NoServer
        | N::GnutlsError
        | N::Ssh
        | N::Libssh
        | N::AuthUnavailable => (ErrorKind::ProviderUnavailable, true),
        N::SystemError if matches!(origin, ErrorDomain::Rpc | ErrorDomain::Remote) => {
            (ErrorKind::ProviderUnavailable, true)
        }
        N::SystemError if connection_words(&lower) => (ErrorKind::ProviderUnavailable, true),
        N::AuthFailed | N::AuthCancelled | N::AccessDenied | N::OperationDenied => {
            (ErrorKind::ProviderUnavailable, false)
        }
        N::OperationTimeout | N::AgentCommandTimeout => (ErrorKind::Timeout, true),
        N::AgentUnresponsive => (ErrorKind::ProviderError, true),
        N::OperationAborted => (ErrorKind::Cancelled, false),
        N::NoSupport | N::ArgumentUnsupported | N::OperationUnsupported | N::ConfigUnsupported => {
            (ErrorKind::FeatureNotSupported, false)
        }
        N::XmlError
        | N::XmlDetail
        | N::XmlInvalidSchema
        | N::InvalidArg
        | N::InvalidMac
        | N::OsType => (ErrorKind::InvalidSpec, false),
        N::NoMemory => (ErrorKind::QuotaExceeded, true),
        N::OperationFailed | N::InternalError | N::SystemError
            if lower.contains("cannot allocate memory") || lower.contains("out of memory") =>
        {
            (ErrorKind::QuotaExceeded, false)
        }
        N::OperationFailed | N::InternalError
            if lower.contains("monitor") && connection_words(&lower) =>
        {
            (ErrorKind::ProviderError, true)
        }
        _ => (ErrorKind::ProviderError, false),
    }
}

fn connection_words(lower: &str) -> bool {
    [
        "connection reset",
        "broken pipe",
        "end of file while reading",
        "cannot recv data",
        "cannot send data",
        "failed to connect socket",
        "connection refused",
        "client socket is closed",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// Replaces the password of any `scheme://user:password@host` in `text` by `***`.
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: ErrorNumber, origin: ErrorDomain, msg: &str) -> (ErrorKind, bool) {
        classify(code, origin, msg)
    }

    #[test]
    fn missing_objects_are_not_found() {
        for code in [
            ErrorNumber::NoDomain,
            ErrorNumber::NoStorageVolume,
            ErrorNumber::NoStoragePool,
            ErrorNumber::NoNetwork,
            ErrorNumber::NoDomainSnapshot,
        ] {
            assert_eq!(
                kind(code, ErrorDomain::Qemu, "not found"),
                (ErrorKind::NotFound, false),
                "{code:?}"
            );
        }
    }

    #[test]
    fn state_errors_are_conflicts() {
        for code in [
            ErrorNumber::OperationInvalid,
            ErrorNumber::DomExist,
            ErrorNumber::StorageVolExist,
            ErrorNumber::ResourceBusy,
        ] {
            assert_eq!(
                kind(code, ErrorDomain::Domain, "domain is not running"),
                (ErrorKind::Conflict, false),
                "{code:?}"
            );
        }
    }

    #[test]
    fn connection_errors_are_temporary_unavailability() {
        assert_eq!(
            kind(
                ErrorNumber::NoConnect,
                ErrorDomain::Remote,
                "Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory"
            ),
            (ErrorKind::ProviderUnavailable, true)
        );
        assert_eq!(
            kind(
                ErrorNumber::SystemError,
                ErrorDomain::Rpc,
                "Cannot recv data: Connection reset by peer"
            ),
            (ErrorKind::ProviderUnavailable, true)
        );
        assert_eq!(
            kind(
                ErrorNumber::InternalError,
                ErrorDomain::Rpc,
                "client socket is closed"
            ),
            (ErrorKind::ProviderError, false),
            "an internal error is not a connection error by its origin alone"
        );
        assert_eq!(
            kind(
                ErrorNumber::SystemError,
                ErrorDomain::None,
                "End of file while reading data: Input/output error"
            ),
            (ErrorKind::ProviderUnavailable, true)
        );
        assert_eq!(
            kind(ErrorNumber::Rpc, ErrorDomain::Rpc, "RPC error"),
            (ErrorKind::ProviderUnavailable, true)
        );
    }

    #[test]
    fn a_system_error_elsewhere_is_a_provider_error() {
        assert_eq!(
            kind(
                ErrorNumber::SystemError,
                ErrorDomain::Storage,
                "cannot open volume '/x': Permission denied"
            ),
            (ErrorKind::ProviderError, false)
        );
    }

    #[test]
    fn credentials_and_permissions_are_permanent_unavailability() {
        for code in [
            ErrorNumber::AuthFailed,
            ErrorNumber::AccessDenied,
            ErrorNumber::OperationDenied,
        ] {
            assert_eq!(
                kind(code, ErrorDomain::Auth, "denied"),
                (ErrorKind::ProviderUnavailable, false),
                "{code:?}"
            );
        }
    }

    #[test]
    fn other_classes() {
        assert_eq!(
            kind(ErrorNumber::NoSupport, ErrorDomain::Qemu, "x").0,
            ErrorKind::FeatureNotSupported
        );
        assert_eq!(
            kind(ErrorNumber::XmlError, ErrorDomain::Domain, "x").0,
            ErrorKind::InvalidSpec
        );
        assert_eq!(
            kind(ErrorNumber::OperationTimeout, ErrorDomain::Qemu, "x"),
            (ErrorKind::Timeout, true)
        );
        assert_eq!(
            kind(
                ErrorNumber::OperationFailed,
                ErrorDomain::Qemu,
                "qemu: cannot set up guest memory 'pc.ram': Cannot allocate memory"
            ),
            (ErrorKind::QuotaExceeded, false)
        );
        assert_eq!(
            kind(ErrorNumber::InternalError, ErrorDomain::Qemu, "boom"),
            (ErrorKind::ProviderError, false)
        );
    }

    #[test]
    fn parse_error_keeps_the_message_and_records_the_code() {
        // Errors made by libvirt itself: a NUL byte in a name is refused by the bindings as an
        // invalid argument, and an unknown URI scheme fails to connect.
        let err = virt::connect::Connect::open(Some("nosuchdriver:///x")).unwrap_err();
        let e = parse_error(&err);
        assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
        assert!(e.is_temporary());
        assert!(e.to_string().contains("libvirt_code"), "{e}");
    }

    #[test]
    fn passwords_in_uris_are_redacted() {
        let r = redact("cannot connect to qemu+ssh://root:hunter2@host/system: refused");
        assert!(!r.contains("hunter2"), "{r}");
        assert!(r.contains("qemu+ssh://root:***@host/system"), "{r}");
        assert_eq!(redact("qemu:///system"), "qemu:///system");
        assert_eq!(
            redact("a qemu+ssh://u@h/system b"),
            "a qemu+ssh://u@h/system b"
        );
    }
}
