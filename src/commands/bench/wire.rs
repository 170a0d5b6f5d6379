//! `weir bench wire`: throughput over the Kafka protocol, the way an application sees a broker. One librdkafka
//! producer sends `--count` records as fast as the server acknowledges them, then one librdkafka consumer reads them
//! all back. It only needs a Kafka-protocol address, so the same run measures `weir up` and any other Kafka-compatible
//! server (scripts/bench.sh puts Tansu beside weir).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::bar;
use crate::commands::kafka_client::{Remote, TIMEOUT};

#[derive(Debug, Args)]
pub struct WireArgs {
    /// Records to produce (and then consume).
    #[arg(long, default_value_t = 5_000_000)]
    count: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Partitions of the benchmark topic (created for the run and deleted afterwards).
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Producer acknowledgements: `all` (with the idempotent producer, Kafka's client default), `1` or `0`.
    #[arg(long, default_value = "all", value_parser = ["all", "1", "0"])]
    acks: String,
    /// librdkafka's linger.ms: how long the producer waits to fill a batch.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Name of the server in the results (`peer` in JSON).
    #[arg(long, default_value = "kafka-wire")]
    label: String,
    /// Print results as JSON lines.
    #[arg(long)]
    json: bool,
}

/// Counts delivery reports on librdkafka's polling thread.
#[derive(Debug, Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

#[derive(Debug, Clone, Default)]
struct Counting(Arc<Deliveries>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                if let Ok(mut first) = self.0.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

pub async fn run(server: Option<&str>, args: WireArgs) -> Result<()> {
    let Some(server) = server else {
        bail!("`weir bench wire` measures a running server: give it --server HOST:PORT (e.g. a `weir up`)");
    };
    let remote = Remote::new(server)?;
    let topic = format!("weir-bench-wire-{}-{}", std::process::id(), weir_log::now_ms());
    let admin = remote.admin()?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
    let new = NewTopic::new(&topic, args.partitions, TopicReplication::Fixed(1));
    for r in admin.create_topics([&new], &options).await.context("cannot create the benchmark topic")? {
        if let Err((name, code)) = r {
            bail!("cannot create {name} on {}: {code}", remote.name());
        }
    }
    let outcome = {
        let (remote, topic) = (remote.clone(), topic.clone());
        tokio::task::spawn_blocking(move || measure(&remote, &topic, &args)).await.context("benchmark thread")?
    };
    // Leave nothing behind, even when the measurement failed.
    let _ = admin.delete_topics(&[&topic], &options).await;
    outcome
}

fn measure(remote: &Remote, topic: &str, args: &WireArgs) -> Result<()> {
    let bytes = args.count * args.size as u64;
    let mut config = remote.config();
    config
        .set("acks", &args.acks)
        .set("enable.idempotence", if args.acks == "all" { "true" } else { "false" })
        .set("linger.ms", args.linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("batch.size", "1000000");
    let counting = Counting::default();
    let producer: ThreadedProducer<Counting> =
        ThreadedProducer::from_config_and_context(&config, counting.clone()).context("cannot create the producer")?;
    let value = vec![b'x'; args.size];
    let b = bar(args.count, args.json);
    b.set_message("produce");
    let started = Instant::now();
    for i in 0..args.count {
        let mut record = BaseRecord::<(), [u8], ()>::to(topic).payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_micros(500));
                }
                Err((e, _)) => bail!("produce failed after {i} records: {e}"),
            }
        }
        if i % 4096 == 0 {
            b.set_position(counting.0.ok.load(Ordering::Relaxed));
        }
    }
    producer.flush(Duration::from_secs(120)).context("the producer could not flush within 120 s")?;
    let secs = started.elapsed().as_secs_f64();
    b.finish_and_clear();
    let (ok, failed) = (counting.0.ok.load(Ordering::Relaxed), counting.0.failed.load(Ordering::Relaxed));
    if failed > 0 || ok != args.count {
        bail!(
            "{ok} of {} records acknowledged, {failed} failed: {:?}",
            args.count,
            counting.0.first_error.lock().ok().and_then(|f| f.clone())
        );
    }
    report(args, "produce", args.count, secs, bytes);
    drop(producer);

    let consumer: BaseConsumer = remote
        .create(
            remote
                .config()
                .set("group.id", "weir-bench-wire")
                .set("enable.partition.eof", "false")
                .set("fetch.wait.max.ms", "100"),
        )
        .context("cannot create the consumer")?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..args.partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let b = bar(args.count, args.json);
    b.set_message("consume");
    let started = Instant::now();
    let (mut seen, mut checksum) = (0u64, 0u64);
    let mut idle_since = Instant::now();
    while seen < args.count {
        match consumer.poll(Duration::from_millis(100)) {
            Some(m) => {
                let m = m.context("consume failed")?;
                checksum += m.payload().map_or(0, |v| v.len() as u64);
                seen += 1;
                idle_since = Instant::now();
                if seen % 4096 == 0 {
                    b.set_position(seen);
                }
            }
            None if idle_since.elapsed() > Duration::from_secs(10) => {
                bail!("consumer stalled after {seen} of {} records", args.count)
            }
            None => {}
        }
    }
    let secs = started.elapsed().as_secs_f64();
    b.finish_and_clear();
    if checksum != bytes {
        bail!("consumed {checksum} value bytes, expected {bytes}");
    }
    report(args, "consume", seen, secs, bytes);
    Ok(())
}

fn report(args: &WireArgs, scenario: &str, count: u64, secs: f64, bytes: u64) {
    let rate = count as f64 / secs;
    let mb = bytes as f64 / secs / 1e6;
    if args.json {
        let obj = serde_json::json!({
            "peer": args.label,
            "transport": "kafka-wire",
            "scenario": scenario,
            "size": args.size,
            "partitions": args.partitions,
            "acks": args.acks,
            "count": count,
            "records_per_s": rate,
            "mb_per_s": mb,
        });
        println!("{obj}");
    } else {
        println!(
            "{scenario:<8} {} over the Kafka protocol: {count} x {} B, {} partition(s), acks={}: {rate:.0} records/s, {mb:.1} MB/s ({secs:.2} s)",
            args.label, args.size, args.partitions, args.acks
        );
    }
}
