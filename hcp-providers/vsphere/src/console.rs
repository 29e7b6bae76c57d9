//! WebMKS consoles: a ticket from `AcquireTicket("webmks")` turned into HCP's console shape, a
//! [`Console`] of type `webmks` whose [`ConsoleUpstream`] is the ticket's WebSocket,
//! `wss://{host}:{port}/ticket/{ticket}`, which HCP relays for the caller.
//!
//! The ticket is a one-time credential: it appears only in the console's URLs, which
//! [`Console`]'s and [`hcp_core::ConsoleTransport`]'s `Debug` hide, and never in a log line or
//! an error.
//!
//! Which certificate the console host may present:
//!
//! | the ticket gives | trust |
//! |---|---|
//! | a SHA-256 thumbprint (`certThumbprintList`, vSphere 7.0.3 on) | exactly that certificate |
//! | no host, or vCenter's own host | what the provider trusts for vCenter |
//! | another host (an ESXi host), and the provider trusts a CA file or the system roots | the same CA file or roots (ESXi hosts' certificates are usually signed by vCenter's CA) |
//! | another host, only a SHA-1 thumbprint, and vCenter is pinned by thumbprint | refused: HCP pins SHA-256 digests only, so it cannot check that host |

use chrono::{DateTime, Utc};
use hcp_core::{
    Console, ConsoleKind, ConsoleUpstream, Error, ErrorKind, Operation, Result, TlsTrust,
};

use crate::soap::VmTicket;

/// How long HCP offers a WebMKS console after it got the ticket. vCenter's console tickets are
/// one-time and short-lived; HCP's relay opens the WebSocket at once, so a short promise is
/// safe.
pub const WEBMKS_TICKET_SECS: i64 = 30;

/// The port a WebMKS ticket is served on when vCenter names none.
pub const WEBMKS_DEFAULT_PORT: u16 = 443;

/// The WebSocket subprotocol VMware's WebMKS clients ask for.
pub const WEBMKS_SUBPROTOCOL: &str = "binary";

/// Longest host name or ticket accepted from vCenter's reply.
const MAX_FIELD: usize = 1024;

/// Builds the console for `ticket`. `vcenter_host` is the host of vCenter's URL (without port),
/// `trust` how the provider checks vCenter's certificate, `provider` the provider's name (for
/// errors), `now` the time the ticket was issued.
///
/// # Errors
/// [`ErrorKind::ProviderError`] when the reply's host, port or ticket is unusable;
/// [`ErrorKind::FeatureNotSupported`] when the console host's certificate cannot be checked
/// (see the module's table).
pub fn webmks(
    provider: &str,
    ticket: &VmTicket,
    vcenter_host: &str,
    trust: &TlsTrust,
    now: DateTime<Utc>,
) -> Result<Console> {
    let host = ticket.host.as_deref().unwrap_or(vcenter_host);
    if host.is_empty()
        || host.len() > MAX_FIELD
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'))
    {
        return Err(bad_reply("its host is not a host name or address"));
    }
    // A bare IPv6 address goes in brackets.
    let authority_host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let port = match ticket.port.as_deref() {
        None => WEBMKS_DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad_reply("its port is not a TCP port"))?,
    };
    if ticket.ticket.len() > MAX_FIELD {
        return Err(bad_reply("its ticket is too long"));
    }
    let tls = console_trust(provider, ticket, host, vcenter_host, trust)?;
    let url = format!(
        "wss://{authority_host}:{port}/ticket/{}",
        encode_segment(&ticket.ticket)
    );
    let upstream =
        ConsoleUpstream::websocket(url.clone(), tls).with_subprotocol(WEBMKS_SUBPROTOCOL);
    let expires_at = now + chrono::Duration::seconds(WEBMKS_TICKET_SECS);
    Ok(Console::new(ConsoleKind::Webmks, url, expires_at).with_upstream(upstream))
}

