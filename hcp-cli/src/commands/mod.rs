//! The subcommands, one file each: `hcp serve` runs the service from `main`; the others are
//! dispatched by [`ClientCommand::run`].

mod capabilities;
mod catalog;
mod host;
mod job;
mod serve;
mod server_group;
mod snapshot;
mod vm;

use clap::Subcommand;

use crate::backend::Backend;
use crate::output::Format;

/// What every command gets: where to send requests and how to print.
#[derive(Debug)]
pub struct Session {
    /// Where requests go.
    pub backend: Backend,
    /// How results are printed.
    pub format: Format,
}

/// The `hcp` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service: the tenant, ops and common APIs, Swagger UI and metrics (the
    /// simulator's demo, in memory, on 127.0.0.1:8080 without configuration).
    #[command(after_long_help = serve::HELP)]
    Serve(serve::ServeArgs),
    /// The commands that act on VMs, jobs and inventory.
    #[command(flatten)]
    Client(ClientCommand),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish) to stdout.
    #[command(after_long_help = COMPLETION_HELP)]
    Completion(CompletionArgs),
    /// Print hcp's manual page (roff) to stdout, or write one page per command into a directory.
    Man(ManArgs),
}

const COMPLETION_HELP: &str = "\
Load it into the running shell, or install it where the shell looks for completions:
  bash:        source <(hcp completion bash)
               hcp completion bash > ~/.local/share/bash-completion/completions/hcp
  zsh:         hcp completion zsh > \"${fpath[1]}/_hcp\"   (then start a new shell)
  fish:        hcp completion fish > ~/.config/fish/completions/hcp.fish
  powershell:  hcp completion powershell | Out-String | Invoke-Expression";

/// `hcp completion`
#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `hcp man`
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Writes `hcp.1` and one page per subcommand (`hcp-vm-create.1`, ...) into this directory
    /// instead of printing `hcp.1` to stdout; install them with e.g.
    /// `hcp man --dir ~/.local/share/man/man1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// The commands that go to a backend: an embedded engine, or a service with `--url`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create, list, show, power and delete VMs (the tenant view).
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Show, list, watch and cancel jobs.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// List hypervisor hosts with their capacity and health (the operator view).
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Show the images, flavors, networks and zones VMs are created from.
    Catalog(catalog::CatalogArgs),
    /// Show what can be asked for in a zone (cloud-init, snapshots, consoles, limits).
    Capabilities(capabilities::CapabilitiesArgs),
    /// Create, list, show and delete server groups: sets of VMs placed apart (anti-affinity)
    /// or together (affinity).
    #[command(subcommand)]
    ServerGroup(server_group::ServerGroupCommand),
}

impl ClientCommand {
    /// Returns true for commands that submit jobs: they hold the environment's lock and save
    /// their jobs when they end.
    pub fn mutates(&self) -> bool {
        match self {
            ClientCommand::Vm(c) => c.mutates(),
            ClientCommand::Job(c) => c.mutates(),
            ClientCommand::ServerGroup(c) => c.mutates(),
            ClientCommand::Host(_) | ClientCommand::Catalog(_) | ClientCommand::Capabilities(_) => {
                false
            }
        }
    }

    /// Runs the command.
    ///
    /// # Errors
    /// The command's error; [`crate::exit`] turns it into the exit code.
    pub async fn run(self, session: &Session) -> anyhow::Result<()> {
        match self {
            ClientCommand::Vm(c) => c.run(session).await,
            ClientCommand::Job(c) => c.run(session).await,
            ClientCommand::Host(c) => c.run(session).await,
            ClientCommand::Catalog(c) => c.run(session).await,
            ClientCommand::Capabilities(c) => c.run(session).await,
            ClientCommand::ServerGroup(c) => c.run(session).await,
        }
    }
}
