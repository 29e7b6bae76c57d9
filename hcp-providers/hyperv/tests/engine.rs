//! The provider inside HCP's engine, configured from a hosts file like `hcp serve` does:
//! long VHDX copies report progress to the job log, temporary faults are retried a bounded
//! number of times, failover clusters keep VMs found, and consoles describe VMConnect.

mod common;

use std::sync::Arc;
use std::time::Duration;

use hcp_core::store::Scope;
use hcp_core::{
    Config, ConsoleKind, CreateVm, Engine, ErrorKind, GetConsole, HcpMark, HostInventory, JobState,
    JobUpdate, OpContext, Principal, ProjectId, Provider, RequestContext, Resources, StartVm,
    StopVm, VmId, VmSpec, VmTarget,
};
use serde_json::json;

fn hosts_file(th: &common::TestHost, disk_mode: &str) -> String {
    let hosts: Vec<String> = th
        .hosts
        .iter()
        .map(|(name, port)| {
            format!("      - {{name: {name}, zone: zone-a, settings: {{address: 127.0.0.1, port: {port}}}}}")
        })
        .collect();
    format!(
        r#"
providers:
  - name: hyperv-test
    kind: hyperv
    settings:
      tls_verify: false
      disk_mode: {disk_mode}
      operation_timeout: 5s
      networks: {{storage: Default Switch}}
    hosts:
{}
zones:
  - name: zone-a
projects:
  - name: demo
catalog:
  images: [{{name: ubuntu-24.04, os: linux, min_disk_gib: 1}}]
  flavors: [{{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10}}]
  networks: [{{name: default}}, {{name: storage}}]
engine:
  retry: {{max_attempts: 3, initial_delay: 10ms, max_delay: 50ms, factor: 2.0, jitter: false}}
"#,
        hosts.join("\n")
    )
}

async fn engine(th: &common::TestHost, disk_mode: &str) -> (Engine, tempfile::TempDir) {
    common::engine(Config::from_yaml(&hosts_file(th, disk_mode), "test hosts file").unwrap()).await
}

