//! The Hyper-V service's routes (`/api/v1`), kept for its existing users and mapped onto the same
//! engine, acting in the configured default project (`HCP_DEFAULT_PROJECT`).
//!
//! These routes act across projects (they list every project's VMs with their hosts), so they
//! need a role of their own, the Hyper-V role (`OIDC_HYPERV_ROLE`), which the tenant role may not
//! equal without an explicit opt-in (see [`crate::auth`]). Their lists answer a JSON array, as
//! the Hyper-V service did, one bounded page at a time: the `X-Next-Cursor` and `Link` headers
//! lead to the next page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hcp_core::store::{PageRequest, Scope};
use hcp_core::{Action, DesiredState, Error, NetworkAttachment, ProjectId, VmId, VmSpec};
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use serde::{Deserialize, Serialize};

use super::security::ApiAuth;
use super::{AcceptedResponse, ApiTags, State, legacy_context};
use crate::dto::{HostDto, InventoryVmDto, LegacyCreateVmRequest, LegacyDeleteVmRequest};
use crate::error::ApiResult;
use crate::limits::StrictJson;

/// The longest cursor accepted.
const MAX_CURSOR: usize = 2048;

pub(crate) struct HyperVApi {
    pub(crate) state: State,
}

/// One page of hosts.
#[derive(Debug, ApiResponse)]
pub(crate) enum HostsResponse {
    /// One page of hosts, ordered by provider and name. When more remain, `X-Next-Cursor` holds
    /// the value to pass as `cursor` for the next page and `Link` names that page's URL
    /// (`rel="next"`); both are absent on the last page.
    #[oai(status = 200)]
    Page(
        Json<Vec<HostDto>>,
        /// The `cursor` of the next page; absent on the last page.
        #[oai(header = "X-Next-Cursor")]
        Option<String>,
        /// The next page's URL (`<...>; rel="next"`); absent on the last page.
        #[oai(header = "Link")]
        Option<String>,
    ),
}

/// One page of the aggregated inventory.
#[derive(Debug, ApiResponse)]
pub(crate) enum VmsResponse {
    /// One page of VMs: HCP's VMs (every project) by id, then the VMs the last inventory found
    /// without HCP's mark, by provider, host and native id. When more remain, `X-Next-Cursor`
    /// holds the value to pass as `cursor` for the next page and `Link` names that page's URL
    /// (`rel="next"`); both are absent on the last page.
    #[oai(status = 200)]
    Page(
        Json<Vec<InventoryVmDto>>,
        /// The `cursor` of the next page; absent on the last page.
        #[oai(header = "X-Next-Cursor")]
        Option<String>,
        /// The next page's URL (`<...>; rel="next"`); absent on the last page.
        #[oai(header = "Link")]
        Option<String>,
    ),
}

/// One page of the operators' inventory.
#[derive(Debug, ApiResponse)]
pub(crate) enum InventoryResponse {
    /// One page of the VMs the last inventory found, HCP's and others, by provider, host and
    /// native id. When more remain, `X-Next-Cursor` holds the value to pass as `cursor` for the
    /// next page and `Link` names that page's URL (`rel="next"`); both are absent on the last
    /// page.
    #[oai(status = 200)]
    Page(
        Json<Vec<InventoryVmDto>>,
        /// The `cursor` of the next page; absent on the last page.
        #[oai(header = "X-Next-Cursor")]
        Option<String>,
        /// The next page's URL (`<...>; rel="next"`); absent on the last page.
        #[oai(header = "Link")]
        Option<String>,
    ),
}

/// Where a list continues. Encoded as base64url JSON, so it is opaque to clients and safe in a
/// URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Cursor {
    /// After this host.
    Host { provider: String, host: String },
    /// HCP's VMs, after the store cursor (from the start when absent).
    Vm { after: Option<String> },
    /// Unmanaged VMs, after this key (from the first when absent).
    Found {
        after: Option<(String, String, String)>,
    },
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(raw: Option<String>) -> Result<Option<Cursor>, Error> {
        let Some(raw) = raw.filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        if raw.len() > MAX_CURSOR {
            return Err(bad_cursor());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.as_bytes())
            .map_err(|_| bad_cursor())?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| bad_cursor())
    }
}

/// The error of a cursor that does not belong to the list it was sent to.
fn bad_cursor() -> Error {
    Error::invalid(
        "cursor",
        "is not a cursor of this list; pass the `X-Next-Cursor` value of the previous page, or \
         nothing for the first page",
    )
}

/// Builds the `X-Next-Cursor` and `Link` headers of a page.
fn next_headers(
    path: &str,
    limit: usize,
    next: Option<Cursor>,
) -> (Option<String>, Option<String>) {
    match next {
        Some(c) => {
            let c = c.encode();
            let link = format!("<{path}?limit={limit}&cursor={c}>; rel=\"next\"");
            (Some(c), Some(link))
        }
        None => (None, None),
    }
}

