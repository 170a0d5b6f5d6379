//! RabbitMQ (AMQP 0-9-1, via lapin) as a peer: persistent messages (delivery mode 2) published to a durable
//! classic queue through the default exchange, with publisher confirms and a window of outstanding confirms; read
//! back with a no-ack consumer. The latency scenario waits for each message's confirm on its own.
//!
//! RabbitMQ confirms a persistent message routed to a durable queue once it has been written to disk (its fsyncs
//! are batched). It is a queue, not a log: consuming removes the messages.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::{open_loop, LatencyResult, ThroughputArgs, ThroughputResult};

/// The queue; deleted before and after each run.
const QUEUE: &str = "weir-bench";
const NOTE: &str = "durable classic queue, persistent messages, publisher confirms, loopback TCP";

/// Connects, (re)declares the bench queue and returns a channel in confirm mode (and the connection, kept alive).
async fn setup(url: &str) -> Result<(Connection, Channel)> {
    let conn = tokio::time::timeout(Duration::from_secs(10), Connection::connect(url, ConnectionProperties::default()))
        .await
        .map_err(|_| anyhow!("no AMQP handshake from {url} within 10 s"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot reach RabbitMQ at {url} (is rabbitmq-server running?)"))?;
    let channel = conn.create_channel().await.context("cannot open an AMQP channel")?;
    delete(&channel).await?;
    channel
        .queue_declare(QUEUE.into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .context("cannot declare the bench queue")?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.context("cannot enable publisher confirms")?;
    Ok((conn, channel))
}

async fn delete(channel: &Channel) -> Result<()> {
    channel.queue_delete(QUEUE.into(), QueueDeleteOptions::default()).await.context("cannot delete the bench queue")?;
    Ok(())
}

async fn publish(channel: &Channel, payload: &[u8]) -> Result<lapin::PublisherConfirm> {
    channel
        .basic_publish(
            "".into(),
            QUEUE.into(),
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .context("AMQP publish")
}

async fn confirmed(confirm: lapin::PublisherConfirm) -> Result<()> {
    let confirmation = confirm.await.context("AMQP publisher confirm")?;
    if !confirmation.is_ack() {
        bail!("RabbitMQ nacked a message");
    }
    Ok(())
}

pub async fn throughput(url: &str, args: &ThroughputArgs) -> Result<ThroughputResult> {
    let (conn, channel) = setup(url).await?;
    let result = produce_consume(&conn, &channel, args).await;
    let cleanup = delete(&channel).await;
    let (produce, consume) = result?;
    cleanup?;
    Ok(ThroughputResult { produce, consume, note: NOTE.into() })
}

async fn produce_consume(conn: &Connection, channel: &Channel, args: &ThroughputArgs) -> Result<(Duration, Duration)> {
    let payload = vec![b'x'; args.size];

    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(args.window);
    for _ in 0..args.count {
        pending.push_back(publish(channel, &payload).await?);
        if pending.len() >= args.window {
            if let Some(c) = pending.pop_front() {
                confirmed(c).await?;
            }
        }
    }
    while let Some(c) = pending.pop_front() {
        confirmed(c).await?;
    }
    let produce = started.elapsed();

    let reader = conn.create_channel().await.context("cannot open an AMQP channel")?;
    let started = Instant::now();
    let mut consumer = reader
        .basic_consume(
            QUEUE.into(),
            "weir-bench".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .context("cannot start consuming")?;
    let (mut seen, mut value_bytes) = (0u64, 0u64);
    while seen < args.count {
        match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
            Ok(Some(d)) => {
                value_bytes += d.context("AMQP delivery")?.data.len() as u64;
                seen += 1;
            }
            Ok(None) => bail!("the AMQP consumer ended after {seen} of {} messages", args.count),
            Err(_) => bail!("the AMQP consumer stalled for 10 s after {seen} of {} messages", args.count),
        }
    }
    let consume = started.elapsed();
    let expected = args.count * args.size as u64;
    if value_bytes != expected {
        bail!("read {value_bytes} payload bytes back, expected {expected}");
    }
    Ok((produce, consume))
}

pub async fn latency(url: &str, rate: u64, seconds: u64, size: usize) -> Result<LatencyResult> {
    let (_conn, channel) = setup(url).await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let sender = channel.clone();
    let result = open_loop::run(rate, seconds, move || {
        let channel = sender.clone();
        let payload = payload.clone();
        async move { confirmed(publish(&channel, &payload).await?).await }
    })
    .await;
    let cleanup = delete(&channel).await;
    let (hist, elapsed) = result?;
    cleanup?;
    Ok(LatencyResult { hist, elapsed, note: NOTE.into() })
}
