//! HCP's mark on a vSphere VM: one `extraConfig` entry, `hcp.mark`, holding the mark and the VM's
//! tags as JSON. It travels with the VM (clones, relocations, vCenter restores), and inventory
//! reads it with the VM's other properties in the same round trip.

use std::collections::BTreeMap;

use hcp_core::HcpMark;
use serde::{Deserialize, Serialize};

/// The `extraConfig` key that holds the mark.
pub const KEY: &str = "hcp.mark";

#[derive(Serialize, Deserialize)]
struct Note {
    mark: HcpMark,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
}

/// Renders the `extraConfig` value that records `mark` and `tags`.
pub fn value(mark: &HcpMark, tags: &BTreeMap<String, String>) -> String {
    let note = Note {
        mark: mark.clone(),
        tags: tags.clone(),
    };
    serde_json::to_string(&note).unwrap_or_default()
}

/// Reads the mark and tags from a VM's `extraConfig`; `None` when it carries no (valid) mark.
pub fn parse(extra: &[(String, String)]) -> Option<(HcpMark, BTreeMap<String, String>)> {
    let (_, json) = extra.iter().find(|(k, _)| k == KEY)?;
    let note: Note = serde_json::from_str(json).ok()?;
    Some((note.mark, note.tags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcp_core::{ProjectId, VmId};

    #[test]
    fn round_trip() {
        let mark = HcpMark::new(VmId::generate(), ProjectId::new("demo"));
        let tags = BTreeMap::from([("team".to_string(), "web".to_string())]);
        let v = value(&mark, &tags);
        let extra = vec![
            ("govcsim".to_string(), "TRUE".to_string()),
            (KEY.to_string(), v),
        ];
        assert_eq!(parse(&extra), Some((mark, tags)));
        assert_eq!(parse(&[(KEY.to_string(), "{".to_string())]), None);
        assert_eq!(parse(&[]), None);
    }
}
