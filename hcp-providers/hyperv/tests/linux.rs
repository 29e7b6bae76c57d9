//! Linux guests on the WinRM test host: an image with `linux: {completion_signal: true}` gets
//! the KVP signal in its cloud-init user-data (the seed ISO's `user-data` checked byte for byte:
//! the tenant's part unchanged, then the signal's `runcmd`), and the create job waits for the
//! guest's `HcpSetupComplete` item, logging "waiting for guest setup", with a clean timeout when
//! it never comes. The guest is played by the test host's `guest_kvp` control, as for Windows.

mod common;

use std::time::Duration;

use hcp_core::store::Scope;
use hcp_core::{
    Config, Engine, ErrorKind, JobState, JobUpdate, Principal, ProjectId, RequestContext, VmSpec,
};
use hcp_provider_hyperv::linux::with_completion_signal;
use serde_json::{Value, json};

const TENANT_USER_DATA: &str =
    "#cloud-config\nruncmd:\n  - [\"touch\", \"/var/tmp/tenant-was-here\"]\n";

async fn engine(th: &common::TestHost, timeout: &str) -> (Engine, tempfile::TempDir) {
    let (name, port) = &th.hosts[0];
    let yaml = format!(
        r#"
providers:
  - name: hyperv-test
    kind: hyperv
    settings:
      tls_verify: false
      operation_timeout: 5s
      images:
        ubuntu-24.04:
          linux: {{completion_signal: true, setup_timeout: {timeout}, setup_poll: 200ms}}
    hosts:
      - {{name: {name}, zone: zone-a, settings: {{address: 127.0.0.1, port: {port}}}}}
zones:
  - name: zone-a
projects:
  - name: demo
catalog:
  images: [{{name: ubuntu-24.04, os: linux, min_disk_gib: 1}}]
  flavors: [{{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10}}]
  networks: [{{name: default}}]
engine:
  retry: {{max_attempts: 3, initial_delay: 10ms, max_delay: 50ms, factor: 2.0, jitter: false}}
"#
    );
    common::engine(Config::from_yaml(&yaml, "test hosts file").unwrap()).await
}

/// Creates `name`; when the job logs "waiting for guest setup", reads the seed ISO and, when
/// `signal`, writes the guest's KVP item. Returns the job's log lines, the job and the seed's
/// `user-data`.
async fn create(
    engine: &Engine,
    name: &str,
    th: &common::TestHost,
    signal: bool,
) -> (Vec<String>, hcp_core::Job, String, String) {
    let rc = RequestContext::new("demo", Principal::new("alice"))
        .with_idempotency_key(Some(format!("create-{name}")));
    let submitted = engine
        .create_vm(
            &rc,
            VmSpec::new(name, "ubuntu-24.04", "small").with_user_data(TENANT_USER_DATA),
        )
        .await
        .unwrap();
    let vm_id = submitted.vm_id.as_str().to_string();
    let scope = Scope::Project(ProjectId::new("demo"));
    let mut watch = engine.watch_job(&scope, &submitted.job_id).await.unwrap();
    let mut lines = Vec::new();
    let mut media = Value::Null;
    let job = loop {
        let update = tokio::time::timeout(Duration::from_secs(60), watch.next())
            .await
            .expect("the job ends")
            .expect("the watch ends with the job");
        match update {
            JobUpdate::Log(l) => {
                let waiting = l.message == "waiting for guest setup";
                lines.push(serde_json::to_string(&l).unwrap());
                if waiting && media.is_null() {
                    let state = th.control("hv1", "state", None);
                    media = state["media"].clone();
                    let vm = state["vms"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .find(|(_, v)| v["name"] == name)
                        .map(|(k, _)| k.clone())
                        .expect("the VM exists while setup runs");
                    if signal {
                        th.control(
                            "hv1",
                            "guest_kvp",
                            Some(json!({"vm_id": vm, "key": "HcpSetupComplete", "value": vm_id})),
                        );
                    }
                }
            }
            JobUpdate::End(job) => break *job,
            JobUpdate::Status { .. } => {}
        }
    };
    let seed = media
        .as_object()
        .expect("media was read while setup ran")
        .iter()
        .find(|(k, _)| k.ends_with(&format!("{name}-{vm_id}-cidata.iso")))
        .map(|(_, v)| v.clone())
        .expect("the cloud-init seed ISO was attached");
    let user_data = seed["user-data"].as_str().unwrap().to_string();
    (lines, job, user_data, vm_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linux_create_waits_for_the_cloud_init_kvp_signal() {
    let th = common::TestHost::start(1, None);
    let (engine, _s) = engine(&th, "60s").await;
    let (lines, job, user_data, vm_id) = create(&engine, "web-01", &th, true).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    assert!(lines.iter().any(|l| l.contains("waiting for guest setup")));
    assert!(lines.iter().any(|l| l.contains("guest setup finished")));
    assert_eq!(
        user_data,
        with_completion_signal(Some(TENANT_USER_DATA), &vm_id).unwrap(),
        "the seed holds the tenant's user-data and the signal"
    );
    assert!(
        user_data.contains("/var/lib/hyperv/.kvp_pool_1"),
        "{user_data}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linux_create_times_out_cleanly_when_the_signal_never_comes() {
    let th = common::TestHost::start(1, None);
    let (engine, _s) = engine(&th, "2s").await;
    let (lines, job, _, _) = create(&engine, "web-silent", &th, false).await;
    assert_eq!(job.state, JobState::Failed);
    let error = job.error.clone().unwrap();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error:?}");
    assert!(
        error
            .message
            .contains("guest setup did not signal completion within 2s"),
        "{error:?}"
    );
    assert!(error.message.contains("hv_kvp_daemon"), "{error:?}");
    assert!(lines.iter().any(|l| l.contains("waiting for guest setup")));
    assert_eq!(job.attempts, 1, "a timed-out setup is not retried: {job:?}");
}
