//! `hcp`: create, run, watch and delete VMs through HCP's engine from the command line.
//!
//! Every command runs an engine inside the process (the embedded mode): the simulator's demo
//! inventory by default, or the providers of the hosts file named by `--config` / `HCP_CONFIG`.
//! An embedded engine lives for one command, so the simulator keeps its hosts and VMs in a state
//! file, finished jobs and idempotency records go to a jobs file next to it ([`local`]), the
//! engine rebuilds its inventory from the providers at every start, and mutating commands wait
//! for their job.
//!
//! The code is a shell: [`commands`] parses argv (one file per subcommand), [`backend`] says
//! where commands go, [`output`] prints, [`exit`] maps errors to exit codes. Every decision
//! (validation, placement, capabilities, idempotency) is `hcp_core`'s.

mod backend;
mod commands;
mod exit;
mod local;
mod output;
mod progress;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::backend::Backend;
use crate::output::Format;

/// Run VMs on Hyper-V, Proxmox, vSphere and libvirt through one API.
///
/// With no configuration, `hcp` runs the built-in simulator demo: project `demo`, zones `zone-a`
/// and `zone-b`, images `ubuntu-24.04` and `windows-2022`, flavors `small` and `medium`.
/// Its state lives under `$XDG_STATE_HOME/hcp` (or `~/.local/state/hcp`); set `HCP_SIM_STATE`
/// to keep it elsewhere.
#[derive(Debug, Parser)]
#[command(name = "hcp", version, about, long_about, after_help = exit::HELP, after_long_help = exit::HELP)]
struct Cli {
    /// Prints results as a table or as JSON (errors go to stderr, as JSON with `json`).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table, env = "HCP_OUTPUT")]
    output: Format,

    /// Reads providers, hosts, zones, catalog and projects from this hosts file (YAML) instead of
    /// running the built-in simulator demo.
    #[arg(long, global = true, env = "HCP_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    // The HTTP service issue adds `--url` (`HCP_URL`) and `--token` (`HCP_TOKEN`) here: with a
    // URL, `Backend::open` returns a remote backend and every command runs unchanged.
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let format = cli.output;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let e = anyhow::Error::new(e).context("cannot start the async runtime");
            output::print_error(format, &e);
            return exit::code_of(&e);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(e) => {
            output::print_error(format, &e);
            exit::code_of(&e)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let backend = Backend::open(cli.config.as_deref(), cli.command.mutates()).await?;
    let session = commands::Session {
        backend,
        format: cli.output,
    };
    let result = cli.command.run(&session).await;
    // Close even after a failure: a failed job is worth keeping for `hcp job show`.
    let closed = session.backend.close().await;
    result.and(closed)
}

/// Logs to stderr; `HCP_LOG` takes a filter such as `debug` or `hcp::audit=info` (default `warn`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HCP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
