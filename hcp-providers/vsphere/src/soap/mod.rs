//! A small typed vim25 SOAP layer: request bodies for exactly the calls HCP makes, and typed
//! readers of their replies and faults. It does no I/O; [`crate::client`] sends what it writes.
//!
//! Every request is one `<Method xmlns="urn:vim25">` element inside a SOAP 1.1 envelope; every
//! reply is `<MethodResponse>` with zero or more `<returnval>`, or a `<soapenv:Fault>` whose
//! `<detail>` holds the vim25 fault (`<InvalidPowerStateFault xsi:type="InvalidPowerState">`).

pub mod xml;

use std::fmt;

pub use xml::{Node, Writer};

/// The vim25 release HCP speaks (`SOAPAction: urn:vim25/6.5`).
pub const API_VERSION: &str = "6.5";

/// A managed object reference: its type and its id (`VirtualMachine`, `vm-42`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MoRef {
    /// The managed object type.
    pub kind: String,
    /// The id, unique within the type.
    pub value: String,
}

impl fmt::Debug for MoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl MoRef {
    /// Builds a reference.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        MoRef {
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// Reads a reference element; `None` when it has no type.
    pub fn from_node(n: &Node) -> Option<Self> {
        let kind = n.mo_type.clone().or_else(|| n.xsi_type.clone())?;
        (!n.text.is_empty()).then(|| MoRef::new(kind, n.text.clone()))
    }
}

/// Wraps a request body in a SOAP envelope.
pub fn envelope(body: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
            r#"xmlns:xsd="http://www.w3.org/2001/XMLSchema" "#,
            r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
            "<soapenv:Body>{}</soapenv:Body></soapenv:Envelope>"
        ),
        body
    )
}

/// Starts the body of a call of `method` on `this`.
pub fn call(method: &str, this: &MoRef) -> Writer {
    let mut w = Writer::new();
    w.open(&format!("{method} xmlns=\"urn:vim25\""));
    w.moref("_this", this);
    w
}

/// A vim25 fault: its type (`InvalidPowerState`) and the server's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The fault type, from the detail's `xsi:type` or element name; empty when none was given.
    pub kind: String,
    /// `faultstring`, or a task error's `localizedMessage`.
    pub message: String,
    /// The property a fault names (`InvalidArgument.invalidProperty`), when it names one.
    pub property: Option<String>,
}

impl Fault {
    /// Reads a `<soapenv:Fault>` element.
    pub fn from_soap(f: &Node) -> Fault {
        let detail = f.child("detail").and_then(|d| d.children.first());
        Fault::from_parts(detail, f.text_of("faultstring").unwrap_or(""))
    }

    /// Reads a task's `LocalizedMethodFault` (`info.error`).
    pub fn from_localized(e: &Node) -> Fault {
        Fault::from_parts(
            e.child("fault"),
            e.text_of("localizedMessage").unwrap_or(""),
        )
    }

    fn from_parts(detail: Option<&Node>, message: &str) -> Fault {
        let kind = detail
            .map(|d| {
                d.xsi_type
                    .clone()
                    .unwrap_or_else(|| d.name.trim_end_matches("Fault").to_string())
            })
            .unwrap_or_default();
        let property = detail
            .and_then(|d| {
                d.text_of("invalidProperty")
                    .or_else(|| d.text_of("property"))
            })
            .map(str::to_string);
        Fault {
            kind,
            message: message.trim().to_string(),
            property,
        }
    }
}

/// What a reply held: its `returnval`s, or a fault.
pub fn decode(doc: &[u8]) -> Result<Result<Vec<Node>, Fault>, String> {
    let root = xml::parse(doc)?;
    let body = root
        .child("Body")
        .ok_or("the reply is not a SOAP envelope (no Body)")?;
    if let Some(f) = body.child("Fault") {
        return Ok(Err(Fault::from_soap(f)));
    }
    let response = body
        .children
        .first()
        .ok_or("the SOAP reply's Body is empty")?;
    Ok(Ok(response
        .children
        .iter()
        .filter(|c| c.name == "returnval")
        .cloned()
        .collect()))
}

/// The service's entry points (`RetrieveServiceContent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContent {
    /// The inventory's root folder.
    pub root_folder: MoRef,
    /// The property collector.
    pub property_collector: MoRef,
    /// The view manager.
    pub view_manager: MoRef,
    /// The session manager.
    pub session_manager: MoRef,
    /// The API version the server reports.
    pub api_version: String,
}

impl ServiceContent {
    /// The root object every session starts from.
    pub fn instance() -> MoRef {
        MoRef::new("ServiceInstance", "ServiceInstance")
    }

    /// Reads the reply's `returnval`.
    pub fn from_node(n: &Node) -> Option<Self> {
        let r = |k: &str| n.child(k).and_then(MoRef::from_node);
        Some(ServiceContent {
            root_folder: r("rootFolder")?,
            property_collector: r("propertyCollector")?,
            view_manager: r("viewManager")?,
            session_manager: r("sessionManager")?,
            api_version: n
                .at(&["about", "apiVersion"])
                .map(|v| v.text.clone())
                .unwrap_or_default(),
        })
    }
}

