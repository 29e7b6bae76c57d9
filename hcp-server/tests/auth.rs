//! Authentication and tenancy against a real OIDC provider (`oauth2-mock-server`, installed by
//! `scripts/oidc-peer.sh`): role and project checks, every refused token, key rotation, the
//! refetch cooldown, development mode, and no token in the logs.

mod common;
mod oidc;

use futures::StreamExt;
use futures::stream;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use common::json_of;
use oidc::{AuthServer, CLIENT_ID, T, assert_invalid, claims_of, header_of, with_header};

/// The default tenant role.
const TENANT: &str = "hcp-tenant";
/// The role of the Hyper-V service's `/api/v1` routes (the documented Hyper-V setup).
const HYPERV: &str = "vm-admin";
const OPERATOR: &str = "hcp-operator";

async fn wait_job(s: &AuthServer, job_id: &str, token: &str) -> Value {
    for _ in 0..400 {
        let job = json_of(s.get(&format!("{T}/jobs/{job_id}"), token).await).await;
        if matches!(
            job["state"].as_str(),
            Some("SUCCEEDED" | "FAILED" | "CANCELLED")
        ) {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("job {job_id} did not end");
}

#[tokio::test]
async fn valid_token_with_role_and_project_is_200() {
    let s = AuthServer::start(&[]).await;
    let alice = s.idp.token("alice", &[TENANT], &["demo"]).await;
    let resp = s.get(&format!("{T}/projects/demo/vms"), &alice).await;
    assert_eq!(resp.status(), 200);
    let resp = s.create("demo", "web-1", &alice).await;
    assert_eq!(resp.status(), 202);
    let body = json_of(resp).await;
    let job = wait_job(&s, body["job_id"].as_str().unwrap(), &alice).await;
    assert_eq!(job["state"], "SUCCEEDED");
    let resp = s
        .get(
            &format!("{T}/projects/demo/vms/{}", body["vm_id"].as_str().unwrap()),
            &alice,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.get("/api/hcp/common/v1/images", &alice).await.status(),
        200
    );
}

#[tokio::test]
async fn missing_role_is_403() {
    let s = AuthServer::start(&[("OIDC_ROLE_NAME", HYPERV)]).await;
    let nobody = s.idp.token("nobody", &["reader"], &["demo"]).await;
    let resp = s.get(&format!("{T}/projects/demo/vms"), &nobody).await;
    assert_eq!(resp.status(), 403);
    let body = json_of(resp).await;
    assert_eq!(body["code"], "FORBIDDEN");
    assert!(
        body["detail"].as_str().unwrap().contains("hcp-tenant"),
        "{body}"
    );
    assert_eq!(s.create("demo", "x", &nobody).await.status(), 403);
    // The Hyper-V routes need the Hyper-V role (OIDC_ROLE_NAME), not the tenant role...
    let tenant = s.idp.token("tina", &[TENANT], &["demo"]).await;
    assert_eq!(s.get("/api/v1/vms", &tenant).await.status(), 403);
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &tenant)
            .await
            .status(),
        200
    );
    let admin = s.idp.token("ada", &[HYPERV], &[]).await;
    assert_eq!(s.get("/api/v1/vms", &admin).await.status(), 200);
    // ...and the Hyper-V role is not a tenant role.
    let resp = s.get(&format!("{T}/projects/demo/vms"), &admin).await;
    assert_eq!(resp.status(), 403);
    assert!(
        json_of(resp).await["detail"]
            .as_str()
            .unwrap()
            .contains(TENANT)
    );
    // Common routes need any valid token, no role.
    assert_eq!(
        s.get("/api/hcp/common/v1/flavors", &nobody).await.status(),
        200
    );
}

