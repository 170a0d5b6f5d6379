//! Redis Streams as a peer: `XADD key * v <payload>` in pipelines, several pipelines in flight on one multiplexed
//! connection, read back with `XRANGE key (last-id + COUNT n`; the latency scenario sends one `XADD` per request.
//!
//! Redis holds the stream in memory; whether an acknowledged XADD is on disk depends on the server's `appendonly`
//! and `appendfsync` settings, which every result's note states as read from the server.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use crate::{open_loop, LatencyResult, ThroughputArgs, ThroughputResult};

/// The stream key; deleted before and after each run.
const KEY: &str = "weir-bench";

async fn connect(url: &str) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("bad Redis URL {url:?}"))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(5))
        .set_response_timeout(Duration::from_secs(60));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("cannot reach Redis at {url} (is redis-server running?)"))?;
    let _: String = redis::cmd("PING").query_async(&mut con).await.with_context(|| format!("Redis at {url}"))?;
    Ok(con)
}

/// The server's durability settings, e.g. `appendonly=no, appendfsync=everysec, save=""`.
async fn durability_note(con: &mut MultiplexedConnection) -> String {
    let mut parts = Vec::new();
    for key in ["appendonly", "appendfsync", "save"] {
        let kv: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(key).query_async(con).await.unwrap_or_default();
        let value = match kv.get(1).map(String::as_str) {
            Some("") => "\"\"",
            Some(v) => v,
            None => "?",
        };
        parts.push(format!("{key}={value}"));
    }
    format!("{}, loopback TCP", parts.join(", "))
}

async fn delete(con: &mut MultiplexedConnection) -> Result<()> {
    let _: i64 = redis::cmd("DEL").arg(KEY).query_async(con).await.context("DEL of the bench stream")?;
    Ok(())
}

pub async fn throughput(url: &str, args: &ThroughputArgs) -> Result<ThroughputResult> {
    let mut con = connect(url).await?;
    let note = durability_note(&mut con).await;
    delete(&mut con).await?;
    let result = produce_consume(&mut con, args).await;
    let cleanup = delete(&mut con).await;
    let (produce, consume) = result?;
    cleanup?;
    Ok(ThroughputResult { produce, consume, note })
}

async fn produce_consume(con: &mut MultiplexedConnection, args: &ThroughputArgs) -> Result<(Duration, Duration)> {
    let payload = vec![b'x'; args.size];
    let pipelines_in_flight = (args.window / args.batch).max(1);

    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(pipelines_in_flight);
    let mut sent = 0u64;
    while sent < args.count {
        let n = (args.count - sent).min(args.batch as u64);
        let mut pipe = redis::pipe();
        for _ in 0..n {
            pipe.cmd("XADD").arg(KEY).arg("*").arg("v").arg(&payload[..]).ignore();
        }
        let mut c = con.clone();
        in_flight.push_back(tokio::spawn(async move { pipe.query_async::<()>(&mut c).await }));
        sent += n;
        if in_flight.len() >= pipelines_in_flight {
            if let Some(p) = in_flight.pop_front() {
                p.await.context("a pipeline task panicked")?.context("XADD pipeline")?;
            }
        }
    }
    while let Some(p) = in_flight.pop_front() {
        p.await.context("a pipeline task panicked")?.context("XADD pipeline")?;
    }
    let produce = started.elapsed();
    let len: u64 = redis::cmd("XLEN").arg(KEY).query_async(con).await?;
    if len != args.count {
        bail!("the stream holds {len} entries after producing {}", args.count);
    }

    let started = Instant::now();
    let mut seen = 0u64;
    let mut value_bytes = 0u64;
    let mut from = "-".to_string();
    while seen < args.count {
        let reply: Value = redis::cmd("XRANGE")
            .arg(KEY)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(args.read_batch)
            .query_async(con)
            .await?;
        let (n, bytes, last) = scan_entries(reply)?;
        let Some(last) = last else { bail!("the stream ended after {seen} of {} entries", args.count) };
        from = format!("({last}");
        seen += n;
        value_bytes += bytes;
    }
    let consume = started.elapsed();
    let expected = args.count * args.size as u64;
    if value_bytes != expected {
        bail!("read {value_bytes} value bytes back, expected {expected}");
    }
    Ok((produce, consume))
}

/// Counts the entries of an XRANGE reply (`[[id, [field, value, ...]], ...]`) and their value bytes, touching every
/// value as weir's consumer does; returns the last entry's id.
fn scan_entries(reply: Value) -> Result<(u64, u64, Option<String>)> {
    let Value::Array(entries) = reply else { bail!("unexpected XRANGE reply: {reply:?}") };
    let (mut n, mut bytes, mut last) = (0u64, 0u64, None);
    for entry in entries {
        let Value::Array(mut parts) = entry else { bail!("unexpected XRANGE entry") };
        if parts.len() != 2 {
            bail!("unexpected XRANGE entry of {} parts", parts.len());
        }
        let fields = parts.pop();
        let id = parts.pop();
        if let Some(Value::Array(fields)) = fields {
            for v in fields.iter().skip(1).step_by(2) {
                if let Value::BulkString(v) = v {
                    bytes += v.len() as u64;
                }
            }
        }
        last = match id {
            Some(Value::BulkString(id)) => Some(String::from_utf8_lossy(&id).into_owned()),
            Some(Value::SimpleString(id)) => Some(id),
            other => bail!("unexpected XRANGE entry id {other:?}"),
        };
        n += 1;
    }
    Ok((n, bytes, last))
}

pub async fn latency(url: &str, rate: u64, seconds: u64, size: usize) -> Result<LatencyResult> {
    let mut con = connect(url).await?;
    let note = durability_note(&mut con).await;
    delete(&mut con).await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let sender = con.clone();
    let result = open_loop::run(rate, seconds, move || {
        let mut con = sender.clone();
        let payload = payload.clone();
        async move {
            let _: String = redis::cmd("XADD")
                .arg(KEY)
                .arg("*")
                .arg("v")
                .arg(payload.as_ref())
                .query_async(&mut con)
                .await
                .context("XADD")?;
            Ok(())
        }
    })
    .await;
    let cleanup = delete(&mut con).await;
    let (hist, elapsed) = result?;
    cleanup?;
    Ok(LatencyResult { hist, elapsed, note })
}
