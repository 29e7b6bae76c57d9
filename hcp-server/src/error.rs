//! The one place that maps errors to HTTP: [`hcp_core::ErrorKind`] → status, and every failure →
//! one problem-JSON body (RFC 9457) with a stable `code`.

use hcp_core::{
    CODE_IDEMPOTENCY_KEY_IN_PROGRESS, CODE_IDEMPOTENCY_KEY_REUSED, CODE_PRECONDITION_FAILED,
    CODE_PRECONDITION_REQUIRED, Error, ErrorKind, ErrorStatus,
};
use poem::http::StatusCode;
use poem_openapi::{ApiResponse, Object, payload::Json};

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Code of a request body larger than the configured limit.
pub const CODE_PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
/// Code of a route that does not exist.
pub const CODE_ROUTE_NOT_FOUND: &str = "NOT_FOUND";
/// Code of a method the route does not offer.
pub const CODE_METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
/// Code of a request body in a media type the route does not accept.
pub const CODE_UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
/// Code of a request the server did not answer within its request timeout.
pub const CODE_REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
/// Code of a request without credentials on a route that needs them (`401`).
pub const CODE_UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// Code of a token that failed a check (`401`); `detail` names the check.
pub const CODE_INVALID_TOKEN: &str = "INVALID_TOKEN";
/// Code of a request beyond its caller's request budget (`429`, with `Retry-After`).
pub const CODE_RATE_LIMITED: &str = "RATE_LIMITED";
/// Code of a caller that lacks the role a route needs (`403`).
pub const CODE_FORBIDDEN: &str = "FORBIDDEN";
/// Code of a cookie-authenticated unsafe request without a valid CSRF token (`403`).
pub const CODE_CSRF_FAILED: &str = "CSRF_FAILED";
/// Code of a browser login that failed (forged or expired state, refused code, bad ID token).
pub const CODE_LOGIN_FAILED: &str = "LOGIN_FAILED";
/// Code of a token that cannot be checked because the identity provider is unavailable (`503`).
pub const CODE_AUTH_PROVIDER_UNAVAILABLE: &str = "IDENTITY_PROVIDER_UNAVAILABLE";
/// Code of a console token this server never issued or no longer knows (`404`).
pub const CODE_CONSOLE_TOKEN_NOT_FOUND: &str = "CONSOLE_TOKEN_NOT_FOUND";
/// Code of a console token that already opened a connection, or was voided (`410`).
pub const CODE_CONSOLE_TOKEN_USED: &str = "CONSOLE_TOKEN_USED";
/// Code of a console token past its connect deadline (`410`).
pub const CODE_CONSOLE_TOKEN_EXPIRED: &str = "CONSOLE_TOKEN_EXPIRED";
/// Code of a console token presented by another caller than the one it was issued to (`403`).
pub const CODE_CONSOLE_TOKEN_FOREIGN: &str = "CONSOLE_TOKEN_FOREIGN";

/// One error body for every failure.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct Problem {
    /// A URI naming the problem type: `urn:hcp:problem:<code>`.
    #[oai(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// The stable code (`INVALID_SPEC`, `NOT_FOUND`, `FEATURE_NOT_SUPPORTED`, `CONFLICT`,
    /// `IDEMPOTENCY_KEY_REUSED`, `IDEMPOTENCY_KEY_IN_PROGRESS`, `QUOTA_EXCEEDED`,
    /// `PROVIDER_UNAVAILABLE`, `PAYLOAD_TOO_LARGE`, `UNAUTHENTICATED`, `INVALID_TOKEN`,
    /// `FORBIDDEN`, `CSRF_FAILED`, `CONSOLE_TOKEN_NOT_FOUND`, `CONSOLE_TOKEN_USED`,
    /// `CONSOLE_TOKEN_EXPIRED`, `CONSOLE_TOKEN_FOREIGN`, `SERVER_GROUP_POLICY` (409: a hard
    /// server-group policy rules the create out), `SERVER_GROUP_NOT_EMPTY` (409: a group with
    /// VMs is deleted), ...).
    pub code: String,
    /// The error kind (`invalid_spec`, `not_found`, ...), as in `hcp_core::ErrorKind`.
    pub kind: String,
    /// The offending request field, when there is one.
    #[oai(skip_serializing_if_is_none)]
    pub field: Option<String>,
    /// True when retrying the same request later may succeed.
    pub retryable: bool,
    /// The request id (also in the `x-request-id` response header and the logs).
    #[oai(skip_serializing_if_is_none)]
    pub request_id: Option<String>,
}