/// One object of a property read, with the properties asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectContent {
    /// The object.
    pub obj: MoRef,
    /// Property path → value.
    pub props: Vec<(String, Node)>,
}

impl ObjectContent {
    /// Reads an `objects` element.
    pub fn from_node(n: &Node) -> Option<Self> {
        let obj = MoRef::from_node(n.child("obj")?)?;
        let props = n
            .all("propSet")
            .filter_map(|p| Some((p.text_of("name")?.to_string(), p.child("val")?.clone())))
            .collect();
        Some(ObjectContent { obj, props })
    }

    /// Returns a property's value.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.props.iter().find(|(k, _)| k == path).map(|(_, v)| v)
    }

    /// Returns a property's text.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.get(path).map(|v| v.text.as_str())
    }

    /// Returns a property's managed object reference.
    pub fn moref(&self, path: &str) -> Option<MoRef> {
        self.get(path).and_then(MoRef::from_node)
    }

    /// Returns the references of an `ArrayOfManagedObjectReference` property.
    pub fn morefs(&self, path: &str) -> Vec<MoRef> {
        self.get(path)
            .map(|v| v.children.iter().filter_map(MoRef::from_node).collect())
            .unwrap_or_default()
    }
}

/// One page of `RetrievePropertiesEx` / `ContinueRetrievePropertiesEx`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetrieveResult {
    /// The objects of this page.
    pub objects: Vec<ObjectContent>,
    /// The token of the next page, when there is one.
    pub token: Option<String>,
}

impl RetrieveResult {
    /// Reads the reply's `returnval`s (none when nothing matched).
    pub fn from_returnvals(vals: &[Node]) -> Self {
        let Some(v) = vals.first() else {
            return RetrieveResult::default();
        };
        RetrieveResult {
            objects: v
                .all("objects")
                .filter_map(ObjectContent::from_node)
                .collect(),
            token: v
                .text_of("token")
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        }
    }
}

/// A property read over a container view: for each type, the property paths wanted.
pub fn retrieve_over_view(
    pc: &MoRef,
    view: &MoRef,
    props: &[(&str, &[&str])],
    max_objects: u32,
) -> String {
    let mut w = call("RetrievePropertiesEx", pc);
    w.open("specSet");
    for (kind, paths) in props {
        w.open("propSet").el("type", kind).el("all", "false");
        for p in *paths {
            w.el("pathSet", p);
        }
        w.close("propSet");
    }
    w.open("objectSet")
        .moref("obj", view)
        .el("skip", "true")
        .open_typed("selectSet", "TraversalSpec")
        .el("name", "view")
        .el("type", "ContainerView")
        .el("path", "view")
        .el("skip", "false")
        .close("selectSet")
        .close("objectSet");
    w.close("specSet");
    w.open("options")
        .el("maxObjects", max_objects)
        .close("options");
    w.close("RetrievePropertiesEx");
    w.finish()
}

/// A property read of one object.
pub fn retrieve_one(pc: &MoRef, obj: &MoRef, paths: &[&str]) -> String {
    let mut w = call("RetrievePropertiesEx", pc);
    w.open("specSet")
        .open("propSet")
        .el("type", &obj.kind)
        .el("all", "false");
    for p in paths {
        w.el("pathSet", p);
    }
    w.close("propSet")
        .open("objectSet")
        .moref("obj", obj)
        .el("skip", "false")
        .close("objectSet")
        .close("specSet")
        .open("options")
        .close("options")
        .close("RetrievePropertiesEx");
    w.finish()
}

/// The next page of a paged property read.
pub fn continue_retrieve(pc: &MoRef, token: &str) -> String {
    let mut w = call("ContinueRetrievePropertiesEx", pc);
    w.el("token", token).close("ContinueRetrievePropertiesEx");
    w.finish()
}

/// A filter on `obj`'s `paths`, for `WaitForUpdatesEx`.
pub fn create_filter(pc: &MoRef, obj: &MoRef, paths: &[&str]) -> String {
    let mut w = call("CreateFilter", pc);
    w.open("spec")
        .open("propSet")
        .el("type", &obj.kind)
        .el("all", "false");
    for p in paths {
        w.el("pathSet", p);
    }
    w.close("propSet")
        .open("objectSet")
        .moref("obj", obj)
        .el("skip", "false")
        .close("objectSet")
        .close("spec")
        .el("partialUpdates", "false")
        .close("CreateFilter");
    w.finish()
}

/// Waits up to `max_wait_secs` for changes after `version` (empty: the first, full update).
pub fn wait_for_updates(pc: &MoRef, version: &str, max_wait_secs: u32) -> String {
    let mut w = call("WaitForUpdatesEx", pc);
    if !version.is_empty() {
        w.el("version", version);
    }
    w.open("options")
        .el("maxWaitSeconds", max_wait_secs)
        .close("options")
        .close("WaitForUpdatesEx");
    w.finish()
}

