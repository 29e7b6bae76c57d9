//! Hostile input against a real `hcp serve` (over HTTP) and through the `hcp` CLI (embedded and
//! remote): every numeric and string field of every request body, and the query parameters and
//! headers that take values, with zero, negative, `u32::MAX`, `u64::MAX`, `i64::MAX + 1`,
//! floats, huge strings and unicode. Never a 5xx, never a panic in the server's log; a refused
//! value is a 400 whose `field` names it; and afterwards a normal create still succeeds and the
//! host listings still work.

mod common;

use std::time::Duration;

use common::server::ServeBuilder;
use common::{Hcp, INVALID_INPUT};
use serde_json::{Value, json};

const T: &str = "/api/hcp/tenant/v1";
/// 1 MiB: well past every string bound, within the body limit the server gets here (so the
/// value reaches validation instead of the 413 the default limit would give).
const HUGE: usize = 1 << 20;
const BODY_LIMIT: &str = "4194304";

/// What a hostile value must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 400 naming this field exactly.
    Refused(&'static str),
    /// 400 whose field starts with this (tag keys appear in the field name).
    RefusedUnder(&'static str),
    /// A success (2xx): the value is valid.
    Accepted,
    /// 404: well-formed, but no such object.
    NotFound,
}

struct Http {
    base: String,
    client: reqwest::Client,
    seen: Vec<String>,
}

impl Http {
    async fn send(&mut self, what: &str, rb: reqwest::RequestBuilder, expect: Expect) -> Value {
        let resp = rb.send().await.unwrap_or_else(|e| {
            panic!("{what}: no answer (did the server drop the connection?): {e}")
        });
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let shown: String = text.chars().take(300).collect();
        assert!(status < 500, "{what}: a server error {status}: {shown}");
        match expect {
            Expect::Refused(field) => {
                assert_eq!(status, 400, "{what}: {shown}");
                assert_eq!(body["field"], field, "{what}: {shown}");
                assert_eq!(body["code"], "INVALID_SPEC", "{what}: {shown}");
            }
            Expect::RefusedUnder(prefix) => {
                assert_eq!(status, 400, "{what}: {shown}");
                let field = body["field"].as_str().unwrap_or_default();
                assert!(field.starts_with(prefix), "{what}: {shown}");
            }
            Expect::Accepted => assert!((200..300).contains(&status), "{what}: {shown}"),
            Expect::NotFound => assert_eq!(status, 404, "{what}: {shown}"),
        }
        self.seen.push(format!("{what} -> {status}"));
        body
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Numbers in JSON text: none is a valid size.
const BAD_NUMBERS: [&str; 12] = [
    "0",
    "-1",
    "-0",
    "4294967295",           // u32::MAX
    "4294967296",           // u32::MAX + 1
    "18446744073709551615", // u64::MAX: the request of the issue
    "18446744073709551616", // u64::MAX + 1
    "9223372036854775808",  // i64::MAX + 1
    "-9223372036854775809", // i64::MIN - 1
    "1.5",
    "1e3",
    "1e400",
];

/// Percent-encodes every byte outside unreserved ASCII.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn huge() -> String {
    "a".repeat(HUGE)
}

/// Strings no catalog name, VM name or id may be.
fn bad_strings() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("huge", huge()),
        ("unicode", "ünïcødé-名前-🚀".to_string()),
        ("nul", "a\u{0}b".to_string()),
        ("newline", "a\nb".to_string()),
        ("rtl-override", "a\u{202e}b".to_string()),
    ]
}

/// A create body with `field` set to the raw JSON `value`.
fn create_body(name: &str, field: &str, value: &str) -> String {
    let mut base = json!({"name": name, "image": "ubuntu-24.04", "flavor": "small"});
    base.as_object_mut().unwrap().remove(field);
    let text = base.to_string();
    format!("{},\"{field}\":{value}}}", &text[..text.len() - 1])
}

