//! The domain model: VM specs, VMs, hosts and the catalog. Plain data and validation, no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Capabilities, Error, ErrorInfo, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        ///
        /// Shared text: a copy of the id (every copy of a job or VM record carries several)
        /// costs a reference count, not an allocation.
        #[derive(Debug, Clone, Eq, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                same_text(&self.0, &other.0)
            }
        }

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                hash_id(&self.0, state);
            }
        }

        impl $name {
            /// Generates a new random id.
            pub fn generate() -> Self {
                Self::generate_at(None)
            }

            /// Generates a new random id whose time part is `millis` (the Unix time in
            /// milliseconds of a system clock reading the caller made anyway), or read from the
            /// system clock when `None`.
            #[allow(dead_code)]
            pub(crate) fn generate_at(millis: Option<u64>) -> Self {
                // Written on the stack and copied once into the shared text (no formatter, no
                // intermediate String).
                const PREFIX: &str = concat!($prefix, "-");
                // Aligned to a word pair, so that the check that the text is UTF-8 takes
                // `from_utf8`'s word-at-a-time path instead of going byte by byte.
                #[repr(C, align(16))]
                struct Text([u8; PREFIX.len() + uuid::fmt::Simple::LENGTH]);
                let mut text = Text([0u8; PREFIX.len() + uuid::fmt::Simple::LENGTH]);
                let (head, tail) = text.0.split_at_mut(PREFIX.len());
                head.copy_from_slice(PREFIX.as_bytes());
                let uuid = time_ordered_uuid(millis);
                uuid.simple().encode_lower(tail);
                match std::str::from_utf8(&text.0) {
                    Ok(id) => $name(Arc::from(id)),
                    // Unreachable (a prefix and hex digits are ASCII), but never a panic.
                    Err(_) => $name(Arc::from(format!("{PREFIX}{}", uuid.simple()))),
                }
            }

            /// Wraps an existing id without checking it.
            pub fn new(id: impl Into<String>) -> Self {
                $name(Arc::from(id.into()))
            }

            /// Returns the id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(Arc::from(s))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(Arc::from(s))
            }
        }
    };
}

/// Returns true when `a` and `b` hold the same text: at once when they share it (copies of one
/// id or name), else by comparing the bytes.
pub(crate) fn same_text(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// The length of a generated id's random tail that [`hash_id`] hashes alone: the last 16 hex
/// digits of its UUID, 62 of whose 64 bits are random.
const RANDOM_TAIL: usize = 16;

/// Hashes an id's text. A generated id (a prefix of at most 5 characters, a dash and 32 hex
/// digits) is hashed by its random tail alone, one 16-byte word instead of the whole text: the
/// engine hashes ids a score of times per job. Any other id is hashed whole. Equal ids hash
/// equally either way, since the choice depends on the text alone.
fn hash_id<H: std::hash::Hasher>(id: &str, state: &mut H) {
    let bytes = id.as_bytes();
    let generated = (35..=38).contains(&bytes.len()) && bytes[bytes.len() - 33] == b'-';
    match bytes
        .len()
        .checked_sub(RANDOM_TAIL)
        .and_then(|at| <[u8; RANDOM_TAIL]>::try_from(&bytes[at..]).ok())
    {
        Some(tail) if generated => state.write_u128(u128::from_ne_bytes(tail)),
        _ => state.write(bytes),
    }
}

/// The last id's time and counter: the Unix time in milliseconds, shifted left by
/// [`COUNTER_BITS`], plus the count of ids made earlier in that millisecond.
static LAST_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The bits of a UUIDv7's `rand_a` field that count ids within one millisecond.
const COUNTER_BITS: u32 = 12;

/// Returns a new UUIDv7 (RFC 9562): the Unix time in milliseconds, a 12-bit counter (method 1
/// of section 6.2) and 62 random bits. The ids of one process are strictly increasing, across
/// threads too: the time and counter advance together by compare-and-swap on one word (no
/// lock), and a millisecond's 4,097th id borrows the next millisecond, as the RFC allows. The
/// time is `millis` (a system clock reading of the caller's) or, when `None`, read here.
fn time_ordered_uuid(millis: Option<u64>) -> uuid::Uuid {
    use std::sync::atomic::Ordering;
    let millis = millis.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }) & ((1 << 48) - 1);
    let start = millis << COUNTER_BITS;
    let mut last = LAST_ID.load(Ordering::Relaxed);
    let next = loop {
        let next = if start > last {
            start
        } else {
            last.wrapping_add(1)
        };
        match LAST_ID.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(now) => last = now,
        }
    };
    let random: u64 = rand::random();
    let high = (u128::from(next >> COUNTER_BITS) << 80)
        | (0x7 << 76)
        | (u128::from(next & ((1 << COUNTER_BITS) - 1)) << 64);
    let low = (0b10 << 62) | u128::from(random >> 2);
    uuid::Uuid::from_u128(high | low)
}

