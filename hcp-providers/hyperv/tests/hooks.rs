//! The site's own PowerShell on the WinRM test host: hooks deployed with HCP's scripts (and not
//! uploaded again when unchanged), typed parameter documents, log lines streamed into the job
//! log with mapped secrets removed, failures failing the job with the hook's message, hung hooks
//! terminated at their timeout, and replacement create scripts whose result record is checked.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hcp_core::store::Scope;
use hcp_core::{
    Config, CreateVm, DeleteVm, Engine, ErrorKind, HcpMark, JobState, JobUpdate, OpContext,
    Principal, ProjectId, Provider, RebootVm, RequestContext, Resources, Secrets, StartVm, StopVm,
    VmId, VmSpec, VmTarget,
};
use hcp_provider_hyperv::scripts::EMBEDDED;
use hcp_provider_hyperv::{HookSettings, HypervProvider, HypervSettings, ImageSettings};
use serde_json::{Value, json};

const TOKEN: &str = "cmdb-t0ken-Zq81";
const HOOK: &str = "Register-HcpCmdb";
const CREATE: &str = "New-TeamVm";

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("hooks/examples")
        .join(format!("{name}.ps1"))
}

/// A ConfigMap-like directory holding copies of the shipped example hooks.
fn hook_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in [HOOK, CREATE] {
        std::fs::copy(example(name), dir.path().join(format!("{name}.ps1"))).unwrap();
    }
    dir
}

fn secrets(dir: &Path) -> Secrets {
    std::fs::write(dir.join("winrm_username"), common::USER).unwrap();
    std::fs::write(dir.join("winrm_password"), common::PASSWORD).unwrap();
    std::fs::write(dir.join("cmdb_token"), TOKEN).unwrap();
    Secrets::new(dir)
}

fn records(th: &common::TestHost) -> Vec<Value> {
    th.control("hv1", "records", None)["records"]
        .as_array()
        .unwrap()
        .clone()
}

fn runs_of(th: &common::TestHost, script: &str) -> Vec<Value> {
    records(th)
        .into_iter()
        .filter(|r| r["script"] == script)
        .collect()
}

fn effect(th: &common::TestHost, script: &str, e: Value) {
    th.control(
        "hv1",
        "faults",
        Some(json!({ format!("hook:{script}"): e })),
    );
}

async fn engine(
    th: &common::TestHost,
    hooks: &Path,
    settings: &str,
) -> (Engine, tempfile::TempDir) {
    let secrets_dir = tempfile::tempdir().unwrap();
    let secrets = secrets(secrets_dir.path());
    let (name, port) = &th.hosts[0];
    let yaml = format!(
        r#"
providers:
  - name: hyperv-test
    kind: hyperv
    settings:
      tls_verify: false
      operation_timeout: 5s
{}
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
"#,
        settings.replace("HOOKS", &hooks.display().to_string())
    );
    let mut config = Config::from_yaml(&yaml, "test hosts file").unwrap();
    config.secrets = secrets;
    let engine = hcp_provider_hyperv::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    (engine, secrets_dir)
}

