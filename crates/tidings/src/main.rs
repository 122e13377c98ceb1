//! The `tidings` binary: parse the command line, set up logging, run the command. A failure is
//! one line on stderr and an exit code per kind of mistake ([`tidings::cli::failure`]).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tidings::cli::failure::{Failure, Kind, ResultExt};
use tidings::cli::{self, Cli, Command, LogFormat};
use tidings::App;
use tidings_core::hub::HubError;
use tidings_core::log::LogError;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The hub logs what it does; the client commands speak for themselves on stdout and log
    // only what goes wrong.
    let quiet = !matches!(cli.command, Command::Serve(_));
    logging(cli.log_format, if quiet { "warn" } else { "info" });
    // On one CPU (e.g. pinned with taskset) the single-threaded scheduler does the same work
    // with less overhead per task switch; otherwise one worker per CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runtime = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let result = match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(run(cli.command)),
        Err(e) => Err(Failure::new(Kind::Other, e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("tidings: {}", failure.line());
            ExitCode::from(failure.kind.code())
        }
    }
}

/// Logs to stderr: text (coloured only on a terminal, and never with `NO_COLOR`) or JSON lines.
/// `RUST_LOG` picks what is logged (default `level`); PostgreSQL's notices (`schema ... already
/// exists, skipping`) are left out unless asked for.
fn logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},tokio_postgres=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Publish(args) => cli::publish(args).await,
        Command::Tail(args) => cli::tail(args).await,
        Command::Pg(args) => cli::pg::run(args).await,
        Command::Token(args) => cli::token::run(*args).kind(Kind::Config),
    }
}

/// `tidings serve`: the whole configuration (keys included) is checked first, then the store is
/// opened, then the address bound.
async fn serve(args: tidings::config::ServeArgs) -> Result<(), Failure> {
    let config = args.resolve().kind(Kind::Config)?;
    let listen = config.listen;
    let app = App::build(config).await.map_err(|e| {
        let store = e.chain().any(|c| c.is::<LogError>() || c.is::<HubError>());
        Failure::new(if store { Kind::Store } else { Kind::Config }, e)
    })?;
    let listener = bind(listen).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process (another tidings?) holds it; stop it or pick another --listen"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges; pick another --listen"
            }
            std::io::ErrorKind::AddrNotAvailable => "no interface of this machine has that address",
            _ => "pick another --listen",
        };
        Failure::new(
            Kind::Address,
            anyhow::anyhow!("cannot listen on {listen}: {e}; {hint}"),
        )
    })?;
    tracing::info!(
        address = %listener.local_addr().kind(Kind::Address)?,
        store = ?app.config().store,
        "tidings hub listening"
    );
    app.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Listens on `addr` with a deep accept backlog, so a crowd of reconnecting subscribers is not
/// met with dropped SYNs (and the client's one-second retransmission).
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
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
