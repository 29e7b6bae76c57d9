//! `hcp vm console ID --listen 127.0.0.1:PORT`: a local TCP port bridged to a VM's console, so a
//! native VNC or RDP client (TigerVNC, Remmina, `xfreerdp`, `mstsc`) can use the consoles HCP
//! relays, like `virtctl vnc --proxy-only`.
//!
//! # Behavior
//! - Only loopback addresses are accepted: the bridge has no login of its own, so anyone who
//!   reaches the port reaches the console.
//! - Before listening, the console is asked for once, so a VM that is not running or a console
//!   HCP does not relay (a URL the client opens itself) is an error at once, not at connect time.
//! - Every accepted connection opens a console of its own (a fresh single-use token through
//!   `hcp serve`'s proxy, or the provider's upstream in embedded mode) and relays bytes until
//!   either side closes; several clients may be connected at once.
//! - The first line on stdout is the address listened on (port 0 picks a free port), as text or
//!   JSON (`{"listen": ..., "type": ..., "vm_id": ...}`). Ctrl-C stops the bridge (exit 0);
//!   `--once` stops it after the first connection ends.

use std::net::SocketAddr;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hcp_core::{ConsoleKind, Error, ProjectId, VmId};
use tokio::net::{TcpListener, TcpStream};

use crate::backend::{Backend, not_relayed};
use crate::output::{self, Format};

/// What to bridge.
#[derive(Debug)]
pub struct Bridge<'a> {
    /// Where requests go.
    pub backend: &'a Backend,
    /// The VM's project (required with `--url`).
    pub project: Option<&'a ProjectId>,
    /// The VM.
    pub vm_id: &'a VmId,
    /// The console protocol, or the host's default.
    pub kind: Option<ConsoleKind>,
    /// How the listening line is printed.
    pub format: Format,
}

/// Parses and checks `--listen`.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming `listen` for anything but a loopback
/// `address:port`.
pub fn parse_listen(text: &str) -> hcp_core::Result<SocketAddr> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        Error::invalid(
            "listen",
            format!(
                "`{}` is not an address and port: give a loopback address, e.g. 127.0.0.1:5901 \
                 or [::1]:5901 (port 0 picks a free one)",
                hcp_core::echo(text)
            ),
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(Error::invalid(
            "listen",
            format!(
                "{} is not a loopback address: the bridge has no login of its own, so it only \
                 listens on 127.0.0.1 or ::1",
                addr.ip()
            ),
        ));
    }
    Ok(addr)
}

impl Bridge<'_> {
    /// Listens on `addr` and bridges connections until Ctrl-C (or, with `once`, until the first
    /// connection ends).
    ///
    /// # Errors
    /// The console's own errors (asked for once before listening); a port that cannot be bound.
    pub async fn run(&self, addr: SocketAddr, once: bool) -> anyhow::Result<()> {
        // Fail fast: a console HCP does not relay, or a VM that cannot give one.
        let console = self
            .backend
            .console(self.project, self.vm_id, self.kind)
            .await?;
        if !self.backend.relays(&console) {
            return Err(not_relayed(&console).into());
        }
        let kind = console.kind;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::invalid("listen", format!("cannot listen on {addr}: {e}")))?;
        let local = listener.local_addr()?;
        let line = match self.format {
            Format::Json => serde_json::json!({
                "listen": local.to_string(),
                "type": kind.as_str(),
                "vm_id": self.vm_id.as_str(),
            })
            .to_string(),
            Format::Table => format!(
                "Listening on {local} for the {} console of vm {}: point a {} client there. \
                 Ctrl-C stops.",
                kind.as_str(),
                self.vm_id,
                kind.as_str()
            ),
        };
        output::line(&line)?;
        let mut sessions = FuturesUnordered::new();
        let mut served = false;
        loop {
            tokio::select! {
                accepted = listener.accept(), if !(once && served) => {
                    let (tcp, _) = accepted?;
                    served = true;
                    sessions.push(self.session(tcp));
                }
                Some(()) = sessions.next() => {
                    if once && sessions.is_empty() {
                        return Ok(());
                    }
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }

    /// Opens a console for one client and relays until either side closes.
    async fn session(&self, mut client: TcpStream) {
        let _ = client.set_nodelay(true);
        match self
            .backend
            .open_console(self.project, self.vm_id, self.kind)
            .await
        {
            Ok((_, mut console)) => {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut console).await;
            }
            Err(e) => {
                // The bridge keeps listening; the client sees its connection close.
                output::print_error(self.format, &anyhow::Error::from(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!(parse_listen("127.0.0.1:0").is_ok());
        assert!(parse_listen("[::1]:5901").is_ok());
        let e = parse_listen("0.0.0.0:5901").unwrap_err();
        assert_eq!(e.field(), Some("listen"));
        assert!(e.to_string().contains("loopback"), "{e}");
        let e = parse_listen("localhost").unwrap_err();
        assert_eq!(e.field(), Some("listen"));
    }
}
