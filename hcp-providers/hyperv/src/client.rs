//! The wire protocol: one small pool of winrm-rs clients per host behind a semaphore (the
//! per-host concurrency cap), and one call = one WinRM shell running `powershell.exe
//! -EncodedCommand <constant wrapper>` with the parameter document on stdin.
//!
//! A client per call slot, because NTLM sealing serialises the requests of one winrm-rs client.
//! A call that is dropped (job timeout, cancellation) or runs past the script timeout is
//! terminated on the host: a fresh client signals `terminate` and deletes the shell, still
//! holding the call's permit, so the cap holds until the host has let go of the shell.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hcp_core::{Error, ErrorKind, LogEntry, OpContext, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use winrm_rs::{AuthMethod, EncryptionMode, WinrmClient, WinrmConfig, WinrmCredentials};

use crate::config::{AuthKind, Credentials, HostEntry, HypervSettings, Scheme};
use crate::error::{Remote, is_receive_timeout, parse_error};
use crate::forward::{Forwarder, UpstreamFailure};

/// stdin bytes per WS-Man Send (base64 grows them by a third; envelopes stay well under 150 KB).
const STDIN_CHUNK: usize = 48 * 1024;
/// The prefix of progress lines the scripts write to stderr.
const PROGRESS: &str = "##hcp-progress ";
/// The prefix of log lines the scripts write to stderr (`Write-HcpLog`).
const LOG: &str = "##hcp-log ";

/// How one call runs: its timeout and whether its stderr lines reach the job log.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Overrides the provider's `script_timeout`.
    pub timeout: Option<Duration>,
    /// Sends every stderr line (not only progress lines) to the job log, operators only.
    pub stream_stderr: bool,
    /// Values removed from everything the call logs or reports.
    pub redact: Vec<hcp_core::SecretString>,
}

/// What one script call printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Everything on stdout (HCP's scripts write one JSON document).
    pub stdout: Vec<u8>,
    /// stderr without the progress lines.
    pub stderr: String,
    /// The process exit code.
    pub exit_code: i32,
}

/// Counters of one host's calls, for tests and metrics.
#[derive(Debug, Default)]
pub struct HostStats {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: AtomicUsize,
    terminated: AtomicUsize,
    upstream_connections: AtomicUsize,
}

impl HostStats {
    /// The most calls that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// How many calls reached the host.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// How many calls HCP terminated on the host (timeouts, cancellations).
    pub fn terminated(&self) -> usize {
        self.terminated.load(Ordering::SeqCst)
    }

    /// How many TLS connections the `ca_file` forwarder opened to the host (0 without
    /// `ca_file`); far fewer than the HTTP requests, since connections are kept alive.
    pub fn upstream_connections(&self) -> usize {
        self.upstream_connections.load(Ordering::SeqCst)
    }

    pub(crate) fn count_upstream_connection(&self) {
        self.upstream_connections.fetch_add(1, Ordering::SeqCst);
    }
}

/// The WinRM side of one host.
pub struct HostClient {
    name: String,
    address: String,
    config: WinrmConfig,
    username: String,
    password: hcp_core::SecretString,
    domain: String,
    pool: Mutex<Vec<Arc<WinrmClient>>>,
    permits: Arc<Semaphore>,
    stats: Arc<HostStats>,
    script_timeout: Duration,
    auth_backoff: Duration,
    refused: Mutex<Option<(Instant, Error)>>,
    forwarder: Option<Arc<Forwarder>>,
    ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for HostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostClient")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("port", &self.config.port)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

struct CallGuard {
    stats: Arc<HostStats>,
    permit: Option<OwnedSemaphorePermit>,
    shell: Option<(String, Option<String>)>,
    armed: bool,
    cleanup: Option<Box<dyn FnOnce() -> Result<WinrmClient> + Send>>,
    address: String,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.armed {
            return;
        }
        let (Some((shell, command)), Some(make)) = (self.shell.take(), self.cleanup.take()) else {
            return;
        };
        self.stats.terminated.fetch_add(1, Ordering::SeqCst);
        let permit = self.permit.take();
        let address = self.address.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let _permit = permit;
            // A fresh client: the interrupted one may be mid-exchange on its NTLM session.
            let Ok(client) = make() else { return };
            if let Some(command) = command
                && let Err(e) = client.signal_terminate(&address, &shell, &command).await
            {
                tracing::warn!(host = %address, error = %e, "cannot terminate an abandoned script");
            }
            if let Err(e) = client.delete_shell(&address, &shell).await {
                tracing::warn!(host = %address, error = %e, "cannot delete an abandoned shell");
            }
        });
    }
}

