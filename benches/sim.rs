//! Simulator state-file benchmarks, on the real `hcp` binary. Prints, each beside the figure main
//! had before the simulator parsed its state file once per change instead of once per host per
//! call:
//! 1. `readyz`: the time from starting `hcp serve` to its first `/readyz` 200, with a hosts file
//!    of 100 simulated hosts whose state file holds 10,000 VMs (and with an empty one, for scale);
//! 2. `list`: the wall time of an embedded `hcp vm list` (one CLI process, its engine in-process)
//!    with 100 hosts and 1,000 VMs.
//!
//! Run: `cargo bench -p hcp-benches --bench sim` (`HCP_BENCH_ONLY=readyz|list` runs one part).
//! It builds `hcp` in release mode first (`cargo build --release -p hcp-cli --bin hcp`, into the
//! bench's own target directory); `HCP_BIN=/path/to/hcp` measures that binary instead (that is
//! how the previous figures were taken, with main's binary).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hcp_core::{HcpMark, PowerState, ProjectId, Resources, VmId};
use hcp_provider_sim::{SimHost, SimState, SimVm};

/// The commit of main the previous figures were measured on.
const MAIN: &str = "96b3637";
// Medians measured with this bench and `HCP_BIN` set to main's release binary, on a 2-core
// machine busy with other builds (load average about 14): the figures below it print are only
// comparable when taken under the same load.
/// `/readyz` with 10,000 VMs, on main.
const PREVIOUS_READYZ_MS: f64 = 13_590.0;
/// `/readyz` with an empty state file, on main.
const PREVIOUS_READYZ_IDLE_MS: f64 = 113.0;
/// Embedded `hcp vm list`, 100 hosts and 1,000 VMs, on main.
const PREVIOUS_LIST_MS: f64 = 747.0;

const HOSTS: usize = 100;
const ROUNDS: usize = 5;

/// Variables that would change how `hcp` runs; every run starts without them.
const CLEAR_ENV: &[&str] = &[
    "HCP_CONFIG",
    "HCP_LISTEN",
    "HCP_URL",
    "HCP_TOKEN",
    "HCP_PROJECT",
    "HCP_OUTPUT",
    "HCP_SIM_STATE",
    "HCP_DATABASE_URL",
    "HCP_LOG",
    "HCP_LOG_LEVEL",
    "HCP_LOG_FORMAT",
    "RUST_LOG",
    "INVENTORY_REFRESH_INTERVAL",
    "OIDC_ISSUER_URL",
    "OIDC_CLIENT_ID",
];

/// Returns the `hcp` binary: `HCP_BIN`, else a fresh release build next to this bench.
fn hcp_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HCP_BIN") {
        return PathBuf::from(bin);
    }
    // This bench runs from <target>/release/deps/.
    let exe = std::env::current_exe().expect("the bench's path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the bench runs from <target>/release/deps")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "hcp-cli",
            "--bin",
            "hcp",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p hcp-cli failed");
    target.join("release").join("hcp")
}

/// Writes a state file in the simulator's format: `hosts` hosts named `host-000`..., with
/// `vms` VMs spread over them, each carrying HCP's mark for project `bench`.
fn write_state(path: &Path, hosts: usize, vms: usize) {
    let mut state = SimState::default();
    for h in 0..hosts {
        let name = format!("host-{h:03}");
        state.hosts.insert(
            name.clone(),
            SimHost::new(&name, "zone-a", 100_000, 100_000_000),
        );
    }
    let size = Resources {
        vcpus: 1,
        memory_mib: 1024,
        disk_gib: 10,
    };
    for v in 0..vms {
        let host = format!("host-{:03}", v % hosts);
        let mut mark = HcpMark::new(VmId::generate(), ProjectId::new("bench"));
        mark.image = Some("ubuntu-24.04".into());
        mark.flavor = Some("small".into());
        mark.zone = Some("zone-a".into());
        let mut vm = SimVm::new(format!("vm-{v:05}"), PowerState::Running, size, Some(mark));
        state.next_id += 1;
        vm.native_id = format!("sim-{}", state.next_id);
        vm.image = "ubuntu-24.04".into();
        let h = state.hosts.get_mut(&host).expect("host");
        h.vms.insert(vm.native_id.clone(), Box::new(vm));
    }
    // As the simulator writes it.
    let text = serde_json::to_vec_pretty(&state).expect("serialize");
    std::fs::write(path, text).expect("write the state file");
}

