//! The browser login: the authorization-code flow with PKCE (S256), state and nonce.
//!
//! # Behavior
//! - `GET /oidc/login[?return_to=/path]` remembers a fresh state, nonce and PKCE verifier (for
//!   10 minutes, in this process), binds the state to the browser with an HttpOnly cookie, and
//!   redirects to the provider's authorization endpoint.
//! - `GET /oidc/callback?code&state` accepts only the state this browser started (the cookie and
//!   the remembered state must both match; each state works once), exchanges the code with the
//!   PKCE verifier, validates the ID token like a bearer token plus its nonce, `aud` and `azp`,
//!   then sets the session cookie (`__Host-hcp_session`: Secure, HttpOnly, SameSite=Lax, the ID
//!   token, until it expires) and the CSRF cookie (`__Host-hcp_csrf`, readable by scripts), and
//!   redirects to `return_to`.
//! - `GET|POST /oidc/logout[?return_to=/path]` clears both cookies.
//! - `GET /oidc/session` tells the caller who they are, and the CSRF token a cookie session must
//!   send in `X-CSRF-Token` with every unsafe request.
//!
//! The CSRF token is an HMAC of the session token under a key of this service (the secret
//! `hcp_session_key`, else a random key per process), so it cannot be forged from another site.
//!
//! # Why the code flow is not built on the `openidconnect` crate
//! - **One validator.** The ID token of a browser login and the bearer token of an API client
//!   must pass exactly the same checks (algorithm allow-list, `kid` rules, issuer, audience,
//!   lifetime, the roles and projects claims) over the same keys: `auth::token` does both.
//!   `openidconnect`'s `IdTokenVerifier` would be a second validator over a key set it is handed
//!   once; refetching on a rotated `kid` is left to its caller, so a key rotation would break
//!   browser logins while bearer tokens kept working, and every hardening would be made twice.
//! - **One cache.** Discovery and the JWKS are fetched, size-limited, https-checked and cached
//!   with single-flight refresh in `auth::keys` for bearer validation already; the crate's
//!   discovery would fetch them again through its own HTTP-client abstraction.
//! - **What is left is small and uses well-kept crates for every primitive:** the state, nonce
//!   and PKCE verifier come from the OS (`getrandom`), the S256 challenge is one SHA-256
//!   (`sha2`), the CSRF token an HMAC (`hmac`), cookies are built by `cookie`, comparisons are
//!   constant time (`subtle`), and the code exchange is one form POST (`reqwest`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, SameSite};
use hcp_core::ErrorKind;
use hmac::{Hmac, Mac};
use poem::http::{HeaderValue, StatusCode, header};
use poem::{Request, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::keys::without_url;
use super::{Auth, Caller, Oidc, Projects, Refusal, Via};
use crate::error::{CODE_AUTH_PROVIDER_UNAVAILABLE, CODE_LOGIN_FAILED, Problem};

/// The session cookie: the ID token of the browser login.
pub(crate) const SESSION_COOKIE: &str = "__Host-hcp_session";
/// The CSRF cookie: readable by the web UI, sent back in `X-CSRF-Token`.
pub(crate) const CSRF_COOKIE: &str = "__Host-hcp_csrf";
/// The login cookie: binds a login's state to the browser that started it.
pub(crate) const LOGIN_COOKIE: &str = "__Host-hcp_login";
/// Where the browser lands after login and logout when `return_to` is absent.
pub(crate) const DEFAULT_LANDING: &str = "/ui/";
/// How long a started login may take.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The most logins waiting for their callback at once.
const MAX_PENDING: usize = 10_000;
/// The largest ID token a cookie carries (browsers cap a cookie near 4 KiB).
const MAX_COOKIE_TOKEN: usize = 3800;

type HmacSha256 = Hmac<Sha256>;

struct Pending {
    nonce: String,
    verifier: String,
    redirect_uri: String,
    return_to: String,
    started: Instant,
}

/// Started logins and the CSRF key.
pub(crate) struct Logins {
    pending: Mutex<HashMap<String, Pending>>,
    csrf_key: Vec<u8>,
}

impl Logins {
    pub(crate) fn new(settings: &super::OidcSettings) -> Logins {
        let csrf_key = match &settings.session_key {
            Some(k) => k.expose().as_bytes().to_vec(),
            None => {
                let mut k = vec![0u8; 32];
                if getrandom::fill(&mut k).is_err() {
                    // No OS randomness: CSRF tokens then depend on the session token alone,
                    // which an attacker cannot read either; log it loudly.
                    tracing::error!(target: "hcp::auth", "no OS randomness for the CSRF key");
                }
                k
            }
        };
        Logins {
            pending: Mutex::new(HashMap::new()),
            csrf_key,
        }
    }

    /// Returns the CSRF token of a session token.
    pub(crate) fn csrf_token(&self, session: &str) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.csrf_key)
            .expect("HMAC takes keys of any length");
        mac.update(b"hcp-csrf:");
        mac.update(session.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Checks the CSRF header of a cookie-authenticated request (constant time).
    pub(crate) fn check_csrf(&self, req: &Request) -> Result<(), Refusal> {
        let session = cookie(req, SESSION_COOKIE).ok_or(Refusal::Csrf)?;
        let sent = req
            .headers()
            .get(super::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim()).ok())
            .ok_or(Refusal::Csrf)?;
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.csrf_key).map_err(|_| Refusal::Csrf)?;
        mac.update(b"hcp-csrf:");
        mac.update(session.as_bytes());
        mac.verify_slice(&sent).map_err(|_| Refusal::Csrf)
    }

    fn remember(&self, state: String, p: Pending) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| p.started.elapsed() < LOGIN_TTL);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(state, p);
    }

    fn take(&self, state: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .remove(state)
            .filter(|p| p.started.elapsed() < LOGIN_TTL)
    }
}

