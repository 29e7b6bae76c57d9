//! Classifies every error the PVE API returns, in one place.
//!
//! | PVE answer                                                        | kind                  | retry     |
//! |-------------------------------------------------------------------|-----------------------|-----------|
//! | 400 `Parameter verification failed.` with `errors: {param: msg}`  | `InvalidSpec` (field) | permanent |
//! | `snapshot '…' does not exist` (a rollback or delete task)          | `NotFound` (snapshot) | permanent |
//! | `Configuration file '…' does not exist`, `no such …`, 404          | `NotFound`            | permanent |
//! | `… already exists`, `… already used`                              | `Conflict`            | permanent |
//! | `can't lock file '…' - got timeout`, `VM is locked (…)`           | `Conflict`            | temporary |
//! | `… not running`, `… is running`, `incomplete snapshot`             | `Conflict`            | permanent |
//! | `snapshot feature is not available` (the VM's storage)            | `FeatureNotSupported` | permanent |
//! | 401, 403 (`authentication failure`, `Permission check failed`)    | `ProviderUnavailable` | permanent |
//! | `cluster not ready - no quorum?`, 502, 503, 504, 595, 596          | `ProviderUnavailable` | temporary |
//! | 501                                                               | `FeatureNotSupported` | permanent |
//! | anything else                                                     | `ProviderError`       | permanent |
//!
//! PVE's messages name nodes (`nodes/pve1/qemu-server/100.conf`, `on node 'pve1'`). Tenants must
//! not see node names, so the message HCP returns has every known node name replaced by `node`;
//! PVE's own text goes into the error's context (`pve_message`), which only operators see.

use hcp_core::{Error, ErrorKind};

/// The context value marking an error as a VM lock conflict worth retrying.
pub const LOCK: &str = "lock";

/// Builds the error for a snapshot `name` the VM does not have: `NotFound`, naming the snapshot
/// in its message and in the `snapshot` context.
pub fn missing_snapshot(name: &str) -> Error {
    Error::not_found("snapshot", name).with_context("snapshot", name)
}

/// Returns true when `e` says a snapshot does not exist (not the VM).
pub fn is_missing_snapshot(e: &Error) -> bool {
    e.kind() == ErrorKind::NotFound && e.context_value("snapshot").is_some()
}

/// Reads the name out of PVE's `snapshot 'NAME' does not exist`.
fn missing_snapshot_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("snapshot '")?;
    let (name, tail) = rest.split_once('\'')?;
    tail.trim()
        .eq_ignore_ascii_case("does not exist")
        .then_some(name)
}

/// Classifies a PVE error answer: its HTTP `status`, PVE's `message` and, for parameter errors,
/// the per-parameter `errors` object. `nodes` are the node names to keep out of the message.
pub fn parse_error(
    status: u16,
    message: &str,
    errors: Option<&serde_json::Value>,
    nodes: &[String],
) -> Error {
    let raw = message.trim();
    let lower = raw.to_ascii_lowercase();
    // Tenants read neither node names nor VMIDs (native ids); operators get PVE's own words.
    let clean = scrub_ids(&scrub(raw, nodes));
    if let Some(serde_json::Value::Object(fields)) = errors
        && let Some((param, why)) = fields.iter().next()
    {
        let why = why
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| why.to_string());
        return Error::invalid(
            param.clone(),
            format!(
                "Proxmox VE refused parameter `{param}`: {}",
                scrub(why.trim(), nodes)
            ),
        )
        .with_detail(format!("Proxmox VE: {raw}"))
        .with_context("pve_status", status)
        .with_context("pve_message", raw);
    }
    if let Some(name) = missing_snapshot_name(raw) {
        return missing_snapshot(name)
            .with_detail(format!("Proxmox VE: {raw}"))
            .with_context("pve_status", status)
            .with_context("pve_message", raw);
    }
    let (kind, temporary, lock) = if lower.contains("can't lock file")
        || lower.contains("got timeout") && lower.contains("lock")
        || lower.starts_with("vm is locked")
        || lower.contains("is locked (")
    {
        (ErrorKind::Conflict, true, true)
    } else if status == 401 || status == 403 {
        (ErrorKind::ProviderUnavailable, false, false)
    } else if lower.contains("no quorum") || matches!(status, 502 | 503 | 504 | 595 | 596) {
        (ErrorKind::ProviderUnavailable, true, false)
    } else if status == 404
        || lower.contains("does not exist")
        || lower.starts_with("no such")
        || lower.contains("no such vm")
    {
        (ErrorKind::NotFound, false, false)
    } else if lower.contains("already exists")
        || lower.contains("already used")
        || lower.contains("not running")
        || lower.contains("is running")
        || lower.contains("incomplete snapshot")
    {
        (ErrorKind::Conflict, false, false)
    } else if lower.contains("snapshot feature is not available") {
        (ErrorKind::FeatureNotSupported, false, false)
    } else if status == 400 {
        (ErrorKind::InvalidSpec, false, false)
    } else if status == 501 {
        (ErrorKind::FeatureNotSupported, false, false)
    } else {
        (ErrorKind::ProviderError, false, false)
    };
    let text = if clean.is_empty() {
        format!("Proxmox VE answered HTTP {status}")
    } else {
        format!("Proxmox VE: {clean}")
    };
    // Operators read PVE's own words, node names included.
    let mut e = Error::new(kind, text)
        .with_detail(if raw.is_empty() {
            String::new()
        } else {
            format!("Proxmox VE: {raw}")
        })
        .with_context("pve_status", status)
        .with_context("pve_message", raw);
    if lock {
        e = e.with_context("pve_reason", LOCK);
    }
    if temporary { e.temporary() } else { e }
}

