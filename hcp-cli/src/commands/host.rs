//! `hcp host`: the placement targets (hosts, and clusters with their member hosts) with their
//! capacity and health, and the VMs found on them (the operator view).

use clap::Subcommand;
use hcp_core::{Host, InventoryVm};

use super::Session;
use crate::output;

/// `hcp host ...`
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List every host of every provider.
    List,
    /// List every VM the last inventory found on the hosts, HCP's and others; ADOPTABLE ones
    /// can be taken into a project with `hcp vm adopt`.
    Inventory,
}

impl HostCommand {
    /// Runs the command.
    ///
    /// # Errors
    /// When the backend cannot be reached (remote mode).
    pub async fn run(self, s: &Session) -> anyhow::Result<()> {
        match self {
            HostCommand::List => {
                let hosts = s.backend.hosts().await?;
                output::print(s.format, &hosts, |h| table(h))
            }
            HostCommand::Inventory => {
                let vms = s.backend.inventory_vms().await?;
                output::print(s.format, &vms, |v| inventory_table(v))
            }
        }
    }
}

fn inventory_table(vms: &[InventoryVm]) -> String {
    if vms.is_empty() {
        return "No VMs found on the hosts.".into();
    }
    let mut t = output::table(&[
        "PROVIDER",
        "HOST",
        "NATIVE ID",
        "NAME",
        "POWER",
        "VM ID",
        "PROJECT",
        "ADOPTABLE",
    ]);
    for v in vms {
        t.add_row(vec![
            v.provider.clone(),
            v.host.clone(),
            v.native_id.clone(),
            v.name.clone(),
            v.power.to_string(),
            v.vm_id.as_ref().map_or("-".into(), ToString::to_string),
            v.project.as_ref().map_or("-".into(), ToString::to_string),
            if v.adoptable { "yes" } else { "no" }.into(),
        ]);
    }
    output::trim(t)
}

fn table(hosts: &[Host]) -> String {
    if hosts.is_empty() {
        return "No hosts.".into();
    }
    let mut t = output::table(&[
        "NAME",
        "PROVIDER",
        "ZONE",
        "AVAILABLE",
        "VCPUS",
        "MEMORY",
        "VMS",
        "OBSERVED",
    ]);
    for h in hosts {
        let available = match (&h.available, &h.unavailable_reason) {
            (true, _) => "yes".to_string(),
            (false, Some(reason)) => format!("no: {reason}"),
            (false, None) => "no".to_string(),
        };
        // A cluster names its member hosts: HCP places on the cluster, the hypervisor on one host.
        let name = if h.members.is_empty() {
            h.name.clone()
        } else {
            let members: Vec<&str> = h.members.iter().map(|m| m.name.as_str()).collect();
            format!("{} (cluster: {})", h.name, members.join(", "))
        };
        t.add_row(vec![
            name,
            h.provider.clone(),
            h.zone.clone(),
            available,
            format!("{}/{}", h.vcpus_used, h.vcpus_total),
            format!("{}/{} MiB", h.memory_mib_used, h.memory_mib_total),
            h.vm_count.to_string(),
            output::opt_time(h.observed_at.as_ref()),
        ]);
    }
    output::trim(t)
}
