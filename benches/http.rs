//! Drives the running HTTP service with concurrent clients on loopback and prints, for each
//! request kind, requests/s, p50/p99 latency and the server's CPU per request, beside issue 20's
//! previous figure and its target:
//! `POST /projects/{p}/vms` (202; its CPU includes running the create job), `GET` of one VM and
//! of one job, and `GET /projects/{p}/vms` pages of 100 and 1,000 VMs, with 10,000+ VMs in the
//! simulator. Bounded in count and time; stops by itself.
//!
//! The service (engine, jobs and HTTP) runs on its own one-thread runtime, the clients on
//! another, so the server's CPU is the CPU of its thread (read from `/proc/self/task`), as if it
//! were pinned to one core.
//!
//! `cargo bench -p hcp-benches --bench http`
//!
//! Profile-friendly mode: `HCP_BENCH_PROFILE=create|get-vm|get-job|list-100|list-1000` seeds the
//! service, then runs that one request kind for `HCP_BENCH_SECONDS` (default 60) and prints the
//! process id, for `perf record -p PID` or `perf top -p PID`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hcp_core::{Principal, RequestContext, VmSpec};

const SEED_VMS: usize = 10_000;
const POST_RATE: f64 = 2_000.0;
const POST_SECONDS: f64 = 5.0;
const GET_SECONDS: f64 = 5.0;
const CLIENTS: usize = 32;
const LIST_CLIENTS: usize = 8;

/// The name of the service runtime's threads, whose CPU is the server's.
const SERVER_THREAD: &str = "hcp-bench-srv";

/// Hosts in the simulated zone: real hypervisors hold tens to a few hundred VMs each.
const HOST_COUNT: usize = 100;

fn hosts_file() -> String {
    let mut hosts = String::new();
    for i in 0..HOST_COUNT {
        hosts.push_str(&format!(
            "      - {{name: host-{i:03}, zone: zone-a, vcpus: 100000, memory_mib: 100000000}}\n"
        ));
    }
    format!(
        r#"
providers:
  - name: sim
    kind: sim
    settings:
      images: [ubuntu-24.04]
    hosts:
{hosts}zones:
  - name: zone-a
projects:
  - name: demo
catalog:
  images: [{{name: ubuntu-24.04, min_disk_gib: 5}}]
  flavors: [{{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10}}]
engine:
  inventory_refresh_interval: 0s
  max_concurrent_jobs: 256
  max_jobs_per_host: 16
"#
    )
}

/// Returns the CPU time the service runtime's threads have used so far.
fn server_cpu() -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        let dir = task.path();
        let named = std::fs::read_to_string(dir.join("comm"))
            .is_ok_and(|comm| comm.trim_end() == SERVER_THREAD);
        if !named {
            continue;
        }
        // The first field of schedstat is the time spent on a CPU, in nanoseconds.
        if let Some(t) = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            ns += t;
        }
    }
    Duration::from_nanos(ns)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What one scenario measured.
struct Run {
    lat: Vec<Duration>,
    elapsed: Duration,
    errors: usize,
    /// The server's CPU over the run (and, for creates, until their jobs ended).
    cpu: Duration,
}

fn report(name: &str, mut run: Run, previous: &str, target: &str) {
    run.lat.sort_unstable();
    let n = run.lat.len();
    let lat = &run.lat;
    let cpu_per = if n == 0 {
        0.0
    } else {
        run.cpu.as_secs_f64() * 1e6 / n as f64
    };
    println!(
        "{name:<44} {n:>6} req in {:>5.2}s = {:>7.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms   server CPU {cpu_per:>7.1} us/req   errors {}",
        run.elapsed.as_secs_f64(),
        n as f64 / run.elapsed.as_secs_f64(),
        percentile(lat, 0.50).as_secs_f64() * 1e3,
        percentile(lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        run.errors,
    );
    if !previous.is_empty() || !target.is_empty() {
        println!("{:<44}   (previous: {previous}; target: {target})", "");
    }
}

async fn wait_idle(engine: &hcp_core::Engine) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let s = engine.stats();
        if s.pending == 0 && s.running == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("jobs still running after 120 s: {:?}", engine.stats());
}

/// Sends one create; returns whether it was accepted.
async fn post_one(http: &reqwest::Client, url: &str, name: String, errors: &AtomicUsize) -> bool {
    let body = serde_json::json!({"name": name, "image": "ubuntu-24.04", "flavor": "small"});
    match http.post(url).json(&body).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
            let _ = r.bytes().await;
            true
        }
        Ok(r) => {
            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!(
                    "unexpected answer: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
            false
        }
        Err(e) => {
            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("request failed: {e}");
            }
            false
        }
    }
}

