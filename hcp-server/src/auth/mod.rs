//! Authentication and authorization: OIDC bearer tokens (or the browser login's session cookie)
//! become a [`Caller`] with a subject, roles and projects; each route class requires a role, and
//! tenant lookups are scoped to the caller's projects in the engine.
//!
//! # Behavior
//! - Without OIDC settings the service is in development mode: every request acts as the
//!   development principal with every role, and the service listens on loopback only.
//! - With OIDC, every route except the public ones (`/healthz`, `/readyz`, `/metrics` by
//!   default), the web UI's files (`/ui/...`, which hold no data) and the login routes
//!   (`/oidc/login`, `/oidc/callback`, `/oidc/logout`) needs a valid token: `Authorization:
//!   Bearer <JWT>`, or the session cookie the browser login sets.
//! - Ops routes need the operator role; tenant routes the tenant role (or the operator role);
//!   the Hyper-V service's `/api/v1` routes, which act across projects, their own role
//!   (`OIDC_HYPERV_ROLE`, formerly `OIDC_ROLE_NAME`); every other route any valid token. A
//!   missing role is `403`. The tenant role never equals a cross-project role unless the
//!   operator allows it explicitly ([`OidcSettings::check_roles`]).
//! - The roles and projects claims are JSON arrays of strings; a string is refused unless the
//!   operator says how to read it ([`settings::StringClaim`]).
//! - A failed check is `401` with `WWW-Authenticate: Bearer` naming the check; it never echoes
//!   the token, and tokens are never logged.
//! - A cookie-authenticated request with an unsafe method needs the CSRF token in the
//!   `X-CSRF-Token` header (`403` otherwise).

mod keys;
pub(crate) mod login;
pub mod settings;
mod token;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hcp_core::store::Scope;
use hcp_core::{Error, ErrorKind, Principal, ProjectId};
use poem::http::{HeaderValue, Method, header};
use poem::{Request, Response};

pub use settings::{AuthSettings, OidcSettings, StringClaim};

use crate::error::{
    CODE_AUTH_PROVIDER_UNAVAILABLE, CODE_CSRF_FAILED, CODE_FORBIDDEN, CODE_INVALID_TOKEN,
    CODE_UNAUTHENTICATED, Problem,
};
use keys::KeyCache;
use token::{TokenError, Validator};

/// The subject every request acts as in development mode.
pub const DEV_PRINCIPAL_NAME: &str = "anonymous";
/// The realm named in `WWW-Authenticate`.
const REALM: &str = "hcp";
/// The header that carries the CSRF token of cookie-authenticated requests.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// Which projects a caller may act in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Projects {
    /// Every project (operators, development mode).
    All,
    /// Only these.
    Only(BTreeSet<String>),
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// Development mode: no authentication.
    Development,
    /// `Authorization: Bearer`.
    Bearer,
    /// The browser login's session cookie.
    Session,
}

/// Who is asking: the subject, roles and projects of a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) subject: String,
    pub(crate) roles: BTreeSet<String>,
    pub(crate) projects: Projects,
    pub(crate) operator: bool,
    pub(crate) tenant: bool,
    /// Holds the Hyper-V service's role (`/api/v1`).
    pub(crate) hyperv: bool,
    pub(crate) via: Via,
    pub(crate) expires_at: Option<i64>,
}

impl Caller {
    /// The development principal: every role, every project.
    pub(crate) fn development() -> Caller {
        Caller {
            subject: DEV_PRINCIPAL_NAME.into(),
            roles: BTreeSet::new(),
            projects: Projects::All,
            operator: true,
            tenant: true,
            hyperv: true,
            via: Via::Development,
            expires_at: None,
        }
    }

    /// A caller with no role and no project: what a handler sees if a request reached it
    /// without authentication (it never should; this keeps such a bug closed, not open).
    pub(crate) fn nobody() -> Caller {
        Caller {
            subject: "unauthenticated".into(),
            roles: BTreeSet::new(),
            projects: Projects::Only(BTreeSet::new()),
            operator: false,
            tenant: false,
            hyperv: false,
            via: Via::Bearer,
            expires_at: None,
        }
    }