id_type!(
    /// HCP's own opaque VM id (`vm-…`), stable across restarts because providers record it on the VM.
    VmId,
    "vm"
);
id_type!(
    /// A job id (`job-…`).
    JobId,
    "job"
);
id_type!(
    /// A project (tenant) id.
    ProjectId,
    "project"
);
id_type!(
    /// A server group id (`sg-…`).
    ServerGroupId,
    "sg"
);

impl ProjectId {
    /// Checks the project id: 1–63 characters of `[a-z0-9-]`, starting with a letter.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidSpec`] naming the field `project`.
    pub fn validate(&self) -> Result<()> {
        validate_dns_label("project", &self.0)
    }
}

/// Returns true when `value` holds a control character ([`char::is_control`]): C0, DEL or C1.
/// One pass over the bytes without decoding characters, which the compiler runs many bytes at a
/// time: C0 and DEL are single bytes, and a C1 character (U+0080–U+009F) is encoded as `0xC2`
/// and a second byte, so only text with a `0xC2` byte is decoded.
pub(crate) fn has_control(value: &str) -> bool {
    let (c0, c2) = value.bytes().fold((false, false), |(c0, c2), b| {
        (c0 | (b < 0x20) | (b == 0x7f), c2 | (b == 0xc2))
    });
    c0 || (c2 && value.chars().any(char::is_control))
}

/// Checks a DNS-label-like name: 1–63 characters of `[a-z0-9-]`, starting with a letter, not ending with `-`.
///
/// # Errors
/// [`crate::ErrorKind::InvalidSpec`] naming `field` and saying what is allowed.
pub fn validate_dns_label(field: &str, value: &str) -> Result<()> {
    const ALLOWED: &str = "1-63 characters of lowercase letters, digits and '-', starting with a letter and not ending with '-'";
    if value.is_empty() {
        return Err(Error::invalid(
            field,
            format!("must not be empty; allowed: {ALLOWED}"),
        ));
    }
    if value.len() > 63 {
        return Err(Error::invalid(
            field,
            format!(
                "is {} characters long; allowed: {ALLOWED}",
                value.chars().count()
            ),
        ));
    }
    let bytes = value.as_bytes();
    if !bytes.first().is_some_and(u8::is_ascii_lowercase) {
        return Err(Error::invalid(
            field,
            format!("must start with a lowercase letter; allowed: {ALLOWED}"),
        ));
    }
    // Byte by byte: every allowed character is ASCII, so the first byte outside the set starts
    // the first character outside it.
    if let Some(at) = bytes
        .iter()
        .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-'))
        && let Some(bad) = value.get(at..).and_then(|rest| rest.chars().next())
    {
        return Err(Error::invalid(
            field,
            format!("contains {bad:?}; allowed: {ALLOWED}"),
        ));
    }
    if bytes.ends_with(b"-") {
        return Err(Error::invalid(
            field,
            format!("must not end with '-'; allowed: {ALLOWED}"),
        ));
    }
    Ok(())
}

/// The largest cloud-init user-data HCP accepts, in bytes.
pub const MAX_USER_DATA_BYTES: usize = 64 * 1024;
/// The most tags one VM may carry.
pub const MAX_TAGS: usize = 50;

// Global sanity bounds. Every size a request, a flavor or a hosts file gives is checked against
// them before any job exists, whatever a provider declares: they sit above the largest VM any
// supported hypervisor builds (Hyper-V: 240 vCPUs, 12 TiB, 64 TiB VHDX; vSphere 8: 768 vCPUs,
// 24 TiB, 62 TiB VMDK; QEMU/KVM: 4096 vCPUs), so they refuse only nonsense, and they keep every
// sum HCP computes over them (quota, host reservations) far from the integer limits. Providers
// and the hosts file narrow them further with `Capabilities::max_*`.

/// The fewest vCPUs a VM may have.
pub const MIN_VCPUS: u32 = 1;
/// The most vCPUs any VM may have.
pub const MAX_VCPUS: u32 = 4096;
/// The least memory a VM may have, in MiB.
pub const MIN_MEMORY_MIB: u64 = 16;
/// The most memory any VM may have, in MiB (64 TiB).
pub const MAX_MEMORY_MIB: u64 = 64 * 1024 * 1024;
/// The smallest disk a VM may have, in GiB.
pub const MIN_DISK_GIB: u64 = 1;
/// The largest disk any VM may have, in GiB (1 PiB).
pub const MAX_DISK_GIB: u64 = 1024 * 1024;
/// The most networks one VM may attach to.
pub const MAX_NETWORKS: usize = 16;
/// The longest catalog name a request may give (image, flavor, zone, network), in bytes.
pub const MAX_CATALOG_NAME_BYTES: usize = 255;

