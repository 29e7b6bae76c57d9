//! The connection layer: accepts TCP connections and serves HTTP/1.1 on them with hyper, so that
//! no client can hold the service with slow or oversized requests.
//!
//! poem's own server does not expose hyper's HTTP/1 settings, so this layer drives hyper
//! directly and hands every request to the poem endpoint. It enforces:
//! - a header-read timeout: a client that has not sent a request's whole head within
//!   [`ConnLimits::header_read_timeout`] is disconnected (this also closes idle keep-alive
//!   connections after that long);
//! - a cap on open connections ([`ConnLimits::max_connections`]): at the cap the service stops
//!   accepting until one closes, and new clients wait in the kernel's listen backlog;
//! - a cap on the size of a request's head ([`ConnLimits::max_header_bytes`]): a larger head
//!   gets `431 Request Header Fields Too Large`, and the connection lingers long enough to read
//!   what the client still sends, so the client sees the answer instead of a reset.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use poem::Endpoint;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The header-read timeout unless configured otherwise.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The connection cap unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The largest request head (request line and headers) unless configured otherwise.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// The smallest request-head cap accepted (hyper's own floor).
pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
/// The largest request-head cap accepted.
pub const MAX_MAX_HEADER_BYTES: usize = 1024 * 1024;
/// The largest connection cap accepted.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;

/// How long a closed connection keeps reading (and discarding) what its client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// The most a closing connection reads before it gives up lingering.
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// The connection limits of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
}

/// Serves `endpoint` on `listener` until `shutdown` resolves, then stops accepting, lets running
/// requests finish for up to `grace`, and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    endpoint: poem::endpoint::BoxEndpoint<'static>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let endpoint = Arc::new(endpoint);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let local = listener.local_addr().ok();
    tokio::pin!(shutdown);
    let mut saturated = false;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                saturated = false;
                p
            }
            Err(_) => {
                if !saturated {
                    saturated = true;
                    tracing::warn!(
                        target: "hcp::http",
                        max_connections = limits.max_connections,
                        "the connection cap is reached; new clients wait until a connection \
                         closes (HCP_MAX_CONNECTIONS)"
                    );
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (io, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(target: "hcp::http", error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = io.set_nodelay(true) {
            tracing::debug!(target: "hcp::http", error = %e, "cannot set TCP_NODELAY");
        }
        let local = local.unwrap_or(peer);
        let endpoint = endpoint.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            serve_connection(io, local, peer, endpoint, limits, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            target: "hcp::http",
            open = tracker.len(),
            "connections still open after the shutdown grace period are closed"
        );
    }
}

async fn serve_connection(
    io: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    endpoint: Arc<poem::endpoint::BoxEndpoint<'static>>,
    limits: ConnLimits,
    stop: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let endpoint = endpoint.clone();
        async move {
            let req = poem::Request::from((
                req,
                LocalAddr(local.into()),
                RemoteAddr(peer.into()),
                poem::http::uri::Scheme::HTTP,
            ));
            let resp = endpoint.get_response(req).await;
            Ok::<_, Infallible>(hyper::Response::from(resp))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(Linger::new(io)), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(target: "hcp::http", error = %e, "connection ended with an error");
            }
        }
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A TCP stream that, when dropped before its client finished sending, keeps reading and
/// discarding for a short while in the background (a lingering close), so that an answer written
/// just before the close (a `431`, a `413`) reaches the client instead of being lost to the reset
/// a close with unread data causes.
struct Linger {
    inner: Option<TcpStream>,
    eof: bool,
}

impl Linger {
    fn new(inner: TcpStream) -> Self {
        Linger {
            inner: Some(inner),
            eof: false,
        }
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.inner
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Linger {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = match self.stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        if let Poll::Ready(Ok(())) = &r
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            self.eof = true;
        }
        r
    }
}

impl AsyncWrite for Linger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

impl Drop for Linger {
    fn drop(&mut self) {
        let Some(mut stream) = self.inner.take() else {
            return;
        };
        if self.eof {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            // Send our FIN first, so the client knows the answer is complete.
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            let drain = async {
                let mut buf = vec![0u8; 16 * 1024];
                let mut total = 0usize;
                while total < LINGER_BYTES {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total = total.saturating_add(n),
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        });
    }
}
