//! `hcp vm`: create, list, show, start, stop, reboot, delete, open a console and manage
//! snapshots (tenant view).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use hcp_core::store::{VmFilter, VmSort, parse_power_filter, parse_state_filter, parse_tag_filter};
use hcp_core::{Action, ConsoleKind, Error, ErrorKind, NetworkAttachment, ProjectId, VmId, VmSpec};

use super::Session;
use crate::backend::Accepted;
use crate::output;
use crate::progress::{self, Progress};
use crate::views::{JobFailed, Outcome};

/// `hcp vm ...`
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM (and, in embedded mode or with --wait, wait until it runs).
    Create(Box<CreateArgs>),
    /// List the VMs of a project.
    List(ListArgs),
    /// Show one VM.
    Show(VmRef),
    /// Power a VM on.
    Start(StartArgs),
    /// Power a VM off (gracefully, unless --force).
    Stop(StopArgs),
    /// Restart a running VM.
    Reboot(RebootArgs),
    /// Delete a VM and its disks.
    Delete(DeleteArgs),
    /// Print a console URL for a running VM, or bridge it to a local port (--listen).
    Console(ConsoleArgs),
    /// Plan a resize: per field that would change, what applying it takes on this VM's
    /// hypervisor in its power state (hot, reboot, power_off, recreate, data_destructive), and
    /// why. Changes nothing.
    Plan(PlanArgs),
    /// Resize a VM in place (vCPUs, memory, disk growth or a flavor), applying only what
    /// --allow accepts: each changed field is planned as by `hcp vm plan`, and a field needing
    /// more is refused before any job (RESIZE_NOT_ALLOWED). A disk never shrinks.
    Resize(ResizeArgs),
    /// Take, list, revert to and delete a VM's snapshots.
    #[command(subcommand)]
    Snapshot(super::snapshot::SnapshotCommand),
    /// Move a VM to another host of its provider and zone: live, or with --allow-cold stopped,
    /// moved and started again (operators: with --url, a token with the operator role).
    /// `hcp host list` shows the hosts.
    Migrate(MigrateArgs),
    /// Take a VM created outside HCP into a project (operators): HCP's mark is written on it,
    /// nothing else about it changes. `hcp host inventory` shows the adoptable VMs.
    Adopt(AdoptArgs),
    /// Give a VM back (operators): HCP's mark is removed and HCP forgets the VM, which stays on
    /// its host as it is.
    Release(ReleaseArgs),
}

/// `hcp vm adopt`
#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The VM's native id or name on its host, as the inventory shows it.
    #[arg(value_name = "NATIVE_ID|NAME")]
    vm: String,
    /// The host the VM is on.
    #[arg(long)]
    host: String,
    /// The project the VM joins.
    #[arg(long, env = "HCP_PROJECT")]
    project: String,
    /// The host's provider, when hosts of several providers share its name.
    #[arg(long)]
    provider: Option<String>,
    /// The VM's name in HCP; the hypervisor's name by default. Only with --url: embedded
    /// mode rebuilds VMs from the hypervisors' marks, which keep no HCP name.
    #[arg(long)]
    name: Option<String>,
    /// A tag in HCP; repeat for several (the hypervisor's tags by default). Only with --url,
    /// like --name.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// `hcp vm release`
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    vm: VmRef,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// `hcp vm migrate`
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    vm: VmRef,
    /// The host to move to; without it, HCP picks another reachable host of the VM's zone with
    /// room for it.
    #[arg(long = "to", value_name = "HOST")]
    to: Option<String>,
    /// Accepts a cold move where no live one is possible (a stopped VM, or a host that cannot
    /// move running VMs): HCP stops the VM, moves it and starts it again, so it is unavailable
    /// meanwhile. Refused (FEATURE_NOT_SUPPORTED) where the hosts cannot move stopped VMs
    /// either.
    #[arg(long)]
    allow_cold: bool,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// Options of every command that submits a job.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Makes the request safe to retry: the same request with the same key returns the first
    /// answer without doing anything again; a different request with it is refused
    /// (IDEMPOTENCY_KEY_REUSED, exit code 4).
    #[arg(long, value_name = "KEY")]
    pub(super) idempotency_key: Option<String>,
    /// Waits for the job, showing its progress and log lines on stderr until it ends. The
    /// embedded engine always waits; with --url, a command without --wait returns as soon as
    /// the service accepts the job and prints its id.
    #[arg(long)]
    pub(super) wait: bool,
}

