//! The Hyper-V service's routes (`/api/v1`), kept for its existing users and mapped onto the same
//! engine, acting in the configured default project (`HCP_DEFAULT_PROJECT`).

use hcp_core::store::{PageRequest, Scope};
use hcp_core::{Action, DesiredState, Error, NetworkAttachment, ProjectId, VmId, VmSpec};
use poem::Request;
use poem_openapi::OpenApi;
use poem_openapi::payload::Json;

use super::{AcceptedResponse, ApiTags, State, legacy_context};
use crate::dto::{HostDto, InventoryVmDto, LegacyCreateVmRequest, LegacyDeleteVmRequest};
use crate::error::ApiResult;
use crate::limits::StrictJson;

pub(crate) struct HyperVApi {
    pub(crate) state: State,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::HyperV")]
impl HyperVApi {
    /// List hosts
    #[oai(path = "/hosts", method = "get", operation_id = "legacyHosts")]
    async fn hosts(&self) -> Json<Vec<HostDto>> {
        Json(
            self.state
                .engine
                .hosts()
                .into_iter()
                .map(Into::into)
                .collect(),
        )
    }

    /// List every VM on every host (aggregated inventory)
    ///
    /// HCP's VMs as it knows them now (every project, with host and power state), then the VMs
    /// the last inventory found on the hosts without HCP's mark.
    #[oai(path = "/vms", method = "get", operation_id = "legacyVms")]
    async fn vms(&self) -> ApiResult<Json<Vec<InventoryVmDto>>> {
        let engine = &self.state.engine;
        let mut out = Vec::new();
        let mut page = PageRequest::all();
        loop {
            let p = engine.list_vms(&Scope::All, &page).await?;
            out.extend(
                p.items
                    .into_iter()
                    .filter(|v| v.desired != DesiredState::Deleted)
                    .map(|v| InventoryVmDto {
                        provider: v.binding.provider,
                        host: v.binding.host,
                        native_id: v.binding.native_id.unwrap_or_default(),
                        name: v.spec.name,
                        power: v.power.into(),
                        vm_id: Some(v.id.to_string()),
                        project: Some(v.project.to_string()),
                    }),
            );
            match p.next {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        out.extend(
            engine
                .inventory_vms()
                .into_iter()
                .filter(|v| v.vm_id.is_none())
                .map(Into::into),
        );
        Ok(Json(out))
    }

    /// Create a VM from a template
    ///
    /// On a given host or in a zone, with a flavor or explicit vCPUs and memory, attached to the
    /// catalog network of the given VLAN. Answers `202` with the job to follow.
    #[oai(path = "/vms/create", method = "post", operation_id = "legacyCreateVm")]
    async fn create(
        &self,
        req: &Request,
        #[oai(name = "Idempotency-Key")] idempotency_key: poem_openapi::param::Header<
            Option<String>,
        >,
        body: StrictJson<LegacyCreateVmRequest>,
    ) -> ApiResult<AcceptedResponse> {
        let project = self.state.engine.settings().default_project.clone();
        let ctx = legacy_context(&self.state.engine, req, &project, idempotency_key.0)?;
        let b = body.0;
        let catalog = self.state.engine.catalog();
        if catalog.image(&b.template).is_none() {
            let known: Vec<&str> = catalog.images.iter().map(|i| i.name.as_str()).collect();
            return Err(Error::invalid(
                "template",
                format!(
                    "unknown template `{}`; known: {}",
                    b.template,
                    known.join(", ")
                ),
            )
            .into());
        }
        let mut networks = Vec::new();
        if let Some(vlan) = b.vlan {
            let net = catalog
                .networks
                .iter()
                .find(|n| n.vlan == Some(vlan))
                .ok_or_else(|| {
                    let known: Vec<String> = catalog
                        .networks
                        .iter()
                        .filter_map(|n| n.vlan)
                        .map(|v| v.to_string())
                        .collect();
                    Error::invalid(
                        "vlan",
                        format!(
                            "no catalog network has VLAN {vlan}; known VLANs: {}",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    )
                })?;
            networks.push(NetworkAttachment {
                network: net.name.clone(),
            });
        }
        let disk_gib = b.disk_gb.or_else(|| {
            b.flavor
                .is_none()
                .then(|| catalog.image(&b.template).map(|i| i.min_disk_gib.max(1)))
                .flatten()
        });
        let spec = VmSpec {
            name: b.name,
            image: b.template,
            flavor: b.flavor,
            vcpus: b.vcpus,
            memory_mib: b.memory_mb,
            disk_gib,
            networks,
            zone: b.zone,
            ..Default::default()
        };
        let s = self
            .state
            .engine
            .submit(&ctx, Action::Create { spec, host: b.host })
            .await
            .map_err(rename_fields)?;
        Ok(AcceptedResponse::new(&ctx.project, &s))
    }

    /// Delete a VM by name or id
    #[oai(path = "/vms/delete", method = "post", operation_id = "legacyDeleteVm")]
    async fn delete(
        &self,
        req: &Request,
        #[oai(name = "Idempotency-Key")] idempotency_key: poem_openapi::param::Header<
            Option<String>,
        >,
        body: StrictJson<LegacyDeleteVmRequest>,
    ) -> ApiResult<AcceptedResponse> {
        let project = self.state.engine.settings().default_project.clone();
        let ctx = legacy_context(&self.state.engine, req, &project, idempotency_key.0)?;
        let b = body.0;
        let vm_id = match (b.vm_id, b.name) {
            (Some(id), _) => VmId::new(id),
            (None, Some(name)) => self
                .state
                .engine
                .store()
                .find_vm_by_name(&ProjectId::new(project.as_str()), &name)
                .await?
                .map(|v| v.id)
                .ok_or_else(|| Error::not_found("vm", &name).with_field("name"))?,
            (None, None) => {
                return Err(Error::invalid("name", "give the VM's `name` or its `vm_id`").into());
            }
        };
        let s = self.state.engine.delete_vm(&ctx, &vm_id, b.force).await?;
        Ok(AcceptedResponse::new(&ctx.project, &s))
    }
}

/// Names the Hyper-V request's fields in errors about the spec they became.
fn rename_fields(e: Error) -> Error {
    let renamed = match e.field() {
        Some("image") => "template",
        Some("memory_mib") => "memory_mb",
        Some("disk_gib") => "disk_gb",
        Some(f) if f.starts_with("networks") => "vlan",
        _ => return e,
    };
    let message = e.message().to_string();
    Error::new(e.kind(), message).with_field(renamed)
}