/// The changes one `WaitForUpdatesEx` reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateSet {
    /// The version to wait after next.
    pub version: String,
    /// Property path → new value (`None` when removed), in order.
    pub changes: Vec<(String, Option<Node>)>,
}

impl UpdateSet {
    /// Reads the reply; `None` when the wait timed out without a change.
    pub fn from_returnvals(vals: &[Node]) -> Option<Self> {
        let v = vals.first()?;
        let mut changes = Vec::new();
        for fs in v.all("filterSet") {
            for os in fs.all("objectSet") {
                for c in os.all("changeSet") {
                    if let Some(name) = c.text_of("name") {
                        changes.push((name.to_string(), c.child("val").cloned()));
                    }
                }
            }
        }
        Some(UpdateSet {
            version: v.text_of("version").unwrap_or("").to_string(),
            changes,
        })
    }
}

/// A task's state as `info` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// `queued`, `running`, `success` or `error`.
    pub state: String,
    /// Percent done, when reported.
    pub progress: Option<u8>,
    /// The task's current description (`info.description.message`).
    pub message: Option<String>,
    /// The result (a reference for clone and snapshot tasks).
    pub result: Option<Node>,
    /// The fault of a failed task.
    pub error: Option<Fault>,
}

impl TaskInfo {
    /// Reads a `TaskInfo` value.
    pub fn from_node(n: &Node) -> Self {
        TaskInfo {
            state: n.text_of("state").unwrap_or("").to_string(),
            progress: n
                .text_of("progress")
                .and_then(|p| p.parse::<u32>().ok())
                .map(|p| u8::try_from(p.min(100)).unwrap_or(100)),
            message: n
                .at(&["description", "message"])
                .map(|m| m.text.clone())
                .filter(|m| !m.is_empty()),
            result: n.child("result").cloned(),
            error: n.child("error").map(Fault::from_localized),
        }
    }

    /// True once the task has ended.
    pub fn done(&self) -> bool {
        self.state == "success" || self.state == "error"
    }
}

/// One `OptionValue` of `config.extraConfig` (string values only).
pub fn extra_config(n: &Node) -> Vec<(String, String)> {
    n.children
        .iter()
        .filter_map(|o| {
            Some((
                o.text_of("key")?.to_string(),
                o.text_of("value")?.to_string(),
            ))
        })
        .collect()
}

/// A call that takes only `_this` (`PowerOffVM_Task`, `Destroy_Task`, `ShutdownGuest`, ...).
pub fn simple(method: &str, this: &MoRef) -> String {
    let mut w = call(method, this);
    w.close(method);
    w.finish()
}

/// `Login` on the session manager. The body holds the password: it is sent, never logged.
pub fn login(session_manager: &MoRef, user: &str, password: &str) -> String {
    let mut w = call("Login", session_manager);
    w.el("userName", user)
        .el("password", password)
        .close("Login");
    w.finish()
}

/// A container view of `types` over everything below `container`.
pub fn create_container_view(view_manager: &MoRef, container: &MoRef, types: &[&str]) -> String {
    let mut w = call("CreateContainerView", view_manager);
    w.moref("container", container);
    for t in types {
        w.el("type", t);
    }
    w.el("recursive", "true").close("CreateContainerView");
    w.finish()
}

/// A NIC to add: a port group by reference, standard or distributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicBacking {
    /// A standard port group (`Network`): its name and reference.
    Standard {
        /// The port group's name.
        name: String,
        /// Its reference.
        network: MoRef,
    },
    /// A distributed port group: its switch's uuid and its key.
    Distributed {
        /// The distributed switch's uuid.
        switch_uuid: String,
        /// The port group's key.
        portgroup_key: String,
    },
}

/// What a `ReconfigVM_Task` or a clone's config spec changes; `None` leaves a value alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSpec {
    /// vCPUs.
    pub num_cpus: Option<u32>,
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
    /// Devices to remove (as read from `config.hardware.device`).
    pub remove: Vec<Node>,
    /// Devices to edit (as read, with changes made).
    pub edit: Vec<Node>,
    /// NICs to add.
    pub add_nics: Vec<NicBacking>,
    /// `extraConfig` entries to set.
    pub extra: Vec<(String, String)>,
}

