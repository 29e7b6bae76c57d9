//! The conformance suites: [`store`] checks the store contract; the rest of this module is the
//! provider conformance suite: reusable checks of the [`Provider`] contract, gated by the
//! provider's declared capabilities. Every provider crate runs [`run_all`] against its real peer;
//! the simulator runs it in every CI run.
//!
//! ```no_run
//! # async fn t(provider: std::sync::Arc<dyn hcp_core::Provider>) -> hcp_core::Result<()> {
//! let fixture = hcp_core::testkit::Fixture::new("host-1", "ubuntu-24.04");
//! hcp_core::testkit::run_all(provider, &fixture).await
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{CatalogConfig, Config, HostConfig, ProjectConfig, ProviderConfig, ZoneConfig};
use crate::store::{PageRequest, Scope};
use crate::{
    CreateVm, DeleteVm, Engine, Error, ErrorKind, Flavor, GetConsole, HcpMark, HostInventory,
    Image, MigrateVm, NativeVm, OpContext, PowerState, ProjectId, Provider, Resources, Result,
    SnapshotVm, StartVm, StopVm, VmId, VmTarget,
};
use crate::{DeleteSnapshot, ListSnapshots, RevertSnapshot};

/// Where and how the suite creates its VMs.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The host to create VMs on.
    pub host: String,
    /// A second host for migration checks, if the provider has one.
    pub other_host: Option<String>,
    /// An image present on the host.
    pub image: String,
    /// The size of test VMs (keep it small).
    pub resources: Resources,
    /// The project test VMs belong to.
    pub project: ProjectId,
    /// A prefix for test VM names, so runs do not collide.
    pub prefix: String,
    /// How long the graceful part of a stop may take.
    pub graceful_timeout: Duration,
}

impl Fixture {
    /// Creates a fixture for `host` and `image` with 1 vCPU, 64 MiB and 1 GiB VMs.
    pub fn new(host: impl Into<String>, image: impl Into<String>) -> Self {
        Fixture {
            host: host.into(),
            other_host: None,
            image: image.into(),
            resources: Resources {
                vcpus: 1,
                memory_mib: 64,
                disk_gib: 1,
            },
            project: ProjectId::new("conformance"),
            prefix: format!("ct{}", std::process::id() % 100_000),
            graceful_timeout: Duration::from_secs(5),
        }
    }

    /// Sets a second host for migration checks.
    pub fn with_other_host(mut self, host: impl Into<String>) -> Self {
        self.other_host = Some(host.into());
        self
    }

    /// Sets the size of test VMs.
    pub fn with_resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// Sets how long a graceful stop may take.
    pub fn with_graceful_timeout(mut self, timeout: Duration) -> Self {
        self.graceful_timeout = timeout;
        self
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    fn create_args(&self, what: &str) -> (CreateVm, VmTarget) {
        let vm_id = VmId::generate();
        let mark = HcpMark {
            vm_id: vm_id.clone(),
            project: self.project.clone(),
            image: Some(self.image.clone()),
            flavor: None,
            zone: None,
            created_at: Some(chrono::Utc::now()),
            user_data: false,
            server_group: None,
        };
        let name = self.name(what);
        let args = CreateVm::new(mark, &self.host, &name, &self.image, self.resources);
        let target = VmTarget {
            vm_id,
            name,
            host: self.host.clone(),
            native_id: None,
        };
        (args, target)
    }
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Error::internal(format!("conformance: {}", format!($($msg)+))));
        }
    };
}

fn ctx() -> OpContext {
    OpContext::detached()
}

async fn find(p: &dyn Provider, host: &str, vm_id: &VmId) -> Result<Option<NativeVm>> {
    let inv = p.host_inventory(HostInventory::new(host)).await?;
    Ok(inv
        .vms
        .into_iter()
        .find(|v| v.mark.as_ref().is_some_and(|m| &m.vm_id == vm_id)))
}

async fn create(p: &dyn Provider, f: &Fixture, what: &str) -> Result<VmTarget> {
    let (args, mut target) = f.create_args(what);
    let created = p.create_vm(&ctx(), args).await?;
    target.native_id = Some(created.native_id);
    Ok(target)
}

