//! TLS and HTTP/2 at the hub: the configured certificate in the handshake (ALPN `h2` and
//! `http/1.1`), a certificate swapped on disk served without a restart, 20 SSE streams on one
//! HTTP/2 connection, resume, private events, the slow cut and the stall reset over HTTP/2, and
//! cleartext HTTP/2 with prior knowledge beside HTTP/1.1 on one listener. The certificates come
//! from a CA made at test time with rcgen; the clients are hyper's HTTP/2 client over
//! tokio-rustls (one connection, explicitly) and reqwest.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{spawn_hub_with, sse_from, within, HubClient, TestHub, WAIT};
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tidings::auth::KeyConfig;
use tidings::net::tls::TlsFiles;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A certificate authority made for one test.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

/// A leaf certificate for `localhost`, its key, and its DER (to recognise it in a handshake).
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Tidings test CA");
        let cert = params.self_signed(&key).expect("a self-signed CA");
        Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, name: &str) -> Leaf {
        let key = KeyPair::generate().expect("a leaf key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).expect("a leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Writes `leaf` to `cert`/`key` the way a certificate manager should: each file replaced by
/// a rename, so a reader never sees half of one.
fn install(leaf: &Leaf, cert: &PathBuf, key: &PathBuf) {
    for (path, text) in [(key, &leaf.key_pem), (cert, &leaf.cert_pem)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write a PEM file");
        std::fs::rename(&tmp, path).expect("rename it into place");
    }
}

/// A hub serving TLS with `leaf`, and where its files are.
struct TlsHub {
    hub: TestHub,
    cert: PathBuf,
    key: PathBuf,
    _files: tempfile::TempDir,
}

async fn tls_hub(
    leaf: &Leaf,
    reload_every: Duration,
    tweak: impl FnOnce(&mut tidings::Config),
) -> TlsHub {
    let files = tempfile::tempdir().expect("a directory for the certificate");
    let cert = files.path().join("cert.pem");
    let key = files.path().join("key.pem");
    install(leaf, &cert, &key);
    let (c, k) = (cert.clone(), key.clone());
    let hub = spawn_hub_with(move |config| {
        config.protocol.tls = Some(TlsFiles {
            cert: c,
            key: k,
            reload_every,
        });
        tweak(config);
    })
    .await;
    TlsHub {
        hub,
        cert,
        key,
        _files: files,
    }
}

/// A reqwest client trusting only `ca`, reaching `localhost` at `addr`: HTTP/2 by ALPN, or
/// HTTP/1.1 only.
fn https_client(ca: &TestCa, addr: SocketAddr, h1_only: bool) -> HubClient {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .resolve("localhost", addr)
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("CA PEM")]);
    if h1_only {
        builder = builder.http1_only();
    }
    HubClient {
        base: format!("https://localhost:{}", addr.port()),
        client: builder.build().expect("an HTTPS client"),
    }
}

/// A TLS handshake with the hub as `localhost`, offering `alpn`, trusting only `ca`.
async fn handshake(addr: SocketAddr, ca: &TestCa, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).expect("add the test CA");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("a server name");
    within(
        WAIT,
        "the TLS handshake",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("the TLS handshake succeeds")
}

/// One HTTP/2 connection over `io`; its driver runs in a task.
async fn h2_connection<I>(io: I, window: Option<u32>) -> SendRequest<Empty<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    if let Some(window) = window {
        builder
            .adaptive_window(false)
            .initial_stream_window_size(window)
            .initial_connection_window_size(window.max(65_535));
    }
    let (send, conn) = within(
        WAIT,
        "the HTTP/2 handshake",
        builder.handshake(TokioIo::new(io)),
    )
    .await
    .expect("an HTTP/2 connection");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// `GET path` on an HTTP/2 connection: the response, once its head has arrived (the hub has
