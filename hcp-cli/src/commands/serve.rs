//! `hcp serve`: the HTTP service (tenant, ops and common APIs, Swagger UI, metrics) over an
//! engine of its own.
//!
//! The service is stateless: its store is in memory and it rebuilds who owns what from the
//! providers at start-up, so it never touches the CLI's embedded state files. Its settings come
//! from the environment the Kubernetes way ([`ServeOptions::apply_env`],
//! [`hcp_core::Config::apply_env`]) and from the flags, which win.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use clap::Args;
use hcp_core::{Catalog, Engine};
use hcp_server::{ServeOptions, Server};

/// What `hcp serve --help` adds: the environment it reads and how it stops.
pub const HELP: &str = "\
Environment (the Kubernetes way: a ConfigMap for the hosts file, Secrets as files; flags win):
  HCP_CONFIG                    the hosts file; the simulator demo when unset
  HCP_LISTEN                    the listen address (default 127.0.0.1:8080)
  HCP_LOG_FORMAT, HCP_LOG_LEVEL json (default) or text; a filter such as info or hcp=debug
  INVENTORY_REFRESH_INTERVAL    how often the hosts' inventory is read again (e.g. 30s)
  HCP_SECRETS_DIR               the directory of secret files (default /run/secrets); a secret
                                missing there is read from its upper-cased variable
  OIDC_ISSUER_URL, OIDC_CLIENT_ID authentication; without it, loopback addresses only
  OIDC_TENANT_ROLE, OIDC_HYPERV_ROLE (formerly OIDC_ROLE_NAME), OIDC_OPERATOR_ROLE
                                the roles of tenant, /api/v1 and ops routes; a tenant role equal
                                to another is refused unless OIDC_ALLOW_SHARED_TENANT_ROLE=true
  HCP_PUBLIC_URL                the URL clients reach the service at (console WebSocket URLs
                                are built on it; the request's Host header when unset)
  HCP_CONSOLE_TTL               how long a console URL lets its client connect (default 60s)
  HCP_HEADER_READ_TIMEOUT       how long a client may take to send a request's headers (default
                                10s; idle keep-alive connections close after it too)
  HCP_MAX_CONNECTIONS           connections open at once (default 512); more wait their turn
  HCP_MAX_HEADER_BYTES          the largest request head (default 32768); larger ones get 431
  HCP_RATE_LIMIT                a request budget per caller: off, N/s or N/min (default: off on
                                loopback, 50/s elsewhere); beyond it 429 with Retry-After
  HCP_RATE_BURST                requests a caller may send at once (default: N of HCP_RATE_LIMIT)
  HCP_BODY_LIMIT, HCP_REQUEST_TIMEOUT, HCP_PAGE_MAX, HCP_SHUTDOWN_TIMEOUT, HCP_JOB_TIMEOUT,
  HCP_MAX_CONCURRENT_JOBS, HCP_MAX_JOBS_PER_HOST, HCP_IDEMPOTENCY_TTL, HCP_DEFAULT_PROJECT
  HCP_ROLE                      all (default), api or worker: see --role
  HCP_JOB_LEASE                 a worker's claim on a job, renewed every third of it (default
                                30s, 1s-1h); a dead replica's jobs are taken over once it lapses
  HCP_DATABASE_URL              a PostgreSQL URL (or the secret file database_url): keep VMs,
                                jobs, logs, events and idempotency records there
  HCP_DATABASE_SCHEMA           the PostgreSQL schema of HCP's tables (default public)
  HCP_EVENT_RETENTION           how long audit events are kept (default 30d; 0 keeps them)
  HCP_LEADER_LEASE              with a database: the leader lease of the singleton duties
                                (refresh, drift repair, purges; default 15s)
  HCP_NATS_URL                  publish audit events to NATS JetStream (e.g. nats://nats:4222);
                                credentials from the secret files nats.creds, nats_token, or
                                nats_user + nats_password
  HCP_NATS_SUBJECT_PREFIX       subjects are PREFIX.PROJECT.EVENT (default hcp.events)
  HCP_NATS_STREAM               the JetStream stream, created when missing (default HCP_EVENTS)
See docs/configuration.md. A broken value stops start-up with a message naming it (exit code 2).

Without a database the store is in memory: on start-up the service rebuilds who owns what from
the providers. With one, the store's migrations run at start and unfinished jobs are queued again.
SIGTERM or Ctrl-C stops it gracefully: it stops accepting, lets running requests finish (up to
HCP_SHUTDOWN_TIMEOUT) and logs the jobs still running.";

/// `hcp serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listens on this address: HOST:PORT, or a bare port on 127.0.0.1 (default
    /// 127.0.0.1:8080, or HCP_LISTEN). While authentication is off, only loopback addresses are
    /// accepted.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// What this replica does when several share a database: `all` serves the API and runs
    /// jobs (the default, or HCP_ROLE); `api` serves the API and leaves jobs to worker
    /// replicas; `worker` runs jobs and answers only /healthz, /readyz and /metrics. `api` and
    /// `worker` need HCP_DATABASE_URL.
    #[arg(long, value_name = "ROLE", value_parser = hcp_server::Role::NAMES)]
    role: Option<String>,
}

