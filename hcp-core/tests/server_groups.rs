//! Server groups on the simulator's demo inventory (zone-a: hosts sim-a1 and sim-a2; zone-b:
//! sim-b1 alone): placement keeps hard policies and prefers soft ones, a hard policy that cannot
//! be met is refused before any job exists, concurrent creates into one group never break it,
//! membership follows VM deletes, and groups are private to their project.

use std::collections::HashSet;
use std::time::Duration;

use hcp_core::store::{JobFilter, PageRequest, Scope};
use hcp_core::{
    CODE_SERVER_GROUP_NOT_EMPTY, CODE_SERVER_GROUP_POLICY, Engine, ErrorKind, EventFilter,
    EventKind, GroupPolicy, GroupStrength, JobState, NewServerGroup, Principal, RequestContext,
    ServerGroup, ServerGroupId, VmId, VmSpec,
};

async fn engine() -> Engine {
    let mut config = hcp_provider_sim::demo_config();
    let mut other = config.projects[0].clone();
    other.name = "other".into();
    config.projects.push(other);
    hcp_provider_sim::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap()
}

fn alice() -> RequestContext {
    RequestContext::new("demo", Principal::new("alice"))
}

fn mallory() -> RequestContext {
    RequestContext::new("other", Principal::new("mallory"))
}

async fn group(
    engine: &Engine,
    name: &str,
    policy: GroupPolicy,
    strength: GroupStrength,
) -> ServerGroup {
    engine
        .create_server_group(
            &alice(),
            NewServerGroup {
                name: name.into(),
                policy,
                strength,
            },
        )
        .await
        .unwrap()
}

fn in_group(name: &str, zone: &str, group: &ServerGroupId) -> VmSpec {
    VmSpec {
        server_group: Some(group.clone()),
        ..VmSpec::new(name, "ubuntu-24.04", "small").with_zone(zone)
    }
}

