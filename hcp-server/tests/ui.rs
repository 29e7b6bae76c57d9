//! The web UI's files with OIDC on: served without a token (they hold no data) under the strict
//! Content-Security-Policy, while the data behind them still needs one; the browser login lands
//! on the UI by default; `GET /me` tells a tenant only their own projects.

mod common;
mod oidc;

use serde_json::Value;

#[tokio::test]
async fn the_ui_is_public_and_strict_while_its_data_needs_a_token() {
    let s = oidc::AuthServer::start(&[]).await;
    let http = &s.server.http;
    for (path, status, ty) in [
        ("/ui/", 200, "text/html"),
        ("/ui/app.js", 200, "text/javascript"),
        ("/ui/vendor/novnc/core/rfb.js", 200, "text/javascript"),
        ("/ui/vendor/novnc/LICENSE.txt", 200, "text/plain"),
        ("/ui/nope.js", 404, "text/plain"),
    ] {
        let resp = http.get(s.at(path)).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let h = resp.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(ty),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        for d in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(d), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    // Only reads: the UI's files take no other method.
    let resp = http.post(s.at("/ui/")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    // The data needs a token.
    let resp = http
        .get(s.at("/api/hcp/tenant/v1/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // A browser login without `return_to` lands on the UI.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects.get(s.at("/oidc/logout")).send().await.unwrap();
    assert_eq!(resp.headers()["location"], "/ui/");

    // `me` names the caller's own projects only, never another tenant's.
    let alice = s.idp.token("alice", &["hcp-tenant"], &["demo"]).await;
    let me: Value = s
        .get("/api/hcp/tenant/v1/me", &alice)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["subject"], "alice");
    assert_eq!(me["projects"], serde_json::json!(["demo"]));
    assert_eq!(me["development"], false);
    assert_eq!(me["operator"], false);
    assert_eq!(me["any_project"], false);
    assert!(me["expires_at"].as_i64().is_some());
    let ops = s.idp.token("ops", &["hcp-operator"], &[]).await;
    let me: Value = s
        .get("/api/hcp/tenant/v1/me", &ops)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["projects"], serde_json::json!(["demo", "other"]));
    assert_eq!(me["operator"], true);
}
