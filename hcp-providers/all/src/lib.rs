//! # hcp-providers
//!
//! Registers every provider kind compiled into this build on an [`EngineBuilder`], and loads
//! the configuration the way every HCP shell does (`hcp serve`, the `hcp` CLI, the Python
//! module), so they all accept the same hosts files.
//!
//! Kinds: `sim` always; `hyperv`, `proxmox` and `vsphere` with the default features of the same
//! names;
//! `libvirt` with the feature `libvirt` (it links libvirt).
//!
//! ```no_run
//! # async fn demo() -> hcp_core::Result<()> {
//! let config = hcp_providers::load_config(None, &|k| std::env::var(k).ok())?;
//! let engine = hcp_providers::register_all(hcp_core::Engine::builder(config)).build().await?;
//! # Ok(()) }
//! ```

use std::path::Path;

use hcp_core::{Config, EngineBuilder, Result};

/// Returns the provider kinds this build can run.
pub fn kinds() -> Vec<&'static str> {
    let mut kinds = vec![hcp_provider_sim::KIND];
    #[cfg(feature = "hyperv")]
    kinds.push("hyperv");
    #[cfg(feature = "proxmox")]
    kinds.push("proxmox");
    #[cfg(feature = "vsphere")]
    kinds.push(hcp_provider_vsphere::KIND);
    #[cfg(feature = "libvirt")]
    kinds.push("libvirt");
    kinds
}

/// Registers every provider kind this build knows on `builder`.
pub fn register_all(builder: EngineBuilder) -> EngineBuilder {
    let builder = hcp_provider_sim::register(builder);
    #[cfg(feature = "hyperv")]
    let builder = hcp_provider_hyperv::register(builder);
    #[cfg(feature = "proxmox")]
    let builder = hcp_provider_proxmox::register(builder);
    #[cfg(feature = "vsphere")]
    let builder = hcp_provider_vsphere::register(builder);
    #[cfg(feature = "libvirt")]
    let builder = hcp_provider_libvirt::register(builder);
    builder
}

/// Loads the hosts file at `path` — or, with none, the simulator's demo (whose Hyper-V legacy
/// routes act in project `demo`) — and applies the environment through `env`.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming the key and line of a bad hosts file, or the
/// environment variable that cannot be parsed.
pub fn load_config(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    let mut config = match path {
        Some(path) => Config::from_file(path)?,
        None => {
            let mut demo = hcp_provider_sim::demo_config();
            demo.engine.default_project = "demo".into();
            demo
        }
    };
    config.apply_env(env)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_demo_builds_and_unknown_kinds_name_the_known_ones() {
        let config = load_config(None, &|_| None).unwrap();
        assert_eq!(config.engine.default_project, "demo");
        let engine = register_all(hcp_core::Engine::builder(config))
            .without_background_reconcile()
            .build()
            .await
            .unwrap();
        assert!(engine.is_ready());
        let mut config = load_config(None, &|_| None).unwrap();
        config.providers[0].kind = "xen".into();
        let e = register_all(hcp_core::Engine::builder(config))
            .build()
            .await
            .unwrap_err();
        for kind in kinds() {
            assert!(e.to_string().contains(kind), "{e}");
        }
    }

    #[cfg(feature = "proxmox")]
    #[tokio::test]
    async fn the_proxmox_kind_is_registered_and_checks_its_settings() {
        assert!(kinds().contains(&"proxmox"));
        let mut config = load_config(None, &|_| None).unwrap();
        config.providers[0].kind = "proxmox".into();
        config.providers[0].settings = serde_json::json!({"url": "http://pve:8006"});
        let e = register_all(hcp_core::Engine::builder(config))
            .without_background_reconcile()
            .build()
            .await
            .unwrap_err();
        assert_eq!(e.field(), Some("providers.sim.settings.url"), "{e}");
    }

    #[cfg(feature = "vsphere")]
    #[tokio::test]
    async fn the_vsphere_kind_is_registered_and_checks_its_settings() {
        assert!(kinds().contains(&"vsphere"));
        let mut config = load_config(None, &|_| None).unwrap();
        config.providers[0].kind = "vsphere".into();
        config.providers[0].settings = serde_json::json!({"url": "http://vcenter/sdk"});
        let e = register_all(hcp_core::Engine::builder(config))
            .without_background_reconcile()
            .build()
            .await
            .unwrap_err();
        assert_eq!(e.field(), Some("providers.sim.settings.url"), "{e}");
    }

    #[test]
    fn environment_errors_name_the_variable() {
        let e = load_config(None, &|k| {
            (k == "INVENTORY_REFRESH_INTERVAL").then(|| "soon".into())
        })
        .unwrap_err();
        assert_eq!(e.field(), Some("INVENTORY_REFRESH_INTERVAL"));
    }
}