/// The size of a list page answered with `X-Next-Cursor`: the server's largest page by
/// default, and at most that.
pub(crate) fn header_page_limit(state: &State, asked: Option<u32>) -> usize {
    let max = state.pages.max.min(PageRequest::MAX_LIMIT);
    asked.map_or(max, |l| l as usize).clamp(1, max)
}

/// One page of hosts ordered by provider and name, after `cursor`; `path` is the list's URL
/// for the `Link` header. Shared by `/api/v1/hosts` and the operators' host list.
// The route handlers' own error type, returned straight from them.
#[allow(clippy::result_large_err)]
pub(crate) fn hosts_page(
    state: &State,
    path: &str,
    limit: Option<u32>,
    cursor: Option<String>,
) -> ApiResult<HostsResponse> {
    let limit = header_page_limit(state, limit);
    let after = match Cursor::decode(cursor)? {
        None => None,
        Some(Cursor::Host { provider, host }) => Some((provider, host)),
        Some(_) => return Err(bad_cursor().into()),
    };
    let mut hosts = state.engine.hosts();
    hosts.sort_by(|a, b| (&a.provider, &a.name).cmp(&(&b.provider, &b.name)));
    let start = match &after {
        Some((p, h)) => hosts.partition_point(|x| (&x.provider, &x.name) <= (p, h)),
        None => 0,
    };
    let rest: Vec<_> = hosts.into_iter().skip(start).collect();
    let more = rest.len() > limit;
    let page: Vec<HostDto> = rest.into_iter().take(limit).map(Into::into).collect();
    let next = match page.last() {
        Some(last) if more => Some(Cursor::Host {
            provider: last.provider.clone(),
            host: last.name.clone(),
        }),
        _ => None,
    };
    let (c, link) = next_headers(path, limit, next);
    Ok(HostsResponse::Page(Json(page), c, link))
}

/// Appends to `out` up to `room` of the inventory's VMs `found`, ordered by provider, host and
/// native id, after the key `after`; returns the cursor of what remains, if anything does.
fn found_page(
    mut found: Vec<hcp_core::InventoryVm>,
    after: Option<(String, String, String)>,
    room: usize,
    out: &mut Vec<InventoryVmDto>,
) -> Option<Cursor> {
    let key = |v: &hcp_core::InventoryVm| (v.provider.clone(), v.host.clone(), v.native_id.clone());
    found.sort_by_key(key);
    let start = match &after {
        Some(k) => found.partition_point(|v| key(v) <= *k),
        None => 0,
    };
    let rest = &found[start..];
    let taken = &rest[..rest.len().min(room)];
    out.extend(taken.iter().cloned().map(Into::into));
    (rest.len() > taken.len()).then(|| Cursor::Found {
        after: taken.last().map(key).or(after),
    })
}

