//! The `ca_file` forwarder: how HCP trusts a private certificate authority although winrm-rs 1.1
//! verifies HTTPS against the public web PKI roots only.
//!
//! winrm-rs is configured for plain `http://<host>:<port>/wsman` with its `proxy` setting pointing
//! at a small HTTP forward proxy inside the HCP process, one for each host. The proxy
//!
//! - listens on `127.0.0.1` on an ephemeral port and answers only requests that carry its random
//!   `Proxy-Authorization` token (compared in constant time; otherwise `407`), and only for the
//!   configured `host:port` (otherwise `403`; `CONNECT` is refused too): it is never an open relay;
//! - opens TLS to the host and verifies its certificate chain and name against the operator's CA
//!   bundle only (rustls' WebPKI verifier with those roots, built by [`hcp_tls::client_config`]);
//!   the public roots are not trusted alongside, so `ca_file` pins the hosts to the site's PKI;
//! - pairs every loopback connection with one TLS connection to the host, kept alive as long as
//!   the loopback one is, so an NTLM handshake stays on one connection end to end (HTTP.sys binds
//!   NTLM to the connection), and streams request and response bodies without buffering them;
//! - remembers a failed TLS handshake, so that [`crate::client::HostClient`] reports it as a
//!   permanent error naming `ca_file` instead of an authentication failure the engine would retry.
//!
//! It never logs the token or a body. What it changes for the operator (channel binding, the
//! plain-HTTP loopback leg) is described in the provider's README.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hcp_core::{Error, Result, SecretString};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use crate::client::HostStats;

/// How long connecting to the host, and then the TLS handshake, may each take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The header a forwarder's own answers carry, so they cannot be mistaken for the host's.
pub const FORWARDER_HEADER: &str = "x-hcp-forwarder";

type Body = BoxBody<Bytes, hyper::Error>;

/// Why the last connection to the host failed; cleared by the next successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// rustls refused the TLS handshake: the certificate is not signed by the CA bundle, names
    /// another host, has expired, or the host does not speak TLS. Permanent.
    Tls(String),
    /// The host could not be reached (refused, timed out, no route).
    Unreachable(String),
}

struct Shared {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    expected: Vec<u8>,
    tls: TlsConnector,
    failure: Mutex<Option<UpstreamFailure>>,
    stats: Arc<HostStats>,
}