/// `hcp vm create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The project (tenant) the VM belongs to.
    #[arg(long, env = "HCP_PROJECT")]
    project: String,
    /// The VM name, unique in its project: 1-63 characters of a-z, 0-9 and '-', starting with a
    /// letter.
    #[arg(long)]
    name: String,
    /// The catalog image to boot from (see `hcp catalog`).
    #[arg(long)]
    image: String,
    /// The catalog flavor (size); without one, give --vcpus, --memory-mib and --disk-gib.
    #[arg(long)]
    flavor: Option<String>,
    /// vCPUs, overriding the flavor's.
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory in MiB, overriding the flavor's.
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Disk size in GiB, overriding the flavor's.
    #[arg(long)]
    disk_gib: Option<u64>,
    /// The placement zone; any zone with room when absent.
    #[arg(long)]
    zone: Option<String>,
    /// A catalog network to attach; repeat for several, in order.
    #[arg(long = "network", value_name = "NETWORK")]
    networks: Vec<String>,
    /// A cloud-init user-data file (`-` reads stdin); needs a zone with cloud_init.
    #[arg(long, value_name = "FILE")]
    user_data: Option<PathBuf>,
    /// A tag; repeat for several.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// The server group (`sg-…`, see `hcp server-group list`) the VM joins; placement keeps
    /// its policy, and a hard one that cannot be met is refused before any job
    /// (SERVER_GROUP_POLICY).
    #[arg(long, value_name = "GROUP_ID")]
    server_group: Option<String>,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// `hcp vm list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The project whose VMs to list.
    #[arg(long, env = "HCP_PROJECT")]
    project: String,
    /// Only VMs whose name starts with this text (case-sensitive).
    #[arg(long, value_name = "PREFIX")]
    name_prefix: Option<String>,
    /// Only VMs with this tag; repeat for more (a VM needs all of them).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Only VMs in this state: PENDING, ACTIVE, ERROR or DELETED.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Only VMs in this observed power state: RUNNING, STOPPED, PAUSED or UNKNOWN.
    #[arg(long, value_name = "POWER")]
    power: Option<String>,
    /// The order: name, -name, created_at or -created_at (`-`: largest first); by VM id when
    /// absent.
    #[arg(long, value_name = "ORDER", allow_hyphen_values = true)]
    sort: Option<String>,
}

impl ListArgs {
    /// Builds the filter and order, with errors naming the option.
    fn query(&self) -> hcp_core::Result<(VmFilter, VmSort)> {
        let filter = VmFilter {
            name_prefix: self.name_prefix.clone(),
            tags: self
                .tags
                .iter()
                .map(|t| parse_tag_filter(t))
                .collect::<hcp_core::Result<_>>()?,
            state: self.state.as_deref().map(parse_state_filter).transpose()?,
            power: self.power.as_deref().map(parse_power_filter).transpose()?,
        };
        filter.validate()?;
        let sort = match &self.sort {
            Some(s) => s.parse()?,
            None => VmSort::default(),
        };
        Ok((filter, sort))
    }
}

/// Names one VM.
#[derive(Debug, Args)]
pub struct VmRef {
    /// The VM id (`vm-…`), or its name together with --project (names are unique in a project).
    #[arg(value_name = "ID|NAME")]
    id: String,
    /// The VM's project; when given, a VM of another project is not found.
    #[arg(long, env = "HCP_PROJECT")]
    project: Option<String>,
}