impl HostClient {
    /// Prepares the client of `host`; no connection is made until the first call.
    pub fn new(settings: &HypervSettings, host: &HostEntry, creds: &Credentials) -> Self {
        let config = WinrmConfig {
            port: settings.port_of(&host.settings),
            use_tls: settings.scheme == Scheme::Https,
            accept_invalid_certs: !settings.tls_verify,
            connect_timeout_secs: 10,
            operation_timeout_secs: settings.operation_timeout.as_secs().max(1),
            auth_method: match settings.auth {
                AuthKind::Ntlm => AuthMethod::Ntlm,
                AuthKind::Basic => AuthMethod::Basic,
                AuthKind::Kerberos => AuthMethod::Kerberos,
            },
            user_agent: Some(concat!("hcp-provider-hyperv/", env!("CARGO_PKG_VERSION")).into()),
            ..WinrmConfig::default()
        };
        HostClient {
            name: host.name.clone(),
            address: host
                .settings
                .address
                .clone()
                .unwrap_or_else(|| host.name.clone()),
            config,
            username: creds.username.clone(),
            password: creds.password.clone(),
            domain: settings.domain.clone(),
            pool: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(settings.max_concurrent_per_host)),
            stats: Arc::new(HostStats::default()),
            script_timeout: settings.script_timeout,
            auth_backoff: settings.auth_backoff,
            refused: Mutex::new(None),
            forwarder: None,
            ca_file: settings.ca_file.clone(),
        }
    }

    /// Sends this host's WinRM traffic through a [`Forwarder`] that verifies the host's TLS
    /// certificate against `tls` (the `ca_file` roots): winrm-rs then speaks plain HTTP to the
    /// forwarder on loopback, without NTLM sealing (TLS protects the host's leg) and so without
    /// NTLM channel binding.
    ///
    /// # Errors
    /// As [`Forwarder::bind`]; `field` names the host's address in the error.
    pub(crate) fn through_forwarder(
        mut self,
        tls: Arc<tokio_rustls::rustls::ClientConfig>,
        field: &str,
    ) -> Result<Self> {
        let forwarder = Forwarder::bind(&self.address, self.config.port, tls, self.stats.clone())
            .map_err(|e| Error::invalid(field, e.message().to_string()))?;
        self.config.use_tls = false;
        self.config.accept_invalid_certs = false;
        self.config.encryption = EncryptionMode::Never;
        self.config.proxy = Some(forwarder.proxy_url());
        self.forwarder = Some(Arc::new(forwarder));
        Ok(self)
    }

    /// Replaces `err` by what the forwarder saw, when the call failed because the host's TLS
    /// could not be verified or the host could not be reached (winrm-rs only sees a 502).
    fn forwarder_error(&self, err: Error) -> Error {
        let Some(f) = &self.forwarder else {
            return err;
        };
        let ca = self
            .ca_file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match f.failure() {
            Some(UpstreamFailure::Tls(why)) => Error::new(
                ErrorKind::ProviderUnavailable,
                "the Hyper-V host's TLS certificate does not verify against ca_file",
            )
            .with_detail(format!(
                "host {} ({}): TLS verified against the CA bundle in ca_file {ca} failed: \
                 {why}; check that ca_file holds the CA that signed the host's WinRM \
                 certificate, that the certificate names the host's address, and that the port \
                 is the host's WinRM HTTPS listener",
                self.name,
                f.target()
            ))
            .with_context("host", &self.name),
            Some(UpstreamFailure::Unreachable(why)) if err.is_temporary() => Error::new(
                ErrorKind::ProviderUnavailable,
                "cannot reach the Hyper-V host (cannot connect)",
            )
            .with_detail(format!("WinRM host {} ({}): {why}", self.name, f.target()))
            .with_context("host", &self.name)
            .temporary(),
            _ => err,
        }
    }

    /// Returns the host's counters.
    pub fn stats(&self) -> Arc<HostStats> {
        self.stats.clone()
    }

    fn factory(&self) -> impl FnOnce() -> Result<WinrmClient> + Send + 'static {
        let config = self.config.clone();
        let creds = WinrmCredentials::new(&self.username, self.password.expose(), &self.domain);
        let name = self.name.clone();
        move || WinrmClient::new(config, creds).map_err(|e| parse_error(&name, Remote::Winrm(e)))
    }

    fn take_client(&self) -> Result<Arc<WinrmClient>> {
        if let Some(c) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        Ok(Arc::new((self.factory())()?))
    }

    fn check_refused(&self) -> Result<()> {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((until, err)) = refused.as_ref() {
            if Instant::now() < *until {
                let secs = until.saturating_duration_since(Instant::now()).as_secs();
                return Err(Error::new(
                    err.kind(),
                    format!("{}; not asking the host again for {secs}s", err.message()),
                )
                .with_detail(format!(
                    "{}; not asking host {} again",
                    err.detail().unwrap_or_default(),
                    self.name
                ))
                .with_context("host", &self.name));
            }
            *refused = None;
        }
        Ok(())
    }

    /// Runs `text` as `powershell.exe -EncodedCommand` with `stdin`, reporting progress lines to
    /// `ctx`, and ends the command on the host if the call is dropped or exceeds the script
    /// timeout.
    ///
    /// # Errors
    /// Classified by [`crate::error::parse_error`]; [`ErrorKind::Timeout`] after the script
    /// timeout.
    pub async fn run(
        &self,
        what: &str,
        text: &str,
        stdin: &[u8],
        ctx: &OpContext,
    ) -> Result<Output> {
        self.run_with(what, text, stdin, ctx, &CallOptions::default())
            .await
    }

    /// As [`HostClient::run`], with `opts`.
    ///
    /// # Errors
    /// As [`HostClient::run`]; the timeout is `opts.timeout` when set.
    pub async fn run_with(
        &self,
        what: &str,
        text: &str,
        stdin: &[u8],
        ctx: &OpContext,
        opts: &CallOptions,
    ) -> Result<Output> {
        let timeout = opts.timeout.unwrap_or(self.script_timeout);
        self.check_refused()?;
        if let Some(f) = &self.forwarder {
            f.ensure_running()?;
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("the host's call semaphore is closed"))?;
        self.check_refused()?;
        let n = self.stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats.max_in_flight.fetch_max(n, Ordering::SeqCst);
        self.stats.calls.fetch_add(1, Ordering::SeqCst);
        let mut guard = CallGuard {
            stats: self.stats.clone(),
            permit: Some(permit),
            shell: None,
            armed: true,
            cleanup: Some(Box::new(self.factory())),
            address: self.address.clone(),
        };
        let client = self.take_client()?;
        let run = self.run_on(&client, text, stdin, ctx, &mut guard, opts);
        let result = match tokio::time::timeout(timeout, run).await {
            Ok(r) => r.map_err(|e| self.forwarder_error(e)),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{what} ran longer than {}s; HCP terminated it on the host",
                    timeout.as_secs()
                ),
            )
            .with_detail(format!("host {}", self.name))
            .with_context("host", &self.name)),
        };
        match &result {
            Ok(_) => {
                guard.armed = false;
                self.pool
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(client);
            }
            Err(e) if e.kind() == ErrorKind::ProviderUnavailable && !e.is_temporary() => {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now() + self.auth_backoff, e.clone()));
                guard.armed = guard.shell.is_some();
            }
            Err(_) => {}
        }
        result
    }

    async fn run_on(
        &self,
        client: &WinrmClient,
        text: &str,
        stdin: &[u8],
        ctx: &OpContext,
        guard: &mut CallGuard,
        opts: &CallOptions,
    ) -> Result<Output> {
        let err = |e| parse_error(&self.name, Remote::Winrm(e));
        let encoded = winrm_rs::encode_powershell_command(text);
        let shell = again(|| client.open_shell(&self.address))
            .await
            .map_err(err)?;
        guard.shell = Some((shell.shell_id().to_string(), None));
        let args = [
            "-NoLogo",
            "-NoProfile",
            "-NonInteractive",
            "-ExecutionPolicy",
            "Bypass",
            "-EncodedCommand",
            encoded.as_str(),
        ];
        let command = again(|| shell.start_command("powershell.exe", &args))
            .await
            .map_err(err)?;
        guard.shell = Some((shell.shell_id().to_string(), Some(command.clone())));
        let chunks: Vec<&[u8]> = if stdin.is_empty() {
            vec![&[][..]]
        } else {
            stdin.chunks(STDIN_CHUNK).collect()
        };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            again(|| shell.send_input(&command, chunk, i == last))
                .await
                .map_err(err)?;
        }
        let mut stdout = Vec::new();
        let mut stderr = String::new();
        let mut pending = String::new();
        let exit_code = loop {
            let out = match again(|| shell.receive_next(&command)).await {
                Ok(out) => out,
                Err(e) if is_receive_timeout(&e) => continue,
                Err(e) => return Err(err(e)),
            };
            stdout.extend_from_slice(&out.stdout);
            pending.push_str(&String::from_utf8_lossy(&out.stderr));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                report(line.trim_end(), ctx, &mut stderr, opts);
            }
            if out.done {
                break out.exit_code.unwrap_or(-1);
            }
        };
        if !pending.is_empty() {
            report(pending.trim_end(), ctx, &mut stderr, opts);
        }
        guard.armed = false;
        guard.shell = None;
        let shell_id = shell.shell_id().to_string();
        if shell.close().await.is_err()
            && let Err(e) = again(|| client.delete_shell(&self.address, &shell_id)).await
        {
            tracing::warn!(host = %self.name, error = %e, "cannot delete a finished shell");
        }
        Ok(Output {
            stdout,
            stderr,
            exit_code,
        })
    }
}