async fn destroy(p: &dyn Provider, t: &VmTarget) -> Result<()> {
    p.delete_vm(&ctx(), DeleteVm::new(t.clone()).with_force(true))
        .await
        .map(|_| ())
}

/// Runs every check the provider's capabilities allow, one after another.
///
/// # Errors
/// The first failed check, naming it.
pub async fn run_all(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    type Check = fn(Arc<dyn Provider>, Fixture) -> futures::future::BoxFuture<'static, Result<()>>;
    let checks: [(&str, Check); 11] = [
        ("lifecycle", |p, f| {
            Box::pin(async move { lifecycle(p, &f).await })
        }),
        ("idempotent_delete", |p, f| {
            Box::pin(async move { idempotent_delete(p, &f).await })
        }),
        ("not_found", |p, f| {
            Box::pin(async move { not_found(p, &f).await })
        }),
        ("power_transitions", |p, f| {
            Box::pin(async move { power_transitions(p, &f).await })
        }),
        ("undeclared_capabilities", |p, f| {
            Box::pin(async move { undeclared_capabilities(p, &f).await })
        }),
        ("inventory_reflects_changes", |p, f| {
            Box::pin(async move { inventory_reflects_changes(p, &f).await })
        }),
        ("create_is_idempotent", |p, f| {
            Box::pin(async move { create_is_idempotent(p, &f).await })
        }),
        ("mark_rebuilds_ownership", |p, f| {
            Box::pin(async move { mark_rebuilds_ownership(p, &f).await })
        }),
        ("concurrent_operations", |p, f| {
            Box::pin(async move { concurrent_operations(p, &f).await })
        }),
        ("declared_capabilities", |p, f| {
            Box::pin(async move { declared_capabilities(p, &f).await })
        }),
        ("snapshot_lifecycle", |p, f| {
            Box::pin(async move { snapshot_lifecycle(p, &f).await })
        }),
    ];
    for (name, check) in checks {
        check(p.clone(), f.clone())
            .await
            .map_err(|e| e.with_context("conformance_check", name))?;
    }
    Ok(())
}

/// Create (started) → visible and running → stop → delete → gone.
///
/// # Errors
/// The first broken expectation.
pub async fn lifecycle(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    let t = create(p.as_ref(), f, "life").await?;
    let seen = find(p.as_ref(), &f.host, &t.vm_id).await?;
    ensure!(
        seen.is_some(),
        "a created VM appears in its host's inventory with HCP's mark"
    );
    let seen = seen.unwrap_or_else(|| unreachable!());
    ensure!(
        seen.power == PowerState::Running,
        "a VM created with start=true runs (got {})",
        seen.power
    );
    ensure!(
        seen.name == t.name,
        "the VM keeps its name (got {})",
        seen.name
    );
    p.stop_vm(&ctx(), StopVm::new(t.clone()).with_force(true))
        .await?;
    let d = p.delete_vm(&ctx(), DeleteVm::new(t.clone())).await?;
    ensure!(d.existed, "deleting an existing VM reports existed=true");
    ensure!(
        find(p.as_ref(), &f.host, &t.vm_id).await?.is_none(),
        "a deleted VM leaves the inventory"
    );
    Ok(())
}

/// Deleting a VM that is already gone succeeds with `existed: false`.
///
/// # Errors
/// The first broken expectation.
pub async fn idempotent_delete(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    let t = create(p.as_ref(), f, "idem").await?;
    destroy(p.as_ref(), &t).await?;
    let again = p
        .delete_vm(&ctx(), DeleteVm::new(t.clone()).with_force(true))
        .await?;
    ensure!(
        !again.existed,
        "a second delete succeeds and reports existed=false"
    );
    Ok(())
}

/// Operations on an unknown VM fail with `NotFound` (delete excepted: it succeeds).
///
/// # Errors
/// The first broken expectation.
pub async fn not_found(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    let ghost = VmTarget {
        vm_id: VmId::generate(),
        name: f.name("ghost"),
        host: f.host.clone(),
        native_id: None,
    };
    let e = p.start_vm(&ctx(), StartVm::new(ghost.clone())).await.err();
    ensure!(
        e.as_ref().map(Error::kind) == Some(ErrorKind::NotFound),
        "start of an unknown VM is NotFound (got {e:?})"
    );
    let e = p.stop_vm(&ctx(), StopVm::new(ghost.clone())).await.err();
    ensure!(
        e.as_ref().map(Error::kind) == Some(ErrorKind::NotFound),
        "stop of an unknown VM is NotFound (got {e:?})"
    );
    let d = p.delete_vm(&ctx(), DeleteVm::new(ghost)).await?;
    ensure!(
        !d.existed,
        "delete of an unknown VM succeeds with existed=false"
    );
    Ok(())
}

