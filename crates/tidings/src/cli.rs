//! The command line: `tidings serve`, and the client commands `tidings publish` and
//! `tidings tail` that talk to a running hub over HTTP.

use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::Value;

use crate::config::ServeArgs;
use failure::{Failure, Kind};

pub mod failure;
pub mod pg;
pub mod token;

/// Tidings: a durable real-time event hub (Mercure protocol, Server-Sent Events).
///
/// Start a hub with `tidings serve` (events in ./tidings.db, on http://127.0.0.1:8080), publish
/// with `tidings publish`, watch with `tidings tail`. Exit codes: 1 other, 2 usage or
/// configuration, 3 address unavailable, 4 store unavailable, 5 refused by the hub, 6 hub
/// unreachable.
#[derive(Debug, clap::Parser)]
#[command(name = "tidings", version)]
pub struct Cli {
    /// Log format on stderr: text (coloured on a terminal) or json (one object per line).
    #[arg(
        long,
        env = "TIDINGS_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true,
        display_order = 1000
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    // No doc comments on the values: clap then lists them on one line.
    Text,
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the hub (every flag also reads a TIDINGS_* variable or a key of --config).
    Serve(Box<ServeArgs>),
    /// Publish one event to a running hub and print its id.
    Publish(PublishArgs),
    /// Print a running hub's events as JSON lines (id, topics, type, data); resumes after
    /// the last one it printed when the connection drops.
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
    /// A publisher JWT (needed when the hub has a key: its `mercure.publish` selectors must
    /// cover the topic).
    #[arg(long, env = "TIDINGS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Topic (repeat for alternate topics; the first is canonical).
    #[arg(long, required = true)]
    pub topic: Vec<String>,
    /// The data; `-` reads standard input.
    #[arg(long, default_value = "")]
    pub data: String,
    /// The event type (SSE's `event:`; without it, `message`).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// The event id (the hub makes one when absent; a used id is refused).
    #[arg(long)]
    pub id: Option<String>,
    /// Reconnection delay for clients, in milliseconds.
    #[arg(long)]
    pub retry: Option<u64>,
    /// Deliver only to subscribers whose token authorizes the topic.
    #[arg(long)]
    pub private: bool,
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The hub's URL.
    #[arg(long, env = "TIDINGS_HUB", default_value = "http://127.0.0.1:8080")]
    pub hub: String,
    /// A subscriber JWT: with it, the private events its `mercure.subscribe` selectors cover
    /// are printed too.
    #[arg(long, env = "TIDINGS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Topic selector: an exact topic, `*`, or a URI template such as `jobs/{id}` (repeatable).
    #[arg(long, required = true)]
    pub topic: Vec<String>,
    /// Start after this event id, or `earliest` for all retained history [default: new events
    /// only].
    #[arg(long)]
    pub last_event_id: Option<String>,
    /// Only events of this type (repeatable).
    #[arg(long = "type")]
    pub kind: Vec<String>,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// What to tell a user whose request the hub refused.
fn refusal(what: &str, status: reqwest::StatusCode, text: &str, token: bool) -> Failure {
    let hint = match (status.as_u16(), token) {
        (401, false) => "; this hub needs a token: pass --token or set TIDINGS_TOKEN",
        (401, true) => "; the token was not accepted (signed with the hub's key? expired?)",
        (403, _) => "; the token's selectors do not cover this topic",
        _ => "",
    };
    Failure::new(
        Kind::Refused,
        anyhow!("the hub refused {what} ({status}): {}{hint}", text.trim()),
    )
}

fn unreachable(hub: &str, e: reqwest::Error) -> Failure {
    Failure::new(
        Kind::Unreachable,
        anyhow!("cannot reach the hub at {hub}: {}", error_chain(&e)),
    )
}

/// How long `tail` waits before its `failures`-th retry in a row: 1 s more each time, at most 5.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(u64::from(failures.min(5)))
}

/// An error and its causes on one line (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    text
}

fn with_token(request: reqwest::RequestBuilder, token: &Option<String>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token.trim()),
        None => request,
    }
}

/// `tidings publish`.
pub async fn publish(args: PublishArgs) -> Result<(), Failure> {
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
    let url = format!("{}/.well-known/mercure", args.hub.trim_end_matches('/'));
    let request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    let response = with_token(request, &args.token)
        .send()
        .await
        .map_err(|e| unreachable(&args.hub, e))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(refusal("the event", status, &text, args.token.is_some()));
    }
    println!("{text}");
    Ok(())
}

/// `tidings tail`: long-polls the hub's `/events` (whose answers name each event's topics) and
/// prints each event as a JSON line; on a dropped connection it says so, waits and resumes
/// after the last event it printed.
pub async fn tail(args: TailArgs) -> Result<(), Failure> {
    let client = reqwest::Client::new();
    let mut after = args.last_event_id.clone();
    let mut printed = 0u64;
    let mut failures = 0u32;
    let base = format!("{}/events", args.hub.trim_end_matches('/'));
    loop {
        let mut query: Vec<String> = args
            .topic
            .iter()
            .map(|t| format!("topic={}", percent_encode(t)))
            .chain(
                args.kind
                    .iter()
                    .map(|k| format!("type={}", percent_encode(k))),
            )
            .collect();
        query.push("wait=25".into());
        if let Some(id) = &after {
            query.push(format!("after={}", percent_encode(id)));
        }
        let request = client
            .get(format!("{base}?{}", query.join("&")))
            .timeout(Duration::from_secs(40));
        let response = match with_token(request, &args.token).send().await {
            Ok(response) => response,
            Err(e) if printed == 0 && after == args.last_event_id && failures == 0 => {
                return Err(unreachable(&args.hub, e));
            }
            Err(e) => {
                failures += 1;
                let from = after.as_deref().unwrap_or("now");
                eprintln!(
                    "tidings tail: connection lost ({}); resuming after {from} in {}s",
                    error_chain(&e),
                    backoff(failures).as_secs()
                );
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        };
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            if status.is_server_error() {
                failures += 1;
                eprintln!(
                    "tidings tail: the hub answered {status}: {}; retrying",
                    text.trim()
                );
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
            return Err(refusal(
                "the subscription",
                status,
                &text,
                args.token.is_some(),
            ));
        }
        let page: Value = match response.json().await {
            Ok(page) => page,
            Err(e) => {
                failures += 1;
                let from = after.as_deref().unwrap_or("now");
                eprintln!(
                    "tidings tail: the answer was cut ({}); resuming after {from} in {}s",
                    error_chain(&e),
                    backoff(failures).as_secs()
                );
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        };
        failures = 0;
        if let Some(reset) = page.get("reset").filter(|r| !r.is_null()) {
            eprintln!(
                "tidings tail: history was not available after {}; continuing from the newest event",
                reset["last_event_id"].as_str().unwrap_or("the requested id")
            );
        }
        for event in page["events"].as_array().into_iter().flatten() {
            let line = serde_json::json!({
                "id": event["id"],
                "topics": event["topics"],
                "type": event["type"].as_str().unwrap_or("message"),
                "data": event["data"],
            });
            println!("{line}");
            printed += 1;
            if args.count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
        }
        if let Some(id) = page["last_event_id"].as_str() {
            after = Some(id.to_owned());
        }
    }
}
