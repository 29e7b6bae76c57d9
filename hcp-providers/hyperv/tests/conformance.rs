//! The whole provider conformance suite from hcp-core (with the snapshot lifecycle), against the
//! WinRM test host over HTTPS with NTLM and with Basic authentication.

mod common;

use std::sync::Arc;

use hcp_core::Provider;
use hcp_core::testkit::{Fixture, run_all};
use hcp_provider_hyperv::AuthKind;

fn fixture() -> Fixture {
    Fixture::new("hv1", "ubuntu-24.04").with_other_host("hv2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_over_https_with_ntlm() {
    let th = common::TestHost::start(2, None);
    let p: Arc<dyn Provider> = Arc::new(common::provider(&th, common::settings()));
    run_all(p, &fixture()).await.unwrap();
    let records = th.control("hv1", "records", None);
    assert_eq!(records["violations"], serde_json::json!([]), "{records}");
    let status = th.control("hv1", "status", None);
    assert!(
        status["max_concurrent_shells"].as_u64().unwrap() <= 4,
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_over_https_with_basic() {
    let th = common::TestHost::start(1, None);
    let settings = hcp_provider_hyperv::HypervSettings {
        auth: AuthKind::Basic,
        ..common::settings()
    };
    let p: Arc<dyn Provider> = Arc::new(common::provider(&th, settings));
    let f = Fixture::new("hv1", "ubuntu-24.04");
    run_all(p, &f).await.unwrap();
}
