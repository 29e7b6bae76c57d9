//! Classifies every remote error in one place: WinRM transport and authentication errors,
//! WS-Management faults, and the JSON error records HCP's scripts write.

use hcp_core::{Error, ErrorKind};
use serde::Deserialize;
use winrm_rs::{SoapError, WinrmError};

/// The error record a script writes as `{"ok": false, "error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ScriptErrorRecord {
    /// The PowerShell `ErrorCategory` (`ObjectNotFound`, `ResourceExists`, ...).
    #[serde(rename = "Category", default)]
    pub category: String,
    /// The exception message.
    #[serde(rename = "Message", default)]
    pub message: String,
    /// The cmdlet or script that failed.
    #[serde(rename = "Cmdlet", default)]
    pub cmdlet: String,
    /// PowerShell's `FullyQualifiedErrorId`.
    #[serde(rename = "FullyQualifiedErrorId", default)]
    pub fqid: String,
}

/// A remote failure, before classification.
#[derive(Debug)]
pub enum Remote {
    /// The WinRM client failed (transport, authentication, WS-Man fault).
    Winrm(WinrmError),
    /// A script ran and reported an error record.
    Script(ScriptErrorRecord),
    /// A script's output broke HCP's contract (no JSON document, unknown shape).
    Contract(String),
}

/// True when a WS-Man fault says the Receive long-poll ended without output (poll again).
pub fn is_receive_timeout(e: &WinrmError) -> bool {
    matches!(e, WinrmError::Soap(SoapError::Fault { code, .. }) if code.ends_with("TimedOut"))
}

/// Maps a remote failure on `host` to HCP's error: its kind, and whether retrying may help.
///
/// | remote | kind | retry |
/// |---|---|---|
/// | connection refused/reset, HTTP timeout | ProviderUnavailable | temporary |
/// | HTTP 401, credentials refused | ProviderUnavailable | permanent |
/// | WS-Man `QuotaLimit` (too many shells) | ProviderUnavailable | temporary |
/// | WS-Man `TimedOut` | Timeout | temporary |
/// | other WS-Man faults, NTLM errors | ProviderError | permanent |
/// | script `ObjectNotFound` | NotFound | permanent |
/// | script `ResourceExists`, `InvalidOperation` | Conflict | permanent |
/// | script `InvalidArgument` | InvalidSpec | permanent |
/// | script `QuotaExceeded`, `LimitsExceeded` | QuotaExceeded | permanent |
/// | script `ResourceBusy`, `ConnectionError` | ProviderUnavailable | temporary |
/// | other script categories | ProviderError | permanent |
///
/// Messages never carry credentials: winrm-rs keeps the password out of its errors, and HCP's
/// scripts never see it. The error's message, which tenants read, names neither the host nor
/// anything PowerShell said (its text may name hosts, paths and VM ids): it says what kind of
/// failure happened and which cmdlet reported it. The host, the PowerShell message and the WinRM
/// details go into the operator-only detail.
pub fn parse_error(host: &str, remote: Remote) -> Error {
    match remote {
        Remote::Winrm(e) => parse_winrm(host, e),
        Remote::Script(r) => {
            let kind = match r.category.as_str() {
                "ObjectNotFound" => ErrorKind::NotFound,
                "ResourceExists" | "InvalidOperation" => ErrorKind::Conflict,
                "InvalidArgument" => ErrorKind::InvalidSpec,
                "QuotaExceeded" | "LimitsExceeded" => ErrorKind::QuotaExceeded,
                "ResourceBusy" | "ConnectionError" => ErrorKind::ProviderUnavailable,
                _ => ErrorKind::ProviderError,
            };
            let what = match kind {
                ErrorKind::NotFound => "Hyper-V could not find an object the operation needs",
                ErrorKind::Conflict => "Hyper-V refused the operation in the VM's current state",
                ErrorKind::InvalidSpec => "Hyper-V refused an argument of the operation",
                ErrorKind::QuotaExceeded => "Hyper-V has no room for the operation",
                ErrorKind::ProviderUnavailable => "the Hyper-V host is busy or unreachable",
                _ => "Hyper-V reported an error",
            };
            let cmdlet = if is_cmdlet_name(&r.cmdlet) {
                format!(" ({})", r.cmdlet)
            } else {
                String::new()
            };
            let mut err = Error::new(kind, format!("{what}{cmdlet}"))
                .with_detail(format!("host {host}: {}", r.message.trim()))
                .with_context("host", host)
                .with_context("category", &r.category);
            if !r.cmdlet.is_empty() {
                err = err.with_context("cmdlet", &r.cmdlet);
            }
            if !r.fqid.is_empty() {
                err = err.with_context("error_id", &r.fqid);
            }
            if kind == ErrorKind::ProviderUnavailable {
                err = err.temporary();
            }
            err
        }
        Remote::Contract(msg) => Error::new(
            ErrorKind::ProviderError,
            "a Hyper-V script broke HCP's output contract",
        )
        .with_detail(format!("host {host}: {msg}"))
        .with_context("host", host),
    }
}

