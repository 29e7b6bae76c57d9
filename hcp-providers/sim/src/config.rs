//! The simulator's settings (the `settings:` block of its provider in the hosts file).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hcp_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Settings of one simulated provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSettings {
    /// Seeds the random faults and console tokens, so runs repeat.
    pub seed: u64,
    /// Latency of every operation.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Latency per operation name (`create_vm`, `host_inventory`, ...), overriding `latency`.
    #[serde(with = "per_op")]
    pub op_latency: BTreeMap<String, Duration>,
    /// Extra latency of every call to these hosts.
    #[serde(with = "per_op")]
    pub slow_hosts: BTreeMap<String, Duration>,
    /// Hosts that do not answer.
    pub down_hosts: Vec<String>,
    /// Probability (0–1) that a VM operation fails with a temporary error.
    pub failure_rate: f64,
    /// Images (templates) present on every host; any image is accepted when empty.
    pub images: Vec<String>,
    /// Images of particular hosts (host name → images), overriding `images` there.
    pub host_images: BTreeMap<String, Vec<String>>,
    /// Capabilities VMs of particular images lack (image name → capability names, as in
    /// `disable`): the hosts report them per image, as a template without cloud-init would.
    pub image_disable: BTreeMap<String, Vec<String>>,
    /// Networks every host reaches; not reported (any network is accepted) when empty.
    pub networks: Vec<String>,
    /// Networks of particular hosts (host name → networks), overriding `networks` there.
    pub host_networks: BTreeMap<String, Vec<String>>,
    /// Capabilities the provider does not declare (to simulate a smaller hypervisor).
    pub disable: Vec<String>,
    /// Keeps hosts and VMs in this JSON file, shared safely between processes; in memory when absent.
    pub state_file: Option<PathBuf>,
    /// The base URL of console links.
    pub console_url: String,
    /// How long a console link stays valid.
    #[serde(with = "humantime_serde")]
    pub console_ttl: Duration,
    /// vCPUs of hosts that do not set their own.
    pub host_vcpus: u32,
    /// Memory (MiB) of hosts that do not set their own.
    pub host_memory_mib: u64,
    /// Most vCPUs one VM may have (declared as the provider's `max_vcpus`).
    pub max_vcpus: u32,
    /// Most memory one VM may have, in MiB (`max_memory_mib`).
    pub max_memory_mib: u64,
    /// Largest disk one VM may have, in GiB (`max_disk_gib`).
    pub max_disk_gib: u64,
    /// Most networks one VM may attach to (`max_networks`).
    pub max_networks: u32,
    /// Most snapshots one VM may keep, as a hypervisor limit (Hyper-V's 50 checkpoints, say);
    /// none when absent.
    pub max_snapshots_per_vm: Option<u32>,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            seed: 42,
            latency: Duration::ZERO,
            op_latency: BTreeMap::new(),
            slow_hosts: BTreeMap::new(),
            down_hosts: Vec::new(),
            failure_rate: 0.0,
            images: Vec::new(),
            host_images: BTreeMap::new(),
            image_disable: BTreeMap::new(),
            networks: Vec::new(),
            host_networks: BTreeMap::new(),
            disable: Vec::new(),
            state_file: None,
            console_url: "https://console.sim.invalid".into(),
            console_ttl: Duration::from_secs(60),
            host_vcpus: 32,
            host_memory_mib: 128 * 1024,
            // Roughly what a large real hypervisor builds per VM.
            max_vcpus: 256,
            max_memory_mib: 4 * 1024 * 1024,
            max_disk_gib: 64 * 1024,
            max_networks: 8,
            max_snapshots_per_vm: None,
        }
    }
}

impl SimSettings {
    /// Parses the `settings:` block.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the key.
    pub fn from_value(provider: &str, value: &serde_json::Value) -> Result<Self> {
        let s: SimSettings = if value.is_null() {
            SimSettings::default()
        } else {
            serde_json::from_value(value.clone()).map_err(|e| {
                Error::invalid(format!("providers.{provider}.settings"), e.to_string())
            })?
        };
        if !(0.0..=1.0).contains(&s.failure_rate) {
            return Err(Error::invalid(
                format!("providers.{provider}.settings.failure_rate"),
                "must be between 0 and 1",
            ));
        }
        for (key, value, max) in [
            (
                "max_vcpus",
                u64::from(s.max_vcpus),
                u64::from(hcp_core::MAX_VCPUS),
            ),
            ("max_memory_mib", s.max_memory_mib, hcp_core::MAX_MEMORY_MIB),
            ("max_disk_gib", s.max_disk_gib, hcp_core::MAX_DISK_GIB),
            (
                "max_networks",
                u64::from(s.max_networks),
                u64::try_from(hcp_core::MAX_NETWORKS).unwrap_or(u64::MAX),
            ),
        ] {
            if value == 0 || value > max {
                return Err(Error::invalid(
                    format!("providers.{provider}.settings.{key}"),
                    format!("is {value}; allowed: 1-{max}"),
                ));
            }
        }
        Ok(s)
    }

    /// Returns the latency of `op` on `host` (saturating: a sum past `Duration::MAX` waits
    /// forever rather than panicking).
    pub fn latency_of(&self, op: &str, host: Option<&str>) -> Duration {
        let base = self.op_latency.get(op).copied().unwrap_or(self.latency);
        base.saturating_add(
            host.and_then(|h| self.slow_hosts.get(h))
                .copied()
                .unwrap_or_default(),
        )
    }
}

mod per_op {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let text: BTreeMap<&String, String> = m
            .iter()
            .map(|(k, v)| (k, humantime::format_duration(*v).to_string()))
            .collect();
        text.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        let text = BTreeMap::<String, String>::deserialize(d)?;
        text.into_iter()
            .map(|(k, v)| {
                humantime::parse_duration(&v)
                    .map(|d| (k, d))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}
