//! One typed configuration, parsed and validated once at start-up. Each setting comes from, in
//! order of precedence: a command-line flag, its `TIDINGS_*` environment variable, the TOML file
//! named by `--config`, the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tidings_core::hub::HubOptions;
use tidings_core::log::Retention;
use tidings_core::mailbox::Bounds;
use tidings_core::selector::MAX_SELECTOR_LEN;
use tidings_core::store::sqlite::Durability;

use crate::auth::{parse_algorithm, AuthConfig, KeyConfig};
use crate::ingest::{WebhookConfig, Webhooks};
use crate::net::ServeOptions;

mod edge;
mod ops;
mod protocol;

use crate::ingest::webhook::read_secret;
pub use edge::{EdgeArgs, EdgeConfig};
use edge::{TextList, TextOrNumber};
pub use ops::OpsArgs;
// Kept here too for code that names them by their configuration's path.
pub use crate::http::admin::OpsConfig;
pub use crate::http::limits::Limits;
pub use protocol::{ProtocolArgs, ProtocolConfig};

/// Where events are stored.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// An SQLite file (the embedded default).
    Sqlite {
        path: PathBuf,
        durability: Durability,
    },
    /// A PostgreSQL database (several hubs may share it); the log lives in `schema`
    /// (`tidings` from the command line).
    Postgres { url: String, schema: String },
    /// A Redis server (several hubs may share it); every key starts with `{prefix}:` (the
    /// URL's `prefix` query parameter, default `tidings`).
    Redis { url: String, prefix: String },
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite { path, durability } => f
                .debug_struct("Sqlite")
                .field("path", path)
                .field("durability", durability)
                .finish(),
            Self::Postgres { url, schema } => f
                .debug_struct("Postgres")
                .field("url", &redacted(url))
                .field("schema", schema)
                .finish(),
            Self::Redis { url, prefix } => f
                .debug_struct("Redis")
                .field("url", &redacted(url))
                .field("prefix", prefix)
                .finish(),
        }
    }
}

/// A store URL fit for logs: without its user information (`scheme://***@host...`), or, for
/// PostgreSQL's `key=value` form, with `password=***`.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        (Some(_), None) => url.to_owned(),
        (None, _) => url
            .split_whitespace()
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => "password=***".into(),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

impl StoreConfig {
    /// Parses `--store`: a file path, `sqlite:PATH` or `sqlite://PATH`.
    pub fn parse(s: &str, durability: Durability) -> anyhow::Result<Self> {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(Self::Postgres {
                url: s.to_owned(),
                schema: "tidings".to_owned(),
            });
        }
        if lower.starts_with("redis://") || lower.starts_with("rediss://") {
            return parse_redis(s);
        }
        let path = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
            .unwrap_or(s);
        if path.is_empty() {
            bail!("--store needs a path");
        }
        Ok(Self::Sqlite {
            path: PathBuf::from(path),
            durability,
        })
    }
}

/// A `redis://` or `rediss://` URL, with an optional `prefix=NAME` query parameter that is
/// taken out of the URL handed to the client.
fn parse_redis(s: &str) -> anyhow::Result<StoreConfig> {
    let (base, query) = match s.split_once('?') {
        Some((base, query)) => (base, query),
        None => (s, ""),
    };
    let mut prefix = "tidings".to_owned();
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("prefix=") {
            Some(p) => prefix = p.to_owned(),
            None => rest.push(pair),
        }
    }
    tidings_core::store::redis::check_prefix(&prefix)
        .map_err(|e| anyhow::anyhow!("--store: {e}"))?;
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok(StoreConfig::Redis { url, prefix })
}

/// The validated configuration of `tidings serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub hub: HubOptions,
    pub limits: Limits,
    /// How long shutdown waits for connections to finish.
    pub shutdown_grace: Duration,
    pub auth: AuthConfig,
    /// Publish Mercure subscription events (private) when streams start and end.
    pub subscription_events: bool,
    /// CORS, allowed hosts, connection and publish-rate limits, timeouts.
    pub edge: EdgeConfig,
    /// Webhooks served at `/webhooks/{name}` (the `[webhooks.NAME]` tables of the config file).
    pub webhooks: Webhooks,
    /// `/metrics` and `/stats` access, readiness.
    pub ops: OpsConfig,
    /// TLS, HTTP/2.
    pub protocol: ProtocolConfig,
}

