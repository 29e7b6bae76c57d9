//! Pieces every resource and data source uses: attribute and schema builders, and the project a
//! resource acts in.

use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};
use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use crate::diag;
use crate::provider::Connection;

/// A plain (not sensitive, not deprecated) attribute.
pub(crate) fn attr(
    t: AttributeType,
    description: &str,
    constraint: AttributeConstraint,
) -> Attribute {
    Attribute {
        attr_type: t,
        description: Description::plain(description),
        constraint,
        sensitive: false,
        deprecated: false,
    }
}

/// A version-1 schema of `attrs`, described by `description`.
pub(crate) fn schema(description: &str, attrs: Vec<(&str, Attribute)>) -> Schema {
    Schema {
        version: 1,
        block: Block {
            version: 1,
            attributes: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            description: Description::plain(description),
            ..Default::default()
        },
    }
}

/// The project a resource acts in: its own `project`, else the provider's default; a
/// diagnostic on `project` when neither is set.
pub(crate) fn project_of(
    diags: &mut Diagnostics,
    conn: &Connection,
    project: &Value<String>,
) -> Option<String> {
    match project {
        Value::Value(p) => Some(p.clone()),
        _ => match &conn.project {
            Some(p) => Some(p.clone()),
            None => {
                diag::error(
                    diags,
                    "Missing project",
                    "Set `project` on the resource, or a default `project` (or HCP_PROJECT) on the provider.",
                    AttributePath::new("project"),
                );
                None
            }
        },
    }
}
