//! HCP's PowerShell scripts, embedded in the binary, their version, and the one wrapper that
//! runs them.
//!
//! Every WinRM command HCP sends is `powershell.exe -EncodedCommand <wrapper>`, where the wrapper
//! (`scripts/_wrapper.ps1`) is constant text naming either a deployed script's path or a deploy
//! step. Parameters never become script text: they travel on stdin as one base64 JSON document.

use std::collections::BTreeMap;
use std::path::Path;

use hcp_core::{Error, Result};
use sha2::{Digest, Sha256};

/// The wrapper's text with the placeholder line `$HcpScript = '{{SCRIPT}}'`.
pub const WRAPPER: &str = include_str!("../scripts/_wrapper.ps1");

const PLACEHOLDER: &str = "$HcpScript = '{{SCRIPT}}'";

/// The scripts deployed to each host, by file name.
pub const EMBEDDED: [(&str, &str); 14] = [
    ("HcpCommon.psm1", include_str!("../scripts/HcpCommon.psm1")),
    (
        "Get-HcpInventory.ps1",
        include_str!("../scripts/Get-HcpInventory.ps1"),
    ),
    ("New-HcpVm.ps1", include_str!("../scripts/New-HcpVm.ps1")),
    (
        "Remove-HcpVm.ps1",
        include_str!("../scripts/Remove-HcpVm.ps1"),
    ),
    (
        "Start-HcpVm.ps1",
        include_str!("../scripts/Start-HcpVm.ps1"),
    ),
    ("Stop-HcpVm.ps1", include_str!("../scripts/Stop-HcpVm.ps1")),
    (
        "Restart-HcpVm.ps1",
        include_str!("../scripts/Restart-HcpVm.ps1"),
    ),
    (
        "Get-HcpConsole.ps1",
        include_str!("../scripts/Get-HcpConsole.ps1"),
    ),
    (
        "New-HcpCheckpoint.ps1",
        include_str!("../scripts/New-HcpCheckpoint.ps1"),
    ),
    (
        "Get-HcpCheckpoint.ps1",
        include_str!("../scripts/Get-HcpCheckpoint.ps1"),
    ),
    (
        "Restore-HcpCheckpoint.ps1",
        include_str!("../scripts/Restore-HcpCheckpoint.ps1"),
    ),
    (
        "Remove-HcpCheckpoint.ps1",
        include_str!("../scripts/Remove-HcpCheckpoint.ps1"),
    ),
    (
        "Complete-HcpGuestSetup.ps1",
        include_str!("../scripts/Complete-HcpGuestSetup.ps1"),
    ),
    (
        "Resize-HcpVm.ps1",
        include_str!("../scripts/Resize-HcpVm.ps1"),
    ),
];

/// The deploy steps, run inline (they cannot be deployed before the deployment exists).
pub const DEPLOY: [(&str, &str); 5] = [
    (
        "Get-HcpDeployment",
        include_str!("../scripts/deploy/Get-HcpDeployment.ps1"),
    ),
    (
        "Clear-HcpStaging",
        include_str!("../scripts/deploy/Clear-HcpStaging.ps1"),
    ),
    (
        "Write-HcpFileChunk",
        include_str!("../scripts/deploy/Write-HcpFileChunk.ps1"),
    ),
    (
        "Complete-HcpFile",
        include_str!("../scripts/deploy/Complete-HcpFile.ps1"),
    ),
    (
        "Publish-HcpDeployment",
        include_str!("../scripts/deploy/Publish-HcpDeployment.ps1"),
    ),
];

/// The scripts the provider calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// `Get-HcpInventory.ps1`.
    Inventory,
    /// `New-HcpVm.ps1`.
    NewVm,
    /// `Remove-HcpVm.ps1`.
    RemoveVm,
    /// `Start-HcpVm.ps1`.
    StartVm,
    /// `Stop-HcpVm.ps1`.
    StopVm,
    /// `Restart-HcpVm.ps1`.
    RestartVm,
    /// `Get-HcpConsole.ps1`.
    Console,
    /// `New-HcpCheckpoint.ps1`.
    Checkpoint,
    /// `Get-HcpCheckpoint.ps1`.
    ListCheckpoints,
    /// `Restore-HcpCheckpoint.ps1`.
    RestoreCheckpoint,
    /// `Remove-HcpCheckpoint.ps1`.
    RemoveCheckpoint,
    /// `Complete-HcpGuestSetup.ps1`.
    GuestSetup,
    /// `Resize-HcpVm.ps1`.
    ResizeVm,
}