impl HostClient {
    /// Runs a wrapper `text` with `params` as its parameter document and returns the script's
    /// result, or its error record classified.
    ///
    /// # Errors
    /// As [`HostClient::run`], plus the script's own error record (see [`parse_error`]).
    pub async fn invoke(
        &self,
        what: &str,
        text: &str,
        params: &serde_json::Value,
        ctx: &OpContext,
    ) -> Result<serde_json::Value> {
        match self
            .invoke_with(what, text, params, ctx, &CallOptions::default())
            .await?
        {
            Ok(v) => Ok(v),
            Err(record) => Err(parse_error(&self.name, Remote::Script(record))),
        }
    }

    /// As [`HostClient::invoke`] with `opts`, returning the script's error record unclassified.
    ///
    /// # Errors
    /// As [`HostClient::run`], and a broken output contract.
    pub async fn invoke_with(
        &self,
        what: &str,
        text: &str,
        params: &serde_json::Value,
        ctx: &OpContext,
        opts: &CallOptions,
    ) -> Result<std::result::Result<serde_json::Value, crate::error::ScriptErrorRecord>> {
        use base64::Engine as _;
        let doc = serde_json::to_vec(params)
            .map_err(|e| Error::internal(format!("cannot encode parameters: {e}")))?;
        let mut stdin = base64::engine::general_purpose::STANDARD
            .encode(doc)
            .into_bytes();
        stdin.extend_from_slice(b"\r\n");
        let out = self.run_with(what, text, &stdin, ctx, opts).await?;
        parse_output(&self.name, what, &out)
    }
}

