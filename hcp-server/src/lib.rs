//! # hcp-server
//!
//! HCP's HTTP service: the tenant, ops and common APIs, the Hyper-V service's routes, health,
//! readiness and Prometheus metrics, all documented in one OpenAPI 3 document (`/openapi.json`,
//! Swagger UI at `/docs`), behind OIDC authentication ([`auth`]). It is a thin shell: every
//! decision stays in [`hcp_core::Engine`].
//!
//! ```no_run
//! # async fn run() -> hcp_core::Result<()> {
//! use hcp_server::{ServeOptions, build_engine, serve, shutdown_signal};
//!
//! let env = |k: &str| std::env::var(k).ok();
//! let options = ServeOptions::default().apply_env(&env)?;
//! let engine = build_engine(options.config.as_deref(), &env).await?;
//! serve(engine, options, shutdown_signal()).await
//! # }
//! ```

mod api;
pub mod auth;
mod conn;
mod console;
pub mod dto;
pub mod error;
mod http;
mod json;
pub mod limits;
pub mod metrics;
pub mod ratelimit;
pub mod relay;
mod sse;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[allow(unused_imports, reason = "the error docs link to it")]
use hcp_core::ErrorKind;
use hcp_core::{Engine, Error, Result, parse_duration};

pub use auth::{AuthSettings, OidcSettings};
pub use conn::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES,
    MAX_MAX_CONNECTIONS, MAX_MAX_HEADER_BYTES, MIN_MAX_HEADER_BYTES,
};
pub use metrics::Metrics;
pub use ratelimit::{RateLimit, RateLimiting};

/// The address `hcp serve` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line (the default; what log collectors expect).
    #[default]
    Json,
    /// Human-readable text.
    Text,
}

/// How the service runs: where it listens, how it authenticates, its limits and its logging.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The listen address; a non-loopback address needs authentication ([`ServeOptions::auth`]).
    pub listen: SocketAddr,
    /// Authentication: the OIDC provider to trust (development mode, auth off, when `None`)
    /// and the public routes.
    pub auth: AuthSettings,
    /// The hosts file; the simulator's demo when absent.
    pub config: Option<PathBuf>,
    /// The log format.
    pub log_format: LogFormat,
    /// The log filter (`info`, `hcp=debug,poem=warn`, ...).
    pub log_level: String,
    /// The largest request body in bytes; larger bodies get `413`.
    pub body_limit: usize,
    /// How long one request may take to produce its response; streams (SSE) are not cut.
    pub request_timeout: Duration,
    /// The page size of list routes when the client gives none.
    pub page_default: usize,
    /// The largest page size of list routes (at most 1000); larger requests are clamped.
    pub page_max: usize,
    /// How long a graceful shutdown waits for running requests before it closes them.
    pub shutdown_timeout: Duration,
    /// The URL clients reach this service at (`https://hcp.example.com`), when it differs from
    /// what they send as `Host` (a reverse proxy, an ingress): console URLs are built on it.
    /// Without it, they are built on the request's `Host` header.
    pub public_url: Option<url::Url>,
    /// How long a console token lets its client connect to the console proxy (default 60 s).
    pub console_ttl: Duration,
    /// How long a client may take to send a request's head (request line and headers); a
    /// slower client is disconnected. Idle keep-alive connections close after this long too.
    pub header_read_timeout: Duration,
    /// The most connections open at once; at the cap, new clients wait until one closes.
    pub max_connections: usize,
    /// The largest request head in bytes (8 KiB to 1 MiB); a larger one gets `431`.
    pub max_header_bytes: usize,
    /// Per-caller request budgets (`429` with `Retry-After` beyond them).
    pub rate_limit: RateLimiting,
    /// What this replica does: serve the API, run jobs, or both (the default).
    pub role: Role,
}

/// What one `hcp serve` process does when several share a database.
///
/// # Behavior
/// - [`Role::All`] (the default) serves the API and runs jobs.
/// - [`Role::Api`] serves the API and runs no job: it writes jobs to the database, where worker
///   replicas claim them; its watches, waits and cancels follow them there.
/// - [`Role::Worker`] runs jobs and answers only `/healthz`, `/readyz` and `/metrics`; every
///   other route answers `404` saying the replica runs jobs only.
///
/// `api` and `worker` need a database (`HCP_DATABASE_URL`): without one no other process could
/// see the jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Serves the API and runs jobs.
    #[default]
    All,
    /// Serves the API; worker replicas run its jobs.
    Api,
    /// Runs jobs; answers only the probes and metrics.
    Worker,
}

