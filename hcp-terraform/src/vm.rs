//! The `hcp_vm` resource.
//!
//! # Behavior
//! - Create submits the VM with an idempotency key derived from the planned values
//!   ([`idempotency_key`]), waits for the create job, then for a stop job when
//!   `desired_power = "stopped"`. A re-run after an interrupted apply sends the same key, so HCP
//!   replays the first request instead of making a second VM. When the key's VM has since been
//!   deleted (the same configuration applied again after a destroy), the next key of the
//!   sequence is used.
//! - A failed create job is an error diagnostic with the job's code, on the attribute its field
//!   names; the VM stays in the state, so Terraform marks it tainted and replaces it next time.
//! - Refresh reads the VM: gone (or deleted) removes it from the state; a VM stopped or
//!   started out of band shows as a `desired_power` change, tags changed out of band as a
//!   `tags` change.
//! - `desired_power` (a start or stop job) and `tags` (`PATCH` with the VM's `ETag` as
//!   `If-Match`, read again and retried when another writer got there first) are in-place
//!   updates. Every other input attribute forces replacement, and the plan says so: HCP has no
//!   route that changes a VM's image, size, zone, networks or user-data in place.
//! - Import takes `PROJECT/VM_ID`.
//! - Destroy deletes with `force` (a running VM is powered off first) and waits for the job.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use hcp_client::Accepted;
use hcp_core::{
    DesiredState, Error, ErrorKind, JobState, NetworkAttachment, PowerState, TenantVm, VmId, VmSpec,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::common::{attr, schema};
use crate::diag;
use crate::provider::{Connection, Shared};

/// The most keys [`create`](VmResource) tries when earlier keys' VMs have been deleted.
const MAX_KEY_SEQUENCE: u32 = 64;

/// The state (and plan, and configuration) of one `hcp_vm`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VmState {
    /// HCP's VM id (computed).
    pub id: Value<String>,
    /// The project; the provider's when unset.
    pub project: Value<String>,
    /// The VM name.
    pub name: Value<String>,
    /// The catalog image.
    pub image: Value<String>,
    /// The catalog flavor.
    pub flavor: Value<String>,
    /// vCPUs (the flavor's when unset).
    pub vcpus: Value<i64>,
    /// Memory in MiB (the flavor's when unset).
    pub memory_mib: Value<i64>,
    /// Disk in GiB (the flavor's when unset).
    pub disk_gib: Value<i64>,
    /// The placement zone (HCP's choice when unset).
    pub zone: Value<String>,
    /// Catalog networks, in order.
    pub networks: Value<Vec<Value<String>>>,
    /// Tags.
    pub tags: Value<BTreeMap<String, Value<String>>>,
    /// Cloud-init user-data (sensitive; HCP never returns it).
    pub user_data: Value<String>,
    /// The server group the VM is created into (`hcp_server_group.*.id`).
    pub server_group: Value<String>,
    /// `running` or `stopped`.
    pub desired_power: Value<String>,
    /// The observed power state (computed).
    pub power: Value<String>,
    /// HCP's lifecycle state (computed).
    pub state: Value<String>,
    /// When HCP accepted the VM, RFC 3339 (computed).
    pub created: Value<String>,
}

/// The attributes whose change forces a new VM.
pub const REPLACE_ATTRIBUTES: &[&str] = &[
    "project",
    "name",
    "image",
    "flavor",
    "vcpus",
    "memory_mib",
    "disk_gib",
    "zone",
    "networks",
    "user_data",
    "server_group",
];

/// How often an in-place tag change reads the VM again when another writer changed it between
/// the read and the `PATCH` (`PRECONDITION_FAILED`).
const TAG_UPDATE_ATTEMPTS: u32 = 8;

/// The accepted values of `desired_power`.
pub const POWER_VALUES: &[&str] = &["running", "stopped"];

fn known<T: Clone>(v: &Value<T>) -> Option<T> {
    v.as_ref_option().cloned()
}

fn to_u32(field: &str, v: &Value<i64>) -> Result<Option<u32>, Error> {
    match v {
        Value::Value(n) => u32::try_from(*n).map(Some).map_err(|_| {
            Error::invalid(field, format!("is {n}; it must be a positive whole number"))
        }),
        _ => Ok(None),
    }
}

fn to_u64(field: &str, v: &Value<i64>) -> Result<Option<u64>, Error> {
    match v {
        Value::Value(n) => u64::try_from(*n).map(Some).map_err(|_| {
            Error::invalid(field, format!("is {n}; it must be a positive whole number"))
        }),
        _ => Ok(None),
    }
}

impl VmState {
    /// Returns true when every input HCP needs to build the spec is known (not computed later
    /// in the plan).
    fn inputs_known(&self) -> bool {
        !(self.name.is_unknown()
            || self.image.is_unknown()
            || self.flavor.is_unknown()
            || self.vcpus.is_unknown()
            || self.memory_mib.is_unknown()
            || self.disk_gib.is_unknown()
            || self.zone.is_unknown()
            || self.networks.is_unknown()
            || self.tags.is_unknown()
            || self.user_data.is_unknown()
            || self.server_group.is_unknown()
            || self
                .networks
                .iter()
                .any(|n| n.iter().any(Value::is_unknown))
            || self.tags.iter().any(|t| t.values().any(Value::is_unknown)))
    }