/// A hosts file of `HOSTS` simulated hosts keeping their state in `state`.
fn hosts_file(dir: &Path, state: &Path) -> PathBuf {
    let mut hosts = String::new();
    for h in 0..HOSTS {
        hosts.push_str(&format!(
            "      - {{name: host-{h:03}, zone: zone-a, vcpus: 100000, memory_mib: 100000000}}\n"
        ));
    }
    let text = format!(
        r#"providers:
  - name: sim
    kind: sim
    settings:
      images: [ubuntu-24.04]
      state_file: {state}
    hosts:
{hosts}zones:
  - name: zone-a
projects:
  - name: bench
catalog:
  images: [{{name: ubuntu-24.04, min_disk_gib: 5}}]
  flavors: [{{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10}}]
engine:
  inventory_refresh_interval: 0s
"#,
        state = state.display()
    );
    let path = dir.join("hosts.yaml");
    std::fs::write(&path, text).expect("write the hosts file");
    path
}

fn command(bin: &Path, dir: &Path) -> Command {
    let mut c = Command::new(bin);
    for var in CLEAR_ENV {
        c.env_remove(var);
    }
    c.env("HOME", dir.join("home"))
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("USER", "bench");
    c
}

/// Kills the server when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Returns the status code of `GET path`, or `None` while nothing answers.
fn get_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Starts `hcp serve` on `hosts` and returns the time until `/readyz` first answers 200.
fn time_to_ready(bin: &Path, dir: &Path, hosts: &Path) -> Duration {
    let started = Instant::now();
    let mut child = command(bin, dir)
        .args(["--config"])
        .arg(hosts)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("HCP_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hcp serve");
    let stdout = child.stdout.take().expect("stdout");
    let serve = Serve(child);
    // The banner's first line names the URL; it prints once the port is bound.
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("read the banner");
    let addr = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no URL in the banner: {first}"))
        .trim_end_matches('/')
        .to_string();
    let limit = started + Duration::from_secs(120);
    loop {
        if get_status(&addr, "/readyz") == Some(200) {
            let ready = started.elapsed();
            drop(serve);
            return ready;
        }
        assert!(Instant::now() < limit, "hcp serve never became ready");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn previous(figure: f64) -> String {
    if figure.is_nan() {
        "previous: not measured".to_string()
    } else {
        format!("previous: {figure:.0} ms (main at {MAIN})")
    }
}

fn readyz(bin: &Path) {
    println!("sim/readyz: `hcp serve` start to first /readyz 200, {HOSTS} simulated hosts");
    for (vms, before, target) in [
        (0, PREVIOUS_READYZ_IDLE_MS, "issue 20: 30 ms"),
        (
            10_000,
            PREVIOUS_READYZ_MS,
            "issue 20: 4.1 s; target: <= 300 ms",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("sim.json");
        write_state(&state, HOSTS, vms);
        let hosts = hosts_file(dir.path(), &state);
        let times: Vec<Duration> = (0..ROUNDS)
            .map(|_| time_to_ready(bin, dir.path(), &hosts))
            .collect();
        let best = times.iter().min().copied().unwrap_or_default();
        println!(
            "  {vms:>6} VMs in the state file: median {:>6.0} ms, best {:>6.0} ms over {ROUNDS} starts   ({}; {target})",
            ms(median(times)),
            ms(best),
            previous(before)
        );
    }
}

fn list(bin: &Path) {
    let vms = 1_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("sim.json");
    write_state(&state, HOSTS, vms);
    let hosts = hosts_file(dir.path(), &state);
    let run = || {
        let t = Instant::now();
        let out = command(bin, dir.path())
            .arg("--config")
            .arg(&hosts)
            .args(["--output", "json", "vm", "list", "--project", "bench"])
            .output()
            .expect("run hcp vm list");
        let e = t.elapsed();
        assert!(
            out.status.success(),
            "hcp vm list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(
            listed.as_array().map(Vec::len),
            Some(vms),
            "every VM listed"
        );
        e
    };
    // The first run creates the environment's directory and jobs file.
    run();
    let rounds = 2 * ROUNDS + 1;
    let times: Vec<Duration> = (0..rounds).map(|_| run()).collect();
    let best = times.iter().min().copied().unwrap_or_default();
    println!("sim/list: embedded `hcp vm list` (one process), {HOSTS} hosts, {vms} VMs");
    println!(
        "  median {:>6.1} ms, best {:>6.1} ms over {rounds} runs   ({}; issue 20: 289 ms; target: <= 60 ms)",
        ms(median(times)),
        ms(best),
        previous(PREVIOUS_LIST_MS)
    );
}

fn main() {
    let only = std::env::var("HCP_BENCH_ONLY").unwrap_or_default();
    let bin = hcp_bin();
    println!("binary: {}", bin.display());
    if only.is_empty() || only == "readyz" {
        readyz(&bin);
    }
    if only.is_empty() || only == "list" {
        list(&bin);
    }
}
