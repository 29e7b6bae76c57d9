//! Turns `create_vm`'s Python arguments into a [`VmSpec`] with the same fields as the HTTP API's
//! create body (`CreateVmRequest`): `flavor` or explicit `vcpus`/`memory_mib`/`disk_gib`,
//! `networks`, `zone`, `user_data`, `tags`.
//!
//! A value of the wrong type becomes `hcp.InvalidSpec` naming the field (never a bare
//! `TypeError` or `ValueError`), as the service's schema would refuse it. Ranges, lengths and
//! names are checked once, where the spec is submitted (`VmSpec::validate` in the engine, or the
//! service's own validation), so both modes refuse with the same words.

use std::collections::BTreeMap;

use hcp_core::{
    Error, MAX_DISK_GIB, MAX_MEMORY_MIB, MAX_NETWORKS, MAX_TAGS, MAX_VCPUS, MIN_DISK_GIB,
    MIN_MEMORY_MIB, MIN_VCPUS, NetworkAttachment, VmSpec, echo,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};

/// The arguments of one `create_vm` call, as Python gave them (`None` where left out).
pub struct CreateArgs<'py> {
    /// The VM name.
    pub name: Bound<'py, PyAny>,
    /// The catalog image.
    pub image: Bound<'py, PyAny>,
    /// The catalog flavor, or `None`.
    pub flavor: Bound<'py, PyAny>,
    /// Explicit vCPUs, or `None`.
    pub vcpus: Bound<'py, PyAny>,
    /// Explicit memory in MiB, or `None`.
    pub memory_mib: Bound<'py, PyAny>,
    /// Explicit disk size in GiB, or `None`.
    pub disk_gib: Bound<'py, PyAny>,
    /// Networks: a list of names or of `{"network": name}` mappings, or `None`.
    pub networks: Bound<'py, PyAny>,
    /// The placement zone, or `None`.
    pub zone: Bound<'py, PyAny>,
    /// Cloud-init user-data, or `None`.
    pub user_data: Bound<'py, PyAny>,
    /// Tags: a mapping of str to str, or `None`.
    pub tags: Bound<'py, PyAny>,
    /// The server group's id, or `None`.
    pub server_group: Bound<'py, PyAny>,
}

impl CreateArgs<'_> {
    /// Builds the spec, refusing any argument of the wrong type.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the first argument of the wrong type (or the
    /// entry inside it: `networks[1]`, `tags.team`).
    pub fn to_spec(&self) -> Result<VmSpec, Error> {
        Ok(VmSpec {
            name: required_str("name", &self.name)?,
            image: required_str("image", &self.image)?,
            flavor: optional_str("flavor", &self.flavor)?,
            vcpus: optional_int(
                "vcpus",
                &self.vcpus,
                (MIN_VCPUS.into(), MAX_VCPUS.into(), ""),
            )?,
            memory_mib: optional_int(
                "memory_mib",
                &self.memory_mib,
                (MIN_MEMORY_MIB, MAX_MEMORY_MIB, " MiB"),
            )?,
            disk_gib: optional_int(
                "disk_gib",
                &self.disk_gib,
                (MIN_DISK_GIB, MAX_DISK_GIB, " GiB"),
            )?,
            networks: networks(&self.networks)?,
            zone: optional_str("zone", &self.zone)?,
            user_data: optional_str("user_data", &self.user_data)?,
            tags: tags(&self.tags)?,
            server_group: optional_str("server_group", &self.server_group)?
                .map(hcp_core::ServerGroupId::new),
        })
    }
}

/// Returns the Python type name of `value` (`"int"`, `"dict"`), for error messages.
fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an unknown type".into())
}

pub(crate) fn required_str(field: &str, value: &Bound<'_, PyAny>) -> Result<String, Error> {
    let Ok(s) = value.cast::<PyString>() else {
        return Err(Error::invalid(
            field,
            format!("must be a string, not {}", type_name(value)),
        ));
    };
    s.extract::<String>()
        .map_err(|_| Error::invalid(field, "must be valid Unicode (no lone surrogates)"))
}

pub(crate) fn optional_str(field: &str, value: &Bound<'_, PyAny>) -> Result<Option<String>, Error> {
    if value.is_none() {
        return Ok(None);
    }
    required_str(field, value).map(Some)
}

/// Reads a non-negative integer that fits `T`; `bounds` (least, most, unit) only word the error
/// for a value that does not fit, since the allowed range is checked with the rest of the spec.
fn optional_int<T: TryFrom<u64>>(
    field: &str,
    value: &Bound<'_, PyAny>,
    bounds: (u64, u64, &str),
) -> Result<Option<T>, Error> {
    if value.is_none() {
        return Ok(None);
    }
    // `True` is an `int` to Python, but never a size.
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(Error::invalid(
            field,
            format!("must be an integer, not {}", type_name(value)),
        ));
    }
    value
        .extract::<u64>()
        .ok()
        .and_then(|v| T::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| {
            let shown = value
                .str()
                .map(|s| echo(&s.to_string_lossy()))
                .unwrap_or_default();
            let (min, max, unit) = bounds;
            Error::invalid(
                field,
                format!("{shown} is out of range; allowed: {min}{unit} to {max}{unit}"),
            )
        })
}