impl Config {
    /// The defaults, with the log at `path`: what tests and embedders start from.
    pub fn with_store_path(path: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            store: StoreConfig::Sqlite {
                path: path.into(),
                durability: Durability::Full,
            },
            hub: HubOptions {
                queue_budget: tidings_core::budget::machine_default(),
                ..HubOptions::default()
            },
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(10),
            auth: AuthConfig::default(),
            subscription_events: false,
            edge: EdgeConfig::default(),
            webhooks: Webhooks::default(),
            ops: OpsConfig::default(),
            protocol: ProtocolConfig::default(),
        }
    }

    /// How the accept loop serves connections.
    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            header_read_timeout: self.edge.header_read_timeout,
            write_stall_timeout: self.edge.write_stall_timeout,
            send_buffer: self.edge.send_buffer,
            grace: self.shutdown_grace,
            h2c: self.protocol.h2c,
            max_concurrent_streams: self.protocol.max_concurrent_streams,
            heartbeat: self.hub.heartbeat,
        }
    }
}

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 15s, 500ms, 7d)"))
}

/// An address to listen on, as people write it: `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` (the
/// host's first address, `localhost` included) or `:PORT` (every IPv4 interface).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let example =
        "expected IP:PORT, HOST:PORT or :PORT (e.g. 127.0.0.1:8080, localhost:8080, :8080)";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?}: no port; {example}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number; {example}"))?;
    if host.is_empty() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    use std::net::ToSocketAddrs;
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve {host:?} ({e}); {example}"))?;
    // IPv4 first: `localhost` is usually both, and clients try 127.0.0.1 first too.
    let all: Vec<SocketAddr> = addrs.by_ref().collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: {host:?} has no address; {example}"))
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "full" => Ok(Durability::Full),
        "normal" => Ok(Durability::Normal),
        _ => Err("expected full or normal".into()),
    }
}

