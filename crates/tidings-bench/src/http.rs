//! A lean hand-rolled HTTP/1.1 client: `http://` URLs (and `https://`, through
//! [`crate::transport`]), one request at a time per connection, response heads parsed with `httparse`, bodies framed by `Content-Length`, chunked
//! transfer coding or the end of the connection.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed `http://host[:port]/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host[:port]` as written: the `Host` header.
    pub authority: String,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
    /// `https://`.
    pub tls: bool,
}

impl Url {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (rest, tls) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (None, Some(rest)) => (rest, true),
            (None, None) => bail!("only http:// and https:// URLs are supported: {s}"),
        };
        let default_port = if tls { 443 } else { 80 };
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => match rest.find('?') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            },
        };
        let target = if target.starts_with('?') {
            format!("/{target}")
        } else {
            target.to_owned()
        };
        if authority.is_empty() {
            bail!("no host in {s}");
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let end = bracketed.find(']').context("unclosed [ in host")?;
            let host = &bracketed[..end];
            let port = match &bracketed[end + 1..] {
                "" => default_port,
                p => p.strip_prefix(':').context("bad port")?.parse()?,
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().context("bad port")?),
                None => (authority.to_owned(), default_port),
            }
        };
        Ok(Self {
            authority: authority.to_owned(),
            host,
            port,
            target,
            tls,
        })
    }

    /// Resolves the host (once, before the run).
    pub async fn resolve(&self) -> anyhow::Result<SocketAddr> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("resolving {}", self.host))?
            .next()
            .with_context(|| format!("{} has no address", self.host))
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// The parts of a response head the client needs.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// The server said `Connection: close` (or HTTP/1.0 without keep-alive).
    pub close: bool,
    /// The bytes of the head.
    pub len: usize,
}

/// Parses a response head at the start of `buf`; `None` when it is not complete yet.
pub fn parse_head(buf: &[u8], head_request: bool) -> anyhow::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf).context("malformed response head")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.unwrap_or(0);
    let mut close = response.version == Some(0);
    let mut chunked = false;
    let mut length = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .split(|&b| b == b',')
                .next_back()
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).unwrap_or("").trim();
            length = Some(v.parse::<u64>().context("bad Content-Length")?);
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value.trim_ascii();
            if v.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if v.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        close = true;
        Framing::Close
    };
    Ok(Some(Head {
        status,
        framing,
        close,
        len,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size (and any extension) up to LF.
    Size {
        size: u64,
        in_ext: bool,
        digits: bool,
    },
    /// `remaining` bytes of chunk data to pass on.
    Data {
        remaining: u64,
    },
    /// The CRLF after chunk data.
    DataEnd {
        seen_cr: bool,
    },
    /// Trailer lines after the last chunk; `blank` while the current line is still empty.
    Trailer {
        blank: bool,
    },
    Done,
}

/// An incremental decoder of the chunked transfer coding.
#[derive(Debug)]
pub struct Dechunker {
    state: ChunkState,
}

impl Default for Dechunker {
    fn default() -> Self {
        Self {
            state: ChunkState::Size {
                size: 0,
                in_ext: false,
                digits: false,
            },
        }
    }
}

impl Dechunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, calling `out` with each run of body bytes. Returns how many input bytes
    /// were consumed (all of them unless the body ended inside `input`).
    pub fn decode(&mut self, input: &[u8], mut out: impl FnMut(&[u8])) -> anyhow::Result<usize> {
        let mut i = 0;
        while i < input.len() {
            match &mut self.state {
                ChunkState::Size {
                    size,
                    in_ext,
                    digits,
                } => {
                    let b = input[i];
                    i += 1;
                    if b == b'\n' {
                        if !*digits {
                            bail!("chunk size missing");
                        }
                        self.state = if *size == 0 {
                            ChunkState::Trailer { blank: true }
                        } else {
                            ChunkState::Data { remaining: *size }
                        };
                    } else if *in_ext || b == b'\r' {
                        // Extensions (and the CR before LF) are skipped.
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        *in_ext = true;
                    } else {
                        let d = (b as char).to_digit(16).context("bad chunk size")? as u64;
                        *size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(d))
                            .context("chunk size overflow")?;
                        *digits = true;
                    }
                }
                ChunkState::Data { remaining } => {
                    let n = (*remaining).min((input.len() - i) as u64) as usize;
                    out(&input[i..i + n]);
                    i += n;
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = ChunkState::DataEnd { seen_cr: false };
                    }
                }
                ChunkState::DataEnd { seen_cr } => {
                    let b = input[i];
                    i += 1;
                    match b {
                        b'\r' if !*seen_cr => *seen_cr = true,
                        b'\n' => {
                            self.state = ChunkState::Size {
                                size: 0,
                                in_ext: false,
                                digits: false,
                            }
                        }
                        _ => bail!("missing CRLF after chunk data"),
                    }
                }
                ChunkState::Trailer { blank } => {
                    let b = input[i];
                    i += 1;
                    match b {
                        b'\n' if *blank => {
                            self.state = ChunkState::Done;
                            return Ok(i);
                        }
                        b'\n' => *blank = true,
                        b'\r' => {}
                        _ => *blank = false,
                    }
                }
                ChunkState::Done => return Ok(i),
            }
        }
        Ok(i)
    }
}

