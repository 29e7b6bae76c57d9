//! Bad input, unknown objects and missing capabilities: a clear error naming the field, the
//! right exit code, and nothing created.

mod common;

use common::{FEATURE_NOT_SUPPORTED, Hcp, INVALID_INPUT, NOT_FOUND};

fn assert_nothing_created(hcp: &Hcp) {
    assert!(hcp.vms("demo").is_empty(), "no VM was created");
    assert!(hcp.jobs().is_empty(), "no job was created");
    let hosts = hcp.json(&["host", "list"]);
    for h in hosts.as_array().unwrap() {
        assert_eq!(h["vm_count"], 0, "no VM reached a host: {h}");
    }
}

#[test]
fn bad_input_names_the_field_and_creates_nothing() {
    let hcp = Hcp::new();
    let base = |name: &str| {
        vec![
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
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let with = |mut args: Vec<String>, flag: &str, value: &str| {
        if let Some(i) = args.iter().position(|a| a == flag) {
            args[i + 1] = value.to_string();
        } else {
            args.push(flag.to_string());
            args.push(value.to_string());
        }
        args
    };
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (base(""), "name", "must not be empty"),
        (base("Web_1"), "name", "lowercase"),
        (base("web-"), "name", "end with"),
        (with(base("v"), "--vcpus", "0"), "vcpus", "at least 1"),
        (
            with(base("i"), "--image", "no-such-image"),
            "image",
            "unknown image `no-such-image`",
        ),
        (
            with(base("f"), "--flavor", "huge"),
            "flavor",
            "unknown flavor `huge`",
        ),
        (
            with(base("z"), "--zone", "zone-x"),
            "zone",
            "unknown zone `zone-x`",
        ),
        (
            with(base("p"), "--project", "Bad Project"),
            "project",
            "must start with a lowercase letter",
        ),
        (
            with(base("n"), "--network", "lan"),
            "networks[0].network",
            "unknown network `lan`",
        ),
        (
            with(base("w"), "--image", "windows-2022"),
            "disk_gib",
            "smaller than image",
        ),
        (
            with(base("k"), "--idempotency-key", ""),
            "idempotency_key",
            "1-255 characters",
        ),
    ];
    for (args, field, says) in cases {
        let mut all = vec!["--output".to_string(), "json".to_string()];
        all.extend(args.iter().cloned());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let r = hcp.run(&refs);
        assert_eq!(r.code, INVALID_INPUT, "{args:?}: {r:?}");
        let e = r.error();
        assert_eq!(e["field"], field, "{args:?}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{args:?}: {e}"
        );
        assert!(r.stdout.is_empty(), "nothing on stdout: {r:?}");

        // The table mode says the same in words.
        let words = hcp.run(&refs[2..]);
        assert_eq!(words.code, INVALID_INPUT);
        assert!(words.stderr.starts_with("hcp: error: "), "{words:?}");
        assert!(words.stderr.contains(field), "{words:?}");
    }
    // An unknown project is not found (exit 3), its code and its exit code agree.
    let r = hcp.run(&[
        "--output",
        "json",
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
    ]);
    assert_eq!(r.code, NOT_FOUND, "{r:?}");
    let e = r.error();
    assert_eq!(e["field"], "project", "{e}");
    assert_eq!(e["code"], "NOT_FOUND", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("unknown project `no-such-project`"),
        "{e}"
    );
    assert_nothing_created(&hcp);
}

#[test]
fn malformed_flags_are_invalid_input() {
    let hcp = Hcp::new();
    for args in [
        vec![
            "vm",
            "create",
            "--project",
            "demo",
            "--name",
            "t",
            "--image",
            "ubuntu-24.04",
            "--flavor",
            "small",
            "--tag",
            "no-equals",
        ],
        vec![
            "vm",
            "create",
            "--project",
            "demo",
            "--name",
            "t",
            "--image",
            "ubuntu-24.04",
            "--flavor",
            "small",
            "--vcpus",
            "-1",
        ],
        vec![
            "vm",
            "create",
            "--project",
            "demo",
            "--name",
            "t",
            "--image",
            "ubuntu-24.04",
        ],
        vec!["vm", "list"],
        vec!["--output", "yaml", "vm", "list", "--project", "demo"],
    ] {
        let r = hcp.run(&args);
        assert_eq!(r.code, INVALID_INPUT, "{args:?}: {r:?}");
        assert!(!r.stderr.is_empty());
    }
    let r = hcp.run(&[
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "t",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
        "--tag",
        "bad key=v",
    ]);
    assert_eq!(r.code, INVALID_INPUT, "{r:?}");
    assert!(r.stderr.contains("tags.bad key"), "{r:?}");
    let r = hcp.run(&[
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "t",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
        "--user-data",
        "/no/such/file",
    ]);
    assert_eq!(r.code, INVALID_INPUT, "{r:?}");
    assert!(
        r.stderr.contains("user_data") && r.stderr.contains("/no/such/file"),
        "{r:?}"
    );
    assert_nothing_created(&hcp);
}

#[test]
fn unknown_vm_or_job_is_not_found() {
    let hcp = Hcp::new();
    for args in [
        vec!["vm", "show", "vm-nope"],
        vec!["vm", "start", "vm-nope"],
        vec!["vm", "stop", "vm-nope", "--force"],
        vec!["vm", "reboot", "vm-nope"],
        vec!["vm", "delete", "vm-nope"],
        vec!["vm", "console", "vm-nope"],
        vec!["job", "show", "job-nope"],
        vec!["job", "watch", "job-nope"],
    ] {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(&args);
        let r = hcp.run(&all);
        assert_eq!(r.code, NOT_FOUND, "{args:?}: {r:?}");
        assert_eq!(r.error()["code"], "NOT_FOUND", "{args:?}");
    }
    // Another project's VM is not found either.
    let two_projects = Hcp::new().with_config(common::example_config());
    let created = two_projects.json(&[
        "vm",
        "create",
        "--project",
        "team-a",
        "--name",
        "mine",
        "--image",
        "debian-12",
        "--flavor",
        "small",
    ]);
    let id = created["vm_id"].as_str().unwrap();
    for args in [
        vec!["vm", "show", id, "--project", "team-b"],
        vec!["vm", "stop", id, "--project", "team-b"],
    ] {
        let r = two_projects.run(&args);
        assert_eq!(r.code, NOT_FOUND, "{r:?}");
    }
    assert!(two_projects.vms("team-b").is_empty());
    assert_eq!(
        two_projects.vms("team-a")[0]["power"],
        "RUNNING",
        "the refused stop did nothing"
    );
}

#[test]
fn user_data_in_zone_b_is_not_supported_and_creates_nothing() {
    let hcp = Hcp::new();
    let user_data = hcp.path("user-data.yaml");
    std::fs::write(&user_data, "#cloud-config\npackages: [nginx]\n").unwrap();
    let r = hcp.run(&[
        "--output",
        "json",
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "web",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
        "--zone",
        "zone-b",
        "--user-data",
        user_data.to_str().unwrap(),
    ]);
    assert_eq!(r.code, FEATURE_NOT_SUPPORTED, "{r:?}");
    let e = r.error();
    assert_eq!(e["code"], "FEATURE_NOT_SUPPORTED");
    assert!(e["message"].as_str().unwrap().contains("cloud_init"), "{e}");
    assert_nothing_created(&hcp);

    // zone-a has cloud-init: the same request succeeds there, and the user-data stays hidden.
    let ok = hcp.json(&[
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "web",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
        "--zone",
        "zone-a",
        "--user-data",
        user_data.to_str().unwrap(),
    ]);
    assert_eq!(ok["vm"]["has_user_data"], true);
    assert!(
        !ok.to_string().contains("nginx"),
        "user-data never printed: {ok}"
    );
}

#[test]
fn malformed_hosts_file_names_the_key_and_line() {
    let hcp = Hcp::new();
    let bad = hcp.path("bad.yaml");
    std::fs::write(
        &bad,
        "providers:\n  - name: sim\n    kind: sim\n    hosts:\n      - name: h1\n        zone: z\n        vcpuz: 8\nzones:\n  - name: z\n",
    )
    .unwrap();
    let r = Hcp::new().with_config(&bad).run(&["catalog"]);
    assert_eq!(r.code, INVALID_INPUT, "{r:?}");
    assert!(
        r.stderr.contains("vcpuz") && r.stderr.contains("line 7"),
        "{}",
        r.stderr
    );

    let unknown_zone = hcp.path("zone.yaml");
    std::fs::write(
        &unknown_zone,
        "providers:\n  - name: sim\n    kind: sim\n    hosts:\n      - {name: h1, zone: nowhere}\n",
    )
    .unwrap();
    let r = Hcp::new()
        .with_config(&unknown_zone)
        .run(&["--output", "json", "host", "list"]);
    assert_eq!(r.code, INVALID_INPUT, "{r:?}");
    assert_eq!(r.error()["field"], "providers[0].hosts[0].zone");
    assert!(
        r.error()["message"].as_str().unwrap().contains("line 5"),
        "{}",
        r.stderr
    );

    let syntax = hcp.path("syntax.yaml");
    std::fs::write(&syntax, "providers: [\n  - name: [\n").unwrap();
    let r = Hcp::new().with_config(&syntax).run(&["catalog"]);
    assert_eq!(r.code, INVALID_INPUT, "{r:?}");
    assert!(r.stderr.contains("line"), "{}", r.stderr);

    let missing = Hcp::new()
        .with_config(hcp.path("absent.yaml"))
        .run(&["catalog"]);
    assert_eq!(missing.code, INVALID_INPUT, "{missing:?}");
    assert!(missing.stderr.contains("absent.yaml"), "{}", missing.stderr);

    // HCP_CONFIG works like --config.
    let mut cmd = Hcp::new().command();
    let out = cmd.env("HCP_CONFIG", &bad).arg("catalog").output().unwrap();
    assert_eq!(out.status.code(), Some(INVALID_INPUT));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vcpuz"));
}

#[test]
fn help_documents_the_exit_codes() {
    let r = Hcp::new().run(&["--help"]);
    assert_eq!(r.code, 0);
    for line in [
        "2  invalid input",
        "3  not found",
        "5  feature not supported",
        "8  job failed",
    ] {
        assert!(r.stdout.contains(line), "help lacks `{line}`: {}", r.stdout);
    }
    let create = Hcp::new().run(&["vm", "create", "--help"]);
    for flag in [
        "--project",
        "--name",
        "--image",
        "--flavor",
        "--zone",
        "--user-data",
        "--tag",
        "--idempotency-key",
        "--wait",
        "--output",
        "--config",
    ] {
        assert!(
            create.stdout.contains(flag),
            "vm create --help lacks {flag}"
        );
    }
}

#[test]
fn usage_errors_are_json_under_output_json() {
    let hcp = Hcp::new();
    for args in [
        vec!["--output", "json", "vm", "lst"],
        vec![
            "-o",
            "json",
            "vm",
            "create",
            "--project",
            "demo",
            "--vcpus",
            "two",
        ],
        vec!["vm", "list", "--output=json", "--no-such-flag"],
    ] {
        let r = hcp.run(&args);
        assert_eq!(r.code, INVALID_INPUT, "{args:?}: {r:?}");
        let e = r.error();
        assert_eq!(e["code"], "INVALID_SPEC", "{args:?}: {e}");
        assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
        assert!(r.stdout.is_empty(), "{r:?}");
    }
    let r = hcp.run(&[
        "-o",
        "json",
        "vm",
        "create",
        "--project",
        "demo",
        "--vcpus",
        "two",
    ]);
    assert!(
        r.error()["field"].as_str().unwrap().contains("--vcpus"),
        "{r:?}"
    );
    // Without JSON, clap's own words; help still prints and exits 0.
    let r = hcp.run(&["vm", "lst"]);
    assert_eq!(r.code, INVALID_INPUT);
    assert!(r.stderr.contains("unrecognized subcommand"), "{r:?}");
    let r = hcp.run(&["--output", "json", "vm", "--help"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Usage"), "{r:?}");
}

#[test]
fn logs_are_off_by_default_and_plain_when_asked_for() {
    // A simulator whose every VM operation fails, without retries: each create job fails.
    let failing = format!(
        "{}engine:\n  retry: {{max_attempts: 1}}\n",
        common::server::hosts_file("{failure_rate: 1.0}")
    );
    let hcp = Hcp::new();
    let path = hcp.path("failing.yaml");
    std::fs::write(&path, failing).unwrap();
    let hcp = hcp.with_config(&path);
    let create = |name: &'static str| {
        [
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
    };
    let r = hcp.run(&create("logged-1"));
    assert_eq!(r.code, 8, "{r:?}");
    assert!(!r.stderr.contains("WARN"), "no logs by default: {r:?}");
    assert!(!r.stderr.contains('\u{1b}'), "no colour in a pipe: {r:?}");
    let out = hcp
        .command()
        .env("HCP_LOG_LEVEL", "warn")
        .env("NO_COLOR", "1")
        .args(create("logged-2"))
        .output()
        .unwrap();
    let r = common::Run::from(out);
    assert_eq!(r.code, 8, "{r:?}");
    assert!(r.stderr.contains("WARN"), "HCP_LOG_LEVEL=warn logs: {r:?}");
    assert!(!r.stderr.contains('\u{1b}'), "NO_COLOR: {r:?}");
    let out = hcp
        .command()
        .env("HCP_LOG_LEVEL", "no such=level=")
        .args(["catalog"])
        .output()
        .unwrap();
    let r = common::Run::from(out);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("HCP_LOG_LEVEL"),
        "a bad filter is named: {r:?}"
    );
}
