//! NATS JetStream as a peer: a one-replica stream (file storage by default, memory with `--storage memory`),
//! published to with a window of outstanding publish acks, read back with a pull consumer in large batches; the
//! latency scenario waits for each publish's ack on its own.
//!
//! With file storage, JetStream acknowledges a publish once the message is written to its file store, not fsynced:
//! by default the server forces a sync every 2 minutes (`sync_interval`; `always` exists from nats-server 2.10).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::{open_loop, LatencyResult, Storage, ThroughputArgs, ThroughputResult};

/// The stream and its subject; the stream is deleted before and after each run.
const STREAM: &str = "WEIRBENCH";
const SUBJECT: &str = "weirbench";

/// Connects, (re)creates the bench stream and returns the context with a note on storage and server version.
async fn setup(url: &str, storage: Storage) -> Result<(jetstream::Context, String)> {
    // The overall timeout also covers a server that accepts the connection but never speaks NATS.
    let connect = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5)).connect(url);
    let client = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| anyhow!("no NATS handshake from {url} within 10 s"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot reach NATS at {url} (is nats-server running?)"))?;
    let version = client.server_info().version;
    let js = jetstream::new(client);
    delete(&js).await;
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        storage: match storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        num_replicas: 1,
        max_bytes: 8 << 30,
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot create the JetStream stream (is nats-server at {url} running with -js?)"))?;
    let sync = match storage {
        Storage::File => "acked when written, fsync by sync_interval (default 2 min)",
        Storage::Memory => "not persisted",
    };
    Ok((js, format!("{} storage, {sync}, nats-server {version}, loopback TCP", storage.name())))
}

async fn delete(js: &jetstream::Context) {
    // Absent is fine; any other failure shows up at create_stream.
    let _ = js.delete_stream(STREAM).await;
}

pub async fn throughput(url: &str, args: &ThroughputArgs) -> Result<ThroughputResult> {
    let (js, note) = setup(url, args.storage).await?;
    let result = produce_consume(&js, args).await;
    delete(&js).await;
    let (produce, consume) = result?;
    Ok(ThroughputResult { produce, consume, note })
}

async fn produce_consume(js: &jetstream::Context, args: &ThroughputArgs) -> Result<(Duration, Duration)> {
    let payload = Bytes::from(vec![b'x'; args.size]);

    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(args.window);
    for _ in 0..args.count {
        pending.push_back(js.publish(SUBJECT, payload.clone()).await.context("JetStream publish")?);
        if pending.len() >= args.window {
            if let Some(ack) = pending.pop_front() {
                ack.await.context("JetStream publish ack")?;
            }
        }
    }
    while let Some(ack) = pending.pop_front() {
        ack.await.context("JetStream publish ack")?;
    }
    let produce = started.elapsed();

    let stream = js.get_stream(STREAM).await.context("JetStream stream info")?;
    let stored = stream.cached_info().state.messages;
    if stored != args.count {
        bail!("the stream holds {stored} messages after publishing {}", args.count);
    }
    let consumer = stream
        .create_consumer(consumer::pull::Config { ack_policy: consumer::AckPolicy::None, ..Default::default() })
        .await
        .context("cannot create a pull consumer")?;
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(args.read_batch)
        .messages()
        .await
        .context("cannot start pulling from the consumer")?;
    let (mut seen, mut value_bytes) = (0u64, 0u64);
    while seen < args.count {
        match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
            Ok(Some(m)) => {
                let m = m.map_err(|e| anyhow!("JetStream pull: {e}"))?;
                value_bytes += m.payload.len() as u64;
                seen += 1;
            }
            Ok(None) => bail!("the JetStream consumer ended after {seen} of {} messages", args.count),
            Err(_) => bail!("the JetStream consumer stalled for 10 s after {seen} of {} messages", args.count),
        }
    }
    let consume = started.elapsed();
    let expected = args.count * args.size as u64;
    if value_bytes != expected {
        bail!("read {value_bytes} payload bytes back, expected {expected}");
    }
    Ok((produce, consume))
}

pub async fn latency(url: &str, rate: u64, seconds: u64, size: usize, storage: Storage) -> Result<LatencyResult> {
    let (js, note) = setup(url, storage).await?;
    let payload = Bytes::from(vec![b'x'; size]);
    let sender = js.clone();
    let result = open_loop::run(rate, seconds, move || {
        let js = sender.clone();
        let payload = payload.clone();
        async move {
            js.publish(SUBJECT, payload).await.context("JetStream publish")?.await.context("JetStream publish ack")?;
            Ok(())
        }
    })
    .await;
    delete(&js).await;
    let (hist, elapsed) = result?;
    Ok(LatencyResult { hist, elapsed, note })
}
