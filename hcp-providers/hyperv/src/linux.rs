//! Linux guests' setup completion signal: cloud-init writes the KVP item [`SETUP_KEY`] (the VM's
//! id as value) into the guest-to-host pool that Hyper-V's KVP daemon (`hv_kvp_daemon`, from the
//! Linux integration services: Debian and Ubuntu `hyperv-daemons` or `linux-cloud-tools-*`, RHEL
//! `hyperv-daemons`) publishes to the host, and the create job waits for it exactly as for a
//! Windows guest's first-logon signal.
//!
//! The pool is `/var/lib/hyperv/.kvp_pool_1`, an array of fixed records: a 512-byte key and a
//! 2048-byte value, each NUL-padded ([`kvp_record`]), the format `hv_kvp_daemon` reads (and
//! cloud-init's own Hyper-V KVP reporting writes). The guest appends its record under an
//! exclusive POSIX record lock (`fcntl.lockf`, the lock the daemon takes), from Python 3, which
//! every image with cloud-init has because cloud-init runs on it.

use base64::Engine as _;
use hcp_core::{Error, Result};

pub use crate::unattend::SETUP_KEY;

/// The guest-to-host KVP pool: the guest writes it, `hv_kvp_daemon` publishes it, and the host
/// reads it as the VM's `GuestExchangeItems` (pool 1 in the daemon's numbering).
pub const KVP_POOL: &str = "/var/lib/hyperv/.kvp_pool_1";
/// The bytes of a record's key (`HV_KVP_EXCHANGE_MAX_KEY_SIZE`).
pub const KEY_BYTES: usize = 512;
/// The bytes of a record's value (`HV_KVP_EXCHANGE_MAX_VALUE_SIZE`).
pub const VALUE_BYTES: usize = 2048;

/// The MIME boundary of combined user-data; it cannot occur in base64 text.
const BOUNDARY: &str = "==HCP-USER-DATA-BOUNDARY==";

/// Returns the pool record for `key` = `value`: each NUL-padded to its fixed size.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] when the key or the value (with its terminating NUL)
/// does not fit, or holds a NUL.
pub fn kvp_record(key: &str, value: &str) -> Result<Vec<u8>> {
    for (what, s, max) in [("key", key, KEY_BYTES), ("value", value, VALUE_BYTES)] {
        if s.len() >= max || s.contains('\0') {
            return Err(Error::invalid(
                format!("kvp.{what}"),
                format!("must be at most {} bytes without NUL", max - 1),
            ));
        }
    }
    let mut record = vec![0u8; KEY_BYTES + VALUE_BYTES];
    record[..key.len()].copy_from_slice(key.as_bytes());
    record[KEY_BYTES..KEY_BYTES + value.len()].copy_from_slice(value.as_bytes());
    Ok(record)
}

/// The Python program the guest runs: appends the record for [`SETUP_KEY`] = `value` to `pool`
/// under the daemon's lock. `value` is HCP's VM id (letters, digits, `-`), so it needs no quoting.
fn signal_program(pool: &str, value: &str) -> String {
    format!(
        "import fcntl,os\n\
         k=b\"{SETUP_KEY}\";v=b\"{value}\"\n\
         p=\"{pool}\"\n\
         os.makedirs(os.path.dirname(p),exist_ok=True)\n\
         f=open(p,\"ab\")\n\
         fcntl.lockf(f,fcntl.LOCK_EX)\n\
         f.write(k+bytes({KEY_BYTES}-len(k))+v+bytes({VALUE_BYTES}-len(v)))\n\
         f.close()\n"
    )
}

/// The `#cloud-config` document holding the signal as the last `runcmd` entry; its `merge_how`
/// appends the entry to the tenant's own `runcmd` instead of replacing it.
fn signal_cloud_config(vm_id: &str) -> Result<String> {
    let program = serde_json::to_string(&signal_program(KVP_POOL, vm_id))
        .map_err(|e| Error::internal(format!("cannot encode the completion signal: {e}")))?;
    Ok(format!(
        "#cloud-config\n\
         merge_how: 'dict(recurse_array,no_replace)+list(append)'\n\
         runcmd:\n  - [\"python3\", \"-c\", {program}]\n"
    ))
}

