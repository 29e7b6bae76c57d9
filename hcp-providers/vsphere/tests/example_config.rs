//! `examples/config/vsphere.yaml` builds an engine with the `vsphere` provider kind and runs a VM
//! on vcsim (the URL, login and files swapped for the test peer's), as jobs through the engine.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Peer, USER};
use hcp_core::store::Scope;
use hcp_core::testkit::KubernetesExample;
use hcp_core::{
    Config, Engine, Image, JobState, NetworkAttachment, Principal, ProjectId, RequestContext,
    VmSpec,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_hosts_file_runs_a_vm_on_vcsim() {
    let peer = Peer::start(1);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/vsphere.yaml");
    let mut config = Config::from_file(&file).unwrap();
    let settings = &mut config.providers[0].settings;
    assert_eq!(settings["url"], "https://127.0.0.1:18700/sdk");
    settings["url"] = json!(peer.url());
    settings["username"] = json!(USER);
    settings["password_file"] = json!(peer.dir.path().join("password"));
    settings["ca_file"] = json!(peer.ca_file());
    // An image in the catalog whose template vCenter does not have.
    config.catalog.images.push(Image {
        name: "debian-12".into(),
        os: "linux".into(),
        description: String::new(),
        min_disk_gib: 0,
    });
    let engine = hcp_provider_vsphere::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    engine.refresh_inventory().await.unwrap();
    let ctx = RequestContext::new("demo", Principal::new("alice"))
        .with_idempotency_key(Some("example-1".into()));
    let mut spec = VmSpec::new("example", "ubuntu-24.04", "small");
    spec.networks = vec![NetworkAttachment {
        network: "default".into(),
    }];
    let submitted = engine.create_vm(&ctx, spec).await.unwrap();
    let scope = Scope::Project(ProjectId::new("demo"));
    let job = engine
        .wait_job(&scope, &submitted.job_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "example"}));
    assert_eq!(seen["power"], "poweredOn", "{seen}");
    assert_eq!(seen["cpus"], 1, "{seen}");
    assert_eq!(seen["memory_mb"], 512, "{seen}");
    assert_eq!(seen["nics"], json!(["VM Network"]), "{seen}");
    let caps = engine.capabilities(Some("zone-a")).unwrap();
    assert!(caps.snapshot && caps.tags && caps.live_migration && !caps.cloud_init);
    assert!(!caps.console_vnc && !caps.console_webmks);

    // The unknown template: no host reports the image, so the request is refused before any
    // job exists, naming the image.
    let e = engine
        .create_vm(
            &RequestContext::new("demo", Principal::new("alice")),
            VmSpec::new("nodebian", "debian-12", "small"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("image"), "{e}");
    assert!(e.to_string().contains("debian-12"), "{e}");
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "nodebian"}));
    assert_eq!(seen["found"], false, "{seen}");
}

/// The vSphere example for Kubernetes (`deploy/kubernetes/examples/vsphere/`): the ConfigMap's
/// hosts file, with the vCenter URL, login, templates, ESXi host names and secret files swapped
/// for the test peer's, runs a VM, and the Secret ships placeholders for every file the hosts
/// file reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_example_configmap_runs_a_vm_on_vcsim() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/examples/vsphere");
    let example = KubernetesExample::load(&dir);
    for key in ["password_file", "ca_file"] {
        example.assert_secret_file(key);
    }
    let mut config = example.config;
    let provider = &mut config.providers[0];
    assert_eq!(provider.kind, "vsphere");
    let peer = Peer::start(1);
    let settings = &mut provider.settings;
    settings["url"] = json!(peer.url());
    settings["username"] = json!(USER);
    settings["password_file"] = json!(peer.dir.path().join("password"));
    settings["ca_file"] = json!(peer.ca_file());
    assert!(settings["images"]["ubuntu-24.04"]["template"].is_string());
    settings["images"]["ubuntu-24.04"] = json!({"template": common::IMAGE});
    for (host, esxi) in provider.hosts.iter_mut().zip(["DC0_C0_H0", "DC0_C0_H1"]) {
        assert!(host.settings["host"].is_string(), "{host:?}");
        host.settings["host"] = json!(esxi);
    }
    let engine = hcp_provider_vsphere::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    engine.refresh_inventory().await.unwrap();
    let ctx = RequestContext::new("infra", Principal::new("alice"));
    let submitted = engine
        .create_vm(&ctx, VmSpec::new("k8s-example", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let job = engine
        .wait_job(
            &Scope::Project(ProjectId::new("infra")),
            &submitted.job_id,
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "k8s-example"}));
    assert_eq!(seen["power"], "poweredOn", "{seen}");
}
