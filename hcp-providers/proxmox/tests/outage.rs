//! A Proxmox cluster whose API goes away: its hosts are reported failed with a temporary error
//! within a bounded time, while another provider in the same engine keeps working.

mod common;

use std::time::{Duration, Instant};

use common::Peer;
use hcp_core::store::Scope;
use hcp_core::{Config, Engine, JobState, Principal, ProjectId, RequestContext, VmSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_leaves_other_providers_working() {
    let peer = Peer::start(0.0);
    let yaml = format!(
        r#"
providers:
  - name: lab
    kind: sim
    settings: {{images: [ubuntu-24.04]}}
    hosts: [{{name: lab-1, zone: zone-s, vcpus: 8, memory_mib: 16384}}]
  - name: pve
    kind: proxmox
    settings:
      url: {url}
      token_id: "{token_id}"
      token_secret_file: {secret}
      ca_file: {ca}
      request_timeout: 2s
    hosts: [{{name: pve1, zone: zone-p}}]
zones: [{{name: zone-s}}, {{name: zone-p}}]
projects: [{{name: demo}}]
catalog:
  images: [{{name: ubuntu-24.04}}]
  flavors: [{{name: small, vcpus: 1, memory_mib: 128, disk_gib: 1}}]
"#,
        url = peer.url(),
        token_id = peer.info["token_id"].as_str().unwrap(),
        secret = peer.info["token_secret_file"].as_str().unwrap(),
        ca = peer.info["ca_file"].as_str().unwrap(),
    );
    let config = Config::from_yaml(&yaml, "outage.yaml").unwrap();
    let engine =
        hcp_provider_proxmox::register(hcp_provider_sim::register(Engine::builder(config)))
            .without_background_reconcile()
            .build()
            .await
            .unwrap();
    let before = engine.refresh_inventory().await.unwrap();
    assert!(before.hosts_failed.is_empty(), "{:?}", before.hosts_failed);

    drop(peer);
    let started = Instant::now();
    let during = engine.refresh_inventory().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(15), "bounded");
    assert_eq!(during.hosts_ok, 1, "the simulator's host still answers");
    assert_eq!(during.hosts_failed.len(), 1, "{:?}", during.hosts_failed);
    let (host, why) = &during.hosts_failed[0];
    assert!(host.contains("pve1"), "{host}");
    assert!(why.contains("temporary"), "{why}");

    let ctx = RequestContext::new("demo", Principal::new("alice"));
    let mut spec = VmSpec::new("still-works", "ubuntu-24.04", "small");
    spec.zone = Some("zone-s".into());
    let submitted = engine.create_vm(&ctx, spec).await.unwrap();
    let job = engine
        .wait_job(
            &Scope::Project(ProjectId::new("demo")),
            &submitted.job_id,
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
}
