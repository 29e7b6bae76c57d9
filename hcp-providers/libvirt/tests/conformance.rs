//! The whole provider conformance suite of hcp-core against the real peer: libvirtd on
//! qemu:///system with real QEMU (TCG) domains, prepared by `setup.sh`. It runs alone in its test
//! binary because its checks count every domain on the host.

mod common;

use std::time::Duration;

use common::{Cleanup, IMAGE, QEMU, dyn_provider, qemu_provider, require_qemu};
use hcp_core::testkit::{Fixture, run_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_qemu_system() {
    require_qemu();
    // Guests have no OS and ignore ACPI: a short graceful timeout keeps stops quick.
    let f = Fixture::new("local", IMAGE).with_graceful_timeout(Duration::from_secs(1));
    let _guard = Cleanup::new(QEMU, &format!("{}-", f.prefix));
    let p = qemu_provider();
    run_all(dyn_provider(&p), &f)
        .await
        .unwrap_or_else(|e| panic!("conformance on {QEMU}: {e}"));
}
