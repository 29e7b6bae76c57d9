//! Domain and volume XML: written with quick-xml (every text and attribute escaped; text that
//! XML 1.0 cannot carry is refused), and read back with a namespace-aware reader.
//!
//! HCP's mark lives in the domain's `<metadata>` under its own namespace [`HCP_NS`]:
//!
//! ```xml
//! <metadata>
//!   <hcp:vm xmlns:hcp="https://hcp.dev/xmlns/vm/1">
//!     <hcp:id>vm-…</hcp:id><hcp:project>demo</hcp:project>
//!     <hcp:image>base-tiny</hcp:image><hcp:flavor>tiny</hcp:flavor><hcp:zone>zone-a</hcp:zone>
//!     <hcp:disk_gib>1</hcp:disk_gib><hcp:server_group>sg-…</hcp:server_group>
//!     <hcp:tags><hcp:tag key="team">web</hcp:tag></hcp:tags>
//!   </hcp:vm>
//! </metadata>
//! ```

use std::collections::BTreeMap;

use hcp_core::{Error, HcpMark, ProjectId, Result, ServerGroupId, VmId};
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use quick_xml::writer::Writer;

use crate::config::NetworkBinding;

/// HCP's XML namespace for its domain metadata.
pub const HCP_NS: &str = "https://hcp.dev/xmlns/vm/1";

/// Checks that `value` can be written as XML 1.0 text: no control characters other than tab,
/// newline and carriage return, no NUL.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming `field`.
pub(crate) fn check_text(field: &str, value: &str) -> Result<()> {
    if let Some(c) = value.chars().find(|c| {
        (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}')
    }) {
        return Err(Error::invalid(
            field,
            format!(
                "contains the control character U+{:04X}; only printable text, tabs and newlines are allowed",
                c as u32
            ),
        ));
    }
    Ok(())
}

/// A small writer over quick-xml that cannot fail (it writes to memory).
struct Xml {
    w: Writer<Vec<u8>>,
}

impl Xml {
    fn new() -> Self {
        Xml {
            w: Writer::new_with_indent(Vec::new(), b' ', 2),
        }
    }

    fn start(name: &str, attrs: &[(&str, &str)]) -> BytesStart<'static> {
        let mut s = BytesStart::new(name.to_string());
        for (k, v) in attrs {
            s.push_attribute((*k, *v));
        }
        s
    }

    fn write(&mut self, e: Event<'_>) {
        // Writing to a Vec cannot fail.
        let _ = self.w.write_event(e);
    }

    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.write(Event::Start(Self::start(name, attrs)));
    }

    fn close(&mut self, name: &str) {
        self.write(Event::End(BytesEnd::new(name.to_string())));
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.write(Event::Empty(Self::start(name, attrs)));
    }

    fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.open(name, attrs);
        self.write(Event::Text(BytesText::new(text)));
        self.close(name);
    }

    fn finish(self) -> String {
        String::from_utf8(self.w.into_inner()).unwrap_or_default()
    }
}

/// One NIC to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Nic {
    /// What it attaches to.
    pub binding: NetworkBinding,
    /// Its VLAN tag.
    pub vlan: Option<u16>,
}

/// Everything a new domain's XML says.
#[derive(Debug, Clone)]
pub(crate) struct DomainPlan<'a> {
    pub name: &'a str,
    pub domain_type: &'a str,
    pub machine: Option<&'a str>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub disk_path: &'a str,
    pub seed_path: Option<&'a str>,
    pub nics: &'a [Nic],
    pub vnc_listen: &'a str,
    pub mark: &'a HcpMark,
    pub tags: &'a BTreeMap<String, String>,
}