/// Checks that `value` lies in `min..=max`, naming `field` and the allowed range.
///
/// # Errors
/// [`crate::ErrorKind::InvalidSpec`] naming `field`, the value and the allowed range.
pub fn validate_range<T>(field: &str, value: T, min: T, max: T, unit: &str) -> Result<()>
where
    T: PartialOrd + fmt::Display + Copy,
{
    let (below, above) = (value < min, value > max);
    if !below && !above {
        return Ok(());
    }
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    let bound = if below {
        format!("must be at least {min}{unit}")
    } else {
        format!("must be at most {max}{unit}")
    };
    Err(Error::invalid(
        field,
        format!("is {value}{unit}; {bound} (allowed: {min}-{max}{unit})"),
    ))
}

/// Checks a catalog name a request gives (an image, flavor, zone or network name): 1 to
/// [`MAX_CATALOG_NAME_BYTES`] bytes without control characters. The message never repeats the
/// value, which may be huge.
///
/// # Errors
/// [`crate::ErrorKind::InvalidSpec`] naming `field`.
pub fn validate_catalog_name(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(
            field,
            "must not be empty; choose one from the catalog",
        ));
    }
    if value.len() > MAX_CATALOG_NAME_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes long; catalog names are at most {MAX_CATALOG_NAME_BYTES} bytes",
                value.len()
            ),
        ));
    }
    if has_control(value) {
        return Err(Error::invalid(
            field,
            "must not contain control characters; choose one from the catalog",
        ));
    }
    Ok(())
}

/// One network a VM attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkAttachment {
    /// The catalog network name.
    pub network: String,
}

/// What a tenant asks for: the provider-agnostic description of one VM.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// The VM name, unique within its project: 1–63 characters of `[a-z0-9-]`, starting with a letter.
    pub name: String,
    /// The catalog image to boot from.
    pub image: String,
    /// The catalog flavor; when absent, `vcpus`, `memory_mib` and `disk_gib` are all required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// Explicit vCPUs (overrides the flavor's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Explicit memory in MiB (overrides the flavor's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Explicit disk size in GiB (overrides the flavor's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gib: Option<u64>,
    /// Networks to attach, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachment>,
    /// The placement zone; any zone that fits when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Cloud-init user-data (needs the `cloud_init` capability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// The server group of the project the VM joins; placement keeps the group's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_group: Option<ServerGroupId>,
}

clone_in_place!(VmSpec {
    copy: [vcpus, memory_mib, disk_gib],
    clone: [
        name,
        image,
        flavor,
        networks,
        zone,
        tags,
        user_data,
        server_group
    ],
});

impl VmSpec {
    /// Starts a spec with the three fields every VM needs.
    pub fn new(
        name: impl Into<String>,
        image: impl Into<String>,
        flavor: impl Into<String>,
    ) -> Self {
        VmSpec {
            name: name.into(),
            image: image.into(),
            flavor: Some(flavor.into()),
            ..Default::default()
        }
    }

