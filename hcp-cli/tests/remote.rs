//! Remote mode: the same commands, flags and output against a running `hcp serve` (the real
//! binary, started by each test on a free loopback port).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::server::{ServeBuilder, Server, hosts_file};
use common::{
    CONFLICT, FEATURE_NOT_SUPPORTED, Hcp, INTERRUPTED, INVALID_INPUT, JOB_FAILED, NOT_FOUND,
    UNAVAILABLE,
};
use serde_json::Value;

fn create_args<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    create_from(name, "ubuntu-24.04", "small", extra)
}

fn create_from<'a>(
    name: &'a str,
    image: &'a str,
    flavor: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        name,
        "--image",
        image,
        "--flavor",
        flavor,
    ];
    args.extend_from_slice(extra);
    args
}

fn jobs(hcp: &Hcp) -> Vec<Value> {
    hcp.json(&["job", "list", "--project", "demo"])
        .as_array()
        .expect("array")
        .clone()
}

#[test]
fn remote_round_trip_create_list_show_stop_start_reboot_console_delete() {
    let server = Server::demo();
    let hcp = Hcp::new().with_url(&server.url);
    let created = hcp.json(&create_args(
        "web-1",
        &["--tag", "env=test", "--tag", "team=core", "--wait"],
    ));
    let id = created["vm_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("vm-"), "{created}");
    assert_eq!(created["replayed"], false, "no key, so no replay");
    assert_eq!(created["job"]["state"], "SUCCEEDED");
    assert_eq!(created["job"]["operation"], "create_vm");
    assert_eq!(created["job"]["action"]["action"], "create");
    assert_eq!(created["vm"]["state"], "ACTIVE");
    assert_eq!(created["vm"]["power"], "RUNNING");

    let vms = hcp.vms("demo");
    assert_eq!(vms.len(), 1, "{vms:?}");
    assert_eq!(vms[0]["id"], id.as_str());
    assert_eq!(vms[0]["spec"]["tags"]["env"], "test");

    let shown = hcp.json(&["vm", "show", &id, "--project", "demo"]);
    assert_eq!(shown["name"], "web-1");
    let text = shown.to_string();
    for operator_only in [
        "sim-a1",
        "sim-a2",
        "sim-b1",
        "binding",
        "native_id",
        "\"host\"",
    ] {
        assert!(
            !text.contains(operator_only),
            "tenant view shows {operator_only}: {text}"
        );
    }

    // Without --wait the command returns with the job; `job watch` follows it to its end.
    let stopping = hcp.json(&["vm", "stop", &id, "--project", "demo"]);
    let stop_job = stopping["job_id"].as_str().unwrap().to_string();
    assert_eq!(stopping["job"]["operation"], "stop_vm");
    let watched = hcp.run(&["job", "watch", &stop_job, "--project", "demo"]);
    assert_eq!(watched.code, 0, "{watched:?}");
    assert_eq!(
        watched.stdout.lines().last().unwrap(),
        format!("{stop_job} stop_vm SUCCEEDED")
    );
    assert_eq!(
        hcp.json(&["vm", "show", &id, "--project", "demo"])["power"],
        "STOPPED"
    );

    let started = hcp.json(&["vm", "start", &id, "--project", "demo", "--wait"]);
    assert_eq!(started["job"]["state"], "SUCCEEDED");
    assert_eq!(started["vm"]["power"], "RUNNING");

    // HCP_PROJECT works like --project.
    let out = hcp
        .command()
        .env("HCP_PROJECT", "demo")
        .args(["--output", "json", "vm", "reboot", &id, "--wait"])
        .output()
        .unwrap();
    let rebooted = common::Run::from(out);
    assert_eq!(rebooted.code, 0, "{rebooted:?}");
    assert_eq!(rebooted.json()["job"]["operation"], "reboot_vm");
    assert_eq!(rebooted.json()["job"]["state"], "SUCCEEDED");

    let console = hcp.json(&["vm", "console", &id, "--project", "demo"]);
    assert_eq!(console["type"], "vnc");
    assert!(
        console["url"].as_str().unwrap().starts_with("https://"),
        "{console}"
    );
    assert!(console["expires_at"].is_string());

    let deleted = hcp.json(&[
        "vm",
        "delete",
        &id,
        "--project",
        "demo",
        "--force",
        "--wait",
    ]);
    assert_eq!(deleted["job"]["operation"], "delete_vm");
    assert_eq!(deleted["job"]["state"], "SUCCEEDED");
    assert!(deleted["vm"].is_null(), "{deleted}");
    assert!(hcp.vms("demo").is_empty());

    let ops: Vec<String> = jobs(&hcp)
        .iter()
        .map(|j| j["operation"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ops,
        ["delete_vm", "reboot_vm", "start_vm", "stop_vm", "create_vm"],
        "newest first"
    );
    let job = hcp.json(&["job", "show", &stop_job]);
    assert_eq!(job["state"], "SUCCEEDED");
    assert_eq!(job["vm_id"], id.as_str());
    let filtered = hcp.json(&[
        "job",
        "list",
        "--project",
        "demo",
        "--vm",
        &id,
        "--state",
        "succeeded",
        "--limit",
        "2",
    ]);
    assert_eq!(filtered.as_array().unwrap().len(), 2, "{filtered}");
}

#[test]
fn table_output_matches_embedded_mode() {
    let server = Server::demo();
    let remote = Hcp::new().with_url(&server.url);
    let embedded = Hcp::new();
    for hcp in [&embedded, &remote] {
        let r = hcp.run(&create_args("db-1", &["--wait"]));
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.starts_with("create_vm job-"), "{}", r.stdout);
        assert!(r.stdout.contains("SUCCEEDED"), "{}", r.stdout);
        assert!(
            r.stderr.contains("attempt 1/") && r.stderr.contains("create_vm SUCCEEDED"),
            "--wait shows the log on stderr: {}",
            r.stderr
        );
    }
    let list = |hcp: &Hcp| {
        let r = hcp.run(&["vm", "list", "--project", "demo"]);
        assert_eq!(r.code, 0, "{r:?}");
        // Ids and times differ between the two; the columns and the rest do not.
        r.stdout
            .lines()
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| !w.starts_with("vm-"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&embedded), list(&remote));
    for args in [
        vec!["catalog"],
        vec!["capabilities", "--zone", "zone-b"],
        vec!["capabilities"],
    ] {
        let e = embedded.run(&args);
        let r = remote.run(&args);
        assert_eq!((e.code, &e.stdout), (r.code, &r.stdout), "{args:?}");
    }
    let hosts = remote.run(&["host", "list"]);
    assert_eq!(hosts.code, 0, "{hosts:?}");
    assert_eq!(
        hosts.stdout.lines().count(),
        4,
        "a header and three hosts: {}",
        hosts.stdout
    );
    assert!(hosts.stdout.contains("sim-b1"), "{}", hosts.stdout);
}

#[test]
fn without_wait_a_command_returns_while_its_job_runs_and_ctrl_c_cancels_it() {
    let server = ServeBuilder::new()
        .hosts(&hosts_file("{op_latency: {create_vm: 10m}}"))
        .start();
    let hcp = Hcp::new().with_url(&server.url);
    let accepted = hcp.json(&create_args("slow-1", &[]));
    let job_id = accepted["job_id"].as_str().unwrap().to_string();
    let state = accepted["job"]["state"].as_str().unwrap();
    assert!(
        state == "PENDING" || state == "RUNNING",
        "returns before the 10-minute job ends: {accepted}"
    );
    assert_eq!(accepted["vm_id"], accepted["job"]["vm_id"]);
    let table = hcp.run(&create_args("slow-2", &[]));
    assert_eq!(table.code, 0, "{table:?}");
    assert!(
        table.stdout.contains("accepted") && table.stdout.contains("hcp job watch job-"),
        "{}",
        table.stdout
    );
    let shown = hcp.json(&["job", "show", &job_id]);
    assert!(
        shown["state"] == "PENDING" || shown["state"] == "RUNNING",
        "{shown}"
    );

    // With --wait, Ctrl-C cancels the service's job (like embedded mode) and waits for its end.
    let mut child = hcp
        .command()
        .args(["--output", "json"])
        .args(create_args("slow-3", &["--wait"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "hcp ended before its job started: {seen}"
        );
        seen.push_str(&line);
        if line.contains("attempt 1/") {
            break;
        }
    }
    let job_of_3 = seen.split_whitespace().next().unwrap().to_string();
    assert!(job_of_3.starts_with("job-"), "{seen}");
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(INTERRUPTED), "{seen}{rest}");
    assert!(rest.contains("cancelling the job"), "{rest}");
    assert!(rest.contains("\"code\":\"INTERRUPTED\""), "{rest}");
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["job_id"], job_of_3.as_str());
    assert_eq!(outcome["job"]["state"], "CANCELLED", "{outcome}");
    let after = hcp.json(&["job", "show", &job_of_3]);
    assert_eq!(after["state"], "CANCELLED", "the service's job: {after}");
    // A create cancelled mid-way leaves nothing: the service forgets the VM, as embedded mode does.
    let vms = hcp.vms("demo");
    assert!(
        !vms.iter().any(|v| v["spec"]["name"] == "slow-3"),
        "{vms:?}"
    );
    // The other jobs go on.
    assert_eq!(hcp.json(&["job", "show", &job_id])["state"], "RUNNING");
}

