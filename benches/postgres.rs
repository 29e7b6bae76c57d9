//! The engine through the PostgreSQL store beside the in-memory store (issue 12). Prints, for N
//! create jobs then N delete jobs on the simulator with zero latency, 64 submits in flight:
//! 1. `memory/1-replica`: one engine on the in-memory store;
//! 2. `postgres/1-replica`: one engine on the PostgreSQL store;
//! 3. `postgres/3-replicas`: three engines in this process, each with its own pool on one fresh
//!    schema and all on one simulator; submits go round-robin over them and each claims its
//!    jobs through leases in the store.
//!
//! Each line gives jobs per second (all jobs ended / wall time), the submit latency p50 and p99
//! (each `create_vm` / `delete_vm` call), this process's CPU microseconds per job and
//! PostgreSQL's: the server's processes (postmaster, WAL writer, checkpointer, autovacuum) and the
//! backends of this run's connections, read from `/proc`. Backends of other clients of the same
//! server are left out, and the CPU they used meanwhile is printed so a busy server shows.
//! A first line gives PostgreSQL's version, `synchronous_commit` and `fsync` as the sessions see
//! them. Issue 12's aim: >= 3,000 jobs/s through PostgreSQL on 2 cores.
//!
//! 4. `postgres/tenant-list`: the first ten pages of 100 of one tenant's 20,000 VMs, sorted by
//!    id, by name and by creation time (milliseconds per page, medians), among 100,000 VMs of
//!    200 other tenants created interleaved with the tenant's own, and with the tenant alone in
//!    the store. A page should cost the same either way, and not grow with the tenant.
//!
//! Run: `cargo bench -p hcp-benches --bench postgres` (`scripts/bench.sh postgres`). N is
//! `HCP_BENCH_JOBS` (default 2,000); `HCP_BENCH_ONLY=memory/1-replica|postgres/1-replica|
//! postgres/3-replicas|postgres/tenant-list` runs one configuration. PostgreSQL is `HCP_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`, which `scripts/postgres-peer.sh` starts); each
//! configuration runs in a fresh schema `hcp_bench_<unix secs>_<uuid>`, dropped at its end.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cpu_time::ProcessTime;
use hcp_benches::{config, engine_builder};
use hcp_core::store::{JobFilter, PageRequest, Scope, Store};
use hcp_core::testkit::store::vm;
use hcp_core::{Engine, JobState, Principal, RequestContext, VmId, VmSpec};
use hcp_provider_sim::{SimHost, SimProvider, SimSettings};
use hcp_store_postgres::testkit::{self, url};
use hcp_store_postgres::{PostgresStore, StoreOptions};

/// Submits in flight at once.
const IN_FLIGHT: usize = 64;
/// Connections in each engine's pool.
const CONNECTIONS: usize = 16;

/// The prefix of this bench's schemas ([`testkit::fresh_schema`]).
const PREFIX: &str = "hcp_bench";

/// Opens a store on `schema` with [`CONNECTIONS`] connections.
async fn connect(schema: &str) -> PostgresStore {
    PostgresStore::connect(
        &url(),
        StoreOptions {
            schema: schema.to_string(),
            max_connections: CONNECTIONS,
            ..Default::default()
        },
    )
    .await
    .expect("PostgreSQL store")
}

/// Opens a plain connection (schema set-up and clean-up, `pg_stat_activity`).
async fn raw() -> tokio_postgres::Client {
    testkit::raw(&url()).await
}

/// Prints the PostgreSQL version and the settings that bound a commit's latency, as this run's
/// sessions see them (a URL's `options` may change them).
async fn print_settings(c: &tokio_postgres::Client) {
    let row = c
        .query_one(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit'), current_setting('fsync')",
            &[],
        )
        .await
        .expect("read PostgreSQL settings");
    let (version, sync, fsync): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    println!("PostgreSQL {version}: synchronous_commit {sync}, fsync {fsync}");
}