/// Chooses which certificate the console host may present (the module's table).
fn console_trust(
    provider: &str,
    ticket: &VmTicket,
    host: &str,
    vcenter_host: &str,
    trust: &TlsTrust,
) -> Result<TlsTrust> {
    if let Some(t) = ticket.sha256_thumbprints.first() {
        let digest = hcp_tls::parse_fingerprint(t)
            .map_err(|_| bad_reply("its SHA-256 certificate thumbprint is not 32 hex bytes"))?;
        return Ok(TlsTrust::PinnedSha256(digest));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let vcenter = vcenter_host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case(vcenter) {
        return Ok(trust.clone());
    }
    match trust {
        TlsTrust::PinnedSha256(_) => Err(Error::unsupported(
            provider,
            Operation::Console,
            "console_webmks",
            "vCenter named the console's ESXi host with only a SHA-1 certificate thumbprint, and \
             HCP pins SHA-256 digests; set ca_file to the CA that signs the hosts' certificates",
        )),
        other => Ok(other.clone()),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a ticket is one path
/// segment whatever it holds.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn bad_reply(why: &str) -> Error {
    Error::new(
        ErrorKind::ProviderError,
        format!("vCenter answered AcquireTicket with a ticket HCP cannot use: {why}"),
    )
    .with_context("vim_method", "AcquireTicket")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap;
    use hcp_core::ConsoleTransport;

    /// A reply to `AcquireTicket("webmks")` in the shape vCenter 8 documents for
    /// `VirtualMachineTicket` (no vCenter is at hand to record one; the values are made up).
    const REPLY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><AcquireTicketResponse xmlns="urn:vim25"><returnval>
<ticket>52b8c6e4-SECRET-TICKET-0f3a</ticket>
<cfgFile>[datastore1] web-1/web-1.vmx</cfgFile>
<host>esx-01.lab.example</host>
<port>443</port>
<sslThumbprint>5D:3E:7A:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11</sslThumbprint>
<certThumbprintList><thumbprint>AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89</thumbprint><hashAlgorithm>sha256</hashAlgorithm></certThumbprintList>
<url>wss://esx-01.lab.example:443/ticket/52b8c6e4-SECRET-TICKET-0f3a</url>
</returnval></AcquireTicketResponse></soapenv:Body></soapenv:Envelope>"#;

    fn ticket(doc: &str) -> VmTicket {
        let vals = soap::decode(doc.as_bytes()).unwrap().unwrap();
        VmTicket::from_node(&vals[0]).unwrap()
    }

    fn websocket(c: &Console) -> (&str, &Option<String>, &TlsTrust) {
        match &c.upstream.as_ref().unwrap().transport {
            ConsoleTransport::WebSocket {
                url,
                subprotocol,
                tls,
                ..
            } => (url, subprotocol, tls),
            other => panic!("a WebMKS console is a WebSocket, got {other:?}"),
        }
    }

    #[test]
    fn a_recorded_ticket_becomes_a_webmks_console_pinned_to_the_hosts_certificate() {
        let t = ticket(REPLY);
        let now = Utc::now();
        let c = webmks(
            "vc",
            &t,
            "vcenter.lab.example",
            &TlsTrust::CaPem("vcenter CA".into()),
            now,
        )
        .unwrap();
        assert_eq!(c.kind, ConsoleKind::Webmks);
        assert_eq!(
            c.url,
            "wss://esx-01.lab.example:443/ticket/52b8c6e4-SECRET-TICKET-0f3a"
        );
        assert_eq!(c.expires_at, now + chrono::Duration::seconds(30));
        let (url, subprotocol, tls) = websocket(&c);
        assert_eq!(url, c.url);
        assert_eq!(subprotocol.as_deref(), Some("binary"));
        let mut digest = [0u8; 32];
        for (i, b) in digest.iter_mut().enumerate() {
            *b = [0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45, 0x67, 0x89][i % 8];
        }
        assert_eq!(*tls, TlsTrust::PinnedSha256(digest));
        // The ticket never shows in Debug output, of the console or of the parsed reply.
        for text in [format!("{c:?}"), format!("{t:?}")] {
            assert!(!text.contains("SECRET"), "{text}");
        }
        assert!(format!("{t:?}").contains("esx-01.lab.example"));
    }

    #[test]
    fn without_a_sha256_thumbprint_the_providers_trust_is_used_or_the_console_refused() {
        let mut t = ticket(REPLY);
        t.sha256_thumbprints.clear();
        let ca = TlsTrust::CaPem("vcenter CA".into());
        let c = webmks("vc", &t, "vcenter.lab.example", &ca, Utc::now()).unwrap();
        assert_eq!(*websocket(&c).2, ca, "an ESXi host signed by vCenter's CA");
        let pinned = TlsTrust::PinnedSha256([7; 32]);
        let e = webmks("vc", &t, "vcenter.lab.example", &pinned, Utc::now()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
        assert!(e.message().contains("ca_file"), "{e}");
        assert!(!format!("{e:?}").contains("SECRET"), "{e:?}");
        // No host: vCenter's own, on the default port, with vCenter's trust.
        t.host = None;
        t.port = None;
        let c = webmks("vc", &t, "vcenter.lab.example", &pinned, Utc::now()).unwrap();
        assert_eq!(
            c.url,
            "wss://vcenter.lab.example:443/ticket/52b8c6e4-SECRET-TICKET-0f3a"
        );
        assert_eq!(*websocket(&c).2, pinned);
    }

    #[test]
    fn unusable_replies_are_refused_naming_what_is_wrong() {
        let mut t = ticket(REPLY);
        t.port = Some("70000".into());
        let e = webmks("vc", &t, "vc", &TlsTrust::System, Utc::now()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ProviderError);
        assert!(e.message().contains("port"), "{e}");
        let mut t = ticket(REPLY);
        t.host = Some("evil.example/path?x=".into());
        let e = webmks("vc", &t, "vc", &TlsTrust::System, Utc::now()).unwrap_err();
        assert!(e.message().contains("host"), "{e}");
        let mut t = ticket(REPLY);
        t.host = Some("fd00::5".into());
        t.ticket = "a b/c".into();
        let c = webmks("vc", &t, "vc", &TlsTrust::System, Utc::now()).unwrap();
        assert_eq!(c.url, "wss://[fd00::5]:443/ticket/a%20b%2Fc");
        let doc = REPLY.replace("<ticket>52b8c6e4-SECRET-TICKET-0f3a</ticket>", "");
        let vals = soap::decode(doc.as_bytes()).unwrap().unwrap();
        assert!(
            VmTicket::from_node(&vals[0]).is_none(),
            "no ticket, no console"
        );
    }
}