    /// Sets the zone.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Sets the cloud-init user-data.
    pub fn with_user_data(mut self, user_data: impl Into<String>) -> Self {
        self.user_data = Some(user_data.into());
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Checks the spec on its own, without the catalog.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidSpec`] naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        validate_dns_label("name", &self.name)?;
        validate_catalog_name("image", &self.image)?;
        if let Some(f) = &self.flavor {
            validate_catalog_name("flavor", f)?;
        }
        if self.flavor.is_none() {
            for (field, missing) in [
                ("vcpus", self.vcpus.is_none()),
                ("memory_mib", self.memory_mib.is_none()),
                ("disk_gib", self.disk_gib.is_none()),
            ] {
                if missing {
                    return Err(Error::invalid(
                        field,
                        "is required when no flavor is given (give a flavor, or vcpus, memory_mib and disk_gib)",
                    ));
                }
            }
        }
        if let Some(v) = self.vcpus {
            validate_range("vcpus", v, MIN_VCPUS, MAX_VCPUS, "")?;
        }
        if let Some(m) = self.memory_mib {
            validate_range("memory_mib", m, MIN_MEMORY_MIB, MAX_MEMORY_MIB, "MiB")?;
        }
        if let Some(d) = self.disk_gib {
            validate_range("disk_gib", d, MIN_DISK_GIB, MAX_DISK_GIB, "GiB")?;
        }
        if let Some(z) = &self.zone {
            validate_catalog_name("zone", z)?;
        }
        if self.networks.len() > MAX_NETWORKS {
            return Err(Error::invalid(
                "networks",
                format!(
                    "has {} entries; at most {MAX_NETWORKS} networks are allowed",
                    self.networks.len()
                ),
            ));
        }
        for (i, n) in self.networks.iter().enumerate() {
            validate_catalog_name(&format!("networks[{i}].network"), &n.network)?;
        }
        validate_tags(&self.tags)?;
        if let Some(ud) = &self.user_data {
            validate_user_data(ud)?;
        }
        if let Some(g) = &self.server_group {
            let g = g.as_str();
            if g.is_empty()
                || g.len() > 64
                || !g.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(Error::invalid(
                    "server_group",
                    format!(
                        "`{}` is not a server group id (1-64 letters, digits and '-', as `sg-…`)",
                        crate::error::echo(g)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Checks tags: at most [`MAX_TAGS`]; keys of 1–63 letters, digits, `-`, `_`, `.`, `/`; values of
/// at most 255 bytes without control characters.
///
/// # Errors
/// [`crate::ErrorKind::InvalidSpec`] naming `tags` or `tags.<key>`.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags are allowed"),
        ));
    }
    for (k, v) in tags {
        let ok_key = !k.is_empty()
            && k.len() <= 63
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !ok_key {
            return Err(Error::invalid(
                format!("tags.{}", crate::error::echo(k)),
                "tag keys are 1-63 characters of letters, digits, '-', '_', '.' and '/'",
            ));
        }
        if v.len() > 255 || has_control(v) {
            return Err(Error::invalid(
                format!("tags.{}", crate::error::echo(k)),
                "tag values are at most 255 bytes without control characters",
            ));
        }
    }
    Ok(())
}

/// Checks cloud-init user-data: at most [`MAX_USER_DATA_BYTES`], no NUL characters.
///
/// # Errors
/// [`crate::ErrorKind::InvalidSpec`] naming `user_data`.
pub fn validate_user_data(user_data: &str) -> Result<()> {
    if user_data.len() > MAX_USER_DATA_BYTES {
        return Err(Error::invalid(
            "user_data",
            format!(
                "is {} bytes; at most {MAX_USER_DATA_BYTES} are allowed",
                user_data.len()
            ),
        ));
    }
    if user_data.contains('\0') {
        return Err(Error::invalid(
            "user_data",
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

/// The size of one VM, resolved from its flavor and explicit overrides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
}

impl Resources {
    /// Checks the size against HCP's global bounds ([`MAX_VCPUS`], [`MAX_MEMORY_MIB`],
    /// [`MAX_DISK_GIB`] and their minimums).
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidSpec`] naming `vcpus`, `memory_mib` or `disk_gib` and the
    /// allowed range.
    pub fn validate(&self) -> Result<()> {
        validate_range("vcpus", self.vcpus, MIN_VCPUS, MAX_VCPUS, "")?;
        validate_range(
            "memory_mib",
            self.memory_mib,
            MIN_MEMORY_MIB,
            MAX_MEMORY_MIB,
            "MiB",
        )?;
        validate_range("disk_gib", self.disk_gib, MIN_DISK_GIB, MAX_DISK_GIB, "GiB")
    }
}

/// The lifecycle state HCP wants a VM in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredState {
    /// Accepted; its create job has not finished.
    Pending,
    /// Created and expected to exist.
    Active,
    /// Its last job failed; see [`Vm::last_error`].
    Error,
    /// Deleted; kept only until its delete job ends.
    Deleted,
}

/// A VM's power state as the hypervisor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PowerState {
    /// Powered on.
    Running,
    /// Powered off.
    Stopped,
    /// Paused or suspended.
    Paused,
    /// Not known (not yet observed, or the host is unreachable).
    Unknown,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            PowerState::Running => "RUNNING",
            PowerState::Stopped => "STOPPED",
            PowerState::Paused => "PAUSED",
            PowerState::Unknown => "UNKNOWN",
        })
    }
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            DesiredState::Pending => "PENDING",
            DesiredState::Active => "ACTIVE",
            DesiredState::Error => "ERROR",
            DesiredState::Deleted => "DELETED",
        })
    }
}

/// Where a VM lives: visible to operators only, never to tenants.
#[derive(Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProviderBinding {
    /// The provider name from the hosts file.
    pub provider: Arc<str>,
    /// The placement target it is bound to: a host, or a cluster whose provider chose the host.
    pub host: Arc<str>,
    /// The hypervisor's own id for the VM, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_id: Option<String>,
    /// On a cluster target, the member host the VM runs on, as the create reported and the last
    /// refresh observed (or, before the create ran, the one HCP pinned for the VM's server
    /// group); `None` on a host target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_host: Option<String>,
}

clone_in_place!(ProviderBinding {
    copy: [],
    clone: [provider, host, native_id, member_host],
});

impl ProviderBinding {
    /// Returns where a server group's policy counts this VM: its target, or `cluster/member`
    /// when a member host of a cluster target is known.
    pub fn group_slot(&self) -> String {
        match &self.member_host {
            Some(m) => format!("{}/{m}", self.host),
            None => self.host.to_string(),
        }
    }
}

