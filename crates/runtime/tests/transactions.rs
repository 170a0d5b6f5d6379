//! Consume-transform-produce exactly once on the bus, embedded and over Kafka (rdkafka against weir's listener):
//! the transactional `Runner` relays a topic, a poison record becoming a dead letter in the same transaction; a
//! second subscription with the same transactional id fences the first; and a relay on the Kafka bus killed with
//! SIGKILL again and again leaves, under read_committed, each input exactly once in its output.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use weir_broker::testing::{broker_config, crash, read_committed};
use weir_broker::{Broker, ConsumerConfig, Isolation};
use weir_kafka::{BackgroundBroker, ListenerConfig};
use weir_runtime::{
    Bus, BusError, EmbeddedBus, HandlerError, KafkaBus, Message, OutgoingMessage, Runner, RunnerConfig,
    SubscribeOptions, TransformHandler,
};

/// `in-N` → `out-N` on `<prefix>-out`, headers kept and one added; `in-13` is poison.
struct Relay {
    out: String,
}

#[async_trait]
impl TransformHandler for Relay {
    async fn handle(&self, m: &Message) -> Result<Vec<OutgoingMessage>, HandlerError> {
        let v = String::from_utf8_lossy(m.value.as_deref().unwrap_or_default()).into_owned();
        if v == "in-13" {
            return Err(HandlerError::Permanent("thirteen".into()));
        }
        let mut out = OutgoingMessage::new(self.out.clone(), v.replace("in-", "out-")).header("hop", "relay");
        out.key = m.key.clone();
        out.headers.extend(m.headers.iter().cloned());
        Ok(vec![out])
    }
}

/// Every value a read_committed reader finds on `topic`, with how often.
async fn committed_values(broker: &Arc<Broker>, topic: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in read_committed(broker, topic).await {
        *seen.entry(String::from_utf8(r.value.unwrap().to_vec()).unwrap()).or_insert(0) += 1;
    }
    seen
}

/// Awaits one step of a test, failing it with the step's name if it takes over a minute: a hang says where it is.
async fn step<T>(name: &str, f: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), f).await.unwrap_or_else(|_| panic!("{name}: over 60 s"));
    eprintln!("{name}: {:?}", started.elapsed());
    out
}

async fn committed_offsets(broker: &Broker, group: &str) -> i64 {
    broker.describe_group(group).map(|g| g.offsets.iter().filter_map(|o| o.committed).sum()).unwrap_or(0)
}