/// Start and stop are idempotent and reach the requested state; a running VM refuses a plain
/// delete; reboot needs a running VM.
///
/// # Errors
/// The first broken expectation.
pub async fn power_transitions(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    let t = create(p.as_ref(), f, "power").await?;
    let result = async {
        let s = p.start_vm(&ctx(), StartVm::new(t.clone())).await?;
        ensure!(
            s.was_running,
            "starting a running VM succeeds and says it was running"
        );
        let e = p.delete_vm(&ctx(), DeleteVm::new(t.clone())).await.err();
        ensure!(
            e.as_ref().map(Error::kind) == Some(ErrorKind::Conflict),
            "a running VM refuses delete without force (got {e:?})"
        );
        p.reboot_vm(&ctx(), crate::RebootVm::new(t.clone())).await?;
        let stop = StopVm::new(t.clone()).with_graceful_timeout(f.graceful_timeout);
        p.stop_vm(&ctx(), stop.clone()).await?;
        let seen = find(p.as_ref(), &f.host, &t.vm_id).await?.map(|v| v.power);
        ensure!(
            seen == Some(PowerState::Stopped),
            "a stopped VM reports STOPPED (got {seen:?})"
        );
        let again = p.stop_vm(&ctx(), stop).await?;
        ensure!(
            again.was_stopped,
            "stopping a stopped VM succeeds and says it was stopped"
        );
        let e = p
            .reboot_vm(&ctx(), crate::RebootVm::new(t.clone()))
            .await
            .err();
        ensure!(
            e.as_ref().map(Error::kind) == Some(ErrorKind::Conflict),
            "rebooting a stopped VM is a Conflict (got {e:?})"
        );
        p.start_vm(&ctx(), StartVm::new(t.clone())).await?;
        let seen = find(p.as_ref(), &f.host, &t.vm_id).await?.map(|v| v.power);
        ensure!(
            seen == Some(PowerState::Running),
            "a started VM reports RUNNING (got {seen:?})"
        );
        Ok(())
    }
    .await;
    destroy(p.as_ref(), &t).await?;
    result
}

/// Snapshot and migrate refuse with `FeatureNotSupported` when the provider does not declare them.
///
/// # Errors
/// The first broken expectation.
pub async fn undeclared_capabilities(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    let caps = p.capabilities();
    if caps.snapshot && caps.live_migration {
        return Ok(());
    }
    let t = create(p.as_ref(), f, "caps").await?;
    let result = async {
        if !caps.snapshot {
            let e = p
                .snapshot_vm(&ctx(), SnapshotVm::new(t.clone()).with_name("s1"))
                .await
                .err();
            ensure!(
                e.as_ref().map(Error::kind) == Some(ErrorKind::FeatureNotSupported),
                "snapshot without the capability is FeatureNotSupported (got {e:?})"
            );
        }
        if !caps.live_migration {
            let e = p
                .migrate_vm(
                    &ctx(),
                    MigrateVm::new(t.clone())
                        .with_target_host(f.other_host.clone().unwrap_or_else(|| f.host.clone())),
                )
                .await
                .err();
            ensure!(
                e.as_ref().map(Error::kind) == Some(ErrorKind::FeatureNotSupported),
                "migrate without the capability is FeatureNotSupported (got {e:?})"
            );
        }
        Ok(())
    }
    .await;
    destroy(p.as_ref(), &t).await?;
    result
}

