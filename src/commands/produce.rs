//! `weir produce`: lines from stdin (optionally `key<SEP>value`), or generated load with a progress bar and a summary;
//! into the data directory or, with `--server`, over the Kafka protocol with an idempotent `acks=all` producer; with
//! `--schema SUBJECT` (or `--schema-file FILE`, registered under the subject `--subject-strategy` names), each line a
//! JSON value encoded with the schema as Confluent's serializers do.

use std::future::Future;
use std::time::Instant;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use tokio::io::{AsyncBufReadExt, BufReader};
use weir_broker::{ProduceRecord, Side, SubjectNameStrategy};
use weir_runtime::{Bus, EmbeddedBus, KafkaBus};
use weir_schema::{NewSchema, SchemaService, SchemaType, ServiceConfig, VersionSel};

use super::kafka_client::{blocking, Remote, TIMEOUT};
use super::{open_broker, AckTotals, AckWindow};
use crate::cli::ProduceArgs;
use crate::settings::Settings;

/// Acknowledgements in flight before the sender waits.
const WINDOW: usize = 100_000;

pub async fn run(settings: Settings, args: ProduceArgs) -> Result<()> {
    let started = Instant::now();
    let version: VersionSel = args.schema_version.parse().map_err(|e| anyhow::anyhow!("--schema-version: {e}"))?;
    let schema_file = args.schema_file.as_deref().map(|f| read_schema_file(f, &args)).transpose()?;
    let uses_registry = args.schema.is_some() || schema_file.is_some();
    let (totals, bytes_sent) = if let Some(server) = &settings.server {
        let registry = match uses_registry {
            true => Some(
                registry(Arc::new(KafkaBus::connect(server).map_err(|e| anyhow::anyhow!("--server: {e}"))?)).await?,
            ),
            false => None,
        };
        let target = subject(registry.as_deref(), &args, schema_file.as_ref(), version).await?;
        let encode = encoder(registry.as_deref(), target.as_ref())?;
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
        let registry = match uses_registry {
            true => Some(registry(Arc::new(EmbeddedBus::new(broker.clone()))).await?),
            false => None,
        };
        if let Some(registry) = &registry {
            // As under `weir up`: a topic that validates schemas checks what this writes against the same registry.
            broker.set_record_validator(Arc::new(weir_schema::RegistryValidator::new(registry.clone())));
        }
        let target = subject(registry.as_deref(), &args, schema_file.as_ref(), version).await?;
        let encode = encoder(registry.as_deref(), target.as_ref())?;
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

/// `--schema-file`'s schema, read, in its format.
fn read_schema_file(file: &str, args: &ProduceArgs) -> Result<NewSchema> {
    let schema = std::fs::read_to_string(file).with_context(|| format!("--schema-file: cannot read {file}"))?;
    let schema_type = match &args.schema_type {
        Some(t) => t.parse::<SchemaType>().map_err(|e| anyhow::anyhow!("--schema-type: {e}"))?,
        None if file.ends_with(".proto") => SchemaType::Protobuf,
        None => SchemaType::Avro,
    };
    Ok(NewSchema { schema_type, schema, references: Vec::new(), id: None, version: None })
}

/// `--subject-strategy`: weir's short names or Confluent's.
fn strategy(text: &str) -> Result<SubjectNameStrategy> {
    match text {
        "topic" => Ok(SubjectNameStrategy::TopicName),
        "record" => Ok(SubjectNameStrategy::RecordName),
        "topic-record" | "topic_record" => Ok(SubjectNameStrategy::TopicRecordName),
        other => other.parse().map_err(|e| anyhow::anyhow!("--subject-strategy: {e}; or topic, record, topic-record")),
    }
}

/// The subject and version lines are encoded with: `--schema` as given, or `--schema-file` registered (or found)
/// under the subject its strategy names. The version must exist before any input is read.
async fn subject(
    registry: Option<&SchemaService>,
    args: &ProduceArgs,
    schema_file: Option<&NewSchema>,
    version: VersionSel,
) -> Result<Option<(String, VersionSel)>> {
    let Some(registry) = registry else { return Ok(None) };
    if let Some(subject) = &args.schema {
        registry.state().version(subject, version, false).map_err(|e| anyhow::anyhow!("--schema {subject}: {e}"))?;
        return Ok(Some((subject.clone(), version)));
    }
    let Some(new) = schema_file else { return Ok(None) };
    let parsed = weir_schema::Parsed::parse(new.schema_type, &new.schema, &[])
        .map_err(|e| anyhow::anyhow!("--schema-file: {e}"))?;
    let strategy = strategy(&args.subject_strategy)?;
    let subject = weir_schema::subject_name(&args.topic, Side::Value, strategy, parsed.record_name().as_deref())
        .map_err(|e| anyhow::anyhow!("--subject-strategy: {e}"))?;
    let (id, number) = registry
        .register(&subject, new)
        .await
        .map_err(|e| anyhow::anyhow!("--schema-file: registering under {subject}: {e} (error {})", e.code()))?;
    eprintln!("encoding with schema id {id}: {subject} version {number}");
    Ok(Some((subject, VersionSel::Number(number))))
}

/// Each line parsed as JSON and encoded with the subject's version, framed with its schema id.
fn encoder<'a>(
    registry: Option<&'a SchemaService>,
    target: Option<&'a (String, VersionSel)>,
) -> Result<Option<Box<Encode<'a>>>> {
    let (Some(registry), Some((subject, version))) = (registry, target) else { return Ok(None) };
    Ok(Some(Box::new(move |line: &str| {
        let value: serde_json::Value = serde_json::from_str(line).context("not a JSON value")?;
        let framed = registry.encode(subject, *version, &value).map_err(|e| anyhow::anyhow!("{e}"))?;
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
