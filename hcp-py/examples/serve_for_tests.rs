//! A test-only stand-in for `hcp serve`, used by the Python suite's remote-client tests while
//! the `hcp` binary has no `serve` command: it builds the engine and serves HCP's HTTP API
//! exactly as `hcp serve` will, through `hcp_server::build_engine` and `hcp_server::Server`.
//!
//! Usage: `serve_for_tests [--listen 127.0.0.1:PORT] [--config HOSTS_FILE]`. Prints
//! `listening on http://ADDR` once bound, then serves until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use hcp_server::{ServeOptions, Server};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve_for_tests: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut config: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "--config" => config = Some(args.next().ok_or("--config needs a path")?.into()),
            other => {
                return Err(format!(
                    "unknown argument `{other}`; allowed: --listen ADDR, --config FILE"
                ));
            }
        }
    }
    let listen = listen
        .parse()
        .map_err(|e| format!("--listen `{listen}` is not a socket address: {e}"))?;
    let engine = hcp_server::build_engine(config.as_deref(), &|name| std::env::var(name).ok())
        .await
        .map_err(|e| e.to_string())?;
    let options = ServeOptions::default()
        .with_listen(listen)
        .with_config(config);
    let server = Server::bind(engine, options)
        .await
        .map_err(|e| e.to_string())?;
    println!("listening on http://{}", server.local_addr());
    server
        .run(hcp_server::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}
