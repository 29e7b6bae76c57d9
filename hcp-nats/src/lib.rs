//! HCP's audit stream on NATS JetStream: a [`Publisher`] that delivers the store's event outbox
//! ([`Store::unpublished_events`]) to a JetStream stream, each event once.
//!
//! # Delivery
//! Every event HCP appends goes into the store's outbox in the same transaction
//! ([`Store::append_event`]). The publisher reads the outbox oldest first, publishes each event
//! and waits for JetStream's acknowledgement, and only then marks it published
//! ([`Store::mark_published`]). While NATS is down nothing is marked, so nothing is lost: the
//! events wait in the outbox (in PostgreSQL, across restarts) and are delivered once NATS is
//! back. An event published but not yet marked (the process died in between, an ack timed out)
//! is published again with the same `Nats-Msg-Id` header, which JetStream drops as a duplicate
//! within the stream's duplicate window ([`NatsSettings::duplicate_window`], 2 minutes by
//! default), so the stream holds each event once.
//!
//! # Messages
//! - **Subject**: `<prefix>.<project>.<event>`, for example
//!   `hcp.events.demo.job_transition`: the prefix is [`NatsSettings::subject_prefix`]
//!   (`HCP_NATS_SUBJECT_PREFIX`, default `hcp.events`), the project is the event's project (`_`
//!   for events without one, such as drift on unmanaged VMs; characters other than letters,
//!   digits, `-` and `_` become `_`), the event is its stable name ([`EventKind::name`]).
//!   Subscribe to `hcp.events.>` for everything, `hcp.events.demo.>` for one project.
//! - **Payload**: the event as JSON, exactly as `/api/hcp/ops/v1/events` shows it (with `seq`).
//! - **Headers**: `Nats-Msg-Id` is the event id ([`Publisher::message_id`]: the event's
//!   sequence number for a durable store, which is unique in the database; for the in-memory
//!   store, whose numbers start at 1 again after a restart, a per-process prefix and the number);
//!   `Hcp-Event-Seq` and `Hcp-Event` carry the number and the event name.
//! - **Stream**: [`NatsSettings::stream`] (`HCP_NATS_STREAM`, default `HCP_EVENTS`) capturing
//!   `<prefix>.>`; created when missing (file storage, the duplicate window above), used as it
//!   is when it exists.
//!
//! # Configuration
//! [`NatsSettings::from_env`]: `HCP_NATS_URL` switches publishing on. Credentials come from
//! secret files only, never from the URL's log line or an error: `nats.creds` (a NATS `.creds`
//! file: JWT and NKey seed), `nats_token`, or `nats_user` with `nats_password`, in the secrets
//! directory (`HCP_SECRETS_DIR`, default `/run/secrets`).
//!
//! With several replicas sharing a database each replica's publisher reads the same outbox;
//! the message id makes the extra copies duplicates JetStream drops, so the stream still holds
//! each event once (a leader gate can keep followers from publishing at all:
//! [`Publisher::with_gate`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use hcp_core::config::Secrets;
use hcp_core::store::Store;
use hcp_core::{Error, Event, Result};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The default subject prefix.
pub const DEFAULT_SUBJECT_PREFIX: &str = "hcp.events";
/// The default stream name.
pub const DEFAULT_STREAM: &str = "HCP_EVENTS";
/// The header carrying the event's sequence number.
pub const HEADER_SEQ: &str = "Hcp-Event-Seq";
/// The header carrying the event's name.
pub const HEADER_EVENT: &str = "Hcp-Event";

/// How HCP authenticates to NATS. Its `Debug` never prints a secret.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Credentials {
    /// No credentials (or those in the URL).
    #[default]
    None,
    /// A token (secret file `nats_token`).
    Token(String),
    /// A user and password (secret files `nats_user` and `nats_password`).
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// The text of a NATS `.creds` file: a user JWT and its NKey seed (secret file `nats.creds`).
    Creds(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Token(_) => "Token(..)",
            Credentials::UserPassword { .. } => "UserPassword(..)",
            Credentials::Creds(_) => "Creds(..)",
        })
    }
}