/// registered the subscription by then).
async fn h2_get(
    send: &mut SendRequest<Empty<Bytes>>,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> hyper::Response<hyper::body::Incoming> {
    let mut request = hyper::Request::get(format!("https://{authority}{path}"))
        .header("accept", "text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::new()).expect("a request");
    within(WAIT, "ready to send", send.ready())
        .await
        .expect("the connection is open");
    within(WAIT, "the response head", send.send_request(request))
        .await
        .expect("a response")
}

/// An SSE stream read from an HTTP/2 response body.
fn h2_sse(response: hyper::Response<hyper::body::Incoming>) -> crate::common::Sse {
    // reqwest's response type is what the shared SSE reader takes: wrap the hyper body.
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream();
    let response = hyper::Response::from_parts(parts, reqwest::Body::wrap_stream(stream));
    sse_from(reqwest::Response::from(response))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_serves_the_configured_certificate_with_h2_and_http11() {
    let ca = TestCa::new();
    let leaf = ca.leaf("first");
    let hub = tls_hub(&leaf, Duration::from_secs(60), |_| {}).await;
    let addr = hub.hub.addr;

    for (offer, agreed) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], b"h2".as_slice()),
        (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
    ] {
        let tls = handshake(addr, &ca, offer).await;
        let (_, session) = tls.get_ref();
        assert_eq!(session.alpn_protocol(), Some(agreed));
        let chain = session.peer_certificates().expect("a certificate chain");
        assert_eq!(chain[0], leaf.der, "the configured certificate");
        let version = session.protocol_version().expect("a version");
        assert!(
            matches!(
                version,
                rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2
            ),
            "{version:?}"
        );
    }

    // An SSE stream and a publish over each protocol, through a real client.
    for h1 in [false, true] {
        let https = https_client(&ca, addr, h1);
        let mut sse = https.subscribe("topic=tls").await;
        let id = https.publish("tls", "over TLS").await;
        let event = sse.next().await;
        assert_eq!((event.id, event.data.as_str()), (id, "over TLS"));
        let version = https
            .client
            .get(https.url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .version();
        let expected = if h1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        assert_eq!(version, expected);
    }

    // Cleartext to the TLS port is not served, and leaves the hub serving.
    let plain = crate::common::client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let https = https_client(&ca, addr, false);
    assert!(https.get("/healthz").await.status.is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_swapped_on_disk_is_served_without_a_restart() {
    let ca = TestCa::new();
    let first = ca.leaf("first");
    let hub = tls_hub(&first, Duration::from_millis(50), |_| {}).await;
    let addr = hub.hub.addr;
    let served = |tls: &TlsStream<TcpStream>| {
        tls.get_ref().1.peer_certificates().expect("a chain")[0].clone()
    };
    assert_eq!(served(&handshake(addr, &ca, &[b"h2"]).await), first.der);
    // A stream opened before the swap keeps running across it.
    let https = https_client(&ca, addr, false);
    let mut before = https.subscribe("topic=swap").await;

    let second = ca.leaf("second");
    install(&second, &hub.cert, &hub.key);
    within(WAIT, "the new certificate in a handshake", async {
        loop {
            if served(&handshake(addr, &ca, &[b"h2"]).await) == second.der {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // A key that does not match the certificate is refused; the last good pair stays in use.
    std::fs::write(&hub.key, ca.leaf("other").key_pem).expect("write a wrong key");
    let third = ca.leaf("third");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(served(&handshake(addr, &ca, &[b"h2"]).await), second.der);
    install(&third, &hub.cert, &hub.key);
    within(WAIT, "the third certificate", async {
        while served(&handshake(addr, &ca, &[b"h2"]).await) != third.der {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let id = https.publish("swap", "after").await;
    assert_eq!(before.next().await.id, id, "the older stream still runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_streams_on_one_http2_connection_all_receive_every_event() {
    let ca = TestCa::new();
    let hub = tls_hub(&ca.leaf("h2"), Duration::from_secs(60), |_| {}).await;
    let addr = hub.hub.addr;
    let tls = handshake(addr, &ca, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let mut send = h2_connection(tls, None).await;
    let authority = format!("localhost:{}", addr.port());
    let mut streams = Vec::new();
    for i in 0..20 {
        let topic = if i % 2 == 0 { "topic=many" } else { "topic=*" };
        let path = format!("/.well-known/mercure?{topic}");
        let response = h2_get(&mut send, &authority, &path, &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        streams.push(h2_sse(response));
    }
    let https = https_client(&ca, addr, false);
    assert_eq!(https.stats().await["subscribers"], 20);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(https.publish("many", &format!("event {i}")).await);
    }
    for (n, sse) in streams.iter_mut().enumerate() {
        let got = sse.take_ids(ids.len()).await;
        assert_eq!(got, ids, "stream {n}");
    }
}

const SUB_SECRET: &str = "subscriber secret, fedcba9876543210fedcba9876543210";
const PUB_SECRET: &str = "publisher secret, 0123456789abcdef0123456789abcdef";

fn hs256(secret: &str, claims: serde_json::Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("a token")
}

fn in_an_hour() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 3600
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_and_private_events_over_cleartext_http2_with_prior_knowledge() {
    let hub = spawn_hub_with(|c| {
        for (slot, secret) in [
            (&mut c.auth.publisher, PUB_SECRET),
            (&mut c.auth.subscriber, SUB_SECRET),
        ] {
            *slot = Some(KeyConfig {
                algorithm: Algorithm::HS256,
                key: secret.to_owned(),
                jwks: None,
            });
        }
    })
    .await;
    let publisher = hs256(
        PUB_SECRET,
        json!({"mercure": {"publish": ["*"]}, "exp": in_an_hour()}),
    );
    let reader = hs256(
        SUB_SECRET,
        json!({"mercure": {"subscribe": ["secret/{id}"]}, "exp": in_an_hour()}),
    );
    let h2c = HubClient {
        base: hub.base.clone(),
        client: reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .build()
            .expect("an h2c client"),
    };
    let publish = |topic: &'static str, data: &'static str, private: bool| {
        let h2c = h2c.clone();
        let auth = format!("Bearer {publisher}");
        async move {
            let mut fields = vec![("topic", topic), ("data", data)];
            if private {
                fields.push(("private", "on"));
            }
            let reply = h2c
                .send(
                    h2c.client
                        .post(h2c.url("/.well-known/mercure"))
                        .header("authorization", auth)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(crate::common::form(&fields)),
                )
                .await;
            assert!(reply.status.is_success(), "{reply:?}");
            reply.body
        }
    };

    // Private events: the token holder sees them, the anonymous stream does not; both on h2c.
    let auth = format!("Bearer {reader}");
    let mut private = h2c
        .sse(
            "/.well-known/mercure?topic=secret/1&topic=public",
            &[("authorization", &auth)],
        )
        .await;
    let mut anonymous = h2c.subscribe("topic=secret/1&topic=public").await;
    let secret = publish("secret/1", "for the token holder", true).await;
    let first = publish("public", "one", false).await;
    assert_eq!(
        private.take_ids(2).await,
        vec![secret.clone(), first.clone()]
    );
    assert_eq!(anonymous.take_ids(1).await, vec![first.clone()]);

    // Resume by Last-Event-ID over HTTP/2: what came after, then live.
    let second = publish("public", "two", false).await;
    let third = publish("public", "three", false).await;
    let mut resumed = h2c
        .sse(
            "/.well-known/mercure?topic=public",
            &[("last-event-id", &first)],
        )
        .await;
    assert_eq!(resumed.take_ids(2).await, vec![second, third]);
    let fourth = publish("public", "four", false).await;
    assert_eq!(resumed.take_ids(1).await, vec![fourth]);

    // The same listener still speaks HTTP/1.1, down the raw-socket live path.
    let mut h1 = hub.subscribe("topic=public").await;
    let fifth = publish("public", "five", false).await;
    assert_eq!(h1.take_ids(1).await, vec![fifth]);
    let versions = [
        (
            h2c.client.get(h2c.url("/healthz")),
            reqwest::Version::HTTP_2,
        ),
        (
            hub.client.get(hub.url("/healthz")),
            reqwest::Version::HTTP_11,
        ),
    ];
    for (request, version) in versions {
        assert_eq!(request.send().await.expect("healthz").version(), version);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_http2_stream_is_cut_and_resumes_without_loss() {
    let hub = spawn_hub_with(|c| {
        c.hub.mailbox.frames = 16;
        c.hub.mailbox.bytes = 256 * 1024;
    })
    .await;
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    // A stream window of 16 KiB, never read: the hub's body for it stops being polled.
    let mut slow_conn = h2_connection(tcp, Some(16 * 1024)).await;
    let authority = hub.addr.to_string();
    let slow = h2_get(
        &mut slow_conn,
        &authority,
        "/.well-known/mercure?topic=big",
        &[],
    )
    .await;
    assert_eq!(slow.version(), hyper::Version::HTTP_2);
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let mut fast_conn = h2_connection(tcp, None).await;
    let fast = h2_get(
        &mut fast_conn,
        &authority,
        "/.well-known/mercure?topic=big",
        &[],
    )
    .await;
    let mut fast = h2_sse(fast);

    let payload = "x".repeat(32 * 1024);
    let mut ids = Vec::new();
    while hub.stats().await["slow_disconnects"].as_u64() < Some(1) {
        assert!(ids.len() < 400, "400 events of 32 KiB and no cut");
        ids.push(
            hub.publish("big", &format!("{} {payload}", ids.len()))
                .await,
        );
        assert_eq!(
            fast.next().await.id,
            *ids.last().unwrap(),
            "the fast stream"
        );
    }
    // The slow stream now reads: a prefix of the events, then its end.
    let mut got = Vec::new();
    let mut events = slow.into_body().into_data_stream().eventsource();
    within(WAIT, "the cut stream to end", async {
        while let Some(event) = events.next().await {
            match event {
                Ok(e) if !e.id.is_empty() => got.push(e.id),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    })
    .await;
    assert!(got.len() < ids.len(), "cut before the end");
    assert_eq!(got[..], ids[..got.len()], "a prefix, in order");
    // It resumes from its last id with nothing lost.
    let last = got.last().cloned().unwrap_or_else(|| "earliest".to_owned());
    let mut resumed = h2_sse(
        h2_get(
            &mut slow_conn,
            &authority,
            "/.well-known/mercure?topic=big",
            &[("last-event-id", &last)],
        )
        .await,
    );
    let rest = resumed.take_ids(ids.len() - got.len()).await;
    assert_eq!(rest[..], ids[got.len()..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_whose_window_stays_closed_is_reset() {
    let hub = spawn_hub_with(|c| {
        c.hub.heartbeat = Duration::from_millis(200);
        c.edge.write_stall_timeout = Duration::from_millis(300);
    })
    .await;
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let mut conn = h2_connection(tcp, Some(1024)).await;
    let authority = hub.addr.to_string();
    let stalled = h2_get(&mut conn, &authority, "/.well-known/mercure?topic=w", &[]).await;
    let mut healthy = hub.subscribe("topic=w").await;
    assert_eq!(hub.stats().await["subscribers"], 2);
    // Enough to close the 1 KiB window, far below the queue bounds.
    let id = hub.publish("w", &"y".repeat(4096)).await;
    assert_eq!(healthy.next().await.id, id);
    within(WAIT, "the stalled stream to be dropped", async {
        while hub.stats().await["subscribers"] != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The connection itself lives on: a new stream on it is served.
    let again = h2_get(&mut conn, &authority, "/healthz", &[]).await;
    assert_eq!(again.status(), 200);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_tls_and_h2c_ports_leaves_the_hub_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::new();
    let tls = tls_hub(&ca.leaf("g"), Duration::from_secs(60), |_| {}).await;
    let plain = spawn_hub_with(|_| {}).await;
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let mut preface_then_junk = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // A frame header claiming 16 MiB of an unknown type on stream 1, then junk.
    preface_then_junk.extend_from_slice(&[0xff, 0xff, 0xff, 0x77, 0xff, 0, 0, 0, 1]);
    preface_then_junk.extend_from_slice(&garbage);
    let inputs: [(SocketAddr, &[u8]); 5] = [
        (tls.hub.addr, &garbage),
        (tls.hub.addr, b"\x16\x03\x01\x00\x05hello"),
        (plain.addr, &preface_then_junk),
        (plain.addr, b"PRI * HTTP/2.0\r\n"),
        (plain.addr, b"PRI * HTTP/1.1\r\n\r\n"),
    ];
    for (addr, input) in inputs {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let _ = tcp.write_all(input).await;
        let _ = tcp.shutdown().await;
        let mut sink = Vec::new();
        let _ = within(
            WAIT,
            "the hub to close a garbage connection",
            tcp.read_to_end(&mut sink),
        )
        .await;
    }
    let https = https_client(&ca, tls.hub.addr, false);
    assert!(https.get("/healthz").await.status.is_success());
    assert!(plain.get("/healthz").await.status.is_success());
}

/// Whether `program` runs (`program --version`).
fn runs(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_twenty_event_sources_over_https_and_each_receives_every_event() {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser_h2");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<&str> = [("node", runs("node")), ("chromium", runs(&chromium))]
        .into_iter()
        .filter_map(|(name, ok)| (!ok).then_some(name))
        .collect();
    if !missing.is_empty() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and {missing:?} missing: install them (apt-get install chromium nodejs npm)");
        }
        eprintln!("SKIPPED: the Chromium test needs {missing:?}; install them to run it");
        return;
    }
    if !folder.join("node_modules/playwright-core").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&folder)
            .status()
            .expect("run npm ci");
        assert!(status.success(), "npm ci in {} failed", folder.display());
    }
    let ca = TestCa::new();
    let hub = tls_hub(&ca.leaf("browser"), Duration::from_secs(60), |_| {}).await;
    let output = within(
        Duration::from_secs(60),
        "the Chromium script",
        tokio::process::Command::new("node")
            .arg(folder.join("twenty_streams.mjs"))
            .arg(format!("https://127.0.0.1:{}", hub.hub.addr.port()))
            .args(["20", "5"])
            .env("CHROMIUM", &chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Chromium script failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    let seen: serde_json::Value = serde_json::from_str(line).expect("the script's JSON line");
    assert_eq!(seen["protocol"], "h2", "{seen}");
    assert_eq!(seen["opened"], 20, "every EventSource opened: {seen}");
    let published = seen["published"].as_array().expect("published ids");
    assert_eq!(published.len(), 5, "{seen}");
    let received = seen["received"].as_array().expect("received ids");
    assert_eq!(received.len(), 20);
    for (i, ids) in received.iter().enumerate() {
        assert_eq!(ids.as_array(), Some(published), "stream {i}: {seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_http2_stream_counts_in_the_connection_limits() {
    // Three per address: the connection and two streams; the third stream is refused.
    let hub = spawn_hub_with(|c| c.edge.max_connections_per_ip = Some(3)).await;
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let mut conn = h2_connection(tcp, None).await;
    let authority = hub.addr.to_string();
    let path = "/.well-known/mercure?topic=limits";
    let first = h2_get(&mut conn, &authority, path, &[]).await;
    let second = h2_get(&mut conn, &authority, path, &[]).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = h2_get(&mut conn, &authority, path, &[]).await;
    assert_eq!(third.status(), 429);
    let reason = third
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    assert!(!reason.is_empty() && !reason[..reason.len() - 1].contains(&b'\n'));
    // A stream that ends gives its slot back.
    drop(first);
    within(WAIT, "the slot to come back", async {
        loop {
            let again = h2_get(&mut conn, &authority, path, &[]).await;
            if again.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_http2_streams_so_clients_resume() {
    let hub = spawn_hub_with(|_| {}).await;
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let mut conn = h2_connection(tcp, None).await;
    let authority = hub.addr.to_string();
    let response = h2_get(&mut conn, &authority, "/.well-known/mercure?topic=bye", &[]).await;
    let mut sse = h2_sse(response);
    let id = hub.publish("bye", "last").await;
    assert_eq!(sse.next().await.id, id);
    let stopping = tokio::spawn(hub.shutdown());
    // The stream ends cleanly (END_STREAM, not a reset), and the hub finishes shutting down.
    assert!(sse.expect_end().await.is_empty());
    within(WAIT, "the hub to stop", stopping)
        .await
        .expect("no panic")
        .expect("a clean shutdown");
    // GOAWAY: the connection takes no new stream.
    let request = hyper::Request::get(format!("http://{authority}/healthz"))
        .body(Empty::new())
        .expect("a request");
    assert!(conn.send_request(request).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_ends_when_its_token_expires() {
    let hub = spawn_hub_with(|c| {
        c.auth.subscriber = Some(KeyConfig {
            algorithm: Algorithm::HS256,
            key: SUB_SECRET.to_owned(),
            jwks: None,
        });
    })
    .await;
    let exp = in_an_hour() - 3600 + 2;
    let token = hs256(
        SUB_SECRET,
        json!({"mercure": {"subscribe": ["*"]}, "exp": exp}),
    );
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let mut conn = h2_connection(tcp, None).await;
    let authority = hub.addr.to_string();
    let auth = format!("Bearer {token}");
    let response = h2_get(
        &mut conn,
        &authority,
        "/.well-known/mercure?topic=exp",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut sse = h2_sse(response);
    let id = hub.publish("exp", "before expiry").await;
    assert_eq!(sse.next().await.id, id);
    assert!(sse.expect_end().await.is_empty(), "ends at exp");
    // The connection serves on.
    assert_eq!(
        h2_get(&mut conn, &authority, "/healthz", &[])
            .await
            .status(),
        200
    );
}
