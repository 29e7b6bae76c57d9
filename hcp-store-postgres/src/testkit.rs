//! Helpers for tests and benchmarks against a real PostgreSQL: where it is, a fresh schema per
//! test, and the clean-up of schemas a crashed run left behind.
//!
//! Enabled by the `testkit` feature (and in this crate's own tests).

use std::time::{SystemTime, UNIX_EPOCH};

/// Returns the test database's URL: `HCP_TEST_DATABASE_URL`, else the PostgreSQL that
/// `scripts/postgres-peer.sh` starts (`postgres://postgres@127.0.0.1:5432/test`).
pub fn url() -> String {
    std::env::var("HCP_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Returns a new schema name `PREFIX_<unix seconds>_<uuid>`: unique, and carrying its creation
/// time so [`drop_old_schemas`] can remove it once it is old. `prefix` is lower-case letters,
/// digits and `_`.
pub fn fresh_schema(prefix: &str) -> String {
    format!("{prefix}_{}_{}", unix_now(), uuid::Uuid::new_v4().simple())
}

/// Connects to `url` without TLS (set-up, clean-up and checks beside the store).
///
/// # Panics
/// When PostgreSQL does not answer (a test that needs it fails rather than skips); the message
/// does not repeat the URL, which may hold a password.
pub async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL (HCP_TEST_DATABASE_URL, default 127.0.0.1:5432) must be running; scripts/postgres-peer.sh starts it: {e}"
            )
        });
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "test connection closed");
        }
    });
    client
}

/// Drops `schema` with everything in it, waiting at most 10 s for locks (a pool not yet closed
/// must not hang the caller); a failure is printed, and the next [`drop_old_schemas`] retries.
pub async fn drop_schema(client: &tokio_postgres::Client, schema: &str) {
    if let Err(e) = client
        .batch_execute(&format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
        ))
        .await
    {
        eprintln!("could not drop schema {schema} (a later run drops it): {e}");
    }
}

/// Drops the schemas [`fresh_schema`] made with `prefix` more than an hour ago (no test or
/// benchmark runs that long), left behind by runs that did not finish.
pub async fn drop_old_schemas(client: &tokio_postgres::Client, prefix: &str) {
    let pattern = format!("{}\\_%", prefix.replace('_', "\\_"));
    let rows = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
            &[&pattern],
        )
        .await
        .expect("PostgreSQL lists its schemas");
    let cutoff = unix_now().saturating_sub(3600);
    for r in rows {
        let name: String = r.get(0);
        let made = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|rest| rest.split('_').next())
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
        if made < cutoff {
            drop_schema(client, &name).await;
        }
    }
}
