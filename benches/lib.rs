//! What the benchmarks share: the configuration of simulated hosts they run on, an engine on
//! the simulator, and a wait for an engine's jobs to end.

use std::sync::Arc;
use std::time::Duration;

// The allocator the `hcp` binary uses, so the figures are the binary's. It counts the heap's
// bytes only while a memory figure is measured ([`count_heap`]): the time and instruction
// figures run without the counter's atomic adds on every allocation and free.
#[global_allocator]
static ALLOCATOR: hcp_alloc::Counting = hcp_alloc::Counting::new();

/// Counts the heap's bytes from now on (for [`heap_bytes`]) while `on`.
pub fn count_heap(on: bool) {
    if on {
        ALLOCATOR.start();
    } else {
        ALLOCATOR.stop();
    }
}

/// Returns the bytes allocated less the bytes freed while counting ([`count_heap`]), wrapping:
/// the difference of two readings is how much the heap grew between them.
pub fn heap_bytes() -> usize {
    ALLOCATOR.net_bytes()
}

use hcp_core::store::{PageRequest, Scope};
use hcp_core::{Config, Engine, EngineBuilder, Provider};
use hcp_provider_sim::SimProvider;

/// Returns the bench configuration: one `sim` provider with `hosts` hosts (`h0`, `h1`, ...) in
/// zone `z`, image `img`, flavor `f`, at most `per_host` jobs per host, no periodic refresh.
pub fn config(hosts: usize, per_host: usize) -> Config {
    config_with(hosts, per_host, "")
}

/// Returns the bench configuration with `extra` YAML appended (e.g. a `projects:` list).
pub fn config_with(hosts: usize, per_host: usize, extra: &str) -> Config {
    let mut text = String::from("providers:\n  - name: sim\n    kind: sim\n    hosts:\n");
    for i in 0..hosts {
        text.push_str(&format!("      - {{name: h{i}, zone: z}}\n"));
    }
    text.push_str(&format!(
        "zones: [{{name: z}}]\ncatalog:\n  images: [{{name: img}}]\n  flavors: [{{name: f, vcpus: 1, memory_mib: 64, disk_gib: 1}}]\nengine:\n  max_concurrent_jobs: 512\n  max_jobs_per_host: {per_host}\n  inventory_refresh_interval: 0s\n  max_events: 10000\n"
    ));
    text.push_str(extra);
    Config::from_yaml(&text, "bench").expect("bench config")
}

/// Returns a builder for an engine whose `sim` provider is `sim`, without the periodic
/// reconciler; add a store or other options before building it.
pub fn engine_builder(config: Config, sim: Arc<SimProvider>) -> EngineBuilder {
    let p: Arc<dyn Provider> = sim;
    Engine::builder(config)
        .provider_kind("sim", move |_, _| Ok(p.clone()))
        .without_background_reconcile()
}

/// Builds an engine on `sim` with the in-memory store (see [`engine_builder`]).
pub async fn engine_with(config: Config, sim: Arc<SimProvider>) -> Engine {
    engine_builder(config, sim).build().await.expect("engine")
}

/// Waits until `engine` has no pending and no running job.
pub async fn drain(engine: &Engine) {
    loop {
        let s = engine.stats();
        if s.pending == 0 && s.running == 0 {
            return;
        }
        // Coarse: under callgrind, a tight poll would count as the engine's instructions.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Counts the VMs `engine` holds, page by page (one page holds at most
/// [`PageRequest::MAX_LIMIT`] VMs).
pub async fn count_vms(engine: &Engine) -> usize {
    let mut page = PageRequest::all();
    let mut n = 0;
    loop {
        let got = engine.list_vms(&Scope::All, &page).await.expect("list");
        n += got.items.len();
        match got.next {
            Some(next) => page.cursor = Some(next),
            None => return n,
        }
    }
}