/// A keep-alive connection for request/response exchanges (the publishers).
pub struct Conn {
    addr: SocketAddr,
    tls: Option<crate::transport::Tls>,
    stream: Option<Box<dyn crate::transport::Io>>,
    buf: Vec<u8>,
    /// Connections opened (1 + reconnects).
    pub opened: u64,
}

/// A finished exchange.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_tls(addr, None)
    }

    /// A connection that speaks TLS (HTTP/1.1 by ALPN) when `tls` is given.
    pub fn with_tls(addr: SocketAddr, tls: Option<crate::transport::Tls>) -> Self {
        Self {
            addr,
            tls,
            stream: None,
            buf: Vec::with_capacity(4096),
            opened: 0,
        }
    }

    /// Sends `request` (a complete HTTP/1.1 request) and reads the whole response. Reconnects
    /// once when a kept-alive connection turns out to be closed before any answer.
    pub async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Reply> {
        let reused = self.stream.is_some();
        match self.try_exchange(request).await {
            Ok(r) => Ok(r),
            Err(e) if reused && e.downcast_ref::<Stale>().is_some() => {
                self.stream = None;
                self.try_exchange(request).await
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn try_exchange(&mut self, request: &[u8]) -> anyhow::Result<Reply> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            s.set_nodelay(true)?;
            self.stream = Some(match &self.tls {
                None => Box::new(s),
                Some(tls) => Box::new(tls.connect(s, false).await?),
            });
            self.opened += 1;
        }
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(request).await.map_err(|_| Stale)?;
        self.buf.clear();
        let head = loop {
            if let Some(head) = parse_head(&self.buf, false)? {
                break head;
            }
            let n = read_more(stream, &mut self.buf).await?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Err(Stale.into());
                }
                bail!("connection closed inside the response head");
            }
        };
        let mut body = Vec::new();
        let mut rest = self.buf.split_off(head.len);
        match head.framing {
            Framing::Length(n) => {
                let n = n as usize;
                while rest.len() < n {
                    if read_more(stream, &mut rest).await? == 0 {
                        bail!("connection closed inside the response body");
                    }
                }
                body.extend_from_slice(&rest[..n]);
            }
            Framing::Chunked => {
                let mut d = Dechunker::new();
                loop {
                    d.decode(&rest, |b| body.extend_from_slice(b))?;
                    if d.is_done() {
                        break;
                    }
                    rest.clear();
                    if read_more(stream, &mut rest).await? == 0 {
                        bail!("connection closed inside the response body");
                    }
                }
            }
            Framing::Close => {
                body = rest;
                loop {
                    if read_more(stream, &mut body).await? == 0 {
                        break;
                    }
                }
            }
        }
        if head.close || head.framing == Framing::Close {
            self.stream = None;
        }
        Ok(Reply {
            status: head.status,
            body,
        })
    }
}

/// The kept-alive connection had been closed by the server: safe to retry once.
#[derive(Debug)]
struct Stale;

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by the server before answering")
    }
}

impl std::error::Error for Stale {}

async fn read_more(
    stream: &mut Box<dyn crate::transport::Io>,
    buf: &mut Vec<u8>,
) -> anyhow::Result<usize> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(4096);
    }
    Ok(stream.read_buf(buf).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080/.well-known/mercure?topic=a").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 8080);
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.target, "/.well-known/mercure?topic=a");
        let u = Url::parse("http://localhost").unwrap();
        assert_eq!((u.port, u.target.as_str()), (80, "/"));
        let u = Url::parse("http://[::1]:9000?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("::1", 9000, "/?x=1")
        );
        let tls = Url::parse("https://x/").unwrap();
        assert!(tls.tls && tls.port == 443, "{tls:?}");
        assert!(Url::parse("ftp://x").is_err());
    }

    #[test]
    fn heads() {
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxx",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (h.status, h.framing, h.close, h.len),
            (200, Framing::Chunked, false, 47)
        );
        let h = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n", false).unwrap();
        assert!(h.is_none());
        let h = parse_head(
            b"HTTP/1.1 404 No\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (h.status, h.framing, h.close),
            (404, Framing::Length(5), true)
        );
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.close), (Framing::Close, true));
    }

    fn dechunk_all(parts: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut d = Dechunker::new();
        let mut out = Vec::new();
        for p in parts {
            d.decode(p, |b| out.extend_from_slice(b)).unwrap();
        }
        (out, d.is_done())
    }

    #[test]
    fn chunked_in_any_split() {
        let input: &[u8] = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        let (whole, done) = dechunk_all(&[input]);
        assert_eq!(whole, b"hello 0123456789");
        assert!(done);
        for cut in 0..=input.len() {
            assert_eq!(
                dechunk_all(&[&input[..cut], &input[cut..]]),
                (whole.clone(), true)
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(dechunk_all(&bytes), (whole, true));
    }

    #[test]
    fn chunked_stops_at_the_end_and_rejects_garbage() {
        let mut d = Dechunker::new();
        let used = d.decode(b"0\r\n\r\nHTTP/1.1", |_| {}).unwrap();
        assert_eq!(used, 5);
        assert!(Dechunker::new().decode(b"zz\r\n", |_| {}).is_err());
        assert!(Dechunker::new().decode(b"1\r\nab", |_| {}).is_err());
    }
}
