//! The provider's settings: the `settings:` block of a `kind: libvirt` provider in the hosts
//! file, and the `settings:` block of each of its hosts.
//!
//! ```yaml
//! providers:
//!   - name: kvm
//!     kind: libvirt
//!     settings:
//!       pool: hcp                        # where overlays and seed ISOs go
//!       images: {base-tiny: base-tiny.qcow2}
//!       networks: {default: {type: user}}
//!     hosts:
//!       - name: local
//!         zone: zone-a
//!         settings: {uri: "qemu:///system"}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use hcp_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The URI of a host whose settings name none.
pub const DEFAULT_URI: &str = "qemu:///system";

/// Settings of one libvirt provider (shared by its hosts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LibvirtSettings {
    /// The storage pool that holds VM disks (qcow2 overlays or copies) and seed ISOs.
    pub pool: String,
    /// Catalog image name → its base volume: `volume` in [`LibvirtSettings::pool`], or
    /// `pool/volume`. An image missing here is looked up as a volume named like the image, with or
    /// without a `.qcow2`, `.img` or `.raw` suffix, in `pool`.
    pub images: BTreeMap<String, String>,
    /// Copies the base volume into a standalone qcow2 disk instead of a qcow2 overlay on it.
    pub full_copy: bool,
    /// The domain type: `auto` (`kvm` where the host offers it, else `qemu`; `test` on libvirt's
    /// test driver), `kvm`, `qemu` or `test`.
    pub domain_type: String,
    /// The machine type (`pc`, `q35`, ...); libvirt's default when absent.
    pub machine: Option<String>,
    /// The address VNC consoles listen on.
    pub vnc_listen: String,
    /// How long a console description stays valid.
    #[serde(with = "humantime_serde")]
    pub console_ttl: Duration,
    /// Catalog network name → what a NIC on it attaches to. A network missing here attaches to
    /// the libvirt network of the same name.
    pub networks: BTreeMap<String, NetworkBinding>,
    /// The program that builds NoCloud seed ISOs (`genisoimage`, or a compatible `mkisofs`).
    pub iso_tool: String,
    /// vCPUs HCP may place per host CPU (like OpenStack Nova's `cpu_allocation_ratio`): the
    /// host offers `CPUs × ratio` vCPUs.
    pub cpu_allocation_ratio: f64,
    /// MiB of guest memory HCP may place per MiB of host memory.
    pub memory_allocation_ratio: f64,
    /// Timeout of one libvirt call sequence (connect and operation), so a host that hangs does
    /// not hold a job forever.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
}

impl Default for LibvirtSettings {
    fn default() -> Self {
        LibvirtSettings {
            pool: "default".into(),
            images: BTreeMap::new(),
            full_copy: false,
            domain_type: "auto".into(),
            machine: None,
            vnc_listen: "127.0.0.1".into(),
            console_ttl: Duration::from_secs(60),
            networks: BTreeMap::new(),
            iso_tool: "genisoimage".into(),
            cpu_allocation_ratio: 4.0,
            memory_allocation_ratio: 1.0,
            call_timeout: Duration::from_secs(120),
        }
    }
}

/// What a NIC on a catalog network attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkBinding {
    /// A libvirt network (`<interface type='network'>`).
    Network {
        /// The libvirt network name.
        source: String,
    },
    /// A host bridge (`<interface type='bridge'>`).
    Bridge {
        /// The bridge device name.
        source: String,
    },
    /// QEMU's user-mode NAT (`<interface type='user'>`): needs no set-up on the host, cannot tag
    /// VLANs.
    User,
}

/// The domain types [`LibvirtSettings::domain_type`] accepts.
pub const DOMAIN_TYPES: [&str; 4] = ["auto", "kvm", "qemu", "test"];

impl LibvirtSettings {
    /// Parses a provider's `settings:` block.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the key and what it allows.
    pub fn from_value(provider: &str, value: &serde_json::Value) -> Result<Self> {
        let field = |k: &str| format!("providers.{provider}.settings.{k}");
        let s: LibvirtSettings = if value.is_null() {
            LibvirtSettings::default()
        } else {
            serde_json::from_value(value.clone()).map_err(|e| {
                Error::invalid(format!("providers.{provider}.settings"), e.to_string())
            })?
        };
        if s.pool.trim().is_empty() {
            return Err(Error::invalid(
                field("pool"),
                "must name a libvirt storage pool",
            ));
        }
        if !DOMAIN_TYPES.contains(&s.domain_type.as_str()) {
            return Err(Error::invalid(
                field("domain_type"),
                format!(
                    "`{}` is not a domain type; use one of {}",
                    s.domain_type,
                    DOMAIN_TYPES.join(", ")
                ),
            ));
        }
        for (image, volume) in &s.images {
            if volume.is_empty() || volume.split('/').count() > 2 || volume.ends_with('/') {
                return Err(Error::invalid(
                    field(&format!("images.{image}")),
                    format!("`{volume}` is not `volume` or `pool/volume`"),
                ));
            }
        }
        for (name, binding) in &s.networks {
            if let NetworkBinding::Network { source } | NetworkBinding::Bridge { source } = binding
                && source.trim().is_empty()
            {
                return Err(Error::invalid(
                    field(&format!("networks.{name}.source")),
                    "must name a libvirt network or bridge",
                ));
            }
        }
        for (key, ratio) in [
            ("cpu_allocation_ratio", s.cpu_allocation_ratio),
            ("memory_allocation_ratio", s.memory_allocation_ratio),
        ] {
            if !(ratio > 0.0 && ratio <= 64.0) {
                return Err(Error::invalid(
                    field(key),
                    format!("{ratio} is not a ratio between 0 (excluded) and 64"),
                ));
            }
        }
        if s.console_ttl.is_zero() {
            return Err(Error::invalid(field("console_ttl"), "must be positive"));
        }
        if s.call_timeout.is_zero() {
            return Err(Error::invalid(field("call_timeout"), "must be positive"));
        }
        Ok(s)
    }