#[test]
fn job_cancel_cancels_a_running_job_through_the_service() {
    let server = ServeBuilder::new()
        .hosts(&hosts_file("{op_latency: {create_vm: 10m}}"))
        .start();
    let hcp = Hcp::new().with_url(&server.url);
    let accepted = hcp.json(&create_args("slow-c", &[]));
    let job_id = accepted["job_id"].as_str().unwrap().to_string();

    // Another project's view of the job: not found.
    let other = hcp.run(&["job", "cancel", &job_id, "--project", "other"]);
    assert_eq!(other.code, NOT_FOUND, "{other:?}");
    // Without --project, the job's own project is used.
    let cancelled = hcp.json(&["job", "cancel", &job_id]);
    assert_eq!(cancelled["id"], job_id.as_str());
    assert_eq!(cancelled["action"]["action"], "create", "{cancelled}");
    let state = cancelled["state"].as_str().unwrap();
    assert!(state == "CANCELLED" || state == "RUNNING", "{cancelled}");
    let watched = hcp.run(&["job", "watch", &job_id]);
    assert_eq!(watched.code, JOB_FAILED, "{watched:?}");
    assert!(watched.stdout.contains("CANCELLED"), "{watched:?}");
    // Once ended, a job cannot be cancelled again.
    let again = hcp.run(&[
        "--output",
        "json",
        "job",
        "cancel",
        &job_id,
        "--project",
        "demo",
    ]);
    assert_eq!(again.code, CONFLICT, "{again:?}");
    assert_eq!(again.error()["code"], "CONFLICT");
    let unknown = hcp.run(&["job", "cancel", "job-nope"]);
    assert_eq!(unknown.code, NOT_FOUND, "{unknown:?}");
}