fn legacy_body(name: &str, field: &str, value: &str) -> String {
    let mut base = json!({"name": name, "template": "ubuntu-24.04", "flavor": "small"});
    base.as_object_mut().unwrap().remove(field);
    let text = base.to_string();
    format!("{},\"{field}\":{value}}}", &text[..text.len() - 1])
}

async fn tenant_create_bodies(h: &mut Http) {
    let url = h.url(&format!("{T}/projects/demo/vms"));
    let post = |h: &Http, body: String| {
        h.client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
    };
    let mut n = 0;
    let mut name = || {
        n += 1;
        format!("h{n}")
    };
    for field in ["vcpus", "memory_mib", "disk_gib"] {
        for v in BAD_NUMBERS.iter().copied().chain(["\"2\"", "true", "[1]"]) {
            let rb = post(h, create_body(&name(), field, v));
            h.send(&format!("create {field}={v}"), rb, Expect::Refused(field))
                .await;
        }
    }
    for (field, expect_unicode) in [
        ("name", Expect::Refused("name")),
        ("image", Expect::Refused("image")),
        ("flavor", Expect::Refused("flavor")),
        ("zone", Expect::Refused("zone")),
    ] {
        for (what, s) in bad_strings() {
            let expect = if what == "unicode" {
                expect_unicode
            } else {
                Expect::Refused(field)
            };
            let (vm, value) = if field == "name" {
                (s.clone(), None)
            } else {
                (name(), Some(serde_json::to_string(&s).unwrap()))
            };
            let body = match value {
                Some(v) => create_body(&vm, field, &v),
                None => create_body(&s, "image", "\"ubuntu-24.04\""),
            };
            let rb = post(h, body);
            h.send(&format!("create {field}={what}"), rb, expect).await;
        }
        for v in ["1", "-1", "1.5", "{}"] {
            let rb = post(h, create_body(&name(), field, v));
            h.send(&format!("create {field}={v}"), rb, Expect::Refused(field))
                .await;
        }
    }
    // Networks: each name, their count, their type.
    for (what, s) in bad_strings() {
        let v = json!([{ "network": s }]).to_string();
        let rb = post(h, create_body(&name(), "networks", &v));
        h.send(
            &format!("create networks[0].network={what}"),
            rb,
            Expect::Refused("networks[0].network"),
        )
        .await;
    }
    let many = json!(
        (0..10_000)
            .map(|_| json!({"network": "default"}))
            .collect::<Vec<_>>()
    );
    let rb = post(h, create_body(&name(), "networks", &many.to_string()));
    h.send("create 10000 networks", rb, Expect::Refused("networks"))
        .await;
    for v in ["1", "\"default\"", "[1]", "[{\"network\": 1}]"] {
        let rb = post(h, create_body(&name(), "networks", v));
        h.send(
            &format!("create networks={v}"),
            rb,
            Expect::RefusedUnder("networks"),
        )
        .await;
    }
    // Tags: keys, values, their count.
    for (what, s) in bad_strings() {
        let key = json!({ s.clone(): "v" }).to_string();
        let rb = post(h, create_body(&name(), "tags", &key));
        h.send(
            &format!("create tag key={what}"),
            rb,
            Expect::RefusedUnder("tags"),
        )
        .await;
        let value = json!({ "k": s }).to_string();
        let expect = match what {
            // Tag values may be empty or any printable text.
            "empty" | "unicode" | "rtl-override" => Expect::Accepted,
            _ => Expect::Refused("tags.k"),
        };
        let rb = post(h, create_body(&name(), "tags", &value));
        h.send(&format!("create tag value={what}"), rb, expect)
            .await;
    }
    let many: serde_json::Map<String, Value> =
        (0..10_000).map(|i| (format!("k{i}"), json!("v"))).collect();
    let rb = post(
        h,
        create_body(&name(), "tags", &Value::Object(many).to_string()),
    );
    h.send("create 10000 tags", rb, Expect::Refused("tags"))
        .await;
    // User-data: any text up to 64 KiB, no NUL.
    for (what, s) in bad_strings() {
        let expect = match what {
            "huge" => Expect::Refused("user_data"),
            "nul" => Expect::Refused("user_data"),
            _ => Expect::Accepted,
        };
        let v = serde_json::to_string(&s).unwrap();
        let rb = post(h, create_body(&name(), "user_data", &v));
        h.send(&format!("create user_data={what}"), rb, expect)
            .await;
    }
    // Server-owned and unknown fields, with hostile values.
    for field in ["host", "resources", "id", "x-unknown"] {
        let rb = post(h, create_body(&name(), field, "18446744073709551615"));
        h.send(&format!("create {field}"), rb, Expect::Refused(field))
            .await;
    }
    // The idempotency key header (an empty one means none).
    for (what, key, expect) in [
        ("empty", String::new(), Expect::Accepted),
        (
            "long",
            "k".repeat(16 * 1024),
            Expect::Refused("idempotency_key"),
        ),
    ] {
        let rb = post(h, create_body(&name(), "zone", "\"zone-a\"")).header("Idempotency-Key", key);
        h.send(&format!("create Idempotency-Key={what}"), rb, expect)
            .await;
    }
    // The project in the path.
    for (what, project) in [
        ("unicode", "ünï".to_string()),
        ("long", "p".repeat(16 * 1024)),
    ] {
        let path = format!("{T}/projects/{}/vms", pct(&project));
        let rb = h
            .client
            .post(h.url(&path))
            .header("content-type", "application/json")
            .body(create_body("p", "zone", "\"zone-a\""));
        h.send(
            &format!("create in project {what}"),
            rb,
            Expect::Refused("project"),
        )
        .await;
    }
}

