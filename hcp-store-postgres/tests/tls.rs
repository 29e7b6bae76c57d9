//! The PostgreSQL store over TLS, against the real PostgreSQL on 127.0.0.1:5432:
//! `scripts/postgres-peer.sh` makes the database `test_tls`, which accepts TLS connections only,
//! with a server certificate for `localhost` and `127.0.0.1` signed by a test CA in
//! `/var/lib/hcp/pg-tls` (`HCP_TEST_PG_TLS_DIR` overrides it). A missing peer fails these tests.

use std::path::PathBuf;

use hcp_core::store::{Scope, Store, SubmitOutcome};
use hcp_core::testkit::store::create;
use hcp_store_postgres::{PostgresStore, StoreOptions};

fn tls_dir() -> PathBuf {
    std::env::var("HCP_TEST_PG_TLS_DIR")
        .map_or_else(|_| PathBuf::from("/var/lib/hcp/pg-tls"), PathBuf::from)
}

/// A URL to `test_tls` on `host` with a password the server ignores (trust), so the tests can
/// check it never shows.
fn url(host: &str, query: &str) -> String {
    format!("postgres://postgres:hunter2@{host}:5432/test_tls?{query}")
}

fn fresh_schema() -> String {
    hcp_store_postgres::testkit::fresh_schema("hcp_tls")
}

async fn open(url: &str, schema: &str) -> hcp_core::Result<PostgresStore> {
    PostgresStore::connect(
        url,
        StoreOptions {
            schema: schema.to_string(),
            max_connections: 2,
            ..StoreOptions::default()
        },
    )
    .await
}

fn drop_schema(schema: &str) {
    let ca = tls_dir().join("ca.crt");
    let _ = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port=5432 user=postgres dbname=test_tls sslmode=verify-full sslrootcert={}",
            ca.display()
        ))
        .args(["-qAtc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_runs_the_store_over_tls() {
    let ca = tls_dir().join("ca.crt");
    assert!(
        ca.exists(),
        "{} is missing: run scripts/postgres-peer.sh",
        ca.display()
    );
    for host in ["127.0.0.1", "localhost"] {
        let schema = fresh_schema();
        let store = open(
            &url(
                host,
                &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
            ),
            &schema,
        )
        .await
        .unwrap_or_else(|e| panic!("{host}: the store connects over TLS: {e:#}"));
        let outcome = store.submit(create("p1", "over-tls")).await.unwrap();
        let SubmitOutcome::Accepted { vm_id, .. } = outcome else {
            panic!("a fresh create is accepted: {outcome:?}");
        };
        let read = store.get_vm(&Scope::All, &vm_id).await.unwrap();
        assert_eq!(
            read.map(|v| v.spec.name.clone()),
            Some("over-tls".to_string())
        );
        drop(store);
        drop_schema(&schema);
    }
}

#[tokio::test]
async fn a_plain_connection_to_a_tls_only_database_is_refused_without_the_password() {
    for query in ["sslmode=disable", "sslmode=prefer", ""] {
        let e = open(&url("127.0.0.1", query), &fresh_schema())
            .await
            .err()
            .unwrap_or_else(|| panic!("`{query}`: plain TCP cannot reach test_tls"));
        let text = format!("{e:#} {e:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[tokio::test]
async fn a_server_certificate_the_given_ca_did_not_sign_is_refused() {
    let other = tls_dir().join("other-ca.crt");
    assert!(other.exists(), "{} is missing", other.display());
    for mode in ["require", "verify-ca", "verify-full"] {
        let e = open(
            &url(
                "127.0.0.1",
                &format!("sslmode={mode}&sslrootcert={}", other.display()),
            ),
            &fresh_schema(),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{mode}: a server another CA signed is not trusted"));
        let text = format!("{e:#} {e:?}");
        assert!(text.contains("certificate"), "{mode}: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
    // Without a CA file, the public roots decide: they did not sign the test CA either.
    let e = open(&url("127.0.0.1", "sslmode=require"), &fresh_schema())
        .await
        .expect_err("the public roots do not trust the test CA");
    assert!(format!("{e:#}").contains("certificate"), "{e:#}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    // The certificate names localhost and 127.0.0.1; `hostaddr` dials 127.0.0.1 while the name
    // checked is db.example.
    let ca = tls_dir().join("ca.crt");
    let e = open(
        &format!(
            "postgres://postgres:hunter2@db.example:5432/test_tls?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
            ca.display()
        ),
        &fresh_schema(),
    )
    .await
    .expect_err("a certificate for other names is refused");
    let text = format!("{e:#}");
    assert!(text.contains("certificate"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
