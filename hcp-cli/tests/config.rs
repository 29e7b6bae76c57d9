//! The example hosts file, the catalog and capabilities.

mod common;

use common::{Hcp, INVALID_INPUT, NOT_FOUND};

#[test]
fn capabilities_of_zone_b_lack_cloud_init() {
    let hcp = Hcp::new();
    let b = hcp.json(&["capabilities", "--zone", "zone-b"]);
    assert_eq!(b["zone"], "zone-b");
    assert_eq!(b["capabilities"]["cloud_init"], false);
    assert_eq!(b["capabilities"]["snapshot"], false);
    assert_eq!(b["capabilities"]["console_vnc"], true);
    let a = hcp.json(&["capabilities", "--zone", "zone-a"]);
    assert_eq!(a["capabilities"]["cloud_init"], true);
    let all = hcp.json(&["capabilities"]);
    assert!(all["zone"].is_null());
    assert_eq!(all["capabilities"]["cloud_init"], true, "some zone has it");

    let table = hcp.run(&["capabilities", "--zone", "zone-b"]);
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with("cloud_init"))
        .unwrap();
    assert!(line.trim_end().ends_with("no"), "{}", table.stdout);

    let unknown = hcp.run(&["--output", "json", "capabilities", "--zone", "zone-x"]);
    assert_eq!(unknown.code, INVALID_INPUT, "{unknown:?}");
    assert_eq!(unknown.error()["field"], "zone");
}

#[test]
fn catalog_lists_images_flavors_and_zones() {
    let c = Hcp::new().json(&["catalog"]);
    let names = |key: &str| -> Vec<String> {
        c[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("images"), ["ubuntu-24.04", "windows-2022"]);
    assert_eq!(names("flavors"), ["small", "medium"]);
    assert_eq!(names("zones"), ["zone-a", "zone-b"]);
    assert_eq!(names("networks"), ["default"]);
}

#[test]
fn the_example_hosts_file_works() {
    let hcp = Hcp::new().with_config(common::example_config());
    let c = hcp.json(&["catalog"]);
    let zones: Vec<&str> = c["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["name"].as_str().unwrap())
        .collect();
    assert_eq!(zones, ["east", "west"]);
    let hosts = hcp.json(&["host", "list"]);
    assert_eq!(hosts.as_array().unwrap().len(), 3);
    assert!(
        hosts
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["provider"] == "lab" && h["available"] == true)
    );
    assert_eq!(
        hcp.json(&["capabilities", "--zone", "west"])["capabilities"]["cloud_init"],
        false
    );

    let vm = hcp.json(&[
        "vm",
        "create",
        "--project",
        "team-a",
        "--name",
        "web-1",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
        "--network",
        "dmz",
        "--zone",
        "east",
    ]);
    assert_eq!(vm["vm"]["zone"], "east");
    assert_eq!(vm["vm"]["spec"]["networks"][0]["network"], "dmz");

    // The project list and quotas of the file apply.
    let r = hcp.run(&[
        "--output",
        "json",
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "x",
        "--image",
        "debian-12",
        "--flavor",
        "small",
    ]);
    assert_eq!(r.code, NOT_FOUND, "{r:?}");
    assert_eq!(r.error()["field"], "project");
    let too_big = hcp.run(&[
        "--output",
        "json",
        "vm",
        "create",
        "--project",
        "team-a",
        "--name",
        "huge",
        "--image",
        "debian-12",
        "--flavor",
        "large",
        "--vcpus",
        "16",
    ]);
    assert_eq!(too_big.code, 6, "quota exceeded: {too_big:?}");
    assert_eq!(too_big.error()["code"], "QUOTA_EXCEEDED");
}

#[test]
fn embedded_mode_and_the_service_know_the_same_provider_kinds() {
    let hcp = Hcp::new();
    let hosts = hcp.path("xen.yaml");
    std::fs::write(
        &hosts,
        "providers:\n  - name: xs\n    kind: xen\n    hosts:\n      - {name: h, zone: z}\nzones:\n  - name: z\ncatalog:\n  images: [{name: img}]\n  flavors: [{name: f, vcpus: 1, memory_mib: 512, disk_gib: 1}]\n",
    )
    .unwrap();
    let embedded = Hcp::new()
        .with_config(&hosts)
        .run(&["--output", "json", "catalog"]);
    let served = common::server::ServeBuilder::new()
        .args(&["--config", hosts.to_str().unwrap()])
        .fail();
    assert_eq!(embedded.code, INVALID_INPUT, "{embedded:?}");
    assert_eq!(served.code, INVALID_INPUT, "{served:?}");
    let e = embedded.error();
    assert_eq!(e["field"], "providers[0].kind", "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("`xen`")
            && message.contains("hyperv")
            && message.contains("vsphere")
            && message.contains("sim"),
        "{message}"
    );
    assert!(served.stderr.contains(message), "{served:?}");
}
