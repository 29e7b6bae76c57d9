//! The console proxy: HCP's own WebSocket endpoint in front of a VM's console.
//!
//! When a provider's console carries an upstream ([`hcp_core::ConsoleUpstream`]: a VNC or RDP
//! socket, or a WebSocket with a ticket, never shown to tenants), `POST .../vms/{vmId}:console`
//! does not hand out the provider's URL. It mints a single-use token bound to the VM, its project and the caller, and
//! answers `ws(s)://<public base>/api/hcp/tenant/v1/console/ws?token=…` with the token's connect
//! deadline as `expires_at`. A WebSocket client (noVNC, or any RFC 6455 client speaking binary
//! frames) connects there, and the proxy opens the upstream as its shape says ([`crate::relay`]:
//! TCP or WebSocket, a VNC password answered by HCP, an RDP pre-connection PDU) and relays bytes
//! until either side closes. A native VNC or RDP client reaches the same relay through `hcp vm
//! console --listen`. Consoles without an upstream (the simulator's, a vendor's web console)
//! keep their provider's URL.
//!
//! # Behavior
//! - A token is 256 bits from the operating system's CSPRNG, base64url. The server keeps only
//!   its SHA-256 digest, in memory, with the VM, project, caller subject, upstream and deadline
//!   (at most [`MAX_TICKETS`] at once; entries are purged once well past their deadline).
//! - Connecting consumes the token atomically: a second connection with it is `410
//!   CONSOLE_TOKEN_USED`, one after the deadline `410 CONSOLE_TOKEN_EXPIRED`, one with a token
//!   this server never issued (or forgot) `404 CONSOLE_TOKEN_NOT_FOUND`, and one by another caller
//!   than the token's `403 CONSOLE_TOKEN_FOREIGN` (which voids the token: a leaked token is
//!   spent). The WebSocket request is authenticated like every tenant route: a bearer token, or
//!   the browser login's session cookie, which browsers send with the upgrade request. In
//!   development mode every caller is the development principal.
//! - The VM must still exist in the token's project; the upstream is connected before the
//!   upgrade is answered, so an unreachable console is a `503`, not a broken WebSocket.
//! - The `binary` subprotocol (what noVNC asks for) is accepted; binary frames carry the RFB
//!   stream both ways, text frames are refused (close code 1003).
//! - The relay's start and end are audit events ([`EventKind::ConsoleSession`], with the bytes
//!   relayed at the end) naming the caller. A stopping server closes every relay (close code
//!   1001) and records their ends.
//! - Tokens live in the memory of the replica that issued them: several replicas behind one
//!   address need sticky sessions for `/api/hcp/tenant/v1/console/ws`.
//!
//! # Connecting with noVNC
//! ```text
//! POST /api/hcp/tenant/v1/projects/demo/vms/vm-…:console   (bearer token or session + CSRF)
//!   → {"type": "vnc", "url": "wss://hcp.example.com/api/hcp/tenant/v1/console/ws?token=…", "expires_at": …}
//! new RFB(element, url)   // noVNC, within expires_at, from a page whose session cookie
//!                         // authenticates the upgrade (the same origin as HCP)
//! ```
//! Clients outside a browser send `Authorization: Bearer <JWT>` with the upgrade request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use hcp_core::store::Scope;
use hcp_core::{
    Console, ConsoleUpstream, Engine, Error, ErrorKind, EventKind, Principal, ProjectId,
    RequestContext, VmId,
};
use poem::Request;
use poem::web::websocket::{CloseCode, Message, WebSocketStream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::auth::Caller;
use crate::dto::ConsoleDto;
use crate::error::{
    CODE_CONSOLE_TOKEN_EXPIRED, CODE_CONSOLE_TOKEN_FOREIGN, CODE_CONSOLE_TOKEN_NOT_FOUND,
    CODE_CONSOLE_TOKEN_USED,
};
use crate::relay::{self, ByteStream};

/// The path of the proxy's WebSocket endpoint.
pub(crate) const CONSOLE_WS_PATH: &str = "/api/hcp/tenant/v1/console/ws";
/// The WebSocket subprotocol noVNC asks for: RFB bytes in binary frames.
pub(crate) const SUBPROTOCOL: &str = "binary";
/// The most console tokens kept at once (issued, used or expired, until purged).
pub const MAX_TICKETS: usize = 10_000;
/// How long connecting to a console's upstream (and its handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping server waits for its relays to record their end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an entry stays known past its deadline (at least), so that a late or repeated
/// connection hears why it is refused.
const KEEP_AFTER_DEADLINE: Duration = Duration::from_secs(60);
/// The largest chunk read from the upstream and sent as one binary frame.
const CHUNK: usize = 64 * 1024;

/// What becomes of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TicketState {
    /// Issued, not yet used.
    Open,
    /// A connection used it.
    Used,
    /// Another caller presented it; it is void.
    Voided,
}

