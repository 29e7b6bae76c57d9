//! `hcp serve` on PostgreSQL (the real local PostgreSQL on 127.0.0.1:5432, which
//! `scripts/test.sh` starts; a missing one fails these tests): selected by `HCP_DATABASE_URL` or
//! the secret file `database_url`, it keeps VMs, jobs and logs across a restart of the process,
//! and never prints the URL's password.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::server::{ServeBuilder, Server};
use common::{Hcp, INVALID_INPUT};
use serde_json::Value;

/// Trust authentication ignores the password, so the URL can carry one to look for in output.
const SECRET: &str = "pg-pw-Kq3-never-logged";

fn database_url() -> String {
    format!("postgres://postgres:{SECRET}@127.0.0.1:5432/test")
}

/// A fresh schema for one test, so tests run in parallel without seeing each other.
struct Schema(String);

impl Schema {
    fn new(tag: &str) -> Schema {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Schema(format!("hcp_serve_{tag}_{}_{nanos}", std::process::id()))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.0.clone();
        // A runtime of its own: Drop may run outside one.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (c, conn) = tokio_postgres::connect(
                    "postgres://postgres@127.0.0.1:5432/test",
                    tokio_postgres::NoTls,
                )
                .await
                .ok()?;
                tokio::spawn(conn);
                c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

fn on_postgres(schema: &Schema) -> ServeBuilder {
    ServeBuilder::new()
        .env("HCP_DATABASE_URL", &database_url())
        .env("HCP_DATABASE_SCHEMA", &schema.0)
}

fn watch(hcp: &Hcp, job_id: &str) -> Vec<Value> {
    let r = hcp.run(&[
        "--output",
        "json",
        "job",
        "watch",
        job_id,
        "--project",
        "demo",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect()
}

#[test]
fn serve_on_postgresql_keeps_vms_jobs_and_logs_across_a_restart() {
    let schema = Schema::new("restart");
    let first = on_postgres(&schema).start();
    assert!(
        first
            .banner
            .starts_with("HCP serves the simulator demo (PostgreSQL store) on "),
        "{}",
        first.banner
    );
    let hcp = Hcp::new().with_url(&first.url);
    let vm_id = hcp.create("kept-1", &["--wait"]);
    let jobs = hcp.json(&["job", "list", "--project", "demo"]);
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job_id = jobs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(jobs[0]["state"], "SUCCEEDED");
    let before = watch(&hcp, &job_id);
    assert!(before.len() > 1, "log lines, then the end: {before:?}");
    let (status, logs_first) = first.terminate();
    assert!(status.success(), "{logs_first}");

    let second = on_postgres(&schema).start();
    let hcp = Hcp::new().with_url(&second.url);
    let vms = hcp.vms("demo");
    assert!(
        vms.iter()
            .any(|v| v["id"] == vm_id.as_str() && v["name"] == "kept-1"),
        "the VM is still there: {vms:?}"
    );
    let job = hcp.json(&["job", "show", &job_id, "--project", "demo"]);
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    assert_eq!(job["vm_id"], vm_id.as_str());
    let after = watch(&hcp, &job_id);
    assert_eq!(after, before, "the job's log is the same after the restart");
    // The idempotency of the name holds across the restart too.
    let again = hcp.run(&[
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "kept-1",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
    ]);
    assert_ne!(again.code, 0, "the name is taken: {again:?}");
    let banner = second.banner.clone();
    let (status, logs_second) = second.terminate();
    assert!(status.success(), "{logs_second}");
    for text in [&logs_first, &logs_second, &banner] {
        assert!(!text.contains(SECRET), "the password leaked: {text}");
    }
    assert!(
        logs_first.contains("using the PostgreSQL store"),
        "{logs_first}"
    );
}

#[test]
fn the_database_url_can_come_from_a_secret_file() {
    let schema = Schema::new("secretfile");
    let builder = ServeBuilder::new().env("HCP_DATABASE_SCHEMA", &schema.0);
    let secrets = builder.dir().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(
        secrets.join("database_url"),
        format!("{}\n", database_url()),
    )
    .unwrap();
    let server: Server = builder
        .env("HCP_SECRETS_DIR", secrets.to_str().unwrap())
        .start();
    assert!(
        server.banner.contains("(PostgreSQL store)"),
        "{}",
        server.banner
    );
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
    assert!(logs.contains("secrets.database_url"), "{logs}");
}

#[test]
fn without_a_database_the_store_stays_in_memory() {
    let server = Server::demo();
    assert!(
        server.banner.contains("(in-memory store)"),
        "{}",
        server.banner
    );
}

#[test]
fn a_broken_database_url_stops_start_up_without_printing_the_password() {
    // Does not parse: a bad request naming the variable.
    let r = ServeBuilder::new()
        .env(
            "HCP_DATABASE_URL",
            &format!("postgres://hcp:{SECRET}@127.0.0.1:port/test"),
        )
        .fail();
    assert_eq!(r.code, INVALID_INPUT, "{r:?}");
    assert!(r.stderr.contains("HCP_DATABASE_URL"), "{r:?}");
    assert!(!format!("{r:?}").contains(SECRET), "{r:?}");
    // Parses, but nothing listens there: start-up fails, still without the password.
    let r = ServeBuilder::new()
        .env(
            "HCP_DATABASE_URL",
            &format!("postgres://hcp:{SECRET}@127.0.0.1:1/test"),
        )
        .fail();
    assert_ne!(r.code, 0, "{r:?}");
    assert!(!format!("{r:?}").contains(SECRET), "{r:?}");
}

/// A nats-server with JetStream of this test's own (token auth, monitoring port); killed when
/// dropped.
struct Nats {
    child: std::process::Child,
    port: u16,
    monitor: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nats {
    fn start(token: &str) -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let (port, monitor) = (free_port(), free_port());
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "--auth", token])
            .args(["-p", &port.to_string(), "-m", &monitor.to_string()])
            .arg("-sd")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server must be installed (scripts/test.sh installs it)");
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Nats {
            child,
            port,
            monitor,
            _dir: dir,
        }
    }

    /// The messages in `stream`, from the server's monitoring endpoint.
    fn messages(&self, stream: &str) -> Option<u64> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!(
            "http://127.0.0.1:{}/jsz?streams=true&accounts=true",
            self.monitor
        );
        let v: Value = rt
            .block_on(async { reqwest::get(&url).await?.json().await })
            .ok()?;
        let accounts = v["account_details"].as_array()?;
        accounts
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == stream)
            .and_then(|s| s["state"]["messages"].as_u64())
    }
}

