//! Migration on the simulator's demo inventory (zone-a: hosts sim-a1 and sim-a2, 32 vCPUs each;
//! zone-b: sim-b1 alone): the target is chosen or checked before any job exists, capacity moves
//! with the VM, the VM is rebound to its new host, and the audit stream records the move.

use std::time::Duration;

use hcp_core::store::Scope;
use hcp_core::{
    Action, Config, Engine, ErrorKind, EventFilter, EventKind, Job, JobAction, JobState, JobUpdate,
    MigrateRequest, PowerState, Principal, RequestContext, VmId, VmSpec,
};

async fn engine_with(edit: impl FnOnce(&mut Config)) -> Engine {
    let mut config = hcp_provider_sim::demo_config();
    edit(&mut config);
    hcp_provider_sim::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap()
}

async fn engine() -> Engine {
    engine_with(|_| {}).await
}

fn alice() -> RequestContext {
    RequestContext::new("demo", Principal::new("alice"))
}

fn operator() -> Principal {
    Principal::new("ops-olga")
}

async fn wait(engine: &Engine, job: &hcp_core::JobId) -> Job {
    engine
        .wait_job(&Scope::All, job, Some(Duration::from_secs(20)))
        .await
        .unwrap()
}

/// Creates a running VM of `vcpus` vCPUs pinned to `host`.
async fn vm_on(engine: &Engine, name: &str, host: &str, vcpus: u32) -> VmId {
    let spec = VmSpec {
        vcpus: Some(vcpus),
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

fn vcpus_taken(engine: &Engine, host: &str) -> u32 {
    engine
        .hosts()
        .into_iter()
        .find(|h| h.name == host)
        .unwrap()
        .vcpus_used
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

#[tokio::test]
async fn a_vm_moves_to_a_named_host_with_its_capacity_and_an_audit_event() {
    let e = engine().await;
    let vm = vm_on(&e, "web", "sim-a1", 4).await;
    let (a1, a2) = (vcpus_taken(&e, "sim-a1"), vcpus_taken(&e, "sim-a2"));
    let s = e
        .migrate_vm(&operator(), &vm, &to("sim-a2"), None)
        .await
        .unwrap();
    // Held on the target from acceptance on.
    assert!(vcpus_taken(&e, "sim-a2") >= a2, "target reservation");
    let job = wait(&e, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(
        job.project.as_str(),
        "demo",
        "the job lives in the VM's project"
    );
    assert_eq!(
        job.action,
        JobAction::Migrate {
            target_host: "sim-a2".into(),
            cold: false,
        }
    );
    assert_eq!(host_of(&e, &vm).await, "sim-a2");
    assert_eq!(
        vcpus_taken(&e, "sim-a1"),
        a1 - 4,
        "the old host no longer counts it"
    );
    assert_eq!(
        vcpus_taken(&e, "sim-a2"),
        a2 + 4,
        "the new host counts it once"
    );
    // The tenant's view of the job names no host.
    match job.tenant_view().action {
        Some(JobAction::Migrate { target_host, cold }) => {
            assert!(target_host.is_empty());
            assert!(!cold, "a live move");
        }
        other => panic!("unexpected action {other:?}"),
    }
    let events = e
        .list_events(&EventFilter {
            vm_id: Some(vm.clone()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let moved: Vec<_> = events
        .iter()
        .filter_map(|ev| match &ev.kind {
            EventKind::VmMigrated {
                provider,
                from_host,
                to_host,
            } => Some((
                provider.as_str(),
                from_host.as_str(),
                to_host.as_str(),
                ev.principal.clone(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        moved,
        [("sim", "sim-a1", "sim-a2", Some("ops-olga".into()))]
    );
    // And back again: the VM's new host is its current host from now on.
    let s = e
        .migrate_vm(&operator(), &vm, &to("sim-a1"), None)
        .await
        .unwrap();
    assert_eq!(wait(&e, &s.job_id).await.state, JobState::Succeeded);
    assert_eq!(host_of(&e, &vm).await, "sim-a1");
}

#[tokio::test]
async fn without_a_target_the_engine_picks_the_other_host_of_the_zone() {
    let e = engine().await;
    let vm = vm_on(&e, "any", "sim-a2", 2).await;
    let s = e
        .migrate_vm(&operator(), &vm, &MigrateRequest::new(), None)
        .await
        .unwrap();
    let job = wait(&e, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(host_of(&e, &vm).await, "sim-a1");
    // A replayed key answers the first job; a new one moves it back.
    let again = e
        .migrate_vm(
            &operator(),
            &vm,
            &MigrateRequest::new(),
            Some("move-1".into()),
        )
        .await
        .unwrap();
    let replay = e
        .migrate_vm(
            &operator(),
            &vm,
            &MigrateRequest::new(),
            Some("move-1".into()),
        )
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.job_id, again.job_id);
    wait(&e, &again.job_id).await;
    assert_eq!(host_of(&e, &vm).await, "sim-a2");
}

#[tokio::test]
async fn bad_targets_are_refused_before_any_job_naming_target_host() {
    let e = engine().await;
    let vm = vm_on(&e, "stay", "sim-a1", 1).await;
    let jobs_before = e
        .list_jobs(
            &Scope::All,
            &Default::default(),
            &hcp_core::store::PageRequest::all(),
        )
        .await
        .unwrap()
        .items
        .len();
    for (target, words) in [
        ("sim-a1", "already runs on host `sim-a1`"),
        ("sim-b1", "zone `zone-b`"),
        ("sim-zz", "not a host of provider `sim`"),
        ("", "not a valid target_host"),
    ] {
        let err = e
            .migrate_vm(&operator(), &vm, &to(target), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{target}: {err}");
        assert_eq!(err.field(), Some("target_host"), "{target}: {err}");
        assert!(err.message().contains(words), "{target}: {err}");
    }
    // zone-b has one host: nowhere to go.
    let lone = vm_on(&e, "lone", "sim-b1", 1).await;
    let err = e
        .migrate_vm(&operator(), &lone, &MigrateRequest::new(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{err}");
    assert_eq!(err.field(), Some("target_host"));
    assert!(err.message().contains("no other host"), "{err}");
    // An unknown VM.
    let err = e
        .migrate_vm(&operator(), &VmId::new("vm-nope"), &to("sim-a2"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let jobs_after = e
        .list_jobs(
            &Scope::All,
            &Default::default(),
            &hcp_core::store::PageRequest::all(),
        )
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(jobs_after, jobs_before + 1, "only the `lone` create ran");
    assert_eq!(host_of(&e, &vm).await, "sim-a1");
}

#[tokio::test]
async fn a_stopped_vm_moves_only_cold_and_stays_stopped() {
    let e = engine().await;
    let vm = vm_on(&e, "sleepy", "sim-a1", 3).await;
    let s = e.stop_vm(&alice(), &vm, true).await.unwrap();
    wait(&e, &s.job_id).await;
    let err = e
        .migrate_vm(&operator(), &vm, &to("sim-a2"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(err.code(), hcp_core::CODE_VM_STATE_CONFLICT, "{err}");
    assert!(err.message().contains("needs a running VM"), "{err}");
    assert!(err.message().contains("allow_cold"), "{err}");

    let (a1, a2) = (vcpus_taken(&e, "sim-a1"), vcpus_taken(&e, "sim-a2"));
    let s = e
        .migrate_vm(&operator(), &vm, &to("sim-a2").with_allow_cold(true), None)
        .await
        .unwrap();
    let job = wait(&e, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(
        job.action,
        JobAction::Migrate {
            target_host: "sim-a2".into(),
            cold: true,
        }
    );
    let got = e.get_vm(&Scope::All, &vm).await.unwrap();
    assert_eq!(&*got.binding.host, "sim-a2");
    assert_eq!(got.power, PowerState::Stopped, "a stopped VM stays stopped");
    assert_eq!(vcpus_taken(&e, "sim-a1"), a1 - 3);
    assert_eq!(vcpus_taken(&e, "sim-a2"), a2 + 3);
    assert_eq!(
        power_on_hypervisor(&e, "sim-a2", &vm).await,
        Some(PowerState::Stopped)
    );
    assert_eq!(
        power_on_hypervisor(&e, "sim-a1", &vm).await,
        None,
        "moved, not copied"
    );
    assert_eq!(
        migrated_events(&e, &vm).await,
        [("sim-a1".into(), "sim-a2".into())]
    );
}

#[tokio::test]
async fn a_running_vm_on_a_host_without_live_migration_moves_cold_only_when_allowed() {
    let e = engine_with(|c| {
        c.zones[0].limits.disable.push("live_migration".into());
    })
    .await;
    let vm = vm_on(&e, "fixed", "sim-a1", 1).await;
    let err = e
        .migrate_vm(&operator(), &vm, &to("sim-a2"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FeatureNotSupported, "{err}");
    assert!(err.message().contains("live_migration"), "{err}");
    assert!(err.message().contains("set allow_cold"), "{err}");
    assert_eq!(host_of(&e, &vm).await, "sim-a1");

    let s = e
        .migrate_vm(
            &operator(),
            &vm,
            &MigrateRequest::new().with_allow_cold(true),
            None,
        )
        .await
        .unwrap();
    let job = wait(&e, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let got = e.get_vm(&Scope::All, &vm).await.unwrap();
    assert_eq!(&*got.binding.host, "sim-a2", "the zone's other host");
    assert_eq!(
        got.power,
        PowerState::Running,
        "started again after the move"
    );
    assert_eq!(
        power_on_hypervisor(&e, "sim-a2", &vm).await,
        Some(PowerState::Running)
    );
    // The tenant sees that the move was cold (the VM was unavailable), never the hosts.
    let tenant = e
        .get_job(&alice().scope(), &s.job_id)
        .await
        .unwrap()
        .tenant_view();
    assert_eq!(
        tenant.action,
        Some(JobAction::Migrate {
            target_host: String::new(),
            cold: true,
        })
    );
    let mut w = e.watch_job(&alice().scope(), &s.job_id).await.unwrap();
    let mut lines = Vec::new();
    while let Some(u) = w.next().await {
        if let JobUpdate::Log(l) = u {
            lines.push(l.message);
        }
    }
    let text = lines.join("\n");
    assert!(text.contains("stopping the VM for a cold move"), "{text}");
    assert!(text.contains("started the VM again"), "{text}");
    assert!(
        !text.contains("sim-a"),
        "no host in the tenant's log: {text}"
    );
}

#[tokio::test]
async fn a_host_that_cannot_move_stopped_vms_refuses_a_cold_move() {
    let e = engine_with(|c| {
        c.zones[0].limits.disable.push("live_migration".into());
        c.zones[0].limits.disable.push("cold_migration".into());
    })
    .await;
    let vm = vm_on(&e, "fixed", "sim-a1", 1).await;
    let err = e
        .migrate_vm(&operator(), &vm, &to("sim-a2"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FeatureNotSupported, "{err}");
    assert!(err.message().contains("would not help"), "{err}");
    let err = e
        .migrate_vm(&operator(), &vm, &to("sim-a2").with_allow_cold(true), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FeatureNotSupported, "{err}");
    assert!(err.message().contains("cold_migration"), "{err}");
    assert_eq!(host_of(&e, &vm).await, "sim-a1");
}

#[tokio::test]
async fn a_cold_move_only_goes_to_a_host_that_can_receive_stopped_vms() {
    let e = engine_with(|c| {
        c.zones[0].limits.disable.push("live_migration".into());
        c.providers[0].hosts[1]
            .limits
            .disable
            .push("cold_migration".into());
    })
    .await;
    let vm = vm_on(&e, "fixed", "sim-a1", 1).await;
    let err = e
        .migrate_vm(&operator(), &vm, &to("sim-a2").with_allow_cold(true), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FeatureNotSupported, "{err}");
    assert_eq!(err.field(), Some("target_host"), "{err}");
    assert!(
        err.message().contains("cannot receive stopped VMs"),
        "{err}"
    );
    let err = e
        .migrate_vm(
            &operator(),
            &vm,
            &MigrateRequest::new().with_allow_cold(true),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{err}");
    assert!(err.message().contains("can receive stopped VMs"), "{err}");
}

/// The VM's power state on `host` as the simulator reports it, if it is there.
async fn power_on_hypervisor(e: &Engine, host: &str, vm: &VmId) -> Option<PowerState> {
    e.refresh_inventory().await.unwrap();
    e.inventory_vms()
        .into_iter()
        .find(|v| v.host == host && v.vm_id.as_ref() == Some(vm))
        .map(|v| v.power)
}

/// The `(from, to)` hosts of the VM's `vm_migrated` events.
async fn migrated_events(e: &Engine, vm: &VmId) -> Vec<(String, String)> {
    e.list_events(&EventFilter {
        vm_id: Some(vm.clone()),
        limit: 1000,
        ..Default::default()
    })
    .await
    .unwrap()
    .iter()
    .filter_map(|ev| match &ev.kind {
        EventKind::VmMigrated {
            from_host, to_host, ..
        } => Some((from_host.clone(), to_host.clone())),
        _ => None,
    })
    .collect()
}

#[tokio::test]
async fn the_targets_capacity_is_respected_and_held() {
    let e = engine().await;
    // sim-a2 keeps 4 vCPUs free.
    vm_on(&e, "filler", "sim-a2", 28).await;
    let big = vm_on(&e, "big", "sim-a1", 8).await;
    for req in [to("sim-a2"), MigrateRequest::new()] {
        let err = e
            .migrate_vm(&operator(), &big, &req, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QuotaExceeded, "{err}");
        assert_eq!(err.code(), hcp_core::CODE_CAPACITY_EXHAUSTED, "{err}");
        assert_eq!(err.field(), Some("target_host"), "{err}");
    }
    // Two 3-vCPU VMs: the first move holds the room the second would need.
    let one = vm_on(&e, "one", "sim-a1", 3).await;
    let two = vm_on(&e, "two", "sim-a1", 3).await;
    let s = e
        .migrate_vm(&operator(), &one, &to("sim-a2"), None)
        .await
        .unwrap();
    let err = e
        .migrate_vm(&operator(), &two, &to("sim-a2"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), hcp_core::CODE_CAPACITY_EXHAUSTED, "{err}");
    assert_eq!(wait(&e, &s.job_id).await.state, JobState::Succeeded);
    assert_eq!(
        vcpus_taken(&e, "sim-a2"),
        31,
        "28 + 3, reservation settled once"
    );
    assert_eq!(host_of(&e, &two).await, "sim-a1");
}
