//! Hyper-V provider benchmark against HCP's WinRM test host. Prints:
//! 1. the round-trip time of one script call (`Start-HcpVm.ps1` on a running VM: shell create,
//!    command, stdin, receive, delete over NTLM/HTTPS) through HCP's provider, and through
//!    pywinrm running the same deployed script with the same parameter document;
//! 2. HCP's throughput with 50 concurrent operations (creates, then deletes) across 5 hosts,
//!    with the default cap of 4 commands per host.
//!
//! Needs the test host's virtualenv (`hcp-providers/hyperv/testhost/setup.sh`).
//! Run: `cargo bench -p hcp-benches --bench hyperv` (`HCP_BENCH_CALLS` sets the call count).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hcp_core::{
    CreateVm, DeleteVm, HcpMark, OpContext, ProjectId, Provider, Resources, StartVm, VmId, VmTarget,
};
use hcp_provider_hyperv::scripts::wrapper_for_path;
use hcp_provider_hyperv::{Credentials, HostEntry, HostSettings, HypervProvider, HypervSettings};

const USER: &str = "hcp";
const PASSWORD: &str = "bench-password";

struct Host {
    child: Child,
    ports: Vec<u16>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    let venv = std::env::var("HCP_WINRM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/hcp-winrm-venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run hcp-providers/hyperv/testhost/setup.sh",
        py.display()
    );
    py
}

fn testhost_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hcp-providers/hyperv/testhost")
}

fn start(hosts: usize) -> Host {
    let mut child = Command::new(python())
        .current_dir(testhost_dir())
        .args(["-m", "hcp_winrm_testhost", "--tls", "--ntlm-binding", "any"])
        .args([
            "--hosts",
            &hosts.to_string(),
            "--username",
            USER,
            "--password",
            PASSWORD,
        ])
        .args(["--copy-seconds", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the test host");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the test host prints its ports");
    let info: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    let ports = info["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| h["port"].as_u64().expect("port") as u16)
        .collect();
    Host { child, ports }
}

fn provider(host: &Host) -> HypervProvider {
    let entries = host
        .ports
        .iter()
        .enumerate()
        .map(|(i, port)| HostEntry {
            name: format!("hv{}", i + 1),
            zone: "z".into(),
            vcpus: None,
            memory_mib: None,
            settings: HostSettings {
                address: Some("127.0.0.1".into()),
                port: Some(*port),
                cluster: None,
            },
        })
        .collect();
    let settings = HypervSettings {
        tls_verify: false,
        ..HypervSettings::default()
    };
    let creds = Credentials {
        username: USER.into(),
        password: hcp_core::SecretString::new(PASSWORD),
    };
    HypervProvider::new("bench", settings, entries, creds).expect("provider")
}

fn args(host: &str, name: &str) -> (CreateVm, VmTarget) {
    let vm_id = VmId::generate();
    let mut mark = HcpMark::new(vm_id.clone(), ProjectId::new("bench"));
    mark.image = Some("ubuntu-24.04".into());
    let res = Resources {
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
    };
    (
        CreateVm::new(mark, host, name, "ubuntu-24.04", res),
        VmTarget {
            vm_id,
            name: name.into(),
            host: host.into(),
            native_id: None,
        },
    )
}

fn summary(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(|a, b| a.total_cmp(b));
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let p = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label:<44} n={:<4} mean {mean:7.2} ms   p50 {:7.2} ms   p95 {:7.2} ms",
        ms.len(),
        p(0.5),
        p(0.95)
    );
}

const PYWINRM: &str = r#"
import base64, json, sys, time
from winrm.protocol import Protocol
port, user, password, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
text, params = json.load(sys.stdin)
encoded = base64.b64encode(text.encode("utf-16-le")).decode()
doc = base64.b64encode(json.dumps(params).encode()) + b"\r\n"
p = Protocol(f"https://127.0.0.1:{port}/wsman", transport="ntlm", username=user, password=password,
             server_cert_validation="ignore", message_encryption="auto")
times = []
for _ in range(n):
    t = time.perf_counter()
    shell = p.open_shell()
    cmd = p.run_command(shell, "powershell.exe", ["-NoLogo", "-NoProfile", "-NonInteractive",
                        "-ExecutionPolicy", "Bypass", "-EncodedCommand", encoded])
    p.send_command_input(shell, cmd, doc, end=True)
    out, err, code = p.get_command_output(shell, cmd)
    p.cleanup_command(shell, cmd)
    p.close_shell(shell)
    assert json.loads(out)["ok"], out
    times.append((time.perf_counter() - t) * 1000)
