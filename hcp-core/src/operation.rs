//! The operations HCP performs, each with one stable name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One operation, named identically in errors, log fields, metric labels and audit events.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Creates a VM (and starts it).
    CreateVm,
    /// Deletes a VM and its disks.
    DeleteVm,
    /// Powers a VM on.
    StartVm,
    /// Powers a VM off, gracefully first.
    StopVm,
    /// Restarts a VM.
    RebootVm,
    /// Opens a console to a VM.
    Console,
    /// Takes a snapshot of a VM.
    SnapshotVm,
    /// Moves a running VM to another host.
    MigrateVm,
    /// Lists a VM's snapshots.
    ListSnapshots,
    /// Returns a VM to one of its snapshots.
    RevertSnapshot,
    /// Deletes one of a VM's snapshots.
    DeleteSnapshot,
    /// Changes a VM's vCPUs, memory or disk size in place.
    ResizeVm,
    /// Takes a VM created outside HCP into a project: writes HCP's mark on it.
    AdoptVm,
    /// Gives a VM back: removes HCP's mark from it and forgets it, leaving the VM running.
    ReleaseVm,
    /// Lists a provider's hosts.
    ListHosts,
    /// Reads one host's inventory.
    HostInventory,
    /// Compares desired and observed state.
    Reconcile,
}

impl Operation {
    /// Every operation, in declaration order.
    pub const ALL: [Operation; 17] = [
        Operation::CreateVm,
        Operation::DeleteVm,
        Operation::StartVm,
        Operation::StopVm,
        Operation::RebootVm,
        Operation::Console,
        Operation::SnapshotVm,
        Operation::MigrateVm,
        Operation::ListSnapshots,
        Operation::RevertSnapshot,
        Operation::DeleteSnapshot,
        Operation::ResizeVm,
        Operation::AdoptVm,
        Operation::ReleaseVm,
        Operation::ListHosts,
        Operation::HostInventory,
        Operation::Reconcile,
    ];

    /// Returns the stable name (`"create_vm"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateVm => "create_vm",
            Operation::DeleteVm => "delete_vm",
            Operation::StartVm => "start_vm",
            Operation::StopVm => "stop_vm",
            Operation::RebootVm => "reboot_vm",
            Operation::Console => "console",
            Operation::SnapshotVm => "snapshot_vm",
            Operation::MigrateVm => "migrate_vm",
            Operation::ListSnapshots => "list_snapshots",
            Operation::RevertSnapshot => "revert_snapshot",
            Operation::DeleteSnapshot => "delete_snapshot",
            Operation::ResizeVm => "resize_vm",
            Operation::AdoptVm => "adopt_vm",
            Operation::ReleaseVm => "release_vm",
            Operation::ListHosts => "list_hosts",
            Operation::HostInventory => "host_inventory",
            Operation::Reconcile => "reconcile",
        }
    }

    /// Returns true for operations that change infrastructure and therefore run as jobs.
    pub fn is_job(self) -> bool {
        matches!(
            self,
            Operation::CreateVm
                | Operation::DeleteVm
                | Operation::StartVm
                | Operation::StopVm
                | Operation::RebootVm
                | Operation::SnapshotVm
                | Operation::MigrateVm
                | Operation::RevertSnapshot
                | Operation::DeleteSnapshot
                | Operation::ResizeVm
                | Operation::AdoptVm
                | Operation::ReleaseVm
        )
    }
}

/// Whether a provider call may run again when an earlier attempt's outcome is unknown (it
/// failed with a temporary error, or timed out and was cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repeat {
    /// Running it twice has the effect of running it once: reads, deletes, power changes to a
    /// named state, writes of absolute values.
    Safe,
    /// Running it twice is safe because the call carries a guard the provider honours: a
    /// create carries HCP's mark, and a provider finds the VM made by an earlier attempt
    /// instead of making a second (the `create_is_idempotent` conformance check).
    Guarded,
    /// Running it twice may do it twice (a second reboot, a second snapshot, a move from where
    /// the first attempt left the VM): never repeated without looking at the hypervisor first.
    Unsafe,
}

impl Repeat {
    /// Returns true when the call may run again without looking at the hypervisor first.
    pub fn may_repeat(self) -> bool {
        !matches!(self, Repeat::Unsafe)
    }
}

impl Operation {
    /// Returns whether a call of this operation may run again when an earlier attempt's
    /// outcome is unknown; [`crate::layer::RetryLayer`] repeats only [`Repeat::Safe`] and
    /// [`Repeat::Guarded`] calls.
    pub fn repeat(self) -> Repeat {
        match self {
            Operation::CreateVm => Repeat::Guarded,
            Operation::DeleteVm
            | Operation::StartVm
            | Operation::StopVm
            | Operation::Console
            | Operation::ListSnapshots
            | Operation::ResizeVm
            | Operation::AdoptVm
            | Operation::ReleaseVm
            | Operation::ListHosts
            | Operation::HostInventory
            | Operation::Reconcile => Repeat::Safe,
            Operation::RebootVm
            | Operation::SnapshotVm
            | Operation::MigrateVm
            | Operation::RevertSnapshot
            | Operation::DeleteSnapshot => Repeat::Unsafe,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Operation {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| {
                crate::Error::invalid(
                    "operation",
                    format!("unknown operation `{}`", crate::error::echo(s)),
                )
            })
    }
}
