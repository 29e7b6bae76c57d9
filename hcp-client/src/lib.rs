//! # hcp-client
//!
//! A typed async client for HCP's HTTP API (`hcp serve`). Every route of the tenant, ops and
//! common APIs and the Hyper-V service's routes has a method; answers decode into the same
//! `hcp_core` types an embedded engine returns, and failures decode from the problem body back
//! into [`hcp_core::Error`] (kind, code, field, message), so a shell reports remote errors exactly
//! like embedded ones.
//!
//! [`Hcp`] is the one interface shells program against: [`Client`] implements it over HTTP and
//! [`EngineClient`] over an engine in the same process, with the same answers and refusals.
//!
//! ```no_run
//! # async fn demo() -> hcp_core::Result<()> {
//! use futures::StreamExt;
//! use hcp_client::Client;
//! use hcp_core::{JobUpdate, VmSpec};
//!
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let accepted = client.create_vm("demo", &VmSpec::new("web-1", "ubuntu-24.04", "small"), Some("key-1")).await?;
//! let mut updates = client.watch_job(&accepted.job_id).await?;
//! while let Some(update) = updates.next().await {
//!     if let JobUpdate::Log(line) = update? {
//!         println!("{}", line.message);
//!     }
//! }
//! # Ok(()) }
//! ```

mod api;
mod sse;

pub use api::{EngineClient, Hcp, TenantUpdate, TenantUpdates};

use std::fmt;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use hcp_core::job::TenantJob;
use hcp_core::store::{JobFilter, Page, PageRequest, VmFilter, VmSort};
use hcp_core::{
    Capabilities, Catalog, Console, ConsoleKind, Error, ErrorKind, Event, Flavor, GroupPolicy,
    GroupStrength, Host, Image, InventoryVm, Job, JobAction, JobId, JobUpdate, Network, Operation,
    Principal, ProviderCapabilities, ProviderStatus, RefreshReport, ServerGroup, ServerGroupId,
    TenantVm, Vm, VmId, VmSpec, Zone,
};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The tenant API's path prefix.
pub const TENANT_PREFIX: &str = "/api/hcp/tenant/v1";
/// The ops API's path prefix.
pub const OPS_PREFIX: &str = "/api/hcp/ops/v1";
/// The common API's path prefix.
pub const COMMON_PREFIX: &str = "/api/hcp/common/v1";
/// The Hyper-V service's path prefix.
pub const HYPERV_PREFIX: &str = "/api/v1";
/// The header of a Hyper-V list page that holds the next page's cursor.
const LEGACY_NEXT_CURSOR: &str = "x-next-cursor";

/// The response header with which the service marks a replayed idempotent request.
pub const REPLAYED_HEADER: &str = "Idempotency-Replayed";

/// The answer to an accepted change: the VM and the job that does the work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The resource the job acts on (`projects/{project}/vms/{vmId}`).
    pub resource_id: String,
    /// The VM.
    pub vm_id: VmId,
    /// The job.
    pub job_id: JobId,
    /// True when the service replayed an earlier request with the same idempotency key (its
    /// `Idempotency-Replayed: true` header): no new job was started.
    #[serde(default)]
    pub replayed: bool,
    /// HCP's id of the snapshot a snapshot route acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// A revert's answer: true when the snapshot holds memory state (the VM comes back running
    /// where it was), false when it holds disks only (the VM ends stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_state_kept: Option<bool>,
}

impl From<Accepted> for hcp_core::Submitted {
    fn from(a: Accepted) -> Self {
        hcp_core::Submitted {
            vm_id: a.vm_id,
            job_id: a.job_id,
            replayed: a.replayed,
        }
    }
}

/// What one zone offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneCapabilities {
    /// The zone.
    pub zone: String,
    /// What any of its hosts offers.
    pub capabilities: Capabilities,
}

/// A request to the Hyper-V service's `POST /api/v1/vms/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyCreateVm {
    /// The VM name.
    pub name: String,
    /// The template (catalog image).
    pub template: String,
    /// Pins the VM to this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The placement zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// A catalog flavor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// vCPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Memory in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Disk in GiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_gb: Option<u64>,
    /// The VLAN of the catalog network to attach to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// A client of one HCP service. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The default headers may hold a bearer token.
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Client`].
#[derive(Default)]
pub struct ClientBuilder {
    base: String,
    token: Option<String>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    ca_file: Option<std::path::PathBuf>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn token(mut self, token: Option<impl Into<String>>) -> Self {
        self.token = token.map(Into::into).filter(|t: &String| !t.is_empty());
        self
    }

    /// Sets the timeout of one request (streams are not cut by it). Default 60 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the connect timeout. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Trusts the CA certificates of a PEM file (one or more certificates) for an `https://`
    /// service, in addition to the built-in roots. The file is read by [`ClientBuilder::build`].
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `url` for a URL that is not `http(s)://host[:port]`,
    /// `token` for a token that cannot be sent in a header, or `ca_file` for a CA file that
    /// cannot be read or holds no PEM certificate.
    pub fn build(self) -> hcp_core::Result<Client> {
        let url = url::Url::parse(&self.base).map_err(|e| {
            Error::invalid(
                "url",
                format!(
                    "`{}` is not a URL ({e}); use e.g. http://127.0.0.1:8080",
                    self.base
                ),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Error::invalid(
                "url",
                format!(
                    "`{}` must be an http:// or https:// URL with a host",
                    self.base
                ),
            ));
        }
        let mut headers = HeaderMap::new();
        if let Some(t) = &self.token {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                Error::invalid(
                    "token",
                    "contains characters that cannot be sent in a header",
                )
            })?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let mut http = reqwest::Client::builder();
        if let Some(path) = &self.ca_file {
            for cert in read_ca_file(path)? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .default_headers(headers)
            .connect_timeout(self.connect_timeout.unwrap_or(Duration::from_secs(10)))
            .read_timeout(self.timeout.unwrap_or(Duration::from_secs(60)))
            .user_agent(concat!("hcp-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: self.base.trim_end_matches('/').to_string(),
        })
    }
}

