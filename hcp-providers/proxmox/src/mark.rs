//! HCP's mark on a PVE VM: a JSON line in the VM's description (with the VM's HCP tags), and
//! the PVE tag `hcp` plus the VM's tags where PVE's tag syntax can hold them.
//!
//! ```text
//! Managed by HCP; keep the next line.
//! hcp-mark: {"mark":{"vm_id":"vm-…","project":"demo",…},"tags":{"team":"web"}}
//! ```

use std::collections::BTreeMap;

use hcp_core::HcpMark;
use serde::{Deserialize, Serialize};

/// The prefix of the description line that holds the mark.
pub const PREFIX: &str = "hcp-mark: ";
/// The PVE tag every VM HCP creates carries.
pub const TAG: &str = "hcp";

#[derive(Serialize, Deserialize)]
struct Note {
    mark: HcpMark,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
}

/// Renders the description that records `mark` and `tags`.
pub fn description(mark: &HcpMark, tags: &BTreeMap<String, String>) -> String {
    let note = Note {
        mark: mark.clone(),
        tags: tags.clone(),
    };
    let json = serde_json::to_string(&note).unwrap_or_default();
    format!("Managed by HCP; keep the next line.\n{PREFIX}{json}\n")
}

/// Reads the mark and tags from a VM's description; `None` when it carries no (valid) mark.
pub fn parse(description: &str) -> Option<(HcpMark, BTreeMap<String, String>)> {
    description.lines().find_map(|line| {
        let json = line.trim().strip_prefix(PREFIX.trim_end())?;
        let note: Note = serde_json::from_str(json.trim()).ok()?;
        Some((note.mark, note.tags))
    })
}

/// Returns PVE's `tags` value for a VM: `hcp`, then `key-value` for each tag PVE's tag syntax
/// (`[a-z0-9_][a-z0-9_+.-]*`) can hold; the description keeps every tag exactly.
pub fn pve_tags(tags: &BTreeMap<String, String>) -> String {
    let mut out = vec![TAG.to_string()];
    for (k, v) in tags {
        let t = format!("{k}-{v}").to_ascii_lowercase();
        let ok = t
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-'));
        if ok && t.len() <= 64 {
            out.push(t);
        }
    }
    out.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcp_core::{ProjectId, VmId};

    #[test]
    fn a_mark_survives_the_description() {
        let mut mark = HcpMark::new(VmId::new("vm-1"), ProjectId::new("demo"));
        mark.image = Some("ubuntu".into());
        let tags = BTreeMap::from([
            ("team".to_string(), "Web".to_string()),
            ("odd key".to_string(), "x".to_string()),
        ]);
        let d = description(&mark, &tags);
        let (back, back_tags) = parse(&format!("notes above\n{d}more notes")).unwrap();
        assert_eq!(back, mark);
        assert_eq!(back_tags, tags);
        assert_eq!(pve_tags(&tags), "hcp;team-web");
        assert!(parse("hcp-mark: {not json").is_none());
        assert!(parse("a VM someone else made").is_none());
    }
}
