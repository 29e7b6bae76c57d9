//! The reconciler's drift repairs and operators' adoption on the simulator's demo inventory
//! (zone-a: hosts sim-a1 and sim-a2): VMs moved, removed or created behind HCP's back, and
//! what `engine.drift_repairs` makes of them.

use std::sync::Arc;
use std::time::Duration;

use hcp_core::store::{PageRequest, Scope};
use hcp_core::{
    Action, AdoptRequest, Config, DesiredState, Drift, Engine, ErrorKind, EventFilter, EventKind,
    Job, JobState, MissingRepair, MovedRepair, PowerState, Principal, ProjectId, Provider,
    RepairAction, RequestContext, Resources, UnmanagedRepair, VmId, VmSpec,
};
use hcp_provider_sim::{SimProvider, SimVm};

struct Rig {
    engine: Engine,
    sim: Arc<SimProvider>,
}

async fn rig_with(edit: impl FnOnce(&mut Config)) -> Rig {
    let mut config = hcp_provider_sim::demo_config();
    edit(&mut config);
    let pc = &config.providers[0];
    let sim = Arc::new(SimProvider::from_config(pc, &config.secrets).unwrap());
    let p: Arc<dyn Provider> = sim.clone();
    let engine = Engine::builder(config)
        .provider_kind("sim", move |_, _| Ok(p.clone()))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    Rig { engine, sim }
}

fn alice() -> RequestContext {
    RequestContext::new("demo", Principal::new("alice"))
}

async fn wait(engine: &Engine, job: &hcp_core::JobId) -> Job {
    engine
        .wait_job(&Scope::All, job, Some(Duration::from_secs(20)))
        .await
        .unwrap()
}

