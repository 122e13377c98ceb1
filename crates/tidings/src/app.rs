//! Builds the hub from a [`Config`] and serves it. Tests and the binary both go through
//! [`App::build`] and [`App::serve`].

use std::future::{Future, IntoFuture};
use std::sync::Arc;

use anyhow::Context;
use tidings_core::hub::Hub;
use tidings_core::log::EventLog;
use tidings_core::store::sqlite::{SqliteLog, SqliteOptions};
use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::config::{Config, StoreConfig};
use crate::http::{self, AppState};

/// A hub ready to serve.
pub struct App {
    config: Config,
    hub: Arc<Hub>,
}

/// Opens the configured store.
pub fn open_store(store: &StoreConfig) -> anyhow::Result<Arc<dyn EventLog>> {
    match store {
        StoreConfig::Sqlite { path, durability } => {
            let mut options = SqliteOptions::new(path);
            options.durability = *durability;
            let log = SqliteLog::open(options)
                .with_context(|| format!("opening the SQLite store at {}", path.display()))?;
            Ok(Arc::new(log))
        }
    }
}

impl App {
    /// Opens the store and starts the hub's background tasks.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let log = open_store(&config.store)?;
        let hub = Hub::start(log, config.hub.clone()).await?;
        Ok(Self { config, hub })
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
        let auth = Auth::new(&self.config.auth)?;
        if auth.publishing_is_open() {
            tracing::warn!(
                "NO PUBLISHER KEY: anyone who can reach this hub may publish (development mode); \
                 set --publisher-jwt-key (or --jwt-key) in production"
            );
        }
        let state = Arc::new(AppState {
            hub: self.hub.clone(),
            limits: self.config.limits,
            auth,
            subscription_events: self.config.subscription_events,
        });
        let router = http::router(state);
        let hub = self.hub.clone();
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; ending streams");
            hub.shutdown();
            let _ = stopping_tx.send(());
        };
        let server = axum::serve(listener, router).with_graceful_shutdown(signal);
        let grace = self.config.shutdown_grace;
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            result = &mut server => result.context("serving HTTP")?,
            _ = async {
                let _ = stopping_rx.await;
                tokio::time::sleep(grace).await;
            } => tracing::warn!(?grace, "connections still open after the grace period; closing"),
        }
        Ok(())
    }
}
