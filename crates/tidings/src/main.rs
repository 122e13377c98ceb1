//! The `tidings` binary: parse the command line, set up logging, run the command.

use clap::Parser;
use tidings::cli::{self, Cli, Command};
use tidings::App;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    // On one CPU (e.g. pinned with taskset) the single-threaded scheduler does the same work
    // with less overhead per task switch; otherwise one worker per CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runtime = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    runtime.enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => {
            let config = args.resolve()?;
            let app = App::build(config).await?;
            let listener = bind(app.config().listen)?;
            tracing::info!(
                address = %listener.local_addr()?,
                store = ?app.config().store,
                "tidings hub listening"
            );
            app.serve(listener, shutdown_signal()).await
        }
        Command::Publish(args) => cli::publish(args).await,
        Command::Tail(args) => cli::tail(args).await,
        Command::Pg(args) => cli::pg::run(args).await,
        Command::Token(args) => cli::token::run(*args),
    }
}

/// Listens on `addr` with a deep accept backlog, so a crowd of reconnecting subscribers is not
/// met with dropped SYNs (and the client's one-second retransmission).
fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket.listen(4096)?)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
