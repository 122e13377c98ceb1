//! Event -> SSE frame bytes (the WHATWG `text/event-stream` format). Each event is encoded once
//! and the same [`Bytes`] go to every subscriber.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::event::Event;

/// A comment line that keeps idle connections (and the proxies between) alive.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Encodes `event` as one SSE frame: `id`, `event`, `retry`, then one `data:` line for each line of
/// the data (CRLF, CR and LF all end a line), then the blank line that dispatches it.
pub fn encode(event: &Event) -> Bytes {
    let mut buf = BytesMut::with_capacity(encoded_len(event));
    encode_into(&mut buf, event);
    buf.freeze()
}

/// About how many bytes [`encode`] writes: every field, the retry's digits and one `data:`
/// line; a frame only grows past it for data with many line breaks.
pub fn encoded_len(event: &Event) -> usize {
    let kind = event.kind.as_ref().map_or(0, |k| k.as_str().len() + 8);
    let retry = if event.retry.is_some() { 28 } else { 0 };
    event.id.as_str().len() + 5 + kind + retry + event.data.len() + 8 + 16
}

/// [`encode`], appended to `buf` (a page of history in one buffer).
pub fn encode_into(buf: &mut BytesMut, event: &Event) {
    put_field(buf, b"id", event.id.as_str().as_bytes());
    if let Some(kind) = &event.kind {
        put_field(buf, b"event", kind.as_str().as_bytes());
    }
    if let Some(retry) = event.retry {
        use std::fmt::Write;
        buf.put_slice(b"retry: ");
        // Writing digits into a BytesMut cannot fail.
        let _ = write!(buf, "{retry}");
        buf.put_u8(b'\n');
    }
    put_data(buf, &event.data);
    buf.put_u8(b'\n');
}

/// The heartbeat as one HTTP/1.1 chunk, for a stream written straight to its socket.
pub const HEARTBEAT_CHUNK: &[u8] = b"3\r\n:\n\n\r\n";

/// The last chunk of an HTTP/1.1 chunked body: the stream ends cleanly.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// One event's SSE frame, encoded once and framed as one HTTP/1.1 chunk (`{size:x}\r\n`, the
/// frame, `\r\n`): a stream written straight to its socket sends [`Frame::wire`] as it is, one
/// written through an HTTP library sends [`Frame::payload`] (the same memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    wire: Bytes,
    /// Length of the chunk-size line.
    head: u8,
}

impl Frame {
    /// Frames `payload` (SSE bytes) as one HTTP/1.1 chunk.
    pub fn from_payload(payload: &[u8]) -> Self {
        let head = format!("{:x}\r\n", payload.len());
        let mut buf = BytesMut::with_capacity(head.len() + payload.len() + 2);
        buf.put_slice(head.as_bytes());
        buf.put_slice(payload);
        buf.put_slice(b"\r\n");
        Self {
            wire: buf.freeze(),
            head: head.len() as u8,
        }
    }

    /// The frame as one HTTP/1.1 chunk.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The SSE bytes alone, without the chunk framing.
    pub fn payload(&self) -> Bytes {
        self.wire.slice(usize::from(self.head)..self.wire.len() - 2)
    }

    /// The SSE bytes alone, borrowed.
    pub fn payload_slice(&self) -> &[u8] {
        &self.wire[usize::from(self.head)..self.wire.len() - 2]
    }
}

/// Most bytes of a chunk-size line: 16 hex digits and CRLF.
const CHUNK_HEAD_MAX: usize = 18;

