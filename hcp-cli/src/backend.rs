//! Where commands go: an engine inside this process ([`hcp_client::EngineClient`], with the
//! CLI's state and jobs files) or a running `hcp serve` ([`hcp_client::Client`]). Both sit
//! behind [`hcp_client::Hcp`], which [`Backend`] dereferences to, so command code does not know
//! which one it talks to; what stays here is the CLI's own: the local files and lock, and
//! dialling a console for `--listen`.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use hcp_client::{EngineClient, Hcp, TenantUpdates};
use hcp_core::store::MemoryStore;
use hcp_core::{
    Console, ConsoleKind, ConsoleUpstream, Engine, Error, ErrorKind, JobId, Principal, ProjectId,
    SecretString, TlsTrust, VmId,
};

use hcp_server::relay::{self, ByteStream};

pub use hcp_client::Accepted;

use crate::local::{self, EngineLock, Retention, StatePaths};
use crate::views::JobEvent;

/// How long opening a console (and its handshake) may take.
pub const CONSOLE_DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The error for a console that HCP does not relay: the client opens its URL itself.
pub fn not_relayed(console: &Console) -> Error {
    Error::new(
        ErrorKind::FeatureNotSupported,
        format!(
            "this {} console is a URL the client opens itself ({}); --listen bridges consoles \
             HCP relays (VNC, RDP)",
            console.kind.as_str(),
            console.url
        ),
    )
    .with_field("listen")
    .with_operation(hcp_core::Operation::Console)
}

/// Where commands go.
#[derive(Debug)]
pub struct Backend {
    hcp: Arc<dyn Hcp>,
    /// The embedded engine's files and lock; `None` for a service.
    local: Option<Box<Local>>,
    /// The bearer token, for the service's console proxy.
    token: Option<SecretString>,
}

impl Deref for Backend {
    type Target = dyn Hcp;

    fn deref(&self) -> &Self::Target {
        self.hcp.as_ref()
    }
}

/// Follows one job; see [`Backend::watch_job`].
pub struct JobStream(TenantUpdates);

impl std::fmt::Debug for JobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStream").finish_non_exhaustive()
    }
}

impl JobStream {
    /// Returns the next update, or `None` after the end.
    ///
    /// # Errors
    /// Remote mode: the stream broke, or closed before the job ended.
    pub async fn next(&mut self) -> Option<hcp_core::Result<JobEvent>> {
        self.0.next().await.map(|u| u.map(JobEvent::from))
    }
}

/// The embedded engine's files: the jobs it ran are saved to them when a mutating command
/// closes.
#[derive(Debug)]
struct Local {
    store: Arc<MemoryStore>,
    paths: StatePaths,
    retention: Retention,
    /// Held by mutating commands until they close.
    lock: Option<EngineLock>,
}

