//! Remote mode against a service with authentication on: `--token` / `HCP_TOKEN` carry a real
//! OIDC provider's tokens (oauth2-mock-server, installed by `scripts/oidc-peer.sh` and driven
//! through hcp-server's `tests/oidc/mock-idp.mjs`), and refusals map to the documented exit codes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::server::{ServeBuilder, hosts_file, http};
use common::{Hcp, NOT_FOUND};
use serde_json::{Value, json};

/// `hcp` exits with this when the service refuses the caller.
const UNAUTHORIZED: i32 = 9;
/// The service's client id: the audience its tokens must carry.
const CLIENT_ID: &str = "hcp-cli-tests";

/// The mock OIDC provider; stops when dropped (its standard input closes).
struct Idp {
    issuer: String,
    addr: String,
    child: Child,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Idp {
    /// Starts the provider; panics, naming the set-up script, when node or the package is missing.
    fn start() -> Idp {
        let npm = std::env::var_os("HCP_NPM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/hcp-npm")
            });
        let module = npm.join("node_modules/oauth2-mock-server/dist/index.mjs");
        assert!(
            module.exists(),
            "the OIDC test peer is not installed ({} is missing): run scripts/oidc-peer.sh",
            module.display()
        );
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../hcp-server/tests/oidc/mock-idp.mjs"
        );
        let mut child = Command::new("node")
            .arg(script)
            .env("HCP_OIDC_MODULE", &module)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run node ({e}): install Node.js 20.19+ and run scripts/oidc-peer.sh")
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the mock provider's address");
        let info: Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
            panic!("the mock provider did not start (said {line:?}); run scripts/oidc-peer.sh")
        });
        Idp {
            issuer: info["issuer"].as_str().expect("issuer").to_string(),
            addr: format!("127.0.0.1:{}", info["port"].as_u64().expect("port")),
            child,
        }
    }

    /// Mints a token with `claims`, valid for `expires_in` seconds (negative: already expired).
    fn token(&self, claims: Value, expires_in: i64) -> String {
        let body = json!({"claims": claims, "expiresIn": expires_in}).to_string();
        let r = http(&self.addr, "POST", "/__test/token", &[], Some(&body)).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let v: Value = serde_json::from_str(&r.body).unwrap();
        v["token"].as_str().expect("token").to_string()
    }

    /// A valid token for `sub` with `roles` and `projects`.
    fn user(&self, sub: &str, roles: &[&str], projects: &[&str]) -> String {
        self.token(
            json!({"sub": sub, "aud": CLIENT_ID, "roles": roles, "projects": projects}),
            3600,
        )
    }
}

/// Runs `hcp --output json args...` with `HCP_TOKEN` (when given) and returns the run.
fn run(hcp: &Hcp, token: Option<&str>, args: &[&str]) -> common::Run {
    let mut c = hcp.command();
    if let Some(t) = token {
        c.env("HCP_TOKEN", t);
    }
    c.args(["--output", "json"]).args(args);
    common::Run::from(c.output().expect("run hcp"))
}

