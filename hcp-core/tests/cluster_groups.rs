//! Server groups inside a cluster target: zone-a's three hosts (sim-a1, sim-a2, sim-a3) form
//! the simulated cluster `cl-a`, and a group's policy holds per member host. HCP pins the member
//! host at acceptance (under the group's lock), the simulator honours the pin, and the fourth
//! member of a hard anti-affinity group is refused before any job.

use std::collections::HashSet;
use std::time::Duration;

use hcp_core::store::{JobFilter, PageRequest, Scope};
use hcp_core::{
    CODE_SERVER_GROUP_POLICY, Engine, ErrorKind, GroupPolicy, GroupStrength, JobState,
    NewServerGroup, Principal, RequestContext, ServerGroupId, VmId, VmSpec,
};

async fn engine() -> Engine {
    let mut c = hcp_provider_sim::demo_config();
    let p = &mut c.providers[0];
    let mut third = p.hosts[0].clone();
    third.name = "sim-a3".into();
    p.hosts.push(third);
    for h in p.hosts.iter_mut().filter(|h| h.zone == "zone-a") {
        h.cluster = Some("cl-a".into());
    }
    p.clusters.push(
        serde_json::from_value(serde_json::json!({"name": "cl-a", "zone": "zone-a"})).unwrap(),
    );
    let e = hcp_provider_sim::register(Engine::builder(c))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    e.refresh_inventory().await.unwrap();
    e
}

fn alice() -> RequestContext {
    RequestContext::new("demo", Principal::new("alice"))
}

async fn group(e: &Engine, policy: GroupPolicy, strength: GroupStrength) -> ServerGroupId {
    e.create_server_group(
        &alice(),
        NewServerGroup {
            name: "web".into(),
            policy,
            strength,
        },
    )
    .await
    .unwrap()
    .id
}

fn spec(name: &str, g: &ServerGroupId) -> VmSpec {
    VmSpec {
        server_group: Some(g.clone()),
        ..VmSpec::new(name, "ubuntu-24.04", "small").with_zone("zone-a")
    }
}

async fn create(e: &Engine, name: &str, g: &ServerGroupId) -> VmId {
    let s = e.create_vm(&alice(), spec(name, g)).await.unwrap();
    let job = e
        .wait_job(&Scope::All, &s.job_id, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    s.vm_id
}

/// The member host the VM's record names, checked against where the simulator put it.
async fn member_host(e: &Engine, vm: &VmId) -> String {
    let v = e.get_vm(&Scope::All, vm).await.unwrap();
    assert_eq!(&*v.binding.host, "cl-a");
    let recorded = v.binding.member_host.expect("a member host is recorded");
    e.refresh_inventory().await.unwrap();
    let actual = e
        .inventory_vms()
        .into_iter()
        .find(|i| i.vm_id.as_ref() == Some(vm))
        .map(|i| i.host)
        .expect("the simulator has the VM");
    assert_eq!(
        recorded, actual,
        "the cluster put the VM where HCP pinned it"
    );
    recorded
}

#[tokio::test]
async fn hard_anti_affinity_holds_per_member_host_inside_a_cluster() {
    let e = engine().await;
    let g = group(&e, GroupPolicy::AntiAffinity, GroupStrength::Hard).await;
    let mut hosts = HashSet::new();
    for name in ["web-1", "web-2", "web-3"] {
        let vm = create(&e, name, &g).await;
        hosts.insert(member_host(&e, &vm).await);
    }
    assert_eq!(hosts.len(), 3, "three members on three hosts: {hosts:?}");

    let jobs = e
        .list_jobs(&Scope::All, &JobFilter::default(), &PageRequest::all())
        .await
        .unwrap()
        .items
        .len();
    let err = e.create_vm(&alice(), spec("web-4", &g)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(err.code(), CODE_SERVER_GROUP_POLICY, "{err}");
    let after = e
        .list_jobs(&Scope::All, &JobFilter::default(), &PageRequest::all())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(after, jobs, "refused before any job");
}

#[tokio::test]
async fn concurrent_creates_into_a_cluster_never_share_a_member_host() {
    let e = engine().await;
    let g = group(&e, GroupPolicy::AntiAffinity, GroupStrength::Hard).await;
    let ctx = alice();
    let submits = ["a", "b", "c", "d"].map(|n| e.create_vm(&ctx, spec(n, &g)));
    let results = futures::future::join_all(submits).await;
    let accepted: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(accepted.len(), 3, "{results:?}");
    let mut hosts = HashSet::new();
    for s in accepted {
        let job = e
            .wait_job(&Scope::All, &s.job_id, Some(Duration::from_secs(20)))
            .await
            .unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        hosts.insert(member_host(&e, &s.vm_id).await);
    }
    assert_eq!(hosts.len(), 3, "{hosts:?}");
}

#[tokio::test]
async fn hard_affinity_keeps_members_on_one_member_host() {
    let e = engine().await;
    let g = group(&e, GroupPolicy::Affinity, GroupStrength::Hard).await;
    let mut hosts = HashSet::new();
    for name in ["db-1", "db-2", "db-3"] {
        let vm = create(&e, name, &g).await;
        hosts.insert(member_host(&e, &vm).await);
    }
    assert_eq!(hosts.len(), 1, "{hosts:?}");
}

#[tokio::test]
async fn soft_anti_affinity_spreads_then_shares() {
    let e = engine().await;
    let g = group(&e, GroupPolicy::AntiAffinity, GroupStrength::Soft).await;
    let mut hosts = Vec::new();
    for name in ["w-1", "w-2", "w-3", "w-4"] {
        let vm = create(&e, name, &g).await;
        hosts.push(member_host(&e, &vm).await);
    }
    let distinct: HashSet<_> = hosts.iter().collect();
    assert_eq!(distinct.len(), 3, "spread over every host first: {hosts:?}");
}