/// Maps an error kind (and code) to its HTTP status. The only such table in the service.
pub fn status_of(kind: ErrorKind, code: &str) -> StatusCode {
    if code == CODE_IDEMPOTENCY_KEY_REUSED {
        return StatusCode::UNPROCESSABLE_ENTITY;
    }
    match code {
        CODE_PAYLOAD_TOO_LARGE => return StatusCode::PAYLOAD_TOO_LARGE,
        CODE_METHOD_NOT_ALLOWED => return StatusCode::METHOD_NOT_ALLOWED,
        CODE_UNSUPPORTED_MEDIA_TYPE => return StatusCode::UNSUPPORTED_MEDIA_TYPE,
        CODE_REQUEST_TIMEOUT => return StatusCode::SERVICE_UNAVAILABLE,
        CODE_FORBIDDEN | CODE_CSRF_FAILED => return StatusCode::FORBIDDEN,
        CODE_AUTH_PROVIDER_UNAVAILABLE => return StatusCode::SERVICE_UNAVAILABLE,
        CODE_CONSOLE_TOKEN_NOT_FOUND => return StatusCode::NOT_FOUND,
        CODE_CONSOLE_TOKEN_USED | CODE_CONSOLE_TOKEN_EXPIRED => return StatusCode::GONE,
        CODE_CONSOLE_TOKEN_FOREIGN => return StatusCode::FORBIDDEN,
        CODE_PRECONDITION_REQUIRED => return StatusCode::PRECONDITION_REQUIRED,
        CODE_PRECONDITION_FAILED => return StatusCode::PRECONDITION_FAILED,
        CODE_RATE_LIMITED => return StatusCode::TOO_MANY_REQUESTS,
        hcp_core::CODE_CAPACITY_EXHAUSTED => return StatusCode::CONFLICT,
        _ => {}
    }
    match kind {
        ErrorKind::InvalidSpec => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::FeatureNotSupported => StatusCode::CONFLICT,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        // A project's quota: the caller is not allowed more (`403`, as OpenStack and Kubernetes
        // answer an exceeded quota); `429` is kept for request budgets.
        ErrorKind::QuotaExceeded => StatusCode::FORBIDDEN,
        ErrorKind::ProviderUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::ProviderError => StatusCode::BAD_GATEWAY,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Cancelled => StatusCode::CONFLICT,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn title_of(kind: ErrorKind, code: &str) -> &'static str {
    match code {
        CODE_IDEMPOTENCY_KEY_REUSED => return "Idempotency key reused with a different request",
        CODE_IDEMPOTENCY_KEY_IN_PROGRESS => return "Idempotency key still in progress",
        CODE_PAYLOAD_TOO_LARGE => return "Request body too large",
        CODE_METHOD_NOT_ALLOWED => return "Method not allowed",
        CODE_UNSUPPORTED_MEDIA_TYPE => return "Unsupported media type",
        CODE_REQUEST_TIMEOUT => return "Request timed out",
        CODE_UNAUTHENTICATED => return "Authentication required",
        CODE_INVALID_TOKEN => return "Invalid token",
        CODE_FORBIDDEN => return "Forbidden",
        CODE_CSRF_FAILED => return "CSRF token missing or invalid",
        CODE_LOGIN_FAILED => return "Login failed",
        CODE_AUTH_PROVIDER_UNAVAILABLE => return "Identity provider unavailable",
        CODE_CONSOLE_TOKEN_NOT_FOUND => return "Console token not found",
        CODE_CONSOLE_TOKEN_USED => return "Console token already used",
        CODE_CONSOLE_TOKEN_EXPIRED => return "Console token expired",
        CODE_CONSOLE_TOKEN_FOREIGN => return "Console token issued to another caller",
        CODE_RATE_LIMITED => return "Too many requests",
        hcp_core::CODE_CAPACITY_EXHAUSTED => return "Capacity exhausted",
        hcp_core::CODE_SERVER_GROUP_POLICY => return "Server group policy cannot be met",
        hcp_core::CODE_SERVER_GROUP_NOT_EMPTY => return "Server group not empty",
        _ => {}
    }
    match kind {
        ErrorKind::InvalidSpec => "Invalid request",
        ErrorKind::NotFound => "Not found",
        ErrorKind::FeatureNotSupported => "Feature not supported",
        ErrorKind::Conflict => "Conflict",
        ErrorKind::QuotaExceeded => "Quota exceeded",
        ErrorKind::ProviderUnavailable => "Provider unavailable",
        ErrorKind::ProviderError => "Provider error",
        ErrorKind::Timeout => "Timeout",
        ErrorKind::Cancelled => "Cancelled",
        ErrorKind::Unauthorized => "Unauthorized",
        _ => "Internal error",
    }
}

/// The most characters of `field` a problem body carries.
const MAX_FIELD_CHARS: usize = 128;
/// The most characters of `detail` a problem body carries.
const MAX_DETAIL_CHARS: usize = 2048;

impl Problem {
    /// Builds the problem body of an engine error. The detail is the error's message without its
    /// context, which may name hosts and native ids.
    pub fn from_error(e: &Error) -> Problem {
        Problem::build(
            e.kind(),
            e.code(),
            e.message().to_string(),
            e.field().map(str::to_string),
            e.status(),
        )
    }

    /// Builds a problem body for a transport-level failure (a too-large body, an unknown route)
    /// with `code` and `kind`.
    pub fn transport(
        kind: ErrorKind,
        code: &str,
        detail: impl Into<String>,
        field: Option<String>,
    ) -> Problem {
        Problem::build(kind, code, detail.into(), field, ErrorStatus::Permanent)
    }

    fn build(
        kind: ErrorKind,
        code: &str,
        detail: String,
        field: Option<String>,
        status: ErrorStatus,
    ) -> Problem {
        let http = status_of(kind, code);
        // Sources shorten what they repeat of a caller's input (`hcp_core::echo`); this is the
        // net under them, so no problem body grows with its request.
        let field = field.map(|f| hcp_core::excerpt(&f, MAX_FIELD_CHARS));
        let detail = hcp_core::excerpt(&detail, MAX_DETAIL_CHARS);
        Problem {
            problem_type: format!(
                "urn:hcp:problem:{}",
                code.to_ascii_lowercase().replace('_', "-")
            ),
            title: title_of(kind, code).to_string(),
            status: http.as_u16(),
            detail,
            code: code.to_string(),
            kind: kind.as_str().to_string(),
            field,
            retryable: status == ErrorStatus::Temporary || http == StatusCode::SERVICE_UNAVAILABLE,
            request_id: crate::http::REQUEST_ID.try_with(Clone::clone).ok(),
        }
    }

    /// Returns the HTTP status.
    pub fn http_status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Renders the problem as a response.
    pub fn into_response(self) -> poem::Response {
        let status = self.http_status();
        let body = serde_json::json!({
            "type": self.problem_type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "kind": self.kind,
            "field": self.field,
            "retryable": self.retryable,
            "request_id": self.request_id,
        });
        let mut body = body;
        if let Some(obj) = body.as_object_mut() {
            obj.retain(|_, v| !v.is_null());
        }
        poem::Response::builder()
            .status(status)
            .content_type(PROBLEM_CONTENT_TYPE)
            .body(body.to_string())
    }
}

/// The error response of every operation: a problem-JSON body with a 4xx or 5xx status.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request was refused; `code` says why and `field` names the offending field.
    #[oai(status_range = "4XX", content_type = "application/problem+json")]
    Client(StatusCode, Json<Problem>),
    /// The server or a provider failed; `retryable` says whether to try again.
    #[oai(status_range = "5XX", content_type = "application/problem+json")]
    Server(StatusCode, Json<Problem>),
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        let status = p.http_status();
        if status.is_server_error() {
            ApiError::Server(status, Json(p))
        } else {
            ApiError::Client(status, Json(p))
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        if e.kind() == ErrorKind::Internal {
            tracing::error!(error = %e, "internal error");
        }
        Problem::from_error(&e).into()
    }
}

