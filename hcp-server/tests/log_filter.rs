//! The log filter every HCP subscriber installs keeps winrm-rs's debug and trace records (its
//! configuration, with a `ca_file` forwarder's token, and SOAP bodies) out of every log, whatever
//! level the operator asks for.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::ErrorKind::Other)?
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(filter: &str, with_guard: bool) -> String {
    let buf = Buf::default();
    let writer = buf.clone();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(move || writer.clone());
    let emit = || {
        tracing::debug!(target: "winrm_rs::client", proxy = "http://hcp:TOKEN-123@127.0.0.1:1", "config");
        tracing::trace!(target: "winrm_rs", "<s:Envelope>PASSWORD-456</s:Envelope>");
        tracing::info!(target: "winrm_rs::client", "connected");
        tracing::debug!(target: "hcp_core::engine", "job claimed");
    };
    if with_guard {
        let sub = builder.finish().with(hcp_server::secret_safe_filter());
        tracing::subscriber::with_default(sub, emit);
    } else {
        tracing::subscriber::with_default(builder.finish(), emit);
    }
    let bytes = buf.0.lock().map(|b| b.clone()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn winrm_debug_and_trace_never_reach_the_log() {
    for filter in [
        "trace",
        "winrm_rs=trace,debug",
        "winrm_rs::client=trace,winrm_rs=trace,debug",
    ] {
        let out = logged(filter, true);
        assert!(!out.contains("TOKEN-123"), "{filter}: {out}");
        assert!(!out.contains("PASSWORD-456"), "{filter}: {out}");
        assert!(
            out.contains("connected"),
            "{filter}: winrm-rs info lines still log: {out}"
        );
        assert!(
            out.contains("job claimed"),
            "{filter}: HCP's own debug lines still log: {out}"
        );
    }
}

#[test]
fn without_the_guard_the_same_filter_would_leak() {
    // The control: the records above do reach a plain subscriber, so the test above can fail.
    let out = logged("trace", false);
    assert!(
        out.contains("TOKEN-123") && out.contains("PASSWORD-456"),
        "{out}"
    );
}
