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

fn yaml(name: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&manifest(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The replicated set is the single-replica Deployment with three replicas, a rolling update that
/// never drops below three ready, a startup probe on a public route, and nothing else changed in
/// the container (so the two shapes do not drift apart); its PodDisruptionBudget selects exactly
/// its pods.
#[test]
fn replicated_deployment_is_the_single_one_scaled_out_safely() {
    let single = yaml("deployment.yaml");
    let replicated = yaml("replicated/deployment.yaml");
    let spec = &replicated["spec"];
    assert_eq!(spec["replicas"].as_u64(), Some(3));
    assert_eq!(spec["strategy"]["type"].as_str(), Some("RollingUpdate"));
    assert_eq!(
        spec["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0)
    );
    assert_eq!(spec["selector"], single["spec"]["selector"]);
    let (c1, c3) = (
        &single["spec"]["template"]["spec"]["containers"][0],
        &spec["template"]["spec"]["containers"][0],
    );
    for key in [
        "image",
        "args",
        "ports",
        "envFrom",
        "readinessProbe",
        "resources",
        "securityContext",
        "volumeMounts",
    ] {
        assert_eq!(
            c1[key], c3[key],
            "the replicated container's {key} differs from the single one's"
        );
    }
    assert_eq!(
        single["spec"]["template"]["spec"]["volumes"],
        spec["template"]["spec"]["volumes"]
    );
    let startup = c3["startupProbe"]["httpGet"]["path"]
        .as_str()
        .expect("a startup probe");
    assert_eq!(
        startup, "/readyz",
        "the startup probe waits for the store's migrations"
    );
    let options = hcp_server::ServeOptions::default();
    assert!(options.auth.public_routes.iter().any(|r| r == startup));
    let pdb = yaml("replicated/pdb.yaml");
    assert_eq!(pdb["kind"].as_str(), Some("PodDisruptionBudget"));
    assert_eq!(pdb["spec"]["selector"], single["spec"]["selector"]);
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
}

/// The replicated Secret holds every key of the single one plus `database_url`, and a service
/// built from it opens the PostgreSQL store from that file (here pointed at a closed port, so the
/// attempt fails) without the URL's password in the error.
#[tokio::test]
async fn replicated_secret_switches_the_store_by_its_database_url_file() {
    let single: Secret = serde_yaml_ng::from_str(&manifest("secret.yaml")).unwrap();
    let replicated: Secret = serde_yaml_ng::from_str(&manifest("replicated/secret.yaml")).unwrap();
    for key in single.string_data.keys() {
        assert!(
            replicated.string_data.contains_key(key),
            "replicated/secret.yaml lacks {key}"
        );
    }
    let url = replicated
        .string_data
        .get("database_url")
        .expect("database_url");
    let password = "REPLACE-ME";
    assert!(
        url.starts_with("postgres://") && url.contains(password),
        "{url}"
    );
    let secrets = tempfile::tempdir().unwrap();
    let dir = secrets.path().display().to_string();
    // Every key is a file in the mounted directory, as the volume makes them.
    for (k, v) in &replicated.string_data {
        std::fs::write(secrets.path().join(k), v).unwrap();
    }
    let closed = url
        .replace("postgres.example.internal:5432", "127.0.0.1:1")
        .replace("/run/secrets/", &format!("{dir}/"));
    std::fs::write(secrets.path().join("database_url"), &closed).unwrap();
    let env = |k: &str| (k == "HCP_SECRETS_DIR").then(|| dir.clone());
    let Err(err) = hcp_server::build_engine(None, &env).await else {
        panic!("the service did not open the PostgreSQL store named by the secret file");
    };
    assert!(!format!("{err:#}").contains(password), "{err:#}");
    // The URL asks for verified TLS with the Secret's CA file: its placeholder is no
    // certificate, so the store refuses before dialling, naming the file.
    assert!(
        format!("{err:#}").contains("db-ca.crt"),
        "the CA file of the Secret is the one read: {err:#}"
    );
}