/// The result of every operation.
pub type ApiResult<T> = Result<T, ApiError>;

/// Converts any poem error that escaped an operation (an unknown route, a bad parameter, an
/// unsupported media type) into a problem response; responses already in problem form pass.
pub fn problem_from_poem(err: poem::Error) -> poem::Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    let message = err.to_string();
    let field = err
        .downcast_ref::<poem_openapi::error::ParseParamError>()
        .map(|e| e.name.to_string())
        .or_else(|| {
            err.downcast_ref::<poem_openapi::error::ParsePathError>()
                .map(|e| e.name.to_string())
        });
    let (kind, code) = match status {
        StatusCode::NOT_FOUND => (ErrorKind::NotFound, CODE_ROUTE_NOT_FOUND),
        StatusCode::METHOD_NOT_ALLOWED => (ErrorKind::InvalidSpec, CODE_METHOD_NOT_ALLOWED),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (ErrorKind::InvalidSpec, CODE_UNSUPPORTED_MEDIA_TYPE),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorKind::InvalidSpec, CODE_PAYLOAD_TOO_LARGE),
        s if s.is_client_error() => (ErrorKind::InvalidSpec, ErrorKind::InvalidSpec.code()),
        _ => (ErrorKind::Internal, ErrorKind::Internal.code()),
    };
    let detail = match code {
        CODE_ROUTE_NOT_FOUND => {
            "no such route; see /openapi.json for the routes this service offers".to_string()
        }
        CODE_METHOD_NOT_ALLOWED => {
            "this route does not offer this method; see /openapi.json".to_string()
        }
        _ if kind == ErrorKind::Internal => {
            tracing::error!(error = %message, "unhandled error");
            "internal error".to_string()
        }
        _ => message,
    };
    Problem::transport(kind, code, detail, field).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_the_documented_status() {
        let cases = [
            (ErrorKind::InvalidSpec, 400),
            (ErrorKind::NotFound, 404),
            (ErrorKind::FeatureNotSupported, 409),
            (ErrorKind::Conflict, 409),
            (ErrorKind::QuotaExceeded, 403),
            (ErrorKind::ProviderUnavailable, 503),
            (ErrorKind::ProviderError, 502),
            (ErrorKind::Timeout, 504),
            (ErrorKind::Cancelled, 409),
            (ErrorKind::Unauthorized, 401),
            (ErrorKind::Internal, 500),
        ];
        for (kind, status) in cases {
            assert_eq!(status_of(kind, kind.code()).as_u16(), status, "{kind}");
        }
        assert_eq!(
            status_of(ErrorKind::Conflict, CODE_IDEMPOTENCY_KEY_REUSED).as_u16(),
            422
        );
        // Quota, capacity and request budgets each have their own status.
        assert_eq!(
            status_of(ErrorKind::QuotaExceeded, hcp_core::CODE_CAPACITY_EXHAUSTED).as_u16(),
            409
        );
        assert_eq!(
            status_of(ErrorKind::QuotaExceeded, CODE_RATE_LIMITED).as_u16(),
            429
        );
        assert_eq!(
            status_of(ErrorKind::Conflict, CODE_IDEMPOTENCY_KEY_IN_PROGRESS).as_u16(),
            409
        );
        for (code, status) in [
            (CODE_UNAUTHENTICATED, 401),
            (CODE_INVALID_TOKEN, 401),
            (CODE_LOGIN_FAILED, 401),
            (CODE_FORBIDDEN, 403),
            (CODE_CSRF_FAILED, 403),
            (CODE_CONSOLE_TOKEN_FOREIGN, 403),
            (CODE_CONSOLE_TOKEN_USED, 410),
            (CODE_CONSOLE_TOKEN_EXPIRED, 410),
        ] {
            assert_eq!(status_of(ErrorKind::Unauthorized, code).as_u16(), status);
        }
        assert_eq!(
            status_of(
                ErrorKind::ProviderUnavailable,
                CODE_AUTH_PROVIDER_UNAVAILABLE
            )
            .as_u16(),
            503
        );
    }

    #[test]
    fn problem_names_code_kind_and_field_but_not_context() {
        let e = Error::invalid("name", "must not be empty").with_context("host", "secret-host");
        let p = Problem::from_error(&e);
        assert_eq!(p.status, 400);
        assert_eq!(p.code, "INVALID_SPEC");
        assert_eq!(p.kind, "invalid_spec");
        assert_eq!(p.field.as_deref(), Some("name"));
        assert_eq!(p.problem_type, "urn:hcp:problem:invalid-spec");
        assert!(!p.detail.contains("secret-host"));
        let temp = Error::new(ErrorKind::Conflict, "busy")
            .with_code(CODE_IDEMPOTENCY_KEY_IN_PROGRESS)
            .temporary();
        assert!(Problem::from_error(&temp).retryable);
    }
}
