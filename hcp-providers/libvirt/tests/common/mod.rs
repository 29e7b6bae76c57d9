//! Helpers shared by the libvirt integration tests: `virsh`, the qemu:///system precondition and
//! a guard that removes every domain (and its volumes) a test made, even when the test fails.

#![allow(dead_code)]

use std::process::Command;
use std::sync::Arc;

use hcp_core::Provider;
use hcp_provider_libvirt::{LibvirtHost, LibvirtProvider, LibvirtSettings, NetworkBinding};

/// The real peer's URI.
pub const QEMU: &str = "qemu:///system";
/// The pool and base image that setup.sh creates.
pub const POOL: &str = "hcp";
/// The base image's catalog name.
pub const IMAGE: &str = "base-tiny";

/// Runs `virsh -c URI args…` and returns (success, stdout + stderr).
pub fn virsh(uri: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .expect("virsh runs (install libvirt-clients: hcp-providers/libvirt/setup.sh)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Fails the test with a clear message when qemu:///system, its pool or base image is missing.
pub fn require_qemu() {
    let (ok, text) = virsh(QEMU, &["vol-info", "--pool", POOL, "base-tiny.qcow2"]);
    assert!(
        ok,
        "the real libvirt peer is not ready: `virsh -c {QEMU} vol-info --pool {POOL} base-tiny.qcow2` failed: {}\n\
         run `sudo hcp-providers/libvirt/setup.sh` (installs and starts libvirt + QEMU, creates the pool and base image)",
        text.trim()
    );
}

/// A unique name prefix for this test process.
pub fn prefix(tag: &str) -> String {
    format!("hcpt{}{tag}", std::process::id() % 100_000)
}

/// Returns the settings the qemu tests use.
pub fn qemu_settings() -> LibvirtSettings {
    let mut s = LibvirtSettings {
        pool: POOL.into(),
        ..Default::default()
    };
    s.images.insert(IMAGE.into(), "base-tiny.qcow2".into());
    s.networks.insert("default".into(), NetworkBinding::User);
    s
}

/// A provider with one host, `local`, on qemu:///system.
pub fn qemu_provider() -> Arc<LibvirtProvider> {
    Arc::new(LibvirtProvider::new(
        "kvm",
        qemu_settings(),
        vec![LibvirtHost::new("local", "zone-a", QEMU)],
    ))
}

/// Returns the same provider as a trait object.
pub fn dyn_provider(p: &Arc<LibvirtProvider>) -> Arc<dyn Provider> {
    p.clone()
}

/// Removes, on drop, every domain on `uri` whose name starts with `prefix`, with its volumes.
pub struct Cleanup {
    pub uri: String,
    pub prefix: String,
}

impl Cleanup {
    pub fn new(uri: &str, prefix: &str) -> Self {
        let c = Cleanup {
            uri: uri.into(),
            prefix: prefix.into(),
        };
        c.sweep();
        c
    }

    /// Lists the names of the domains the guard owns.
    pub fn domains(&self) -> Vec<String> {
        let (_, text) = virsh(&self.uri, &["list", "--all", "--name"]);
        text.lines()
            .map(str::trim)
            .filter(|n| n.starts_with(&self.prefix))
            .map(String::from)
            .collect()
    }

    pub fn sweep(&self) {
        for name in self.domains() {
            let _ = virsh(&self.uri, &["destroy", &name]);
            let _ = virsh(
                &self.uri,
                &[
                    "undefine",
                    &name,
                    "--remove-all-storage",
                    "--snapshots-metadata",
                    "--nvram",
                ],
            );
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.sweep();
    }
}