#[derive(serde::Deserialize)]
struct Document {
    ok: bool,
    #[serde(default)]
    result: serde_json::Value,
    #[serde(default)]
    error: Option<crate::error::ScriptErrorRecord>,
}

fn parse_output(
    host: &str,
    what: &str,
    out: &Output,
) -> Result<std::result::Result<serde_json::Value, crate::error::ScriptErrorRecord>> {
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Document>(text.trim()) {
        Ok(Document {
            ok: true, result, ..
        }) => Ok(Ok(result)),
        Ok(Document {
            ok: false,
            error: Some(record),
            ..
        }) => Ok(Err(record)),
        _ => {
            let mut detail: String = out.stderr.chars().take(400).collect();
            if detail.is_empty() {
                detail = text.chars().take(200).collect();
            }
            Err(parse_error(
                host,
                Remote::Contract(format!(
                    "{what} exited with code {} without a JSON result document: {}",
                    out.exit_code,
                    detail.trim()
                )),
            ))
        }
    }
}

/// Repeats a WinRM request whose NTLM handshake was refused, at most twice.
///
/// winrm-rs 1.1 authenticates every request over HTTPS with a fresh NTLM handshake, and its
/// connection pool sometimes sends the Authenticate message on another connection than the one
/// that received the challenge; the host then refuses it (NTLM is bound to the connection) before
/// it reads the request, so sending the request again is safe. A wrong password is refused
/// every time and surfaces after the third try.
async fn again<T, F, Fut>(mut request: F) -> std::result::Result<T, winrm_rs::WinrmError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, winrm_rs::WinrmError>>,
{
    let mut refused = 0;
    loop {
        match request().await {
            // Kerberos errors are final: a new ticket would be refused the same way.
            Err(winrm_rs::WinrmError::AuthFailed(m))
                if refused < 2 && m.contains("rejected") && !m.starts_with("Kerberos") =>
            {
                refused += 1;
            }
            other => return other,
        }
    }
}

