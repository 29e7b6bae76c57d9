//! The host-name sweep on libvirt (needs the `libvirt` feature): jobs run on a libvirt host
//! (libvirt's built-in test driver, a real libvirt connection without a daemon) through a real
//! `hcp serve`; every response a tenant reads is searched for the host's name, the provider's
//! name, the domain's UUID, the storage pool and the node file's path. The operator routes still
//! show them.

mod common;
mod sweep;

use reqwest::StatusCode;
use serde_json::json;
use sweep::{Seen, T};

const NODE: &str = r#"<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads><active>4</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>8388608</memory>
  <pool type='dir'>
    <name>pool-sweep-secret</name>
    <target><path>/pool-sweep-secret</path></target>
    <volume type='file'>
      <name>base-tiny.qcow2</name>
      <capacity unit='MiB'>64</capacity>
      <target><format type='qcow2'/></target>
    </volume>
  </pool>
</node>
"#;

const HOST: &str = "kvm-sweep-secret";
const PROVIDER: &str = "lv-sweep-provider";

#[tokio::test]
async fn libvirt_tenant_responses_never_name_the_host() {
    let node_dir = tempfile::tempdir().unwrap();
    let node = node_dir.path().join("node.xml");
    std::fs::write(&node, NODE).unwrap();
    let hosts = format!(
        r#"
providers:
  - name: {PROVIDER}
    kind: libvirt
    settings:
      pool: pool-sweep-secret
      images: {{base-tiny: base-tiny.qcow2}}
      networks: {{default: {{type: user}}}}
    hosts:
      - {{name: {HOST}, zone: zone-a, settings: {{uri: "test://{}"}}}}
zones:
  - name: zone-a
catalog:
  images: [{{name: base-tiny, min_disk_gib: 0}}, {{name: ghost, min_disk_gib: 0}}]
  flavors: [{{name: tiny, vcpus: 1, memory_mib: 64, disk_gib: 1}}]
  networks: [{{name: default}}]
engine:
  inventory_refresh_interval: 0s
  retry: {{max_attempts: 1}}
"#,
        node.display()
    );
    let s = common::start_with(common::Setup {
        hosts_yaml: Some(hosts),
        ..Default::default()
    })
    .await;
    let mut seen = Seen::default();

    // A create that succeeds (its log names the domain's UUID, for operators only).
    let (status, created) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms"),
            json!({"name": "swept", "image": "base-tiny", "flavor": "tiny"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let vm_id = created["vm_id"].as_str().unwrap().to_string();
    let job = seen.logs(&s, created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    let ops_vm = sweep::ops_vm(&s, &vm_id).await;
    assert_eq!(ops_vm["binding"]["host"], HOST, "{ops_vm}");
    let uuid = ops_vm["binding"]["native_id"].as_str().unwrap().to_string();

    // A create whose image has no volume in the pool: no host reports the image, so it is
    // refused before a job exists (the refusal is swept with the rest).
    let (status, failed) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms"),
            json!({"name": "swept-2", "image": "ghost", "flavor": "tiny"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{failed}");
    assert_eq!(failed["field"], "image", "{failed}");
    // A stop, so that the VM list shows a settled VM.
    let (status, stop) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms/{vm_id}:stop"),
            json!({"force": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{stop}");
    seen.logs(&s, stop["job_id"].as_str().unwrap()).await;

    seen.get(&s, &format!("{T}/projects/demo/jobs")).await;
    seen.get(&s, &format!("{T}/projects/demo/vms")).await;
    seen.get(&s, &format!("{T}/projects/demo/vms/{vm_id}"))
        .await;

    let path = node_dir.path().display().to_string();
    seen.assert_free_of(&[HOST, PROVIDER, &uuid, "pool-sweep-secret", &path]);
    let all = seen.all();
    assert!(all.contains("defined domain swept"), "{all}");
    assert!(all.contains("image `ghost`"), "{all}");
}
