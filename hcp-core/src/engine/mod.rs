//! The engine: one object every shell (service, CLI, Python) drives. It validates and places
//! requests, negotiates capabilities, writes desired state and jobs, runs jobs with bounded
//! concurrency, retries and timeouts, streams job logs, and reconciles desired with observed state.

mod adopt;
mod capacity;
mod day2;
mod groups;
mod inventory;
mod leases;
mod migrate;
mod plan;
mod scheduler;
mod watch;
mod worker;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub use adopt::AdoptRequest;
pub use day2::{
    CODE_RESIZE_NOT_ALLOWED, CODE_VM_STATE_CONFLICT, ResizeRequest, Snapshot, SnapshotSubmitted,
    snapshot_id,
};
pub use groups::{MAX_SERVER_GROUP_MEMBERS, NewServerGroup};
pub use inventory::{InventoryVm, ProviderCapabilities, ProviderStatus, RefreshReport};
pub use migrate::MigrateRequest;
pub use plan::{ChangeImpact, FieldPlan, plan_resize};
pub use watch::JobWatch;

use crate::fastmap::{HashMap, HashSet};
use crate::store::{
    IdempotencyRecord, IdempotencyScope, JobFilter, MemoryStore, Page, PageRequest, Scope, Store,
    Submission, SubmitOutcome, VmWrite,
};
use crate::{
    CODE_IDEMPOTENCY_KEY_IN_PROGRESS, Capabilities, Capability, Catalog, Config, Console,
    ConsoleKind, DesiredState, Drift, EngineSettings, Error, ErrorKind, Event, EventFilter,
    EventKind, EventSink, GetConsole, Job, JobAction, JobId, JobState, JobUpdate, NoopObserver,
    Observer, Operation, PendingReason, PowerState, Principal, ProjectId, Provider,
    ProviderBinding, ProviderConfig, Quota, Requirements, Result, Secrets, TracingSink, Vm, VmId,
    VmSpec, VmTarget,
};

use inventory::InventoryState;
use scheduler::SchedMsg;
use watch::LogMsg;

/// The future of a store call the worker awaits: finished before it is returned on the in-memory
/// store (which answers without waiting), boxed on any other (whose answer is I/O away). Small
/// either way, so the futures that await it stay small: a job's futures are moved and boxed
/// whole, and each byte of them is copied each time.
pub(crate) type StoreCall<'a, T> =
    futures::future::Either<std::future::Ready<T>, futures::future::BoxFuture<'a, T>>;

/// Builds a provider from its section of the hosts file.
pub type ProviderFactory =
    Arc<dyn Fn(&ProviderConfig, &Secrets) -> Result<Arc<dyn Provider>> + Send + Sync>;

/// Who is asking, in which project, and with which idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The project the request acts in.
    pub project: ProjectId,
    /// Who asks.
    pub principal: Principal,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
    /// The leadership a singleton duty submits under (drift repairs); `None` for requests.
    pub(crate) fence: Option<crate::LeaderFence>,
}

impl RequestContext {
    /// Creates a context for `principal` acting in `project`.
    pub fn new(project: impl Into<ProjectId>, principal: Principal) -> Self {
        RequestContext {
            project: project.into(),
            principal,
            idempotency_key: None,
            fence: None,
        }
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }

    /// Returns the scope of this request's lookups: its project only.
    pub fn scope(&self) -> Scope {
        Scope::Project(self.project.clone())
    }
}

/// An infrastructure change to submit as a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Creates (and starts) a VM.
    Create {
        /// The VM.
        spec: VmSpec,
        /// Pins the VM to a host (operators and the Hyper-V routes only; tenants never set it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Deletes a VM, shutting it down first when it runs (gracefully, hard after the stop timeout).
    Delete {
        /// The VM.
        vm_id: VmId,
        /// Skips the graceful shutdown.
        force: bool,
    },
    /// Powers a VM on.
    Start {
        /// The VM.
        vm_id: VmId,
    },
    /// Powers a VM off.
    Stop {
        /// The VM.
        vm_id: VmId,
        /// Skips the graceful shutdown.
        force: bool,
    },
    /// Restarts a VM.
    Reboot {
        /// The VM.
        vm_id: VmId,
        /// Resets instead of a guest reboot.
        hard: bool,
    },
    /// Takes a snapshot.
    Snapshot {
        /// The VM.
        vm_id: VmId,
        /// The snapshot name.
        name: String,
    },
    /// Moves a running VM to another host of its provider and zone (operators only; see
    /// [`Engine::migrate_vm`]).
    Migrate {
        /// The VM.
        vm_id: VmId,
        /// The target host; `None` lets the engine pick another host of the VM's zone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_host: Option<String>,
        /// Accepts a cold move where no live one is possible.
        #[serde(default)]
        allow_cold: bool,
    },
    /// Returns a VM to one of its snapshots.
    RevertSnapshot {
        /// The VM.
        vm_id: VmId,
        /// HCP's id of the snapshot (`snap-…`).
        snapshot_id: String,
    },
    /// Deletes one of a VM's snapshots.
    DeleteSnapshot {
        /// The VM.
        vm_id: VmId,
        /// HCP's id of the snapshot (`snap-…`).
        snapshot_id: String,
    },
    /// Changes a VM's size in place, within the impacts the caller allows.
    Resize {
        /// The VM.
        vm_id: VmId,
        /// The new size.
        change: ResizeRequest,
        /// What the caller accepts the change may take (`hot`, `reboot`, `power_off`).
        allow: Vec<ChangeImpact>,
    },
    /// Takes a VM created outside HCP into the request's project (operators only; see
    /// [`Engine::adopt_vm`]).
    Adopt(AdoptRequest),
    /// Removes HCP's mark from a VM and forgets it, leaving the VM as it is (operators only;
    /// see [`Engine::release_vm`]).
    Release {
        /// The VM.
        vm_id: VmId,
    },
}

impl Action {
    /// Returns the operation the action performs.
    pub fn operation(&self) -> Operation {
        match self {
            Action::Create { .. } => Operation::CreateVm,
            Action::Delete { .. } => Operation::DeleteVm,
            Action::Start { .. } => Operation::StartVm,
            Action::Stop { .. } => Operation::StopVm,
            Action::Reboot { .. } => Operation::RebootVm,
            Action::Snapshot { .. } => Operation::SnapshotVm,
            Action::Migrate { .. } => Operation::MigrateVm,
            Action::RevertSnapshot { .. } => Operation::RevertSnapshot,
            Action::DeleteSnapshot { .. } => Operation::DeleteSnapshot,
            Action::Resize { .. } => Operation::ResizeVm,
            Action::Adopt(_) => Operation::AdoptVm,
            Action::Release { .. } => Operation::ReleaseVm,
        }
    }
}

/// The answer to an accepted submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The VM the job acts on.
    pub vm_id: VmId,
    /// The job.
    pub job_id: JobId,
    /// True when an idempotency key replayed an earlier submission.
    pub replayed: bool,
}

/// Counts of queued and running jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Jobs accepted and not yet running.
    pub pending: usize,
    /// Jobs running now.
    pub running: usize,
}

