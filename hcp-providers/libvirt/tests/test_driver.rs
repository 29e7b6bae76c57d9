//! Fast checks against libvirt's built-in test driver (no daemon, no QEMU): each test gets a
//! private test-driver world from a node file (one host with a `hcp` pool holding
//! `base-tiny.qcow2`, and a domain `legacy` that HCP did not make), plus a smoke test on
//! `test:///default` itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use hcp_core::store::{PageRequest, Scope};
use hcp_core::testkit::{self, Fixture};
use hcp_core::{
    CreateVm, DeleteVm, Engine, ErrorKind, HcpMark, HostInventory, OpContext, PowerState,
    Principal, ProjectId, Provider, RebootVm, RequestContext, Resources, SnapshotVm, StartVm,
    StopVm, VmId, VmSpec, VmTarget,
};
use hcp_provider_libvirt::{LibvirtHost, LibvirtProvider, LibvirtSettings, NetworkBinding};

const NODE: &str = r#"<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads><active>4</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>8388608</memory>
  <domain type='test'>
    <name>legacy</name>
    <memory>131072</memory>
    <vcpu>2</vcpu>
    <os><type>hvm</type></os>
  </domain>
  <pool type='dir'>
    <name>hcp</name>
    <target><path>/hcp-pool</path></target>
    <volume type='file'>
      <name>base-tiny.qcow2</name>
      <capacity unit='MiB'>64</capacity>
      <target><format type='qcow2'/></target>
    </volume>
  </pool>
</node>
"#;

/// A private test-driver world; keep it alive while the provider runs.
struct World {
    _dir: tempfile::TempDir,
    uri: String,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.xml");
    std::fs::write(&path, NODE).unwrap();
    World {
        uri: format!("test://{}", path.display()),
        _dir: dir,
    }
}

fn settings() -> LibvirtSettings {
    let mut s = LibvirtSettings {
        pool: "hcp".into(),
        ..Default::default()
    };
    s.images
        .insert("base-tiny".into(), "base-tiny.qcow2".into());
    s.networks.insert("default".into(), NetworkBinding::User);
    s
}

fn provider(w: &World) -> Arc<LibvirtProvider> {
    Arc::new(LibvirtProvider::new(
        "lv",
        settings(),
        vec![LibvirtHost::new("h1", "zone-a", &w.uri)],
    ))
}

fn fixture() -> Fixture {
    Fixture::new("h1", "base-tiny").with_graceful_timeout(std::time::Duration::from_millis(500))
}

fn mark(project: &str) -> HcpMark {
    HcpMark {
        vm_id: VmId::generate(),
        project: ProjectId::new(project),
        image: Some("base-tiny".into()),
        flavor: Some("tiny".into()),
        zone: Some("zone-a".into()),
        created_at: Some(chrono::Utc::now()),
        user_data: false,
        server_group: None,
    }
}

fn tiny() -> Resources {
    Resources {
        vcpus: 1,
        memory_mib: 64,
        disk_gib: 1,
    }
}

fn target(args: &CreateVm, native: Option<String>) -> VmTarget {
    VmTarget {
        vm_id: args.vm_id.clone(),
        name: args.name.clone(),
        host: args.host.clone(),
        native_id: native,
    }
}

#[tokio::test]
async fn conformance_checks_pass_on_the_test_driver() {
    let w = world();
    let p: Arc<dyn Provider> = provider(&w);
    let f = fixture();
    // Every check of the suite except `declared_capabilities`, whose console check needs a real
    // VNC server (tests/qemu.rs runs the whole suite on qemu:///system).
    testkit::lifecycle(p.clone(), &f).await.unwrap();
    testkit::idempotent_delete(p.clone(), &f).await.unwrap();
    testkit::not_found(p.clone(), &f).await.unwrap();
    testkit::power_transitions(p.clone(), &f).await.unwrap();
    testkit::undeclared_capabilities(p.clone(), &f)
        .await
        .unwrap();
    testkit::inventory_reflects_changes(p.clone(), &f)
        .await
        .unwrap();
    testkit::create_is_idempotent(p.clone(), &f).await.unwrap();
    testkit::mark_rebuilds_ownership(p.clone(), &f)
        .await
        .unwrap();
    testkit::concurrent_operations(p.clone(), &f).await.unwrap();
}

