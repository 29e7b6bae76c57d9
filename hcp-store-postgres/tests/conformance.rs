//! The PostgreSQL store against the real PostgreSQL on 127.0.0.1:5432 (`HCP_TEST_DATABASE_URL`
//! overrides it): the whole store conformance suite, each test in a fresh schema of its own, and
//! the PostgreSQL-only behaviours (migrations, two pools sharing one database, secrets).
//! A missing PostgreSQL fails these tests; `scripts/test.sh` starts it.

use std::sync::Arc;

use hcp_core::store::{PageRequest, Scope, Store, SubmitOutcome};
use hcp_core::testkit::store::create;
use hcp_core::{ErrorKind, LogEntry, LogLevel, ProjectId, Quota};
use hcp_store_postgres::testkit::{self, url};
use hcp_store_postgres::{PostgresStore, SCHEMA_VERSION, StoreOptions};

/// The prefix of this file's schemas.
const PREFIX: &str = "hcp_t";

/// A new schema name carrying its creation time, so later runs can drop old ones.
fn fresh_schema() -> String {
    testkit::fresh_schema(PREFIX)
}

/// Drops this file's schemas made more than an hour ago, once per process.
async fn drop_old_schemas() {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async { testkit::drop_old_schemas(&raw().await, PREFIX).await })
        .await;
}