/// Writes the domain XML of `plan`.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming the field whose text XML cannot carry.
/// Writes HCP's mark element with `prefix` (`hcp:` inside a domain definition; none for
/// libvirt's metadata API, which puts the element under HCP's namespace itself).
fn write_mark(
    x: &mut Xml,
    prefix: &str,
    mark: &HcpMark,
    disk_gib: Option<u64>,
    tags: &BTreeMap<String, String>,
) {
    let el = |name: &str| format!("{prefix}{name}");
    if prefix.is_empty() {
        x.open("vm", &[]);
    } else {
        x.open(&el("vm"), &[("xmlns:hcp", HCP_NS)]);
    }
    x.text(&el("id"), &[], mark.vm_id.as_str());
    x.text(&el("project"), &[], mark.project.as_str());
    if let Some(v) = &mark.image {
        x.text(&el("image"), &[], v);
    }
    if let Some(v) = &mark.flavor {
        x.text(&el("flavor"), &[], v);
    }
    if let Some(v) = &mark.zone {
        x.text(&el("zone"), &[], v);
    }
    if let Some(d) = disk_gib {
        x.text(&el("disk_gib"), &[], &d.to_string());
    }
    if let Some(t) = &mark.created_at {
        x.text(&el("created_at"), &[], &t.to_rfc3339());
    }
    if mark.user_data {
        x.text(&el("user_data"), &[], "true");
    }
    if let Some(g) = &mark.server_group {
        x.text(&el("server_group"), &[], g.as_str());
    }
    if !tags.is_empty() {
        x.open(&el("tags"), &[]);
        for (k, v) in tags {
            x.text(&el("tag"), &[("key", k)], v);
        }
        x.close(&el("tags"));
    }
    x.close(&el("vm"));
}

/// Returns HCP's mark as an element for libvirt's metadata API (no prefix: libvirt places it
/// under [`HCP_NS`] itself and refuses one that declares it).
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] for a control character in any of the mark's texts.
pub(crate) fn mark_metadata(
    mark: &HcpMark,
    disk_gib: Option<u64>,
    tags: &BTreeMap<String, String>,
) -> Result<String> {
    check_mark(mark, tags)?;
    let mut x = Xml::new();
    write_mark(&mut x, "", mark, disk_gib, tags);
    Ok(x.finish())
}

fn check_mark(mark: &HcpMark, tags: &BTreeMap<String, String>) -> Result<()> {
    check_text("mark.vm_id", mark.vm_id.as_str())?;
    check_text("project", mark.project.as_str())?;
    for (field, v) in [
        ("image", &mark.image),
        ("flavor", &mark.flavor),
        ("zone", &mark.zone),
    ] {
        if let Some(v) = v {
            check_text(field, v)?;
        }
    }
    for (k, v) in tags {
        check_text(&format!("tags.{k}"), k)?;
        check_text(&format!("tags.{k}"), v)?;
    }
    Ok(())
}

