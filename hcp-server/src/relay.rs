//! Console relays: open a provider's [`ConsoleUpstream`] and turn it into one plain byte stream.
//!
//! [`dial`] reads only the upstream's shape ([`ConsoleTransport`] and [`ConsoleHandshake`]),
//! never which provider answered:
//! - a TCP upstream is connected as is; a WebSocket upstream is opened with its headers,
//!   subprotocol and TLS trust ([`hcp_tls`]), and its binary frames become bytes;
//! - [`ConsoleHandshake::VncPassword`]: HCP logs in to the upstream's RFB server with the
//!   password (VNC authentication, RFB 3.8) before returning, and the returned stream then
//!   greets its client as an RFB server offering security type "None" (RFB 3.3, 3.7 or 3.8), so
//!   the password never leaves HCP;
//! - [`ConsoleHandshake::RdpPreconnection`]: HCP sends the RDP pre-connection PDU naming the VM
//!   first.
//!
//! The HTTP service relays the returned stream to its WebSocket console proxy's client; the CLI
//! (`hcp vm console --listen`, embedded) to a local TCP client. [`websocket_bytes`] turns any
//! tungstenite WebSocket into bytes, which the CLI also uses for HCP's own proxy.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use des::Des;
use des::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use futures::{SinkExt, StreamExt};
use hcp_core::{ConsoleHandshake, ConsoleTransport, ConsoleUpstream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

/// The largest chunk moved as one WebSocket frame or duplex write.
const CHUNK: usize = 64 * 1024;
/// The RFB version HCP speaks to both sides.
const RFB_38: &[u8; 12] = b"RFB 003.008\n";
/// The longest failure reason read from an RFB server.
const MAX_REASON: u32 = 4096;

/// A console byte stream: what [`dial`] returns.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> ByteStream for T {}

/// Opens `upstream` and performs its handshake, within `timeout`.
///
/// # Errors
/// A message for operators (it may name the host); never the URL's ticket, a header's value
/// or a password.
pub async fn dial(
    upstream: &ConsoleUpstream,
    timeout: Duration,
) -> Result<Box<dyn ByteStream>, String> {
    tokio::time::timeout(timeout, dial_inner(upstream))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn dial_inner(upstream: &ConsoleUpstream) -> Result<Box<dyn ByteStream>, String> {
    let mut stream: Box<dyn ByteStream> = match &upstream.transport {
        ConsoleTransport::Tcp { address } => {
            let tcp = TcpStream::connect(address)
                .await
                .map_err(|e| format!("connecting to {address}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            Box::new(tcp)
        }
        ConsoleTransport::WebSocket {
            url,
            headers,
            subprotocol,
            tls,
        } => {
            let mut req = url.as_str().into_client_request().map_err(|e| {
                format!("the console's WebSocket URL is not usable: {}", kind_of(&e))
            })?;
            for (name, value) in headers {
                let name =
                    tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("header {name} is not a valid header name"))?;
                let mut value = HeaderValue::from_str(value)
                    .map_err(|_| format!("header {name} holds characters a header cannot carry"))?;
                value.set_sensitive(true);
                req.headers_mut().insert(name, value);
            }
            if let Some(p) = subprotocol {
                let v = HeaderValue::from_str(p)
                    .map_err(|_| "the subprotocol is not a valid header value".to_string())?;
                req.headers_mut().insert("Sec-WebSocket-Protocol", v);
            }
            let uri = req.uri().clone();
            let host = uri
                .host()
                .ok_or_else(|| "the console's WebSocket URL has no host".to_string())?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let secure = uri.scheme_str() == Some("wss");
            let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            if secure {
                let config = hcp_tls::client_config(tls)?;
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| format!("{host} is not a valid TLS server name"))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
                let (ws, _) = tokio_tungstenite::client_async(req, tls)
                    .await
                    .map_err(|e| format!("WebSocket upgrade at {host}:{port}: {}", kind_of(&e)))?;
                Box::new(websocket_bytes(ws))
            } else {
                let (ws, _) = tokio_tungstenite::client_async(req, tcp)
                    .await
                    .map_err(|e| format!("WebSocket upgrade at {host}:{port}: {}", kind_of(&e)))?;
                Box::new(websocket_bytes(ws))
            }
        }
        _ => return Err("this console transport is not supported by this HCP".into()),
    };
    match &upstream.handshake {
        ConsoleHandshake::None => Ok(stream),
        ConsoleHandshake::RdpPreconnection(blob) => {
            let pdu = hcp_core::console::rdp_preconnection_pdu(blob)?;
            stream
                .write_all(&pdu)
                .await
                .map_err(|e| format!("sending the RDP pre-connection PDU: {e}"))?;
            Ok(stream)
        }
        ConsoleHandshake::VncPassword(password) => {
            vnc_login(&mut stream, password).await?;
            Ok(Box::new(greeting_none(stream)))
        }
        _ => Err("this console handshake is not supported by this HCP".into()),
    }
}

/// Describes a tungstenite error without its URL (which may carry a ticket).
fn kind_of(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Http(resp) => format!("the server answered HTTP {}", resp.status()),
        E::Url(_) => "an invalid URL".into(),
        E::Io(io) => io.to_string(),
        E::Tls(t) => format!("TLS: {t}"),
        E::Protocol(p) => format!("protocol: {p}"),
        other => other.to_string().chars().take(120).collect(),
    }
}

/// Turns a WebSocket carrying bytes in binary frames into a byte stream. Text frames and a
/// close end it; a write after the WebSocket ended fails.
pub fn websocket_bytes<S>(ws: WebSocketStream<S>) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (near, far) = tokio::io::duplex(CHUNK);
    tokio::spawn(async move {
        let (mut sink, mut frames) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(far);
        let inbound = async {
            while let Some(Ok(frame)) = frames.next().await {
                match frame {
                    Message::Binary(data) => {
                        if wr.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    Message::Text(_) | Message::Close(_) => break,
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match rd.read(&mut buf).await {
                    Ok(n) if n > 0 => {
                        let frame = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                        if sink.send(frame).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            let _ = sink.close().await;
        };
        tokio::select! {
            () = inbound => {}
            () = outbound => {}
        }
    });
    near
}

/// Logs in to an RFB server with VNC authentication (or none, when the server offers it),
/// leaving the stream where the server waits for ClientInit.
async fn vnc_login<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    password: &str,
) -> Result<(), String> {
    let io = |what: &str, e: io::Error| format!("RFB {what}: {e}");
    let mut version = [0u8; 12];
    s.read_exact(&mut version)
        .await
        .map_err(|e| io("version", e))?;
    if !version.starts_with(b"RFB 003.") {
        return Err("the console does not speak RFB".into());
    }
    s.write_all(RFB_38).await.map_err(|e| io("version", e))?;
    let count = s.read_u8().await.map_err(|e| io("security types", e))?;
    if count == 0 {
        return Err(format!("the VNC server refused: {}", read_reason(s).await));
    }
    let mut types = vec![0u8; usize::from(count)];
    s.read_exact(&mut types)
        .await
        .map_err(|e| io("security types", e))?;
    if types.contains(&2) {
        s.write_all(&[2])
            .await
            .map_err(|e| io("security type", e))?;
        let mut challenge = [0u8; 16];
        s.read_exact(&mut challenge)
            .await
            .map_err(|e| io("challenge", e))?;
        s.write_all(&vnc_response(password, challenge))
            .await
            .map_err(|e| io("response", e))?;
    } else if types.contains(&1) {
        s.write_all(&[1])
            .await
            .map_err(|e| io("security type", e))?;
    } else {
        return Err(format!(
            "the VNC server offers no security type HCP speaks (offered: {types:?}; HCP speaks 1 and 2)"
        ));
    }
    let result = s.read_u32().await.map_err(|e| io("security result", e))?;
    if result != 0 {
        return Err(format!(
            "the VNC server refused the console's password: {}",
            read_reason(s).await
        ));
    }
    Ok(())
}

/// Reads an RFB failure reason (a length and text), bounded.
async fn read_reason<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let Ok(len) = s.read_u32().await else {
        return "no reason given".into();
    };
    let mut text = vec![0u8; len.min(MAX_REASON) as usize];
    if s.read_exact(&mut text).await.is_err() {
        return "no reason given".into();
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The VNC authentication response: the challenge encrypted with DES under the password (its
/// first 8 bytes, zero-padded, each byte's bits reversed, as RFB's VNC authentication defines).
fn vnc_response(password: &str, challenge: [u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (k, b) in key.iter_mut().zip(password.as_bytes()) {
        *k = b.reverse_bits();
    }
    let cipher = Des::new(GenericArray::from_slice(&key));
    let mut out = challenge;
    for block in out.chunks_exact_mut(8) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    out
}

/// Returns a stream that greets its client as an RFB server offering security type "None",
/// then relays to `upstream`, which is past its own security handshake.
fn greeting_none(upstream: Box<dyn ByteStream>) -> DuplexStream {
    let (near, mut far) = tokio::io::duplex(CHUNK);
    tokio::spawn(async move {
        let mut upstream = upstream;
        if greet_none(&mut far).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut far, &mut upstream).await;
        }
        let _ = upstream.shutdown().await;
        let _ = far.shutdown().await;
    });
    near
}

/// Plays an RFB server's security handshake with security type "None" (RFB 3.3, 3.7, 3.8).
async fn greet_none<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    s.write_all(RFB_38).await?;
    let mut version = [0u8; 12];
    s.read_exact(&mut version).await?;
    match &version {
        b"RFB 003.003\n" => {
            // 3.3: the server picks the type; no result follows "None".
            s.write_u32(1).await
        }
        v if v.starts_with(b"RFB 003.") => {
            s.write_all(&[1, 1]).await?;
            let chosen = s.read_u8().await?;
            if chosen != 1 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the client chose a security type HCP did not offer",
                ));
            }
            if v == RFB_38 {
                s.write_u32(0).await?;
            }
            Ok(())
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the client does not speak RFB",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A known answer computed independently (Python `cryptography`'s DES, the way fakepve's
    /// VNC server checks it): password "password", challenge 0..16.
    #[test]
    fn vnc_response_matches_an_independent_des() {
        let challenge: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(
            vnc_response("password", challenge),
            [
                184, 102, 146, 65, 37, 200, 238, 187, 157, 235, 193, 219, 97, 197, 56, 226
            ]
        );
        // Only the first 8 bytes of a password count.
        assert_eq!(
            vnc_response("password-and-more", challenge),
            vnc_response("password", challenge)
        );
    }

    /// The relay logs in to an RFB server asking for VNC authentication and offers its client
    /// "None"; the server sees the right response, the client the server's init.
    #[tokio::test]
    async fn vnc_password_handshake_end_to_end() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(RFB_38).await.unwrap();
            let mut v = [0u8; 12];
            s.read_exact(&mut v).await.unwrap();
            assert_eq!(&v, RFB_38);
            s.write_all(&[1, 2]).await.unwrap();
            assert_eq!(s.read_u8().await.unwrap(), 2);
            let challenge = [7u8; 16];
            s.write_all(&challenge).await.unwrap();
            let mut resp = [0u8; 16];
            s.read_exact(&mut resp).await.unwrap();
            let ok = resp == vnc_response("ticket-1", challenge);
            s.write_u32(u32::from(!ok)).await.unwrap();
            assert!(ok, "the relay answered the challenge wrongly");
            assert_eq!(s.read_u8().await.unwrap(), 1, "ClientInit (shared)");
            s.write_all(b"SERVERINIT").await.unwrap();
        });
        let up = ConsoleUpstream::tcp(addr)
            .with_handshake(ConsoleHandshake::VncPassword("ticket-1".into()));
        let mut client = dial(&up, Duration::from_secs(5)).await.unwrap();
        let mut v = [0u8; 12];
        client.read_exact(&mut v).await.unwrap();
        assert_eq!(&v, RFB_38);
        client.write_all(RFB_38).await.unwrap();
        let mut types = [0u8; 2];
        client.read_exact(&mut types).await.unwrap();
        assert_eq!(types, [1, 1], "one type: None");
        client.write_all(&[1]).await.unwrap();
        assert_eq!(client.read_u32().await.unwrap(), 0);
        client.write_all(&[1]).await.unwrap();
        let mut init = [0u8; 10];
        client.read_exact(&mut init).await.unwrap();
        assert_eq!(&init, b"SERVERINIT");
        server.await.unwrap();
    }

    /// A wrong password is an error at dial time, with the server's reason.
    #[tokio::test]
    async fn a_refused_password_fails_the_dial() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(RFB_38).await.unwrap();
            let mut v = [0u8; 12];
            s.read_exact(&mut v).await.unwrap();
            s.write_all(&[1, 2]).await.unwrap();
            let _ = s.read_u8().await;
            s.write_all(&[0u8; 16]).await.unwrap();
            let mut resp = [0u8; 16];
            s.read_exact(&mut resp).await.unwrap();
            s.write_u32(1).await.unwrap();
            s.write_u32(14).await.unwrap();
            s.write_all(b"bad credential").await.unwrap();
        });
        let up =
            ConsoleUpstream::tcp(addr).with_handshake(ConsoleHandshake::VncPassword("nope".into()));
        let e = dial(&up, Duration::from_secs(5)).await.err().unwrap();
        assert!(e.contains("bad credential"), "{e}");
        assert!(!e.contains("nope"), "{e}");
    }

    /// The RDP pre-connection PDU goes first, then bytes flow as they are.
    #[tokio::test]
    async fn rdp_preconnection_goes_first() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let pdu = hcp_core::console::rdp_preconnection_pdu("VM-GUID").unwrap();
            let mut got = vec![0u8; pdu.len()];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, pdu);
            let mut x224 = [0u8; 4];
            s.read_exact(&mut x224).await.unwrap();
            assert_eq!(&x224, &[3, 0, 0, 19]);
        });
        let up = ConsoleUpstream::tcp(addr)
            .with_handshake(ConsoleHandshake::RdpPreconnection("VM-GUID".into()));
        let mut s = dial(&up, Duration::from_secs(5)).await.unwrap();
        s.write_all(&[3, 0, 0, 19]).await.unwrap();
        server.await.unwrap();
    }
}
