//! Resizing a VM in place, end to end on the simulator: only what the caller allowed is applied,
//! a disk never shrinks, growth is held to the quota and the host, and the VM's spec follows.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hcp_core::store::Scope;
use hcp_core::{
    CODE_RESIZE_NOT_ALLOWED, Capabilities, ChangeImpact, Config, Console, CreateVm, CreatedVm,
    DeleteVm, DeletedVm, Engine, ErrorKind, EventFilter, EventKind, GetConsole, HostInfo,
    HostInventory, HostInventoryReply, JobState, JobUpdate, OpContext, PowerState, Principal,
    Provider, ProviderInfo, RebootVm, RebootedVm, RequestContext, ResizeRequest, ResizeVm,
    ResizedVm, Resources, Result, StartVm, StartedVm, StopVm, StoppedVm, VmId, VmSpec,
};
use hcp_provider_sim::SimProvider;

/// The simulator under another provider kind, so the planner classifies its changes as that
/// kind's hypervisor would; as `libvirt` it reports a running VM's vCPU and memory changes as
/// waiting for a restart, as libvirt does.
#[derive(Debug)]
struct AsKind {
    sim: Arc<SimProvider>,
    kind: &'static str,
}

#[async_trait]
impl Provider for AsKind {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            kind: self.kind.into(),
            ..self.sim.info()
        }
    }
    fn capabilities(&self) -> Capabilities {
        self.sim.capabilities()
    }
    async fn list_hosts(&self) -> Result<Vec<HostInfo>> {
        self.sim.list_hosts().await
    }
    async fn host_inventory(&self, args: HostInventory) -> Result<HostInventoryReply> {
        self.sim.host_inventory(args).await
    }
    async fn create_vm(&self, ctx: &OpContext, args: CreateVm) -> Result<CreatedVm> {
        self.sim.create_vm(ctx, args).await
    }
    async fn delete_vm(&self, ctx: &OpContext, args: DeleteVm) -> Result<DeletedVm> {
        self.sim.delete_vm(ctx, args).await
    }
    async fn start_vm(&self, ctx: &OpContext, args: StartVm) -> Result<StartedVm> {
        self.sim.start_vm(ctx, args).await
    }
    async fn stop_vm(&self, ctx: &OpContext, args: StopVm) -> Result<StoppedVm> {
        self.sim.stop_vm(ctx, args).await
    }
    async fn reboot_vm(&self, ctx: &OpContext, args: RebootVm) -> Result<RebootedVm> {
        self.sim.reboot_vm(ctx, args).await
    }
    async fn console(&self, args: GetConsole) -> Result<Console> {
        self.sim.console(args).await
    }
    async fn resize_vm(&self, ctx: &OpContext, args: ResizeVm) -> Result<ResizedVm> {
        let running = self
            .sim
            .state()?
            .hosts
            .values()
            .flat_map(|h| h.vms.values())
            .any(|v| {
                v.mark
                    .as_ref()
                    .is_some_and(|m| m.vm_id == args.target.vm_id)
                    && v.power == PowerState::Running
            });
        let cpu_or_memory = args.vcpus.is_some() || args.memory_mib.is_some();
        self.sim.resize_vm(ctx, args).await?;
        Ok(ResizedVm::new(
            self.kind == "libvirt" && running && cpu_or_memory,
        ))
    }
}

struct Rig {
    engine: Engine,
    sim: Arc<SimProvider>,
}