impl Role {
    /// Every role, in the order of [`Role::NAMES`].
    pub const ALL: [Role; 3] = [Role::All, Role::Api, Role::Worker];
    /// The roles' names, as `--role` and `HCP_ROLE` take them.
    pub const NAMES: [&'static str; 3] = ["all", "api", "worker"];

    /// Parses `all`, `api` or `worker`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `field` and the allowed values.
    pub fn parse(field: &str, value: &str) -> Result<Role> {
        let value = value.trim();
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == value)
            .ok_or_else(|| {
                Error::invalid(
                    field,
                    format!(
                        "`{}` is not a role; allowed: {}",
                        hcp_core::echo(value),
                        Role::NAMES.join(", ")
                    ),
                )
            })
    }

    /// Returns the role's name.
    pub fn as_str(self) -> &'static str {
        Role::NAMES[self as usize]
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            auth: AuthSettings::default(),
            config: None,
            log_format: LogFormat::Json,
            log_level: "info".into(),
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            page_default: 100,
            page_max: hcp_core::store::PageRequest::MAX_LIMIT,
            shutdown_timeout: Duration::from_secs(20),
            public_url: None,
            console_ttl: DEFAULT_CONSOLE_TTL,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            rate_limit: RateLimiting::Automatic,
            role: Role::All,
        }
    }
}

/// How long a console token lets its client connect, unless configured otherwise.
pub const DEFAULT_CONSOLE_TTL: Duration = Duration::from_secs(60);
/// The longest header-read timeout accepted.
pub const MAX_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest console token lifetime accepted.
pub const MAX_CONSOLE_TTL: Duration = Duration::from_secs(3600);

impl ServeOptions {
    /// Sets the listen address.
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Sets the hosts file.
    pub fn with_config(mut self, config: Option<PathBuf>) -> Self {
        self.config = config;
        self
    }

    /// Sets the authentication settings.
    pub fn with_auth(mut self, auth: AuthSettings) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the body limit in bytes.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Sets the public URL console URLs are built on (see [`ServeOptions::public_url`]).
    pub fn with_public_url(mut self, url: Option<url::Url>) -> Self {
        self.public_url = url;
        self
    }

    /// Sets how long a console token lets its client connect.
    pub fn with_console_ttl(mut self, ttl: Duration) -> Self {
        self.console_ttl = ttl;
        self
    }

    /// Sets the log format and filter.
    pub fn with_logging(mut self, format: LogFormat, level: impl Into<String>) -> Self {
        self.log_format = format;
        self.log_level = level.into();
        self
    }