    /// Builds the spec HCP receives from the configured (not computed) values: `vcpus`,
    /// `memory_mib`, `disk_gib` and `zone` come from `config`, since the state fills them in
    /// from the flavor and placement.
    ///
    /// # Errors
    /// `InvalidSpec` naming the field of a value that cannot be sent.
    pub fn spec(&self, config: &VmState) -> Result<VmSpec, Error> {
        Ok(VmSpec {
            name: known(&self.name).unwrap_or_default(),
            image: known(&self.image).unwrap_or_default(),
            flavor: known(&self.flavor),
            vcpus: to_u32("vcpus", &config.vcpus)?,
            memory_mib: to_u64("memory_mib", &config.memory_mib)?,
            disk_gib: to_u64("disk_gib", &config.disk_gib)?,
            zone: known(&config.zone),
            networks: known(&self.networks)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|n| n.as_option())
                .map(|network| NetworkAttachment { network })
                .collect(),
            tags: known(&self.tags)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| v.as_option().map(|v| (k, v)))
                .collect(),
            user_data: known(&self.user_data),
            server_group: known(&self.server_group).map(hcp_core::ServerGroupId::new),
        })
    }

    /// Fills the computed attributes from what HCP reports, keeping the inputs as they are.
    fn observe(&mut self, vm: &TenantVm) {
        self.id = Value::Value(vm.id.to_string());
        self.project = Value::Value(vm.project.to_string());
        self.vcpus = Value::Value(i64::from(vm.resources.vcpus));
        self.memory_mib = Value::Value(i64::try_from(vm.resources.memory_mib).unwrap_or(i64::MAX));
        self.disk_gib = Value::Value(i64::try_from(vm.resources.disk_gib).unwrap_or(i64::MAX));
        self.zone = Value::Value(vm.zone.clone());
        self.power = Value::Value(power_name(vm.power).to_string());
        self.state = Value::Value(vm.state.to_string());
        self.created = Value::Value(vm.created_at.to_rfc3339());
    }

    /// Refreshes every attribute HCP knows from `vm` (for refresh and import): the inputs from
    /// its spec, `desired_power` from the observed power, so that drift shows in the plan.
    fn refresh(&mut self, vm: &TenantVm) {
        self.observe(vm);
        self.name = Value::Value(vm.spec.name.clone());
        self.image = Value::Value(vm.spec.image.clone());
        self.flavor = vm.spec.flavor.clone().into();
        let networks: Vec<Value<String>> = vm
            .spec
            .networks
            .iter()
            .map(|n| Value::Value(n.network.clone()))
            .collect();
        // An empty list and an unset attribute mean the same to HCP: keep the state's form.
        self.networks = match (&self.networks, networks.is_empty()) {
            (Value::Value(_), true) => Value::Value(Vec::new()),
            (_, true) => Value::Null,
            (_, false) => Value::Value(networks),
        };
        let tags: BTreeMap<String, Value<String>> = vm
            .spec
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), Value::Value(v.clone())))
            .collect();
        self.tags = if tags.is_empty() {
            match &self.tags {
                Value::Value(_) => Value::Value(BTreeMap::new()),
                _ => Value::Null,
            }
        } else {
            Value::Value(tags)
        };
        if !vm.has_user_data {
            self.user_data = Value::Null;
        }
        self.server_group = vm.spec.server_group.as_ref().map(|g| g.to_string()).into();
        // The power HCP observes is what Terraform compares with the configuration; a VM whose
        // power is not known yet keeps the wanted power.
        self.desired_power = match vm.power {
            PowerState::Running => Value::Value("running".into()),
            PowerState::Stopped => Value::Value("stopped".into()),
            PowerState::Paused => Value::Value("paused".into()),
            PowerState::Unknown => Value::Value(power_name(vm.desired_power).to_string()),
        };
    }

    /// Marks every computed attribute unknown (a new VM will be made).
    fn unknown_computed(&mut self, config: &VmState) {
        self.id = Value::Unknown;
        self.power = Value::Unknown;
        self.state = Value::Unknown;
        self.created = Value::Unknown;
        for (field, cfg) in [
            (&mut self.vcpus, &config.vcpus),
            (&mut self.memory_mib, &config.memory_mib),
            (&mut self.disk_gib, &config.disk_gib),
        ] {
            if cfg.is_null() {
                *field = Value::Unknown;
            }
        }
        if config.zone.is_null() {
            self.zone = Value::Unknown;
        }
    }
}

/// Returns true when the replace-forcing attribute `name` differs between `prior` and `planned`
/// (an unknown planned value counts as a change).
fn changed(name: &str, prior: &VmState, planned: &VmState) -> bool {
    match name {
        "project" => prior.project != planned.project,
        "name" => prior.name != planned.name,
        "image" => prior.image != planned.image,
        "flavor" => prior.flavor != planned.flavor,
        "vcpus" => prior.vcpus != planned.vcpus,
        "memory_mib" => prior.memory_mib != planned.memory_mib,
        "disk_gib" => prior.disk_gib != planned.disk_gib,
        "zone" => prior.zone != planned.zone,
        "networks" => prior.networks != planned.networks,
        "tags" => prior.tags != planned.tags,
        "user_data" => prior.user_data != planned.user_data,
        "server_group" => prior.server_group != planned.server_group,
        _ => false,
    }
}

