//! The whole provider conformance suite of hcp-core (and its snapshot lifecycle) against fakepve, with tasks that take real
//! (scaled) time so task following, log streaming and the write cap are exercised. It runs alone
//! in its test binary because its checks count every VM on the node.

mod common;

use std::time::Duration;

use common::{IMAGE, NODE, Peer, dyn_provider};
use hcp_core::testkit::{Fixture, run_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_fakepve() {
    let peer = Peer::start(0.01);
    let p = peer.provider();
    let f = Fixture::new(NODE, IMAGE).with_graceful_timeout(Duration::from_secs(5));
    run_all(dyn_provider(&p), &f)
        .await
        .unwrap_or_else(|e| panic!("conformance on fakepve: {e}"));
    assert!(p.peak_parallel(NODE).unwrap() <= 2);
}