/// Creates a VM into `group` in `zone` and waits for its job to succeed.
async fn create(engine: &Engine, name: &str, zone: &str, group: &ServerGroupId) -> VmId {
    let s = engine
        .create_vm(&alice(), in_group(name, zone, group))
        .await
        .unwrap();
    let job = engine
        .wait_job(&Scope::All, &s.job_id, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    s.vm_id
}

async fn host_of(engine: &Engine, vm: &VmId) -> String {
    engine
        .get_vm(&Scope::All, vm)
        .await
        .unwrap()
        .binding
        .host
        .to_string()
}

async fn job_count(engine: &Engine) -> usize {
    engine
        .list_jobs(&Scope::All, &JobFilter::default(), &PageRequest::all())
        .await
        .unwrap()
        .items
        .len()
}

#[tokio::test]
async fn hard_anti_affinity_refuses_the_third_vm_in_a_zone_of_two_hosts_before_any_job() {
    let engine = engine().await;
    let g = group(
        &engine,
        "web",
        GroupPolicy::AntiAffinity,
        GroupStrength::Hard,
    )
    .await;
    let a = create(&engine, "web-1", "zone-a", &g.id).await;
    let b = create(&engine, "web-2", "zone-a", &g.id).await;
    assert_ne!(host_of(&engine, &a).await, host_of(&engine, &b).await);

    let jobs = job_count(&engine).await;
    let e = engine
        .create_vm(&alice(), in_group("web-3", "zone-a", &g.id))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(e.code(), CODE_SERVER_GROUP_POLICY, "{e}");
    assert_eq!(e.field(), Some("server_group"));
    assert!(
        e.message().contains("`web`") && e.message().contains("hard anti-affinity"),
        "the reason names the group and its policy: {e}"
    );
    assert!(
        !e.message().contains("sim-a"),
        "the reason never names a host: {e}"
    );
    assert_eq!(job_count(&engine).await, jobs, "no job was created");
    let got = engine.get_server_group(&Scope::All, &g.id).await.unwrap();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(got.members, want);
}

#[tokio::test]
async fn hard_affinity_keeps_members_on_one_host_and_soft_policies_only_prefer() {
    let engine = engine().await;
    let aff = group(&engine, "db", GroupPolicy::Affinity, GroupStrength::Hard).await;
    let mut hosts = HashSet::new();
    for i in 0..3 {
        let vm = create(&engine, &format!("db-{i}"), "zone-a", &aff.id).await;
        hosts.insert(host_of(&engine, &vm).await);
    }
    assert_eq!(hosts.len(), 1, "hard affinity: one host for all: {hosts:?}");
    // The members' host is in zone-a: a member asked into zone-b cannot be placed with them.
    let e = engine
        .create_vm(&alice(), in_group("db-b", "zone-b", &aff.id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), CODE_SERVER_GROUP_POLICY, "{e}");

    let soft = group(
        &engine,
        "cache",
        GroupPolicy::AntiAffinity,
        GroupStrength::Soft,
    )
    .await;
    let c1 = create(&engine, "cache-1", "zone-a", &soft.id).await;
    let c2 = create(&engine, "cache-2", "zone-a", &soft.id).await;
    assert_ne!(
        host_of(&engine, &c1).await,
        host_of(&engine, &c2).await,
        "soft anti-affinity prefers another host while one has room"
    );
    // A third member has no free host left: soft lets it share one.
    create(&engine, "cache-3", "zone-a", &soft.id).await;

    let soft_aff = group(&engine, "queue", GroupPolicy::Affinity, GroupStrength::Soft).await;
    let q1 = create(&engine, "queue-1", "zone-a", &soft_aff.id).await;
    let q2 = create(&engine, "queue-2", "zone-a", &soft_aff.id).await;
    assert_eq!(
        host_of(&engine, &q1).await,
        host_of(&engine, &q2).await,
        "soft affinity prefers the members' host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_into_one_group_never_break_a_hard_policy() {
    let engine = engine().await;
    let g = group(
        &engine,
        "race",
        GroupPolicy::AntiAffinity,
        GroupStrength::Hard,
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let engine = engine.clone();
        let spec = in_group(&format!("race-{i}"), "zone-a", &g.id);
        tasks.push(tokio::spawn(async move {
            engine.create_vm(&alice(), spec).await
        }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => accepted.push(s.vm_id),
            Err(e) => assert_eq!(e.code(), CODE_SERVER_GROUP_POLICY, "{e}"),
        }
    }
    assert_eq!(accepted.len(), 2, "two hosts in zone-a: two members");
    let mut hosts = HashSet::new();
    for vm in &accepted {
        hosts.insert(host_of(&engine, vm).await);
    }
    assert_eq!(hosts.len(), 2, "never two members on one host: {hosts:?}");
}

#[tokio::test]
async fn deleting_a_vm_leaves_its_group_and_only_an_empty_group_is_deleted() {
    let engine = engine().await;
    let g = group(
        &engine,
        "tmp",
        GroupPolicy::AntiAffinity,
        GroupStrength::Hard,
    )
    .await;
    let vm = create(&engine, "tmp-1", "zone-a", &g.id).await;
    let e = engine
        .delete_server_group(&alice(), &g.id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(e.code(), CODE_SERVER_GROUP_NOT_EMPTY, "{e}");

    let s = engine.delete_vm(&alice(), &vm, false).await.unwrap();
    let job = engine
        .wait_job(&Scope::All, &s.job_id, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let got = engine.get_server_group(&Scope::All, &g.id).await.unwrap();
    assert!(got.members.is_empty(), "{got:?}");
    engine.delete_server_group(&alice(), &g.id).await.unwrap();
    let e = engine
        .get_server_group(&Scope::All, &g.id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let events = engine
        .list_events(&EventFilter {
            project: Some("demo".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert!(names.contains(&"server_group_created"), "{names:?}");
    assert!(names.contains(&"server_group_deleted"), "{names:?}");
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::ServerGroupCreated { group_id, .. } if *group_id == g.id
    ) && e.principal.as_deref() == Some("alice")));
}

#[tokio::test]
async fn groups_are_private_to_their_project_and_names_are_checked() {
    let engine = engine().await;
    let g = group(
        &engine,
        "private",
        GroupPolicy::Affinity,
        GroupStrength::Soft,
    )
    .await;
    let e = engine
        .get_server_group(&mallory().scope(), &g.id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = engine
        .delete_server_group(&mallory(), &g.id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = engine
        .create_vm(
            &mallory(),
            VmSpec {
                server_group: Some(g.id.clone()),
                ..VmSpec::new("sneak", "ubuntu-24.04", "small")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(e.field(), Some("server_group"));
    let listed = engine
        .list_server_groups(&mallory().scope(), &PageRequest::all())
        .await
        .unwrap();
    assert!(listed.items.is_empty());

    let e = engine
        .create_server_group(
            &alice(),
            NewServerGroup {
                name: "Bad Name".into(),
                policy: GroupPolicy::Affinity,
                strength: GroupStrength::Hard,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("name"), "{e}");
    let e = engine
        .create_server_group(
            &alice(),
            NewServerGroup {
                name: "private".into(),
                policy: GroupPolicy::Affinity,
                strength: GroupStrength::Hard,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(e.field(), Some("name"));
}
