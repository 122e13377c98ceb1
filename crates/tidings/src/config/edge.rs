//! The browser and network edges' settings: CORS, allowed hosts, connection and publish-rate
//! limits, timeouts.

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::{file_duration, parse_duration, FileConfig};
use crate::http::cors::CorsOrigins;
use crate::http::host::AllowedHosts;
use crate::http::rate::PublishRate;

/// The browser and network edges: which pages may call the hub, for which host names, how many
/// connections and publishes it takes, and how long it waits on a peer.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// Origins whose pages may read the hub's answers (CORS); by default, same origin only.
    pub cors: CorsOrigins,
    /// Host names the hub answers for; `None`: any.
    pub allowed_hosts: Option<AllowedHosts>,
    /// Open connections in total (503 past it); `None`: unlimited.
    pub max_connections: Option<usize>,
    /// Open connections per client address, IPv4 or IPv6 /64 (429 past it); `None`: unlimited.
    pub max_connections_per_ip: Option<usize>,
    /// Publish requests per publisher token, or per client address without one (429 past it);
    /// `None`: unlimited.
    pub publish_rate: Option<PublishRate>,
    /// A connection must send a request's header within this.
    pub header_read_timeout: Duration,
    /// A client must send a whole request body (a publish, a webhook delivery) within this.
    pub body_read_timeout: Duration,
    /// A connection whose peer accepts no bytes for this long is cut; a live stream whose
    /// backlog is not all written within this is cut.
    pub write_stall_timeout: Duration,
    /// `SO_SNDBUF` of accepted sockets (Linux doubles it); `None`: the kernel's autotuning.
    pub send_buffer: Option<usize>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            cors: CorsOrigins::SameOrigin,
            allowed_hosts: None,
            max_connections: None,
            max_connections_per_ip: None,
            publish_rate: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            write_stall_timeout: Duration::from_secs(30),
            send_buffer: Some(DEFAULT_SEND_BUFFER),
        }
    }
}

const EDGE_HEADING: &str = "Browser and network edges";

/// Default `SO_SNDBUF`: 256 KiB (512 KiB of kernel memory once Linux doubles it), enough for
/// ~40 Mbit/s at 100 ms round trip per stream.
pub const DEFAULT_SEND_BUFFER: usize = 256 << 10;

/// The smallest `--send-buffer` taken (Linux rounds smaller values up to about this anyway).
const MIN_SEND_BUFFER: usize = 4096;

/// Flags of the browser and network edges (part of `tidings serve`).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Origins whose pages may call the hub (CORS), separated by commas: exact
    /// (https://app.example.com, sent credentials), wildcard subdomains (https://*.example.com), or
    /// * for any origin without credentials [default: none, same origin only].
    #[arg(long, help_heading = EDGE_HEADING, env = "TIDINGS_CORS_ORIGINS", value_parser = CorsOrigins::parse)]
    pub cors_origins: Option<CorsOrigins>,
    /// Host names the hub answers for, separated by commas: exact (hub.example.com, optionally
    /// with :PORT) or wildcard subdomains (*.example.com); others get 421 [default: any].
    #[arg(long, help_heading = EDGE_HEADING, env = "TIDINGS_ALLOWED_HOSTS", value_parser = AllowedHosts::parse)]
    pub allowed_hosts: Option<AllowedHosts>,
    /// Most open connections, SSE streams included; more are answered 503 [default: unlimited].
    #[arg(long, help_heading = EDGE_HEADING, env = "TIDINGS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most open connections from one client address (an IPv6 /64 counts as one); more are
    /// answered 429 [default: unlimited].
    #[arg(long, help_heading = EDGE_HEADING, env = "TIDINGS_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Publish requests allowed per publisher token (per client address without one), e.g.
    /// 10/s or 600/min; more are answered 429 [default: unlimited].
    #[arg(long, help_heading = EDGE_HEADING, env = "TIDINGS_PUBLISH_RATE")]
    pub publish_rate: Option<String>,
    /// Publish requests a publisher may make at once, before the rate applies [default: one
    /// second's worth of --publish-rate, at least 1].
    #[arg(long, help_heading = EDGE_HEADING, env = "TIDINGS_PUBLISH_BURST")]
    pub publish_burst: Option<u32>,
    /// Time a client has to send a request's header [default: 10s].
    #[arg(long, help_heading = EDGE_HEADING, env = "TIDINGS_HEADER_READ_TIMEOUT", value_parser = parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// Time a client has to send a whole request body, however slowly it trickles; 408 after it
    /// [default: 60s].
    #[arg(long, help_heading = EDGE_HEADING, env = "TIDINGS_BODY_READ_TIMEOUT", value_parser = parse_duration)]
    pub body_read_timeout: Option<Duration>,
    /// A connection whose peer accepts no bytes for this long is cut; a live stream is cut
    /// when the bytes waiting for it are not all written within it, so a trickle does not
    /// count as reading [default: 30s].
    #[arg(long, help_heading = EDGE_HEADING, env = "TIDINGS_WRITE_STALL_TIMEOUT", value_parser = parse_duration)]
    pub write_stall_timeout: Option<Duration>,
    /// Kernel send buffer of each connection in bytes (SO_SNDBUF; Linux doubles it), so a
    /// subscriber that stops reading is noticed by its queue bounds rather than hidden in
    /// kernel memory; 0 leaves it to the kernel's autotuning [default: 262144].
    #[arg(long, help_heading = EDGE_HEADING, env = "TIDINGS_SEND_BUFFER")]
    pub send_buffer: Option<usize>,
}

