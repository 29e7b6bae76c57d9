//! The provider's settings: the `settings:` block of a `kind: proxmox` provider in the hosts
//! file (one PVE cluster), and the `settings:` block of each of its hosts (PVE nodes).
//!
//! ```yaml
//! providers:
//!   - name: pve
//!     kind: proxmox
//!     settings:
//!       url: https://pve.example:8006
//!       token_id: "hcp@pve!ci"
//!       token_secret_file: /run/secrets/pve_token
//!       fingerprint: "AB:CD:..."          # or ca_file: /etc/hcp/pve-ca.pem
//!       images: {ubuntu-24.04: {template: 9000}}
//!       networks: {default: vmbr0}
//!     hosts:
//!       - name: pve1
//!         zone: zone-a
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hcp_core::{Error, Result, SecretString, TlsTrust};
use serde::{Deserialize, Serialize};

/// Most parallel write tasks per node allowed in `max_parallel_per_node`.
pub const MAX_PARALLEL_LIMIT: usize = 64;
/// The longest `task_timeout` accepted.
pub const MAX_TASK_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Settings of one Proxmox VE provider (a cluster, shared by its nodes), as written in the hosts
/// file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxmoxSettings {
    /// The API's base URL, `https://host:8006` (the `/api2/json` suffix is added).
    pub url: String,
    /// The API token id, `user@realm!tokenid`.
    pub token_id: String,
    /// The file holding the API token's secret (a UUID); read once at start-up.
    pub token_secret_file: Option<PathBuf>,
    /// A PEM file of the CA that signed the API's certificate; the system roots when absent.
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 fingerprint of the API's certificate (hex, colons optional); when set, only
    /// that certificate is accepted and the CA chain is not consulted.
    pub fingerprint: Option<String>,
    /// Catalog image name → the template it is cloned from. An image missing here is the
    /// template VM named like the image.
    pub images: BTreeMap<String, ImageSettings>,
    /// Catalog network name → the bridge a NIC on it attaches to. A network missing here is the
    /// bridge of the same name.
    pub networks: BTreeMap<String, String>,
    /// The disk of a cloned VM that HCP grows to the requested size (`scsi0`, `virtio0`, ...).
    pub disk: String,
    /// The storage full clones are written to; the template's storage when absent.
    pub storage: Option<String>,
    /// How long one PVE task (clone, start, delete, ...) may run before HCP stops it.
    #[serde(with = "humantime_serde")]
    pub task_timeout: Duration,
    /// How long one HTTP request may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How often a running task's status and log are read.
    #[serde(with = "humantime_serde")]
    pub task_poll: Duration,
    /// Write tasks HCP runs at once on one node (clones, starts, deletes); more wait their turn.
    pub max_parallel_per_node: usize,
    /// How many times a call refused by a VM lock ("can't lock file ... got timeout", "VM is
    /// locked") is retried, with a doubling back-off, before the error is returned.
    pub lock_retries: u32,
}

impl Default for ProxmoxSettings {
    fn default() -> Self {
        ProxmoxSettings {
            url: String::new(),
            token_id: String::new(),
            token_secret_file: None,
            ca_file: None,
            fingerprint: None,
            images: BTreeMap::new(),
            networks: BTreeMap::new(),
            disk: "scsi0".into(),
            storage: None,
            task_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            task_poll: Duration::from_millis(250),
            max_parallel_per_node: 2,
            lock_retries: 6,
        }
    }
}

/// How one catalog image is cloned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    /// The template's VMID.
    pub template: u32,
    /// Makes a full copy of the template's disks instead of a linked clone.
    #[serde(default)]
    pub full: bool,
}

/// The checked connection settings: where the API is and how HCP authenticates.
#[derive(Clone)]
pub struct Connection {
    /// The API base, `https://host:8006/api2/json`.
    pub api: String,
    /// The token id, `user@realm!tokenid`.
    pub token_id: String,
    /// The token secret.
    pub token_secret: SecretString,
    /// How the certificate is checked.
    pub trust: TlsTrust,
}

