//! `weir produce`: lines from stdin (optionally `key<SEP>value`), or generated load with a progress bar and a summary.

use std::time::Instant;

use anyhow::{bail, Result};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, BufReader};
use weir_broker::ProduceRecord;

use super::{open_broker, AckWindow};
use crate::cli::ProduceArgs;
use crate::settings::Settings;

/// Acknowledgements in flight before the sender waits.
const WINDOW: usize = 100_000;

pub async fn run(settings: Settings, args: ProduceArgs) -> Result<()> {
    let broker = open_broker(&settings)?;
    let topic = broker.topic_or_create(&args.topic)?;
    if let Some(p) = args.partition {
        topic.partition(p)?;
    }
    let producer = broker.producer();
    let mut acks = AckWindow::new(WINDOW);
    let started = Instant::now();
    let mut bytes_sent = 0u64;

    match args.count {
        Some(count) => {
            let value = Bytes::from(vec![b'x'; args.size]);
            let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(count) };
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} records  {per_sec}  eta {eta}")
                    .expect("valid template"),
            );
            for i in 0..count {
                let record = ProduceRecord {
                    topic: args.topic.clone(),
                    partition: args.partition,
                    value: Some(value.clone()),
                    ..Default::default()
                };
                acks.push(producer.send(record)).await;
                bytes_sent += args.size as u64;
                if i % 4096 == 0 {
                    bar.set_position(i);
                }
            }
            bar.finish_and_clear();
        }
        None => {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Some(line) = lines.next_line().await? {
                let (key, value) = match &args.key_separator {
                    Some(sep) => match line.split_once(sep.as_str()) {
                        Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                        None => (None, line),
                    },
                    None => (None, line),
                };
                bytes_sent += value.len() as u64;
                let record = ProduceRecord {
                    topic: args.topic.clone(),
                    partition: args.partition,
                    key,
                    value: Some(Bytes::from(value)),
                    ..Default::default()
                };
                acks.push(producer.send(record)).await;
            }
        }
    }
    let totals = acks.finish().await;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    broker.shutdown();
    if totals.failed > 0 {
        bail!(
            "{} of {} records failed: {}",
            totals.failed,
            totals.ok + totals.failed,
            totals.first_error.unwrap_or_default()
        );
    }
    if args.count.is_some() || !args.quiet {
        eprintln!(
            "produced {} records to {} in {:.2} s: {:.0} records/s, {:.1} MB/s",
            totals.ok,
            args.topic,
            secs,
            totals.ok as f64 / secs,
            bytes_sent as f64 / secs / 1e6
        );
    }
    Ok(())
}
