//! Event -> SSE frame bytes (the WHATWG `text/event-stream` format). Each event is encoded once
//! and the same [`Bytes`] go to every subscriber.

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::Event;

/// A comment line that keeps idle connections (and the proxies between) alive.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Encodes `event` as one SSE frame: `id`, `event`, `retry`, then one `data:` line for each line of
/// the data (CRLF, CR and LF all end a line), then the blank line that dispatches it.
pub fn encode(event: &Event) -> Bytes {
    let mut buf = BytesMut::with_capacity(event.data.len() + event.id.as_str().len() + 48);
    put_field(&mut buf, b"id", event.id.as_str().as_bytes());
    if let Some(kind) = &event.kind {
        put_field(&mut buf, b"event", kind.as_str().as_bytes());
    }
    if let Some(retry) = event.retry {
        put_field(&mut buf, b"retry", retry.to_string().as_bytes());
    }
    put_data(&mut buf, &event.data);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// Encodes a hub notice: a named event without an id, so it does not move the client's
/// Last-Event-ID.
pub fn notice(kind: &str, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + kind.len() + 16);
    put_field(&mut buf, b"event", kind.as_bytes());
    put_data(&mut buf, data);
    buf.put_u8(b'\n');
    buf.freeze()
}

fn put_field(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    buf.put_slice(b": ");
    buf.put_slice(value);
    buf.put_u8(b'\n');
}

fn put_data(buf: &mut BytesMut, data: &str) {
    let bytes = data.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                put_field(buf, b"data", &bytes[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                put_field(buf, b"data", &bytes[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    put_field(buf, b"data", &bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventId, EventType, Topic};
    use futures_util::StreamExt;
    use proptest::prelude::*;

    fn event(data: &str, kind: Option<&str>, retry: Option<u64>) -> Event {
        Event {
            seq: 1,
            id: EventId::parse("e1").unwrap(),
            topics: vec![Topic::parse("t").unwrap()].into(),
            kind: kind.map(|k| EventType::parse(k).unwrap()),
            data: data.into(),
            retry,
            private: false,
            stored_at_ms: 0,
        }
    }

    #[test]
    fn encodes_every_field_and_splits_lines() {
        let frame = encode(&event("a\nb\r\nc\rd", Some("done"), Some(500)));
        assert_eq!(
            &frame[..],
            b"id: e1\nevent: done\nretry: 500\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn empty_data_still_dispatches() {
        assert_eq!(&encode(&event("", None, None))[..], b"id: e1\ndata: \n\n");
    }

    /// Parses `frame` with an independent WHATWG-conformant parser and returns the events.
    fn parse(frame: Bytes) -> Vec<eventsource_stream::Event> {
        let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(frame)]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let parsed: Vec<_> = runtime
            .block_on(eventsource_stream::Eventsource::eventsource(stream).collect::<Vec<_>>());
        parsed.into_iter().map(|e| e.expect("parse")).collect()
    }

    #[test]
    fn round_trips_through_an_independent_parser() {
        let got = parse(encode(&event(" lead\n\ntrail\r", Some("x"), None)));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, " lead\n\ntrail\n");
        assert_eq!(got[0].event, "x");
        assert_eq!(got[0].id, "e1");
    }

    proptest! {
        #[test]
        fn any_data_arrives_normalised(data in "\\PC*|[\\r\\n a-zé]*") {
            let got = parse(encode(&event(&data, None, None)));
            prop_assert_eq!(got.len(), 1);
            // Line ends normalise to LF; everything else arrives byte-identical.
            let expected = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(&got[0].data, &expected);
        }
    }
}
