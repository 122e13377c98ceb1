//! `tidings pg ...`: installs and removes table-change watches in a PostgreSQL store, and lists
//! them. They talk to the database, not to a hub; the schema is migrated first, so they work
//! before any hub has started.

use anyhow::anyhow;
use tidings_core::log::LogError;
use tidings_core::store::postgres::watch::{self, WatchSpec};
use tidings_core::store::postgres::{connect_migrated, PostgresOptions};
use tidings_core::store::sqlite::Durability;

use super::failure::{Failure, Kind};
use crate::config::StoreConfig;

/// A store error of `tidings pg`: a user's mistake (a column the table lacks) is a usage error,
/// anything else the store's.
fn failed(e: LogError) -> Failure {
    match e {
        LogError::Invalid(_) => Failure::new(Kind::Config, e),
        e => Failure::new(Kind::Store, e),
    }
}

#[derive(Debug, clap::Args)]
pub struct PgArgs {
    /// The PostgreSQL store: a postgres:// URL, as given to `tidings serve --store`.
    #[arg(long, env = "TIDINGS_STORE", global = true)]
    pub store: Option<String>,
    /// The schema holding the log [default: tidings].
    #[arg(long, env = "TIDINGS_PG_SCHEMA", global = true)]
    pub pg_schema: Option<String>,
    #[command(subcommand)]
    pub command: PgCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PgCommand {
    /// Publish an event for each insert and qualifying update of TABLE (a trigger writing to the
    /// outbox, in the application's transaction).
    Watch(WatchArgs),
    /// Remove the watch on TABLE.
    Unwatch {
        /// The table: `name` or `schema.name`.
        table: String,
    },
    /// List the installed watches.
    Watches,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The table: `name` (looked up in `public`) or `schema.name`.
    pub table: String,
    /// The topic; `{column}` is replaced by the row's value, as `sessions/{session_id}`.
    #[arg(long)]
    pub topic: String,
    /// The columns sent as the event's data, a JSON object (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub columns: Vec<String>,
    /// Publish an update only when one of these columns changed (comma-separated); by default
    /// every update publishes.
    #[arg(long, value_delimiter = ',')]
    pub when_changed: Vec<String>,
    /// The event type (none by default, so `EventSource.onmessage` sees the events).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Deliver only to subscribers authorized for the topic.
    #[arg(long)]
    pub private: bool,
}

/// `tidings pg ...`.
pub async fn run(args: PgArgs) -> Result<(), Failure> {
    let store = args
        .store
        .as_deref()
        .map(|s| StoreConfig::parse(s, Durability::Full));
    let Some(Ok(StoreConfig::Postgres { url, .. })) = store else {
        return Err(Failure::new(
            Kind::Config,
            anyhow!("tidings pg needs --store postgres://... (or TIDINGS_STORE)"),
        ));
    };
    let mut options = PostgresOptions::new(url);
    if let Some(schema) = args.pg_schema {
        options = options.schema(schema);
    }
    let mut client = connect_migrated(&options).await.map_err(|e| {
        Failure::new(
            Kind::Store,
            anyhow::Error::new(e).context("connecting to the PostgreSQL store"),
        )
    })?;
    let schema = &options.schema;
    match args.command {
        PgCommand::Watch(w) => {
            let spec = WatchSpec {
                table: w.table,
                topic: w.topic,
                columns: w.columns,
                when_changed: w.when_changed,
                kind: w.kind,
                private: w.private,
            };
            let table = watch::watch(&mut client, schema, &spec)
                .await
                .map_err(failed)?;
            println!("watching {table}: events on {}", spec.topic);
        }
        PgCommand::Unwatch { table } => {
            if watch::unwatch(&mut client, schema, &table)
                .await
                .map_err(failed)?
            {
                println!("no longer watching {table}");
            } else {
                println!("{table} was not watched");
            }
        }
        PgCommand::Watches => {
            for w in watch::watches(&client, schema).await.map_err(failed)? {
                let changed = if w.when_changed.is_empty() {
                    String::new()
                } else {
                    format!(" --when-changed {}", w.when_changed.join(","))
                };
                let kind = w.kind.map(|k| format!(" --type {k}")).unwrap_or_default();
                let private = if w.private { " --private" } else { "" };
                println!(
                    "{} --topic '{}' --columns {}{changed}{kind}{private}",
                    w.table,
                    w.topic,
                    w.columns.join(",")
                );
            }
        }
    }
    Ok(())
}