#[test]
fn job_watch_follows_the_log_stream_until_the_end() {
    let server = ServeBuilder::new()
        .hosts(&hosts_file("{op_latency: {create_vm: 5s}}"))
        .start();
    let hcp = Hcp::new().with_url(&server.url);
    let accepted = hcp.json(&create_args("watched", &[]));
    let job_id = accepted["job_id"].as_str().unwrap().to_string();

    let mut child = hcp
        .command()
        .args([
            "--output",
            "json",
            "job",
            "watch",
            &job_id,
            "--project",
            "demo",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    assert!(stdout.read_line(&mut first).unwrap() > 0, "no event");
    // The first event arrived while the job still ran: the stream is live, not a replay.
    let running = hcp.json(&["job", "show", &job_id]);
    assert_eq!(
        running["state"], "RUNNING",
        "the job ended before its first log line was printed; {first}"
    );
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{first}{rest}{out:?}");
    let events: Vec<Value> = format!("{first}{rest}")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    let (end, before) = events.split_last().unwrap();
    assert_eq!(end["type"], "end");
    assert_eq!(end["job"]["state"], "SUCCEEDED");
    assert_eq!(end["job"]["id"], job_id.as_str());
    let logs: Vec<&Value> = before.iter().filter(|e| e["type"] == "log").collect();
    assert!(
        logs.iter()
            .any(|e| e["message"].as_str().unwrap().contains("attempt 1/")),
        "{events:?}"
    );
    assert!(
        logs.iter()
            .any(|e| e["message"].as_str().unwrap().contains("succeeded")),
        "{events:?}"
    );
    let seqs: Vec<u64> = logs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats: {seqs:?}"
    );
    assert!(
        before
            .iter()
            .all(|e| e["type"] == "log" || e["type"] == "status"),
        "{events:?}"
    );

    // A watch on an ended job replays its log and ends; table mode ends with the final state.
    let text = hcp.run(&["job", "watch", &job_id]);
    assert_eq!(text.code, 0, "{text:?}");
    assert_eq!(
        text.stdout.lines().last().unwrap(),
        format!("{job_id} create_vm SUCCEEDED")
    );
    assert!(text.stdout.lines().count() > 1, "{}", text.stdout);
}

#[test]
fn a_failed_job_exits_job_failed_in_both_modes() {
    // Every VM operation of this simulator fails, and nothing is retried.
    let failing = format!(
        "{}engine:\n  retry: {{max_attempts: 1}}\n",
        hosts_file("{failure_rate: 1.0}")
    );
    let server = ServeBuilder::new().hosts(&failing).start();
    let embedded = Hcp::new();
    let path = embedded.path("failing.yaml");
    std::fs::write(&path, &failing).unwrap();
    for hcp in [
        embedded.with_config(&path),
        Hcp::new().with_url(&server.url),
    ] {
        let mut args = vec!["--output", "json"];
        args.extend(create_args("busy", &["--wait"]));
        let r = hcp.run(&args);
        assert_eq!(r.code, JOB_FAILED, "{r:?}");
        let out = r.json();
        assert_eq!(out["job"]["state"], "FAILED");
        assert_eq!(out["job"]["error"]["code"], "PROVIDER_UNAVAILABLE");
        assert_eq!(r.error()["code"], "JOB_FAILED");
        assert_eq!(r.error()["job"]["id"], out["job_id"]);
        let job_id = out["job_id"].as_str().unwrap();
        let watch = hcp.run(&["job", "watch", job_id]);
        assert_eq!(watch.code, JOB_FAILED, "{watch:?}");
        assert!(watch.stdout.contains("FAILED"), "{}", watch.stdout);
        let failed = hcp.json(&["job", "list", "--project", "demo", "--state", "failed"]);
        assert_eq!(failed.as_array().unwrap().len(), 1);
    }
}

#[test]
fn idempotent_replay_and_key_reuse_over_http() {
    let server = Server::demo();
    let hcp = Hcp::new().with_url(&server.url);
    let with_key = |key: &str, extra: &[&str]| {
        let mut args = vec!["--output", "json"];
        args.extend(create_args("web-1", &["--idempotency-key", key]));
        args.extend_from_slice(extra);
        hcp.run(&args)
    };
    let first = with_key("order-17", &[]);
    assert_eq!(first.code, 0, "{first:?}");
    let first = first.json();
    assert_eq!(first["replayed"], false, "{first}");
    let again = with_key("order-17", &["--wait"]);
    assert_eq!(again.code, 0, "{again:?}");
    let again = again.json();
    assert_eq!(
        again["replayed"], true,
        "the service says it replayed: {again}"
    );
    assert_eq!(again["vm_id"], first["vm_id"]);
    assert_eq!(again["job_id"], first["job_id"]);
    assert_eq!(again["job"]["state"], "SUCCEEDED");
    assert_eq!(again["job"]["idempotency_key"], "order-17");
    assert_eq!(again["vm"]["id"], first["vm_id"]);
    assert_eq!(jobs(&hcp).len(), 1, "no second job ran");
    assert_eq!(hcp.vms("demo").len(), 1);

    let reused = with_key("order-17", &["--zone", "zone-b"]);
    assert_eq!(reused.code, CONFLICT, "{reused:?}");
    let e = reused.error();
    assert_eq!(e["code"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(e["field"], "idempotency_key");
    let words = hcp.run(&create_args(
        "web-1",
        &["--zone", "zone-b", "--idempotency-key", "order-17"],
    ));
    assert_eq!(words.code, CONFLICT);
    assert!(
        words.stderr.contains("IDEMPOTENCY_KEY_REUSED"),
        "{}",
        words.stderr
    );

    // Keys are per operation: a stop with the create's key is a new job, replayed after.
    let id = first["vm_id"].as_str().unwrap();
    let stop = |wait: bool| {
        let mut args = vec!["vm", "stop", id, "--project", "demo"];
        args.extend(["--idempotency-key", "order-17"]);
        if wait {
            args.push("--wait");
        }
        hcp.json(&args)
    };
    let stopped = stop(true);
    assert_ne!(stopped["job_id"], first["job_id"]);
    assert_eq!(stopped["replayed"], false);
    let replayed = stop(false);
    assert_eq!(replayed["job_id"], stopped["job_id"]);
    assert_eq!(replayed["replayed"], true);
    // The table says so too, like embedded mode.
    let table = hcp.run(&[
        "vm",
        "stop",
        id,
        "--project",
        "demo",
        "--idempotency-key",
        "order-17",
    ]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(
        table
            .stdout
            .contains("replayed: idempotency key `order-17` was used before"),
        "{}",
        table.stdout
    );
    assert_eq!(jobs(&hcp).len(), 2);
    assert_eq!(hcp.vms("demo").len(), 1, "nothing new was created");
}

/// Replaces generated VM and job ids in every string of `v` (they differ between two runs).
fn mask_ids(v: &Value) -> Value {
    fn mask(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some((at, len)) = ["vm-", "job-"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
            .min()
        {
            let hex = rest[at + len..]
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .count();
            out.push_str(&rest[..at + len]);
            if hex >= 16 {
                out.push_str("ID");
            } else {
                out.push_str(&rest[at + len..at + len + hex]);
            }
            rest = &rest[at + len + hex..];
        }
        out.push_str(rest);
        out
    }
    match v {
        Value::String(s) => Value::String(mask(s)),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), mask_ids(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(mask_ids).collect()),
        other => other.clone(),
    }
}

/// Runs `args` with `--output json` and returns the exit code and the error object.
fn failure(hcp: &Hcp, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let r = hcp.run(&all);
    assert_ne!(r.code, 0, "{args:?} succeeded: {r:?}");
    assert!(r.stdout.is_empty(), "{args:?}: nothing on stdout: {r:?}");
    (r.code, r.error())
}

#[test]
fn errors_have_the_same_exit_codes_and_messages_as_embedded_mode() {
    let server = Server::demo();
    let remote = Hcp::new().with_url(&server.url);
    let embedded = Hcp::new();
    let user_data = embedded.path("user-data.yaml");
    std::fs::write(&user_data, "#cloud-config\n").unwrap();
    let user_data = user_data.to_str().unwrap().to_string();
    // The same VM, stopped, in both modes; and a key used once.
    for hcp in [&embedded, &remote] {
        let id = hcp.create("stopped", &["--wait", "--idempotency-key", "k-1"]);
        hcp.json(&["vm", "stop", &id, "--project", "demo", "--wait"]);
    }
    let stopped = |hcp: &Hcp| hcp.vms("demo")[0]["id"].as_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, i32)> = vec![
        (create_args("Web_1", &[]), INVALID_INPUT),
        (create_args("", &[]), INVALID_INPUT),
        (create_args("web-", &[]), INVALID_INPUT),
        (create_args("v", &["--vcpus", "0"]), INVALID_INPUT),
        (
            create_from("i", "no-such-image", "small", &[]),
            INVALID_INPUT,
        ),
        (create_from("f", "ubuntu-24.04", "huge", &[]), INVALID_INPUT),
        (create_args("z", &["--zone", "zone-x"]), INVALID_INPUT),
        (create_args("n", &["--network", "lan"]), INVALID_INPUT),
        (
            create_from("w", "windows-2022", "small", &[]),
            INVALID_INPUT,
        ),
        (create_args("k", &["--idempotency-key", ""]), INVALID_INPUT),
        (
            vec![
                "vm",
                "create",
                "--project",
                "no-such-project",
                "--name",
                "p",
                "--image",
                "ubuntu-24.04",
                "--flavor",
                "small",
            ],
            NOT_FOUND,
        ),
        (
            vec![
                "vm",
                "create",
                "--project",
                "Bad Project",
                "--name",
                "p",
                "--image",
                "ubuntu-24.04",
                "--flavor",
                "small",
            ],
            INVALID_INPUT,
        ),
        (
            create_args("u", &["--zone", "zone-b", "--user-data", &user_data]),
            FEATURE_NOT_SUPPORTED,
        ),
        (
            create_args("stopped", &["--zone", "zone-b", "--idempotency-key", "k-1"]),
            CONFLICT,
        ),
        (create_args("stopped", &[]), CONFLICT),
        (
            vec!["vm", "show", "vm-nope", "--project", "demo"],
            NOT_FOUND,
        ),
        (
            vec!["vm", "start", "vm-nope", "--project", "demo"],
            NOT_FOUND,
        ),
        (
            vec!["vm", "stop", "vm-nope", "--project", "demo", "--force"],
            NOT_FOUND,
        ),
        (
            vec!["vm", "reboot", "vm-nope", "--project", "demo"],
            NOT_FOUND,
        ),
        (
            vec!["vm", "delete", "vm-nope", "--project", "demo"],
            NOT_FOUND,
        ),
        (
            vec!["vm", "console", "vm-nope", "--project", "demo"],
            NOT_FOUND,
        ),
        (vec!["job", "show", "job-nope"], NOT_FOUND),
        (vec!["job", "watch", "job-nope"], NOT_FOUND),
        (
            vec!["job", "show", "job-nope", "--project", "nope"],
            NOT_FOUND,
        ),
        (vec!["vm", "list", "--project", "nope"], NOT_FOUND),
        (vec!["job", "list", "--project", "nope"], NOT_FOUND),
        (vec!["capabilities", "--zone", "zone-x"], INVALID_INPUT),
    ]
    .into_iter()
    .map(|(a, c)| (a.into_iter().map(String::from).collect(), c))
    .collect();
    for (args, code) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (e_code, e_err) = failure(&embedded, &args);
        let (r_code, r_err) = failure(&remote, &args);
        assert_eq!(e_code, *code, "embedded {args:?}: {e_err}");
        assert_eq!(
            r_code, e_code,
            "{args:?}: remote {r_err} vs embedded {e_err}"
        );
        assert_eq!(mask_ids(&r_err), mask_ids(&e_err), "{args:?}");
    }
    // A console on a stopped VM: the same refusal (the ids differ, the message does not).
    let e = failure(
        &embedded,
        &["vm", "console", &stopped(&embedded), "--project", "demo"],
    );
    let r = failure(
        &remote,
        &["vm", "console", &stopped(&remote), "--project", "demo"],
    );
    assert_eq!(e.0, CONFLICT, "{}", e.1);
    assert_eq!(r, e);
    // Table mode says the same words.
    for args in [
        vec!["vm", "show", "vm-nope", "--project", "demo"],
        create_args("z", &["--zone", "zone-x"]),
    ] {
        let e = embedded.run(&args);
        let r = remote.run(&args);
        assert_eq!((r.code, &r.stderr), (e.code, &e.stderr), "{args:?}");
        assert!(r.stderr.starts_with("hcp: error: "), "{r:?}");
    }
    assert_eq!(
        remote.vms("demo").len(),
        1,
        "no refused request created a VM"
    );
    assert_eq!(jobs(&remote).len(), 2);
}

/// The structure of a JSON value: keys and value types, arrays by their first item.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

#[test]
fn json_output_has_the_same_shape_as_embedded_mode() {
    let server = Server::demo();
    let remote = Hcp::new().with_url(&server.url);
    let embedded = Hcp::new();
    let mut ids = Vec::new();
    for hcp in [&embedded, &remote] {
        // An explicit zone: an embedded command rebuilds the VM from the hosts, which records
        // the zone it was placed in as the spec's.
        let created = hcp.json(&create_args(
            "web-1",
            &["--tag", "env=test", "--zone", "zone-a", "--wait"],
        ));
        ids.push((
            created["vm_id"].as_str().unwrap().to_string(),
            created["job_id"].as_str().unwrap().to_string(),
            created,
        ));
    }
    let [(e_vm, e_job, e_created), (r_vm, r_job, r_created)] = &ids[..] else {
        unreachable!()
    };
    assert_eq!(shape(r_created), shape(e_created), "vm create --wait");
    let same = |e_args: &[&str], r_args: &[&str]| {
        let e = embedded.json(e_args);
        let r = remote.json(r_args);
        assert_eq!(shape(&r), shape(&e), "{r_args:?}:\n{r:#}\nvs\n{e:#}");
        (e, r)
    };
    same(
        &["vm", "list", "--project", "demo"],
        &["vm", "list", "--project", "demo"],
    );
    same(
        &["vm", "show", e_vm, "--project", "demo"],
        &["vm", "show", r_vm, "--project", "demo"],
    );
    same(
        &["vm", "console", e_vm, "--project", "demo"],
        &["vm", "console", r_vm, "--project", "demo"],
    );
    same(&["catalog"], &["catalog"]);
    same(&["host", "list"], &["host", "list"]);
    same(&["capabilities"], &["capabilities"]);
    same(
        &["capabilities", "--zone", "zone-a"],
        &["capabilities", "--zone", "zone-a"],
    );
    same(
        &["vm", "stop", e_vm, "--project", "demo", "--wait"],
        &["vm", "stop", r_vm, "--project", "demo", "--wait"],
    );
    // `job show` and `job list`: the same shape, the action included.
    let without_action = |mut v: Value| {
        let action = v.as_object_mut().unwrap().remove("action");
        (v, action.unwrap_or(Value::Null))
    };
    let (e, r) = (
        embedded.json(&["job", "show", e_job]),
        remote.json(&["job", "show", r_job]),
    );
    let (e, e_action) = without_action(e);
    let (r, r_action) = without_action(r);
    assert_eq!(shape(&r), shape(&e), "job show:\n{r:#}\nvs\n{e:#}");
    assert_eq!(e_action["action"], "create");
    assert_eq!(r_action, e_action);
    let (e, r) = (
        embedded.json(&["job", "list", "--project", "demo"]),
        remote.json(&["job", "list", "--project", "demo"]),
    );
    assert_eq!(e.as_array().unwrap().len(), r.as_array().unwrap().len());
    let (e, e_action) = without_action(e[0].clone());
    let (r, r_action) = without_action(r[0].clone());
    assert_eq!(shape(&r), shape(&e), "job list");
    assert_eq!(r_action, e_action, "job list");
    // Without `--project`: every project the caller may see, in both modes.
    let (e_all, r_all) = (
        embedded.json(&["job", "list"]),
        remote.json(&["job", "list"]),
    );
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(ids(&r_all).contains(&r_job.to_string()), "{r_all:#}");
    assert!(ids(&e_all).contains(&e_job.to_string()), "{e_all:#}");
    assert_eq!(
        e_all.as_array().unwrap().len(),
        r_all.as_array().unwrap().len()
    );
    assert_eq!(
        shape(&r_all[0]),
        shape(&e_all[0]),
        "job list without --project"
    );
    // `job watch`: one object a line, the same kinds of events, the end with the action.
    let watch = |hcp: &Hcp, job: &str| {
        let out = hcp.run(&["--output", "json", "job", "watch", job]);
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let e = watch(&embedded, e_job);
    let r = watch(&remote, r_job);
    assert_eq!(shape(&r[0]), shape(&e[0]), "log line");
    assert_eq!(
        shape(r.last().unwrap()),
        shape(e.last().unwrap()),
        "end event"
    );
    let msgs = |v: &[Value]| -> Vec<String> {
        v.iter()
            .filter(|e| e["type"] == "log")
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(msgs(&r), msgs(&e), "the same log lines");
    // Errors too.
    let e = failure(&embedded, &["vm", "show", "vm-nope", "--project", "demo"]).1;
    let r = failure(&remote, &["vm", "show", "vm-nope", "--project", "demo"]).1;
    assert_eq!(shape(&r), shape(&e));
}

#[test]
fn commands_on_a_vm_by_id_find_its_project_the_same_way_in_both_modes() {
    let server = ServeBuilder::new().hosts(&hosts_file("{}")).start();
    let remote = Hcp::new().with_url(&server.url);
    let embedded = Hcp::new();
    for hcp in [&embedded, &remote] {
        let id = hcp.create("mine", &["--wait"]);
        // Without --project, the VM's own project is found (the service answers it from the
        // caller's projects).
        let shown = hcp.json(&["vm", "show", id.as_str()]);
        assert_eq!(shown["id"], id.as_str(), "{shown}");
        assert_eq!(shown["project"], "demo", "{shown}");
        for verb in ["stop", "start", "reboot"] {
            let done = hcp.json(&["vm", verb, id.as_str(), "--wait"]);
            assert_eq!(done["job"]["state"], "SUCCEEDED", "{verb}: {done}");
        }
        let (code, e) = failure(hcp, &["vm", "show", "vm-nope"]);
        assert_eq!(code, NOT_FOUND, "{e}");
        assert_eq!(e["field"], "vm_id", "{e}");
        let deleted = hcp.json(&["vm", "delete", id.as_str(), "--force", "--wait"]);
        assert_eq!(deleted["job"]["state"], "SUCCEEDED", "{deleted}");
    }
    // Listing jobs without --project: the caller's projects, in both modes.
    for hcp in [&embedded, &remote] {
        let listed = hcp.json(&["job", "list"]);
        let listed = listed.as_array().unwrap();
        assert!(!listed.is_empty(), "{listed:?}");
        assert!(listed.iter().all(|j| j["project"] == "demo"), "{listed:?}");
    }
    let hcp = &remote;
    let id = hcp.create("mine-2", &["--wait"]);
    // Another project's VM and job are not found.
    let jobs = jobs(hcp);
    let job = jobs[0]["id"].as_str().unwrap();
    for args in [
        vec!["vm", "show", id.as_str(), "--project", "other"],
        vec!["vm", "stop", id.as_str(), "--project", "other"],
        vec!["job", "show", job, "--project", "other"],
        vec!["job", "watch", job, "--project", "other"],
    ] {
        let (code, e) = failure(hcp, &args);
        assert_eq!(code, NOT_FOUND, "{args:?}: {e}");
    }
    assert_eq!(
        hcp.json(&["job", "show", job, "--project", "demo"])["id"],
        job
    );
    assert!(hcp.vms("other").is_empty());
}

/// A one-shot HTTP server that records the requests it gets and answers each with `answer`.
fn recorder(answer: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            sink.lock().unwrap().push(head);
            let _ = s.write_all(answer.as_bytes());
        }
    });
    (url, seen)
}

#[test]
fn the_token_is_sent_as_a_bearer_token_and_never_shown() {
    let problem = r#"{"status":404,"code":"NOT_FOUND","kind":"not_found","detail":"vm `vm-1` not found","field":"vm_id"}"#;
    let (url, seen) = recorder(format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/problem+json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{problem}",
        problem.len()
    ));
    let secret = "tok-3f9c1e7a-secret-value";
    let hcp = Hcp::new().with_url(&url);
    let by_flag = hcp
        .command()
        .env("HCP_LOG", "trace")
        .args([
            "--token",
            secret,
            "--output",
            "json",
            "vm",
            "show",
            "vm-1",
            "--project",
            "demo",
        ])
        .output()
        .unwrap();
    let by_env = hcp
        .command()
        .env("HCP_LOG", "trace")
        .env("HCP_TOKEN", secret)
        .args(["vm", "show", "vm-1", "--project", "demo"])
        .output()
        .unwrap();
    for out in [by_flag, by_env] {
        let r = common::Run::from(out);
        assert_eq!(r.code, NOT_FOUND, "{r:?}");
        assert!(r.stderr.contains("vm `vm-1` not found"), "{r:?}");
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "the token was printed: {r:?}"
        );
    }
    let requests = seen.lock().unwrap().clone();
    // Each run asks for the VM by id, then (not found) looks for a VM of that name.
    assert_eq!(requests.len(), 4, "{requests:?}");
    for head in &requests {
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {secret}"))),
            "no bearer token in {head}"
        );
    }

    // Nor when the service cannot be reached, nor in the help.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let r = Hcp::new().with_url(&dead).run(&[
        "--token",
        secret,
        "--output",
        "json",
        "vm",
        "list",
        "--project",
        "demo",
    ]);
    assert_eq!(r.code, UNAVAILABLE, "{r:?}");
    assert_eq!(r.error()["code"], "PROVIDER_UNAVAILABLE");
    assert!(
        r.error()["message"].as_str().unwrap().contains(&dead),
        "names the URL: {r:?}"
    );
    assert!(!r.stderr.contains(secret), "{r:?}");
    let help = Hcp::new()
        .command()
        .env("HCP_TOKEN", secret)
        .arg("--help")
        .output()
        .unwrap();
    let help = common::Run::from(help);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("--token"), "{}", help.stdout);
    assert!(!help.stdout.contains(secret), "{}", help.stdout);
}

