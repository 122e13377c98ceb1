//! What the publisher sends and what subscribers read back: the event data carries the topic
//! index, a per-topic sequence number and the send time, and the publish request is built from
//! URL and body templates so the same tool drives any server.

use std::fmt::Write as _;

/// How `{data}` is written into the body template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BodyEncoding {
    /// Percent-encoded, for `application/x-www-form-urlencoded` bodies.
    Form,
    /// As a JSON string literal, quotes included.
    Json,
    /// As is.
    Raw,
}

/// The publish request, from templates with `{topic}`, `{data}`, `{seq}` and `{ts}`.
#[derive(Debug, Clone)]
pub struct PublishTemplate {
    /// The request target template (path and query of the URL; `{topic}` etc. allowed).
    pub target: String,
    /// The `Host` header.
    pub host: String,
    pub body: String,
    pub encoding: BodyEncoding,
    pub content_type: String,
    /// Extra bytes of padding in the data.
    pub pad: usize,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<String>,
}

impl PublishTemplate {
    /// The event data: a small JSON object the subscribers parse back.
    pub fn data(&self, topic: usize, seq: u64, ts: u64) -> String {
        let mut s = String::with_capacity(64 + self.pad);
        let _ = write!(s, "{{\"seq\":{seq},\"ts\":{ts},\"topic\":{topic}");
        if self.pad > 0 {
            s.push_str(",\"pad\":\"");
            s.extend(std::iter::repeat_n('x', self.pad));
            s.push('"');
        }
        s.push('}');
        s
    }

    /// A complete HTTP/1.1 request publishing one event.
    pub fn request(&self, topic: usize, seq: u64, ts: u64) -> Vec<u8> {
        let data = self.data(topic, seq, ts);
        let encoded = match self.encoding {
            BodyEncoding::Form => form_encode(&data),
            BodyEncoding::Json => serde_json::to_string(&data).expect("a string serializes"),
            BodyEncoding::Raw => data,
        };
        let (t, q, ts_s) = (topic.to_string(), seq.to_string(), ts.to_string());
        let body = fill(&self.body, &t, &encoded, &q, &ts_s);
        let target = fill(&self.target, &t, "", &q, &ts_s);
        let mut req = String::with_capacity(body.len() + 256);
        let _ = write!(
            req,
            "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.host,
            self.content_type,
            body.len()
        );
        for h in &self.headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req.push_str(&body);
        req.into_bytes()
    }
}

/// Replaces the placeholders of a template.
pub fn fill(template: &str, topic: &str, data: &str, seq: &str, ts: &str) -> String {
    let mut out = String::with_capacity(template.len() + data.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let (value, len) = if after.starts_with("{topic}") {
            (topic, 7)
        } else if after.starts_with("{data}") {
            (data, 6)
        } else if after.starts_with("{seq}") {
            (seq, 5)
        } else if after.starts_with("{ts}") {
            (ts, 4)
        } else {
            ("{", 1)
        };
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Fills the subscribe URL template: `{i}` is the subscriber's index, `{topic}` its topic.
pub fn subscribe_url(template: &str, i: usize, topic: usize) -> String {
    template
        .replace("{i}", &i.to_string())
        .replace("{topic}", &topic.to_string())
}

/// `application/x-www-form-urlencoded` encoding of a value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Finds `key` followed by `:` or `=` (quotes and backslashes of any escaping in between are
/// skipped, as are spaces after) and returns the unsigned integer after it. Robust to servers
/// that wrap or re-escape the data.
pub fn extract(data: &[u8], key: &[u8]) -> Option<u64> {
    extract_with(data, &memchr::memmem::Finder::new(key))
}

fn extract_with(data: &[u8], finder: &memchr::memmem::Finder<'_>) -> Option<u64> {
    let key = finder.needle();
    for at in finder.find_iter(data) {
        if at > 0 && data[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let mut i = at + key.len();
        while i < data.len() && (data[i] == b'"' || data[i] == b'\\') {
            i += 1;
        }
        if i >= data.len() || (data[i] != b':' && data[i] != b'=') {
            continue;
        }
        i += 1;
        while i < data.len() && data[i] == b' ' {
            i += 1;
        }
        let start = i;
        let mut v: u64 = 0;
        while i < data.len() && data[i].is_ascii_digit() {
            v = v.checked_mul(10)?.checked_add((data[i] - b'0') as u64)?;
            i += 1;
        }
        if i > start {
            return Some(v);
        }
    }
    None
}

/// The fields a subscriber reads from an event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub ts: u64,
    pub topic: Option<u64>,
}

pub fn parse_stamp(data: &[u8]) -> Option<Stamp> {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    // Built once: building a finder costs more than searching these short payloads.
    static SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"seq"));
    static TS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"ts"));
    static TOPIC: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"topic"));
    Some(Stamp {
        seq: extract_with(data, &SEQ)?,
        ts: extract_with(data, &TS)?,
        topic: extract_with(data, &TOPIC),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(encoding: BodyEncoding, body: &str) -> PublishTemplate {
        PublishTemplate {
            target: "/.well-known/mercure".into(),
            host: "127.0.0.1:8080".into(),
            body: body.into(),
            encoding,
            content_type: "application/x-www-form-urlencoded".into(),
            pad: 0,
            headers: vec![],
        }
    }

    #[test]
    fn form_request_round_trips() {
        let t = template(BodyEncoding::Form, "topic=bench/{topic}&data={data}");
        let req = String::from_utf8(t.request(3, 7, 123456)).unwrap();
        let (head, body) = req.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /.well-known/mercure HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert_eq!(
            body,
            "topic=bench/3&data=%7B%22seq%22%3A7%2C%22ts%22%3A123456%2C%22topic%22%3A3%7D"
        );
    }

    #[test]
    fn json_request_and_url_topic() {
        let mut t = template(
            BodyEncoding::Json,
            r#"{"topic":"bench/{topic}","data":{data}}"#,
        );
        t.target = "/pub?id={topic}".into();
        t.pad = 3;
        let req = String::from_utf8(t.request(1, 2, 3)).unwrap();
        assert!(req.starts_with("POST /pub?id=1 HTTP/1.1\r\n"));
        let body = req.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let data = v["data"].as_str().unwrap();
        assert_eq!(data, r#"{"seq":2,"ts":3,"topic":1,"pad":"xxx"}"#);
        assert_eq!(
            parse_stamp(data.as_bytes()),
            Some(Stamp {
                seq: 2,
                ts: 3,
                topic: Some(1)
            })
        );
    }

    #[test]
    fn extraction_survives_wrapping_and_escaping() {
        let wrapped = br#"{"events":5,"msg":"{\"seq\":41,\"ts\": 99}"}"#;
        assert_eq!(extract(wrapped, b"seq"), Some(41));
        assert_eq!(extract(wrapped, b"ts"), Some(99));
        assert_eq!(extract(b"seq=5&ts=6", b"ts"), Some(6));
        assert_eq!(extract(b"{\"seq\":\"x\"}", b"seq"), None);
        assert_eq!(parse_stamp(b"hello"), None);
    }

    #[test]
    fn placeholders() {
        assert_eq!(fill("{a}{topic}-{seq}{", "t", "d", "1", "2"), "{a}t-1{");
        assert_eq!(
            subscribe_url("http://h/s?topic=b/{topic}&c={i}", 12, 2),
            "http://h/s?topic=b/2&c=12"
        );
        assert_eq!(form_encode("a b/&="), "a+b%2F%26%3D");
    }
}