impl Connection {
    /// Returns the `Authorization` header value: `PVEAPIToken=user@realm!tokenid=secret`.
    pub fn authorization(&self) -> String {
        format!(
            "PVEAPIToken={}={}",
            self.token_id,
            self.token_secret.expose()
        )
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("api", &self.api)
            .field("token_id", &self.token_id)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl ProxmoxSettings {
    /// Parses and checks a provider's `settings:` block.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the key and what it allows.
    pub fn from_value(provider: &str, value: &serde_json::Value) -> Result<Self> {
        let field = |k: &str| format!("providers.{provider}.settings.{k}");
        if value.is_null() {
            return Err(Error::invalid(
                format!("providers.{provider}.settings"),
                "must give at least url, token_id and token_secret_file",
            ));
        }
        let s: ProxmoxSettings = serde_json::from_value(value.clone())
            .map_err(|e| Error::invalid(format!("providers.{provider}.settings"), e.to_string()))?;
        let url = s.url.trim_end_matches('/');
        if !url.starts_with("https://") || url.len() <= "https://".len() || url.contains(' ') {
            return Err(Error::invalid(
                field("url"),
                "must be the API's https URL, such as https://pve.example:8006",
            ));
        }
        let Some((user, token)) = s.token_id.split_once('!') else {
            return Err(Error::invalid(
                field("token_id"),
                "must be `user@realm!tokenid`, such as hcp@pve!ci",
            ));
        };
        if !user.contains('@')
            || token.is_empty()
            || !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::invalid(
                field("token_id"),
                "must be `user@realm!tokenid`, such as hcp@pve!ci",
            ));
        }
        if s.token_secret_file.is_none() {
            return Err(Error::invalid(
                field("token_secret_file"),
                "must name the file holding the API token's secret",
            ));
        }
        if s.ca_file.is_some() && s.fingerprint.is_some() {
            return Err(Error::invalid(
                field("fingerprint"),
                "give either ca_file or fingerprint, not both",
            ));
        }
        if let Some(fp) = &s.fingerprint {
            parse_fingerprint(fp).map_err(|m| Error::invalid(field("fingerprint"), m))?;
        }
        if !is_disk_key(&s.disk) {
            return Err(Error::invalid(
                field("disk"),
                format!(
                    "`{}` is not a disk key; use scsiN, virtioN, sataN or ideN",
                    s.disk
                ),
            ));
        }
        for (name, image) in &s.images {
            if image.template < 100 || image.template > 999_999_999 {
                return Err(Error::invalid(
                    field(&format!("images.{name}.template")),
                    format!("{} is not a VMID (100 to 999999999)", image.template),
                ));
            }
        }
        for (name, bridge) in &s.networks {
            if !is_iface(bridge) {
                return Err(Error::invalid(
                    field(&format!("networks.{name}")),
                    format!("`{bridge}` is not a bridge name (letters, digits, '-', '_', '.')"),
                ));
            }
        }
        if let Some(storage) = &s.storage
            && !is_iface(storage)
        {
            return Err(Error::invalid(
                field("storage"),
                format!("`{storage}` is not a storage id"),
            ));
        }
        if s.task_timeout.is_zero() || s.task_timeout > MAX_TASK_TIMEOUT {
            return Err(Error::invalid(
                field("task_timeout"),
                "must be between 1s and 24h",
            ));
        }
        if s.request_timeout.is_zero() || s.request_timeout > Duration::from_secs(600) {
            return Err(Error::invalid(
                field("request_timeout"),
                "must be between 1s and 10m",
            ));
        }
        if s.task_poll < Duration::from_millis(10) || s.task_poll > Duration::from_secs(60) {
            return Err(Error::invalid(
                field("task_poll"),
                "must be between 10ms and 60s",
            ));
        }
        if s.max_parallel_per_node == 0 || s.max_parallel_per_node > MAX_PARALLEL_LIMIT {
            return Err(Error::invalid(
                field("max_parallel_per_node"),
                format!("must be between 1 and {MAX_PARALLEL_LIMIT}"),
            ));
        }
        if s.lock_retries > 20 {
            return Err(Error::invalid(
                field("lock_retries"),
                "must be between 0 and 20",
            ));
        }
        Ok(s)
    }

