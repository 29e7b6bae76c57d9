//! Drift classification: compares desired state with what the hosts report. Pure functions; the
//! engine runs them on an interval and acts on the plan.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::{DesiredState, HcpMark, HostInventoryReply, NativeVm, PowerState, Vm, VmId};

/// One difference between desired and observed state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "drift", rename_all = "snake_case")]
pub enum Drift {
    /// A VM HCP expects is not on its host, and the host answered.
    Missing {
        /// The VM.
        vm_id: VmId,
        /// Its provider.
        provider: String,
        /// The host it should be on.
        host: String,
    },
    /// A VM on a host carries no HCP mark (created outside HCP).
    Unmanaged {
        /// The provider.
        provider: String,
        /// The host.
        host: String,
        /// The hypervisor's id.
        native_id: String,
        /// The hypervisor's name for it.
        name: String,
    },
    /// A VM's power state differs from the desired one.
    PowerMismatch {
        /// The VM.
        vm_id: VmId,
        /// The wanted power state.
        desired: PowerState,
        /// The observed power state.
        observed: PowerState,
    },
    /// A VM was found on another host than recorded (moved by the cluster).
    Moved {
        /// The VM.
        vm_id: VmId,
        /// The recorded host.
        from_host: String,
        /// The host it was found on.
        to_host: String,
    },
}

/// One host's inventory as seen by a refresh: `None` when the host did not answer.
#[derive(Debug, Clone, Copy)]
pub struct ObservedHost<'a> {
    /// The provider.
    pub provider: &'a str,
    /// The host.
    pub host: &'a str,
    /// Its inventory, or `None` when unreachable.
    pub inventory: Option<&'a HostInventoryReply>,
}

/// A VM found on a host carrying a mark for a VM the store does not know: rebuild it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    /// The provider.
    pub provider: String,
    /// The host.
    pub host: String,
    /// The VM as the host reports it.
    pub native: NativeVm,
    /// Its mark.
    pub mark: HcpMark,
}

/// What a known VM looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmObservation {
    /// The VM.
    pub vm_id: VmId,
    /// Its observed power state (`Unknown` when its host did not answer).
    pub power: PowerState,
    /// Whether it was found.
    pub present: bool,
    /// Where it was found, when it moved.
    pub moved_to: Option<(String, String)>,
    /// The member host it now runs on, when that changed (VMs of a cluster target, which the
    /// hypervisor may move between its hosts); `Some(None)` when it left a cluster.
    pub member_host: Option<Option<String>>,
}

/// The outcome of comparing desired and observed state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    /// Differences to report (and, per policy, repair).
    pub drift: Vec<Drift>,
    /// VMs to rebuild from their marks.
    pub adopt: Vec<Adoption>,
    /// New observations of known VMs, only where they changed.
    pub observations: Vec<VmObservation>,
}