/// Returns the user-data HCP puts on the NoCloud seed of a VM whose image waits for the
/// completion signal: the signal alone as `#cloud-config` when the tenant sent none, otherwise a
/// MIME multi-part document (which cloud-init reads natively) with the tenant's user-data first,
/// unchanged (base64, typed by cloud-init from its first line as always), and the signal second.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] on `user_data` when it is itself a MIME multi-part
/// document (cloud-init's test: `MIME-Version:` in its first 4096 bytes), which HCP does not nest.
pub fn with_completion_signal(user_data: Option<&str>, vm_id: &str) -> Result<String> {
    let signal = signal_cloud_config(vm_id)?;
    let Some(ud) = user_data else {
        return Ok(signal);
    };
    let head: String = ud.chars().take(4096).collect();
    if head.to_ascii_lowercase().contains("mime-version:") {
        return Err(Error::invalid(
            "user_data",
            "is a MIME multi-part document, which HCP cannot combine with this image's setup \
             completion signal; send #cloud-config, a script or another single cloud-init format",
        ));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(ud);
    let mut body = String::with_capacity(encoded.len() + signal.len() + 512);
    body.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\nMIME-Version: 1.0\n\n"
    ));
    body.push_str(&format!(
        "--{BOUNDARY}\nContent-Type: text/plain; charset=\"utf-8\"\nMIME-Version: 1.0\n\
         Content-Transfer-Encoding: base64\nContent-Disposition: attachment; \
         filename=\"user-data\"\n\n"
    ));
    for line in encoded.as_bytes().chunks(76) {
        body.push_str(&String::from_utf8_lossy(line));
        body.push('\n');
    }
    body.push_str(&format!(
        "--{BOUNDARY}\nContent-Type: text/cloud-config; charset=\"utf-8\"\nMIME-Version: 1.0\n\
         Content-Transfer-Encoding: 7bit\nContent-Disposition: attachment; \
         filename=\"hcp-completion-signal.cfg\"\n\n"
    ));
    body.push_str(&signal);
    // The line break before a boundary belongs to the boundary (RFC 2046): keep the part's own.
    body.push('\n');
    body.push_str(&format!("--{BOUNDARY}--\n"));
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_record_is_a_nul_padded_512_byte_key_and_2048_byte_value() {
        let r = kvp_record("HcpSetupComplete", "vm-123").unwrap();
        assert_eq!(r.len(), 2560);
        assert_eq!(&r[..16], b"HcpSetupComplete");
        assert!(r[16..512].iter().all(|b| *b == 0));
        assert_eq!(&r[512..518], b"vm-123");
        assert!(r[518..].iter().all(|b| *b == 0));
        assert!(kvp_record(&"k".repeat(511), "v").is_ok());
        assert!(kvp_record(&"k".repeat(512), "v").is_err());
        assert!(kvp_record("k", &"v".repeat(2048)).is_err());
        assert!(kvp_record("k\0", "v").is_err());
    }

    /// Runs the guest's program (Python 3, as cloud-init would) against a pool in a temporary
    /// directory, twice, and compares the file with the records HCP expects.
    #[test]
    fn the_guest_program_appends_exactly_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("hyperv/.kvp_pool_1");
        let program = signal_program(pool.to_str().unwrap(), "vm-0a1b");
        for _ in 0..2 {
            let out = Command::new("python3")
                .args(["-c", &program])
                .output()
                .expect("python3 runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let record = kvp_record(SETUP_KEY, "vm-0a1b").unwrap();
        assert_eq!(
            std::fs::read(&pool).unwrap(),
            [record.clone(), record].concat()
        );
    }

    #[test]
    fn without_user_data_the_signal_is_the_whole_cloud_config() {
        let ud = with_completion_signal(None, "vm-1").unwrap();
        assert!(ud.starts_with("#cloud-config\n"), "{ud}");
        let program = serde_json::to_string(&signal_program(KVP_POOL, "vm-1")).unwrap();
        assert!(
            ud.contains(&format!("runcmd:\n  - [\"python3\", \"-c\", {program}]\n")),
            "{ud}"
        );
        assert!(ud.contains("merge_how: 'dict(recurse_array,no_replace)+list(append)'"));
    }

    /// Python's email parser (what cloud-init reads user-data with) finds the tenant's part
    /// unchanged and the signal part after it.
    #[test]
    fn tenant_user_data_and_the_signal_become_two_mime_parts() {
        let tenant = "#cloud-config\nruncmd:\n  - [\"touch\", \"/tmp/ü-mine\"]\n--x--\n";
        let ud = with_completion_signal(Some(tenant), "vm-2").unwrap();
        let check = r#"
import email, json, sys
msg = email.message_from_string(sys.stdin.read())
parts = [p for p in msg.walk() if not p.is_multipart()]
print(json.dumps([[p.get_content_type(), p.get_payload(decode=True).decode()] for p in parts]))
"#;
        let mut child = Command::new("python3")
            .args(["-c", check])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ud.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let parts: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(parts.len(), 2, "{ud}");
        assert_eq!(parts[0], ("text/plain".to_string(), tenant.to_string()));
        assert_eq!(parts[1].0, "text/cloud-config");
        assert_eq!(parts[1].1, signal_cloud_config("vm-2").unwrap());
    }

    #[test]
    fn mime_user_data_is_refused_naming_the_field() {
        let mime = "Content-Type: multipart/mixed; boundary=b\nMIME-Version: 1.0\n\n--b--\n";
        let e = with_completion_signal(Some(mime), "vm-3").unwrap_err();
        assert_eq!(e.field(), Some("user_data"));
        assert!(e.message().contains("MIME"), "{e}");
    }
}
