//! The operator's flags: who may read `/metrics` and `/stats`, and when a node stops being
//! ready (resolved into [`OpsConfig`], which the HTTP layer reads).

use std::time::Duration;

use anyhow::bail;

use super::{file_duration, parse_duration, FileConfig};
use crate::http::admin::OpsConfig;

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
