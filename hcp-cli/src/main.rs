//! `hcp`: create, run, watch and delete VMs through HCP's engine from the command line, and
//! `hcp serve`, the HTTP service.
//!
//! Without `--url`, every command runs an engine inside the process (the embedded mode): the
//! simulator's demo inventory by default, or the providers of the hosts file named by `--config`
//! / `HCP_CONFIG`. An embedded engine lives for one command, so the simulator keeps its hosts and
//! VMs in a state file, finished jobs and idempotency records go to a jobs file next to it
//! ([`local`]), the engine rebuilds its inventory from the providers at every start, and mutating
//! commands wait for their job.
//!
//! With `--url` / `HCP_URL` (and `--token` / `HCP_TOKEN`), the same commands go to a running
//! `hcp serve` ([`remote`]); mutating commands return once the service accepts the job unless
//! `--wait` is given.
//!
//! The code is a shell: [`commands`] parses argv (one file per subcommand), [`backend`] says
//! where commands go, [`output`] prints, [`exit`] maps errors to exit codes. Every decision
//! (validation, placement, capabilities, idempotency) is `hcp_core`'s.

mod backend;
mod bridge;
mod commands;
mod exit;
mod local;
mod output;
mod progress;
mod views;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// mimalloc (through hcp-alloc): a job allocates ~100 times, and with the system allocator those
// allocations and frees were a quarter of the engine's instructions per job
// (`./scripts/bench.sh callgrind`).
#[global_allocator]
static ALLOCATOR: hcp_alloc::Allocator = hcp_alloc::Allocator;

use clap::Parser;
use hcp_core::{Error, SecretString};

use crate::backend::Backend;
use crate::commands::{ClientCommand, Command};
use crate::output::Format;

/// Run VMs on Hyper-V, Proxmox VE, vSphere and libvirt (or the built-in simulator) through one API.
///
/// With no configuration, `hcp` runs the built-in simulator demo: project `demo`, zones `zone-a`
/// and `zone-b`, images `ubuntu-24.04` and `windows-2022`, flavors `small` and `medium`.
/// Its state lives under `$XDG_STATE_HOME/hcp` (or `~/.local/state/hcp`); set `HCP_SIM_STATE`
/// to keep it elsewhere. With `--url`, commands go to a running `hcp serve` instead.
#[derive(Debug, Parser)]
#[command(name = "hcp", version, about, long_about, after_help = exit::HELP, after_long_help = exit::HELP)]
struct Cli {
    /// Prints results as a table or as JSON (errors go to stderr, as JSON with `json`).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table, env = "HCP_OUTPUT", help_heading = "Global options")]
    output: Format,

    /// Reads providers, hosts, zones, catalog and projects from this hosts file (YAML) instead of
    /// running the built-in simulator demo (embedded mode and `hcp serve`).
    #[arg(
        long,
        global = true,
        env = "HCP_CONFIG",
        value_name = "FILE",
        help_heading = "Global options"
    )]
    config: Option<PathBuf>,

    /// Sends every command to the `hcp serve` at this URL (e.g. http://127.0.0.1:8080) instead
    /// of running an engine in this process (not used by `hcp serve`).
    #[arg(
        long,
        global = true,
        env = "HCP_URL",
        value_name = "URL",
        help_heading = "Remote options"
    )]
    url: Option<String>,

    /// The bearer token sent to the service with --url; prefer HCP_TOKEN, which stays out of
    /// the process list (not used by `hcp serve`).
    #[arg(long, global = true, env = "HCP_TOKEN", hide_env_values = true, value_name = "TOKEN", value_parser = parse_token, help_heading = "Remote options")]
    token: Option<SecretString>,

    #[command(subcommand)]
    command: Command,
}