/// Flags of `tidings serve`; each has an environment variable twin.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "TIDINGS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on: IP:PORT, HOST:PORT (localhost:8080) or :PORT (every interface)
    /// [default: 127.0.0.1:8080].
    #[arg(long, env = "TIDINGS_LISTEN", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Event store: an SQLite file path (or sqlite:PATH); postgres://USER:PASSWORD@HOST/DB for
    /// a PostgreSQL cluster; redis://[:PASSWORD@]HOST:PORT/DB (or rediss:// for TLS) for a Redis
    /// cluster. Hubs sharing a PostgreSQL or Redis store form one cluster [default: ./tidings.db].
    #[arg(long, env = "TIDINGS_STORE")]
    pub store: Option<String>,
    /// SQLite durability: full (fsync every group commit) or normal [default: full].
    #[arg(long, env = "TIDINGS_DURABILITY", value_parser = parse_durability)]
    pub durability: Option<Durability>,
    /// PostgreSQL store: the schema holding the log (hubs sharing a log use the same one)
    /// [default: tidings].
    #[arg(long, env = "TIDINGS_PG_SCHEMA")]
    pub pg_schema: Option<String>,
    /// Interval of the SSE comment heartbeat [default: 15s].
    #[arg(long, env = "TIDINGS_HEARTBEAT", value_parser = parse_duration)]
    pub heartbeat: Option<Duration>,
    /// Largest request body in bytes [default: 1048576].
    #[arg(long, env = "TIDINGS_MAX_BODY")]
    pub max_body: Option<usize>,
    /// Most topics on one event [default: 64].
    #[arg(long, env = "TIDINGS_MAX_TOPICS")]
    pub max_topics: Option<usize>,
    /// Most selectors in one subscription [default: 100].
    #[arg(long, env = "TIDINGS_MAX_SELECTORS")]
    pub max_selectors: Option<usize>,
    /// Most bytes of selectors in one subscription; more are answered 400 [default: 16384].
    #[arg(long, env = "TIDINGS_MAX_SELECTOR_BYTES")]
    pub max_selector_bytes: Option<usize>,
    /// Most pattern selectors (*, URI templates, URL patterns) in one subscription; more are
    /// answered 400 [default: 20].
    #[arg(long, env = "TIDINGS_MAX_PATTERNS")]
    pub max_patterns: Option<usize>,
    /// Most bytes of distinct pattern selectors the live subscriptions of one client address may
    /// hold (an IPv6 /64 counts as one); past it, a new subscription is answered 429
    /// [default: 65536].
    #[arg(long, env = "TIDINGS_MAX_PATTERN_BYTES_PER_IP")]
    pub max_pattern_bytes_per_ip: Option<usize>,
    /// Most distinct pattern selectors the live subscriptions of one client address may hold (a
    /// pattern held by several counts once); past it, a new subscription is answered 429
    /// [default: 100].
    #[arg(long, env = "TIDINGS_MAX_PATTERNS_PER_IP")]
    pub max_patterns_per_ip: Option<usize>,
    /// Keep at most this many events [default: unlimited].
    #[arg(long, env = "TIDINGS_RETENTION_EVENTS")]
    pub retention_events: Option<u64>,
    /// Keep events at most this long, e.g. 7d [default: unlimited].
    #[arg(long, env = "TIDINGS_RETENTION_AGE", value_parser = parse_duration)]
    pub retention_age: Option<Duration>,
    /// How often pruning runs [default: 60s].
    #[arg(long, env = "TIDINGS_PRUNE_EVERY", value_parser = parse_duration)]
    pub prune_every: Option<Duration>,
    /// Frames a subscriber may have queued before it is cut off as too slow [default: 4096].
    #[arg(long, env = "TIDINGS_QUEUE_FRAMES")]
    pub queue_frames: Option<usize>,
    /// Bytes a subscriber may have queued before it is cut off as too slow [default: 2097152,
    /// or twice --max-body when that is more].
    #[arg(long, env = "TIDINGS_QUEUE_BYTES")]
    pub queue_bytes: Option<usize>,
    /// Bytes queued to all subscribers together; past it, the subscribers with the largest
    /// backlogs are cut first [default: an eighth of the machine's memory, at least 64 MiB and
    /// at most 4 GiB].
    #[arg(long, env = "TIDINGS_QUEUE_BUDGET")]
    pub queue_budget: Option<usize>,
    /// JWT key for both publishers and subscribers: an HMAC secret (32 bytes or more, e.g.
    /// `openssl rand -hex 32`) or a PEM public key; `@PATH` reads it from a file. Without any
    /// key the hub runs in an open development mode: anyone may publish.
    #[arg(long, env = "TIDINGS_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
    /// Algorithm of --jwt-key: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512,
    /// ES256, ES384 or EdDSA [default: HS256].
    #[arg(long, env = "TIDINGS_JWT_ALG")]
    pub jwt_alg: Option<String>,
    /// JWT key for publishers (overrides --jwt-key); without any, publishing is open (dev mode).
    #[arg(long, env = "TIDINGS_PUBLISHER_JWT_KEY", hide_env_values = true)]
    pub publisher_jwt_key: Option<String>,
    /// Algorithm of --publisher-jwt-key [default: HS256].
    #[arg(long, env = "TIDINGS_PUBLISHER_JWT_ALG")]
    pub publisher_jwt_alg: Option<String>,
    /// JWT key for subscribers (overrides --jwt-key).
    #[arg(long, env = "TIDINGS_SUBSCRIBER_JWT_KEY", hide_env_values = true)]
    pub subscriber_jwt_key: Option<String>,
    /// Algorithm of --subscriber-jwt-key [default: HS256].
    #[arg(long, env = "TIDINGS_SUBSCRIBER_JWT_ALG")]
    pub subscriber_jwt_alg: Option<String>,
    /// Whether subscribers without a token may receive public events [default: true].
    #[arg(long, env = "TIDINGS_ANONYMOUS")]
    pub anonymous: Option<bool>,
    /// Clock skew allowed on a token's exp and nbf [default: 5s].
    #[arg(long, env = "TIDINGS_JWT_LEEWAY", value_parser = parse_duration)]
    pub jwt_leeway: Option<Duration>,
    /// Name of the cookie a token may come in [default: mercureAuthorization].
    #[arg(long, env = "TIDINGS_COOKIE_NAME")]
    pub cookie_name: Option<String>,
    /// Publish Mercure subscription events when streams start and end [default: false].
    #[arg(long, env = "TIDINGS_SUBSCRIPTION_EVENTS")]
    pub subscription_events: Option<bool>,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub protocol: ProtocolArgs,
    /// JWKS document (file path or http(s) URL) for both roles; keys chosen by `kid`, fetched
    /// again on an unknown `kid`. Algorithm from --jwt-alg [default: RS256].
    #[arg(long, env = "TIDINGS_JWKS")]
    pub jwks: Option<String>,
    /// JWKS for publishers (overrides --jwks).
    #[arg(long, env = "TIDINGS_PUBLISHER_JWKS")]
    pub publisher_jwks: Option<String>,
    /// JWKS for subscribers (overrides --jwks).
    #[arg(long, env = "TIDINGS_SUBSCRIBER_JWKS")]
    pub subscriber_jwks: Option<String>,
    /// The hub's resource identifier, e.g. https://hub.example.com/.well-known/mercure: required
    /// in the `aud` of 1.0-draft access tokens (refused without it), checked in a stable-line
    /// token that carries `aud`.
    #[arg(long, env = "TIDINGS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// When set, an access token's `iss` must equal it (and a stable-line token's, if it has one).
    #[arg(long, env = "TIDINGS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accept stable-line Mercure tokens (the `mercure` claim) beside 1.0-draft access tokens
    /// [default: true]; `false` accepts access tokens only.
    #[arg(long, env = "TIDINGS_LEGACY_TOKENS")]
    pub legacy_tokens: Option<bool>,
}

