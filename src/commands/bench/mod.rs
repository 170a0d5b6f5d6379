//! `weir bench`: named scenarios measuring the embedded log in-process — produce and consume throughput, produce-ack
//! latency at a fixed rate, and resident memory while the log grows. Each runs in a fresh scratch directory (removed
//! afterwards) and prints a human line, or JSON lines with `--json` for `scripts/bench.sh`. `wire` (in `wire.rs`)
//! measures a running server over the Kafka protocol instead.

mod analytics;
mod console;
mod runtime;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use weir_broker::{Broker, BrokerConfig, ConsumerConfig, ProduceRecord};

use super::{human_bytes, AckWindow};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce N records as fast as acknowledgements allow, then consume them all back.
    Throughput(ThroughputArgs),
    /// Produce at a fixed rate and report acknowledgement latency percentiles (open loop).
    Latency(LatencyArgs),
    /// Fill a log with --bytes of data, then read it all back, sampling resident memory throughout.
    Memory(MemoryArgs),
    /// Over the Kafka protocol: one librdkafka producer, then one consumer, against --server HOST:PORT (a `weir up`
    /// or any Kafka-compatible server).
    Wire(wire::WireArgs),
    /// The processing runtime: a trivial handler consuming --count records at-least-once or exactly-once into SQL.
    Handlers(runtime::HandlerArgs),
    /// The outbox relay publishing --count pre-written outbox events.
    Outbox(runtime::OutboxArgs),
    /// A simulated day of the analytics pipeline (5 M events) produced and aggregated as fast as possible.
    Analytics(analytics::AnalyticsArgs),
    /// The web console's API over 1,000 topics of 10 partitions: the time of each page's request.
    Console(console::ConsoleArgs),
}

#[derive(Debug, Args)]
pub struct Common {
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// fsync policy of the benchmark topic: always, interval or never.
    #[arg(long, default_value = "interval")]
    fsync: String,
    /// Scratch directory (default: a new one under the system temp dir; removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print results as JSON lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    common: Common,
    /// Records to produce.
    #[arg(long, default_value_t = 5_000_000)]
    count: u64,
    /// Concurrent producer tasks, each with its own window of unacknowledged records.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Unacknowledged records each producer may have in flight (1: send, wait for the ack, send the next).
    #[arg(long, default_value_t = 65_536)]
    window: usize,
}

#[derive(Debug, Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    common: Common,
    /// Records per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Debug, Args)]
pub struct MemoryArgs {
    #[command(flatten)]
    common: Common,
    /// Bytes of values to write, e.g. 5G, 500M.
    #[arg(long, default_value = "5G")]
    bytes: String,
}

struct Scratch {
    dir: PathBuf,
    remove: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn scratch(common: &Common) -> Result<Scratch> {
    match &common.dir {
        Some(d) => {
            if d.join("topics").exists() {
                bail!("{} already holds weir data; give an empty or new directory", d.display());
            }
            Ok(Scratch { dir: d.clone(), remove: false })
        }
        None => {
            let dir = std::env::temp_dir().join(format!("weir-bench-{}-{}", std::process::id(), weir_log::now_ms()));
            Ok(Scratch { dir, remove: true })
        }
    }
}

fn open(settings: &Settings, common: &Common, dir: &std::path::Path) -> Result<Arc<Broker>> {
    let mut config = BrokerConfig::new(dir);
    config.log = settings.broker.log.clone();
    config.log.set("fsync", &common.fsync)?;
    let broker = Broker::open(config)?;
    broker.create_topic("bench", common.partitions, BTreeMap::new())?;
    Ok(broker)
}

fn report(common: &Common, scenario: &str, fields: serde_json::Value, human: String) {
    if common.json {
        let mut obj = serde_json::json!({
            "peer": "weir",
            "scenario": scenario,
            "size": common.size,
            "partitions": common.partitions,
            "fsync": common.fsync,
        });
        if let (Some(o), Some(f)) = (obj.as_object_mut(), fields.as_object()) {
            o.extend(f.clone());
        }
        println!("{obj}");
    } else {
        println!("{human}");
    }
}

pub async fn run(settings: Settings, cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Wire(a) => wire::run(settings.server.as_deref(), a).await,
        BenchCommand::Handlers(a) => runtime::handlers(a).await,
        BenchCommand::Outbox(a) => runtime::outbox(a).await,
        BenchCommand::Analytics(a) => analytics::run(a).await,
        BenchCommand::Console(a) => console::run(a).await,
        BenchCommand::Throughput(a) => throughput(settings, a).await,
        BenchCommand::Latency(a) => latency(settings, a).await,
        BenchCommand::Memory(a) => memory(settings, a).await,
    }
}

