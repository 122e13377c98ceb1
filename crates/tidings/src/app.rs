//! Builds the hub from a [`Config`] and serves it. Tests and the binary both go through
//! [`App::build`] and [`App::serve`].

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tidings_core::hub::Hub;
use tidings_core::log::EventLog;
use tidings_core::store::postgres::{PostgresLog, PostgresOptions};
use tidings_core::store::redis::{RedisLog, RedisOptions};
use tidings_core::store::sqlite::{SqliteLog, SqliteOptions};
use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::config::{Config, StoreConfig};
use crate::http::rate::RateLimiter;
use crate::http::{self, AppState};
use crate::net::{self, ConnectionLimits};

/// A hub ready to serve.
pub struct App {
    config: Config,
    hub: Arc<Hub>,
    auth: Auth,
}

/// Opens the configured store.
pub async fn open_store(store: &StoreConfig) -> anyhow::Result<Arc<dyn EventLog>> {
    match store {
        StoreConfig::Sqlite { path, durability } => {
            let mut options = SqliteOptions::new(path);
            options.durability = *durability;
            let log = SqliteLog::open(options)
                .with_context(|| format!("opening the SQLite store at {}", path.display()))?;
            Ok(Arc::new(log))
        }
        StoreConfig::Postgres { url, schema } => {
            let log = PostgresLog::connect(PostgresOptions::new(url).schema(schema.clone()))
                .await
                .context("connecting to the PostgreSQL store")?;
            Ok(Arc::new(log))
        }
        StoreConfig::Redis { url, prefix } => {
            let log = RedisLog::connect(RedisOptions::new(url).prefix(prefix.clone()))
                .await
                .context("connecting to the Redis store")?;
            Ok(Arc::new(log))
        }
    }
}

impl App {
    /// Loads the JWT keys (a weak or unreadable key fails here, before anything is created),
    /// then opens the store and starts the hub's background tasks.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let auth = Auth::new(&config.auth).await?;
        let log = open_store(&config.store).await?;
        let hub = Hub::start(log, config.hub.clone()).await?;
        Ok(Self { config, hub, auth })
    }

    /// The running hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves on `listener` until `shutdown` completes; then stops accepting, lets in-flight
    /// publishes finish, ends the streams (clients reconnect and resume) and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let auth = self.auth;
        if auth.publishing_is_open() {
            tracing::warn!(
                "NO PUBLISHER KEY: anyone who can reach this hub may publish (development mode); \
                 set --publisher-jwt-key (or --jwt-key) in production"
            );
        }
        for name in self.config.webhooks.names() {
            tracing::info!(webhook = name, "receiving webhooks at /webhooks/{name}");
        }
        let limits = ConnectionLimits::new(
            self.config.edge.max_connections,
            self.config.edge.max_connections_per_ip,
        );
        let state = Arc::new(AppState {
            hub: self.hub.clone(),
            limits: http::Limits {
                body_idle: self.config.edge.header_read_timeout,
                body_deadline: self.config.edge.body_read_timeout,
                ..self.config.limits
            },
            auth,
            subscription_events: self.config.subscription_events,
            publish_rate: self.config.edge.publish_rate.map(RateLimiter::new),
            subscription_rate: self
                .config
                .edge
                .publish_rate
                .filter(|_| self.config.subscription_events)
                .map(RateLimiter::new),
            cors: self.config.edge.cors.clone(),
            webhooks: self.config.webhooks.clone(),
            selectors: Default::default(),
            selector_budget: crate::net::SelectorBudget::new(
                self.config.limits.max_pattern_bytes_per_ip,
                self.config.limits.max_patterns_per_ip,
            ),
            connections: limits.clone(),
            ops: self.config.ops.clone(),
        });
        let router = http::with_edges(
            http::router(state),
            &self.config.edge.cors,
            self.config.edge.allowed_hosts.clone(),
        );
        // TLS: the certificates are loaded before the first connection (an error stops start-up
        // with the file's name) and watched for changes while the hub serves.
        let (tls, _watching) = match &self.config.protocol.tls {
            Some(files) => {
                let certificates = net::tls::Certificates::load(files.clone())
                    .context("loading the TLS certificate")?;
                let config = certificates.server_config().context("configuring TLS")?;
                let watching = tokio::spawn(certificates.watch());
                tracing::info!(cert = %files.cert.display(), "serving TLS (HTTP/2 and HTTP/1.1)");
                (
                    Some(tokio_rustls::TlsAcceptor::from(config)),
                    Some(AbortOnDrop(watching)),
                )
            }
            None => (None, None),
        };
        let hub = self.hub.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; ending streams");
            hub.shutdown();
        };
        net::serve(
            listener,
            router,
            limits,
            self.config.serve_options(),
            tls,
            signal,
        )
        .await;
        Ok(())
    }
}

/// Aborts a background task when dropped (the certificate watcher, when serving returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