/// The relay over `bus`, checked on `broker` (the one under the bus).
async fn relay_exactly_once(bus: Arc<dyn Bus>, broker: Arc<Broker>, prefix: &str) {
    let (input, output) = (format!("{prefix}-in"), format!("{prefix}-out"));
    bus.ensure_topic(&input, 3).await.unwrap();
    bus.ensure_topic(&output, 2).await.unwrap();
    bus.ensure_topic(&format!("{input}.dlq"), 1).await.unwrap();
    let messages = (0..300)
        .map(|i| OutgoingMessage::new(input.clone(), format!("in-{i}")).key(format!("k{}", i % 7)).header("trace", "t"))
        .collect();
    bus.produce_all(messages).await.unwrap();

    let group = format!("{prefix}-relay");
    let mut config = RunnerConfig::new(group.clone(), [input.clone()]);
    config.batch_size = 40;
    let runner = Runner::transactional(bus.clone(), config, format!("{prefix}-relay-1"), Relay { out: output.clone() });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_offsets(&broker, &group).await < 300 {
        assert!(Instant::now() < deadline, "the relay committed {} of 300", committed_offsets(&broker, &group).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let stats = step("the relay stopping", task).await.unwrap().unwrap();
    assert_eq!((stats.processed, stats.dead_lettered), (300, 1));

    let out = committed_values(&broker, &output).await;
    assert_eq!(out.len(), 299, "{out:?}");
    assert!(out.values().all(|n| *n == 1), "a record was relayed twice: {out:?}");
    assert!(!out.contains_key("out-13"));
    let dlq = committed_values(&broker, &format!("{input}.dlq")).await;
    assert_eq!(dlq, BTreeMap::from([("in-13".to_string(), 1)]));
    // Headers travel with the records.
    let mut c = broker.consumer(ConsumerConfig::new([output.as_str()]).isolation(Isolation::ReadCommitted)).unwrap();
    let first = c.poll(Duration::from_secs(5)).await.unwrap().remove(0);
    let headers: Vec<&str> = first.headers.iter().map(|h| h.key.as_str()).collect();
    assert_eq!(headers, ["hop", "trace"]);

    // A second subscription with the same transactional id fences the first.
    let options = || {
        let mut o = SubscribeOptions::new(format!("{prefix}-fence"), [input.clone()]);
        o.transactional_id = Some(format!("{prefix}-fenced-id"));
        o.read_committed = true;
        o
    };
    let one = |v: &str| vec![OutgoingMessage::new(output.clone(), v.to_string())];
    let mut first = step("subscribing", bus.subscribe(options())).await.unwrap();
    step("the first transaction", first.commit_transaction(one("first"), &[])).await.unwrap();
    let mut second = step("subscribing again", bus.subscribe(options())).await.unwrap();
    step("the second transaction", second.commit_transaction(one("second"), &[])).await.unwrap();
    match step("the fenced transaction", first.commit_transaction(one("zombie"), &[])).await {
        Err(BusError::Fenced(_)) => {}
        other => panic!("the fenced subscription's transaction: {other:?}"),
    }
    let out = committed_values(&broker, &output).await;
    assert_eq!((out.get("first"), out.get("second"), out.get("zombie")), (Some(&1), Some(&1), None));
    step("closing the fenced subscription", first.close()).await.unwrap();
    step("closing the other", second.close()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_relay_is_exactly_once_and_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(broker_config(dir.path())).unwrap();
    relay_exactly_once(Arc::new(EmbeddedBus::new(broker.clone())), broker.clone(), "emb").await;
    broker.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_relay_is_exactly_once_and_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::connect(&format!("kafka://{}", w.addr)).unwrap());
    relay_exactly_once(bus, w.broker.clone(), "kafka").await;
}

const CHILD: &str = "WEIR_TXN_RELAY_CHILD";
const INPUTS: i64 = 3000;

/// The child: a transactional relay on the Kafka bus at the address given, until the group has committed every
/// input (read through a consumer of its own, as any Kafka tool would).
async fn relay_child(addr: &str) {
    // A static member: each restart takes the killed one's place at once instead of waiting out its session, so
    // progress resumes quickly even on a loaded machine.
    let url = format!("kafka://{addr}?session.timeout.ms=6000&group.instance.id=crash-relay-instance");
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::connect(&url).unwrap());
    let mut config = RunnerConfig::new("crash-relay", ["crash-in"]);
    config.batch_size = 50;
    let runner = Runner::transactional(bus, config, "crash-relay-1", Relay { out: "crash-out".into() });
    let addr = addr.to_string();
    let all_committed = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let addr = addr.clone();
            let committed = tokio::task::spawn_blocking(move || committed_over_kafka(&addr)).await.unwrap();
            if committed >= INPUTS {
                return;
            }
        }
    };
    runner.run(all_committed).await.unwrap();
}

/// The group's committed offsets summed, asked over the Kafka protocol.
fn committed_over_kafka(addr: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", addr).set("group.id", "crash-relay").create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition("crash-in", p);
    }
    match consumer.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(tpl) => tpl.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o > 0).sum(),
        Err(_) => 0,
    }
}

