//! The browser login end to end against a real OIDC provider (`oauth2-mock-server`), following
//! redirects by hand: /oidc/login → the provider's authorize endpoint → /oidc/callback → the
//! session cookie → API calls with the cookie (and the CSRF token for changes); forged states,
//! missing CSRF tokens and logout; and no token in the logs.

mod common;
mod oidc;

use std::collections::HashMap;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use oidc::{AuthServer, CLIENT_ID, T};

const SESSION: &str = "__Host-hcp_session";
const CSRF: &str = "__Host-hcp_csrf";
const LOGIN: &str = "__Host-hcp_login";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `Set-Cookie` headers of a response, by name: (value, attributes).
fn set_cookies(resp: &reqwest::Response) -> HashMap<String, (String, String)> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            (name.to_string(), (value.to_string(), attrs.to_string()))
        })
        .collect()
}

fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// What a started login left: the provider's URL to visit and the login cookie.
struct Started {
    authorize: String,
    login_cookie: String,
}

async fn start_login(s: &AuthServer, http: &reqwest::Client) -> Started {
    let resp = http
        .get(s.at("/oidc/login?return_to=/api/hcp/common/v1/zones"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let authorize = resp.headers()[LOCATION].to_str().unwrap().to_string();
    let cookies = set_cookies(&resp);
    let (login_cookie, attrs) = cookies[LOGIN].clone();
    for a in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attrs.contains(a), "{LOGIN}: {attrs} lacks {a}");
    }
    Started {
        authorize,
        login_cookie,
    }
}

/// Visits the provider (which signs the user in at once) and returns the callback URL.
async fn authorize(http: &reqwest::Client, started: &Started) -> String {
    let resp = http.get(&started.authorize).send().await.unwrap();
    assert_eq!(resp.status(), 302, "the provider redirects back");
    resp.headers()[LOCATION].to_str().unwrap().to_string()
}

