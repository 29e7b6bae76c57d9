//! The reconciler's drift repairs and operators' adoption on the simulator's demo inventory
//! (zone-a: hosts sim-a1 and sim-a2): VMs moved, removed or created behind HCP's back, and
//! what `engine.drift_repairs` makes of them.

use std::sync::Arc;
use std::time::Duration;

use hcp_core::store::Scope;
use hcp_core::{
    Action, Config, DesiredState, Drift, Engine, EventFilter, EventKind, Job, JobState,
    MissingRepair, MovedRepair, Principal, Provider, RepairAction, RequestContext, VmId, VmSpec,
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
        .unwrap()
        .clone();
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
    assert!(
        r.sim
            .remove_vm(&native_id(&r.engine, &gone).await)
            .unwrap()
    );

    let report = r.engine.refresh_inventory().await.unwrap();
    assert_eq!(report.repaired, 2, "{report:?}");
    assert_eq!(report.repairs, 0, "no job is submitted for either");
    let m = r.engine.get_vm(&Scope::All, &moved).await.unwrap();
    assert_eq!(m.binding.host, "sim-a2", "the store follows the move");
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
    r.sim
        .remove_vm(&native_id(&r.engine, &gone).await)
        .unwrap();

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
    assert_eq!(m.binding.host, "sim-a1");
    let g = r.engine.get_vm(&Scope::All, &gone).await.unwrap();
    assert_eq!(g.desired, DesiredState::Active);
    assert!(!g.present);
    assert!(repairs(&r.engine).await.is_empty());
}