/// Where and how the publisher delivers events.
#[derive(Clone)]
#[non_exhaustive]
pub struct NatsSettings {
    /// The NATS server URL (`nats://host:4222`, or several separated by commas).
    pub url: String,
    /// The subject prefix: dot-separated tokens of letters, digits, `-` and `_`.
    pub subject_prefix: String,
    /// The JetStream stream name: letters, digits, `-` and `_`, at most 64.
    pub stream: String,
    /// How HCP authenticates.
    pub credentials: Credentials,
    /// Most events published per round (1-1000).
    pub batch_size: usize,
    /// How often the outbox is read without a local wake-up (events appended by other
    /// replicas, or left after a failure).
    pub poll_interval: Duration,
    /// The duplicate window of a stream the publisher creates.
    pub duplicate_window: Duration,
    /// How long one publish waits for JetStream's acknowledgement.
    pub ack_timeout: Duration,
}

impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry `user:password@`: only its host part is shown.
        f.debug_struct("NatsSettings")
            .field("url", &redact_url(&self.url))
            .field("subject_prefix", &self.subject_prefix)
            .field("stream", &self.stream)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// Returns `url` without any `user[:password]@` part of each server.
fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***@{}", &u[..s + 3], &u[at + 1..]),
            (None, Some(at)) => format!("***@{}", &u[at + 1..]),
            _ => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

impl NatsSettings {
    /// Creates settings for the server at `url` with the default prefix and stream, no
    /// credentials, batches of 256, a 1 s poll, a 2 min duplicate window and a 5 s ack timeout.
    pub fn new(url: impl Into<String>) -> NatsSettings {
        NatsSettings {
            url: url.into(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.into(),
            stream: DEFAULT_STREAM.into(),
            credentials: Credentials::None,
            batch_size: 256,
            poll_interval: Duration::from_secs(1),
            duplicate_window: Duration::from_secs(120),
            ack_timeout: Duration::from_secs(5),
        }
    }

    /// Sets the subject prefix.
    #[must_use]
    pub fn with_subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// Sets the stream name.
    #[must_use]
    pub fn with_stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = stream.into();
        self
    }

