//! Drives the running HTTP service with concurrent clients on loopback and prints requests/s and
//! p50/p99 latency for `POST /projects/{p}/vms` (202) and `GET /projects/{p}/vms` with 10,000 VMs
//! in the simulator. Bounded in count and time; stops by itself.
//!
//! `cargo bench -p hcp-benches --bench http`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hcp_core::{Principal, RequestContext, VmSpec};

const SEED_VMS: usize = 10_000;
const POST_RATE: f64 = 2_000.0;
const POST_SECONDS: f64 = 5.0;
const LIST_SECONDS: f64 = 5.0;
const CLIENTS: usize = 32;
const LIST_CLIENTS: usize = 8;

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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut lat: Vec<Duration>, elapsed: Duration, errors: usize) {
    lat.sort_unstable();
    let n = lat.len();
    println!(
        "{name:<44} {n:>6} req in {:>5.2}s = {:>7.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms   errors {errors}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
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

/// Sends POSTs at a fixed rate (open loop: latency includes any queueing in the service).
async fn post_at_rate(
    http: &reqwest::Client,
    url: &str,
    rate: f64,
    seconds: f64,
    prefix: &str,
) -> (Vec<Duration>, Duration, usize) {
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
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
                let body = serde_json::json!({"name": format!("{prefix}-{i}"), "image": "ubuntu-24.04", "flavor": "small"});
                let sent = Instant::now();
                match http.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
                        let _ = r.bytes().await;
                        // Measured from when it was due, so a slow service cannot hide queueing.
                        lat.push(sent.max(due).duration_since(due) + sent.elapsed());
                    }
                    Ok(r) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("unexpected answer: {} {}", r.status(), r.text().await.unwrap_or_default());
                        }
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("request failed: {e}");
                        }
                    }
                }
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    (lat, start.elapsed(), errors.load(Ordering::Relaxed))
}

/// Sends GETs as fast as `clients` concurrent clients can (closed loop).
async fn get_closed_loop(
    http: &reqwest::Client,
    url: &str,
    clients: usize,
    seconds: f64,
) -> (Vec<Duration>, Duration, usize) {
    let errors = Arc::new(AtomicUsize::new(0));
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
    (lat, start.elapsed(), errors.load(Ordering::Relaxed))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let hosts = dir.path().join("hosts.yaml");
        std::fs::write(&hosts, hosts_file()).expect("hosts file");
        let engine = hcp_server::build_engine(Some(&hosts), &|_| None).await.expect("engine");

        let seed_start = Instant::now();
        let ctx = RequestContext::new("demo", Principal::new("bench"));
        for i in 0..SEED_VMS {
            engine
                .create_vm(&ctx, VmSpec::new(format!("seed-{i}"), "ubuntu-24.04", "small"))
                .await
                .expect("seed VM");
        }
        wait_idle(&engine).await;
        println!("seeded {SEED_VMS} VMs in {:.2}s (engine, in-process)", seed_start.elapsed().as_secs_f64());

        // The engine alone, same concurrency, no HTTP: what the service adds is the difference.
        let next = Arc::new(AtomicUsize::new(0));
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
                        .create_vm(&ctx, VmSpec::new(format!("direct-{i}"), "ubuntu-24.04", "small"))
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
        report(&format!("engine.create_vm in-process, {CLIENTS} tasks"), lat, start.elapsed(), 0);
        wait_idle(&engine).await;

        let options = hcp_server::ServeOptions::default().with_listen("127.0.0.1:0".parse().unwrap());
        let server = hcp_server::Server::bind(engine.clone(), options).await.expect("bind");
        let base = format!("http://{}", server.local_addr());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
        }));
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client");
        let vms = format!("{base}/api/hcp/tenant/v1/projects/demo/vms");

        // Warm up connections and code paths.
        let _ = post_at_rate(&http, &vms, 500.0, 0.5, "warm").await;
        let _ = get_closed_loop(&http, &vms, 2, 0.5).await;
        wait_idle(&engine).await;

        let (lat, el, err) = get_closed_loop(&http, &format!("{base}/healthz"), LIST_CLIENTS, 2.0).await;
        report(&format!("GET /healthz (baseline), {LIST_CLIENTS} clients"), lat, el, err);
        println!("service on {base}, {} VMs in project demo on {HOST_COUNT} simulated hosts, 2 worker threads shared by service, jobs and clients", SEED_VMS + 5_250);
        let (lat, el, err) = post_at_rate(&http, &vms, POST_RATE, POST_SECONDS, "post").await;
        report(&format!("POST .../vms (202) at {POST_RATE} req/s offered"), lat, el, err);
        wait_idle(&engine).await;
        let (lat, el, err) = get_closed_loop(&http, &vms, LIST_CLIENTS, LIST_SECONDS).await;
        report(&format!("GET .../vms (100 per page), {LIST_CLIENTS} clients"), lat, el, err);
        let (lat, el, err) = get_closed_loop(&http, &format!("{vms}?limit=1000"), LIST_CLIENTS, LIST_SECONDS).await;
        report(&format!("GET .../vms?limit=1000, {LIST_CLIENTS} clients"), lat, el, err);

        let _ = stop_tx.send(());
        served.await.expect("server task").expect("server stops cleanly");
    });
}