impl ServeArgs {
    /// Runs the service until SIGTERM or Ctrl-C, then shuts down gracefully: it stops
    /// accepting, lets running requests finish and logs the jobs still running.
    ///
    /// `config` is the hosts file of `--config` / `HCP_CONFIG`; the simulator's demo when
    /// absent.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the flag, variable or hosts-file key of a
    /// broken configuration (before anything listens); an address that cannot be bound.
    pub async fn run(self, config: Option<&Path>) -> anyhow::Result<()> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let listen = self
            .listen
            .as_deref()
            .map(|v| hcp_server::parse_listen("--listen", v))
            .transpose()?;
        // The flag wins over HCP_LISTEN, which `apply_env` would otherwise check on its own.
        let serve_env = |k: &str| match k {
            "HCP_LISTEN" if listen.is_some() => None,
            _ => env(k),
        };
        let mut options = ServeOptions::default().apply_env(&serve_env)?;
        if let Some(addr) = listen {
            options = options.with_listen(addr);
        }
        if let Some(role) = self.role.as_deref() {
            options.role = hcp_server::Role::parse("--role", role)?;
        }
        if let Some(path) = config {
            options = options.with_config(Some(path.to_path_buf()));
        }
        // Refuse a bad address before the providers are contacted.
        options.validate()?;
        hcp_server::init_tracing(&options)?;
        // The audit stream on NATS JetStream, when HCP_NATS_URL is set: checked before anything
        // slow, so a broken value stops start-up at once.
        let secrets = hcp_core::config::Secrets::new(
            env("HCP_SECRETS_DIR").unwrap_or_else(|| "/run/secrets".into()),
        );
        let nats = hcp_nats::NatsSettings::from_env(&env, &secrets)?;
        // Install the signal handlers before anything slow, so an early SIGTERM stops cleanly.
        let shutdown = hcp_server::shutdown_signal();
        let engine =
            hcp_server::build_engine_as(options.config.as_deref(), &env, options.role).await?;
        let publishing = tokio_util::sync::CancellationToken::new();
        let publisher = nats.map(|settings| {
            // Of several replicas on one database only the leader publishes; the others'
            // copies would be dropped as duplicates anyway.
            let leadership = engine.leadership().clone();
            hcp_nats::Publisher::new(settings, engine.store().clone())
                .with_gate(Arc::new(move || leadership.is_leader()))
                .spawn(Some(engine.subscribe_events()), publishing.clone())
        });
        let mut try_it = TryIt::from_engine(&engine);
        try_it.issuer = options.auth.oidc.as_ref().map(|o| o.issuer_url.clone());
        let source = match &options.config {
            Some(path) => format!("the hosts file {}", path.display()),
            None => "the simulator demo".to_string(),
        };
        let source = match options.role {
            hcp_server::Role::All => format!("{source} ({} store)", engine.store().kind()),
            role => format!(
                "{source} ({} store, role {})",
                engine.store().kind(),
                role.as_str()
            ),
        };
        let leadership = engine.leadership().clone();
        let options_role = options.role;
        let server = Server::bind(engine, options).await?;
        let text = match options_role {
            hcp_server::Role::Worker => worker_banner(server.local_addr(), &source),
            _ => banner(server.local_addr(), &source, &try_it),
        };
        crate::output::line(&text)?;
        let served = server.run(shutdown).await;
        if let Some(task) = publisher {
            // The outbox keeps whatever is not delivered yet; give in-flight publishes a moment.
            publishing.cancel();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        // Hand the singleton duties to another replica now rather than after the lease runs out.
        leadership.release().await;
        served?;
        Ok(())
    }
}

