//! HCP's PostgreSQL store: an implementation of [`hcp_core::store::Store`] that keeps VMs, jobs,
//! job logs, audit events, idempotency records, per-project quota usage and per-host usage in
//! PostgreSQL, so they survive restarts and several processes can share them.
//!
//! ```no_run
//! # async fn t() -> hcp_core::Result<()> {
//! use hcp_store_postgres::{PostgresStore, StoreOptions};
//! let store = PostgresStore::connect("postgres://hcp@127.0.0.1/hcp", StoreOptions::default()).await?;
//! # Ok(()) }
//! ```
//!
//! # Driver
//! `tokio-postgres` with a `deadpool-postgres` pool. Every query is plain SQL prepared at run
//! time (and cached per connection), so building HCP never needs a live database, and the driver
//! brings far fewer crates to compile than `sqlx` (no macros crate, no query-checking build
//! step, no other databases' drivers). TLS comes from `rustls` through `tokio-postgres-rustls`,
//! asked for the libpq way in the URL: `sslmode=require`, `verify-ca` or `verify-full` encrypt
//! and authenticate the server against `sslrootcert` (a PEM CA file) or the public roots;
//! `disable`, `allow` and `prefer` (the default) connect in plain TCP. HCP verifies the server
//! whenever it encrypts, which libpq does for `verify-ca` and `verify-full` only.
//!
//! # Schema
//! The migrations are compiled into the binary and run by [`PostgresStore::connect`] under a
//! PostgreSQL advisory lock, so replicas starting together apply each one once. A database whose
//! schema is newer than the binary is refused with an error saying so. Each table lives in one
//! PostgreSQL schema ([`StoreOptions::schema`], default `public`).
//!
//! # Consistency
//! Each [`Store`] method is one transaction. A submission with a quota locks its project's usage
//! rows, and one with a host's room locks that host's usage rows, before it checks them (the
//! project's first, then the host's, always in that order); it locks the VM row it updates, and
//! relies on unique constraints for VM names,
//! job ids and idempotency keys; a concurrent submission with the same key waits for the first
//! one's transaction and then replays it. Event and log numbers come from counter rows locked in
//! the inserting transaction, so they have no gaps and commit in order.
//!
//! The database URL's password never appears in an error, a log line or this type's `Debug`.

mod leader;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
mod tls;

pub use leader::LeaderElector;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool, Runtime};
use hcp_core::store::{
    HostRoom, IdempotencyRecord, IdempotencyScope, JobFilter, LogBatch, Page, PageRequest, Scope,
    SortValue, Store, Submission, SubmitOutcome, Usage, VmFilter, VmPosition, VmSort, VmSortKey,
    VmWrite, group_name_taken, group_not_empty, group_not_found, lease_lost,
};
use hcp_core::{
    CODE_IDEMPOTENCY_KEY_REUSED, Error, ErrorKind, Event, EventFilter, Job, JobId, JobLease,
    JobLogLine, LogEntry, ProjectId, Quota, Result, ServerGroup, ServerGroupId, Vm, VmId,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

/// The schema migrations with their versions, in ascending order. Versions are explicit (not
/// positions) so branches can take numbers independently: a gap is allowed, and a database
/// missing a version below its newest one (a migration merged later) gets it applied.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_vm_list_columns.sql")),
    (3, include_str!("migrations/0003_job_leases.sql")),
    (4, include_str!("migrations/0004_server_groups.sql")),
    (
        5,
        include_str!("migrations/0005_event_retention_outbox.sql"),
    ),
    (6, include_str!("migrations/0006_leader_leases.sql")),
    (7, include_str!("migrations/0007_usage_shards.sql")),
    (8, include_str!("migrations/0008_host_usage.sql")),
];

/// The rows a project's usage (schema version 7) and a host's (version 8) are spread over:
/// writes without a quota or room check touch one, so they do not wait for each other's commits.
const USAGE_SHARDS: i16 = 16;

/// How long the database lets a session sit idle inside a transaction before it ends the
/// session. HCP's transactions run their statements back to back, so only a hung or stopped
/// process (SIGSTOP, a frozen VM) stays idle in one; ending its session frees the rows it locked
/// (a job, a VM, a project's usage), so other replicas can claim its jobs once their leases
/// lapse instead of waiting on its locks for as long as it is stopped.
const STALLED_TRANSACTION: Duration = Duration::from_secs(5);

/// The longest a statement waits for a row lock before it fails (temporarily, so a worker tries
/// again): a bound on waits the stalled-transaction limit does not cover.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The schema version this binary writes: its newest migration's.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Returns the versions of the migrations this binary ships, ascending (with gaps: numbers are
/// taken by features, not by position).
pub fn migration_versions() -> Vec<i32> {
    MIGRATIONS.iter().map(|(v, _)| *v).collect()
}

/// How the store connects and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The PostgreSQL schema holding HCP's tables; created when missing. Lower-case letters,
    /// digits and `_`, starting with a letter or `_`, at most 63 bytes.
    pub schema: String,
    /// Most connections in the pool.
    pub max_connections: usize,
    /// Most log lines kept per job (the oldest go first).
    pub max_log_lines_per_job: usize,
    /// Most events kept; [`Store::purge`] drops the oldest beyond it.
    pub max_events: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            schema: "public".into(),
            max_connections: 16,
            max_log_lines_per_job: 1000,
            max_events: 100_000,
        }
    }
}

/// Keeps HCP's state in PostgreSQL.
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    target: String,
    password: Option<String>,
    max_log_lines: i64,
    max_events: i64,
    tls: tls::Tls,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

fn validate_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit()
        && !schema.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "database_schema",
            "must be 1 to 63 lower-case letters, digits or `_`, start with a letter or `_`, and not start with `pg_`",
        ))
    }
}

/// Parses a PostgreSQL URL (or `key=value` connection string) without echoing any of it.
fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    tokio_postgres::Config::from_str(url).map_err(|_| {
        Error::invalid(
            "database_url",
            "is not a PostgreSQL connection URL; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (the value is not repeated here because it may hold a password)",
        )
    })
}

/// Describes where a config points, without its password.
fn describe(cfg: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{}:{port}/{}",
        cfg.get_user().unwrap_or(""),
        hosts.join(","),
        cfg.get_dbname().unwrap_or("")
    )
}

