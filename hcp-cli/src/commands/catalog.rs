//! `hcp catalog`: the images, flavors, networks and zones tenants choose from.

use clap::Args;
use hcp_core::Catalog;

use super::Session;
use crate::output;

/// `hcp catalog`
#[derive(Debug, Args)]
pub struct CatalogArgs {}

impl CatalogArgs {
    /// Runs the command.
    ///
    /// # Errors
    /// When the backend cannot be reached (remote mode).
    pub async fn run(self, s: &Session) -> anyhow::Result<()> {
        let catalog = s.backend.catalog().await?;
        output::print(s.format, &catalog, table)
    }
}

fn table(c: &Catalog) -> String {
    let mut images = output::table(&["IMAGE", "OS", "MIN DISK", "DESCRIPTION"]);
    for i in &c.images {
        images.add_row(vec![
            i.name.clone(),
            i.os.clone(),
            format!("{} GiB", i.min_disk_gib),
            i.description.clone(),
        ]);
    }
    let mut flavors = output::table(&["FLAVOR", "VCPUS", "MEMORY", "DISK"]);
    for f in &c.flavors {
        flavors.add_row(vec![
            f.name.clone(),
            f.vcpus.to_string(),
            format!("{} MiB", f.memory_mib),
            format!("{} GiB", f.disk_gib),
        ]);
    }
    let mut networks = output::table(&["NETWORK", "VLAN", "ZONES", "DESCRIPTION"]);
    for n in &c.networks {
        networks.add_row(vec![
            n.name.clone(),
            n.vlan.map_or_else(|| "-".into(), |v| v.to_string()),
            if n.zones.is_empty() {
                "all".into()
            } else {
                n.zones.join(", ")
            },
            n.description.clone(),
        ]);
    }
    let mut zones = output::table(&["ZONE", "DESCRIPTION"]);
    for z in &c.zones {
        zones.add_row(vec![z.name.clone(), z.description.clone()]);
    }
    [images, flavors, networks, zones]
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(output::trim)
        .collect::<Vec<_>>()
        .join("\n\n")
}
