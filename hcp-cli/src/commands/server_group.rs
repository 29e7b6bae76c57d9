//! `hcp server-group`: create, list, show and delete a project's server groups, the sets of VMs
//! that placement keeps apart (anti-affinity) or together (affinity).

use clap::{Args, Subcommand, ValueEnum};
use hcp_core::{GroupPolicy, GroupStrength, NewServerGroup, ProjectId, ServerGroup, ServerGroupId};

use super::Session;
use crate::output;

/// `hcp server-group ...`
#[derive(Debug, Subcommand)]
pub enum ServerGroupCommand {
    /// Create an empty server group; VMs join it with `hcp vm create --server-group ID`.
    Create(CreateArgs),
    /// List a project's server groups with their member VMs.
    List(ProjectArg),
    /// Show one server group with its member VMs.
    Show(GroupRef),
    /// Delete an empty server group (delete its VMs first: SERVER_GROUP_NOT_EMPTY).
    Delete(GroupRef),
}

/// The project of a command.
#[derive(Debug, Args)]
pub struct ProjectArg {
    /// The project (tenant).
    #[arg(long, env = "HCP_PROJECT")]
    project: String,
}

/// Names one group.
#[derive(Debug, Args)]
pub struct GroupRef {
    /// The group id (`sg-…`, see `hcp server-group list`).
    #[arg(value_name = "GROUP_ID")]
    id: String,
    #[command(flatten)]
    project: ProjectArg,
}

/// The placement policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Members on different hosts.
    AntiAffinity,
    /// Members on one host.
    Affinity,
}

/// How strictly the policy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrengthArg {
    /// Never broken: a create that cannot keep it is refused before any job.
    Hard,
    /// Preferred while hosts have room.
    Soft,
}

/// `hcp server-group create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// The group's name, unique in the project: 1-63 characters of a-z, 0-9 and '-', starting
    /// with a letter.
    #[arg(long)]
    name: String,
    /// Keep the members apart (anti-affinity) or together (affinity).
    #[arg(long, value_enum)]
    policy: PolicyArg,
    /// hard (never broken) or soft (preferred).
    #[arg(long, value_enum, default_value = "hard")]
    strength: StrengthArg,
}

impl ServerGroupCommand {
    /// Returns true for the commands that change groups: they hold the environment's lock and
    /// save the groups when they end.
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            ServerGroupCommand::Create(_) | ServerGroupCommand::Delete(_)
        )
    }

    /// Runs the command.
    ///
    /// # Errors
    /// Invalid input, an unknown project or group, a name taken, or a group that is not empty.
    pub async fn run(self, s: &Session) -> anyhow::Result<()> {
        match self {
            ServerGroupCommand::Create(a) => {
                let group = s
                    .backend
                    .create_server_group(
                        &ProjectId::new(a.project.project),
                        NewServerGroup {
                            name: a.name,
                            policy: match a.policy {
                                PolicyArg::AntiAffinity => GroupPolicy::AntiAffinity,
                                PolicyArg::Affinity => GroupPolicy::Affinity,
                            },
                            strength: match a.strength {
                                StrengthArg::Hard => GroupStrength::Hard,
                                StrengthArg::Soft => GroupStrength::Soft,
                            },
                        },
                    )
                    .await?;
                output::print(s.format, &group, group_details)
            }
            ServerGroupCommand::List(p) => {
                let groups = s
                    .backend
                    .list_server_groups(&ProjectId::new(p.project))
                    .await?;
                output::print(s.format, &groups, |g| group_table(g))
            }
            ServerGroupCommand::Show(r) => {
                let group = s
                    .backend
                    .get_server_group(
                        &ProjectId::new(r.project.project),
                        &ServerGroupId::new(r.id),
                    )
                    .await?;
                output::print(s.format, &group, group_details)
            }
            ServerGroupCommand::Delete(r) => {
                let id = ServerGroupId::new(r.id);
                s.backend
                    .delete_server_group(&ProjectId::new(r.project.project), &id)
                    .await?;
                output::print(
                    s.format,
                    &serde_json::json!({ "id": id, "deleted": true }),
                    |_| format!("Deleted server group {id}."),
                )
            }
        }
    }
}

fn members(g: &ServerGroup) -> String {
    if g.members.is_empty() {
        "-".to_string()
    } else {
        g.members
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn group_details(g: &ServerGroup) -> String {
    output::details(vec![
        ("ID", g.id.to_string()),
        ("Name", g.name.clone()),
        ("Project", g.project.to_string()),
        ("Policy", g.describe()),
        ("Members", members(g)),
        ("Created", output::time(&g.created_at)),
    ])
}

fn group_table(groups: &[ServerGroup]) -> String {
    if groups.is_empty() {
        return "No server groups.".into();
    }
    let mut t = output::table(&["ID", "NAME", "POLICY", "MEMBERS"]);
    for g in groups {
        t.add_row(vec![
            g.id.to_string(),
            g.name.clone(),
            g.describe(),
            g.members.len().to_string(),
        ]);
    }
    t.to_string()
}
