//! An incremental Server-Sent Events parser following the WHATWG rules
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>):
//! lines end in CRLF, LF or CR (also when the CR and the LF arrive in different chunks); a
//! leading BOM is dropped; `:` lines are comments; `data` lines are joined with LF; `id` sets the
//! last event id (kept across events, ignored when it contains NUL); `retry` takes only digits;
//! an event is dispatched at a blank line, and only when its data buffer is not empty.

/// One dispatched event. Borrowed from the parser: copy what you keep.
#[derive(Debug)]
pub struct Event<'a> {
    /// The `event` field, or `message`.
    pub kind: &'a [u8],
    /// The joined `data` lines, without the final LF.
    pub data: &'a [u8],
    /// The last event id in force when the event was dispatched.
    pub id: &'a [u8],
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct Parser {
    /// A line begun in an earlier chunk.
    partial: Vec<u8>,
    /// The previous chunk ended in CR: an LF at the start of the next one belongs to it.
    skip_lf: bool,
    /// Still at the very start of the stream (a BOM may follow).
    started: bool,
    data: Vec<u8>,
    kind: Vec<u8>,
    last_id: Vec<u8>,
    retry: Option<u64>,
    /// Comment lines seen (heartbeats).
    pub comments: u64,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last `retry` value the server sent, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event id (what a reconnecting client sends as `Last-Event-ID`).
    pub fn last_event_id(&self) -> &[u8] {
        &self.last_id
    }

    /// Prepares for a new connection of the same `EventSource`: the partial line, the pending
    /// event and the BOM state belong to the old stream and are dropped; the last event id
    /// (sent as `Last-Event-ID`) and the retry time are kept, as WHATWG's reconnection does.
    pub fn reconnect(&mut self) {
        self.partial.clear();
        self.skip_lf = false;
        self.started = false;
        self.data.clear();
        self.kind.clear();
    }

    /// Feeds the next chunk of the stream; `on_event` is called for every completed event.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        if !self.started {
            // The BOM may itself be split across chunks: wait for three bytes.
            if self.partial.is_empty() && chunk.len() < BOM.len() && BOM.starts_with(chunk) {
                self.partial.extend_from_slice(chunk);
                return;
            }
            if !self.partial.is_empty() {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(chunk);
                if joined.len() < BOM.len() && BOM.starts_with(&joined) {
                    self.partial = joined;
                    return;
                }
                self.started = true;
                let rest = joined.strip_prefix(BOM).unwrap_or(&joined);
                self.feed(rest, on_event);
                return;
            }
            self.started = true;
            chunk = chunk.strip_prefix(BOM).unwrap_or(chunk);
        }
        if self.skip_lf {
            self.skip_lf = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        let mut start = 0;
        while let Some(offset) = memchr::memchr2(b'\n', b'\r', &chunk[start..]) {
            let end = start + offset;
            let mut next = end + 1;
            if chunk[end] == b'\r' {
                if next < chunk.len() {
                    if chunk[next] == b'\n' {
                        next += 1;
                    }
                } else {
                    self.skip_lf = true;
                }
            }
            if self.partial.is_empty() {
                self.line(&chunk[start..end], &mut on_event);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[start..end]);
                self.line(&line, &mut on_event);
                line.clear();
                self.partial = line;
            }
            start = next;
        }
        self.partial.extend_from_slice(&chunk[start..]);
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.kind.clear();
                self.kind.extend_from_slice(value);
            }
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(Event<'_>)) {
        if self.data.is_empty() {
            self.kind.clear();
            return;
        }
        self.data.pop(); // the final LF
        let kind: &[u8] = if self.kind.is_empty() {
            b"message"
        } else {
            &self.kind
        };
        on_event(Event {
            kind,
            data: &self.data,
            id: &self.last_id,
        });
        self.data.clear();
        self.kind.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Owned {
        kind: String,
        data: String,
        id: String,
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<Owned> {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |e| {
                out.push(Owned {
                    kind: String::from_utf8_lossy(e.kind).into(),
                    data: String::from_utf8_lossy(e.data).into(),
                    id: String::from_utf8_lossy(e.id).into(),
                })
            });
        }
        out
    }

    fn ev(kind: &str, data: &str, id: &str) -> Owned {
        Owned {
            kind: kind.into(),
            data: data.into(),
            id: id.into(),
        }
    }

    #[test]
    fn reconnect_keeps_only_the_last_id() {
        let mut parser = Parser::new();
        let mut n = 0;
        parser.feed(b"id: 7\ndata: a\n\nid: 8\ndata: half", |_| n += 1);
        assert_eq!(n, 1);
        parser.reconnect();
        assert_eq!(parser.last_event_id(), b"8");
        let mut got = Vec::new();
        parser.feed(b"\xEF\xBB\xBFdata: b\n\n", |e| {
            got.push((e.data.to_vec(), e.id.to_vec()))
        });
        assert_eq!(got, vec![(b"b".to_vec(), b"8".to_vec())]);
    }

    /// Every way of cutting `input` in two (and byte by byte) gives the same events.
    fn all_splits(input: &[u8]) -> Vec<Owned> {
        let whole = parse_chunks(&[input]);
        for cut in 0..=input.len() {
            let split = parse_chunks(&[&input[..cut], &input[cut..]]);
            assert_eq!(split, whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), whole, "byte by byte");
        whole
    }

    #[test]
    fn line_endings_lf_cr_crlf() {
        let want = vec![
            ev("message", "a", ""),
            ev("message", "b", ""),
            ev("message", "c", ""),
        ];
        assert_eq!(all_splits(b"data: a\n\ndata: b\r\rdata: c\r\n\r\n"), want);
    }

    #[test]
    fn data_lines_join_with_lf_and_space_is_stripped_once() {
        assert_eq!(
            all_splits(b"data:one\ndata:  two\ndata\ndata: three\n\n"),
            vec![ev("message", "one\n two\n\nthree", "")]
        );
    }

    #[test]
    fn comments_unknown_fields_and_empty_data_do_not_dispatch() {
        let mut parser = Parser::new();
        let mut n = 0;
        parser.feed(b": heartbeat\n\nfoo: bar\n\nevent: x\n\n:\n\n", |_| n += 1);
        assert_eq!(n, 0);
        assert_eq!(parser.comments, 2);
        // The type of an undispatched event does not leak into the next one.
        assert_eq!(
            all_splits(b"event: x\n\ndata: y\n\n"),
            vec![ev("message", "y", "")]
        );
    }

    #[test]
    fn id_persists_and_event_type_resets() {
        assert_eq!(
            all_splits(
                b"id: 1\nevent: done\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\0y\ndata: d\n\n"
            ),
            vec![
                ev("done", "a", "1"),
                ev("message", "b", "1"),
                ev("message", "c", ""),
                ev("message", "d", ""),
            ]
        );
    }

    #[test]
    fn retry_needs_digits() {
        let mut parser = Parser::new();
        parser.feed(b"retry: 1500\n\nretry: soon\n\nretry: 15x\n\n", |_| {});
        assert_eq!(parser.retry(), Some(1500));
    }

    #[test]
    fn bom_is_dropped_only_at_the_start() {
        assert_eq!(
            all_splits(b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n"),
            vec![ev("message", "a", ""), ev("message", "c", "")]
        );
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert_eq!(
            all_splits(b"data: a\n\ndata: b\n"),
            vec![ev("message", "a", "")]
        );
        assert_eq!(all_splits(b"data: a"), vec![]);
    }

    #[test]
    fn field_without_colon_and_colon_in_value() {
        assert_eq!(
            all_splits(b"data: {\"a\":1}\nevent:t:u\n\n"),
            vec![ev("t:u", "{\"a\":1}", "")]
        );
    }

    #[test]
    fn a_cr_at_a_chunk_end_then_lf() {
        let events = parse_chunks(&[b"data: a\r", b"\n\r", b"\ndata: b\r", b"\r"]);
        assert_eq!(events, vec![ev("message", "a", ""), ev("message", "b", "")]);
    }
}
