//! Durable publish throughput: C publishers, each on its own keep-alive connection, sending the
//! next event as soon as the previous one is acknowledged, for D seconds after a warm-up.

use std::cell::RefCell;
use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::report::{self, Latency, ThroughputReport};
use crate::sys::{self, Server};
use crate::{http, CommonArgs, PublishArgs};

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// Concurrent publishers C (one keep-alive connection each).
    #[arg(long, short = 'c', default_value_t = 64)]
    pub publishers: usize,
    /// Measured seconds D.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of publishing before the measurement starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    #[command(flatten)]
    pub publish: PublishArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Default)]
struct Tally {
    acked: u64,
    failed: u64,
    errors: Vec<String>,
    reconnects: u64,
}

pub fn run(args: ThroughputArgs) -> anyhow::Result<()> {
    sys::raise_nofile();
    let (template, url) = args.publish.template()?;
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", url.host))?
        .next()
        .context("no address")?;
    let server = Server::new(args.common.server_pids.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();

    let start = sys::now_ns();
    let measure_from = start + (args.warmup * 1e9) as u64;
    let measure_to = measure_from + (args.duration * 1e9) as u64;
    let tally = Rc::new(RefCell::new(Tally::default()));
    let hist = Rc::new(RefCell::new(report::histogram()));
    let template = Rc::new(template);
    let chooser = Rc::new(RefCell::new(args.publish.chooser()));
    let k = args.publish.topics.max(1);
    let seqs = Rc::new(RefCell::new(vec![0u64; k]));
    eprintln!(
        "tidings-bench: {} publishers for {} s (+{} s warm-up)",
        args.publishers, args.duration, args.warmup
    );

    let samples = local.block_on(&rt, async {
        let mut tasks = Vec::new();
        for _ in 0..args.publishers.max(1) {
            let (tally, hist, template, chooser, seqs) = (
                tally.clone(),
                hist.clone(),
                template.clone(),
                chooser.clone(),
                seqs.clone(),
            );
            tasks.push(tokio::task::spawn_local(async move {
                let mut conn = http::Conn::new(addr);
                let mut n = 0u64;
                loop {
                    let ts = sys::now_ns();
                    if ts >= measure_to {
                        break;
                    }
                    let topic = (chooser.borrow_mut())(n);
                    n += 1;
                    let seq = {
                        let mut s = seqs.borrow_mut();
                        s[topic] += 1;
                        s[topic] - 1
                    };
                    let request = template.request(topic, seq, ts);
                    let result = conn.exchange(&request).await;
                    let done = sys::now_ns();
                    if done < measure_from || done > measure_to {
                        continue;
                    }
                    let failed = {
                        let mut t = tally.borrow_mut();
                        match result {
                            Ok(r) if (200..300).contains(&r.status) => {
                                t.acked += 1;
                                report::record_ns(&mut hist.borrow_mut(), done - ts);
                                false
                            }
                            Ok(r) => {
                                t.failed += 1;
                                if t.errors.len() < 5 {
                                    let body = String::from_utf8_lossy(&r.body).trim().to_owned();
                                    t.errors.push(format!("status {}: {body}", r.status));
                                }
                                false
                            }
                            Err(e) => {
                                t.failed += 1;
                                if t.errors.len() < 5 {
                                    t.errors.push(format!("{e:#}"));
                                }
                                true
                            }
                        }
                    };
                    if failed {
                        // Do not spin on a refused connection.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                tally.borrow_mut().reconnects += conn.opened.saturating_sub(1);
            }));
        }
        // CPU samples at the edges of the measured window.
        let sleep_to = |t: u64| {
            let now = sys::now_ns();
            tokio::time::sleep(Duration::from_nanos(t.saturating_sub(now)))
        };
        sleep_to(measure_from).await;
        let a = (server.as_ref().map(|s| s.sample()), sys::self_cpu_us());
        sleep_to(measure_to).await;
        let b = (server.as_ref().map(|s| s.sample()), sys::self_cpu_us());
        for t in tasks {
            let _ = t.await;
        }
        (a, b)
    });
    let ((server_a, gen_a), (server_b, gen_b)) = samples;

    let tally = tally.borrow();
    let seconds = args.duration;
    let gen_cpu = gen_b.saturating_sub(gen_a) as f64;
    let mut report = ThroughputReport {
        kind: "throughput".into(),
        label: args.common.label.clone(),
        publishers: args.publishers.max(1),
        topics: k as u64,
        seconds,
        warmup_seconds: args.warmup,
        acked: tally.acked,
        failed: tally.failed,
        errors: tally.errors.clone(),
        acked_per_second: tally.acked as f64 / seconds,
        ack_latency: Latency::of(&hist.borrow()),
        generator_cpu_ms: gen_cpu / 1000.0,
        generator_core_percent: gen_cpu / 1e6 / seconds * 100.0,
        reconnects: tally.reconnects,
        ..Default::default()
    };
    report.generator_saturated = report.generator_core_percent >= 90.0;
    if let (Some(a), Some(b)) = (server_a, server_b) {
        let cpu = b.cpu_us.saturating_sub(a.cpu_us) as f64;
        report.server_cpu_ms = Some(cpu / 1000.0);
        if tally.acked > 0 {
            report.server_cpu_us_per_publish = Some(cpu / tally.acked as f64);
        }
        report.server_core_percent = Some(cpu / 1e6 / seconds * 100.0);
        report.server_rss_end_kib = Some(b.rss_kib);
    }
    if report.generator_saturated {
        report
            .warnings
            .push("the generator was saturated: the rate may be its own".into());
    }
    if tally.failed > 0 {
        report
            .warnings
            .push(format!("{} publishes failed", tally.failed));
    }
    args.common.emit(&report, report.human())
}
