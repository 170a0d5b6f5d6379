//! `weir bench wire`: throughput over the Kafka protocol, the way an application sees a broker. One librdkafka
//! producer sends `--count` records as fast as the server acknowledges them, then one librdkafka consumer reads them
//! all back. It only needs a Kafka-protocol address, so the same run measures `weir up` and any other Kafka-compatible
//! server (scripts/bench.sh puts Tansu beside weir).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
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
    /// librdkafka's linger.ms, how long the producer waits to fill a batch (default: 5, librdkafka's own default;
    /// 0 with --rate, so latency is not the linger).
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Measure produce latency instead of throughput: this many records per second, each timed from its intended
    /// send time to its acknowledgement (open loop, as `weir bench latency`).
    #[arg(long, value_name = "RECORDS_PER_S")]
    rate: Option<u64>,
    /// How long the latency run lasts, in seconds.
    #[arg(long, default_value_t = 10, requires = "rate")]
    seconds: u64,
    /// Produce in transactions of this many records each (a transactional producer: begin, send, commit), and
    /// report transactions per second beside records per second.
    #[arg(long, value_name = "RECORDS", conflicts_with = "rate", value_parser = clap::value_parser!(u64).range(1..))]
    transaction_size: Option<u64>,
    /// The consumer's isolation level: `read_committed` reads only committed transactions (below the last stable
    /// offset), `read_uncommitted` everything.
    #[arg(long, default_value = "read_uncommitted", value_parser = ["read_committed", "read_uncommitted"])]
    isolation: String,
    /// A librdkafka property for the producer and the consumer, as kcat's -X (repeatable), e.g.
    /// `-X batch.num.messages=100000`.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    property: Vec<String>,
    /// A setting of the benchmark topic, as `weir topics create --config` (repeatable), e.g.
    /// `--topic-config confluent.value.schema.validation=true`.
    #[arg(long, value_name = "KEY=VALUE")]
    topic_config: Vec<String>,
    /// Frame each value with this schema id (Confluent's wire format: magic byte 0 and the id before the payload),
    /// to measure a topic that validates schemas.
    #[arg(long, value_name = "ID")]
    framed: Option<i32>,
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
    let mut new = NewTopic::new(&topic, args.partitions, TopicReplication::Fixed(1));
    for setting in &args.topic_config {
        let (key, value) =
            setting.split_once('=').with_context(|| format!("--topic-config {setting:?}: expected KEY=VALUE"))?;
        new = new.set(key, value);
    }
    for r in admin.create_topics([&new], &options).await.context("cannot create the benchmark topic")? {
        if let Err((name, code)) = r {
            bail!("cannot create {name} on {}: {code}", remote.name());
        }
    }
    let outcome = {
        let (remote, topic) = (remote.clone(), topic.clone());
        tokio::task::spawn_blocking(move || match args.rate {
            Some(rate) => latency(&remote, &topic, &args, rate),
            None => measure(&remote, &topic, &args),
        })
        .await
        .context("benchmark thread")?
    };
    // Leave nothing behind, even when the measurement failed.
    let _ = admin.delete_topics(&[&topic], &options).await;
    outcome
}

/// The client configuration: `defaults`, then the `-X` properties over them.
fn client_config(remote: &Remote, args: &WireArgs, defaults: &[(&str, String)]) -> Result<rdkafka::ClientConfig> {
    let mut config = remote.config();
    for (k, v) in defaults {
        config.set(*k, v);
    }
    for p in &args.property {
        let Some((k, v)) = p.split_once('=') else { bail!("-X takes KEY=VALUE, got {p:?}") };
        config.set(k.trim(), v.trim());
    }
    Ok(config)
}

fn producer_config(remote: &Remote, args: &WireArgs, default_linger_ms: u64) -> Result<rdkafka::ClientConfig> {
    let idempotent = if args.acks == "all" { "true" } else { "false" };
    client_config(
        remote,
        args,
        &[
            ("acks", args.acks.clone()),
            ("enable.idempotence", idempotent.into()),
            ("linger.ms", args.linger_ms.unwrap_or(default_linger_ms).to_string()),
            ("queue.buffering.max.messages", "1000000".into()),
            ("queue.buffering.max.kbytes", "1048576".into()),
            ("batch.size", "1000000".into()),
        ],
    )
}