impl Backend {
    /// Opens the backend for one command. `mutating` commands hold the environment's lock until
    /// [`Backend::close`].
    ///
    /// # Errors
    /// An invalid hosts file or environment variable ([`ErrorKind::InvalidSpec`] naming the key
    /// and line), an unreadable state or jobs file, or a provider that cannot be built.
    pub async fn open(config_path: Option<&Path>, mutating: bool) -> anyhow::Result<Backend> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut config = hcp_providers::load_config(config_path, &env)?;
        let paths = StatePaths::resolve(config_path, &env)?;
        paths.create_dir()?;
        paths.assign_sim_state(&mut config)?;
        let lock = if mutating {
            Some(EngineLock::acquire(&paths.engine_lock, || {
                eprintln!("hcp: waiting for another hcp command on this environment to finish...");
            })?)
        } else {
            None
        };
        let settings = &config.engine;
        let retention = Retention {
            max_jobs: local::MAX_JOBS,
            jobs: settings.job_retention,
            keys: settings.idempotency_ttl,
        };
        let store = Arc::new(MemoryStore::new(
            settings.max_log_lines_per_job,
            settings.max_events,
        ));
        store.import(local::read_jobs(&paths.jobs)?);
        let engine = hcp_providers::register_all(Engine::builder(config))
            .store(store.clone())
            .without_background_reconcile()
            .build()
            .await?;
        Ok(Backend {
            hcp: Arc::new(EngineClient::new(engine, local_principal())),
            local: Some(Box::new(Local {
                store,
                paths,
                retention,
                lock,
            })),
            token: None,
        })
    }

    /// Connects to the service at `url` (nothing is sent until the first request).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `url` or `token` when they cannot be used.
    pub fn remote(url: &str, token: Option<&SecretString>) -> hcp_core::Result<Backend> {
        let client = hcp_client::Client::builder(url)
            .token(token.map(|t| t.expose().to_string()))
            .build()?;
        Ok(Backend {
            hcp: Arc::new(client),
            local: None,
            token: token.cloned(),
        })
    }

    /// Ends the command: stops the engine and saves the jobs it ran.
    ///
    /// # Errors
    /// When the jobs file cannot be written.
    pub async fn close(self) -> anyhow::Result<()> {
        self.hcp.close().await;
        if let Some(local) = self.local {
            if local.lock.is_some() {
                local::save_jobs(&local.paths.jobs, local.store.export(), local.retention)?;
            }
            drop(local.lock);
        }
        Ok(())
    }

    /// Follows a job: its past log lines, then live updates, then its end.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when it does not exist in `project` (or at all).
    pub async fn watch_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<JobStream> {
        self.hcp.watch_job(project, job_id).await.map(JobStream)
    }

    /// Tells whether HCP relays `console` for this backend (the provider's upstream embedded,
    /// the service's WebSocket proxy remote), so `--listen` can bridge it.
    pub fn relays(&self, console: &Console) -> bool {
        if self.hcp.is_remote() {
            console.url.starts_with("ws://") || console.url.starts_with("wss://")
        } else {
            console.upstream.is_some()
        }
    }

    /// Opens a console and returns its bytes, past any handshake: the provider's upstream
    /// (embedded) or the service's console proxy (remote).
    ///
    /// # Errors
    /// See [`Engine::console`]; [`ErrorKind::FeatureNotSupported`] for a console the client opens
    /// itself (a URL); [`ErrorKind::ProviderUnavailable`] when the console does not answer.
    pub async fn open_console(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        kind: Option<ConsoleKind>,
    ) -> hcp_core::Result<(ConsoleKind, Box<dyn ByteStream>)> {
        let console = self.hcp.console(project, vm_id, kind).await?;
        if !self.relays(&console) {
            return Err(not_relayed(&console));
        }
        if !self.hcp.is_remote() {
            let Some(upstream) = &console.upstream else {
                return Err(not_relayed(&console));
            };
            let stream = relay::dial(upstream, CONSOLE_DIAL_TIMEOUT)
                .await
                .map_err(|why| {
                    // Embedded mode is the operator's own engine: the reason may name hosts.
                    Error::new(
                        ErrorKind::ProviderUnavailable,
                        format!("the console of vm `{vm_id}` does not answer: {why}"),
                    )
                    .with_operation(hcp_core::Operation::Console)
                    .temporary()
                })?;
            return Ok((console.kind, stream));
        }
        let mut upstream = ConsoleUpstream::websocket(console.url.clone(), TlsTrust::System)
            .with_subprotocol("binary");
        if let Some(t) = &self.token {
            upstream = upstream.with_header("Authorization", format!("Bearer {}", t.expose()));
        }
        let stream = relay::dial(&upstream, CONSOLE_DIAL_TIMEOUT)
            .await
            .map_err(|why| {
                Error::new(
                    ErrorKind::ProviderUnavailable,
                    format!("the service's console proxy does not answer: {why}"),
                )
                .with_operation(hcp_core::Operation::Console)
                .temporary()
            })?;
        Ok((console.kind, stream))
    }
}

/// The principal the local user acts as: their login name. Idempotency keys are scoped to it.
fn local_principal() -> Principal {
    let user = ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "local".to_string());
    Principal::new(user)
}