#[tokio::test]
async fn project_not_in_the_token_is_404_on_its_vms_and_not_in_lists() {
    let s = AuthServer::start(&[]).await;
    let alice = s.idp.token("alice", &[TENANT], &["demo"]).await;
    let bob = s.idp.token("bob", &[TENANT], &["other"]).await;
    let a = json_of(s.create("demo", "alice-vm", &alice).await).await;
    let b = json_of(s.create("other", "bob-vm", &bob).await).await;
    let (bob_vm, bob_job) = (b["vm_id"].as_str().unwrap(), b["job_id"].as_str().unwrap());
    wait_job(&s, bob_job, &bob).await;
    wait_job(&s, a["job_id"].as_str().unwrap(), &alice).await;

    for path in [
        format!("{T}/projects/other/vms"),
        format!("{T}/projects/other/vms/{bob_vm}"),
        format!("{T}/projects/other/jobs"),
        format!("{T}/jobs/{bob_job}"),
        format!("{T}/jobs/{bob_job}/logs"),
        // Bob's VM looked up through Alice's own project: the engine's scope hides it.
        format!("{T}/projects/demo/vms/{bob_vm}"),
    ] {
        let resp = s.get(&path, &alice).await;
        assert_eq!(resp.status(), 404, "{path}");
        let text = resp.text().await.unwrap();
        assert!(!text.contains("bob-vm"), "{path}: {text}");
    }
    let resp = s
        .server
        .http
        .delete(s.at(&format!("{T}/projects/demo/vms/{bob_vm}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = s
        .server
        .http
        .post(s.at(&format!("{T}/projects/other/vms/{bob_vm}:stop")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let list = json_of(s.get(&format!("{T}/projects/demo/vms"), &alice).await).await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&a["vm_id"].as_str().unwrap()), "{list}");
    assert!(!ids.contains(&bob_vm), "{list}");
    let jobs = json_of(s.get(&format!("{T}/projects/demo/jobs"), &alice).await).await;
    assert!(!jobs.to_string().contains(bob_job), "{jobs}");
    // Across the caller's projects: only her own, and a caller of both sees both.
    let jobs = json_of(s.get(&format!("{T}/jobs"), &alice).await).await;
    let text = jobs.to_string();
    assert!(text.contains(a["job_id"].as_str().unwrap()), "{jobs}");
    assert!(!text.contains(bob_job), "{jobs}");
    let carol = s.idp.token("carol", &[TENANT], &["demo", "other"]).await;
    let jobs = json_of(s.get(&format!("{T}/jobs"), &carol).await).await;
    let text = jobs.to_string();
    assert!(
        text.contains(bob_job) && text.contains(a["job_id"].as_str().unwrap()),
        "{jobs}"
    );
    let none = s.idp.token("dave", &[TENANT], &[]).await;
    let jobs = json_of(s.get(&format!("{T}/jobs"), &none).await).await;
    assert_eq!(jobs["items"], serde_json::json!([]), "{jobs}");
    // Bob still sees his own.
    assert_eq!(
        s.get(&format!("{T}/jobs/{bob_job}"), &bob).await.status(),
        200
    );
}

#[tokio::test]
async fn operator_gets_ops_routes_and_tenant_member_gets_403() {
    let s = AuthServer::start(&[]).await;
    let op = s.idp.token("olga", &[OPERATOR], &[]).await;
    let alice = s.idp.token("alice", &[TENANT], &["demo"]).await;
    for path in [
        "/api/hcp/ops/v1/providers",
        "/api/hcp/ops/v1/hosts",
        "/api/hcp/ops/v1/vms",
        "/api/hcp/ops/v1/jobs",
        "/api/hcp/ops/v1/events",
    ] {
        assert_eq!(s.get(path, &op).await.status(), 200, "{path}");
        let resp = s.get(path, &alice).await;
        assert_eq!(resp.status(), 403, "{path}");
        assert_eq!(json_of(resp).await["code"], "FORBIDDEN");
    }
    let resp = s
        .server
        .http
        .post(s.at("/api/hcp/ops/v1/reconcile"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // The operator acts in any project.
    let b = json_of(s.create("other", "op-vm", &op).await).await;
    assert_eq!(
        s.get(&format!("{T}/jobs/{}", b["job_id"].as_str().unwrap()), &op)
            .await
            .status(),
        200
    );
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &op).await.status(),
        200
    );
}

#[tokio::test]
async fn no_token_is_401_and_public_routes_stay_open() {
    let s = AuthServer::start(&[]).await;
    let http = &s.server.http;
    let resp = http
        .get(s.at(&format!("{T}/projects/demo/vms")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"hcp\"");
    assert_eq!(json_of(resp).await["code"], "UNAUTHENTICATED");
    for path in ["/openapi.json", "/docs", "/api/v1/hosts", "/nope"] {
        assert_eq!(
            http.get(s.at(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            http.get(s.at(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    for bad in ["Basic YWxpY2U6cHc=", "Bearer", "Bearer not-a-jwt"] {
        let resp = http
            .get(s.at(&format!("{T}/projects/demo/vms")))
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{bad}");
        assert_eq!(json_of(resp).await["code"], "INVALID_TOKEN", "{bad}");
    }
    // HCP_PUBLIC_ROUTES changes the set.
    let closed = AuthServer::start(&[("HCP_PUBLIC_ROUTES", "/healthz,/openapi.json")]).await;
    let http = &closed.server.http;
    assert_eq!(
        http.get(closed.at("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.get(closed.at("/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn alg_none_is_401() {
    let s = AuthServer::start(&[]).await;
    let valid = s.idp.token("alice", &[TENANT], &["demo"]).await;
    let mut h = header_of(&valid);
    h["alg"] = json!("none");
    let forged = with_header(&valid, h);
    let unsigned = format!(
        "{}.",
        forged.rsplit_once('.').unwrap().0 // header.claims with an empty signature
    );
    oidc::remember(&unsigned);
    for t in [&forged, &unsigned] {
        let resp = s.get(&format!("{T}/projects/demo/vms"), t).await;
        assert_invalid(resp, t, "`none` is not allowed").await;
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_401() {
    let s = AuthServer::start(&[]).await;
    let valid = s.idp.token("alice", &[TENANT], &["demo"]).await;
    let (kid, pem) = s.idp.public_pem().await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid);
    let forged = jsonwebtoken::encode(
        &header,
        &claims_of(&valid),
        &EncodingKey::from_secret(pem.as_bytes()),
    )
    .unwrap();
    oidc::remember(&forged);
    let resp = s.get(&format!("{T}/projects/demo/vms"), &forged).await;
    assert_invalid(resp, &forged, "`HS256` is not allowed").await;
}

#[tokio::test]
async fn bad_signature_is_401() {
    let s = AuthServer::start(&[]).await;
    let valid = s.idp.token("alice", &[TENANT], &["demo"]).await;
    let (head, sig) = valid.rsplit_once('.').unwrap();
    let mut bytes = sig.as_bytes().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let forged = format!("{head}.{}", String::from_utf8(bytes).unwrap());
    oidc::remember(&forged);
    let resp = s.get(&format!("{T}/projects/demo/vms"), &forged).await;
    assert_invalid(resp, &forged, "signature").await;
    // A valid token whose claims were changed after signing fails the same way.
    let mut claims = claims_of(&valid);
    claims["roles"] = json!([OPERATOR]);
    let mut parts = valid.split('.');
    let tampered = format!(
        "{}.{}.{}",
        parts.next().unwrap(),
        base64_url(&claims.to_string()),
        parts.nth(1).unwrap()
    );
    oidc::remember(&tampered);
    let resp = s.get("/api/hcp/ops/v1/vms", &tampered).await;
    assert_invalid(resp, &tampered, "signature").await;
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn wrong_iss_is_401() {
    let s = AuthServer::start(&[]).await;
    let t = s
        .idp
        .mint(
            json!({"sub": "alice", "aud": CLIENT_ID, "roles": [TENANT], "projects": ["demo"],
                   "iss": format!("{}/other", s.idp.issuer)}),
            &[],
            json!({}),
        )
        .await;
    let resp = s.get(&format!("{T}/projects/demo/vms"), &t).await;
    assert_invalid(resp, &t, "iss").await;
}

#[tokio::test]
async fn missing_aud_is_401() {
    let s = AuthServer::start(&[]).await;
    let t = s
        .idp
        .mint(
            json!({"sub": "alice", "roles": [TENANT], "projects": ["demo"]}),
            &["aud"],
            json!({}),
        )
        .await;
    assert!(claims_of(&t).get("aud").is_none());
    let resp = s.get(&format!("{T}/projects/demo/vms"), &t).await;
    assert_invalid(resp, &t, "`aud`").await;
}

#[tokio::test]
async fn wrong_aud_is_401() {
    let s = AuthServer::start(&[]).await;
    let t = s
        .idp
        .mint(
            json!({"sub": "alice", "aud": ["some-other-api"], "roles": [TENANT], "projects": ["demo"]}),
            &[],
            json!({}),
        )
        .await;
    let resp = s.get(&format!("{T}/projects/demo/vms"), &t).await;
    assert_invalid(resp, &t, "`aud`").await;
}

#[tokio::test]
async fn expired_token_is_401() {
    let s = AuthServer::start(&[]).await;
    let now = chrono::Utc::now().timestamp();
    let t = s
        .idp
        .mint(
            json!({"sub": "alice", "aud": CLIENT_ID, "roles": [TENANT], "projects": ["demo"],
                   "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}),
            &[],
            json!({}),
        )
        .await;
    let resp = s.get(&format!("{T}/projects/demo/vms"), &t).await;
    assert_invalid(resp, &t, "expired").await;
}

#[tokio::test]
async fn nbf_in_the_future_is_401() {
    let s = AuthServer::start(&[]).await;
    let now = chrono::Utc::now().timestamp();
    let t = s
        .idp
        .mint(
            json!({"sub": "alice", "aud": CLIENT_ID, "roles": [TENANT], "projects": ["demo"],
                   "nbf": now + 3600, "exp": now + 7200}),
            &[],
            json!({}),
        )
        .await;
    let resp = s.get(&format!("{T}/projects/demo/vms"), &t).await;
    assert_invalid(resp, &t, "`nbf`").await;
}

#[tokio::test]
async fn missing_exp_is_401() {
    let s = AuthServer::start(&[]).await;
    let t = s
        .idp
        .mint(
            json!({"sub": "alice", "aud": CLIENT_ID, "roles": [TENANT], "projects": ["demo"]}),
            &["exp"],
            json!({}),
        )
        .await;
    assert!(claims_of(&t).get("exp").is_none());
    let resp = s.get(&format!("{T}/projects/demo/vms"), &t).await;
    assert_invalid(resp, &t, "`exp`").await;
}

async fn kid_is_refused(kid: &str, check: &str) {
    let s = AuthServer::start(&[]).await;
    let valid = s.idp.token("alice", &[TENANT], &["demo"]).await;
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &valid)
            .await
            .status(),
        200
    );
    let mut h = header_of(&valid);
    h["kid"] = json!(kid);
    let forged = with_header(&valid, h);
    let resp = s.get(&format!("{T}/projects/demo/vms"), &forged).await;
    assert_invalid(resp, &forged, check).await;
    // The service still answers valid tokens afterwards.
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &valid)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn unknown_kid_is_401() {
    kid_is_refused("no-such-key-2024", "`kid` names no signing key").await;
}

#[tokio::test]
async fn kid_with_path_traversal_is_401() {
    kid_is_refused("../../../../etc/passwd", "`kid`").await;
}

#[tokio::test]
async fn kid_with_quotes_is_401() {
    kid_is_refused("k\" OR \"1\"=\"1", "`kid` is malformed").await;
    kid_is_refused("it's", "`kid` is malformed").await;
}

#[tokio::test]
async fn rotated_keys_are_accepted_after_one_refetch() {
    let s = AuthServer::start(&[]).await;
    let old = s.idp.token("alice", &[TENANT], &["demo"]).await;
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &old)
            .await
            .status(),
        200
    );
    let before = s.idp.jwks_fetches().await;
    let kid = s.idp.rotate(true).await;
    let new = s.idp.token("alice", &[TENANT], &["demo"]).await;
    assert_eq!(header_of(&new)["kid"], kid.as_str());
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &new)
            .await
            .status(),
        200
    );
    assert_eq!(s.idp.jwks_fetches().await, before + 1, "one refetch");
    // More requests with the new key need no more fetches.
    for _ in 0..5 {
        assert_eq!(
            s.get(&format!("{T}/projects/demo/vms"), &new)
                .await
                .status(),
            200
        );
    }
    assert_eq!(s.idp.jwks_fetches().await, before + 1);
    // The retired key left the provider's key set, so its tokens no longer validate.
    let resp = s.get(&format!("{T}/projects/demo/vms"), &old).await;
    assert_invalid(resp, &old, "`kid`").await;
}

#[tokio::test]
async fn random_kids_cause_at_most_one_jwks_fetch_per_cooldown() {
    // A cooldown longer than the test, so the bound does not depend on how fast it runs.
    let s = AuthServer::start(&[("OIDC_JWKS_REFRESH_COOLDOWN", "1h")]).await;
    let valid = s.idp.token("alice", &[TENANT], &["demo"]).await;
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &valid)
            .await
            .status(),
        200
    );
    let before = s.idp.jwks_fetches().await;
    let header = header_of(&valid);
    let forged: Vec<String> = (0..1000)
        .map(|_| {
            let mut h = header.clone();
            h["kid"] = json!(uuid::Uuid::new_v4().simple().to_string());
            with_header(&valid, h)
        })
        .collect();
    let s = &s;
    let statuses: Vec<u16> = stream::iter(forged.iter())
        .map(|t| async move {
            s.get(&format!("{T}/projects/demo/vms"), t)
                .await
                .status()
                .as_u16()
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(statuses.len(), 1000);
    assert!(statuses.iter().all(|c| *c == 401), "{statuses:?}");
    let fetched = s.idp.jwks_fetches().await - before;
    assert!(fetched <= 1, "{fetched} JWKS fetches for 1000 random kids");
    // Within the cooldown even a real new key waits: the provider is not asked again.
    s.idp.rotate(false).await;
    let new = s.idp.token("alice", &[TENANT], &["demo"]).await;
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &new)
            .await
            .status(),
        401
    );
    assert_eq!(s.idp.jwks_fetches().await - before, fetched);
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &valid)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn cached_keys_validate_while_the_provider_is_down() {
    let s = AuthServer::start(&[]).await;
    let t = s.idp.token("alice", &[TENANT], &["demo"]).await;
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &t).await.status(),
        200
    );
    s.idp.set_down(true).await;
    let t2 = s.idp.token("alice", &[TENANT], &["demo"]).await;
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &t2).await.status(),
        200
    );
    let mut h = header_of(&t);
    h["kid"] = json!("rotated-while-down");
    let unknown = with_header(&t, h);
    let resp = s.get(&format!("{T}/projects/demo/vms"), &unknown).await;
    assert_invalid(resp, &unknown, "`kid`").await;
    assert_eq!(
        s.get(&format!("{T}/projects/demo/vms"), &t).await.status(),
        200
    );
}

#[tokio::test]
async fn mutations_are_attributed_to_the_principal_in_jobs_and_audit_events() {
    let s = AuthServer::start(&[]).await;
    let alice = s.idp.token("alice@example.com", &[TENANT], &["demo"]).await;
    let op = s.idp.token("olga", &[OPERATOR], &[]).await;
    let body = json_of(s.create("demo", "attributed", &alice).await).await;
    let (vm, job) = (
        body["vm_id"].as_str().unwrap(),
        body["job_id"].as_str().unwrap(),
    );
    let j = wait_job(&s, job, &alice).await;
    assert_eq!(j["principal"], "alice@example.com", "{j}");
    let ops_job = json_of(s.get(&format!("/api/hcp/ops/v1/jobs/{job}"), &op).await).await;
    assert_eq!(
        ops_job["principal"]["subject"], "alice@example.com",
        "{ops_job}"
    );
    let events = json_of(
        s.get(&format!("/api/hcp/ops/v1/events?vm_id={vm}"), &op)
            .await,
    )
    .await;
    let items = events["items"].as_array().unwrap();
    assert!(!items.is_empty(), "{events}");
    assert!(
        items.iter().any(|e| e["principal"] == "alice@example.com"),
        "{events}"
    );
    // A stop by the operator is attributed to the operator.
    let resp = s
        .server
        .http
        .post(s.at(&format!("{T}/projects/demo/vms/{vm}:stop")))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let stop = json_of(resp).await;
    let j = wait_job(&s, stop["job_id"].as_str().unwrap(), &alice).await;
    assert_eq!(j["principal"], "olga", "{j}");
}

#[tokio::test]
async fn idempotency_keys_are_scoped_per_principal() {
    let s = AuthServer::start(&[]).await;
    let alice = s.idp.token("alice", &[TENANT], &["demo"]).await;
    let carol = s.idp.token("carol", &[TENANT], &["demo"]).await;
    let send = |token: String, name: &'static str| {
        let http = s.server.http.clone();
        let url = s.at(&format!("{T}/projects/demo/vms"));
        async move {
            let resp = http
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", "same-key-1")
                .json(&json!({"name": name, "image": "ubuntu-24.04", "flavor": "small"}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202);
            json_of(resp).await
        }
    };
    let a1 = send(alice.clone(), "idem-a").await;
    let a2 = send(alice.clone(), "idem-a").await;
    assert_eq!(a1["vm_id"], a2["vm_id"], "Alice's retry replays");
    let c1 = send(carol.clone(), "idem-c").await;
    assert_ne!(a1["vm_id"], c1["vm_id"], "Carol's key is her own");
}

#[tokio::test]
async fn development_mode_warns_and_never_listens_beyond_loopback() {
    oidc::capture_logs();
    let refused = hcp_server::ServeOptions::default()
        .apply_env(&|k| (k == "HCP_LISTEN").then(|| "0.0.0.0:8080".to_string()))
        .unwrap_err();
    assert_eq!(refused.field(), Some("listen"));
    assert!(refused.message().contains("OIDC_ISSUER_URL"), "{refused}");
    let accepted = hcp_server::ServeOptions::default().apply_env(&|k| match k {
        "HCP_LISTEN" => Some("0.0.0.0:8080".to_string()),
        "OIDC_ISSUER_URL" => Some("https://login.example.com/tenant/v2.0".to_string()),
        "OIDC_CLIENT_ID" => Some("hcp".to_string()),
        _ => None,
    });
    assert!(accepted.is_ok(), "{accepted:?}");
    let s = common::start().await;
    let resp = s
        .http
        .get(s.at(&format!("{T}/projects/demo/vms")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "no token needed in development mode");
    let logs = format!("{}{}", oidc::logs(), s.child_logs());
    assert!(logs.contains("AUTHENTICATION IS OFF"), "no startup warning");
    let login = s.http.get(s.at("/oidc/login")).send().await.unwrap();
    assert_eq!(login.status(), 404);
}

#[tokio::test]
async fn no_token_appears_in_the_service_logs() {
    let s = AuthServer::start(&[]).await;
    let alice = s.idp.token("alice", &[TENANT], &["demo"]).await;
    let expired = s
        .idp
        .mint(
            json!({"sub": "alice", "aud": CLIENT_ID, "exp": 1_000_000}),
            &[],
            json!({}),
        )
        .await;
    let mut h = header_of(&alice);
    h["kid"] = json!("unknown-kid");
    let unknown = with_header(&alice, h);
    for t in [&alice, &expired, &unknown] {
        s.get(&format!("{T}/projects/demo/vms"), t).await;
        s.get(&format!("{T}/projects/other/vms"), t).await;
        s.get("/api/hcp/ops/v1/vms", t).await;
        s.create("demo", "logged", t).await;
    }
    // Everything the other tests of this binary minted is checked too.
    let checked = s.assert_no_token_logged();
    assert!(checked >= 3);
    assert!(
        oidc::logs().contains("hcp::access") || s.server.child_logs().contains("hcp::access"),
        "the access log was not captured"
    );
}

#[tokio::test]
async fn openapi_declares_bearer_and_session_security() {
    let s = AuthServer::start(&[]).await;
    let t = s.idp.token("alice", &[], &[]).await;
    let doc = json_of(s.get("/openapi.json", &t).await).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["name"],
        "__Host-hcp_session"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["in"],
        "cookie"
    );
    // Every operation but the public ones accepts either scheme (Swagger UI's Authorize button
    // offers both); the public routes need none.
    let either = json!([{"bearer": []}, {"session": []}]);
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let want = if ["/healthz", "/readyz", "/metrics"].contains(&path.as_str()) {
                json!([])
            } else {
                either.clone()
            };
            assert_eq!(op["security"], want, "{method} {path}");
            checked += 1;
        }
    }
    assert!(checked > 30, "{checked} operations");
    let parsed: Result<openapiv3::OpenAPI, _> = serde_json::from_value(doc);
    assert!(parsed.is_ok(), "{parsed:?}");
}

#[tokio::test]
async fn hcp_client_sends_its_token() {
    let s = AuthServer::start(&[]).await;
    let alice = s.idp.token("alice", &[TENANT], &["demo"]).await;
    let client = hcp_client::Client::builder(&s.server.url)
        .token(Some(alice.clone()))
        .build()
        .unwrap();
    assert!(
        !format!("{client:?}").contains(&alice),
        "the token is redacted"
    );
    let vms = client
        .list_vms("demo", &hcp_core::store::PageRequest::default())
        .await;
    assert!(vms.is_ok(), "{vms:?}");
    let anonymous = hcp_client::Client::new(&s.server.url).unwrap();
    let e = anonymous
        .list_vms("demo", &hcp_core::store::PageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::Unauthorized);
    assert!(!e.to_string().contains(&alice));
    let e = client
        .list_vms("other", &hcp_core::store::PageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::NotFound);
}

#[tokio::test]
async fn every_allowed_asymmetric_algorithm_from_the_provider_is_accepted() {
    let s = AuthServer::start(&[("OIDC_JWKS_REFRESH_COOLDOWN", "0s")]).await;
    for alg in ["PS256", "ES256", "ES384", "EdDSA", "RS512"] {
        s.idp.rotate_to(alg, false).await;
        let t = s.idp.token("alice", &[TENANT], &["demo"]).await;
        assert_eq!(header_of(&t)["alg"], alg);
        assert_eq!(
            s.get(&format!("{T}/projects/demo/vms"), &t).await.status(),
            200,
            "{alg}"
        );
    }
}

#[tokio::test]
async fn unreachable_provider_is_503_never_500() {
    // Nothing listens on the discard port: the keys never load.
    let s = common::start_with(common::Setup {
        env: vec![
            ("OIDC_ISSUER_URL".into(), "http://127.0.0.1:9".into()),
            ("OIDC_CLIENT_ID".into(), CLIENT_ID.into()),
        ],
        ..Default::default()
    })
    .await;
    let idp = oidc::Idp::start().await;
    let t = idp.token("alice", &[TENANT], &["demo"]).await;
    let resp = s
        .http
        .get(s.at(&format!("{T}/projects/demo/vms")))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body = json_of(resp).await;
    assert_eq!(body["code"], "IDENTITY_PROVIDER_UNAVAILABLE");
    assert_eq!(body["retryable"], true);
    assert!(!body.to_string().contains(&t));
    // Refused tokens are still 401 without asking the provider.
    let resp = s
        .http
        .get(s.at(&format!("{T}/projects/demo/vms")))
        .bearer_auth("e30.e30.")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        s.http.get(s.at("/healthz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn a_burst_over_the_request_budget_is_429_with_retry_after_and_others_go_on() {
    let s = AuthServer::start(&[("HCP_RATE_LIMIT", "1/min"), ("HCP_RATE_BURST", "3")]).await;
    let alice = s.idp.token("alice", &[TENANT], &["demo"]).await;
    let bob = s.idp.token("bob", &[TENANT], &["demo"]).await;
    let path = format!("{T}/projects/demo/vms");
    for _ in 0..3 {
        assert_eq!(s.get(&path, &alice).await.status(), 200);
    }
    let resp = s.get(&path, &alice).await;
    assert_eq!(resp.status(), 429);
    let after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&after), "Retry-After: {after}");
    let p = json_of(resp).await;
    assert_eq!(p["code"], "RATE_LIMITED", "{p}");
    // Another caller has its own budget; probes are never limited.
    assert_eq!(s.get(&path, &bob).await.status(), 200);
    for _ in 0..10 {
        let resp = s.server.http.get(s.at("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn quota_and_capacity_refusals_have_their_own_status_and_code() {
    let hosts = r#"
providers:
  - name: sim
    kind: sim
    hosts:
      - {name: sim-1, zone: zone-a, vcpus: 2, memory_mib: 4096}
zones:
  - {name: zone-a}
projects:
  - {name: demo, quota: {max_vms: 1}}
  - {name: other}
catalog:
  images:
    - {name: ubuntu-24.04, os: linux}
  flavors:
    - {name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10}
    - {name: big, vcpus: 2, memory_mib: 2048, disk_gib: 10}
"#;
    let s = AuthServer::start_with_hosts(hosts.to_string(), &[]).await;
    let alice = s.idp.token("alice", &[TENANT], &["demo", "other"]).await;
    let first = json_of(s.create("demo", "one", &alice).await).await;
    wait_job(&s, first["job_id"].as_str().unwrap(), &alice).await;
    let resp = s.create("demo", "two", &alice).await;
    assert_eq!(resp.status(), 403, "the project's quota");
    let p = json_of(resp).await;
    assert_eq!(
        (p["code"].as_str(), p["kind"].as_str()),
        (Some("QUOTA_EXCEEDED"), Some("quota_exceeded")),
        "{p}"
    );
    // The host has 1 of 2 vCPUs left: a 2-vCPU VM fits no host now.
    let resp = s
        .server
        .http
        .post(s.at(&format!("{T}/projects/other/vms")))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"name": "wide", "image": "ubuntu-24.04", "flavor": "big"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409, "no host has room");
    let p = json_of(resp).await;
    assert_eq!(p["code"], "CAPACITY_EXHAUSTED", "{p}");
    assert_eq!(p["kind"], "quota_exceeded", "{p}");
}