/// A TOML value given as one string (`"a, b"`) or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum TextList {
    One(String),
    Many(Vec<String>),
}

impl TextList {
    fn joined(self) -> String {
        match self {
            Self::One(s) => s,
            Self::Many(list) => list.join(","),
        }
    }
}

/// A TOML value given as a number or a string (`10` or `"600/min"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum TextOrNumber {
    Text(String),
    Number(f64),
}

impl EdgeArgs {
    /// Merges these flags with the file's keys (taken out of it) and the defaults; validates.
    pub(super) fn resolve(self, file: &mut FileConfig) -> anyhow::Result<EdgeConfig> {
        let mut edge = EdgeConfig::default();
        let key_error = |key: &str, e: String| anyhow::anyhow!("config key {key}: {e}");
        if let Some(cors) = self.cors_origins {
            edge.cors = cors;
        } else if let Some(list) = file.cors_origins.take() {
            edge.cors =
                CorsOrigins::parse(&list.joined()).map_err(|e| key_error("cors_origins", e))?;
        }
        edge.allowed_hosts = match (self.allowed_hosts, file.allowed_hosts.take()) {
            (Some(hosts), _) => Some(hosts),
            (None, Some(list)) => Some(
                AllowedHosts::parse(&list.joined()).map_err(|e| key_error("allowed_hosts", e))?,
            ),
            (None, None) => None,
        };
        edge.max_connections = self.max_connections.or(file.max_connections);
        edge.max_connections_per_ip = self.max_connections_per_ip.or(file.max_connections_per_ip);
        if edge.max_connections == Some(0) || edge.max_connections_per_ip == Some(0) {
            bail!("max_connections and max_connections_per_ip must be at least 1");
        }
        let rate = self.publish_rate.or(match file.publish_rate.take() {
            Some(TextOrNumber::Text(s)) => Some(s),
            Some(TextOrNumber::Number(n)) => Some(n.to_string()),
            None => None,
        });
        let burst = self.publish_burst.or(file.publish_burst);
        edge.publish_rate = match rate {
            Some(rate) => {
                Some(PublishRate::parse(&rate, burst).map_err(|e| key_error("publish_rate", e))?)
            }
            None if burst.is_some() => bail!("publish_burst is set but no publish_rate"),
            None => None,
        };
        let durations = [
            (
                self.header_read_timeout,
                file.header_read_timeout.take(),
                "header_read_timeout",
                &mut edge.header_read_timeout,
            ),
            (
                self.body_read_timeout,
                file.body_read_timeout.take(),
                "body_read_timeout",
                &mut edge.body_read_timeout,
            ),
            (
                self.write_stall_timeout,
                file.write_stall_timeout.take(),
                "write_stall_timeout",
                &mut edge.write_stall_timeout,
            ),
        ];
        match self.send_buffer.or(file.send_buffer) {
            Some(0) => edge.send_buffer = None,
            Some(n) if n < MIN_SEND_BUFFER => {
                bail!("send_buffer must be 0 (the kernel's default) or at least {MIN_SEND_BUFFER}")
            }
            Some(n) => edge.send_buffer = Some(n),
            None => {}
        }
        for (flag, in_file, key, slot) in durations {
            if let Some(d) = flag.or(file_duration(in_file, key)?) {
                if d.is_zero() {
                    bail!("{key} must be longer than zero");
                }
                *slot = d;
            }
        }
        Ok(edge)
    }
}