/// Returns the value of cookie `name` (the `cookie` crate parses each `Cookie` header; a value
/// in double quotes is read without them).
pub(crate) fn cookie(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value_trimmed().to_string())
        .filter(|v| !v.is_empty())
}

/// Appends a `Set-Cookie` for a `__Host-` cookie: Secure, `Path=/`, no domain, `Max-Age` in
/// seconds (0 clears it); the CSRF cookie is `SameSite=Strict`, the others `Lax`.
fn set_cookie(resp: &mut Response, name: &str, value: &str, max_age: i64, http_only: bool) {
    let same_site = if name == CSRF_COOKIE {
        SameSite::Strict
    } else {
        SameSite::Lax
    };
    let c = Cookie::build((name, value))
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age.max(0)))
        .secure(true)
        .same_site(same_site)
        .http_only(http_only)
        .build();
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Returns 32 random bytes from the OS, base64url-encoded.
fn random_token() -> Option<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some(URL_SAFE_NO_PAD.encode(b))
}

fn failed(detail: impl Into<String>, field: Option<&str>) -> Response {
    let mut resp = Problem::transport(
        ErrorKind::Unauthorized,
        CODE_LOGIN_FAILED,
        detail,
        field.map(str::to_string),
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"hcp\""),
    );
    resp
}

fn provider_down(detail: String) -> Response {
    tracing::warn!(target: "hcp::auth", error = %detail, "browser login: the identity provider is unavailable");
    Problem::transport(
        ErrorKind::ProviderUnavailable,
        CODE_AUTH_PROVIDER_UNAVAILABLE,
        "the identity provider is not available; try again shortly",
        None,
    )
    .into_response()
}

fn query(req: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// Keeps `return_to` on this site: a path starting with one `/`, printable, short.
fn landing(q: &HashMap<String, String>) -> String {
    q.get("return_to")
        .filter(|r| {
            r.starts_with('/')
                && !r.starts_with("//")
                && r.len() <= 512
                && r.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        })
        .cloned()
        .unwrap_or_else(|| DEFAULT_LANDING.to_string())
}

fn redirect(to: &str) -> Response {
    let mut resp = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::CACHE_CONTROL, "no-store")
        .finish();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Derives the callback URL from the request when `OIDC_REDIRECT_URL` is not set.
fn derived_redirect(req: &Request) -> Option<String> {
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return None;
    }
    let scheme = match req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        Some("http") | None => "http",
        Some(_) => return None,
    };
    Some(format!("{scheme}://{host}/oidc/callback"))
}