async fn rig(kind: &'static str, edit: impl FnOnce(&mut Config)) -> Rig {
    let mut config = hcp_provider_sim::demo_config();
    edit(&mut config);
    let sim = Arc::new(SimProvider::from_config(&config.providers[0], &config.secrets).unwrap());
    let p: Arc<dyn Provider> = Arc::new(AsKind {
        sim: sim.clone(),
        kind,
    });
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

async fn wait(engine: &Engine, job: &hcp_core::JobId) -> hcp_core::Job {
    engine
        .wait_job(&Scope::All, job, Some(Duration::from_secs(20)))
        .await
        .unwrap()
}

async fn create(engine: &Engine, name: &str) -> VmId {
    let s = engine
        .create_vm(
            &alice(),
            VmSpec::new(name, "ubuntu-24.04", "small").with_zone("zone-a"),
        )
        .await
        .unwrap();
    assert_eq!(wait(engine, &s.job_id).await.state, JobState::Succeeded);
    s.vm_id
}

async fn jobs(engine: &Engine) -> usize {
    let filter = hcp_core::store::JobFilter::default();
    let page = hcp_core::store::PageRequest::all();
    engine
        .list_jobs(&Scope::All, &filter, &page)
        .await
        .unwrap()
        .items
        .len()
}

fn size(vcpus: Option<u32>, memory_mib: Option<u64>, disk_gib: Option<u64>) -> ResizeRequest {
    ResizeRequest {
        flavor: None,
        vcpus,
        memory_mib,
        disk_gib,
    }
}

/// The simulator's own record of the VM's size.
fn sim_size(sim: &SimProvider, vm_id: &VmId) -> Resources {
    sim.state()
        .unwrap()
        .hosts
        .values()
        .flat_map(|h| h.vms.values())
        .find(|v| v.mark.as_ref().is_some_and(|m| &m.vm_id == vm_id))
        .map(|v| v.resources)
        .unwrap()
}

#[tokio::test]
async fn a_hot_resize_of_a_running_vm_applies_and_updates_the_spec() {
    let r = rig("sim", |_| {}).await;
    let id = create(&r.engine, "web-1").await;
    let hot = [ChangeImpact::Hot];
    let s = r
        .engine
        .resize_vm(&alice(), &id, &size(Some(2), Some(2048), Some(20)), &hot)
        .await
        .unwrap();
    let job = wait(&r.engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.operation, hcp_core::Operation::ResizeVm);
    let want = Resources {
        vcpus: 2,
        memory_mib: 2048,
        disk_gib: 20,
    };
    assert_eq!(sim_size(&r.sim, &id), want);
    let vm = r.engine.get_vm(&Scope::All, &id).await.unwrap();
    assert_eq!(vm.resources, want);
    assert_eq!(vm.power, PowerState::Running);
    // The spec keeps its flavor and records what differs from it.
    assert_eq!(vm.spec.flavor.as_deref(), Some("small"));
    assert_eq!(
        (vm.spec.vcpus, vm.spec.memory_mib, vm.spec.disk_gib),
        (Some(2), Some(2048), Some(20))
    );
    // A flavor alone: the explicit sizes go, the flavor's apply.
    let s = r
        .engine
        .resize_vm(
            &alice(),
            &id,
            &ResizeRequest {
                flavor: Some("medium".into()),
                ..Default::default()
            },
            &hot,
        )
        .await
        .unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
    let vm = r.engine.get_vm(&Scope::All, &id).await.unwrap();
    assert_eq!(vm.spec.flavor.as_deref(), Some("medium"));
    assert_eq!(
        (vm.spec.vcpus, vm.spec.memory_mib, vm.spec.disk_gib),
        (None, None, None)
    );
    assert_eq!(vm.resources.vcpus, 2);
    assert_eq!(vm.resources.memory_mib, 4096);
    assert_eq!(vm.resources.disk_gib, 40);
    // Audited, with the size before and after.
    let events = r.engine.list_events(&EventFilter::default()).await.unwrap();
    assert!(
        events.iter().any(|e| matches!(&e.kind,
            EventKind::VmResized { from, to } if from.vcpus == 1 && to.vcpus == 2)),
        "{events:#?}"
    );
    // The same size again changes nothing: refused, naming the request.
    let e = r
        .engine
        .resize_vm(&alice(), &id, &size(Some(2), None, None), &hot)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("resize"), "{e}");
}

