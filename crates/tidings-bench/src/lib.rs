//! `tidings-bench`: a load generator for any Server-Sent Events server.
//!
//! - `fanout`: N subscribers (raw HTTP/1.1 over their own TCP connections, spread over
//!   127.0.0.x source addresses; or HTTP/2 streams over a few connections, or HTTP/1.1 over
//!   TLS, through hyper: `transport.rs`) and a publisher pacing M events at R events/s; reports connect
//!   time, publish -> deliver latency, deliveries/s, loss/duplicates/reordering, and the server's
//!   CPU per delivery and memory per subscriber read from /proc.
//! - `throughput`: C concurrent keep-alive publishers sending as fast as acknowledgments come.
//! - `summary`: a markdown table of JSON reports.

pub mod fanout;
pub mod fsync;
pub mod http;
pub mod payload;
pub mod report;
pub mod sse;
pub mod sys;
pub mod throughput;
pub mod transport;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::payload::BodyEncoding;

/// Which topic each event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopicMode {
    /// Always topic 0.
    One,
    /// A uniformly random topic of the K.
    Random,
    /// A random topic among the first --active ones.
    Active,
    /// Topics 0, 1, ..., K-1, 0, ...
    RoundRobin,
}

/// The publish request and the topic choice, shared by both modes.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Publish URL template; `{topic}` is the topic index.
    #[arg(long, default_value = "http://127.0.0.1:8080/.well-known/mercure")]
    pub publish_url: String,
    /// Body template: `{topic}` (index), `{data}` (encoded per --body-encoding), `{seq}`, `{ts}`.
    #[arg(long, default_value = "topic=bench/{topic}&data={data}")]
    pub publish_body: String,
    /// How {data} is written into the body.
    #[arg(long, value_enum, default_value = "form")]
    pub body_encoding: BodyEncoding,
    /// Content-Type of the publish request.
    #[arg(long, default_value = "application/x-www-form-urlencoded")]
    pub content_type: String,
    /// Extra header on publish requests, `Name: value` (repeatable; e.g. Authorization).
    #[arg(long = "publish-header")]
    pub publish_headers: Vec<String>,
    /// Bytes of padding added to each event's data.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Number of topics K (subscriber i listens to topic i % K).
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// How events pick their topic.
    #[arg(long, value_enum, default_value = "one")]
    pub topic_mode: TopicMode,
    /// With --topic-mode active: events go only to the first A topics.
    #[arg(long, default_value_t = 10)]
    pub active: usize,
    /// Seed of the topic choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl PublishArgs {
    pub fn template(&self) -> anyhow::Result<(payload::PublishTemplate, http::Url)> {
        let url = http::Url::parse(&self.publish_url).context("--publish-url")?;
        let t = payload::PublishTemplate {
            target: url.target.clone(),
            host: url.authority.clone(),
            body: self.publish_body.clone(),
            encoding: self.body_encoding,
            content_type: self.content_type.clone(),
            pad: self.payload_bytes,
            headers: self.publish_headers.clone(),
        };
        Ok((t, url))
    }

    /// A topic chooser.
    pub fn chooser(&self) -> impl FnMut(u64) -> usize {
        let k = self.topics.max(1);
        let active = self.active.clamp(1, k);
        let mode = self.topic_mode;
        let mut rng = fastrand::Rng::with_seed(self.seed);
        move |n| match mode {
            TopicMode::One => 0,
            TopicMode::Random => rng.usize(..k),
            TopicMode::Active => rng.usize(..active),
            TopicMode::RoundRobin => (n % k as u64) as usize,
        }
    }

    pub fn mode_name(&self) -> String {
        match self.topic_mode {
            TopicMode::One => "one topic".into(),
            TopicMode::Random => format!("random of {}", self.topics),
            TopicMode::Active => format!("random of the first {}", self.active.min(self.topics)),
            TopicMode::RoundRobin => format!("round robin over {}", self.topics),
        }
    }
}

/// Options about the server being measured and the output.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Pid(s) of the server; CPU and memory are summed over them and their descendants.
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A name for the run, carried into the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

impl CommonArgs {
    pub fn emit<T: serde::Serialize>(&self, report: &T, human: String) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(report)?;
        if let Some(path) = &self.out {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).ok();
            }
            std::fs::write(path, format!("{json}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if self.json {
            println!("{json}");
        } else {
            print!("{human}");
        }
        Ok(())
    }
}
