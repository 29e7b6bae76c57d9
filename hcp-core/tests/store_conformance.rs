//! The in-memory store runs the whole store conformance suite.

use std::sync::Arc;

use hcp_core::store::{MemoryStore, Store};

async fn fresh() -> Arc<dyn Store> {
    Arc::new(MemoryStore::default())
}

hcp_core::store_conformance_tests!(fresh);

// The audit stream section: retention by time and the outbox.
hcp_core::store_event_conformance_tests!(fresh);

mod server_groups {
    use super::fresh;
    hcp_core::store_group_conformance_tests!(fresh);

    #[tokio::test]
    async fn run_all_groups_passes_on_the_memory_store() {
        hcp_core::testkit::store::run_all_groups(fresh)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn run_all_passes_on_the_memory_store() {
    hcp_core::testkit::store::run_all(fresh).await.unwrap();
}