/// Produces `count` records of `size` bytes from `producers` tasks; returns when all are acknowledged.
async fn produce_all(
    broker: &Arc<Broker>,
    count: u64,
    size: usize,
    producers: usize,
    window: usize,
    bar: &ProgressBar,
) -> Result<()> {
    let value = Bytes::from(vec![b'x'; size]);
    let producers = producers.max(1) as u64;
    let mut tasks = Vec::new();
    for i in 0..producers {
        let n = count / producers + u64::from(i < count % producers);
        let producer = broker.producer();
        let value = value.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = AckWindow::new(window);
            for j in 0..n {
                acks.push(producer.send(ProduceRecord::new("bench", value.clone()))).await;
                if j % 1024 == 1023 {
                    bar.inc(1024);
                }
            }
            let totals = acks.finish().await;
            if totals.failed > 0 {
                bail!("{} records failed: {}", totals.failed, totals.first_error.unwrap_or_default());
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("producer task panicked")??;
    }
    Ok(())
}

fn bar(len: u64, json: bool) -> ProgressBar {
    let bar = if json { ProgressBar::hidden() } else { ProgressBar::new(len) };
    bar.set_style(ProgressStyle::with_template("{msg:>9} {bar:40} {pos}/{len}  {per_sec}").expect("valid template"));
    bar
}

async fn throughput(settings: Settings, args: ThroughputArgs) -> Result<()> {
    let c = &args.common;
    let scratch = scratch(c)?;
    let broker = open(&settings, c, &scratch.dir)?;
    let bytes = args.count * c.size as u64;

    let b = bar(args.count, c.json);
    b.set_message("produce");
    let started = Instant::now();
    produce_all(&broker, args.count, c.size, args.producers, args.window, &b).await?;
    let secs = started.elapsed().as_secs_f64();
    b.finish_and_clear();
    let rate = args.count as f64 / secs;
    report(
        c,
        "produce",
        serde_json::json!({"count": args.count, "producers": args.producers, "window": args.window, "records_per_s": rate, "mb_per_s": bytes as f64 / secs / 1e6}),
        format!(
            "produce  {} x {} B, {} partition(s), fsync={}, {} producer(s) x window {}: {:.0} records/s, {:.1} MB/s ({:.2} s)",
            args.count,
            c.size,
            c.partitions,
            c.fsync,
            args.producers,
            args.window,
            rate,
            bytes as f64 / secs / 1e6,
            secs
        ),
    );

    let b = bar(args.count, c.json);
    b.set_message("consume");
    let mut config = ConsumerConfig::new(["bench"]);
    config.max_poll_records = 100_000;
    config.max_partition_fetch_bytes = 1 << 20;
    let mut consumer = broker.consumer(config)?;
    let started = Instant::now();
    let mut seen = 0u64;
    let mut checksum = 0u64;
    while seen < args.count {
        let records = consumer.poll(Duration::from_secs(10)).await?;
        if records.is_empty() {
            bail!("consumer stalled after {seen} of {} records", args.count);
        }
        seen += records.len() as u64;
        // Touch every value so the measurement includes getting at the data.
        checksum += records.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64)).sum::<u64>();
        b.set_position(seen);
    }
    let secs = started.elapsed().as_secs_f64();
    b.finish_and_clear();
    if checksum != bytes {
        bail!("consumed {checksum} value bytes, expected {bytes}");
    }
    let rate = seen as f64 / secs;
    report(
        c,
        "consume",
        serde_json::json!({"count": seen, "records_per_s": rate, "mb_per_s": bytes as f64 / secs / 1e6}),
        format!(
            "consume  {} x {} B, {} partition(s): {:.0} records/s, {:.1} MB/s ({:.2} s)",
            seen,
            c.size,
            c.partitions,
            rate,
            bytes as f64 / secs / 1e6,
            secs
        ),
    );
    broker.shutdown();
    Ok(())
}

type AckFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<weir_broker::RecordMetadata, weir_broker::BrokerError>> + Send>,
>;

/// Blocks the calling OS thread until `intended`: sleeps while far off, spins only the last few microseconds (a
/// spinning pacer would take a core from the server on a 2-core machine).
fn wait_until(intended: Instant) {
    loop {
        let now = Instant::now();
        if now >= intended {
            return;
        }
        let left = intended - now;
        if left > Duration::from_micros(60) {
            std::thread::sleep(left - Duration::from_micros(50));
        } else {
            std::hint::spin_loop();
        }
    }
}