    /// Returns the engine's principal for this caller (jobs and audit events name it).
    pub(crate) fn principal(&self) -> Principal {
        Principal::new(self.subject.clone())
    }

    /// Returns true when the caller may act in `project`.
    pub(crate) fn member_of(&self, project: &ProjectId) -> bool {
        match &self.projects {
            Projects::All => true,
            Projects::Only(p) => p.contains(project.as_str()),
        }
    }

    /// Returns the scopes of lookups without a project in the path (jobs by id): every project
    /// for operators, else one scope per project of the caller.
    pub(crate) fn scopes(&self) -> Vec<Scope> {
        match &self.projects {
            Projects::All => vec![Scope::All],
            Projects::Only(p) => p
                .iter()
                .map(|p| ProjectId::new(p.as_str()))
                .filter(|p| p.validate().is_ok())
                .map(Scope::Project)
                .collect(),
        }
    }

    /// Returns one scope covering every project the caller may see: all of them for operators,
    /// else exactly the caller's projects (none for a caller without a project).
    pub(crate) fn scope(&self) -> Scope {
        match &self.projects {
            Projects::All => Scope::All,
            Projects::Only(p) => Scope::Projects(
                p.iter()
                    .map(|p| ProjectId::new(p.as_str()))
                    .filter(|p| p.validate().is_ok())
                    .collect(),
            ),
        }
    }
}

/// Returns the caller the outer layer attached to a request (the development principal in
/// development mode); a request without one gets [`Caller::nobody`].
pub(crate) fn caller(req: &Request) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::nobody)
}

/// Which role a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteClass {
    /// No token needed.
    Public,
    /// `/oidc/login`, `/oidc/callback`, `/oidc/logout`.
    Login,
    /// Ops routes: the operator role.
    Ops,
    /// Tenant routes: the tenant role or the operator role.
    Tenant,
    /// The Hyper-V service's routes: the Hyper-V role.
    HyperV,
    /// Any valid token.
    Authenticated,
}

/// The service's authentication, shared by every request.
pub(crate) enum Auth {
    /// Development mode.
    Off,
    /// OIDC.
    Oidc(Arc<Oidc>),
}

/// OIDC state: the settings, the provider's keys, the validator and the browser login.
pub(crate) struct Oidc {
    pub(crate) settings: OidcSettings,
    pub(crate) keys: Arc<KeyCache>,
    validator: Validator,
    pub(crate) login: login::Logins,
    public_routes: Vec<String>,
    pub(crate) http: reqwest::Client,
}

/// Why a request was refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// No credentials (`401`, `WWW-Authenticate: Bearer realm="hcp"`).
    Missing,
    /// A credential failed a check (`401`, `error="invalid_token"`).
    Invalid { detail: String, cookie: bool },
    /// Authenticated but lacking a role (`403`).
    Forbidden(String),
    /// A cookie-authenticated unsafe request without a valid CSRF token (`403`).
    Csrf,
    /// The provider's keys are not available yet (`503`).
    Unavailable(String),
}

