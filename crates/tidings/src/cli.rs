//! The command line: `tidings serve`, and the client commands `tidings publish` and
//! `tidings tail` that talk to a running hub over HTTP.

use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;

use crate::config::ServeArgs;

pub mod pg;
pub mod token;

/// Tidings: a durable real-time event hub (Mercure protocol, SSE).
#[derive(Debug, clap::Parser)]
#[command(name = "tidings", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the hub.
    Serve(Box<ServeArgs>),
    /// Publish one event to a running hub and print its id.
    Publish(PublishArgs),
    /// Subscribe to a running hub and print events as JSON lines; reconnects and resumes.
    Tail(TailArgs),
    /// PostgreSQL store tools: table-change watches (`watch`, `unwatch`, `watches`).
    Pg(pg::PgArgs),
    /// Mint a development token (stable-line `mercure` claim, or --draft access token).
    Token(Box<token::TokenArgs>),
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The hub's URL.
    #[arg(long, env = "TIDINGS_HUB", default_value = "http://127.0.0.1:8080")]
    pub hub: String,
    /// Topic (repeat for alternate topics; the first is canonical).
    #[arg(long, required = true)]
    pub topic: Vec<String>,
    /// The data; `-` reads standard input.
    #[arg(long, default_value = "")]
    pub data: String,
    /// The event type.
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// The event id (the hub makes one when absent).
    #[arg(long)]
    pub id: Option<String>,
    /// Reconnection delay for clients, in milliseconds.
    #[arg(long)]
    pub retry: Option<u64>,
    /// Deliver only to subscribers authorized for the topic.
    #[arg(long)]
    pub private: bool,
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The hub's URL.
    #[arg(long, env = "TIDINGS_HUB", default_value = "http://127.0.0.1:8080")]
    pub hub: String,
    /// Topic selector: an exact topic, `*`, or a URI template (repeatable).
    #[arg(long, required = true)]
    pub topic: Vec<String>,
    /// Start after this event id, or `earliest` for all retained history.
    #[arg(long)]
    pub last_event_id: Option<String>,
    /// Only events of this type (repeatable).
    #[arg(long = "type")]
    pub kind: Vec<String>,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

fn endpoint(hub: &str) -> String {
    format!("{}/.well-known/mercure", hub.trim_end_matches('/'))
}

/// `tidings publish`.
pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let data = if args.data == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        args.data
    };
    let mut form: Vec<(&str, String)> = args.topic.iter().map(|t| ("topic", t.clone())).collect();
    form.push(("data", data));
    form.extend(args.kind.map(|k| ("type", k)));
    form.extend(args.id.map(|i| ("id", i)));
    form.extend(args.retry.map(|r| ("retry", r.to_string())));
    if args.private {
        form.push(("private", "on".into()));
    }
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let response = reqwest::Client::new()
        .post(endpoint(&args.hub))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .with_context(|| format!("connecting to {}", args.hub))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("the hub refused the event ({status}): {}", text.trim());
    }
    println!("{text}");
    Ok(())
}

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `tidings tail`: prints each event as a JSON line; on a dropped connection it waits the
/// server's retry delay and resumes after the last event it printed.
pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut last_id = args.last_event_id.clone();
    let mut printed = 0u64;
    let mut retry = Duration::from_secs(1);
    loop {
        let query: Vec<String> = (args
            .topic
            .iter()
            .map(|t| format!("topic={}", percent_encode(t))))
        .chain(
            args.kind
                .iter()
                .map(|k| format!("type={}", percent_encode(k))),
        )
        .collect();
        let url = format!("{}?{}", endpoint(&args.hub), query.join("&"));
        let mut request = client.get(url);
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                let mut events =
                    eventsource_stream::Eventsource::eventsource(response.bytes_stream());
                while let Some(item) = events.next().await {
                    let Ok(event) = item else { break };
                    if let Some(r) = event.retry {
                        retry = r;
                    }
                    if !event.id.is_empty() {
                        last_id = Some(event.id.clone());
                    }
                    let line = serde_json::json!({
                        "id": event.id,
                        "type": event.event,
                        "data": event.data,
                    });
                    println!("{line}");
                    printed += 1;
                    if args.count.is_some_and(|n| printed >= n) {
                        return Ok(());
                    }
                }
                eprintln!("tidings tail: stream ended; resuming after {last_id:?}");
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                bail!(
                    "the hub refused the subscription ({status}): {}",
                    text.trim()
                );
            }
            Err(e) => eprintln!("tidings tail: {e}; retrying in {retry:?}"),
        }
        tokio::time::sleep(retry).await;
    }
}
