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

/// Jobs and VMs are cloned by hand (`clone_from` keeps the target's text allocations): a copy
/// into a record that differs in every field equals the source.
#[test]
fn a_record_cloned_into_another_equals_its_source() {
    use hcp_core::testkit::store::{job, vm};
    use hcp_core::{
        DesiredState, JobAction, JobLease, JobState, NetworkAttachment, PowerState, Principal,
        ServerGroupId,
    };

    let mut a = vm("p1", "a");
    std::sync::Arc::make_mut(&mut a.spec).flavor = None;
    let mut b = vm("p2", "bee");
    let spec = std::sync::Arc::make_mut(&mut b.spec);
    spec.image = "debian-12".into();
    spec.vcpus = Some(4);
    spec.memory_mib = Some(8192);
    spec.disk_gib = Some(80);
    spec.networks = vec![NetworkAttachment {
        network: "lan".into(),
    }];
    spec.zone = Some("z2".into());
    spec.tags.insert("team".into(), "infra".into());
    spec.user_data = Some("#cloud-config".into());
    spec.server_group = Some(ServerGroupId::new("grp-1"));
    b.resources.vcpus = 4;
    b.zone = "z2".into();
    b.desired = DesiredState::Deleted;
    b.desired_power = PowerState::Stopped;
    b.power = PowerState::Running;
    b.present = true;
    b.binding.provider = "libvirt".into();
    b.binding.host = "kvm-7".into();
    b.binding.native_id = Some("uuid-7".into());
    b.binding.member_host = Some("m-2".into());
    b.generation = 9;
    let mut copy = a.clone();
    copy.clone_from(&b);
    assert_eq!(copy, b);
    copy.clone_from(&a);
    assert_eq!(copy, a);

    let ja = job(&a);
    let mut jb = job(&b);
    jb.action = JobAction::Delete { force: true };
    jb.state = JobState::Running;
    jb.attempts = 2;
    jb.progress = 40;
    jb.principal = Principal::new("bob");
    jb.idempotency_key = Some("k-1".into());
    jb.started_at = Some(jb.created_at);
    jb.generation = 3;
    jb.lease = Some(JobLease {
        holder: "replica-b".into(),
        token: 7,
        until: jb.created_at,
    });
    jb.cancel_requested = Some(Principal::new("carol"));
    let mut copy = ja.clone();
    copy.clone_from(&jb);
    assert_eq!(copy, jb);
    copy.clone_from(&ja);
    assert_eq!(copy, ja);
}

/// A snapshot's unfinished jobs join the claim rules' index on import: the store lists them
/// among its unfinished jobs (oldest first, whatever their VM) and as their VM's, and an ended
/// one is in neither list.
#[tokio::test]
async fn imported_unfinished_jobs_are_indexed_like_submitted_ones() {
    use hcp_core::JobState;
    use hcp_core::store::StoreSnapshot;
    use hcp_core::testkit::store::{job, vm};

    let (a, b) = (vm("p1", "a"), vm("p1", "b"));
    // Made in this order, so their ids sort in it.
    let first = job(&b);
    let second = job(&a);
    let mut ended = job(&a);
    ended.state = JobState::Succeeded;
    let third = job(&b);
    let store = MemoryStore::default();
    store.import(StoreSnapshot {
        // Imported out of order.
        jobs: vec![
            (third.clone(), Vec::new()),
            (ended, Vec::new()),
            (first.clone(), Vec::new()),
            (second.clone(), Vec::new()),
        ],
        idempotency: Vec::new(),
        groups: Vec::new(),
    });
    let ids = |jobs: Vec<hcp_core::Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.unfinished_jobs().await.unwrap()),
        [first.id.clone(), second.id.clone(), third.id.clone()]
    );
    assert_eq!(
        ids(store.unfinished_jobs_of(&b.id).await.unwrap()),
        [first.id, third.id]
    );
    assert_eq!(
        ids(store.unfinished_jobs_of(&a.id).await.unwrap()),
        [second.id]
    );
}

/// A project's events come from the store's index of them: through eviction (the store keeps
/// `max_events`) and a retention pass that drops events out of order, a project's list, from
/// any cursor and with any limit, is the full stream filtered by the project.
#[tokio::test]
async fn a_projects_events_match_the_filtered_stream_through_eviction_and_retention() {
    use chrono::{Duration, Utc};
    use hcp_core::{Event, EventFilter, EventKind, ProjectId, Resources};

    let store = MemoryStore::new(1000, 50);
    let now = Utc::now();
    let append = |i: usize| {
        let project = match i % 4 {
            0 | 1 => Some(ProjectId::new("a")),
            2 => Some(ProjectId::new("b")),
            _ => None,
        };
        // Every third event is old, so retention drops events from all over the stream.
        let at = if i.is_multiple_of(3) {
            now - Duration::hours(48)
        } else {
            now
        };
        store.append_event(Event {
            seq: 0,
            at,
            project,
            vm_id: None,
            principal: None,
            kind: EventKind::VmCreated {
                resources: Resources::default(),
            },
        })
    };
    let check = |what: &'static str| {
        let store = &store;
        async move {
            let all = store.list_events(&EventFilter::default()).await.unwrap();
            for project in ["a", "b", "nobody"] {
                for after in [0, 10, 60, 75, 200] {
                    for limit in [0, 1, 7] {
                        let filter = EventFilter {
                            after,
                            project: Some(ProjectId::new(project)),
                            vm_id: None,
                            limit,
                        };
                        let want: Vec<u64> = all
                            .iter()
                            .filter(|e| e.seq > after && filter.matches(e))
                            .take(if limit == 0 { usize::MAX } else { limit })
                            .map(|e| e.seq)
                            .collect();
                        let got: Vec<u64> = store
                            .list_events(&filter)
                            .await
                            .unwrap()
                            .iter()
                            .map(|e| e.seq)
                            .collect();
                        assert_eq!(got, want, "{what}: {project} after {after}, limit {limit}");
                    }
                }
            }
        }
    };
    for i in 0..120 {
        append(i).await.unwrap();
    }
    check("after eviction").await;
    let dropped = store
        .purge_events(now - Duration::hours(1), None)
        .await
        .unwrap();
    assert!(dropped > 0, "retention drops the old events");
    check("after retention").await;
    for i in 120..200 {
        append(i).await.unwrap();
    }
    check("after eviction past retention").await;
}