print(json.dumps(times))
"#;

fn pywinrm_times(port: u16, text: &str, params: serde_json::Value, n: usize) -> Vec<f64> {
    let mut child = Command::new(python())
        .args([
            "-c",
            PYWINRM,
            &port.to_string(),
            USER,
            PASSWORD,
            &n.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run pywinrm");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(serde_json::json!([text, params]).to_string().as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("pywinrm ends");
    assert!(out.status.success(), "pywinrm failed");
    serde_json::from_slice(&out.stdout).expect("pywinrm prints its times")
}

fn main() {
    let calls: usize = std::env::var("HCP_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ctx = OpContext::detached();
        println!("== Hyper-V provider against the WinRM test host (NTLM over HTTPS, 2 cores) ==");
        {
            let host = start(1);
            let p = provider(&host);
            p.deploy_host("hv1").await.expect("deploy");
            let (a, mut t) = args("hv1", "rtt");
            t.native_id = Some(p.create_vm(&ctx, a).await.expect("create").native_id);
            for _ in 0..3 {
                p.start_vm(&ctx, StartVm::new(t.clone()))
                    .await
                    .expect("warm-up");
            }
            let mut hcp = Vec::new();
            for _ in 0..calls {
                let s = Instant::now();
                p.start_vm(&ctx, StartVm::new(t.clone()))
                    .await
                    .expect("start");
                hcp.push(s.elapsed().as_secs_f64() * 1000.0);
            }
            summary("script call round trip, HCP (winrm-rs)", hcp);
            let path = format!(
                r"C:\ProgramData\HCP\scripts\{}\Start-HcpVm.ps1",
                p.script_version()
            );
            let params = serde_json::json!({
                "VmId": t.vm_id.as_str(),
                "NativeId": t.native_id.clone().expect("native id"),
                "Cluster": false,
            });
            let py = pywinrm_times(host.ports[0], &wrapper_for_path(&path), params, calls);
            summary("script call round trip, pywinrm 0.5.0", py);
        }
        {
            let host = start(5);
            let p = Arc::new(provider(&host));
            for r in p.deploy_all().await {
                r.1.expect("deploy");
            }
            let targets: Vec<(CreateVm, VmTarget)> = (0..50)
                .map(|i| args(&format!("hv{}", i % 5 + 1), &format!("tp{i}")))
                .collect();
            let s = Instant::now();
            let creates = targets.iter().map(|(a, _)| {
                let p = p.clone();
                let a = a.clone();
                async move { p.create_vm(&OpContext::detached(), a).await }
            });
            let created = futures::future::join_all(creates).await;
            let create_wall = s.elapsed();
            let ids: Vec<VmTarget> = created
                .into_iter()
                .zip(&targets)
                .map(|(r, (_, t))| {
                    let mut t = t.clone();
                    t.native_id = Some(r.expect("create").native_id);
                    t
                })
                .collect();
            let s = Instant::now();
            let deletes = ids.iter().map(|t| {
                let p = p.clone();
                let t = t.clone();
                async move {
                    p.delete_vm(&OpContext::detached(), DeleteVm::new(t).with_force(true))
                        .await
                }
            });
            for r in futures::future::join_all(deletes).await {
                assert!(r.expect("delete").existed);
            }
            let delete_wall = s.elapsed();
            let max_in_flight = (1..=5)
                .filter_map(|i| p.host_stats(&format!("hv{i}")))
                .map(|s| s.max_in_flight())
                .max()
                .unwrap_or(0);
            let rate = |d: Duration| 50.0 / d.as_secs_f64();
            println!(
                "50 concurrent creates across 5 hosts          wall {:7.1} ms   {:6.1} ops/s",
                create_wall.as_secs_f64() * 1000.0,
                rate(create_wall)
            );
            println!(
                "50 concurrent deletes across 5 hosts          wall {:7.1} ms   {:6.1} ops/s",
                delete_wall.as_secs_f64() * 1000.0,
                rate(delete_wall)
            );
            println!("most commands in flight on one host: {max_in_flight} (cap 4)");
        }
    });
}