pub(crate) fn domain_xml(plan: &DomainPlan<'_>) -> Result<String> {
    check_text("name", plan.name)?;
    check_mark(plan.mark, plan.tags)?;
    let q35 = plan.machine.is_some_and(|m| m.contains("q35"));
    let mut x = Xml::new();
    x.open("domain", &[("type", plan.domain_type)]);
    x.text("name", &[], plan.name);
    x.text("memory", &[("unit", "MiB")], &plan.memory_mib.to_string());
    x.text("vcpu", &[], &plan.vcpus.to_string());
    x.open("metadata", &[]);
    write_mark(&mut x, "hcp:", plan.mark, Some(plan.disk_gib), plan.tags);
    x.close("metadata");
    x.open("os", &[]);
    match plan.machine {
        Some(m) => x.text("type", &[("machine", m)], "hvm"),
        None => x.text("type", &[], "hvm"),
    }
    x.empty("boot", &[("dev", "hd")]);
    x.close("os");
    x.open("features", &[]);
    x.empty("acpi", &[]);
    x.close("features");
    x.text("on_poweroff", &[], "destroy");
    x.text("on_reboot", &[], "restart");
    x.text("on_crash", &[], "destroy");
    x.open("devices", &[]);
    x.open("disk", &[("type", "file"), ("device", "disk")]);
    x.empty("driver", &[("name", "qemu"), ("type", "qcow2")]);
    x.empty("source", &[("file", plan.disk_path)]);
    x.empty("target", &[("dev", "vda"), ("bus", "virtio")]);
    x.close("disk");
    if let Some(seed) = plan.seed_path {
        // The read-only seed takes no part in snapshots, so internal qcow2 snapshots stay possible.
        x.open(
            "disk",
            &[("type", "file"), ("device", "cdrom"), ("snapshot", "no")],
        );
        x.empty("driver", &[("name", "qemu"), ("type", "raw")]);
        x.empty("source", &[("file", seed)]);
        if q35 {
            x.empty("target", &[("dev", "sda"), ("bus", "sata")]);
        } else {
            x.empty("target", &[("dev", "hdc"), ("bus", "ide")]);
        }
        x.empty("readonly", &[]);
        x.close("disk");
    }
    for nic in plan.nics {
        let vlan = nic.vlan.map(|v| v.to_string());
        match &nic.binding {
            NetworkBinding::Network { source } => {
                x.open("interface", &[("type", "network")]);
                x.empty("source", &[("network", source)]);
            }
            NetworkBinding::Bridge { source } => {
                x.open("interface", &[("type", "bridge")]);
                x.empty("source", &[("bridge", source)]);
            }
            NetworkBinding::User => x.open("interface", &[("type", "user")]),
        }
        x.empty("model", &[("type", "virtio")]);
        if let Some(v) = &vlan {
            x.open("vlan", &[]);
            x.empty("tag", &[("id", v)]);
            x.close("vlan");
        }
        x.close("interface");
    }
    x.open(
        "graphics",
        &[
            ("type", "vnc"),
            ("port", "-1"),
            ("autoport", "yes"),
            ("listen", plan.vnc_listen),
        ],
    );
    x.empty(
        "listen",
        &[("type", "address"), ("address", plan.vnc_listen)],
    );
    x.close("graphics");
    x.open("serial", &[("type", "pty")]);
    x.empty("target", &[("port", "0")]);
    x.close("serial");
    x.open("console", &[("type", "pty")]);
    x.empty("target", &[("type", "serial"), ("port", "0")]);
    x.close("console");
    x.empty("memballoon", &[("model", "none")]);
    x.close("devices");
    x.close("domain");
    Ok(x.finish())
}

/// Writes the XML of a new volume: a qcow2 overlay on `backing` (path and format) when given,
/// else a standalone volume of `format`.
pub(crate) fn volume_xml(
    name: &str,
    capacity_bytes: u64,
    format: &str,
    backing: Option<(&str, &str)>,
) -> String {
    let mut x = Xml::new();
    x.open("volume", &[]);
    x.text("name", &[], name);
    x.text(
        "capacity",
        &[("unit", "bytes")],
        &capacity_bytes.to_string(),
    );
    x.open("target", &[]);
    x.empty("format", &[("type", format)]);
    x.close("target");
    if let Some((path, fmt)) = backing {
        x.open("backingStore", &[]);
        x.text("path", &[], path);
        x.empty("format", &[("type", fmt)]);
        x.close("backingStore");
    }
    x.close("volume");
    x.finish()
}

/// What HCP reads of a snapshot's XML: its name, its state when taken (`running`, `shutoff`,
/// ...) and its creation time (Unix seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SnapshotDesc {
    pub name: String,
    pub state: String,
    pub created: Option<i64>,
}

impl SnapshotDesc {
    /// True when the snapshot holds memory state: it was taken of a running (or paused) domain.
    pub(crate) fn memory(&self) -> bool {
        matches!(self.state.as_str(), "running" | "paused" | "blocked")
    }
}

