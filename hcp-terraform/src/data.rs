//! The data sources: HCP's catalog (`hcp_images`, `hcp_flavors`, `hcp_zones`) and what a zone
//! offers (`hcp_capabilities`), read from the common API.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint, AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, DataSource, Diagnostics};

use crate::common::{attr, schema};
use crate::diag;
use crate::provider::Shared;

fn object(fields: &[(&str, AttributeType)]) -> AttributeType {
    AttributeType::Object(
        fields
            .iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect(),
    )
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One catalog image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageItem {
    /// The image name.
    pub name: String,
    /// `linux` or `windows`.
    pub os: String,
    /// What it is.
    pub description: String,
    /// The smallest disk it fits on, in GiB.
    pub min_disk_gib: i64,
}

/// The state of `hcp_images`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImagesState {
    /// The catalog's images.
    pub images: Value<Vec<ImageItem>>,
}

/// `data "hcp_images"`: the images of HCP's catalog.
#[derive(Debug, Clone)]
pub struct ImagesData {
    shared: Shared,
}

impl ImagesData {
    /// Creates the data source over the provider's connection.
    pub fn new(shared: Shared) -> Self {
        ImagesData { shared }
    }
}

#[async_trait]
impl DataSource for ImagesData {
    type State<'a> = ImagesState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "The images of HCP's catalog.",
            vec![(
                "images",
                attr(
                    AttributeType::List(Box::new(object(&[
                        ("name", AttributeType::String),
                        ("os", AttributeType::String),
                        ("description", AttributeType::String),
                        ("min_disk_gib", AttributeType::Number),
                    ]))),
                    "The images: name, os, description and min_disk_gib.",
                    AttributeConstraint::Computed,
                ),
            )],
        ))
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        _config: ImagesState,
        _meta: ValueEmpty,
    ) -> Option<ImagesState> {
        let conn = self.shared.get(diags)?;
        match conn.client.images().await {
            Ok(images) => Some(ImagesState {
                images: Value::Value(
                    images
                        .into_iter()
                        .map(|i| ImageItem {
                            name: i.name,
                            os: i.os,
                            description: i.description,
                            min_disk_gib: to_i64(i.min_disk_gib),
                        })
                        .collect(),
                ),
            }),
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                None
            }
        }
    }
}

/// One catalog flavor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlavorItem {
    /// The flavor name.
    pub name: String,
    /// vCPUs.
    pub vcpus: i64,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// Disk in GiB.
    pub disk_gib: i64,
}

/// The state of `hcp_flavors`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FlavorsState {
    /// The catalog's flavors.
    pub flavors: Value<Vec<FlavorItem>>,
}

/// `data "hcp_flavors"`: the flavors (sizes) of HCP's catalog.
#[derive(Debug, Clone)]
pub struct FlavorsData {
    shared: Shared,
}

impl FlavorsData {
    /// Creates the data source over the provider's connection.
    pub fn new(shared: Shared) -> Self {
        FlavorsData { shared }
    }
}

#[async_trait]
impl DataSource for FlavorsData {
    type State<'a> = FlavorsState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "The flavors (sizes) of HCP's catalog.",
            vec![(
                "flavors",
                attr(
                    AttributeType::List(Box::new(object(&[
                        ("name", AttributeType::String),
                        ("vcpus", AttributeType::Number),
                        ("memory_mib", AttributeType::Number),
                        ("disk_gib", AttributeType::Number),
                    ]))),
                    "The flavors: name, vcpus, memory_mib and disk_gib.",
                    AttributeConstraint::Computed,
                ),
            )],
        ))
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        _config: FlavorsState,
        _meta: ValueEmpty,
    ) -> Option<FlavorsState> {
        let conn = self.shared.get(diags)?;
        match conn.client.flavors().await {
            Ok(flavors) => Some(FlavorsState {
                flavors: Value::Value(
                    flavors
                        .into_iter()
                        .map(|f| FlavorItem {
                            name: f.name,
                            vcpus: i64::from(f.vcpus),
                            memory_mib: to_i64(f.memory_mib),
                            disk_gib: to_i64(f.disk_gib),
                        })
                        .collect(),
                ),
            }),
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                None
            }
        }
    }
}

/// One placement zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneItem {
    /// The zone name.
    pub name: String,
    /// What it is.
    pub description: String,
}

/// The state of `hcp_zones`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ZonesState {
    /// The zones.
    pub zones: Value<Vec<ZoneItem>>,
}

/// `data "hcp_zones"`: HCP's placement zones.
#[derive(Debug, Clone)]
pub struct ZonesData {
    shared: Shared,
}

impl ZonesData {
    /// Creates the data source over the provider's connection.
    pub fn new(shared: Shared) -> Self {
        ZonesData { shared }
    }
}

#[async_trait]
impl DataSource for ZonesData {
    type State<'a> = ZonesState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "HCP's placement zones.",
            vec![(
                "zones",
                attr(
                    AttributeType::List(Box::new(object(&[
                        ("name", AttributeType::String),
                        ("description", AttributeType::String),
                    ]))),
                    "The zones: name and description.",
                    AttributeConstraint::Computed,
                ),
            )],
        ))
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        _config: ZonesState,
        _meta: ValueEmpty,
    ) -> Option<ZonesState> {
        let conn = self.shared.get(diags)?;
        match conn.client.zones().await {
            Ok(zones) => Some(ZonesState {
                zones: Value::Value(
                    zones
                        .into_iter()
                        .map(|z| ZoneItem {
                            name: z.name,
                            description: z.description,
                        })
                        .collect(),
                ),
            }),
            Err(e) => {
                diag::report(diags, &e, &AttributePath::root());
                None
            }
        }
    }
}