fn power_name(p: PowerState) -> &'static str {
    match p {
        PowerState::Running => "running",
        PowerState::Stopped => "stopped",
        PowerState::Paused => "paused",
        PowerState::Unknown => "unknown",
    }
}

/// Derives the idempotency key of a create from its planned values: the project, the spec
/// (user-data included, as a hash) and the wanted power, plus `sequence` (0 first). The same
/// plan gives the same key, so a retried apply replays the first request.
pub fn idempotency_key(project: &str, spec: &VmSpec, desired_power: &str, sequence: u32) -> String {
    let canonical = serde_json::json!({
        "project": project,
        "spec": spec,
        "desired_power": desired_power,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    format!("tf-{}-{sequence}", &hex::encode(digest)[..40])
}

/// The `hcp_vm` resource.
#[derive(Debug, Clone)]
pub struct VmResource {
    shared: Shared,
}

impl VmResource {
    /// Creates the resource over the provider's connection.
    pub fn new(shared: Shared) -> Self {
        VmResource { shared }
    }
}

/// Checks what can be checked without HCP, as diagnostics on the attributes.
fn validate_static(diags: &mut Diagnostics, config: &VmState) {
    let mut check = |r: hcp_core::Result<()>| {
        if let Err(e) = r {
            diag::report(diags, &e, &AttributePath::root());
        }
    };
    if let Value::Value(p) = &config.project {
        check(hcp_core::ProjectId::new(p.clone()).validate());
    }
    if let Value::Value(n) = &config.name {
        check(hcp_core::validate_dns_label("name", n));
    }
    if let Value::Value(i) = &config.image {
        check(hcp_core::validate_catalog_name("image", i));
    }
    if let Value::Value(f) = &config.flavor {
        check(hcp_core::validate_catalog_name("flavor", f));
    }
    if let Value::Value(z) = &config.zone {
        check(hcp_core::validate_catalog_name("zone", z));
    }
    for (field, v) in [
        ("vcpus", &config.vcpus),
        ("memory_mib", &config.memory_mib),
        ("disk_gib", &config.disk_gib),
    ] {
        if let Value::Value(n) = v {
            check(match field {
                "vcpus" => to_u32(field, v).and_then(|_| {
                    hcp_core::validate_range(
                        field,
                        *n,
                        i64::from(hcp_core::MIN_VCPUS),
                        i64::from(hcp_core::MAX_VCPUS),
                        "",
                    )
                }),
                "memory_mib" => hcp_core::validate_range(
                    field,
                    *n,
                    i64::try_from(hcp_core::MIN_MEMORY_MIB).unwrap_or(i64::MAX),
                    i64::try_from(hcp_core::MAX_MEMORY_MIB).unwrap_or(i64::MAX),
                    "MiB",
                ),
                _ => hcp_core::validate_range(
                    field,
                    *n,
                    i64::try_from(hcp_core::MIN_DISK_GIB).unwrap_or(i64::MAX),
                    i64::try_from(hcp_core::MAX_DISK_GIB).unwrap_or(i64::MAX),
                    "GiB",
                ),
            });
        }
    }
    if config.flavor.is_null() {
        for (field, v) in [
            ("vcpus", &config.vcpus),
            ("memory_mib", &config.memory_mib),
            ("disk_gib", &config.disk_gib),
        ] {
            if v.is_null() {
                check(Err(Error::invalid(
                    field,
                    "is required when no flavor is given (give a flavor, or vcpus, memory_mib and disk_gib)",
                )));
            }
        }
    }
    if let Value::Value(tags) = &config.tags
        && tags.values().all(Value::is_value)
    {
        let tags: BTreeMap<String, String> = tags
            .iter()
            .filter_map(|(k, v)| v.as_ref_option().map(|v| (k.clone(), v.clone())))
            .collect();
        check(hcp_core::validate_tags(&tags));
    }
    if let Value::Value(ud) = &config.user_data {
        check(hcp_core::validate_user_data(ud));
    }
    if let Value::Value(networks) = &config.networks {
        if networks.len() > hcp_core::MAX_NETWORKS {
            check(Err(Error::invalid(
                "networks",
                format!(
                    "has {} entries; at most {} networks are allowed",
                    networks.len(),
                    hcp_core::MAX_NETWORKS
                ),
            )));
        }
        for (i, n) in networks.iter().enumerate() {
            if let Value::Value(n) = n {
                check(hcp_core::validate_catalog_name(
                    &format!("networks[{i}].network"),
                    n,
                ));
            }
        }
    }
    if let Value::Value(p) = &config.desired_power
        && !POWER_VALUES.contains(&p.as_str())
    {
        diag::error(
            diags,
            "Invalid desired_power",
            format!("desired_power: is `{p}`; use `running` or `stopped`"),
            AttributePath::new("desired_power"),
        );
    }
}

/// Waits for a job and reports its failure; returns true when it succeeded.
async fn wait_ok(
    diags: &mut Diagnostics,
    conn: &Connection,
    accepted: &Accepted,
    timeout: Duration,
) -> bool {
    match conn.client.wait_job(&accepted.job_id, Some(timeout)).await {
        Ok(job) if job.state == JobState::Succeeded => true,
        Ok(job) => {
            match &job.error {
                Some(e) => diag::report_job(diags, job.id.as_str(), e),
                None => diag::root_error(
                    diags,
                    format!("HCP job ended {}", job.state.as_str()),
                    format!("job `{}` ended {}", job.id, job.state.as_str()),
                ),
            }
            false
        }
        Err(e) => {
            diag::report(diags, &e, &AttributePath::root());
            false
        }
    }
}

/// Returns the VM, or `None` when HCP no longer has it (or only as deleted).
async fn fetch(conn: &Connection, project: &str, id: &VmId) -> hcp_core::Result<Option<TenantVm>> {
    match conn.client.get_vm(project, id).await {
        Ok(vm) if vm.state == DesiredState::Deleted => Ok(None),
        Ok(vm) => Ok(Some(vm)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Starts or stops `vm_id` to match `wanted`; returns false (with diagnostics) on failure.
async fn set_power(
    diags: &mut Diagnostics,
    conn: &Connection,
    project: &str,
    vm_id: &VmId,
    wanted: &str,
    timeout: Duration,
) -> bool {
    let accepted = match wanted {
        "running" => conn.client.start_vm(project, vm_id, None).await,
        "stopped" => conn.client.stop_vm(project, vm_id, false, None).await,
        other => {
            diag::error(
                diags,
                "Invalid desired_power",
                format!("desired_power: is `{other}`; use `running` or `stopped`"),
                AttributePath::new("desired_power"),
            );
            return false;
        }
    };
    match accepted {
        Ok(a) => wait_ok(diags, conn, &a, timeout).await,
        Err(e) => {
            diag::report(diags, &e, &AttributePath::new("desired_power"));
            false
        }
    }
}

/// The JSON Merge Patch that turns `prior` tags into `planned` ones: changed or new keys with
/// their value, removed keys with `None`.
pub fn tag_patch(
    prior: &Value<BTreeMap<String, Value<String>>>,
    planned: &Value<BTreeMap<String, Value<String>>>,
) -> BTreeMap<String, Option<String>> {
    let known = |t: &Value<BTreeMap<String, Value<String>>>| -> BTreeMap<String, String> {
        t.as_ref_option()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_ref_option().map(|v| (k.clone(), v.clone())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (before, after) = (known(prior), known(planned));
    let mut patch: BTreeMap<String, Option<String>> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    for k in before.keys().filter(|k| !after.contains_key(*k)) {
        patch.insert(k.clone(), None);
    }
    patch
}

/// Applies a tag patch with the VM's current `ETag`, reading it again when another writer got
/// there first; returns false (with diagnostics) on failure.
async fn set_tags(
    diags: &mut Diagnostics,
    conn: &Connection,
    project: &str,
    vm_id: &VmId,
    patch: &BTreeMap<String, Option<String>>,
) -> bool {
    let mut last = None;
    for _ in 0..TAG_UPDATE_ATTEMPTS {
        let etag = match conn.client.get_vm_versioned(project, vm_id).await {
            Ok((_, etag)) => etag,
            Err(e) => {
                diag::report(diags, &e, &AttributePath::new("tags"));
                return false;
            }
        };
        match conn
            .client
            .update_vm_tags(project, vm_id, patch, &etag)
            .await
        {
            Ok(_) => return true,
            Err(e) if e.code() == hcp_core::CODE_PRECONDITION_FAILED => last = Some(e),
            Err(e) => {
                diag::report(diags, &e, &AttributePath::new("tags"));
                return false;
            }
        }
    }
    if let Some(e) = last {
        diag::report(diags, &e, &AttributePath::new("tags"));
    }
    false
}

impl VmResource {
    fn project_of(
        &self,
        diags: &mut Diagnostics,
        conn: &Connection,
        state: &VmState,
    ) -> Option<String> {
        crate::common::project_of(diags, conn, &state.project)
    }

    /// Submits the create with the planned values' key, moving on to the next key of the
    /// sequence while the key's VM has been deleted since.
    async fn submit_create(
        &self,
        diags: &mut Diagnostics,
        conn: &Connection,
        project: &str,
        spec: &VmSpec,
        desired_power: &str,
    ) -> Option<Accepted> {
        for sequence in 0..MAX_KEY_SEQUENCE {
            let key = idempotency_key(project, spec, desired_power, sequence);
            let accepted = loop {
                match conn.client.create_vm(project, spec, Some(&key)).await {
                    Err(e) if e.code() == hcp_core::CODE_IDEMPOTENCY_KEY_IN_PROGRESS => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => break other,
                }
            };
            match accepted {
                Ok(a) if !a.replayed => return Some(a),
                Ok(a) => match fetch(conn, project, &a.vm_id).await {
                    Ok(Some(_)) => return Some(a),
                    Ok(None) => continue,
                    Err(e) => {
                        diag::report(diags, &e, &AttributePath::root());
                        return None;
                    }
                },
                Err(e) => {
                    diag::report(diags, &e, &AttributePath::root());
                    return None;
                }
            }
        }
        diag::root_error(
            diags,
            "Too many earlier VMs with this configuration",
            format!(
                "{MAX_KEY_SEQUENCE} earlier creates with the same planned values were found deleted; change a value (for example a tag) to create a new one"
            ),
        );
        None
    }

    /// Plans what HCP can check before applying: a `user_data` in a zone without cloud-init.
    async fn plan_checks(&self, diags: &mut Diagnostics, conn: &Connection, planned: &VmState) {
        if !planned.user_data.is_value() || planned.zone.is_unknown() {
            return;
        }
        let zone = known(&planned.zone);
        match conn.client.capabilities(zone.as_deref()).await {
            Ok(c) if !c.cloud_init => diag::error(
                diags,
                "Not supported by the hypervisor (FEATURE_NOT_SUPPORTED)",
                match &zone {
                    Some(z) => format!(
                        "user_data: no host in zone `{z}` passes cloud-init user-data to VMs; remove user_data or choose another zone"
                    ),
                    None => {
                        "user_data: no host passes cloud-init user-data to VMs; remove user_data"
                            .to_string()
                    }
                },
                AttributePath::new("user_data"),
            ),
            Ok(_) => {}
            Err(e) => diag::report(diags, &e, &AttributePath::new("zone")),
        }
    }
}

/// The typed operations behind [`Resource`]; a failed create answers `None` (no VM).
impl VmResource {
    async fn read_vm(
        &self,
        diags: &mut Diagnostics,
        state: VmState,
        private_state: ValueEmpty,
    ) -> Option<(VmState, ValueEmpty)> {
        let conn = self.shared.get(diags)?;
        let (Value::Value(project), Value::Value(id)) = (&state.project, &state.id) else {
            // Nothing was created (an interrupted create keeps no id): the resource is gone.
            return None;
        };
        match fetch(&conn, project, &VmId::new(id.clone())).await {
            Ok(Some(vm)) => {
                let mut next = state.clone();
                next.refresh(&vm);
                Some((next, private_state))
            }
            Ok(None) => None,
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                Some((state, private_state))
            }
        }
    }

    async fn plan_create_vm(
        &self,
        diags: &mut Diagnostics,
        proposed: VmState,
        config: VmState,
    ) -> Option<(VmState, ValueEmpty)> {
        validate_static(diags, &config);
        let conn = self.shared.get(diags)?;
        let mut planned = proposed;
        if planned.project.is_null() {
            planned.project = Value::Value(self.project_of(diags, &conn, &config)?);
        }
        if planned.desired_power.is_null() {
            planned.desired_power = Value::Value("running".into());
        }
        planned.unknown_computed(&config);
        self.plan_checks(diags, &conn, &planned).await;
        Some((planned, ValueEmpty::default()))
    }

    async fn plan_update_vm(
        &self,
        diags: &mut Diagnostics,
        prior: VmState,
        proposed: VmState,
        config: VmState,
        private_state: ValueEmpty,
    ) -> Option<(VmState, ValueEmpty, Vec<AttributePath>)> {
        validate_static(diags, &config);
        let mut planned = proposed;
        if config.desired_power.is_null() {
            planned.desired_power = Value::Value("running".into());
        }
        let replace: Vec<AttributePath> = REPLACE_ATTRIBUTES
            .iter()
            .filter(|a| changed(a, &prior, &planned))
            .map(|a| AttributePath::new(*a))
            .collect();
        if !replace.is_empty() {
            planned.unknown_computed(&config);
        } else if planned.desired_power != prior.desired_power {
            planned.power = Value::Unknown;
            planned.state = Value::Unknown;
        }
        Some((planned, private_state, replace))
    }

    async fn create_vm(
        &self,
        diags: &mut Diagnostics,
        planned: VmState,
        config: VmState,
        private_state: ValueEmpty,
    ) -> Option<(VmState, ValueEmpty)> {
        let conn = self.shared.get(diags)?;
        if !config.inputs_known() {
            diag::root_error(
                diags,
                "hcp_vm: some inputs are still unknown at apply time",
                "",
            );
            return None;
        }
        let project = self.project_of(diags, &conn, &planned)?;
        let spec = match planned.spec(&config) {
            Ok(s) => s,
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                return None;
            }
        };
        let desired_power = known(&planned.desired_power).unwrap_or_else(|| "running".into());
        let accepted = self
            .submit_create(diags, &conn, &project, &spec, &desired_power)
            .await?;
        let mut state = planned.clone();
        state.project = Value::Value(project.clone());
        state.id = Value::Value(accepted.vm_id.to_string());
        let deadline = tokio::time::Instant::now() + conn.timeouts.create;
        let created = wait_ok(diags, &conn, &accepted, conn.timeouts.create).await;
        if created && desired_power == "stopped" {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            set_power(diags, &conn, &project, &accepted.vm_id, "stopped", left).await;
        }
        match fetch(&conn, &project, &accepted.vm_id).await {
            Ok(Some(vm)) => state.observe(&vm),
            Ok(None) => {
                diag::root_error(
                    diags,
                    "The VM disappeared",
                    format!(
                        "VM `{}` was deleted while it was being created",
                        accepted.vm_id
                    ),
                );
                return None;
            }
            Err(e) => diag::report(diags, &e, &AttributePath::root()),
        }
        // The state must hold known values even when the VM failed (Terraform taints it).
        for v in [
            &mut state.power,
            &mut state.state,
            &mut state.created,
            &mut state.zone,
        ] {
            if v.is_unknown() {
                *v = Value::Null;
            }
        }
        for v in [&mut state.vcpus, &mut state.memory_mib, &mut state.disk_gib] {
            if v.is_unknown() {
                *v = Value::Null;
            }
        }
        Some((state, private_state))
    }

    async fn update_vm(
        &self,
        diags: &mut Diagnostics,
        prior: VmState,
        planned: VmState,
        private_state: ValueEmpty,
    ) -> Option<(VmState, ValueEmpty)> {
        let conn = self.shared.get(diags)?;
        let project = self.project_of(diags, &conn, &prior)?;
        let Value::Value(id) = &prior.id else {
            diag::root_error(diags, "hcp_vm: the state has no VM id", "");
            return None;
        };
        let vm_id = VmId::new(id.clone());
        let wanted = known(&planned.desired_power).unwrap_or_else(|| "running".into());
        if planned.desired_power != prior.desired_power
            && !set_power(
                diags,
                &conn,
                &project,
                &vm_id,
                &wanted,
                conn.timeouts.update,
            )
            .await
        {
            return None;
        }
        if planned.tags != prior.tags
            && !set_tags(
                diags,
                &conn,
                &project,
                &vm_id,
                &tag_patch(&prior.tags, &planned.tags),
            )
            .await
        {
            return None;
        }
        let mut state = planned;
        match fetch(&conn, &project, &vm_id).await {
            Ok(Some(vm)) => {
                state.observe(&vm);
                Some((state, private_state))
            }
            Ok(None) => {
                diag::root_error(
                    diags,
                    "The VM is gone",
                    format!("VM `{vm_id}` was deleted outside Terraform; apply again to create it"),
                );
                None
            }
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                None
            }
        }
    }

    async fn destroy_vm(&self, diags: &mut Diagnostics, prior: VmState) -> Option<()> {
        let conn = self.shared.get(diags)?;
        let project = self.project_of(diags, &conn, &prior)?;
        let Value::Value(id) = &prior.id else {
            return Some(());
        };
        let vm_id = VmId::new(id.clone());
        match conn.client.delete_vm(&project, &vm_id, true, None).await {
            Ok(a) => wait_ok(diags, &conn, &a, conn.timeouts.delete)
                .await
                .then_some(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Some(()),
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                None
            }
        }
    }

    async fn import_vm(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(VmState, ValueEmpty)> {
        let conn = self.shared.get(diags)?;
        let Some((project, vm)) = id
            .split_once('/')
            .filter(|(p, v)| !p.is_empty() && !v.is_empty() && !v.contains('/'))
        else {
            diag::root_error(
                diags,
                "Invalid import id",
                format!(
                    "`{}` is not PROJECT/VM_ID (e.g. team-a/vm-0190...)",
                    hcp_core::error::echo(&id)
                ),
            );
            return None;
        };
        let vm_id = VmId::new(vm.to_string());
        match fetch(&conn, project, &vm_id).await {
            Ok(Some(found)) => {
                let mut state = VmState::default();
                state.refresh(&found);
                Some((state, ValueEmpty::default()))
            }
            Ok(None) => {
                diag::root_error(
                    diags,
                    "Cannot import a VM that does not exist",
                    format!("HCP has no VM `{vm_id}` in project `{project}`"),
                );
                None
            }
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                None
            }
        }
    }
}

#[async_trait]
impl Resource for VmResource {
    // A null object is how a failed create tells Terraform that no VM exists.
    type State<'a> = Value<VmState>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeConstraint::{Computed, Optional, OptionalComputed, Required};
        use AttributeType::{List, Map, Number, String as Str};
        let mut attrs = vec![
            ("id", attr(Str, "HCP's VM id.", Computed)),
            (
                "project",
                attr(
                    Str,
                    "The project; the provider's `project` when unset. Changing it forces a new VM.",
                    OptionalComputed,
                ),
            ),
            (
                "name",
                attr(
                    Str,
                    "The VM name, unique in its project: 1-63 characters of a-z, 0-9 and '-', starting with a letter. Changing it forces a new VM.",
                    Required,
                ),
            ),
            (
                "image",
                attr(
                    Str,
                    "The catalog image (see data.hcp_images). Changing it forces a new VM.",
                    Required,
                ),
            ),
            (
                "flavor",
                attr(
                    Str,
                    "The catalog flavor (see data.hcp_flavors); without one, give vcpus, memory_mib and disk_gib. Changing it forces a new VM.",
                    Optional,
                ),
            ),
            (
                "vcpus",
                attr(
                    Number,
                    "vCPUs, overriding the flavor's; the resolved value when unset. Changing it forces a new VM.",
                    OptionalComputed,
                ),
            ),
            (
                "memory_mib",
                attr(
                    Number,
                    "Memory in MiB, overriding the flavor's; the resolved value when unset. Changing it forces a new VM.",
                    OptionalComputed,
                ),
            ),
            (
                "disk_gib",
                attr(
                    Number,
                    "Disk in GiB, overriding the flavor's; the resolved value when unset. Changing it forces a new VM.",
                    OptionalComputed,
                ),
            ),
            (
                "zone",
                attr(
                    Str,
                    "The placement zone (see data.hcp_zones); HCP's choice when unset. Changing it forces a new VM.",
                    OptionalComputed,
                ),
            ),
            (
                "networks",
                attr(
                    List(Box::new(Str)),
                    "Catalog networks to attach, in order. Changing them forces a new VM.",
                    Optional,
                ),
            ),
            (
                "tags",
                attr(
                    Map(Box::new(Str)),
                    "Tags, changed in place (a conditional PATCH of HCP's record of the VM).",
                    Optional,
                ),
            ),
            (
                "server_group",
                attr(
                    Str,
                    "The server group to create the VM into (an `hcp_server_group`'s id): HCP places it by the group's policy, and refuses a create a hard policy cannot meet. Changing it forces a new VM.",
                    Optional,
                ),
            ),
            (
                "desired_power",
                attr(
                    Str,
                    "`running` (default) or `stopped`; changed in place. A VM stopped or started outside Terraform shows here as drift.",
                    OptionalComputed,
                ),
            ),
            (
                "power",
                attr(Str, "The power state HCP last observed.", Computed),
            ),
            (
                "state",
                attr(
                    Str,
                    "HCP's lifecycle state: PENDING, ACTIVE, ERROR or DELETED.",
                    Computed,
                ),
            ),
            (
                "created",
                attr(Str, "When HCP accepted the VM (RFC 3339).", Computed),
            ),
        ];
        attrs.push((
            "user_data",
            Attribute {
                sensitive: true,
                ..attr(
                    Str,
                    "Cloud-init user-data (needs the cloud_init capability). HCP never returns it, so a VM imported with user-data shows it as a change. Changing it forces a new VM.",
                    Optional,
                )
            },
        ));
        Some(schema(
            "A VM in HCP. Power and tag changes are in place; every other change forces a new VM.",
            attrs,
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Value<VmState>) -> Option<()> {
        if let Value::Value(config) = &config {
            validate_static(diags, config);
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Value<VmState>,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(Value<VmState>, ValueEmpty)> {
        let state = state.as_option()?;
        self.read_vm(diags, state, private_state)
            .await
            .map(|(s, p)| (Value::Value(s), p))
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed: Value<VmState>,
        config: Value<VmState>,
        _meta: ValueEmpty,
    ) -> Option<(Value<VmState>, ValueEmpty)> {
        self.plan_create_vm(
            diags,
            proposed.unwrap_or_default(),
            config.unwrap_or_default(),
        )
        .await
        .map(|(s, p)| (Value::Value(s), p))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Value<VmState>,
        proposed: Value<VmState>,
        config: Value<VmState>,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(Value<VmState>, ValueEmpty, Vec<AttributePath>)> {
        self.plan_update_vm(
            diags,
            prior.unwrap_or_default(),
            proposed.unwrap_or_default(),
            config.unwrap_or_default(),
            private_state,
        )
        .await
        .map(|(s, p, r)| (Value::Value(s), p, r))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Value<VmState>,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(private_state)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Value<VmState>,
        config: Value<VmState>,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(Value<VmState>, ValueEmpty)> {
        Some(
            match self
                .create_vm(
                    diags,
                    planned.unwrap_or_default(),
                    config.unwrap_or_default(),
                    private_state,
                )
                .await
            {
                Some((s, p)) => (Value::Value(s), p),
                None => (Value::Null, ValueEmpty::default()),
            },
        )
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Value<VmState>,
        planned: Value<VmState>,
        _config: Value<VmState>,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(Value<VmState>, ValueEmpty)> {
        let prior = prior.unwrap_or_default();
        // A failed update leaves the VM as it was: keep the prior state.
        Some(
            match self
                .update_vm(
                    diags,
                    prior.clone(),
                    planned.unwrap_or_default(),
                    private_state,
                )
                .await
            {
                Some((s, p)) => (Value::Value(s), p),
                None => (Value::Value(prior), ValueEmpty::default()),
            },
        )
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Value<VmState>,
        _private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        match prior {
            Value::Value(prior) => self.destroy_vm(diags, prior).await,
            _ => Some(()),
        }
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Value<VmState>, ValueEmpty)> {
        self.import_vm(diags, id)
            .await
            .map(|(s, p)| (Value::Value(s), p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned() -> VmState {
        VmState {
            project: Value::Value("demo".into()),
            name: Value::Value("web-1".into()),
            image: Value::Value("ubuntu-24.04".into()),
            flavor: Value::Value("small".into()),
            tags: Value::Value(BTreeMap::from([(
                "team".to_string(),
                Value::Value("a".to_string()),
            )])),
            desired_power: Value::Value("running".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_key_follows_the_planned_values() {
        let p = planned();
        let spec = p.spec(&p).unwrap();
        let a = idempotency_key("demo", &spec, "running", 0);
        assert_eq!(a, idempotency_key("demo", &spec, "running", 0));
        assert!(a.starts_with("tf-") && a.ends_with("-0"), "{a}");
        assert!(a.len() <= 255);
        assert_ne!(a, idempotency_key("demo", &spec, "running", 1));
        assert_ne!(a, idempotency_key("other", &spec, "running", 0));
        assert_ne!(a, idempotency_key("demo", &spec, "stopped", 0));
        let mut other = spec.clone();
        other.image = "debian-12".into();
        assert_ne!(a, idempotency_key("demo", &other, "running", 0));
        let mut ud = spec.clone();
        ud.user_data = Some("#cloud-config\n".into());
        let k = idempotency_key("demo", &ud, "running", 0);
        assert!(!k.contains("cloud"), "the key never carries user-data: {k}");
        assert_ne!(a, k);
    }

    #[test]
    fn the_spec_takes_sizes_and_zone_from_the_configuration_only() {
        let mut state = planned();
        state.vcpus = Value::Value(1);
        state.zone = Value::Value("east".into());
        let config = planned();
        let spec = state.spec(&config).unwrap();
        assert_eq!(spec.vcpus, None);
        assert_eq!(spec.zone, None);
        assert_eq!(spec.tags.get("team").map(String::as_str), Some("a"));
        let mut bad = planned();
        bad.vcpus = Value::Value(-1);
        assert_eq!(state.spec(&bad).unwrap_err().field(), Some("vcpus"));
    }

    fn tenant_vm(power: PowerState) -> TenantVm {
        let spec = VmSpec::new("web-1", "ubuntu-24.04", "small").with_tag("team", "a");
        TenantVm {
            id: VmId::new("vm-1"),
            project: hcp_core::ProjectId::new("demo"),
            name: spec.name.clone(),
            spec,
            has_user_data: false,
            resources: hcp_core::Resources {
                vcpus: 1,
                memory_mib: 1024,
                disk_gib: 10,
            },
            zone: "east".into(),
            state: DesiredState::Active,
            power,
            desired_power: PowerState::Running,
            last_error: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn refresh_shows_power_drift_and_keeps_the_configured_forms() {
        let mut state = planned();
        state.networks = Value::Value(Vec::new());
        state.refresh(&tenant_vm(PowerState::Stopped));
        assert_eq!(state.desired_power, Value::Value("stopped".into()));
        assert_eq!(state.power, Value::Value("stopped".into()));
        assert_eq!(state.networks, Value::Value(Vec::new()), "[] stays []");
        assert_eq!(state.vcpus, Value::Value(1));
        assert_eq!(state.state, Value::Value("ACTIVE".into()));
        let mut imported = VmState::default();
        imported.refresh(&tenant_vm(PowerState::Running));
        assert_eq!(imported.networks, Value::Null, "none stays null");
        assert_eq!(imported.desired_power, Value::Value("running".into()));
        assert_eq!(imported.flavor, Value::Value("small".into()));
        assert_eq!(imported.id, Value::Value("vm-1".into()));
        assert!(matches!(&imported.tags, Value::Value(t) if t.len() == 1));
    }

    #[test]
    fn the_tag_patch_sets_changed_and_removes_dropped_keys() {
        let tags = |pairs: &[(&str, &str)]| {
            Value::Value(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::Value(v.to_string())))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let patch = tag_patch(
            &tags(&[("keep", "1"), ("change", "a"), ("drop", "x")]),
            &tags(&[("keep", "1"), ("change", "b"), ("new", "n")]),
        );
        assert_eq!(
            patch,
            BTreeMap::from([
                ("change".to_string(), Some("b".to_string())),
                ("drop".to_string(), None),
                ("new".to_string(), Some("n".to_string())),
            ])
        );
        assert_eq!(
            tag_patch(&Value::Null, &tags(&[("a", "1")])).len(),
            1,
            "from no tags"
        );
        assert_eq!(tag_patch(&tags(&[("a", "1")]), &Value::Null)["a"], None);
    }

    #[test]
    fn static_validation_names_the_attribute() {
        let mut config = planned();
        config.name = Value::Value("Bad_Name".into());
        config.desired_power = Value::Value("sleeping".into());
        let mut diags = Diagnostics::default();
        validate_static(&mut diags, &config);
        let paths: Vec<String> = diags
            .errors
            .iter()
            .map(|d| d.attribute.to_string())
            .collect();
        assert_eq!(paths, ["name", "desired_power"], "{diags:?}");
        // Unknown values are not checked.
        let mut later = planned();
        later.name = Value::Unknown;
        let mut diags = Diagnostics::default();
        validate_static(&mut diags, &later);
        assert!(diags.errors.is_empty(), "{diags:?}");
    }

    #[test]
    fn without_a_flavor_every_size_is_required() {
        let mut config = planned();
        config.flavor = Value::Null;
        config.vcpus = Value::Value(2);
        let mut diags = Diagnostics::default();
        validate_static(&mut diags, &config);
        let paths: Vec<String> = diags
            .errors
            .iter()
            .map(|d| d.attribute.to_string())
            .collect();
        assert_eq!(paths, ["memory_mib", "disk_gib"]);
    }

    #[tokio::test]
    async fn a_changed_image_forces_replacement_and_power_does_not() {
        let r = VmResource::new(Shared::default());
        let mut prior = planned();
        prior.id = Value::Value("vm-1".into());
        prior.power = Value::Value("running".into());
        let mut proposed = prior.clone();
        proposed.image = Value::Value("debian-12".into());
        let mut diags = Diagnostics::default();
        let (plan, _, replace) = r
            .plan_update_vm(
                &mut diags,
                prior.clone(),
                proposed,
                planned(),
                ValueEmpty::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            replace.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["image"]
        );
        assert!(plan.id.is_unknown());

        let mut proposed = prior.clone();
        proposed.desired_power = Value::Value("stopped".into());
        let mut config = planned();
        config.desired_power = Value::Value("stopped".into());
        let (plan, _, replace) = r
            .plan_update_vm(
                &mut diags,
                prior.clone(),
                proposed,
                config,
                ValueEmpty::default(),
            )
            .await
            .unwrap();
        assert!(replace.is_empty());
        assert!(plan.power.is_unknown());
        assert_eq!(plan.id, prior.id);
        assert!(diags.errors.is_empty(), "{diags:?}");
    }
}