/// HCP's mark, which providers record on each VM they create (notes, metadata, tags), so that
/// an HCP started with an empty store rebuilds who owns what from the hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HcpMark {
    /// HCP's VM id.
    pub vm_id: VmId,
    /// The owning project.
    pub project: ProjectId,
    /// The image the VM was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The flavor the VM was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// The zone the VM was placed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// When HCP accepted the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Whether cloud-init user-data was given (the data itself is never recorded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_data: bool,
    /// The server group the VM was created into, so that a VM rebuilt from its mark stays a
    /// member (every provider records it with the rest of the mark).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_group: Option<ServerGroupId>,
}

impl HcpMark {
    /// Creates a mark for `vm_id` owned by `project`, with no other details.
    pub fn new(vm_id: VmId, project: ProjectId) -> Self {
        HcpMark {
            vm_id,
            project,
            image: None,
            flavor: None,
            zone: None,
            created_at: None,
            user_data: false,
            server_group: None,
        }
    }
}

/// A VM as HCP knows it (the full, operator view).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    /// HCP's VM id.
    pub id: VmId,
    /// The owning project.
    pub project: ProjectId,
    /// The spec it was created from (rebuilt from the host after a stateless restart).
    pub spec: Arc<VmSpec>,
    /// Its resolved size.
    pub resources: Resources,
    /// The zone it was placed in.
    pub zone: Arc<str>,
    /// The lifecycle state HCP wants.
    pub desired: DesiredState,
    /// The power state HCP wants.
    pub desired_power: PowerState,
    /// The power state last observed on the host.
    pub power: PowerState,
    /// Whether the last inventory saw the VM on its host.
    pub present: bool,
    /// Where it lives.
    pub binding: ProviderBinding,
    /// The error of the last failed job, if its state is `ERROR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Box<ErrorInfo>>,
    /// When HCP accepted it.
    pub created_at: DateTime<Utc>,
    /// When HCP last changed its record.
    pub updated_at: DateTime<Utc>,
    /// The compare-and-swap generation, bumped on every write.
    pub generation: u64,
}

clone_in_place!(Vm {
    copy: [
        resources,
        desired,
        desired_power,
        power,
        present,
        created_at,
        updated_at,
        generation
    ],
    clone: [id, project, spec, zone, binding, last_error],
});

impl Vm {
    /// Returns the tenant view: no host, no native id, no provider.
    pub fn tenant_view(&self) -> TenantVm {
        let mut spec = VmSpec::clone(&self.spec);
        // User-data may carry secrets: tenants see that it was set, not its text.
        let has_user_data = spec.user_data.take().is_some();
        TenantVm {
            id: self.id.clone(),
            project: self.project.clone(),
            name: spec.name.clone(),
            spec,
            has_user_data,
            resources: self.resources,
            zone: self.zone.to_string(),
            state: self.desired,
            power: self.power,
            desired_power: self.desired_power,
            last_error: self.last_error.as_deref().map(ErrorInfo::tenant),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A VM as a tenant sees it: no host names, native ids or datastores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantVm {
    /// HCP's VM id.
    pub id: VmId,
    /// The owning project.
    pub project: ProjectId,
    /// The VM name.
    pub name: String,
    /// The spec, without user-data.
    pub spec: VmSpec,
    /// Whether user-data was given.
    pub has_user_data: bool,
    /// The resolved size.
    pub resources: Resources,
    /// The zone.
    pub zone: String,
    /// The lifecycle state.
    pub state: DesiredState,
    /// The observed power state.
    pub power: PowerState,
    /// The wanted power state.
    pub desired_power: PowerState,
    /// The error of the last failed job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorInfo>,
    /// When HCP accepted it.
    pub created_at: DateTime<Utc>,
    /// When HCP last changed it.
    pub updated_at: DateTime<Utc>,
}

/// A placement target (a hypervisor host, or a cluster of hosts) with its capacity and health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// The placement target's name (a host's or a cluster's).
    pub name: String,
    /// A host or a cluster.
    #[serde(default)]
    pub kind: crate::TargetKind,
    /// A cluster's member hosts with their own capacity; empty for a host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<crate::MemberHost>,
    /// The provider it belongs to.
    pub provider: String,
    /// Its zone.
    pub zone: String,
    /// Whether it answered the last inventory.
    pub available: bool,
    /// Why it is unavailable, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
    /// Total vCPUs it offers.
    pub vcpus_total: u32,
    /// vCPUs used by its VMs.
    pub vcpus_used: u32,
    /// Total memory in MiB.
    pub memory_mib_total: u64,
    /// Memory used by its VMs, in MiB.
    pub memory_mib_used: u64,
    /// VMs on it.
    pub vm_count: usize,
    /// Its effective capabilities (provider ∧ zone ∧ host).
    pub capabilities: Capabilities,
    /// When it was last inventoried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<DateTime<Utc>>,
}

/// A bootable image in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// The image name tenants use.
    pub name: String,
    /// The operating system family (`linux`, `windows`).
    #[serde(default = "default_os")]
    pub os: String,
    /// A short description.
    #[serde(default)]
    pub description: String,
    /// The smallest disk it boots from, in GiB.
    #[serde(default)]
    pub min_disk_gib: u64,
}

fn default_os() -> String {
    "linux".into()
}

/// A named VM size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    /// The flavor name tenants use.
    pub name: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
}

