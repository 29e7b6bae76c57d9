//! `hcp job`: show, list, watch and cancel jobs, including those of earlier commands.

use clap::{Args, Subcommand, ValueEnum};
use hcp_core::store::JobFilter;
use hcp_core::{JobId, JobState, ProjectId, VmId};

use super::Session;
use crate::output::{self, Format};
use crate::views::{JobEvent, JobFailed};

/// `hcp job ...`
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Show one job.
    Show(JobRef),
    /// List jobs, newest first.
    List(ListArgs),
    /// Print a job's log lines as they come until it ends, then its final state; exits with
    /// code 8 when it did not succeed.
    Watch(JobRef),
    /// Cancel a job: a pending job ends CANCELLED at once, a running one is asked to stop and
    /// ends CANCELLED shortly (follow it with `hcp job watch`). A job that already ended is a
    /// conflict (exit code 4).
    Cancel(JobRef),
}

/// Names one job.
#[derive(Debug, Args)]
pub struct JobRef {
    /// The job id (`job-…`).
    #[arg(value_name = "ID")]
    id: String,
    /// The job's project; when given, a job of another project is not found.
    #[arg(long, env = "HCP_PROJECT")]
    project: Option<String>,
}

/// `hcp job list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this project's jobs.
    #[arg(long, env = "HCP_PROJECT")]
    project: Option<String>,
    /// Only jobs on this VM.
    #[arg(long, value_name = "ID")]
    vm: Option<String>,
    /// Only jobs in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// The most jobs to list.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
}

/// Job states, as `--state` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Accepted, not yet running.
    Pending,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl From<StateArg> for JobState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Pending => JobState::Pending,
            StateArg::Running => JobState::Running,
            StateArg::Succeeded => JobState::Succeeded,
            StateArg::Failed => JobState::Failed,
            StateArg::Cancelled => JobState::Cancelled,
        }
    }
}

impl JobCommand {
    /// Returns true for commands that change jobs: they hold the environment's lock and save
    /// the jobs when they end (embedded mode).
    pub fn mutates(&self) -> bool {
        matches!(self, JobCommand::Cancel(_))
    }

    /// Runs the command.
    ///
    /// # Errors
    /// An unknown job or project; for `watch`, a job that did not succeed.
    pub async fn run(self, s: &Session) -> anyhow::Result<()> {
        match self {
            JobCommand::Show(r) => {
                let project = r.project.as_deref().map(ProjectId::from);
                let job = s
                    .backend
                    .get_job(project.as_ref(), &JobId::from(r.id.as_str()))
                    .await?;
                output::print(s.format, &job, output::job_details)
            }
            JobCommand::List(a) => {
                let project = a.project.as_deref().map(ProjectId::from);
                let filter = JobFilter {
                    vm_id: a.vm.as_deref().map(VmId::from),
                    state: a.state.map(JobState::from),
                };
                let jobs = s
                    .backend
                    .list_jobs(project.as_ref(), &filter, a.limit as usize)
                    .await?;
                output::print(s.format, &jobs, |j| output::job_table(j))
            }
            JobCommand::Cancel(r) => {
                let project = r.project.as_deref().map(ProjectId::from);
                let job = s
                    .backend
                    .cancel_job(project.as_ref(), &JobId::from(r.id.as_str()))
                    .await?;
                output::print(s.format, &job, output::job_details)
            }
            JobCommand::Watch(r) => {
                let project = r.project.as_deref().map(ProjectId::from);
                let mut stream = s
                    .backend
                    .watch_job(project.as_ref(), &JobId::from(r.id.as_str()))
                    .await?;
                while let Some(event) = stream.next().await {
                    let event = event?;
                    match s.format {
                        Format::Json => output::json_line(&event)?,
                        Format::Table => match &event {
                            JobEvent::Log(line) => output::line(&output::log_line(line))?,
                            JobEvent::Status { .. } => {}
                            JobEvent::End { job } => {
                                output::line(&format!(
                                    "{} {} {}",
                                    job.id, job.operation, job.state
                                ))?;
                                if let Some(e) = &job.error {
                                    output::line(&format!("error: {} ({})", e.message, e.code))?;
                                }
                            }
                        },
                    }
                    if let JobEvent::End { job } = event {
                        if job.state != JobState::Succeeded {
                            return Err(JobFailed { job: *job }.into());
                        }
                        return Ok(());
                    }
                }
                Ok(())
            }
        }
    }
}
