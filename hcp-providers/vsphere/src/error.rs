//! Classifies every error vCenter returns, in one place.
//!
//! | vim25 fault                                                         | kind                  | retry     |
//! |---------------------------------------------------------------------|-----------------------|-----------|
//! | `ManagedObjectNotFound`, `NotFound`                                 | `NotFound`            | permanent |
//! | `DuplicateName`, `AlreadyExists`, `FileAlreadyExists`               | `Conflict`            | permanent |
//! | `InvalidPowerState`                                                 | `Conflict`            | permanent |
//! | `InvalidState`, `TaskInProgress`, `ConcurrentAccess`                | `Conflict`            | temporary |
//! | `InvalidArgument`, `InvalidDeviceSpec`, `InvalidProperty` (named)   | `InvalidSpec` (field) | permanent |
//! | `InsufficientResourcesFault` and its `Insufficient…` subtypes       | `QuotaExceeded`       | permanent |
//! | `NoPermission`, `InvalidLogin`, `NotAuthenticated`                  | `ProviderUnavailable` | permanent |
//! | `HostNotConnected`, `HostCommunication`, `RequestCanceled`          | `ProviderUnavailable` | temporary |
//! | `MethodNotFound`, `NotSupported`, `NotImplemented`                  | `FeatureNotSupported` | permanent |
//! | anything else                                                       | `ProviderError`       | permanent |
//!
//! A `PlaceVm` (DRS placement) answered with `MethodNotFound`, `NotImplemented`, `NotSupported`,
//! `InvalidState`, `InvalidArgument` or `InvalidRequest` is vCenter declining to recommend, not
//! a failed create ([`is_drs_declined`]): the create goes on without DRS's recommendation.
//!
//! vCenter's messages name hosts, datastores, clusters and managed object ids (`vm-42`). Tenants
//! see none of them: the message HCP returns has every known inventory name replaced by
//! `object` and every managed object id by `id`; vCenter's own text goes into the operator
//! detail and the context (`vim_fault`, `vim_message`). Authentication faults never carry the
//! user's password: vCenter does not echo it, and HCP never puts a request body into an error.

use hcp_core::{Error, ErrorKind};

use crate::soap::Fault;

/// The fault that says the session is gone (HCP logs in again and retries the call once).
pub const NOT_AUTHENTICATED: &str = "NotAuthenticated";

/// Classifies a vim25 fault; `names` are inventory names (hosts, datastores, clusters) to keep
/// out of the tenant's message.
pub fn parse_error(fault: &Fault, names: &[String]) -> Error {
    let kind = fault.kind.as_str();
    let (error_kind, temporary) = match kind {
        "ManagedObjectNotFound" | "NotFound" => (ErrorKind::NotFound, false),
        "DuplicateName" | "AlreadyExists" | "FileAlreadyExists" => (ErrorKind::Conflict, false),
        "InvalidPowerState" => (ErrorKind::Conflict, false),
        "InvalidState" | "TaskInProgress" | "ConcurrentAccess" => (ErrorKind::Conflict, true),
        "InvalidArgument" | "InvalidDeviceSpec" | "InvalidProperty" | "InvalidRequest" => {
            (ErrorKind::InvalidSpec, false)
        }
        "NoPermission" | "InvalidLogin" | NOT_AUTHENTICATED => {
            (ErrorKind::ProviderUnavailable, false)
        }
        "HostNotConnected" | "HostCommunication" | "RequestCanceled" => {
            (ErrorKind::ProviderUnavailable, true)
        }
        "MethodNotFound" | "NotSupported" | "NotImplemented" => {
            (ErrorKind::FeatureNotSupported, false)
        }
        k if k.starts_with("Insufficient") => (ErrorKind::QuotaExceeded, false),
        _ => (ErrorKind::ProviderError, false),
    };
    let clean = scrub(&fault.message, names);
    let what = if kind.is_empty() { "fault" } else { kind };
    let text = if clean.is_empty() {
        format!("vCenter answered with a {what} fault")
    } else {
        format!("vCenter: {clean}")
    };
    let mut e = if error_kind == ErrorKind::InvalidSpec {
        let field = fault.property.clone().unwrap_or_else(|| "spec".into());
        // The property path is vim25's (`spec.location.pool`), never an inventory name.
        Error::invalid(field, text)
    } else {
        Error::new(error_kind, text)
    };
    e = e
        .with_detail(format!("vCenter {what}: {}", fault.message))
        .with_context("vim_fault", what)
        .with_context("vim_message", &fault.message);
    if temporary { e.temporary() } else { e }
}