/// A network VMs can attach to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The network name tenants use.
    pub name: String,
    /// The VLAN id, if tagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The zones where it exists (every zone when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// A short description.
    #[serde(default)]
    pub description: String,
}

/// A placement zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// The zone name.
    pub name: String,
    /// A short description.
    #[serde(default)]
    pub description: String,
}

/// What tenants can choose from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Images.
    pub images: Vec<Image>,
    /// Flavors.
    pub flavors: Vec<Flavor>,
    /// Networks.
    pub networks: Vec<Network>,
    /// Zones.
    pub zones: Vec<Zone>,
}

impl Catalog {
    /// Looks up an image.
    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.name == name)
    }

    /// Looks up a flavor.
    pub fn flavor(&self, name: &str) -> Option<&Flavor> {
        self.flavors.iter().find(|f| f.name == name)
    }

    /// Looks up a zone.
    pub fn zone(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.name == name)
    }

    /// Looks up a network.
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// Validates `spec` against the catalog and resolves its size.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidSpec`] naming the field (`image`, `flavor`, `zone`, `networks[i]`)
    /// and listing what is allowed.
    pub fn resolve(&self, spec: &VmSpec) -> Result<Resources> {
        spec.validate()?;
        let image = self.image(&spec.image).ok_or_else(|| {
            Error::invalid(
                "image",
                format!(
                    "unknown image `{}`; known: {}",
                    spec.image,
                    names(self.images.iter().map(|i| &i.name))
                ),
            )
        })?;
        let base = match &spec.flavor {
            Some(f) => {
                let flavor = self.flavor(f).ok_or_else(|| {
                    Error::invalid(
                        "flavor",
                        format!(
                            "unknown flavor `{f}`; known: {}",
                            names(self.flavors.iter().map(|f| &f.name))
                        ),
                    )
                })?;
                Resources {
                    vcpus: flavor.vcpus,
                    memory_mib: flavor.memory_mib,
                    disk_gib: flavor.disk_gib,
                }
            }
            None => Resources::default(),
        };
        let resources = Resources {
            vcpus: spec.vcpus.unwrap_or(base.vcpus),
            memory_mib: spec.memory_mib.unwrap_or(base.memory_mib),
            disk_gib: spec.disk_gib.unwrap_or(base.disk_gib),
        };
        // A flavor's sizes pass the same bounds as explicit ones (the hosts file is checked
        // too; this keeps a catalog built in code honest).
        resources.validate()?;
        if resources.disk_gib < image.min_disk_gib {
            return Err(Error::invalid(
                "disk_gib",
                format!(
                    "{} GiB is smaller than image `{}` needs ({} GiB)",
                    resources.disk_gib, image.name, image.min_disk_gib
                ),
            ));
        }
        if let Some(z) = &spec.zone
            && self.zone(z).is_none()
        {
            return Err(Error::invalid(
                "zone",
                format!(
                    "unknown zone `{z}`; known: {}",
                    names(self.zones.iter().map(|z| &z.name))
                ),
            ));
        }
        for (i, att) in spec.networks.iter().enumerate() {
            let net = self.network(&att.network).ok_or_else(|| {
                Error::invalid(
                    format!("networks[{i}].network"),
                    format!(
                        "unknown network `{}`; known: {}",
                        att.network,
                        names(self.networks.iter().map(|n| &n.name))
                    ),
                )
            })?;
            if let Some(z) = &spec.zone
                && !net.zones.is_empty()
                && !net.zones.contains(z)
            {
                return Err(Error::invalid(
                    format!("networks[{i}].network"),
                    format!(
                        "network `{}` does not exist in zone `{}`",
                        net.name,
                        crate::error::echo(z)
                    ),
                ));
            }
        }
        Ok(resources)
    }
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Who acts: attributed in jobs and audit events.
#[derive(Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// The subject (a user, a service account, or `system:…` for HCP itself). Shared text: a
    /// job record and each of its events carry it, and a copy costs a reference count.
    pub subject: Arc<str>,
}

clone_in_place!(Principal {
    copy: [],
    clone: [subject],
});

impl Principal {
    /// Creates a principal for `subject`.
    pub fn new(subject: impl Into<Arc<str>>) -> Self {
        Principal {
            subject: subject.into(),
        }
    }