/// Reads a snapshot's XML (`virDomainSnapshotGetXMLDesc`): only the top-level `name`, `state`
/// and `creationTime`, never those of the embedded domain.
pub(crate) fn parse_snapshot(text: &str) -> Result<SnapshotDesc> {
    let mut r = NsReader::from_str(text);
    let mut d = SnapshotDesc::default();
    let mut path: Vec<String> = Vec::new();
    loop {
        let (_, ev) = r.read_resolved_event().map_err(|e| {
            Error::new(
                hcp_core::ErrorKind::ProviderError,
                "libvirt returned snapshot XML HCP cannot read",
            )
            .with_detail(e.to_string())
        })?;
        match ev {
            Event::Start(ref e) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(ref t) if path.len() == 2 && path[0] == "domainsnapshot" => {
                let text = t.unescape().map(|c| c.into_owned()).unwrap_or_default();
                match path[1].as_str() {
                    "name" => d.name = text,
                    "state" => d.state = text,
                    "creationTime" => d.created = text.trim().parse().ok(),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(d)
}

/// Writes the XML of a new snapshot named `name`.
pub(crate) fn snapshot_xml(name: &str, description: &str) -> String {
    let mut x = Xml::new();
    x.open("domainsnapshot", &[]);
    x.text("name", &[], name);
    x.text("description", &[], description);
    x.close("domainsnapshot");
    x.finish()
}

/// A disk of a domain, as its XML describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DiskDesc {
    /// `disk`, `cdrom` or `floppy`.
    pub device: String,
    /// The file or block device path, when the source is one.
    pub path: Option<String>,
    /// The pool and volume, when the source is a volume.
    pub volume: Option<(String, String)>,
}

/// What HCP reads from a domain's XML.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DomainDesc {
    pub name: String,
    pub uuid: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub mark: Option<HcpMark>,
    pub disk_gib: u64,
    pub tags: BTreeMap<String, String>,
    pub disks: Vec<DiskDesc>,
    /// The VNC listen address and port (`-1` until the domain runs).
    pub vnc: Option<(String, i32)>,
    /// The NVRAM file, if the domain has one.
    pub nvram: Option<String>,
}

#[derive(Default)]
struct MarkParts {
    id: Option<String>,
    project: Option<String>,
    image: Option<String>,
    flavor: Option<String>,
    zone: Option<String>,
    disk_gib: Option<String>,
    created_at: Option<String>,
    user_data: Option<String>,
    server_group: Option<String>,
}

fn attr(e: &BytesStart<'_>, key: &str) -> Option<String> {
    e.try_get_attribute(key)
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn memory_mib(value: &str, unit: Option<&str>) -> u64 {
    let n: u64 = value.trim().parse().unwrap_or(0);
    let bytes: u128 = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1024,
        "MB" => 1000 * 1000,
        "M" | "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "G" | "GiB" => 1024 * 1024 * 1024,
        "TB" => 1000u128.pow(4),
        "T" | "TiB" => 1024u128.pow(4),
        _ => 1024,
    };
    u64::try_from(u128::from(n) * bytes / (1024 * 1024)).unwrap_or(u64::MAX)
}

/// Reads a domain's XML.
///
/// # Errors
/// [`hcp_core::ErrorKind::ProviderError`] when the XML is malformed.
pub(crate) fn parse_domain(text: &str) -> Result<DomainDesc> {
    let mut r = NsReader::from_str(text);
    let mut d = DomainDesc::default();
    // Element path of local names; HCP's elements are prefixed `hcp:` whatever their prefix.
    let mut path: Vec<String> = Vec::new();
    let mut mark = MarkParts::default();
    let mut in_mark = false;
    let mut tag_key: Option<String> = None;
    let mut memory_unit: Option<String> = None;
    let mut vcpu_current: Option<u32> = None;
    let mut disk: Option<DiskDesc> = None;
    loop {
        let (ns, ev) = r.read_resolved_event().map_err(|e| {
            Error::new(
                hcp_core::ErrorKind::ProviderError,
                "libvirt returned domain XML HCP cannot read",
            )
            .with_detail(e.to_string())
        })?;
        let ours = matches!(&ns, ResolveResult::Bound(n) if n.as_ref() == HCP_NS.as_bytes());
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(ev, Event::Empty(_));
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let name = if ours { format!("hcp:{local}") } else { local };
                let parent = path.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (Some("metadata"), "hcp:vm") => in_mark = true,
                    (Some("domain"), "memory") => memory_unit = attr(e, "unit"),
                    (Some("domain"), "vcpu") => {
                        vcpu_current = attr(e, "current").and_then(|c| c.parse().ok());
                    }
                    (Some("devices"), "disk") => {
                        disk = Some(DiskDesc {
                            device: attr(e, "device").unwrap_or_else(|| "disk".into()),
                            ..Default::default()
                        });
                    }
                    (Some("disk"), "source") => {
                        if let Some(dk) = disk.as_mut() {
                            dk.path = attr(e, "file").or_else(|| attr(e, "dev"));
                            if let (Some(p), Some(v)) = (attr(e, "pool"), attr(e, "volume")) {
                                dk.volume = Some((p, v));
                            }
                        }
                    }
                    (Some("devices"), "graphics") if attr(e, "type").as_deref() == Some("vnc") => {
                        let port = attr(e, "port").and_then(|p| p.parse().ok()).unwrap_or(-1);
                        let listen = attr(e, "listen").unwrap_or_default();
                        d.vnc = Some((listen, port));
                    }
                    (Some("graphics"), "listen") => {
                        if let (Some(vnc), Some(a)) = (d.vnc.as_mut(), attr(e, "address"))
                            && vnc.0.is_empty()
                        {
                            vnc.0 = a;
                        }
                    }
                    (Some("hcp:tags"), "hcp:tag") => tag_key = attr(e, "key"),
                    _ => {}
                }
                if empty {
                    if name == "disk"
                        && let Some(dk) = disk.take()
                    {
                        d.disks.push(dk);
                    }
                } else {
                    path.push(name);
                }
            }
            Event::Text(t) => {
                let text = t.unescape().map(|c| c.into_owned()).unwrap_or_default();
                let depth = path.len();
                let here = path.last().map(String::as_str).unwrap_or("");
                let parent = if depth >= 2 {
                    path[depth - 2].as_str()
                } else {
                    ""
                };
                match (parent, here) {
                    ("domain", "name") => d.name = text.trim().to_string(),
                    ("domain", "uuid") => d.uuid = text.trim().to_string(),
                    ("domain", "memory") => {
                        d.memory_mib = memory_mib(&text, memory_unit.as_deref());
                    }
                    ("domain", "vcpu") => {
                        d.vcpus = vcpu_current.unwrap_or_else(|| text.trim().parse().unwrap_or(0));
                    }
                    ("os", "nvram") => d.nvram = Some(text.trim().to_string()),
                    ("hcp:vm", "hcp:id") if in_mark => mark.id = Some(text),
                    ("hcp:vm", "hcp:project") if in_mark => mark.project = Some(text),
                    ("hcp:vm", "hcp:image") if in_mark => mark.image = Some(text),
                    ("hcp:vm", "hcp:flavor") if in_mark => mark.flavor = Some(text),
                    ("hcp:vm", "hcp:zone") if in_mark => mark.zone = Some(text),
                    ("hcp:vm", "hcp:disk_gib") if in_mark => mark.disk_gib = Some(text),
                    ("hcp:vm", "hcp:created_at") if in_mark => mark.created_at = Some(text),
                    ("hcp:vm", "hcp:user_data") if in_mark => mark.user_data = Some(text),
                    ("hcp:vm", "hcp:server_group") if in_mark => mark.server_group = Some(text),
                    ("hcp:tags", "hcp:tag") if in_mark => {
                        if let Some(k) = tag_key.take() {
                            d.tags.insert(k, text);
                        }
                    }
                    _ => {}
                }
            }
            Event::End(_) => {
                if let Some(name) = path.pop() {
                    match name.as_str() {
                        "hcp:vm" => in_mark = false,
                        "disk" => {
                            if let Some(dk) = disk.take() {
                                d.disks.push(dk);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let (Some(id), Some(project)) = (mark.id, mark.project)
        && !id.trim().is_empty()
    {
        d.mark = Some(HcpMark {
            vm_id: VmId::new(id.trim()),
            project: ProjectId::new(project.trim()),
            image: mark.image,
            flavor: mark.flavor,
            zone: mark.zone,
            created_at: mark
                .created_at
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
            user_data: mark.user_data.is_some_and(|u| u.trim() == "true"),
            server_group: mark
                .server_group
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty())
                .map(ServerGroupId::new),
        });
        d.disk_gib = mark
            .disk_gib
            .and_then(|g| g.trim().parse().ok())
            .unwrap_or(0);
    }
    Ok(d)
}

/// Reads a storage volume's format (`qcow2`, `raw`, ...) from its XML.
pub(crate) fn volume_format(text: &str) -> Option<String> {
    let mut r = NsReader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    loop {
        match r.read_event().ok()? {
            Event::Start(e) => path.push(String::from_utf8_lossy(e.local_name().as_ref()).into()),
            Event::Empty(e)
                if e.local_name().as_ref() == b"format"
                    && path.iter().map(String::as_str).eq(["volume", "target"]) =>
            {
                return attr(&e, "type");
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Reads the names of `<domain type='…'>` guests a host's capabilities XML offers.
pub(crate) fn guest_domain_types(caps: &str) -> Vec<String> {
    let mut r = NsReader::from_str(caps);
    let mut out = Vec::new();
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.local_name().as_ref() == b"domain" => {
                if let Some(t) = attr(&e, "type")
                    && !out.contains(&t)
                {
                    out.push(t);
                }
            }
            Ok(Event::Eof) | Err(_) => return out,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark() -> HcpMark {
        HcpMark {
            vm_id: VmId::new("vm-0123"),
            project: ProjectId::new("demo"),
            image: Some("base-tiny".into()),
            flavor: Some("tiny".into()),
            zone: Some("zone-a".into()),
            created_at: Some("2026-01-02T03:04:05Z".parse().unwrap()),
            user_data: true,
            server_group: Some(ServerGroupId::new("sg-0123")),
        }
    }

    fn plan<'a>(
        mark: &'a HcpMark,
        tags: &'a BTreeMap<String, String>,
        nics: &'a [Nic],
    ) -> DomainPlan<'a> {
        DomainPlan {
            name: "web-1",
            domain_type: "qemu",
            machine: None,
            vcpus: 1,
            memory_mib: 64,
            disk_gib: 1,
            disk_path: "/var/lib/hcp/pool/hcp-vm-0123.qcow2",
            seed_path: Some("/var/lib/hcp/pool/hcp-vm-0123-seed.iso"),
            nics,
            vnc_listen: "127.0.0.1",
            mark,
            tags,
        }
    }

    #[test]
    fn domain_xml_round_trips_mark_size_disks_and_tags() {
        let m = mark();
        let tags = BTreeMap::from([("team".to_string(), "a<b & \"c\"".to_string())]);
        let nics = [
            Nic {
                binding: NetworkBinding::User,
                vlan: None,
            },
            Nic {
                binding: NetworkBinding::Bridge {
                    source: "br0".into(),
                },
                vlan: Some(42),
            },
        ];
        let xml = domain_xml(&plan(&m, &tags, &nics)).unwrap();
        assert!(xml.contains("a&lt;b &amp; &quot;c&quot;"), "{xml}");
        assert!(xml.contains("<tag id=\"42\"/>"), "{xml}");
        assert!(xml.contains("listen=\"127.0.0.1\""), "{xml}");
        let d = parse_domain(&xml).unwrap();
        assert_eq!(d.name, "web-1");
        assert_eq!(d.memory_mib, 64);
        assert_eq!(d.vcpus, 1);
        assert_eq!(d.mark, Some(m));
        assert_eq!(d.disk_gib, 1);
        assert_eq!(d.tags["team"], "a<b & \"c\"");
        assert_eq!(d.disks.len(), 2);
        assert_eq!(d.disks[1].device, "cdrom");
        assert_eq!(
            d.disks[0].path.as_deref(),
            Some("/var/lib/hcp/pool/hcp-vm-0123.qcow2")
        );
        assert_eq!(d.vnc, Some(("127.0.0.1".into(), -1)));
    }

    #[test]
    fn user_text_cannot_break_out_of_the_xml() {
        let m = mark();
        let tags = BTreeMap::from([(
            "x".to_string(),
            "</hcp:tag></hcp:tags></hcp:vm></metadata><devices/>".to_string(),
        )]);
        let xml = domain_xml(&plan(&m, &tags, &[])).unwrap();
        let d = parse_domain(&xml).unwrap();
        assert_eq!(d.tags["x"], tags["x"]);
        assert_eq!(d.disks.len(), 2);
        let bad = BTreeMap::from([("x".to_string(), "a\u{1}b".to_string())]);
        let e = domain_xml(&plan(&m, &bad, &[])).unwrap_err();
        assert_eq!(e.field(), Some("tags.x"));
        assert!(e.to_string().contains("U+0001"), "{e}");
    }

    #[test]
    fn parses_libvirts_own_rendering() {
        // As libvirt prints a running domain: other prefix for our namespace, KiB units,
        // current vCPUs, a VNC port, a volume disk and an unrelated metadata element.
        let xml = r#"<domain type='qemu' id='3'>
  <name>web-1</name>
  <uuid>f245d3d8-a141-4317-a039-35e23fe18487</uuid>
  <metadata>
    <other:thing xmlns:other="https://example.com/x"><other:id>nope</other:id></other:thing>
    <x:vm xmlns:x="https://hcp.dev/xmlns/vm/1">
      <x:id>vm-9</x:id>
      <x:project>p1</x:project>
    </x:vm>
  </metadata>
  <memory unit='KiB'>131072</memory>
  <currentMemory unit='KiB'>131072</currentMemory>
  <vcpu placement='static' current='1'>4</vcpu>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><nvram>/var/lib/libvirt/qemu/nvram/web-1_VARS.fd</nvram></os>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='hcp' volume='hcp-vm-9.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <graphics type='vnc' port='5901' autoport='yes'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
  </devices>
</domain>"#;
        let d = parse_domain(xml).unwrap();
        assert_eq!(d.uuid, "f245d3d8-a141-4317-a039-35e23fe18487");
        assert_eq!(d.memory_mib, 128);
        assert_eq!(d.vcpus, 1);
        let m = d.mark.unwrap();
        assert_eq!(m.vm_id.as_str(), "vm-9");
        assert_eq!(m.project.as_str(), "p1");
        assert_eq!(m.image, None);
        assert_eq!(
            d.disks[0].volume,
            Some(("hcp".into(), "hcp-vm-9.qcow2".into()))
        );
        assert_eq!(d.vnc, Some(("127.0.0.1".into(), 5901)));
        assert_eq!(
            d.nvram.as_deref(),
            Some("/var/lib/libvirt/qemu/nvram/web-1_VARS.fd")
        );
    }

    #[test]
    fn a_domain_without_our_mark_has_none() {
        let d = parse_domain(
            "<domain type='kvm'><name>legacy</name><memory>1048576</memory><vcpu>2</vcpu></domain>",
        )
        .unwrap();
        assert_eq!(d.mark, None);
        assert_eq!(d.memory_mib, 1024);
        assert_eq!(d.vcpus, 2);
        assert!(parse_domain("<domain><name>x</name></oops>").is_err());
    }

    #[test]
    fn volume_and_capabilities_xml() {
        let v = volume_xml(
            "hcp-vm-1.qcow2",
            1 << 30,
            "qcow2",
            Some(("/p/base.qcow2", "qcow2")),
        );
        assert!(v.contains("<backingStore>"), "{v}");
        assert_eq!(volume_format(&v).as_deref(), Some("qcow2"));
        let caps = "<capabilities><guest><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest></capabilities>";
        assert_eq!(guest_domain_types(caps), vec!["qemu", "kvm"]);
        assert!(snapshot_xml("s<1", "d").contains("s&lt;1"));
        let s = parse_snapshot(
            "<domainsnapshot><name>warm</name><state>running</state>\
             <creationTime>1700000000</creationTime><domain><name>vm</name></domain>\
             </domainsnapshot>",
        )
        .unwrap();
        assert_eq!(s.name, "warm");
        assert!(s.memory());
        assert_eq!(s.created, Some(1_700_000_000));
    }
}
