//! Server-sent event streams that survive a cut connection. `eventsource-stream` parses the
//! `text/event-stream` body; this module reconnects after a cut (with backon's exponential
//! backoff) and resumes after the last event id the server sent.
//!
//! Not `reqwest-eventsource`: its retry count never advances (a policy's `max_retries` is never
//! reached), and it resends the same request with a `Last-Event-ID` header, while the audit
//! stream resumes with its `after` query parameter; [`Connect`] builds each request here.
//!
//! # Behavior
//! - The first connection's failure is the caller's error (`NotFound` for an unknown job).
//! - A stream that ends or breaks is reconnected after 100 ms, 200 ms, 400 ms, ... (at most 5 s
//!   apart, with jitter), [`MAX_RECONNECTS`] times in a row at most; an event received resets the
//!   count. The request of a reconnection carries the last event id seen.
//! - A reconnection the service refuses (`404` for a job that is gone, `401` for an expired
//!   token) or that gives up ends the stream with that error.
//! - The caller stops polling after its last event (a job's `end`); nothing reconnects then.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use eventsource_stream::{EventStreamError, Eventsource};
use futures::stream::{self, BoxStream, StreamExt};
use hcp_core::{Error, ErrorKind};
use reqwest::RequestBuilder;

use super::{decode_error, transport_error};

/// How many reconnections in a row are tried before the stream ends with an error.
pub(crate) const MAX_RECONNECTS: usize = 8;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub(crate) event: String,
    /// The `data:` lines, joined with newlines.
    pub(crate) data: String,
    /// The last event id (the `id:` field of this event or an earlier one).
    pub(crate) id: Option<String>,
}

/// Builds the request of one connection, given the last event id seen (`None` at first).
pub(crate) type Connect = Box<dyn Fn(Option<&str>) -> RequestBuilder + Send + Sync>;

type Body = BoxStream<'static, Result<eventsource_stream::Event, EventStreamError<reqwest::Error>>>;

/// Opens an event stream that resumes after cuts; see the module docs.
///
/// # Errors
/// The first connection's error: the service's problem, or a transport error.
pub(crate) async fn open(
    base: String,
    connect: Connect,
) -> hcp_core::Result<BoxStream<'static, hcp_core::Result<SseEvent>>> {
    let body = connect_once(&base, &connect, None).await?;
    let state = Resume {
        base,
        connect,
        last_id: None,
        body: Some(body),
        backoff: None,
        ended: false,
    };
    Ok(stream::unfold(state, |mut s| async move {
        s.next().await.map(|item| (item, s))
    })
    .boxed())
}

fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(MAX_RECONNECTS)
        .build()
}

async fn connect_once(
    base: &str,
    connect: &Connect,
    last_id: Option<&str>,
) -> hcp_core::Result<Body> {
    let resp = connect(last_id)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| transport_error(base, e))?;
    if !resp.status().is_success() {
        return Err(decode_error(resp).await);
    }
    Ok(resp.bytes_stream().eventsource().boxed())
}

struct Resume {
    base: String,
    connect: Connect,
    last_id: Option<String>,
    /// The open connection's events; `None` while reconnecting.
    body: Option<Body>,
    /// The delays of the reconnections in a row; reset by an event.
    backoff: Option<ExponentialBackoff>,
    ended: bool,
}

impl Resume {
    async fn next(&mut self) -> Option<hcp_core::Result<SseEvent>> {
        loop {
            if self.ended {
                return None;
            }
            let Some(body) = self.body.as_mut() else {
                let Some(delay) = self.backoff.get_or_insert_with(backoff).next() else {
                    self.ended = true;
                    return Some(Err(Error::new(
                        ErrorKind::ProviderUnavailable,
                        format!(
                            "the event stream from {} was cut and did not come back after \
                             {MAX_RECONNECTS} attempts",
                            self.base
                        ),
                    )
                    .temporary()));
                };
                tokio::time::sleep(delay).await;
                match connect_once(&self.base, &self.connect, self.last_id.as_deref()).await {
                    Ok(b) => self.body = Some(b),
                    Err(e) if e.is_temporary() => {}
                    Err(e) => {
                        self.ended = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            match body.next().await {
                Some(Ok(ev)) => {
                    self.backoff = None;
                    let id = (!ev.id.is_empty()).then_some(ev.id);
                    if id.is_some() {
                        self.last_id.clone_from(&id);
                    }
                    return Some(Ok(SseEvent {
                        event: if ev.event.is_empty() {
                            "message".into()
                        } else {
                            ev.event
                        },
                        data: ev.data,
                        id,
                    }));
                }
                // A cut mid-event, a transport error, or the end of the body: reconnect.
                Some(Err(_)) | None => self.body = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnections_back_off_and_give_up() {
        let delays: Vec<Duration> = backoff().collect();
        assert_eq!(delays.len(), MAX_RECONNECTS);
        assert!(delays[0] >= Duration::from_millis(100), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(10)),
            "{delays:?}"
        );
        let total: Duration = delays.iter().sum();
        assert!(total < Duration::from_secs(60), "{total:?}");
    }
}
