//! `hcp serve`: the banner, the configuration it reads the Kubernetes way, the refusals that
//! keep it safe, and its graceful shutdown. Every test runs the real binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::server::{ServeBuilder, Server, hosts_file, http, request};
use common::{Hcp, INVALID_INPUT};
use serde_json::Value;

#[test]
fn serve_prints_the_banner_and_its_first_request_works() {
    let server = Server::demo();
    let b = &server.banner;
    let base = &server.url;
    assert!(
        b.starts_with(&format!(
            "HCP serves the simulator demo (in-memory store) on {base}\n"
        )),
        "{b}"
    );
    for path in [
        "/api/hcp/tenant/v1",
        "/api/hcp/ops/v1",
        "/api/hcp/common/v1",
        "/ui/",
        "/docs",
        "/openapi.json",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert!(b.contains(&format!("{base}{path}")), "{path} missing:\n{b}");
    }
    assert!(b.contains("Auth        off (development mode"), "{b}");
    for (path, what) in [
        ("/ui/", "<main"),
        ("/docs", "swagger"),
        ("/openapi.json", "\"openapi\""),
        ("/metrics", "# TYPE"),
        ("/healthz", ""),
    ] {
        let r = http(server.addr(), "GET", path, &[], None).unwrap();
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(
            r.body
                .to_ascii_lowercase()
                .contains(&what.to_ascii_lowercase()),
            "{path}: {}",
            r.body
        );
    }

    // The banner's curl, sent as printed: the URL after `-X POST`, the headers and the body.
    let curl: Vec<&str> = b
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("curl "))
        .take(3)
        .collect();
    assert_eq!(curl.len(), 3, "{b}");
    let url = curl[0].split_whitespace().nth(4).unwrap();
    let path = url.strip_prefix(base.as_str()).unwrap();
    assert_eq!(path, "/api/hcp/tenant/v1/projects/demo/vms");
    assert!(curl[1].contains("-H 'Idempotency-Key: first-vm'"), "{b}");
    let body = curl[2]
        .trim()
        .strip_prefix("-d '")
        .and_then(|s| s.strip_suffix('\''))
        .unwrap();
    let sent = http(
        server.addr(),
        "POST",
        path,
        &[("Idempotency-Key", "first-vm")],
        Some(body),
    )
    .unwrap();
    assert_eq!(sent.status, 202, "{sent:?}");
    let accepted: Value = serde_json::from_str(&sent.body).unwrap();
    let job = accepted["job_id"].as_str().unwrap();

    // Then the banner's `hcp` lines, with JOB_ID filled in.
    let hcp = Hcp::new();
    let commands: Vec<String> = b
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("hcp --url"))
        .map(|l| l.replace("JOB_ID", job))
        .collect();
    assert_eq!(commands.len(), 2, "{b}");
    for line in &commands {
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let r = hcp.run(&args);
        assert_eq!(r.code, 0, "{line}: {r:?}");
    }
    let listed = hcp.with_url(base).vms("demo");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "web-1");
}

#[test]
fn serve_keeps_nothing_on_disk_and_never_touches_the_cli_state() {
    let builder = ServeBuilder::new();
    let dir = builder.dir();
    let server = builder.start();
    let remote = Hcp::new().with_url(&server.url);
    remote.create("web-1", &["--wait"]);
    assert_eq!(remote.vms("demo").len(), 1);
    // The server ran with HCP_SIM_STATE and XDG_STATE_HOME pointing into `dir`.
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.is_empty(), "hcp serve wrote {files:?}");
    let (status, _) = server.terminate();
    assert!(status.success());

    // A new service starts empty: the demo simulator lives in memory.
    let again = Server::demo();
    assert!(Hcp::new().with_url(&again.url).vms("demo").is_empty());
}