/// What the server keeps about one token.
#[derive(Debug, Clone)]
struct Ticket {
    grant: Grant,
    deadline: DateTime<Utc>,
    /// When the entry is purged: past the deadline by one more TTL (a minute at least), so that
    /// a late or repeated connection still hears why it is refused.
    keep_until: DateTime<Utc>,
    state: TicketState,
}

/// The console a consumed token grants.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) vm_id: VmId,
    pub(crate) project: ProjectId,
    pub(crate) subject: String,
    upstream: ConsoleUpstream,
}

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The VM's console closed (or failed).
    Upstream,
    /// The client closed.
    Client,
    /// The client's WebSocket failed.
    ClientError,
    /// The client sent a text frame.
    Text,
    /// The server is stopping.
    Stopping,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Upstream => "upstream",
            Ended::Client => "client",
            Ended::ClientError => "client error",
            Ended::Text => "client sent text",
            Ended::Stopping => "server stopping",
        }
    }
}

/// The console tokens of one server and its running relays.
pub(crate) struct ConsoleProxy {
    tickets: Mutex<HashMap<[u8; 32], Ticket>>,
    ttl: Duration,
    public_url: Option<url::Url>,
    /// Set to true when the server stops: every relay closes.
    stopping: watch::Sender<bool>,
    /// The number of running relays.
    active: watch::Sender<usize>,
    /// What time it is (the engine's clock).
    clock: Arc<dyn hcp_core::Clock>,
}

impl std::fmt::Debug for ConsoleProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleProxy")
            .field("ttl", &self.ttl)
            .field("active", &*self.active.borrow())
            .finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `now` plus `d`, saturating at the calendar's end.
fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl ConsoleProxy {
    /// Creates the proxy: tokens valid for `ttl` to connect; URLs under `public_url` when set,
    /// else under the request's own host.
    pub(crate) fn new(ttl: Duration, public_url: Option<url::Url>) -> ConsoleProxy {
        ConsoleProxy {
            tickets: Mutex::new(HashMap::new()),
            ttl,
            public_url,
            stopping: watch::channel(false).0,
            active: watch::channel(0).0,
            clock: Arc::new(hcp_core::SystemClock),
        }
    }

    /// Reads time from `clock` (the engine's) instead of the system clock.
    pub(crate) fn with_clock(mut self, clock: Arc<dyn hcp_core::Clock>) -> ConsoleProxy {
        self.clock = clock;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Ticket>> {
        self.tickets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mints a token for `console` (which has an upstream) of `vm_id`, bound to the caller of
    /// `ctx`, and returns the console the tenant sees: the proxy's URL and the token's deadline.
    ///
    /// # Errors
    /// [`ErrorKind::QuotaExceeded`] (temporary) when [`MAX_TICKETS`] tokens wait to be used;
    /// [`ErrorKind::Internal`] without OS randomness.
    pub(crate) fn issue(
        &self,
        req: &Request,
        ctx: &RequestContext,
        vm_id: &VmId,
        console: Console,
    ) -> hcp_core::Result<ConsoleDto> {
        let upstream = console
            .upstream
            .clone()
            .ok_or_else(|| Error::internal("a proxied console needs an upstream"))?;
        // The provider's own deadline wins when it is nearer.
        let now = self.clock.now();
        let provider_left = (console.expires_at - now)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let left = self.ttl.min(provider_left);
        if left.is_zero() {
            return Err(Error::new(
                ErrorKind::ProviderError,
                format!("the provider handed out a console of vm `{vm_id}` that already expired"),
            ));
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)
            .map_err(|e| Error::internal(format!("no OS randomness for a console token: {e}")))?;
        let token = URL_SAFE_NO_PAD.encode(raw);
        let ticket = Ticket {
            grant: Grant {
                vm_id: vm_id.clone(),
                project: ctx.project.clone(),
                subject: ctx.principal.subject.to_string(),
                upstream,
            },
            deadline: after(now, left),
            keep_until: after(now, left + self.ttl.max(KEEP_AFTER_DEADLINE)),
            state: TicketState::Open,
        };
        {
            let mut tickets = self.lock();
            tickets.retain(|_, t| t.keep_until > now);
            if tickets.len() >= MAX_TICKETS {
                tickets.retain(|_, t| t.state == TicketState::Open && t.deadline > now);
            }
            if tickets.len() >= MAX_TICKETS {
                return Err(Error::new(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "{MAX_TICKETS} console tokens are waiting to be used; try again when \
                         some have been used or expired (after {}s at most)",
                        self.ttl.as_secs().max(1)
                    ),
                )
                .with_code(hcp_core::CODE_CAPACITY_EXHAUSTED)
                .temporary());
            }
            tickets.insert(digest(&token), ticket);
        }
        tracing::info!(target: "hcp::console", vm_id = %vm_id, project = %ctx.project, expires_in_ms = left.as_millis() as u64, "console token issued");
        let expires_at = after(now, left);
        Ok(ConsoleDto {
            kind: console.kind.into(),
            url: format!("{}{CONSOLE_WS_PATH}?token={token}", self.ws_base(req)),
            expires_at,
        })
    }

    /// Returns `ws(s)://host[:port][/prefix]`: from the public URL when configured, else from
    /// the request's `Host` (or the local address) and scheme (`X-Forwarded-Proto: https` or
    /// TLS → `wss`).
    fn ws_base(&self, req: &Request) -> String {
        if let Some(u) = &self.public_url {
            let scheme = if u.scheme() == "https" { "wss" } else { "ws" };
            let host = u.host_str().unwrap_or("127.0.0.1");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            return format!("{scheme}://{host}{port}{}", u.path().trim_end_matches('/'));
        }
        let forwarded_https = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        let scheme = if forwarded_https || *req.scheme() == poem::http::uri::Scheme::HTTPS {
            "wss"
        } else {
            "ws"
        };
        let host = req
            .headers()
            .get(poem::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .filter(|h| {
                h.parse::<poem::http::uri::Authority>()
                    .is_ok_and(|a| a.as_str() == h && !h.contains('@'))
            })
            .or_else(|| req.local_addr().as_socket_addr().map(SocketAddr::to_string))
            .unwrap_or_else(|| "127.0.0.1".into());
        format!("{scheme}://{host}")
    }

    /// Consumes `token` for `caller`.
    ///
    /// # Errors
    /// `404 CONSOLE_TOKEN_NOT_FOUND`, `410 CONSOLE_TOKEN_USED`, `410 CONSOLE_TOKEN_EXPIRED`,
    /// `403 CONSOLE_TOKEN_FOREIGN` (see the module's behavior).
    pub(crate) fn take(&self, token: &str, caller: &Caller) -> hcp_core::Result<Grant> {
        let now = self.clock.now();
        let mut tickets = self.lock();
        tickets.retain(|_, t| t.keep_until > now);
        let Some(t) = tickets.get_mut(&digest(token)) else {
            return Err(Error::new(
                ErrorKind::NotFound,
                "token: this console token is unknown here: this server never issued it, or it \
                 expired long ago (tokens live in the memory of the server that issued them); ask \
                 for a new console with POST .../vms/{vmId}:console",
            )
            .with_field("token")
            .with_code(CODE_CONSOLE_TOKEN_NOT_FOUND));
        };
        match t.state {
            TicketState::Used => {
                return Err(Error::new(
                    ErrorKind::Unauthorized,
                    "token: this console token was already used; a token opens one connection, \
                     so ask for a new console with POST .../vms/{vmId}:console",
                )
                .with_field("token")
                .with_code(CODE_CONSOLE_TOKEN_USED));
            }
            TicketState::Voided => {
                return Err(Error::new(
                    ErrorKind::Unauthorized,
                    "token: this console token was presented by another caller and is void; ask \
                     for a new console with POST .../vms/{vmId}:console",
                )
                .with_field("token")
                .with_code(CODE_CONSOLE_TOKEN_USED));
            }
            TicketState::Open => {}
        }
        if now >= t.deadline {
            return Err(Error::new(
                ErrorKind::Unauthorized,
                format!(
                    "token: this console token expired: connect within {}s of asking for the \
                     console (its `expires_at`), or ask for a new one",
                    self.ttl.as_secs_f64()
                ),
            )
            .with_field("token")
            .with_code(CODE_CONSOLE_TOKEN_EXPIRED));
        }
        if t.grant.subject != caller.subject || !caller.member_of(&t.grant.project) {
            t.state = TicketState::Voided;
            tracing::warn!(target: "hcp::console", vm_id = %t.grant.vm_id, project = %t.grant.project, caller = %caller.subject, "a console token was presented by another caller than the one it was issued to; the token is void");
            return Err(Error::new(
                ErrorKind::Unauthorized,
                "token: this console token was issued to another caller; it is now void",
            )
            .with_field("token")
            .with_code(CODE_CONSOLE_TOKEN_FOREIGN));
        }
        t.state = TicketState::Used;
        Ok(t.grant.clone())
    }

    /// Checks that the granted VM still exists and connects to its upstream.
    ///
    /// # Errors
    /// `404` when the VM is gone; a temporary `503 PROVIDER_UNAVAILABLE` when the console's
    /// socket does not answer (its address is logged, not returned).
    pub(crate) async fn connect(
        &self,
        engine: &Engine,
        grant: &Grant,
    ) -> hcp_core::Result<Box<dyn ByteStream>> {
        engine
            .get_vm(&Scope::Project(grant.project.clone()), &grant.vm_id)
            .await?;
        relay::dial(&grant.upstream, CONNECT_TIMEOUT)
            .await
            .map_err(|why| {
                tracing::warn!(target: "hcp::console", vm_id = %grant.vm_id, upstream = ?grant.upstream, error = %why, "cannot connect to a console's upstream");
                Error::new(
                    ErrorKind::ProviderUnavailable,
                    format!(
                        "the console of vm `{}` does not answer; check that the VM runs and try again",
                        grant.vm_id
                    ),
                )
                .temporary()
            })
    }

    /// Relays bytes between `ws` and `upstream` until either side closes or the server stops,
    /// recording the session's start and end as audit events.
    pub(crate) async fn relay(
        self: Arc<Self>,
        engine: Engine,
        grant: Grant,
        upstream: Box<dyn ByteStream>,
        ws: WebSocketStream,
    ) {
        let principal = Principal::new(grant.subject.clone());
        self.active.send_modify(|n| *n += 1);
        engine
            .record_event(
                Some(grant.project.clone()),
                Some(grant.vm_id.clone()),
                Some(&principal),
                EventKind::ConsoleSession {
                    opened: true,
                    bytes: None,
                },
            )
            .await;
        tracing::info!(target: "hcp::console", vm_id = %grant.vm_id, project = %grant.project, principal = %principal, "console session opened");
        let mut stopping = self.stopping.subscribe();
        let stop = async move {
            // The guard `wait_for` returns must not live across the relay's awaits.
            let _ = stopping.wait_for(|s| *s).await.map(|_| ());
        };
        tokio::pin!(stop);
        let (mut sink, mut stream) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(upstream);
        let (mut to_vm, mut to_client) = (0u64, 0u64);
        // Each direction runs on its own, so a slow reader on one side never stalls the other.
        let ended = {
            let client_to_vm = async {
                loop {
                    match stream.next().await {
                        Some(Ok(Message::Binary(data))) => {
                            if wr.write_all(&data).await.is_err() {
                                return Ended::Upstream;
                            }
                            to_vm += data.len() as u64;
                        }
                        Some(Ok(Message::Text(_))) => return Ended::Text,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => return Ended::Client,
                        Some(Err(_)) => return Ended::ClientError,
                    }
                }
            };
            let vm_to_client = async {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(n) if n > 0 => {
                            if sink.send(Message::Binary(buf[..n].to_vec())).await.is_err() {
                                return Ended::ClientError;
                            }
                            to_client += n as u64;
                        }
                        _ => return Ended::Upstream,
                    }
                }
            };
            tokio::select! {
                e = client_to_vm => e,
                e = vm_to_client => e,
                () = &mut stop => Ended::Stopping,
            }
        };
        let close = match ended {
            Ended::Upstream => Some((CloseCode::Normal, "the console closed")),
            Ended::Text => Some((CloseCode::Unsupported, "send RFB bytes in binary frames")),
            Ended::Stopping => Some((CloseCode::Away, "HCP is stopping")),
            Ended::Client | Ended::ClientError => None,
        };
        if let Some((code, reason)) = close {
            let _ = sink
                .send(Message::Close(Some((code, reason.to_string()))))
                .await;
        }
        let ended_by = ended.as_str();
        let _ = wr.shutdown().await;
        let _ = sink.close().await;
        engine
            .record_event(
                Some(grant.project.clone()),
                Some(grant.vm_id.clone()),
                Some(&principal),
                EventKind::ConsoleSession {
                    opened: false,
                    bytes: Some(to_vm + to_client),
                },
            )
            .await;
        tracing::info!(target: "hcp::console", vm_id = %grant.vm_id, project = %grant.project, principal = %principal, bytes_to_vm = to_vm, bytes_to_client = to_client, ended_by, "console session closed");
        self.active.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Closes every relay and waits (a few seconds at most) until they have recorded their end.
    pub(crate) async fn close_all(&self) {
        self.stopping.send_replace(true);
        let mut active = self.active.subscribe();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, active.wait_for(|n| *n == 0)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcp_core::ConsoleKind;

    fn ctx(subject: &str) -> RequestContext {
        RequestContext::new("demo", Principal::new(subject))
    }

    fn caller(subject: &str) -> Caller {
        let mut c = Caller::development();
        c.subject = subject.into();
        c
    }

    fn console(secs: i64) -> Console {
        Console::new(
            ConsoleKind::Vnc,
            "vnc://127.0.0.1:5900",
            Utc::now() + chrono::Duration::seconds(secs),
        )
        .with_upstream(ConsoleUpstream::tcp("127.0.0.1:5900"))
    }

    fn token_of(url: &str) -> String {
        url.split_once("?token=").unwrap().1.to_string()
    }

    fn request(host: &str) -> Request {
        Request::builder().header("host", host).finish()
    }

    #[test]
    fn a_token_is_single_use_and_bound_to_its_caller() {
        let p = ConsoleProxy::new(Duration::from_secs(60), None);
        let vm = VmId::new("vm-1");
        let dto = p
            .issue(&request("hcp.test:8080"), &ctx("alice"), &vm, console(600))
            .unwrap();
        assert!(
            dto.url
                .starts_with("ws://hcp.test:8080/api/hcp/tenant/v1/console/ws?token="),
            "{}",
            dto.url
        );
        let token = token_of(&dto.url);
        assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap().len(), 32);
        assert!(!format!("{p:?}").contains(&token));
        let g = p.take(&token, &caller("alice")).unwrap();
        assert_eq!(g.vm_id, vm);
        assert_eq!(g.upstream, ConsoleUpstream::tcp("127.0.0.1:5900"));
        let again = p.take(&token, &caller("alice")).unwrap_err();
        assert_eq!(again.code(), CODE_CONSOLE_TOKEN_USED);

        let other = token_of(
            &p.issue(&request("h"), &ctx("alice"), &vm, console(600))
                .unwrap()
                .url,
        );
        assert_ne!(other, token);
        let foreign = p.take(&other, &caller("mallory")).unwrap_err();
        assert_eq!(foreign.code(), CODE_CONSOLE_TOKEN_FOREIGN);
        assert_eq!(
            p.take(&other, &caller("alice")).unwrap_err().code(),
            CODE_CONSOLE_TOKEN_USED,
            "a token shown to someone else is void"
        );
        assert_eq!(
            p.take("nope", &caller("alice")).unwrap_err().code(),
            CODE_CONSOLE_TOKEN_NOT_FOUND
        );
    }

    #[tokio::test]
    async fn the_nearer_deadline_wins_and_an_expired_token_is_refused() {
        let clock = Arc::new(hcp_core::ManualClock::starting_now());
        let p = ConsoleProxy::new(Duration::from_secs(60), None);
        let vm = VmId::new("vm-1");
        let dto = p
            .issue(&request("h"), &ctx("alice"), &vm, console(10))
            .unwrap();
        assert!(dto.expires_at <= Utc::now() + chrono::Duration::seconds(10));
        let short = ConsoleProxy::new(Duration::from_secs(30), None).with_clock(clock.clone());
        let dto = short
            .issue(&request("h"), &ctx("alice"), &vm, console(600))
            .unwrap();
        clock.advance(Duration::from_secs(29));
        let live = short
            .issue(&request("h"), &ctx("alice"), &vm, console(600))
            .unwrap();
        clock.advance(Duration::from_secs(2));
        let e = short
            .take(&token_of(&dto.url), &caller("alice"))
            .unwrap_err();
        assert_eq!(e.code(), CODE_CONSOLE_TOKEN_EXPIRED);
        assert_eq!(e.field(), Some("token"));
        // One issued later is still inside its own 30 s.
        assert!(short.take(&token_of(&live.url), &caller("alice")).is_ok());
        assert!(
            p.issue(&request("h"), &ctx("alice"), &vm, console(-1))
                .is_err(),
            "an already expired console"
        );
    }

    #[test]
    fn the_url_base_follows_the_public_url_or_the_request() {
        let vm = VmId::new("vm-1");
        let public = ConsoleProxy::new(
            Duration::from_secs(60),
            Some(url::Url::parse("https://hcp.example.com/prefix/").unwrap()),
        );
        let url = public
            .issue(&request("ignored:1"), &ctx("a"), &vm, console(60))
            .unwrap()
            .url;
        assert!(
            url.starts_with("wss://hcp.example.com/prefix/api/hcp/tenant/v1/console/ws?token="),
            "{url}"
        );
        let p = ConsoleProxy::new(Duration::from_secs(60), None);
        let behind_tls = Request::builder()
            .header("host", "hcp.example.com")
            .header("x-forwarded-proto", "https")
            .finish();
        let url = p
            .issue(&behind_tls, &ctx("a"), &vm, console(60))
            .unwrap()
            .url;
        assert!(url.starts_with("wss://hcp.example.com/api/"), "{url}");
        let odd = request("user@evil.example/x");
        let url = p.issue(&odd, &ctx("a"), &vm, console(60)).unwrap().url;
        assert!(!url.contains("evil"), "{url}");
    }

    #[test]
    fn tokens_are_bounded() {
        let p = ConsoleProxy::new(Duration::from_secs(60), None);
        let vm = VmId::new("vm-1");
        for _ in 0..MAX_TICKETS {
            p.issue(&request("h"), &ctx("a"), &vm, console(60)).unwrap();
        }
        let e = p
            .issue(&request("h"), &ctx("a"), &vm, console(60))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
        assert!(e.is_temporary());
    }
}
