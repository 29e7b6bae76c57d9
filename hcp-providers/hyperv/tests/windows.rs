//! Windows guests on the WinRM test host: the answer file rendered from the shipped template
//! with secrets, on an ISO built on the host (its contents checked byte for byte), the create
//! job waiting for the guest's KVP completion signal and logging "waiting for guest setup", the
//! ISO detached and deleted after setup, a clean timeout when the signal never comes, and no
//! secret in any log line, job or file left behind.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use hcp_core::store::Scope;
use hcp_core::{
    Config, Engine, ErrorKind, JobState, JobUpdate, Principal, ProjectId, RequestContext,
    SecretString, VmSpec,
};
use hcp_provider_hyperv::unattend::{Inputs, render};
use serde_json::{Value, json};

const ADMIN_PW: &str = "Adm1n-<pässword>&";
const JOIN_USER: &str = "CORP\\svc-join";
const JOIN_PW: &str = "J0in-secret-&-more";

fn template() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("unattend/windows-server-2022.xml")
}

async fn engine(th: &common::TestHost, timeout: &str) -> (Engine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("winrm_username"), common::USER).unwrap();
    std::fs::write(dir.path().join("winrm_password"), common::PASSWORD).unwrap();
    std::fs::write(dir.path().join("win_admin"), ADMIN_PW).unwrap();
    std::fs::write(dir.path().join("join_user"), JOIN_USER).unwrap();
    std::fs::write(dir.path().join("join_password"), JOIN_PW).unwrap();
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
        windows-2022:
          windows:
            unattend_template: {template}
            time_zone: W. Europe Standard Time
            locale: de-DE
            admin_password_secret: win_admin
            domain_join: {{domain: corp.example.com, ou: "OU=VMs,DC=corp", username_secret: join_user, password_secret: join_password}}
            first_logon_commands: ["powershell.exe -NoProfile -Command Install-WindowsFeature Web-Server"]
            setup_timeout: {timeout}
            setup_poll: 200ms
    hosts:
      - {{name: {name}, zone: zone-a, settings: {{address: 127.0.0.1, port: {port}}}}}
zones:
  - name: zone-a
projects:
  - name: demo
catalog:
  images: [{{name: windows-2022, os: windows, min_disk_gib: 1}}]
  flavors: [{{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 40}}]
  networks: [{{name: default}}]
engine:
  retry: {{max_attempts: 3, initial_delay: 10ms, max_delay: 50ms, factor: 2.0, jitter: false}}
"#,
        template = template().display()
    );
    let mut config = Config::from_yaml(&yaml, "test hosts file").unwrap();
    config.secrets = hcp_core::Secrets::new(dir.path());
    let engine = hcp_provider_hyperv::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    (engine, dir)
}

/// The answer file HCP must have put on the ISO for `name` / `vm_id`.
fn expected(name: &str, vm_id: &str) -> String {
    let admin = SecretString::new(ADMIN_PW);
    let user = SecretString::new(JOIN_USER);
    let pw = SecretString::new(JOIN_PW);
    let cmds =
        vec!["powershell.exe -NoProfile -Command Install-WindowsFeature Web-Server".to_string()];
    render(
        &std::fs::read_to_string(template()).unwrap(),
        &Inputs {
            vm_name: name,
            vm_id,
            time_zone: "W. Europe Standard Time",
            locale: "de-DE",
            admin_password: &admin,
            domain_join: Some(("corp.example.com", Some("OU=VMs,DC=corp"), &user, &pw)),
            first_logon_commands: &cmds,
        },
    )
    .unwrap()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [
        ADMIN_PW,
        JOIN_PW,
        "Adm1n-&lt;pässword&gt;&amp;",
        "J0in-secret-&amp;-more",
    ] {
        assert!(!text.contains(secret), "{what} holds a secret: {text}");
    }
}

async fn create(
    engine: &Engine,
    name: &str,
    th: &common::TestHost,
    signal: bool,
) -> (Vec<String>, hcp_core::Job, Value) {
    let rc = RequestContext::new("demo", Principal::new("alice"))
        .with_idempotency_key(Some(format!("create-{name}")));
    let submitted = engine
        .create_vm(&rc, VmSpec::new(name, "windows-2022", "small"))
        .await
        .unwrap();
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
                    // The guest is setting up: the ISO is attached; read it, then let the guest
                    // finish (or not).
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
                            Some(json!({"vm_id": vm, "key": "HcpSetupComplete", "value": submitted.vm_id.as_str()})),
                        );
                    }
                }
            }
            JobUpdate::End(job) => break *job,
            JobUpdate::Status { .. } => {}
        }
    };
    let iso = media
        .as_object()
        .expect("media was read while setup ran")
        .iter()
        .find(|(k, _)| k.ends_with(&format!("{name}-{}-unattend.iso", submitted.vm_id)))
        .map(|(_, v)| v.clone())
        .expect("the answer-file ISO was attached");
    assert_eq!(
        iso,
        json!({ "autounattend.xml": expected(name, submitted.vm_id.as_str()) }),
        "the ISO holds exactly the rendered answer file"
    );
    (lines, job, iso)
}

fn assert_clean(th: &common::TestHost, lines: &[String], job: &hcp_core::Job) {
    let state = th.control("hv1", "state", None);
    assert!(
        !state["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().ends_with("-unattend.iso")),
        "the ISO is deleted: {state}"
    );
    for vm in state["vms"].as_object().unwrap().values() {
        assert!(
            !vm["dvd"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d.as_str().unwrap().ends_with("-unattend.iso")),
            "the ISO is detached: {vm}"
        );
    }
    assert_no_secret("the host's files and VMs", &state.to_string());
    assert_no_secret("the job log", &lines.join("\n"));
    assert_no_secret("the job", &serde_json::to_string(job).unwrap());
    let template = std::fs::read_to_string(template()).unwrap();
    assert_no_secret("the template", &template);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_create_waits_for_the_guest_signal_then_removes_the_answer_file() {
    let th = common::TestHost::start(1, None);
    let (engine, _s) = engine(&th, "60s").await;
    let (lines, job, _) = create(&engine, "win-web-01", &th, true).await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    assert!(lines.iter().any(|l| l.contains("waiting for guest setup")));
    assert!(lines.iter().any(|l| l.contains("guest setup finished")));
    assert_clean(&th, &lines, &job);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_create_times_out_cleanly_when_the_signal_never_comes() {
    let th = common::TestHost::start(1, None);
    let (engine, _s) = engine(&th, "2s").await;
    let (lines, job, _) = create(&engine, "win-silent", &th, false).await;
    assert_eq!(job.state, JobState::Failed);
    let error = job.error.clone().unwrap();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error:?}");
    assert!(
        error
            .message
            .contains("guest setup did not signal completion within 2s"),
        "{error:?}"
    );
    assert_clean(&th, &lines, &job);
}