/// Builds an [`Engine`] from a [`Config`].
pub struct EngineBuilder {
    config: Config,
    factories: HashMap<String, ProviderFactory>,
    store: Option<Arc<dyn Store>>,
    sinks: Vec<Arc<dyn EventSink>>,
    observer: Arc<dyn Observer>,
    background: bool,
    runs_jobs: bool,
    leadership: Option<Arc<dyn crate::Leadership>>,
    layers: Vec<Arc<dyn crate::layer::Layer>>,
    clock: Arc<dyn crate::Clock>,
    /// False once [`EngineBuilder::clock`] set a clock of the caller's.
    system_clock: bool,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("providers", &self.config.providers.len())
            .field("kinds", &self.factories.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Registers the factory for providers of `kind` (`sim`, `libvirt`, ...).
    pub fn provider_kind(
        mut self,
        kind: impl Into<String>,
        factory: impl Fn(&ProviderConfig, &Secrets) -> Result<Arc<dyn Provider>> + Send + Sync + 'static,
    ) -> Self {
        self.factories.insert(kind.into(), Arc::new(factory));
        self
    }

    /// Wraps every provider the engine builds in `layer` (see [`crate::layer`]); a layer added
    /// later sits outside the ones added before it, and all of them outside the layers
    /// `engine.provider_calls` asks for.
    pub fn layer(mut self, layer: impl crate::layer::Layer) -> Self {
        self.layers.push(Arc::new(layer));
        self
    }

    /// Reads time from `clock` instead of the system clock (tests move a
    /// [`crate::ManualClock`] past a deadline instead of sleeping).
    pub fn clock(mut self, clock: Arc<dyn crate::Clock>) -> Self {
        self.clock = clock;
        self.system_clock = false;
        self
    }

    /// Uses `store` instead of a new in-memory store.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Runs the singleton duties (periodic inventory refresh and drift repair, retention
    /// purges) only while `leadership` says this process is the leader; the default is
    /// [`crate::AlwaysLeader`].
    pub fn leadership(mut self, leadership: Arc<dyn crate::Leadership>) -> Self {
        self.leadership = Some(leadership);
        self
    }

    /// Adds an event sink (the tracing sink is always present).
    pub fn event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Sets the metrics observer.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Makes an engine that accepts jobs but runs none: it writes them to the store, where
    /// engines in other processes sharing the store (worker replicas) claim and run them. Its
    /// watches, waits and cancels work on those jobs through the store.
    ///
    /// # Behavior
    /// Without a store shared with a running engine, its jobs stay `PENDING`. Capacity it
    /// reserves on a host for a create, a migration or a resize is held until the job ends
    /// (checked every second), so creates accepted in a burst are placed on room not yet taken.
    pub fn without_workers(mut self) -> Self {
        self.runs_jobs = false;
        self
    }

    /// Switches the periodic reconciler off (an engine that lives for one command needs none).
    pub fn without_background_reconcile(mut self) -> Self {
        self.background = false;
        self
    }

    /// Builds the providers, loads the first inventory (rebuilding VMs from the hosts' marks),
    /// recovers unfinished jobs, and starts the scheduler and the reconciler.
    ///
    /// Must run inside a tokio runtime.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `providers[i].kind` for an unknown provider kind, or the
    /// error of a provider's factory.
    pub async fn build(self) -> Result<Engine> {
        let config = self.config;
        let mut providers = BTreeMap::new();
        for (i, pc) in config.providers.iter().enumerate() {
            let factory = self.factories.get(&pc.kind).ok_or_else(|| {
                let mut known: Vec<&str> = self.factories.keys().map(String::as_str).collect();
                known.sort_unstable();
                Error::invalid(
                    format!("providers[{i}].kind"),
                    format!(
                        "unknown provider kind `{}`; this build knows: {} (some kinds need a cargo feature, e.g. --features libvirt)",
                        pc.kind,
                        known.join(", ")
                    ),
                )
            })?;
            let mut provider =
                factory(pc, &config.secrets).map_err(|e| e.with_context("provider", &pc.name))?;
            for layer in config
                .engine
                .provider_calls
                .layers()
                .iter()
                .chain(&self.layers)
            {
                provider = layer.layer(provider);
            }
            let mut host_masks = HashMap::default();
            let mut max_jobs = HashMap::default();
            for h in &pc.hosts {
                host_masks.insert(h.name.clone(), h.limits.mask()?);
                if let Some(n) = h.max_jobs {
                    max_jobs.insert(h.name.clone(), n);
                }
            }
            for c in &pc.clusters {
                host_masks.insert(c.name.clone(), c.limits.mask()?);
                if let Some(n) = c.max_jobs {
                    max_jobs.insert(c.name.clone(), n);
                }
            }
            providers.insert(
                pc.name.clone(),
                ProviderEntry {
                    provider,
                    mask: pc.limits.mask()?,
                    host_masks,
                    max_jobs,
                },
            );
        }
        let mut zone_masks = HashMap::default();
        for z in &config.zones {
            zone_masks.insert(z.name.clone(), z.limits.mask()?);
        }
        let settings = config.engine.clone();
        let store = self.store.unwrap_or_else(|| {
            Arc::new(MemoryStore::new(
                settings.max_log_lines_per_job,
                settings.max_events,
            ))
        });
        let mut sinks = self.sinks;
        sinks.insert(0, Arc::new(TracingSink));
        let (sched_tx, sched_rx) = mpsc::unbounded_channel();
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let (events_tx, _) = broadcast::channel(4096);
        // A durable store pays a commit per append: events then go through one writer that
        // appends every event queued meanwhile in one batch. The memory store appends in place.
        let (event_writer, event_rx) = if store.durable() {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let inner = Arc::new(Inner {
            catalog: config.catalog(),
            projects: (!config.projects.is_empty()).then(|| {
                config
                    .projects
                    .iter()
                    .map(|p| (p.name.clone(), p.quota))
                    .collect()
            }),
            settings,
            providers,
            zone_masks,
            store,
            sinks,
            events_tx,
            event_writer,
            inventory: RwLock::new(InventoryState::default()),
            sched: sched_tx,
            logs: log_tx,
            watchers: watch::Watchers::default(),
            progress: Mutex::new(HashMap::default()),
            inflight_keys: Mutex::new(HashSet::default()),
            cancels: Mutex::new(HashMap::default()),
            observer: self.observer,
            ready: AtomicBool::new(false),
            last_drift: Mutex::new(HashSet::default()),
            refresh_lock: tokio::sync::Mutex::new(()),
            group_locks: groups::GroupLocks::default(),
            pending: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            clock: self.clock,
            system_clock: self.system_clock,
            leadership: self
                .leadership
                .unwrap_or_else(|| Arc::new(crate::AlwaysLeader)),
            holder: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()).into(),
            runs_jobs: self.runs_jobs,
            held_for_workers: Mutex::new(HashMap::default()),
        });
        scheduler::spawn(Arc::downgrade(&inner), sched_rx);
        watch::spawn_log_writer(Arc::downgrade(&inner), log_rx);
        if let Some(rx) = event_rx {
            spawn_event_writer(Arc::downgrade(&inner), rx);
        }
        let engine = Engine { inner };
        engine.refresh_inventory().await?;
        if engine.inner.runs_jobs {
            engine.recover_jobs().await?;
            leases::spawn_poller(Arc::downgrade(&engine.inner));
            worker::spawn_cancel_poller(Arc::downgrade(&engine.inner));
        } else {
            inventory::spawn_reservation_sweeper(Arc::downgrade(&engine.inner));
        }
        if self.background && !engine.inner.settings.inventory_refresh_interval.is_zero() {
            inventory::spawn_reconciler(Arc::downgrade(&engine.inner));
        }
        Ok(engine)
    }
}

pub(crate) struct ProviderEntry {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) mask: Capabilities,
    /// Capabilities switched off per placement target (host or cluster) in the hosts file.
    pub(crate) host_masks: HashMap<String, Capabilities>,
    /// Per-target concurrency caps from the hosts file (`max_jobs` of a host or cluster).
    pub(crate) max_jobs: HashMap<String, usize>,
}

pub(crate) struct Inner {
    pub(crate) settings: EngineSettings,
    pub(crate) catalog: Catalog,
    /// Configured projects and their quotas; `None` accepts any project.
    pub(crate) projects: Option<HashMap<String, Quota>>,
    pub(crate) providers: BTreeMap<String, ProviderEntry>,
    pub(crate) zone_masks: HashMap<String, Capabilities>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sinks: Vec<Arc<dyn EventSink>>,
    pub(crate) events_tx: broadcast::Sender<Arc<Event>>,
    /// The batching event writer ([`spawn_event_writer`]), on a durable store only.
    pub(crate) event_writer: Option<mpsc::UnboundedSender<QueuedEvent>>,
    pub(crate) inventory: RwLock<InventoryState>,
    pub(crate) sched: mpsc::UnboundedSender<SchedMsg>,
    pub(crate) logs: mpsc::UnboundedSender<LogMsg>,
    pub(crate) watchers: watch::Watchers,
    /// Progress of running jobs, kept in memory until their next state write.
    pub(crate) progress: Mutex<HashMap<JobId, u8>>,
    pub(crate) inflight_keys: Mutex<HashSet<IdempotencyScope>>,
    pub(crate) cancels: Mutex<HashMap<JobId, CancellationToken>>,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) ready: AtomicBool,
    pub(crate) last_drift: Mutex<HashSet<Drift>>,
    pub(crate) refresh_lock: tokio::sync::Mutex<()>,
    /// One lock per server group: creates into a group and its deletion run one at a time.
    pub(crate) group_locks: groups::GroupLocks,
    pub(crate) pending: AtomicUsize,
    pub(crate) running: AtomicUsize,
    pub(crate) shutdown: CancellationToken,
    /// What time it is.
    pub(crate) clock: Arc<dyn crate::Clock>,
    /// Whether `clock` is the system's ([`Inner::system_reading`]).
    pub(crate) system_clock: bool,
    /// Whether this process runs the singleton duties now.
    pub(crate) leadership: Arc<dyn crate::Leadership>,
    /// False for an engine built [`EngineBuilder::without_workers`].
    pub(crate) runs_jobs: bool,
    /// Capacity reserved for jobs this engine accepted and other processes run, released when
    /// each job ends (engines without workers only).
    pub(crate) held_for_workers: Mutex<HashMap<JobId, inventory::HeldForWorker>>,
    /// This engine's name as a job lease holder: unique per engine instance, so a restarted
    /// process never mistakes its predecessor's leases for its own.
    pub(crate) holder: Arc<str>,
}