/// Logs in all the way and returns the session and CSRF cookies.
async fn log_in(s: &AuthServer, http: &reqwest::Client) -> (String, String) {
    let started = start_login(s, http).await;
    let callback = authorize(http, &started).await;
    let resp = http
        .get(&callback)
        .header(COOKIE, format!("{LOGIN}={}", started.login_cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        303,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    assert_eq!(resp.headers()[LOCATION], "/api/hcp/common/v1/zones");
    let cookies = set_cookies(&resp);
    let (session, attrs) = cookies[SESSION].clone();
    oidc::remember(&session);
    for a in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(attrs.contains(a), "{SESSION}: {attrs} lacks {a}");
    }
    let (csrf, csrf_attrs) = cookies[CSRF].clone();
    assert!(csrf_attrs.contains("Secure") && !csrf_attrs.contains("HttpOnly"));
    assert!(
        cookies[LOGIN].1.contains("Max-Age=0"),
        "the login cookie is cleared"
    );
    (session, csrf)
}

async fn browser_server() -> AuthServer {
    let s = AuthServer::start(&[]).await;
    s.idp
        .set_login_claims(json!({"roles": ["hcp-tenant"], "projects": ["demo"]}))
        .await;
    s
}

#[tokio::test]
async fn browser_login_sets_a_session_cookie_that_authenticates_api_calls() {
    let s = browser_server().await;
    let http = no_redirects();
    let started = start_login(&s, &http).await;
    assert!(
        started
            .authorize
            .starts_with(&format!("{}/authorize?", s.idp.issuer))
    );
    let q = query_of(&started.authorize);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(q["state"], started.login_cookie);
    assert!(q["nonce"].len() >= 43 && q["state"] != q["nonce"]);
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    assert_eq!(q["redirect_uri"], s.at("/oidc/callback"));

    let callback = authorize(&http, &started).await;
    assert!(callback.starts_with(&s.at("/oidc/callback?")), "{callback}");
    let resp = http
        .get(&callback)
        .header(COOKIE, format!("{LOGIN}={}", started.login_cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookies = set_cookies(&resp);
    let session = cookies[SESSION].0.clone();
    oidc::remember(&session);
    let csrf = cookies[CSRF].0.clone();

    // The session cookie authenticates API calls.
    let cookie = format!("{SESSION}={session}; {CSRF}={csrf}");
    let resp = http
        .get(s.at(&format!("{T}/projects/demo/vms")))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let me: Value = http
        .get(s.at("/oidc/session"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["subject"], "johndoe");
    assert_eq!(me["via"], "session");
    assert_eq!(me["projects"], json!(["demo"]));
    assert_eq!(me["csrf_token"], csrf.as_str());
    // A change with the CSRF token works, attributed to the logged-in user.
    let resp = http
        .post(s.at(&format!("{T}/projects/demo/vms")))
        .header(COOKIE, &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&json!({"name": "from-browser", "image": "ubuntu-24.04", "flavor": "small"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let job: Value = http
        .get(s.at(&format!("{T}/jobs/{}", body["job_id"].as_str().unwrap())))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["principal"], "johndoe");
    // The session still obeys project isolation.
    let resp = http
        .get(s.at(&format!("{T}/projects/other/vms")))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn forged_state_is_refused() {
    let s = browser_server().await;
    let http = no_redirects();
    let started = start_login(&s, &http).await;
    let callback = authorize(&http, &started).await;
    let code = query_of(&callback)["code"].clone();
    let forged_state = "forged-state-0123456789abcdefghijklmnopqrstu";
    let cases = [
        // A state this service never issued, with a matching cookie an attacker planted.
        (
            format!("/oidc/callback?code={code}&state={forged_state}"),
            format!("{LOGIN}={forged_state}"),
        ),
        // The real state, but from a browser that did not start the login.
        (
            format!("/oidc/callback?code={code}&state={}", started.login_cookie),
            String::new(),
        ),
        // The real state with another browser's login cookie.
        (
            format!("/oidc/callback?code={code}&state={}", started.login_cookie),
            format!("{LOGIN}={forged_state}"),
        ),
        // No state at all.
        (
            format!("/oidc/callback?code={code}"),
            format!("{LOGIN}={}", started.login_cookie),
        ),
    ];
    for (path, cookie) in &cases {
        let mut rb = http.get(s.at(path));
        if !cookie.is_empty() {
            rb = rb.header(COOKIE, cookie);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} with {cookie:?}");
        assert!(
            !resp
                .headers()
                .get_all(SET_COOKIE)
                .iter()
                .any(|c| c.to_str().unwrap().starts_with(SESSION))
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "LOGIN_FAILED");
        assert_eq!(body["field"], "state");
    }
    // The genuine callback still works once, and a replay of it is refused.
    let genuine = http
        .get(&callback)
        .header(COOKIE, format!("{LOGIN}={}", started.login_cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(genuine.status(), 303);
    oidc::remember(&set_cookies(&genuine)[SESSION].0);
    let replay = http
        .get(&callback)
        .header(COOKIE, format!("{LOGIN}={}", started.login_cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
}

#[tokio::test]
async fn cookie_authenticated_change_without_csrf_token_is_refused() {
    let s = browser_server().await;
    let http = no_redirects();
    let (session, csrf) = log_in(&s, &http).await;
    let cookie = format!("{SESSION}={session}");
    let body = json!({"name": "csrf-vm", "image": "ubuntu-24.04", "flavor": "small"});
    for header in [None, Some("bm90LXRoZS10b2tlbg"), Some("!!!")] {
        let mut rb = http
            .post(s.at(&format!("{T}/projects/demo/vms")))
            .header(COOKIE, &cookie)
            .json(&body);
        if let Some(h) = header {
            rb = rb.header("X-CSRF-Token", h);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 403, "{header:?}");
        let p: Value = resp.json().await.unwrap();
        assert_eq!(p["code"], "CSRF_FAILED");
    }
    // Reads need no CSRF token; the right token unlocks changes.
    let resp = http
        .get(s.at(&format!("{T}/projects/demo/vms")))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .post(s.at(&format!("{T}/projects/demo/vms")))
        .header(COOKIE, &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // A bearer token needs no CSRF token.
    let token = s.idp.token("alice", &["hcp-tenant"], &["demo"]).await;
    let resp = http
        .post(s.at(&format!("{T}/projects/demo/vms")))
        .bearer_auth(&token)
        .json(&json!({"name": "bearer-vm", "image": "ubuntu-24.04", "flavor": "small"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn tampered_session_cookie_is_401_and_logout_clears_it() {
    let s = browser_server().await;
    let http = no_redirects();
    let (session, _) = log_in(&s, &http).await;
    let (head, sig) = session.rsplit_once('.').unwrap();
    let mut sig = sig.as_bytes().to_vec();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{head}.{}", String::from_utf8(sig).unwrap());
    oidc::remember(&tampered);
    let resp = http
        .get(s.at(&format!("{T}/projects/demo/vms")))
        .header(COOKIE, format!("{SESSION}={tampered}"))
        .send()
        .await
        .unwrap();
    oidc::assert_invalid(resp, &tampered, "signature").await;

    let resp = http
        .post(s.at("/oidc/logout"))
        .header(COOKIE, format!("{SESSION}={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookies = set_cookies(&resp);
    assert_eq!(cookies[SESSION].0, "");
    assert!(cookies[SESSION].1.contains("Max-Age=0"));
    assert!(cookies[CSRF].1.contains("Max-Age=0"));
}

#[tokio::test]
async fn no_token_appears_in_the_service_logs() {
    let s = browser_server().await;
    let http = no_redirects();
    let (session, csrf) = log_in(&s, &http).await;
    let cookie = format!("{SESSION}={session}");
    http.post(s.at(&format!("{T}/projects/demo/vms")))
        .header(COOKIE, &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&json!({"name": "logged-in", "image": "ubuntu-24.04", "flavor": "small"}))
        .send()
        .await
        .unwrap();
    http.get(s.at("/oidc/session"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    oidc::remember(&csrf);
    let checked = s.assert_no_token_logged();
    assert!(checked >= 2);
    let logs = format!("{}{}", oidc::logs(), s.server.child_logs());
    assert!(logs.contains("browser login"), "the login was not logged");
}
