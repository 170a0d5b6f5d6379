//! `weir consume`: prints records one per line, standalone or as a group member that commits what it printed; from the
//! data directory or, with `--server`, over the Kafka protocol; with `--decode`, records framed with a schema id printed
//! as JSON through the schema registry.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use weir_broker::{ConsumerConfig, OffsetReset};
use weir_runtime::{Bus, EmbeddedBus, KafkaBus};
use weir_schema::{SchemaService, SerdeError, ServiceConfig};

use super::kafka_client::{blocking, Remote, TIMEOUT};
use super::{open_broker, print_line, shutdown_signal};
use crate::cli::ConsumeArgs;
use crate::settings::Settings;

pub async fn run(settings: Settings, args: ConsumeArgs) -> Result<()> {
    if args.group.is_some() && args.partition.is_some() {
        bail!("--partition reads one partition directly and cannot be combined with --group");
    }
    if let Some(server) = &settings.server {
        let decoder = match args.decode {
            true => {
                Some(decoder(Arc::new(KafkaBus::connect(server).map_err(|e| anyhow::anyhow!("--server: {e}"))?)).await?)
            }
            false => None,
        };
        return run_remote(&Remote::new(server)?, args, decoder.as_deref()).await;
    }
    let broker = open_broker(&settings)?;
    broker.topic(&args.topic)?; // consuming never creates a topic
    let decoder = match args.decode {
        true => Some(decoder(Arc::new(EmbeddedBus::new(broker.clone()))).await?),
        false => None,
    };
    let mut config = ConsumerConfig::new([args.topic.clone()]);
    config.group = args.group.clone();
    config.client_id = "weir-consume".into();
    config.partitions = args.partition.map(|p| vec![p]);
    config.auto_offset_reset = if args.from_beginning { OffsetReset::Earliest } else { OffsetReset::Latest };
    config.max_poll_records = 10_000;
    let mut consumer = broker.consumer(config)?;
    if let Some(p) = args.partition {
        broker.topic(&args.topic)?.partition(p)?;
    }
    if args.offset.is_some() || args.timestamp.is_some() || args.from_beginning {
        consumer.ensure_assigned().await?;
    }
    if let Some(offset) = args.offset {
        for (topic, partition) in consumer.assignment() {
            let (start, end) = broker.offsets(&topic, partition)?;
            if !(start..=end).contains(&offset) {
                bail!("offset {offset} is out of range for {topic}-{partition} (valid: {start}..{end})");
            }
            consumer.seek(&topic, partition, offset)?;
        }
    } else if let Some(ts) = args.timestamp {
        consumer.seek_to_timestamp(ts).await?;
    } else if args.from_beginning && args.group.is_some() {
        for (topic, partition) in consumer.assignment() {
            let (start, _) = broker.offsets(&topic, partition)?;
            consumer.seek(&topic, partition, start)?;
        }
    }

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let max = args.max.unwrap_or(u64::MAX);
    let idle = args.idle_timeout_ms.map(Duration::from_millis);
    let poll_wait = idle.unwrap_or(Duration::from_secs(1));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    'outer: while printed < max {
        let records = tokio::select! {
            r = consumer.poll(poll_wait) => r?,
            _ = &mut shutdown => break,
        };
        if records.is_empty() {
            if idle.is_some() {
                break;
            }
            continue;
        }
        let mut last_printed = Vec::new();
        for r in records {
            let line = format_line(
                &args,
                decoder.as_deref(),
                r.partition,
                r.offset,
                r.timestamp,
                r.key.as_deref(),
                r.value.as_deref(),
            );
            if !print_line(&mut out, &line)? {
                break 'outer;
            }
            last_printed.retain(|(t, p, _): &(String, i32, i64)| !(t.as_str() == &*r.topic && *p == r.partition));
            last_printed.push((r.topic.to_string(), r.partition, r.offset + 1));
            printed += 1;
            if printed >= max {
                break;
            }
        }
        out.flush()?;
        if args.group.is_some() {
            // Commit exactly what was printed, even when --max stopped mid-batch.
            let offsets = last_printed
                .into_iter()
                .map(|(topic, partition, next)| (weir_broker::group::TopicPartition { topic, partition }, next))
                .collect();
            consumer.commit_offsets(offsets).await?;
        }
    }
    out.flush()?;
    drop(out);
    consumer.close().await?;
    broker.shutdown();
    Ok(())
}

/// The registry in `_schemas` on `bus`, read to its end (`--decode`).
async fn decoder(bus: Arc<dyn Bus>) -> Result<Arc<SchemaService>> {
    SchemaService::start(bus, ServiceConfig::default()).await.map_err(|e| anyhow::anyhow!("the schema registry: {e}"))
}