/// An event waiting for the event writer, with the sender that tells its emitter it is done.
pub(crate) type QueuedEvent = (Event, tokio::sync::oneshot::Sender<()>);

/// The most events the event writer appends in one batch.
const EVENT_BATCH: usize = 512;

/// Starts the event writer of an engine on a durable store: it appends every event queued
/// while the previous batch was written in one [`Store::append_events`] (one commit), then
/// publishes them in order and releases their emitters.
fn spawn_event_writer(inner: std::sync::Weak<Inner>, mut rx: mpsc::UnboundedReceiver<QueuedEvent>) {
    use futures::FutureExt;
    tokio::spawn(async move {
        let mut queued = Vec::with_capacity(EVENT_BATCH);
        while rx.recv_many(&mut queued, EVENT_BATCH).await > 0 {
            let Some(inner) = inner.upgrade() else { return };
            let (events, done): (Vec<Event>, Vec<_>) = queued.drain(..).unzip();
            // A panicking sink costs its batch's publication, never the writer.
            let write = std::panic::AssertUnwindSafe(async {
                for appended in inner.store.append_events(events).await {
                    inner.publish(appended);
                }
            })
            .catch_unwind();
            if let Err(panic) = write.await {
                tracing::error!(
                    panic = panic_message(panic.as_ref()),
                    "the event writer panicked on a batch; it goes on with the next"
                );
            }
            for d in done {
                let _ = d.send(());
            }
        }
    });
}

/// Locks one of the engine's maps. Poisoning is ignored on purpose: each critical section is a
/// single insert, remove or lookup that cannot leave a map half-changed, so a panic elsewhere
/// must not take the map (and every later request) down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Returns the text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

