//! Migration keeps server groups: on the simulator's demo inventory with a third host in zone-a
//! (sim-a1, sim-a2, sim-a3), a hard anti-affinity member never moves onto a host where another
//! member runs or is moving to, a hard affinity member never leaves the others, and a soft
//! policy ranks the candidates. Every refusal comes before any job exists.

use std::time::Duration;

use hcp_core::store::{JobFilter, PageRequest, Scope};
use hcp_core::{
    Action, CODE_SERVER_GROUP_POLICY, Config, Engine, ErrorKind, GroupPolicy, GroupStrength, Job,
    JobState, MigrateRequest, NewServerGroup, Principal, RequestContext, ServerGroupId, VmId,
    VmSpec,
};

async fn engine_with(edit: impl FnOnce(&mut Config)) -> Engine {
    let mut config = hcp_provider_sim::demo_config();
    let mut third = config.providers[0].hosts[0].clone();
    third.name = "sim-a3".into();
    config.providers[0].hosts.push(third);
    edit(&mut config);
    hcp_provider_sim::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap()
}

fn alice() -> RequestContext {
    RequestContext::new("demo", Principal::new("alice"))
}

fn operator() -> Principal {
    Principal::new("ops-olga")
}

async fn wait(engine: &Engine, job: &hcp_core::JobId) -> Job {
    engine
        .wait_job(&Scope::All, job, Some(Duration::from_secs(30)))
        .await
        .unwrap()
}