#[tokio::test]
async fn inventory_reports_capacity_images_networks_marks_and_foreign_domains() {
    let w = world();
    let p = provider(&w);
    let m = mark("demo");
    let tags = BTreeMap::from([("team".to_string(), "web & <api>".to_string())]);
    let args = CreateVm::new(m.clone(), "h1", "web-1", "base-tiny", tiny()).with_tags(tags.clone());
    let created = p.create_vm(&OpContext::detached(), args).await.unwrap();
    assert_eq!(created.power, PowerState::Running);

    let inv = p.host_inventory(HostInventory::new("h1")).await.unwrap();
    assert_eq!(
        inv.host.vcpus_total, 16,
        "4 CPUs at the default allocation ratio of 4"
    );
    assert_eq!(inv.host.memory_mib_total, 8192);
    assert_eq!(inv.images, vec!["base-tiny".to_string()]);
    assert_eq!(inv.networks, vec!["default".to_string()]);
    let legacy = inv.vms.iter().find(|v| v.name == "legacy").unwrap();
    assert_eq!(legacy.mark, None, "a domain HCP did not make has no mark");
    assert_eq!(legacy.resources.vcpus, 2);
    assert_eq!(legacy.resources.memory_mib, 128);
    let web = inv.vms.iter().find(|v| v.name == "web-1").unwrap();
    assert_eq!(web.native_id, created.native_id);
    assert_eq!(web.mark.as_ref(), Some(&m));
    assert_eq!(web.tags, tags);
    assert_eq!(web.resources, tiny());
    assert_eq!(inv.memory_mib_used, 128 + 64);

    let pools = p.storage_pools("h1").await.unwrap();
    assert_eq!(pools.len(), 1);
    assert!(pools[0].volumes.iter().any(|v| v.starts_with("hcp-vm-")));
    assert!(pools[0].volumes.contains(&"base-tiny.qcow2".to_string()));
}