fn off() -> Response {
    Problem::transport(
        ErrorKind::NotFound,
        crate::error::CODE_ROUTE_NOT_FOUND,
        "authentication is off (development mode): there is no login; configure OIDC_ISSUER_URL \
         and OIDC_CLIENT_ID to turn it on",
        None,
    )
    .into_response()
}

/// `GET /oidc/login`.
pub(crate) async fn login(auth: &Auth, req: &Request) -> Response {
    let Auth::Oidc(oidc) = auth else {
        return off();
    };
    let meta = match oidc.keys.metadata().await {
        Ok(m) => m,
        Err(e) => return provider_down(e),
    };
    let Some(authorize) = meta.authorization_endpoint.as_deref() else {
        return provider_down("the discovery document has no authorization_endpoint".into());
    };
    let Ok(mut url) = url::Url::parse(authorize) else {
        return provider_down(
            "the discovery document's authorization_endpoint is not a URL".into(),
        );
    };
    let redirect_uri = match oidc
        .settings
        .redirect_url
        .clone()
        .or_else(|| derived_redirect(req))
    {
        Some(r) => r,
        None => {
            return Problem::transport(
                ErrorKind::InvalidSpec,
                hcp_core::ErrorKind::InvalidSpec.code(),
                "cannot derive the callback URL from this request's Host; set OIDC_REDIRECT_URL",
                Some("Host".into()),
            )
            .into_response();
        }
    };
    let (Some(state), Some(nonce), Some(verifier)) =
        (random_token(), random_token(), random_token())
    else {
        return Problem::transport(
            ErrorKind::ProviderUnavailable,
            CODE_AUTH_PROVIDER_UNAVAILABLE,
            "no randomness is available for the login; try again",
            None,
        )
        .into_response();
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.settings.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", &oidc.settings.scopes)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let return_to = landing(&query(req));
    oidc.login.remember(
        state.clone(),
        Pending {
            nonce,
            verifier,
            redirect_uri,
            return_to,
            started: Instant::now(),
        },
    );
    let mut resp = redirect(url.as_str());
    set_cookie(
        &mut resp,
        LOGIN_COOKIE,
        &state,
        LOGIN_TTL.as_secs() as i64,
        true,
    );
    resp
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// `GET /oidc/callback`.
pub(crate) async fn callback(auth: &Auth, req: &Request) -> Response {
    let Auth::Oidc(oidc) = auth else {
        return off();
    };
    let q = query(req);
    let Some(state) = q.get("state").filter(|s| !s.is_empty()) else {
        return failed(
            "the callback has no `state`; start again at /oidc/login",
            Some("state"),
        );
    };
    let bound = cookie(req, LOGIN_COOKIE);
    if !bound
        .as_deref()
        .is_some_and(|c| ct_eq(c.as_bytes(), state.as_bytes()))
    {
        return failed(
            "the login `state` does not belong to this browser's login; start again at /oidc/login",
            Some("state"),
        );
    }
    let Some(pending) = oidc.login.take(state) else {
        return failed(
            "the login `state` is unknown, used or expired; start again at /oidc/login",
            Some("state"),
        );
    };
    if let Some(err) = q.get("error") {
        let code: String = err
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return failed(
            format!("the identity provider refused the login: {code}"),
            Some("error"),
        );
    }
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return failed("the callback has no `code`", Some("code"));
    };
    match exchange(oidc, code, &pending).await {
        Ok((token, caller)) => {
            let mut resp = redirect(&pending.return_to);
            let max_age = caller
                .expires_at
                .map_or(0, |e| e - chrono::Utc::now().timestamp());
            set_cookie(&mut resp, SESSION_COOKIE, &token, max_age, true);
            let csrf = oidc.login.csrf_token(&token);
            set_cookie(&mut resp, CSRF_COOKIE, &csrf, max_age, false);
            set_cookie(&mut resp, LOGIN_COOKIE, "", 0, true);
            tracing::info!(target: "hcp::auth", subject = %caller.subject, "browser login");
            resp
        }
        Err(resp) => resp,
    }
}

async fn exchange(
    oidc: &Arc<Oidc>,
    code: &str,
    pending: &Pending,
) -> Result<(String, Caller), Response> {
    let meta = oidc.keys.metadata().await.map_err(provider_down)?;
    let endpoint = meta
        .token_endpoint
        .clone()
        .ok_or_else(|| provider_down("the discovery document has no token_endpoint".into()))?;
    let s = &oidc.settings;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", pending.redirect_uri.as_str()),
        ("code_verifier", pending.verifier.as_str()),
        ("client_id", s.client_id.as_str()),
    ];
    let mut rb = oidc
        .http
        .post(&endpoint)
        .header("accept", "application/json");
    if let Some(secret) = &s.client_secret {
        // RFC 6749 2.3.1: form-encode both before the basic scheme.
        let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        rb = rb.basic_auth(enc(&s.client_id), Some(enc(secret.expose())));
    }
    let resp =
        rb.form(&form).send().await.map_err(|e| {
            provider_down(format!("token endpoint {endpoint}: {}", without_url(&e)))
        })?;
    let status = resp.status();
    let body: TokenResponse = resp
        .json()
        .await
        .map_err(|e| provider_down(format!("token endpoint {endpoint}: {}", without_url(&e))))?;
    if !status.is_success() || body.error.is_some() {
        let code: String = body
            .error
            .unwrap_or_else(|| status.as_u16().to_string())
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err(failed(
            format!("the identity provider refused the code: {code}"),
            Some("code"),
        ));
    }
    let token = body
        .id_token
        .ok_or_else(|| failed("the identity provider answered no ID token", None))?;
    let id = oidc.validator.validate(&token).await.map_err(|e| match e {
        super::token::TokenError::Invalid(d) => {
            failed(format!("the ID token was refused: {d}"), None)
        }
        super::token::TokenError::ProviderUnavailable(r) => provider_down(r),
    })?;
    if !id
        .nonce
        .as_deref()
        .is_some_and(|n| ct_eq(n.as_bytes(), pending.nonce.as_bytes()))
    {
        return Err(failed(
            "the ID token's `nonce` does not match this login",
            None,
        ));
    }
    if !id.audiences.iter().any(|a| a == &s.client_id)
        || id.azp.as_deref().is_some_and(|a| a != s.client_id)
    {
        return Err(failed(
            "the ID token is not for this service (`aud`/`azp` do not name its client id)",
            None,
        ));
    }
    if token.len() > MAX_COOKIE_TOKEN {
        return Err(failed(
            format!(
                "the ID token is larger than a cookie can carry ({} bytes); ask the identity \
                 provider to send fewer claims (e.g. no group list)",
                token.len()
            ),
            None,
        ));
    }
    let caller = oidc
        .caller_of(&token, Via::Session)
        .await
        .map_err(Refusal::into_response)?;
    Ok((token, caller))
}