/// Compares `known` VMs with the `observed` hosts.
///
/// # Behavior
/// VMs in `busy` (a job acts on them) and VMs still `PENDING` or `DELETED` are not judged: their
/// state is in flux. A host that did not answer makes its VMs' power `UNKNOWN`, never `Missing`.
pub fn classify(
    known: &[Vm],
    busy: &HashSet<VmId>,
    observed: &[ObservedHost<'_>],
) -> ReconcilePlan {
    let mut plan = ReconcilePlan::default();
    let mut found: HashMap<&VmId, (&ObservedHost<'_>, &NativeVm)> = HashMap::new();
    let known_ids: HashSet<&VmId> = known.iter().map(|v| &v.id).collect();
    let mut reachable: HashSet<(&str, &str)> = HashSet::new();
    for host in observed {
        let Some(inv) = host.inventory else { continue };
        reachable.insert((host.provider, host.host));
        for native in &inv.vms {
            match &native.mark {
                Some(mark) => {
                    found.insert(&mark.vm_id, (host, native));
                    if !known_ids.contains(&mark.vm_id) {
                        plan.adopt.push(Adoption {
                            provider: host.provider.to_string(),
                            host: host.host.to_string(),
                            native: native.clone(),
                            mark: mark.clone(),
                        });
                    }
                }
                None => plan.drift.push(Drift::Unmanaged {
                    provider: host.provider.to_string(),
                    host: host.host.to_string(),
                    native_id: native.native_id.clone(),
                    name: native.name.clone(),
                }),
            }
        }
    }
    for vm in known {
        if busy.contains(&vm.id)
            || matches!(vm.desired, DesiredState::Pending | DesiredState::Deleted)
        {
            continue;
        }
        let obs = match found.get(&vm.id) {
            Some((host, native)) => {
                let moved = (*host.provider != *vm.binding.provider
                    || *host.host != *vm.binding.host)
                    .then(|| (host.provider.to_string(), host.host.to_string()));
                if let Some((_, to)) = &moved {
                    plan.drift.push(Drift::Moved {
                        vm_id: vm.id.clone(),
                        from_host: vm.binding.host.to_string(),
                        to_host: to.clone(),
                    });
                }
                if vm.desired == DesiredState::Active
                    && matches!(vm.desired_power, PowerState::Running | PowerState::Stopped)
                    && native.power != vm.desired_power
                {
                    plan.drift.push(Drift::PowerMismatch {
                        vm_id: vm.id.clone(),
                        desired: vm.desired_power,
                        observed: native.power,
                    });
                }
                VmObservation {
                    vm_id: vm.id.clone(),
                    power: native.power,
                    present: true,
                    moved_to: moved,
                    member_host: (native.host != vm.binding.member_host)
                        .then(|| native.host.clone()),
                }
            }
            None if reachable
                .contains(&(vm.binding.provider.as_ref(), vm.binding.host.as_ref())) =>
            {
                plan.drift.push(Drift::Missing {
                    vm_id: vm.id.clone(),
                    provider: vm.binding.provider.to_string(),
                    host: vm.binding.host.to_string(),
                });
                VmObservation {
                    vm_id: vm.id.clone(),
                    power: PowerState::Unknown,
                    present: false,
                    moved_to: None,
                    member_host: None,
                }
            }
            None => VmObservation {
                vm_id: vm.id.clone(),
                power: PowerState::Unknown,
                present: vm.present,
                moved_to: None,
                member_host: None,
            },
        };
        if obs.power != vm.power
            || obs.present != vm.present
            || obs.moved_to.is_some()
            || obs.member_host.is_some()
        {
            plan.observations.push(obs);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostInfo, ProviderBinding, Resources, VmSpec};
    use chrono::Utc;

    fn vm(id: &str, host: &str, desired: DesiredState, power: PowerState) -> Vm {
        Vm {
            id: id.into(),
            project: "demo".into(),
            spec: std::sync::Arc::new(VmSpec::new(id, "img", "small")),
            resources: Resources::default(),
            zone: "z".into(),
            desired,
            desired_power: PowerState::Running,
            power,
            present: true,
            binding: ProviderBinding {
                provider: "p".into(),
                host: host.into(),
                native_id: Some(format!("n-{id}")),
                member_host: None,
            },
            last_error: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            generation: 1,
        }
    }

    fn native(id: &str, power: PowerState, marked: bool) -> NativeVm {
        let mark = marked.then(|| HcpMark {
            vm_id: id.into(),
            project: "demo".into(),
            image: None,
            flavor: None,
            zone: None,
            created_at: None,
            user_data: false,
            server_group: None,
        });
        NativeVm::new(format!("n-{id}"), id, power, Resources::default(), mark)
    }

    fn inv(host: &str, vms: Vec<NativeVm>) -> HostInventoryReply {
        HostInventoryReply::new(HostInfo::new(host, "z", 8, 8192, Default::default()), vms)
    }

    #[test]
    fn classifies_every_kind_of_drift() {
        let known = vec![
            vm("ok", "h1", DesiredState::Active, PowerState::Running),
            vm("gone", "h1", DesiredState::Active, PowerState::Running),
            vm("off", "h1", DesiredState::Active, PowerState::Running),
            vm("moved", "h1", DesiredState::Active, PowerState::Running),
            vm("far", "h2", DesiredState::Active, PowerState::Running),
            vm("creating", "h1", DesiredState::Pending, PowerState::Unknown),
            vm("busy", "h1", DesiredState::Active, PowerState::Running),
        ];
        let h1 = inv(
            "h1",
            vec![
                native("ok", PowerState::Running, true),
                native("off", PowerState::Stopped, true),
                native("stranger", PowerState::Running, false),
                native("lost-and-found", PowerState::Running, true),
            ],
        );
        let h3 = inv("h3", vec![native("moved", PowerState::Running, true)]);
        let observed = [
            ObservedHost {
                provider: "p",
                host: "h1",
                inventory: Some(&h1),
            },
            ObservedHost {
                provider: "p",
                host: "h2",
                inventory: None,
            },
            ObservedHost {
                provider: "p",
                host: "h3",
                inventory: Some(&h3),
            },
        ];
        let busy: HashSet<VmId> = ["busy".into()].into_iter().collect();
        let plan = classify(&known, &busy, &observed);
        assert!(plan.drift.contains(&Drift::Missing {
            vm_id: "gone".into(),
            provider: "p".into(),
            host: "h1".into()
        }));
        assert!(plan.drift.contains(&Drift::PowerMismatch {
            vm_id: "off".into(),
            desired: PowerState::Running,
            observed: PowerState::Stopped
        }));
        assert!(plan.drift.contains(&Drift::Unmanaged {
            provider: "p".into(),
            host: "h1".into(),
            native_id: "n-stranger".into(),
            name: "stranger".into()
        }));
        assert!(plan.drift.contains(&Drift::Moved {
            vm_id: "moved".into(),
            from_host: "h1".into(),
            to_host: "h3".into()
        }));
        // An unreachable host never makes its VMs missing; pending and busy VMs are not judged.
        assert!(
            !plan
                .drift
                .iter()
                .any(|d| matches!(d, Drift::Missing { vm_id, .. } if vm_id.as_str() != "gone"))
        );
        assert_eq!(plan.drift.len(), 4, "{:?}", plan.drift);
        assert_eq!(plan.adopt.len(), 1);
        assert_eq!(plan.adopt[0].mark.vm_id.as_str(), "lost-and-found");
        let far = plan
            .observations
            .iter()
            .find(|o| o.vm_id.as_str() == "far")
            .unwrap();
        assert_eq!(far.power, PowerState::Unknown);
        assert!(far.present);
        assert!(
            !plan.observations.iter().any(|o| o.vm_id.as_str() == "ok"),
            "unchanged VMs are not rewritten"
        );
    }
}