/// Creates a running VM pinned to `host`.
async fn vm_on(engine: &Engine, name: &str, host: &str) -> VmId {
    let s = engine
        .submit(
            &alice(),
            Action::Create {
                spec: VmSpec::new(name, "ubuntu-24.04", "small"),
                host: Some(host.into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(wait(engine, &s.job_id).await.state, JobState::Succeeded);
    s.vm_id
}

/// Moves a VM to `to` on the simulator directly, as a cluster's own balancing would.
fn move_behind_hcps_back(sim: &SimProvider, native_id: &str, to: &str) {
    let state = sim.state().unwrap();
    let vm: SimVm = state
        .hosts
        .values()
        .find_map(|h| h.vms.get(native_id))
        .map(|v| SimVm::clone(v))
        .unwrap();
    assert!(sim.remove_vm(native_id).unwrap());
    sim.seed_vm(to, vm).unwrap();
}

async fn native_id(engine: &Engine, vm: &VmId) -> String {
    engine
        .get_vm(&Scope::All, vm)
        .await
        .unwrap()
        .binding
        .native_id
        .unwrap()
}

async fn repairs(engine: &Engine) -> Vec<(Option<VmId>, RepairAction)> {
    engine
        .list_events(&EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::DriftRepaired { action, .. } => Some((e.vm_id.clone(), action)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn moves_are_followed_and_missing_vms_marked_error_once() {
    let r = rig_with(|_| {}).await;
    let moved = vm_on(&r.engine, "moved", "sim-a1").await;
    let gone = vm_on(&r.engine, "gone", "sim-a1").await;
    move_behind_hcps_back(&r.sim, &native_id(&r.engine, &moved).await, "sim-a2");
    assert!(r.sim.remove_vm(&native_id(&r.engine, &gone).await).unwrap());

    let report = r.engine.refresh_inventory().await.unwrap();
    assert_eq!(report.repaired, 2, "{report:?}");
    assert_eq!(report.repairs, 0, "no job is submitted for either");
    let m = r.engine.get_vm(&Scope::All, &moved).await.unwrap();
    assert_eq!(&*m.binding.host, "sim-a2", "the store follows the move");
    assert_eq!(m.desired, DesiredState::Active);
    let g = r.engine.get_vm(&Scope::All, &gone).await.unwrap();
    assert_eq!(g.desired, DesiredState::Error, "{g:?}");
    assert!(!g.present);
    let why = g.last_error.clone().expect("the reason");
    assert_eq!(why.code, "NOT_FOUND");
    assert!(why.message.contains("missing from its host"), "{why:?}");
    assert!(
        !why.message.contains("sim-a1"),
        "tenants never see hosts: {why:?}"
    );
    assert!(
        g.tenant_view()
            .last_error
            .is_some_and(|e| e.detail.is_none())
    );
    let mut seen = repairs(&r.engine).await;
    seen.sort_by_key(|(v, _)| v.clone());
    let mut want = vec![
        (Some(moved.clone()), RepairAction::FollowedMove),
        (Some(gone.clone()), RepairAction::MarkedError),
    ];
    want.sort_by_key(|(v, _)| v.clone());
    assert_eq!(seen, want);

    // The next refresh finds the move settled and the VM already marked: nothing more is done,
    // and the ERROR VM's record is not rewritten.
    let report = r.engine.refresh_inventory().await.unwrap();
    assert_eq!(report.repaired, 0, "{report:?}");
    assert!(
        !report
            .drift
            .iter()
            .any(|d| matches!(d, Drift::Moved { .. }))
    );
    let again = r.engine.get_vm(&Scope::All, &gone).await.unwrap();
    assert_eq!(again.generation, g.generation);
    assert_eq!(repairs(&r.engine).await.len(), 2);
    // The ERROR VM is never recreated on its own, and its owner can delete it.
    assert_eq!(r.sim.state().unwrap().hosts["sim-a1"].vms.len(), 0);
    let d = r.engine.delete_vm(&alice(), &gone, false).await.unwrap();
    assert_eq!(wait(&r.engine, &d.job_id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn report_only_repairs_leave_the_store_as_it_was() {
    let r = rig_with(|c| {
        c.engine.drift_repairs.moved = MovedRepair::Report;
        c.engine.drift_repairs.missing = MissingRepair::Report;
    })
    .await;
    let moved = vm_on(&r.engine, "moved", "sim-a1").await;
    let gone = vm_on(&r.engine, "gone", "sim-a1").await;
    move_behind_hcps_back(&r.sim, &native_id(&r.engine, &moved).await, "sim-a2");
    r.sim.remove_vm(&native_id(&r.engine, &gone).await).unwrap();

    let report = r.engine.refresh_inventory().await.unwrap();
    assert_eq!(report.repaired, 0);
    assert!(report.drift.iter().any(
        |d| matches!(d, Drift::Moved { vm_id, to_host, .. } if *vm_id == moved && to_host == "sim-a2")
    ));
    assert!(
        report
            .drift
            .iter()
            .any(|d| matches!(d, Drift::Missing { vm_id, .. } if *vm_id == gone))
    );
    let m = r.engine.get_vm(&Scope::All, &moved).await.unwrap();
    assert_eq!(&*m.binding.host, "sim-a1");
    let g = r.engine.get_vm(&Scope::All, &gone).await.unwrap();
    assert_eq!(g.desired, DesiredState::Active);
    assert!(!g.present);
    assert!(repairs(&r.engine).await.is_empty());
}

fn operator() -> Principal {
    Principal::new("ops-olga")
}

fn demo() -> ProjectId {
    ProjectId::from("demo")
}

/// Seeds a running VM created outside HCP on sim-a1, with tags and a snapshot, and returns its
/// native id.
fn seed_legacy(sim: &SimProvider) -> String {
    let mut vm = SimVm::new(
        "legacy-db",
        PowerState::Running,
        Resources {
            vcpus: 2,
            memory_mib: 2048,
            disk_gib: 20,
        },
        None,
    );
    vm.tags.insert("team".into(), "dba".into());
    sim.seed_vm("sim-a1", vm).unwrap()
}

/// The VM's entry in the simulator's state file, as JSON.
fn on_disk(path: &std::path::Path, native_id: &str) -> serde_json::Value {
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    state["hosts"]["sim-a1"]["vms"][native_id].clone()
}

async fn events_named(engine: &Engine, name: &str) -> Vec<hcp_core::Event> {
    engine
        .list_events(&EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.name() == name)
        .map(|e| (*e).clone())
        .collect()
}

#[tokio::test]
async fn adopt_then_release_leaves_the_vm_untouched_apart_from_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sim.json");
    let r = rig_with(|c| {
        c.providers[0].settings["state_file"] = serde_json::json!(file);
    })
    .await;
    let native = seed_legacy(&r.sim);
    let before = on_disk(&file, &native);
    assert!(before["mark"].is_null());

    // The operators' inventory offers it for adoption; HCP's own VMs are not offered.
    r.engine.refresh_inventory().await.unwrap();
    let listed = r
        .engine
        .inventory_vms()
        .into_iter()
        .find(|v| v.native_id == native)
        .unwrap();
    assert!(listed.adoptable && listed.vm_id.is_none());

    let s = r
        .engine
        .adopt_vm(
            &operator(),
            &demo(),
            &AdoptRequest::new("sim-a1", "legacy-db"),
            Some("adopt-1".into()),
        )
        .await
        .unwrap();
    let job = wait(&r.engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.principal, operator());
    let vm = r.engine.get_vm(&Scope::All, &s.vm_id).await.unwrap();
    assert_eq!(vm.project.as_str(), "demo");
    assert_eq!(vm.desired, DesiredState::Active);
    assert_eq!(vm.power, PowerState::Running);
    assert_eq!(vm.desired_power, PowerState::Running);
    assert_eq!(vm.spec.name, "legacy-db");
    assert_eq!(vm.spec.tags.get("team").map(String::as_str), Some("dba"));
    assert_eq!((vm.resources.vcpus, vm.resources.memory_mib), (2, 2048));
    assert_eq!(vm.binding.native_id.as_deref(), Some(native.as_str()));
    // The tenant sees it in the project.
    let listed = r
        .engine
        .list_vms(&alice().scope(), &PageRequest::all())
        .await
        .unwrap();
    assert!(listed.items.iter().any(|v| v.id == s.vm_id));

    // On the hypervisor only the mark changed.
    let adopted = on_disk(&file, &native);
    assert_eq!(adopted["mark"]["vm_id"], serde_json::json!(s.vm_id));
    assert_eq!(adopted["mark"]["project"], "demo");
    let mut without_mark = adopted.clone();
    without_mark["mark"] = serde_json::Value::Null;
    assert_eq!(without_mark, before);
    let audit = events_named(&r.engine, "vm_adopted").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].principal.as_deref(), Some("ops-olga"));
    assert_eq!(audit[0].vm_id.as_ref(), Some(&s.vm_id));

    // The same key replays; a second adoption of a managed VM is refused.
    let again = r
        .engine
        .adopt_vm(
            &operator(),
            &demo(),
            &AdoptRequest::new("sim-a1", "legacy-db"),
            Some("adopt-1".into()),
        )
        .await
        .unwrap();
    assert!(again.replayed && again.job_id == s.job_id);
    let e = adopt_refused(&r, &native).await;
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.message().contains("already managed"), "{e}");
    // The reconciler sees it as HCP's now.
    let report = r.engine.refresh_inventory().await.unwrap();
    assert!(report.drift.is_empty(), "{:?}", report.drift);

    // Release: the mark goes, the VM leaves the store, and the VM is exactly as it was.
    let rel = r
        .engine
        .release_vm(&operator(), &s.vm_id, None)
        .await
        .unwrap();
    assert_eq!(
        wait(&r.engine, &rel.job_id).await.state,
        JobState::Succeeded
    );
    let e = r.engine.get_vm(&Scope::All, &s.vm_id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(on_disk(&file, &native), before);
    assert_eq!(events_named(&r.engine, "vm_released").await.len(), 1);
    r.engine.refresh_inventory().await.unwrap();
    assert!(
        r.engine
            .inventory_vms()
            .iter()
            .any(|v| v.native_id == native && v.adoptable)
    );
}

#[tokio::test]
async fn adoption_is_refused_before_any_change() {
    // Not on the host, and a host that does not exist.
    let r = rig_with(|_| {}).await;
    let native = seed_legacy(&r.sim);
    let before = r.sim.state().unwrap();
    let e = r
        .engine
        .adopt_vm(
            &operator(),
            &demo(),
            &AdoptRequest::new("sim-a1", "nope"),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.field(), Some("vm"));
    let e = r
        .engine
        .adopt_vm(
            &operator(),
            &demo(),
            &AdoptRequest::new("sim-zz", &native),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("host"));
    // A name the project already uses.
    vm_on(&r.engine, "taken", "sim-a2").await;
    let e = r
        .engine
        .adopt_vm(
            &operator(),
            &demo(),
            &AdoptRequest::new("sim-a1", &native).with_name(Some("taken".into())),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!((e.kind(), e.field()), (ErrorKind::Conflict, Some("name")));
    assert_eq!(
        r.sim.state().unwrap().hosts["sim-a1"],
        before.hosts["sim-a1"]
    );

    // Over the project's quota: 1 vCPU used of 2, and the VM has 2.
    let r = rig_with(|c| c.projects[0].quota.max_vcpus = Some(2)).await;
    vm_on(&r.engine, "first", "sim-a2").await;
    let native = seed_legacy(&r.sim);
    let e = adopt_refused(&r, &native).await;
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");

    // A provider that cannot write the mark, and adoption switched off.
    let r = rig_with(|c| {
        c.providers[0].settings["disable"] = serde_json::json!(["adopt"]);
    })
    .await;
    let native = seed_legacy(&r.sim);
    let e = adopt_refused(&r, &native).await;
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
    assert!(e.to_string().contains("adopt"), "{e}");
    r.engine.refresh_inventory().await.unwrap();
    assert!(r.engine.inventory_vms().iter().all(|v| !v.adoptable));
    let r = rig_with(|c| c.engine.drift_repairs.unmanaged = UnmanagedRepair::Report).await;
    let native = seed_legacy(&r.sim);
    let e = adopt_refused(&r, &native).await;
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
    let all = r
        .engine
        .list_vms(&Scope::All, &PageRequest::all())
        .await
        .unwrap();
    assert!(all.items.is_empty(), "nothing was recorded");
    assert!(
        r.sim.state().unwrap().hosts["sim-a1"].vms[&native]
            .mark
            .is_none()
    );
}

/// Adopts `native` from `sim-a1` into `demo` as the operator, expecting a refusal.
async fn adopt_refused(r: &Rig, native: &str) -> hcp_core::Error {
    r.engine
        .adopt_vm(
            &operator(),
            &demo(),
            &AdoptRequest::new("sim-a1", native),
            None,
        )
        .await
        .unwrap_err()
}