    /// The principal HCP's own reconciler acts as.
    pub fn system() -> Self {
        Principal::new("system:hcp")
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn an_id_made_from_a_clock_reading_carries_it_and_keeps_the_order() {
        let millis = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
        let before = JobId::generate();
        let at = JobId::generate_at(Some(millis));
        let after = JobId::generate();
        assert!(before < at && at < after, "{before} {at} {after}");
        let stamp = |id: &JobId| {
            let uuid = uuid::Uuid::parse_str(&id.as_str()[4..]).unwrap();
            let (secs, nanos) = uuid.get_timestamp().unwrap().to_unix();
            secs * 1000 + u64::from(nanos / 1_000_000)
        };
        // The reading, or the millisecond of `before` when that is later (to stay after it).
        assert_eq!(stamp(&at), millis.max(stamp(&before)));
        // A reading older than the last id's time still makes a later id.
        let old = JobId::generate_at(Some(millis - 60_000));
        assert!(old > after);
    }

    #[test]
    fn control_characters_are_found_as_char_is_control_finds_them() {
        for s in [
            "",
            "web-1",
            "a\tb",
            "nul\0",
            "del\u{7f}",
            "c1\u{85}",
            "c1\u{9f}",
            "\u{a0}nbsp",
            "caf\u{e9}",
            "\u{1f600}",
            "\u{200b}zero-width",
            "x\u{80}",
            "tail\n",
        ] {
            assert_eq!(
                super::has_control(s),
                s.chars().any(char::is_control),
                "{s:?}"
            );
        }
    }

    #[test]
    fn a_dns_label_names_its_first_bad_character_whole() {
        for (value, bad) in [
            ("web_1", "'_'"),
            ("web\u{e9}1", "'\u{e9}'"),
            ("a\u{1f600}", "'\u{1f600}'"),
        ] {
            let e = validate_dns_label("name", value).unwrap_err();
            assert!(
                e.message().contains(&format!("contains {bad}")),
                "{value:?}: {e}"
            );
        }
        assert!(validate_dns_label("name", "\u{e9}web").is_err());
        assert!(validate_dns_label("name", "web-").is_err());
        assert!(validate_dns_label("name", "1web").is_err());
        assert!(validate_dns_label("name", "").is_err());
        validate_dns_label("name", "web-1").unwrap();
    }

    #[test]
    fn generated_ids_are_their_prefix_and_a_time_ordered_uuid() {
        let first = VmId::generate();
        let id = first.as_str();
        let hex = id.strip_prefix("vm-").expect("prefix");
        assert_eq!(hex.len(), 32, "{id}");
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
        let uuid = uuid::Uuid::parse_str(hex).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 7, "{id}");
        assert!(JobId::generate().as_str().starts_with("job-"));
        assert!(ServerGroupId::generate().as_str().starts_with("sg-"));
        // Ids made later sort later (UUIDv7), and never repeat.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = VmId::generate();
        assert!(later > first, "{later} after {first}");
        let many: std::collections::HashSet<VmId> = (0..1000).map(|_| VmId::generate()).collect();
        assert_eq!(many.len(), 1000);
        let uuid = uuid::Uuid::parse_str(&later.as_str()[3..]).expect("a UUID");
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{later}");
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        let (secs, nanos) = uuid.get_timestamp().expect("a v7 timestamp").to_unix();
        let at = u128::from(secs) * 1000 + u128::from(nanos / 1_000_000);
        assert!(at <= millis && at + 5_000 > millis, "{at} vs {millis}");
    }

