//! `weir-bench-peers`: the same scenarios as `weir bench` (throughput: produce N records then read them back;
//! latency: a fixed rate, open loop, ack latency percentiles) against the peers running on this machine, so
//! `scripts/bench.sh` can put them side by side with weir in one run.
//!
//! - Redis Streams: `XADD` pipelined in batches, read back with `XRANGE ... COUNT`.
//! - NATS JetStream: a file-storage stream, publishes with a window of outstanding acks, read back with a pull consumer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use hdrhistogram::Histogram;

#[derive(Parser)]
#[command(about = "Benchmarks weir's peers (Redis Streams, NATS JetStream) with weir bench's workloads")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Clone, Copy, ValueEnum)]
enum Peer {
    Redis,
    Nats,
}

#[derive(Subcommand)]
enum Scenario {
    /// Produce --count records of --size bytes as fast as acks allow, then read them all back.
    Throughput {
        #[arg(long, value_enum)]
        peer: Peer,
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Records per Redis pipeline / outstanding JetStream acks.
        #[arg(long, default_value_t = 1000)]
        window: usize,
        /// JetStream storage: file (durable, the honest peer for a log) or memory.
        #[arg(long, default_value = "file")]
        storage: String,
        #[arg(long)]
        json: bool,
    },
    /// Send --rate records per second for --seconds, one per request, and report ack latency from the intended send time.
    Latency {
        #[arg(long, value_enum)]
        peer: Peer,
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
        #[arg(long, default_value = "file")]
        storage: String,
        #[arg(long)]
        json: bool,
    },
}

const REDIS_URL: &str = "redis://127.0.0.1:6379/";
const NATS_URL: &str = "127.0.0.1:4222";
const KEY: &str = "weir-bench";
const STREAM: &str = "WEIRBENCH";
const SUBJECT: &str = "weirbench";

fn name(p: Peer) -> &'static str {
    match p {
        Peer::Redis => "redis-streams",
        Peer::Nats => "nats-jetstream",
    }
}

fn report(json: bool, obj: serde_json::Value, human: String) {
    if json {
        println!("{obj}");
    } else {
        println!("{human}");
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().scenario {
        Scenario::Throughput { peer, count, size, window, storage, json } => {
            let payload = Bytes::from(vec![b'x'; size]);
            let (produce, consume, note) = match peer {
                Peer::Redis => redis_throughput(count, &payload, window).await?,
                Peer::Nats => nats_throughput(count, &payload, window, &storage).await?,
            };
            let mb = (count * size as u64) as f64 / 1e6;
            for (scenario, secs) in [("produce", produce), ("consume", consume)] {
                report(
                    json,
                    serde_json::json!({"peer": name(peer), "scenario": scenario, "size": size, "count": count, "window": window,
                        "records_per_s": count as f64 / secs, "mb_per_s": mb / secs, "note": note}),
                    format!(
                        "{:<15} {scenario:<8} {count} x {size} B: {:.0} records/s, {:.1} MB/s ({note})",
                        name(peer),
                        count as f64 / secs,
                        mb / secs
                    ),
                );
            }
        }
        Scenario::Latency { peer, rate, seconds, size, storage, json } => {
            let payload = Bytes::from(vec![b'x'; size]);
            let (hist, note) = match peer {
                Peer::Redis => redis_latency(rate, seconds, &payload).await?,
                Peer::Nats => nats_latency(rate, seconds, &payload, &storage).await?,
            };
            let q = |p: f64| hist.value_at_quantile(p);
            report(
                json,
                serde_json::json!({"peer": name(peer), "scenario": "latency", "size": size, "rate": rate, "count": rate * seconds,
                    "p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999), "max_us": hist.max(), "note": note}),
                format!(
                    "{:<15} latency  {rate} records/s x {seconds} s, {size} B: p50 {} us, p99 {} us, p99.9 {} us, max {} us ({note})",
                    name(peer),
                    q(0.5),
                    q(0.99),
                    q(0.999),
                    hist.max()
                ),
            );
        }
    }
    Ok(())
}

async fn redis_conn() -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(REDIS_URL)?;
    client.get_multiplexed_async_connection().await.with_context(|| format!("cannot reach Redis at {REDIS_URL}"))
}

async fn redis_note(con: &mut redis::aio::MultiplexedConnection) -> String {
    let aof: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("appendonly").query_async(con).await.unwrap_or_default();
    format!("appendonly={}, loopback TCP", aof.get(1).map(String::as_str).unwrap_or("?"))
}

async fn redis_throughput(count: u64, payload: &Bytes, window: usize) -> Result<(f64, f64, String)> {
    let mut con = redis_conn().await?;
    let note = redis_note(&mut con).await;
    let _: () = redis::cmd("DEL").arg(KEY).query_async(&mut con).await?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let n = (count - sent).min(window as u64);
        let mut pipe = redis::pipe();
        for _ in 0..n {
            pipe.cmd("XADD").arg(KEY).arg("*").arg("v").arg(payload.as_ref()).ignore();
        }
        let _: () = pipe.query_async(&mut con).await?;
        sent += n;
    }
    let produce = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut seen = 0u64;
    let mut from = "-".to_string();
    while seen < count {
        let reply: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg(KEY).arg(&from).arg("+").arg("COUNT").arg(10_000).query_async(&mut con).await?;
        let Some(last) = reply.ids.last() else { bail!("Redis stream ended after {seen} of {count} entries") };
        from = format!("({}", last.id);
        for id in &reply.ids {
            if let Some(redis::Value::BulkString(v)) = id.map.get("v") {
                if v.len() != payload.len() {
                    bail!("entry {} has {} bytes, expected {}", id.id, v.len(), payload.len());
                }
            }
        }
        seen += reply.ids.len() as u64;
    }
    let consume = started.elapsed().as_secs_f64();
    let _: () = redis::cmd("DEL").arg(KEY).query_async(&mut con).await?;
    Ok((produce, consume, note))
}

async fn nats_context(storage: &str) -> Result<async_nats::jetstream::Context> {
    use async_nats::jetstream::stream::{Config, StorageType};
    let client = async_nats::connect(NATS_URL).await.with_context(|| format!("cannot reach NATS at {NATS_URL}"))?;
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(STREAM).await;
    let storage = match storage {
        "file" => StorageType::File,
        "memory" => StorageType::Memory,
        other => bail!("--storage must be file or memory, got {other:?}"),
    };
    js.create_stream(Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        storage,
        max_bytes: 8 << 30,
        ..Default::default()
    })
    .await
    .context("cannot create the JetStream stream (is nats-server running with -js?)")?;
    Ok(js)
}

