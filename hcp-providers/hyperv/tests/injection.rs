//! The injection corpus: VM names, tags and user-data holding quotes (including U+2018–U+201B,
//! which PowerShell also treats as quotes), backticks, `$(...)`, `;`, `|`, CR/LF, `<#`, NUL and
//! a 64 KB string are either refused by validation naming the field, or reach the host as
//! literal data; the test host checks that no script text it received ever held user data.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use hcp_core::{
    CreateVm, DeleteVm, ErrorKind, HcpMark, HostInventory, OpContext, ProjectId, Provider,
    Resources, VmId, VmTarget,
};
use serde_json::Value;

fn corpus() -> Vec<String> {
    let mut c: Vec<String> = [
        "'",
        "\u{2018}",
        "\u{2019}",
        "\u{201A}",
        "\u{201B}",
        "\"",
        "`",
        "$(Get-Date)",
        "; Remove-Item C:\\ -Recurse",
        "| Out-File x",
        "\r\n",
        "<#",
        "#>",
        "\0",
        "@'\n'@",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.push("x".repeat(64 * 1024));
    c
}

fn args(name: &str) -> (CreateVm, VmTarget) {
    let vm_id = VmId::generate();
    let mut mark = HcpMark::new(vm_id.clone(), ProjectId::new("inj"));
    mark.image = Some("ubuntu-24.04".into());
    let res = Resources {
        vcpus: 1,
        memory_mib: 64,
        disk_gib: 1,
    };
    let a = CreateVm::new(mark, "hv1", name, "ubuntu-24.04", res).with_start(false);
    let t = VmTarget {
        vm_id,
        name: name.into(),
        host: "hv1".into(),
        native_id: None,
    };
    (a, t)
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_tags_and_user_data_are_refused_or_literal() {
    let th = common::TestHost::start(1, None);
    let p: Arc<dyn Provider> = Arc::new(common::provider(&th, common::settings()));
    let ctx = OpContext::detached();

    // Names: every hostile character is refused before anything reaches the host.
    for (i, bad) in corpus().iter().enumerate() {
        let (a, _) = args(&format!("vm{i}{bad}x"));
        let e = p.create_vm(&ctx, a).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec, "name with {bad:?}");
        assert_eq!(e.field(), Some("name"));
        assert!(e.message().contains("letters, digits"), "{e}");
    }

    // Tags: control characters and oversized values are refused; the rest arrive literally.
    let mut literal_tags = Vec::new();
    for (i, bad) in corpus().iter().enumerate() {
        let value = format!("v{bad}w");
        let (a, t) = args(&format!("tag{i}"));
        let a = a.with_tags(BTreeMap::from([("k".to_string(), value.clone())]));
        let r = p.create_vm(&ctx, a).await;
        if has_control(&value) || value.len() > 255 {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSpec, "tag {bad:?}");
            assert_eq!(e.field(), Some("tags.k"));
        } else {
            r.unwrap_or_else(|e| panic!("tag {bad:?}: {e}"));
            literal_tags.push((t, value));
        }
    }
    let inv = p.host_inventory(HostInventory::new("hv1")).await.unwrap();
    for (t, value) in &literal_tags {
        let vm = inv
            .vms
            .iter()
            .find(|v| v.mark.as_ref().is_some_and(|m| m.vm_id == t.vm_id))
            .expect("the VM exists");
        assert_eq!(vm.tags.get("k"), Some(value), "the tag arrives literally");
    }

    // User-data: only NUL is refused; everything else, 64 KB included, arrives literally.
    let mut literal_ud = Vec::new();
    for (i, bad) in corpus().iter().enumerate() {
        let ud = if bad.len() > 1000 {
            bad.clone()
        } else {
            format!("#cloud-config\n# {bad}\nruncmd: [echo {bad}]\n")
        };
        let (a, t) = args(&format!("ud{i}"));
        let a = a.with_user_data(Some(ud.clone()));
        let r = p.create_vm(&ctx, a).await;
        if ud.contains('\0') {
            let e = r.unwrap_err();
            assert_eq!(e.field(), Some("user_data"));
        } else {
            r.unwrap_or_else(|e| panic!("user-data {bad:?}: {e}"));
            literal_ud.push((t, ud));
        }
    }
    let too_big = "y".repeat(64 * 1024 + 1);
    let e = p
        .create_vm(&ctx, args("ud-big").0.with_user_data(Some(too_big)))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("user_data"));

    let state = th.control("hv1", "state", None);
    let media = state["media"].as_object().unwrap();
    for (t, ud) in &literal_ud {
        let iso = media
            .iter()
            .find(|(path, _)| path.contains(t.vm_id.as_str()))
            .unwrap_or_else(|| panic!("a cidata ISO for {}", t.name))
            .1;
        assert_eq!(
            iso["user-data"],
            Value::String(ud.clone()),
            "user-data arrives literally"
        );
    }

    // The test host saw every value only as data.
    let records = th.control("hv1", "records", None);
    assert_eq!(
        records["violations"],
        serde_json::json!([]),
        "script text held user data"
    );
    let rejected = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "rejected")
        .count();
    assert_eq!(rejected, 0, "every script HCP sent was recognised");
    let sent_tags: Vec<String> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["script"] == "New-HcpVm")
        .filter_map(|r| r["params"]["Notes"].as_str())
        .filter_map(|n| serde_json::from_str::<Value>(n).ok())
        .filter_map(|n| n["hcp"]["tags"]["k"].as_str().map(str::to_string))
        .collect();
    for (_, value) in &literal_tags {
        assert!(
            sent_tags.contains(value),
            "the parameter document carried {value:?}"
        );
    }

    for (t, _) in literal_tags.iter().chain(literal_ud.iter()) {
        p.delete_vm(&ctx, DeleteVm::new(t.clone()).with_force(true))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_host_refuses_script_text_it_does_not_know() {
    let th = common::TestHost::start(1, None);
    // A provider whose scripts were never deployed under this version: point it at a site
    // script directory with an unknown script, then call the host directly with a forged wrapper.
    let p = common::provider(&th, common::settings());
    p.deploy_host("hv1").await.unwrap();
    let records = th.control("hv1", "records", None);
    assert_eq!(records["violations"], serde_json::json!([]));
    let host = hcp_provider_hyperv::HostClient::new(
        &common::settings(),
        &th.entries(None)[0],
        &common::creds(common::PASSWORD),
    );
    let forged = "Get-VM | Remove-VM -Force";
    let e = host
        .invoke(
            "forged",
            forged,
            &serde_json::json!({}),
            &OpContext::detached(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderError, "{e}");
    let records = th.control("hv1", "records", None);
    let last = records["records"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["kind"], "rejected");
}
