//! The disk's durable-commit latency: append a few bytes to a file and `fdatasync` it, at a
//! steady pace, as a hub's commit would. Puts a floor under publish -> deliver latency of any
//! server that delivers only what it has made durable.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::report::{self, Latency};
use crate::sys;

#[derive(Debug, Clone, Args)]
pub struct FsyncArgs {
    /// Directory for the scratch file (put it on the server's disk).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Number of appends.
    #[arg(long, default_value_t = 500)]
    pub count: u64,
    /// Pause between appends, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub interval_ms: u64,
    /// Bytes appended each time.
    #[arg(long, default_value_t = 4096)]
    pub bytes: usize,
    #[command(flatten)]
    pub common: crate::CommonArgs,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FsyncReport {
    pub kind: String,
    pub label: String,
    pub dir: String,
    pub bytes: usize,
    pub fdatasync: Latency,
}

pub fn run(args: FsyncArgs) -> anyhow::Result<()> {
    let path = args
        .dir
        .join(format!(".tidings-bench-fsync-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = vec![b'x'; args.bytes];
    let mut hist = report::histogram();
    let result = (|| -> anyhow::Result<()> {
        for _ in 0..args.count {
            file.write_all(&block)?;
            let t = sys::now_ns();
            file.sync_data()?;
            report::record_ns(&mut hist, sys::now_ns() - t);
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
        Ok(())
    })();
    drop(file);
    let _ = std::fs::remove_file(&path);
    result?;
    let report = FsyncReport {
        kind: "fsync".into(),
        label: args.common.label.clone(),
        dir: args.dir.display().to_string(),
        bytes: args.bytes,
        fdatasync: Latency::of(&hist),
    };
    let human = format!(
        "== fsync {}: {} appends of {} bytes in {}\nfdatasync   {}\n",
        report.label,
        args.count,
        args.bytes,
        report.dir,
        report.fdatasync.line()
    );
    args.common.emit(&report, human)
}