impl ConfigSpec {
    /// True when the spec changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == ConfigSpec::default()
    }

    fn write(&self, w: &mut Writer) {
        if let Some(n) = self.num_cpus {
            w.el("numCPUs", n);
        }
        if let Some(m) = self.memory_mb {
            w.el("memoryMB", m);
        }
        for d in &self.remove {
            w.open("deviceChange")
                .el("operation", "remove")
                .node_as("device", d)
                .close("deviceChange");
        }
        for d in &self.edit {
            w.open("deviceChange")
                .el("operation", "edit")
                .node_as("device", d)
                .close("deviceChange");
        }
        for (i, nic) in self.add_nics.iter().enumerate() {
            // Negative keys name devices that do not exist yet.
            let key = -100 - i64::try_from(i).unwrap_or(0);
            w.open("deviceChange")
                .el("operation", "add")
                .open_typed("device", "VirtualVmxnet3")
                .el("key", key);
            match nic {
                NicBacking::Standard { name, network } => {
                    w.open_typed("backing", "VirtualEthernetCardNetworkBackingInfo")
                        .el("deviceName", name)
                        .moref("network", network)
                        .close("backing");
                }
                NicBacking::Distributed {
                    switch_uuid,
                    portgroup_key,
                } => {
                    w.open_typed(
                        "backing",
                        "VirtualEthernetCardDistributedVirtualPortBackingInfo",
                    )
                    .open("port")
                    .el("switchUuid", switch_uuid)
                    .el("portgroupKey", portgroup_key)
                    .close("port")
                    .close("backing");
                }
            }
            w.open("connectable")
                .el("startConnected", "true")
                .el("allowGuestControl", "true")
                .el("connected", "true")
                .close("connectable")
                .el("addressType", "generated")
                .close("device")
                .close("deviceChange");
        }
        for (k, v) in &self.extra {
            w.open_typed("extraConfig", "OptionValue")
                .el("key", k)
                .typed_el("value", "xsd:string", v)
                .close("extraConfig");
        }
    }
}

/// Where a clone goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The resource pool.
    pub pool: MoRef,
    /// The datastore.
    pub datastore: Option<MoRef>,
    /// The host it is pinned to.
    pub host: Option<MoRef>,
}

/// `CloneVM_Task` of `template` into `folder` as `name`, powered off, with `config` applied.
pub fn clone_vm(
    template: &MoRef,
    folder: &MoRef,
    name: &str,
    at: &Placement,
    config: &ConfigSpec,
) -> String {
    let mut w = call("CloneVM_Task", template);
    w.moref("folder", folder).el("name", name).open("spec");
    w.open("location");
    if let Some(ds) = &at.datastore {
        w.moref("datastore", ds);
    }
    w.moref("pool", &at.pool);
    if let Some(h) = &at.host {
        w.moref("host", h);
    }
    w.close("location").el("template", "false");
    w.open("config");
    config.write(&mut w);
    w.close("config")
        .el("powerOn", "false")
        .close("spec")
        .close("CloneVM_Task");
    w.finish()
}

/// `PlaceVm` on `cluster`: asks DRS where a clone of `template` named `name`, with `config`
/// (vCPUs, memory), should go. Neither hosts nor datastores are named, so DRS considers every
/// host and datastore of the cluster (govmomi's simulator indexes the named hosts by the
/// cluster's host count, so a subset must never be sent).
pub fn place_vm(
    cluster: &MoRef,
    template: &MoRef,
    pool: &MoRef,
    name: &str,
    config: &ConfigSpec,
) -> String {
    let mut w = call("PlaceVm", cluster);
    w.open("placementSpec").moref("vm", template);
    w.open("configSpec");
    config.write(&mut w);
    w.close("configSpec").el("placementType", "clone");
    w.open("cloneSpec")
        .open("location")
        .moref("pool", pool)
        .close("location")
        .el("template", "false")
        .el("powerOn", "false")
        .close("cloneSpec");
    w.el("cloneName", name)
        .close("placementSpec")
        .close("PlaceVm");
    w.finish()
}

/// Where DRS recommends a new VM go: the first recommendation's first `PlacementAction`'s
/// relocate spec (its `targetHost` when the spec names no host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrsPlacement {
    /// The host DRS chose.
    pub host: MoRef,
    /// The datastore DRS chose, when it named one.
    pub datastore: Option<MoRef>,
    /// The resource pool DRS chose, when it named one.
    pub pool: Option<MoRef>,
}

impl DrsPlacement {
    /// Reads `PlaceVm`'s `returnval` (`PlacementResult`); `None` when it recommends no host.
    pub fn from_returnvals(vals: &[Node]) -> Option<Self> {
        let result = vals.first()?;
        result.all("recommendations").find_map(|rec| {
            rec.all("action").find_map(|action| {
                let spec = action.child("relocateSpec");
                let host = spec
                    .and_then(|s| s.child("host"))
                    .or_else(|| action.child("targetHost"))
                    .and_then(MoRef::from_node)?;
                Some(DrsPlacement {
                    host,
                    datastore: spec
                        .and_then(|s| s.child("datastore"))
                        .and_then(MoRef::from_node),
                    pool: spec
                        .and_then(|s| s.child("pool"))
                        .and_then(MoRef::from_node),
                })
            })
        })
    }
}

/// `ReconfigVM_Task` with `config`.
pub fn reconfig(vm: &MoRef, config: &ConfigSpec) -> String {
    let mut w = call("ReconfigVM_Task", vm);
    w.open("spec");
    config.write(&mut w);
    w.close("spec").close("ReconfigVM_Task");
    w.finish()
}

/// `RelocateVM_Task` to `host` in `pool`.
pub fn relocate(vm: &MoRef, host: &MoRef, pool: Option<&MoRef>) -> String {
    let mut w = call("RelocateVM_Task", vm);
    w.open("spec");
    if let Some(p) = pool {
        w.moref("pool", p);
    }
    w.moref("host", host).close("spec").close("RelocateVM_Task");
    w.finish()
}