    /// Applies the environment: `HCP_LISTEN`, `HCP_CONFIG`, `HCP_LOG_FORMAT` (`json`|`text`),
    /// `HCP_LOG_LEVEL` (or `RUST_LOG`), `HCP_BODY_LIMIT` (bytes), `HCP_REQUEST_TIMEOUT`,
    /// `HCP_PAGE_MAX`, `HCP_SHUTDOWN_TIMEOUT`, `HCP_PUBLIC_URL`, `HCP_CONSOLE_TTL`,
    /// `HCP_HEADER_READ_TIMEOUT`, `HCP_MAX_CONNECTIONS`, `HCP_MAX_HEADER_BYTES`, and
    /// authentication: `OIDC_ISSUER_URL`,
    /// `OIDC_CLIENT_ID`, `OIDC_HYPERV_ROLE` (or `OIDC_ROLE_NAME`), `OIDC_TENANT_ROLE`,
    /// `OIDC_OPERATOR_ROLE`, `OIDC_ALLOW_SHARED_TENANT_ROLE`, `OIDC_ROLES_CLAIM_STRING`,
    /// `OIDC_PROJECTS_CLAIM_STRING`,
    /// `OIDC_ROLES_CLAIM`, `OIDC_PROJECTS_CLAIM`, `OIDC_REDIRECT_URL`, `HCP_PUBLIC_ROUTES` and
    /// the others of [`AuthSettings::from_env`], with the secret `oidc_client_secret` read from
    /// `HCP_SECRETS_DIR` (default `/run/secrets`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming the variable and what it accepts.
    pub fn apply_env(mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        if let Some(v) = env("HCP_LISTEN") {
            self.listen = parse_listen("HCP_LISTEN", &v)?;
        }
        if let Some(v) = env("HCP_CONFIG").filter(|v| !v.is_empty()) {
            self.config = Some(PathBuf::from(v));
        }
        if let Some(v) = env("HCP_LOG_FORMAT") {
            self.log_format = match v.trim().to_ascii_lowercase().as_str() {
                "json" => LogFormat::Json,
                "text" | "pretty" => LogFormat::Text,
                other => {
                    return Err(Error::invalid(
                        "HCP_LOG_FORMAT",
                        format!("`{other}` is not a log format; allowed: json, text"),
                    ));
                }
            };
        }
        if let Some(v) = env("HCP_LOG_LEVEL")
            .or_else(|| env("RUST_LOG"))
            .filter(|v| !v.trim().is_empty())
        {
            tracing_subscriber::EnvFilter::try_new(&v).map_err(|e| {
                Error::invalid(
                    "HCP_LOG_LEVEL",
                    format!("`{v}` is not a log filter ({e}); use e.g. info, debug, hcp=debug"),
                )
            })?;
            self.log_level = v;
        }
        if let Some(v) = env("HCP_BODY_LIMIT") {
            self.body_limit = parse_positive("HCP_BODY_LIMIT", &v)?;
        }
        if let Some(v) = env("HCP_REQUEST_TIMEOUT") {
            self.request_timeout = parse_duration("HCP_REQUEST_TIMEOUT", &v)?;
        }
        if let Some(v) = env("HCP_PAGE_MAX") {
            self.page_max = parse_positive("HCP_PAGE_MAX", &v)?;
            // A maximum below the default page lowers the default with it.
            self.page_default = self.page_default.min(self.page_max);
        }
        if let Some(v) = env("HCP_ROLE").filter(|v| !v.trim().is_empty()) {
            self.role = Role::parse("HCP_ROLE", &v)?;
        }
        if let Some(v) = env("HCP_SHUTDOWN_TIMEOUT") {
            self.shutdown_timeout = parse_duration("HCP_SHUTDOWN_TIMEOUT", &v)?;
        }
        if let Some(v) = env("HCP_PUBLIC_URL").filter(|v| !v.trim().is_empty()) {
            self.public_url = Some(parse_public_url("HCP_PUBLIC_URL", &v)?);
        }
        if let Some(v) = env("HCP_CONSOLE_TTL") {
            self.console_ttl = parse_duration("HCP_CONSOLE_TTL", &v)?;
        }
        if let Some(v) = env("HCP_HEADER_READ_TIMEOUT") {
            self.header_read_timeout = parse_duration("HCP_HEADER_READ_TIMEOUT", &v)?;
        }
        if let Some(v) = env("HCP_MAX_CONNECTIONS") {
            self.max_connections = parse_positive("HCP_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = env("HCP_RATE_LIMIT").filter(|v| !v.trim().is_empty()) {
            let burst = env("HCP_RATE_BURST").filter(|v| !v.trim().is_empty());
            self.rate_limit = match RateLimit::parse("HCP_RATE_LIMIT", &v, burst.as_deref())? {
                Some(r) => RateLimiting::On(r),
                None => RateLimiting::Off,
            };
        } else if env("HCP_RATE_BURST").is_some_and(|v| !v.trim().is_empty()) {
            return Err(Error::invalid(
                "HCP_RATE_BURST",
                "is set without HCP_RATE_LIMIT: set HCP_RATE_LIMIT (`N/s` or `N/min`) too",
            ));
        }
        if let Some(v) = env("HCP_MAX_HEADER_BYTES") {
            self.max_header_bytes = parse_positive("HCP_MAX_HEADER_BYTES", &v)?;
        }
        self.auth = AuthSettings::from_env(env)?;
        self.validate()?;
        Ok(self)
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming the option: a non-loopback listen address without
    /// authentication, a zero body limit or timeout, a page maximum above 1000, a console token
    /// lifetime of zero or above an hour, a public URL that is not `http(s)://host[:port][/path]`,
    /// a tenant role that equals a cross-project role without the explicit opt-in
    /// ([`OidcSettings::check_roles`]).
    pub fn validate(&self) -> Result<()> {
        self.auth.validate()?;
        if !self.listen.ip().is_loopback() && !self.auth.enabled() {
            return Err(Error::invalid(
                "listen",
                format!(
                    "refusing to listen on {} without authentication: set OIDC_ISSUER_URL (the \
                     identity provider's issuer) and OIDC_CLIENT_ID (this service's client id) to \
                     turn OIDC on (see docs/configuration.md, \"Authentication\"), or listen on a \
                     loopback address (127.0.0.1:PORT or [::1]:PORT) for development",
                    self.listen
                ),
            ));
        }
        if self.body_limit == 0 {
            return Err(Error::invalid("body_limit", "must be at least 1 byte"));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::invalid(
                "request_timeout",
                "must be longer than zero",
            ));
        }
        let max = hcp_core::store::PageRequest::MAX_LIMIT;
        if self.page_max == 0 || self.page_max > max {
            return Err(Error::invalid(
                "page_max",
                format!("must be between 1 and {max}"),
            ));
        }
        if self.console_ttl.is_zero() || self.console_ttl > MAX_CONSOLE_TTL {
            return Err(Error::invalid(
                "console_ttl",
                format!(
                    "must be longer than zero and at most {}s",
                    MAX_CONSOLE_TTL.as_secs()
                ),
            ));
        }
        if let Some(u) = &self.public_url {
            parse_public_url("public_url", u.as_str())?;
        }
        if self.header_read_timeout.is_zero() || self.header_read_timeout > MAX_HEADER_READ_TIMEOUT
        {
            return Err(Error::invalid(
                "header_read_timeout",
                format!(
                    "must be longer than zero and at most {}s (HCP_HEADER_READ_TIMEOUT)",
                    MAX_HEADER_READ_TIMEOUT.as_secs()
                ),
            ));
        }
        if self.max_connections == 0 || self.max_connections > MAX_MAX_CONNECTIONS {
            return Err(Error::invalid(
                "max_connections",
                format!("must be between 1 and {MAX_MAX_CONNECTIONS} (HCP_MAX_CONNECTIONS)"),
            ));
        }
        if !(MIN_MAX_HEADER_BYTES..=MAX_MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            return Err(Error::invalid(
                "max_header_bytes",
                format!(
                    "must be between {MIN_MAX_HEADER_BYTES} and {MAX_MAX_HEADER_BYTES} bytes \
                     (HCP_MAX_HEADER_BYTES)"
                ),
            ));
        }
        if self.page_default == 0 || self.page_default > self.page_max {
            return Err(Error::invalid(
                "page_default",
                format!("must be between 1 and page_max ({})", self.page_max),
            ));
        }
        Ok(())
    }
}

/// Parses a listen address: `HOST:PORT` or a bare port (which listens on 127.0.0.1).
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `field`.
pub fn parse_listen(field: &str, value: &str) -> Result<SocketAddr> {
    let v = value.trim();
    if let Ok(port) = v.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let v = v.replace("localhost:", "127.0.0.1:");
    v.parse::<SocketAddr>().map_err(|_| {
        Error::invalid(
            field,
            format!("`{value}` is not an address; use HOST:PORT such as 127.0.0.1:8080"),
        )
    })
}

/// Parses the public URL of the service: `http(s)://host[:port][/path]`, without query,
/// fragment or credentials.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `field`.
pub fn parse_public_url(field: &str, value: &str) -> Result<url::Url> {
    let bad = |why: &str| {
        Error::invalid(
            field,
            format!(
                "`{value}` {why}; use the URL clients reach this service at, such as \
                 https://hcp.example.com"
            ),
        )
    };
    let u = url::Url::parse(value.trim()).map_err(|_| bad("is not a URL"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(bad("is not an http:// or https:// URL with a host"));
    }
    if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
        return Err(bad("must not carry a query, a fragment or credentials"));
    }
    Ok(u)
}

fn parse_positive(field: &str, value: &str) -> Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::invalid(
            field,
            format!("`{value}` is not a positive whole number"),
        )),
    }
}