#[test]
fn a_kafka_relay_killed_again_and_again_relays_each_input_once() {
    if let Some(addr) = std::env::var_os(CHILD) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(relay_child(&addr.to_string_lossy()));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let broker = w.broker.clone();
    broker.create_topic("crash-in", 3, Default::default()).unwrap();
    broker.create_topic("crash-out", 2, Default::default()).unwrap();
    broker.create_topic("crash-in.dlq", 1, Default::default()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let p = broker.producer();
        for i in 0..INPUTS {
            p.send(weir_broker::ProduceRecord::new("crash-in", format!("in-{i}")).with_key(format!("k{i}")))
                .await
                .unwrap();
        }
    });
    let addr = w.addr.to_string();
    let spawn = || {
        crash::rerun_test("a_kafka_relay_killed_again_and_again_relays_each_input_once", CHILD, &addr).spawn().unwrap()
    };
    let progress = || runtime.block_on(committed_offsets(&broker, "crash-relay"));
    crash::kill_and_restart("the transactional relay", 6, INPUTS, spawn, progress);
    let out = runtime.block_on(committed_values(&broker, "crash-out"));
    let missing: Vec<i64> = (0..INPUTS).filter(|i| *i != 13 && !out.contains_key(&format!("out-{i}"))).collect();
    assert!(missing.is_empty(), "inputs never relayed: {missing:?}");
    let twice: Vec<_> = out.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "inputs relayed more than once: {twice:?}");
    assert_eq!(out.len() as i64, INPUTS - 1);
}

/// Forwards each message unchanged (key, value, headers) to `out`: weir's hop of the ring.
struct Forward {
    out: String,
}

#[async_trait]
impl TransformHandler for Forward {
    async fn handle(&self, m: &Message) -> Result<Vec<OutgoingMessage>, HandlerError> {
        Ok(vec![OutgoingMessage {
            topic: self.out.clone(),
            key: m.key.clone(),
            value: m.value.clone(),
            headers: m.headers.clone(),
            partition: None,
            timestamp: None,
        }])
    }
}

/// A record as the ring test compares it: key, value, headers.
type Content = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

/// A stored record as the ring test reads it: (offset, key, value, headers).
type Stored = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

/// A read_committed reader's view of a topic, in order.
type Seen = Vec<Stored>;

async fn committed_records(broker: &Arc<Broker>, topic: &str) -> Seen {
    let records = read_committed(broker, topic).await;
    records
        .into_iter()
        .map(|r| {
            let headers = r.headers.into_iter().map(|h| (h.key, h.value.unwrap_or_default().to_vec())).collect();
            (r.offset, r.key.map(|k| k.to_vec()), r.value.map(|v| v.to_vec()), headers)
        })
        .collect()
}

/// The ring's rdkafka hop, as the origin's rust_rdkafka service: group `rust_rdkafka`, a transactional producer
/// forwarding each message with the consumed offset in its transaction. Runs until `stop`; returns how many it
/// forwarded.
fn rdkafka_hop(addr: &str, source: &str, destination: &str, stop: &std::sync::atomic::AtomicBool) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::Message as _;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "rust_rdkafka")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[source]).unwrap();
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("transactional.id", format!("rust-{}", rand::random::<u64>()))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(10)).unwrap();
    let mut forwarded = 0;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m.unwrap();
        producer.begin_transaction().unwrap();
        let mut record = BaseRecord::<[u8], [u8]>::to(destination);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(v) = m.payload() {
            record = record.payload(v);
        }
        if let Some(h) = m.headers() {
            record = record.headers(h.detach());
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
        while producer.in_flight_count() > 0 {
            producer.poll(Duration::from_millis(1));
        }
        let mut offsets = rdkafka::TopicPartitionList::new();
        offsets.add_partition_offset(source, m.partition(), rdkafka::Offset::Offset(m.offset() + 1)).unwrap();
        let metadata = consumer.group_metadata().unwrap();
        producer.send_offsets_to_transaction(&offsets, &metadata, Duration::from_secs(10)).unwrap();
        producer.commit_transaction(Duration::from_secs(10)).unwrap();
        forwarded += 1;
    }
    forwarded
}