fn measure(remote: &Remote, topic: &str, args: &WireArgs) -> Result<()> {
    let bytes = args.count * args.size as u64;
    if let Some(n) = args.transaction_size {
        produce_transactions(remote, topic, args, n)?;
        return consume(remote, topic, args);
    }
    let config = producer_config(remote, args, 5)?;
    let counting = Counting::default();
    let producer: ThreadedProducer<Counting> =
        ThreadedProducer::from_config_and_context(&config, counting.clone()).context("cannot create the producer")?;
    let value = bench_value(args);
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
    consume(remote, topic, args)
}

/// Produces `args.count` records in transactions of `size` (begin, send, commit), with a producer polled on this
/// thread: a `ThreadedProducer`'s polling thread would add its 100 ms poll interval to every commit, and measure
/// the client rather than the server.
fn produce_transactions(remote: &Remote, topic: &str, args: &WireArgs, size: u64) -> Result<()> {
    let mut config = producer_config(remote, args, 0)?;
    config.set("transactional.id", format!("{topic}-producer"));
    let counting = Counting::default();
    let producer: BaseProducer<Counting> =
        BaseProducer::from_config_and_context(&config, counting.clone()).context("cannot create the producer")?;
    producer.init_transactions(TIMEOUT).context("init_transactions")?;
    let value = bench_value(args);
    let b = bar(args.count, args.json);
    b.set_message("produce (transactions)");
    let started = Instant::now();
    let (mut sent, mut transactions) = (0u64, 0u64);
    while sent < args.count {
        producer.begin_transaction().context("begin_transaction")?;
        let end = (sent + size).min(args.count);
        while sent < end {
            let mut record = BaseRecord::<(), [u8], ()>::to(topic).payload(&value[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(1));
                    }
                    Err((e, _)) => bail!("produce failed after {sent} records: {e}"),
                }
            }
            sent += 1;
        }
        // The records' delivery reports first, served here in short polls: rdkafka's commit_transaction flushes with
        // one poll of the whole remaining timeout, which waits for librdkafka's next internal wake-up (~100 ms) after
        // the last report, and would cap this at ten transactions a second whatever the server.
        let flushing = Instant::now();
        while producer.in_flight_count() > 0 {
            if flushing.elapsed() > TIMEOUT {
                bail!("the transaction's records were not acknowledged within {TIMEOUT:?}");
            }
            producer.poll(Duration::from_millis(1));
        }
        producer.commit_transaction(TIMEOUT).context("commit_transaction")?;
        transactions += 1;
        b.set_position(sent);
    }
    let secs = started.elapsed().as_secs_f64();
    b.finish_and_clear();
    let (ok, failed) = (counting.0.ok.load(Ordering::Relaxed), counting.0.failed.load(Ordering::Relaxed));
    if failed > 0 || ok != args.count {
        bail!("{ok} of {} records acknowledged, {failed} failed", args.count);
    }
    report_transactions(args, transactions, secs, args.count * args.size as u64);
    Ok(())
}

/// One consumer reads the topic's `args.count` records back from the beginning, at `args.isolation`.
fn consume(remote: &Remote, topic: &str, args: &WireArgs) -> Result<()> {
    let bytes = args.count * args.size as u64;

    let consumer_config = client_config(
        remote,
        args,
        &[
            ("group.id", "weir-bench-wire".into()),
            // librdkafka otherwise pauses a partition's fetching for a second whenever its queue holds
            // queued.min.messages, which leaves a fast consumer idle most of the time.
            ("fetch.queue.backoff.ms", "1".into()),
            ("enable.partition.eof", "false".into()),
            ("fetch.wait.max.ms", "100".into()),
            ("isolation.level", args.isolation.clone()),
        ],
    )?;
    let consumer: BaseConsumer = remote.create(&consumer_config).context("cannot create the consumer")?;
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
    let scenario = if args.isolation == "read_committed" { "consume-read-committed" } else { "consume" };
    report(args, scenario, seen, secs, bytes);
    Ok(())
}