impl Inner {
    /// Records an audit event about `job`'s VM, caused by its principal (the worker's events).
    pub(crate) fn emit_for_job(&self, job: &Job, kind: EventKind) -> StoreCall<'_, ()> {
        self.emit(
            Some(job.project.clone()),
            Some(job.vm_id.clone()),
            Some(&job.principal),
            kind,
        )
    }

    /// Appends an event to the store, hands it to every sink and to live subscribers; the
    /// returned future ends once that is done (or has failed and been logged).
    pub(crate) fn emit(
        &self,
        project: Option<ProjectId>,
        vm_id: Option<VmId>,
        principal: Option<&Principal>,
        kind: EventKind,
    ) -> StoreCall<'_, ()> {
        self.emit_at(None, project, vm_id, principal, kind)
    }

    /// [`Inner::emit`] of an event that happened `at` (read from the clock when `None`). On the
    /// in-memory store the event is appended and handed on before this returns.
    pub(crate) fn emit_at(
        &self,
        at: Option<chrono::DateTime<Utc>>,
        project: Option<ProjectId>,
        vm_id: Option<VmId>,
        principal: Option<&Principal>,
        kind: EventKind,
    ) -> StoreCall<'_, ()> {
        let event = Event {
            seq: 0,
            at: at.unwrap_or_else(|| self.now()),
            project,
            vm_id,
            principal: principal.map(|p| p.subject.clone()),
            kind,
        };
        if let Some(store) = self.store.as_memory() {
            self.publish(Ok(store.append_event_now(Arc::new(event))));
            return StoreCall::Left(std::future::ready(()));
        }
        StoreCall::Right(Box::pin(async move {
            if let Some(writer) = &self.event_writer {
                let (done, appended) = tokio::sync::oneshot::channel();
                if writer.send((event, done)).is_ok() {
                    let _ = appended.await;
                }
                return;
            }
            let appended = self.store.append_event(event).await;
            self.publish(appended);
        }))
    }

    /// Hands an appended event to every sink and to live subscribers, or logs why it was not
    /// appended.
    fn publish(&self, appended: Result<Arc<Event>>) {
        match appended {
            Ok(event) => {
                for sink in &self.sinks {
                    sink.emit(&event);
                }
                let _ = self.events_tx.send(event);
            }
            Err(e) => tracing::error!(error = %e, "cannot append audit event"),
        }
    }

    /// Reads a job, applies `f`, and writes it back, retrying when a concurrent write intervened.
    pub(crate) async fn update_job_with(
        &self,
        id: &JobId,
        mut f: impl FnMut(&mut Job) -> Result<()>,
    ) -> Result<Job> {
        for _ in 0..16 {
            let mut job = self
                .store
                .get_job(&Scope::All, id)
                .await?
                .ok_or_else(|| Error::not_found("job", id))?;
            let expected = job.generation;
            f(&mut job)?;
            match self.store.update_job(job, expected).await {
                Ok(j) => return Ok(j),
                Err(e) if e.kind() == ErrorKind::Conflict && e.is_temporary() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::internal(format!(
            "job `{id}` kept changing; gave up updating it"
        )))
    }

    /// Like [`Inner::update_job_with`], for the worker holding the job's lease `token`: the
    /// write is refused with `LEASE_LOST` (and nothing retried) once another worker claimed it.
    pub(crate) fn update_job_fenced_with<'a>(
        &'a self,
        id: JobId,
        token: u64,
        f: impl FnMut(&mut Job) -> Result<()> + Send + 'a,
    ) -> StoreCall<'a, Result<Box<Job>>> {
        self.update_job_fenced_from(None, id, token, f)
    }

    /// [`Inner::update_job_fenced_with`] starting from `known`, the job as this worker last
    /// wrote or read it: no read when nobody wrote it since (the usual case for the job a
    /// worker holds), a fresh read and another try when somebody did. On the in-memory store
    /// the update is done before this returns, on the worker's copy where it is. The job stays
    /// boxed: a worker's job moves as a pointer.
    pub(crate) fn update_job_fenced_from<'a>(
        &'a self,
        known: Option<Box<Job>>,
        id: JobId,
        token: u64,
        f: impl FnMut(&mut Job) -> Result<()> + Send + 'a,
    ) -> StoreCall<'a, Result<Box<Job>>> {
        match self.store.as_memory() {
            Some(memory) => StoreCall::Left(std::future::ready(Self::update_job_fenced_now(
                memory, known, &id, token, f,
            ))),
            None => StoreCall::Right(Box::pin(async move {
                self.update_stored_job_fenced(known, &id, token, f).await
            })),
        }
    }

    /// [`Inner::update_job_fenced_from`] on the in-memory store.
    fn update_job_fenced_now(
        memory: &MemoryStore,
        mut known: Option<Box<Job>>,
        id: &JobId,
        token: u64,
        mut f: impl FnMut(&mut Job) -> Result<()>,
    ) -> Result<Box<Job>> {
        for _ in 0..16 {
            let mut job = match known.take() {
                Some(job) => job,
                None => Box::new(
                    memory
                        .get_job_now(id)
                        .ok_or_else(|| Error::not_found("job", id))?,
                ),
            };
            let expected = job.generation;
            f(&mut job)?;
            match memory.update_job_fenced_now(&mut job, expected, token) {
                Ok(()) => return Ok(job),
                Err(e) if e.kind() == ErrorKind::Conflict && e.is_temporary() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::internal(format!(
            "job `{id}` kept changing; gave up updating it"
        )))
    }

    /// [`Inner::update_job_fenced_from`] on any store but the in-memory one.
    async fn update_stored_job_fenced(
        &self,
        mut known: Option<Box<Job>>,
        id: &JobId,
        token: u64,
        mut f: impl FnMut(&mut Job) -> Result<()>,
    ) -> Result<Box<Job>> {
        for _ in 0..16 {
            let mut job = match known.take() {
                Some(job) => *job,
                None => self
                    .store
                    .get_job(&Scope::All, id)
                    .await?
                    .ok_or_else(|| Error::not_found("job", id))?,
            };
            let expected = job.generation;
            f(&mut job)?;
            match self.store.update_job_fenced(job, expected, token).await {
                Ok(j) => return Ok(Box::new(j)),
                Err(e) if e.kind() == ErrorKind::Conflict && e.is_temporary() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::internal(format!(
            "job `{id}` kept changing; gave up updating it"
        )))
    }

    /// Reads a VM, applies `f`, and writes it back, retrying when a concurrent write intervened.
    /// Returns `None` when the VM is gone.
    pub(crate) fn update_vm_with<'a>(
        &'a self,
        id: &'a VmId,
        f: impl FnMut(&mut Vm) + Send + 'a,
    ) -> StoreCall<'a, Result<Option<Vm>>> {
        self.update_vm_as(None, id, None, f)
    }

    /// [`Inner::update_vm_with`] starting from `known`, the VM as this worker last read it: no
    /// read when nobody wrote it since, a fresh read and another try when somebody did (or
    /// removed it).
    pub(crate) fn update_vm_from<'a>(
        &'a self,
        known: Option<Vm>,
        id: &'a VmId,
        f: impl FnMut(&mut Vm) + Send + 'a,
    ) -> StoreCall<'a, Result<Option<Vm>>> {
        self.update_vm_as(known, id, None, f)
    }

    /// [`Inner::update_vm_with`] for a singleton duty: with a `fence`, every write carries it
    /// ([`Store::put_vm_fenced`]), so a deposed leader's write is refused with code
    /// [`crate::CODE_LEADERSHIP_LOST`].
    pub(crate) fn update_vm_fenced<'a>(
        &'a self,
        id: &'a VmId,
        fence: Option<&'a crate::LeaderFence>,
        f: impl FnMut(&mut Vm) + Send + 'a,
    ) -> StoreCall<'a, Result<Option<Vm>>> {
        self.update_vm_as(None, id, fence, f)
    }

    /// On the in-memory store (which has no leadership to fence) the update is done before this
    /// returns, on the worker's copy where it is: no future, no moves.
    fn update_vm_as<'a>(
        &'a self,
        known: Option<Vm>,
        id: &'a VmId,
        fence: Option<&'a crate::LeaderFence>,
        f: impl FnMut(&mut Vm) + Send + 'a,
    ) -> StoreCall<'a, Result<Option<Vm>>> {
        match self.store.as_memory() {
            Some(memory) => {
                StoreCall::Left(std::future::ready(self.update_vm_now(memory, known, id, f)))
            }
            None => StoreCall::Right(Box::pin(self.update_stored_vm(known, id, fence, f))),
        }
    }

    /// [`Inner::update_vm_as`] on the in-memory store.
    fn update_vm_now(
        &self,
        memory: &MemoryStore,
        mut known: Option<Vm>,
        id: &VmId,
        mut f: impl FnMut(&mut Vm),
    ) -> Result<Option<Vm>> {
        for _ in 0..16 {
            let guess = known.is_some();
            let mut vm = match known.take() {
                Some(vm) => vm,
                None => match memory.get_vm_now(&Scope::All, id) {
                    Some(vm) => vm,
                    None => return Ok(None),
                },
            };
            let expected = vm.generation;
            f(&mut vm);
            vm.updated_at = self.now();
            match memory.replace_vm_now(&mut vm, expected) {
                Ok(()) => return Ok(Some(vm)),
                Err(e) if e.kind() == ErrorKind::Conflict && e.is_temporary() => continue,
                // Removed since it was read: the fresh read says so.
                Err(e) if guess && e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::internal(format!(
            "vm `{id}` kept changing; gave up updating it"
        )))
    }

    /// [`Inner::update_vm_as`] on any store but the in-memory one.
    async fn update_stored_vm(
        &self,
        mut known: Option<Vm>,
        id: &VmId,
        fence: Option<&crate::LeaderFence>,
        mut f: impl FnMut(&mut Vm),
    ) -> Result<Option<Vm>> {
        for _ in 0..16 {
            let guess = known.is_some();
            let mut vm = match known.take() {
                Some(vm) => vm,
                None => match self.store.get_vm(&Scope::All, id).await? {
                    Some(vm) => vm,
                    None => return Ok(None),
                },
            };
            let expected = vm.generation;
            f(&mut vm);
            vm.updated_at = self.now();
            let written = self.store.put_vm_fenced(vm, Some(expected), fence).await;
            match written {
                Ok(v) => return Ok(Some(v)),
                Err(e) if e.kind() == ErrorKind::Conflict && e.is_temporary() => continue,
                // Removed since it was read: the fresh read says so.
                Err(e) if guess && e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::internal(format!(
            "vm `{id}` kept changing; gave up updating it"
        )))
    }

    // The worker's and the submitter's store calls. On the in-memory store each goes straight to
    // the store, without a boxed future; on any other, through the `Store` trait.

    /// Reads VM `id` visible in `scope`.
    pub(crate) async fn read_vm(&self, scope: &Scope, id: &VmId) -> Result<Option<Vm>> {
        match self.store.as_memory() {
            Some(memory) => Ok(memory.get_vm_now(scope, id)),
            None => self.store.get_vm(scope, id).await,
        }
    }

    /// Returns the id of the VM named `name` in `project`, if any.
    pub(crate) fn vm_named<'a>(
        &'a self,
        project: &'a ProjectId,
        name: &'a str,
    ) -> StoreCall<'a, Result<Option<VmId>>> {
        match self.store.as_memory() {
            Some(memory) => {
                StoreCall::Left(std::future::ready(Ok(memory.vm_named_now(project, name))))
            }
            None => StoreCall::Right(Box::pin(async move {
                Ok(self
                    .store
                    .find_vm_by_name(project, name)
                    .await?
                    .map(|v| v.id))
            })),
        }
    }

    /// Writes `submission` ([`Store::submit`]).
    pub(crate) fn submit(&self, submission: Submission) -> StoreCall<'_, Result<SubmitOutcome>> {
        match self.store.as_memory() {
            Some(memory) => StoreCall::Left(std::future::ready(memory.submit_now(submission))),
            None => StoreCall::Right(self.store.submit(submission)),
        }
    }

    /// Claims job `id` for this engine until `until`; returns it and whether the claim also
    /// started it at `now` (the in-memory store does both in one write; any other store only
    /// claims, and the worker starts the job). The job comes boxed, as the worker keeps it: a
    /// job is a few hundred bytes, which each move copies.
    pub(crate) async fn claim_job(
        &self,
        id: &JobId,
        until: chrono::DateTime<Utc>,
        now: chrono::DateTime<Utc>,
    ) -> Result<Option<(Box<Job>, bool)>> {
        match self.store.as_memory() {
            Some(memory) => {
                memory.claim_and_start_now(id, &self.holder, until, now, self.system_reading(now))
            }
            None => Ok(self
                .store
                .claim_job(id, &self.holder, until)
                .await?
                .map(|j| (Box::new(j), false))),
        }
    }

    /// Gives up this engine's lease `token` on job `id`.
    pub(crate) async fn release_lease(&self, id: &JobId, token: u64) -> Result<()> {
        match self.store.as_memory() {
            Some(memory) => memory.release_lease_now(id, &self.holder, token),
            None => self.store.release_lease(id, &self.holder, token).await,
        }
    }

    /// Removes VM `id` at generation `expected`.
    pub(crate) async fn remove_vm(&self, id: &VmId, expected: u64) -> Result<()> {
        match self.store.as_memory() {
            Some(memory) => memory.remove_vm_now(id, expected),
            None => self.store.remove_vm(id, expected).await,
        }
    }

    /// Returns the VM `vm_id` visible in `scope` and not deleted.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `vm_id` for a malformed id; [`ErrorKind::NotFound`]
    /// naming `vm_id` when it does not exist, is outside `scope` or is deleted.
    pub(crate) async fn live_vm(&self, scope: &Scope, vm_id: &VmId) -> Result<Vm> {
        validate_reference("vm_id", vm_id.as_str())?;
        self.read_vm(scope, vm_id)
            .await?
            .filter(|v| v.desired != DesiredState::Deleted)
            .ok_or_else(|| Error::not_found("vm", vm_id).with_field("vm_id"))
    }

    /// Returns true when a job of this engine's store may run in another engine: the store
    /// outlives the process (so replicas can share it), or this engine runs no job itself.
    pub(crate) fn jobs_run_elsewhere(&self) -> bool {
        !self.runs_jobs || self.store.durable()
    }

    pub(crate) fn provider(&self, name: &str) -> Result<&ProviderEntry> {
        self.providers.get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::ProviderUnavailable,
                "the VM's hypervisor is not configured",
            )
            .with_detail(format!("provider `{name}` is not configured"))
        })
    }

    /// Returns the time on the engine's clock.
    pub(crate) fn now(&self) -> chrono::DateTime<Utc> {
        self.clock.now()
    }

    /// Returns `now`, read from the engine's clock, when that clock is the system's: then it
    /// stands for a system clock reading (the in-memory store's lease time, an id's time part)
    /// and saves another. `None` for a test's clock: those read the system clock themselves.
    pub(crate) fn system_reading(
        &self,
        now: chrono::DateTime<Utc>,
    ) -> Option<chrono::DateTime<Utc>> {
        self.system_clock.then_some(now)
    }

    /// Runs one provider call: stamps context on its error and reports it to the observer.
    ///
    /// A provider that panics fails this call only, with an [`ErrorKind::Internal`] error: the
    /// panic is caught here, logged for operators, and never reaches the job's worker, the
    /// scheduler or shared state.
    pub(crate) async fn call<T>(
        &self,
        provider: &str,
        operation: Operation,
        host: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        use futures::FutureExt;
        let started = std::time::Instant::now();
        // Unwind safety: providers keep their shared state behind locks whose writers check
        // before they change anything, so what a panicking call leaves behind stays usable.
        let result = std::panic::AssertUnwindSafe(fut)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                tracing::error!(
                    provider,
                    host,
                    operation = operation.as_str(),
                    panic = panic_message(panic.as_ref()),
                    "a provider call panicked; the call fails with an internal error"
                );
                Err(Error::internal(format!(
                    "the hypervisor call failed unexpectedly during {operation}; operators find the details in the server log"
                ))
                .with_detail(format!("provider `{provider}` panicked on host `{host}`")))
            })
            .map_err(|e| {
                e.with_operation(operation)
                    .with_context("provider", provider)
                    .with_context("host", host)
            });
        self.observer.provider_call(
            provider,
            operation,
            started.elapsed(),
            result.as_ref().err().map(Error::kind),
        );
        result
    }
}