/// The TOML file: the same settings; an unknown key is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    listen: Option<String>,
    store: Option<String>,
    durability: Option<String>,
    pg_schema: Option<String>,
    heartbeat: Option<String>,
    max_body: Option<usize>,
    max_topics: Option<usize>,
    max_selectors: Option<usize>,
    max_selector_bytes: Option<usize>,
    max_patterns: Option<usize>,
    max_pattern_bytes_per_ip: Option<usize>,
    max_patterns_per_ip: Option<usize>,
    retention_events: Option<u64>,
    retention_age: Option<String>,
    prune_every: Option<String>,
    queue_frames: Option<usize>,
    queue_bytes: Option<usize>,
    queue_budget: Option<usize>,
    jwt_key: Option<String>,
    jwt_alg: Option<String>,
    publisher_jwt_key: Option<String>,
    publisher_jwt_alg: Option<String>,
    subscriber_jwt_key: Option<String>,
    subscriber_jwt_alg: Option<String>,
    anonymous: Option<bool>,
    jwt_leeway: Option<String>,
    cookie_name: Option<String>,
    subscription_events: Option<bool>,
    cors_origins: Option<TextList>,
    allowed_hosts: Option<TextList>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    publish_rate: Option<TextOrNumber>,
    publish_burst: Option<u32>,
    header_read_timeout: Option<String>,
    body_read_timeout: Option<String>,
    write_stall_timeout: Option<String>,
    send_buffer: Option<usize>,
    jwks: Option<String>,
    publisher_jwks: Option<String>,
    subscriber_jwks: Option<String>,
    jwt_audience: Option<String>,
    jwt_issuer: Option<String>,
    metrics_token: Option<String>,
    ready_stall: Option<String>,
    legacy_tokens: Option<bool>,
    // TLS and HTTP/2 (protocol.rs).
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_reload_every: Option<String>,
    h2c: Option<bool>,
    max_concurrent_streams: Option<u32>,
    /// `[webhooks.NAME]` tables (file only: no flag or environment variable).
    #[serde(default)]
    webhooks: std::collections::BTreeMap<String, WebhookConfig>,
}