/// The database's committed and rolled-back transactions so far (`pg_stat_database`), after
/// asking the server to publish its sessions' pending counts.
async fn transactions(c: &tokio_postgres::Client) -> i64 {
    // PostgreSQL 15+ publishes a session's counts when it goes idle, at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = c.execute("SELECT pg_stat_clear_snapshot()", &[]).await;
    c.query_one(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
        &[],
    )
    .await
    .expect("read pg_stat_database")
    .get(0)
}

/// The clock ticks per second of `/proc/<pid>/stat`'s CPU times.
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Returns the CPU ticks (user + system) of every process named `postgres`, by pid.
fn postgres_ticks() -> HashMap<i32, u64> {
    let mut ticks = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return ticks;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // Gone since the listing, or not ours to read: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != "postgres" {
            continue;
        }
        // After the name: state (field 3), ..., utime (14), stime (15).
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        if let (Some(user), Some(system)) = (field(11), field(12)) {
            ticks.insert(pid, user + system);
        }
    }
    ticks
}

/// Returns the local TCP ports of this process's sockets, its connections to PostgreSQL among
/// them.
fn own_tcp_ports() -> HashSet<u16> {
    let inodes: HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|s| s.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else {
                continue;
            };
            if !inodes.contains(*inode) {
                continue;
            }
            if let Some(port) = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                ports.insert(port);
            }
        }
    }
    ports
}

/// PostgreSQL's CPU during a run, in seconds.
struct PostgresCpu {
    /// The backends of this process's connections.
    own: f64,
    /// The server's own processes (postmaster, writers, checkpointer, autovacuum).
    server: f64,
    /// Other clients' backends (not counted).
    others: f64,
}

/// Splits the CPU the `postgres` processes used since `before` among this run's backends, the
/// server's processes and other clients' backends. Call it while this run's pools are open.
async fn postgres_cpu(c: &tokio_postgres::Client, before: &HashMap<i32, u64>) -> PostgresCpu {
    let after = postgres_ticks();
    let ports = own_tcp_ports();
    let rows = c
        .query(
            "SELECT pid, backend_type, client_port FROM pg_stat_activity",
            &[],
        )
        .await
        .expect("read pg_stat_activity");
    let mut clients: HashMap<i32, bool> = HashMap::new();
    for r in rows {
        let pid: i32 = r.get(0);
        let kind: Option<String> = r.get(1);
        let port: Option<i32> = r.get(2);
        if kind.as_deref() == Some("client backend") {
            let own = port
                .and_then(|p| u16::try_from(p).ok())
                .is_some_and(|p| ports.contains(&p));
            clients.insert(pid, own);
        }
    }
    let hz = clock_ticks() as f64;
    let mut cpu = PostgresCpu {
        own: 0.0,
        server: 0.0,
        others: 0.0,
    };
    for (pid, t) in after {
        let used = t.saturating_sub(before.get(&pid).copied().unwrap_or(0)) as f64 / hz;
        match clients.get(&pid) {
            Some(true) => cpu.own += used,
            Some(false) => cpu.others += used,
            None => cpu.server += used,
        }
    }
    cpu
}