impl Refusal {
    /// Renders the refusal as a problem response.
    pub(crate) fn into_response(self) -> Response {
        let (problem, challenge) = match self {
            Refusal::Missing => (
                Problem::transport(
                    ErrorKind::Unauthorized,
                    CODE_UNAUTHENTICATED,
                    "this route needs a bearer token (`Authorization: Bearer <JWT>` from the \
                     configured identity provider) or a browser session from /oidc/login",
                    Some("Authorization".into()),
                ),
                Some(format!("Bearer realm=\"{REALM}\"")),
            ),
            Refusal::Invalid { detail, cookie } => (
                Problem::transport(
                    ErrorKind::Unauthorized,
                    CODE_INVALID_TOKEN,
                    format!(
                        "the {} was refused: {detail}",
                        if cookie {
                            "session cookie's token"
                        } else {
                            "bearer token"
                        }
                    ),
                    Some(if cookie { "Cookie" } else { "Authorization" }.into()),
                ),
                Some(format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                    header_safe(&detail)
                )),
            ),
            Refusal::Forbidden(detail) => (
                Problem::transport(ErrorKind::Unauthorized, CODE_FORBIDDEN, detail, None),
                None,
            ),
            Refusal::Csrf => (
                Problem::transport(
                    ErrorKind::Unauthorized,
                    CODE_CSRF_FAILED,
                    format!(
                        "a request authenticated by the session cookie must send the CSRF token \
                         in the `{CSRF_HEADER}` header (the `{}` cookie, or `csrf_token` from \
                         GET /oidc/session)",
                        login::CSRF_COOKIE
                    ),
                    Some(CSRF_HEADER.into()),
                ),
                None,
            ),
            Refusal::Unavailable(reason) => {
                tracing::warn!(target: "hcp::auth", %reason, "a token could not be checked: the identity provider's keys are not available");
                (
                    Problem::transport(
                        ErrorKind::ProviderUnavailable,
                        CODE_AUTH_PROVIDER_UNAVAILABLE,
                        "the identity provider's signing keys are not available yet, so no \
                         token can be checked; try again shortly",
                        None,
                    ),
                    None,
                )
            }
        };
        let mut resp = problem.into_response();
        if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        resp
    }
}

/// Keeps a description safe inside a quoted header parameter (RFC 6750 allows printable ASCII
/// without `"` and `\`).
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

impl Auth {
    /// Builds the service's authentication from its settings.
    pub(crate) fn new(settings: &AuthSettings) -> Auth {
        let Some(oidc) = &settings.oidc else {
            return Auth::Off;
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("hcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let keys = Arc::new(KeyCache::new(
            http.clone(),
            &oidc.issuer_url,
            oidc.jwks_cooldown,
        ));
        keys.spawn_refresher(oidc.jwks_refresh_interval);
        Auth::Oidc(Arc::new(Oidc {
            validator: Validator::new(oidc.clone(), keys.clone()),
            login: login::Logins::new(oidc),
            settings: oidc.clone(),
            keys,
            public_routes: settings.public_routes.clone(),
            http,
        }))
    }

