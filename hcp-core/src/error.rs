//! One error type for every layer of HCP: a kind, a retry status, the operation, context and a source.
//!
//! Every error carries two texts, set where it is made: a tenant-safe `message` that never names
//! hosts, native ids, datastores, paths or provider URLs, and an optional operator `detail` that
//! may. Everything a tenant reads shows the message only; logs and operator views show both.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Operation;

/// Says what went wrong, in terms a caller can act on.
///
/// Shells map a kind to their own world in one place each (an HTTP status, an exit code,
/// a Python exception class).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The VM, job, host, image or other object does not exist (or is not visible to the caller).
    NotFound,
    /// The request conflicts with the current state (a running VM cannot be deleted, a name is taken,
    /// an idempotency key was reused with a different request).
    Conflict,
    /// The provider, host or zone lacks a capability the request needs.
    FeatureNotSupported,
    /// The request itself is invalid; [`Error::field`] names the offending field.
    InvalidSpec,
    /// A quota or capacity limit refuses the request.
    QuotaExceeded,
    /// The provider or host cannot be reached or refuses the connection or credentials.
    ProviderUnavailable,
    /// The provider answered with an error HCP could not classify more precisely.
    ProviderError,
    /// The operation did not finish in time.
    Timeout,
    /// The operation was cancelled.
    Cancelled,
    /// The caller is not authenticated or not allowed to act.
    Unauthorized,
    /// A bug or broken invariant inside HCP.
    Internal,
}

impl ErrorKind {
    /// Returns the stable, upper-case code of this kind (`NOT_FOUND`, `FEATURE_NOT_SUPPORTED`, ...).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::Conflict => "CONFLICT",
            ErrorKind::FeatureNotSupported => "FEATURE_NOT_SUPPORTED",
            ErrorKind::InvalidSpec => "INVALID_SPEC",
            ErrorKind::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorKind::ProviderUnavailable => "PROVIDER_UNAVAILABLE",
            ErrorKind::ProviderError => "PROVIDER_ERROR",
            ErrorKind::Timeout => "TIMEOUT",
            ErrorKind::Cancelled => "CANCELLED",
            ErrorKind::Unauthorized => "UNAUTHORIZED",
            ErrorKind::Internal => "INTERNAL",
        }
    }

    /// Returns the lower-case name used in logs, metrics and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::FeatureNotSupported => "feature_not_supported",
            ErrorKind::InvalidSpec => "invalid_spec",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::ProviderUnavailable => "provider_unavailable",
            ErrorKind::ProviderError => "provider_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Says whether retrying the same call may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorStatus {
    /// Retrying will not help.
    Permanent,
    /// Retrying later may help (a timeout, a busy host, a dropped connection).
    Temporary,
    /// The error was temporary, but the retries ran out.
    Persistent,
}

impl fmt::Display for ErrorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorStatus::Permanent => "permanent",
            ErrorStatus::Temporary => "temporary",
            ErrorStatus::Persistent => "persistent",
        })
    }
}

/// Code of the error returned when an idempotency key is reused with a different request.
pub const CODE_IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
/// Code of the error returned while the first request with an idempotency key is still being accepted.
pub const CODE_IDEMPOTENCY_KEY_IN_PROGRESS: &str = "IDEMPOTENCY_KEY_IN_PROGRESS";

/// Code of the error returned when a job write carries a lease token that is no longer the job's
/// (its lease lapsed and another worker claimed it; the kind is [`ErrorKind::Conflict`]).
pub const CODE_LEASE_LOST: &str = "LEASE_LOST";

/// Code of the error returned when no host has room for a request now (the kind is
/// [`ErrorKind::QuotaExceeded`]; a project's quota keeps the kind's own code).
pub const CODE_CAPACITY_EXHAUSTED: &str = "CAPACITY_EXHAUSTED";

