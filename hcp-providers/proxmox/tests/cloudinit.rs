//! Cloud-init against fakepve: user-data as a snippet named by `cicustom`, `ipconfig0`, and the
//! `ciuser` and `sshkeys` of a `#cloud-config`, read back by proxmoxer; `cloud_init` declared only
//! with a snippets storage; a template without a cloud-init drive refused.

mod common;

use std::sync::Arc;

use common::{IMAGE, Lines, NODE, Peer};
use hcp_core::{
    CreateVm, DeleteVm, ErrorKind, HcpMark, HostInventory, JobId, OpContext, ProjectId, Provider,
    Resources, VmId, VmTarget,
};
use serde_json::json;

const USER_DATA: &str = "#cloud-config\nusers:\n  - default\n  - name: ops\n    ssh_authorized_keys:\n      - ssh-ed25519 AAAAC3Nza ops@example\npackages: [nginx]\n";

fn args(name: &str, image: &str) -> CreateVm {
    let mark = HcpMark::new(VmId::generate(), ProjectId::new("demo"));
    let small = Resources {
        vcpus: 1,
        memory_mib: 128,
        disk_gib: 1,
    };
    let mut a = CreateVm::new(mark, NODE, name, image, small);
    a.user_data = Some(USER_DATA.to_string());
    a
}

fn ctx() -> OpContext {
    OpContext::new(JobId::generate(), Arc::new(Lines::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_snippets_storage_cloud_init_is_not_declared_and_user_data_is_refused() {
    let peer = Peer::start(0.0);
    let p = peer.provider();
    assert!(!p.capabilities().cloud_init);
    let hosts = p.list_hosts().await.unwrap();
    assert!(hosts.iter().all(|h| !h.capabilities.cloud_init));
    let e = p
        .create_vm(&ctx(), args("ci-none", IMAGE))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
    let inv = p.host_inventory(HostInventory::new(NODE)).await.unwrap();
    assert!(
        inv.vms.iter().all(|v| v.name != "ci-none"),
        "nothing cloned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_data_travels_as_a_snippet_and_proxmoxer_reads_the_cloud_init_keys() {
    let peer = Peer::start(0.0);
    let dir = tempfile::tempdir().unwrap();
    let p = peer.provider_with(peer.settings_with(json!({
        "snippets_storage": "local",
        "snippets_dir": dir.path(),
    })));
    assert!(p.capabilities().cloud_init);
    let a = args("ci-1", IMAGE);
    let created = p.create_vm(&ctx(), a.clone()).await.unwrap();
    let file = format!("hcp-{}-user.yaml", a.vm_id);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(&file)).unwrap(),
        USER_DATA,
        "the snippet holds the user-data as given"
    );
    let vm = peer.proxmoxer(json!({"op": "vm", "node": NODE, "vmid": created.native_id}));
    let config = &vm["config"];
    assert_eq!(config["cicustom"], format!("user=local:snippets/{file}"));
    assert_eq!(config["ipconfig0"], "ip=dhcp");
    assert_eq!(config["ciuser"], "ops");
    assert_eq!(
        config["sshkeys"], "ssh-ed25519%20AAAAC3Nza%20ops%40example%0A",
        "URL-encoded as PVE stores them"
    );
    assert!(
        config["ide2"].as_str().unwrap().contains("cloudinit"),
        "{config}"
    );
    let target = VmTarget {
        vm_id: a.vm_id.clone(),
        name: a.name.clone(),
        host: a.host.clone(),
        native_id: Some(created.native_id.clone()),
    };
    p.delete_vm(&ctx(), DeleteVm::new(target).with_force(true))
        .await
        .unwrap();
    assert!(
        !dir.path().join(&file).exists(),
        "deleting the VM removes its snippet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_without_a_cloud_init_drive_is_refused_before_anything_is_cloned() {
    let peer = Peer::start(0.0);
    let dir = tempfile::tempdir().unwrap();
    let p = peer.provider_with(peer.settings_with(json!({
        "snippets_storage": "local",
        "snippets_dir": dir.path(),
    })));
    let a = args("ci-debian", "debian-12");
    let e = p.create_vm(&ctx(), a.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("image"), "{e}");
    assert!(e.message().contains("cloud-init drive"), "{e}");
    let inv = p.host_inventory(HostInventory::new(NODE)).await.unwrap();
    assert!(
        inv.vms.iter().all(|v| v.name != "ci-debian"),
        "clone removed"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_runs_a_create_with_user_data_when_a_snippets_storage_is_configured() {
    use hcp_core::store::Scope;
    use hcp_core::{Config, Engine, JobState, Principal, RequestContext, VmSpec};
    let peer = Peer::start(0.01);
    let dir = tempfile::tempdir().unwrap();
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/proxmox.yaml");
    let mut config = Config::from_file(&file).unwrap();
    let settings = &mut config.providers[0].settings;
    for key in ["url", "token_secret_file", "ca_file"] {
        settings[key] = peer.info[key].clone();
    }
    settings["snippets_storage"] = json!("local");
    settings["snippets_dir"] = json!(dir.path());
    let engine = hcp_provider_proxmox::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    assert!(engine.capabilities(Some("zone-a")).unwrap().cloud_init);
    let ctx = RequestContext::new("demo", Principal::new("alice"));
    let spec = VmSpec::new("cloudy", IMAGE, "small").with_user_data(USER_DATA);
    let submitted = engine.create_vm(&ctx, spec).await.unwrap();
    let scope = Scope::Project(ProjectId::new("demo"));
    let job = engine
        .wait_job(
            &scope,
            &submitted.job_id,
            Some(std::time::Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let snippets: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(snippets.len(), 1, "{snippets:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join(&snippets[0])).unwrap(),
        USER_DATA
    );
}