impl PostgresStore {
    /// Connects to the database at `url`, creates the schema when missing, and brings it to
    /// [`SCHEMA_VERSION`] under an advisory lock.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidSpec`] naming `database_url` for a URL that does not parse (the
    ///   value is not repeated), or `database_schema` for a bad schema name;
    /// - [`ErrorKind::Internal`] when the database cannot be reached, a migration fails, or the
    ///   database's schema is newer than this binary (the message says which versions).
    pub async fn connect(url: &str, options: StoreOptions) -> Result<PostgresStore> {
        validate_schema(&options.schema)?;
        let (url, tls_request) = tls::split(url)?;
        let mut cfg = parse_url(&url)?;
        let tls = tls_request.connector()?;
        cfg.ssl_mode(tls.ssl_mode());
        let password = cfg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty());
        let target = describe(&cfg);
        // The URL's own `options` stay; HCP's settings come after them, so they win.
        let own = cfg
            .get_options()
            .map(|o| format!("{o} "))
            .unwrap_or_default();
        cfg.options(format!(
            "{own}-c search_path={} -c idle_in_transaction_session_timeout={} -c lock_timeout={}",
            options.schema,
            STALLED_TRANSACTION.as_millis(),
            LOCK_WAIT.as_millis()
        ));
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(10));
        }
        cfg.application_name("hcp");
        let store = PostgresStore {
            pool: Pool::builder(tls.manager(&cfg))
                .max_size(options.max_connections.max(1))
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(30)))
                .create_timeout(Some(Duration::from_secs(10)))
                .build()
                .map_err(|e| Error::internal(format!("cannot build the database pool: {e}")))?,
            schema: options.schema.clone(),
            target,
            password,
            max_log_lines: i64::try_from(options.max_log_lines_per_job.max(1)).unwrap_or(i64::MAX),
            max_events: i64::try_from(options.max_events.max(1)).unwrap_or(i64::MAX),
            tls,
        };
        store.migrate(&cfg).await?;
        // A first pooled connection now, so a broken pool fails at start, not on a request.
        drop(store.client().await?);
        Ok(store)
    }

    /// Creates an elector for the leader lease `name` held as `holder` (unique per process),
    /// on this store's database and schema; the leadership moves within `lease` when its holder
    /// dies (see [`LeaderElector`]). Start it with [`LeaderElector::spawn`].
    pub fn leader_elector(&self, name: &str, holder: &str, lease: Duration) -> Arc<LeaderElector> {
        Arc::new(LeaderElector::new(self.pool.clone(), name, holder, lease))
    }

    /// Returns the schema version the database is at.
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn schema_version(&self) -> Result<i32> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT coalesce(max(version), 0) FROM hcp_schema_migrations",
                &[],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        self.col(&row, 0)
    }

    /// Applies the missing migrations on a connection of its own, holding an advisory lock
    /// keyed by the schema name, so replicas starting together apply each migration once.
    async fn migrate(&self, cfg: &tokio_postgres::Config) -> Result<()> {
        let (mut client, conn) = self.tls.connect(cfg).await.map_err(|e| {
            Error::internal(self.redact(format!(
                "cannot connect to the PostgreSQL database {} ({}); check the database URL, its sslmode and sslrootcert, and that the database is up",
                self.target,
                chain(&e)
            )))
            .temporary()
        })?;
        let r = self.migrate_on(&mut client).await;
        // Closing the connection releases the advisory lock even if the unlock was not reached.
        drop(client);
        let _ = conn.await;
        r
    }

    async fn migrate_on(&self, client: &mut tokio_postgres::Client) -> Result<()> {
        let key = format!("hcp-migrations:{}", self.schema);
        client
            .execute("SELECT pg_advisory_lock(hashtext($1))", &[&key])
            .await
            .map_err(|e| self.db_err(e))?;
        // The schema name is validated (letters, digits, `_`), so it is safe to splice in.
        let setup = format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.hcp_schema_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );
             SET search_path TO {s};",
            s = self.schema
        );
        client
            .batch_execute(&setup)
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = client
            .query("SELECT version FROM hcp_schema_migrations", &[])
            .await
            .map_err(|e| self.db_err(e))?;
        let applied = rows
            .iter()
            .map(|r| self.col::<i32>(r, 0))
            .collect::<Result<std::collections::BTreeSet<i32>>>()?;
        let current = applied.last().copied().unwrap_or(0);
        if current > SCHEMA_VERSION {
            return Err(Error::internal(format!(
                "the database schema `{}` is at version {current}, newer than this hcp binary knows (version {SCHEMA_VERSION}); run a newer hcp, or point it at another database",
                self.schema
            )));
        }
        for &(version, sql) in MIGRATIONS {
            if applied.contains(&version) {
                continue;
            }
            let tx = client.transaction().await.map_err(|e| self.db_err(e))?;
            tx.batch_execute(sql).await.map_err(|e| {
                self.db_err(e)
                    .with_context("migration", version.to_string())
            })?;
            tx.execute(
                "INSERT INTO hcp_schema_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(|e| self.db_err(e))?;
            tx.commit().await.map_err(|e| self.db_err(e))?;
            tracing::info!(schema = %self.schema, version, "applied database migration");
        }
        client
            .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&key])
            .await
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Removes the password from a driver message.
    fn redact(&self, text: String) -> String {
        match &self.password {
            Some(p) if text.contains(p.as_str()) => text.replace(p.as_str(), "***"),
            _ => text,
        }
    }

    /// Maps a driver error: conflicts and unique violations to `Conflict`, the rest to an
    /// internal, temporary store failure (the detail is for operators only).
    fn db_err(&self, e: tokio_postgres::Error) -> Error {
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
            {
                return Error::new(ErrorKind::Conflict, "a concurrent change intervened; retry")
                    .temporary();
            }
            if *code == SqlState::UNIQUE_VIOLATION {
                return Error::new(ErrorKind::Conflict, "the record already exists");
            }
        }
        Error::internal("the store's database failed")
            .with_detail(self.redact(format!("{} ({}): {}", self.target, self.schema, chain(&e))))
            .temporary()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            Error::internal("the store's database cannot be reached")
                .with_detail(self.redact(format!("{} ({}): {e}", self.target, self.schema)))
                .temporary()
        })
    }

    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&self, row: &'a Row, i: usize) -> Result<T> {
        row.try_get(i).map_err(|e| self.db_err(e))
    }

    fn doc<T: DeserializeOwned>(&self, row: &Row, i: usize) -> Result<T> {
        let v: serde_json::Value = self.col(row, i)?;
        serde_json::from_value(v)
            .map_err(|e| Error::internal(format!("a stored record does not parse: {e}")))
    }

    fn vm_of(&self, row: &Row) -> Result<Vm> {
        let mut vm: Vm = self.doc(row, 1)?;
        vm.generation = from_db(self.col::<i64>(row, 0)?)?;
        Ok(vm)
    }

    /// Reads a job from `generation, doc, lease_holder, lease_expires_at, fencing_token`; the
    /// lease columns, not the document, hold the lease.
    fn job_of(&self, row: &Row) -> Result<Job> {
        let mut job: Job = self.doc(row, 1)?;
        job.generation = from_db(self.col::<i64>(row, 0)?)?;
        job.lease = self.lease_of(row, 2)?;
        Ok(job)
    }

    /// Reads a lease from `lease_holder, lease_expires_at, fencing_token` starting at column `i`.
    fn lease_of(&self, row: &Row, i: usize) -> Result<Option<JobLease>> {
        let holder: Option<String> = self.col(row, i)?;
        let until: Option<DateTime<Utc>> = self.col(row, i + 1)?;
        let token: i64 = self.col(row, i + 2)?;
        Ok(match (holder, until) {
            (Some(holder), Some(until)) => Some(JobLease {
                holder: holder.into(),
                token: from_db(token)?,
                until,
            }),
            _ => None,
        })
    }

    /// Locks every usage shard of the project and returns the project's usage (see
    /// [`PostgresStore::lock_shards`]).
    async fn lock_usage(&self, tx: &impl GenericClient, project: &ProjectId) -> Result<Usage> {
        self.lock_shards(
            tx,
            "SELECT greatest(0, sum(vms))::text, greatest(0, sum(vcpus))::text,
                    greatest(0, sum(memory_mib))::text, count(*)
             FROM (SELECT vms, vcpus, memory_mib FROM project_usage WHERE project = $1
                   ORDER BY shard FOR UPDATE) AS u",
            "INSERT INTO project_usage (project, shard)
             SELECT $1, s::smallint FROM generate_series(0, $2::int - 1) AS s
             ON CONFLICT (project, shard) DO NOTHING",
            &[&project.as_str()],
        )
        .await
    }

    /// Locks every usage shard of one project or host, in shard order, and returns their sum.
    /// `lock` selects the shards `FOR UPDATE` with their count last; when some are missing,
    /// `create` (the same parameters, then the shard count) makes them and `lock` runs again,
    /// so no shard can appear unseen. A write that adds to a shard afterwards waits for this
    /// transaction, so nothing is added between the check and the commit. Usually every shard
    /// exists, and this is one statement.
    async fn lock_shards(
        &self,
        tx: &impl GenericClient,
        lock: &str,
        create: &str,
        key: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Usage> {
        let st = tx.prepare_cached(lock).await.map_err(|e| self.db_err(e))?;
        let row = tx.query_one(&st, key).await.map_err(|e| self.db_err(e))?;
        let found: i64 = self.col(&row, 3)?;
        if found >= i64::from(USAGE_SHARDS) {
            return self.usage_of(&row);
        }
        let st = tx
            .prepare_cached(create)
            .await
            .map_err(|e| self.db_err(e))?;
        let shards = i32::from(USAGE_SHARDS);
        let mut params = key.to_vec();
        params.push(&shards);
        tx.execute(&st, &params).await.map_err(|e| self.db_err(e))?;
        let st = tx.prepare_cached(lock).await.map_err(|e| self.db_err(e))?;
        let row = tx.query_one(&st, key).await.map_err(|e| self.db_err(e))?;
        self.usage_of(&row)
    }

    fn usage_of(&self, row: &Row) -> Result<Usage> {
        let n = |i: usize| -> Result<u128> {
            let s: Option<String> = self.col(row, i)?;
            // Sums never go below zero; a value past u128 saturates like the memory store.
            Ok(s.map_or(0, |s| s.parse::<u128>().unwrap_or(u128::MAX)))
        };
        Ok(Usage {
            vms: n(0)?,
            vcpus: n(1)?,
            memory_mib: n(2)?,
        })
    }

    /// Checks `quota` and `room` for a VM write's usage change and records the change in the
    /// project's usage and in its host's (or, for a move, both hosts'), inside the caller's
    /// transaction. Only a change that adds usage under a quota (or a room) locks the whole
    /// project's (or host's) usage; any other adds to the VM's shard. The project's rows are
    /// always locked before the host's, so two writes never wait on each other in a cycle.
    /// Callers make it their transaction's last write, so the rows stay locked only for the
    /// commit.
    async fn apply_usage(
        &self,
        tx: &impl GenericClient,
        change: &UsageChange,
        quota: Option<&Quota>,
        room: Option<&HostRoom>,
    ) -> Result<()> {
        let UsageChange {
            project,
            vm_id,
            before,
            after,
            host_before,
            host_after,
        } = change;
        if before != after {
            let added = after.minus(*before);
            let removed = before.minus(*after);
            if let Some(q) = quota
                && !added.is_zero()
            {
                let cur = self.lock_usage(tx, project).await?;
                cur.plus(added).minus(removed).check(project, q, &added)?;
            }
            self.add_to_shard(
                tx,
                "INSERT INTO project_usage AS u (project, shard, vms, vcpus, memory_mib)
                 VALUES ($1, $2, $3::text::numeric, $4::text::numeric, $5::text::numeric)
                 ON CONFLICT (project, shard) DO UPDATE SET
                    vms = u.vms + excluded.vms,
                    vcpus = u.vcpus + excluded.vcpus,
                    memory_mib = u.memory_mib + excluded.memory_mib",
                &[&project.as_str()],
                vm_id,
                (added, removed),
            )
            .await?;
        }
        match (host_before, host_after) {
            (Some(b), Some(a)) if b.provider == a.provider && b.host == a.host => {
                self.add_host_usage(tx, vm_id, a, b.held, a.held, room)
                    .await
            }
            (b, a) => {
                if let Some(b) = b {
                    self.add_host_usage(tx, vm_id, b, b.held, Usage::default(), None)
                        .await?;
                }
                match a {
                    Some(a) => {
                        self.add_host_usage(tx, vm_id, a, Usage::default(), a.held, room)
                            .await
                    }
                    None => Ok(()),
                }
            }
        }
    }

    /// Moves what `at`'s host holds from `before` to `after`; when that adds to it and a `room`
    /// is given, locks all of the host's shards and checks the sum against it first.
    async fn add_host_usage(
        &self,
        tx: &impl GenericClient,
        vm_id: &VmId,
        at: &HostHeld,
        before: Usage,
        after: Usage,
        room: Option<&HostRoom>,
    ) -> Result<()> {
        if before == after {
            return Ok(());
        }
        let added = after.minus(before);
        let removed = before.minus(after);
        if let Some(room) = room
            && !added.is_zero()
        {
            let cur = self
                .lock_shards(
                    tx,
                    "SELECT greatest(0, sum(vms))::text, greatest(0, sum(vcpus))::text,
                            greatest(0, sum(memory_mib))::text, count(*)
                     FROM (SELECT vms, vcpus, memory_mib FROM host_usage
                           WHERE provider = $1 AND host = $2 ORDER BY shard FOR UPDATE) AS u",
                    "INSERT INTO host_usage (provider, host, shard)
                     SELECT $1, $2, s::smallint FROM generate_series(0, $3::int - 1) AS s
                     ON CONFLICT (provider, host, shard) DO NOTHING",
                    &[&at.provider, &at.host],
                )
                .await?;
            room.check(&cur.plus(added).minus(removed), &added)?;
        }
        self.add_to_shard(
            tx,
            "INSERT INTO host_usage AS u (provider, host, shard, vms, vcpus, memory_mib)
             VALUES ($1, $2, $3, $4::text::numeric, $5::text::numeric, $6::text::numeric)
             ON CONFLICT (provider, host, shard) DO UPDATE SET
                vms = u.vms + excluded.vms,
                vcpus = u.vcpus + excluded.vcpus,
                memory_mib = u.memory_mib + excluded.memory_mib",
            &[&at.provider, &at.host],
            vm_id,
            (added, removed),
        )
        .await
    }

    /// Adds `added` less `removed` to `vm_id`'s usage shard with `upsert`, whose parameters are
    /// `key`, then the shard and the three differences.
    async fn add_to_shard(
        &self,
        tx: &impl GenericClient,
        upsert: &str,
        key: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        vm_id: &VmId,
        (added, removed): (Usage, Usage),
    ) -> Result<()> {
        let shard = usage_shard(vm_id);
        let (vms, vcpus, memory) = (
            delta(added.vms, removed.vms),
            delta(added.vcpus, removed.vcpus),
            delta(added.memory_mib, removed.memory_mib),
        );
        let mut params = key.to_vec();
        params.extend([
            &shard as &(dyn tokio_postgres::types::ToSql + Sync),
            &vms,
            &vcpus,
            &memory,
        ]);
        let st = tx
            .prepare_cached(upsert)
            .await
            .map_err(|e| self.db_err(e))?;
        tx.execute(&st, &params).await.map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Inserts a VM and returns it with the usage change its caller applies with
    /// [`PostgresStore::apply_usage`] as the transaction's last write.
    async fn insert_vm(&self, tx: &impl GenericClient, mut vm: Vm) -> Result<(Vm, UsageChange)> {
        vm.generation = 1;
        let change = UsageChange::new(&vm, None, Some(&vm));
        let st = tx
            .prepare_cached(
                "INSERT INTO vms (id, project, name, generation, doc, created_us, state, power)
                 VALUES ($1, $2, $3, 1, $4, $5, $6, $7)
                 ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let n = tx
            .execute(
                &st,
                &[
                    &vm.id.as_str(),
                    &vm.project.as_str(),
                    &vm.spec.name.as_str(),
                    &to_doc(&vm)?,
                    &vm.created_at.timestamp_micros(),
                    &text_of(&vm.desired)?,
                    &text_of(&vm.power)?,
                ],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        if n == 0 {
            // Which constraint refused it: the id or the name.
            let st = tx
                .prepare_cached("SELECT id FROM vms WHERE project = $1 AND name = $2")
                .await
                .map_err(|e| self.db_err(e))?;
            let other = tx
                .query_opt(&st, &[&vm.project.as_str(), &vm.spec.name.as_str()])
                .await
                .map_err(|e| self.db_err(e))?;
            return Err(match other {
                Some(row) => {
                    let other: String = self.col(&row, 0)?;
                    Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "a VM named `{}` already exists in project `{}` ({other})",
                            vm.spec.name, vm.project
                        ),
                    )
                    .with_field("name")
                }
                None => Error::new(
                    ErrorKind::Conflict,
                    format!("vm `{}` already exists", vm.id),
                ),
            });
        }
        Ok((vm, change))
    }

    /// Replaces a VM whose generation is `expected` and returns it with the usage change its
    /// caller applies with [`PostgresStore::apply_usage`] as the transaction's last write.
    async fn replace_vm(
        &self,
        tx: &impl GenericClient,
        mut vm: Vm,
        expected: u64,
    ) -> Result<(Vm, UsageChange)> {
        let st = tx
            .prepare_cached("SELECT generation, doc FROM vms WHERE id = $1 FOR UPDATE")
            .await
            .map_err(|e| self.db_err(e))?;
        let cur = tx
            .query_opt(&st, &[&vm.id.as_str()])
            .await
            .map_err(|e| self.db_err(e))?
            .ok_or_else(|| Error::not_found("vm", &vm.id))?;
        let cur = self.vm_of(&cur)?;
        if cur.generation != expected {
            return Err(cas_conflict("vm", &vm.id, expected, cur.generation));
        }
        if cur.project != vm.project || cur.spec.name != vm.spec.name {
            return Err(Error::internal("a VM's project and name never change"));
        }
        let change = UsageChange::new(&vm, Some(&cur), Some(&vm));
        vm.generation = expected + 1;
        let st = tx
            .prepare_cached(
                "UPDATE vms SET generation = $2, doc = $3, created_us = $4, state = $5, power = $6
                 WHERE id = $1",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        tx.execute(
            &st,
            &[
                &vm.id.as_str(),
                &to_db(vm.generation)?,
                &to_doc(&vm)?,
                &vm.created_at.timestamp_micros(),
                &text_of(&vm.desired)?,
                &text_of(&vm.power)?,
            ],
        )
        .await
        .map_err(|e| self.db_err(e))?;
        Ok((vm, change))
    }

    /// Reads a group row (`generation, doc`) without its members.
    fn group_of(&self, row: &Row) -> Result<ServerGroup> {
        let mut g: ServerGroup = self.doc(row, 1)?;
        g.generation = from_db(self.col::<i64>(row, 0)?)?;
        g.members = Vec::new();
        Ok(g)
    }

    /// Returns the members of group `id` with the `(provider, slot)` each is bound to (its
    /// target, or `cluster/member` as [`hcp_core::ProviderBinding::group_slot`]), by id.
    async fn group_members(
        &self,
        c: &impl GenericClient,
        id: &ServerGroupId,
    ) -> Result<Vec<(VmId, (String, String))>> {
        let st = c
            .prepare_cached(
                "SELECT id, coalesce(doc->'binding'->>'provider', ''),
                        coalesce(doc->'binding'->>'host', '') || coalesce('/' || (doc->'binding'->>'member_host'), '')
                 FROM vms WHERE doc->'spec'->>'server_group' = $1 ORDER BY id",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = c
            .query(&st, &[&id.as_str()])
            .await
            .map_err(|e| self.db_err(e))?;
        rows.iter()
            .map(|r| {
                Ok((
                    VmId::new(self.col::<String>(r, 0)?),
                    (self.col(r, 1)?, self.col(r, 2)?),
                ))
            })
            .collect()
    }

    /// Fills a group's members.
    async fn with_members(
        &self,
        c: &impl GenericClient,
        mut g: ServerGroup,
    ) -> Result<ServerGroup> {
        g.members = self
            .group_members(c, &g.id)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        Ok(g)
    }

    /// Checks, inside `tx`, that the leader lease `fence` names still holds with its token and
    /// has not run out, and keeps it from changing hands until `tx` ends (a shared row lock: a
    /// takeover's update waits for the duty's write to commit).
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] with code [`hcp_core::CODE_LEADERSHIP_LOST`] otherwise.
    async fn check_fence(
        &self,
        tx: &impl GenericClient,
        fence: &hcp_core::LeaderFence,
    ) -> Result<()> {
        let st = tx
            .prepare_cached(
                "SELECT 1 FROM leader_leases
                 WHERE name = $1 AND token = $2 AND expires_at > now() FOR SHARE",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let token = i64::try_from(fence.token).unwrap_or(i64::MAX);
        let held = tx
            .query_opt(&st, &[&fence.lease, &token])
            .await
            .map_err(|e| self.db_err(e))?;
        if held.is_none() {
            return Err(Error::new(
                ErrorKind::Conflict,
                "this process is no longer the leader: its lease moved on or ran out, so the duty's write was not made",
            )
            .with_code(hcp_core::CODE_LEADERSHIP_LOST)
            .with_detail(format!("lease `{}`, token {}", fence.lease, fence.token)));
        }
        Ok(())
    }

    /// Inserts or replaces a VM in one transaction, first checking `fence` when given.
    async fn write_vm(
        &self,
        vm: Vm,
        expected: Option<u64>,
        fence: Option<&hcp_core::LeaderFence>,
    ) -> Result<Vm> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.db_err(e))?;
        if let Some(f) = fence {
            self.check_fence(&tx, f).await?;
        }
        let (vm, change) = match expected {
            None => self.insert_vm(&tx, vm).await?,
            Some(g) => self.replace_vm(&tx, vm, g).await?,
        };
        self.apply_usage(&tx, &change, None, None).await?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        Ok(vm)
    }

    /// Locks the group a new VM joins and checks that the VM keeps its policy, inside `tx`.
    async fn check_group(&self, tx: &impl GenericClient, vm: &Vm) -> Result<()> {
        let Some(id) = &vm.spec.server_group else {
            return Ok(());
        };
        let st = tx
            .prepare_cached(
                "SELECT generation, doc FROM server_groups WHERE id = $1 AND project = $2 FOR UPDATE",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = tx
            .query_opt(&st, &[&id.as_str(), &vm.project.as_str()])
            .await
            .map_err(|e| self.db_err(e))?
            .ok_or_else(|| group_not_found(id))?;
        let group = self.group_of(&row)?;
        let members: Vec<(String, String)> = self
            .group_members(tx, id)
            .await?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        group.admits(&members, (&vm.binding.provider, &vm.binding.group_slot()))
    }

    async fn insert_job(&self, tx: &impl GenericClient, mut job: Job) -> Result<Job> {
        job.generation = 1;
        job.lease = None;
        let st = tx
            .prepare_cached(
                "INSERT INTO jobs (id, project, vm_id, state, terminal, finished_at, generation, doc)
                 VALUES ($1, $2, $3, $4, $5, $6, 1, $7) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let n = tx
            .execute(
                &st,
                &[
                    &job.id.as_str(),
                    &job.project.as_str(),
                    &job.vm_id.as_str(),
                    &text_of(&job.state)?,
                    &job.state.is_terminal(),
                    &job.finished_at,
                    &to_doc(&job)?,
                ],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("job `{}` already exists", job.id),
            ));
        }
        Ok(job)
    }

    /// Takes the idempotency key inside `tx`: `Ok(None)` when it is new (now held until the
    /// transaction ends), the earlier outcome when it was used with the same fingerprint.
    async fn take_key(
        &self,
        tx: &impl GenericClient,
        rec: &IdempotencyRecord,
    ) -> Result<Option<SubmitOutcome>> {
        let op = text_of(&rec.scope.operation)?;
        // A concurrent transaction inserting the same key makes this wait for its end: when it
        // commits, nothing is inserted and its record is read below; when it rolls back, this
        // one inserts.
        let st = tx
            .prepare_cached(
                "INSERT INTO idempotency (project, principal, operation, key, fingerprint, vm_id, job_id, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let n = tx
            .execute(
                &st,
                &[
                    &rec.scope.project.as_str(),
                    &rec.scope.principal.as_str(),
                    &op,
                    &rec.scope.key.as_str(),
                    &rec.fingerprint.as_str(),
                    &rec.vm_id.as_str(),
                    &rec.job_id.as_str(),
                    &rec.created_at,
                ],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        if n == 1 {
            return Ok(None);
        }
        let prev = self.read_key(tx, &rec.scope).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::Conflict,
                "a concurrent request with this idempotency key was purged; retry",
            )
            .temporary()
        })?;
        if prev.fingerprint == rec.fingerprint {
            return Ok(Some(SubmitOutcome::Replayed {
                vm_id: prev.vm_id,
                job_id: prev.job_id,
            }));
        }
        Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "idempotency key `{}` was already used for a different {} request",
                rec.scope.key, rec.scope.operation
            ),
        )
        .with_code(CODE_IDEMPOTENCY_KEY_REUSED)
        .with_field("idempotency_key"))
    }

    async fn read_key(
        &self,
        c: &impl GenericClient,
        scope: &IdempotencyScope,
    ) -> Result<Option<IdempotencyRecord>> {
        let st = c
            .prepare_cached(
                "SELECT fingerprint, vm_id, job_id, created_at FROM idempotency
                 WHERE project = $1 AND principal = $2 AND operation = $3 AND key = $4",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = c
            .query_opt(
                &st,
                &[
                    &scope.project.as_str(),
                    &scope.principal.as_str(),
                    &text_of(&scope.operation)?,
                    &scope.key.as_str(),
                ],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|row| {
            Ok(IdempotencyRecord {
                scope: scope.clone(),
                fingerprint: self.col(&row, 0)?,
                vm_id: VmId::new(self.col::<String>(&row, 1)?),
                job_id: JobId::new(self.col::<String>(&row, 2)?),
                created_at: self.col(&row, 3)?,
            })
        })
        .transpose()
    }
}