/// Inventory shows new VMs, their size and mark, and used capacity that follows them.
///
/// # Errors
/// The first broken expectation.
pub async fn inventory_reflects_changes(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    let hosts = p.list_hosts().await?;
    ensure!(
        hosts.iter().any(|h| h.name == f.host),
        "list_hosts includes the fixture host {}",
        f.host
    );
    let before = p.host_inventory(HostInventory::new(&f.host)).await?;
    let t = create(p.as_ref(), f, "inv").await?;
    let after = p.host_inventory(HostInventory::new(&f.host)).await?;
    let result = async {
        ensure!(
            after.vms.len() == before.vms.len() + 1,
            "inventory grows by one VM ({} → {})",
            before.vms.len(),
            after.vms.len()
        );
        let vm = after
            .vms
            .iter()
            .find(|v| v.mark.as_ref().is_some_and(|m| m.vm_id == t.vm_id));
        ensure!(vm.is_some(), "the new VM carries HCP's mark");
        let vm = vm.unwrap_or_else(|| unreachable!());
        let mark = vm.mark.as_ref().unwrap_or_else(|| unreachable!());
        ensure!(mark.project == f.project, "the mark records the project");
        ensure!(
            vm.resources.vcpus == f.resources.vcpus,
            "inventory reports the VM's vCPUs"
        );
        ensure!(
            vm.resources.memory_mib == f.resources.memory_mib,
            "inventory reports the VM's memory"
        );
        ensure!(
            after.memory_mib_used >= before.memory_mib_used + f.resources.memory_mib,
            "used memory grows with the VM"
        );
        Ok(())
    }
    .await;
    destroy(p.as_ref(), &t).await?;
    let gone = p.host_inventory(HostInventory::new(&f.host)).await?;
    ensure!(
        gone.vms.len() == before.vms.len(),
        "inventory shrinks back after delete"
    );
    result
}

/// A create retried with the same mark returns the first VM instead of a second one.
///
/// # Errors
/// The first broken expectation.
pub async fn create_is_idempotent(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    let (args, mut t) = f.create_args("retry");
    let first = p.create_vm(&ctx(), args.clone()).await?;
    t.native_id = Some(first.native_id.clone());
    let second = p.create_vm(&ctx(), args).await;
    let count = p
        .host_inventory(HostInventory::new(&f.host))
        .await?
        .vms
        .iter()
        .filter(|v| v.mark.as_ref().is_some_and(|m| m.vm_id == t.vm_id))
        .count();
    destroy(p.as_ref(), &t).await?;
    let second = second?;
    ensure!(
        second.native_id == first.native_id,
        "a retried create returns the same VM"
    );
    ensure!(
        count == 1,
        "a retried create leaves exactly one VM (found {count})"
    );
    Ok(())
}

/// An engine started with an empty store rebuilds VMs, their ids and projects from the marks.
///
/// # Errors
/// The first broken expectation.
pub async fn mark_rebuilds_ownership(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    let a = create(p.as_ref(), f, "own-a").await?;
    let (mut args, mut b) = f.create_args("own-b");
    let other = ProjectId::new("conformance-other");
    args.mark.project = other.clone();
    args.project = other.clone();
    b.native_id = Some(p.create_vm(&ctx(), args).await?.native_id);
    let result = async {
        let engine = engine_for(p.clone(), f).await?;
        let vm = engine
            .get_vm(&Scope::Project(f.project.clone()), &a.vm_id)
            .await?;
        ensure!(vm.spec.name == a.name, "the rebuilt VM keeps its name");
        ensure!(
            *vm.binding.host == *f.host,
            "the rebuilt VM is bound to its host"
        );
        let hidden = engine
            .get_vm(&Scope::Project(f.project.clone()), &b.vm_id)
            .await
            .err();
        ensure!(
            hidden.map(|e| e.kind()) == Some(ErrorKind::NotFound),
            "another project's VM is not visible"
        );
        let vm_b = engine
            .get_vm(&Scope::Project(other.clone()), &b.vm_id)
            .await?;
        ensure!(vm_b.project == other, "the rebuilt VM keeps its project");
        let listed = engine
            .list_vms(&Scope::Project(f.project.clone()), &PageRequest::all())
            .await?;
        ensure!(
            !listed.items.iter().any(|v| v.id == b.vm_id),
            "another project's VM is not listed"
        );
        Ok(())
    }
    .await;
    destroy(p.as_ref(), &a).await?;
    destroy(p.as_ref(), &b).await?;
    result
}