    /// Reads the token secret and the CA file, and returns the checked connection settings.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the file setting that cannot be read or used;
    /// the secret never appears in the error.
    pub fn connection(&self, provider: &str) -> Result<Connection> {
        let field = |k: &str| format!("providers.{provider}.settings.{k}");
        let path = self.token_secret_file.as_ref().ok_or_else(|| {
            Error::invalid(
                field("token_secret_file"),
                "must name the file holding the API token's secret",
            )
        })?;
        let secret = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(
                field("token_secret_file"),
                format!("cannot read {}: {}", path.display(), e.kind()),
            )
        })?;
        let secret = secret.trim();
        if secret.is_empty()
            || !secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::invalid(
                field("token_secret_file"),
                format!(
                    "{} must hold the token secret (a UUID) and nothing else",
                    path.display()
                ),
            ));
        }
        let trust = if let Some(fp) = &self.fingerprint {
            TlsTrust::PinnedSha256(
                parse_fingerprint(fp).map_err(|m| Error::invalid(field("fingerprint"), m))?,
            )
        } else if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::invalid(
                    field("ca_file"),
                    format!("cannot read {}: {}", ca.display(), e.kind()),
                )
            })?;
            let pem = String::from_utf8(pem).map_err(|_| {
                Error::invalid(
                    field("ca_file"),
                    format!("{} holds no PEM certificate", ca.display()),
                )
            })?;
            let trust = TlsTrust::CaPem(pem);
            hcp_tls::client_config(&trust)
                .map_err(|m| Error::invalid(field("ca_file"), format!("{}: {m}", ca.display())))?;
            trust
        } else {
            TlsTrust::System
        };
        Ok(Connection {
            api: format!("{}/api2/json", self.url.trim_end_matches('/')),
            token_id: self.token_id.clone(),
            token_secret: SecretString::new(secret),
            trust,
        })
    }

    /// Returns the template VMID configured for `image`, and whether it is cloned in full.
    pub fn image(&self, image: &str) -> Option<&ImageSettings> {
        self.images.get(image)
    }

    /// Returns the bridge a NIC on catalog network `network` attaches to.
    pub fn bridge<'a>(&'a self, network: &'a str) -> &'a str {
        self.networks
            .get(network)
            .map(String::as_str)
            .unwrap_or(network)
    }
}

/// Settings of one host (a PVE node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSettings {
    /// The PVE node name; the host's own name when absent.
    pub node: Option<String>,
}

impl HostSettings {
    /// Parses a host's `settings:` block.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the key.
    pub fn from_value(provider: &str, host: &str, value: &serde_json::Value) -> Result<Self> {
        let field = format!("providers.{provider}.hosts.{host}.settings");
        let s: HostSettings = if value.is_null() {
            HostSettings::default()
        } else {
            serde_json::from_value(value.clone())
                .map_err(|e| Error::invalid(field.clone(), e.to_string()))?
        };
        let node = s.node.as_deref().unwrap_or(host);
        if !is_iface(node) {
            return Err(Error::invalid(
                format!("{field}.node"),
                format!("`{node}` is not a PVE node name (letters, digits, '-', '_', '.')"),
            ));
        }
        Ok(s)
    }
}

fn is_iface(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_disk_key(s: &str) -> bool {
    ["scsi", "virtio", "sata", "ide"].iter().any(|p| {
        s.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.len() <= 2 && n.chars().all(|c| c.is_ascii_digit()))
    })
}

pub use hcp_tls::parse_fingerprint;

#[cfg(test)]
mod tests {
    use super::*;
    use hcp_core::ErrorKind;
    use serde_json::json;

    fn good() -> serde_json::Value {
        json!({
            "url": "https://127.0.0.1:8006",
            "token_id": "root@pam!ci",
            "token_secret_file": "/nonexistent/secret",
        })
    }

    #[test]
    fn defaults_images_and_networks() {
        let mut v = good();
        v["images"] =
            json!({"ubuntu": {"template": 9000}, "full": {"template": 9001, "full": true}});
        v["networks"] = json!({"default": "vmbr0"});
        v["task_timeout"] = json!("90s");
        let s = ProxmoxSettings::from_value("pve", &v).unwrap();
        assert_eq!(s.image("ubuntu").unwrap().template, 9000);
        assert!(!s.image("ubuntu").unwrap().full);
        assert!(s.image("full").unwrap().full);
        assert_eq!(s.bridge("default"), "vmbr0");
        assert_eq!(s.bridge("vmbr1"), "vmbr1");
        assert_eq!(s.task_timeout, Duration::from_secs(90));
        assert_eq!(s.max_parallel_per_node, 2);
        assert_eq!(s.disk, "scsi0");
    }