/// What the banner's first request creates: a VM that this configuration accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TryIt {
    project: String,
    image: Option<String>,
    flavor: Option<String>,
    /// The OIDC issuer whose tokens the service takes; `None` when authentication is off.
    issuer: Option<String>,
}

impl TryIt {
    fn from_engine(engine: &Engine) -> TryIt {
        let project = engine
            .projects()
            .into_iter()
            .next()
            .unwrap_or_else(|| engine.settings().default_project.clone());
        let (image, flavor) = first_fit(engine.catalog());
        TryIt {
            project,
            image,
            flavor,
            issuer: None,
        }
    }
}

/// Returns the first image and the first flavor whose disk holds it.
fn first_fit(catalog: &Catalog) -> (Option<String>, Option<String>) {
    for image in &catalog.images {
        if let Some(f) = catalog
            .flavors
            .iter()
            .find(|f| f.disk_gib >= image.min_disk_gib)
        {
            return (Some(image.name.clone()), Some(f.name.clone()));
        }
    }
    (None, None)
}

/// Renders what `hcp serve` prints once it listens: where everything is, whether callers need
/// a token, and a first request.
/// A worker replica's banner: it serves the probes and metrics only.
fn worker_banner(addr: SocketAddr, source: &str) -> String {
    let base = format!("http://{addr}");
    format!(
        "HCP serves {source} on {base}\n  {:<11} {base}/metrics\n  {:<11} {base}/healthz, {base}/readyz\n  Jobs come from the database; API requests go to replicas of role api or all.\n\nStop with Ctrl-C or SIGTERM: running requests finish first.",
        "Metrics", "Health"
    )
}

fn banner(addr: SocketAddr, source: &str, t: &TryIt) -> String {
    let base = format!("http://{addr}");
    let mut b = format!("HCP serves {source} on {base}\n");
    for (what, path) in [
        ("Tenant API", "/api/hcp/tenant/v1"),
        ("Ops API", "/api/hcp/ops/v1"),
        ("Common API", "/api/hcp/common/v1"),
        ("Web UI", "/ui/"),
        ("Swagger UI", "/docs"),
        ("OpenAPI", "/openapi.json"),
        ("Metrics", "/metrics"),
    ] {
        let _ = writeln!(b, "  {what:<11} {base}{path}");
    }
    let _ = writeln!(b, "  {:<11} {base}/healthz, {base}/readyz", "Health");
    let (auth_header, hcp) = match &t.issuer {
        Some(issuer) => {
            let _ = writeln!(
                b,
                "  {:<11} OIDC bearer tokens from {issuer}; browser login at {base}/oidc/login",
                "Auth"
            );
            (
                " \\\n    -H \"Authorization: Bearer $HCP_TOKEN\"",
                format!("HCP_TOKEN=... hcp --url {base}"),
            )
        }
        None => {
            let _ = writeln!(
                b,
                "  {:<11} off (development mode, loopback only): set OIDC_ISSUER_URL and OIDC_CLIENT_ID to turn it on",
                "Auth"
            );
            ("", format!("hcp --url {base}"))
        }
    };
    let project = &t.project;
    match (&t.image, &t.flavor) {
        (Some(image), Some(flavor)) => {
            let _ = write!(
                b,
                "\nTry it: create a VM in project {project}, then follow its job\n  \
                 curl -sS -X POST {base}/api/hcp/tenant/v1/projects/{project}/vms{auth_header} \\\n    \
                 -H 'Content-Type: application/json' -H 'Idempotency-Key: first-vm' \\\n    \
                 -d '{{\"name\":\"web-1\",\"image\":\"{image}\",\"flavor\":\"{flavor}\"}}'\n  \
                 {hcp} job watch JOB_ID\n  \
                 {hcp} vm list --project {project}\n"
            );
        }
        _ => {
            let _ = write!(
                b,
                "\nTry it:\n  curl -sS {base}/api/hcp/common/v1/catalog{auth_header}\n  \
                 {hcp} vm list --project {project}\n"
            );
        }
    }
    b.push_str("\nStop with Ctrl-C or SIGTERM: running requests finish first.");
    b
}