/// Reads the certificates of a PEM file.
fn read_ca_file(path: &std::path::Path) -> hcp_core::Result<Vec<reqwest::Certificate>> {
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|e| Error::invalid("ca_file", format!("cannot read `{shown}`: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        Error::invalid(
            "ca_file",
            format!("`{shown}` is not a PEM certificate bundle: {e}"),
        )
    })?;
    if certs.is_empty() {
        return Err(Error::invalid(
            "ca_file",
            format!("`{shown}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(certs)
}

/// The bytes escaped in one path segment: everything but RFC 3986's unreserved characters, so a
/// `/`, `?`, `#`, `%` or `:` in an id can never change which route a request reaches.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(segment: &str) -> String {
    // `.` and `..` as a whole segment would be resolved away by URL parsing: escape them too.
    if segment == "." || segment == ".." {
        return "%2E".repeat(segment.len());
    }
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

impl Client {
    /// Creates a client of the service at `base_url` (`http://127.0.0.1:8080`).
    ///
    /// # Errors
    /// See [`ClientBuilder::build`].
    pub fn new(base_url: &str) -> hcp_core::Result<Client> {
        Client::builder(base_url).build()
    }

    /// Starts building a client of the service at `base_url`.
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base: base_url.to_string(),
            ..Default::default()
        }
    }

    /// Returns the base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    async fn send(&self, rb: RequestBuilder) -> hcp_core::Result<reqwest::Response> {
        let resp = rb
            .send()
            .await
            .map_err(|e| transport_error(&self.base, e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(decode_error(resp).await)
        }
    }

    async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> hcp_core::Result<T> {
        let resp = self.send(rb).await?;
        self.decode(resp).await
    }

    async fn decode<T: DeserializeOwned>(&self, resp: reqwest::Response) -> hcp_core::Result<T> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport_error(&self.base, e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot decode the service's answer: {e}"),
            )
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> hcp_core::Result<T> {
        self.json(self.request(Method::GET, path).query(query))
            .await
    }

    async fn accepted(
        &self,
        rb: RequestBuilder,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let rb = match idempotency_key {
            Some(k) => rb.header("Idempotency-Key", k),
            None => rb,
        };
        let resp = self.send(rb).await?;
        let replayed = resp
            .headers()
            .get(REPLAYED_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let mut accepted: Accepted = self.decode(resp).await?;
        accepted.replayed = replayed;
        Ok(accepted)
    }

    fn vm_path(project: &str, vm_id: &VmId) -> String {
        format!(
            "{TENANT_PREFIX}/projects/{}/vms/{}",
            enc(project),
            enc(vm_id.as_str())
        )
    }

    // ----------------------------------------------------------------------------------------
    // Tenant
    // ----------------------------------------------------------------------------------------

    /// Creates a VM (`POST /projects/{project}/vms`) and returns at once with its job.
    ///
    /// # Errors
    /// The service's error: `InvalidSpec` naming the field, `FeatureNotSupported`, `Conflict`
    /// (`IDEMPOTENCY_KEY_REUSED`, a name taken), `QuotaExceeded`, ...
    pub async fn create_vm(
        &self,
        project: &str,
        spec: &VmSpec,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let path = format!("{TENANT_PREFIX}/projects/{}/vms", enc(project));
        self.accepted(
            self.request(Method::POST, &path).json(spec),
            idempotency_key,
        )
        .await
    }

    /// Lists one page of a project's VMs.
    ///
    /// # Errors
    /// The service's error.
    pub async fn list_vms(
        &self,
        project: &str,
        page: &PageRequest,
    ) -> hcp_core::Result<Page<TenantVm>> {
        let path = format!("{TENANT_PREFIX}/projects/{}/vms", enc(project));
        self.get(&path, &page_query(page)).await
    }

    /// Lists one page of a project's VMs that match `filter`, in the order `sort` gives (see
    /// `hcp_core::store::Store::list_vms_matching`). Pass the page's `next` as the cursor of
    /// the next call with the same filter and sort.
    ///
    /// # Errors
    /// The service's error: `InvalidSpec` naming the parameter for a bad filter or cursor.
    pub async fn list_vms_matching(
        &self,
        project: &str,
        filter: &VmFilter,
        sort: VmSort,
        page: &PageRequest,
    ) -> hcp_core::Result<Page<TenantVm>> {
        let path = format!("{TENANT_PREFIX}/projects/{}/vms", enc(project));
        let mut q = page_query(page);
        q.extend(vm_query(filter, sort));
        self.get(&path, &q).await
    }

    /// Lists all of a project's VMs that match `filter`, in the order `sort` gives, following
    /// the pages.
    ///
    /// # Errors
    /// The service's error.
    pub async fn list_all_vms_matching(
        &self,
        project: &str,
        filter: &VmFilter,
        sort: VmSort,
    ) -> hcp_core::Result<Vec<TenantVm>> {
        let mut page = PageRequest::all();
        let mut out = Vec::new();
        loop {
            let p = self.list_vms_matching(project, filter, sort, &page).await?;
            out.extend(p.items);
            match p.next {
                Some(c) => page.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Lists all of a project's VMs, following the pages.
    ///
    /// # Errors
    /// The service's error.
    pub async fn list_all_vms(&self, project: &str) -> hcp_core::Result<Vec<TenantVm>> {
        let mut page = PageRequest::all();
        let mut out = Vec::new();
        loop {
            let p = self.list_vms(project, &page).await?;
            out.extend(p.items);
            match p.next {
                Some(c) => page.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Returns one VM of a project.
    ///
    /// # Errors
    /// `NotFound` for a VM of another project or none.
    pub async fn get_vm(&self, project: &str, vm_id: &VmId) -> hcp_core::Result<TenantVm> {
        self.get(&Client::vm_path(project, vm_id), &[]).await
    }

    /// Returns one VM of a project with its `ETag` (its version, for
    /// [`Client::update_vm_tags`]).
    ///
    /// # Errors
    /// `NotFound` for a VM of another project or none.
    pub async fn get_vm_versioned(
        &self,
        project: &str,
        vm_id: &VmId,
    ) -> hcp_core::Result<(TenantVm, String)> {
        let resp = self
            .send(self.request(Method::GET, &Client::vm_path(project, vm_id)))
            .await?;
        let etag = etag_of(&resp)?;
        Ok((self.decode(resp).await?, etag))
    }

    /// Changes a VM's tags (`PATCH .../vms/{vmId}`, a JSON Merge Patch): `Some(value)` sets a
    /// tag, `None` removes it, tags not named stay. `if_match` is the `ETag` of the VM's latest
    /// read; returns the changed VM and its new `ETag`.
    ///
    /// # Errors
    /// `Conflict` with code `PRECONDITION_FAILED` when the VM changed since `if_match` (read it
    /// again and retry); `InvalidSpec` naming `tags.<key>` for an invalid tag; `NotFound`.
    pub async fn update_vm_tags(
        &self,
        project: &str,
        vm_id: &VmId,
        patch: &std::collections::BTreeMap<String, Option<String>>,
        if_match: &str,
    ) -> hcp_core::Result<(TenantVm, String)> {
        let body = serde_json::json!({ "tags": patch });
        let resp = self
            .send(
                self.request(Method::PATCH, &Client::vm_path(project, vm_id))
                    .header("If-Match", if_match)
                    .json(&body),
            )
            .await?;
        let etag = etag_of(&resp)?;
        Ok((self.decode(resp).await?, etag))
    }

    /// Finds a VM by id among the caller's projects (`GET .../vms/{vmId}`); its `project` names
    /// the project, for the project-scoped calls that follow.
    ///
    /// # Errors
    /// `NotFound` for a VM of no project the caller is a member of.
    pub async fn find_vm(&self, vm_id: &VmId) -> hcp_core::Result<TenantVm> {
        self.get(&format!("{TENANT_PREFIX}/vms/{}", enc(vm_id.as_str())), &[])
            .await
    }

    /// Deletes a VM; a running VM is shut down first, `force` skipping the graceful part.
    ///
    /// # Errors
    /// The service's error.
    pub async fn delete_vm(
        &self,
        project: &str,
        vm_id: &VmId,
        force: bool,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let rb = self
            .request(Method::DELETE, &Client::vm_path(project, vm_id))
            .query(&[("force", force.to_string())]);
        self.accepted(rb, idempotency_key).await
    }

    /// Powers a VM on (`POST .../vms/{vmId}:start`).
    ///
    /// # Errors
    /// The service's error.
    pub async fn start_vm(
        &self,
        project: &str,
        vm_id: &VmId,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let path = format!("{}:start", Client::vm_path(project, vm_id));
        self.accepted(self.request(Method::POST, &path), idempotency_key)
            .await
    }

    /// Powers a VM off (`POST .../vms/{vmId}:stop`); `force` skips the graceful shutdown.
    ///
    /// # Errors
    /// The service's error.
    pub async fn stop_vm(
        &self,
        project: &str,
        vm_id: &VmId,
        force: bool,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let path = format!("{}:stop", Client::vm_path(project, vm_id));
        let rb = self
            .request(Method::POST, &path)
            .query(&[("force", force.to_string())]);
        self.accepted(rb, idempotency_key).await
    }

    /// Restarts a VM (`POST .../vms/{vmId}:reboot`); `hard` resets it.
    ///
    /// # Errors
    /// The service's error.
    pub async fn reboot_vm(
        &self,
        project: &str,
        vm_id: &VmId,
        hard: bool,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let path = format!("{}:reboot", Client::vm_path(project, vm_id));
        let rb = self
            .request(Method::POST, &path)
            .query(&[("hard", hard.to_string())]);
        self.accepted(rb, idempotency_key).await
    }

    /// Plans a resize (`POST .../vms/{vmId}:plan`): per field that would change, what applying
    /// it takes. Changes nothing.
    ///
    /// # Errors
    /// The service's error: `NotFound`, `InvalidSpec` naming the field.
    pub async fn plan_resize(
        &self,
        project: &str,
        vm_id: &VmId,
        request: &hcp_core::ResizeRequest,
    ) -> hcp_core::Result<Vec<hcp_core::FieldPlan>> {
        #[derive(Deserialize)]
        struct Plan {
            fields: Vec<hcp_core::FieldPlan>,
        }
        let path = format!("{}:plan", Client::vm_path(project, vm_id));
        let plan: Plan = self
            .json(self.request(Method::POST, &path).json(request))
            .await?;
        Ok(plan.fields)
    }

    /// Resizes a VM in place (`POST .../vms/{vmId}:resize`), applying only changes whose
    /// impact is in `allow`; the answer names the job.
    ///
    /// # Errors
    /// The service's error: `Conflict` with code `RESIZE_NOT_ALLOWED` naming the field refused,
    /// `QuotaExceeded`, `InvalidSpec` naming the field, `FeatureNotSupported`.
    pub async fn resize_vm(
        &self,
        project: &str,
        vm_id: &VmId,
        request: &hcp_core::ResizeRequest,
        allow: &[hcp_core::ChangeImpact],
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let mut body = serde_json::to_value(request)
            .map_err(|e| Error::internal(format!("cannot encode a resize: {e}")))?;
        if let Some(o) = body.as_object_mut() {
            o.insert("allow".into(), serde_json::json!(allow));
        }
        let path = format!("{}:resize", Client::vm_path(project, vm_id));
        let rb = self.request(Method::POST, &path).json(&body);
        self.accepted(rb, idempotency_key).await
    }

    /// Lists a VM's snapshots (`GET .../vms/{vmId}/snapshots`), oldest first.
    ///
    /// # Errors
    /// The service's error: `NotFound`, `FeatureNotSupported` when the VM's host cannot snapshot.
    pub async fn list_snapshots(
        &self,
        project: &str,
        vm_id: &VmId,
    ) -> hcp_core::Result<Vec<hcp_core::Snapshot>> {
        #[derive(Deserialize)]
        struct List {
            items: Vec<hcp_core::Snapshot>,
        }
        let path = format!("{}/snapshots", Client::vm_path(project, vm_id));
        let list: List = self.get(&path, &[]).await?;
        Ok(list.items)
    }

    /// Takes a snapshot (`POST .../vms/{vmId}/snapshots`); the answer names it (`snapshot_id`).
    ///
    /// # Errors
    /// The service's error: `InvalidSpec` or `Conflict` naming `name`, `QuotaExceeded` at the
    /// VM's snapshot limit, `FeatureNotSupported`.
    pub async fn create_snapshot(
        &self,
        project: &str,
        vm_id: &VmId,
        name: &str,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let path = format!("{}/snapshots", Client::vm_path(project, vm_id));
        let rb = self
            .request(Method::POST, &path)
            .json(&serde_json::json!({ "name": name }));
        self.accepted(rb, idempotency_key).await
    }

    /// Reverts a VM to a snapshot (`POST .../snapshots/{snapshotId}:revert`); the answer's
    /// `memory_state_kept` says whether the VM comes back running where it was.
    ///
    /// # Errors
    /// The service's error: `NotFound` naming `snapshot_id`, ...
    pub async fn revert_snapshot(
        &self,
        project: &str,
        vm_id: &VmId,
        snapshot_id: &str,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let path = format!(
            "{}/snapshots/{}:revert",
            Client::vm_path(project, vm_id),
            enc(snapshot_id)
        );
        self.accepted(self.request(Method::POST, &path), idempotency_key)
            .await
    }

    /// Deletes a snapshot (`DELETE .../snapshots/{snapshotId}`).
    ///
    /// # Errors
    /// The service's error: `NotFound` naming `snapshot_id`, ...
    pub async fn delete_snapshot(
        &self,
        project: &str,
        vm_id: &VmId,
        snapshot_id: &str,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let path = format!(
            "{}/snapshots/{}",
            Client::vm_path(project, vm_id),
            enc(snapshot_id)
        );
        self.accepted(self.request(Method::DELETE, &path), idempotency_key)
            .await
    }

    fn group_path(project: &str, id: Option<&ServerGroupId>) -> String {
        let base = format!("{TENANT_PREFIX}/projects/{}/server-groups", enc(project));
        match id {
            Some(id) => format!("{base}/{}", enc(id.as_str())),
            None => base,
        }
    }

    /// Creates a server group (`POST .../projects/{project}/server-groups`).
    ///
    /// # Errors
    /// The service's error: `InvalidSpec` naming `name`, `Conflict` naming `name` when the
    /// project has a group of that name.
    pub async fn create_server_group(
        &self,
        project: &str,
        name: &str,
        policy: GroupPolicy,
        strength: GroupStrength,
    ) -> hcp_core::Result<ServerGroup> {
        let rb = self
            .request(Method::POST, &Client::group_path(project, None))
            .json(&serde_json::json!({
                "name": name,
                "policy": policy.as_str(),
                "strength": strength.as_str(),
            }));
        self.json(rb).await
    }

    /// Lists one page of a project's server groups, by id.
    ///
    /// # Errors
    /// The service's error.
    pub async fn list_server_groups(
        &self,
        project: &str,
        page: &PageRequest,
    ) -> hcp_core::Result<Page<ServerGroup>> {
        self.get(&Client::group_path(project, None), &page_query(page))
            .await
    }

    /// Returns a server group with its member VM ids.
    ///
    /// # Errors
    /// The service's error: `NotFound` for a group outside the project.
    pub async fn get_server_group(
        &self,
        project: &str,
        id: &ServerGroupId,
    ) -> hcp_core::Result<ServerGroup> {
        self.get(&Client::group_path(project, Some(id)), &[]).await
    }

    /// Deletes an empty server group.
    ///
    /// # Errors
    /// The service's error: `NotFound`; `Conflict` with code `SERVER_GROUP_NOT_EMPTY` while
    /// VMs are in it.
    pub async fn delete_server_group(
        &self,
        project: &str,
        id: &ServerGroupId,
    ) -> hcp_core::Result<()> {
        self.send(self.request(Method::DELETE, &Client::group_path(project, Some(id))))
            .await?;
        Ok(())
    }

    /// Opens a console (`POST .../vms/{vmId}:console`).
    ///
    /// # Errors
    /// `FeatureNotSupported` when the host offers none; `Conflict` when the VM is not active.
    pub async fn console(
        &self,
        project: &str,
        vm_id: &VmId,
        kind: Option<ConsoleKind>,
    ) -> hcp_core::Result<Console> {
        let path = format!("{}:console", Client::vm_path(project, vm_id));
        let mut rb = self.request(Method::POST, &path);
        if let Some(k) = kind {
            rb = rb.query(&[("type", k.as_str())]);
        }
        self.json(rb).await
    }

    /// Returns a job as tenants see it (no host or provider), with its action.
    ///
    /// # Errors
    /// `NotFound` for an unknown job.
    pub async fn get_job(&self, job_id: &JobId) -> hcp_core::Result<TenantJob> {
        let v: serde_json::Value = self
            .get(
                &format!("{TENANT_PREFIX}/jobs/{}", enc(job_id.as_str())),
                &[],
            )
            .await?;
        tenant_job_from_value(v)
    }

    /// Cancels a job of a project (`POST .../projects/{project}/jobs/{jobId}:cancel`) and
    /// returns it: `CANCELLED` when it was pending; still `RUNNING` when it was running and has
    /// been asked to stop (it ends `CANCELLED` shortly: follow it with [`Client::watch_job`]).
    ///
    /// # Errors
    /// `NotFound` for a job of another project or none; `Conflict` for a job that already ended.
    pub async fn cancel_job(&self, project: &str, job_id: &JobId) -> hcp_core::Result<TenantJob> {
        let path = format!(
            "{TENANT_PREFIX}/projects/{}/jobs/{}:cancel",
            enc(project),
            enc(job_id.as_str())
        );
        let v: serde_json::Value = self.json(self.request(Method::POST, &path)).await?;
        tenant_job_from_value(v)
    }

    /// Lists one page of a project's jobs, newest first, with their actions.
    ///
    /// # Errors
    /// The service's error.
    pub async fn list_jobs(
        &self,
        project: &str,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> hcp_core::Result<Page<TenantJob>> {
        self.jobs_at(
            &format!("{TENANT_PREFIX}/projects/{}/jobs", enc(project)),
            filter,
            page,
        )
        .await
    }

    /// Lists jobs, newest first, across every project the caller is a member of (all projects
    /// for an operator); each job's `project` names its project.
    ///
    /// # Errors
    /// As [`Client::list_jobs`].
    pub async fn list_my_jobs(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> hcp_core::Result<Page<TenantJob>> {
        self.jobs_at(&format!("{TENANT_PREFIX}/jobs"), filter, page)
            .await
    }

    async fn jobs_at(
        &self,
        path: &str,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> hcp_core::Result<Page<TenantJob>> {
        let mut q = page_query(page);
        q.extend(job_filter_query(filter));
        let p: Page<serde_json::Value> = self.get(path, &q).await?;
        Ok(Page {
            items: p
                .items
                .into_iter()
                .map(tenant_job_from_value)
                .collect::<hcp_core::Result<_>>()?,
            next: p.next,
        })
    }

    /// Follows a job over server-sent events: its past log lines, then live lines and status
    /// changes, then [`JobUpdate::End`]; the stream ends after it. The final job is the tenant
    /// view: its `host`, `provider` and `idempotency_key` are empty, `timeout_ms` and
    /// `generation` zero.
    ///
    /// A cut connection (a proxy's idle timeout, a restarted replica) is reconnected with
    /// backoff and resumes after the last log line received (`Last-Event-ID`), so no line is
    /// lost or repeated; status updates may repeat. After 8 failed reconnections in a row the
    /// stream ends with a temporary `ProviderUnavailable` error.
    ///
    /// # Errors
    /// `NotFound` for an unknown job; items carry transport or decoding errors.
    pub async fn watch_job(
        &self,
        job_id: &JobId,
    ) -> hcp_core::Result<BoxStream<'static, hcp_core::Result<JobUpdate>>> {
        self.job_events(job_id, job_update_from, |u| matches!(u, JobUpdate::End(_)))
            .await
    }

    /// Follows a job over server-sent events as its tenant sees it: as [`Client::watch_job`],
    /// but the end carries the job exactly as the service sent it ([`TenantJob`], its action
    /// included), nothing filled in.
    ///
    /// # Errors
    /// `NotFound` for an unknown job; items carry transport or decoding errors.
    pub async fn watch_tenant_job(&self, job_id: &JobId) -> hcp_core::Result<TenantUpdates> {
        self.job_events(job_id, tenant_update_from, |u| {
            matches!(u, TenantUpdate::End(_))
        })
        .await
    }

    /// Opens a job's log stream, decodes each event with `decode`, and ends the stream after
    /// the first item `is_end` accepts. A cut stream resumes after the last log line (the line
    /// number is the event id).
    async fn job_events<U: Send + 'static>(
        &self,
        job_id: &JobId,
        decode: fn(&str) -> hcp_core::Result<U>,
        is_end: fn(&U) -> bool,
    ) -> hcp_core::Result<BoxStream<'static, hcp_core::Result<U>>> {
        let url = self.url(&format!(
            "{TENANT_PREFIX}/jobs/{}/logs",
            enc(job_id.as_str())
        ));
        let http = self.http.clone();
        let connect: sse::Connect = Box::new(move |last_id| {
            let rb = http.get(&url);
            match last_id {
                Some(id) => rb.header("Last-Event-ID", id),
                None => rb,
            }
        });
        let events = sse::open(self.base.clone(), connect).await?;
        Ok(events
            .map(move |ev| ev.and_then(|e| decode(&e.data)))
            .scan(false, move |done, item| {
                if *done {
                    return std::future::ready(None);
                }
                if item.as_ref().is_ok_and(is_end) {
                    *done = true;
                }
                std::future::ready(Some(item))
            })
            .boxed())
    }

    /// Waits until a job ends and returns it (the tenant view, see [`Client::watch_job`]),
    /// following its event stream.
    ///
    /// # Errors
    /// `NotFound` for an unknown job; `Timeout` when `timeout` passes first (the job goes on).
    pub async fn wait_job(
        &self,
        job_id: &JobId,
        timeout: Option<Duration>,
    ) -> hcp_core::Result<Job> {
        let wait = async {
            let mut updates = self.watch_job(job_id).await?;
            while let Some(u) = updates.next().await {
                if let JobUpdate::End(job) = u? {
                    return Ok(*job);
                }
            }
            // The stream closed without an end event (a proxy cut it): ask for the job.
            let job = self.get_job(job_id).await?;
            if job.state.is_terminal() {
                Ok(job_from_tenant(job))
            } else {
                Err(Error::new(
                    ErrorKind::ProviderUnavailable,
                    format!("the log stream of job `{job_id}` closed before it ended"),
                )
                .temporary())
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait).await.map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("job `{job_id}` did not end within {t:?}"),
                )
                .with_context("job", job_id)
            })?,
            None => wait.await,
        }
    }

    // ----------------------------------------------------------------------------------------
    // Common
    // ----------------------------------------------------------------------------------------

    /// Returns the catalog: images, flavors, networks and zones.
    ///
    /// # Errors
    /// The service's error.
    pub async fn catalog(&self) -> hcp_core::Result<Catalog> {
        self.get(&format!("{COMMON_PREFIX}/catalog"), &[]).await
    }

    /// Lists images.
    ///
    /// # Errors
    /// The service's error.
    pub async fn images(&self) -> hcp_core::Result<Vec<Image>> {
        self.get(&format!("{COMMON_PREFIX}/images"), &[]).await
    }

    /// Lists flavors.
    ///
    /// # Errors
    /// The service's error.
    pub async fn flavors(&self) -> hcp_core::Result<Vec<Flavor>> {
        self.get(&format!("{COMMON_PREFIX}/flavors"), &[]).await
    }

    /// Lists networks.
    ///
    /// # Errors
    /// The service's error.
    pub async fn networks(&self) -> hcp_core::Result<Vec<Network>> {
        self.get(&format!("{COMMON_PREFIX}/networks"), &[]).await
    }

    /// Lists zones.
    ///
    /// # Errors
    /// The service's error.
    pub async fn zones(&self) -> hcp_core::Result<Vec<Zone>> {
        self.get(&format!("{COMMON_PREFIX}/zones"), &[]).await
    }

    /// Returns what can be asked for in `zone` (any of its hosts), or anywhere when `None`.
    ///
    /// # Errors
    /// `InvalidSpec` naming `zone` for an unknown zone.
    pub async fn capabilities(&self, zone: Option<&str>) -> hcp_core::Result<Capabilities> {
        let q: Vec<(&str, String)> = zone.map(|z| ("zone", z.to_string())).into_iter().collect();
        self.get(&format!("{COMMON_PREFIX}/capabilities"), &q).await
    }

    /// Returns each zone's capabilities.
    ///
    /// # Errors
    /// The service's error.
    pub async fn zone_capabilities(&self) -> hcp_core::Result<Vec<ZoneCapabilities>> {
        self.get(&format!("{COMMON_PREFIX}/zones/capabilities"), &[])
            .await
    }

    // ----------------------------------------------------------------------------------------
    // Ops
    // ----------------------------------------------------------------------------------------

    /// Lists providers with their health.
    ///
    /// # Errors
    /// The service's error.
    pub async fn providers(&self) -> hcp_core::Result<Vec<ProviderStatus>> {
        self.get(&format!("{OPS_PREFIX}/providers"), &[]).await
    }

    /// Lists hosts with capacity and health.
    ///
    /// # Errors
    /// The service's error.
    pub async fn hosts(&self) -> hcp_core::Result<Vec<Host>> {
        self.legacy_list(&format!("{OPS_PREFIX}/hosts")).await
    }

    /// Lists one page of every VM with its provider binding (optionally one project's).
    ///
    /// # Errors
    /// The service's error.
    pub async fn ops_vms(
        &self,
        project: Option<&str>,
        page: &PageRequest,
    ) -> hcp_core::Result<Page<Vm>> {
        let mut q = page_query(page);
        if let Some(p) = project {
            q.push(("project", p.to_string()));
        }
        let p: Page<serde_json::Value> = self.get(&format!("{OPS_PREFIX}/vms"), &q).await?;
        Ok(Page {
            items: p
                .items
                .into_iter()
                .map(vm_from_value)
                .collect::<hcp_core::Result<_>>()?,
            next: p.next,
        })
    }

    /// Lists one page of every VM (optionally one project's) that matches `filter`, in the
    /// order `sort` gives.
    ///
    /// # Errors
    /// The service's error: `InvalidSpec` naming the parameter for a bad filter or cursor.
    pub async fn ops_vms_matching(
        &self,
        project: Option<&str>,
        filter: &VmFilter,
        sort: VmSort,
        page: &PageRequest,
    ) -> hcp_core::Result<Page<Vm>> {
        let mut q = page_query(page);
        if let Some(p) = project {
            q.push(("project", p.to_string()));
        }
        q.extend(vm_query(filter, sort));
        let p: Page<serde_json::Value> = self.get(&format!("{OPS_PREFIX}/vms"), &q).await?;
        Ok(Page {
            items: p
                .items
                .into_iter()
                .map(vm_from_value)
                .collect::<hcp_core::Result<_>>()?,
            next: p.next,
        })
    }

    /// Lists every VM found on the hosts, HCP's and others, every page of it.
    ///
    /// # Errors
    /// The service's error.
    pub async fn inventory_vms(&self) -> hcp_core::Result<Vec<InventoryVm>> {
        self.legacy_list(&format!("{OPS_PREFIX}/inventory")).await
    }

    /// Lists capabilities per provider and host.
    ///
    /// # Errors
    /// The service's error.
    pub async fn provider_capabilities(&self) -> hcp_core::Result<Vec<ProviderCapabilities>> {
        self.get(&format!("{OPS_PREFIX}/capabilities"), &[]).await
    }

    /// Refreshes every host's inventory now and reports drift.
    ///
    /// # Errors
    /// The service's error.
    pub async fn reconcile(&self) -> hcp_core::Result<RefreshReport> {
        #[derive(Deserialize)]
        struct Failed {
            host: String,
            reason: String,
        }
        #[derive(Deserialize)]
        struct Report {
            hosts_ok: usize,
            hosts_failed: Vec<Failed>,
            vms_seen: usize,
            adopted: usize,
            drift: Vec<hcp_core::Drift>,
            repairs: usize,
            #[serde(default)]
            repaired: usize,
            elapsed_ms: u64,
        }
        let r: Report = self
            .json(self.request(Method::POST, &format!("{OPS_PREFIX}/reconcile")))
            .await?;
        Ok(RefreshReport {
            hosts_ok: r.hosts_ok,
            hosts_failed: r
                .hosts_failed
                .into_iter()
                .map(|f| (f.host, f.reason))
                .collect(),
            vms_seen: r.vms_seen,
            adopted: r.adopted,
            drift: r.drift,
            repairs: r.repairs,
            repaired: r.repaired,
            elapsed_ms: r.elapsed_ms,
        })
    }

    /// Moves a running VM to another host of its provider and zone
    /// (`POST /api/hcp/ops/v1/vms/{vmId}:migrate`, operators only): to `request.target_host`, or
    /// any other host of the zone when it is `None`. Returns at once with the job; follow it
    /// with [`Client::ops_job`] (which names the target host) or [`Client::wait_job`].
    ///
    /// # Errors
    /// The service's error: `PermissionDenied` for a caller without the operator role,
    /// `NotFound` naming `vm_id`, `InvalidSpec` naming `target_host`, `Conflict`
    /// (`VM_STATE_CONFLICT` for a stopped VM without `allow_cold`, `CAPACITY_EXHAUSTED`,
    /// `SERVER_GROUP_POLICY`), `FeatureNotSupported` (the hosts cannot move the VM live, or
    /// cold where a cold move was allowed).
    pub async fn migrate_vm(
        &self,
        vm_id: &VmId,
        request: &hcp_core::MigrateRequest,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let path = format!("{OPS_PREFIX}/vms/{}:migrate", enc(vm_id.as_str()));
        let rb = self.request(Method::POST, &path).json(request);
        self.ops_submit(rb, idempotency_key).await
    }

    /// Takes a VM created outside HCP into `project` (`POST /api/hcp/ops/v1/vms:adopt`,
    /// operators only): a job writes HCP's mark on it. Returns at once with the job.
    ///
    /// # Errors
    /// The service's error: `NotFound` naming `vm`, `Conflict` for a VM HCP already manages,
    /// `QuotaExceeded`, `FeatureNotSupported` where the host cannot take the mark.
    pub async fn adopt_vm(
        &self,
        project: &str,
        request: &hcp_core::AdoptRequest,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let mut body = serde_json::to_value(request)
            .map_err(|e| Error::internal(format!("cannot encode an adoption: {e}")))?;
        if let Some(o) = body.as_object_mut() {
            o.insert("project".into(), project.into());
        }
        let rb = self
            .request(Method::POST, &format!("{OPS_PREFIX}/vms:adopt"))
            .json(&body);
        self.ops_submit(rb, idempotency_key).await
    }

    /// Gives a VM back (`POST /api/hcp/ops/v1/vms/{vmId}:release`, operators only): a job
    /// removes HCP's mark and HCP forgets the VM, which stays as it is. Returns at once with the
    /// job.
    ///
    /// # Errors
    /// The service's error: `NotFound` for an unknown VM.
    pub async fn release_vm(
        &self,
        vm_id: &VmId,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let path = format!("{OPS_PREFIX}/vms/{}:release", enc(vm_id.as_str()));
        self.ops_submit(self.request(Method::POST, &path), idempotency_key)
            .await
    }

    /// Sends an ops request that starts a job and reads the operator's job it answers.
    async fn ops_submit(
        &self,
        rb: RequestBuilder,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let mut rb = rb;
        if let Some(k) = idempotency_key {
            rb = rb.header("Idempotency-Key", k);
        }
        let resp = self.send(rb).await?;
        let replayed = resp
            .headers()
            .get(REPLAYED_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let job: Job = self.decode(resp).await?;
        Ok(Accepted {
            resource_id: format!("projects/{}/vms/{}", job.project, job.vm_id),
            vm_id: job.vm_id,
            job_id: job.id,
            replayed,
            snapshot_id: None,
            memory_state_kept: None,
        })
    }

    /// Returns a job with its host and provider (operator view).
    ///
    /// # Errors
    /// `NotFound` for an unknown job.
    pub async fn ops_job(&self, job_id: &JobId) -> hcp_core::Result<Job> {
        self.get(&format!("{OPS_PREFIX}/jobs/{}", enc(job_id.as_str())), &[])
            .await
    }

    /// Lists one page of every project's jobs (operator view).
    ///
    /// # Errors
    /// The service's error.
    pub async fn ops_jobs(
        &self,
        project: Option<&str>,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> hcp_core::Result<Page<Job>> {
        let mut q = page_query(page);
        q.extend(job_filter_query(filter));
        if let Some(p) = project {
            q.push(("project", p.to_string()));
        }
        self.get(&format!("{OPS_PREFIX}/jobs"), &q).await
    }

    /// Reads audit events after sequence number `after` (at most `limit`).
    ///
    /// # Errors
    /// The service's error.
    pub async fn events(
        &self,
        after: u64,
        project: Option<&str>,
        limit: usize,
    ) -> hcp_core::Result<Vec<Event>> {
        #[derive(Deserialize)]
        struct EventPage {
            items: Vec<Event>,
        }
        let mut q = vec![("after", after.to_string()), ("limit", limit.to_string())];
        if let Some(p) = project {
            q.push(("project", p.to_string()));
        }
        let p: EventPage = self.get(&format!("{OPS_PREFIX}/events"), &q).await?;
        Ok(p.items)
    }

    /// Follows the audit stream over server-sent events: events after `after`, then live ones.
    /// A cut connection resumes after the last event received, like [`Client::watch_job`].
    ///
    /// # Errors
    /// The service's error; items carry transport or decoding errors.
    pub async fn subscribe_events(
        &self,
        after: u64,
        project: Option<&str>,
    ) -> hcp_core::Result<BoxStream<'static, hcp_core::Result<Event>>> {
        let url = self.url(&format!("{OPS_PREFIX}/events/stream"));
        let http = self.http.clone();
        let project = project.map(str::to_string);
        // A cut stream resumes after the last event seen (the sequence number is the event id).
        let connect: sse::Connect = Box::new(move |last_id| {
            let after = last_id
                .and_then(|id| id.parse::<u64>().ok())
                .map_or(after, |seen| seen.max(after));
            let mut q = vec![("after", after.to_string())];
            if let Some(p) = &project {
                q.push(("project", p.clone()));
            }
            http.get(&url).query(&q)
        });
        Ok(sse::open(self.base.clone(), connect)
            .await?
            .map(|ev| {
                ev.and_then(|e| {
                    serde_json::from_str::<Event>(&e.data).map_err(|err| {
                        Error::internal(format!("cannot decode an audit event: {err}"))
                    })
                })
            })
            .boxed())
    }

    // ----------------------------------------------------------------------------------------
    // Hyper-V service routes
    // ----------------------------------------------------------------------------------------

    /// Lists hosts through `GET /api/v1/hosts`, every page of it.
    ///
    /// # Errors
    /// The service's error.
    pub async fn legacy_hosts(&self) -> hcp_core::Result<Vec<Host>> {
        self.legacy_list(&format!("{HYPERV_PREFIX}/hosts")).await
    }

    /// Lists the aggregated inventory through `GET /api/v1/vms`, every page of it.
    ///
    /// # Errors
    /// The service's error.
    pub async fn legacy_vms(&self) -> hcp_core::Result<Vec<InventoryVm>> {
        self.legacy_list(&format!("{HYPERV_PREFIX}/vms")).await
    }

    /// Reads every page of a list answered as a JSON array per page with the next page's
    /// cursor in `X-Next-Cursor` (the Hyper-V lists, the operators' hosts and inventory).
    async fn legacy_list<T: DeserializeOwned>(&self, path: &str) -> hcp_core::Result<Vec<T>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut rb = self.request(Method::GET, path);
            if let Some(c) = &cursor {
                rb = rb.query(&[("cursor", c)]);
            }
            let resp = self.send(rb).await?;
            let next = resp
                .headers()
                .get(LEGACY_NEXT_CURSOR)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string);
            let page: Vec<T> = self.decode(resp).await?;
            out.extend(page);
            match next {
                Some(n) if cursor.as_ref() != Some(&n) => cursor = Some(n),
                _ => return Ok(out),
            }
        }
    }

    /// Creates a VM through `POST /api/v1/vms/create` (in the service's default project).
    ///
    /// # Errors
    /// The service's error, naming the Hyper-V request's fields.
    pub async fn legacy_create_vm(
        &self,
        request: &LegacyCreateVm,
        idempotency_key: Option<&str>,
    ) -> hcp_core::Result<Accepted> {
        let rb = self
            .request(Method::POST, &format!("{HYPERV_PREFIX}/vms/create"))
            .json(request);
        self.accepted(rb, idempotency_key).await
    }

    /// Deletes a VM by name through `POST /api/v1/vms/delete`.
    ///
    /// # Errors
    /// The service's error.
    pub async fn legacy_delete_vm(&self, name: &str, force: bool) -> hcp_core::Result<Accepted> {
        let body = serde_json::json!({ "name": name, "force": force });
        self.accepted(
            self.request(Method::POST, &format!("{HYPERV_PREFIX}/vms/delete"))
                .json(&body),
            None,
        )
        .await
    }

    // ----------------------------------------------------------------------------------------
    // Health
    // ----------------------------------------------------------------------------------------

    /// Returns true when `/healthz` answers 200.
    ///
    /// # Errors
    /// A transport error when the service cannot be reached.
    pub async fn healthz(&self) -> hcp_core::Result<bool> {
        let r = self
            .http
            .get(self.url("/healthz"))
            .send()
            .await
            .map_err(|e| transport_error(&self.base, e))?;
        Ok(r.status() == StatusCode::OK)
    }

    /// Returns true when `/readyz` answers 200 (ready), false on 503.
    ///
    /// # Errors
    /// A transport error when the service cannot be reached.
    pub async fn readyz(&self) -> hcp_core::Result<bool> {
        let r = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .map_err(|e| transport_error(&self.base, e))?;
        Ok(r.status() == StatusCode::OK)
    }

    /// Returns the Prometheus text of `/metrics`.
    ///
    /// # Errors
    /// The service's error.
    pub async fn metrics(&self) -> hcp_core::Result<String> {
        let r = self.send(self.http.get(self.url("/metrics"))).await?;
        r.text().await.map_err(|e| transport_error(&self.base, e))
    }
}

/// Reads the `ETag` header of a VM answer.
fn etag_of(resp: &reqwest::Response) -> hcp_core::Result<String> {
    resp.headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| Error::internal("the service's VM answer carries no ETag"))
}

fn page_query(page: &PageRequest) -> Vec<(&'static str, String)> {
    let mut q = vec![("limit", page.limit.to_string())];
    if let Some(c) = &page.cursor {
        q.push(("cursor", c.clone()));
    }
    q
}

/// The query parameters of a VM list's filter and sort (the default sort sends none).
fn vm_query(filter: &VmFilter, sort: VmSort) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(p) = &filter.name_prefix {
        q.push(("name_prefix", p.clone()));
    }
    for (k, v) in &filter.tags {
        q.push(("tag", format!("{k}={v}")));
    }
    if let Some(s) = filter.state {
        q.push(("state", s.to_string()));
    }
    if let Some(p) = filter.power {
        q.push(("power", p.to_string()));
    }
    if sort != VmSort::default() {
        q.push(("sort", sort.to_string()));
    }
    q
}

fn job_filter_query(filter: &JobFilter) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(v) = &filter.vm_id {
        q.push(("vm_id", v.to_string()));
    }
    if let Some(s) = filter.state {
        q.push(("state", s.as_str().to_string()));
    }
    q
}