async fn legacy_bodies(h: &mut Http) {
    let create = h.url("/api/v1/vms/create");
    let delete = h.url("/api/v1/vms/delete");
    let mut n = 0;
    let mut name = || {
        n += 1;
        format!("l{n}")
    };
    for field in ["vcpus", "memory_mb", "disk_gb", "vlan"] {
        for v in BAD_NUMBERS {
            let rb = h
                .client
                .post(&create)
                .header("content-type", "application/json")
                .body(legacy_body(&name(), field, v));
            h.send(
                &format!("legacy create {field}={v}"),
                rb,
                Expect::Refused(field),
            )
            .await;
        }
    }
    for field in ["name", "template", "host", "zone", "flavor"] {
        for (what, s) in bad_strings() {
            let body = if field == "name" {
                legacy_body(&s, "template", "\"ubuntu-24.04\"")
            } else {
                legacy_body(&name(), field, &serde_json::to_string(&s).unwrap())
            };
            let rb = h
                .client
                .post(&create)
                .header("content-type", "application/json")
                .body(body);
            h.send(
                &format!("legacy create {field}={what}"),
                rb,
                Expect::Refused(field),
            )
            .await;
        }
    }
    for (field, what, value, expect) in [
        ("name", "empty", json!(""), Expect::Refused("name")),
        ("name", "huge", json!(huge()), Expect::Refused("name")),
        ("name", "unicode", json!("ünï"), Expect::Refused("name")),
        ("vm_id", "empty", json!(""), Expect::Refused("vm_id")),
        ("vm_id", "huge", json!(huge()), Expect::Refused("vm_id")),
        ("vm_id", "nul", json!("vm-\u{0}"), Expect::Refused("vm_id")),
        ("vm_id", "unicode", json!("vm-ünï"), Expect::NotFound),
        (
            "vm_id",
            "number",
            json!(18446744073709551615u64),
            Expect::Refused("vm_id"),
        ),
        ("force", "number", json!(1), Expect::Refused("force")),
        ("force", "string", json!("yes"), Expect::Refused("force")),
    ] {
        let rb = h.client.post(&delete).json(&json!({ field: value }));
        h.send(&format!("legacy delete {field}={what}"), rb, expect)
            .await;
    }
}

