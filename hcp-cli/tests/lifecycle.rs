//! A VM's life through the real binary, one process per command, as scripts use it.

mod common;

use common::{CONFLICT, Hcp};

#[test]
fn round_trip_create_list_show_stop_start_reboot_console_delete() {
    let hcp = Hcp::new();
    let created = hcp.json(&[
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
        "--tag",
        "env=test",
        "--tag",
        "team=core",
    ]);
    let id = created["vm_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("vm-"), "{created}");
    assert_eq!(created["replayed"], false);
    assert_eq!(created["job"]["state"], "SUCCEEDED");
    assert_eq!(created["job"]["operation"], "create_vm");
    assert_eq!(created["vm"]["state"], "ACTIVE");
    assert_eq!(created["vm"]["power"], "RUNNING");

    // A new process rebuilds the VM from the simulator's hosts.
    let vms = hcp.vms("demo");
    assert_eq!(vms.len(), 1, "{vms:?}");
    assert_eq!(vms[0]["id"], id.as_str());
    assert_eq!(vms[0]["name"], "web-1");
    assert_eq!(vms[0]["resources"]["vcpus"], 1);
    assert_eq!(vms[0]["spec"]["tags"]["env"], "test");

    let shown = hcp.json(&["vm", "show", &id]);
    assert_eq!(shown["name"], "web-1");
    assert_eq!(
        shown["zone"].as_str().map(|z| z.starts_with("zone-")),
        Some(true)
    );
    // The tenant view never shows where the VM runs.
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

    let stopped = hcp.json(&["vm", "stop", &id]);
    assert_eq!(stopped["job"]["operation"], "stop_vm");
    assert_eq!(stopped["job"]["state"], "SUCCEEDED");
    assert_eq!(stopped["vm"]["power"], "STOPPED");
    assert_eq!(
        hcp.json(&["vm", "show", &id])["power"],
        "STOPPED",
        "the stop outlives its process"
    );

    let started = hcp.json(&["vm", "start", &id, "--wait"]);
    assert_eq!(started["vm"]["power"], "RUNNING");

    let rebooted = hcp.json(&["vm", "reboot", &id, "--project", "demo"]);
    assert_eq!(rebooted["job"]["operation"], "reboot_vm");
    assert_eq!(rebooted["job"]["state"], "SUCCEEDED");

    let console = hcp.json(&["vm", "console", &id]);
    assert_eq!(console["type"], "vnc");
    assert!(
        console["url"].as_str().unwrap().starts_with("https://"),
        "{console}"
    );
    assert!(console["expires_at"].is_string());

    let deleted = hcp.json(&["vm", "delete", &id, "--force"]);
    assert_eq!(deleted["job"]["operation"], "delete_vm");
    assert_eq!(deleted["job"]["state"], "SUCCEEDED");
    assert!(deleted["vm"].is_null(), "{deleted}");
    assert!(hcp.vms("demo").is_empty());

    let ops: Vec<String> = hcp
        .jobs()
        .iter()
        .map(|j| j["operation"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ops,
        ["delete_vm", "reboot_vm", "start_vm", "stop_vm", "create_vm"],
        "newest first"
    );
}

#[test]
fn table_output_is_readable() {
    let hcp = Hcp::new();
    let created = hcp.run(&[
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "db-1",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "medium",
    ]);
    assert_eq!(created.code, 0, "{created:?}");
    assert!(
        created.stdout.starts_with("create_vm job-"),
        "{}",
        created.stdout
    );
    assert!(created.stdout.contains("SUCCEEDED"), "{}", created.stdout);

    let list = hcp.run(&["vm", "list", "--project", "demo"]);
    assert_eq!(list.code, 0, "{list:?}");
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {}", list.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header[..5], ["ID", "NAME", "STATE", "POWER", "ZONE"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert!(row[0].starts_with("vm-"));
    assert_eq!(row[1..4], ["db-1", "ACTIVE", "RUNNING"]);
    assert!(lines[1].contains("4096 MiB"), "{}", lines[1]);

    let show = hcp.run(&["vm", "show", row[0]]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(
        show.stdout
            .lines()
            .any(|l| l.starts_with("Name:") && l.trim_end().ends_with("db-1")),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout
            .lines()
            .any(|l| l.starts_with("Flavor:") && l.trim_end().ends_with("medium")),
        "{}",
        show.stdout
    );

    let catalog = hcp.run(&["catalog"]);
    assert!(
        catalog.stdout.contains("ubuntu-24.04") && catalog.stdout.contains("FLAVOR"),
        "{}",
        catalog.stdout
    );
    let hosts = hcp.run(&["host", "list"]);
    assert_eq!(
        hosts.stdout.lines().count(),
        4,
        "a header and three hosts: {}",
        hosts.stdout
    );
    assert!(
        hosts.stdout.contains("sim-b1"),
        "the host list is the operator view: {}",
        hosts.stdout
    );
}

#[test]
fn wait_shows_the_job_log_on_stderr() {
    let hcp = Hcp::new();
    let r = hcp.run(&[
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "w",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
        "--wait",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("attempt 1/"),
        "log lines on stderr: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("create_vm SUCCEEDED"),
        "the end on stderr: {}",
        r.stderr
    );
    let id = hcp.vms("demo")[0]["id"].as_str().unwrap().to_string();
    let quiet = hcp.run(&["vm", "stop", &id]);
    assert_eq!(quiet.code, 0, "{quiet:?}");
    assert!(
        quiet.stderr.is_empty(),
        "without --wait nothing is shown while waiting: {}",
        quiet.stderr
    );
}

#[test]
fn deleting_a_running_vm_shuts_it_down_first_and_force_skips_only_the_graceful_part() {
    let hcp = Hcp::new();
    for (name, extra, line) in [
        ("busy", None, "the guest shut down"),
        ("busier", Some("--force"), "powered the VM off (force)"),
    ] {
        let id = hcp.create(name, &[]);
        let mut args = vec!["--output", "json", "vm", "delete", id.as_str(), "--wait"];
        args.extend(extra);
        let r = hcp.run(&args);
        assert_eq!(r.code, 0, "{r:?}");
        let out = r.json();
        assert_eq!(out["job"]["state"], "SUCCEEDED", "{out}");
        assert!(
            r.stderr.contains(line),
            "{name}: the log says `{line}`: {r:?}"
        );
    }
    assert!(hcp.vms("demo").is_empty(), "both VMs are gone");
}

#[test]
fn a_reboot_of_a_stopped_vm_is_refused_before_any_job() {
    let hcp = Hcp::new();
    let id = hcp.create("sleepy", &[]);
    assert_eq!(hcp.json(&["vm", "stop", &id])["vm"]["power"], "STOPPED");
    let jobs = hcp.jobs().len();
    let r = hcp.run(&["--output", "json", "vm", "reboot", &id]);
    assert_eq!(r.code, CONFLICT, "{r:?}");
    assert_eq!(r.error()["code"], "VM_STATE_CONFLICT", "{r:?}");
    assert!(
        r.error()["message"].as_str().unwrap().contains("stopped"),
        "{r:?}"
    );
    assert_eq!(hcp.jobs().len(), jobs, "no job was made");
}

#[test]
fn state_goes_under_xdg_state_home_per_environment() {
    let hcp = Hcp::new().without_sim_state();
    hcp.create("home-1", &[]);
    let demo = hcp.state_home().join("hcp").join("demo");
    assert!(
        demo.join("sim-sim.json").is_file(),
        "simulator state under {}",
        demo.display()
    );
    assert!(
        demo.join("jobs.json").is_file(),
        "jobs file under {}",
        demo.display()
    );
    assert_eq!(hcp.vms("demo").len(), 1);

    // A hosts file is another environment: the demo's VMs and hosts do not leak into it.
    let config = hcp.path("hosts.yaml");
    std::fs::write(&config, hcp_demo_like_config()).unwrap();
    let mut cmd = hcp.command();
    let out = cmd
        .args([
            "--config",
            config.to_str().unwrap(),
            "--output",
            "json",
            "host",
            "list",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["only-host"]);
    let envs: Vec<String> = std::fs::read_dir(hcp.state_home().join("hcp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(envs.len(), 2, "{envs:?}");
    assert!(envs.iter().any(|e| e.starts_with("hosts-")), "{envs:?}");
}

fn hcp_demo_like_config() -> &'static str {
    "providers:\n  - name: sim\n    kind: sim\n    hosts:\n      - {name: only-host, zone: z}\nzones:\n  - name: z\ncatalog:\n  images: [{name: img}]\n  flavors: [{name: f, vcpus: 1, memory_mib: 512, disk_gib: 1}]\n"
}