fn parse_token(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::new(s))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let format = cli.output;
    let result = match cli.command {
        Command::Completion(args) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut cmd, "hcp", &mut std::io::stdout());
            Ok(())
        }
        Command::Man(args) => man(args.dir.as_deref()),
        Command::Serve(args) => {
            // The service installs its own log subscriber (HCP_LOG_FORMAT, HCP_LOG_LEVEL).
            runtime(None).and_then(|rt| {
                let result = rt.block_on(args.run(cli.config.as_deref()));
                // Jobs still running were logged; do not wait for their tasks.
                rt.shutdown_timeout(Duration::from_secs(1));
                result
            })
        }
        Command::Client(command) => {
            init_logging();
            runtime(Some(2)).and_then(|rt| {
                rt.block_on(run(
                    command,
                    cli.config.as_deref(),
                    cli.url.as_deref(),
                    cli.token.as_ref(),
                    format,
                ))
            })
        }
    };
    match result {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(e) => {
            output::print_error(format, &e);
            exit::code_of(&e)
        }
    }
}

/// Reports a command line clap could not parse: as clap's text, or as the same JSON error every
/// other failure prints when `--output json` (or `HCP_OUTPUT=json`) was asked for. Help and
/// version requests print as usual.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ErrorKind as ClapKind};
    if matches!(e.kind(), ClapKind::DisplayHelp | ClapKind::DisplayVersion) || !wants_json() {
        let _ = e.print();
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(exit::INVALID_INPUT));
    }
    let field = match e.get(ContextKind::InvalidArg) {
        Some(clap::error::ContextValue::String(s)) => Some(s.clone()),
        Some(clap::error::ContextValue::Strings(v)) => v.first().cloned(),
        _ => None,
    };
    let message = e
        .render()
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string();
    let body = serde_json::json!({"error": {
        "code": "INVALID_SPEC",
        "kind": "invalid_spec",
        "message": message,
        "field": field,
    }});
    eprintln!("{body}");
    ExitCode::from(exit::INVALID_INPUT)
}

/// Returns true when the command line or `HCP_OUTPUT` asks for JSON output.
fn wants_json() -> bool {
    // Let clap read what it can of the line that failed: the output flag, or HCP_OUTPUT.
    <Cli as clap::CommandFactory>::command()
        .ignore_errors(true)
        .try_get_matches()
        .ok()
        .and_then(|m| m.get_one::<Format>("output").copied())
        == Some(Format::Json)
}

/// Prints the manual page, or writes every command's page into `dir`.
fn man(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match dir {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| anyhow::Error::new(e).context("cannot write the manual page"))
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::Error::from(Error::invalid(
                    "dir",
                    format!("cannot create {}: {e}", dir.display()),
                ))
            })?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| {
                anyhow::Error::from(Error::invalid(
                    "dir",
                    format!("cannot write the manual pages into {}: {e}", dir.display()),
                ))
            })
        }
    }
}

fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| anyhow::Error::new(e).context("cannot start the async runtime"))
}

async fn run(
    command: ClientCommand,
    config: Option<&std::path::Path>,
    url: Option<&str>,
    token: Option<&SecretString>,
    format: Format,
) -> anyhow::Result<()> {
    let backend = match url {
        Some(url) => {
            if config.is_some() {
                return Err(Error::invalid(
                    "config",
                    "--config (HCP_CONFIG) names the hosts file of an embedded engine; with --url \
                     (HCP_URL) the service reads its own, so give only one of them",
                )
                .into());
            }
            Backend::remote(url, token)?
        }
        None => Backend::open(config, command.mutates()).await?,
    };
    let session = commands::Session { backend, format };
    let result = command.run(&session).await;
    // Close even after a failure: a failed job is worth keeping for `hcp job show`.
    let closed = session.backend.close().await;
    result.and(closed)
}

/// Logs to stderr only when asked: `HCP_LOG_LEVEL` (the variable `hcp serve` reads too; the
/// older `HCP_LOG` is still read) takes a filter such as `warn`, `debug` or `hcp::audit=info`.
/// Off by default, so a command's output and errors are all a tenant sees; colours only on a
/// terminal and never with `NO_COLOR` set.
fn init_logging() {
    use std::io::IsTerminal;
    let Some(level) = std::env::var("HCP_LOG_LEVEL")
        .ok()
        .or_else(|| std::env::var("HCP_LOG").ok())
        .filter(|v| !v.trim().is_empty())
    else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|e| {
        eprintln!("hcp: HCP_LOG_LEVEL: `{level}` is not a log filter ({e}); logging warnings only");
        tracing_subscriber::EnvFilter::new("warn")
    });
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .finish()
        .with(hcp_server::secret_safe_filter())
        .try_init();
}