#[test]
fn serve_refuses_a_non_loopback_address_without_authentication() {
    for (builder, names) in [
        (ServeBuilder::new().listen(Some("0.0.0.0:0")), "0.0.0.0:0"),
        (
            ServeBuilder::new()
                .listen(None)
                .env("HCP_LISTEN", "0.0.0.0:8080"),
            "0.0.0.0:8080",
        ),
    ] {
        let r = builder.fail();
        assert_eq!(r.code, INVALID_INPUT, "{r:?}");
        assert!(
            r.stderr.contains("refusing to listen on") && r.stderr.contains(names),
            "{r:?}"
        );
        assert!(r.stderr.contains("OIDC_ISSUER_URL"), "says how: {r:?}");
        assert!(r.stdout.is_empty(), "no banner: {r:?}");
    }
    // A bad flag names the flag.
    let r = ServeBuilder::new().listen(Some("nowhere")).fail();
    assert_eq!(r.code, INVALID_INPUT, "{r:?}");
    assert!(r.stderr.contains("--listen"), "{r:?}");
    // The flag wins over HCP_LISTEN (a manifest's 0.0.0.0 does not stop a loopback run).
    let server = ServeBuilder::new()
        .env("HCP_LISTEN", "0.0.0.0:8080")
        .start();
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
}

#[test]
fn a_broken_configuration_fails_fast_naming_the_key() {
    let broken_hosts = hosts_file("{}").replace("  - name: east\n", "  - name: East_1\n");
    // A secret that cannot be read: a directory where the file `oidc_client_secret` belongs.
    let unreadable = ServeBuilder::new();
    let secrets = unreadable.dir().join("secrets");
    std::fs::create_dir_all(secrets.join("oidc_client_secret")).unwrap();
    let unreadable = unreadable
        .env("HCP_SECRETS_DIR", secrets.to_str().unwrap())
        .env("OIDC_ISSUER_URL", "https://idp.example.com")
        .env("OIDC_CLIENT_ID", "hcp");
    let cases: Vec<(ServeBuilder, &str)> = vec![
        (unreadable, "secrets.oidc_client_secret"),
        (ServeBuilder::new().hosts(&broken_hosts), "zones[0].name"),
        (
            ServeBuilder::new().hosts(&hosts_file("{latency: soon}")),
            "providers.lab.settings",
        ),
        (ServeBuilder::new().hosts("providers: [\n"), "hosts.yaml"),
        (
            ServeBuilder::new().args(&["--config", "/no/such/hosts.yaml"]),
            "/no/such/hosts.yaml",
        ),
        (
            ServeBuilder::new().env("INVENTORY_REFRESH_INTERVAL", "soon"),
            "INVENTORY_REFRESH_INTERVAL",
        ),
        (
            ServeBuilder::new().env("HCP_BODY_LIMIT", "lots"),
            "HCP_BODY_LIMIT",
        ),
        (
            ServeBuilder::new().env("HCP_LOG_FORMAT", "xml"),
            "HCP_LOG_FORMAT",
        ),
        (
            ServeBuilder::new().env("HCP_MAX_CONCURRENT_JOBS", "-3"),
            "HCP_MAX_CONCURRENT_JOBS",
        ),
        (
            ServeBuilder::new().env("OIDC_ISSUER_URL", "https://idp.example.com"),
            "OIDC_CLIENT_ID",
        ),
    ];
    for (builder, key) in cases {
        let r = builder.fail();
        assert_eq!(r.code, INVALID_INPUT, "{key}: {r:?}");
        let error = r
            .stderr
            .lines()
            .find(|l| l.starts_with("hcp: error: "))
            .unwrap_or_else(|| panic!("{key}: no error line: {r:?}"));
        assert!(error.contains(key), "{key} not named: {error}");
        assert!(r.stdout.is_empty(), "{key}: no banner: {r:?}");
    }
}

