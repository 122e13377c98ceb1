//! TLS and HTTP/2 settings: the certificate files, cleartext HTTP/2 (h2c) and the streams an
//! HTTP/2 connection may carry at once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use super::{file_duration, parse_duration, FileConfig};
use crate::net::tls::TlsFiles;

/// How connections are spoken to.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolConfig {
    /// Serve TLS with these files (every connection); `None`: cleartext.
    pub tls: Option<TlsFiles>,
    /// Cleartext HTTP/2 with prior knowledge on a listener without TLS.
    pub h2c: bool,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` of HTTP/2 connections.
    pub max_concurrent_streams: u32,
}

/// Default streams per HTTP/2 connection: what browsers expect (at least 100, RFC 9113).
pub const DEFAULT_MAX_STREAMS: u32 = 128;

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            tls: None,
            h2c: true,
            max_concurrent_streams: DEFAULT_MAX_STREAMS,
        }
    }
}

const HEADING: &str = "TLS and HTTP/2";

/// Flags of TLS and HTTP/2 (part of `tidings serve`).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ProtocolArgs {
    /// PEM certificate chain (end-entity first): serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN).
    /// Read again when the file changes or on SIGHUP.
    #[arg(long, help_heading = HEADING, env = "TIDINGS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, help_heading = HEADING, env = "TIDINGS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How often the certificate files are checked for a change [default: 10s].
    #[arg(long, help_heading = HEADING, env = "TIDINGS_TLS_RELOAD_EVERY", value_parser = parse_duration)]
    pub tls_reload_every: Option<Duration>,
    /// Accept cleartext HTTP/2 with prior knowledge (h2c, for proxies) beside HTTP/1.1 when
    /// TLS is off [default: true].
    #[arg(long, help_heading = HEADING, env = "TIDINGS_H2C")]
    pub h2c: Option<bool>,
    /// Most concurrent streams (requests, SSE streams) on one HTTP/2 connection [default: 128].
    #[arg(long, help_heading = HEADING, env = "TIDINGS_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
}

impl ProtocolArgs {
    /// Merges these flags with the file's keys (taken out of it) and the defaults; validates.
    pub(super) fn resolve(self, file: &mut FileConfig) -> anyhow::Result<ProtocolConfig> {
        let mut config = ProtocolConfig::default();
        let reload_every = self
            .tls_reload_every
            .or(file_duration(
                file.tls_reload_every.take(),
                "tls_reload_every",
            )?)
            .unwrap_or(Duration::from_secs(10));
        if reload_every.is_zero() {
            bail!("tls_reload_every must be longer than zero");
        }
        config.tls = match (
            self.tls_cert.or(file.tls_cert.take()),
            self.tls_key.or(file.tls_key.take()),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                reload_every,
            }),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key go together: set both or neither"),
        };
        if let Some(h2c) = self.h2c.or(file.h2c) {
            config.h2c = h2c;
        }
        if let Some(n) = self.max_concurrent_streams.or(file.max_concurrent_streams) {
            if n == 0 {
                bail!("max_concurrent_streams must be at least 1");
            }
            config.max_concurrent_streams = n;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let none = ProtocolArgs::default()
            .resolve(&mut FileConfig::default())
            .unwrap();
        assert_eq!(none, ProtocolConfig::default());
        assert!(none.h2c && none.tls.is_none());
        let half = ProtocolArgs {
            tls_cert: Some("c.pem".into()),
            ..ProtocolArgs::default()
        };
        let err = half.resolve(&mut FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("go together"), "{err}");
        let zero = ProtocolArgs {
            max_concurrent_streams: Some(0),
            ..ProtocolArgs::default()
        };
        assert!(zero.resolve(&mut FileConfig::default()).is_err());
        let both = ProtocolArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            h2c: Some(false),
            ..ProtocolArgs::default()
        };
        let config = both.resolve(&mut FileConfig::default()).unwrap();
        assert_eq!(config.tls.unwrap().reload_every, Duration::from_secs(10));
        assert!(!config.h2c);
    }
}
