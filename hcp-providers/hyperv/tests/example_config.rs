//! `examples/config/hyperv.yaml` builds an engine with the `hyperv` provider kind and runs a VM
//! on the test host (its ports swapped for the test host's free ones).

mod common;

use std::path::Path;
use std::time::Duration;

use hcp_core::store::Scope;
use hcp_core::{Config, Engine, JobState, Principal, ProjectId, RequestContext, VmSpec};

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
    let (_dir, secrets) = common::secrets_dir();
    config.secrets = secrets;
    let engine = hcp_provider_hyperv::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
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