#[test]
fn configuration_comes_from_files_and_the_environment() {
    let builder = ServeBuilder::new();
    let hosts = builder.dir().join("configmap.yaml");
    std::fs::write(&hosts, hosts_file("{}")).unwrap();
    let server = builder
        .env("HCP_CONFIG", hosts.to_str().unwrap())
        .env("INVENTORY_REFRESH_INTERVAL", "2s")
        .env("HCP_LOG_FORMAT", "text")
        .env("HCP_BODY_LIMIT", "300")
        .start();
    assert!(
        server.banner.contains(&format!(
            "HCP serves the hosts file {} (in-memory store)",
            hosts.display()
        )),
        "{}",
        server.banner
    );
    let hcp = Hcp::new().with_url(&server.url);
    let names: Vec<String> = hcp
        .json(&["host", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["lab-1", "lab-2"], "the hosts file's hosts");
    let created = hcp.json(&[
        "vm",
        "create",
        "--project",
        "other",
        "--name",
        "a",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
        "--wait",
    ]);
    assert_eq!(created["vm"]["zone"], "east");

    // HCP_BODY_LIMIT: a body over 300 bytes is refused before it reaches the engine.
    let mut big = vec![
        "--output",
        "json",
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "big",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
    ];
    let tag = format!("note={}", "x".repeat(400));
    big.extend(["--tag", tag.as_str()]);
    let r = hcp.run(&big);
    assert_eq!(r.code, INVALID_INPUT, "{r:?}");
    assert_eq!(r.error()["code"], "PAYLOAD_TOO_LARGE", "{r:?}");
    assert!(
        r.error()["message"].as_str().unwrap().contains("300"),
        "names the limit: {r:?}"
    );
    assert!(hcp.vms("demo").is_empty());

    // HCP_LOG_FORMAT=text: human-readable lines, not JSON.
    let logs = server.logs();
    let listening = logs
        .lines()
        .find(|l| l.contains("hcp-server listening"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        serde_json::from_str::<Value>(listening).is_err(),
        "{listening}"
    );
    assert!(listening.contains("INFO"), "{listening}");
}

#[test]
fn logs_are_json_by_default_and_the_log_level_applies() {
    let server = ServeBuilder::new().env("HCP_LOG_LEVEL", "warn").start();
    Hcp::new()
        .with_url(&server.url)
        .create("quiet", &["--wait"]);
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|l| l["level"] != "INFO"),
        "HCP_LOG_LEVEL=warn: {logs}"
    );
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .unwrap_or("")
            .contains("AUTHENTICATION IS OFF")),
        "the development-mode warning: {logs}"
    );
}

