//! Leader election on the real PostgreSQL (`HCP_TEST_DATABASE_URL`, default
//! postgres://postgres@127.0.0.1:5432/test): two electors on one lease; the leader's renewals
//! stop (as when its process dies), and the other takes over within one lease period.
//! `HCP_TEST_LEADER_LEASE_MS` sets the lease (default 3000). A missing PostgreSQL fails these
//! tests.

use std::sync::Arc;
use std::time::Duration;

use hcp_core::Leadership;
use hcp_store_postgres::{LeaderElector, PostgresStore, StoreOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn url() -> String {
    std::env::var("HCP_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn lease() -> Duration {
    Duration::from_millis(
        std::env::var("HCP_TEST_LEADER_LEASE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000),
    )
}

async fn store() -> PostgresStore {
    let schema = format!(
        "hcp_t_{}_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        uuid::Uuid::new_v4().simple()
    );
    PostgresStore::connect(
        &url(),
        StoreOptions {
            schema,
            max_connections: 4,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("PostgreSQL at {} must be running: {e:#}", url()))
}

/// Waits until `cond` holds, checking that the two electors are never leaders at once; returns
/// how long it took. Fails after `limit`.
async fn until(
    a: &Arc<LeaderElector>,
    b: &Arc<LeaderElector>,
    limit: Duration,
    cond: impl Fn() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        assert!(
            !(a.is_leader() && b.is_leader()),
            "two leaders at once ({} and {})",
            a.holder(),
            b.holder()
        );
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_moves_within_one_lease_period_when_the_leader_stops_renewing() {
    let lease = lease();
    let store = store().await;
    let a = store.leader_elector("singletons", "replica-a", lease);
    let b = store.leader_elector("singletons", "replica-b", lease);
    let a_renewals = CancellationToken::new();
    let b_renewals = CancellationToken::new();
    let a_task = a.spawn(a_renewals.clone());
    until(&a, &b, lease * 4, || a.is_leader()).await;
    let _b_task = b.spawn(b_renewals.clone());
    // B keeps trying for two lease periods while A renews: A stays the only leader.
    let watch = Instant::now();
    while watch.elapsed() < lease * 2 {
        assert!(a.is_leader(), "the leader keeps its lease while it renews");
        assert!(!b.is_leader(), "the follower does not take a held lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token_a = a.token().expect("A holds a token");

    // A's renewals stop without a release, as when its process dies.
    a_task.abort();
    let _ = a_task.await;
    let took = until(&a, &b, lease * 2, || b.is_leader()).await;
    eprintln!("takeover after the leader stopped renewing: {took:?} (lease {lease:?})");
    assert!(
        took <= lease,
        "leadership moved in {took:?}, more than one lease period ({lease:?})"
    );
    assert!(
        !a.is_leader(),
        "the stopped leader no longer believes it leads"
    );
    let token_b = b.token().expect("B holds a token");
    assert!(
        token_b > token_a,
        "the fencing token grows ({token_a} → {token_b})"
    );

    // A graceful release hands over at once: A (renewing again) takes it at its next attempt.
    let _a_task = a.spawn(a_renewals.clone());
    b.release().await;
    assert!(!b.is_leader(), "a released elector is not the leader");
    let handover = until(&a, &b, lease * 2, || a.is_leader()).await;
    eprintln!("handover after a release: {handover:?}");
    assert!(
        handover < lease / 2,
        "a released lease is taken before it would have run out ({handover:?})"
    );
    assert!(a.token().expect("A leads again") > token_b);
    a_renewals.cancel();
}

#[tokio::test]
async fn a_held_lease_is_refused_to_others_and_a_released_one_moves_on() {
    let store = store().await;
    let a = store.leader_elector("singletons", "replica-a", Duration::from_secs(30));
    assert!(
        !a.is_leader(),
        "an elector is not leader before its first attempt"
    );
    assert_eq!(a.try_acquire().await.unwrap(), Some(1));
    assert!(a.is_leader());
    let b = store.leader_elector("singletons", "replica-b", Duration::from_secs(30));
    assert_eq!(b.try_acquire().await.unwrap(), None);
    assert!(!b.is_leader());
    // Renewal keeps the token.
    assert_eq!(a.try_acquire().await.unwrap(), Some(1));
    a.release().await;
    assert_eq!(b.try_acquire().await.unwrap(), Some(2));
}

/// A deposed leader's duty writes are refused by the store: its fence (lease name and old
/// token) no longer matches the lease row, so its purge and its repair submission write
/// nothing, while the new leader's go through. Without a fence (requests) nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leaders_duty_writes_are_refused_by_the_store() {
    use hcp_core::store::Store;
    use hcp_core::{CODE_LEADERSHIP_LOST, ErrorKind};
    let lease = lease();
    let store = store().await;
    let a = store.leader_elector("singletons", "replica-a", lease);
    let b = store.leader_elector("singletons", "replica-b", lease);
    let a_renewals = CancellationToken::new();
    let a_task = a.spawn(a_renewals.clone());
    until(&a, &b, lease * 4, || a.is_leader()).await;
    // A leads: its fenced writes pass.
    let stale = a.fence().expect("the leader has a fence");
    assert_eq!(stale.lease, "singletons");
    let now = chrono::Utc::now();
    store.purge(now, now, Some(&stale)).await.unwrap();
    let mut first = hcp_core::testkit::store::create("alpha", "fenced-1");
    first.fence = Some(stale.clone());
    store.submit(first).await.unwrap();

    // A stops renewing (paused, then deposed); B takes the lease over.
    a_task.abort();
    let _ = a_task.await;
    let _b_task = b.spawn(CancellationToken::new());
    until(&a, &b, lease * 3, || b.is_leader()).await;
    let fresh = b.fence().expect("the new leader has a fence");
    assert!(fresh.token > stale.token);

    // A, resumed with its old fence, writes nothing.
    let e = store.purge(now, now, Some(&stale)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(e.code(), CODE_LEADERSHIP_LOST, "{e}");
    let e = store.purge_events(now, Some(&stale)).await.unwrap_err();
    assert_eq!(e.code(), CODE_LEADERSHIP_LOST, "{e}");
    let mut repair = hcp_core::testkit::store::create("alpha", "fenced-2");
    repair.fence = Some(stale.clone());
    let e = store.submit(repair).await.unwrap_err();
    assert_eq!(e.code(), CODE_LEADERSHIP_LOST, "{e}");
    assert!(
        store
            .find_vm_by_name(&hcp_core::ProjectId::new("alpha"), "fenced-2")
            .await
            .unwrap()
            .is_none(),
        "a refused repair writes no VM"
    );
    // The reconciler's own writes (a VM rebuilt from its mark, an observation) likewise.
    let rebuilt = hcp_core::testkit::store::vm("alpha", "rebuilt");
    let e = store
        .put_vm_fenced(rebuilt.clone(), None, Some(&stale))
        .await
        .unwrap_err();
    assert_eq!(e.code(), CODE_LEADERSHIP_LOST, "{e}");
    let observed = store
        .find_vm_by_name(&hcp_core::ProjectId::new("alpha"), "fenced-1")
        .await
        .unwrap()
        .expect("the first repair's VM");
    let mut seen = observed.clone();
    seen.power = hcp_core::PowerState::Stopped;
    let e = store
        .put_vm_fenced(seen.clone(), Some(observed.generation), Some(&stale))
        .await
        .unwrap_err();
    assert_eq!(e.code(), CODE_LEADERSHIP_LOST, "{e}");
    assert!(
        store
            .find_vm_by_name(&hcp_core::ProjectId::new("alpha"), "rebuilt")
            .await
            .unwrap()
            .is_none(),
        "a refused rebuild writes no VM"
    );
    let kept = store
        .get_vm(&hcp_core::store::Scope::All, &observed.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (kept.generation, kept.power),
        (observed.generation, observed.power),
        "a refused observation changes nothing"
    );
    store
        .put_vm_fenced(rebuilt, None, Some(&fresh))
        .await
        .unwrap();
    let seen = store
        .put_vm_fenced(seen, Some(observed.generation), Some(&fresh))
        .await
        .unwrap();
    assert_eq!(seen.power, hcp_core::PowerState::Stopped);
    // B's fence, and no fence at all, pass.
    store.purge(now, now, Some(&fresh)).await.unwrap();
    let mut ok = hcp_core::testkit::store::create("alpha", "fenced-3");
    ok.fence = Some(fresh);
    store.submit(ok).await.unwrap();
    store
        .submit(hcp_core::testkit::store::create("alpha", "unfenced"))
        .await
        .unwrap();
    a_renewals.cancel();
}
