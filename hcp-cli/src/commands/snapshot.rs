//! `hcp vm snapshot`: take, list, revert to and delete a VM's snapshots.

use clap::{Args, Subcommand};
use hcp_core::Action;

use super::Session;
use super::vm::{SubmitArgs, VmRef, finish};
use crate::output;

/// `hcp vm snapshot ...`
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot (a running VM's snapshot holds its memory state).
    Create(CreateArgs),
    /// List a VM's snapshots, oldest first.
    List(VmRef),
    /// Return a VM to a snapshot; says whether the VM's memory state comes back.
    Revert(SnapshotArgs),
    /// Delete a snapshot; the VM keeps its current state.
    Delete(SnapshotArgs),
}

/// `hcp vm snapshot create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    vm: VmRef,
    /// The snapshot's name, unique per VM: 1-63 characters of a-z, 0-9 and '-', starting with
    /// a letter.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// Names one snapshot of one VM.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    vm: VmRef,
    /// The snapshot id (`snap-…`, see `hcp vm snapshot list`).
    #[arg(long = "snapshot", value_name = "SNAPSHOT_ID")]
    snapshot_id: String,
    #[command(flatten)]
    submit: SubmitArgs,
}

impl SnapshotCommand {
    /// Returns true for the commands that submit a job.
    pub fn mutates(&self) -> bool {
        !matches!(self, SnapshotCommand::List(_))
    }

    /// Runs the command.
    ///
    /// # Errors
    /// Invalid input, an unknown VM or snapshot, a refused request, or a job that did not
    /// succeed.
    pub async fn run(self, s: &Session) -> anyhow::Result<()> {
        let (vm, action, submit) = match self {
            SnapshotCommand::List(r) => {
                let id = r.resolve(&s.backend).await?;
                let snaps = s.backend.list_snapshots(r.project().as_ref(), &id).await?;
                return output::print(s.format, &snaps, |v| snapshot_table(v));
            }
            SnapshotCommand::Create(a) => {
                let action = Action::Snapshot {
                    vm_id: a.vm.resolve(&s.backend).await?,
                    name: a.name,
                };
                (a.vm, action, a.submit)
            }
            SnapshotCommand::Revert(a) => {
                let action = Action::RevertSnapshot {
                    vm_id: a.vm.resolve(&s.backend).await?,
                    snapshot_id: a.snapshot_id,
                };
                (a.vm, action, a.submit)
            }
            SnapshotCommand::Delete(a) => {
                let action = Action::DeleteSnapshot {
                    vm_id: a.vm.resolve(&s.backend).await?,
                    snapshot_id: a.snapshot_id,
                };
                (a.vm, action, a.submit)
            }
        };
        let project = vm.project();
        let accepted = s
            .backend
            .submit(project.as_ref(), action, submit.idempotency_key.clone())
            .await?;
        finish(s, project.as_ref(), accepted, &submit).await
    }
}

fn snapshot_table(snaps: &[hcp_core::Snapshot]) -> String {
    if snaps.is_empty() {
        return "No snapshots.".into();
    }
    let mut t = output::table(&["ID", "NAME", "CREATED", "MEMORY"]);
    for snap in snaps {
        t.add_row(vec![
            snap.id.clone(),
            snap.name.clone(),
            snap.created_at
                .as_ref()
                .map(output::time)
                .unwrap_or_default(),
            if snap.memory {
                "yes"
            } else {
                "no (disks only)"
            }
            .to_string(),
        ]);
    }
    t.to_string()
}
