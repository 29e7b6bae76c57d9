//! How the OpenAPI document declares authentication: two poem-openapi security schemes (a bearer
//! JWT and the browser session cookie) and the [`ApiAuth`] extractor every route takes, which
//! makes poem-openapi write each operation's `security` and the Swagger UI's Authorize button.
//!
//! # Why the extractor checks nothing
//! The outer layer ([`crate::http`], [`crate::auth::Auth::check`]) authenticates every request
//! before routing: it answers problem bodies with `WWW-Authenticate`, checks the CSRF header of
//! cookie requests, knows development mode and the configurable public routes, and attaches the
//! [`Caller`]. The extractors poem-openapi derives for a `SecurityScheme` would parse the
//! `Authorization` header or the cookie again and refuse a request without one with poem's own
//! plain 401, which is wrong in development mode and on public routes. So the two schemes are
//! derived for their description only, and [`ApiAuth`] (a hand-written `ApiExtractor` of kind
//! `SecurityScheme`) declares both and hands the handler the caller the outer layer attached.
//! What depends on the running configuration (auth off, public routes) is applied to the
//! document by [`super::publish`].

use poem::{Request, RequestBody};
use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::registry::Registry;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, SecurityScheme};

use crate::auth::{self, Caller};

/// An access or ID token of the configured OIDC provider. Roles and projects come from its
/// claims: tenant routes need the tenant role and membership of the project, ops routes the
/// operator role, the /api/v1 routes (which act across projects) the Hyper-V role.
#[derive(SecurityScheme)]
#[oai(rename = "bearer", ty = "bearer", bearer_format = "JWT")]
#[allow(dead_code)] // Declares the scheme; never extracted (see the module docs).
pub(crate) struct BearerScheme(Bearer);

/// The session of the browser login (/oidc/login). Unsafe methods also need the `X-CSRF-Token`
/// header.
#[derive(SecurityScheme)]
#[oai(
    rename = "session",
    ty = "api_key",
    key_in = "cookie",
    key_name = "__Host-hcp_session"
)]
#[allow(dead_code)] // Declares the scheme; never extracted (see the module docs).
pub(crate) struct SessionScheme(ApiKey);

/// The authenticated caller of a route, as the outer layer attached it; in the document, the
/// route accepts a bearer token or the session cookie.
#[derive(Debug, Clone)]
pub(crate) struct ApiAuth(pub(crate) Caller);

impl<'a> ApiExtractor<'a> for ApiAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <BearerScheme as ApiExtractor>::register(registry);
        <SessionScheme as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        let mut names = <BearerScheme as ApiExtractor>::security_schemes();
        names.extend(<SessionScheme as ApiExtractor>::security_schemes());
        names
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        Ok(ApiAuth(auth::caller(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_scheme_names_the_real_cookie() {
        let mut registry = Registry::new();
        <ApiAuth as ApiExtractor>::register(&mut registry);
        let session = &registry.security_schemes["session"];
        assert_eq!(session.name, Some(auth::login::SESSION_COOKIE));
        assert_eq!(session.key_in, Some("cookie"));
        let bearer = &registry.security_schemes["bearer"];
        assert_eq!(bearer.scheme, Some("bearer"));
        assert_eq!(
            <ApiAuth as ApiExtractor>::security_schemes(),
            ["bearer", "session"]
        );
    }
}
