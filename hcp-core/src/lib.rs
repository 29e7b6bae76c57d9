//! # hcp-core
//!
//! The heart of HCP, the Hypervisor Control Plane: the provider-agnostic VM model, the
//! [`Provider`] trait every hypervisor adapter implements, [`Capabilities`] and their
//! negotiation, one [`Error`] type, the job state machine, and the [`Engine`] that every shell
//! (HTTP service, CLI, Python module) drives.
//!
//! The model ([`model`]), job state machine ([`job`]) and drift classification ([`reconcile`])
//! are plain data and functions; only the engine, the stores and the providers do I/O.
//!
//! ```no_run
//! # async fn demo(config: hcp_core::Config, sim: hcp_core::ProviderFactory) -> hcp_core::Result<()> {
//! use hcp_core::{Engine, Principal, RequestContext, VmSpec, store::Scope};
//!
//! let engine = Engine::builder(config)
//!     .provider_kind("sim", move |c, s| sim(c, s))
//!     .build()
//!     .await?;
//! let ctx = RequestContext::new("demo", Principal::new("alice"));
//! let submitted = engine.create_vm(&ctx, VmSpec::new("web-1", "ubuntu-24.04", "small")).await?;
//! let job = engine.wait_job(&ctx.scope(), &submitted.job_id, None).await?;
//! println!("{} {}", submitted.vm_id, job.state);
//! # Ok(()) }
//! ```

/// Implements `Clone` field by field, with a `clone_from` that copies into the target's own
/// allocations (a stored record rewritten in place keeps its text buffers). `copy` names the
/// `Copy` fields, `clone` the others; both lists together must name every field (the
/// destructuring refuses to compile otherwise), so a new field cannot be forgotten.
macro_rules! clone_in_place {
    ($ty:ident { copy: [$($c:ident),* $(,)?], clone: [$($f:ident),* $(,)?] $(,)? }) => {
        impl Clone for $ty {
            fn clone(&self) -> Self {
                let $ty { $($c,)* $($f,)* } = self;
                $ty { $($c: *$c,)* $($f: $f.clone(),)* }
            }

            fn clone_from(&mut self, source: &Self) {
                let $ty { $($c,)* $($f,)* } = source;
                $(self.$c = *$c;)*
                $(self.$f.clone_from($f);)*
            }
        }
    };
}

pub mod capability;
pub mod clock;
pub mod config;
pub mod console;
pub mod engine;
pub mod error;
pub mod events;
pub mod group;
pub mod job;
pub mod layer;
pub mod leader;
pub mod model;
pub mod observe;
pub mod operation;
pub mod provider;
pub mod reconcile;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use capability::{Capabilities, Capability, ExceededLimit, Requirements};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    CapabilityLimits, CatalogConfig, ClusterConfig, Config, DriftPolicy, DriftRepairs,
    EngineSettings, HostConfig, MAX_TARGET_JOBS, MissingRepair, MovedRepair, ProjectConfig,
    ProviderCallSettings, ProviderConfig, Quota, SecretString, Secrets, UnmanagedRepair,
    ZoneConfig, parse_duration,
};
pub use console::{
    Console, ConsoleHandshake, ConsoleKind, ConsoleTransport, ConsoleUpstream, TlsTrust,
};
pub use engine::{
    Action, CODE_RESIZE_NOT_ALLOWED, CODE_VM_STATE_CONFLICT, ChangeImpact, Engine, EngineBuilder,
    EngineStats, FieldPlan, InventoryVm, JobWatch, ProviderCapabilities, ProviderFactory,
    ProviderStatus, RefreshReport, RequestContext, ResizeRequest, Snapshot, SnapshotSubmitted,
    Submitted, plan_resize, snapshot_id, validate_idempotency_key,
};
pub use engine::{AdoptRequest, MAX_SERVER_GROUP_MEMBERS, MigrateRequest, NewServerGroup};
pub use error::{
    CODE_CAPACITY_EXHAUSTED, CODE_IDEMPOTENCY_KEY_IN_PROGRESS, CODE_IDEMPOTENCY_KEY_REUSED,
    CODE_LEASE_LOST, CODE_PRECONDITION_FAILED, CODE_PRECONDITION_REQUIRED, ECHO_MAX_CHARS, Error,
    ErrorInfo, ErrorKind, ErrorStatus, Result, echo, excerpt,
};
pub use events::{Event, EventFilter, EventKind, EventSink, RepairAction, TracingSink};
pub use group::{
    CODE_SERVER_GROUP_NOT_EMPTY, CODE_SERVER_GROUP_POLICY, GroupPolicy, GroupStrength, ServerGroup,
};
pub use job::{
    Job, JobAction, JobLease, JobLogLine, JobState, JobUpdate, LogAudience, LogEntry, LogLevel,
    PendingReason, RetryDecision, RetryPolicy,
};
pub use leader::{AlwaysLeader, CODE_LEADERSHIP_LOST, LeaderFence, Leadership};
pub use model::{
    Catalog, DesiredState, Flavor, HcpMark, Host, Image, JobId, MAX_CATALOG_NAME_BYTES,
    MAX_DISK_GIB, MAX_MEMORY_MIB, MAX_NETWORKS, MAX_TAGS, MAX_USER_DATA_BYTES, MAX_VCPUS,
    MIN_DISK_GIB, MIN_MEMORY_MIB, MIN_VCPUS, Network, NetworkAttachment, PowerState, Principal,
    ProjectId, ProviderBinding, Resources, ServerGroupId, TenantVm, Vm, VmId, VmSpec, Zone,
    validate_catalog_name, validate_dns_label, validate_range, validate_tags, validate_user_data,
};
pub use observe::{NoopObserver, Observer};
pub use operation::{Operation, Repeat};
pub use provider::{
    CreateVm, CreatedVm, DeleteSnapshot, DeleteVm, DeletedSnapshot, DeletedVm, GetConsole,
    HostInfo, HostInventory, HostInventoryReply, ImageOffer, JobReporter, ListSnapshots, MarkedVm,
    MemberHost, MigrateVm, MigratedVm, NativeSnapshot, NativeVm, NetworkPlan, OpContext, Provider,
    ProviderInfo, RebootVm, RebootedVm, ResizeVm, ResizedVm, RevertSnapshot, RevertedSnapshot,
    SetMark, SnapshotVm, SnapshottedVm, StartVm, StartedVm, StopVm, StoppedVm, TargetKind,
    VmTarget,
};
pub use reconcile::Drift;

/// The maps of the engine's and the memory store's hot paths: std's maps with foldhash, which
/// is seeded per process (so keys from outside cannot be chosen to collide) and costs a fraction
/// of SipHash per lookup.
pub(crate) mod fastmap {
    /// A hash map with foldhash.
    pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
    /// A hash set with foldhash.
    pub(crate) type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
}