async fn group(engine: &Engine, policy: GroupPolicy, strength: GroupStrength) -> ServerGroupId {
    engine
        .create_server_group(
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

/// Creates a running VM pinned to `host`, in `group` when given.
async fn vm_on(engine: &Engine, name: &str, host: &str, group: Option<&ServerGroupId>) -> VmId {
    let spec = VmSpec {
        server_group: group.cloned(),
        ..VmSpec::new(name, "ubuntu-24.04", "small")
    };
    let s = engine
        .submit(
            &alice(),
            Action::Create {
                spec,
                host: Some(host.into()),
            },
        )
        .await
        .unwrap();
    let job = wait(engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    s.vm_id
}

fn to(host: &str) -> MigrateRequest {
    MigrateRequest::new().with_target_host(Some(host))
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

fn assert_policy_refusal(e: &hcp_core::Error) {
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(e.code(), CODE_SERVER_GROUP_POLICY, "{e}");
    assert_eq!(e.field(), Some("target_host"), "{e}");
    assert!(e.message().contains("server group `web`"), "{e}");
}

#[tokio::test]
async fn hard_anti_affinity_keeps_a_moving_member_off_the_other_members_hosts() {
    let e = engine_with(|_| {}).await;
    let g = group(&e, GroupPolicy::AntiAffinity, GroupStrength::Hard).await;
    let a = vm_on(&e, "web-1", "sim-a1", Some(&g)).await;
    let b = vm_on(&e, "web-2", "sim-a2", Some(&g)).await;
    let jobs = job_count(&e).await;

    // Named: onto the other member's host.
    let err = e
        .migrate_vm(&operator(), &a, &to("sim-a2"), None)
        .await
        .unwrap_err();
    assert_policy_refusal(&err);
    assert_eq!(job_count(&e).await, jobs, "refused before any job");

    // Picked: sim-a3 is the only host the group admits, though sim-a2 is as free.
    let s = e
        .migrate_vm(&operator(), &a, &MigrateRequest::new(), None)
        .await
        .unwrap();
    assert_eq!(wait(&e, &s.job_id).await.state, JobState::Succeeded);
    assert_eq!(host_of(&e, &a).await, "sim-a3");

    // Now sim-a1 is free of members: web-2 may go there, but not to sim-a3.
    let err = e
        .migrate_vm(&operator(), &b, &to("sim-a3"), None)
        .await
        .unwrap_err();
    assert_policy_refusal(&err);
    let s = e
        .migrate_vm(&operator(), &b, &MigrateRequest::new(), None)
        .await
        .unwrap();
    assert_eq!(wait(&e, &s.job_id).await.state, JobState::Succeeded);
    assert_eq!(host_of(&e, &b).await, "sim-a1");

    // A VM outside the group is not held by it.
    let c = vm_on(&e, "other", "sim-a2", None).await;
    let s = e
        .migrate_vm(&operator(), &c, &to("sim-a1"), None)
        .await
        .unwrap();
    assert_eq!(wait(&e, &s.job_id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_members_move_in_flight_counts_on_its_target_for_other_moves_and_creates() {
    // Moves take 1.5 s, so the first is still running when the others are asked for.
    let e = engine_with(|c| {
        c.providers[0].settings["op_latency"] = serde_json::json!({"migrate_vm": "1500ms"});
    })
    .await;
    let g = group(&e, GroupPolicy::AntiAffinity, GroupStrength::Hard).await;
    let a = vm_on(&e, "web-1", "sim-a1", Some(&g)).await;
    let b = vm_on(&e, "web-2", "sim-a2", Some(&g)).await;
    let first = e
        .migrate_vm(&operator(), &a, &to("sim-a3"), None)
        .await
        .unwrap();
    // web-1 is still bound to sim-a1, but it is on its way to sim-a3.
    let err = e
        .migrate_vm(&operator(), &b, &to("sim-a3"), None)
        .await
        .unwrap_err();
    assert_policy_refusal(&err);
    let err = e
        .migrate_vm(&operator(), &b, &MigrateRequest::new(), None)
        .await
        .unwrap_err();
    assert_policy_refusal(&err);
    // A create into the group finds no host either: sim-a1 and sim-a3 are both web-1's
    // until its move ends, sim-a2 is web-2's.
    let spec = VmSpec {
        server_group: Some(g.clone()),
        ..VmSpec::new("web-3", "ubuntu-24.04", "small").with_zone("zone-a")
    };
    let err = e.create_vm(&alice(), spec.clone()).await.unwrap_err();
    assert_eq!(err.code(), CODE_SERVER_GROUP_POLICY, "{err}");

    assert_eq!(wait(&e, &first.job_id).await.state, JobState::Succeeded);
    assert_eq!(host_of(&e, &a).await, "sim-a3");
    // Once the move has ended, sim-a1 is free again.
    let s = e.create_vm(&alice(), spec).await.unwrap();
    assert_eq!(wait(&e, &s.job_id).await.state, JobState::Succeeded);
    assert_eq!(host_of(&e, &s.vm_id).await, "sim-a1");
}

#[tokio::test]
async fn hard_affinity_keeps_a_member_with_the_others() {
    let e = engine_with(|_| {}).await;
    let g = group(&e, GroupPolicy::Affinity, GroupStrength::Hard).await;
    let a = vm_on(&e, "db-1", "sim-a1", Some(&g)).await;
    let _b = vm_on(&e, "db-2", "sim-a1", Some(&g)).await;
    for req in [to("sim-a2"), MigrateRequest::new()] {
        let err = e.migrate_vm(&operator(), &a, &req, None).await.unwrap_err();
        assert_policy_refusal(&err);
        assert!(err.message().contains("other members"), "{err}");
    }
    assert_eq!(host_of(&e, &a).await, "sim-a1");
}

#[tokio::test]
async fn a_lone_member_of_a_hard_affinity_group_moves_freely() {
    let e = engine_with(|_| {}).await;
    let g = group(&e, GroupPolicy::Affinity, GroupStrength::Hard).await;
    let a = vm_on(&e, "db-1", "sim-a1", Some(&g)).await;
    let s = e
        .migrate_vm(&operator(), &a, &to("sim-a2"), None)
        .await
        .unwrap();
    assert_eq!(wait(&e, &s.job_id).await.state, JobState::Succeeded);
    assert_eq!(host_of(&e, &a).await, "sim-a2");
}

#[tokio::test]
async fn soft_anti_affinity_prefers_a_host_without_members_but_allows_one() {
    let e = engine_with(|_| {}).await;
    let g = group(&e, GroupPolicy::AntiAffinity, GroupStrength::Soft).await;
    let a = vm_on(&e, "web-1", "sim-a1", Some(&g)).await;
    let b = vm_on(&e, "web-2", "sim-a3", Some(&g)).await;
    // sim-a2 has less free memory than sim-a3 (two VMs outside the group), but no member.
    vm_on(&e, "filler-1", "sim-a2", None).await;
    vm_on(&e, "filler-2", "sim-a2", None).await;
    let s = e
        .migrate_vm(&operator(), &a, &MigrateRequest::new(), None)
        .await
        .unwrap();
    assert_eq!(wait(&e, &s.job_id).await.state, JobState::Succeeded);
    assert_eq!(
        host_of(&e, &a).await,
        "sim-a2",
        "the host without a member wins over the one with more free memory"
    );
    // Named onto a member's host: a soft policy allows it.
    let s = e
        .migrate_vm(&operator(), &a, &to("sim-a3"), None)
        .await
        .unwrap();
    assert_eq!(wait(&e, &s.job_id).await.state, JobState::Succeeded);
    assert_eq!(host_of(&e, &a).await, host_of(&e, &b).await);
}
