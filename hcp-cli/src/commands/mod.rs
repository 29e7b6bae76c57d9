//! The subcommands, one file each, dispatched by [`Command::run`].

mod capabilities;
mod catalog;
mod host;
mod job;
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
    /// Create, list, show, power and delete VMs (the tenant view).
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Show, list and watch jobs.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// List hypervisor hosts with their capacity and health (the operator view).
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Show the images, flavors, networks and zones VMs are created from.
    Catalog(catalog::CatalogArgs),
    /// Show what can be asked for in a zone (cloud-init, snapshots, consoles, limits).
    Capabilities(capabilities::CapabilitiesArgs),
}

impl Command {
    /// Returns true for commands that submit jobs: they hold the environment's lock and save
    /// their jobs when they end.
    pub fn mutates(&self) -> bool {
        match self {
            Command::Vm(c) => c.mutates(),
            Command::Job(_) | Command::Host(_) | Command::Catalog(_) | Command::Capabilities(_) => {
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
            Command::Vm(c) => c.run(session).await,
            Command::Job(c) => c.run(session).await,
            Command::Host(c) => c.run(session).await,
            Command::Catalog(c) => c.run(session).await,
            Command::Capabilities(c) => c.run(session).await,
        }
    }
}