/// Decodes a tenant job; an action this client does not know (a newer service) reads as
/// `None` instead of failing the whole job.
fn tenant_job_from_value(mut v: serde_json::Value) -> hcp_core::Result<TenantJob> {
    let action = v
        .as_object_mut()
        .and_then(|o| o.remove("action"))
        .and_then(|a| serde_json::from_value::<JobAction>(a).ok());
    let mut job: TenantJob = serde_json::from_value(v)
        .map_err(|e| Error::internal(format!("cannot decode a job: {e}")))?;
    job.action = action;
    Ok(job)
}

/// Turns a tenant job into the core job type shells handle: no host, provider or key. A job
/// without its action gets the plain action of its operation.
fn job_from_tenant(t: TenantJob) -> Job {
    let action = t.action.unwrap_or(match t.operation {
        Operation::CreateVm => JobAction::Create,
        Operation::DeleteVm => JobAction::Delete { force: false },
        Operation::StopVm => JobAction::Stop {
            force: false,
            graceful_timeout_secs: 0,
        },
        Operation::RebootVm => JobAction::Reboot { hard: false },
        Operation::AdoptVm => JobAction::Adopt,
        Operation::ReleaseVm => JobAction::Release,
        _ => JobAction::Start,
    });
    Job {
        id: t.id,
        project: t.project,
        vm_id: t.vm_id,
        operation: t.operation,
        action,
        state: t.state,
        pending_reason: t.pending_reason,
        attempts: t.attempts,
        max_attempts: t.max_attempts,
        progress: t.progress,
        principal: Principal::new(t.principal),
        idempotency_key: None,
        host: "".into(),
        provider: "".into(),
        error: t.error.map(Box::new),
        timeout_ms: 0,
        created_at: t.created_at,
        started_at: t.started_at,
        finished_at: t.finished_at,
        generation: 0,
        lease: None,
        cancel_requested: None,
    }
}