async fn latency(settings: Settings, args: LatencyArgs) -> Result<()> {
    let c = &args.common;
    if args.rate == 0 {
        bail!("--rate must be positive");
    }
    let scratch = scratch(c)?;
    let broker = open(&settings, c, &scratch.dir)?;
    let producer = broker.producer();
    let value = Bytes::from(vec![b'x'; c.size]);
    let total = args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, AckFuture)>();
    let collector = tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        while let Some((intended, ack)) = rx.recv().await {
            ack.await?;
            let micros = Instant::now().duration_since(intended).as_micros() as u64;
            hist.saturating_record(micros.max(1));
        }
        anyhow::Ok(hist)
    });
    // The sender paces itself on an OS thread: tokio's timer has millisecond granularity, far coarser than the
    // 100 us between records at 10k/s, and would send in bursts.
    let handle = tokio::runtime::Handle::current();
    let sender = std::thread::spawn(move || {
        let _runtime = handle.enter();
        let start = Instant::now();
        for i in 0..total {
            // Open loop: each record has a fixed intended send time; lateness counts against latency.
            let intended = start + interval * i as u32;
            wait_until(intended);
            let ack: AckFuture = Box::pin(producer.send(ProduceRecord::new("bench", value.clone())));
            if tx.send((intended, ack)).is_err() {
                break;
            }
        }
    });
    sender.join().map_err(|_| anyhow::anyhow!("latency sender panicked"))?;
    let hist = collector.await.context("latency collector panicked")??;
    let q = |p: f64| hist.value_at_quantile(p);
    report(
        c,
        "latency",
        serde_json::json!({"rate": args.rate, "count": total, "p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999), "max_us": hist.max()}),
        format!(
            "latency  {} records/s x {} s, {} B, fsync={}: p50 {} us, p99 {} us, p99.9 {} us, max {} us (open loop, from intended send time)",
            args.rate, args.seconds, c.size, c.fsync, q(0.5), q(0.99), q(0.999), hist.max()
        ),
    );
    broker.shutdown();
    Ok(())
}

fn parse_bytes(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let mult = match s[i..].to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1u64 << 40,
                other => bail!("unknown size unit {other:?} in {s:?}"),
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    let n: f64 = num.trim().parse().with_context(|| format!("invalid size {s:?}"))?;
    Ok((n * mult as f64) as u64)
}

/// Resident set size of this process, from /proc.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn memory(settings: Settings, args: MemoryArgs) -> Result<()> {
    let c = &args.common;
    let target = parse_bytes(&args.bytes)?;
    let count = target / c.size.max(1) as u64;
    let scratch = scratch(c)?;
    let broker = open(&settings, c, &scratch.dir)?;
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(r) = rss_bytes() {
                    peak.fetch_max(r, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let b = bar(count, c.json);
    b.set_message("write");
    let rss_start = rss_bytes().unwrap_or(0);
    // Write in five steps and note resident memory after each: it must stay flat as the log grows.
    let mut rss_steps = Vec::new();
    let steps = 5u64;
    for step in 0..steps {
        let n = count / steps + u64::from(step < count % steps);
        produce_all(&broker, n, c.size, 1, 8192, &b).await?;
        rss_steps.push(rss_bytes().unwrap_or(0));
    }
    b.finish_and_clear();
    let peak_write = peak.swap(0, std::sync::atomic::Ordering::Relaxed);
    let log_bytes: u64 = broker.describe_topic("bench")?.partitions.iter().map(|p| p.size_bytes).sum();

    let b = bar(count, c.json);
    b.set_message("read");
    let mut config = ConsumerConfig::new(["bench"]);
    config.max_poll_records = 100_000;
    config.max_partition_fetch_bytes = 1 << 20;
    let mut consumer = broker.consumer(config)?;
    let mut seen = 0u64;
    while seen < count {
        let n = consumer.poll(Duration::from_secs(10)).await?.len() as u64;
        if n == 0 {
            bail!("consumer stalled after {seen} of {count} records");
        }
        seen += n;
        b.set_position(seen);
    }
    b.finish_and_clear();
    let peak_read = peak.load(std::sync::atomic::Ordering::Relaxed);
    sampler.abort();
    report(
        c,
        "memory",
        serde_json::json!({"count": count, "log_bytes": log_bytes, "rss_start": rss_start, "rss_after_each_fifth": rss_steps, "peak_rss_write": peak_write, "peak_rss_read": peak_read}),
        format!(
            "memory   log of {} ({} records x {} B): peak RSS {} while writing, {} while reading it all back (start {}; after each fifth written: {})",
            human_bytes(log_bytes),
            count,
            c.size,
            human_bytes(peak_write),
            human_bytes(peak_read),
            human_bytes(rss_start),
            rss_steps.iter().map(|r| human_bytes(*r)).collect::<Vec<_>>().join(", ")
        ),
    );
    broker.shutdown();
    Ok(())
}
