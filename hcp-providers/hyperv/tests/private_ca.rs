//! `ca_file`: a private CA for WinRM over HTTPS. The test makes a CA and a server certificate
//! for 127.0.0.1 with rcgen, serves the WinRM test host with it, and checks that
//! - pywinrm (an independent client) verifies the host against that CA, and refuses another CA;
//! - HCP's public-roots default does not trust the host, and with `ca_file` the whole conformance
//!   suite passes (NTLM and Basic) through HCP's forwarder;
//! - with another CA's `ca_file` the first call fails with a permanent error naming `ca_file`
//!   (the host in the operator detail), and the next calls are not sent to the host at all.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use hcp_core::testkit::{Fixture, run_all};
use hcp_core::{ErrorKind, Provider};
use hcp_provider_hyperv::{AuthKind, HypervSettings};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.self_signed(&key).unwrap(), key)
}

/// A private CA, a server certificate it signs for 127.0.0.1 and localhost, and another CA.
fn pki() -> Pki {
    pki_for(&["localhost"], true)
}

/// As [`pki`], the server certificate naming `dns` (and 127.0.0.1 when `ip`).
fn pki_for(dns: &[&str], ip: bool) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (ca_cert, ca_key) = ca("HCP test private CA");
    let (other, _) = ca("Another CA");
    let key = KeyPair::generate().unwrap();
    let names = dns.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    let mut params = CertificateParams::new(names).unwrap();
    if ip {
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    }
    params
        .distinguished_name
        .push(DnType::CommonName, "hv1.test");
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        other_ca: write("other-ca.pem", other.pem()),
        cert: write("server.pem", cert.pem()),
        key: write("server-key.pem", key.serialize_pem()),
        _dir: dir,
    }
}

fn start(pki: &Pki) -> common::TestHost {
    common::TestHost::start_with(
        1,
        None,
        &[
            "--tls-cert",
            pki.cert.to_str().unwrap(),
            "--tls-key",
            pki.key.to_str().unwrap(),
        ],
    )
}

fn with_ca(ca: &Path) -> HypervSettings {
    HypervSettings {
        tls_verify: true,
        ca_file: Some(ca.to_path_buf()),
        ..common::settings()
    }
}

/// pywinrm opens and closes a shell over NTLM, verifying the host against `ca`.
fn pywinrm_with_ca(port: u16, ca: &Path) -> std::process::Output {
    let script = r#"
import sys
from winrm.protocol import Protocol
p = Protocol(f"https://127.0.0.1:{sys.argv[1]}/wsman", transport="ntlm", username=sys.argv[2],
             password=sys.argv[3], server_cert_validation="validate", ca_trust_path=sys.argv[4])
p.close_shell(p.open_shell())
print("shell opened and closed")
"#;
    Command::new(common::python())
        .args([
            "-c",
            script,
            &port.to_string(),
            common::USER,
            common::PASSWORD,
        ])
        .arg(ca)
        .output()
        .expect("runs the test host's Python")
}

#[test]
fn pywinrm_verifies_the_test_host_against_the_private_ca() {
    let pki = pki();
    let th = start(&pki);
    let port = th.port("hv1");
    let ok = pywinrm_with_ca(port, &pki.ca);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("shell opened and closed"));
    let refused = pywinrm_with_ca(port, &pki.other_ca);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("CERTIFICATE_VERIFY_FAILED"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_with_ca_file_over_ntlm_and_basic() {
    let pki = pki();
    let th = start(&pki);
    // Without ca_file, winrm-rs verifies against the public roots and refuses the host.
    let public = HypervSettings {
        tls_verify: true,
        ..common::settings()
    };
    let e = common::provider(&th, public)
        .deploy_host("hv1")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e:?}");

    for auth in [AuthKind::Ntlm, AuthKind::Basic] {
        let settings = HypervSettings {
            auth,
            ..with_ca(&pki.ca)
        };
        let before = th.control("hv1", "status", None)["requests"]
            .as_u64()
            .unwrap();
        let hv = Arc::new(common::provider(&th, settings));
        let p: Arc<dyn Provider> = hv.clone();
        run_all(p, &Fixture::new("hv1", "ubuntu-24.04"))
            .await
            .unwrap_or_else(|e| panic!("{auth:?}: {e:?}"));
        // Keep-alive: the forwarder's TLS connections carry many HTTP requests each.
        let requests = th.control("hv1", "status", None)["requests"]
            .as_u64()
            .unwrap()
            - before;
        let connections = hv.host_stats("hv1").unwrap().upstream_connections() as u64;
        println!("{auth:?}: {requests} HTTP requests over {connections} TLS connections");
        assert!(connections >= 1, "{auth:?}");
        assert!(
            connections * 10 <= requests,
            "{auth:?}: {connections} for {requests}"
        );
    }
    let records = th.control("hv1", "records", None);
    assert_eq!(records["violations"], serde_json::json!([]), "{records}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_ca_fails_once_with_a_permanent_error_naming_ca_file() {
    let pki = pki();
    let th = start(&pki);
    let p = common::provider(&th, with_ca(&pki.other_ca));
    let e = p.deploy_host("hv1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e:?}");
    assert!(!e.is_temporary(), "{e:?}");
    assert!(e.message().contains("ca_file"), "{e}");
    assert!(
        !e.message().contains("127.0.0.1"),
        "tenants never see the host: {e}"
    );
    let detail = e.detail().unwrap_or_default();
    assert!(detail.contains("host hv1 (127.0.0.1:"), "{detail}");
    assert!(detail.contains(pki.other_ca.to_str().unwrap()), "{detail}");
    assert!(detail.contains("UnknownIssuer"), "{detail}");
    // No retry storm: the host is not asked again during the back-off.
    for _ in 0..3 {
        let again = p.deploy_host("hv1").await.unwrap_err();
        assert!(!again.is_temporary());
        assert!(again.message().contains("ca_file"), "{again}");
        assert!(
            again.message().contains("not asking the host again"),
            "{again}"
        );
    }
    assert_eq!(p.host_stats("hv1").unwrap().calls(), 1);
    let status = th.control("hv1", "status", None);
    assert_eq!(
        status["requests"], 0,
        "no request reached the host: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused_although_the_ca_signed_it() {
    let pki = pki_for(&["hv9.corp.example"], false);
    let th = start(&pki);
    let p = common::provider(&th, with_ca(&pki.ca));
    let e = p.deploy_host("hv1").await.unwrap_err();
    assert!(!e.is_temporary(), "{e:?}");
    assert!(e.message().contains("ca_file"), "{e}");
    let detail = e.detail().unwrap_or_default();
    assert!(
        detail.contains("not valid for name \"127.0.0.1\""),
        "{detail}"
    );
    assert_eq!(th.control("hv1", "status", None)["requests"], 0);
}

#[test]
fn a_provider_with_an_unusable_ca_file_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let entries = vec![hcp_provider_hyperv::HostEntry {
        name: "hv1".into(),
        zone: "zone-a".into(),
        vcpus: None,
        memory_mib: None,
        settings: Default::default(),
    }];
    for (ca, why) in [
        (dir.path().join("missing.pem"), "cannot be read"),
        (empty, "is empty"),
    ] {
        let e = hcp_provider_hyperv::HypervProvider::new(
            "hv",
            with_ca(&ca),
            entries.clone(),
            common::creds(common::PASSWORD),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
        assert_eq!(e.field(), Some("providers.hv.settings.ca_file"));
        assert!(e.message().contains(why), "{e}");
    }
}
