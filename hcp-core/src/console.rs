//! Consoles: what a provider answers to [`crate::Provider::console`], in one shape every
//! provider uses.
//!
//! A [`Console`] either names a URL the client opens itself ([`Console::upstream`] is `None`: a
//! vendor's web console, say), or carries a [`ConsoleUpstream`] that HCP relays on the caller's
//! behalf. The shells decide how to broker from the upstream's shape alone, never from which
//! provider answered:
//!
//! | upstream transport | handshake | what HCP does |
//! |---|---|---|
//! | [`ConsoleTransport::Tcp`] | [`ConsoleHandshake::None`] | relays the socket's bytes (libvirt's VNC display) |
//! | [`ConsoleTransport::WebSocket`] | [`ConsoleHandshake::VncPassword`] | opens the WebSocket with the provider's headers and TLS trust, answers the VNC authentication itself, and offers the client a console without a password (Proxmox's `vncwebsocket`) |
//! | [`ConsoleTransport::Tcp`] | [`ConsoleHandshake::RdpPreconnection`] | sends the RDP pre-connection PDU naming the VM, then relays (Hyper-V's VMConnect port) |
//!
//! The HTTP service relays through its WebSocket console proxy; the CLI's `hcp vm console
//! --listen` bridges either the proxy (remote) or the upstream itself (embedded) to a local TCP
//! port for a native VNC or RDP client. Upstreams, their headers, tickets and passwords are never
//! shown to tenants, and their `Debug` output hides them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A console protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleKind {
    /// VNC (RFB), usually through HCP's WebSocket proxy.
    Vnc,
    /// SPICE.
    Spice,
    /// A browser URL.
    Web,
    /// RDP / VMConnect.
    Rdp,
    /// VMware WebMKS.
    Webmks,
}

impl ConsoleKind {
    /// Returns the stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleKind::Vnc => "vnc",
            ConsoleKind::Spice => "spice",
            ConsoleKind::Web => "web",
            ConsoleKind::Rdp => "rdp",
            ConsoleKind::Webmks => "webmks",
        }
    }
}

/// A console connection (reply of [`crate::Provider::console`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Console {
    /// The protocol.
    #[serde(rename = "type")]
    pub kind: ConsoleKind,
    /// Where a client connects. With an [`upstream`](Console::upstream), this is the provider's
    /// own address for operators (it may name the host); tenant-facing shells replace it with
    /// their relay's address and never show it.
    pub url: String,
    /// When the URL stops working.
    pub expires_at: DateTime<Utc>,
    /// What HCP relays on the caller's behalf; `None` when the client opens `url` itself.
    #[serde(skip)]
    pub upstream: Option<ConsoleUpstream>,
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a one-time token.
        f.debug_struct("Console")
            .field("kind", &self.kind)
            .field("expires_at", &self.expires_at)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// Builds the reply.
    pub fn new(kind: ConsoleKind, url: impl Into<String>, expires_at: DateTime<Utc>) -> Self {
        Console {
            kind,
            url: url.into(),
            expires_at,
            upstream: None,
        }
    }

    /// Sets what HCP relays.
    pub fn with_upstream(mut self, upstream: ConsoleUpstream) -> Self {
        self.upstream = Some(upstream);
        self
    }
}

/// What HCP connects to on a console client's behalf, and how it opens the session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsoleUpstream {
    /// How the bytes travel.
    pub transport: ConsoleTransport,
    /// What HCP says first, before relaying.
    pub handshake: ConsoleHandshake,
}

impl ConsoleUpstream {
    /// A raw TCP socket (`host:port`) whose bytes are relayed as they are.
    pub fn tcp(address: impl Into<String>) -> Self {
        ConsoleUpstream {
            transport: ConsoleTransport::Tcp {
                address: address.into(),
            },
            handshake: ConsoleHandshake::None,
        }
    }

    /// A WebSocket endpoint; see [`ConsoleTransport::WebSocket`].
    pub fn websocket(url: impl Into<String>, tls: TlsTrust) -> Self {
        ConsoleUpstream {
            transport: ConsoleTransport::WebSocket {
                url: url.into(),
                headers: Vec::new(),
                subprotocol: None,
                tls,
            },
            handshake: ConsoleHandshake::None,
        }
    }

    /// Adds a header to a WebSocket upstream's upgrade request (ignored for TCP).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        if let ConsoleTransport::WebSocket { headers, .. } = &mut self.transport {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// Asks a WebSocket upstream for a subprotocol (`binary` for RFB), ignored for TCP.
    pub fn with_subprotocol(mut self, protocol: impl Into<String>) -> Self {
        if let ConsoleTransport::WebSocket { subprotocol, .. } = &mut self.transport {
            *subprotocol = Some(protocol.into());
        }
        self
    }

    /// Sets the handshake HCP performs before relaying.
    pub fn with_handshake(mut self, handshake: ConsoleHandshake) -> Self {
        self.handshake = handshake;
        self
    }
}

/// How a console's bytes reach HCP.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsoleTransport {
    /// A TCP socket speaking the console protocol (VNC, SPICE, RDP).
    Tcp {
        /// `host:port` (IPv6 hosts in brackets).
        address: String,
    },
    /// A WebSocket (`ws://` or `wss://`) carrying the console protocol in binary frames.
    WebSocket {
        /// The endpoint, possibly with a ticket in its query.
        url: String,
        /// Headers sent with the upgrade request (an API token, a ticket cookie).
        headers: Vec<(String, String)>,
        /// The subprotocol to ask for, if the endpoint needs one.
        subprotocol: Option<String>,
        /// Which certificates a `wss://` endpoint may present.
        tls: TlsTrust,
    },
}

