//! `hcp capabilities`: what can be asked for in a zone, so a request can be checked before it
//! is sent.

use clap::Args;
use hcp_core::Capabilities;
use serde::Serialize;

use super::Session;
use crate::output;

/// `hcp capabilities`
#[derive(Debug, Args)]
pub struct CapabilitiesArgs {
    /// Only the hosts of this zone; every host when absent.
    #[arg(long)]
    zone: Option<String>,
}

/// The printed result.
#[derive(Debug, Serialize)]
struct ZoneCapabilities {
    /// The zone, or `null` for every zone.
    zone: Option<String>,
    /// What at least one host there offers.
    capabilities: Capabilities,
}

impl CapabilitiesArgs {
    /// Runs the command.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming `zone` when the zone is unknown.
    pub async fn run(self, s: &Session) -> anyhow::Result<()> {
        let capabilities = s.backend.capabilities(self.zone.as_deref()).await?;
        let result = ZoneCapabilities {
            zone: self.zone,
            capabilities,
        };
        output::print(s.format, &result, table)
    }
}

fn table(r: &ZoneCapabilities) -> String {
    let c = &r.capabilities;
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let limit = |l: Option<String>| l.unwrap_or_else(|| "no limit".into());
    let mut t = output::table(&["CAPABILITY", r.zone.as_deref().unwrap_or("ALL ZONES")]);
    for (name, value) in [
        ("cloud_init", yes_no(c.cloud_init)),
        ("snapshot", yes_no(c.snapshot)),
        ("live_migration", yes_no(c.live_migration)),
        ("cold_migration", yes_no(c.cold_migration)),
        ("console_vnc", yes_no(c.console_vnc)),
        ("console_spice", yes_no(c.console_spice)),
        ("console_rdp", yes_no(c.console_rdp)),
        ("console_webmks", yes_no(c.console_webmks)),
        ("console_web", yes_no(c.console_web)),
        ("gpu_passthrough", yes_no(c.gpu_passthrough)),
        ("tags", yes_no(c.tags)),
        ("resize", yes_no(c.resize)),
        ("max_vcpus", limit(c.max_vcpus.map(|v| v.to_string()))),
        (
            "max_memory_mib",
            limit(c.max_memory_mib.map(|v| v.to_string())),
        ),
        ("max_disk_gib", limit(c.max_disk_gib.map(|v| v.to_string()))),
        ("max_networks", limit(c.max_networks.map(|v| v.to_string()))),
    ] {
        t.add_row(vec![name.to_string(), value]);
    }
    output::trim(t)
}