    /// Sets the credentials.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Sets how often the outbox is read without a wake-up.
    #[must_use]
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Reads the settings from the environment and the secrets directory; `None` when
    /// `HCP_NATS_URL` is unset or empty (publishing is off).
    ///
    /// # Behavior
    /// `HCP_NATS_URL` is the server URL; `HCP_NATS_SUBJECT_PREFIX` (default `hcp.events`) and
    /// `HCP_NATS_STREAM` (default `HCP_EVENTS`) name the subjects and stream. Credentials come
    /// from the secret files `nats.creds`, `nats_token`, or `nats_user` with `nats_password`;
    /// at most one kind may be present.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the variable or secret file of a value that
    /// is not valid (a URL's text is never repeated: it may hold a password).
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        secrets: &Secrets,
    ) -> Result<Option<NatsSettings>> {
        let Some(url) = env("HCP_NATS_URL").filter(|v| !v.trim().is_empty()) else {
            return Ok(None);
        };
        let mut s = NatsSettings::new(url.trim());
        if let Some(p) = env("HCP_NATS_SUBJECT_PREFIX").filter(|v| !v.trim().is_empty()) {
            s.subject_prefix = p.trim().to_string();
        }
        if let Some(p) = env("HCP_NATS_STREAM").filter(|v| !v.trim().is_empty()) {
            s.stream = p.trim().to_string();
        }
        let file = |name: &str| -> Result<Option<String>> {
            Ok(secrets
                .file(name)?
                .map(|v| v.expose().to_string())
                .filter(|v| !v.trim().is_empty()))
        };
        let creds = file("nats.creds")?;
        let token = file("nats_token")?;
        let user = file("nats_user")?;
        let password = file("nats_password")?;
        let kinds = [creds.is_some(), token.is_some(), password.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if kinds > 1 {
            return Err(Error::invalid(
                "secrets.nats_token",
                "more than one kind of NATS credentials is present (nats.creds, nats_token, nats_password); keep one",
            ));
        }
        s.credentials = match (creds, token, user, password) {
            (Some(c), _, _, _) => Credentials::Creds(c),
            (_, Some(t), _, _) => Credentials::Token(t.trim().to_string()),
            (_, _, Some(u), Some(p)) => Credentials::UserPassword {
                user: u.trim().to_string(),
                password: p,
            },
            (_, _, None, Some(_)) => {
                return Err(Error::invalid(
                    "secrets.nats_user",
                    "is missing: a nats_password needs a nats_user beside it",
                ));
            }
            (_, _, Some(_), None) => {
                return Err(Error::invalid(
                    "secrets.nats_password",
                    "is missing: a nats_user needs a nats_password beside it",
                ));
            }
            _ => Credentials::None,
        };
        s.validate()?;
        Ok(Some(s))
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming `HCP_NATS_URL`, `HCP_NATS_SUBJECT_PREFIX`,
    /// `HCP_NATS_STREAM` or `secrets.nats.creds`.
    pub fn validate(&self) -> Result<()> {
        for u in self.url.split(',') {
            if u.trim().parse::<async_nats::ServerAddr>().is_err() {
                return Err(Error::invalid(
                    "HCP_NATS_URL",
                    "is not a NATS server URL; expected nats://HOST:PORT (several separated by commas; the value is not repeated here because it may hold a password)",
                ));
            }
        }
        let prefix_ok = !self.subject_prefix.is_empty()
            && self.subject_prefix.len() <= 128
            && self
                .subject_prefix
                .split('.')
                .all(|t| !t.is_empty() && t.bytes().all(is_token_char));
        if !prefix_ok {
            return Err(Error::invalid(
                "HCP_NATS_SUBJECT_PREFIX",
                format!(
                    "`{}` is not a subject prefix: dot-separated tokens of letters, digits, `-` and `_` (no wildcards), at most 128 characters",
                    self.subject_prefix
                ),
            ));
        }
        if self.stream.is_empty()
            || self.stream.len() > 64
            || !self.stream.bytes().all(is_token_char)
        {
            return Err(Error::invalid(
                "HCP_NATS_STREAM",
                format!(
                    "`{}` is not a stream name: 1 to 64 letters, digits, `-` and `_`",
                    self.stream
                ),
            ));
        }
        if let Credentials::Creds(c) = &self.credentials
            && async_nats::ConnectOptions::new().credentials(c).is_err()
        {
            return Err(Error::invalid(
                "secrets.nats.creds",
                "is not a NATS credentials file (a user JWT and an NKey seed between their BEGIN/END lines)",
            ));
        }
        Ok(())
    }

    fn connect_options(&self) -> Result<async_nats::ConnectOptions> {
        let o = async_nats::ConnectOptions::new()
            .name("hcp")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5)))
            });
        Ok(match &self.credentials {
            Credentials::None => o,
            Credentials::Token(t) => o.token(t.clone()),
            Credentials::UserPassword { user, password } => {
                o.user_and_password(user.clone(), password.clone())
            }
            Credentials::Creds(c) => o.credentials(c).map_err(|_| {
                Error::invalid("secrets.nats.creds", "is not a NATS credentials file")
            })?,
        })
    }
}

/// Answers whether this replica should publish now (see [`Publisher::with_gate`]).
pub type Gate = Arc<dyn Fn() -> bool + Send + Sync>;

/// Publishes the store's event outbox to JetStream.
pub struct Publisher {
    settings: NatsSettings,
    store: Arc<dyn Store>,
    id_prefix: String,
    gate: Option<Gate>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("settings", &self.settings)
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

/// Why a round stopped.
enum RoundError {
    /// NATS is not reachable or refused: retry later.
    Nats(String),
    /// The store failed: retry later.
    Store(Error),
}

impl fmt::Display for RoundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoundError::Nats(m) => write!(f, "NATS: {m}"),
            RoundError::Store(e) => write!(f, "store: {e}"),
        }
    }
}

