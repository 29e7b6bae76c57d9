//! The deployment's manifests configure a service that starts: the ConfigMap's hosts file builds
//! an engine, its environment turns OIDC on (so the non-loopback listen address is accepted),
//! the Secret provides the OIDC client secret as a file in the mounted secrets directory, and the
//! probes' routes stay public. Without the OIDC settings the same listen address is refused.

use std::collections::BTreeMap;

#[derive(serde::Deserialize)]
struct ConfigMap {
    data: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Secret {
    string_data: BTreeMap<String, String>,
}

fn manifest(name: &str) -> String {
    let path = format!("{}/../deploy/kubernetes/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn configmap() -> ConfigMap {
    serde_yaml_ng::from_str(&manifest("configmap.yaml")).expect("the ConfigMap is YAML")
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
}

#[test]
fn deployment_turns_oidc_on_with_the_secret_file_and_public_probes() {
    let cm = configmap();
    let secret: Secret =
        serde_yaml_ng::from_str(&manifest("secret.yaml")).expect("the Secret is YAML");
    let deployment: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&manifest("deployment.yaml")).expect("the Deployment is YAML");
    // The Secret's keys are files in the secrets directory, as the volume mounts them.
    let secrets = tempfile::tempdir().unwrap();
    for (k, v) in &secret.string_data {
        std::fs::write(secrets.path().join(k), v).unwrap();
    }
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    assert!(
        mounts.iter().any(|m| m["name"] == "secrets"
            && Some(m["mountPath"].as_str().unwrap())
                == cm.data.get("HCP_SECRETS_DIR").map(String::as_str)),
        "the Secret is mounted at HCP_SECRETS_DIR"
    );
    let secrets_dir = secrets.path().display().to_string();
    let env = |k: &str| match k {
        "HCP_SECRETS_DIR" => Some(secrets_dir.clone()),
        _ => cm.data.get(k).cloned(),
    };
    let options = hcp_server::ServeOptions::default()
        .apply_env(&env)
        .expect("the deployment's environment is accepted");
    assert!(!options.listen.ip().is_loopback(), "{}", options.listen);
    let oidc = options.auth.oidc.as_ref().expect("OIDC is on");
    assert_eq!(oidc.issuer_url, cm.data["OIDC_ISSUER_URL"]);
    assert_eq!(oidc.client_id, cm.data["OIDC_CLIENT_ID"]);
    assert_eq!(oidc.hyperv_role, "vm-admin");
    assert_eq!(oidc.tenant_role, "hcp-tenant");
    assert_eq!(
        oidc.client_secret.as_ref().map(|s| s.expose().to_string()),
        secret.string_data.get("oidc_client_secret").cloned(),
        "the client secret comes from the Secret's file"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        assert!(
            options.auth.public_routes.iter().any(|r| r == path),
            "{probe} {path} needs a token"
        );
    }
    // Without OIDC the same listen address is refused, naming how to configure it.
    let refused = hcp_server::ServeOptions::default()
        .apply_env(&|k| {
            if k.starts_with("OIDC_") { None } else { env(k) }
        })
        .unwrap_err();
    assert_eq!(refused.field(), Some("listen"));
    assert!(refused.message().contains("OIDC_ISSUER_URL"), "{refused}");
}