    #[test]
    fn bad_settings_name_the_key() {
        let cases = [
            ("url", json!("http://x:8006"), "url"),
            ("token_id", json!("root@pam"), "token_id"),
            ("token_id", json!("root!x"), "token_id"),
            ("fingerprint", json!("zz"), "fingerprint"),
            ("disk", json!("net0"), "disk"),
            ("max_parallel_per_node", json!(0), "max_parallel_per_node"),
            ("task_timeout", json!("0s"), "task_timeout"),
            ("storage", json!("a b"), "storage"),
        ];
        for (key, value, named) in cases {
            let mut v = good();
            v[key] = value;
            let e = ProxmoxSettings::from_value("pve", &v).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSpec);
            assert_eq!(
                e.field(),
                Some(format!("providers.pve.settings.{named}").as_str()),
                "{e}"
            );
        }
        let mut v = good();
        v["images"] = json!({"x": {"template": 5}});
        let e = ProxmoxSettings::from_value("pve", &v).unwrap_err();
        assert_eq!(e.field(), Some("providers.pve.settings.images.x.template"));
        let mut v = good();
        v["networks"] = json!({"n": "br 0"});
        let e = ProxmoxSettings::from_value("pve", &v).unwrap_err();
        assert_eq!(e.field(), Some("providers.pve.settings.networks.n"));
        let mut v = good();
        v["ca_file"] = json!("/x");
        v["fingerprint"] = json!("00".repeat(32));
        let e = ProxmoxSettings::from_value("pve", &v).unwrap_err();
        assert_eq!(e.field(), Some("providers.pve.settings.fingerprint"));
        let mut v = good();
        v["urll"] = json!("x");
        let e = ProxmoxSettings::from_value("pve", &v).unwrap_err();
        assert!(e.to_string().contains("urll"), "{e}");
        let mut v = good();
        v.as_object_mut().unwrap().remove("token_secret_file");
        let e = ProxmoxSettings::from_value("pve", &v).unwrap_err();
        assert_eq!(e.field(), Some("providers.pve.settings.token_secret_file"));
        let e = ProxmoxSettings::from_value("pve", &serde_json::Value::Null).unwrap_err();
        assert_eq!(e.field(), Some("providers.pve.settings"));
    }

    #[test]
    fn the_secret_is_read_from_its_file_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0b6f0cd2-5c1a-4b1e-9d6a-3f1c2e4d5a6b\n").unwrap();
        let mut v = good();
        v["token_secret_file"] = json!(path);
        v["fingerprint"] = json!(format!("AB:{}", "cd:".repeat(30) + "EF"));
        let s = ProxmoxSettings::from_value("pve", &v).unwrap();
        let c = s.connection("pve").unwrap();
        assert_eq!(
            c.token_secret.expose(),
            "0b6f0cd2-5c1a-4b1e-9d6a-3f1c2e4d5a6b"
        );
        assert_eq!(c.api, "https://127.0.0.1:8006/api2/json");
        let shown = format!("{c:?} {s:?}");
        assert!(!shown.contains("0b6f0cd2"), "{shown}");
        std::fs::write(&path, "a secret with spaces").unwrap();
        let e = s.connection("pve").unwrap_err();
        assert_eq!(e.field(), Some("providers.pve.settings.token_secret_file"));
        assert!(!e.to_string().contains("spaces"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = s.connection("pve").unwrap_err();
        assert_eq!(e.field(), Some("providers.pve.settings.token_secret_file"));
    }

    #[test]
    fn host_node_names_are_checked() {
        let h = HostSettings::from_value("pve", "pve1", &serde_json::Value::Null).unwrap();
        assert_eq!(h.node, None);
        let e = HostSettings::from_value("pve", "h1", &json!({"node": "a/b"})).unwrap_err();
        assert_eq!(e.field(), Some("providers.pve.hosts.h1.settings.node"));
    }
}