/// The state of `hcp_capabilities`: what can be asked for in a zone, or anywhere.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CapabilitiesState {
    /// The zone asked about; any zone when null.
    pub zone: Value<String>,
    /// Cloud-init user-data is passed to new VMs.
    pub cloud_init: Value<bool>,
    /// Snapshots can be taken.
    pub snapshot: Value<bool>,
    /// Running VMs can move between hosts.
    pub live_migration: Value<bool>,
    /// Stopped VMs can move between hosts (a cold move).
    pub cold_migration: Value<bool>,
    /// VMs can change size after creation.
    pub resize: Value<bool>,
    /// A VNC console is offered.
    pub console_vnc: Value<bool>,
    /// A SPICE console is offered.
    pub console_spice: Value<bool>,
    /// An RDP console is offered.
    pub console_rdp: Value<bool>,
    /// A WebMKS console is offered.
    pub console_webmks: Value<bool>,
    /// A browser console URL is offered.
    pub console_web: Value<bool>,
    /// GPUs can be passed through.
    pub gpu_passthrough: Value<bool>,
    /// Tags are stored on VMs.
    pub tags: Value<bool>,
    /// Most vCPUs of one VM; null when unlimited.
    pub max_vcpus: Value<i64>,
    /// Most memory of one VM in MiB; null when unlimited.
    pub max_memory_mib: Value<i64>,
    /// Largest disk of one VM in GiB; null when unlimited.
    pub max_disk_gib: Value<i64>,
    /// Most networks of one VM; null when unlimited.
    pub max_networks: Value<i64>,
}

/// `data "hcp_capabilities"`: what VMs in a zone (or anywhere) can ask for.
#[derive(Debug, Clone)]
pub struct CapabilitiesData {
    shared: Shared,
}

impl CapabilitiesData {
    /// Creates the data source over the provider's connection.
    pub fn new(shared: Shared) -> Self {
        CapabilitiesData { shared }
    }
}

const CAPABILITY_FLAGS: &[(&str, &str)] = &[
    ("cloud_init", "Cloud-init user-data is passed to new VMs."),
    ("snapshot", "Snapshots can be taken."),
    ("live_migration", "Running VMs can move between hosts."),
    (
        "cold_migration",
        "Stopped VMs can move between hosts (a cold move).",
    ),
    ("resize", "VMs can change size after creation."),
    ("console_vnc", "A VNC console is offered."),
    ("console_spice", "A SPICE console is offered."),
    ("console_rdp", "An RDP console is offered."),
    ("console_webmks", "A VMware WebMKS console is offered."),
    ("console_web", "A browser console URL is offered."),
    ("gpu_passthrough", "GPUs can be passed through to VMs."),
    ("tags", "Tags are stored on VMs."),
];

const CAPABILITY_LIMITS: &[(&str, &str)] = &[
    ("max_vcpus", "Most vCPUs of one VM; null when unlimited."),
    (
        "max_memory_mib",
        "Most memory of one VM in MiB; null when unlimited.",
    ),
    (
        "max_disk_gib",
        "Largest disk of one VM in GiB; null when unlimited.",
    ),
    (
        "max_networks",
        "Most networks of one VM; null when unlimited.",
    ),
];

#[async_trait]
impl DataSource for CapabilitiesData {
    type State<'a> = CapabilitiesState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let mut attrs = vec![(
            "zone",
            attr(
                AttributeType::String,
                "The zone to ask about; what any zone offers when unset.",
                AttributeConstraint::Optional,
            ),
        )];
        for (name, doc) in CAPABILITY_FLAGS {
            attrs.push((
                name,
                attr(AttributeType::Bool, doc, AttributeConstraint::Computed),
            ));
        }
        for (name, doc) in CAPABILITY_LIMITS {
            attrs.push((
                name,
                attr(AttributeType::Number, doc, AttributeConstraint::Computed),
            ));
        }
        Some(schema(
            "What VMs in a zone (or in any zone) can ask for.",
            attrs,
        ))
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: CapabilitiesState,
        _meta: ValueEmpty,
    ) -> Option<CapabilitiesState> {
        let conn = self.shared.get(diags)?;
        let zone = config.zone.as_ref_option().cloned();
        let c = match conn.client.capabilities(zone.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                diag::report(diags, &e, &AttributePath::new("zone"));
                return None;
            }
        };
        let limit = |v: Option<u64>| Value::from(v.map(to_i64));
        Some(CapabilitiesState {
            zone: config.zone,
            cloud_init: c.cloud_init.into(),
            snapshot: c.snapshot.into(),
            live_migration: c.live_migration.into(),
            cold_migration: c.cold_migration.into(),
            resize: c.resize.into(),
            console_vnc: c.console_vnc.into(),
            console_spice: c.console_spice.into(),
            console_rdp: c.console_rdp.into(),
            console_webmks: c.console_webmks.into(),
            console_web: c.console_web.into(),
            gpu_passthrough: c.gpu_passthrough.into(),
            tags: c.tags.into(),
            max_vcpus: limit(c.max_vcpus.map(u64::from)),
            max_memory_mib: limit(c.max_memory_mib),
            max_disk_gib: limit(c.max_disk_gib),
            max_networks: limit(c.max_networks.map(u64::from)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capabilities_schema_names_every_state_field() {
        let s = CapabilitiesData::new(Shared::default())
            .schema(&mut Diagnostics::default())
            .unwrap();
        let state = serde_json::to_value(CapabilitiesState::default()).unwrap();
        let fields: Vec<&String> = state.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), s.block.attributes.len());
        for f in fields {
            assert!(
                s.block.attributes.contains_key(f),
                "{f} is not in the schema"
            );
        }
    }
}