/// primait/kafka-playground's relay ring `one → two → three → one`, rebuilt: an aiokafka hop (Python), weir's own
/// hop (the transactional Runner on an embedded bus over the same broker), and an rdkafka hop (Rust), each
/// forwarding unchanged with headers in a transaction with its consumed offsets. After a lap, every topic holds
/// exactly what its upstream hop consumed: each message once, key, value and headers intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_relay_ring_forwards_each_message_exactly_once() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(
        broker_config(dir.path().join("data")),
        ListenerConfig::new("127.0.0.1:0".parse().unwrap()),
    )
    .unwrap();
    let broker = w.broker.clone();
    for t in ["one", "two", "three"] {
        broker.create_topic(t, 1, Default::default()).unwrap();
    }
    let p = broker.producer();
    for i in 0..N {
        let mut record = weir_broker::ProduceRecord::new("one", format!("Message {i}")).with_key(i.to_string());
        record.headers.push(("traceparent".into(), format!("00-{:032x}-{:016x}-01", i + 1, i + 1).into()));
        p.send(record).await.unwrap();
    }
    let addr = w.addr.to_string();

    // The Python hop, one → two.
    let stop_file = dir.path().join("stop");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/aiokafka_hop.py");
    let python = std::process::Command::new("python3")
        .args([script, &addr, "one", "two", stop_file.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with aiokafka is required (scripts/test.sh installs it)");
    // weir's hop, two → three.
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    let weir_hop =
        Runner::transactional(bus, RunnerConfig::new("weir", ["two"]), "weir-hop", Forward { out: "three".into() });
    let (stop_weir, weir_stopped) = tokio::sync::oneshot::channel::<()>();
    let weir_task = tokio::spawn(weir_hop.run(async move {
        let _ = weir_stopped.await;
    }));
    // The rdkafka hop, three → one.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rust_task = {
        let (addr, stop) = (addr.clone(), stop.clone());
        tokio::task::spawn_blocking(move || rdkafka_hop(&addr, "three", "one", &stop))
    };

    // Around the ring once: every message back on `one`.
    let deadline = Instant::now() + Duration::from_secs(90);
    while committed_offsets(&broker, "rust_rdkafka").await < N as i64 {
        assert!(Instant::now() < deadline, "the ring did not complete a lap in 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(&stop_file, b"").unwrap();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let _ = stop_weir.send(());
    let python = python.wait_with_output().unwrap();
    assert!(python.status.success(), "the Python hop failed: {}", String::from_utf8_lossy(&python.stderr));
    weir_task.await.unwrap().unwrap();
    let forwarded_by_rust = rust_task.await.unwrap();
    assert!(forwarded_by_rust >= N);

    // Each topic is exactly the prefix of its upstream topic that the hop's group committed.
    let committed = |group: &'static str| {
        let broker = broker.clone();
        async move { committed_offsets(&broker, group).await }
    };
    let (one, two, three) = (
        committed_records(&broker, "one").await,
        committed_records(&broker, "two").await,
        committed_records(&broker, "three").await,
    );
    let content = |records: &[Stored]| -> Vec<Content> {
        records.iter().map(|(_, k, v, h)| (k.clone(), v.clone(), h.clone())).collect()
    };
    let prefix =
        |records: &Seen, below: i64| content(&records.iter().filter(|r| r.0 < below).cloned().collect::<Vec<_>>());
    assert_eq!(content(&two), prefix(&one, committed("python-aiokafka-consumer-one").await), "one → two (aiokafka)");
    assert_eq!(content(&three), prefix(&two, committed("weir").await), "two → three (weir)");
    assert_eq!(content(&one[N..]), prefix(&three, committed("rust_rdkafka").await), "three → one (rdkafka)");
    assert!(one.len() >= 2 * N, "a whole lap is back on one: {} records", one.len());
    // Headers intact after a lap.
    assert_eq!(content(&one[N..2 * N]), content(&one[..N]));
}