/// A VM write's change to its project's usage and its host's, applied by
/// [`PostgresStore::apply_usage`].
struct UsageChange {
    project: ProjectId,
    vm_id: VmId,
    before: Usage,
    after: Usage,
    /// The host the VM was bound to and what it held there; `None` for an insert.
    host_before: Option<HostHeld>,
    /// The host the VM is bound to and what it holds there; `None` for a removal.
    host_after: Option<HostHeld>,
}

/// What a VM holds on the host it is bound to ([`Usage::on_host`]).
struct HostHeld {
    provider: String,
    host: String,
    held: Usage,
}

impl HostHeld {
    fn of(vm: &Vm) -> Self {
        HostHeld {
            provider: vm.binding.provider.to_string(),
            host: vm.binding.host.to_string(),
            held: Usage::on_host(vm),
        }
    }
}

impl UsageChange {
    /// Returns the change of a write to `vm` from `before` (`None`: an insert) to `after`
    /// (`None`: a removal).
    fn new(vm: &Vm, before: Option<&Vm>, after: Option<&Vm>) -> Self {
        UsageChange {
            project: vm.project.clone(),
            vm_id: vm.id.clone(),
            before: before.map(Usage::of).unwrap_or_default(),
            after: after.map(Usage::of).unwrap_or_default(),
            host_before: before.map(HostHeld::of),
            host_after: after.map(HostHeld::of),
        }
    }
}