/// `CreateSnapshot_Task` of the disks only (no memory, no quiescing).
pub fn create_snapshot(vm: &MoRef, name: &str, description: &str) -> String {
    let mut w = call("CreateSnapshot_Task", vm);
    w.el("name", name)
        .el("description", description)
        .el("memory", "false")
        .el("quiesce", "false")
        .close("CreateSnapshot_Task");
    w.finish()
}

/// `RevertToSnapshot_Task` on a snapshot: the VM returns to it (powered on again when the
/// snapshot holds memory state, as vCenter does by default).
pub fn revert_to_snapshot(snapshot: &MoRef) -> String {
    simple("RevertToSnapshot_Task", snapshot)
}

/// `RemoveSnapshot_Task` on a snapshot; with `remove_children` false its children are kept
/// (vCenter re-parents them) and its disk changes are consolidated into them.
pub fn remove_snapshot(snapshot: &MoRef, remove_children: bool) -> String {
    let mut w = call("RemoveSnapshot_Task", snapshot);
    w.el("removeChildren", remove_children)
        .close("RemoveSnapshot_Task");
    w.finish()
}

/// `AcquireTicket` on a VM for a ticket of `ticket_type` (`webmks`).
pub fn acquire_ticket(vm: &MoRef, ticket_type: &str) -> String {
    let mut w = call("AcquireTicket", vm);
    w.el("ticketType", ticket_type).close("AcquireTicket");
    w.finish()
}

/// One snapshot of a VM, read from its `snapshot` property (`VirtualMachineSnapshotTree`) and
/// its `layoutEx.snapshot` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot's managed object (`VirtualMachineSnapshot`), what revert and remove act on.
    pub moref: MoRef,
    /// The name it was taken with (vCenter does not require names to be unique).
    pub name: String,
    /// `createTime`, when it parses as RFC 3339.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// vCenter's per-VM sequence number (`id`), which orders snapshots of one instant.
    pub id: i64,
    /// The VM's power state when it was taken (`poweredOn`, `poweredOff`, `suspended`).
    pub state: String,
    /// True when it holds the VM's memory state (see [`snapshots`]).
    pub memory: bool,
}

