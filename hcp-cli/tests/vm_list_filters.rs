//! `hcp vm list` with --name-prefix, --tag (repeatable), --state, --power and --sort: the same
//! answers and the same output in embedded and remote mode; bad values exit with the invalid
//! input code naming the option's field.

mod common;

use common::server::Server;
use common::{Hcp, INVALID_INPUT};

/// Creates the same VMs through `hcp` and stops one.
fn populate(hcp: &Hcp) {
    for (name, tags) in [
        ("web-2", ["env=prod", "tier=web"]),
        ("db-1", ["env=prod", "tier=db"]),
        ("web-1", ["env=dev", "tier=web"]),
        ("web-3", ["env=prod", "tier=web"]),
    ] {
        let mut extra = vec!["--wait"];
        for t in &tags {
            extra.extend(["--tag", t]);
        }
        hcp.create(name, &extra);
    }
    let r = hcp.run(&["vm", "stop", "web-3", "--project", "demo", "--wait"]);
    assert_eq!(r.code, 0, "{r:?}");
}

fn names(hcp: &Hcp, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["vm", "list", "--project", "demo"];
    args.extend_from_slice(extra);
    hcp.json(&args)
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

/// The answers every mode must give: (arguments, names in order).
fn expectations() -> Vec<(Vec<&'static str>, Vec<&'static str>)> {
    vec![
        (
            vec!["--sort", "name"],
            vec!["db-1", "web-1", "web-2", "web-3"],
        ),
        (
            vec!["--sort", "-name"],
            vec!["web-3", "web-2", "web-1", "db-1"],
        ),
        (
            vec!["--sort", "created_at"],
            vec!["web-2", "db-1", "web-1", "web-3"],
        ),
        (
            vec!["--sort=-created_at"],
            vec!["web-3", "web-1", "db-1", "web-2"],
        ),
        (
            vec![
                "--name-prefix",
                "web",
                "--tag",
                "env=prod",
                "--tag",
                "tier=web",
                "--sort",
                "name",
            ],
            vec!["web-2", "web-3"],
        ),
        (vec!["--power", "stopped"], vec!["web-3"]),
        (
            vec!["--state", "ACTIVE", "--power", "RUNNING", "--sort", "-name"],
            vec!["web-2", "web-1", "db-1"],
        ),
        (vec!["--tag", "tier=db", "--tag", "env=dev"], vec![]),
    ]
}

/// The text table's VM names, in order (first column after the header is the id, so match
/// names by word).
fn text_names(hcp: &Hcp, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["vm", "list", "--project", "demo"];
    args.extend_from_slice(extra);
    let r = hcp.run(&args);
    assert_eq!(r.code, 0, "{r:?}");
    r.stdout
        .split_whitespace()
        .filter(|w| ["db-1", "web-1", "web-2", "web-3"].contains(w))
        .map(str::to_string)
        .collect()
}

fn check(hcp: &Hcp) {
    for (args, want) in expectations() {
        assert_eq!(names(hcp, &args), want, "hcp vm list {args:?}");
        assert_eq!(text_names(hcp, &args), want, "hcp vm list {args:?} (text)");
    }
    for (args, field, allowed) in [
        (vec!["--tag", "env"], "tag", "key=value"),
        (
            vec!["--state", "on"],
            "state",
            "PENDING, ACTIVE, ERROR, DELETED",
        ),
        (
            vec!["--power", "up"],
            "power",
            "RUNNING, STOPPED, PAUSED, UNKNOWN",
        ),
        (
            vec!["--sort", "size"],
            "sort",
            "name, -name, created_at, -created_at",
        ),
    ] {
        let mut all = vec!["--output", "json", "vm", "list", "--project", "demo"];
        all.extend_from_slice(&args);
        let r = hcp.run(&all);
        assert_eq!(r.code, INVALID_INPUT, "{args:?}: {r:?}");
        let e = r.error();
        assert_eq!(e["field"], field, "{args:?}: {e}");
        assert!(e.to_string().contains(allowed), "{args:?}: {e}");
    }
}

#[test]
fn embedded_list_filters_and_sorts() {
    let hcp = Hcp::new();
    populate(&hcp);
    check(&hcp);
}

#[test]
fn remote_list_filters_and_sorts_like_embedded() {
    let server = Server::demo();
    let hcp = Hcp::new().with_url(&server.url);
    populate(&hcp);
    check(&hcp);
}
