//! The provider's settings: the `settings:` block of a `kind: vsphere` provider in the hosts
//! file (one vCenter), and the `settings:` block of each of its hosts (ESXi hosts).
//!
//! ```yaml
//! providers:
//!   - name: vc
//!     kind: vsphere
//!     settings:
//!       url: https://vcenter.example/sdk
//!       username: hcp@vsphere.local
//!       password_file: /run/secrets/vsphere_password
//!       thumbprint: "AB:CD:..."           # or ca_file: /etc/hcp/vcenter-ca.pem
//!       images: {ubuntu-24.04: {template: ubuntu-2404-tmpl}}
//!       networks: {default: "VM Network"}
//!       datastore: ds-ssd-01              # the host's first datastore when absent
//!     hosts:
//!       - name: esx1
//!         zone: zone-a
//!         settings: {host: esx1.example}  # the ESXi host's inventory name
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hcp_core::{Error, Result, SecretString, TlsTrust};
use serde::{Deserialize, Serialize};

/// The longest `task_timeout` accepted.
pub const MAX_TASK_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Most objects one inventory page may ask for.
pub const MAX_PAGE: u32 = 100_000;

/// Settings of one vSphere provider (a vCenter), as written in the hosts file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VsphereSettings {
    /// The SOAP endpoint, `https://vcenter.example/sdk` (`/sdk` is added when missing).
    pub url: String,
    /// The user HCP logs in as.
    pub username: String,
    /// The file holding the user's password; read once at start-up.
    pub password_file: Option<PathBuf>,
    /// A PEM file of the CA that signed vCenter's certificate; the system roots when absent.
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 thumbprint of vCenter's certificate (hex, colons optional); when set, only
    /// that certificate is accepted and the CA chain is not consulted.
    pub thumbprint: Option<String>,
    /// Catalog image name → the template it is cloned from. An image missing here is the
    /// template named like the image.
    pub images: BTreeMap<String, ImageSettings>,
    /// Catalog network name → the port group a NIC on it attaches to. A network missing here is
    /// the port group of the same name.
    pub networks: BTreeMap<String, String>,
    /// The datastore clones are written to; the target host's first datastore when absent.
    pub datastore: Option<String>,
    /// How long one vCenter task (clone, power, destroy, ...) may run before HCP cancels it.
    #[serde(with = "humantime_serde")]
    pub task_timeout: Duration,
    /// How long one SOAP request may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Objects asked for per inventory page (`maxObjects`); more arrive through
    /// `ContinueRetrievePropertiesEx`.
    pub page_size: u32,
    /// The console HCP offers for this vCenter's VMs, when the operator opts in: `webmks`
    /// declares `console_webmks` (vCenter's `AcquireTicket("webmks")`). Absent, no console is
    /// declared and the engine refuses console requests before asking vCenter.
    pub console: Option<ConsoleOptIn>,
}

/// A console type an operator declares for a vCenter that issues its tickets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleOptIn {
    /// WebMKS: vCenter issues `webmks` tickets (`AcquireTicket`), and HCP relays the console's
    /// WebSocket.
    Webmks,
}

impl Default for VsphereSettings {
    fn default() -> Self {
        VsphereSettings {
            url: String::new(),
            username: String::new(),
            password_file: None,
            ca_file: None,
            thumbprint: None,
            images: BTreeMap::new(),
            networks: BTreeMap::new(),
            datastore: None,
            task_timeout: Duration::from_secs(1800),
            request_timeout: Duration::from_secs(60),
            page_size: 5000,
            console: None,
        }
    }
}

/// How one catalog image is cloned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    /// The template's inventory name.
    pub template: String,
    /// The template runs cloud-init with VMware's guestinfo datasource: user-data is passed as
    /// `guestinfo.userdata` (and `guestinfo.metadata`) in the clone's `extraConfig`.
    #[serde(default)]
    pub cloud_init: bool,
}

