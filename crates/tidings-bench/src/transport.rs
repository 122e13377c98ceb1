//! Transports beside the raw HTTP/1.1 subscriber of `fanout.rs`: TLS (rustls, trusting the CA
//! given with `--tls-ca`) and hyper's client for HTTP/2 (a few connections carrying many
//! streams) and for HTTP/1.1 over TLS. The raw path stays as it was, so runs over plain
//! HTTP/1.1 measure exactly what they measured before.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream the clients write requests to and read responses from.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How to open TLS connections to the server.
#[derive(Clone)]
pub struct Tls {
    h1: tokio_rustls::TlsConnector,
    h2: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    /// Trusts the PEM certificates in `ca` for `host`.
    pub fn new(ca: &Path, host: &str) -> anyhow::Result<Self> {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.context("a PEM certificate")?)?;
        }
        if roots.is_empty() {
            bail!("{} holds no certificate", ca.display());
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = |alpn: &[u8]| -> anyhow::Result<tokio_rustls::TlsConnector> {
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(config).into())
        };
        Ok(Self {
            h1: config(b"http/1.1")?,
            h2: config(b"h2")?,
            name: ServerName::try_from(host.to_owned()).context("a TLS server name")?,
        })
    }

    /// The TLS handshake on `tcp`, offering `h2` or `http/1.1`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        h2: bool,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = if h2 { &self.h2 } else { &self.h1 };
        Ok(connector.connect(self.name.clone(), tcp).await?)
    }
}

/// A request sender on an HTTP/2 connection (cloned for every stream it carries).
pub type H2 = http2::SendRequest<Empty<Bytes>>;

/// Opens one HTTP/2 connection (TLS with ALPN `h2`, or cleartext with prior knowledge).
pub async fn h2_connect(tcp: TcpStream, tls: Option<&Tls>) -> anyhow::Result<H2> {
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = match tls {
        Some(tls) => Box::new(tls.connect(tcp, true).await?),
        None => Box::new(tcp),
    };
    let mut builder = http2::Builder::new(TokioExecutor::new());
    // Windows large enough that flow control never holds a stream back in a benchmark.
    builder
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(64 << 20);
    let (send, conn) = builder.handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// `GET target` as an SSE request on `send` (HTTP/2).
pub async fn h2_get(
    send: &H2,
    scheme: &str,
    authority: &str,
    target: &str,
    headers: &[(String, String)],
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let mut send = send.clone();
    send.ready().await?;
    let mut request = hyper::Request::get(format!("{scheme}://{authority}{target}"))
        .header("accept", "text/event-stream");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    Ok(send.send_request(request.body(Empty::new())?).await?)
}

/// `GET target` as an SSE request on a new HTTP/1.1 connection over TLS, through hyper.
pub async fn h1_tls_get(
    tcp: TcpStream,
    tls: &Tls,
    authority: &str,
    target: &str,
    headers: &[(String, String)],
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    tcp.set_nodelay(true)?;
    let io = tls.connect(tcp, false).await?;
    let (mut send, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = hyper::Request::get(target)
        .header("host", authority)
        .header("accept", "text/event-stream");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    Ok(send.send_request(request.body(Empty::new())?).await?)
}

/// `Name: value` header lines as pairs.
pub fn header_pairs(lines: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    lines
        .iter()
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .with_context(|| format!("a header is `Name: value`, not {line:?}"))?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}