impl Script {
    /// Returns the script's file name.
    pub fn file(self) -> &'static str {
        match self {
            Script::Inventory => "Get-HcpInventory.ps1",
            Script::NewVm => "New-HcpVm.ps1",
            Script::RemoveVm => "Remove-HcpVm.ps1",
            Script::StartVm => "Start-HcpVm.ps1",
            Script::StopVm => "Stop-HcpVm.ps1",
            Script::RestartVm => "Restart-HcpVm.ps1",
            Script::Console => "Get-HcpConsole.ps1",
            Script::Checkpoint => "New-HcpCheckpoint.ps1",
            Script::ListCheckpoints => "Get-HcpCheckpoint.ps1",
            Script::RestoreCheckpoint => "Restore-HcpCheckpoint.ps1",
            Script::RemoveCheckpoint => "Remove-HcpCheckpoint.ps1",
            Script::GuestSetup => "Complete-HcpGuestSetup.ps1",
            Script::ResizeVm => "Resize-HcpVm.ps1",
        }
    }
}

/// One file to deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// Relative path on the host (`New-HcpVm.ps1`, `iso\tools.iso`) → content.
    pub files: BTreeMap<String, Vec<u8>>,
    /// 16 hex digits of the SHA-256 over every file's name and content.
    pub version: String,
}

impl Bundle {
    /// The embedded scripts, with the ISOs of `iso_path` when given.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] when a directory cannot be read.
    pub fn load(script_path: Option<&Path>, iso_path: Option<&Path>) -> Result<Self> {
        Bundle::load_with(script_path, iso_path, BTreeMap::new())
    }

    /// The embedded scripts, the ISOs of `iso_path` and `extra` files (the site's hooks, by
    /// their path on the host): all of them make up the version.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] when a directory cannot be read.
    pub fn load_with(
        script_path: Option<&Path>,
        iso_path: Option<&Path>,
        extra: BTreeMap<String, Vec<u8>>,
    ) -> Result<Self> {
        let mut files: BTreeMap<String, Vec<u8>> = EMBEDDED
            .iter()
            .map(|(n, t)| ((*n).to_string(), t.as_bytes().to_vec()))
            .collect();
        if let Some(dir) = script_path {
            for (name, data) in read_dir(dir, "SCRIPT_PATH", &["ps1", "psm1"])? {
                files.insert(name, data);
            }
        }
        if let Some(dir) = iso_path {
            for (name, data) in read_dir(dir, "ISO_PATH", &["iso"])? {
                files.insert(format!("iso\\{name}"), data);
            }
        }
        files.extend(extra);
        let mut h = Sha256::new();
        for (name, data) in &files {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        }
        let version = hex::encode(&h.finalize()[..8]);
        Ok(Bundle { files, version })
    }
}

fn read_dir(dir: &Path, what: &str, exts: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
    let read = std::fs::read_dir(dir)
        .map_err(|e| Error::invalid(what, format!("cannot read {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| Error::invalid(what, e.to_string()))?;
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !path.is_file() || !exts.contains(&ext) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(Error::invalid(
                what,
                format!(
                    "file name `{name}` has characters other than letters, digits, '.', '_' and '-'"
                ),
            ));
        }
        let data = std::fs::read(&path)
            .map_err(|e| Error::invalid(what, format!("cannot read {}: {e}", path.display())))?;
        out.push((name, data));
    }
    Ok(out)
}

/// The wrapper around a deployed script: `$HcpScript = '<dir>\<version>\<file>'`.
pub fn wrapper_for_path(path: &str) -> String {
    debug_assert!(
        !path.contains('\''),
        "config validation keeps quotes out of paths"
    );
    WRAPPER.replacen(PLACEHOLDER, &format!("$HcpScript = '{path}'"), 1)
}

/// The wrapper around a deploy step's script block.
pub fn wrapper_for_deploy(body: &str) -> String {
    WRAPPER.replacen(PLACEHOLDER, &format!("$HcpScript = {{\n{body}\n}}"), 1)
}

/// Returns the text of deploy step `name`.
pub fn deploy_step(name: &str) -> &'static str {
    DEPLOY
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| unreachable!("unknown deploy step {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_has_one_placeholder_and_renders_both_forms() {
        assert_eq!(WRAPPER.matches(PLACEHOLDER).count(), 1);
        let w = wrapper_for_path(r"C:\HCP\scripts\abc\New-HcpVm.ps1");
        assert!(w.contains(r"$HcpScript = 'C:\HCP\scripts\abc\New-HcpVm.ps1'"));
        let d = wrapper_for_deploy(deploy_step("Get-HcpDeployment"));
        assert!(d.contains("$HcpScript = {\n<#"));
    }

    #[test]
    fn version_follows_content() {
        let a = Bundle::load(None, None).unwrap();
        let b = Bundle::load(None, None).unwrap();
        assert_eq!(a.version, b.version);
        assert_eq!(a.version.len(), 16);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tools.iso"), b"ISO").unwrap();
        let c = Bundle::load(None, Some(dir.path())).unwrap();
        assert_ne!(a.version, c.version);
        assert!(c.files.contains_key("iso\\tools.iso"));
    }
}
