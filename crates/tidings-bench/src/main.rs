//! The `tidings-bench` command line; see the library for what each mode measures.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tidings_bench::{fanout, report, throughput};

#[derive(Parser)]
#[command(
    name = "tidings-bench",
    version,
    about = "Load generator for SSE servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Subscribers plus a paced publisher: latency, delivery, loss, server CPU and memory.
    Fanout(fanout::FanoutArgs),
    /// Concurrent publishers as fast as acknowledgments come: acknowledged publishes per second.
    Throughput(throughput::ThroughputArgs),
    /// Measures the latency of fdatasync on a file in DIR (what a durable commit waits for).
    Fsync(tidings_bench::fsync::FsyncArgs),
    /// Prints a markdown table of JSON reports written with --out or --json.
    Summary {
        /// Report files.
        files: Vec<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Fanout(args) => fanout::run(args),
        Command::Throughput(args) => throughput::run(args),
        Command::Fsync(args) => tidings_bench::fsync::run(args),
        Command::Summary { files } => {
            print!("{}", report::summary(&files)?);
            Ok(())
        }
    }
}