/// The HCP engine. Cheap to clone; every clone drives the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field(
                "providers",
                &self.inner.providers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts building an engine from `config`.
    pub fn builder(config: Config) -> EngineBuilder {
        EngineBuilder {
            config,
            factories: HashMap::default(),
            store: None,
            sinks: Vec::new(),
            observer: Arc::new(NoopObserver),
            background: true,
            runs_jobs: true,
            leadership: None,
            layers: Vec::new(),
            clock: Arc::new(crate::SystemClock),
            system_clock: true,
        }
    }

    /// Returns the clock the engine reads time from.
    pub fn clock(&self) -> &Arc<dyn crate::Clock> {
        &self.inner.clock
    }

    /// Returns the catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// Returns the configured projects, sorted; empty when any valid project id is accepted.
    pub fn projects(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .inner
            .projects
            .as_ref()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        p.sort_unstable();
        p
    }

    /// Checks that `project` is a valid id and, when projects are configured, one of them.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] for a malformed id; [`ErrorKind::NotFound`] naming the field
    /// `project` and the known projects for an unknown one.
    pub fn check_project(&self, project: &ProjectId) -> Result<()> {
        project.validate()?;
        if let Some(projects) = &self.inner.projects
            && !projects.contains_key(project.as_str())
        {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "project: unknown project `{project}`; known: {}",
                    self.projects().join(", ")
                ),
            )
            .with_field("project"));
        }
        Ok(())
    }

    /// Returns the engine settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// Returns the store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Returns the leadership the singleton duties ask (see [`EngineBuilder::leadership`]).
    pub fn leadership(&self) -> &Arc<dyn crate::Leadership> {
        &self.inner.leadership
    }

    /// Returns true once the first inventory has loaded and at least one host answered.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Returns the numbers of pending and running jobs.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            pending: self.inner.pending.load(Ordering::Relaxed),
            running: self.inner.running.load(Ordering::Relaxed),
        }
    }

    /// Creates a VM: validates the spec against the catalog, negotiates capabilities, places it
    /// and submits its create job.
    ///
    /// # Errors
    /// See [`Engine::submit`].
    pub async fn create_vm(&self, ctx: &RequestContext, spec: VmSpec) -> Result<Submitted> {
        self.submit(ctx, Action::Create { spec, host: None }).await
    }

    /// Deletes a VM; a running VM is shut down first, gracefully unless `force`, hard after the
    /// stop timeout (see [`Engine::submit`]).
    ///
    /// # Errors
    /// See [`Engine::submit`].
    pub async fn delete_vm(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
        force: bool,
    ) -> Result<Submitted> {
        self.submit(
            ctx,
            Action::Delete {
                vm_id: vm_id.clone(),
                force,
            },
        )
        .await
    }

    /// Powers a VM on (see [`Engine::submit`]).
    ///
    /// # Errors
    /// See [`Engine::submit`].
    pub async fn start_vm(&self, ctx: &RequestContext, vm_id: &VmId) -> Result<Submitted> {
        self.submit(
            ctx,
            Action::Start {
                vm_id: vm_id.clone(),
            },
        )
        .await
    }

    /// Powers a VM off (see [`Engine::submit`]).
    ///
    /// # Errors
    /// See [`Engine::submit`].
    pub async fn stop_vm(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
        force: bool,
    ) -> Result<Submitted> {
        self.submit(
            ctx,
            Action::Stop {
                vm_id: vm_id.clone(),
                force,
            },
        )
        .await
    }

    /// Restarts a VM (see [`Engine::submit`]).
    ///
    /// # Errors
    /// See [`Engine::submit`].
    pub async fn reboot_vm(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
        hard: bool,
    ) -> Result<Submitted> {
        self.submit(
            ctx,
            Action::Reboot {
                vm_id: vm_id.clone(),
                hard,
            },
        )
        .await
    }

    /// Submits an infrastructure change as a job and returns at once with its VM and job ids.
    ///
    /// # Behavior
    /// Everything that can be refused is refused here, before any job exists: invalid input,
    /// unknown image/flavor/zone, a missing capability, exhausted capacity or quota. With an
    /// idempotency key, the same request again returns the first answer (`replayed: true`) and
    /// calls no provider. Jobs on one VM run one after another, in submission order.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidSpec`] naming the field: a malformed value, a size outside the
    ///   global bounds ([`crate::MAX_VCPUS`], ...) or the zone's limits, a size larger than any
    ///   host in scope offers, or one larger than the project's whole quota;
    /// - [`ErrorKind::NotFound`] for a VM outside the caller's project;
    /// - [`ErrorKind::FeatureNotSupported`] naming provider, operation and capability;
    /// - [`ErrorKind::QuotaExceeded`] when no host has room now or the project quota is used up;
    /// - [`ErrorKind::Conflict`] with code `IDEMPOTENCY_KEY_REUSED` for a key reused with a
    ///   different request, `IDEMPOTENCY_KEY_IN_PROGRESS` while the first is still being accepted,
    ///   or for a name already taken in the project; with code [`CODE_VM_STATE_CONFLICT`] for
    ///   a request the VM's known state rules out (a reboot of a stopped VM, a start of a VM
    ///   whose create failed). A delete of a running VM is accepted: its job shuts it down.
    pub async fn submit(&self, ctx: &RequestContext, action: Action) -> Result<Submitted> {
        let op = action.operation();
        self.submit_inner(ctx, action)
            .await
            .map_err(|e| e.with_operation(op))
    }

    // The rare steps (adoption, server groups, snapshots) are boxed where they are awaited: their
    // futures are large, and unboxed they widened this one, which every caller's future holds
    // and every spawn or box of it copies.
    async fn submit_inner(&self, ctx: &RequestContext, action: Action) -> Result<Submitted> {
        self.check_project(&ctx.project)?;
        let inner = &self.inner;
        let op = action.operation();
        // Reserve the idempotency key for the duration of this call.
        let key_guard = match &ctx.idempotency_key {
            Some(key) => {
                validate_idempotency_key(key)?;
                let scope = IdempotencyScope {
                    project: ctx.project.clone(),
                    principal: ctx.principal.subject.to_string(),
                    operation: op,
                    key: key.clone(),
                };
                Some(KeyGuard::acquire(inner, scope)?)
            }
            None => None,
        };
        // The fingerprint (serde_json, SHA-256, hex) only matters to a request with a key.
        let fingerprint = key_guard
            .as_ref()
            .map(|_| fingerprint(&ctx.project, &action));
        if let Some(guard) = &key_guard
            && let Some(fingerprint) = &fingerprint
            && let Some(rec) = inner.store.idempotency(&guard.scope).await?
        {
            return replay(&rec, fingerprint);
        }
        let now = inner.now();
        // Ids read their time from the system clock: this reading when it is one.
        let id_millis = inner
            .system_reading(now)
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok());
        let job_id = JobId::generate_at(id_millis);
        let mut reservation = None;
        // The host's room, which the store checks in the submit transaction (creates, growths).
        let mut room = None;
        // Held until the submission is written, so creates into one group are placed in turn.
        let mut _group_guard = None;
        let (vm_write, job_action, vm_id, provider, host) = match action {
            Action::Create { spec, host } => {
                let resources = inner.catalog.resolve(&spec)?;
                if let Some(h) = &host {
                    validate_reference("host", h)?;
                }
                if let Some(existing) = inner.vm_named(&ctx.project, &spec.name).await? {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "a VM named `{}` already exists in project `{}` ({existing})",
                            spec.name, ctx.project
                        ),
                    )
                    .with_field("name"));
                }
                // A size larger than the whole quota never fits: refuse it before placement.
                // The store checks the project's usage inside the submit transaction.
                if let Some(q) = self.quota(&ctx.project) {
                    let own = crate::store::Usage::of_resources(resources);
                    own.check(&ctx.project, &q, &own)?;
                }
                let group = match &spec.server_group {
                    Some(id) => {
                        _group_guard = Some(Box::pin(inner.group_locks.lock(id)).await);
                        Some(Box::pin(groups::placement_of(inner, &ctx.scope(), id)).await?)
                    }
                    None => None,
                };
                let placement =
                    self.place(&spec, resources, host.as_deref(), op, group.as_ref())?;
                let vm_id = VmId::generate_at(id_millis);
                // Shared by the VM's binding and the job.
                let (provider, target) = (placement.provider, placement.host);
                let vm = Vm {
                    id: vm_id.clone(),
                    project: ctx.project.clone(),
                    zone: placement.zone,
                    spec: Arc::new(spec),
                    resources,
                    desired: DesiredState::Pending,
                    desired_power: PowerState::Running,
                    power: PowerState::Unknown,
                    present: false,
                    binding: ProviderBinding {
                        provider: provider.clone(),
                        host: target.clone(),
                        native_id: None,
                        // Pinned here (under the group's lock) so the next member sees it.
                        member_host: placement.member_host,
                    },
                    last_error: None,
                    created_at: now,
                    updated_at: now,
                    generation: 0,
                };
                reservation = Some(inventory::Reservation::try_new(
                    inner, &provider, &target, resources,
                )?);
                room = placement.room;
                (
                    VmWrite::Insert(vm),
                    JobAction::Create,
                    vm_id,
                    provider,
                    target,
                )
            }
            Action::Adopt(req) => {
                let (vm, provider, host) = Box::pin(self.adoption(ctx, &req, now)).await?;
                let vm_id = vm.id.clone();
                (
                    VmWrite::Insert(vm),
                    JobAction::Adopt,
                    vm_id,
                    provider.into(),
                    host.into(),
                )
            }
            other => {
                let vm_id = match &other {
                    Action::Delete { vm_id, .. }
                    | Action::Start { vm_id }
                    | Action::Stop { vm_id, .. }
                    | Action::Reboot { vm_id, .. }
                    | Action::Snapshot { vm_id, .. }
                    | Action::Migrate { vm_id, .. }
                    | Action::RevertSnapshot { vm_id, .. }
                    | Action::DeleteSnapshot { vm_id, .. }
                    | Action::Resize { vm_id, .. }
                    | Action::Release { vm_id } => vm_id.clone(),
                    Action::Create { .. } | Action::Adopt(_) => unreachable!("handled above"),
                };
                let mut vm = inner.live_vm(&ctx.scope(), &vm_id).await?;
                let expected = vm.generation;
                day2::check_state(&vm, &other)?;
                let job_action = match other {
                    Action::Delete { force, .. } => {
                        vm.desired = DesiredState::Deleted;
                        JobAction::Delete { force }
                    }
                    Action::Start { .. } => {
                        vm.desired_power = PowerState::Running;
                        JobAction::Start
                    }
                    Action::Stop { force, .. } => {
                        vm.desired_power = PowerState::Stopped;
                        JobAction::Stop {
                            force,
                            graceful_timeout_secs: inner.settings.graceful_stop_timeout.as_secs(),
                        }
                    }
                    Action::Reboot { hard, .. } => JobAction::Reboot { hard },
                    Action::Snapshot { name, .. } => {
                        self.require(&vm, op, Capability::Snapshot)?;
                        Box::pin(day2::snapshot_job(inner, &vm, name)).await?
                    }
                    Action::RevertSnapshot { snapshot_id, .. } => {
                        self.require(&vm, op, Capability::Snapshot)?;
                        Box::pin(day2::revert_job(inner, &vm, snapshot_id)).await?
                    }
                    Action::DeleteSnapshot { snapshot_id, .. } => {
                        self.require(&vm, op, Capability::Snapshot)?;
                        Box::pin(day2::delete_snapshot_job(inner, &vm, snapshot_id)).await?
                    }
                    Action::Migrate {
                        target_host,
                        allow_cold,
                        ..
                    } => {
                        // Moves of a group's members are chosen one after another, like
                        // creates into it, and see each other's targets.
                        if let Some(id) = &vm.spec.server_group {
                            _group_guard = Some(Box::pin(inner.group_locks.lock(id)).await);
                        }
                        let group = Box::pin(groups::placement_for_move(inner, &vm)).await?;
                        let choice = self.migration_target(
                            &vm,
                            target_host.as_deref(),
                            allow_cold,
                            group.as_ref(),
                            op,
                        )?;
                        // The VM's size is held on the target like a create's until the job ends.
                        reservation = Some(inventory::Reservation::try_new(
                            inner,
                            &vm.binding.provider,
                            &choice.target.as_str().into(),
                            vm.resources,
                        )?);
                        JobAction::Migrate {
                            target_host: choice.target,
                            cold: choice.cold,
                        }
                    }
                    Action::Resize { change, allow, .. } => {
                        let caps = self.require(&vm, op, Capability::Resize)?;
                        let (spec, to) = day2::resize_target(inner, &vm, &change)?;
                        caps.check(
                            &vm.binding.provider,
                            op,
                            &Requirements {
                                vcpus: Some(to.vcpus),
                                memory_mib: Some(to.memory_mib),
                                disk_gib: Some(to.disk_gib),
                                ..Default::default()
                            },
                        )?;
                        let plan = day2::plan_for(inner, &vm, to)?;
                        let action = day2::resize_job(&vm, &plan, &allow, spec.flavor, to)?;
                        // A growth must fit the host, as a create must; the job settles it.
                        let growth = inventory::growth(vm.resources, to);
                        if growth != crate::Resources::default() {
                            reservation = Some(inventory::Reservation::try_new(
                                inner,
                                &vm.binding.provider,
                                &vm.binding.host,
                                growth,
                            )?);
                            room =
                                inventory::host_room(inner, &vm.binding.provider, &vm.binding.host);
                        }
                        // The new size counts against the quota from now on: the store checks
                        // it in the submit transaction, as it does a create's.
                        vm.resources = to;
                        action
                    }
                    Action::Release { .. } => {
                        self.require(&vm, op, Capability::Adopt)?;
                        JobAction::Release
                    }
                    Action::Create { .. } | Action::Adopt(_) => unreachable!("handled above"),
                };
                vm.updated_at = now;
                let (p, h) = (vm.binding.provider.clone(), vm.binding.host.clone());
                (VmWrite::Update { vm, expected }, job_action, vm_id, p, h)
            }
        };
        let idempotency =
            key_guard
                .as_ref()
                .zip(fingerprint)
                .map(|(g, fingerprint)| IdempotencyRecord {
                    scope: g.scope.clone(),
                    fingerprint,
                    vm_id: vm_id.clone(),
                    job_id: job_id.clone(),
                    created_at: now,
                });
        let is_create = job_action == JobAction::Create;
        // The job is written where the submission holds it: built apart and moved in, its few
        // hundred bytes were copied once more.
        let outcome = inner
            .submit(Submission {
                idempotency,
                vm: vm_write,
                job: Job {
                    id: job_id.clone(),
                    project: ctx.project.clone(),
                    vm_id: vm_id.clone(),
                    operation: op,
                    action: job_action,
                    state: JobState::Pending,
                    pending_reason: Some(PendingReason::Queued),
                    attempts: 0,
                    max_attempts: inner.settings.retry.max_attempts.max(1),
                    progress: 0,
                    principal: ctx.principal.clone(),
                    idempotency_key: ctx.idempotency_key.clone(),
                    host: host.clone(),
                    provider: provider.clone(),
                    error: None,
                    timeout_ms: u64::try_from(inner.settings.job_timeout.as_millis())
                        .unwrap_or(u64::MAX),
                    created_at: now,
                    started_at: None,
                    finished_at: None,
                    generation: 0,
                    lease: None,
                    cancel_requested: None,
                },
                quota: self.quota(&ctx.project),
                fence: ctx.fence.clone(),
                room,
            })
            .await?;
        let (vm_id, job_id) = match outcome {
            SubmitOutcome::Accepted { vm_id, job_id } => (vm_id, job_id),
            SubmitOutcome::Replayed { vm_id, job_id } => {
                return Ok(Submitted {
                    vm_id,
                    job_id,
                    replayed: true,
                });
            }
        };
        // The capacity stays held until the job ends: this engine's worker releases it, or,
        // without workers, the sweeper once another process ran the job.
        match reservation {
            Some(mut r) if inner.runs_jobs => r.keep(),
            Some(r) => r.hand_over(&job_id, is_create),
            None => {}
        }
        if inner.runs_jobs {
            inner.pending.fetch_add(1, Ordering::Relaxed);
        }
        inner
            .emit_at(
                Some(now),
                Some(ctx.project.clone()),
                Some(vm_id.clone()),
                Some(&ctx.principal),
                EventKind::JobTransition {
                    job_id: job_id.clone(),
                    operation: op,
                    from: None,
                    to: JobState::Pending,
                    attempt: 0,
                    error: None,
                },
            )
            .await;
        if inner.runs_jobs {
            let _ = inner.sched.send(SchedMsg::Submitted {
                job_id: job_id.clone(),
                vm_id: vm_id.clone(),
                host_key: HostKey::new(&provider, &host),
            });
        }
        Ok(Submitted {
            vm_id,
            job_id,
            replayed: false,
        })
    }

    fn require(&self, vm: &Vm, op: Operation, cap: Capability) -> Result<Capabilities> {
        let caps = self.host_capabilities(&vm.binding.provider, &vm.binding.host);
        caps.check(
            &vm.binding.provider,
            op,
            &Requirements {
                flags: vec![cap],
                ..Default::default()
            },
        )?;
        Ok(caps)
    }

    /// Returns the quota of `project`, when it has one.
    fn quota(&self, project: &ProjectId) -> Option<Quota> {
        self.inner
            .projects
            .as_ref()
            .and_then(|p| p.get(project.as_str()))
            .copied()
            .filter(|q| *q != Quota::default())
    }

    /// Returns a VM visible in `scope`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when it does not exist or is outside `scope`.
    pub async fn get_vm(&self, scope: &Scope, vm_id: &VmId) -> Result<Vm> {
        self.inner
            .store
            .get_vm(scope, vm_id)
            .await?
            .ok_or_else(|| Error::not_found("vm", vm_id))
    }

    /// Changes a VM's tags with a JSON Merge Patch (RFC 7396): a key with a value sets that tag,
    /// a key with `None` (JSON `null`) removes it, keys not named stay. The write is conditional:
    /// `if_match` must be the VM's current generation (its `ETag`).
    ///
    /// # Behavior
    /// One compare-and-swap on the VM's generation: of concurrent changes made with the same
    /// generation, exactly one succeeds; the others get `PRECONDITION_FAILED`. No job runs: the
    /// tags live in HCP's record of the VM (the hypervisor's copy keeps the create-time tags). An
    /// audit event (`vm_tags_updated`) records the new tags.
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`] for a VM outside the caller's project, or deleted;
    /// - [`ErrorKind::Conflict`] with code [`crate::CODE_PRECONDITION_REQUIRED`] when `if_match`
    ///   is `None`, or [`crate::CODE_PRECONDITION_FAILED`] when it is not the current generation;
    /// - [`ErrorKind::InvalidSpec`] naming `tags` or `tags.<key>` for tags that break
    ///   [`crate::validate_tags`].
    pub async fn update_tags(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
        patch: &std::collections::BTreeMap<String, Option<String>>,
        if_match: Option<u64>,
    ) -> Result<Vm> {
        self.check_project(&ctx.project)?;
        let mut vm = self.inner.live_vm(&ctx.scope(), vm_id).await?;
        let Some(expected) = if_match else {
            return Err(Error::new(
                ErrorKind::Conflict,
                "changing a VM needs its current version: send the ETag of GET .../vms/{vmId} as If-Match",
            )
            .with_code(crate::CODE_PRECONDITION_REQUIRED)
            .with_field("If-Match"));
        };
        let stale = || {
            Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM `{vm_id}` changed since that version; read it again (GET) and retry with its new ETag"
                ),
            )
            .with_code(crate::CODE_PRECONDITION_FAILED)
            .with_field("If-Match")
        };
        if vm.generation != expected {
            return Err(stale());
        }
        for (key, value) in patch {
            match value {
                Some(v) => {
                    Arc::make_mut(&mut vm.spec)
                        .tags
                        .insert(key.clone(), v.clone());
                }
                None => {
                    Arc::make_mut(&mut vm.spec).tags.remove(key);
                }
            }
        }
        crate::validate_tags(&vm.spec.tags)?;
        vm.updated_at = self.inner.now();
        let tags = vm.spec.tags.clone();
        let vm = match self.inner.store.put_vm(vm, Some(expected)).await {
            Ok(vm) => vm,
            Err(e) if e.kind() == ErrorKind::Conflict => return Err(stale()),
            Err(e) => return Err(e),
        };
        self.inner
            .emit(
                Some(ctx.project.clone()),
                Some(vm_id.clone()),
                Some(&ctx.principal),
                EventKind::VmTagsUpdated { tags },
            )
            .await;
        Ok(vm)
    }

    /// Lists VMs visible in `scope`, one page at a time, ordered by id (oldest first).
    ///
    /// # Errors
    /// Store errors only.
    pub async fn list_vms(&self, scope: &Scope, page: &PageRequest) -> Result<Page<Vm>> {
        self.inner.store.list_vms(scope, page).await
    }

    /// Lists VMs visible in `scope` that match `filter`, ordered by `sort`, one page at a time
    /// (see [`Store::list_vms_matching`]).
    ///
    /// # Errors
    /// `InvalidSpec` naming the field when the filter is out of bounds or the cursor was not
    /// made for this sort; store errors.
    pub async fn list_vms_matching(
        &self,
        scope: &Scope,
        filter: &crate::store::VmFilter,
        sort: crate::store::VmSort,
        page: &PageRequest,
    ) -> Result<Page<Vm>> {
        filter.validate()?;
        self.inner
            .store
            .list_vms_matching(scope, filter, sort, page)
            .await
    }

    /// Returns a job visible in `scope`; a queued job's reason says why it waits.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when it does not exist or is outside `scope`.
    pub async fn get_job(&self, scope: &Scope, job_id: &JobId) -> Result<Job> {
        let mut job = self
            .inner
            .store
            .get_job(scope, job_id)
            .await?
            .ok_or_else(|| Error::not_found("job", job_id))?;
        self.explain_pending(&mut job);
        Ok(job)
    }

    fn explain_pending(&self, job: &mut Job) {
        if job.state == JobState::Running
            && let Some(p) = lock(&self.inner.progress).get(&job.id)
        {
            job.progress = *p;
        }
        let limit = self.inner.settings.max_concurrent_jobs;
        if job.state == JobState::Pending
            && job.pending_reason == Some(PendingReason::Queued)
            && self.inner.running.load(Ordering::Relaxed) >= limit
        {
            job.pending_reason = Some(PendingReason::WaitingForWorker { limit });
        }
    }

    /// Lists jobs visible in `scope`, newest first.
    ///
    /// # Errors
    /// Store errors only.
    pub async fn list_jobs(
        &self,
        scope: &Scope,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<Page<Job>> {
        let mut p = self.inner.store.list_jobs(scope, filter, page).await?;
        for j in &mut p.items {
            self.explain_pending(j);
        }
        Ok(p)
    }

    /// Follows a job: its past log lines, then live lines and status changes, then its end.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the job does not exist or is outside `scope`.
    pub async fn watch_job(&self, scope: &Scope, job_id: &JobId) -> Result<JobWatch> {
        JobWatch::start(&self.inner, scope, job_id).await
    }

    /// Waits until a job ends and returns it.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown job; [`ErrorKind::Timeout`] when `timeout` passes
    /// first (the job goes on).
    pub async fn wait_job(
        &self,
        scope: &Scope,
        job_id: &JobId,
        timeout: Option<Duration>,
    ) -> Result<Job> {
        let wait = async {
            let mut w = self.watch_job(scope, job_id).await?;
            while let Some(u) = w.next().await {
                if let JobUpdate::End(job) = u {
                    return Ok(*job);
                }
            }
            self.get_job(scope, job_id).await
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait).await.map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("job `{job_id}` did not end within {t:?}"),
                )
                .with_context("job", job_id)
            })?,
            None => wait.await,
        }
    }

    /// Cancels a job: a pending job ends at once; a running job is interrupted and its partial
    /// work cleaned up.
    ///
    /// # Behavior
    /// A running job's provider call is dropped at once, even one that never returns; the job
    /// then ends `CANCELLED` (a cancelled create first removes what it made, within a bounded
    /// time). A cancel that arrives while a worker is claiming the job still reaches it. A job
    /// running in another process (replicas sharing a database) gets the request through the
    /// store ([`Job::cancel_requested`]); its worker stops it within about a second.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown job; [`ErrorKind::Conflict`] when it already ended.
    pub async fn cancel_job(
        &self,
        scope: &Scope,
        job_id: &JobId,
        principal: &Principal,
    ) -> Result<Job> {
        let job = self.get_job(scope, job_id).await?;
        if job.state.is_terminal() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("job `{job_id}` already ended ({})", job.state),
            ));
        }
        let cancelled = self
            .inner
            .update_job_with(job_id, |j| {
                if j.state != JobState::Pending {
                    return Err(Error::new(ErrorKind::Conflict, "not pending"));
                }
                j.transition(JobState::Cancelled, self.inner.now())?;
                j.error = Some(Box::new(
                    (&Error::new(ErrorKind::Cancelled, format!("cancelled by {principal}"))).into(),
                ));
                Ok(())
            })
            .await;
        match cancelled {
            Ok(job) => {
                worker::finish_pending(&self.inner, &job, principal).await;
                let _ = self.inner.sched.send(SchedMsg::Cancelled {
                    job_id: job.id.clone(),
                    vm_id: job.vm_id.clone(),
                });
                Ok(job)
            }
            // The store failed: say so, rather than report the job as running.
            Err(e) if e.kind() != ErrorKind::Conflict => Err(e),
            Err(_) => {
                // Running, or being claimed: a worker in this process takes this token when it
                // registers its own a moment later, so the cancel is never lost.
                lock(&self.inner.cancels)
                    .entry(job_id.clone())
                    .or_default()
                    .cancel();
                // A worker in another process (replicas sharing a database) reads the request
                // from the store.
                let asked = self
                    .inner
                    .update_job_with(job_id, |j| {
                        if j.state.is_terminal() || j.cancel_requested.is_some() {
                            return Err(Error::new(ErrorKind::Conflict, "unchanged"));
                        }
                        j.cancel_requested = Some(principal.clone());
                        Ok(())
                    })
                    .await;
                if let Err(e) = asked
                    && e.kind() != ErrorKind::Conflict
                {
                    return Err(e);
                }
                let job = self.get_job(scope, job_id).await?;
                if job.state.is_terminal() {
                    // It ended meanwhile; its worker no longer looks for the token.
                    lock(&self.inner.cancels).remove(job_id);
                }
                Ok(job)
            }
        }
    }

    /// Hands out a console to a running VM.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a VM outside `ctx`'s project; [`ErrorKind::FeatureNotSupported`]
    /// when its host offers no console; [`ErrorKind::Conflict`] when it is not running.
    pub async fn console(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
        kind: Option<ConsoleKind>,
    ) -> Result<Console> {
        let op = Operation::Console;
        let vm = self
            .get_vm(&ctx.scope(), vm_id)
            .await
            .map_err(|e| e.with_operation(op))?;
        self.require(&vm, op, Capability::Console)?;
        if vm.desired != DesiredState::Active {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "vm `{vm_id}` is {}; a console needs an active VM",
                    vm.desired
                ),
            )
            .with_operation(op));
        }
        let entry = self.inner.provider(&vm.binding.provider)?;
        let target = VmTarget {
            vm_id: vm.id.clone(),
            name: vm.spec.name.clone(),
            host: vm.binding.host.to_string(),
            native_id: vm.binding.native_id.clone(),
        };
        let console = self
            .inner
            .call(
                &vm.binding.provider,
                op,
                &vm.binding.host,
                entry
                    .provider
                    .console(GetConsole::new(target).with_kind(kind)),
            )
            .await?;
        self.inner
            .emit(
                Some(vm.project.clone()),
                Some(vm.id.clone()),
                Some(&ctx.principal),
                EventKind::ConsoleOpened {
                    console: console.kind,
                },
            )
            .await;
        Ok(console)
    }

    /// Subscribes to the live event stream.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events_tx.subscribe()
    }

    /// Reads the event stream back.
    ///
    /// # Errors
    /// Store errors only.
    pub async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Arc<Event>>> {
        self.inner.store.list_events(filter).await
    }

    /// Records an event from a shell (a console proxy session, say).
    pub async fn record_event(
        &self,
        project: Option<ProjectId>,
        vm_id: Option<VmId>,
        principal: Option<&Principal>,
        kind: EventKind,
    ) {
        self.inner.emit(project, vm_id, principal, kind).await;
    }

    /// Stops the reconciler and returns the jobs still running; they are not waited for.
    pub async fn shutdown(&self) -> Vec<JobId> {
        self.inner.shutdown.cancel();
        lock(&self.inner.cancels).keys().cloned().collect()
    }

    /// Offers the store's claimable jobs to the scheduler at start: jobs nobody ran, and jobs
    /// whose worker died (their lease lapsed). A job another replica still holds is left to it;
    /// the lease poller offers it again once its lease lapses.
    async fn recover_jobs(&self) -> Result<()> {
        leases::poll_once(&self.inner).await
    }
}

/// Checks an idempotency key: 1-255 bytes without control characters. [`Engine::submit`]
/// applies it; a remote shell applies it before sending, so both modes refuse the same keys.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `idempotency_key`.
pub fn validate_idempotency_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 255 || crate::model::has_control(key) {
        return Err(Error::invalid(
            "idempotency_key",
            "must be 1-255 characters without control characters",
        ));
    }
    Ok(())
}

/// Checks a name or id a request refers to (a VM id, a host): 1-255 bytes without control
/// characters, so that no error repeats a huge or garbled value. Whether it exists is checked
/// after.
fn validate_reference(field: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 255 || crate::model::has_control(value) {
        return Err(Error::invalid(
            field,
            format!(
                "is not a valid {field}: 1-255 bytes without control characters (got {} bytes)",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// A placement target's key in the scheduler: its provider and host as the shared text the
/// job and the VM record hold, so that passing it through the scheduler's queues and messages
/// copies no text.
#[derive(Debug, Clone)]
pub(crate) struct HostKey {
    provider: Arc<str>,
    host: Arc<str>,
}

impl HostKey {
    /// The key of `host` of `provider`, sharing their text.
    pub(crate) fn new(provider: &Arc<str>, host: &Arc<str>) -> Self {
        HostKey {
            provider: provider.clone(),
            host: host.clone(),
        }
    }

    /// The key of `host` of `provider`, from plain text.
    pub(crate) fn of(provider: &str, host: &str) -> Self {
        HostKey {
            provider: provider.into(),
            host: host.into(),
        }
    }

    /// The host's name.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }
}

/// Two keys are equal when their texts are (the same shared text usually: then no bytes are
/// compared).
impl PartialEq for HostKey {
    fn eq(&self, other: &Self) -> bool {
        use crate::model::same_text;
        same_text(&self.host, &other.host) && same_text(&self.provider, &other.provider)
    }
}

impl Eq for HostKey {}

impl std::hash::Hash for HostKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.provider.hash(state);
        self.host.hash(state);
    }
}

fn fingerprint(project: &ProjectId, action: &Action) -> String {
    let body = serde_json::to_vec(&(project, action)).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&body))
}

fn replay(rec: &IdempotencyRecord, fingerprint: &str) -> Result<Submitted> {
    if rec.fingerprint == fingerprint {
        Ok(Submitted {
            vm_id: rec.vm_id.clone(),
            job_id: rec.job_id.clone(),
            replayed: true,
        })
    } else {
        Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "idempotency key `{}` was already used for a different {} request",
                rec.scope.key, rec.scope.operation
            ),
        )
        .with_code(crate::CODE_IDEMPOTENCY_KEY_REUSED)
        .with_field("idempotency_key"))
    }
}

struct KeyGuard<'a> {
    inner: &'a Inner,
    scope: IdempotencyScope,
}

impl<'a> KeyGuard<'a> {
    fn acquire(inner: &'a Inner, scope: IdempotencyScope) -> Result<Self> {
        if !lock(&inner.inflight_keys).insert(scope.clone()) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "a request with idempotency key `{}` is still being accepted; retry shortly",
                    scope.key
                ),
            )
            .with_code(CODE_IDEMPOTENCY_KEY_IN_PROGRESS)
            .with_field("idempotency_key")
            .temporary());
        }
        Ok(KeyGuard { inner, scope })
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.inflight_keys).remove(&self.scope);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::HostKey;

    #[test]
    fn host_keys_are_equal_by_text_whether_shared_or_not() {
        use std::hash::BuildHasher;
        let (p, h) = (Arc::<str>::from("sim"), Arc::<str>::from("h1"));
        let shared = HostKey::new(&p, &h);
        let copied = HostKey::of("sim", "h1");
        assert_eq!(shared, HostKey::new(&p, &h));
        assert_eq!(shared, copied);
        let hasher = foldhash::fast::RandomState::default();
        assert_eq!(hasher.hash_one(&shared), hasher.hash_one(&copied));
        assert_eq!(shared.host(), "h1");
        // The parts stay apart: `a/b` + `c` is not `a` + `b/c`.
        assert_ne!(HostKey::of("a/b", "c"), HostKey::of("a", "b/c"));
        assert_ne!(HostKey::of("sim", "h1"), HostKey::of("sim", "h2"));
        assert_ne!(HostKey::of("sim", "h1"), HostKey::of("lv", "h1"));
    }
}