/// Decodes an operator VM (its spec carries no user-data over the wire).
fn vm_from_value(mut v: serde_json::Value) -> hcp_core::Result<Vm> {
    if let Some(obj) = v.as_object_mut() {
        obj.remove("has_user_data");
    }
    serde_json::from_value(v).map_err(|e| Error::internal(format!("cannot decode a VM: {e}")))
}

fn job_update_from(data: &str) -> hcp_core::Result<JobUpdate> {
    let bad = |e: serde_json::Error| Error::internal(format!("cannot decode a job event: {e}"));
    let v: serde_json::Value = serde_json::from_str(data).map_err(bad)?;
    if v.get("type").and_then(|t| t.as_str()) == Some("end") {
        let tenant = tenant_job_from_value(v)?;
        return Ok(JobUpdate::End(Box::new(job_from_tenant(tenant))));
    }
    serde_json::from_value(v).map_err(bad)
}

/// Decodes one event of a job's stream as its tenant sees it: the end's job as sent.
fn tenant_update_from(data: &str) -> hcp_core::Result<TenantUpdate> {
    match job_update_or_end(data)? {
        Ok(job) => Ok(TenantUpdate::End(Box::new(job))),
        Err(JobUpdate::Log(line)) => Ok(TenantUpdate::Log(line)),
        Err(JobUpdate::Status {
            state,
            progress,
            pending_reason,
        }) => Ok(TenantUpdate::Status {
            state,
            progress,
            pending_reason,
        }),
        Err(JobUpdate::End(job)) => Ok(TenantUpdate::End(Box::new(job.tenant_view()))),
    }
}