fn rc(key: &str) -> RequestContext {
    RequestContext::new("demo", Principal::new("alice")).with_idempotency_key(Some(key.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhdx_copy_reports_progress_to_the_job_log() {
    let th = common::TestHost::start(1, None);
    let (engine, _secrets) = engine(&th, "copy").await;
    let submitted = engine
        .create_vm(
            &rc("copy-1"),
            VmSpec::new("copied", "ubuntu-24.04", "small"),
        )
        .await
        .unwrap();
    let scope = Scope::Project(ProjectId::new("demo"));
    let mut watch = engine.watch_job(&scope, &submitted.job_id).await.unwrap();
    let mut lines = Vec::new();
    let mut progress = Vec::new();
    let job = loop {
        match watch.next().await.expect("the watch ends with the job") {
            JobUpdate::Log(l) => {
                if l.message.contains("copying template VHDX") {
                    // A script's own words may name the host's paths: operators only.
                    assert_eq!(l.audience, hcp_core::LogAudience::Operators, "{l:?}");
                }
                lines.push(l.message)
            }
            JobUpdate::Status { progress: p, .. } => progress.push(p),
            JobUpdate::End(job) => break *job,
        }
    };
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("copying template VHDX"))
            .count()
            >= 3,
        "copy progress lines reach the job log: {lines:?}"
    );
    let vm = engine.get_vm(&scope, &submitted.vm_id).await.unwrap();
    assert_eq!(&*vm.binding.host, "hv1");
    let state = th.control("hv1", "state", None);
    let disk = format!("{}.vhdx", submitted.vm_id);
    assert!(
        state["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().ends_with(&disk)),
        "the copied disk exists: {state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_faults_are_retried_a_bounded_number_of_times() {
    let th = common::TestHost::start(1, None);
    let (engine, _secrets) = engine(&th, "differencing").await;
    let created = engine
        .create_vm(
            &rc("retry-1"),
            VmSpec::new("retried", "ubuntu-24.04", "small"),
        )
        .await
        .unwrap();
    let scope = Scope::Project(ProjectId::new("demo"));
    let job = engine
        .wait_job(&scope, &created.job_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let stopped = engine
        .stop_vm(&rc("stop-1"), &created.vm_id, true)
        .await
        .unwrap();
    let job = engine
        .wait_job(&scope, &stopped.job_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    th.control("hv1", "faults", Some(json!({ "quota_limit": 1000 })));
    let before = th.control("hv1", "status", None)["requests"]
        .as_u64()
        .unwrap();
    let started = engine
        .start_vm(&rc("start-1"), &created.vm_id)
        .await
        .unwrap();
    let job = engine
        .wait_job(&scope, &started.job_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts, 3, "max_attempts bounds the retries");
    let err = job.error.unwrap();
    assert_eq!(err.kind, ErrorKind::ProviderUnavailable, "{err:?}");
    let after = th.control("hv1", "status", None)["requests"]
        .as_u64()
        .unwrap();
    assert!(
        after - before <= 3 * 4,
        "{} WinRM requests for 3 attempts",
        after - before
    );
    let status = th.control("hv1", "status", None);
    assert!(
        status["max_concurrent_shells"].as_u64().unwrap() <= 4,
        "{status}"
    );
}

fn mark_args(host: &str, name: &str) -> (CreateVm, VmTarget) {
    let vm_id = VmId::generate();
    let mut mark = HcpMark::new(vm_id.clone(), ProjectId::new("demo"));
    mark.image = Some("ubuntu-24.04".into());
    let res = Resources {
        vcpus: 1,
        memory_mib: 128,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_that_failed_over_is_found_on_its_owner_node() {
    let th = common::TestHost::start(2, Some("clu1"));
    let p: Arc<dyn Provider> = Arc::new(
        hcp_provider_hyperv::HypervProvider::new(
            "hyperv",
            common::settings(),
            th.entries(Some("clu1")),
            common::creds(common::PASSWORD),
        )
        .unwrap(),
    );
    let ctx = OpContext::detached();
    let (args, mut target) = mark_args("hv1", "clustered");
    let created = p.create_vm(&ctx, args).await.unwrap();
    target.native_id = Some(created.native_id.clone());
    th.control(
        "hv1",
        "failover",
        Some(json!({ "vm_id": created.native_id, "node": "hv2" })),
    );
    let on1 = p.host_inventory(HostInventory::new("hv1")).await.unwrap();
    let on2 = p.host_inventory(HostInventory::new("hv2")).await.unwrap();
    assert!(!on1.vms.iter().any(|v| v.native_id == created.native_id));
    let moved = on2
        .vms
        .iter()
        .find(|v| v.native_id == created.native_id)
        .expect("the owner node reports the VM");
    assert_eq!(
        moved.mark.as_ref().unwrap().vm_id,
        target.vm_id,
        "its mark moves with it"
    );
    // Operations addressed to the old node find the VM on its owner node.
    p.stop_vm(&ctx, StopVm::new(target.clone()).with_force(true))
        .await
        .unwrap();
    let started = p
        .start_vm(&ctx, StartVm::new(target.clone()))
        .await
        .unwrap();
    assert!(!started.was_running);
    let console = p.console(GetConsole::new(target.clone())).await.unwrap();
    assert_eq!(console.kind, ConsoleKind::Rdp);
    assert!(console.url.contains("hv2:2179"), "{}", console.url);
    assert!(console.url.contains(&created.native_id), "{}", console.url);
    // HCP relays the VMConnect port and names the VM in the RDP pre-connection PDU itself.
    let upstream = console.upstream.clone().expect("a relayed RDP console");
    assert_eq!(
        upstream,
        hcp_core::ConsoleUpstream::tcp("hv2:2179").with_handshake(
            hcp_core::ConsoleHandshake::RdpPreconnection(created.native_id.clone())
        )
    );
    assert!(console.expires_at > chrono::Utc::now());
    let json = serde_json::to_value(&console).unwrap();
    assert_eq!(json["type"], "rdp");
    let e = p
        .console(GetConsole::new(target.clone()).with_kind(Some(ConsoleKind::Vnc)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported);
    let deleted = p
        .delete_vm(&ctx, hcp_core::DeleteVm::new(target).with_force(true))
        .await
        .unwrap();
    assert!(deleted.existed);
}

/// Reads a job to its end the way the tenant shells do (`JobUpdate::tenant_view` on the watch,
/// `Job::tenant_view`) and returns the tenant text and the final job.
async fn tenant_text_of(engine: &Engine, job_id: &hcp_core::JobId) -> (String, hcp_core::Job) {
    let scope = Scope::Project(ProjectId::new("demo"));
    let mut watch = engine.watch_job(&scope, job_id).await.unwrap();
    let mut text = String::new();
    let job = loop {
        let update = tokio::time::timeout(Duration::from_secs(60), watch.next())
            .await
            .expect("the job ends")
            .expect("the watch ends with the job");
        let end = match &update {
            JobUpdate::End(job) => Some(job.as_ref().clone()),
            _ => None,
        };
        if let Some(u) = update.tenant_view() {
            text.push_str(&serde_json::to_string(&u).unwrap());
            text.push('\n');
        }
        if let Some(job) = end {
            break job;
        }
    };
    text.push_str(&serde_json::to_string(&job.tenant_view()).unwrap());
    (text, job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_views_of_failed_jobs_name_no_host_path_or_native_id() {
    const SECRET_PATH: &str = "D:\\Hyper-V\\Secret-Store";
    let th = common::TestHost::start(1, None);
    let (engine, _secrets) = engine(&th, "copy").await;
    let scope = Scope::Project(ProjectId::new("demo"));
    let fault = |script: &str, category: &str| {
        th.control(
            "hv1",
            "faults",
            Some(json!({ format!("error:{script}"): {
                "Category": category,
                "Message": format!("The operation failed on host hv1: the file {SECRET_PATH}\\x.vhdx is in use"),
                "Cmdlet": "Start-VM",
            } })),
        );
    };
    let mut tenant = String::new();

    let created = engine
        .create_vm(
            &rc("sweep-1"),
            VmSpec::new("swept", "ubuntu-24.04", "small"),
        )
        .await
        .unwrap();
    let (text, job) = tenant_text_of(&engine, &created.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    tenant.push_str(&text);
    let vm = engine.get_vm(&scope, &created.vm_id).await.unwrap();
    let native_id = vm.binding.native_id.clone().expect("a Hyper-V VM id");

    // A temporary failure naming the host and a path, retried; then a permanent one.
    fault("Stop-HcpVm", "ResourceBusy");
    let stopped = engine
        .stop_vm(&rc("sweep-stop"), &created.vm_id, true)
        .await
        .unwrap();
    let (text, job) = tenant_text_of(&engine, &stopped.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    assert_eq!(job.attempts, 2, "the busy host was retried");
    assert!(text.contains("retrying in"), "{text}");
    tenant.push_str(&text);

    fault("Start-HcpVm", "NotSpecified");
    let started = engine
        .start_vm(&rc("sweep-start"), &created.vm_id)
        .await
        .unwrap();
    let (text, job) = tenant_text_of(&engine, &started.job_id).await;
    assert_eq!(job.state, JobState::Failed);
    let err = job.error.clone().unwrap();
    assert_eq!(
        err.message, "Hyper-V reported an error (Start-VM)",
        "{err:?}"
    );
    // Operators read where and what.
    let detail = err.detail.clone().unwrap_or_default();
    assert!(
        detail.contains("hv1") && detail.contains(SECRET_PATH),
        "{err:?}"
    );
    tenant.push_str(&text);

    // A create that fails on the host.
    fault("New-HcpVm", "NotSpecified");
    let failed = engine
        .create_vm(
            &rc("sweep-2"),
            VmSpec::new("swept-2", "ubuntu-24.04", "small"),
        )
        .await
        .unwrap();
    let (text, job) = tenant_text_of(&engine, &failed.job_id).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    tenant.push_str(&text);

    for id in [&created.vm_id, &failed.vm_id] {
        let vm = engine.get_vm(&scope, id).await.unwrap();
        tenant.push_str(&serde_json::to_string(&vm.tenant_view()).unwrap());
    }
    for secret in ["hv1", "Secret-Store", native_id.as_str(), "hyperv-test"] {
        assert!(
            !tenant.contains(secret),
            "tenants read `{secret}`:\n{tenant}"
        );
    }
    assert!(
        tenant.contains("start_vm failed: Hyper-V reported an error"),
        "{tenant}"
    );
}

/// Every requested network becomes an adapter (none is dropped), and a VM beyond Hyper-V's
/// declared limits is refused before any job exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_networks_give_two_adapters_and_oversized_vms_are_refused_before_a_job() {
    let th = common::TestHost::start(1, None);
    let (engine, _secrets) = engine(&th, "differencing").await;
    let mut spec = VmSpec::new("two-nics", "ubuntu-24.04", "small");
    spec.networks = vec![
        hcp_core::NetworkAttachment {
            network: "default".into(),
        },
        hcp_core::NetworkAttachment {
            network: "storage".into(),
        },
    ];
    let submitted = engine.create_vm(&rc("nics-1"), spec).await.unwrap();
    let scope = Scope::Project(ProjectId::new("demo"));
    let job = engine
        .wait_job(&scope, &submitted.job_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let state = th.control("hv1", "state", None);
    let vm = state["vms"]
        .as_object()
        .unwrap()
        .values()
        .find(|v| v["name"] == "two-nics")
        .unwrap_or_else(|| panic!("the VM is on the test host: {state}"));
    let switches: Vec<&str> = vm["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["SwitchName"].as_str().unwrap())
        .collect();
    assert_eq!(switches, ["LAN", "Default Switch"], "{vm}");

    let jobs_before = engine
        .list_jobs(&scope, &Default::default(), &Default::default())
        .await
        .unwrap()
        .items
        .len();
    let mut big = VmSpec::new("too-many-cpus", "ubuntu-24.04", "small");
    big.vcpus = Some(500);
    let e = engine.create_vm(&rc("big-1"), big).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("vcpus"), "{e}");
    let mut nine = VmSpec::new("nine-nics", "ubuntu-24.04", "small");
    nine.networks = (0..9)
        .map(|_| hcp_core::NetworkAttachment {
            network: "default".into(),
        })
        .collect();
    let e = engine.create_vm(&rc("nics-9"), nine).await.unwrap_err();
    assert_eq!(e.field(), Some("networks"), "{e}");
    let jobs_after = engine
        .list_jobs(&scope, &Default::default(), &Default::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(jobs_before, jobs_after, "refused before any job exists");
}

/// The engine lists a VM's snapshots before it accepts a create; with the Hyper-V provider's
/// list in place, HCP users checkpoint, list, revert and delete through the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_go_through_the_engine() {
    let th = common::TestHost::start(1, None);
    let (engine, _secrets) = engine(&th, "differencing").await;
    let scope = Scope::Project(ProjectId::new("demo"));
    let created = engine
        .create_vm(
            &rc("cp-create"),
            VmSpec::new("checkpointed", "ubuntu-24.04", "small"),
        )
        .await
        .unwrap();
    let wait = |job_id: hcp_core::JobId| {
        let engine = &engine;
        let scope = &scope;
        async move {
            let job = engine
                .wait_job(scope, &job_id, Some(Duration::from_secs(60)))
                .await
                .unwrap();
            assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
        }
    };
    wait(created.job_id.clone()).await;
    let vm = created.vm_id.clone();
    for name in ["before-upgrade", "after-upgrade"] {
        let s = engine
            .create_snapshot(&rc(&format!("cp-{name}")), &vm, name)
            .await
            .unwrap();
        wait(s.submitted.job_id).await;
    }
    let listed = engine.list_snapshots(&rc("cp-list"), &vm).await.unwrap();
    let names: Vec<_> = listed.iter().map(|s| (s.name.as_str(), s.memory)).collect();
    assert_eq!(
        names,
        [("before-upgrade", false), ("after-upgrade", false)],
        "Production checkpoints, oldest first"
    );
    // A name the VM already has is refused before any job exists.
    let e = engine
        .create_snapshot(&rc("cp-again"), &vm, "before-upgrade")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");

    let reverted = engine
        .revert_snapshot(&rc("cp-revert"), &vm, &listed[0].id)
        .await
        .unwrap();
    assert_eq!(reverted.memory_state_kept, Some(false));
    wait(reverted.submitted.job_id).await;
    let deleted = engine
        .delete_snapshot(&rc("cp-delete"), &vm, &listed[1].id)
        .await
        .unwrap();
    wait(deleted.submitted.job_id).await;
    let listed = engine.list_snapshots(&rc("cp-list-2"), &vm).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["before-upgrade"]
    );
    let records = th.control("hv1", "records", None);
    assert_eq!(records["violations"], json!([]), "{records}");
}
