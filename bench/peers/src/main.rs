//! `weir-bench-peers`: runs the scenarios of `weir bench` against the peers weir is compared with, on the same
//! machine and in the same run, so `scripts/bench.sh` can put the figures side by side.
//!
//! - `throughput`: produce `--count` records of `--size` bytes as fast as the peer acknowledges them (pipelined /
//!   windowed), then read them all back; one `produce` and one `consume` result.
//! - `latency`: produce one record per request at a fixed `--rate`, open loop, and report ack latency percentiles
//!   measured from each record's intended send time (no coordinated omission).
//!
//! Peers: Redis Streams (`redis_peer`), NATS JetStream (`nats_peer`) and RabbitMQ (`rabbit_peer`). Each result is one human line, or with
//! `--json` one JSON object per line carrying at least
//! `{peer, scenario, size, count, records_per_s, mb_per_s, p50_us, p99_us, p999_us}`.

mod nats_peer;
mod open_loop;
mod rabbit_peer;
mod redis_peer;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Benchmarks weir's peers (Redis Streams, NATS JetStream, RabbitMQ) with weir bench's workloads"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Peer {
    /// Redis Streams (XADD / XRANGE).
    Redis,
    /// NATS JetStream (publish with acks / pull consumer).
    Nats,
    /// RabbitMQ (durable queue, persistent messages, publisher confirms / no-ack consumer).
    Rabbitmq,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Redis => "redis-streams",
            Peer::Nats => "nats-jetstream",
            Peer::Rabbitmq => "rabbitmq",
        }
    }
}

/// JetStream stream storage. File storage is the honest peer for a durable log; memory is there for reference.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Storage {
    File,
    Memory,
}

impl Storage {
    fn name(self) -> &'static str {
        match self {
            Storage::File => "file",
            Storage::Memory => "memory",
        }
    }
}

/// Options every scenario takes.
#[derive(Args, Debug)]
struct Common {
    #[arg(long, value_enum)]
    peer: Peer,
    /// Record (value) size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// JetStream stream storage (ignored for Redis).
    #[arg(long, value_enum, default_value_t = Storage::File)]
    storage: Storage,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Print one JSON object per result instead of a human line.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Produce --count records of --size bytes as fast as acks allow, then read them all back.
    Throughput {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Records in flight: outstanding JetStream publish acks / RabbitMQ confirms; for Redis, records in
        /// outstanding pipelines.
        #[arg(long, default_value_t = 10_000)]
        window: usize,
        /// Records per Redis pipeline (XADDs sent in one write, replies awaited together).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Records per read: XRANGE COUNT for Redis, pull batch size for JetStream.
        #[arg(long, default_value_t = 10_000)]
        read_batch: usize,
    },
    /// Send --rate records per second for --seconds, one per request, and report ack latency from the intended
    /// send time (open loop).
    Latency {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

/// Settings of a throughput run, handed to the peers.
#[derive(Debug)]
pub struct ThroughputArgs {
    pub count: u64,
    pub size: usize,
    pub window: usize,
    pub batch: usize,
    pub read_batch: usize,
    pub storage: Storage,
}

/// What a peer's throughput run measured.
#[derive(Debug)]
pub struct ThroughputResult {
    pub produce: Duration,
    pub consume: Duration,
    /// Durability and transport facts worth printing beside the figures (fsync policy, storage type).
    pub note: String,
}

/// What a peer's latency run measured.
#[derive(Debug)]
pub struct LatencyResult {
    pub hist: Histogram<u64>,
    /// From the first intended send time to the last ack.
    pub elapsed: Duration,
    pub note: String,
}

/// Prints one result; a closed stdout (e.g. piped into `head`) is an error, not a panic.
fn emit(json: bool, obj: serde_json::Value, human: String) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json { writeln!(out, "{obj}") } else { writeln!(out, "{human}") }.context("cannot write to stdout")
}

async fn run(cli: Cli) -> Result<()> {
    match cli.scenario {
        Scenario::Throughput { common: c, count, window, batch, read_batch } => {
            if count == 0 || window == 0 || batch == 0 || read_batch == 0 {
                bail!("--count, --window, --batch and --read-batch must be positive");
            }
            let args = ThroughputArgs { count, size: c.size, window, batch, read_batch, storage: c.storage };
            let r = match c.peer {
                Peer::Redis => redis_peer::throughput(&c.redis_url, &args).await?,
                Peer::Nats => nats_peer::throughput(&c.nats_url, &args).await?,
                Peer::Rabbitmq => rabbit_peer::throughput(&c.amqp_url, &args).await?,
            };
            let bytes = (count * c.size as u64) as f64;
            for (scenario, took) in [("produce", r.produce), ("consume", r.consume)] {
                let secs = took.as_secs_f64();
                let (rps, mbps) = (count as f64 / secs, bytes / secs / 1e6);
                emit(
                    c.json,
                    serde_json::json!({
                        "peer": c.peer.name(), "scenario": scenario, "size": c.size, "count": count,
                        "records_per_s": rps, "mb_per_s": mbps, "p50_us": null, "p99_us": null, "p999_us": null,
                        "window": window, "batch": batch, "read_batch": read_batch, "secs": secs, "note": r.note,
                    }),
                    format!(
                        "{:<15} {scenario:<8} {count} x {} B: {rps:.0} records/s, {mbps:.1} MB/s ({secs:.2} s; {})",
                        c.peer.name(),
                        c.size,
                        r.note
                    ),
                )?;
            }
        }
        Scenario::Latency { common: c, rate, seconds } => {
            if rate == 0 || seconds == 0 {
                bail!("--rate and --seconds must be positive");
            }
            let r = match c.peer {
                Peer::Redis => redis_peer::latency(&c.redis_url, rate, seconds, c.size).await?,
                Peer::Nats => nats_peer::latency(&c.nats_url, rate, seconds, c.size, c.storage).await?,
                Peer::Rabbitmq => rabbit_peer::latency(&c.amqp_url, rate, seconds, c.size).await?,
            };
            let count = r.hist.len();
            let secs = r.elapsed.as_secs_f64();
            let (rps, mbps) = (count as f64 / secs, (count * c.size as u64) as f64 / secs / 1e6);
            let q = |p: f64| r.hist.value_at_quantile(p);
            emit(
                c.json,
                serde_json::json!({
                    "peer": c.peer.name(), "scenario": "latency", "size": c.size, "count": count,
                    "records_per_s": rps, "mb_per_s": mbps, "p50_us": q(0.5), "p99_us": q(0.99),
                    "p999_us": q(0.999), "max_us": r.hist.max(), "rate": rate, "seconds": seconds,
                    "open_loop": true, "note": r.note,
                }),
                format!(
                    "{:<15} latency  {rate} records/s x {seconds} s, {} B: p50 {} us, p99 {} us, p99.9 {} us, max {} us \
                     (open loop, from intended send time; {})",
                    c.peer.name(),
                    c.size,
                    q(0.5),
                    q(0.99),
                    q(0.999),
                    r.hist.max(),
                    r.note
                ),
            )?;
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