/// Submits `n` jobs, `IN_FLIGHT` at once, spread round-robin over `engines`: creates, or deletes
/// of `deletes`. Returns each call's latency and the VMs acted on.
async fn submit_all(
    engines: &Arc<Vec<Engine>>,
    n: usize,
    deletes: Option<Arc<Vec<VmId>>>,
) -> (Vec<Duration>, Vec<VmId>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(IN_FLIGHT);
    for _ in 0..IN_FLIGHT {
        let (engines, next, deletes) = (engines.clone(), next.clone(), deletes.clone());
        tasks.push(tokio::spawn(async move {
            let ctx = RequestContext::new("bench", Principal::new("bench"));
            let mut latencies = Vec::new();
            let mut vms = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return (latencies, vms);
                }
                let engine = &engines[i % engines.len()];
                let started = Instant::now();
                let submitted = match &deletes {
                    None => engine
                        .create_vm(&ctx, VmSpec::new(format!("vm-{i}"), "img", "f"))
                        .await
                        .expect("create"),
                    Some(ids) => engine.delete_vm(&ctx, &ids[i], true).await.expect("delete"),
                };
                latencies.push(started.elapsed());
                vms.push(submitted.vm_id);
            }
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    let mut vms = Vec::with_capacity(n);
    for t in tasks {
        let (l, v) = t.await.expect("submit task");
        latencies.extend(l);
        vms.extend(v);
    }
    (latencies, vms)
}

/// Waits until every engine has no pending and no running job and `store` (when shared) holds
/// no unfinished job.
async fn wait_all(engines: &[Engine], store: Option<&dyn Store>) {
    loop {
        let idle = engines.iter().all(|e| {
            let s = e.stats();
            s.pending == 0 && s.running == 0
        });
        if idle {
            match store {
                None => return,
                Some(s) => {
                    if s.unfinished_jobs()
                        .await
                        .expect("unfinished jobs")
                        .is_empty()
                    {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Runs one configuration: `replicas` engines on one simulator, on the in-memory store when
/// `schema` is `None`, else each on its own pool on that PostgreSQL schema.
async fn run(label: &str, replicas: usize, schema: Option<&str>, n: usize) {
    let hosts: Vec<SimHost> = (0..10)
        .map(|i| SimHost::new(&format!("h{i}"), "z", 1_000_000, 1 << 40))
        .collect();
    let sim = Arc::new(SimProvider::new("sim", SimSettings::default(), hosts).expect("sim"));
    let mut stores = Vec::new();
    let mut engines = Vec::new();
    for _ in 0..replicas {
        let builder = engine_builder(config(10, 128), sim.clone());
        let builder = match schema {
            None => builder,
            Some(schema) => {
                let store = Arc::new(connect(schema).await);
                stores.push(store.clone());
                builder.store(store)
            }
        };
        engines.push(builder.build().await.expect("engine"));
    }
    let engines = Arc::new(engines);
    let shared: Option<&dyn Store> = stores.first().map(|s| s.as_ref() as &dyn Store);
    let pg = match schema {
        Some(_) => Some(raw().await),
        None => None,
    };

    // Warm up every engine and its pool.
    let ctx = RequestContext::new("bench", Principal::new("bench"));
    for (i, engine) in engines.iter().enumerate() {
        let w = engine
            .create_vm(&ctx, VmSpec::new(format!("warm-{i}"), "img", "f"))
            .await
            .expect("warm");
        engine
            .wait_job(&Scope::All, &w.job_id, Some(Duration::from_secs(60)))
            .await
            .expect("warm job");
    }

    let xact_before = match &pg {
        Some(c) => Some(transactions(c).await),
        None => None,
    };
    let pg_before = postgres_ticks();
    let cpu = ProcessTime::now();
    let wall = Instant::now();
    let (mut latencies, ids) = submit_all(&engines, n, None).await;
    wait_all(&engines, shared).await;
    let (deletes, _) = submit_all(&engines, n, Some(Arc::new(ids))).await;
    wait_all(&engines, shared).await;
    let wall = wall.elapsed();
    let cpu = cpu.elapsed();
    let pg_cpu = match &pg {
        Some(c) => Some(postgres_cpu(c, &pg_before).await),
        None => None,
    };
    let xacts = match (&pg, xact_before) {
        (Some(c), Some(before)) => Some(transactions(c).await - before),
        _ => None,
    };

    let left = engines[0]
        .list_vms(&Scope::All, &PageRequest::all())
        .await
        .expect("list VMs")
        .items
        .len();
    assert_eq!(left, replicas, "every benchmark VM was deleted");
    let failed = engines[0]
        .list_jobs(
            &Scope::All,
            &JobFilter {
                state: Some(JobState::Failed),
                ..Default::default()
            },
            &PageRequest::all(),
        )
        .await
        .expect("list jobs")
        .items
        .len();
    assert_eq!(failed, 0, "no benchmark job failed");

    latencies.extend(deletes);
    latencies.sort_unstable();
    let jobs = 2 * n;
    let per_job = |seconds: f64| seconds * 1e6 / jobs as f64;
    let mut line = format!(
        "{label}: {jobs} jobs in {:.2} s -> {:.0} jobs/s; submit p50 {:.2} ms, p99 {:.2} ms; hcp CPU {:.0} µs/job",
        wall.as_secs_f64(),
        jobs as f64 / wall.as_secs_f64(),
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        per_job(cpu.as_secs_f64()),
    );
    if let Some(p) = &pg_cpu {
        line.push_str(&format!(
            ", postgres CPU {:.0} µs/job (aim: >= 3,000 jobs/s)",
            per_job(p.own + p.server)
        ));
    }
    println!("{line}");
    if let Some(x) = xacts {
        println!(
            "  postgres transactions: {:.1} per job ({x} in all, the whole database's count)",
            x as f64 / jobs as f64
        );
    }
    if let Some(p) = &pg_cpu {
        println!(
            "  postgres CPU: this run's backends {:.0} µs/job, server processes {:.0} µs/job; other clients' backends used {:.2} s meanwhile (not counted)",
            per_job(p.own),
            per_job(p.server),
            p.others
        );
    }

    for e in engines.iter() {
        e.shutdown().await;
    }
    drop(engines);
    drop(stores);
    if let (Some(c), Some(schema)) = (&pg, schema) {
        testkit::drop_schema(c, schema).await;
    }
}

/// The VMs of the tenant whose lists [`tenant_list`] measures.
const TENANT_VMS: usize = 20_000;
/// The other tenants' VMs stored beside the tenant's.
const OTHER_VMS: usize = 100_000;
/// The other tenants.
const OTHER_TENANTS: usize = 200;

/// Updates the planner's statistics of `schema`'s VMs, as autovacuum would in time.
async fn analyze(c: &tokio_postgres::Client, schema: &str) {
    c.batch_execute(&format!("ANALYZE \"{schema}\".vms"))
        .await
        .expect("analyze");
}

/// Writes `vms` into `store`, 16 at a time.
async fn put_all(store: &PostgresStore, vms: Vec<hcp_core::Vm>) {
    use futures::StreamExt;
    futures::stream::iter(vms)
        .for_each_concurrent(16, |vm| async move {
            store.put_vm(vm, None).await.expect("store a VM");
        })
        .await;
}

/// The pages of 100 each walk of [`page_ms`] reads.
const PAGES: u32 = 10;

/// Returns the median milliseconds per page of walking the first [`PAGES`] pages of `scope`'s
/// VMs, 100 at a time in `sort`'s order (11 walks).
async fn page_ms(store: &PostgresStore, scope: &Scope, sort: hcp_core::store::VmSort) -> f64 {
    let filter = hcp_core::store::VmFilter::default();
    let mut per_page = Vec::new();
    for _ in 0..11 {
        let mut seen = 0;
        let mut page = PageRequest::first(100);
        let start = Instant::now();
        for _ in 0..PAGES {
            let got = store
                .list_vms_matching(scope, &filter, sort, &page)
                .await
                .expect("list a page");
            seen += got.items.len();
            page.cursor = got.next;
        }
        per_page.push(start.elapsed() / PAGES);
        assert_eq!(seen, 100 * PAGES as usize, "every page full, none repeated");
    }
    per_page.sort();
    per_page[per_page.len() / 2].as_secs_f64() * 1e3
}

/// Prints what a page of one tenant's list costs alone and among other tenants' VMs.
async fn tenant_list(schema: &str) {
    use hcp_core::store::{VmSort, VmSortKey};
    let store = connect(schema).await;
    let tenant = Scope::Project(hcp_core::ProjectId::new("tenant"));
    let sorts = [
        ("id", VmSort::ascending(VmSortKey::Id)),
        ("name", VmSort::ascending(VmSortKey::Name)),
        (
            "created, newest first",
            VmSort::descending(VmSortKey::CreatedAt),
        ),
    ];
    // The tenant's VMs, then the others made in rounds between more of the tenant's, so ids and
    // creation times interleave as they do when tenants create VMs side by side.
    let rounds = 10;
    put_all(
        &store,
        (0..TENANT_VMS / 2)
            .map(|i| vm("tenant", &format!("web-{i:05}")))
            .collect(),
    )
    .await;
    let seed = Instant::now();
    for round in 0..rounds {
        let others = (0..OTHER_VMS / rounds)
            .map(|i| {
                let n = round * (OTHER_VMS / rounds) + i;
                vm(
                    &format!("other-{}", n % OTHER_TENANTS),
                    &format!("vm-{n:06}"),
                )
            })
            .collect();
        put_all(&store, others).await;
        let from = TENANT_VMS / 2 + round * (TENANT_VMS / 2 / rounds);
        let mine = (from..from + TENANT_VMS / 2 / rounds)
            .map(|i| vm("tenant", &format!("web-{i:05}")))
            .collect();
        put_all(&store, mine).await;
    }
    let seeded = seed.elapsed();
    let c = raw().await;
    analyze(&c, schema).await;
    let mut among = Vec::new();
    for (_, sort) in sorts {
        among.push(page_ms(&store, &tenant, sort).await);
    }
    // The same tenant alone: its VMs copied into a fresh schema without the others.
    let lone_schema = testkit::fresh_schema(PREFIX);
    let lone = connect(&lone_schema).await;
    let mut mine = Vec::with_capacity(TENANT_VMS);
    let mut page = PageRequest::all();
    loop {
        let got = store
            .list_vms(&tenant, &page)
            .await
            .expect("list the tenant");
        mine.extend(got.items);
        match got.next {
            Some(next) => page.cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(mine.len(), TENANT_VMS, "the tenant holds its VMs");
    put_all(
        &lone,
        mine.into_iter()
            .map(|mut vm| {
                vm.generation = 0;
                vm
            })
            .collect(),
    )
    .await;
    analyze(&c, &lone_schema).await;
    println!(
        "postgres/tenant-list: the first {PAGES} pages of 100 of a tenant's {TENANT_VMS} VMs, ms per page (medians of 11 walks); {OTHER_VMS} VMs of {OTHER_TENANTS} other tenants stored in {:.1} s",
        seeded.as_secs_f64()
    );
    for ((label, sort), among) in sorts.iter().zip(among) {
        let by_itself = page_ms(&lone, &tenant, *sort).await;
        println!(
            "  by {label:<22} alone {by_itself:6.2} ms   among the others {among:6.2} ms   (previous, on 6466054, among the others: {}; target: the same as alone)",
            match *label {
                "id" => "1.05-1.55 ms",
                "name" => "4.38-5.83 ms",
                _ => "1.30-1.73 ms",
            }
        );
    }
    testkit::drop_schema(&c, &lone_schema).await;
    testkit::drop_schema(&c, schema).await;
}

fn main() {
    let n: usize = match std::env::var("HCP_BENCH_JOBS") {
        Ok(v) => v.parse().expect("HCP_BENCH_JOBS is a number of VMs"),
        Err(_) => 2_000,
    };
    let only = std::env::var("HCP_BENCH_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "postgres bench: {n} create + {n} delete jobs per configuration, simulator at zero latency, {IN_FLIGHT} submits in flight, 2 worker threads, {CONNECTIONS} connections per engine; load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    rt.block_on(async {
        let configurations = [
            ("memory/1-replica", 1, false),
            ("postgres/1-replica", 1, true),
            ("postgres/3-replicas", 3, true),
        ];
        let mut cleaned = false;
        for (label, replicas, postgres) in configurations {
            if !only.is_empty() && only != label {
                continue;
            }
            let schema = postgres.then(|| testkit::fresh_schema(PREFIX));
            if postgres && !cleaned {
                let c = raw().await;
                print_settings(&c).await;
                testkit::drop_old_schemas(&c, PREFIX).await;
                cleaned = true;
            }
            run(label, replicas, schema.as_deref(), n).await;
        }
        if only.is_empty() || only == "postgres/tenant-list" {
            let c = raw().await;
            if !cleaned {
                print_settings(&c).await;
                testkit::drop_old_schemas(&c, PREFIX).await;
            }
            tenant_list(&testkit::fresh_schema(PREFIX)).await;
        }
    });
}