/// Reads from `s` until `pattern` has arrived; returns everything read.
fn read_until(s: &mut TcpStream, pattern: &str, seen: &mut String) {
    let mut buf = [0u8; 4096];
    while !seen.contains(pattern) {
        let n = s.read(&mut buf).expect("read the event stream");
        assert!(n > 0, "the stream closed before `{pattern}`: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn sigterm_lets_running_requests_finish_and_logs_the_running_jobs() {
    let server = ServeBuilder::new()
        .hosts(&hosts_file("{op_latency: {create_vm: 5s, stop_vm: 10m}}"))
        .start();
    let hcp = Hcp::new().with_url(&server.url);
    let running = hcp.create("long", &["--wait"]);
    // A stop that takes ten minutes: still running when the service stops.
    let stopping = hcp.json(&["vm", "stop", &running, "--project", "demo"]);
    let stop_job = stopping["job_id"].as_str().unwrap().to_string();
    // A create that takes five seconds, followed over its log stream: the request in flight.
    let creating = hcp.json(&[
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "short",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
    ]);
    let create_job = creating["job_id"].as_str().unwrap().to_string();
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let path = format!("/api/hcp/tenant/v1/jobs/{create_job}/logs");
    stream
        .write_all(
            request(
                server.addr(),
                "GET",
                &path,
                &[("Accept", "text/event-stream")],
                None,
            )
            .as_bytes(),
        )
        .unwrap();
    let mut seen = String::new();
    read_until(&mut stream, "attempt 1/", &mut seen);
    assert!(
        !seen.contains("event: end"),
        "the job ended before the signal; the test proves nothing: {seen}"
    );

    server.signal("TERM");
    // It stops accepting while the stream still runs.
    let addr = server.addr().to_string();
    let mut refused = false;
    for _ in 0..400 {
        if TcpStream::connect(&addr).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(refused, "still accepting connections after SIGTERM");
    // The request in flight runs to its end.
    stream.read_to_string(&mut seen).unwrap();
    assert!(seen.contains("event: end"), "{seen}");
    let end = seen
        .split("event: end")
        .nth(1)
        .and_then(|rest| rest.lines().find(|l| l.starts_with("data:")))
        .unwrap_or_else(|| panic!("{seen}"));
    let job: Value = serde_json::from_str(end.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(job["state"], "SUCCEEDED", "{job}");

    let (status, logs) = server.wait();
    assert!(status.success(), "exit {status}: {logs}");
    assert!(logs.contains("SIGTERM received"), "{logs}");
    let stopped = logs
        .lines()
        .find(|l| l.contains("jobs still running"))
        .unwrap_or_else(|| panic!("no line lists the running jobs: {logs}"));
    assert!(stopped.contains(&stop_job), "{stopped}");
    assert!(!stopped.contains(&create_job), "{stopped}");
}

#[test]
fn serve_refuses_a_tenant_role_that_reaches_every_project_unless_allowed() {
    // The issuer is never asked at start-up; keys are fetched in the background.
    let oidc = |b: ServeBuilder| {
        b.env("OIDC_ISSUER_URL", "http://127.0.0.1:9")
            .env("OIDC_CLIENT_ID", "hcp")
    };
    for (env, names) in [
        (
            &[
                ("OIDC_ROLE_NAME", "vm-admin"),
                ("OIDC_TENANT_ROLE", "vm-admin"),
            ][..],
            &["OIDC_HYPERV_ROLE", "OIDC_ROLE_NAME"][..],
        ),
        (
            &[("OIDC_TENANT_ROLE", "hcp-operator")][..],
            &["OIDC_OPERATOR_ROLE"][..],
        ),
    ] {
        let mut b = oidc(ServeBuilder::new());
        for (k, v) in env {
            b = b.env(k, v);
        }
        let r = b.fail();
        assert_eq!(r.code, INVALID_INPUT, "{env:?}: {r:?}");
        let error = r
            .stderr
            .lines()
            .find(|l| l.starts_with("hcp: error: "))
            .unwrap_or_else(|| panic!("{env:?}: no error line: {r:?}"));
        for n in names
            .iter()
            .chain(&["OIDC_TENANT_ROLE", "OIDC_ALLOW_SHARED_TENANT_ROLE"])
        {
            assert!(error.contains(n), "{n} not named: {error}");
        }
        assert!(r.stdout.is_empty(), "no banner: {r:?}");
    }
    // The documented Hyper-V setup starts: its tenant role is a role of its own.
    let server = oidc(ServeBuilder::new())
        .env("OIDC_ROLE_NAME", "vm-admin")
        .start();
    assert!(!server.logs().contains("TENANTS REACH EVERY PROJECT"));
    drop(server);
    // The explicit opt-in starts, with a loud warning naming the roles.
    let server = oidc(ServeBuilder::new())
        .env("OIDC_ROLE_NAME", "vm-admin")
        .env("OIDC_TENANT_ROLE", "vm-admin")
        .env("OIDC_ALLOW_SHARED_TENANT_ROLE", "true")
        .start();
    let logs = server.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("TENANTS REACH EVERY PROJECT"))
        .unwrap_or_else(|| panic!("no warning in:\n{logs}"));
    let w: serde_json::Value = serde_json::from_str(warning).expect("a JSON log line");
    assert_eq!(w["level"], "WARN", "{w}");
    assert!(
        w["message"].as_str().unwrap().contains("`vm-admin`")
            && w["message"].as_str().unwrap().contains("OIDC_HYPERV_ROLE"),
        "{w}"
    );
}