/// One page of every VM the last inventory found on the hosts, HCP's and others, ordered by
/// provider, host and native id (the operators' inventory list); `path` as for [`hosts_page`].
// The route handlers' own error type, returned straight from them.
#[allow(clippy::result_large_err)]
pub(crate) fn inventory_page(
    state: &State,
    path: &str,
    limit: Option<u32>,
    cursor: Option<String>,
) -> ApiResult<InventoryResponse> {
    let limit = header_page_limit(state, limit);
    let after = match Cursor::decode(cursor)? {
        None => None,
        Some(Cursor::Found { after }) => after,
        Some(_) => return Err(bad_cursor().into()),
    };
    let mut out = Vec::new();
    let next = found_page(state.engine.inventory_vms(), after, limit, &mut out);
    let (c, link) = next_headers(path, limit, next);
    Ok(InventoryResponse::Page(Json(out), c, link))
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::HyperV")]
impl HyperVApi {
    /// List hosts
    ///
    /// Every host of every provider with its capacity, one page at a time (see the
    /// `X-Next-Cursor` header). Needs the Hyper-V role.
    #[oai(path = "/hosts", method = "get", operation_id = "legacyHosts")]
    async fn hosts(
        &self,
        _auth: ApiAuth,
        /// Page size (default and maximum: the server's largest page, 1000 unless
        /// `HCP_PAGE_MAX` says otherwise; larger values are clamped).
        limit: Query<Option<u32>>,
        /// The `X-Next-Cursor` value of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<HostsResponse> {
        hosts_page(&self.state, "/api/v1/hosts", limit.0, cursor.0)
    }

    /// List every VM on every host (aggregated inventory)
    ///
    /// HCP's VMs as it knows them now (every project, with host and power state), then the VMs
    /// the last inventory found on the hosts without HCP's mark, one page at a time (see the
    /// `X-Next-Cursor` header). Needs the Hyper-V role.
    #[oai(path = "/vms", method = "get", operation_id = "legacyVms")]
    async fn vms(
        &self,
        _auth: ApiAuth,
        /// Page size (default and maximum: the server's largest page, 1000 unless
        /// `HCP_PAGE_MAX` says otherwise; larger values are clamped).
        limit: Query<Option<u32>>,
        /// The `X-Next-Cursor` value of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<VmsResponse> {
        let engine = &self.state.engine;
        let limit = self.limit(limit.0);
        let mut out: Vec<InventoryVmDto> = Vec::new();
        let (managed_more, found_after) = match Cursor::decode(cursor.0)? {
            None => (self.managed_page(limit, None, &mut out).await?, None),
            Some(Cursor::Vm { after }) => (self.managed_page(limit, after, &mut out).await?, None),
            Some(Cursor::Found { after }) => (None, after),
            Some(Cursor::Host { .. }) => return Err(bad_cursor().into()),
        };
        let next = match managed_more {
            // HCP's VMs filled the page: continue with them.
            Some(store_cursor) => Some(Cursor::Vm {
                after: Some(store_cursor),
            }),
            None => {
                let found: Vec<_> = engine
                    .inventory_vms()
                    .into_iter()
                    .filter(|v| v.vm_id.is_none())
                    .collect();
                let room = limit.saturating_sub(out.len());
                found_page(found, found_after, room, &mut out)
            }
        };
        let (c, link) = next_headers("/api/v1/vms", limit, next);
        Ok(VmsResponse::Page(Json(out), c, link))
    }

    /// Create a VM from a template
    ///
    /// On a given host or in a zone, with a flavor or explicit vCPUs and memory, attached to the
    /// catalog network of the given VLAN. Answers `202` with the job to follow.
    #[oai(path = "/vms/create", method = "post", operation_id = "legacyCreateVm")]
    async fn create(
        &self,
        _auth: ApiAuth,
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
        hcp_core::validate_catalog_name("template", &b.template)?;
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
        _auth: ApiAuth,
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
            (None, Some(name)) => {
                hcp_core::validate_dns_label("name", &name)?;
                self.state
                    .engine
                    .store()
                    .find_vm_by_name(&ProjectId::new(project.as_str()), &name)
                    .await?
                    .map(|v| v.id)
                    .ok_or_else(|| Error::not_found("vm", &name).with_field("name"))?
            }
            (None, None) => {
                return Err(Error::invalid("name", "give the VM's `name` or its `vm_id`").into());
            }
        };
        let s = self.state.engine.delete_vm(&ctx, &vm_id, b.force).await?;
        Ok(AcceptedResponse::new(&ctx.project, &s))
    }
}

impl HyperVApi {
    /// The page size: the server's largest page unless the client asks for fewer (the Hyper-V
    /// service answered whole lists, so its clients get as much as one bounded page holds).
    fn limit(&self, asked: Option<u32>) -> usize {
        header_page_limit(&self.state, asked)
    }

    /// Fills `out` with HCP's VMs (every project, deleted ones left out) after the store cursor
    /// `after`, up to `limit`. Returns the store cursor to continue from when the page is full
    /// and more of HCP's VMs may follow, or `None` when they ran out (the unmanaged VMs come
    /// next).
    async fn managed_page(
        &self,
        limit: usize,
        mut after: Option<String>,
        out: &mut Vec<InventoryVmDto>,
    ) -> hcp_core::Result<Option<String>> {
        while out.len() < limit {
            let page = PageRequest {
                limit: limit - out.len(),
                cursor: after.clone(),
            };
            let p = self.state.engine.list_vms(&Scope::All, &page).await?;
            out.extend(
                p.items
                    .into_iter()
                    .filter(|v| v.desired != DesiredState::Deleted)
                    .map(|v| {
                        // On a cluster target the VM runs on the member host its cluster chose.
                        let (host, cluster) = match v.binding.member_host {
                            Some(member) => (member, Some(v.binding.host.to_string())),
                            None => (v.binding.host.to_string(), None),
                        };
                        InventoryVmDto {
                            provider: v.binding.provider.to_string(),
                            host,
                            cluster,
                            native_id: v.binding.native_id.unwrap_or_default(),
                            name: v.spec.name.clone(),
                            power: v.power.into(),
                            vm_id: Some(v.id.to_string()),
                            project: Some(v.project.to_string()),
                            adoptable: false,
                        }
                    }),
            );
            match p.next {
                Some(c) => after = Some(c),
                None => return Ok(None),
            }
        }
        Ok(after)
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
