//! Through the engine against vcsim: what each target reports (images with their cloud-init
//! capability, networks) refuses a create before any job exists, and the operator's console
//! opt-in declares `console_webmks`, giving a clean error where vCenter issues no ticket.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Peer, USER};
use hcp_core::store::{JobFilter, PageRequest, Scope};
use hcp_core::{
    Config, Engine, ErrorKind, Image, JobState, Network, NetworkAttachment, Principal, ProjectId,
    RequestContext, VmSpec,
};
use serde_json::{Value, json};

/// Builds an engine from `examples/config/vsphere.yaml` pointed at `peer`, with `extra` merged
/// into the provider's settings and the catalog images `ubuntu-ci` (template `ubuntu-24.04`)
/// and `debian-12` (no template) and the network `storage` (no port group) added.
async fn engine(peer: &Peer, extra: Value) -> Engine {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/vsphere.yaml");
    let mut config = Config::from_file(&file).unwrap();
    let settings = &mut config.providers[0].settings;
    settings["url"] = json!(peer.url());
    settings["username"] = json!(USER);
    settings["password_file"] = json!(peer.dir.path().join("password"));
    settings["ca_file"] = json!(peer.ca_file());
    for (k, v) in extra.as_object().unwrap() {
        settings[k] = v.clone();
    }
    for name in ["ubuntu-ci", "debian-12"] {
        config.catalog.images.push(Image {
            name: name.into(),
            os: "linux".into(),
            description: String::new(),
            min_disk_gib: 0,
        });
    }
    config.catalog.networks.push(Network {
        name: "storage".into(),
        vlan: None,
        zones: Vec::new(),
        description: String::new(),
    });
    let engine = hcp_provider_vsphere::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    engine.refresh_inventory().await.unwrap();
    engine
}

fn alice() -> RequestContext {
    RequestContext::new("demo", Principal::new("alice"))
}

async fn job_count(engine: &Engine) -> usize {
    engine
        .list_jobs(
            &Scope::Project(ProjectId::new("demo")),
            &JobFilter::default(),
            &PageRequest::all(),
        )
        .await
        .unwrap()
        .items
        .len()
}

/// An unknown template, a network no port group carries, and user-data on an image whose
/// template does not run cloud-init are refused before any job exists, naming the field and
/// what is offered, never a host; user-data on the image that takes it reaches the clone's
/// `guestinfo` (read back with pyvmomi).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_before_any_job_and_user_data_reaches_guestinfo() {
    let peer = Peer::start(1);
    let engine = engine(
        &peer,
        json!({"images": {
            "ubuntu-24.04": {"template": "ubuntu-24.04"},
            "ubuntu-ci": {"template": "ubuntu-24.04", "cloud_init": true},
            "debian-12": {"template": "debian-12-tmpl"},
        }}),
    )
    .await;
    let refused = |e: &hcp_core::Error| {
        let text = e.to_string();
        for hidden in ["DC0", "esx-", "vm-", "host-"] {
            assert!(!text.contains(hidden), "no host or id `{hidden}`: {text}");
        }
    };

    let e = engine
        .create_vm(&alice(), VmSpec::new("nodebian", "debian-12", "small"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("image"), "{e}");
    assert!(
        e.to_string()
            .contains("images offered there: ubuntu-24.04, ubuntu-ci"),
        "{e}"
    );
    refused(&e);

    let mut spec = VmSpec::new("nostorage", "ubuntu-24.04", "small");
    spec.networks = vec![NetworkAttachment {
        network: "storage".into(),
    }];
    let e = engine.create_vm(&alice(), spec).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("networks[0].network"), "{e}");
    assert!(e.to_string().contains("default"), "what is offered: {e}");
    refused(&e);

    let user_data = "#cloud-config\nhostname: ci-1\n";
    let plain = VmSpec::new("plain-ci", "ubuntu-24.04", "small").with_user_data(user_data);
    let e = engine.create_vm(&alice(), plain).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
    assert_eq!(e.field(), Some("user_data"), "{e}");
    assert!(e.to_string().contains("images that do: ubuntu-ci"), "{e}");
    refused(&e);
    assert_eq!(job_count(&engine).await, 0, "refused before any job exists");
    for name in ["nodebian", "nostorage", "plain-ci"] {
        let seen = peer.pyvmomi(json!({"cmd": "show", "name": name}));
        assert_eq!(seen["found"], false, "{seen}");
    }

    let ci = VmSpec::new("ci-1", "ubuntu-ci", "small").with_user_data(user_data);
    let submitted = engine.create_vm(&alice(), ci).await.unwrap();
    let job = engine
        .wait_job(
            &Scope::Project(ProjectId::new("demo")),
            &submitted.job_id,
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "ci-1"}));
    assert_eq!(seen["userdata"], user_data, "{seen}");
    let meta = seen["metadata"].as_str().unwrap();
    assert!(
        meta.contains(&format!("instance-id: {}", submitted.vm_id)),
        "{meta}"
    );
}

/// `console: webmks` declares `console_webmks`, so the engine asks vCenter for a ticket; the
/// simulator has no `AcquireTicket`, and the user gets a clean, permanent
/// `FeatureNotSupported` naming the capability, with no host or managed object id. Without the
/// opt-in the engine refuses the console without asking vCenter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_opt_in_declares_webmks_and_vcsim_gives_a_clean_error() {
    let peer = Peer::start(1);
    let plain = engine(&peer, json!({})).await;
    let caps = plain.capabilities(Some("zone-a")).unwrap();
    assert!(!caps.console_webmks, "no console without the opt-in");

    let engine = engine(&peer, json!({"console": "webmks"})).await;
    let caps = engine.capabilities(Some("zone-a")).unwrap();
    assert!(caps.console_webmks && !caps.console_vnc, "{caps:?}");
    let submitted = engine
        .create_vm(&alice(), VmSpec::new("console-1", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let scope = Scope::Project(ProjectId::new("demo"));
    let job = engine
        .wait_job(&scope, &submitted.job_id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    let vm = engine.get_vm(&scope, &submitted.vm_id).await.unwrap();
    let native = vm.binding.native_id.clone().unwrap();

    let e = engine
        .console(&alice(), &submitted.vm_id, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
    assert!(!e.is_temporary(), "{e}");
    assert_eq!(
        e.context_value("capability"),
        Some("console_webmks"),
        "{e:?}"
    );
    assert!(e.message().contains("WebMKS"), "{e}");
    for hidden in [native.as_str(), "DC0", "esx-"] {
        assert!(!e.message().contains(hidden), "no `{hidden}`: {e}");
    }

    // The same VM seen by an engine without the opt-in: refused before vCenter is asked.
    plain.refresh_inventory().await.unwrap();
    let e = plain
        .console(&alice(), &submitted.vm_id, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
    assert_eq!(e.context_value("capability"), Some("console"), "{e:?}");
}
