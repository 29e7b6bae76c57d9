//! Server-sent event streams that need more than a job watch: the audit stream (its past events
//! after a sequence number, then live ones, without gaps or repeats).

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};
use hcp_core::{Engine, Event, EventFilter};
use tokio::sync::broadcast;

/// Most past events one stream replays before it follows live events.
pub(crate) const MAX_BACKLOG: usize = 10_000;

/// Follows the audit stream: events after `after` that match `filter`, then live ones.
///
/// Subscribes before reading the past, so no event falls between the two; duplicates are dropped
/// by sequence number. When the subscriber lags, the missed events are read back from the store.
pub(crate) async fn audit_stream(
    engine: Engine,
    filter: EventFilter,
) -> hcp_core::Result<BoxStream<'static, crate::dto::AuditEventItem>> {
    Ok(follow_events(engine, filter)
        .await?
        .map(crate::dto::AuditEventItem)
        .boxed())
}

/// Follows the events after `filter.after` that match `filter`, then live ones, like
/// [`audit_stream`], as the engine's events.
pub(crate) async fn follow_events(
    engine: Engine,
    filter: EventFilter,
) -> hcp_core::Result<BoxStream<'static, Arc<Event>>> {
    let rx = engine.subscribe_events();
    let past = engine
        .list_events(&EventFilter {
            limit: MAX_BACKLOG,
            ..filter.clone()
        })
        .await?;
    let last = past.last().map_or(filter.after, |e| e.seq);
    Ok(Follow {
        engine,
        filter,
        rx,
        last: Some(last),
        backlog: past.into_iter().collect(),
    }
    .stream())
}

/// Follows only the live events that match `filter` (its `after` is ignored), from now on.
/// Once an event has been sent, a subscriber that falls behind catches up from the store like
/// [`follow_events`]; one that falls behind before its first event ends the stream, so its
/// client resumes with a position.
pub(crate) fn follow_live(engine: Engine, filter: EventFilter) -> BoxStream<'static, Arc<Event>> {
    Follow {
        rx: engine.subscribe_events(),
        engine,
        filter,
        last: None,
        backlog: Default::default(),
    }
    .stream()
}

struct Follow {
    engine: Engine,
    filter: EventFilter,
    rx: broadcast::Receiver<Arc<Event>>,
    /// The last event sent (or the resume point); `None` while a live-only stream has sent none.
    last: Option<u64>,
    backlog: std::collections::VecDeque<Arc<Event>>,
}

impl Follow {
    fn stream(self) -> BoxStream<'static, Arc<Event>> {
        stream::unfold(self, |mut s| async move { s.next().await.map(|e| (e, s)) }).boxed()
    }

    async fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                return Some(e);
            }
            match self.rx.recv().await {
                Ok(e) => {
                    if self.last.is_none_or(|l| e.seq > l) && self.filter.matches(&e) {
                        self.last = Some(e.seq);
                        return Some(e);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let Some(after) = self.last else {
                        tracing::warn!(
                            missed = n,
                            "a live event stream fell behind before its first event; it ends so its client resumes"
                        );
                        return None;
                    };
                    let missed = self
                        .engine
                        .list_events(&EventFilter {
                            after,
                            limit: MAX_BACKLOG,
                            ..self.filter.clone()
                        })
                        .await
                        .ok()?;
                    if let Some(l) = missed.last() {
                        self.last = Some(l.seq);
                    }
                    self.backlog.extend(missed);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
