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
) -> hcp_core::Result<BoxStream<'static, crate::dto::AuditEventDto>> {
    Ok(follow_events(engine, filter)
        .await?
        .map(|e| crate::dto::AuditEventDto::from(e.as_ref()))
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
    let state = Follow {
        engine,
        filter,
        rx,
        last,
        backlog: past.into_iter().collect(),
    };
    Ok(stream::unfold(state, |mut s| async move { s.next().await.map(|e| (e, s)) }).boxed())
}

struct Follow {
    engine: Engine,
    filter: EventFilter,
    rx: broadcast::Receiver<Arc<Event>>,
    last: u64,
    backlog: std::collections::VecDeque<Arc<Event>>,
}

impl Follow {
    async fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                return Some(e);
            }
            match self.rx.recv().await {
                Ok(e) => {
                    if e.seq > self.last && self.filter.matches(&e) {
                        self.last = e.seq;
                        return Some(e);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let missed = self
                        .engine
                        .list_events(&EventFilter {
                            after: self.last,
                            limit: MAX_BACKLOG,
                            ..self.filter.clone()
                        })
                        .await
                        .ok()?;
                    if let Some(l) = missed.last() {
                        self.last = l.seq;
                    }
                    self.backlog.extend(missed);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