async fn open(schema: &str) -> PostgresStore {
    PostgresStore::connect(
        &url(),
        StoreOptions {
            schema: schema.to_string(),
            max_connections: 8,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("PostgreSQL at {} must be running: {e:#}", url()))
}

async fn fresh() -> Arc<dyn Store> {
    drop_old_schemas().await;
    Arc::new(open(&fresh_schema()).await)
}

hcp_core::store_conformance_tests!(fresh);

// The audit stream section: retention by time and the outbox.
hcp_core::store_event_conformance_tests!(fresh);

mod server_groups {
    use super::fresh;
    hcp_core::store_group_conformance_tests!(fresh);
}

async fn raw() -> tokio_postgres::Client {
    testkit::raw(&url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_migrate_once() {
    let schema = fresh_schema();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let schema = schema.clone();
        tasks.push(tokio::spawn(async move { open(&schema).await }));
    }
    for t in tasks {
        let store = t.await.unwrap();
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    }
    let rows = raw()
        .await
        .query(
            &format!("SELECT version FROM {schema}.hcp_schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, hcp_store_postgres::migration_versions());
    assert_eq!(versions.last(), Some(&SCHEMA_VERSION));
}

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused() {
    let schema = fresh_schema();
    drop(open(&schema).await);
    raw()
        .await
        .execute(
            &format!(
                "INSERT INTO {schema}.hcp_schema_migrations (version) VALUES ({})",
                SCHEMA_VERSION + 1
            ),
            &[],
        )
        .await
        .unwrap();
    let e = PostgresStore::connect(
        &url(),
        StoreOptions {
            schema: schema.clone(),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("newer than this hcp binary"), "{text}");
    assert!(
        text.contains(&format!("version {}", SCHEMA_VERSION + 1)),
        "{text}"
    );
}

#[tokio::test]
async fn data_survives_a_new_connection() {
    let schema = fresh_schema();
    let first = open(&schema).await;
    let SubmitOutcome::Accepted { vm_id, job_id } =
        first.submit(create("p1", "kept")).await.unwrap()
    else {
        panic!("a fresh submission is accepted");
    };
    let vm = first.get_vm(&Scope::All, &vm_id).await.unwrap().unwrap();
    let job = first.get_job(&Scope::All, &job_id).await.unwrap().unwrap();
    drop(first);
    let second = open(&schema).await;
    assert_eq!(
        second.get_vm(&Scope::All, &vm.id).await.unwrap().as_ref(),
        Some(&vm)
    );
    assert_eq!(
        second.get_job(&Scope::All, &job.id).await.unwrap().as_ref(),
        Some(&job)
    );
    assert_eq!(
        second.usage(&ProjectId::new("p1")).await.unwrap().vms,
        1,
        "usage counters are stored too"
    );
}

/// Two pools on one database stand in for two HCP processes: the invariants hold across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_database_share_keys_and_quota() {
    let schema = fresh_schema();
    let stores: [Arc<dyn Store>; 2] =
        [Arc::new(open(&schema).await), Arc::new(open(&schema).await)];
    let quota = Quota {
        max_vms: Some(10),
        ..Quota::default()
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = stores[i % 2].clone();
        let mut s = create("shared", &format!("vm-{i}"));
        s.quota = Some(quota);
        tasks.push(tokio::spawn(async move { store.submit(s).await }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(SubmitOutcome::Accepted { .. }) => ok += 1,
            Err(e) if e.kind() == ErrorKind::QuotaExceeded => refused += 1,
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!((ok, refused), (10, 10));
    let listed = stores[1]
        .list_vms(
            &Scope::Project(ProjectId::new("shared")),
            &PageRequest::all(),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 10);

    // One idempotency key sent through both at once: one job, every other call replayed.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = stores[i % 2].clone();
        let mut s = create("keyed", &format!("k-{i}"));
        s.idempotency = Some(hcp_core::store::IdempotencyRecord {
            scope: hcp_core::store::IdempotencyScope {
                project: ProjectId::new("keyed"),
                principal: "alice".into(),
                operation: hcp_core::Operation::CreateVm,
                key: "one-key".into(),
            },
            fingerprint: "same".into(),
            vm_id: match &s.vm {
                hcp_core::store::VmWrite::Insert(v) => v.id.clone(),
                hcp_core::store::VmWrite::Update { vm, .. } => vm.id.clone(),
            },
            job_id: s.job.id.clone(),
            created_at: chrono::Utc::now(),
        });
        tasks.push(tokio::spawn(async move { store.submit(s).await }));
    }
    let mut accepted = Vec::new();
    let mut replayed = Vec::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            SubmitOutcome::Accepted { job_id, .. } => accepted.push(job_id),
            SubmitOutcome::Replayed { job_id, .. } => replayed.push(job_id),
        }
    }
    assert_eq!(accepted.len(), 1, "one of 20 is accepted");
    assert!(replayed.iter().all(|j| *j == accepted[0]));
}

#[tokio::test]
async fn the_password_never_appears_in_errors() {
    let secret = "pw-Zq8-never-print";
    for url in [
        // Nothing listens there.
        format!("postgres://hcp:{secret}@127.0.0.1:1/test"),
        // A role that does not exist.
        format!("postgres://no_such_role_hcp:{secret}@127.0.0.1:5432/test"),
        // A URL that does not parse.
        format!("postgres://hcp:{secret}@127.0.0.1:port/test"),
    ] {
        let e = PostgresStore::connect(&url, StoreOptions::default())
            .await
            .unwrap_err();
        let all = format!("{e} | {e:?} | {}", e.detail().unwrap_or_default());
        assert!(!all.contains(secret), "{all}");
        assert!(!all.is_empty());
    }
    // And not in the store's Debug.
    let store = PostgresStore::connect(
        &format!("postgres://postgres:{secret}@127.0.0.1:5432/test?application_name=x",),
        StoreOptions {
            schema: fresh_schema(),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(!format!("{store:?}").contains(secret));
}

/// A database at schema version 1 with VMs in it migrates to the current version: the new list
/// columns are filled from each VM's document, so its VMs filter and sort like new ones.
#[tokio::test]
async fn a_version_1_database_with_vms_upgrades_and_its_vms_filter_and_sort() {
    use hcp_core::store::{VmFilter, VmSort, VmSortKey};
    use hcp_core::{DesiredState, PowerState};

    drop_old_schemas().await;
    let schema = fresh_schema();
    let c = raw().await;
    c.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         SET search_path TO {schema};
         CREATE TABLE hcp_schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         {}
         INSERT INTO hcp_schema_migrations (version) VALUES (1);",
        include_str!("../src/migrations/0001_initial.sql")
    ))
    .await
    .unwrap();
    let base = chrono::Utc::now();
    let mut ids = Vec::new();
    for (i, (name, desired)) in [
        ("old-b", DesiredState::Active),
        ("old-a", DesiredState::Error),
        ("old-c", DesiredState::Active),
    ]
    .into_iter()
    .enumerate()
    {
        let mut vm = hcp_core::testkit::store::vm("p1", name);
        vm.desired = desired;
        vm.power = PowerState::Running;
        // Nanoseconds, as HCP writes them: the backfill keeps microseconds.
        vm.created_at = base - chrono::Duration::nanoseconds(3_000_000_123 * (3 - i as i64));
        vm.generation = 1;
        c.execute(
            &format!(
                "INSERT INTO {schema}.vms (id, project, name, generation, doc) VALUES ($1, $2, $3, 1, $4)"
            ),
            &[
                &vm.id.as_str(),
                &vm.project.as_str(),
                &name,
                &serde_json::to_value(&vm).unwrap(),
            ],
        )
        .await
        .unwrap();
        ids.push(vm.id);
    }
    let store = open(&schema).await;
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let names = |p: hcp_core::store::Page<hcp_core::Vm>| -> Vec<String> {
        p.items.into_iter().map(|v| v.spec.name.clone()).collect()
    };
    let by_time = store
        .list_vms_matching(
            &Scope::All,
            &VmFilter::default(),
            VmSort::descending(VmSortKey::CreatedAt),
            &PageRequest::first(2),
        )
        .await
        .unwrap();
    let cursor = by_time.next.clone();
    assert_eq!(names(by_time), ["old-c", "old-a"]);
    let rest = store
        .list_vms_matching(
            &Scope::All,
            &VmFilter::default(),
            VmSort::descending(VmSortKey::CreatedAt),
            &PageRequest { limit: 2, cursor },
        )
        .await
        .unwrap();
    assert_eq!(names(rest), ["old-b"]);
    let active = store
        .list_vms_matching(
            &Scope::Project(ProjectId::new("p1")),
            &VmFilter {
                state: Some(DesiredState::Active),
                power: Some(PowerState::Running),
                ..VmFilter::default()
            },
            VmSort::ascending(VmSortKey::Name),
            &PageRequest::all(),
        )
        .await
        .unwrap();
    assert_eq!(names(active), ["old-b", "old-c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_log_keeps_its_newest_lines_through_batches() {
    let store = PostgresStore::connect(
        &url(),
        StoreOptions {
            schema: fresh_schema(),
            max_connections: 4,
            max_log_lines_per_job: 3,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("PostgreSQL at {} must be running: {e:#}", url()));
    let SubmitOutcome::Accepted { job_id, .. } = store.submit(create("p1", "long")).await.unwrap()
    else {
        panic!("a fresh submission is accepted");
    };
    let line = |m: &str| (chrono::Utc::now(), LogEntry::new(LogLevel::Info, m));
    let out = store
        .append_logs_batch(vec![
            (job_id.clone(), vec![line("1"), line("2")]),
            (job_id.clone(), vec![line("3"), line("4")]),
        ])
        .await;
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    store.append_logs(&job_id, vec![line("5")]).await.unwrap();
    let kept: Vec<(u64, String)> = store
        .job_logs(&job_id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.seq, l.message))
        .collect();
    assert_eq!(
        kept,
        [
            (3, "3".to_string()),
            (4, "4".to_string()),
            (5, "5".to_string())
        ],
        "a log of 5 lines with a limit of 3 keeps lines 3 to 5, numbers unchanged"
    );
}
