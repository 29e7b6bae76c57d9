//! The simulator passes the whole provider conformance suite, with every capability and with a
//! narrowed set, in memory and with a shared state file.

use std::sync::Arc;

use hcp_core::Provider;
use hcp_core::testkit::{Fixture, run_all};
use hcp_provider_sim::{SimHost, SimProvider, SimSettings};

fn hosts() -> Vec<SimHost> {
    vec![
        SimHost::new("h1", "zone-a", 16, 32768),
        SimHost::new("h2", "zone-a", 16, 32768),
    ]
}

fn fixture() -> Fixture {
    Fixture::new("h1", "ubuntu-24.04").with_other_host("h2")
}

#[tokio::test]
async fn full_capabilities_in_memory() {
    let p: Arc<dyn Provider> =
        Arc::new(SimProvider::new("sim", SimSettings::default(), hosts()).unwrap());
    run_all(p, &fixture()).await.unwrap();
}

#[tokio::test]
async fn narrowed_capabilities_refuse_what_is_not_declared() {
    let settings = SimSettings {
        disable: vec![
            "snapshot".into(),
            "live_migration".into(),
            "cloud_init".into(),
        ],
        ..Default::default()
    };
    let p: Arc<dyn Provider> = Arc::new(SimProvider::new("sim-small", settings, hosts()).unwrap());
    assert!(!p.capabilities().snapshot);
    run_all(p, &fixture()).await.unwrap();
}

#[tokio::test]
async fn state_file_backend_passes_too() {
    let dir = tempfile::tempdir().unwrap();
    let settings = SimSettings {
        state_file: Some(dir.path().join("sim.json")),
        ..Default::default()
    };
    let p: Arc<dyn Provider> = Arc::new(SimProvider::new("sim", settings, hosts()).unwrap());
    run_all(p, &fixture()).await.unwrap();
}