/// Classifies the exit status of a PVE task that did not end `OK`.
pub fn task_error(exitstatus: &str, nodes: &[String]) -> Error {
    parse_error(500, exitstatus, None, nodes).with_context("pve_task", "failed")
}

/// Returns true when `e` is a VM lock conflict (retried with back-off).
pub fn is_lock(e: &Error) -> bool {
    e.context_value("pve_reason") == Some(LOCK)
}

/// Returns true when `e` says a VMID is taken ("VM 200 already exists", "config file already
/// exists"): a create tries another id.
pub fn is_taken(e: &Error) -> bool {
    e.kind() == ErrorKind::Conflict
        && !e.is_temporary()
        && e.context_value("pve_message")
            .is_some_and(|m| m.contains("already exists"))
}

/// Replaces every run of three or more digits in `text` with `N`: VMIDs (100 and up), in `VM 200`,
/// `lock-200.conf` or a UPID, are native ids that a tenant's text must not carry.
pub fn scrub_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= 3 {
            out.push('N');
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Replaces every node name in `text` with `node`, where it stands as a word (between
/// characters that cannot be part of a node name).
pub fn scrub(text: &str, nodes: &[String]) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.find(word).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !word(c)).unwrap_or(rest.len());
        let token = &rest[..end];
        // A node name may end a sentence: compare without trailing dots too.
        let trimmed = token.trim_end_matches('.');
        if nodes.iter().any(|n| n == token) {
            out.push_str("node");
        } else if !trimmed.is_empty() && nodes.iter().any(|n| n == trimmed) {
            out.push_str("node");
            out.push_str(&token[trimmed.len()..]);
        } else {
            out.push_str(token);
        }
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nodes() -> Vec<String> {
        vec!["pve1".into(), "pve10".into()]
    }

    #[test]
    fn classification_table() {
        let cases: [(u16, &str, ErrorKind, bool); 12] = [
            (
                500,
                "Configuration file 'nodes/pve1/qemu-server/123.conf' does not exist",
                ErrorKind::NotFound,
                false,
            ),
            (
                500,
                "unable to create VM 200 - VM 200 already exists on node 'pve10'",
                ErrorKind::Conflict,
                false,
            ),
            (
                500,
                "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout",
                ErrorKind::Conflict,
                true,
            ),
            (500, "VM is locked (clone)", ErrorKind::Conflict, true),
            (500, "VM 100 not running", ErrorKind::Conflict, false),
            (
                401,
                "authentication failure",
                ErrorKind::ProviderUnavailable,
                false,
            ),
            (
                403,
                "Permission check failed (/vms/100, VM.PowerMgmt)",
                ErrorKind::ProviderUnavailable,
                false,
            ),
            (
                500,
                "cluster not ready - no quorum?",
                ErrorKind::ProviderUnavailable,
                true,
            ),
            (
                595,
                "No route to host",
                ErrorKind::ProviderUnavailable,
                true,
            ),
            (
                501,
                "Method not implemented",
                ErrorKind::FeatureNotSupported,
                false,
            ),
            (500, "something odd", ErrorKind::ProviderError, false),
            (
                500,
                "snapshot name 's1' already used",
                ErrorKind::Conflict,
                false,
            ),
        ];
        for (status, msg, kind, temporary) in cases {
            let e = parse_error(status, msg, None, &nodes());
            assert_eq!(e.kind(), kind, "{msg}");
            assert_eq!(e.is_temporary(), temporary, "{msg}");
            assert_eq!(
                is_lock(&e),
                temporary && kind == ErrorKind::Conflict,
                "{msg}"
            );
            assert!(!e.message().contains("pve1"), "{}", e.message());
        }
    }

    #[test]
    fn snapshot_errors_as_pve_words_them() {
        // PVE's rollback and delete tasks end with these exit statuses (fakepve and PVE 8/9
        // `AbstractConfig::snapshot_rollback` / `snapshot_delete` word them alike).
        let e = task_error("snapshot 'never-taken' does not exist", &nodes());
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(is_missing_snapshot(&e));
        assert!(e.message().contains("`never-taken`"), "{}", e.message());
        assert_eq!(e.context_value("snapshot"), Some("never-taken"));
        assert_eq!(
            e.context_value("pve_message"),
            Some("snapshot 'never-taken' does not exist")
        );
        // A missing VM is NotFound too, but not a missing snapshot.
        let vm = parse_error(
            500,
            "Configuration file 'nodes/pve1/qemu-server/123.conf' does not exist",
            None,
            &nodes(),
        );
        assert_eq!(vm.kind(), ErrorKind::NotFound);
        assert!(!is_missing_snapshot(&vm));
        let e = task_error(
            "unable to rollback to incomplete snapshot (snapstate = delete)",
            &nodes(),
        );
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(!e.is_temporary());
        let e = task_error("snapshot feature is not available", &nodes());
        assert_eq!(e.kind(), ErrorKind::FeatureNotSupported);
        // Only the exact wording names a snapshot.
        assert!(!is_missing_snapshot(&parse_error(
            500,
            "snapshot 's1' is odd",
            None,
            &nodes()
        )));
    }

    #[test]
    fn parameter_errors_name_the_parameter() {
        let e = parse_error(
            400,
            "Parameter verification failed.",
            Some(&json!({"memory": "value must have a minimum value of 16"})),
            &nodes(),
        );
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
        assert_eq!(e.field(), Some("memory"));
        assert!(e.message().contains("minimum value of 16"), "{e}");
    }

    #[test]
    fn node_names_stay_in_the_context() {
        let e = parse_error(500, "VM 200 already exists on node 'pve10'", None, &nodes());
        assert_eq!(
            e.message(),
            "Proxmox VE: VM N already exists on node 'node'"
        );
        assert_eq!(
            e.context_value("pve_message"),
            Some("VM 200 already exists on node 'pve10'")
        );
        assert_eq!(
            e.detail(),
            Some("Proxmox VE: VM 200 already exists on node 'pve10'")
        );
        let t = task_error("clone failed: pve1 is full", &nodes());
        assert!(!t.message().contains("pve1"));
        let t = task_error(
            "can't lock file '/var/lock/qemu-server/lock-4711.conf' - got timeout",
            &nodes(),
        );
        assert!(!t.message().contains("4711"), "{}", t.message());
        assert_eq!(
            scrub_ids("VM 200 on disk 0, 12 GB"),
            "VM N on disk 0, 12 GB"
        );
        assert_eq!(scrub_ids("UPID:n:0000A1B2:123456:"), "UPID:n:NA1B2:N:");
        assert_eq!(
            scrub(
                "nodes/pve1/qemu-server/1.conf on pve10. pve1x apve1",
                &nodes()
            ),
            "nodes/node/qemu-server/1.conf on node. pve1x apve1"
        );
        assert!(is_taken(&parse_error(
            500,
            "unable to create VM 200: config file already exists",
            None,
            &nodes()
        )));
        assert!(!is_taken(&parse_error(
            500,
            "VM 200 is running",
            None,
            &nodes()
        )));
    }
}
