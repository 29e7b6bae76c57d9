//! Cloud-init NoCloud seed ISOs, built with the standard tool (`genisoimage -volid cidata
//! -joliet -rock user-data meta-data`), never by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use hcp_core::{Error, ErrorKind, Result};

/// Returns the path of `tool` when it is an executable file or found in `PATH`.
pub(crate) fn find_tool(tool: &str) -> Option<PathBuf> {
    let p = Path::new(tool);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|c| c.is_file())
    })
}

/// Renders NoCloud `meta-data` for a VM.
pub(crate) fn meta_data(instance_id: &str, hostname: &str) -> String {
    // Both values are HCP ids and DNS labels: plain YAML scalars.
    format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
}

/// Builds a NoCloud seed ISO holding `user_data` and `meta_data` and returns its bytes.
///
/// # Errors
/// [`ErrorKind::ProviderError`] when the tool is missing or fails (its path and stderr are in
/// the operator detail).
pub(crate) fn build_iso(tool: &str, user_data: &str, meta_data: &str) -> Result<Vec<u8>> {
    let fail = |m: String| {
        Error::new(
            ErrorKind::ProviderError,
            "HCP cannot build the cloud-init seed ISO",
        )
        .with_detail(m)
    };
    let exe = find_tool(tool).ok_or_else(|| {
        fail(format!(
            "cannot build the cloud-init seed ISO: `{tool}` is not installed (apt-get install genisoimage)"
        ))
    })?;
    let dir =
        tempfile::tempdir().map_err(|e| fail(format!("cannot make a temporary directory: {e}")))?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text)
            .map_err(|e| fail(format!("cannot write {name} for the seed ISO: {e}")))
    };
    write("user-data", user_data)?;
    write("meta-data", meta_data)?;
    let iso = dir.path().join("seed.iso");
    let out = Command::new(&exe)
        .current_dir(dir.path())
        .args(["-quiet", "-output"])
        .arg(&iso)
        .args([
            "-volid",
            "cidata",
            "-joliet",
            "-rock",
            "user-data",
            "meta-data",
        ])
        .output()
        .map_err(|e| fail(format!("cannot run {}: {e}", exe.display())))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{} failed ({}): {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::read(&iso).map_err(|e| fail(format!("cannot read the seed ISO: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_nocloud_seed_iso() {
        let Some(_) = find_tool("genisoimage") else {
            panic!("genisoimage is missing: run hcp-providers/libvirt/setup.sh first");
        };
        let iso = build_iso(
            "genisoimage",
            "#cloud-config\nhostname: web-1\n",
            &meta_data("vm-1", "web-1"),
        )
        .unwrap();
        // ISO 9660: the primary volume descriptor at sector 16 carries the volume id `cidata`.
        assert!(iso.len() >= 17 * 2048);
        let pvd = &iso[16 * 2048..17 * 2048];
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(&pvd[40..46], b"cidata");
        let text = String::from_utf8_lossy(&iso);
        assert!(text.contains("hostname: web-1"));
        assert!(text.contains("instance-id: vm-1"));
    }

    #[test]
    fn a_missing_tool_is_a_clear_error() {
        let e = build_iso("/nonexistent/genisoimage", "", "").unwrap_err();
        assert!(e.to_string().contains("not installed"), "{e}");
    }
}