#[tokio::test]
async fn a_change_needing_a_restart_runs_only_when_reboot_is_allowed() {
    let r = rig("libvirt", |_| {}).await;
    let id = create(&r.engine, "db-1").await;
    let before = jobs(&r.engine).await;
    let e = r
        .engine
        .resize_vm(
            &alice(),
            &id,
            &size(Some(4), None, None),
            &[ChangeImpact::Hot],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(e.code(), CODE_RESIZE_NOT_ALLOWED, "{e}");
    assert_eq!(e.field(), Some("vcpus"), "{e}");
    assert!(e.message().contains("`reboot`"), "{e}");
    // Refused before any job exists, and the VM keeps its size (and its quota use).
    let after = jobs(&r.engine).await;
    assert_eq!(before, after);
    assert_eq!(
        r.engine
            .get_vm(&Scope::All, &id)
            .await
            .unwrap()
            .resources
            .vcpus,
        1
    );
    let s = r
        .engine
        .resize_vm(
            &alice(),
            &id,
            &size(Some(4), None, Some(15)),
            &[ChangeImpact::Hot, ChangeImpact::Reboot],
        )
        .await
        .unwrap();
    let job = wait(&r.engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let mut w = r.engine.watch_job(&Scope::All, &s.job_id).await.unwrap();
    let mut logs = Vec::new();
    while let Some(u) = w.next().await {
        if let JobUpdate::Log(l) = u {
            logs.push(l.message);
        }
    }
    assert!(
        logs.iter().any(|l| l.contains("restarting the VM")),
        "{logs:#?}"
    );
    let vm = r.engine.get_vm(&Scope::All, &id).await.unwrap();
    assert_eq!((vm.resources.vcpus, vm.resources.disk_gib), (4, 15));
    assert_eq!(vm.power, PowerState::Running);
    assert_eq!(sim_size(&r.sim, &id).vcpus, 4);
}

#[tokio::test]
async fn power_off_changes_stop_and_start_the_vm_only_when_allowed() {
    let r = rig("hyperv", |_| {}).await;
    let id = create(&r.engine, "win-1").await;
    let e = r
        .engine
        .resize_vm(
            &alice(),
            &id,
            &size(None, Some(2048), None),
            &[ChangeImpact::Hot, ChangeImpact::Reboot],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), CODE_RESIZE_NOT_ALLOWED, "{e}");
    assert!(e.message().contains("power_off"), "{e}");
    let s = r
        .engine
        .resize_vm(
            &alice(),
            &id,
            &size(None, Some(2048), None),
            &[ChangeImpact::PowerOff],
        )
        .await
        .unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
    let vm = r.engine.get_vm(&Scope::All, &id).await.unwrap();
    assert_eq!(vm.resources.memory_mib, 2048);
    assert_eq!(vm.power, PowerState::Running);
}

#[tokio::test]
async fn a_disk_shrink_is_always_refused() {
    let r = rig("sim", |_| {}).await;
    let id = create(&r.engine, "web-2").await;
    let everything = [
        ChangeImpact::Hot,
        ChangeImpact::Reboot,
        ChangeImpact::PowerOff,
        ChangeImpact::DataDestructive,
    ];
    let e = r
        .engine
        .resize_vm(&alice(), &id, &size(None, None, Some(5)), &everything)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(e.code(), CODE_RESIZE_NOT_ALLOWED, "{e}");
    assert_eq!(e.field(), Some("disk_gib"), "{e}");
    assert!(e.message().contains("data_destructive"), "{e}");
    assert_eq!(sim_size(&r.sim, &id).disk_gib, 10);
}

#[tokio::test]
async fn growth_is_held_to_the_quota_and_the_host() {
    let r = rig("sim", |c| {
        c.projects[0].quota.max_vcpus = Some(3);
    })
    .await;
    let a = create(&r.engine, "a").await;
    let _b = create(&r.engine, "b").await;
    let hot = [ChangeImpact::Hot];
    // 1 + 1 vCPUs in use; growing `a` to 3 makes 4 > 3.
    let e = r
        .engine
        .resize_vm(&alice(), &a, &size(Some(3), None, None), &hot)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    assert_eq!(
        r.engine
            .get_vm(&Scope::All, &a)
            .await
            .unwrap()
            .resources
            .vcpus,
        1
    );
    // 2 fits (1 + 2 = 3); after it, nothing more does.
    let s = r
        .engine
        .resize_vm(&alice(), &a, &size(Some(2), None, None), &hot)
        .await
        .unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
    let e = r
        .engine
        .create_vm(
            &alice(),
            VmSpec::new("c", "ubuntu-24.04", "small").with_zone("zone-a"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    // Larger than the host allows: refused naming the field.
    let e = r
        .engine
        .resize_vm(&alice(), &a, &size(None, Some(1 << 40), None), &hot)
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::InvalidSpec | ErrorKind::QuotaExceeded),
        "{e}"
    );
    // A shrink of memory frees quota and needs no room.
    let s = r
        .engine
        .resize_vm(&alice(), &a, &size(Some(1), Some(512), None), &hot)
        .await
        .unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
    assert_eq!(sim_size(&r.sim, &a).memory_mib, 512);
}

#[tokio::test]
async fn a_host_without_resize_is_refused_before_any_job() {
    let r = rig("sim", |c| {
        c.zones[0].limits.disable.push("resize".into());
    })
    .await;
    let id = create(&r.engine, "web-3").await;
    let e = r
        .engine
        .resize_vm(
            &alice(),
            &id,
            &size(Some(2), None, None),
            &[ChangeImpact::Hot],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
    assert!(e.to_string().contains("resize"), "{e}");
}

#[tokio::test]
async fn a_resize_cancelled_while_queued_gives_its_quota_back() {
    let r = rig("sim", |c| {
        c.projects[0].quota.max_vcpus = Some(4);
        c.providers[0].settings["op_latency"] = serde_json::json!({"reboot_vm": "400ms"});
    })
    .await;
    let id = create(&r.engine, "queued").await;
    // A slow reboot holds the VM's queue; the resize waits behind it.
    let reboot = r.engine.reboot_vm(&alice(), &id, false).await.unwrap();
    let s = r
        .engine
        .resize_vm(
            &alice(),
            &id,
            &size(Some(4), None, None),
            &[ChangeImpact::Hot],
        )
        .await
        .unwrap();
    // Its growth is held at once: nothing else fits the quota meanwhile.
    assert_eq!(
        r.engine
            .get_vm(&Scope::All, &id)
            .await
            .unwrap()
            .resources
            .vcpus,
        4
    );
    let e = r
        .engine
        .create_vm(
            &alice(),
            VmSpec::new("other", "ubuntu-24.04", "small").with_zone("zone-a"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    let job = r
        .engine
        .cancel_job(&Scope::All, &s.job_id, &Principal::new("alice"))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    wait(&r.engine, &reboot.job_id).await;
    let vm = r.engine.get_vm(&Scope::All, &id).await.unwrap();
    assert_eq!(vm.resources.vcpus, 1, "the VM keeps its size");
    assert_eq!(sim_size(&r.sim, &id).vcpus, 1);
    // The quota it held is free again: 1 + 3 = 4 fits.
    let s = r
        .engine
        .resize_vm(
            &alice(),
            &id,
            &size(Some(4), None, None),
            &[ChangeImpact::Hot],
        )
        .await
        .unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
}