/// Reads a flag that must be a `bool` (not merely truthy).
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming `field` when `value` is not a `bool`.
pub(crate) fn flag(field: &str, value: &Bound<'_, PyAny>) -> Result<bool, Error> {
    value.cast::<PyBool>().map(|b| b.is_true()).map_err(|_| {
        Error::invalid(
            field,
            format!("must be True or False, not {}", type_name(value)),
        )
    })
}

/// Reads an optional number of seconds: `None`, an `int` or a `float` (never a `bool`); its range
/// is checked where the wait starts.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming `field` for any other type.
pub(crate) fn seconds(field: &str, value: &Bound<'_, PyAny>) -> Result<Option<f64>, Error> {
    if value.is_none() {
        return Ok(None);
    }
    if value.is_instance_of::<PyBool>()
        || !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>())
    {
        return Err(Error::invalid(
            field,
            format!("must be a number of seconds, not {}", type_name(value)),
        ));
    }
    value
        .extract::<f64>()
        .map(Some)
        .map_err(|_| Error::invalid(field, "is out of range"))
}

fn networks(value: &Bound<'_, PyAny>) -> Result<Vec<NetworkAttachment>, Error> {
    const SHAPE: &str = "must be a list of network names or of {\"network\": name} dicts";
    if value.is_none() {
        return Ok(Vec::new());
    }
    let items: Vec<Bound<'_, PyAny>> = if let Ok(list) = value.cast::<PyList>() {
        list.iter().collect()
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        return Err(Error::invalid(
            "networks",
            format!("{SHAPE}, not {}", type_name(value)),
        ));
    };
    if items.len() > MAX_NETWORKS {
        return Err(Error::invalid(
            "networks",
            format!(
                "has {} entries; at most {MAX_NETWORKS} networks are allowed",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| network(i, item))
        .collect()
}

fn network(i: usize, item: &Bound<'_, PyAny>) -> Result<NetworkAttachment, Error> {
    let field = format!("networks[{i}]");
    if item.is_instance_of::<PyString>() {
        return Ok(NetworkAttachment {
            network: required_str(&field, item)?,
        });
    }
    let Ok(mapping) = item.cast::<PyMapping>() else {
        return Err(Error::invalid(
            &field,
            format!(
                "must be a network name or a {{\"network\": name}} dict, not {}",
                type_name(item)
            ),
        ));
    };
    let entries = mapping
        .items()
        .map_err(|_| Error::invalid(&field, "cannot read this mapping's items"))?;
    let mut network = None;
    for entry in entries.iter() {
        let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = entry
            .extract()
            .map_err(|_| Error::invalid(&field, "cannot read this mapping's items"))?;
        let key = required_str(&field, &key)
            .map_err(|_| Error::invalid(&field, "keys must be strings; allowed: network"))?;
        if key != "network" {
            return Err(Error::invalid(
                &field,
                format!("unknown key `{}`; allowed: network", echo(&key)),
            ));
        }
        network = Some(required_str(&format!("{field}.network"), &value)?);
    }
    network
        .map(|network| NetworkAttachment { network })
        .ok_or_else(|| Error::invalid(format!("{field}.network"), "is required"))
}

pub(crate) fn tags(value: &Bound<'_, PyAny>) -> Result<BTreeMap<String, String>, Error> {
    if value.is_none() {
        return Ok(BTreeMap::new());
    }
    let Ok(mapping) = value.cast::<PyMapping>() else {
        return Err(Error::invalid(
            "tags",
            format!(
                "must be a mapping of str to str (such as {{\"team\": \"infra\"}}), not {}",
                type_name(value)
            ),
        ));
    };
    let len = mapping
        .len()
        .map_err(|_| Error::invalid("tags", "cannot read this mapping's length"))?;
    if len > MAX_TAGS {
        return Err(Error::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags are allowed"),
        ));
    }
    let entries = mapping
        .items()
        .map_err(|_| Error::invalid("tags", "cannot read this mapping's items"))?;
    let mut out = BTreeMap::new();
    for entry in entries.iter() {
        let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = entry
            .extract()
            .map_err(|_| Error::invalid("tags", "cannot read this mapping's items"))?;
        let key = required_str("tags", &key).map_err(|_| {
            Error::invalid(
                "tags",
                format!("keys must be strings, not {}", type_name(&key)),
            )
        })?;
        let value = required_str(&format!("tags.{}", echo(&key)), &value)?;
        out.insert(key, value);
    }
    Ok(out)
}
