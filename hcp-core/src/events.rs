//! The append-only audit and metering stream: who did what to which VM, every job transition,
//! drift. Sinks receive every event; subscribers follow it live.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    ConsoleKind, Drift, ErrorInfo, GroupPolicy, GroupStrength, JobId, JobState, Operation,
    ProjectId, Resources, ServerGroupId, VmId,
};

/// One audit or metering event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its position in the stream, from 1 (assigned by the store).
    pub seq: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The project it concerns, if any (drift on unmanaged VMs has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<ProjectId>,
    /// The VM it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<VmId>,
    /// Who acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<std::sync::Arc<str>>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A job changed state (accepted jobs appear with `from: None`).
    JobTransition {
        /// The job.
        job_id: JobId,
        /// Its operation.
        operation: Operation,
        /// The previous state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<JobState>,
        /// The new state.
        to: JobState,
        /// The attempt number.
        attempt: u32,
        /// The error, for failed or cancelled jobs and retried attempts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
    /// A VM came into existence (metering starts).
    VmCreated {
        /// Its size.
        resources: Resources,
    },
    /// A VM was deleted (metering stops).
    VmDeleted {
        /// Its size.
        resources: Resources,
    },
    /// A VM's size changed in place (metering moves from `from` to `to`).
    VmResized {
        /// Its size before.
        from: Resources,
        /// Its size now.
        to: Resources,
    },
    /// A tenant changed a VM's tags (`PATCH .../vms/{vmId}`).
    VmTagsUpdated {
        /// The tags after the change.
        tags: std::collections::BTreeMap<String, String>,
    },
    /// A VM came under HCP: rebuilt from its host's mark after a restart, or adopted by an
    /// operator (`POST /api/hcp/ops/v1/vms:adopt`).
    VmAdopted {
        /// The provider.
        provider: String,
        /// The host.
        host: String,
    },
    /// An operator released a VM: HCP's mark was removed from it and HCP forgot it; the VM
    /// itself was left as it was.
    VmReleased {
        /// The provider.
        provider: String,
        /// The host.
        host: String,
    },
    /// An operator moved a VM to another host (operators' view: tenants never see hosts).
    VmMigrated {
        /// The provider.
        provider: String,
        /// The host the VM left.
        from_host: String,
        /// The host the VM runs on now.
        to_host: String,
    },
    /// A difference between desired and observed state.
    Drift(Drift),
    /// The reconciler acted on drift per `engine.drift_repairs` (operators' view).
    DriftRepaired {
        /// The drift it acted on.
        drift: Drift,
        /// What it did.
        action: RepairAction,
    },
    /// Someone asked for an inventory refresh and reconciliation now.
    ReconcileRequested {
        /// Hosts that answered.
        hosts_ok: usize,
        /// Hosts that did not.
        hosts_failed: usize,
        /// Drift found (new and old).
        drift: usize,
    },
    /// A console was handed out.
    ConsoleOpened {
        /// The console type.
        console: ConsoleKind,
    },
    /// A console connection through HCP's proxy started or ended.
    ConsoleSession {
        /// True when the connection opened, false when it closed.
        opened: bool,
        /// Bytes relayed, when it closed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes: Option<u64>,
    },
    /// A tenant created a server group.
    ServerGroupCreated {
        /// The group.
        group_id: ServerGroupId,
        /// Its name.
        name: String,
        /// Its policy.
        policy: GroupPolicy,
        /// Its strength.
        strength: GroupStrength,
    },
    /// A tenant deleted a server group.
    ServerGroupDeleted {
        /// The group.
        group_id: ServerGroupId,
        /// Its name.
        name: String,
    },
}

impl EventKind {
    /// Every stable event name [`EventKind::name`] returns, for schemas that list them.
    pub const NAMES: &'static [&'static str] = &[
        "job_transition",
        "vm_created",
        "vm_deleted",
        "vm_tags_updated",
        "vm_resized",
        "vm_adopted",
        "vm_released",
        "vm_migrated",
        "drift",
        "drift_repaired",
        "reconcile_requested",
        "console_opened",
        "console_session",
        "server_group_created",
        "server_group_deleted",
    ];

    /// Returns the stable event name (`job_transition`, `drift`, ...), one of
    /// [`EventKind::NAMES`].
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::JobTransition { .. } => "job_transition",
            EventKind::VmCreated { .. } => "vm_created",
            EventKind::VmDeleted { .. } => "vm_deleted",
            EventKind::VmTagsUpdated { .. } => "vm_tags_updated",
            EventKind::VmResized { .. } => "vm_resized",
            EventKind::VmAdopted { .. } => "vm_adopted",
            EventKind::VmReleased { .. } => "vm_released",
            EventKind::VmMigrated { .. } => "vm_migrated",
            EventKind::Drift(_) => "drift",
            EventKind::DriftRepaired { .. } => "drift_repaired",
            EventKind::ReconcileRequested { .. } => "reconcile_requested",
            EventKind::ConsoleOpened { .. } => "console_opened",
            EventKind::ConsoleSession { .. } => "console_session",
            EventKind::ServerGroupCreated { .. } => "server_group_created",
            EventKind::ServerGroupDeleted { .. } => "server_group_deleted",
        }
    }
}

/// What the reconciler did about one drift.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairAction {
    /// Recorded the host a moved VM was found on as its placement.
    FollowedMove,
    /// Marked a missing VM `ERROR` with the reason.
    MarkedError,
}

/// Receives every event once it is appended to the store.
pub trait EventSink: Send + Sync + fmt::Debug {
    /// Handles one event. Must not block.
    fn emit(&self, event: &Arc<Event>);
}

/// The default sink: one JSON line per event through `tracing`, target `hcp::audit`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingSink;

impl EventSink for TracingSink {
    fn emit(&self, event: &Arc<Event>) {
        if tracing::enabled!(target: "hcp::audit", tracing::Level::INFO) {
            match serde_json::to_string(event.as_ref()) {
                Ok(json) => tracing::info!(target: "hcp::audit", event = %json, "audit"),
                Err(e) => {
                    tracing::warn!(target: "hcp::audit", error = %e, "unserializable audit event")
                }
            }
        }
    }
}

/// Selects events when reading the stream back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events after this sequence number.
    pub after: u64,
    /// Only this project's events.
    pub project: Option<ProjectId>,
    /// Only this VM's events.
    pub vm_id: Option<VmId>,
    /// At most this many.
    pub limit: usize,
}

impl EventFilter {
    /// Returns true when `e` matches (ignoring `after` and `limit`).
    pub fn matches(&self, e: &Event) -> bool {
        self.project
            .as_ref()
            .is_none_or(|p| e.project.as_ref() == Some(p))
            && self
                .vm_id
                .as_ref()
                .is_none_or(|v| e.vm_id.as_ref() == Some(v))
    }
}
