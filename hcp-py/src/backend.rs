//! Where calls go: the engine embedded in this process ([`hcp_client::EngineClient`]) or a
//! running `hcp serve` ([`hcp_client::Client`]), both behind [`hcp_client::Hcp`].
//!
//! This module only builds them (the configuration sources Python offers) and turns their
//! answers into what the typed objects above need; the dispatch itself is hcp-client's.

use std::path::PathBuf;
use std::time::Duration;

use hcp_client::{Accepted, EngineClient, Hcp};
use hcp_core::{Config, Engine, Error, Principal, ProjectId, Result, SnapshotSubmitted, Submitted};

/// A job's updates: past log lines, live lines and status changes, then its end.
pub type UpdateStream = hcp_client::TenantUpdates;

/// Where calls go: an engine in this process or a running service.
pub type Backend = dyn Hcp;

/// Where an engine's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The simulator's demo catalog.
    Demo,
    /// A hosts file.
    File(PathBuf),
    /// The hosts file as JSON (a Python mapping), re-rendered as YAML so that errors name the
    /// key and a line; `origin` names it in errors.
    Json {
        /// The JSON text.
        text: String,
        /// What errors call it.
        origin: String,
    },
    /// Hosts-file text (YAML or JSON); `origin` names it in errors.
    Text {
        /// The text.
        text: String,
        /// What errors call it.
        origin: String,
    },
}

/// Whether a configuration came through `hcp_providers::load_config` (environment already
/// applied) or inline from Python.
enum SourceKind {
    Loaded,
    Inline,
}

/// Builds the engine the way `hcp serve` does: the configuration (the simulator's demo when
/// none), the environment applied on top, and every provider kind compiled in; calls act as
/// `principal`.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming the key (and line) of a bad configuration.
pub async fn embedded(source: ConfigSource, principal: Principal) -> Result<EngineClient> {
    let source_kind = match &source {
        ConfigSource::Demo | ConfigSource::File(_) => SourceKind::Loaded,
        ConfigSource::Json { .. } | ConfigSource::Text { .. } => SourceKind::Inline,
    };
    let env = |name: &str| std::env::var(name).ok();
    let mut config = match source {
        ConfigSource::Demo => hcp_providers::load_config(None, &env)?,
        ConfigSource::File(path) => hcp_providers::load_config(Some(&path), &env)?,
        ConfigSource::Json { text, origin } => {
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                Error::invalid("config", format!("{origin} is not valid JSON: {e}"))
            })?;
            let yaml = serde_yaml_ng::to_string(&value).map_err(|e| {
                Error::invalid(
                    "config",
                    format!("{origin} cannot be rendered as YAML: {e}"),
                )
            })?;
            Config::from_yaml(&yaml, &format!("{origin} (as YAML)"))?
        }
        ConfigSource::Text { text, origin } => Config::from_yaml(&text, &origin)?,
    };
    if matches!(source_kind, SourceKind::Inline) {
        config.apply_env(&env)?;
    }
    let engine = hcp_providers::register_all(Engine::builder(config))
        .build()
        .await?;
    Ok(EngineClient::new(engine, principal))
}

/// Creates a client of the service at `url`, with an optional bearer token.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming `url` for a malformed URL, or `token` for a
/// token that cannot be sent in a header.
pub fn remote(url: &str, token: Option<String>) -> Result<hcp_client::Client> {
    hcp_client::Client::builder(url).token(token).build()
}

/// Returns the project Python named.
pub fn project(p: &str) -> ProjectId {
    ProjectId::new(p)
}

/// Returns an accepted change as the core's answer.
pub fn submitted(a: &Accepted) -> Submitted {
    Submitted::from(a.clone())
}

/// Returns an accepted snapshot change as the core's answer, naming the snapshot.
pub fn snapshot_submitted(a: &Accepted) -> SnapshotSubmitted {
    SnapshotSubmitted {
        snapshot_id: a.snapshot_id.clone().unwrap_or_default(),
        memory_state_kept: a.memory_state_kept,
        submitted: submitted(a),
    }
}

/// Checks a timeout given in seconds.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming `timeout` when it is negative, not finite or
/// too large.
pub fn timeout_from_secs(secs: Option<f64>) -> Result<Option<Duration>> {
    secs.map(|s| {
        if !s.is_finite() || s < 0.0 {
            return Err(Error::invalid(
                "timeout",
                format!(
                    "is {s}; allowed: a finite number of seconds >= 0, or None to wait forever"
                ),
            ));
        }
        Duration::try_from_secs_f64(s).map_err(|_| {
            Error::invalid(
                "timeout",
                format!("{s} seconds is too long; use None to wait forever"),
            )
        })
    })
    .transpose()
}
