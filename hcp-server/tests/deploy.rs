//! The deployment's hosts file (in the Kubernetes ConfigMap) is a valid HCP configuration that
//! builds an engine, and its environment is accepted (apart from the listen address, which the
//! service refuses on non-loopback until authentication exists).

use std::collections::BTreeMap;

#[derive(serde::Deserialize)]
struct ConfigMap {
    data: BTreeMap<String, String>,
}

fn configmap() -> ConfigMap {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/configmap.yaml"
    );
    let text = std::fs::read_to_string(path).expect("the ConfigMap exists");
    serde_yaml_ng::from_str(&text).expect("the ConfigMap is YAML")
}

#[tokio::test]
async fn configmap_hosts_file_and_environment_build_an_engine() {
    let cm = configmap();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts.yaml");
    std::fs::write(&hosts, &cm.data["hosts.yaml"]).unwrap();
    let env = |k: &str| cm.data.get(k).cloned();
    let engine = hcp_server::build_engine(Some(&hosts), &env)
        .await
        .expect("the deployment's config builds");
    assert_eq!(
        engine.settings().inventory_refresh_interval,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(engine.settings().default_project, "demo");
    let options = hcp_server::ServeOptions::default().apply_env(&|k| {
        if k == "HCP_LISTEN" {
            None
        } else {
            cm.data.get(k).cloned()
        }
    });
    assert!(options.is_ok(), "{options:?}");
    let refused = hcp_server::ServeOptions::default()
        .apply_env(&env)
        .unwrap_err();
    assert_eq!(refused.field(), Some("listen"));
}