/// [`encode`], framed as one HTTP/1.1 chunk (see [`Frame`]), in one allocation.
pub fn encode_frame(event: &Event) -> Frame {
    let mut buf = BytesMut::with_capacity(CHUNK_HEAD_MAX + encoded_len(event) + 2);
    buf.put_slice(&[0u8; CHUNK_HEAD_MAX]);
    encode_into(&mut buf, event);
    let len = buf.len() - CHUNK_HEAD_MAX;
    // The frame is never empty (it has at least `id` and `data` lines), so no leading zero.
    let digits = ((usize::BITS - len.leading_zeros()).div_ceil(4) as usize).max(1);
    let start = CHUNK_HEAD_MAX - digits - 2;
    for (i, slot) in buf[start..start + digits].iter_mut().enumerate() {
        *slot = b"0123456789abcdef"[(len >> (4 * (digits - 1 - i))) & 0xf];
    }
    buf[CHUNK_HEAD_MAX - 2..CHUNK_HEAD_MAX].copy_from_slice(b"\r\n");
    buf.put_slice(b"\r\n");
    let mut wire = buf.freeze();
    wire.advance(start);
    Frame {
        wire,
        head: (digits + 2) as u8,
    }
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
    //! The encoder is checked against two independent parsers of the WHATWG `text/event-stream`
    //! format: the `eventsource-stream` crate, and [`whatwg`], a small parser written below
    //! straight from the specification's algorithm ("Interpreting an event stream",
    //! <https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>).
    //!
    //! The round-trip property, stated precisely. Take any sequence of events (any data; any id,
    //! type and retry that `crate::event` accepts), hub notices and heartbeats, encode each, join
    //! the frames into one stream and cut it into chunks at arbitrary byte offsets (inside a field
    //! name, inside a multi-byte UTF-8 character, between two line ends). Both parsers then
    //! dispatch exactly one message per event and per notice, in order, and nothing for a
    //! heartbeat, where:
    //!
    //! - `data` is the data given, byte for byte, except that each line end in it (CRLF, lone CR
    //!   or LF; a CRLF counts as one) arrives as a single LF. Everything else, including empty
    //!   lines, leading and trailing spaces, colons, NUL and other control characters, U+FEFF and
    //!   any non-ASCII text, arrives unchanged. The normalisation belongs to the format, not the
    //!   encoder: WHATWG cuts the stream into lines at CRLF, CR or LF and joins the `data` lines
    //!   of an event with LF, so no encoding can carry a CR to a conforming client.
    //! - the type is the event's type, byte-identical (`message` when it has none);
    //! - `lastEventId` is the event's id, byte-identical (ids refuse control characters, so there
    //!   is nothing to normalise); a notice carries no id, so it keeps the previous event's id;
    //! - the stream's reconnection time is the latest `retry` sent so far, exactly.
    //!
    //! The encoder writes LF line ends only. A second property rewrites them as LF, CR or CRLF at
    //! random, cuts the stream anywhere (also between a CR and its LF) and checks that both
    //! parsers still agree with the expectation above: the parsers reassemble line ends, and the
    //! two parsers check each other.
    //!
    //! Case counts are modest (`.ci/run` runs them in `cargo test --workspace`); `PROPTEST_CASES`
    //! overrides them.

    use super::*;
    use crate::event::{EventId, EventType, Topic};
    use futures_util::{FutureExt, StreamExt};
    use proptest::prelude::*;
    use proptest::sample::Index;

    use whatwg::Message;

    fn event(data: &str, kind: Option<&str>, retry: Option<u64>) -> Event {
        event_with(
            EventId::parse("e1").unwrap(),
            kind.map(|k| EventType::parse(k).unwrap()),
            data,
            retry,
        )
    }

    fn event_with(id: EventId, kind: Option<EventType>, data: &str, retry: Option<u64>) -> Event {
        Event {
            seq: 1,
            id,
            topics: vec![Topic::parse("t").unwrap()].into(),
            kind,
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

    #[test]
    fn frames_are_one_http_chunk_around_the_same_bytes() {
        for len in [0, 1, 9, 10, 200, 4000, 70_000] {
            let e = event(&"x".repeat(len), Some("t"), Some(5));
            let frame = encode_frame(&e);
            let plain = encode(&e);
            assert_eq!(frame.payload(), plain);
            assert_eq!(frame.payload_slice(), &plain[..]);
            let wire = frame.wire();
            let eol = wire.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = std::str::from_utf8(&wire[..eol]).unwrap();
            assert_eq!(size, format!("{:x}", plain.len()), "no leading zeros");
            assert_eq!(&wire[eol + 2..wire.len() - 2], &plain[..]);
            assert!(wire.ends_with(b"\r\n"));
        }
        assert_eq!(
            HEARTBEAT_CHUNK,
            format!("{:x}\r\n:\n\n\r\n", HEARTBEAT.len()).as_bytes()
        );
    }

    #[test]
    fn notices_carry_no_id() {
        assert_eq!(
            &notice("tidings.reset", "a\r\nb")[..],
            b"event: tidings.reset\ndata: a\ndata: b\n\n"
        );
    }

    // --- the two parsers --------------------------------------------------------------------

    /// Parses a stream delivered in `chunks` with the `eventsource-stream` crate. Its `retry` is
    /// per event; it is folded here into the stream's reconnection time, as the spec keeps it.
    fn parse_with_crate(chunks: &[Vec<u8>]) -> Vec<Message> {
        let stream = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, std::convert::Infallible>(c.clone())),
        );
        let parsed = eventsource_stream::Eventsource::eventsource(stream)
            .collect::<Vec<_>>()
            .now_or_never()
            .expect("an in-memory stream is always ready");
        let mut reconnection_time = None;
        parsed
            .into_iter()
            .map(|e| {
                let e = e.expect("eventsource-stream refused the stream");
                if let Some(retry) = e.retry {
                    reconnection_time = Some(u64::try_from(retry.as_millis()).unwrap());
                }
                Message {
                    kind: e.event,
                    data: e.data,
                    last_event_id: e.id,
                    reconnection_time,
                }
            })
            .collect()
    }

    /// Parses a stream delivered in `chunks` with [`whatwg::Parser`].
    fn parse_with_spec(chunks: &[Vec<u8>]) -> Vec<Message> {
        let mut parser = whatwg::Parser::default();
        for chunk in chunks {
            parser.feed(chunk);
        }
        parser.finish()
    }

    /// A second, independent parser of `text/event-stream`, written from the WHATWG algorithm
    /// ("Interpreting an event stream", HTML Living Standard §9.2.6); the quoted sentences are
    /// the specification's. It takes bytes in arbitrary chunks, as a network delivers them.
    mod whatwg {
        /// A dispatched `MessageEvent`, reduced to what a client can observe.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Message {
            /// The event's `type` attribute.
            pub kind: String,
            pub data: String,
            /// The event's `lastEventId` attribute.
            pub last_event_id: String,
            /// The event stream's reconnection time when the message was dispatched.
            pub reconnection_time: Option<u64>,
        }

        const BOM: &[u8] = b"\xEF\xBB\xBF";

        #[derive(Debug, Default)]
        pub struct Parser {
            /// Bytes received but not yet ended by a line end.
            pending: Vec<u8>,
            /// Whether the start of the stream has been checked for a byte order mark.
            bom_checked: bool,
            /// The last line ended with a CR at the very end of the bytes received so far: an LF
            /// arriving next completes that CRLF and ends no line of its own.
            after_cr: bool,
            data: String,
            event_type: String,
            /// "the last event ID buffer"; it also serves as the source's "last event ID string",
            /// which takes its value at every dispatch.
            last_event_id: String,
            reconnection_time: Option<u64>,
            dispatched: Vec<Message>,
        }

        impl Parser {
            /// Takes the next bytes of the stream.
            pub fn feed(&mut self, chunk: &[u8]) {
                self.pending.extend_from_slice(chunk);
                // "Streams must be decoded using the UTF-8 decode algorithm", which "strips one
                // leading UTF-8 Byte Order Mark (BOM), if any".
                if !self.bom_checked {
                    if self.pending.len() < BOM.len() && BOM.starts_with(&self.pending) {
                        return; // Not enough bytes yet to tell.
                    }
                    if self.pending.starts_with(BOM) {
                        self.pending.drain(..BOM.len());
                    }
                    self.bom_checked = true;
                }
                let buf = std::mem::take(&mut self.pending);
                let mut pos = 0;
                if self.after_cr && !buf.is_empty() {
                    self.after_cr = false;
                    if buf[0] == b'\n' {
                        pos = 1;
                    }
                }
                // "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE FEED
                // (CRLF) character pair, a single U+000A LINE FEED (LF) character, or a single
                // U+000D CARRIAGE RETURN (CR) character."
                while let Some(i) = buf[pos..].iter().position(|b| matches!(b, b'\r' | b'\n')) {
                    let end = pos + i;
                    let line = &buf[pos..end];
                    pos = end + 1;
                    if buf[end] == b'\r' {
                        match buf.get(end + 1) {
                            Some(b'\n') => pos += 1,
                            Some(_) => {}
                            None => self.after_cr = true,
                        }
                    }
                    // Decoding line by line is decoding the stream: CR and LF bytes never occur
                    // inside a UTF-8 sequence, so a line end is a boundary for the decoder too
                    // (and an ill-formed sequence becomes U+FFFD either way).
                    self.line(&String::from_utf8_lossy(line));
                }
                self.pending = buf[pos..].to_vec();
            }

            /// Ends the stream and returns every message dispatched. "Once the end of the file
            /// is reached, any pending data must be discarded. (If the file ends in the middle of
            /// an event, before the final empty line, the incomplete event is not dispatched.)"
            pub fn finish(self) -> Vec<Message> {
                self.dispatched
            }

            fn line(&mut self, line: &str) {
                // "If the line is empty (a blank line): Dispatch the event, as defined below."
                if line.is_empty() {
                    return self.dispatch();
                }
                // "If the line starts with a U+003A COLON character (:): Ignore the line."
                if line.starts_with(':') {
                    return;
                }
                let (field, value) = match line.split_once(':') {
                    // "If the line contains a U+003A COLON character (:): Collect the characters
                    // on the line before the first U+003A COLON character (:), and let field be
                    // that string. Collect the characters on the line after the first U+003A
                    // COLON character (:), and let value be that string. If value starts with a
                    // U+0020 SPACE character, remove it from value."
                    Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                    // "Otherwise, the string is not empty but does not contain a U+003A COLON
                    // character (:): Process the field using the steps described below, using
                    // the whole line as the field name, and the empty string as the field value."
                    None => (line, ""),
                };
                self.process_field(field, value);
            }

            fn process_field(&mut self, field: &str, value: &str) {
                match field {
                    // "If the field name is "event": Set the event type buffer to field value."
                    "event" => self.event_type = value.to_owned(),
                    // "If the field name is "data": Append the field value to the data buffer,
                    // then append a single U+000A LINE FEED (LF) character to the data buffer."
                    "data" => {
                        self.data.push_str(value);
                        self.data.push('\n');
                    }
                    // "If the field name is "id": If the field value does not contain U+0000
                    // NULL, then set the last event ID buffer to the field value. Otherwise,
                    // ignore the field." (An id with NUL falls through to the last arm.)
                    "id" if !value.contains('\0') => self.last_event_id = value.to_owned(),
                    // "If the field name is "retry": If the field value consists of only ASCII
                    // digits, then interpret the field value as an integer in base ten, and set
                    // the event stream's reconnection time to that integer. Otherwise, ignore
                    // the field." (Digits past u64::MAX are ignored too.)
                    "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                        if let Ok(ms) = value.parse() {
                            self.reconnection_time = Some(ms);
                        }
                    }
                    // "Otherwise: The field is ignored."
                    _ => {}
                }
            }

            fn dispatch(&mut self) {
                // 1. "Set the last event ID string of the event source to the value of the last
                //    event ID buffer. The buffer does not get reset [...]"
                // 2. "If the data buffer is an empty string, set the data buffer and the event
                //    type buffer to the empty string and return."
                if self.data.is_empty() {
                    self.event_type.clear();
                    return;
                }
                // 3. "If the data buffer's last character is a U+000A LINE FEED (LF) character,
                //    then remove the last character from the data buffer."
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                // 5. "Initialize event's type attribute to "message", its data attribute to
                //    data, [...] and its lastEventId attribute to the last event ID string of
                //    the event source."
                // 6. "If the event type buffer has a value other than the empty string, change
                //    the type of the newly created event to equal the value of the event type
                //    buffer."
                // 7. "Set the data buffer and the event type buffer to the empty string."
                let event_type = std::mem::take(&mut self.event_type);
                self.dispatched.push(Message {
                    kind: if event_type.is_empty() {
                        "message".to_owned()
                    } else {
                        event_type
                    },
                    data,
                    last_event_id: self.last_event_id.clone(),
                    reconnection_time: self.reconnection_time,
                });
            }
        }
    }

    /// Feeds `stream` whole, then one byte at a time: the parser must not care.
    fn spec_parse_both_ways(stream: &[u8]) -> Vec<Message> {
        let whole = parse_with_spec(&[stream.to_vec()]);
        let bytes: Vec<Vec<u8>> = stream.iter().map(|b| vec![*b]).collect();
        assert_eq!(parse_with_spec(&bytes), whole, "byte-at-a-time differs");
        whole
    }

    fn msg(kind: &str, data: &str, id: &str, retry: Option<u64>) -> Message {
        Message {
            kind: kind.into(),
            data: data.into(),
            last_event_id: id.into(),
            reconnection_time: retry,
        }
    }

    /// The hand-made parser, on cases taken from the specification's text and examples.
    #[test]
    fn the_spec_parser_follows_the_spec() {
        // Line ends of all three kinds; one leading space is removed, a second one stays.
        assert_eq!(
            spec_parse_both_ways(b"data: a\r\ndata:b\rdata:  c\n\n"),
            [msg("message", "a\nb\n c", "", None)]
        );
        // A CR ending one chunk and the LF starting the next are one line end; CR CR is two.
        assert_eq!(
            parse_with_spec(&[
                b"data: a\r".to_vec(),
                b"\ndata: b\r".to_vec(),
                b"\r".to_vec()
            ]),
            [msg("message", "a\nb", "", None)]
        );
        // A BOM is stripped only at the start of the stream; elsewhere it is part of a field
        // name, which is then unknown.
        assert_eq!(
            spec_parse_both_ways("\u{FEFF}data: x\n\n\u{FEFF}data: y\n\n".as_bytes()),
            [msg("message", "x", "", None)]
        );
        // An id with NUL is ignored; the id persists across events; an empty id resets it.
        assert_eq!(
            spec_parse_both_ways(b"id: 1\ndata: a\n\nid: x\0y\ndata: b\n\nid\ndata: c\n\n"),
            [
                msg("message", "a", "1", None),
                msg("message", "b", "1", None),
                msg("message", "c", "", None)
            ]
        );
        // retry: only ASCII digits count, and the value persists.
        assert_eq!(
            spec_parse_both_ways(b"retry: 12x\nretry: 34\ndata: a\n\nretry: -1\ndata: b\n\n"),
            [
                msg("message", "a", "", Some(34)),
                msg("message", "b", "", Some(34))
            ]
        );
        // A field without a colon has an empty value: `data` alone dispatches an empty message.
        // Comments are ignored; a block without data dispatches nothing but resets the type.
        assert_eq!(
            spec_parse_both_ways(b"data\n\n: hi\nevent: e\n\ndata: x\n\n"),
            [msg("message", "", "", None), msg("message", "x", "", None)]
        );
        // The first colon splits; unknown fields are ignored; the type applies once.
        assert_eq!(
            spec_parse_both_ways(b"event: a:b\nfoo: bar\ndata: x: y\n\ndata: z\n\n"),
            [msg("a:b", "x: y", "", None), msg("message", "z", "", None)]
        );
        // An event not ended by a blank line before the end of the stream is discarded.
        assert!(spec_parse_both_ways(b"data: x\n").is_empty());
        assert!(spec_parse_both_ways(b"data: x").is_empty());
        // Invalid UTF-8 decodes to U+FFFD.
        assert_eq!(
            spec_parse_both_ways(b"data: \xFF\xC3\n\n"),
            [msg("message", "\u{FFFD}\u{FFFD}", "", None)]
        );
    }

    #[test]
    fn round_trips_through_both_parsers() {
        let frame = encode(&event(" lead\n\ntrail\r", Some("x"), Some(7)));
        let want = [msg("x", " lead\n\ntrail\n", "e1", Some(7))];
        assert_eq!(parse_with_crate(&[frame.to_vec()]), want);
        assert_eq!(parse_with_spec(&[frame.to_vec()]), want);
    }

    // --- properties ---------------------------------------------------------------------------

    /// `PROPTEST_CASES` when set, else `default`.
    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Data with what breaks encoders: every kind of line end, runs of them (empty lines), NUL,
    /// other control characters, colons and spaces, text that looks like SSE fields, U+FEFF,
    /// Unicode line separators, multi-byte characters; or any characters at all.
    fn data() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("\n"),
            Just("\r"),
            Just("\r\n"),
            Just("\n\n"),
            Just("\r\r"),
            Just("\n\r"),
            Just("\0"),
            Just("\t\x0b\x0c\x7f"),
            Just(" "),
            Just(":"),
            Just("data: forged"),
            Just("\nid: forged\n"),
            Just("\r\nevent: forged\r\n\r\n"),
            Just("retry: 1"),
            Just("\u{FEFF}"),
            Just("\u{2028}\u{2029}\u{85}"),
            Just("é"),
            Just("€"),
            Just("😀"),
            Just("plain text"),
        ]
        .prop_map(str::to_owned);
        prop_oneof![
            2 => prop::collection::vec(prop_oneof![piece, any::<char>().prop_map(String::from)], 0..24)
                .prop_map(|p| p.concat()),
            1 => prop::collection::vec(any::<char>(), 0..48).prop_map(String::from_iter),
        ]
    }

    /// Any id `EventId::parse` accepts: no control characters, not `earliest`.
    fn event_id() -> impl Strategy<Value = EventId> {
        prop_oneof![
            "[^\\p{Cc}]{1,24}",
            "[ :a-z0-9\u{FEFF}é😀]{1,12}",
            "urn:uuid:[0-9a-f-]{36}",
        ]
        .prop_filter_map("ids refuse control characters", |s| EventId::parse(&s).ok())
    }

    /// Any type `EventType::parse` accepts: no CR, LF or NUL (other control characters pass).
    fn event_type() -> impl Strategy<Value = EventType> {
        prop_oneof![
            "[^\\r\\n\\x00]{1,24}",
            "[ :a-z.\\t\\x0b\\x7f\u{FEFF}é😀]{1,12}",
            Just("message".to_owned()),
        ]
        .prop_filter_map("types refuse CR, LF and NUL", |s| EventType::parse(&s).ok())
    }

    fn retry() -> impl Strategy<Value = Option<u64>> {
        prop_oneof![
            Just(None),
            (0u64..100_000).prop_map(Some),
            any::<u64>().prop_map(Some)
        ]
    }

    /// What a subscriber's stream carries.
    #[derive(Debug, Clone)]
    enum Item {
        Event(Event),
        /// A hub notice ([`notice`]): a typed event without an id.
        Notice(EventType, String),
        Heartbeat,
    }

    fn item() -> impl Strategy<Value = Item> {
        prop_oneof![
            6 => (event_id(), prop::option::of(event_type()), data(), retry())
                .prop_map(|(id, kind, data, retry)| Item::Event(event_with(id, kind, &data, retry))),
            1 => (event_type(), data()).prop_map(|(kind, data)| Item::Notice(kind, data)),
            1 => Just(Item::Heartbeat),
        ]
    }

    fn frame(item: &Item) -> Bytes {
        match item {
            Item::Event(e) => encode(e),
            Item::Notice(kind, data) => notice(kind.as_str(), data),
            Item::Heartbeat => Bytes::from_static(HEARTBEAT),
        }
    }

    /// WHATWG's line-end normalisation of `data`: CRLF, lone CR and LF each become one LF.
    fn normalise(data: &str) -> String {
        data.replace("\r\n", "\n").replace('\r', "\n")
    }

    /// What a conforming client must see for `items`.
    fn expected(items: &[Item]) -> Vec<Message> {
        let mut last_id = String::new();
        let mut reconnection_time = None;
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::Event(e) => {
                    last_id = e.id.as_str().to_owned();
                    reconnection_time = e.retry.or(reconnection_time);
                    out.push(Message {
                        kind: e.kind.as_ref().map_or("message", |k| k.as_str()).to_owned(),
                        data: normalise(&e.data),
                        last_event_id: last_id.clone(),
                        reconnection_time,
                    });
                }
                Item::Notice(kind, data) => out.push(Message {
                    kind: kind.as_str().to_owned(),
                    data: normalise(data),
                    last_event_id: last_id.clone(),
                    reconnection_time,
                }),
                Item::Heartbeat => {}
            }
        }
        out
    }

    /// Cuts `stream` at the offsets `cuts` pick (or after every byte).
    fn chunk(stream: &[u8], cuts: &[Index], every_byte: bool) -> Vec<Vec<u8>> {
        if every_byte {
            return stream.iter().map(|b| vec![*b]).collect();
        }
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.push(0);
        at.push(stream.len());
        at.sort_unstable();
        at.dedup();
        at.windows(2).map(|w| stream[w[0]..w[1]].to_vec()).collect()
    }

    fn cuts() -> impl Strategy<Value = (Vec<Index>, bool)> {
        (
            prop::collection::vec(any::<Index>(), 0..16),
            prop::bool::weighted(0.1),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(256)))]

        /// The round trip of the module documentation, through both parsers.
        #[test]
        fn any_stream_round_trips_through_both_parsers(
            items in prop::collection::vec(item(), 0..8),
            (cut_at, every_byte) in cuts(),
        ) {
            let mut stream = Vec::new();
            for item in &items {
                let frame = frame(item);
                // The frame itself: LF line ends only, known fields only, one blank line at the
                // end (so data can never forge a field or end an event early).
                prop_assert!(frame.ends_with(b"\n\n"));
                prop_assert!(!frame.contains(&b'\r'));
                let body = &frame[..frame.len() - 1];
                for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    prop_assert!(
                        [&b"id: "[..], b"event: ", b"retry: ", b"data: ", b":"]
                            .iter()
                            .any(|f| line.starts_with(f)),
                        "unexpected line {:?}", String::from_utf8_lossy(line)
                    );
                }
                prop_assert!(!body[..body.len() - 1].windows(2).any(|w| w == b"\n\n"));
                stream.extend_from_slice(&frame);
            }
            let chunks = chunk(&stream, &cut_at, every_byte);
            let want = expected(&items);
            prop_assert_eq!(&parse_with_spec(&chunks), &want, "the WHATWG parser");
            prop_assert_eq!(&parse_with_crate(&chunks), &want, "eventsource-stream");
        }

        /// The two parsers agree on streams using every kind of line end, reassembled across
        /// chunk boundaries: each LF of the encoded stream is rewritten as LF, CR or CRLF. (The
        /// final line end is never a lone CR: `eventsource-stream` keeps waiting for a possible LF
        /// after a CR that ends the whole stream, so it would drop the last event, where WHATWG
        /// dispatches it.)
        #[test]
        fn both_parsers_agree_on_any_line_ends(
            items in prop::collection::vec(item(), 1..6),
            ends in prop::collection::vec(0u8..3, 1..64),
            (cut_at, every_byte) in cuts(),
        ) {
            let encoded: Vec<u8> = items.iter().flat_map(|i| frame(i).to_vec()).collect();
            let mut stream = Vec::with_capacity(encoded.len() * 2);
            let mut n = 0;
            let mut lone_cr_at = None;
            for (i, b) in encoded.iter().enumerate() {
                if *b == b'\n' {
                    let last = i + 1 == encoded.len();
                    let mut end = if last { 0 } else { ends[n % ends.len()] };
                    // A lone CR right before a lone LF would make one CRLF of two line ends.
                    if end == 0 && lone_cr_at == Some(i - 1) {
                        end = 2;
                    }
                    match end {
                        0 => stream.push(b'\n'),
                        1 => {
                            stream.push(b'\r');
                            lone_cr_at = Some(i);
                        }
                        _ => stream.extend_from_slice(b"\r\n"),
                    }
                    n += 1;
                } else {
                    stream.push(*b);
                }
            }
            let chunks = chunk(&stream, &cut_at, every_byte);
            let want = expected(&items);
            prop_assert_eq!(&parse_with_spec(&chunks), &want, "the WHATWG parser");
            prop_assert_eq!(&parse_with_crate(&chunks), &want, "eventsource-stream");
        }
    }
}