    /// Authenticates and authorizes `req` for its route, attaching the [`Caller`].
    ///
    /// # Errors
    /// The [`Refusal`] to answer instead of routing the request.
    pub(crate) async fn check(&self, req: &mut Request) -> Result<(), Refusal> {
        let oidc = match self {
            Auth::Off => {
                req.extensions_mut().insert(Caller::development());
                return Ok(());
            }
            Auth::Oidc(o) => o,
        };
        let path = req.uri().path().to_string();
        let class = oidc.classify(&path);
        if matches!(class, RouteClass::Public | RouteClass::Login) {
            return Ok(());
        }
        let caller = oidc.authenticate(req).await?;
        if caller.via == Via::Session && !is_safe(req.method()) {
            oidc.login.check_csrf(req)?;
        }
        let allowed = match class {
            RouteClass::Ops => caller.operator,
            RouteClass::Tenant => caller.tenant || caller.operator,
            RouteClass::HyperV => caller.hyperv,
            _ => true,
        };
        if !allowed {
            let s = &oidc.settings;
            let need = match class {
                RouteClass::Ops => format!("the operator role `{}`", s.operator_role),
                RouteClass::Tenant => format!(
                    "the tenant role `{}` or the operator role `{}`",
                    s.tenant_role, s.operator_role
                ),
                _ => format!("the Hyper-V role `{}`", s.hyperv_role),
            };
            return Err(Refusal::Forbidden(format!(
                "this route needs {need} in the token's `{}` claim",
                s.roles_claim
            )));
        }
        req.extensions_mut().insert(caller);
        Ok(())
    }
}

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl Oidc {
    fn classify(&self, path: &str) -> RouteClass {
        // The web UI's files hold no data (its pages call the APIs with the session cookie).
        if self.public_routes.iter().any(|r| r == path) || path == "/ui" || path.starts_with("/ui/")
        {
            return RouteClass::Public;
        }
        if matches!(path, "/oidc/login" | "/oidc/callback" | "/oidc/logout") {
            return RouteClass::Login;
        }
        if path.starts_with("/api/hcp/ops/") {
            RouteClass::Ops
        } else if path.starts_with("/api/hcp/tenant/") {
            RouteClass::Tenant
        } else if path == "/api/v1" || path.starts_with("/api/v1/") {
            RouteClass::HyperV
        } else {
            RouteClass::Authenticated
        }
    }

    /// Reads the bearer token (else the session cookie) and validates it.
    pub(crate) async fn authenticate(&self, req: &Request) -> Result<Caller, Refusal> {
        let (token, via) = match req.headers().get(header::AUTHORIZATION) {
            Some(v) => {
                let v = v.to_str().map_err(|_| Refusal::Invalid {
                    detail: "the Authorization header is not ASCII".into(),
                    cookie: false,
                })?;
                let Some((scheme, token)) = v.trim().split_once(' ') else {
                    return Err(Refusal::Invalid {
                        detail: "the Authorization header is not `Bearer <token>`".into(),
                        cookie: false,
                    });
                };
                if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                    return Err(Refusal::Invalid {
                        detail: "the Authorization header is not `Bearer <token>`".into(),
                        cookie: false,
                    });
                }
                (token.trim().to_string(), Via::Bearer)
            }
            None => match login::cookie(req, login::SESSION_COOKIE) {
                Some(t) => (t, Via::Session),
                None => return Err(Refusal::Missing),
            },
        };
        self.caller_of(&token, via).await
    }

    /// Validates `token` and maps its claims to a caller.
    pub(crate) async fn caller_of(&self, token: &str, via: Via) -> Result<Caller, Refusal> {
        let id = self.validator.validate(token).await.map_err(|e| match e {
            TokenError::Invalid(detail) => Refusal::Invalid {
                detail,
                cookie: via == Via::Session,
            },
            TokenError::ProviderUnavailable(r) => Refusal::Unavailable(r),
        })?;
        let s = &self.settings;
        let operator = id.roles.contains(&s.operator_role);
        Ok(Caller {
            operator,
            tenant: id.roles.contains(&s.tenant_role),
            hyperv: id.roles.contains(&s.hyperv_role),
            projects: if operator {
                Projects::All
            } else {
                Projects::Only(id.projects.clone())
            },
            subject: id.subject,
            roles: id.roles,
            via,
            expires_at: Some(id.expires_at),
        })
    }
}

/// Refuses a tenant request in `project` the caller is not a member of, as "not found" (another
/// tenant's project does not exist for this caller).
pub(crate) fn check_member(caller: &Caller, project: &ProjectId) -> hcp_core::Result<()> {
    if caller.member_of(project) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::NotFound,
            format!("project: project `{project}` not found among the caller's projects"),
        )
        .with_field("project"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::StatusCode;

    fn status_of(r: Refusal) -> StatusCode {
        r.into_response().status()
    }

    #[test]
    fn refusals_carry_status_and_challenge() {
        assert_eq!(status_of(Refusal::Missing), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status_of(Refusal::Forbidden("x".into())),
            StatusCode::FORBIDDEN
        );
        assert_eq!(status_of(Refusal::Csrf), StatusCode::FORBIDDEN);
        assert_eq!(
            status_of(Refusal::Unavailable("down".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let r = Refusal::Invalid {
            detail: "the \"kid\" is \\ odd\n".into(),
            cookie: false,
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let h = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            h.starts_with("Bearer realm=\"hcp\", error=\"invalid_token\""),
            "{h}"
        );
        assert!(!h.contains('\\') && !h.contains('\n'), "{h}");
    }

    #[test]
    fn callers_scope_by_their_projects() {
        let mut c = Caller::development();
        assert_eq!(c.scopes(), vec![Scope::All]);
        c.projects = Projects::Only(BTreeSet::from(["a".to_string(), "Bad Id".to_string()]));
        assert_eq!(c.scopes(), vec![Scope::Project(ProjectId::new("a"))]);
        assert!(c.member_of(&ProjectId::new("a")));
        assert_eq!(
            check_member(&c, &ProjectId::new("b")).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
}