/// Creates a VM through the engine and returns every job log line and the final job.
async fn create(engine: &Engine, name: &str) -> (Vec<hcp_core::JobLogLine>, hcp_core::Job) {
    let rc = RequestContext::new("demo", Principal::new("alice"))
        .with_idempotency_key(Some(format!("create-{name}")));
    let mut spec = VmSpec::new(name, "ubuntu-24.04", "small");
    spec.tags.insert("cost-center".into(), "cc-1234".into());
    let submitted = engine.create_vm(&rc, spec).await.unwrap();
    let scope = Scope::Project(ProjectId::new("demo"));
    let mut watch = engine.watch_job(&scope, &submitted.job_id).await.unwrap();
    let mut lines = Vec::new();
    let job = loop {
        let update = tokio::time::timeout(Duration::from_secs(90), watch.next())
            .await
            .expect("the job ends")
            .expect("the watch ends with the job");
        match update {
            JobUpdate::Log(l) => lines.push(l),
            JobUpdate::End(job) => break *job,
            JobUpdate::Status { .. } => {}
        }
    };
    (lines, job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_create_hook_gets_its_document_streams_its_log_and_has_its_effect() {
    let th = common::TestHost::start(1, None);
    let hooks = hook_dir();
    effect(
        &th,
        HOOK,
        json!({
            "log": ["registered as CMDB item 42", format!("debug: token {TOKEN}")],
            "stderr": ["WARNING: the CMDB answered slowly"],
            "kvp": {"CmdbId": "42"},
            "result": {"CmdbId": "42"},
        }),
    );
    let (engine, _s) = engine(
        &th,
        hooks.path(),
        "      hooks:\n        post_create: {script: HOOKS/Register-HcpCmdb.ps1, timeout: 30s, secrets: [cmdb_token]}",
    )
    .await;
    let (lines, job) = create(&engine, "hooked-1").await;
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let text: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    for want in [
        "registered as CMDB item 42",
        "WARNING: the CMDB answered slowly",
        "debug: token ***",
    ] {
        let line = lines
            .iter()
            .find(|l| l.message == want)
            .unwrap_or_else(|| panic!("`{want}` reaches the job log: {text:?}"));
        assert_eq!(line.audience, hcp_core::LogAudience::Operators);
    }
    assert!(
        !lines.iter().any(|l| format!("{l:?}").contains(TOKEN)),
        "the mapped secret never reaches the job log"
    );

    let runs = runs_of(&th, HOOK);
    assert_eq!(runs.len(), 1, "one post_create run");
    let hcp = &runs[0]["params"]["Hcp"];
    assert_eq!(hcp["Contract"], json!(1));
    assert_eq!(hcp["Operation"], json!("post_create"));
    assert_eq!(hcp["Name"], json!("hooked-1"));
    assert_eq!(hcp["Project"], json!("demo"));
    assert_eq!(hcp["Image"], json!("ubuntu-24.04"));
    assert_eq!(hcp["Vcpus"], json!(1));
    assert_eq!(hcp["MemoryMiB"], json!(1024));
    assert_eq!(hcp["DiskGiB"], json!(10));
    assert_eq!(hcp["Networks"][0]["SwitchName"], json!("LAN"));
    assert_eq!(hcp["Tags"]["cost-center"], json!("cc-1234"));
    assert_eq!(hcp["Secrets"], json!({ "cmdb_token": TOKEN }));
    let native = hcp["NativeId"].as_str().expect("post_create knows the VM");
    // The hook ran after New-HcpVm, and its effect is on the VM.
    let order: Vec<String> = records(&th)
        .iter()
        .filter_map(|r| r["script"].as_str().map(str::to_string))
        .filter(|s| s == HOOK || s == "New-HcpVm")
        .collect();
    assert_eq!(order, ["New-HcpVm", HOOK]);
    let state = th.control("hv1", "state", None);
    assert_eq!(
        state["vms"][native.to_lowercase()]["kvp"]["CmdbId"],
        json!("42")
    );
    assert!(
        !serde_json::to_string(&job).unwrap().contains(TOKEN),
        "the secret is not in the job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_fails_the_job_with_its_message_and_is_not_retried() {
    let th = common::TestHost::start(1, None);
    let hooks = hook_dir();
    effect(
        &th,
        HOOK,
        json!({"error": {"Category": "InvalidData", "Message": format!("CMDB refused the VM: no cost center (token {TOKEN})")}}),
    );
    let (engine, _s) = engine(
        &th,
        hooks.path(),
        "      hooks:\n        pre_create: {script: HOOKS/Register-HcpCmdb.ps1, secrets: [cmdb_token]}",
    )
    .await;
    let (lines, job) = create(&engine, "refused-1").await;
    assert_eq!(job.state, JobState::Failed);
    let error = job.error.clone().expect("the job's error");
    assert!(
        error.message.contains(
            "pre_create hook Register-HcpCmdb.ps1 failed: CMDB refused the VM: no cost center"
        ),
        "{error:?}"
    );
    assert!(error.message.contains("(token ***)"), "{error:?}");
    assert!(!format!("{error:?}{lines:?}").contains(TOKEN));
    assert_eq!(runs_of(&th, HOOK).len(), 1, "a hook's failure is permanent");
    assert!(
        runs_of(&th, "New-HcpVm").is_empty(),
        "a failed pre_create hook creates nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_hook_is_terminated_at_its_timeout() {
    let th = common::TestHost::start(1, None);
    let hooks = hook_dir();
    effect(&th, HOOK, json!({"hang": true}));
    let (engine, _s) = engine(
        &th,
        hooks.path(),
        "      hooks:\n        post_create: {script: HOOKS/Register-HcpCmdb.ps1, timeout: 2s, secrets: [cmdb_token]}",
    )
    .await;
    let (_lines, job) = create(&engine, "hung-1").await;
    assert_eq!(job.state, JobState::Failed);
    let error = job.error.expect("the job's error");
    assert_eq!(error.kind, ErrorKind::Timeout, "{error:?}");
    assert!(
        error
            .message
            .contains("post_create hook Register-HcpCmdb.ps1 ran longer than 2s"),
        "{error:?}"
    );
    // The host was told to end the hung hook.
    let mut terminated = false;
    for _ in 0..100 {
        if runs_of(&th, HOOK).iter().all(|r| r["terminated"] == true) {
            terminated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        terminated,
        "every hung run was terminated: {:?}",
        runs_of(&th, HOOK)
    );
}

fn settings_with_hooks(dir: &Path, points: &[&str]) -> HypervSettings {
    let hook = HookSettings {
        script: dir.join(format!("{HOOK}.ps1")),
        timeout: Duration::from_secs(30),
        secrets: vec![],
    };
    let mut s = common::settings();
    for p in points {
        s.hooks.insert((*p).to_string(), hook.clone());
    }
    s
}

fn provider(th: &common::TestHost, s: HypervSettings) -> HypervProvider {
    let dir = tempfile::tempdir().unwrap();
    let secrets = secrets(dir.path());
    HypervProvider::new_with_secrets(
        "hyperv",
        s,
        th.entries(None),
        common::creds(common::PASSWORD),
        Some(&secrets),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_deploy_with_the_scripts_and_are_not_uploaded_again_when_unchanged() {
    let th = common::TestHost::start(1, None);
    let hooks = hook_dir();
    let first = provider(&th, settings_with_hooks(hooks.path(), &["post_create"]));
    let report = first.deploy_host("hv1").await.unwrap();
    assert_eq!(report.files_uploaded, EMBEDDED.len() + 1);
    let fs = th.control("hv1", "state", None)["fs"].clone();
    let key = format!(
        r"c:\programdata\hcp\scripts\{}\hooks\register-hcpcmdb.ps1",
        first.script_version()
    );
    assert_eq!(
        fs[&key],
        json!(std::fs::read_to_string(example(HOOK)).unwrap()),
        "the hook is deployed byte for byte"
    );
    let writes = |th: &common::TestHost| runs_of(th, "Write-HcpFileChunk").len();
    let uploaded = writes(&th);

    // A restart with the same hook uploads nothing.
    let second = provider(&th, settings_with_hooks(hooks.path(), &["post_create"]));
    assert_eq!(second.script_version(), first.script_version());
    assert_eq!(second.deploy_host("hv1").await.unwrap().files_uploaded, 0);
    assert_eq!(writes(&th), uploaded);

    // A changed hook is a new version, deployed at start-up.
    let path = hooks.path().join(format!("{HOOK}.ps1"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("registering", "recording")).unwrap();
    let third = provider(&th, settings_with_hooks(hooks.path(), &["post_create"]));
    assert_ne!(third.script_version(), first.script_version());
    assert_eq!(
        third.deploy_host("hv1").await.unwrap().files_uploaded,
        EMBEDDED.len() + 1
    );
}

fn args(name: &str) -> (CreateVm, VmTarget) {
    let vm_id = VmId::generate();
    let mut mark = HcpMark::new(vm_id.clone(), ProjectId::new("demo"));
    mark.image = Some("ubuntu-24.04".into());
    let res = Resources {
        vcpus: 1,
        memory_mib: 128,
        disk_gib: 1,
    };
    (
        CreateVm::new(mark, "hv1", name, "ubuntu-24.04", res),
        VmTarget {
            vm_id,
            name: name.into(),
            host: "hv1".into(),
            native_id: None,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_and_delete_hooks_run_around_their_operations() {
    let th = common::TestHost::start(1, None);
    let hooks = hook_dir();
    let points = [
        "pre_start",
        "post_start",
        "pre_stop",
        "post_stop",
        "pre_reboot",
        "post_reboot",
        "pre_delete",
        "post_delete",
    ];
    let p: Arc<dyn Provider> = Arc::new(provider(&th, settings_with_hooks(hooks.path(), &points)));
    let ctx = OpContext::detached();
    let (mut create, mut target) = args("powered-1");
    create.start = false;
    let created = p.create_vm(&ctx, create).await.unwrap();
    target.native_id = Some(created.native_id.clone());
    assert!(
        runs_of(&th, HOOK).is_empty(),
        "no create hook is configured"
    );
    p.start_vm(&ctx, StartVm::new(target.clone()))
        .await
        .unwrap();
    p.reboot_vm(&ctx, RebootVm::new(target.clone()))
        .await
        .unwrap();
    p.stop_vm(&ctx, StopVm::new(target.clone())).await.unwrap();
    p.delete_vm(&ctx, DeleteVm::new(target.clone()))
        .await
        .unwrap();
    let seen: Vec<String> = records(&th)
        .iter()
        .filter(|r| r["kind"] == "hook" || r["kind"] == "script")
        .filter(|r| r["script"] != "Get-HcpInventory")
        .map(|r| {
            if r["script"] == HOOK {
                r["params"]["Hcp"]["Operation"]
                    .as_str()
                    .unwrap()
                    .to_string()
            } else {
                r["script"].as_str().unwrap().to_string()
            }
        })
        .collect();
    assert_eq!(
        seen,
        [
            "New-HcpVm",
            "pre_start",
            "Start-HcpVm",
            "post_start",
            "pre_reboot",
            "Restart-HcpVm",
            "post_reboot",
            "pre_stop",
            "Stop-HcpVm",
            "post_stop",
            "pre_delete",
            "Remove-HcpVm",
            "post_delete",
        ]
    );
    let last = runs_of(&th, HOOK).pop().unwrap();
    let hcp = &last["params"]["Hcp"];
    assert_eq!(hcp["VmId"], json!(target.vm_id.as_str()));
    assert_eq!(hcp["Name"], json!("powered-1"));
    assert_eq!(hcp["NativeId"], json!(created.native_id));
    assert_eq!(hcp["Force"], json!(false));
    assert!(
        hcp.get("Secrets").is_none(),
        "no secret unless one is mapped"
    );
}

fn settings_with_create_script(dir: &Path) -> HypervSettings {
    let mut s = common::settings();
    s.images.insert(
        "ubuntu-24.04".into(),
        ImageSettings {
            create_script: Some(HookSettings {
                script: dir.join(format!("{CREATE}.ps1")),
                timeout: Duration::from_secs(30),
                secrets: vec![],
            }),
            ..ImageSettings::default()
        },
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_create_script_makes_the_vm_and_its_record_is_checked() {
    let th = common::TestHost::start(1, None);
    let hooks = hook_dir();
    let p = provider(&th, settings_with_create_script(hooks.path()));
    let ctx = OpContext::detached();

    effect(&th, CREATE, json!({"create": true}));
    let (create, _) = args("team-1");
    let vm_id = create.vm_id.clone();
    let created = p.create_vm(&ctx, create).await.unwrap();
    assert!(
        runs_of(&th, "New-HcpVm").is_empty(),
        "HCP's own script did not run"
    );
    let run = runs_of(&th, CREATE).pop().unwrap();
    assert_eq!(run["params"]["Hcp"]["Operation"], json!("create"));
    assert_eq!(run["params"]["Hcp"]["VmId"], json!(vm_id.as_str()));
    let state = th.control("hv1", "state", None);
    let vm = &state["vms"][created.native_id.to_lowercase()];
    assert_eq!(vm["name"], json!("team-1"));
    assert!(vm["notes"].as_str().unwrap().contains(vm_id.as_str()));

    // A record that says the mark was not written fails the job.
    effect(
        &th,
        CREATE,
        json!({"create": true, "result": {"MarkWritten": false}}),
    );
    let e = p.create_vm(&ctx, args("team-2").0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderError);
    assert!(e.message().contains("`MarkWritten` must be true"), "{e}");

    // A record that claims the mark, on a VM without it, fails too.
    effect(&th, CREATE, json!({"create": true, "skip_mark": true}));
    let e = p.create_vm(&ctx, args("team-3").0).await.unwrap_err();
    assert!(e.message().contains("do not carry HCP's mark"), "{e}");

    // So does an id that is no VM's, or no GUID at all.
    effect(
        &th,
        CREATE,
        json!({"result": {"Id": "not-a-guid", "State": "Off", "MarkWritten": true}}),
    );
    let e = p.create_vm(&ctx, args("team-4").0).await.unwrap_err();
    assert!(e.message().contains("`Id` must be"), "{e}");
    effect(
        &th,
        CREATE,
        json!({"result": {"Id": "6f1c2a8e-93b4-4c1d-9a57-0d2b7c9e4f11", "State": "Off", "MarkWritten": true}}),
    );
    let e = p.create_vm(&ctx, args("team-5").0).await.unwrap_err();
    assert!(e.message().contains("no VM with the reported `Id`"), "{e}");
}

#[test]
fn hook_settings_are_checked_at_start_up() {
    let hooks = hook_dir();
    let parse = |v: Value| HypervSettings::from_value("hv", &v, &|_| None);
    let e = parse(json!({"hooks": {"post_boot": {"script": "/x/A.ps1"}}})).unwrap_err();
    assert!(e.message().contains("allowed: pre_create"), "{e}");
    let e = parse(json!({"images": {"win": {"hooks": {"pre_delete": {"script": "/x/A.ps1"}}}}}))
        .unwrap_err();
    assert_eq!(
        e.field(),
        Some("providers.hv.settings.images.win.hooks.pre_delete")
    );
    assert!(e.message().contains("do not know the VM's image"), "{e}");
    let e = parse(json!({"hooks": {"pre_create": {"script": "/x/A.ps1", "timeout": "0s"}}}))
        .unwrap_err();
    assert_eq!(
        e.field(),
        Some("providers.hv.settings.hooks.pre_create.timeout")
    );
    let e = parse(json!({"hooks": {"pre_create": {"script": "/x/a b.ps1"}}})).unwrap_err();
    assert_eq!(
        e.field(),
        Some("providers.hv.settings.hooks.pre_create.script")
    );
    let e = parse(json!({"hooks": {"pre_create": {"script": "/x/A.ps1", "secrets": ["../etc"]}}}))
        .unwrap_err();
    assert_eq!(
        e.field(),
        Some("providers.hv.settings.hooks.pre_create.secrets")
    );

    // A missing file and a missing mapped secret are refused before anything runs.
    let s =
        parse(json!({"hooks": {"pre_create": {"script": hooks.path().join("Gone.ps1")}}})).unwrap();
    let e = HypervProvider::new("hv", s, vec![], common::creds("x")).unwrap_err();
    assert!(e.message().contains("cannot read"), "{e}");
    let s = parse(json!({"hooks": {"pre_create": {
        "script": hooks.path().join(format!("{HOOK}.ps1")), "secrets": ["cmdb_token"]}}}))
    .unwrap();
    let empty = tempfile::tempdir().unwrap();
    let e = HypervProvider::new_with_secrets(
        "hv",
        s,
        vec![],
        common::creds("x"),
        Some(&Secrets::new(empty.path())),
    )
    .unwrap_err();
    assert!(
        e.message().contains("secret `cmdb_token` is missing"),
        "{e}"
    );
}