/// The checked connection settings: where vCenter is and how HCP logs in.
#[derive(Clone)]
pub struct Connection {
    /// The SOAP endpoint, `https://host/sdk`.
    pub url: String,
    /// The user.
    pub username: String,
    /// The password.
    pub password: SecretString,
    /// How the certificate is checked.
    pub trust: TlsTrust,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl VsphereSettings {
    /// Parses and checks a provider's `settings:` block.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the key and what it allows.
    pub fn from_value(provider: &str, value: &serde_json::Value) -> Result<Self> {
        let field = |k: &str| format!("providers.{provider}.settings.{k}");
        if value.is_null() {
            return Err(Error::invalid(
                format!("providers.{provider}.settings"),
                "must give at least url, username and password_file",
            ));
        }
        let mut s: VsphereSettings = serde_json::from_value(value.clone())
            .map_err(|e| Error::invalid(format!("providers.{provider}.settings"), e.to_string()))?;
        let url = s.url.trim_end_matches('/');
        let host = url.strip_prefix("https://").unwrap_or("");
        if host.is_empty() || host.starts_with('/') || url.contains(char::is_whitespace) {
            return Err(Error::invalid(
                field("url"),
                "must be vCenter's https URL, such as https://vcenter.example/sdk",
            ));
        }
        s.url = if url.ends_with("/sdk") {
            url.to_string()
        } else {
            format!("{url}/sdk")
        };
        if s.username.trim().is_empty() || s.username.len() > 256 {
            return Err(Error::invalid(
                field("username"),
                "must name the vCenter user HCP logs in as",
            ));
        }
        if s.password_file.is_none() {
            return Err(Error::invalid(
                field("password_file"),
                "must name the file holding the user's password",
            ));
        }
        if s.ca_file.is_some() && s.thumbprint.is_some() {
            return Err(Error::invalid(
                field("thumbprint"),
                "give either ca_file or thumbprint, not both",
            ));
        }
        if let Some(fp) = &s.thumbprint {
            parse_thumbprint(fp).map_err(|m| Error::invalid(field("thumbprint"), m))?;
        }
        for (name, image) in &s.images {
            if !is_name(&image.template) {
                return Err(Error::invalid(
                    field(&format!("images.{name}.template")),
                    "must be a template's inventory name (1-80 characters, no '/')",
                ));
            }
        }
        for (name, pg) in &s.networks {
            if !is_name(pg) {
                return Err(Error::invalid(
                    field(&format!("networks.{name}")),
                    "must be a port group's name (1-80 characters, no '/')",
                ));
            }
        }
        if let Some(ds) = &s.datastore
            && !is_name(ds)
        {
            return Err(Error::invalid(
                field("datastore"),
                "must be a datastore's name (1-80 characters, no '/')",
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
        if s.page_size == 0 || s.page_size > MAX_PAGE {
            return Err(Error::invalid(
                field("page_size"),
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        Ok(s)
    }

    /// Reads the password and the CA file, and returns the checked connection settings.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the file setting that cannot be read or used;
    /// the password never appears in the error.
    pub fn connection(&self, provider: &str) -> Result<Connection> {
        let field = |k: &str| format!("providers.{provider}.settings.{k}");
        let path = self.password_file.as_ref().ok_or_else(|| {
            Error::invalid(
                field("password_file"),
                "must name the file holding the user's password",
            )
        })?;
        let secret = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(
                field("password_file"),
                format!("cannot read {}: {}", path.display(), e.kind()),
            )
        })?;
        // One trailing newline is the file's, not the password's.
        let secret = secret
            .strip_suffix('\n')
            .map(|s| s.strip_suffix('\r').unwrap_or(s))
            .unwrap_or(&secret);
        if secret.is_empty() || secret.contains('\n') {
            return Err(Error::invalid(
                field("password_file"),
                format!("{} must hold the password on one line", path.display()),
            ));
        }
        let trust = if let Some(fp) = &self.thumbprint {
            TlsTrust::PinnedSha256(
                parse_thumbprint(fp).map_err(|m| Error::invalid(field("thumbprint"), m))?,
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
            url: self.url.clone(),
            username: self.username.clone(),
            password: SecretString::new(secret),
            trust,
        })
    }

    /// Returns true when `image`'s template takes cloud-init user-data through guestinfo.
    pub fn cloud_init(&self, image: &str) -> bool {
        self.images.get(image).is_some_and(|i| i.cloud_init)
    }

    /// Returns the template name of `image`.
    pub fn template<'a>(&'a self, image: &'a str) -> &'a str {
        self.images
            .get(image)
            .map(|i| i.template.as_str())
            .unwrap_or(image)
    }

    /// Returns the port group a NIC on catalog network `network` attaches to.
    pub fn port_group<'a>(&'a self, network: &'a str) -> &'a str {
        self.networks
            .get(network)
            .map(String::as_str)
            .unwrap_or(network)
    }
}

/// Settings of one host (an ESXi host in vCenter's inventory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSettings {
    /// The ESXi host's inventory name; the host's own name when absent.
    pub host: Option<String>,
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
        if !is_name(s.host.as_deref().unwrap_or(host)) {
            return Err(Error::invalid(
                format!("{field}.host"),
                "must be an ESXi host's inventory name (1-80 characters, no '/')",
            ));
        }
        Ok(s)
    }
}

/// Settings of one cluster of a provider (the `settings:` block of an entry of `clusters:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// The cluster's (`ClusterComputeResource`) inventory name; the entry's own name when
    /// absent.
    pub cluster: Option<String>,
}

impl ClusterSettings {
    /// Parses a cluster's `settings:` block.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the key.
    pub fn from_value(provider: &str, cluster: &str, value: &serde_json::Value) -> Result<Self> {
        let field = format!("providers.{provider}.clusters.{cluster}.settings");
        let s: ClusterSettings = if value.is_null() {
            ClusterSettings::default()
        } else {
            serde_json::from_value(value.clone())
                .map_err(|e| Error::invalid(field.clone(), e.to_string()))?
        };
        if !is_name(s.cluster.as_deref().unwrap_or(cluster)) {
            return Err(Error::invalid(
                format!("{field}.cluster"),
                "must be a cluster's inventory name (1-80 characters, no '/')",
            ));
        }
        Ok(s)
    }
}

fn is_name(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= 80 && !s.contains('/') && !s.contains(char::is_control)
}

/// Parses a SHA-256 thumbprint written as 64 hex digits, with or without colons.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_thumbprint(s: &str) -> std::result::Result<[u8; 32], String> {
    hcp_tls::parse_fingerprint(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcp_core::ErrorKind;
    use serde_json::json;

    fn good() -> serde_json::Value {
        json!({
            "url": "https://127.0.0.1:8989",
            "username": "hcp",
            "password_file": "/nonexistent/secret",
        })
    }

    #[test]
    fn defaults_images_and_networks() {
        let mut v = good();
        v["images"] = json!({"ubuntu": {"template": "tmpl-ubuntu", "cloud_init": true}});
        v["networks"] = json!({"default": "VM Network"});
        v["task_timeout"] = json!("90s");
        let s = VsphereSettings::from_value("vc", &v).unwrap();
        assert_eq!(s.url, "https://127.0.0.1:8989/sdk");
        assert_eq!(s.template("ubuntu"), "tmpl-ubuntu");
        assert_eq!(s.template("other"), "other");
        assert!(s.cloud_init("ubuntu") && !s.cloud_init("other"));
        assert_eq!(s.port_group("default"), "VM Network");
        assert_eq!(s.port_group("DC0_DVPG0"), "DC0_DVPG0");
        assert_eq!(s.task_timeout, Duration::from_secs(90));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let cases = [
            ("url", json!("http://x/sdk"), "url"),
            ("url", json!("https://"), "url"),
            ("username", json!(""), "username"),
            ("thumbprint", json!("zz"), "thumbprint"),
            ("datastore", json!("a/b"), "datastore"),
            ("task_timeout", json!("0s"), "task_timeout"),
            ("page_size", json!(0), "page_size"),
        ];
        for (key, value, named) in cases {
            let mut v = good();
            v[key] = value;
            let e = VsphereSettings::from_value("vc", &v).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSpec);
            assert_eq!(
                e.field(),
                Some(format!("providers.vc.settings.{named}").as_str()),
                "{e}"
            );
        }
        let mut v = good();
        v["images"] = json!({"x": {"template": ""}});
        let e = VsphereSettings::from_value("vc", &v).unwrap_err();
        assert_eq!(e.field(), Some("providers.vc.settings.images.x.template"));
        let mut v = good();
        v["ca_file"] = json!("/x");
        v["thumbprint"] = json!("00".repeat(32));
        let e = VsphereSettings::from_value("vc", &v).unwrap_err();
        assert_eq!(e.field(), Some("providers.vc.settings.thumbprint"));
        let mut v = good();
        v["passwrd_file"] = json!("x");
        let e = VsphereSettings::from_value("vc", &v).unwrap_err();
        assert!(e.to_string().contains("passwrd_file"), "{e}");
        let e = VsphereSettings::from_value("vc", &serde_json::Value::Null).unwrap_err();
        assert_eq!(e.field(), Some("providers.vc.settings"));
    }

    #[test]
    fn the_password_is_read_from_its_file_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret pass\n").unwrap();
        let mut v = good();
        v["password_file"] = json!(path);
        v["thumbprint"] = json!(format!("AB:{}", "cd:".repeat(30) + "EF"));
        let s = VsphereSettings::from_value("vc", &v).unwrap();
        let c = s.connection("vc").unwrap();
        assert_eq!(c.password.expose(), "s3cret pass");
        let shown = format!("{c:?} {s:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        std::fs::write(&path, "two\nlines\n").unwrap();
        let e = s.connection("vc").unwrap_err();
        assert_eq!(e.field(), Some("providers.vc.settings.password_file"));
        assert!(!e.to_string().contains("lines"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = s.connection("vc").unwrap_err();
        assert_eq!(e.field(), Some("providers.vc.settings.password_file"));
    }

    #[test]
    fn host_names_are_checked() {
        let h = HostSettings::from_value("vc", "esx1", &serde_json::Value::Null).unwrap();
        assert_eq!(h.host, None);
        let e = HostSettings::from_value("vc", "h1", &json!({"host": "a/b"})).unwrap_err();
        assert_eq!(e.field(), Some("providers.vc.hosts.h1.settings.host"));
    }
}