fn report(line: &str, ctx: &OpContext, stderr: &mut String, opts: &CallOptions) {
    if let Some(json) = line.strip_prefix(LOG) {
        if let Ok(p) = serde_json::from_str::<serde_json::Value>(json)
            && let Some(message) = p.get("message").and_then(|v| v.as_str())
        {
            let message = crate::hooks::redact(message, &opts.redact);
            let entry = if p.get("level").and_then(|v| v.as_str()) == Some("warn") {
                LogEntry::warn(message)
            } else {
                LogEntry::info(message)
            };
            ctx.log(entry.operators_only());
        }
        return;
    }
    if opts.stream_stderr && !line.starts_with(PROGRESS) {
        if !line.trim().is_empty() {
            ctx.log(LogEntry::info(crate::hooks::redact(line, &opts.redact)).operators_only());
        }
        return;
    }
    if let Some(json) = line.strip_prefix(PROGRESS) {
        if let Ok(p) = serde_json::from_str::<serde_json::Value>(json) {
            if let Some(percent) = p.get("percent").and_then(|v| v.as_u64()) {
                ctx.progress(percent.min(100) as u8);
            }
            if let Some(message) = p.get("message").and_then(|v| v.as_str()) {
                // A script's own words may name the host, paths and VM ids: operators only.
                let message = crate::hooks::redact(message, &opts.redact);
                ctx.log(LogEntry::info(message).operators_only());
            }
        }
        return;
    }
    if stderr.len() < 4096 {
        stderr.push_str(line);
        stderr.push('\n');
    }
}