/// A transactional produce run: transactions and records per second.
fn report_transactions(args: &WireArgs, transactions: u64, secs: f64, bytes: u64) {
    let size = args.transaction_size.unwrap_or(1);
    let (tps, rps, mb) = (transactions as f64 / secs, args.count as f64 / secs, bytes as f64 / secs / 1e6);
    if args.json {
        let obj = serde_json::json!({
            "peer": args.label,
            "transport": "kafka-wire",
            "scenario": "produce-transactional",
            "size": args.size,
            "partitions": args.partitions,
            "transaction_records": size,
            "transactions": transactions,
            "transactions_per_s": tps,
            "count": args.count,
            "records_per_s": rps,
            "mb_per_s": mb,
        });
        emit(&obj.to_string());
    } else {
        emit(&format!(
            "produce  {} over the Kafka protocol, transactions of {size} x {} B: {transactions} transactions, {tps:.0} transactions/s, {rps:.0} records/s, {mb:.1} MB/s ({secs:.2} s)",
            args.label, args.size
        ));
    }
}

/// Acknowledgement latency of each record, from its intended send time, into one histogram.
#[derive(Debug, Clone)]
struct Timing(Arc<std::sync::Mutex<Histogram<u64>>>, Arc<AtomicU64>);

impl ClientContext for Timing {}

impl ProducerContext for Timing {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, intended: Box<Instant>) {
        if result.is_err() {
            self.1.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let micros = intended.elapsed().as_micros() as u64;
        if let Ok(mut h) = self.0.lock() {
            h.saturating_record(micros.max(1));
        }
    }
}

fn latency(remote: &Remote, topic: &str, args: &WireArgs, rate: u64) -> Result<()> {
    if rate == 0 {
        bail!("--rate must be positive");
    }
    let hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let timing = Timing(Arc::new(std::sync::Mutex::new(hist)), Arc::new(AtomicU64::new(0)));
    let producer: ThreadedProducer<Timing> =
        ThreadedProducer::from_config_and_context(&producer_config(remote, args, 0)?, timing.clone())
            .context("cannot create the producer")?;
    let value = bench_value(args);
    // Connect and learn the topic's leader before the clock starts.
    let warm_up = BaseRecord::<(), [u8], Box<Instant>>::with_opaque_to(topic, Box::new(Instant::now()));
    producer.send(warm_up.payload(&value[..])).map_err(|(e, _)| e)?;
    producer.flush(TIMEOUT)?;
    if let Ok(mut h) = timing.0.lock() {
        h.reset();
    }
    let total = rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    for i in 0..total {
        let intended = start + interval.mul_f64(i as f64);
        super::wait_until(intended);
        let record =
            BaseRecord::<(), [u8], Box<Instant>>::with_opaque_to(topic, Box::new(intended)).payload(&value[..]);
        if let Err((e, _)) = producer.send(record) {
            bail!("produce failed after {i} records: {e}");
        }
    }
    producer.flush(Duration::from_secs(60)).context("the producer could not flush within 60 s")?;
    let failed = timing.1.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {total} records failed");
    }
    let h = timing.0.lock().map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?.clone();
    let q = |p: f64| h.value_at_quantile(p);
    if args.json {
        let obj = serde_json::json!({
            "peer": args.label,
            "transport": "kafka-wire",
            "scenario": "latency",
            "size": args.size,
            "partitions": args.partitions,
            "acks": args.acks,
            "rate": rate,
            "count": h.len(),
            "p50_us": q(0.5),
            "p99_us": q(0.99),
            "p999_us": q(0.999),
            "max_us": h.max(),
        });
        emit(&obj.to_string());
    } else {
        emit(&format!(
            "latency  {} over the Kafka protocol: {rate} records/s x {} s, {} B, acks={}: p50 {} us, p99 {} us, p99.9 {} us, max {} us (open loop, from intended send time)",
            args.label, args.seconds, args.size, args.acks, q(0.5), q(0.99), q(0.999), h.max()
        ));
    }
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
        emit(&obj.to_string());
    } else {
        emit(&format!(
            "{scenario:<8} {} over the Kafka protocol: {count} x {} B, {} partition(s), acks={}: {rate:.0} records/s, {mb:.1} MB/s ({secs:.2} s)",
            args.label, args.size, args.partitions, args.acks
        ));
    }
}

/// One result line on stdout; a reader that went away (`| head`) is not an error worth a panic.
fn emit(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// A record's value: `size` bytes, framed with `--framed`'s schema id in its first five when given.
fn bench_value(args: &WireArgs) -> Vec<u8> {
    let mut value = vec![b'x'; args.size];
    if let Some(id) = args.framed {
        let header = weir_schema::wire::frame(id, &[]);
        if value.len() < header.len() {
            value.resize(header.len(), b'x');
        }
        value[..header.len()].copy_from_slice(&header);
    }
    value
}