impl VmRef {
    pub(super) fn project(&self) -> Option<ProjectId> {
        self.project.as_deref().map(ProjectId::from)
    }

    /// Returns the VM's id: the argument itself when it is an id (`vm-…`) of a VM that exists,
    /// else the id of the VM of that name in --project. The same rule in embedded and remote
    /// mode, since both answer the same two questions.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming `vm_id` when neither an id nor a name matches;
    /// [`ErrorKind::InvalidSpec`] naming `project` for a name without --project.
    pub(super) async fn resolve(
        &self,
        backend: &crate::backend::Backend,
    ) -> hcp_core::Result<VmId> {
        let project = self.project();
        if self.id.starts_with("vm-") {
            let id = VmId::from(self.id.as_str());
            match backend.get_vm(project.as_ref(), &id).await {
                Ok(_) => return Ok(id),
                // A VM may be named like an id: look for the name too.
                Err(e) if e.kind() == ErrorKind::NotFound && project.is_some() => {}
                Err(e) => return Err(e),
            }
        }
        let Some(project) = project else {
            return Err(Error::invalid(
                "project",
                format!(
                    "`{}` is not a VM id (vm-…); to address a VM by its name, give its project \
                     with --project (or HCP_PROJECT)",
                    hcp_core::echo(&self.id)
                ),
            ));
        };
        let vms = backend.list_vms(&project).await?;
        match vms.iter().find(|vm| vm.name == self.id) {
            Some(vm) => Ok(vm.id.clone()),
            None => Err(Error::not_found("vm", &self.id).with_field("vm_id")),
        }
    }
}

/// `hcp vm start`
#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    vm: VmRef,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// `hcp vm stop`
#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    vm: VmRef,
    /// Powers off at once instead of asking the guest to shut down.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// `hcp vm reboot`
#[derive(Debug, Args)]
pub struct RebootArgs {
    #[command(flatten)]
    vm: VmRef,
    /// Resets the VM instead of asking the guest to reboot.
    #[arg(long)]
    hard: bool,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// `hcp vm delete`
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    vm: VmRef,
    /// Skips the graceful shutdown of a running VM (without it: graceful, hard after the stop timeout).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// `hcp vm plan`
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    vm: VmRef,
    /// A catalog flavor to move to.
    #[arg(long)]
    flavor: Option<String>,
    /// vCPUs (overrides the flavor's).
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory in MiB (overrides the flavor's).
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Disk size in GiB (overrides the flavor's).
    #[arg(long)]
    disk_gib: Option<u64>,
}

/// What a resize may take (see `hcp vm plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImpactArg {
    /// No power change: live on a running VM, at once on a stopped one.
    Hot,
    /// The job restarts the running VM after the change.
    Reboot,
    /// The job stops the running VM, changes it, and starts it again.
    #[value(name = "power_off")]
    PowerOff,
}

impl From<ImpactArg> for hcp_core::ChangeImpact {
    fn from(a: ImpactArg) -> Self {
        match a {
            ImpactArg::Hot => hcp_core::ChangeImpact::Hot,
            ImpactArg::Reboot => hcp_core::ChangeImpact::Reboot,
            ImpactArg::PowerOff => hcp_core::ChangeImpact::PowerOff,
        }
    }
}

/// `hcp vm resize`
#[derive(Debug, Args)]
pub struct ResizeArgs {
    #[command(flatten)]
    vm: VmRef,
    /// A catalog flavor to move to.
    #[arg(long)]
    flavor: Option<String>,
    /// vCPUs (overrides the flavor's).
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory in MiB (overrides the flavor's).
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Disk size in GiB (overrides the flavor's); never below the current size.
    #[arg(long)]
    disk_gib: Option<u64>,
    /// What the change may take, comma-separated: hot, reboot, power_off.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "hot")]
    allow: Vec<ImpactArg>,
    #[command(flatten)]
    submit: SubmitArgs,
}

/// `hcp vm console`
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    vm: VmRef,
    /// The console protocol; the host's default when absent.
    #[arg(long = "type", value_enum)]
    kind: Option<ConsoleType>,
    /// Bridge the console to this loopback address (e.g. 127.0.0.1:5901; port 0 picks one) for
    /// a native VNC or RDP client, instead of printing its URL. Runs until Ctrl-C.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// With --listen: stop after the first client disconnects.
    #[arg(long, requires = "listen")]
    once: bool,
}

/// Console protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsoleType {
    /// VNC.
    Vnc,
    /// SPICE.
    Spice,
    /// A browser URL.
    Web,
    /// RDP / VMConnect.
    Rdp,
    /// VMware WebMKS.
    Webmks,
}

impl From<ConsoleType> for ConsoleKind {
    fn from(t: ConsoleType) -> Self {
        match t {
            ConsoleType::Vnc => ConsoleKind::Vnc,
            ConsoleType::Spice => ConsoleKind::Spice,
            ConsoleType::Web => ConsoleKind::Web,
            ConsoleType::Rdp => ConsoleKind::Rdp,
            ConsoleType::Webmks => ConsoleKind::Webmks,
        }
    }
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

impl VmCommand {
    /// Returns true for the commands that submit a job.
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            VmCommand::Create(_)
                | VmCommand::Start(_)
                | VmCommand::Stop(_)
                | VmCommand::Reboot(_)
                | VmCommand::Delete(_)
                | VmCommand::Migrate(_)
                | VmCommand::Adopt(_)
                | VmCommand::Release(_)
                | VmCommand::Resize(_)
        ) || matches!(self, VmCommand::Snapshot(c) if c.mutates())
    }