impl Publisher {
    /// Creates a publisher of `store`'s outbox.
    pub fn new(settings: NatsSettings, store: Arc<dyn Store>) -> Publisher {
        let id_prefix = if store.durable() {
            String::new()
        } else {
            format!("{}-", uuid::Uuid::new_v4().simple())
        };
        Publisher {
            settings,
            store,
            id_prefix,
            gate: None,
        }
    }

    /// Publishes only while `gate` answers true (the leader of several replicas); the outbox
    /// waits otherwise.
    #[must_use]
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Returns the subject of `event`: `<prefix>.<project or _>.<event name>`.
    pub fn subject(&self, event: &Event) -> String {
        let project: String = match &event.project {
            Some(p) => p
                .as_str()
                .bytes()
                .map(|b| if is_token_char(b) { b as char } else { '_' })
                .collect(),
            None => "_".into(),
        };
        let project = if project.is_empty() {
            "_".to_string()
        } else {
            project
        };
        format!(
            "{}.{}.{}",
            self.settings.subject_prefix,
            project,
            event.kind.name()
        )
    }

    /// Returns the event id sent as `Nats-Msg-Id`: the sequence number (durable store) or a
    /// per-process prefix and the sequence number (in-memory store).
    pub fn message_id(&self, event: &Event) -> String {
        format!("{}{}", self.id_prefix, event.seq)
    }