/// Installs the global tracing subscriber the options ask for (JSON or text, with the filter).
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] for a bad filter; [`ErrorKind::Internal`] when a subscriber is
/// already installed.
pub fn init_tracing(options: &ServeOptions) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&options.log_level).map_err(|e| {
        Error::invalid(
            "log_level",
            format!("`{}` is not a log filter: {e}", options.log_level),
        )
    })?;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match options.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(secret_safe_filter())
            .try_init(),
        LogFormat::Text => builder.finish().with(secret_safe_filter()).try_init(),
    };
    result.map_err(|e| Error::internal(format!("cannot install the log subscriber: {e}")))
}

/// Returns a filter every HCP log subscriber installs on top of the user's filter: it drops
/// `debug` and `trace` records of the `winrm_rs` crate, whatever the filter asks for. winrm-rs
/// records its whole configuration (a `ca_file` host's forwarder URL carries that forwarder's
/// token) in debug spans and SOAP bodies (which can carry hook secrets and answer-file passwords)
/// at trace level, so those levels never reach a log.
pub fn secret_safe_filter()
-> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("winrm_rs") && *meta.level() > tracing::Level::INFO)
    })
}

/// Builds the engine every shell uses: reads the hosts file (or the simulator's demo when `config`
/// is `None`), applies the environment ([`hcp_core::Config::apply_env`]), registers every provider kind
/// compiled in ([`hcp_providers::kinds`]), installs the [`Metrics::global`] observer, opens the
/// PostgreSQL store when a database is configured ([`store_from_env`]; else the in-memory store),
/// and loads the first inventory.
///
/// With the demo, the Hyper-V routes' default project is `demo` (unless `HCP_DEFAULT_PROJECT`
/// says otherwise).
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming the key or variable of a broken configuration; a provider's
/// error when it cannot start.
pub async fn build_engine(
    config: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Engine> {
    build_engine_as(config, env, Role::All).await
}

/// Like [`build_engine`], for a replica of `role`: an [`Role::Api`] replica's engine runs no
/// job ([`hcp_core::EngineBuilder::without_workers`]).
///
/// # Errors
/// Those of [`build_engine`]; [`ErrorKind::InvalidSpec`] naming `role` when `role` is `api` or
/// `worker` and no database is configured.
pub async fn build_engine_as(
    config: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    role: Role,
) -> Result<Engine> {
    let cfg = hcp_providers::load_config(config, env)?;
    let observer: Arc<dyn hcp_core::Observer> = Metrics::global();
    let lease = cfg.engine.leader_lease;
    let store = postgres_from_env(&cfg, env).await?;
    if role != Role::All && store.is_none() {
        return Err(Error::invalid(
            "role",
            format!(
                "`{}` needs a database (HCP_DATABASE_URL or the secret file database_url) shared with the other replicas; without one the store lives in this process and no other replica could see its jobs. Use `all` for a single process",
                role.as_str()
            ),
        ));
    }
    let mut builder = register_providers(Engine::builder(cfg)).observer(observer);
    if role == Role::Api {
        builder = builder.without_workers();
    }
    if let Some(store) = store {
        // Several replicas may share the database: the singleton duties follow a leader lease.
        // The first attempt runs before the engine starts, so a lone replica leads at once.
        let holder = format!(
            "{}-{}-{}",
            env("HOSTNAME").unwrap_or_else(|| "hcp".into()),
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let elector = store.leader_elector("singletons", &holder, lease);
        if let Err(e) = elector.try_acquire().await {
            tracing::warn!(error = %e, "cannot take the leader lease yet; retrying");
        }
        // Renews until the engine's leadership is released (graceful shutdown) or the process ends.
        elector.spawn(tokio_util::sync::CancellationToken::new());
        builder = builder.store(store).leadership(elector);
    }
    builder.build().await
}

/// Opens the PostgreSQL store as its own type (see [`store_from_env`]).
async fn postgres_from_env(
    cfg: &hcp_core::Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Arc<hcp_store_postgres::PostgresStore>>> {
    Ok(store_from_env_inner(cfg, env).await?.map(Arc::new))
}

/// Opens the PostgreSQL store when a database is configured: `HCP_DATABASE_URL`, else the
/// secret file `database_url` in the secrets directory (`HCP_SECRETS_DIR`, default
/// `/run/secrets`); `HCP_DATABASE_SCHEMA` picks the PostgreSQL schema (default `public`).
/// Returns `None` (the in-memory store) when neither is set.
///
/// The store's migrations run before this returns. The URL's password never appears in a log
/// line or an error.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `HCP_DATABASE_URL`, `secrets.database_url` or
/// `database_schema` for a value that does not parse or a file that cannot be read; the store's
/// error when the database cannot be reached or its schema is newer than this binary.
pub async fn store_from_env(
    cfg: &hcp_core::Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Arc<dyn hcp_core::store::Store>>> {
    Ok(store_from_env_inner(cfg, env)
        .await?
        .map(|s| Arc::new(s) as Arc<dyn hcp_core::store::Store>))
}

async fn store_from_env_inner(
    cfg: &hcp_core::Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<hcp_store_postgres::PostgresStore>> {
    let (url, source) = match env("HCP_DATABASE_URL").filter(|v| !v.trim().is_empty()) {
        Some(url) => (url, "HCP_DATABASE_URL"),
        // The secret file only: a `DATABASE_URL` meant for another program must not switch
        // HCP's store.
        None => match cfg.secrets.file("database_url")? {
            Some(s) if !s.expose().trim().is_empty() => {
                (s.expose().trim().to_string(), "secrets.database_url")
            }
            _ => return Ok(None),
        },
    };
    let mut options = hcp_store_postgres::StoreOptions {
        max_log_lines_per_job: cfg.engine.max_log_lines_per_job,
        max_events: cfg.engine.max_events,
        ..Default::default()
    };
    if let Some(schema) = env("HCP_DATABASE_SCHEMA").filter(|v| !v.trim().is_empty()) {
        options.schema = schema.trim().to_string();
    }
    let store = hcp_store_postgres::PostgresStore::connect(&url, options)
        .await
        .map_err(|e| {
            if e.field() == Some("database_url") {
                let m = e.message();
                Error::invalid(source, m.strip_prefix("database_url: ").unwrap_or(m))
            } else {
                e
            }
        })?;
    tracing::info!(store = ?store, from = source, "using the PostgreSQL store");
    Ok(Some(store))
}

/// Registers every provider kind this build knows on `builder` (see [`hcp_providers::kinds`]).
pub fn register_providers(builder: hcp_core::EngineBuilder) -> hcp_core::EngineBuilder {
    hcp_providers::register_all(builder)
}

/// Returns the whole service as one endpoint, for in-process use and tests.
pub fn app(engine: Engine, options: &ServeOptions) -> impl poem::Endpoint + 'static {
    let consoles = consoles(&engine, options);
    http::app(engine, options, Metrics::global(), consoles)
}

fn consoles(engine: &Engine, options: &ServeOptions) -> Arc<console::ConsoleProxy> {
    Arc::new(
        console::ConsoleProxy::new(options.console_ttl, options.public_url.clone())
            .with_clock(engine.clock().clone()),
    )
}

/// A service bound to its address, ready to run.
pub struct Server {
    engine: Engine,
    options: ServeOptions,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks the options and binds the listen address (port 0 picks a free port).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `listen` for a non-loopback address or one that cannot be
    /// bound (in use, not permitted).
    pub async fn bind(engine: Engine, options: ServeOptions) -> Result<Server> {
        options.validate()?;
        match &options.auth.oidc {
            None => tracing::warn!(
                target: "hcp::auth",
                listen = %options.listen,
                "AUTHENTICATION IS OFF (development mode): every request acts as `{}` with every \
                 role in every project; the service listens on loopback only. Set OIDC_ISSUER_URL \
                 and OIDC_CLIENT_ID to turn authentication on",
                auth::DEV_PRINCIPAL_NAME
            ),
            Some(o) => tracing::info!(
                target: "hcp::auth",
                issuer = %o.issuer_url,
                client_id = %o.client_id,
                hyperv_role = %o.hyperv_role,
                tenant_role = %o.tenant_role,
                operator_role = %o.operator_role,
                public_routes = %options.auth.public_routes.join(","),
                "authentication: OIDC bearer tokens and browser login"
            ),
        }
        if let Some(o) = &options.auth.oidc {
            let shared = o.shared_tenant_roles();
            if !shared.is_empty() {
                tracing::warn!(
                    target: "hcp::auth",
                    tenant_role = %o.tenant_role,
                    "TENANTS REACH EVERY PROJECT: the tenant role `{}` is also set as {}, and \
                     OIDC_ALLOW_SHARED_TENANT_ROLE=true allows it, so every holder of the tenant \
                     role can read and act outside its projects. Give OIDC_TENANT_ROLE a role of \
                     its own to end this",
                    o.tenant_role,
                    shared.join(" and ")
                );
            }
        }
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|e| {
                Error::invalid(
                    "listen",
                    format!("cannot listen on {}: {e}", options.listen),
                )
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("cannot read the bound address: {e}")))?;
        Ok(Server {
            engine,
            options,
            listener,
            addr,
        })
    }

    /// Returns the bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets running requests finish (up
    /// to [`ServeOptions::shutdown_timeout`]), closes the console relays (recording their end),
    /// and logs the jobs still running.
    ///
    /// # Errors
    /// None today: accept errors (such as running out of file descriptors) are logged and
    /// retried; the `Result` leaves room for listeners that can fail for good.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server {
            engine,
            options,
            listener,
            addr,
        } = self;
        let consoles = consoles(&engine, &options);
        let endpoint = poem::EndpointExt::boxed(poem::EndpointExt::map_to_response(http::app(
            engine.clone(),
            &options,
            Metrics::global(),
            consoles.clone(),
        )));
        tracing::info!(%addr, api = %format!("http://{addr}/api/hcp/tenant/v1"), docs = %format!("http://{addr}/docs"), "hcp-server listening");
        let limits = conn::ConnLimits {
            header_read_timeout: options.header_read_timeout,
            max_connections: options.max_connections,
            max_header_bytes: options.max_header_bytes,
        };
        conn::serve(
            listener,
            endpoint,
            limits,
            shutdown,
            options.shutdown_timeout,
        )
        .await;
        // Upgraded (WebSocket) connections outlive the HTTP server: close them here.
        consoles.close_all().await;
        let running = engine.shutdown().await;
        if running.is_empty() {
            tracing::info!("hcp-server stopped; no jobs were running");
        } else {
            let ids: Vec<String> = running.iter().map(ToString::to_string).collect();
            if engine.store().durable() {
                tracing::warn!(count = ids.len(), jobs = %ids.join(","), store = engine.store().kind(), "hcp-server stopped with jobs still running; the store keeps them, and the next start queues them again");
            } else {
                tracing::warn!(count = ids.len(), jobs = %ids.join(","), "hcp-server stopped with jobs still running; the in-memory store does not keep them, so they end with this process (the next start rebuilds VMs from the hosts' marks)");
            }
        }
        Ok(())
    }
}

/// Binds and serves until `shutdown` resolves (see [`Server::bind`] and [`Server::run`]).
///
/// # Errors
/// See [`Server::bind`] and [`Server::run`].
pub async fn serve(
    engine: Engine,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Server::bind(engine, options).await?.run(shutdown).await
}

/// Returns a future that resolves on SIGTERM or Ctrl-C (SIGINT), whichever comes first.
///
/// The signal handlers are installed when this function is called, not when the future is first
/// polled, so a signal that arrives while the server is still starting shuts it down cleanly
/// instead of killing the process. Call it inside a Tokio runtime, before [`Server::run`].
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => tracing::info!("interrupt received; shutting down"),
                _ = wait(terminate) => tracing::info!("SIGTERM received; shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("interrupt received; shutting down");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_by_their_names_and_a_bad_one_names_the_field() {
        for r in Role::ALL {
            assert_eq!(Role::parse("--role", r.as_str()).unwrap(), r);
        }
        assert_eq!(Role::parse("HCP_ROLE", " api ").unwrap(), Role::Api);
        let e = Role::parse("HCP_ROLE", "leader").unwrap_err();
        assert_eq!(e.field(), Some("HCP_ROLE"));
        assert!(e.message().contains("all, api, worker"), "{e}");
    }

    #[test]
    fn env_options_name_the_variable() {
        let env = |k: &str| match k {
            "HCP_LISTEN" => Some("127.0.0.1:9999".to_string()),
            "HCP_BODY_LIMIT" => Some("2048".to_string()),
            "HCP_LOG_FORMAT" => Some("text".to_string()),
            _ => None,
        };
        let o = ServeOptions::default().apply_env(&env).unwrap();
        assert_eq!(o.listen.port(), 9999);
        assert_eq!(o.body_limit, 2048);
        assert_eq!(o.log_format, LogFormat::Text);
        let bad = |k: &str| (k == "HCP_BODY_LIMIT").then(|| "lots".to_string());
        assert_eq!(
            ServeOptions::default().apply_env(&bad).unwrap_err().field(),
            Some("HCP_BODY_LIMIT")
        );
        let bad = |k: &str| (k == "HCP_LOG_FORMAT").then(|| "xml".to_string());
        assert_eq!(
            ServeOptions::default().apply_env(&bad).unwrap_err().field(),
            Some("HCP_LOG_FORMAT")
        );
    }

    #[test]
    fn console_options_come_from_the_environment() {
        let env = |k: &str| match k {
            "HCP_PUBLIC_URL" => Some("https://hcp.example.com/base".to_string()),
            "HCP_CONSOLE_TTL" => Some("90s".to_string()),
            _ => None,
        };
        let o = ServeOptions::default().apply_env(&env).unwrap();
        assert_eq!(
            o.public_url.as_ref().map(url::Url::as_str),
            Some("https://hcp.example.com/base")
        );
        assert_eq!(o.console_ttl, Duration::from_secs(90));
        assert_eq!(ServeOptions::default().console_ttl, DEFAULT_CONSOLE_TTL);
        for (var, value) in [
            ("HCP_PUBLIC_URL", "ftp://hcp.example.com"),
            ("HCP_PUBLIC_URL", "not a url"),
            ("HCP_PUBLIC_URL", "https://user:pw@hcp.example.com"),
            ("HCP_PUBLIC_URL", "https://hcp.example.com/?x=1"),
            ("HCP_CONSOLE_TTL", "soon"),
        ] {
            let bad = |k: &str| (k == var).then(|| value.to_string());
            let e = ServeOptions::default().apply_env(&bad).unwrap_err();
            assert_eq!(e.field(), Some(var), "{value}: {e}");
        }
        for ttl in ["0s", "2h"] {
            let bad = |k: &str| (k == "HCP_CONSOLE_TTL").then(|| ttl.to_string());
            let e = ServeOptions::default().apply_env(&bad).unwrap_err();
            assert_eq!(e.field(), Some("console_ttl"), "{ttl}: {e}");
        }
    }

    #[test]
    fn connection_limits_come_from_the_environment() {
        let env = |k: &str| match k {
            "HCP_HEADER_READ_TIMEOUT" => Some("3s".to_string()),
            "HCP_MAX_CONNECTIONS" => Some("64".to_string()),
            "HCP_MAX_HEADER_BYTES" => Some("16384".to_string()),
            _ => None,
        };
        let o = ServeOptions::default().apply_env(&env).unwrap();
        assert_eq!(o.header_read_timeout, Duration::from_secs(3));
        assert_eq!(o.max_connections, 64);
        assert_eq!(o.max_header_bytes, 16384);
        let d = ServeOptions::default();
        assert_eq!(d.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(d.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(d.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
        for (var, value, field) in [
            ("HCP_HEADER_READ_TIMEOUT", "soon", "HCP_HEADER_READ_TIMEOUT"),
            ("HCP_HEADER_READ_TIMEOUT", "0s", "header_read_timeout"),
            ("HCP_HEADER_READ_TIMEOUT", "1h", "header_read_timeout"),
            ("HCP_MAX_CONNECTIONS", "-1", "HCP_MAX_CONNECTIONS"),
            ("HCP_MAX_CONNECTIONS", "0", "HCP_MAX_CONNECTIONS"),
            ("HCP_MAX_CONNECTIONS", "99999999", "max_connections"),
            ("HCP_MAX_HEADER_BYTES", "100", "max_header_bytes"),
            ("HCP_MAX_HEADER_BYTES", "1073741824", "max_header_bytes"),
            ("HCP_MAX_HEADER_BYTES", "lots", "HCP_MAX_HEADER_BYTES"),
        ] {
            let bad = |k: &str| (k == var).then(|| value.to_string());
            let e = ServeOptions::default().apply_env(&bad).unwrap_err();
            assert_eq!(e.field(), Some(field), "{var}={value}: {e}");
            assert!(e.to_string().contains(var), "{var}={value}: {e}");
        }
    }

    #[test]
    fn non_loopback_listen_is_refused_without_auth() {
        let o = ServeOptions::default().with_listen("0.0.0.0:8080".parse().unwrap());
        let e = o.validate().unwrap_err();
        assert_eq!(e.field(), Some("listen"));
        assert!(e.message().contains("loopback"), "{e}");
        assert!(e.message().contains("OIDC_ISSUER_URL"), "{e}");
        let with_auth = o.with_auth(AuthSettings {
            oidc: Some(OidcSettings::new("https://idp.example.com", "hcp").unwrap()),
            ..AuthSettings::default()
        });
        assert!(with_auth.validate().is_ok());
        assert!(
            ServeOptions::default()
                .with_listen("[::1]:0".parse().unwrap())
                .validate()
                .is_ok()
        );
        assert_eq!(
            parse_listen("x", "9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("x", "localhost:9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(parse_listen("x", "nope").unwrap_err().field(), Some("x"));
    }
}
