//! The whole provider conformance suite of hcp-core, and its snapshot life cycle, against
//! govmomi's vCenter simulator. It runs alone in its test binary because its checks count every
//! VM on the host.

mod common;

use common::{HOST, IMAGE, OTHER, Peer, dyn_provider};
use hcp_core::testkit::{Fixture, run_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_vcsim() {
    let peer = Peer::start(2);
    let p = peer.provider();
    let f = Fixture::new(HOST, IMAGE).with_other_host(OTHER);
    run_all(dyn_provider(&p), &f)
        .await
        .unwrap_or_else(|e| panic!("conformance on vcsim: {e:?}"));
    p.shutdown().await.expect("logout");
}