/// Decodes one event of a job's stream: the end's tenant job, or another update.
fn job_update_or_end(data: &str) -> hcp_core::Result<Result<TenantJob, JobUpdate>> {
    let bad = |e: serde_json::Error| Error::internal(format!("cannot decode a job event: {e}"));
    let v: serde_json::Value = serde_json::from_str(data).map_err(bad)?;
    if v.get("type").and_then(|t| t.as_str()) == Some("end") {
        return tenant_job_from_value(v).map(Ok);
    }
    serde_json::from_value(v).map(Err).map_err(bad)
}

fn transport_error(base: &str, e: reqwest::Error) -> Error {
    // reqwest's Display carries the URL but never headers, so no token leaks here.
    let what = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::ProviderUnavailable
    };
    let mut msg = format!("cannot reach HCP at {base}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::new(what, msg).temporary()
}

/// The problem body the service sends with every failure.
#[derive(Debug, Deserialize)]
struct Problem {
    #[serde(default)]
    status: u16,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    kind: Option<ErrorKind>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    retryable: bool,
}

/// Maps a problem's code to a static code the core error can carry.
fn static_code(code: &str) -> Option<&'static str> {
    [
        hcp_core::CODE_IDEMPOTENCY_KEY_REUSED,
        hcp_core::CODE_IDEMPOTENCY_KEY_IN_PROGRESS,
        hcp_core::CODE_PRECONDITION_REQUIRED,
        hcp_core::CODE_PRECONDITION_FAILED,
        hcp_core::CODE_CAPACITY_EXHAUSTED,
        "RATE_LIMITED",
        hcp_core::CODE_VM_STATE_CONFLICT,
        hcp_core::CODE_RESIZE_NOT_ALLOWED,
        hcp_core::CODE_SERVER_GROUP_POLICY,
        hcp_core::CODE_SERVER_GROUP_NOT_EMPTY,
        "PAYLOAD_TOO_LARGE",
        "METHOD_NOT_ALLOWED",
        "UNSUPPORTED_MEDIA_TYPE",
        "REQUEST_TIMEOUT",
    ]
    .into_iter()
    .find(|c| *c == code)
}