/// A key from its flag value (`@PATH` reads a file) and algorithm name.
fn key_config(
    key: Option<String>,
    jwks: Option<String>,
    alg: Option<String>,
) -> anyhow::Result<Option<KeyConfig>> {
    if let Some(jwks) = jwks {
        if key.is_some() {
            bail!("give a key or a JWKS, not both");
        }
        let algorithm = parse_algorithm(alg.as_deref().unwrap_or("RS256"))?;
        return Ok(Some(KeyConfig {
            algorithm,
            key: String::new(),
            jwks: Some(jwks),
        }));
    }
    let Some(key) = key else {
        if alg.is_some() {
            bail!("an algorithm is set but no key");
        }
        return Ok(None);
    };
    let key = read_secret(&key)?;
    let algorithm = parse_algorithm(alg.as_deref().unwrap_or("HS256"))?;
    Ok(Some(KeyConfig {
        algorithm,
        key,
        jwks: None,
    }))
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

pub(super) fn file_duration(v: Option<String>, key: &str) -> anyhow::Result<Option<Duration>> {
    v.map(|s| parse_duration(&s).map_err(|e| anyhow::anyhow!("config key {key}: {e}")))
        .transpose()
}

impl ServeArgs {
    /// Merges flags, environment (already folded in by clap), file and defaults; validates.
    pub fn resolve(mut self) -> anyhow::Result<Config> {
        let mut file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let edge = std::mem::take(&mut self.edge).resolve(&mut file)?;
        let ops = std::mem::take(&mut self.ops).resolve(&mut file)?;
        let protocol = std::mem::take(&mut self.protocol).resolve(&mut file)?;
        let durability = match self.durability {
            Some(d) => Some(d),
            None => file
                .durability
                .as_deref()
                .map(parse_durability)
                .transpose()
                .map_err(|e| anyhow::anyhow!("config key durability: {e}"))?,
        };
        let store = self
            .store
            .or(file.store)
            .unwrap_or_else(|| "tidings.db".to_owned());
        let mut config = Config::with_store_path("tidings.db");
        config.edge = edge;
        config.ops = ops;
        config.protocol = protocol;
        config.store = StoreConfig::parse(&store, durability.unwrap_or(Durability::Full))?;
        if durability.is_some() && !matches!(config.store, StoreConfig::Sqlite { .. }) {
            // Checked before anything is opened or bound: a setting that would silently do
            // nothing is a mistake worth stopping for.
            bail!(
                "--durability applies to an SQLite store only; PostgreSQL and Redis make a commit \
                 durable by their own settings (synchronous_commit, appendfsync)"
            );
        }
        if let Some(name) = self.pg_schema.or(file.pg_schema) {
            match &mut config.store {
                StoreConfig::Postgres { schema, .. } => *schema = name,
                _ => bail!("--pg-schema applies to a PostgreSQL store (--store postgres://...)"),
            }
        }
        let file_listen = file
            .listen
            .as_deref()
            .map(parse_listen)
            .transpose()
            .map_err(|e| anyhow::anyhow!("config key listen: {e}"))?;
        if let Some(listen) = self.listen.or(file_listen) {
            config.listen = listen;
        }
        let heartbeat = self
            .heartbeat
            .or(file_duration(file.heartbeat, "heartbeat")?);
        if let Some(h) = heartbeat {
            if h.is_zero() {
                bail!("heartbeat must be longer than zero");
            }
            config.hub.heartbeat = h;
        }
        let limits = &mut config.limits;
        limits.max_body = self.max_body.or(file.max_body).unwrap_or(limits.max_body);
        limits.max_topics = self
            .max_topics
            .or(file.max_topics)
            .unwrap_or(limits.max_topics);
        limits.max_selectors = self
            .max_selectors
            .or(file.max_selectors)
            .unwrap_or(limits.max_selectors);
        if limits.max_topics == 0 || limits.max_selectors == 0 || limits.max_body == 0 {
            bail!("max_body, max_topics and max_selectors must be at least 1");
        }
        limits.max_selector_bytes = self
            .max_selector_bytes
            .or(file.max_selector_bytes)
            .unwrap_or(limits.max_selector_bytes);
        limits.max_patterns = self
            .max_patterns
            .or(file.max_patterns)
            .unwrap_or(limits.max_patterns);
        limits.max_pattern_bytes_per_ip = self
            .max_pattern_bytes_per_ip
            .or(file.max_pattern_bytes_per_ip)
            .unwrap_or(limits.max_pattern_bytes_per_ip);
        limits.max_patterns_per_ip = self
            .max_patterns_per_ip
            .or(file.max_patterns_per_ip)
            .unwrap_or(limits.max_patterns_per_ip);
        if limits.max_patterns_per_ip < limits.max_patterns {
            bail!("max_patterns_per_ip must be at least max_patterns");
        }
        if limits.max_pattern_bytes_per_ip < MAX_SELECTOR_LEN || limits.max_selector_bytes == 0 {
            bail!("max_pattern_bytes_per_ip must be at least {MAX_SELECTOR_LEN}, and max_selector_bytes at least 1");
        }
        config.hub.retention = Retention {
            max_events: self.retention_events.or(file.retention_events),
            max_age: self
                .retention_age
                .or(file_duration(file.retention_age, "retention_age")?),
        };
        if let Some(every) = self
            .prune_every
            .or(file_duration(file.prune_every, "prune_every")?)
        {
            if every.is_zero() {
                bail!("prune_every must be longer than zero");
            }
            config.hub.prune_every = every;
        }
        config.hub.mailbox = Bounds {
            frames: self
                .queue_frames
                .or(file.queue_frames)
                .unwrap_or(config.hub.mailbox.frames),
            bytes: self.queue_bytes.or(file.queue_bytes).unwrap_or(
                config
                    .hub
                    .mailbox
                    .bytes
                    .max(config.limits.max_body.saturating_mul(2)),
            ),
        };
        if config.hub.mailbox.frames == 0 || config.hub.mailbox.bytes < config.limits.max_body {
            bail!("queue_frames must be at least 1 and queue_bytes at least max_body");
        }
        match self.queue_budget.or(file.queue_budget) {
            Some(budget) if budget < config.hub.mailbox.bytes => {
                bail!("queue_budget must be at least queue_bytes")
            }
            Some(budget) => config.hub.queue_budget = budget,
            // The machine's default, but never below one subscriber's queue.
            None => config.hub.queue_budget = config.hub.queue_budget.max(config.hub.mailbox.bytes),
        }
        let shared_key = self.jwt_key.or(file.jwt_key);
        let shared_alg = self.jwt_alg.or(file.jwt_alg);
        let shared_jwks = self.jwks.or(file.jwks);
        config.auth.publisher = key_config(
            self.publisher_jwt_key
                .or(file.publisher_jwt_key)
                .or(shared_key.clone()),
            self.publisher_jwks
                .or(file.publisher_jwks)
                .or(shared_jwks.clone()),
            self.publisher_jwt_alg
                .or(file.publisher_jwt_alg)
                .or(shared_alg.clone()),
        )
        .context("publisher JWT key")?;
        config.auth.subscriber = key_config(
            self.subscriber_jwt_key
                .or(file.subscriber_jwt_key)
                .or(shared_key),
            self.subscriber_jwks
                .or(file.subscriber_jwks)
                .or(shared_jwks),
            self.subscriber_jwt_alg
                .or(file.subscriber_jwt_alg)
                .or(shared_alg),
        )
        .context("subscriber JWT key")?;
        config.auth.anonymous = self.anonymous.or(file.anonymous).unwrap_or(true);
        if let Some(leeway) = self
            .jwt_leeway
            .or(file_duration(file.jwt_leeway, "jwt_leeway")?)
        {
            config.auth.leeway = leeway;
        }
        if let Some(name) = self.cookie_name.or(file.cookie_name) {
            config.auth.cookie = name;
        }
        config.auth.audience = self.jwt_audience.or(file.jwt_audience);
        config.auth.issuer = self.jwt_issuer.or(file.jwt_issuer);
        config.auth.legacy_tokens = self.legacy_tokens.or(file.legacy_tokens).unwrap_or(true);
        config.subscription_events = self
            .subscription_events
            .or(file.subscription_events)
            .unwrap_or(false);
        config.webhooks = Webhooks::from_configs(std::mem::take(&mut file.webhooks))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::cors::CorsOrigins;
    use crate::http::host::AllowedHosts;
    use crate::http::rate::PublishRate;

    #[test]
    fn listen_takes_the_addresses_people_write() {
        let at = |s: &str| parse_listen(s).map(|a| a.to_string());
        assert_eq!(at("127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(at("[::1]:8080").unwrap(), "[::1]:8080");
        assert_eq!(at(":8080").unwrap(), "0.0.0.0:8080");
        assert_eq!(at("localhost:8080").unwrap(), "127.0.0.1:8080");
        assert!(at("8080").unwrap_err().contains("no port"));
        assert!(at("localhost:http")
            .unwrap_err()
            .contains("not a port number"));
        assert!(at(":99999").is_err());
    }

    #[test]
    fn defaults_are_the_embedded_hub_on_8080() {
        let config = ServeArgs::default().resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            config.store,
            StoreConfig::Sqlite {
                path: "tidings.db".into(),
                durability: Durability::Full
            }
        );
        assert_eq!(config.hub.heartbeat, Duration::from_secs(15));
    }

    #[test]
    fn flags_override_the_file_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nheartbeat = \"5s\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            heartbeat: Some(Duration::from_secs(1)),
            ..ServeArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.hub.heartbeat, Duration::from_secs(1));

        std::fs::write(&file, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        let err = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
    }

    #[test]
    fn durability_applies_to_sqlite_only() {
        let resolve = |store: &str, durability| {
            ServeArgs {
                store: Some(store.into()),
                durability: Some(durability),
                ..ServeArgs::default()
            }
            .resolve()
        };
        assert!(resolve("x.db", Durability::Normal).is_ok());
        for store in ["postgres://h/db", "redis://h/0"] {
            for durability in [Durability::Normal, Durability::Full] {
                let err = resolve(store, durability).unwrap_err().to_string();
                assert!(err.contains("SQLite store only"), "{err}");
            }
        }
        let plain = ServeArgs {
            store: Some("redis://h/0".into()),
            ..ServeArgs::default()
        };
        assert!(plain.resolve().is_ok());
    }

    #[test]
    fn store_urls_never_show_passwords() {
        assert_eq!(
            redacted("postgres://app:s3cret@db:5432/x?sslmode=require"),
            "postgres://***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redacted("host=db password=s3cret user=app"),
            "host=db password=*** user=app"
        );
        assert_eq!(redacted("redis://db:6379/0"), "redis://db:6379/0");
    }

    #[test]
    fn store_urls() {
        let d = Durability::Full;
        assert!(matches!(
            StoreConfig::parse("sqlite:///tmp/x.db", d).unwrap(),
            StoreConfig::Sqlite { path, .. } if path == Path::new("/tmp/x.db")
        ));
        let pg = StoreConfig::parse("postgres://app:s3cret@localhost/test", d).unwrap();
        assert!(matches!(&pg, StoreConfig::Postgres { url, .. } if url.ends_with("/test")));
        assert!(!format!("{pg:?}").contains("s3cret"), "{pg:?}");
        assert!(StoreConfig::parse("", d).is_err());
    }

    #[test]
    fn redis_store_urls() {
        let d = Durability::Full;
        let r = StoreConfig::parse("redis://:s3cret@10.0.0.5:6380/2", d).unwrap();
        assert_eq!(
            r,
            StoreConfig::Redis {
                url: "redis://:s3cret@10.0.0.5:6380/2".into(),
                prefix: "tidings".into()
            }
        );
        assert!(!format!("{r:?}").contains("s3cret"), "{r:?}");
        let r = StoreConfig::parse("rediss://u:pw@h/0?prefix=orders&protocol=resp3", d).unwrap();
        assert_eq!(
            r,
            StoreConfig::Redis {
                url: "rediss://u:pw@h/0?protocol=resp3".into(),
                prefix: "orders".into()
            }
        );
        assert!(!format!("{r:?}").contains("pw@"), "{r:?}");
        for bad in [
            "redis://h?prefix=",
            "redis://h?prefix=a b",
            "redis://h?prefix={x}",
        ] {
            assert!(StoreConfig::parse(bad, d).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn edge_settings_default_to_open_with_timeouts() {
        let edge = ServeArgs::default().resolve().unwrap().edge;
        assert_eq!(edge, EdgeConfig::default());
        assert_eq!(edge.cors, CorsOrigins::SameOrigin);
        assert_eq!(edge.allowed_hosts, None);
        assert_eq!(edge.header_read_timeout, Duration::from_secs(10));
        assert_eq!(edge.write_stall_timeout, Duration::from_secs(30));
        assert_eq!(edge.body_read_timeout, Duration::from_secs(60));
    }

    #[test]
    fn edge_settings_from_flags_and_the_file() {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            r#"
cors_origins = ["https://app.example.com", "https://*.example.org"]
allowed_hosts = "hub.example.com, *.example.net"
max_connections = 1000
max_connections_per_ip = 20
publish_rate = 600
header_read_timeout = "5s"
body_read_timeout = "20s"
write_stall_timeout = "1m"
"#,
        )
        .unwrap();
        let parsed = <Serve as clap::Parser>::try_parse_from([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--max-connections",
            "10",
            "--publish-rate",
            "600/min",
            "--publish-burst",
            "50",
        ])
        .unwrap();
        let edge = parsed.args.resolve().unwrap().edge;
        assert!(matches!(&edge.cors, CorsOrigins::List(list) if list.len() == 2));
        assert_eq!(
            edge.allowed_hosts,
            Some(AllowedHosts::parse("hub.example.com *.example.net").unwrap())
        );
        assert_eq!(edge.max_connections, Some(10), "the flag wins");
        assert_eq!(edge.max_connections_per_ip, Some(20));
        assert_eq!(
            edge.publish_rate,
            Some(PublishRate {
                per_second: 10.0,
                burst: 50
            })
        );
        assert_eq!(edge.header_read_timeout, Duration::from_secs(5));
        assert_eq!(edge.body_read_timeout, Duration::from_secs(20));
        assert_eq!(edge.write_stall_timeout, Duration::from_secs(60));

        let star = <Serve as clap::Parser>::try_parse_from(["serve", "--cors-origins", "*"]);
        assert_eq!(
            star.unwrap().args.resolve().unwrap().edge.cors,
            CorsOrigins::Any
        );
        assert!(<Serve as clap::Parser>::try_parse_from([
            "serve",
            "--cors-origins",
            "*, https://a.com"
        ])
        .is_err());
        assert!(
            <Serve as clap::Parser>::try_parse_from(["serve", "--allowed-hosts", "a b/c"]).is_err()
        );
    }

    #[test]
    fn webhooks_come_from_the_file_and_stay_strict() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        let resolve = |text: &str| {
            std::fs::write(&file, text).unwrap();
            ServeArgs {
                config: Some(file.clone()),
                ..ServeArgs::default()
            }
            .resolve()
        };
        assert!(resolve("").unwrap().webhooks.is_empty());
        let config = resolve(
            r#"
listen = "127.0.0.1:9000"

[webhooks.gpu]
scheme = "standard"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
topic = "jobs/{/id}"
type_from = "/status"

[webhooks.gpu.type_map]
COMPLETED = "completed"
"#,
        )
        .unwrap();
        assert_eq!(config.webhooks.names().collect::<Vec<_>>(), ["gpu"]);
        let err = resolve(
            "[webhooks.gpu]\nscheme = \"github\"\nsecret = \"s\"\ntopic = \"t\"\nsecert = \"x\"\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        let err = resolve("[webhooks.gpu]\nscheme = \"github\"\ntopic = \"t\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("webhook gpu"), "{err:#}");
    }

    #[test]
    fn queue_and_socket_bounds() {
        let config = ServeArgs::default().resolve().unwrap();
        assert_eq!(config.hub.mailbox.bytes, 2 << 20);
        assert_eq!(
            config.hub.queue_budget,
            tidings_core::budget::machine_default()
        );
        assert_eq!(config.edge.send_buffer, Some(256 << 10));
        let config = ServeArgs {
            max_body: Some(3 << 20),
            queue_budget: Some(64 << 20),
            edge: EdgeArgs {
                send_buffer: Some(0),
                ..EdgeArgs::default()
            },
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.hub.mailbox.bytes, 6 << 20, "twice a larger max_body");
        assert_eq!(config.hub.queue_budget, 64 << 20);
        assert_eq!(config.serve_options().send_buffer, None, "0: the kernel's");
    }

    #[test]
    fn selector_limits_from_flags_and_the_file() {
        let defaults = ServeArgs::default().resolve().unwrap().limits;
        assert_eq!(
            (
                defaults.max_selector_bytes,
                defaults.max_patterns,
                defaults.max_pattern_bytes_per_ip,
                defaults.max_patterns_per_ip
            ),
            (16384, 20, 65536, 100)
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "max_patterns = 5\nmax_patterns_per_ip = 50\n").unwrap();
        let limits = ServeArgs {
            config: Some(file.clone()),
            max_patterns_per_ip: Some(10),
            max_pattern_bytes_per_ip: Some(4096),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap()
        .limits;
        assert_eq!(limits.max_patterns, 5);
        assert_eq!(limits.max_patterns_per_ip, 10, "the flag wins");
        assert_eq!(limits.max_pattern_bytes_per_ip, 4096);
        for bad in [
            "max_patterns = 200",
            "max_pattern_bytes_per_ip = 100",
            "max_selector_bytes = 0",
        ] {
            std::fs::write(&file, bad).unwrap();
            let resolved = ServeArgs {
                config: Some(file.clone()),
                ..ServeArgs::default()
            }
            .resolve();
            assert!(resolved.is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn bad_edge_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        for bad in [
            "cors_origins = \"*, https://a.com\"",
            "cors_origins = [\"example.com\"]",
            "allowed_hosts = []",
            "max_connections = 0",
            "max_connections_per_ip = 0",
            "publish_burst = 5",
            "publish_rate = 0",
            "publish_rate = \"5/day\"",
            "header_read_timeout = \"0s\"",
            "body_read_timeout = \"0s\"",
            "write_stall_timeout = \"soon\"",
            "send_buffer = 100",
            "queue_bytes = 4194304\nqueue_budget = 1048576",
        ] {
            std::fs::write(&file, bad).unwrap();
            let resolved = ServeArgs {
                config: Some(file.clone()),
                ..ServeArgs::default()
            }
            .resolve();
            assert!(resolved.is_err(), "{bad} was accepted");
        }
    }
}