/// One host's forwarder: a loopback listener, its token and the host it forwards to.
pub struct Forwarder {
    addr: SocketAddr,
    token: SecretString,
    shared: Arc<Shared>,
    listener: Mutex<Option<std::net::TcpListener>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("addr", &self.addr)
            .field("host", &self.shared.host)
            .field("port", &self.shared.port)
            .finish_non_exhaustive()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Forwarder {
    /// Binds a forwarder to `host:port` on an ephemeral loopback port with a fresh random token;
    /// it serves from the first [`Forwarder::ensure_running`] on and counts the TLS connections
    /// it opens in `stats`.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] when `host` is not a valid TLS server name, and an
    /// internal error when no loopback port can be bound.
    pub fn bind(
        host: &str,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        stats: Arc<HostStats>,
    ) -> Result<Self> {
        let server_name = ServerName::try_from(host.to_string()).map_err(|_| {
            Error::invalid(
                "address",
                format!("`{host}` is not a host name or IP address TLS can verify"),
            )
        })?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| {
            Error::internal(format!(
                "cannot bind the ca_file forwarder on 127.0.0.1: {e}"
            ))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("the ca_file forwarder has no address: {e}")))?;
        let token = hex::encode(rand::random::<[u8; 32]>());
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("hcp:{token}"))
        )
        .into_bytes();
        Ok(Forwarder {
            addr,
            token: SecretString::new(token),
            shared: Arc::new(Shared {
                host: host.to_string(),
                port,
                server_name,
                expected,
                tls: TlsConnector::from(tls),
                failure: Mutex::new(None),
                stats,
            }),
            listener: Mutex::new(Some(listener)),
            task: Mutex::new(None),
        })
    }

    /// Returns the proxy URL winrm-rs is given: `http://hcp:<token>@127.0.0.1:<port>`. It holds
    /// the token: never log it.
    pub fn proxy_url(&self) -> String {
        format!("http://hcp:{}@{}", self.token.expose(), self.addr)
    }

    /// Returns the loopback address the forwarder listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving on the current tokio runtime, once; later calls do nothing.
    ///
    /// # Errors
    /// An internal error when the listener cannot join the runtime.
    pub fn ensure_running(&self) -> Result<()> {
        let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(());
        };
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map_err(|e| Error::internal(format!("cannot start the ca_file forwarder: {e}")))?;
        let task = tokio::spawn(accept_loop(listener, self.shared.clone()));
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        Ok(())
    }

    /// Returns why the last connection to the host failed, if the one after it has not succeeded.
    pub fn failure(&self) -> Option<UpstreamFailure> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Returns `host:port` of the host this forwarder reaches.
    pub fn target(&self) -> String {
        format!("{}:{}", self.shared.host, self.shared.port)
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(host = %shared.host, error = %e, "the ca_file forwarder cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one loopback connection, with its own TLS connection to the host.
async fn serve(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let upstream: Arc<tokio::sync::Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let upstream = upstream.clone();
        async move { Ok::<_, Infallible>(handle(req, &shared, &upstream).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "a ca_file forwarder connection ended with an error");
    }
}

fn answer(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(FORWARDER_HEADER, HeaderValue::from_static("1"));
    resp
}

/// True when `uri` names exactly the configured host and port over `http`.
fn is_target(uri: &Uri, shared: &Shared) -> bool {
    let Some(authority) = uri.authority() else {
        return false;
    };
    uri.scheme_str() == Some("http")
        && authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .eq_ignore_ascii_case(&shared.host)
        && authority.port_u16() == Some(shared.port)
}

/// Removes the hop-by-hop headers (RFC 9110, 7.6.1) and those the proxy consumes.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
    headers.remove("keep-alive");
}

async fn handle(
    req: Request<Incoming>,
    shared: &Shared,
    upstream: &tokio::sync::Mutex<Option<SendRequest<Incoming>>>,
) -> Response<Body> {
    let authorized = req
        .headers()
        .get(header::PROXY_AUTHORIZATION)
        .is_some_and(|v| bool::from(v.as_bytes().ct_eq(&shared.expected)));
    if !authorized {
        let mut resp = answer(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "the HCP forwarder needs its token",
        );
        resp.headers_mut().insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hcp\""),
        );
        return resp;
    }
    if req.method() == Method::CONNECT || !is_target(req.uri(), shared) {
        return answer(
            StatusCode::FORBIDDEN,
            "the HCP forwarder reaches only its configured host",
        );
    }
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return answer(StatusCode::BAD_REQUEST, "bad request target"),
    };
    strip_hop_by_hop(&mut parts.headers);
    let request = Request::from_parts(parts, body);

    let mut slot = upstream.lock().await;
    let reusable = match slot.as_mut() {
        Some(sender) => sender.ready().await.is_ok(),
        None => false,
    };
    if !reusable {
        *slot = None;
        match connect(shared).await {
            Ok(sender) => *slot = Some(sender),
            Err(failure) => {
                let text = match &failure {
                    UpstreamFailure::Tls(_) => "TLS with the host failed (see ca_file)",
                    UpstreamFailure::Unreachable(_) => "cannot reach the host",
                };
                *shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
                return answer(StatusCode::BAD_GATEWAY, text);
            }
        }
    }
    let Some(sender) = slot.as_mut() else {
        return answer(StatusCode::BAD_GATEWAY, "no connection to the host");
    };
    match sender.send_request(request).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => {
            *slot = None;
            tracing::debug!(host = %shared.host, error = %e, "the host closed a forwarded request");
            answer(StatusCode::BAD_GATEWAY, "the host closed the connection")
        }
    }
}