async fn query_parameters(h: &mut Http) {
    let long = "c".repeat(16 * 1024);
    let lists = [
        format!("{T}/projects/demo/vms"),
        format!("{T}/projects/demo/jobs"),
        "/api/hcp/ops/v1/vms".to_string(),
        "/api/hcp/ops/v1/jobs".to_string(),
    ];
    for path in &lists {
        for (v, expect) in [
            ("-1", Expect::Refused("limit")),
            ("1.5", Expect::Refused("limit")),
            ("abc", Expect::Refused("limit")),
            ("4294967296", Expect::Refused("limit")),
            ("18446744073709551615", Expect::Refused("limit")),
            ("9223372036854775808", Expect::Refused("limit")),
            // Sizes out of range are clamped, as documented.
            ("0", Expect::Accepted),
            ("4294967295", Expect::Accepted),
        ] {
            let rb = h.client.get(h.url(&format!("{path}?limit={v}")));
            h.send(&format!("GET {path} limit={v}"), rb, expect).await;
        }
        for (what, v, expect) in [
            ("long", long.as_str(), Expect::Refused("cursor")),
            ("nul", "%00", Expect::Refused("cursor")),
            ("unicode", "%C3%BC", Expect::Accepted),
            ("empty", "", Expect::Accepted),
        ] {
            let rb = h.client.get(h.url(&format!("{path}?cursor={v}")));
            h.send(&format!("GET {path} cursor={what}"), rb, expect)
                .await;
        }
    }
    for path in [
        format!("{T}/projects/demo/jobs"),
        "/api/hcp/ops/v1/jobs".to_string(),
    ] {
        let rb = h.client.get(h.url(&format!("{path}?state=BOGUS")));
        h.send(&format!("GET {path} state"), rb, Expect::Refused("state"))
            .await;
        let rb = h.client.get(h.url(&format!("{path}?vm_id={long}")));
        h.send(&format!("GET {path} vm_id=long"), rb, Expect::Accepted)
            .await;
    }
    for (v, expect) in [
        ("-1", Expect::Refused("after")),
        ("1.5", Expect::Refused("after")),
        ("18446744073709551616", Expect::Refused("after")),
        ("18446744073709551615", Expect::Accepted),
    ] {
        let rb = h
            .client
            .get(h.url(&format!("/api/hcp/ops/v1/events?after={v}")));
        h.send(&format!("GET events after={v}"), rb, expect).await;
    }
    for (v, expect) in [
        ("-1", Expect::Refused("limit")),
        ("0", Expect::Accepted),
        ("4294967295", Expect::Accepted),
    ] {
        let rb = h
            .client
            .get(h.url(&format!("/api/hcp/ops/v1/events?limit={v}")));
        h.send(&format!("GET events limit={v}"), rb, expect).await;
    }
    let rb = h.client.get(h.url(&format!(
        "/api/hcp/ops/v1/events?project={long}&vm_id={long}"
    )));
    h.send("GET events project=long", rb, Expect::Accepted)
        .await;
    // Flags and enums in queries of the VM verbs.
    let vm = format!("{T}/projects/demo/vms/vm-nope");
    for (path, field, v) in [
        (format!("{vm}?force=maybe"), "force", "delete"),
        (format!("{vm}:stop?force=2"), "force", "stop"),
        (format!("{vm}:reboot?hard=-1"), "hard", "reboot"),
        (format!("{vm}:console?type=bogus"), "type", "console"),
    ] {
        let rb = if v == "delete" {
            h.client.delete(h.url(&path))
        } else {
            h.client.post(h.url(&path))
        };
        h.send(&format!("{v} {field}"), rb, Expect::Refused(field))
            .await;
    }
    let rb = h
        .client
        .get(h.url(&format!("{T}/jobs/job-nope/logs")))
        .header("Last-Event-ID", "-1");
    h.send(
        "logs Last-Event-ID=-1",
        rb,
        Expect::Refused("Last-Event-ID"),
    )
    .await;
}