/// Flattens a VM's snapshot tree (the `snapshot` property, a `VirtualMachineSnapshotInfo`)
/// into a list, oldest first (by `createTime`, then `id`). `None` (a VM without snapshots
/// reports no `snapshot` property) gives an empty list.
///
/// # Behavior
/// A snapshot holds memory when the VM was `poweredOn` when it was taken and, where the VM's
/// `layoutEx.snapshot` (`layout`) lists the snapshot, its `memoryKey` names a memory file (it
/// is `-1` for a snapshot of the disks only). The tree is walked without recursion, so a deep
/// chain cannot exhaust the stack.
pub fn snapshots(info: Option<&Node>, layout: Option<&Node>) -> Vec<Snapshot> {
    let memory_keys: Vec<(MoRef, i64)> = layout
        .map(|l| {
            l.children
                .iter()
                .filter_map(|s| {
                    let key = MoRef::from_node(s.child("key")?)?;
                    let memory = s
                        .text_of("memoryKey")
                        .and_then(|k| k.parse::<i64>().ok())
                        .unwrap_or(-1);
                    Some((key, memory))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut stack: Vec<&Node> = info
        .map(|i| i.all("rootSnapshotList").collect())
        .unwrap_or_default();
    while let Some(t) = stack.pop() {
        stack.extend(t.all("childSnapshotList"));
        let Some(moref) = t.child("snapshot").and_then(MoRef::from_node) else {
            continue;
        };
        let state = t.text_of("state").unwrap_or("").to_string();
        let has_memory_file = memory_keys
            .iter()
            .find(|(k, _)| *k == moref)
            .is_none_or(|(_, m)| *m >= 0);
        out.push(Snapshot {
            name: t.text_of("name").unwrap_or("").to_string(),
            created_at: t
                .text_of("createTime")
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map(|c| c.with_timezone(&chrono::Utc)),
            id: t.text_of("id").and_then(|i| i.parse().ok()).unwrap_or(0),
            memory: state == "poweredOn" && has_memory_file,
            state,
            moref,
        });
    }
    out.sort_by(|a, b| {
        (a.created_at.is_none(), a.created_at, a.id).cmp(&(
            b.created_at.is_none(),
            b.created_at,
            b.id,
        ))
    });
    out
}

/// What `AcquireTicket` answers (`VirtualMachineTicket`). The ticket is a one-time credential:
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct VmTicket {
    /// The ticket itself.
    pub ticket: String,
    /// The host that serves the console, when vCenter names one.
    pub host: Option<String>,
    /// Its port, when vCenter names one.
    pub port: Option<String>,
    /// SHA-256 thumbprints of the host's certificate (`certThumbprintList`, vSphere 7.0.3 on).
    pub sha256_thumbprints: Vec<String>,
    /// The SHA-1 thumbprint of the host's certificate (`sslThumbprint`).
    pub sha1_thumbprint: Option<String>,
}

impl fmt::Debug for VmTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmTicket")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("sha256_thumbprints", &self.sha256_thumbprints)
            .finish_non_exhaustive()
    }
}

impl VmTicket {
    /// Reads the reply's `returnval`; `None` without a ticket.
    pub fn from_node(n: &Node) -> Option<Self> {
        let text = |k: &str| {
            n.text_of(k)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        Some(VmTicket {
            ticket: text("ticket")?,
            host: text("host"),
            port: text("port"),
            sha256_thumbprints: n
                .all("certThumbprintList")
                .filter(|c| {
                    c.text_of("hashAlgorithm")
                        .is_none_or(|a| a.eq_ignore_ascii_case("sha256"))
                })
                .filter_map(|c| c.text_of("thumbprint"))
                .map(str::to_string)
                .collect(),
            sha1_thumbprint: text("sslThumbprint"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAULT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode>
<faultstring>A specified parameter was not correct: spec.location.pool</faultstring>
<detail><InvalidArgumentFault xmlns="urn:vim25" xsi:type="InvalidArgument"><invalidProperty>spec.location.pool</invalidProperty></InvalidArgumentFault></detail>
</soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;

    #[test]
    fn faults_are_typed() {
        let f = decode(FAULT.as_bytes()).unwrap().unwrap_err();
        assert_eq!(f.kind, "InvalidArgument");
        assert_eq!(f.property.as_deref(), Some("spec.location.pool"));
        assert!(f.message.contains("parameter was not correct"));
        // Without an xsi:type the element name says it.
        let doc = FAULT.replace(r#" xsi:type="InvalidArgument""#, "");
        assert_eq!(
            decode(doc.as_bytes()).unwrap().unwrap_err().kind,
            "InvalidArgument"
        );
    }

    /// The simulator's reply to a read of `snapshot` and `layoutEx.snapshot` (recorded): `s1`
    /// with two children, `s2` and `s3` (taken after a revert to `s1`); its `state` is the VM's
    /// power state whatever `memory` was, and it writes no memory files.
    const VCSIM_TREE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-27</obj><propSet><name>snapshot</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="VirtualMachineSnapshotInfo"><currentSnapshot type="VirtualMachineSnapshot">snapshot-35</currentSnapshot><rootSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-30</snapshot><vm type="VirtualMachine">vm-27</vm><name>s1</name><description>d</description><id>1</id><createTime>2026-12-02T15:27:49.233996912Z</createTime><state>poweredOn</state><quiesced>false</quiesced><childSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-32</snapshot><vm type="VirtualMachine">vm-27</vm><name>s2</name><description>d</description><id>2</id><createTime>2026-12-02T15:27:49.239387152Z</createTime><state>poweredOn</state><quiesced>false</quiesced><replaySupported>false</replaySupported></childSnapshotList><childSnapshotList><snapshot type="VirtualMachineSnapshot">snapshot-35</snapshot><vm type="VirtualMachine">vm-27</vm><name>s3</name><description>d</description><id>3</id><createTime>2026-12-02T15:27:49.447963629Z</createTime><state>poweredOn</state><quiesced>true</quiesced><replaySupported>false</replaySupported></childSnapshotList><replaySupported>false</replaySupported></rootSnapshotList></val></propSet><propSet><name>layoutEx.snapshot</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="ArrayOfVirtualMachineFileLayoutExSnapshotLayout"><VirtualMachineFileLayoutExSnapshotLayout><key type="VirtualMachineSnapshot">snapshot-30</key><dataKey>7</dataKey><memoryKey>-1</memoryKey><disk><key>255511522</key><chain><fileKey>5</fileKey><fileKey>6</fileKey></chain></disk></VirtualMachineFileLayoutExSnapshotLayout><VirtualMachineFileLayoutExSnapshotLayout><key type="VirtualMachineSnapshot">snapshot-32</key><dataKey>8</dataKey><memoryKey>-1</memoryKey><disk><key>255511522</key><chain><fileKey>5</fileKey><fileKey>6</fileKey></chain></disk></VirtualMachineFileLayoutExSnapshotLayout><VirtualMachineFileLayoutExSnapshotLayout><key type="VirtualMachineSnapshot">snapshot-35</key><dataKey>9</dataKey><memoryKey>-1</memoryKey><disk><key>255511522</key><chain><fileKey>5</fileKey><fileKey>6</fileKey></chain></disk></VirtualMachineFileLayoutExSnapshotLayout></val></propSet><propSet><name>runtime.powerState</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="VirtualMachinePowerState">poweredOn</val></propSet></objects></returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#;

    fn object(doc: &str) -> ObjectContent {
        let vals = decode(doc.as_bytes()).unwrap().unwrap();
        RetrieveResult::from_returnvals(&vals).objects.remove(0)
    }

    #[test]
    fn a_snapshot_tree_is_flattened_oldest_first() {
        let o = object(VCSIM_TREE);
        let list = snapshots(o.get("snapshot"), o.get("layoutEx.snapshot"));
        let names: Vec<_> = list.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s1", "s2", "s3"]);
        assert_eq!(
            list[0].moref,
            MoRef::new("VirtualMachineSnapshot", "snapshot-30")
        );
        assert_eq!(list[2].moref.value, "snapshot-35");
        assert_eq!(
            list[0].created_at.unwrap().to_rfc3339(),
            "2026-12-02T15:27:49.233996912+00:00"
        );
        // No memory files: none holds memory, though the VM ran when each was taken.
        assert!(list.iter().all(|s| !s.memory && s.state == "poweredOn"));
        // Without the layout, the power state alone says it.
        assert!(snapshots(o.get("snapshot"), None).iter().all(|s| s.memory));
        // No `snapshot` property: no snapshots.
        assert!(snapshots(None, o.get("layoutEx.snapshot")).is_empty());
    }

    #[test]
    fn memory_files_and_power_states_say_which_snapshots_hold_memory() {
        // vCenter's own spelling (xsi:type), a memory file for the second snapshot, a third
        // taken while the VM was off, and two taken in one instant (ordered by id).
        let doc = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-9</obj>
<propSet><name>snapshot</name><val xsi:type="VirtualMachineSnapshotInfo"><rootSnapshotList>
<snapshot type="VirtualMachineSnapshot">snapshot-3</snapshot><name>late</name><id>3</id><createTime>2026-01-02T00:00:00Z</createTime><state>poweredOff</state><quiesced>false</quiesced>
</rootSnapshotList><rootSnapshotList>
<snapshot type="VirtualMachineSnapshot">snapshot-2</snapshot><name>b</name><id>2</id><createTime>2026-01-01T00:00:00Z</createTime><state>poweredOn</state><quiesced>false</quiesced>
</rootSnapshotList><rootSnapshotList>
<snapshot type="VirtualMachineSnapshot">snapshot-1</snapshot><name>a</name><id>1</id><createTime>2026-01-01T00:00:00Z</createTime><state>poweredOn</state><quiesced>false</quiesced>
</rootSnapshotList></val></propSet>
<propSet><name>layoutEx.snapshot</name><val xsi:type="ArrayOfVirtualMachineFileLayoutExSnapshotLayout">
<VirtualMachineFileLayoutExSnapshotLayout><key type="VirtualMachineSnapshot">snapshot-1</key><dataKey>4</dataKey><memoryKey>-1</memoryKey></VirtualMachineFileLayoutExSnapshotLayout>
<VirtualMachineFileLayoutExSnapshotLayout><key type="VirtualMachineSnapshot">snapshot-2</key><dataKey>5</dataKey><memoryKey>6</memoryKey></VirtualMachineFileLayoutExSnapshotLayout>
<VirtualMachineFileLayoutExSnapshotLayout><key type="VirtualMachineSnapshot">snapshot-3</key><dataKey>7</dataKey><memoryKey>-1</memoryKey></VirtualMachineFileLayoutExSnapshotLayout>
</val></propSet></objects></returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#;
        let o = object(doc);
        let list = snapshots(o.get("snapshot"), o.get("layoutEx.snapshot"));
        let seen: Vec<_> = list.iter().map(|s| (s.name.as_str(), s.memory)).collect();
        assert_eq!(seen, [("a", false), ("b", true), ("late", false)]);
    }

    #[test]
    fn a_deep_snapshot_chain_parses_and_flattens() {
        let depth = 200;
        let mut tree = String::new();
        for i in 0..depth {
            tree.push_str(&format!(
                "<{}><snapshot type=\"VirtualMachineSnapshot\">snapshot-{i}</snapshot><name>s{i}</name><id>{i}</id><createTime>2026-01-01T00:00:{:02}Z</createTime><state>poweredOff</state>",
                if i == 0 { "rootSnapshotList" } else { "childSnapshotList" },
                i % 60
            ));
        }
        for i in (0..depth).rev() {
            tree.push_str(if i == 0 {
                "</rootSnapshotList>"
            } else {
                "</childSnapshotList>"
            });
        }
        let doc = format!(
            r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-1</obj><propSet><name>snapshot</name><val>{tree}</val></propSet></objects></returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#
        );
        let o = object(&doc);
        let list = snapshots(o.get("snapshot"), None);
        assert_eq!(list.len(), depth);
        assert!(list.iter().all(|s| !s.memory));
    }

    /// `PlaceVm`'s reply as vCenter writes it (the shape of govmomi's simulator's, which
    /// follows vim25's `PlacementResult`): one recommendation, one `PlacementAction`.
    const PLACE_VM: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><PlaceVmResponse xmlns="urn:vim25"><returnval>
<recommendations><key>1</key><type>V1</type><time>2026-12-03T06:10:00.123Z</time><rating>1</rating>
<reason>xvmotionPlacement</reason><reasonText>xvmotionPlacement</reasonText>
<action xsi:type="PlacementAction"><type>PlacementV1</type><target type="ClusterComputeResource">domain-c7</target>
<vm type="VirtualMachine">vm-52</vm><targetHost type="HostSystem">host-30</targetHost>
<relocateSpec><datastore type="Datastore">datastore-15</datastore><pool type="ResourcePool">resgroup-8</pool><host type="HostSystem">host-30</host></relocateSpec>
</action><target type="ClusterComputeResource">domain-c7</target></recommendations>
</returnval></PlaceVmResponse></soapenv:Body></soapenv:Envelope>"#;

    #[test]
    fn a_place_vm_reply_gives_drs_host_datastore_and_pool() {
        let vals = decode(PLACE_VM.as_bytes()).unwrap().unwrap();
        let p = DrsPlacement::from_returnvals(&vals).expect("a recommendation");
        assert_eq!(p.host, MoRef::new("HostSystem", "host-30"));
        assert_eq!(p.datastore, Some(MoRef::new("Datastore", "datastore-15")));
        assert_eq!(p.pool, Some(MoRef::new("ResourcePool", "resgroup-8")));
        // Without a relocate spec host, the action's target host.
        let only_target = PLACE_VM.replace(r#"<host type="HostSystem">host-30</host>"#, "");
        let vals = decode(only_target.as_bytes()).unwrap().unwrap();
        let p = DrsPlacement::from_returnvals(&vals).unwrap();
        assert_eq!(p.host, MoRef::new("HostSystem", "host-30"));
        // No recommendation (DRS found no host, its faults in `drsFault`): none.
        let empty = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><PlaceVmResponse xmlns="urn:vim25"><returnval><drsFault><reason>no host</reason></drsFault></returnval></PlaceVmResponse></soapenv:Body></soapenv:Envelope>"#;
        let vals = decode(empty.as_bytes()).unwrap().unwrap();
        assert_eq!(DrsPlacement::from_returnvals(&vals), None);
    }

    #[test]
    fn a_place_vm_request_names_the_template_and_no_hosts() {
        let cluster = MoRef::new("ClusterComputeResource", "domain-c7");
        let vm = MoRef::new("VirtualMachine", "vm-52");
        let pool = MoRef::new("ResourcePool", "resgroup-8");
        let config = ConfigSpec {
            num_cpus: Some(2),
            memory_mb: Some(2048),
            ..ConfigSpec::default()
        };
        let body = place_vm(&cluster, &vm, &pool, "web<1>", &config);
        let n = xml::parse(envelope(&body).as_bytes()).unwrap();
        let spec = n.at(&["Body", "PlaceVm", "placementSpec"]).unwrap();
        assert_eq!(MoRef::from_node(spec.child("vm").unwrap()), Some(vm));
        assert_eq!(spec.text_of("placementType"), Some("clone"));
        assert_eq!(spec.text_of("cloneName"), Some("web<1>"));
        assert_eq!(spec.at(&["configSpec", "numCPUs"]).unwrap().text, "2");
        assert_eq!(spec.at(&["configSpec", "memoryMB"]).unwrap().text, "2048");
        assert!(spec.child("hosts").is_none() && spec.child("datastores").is_none());
        // vim25's sequence: vm, configSpec, ..., placementType, cloneSpec, cloneName.
        let order: Vec<&str> = spec.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "vm",
                "configSpec",
                "placementType",
                "cloneSpec",
                "cloneName"
            ]
        );
    }

    #[test]
    fn requests_are_well_formed() {
        let pc = MoRef::new("PropertyCollector", "propertyCollector");
        let view = MoRef::new("ContainerView", "session[1]2");
        let body = retrieve_over_view(&pc, &view, &[("VirtualMachine", &["name"])], 1000);
        let doc = envelope(&body);
        let n = xml::parse(doc.as_bytes()).unwrap();
        let req = n.at(&["Body", "RetrievePropertiesEx"]).unwrap();
        assert_eq!(
            req.at(&["specSet", "objectSet", "selectSet"])
                .unwrap()
                .xsi_type
                .as_deref(),
            Some("TraversalSpec")
        );
        assert_eq!(
            MoRef::from_node(req.child("_this").unwrap()),
            Some(pc.clone())
        );
        for body in [
            retrieve_one(&pc, &view, &["a", "b"]),
            continue_retrieve(&pc, "t&1"),
            create_filter(&pc, &view, &["info"]),
            wait_for_updates(&pc, "3", 10),
            login(&pc, "u", "p<&>"),
            create_container_view(&pc, &view, &["VirtualMachine"]),
            relocate(&view, &pc, Some(&pc)),
            create_snapshot(&view, "s1", "by HCP"),
            revert_to_snapshot(&view),
            remove_snapshot(&view, false),
            acquire_ticket(&view, "webmks"),
            reconfig(
                &view,
                &ConfigSpec {
                    num_cpus: Some(2),
                    add_nics: vec![
                        NicBacking::Standard {
                            name: "VM Network".into(),
                            network: MoRef::new("Network", "network-7"),
                        },
                        NicBacking::Distributed {
                            switch_uuid: "u".into(),
                            portgroup_key: "dvportgroup-1".into(),
                        },
                    ],
                    extra: vec![("hcp.mark".into(), "{}".into())],
                    ..ConfigSpec::default()
                },
            ),
        ] {
            xml::parse(envelope(&body).as_bytes()).unwrap();
        }
    }
}