/// Renders a difference of two sums for a `numeric` column.
fn delta(added: u128, removed: u128) -> String {
    if added >= removed {
        (added - removed).to_string()
    } else {
        format!("-{}", removed - added)
    }
}

/// The usage shard a VM's changes go to: spread by its id, the same for every write to it.
fn usage_shard(vm_id: &VmId) -> i16 {
    let h = vm_id.as_str().bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    // The remainder is below USAGE_SHARDS, so it fits.
    i16::try_from(h % USAGE_SHARDS.unsigned_abs() as u32).unwrap_or(0)
}

/// Renders an error with its sources (`error connecting to server: Connection refused`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = s.source();
    }
    text
}

fn cas_conflict(what: &str, id: &dyn fmt::Display, expected: u64, actual: u64) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!(
            "{what} `{id}` changed concurrently (expected generation {expected}, found {actual})"
        ),
    )
    .temporary()
}

fn to_doc<T: Serialize>(t: &T) -> Result<serde_json::Value> {
    serde_json::to_value(t).map_err(|e| Error::internal(format!("cannot encode a record: {e}")))
}

/// Returns the serde name of an enum value (`PENDING`, `create_vm`, ...).
fn text_of<T: Serialize>(t: &T) -> Result<String> {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(Error::internal("an enum value does not encode as text")),
    }
}

fn to_db(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::internal(format!("{n} does not fit the database")))
}

fn from_db(n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| Error::internal(format!("a stored number is negative: {n}")))
}

fn limit_of(page: &PageRequest) -> i64 {
    // clamped_limit is at most PageRequest::MAX_LIMIT, far below i64::MAX.
    i64::try_from(page.clamped_limit()).unwrap_or(1000)
}

impl PostgresStore {
    /// [`Store::append_logs_batch`] in one statement (so one commit): locks the jobs' rows in id
    /// order (so two writers never wait on each other in a cycle), takes each job's next numbers
    /// from its counter, inserts the lines numbered from there and trims only the jobs whose log
    /// passed the limit.
    async fn write_log_batch(&self, batch: LogBatch) -> Result<Vec<Result<Vec<JobLogLine>>>> {
        let too_many = || Error::internal("too many log lines");
        // Lines per job over the whole batch (a job may come in several entries), and each
        // line's place in its job's share of the batch.
        let mut added: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        let (mut line_jobs, mut places, mut docs) = (Vec::new(), Vec::new(), Vec::new());
        for (id, lines) in &batch {
            let count = added.entry(id.as_str()).or_insert(0);
            for (at, entry) in lines {
                // Numbered in the statement: the document's `seq` is set there.
                let line = JobLogLine::from_entry(0, *at, entry.clone());
                line_jobs.push(id.as_str());
                places.push(*count);
                docs.push(to_doc(&line)?);
                *count = count.checked_add(1).ok_or_else(too_many)?;
            }
        }
        let ids: Vec<&str> = added.keys().copied().collect();
        let counts: Vec<i64> = added.values().copied().collect();
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "WITH locked AS (
                     SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE
                 ), bumped AS (
                     UPDATE jobs SET next_log_seq = jobs.next_log_seq + t.n
                     FROM unnest($1::text[], $2::bigint[]) AS t(id, n)
                     WHERE jobs.id = t.id AND jobs.id IN (SELECT id FROM locked)
                     RETURNING jobs.id, jobs.next_log_seq - t.n AS first,
                               jobs.next_log_seq - $6::bigint AS keep_from
                 ), added AS (
                     INSERT INTO job_logs (job_id, seq, doc)
                     SELECT l.job_id, b.first + l.place,
                            jsonb_set(l.doc, '{seq}', to_jsonb(b.first + l.place))
                     FROM unnest($3::text[], $4::bigint[], $5::jsonb[]) AS l(job_id, place, doc)
                     JOIN bumped b ON b.id = l.job_id
                     WHERE b.first + l.place >= b.keep_from
                 ), trimmed AS (
                     DELETE FROM job_logs d USING bumped b
                     WHERE b.keep_from > 1 AND d.job_id = b.id AND d.seq < b.keep_from
                 )
                 SELECT id, first FROM bumped",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = c
            .query(
                &st,
                &[
                    &ids,
                    &counts,
                    &line_jobs,
                    &places,
                    &docs,
                    &self.max_log_lines,
                ],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let mut next: HashMap<String, i64> = HashMap::with_capacity(rows.len());
        for row in &rows {
            next.insert(self.col(row, 0)?, self.col(row, 1)?);
        }
        let mut out = Vec::with_capacity(batch.len());
        for (id, lines) in batch {
            let Some(seq) = next.get_mut(id.as_str()) else {
                out.push(Err(Error::not_found("job", &id)));
                continue;
            };
            let mut written = Vec::with_capacity(lines.len());
            for (at, entry) in lines {
                written.push(JobLogLine::from_entry(from_db(*seq)?, at, entry));
                *seq = seq.checked_add(1).ok_or_else(too_many)?;
            }
            out.push(Ok(written));
        }
        Ok(out)
    }

