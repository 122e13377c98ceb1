//! The operator's settings: who may read `/metrics` and `/stats`, and when a node stops being
//! ready.

use std::time::Duration;

use anyhow::bail;

use super::{file_duration, parse_duration, FileConfig};

/// How the hub serves its operators.
#[derive(Clone, PartialEq, Eq)]
pub struct OpsConfig {
    /// When set, `/metrics` and `/stats` answer only requests bearing this token.
    pub metrics_token: Option<String>,
    /// `/readyz` answers 503 once this node's fan-out has stayed behind the log's head, without
    /// moving, for longer than this.
    pub ready_stall: Duration,
}

impl std::fmt::Debug for OpsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsConfig")
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .field("ready_stall", &self.ready_stall)
            .finish()
    }
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            metrics_token: None,
            ready_stall: Duration::from_secs(10),
        }
    }
}

const OPS_HEADING: &str = "Operations";

/// Flags of the operations endpoints (part of `tidings serve`).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct OpsArgs {
    /// Token that /metrics and /stats require (`Authorization: Bearer TOKEN`); `@PATH` reads
    /// it from a file [default: none, anyone who reaches the hub may read them].
    #[arg(long, help_heading = OPS_HEADING, env = "TIDINGS_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// /readyz answers 503 when this node's delivery has stayed behind the log's newest event,
    /// without moving, for longer than this (a stalled node) [default: 10s].
    #[arg(long, help_heading = OPS_HEADING, env = "TIDINGS_READY_STALL", value_parser = parse_duration)]
    pub ready_stall: Option<Duration>,
}

impl OpsArgs {
    /// Merges these flags with the file's keys and the defaults; validates.
    pub(super) fn resolve(self, file: &mut FileConfig) -> anyhow::Result<OpsConfig> {
        let mut ops = OpsConfig::default();
        if let Some(token) = self.metrics_token.or(file.metrics_token.take()) {
            let token = crate::ingest::webhook::read_secret(&token)?;
            if token.len() < 16 {
                bail!("metrics_token must be at least 16 characters long");
            }
            ops.metrics_token = Some(token);
        }
        if let Some(stall) = self
            .ready_stall
            .or(file_duration(file.ready_stall.take(), "ready_stall")?)
        {
            if stall.is_zero() {
                bail!("ready_stall must be longer than zero");
            }
            ops.ready_stall = stall;
        }
        Ok(ops)
    }
}
