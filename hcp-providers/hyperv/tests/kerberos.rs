//! Kerberos against a real MIT KDC (`testhost/kdc.sh`: realm HCP.TEST on loopback) and the WinRM
//! test host accepting Kerberos through pyspnego/gssapi: the whole conformance suite over HTTPS,
//! and a wrong keytab, an expired ticket, an unknown service principal and a host whose clock is
//! 20 minutes off each failing with a clear permanent error that is not retried.
//!
//! winrm-rs 1.1 takes the process's default Kerberos credentials, which MIT reads from the
//! environment (`KRB5_CONFIG`, `KRB5_CLIENT_KTNAME`, `KRB5CCNAME`); a test cannot change its own
//! environment safely, so the test runs each scenario in a child process of this test binary.
#![cfg(feature = "kerberos")]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hcp_core::testkit::{Fixture, run_all};
use hcp_core::{ErrorKind, HostInventory, Provider};
use hcp_provider_hyperv::{AuthKind, HypervProvider, HypervSettings};
use serde_json::Value;

const SCENARIO: &str = "HCP_KRB_SCENARIO";

fn kdc() -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testhost/kdc.sh");
    let out = Command::new(&script)
        .output()
        .expect("testhost/kdc.sh runs");
    assert!(
        out.status.success(),
        "testhost/kdc.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).expect("kdc.sh prints JSON")
}

fn child(scenario: &str, env: &[(&str, String)]) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "kerberos", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario)
        .env_remove("KRB5_CLIENT_KTNAME")
        .env_remove("KRB5CCNAME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the test binary runs itself");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(&format!("scenario {scenario} passed")),
        "scenario {scenario} failed:\n{text}"
    );
}

#[test]
fn kerberos() {
    if let Ok(s) = std::env::var(SCENARIO) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(scenario(&s));
        println!("scenario {s} passed");
        return;
    }
    let kdc = kdc();
    let s = |k: &str| kdc[k].as_str().unwrap().to_string();
    let base = [
        ("KRB5_CONFIG", s("krb5_conf")),
        ("HCP_KRB_SERVICE_KEYTAB", s("service_keytab")),
    ];
    let with = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        base.iter().cloned().chain(extra.iter().cloned()).collect()
    };
    child(
        "conformance",
        &with(&[
            ("KRB5_CLIENT_KTNAME", s("client_keytab")),
            ("KRB5CCNAME", "MEMORY:hcp-conformance".into()),
        ]),
    );
    child(
        "wrong_keytab",
        &with(&[
            ("KRB5_CLIENT_KTNAME", s("stale_keytab")),
            ("KRB5CCNAME", "MEMORY:hcp-stale".into()),
        ]),
    );
    child(
        "unknown_principal",
        &with(&[
            ("KRB5_CLIENT_KTNAME", s("client_keytab")),
            ("KRB5CCNAME", "MEMORY:hcp-unknown".into()),
        ]),
    );
    // The host's clock 20 minutes ahead: it refuses the ticket's authenticator (clock skew).
    child(
        "clock_skew",
        &with(&[
            ("KRB5_CLIENT_KTNAME", s("client_keytab")),
            ("KRB5CCNAME", "MEMORY:hcp-skew".into()),
            ("HCP_TESTHOST_CLOCK", "+20m".into()),
        ]),
    );
    // A ticket that lives five seconds, then has expired (no keytab to renew it from).
    let dir = tempfile::tempdir().unwrap();
    let cache = format!("FILE:{}", dir.path().join("expired").display());
    let st = Command::new("kinit")
        .args([
            "-l",
            "5s",
            "-k",
            "-t",
            &s("client_keytab"),
            "-c",
            &cache,
            "hcp",
        ])
        .env("KRB5_CONFIG", s("krb5_conf"))
        .status()
        .expect("kinit runs");
    assert!(st.success(), "kinit with the client keytab");
    std::thread::sleep(Duration::from_secs(7));
    child("expired_ticket", &with(&[("KRB5CCNAME", cache)]));
}

fn settings() -> HypervSettings {
    HypervSettings {
        auth: AuthKind::Kerberos,
        ..common::settings()
    }
}

/// A provider over Kerberos whose hosts are reached at `address` (the SPN is HTTP/<address>).
fn provider(th: &common::TestHost, address: &str) -> HypervProvider {
    let s =
        HypervSettings::from_value("hyperv", &serde_json::to_value(settings()).unwrap(), &|k| {
            std::env::var(k).ok()
        })
        .expect("kerberos settings are accepted with KRB5_* set");
    let mut hosts = th.entries(None);
    for h in &mut hosts {
        h.settings.address = Some(address.to_string());
    }
    HypervProvider::new("hyperv", s, hosts, common::creds("unused")).unwrap()
}

async fn scenario(name: &str) {
    let keytab = std::env::var("HCP_KRB_SERVICE_KEYTAB").unwrap();
    let th = common::TestHost::start_with(2, None, &["--kerberos-keytab", &keytab]);
    match name {
        "conformance" => {
            let p: Arc<dyn Provider> = Arc::new(provider(&th, "localhost"));
            run_all(
                p,
                &Fixture::new("hv1", "ubuntu-24.04").with_other_host("hv2"),
            )
            .await
            .unwrap();
            let records = th.control("hv1", "records", None);
            assert_eq!(records["violations"], serde_json::json!([]), "{records}");
            let status = th.control("hv1", "status", None);
            assert_eq!(status["auth_failures"], 0, "{status}");
            assert_eq!(
                status["principals"],
                serde_json::json!(["kerberos:hcp@HCP.TEST"]),
                "every request was authenticated by Kerberos as HCP's principal: {status}"
            );
        }
        "wrong_keytab" | "unknown_principal" | "expired_ticket" | "clock_skew" => {
            let address = if name == "unknown_principal" {
                "127.0.0.1"
            } else {
                "localhost"
            };
            let p = provider(&th, address);
            let e = p
                .host_inventory(HostInventory::new("hv1"))
                .await
                .unwrap_err();
            let want = match name {
                "wrong_keytab" => "HCP's keytab does not match",
                "unknown_principal" => "does not know the Hyper-V host's service principal",
                "clock_skew" => "the Hyper-V host did not accept HCP's ticket",
                _ => "ticket has expired",
            };
            assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e:?}");
            assert!(!e.is_temporary(), "permanent: {e:?}");
            assert!(e.message().contains(want), "{name}: {e:?}");
            // Not retried: the next call is answered from the back-off, without a new attempt.
            let again = p
                .host_inventory(HostInventory::new("hv1"))
                .await
                .unwrap_err();
            assert!(
                again.message().contains("not asking the host again"),
                "{again:?}"
            );
            assert_eq!(p.host_stats("hv1").unwrap().calls(), 1);
            if name == "clock_skew" {
                assert!(
                    e.operator_message().contains("clocks"),
                    "the operator's detail names the clocks: {e:?}"
                );
                assert_eq!(
                    th.control("hv1", "status", None)["auth_failures"],
                    1,
                    "one refusal, no retry storm"
                );
            }
        }
        other => panic!("unknown scenario {other}"),
    }
}