    /// [`Store::append_events`] in one transaction: one bump of the counter row for the whole
    /// batch, and the events with their outbox entries in one statement, so an event is never
    /// stored without its entry.
    async fn write_events(&self, mut events: Vec<Event>) -> Result<Vec<Arc<Event>>> {
        let n = i64::try_from(events.len()).map_err(|_| Error::internal("too many events"))?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.db_err(e))?;
        let st = tx
            .prepare_cached(
                "UPDATE event_counter SET next_seq = next_seq + $1 RETURNING next_seq - $1",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = tx.query_one(&st, &[&n]).await.map_err(|e| self.db_err(e))?;
        let first: i64 = self.col(&row, 0)?;
        let mut seqs = Vec::with_capacity(events.len());
        let mut docs = Vec::with_capacity(events.len());
        for (i, event) in events.iter_mut().enumerate() {
            let seq = first
                .checked_add(i64::try_from(i).map_err(|_| Error::internal("too many events"))?)
                .ok_or_else(|| Error::internal("the event counter overflowed"))?;
            event.seq = from_db(seq)?;
            seqs.push(seq);
            docs.push(to_doc(&*event)?);
        }
        let projects: Vec<Option<&str>> = events
            .iter()
            .map(|e| e.project.as_ref().map(ProjectId::as_str))
            .collect();
        let vms: Vec<Option<&str>> = events
            .iter()
            .map(|e| e.vm_id.as_ref().map(VmId::as_str))
            .collect();
        let ats: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
        let st = tx
            .prepare_cached(
                "WITH e AS (
                     INSERT INTO events (seq, project, vm_id, doc, at)
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[],
                                          $5::timestamptz[])
                     RETURNING seq
                 )
                 INSERT INTO event_outbox (seq) SELECT seq FROM e",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        tx.execute(&st, &[&seqs, &projects, &vms, &docs, &ats])
            .await
            .map_err(|e| self.db_err(e))?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        Ok(events.into_iter().map(Arc::new).collect())
    }

    /// Replaces a job when its generation is `expected` and, with `token`, while its stored lease
    /// carries that fencing token: [`Store::update_job`] and [`Store::update_job_fenced`]. One
    /// statement, so the token check, the compare and the swap are atomic; the stored lease is
    /// kept and returned on the job.
    async fn write_job(&self, mut job: Job, expected: u64, token: Option<u64>) -> Result<Job> {
        let c = self.client().await?;
        job.generation = expected
            .checked_add(1)
            .ok_or_else(|| Error::internal("a job's generation overflowed"))?;
        job.lease = None;
        let fence = token.map(to_db).transpose()?;
        let st = c
            .prepare_cached(
                "UPDATE jobs SET generation = $2, state = $3, terminal = $4, finished_at = $5, doc = $6,
                        lease_expires_at = CASE WHEN $4 THEN least(lease_expires_at, clock_timestamp())
                                                ELSE lease_expires_at END
                 WHERE id = $1 AND generation = $7
                   AND ($8::bigint IS NULL OR (fencing_token = $8 AND lease_holder IS NOT NULL))
                 RETURNING lease_holder, lease_expires_at, fencing_token",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = c
            .query_opt(
                &st,
                &[
                    &job.id.as_str(),
                    &to_db(job.generation)?,
                    &text_of(&job.state)?,
                    &job.state.is_terminal(),
                    &job.finished_at,
                    &to_doc(&job)?,
                    &to_db(expected)?,
                    &fence,
                ],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        if let Some(row) = row {
            job.lease = self.lease_of(&row, 0)?;
            return Ok(job);
        }
        let st = c
            .prepare_cached(
                "SELECT generation, fencing_token, lease_holder IS NOT NULL FROM jobs WHERE id = $1",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let Some(row) = c
            .query_opt(&st, &[&job.id.as_str()])
            .await
            .map_err(|e| self.db_err(e))?
        else {
            return Err(Error::not_found("job", &job.id));
        };
        if let Some(token) = token {
            let held: bool = self.col(&row, 2)?;
            if !held || from_db(self.col(&row, 1)?)? != token {
                return Err(lease_lost(&job.id, token));
            }
        }
        Err(cas_conflict(
            "job",
            &job.id,
            expected,
            from_db(self.col(&row, 0)?)?,
        ))
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "PostgreSQL"
    }

    fn durable(&self) -> bool {
        true
    }

    async fn submit(&self, submission: Submission) -> Result<SubmitOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.db_err(e))?;
        if let Some(f) = &submission.fence {
            self.check_fence(&tx, f).await?;
        }
        if let Some(rec) = &submission.idempotency
            && let Some(done) = self.take_key(&tx, rec).await?
        {
            return Ok(done);
        }
        let quota = submission.quota.as_ref();
        if let VmWrite::Insert(vm) = &submission.vm {
            self.check_group(&tx, vm).await?;
        }
        let (vm, change) = match submission.vm {
            VmWrite::Insert(vm) => self.insert_vm(&tx, vm).await?,
            VmWrite::Update { vm, expected } => self.replace_vm(&tx, vm, expected).await?,
        };
        let job = self.insert_job(&tx, submission.job).await?;
        // Last, so the usage rows stay locked only for the commit.
        self.apply_usage(&tx, &change, quota, submission.room.as_ref())
            .await?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        Ok(SubmitOutcome::Accepted {
            vm_id: vm.id,
            job_id: job.id,
        })
    }

    async fn usage(&self, project: &ProjectId) -> Result<Usage> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT greatest(0, sum(vms))::text, greatest(0, sum(vcpus))::text,
                        greatest(0, sum(memory_mib))::text
                 FROM project_usage WHERE project = $1",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = c
            .query_one(&st, &[&project.as_str()])
            .await
            .map_err(|e| self.db_err(e))?;
        self.usage_of(&row)
    }

    async fn host_usage(&self, provider: &str, host: &str) -> Result<Usage> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT greatest(0, sum(vms))::text, greatest(0, sum(vcpus))::text,
                        greatest(0, sum(memory_mib))::text
                 FROM host_usage WHERE provider = $1 AND host = $2",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = c
            .query_one(&st, &[&provider, &host])
            .await
            .map_err(|e| self.db_err(e))?;
        self.usage_of(&row)
    }

    async fn idempotency(&self, scope: &IdempotencyScope) -> Result<Option<IdempotencyRecord>> {
        let c = self.client().await?;
        self.read_key(&c, scope).await
    }

    async fn get_vm(&self, scope: &Scope, id: &VmId) -> Result<Option<Vm>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT generation, doc FROM vms WHERE id = $1 AND ($2::text[] IS NULL OR project = ANY($2))",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = c
            .query_opt(&st, &[&id.as_str(), &scope_project(scope)])
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| self.vm_of(&r)).transpose()
    }

    async fn find_vm_by_name(&self, project: &ProjectId, name: &str) -> Result<Option<Vm>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT generation, doc FROM vms WHERE project = $1 AND name = $2")
            .await
            .map_err(|e| self.db_err(e))?;
        let row = c
            .query_opt(&st, &[&project.as_str(), &name])
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| self.vm_of(&r)).transpose()
    }

    async fn list_vms(&self, scope: &Scope, page: &PageRequest) -> Result<Page<Vm>> {
        let c = self.client().await?;
        let limit = limit_of(page);
        let project = ProjectCondition::of(scope);
        let st = c
            .prepare_cached(&list_vms_sql(&project))
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = c
            .query(
                &st,
                &[project.value(), &page.cursor.as_deref(), &(limit + 1)],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows.iter().take(page.clamped_limit()) {
            items.push(self.vm_of(r)?);
        }
        let next = (rows.len() > items.len())
            .then(|| items.last().map(|v| v.id.to_string()))
            .flatten();
        Ok(Page { items, next })
    }

    async fn list_vms_matching(
        &self,
        scope: &Scope,
        filter: &VmFilter,
        sort: VmSort,
        page: &PageRequest,
    ) -> Result<Page<Vm>> {
        let after = page
            .cursor
            .as_deref()
            .map(|c| sort.parse_cursor(c))
            .transpose()?;
        if filter.contradicts_itself() {
            return Ok(Page {
                items: vec![],
                next: None,
            });
        }
        let tags = (!filter.tags.is_empty()).then(|| {
            serde_json::Value::Object(
                filter
                    .tags
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
            )
        });
        let state = filter.state.map(|s| text_of(&s)).transpose()?;
        let power = filter.power.map(|p| text_of(&p)).transpose()?;
        let after_id = after.as_ref().map(|a| a.id.as_str());
        let (after_name, after_us) = match after.as_ref().map(|a| &a.key) {
            Some(SortValue::Text(n)) => (Some(n.as_str()), None),
            Some(SortValue::Micros(us)) => (None, Some(*us)),
            _ => (None, None),
        };
        let project = ProjectCondition::of(scope);
        let sql = list_vms_matching_sql(&project, sort);
        let limit = limit_of(page);
        let c = self.client().await?;
        let st = c
            .prepare_typed_cached(&sql, &list_vms_matching_types(&project))
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = c
            .query(
                &st,
                &[
                    project.value(),
                    &filter.name_prefix.as_deref(),
                    &tags,
                    &state,
                    &power,
                    &(limit + 1),
                    &after_id,
                    &after_name,
                    &after_us,
                ],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let mut items = Vec::with_capacity(rows.len());
        let mut last = None;
        for r in rows.iter().take(page.clamped_limit()) {
            items.push(self.vm_of(r)?);
            last = Some(r);
        }
        let next = match last {
            Some(r) if rows.len() > items.len() => {
                let id: String = self.col(r, 2)?;
                let key = match sort.key {
                    VmSortKey::Id => SortValue::None,
                    VmSortKey::Name => SortValue::Text(self.col(r, 3)?),
                    VmSortKey::CreatedAt => SortValue::Micros(self.col(r, 4)?),
                };
                Some(sort.cursor(&VmPosition {
                    key,
                    id: VmId::new(id),
                }))
            }
            _ => None,
        };
        Ok(Page { items, next })
    }

    async fn put_vm(&self, vm: Vm, expected: Option<u64>) -> Result<Vm> {
        self.write_vm(vm, expected, None).await
    }

    async fn put_vm_fenced(
        &self,
        vm: Vm,
        expected: Option<u64>,
        fence: Option<&hcp_core::LeaderFence>,
    ) -> Result<Vm> {
        self.write_vm(vm, expected, fence).await
    }

    async fn remove_vm(&self, id: &VmId, expected: u64) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.db_err(e))?;
        let st = tx
            .prepare_cached("SELECT generation, doc FROM vms WHERE id = $1 FOR UPDATE")
            .await
            .map_err(|e| self.db_err(e))?;
        let cur = tx
            .query_opt(&st, &[&id.as_str()])
            .await
            .map_err(|e| self.db_err(e))?
            .ok_or_else(|| Error::not_found("vm", id))?;
        let cur = self.vm_of(&cur)?;
        if cur.generation != expected {
            return Err(cas_conflict("vm", id, expected, cur.generation));
        }
        let st = tx
            .prepare_cached("DELETE FROM vms WHERE id = $1")
            .await
            .map_err(|e| self.db_err(e))?;
        tx.execute(&st, &[&id.as_str()])
            .await
            .map_err(|e| self.db_err(e))?;
        let change = UsageChange::new(&cur, Some(&cur), None);
        self.apply_usage(&tx, &change, None, None).await?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        Ok(())
    }

    async fn get_job(&self, scope: &Scope, id: &JobId) -> Result<Option<Job>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT generation, doc, lease_holder, lease_expires_at, fencing_token FROM jobs
                 WHERE id = $1 AND ($2::text[] IS NULL OR project = ANY($2))",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = c
            .query_opt(&st, &[&id.as_str(), &scope_project(scope)])
            .await
            .map_err(|e| self.db_err(e))?;
        row.map(|r| self.job_of(&r)).transpose()
    }

    async fn list_jobs(
        &self,
        scope: &Scope,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<Page<Job>> {
        let c = self.client().await?;
        let limit = limit_of(page);
        let state = filter.state.map(|s| text_of(&s)).transpose()?;
        let project = ProjectCondition::of(scope);
        let st = c
            .prepare_cached(&list_jobs_sql(&project))
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = c
            .query(
                &st,
                &[
                    project.value(),
                    &page.cursor.as_deref(),
                    &filter.vm_id.as_ref().map(VmId::as_str),
                    &state.as_deref(),
                    &(limit + 1),
                ],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows.iter().take(page.clamped_limit()) {
            items.push(self.job_of(r)?);
        }
        let next = (rows.len() > items.len())
            .then(|| items.last().map(|j| j.id.to_string()))
            .flatten();
        Ok(Page { items, next })
    }

    async fn unfinished_jobs(&self) -> Result<Vec<Job>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT generation, doc, lease_holder, lease_expires_at, fencing_token FROM jobs
                 WHERE NOT terminal ORDER BY id",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = c.query(&st, &[]).await.map_err(|e| self.db_err(e))?;
        rows.iter().map(|r| self.job_of(r)).collect()
    }

    async fn unfinished_jobs_of(&self, vm_id: &VmId) -> Result<Vec<Job>> {
        let c = self.client().await?;
        // Served by the partial index jobs_vm_unfinished.
        let st = c
            .prepare_cached(
                "SELECT generation, doc, lease_holder, lease_expires_at, fencing_token FROM jobs
                 WHERE vm_id = $1 AND NOT terminal ORDER BY id",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = c
            .query(&st, &[&vm_id.as_str()])
            .await
            .map_err(|e| self.db_err(e))?;
        rows.iter().map(|r| self.job_of(r)).collect()
    }

    async fn update_job(&self, job: Job, expected: u64) -> Result<Job> {
        self.write_job(job, expected, None).await
    }

    async fn append_logs(
        &self,
        id: &JobId,
        lines: Vec<(DateTime<Utc>, LogEntry)>,
    ) -> Result<Vec<JobLogLine>> {
        self.append_logs_batch(vec![(id.clone(), lines)])
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("a log batch of one gave no result")))
    }

    async fn append_logs_batch(&self, batch: LogBatch) -> Vec<Result<Vec<JobLogLine>>> {
        if batch.is_empty() {
            return Vec::new();
        }
        let n = batch.len();
        match self.write_log_batch(batch).await {
            Ok(out) => out,
            Err(e) => vec![Err(e); n],
        }
    }

    async fn job_logs(&self, id: &JobId, after: u64) -> Result<Vec<JobLogLine>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT 1 FROM jobs WHERE id = $1")
            .await
            .map_err(|e| self.db_err(e))?;
        if c.query_opt(&st, &[&id.as_str()])
            .await
            .map_err(|e| self.db_err(e))?
            .is_none()
        {
            return Err(Error::not_found("job", id));
        }
        let st = c
            .prepare_cached("SELECT doc FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq")
            .await
            .map_err(|e| self.db_err(e))?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = c
            .query(&st, &[&id.as_str(), &after])
            .await
            .map_err(|e| self.db_err(e))?;
        rows.iter().map(|r| self.doc(r, 0)).collect()
    }

    async fn append_event(&self, event: Event) -> Result<Arc<Event>> {
        self.append_events(vec![event])
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("an event batch of one gave no result")))
    }

    async fn append_events(&self, events: Vec<Event>) -> Vec<Result<Arc<Event>>> {
        if events.is_empty() {
            return Vec::new();
        }
        let n = events.len();
        match self.write_events(events).await {
            Ok(out) => out.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e); n],
        }
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Arc<Event>>> {
        let c = self.client().await?;
        let limit = if filter.limit == 0 {
            PageRequest::MAX_LIMIT
        } else {
            filter.limit
        };
        let st = c
            .prepare_cached(
                "SELECT seq, doc FROM events
                 WHERE seq > $1 AND ($2::text IS NULL OR project = $2) AND ($3::text IS NULL OR vm_id = $3)
                 ORDER BY seq LIMIT $4",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = c
            .query(
                &st,
                &[
                    &i64::try_from(filter.after).unwrap_or(i64::MAX),
                    &filter.project.as_ref().map(ProjectId::as_str),
                    &filter.vm_id.as_ref().map(VmId::as_str),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        rows.iter()
            .map(|r| {
                let mut e: Event = self.doc(r, 1)?;
                e.seq = from_db(self.col(r, 0)?)?;
                Ok(Arc::new(e))
            })
            .collect()
    }

    async fn purge(
        &self,
        jobs_before: DateTime<Utc>,
        keys_before: DateTime<Utc>,
        fence: Option<&hcp_core::LeaderFence>,
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.db_err(e))?;
        if let Some(f) = fence {
            self.check_fence(&tx, f).await?;
        }
        // Logs go with their jobs (ON DELETE CASCADE).
        tx.execute("DELETE FROM jobs WHERE finished_at < $1", &[&jobs_before])
            .await
            .map_err(|e| self.db_err(e))?;
        tx.execute(
            "DELETE FROM idempotency WHERE created_at < $1",
            &[&keys_before],
        )
        .await
        .map_err(|e| self.db_err(e))?;
        tx.execute(
            "DELETE FROM events WHERE seq < (SELECT next_seq FROM event_counter) - $1",
            &[&self.max_events],
        )
        .await
        .map_err(|e| self.db_err(e))?;
        tx.commit().await.map_err(|e| self.db_err(e))
    }

    // --- The audit stream: retention by time window and the publishing outbox. ---

    async fn purge_events(
        &self,
        before: DateTime<Utc>,
        fence: Option<&hcp_core::LeaderFence>,
    ) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.db_err(e))?;
        if let Some(f) = fence {
            self.check_fence(&tx, f).await?;
        }
        // Outbox entries go with their events (ON DELETE CASCADE).
        let st = tx
            .prepare_cached("DELETE FROM events WHERE at < $1")
            .await
            .map_err(|e| self.db_err(e))?;
        let n = tx
            .execute(&st, &[&before])
            .await
            .map_err(|e| self.db_err(e))?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        Ok(n)
    }

    async fn unpublished_events(&self, limit: usize) -> Result<Vec<Arc<Event>>> {
        let c = self.client().await?;
        let limit = i64::try_from(limit.clamp(1, PageRequest::MAX_LIMIT)).unwrap_or(1);
        let st = c
            .prepare_cached(
                "SELECT e.seq, e.doc FROM event_outbox o JOIN events e ON e.seq = o.seq
                 ORDER BY o.seq LIMIT $1",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = c.query(&st, &[&limit]).await.map_err(|e| self.db_err(e))?;
        rows.iter()
            .map(|r| {
                let mut e: Event = self.doc(r, 1)?;
                e.seq = from_db(self.col(r, 0)?)?;
                Ok(Arc::new(e))
            })
            .collect()
    }

    async fn mark_published(&self, seqs: &[u64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        // Numbers past i64 were never stored, so they are skipped like any unknown number.
        let seqs: Vec<i64> = seqs.iter().filter_map(|s| i64::try_from(*s).ok()).collect();
        let c = self.client().await?;
        let st = c
            .prepare_cached("DELETE FROM event_outbox WHERE seq = ANY($1)")
            .await
            .map_err(|e| self.db_err(e))?;
        c.execute(&st, &[&seqs]).await.map_err(|e| self.db_err(e))?;
        Ok(())
    }

    async fn create_server_group(&self, group: ServerGroup) -> Result<ServerGroup> {
        let c = self.client().await?;
        let group = ServerGroup {
            generation: 1,
            members: Vec::new(),
            ..group
        };
        let st = c
            .prepare_cached(
                "INSERT INTO server_groups (id, project, name, generation, doc)
                 VALUES ($1, $2, $3, 1, $4) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let n = c
            .execute(
                &st,
                &[
                    &group.id.as_str(),
                    &group.project.as_str(),
                    &group.name.as_str(),
                    &to_doc(&group)?,
                ],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        if n == 0 {
            let st = c
                .prepare_cached("SELECT 1 FROM server_groups WHERE project = $1 AND name = $2")
                .await
                .map_err(|e| self.db_err(e))?;
            let taken = c
                .query_opt(&st, &[&group.project.as_str(), &group.name.as_str()])
                .await
                .map_err(|e| self.db_err(e))?
                .is_some();
            return Err(if taken {
                group_name_taken(&group.project, &group.name)
            } else {
                Error::new(
                    ErrorKind::Conflict,
                    format!("server group `{}` already exists", group.id),
                )
            });
        }
        Ok(group)
    }

    async fn get_server_group(
        &self,
        scope: &Scope,
        id: &ServerGroupId,
    ) -> Result<Option<ServerGroup>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT generation, doc FROM server_groups
                 WHERE id = $1 AND ($2::text[] IS NULL OR project = ANY($2))",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = c
            .query_opt(&st, &[&id.as_str(), &scope_project(scope)])
            .await
            .map_err(|e| self.db_err(e))?;
        match row {
            Some(r) => {
                let g = self.group_of(&r)?;
                Ok(Some(self.with_members(&c, g).await?))
            }
            None => Ok(None),
        }
    }

    async fn list_server_groups(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<ServerGroup>> {
        let c = self.client().await?;
        let limit = limit_of(page);
        let project = ProjectCondition::of(scope);
        let st = c
            .prepare_cached(&list_server_groups_sql(&project))
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = c
            .query(
                &st,
                &[project.value(), &page.cursor.as_deref(), &(limit + 1)],
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows.iter().take(page.clamped_limit()) {
            let g = self.group_of(r)?;
            items.push(self.with_members(&c, g).await?);
        }
        let next = (rows.len() > items.len())
            .then(|| items.last().map(|g| g.id.to_string()))
            .flatten();
        Ok(Page { items, next })
    }

    async fn delete_server_group(&self, scope: &Scope, id: &ServerGroupId) -> Result<ServerGroup> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.db_err(e))?;
        let st = tx
            .prepare_cached(
                "SELECT generation, doc FROM server_groups
                 WHERE id = $1 AND ($2::text[] IS NULL OR project = ANY($2)) FOR UPDATE",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = tx
            .query_opt(&st, &[&id.as_str(), &scope_project(scope)])
            .await
            .map_err(|e| self.db_err(e))?
            .ok_or_else(|| Error::not_found("server group", id))?;
        let group = self.group_of(&row)?;
        let group = self.with_members(&tx, group).await?;
        if !group.members.is_empty() {
            return Err(group_not_empty(&group, group.members.len()));
        }
        let st = tx
            .prepare_cached("DELETE FROM server_groups WHERE id = $1")
            .await
            .map_err(|e| self.db_err(e))?;
        tx.execute(&st, &[&id.as_str()])
            .await
            .map_err(|e| self.db_err(e))?;
        tx.commit().await.map_err(|e| self.db_err(e))?;
        Ok(group)
    }

    // ---- Job leases -------------------------------------------------------------------------
    // A claim locks the unfinished jobs of the job's VM in id order (so claims on one VM
    // serialize) and grants only the oldest of them; the lapse check uses the database's clock.

    async fn claim_job(
        &self,
        id: &JobId,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<Job>> {
        let c = self.client().await?;
        // One statement: lock the VM's unfinished jobs in id order, and take the lease only when
        // this job is the oldest of them and its lease is free, lapsed or already the holder's.
        // Under READ COMMITTED a row locked after a wait is checked again, so a job that ended
        // meanwhile no longer counts.
        let st = c
            .prepare_cached(
                "WITH target AS (
                     SELECT vm_id FROM jobs WHERE id = $1
                 ), queue AS (
                     SELECT j.id FROM jobs j JOIN target t ON j.vm_id = t.vm_id
                     WHERE NOT j.terminal ORDER BY j.id FOR UPDATE OF j
                 ), claimed AS (
                     UPDATE jobs SET lease_holder = $2, lease_expires_at = $3,
                            fencing_token = fencing_token + 1, generation = generation + 1
                     WHERE id = $1 AND NOT terminal
                       AND (lease_holder IS NULL OR lease_expires_at <= clock_timestamp()
                            OR lease_holder = $2)
                       AND (SELECT min(id) FROM queue) = $1
                     RETURNING generation, doc, lease_holder, lease_expires_at, fencing_token
                 )
                 SELECT c.generation, c.doc, c.lease_holder, c.lease_expires_at, c.fencing_token,
                        (SELECT count(*) FROM target)
                 FROM (SELECT 1) AS one LEFT JOIN claimed c ON true",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = c
            .query_one(&st, &[&id.as_str(), &holder, &until])
            .await
            .map_err(|e| self.db_err(e))?;
        let found: i64 = self.col(&row, 5)?;
        if found == 0 {
            return Err(Error::not_found("job", id));
        }
        let claimed: Option<i64> = self.col(&row, 0)?;
        claimed.map(|_| self.job_of(&row)).transpose()
    }

    async fn renew_lease(
        &self,
        id: &JobId,
        holder: &str,
        token: u64,
        until: DateTime<Utc>,
    ) -> Result<JobLease> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "UPDATE jobs SET lease_expires_at = $4
                 WHERE id = $1 AND lease_holder = $2 AND fencing_token = $3 AND NOT terminal
                 RETURNING lease_holder, lease_expires_at, fencing_token",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = c
            .query_opt(&st, &[&id.as_str(), &holder, &to_db(token)?, &until])
            .await
            .map_err(|e| self.db_err(e))?;
        match row {
            Some(row) => self.lease_of(&row, 0)?.ok_or_else(|| lease_lost(id, token)),
            None => Err(self.lease_refusal(&c, id, token).await),
        }
    }

    async fn release_lease(&self, id: &JobId, holder: &str, token: u64) -> Result<()> {
        let c = self.client().await?;
        // A lease that already lapsed (as a job's ending write lapses it) is left unwritten, so
        // releasing it costs no write and no commit flush.
        let st = c
            .prepare_cached(
                "WITH held AS (
                     SELECT id FROM jobs WHERE id = $1 AND lease_holder = $2 AND fencing_token = $3
                 ), released AS (
                     UPDATE jobs SET lease_expires_at = clock_timestamp()
                     WHERE id IN (SELECT id FROM held) AND lease_expires_at > clock_timestamp()
                     RETURNING id
                 )
                 SELECT count(*) FROM held",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let row = c
            .query_one(&st, &[&id.as_str(), &holder, &to_db(token)?])
            .await
            .map_err(|e| self.db_err(e))?;
        let held: i64 = self.col(&row, 0)?;
        if held == 1 {
            Ok(())
        } else {
            Err(self.lease_refusal(&c, id, token).await)
        }
    }

    async fn update_job_fenced(&self, job: Job, expected: u64, token: u64) -> Result<Job> {
        self.write_job(job, expected, Some(token)).await
    }

    async fn claimable_jobs(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Job>> {
        let c = self.client().await?;
        let limit = i64::try_from(limit.min(PageRequest::MAX_LIMIT)).unwrap_or(1000);
        let st = c
            .prepare_cached(
                "SELECT generation, doc, lease_holder, lease_expires_at, fencing_token FROM jobs j
                 WHERE NOT terminal AND (lease_expires_at IS NULL OR lease_expires_at <= $1)
                   AND NOT EXISTS (SELECT 1 FROM jobs o
                                   WHERE o.vm_id = j.vm_id AND NOT o.terminal AND o.id < j.id)
                 ORDER BY id LIMIT $2",
            )
            .await
            .map_err(|e| self.db_err(e))?;
        let rows = c
            .query(&st, &[&now, &limit])
            .await
            .map_err(|e| self.db_err(e))?;
        rows.iter().map(|r| self.job_of(r)).collect()
    }
}

impl PostgresStore {
    /// Explains why a lease write matched no row: the job is gone, or the lease is not the
    /// caller's.
    async fn lease_refusal(&self, c: &impl GenericClient, id: &JobId, token: u64) -> Error {
        let exists = match c.prepare_cached("SELECT 1 FROM jobs WHERE id = $1").await {
            Ok(st) => c.query_opt(&st, &[&id.as_str()]).await,
            Err(e) => Err(e),
        };
        match exists {
            Ok(None) => Error::not_found("job", id),
            Ok(Some(_)) => lease_lost(id, token),
            Err(e) => self.db_err(e),
        }
    }
}

/// The projects a scope sees, as the `text[]` parameter of a query (`None`: every project).
fn scope_project(scope: &Scope) -> Option<Vec<&str>> {
    match scope {
        Scope::Project(p) => Some(vec![p.as_str()]),
        Scope::Projects(ps) => Some(ps.iter().map(ProjectId::as_str).collect()),
        Scope::All => None,
    }
}

/// The statement of [`Store::list_vms`]: `$1` the scope's projects, `$2` the cursor (the last
/// id seen), `$3` the limit.
fn list_vms_sql(project: &ProjectCondition) -> String {
    project.select(
        "generation, doc, id",
        "vms",
        "($2::text IS NULL OR id > $2)",
        "id",
        "$3",
    )
}

/// The statement of [`Store::list_vms_matching`] in `sort`'s order: `$1` the scope's projects,
/// `$2` the name prefix, `$3` the tags, `$4` the state, `$5` the power, `$6` the limit, `$7`,
/// `$8` and `$9` the cursor's id, name and creation time. It is one of a fixed set of texts
/// chosen by the scope's kind and the sort; every value is a parameter.
fn list_vms_matching_sql(project: &ProjectCondition, sort: VmSort) -> String {
    let (seek, order) = match (sort.key, sort.descending) {
        (VmSortKey::Id, false) => ("id > $7", "id"),
        (VmSortKey::Id, true) => ("id < $7", "id DESC"),
        (VmSortKey::Name, false) => ("(name, id) > ($8::text COLLATE \"C\", $7)", "name, id"),
        (VmSortKey::Name, true) => (
            "(name, id) < ($8::text COLLATE \"C\", $7)",
            "name DESC, id DESC",
        ),
        (VmSortKey::CreatedAt, false) => ("(created_us, id) > ($9, $7)", "created_us, id"),
        (VmSortKey::CreatedAt, true) => ("(created_us, id) < ($9, $7)", "created_us DESC, id DESC"),
    };
    project.select(
        "generation, doc, id, name, created_us",
        "vms",
        &format!(
            "($2::text IS NULL OR starts_with(name, $2))
             AND ($3::jsonb IS NULL OR doc->'spec'->'tags' @> $3)
             AND ($4::text IS NULL OR state = $4)
             AND ($5::text IS NULL OR power = $5)
             AND ($7::text IS NULL OR {seek})"
        ),
        order,
        "$6",
    )
}

/// The types of [`list_vms_matching_sql`]'s parameters, given because an order uses only some
/// of the cursor's.
fn list_vms_matching_types(project: &ProjectCondition) -> [Type; 9] {
    [
        project.sql_type(),
        Type::TEXT,
        Type::JSONB,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
    ]
}

/// The statement of [`Store::list_jobs`], newest first: `$1` the scope's projects, `$2` the
/// cursor (the last id seen), `$3` the VM, `$4` the state, `$5` the limit.
fn list_jobs_sql(project: &ProjectCondition) -> String {
    project.select(
        "generation, doc, lease_holder, lease_expires_at, fencing_token",
        "jobs",
        "($2::text IS NULL OR id < $2) AND ($3::text IS NULL OR vm_id = $3)
         AND ($4::text IS NULL OR state = $4)",
        "id DESC",
        "$5",
    )
}

/// The statement of [`Store::list_server_groups`]: `$1` the scope's projects, `$2` the cursor
/// (the last id seen), `$3` the limit.
fn list_server_groups_sql(project: &ProjectCondition) -> String {
    project.select(
        "generation, doc",
        "server_groups",
        "($2::text IS NULL OR id > $2)",
        "id",
        "$3",
    )
}

/// Which projects a list statement reads, always its parameter `$1`.
///
/// A page costs about one page's rows per project in scope, however many rows other projects
/// hold: one project compares by equality, so PostgreSQL walks the `(project, key)` index in
/// the page's order; several projects each take their own first page that way and the pages
/// are merged. (`project = ANY($1)` made PostgreSQL walk the whole table's index for a page by
/// id, dropping other projects' rows, or read and sort every row of the projects for a page by
/// name.)
enum ProjectCondition<'a> {
    /// One project.
    One(&'a str),
    /// Several projects (repeats allowed), or none.
    Many(Vec<&'a str>),
    /// Every project: `$1` is NULL.
    All,
}

impl<'a> ProjectCondition<'a> {
    fn of(scope: &'a Scope) -> Self {
        match scope {
            Scope::Project(p) => Self::One(p.as_str()),
            Scope::Projects(ps) if ps.len() == 1 => Self::One(ps[0].as_str()),
            Scope::Projects(ps) => Self::Many(ps.iter().map(ProjectId::as_str).collect()),
            Scope::All => Self::All,
        }
    }

    /// A statement returning `columns` of `table`'s rows in scope that match `conditions`, in
    /// `order`, at most `limit` (a parameter) of them. `conditions` and `order` name columns of
    /// `table` other than `project`.
    fn select(
        &self,
        columns: &str,
        table: &str,
        conditions: &str,
        order: &str,
        limit: &str,
    ) -> String {
        match self {
            Self::One(_) => format!(
                "SELECT {columns} FROM {table} WHERE project = $1 AND {conditions}
                 ORDER BY {order} LIMIT {limit}"
            ),
            Self::Many(_) => format!(
                "SELECT {columns}
                 FROM (SELECT DISTINCT unnest($1::text[]) AS project) AS scope,
                      LATERAL (SELECT * FROM {table} WHERE {table}.project = scope.project
                               AND {conditions} ORDER BY {order} LIMIT {limit}) AS page
                 ORDER BY {order} LIMIT {limit}"
            ),
            Self::All => format!(
                "SELECT {columns} FROM {table} WHERE $1::text IS NULL AND {conditions}
                 ORDER BY {order} LIMIT {limit}"
            ),
        }
    }

    /// The type of `$1`.
    fn sql_type(&self) -> Type {
        match self {
            Self::One(_) | Self::All => Type::TEXT,
            Self::Many(_) => Type::TEXT_ARRAY,
        }
    }

    /// The value of `$1`.
    fn value(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Self::One(p) => p,
            Self::Many(ps) => ps,
            Self::All => &None::<&str>,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let e = parse_url("postgres://u:hunter2@host:notaport/db").unwrap_err();
        assert_eq!(e.field(), Some("database_url"));
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }

    #[test]
    fn schema_names_are_checked() {
        for ok in ["public", "hcp", "hcp_test_1", "_x"] {
            validate_schema(ok).unwrap();
        }
        for bad in [
            "",
            "Public",
            "1x",
            "a-b",
            "a;drop",
            "pg_catalog",
            &"x".repeat(64),
        ] {
            assert_eq!(
                validate_schema(bad).unwrap_err().field(),
                Some("database_schema"),
                "{bad}"
            );
        }
    }

    /// A process stopped between two statements of a transaction (SIGSTOP, a frozen VM) keeps
    /// its rows locked while its connection stays open. The database ends such a session after
    /// [`STALLED_TRANSACTION`], so another replica's claim of the job goes through instead of
    /// waiting for as long as the process is stopped. Needs the PostgreSQL that
    /// `scripts/test.sh` starts (`HCP_TEST_DATABASE_URL` overrides where).
    #[tokio::test]
    async fn a_session_stalled_inside_a_transaction_does_not_block_a_claim() {
        use hcp_core::store::SubmitOutcome;
        let url = testkit::url();
        let schema = testkit::fresh_schema("hcp_t");
        let options = || StoreOptions {
            schema: schema.clone(),
            max_connections: 2,
            ..StoreOptions::default()
        };
        let stalled = PostgresStore::connect(&url, options())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {url} must be running: {e:#}"));
        let other = PostgresStore::connect(&url, options()).await.unwrap();
        let job_id = match other
            .submit(hcp_core::testkit::store::create("p1", "stalled"))
            .await
            .unwrap()
        {
            SubmitOutcome::Accepted { job_id, .. } => job_id,
            o => panic!("a fresh create is accepted: {o:?}"),
        };

        // The stopped process: a transaction that locked the job's row, then nothing.
        let mut session = stalled.client().await.unwrap();
        let tx = session.transaction().await.unwrap();
        tx.query(
            "SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE",
            &[&job_id.as_str()],
        )
        .await
        .unwrap();

        // Without the limit this claim waits on the lock until the stalled session goes; the
        // guard only turns that hang into a failure.
        let until = Utc::now() + chrono::Duration::seconds(60);
        let claim = tokio::time::timeout(
            STALLED_TRANSACTION * 6,
            other.claim_job(&job_id, "replica-b", until),
        )
        .await
        .expect("the claim went through once the database ended the stalled session")
        .unwrap();
        let lease = claim
            .and_then(|j| j.lease)
            .expect("replica-b holds the job");
        assert_eq!(&*lease.holder, "replica-b");

        // The stalled session was ended: its transaction cannot go on.
        assert!(tx.query("SELECT 1", &[]).await.is_err());
        drop(tx);
        drop(session);
        testkit::drop_schema(&testkit::raw(&url).await, &schema).await;
    }

    /// Returns the rows the plan `plan` (EXPLAIN's JSON) read from tables and indexes: the rows
    /// its scans returned and the rows their filters dropped, over all loops.
    fn rows_read(plan: &serde_json::Value) -> f64 {
        let n = |k: &str| {
            plan.get(k)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
        };
        let kind = plan["Node Type"].as_str().unwrap_or_default();
        let own = if kind.contains("Scan") {
            (n("Actual Rows") + n("Rows Removed by Filter") + n("Rows Removed by Index Recheck"))
                * n("Actual Loops").max(1.0)
        } else {
            0.0
        };
        own + plan["Plans"]
            .as_array()
            .map_or(0.0, |ps| ps.iter().map(rows_read).sum())
    }

    /// A tenant's page costs one page's rows per project in scope, however many VMs and jobs
    /// other tenants hold: the list statements walk each project's index in the page's order.
    /// With `project = ANY($1)` a page by id walked the whole table's id index, dropping other
    /// tenants' rows, and a page by name read and sorted all the tenant's rows. Needs the
    /// PostgreSQL that `scripts/test.sh` starts.
    #[tokio::test]
    async fn a_tenants_page_reads_about_one_page_of_rows() {
        use hcp_core::store::{VmSort, VmSortKey};
        let url = testkit::url();
        let schema = testkit::fresh_schema("hcp_t");
        let store = PostgresStore::connect(
            &url,
            StoreOptions {
                schema: schema.clone(),
                max_connections: 4,
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} must be running: {e:#}"));
        // The tenant's 60 VMs with their create jobs, written as HCP writes them.
        for i in 0..60 {
            store
                .submit(hcp_core::testkit::store::create(
                    "tenant",
                    &format!("vm-{i:05}"),
                ))
                .await
                .unwrap();
        }
        // 30,000 VMs and as many jobs of 50 other tenants, copied in bulk (only their columns
        // matter to the tenant's lists), with ids (same time prefix), names and creation times
        // spread over the tenant's.
        let c = store.client().await.unwrap();
        c.batch_execute(
            "INSERT INTO vms (id, project, name, generation, doc, created_us, state, power)
             SELECT substring(t.id from '^[a-z]+-.{8}') || md5(g::text), 'other-' || (g % 50),
                    'vm-' || lpad(g::text, 6, '0'), 0, t.doc,
                    t.lo + (g * (t.hi - t.lo + 1) / 30000), 'ACTIVE', 'RUNNING'
             FROM generate_series(1, 30000) g,
                  (SELECT min(id) AS id, min(doc::text)::jsonb AS doc, min(created_us) AS lo,
                          max(created_us) AS hi
                   FROM vms WHERE project = 'tenant') t;
             INSERT INTO jobs (id, project, vm_id, state, terminal, generation, doc)
             SELECT substring(t.id from '^[a-z]+-.{8}') || md5(g::text), 'other-' || (g % 50),
                    'vm-' || g, t.state, false, 0, t.doc
             FROM generate_series(1, 30000) g,
                  (SELECT min(id) AS id, min(doc::text)::jsonb AS doc, min(state) AS state
                   FROM jobs WHERE project = 'tenant') t;
             ANALYZE vms;
             ANALYZE jobs;",
        )
        .await
        .unwrap();
        let page: i64 = 11;
        let none = None::<&str>;
        let explain = |sql: &str| format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}");
        let scopes = [
            (1.0, Scope::Project(ProjectId::new("tenant"))),
            (
                2.0,
                Scope::Projects(vec![ProjectId::new("other-7"), ProjectId::new("tenant")]),
            ),
        ];
        for (projects, scope) in &scopes {
            let project = ProjectCondition::of(scope);
            let mut plans = vec![
                (
                    "list_vms".to_string(),
                    c.query_one(
                        &explain(&list_vms_sql(&project)),
                        &[project.value(), &none, &page],
                    )
                    .await
                    .unwrap(),
                ),
                (
                    "list_jobs".to_string(),
                    c.query_one(
                        &explain(&list_jobs_sql(&project)),
                        &[project.value(), &none, &none, &none, &page],
                    )
                    .await
                    .unwrap(),
                ),
            ];
            for key in [VmSortKey::Id, VmSortKey::Name, VmSortKey::CreatedAt] {
                for sort in [VmSort::ascending(key), VmSort::descending(key)] {
                    let st = c
                        .prepare_typed(
                            &explain(&list_vms_matching_sql(&project, sort)),
                            &list_vms_matching_types(&project),
                        )
                        .await
                        .unwrap();
                    let row = c
                        .query_one(
                            &st,
                            &[
                                project.value(),
                                &none,
                                &None::<serde_json::Value>,
                                &none,
                                &none,
                                &page,
                                &none,
                                &none,
                                &None::<i64>,
                            ],
                        )
                        .await
                        .unwrap();
                    plans.push((format!("list_vms_matching {sort:?}"), row));
                }
            }
            for (what, row) in plans {
                let doc: serde_json::Value = row.get(0);
                let read = rows_read(&doc[0]["Plan"]);
                // A page of 10 asks for 11 rows of each project; an incremental sort by name
                // reads one more group.
                assert!(
                    read <= 2.0 * projects * page as f64,
                    "{what} in {scope:?}: a page read {read} rows: {doc:#}"
                );
            }
        }
        drop(c);
        testkit::drop_schema(&testkit::raw(&url).await, &schema).await;
    }

    #[test]
    fn the_target_names_no_password() {
        let cfg = parse_url("postgres://hcp:s3cret@db.example:6543/hcp").unwrap();
        let d = describe(&cfg);
        assert_eq!(d, "postgres://hcp@db.example:6543/hcp");
    }
}
