//! `weir produce`: lines from stdin (optionally `key<SEP>value`), or generated load with a progress bar and a summary;
//! into the data directory or, with `--server`, over the Kafka protocol with an idempotent `acks=all` producer; with
//! `--schema SUBJECT`, each line a JSON value encoded with the subject's schema as Confluent's serializers do.

use std::future::Future;
use std::time::Instant;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use tokio::io::{AsyncBufReadExt, BufReader};
use weir_broker::ProduceRecord;
use weir_runtime::{Bus, EmbeddedBus, KafkaBus};
use weir_schema::{SchemaService, ServiceConfig, VersionSel};

use super::kafka_client::{blocking, Remote, TIMEOUT};
use super::{open_broker, AckTotals, AckWindow};
use crate::cli::ProduceArgs;
use crate::settings::Settings;

/// Acknowledgements in flight before the sender waits.
const WINDOW: usize = 100_000;

pub async fn run(settings: Settings, args: ProduceArgs) -> Result<()> {
    let started = Instant::now();
    let version: VersionSel = args.schema_version.parse().map_err(|e| anyhow::anyhow!("--schema-version: {e}"))?;
    let (totals, bytes_sent) = if let Some(server) = &settings.server {
        let registry = match &args.schema {
            Some(_) => Some(
                registry(Arc::new(KafkaBus::connect(server).map_err(|e| anyhow::anyhow!("--server: {e}"))?)).await?,
            ),
            None => None,
        };
        let encode = encoder(registry.as_deref(), args.schema.as_deref(), version)?;
        let remote = Remote::new(server)?;
        let producer: FutureProducer = remote.create(
            remote
                .config()
                .set("acks", "all")
                .set("enable.idempotence", "true")
                .set("linger.ms", "5")
                .set("message.timeout.ms", "30000")
                .set("queue.buffering.max.messages", (2 * WINDOW).to_string()),
        )?;
        let (topic, partition) = (args.topic.clone(), args.partition);
        let sent = send_all(&args, encode.as_deref(), |key, value| {
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic).payload(value.as_ref());
            if let Some(k) = &key {
                record = record.key(k.as_ref());
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            let queued = producer.send_result(record).map_err(|(e, _)| e.to_string());
            async move {
                match queued?.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e.to_string()),
                    Err(_) => Err("the producer stopped before the record was acknowledged".to_string()),
                }
            }
        })
        .await?;
        blocking(|| producer.flush(TIMEOUT))?;
        sent
    } else {
        let broker = open_broker(&settings)?;
        let topic = broker.topic_or_create(&args.topic)?;
        if let Some(p) = args.partition {
            topic.partition(p)?;
        }
        let producer = broker.producer();
        let registry = match &args.schema {
            Some(_) => Some(registry(Arc::new(EmbeddedBus::new(broker.clone()))).await?),
            None => None,
        };
        if let Some(registry) = &registry {
            // As under `weir up`: a topic that validates schemas checks what this writes against the same registry.
            broker.set_record_validator(Arc::new(weir_schema::RegistryValidator::new(registry.clone())));
        }
        let encode = encoder(registry.as_deref(), args.schema.as_deref(), version)?;
        let sent = send_all(&args, encode.as_deref(), |key, value| {
            producer.send(ProduceRecord {
                topic: args.topic.clone(),
                partition: args.partition,
                key,
                value: Some(value),
                ..Default::default()
            })
        })
        .await;
        broker.shutdown();
        sent?
    };
    let secs = started.elapsed().as_secs_f64().max(1e-9);
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

/// Turns an input line into the value to send (`--schema`).
type Encode<'a> = dyn Fn(&str) -> Result<Bytes> + 'a;

/// The registry in `_schemas` on `bus`, read to its end.
async fn registry(bus: Arc<dyn Bus>) -> Result<Arc<SchemaService>> {
    SchemaService::start(bus, ServiceConfig::default()).await.map_err(|e| anyhow::anyhow!("the schema registry: {e}"))
}

/// `--schema SUBJECT`: each line parsed as JSON and encoded with the subject's schema, framed with its id. The
/// subject's version must exist before any input is read.
fn encoder<'a>(
    registry: Option<&'a SchemaService>,
    subject: Option<&'a str>,
    version: VersionSel,
) -> Result<Option<Box<Encode<'a>>>> {
    let (Some(registry), Some(subject)) = (registry, subject) else { return Ok(None) };
    registry.state().version(subject, version, false).map_err(|e| anyhow::anyhow!("--schema {subject}: {e}"))?;
    Ok(Some(Box::new(move |line: &str| {
        let value: serde_json::Value = serde_json::from_str(line).context("not a JSON value")?;
        let framed = registry.encode(subject, version, &value).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Bytes::from(framed))
    })))
}

/// Feeds every record (generated, or read from stdin) to `send` and waits for all acknowledgements; returns the
/// totals and the value bytes sent.
async fn send_all<F, Fut, T, E>(
    args: &ProduceArgs,
    encode: Option<&Encode<'_>>,
    mut send: F,
) -> Result<(AckTotals, u64)>
where
    F: FnMut(Option<Bytes>, Bytes) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut acks = AckWindow::new(WINDOW);
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
                acks.push(send(None, value.clone())).await;
                bytes_sent += args.size as u64;
                if i % 4096 == 0 {
                    bar.set_position(i);
                }
            }
            bar.finish_and_clear();
        }
        None => {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            let mut n = 0u64;
            while let Some(line) = lines.next_line().await? {
                n += 1;
                let (key, value) = match &args.key_separator {
                    Some(sep) => match line.split_once(sep.as_str()) {
                        Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                        None => (None, line),
                    },
                    None => (None, line),
                };
                let value = match encode {
                    Some(encode) => match encode(&value) {
                        Ok(v) => v,
                        Err(e) => {
                            // What was sent before it is acknowledged first, so the message says what is stored.
                            let totals = acks.finish().await;
                            bail!("line {n}: {e:#} ({} earlier records sent)", totals.ok);
                        }
                    },
                    None => Bytes::from(value),
                };
                bytes_sent += value.len() as u64;
                acks.push(send(key, value)).await;
            }
        }
    }
    Ok((acks.finish().await, bytes_sent))
}