    /// Starts publishing on a task of its own until `shutdown` is cancelled; `wake` (the
    /// engine's live events, [`hcp_core::Engine::subscribe_events`]) makes a new event go out at
    /// once instead of at the next poll.
    pub fn spawn(
        self,
        wake: Option<broadcast::Receiver<Arc<Event>>>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(wake, shutdown))
    }

    /// Publishes until `shutdown` is cancelled (see [`Publisher::spawn`]).
    ///
    /// # Behavior
    /// Connects (retrying until NATS answers), creates or opens the stream, then repeatedly
    /// publishes the outbox in batches, marking each event published once JetStream has
    /// acknowledged it. Failures (NATS down, the store down) are logged once per outage and
    /// retried with a backoff up to 5 s; nothing is marked that JetStream did not acknowledge.
    pub async fn run(
        self,
        mut wake: Option<broadcast::Receiver<Arc<Event>>>,
        shutdown: CancellationToken,
    ) {
        let options = match self.settings.connect_options() {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "NATS publishing is off");
                return;
            }
        };
        let client = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = options.connect(self.settings.url.as_str()) => c,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, nats = %redact_url(&self.settings.url), "cannot connect to NATS; publishing is off");
                return;
            }
        };
        let mut js = jetstream::new(client.clone());
        js.set_timeout(self.settings.ack_timeout);
        tracing::info!(nats = %redact_url(&self.settings.url), stream = %self.settings.stream,
            prefix = %self.settings.subject_prefix, "publishing audit events to NATS JetStream");
        let mut stream_ready = false;
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let gated = self.gate.as_ref().is_some_and(|g| !g());
            let round = if gated {
                Ok(0)
            } else if client.connection_state() != async_nats::connection::State::Connected {
                Err(RoundError::Nats("not connected".into()))
            } else {
                if !stream_ready {
                    match self.ensure_stream(&js).await {
                        Ok(()) => stream_ready = true,
                        Err(e) => {
                            // The stream may be missing after a server was replaced: try again.
                            self.note_failure(&mut failing, &e);
                            self.pause(&mut wake, &shutdown, backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    }
                }
                self.round(&js).await
            };
            match round {
                Ok(n) => {
                    if failing {
                        tracing::info!("publishing audit events to NATS resumed");
                        failing = false;
                    }
                    backoff = Duration::from_millis(100);
                    if n < self.settings.batch_size.clamp(1, 1000) {
                        // The outbox is drained: wait for a new event or the next poll.
                        self.pause(&mut wake, &shutdown, self.settings.poll_interval)
                            .await;
                    }
                }
                Err(e) => {
                    self.note_failure(&mut failing, &e);
                    if matches!(e, RoundError::Nats(_)) {
                        stream_ready = false;
                    }
                    self.pause(&mut wake, &shutdown, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Delivered messages are acknowledged; buffered ones are flushed before leaving.
        let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    }

    fn note_failure(&self, failing: &mut bool, e: &RoundError) {
        if !*failing {
            tracing::warn!(error = %e, "cannot publish audit events to NATS; they wait in the outbox and are retried");
            *failing = true;
        } else {
            tracing::debug!(error = %e, "publishing audit events to NATS still fails");
        }
    }

    async fn pause(
        &self,
        wake: &mut Option<broadcast::Receiver<Arc<Event>>>,
        shutdown: &CancellationToken,
        d: Duration,
    ) {
        let woken = async {
            match wake {
                // Lagged or closed: either way, read the outbox again.
                Some(rx) => {
                    if let Err(broadcast::error::RecvError::Closed) = rx.recv().await {
                        *wake = None;
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
            _ = woken => {}
        }
    }

    async fn ensure_stream(&self, js: &jetstream::Context) -> std::result::Result<(), RoundError> {
        let config = jetstream::stream::Config {
            name: self.settings.stream.clone(),
            subjects: vec![format!("{}.>", self.settings.subject_prefix)],
            duplicate_window: self.settings.duplicate_window,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| RoundError::Nats(format!("cannot open stream: {e}")))
    }

    /// Publishes one batch of the outbox; returns how many events it delivered.
    async fn round(&self, js: &jetstream::Context) -> std::result::Result<usize, RoundError> {
        let batch = self
            .store
            .unpublished_events(self.settings.batch_size.clamp(1, 1000))
            .await
            .map_err(RoundError::Store)?;
        if batch.is_empty() {
            return Ok(0);
        }
        // Send the whole batch, then collect the acknowledgements: one round trip, in order.
        let mut pending = Vec::with_capacity(batch.len());
        let mut failure = None;
        for event in &batch {
            let payload = serde_json::to_vec(event.as_ref())
                .map_err(|e| RoundError::Nats(format!("cannot encode event: {e}")))?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                self.message_id(event).as_str(),
            );
            headers.insert(HEADER_SEQ, event.seq.to_string().as_str());
            headers.insert(HEADER_EVENT, event.kind.name());
            let sent = tokio::time::timeout(
                self.settings.ack_timeout,
                js.publish_with_headers(self.subject(event), headers, Bytes::from(payload)),
            )
            .await;
            match sent {
                Ok(Ok(ack)) => pending.push((event.seq, ack)),
                Ok(Err(e)) => {
                    failure = Some(format!("publish: {e}"));
                    break;
                }
                Err(_) => {
                    failure = Some("publish timed out".into());
                    break;
                }
            }
        }
        let mut delivered = Vec::with_capacity(pending.len());
        for (seq, ack) in pending {
            match ack.await {
                Ok(_) => delivered.push(seq),
                Err(e) => {
                    failure.get_or_insert_with(|| format!("acknowledgement: {e}"));
                }
            }
        }
        if !delivered.is_empty() {
            self.store
                .mark_published(&delivered)
                .await
                .map_err(RoundError::Store)?;
        }
        match failure {
            Some(m) => Err(RoundError::Nats(m)),
            None => Ok(delivered.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn publishing_is_off_without_a_url() {
        let dir = tempfile::tempdir().unwrap();
        let s = NatsSettings::from_env(&env_of(&[]), &Secrets::new(dir.path())).unwrap();
        assert!(s.is_none());
    }

    #[test]
    fn bad_values_name_their_variable_and_never_echo_a_url() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::new(dir.path());
        for (vars, field) in [
            (
                &[("HCP_NATS_URL", "nats://u:hunter2@host:notaport")][..],
                "HCP_NATS_URL",
            ),
            (
                &[
                    ("HCP_NATS_URL", "nats://127.0.0.1:4222"),
                    ("HCP_NATS_SUBJECT_PREFIX", "hcp.*"),
                ][..],
                "HCP_NATS_SUBJECT_PREFIX",
            ),
            (
                &[
                    ("HCP_NATS_URL", "nats://127.0.0.1:4222"),
                    ("HCP_NATS_SUBJECT_PREFIX", "hcp..events"),
                ][..],
                "HCP_NATS_SUBJECT_PREFIX",
            ),
            (
                &[
                    ("HCP_NATS_URL", "nats://127.0.0.1:4222"),
                    ("HCP_NATS_STREAM", "HCP.EVENTS"),
                ][..],
                "HCP_NATS_STREAM",
            ),
        ] {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let e = NatsSettings::from_env(&env, &secrets).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
            assert!(!format!("{e} {e:?}").contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn credentials_come_from_secret_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::new(dir.path());
        let env = env_of(&[("HCP_NATS_URL", "nats://hcp:urlpass@127.0.0.1:4222")]);
        std::fs::write(dir.path().join("nats_token"), "s3cret-token\n").unwrap();
        let s = NatsSettings::from_env(&env, &secrets).unwrap().unwrap();
        assert!(matches!(&s.credentials, Credentials::Token(t) if t == "s3cret-token"));
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("urlpass"),
            "{shown}"
        );
        assert!(shown.contains("127.0.0.1:4222"), "{shown}");

        std::fs::write(dir.path().join("nats_password"), "pw").unwrap();
        let e = NatsSettings::from_env(&env, &secrets).unwrap_err();
        assert_eq!(e.field(), Some("secrets.nats_token"));
        std::fs::remove_file(dir.path().join("nats_token")).unwrap();
        let e = NatsSettings::from_env(&env, &secrets).unwrap_err();
        assert_eq!(e.field(), Some("secrets.nats_user"));
        std::fs::write(dir.path().join("nats_user"), "hcp\n").unwrap();
        let s = NatsSettings::from_env(&env, &secrets).unwrap().unwrap();
        assert!(
            matches!(&s.credentials, Credentials::UserPassword { user, password } if user == "hcp" && password == "pw")
        );
        assert!(!format!("{s:?}").contains("pw\""));

        std::fs::remove_file(dir.path().join("nats_user")).unwrap();
        std::fs::remove_file(dir.path().join("nats_password")).unwrap();
        std::fs::write(dir.path().join("nats.creds"), "not a creds file").unwrap();
        let e = NatsSettings::from_env(&env, &secrets).unwrap_err();
        assert_eq!(e.field(), Some("secrets.nats.creds"));
    }

    #[test]
    fn subjects_and_ids_follow_the_documented_shape() {
        let store: Arc<dyn Store> = Arc::new(hcp_core::store::MemoryStore::default());
        let p = Publisher::new(NatsSettings::new("nats://127.0.0.1:4222"), store);
        let mut e = Event {
            seq: 7,
            at: chrono_now(),
            project: Some(hcp_core::ProjectId::new("demo")),
            vm_id: None,
            principal: None,
            kind: hcp_core::EventKind::VmDeleted {
                resources: hcp_core::Resources {
                    vcpus: 1,
                    memory_mib: 512,
                    disk_gib: 10,
                },
            },
        };
        assert_eq!(p.subject(&e), "hcp.events.demo.vm_deleted");
        e.project = None;
        assert_eq!(p.subject(&e), "hcp.events._.vm_deleted");
        // The in-memory store restarts its numbers: its ids carry a per-process prefix.
        let id = p.message_id(&e);
        assert!(id.ends_with("-7") && id.len() > 2, "{id}");
    }

    fn chrono_now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }
}