/// Opens a verified TLS connection to the host and an HTTP/1.1 client over it.
async fn connect(shared: &Shared) -> std::result::Result<SendRequest<Incoming>, UpstreamFailure> {
    let target = (shared.host.as_str(), shared.port);
    let tcp =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamFailure::Unreachable(e.to_string())),
            Err(_) => {
                return Err(UpstreamFailure::Unreachable(format!(
                    "no connection within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        shared.tls.connect(shared.server_name.clone(), tcp),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // A rustls error is final (an untrusted certificate, a wrong name, a host that does
            // not speak TLS); anything else (a reset mid-handshake) may pass.
            let failure = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => UpstreamFailure::Tls(tls.to_string()),
                None => UpstreamFailure::Unreachable(format!("TLS handshake interrupted: {e}")),
            };
            tracing::warn!(
                host = %shared.host,
                port = shared.port,
                failure = ?failure,
                "TLS with the Hyper-V host failed (ca_file forwarder)"
            );
            return Err(failure);
        }
        Err(_) => {
            return Err(UpstreamFailure::Unreachable(format!(
                "no TLS handshake within {}s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| UpstreamFailure::Unreachable(e.to_string()))?;
    let host = shared.host.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(host = %host, error = %e, "a forwarded TLS connection ended");
        }
    });
    *shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
    shared.stats.count_upstream_connection();
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn forwarder() -> Forwarder {
        let tls = hcp_tls::client_config(&hcp_core::TlsTrust::System).unwrap();
        Forwarder::bind("hv1.corp.example", 5986, Arc::new(tls), Arc::default()).unwrap()
    }

    async fn send(f: &Forwarder, request: String) -> String {
        let mut s = tokio::net::TcpStream::connect(f.local_addr())
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    fn token_of(f: &Forwarder) -> String {
        let url = f.proxy_url();
        let rest = url.strip_prefix("http://hcp:").unwrap();
        rest.split_once('@').unwrap().0.to_string()
    }

    fn basic(token: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("hcp:{token}"))
    }

    #[tokio::test]
    async fn requests_without_the_token_get_407() {
        let f = forwarder();
        f.ensure_running().unwrap();
        let target = "http://hv1.corp.example:5986/wsman";
        let none = send(
            &f,
            format!("POST {target} HTTP/1.1\r\nHost: hv1.corp.example:5986\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(none.starts_with("HTTP/1.1 407"), "{none}");
        assert!(
            none.to_ascii_lowercase()
                .contains("proxy-authenticate: basic"),
            "{none}"
        );
        let wrong = basic(&"0".repeat(64));
        let bad = send(
            &f,
            format!("POST {target} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic {wrong}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(bad.starts_with("HTTP/1.1 407"), "{bad}");
        assert!(!bad.contains(&token_of(&f)), "{bad}");
    }

    #[tokio::test]
    async fn requests_for_another_host_or_a_tunnel_get_403() {
        let f = forwarder();
        f.ensure_running().unwrap();
        let auth = basic(&token_of(&f));
        for (line, why) in [
            (
                "POST http://hv2.corp.example:5986/wsman HTTP/1.1",
                "another host",
            ),
            (
                "POST http://hv1.corp.example:5985/wsman HTTP/1.1",
                "another port",
            ),
            (
                "POST https://hv1.corp.example:5986/wsman HTTP/1.1",
                "another scheme",
            ),
            ("POST /wsman HTTP/1.1", "no absolute target"),
            ("CONNECT hv1.corp.example:5986 HTTP/1.1", "a tunnel"),
        ] {
            let out = send(
                &f,
                format!("{line}\r\nHost: hv1.corp.example:5986\r\nProxy-Authorization: Basic {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert!(out.starts_with("HTTP/1.1 403"), "{why}: {out}");
        }
        // Nothing was attempted towards any host.
        assert_eq!(f.failure(), None);
    }

    #[tokio::test]
    async fn the_right_target_is_forwarded_and_an_unreachable_host_is_remembered() {
        // A port nothing listens on: bind one, then close it.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let tls = hcp_tls::client_config(&hcp_core::TlsTrust::System).unwrap();
        let f = Forwarder::bind("127.0.0.1", port, Arc::new(tls), Arc::default()).unwrap();
        f.ensure_running().unwrap();
        let auth = basic(&token_of(&f));
        let out = send(
            &f,
            format!("POST http://127.0.0.1:{port}/wsman HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nProxy-Authorization: Basic {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 502"), "{out}");
        assert!(matches!(f.failure(), Some(UpstreamFailure::Unreachable(_))));
    }

    #[test]
    fn debug_never_prints_the_token() {
        let f = forwarder();
        assert!(!format!("{f:?}").contains(&token_of(&f)));
        assert_eq!(token_of(&f).len(), 64);
        assert_ne!(token_of(&f), token_of(&forwarder()));
    }
}
