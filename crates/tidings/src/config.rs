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
use tidings_core::store::sqlite::Durability;

use crate::auth::{parse_algorithm, AuthConfig, KeyConfig};

/// Where events are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// An SQLite file (the embedded default).
    Sqlite {
        path: PathBuf,
        durability: Durability,
    },
}

impl StoreConfig {
    /// Parses `--store`: a file path, `sqlite:PATH` or `sqlite://PATH`.
    pub fn parse(s: &str, durability: Durability) -> anyhow::Result<Self> {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            bail!("the PostgreSQL store is not available in this build yet; use an SQLite path");
        }
        if lower.starts_with("redis://") || lower.starts_with("rediss://") {
            bail!("the Redis store is not available in this build yet; use an SQLite path");
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

/// Limits on what clients may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Most topics on one event.
    pub max_topics: usize,
    /// Most events in one JSON batch.
    pub max_batch: usize,
    /// Most selectors in one subscription.
    pub max_selectors: usize,
    /// Longest long-poll wait.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            max_topics: 64,
            max_batch: 1000,
            max_selectors: 100,
            max_wait: Duration::from_secs(60),
        }
    }
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
            hub: HubOptions::default(),
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(10),
            auth: AuthConfig::default(),
            subscription_events: false,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 15s, 500ms, 7d)"))
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
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TIDINGS_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Event store: an SQLite file path (or sqlite:PATH) [default: ./tidings.db].
    #[arg(long, env = "TIDINGS_STORE")]
    pub store: Option<String>,
    /// SQLite durability: full (fsync every group commit) or normal [default: full].
    #[arg(long, env = "TIDINGS_DURABILITY", value_parser = parse_durability)]
    pub durability: Option<Durability>,
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
    /// Bytes a subscriber may have queued before it is cut off as too slow [default: 8388608].
    #[arg(long, env = "TIDINGS_QUEUE_BYTES")]
    pub queue_bytes: Option<usize>,
    /// JWT key for both publishers and subscribers: an HMAC secret (32 bytes or more) or a PEM
    /// public key; `@PATH` reads it from a file.
    #[arg(long, env = "TIDINGS_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
    /// Algorithm of --jwt-key [default: HS256].
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
}

/// The TOML file: the same settings; an unknown key is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    store: Option<String>,
    durability: Option<String>,
    heartbeat: Option<String>,
    max_body: Option<usize>,
    max_topics: Option<usize>,
    max_selectors: Option<usize>,
    retention_events: Option<u64>,
    retention_age: Option<String>,
    prune_every: Option<String>,
    queue_frames: Option<usize>,
    queue_bytes: Option<usize>,
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
}

/// A key from its flag value (`@PATH` reads a file) and algorithm name.
fn key_config(key: Option<String>, alg: Option<String>) -> anyhow::Result<Option<KeyConfig>> {
    let Some(key) = key else {
        if alg.is_some() {
            bail!("an algorithm is set but no key");
        }
        return Ok(None);
    };
    let key = match key.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading the key file {path}"))?
        }
        None => key,
    };
    let algorithm = parse_algorithm(alg.as_deref().unwrap_or("HS256"))?;
    Ok(Some(KeyConfig { algorithm, key }))
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

fn file_duration(v: Option<String>, key: &str) -> anyhow::Result<Option<Duration>> {
    v.map(|s| parse_duration(&s).map_err(|e| anyhow::anyhow!("config key {key}: {e}")))
        .transpose()
}

impl ServeArgs {
    /// Merges flags, environment (already folded in by clap), file and defaults; validates.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let durability = match self.durability {
            Some(d) => d,
            None => match file.durability {
                Some(s) => parse_durability(&s)
                    .map_err(|e| anyhow::anyhow!("config key durability: {e}"))?,
                None => Durability::Full,
            },
        };
        let store = self
            .store
            .or(file.store)
            .unwrap_or_else(|| "tidings.db".to_owned());
        let mut config = Config::with_store_path("tidings.db");
        config.store = StoreConfig::parse(&store, durability)?;
        if let Some(listen) = self.listen.or(file.listen) {
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
            bytes: self
                .queue_bytes
                .or(file.queue_bytes)
                .unwrap_or(config.hub.mailbox.bytes),
        };
        if config.hub.mailbox.frames == 0 || config.hub.mailbox.bytes < config.limits.max_body {
            bail!("queue_frames must be at least 1 and queue_bytes at least max_body");
        }
        let shared_key = self.jwt_key.or(file.jwt_key);
        let shared_alg = self.jwt_alg.or(file.jwt_alg);
        config.auth.publisher = key_config(
            self.publisher_jwt_key
                .or(file.publisher_jwt_key)
                .or(shared_key.clone()),
            self.publisher_jwt_alg
                .or(file.publisher_jwt_alg)
                .or(shared_alg.clone()),
        )
        .context("publisher JWT key")?;
        config.auth.subscriber = key_config(
            self.subscriber_jwt_key
                .or(file.subscriber_jwt_key)
                .or(shared_key),
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
        config.subscription_events = self
            .subscription_events
            .or(file.subscription_events)
            .unwrap_or(false);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn store_urls() {
        let d = Durability::Full;
        assert!(matches!(
            StoreConfig::parse("sqlite:///tmp/x.db", d).unwrap(),
            StoreConfig::Sqlite { path, .. } if path == Path::new("/tmp/x.db")
        ));
        assert!(StoreConfig::parse("postgres://localhost/test", d).is_err());
        assert!(StoreConfig::parse("", d).is_err());
    }
}
