//! `examples/config/proxmox.yaml` builds an engine with the `proxmox` provider kind and runs a VM
//! on fakepve (the URL and files swapped for the test peer's).

mod common;

use std::path::Path;
use std::time::Duration;

use common::Peer;
use hcp_core::store::Scope;
use hcp_core::testkit::KubernetesExample;
use hcp_core::{Config, Engine, JobState, Principal, ProjectId, RequestContext, VmSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_hosts_file_runs_a_vm_on_fakepve() {
    let peer = Peer::start(0.01);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/proxmox.yaml");
    let mut config = Config::from_file(&file).unwrap();
    let settings = &mut config.providers[0].settings;
    assert_eq!(settings["url"], "https://127.0.0.1:18006");
    for key in ["url", "token_secret_file", "ca_file"] {
        settings[key] = peer.info[key].clone();
    }
    let engine = hcp_provider_proxmox::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    let ctx = RequestContext::new("demo", Principal::new("alice"))
        .with_idempotency_key(Some("example-1".into()));
    let submitted = engine
        .create_vm(&ctx, VmSpec::new("example", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let scope = Scope::Project(ProjectId::new("demo"));
    let job = engine
        .wait_job(&scope, &submitted.job_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let caps = engine.capabilities(Some("zone-a")).unwrap();
    assert!(caps.snapshot && caps.tags && !caps.live_migration && !caps.cloud_init);
    assert!(caps.console_vnc, "VNC consoles through vncproxy");
    assert_eq!(caps.max_vcpus, Some(4), "the node's CPUs bound a VM");
    // A VM bigger than a node is refused before any job exists.
    let mut big = VmSpec::new("too-big", "ubuntu-24.04", "small");
    big.vcpus = Some(64);
    let e = engine
        .create_vm(&RequestContext::new("demo", Principal::new("alice")), big)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("vcpus"), "{e}");
    // Without a snippets storage user-data cannot be honoured: refused before any job exists.
    let with_user_data =
        VmSpec::new("cloudy", "ubuntu-24.04", "small").with_user_data("#cloud-config\n");
    let e = engine
        .create_vm(
            &RequestContext::new("demo", Principal::new("alice")),
            with_user_data,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::FeatureNotSupported, "{e}");
    assert!(e.to_string().contains("cloud_init"), "{e}");
}

/// The Proxmox VE example for Kubernetes (`deploy/kubernetes/examples/proxmox/`): the ConfigMap's
/// hosts file, with the API URL and secret files swapped for the test peer's, runs a VM, and the
/// Secret ships placeholders for every file the hosts file reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_example_configmap_runs_a_vm_on_fakepve() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/examples/proxmox");
    let example = KubernetesExample::load(&dir);
    for key in ["token_secret_file", "ca_file"] {
        example.assert_secret_file(key);
    }
    let mut config = example.config;
    assert_eq!(config.providers[0].kind, "proxmox");
    let settings = &mut config.providers[0].settings;
    let peer = Peer::start(0.01);
    for key in ["url", "token_id", "token_secret_file", "ca_file"] {
        settings[key] = peer.info[key].clone();
    }
    let engine = hcp_provider_proxmox::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
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
}
