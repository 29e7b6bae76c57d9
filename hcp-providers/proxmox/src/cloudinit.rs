//! Cloud-init for cloned VMs.
//!
//! PVE builds a VM's cloud-init image from its config: `ciuser`, `sshkeys` (URL-encoded),
//! `ipconfig0`, and, for anything else, `cicustom` naming snippet files on a storage with
//! `snippets` content. PVE has no API to upload a snippet, so HCP writes the user-data itself
//! into `snippets_dir` (that storage's `snippets/` directory, shared with the nodes) and points
//! `cicustom` at it. The snippet replaces PVE's generated user-data whole; `ciuser` and `sshkeys`
//! copy the user and keys of a `#cloud-config` so PVE's own view of the VM shows them.

use std::io::Write;
use std::path::Path;

use hcp_core::VmId;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// What `sshkeys` keeps unencoded: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Returns true when a VM config has a cloud-init drive (`ide2: local-lvm:vm-100-cloudinit,...`).
pub fn has_drive(config: &serde_json::Map<String, Value>) -> bool {
    config.iter().any(|(key, value)| {
        let is_drive = ["ide", "sata", "scsi", "virtio"].iter().any(|p| {
            key.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        });
        is_drive
            && value
                .as_str()
                .and_then(|v| v.split(',').next())
                .is_some_and(|volume| volume.ends_with("cloudinit"))
    })
}

/// Returns the snippet file name of HCP's VM `vm_id`.
pub fn snippet_name(vm_id: &VmId) -> String {
    format!("hcp-{vm_id}-user.yaml")
}

/// Writes `user_data` to `path` whole or not at all (a temporary file renamed over it), readable
/// by its owner and group only.
///
/// # Errors
/// The I/O error.
pub fn write_snippet(path: &Path, user_data: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    let mut file = options.open(&tmp)?;
    file.write_all(user_data.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The user and SSH keys of a `#cloud-config`, for PVE's `ciuser` and `sshkeys`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NativeKeys {
    /// `user:` (a name or a map with `name`), else the first entry of `users:` with a name.
    pub user: Option<String>,
    /// `ssh_authorized_keys:` at the top and of that user.
    pub ssh_keys: Vec<String>,
}

/// Reads the user and keys of user-data that is a `#cloud-config`; anything else (a script, a
/// MIME multi-part) gives none.
pub fn native_keys(user_data: &str) -> NativeKeys {
    let mut out = NativeKeys::default();
    if !user_data.starts_with("#cloud-config") {
        return out;
    }
    let Ok(doc) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(user_data) else {
        return out;
    };
    let keys = |v: Option<&serde_yaml_ng::Value>| -> Vec<String> {
        v.and_then(serde_yaml_ng::Value::as_sequence)
            .map(|s| {
                s.iter()
                    .filter_map(serde_yaml_ng::Value::as_str)
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    out.ssh_keys = keys(doc.get("ssh_authorized_keys"));
    let named = |u: &serde_yaml_ng::Value| -> Option<(String, Vec<String>)> {
        match u {
            serde_yaml_ng::Value::String(s) if s != "default" => Some((s.clone(), Vec::new())),
            serde_yaml_ng::Value::Mapping(_) => Some((
                u.get("name")?.as_str()?.to_string(),
                keys(u.get("ssh_authorized_keys")),
            )),
            _ => None,
        }
    };
    let user = doc.get("user").and_then(named).or_else(|| {
        doc.get("users")
            .and_then(serde_yaml_ng::Value::as_sequence)
            .and_then(|s| s.iter().find_map(named))
    });
    if let Some((name, keys)) = user {
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if valid {
            out.user = Some(name);
        }
        out.ssh_keys.extend(keys);
    }
    out.ssh_keys.dedup();
    out
}

/// Encodes SSH public keys, one a line, as PVE's `sshkeys` wants them (URL-encoded).
pub fn encode_ssh_keys(keys: &[String]) -> String {
    let joined = keys.join("\n") + "\n";
    utf8_percent_encode(&joined, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cloud_init_drives_are_found_by_their_volume() {
        let with = json!({"ide2": "local-lvm:vm-101-cloudinit,media=cdrom", "scsi0": "x,size=2G"});
        assert!(has_drive(with.as_object().unwrap()));
        let without = json!({"ide2": "none,media=cdrom", "description": "cloudinit"});
        assert!(!has_drive(without.as_object().unwrap()));
    }

    #[test]
    fn the_user_and_keys_of_a_cloud_config_are_read() {
        let ud = "#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAA a@b\nusers:\n  - default\n  - name: ops\n    ssh_authorized_keys: [\"ssh-rsa BBBB c@d\"]\n";
        let k = native_keys(ud);
        assert_eq!(k.user.as_deref(), Some("ops"));
        assert_eq!(k.ssh_keys, ["ssh-ed25519 AAAA a@b", "ssh-rsa BBBB c@d"]);
        assert_eq!(
            encode_ssh_keys(&k.ssh_keys),
            "ssh-ed25519%20AAAA%20a%40b%0Assh-rsa%20BBBB%20c%40d%0A"
        );
        assert_eq!(native_keys("#!/bin/sh\necho hi\n"), NativeKeys::default());
        assert_eq!(native_keys("#cloud-config\n: [\n"), NativeKeys::default());
        let k = native_keys("#cloud-config\nuser: {name: \"bad name\"}\n");
        assert_eq!(k.user, None);
    }

    #[test]
    fn snippets_are_written_whole_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(snippet_name(&VmId::generate()));
        write_snippet(&path, "#cloud-config\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "#cloud-config\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o640);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