/// Returns true when `e` came from a `NotAuthenticated` fault.
pub fn is_not_authenticated(e: &Error) -> bool {
    e.context_value("vim_fault") == Some(NOT_AUTHENTICATED)
}

/// Returns true when `e` came from a `MethodNotFound` fault (a call the server lacks).
pub fn is_method_not_found(e: &Error) -> bool {
    matches!(
        e.context_value("vim_fault"),
        Some("MethodNotFound" | "NotImplemented")
    )
}

/// Returns true when `e` is vCenter declining a `PlaceVm` (DRS placement) rather than failing:
/// the method is missing (`MethodNotFound`, `NotImplemented`, `NotSupported`: an old vCenter or
/// one without DRS), DRS is off or the cluster cannot place now (`InvalidState`), or DRS
/// rejects the request's shape (`InvalidArgument`, `InvalidRequest`). HCP then clones into the
/// cluster's pool and lets vCenter place the VM. Lost connections and authentication faults are
/// not declines: the create fails with them.
pub fn is_drs_declined(e: &Error) -> bool {
    matches!(
        e.context_value("vim_fault"),
        Some(
            "MethodNotFound"
                | "NotImplemented"
                | "NotSupported"
                | "InvalidState"
                | "InvalidArgument"
                | "InvalidRequest"
                | "DrsDisabledOnVm"
                | "DisallowedOperationOnFailoverHost"
        )
    )
}

/// Replaces every known inventory name in `text` with `object` and every managed object id
/// (`vm-42`, `host-7`, `session[…]…`) with `id`.
pub fn scrub(text: &str, names: &[String]) -> String {
    let mut out = text.trim().to_string();
    let mut sorted: Vec<&String> = names.iter().filter(|n| n.len() >= 2).collect();
    sorted.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in sorted {
        out = out.replace(n.as_str(), "object");
    }
    let word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '[' | ']' | ':');
    let mut scrubbed = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while !rest.is_empty() {
        let start = rest.find(word).unwrap_or(rest.len());
        scrubbed.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !word(c)).unwrap_or(rest.len());
        let token = &rest[..end];
        // The simulator writes references as `Type:id` (`VirtualMachine:vm-42`).
        let (prefix, id) = match token.rsplit_once(':') {
            Some((t, id)) => (&token[..=t.len()], id),
            None => ("", token),
        };
        if is_moref_id(id) {
            scrubbed.push_str(prefix);
            scrubbed.push_str("id");
        } else {
            scrubbed.push_str(token);
        }
        rest = &rest[end..];
    }
    scrubbed
}

