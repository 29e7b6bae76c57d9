//! Script deployment by version: the first start uploads, a second start with the same version
//! uploads nothing, a changed version uploads again, and an interrupted upload leaves no
//! half-written script in place.

mod common;

use hcp_core::{HostInventory, Provider};
use hcp_provider_hyperv::HypervSettings;
use hcp_provider_hyperv::scripts::EMBEDDED;
use serde_json::{Value, json};

const DIR: &str = r"c:\programdata\hcp\scripts";

fn fs(th: &common::TestHost) -> serde_json::Map<String, Value> {
    th.control("hv1", "state", None)["fs"]
        .as_object()
        .unwrap()
        .clone()
}

fn writes(th: &common::TestHost) -> usize {
    th.control("hv1", "records", None)["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["script"] == "Write-HcpFileChunk")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_uploads_and_a_second_start_uploads_nothing() {
    let th = common::TestHost::start(1, None);
    let first = common::provider(&th, common::settings());
    let version = first.script_version().to_string();
    let report = first.deploy_host("hv1").await.unwrap();
    assert_eq!(report.previous, None);
    assert_eq!(report.files_uploaded, EMBEDDED.len());
    let files = fs(&th);
    assert_eq!(files[&format!(r"{DIR}\version")], json!(version));
    for (name, text) in EMBEDDED {
        let key = format!(r"{DIR}\{version}\{}", name.to_lowercase());
        assert_eq!(
            files.get(&key),
            Some(&json!(text)),
            "{key} holds the shipped script"
        );
    }
    assert!(
        !files
            .keys()
            .any(|k| k.contains(".staging") || k.ends_with(".part"))
    );
    let uploaded = writes(&th);

    let second = common::provider(&th, common::settings());
    let report = second.deploy_host("hv1").await.unwrap();
    assert_eq!(report.previous.as_deref(), Some(version.as_str()));
    assert_eq!(report.files_uploaded, 0);
    second
        .host_inventory(HostInventory::new("hv1"))
        .await
        .unwrap();
    assert_eq!(writes(&th), uploaded, "the same version uploads nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_version_uploads_again_and_jobs_use_it() {
    let th = common::TestHost::start(1, None);
    let old = common::provider(&th, common::settings());
    old.deploy_host("hv1").await.unwrap();
    let site = tempfile::tempdir().unwrap();
    std::fs::write(
        site.path().join("Start-HcpVm.ps1"),
        EMBEDDED
            .iter()
            .find(|(n, _)| *n == "Start-HcpVm.ps1")
            .unwrap()
            .1
            .replace("Starts a VM.", "Starts a VM (site copy)."),
    )
    .unwrap();
    let settings = HypervSettings {
        script_path: Some(site.path().to_path_buf()),
        ..common::settings()
    };
    let new = common::provider(&th, settings);
    assert_ne!(new.script_version(), old.script_version());
    let report = new.deploy_host("hv1").await.unwrap();
    assert_eq!(report.previous.as_deref(), Some(old.script_version()));
    assert_eq!(report.files_uploaded, EMBEDDED.len());
    let files = fs(&th);
    assert_eq!(
        files[&format!(r"{DIR}\version")],
        json!(new.script_version())
    );
    let site_copy = &files[&format!(r"{DIR}\{}\start-hcpvm.ps1", new.script_version())];
    assert!(site_copy.as_str().unwrap().contains("(site copy)"));
    new.host_inventory(HostInventory::new("hv1")).await.unwrap();
    let records = th.control("hv1", "records", None);
    let last = records["records"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["script"], "Get-HcpInventory");
    assert_eq!(last["version"], json!(new.script_version()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_leaves_no_half_written_script_in_place() {
    let th = common::TestHost::start(1, None);
    th.control(
        "hv1",
        "faults",
        Some(json!({ "interrupt_upload_after": 4 })),
    );
    let p = common::provider(&th, common::settings());
    let version = p.script_version().to_string();
    let e = p.deploy_host("hv1").await.unwrap_err();
    assert!(e.operator_message().contains("forcibly closed"), "{e}");
    let files = fs(&th);
    assert!(
        !files
            .keys()
            .any(|k| k.starts_with(&format!(r"{DIR}\{version}\"))),
        "nothing is published after an interrupted upload: {:?}",
        files.keys().collect::<Vec<_>>()
    );
    assert!(
        !files.contains_key(&format!(r"{DIR}\version")),
        "the marker is untouched"
    );
    assert!(
        files.keys().any(|k| k.contains(".staging-")),
        "the partial upload stays in the staging directory"
    );
    // The next call deploys from scratch and then runs.
    p.host_inventory(HostInventory::new("hv1")).await.unwrap();
    let files = fs(&th);
    assert_eq!(files[&format!(r"{DIR}\version")], json!(version));
    assert!(
        !files
            .keys()
            .any(|k| k.contains(".staging-") || k.ends_with(".part"))
    );
    assert_eq!(
        files
            .keys()
            .filter(|k| k.starts_with(&format!(r"{DIR}\{version}\")))
            .count(),
        EMBEDDED.len()
    );
}