    /// Runs the command.
    ///
    /// # Errors
    /// Invalid input, an unknown VM, a refused request, or a job that did not succeed.
    pub async fn run(self, s: &Session) -> anyhow::Result<()> {
        match self {
            VmCommand::Create(a) => {
                let project = ProjectId::from(a.project.as_str());
                let spec = a.spec()?;
                let action = Action::Create { spec, host: None };
                let accepted = s
                    .backend
                    .submit(Some(&project), action, a.submit.idempotency_key.clone())
                    .await?;
                finish(s, Some(&project), accepted, &a.submit).await
            }
            VmCommand::List(a) => {
                let (filter, sort) = a.query()?;
                let vms = s
                    .backend
                    .list_vms_matching(&ProjectId::from(a.project.as_str()), &filter, sort)
                    .await?;
                output::print(s.format, &vms, |v| output::vm_table(v))
            }
            VmCommand::Show(r) => {
                let id = r.resolve(&s.backend).await?;
                let vm = s.backend.get_vm(r.project().as_ref(), &id).await?;
                output::print(s.format, &vm, output::vm_details)
            }
            VmCommand::Start(a) => {
                let action = Action::Start {
                    vm_id: a.vm.resolve(&s.backend).await?,
                };
                act(s, &a.vm, action, a.submit).await
            }
            VmCommand::Stop(a) => {
                let action = Action::Stop {
                    vm_id: a.vm.resolve(&s.backend).await?,
                    force: a.force,
                };
                act(s, &a.vm, action, a.submit).await
            }
            VmCommand::Reboot(a) => {
                let action = Action::Reboot {
                    vm_id: a.vm.resolve(&s.backend).await?,
                    hard: a.hard,
                };
                act(s, &a.vm, action, a.submit).await
            }
            VmCommand::Delete(a) => {
                let action = Action::Delete {
                    vm_id: a.vm.resolve(&s.backend).await?,
                    force: a.force,
                };
                act(s, &a.vm, action, a.submit).await
            }
            VmCommand::Snapshot(c) => c.run(s).await,
            VmCommand::Migrate(a) => {
                let id = a.vm.resolve(&s.backend).await?;
                let request = hcp_core::MigrateRequest::new()
                    .with_target_host(a.to)
                    .with_allow_cold(a.allow_cold);
                let project = a.vm.project();
                let accepted = s
                    .backend
                    .migrate_vm(
                        project.as_ref(),
                        &id,
                        &request,
                        a.submit.idempotency_key.clone(),
                    )
                    .await?;
                finish(s, project.as_ref(), accepted, &a.submit).await
            }
            VmCommand::Adopt(a) => {
                // Each embedded command rebuilds its VMs from the marks on the hypervisors, and a
                // mark carries no HCP-only name or tags: the next command would silently show the
                // hypervisor's again.
                if !s.backend.is_remote() {
                    let field = if a.name.is_some() {
                        Some("name")
                    } else if !a.tags.is_empty() {
                        Some("tags")
                    } else {
                        None
                    };
                    if let Some(field) = field {
                        return Err(hcp_core::Error::invalid(
                            field,
                            "cannot be set in embedded mode, where every command rebuilds its VMs from the hypervisors' marks and a mark keeps neither an HCP name nor tags; adopt without --name and --tag (the hypervisor's name and tags are kept), or adopt through a service with --url",
                        )
                        .into());
                    }
                }
                let project = ProjectId::from(a.project.as_str());
                let tags = (!a.tags.is_empty()).then(|| a.tags.into_iter().collect());
                let request = hcp_core::AdoptRequest::new(a.host, a.vm)
                    .with_provider(a.provider)
                    .with_name(a.name)
                    .with_tags(tags);
                let accepted = s
                    .backend
                    .adopt_vm(&project, &request, a.submit.idempotency_key.clone())
                    .await?;
                finish(s, Some(&project), accepted, &a.submit).await
            }
            VmCommand::Release(a) => {
                let id = a.vm.resolve(&s.backend).await?;
                let project = a.vm.project();
                let accepted = s
                    .backend
                    .release_vm(project.as_ref(), &id, a.submit.idempotency_key.clone())
                    .await?;
                finish(s, project.as_ref(), accepted, &a.submit).await
            }
            VmCommand::Resize(a) => {
                let action = Action::Resize {
                    vm_id: a.vm.resolve(&s.backend).await?,
                    change: hcp_core::ResizeRequest {
                        flavor: a.flavor,
                        vcpus: a.vcpus,
                        memory_mib: a.memory_mib,
                        disk_gib: a.disk_gib,
                    },
                    allow: a.allow.into_iter().map(Into::into).collect(),
                };
                act(s, &a.vm, action, a.submit).await
            }
            VmCommand::Plan(a) => {
                let id = a.vm.resolve(&s.backend).await?;
                let request = hcp_core::ResizeRequest {
                    flavor: a.flavor,
                    vcpus: a.vcpus,
                    memory_mib: a.memory_mib,
                    disk_gib: a.disk_gib,
                };
                let plan = s
                    .backend
                    .plan_resize(a.vm.project().as_ref(), &id, &request)
                    .await?;
                output::print(s.format, &plan, |p| {
                    if p.is_empty() {
                        return "Nothing would change.".into();
                    }
                    let mut t = output::table(&["FIELD", "FROM", "TO", "TAKES", "WHY"]);
                    for f in p {
                        t.add_row(vec![
                            f.field.clone(),
                            f.from.to_string(),
                            f.to.to_string(),
                            f.impact.as_str().to_string(),
                            f.reason.clone(),
                        ]);
                    }
                    t.to_string()
                })
            }
            VmCommand::Console(a) if a.listen.is_some() => {
                let addr = crate::bridge::parse_listen(a.listen.as_deref().unwrap_or_default())?;
                let vm_id = a.vm.resolve(&s.backend).await?;
                let project = a.vm.project();
                crate::bridge::Bridge {
                    backend: &s.backend,
                    project: project.as_ref(),
                    vm_id: &vm_id,
                    kind: a.kind.map(ConsoleKind::from),
                    format: s.format,
                }
                .run(addr, a.once)
                .await
            }
            VmCommand::Console(a) => {
                let console = s
                    .backend
                    .console(
                        a.vm.project().as_ref(),
                        &a.vm.resolve(&s.backend).await?,
                        a.kind.map(ConsoleKind::from),
                    )
                    .await?;
                output::print(s.format, &console, |c| {
                    output::details(vec![
                        ("Type", c.kind.as_str().to_string()),
                        ("URL", c.url.clone()),
                        ("Expires", output::time(&c.expires_at)),
                    ])
                })
            }
        }
    }
}