#[test]
fn bad_urls_and_mixed_modes_are_invalid_input() {
    let (code, e) = failure(
        &Hcp::new().with_url("not a url"),
        &["vm", "list", "--project", "demo"],
    );
    assert_eq!(code, INVALID_INPUT, "{e}");
    assert_eq!(e["field"], "url");
    let (code, e) = failure(&Hcp::new().with_url("ftp://127.0.0.1:1"), &["catalog"]);
    assert_eq!(code, INVALID_INPUT, "{e}");
    assert_eq!(e["field"], "url");
    let (code, e) = failure(
        &Hcp::new()
            .with_config(common::example_config())
            .with_url("http://127.0.0.1:1"),
        &["catalog"],
    );
    assert_eq!(code, INVALID_INPUT, "{e}");
    assert_eq!(e["field"], "config");
    assert!(e["message"].as_str().unwrap().contains("--url"), "{e}");
}

#[test]
fn vms_are_addressed_by_name_in_their_project_the_same_way_in_both_modes() {
    let server = Server::demo();
    let remote = Hcp::new().with_url(&server.url);
    let embedded = Hcp::new();
    for hcp in [&embedded, &remote] {
        let created = hcp.json(&create_args("db-1", &["--wait"]));
        let id = created["vm_id"].as_str().unwrap().to_string();
        // `show` and the power commands take the name with --project.
        let shown = hcp.json(&["vm", "show", "db-1", "--project", "demo"]);
        assert_eq!(shown["id"], id.as_str(), "{shown}");
        let stopped = hcp.json(&["vm", "stop", "db-1", "--project", "demo", "--wait"]);
        assert_eq!(stopped["vm_id"], id.as_str(), "{stopped}");
        assert_eq!(stopped["job"]["state"], "SUCCEEDED", "{stopped}");
        // A name without its project cannot be looked up: the error names --project.
        let (code, e) = failure(hcp, &["vm", "show", "db-1"]);
        assert_eq!(code, INVALID_INPUT, "{e}");
        assert_eq!(e["field"], "project", "{e}");
        // A name that is not there is not found, naming the VM.
        let (code, e) = failure(hcp, &["vm", "show", "db-2", "--project", "demo"]);
        assert_eq!(code, NOT_FOUND, "{e}");
        assert_eq!(e["field"], "vm_id", "{e}");
        // A VM may be named like an id; its name still finds it.
        let odd = hcp.json(&create_args("vm-named", &["--wait"]));
        let shown = hcp.json(&["vm", "show", "vm-named", "--project", "demo"]);
        assert_eq!(shown["id"], odd["vm_id"], "{shown}");
        let deleted = hcp.json(&["vm", "delete", "db-1", "--project", "demo", "--wait"]);
        assert_eq!(deleted["job"]["state"], "SUCCEEDED", "{deleted}");
    }
}