/// True for vCenter managed object ids: `vm-42`, `host-7`, `datastore-3`, `session[…]…`.
fn is_moref_id(token: &str) -> bool {
    if token.starts_with("session[") {
        return true;
    }
    let Some((prefix, num)) = token.rsplit_once('-') else {
        return false;
    };
    const PREFIXES: [&str; 15] = [
        "vm",
        "host",
        "datastore",
        "domain",
        "group",
        "resgroup",
        "network",
        "dvportgroup",
        "dvs",
        "snapshot",
        "task",
        "datacenter",
        "folder",
        "cluster",
        "pool",
    ];
    PREFIXES.contains(&prefix) && !num.is_empty() && num.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: &str, message: &str) -> Fault {
        Fault {
            kind: kind.into(),
            message: message.into(),
            property: None,
        }
    }

    #[test]
    fn classification_table() {
        let cases: [(&str, ErrorKind, bool); 16] = [
            ("ManagedObjectNotFound", ErrorKind::NotFound, false),
            ("NotFound", ErrorKind::NotFound, false),
            ("DuplicateName", ErrorKind::Conflict, false),
            ("InvalidPowerState", ErrorKind::Conflict, false),
            ("InvalidState", ErrorKind::Conflict, true),
            ("TaskInProgress", ErrorKind::Conflict, true),
            ("ConcurrentAccess", ErrorKind::Conflict, true),
            ("InvalidArgument", ErrorKind::InvalidSpec, false),
            ("InvalidDeviceSpec", ErrorKind::InvalidSpec, false),
            (
                "InsufficientResourcesFault",
                ErrorKind::QuotaExceeded,
                false,
            ),
            (
                "InsufficientMemoryResourcesFault",
                ErrorKind::QuotaExceeded,
                false,
            ),
            ("NoPermission", ErrorKind::ProviderUnavailable, false),
            ("InvalidLogin", ErrorKind::ProviderUnavailable, false),
            ("HostNotConnected", ErrorKind::ProviderUnavailable, true),
            ("MethodNotFound", ErrorKind::FeatureNotSupported, false),
            ("SomethingNew", ErrorKind::ProviderError, false),
        ];
        for (kind, want, temporary) in cases {
            let e = parse_error(&fault(kind, "x"), &[]);
            assert_eq!(e.kind(), want, "{kind}");
            assert_eq!(e.is_temporary(), temporary, "{kind}");
            assert_eq!(e.context_value("vim_fault"), Some(kind));
        }
        let e = parse_error(
            &Fault {
                kind: "InvalidArgument".into(),
                message: "A specified parameter was not correct: spec.location.pool".into(),
                property: Some("spec.location.pool".into()),
            },
            &[],
        );
        assert_eq!(e.field(), Some("spec.location.pool"));
        assert!(is_not_authenticated(&parse_error(
            &fault(NOT_AUTHENTICATED, "The session is not authenticated."),
            &[]
        )));
        for declined in ["MethodNotFound", "InvalidState", "NotSupported"] {
            let f = Fault {
                kind: declined.into(),
                message: String::new(),
                property: None,
            };
            assert!(is_drs_declined(&parse_error(&f, &[])), "{declined}");
        }
        for failed in ["NotAuthenticated", "HostCommunication", "NoPermission"] {
            let f = Fault {
                kind: failed.into(),
                message: String::new(),
                property: None,
            };
            assert!(!is_drs_declined(&parse_error(&f, &[])), "{failed}");
        }
        assert!(is_method_not_found(&parse_error(
            &fault("MethodNotFound", "CancelTask"),
            &[]
        )));
    }

    #[test]
    fn tenants_see_no_names_or_ids() {
        let names = vec![
            "DC0_C0_H0".to_string(),
            "LocalDS_0".to_string(),
            "DC0_C0".to_string(),
        ];
        let e = parse_error(
            &fault(
                "InvalidState",
                "VM vm-42 on host DC0_C0_H0 (host-21) in DC0_C0 cannot use LocalDS_0; session[ab-1]cd",
            ),
            &names,
        );
        let m = e.message();
        for hidden in [
            "vm-42",
            "DC0_C0_H0",
            "host-21",
            "DC0_C0",
            "LocalDS_0",
            "session[",
        ] {
            assert!(!m.contains(hidden), "{m}");
        }
        assert_eq!(
            m,
            "vCenter: VM id on host object (id) in object cannot use object; id"
        );
        assert!(e.detail().unwrap().contains("DC0_C0_H0"));
        assert_eq!(scrub("a vm-x and my-vm-1", &[]), "a vm-x and my-vm-1");
        assert_eq!(
            scrub(
                "VirtualMachine:vm-27 does not implement: AcquireTicket",
                &[]
            ),
            "VirtualMachine:id does not implement: AcquireTicket"
        );
    }
}