/// `GET|POST /oidc/logout`.
pub(crate) async fn logout(auth: &Auth, req: &Request) -> Response {
    if matches!(auth, Auth::Off) {
        return off();
    }
    let mut resp = redirect(&landing(&query(req)));
    set_cookie(&mut resp, SESSION_COOKIE, "", 0, true);
    set_cookie(&mut resp, CSRF_COOKIE, "", 0, false);
    resp
}

/// `GET /oidc/session`: who the caller is (the request was authenticated by the outer layer).
pub(crate) async fn session(auth: &Auth, req: &Request) -> Response {
    let caller = super::caller(req);
    let csrf = match (auth, caller.via) {
        (Auth::Oidc(o), Via::Session) => {
            cookie(req, SESSION_COOKIE).map(|t| o.login.csrf_token(&t))
        }
        _ => None,
    };
    let projects = match &caller.projects {
        Projects::All => serde_json::json!("*"),
        Projects::Only(p) => serde_json::json!(p),
    };
    let body = serde_json::json!({
        "subject": caller.subject,
        "roles": caller.roles,
        "projects": projects,
        "operator": caller.operator,
        "tenant": caller.tenant,
        "hyperv": caller.hyperv,
        "via": match caller.via { Via::Development => "development", Via::Bearer => "bearer", Via::Session => "session" },
        "expires_at": caller.expires_at,
        "csrf_token": csrf,
    });
    Response::builder()
        .content_type("application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body.to_string())
}

/// Compares in time independent of where the inputs differ (`subtle`; unequal lengths are
/// unequal at once, and the lengths here are not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_stays_on_this_site() {
        let q = |v: &str| HashMap::from([("return_to".to_string(), v.to_string())]);
        assert_eq!(landing(&q("/ui/vms?x=1")), "/ui/vms?x=1");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "/a b",
            "",
        ] {
            assert_eq!(landing(&q(bad)), DEFAULT_LANDING, "{bad}");
        }
        assert_eq!(landing(&HashMap::new()), DEFAULT_LANDING);
    }

    #[test]
    fn csrf_tokens_bind_to_the_session() {
        let s = crate::auth::OidcSettings::new("https://idp.example", "hcp").unwrap();
        let l = Logins::new(&s);
        let a = l.csrf_token("session-a");
        assert_ne!(a, l.csrf_token("session-b"));
        assert_eq!(a, l.csrf_token("session-a"));
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"a", b"ab"));
    }

    fn request_with(cookies: &[&str]) -> Request {
        let mut b = Request::builder();
        for c in cookies {
            b = b.header(header::COOKIE, *c);
        }
        b.finish()
    }

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let req = request_with(&[
            "a=1; __Host-hcp_session=\"tok.en\"",
            "__Host-hcp_csrf=c2; empty=",
        ]);
        assert_eq!(cookie(&req, SESSION_COOKIE).as_deref(), Some("tok.en"));
        assert_eq!(cookie(&req, CSRF_COOKIE).as_deref(), Some("c2"));
        assert_eq!(cookie(&req, "a").as_deref(), Some("1"));
        assert_eq!(cookie(&req, "empty"), None);
        assert_eq!(cookie(&req, "missing"), None);
        // A name is matched whole, never as a prefix or suffix.
        let req = request_with(&["x__Host-hcp_session=no; __Host-hcp_session2=no"]);
        assert_eq!(cookie(&req, SESSION_COOKIE), None);
    }

    #[test]
    fn set_cookies_carry_the_host_prefix_attributes() {
        let mut resp = Response::builder().finish();
        set_cookie(&mut resp, SESSION_COOKIE, "t", 60, true);
        set_cookie(&mut resp, CSRF_COOKIE, "c", -5, false);
        let all: Vec<String> = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let parsed: Vec<Cookie<'_>> = all
            .iter()
            .map(|c| Cookie::parse(c.as_str()).unwrap())
            .collect();
        let session = &parsed[0];
        assert_eq!((session.name(), session.value()), (SESSION_COOKIE, "t"));
        assert_eq!(session.path(), Some("/"));
        assert_eq!(session.domain(), None);
        assert_eq!(session.secure(), Some(true));
        assert_eq!(session.http_only(), Some(true));
        assert_eq!(session.same_site(), Some(SameSite::Lax));
        assert_eq!(session.max_age(), Some(cookie::time::Duration::seconds(60)));
        let csrf = &parsed[1];
        assert_eq!(csrf.same_site(), Some(SameSite::Strict));
        assert_eq!(csrf.http_only(), None, "{}", all[1]);
        assert_eq!(csrf.max_age(), Some(cookie::time::Duration::ZERO));
    }
}