impl fmt::Debug for ConsoleTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Addresses name hosts (operator detail, fine in logs); URLs and headers may carry
            // tickets and tokens, so only their names show.
            ConsoleTransport::Tcp { address } => {
                f.debug_struct("Tcp").field("address", address).finish()
            }
            ConsoleTransport::WebSocket {
                headers,
                subprotocol,
                tls,
                ..
            } => f
                .debug_struct("WebSocket")
                .field(
                    "headers",
                    &headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                )
                .field("subprotocol", subprotocol)
                .field("tls", tls)
                .finish_non_exhaustive(),
        }
    }
}

/// What HCP says to the upstream before relaying the client's bytes.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsoleHandshake {
    /// Nothing: the client and the upstream talk from the first byte.
    None,
    /// The upstream speaks RFB and asks for VNC authentication with this password (a one-time
    /// ticket, usually). HCP negotiates RFB 3.8 with the upstream and answers the challenge, then
    /// offers the client RFB 3.3, 3.7 or 3.8 with security type "None", so the password never
    /// leaves HCP.
    VncPassword(String),
    /// The upstream is an RDP listener that routes by a pre-connection PDU (MS-RDPEPS, version
    /// 2), as Hyper-V's VMConnect port 2179 does with the VM's id: HCP sends the PDU with this
    /// blob, then relays, so a plain RDP client reaches the right VM.
    RdpPreconnection(String),
}

impl fmt::Debug for ConsoleHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsoleHandshake::None => f.write_str("None"),
            ConsoleHandshake::VncPassword(_) => f.write_str("VncPassword(..)"),
            ConsoleHandshake::RdpPreconnection(blob) => {
                f.debug_tuple("RdpPreconnection").field(blob).finish()
            }
        }
    }
}

/// Which certificates a TLS peer may present.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsTrust {
    /// The operating system's (or the bundled) public roots.
    System,
    /// Certificates signed by these PEM-encoded CA certificates only.
    CaPem(String),
    /// Exactly the certificate with this SHA-256 digest (of its DER), whoever signed it.
    PinnedSha256([u8; 32]),
}

impl fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsTrust::System => f.write_str("System"),
            TlsTrust::CaPem(_) => f.write_str("CaPem(..)"),
            TlsTrust::PinnedSha256(_) => f.write_str("PinnedSha256(..)"),
        }
    }
}

/// Builds the RDP pre-connection PDU, version 2 (MS-RDPEPS 2.2.1.2), that routes a connection
/// to the VM named by `blob`.
///
/// # Errors
/// Refuses a blob longer than 65,534 UTF-16 units (the PDU's length field).
pub fn rdp_preconnection_pdu(blob: &str) -> Result<Vec<u8>, String> {
    let mut units: Vec<u16> = blob.encode_utf16().collect();
    units.push(0);
    let count = u16::try_from(units.len())
        .map_err(|_| "the pre-connection blob is longer than 65,534 UTF-16 units".to_string())?;
    // cbSize(4) Flags(4) Version(4) Id(4) cchPCB(2) wszPCB(2 * cch)
    let size = 18 + 2 * usize::from(count);
    let size32 =
        u32::try_from(size).map_err(|_| "the pre-connection PDU is too large".to_string())?;
    let mut pdu = Vec::with_capacity(size);
    pdu.extend_from_slice(&size32.to_le_bytes());
    pdu.extend_from_slice(&0u32.to_le_bytes());
    pdu.extend_from_slice(&2u32.to_le_bytes());
    pdu.extend_from_slice(&0u32.to_le_bytes());
    pdu.extend_from_slice(&count.to_le_bytes());
    for u in units {
        pdu.extend_from_slice(&u.to_le_bytes());
    }
    Ok(pdu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_tickets_headers_and_passwords() {
        let up = ConsoleUpstream::websocket(
            "wss://pve:8006/api2/json/nodes/n1/qemu/100/vncwebsocket?vncticket=SECRET1",
            TlsTrust::CaPem("-----BEGIN CERTIFICATE-----SECRET2".into()),
        )
        .with_header("Authorization", "PVEAPIToken=root@pam!ci=SECRET3")
        .with_handshake(ConsoleHandshake::VncPassword("SECRET4".into()));
        let c =
            Console::new(ConsoleKind::Vnc, "https://x/?t=SECRET5", Utc::now()).with_upstream(up);
        let text = format!("{c:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("Authorization"), "{text}");
        assert!(text.contains("VncPassword"), "{text}");
    }

    #[test]
    fn rdp_preconnection_pdu_follows_ms_rdpeps() {
        let pdu = rdp_preconnection_pdu("AB").unwrap();
        // 18 bytes of header, then "A", "B", NUL in UTF-16LE.
        assert_eq!(pdu.len(), 24);
        assert_eq!(&pdu[0..4], &24u32.to_le_bytes());
        assert_eq!(&pdu[4..8], &0u32.to_le_bytes());
        assert_eq!(&pdu[8..12], &2u32.to_le_bytes());
        assert_eq!(&pdu[12..16], &0u32.to_le_bytes());
        assert_eq!(&pdu[16..18], &3u16.to_le_bytes());
        assert_eq!(&pdu[18..], &[b'A', 0, b'B', 0, 0, 0]);
        assert!(rdp_preconnection_pdu(&"x".repeat(70_000)).is_err());
    }
}
