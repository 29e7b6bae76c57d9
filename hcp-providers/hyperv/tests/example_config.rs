//! `examples/config/hyperv.yaml` and the Kubernetes example ConfigMap build an engine with the
//! `hyperv` provider kind and run a VM on the test host (their hosts swapped for the test host's).

mod common;

use std::path::Path;
use std::time::Duration;

use hcp_core::store::Scope;
use hcp_core::testkit::KubernetesExample;
use hcp_core::{Config, JobState, Principal, ProjectId, RequestContext, VmSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_hosts_file_runs_a_vm_on_the_test_host() {
    let th = common::TestHost::start(2, None);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/hyperv.yaml");
    let mut config = Config::from_file(&file).unwrap();
    for host in &mut config.providers[0].hosts {
        assert_eq!(
            host.settings["port"].as_u64().map(|p| p >= 15986),
            Some(true)
        );
        host.settings["port"] = th.port(&host.name).into();
    }
    let (engine, _dir) = common::engine(config).await;
    let ctx = RequestContext::new("demo", Principal::new("alice"))
        .with_idempotency_key(Some("example-1".into()));
    let submitted = engine
        .create_vm(&ctx, VmSpec::new("example", "windows-2022", "medium"))
        .await
        .unwrap();
    let scope = Scope::Project(ProjectId::new("demo"));
    let job = engine
        .wait_job(&scope, &submitted.job_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let caps = engine.capabilities(Some("zone-a")).unwrap();
    assert!(caps.console_rdp && caps.snapshot && caps.cloud_init && !caps.live_migration);
}

/// The Hyper-V example for Kubernetes (`deploy/kubernetes/examples/hyperv/`): the ConfigMap's
/// `hosts.yaml` loads with HCP's own config loader, builds an engine with the `hyperv` provider
/// and runs a VM on the test host (each host's address, port and certificate check swapped for
/// the test host's); the Secret beside it holds the WinRM credentials the provider reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_example_configmap_runs_a_vm_on_the_test_host() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/examples/hyperv");
    // The same names as the simulator's ConfigMap and Secret, so deployment.yaml mounts them.
    let example = KubernetesExample::load(&dir);
    for key in ["winrm_username", "winrm_password"] {
        example.assert_placeholder(key);
    }
    let mut config = example.config;
    assert_eq!(config.providers.len(), 1);
    assert_eq!(config.providers[0].kind, "hyperv");
    let th = common::TestHost::start(config.providers[0].hosts.len(), None);
    assert_eq!(config.providers[0].settings["tls_verify"], true);
    config.providers[0].settings["tls_verify"] = false.into();
    for (i, host) in config.providers[0].hosts.iter_mut().enumerate() {
        assert_eq!(host.settings["port"].as_u64(), Some(5986), "{}", host.name);
        host.settings["address"] = "127.0.0.1".into();
        host.settings["port"] = th.port(&format!("hv{}", i + 1)).into();
    }
    let (engine, _secrets_dir) = common::engine(config).await;
    let ctx = RequestContext::new("infra", Principal::new("alice"));
    let submitted = engine
        .create_vm(&ctx, VmSpec::new("k8s-example", "windows-2022", "medium"))
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