fn format_line(
    args: &ConsumeArgs,
    decoder: Option<&SchemaService>,
    partition: i32,
    offset: i64,
    ts: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Vec<u8> {
    let mut line = Vec::new();
    if args.print_offset {
        line.extend_from_slice(format!("{partition}\t{offset}\t{ts}\t").as_bytes());
    }
    let shown = |bytes: Option<&[u8]>, what: &str| -> Vec<u8> {
        let bytes = bytes.unwrap_or(b"");
        match decoder.map(|d| d.decode(bytes)) {
            Some(Ok((_, json))) => json.to_string().into_bytes(),
            // Not framed: printed as it is, like any record.
            None | Some(Err(SerdeError::NotFramed)) => bytes.to_vec(),
            Some(Err(e)) => {
                eprintln!("{partition}/{offset}: the {what} does not decode ({e}); printed as it is");
                bytes.to_vec()
            }
        }
    };
    if args.print_key {
        line.extend_from_slice(&shown(key, "key"));
        line.push(b'\t');
    }
    line.extend_from_slice(&shown(value, "value"));
    line
}

/// The same command through librdkafka. Explicit start positions with `--group` move the group's committed
/// offsets before joining, as `kafka-consumer-groups --reset-offsets` does, so they need a group with no active
/// members; without `--group` the partitions are assigned directly.
async fn run_remote(remote: &Remote, args: ConsumeArgs, decoder: Option<&SchemaService>) -> Result<()> {
    let client = remote.metadata_client()?;
    let topic = remote.topics(&client, Some(&args.topic))?;
    let known: Vec<i32> = topic.iter().flat_map(|t| t.partitions.iter().map(|p| p.id)).collect();
    let partitions = match args.partition {
        Some(p) if !known.contains(&p) => bail!("topic {} has no partition {p}", args.topic),
        Some(p) => vec![p],
        None => known,
    };
    let mut starts = TopicPartitionList::new();
    if let Some(offset) = args.offset {
        for &p in &partitions {
            let (start, end) = remote.watermarks(&client, &args.topic, p)?;
            if !(start..=end).contains(&offset) {
                bail!("offset {offset} is out of range for {}-{p} (valid: {start}..{end})", args.topic);
            }
            starts.add_partition_offset(&args.topic, p, Offset::Offset(offset))?;
        }
    } else if let Some(ts) = args.timestamp {
        let mut wanted = TopicPartitionList::new();
        for &p in &partitions {
            wanted.add_partition_offset(&args.topic, p, Offset::Offset(ts))?;
        }
        let found = blocking(|| client.offsets_for_times(wanted, TIMEOUT))
            .with_context(|| format!("cannot look up offsets by time on {}", remote.name()))?;
        for e in found.elements() {
            // No record at or after the time: start at the end, as Kafka's consumers do.
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => remote.watermarks(&client, &args.topic, e.partition())?.1,
            };
            starts.add_partition_offset(&args.topic, e.partition(), Offset::Offset(offset))?;
        }
    } else if args.from_beginning {
        for &p in &partitions {
            let (start, _) = remote.watermarks(&client, &args.topic, p)?;
            starts.add_partition_offset(&args.topic, p, Offset::Offset(start))?;
        }
    }

    let mut config = remote.config();
    config
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", if args.from_beginning { "earliest" } else { "latest" });
    let consumer: StreamConsumer = match &args.group {
        Some(group) => {
            config.set("group.id", group);
            if starts.count() > 0 {
                let resetter: BaseConsumer = remote.create(&config)?;
                blocking(|| resetter.commit(&starts, CommitMode::Sync)).with_context(|| {
                    format!(
                        "cannot move group {group} to the requested offsets (a group with active members refuses this)"
                    )
                })?;
            }
            let consumer: StreamConsumer = remote.create(&config)?;
            consumer.subscribe(&[&args.topic])?;
            consumer
        }
        None => {
            if starts.count() == 0 {
                for &p in &partitions {
                    starts.add_partition_offset(&args.topic, p, Offset::End)?;
                }
            }
            // librdkafka wants a group id even for assigned partitions; nothing joins or commits under it.
            config.set("group.id", "weir-cli-standalone");
            let consumer: StreamConsumer = remote.create(&config)?;
            consumer.assign(&starts)?;
            consumer
        }
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let max = args.max.unwrap_or(u64::MAX);
    let idle = args.idle_timeout_ms.map(Duration::from_millis);
    let poll_wait = idle.unwrap_or(Duration::from_secs(1));
    let mut uncommitted = BTreeMap::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    'outer: while printed < max {
        // Wait for the first record, then take only what is already there, and commit what was printed.
        let mut wait = poll_wait;
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout(wait, consumer.recv()) => r,
                _ = &mut shutdown => break 'outer,
            };
            let m = match next {
                Ok(m) => m.with_context(|| format!("consuming {} from {}", args.topic, remote.name()))?,
                Err(_) if wait.is_zero() => break,
                // A group member's idle time starts once it has partitions: joining takes seconds of its own.
                Err(_) if idle.is_some() && (args.group.is_none() || has_assignment(&consumer)) => break 'outer,
                Err(_) => continue,
            };
            wait = Duration::ZERO;
            let ts = m.timestamp().to_millis().unwrap_or(-1);
            let line = format_line(&args, decoder, m.partition(), m.offset(), ts, m.key(), m.payload());
            if !print_line(&mut out, &line)? {
                break 'outer;
            }
            uncommitted.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
            printed += 1;
            if printed >= max {
                break;
            }
        }
        out.flush()?;
        commit_printed(&consumer, &args, &mut uncommitted)?;
    }
    out.flush()?;
    commit_printed(&consumer, &args, &mut uncommitted)?;
    Ok(())
}

fn has_assignment(consumer: &StreamConsumer) -> bool {
    consumer.assignment().is_ok_and(|a| a.count() > 0)
}

/// Commits the next offsets after what was printed, `(topic, partition) -> offset`.
fn commit_printed(
    consumer: &StreamConsumer,
    args: &ConsumeArgs,
    uncommitted: &mut BTreeMap<(String, i32), i64>,
) -> Result<()> {
    if args.group.is_none() || uncommitted.is_empty() {
        return Ok(());
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in std::mem::take(uncommitted) {
        offsets.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
    }
    blocking(|| consumer.commit(&offsets, CommitMode::Sync)).context("cannot commit the printed offsets")
}