#[tokio::test]
async fn refusals_are_classified() {
    let w = world();
    let p = provider(&w);
    let ctx = OpContext::detached();

    let e = p
        .create_vm(
            &ctx,
            CreateVm::new(mark("demo"), "h1", "a", "no-such-image", tiny()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("no-such-image"), "{e}");

    let e = p
        .create_vm(
            &ctx,
            CreateVm::new(mark("demo"), "h1", "legacy", "base-tiny", tiny()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "a taken name: {e}");
    assert_eq!(e.field(), Some("name"));

    let e = p
        .create_vm(
            &ctx,
            CreateVm::new(mark("demo"), "nope", "a", "base-tiny", tiny()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "an unknown host: {e}");

    let mut bad = mark("demo");
    bad.vm_id = VmId::new("../../etc/passwd");
    let e = p
        .create_vm(&ctx, CreateVm::new(bad, "h1", "b", "base-tiny", tiny()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("vm_id"));

    let tags = BTreeMap::from([("k".to_string(), "nul\u{0}".to_string())]);
    let e = p
        .create_vm(
            &ctx,
            CreateVm::new(mark("demo"), "h1", "c", "base-tiny", tiny()).with_tags(tags),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    let inv = p.host_inventory(HostInventory::new("h1")).await.unwrap();
    assert_eq!(inv.vms.len(), 1, "refused creates leave no domain behind");
    let pools = p.storage_pools("h1").await.unwrap();
    assert_eq!(
        pools[0].volumes,
        vec!["base-tiny.qcow2".to_string()],
        "refused creates leave no volume behind"
    );

    let mut vlan = CreateVm::new(mark("demo"), "h1", "d", "base-tiny", tiny());
    vlan.networks = vec![hcp_core::NetworkPlan {
        network: "default".into(),
        vlan: Some(7),
    }];
    let e = p.create_vm(&ctx, vlan).await.unwrap_err();
    assert_eq!(e.field(), Some("networks[0]"), "{e}");
}

#[tokio::test]
async fn snapshots_reboots_and_forced_deletes() {
    let w = world();
    let p = provider(&w);
    let ctx = OpContext::detached();
    let args = CreateVm::new(mark("demo"), "h1", "snap-1", "base-tiny", tiny());
    let created = p.create_vm(&ctx, args.clone()).await.unwrap();
    let t = target(&args, Some(created.native_id.clone()));

    let s = p
        .snapshot_vm(&ctx, SnapshotVm::new(t.clone()).with_name("before-upgrade"))
        .await
        .unwrap();
    assert_eq!(
        s.snapshot_id,
        format!("{}@before-upgrade", created.native_id)
    );
    let e = p
        .snapshot_vm(&ctx, SnapshotVm::new(t.clone()).with_name("before-upgrade"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let e = p
        .snapshot_vm(&ctx, SnapshotVm::new(t.clone()).with_name("../x"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");

    p.reboot_vm(&ctx, RebootVm::new(t.clone()).with_hard(true))
        .await
        .unwrap();
    p.reboot_vm(&ctx, RebootVm::new(t.clone())).await.unwrap();
    let inv = p.host_inventory(HostInventory::new("h1")).await.unwrap();
    let vm = inv.vms.iter().find(|v| v.name == "snap-1").unwrap();
    assert_eq!(vm.power, PowerState::Running, "a rebooted VM runs");

    // Found by its mark even when the caller's native id is stale.
    let stale = VmTarget {
        native_id: Some("00000000-0000-0000-0000-000000000000".into()),
        ..t.clone()
    };
    let s = p.start_vm(&ctx, StartVm::new(stale.clone())).await.unwrap();
    assert!(s.was_running);
    let stopped = p
        .stop_vm(&ctx, StopVm::new(stale.clone()).with_force(true))
        .await
        .unwrap();
    assert!(stopped.forced && !stopped.was_stopped);
    p.start_vm(&ctx, StartVm::new(t.clone())).await.unwrap();
    let d = p
        .delete_vm(&ctx, DeleteVm::new(t.clone()).with_force(true))
        .await
        .unwrap();
    assert!(
        d.existed,
        "a forced delete of a running VM with snapshots succeeds"
    );
    let pools = p.storage_pools("h1").await.unwrap();
    assert_eq!(pools[0].volumes, vec!["base-tiny.qcow2".to_string()]);
}

#[tokio::test]
async fn an_unreachable_host_is_unavailable_while_others_keep_working() {
    let w = world();
    let p = Arc::new(LibvirtProvider::new(
        "lv",
        settings(),
        vec![
            LibvirtHost::new("h1", "zone-a", &w.uri),
            LibvirtHost::new(
                "gone",
                "zone-a",
                "qemu+unix:///system?socket=/nonexistent/libvirt-sock",
            ),
        ],
    ));
    let e = p
        .host_inventory(HostInventory::new("gone"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
    assert!(e.is_temporary(), "an unreachable host may come back: {e}");
    // libvirt's words name the socket (a host path): operators read them, tenants do not.
    assert!(!e.message().contains("nonexistent"), "{e}");
    assert!(e.operator_message().contains("nonexistent"), "{e}");
    assert!(p.host_inventory(HostInventory::new("h1")).await.is_ok());

    let config = hcp_core::Config::from_yaml(
        "providers: [{name: lv, kind: libvirt, hosts: [{name: h1, zone: zone-a}, {name: gone, zone: zone-a}]}]\n\
         zones: [{name: zone-a}]\n\
         catalog: {images: [{name: base-tiny}], flavors: [{name: tiny, vcpus: 1, memory_mib: 64, disk_gib: 1}]}\n\
         engine: {inventory_refresh_interval: 0s, retry: {max_attempts: 1}}\n",
        "test",
    )
    .unwrap();
    let shared: Arc<dyn Provider> = p.clone();
    let engine = Engine::builder(config)
        .provider_kind("libvirt", move |_, _| Ok(shared.clone()))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    let report = engine.refresh_inventory().await.unwrap();
    assert_eq!(report.hosts_ok, 1);
    assert!(
        report.hosts_failed.iter().any(|(h, _)| h == "gone"),
        "{report:?}"
    );
    let ctx = RequestContext::new("demo", Principal::new("alice"));
    for i in 0..3 {
        let s = engine
            .create_vm(&ctx, VmSpec::new(format!("vm-{i}"), "base-tiny", "tiny"))
            .await
            .unwrap_or_else(|e| panic!("create vm-{i}: {e}"));
        let job = engine
            .wait_job(&ctx.scope(), &s.job_id, None)
            .await
            .unwrap();
        assert_eq!(job.state, hcp_core::JobState::Succeeded, "{job:?}");
        let vm = engine.get_vm(&ctx.scope(), &s.vm_id).await.unwrap();
        assert_eq!(
            &*vm.binding.host, "h1",
            "placement avoids the unreachable host"
        );
    }
    let listed = engine
        .list_vms(&Scope::Project(ProjectId::new("demo")), &PageRequest::all())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 3);
    engine.shutdown().await;
}

#[tokio::test]
async fn works_on_test_default() {
    // libvirt's shared default test world: a running domain `test`, an empty `default-pool`.
    let p = LibvirtProvider::new(
        "lv",
        LibvirtSettings {
            pool: "default-pool".into(),
            ..Default::default()
        },
        vec![LibvirtHost::new("t", "z", "test:///default")],
    );
    let inv = p.host_inventory(HostInventory::new("t")).await.unwrap();
    let test = inv.vms.iter().find(|v| v.name == "test").unwrap();
    assert_eq!(test.power, PowerState::Running);
    assert_eq!(test.mark, None);
    assert!(inv.networks.contains(&"default".to_string()));
    let ghost = VmTarget {
        vm_id: VmId::generate(),
        name: "test".into(),
        host: "t".into(),
        native_id: None,
    };
    let e = p
        .stop_vm(&OpContext::detached(), StopVm::new(ghost))
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::NotFound,
        "a domain without HCP's mark is never an HCP VM, even by name: {e}"
    );
}

/// Reads a job to its end the way the tenant shells do (`JobUpdate::tenant_view` on the watch,
/// then `Job::tenant_view`) and returns the tenant text and the final job.
async fn tenant_text_of(engine: &Engine, job_id: &hcp_core::JobId) -> (String, hcp_core::Job) {
    let scope = Scope::Project(ProjectId::new("demo"));
    let mut watch = engine.watch_job(&scope, job_id).await.unwrap();
    let mut text = String::new();
    let job = loop {
        let update = watch.next().await.expect("the watch ends with the job");
        let end = match &update {
            hcp_core::JobUpdate::End(job) => Some(job.as_ref().clone()),
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

#[tokio::test]
async fn tenant_views_name_no_host_uuid_pool_or_path() {
    const HOST: &str = "lv-secret-host";
    const PROVIDER: &str = "lv-secret-provider";
    let w = world();
    let p = Arc::new(LibvirtProvider::new(
        PROVIDER,
        settings(),
        vec![LibvirtHost::new(HOST, "zone-a", &w.uri)],
    ));
    let config = hcp_core::Config::from_yaml(
        &format!(
            "providers: [{{name: {PROVIDER}, kind: libvirt, hosts: [{{name: {HOST}, zone: zone-a}}]}}]\n\
             zones: [{{name: zone-a}}]\n\
             catalog: {{images: [{{name: base-tiny}}, {{name: ghost}}], flavors: [{{name: tiny, vcpus: 1, memory_mib: 64, disk_gib: 1}}]}}\n\
             engine: {{inventory_refresh_interval: 0s, retry: {{max_attempts: 1}}}}\n"
        ),
        "test",
    )
    .unwrap();
    let shared: Arc<dyn Provider> = p.clone();
    let engine = Engine::builder(config)
        .provider_kind("libvirt", move |_, _| Ok(shared.clone()))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    engine.refresh_inventory().await.unwrap();
    let ctx = RequestContext::new("demo", Principal::new("alice"));
    let mut tenant = String::new();

    // A create that succeeds: its log names the domain's UUID for operators only.
    let ok = engine
        .create_vm(&ctx, VmSpec::new("swept", "base-tiny", "tiny"))
        .await
        .unwrap();
    let (text, job) = tenant_text_of(&engine, &ok.job_id).await;
    assert_eq!(job.state, hcp_core::JobState::Succeeded, "{job:?}");
    assert!(text.contains("defined domain swept"), "{text}");
    tenant.push_str(&text);
    let vm = engine.get_vm(&ctx.scope(), &ok.vm_id).await.unwrap();
    let uuid = vm.binding.native_id.clone().expect("the domain's UUID");

    // A create whose image has no volume in the pool: no host reports it, so it is refused
    // before a job exists, and the refusal names neither the host nor the pool.
    let refused = engine
        .create_vm(&ctx, VmSpec::new("swept-2", "ghost", "tiny"))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidSpec, "{refused}");
    assert_eq!(refused.field(), Some("image"), "{refused}");
    tenant.push_str(&refused.to_string());

    for id in [&ok.vm_id] {
        let vm = engine.get_vm(&ctx.scope(), id).await.unwrap();
        tenant.push_str(&serde_json::to_string(&vm.tenant_view()).unwrap());
    }
    let dir = w._dir.path().display().to_string();
    for secret in [HOST, PROVIDER, uuid.as_str(), "storage pool", dir.as_str()] {
        assert!(
            !tenant.contains(secret),
            "tenants read `{secret}`:\n{tenant}"
        );
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn adopt_then_release_changes_only_the_mark_of_a_foreign_domain() {
    let w = world();
    let p = provider(&w);
    let config = hcp_core::Config::from_yaml(
        "providers: [{name: lv, kind: libvirt, hosts: [{name: h1, zone: zone-a}]}]\n\
         zones: [{name: zone-a}]\n\
         catalog: {images: [{name: base-tiny}], flavors: [{name: tiny, vcpus: 1, memory_mib: 64, disk_gib: 1}]}\n\
         engine: {inventory_refresh_interval: 0s, retry: {max_attempts: 1}}\n",
        "test",
    )
    .unwrap();
    let shared: Arc<dyn Provider> = p.clone();
    let engine = Engine::builder(config)
        .provider_kind("libvirt", move |_, _| Ok(shared.clone()))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    let legacy = || async {
        p.host_inventory(HostInventory::new("h1"))
            .await
            .unwrap()
            .vms
            .into_iter()
            .find(|v| v.name == "legacy")
            .unwrap()
    };
    let before = legacy().await;
    assert_eq!(before.mark, None);
    engine.refresh_inventory().await.unwrap();
    assert!(
        engine
            .inventory_vms()
            .iter()
            .any(|v| v.name == "legacy" && v.adoptable)
    );
    let ops = Principal::new("ops-olga");
    let s = engine
        .adopt_vm(
            &ops,
            &ProjectId::new("demo"),
            &hcp_core::AdoptRequest::new("h1", &before.native_id),
            None,
        )
        .await
        .unwrap();
    let job = engine
        .wait_job(
            &Scope::All,
            &s.job_id,
            Some(std::time::Duration::from_secs(20)),
        )
        .await
        .unwrap();
    assert_eq!(job.state, hcp_core::JobState::Succeeded, "{job:?}");
    let adopted = legacy().await;
    let mark = adopted.mark.clone().expect("the mark is on the domain");
    assert_eq!(mark.vm_id, s.vm_id);
    assert_eq!(mark.project.as_str(), "demo");
    let mut unmarked = adopted.clone();
    unmarked.mark = None;
    assert_eq!(unmarked, before, "only the mark changed");
    let vm = engine.get_vm(&Scope::All, &s.vm_id).await.unwrap();
    assert_eq!(vm.resources.vcpus, 2);
    assert_eq!(vm.resources.memory_mib, 128);

    let r = engine.release_vm(&ops, &s.vm_id, None).await.unwrap();
    let job = engine
        .wait_job(
            &Scope::All,
            &r.job_id,
            Some(std::time::Duration::from_secs(20)),
        )
        .await
        .unwrap();
    assert_eq!(job.state, hcp_core::JobState::Succeeded, "{job:?}");
    assert_eq!(legacy().await, before);
    assert_eq!(
        engine
            .get_vm(&Scope::All, &s.vm_id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}
