//! `weir consume`: prints records one per line, standalone or as a group member that commits what it printed.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};
use weir_broker::{ConsumerConfig, OffsetReset};

use super::{open_broker, print_line, shutdown_signal};
use crate::cli::ConsumeArgs;
use crate::settings::Settings;

pub async fn run(settings: Settings, args: ConsumeArgs) -> Result<()> {
    if args.group.is_some() && args.partition.is_some() {
        bail!("--partition reads one partition directly and cannot be combined with --group");
    }
    let broker = open_broker(&settings)?;
    broker.topic(&args.topic)?; // consuming never creates a topic
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
            let mut line = Vec::new();
            if args.print_offset {
                line.extend_from_slice(format!("{}\t{}\t{}\t", r.partition, r.offset, r.timestamp).as_bytes());
            }
            if args.print_key {
                line.extend_from_slice(r.key.as_deref().unwrap_or(b""));
                line.push(b'\t');
            }
            line.extend_from_slice(r.value.as_deref().unwrap_or(b""));
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