impl CreateArgs {
    /// Builds the spec; the engine validates it (names, sizes, catalog, capabilities).
    fn spec(&self) -> Result<VmSpec, Error> {
        let mut tags = BTreeMap::new();
        for (k, v) in &self.tags {
            if tags.insert(k.clone(), v.clone()).is_some() {
                return Err(Error::invalid(
                    format!("tags.{k}"),
                    "is given twice; give each tag key once",
                ));
            }
        }
        let user_data = self.user_data.as_ref().map(read_user_data).transpose()?;
        Ok(VmSpec {
            name: self.name.clone(),
            image: self.image.clone(),
            flavor: self.flavor.clone(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
            networks: self
                .networks
                .iter()
                .map(|n| NetworkAttachment { network: n.clone() })
                .collect(),
            zone: self.zone.clone(),
            tags,
            user_data,
            server_group: self.server_group.clone().map(hcp_core::ServerGroupId::new),
        })
    }
}

fn read_user_data(path: &PathBuf) -> Result<String, Error> {
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|e| Error::invalid("user_data", format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::invalid("user_data", format!("{} is not UTF-8 text", path.display())))
}

async fn act(s: &Session, vm: &VmRef, action: Action, submit: SubmitArgs) -> anyhow::Result<()> {
    let project = vm.project();
    let accepted = s
        .backend
        .submit(project.as_ref(), action, submit.idempotency_key.clone())
        .await?;
    finish(s, project.as_ref(), accepted, &submit).await
}

/// Waits for the job (unless the service runs it and `--wait` is not given), prints what
/// happened, and fails with [`JobFailed`] unless it succeeded (without waiting: when it has
/// already failed or been cancelled).
pub(super) async fn finish(
    s: &Session,
    project: Option<&ProjectId>,
    accepted: Accepted,
    submit: &SubmitArgs,
) -> anyhow::Result<()> {
    let wait = submit.wait;
    let waits = wait || !s.backend.is_remote();
    let mut job = if waits {
        progress::follow(
            &s.backend,
            project,
            &accepted.job_id,
            // Embedded, the command waits anyway: on a terminal, show that it does.
            Progress::for_wait(wait || std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .await?
    } else {
        s.backend.get_job(project, &accepted.job_id).await?
    };
    if job.idempotency_key.is_none() {
        // The service's job view leaves the key out; it is the one this request sent.
        job.idempotency_key = submit.idempotency_key.clone();
    }
    let vm = match s.backend.get_vm(project, &accepted.vm_id).await {
        Ok(vm) => Some(vm),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let outcome = Outcome {
        vm_id: accepted.vm_id,
        job_id: accepted.job_id,
        replayed: accepted.replayed,
        job,
        vm,
        snapshot_id: accepted.snapshot_id,
        memory_state_kept: accepted.memory_state_kept,
    };
    output::print(s.format, &outcome, |o| output::outcome(o, waits))?;
    // Without waiting, a job still pending or running is a success (the service accepted it);
    // one that already ended FAILED or CANCELLED is reported as the failure it is.
    let failed = matches!(
        outcome.job.state,
        hcp_core::JobState::Failed | hcp_core::JobState::Cancelled
    );
    if (waits && outcome.job.state != hcp_core::JobState::Succeeded) || failed {
        Err(JobFailed { job: outcome.job }.into())
    } else {
        Ok(())
    }
}