/// Operations on different VMs run concurrently without interfering.
///
/// # Errors
/// The first broken expectation.
pub async fn concurrent_operations(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    let creates = (0..4).map(|i| {
        let p = p.clone();
        let f = f.clone();
        async move { create(p.as_ref(), &f, &format!("conc{i}")).await }
    });
    let results = futures::future::join_all(creates).await;
    let mut targets = Vec::new();
    let mut first_err = None;
    for r in results {
        match r {
            Ok(t) => targets.push(t),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let detached = ctx();
    let stops = targets
        .iter()
        .map(|t| p.stop_vm(&detached, StopVm::new(t.clone()).with_force(true)));
    let stopped = futures::future::join_all(stops).await;
    let inv = p.host_inventory(HostInventory::new(&f.host)).await?;
    let deletes = targets
        .iter()
        .map(|t| p.delete_vm(&detached, DeleteVm::new(t.clone()).with_force(true)));
    let deleted = futures::future::join_all(deletes).await;
    if let Some(e) = first_err {
        return Err(e);
    }
    for s in stopped {
        s?;
    }
    for t in &targets {
        let power = inv
            .vms
            .iter()
            .find(|v| v.mark.as_ref().is_some_and(|m| m.vm_id == t.vm_id))
            .map(|v| v.power);
        ensure!(
            power == Some(PowerState::Stopped),
            "each of 4 concurrently stopped VMs is STOPPED (got {power:?})"
        );
    }
    for d in deleted {
        ensure!(d?.existed, "each concurrently deleted VM existed");
    }
    Ok(())
}

/// Console, snapshot and migration work where declared.
///
/// # Errors
/// The first broken expectation.
pub async fn declared_capabilities(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    let caps = p.capabilities();
    let t = create(p.as_ref(), f, "decl").await?;
    let result = async {
        if caps.has(crate::Capability::Console) {
            let c = p.console(GetConsole::new(t.clone())).await?;
            ensure!(
                c.expires_at > chrono::Utc::now(),
                "a console link expires in the future"
            );
            ensure!(!c.url.is_empty(), "a console has a URL");
        }
        if caps.snapshot {
            let s = p
                .snapshot_vm(&ctx(), SnapshotVm::new(t.clone()).with_name("s1"))
                .await?;
            ensure!(!s.snapshot_id.is_empty(), "a snapshot has an id");
        }
        if caps.live_migration
            && let Some(other) = &f.other_host
        {
            let m = p
                .migrate_vm(&ctx(), MigrateVm::new(t.clone()).with_target_host(other))
                .await?;
            ensure!(&m.host == other, "a migrated VM lives on the target host");
            ensure!(
                find(p.as_ref(), other, &t.vm_id).await?.is_some(),
                "the target host's inventory shows the migrated VM"
            );
            let mut moved = t.clone();
            moved.host = other.clone();
            moved.native_id = Some(m.native_id);
            destroy(p.as_ref(), &moved).await?;
        }
        Ok(())
    }
    .await;
    destroy(p.as_ref(), &t).await?;
    result?;
    if caps.cold_migration
        && let Some(other) = &f.other_host
    {
        cold_move(p.as_ref(), f, other).await?;
    }
    Ok(())
}

/// A declared `cold_migration`: a stopped VM moves to `other` and stays stopped there.
async fn cold_move(p: &dyn Provider, f: &Fixture, other: &str) -> Result<()> {
    let t = create(p, f, "cold").await?;
    p.stop_vm(&ctx(), StopVm::new(t.clone()).with_force(true))
        .await?;
    let moved = async {
        let m = p
            .migrate_vm(
                &ctx(),
                MigrateVm::new(t.clone())
                    .with_target_host(other)
                    .with_cold(true),
            )
            .await?;
        ensure!(m.host == other, "a VM moved cold lives on the target host");
        let seen = find(p, other, &t.vm_id).await?;
        ensure!(
            seen.as_ref().map(|v| v.power) == Some(PowerState::Stopped),
            "the target host's inventory shows the VM moved cold, stopped (got {seen:?})"
        );
        let mut moved = t.clone();
        moved.host = other.to_string();
        moved.native_id = Some(m.native_id);
        Ok(moved)
    }
    .await;
    match moved {
        Ok(moved) => destroy(p, &moved).await,
        Err(e) => {
            destroy(p, &t).await?;
            Err(e)
        }
    }
}

/// A declared `snapshot` capability covers the whole snapshot life: take, list, revert and
/// delete, each answering as [`Provider`] documents.
///
/// # Behavior
/// Creates a running VM, takes `s1` and `s2`, expects both listed oldest first with the names
/// they were taken with, reverts to `s1` (the reply's power state matches the VM's inventory
/// power state), deletes `s2` (existed), deletes it again (did not exist), expects only `s1`
/// listed, and expects a revert to a snapshot that never existed to be `NotFound`. Skips
/// everything when the provider does not declare `snapshot`.
///
/// # Errors
/// The first broken expectation.
pub async fn snapshot_lifecycle(p: Arc<dyn Provider>, f: &Fixture) -> Result<()> {
    if !p.capabilities().snapshot {
        return Ok(());
    }
    let t = create(p.as_ref(), f, "snap").await?;
    let result = async {
        for name in ["s1", "s2"] {
            let s = p
                .snapshot_vm(&ctx(), SnapshotVm::new(t.clone()).with_name(name))
                .await?;
            ensure!(!s.snapshot_id.is_empty(), "snapshot {name} has an id");
        }
        let names = |l: &[crate::NativeSnapshot]| l.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        let listed = p.list_snapshots(ListSnapshots::new(t.clone())).await?;
        ensure!(
            names(&listed) == ["s1", "s2"],
            "list_snapshots shows s1 then s2 (got {:?})",
            names(&listed)
        );
        let reverted = p
            .revert_snapshot(&ctx(), RevertSnapshot::new(t.clone()).with_name("s1"))
            .await?;
        let power = find(p.as_ref(), &t.host, &t.vm_id).await?.map(|v| v.power);
        ensure!(
            power == Some(reverted.power),
            "after a revert the inventory shows the power state the reply names ({:?}, inventory {power:?})",
            reverted.power
        );
        ensure!(
            !reverted.memory_kept || reverted.power == PowerState::Running,
            "a revert that kept memory state leaves the VM running (got {:?})",
            reverted.power
        );
        let d = p
            .delete_snapshot(&ctx(), DeleteSnapshot::new(t.clone()).with_name("s2"))
            .await?;
        ensure!(d.existed, "deleting s2 reports that it existed");
        let again = p
            .delete_snapshot(&ctx(), DeleteSnapshot::new(t.clone()).with_name("s2"))
            .await?;
        ensure!(!again.existed, "deleting s2 twice reports that it was gone");
        let listed = p.list_snapshots(ListSnapshots::new(t.clone())).await?;
        ensure!(
            names(&listed) == ["s1"],
            "after deleting s2 only s1 is listed (got {:?})",
            names(&listed)
        );
        match p
            .revert_snapshot(&ctx(), RevertSnapshot::new(t.clone()).with_name("never-taken"))
            .await
        {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            other => ensure!(
                false,
                "a revert to a snapshot that never existed is NotFound (got {other:?})"
            ),
        }
        Ok(())
    }
    .await;
    destroy(p.as_ref(), &t).await?;
    result
}

/// Builds an engine with an empty in-memory store over `p`, for checks that need one.
///
/// # Errors
/// The engine's build errors.
pub async fn engine_for(p: Arc<dyn Provider>, f: &Fixture) -> Result<Engine> {
    let hosts = p.list_hosts().await?;
    let mut zones: Vec<String> = hosts.iter().map(|h| h.zone.clone()).collect();
    zones.sort();
    zones.dedup();
    let info = p.info();
    let config = Config {
        providers: vec![ProviderConfig {
            name: info.name.clone(),
            kind: "testkit".into(),
            limits: Default::default(),
            settings: serde_json::Value::Null,
            hosts: hosts
                .iter()
                .map(|h| HostConfig {
                    name: h.name.clone(),
                    zone: h.zone.clone(),
                    vcpus: None,
                    memory_mib: None,
                    limits: Default::default(),
                    settings: serde_json::Value::Null,
                    cluster: None,
                    max_jobs: None,
                })
                .collect(),
            clusters: Vec::new(),
        }],
        zones: zones
            .into_iter()
            .map(|name| ZoneConfig {
                name,
                description: String::new(),
                limits: Default::default(),
            })
            .collect(),
        catalog: CatalogConfig {
            images: vec![Image {
                name: f.image.clone(),
                os: "linux".into(),
                description: String::new(),
                min_disk_gib: 0,
            }],
            flavors: vec![Flavor {
                name: "conformance".into(),
                vcpus: f.resources.vcpus,
                memory_mib: f.resources.memory_mib,
                disk_gib: f.resources.disk_gib,
            }],
            networks: vec![],
        },
        engine: Default::default(),
        projects: Vec::<ProjectConfig>::new(),
        secrets: Default::default(),
        source: None,
    };
    let shared: HashMap<String, Arc<dyn Provider>> =
        BTreeMap::from([(info.name, p)]).into_iter().collect();
    Engine::builder(config)
        .provider_kind("testkit", move |c, _| {
            shared
                .get(&c.name)
                .cloned()
                .ok_or_else(|| Error::internal("testkit provider missing"))
        })
        .without_background_reconcile()
        .build()
        .await
}

pub mod store;

/// One Kubernetes example beside the shipped manifests (`deploy/kubernetes/examples/<kind>/`):
/// its ConfigMap's hosts file, loaded with HCP's own config loader, and its Secret.
#[derive(Debug)]
pub struct KubernetesExample {
    /// The ConfigMap's `hosts.yaml`.
    pub config: Config,
    /// The Secret manifest.
    pub secret: serde_yaml_ng::Value,
}

impl KubernetesExample {
    /// Loads `dir/configmap.yaml` and `dir/secret.yaml`.
    ///
    /// # Panics
    /// A test helper: panics, naming what is wrong, unless the ConfigMap is named `hcp-config`
    /// and points `HCP_CONFIG` at `/etc/hcp/hosts.yaml`, its `hosts.yaml` loads, and the Secret
    /// is named `hcp-secrets` (the names `deploy/kubernetes/deployment.yaml` mounts unchanged).
    pub fn load(dir: &std::path::Path) -> KubernetesExample {
        let manifest = |name: &str| -> serde_yaml_ng::Value {
            let text = std::fs::read_to_string(dir.join(name))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()));
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let configmap = manifest("configmap.yaml");
        assert_eq!(configmap["kind"].as_str(), Some("ConfigMap"));
        assert_eq!(configmap["metadata"]["name"].as_str(), Some("hcp-config"));
        let data = &configmap["data"];
        assert_eq!(data["HCP_CONFIG"].as_str(), Some("/etc/hcp/hosts.yaml"));
        let hosts_yaml = data["hosts.yaml"].as_str().expect("data.hosts.yaml");
        let config = Config::from_yaml(hosts_yaml, "configmap.yaml hosts.yaml")
            .unwrap_or_else(|e| panic!("configmap.yaml hosts.yaml: {e}"));
        let secret = manifest("secret.yaml");
        assert_eq!(secret["kind"].as_str(), Some("Secret"));
        assert_eq!(secret["metadata"]["name"].as_str(), Some("hcp-secrets"));
        KubernetesExample { config, secret }
    }

    /// Asserts that the Secret ships a `REPLACE-ME` placeholder for the key `key`.
    ///
    /// # Panics
    /// When it does not.
    pub fn assert_placeholder(&self, key: &str) {
        assert_eq!(
            self.secret["stringData"][key].as_str(),
            Some("REPLACE-ME"),
            "the Secret ships a placeholder for {key}"
        );
    }

    /// Asserts that the first provider's setting `setting` names a file of the mounted Secret
    /// (`/run/secrets/<key>`) and that the Secret ships a placeholder for it.
    ///
    /// # Panics
    /// When either does not hold.
    pub fn assert_secret_file(&self, setting: &str) {
        let file = self.config.providers[0].settings[setting]
            .as_str()
            .unwrap_or_else(|| panic!("{setting} is set"))
            .to_string();
        let key = file
            .strip_prefix("/run/secrets/")
            .unwrap_or_else(|| panic!("{setting} is read from the mounted Secret: {file}"));
        self.assert_placeholder(key);
    }
}