    #[test]
    fn ids_made_on_many_threads_are_unique_and_in_the_order_they_were_made() {
        // Each thread's ids increase; all are distinct; an id made after the threads ended
        // sorts after every one of theirs (the order is the process's, not each thread's).
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let ids: Vec<JobId> = (0..20_000).map(|_| JobId::generate()).collect();
                    assert!(
                        ids.windows(2).all(|w| w[0] < w[1]),
                        "a thread's ids out of order"
                    );
                    ids
                })
            })
            .collect();
        let all: Vec<JobId> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        let distinct: std::collections::HashSet<&JobId> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
        let after = JobId::generate();
        assert!(all.iter().all(|id| *id < after));
    }

    #[test]
    fn equal_ids_hash_equally_whatever_their_form() {
        use std::hash::BuildHasher;
        let hasher = std::collections::hash_map::RandomState::new();
        for text in [
            "vm-0192f0c4a1b27c3d8e9fa0b1c2d3e4f5",
            "job-0192f0c4a1b27c3d8e9fa0b1c2d3e4f5",
            "web",
            "a-much-longer-id-that-is-not-generated-at-all",
            "",
        ] {
            let (a, b) = (VmId::new(text), VmId::from(text.to_string()));
            assert_eq!(a, b);
            assert_eq!(hasher.hash_one(&a), hasher.hash_one(&b), "{text}");
        }
        // Generated ids differ in their random tails, and so do their hashes.
        let hashes: std::collections::HashSet<u64> = (0..1000)
            .map(|_| hasher.hash_one(VmId::generate()))
            .collect();
        assert_eq!(hashes.len(), 1000);
    }

    #[test]
    fn names_follow_dns_label_rules() {
        for ok in [
            "a",
            "web-1",
            "a23456789012345678901234567890123456789012345678901234567890123",
        ] {
            validate_dns_label("name", ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("1abc", "lowercase letter"),
            ("Abc", "lowercase letter"),
            ("ab_c", "contains"),
            ("ab-", "end with"),
            (
                "a234567890123456789012345678901234567890123456789012345678901234",
                "64 characters",
            ),
            ("ab'c", "contains"),
        ] {
            let e = validate_dns_label("name", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSpec);
            assert_eq!(e.field(), Some("name"));
            assert!(e.message().contains(why), "{bad:?}: {}", e.message());
        }
    }

    fn catalog() -> Catalog {
        Catalog {
            images: vec![Image {
                name: "ubuntu".into(),
                os: "linux".into(),
                description: String::new(),
                min_disk_gib: 5,
            }],
            flavors: vec![Flavor {
                name: "small".into(),
                vcpus: 1,
                memory_mib: 1024,
                disk_gib: 10,
            }],
            networks: vec![],
            zones: vec![Zone {
                name: "z".into(),
                description: String::new(),
            }],
        }
    }

    #[test]
    fn resolve_names_the_bad_field() {
        let c = catalog();
        let r = c.resolve(&VmSpec::new("a", "ubuntu", "small")).unwrap();
        assert_eq!(
            r,
            Resources {
                vcpus: 1,
                memory_mib: 1024,
                disk_gib: 10
            }
        );
        let cases = [
            (VmSpec::new("a", "nope", "small"), "image"),
            (VmSpec::new("a", "ubuntu", "huge"), "flavor"),
            (VmSpec::new("a", "ubuntu", "small").with_zone("zz"), "zone"),
            (
                VmSpec {
                    vcpus: Some(0),
                    ..VmSpec::new("a", "ubuntu", "small")
                },
                "vcpus",
            ),
            (
                VmSpec {
                    disk_gib: Some(1),
                    ..VmSpec::new("a", "ubuntu", "small")
                },
                "disk_gib",
            ),
            (
                VmSpec {
                    flavor: None,
                    ..VmSpec::new("a", "ubuntu", "small")
                },
                "vcpus",
            ),
            (VmSpec::new("", "ubuntu", "small"), "name"),
            (
                VmSpec::new("a", "ubuntu", "small").with_user_data("x".repeat(70_000)),
                "user_data",
            ),
            (
                VmSpec::new("a", "ubuntu", "small").with_tag("bad key", "v"),
                "tags.bad key",
            ),
            (
                VmSpec {
                    networks: vec![NetworkAttachment {
                        network: "lan".into(),
                    }],
                    ..VmSpec::new("a", "ubuntu", "small")
                },
                "networks[0].network",
            ),
        ];
        for (spec, field) in cases {
            let e = c.resolve(&spec).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{spec:?}");
            assert_eq!(e.field(), Some(field), "{e}");
        }
    }

    #[test]
    fn explicit_sizes_override_flavor() {
        let c = catalog();
        let spec = VmSpec {
            vcpus: Some(4),
            ..VmSpec::new("a", "ubuntu", "small")
        };
        assert_eq!(c.resolve(&spec).unwrap().vcpus, 4);
    }

    #[test]
    fn spec_rejects_unknown_fields() {
        let e =
            serde_json::from_str::<VmSpec>(r#"{"name":"a","image":"i","host":"h"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `host`"));
    }

    #[test]
    fn tenant_view_hides_binding_and_user_data() {
        let now = Utc::now();
        let vm = Vm {
            id: VmId::generate(),
            project: "demo".into(),
            spec: Arc::new(
                VmSpec::new("a", "ubuntu", "small")
                    .with_user_data("#cloud-config\npassword: s3cret"),
            ),
            resources: Resources::default(),
            zone: "z".into(),
            desired: DesiredState::Active,
            desired_power: PowerState::Running,
            power: PowerState::Running,
            present: true,
            binding: ProviderBinding {
                provider: "sim".into(),
                host: "secret-host-name".into(),
                native_id: Some("native-77".into()),
                member_host: None,
            },
            last_error: None,
            created_at: now,
            updated_at: now,
            generation: 1,
        };
        let text = serde_json::to_string(&vm.tenant_view()).unwrap();
        assert!(!text.contains("secret-host-name"));
        assert!(!text.contains("native-77"));
        assert!(!text.contains("s3cret"));
        assert!(text.contains("\"has_user_data\":true"));
    }
}