fn kind_of_status(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        400 | 413 | 415 | 405 => ErrorKind::InvalidSpec,
        401 | 403 => ErrorKind::Unauthorized,
        412 | 428 => ErrorKind::Conflict,
        404 => ErrorKind::NotFound,
        408 | 504 => ErrorKind::Timeout,
        409 | 422 => ErrorKind::Conflict,
        429 => ErrorKind::QuotaExceeded,
        502 => ErrorKind::ProviderError,
        503 => ErrorKind::ProviderUnavailable,
        _ => ErrorKind::Internal,
    }
}

/// Decodes a failed response into the core error it stands for.
async fn decode_error(resp: reqwest::Response) -> Error {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<Problem>(&body) {
        Ok(p) if !p.code.is_empty() => {
            let kind = p.kind.unwrap_or_else(|| {
                kind_of_status(StatusCode::from_u16(p.status).unwrap_or(status))
            });
            let mut e = Error::new(kind, p.detail);
            if let Some(f) = p.field {
                e = e.with_field(f);
            }
            if let Some(code) = static_code(&p.code) {
                e = e.with_code(code);
            }
            if p.retryable {
                e = e.temporary();
            }
            e.with_context("http_status", status.as_u16())
        }
        _ => {
            let text = String::from_utf8_lossy(&body);
            let snippet: String = text.chars().take(200).collect();
            Error::new(
                kind_of_status(status),
                format!("HCP answered {status}: {snippet}"),
            )
            .with_context("http_status", status.as_u16())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Client, enc};
    use hcp_core::ErrorKind;

    #[test]
    fn a_bad_ca_file_is_refused_naming_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = Client::builder("https://127.0.0.1:1")
            .ca_file(&missing)
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
        assert_eq!(e.field(), Some("ca_file"));
        assert!(e.message().contains("cannot read"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = Client::builder("https://127.0.0.1:1")
            .ca_file(&junk)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), Some("ca_file"), "{e}");
    }

    #[test]
    fn path_segments_are_escaped_whole() {
        assert_eq!(enc("vm-01a2_b.c~d"), "vm-01a2_b.c~d");
        assert_eq!(enc("a b+c"), "a%20b%2Bc");
        assert_eq!(enc("../x/y?z#w%:v"), "..%2Fx%2Fy%3Fz%23w%25%3Av");
        assert_eq!(enc("é"), "%C3%A9");
        assert_eq!(enc(".."), "%2E%2E");
        assert_eq!(enc("."), "%2E");
    }
}