#[test]
fn remote_mode_sends_the_token_and_maps_refusals_to_exit_codes() {
    let idp = Idp::start();
    // The client secret comes from a file under HCP_SECRETS_DIR, the Kubernetes way.
    let builder = ServeBuilder::new();
    let secrets = builder.dir().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let client_secret = "cs-91d4e0b2-never-shown";
    std::fs::write(
        secrets.join("oidc_client_secret"),
        format!("{client_secret}\n"),
    )
    .unwrap();
    let server = builder
        .hosts(&hosts_file("{}"))
        .env("HCP_SECRETS_DIR", secrets.to_str().unwrap())
        .env("OIDC_ISSUER_URL", &idp.issuer)
        .env("OIDC_CLIENT_ID", CLIENT_ID)
        .start();
    assert!(!server.banner.contains(client_secret), "{}", server.banner);
    assert!(
        server
            .banner
            .contains(&format!("OIDC bearer tokens from {}", idp.issuer)),
        "{}",
        server.banner
    );
    assert!(
        server
            .banner
            .contains("-H \"Authorization: Bearer $HCP_TOKEN\""),
        "{}",
        server.banner
    );
    let hcp = Hcp::new().with_url(&server.url);
    let alice = idp.user("alice", &["hcp-tenant"], &["demo"]);
    let operator = idp.user("olga", &["hcp-operator"], &[]);
    let nobody = idp.user("nora", &[], &["demo"]);
    let expired = idp.token(
        json!({"sub": "alice", "aud": CLIENT_ID, "roles": ["hcp-tenant"], "projects": ["demo"]}),
        -600,
    );
    let mut outputs = Vec::new();

    // No token, no role, an expired token: refused, exit code 9.
    for (token, says) in [
        (None, ""),
        (Some(nobody.as_str()), ""),
        (Some(expired.as_str()), "exp"),
    ] {
        let r = run(&hcp, token, &["vm", "list", "--project", "demo"]);
        assert_eq!(r.code, UNAUTHORIZED, "{r:?}");
        let e = r.error();
        assert_eq!(e["code"], "UNAUTHORIZED", "{e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{e}");
        outputs.push(r);
    }

    // A tenant of `demo`: every command works in its project; jobs are attributed to it.
    let created = run(
        &hcp,
        Some(&alice),
        &[
            "vm",
            "create",
            "--project",
            "demo",
            "--name",
            "web-1",
            "--image",
            "ubuntu-24.04",
            "--flavor",
            "small",
            "--wait",
        ],
    );
    assert_eq!(created.code, 0, "{created:?}");
    let c = created.json();
    assert_eq!(c["job"]["state"], "SUCCEEDED");
    assert_eq!(c["job"]["principal"], "alice");
    let job = c["job_id"].as_str().unwrap().to_string();
    let id = c["vm_id"].as_str().unwrap().to_string();
    for args in [
        vec!["vm", "list", "--project", "demo"],
        vec!["vm", "show", &id, "--project", "demo"],
        vec!["job", "show", &job],
        vec!["job", "list", "--project", "demo"],
        vec!["job", "watch", &job, "--project", "demo"],
        vec!["catalog"],
    ] {
        let r = run(&hcp, Some(&alice), &args);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
        outputs.push(r);
    }
    // ...and the flag works like the variable.
    let by_flag = hcp.run(&["--token", &alice, "vm", "show", &id, "--project", "demo"]);
    assert_eq!(by_flag.code, 0, "{by_flag:?}");
    outputs.push(by_flag);

    // Another project is not found, not forbidden: the project flag names it (exit code 3, as
    // for an unknown project); the ops API needs the operator role.
    for args in [
        vec!["vm", "list", "--project", "other"],
        vec!["vm", "show", &id, "--project", "other"],
        vec!["job", "show", &job, "--project", "other"],
    ] {
        let r = run(&hcp, Some(&alice), &args);
        assert_eq!(r.code, NOT_FOUND, "{args:?}: {r:?}");
        let e = r.error();
        assert_eq!(
            (&e["code"], &e["field"]),
            (&json!("NOT_FOUND"), &json!("project")),
            "{e}"
        );
        outputs.push(r);
    }
    let r = run(&hcp, Some(&alice), &["host", "list"]);
    assert_eq!(r.code, UNAUTHORIZED, "{r:?}");
    outputs.push(r);
    let r = run(&hcp, Some(&operator), &["host", "list"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    outputs.push(r);

    for r in &outputs {
        for t in [&alice, &operator, &nobody, &expired] {
            assert!(
                !r.stdout.contains(t.as_str()) && !r.stderr.contains(t.as_str()),
                "a token was printed: {r:?}"
            );
        }
    }
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    for t in [&alice, &operator, &nobody, &expired] {
        assert!(!logs.contains(t.as_str()), "the service logged a token");
    }
    assert!(
        !logs.contains(client_secret),
        "the service logged its client secret"
    );
}