async fn nats_throughput(count: u64, payload: &Bytes, window: usize, storage: &str) -> Result<(f64, f64, String)> {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    let js = nats_context(storage).await?;
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(window);
    for _ in 0..count {
        pending.push_back(js.publish(SUBJECT, payload.clone()).await?);
        if pending.len() >= window {
            pending.pop_front().expect("non-empty").await?;
        }
    }
    while let Some(ack) = pending.pop_front() {
        ack.await?;
    }
    let produce = started.elapsed().as_secs_f64();

    let stream = js.get_stream(STREAM).await?;
    let consumer = stream
        .create_consumer(pull::Config { ack_policy: AckPolicy::None, ..Default::default() })
        .await
        .context("cannot create a pull consumer")?;
    let started = Instant::now();
    let mut messages = consumer.stream().max_messages_per_batch(10_000).messages().await?;
    let mut seen = 0u64;
    while seen < count {
        match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
            Ok(Some(m)) => {
                let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
                if m.payload.len() != payload.len() {
                    bail!("message has {} bytes, expected {}", m.payload.len(), payload.len());
                }
                seen += 1;
            }
            _ => bail!("JetStream consumer stalled after {seen} of {count} messages"),
        }
    }
    let consume = started.elapsed().as_secs_f64();
    let _ = js.delete_stream(STREAM).await;
    Ok((produce, consume, format!("{storage} storage, loopback TCP")))
}

/// Runs `send` at `rate` per second on a paced OS thread (tokio's timer is too coarse at 100 us intervals), recording
/// each ack's latency from its intended send time.
async fn open_loop<F, Fut>(rate: u64, seconds: u64, send: F) -> Result<Histogram<u64>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<tokio::task::JoinHandle<Result<u64>>>();
    let handle = tokio::runtime::Handle::current();
    let pacer = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..total {
            let intended = start + interval * i as u32;
            loop {
                let now = Instant::now();
                if now >= intended {
                    break;
                }
                let left = intended - now;
                if left > Duration::from_micros(200) {
                    std::thread::sleep(left - Duration::from_micros(100));
                } else {
                    std::hint::spin_loop();
                }
            }
            let fut = send();
            let task = handle.spawn(async move {
                fut.await?;
                Ok(Instant::now().duration_since(intended).as_micros() as u64)
            });
            if tx.send(task).is_err() {
                break;
            }
        }
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while let Some(task) = rx.recv().await {
        hist.saturating_record(task.await??.max(1));
    }
    pacer.join().map_err(|_| anyhow::anyhow!("pacer thread panicked"))?;
    Ok(hist)
}

async fn redis_latency(rate: u64, seconds: u64, payload: &Bytes) -> Result<(Histogram<u64>, String)> {
    let mut con = redis_conn().await?;
    let note = redis_note(&mut con).await;
    let _: () = redis::cmd("DEL").arg(KEY).query_async(&mut con).await?;
    let payload = payload.clone();
    let hist = open_loop(rate, seconds, move || {
        let mut con = con.clone();
        let payload = payload.clone();
        async move {
            let _: String =
                redis::cmd("XADD").arg(KEY).arg("*").arg("v").arg(payload.as_ref()).query_async(&mut con).await?;
            Ok(())
        }
    })
    .await?;
    let mut con = redis_conn().await?;
    let _: () = redis::cmd("DEL").arg(KEY).query_async(&mut con).await?;
    Ok((hist, note))
}

async fn nats_latency(rate: u64, seconds: u64, payload: &Bytes, storage: &str) -> Result<(Histogram<u64>, String)> {
    let js = nats_context(storage).await?;
    let payload = payload.clone();
    let js2 = js.clone();
    let hist = open_loop(rate, seconds, move || {
        let js = js2.clone();
        let payload = payload.clone();
        async move {
            js.publish(SUBJECT, payload).await?.await?;
            Ok(())
        }
    })
    .await?;
    let _ = js.delete_stream(STREAM).await;
    Ok((hist, format!("{storage} storage, loopback TCP")))
}