/// Code of the error returned when a conditional write carries no `If-Match` version.
pub const CODE_PRECONDITION_REQUIRED: &str = "PRECONDITION_REQUIRED";
/// Code of the error returned when a conditional write's `If-Match` version is no longer current.
pub const CODE_PRECONDITION_FAILED: &str = "PRECONDITION_FAILED";

/// The most characters of a caller's value that an error message repeats back.
pub const ECHO_MAX_CHARS: usize = 64;

/// Returns `value` as an error message may repeat it back to its caller: control characters
/// escaped and at most [`ECHO_MAX_CHARS`] characters, with the rest counted instead of shown.
/// A 10 KB name stays a one-line, short error.
pub fn echo(value: &str) -> String {
    excerpt(value, ECHO_MAX_CHARS)
}

/// Returns at most `max_chars` characters of `value`, control characters escaped, with the rest
/// counted instead of shown (`… (9936 more characters)`).
pub fn excerpt(value: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (shown, c) in value.chars().enumerate() {
        if shown == max_chars {
            let rest = value.chars().count() - shown;
            out.push_str(&format!("… ({rest} more characters)"));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The error of every HCP call.
///
/// `Display` prints one line for logs and operators: kind, status, operation, context, message,
/// detail and source. Tenants read [`Error::message`] only (through [`ErrorInfo::tenant`]).
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    status: ErrorStatus,
    message: String,
    // Boxed strs keep `Error` small enough to return by value everywhere.
    detail: Option<Box<str>>,
    code: Option<&'static str>,
    field: Option<Box<str>>,
    operation: Option<Operation>,
    context: Vec<(&'static str, String)>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// The result of every HCP call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Creates a permanent error of `kind` with a human-readable, tenant-safe message.
    ///
    /// The message must not name hosts, native ids, datastores, paths or provider URLs: put those
    /// in [`Error::with_detail`].
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            status: ErrorStatus::Permanent,
            message: message.into(),
            detail: None,
            code: None,
            field: None,
            operation: None,
            context: Vec::new(),
            source: None,
        }
    }

    /// Creates an [`ErrorKind::InvalidSpec`] error that names the offending field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("{field}: {}", message.into());
        Error::new(ErrorKind::InvalidSpec, message).with_field(field)
    }

    /// Creates an [`ErrorKind::NotFound`] error for an object of type `what` called `id`.
    pub fn not_found(what: &str, id: impl fmt::Display) -> Self {
        let id = echo(&id.to_string());
        Error::new(ErrorKind::NotFound, format!("{what} `{id}` not found"))
    }

    /// Creates an [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    /// Creates an [`ErrorKind::FeatureNotSupported`] error naming the operation and capability in
    /// its message and the provider in its operator detail.
    pub fn unsupported(provider: &str, operation: Operation, capability: &str, hint: &str) -> Self {
        let mut message =
            format!("the hypervisor does not support `{capability}`, which {operation} needs");
        if !hint.is_empty() {
            message.push_str("; ");
            message.push_str(hint);
        }
        Error::new(ErrorKind::FeatureNotSupported, message)
            .with_detail(format!("provider `{provider}`"))
            .with_operation(operation)
            .with_context("provider", provider)
            .with_context("capability", capability)
    }

    /// Adds operator-only text (host names, native ids, paths, the provider's own words).
    ///
    /// A second call appends to the detail already there, separated by `; `. Tenants never see
    /// the detail; `Display`, logs and operator views do.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        if detail.is_empty() {
            return self;
        }
        self.detail = Some(match self.detail.take() {
            Some(d) => format!("{d}; {detail}").into(),
            None => detail.into(),
        });
        self
    }

    /// Marks the error temporary: retrying later may succeed.
    pub fn temporary(mut self) -> Self {
        self.status = ErrorStatus::Temporary;
        self
    }

    /// Marks a temporary error persistent: its retries ran out.
    pub fn persist(mut self) -> Self {
        if self.status == ErrorStatus::Temporary {
            self.status = ErrorStatus::Persistent;
        }
        self
    }

    /// Sets a stable code that overrides the kind's code (for example [`CODE_IDEMPOTENCY_KEY_REUSED`]).
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// Names the request field the error is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into().into());
        self
    }

    /// Records the operation that failed, unless one is already recorded.
    pub fn with_operation(mut self, operation: Operation) -> Self {
        if self.operation.is_none() {
            self.operation = Some(operation);
        }
        self
    }

    /// Adds a context pair, unless the key is already present.
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        if !self.context.iter().any(|(k, _)| *k == key) {
            self.context.push((key, value.to_string()));
        }
        self
    }

    /// Attaches the underlying error.
    pub fn set_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Returns the kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Returns the retry status.
    pub fn status(&self) -> ErrorStatus {
        self.status
    }

    /// Returns true when retrying may succeed.
    pub fn is_temporary(&self) -> bool {
        self.status == ErrorStatus::Temporary
    }

    /// Returns the stable code: the override set with [`Error::with_code`], or the kind's code.
    pub fn code(&self) -> &'static str {
        self.code.unwrap_or_else(|| self.kind.code())
    }

    /// Returns the tenant-safe message, without context or detail.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Returns the operator-only detail, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Returns the message followed by the detail in parentheses: the text operators read.
    pub fn operator_message(&self) -> String {
        join_detail(&self.message, self.detail.as_deref())
    }

    /// Returns the request field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// Returns the operation that failed, if recorded.
    pub fn operation(&self) -> Option<Operation> {
        self.operation
    }

    /// Returns the context pairs.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// Returns the value of one context key.
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.context
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind, self.status)?;
        if let Some(op) = self.operation {
            write!(f, " at {op}")?;
        }
        if !self.context.is_empty() {
            f.write_str(", context: { ")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}: {v}")?;
            }
            f.write_str(" }")?;
        }
        write!(f, " => {}", self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(source) = &self.source {
            write!(f, ", source: {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug prints the same single line: errors end up in logs and must stay readable.
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

fn join_detail(message: &str, detail: Option<&str>) -> String {
    match detail {
        Some(d) => format!("{message} ({d})"),
        None => message.to_string(),
    }
}

/// A serializable summary of an error, kept on failed jobs and sent over the wire.
///
/// Holds the tenant-safe `message` and the operator-only `detail` apart; [`ErrorInfo::tenant`]
/// drops the detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// The error kind.
    pub kind: ErrorKind,
    /// The stable code.
    pub code: String,
    /// The tenant-safe message, without the operator context (provider, host) that `Display` adds.
    pub message: String,
    /// Operator-only text (host names, native ids, paths); absent in tenant views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The offending field, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorInfo {
    /// Returns the tenant view: the same error without its operator detail.
    pub fn tenant(&self) -> ErrorInfo {
        ErrorInfo {
            detail: None,
            ..self.clone()
        }
    }

    /// Returns the message followed by the detail in parentheses: the text operators read.
    pub fn operator_message(&self) -> String {
        join_detail(&self.message, self.detail.as_deref())
    }
}

impl From<&Error> for ErrorInfo {
    fn from(e: &Error) -> Self {
        ErrorInfo {
            kind: e.kind,
            code: e.code().to_string(),
            message: e.message.clone(),
            detail: e.detail.as_deref().map(str::to_string),
            field: e.field.as_deref().map(str::to_string),
        }
    }
}

impl From<ErrorInfo> for Error {
    fn from(info: ErrorInfo) -> Self {
        let mut e = Error::new(info.kind, info.message);
        e.detail = info.detail.map(String::into_boxed_str);
        e.field = info.field.map(String::into_boxed_str);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_bounds_and_escapes() {
        assert_eq!(echo("web-1"), "web-1");
        assert_eq!(echo("a\nb"), "a\\nb");
        let long = "k".repeat(10_000);
        let e = echo(&long);
        assert!(e.starts_with(&"k".repeat(ECHO_MAX_CHARS)), "{e}");
        assert!(e.ends_with("(9936 more characters)"), "{e}");
        assert!(e.len() < 100, "{e}");
        assert_eq!(
            echo(&"é".repeat(ECHO_MAX_CHARS)),
            "é".repeat(ECHO_MAX_CHARS)
        );
        let e = Error::not_found("vm", "x".repeat(5000));
        assert!(e.message().len() < 120, "{e}");
    }

    #[test]
    fn display_is_one_line_with_context() {
        let e = Error::new(ErrorKind::NotFound, "vm `x` not found")
            .with_operation(Operation::StartVm)
            .with_context("provider", "sim")
            .with_context("provider", "ignored");
        let s = e.to_string();
        assert_eq!(
            s,
            "not_found (permanent) at start_vm, context: { provider: sim } => vm `x` not found"
        );
        assert!(!s.contains('\n'));
    }

    #[test]
    fn temporary_becomes_persistent_only_when_temporary() {
        let e = Error::new(ErrorKind::Timeout, "t").temporary().persist();
        assert_eq!(e.status(), ErrorStatus::Persistent);
        let e = Error::new(ErrorKind::Timeout, "t").persist();
        assert_eq!(e.status(), ErrorStatus::Permanent);
    }

    #[test]
    fn detail_is_shown_to_operators_only() {
        let e = Error::new(
            ErrorKind::ProviderError,
            "the hypervisor refused to start the VM",
        )
        .with_detail("host hv-secret-01: Start-VM failed")
        .with_detail("vmid 4711")
        .with_context("host", "hv-secret-01");
        assert_eq!(e.message(), "the hypervisor refused to start the VM");
        assert_eq!(
            e.detail(),
            Some("host hv-secret-01: Start-VM failed; vmid 4711")
        );
        let shown = e.to_string();
        assert!(
            shown.contains("hv-secret-01: Start-VM failed; vmid 4711"),
            "{shown}"
        );
        assert!(format!("{e:?}").contains("vmid 4711"));
        assert_eq!(
            e.operator_message(),
            "the hypervisor refused to start the VM (host hv-secret-01: Start-VM failed; vmid 4711)"
        );

        let info = ErrorInfo::from(&e);
        assert_eq!(info.detail.as_deref(), e.detail());
        assert_eq!(info.operator_message(), e.operator_message());
        let tenant = info.tenant();
        assert_eq!(tenant.detail, None);
        assert_eq!(tenant.message, "the hypervisor refused to start the VM");
        let json = serde_json::to_string(&tenant).unwrap();
        assert!(!json.contains("hv-secret-01"), "{json}");
        assert!(!json.contains("detail"), "{json}");
        // The operator copy keeps it through a round trip (jobs are stored as JSON).
        let back: ErrorInfo = serde_json::from_str(&serde_json::to_string(&info).unwrap()).unwrap();
        assert_eq!(back, info);
        assert_eq!(Error::from(back).detail(), e.detail());
    }

    #[test]
    fn empty_detail_is_ignored() {
        let e = Error::new(ErrorKind::NotFound, "gone").with_detail("");
        assert_eq!(e.detail(), None);
        assert_eq!(e.operator_message(), "gone");
        assert_eq!(e.to_string(), "not_found (permanent) => gone");
    }

    #[test]
    fn code_override_wins() {
        let e = Error::new(ErrorKind::Conflict, "x").with_code(CODE_IDEMPOTENCY_KEY_REUSED);
        assert_eq!(e.code(), "IDEMPOTENCY_KEY_REUSED");
        assert_eq!(Error::invalid("name", "bad").code(), "INVALID_SPEC");
        assert_eq!(Error::invalid("name", "bad").field(), Some("name"));
    }
}