/// Sends POSTs at a fixed rate (open loop: latency includes any queueing in the service).
async fn post_at_rate(
    http: &reqwest::Client,
    url: &str,
    rate: f64,
    seconds: f64,
    prefix: &str,
) -> Run {
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let cpu = server_cpu();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (http, url, next, errors, prefix) = (
            http.clone(),
            url.to_string(),
            next.clone(),
            errors.clone(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return lat;
                }
                let due = start + interval * i as u32;
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                if post_one(&http, &url, format!("{prefix}-{i}"), &errors).await {
                    // Measured from when it was due, so a slow service cannot hide queueing.
                    lat.push(sent.max(due).duration_since(due) + sent.elapsed());
                }
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    Run {
        lat,
        elapsed,
        errors: errors.load(Ordering::Relaxed),
        cpu: server_cpu().saturating_sub(cpu),
    }
}

/// Sends POSTs as fast as `clients` concurrent clients can (closed loop) for `seconds`.
async fn post_closed_loop(
    http: &reqwest::Client,
    url: &str,
    clients: usize,
    seconds: f64,
    prefix: &str,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let cpu = server_cpu();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, next, errors, prefix) = (
            http.clone(),
            url.to_string(),
            next.clone(),
            errors.clone(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                if post_one(&http, &url, format!("{prefix}-{i}"), &errors).await {
                    lat.push(sent.elapsed());
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    Run {
        lat,
        elapsed: start.elapsed(),
        errors: errors.load(Ordering::Relaxed),
        cpu: server_cpu().saturating_sub(cpu),
    }
}

/// Sends GETs as fast as `clients` concurrent clients can (closed loop).
async fn get_closed_loop(http: &reqwest::Client, url: &str, clients: usize, seconds: f64) -> Run {
    let errors = Arc::new(AtomicUsize::new(0));
    let cpu = server_cpu();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, errors) = (http.clone(), url.to_string(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let sent = Instant::now();
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(sent.elapsed());
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    Run {
        lat,
        elapsed: start.elapsed(),
        errors: errors.load(Ordering::Relaxed),
        cpu: server_cpu().saturating_sub(cpu),
    }
}

/// Returns the `id` of the first item of the page at `url`.
async fn first_id(http: &reqwest::Client, url: &str) -> String {
    let page: serde_json::Value = http
        .get(url)
        .send()
        .await
        .expect("GET a page")
        .json()
        .await
        .expect("a JSON page");
    page["items"][0]["id"]
        .as_str()
        .expect("the page has an item with an id")
        .to_string()
}

fn main() {
    let profile = std::env::var("HCP_BENCH_PROFILE").ok();
    let profile_seconds: f64 = std::env::var("HCP_BENCH_SECONDS")
        .ok()
        .map(|s| s.parse().expect("HCP_BENCH_SECONDS is a number of seconds"))
        .unwrap_or(60.0);
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("hcp-bench-cli")
        .enable_all()
        .build()
        .expect("client runtime");

    let dir = tempfile::tempdir().expect("temp dir");
    let hosts = dir.path().join("hosts.yaml");
    std::fs::write(&hosts, hosts_file()).expect("hosts file");
    let engine = server_rt
        .block_on(hcp_server::build_engine(Some(&hosts), &|_| None))
        .expect("engine");

    let ctx = RequestContext::new("demo", Principal::new("bench"));
    server_rt.block_on(async {
        let seed_start = Instant::now();
        for i in 0..SEED_VMS {
            engine
                .create_vm(
                    &ctx,
                    VmSpec::new(format!("seed-{i}"), "ubuntu-24.04", "small"),
                )
                .await
                .expect("seed VM");
        }
        wait_idle(&engine).await;
        println!(
            "seeded {SEED_VMS} VMs in {:.2}s (engine, in-process)",
            seed_start.elapsed().as_secs_f64()
        );
    });

    if profile.is_none() {
        // The engine alone, same concurrency, no HTTP: what the service adds is the difference.
        let run = server_rt.block_on(async {
            let next = Arc::new(AtomicUsize::new(0));
            let cpu = server_cpu();
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..CLIENTS {
                let (engine, next, ctx) = (engine.clone(), next.clone(), ctx.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= 5_000 {
                            return lat;
                        }
                        let t = Instant::now();
                        engine
                            .create_vm(
                                &ctx,
                                VmSpec::new(format!("direct-{i}"), "ubuntu-24.04", "small"),
                            )
                            .await
                            .expect("direct create");
                        lat.push(t.elapsed());
                    }
                }));
            }
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await.expect("task"));
            }
            let elapsed = start.elapsed();
            wait_idle(&engine).await;
            Run {
                lat,
                elapsed,
                errors: 0,
                cpu: server_cpu().saturating_sub(cpu),
            }
        });
        report(
            &format!("engine.create_vm in-process, {CLIENTS} tasks"),
            run,
            "",
            "",
        );
    }

    let options =
        hcp_server::ServeOptions::default().with_listen("127.0.0.1:0".parse().expect("an address"));
    let server = server_rt
        .block_on(hcp_server::Server::bind(engine.clone(), options))
        .expect("bind");
    let base = format!("http://{}", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = server_rt.spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    client_rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        let vms = format!("{base}/api/hcp/tenant/v1/projects/demo/vms");
        let list_1000 = format!("{vms}?limit=1000");

        // Warm up connections and code paths.
        let _ = post_at_rate(&http, &vms, 500.0, 0.5, "warm").await;
        let _ = get_closed_loop(&http, &vms, 2, 0.5).await;
        wait_idle(&engine).await;
        let vm = format!("{vms}/{}", first_id(&http, &vms).await);
        let job = format!(
            "{base}/api/hcp/tenant/v1/jobs/{}",
            first_id(&http, &format!("{base}/api/hcp/tenant/v1/projects/demo/jobs?limit=1")).await
        );

        if let Some(kind) = profile.as_deref() {
            println!(
                "profile mode: `{kind}` for {profile_seconds} s; process id {} (the service's threads are named {SERVER_THREAD})",
                std::process::id()
            );
            let run = match kind {
                "create" => post_closed_loop(&http, &vms, CLIENTS, profile_seconds, "profile").await,
                "get-vm" => get_closed_loop(&http, &vm, LIST_CLIENTS, profile_seconds).await,
                "get-job" => get_closed_loop(&http, &job, LIST_CLIENTS, profile_seconds).await,
                "list-100" => get_closed_loop(&http, &vms, LIST_CLIENTS, profile_seconds).await,
                "list-1000" => get_closed_loop(&http, &list_1000, LIST_CLIENTS, profile_seconds).await,
                other => panic!(
                    "HCP_BENCH_PROFILE={other}: use create, get-vm, get-job, list-100 or list-1000"
                ),
            };
            report(kind, run, "", "");
        } else {
            let run = get_closed_loop(&http, &format!("{base}/healthz"), LIST_CLIENTS, 2.0).await;
            report(&format!("GET /healthz (baseline), {LIST_CLIENTS} clients"), run, "", "");
            println!(
                "service on {base}, {} VMs in project demo on {HOST_COUNT} simulated hosts; the service on one thread, the clients on another",
                SEED_VMS + 5_250
            );
            let mut run = post_at_rate(&http, &vms, POST_RATE, POST_SECONDS, "post").await;
            let cpu = server_cpu();
            wait_idle(&engine).await;
            run.cpu += server_cpu().saturating_sub(cpu);
            report(
                &format!("POST .../vms (202) at {POST_RATE} req/s offered"),
                run,
                "",
                "",
            );
            let mut run = post_closed_loop(&http, &vms, CLIENTS, POST_SECONDS, "max").await;
            let cpu = server_cpu();
            wait_idle(&engine).await;
            run.cpu += server_cpu().saturating_sub(cpu);
            report(
                &format!("POST .../vms (202), {CLIENTS} clients"),
                run,
                "2,556 req/s, 388 us server CPU per create when filed; 63-127 us on 61df7b8; 72 us on 002a007 on another machine, 86-95 us on 3cb2997, 90-98 us on 590c1c5 and 95-97 us on 62bcc92 (at 2,000 req/s, each alternated with the code after it)",
                "<= 100 us server CPU per create",
            );
            let run = get_closed_loop(&http, &vm, LIST_CLIENTS, GET_SECONDS).await;
            report(&format!("GET .../vms/{{vmId}}, {LIST_CLIENTS} clients"), run, "9.4 us server CPU on 61df7b8; 12.5 us on 62bcc92", "none set");
            let run = get_closed_loop(&http, &job, LIST_CLIENTS, GET_SECONDS).await;
            report(&format!("GET .../jobs/{{jobId}}, {LIST_CLIENTS} clients"), run, "7x FastAPI's rate when filed; 9.3 us server CPU on 61df7b8; 12.0-12.1 us on 62bcc92", "none set");
            let run = get_closed_loop(&http, &vms, LIST_CLIENTS, GET_SECONDS).await;
            report(
                &format!("GET .../vms (100 per page), {LIST_CLIENTS} clients"),
                run,
                "~800 us per page when filed; 12,856 us on 61df7b8, whose sorted list collected and sorted every VM; 108 us on 002a007 on another machine, 119-137 us on 590c1c5, 137-140 us on 62bcc92",
                "<= 200 us per page",
            );
            let run = get_closed_loop(&http, &list_1000, LIST_CLIENTS, GET_SECONDS).await;
            report(
                &format!("GET .../vms?limit=1000, {LIST_CLIENTS} clients"),
                run,
                "~110 req/s when filed; 56 req/s on 61df7b8; 1,025 req/s on 002a007 on another machine, 569-893 req/s on 590c1c5, 794-806 req/s on 62bcc92",
                ">= 500 req/s",
            );
        }
    });

    let _ = stop_tx.send(());
    server_rt
        .block_on(served)
        .expect("server task")
        .expect("server stops cleanly");
}