fn parse_winrm(host: &str, e: WinrmError) -> Error {
    const UNREACHABLE: &str = "cannot reach the Hyper-V host";
    let (kind, temporary, message, detail) = match &e {
        WinrmError::Http(h) => {
            let what = if h.is_connect() {
                "cannot connect"
            } else if h.is_timeout() {
                "timed out"
            } else {
                "transport error"
            };
            (
                ErrorKind::ProviderUnavailable,
                true,
                format!("{UNREACHABLE} ({what})"),
                format!("WinRM host {host}: {what}: {}", describe_reqwest(h)),
            )
        }
        WinrmError::AuthFailed(m) if m.starts_with("Kerberos") => {
            let (message, hint) = kerberos_failure(m);
            (
                ErrorKind::ProviderUnavailable,
                false,
                message.to_string(),
                format!("WinRM host {host}: {hint}: {m}"),
            )
        }
        WinrmError::AuthFailed(m) if is_refusal(m) => (
            ErrorKind::ProviderUnavailable,
            false,
            "the Hyper-V host refused HCP's credentials (HTTP 401 unauthorized)".to_string(),
            format!(
                "WinRM host {host} refused the credentials; check the winrm_username and \
                 winrm_password secrets"
            ),
        ),
        WinrmError::AuthFailed(m) => (
            ErrorKind::ProviderUnavailable,
            true,
            format!("{UNREACHABLE} (authentication exchange failed)"),
            format!("WinRM host {host}: authentication exchange failed: {m}"),
        ),
        WinrmError::Soap(SoapError::Fault { code, reason }) => {
            if code.ends_with("QuotaLimit") {
                (
                    ErrorKind::ProviderUnavailable,
                    true,
                    "the Hyper-V host is at its WinRM shell quota".to_string(),
                    format!(
                        "WinRM host {host} is at its shell quota ({code}): {}",
                        reason.trim()
                    ),
                )
            } else if code.ends_with("TimedOut") {
                (
                    ErrorKind::Timeout,
                    true,
                    "the Hyper-V host did not answer in time".to_string(),
                    format!("WinRM host {host}: {code}: {}", reason.trim()),
                )
            } else {
                (
                    ErrorKind::ProviderError,
                    false,
                    "the Hyper-V host answered with a WS-Management fault".to_string(),
                    format!("WinRM host {host}: fault {code}: {}", reason.trim()),
                )
            }
        }
        WinrmError::Soap(other) => (
            ErrorKind::ProviderError,
            false,
            "the Hyper-V host sent a malformed reply".to_string(),
            format!("WinRM host {host}: malformed reply: {other}"),
        ),
        WinrmError::Ntlm(n) => (
            ErrorKind::ProviderError,
            false,
            "the NTLM exchange with the Hyper-V host failed".to_string(),
            format!("WinRM host {host}: NTLM error: {n}"),
        ),
        WinrmError::Timeout(s) => (
            ErrorKind::Timeout,
            true,
            format!("the Hyper-V host did not answer within {s}s"),
            format!("WinRM host {host}: no answer within {s}s"),
        ),
        WinrmError::Transfer(m) => (
            ErrorKind::ProviderError,
            false,
            "a transfer to the Hyper-V host failed".to_string(),
            format!("WinRM host {host}: {m}"),
        ),
        WinrmError::Cancelled => (
            ErrorKind::Cancelled,
            false,
            "the call to the Hyper-V host was cancelled".to_string(),
            format!("WinRM host {host}: cancelled"),
        ),
        other => (
            ErrorKind::ProviderError,
            false,
            "the WinRM call to the Hyper-V host failed".to_string(),
            format!("WinRM host {host}: {other}"),
        ),
    };
    let err = Error::new(kind, message)
        .with_detail(detail)
        .with_context("host", host);
    if temporary { err.temporary() } else { err }
}

