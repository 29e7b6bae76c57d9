//! A small server-sent events parser over a byte stream (the `text/event-stream` format).

use bytes::BytesMut;
use futures::stream::{self, BoxStream, Stream, StreamExt};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub(crate) event: String,
    /// The `data:` lines, joined with newlines.
    pub(crate) data: String,
    /// The `id:` field.
    pub(crate) id: Option<String>,
}

struct Parser {
    buf: BytesMut,
    event: String,
    data: Vec<String>,
    id: Option<String>,
}

impl Parser {
    fn new() -> Self {
        Parser {
            buf: BytesMut::new(),
            event: String::new(),
            data: Vec::new(),
            id: None,
        }
    }

    /// Feeds bytes and returns the events they complete.
    fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line = self.buf.split_to(pos + 1);
            line.truncate(pos);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(SseEvent {
                        event: if self.event.is_empty() {
                            "message".into()
                        } else {
                            std::mem::take(&mut self.event)
                        },
                        data: self.data.join("\n"),
                        id: self.id.clone(),
                    });
                }
                self.data.clear();
                self.event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "event" => self.event = value,
                "data" => self.data.push(value),
                "id" => self.id = Some(value),
                _ => {}
            }
        }
        out
    }
}

/// Turns a byte stream into a stream of events.
pub(crate) fn events<S>(bytes: S) -> BoxStream<'static, hcp_core::Result<SseEvent>>
where
    S: Stream<Item = hcp_core::Result<bytes::Bytes>> + Send + 'static,
{
    let mut parser = Parser::new();
    bytes
        .flat_map(move |chunk| {
            let items: Vec<hcp_core::Result<SseEvent>> = match chunk {
                Ok(c) => parser.feed(&c).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            stream::iter(items)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks() {
        let mut p = Parser::new();
        assert!(p.feed(b": keep-alive\n\nevent: log\nid: 1\nda").is_empty());
        let ev = p.feed(b"ta: {\"a\":1}\n\nevent: end\r\ndata: x\r\ndata: y\r\n\r\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(
            ev[0],
            SseEvent {
                event: "log".into(),
                data: "{\"a\":1}".into(),
                id: Some("1".into())
            }
        );
        assert_eq!(ev[1].event, "end");
        assert_eq!(ev[1].data, "x\ny");
    }
}