/// Counts rows of `table` in the schema.
fn count(schema: &Schema, table: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(
            "postgres://postgres@127.0.0.1:5432/test",
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        c.query_one(&format!("SELECT count(*) FROM {}.{table}", schema.0), &[])
            .await
            .unwrap()
            .get(0)
    })
}

#[test]
fn serve_publishes_every_event_to_nats_jetstream_with_a_secret_token() {
    const TOKEN: &str = "nats-tok-Zr8-never-logged";
    let nats = Nats::start(TOKEN);
    let schema = Schema::new("nats");
    let stream = format!("HCP_T_{}", std::process::id());
    let builder = on_postgres(&schema);
    let secrets = builder.dir().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("nats_token"), format!("{TOKEN}\n")).unwrap();
    let server = builder
        .env("HCP_SECRETS_DIR", secrets.to_str().unwrap())
        .env("HCP_NATS_URL", &format!("nats://127.0.0.1:{}", nats.port))
        .env("HCP_NATS_STREAM", &stream)
        .start();
    let hcp = Hcp::new().with_url(&server.url);
    hcp.create("published-1", &["--wait"]);
    // Every stored event reaches the stream (the outbox empties), each once.
    let mut delivered = false;
    for _ in 0..300 {
        let events = count(&schema, "events");
        if events >= 4
            && count(&schema, "event_outbox") == 0
            && nats.messages(&stream) == Some(u64::try_from(events).unwrap())
        {
            delivered = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        delivered,
        "events {}, unpublished {}, in the stream {:?}",
        count(&schema, "events"),
        count(&schema, "event_outbox"),
        nats.messages(&stream)
    );
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    assert!(
        logs.contains("publishing audit events to NATS JetStream"),
        "{logs}"
    );
    assert!(logs.contains("became the leader"), "{logs}");
    assert!(!logs.contains(TOKEN), "the NATS token leaked: {logs}");
}

#[test]
fn a_broken_nats_setting_stops_start_up_naming_it() {
    let r = ServeBuilder::new()
        .env("HCP_NATS_URL", "nats://127.0.0.1:4222")
        .env("HCP_NATS_SUBJECT_PREFIX", "hcp.>")
        .fail();
    assert_eq!(r.code, INVALID_INPUT, "{r:?}");
    assert!(r.stderr.contains("HCP_NATS_SUBJECT_PREFIX"), "{r:?}");
}