/// True for a plain cmdlet or script name (`New-VM`, `Remove-Item`): safe to show tenants.
fn is_cmdlet_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Classifies a Kerberos failure (GSS-API's words, through winrm-rs) into a message operators and
/// tenants can act on, and a hint for the operator-only detail. Every one is permanent: a retry
/// gets the same answer from the KDC or the host.
fn kerberos_failure(m: &str) -> (&'static str, &'static str) {
    let has = |s: &str| m.to_ascii_lowercase().contains(&s.to_ascii_lowercase());
    if has("Clock skew") {
        (
            "Kerberos refused: the clocks of HCP and the Hyper-V host or KDC differ too much",
            "clock skew beyond the realm's limit (5 minutes by default); synchronise the clocks",
        )
    } else if has("not found in Kerberos database") && !has("Client '") {
        (
            "Kerberos refused: the KDC does not know the Hyper-V host's service principal",
            "unknown service principal: HCP asks for HTTP/<the host's address>; register that SPN \
             for the host or use the address the SPN names",
        )
    } else if has("expired") {
        (
            "Kerberos refused: HCP's Kerberos ticket has expired",
            "expired credentials: renew the credential cache (KRB5CCNAME) or use a keytab \
             (KRB5_CLIENT_KTNAME)",
        )
    } else if has("Password incorrect")
        || has("Preauthentication failed")
        || has("Decrypt integrity check failed")
        || has("Key table entry not found")
        || has("keytab")
    {
        (
            "Kerberos refused: HCP's keytab does not match the KDC's key for its principal",
            "wrong keytab: export a fresh keytab for HCP's principal (KRB5_CLIENT_KTNAME)",
        )
    } else if has("not found in Kerberos database") {
        (
            "Kerberos refused: the KDC does not know HCP's principal",
            "unknown client principal",
        )
    } else if has("No Kerberos credentials") || has("No credentials") || has("credentials cache") {
        (
            "Kerberos failed: HCP has no Kerberos credentials",
            "no credentials: set KRB5_CLIENT_KTNAME to a keytab or KRB5CCNAME to a cache",
        )
    } else if has("rejected") {
        (
            "Kerberos refused: the Hyper-V host did not accept HCP's ticket",
            "the host answered 401 to a Kerberos ticket: check the host's SPN and keytab, and \
             the clocks",
        )
    } else {
        (
            "Kerberos failed between HCP and the Hyper-V host",
            "Kerberos error",
        )
    }
}

fn is_refusal(message: &str) -> bool {
    message.contains("rejected") || message.contains("401")
}

/// reqwest's message without any URL user-info (HCP never puts credentials in URLs, but a
/// redirect or a proxy setting might).
fn describe_reqwest(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    match (text.find("://"), text.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &text[..s + 3], &text[at + 1..]),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(category: &str) -> Remote {
        Remote::Script(ScriptErrorRecord {
            category: category.into(),
            message: "m".into(),
            cmdlet: "Get-VM".into(),
            fqid: "X".into(),
        })
    }

    #[test]
    fn messages_name_no_host_and_details_do() {
        let script = parse_error(
            "hv-secret-07",
            Remote::Script(ScriptErrorRecord {
                category: "ObjectNotFound".into(),
                message: "Hyper-V was unable to find a virtual machine with name 'x' on \
                          hv-secret-07 at D:\\VMs\\x.vhdx"
                    .into(),
                cmdlet: "Get-VM".into(),
                fqid: "InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM".into(),
            }),
        );
        let contract = parse_error("hv-secret-07", Remote::Contract("no JSON".into()));
        let http = parse_error("hv-secret-07", Remote::Winrm(WinrmError::Timeout(30)));
        let fault = parse_error(
            "hv-secret-07",
            Remote::Winrm(WinrmError::Soap(SoapError::Fault {
                code: "w:InvalidSelectors".into(),
                reason: "shell on hv-secret-07 gone".into(),
            })),
        );
        let cmdlet = parse_error(
            "hv-secret-07",
            Remote::Script(ScriptErrorRecord {
                category: "WriteError".into(),
                message: "m".into(),
                cmdlet: "C:\\hv-secret-07\\x.ps1".into(),
                fqid: String::new(),
            }),
        );
        for e in [&script, &contract, &http, &fault, &cmdlet] {
            assert!(!e.message().contains("hv-secret-07"), "{}", e.message());
            assert!(!e.message().contains("VMs"), "{}", e.message());
            assert!(e.detail().unwrap().contains("hv-secret-07"), "{e}");
            assert!(e.to_string().contains("hv-secret-07"), "{e}");
        }
        assert_eq!(
            script.message(),
            "Hyper-V could not find an object the operation needs (Get-VM)"
        );
        assert!(script.detail().unwrap().contains("x.vhdx"));
        assert_eq!(cmdlet.message(), "Hyper-V reported an error");
    }

    #[test]
    fn script_categories_map_to_kinds() {
        for (cat, kind) in [
            ("ObjectNotFound", ErrorKind::NotFound),
            ("ResourceExists", ErrorKind::Conflict),
            ("InvalidOperation", ErrorKind::Conflict),
            ("InvalidArgument", ErrorKind::InvalidSpec),
            ("QuotaExceeded", ErrorKind::QuotaExceeded),
            ("LimitsExceeded", ErrorKind::QuotaExceeded),
            ("NotSpecified", ErrorKind::ProviderError),
            ("WriteError", ErrorKind::ProviderError),
        ] {
            let e = parse_error("hv1", record(cat));
            assert_eq!(e.kind(), kind, "{cat}");
            assert!(!e.is_temporary(), "{cat}");
            assert_eq!(e.context_value("cmdlet"), Some("Get-VM"));
        }
    }

    #[test]
    fn winrm_faults_map_to_kinds_and_retry_status() {
        let quota = parse_error(
            "hv1",
            Remote::Winrm(WinrmError::Soap(SoapError::Fault {
                code: "w:QuotaLimit".into(),
                reason: "too many shells".into(),
            })),
        );
        assert_eq!(quota.kind(), ErrorKind::ProviderUnavailable);
        assert!(quota.is_temporary());
        let auth = parse_error(
            "hv1",
            Remote::Winrm(WinrmError::AuthFailed(
                "NTLM authentication rejected (bad credentials or CBT mismatch)".into(),
            )),
        );
        assert_eq!(auth.kind(), ErrorKind::ProviderUnavailable);
        assert!(!auth.is_temporary());
        assert!(auth.message().contains("401"));
        assert!(auth.detail().unwrap().contains("winrm_password"));
        let other = parse_error(
            "hv1",
            Remote::Winrm(WinrmError::Soap(SoapError::Fault {
                code: "w:InvalidSelectors".into(),
                reason: "shell gone".into(),
            })),
        );
        assert_eq!(other.kind(), ErrorKind::ProviderError);
        assert!(is_receive_timeout(&WinrmError::Soap(SoapError::Fault {
            code: "w:TimedOut".into(),
            reason: String::new()
        })));
    }
}