    /// Returns the pool and volume names configured for `image`'s base volume, if any.
    pub fn image_volume(&self, image: &str) -> Option<(String, String)> {
        let v = self.images.get(image)?;
        Some(match v.split_once('/') {
            Some((pool, vol)) => (pool.to_string(), vol.to_string()),
            None => (self.pool.clone(), v.clone()),
        })
    }

    /// Returns what a NIC on catalog network `network` attaches to.
    pub fn network_binding(&self, network: &str) -> NetworkBinding {
        self.networks
            .get(network)
            .cloned()
            .unwrap_or_else(|| NetworkBinding::Network {
                source: network.to_string(),
            })
    }
}

/// Settings of one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSettings {
    /// The libvirt connection URI (`qemu:///system`, `qemu+ssh://root@kvm1/system`,
    /// `qemu+tls://kvm1/system`, `test:///default`).
    pub uri: String,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            uri: DEFAULT_URI.into(),
        }
    }
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
        if !s.uri.contains(":/") || s.uri.contains('\0') {
            return Err(Error::invalid(
                format!("{field}.uri"),
                "must be a libvirt URI such as qemu:///system or qemu+ssh://root@host/system",
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcp_core::ErrorKind;
    use serde_json::json;

    #[test]
    fn defaults_and_bindings() {
        let s = LibvirtSettings::from_value(
            "kvm",
            &json!({
                "pool": "hcp",
                "images": {"tiny": "base-tiny.qcow2", "other": "images/other.qcow2"},
                "networks": {"default": {"type": "user"}, "lan": {"type": "bridge", "source": "br0"}},
                "console_ttl": "30s"
            }),
        )
        .unwrap();
        assert_eq!(
            s.image_volume("tiny"),
            Some(("hcp".into(), "base-tiny.qcow2".into()))
        );
        assert_eq!(
            s.image_volume("other"),
            Some(("images".into(), "other.qcow2".into()))
        );
        assert_eq!(s.image_volume("nope"), None);
        assert_eq!(s.network_binding("default"), NetworkBinding::User);
        assert_eq!(
            s.network_binding("lan"),
            NetworkBinding::Bridge {
                source: "br0".into()
            }
        );
        assert_eq!(
            s.network_binding("prod"),
            NetworkBinding::Network {
                source: "prod".into()
            }
        );
        assert_eq!(s.console_ttl, Duration::from_secs(30));
        assert_eq!(s.domain_type, "auto");
    }

    #[test]
    fn bad_settings_name_the_key() {
        let e = LibvirtSettings::from_value("kvm", &json!({"domain_type": "xen"})).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
        assert_eq!(e.field(), Some("providers.kvm.settings.domain_type"));
        assert!(e.to_string().contains("auto, kvm, qemu, test"), "{e}");
        let e =
            LibvirtSettings::from_value("kvm", &json!({"cpu_allocation_ratio": 0})).unwrap_err();
        assert_eq!(
            e.field(),
            Some("providers.kvm.settings.cpu_allocation_ratio")
        );
        let e = LibvirtSettings::from_value("kvm", &json!({"pol": "x"})).unwrap_err();
        assert!(e.to_string().contains("pol"), "{e}");
        let e = LibvirtSettings::from_value("kvm", &json!({"images": {"a": "x/y/z"}})).unwrap_err();
        assert_eq!(e.field(), Some("providers.kvm.settings.images.a"));
        let e = LibvirtSettings::from_value(
            "kvm",
            &json!({"networks": {"n": {"type": "bridge", "source": ""}}}),
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("providers.kvm.settings.networks.n.source"));
    }

    #[test]
    fn host_uri_defaults_and_is_checked() {
        let h = HostSettings::from_value("kvm", "h1", &serde_json::Value::Null).unwrap();
        assert_eq!(h.uri, DEFAULT_URI);
        let e = HostSettings::from_value("kvm", "h1", &json!({"uri": "localhost"})).unwrap_err();
        assert_eq!(e.field(), Some("providers.kvm.hosts.h1.settings.uri"));
    }
}