#[cfg(test)]
mod tests {
    use hcp_core::{Flavor, Image};

    use super::*;

    fn image(name: &str, min_disk_gib: u64) -> Image {
        serde_json::from_value(serde_json::json!({"name": name, "min_disk_gib": min_disk_gib}))
            .unwrap()
    }

    fn flavor(name: &str, disk_gib: u64) -> Flavor {
        Flavor {
            name: name.into(),
            vcpus: 1,
            memory_mib: 512,
            disk_gib,
        }
    }

    #[test]
    fn the_first_request_uses_an_image_and_a_flavor_that_fit() {
        let catalog = Catalog {
            images: vec![image("windows", 32), image("linux", 5)],
            flavors: vec![flavor("small", 10), flavor("medium", 40)],
            networks: vec![],
            zones: vec![],
        };
        assert_eq!(
            first_fit(&catalog),
            (Some("windows".into()), Some("medium".into()))
        );
        let tiny = Catalog {
            images: vec![image("windows", 32)],
            flavors: vec![flavor("small", 10)],
            ..catalog
        };
        assert_eq!(first_fit(&tiny), (None, None));
    }

    #[test]
    fn the_banner_names_every_endpoint_and_a_working_request() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let t = TryIt {
            project: "demo".into(),
            image: Some("ubuntu-24.04".into()),
            flavor: Some("small".into()),
            issuer: None,
        };
        let b = banner(addr, "the simulator demo", &t);
        for part in [
            "http://127.0.0.1:8080/api/hcp/tenant/v1",
            "http://127.0.0.1:8080/docs",
            "http://127.0.0.1:8080/openapi.json",
            "http://127.0.0.1:8080/metrics",
            "http://127.0.0.1:8080/readyz",
            "curl -sS -X POST http://127.0.0.1:8080/api/hcp/tenant/v1/projects/demo/vms",
            r#"-d '{"name":"web-1","image":"ubuntu-24.04","flavor":"small"}'"#,
        ] {
            assert!(b.contains(part), "{part} missing from:\n{b}");
        }
        assert!(b.contains("Auth        off (development mode"), "{b}");
        assert!(!b.contains("Authorization"), "{b}");
        let with_auth = TryIt {
            issuer: Some("https://idp.example.com".into()),
            ..t.clone()
        };
        let a = banner(addr, "x", &with_auth);
        assert!(
            a.contains("OIDC bearer tokens from https://idp.example.com"),
            "{a}"
        );
        assert!(
            a.contains("-H \"Authorization: Bearer $HCP_TOKEN\"")
                && a.contains("HCP_TOKEN=... hcp --url http://127.0.0.1:8080 vm list"),
            "{a}"
        );
        let v6 = banner("[::1]:9000".parse().unwrap(), "x", &t);
        assert!(v6.contains("http://[::1]:9000/docs"), "{v6}");
        let no_catalog = TryIt {
            image: None,
            flavor: None,
            ..t
        };
        let b = banner(addr, "x", &no_catalog);
        assert!(
            b.contains("curl -sS http://127.0.0.1:8080/api/hcp/common/v1/catalog"),
            "{b}"
        );
    }
}