async fn normal_create_succeeds(h: &mut Http) {
    let rb = h
        .client
        .post(h.url(&format!("{T}/projects/demo/vms")))
        .json(&json!({"name": "after-all", "image": "ubuntu-24.04", "flavor": "small"}));
    let accepted = h.send("normal create", rb, Expect::Accepted).await;
    let job = accepted["job_id"].as_str().unwrap().to_string();
    let mut state = Value::Null;
    for _ in 0..600 {
        let rb = h.client.get(h.url(&format!("{T}/jobs/{job}")));
        state = h.send("poll job", rb, Expect::Accepted).await["state"].clone();
        if state == "SUCCEEDED" || state == "FAILED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "SUCCEEDED");
    for path in ["/api/hcp/ops/v1/hosts", "/api/v1/hosts"] {
        let rb = h.client.get(h.url(path));
        let body = h.send(path, rb, Expect::Accepted).await;
        // A plain list, or a page of one.
        let hosts = body
            .as_array()
            .or_else(|| body["items"].as_array())
            .unwrap_or_else(|| panic!("{path}: {body}"));
        assert_eq!(hosts.len(), 3, "{hosts:?}");
        for host in hosts {
            assert!(
                host["memory_mib_used"].as_u64().unwrap()
                    <= host["memory_mib_total"].as_u64().unwrap(),
                "nothing absurd is held: {host}"
            );
        }
    }
    let rb = h.client.get(h.url("/readyz"));
    h.send("readyz", rb, Expect::Accepted).await;
}

/// Runs `hcp vm create` with one hostile flag (replacing the default of that flag) and returns
/// its result.
fn cli_create(hcp: &Hcp, name: &str, extra: &[&str]) -> common::Run {
    let mut args: Vec<String> = [
        "--output",
        "json",
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        name,
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
    ]
    .map(String::from)
    .to_vec();
    let mut rest = extra.iter();
    while let Some(flag) = rest.next() {
        match args.iter().position(|a| a == flag) {
            Some(i) if !flag.contains('=') => {
                args[i + 1] = rest.next().map(|v| v.to_string()).unwrap_or_default();
            }
            _ => args.push(flag.to_string()),
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    hcp.run(&refs)
}

/// The CLI, embedded or against the server: a bad flag value exits with 2 and names the field
/// (the engine's check) or the flag (the parser's).
fn cli_hostile(hcp: &Hcp, mode: &str) {
    // argv strings are limited (128 KiB each on Linux): 100 KiB is huge enough for every bound.
    let long = "a".repeat(100 * 1024);
    let mut n = 0;
    let mut name = || {
        n += 1;
        format!("c{n}")
    };
    let engine_refusals: Vec<(&str, String, &str)> = vec![
        ("--vcpus", "0".into(), "vcpus"),
        ("--vcpus", "4294967295".into(), "vcpus"),
        ("--vcpus", "4096".into(), "vcpus"),
        ("--memory-mib", "0".into(), "memory_mib"),
        ("--memory-mib", "18446744073709551615".into(), "memory_mib"),
        ("--memory-mib", "9223372036854775808".into(), "memory_mib"),
        ("--disk-gib", "0".into(), "disk_gib"),
        ("--disk-gib", "1000000000000000".into(), "disk_gib"),
        ("--disk-gib", "18446744073709551615".into(), "disk_gib"),
        ("--image", long.clone(), "image"),
        ("--image", "ünï".into(), "image"),
        ("--flavor", long.clone(), "flavor"),
        ("--zone", long.clone(), "zone"),
        ("--zone", "zone-ü".into(), "zone"),
        ("--network", long.clone(), "networks[0].network"),
        ("--network", "a\u{1b}[31m".into(), "networks[0].network"),
        ("--tag", format!("k={long}"), "tags.k"),
        ("--idempotency-key", long.clone(), "idempotency_key"),
    ];
    for (flag, value, field) in &engine_refusals {
        let r = cli_create(hcp, &name(), &[flag, value]);
        let shown: String = format!("{r:?}").chars().take(400).collect();
        assert_eq!(r.code, INVALID_INPUT, "{mode} {flag}: {shown}");
        assert_eq!(r.error()["field"], *field, "{mode} {flag}: {shown}");
    }
    // (argv cannot carry NUL.)
    for bad_name in [long.as_str(), "ünï", "a\nb", ""] {
        let r = cli_create(hcp, bad_name, &[]);
        assert_eq!(r.code, INVALID_INPUT, "{mode} name: {}", r.stderr.len());
        assert_eq!(r.error()["field"], "name", "{mode}");
    }
    let big = hcp.path("user-data");
    std::fs::write(&big, "#cloud-config\n".to_string() + &"x".repeat(HUGE)).unwrap();
    let r = cli_create(hcp, &name(), &["--user-data", big.to_str().unwrap()]);
    assert_eq!(r.code, INVALID_INPUT, "{mode}: {}", r.stderr.len());
    assert_eq!(r.error()["field"], "user_data", "{mode}");
    // Values the parser refuses, naming the flag.
    for (flag, value) in [
        ("--vcpus", "-1"),
        ("--vcpus", "4294967296"),
        ("--vcpus", "1.5"),
        ("--vcpus", "1e3"),
        ("--memory-mib", "18446744073709551616"),
        ("--memory-mib", "-9223372036854775809"),
        ("--disk-gib", "NaN"),
    ] {
        let r = cli_create(hcp, &name(), &[&format!("{flag}={value}")]);
        assert_eq!(r.code, INVALID_INPUT, "{mode} {flag}={value}: {r:?}");
        assert!(r.stderr.contains(flag), "{mode} {flag}={value}: {r:?}");
    }
    for value in ["0", "-1", "10001", "18446744073709551616", "1.5"] {
        let r = hcp.run(&["job", "list", &format!("--limit={value}")]);
        assert_eq!(
            r.code, INVALID_INPUT,
            "{mode} job list --limit={value}: {r:?}"
        );
        assert!(r.stderr.contains("--limit"), "{mode}: {r:?}");
    }
    for project in ["ünï", long.as_str()] {
        let r = hcp.run(&["--output", "json", "vm", "list", "--project", project]);
        assert_eq!(r.code, INVALID_INPUT, "{mode}: {}", r.stderr.len());
        assert_eq!(r.error()["field"], "project", "{mode}");
    }
    // Nothing above was created; a normal create works.
    let ok = cli_create(hcp, "cli-ok", &["--wait"]);
    assert_eq!(ok.code, 0, "{mode}: {ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_by_field_and_breaks_nothing() {
    let server = ServeBuilder::new()
        .env("HCP_BODY_LIMIT", BODY_LIMIT)
        .env("HCP_DEFAULT_PROJECT", "demo")
        .start();
    let mut h = Http {
        base: server.url.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
        seen: Vec::new(),
    };
    tenant_create_bodies(&mut h).await;
    legacy_bodies(&mut h).await;
    query_parameters(&mut h).await;

    // Through the CLI: against the same server, and embedded.
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        cli_hostile(&Hcp::new().with_url(&url), "remote");
        cli_hostile(&Hcp::new(), "embedded");
    })
    .await
    .unwrap();

    normal_create_succeeds(&mut h).await;
    assert!(
        h.seen.len() > 250,
        "the matrix ran: {} requests",
        h.seen.len()
    );
    let logs = server.logs();
    assert!(
        !logs.contains("panicked"),
        "the server panicked:\n{}",
        logs.lines()
            .filter(|l| l.contains("panicked"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (status, _) = server.terminate();
    assert!(status.success(), "hcp serve exited with {status}");
}
