//! Static membership (KIP-345) with librdkafka (the rdkafka crate): a group of three members with
//! `group.instance.id`, each restarted in turn within its session timeout, keeps its generation (no rebalance) and
//! consumes every record once; a second process with a member's instance id fences the first, whose client then
//! fails with FENCED_INSTANCE_ID.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::Message;
use weir_broker::testing::broker_config;
use weir_broker::{Broker, ProduceRecord};
use weir_kafka::{BackgroundBroker, ListenerConfig};

fn member(addr: &str, instance: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "static")
        .set("group.instance.id", instance)
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "range")
        .create()
        .unwrap();
    c.subscribe(&["st"]).unwrap();
    c
}

fn produce(broker: &std::sync::Arc<Broker>, runtime: &tokio::runtime::Runtime, from: usize, to: usize) {
    runtime.block_on(async {
        let p = broker.producer();
        for i in from..to {
            p.send(ProduceRecord::new("st", format!("r{i}")).with_key(format!("k{i}"))).await.unwrap();
        }
    });
}

/// Polls every member until `seen` holds `total` records (each record counted per value), committing as it goes.
fn consume(members: &[BaseConsumer], seen: &mut BTreeMap<String, usize>, total: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < total {
        assert!(Instant::now() < deadline, "consumed {} of {total}", seen.len());
        for c in members {
            if let Some(m) = c.poll(Duration::from_millis(50)) {
                let m = m.unwrap();
                *seen.entry(String::from_utf8(m.payload().unwrap().to_vec()).unwrap()).or_insert(0) += 1;
                c.commit_message(&m, CommitMode::Sync).unwrap();
            }
        }
    }
}

/// Polls every member for a while, so the group settles and any rebalance would show.
fn settle(members: &[BaseConsumer], seen: &mut BTreeMap<String, usize>, how_long: Duration) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        for c in members {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                *seen.entry(String::from_utf8(m.payload().unwrap().to_vec()).unwrap()).or_insert(0) += 1;
                c.commit_message(&m, CommitMode::Sync).unwrap();
            }
        }
    }
}

#[test]
fn static_members_restart_without_a_rebalance_and_a_duplicate_instance_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let broker = w.broker.clone();
    broker.create_topic("st", 3, Default::default()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let addr = w.addr.to_string();
    produce(&broker, &runtime, 0, 300);

    let mut members: Vec<BaseConsumer> = ["i0", "i1", "i2"].iter().map(|i| member(&addr, i)).collect();
    let mut seen = BTreeMap::new();
    consume(&members, &mut seen, 300);
    // Wait for the group to hold all three, stable.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        settle(&members, &mut seen, Duration::from_millis(300));
        let g = broker.describe_group("static").unwrap();
        if g.state == "Stable" && g.members.len() == 3 && g.members.iter().all(|m| !m.assignment.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the group never settled: {g:?}");
    }
    let generation = broker.describe_group("static").unwrap().generation;

    // Each member restarts in turn (closing without leaving, as librdkafka's static members do).
    for i in 0..3 {
        let instance = format!("i{i}");
        drop(std::mem::replace(&mut members[i], member(&addr, &instance)));
        let from = 300 + i * 50;
        produce(&broker, &runtime, from, from + 50);
        consume(&members, &mut seen, from + 50);
        settle(&members, &mut seen, Duration::from_secs(1));
        let g = broker.describe_group("static").unwrap();
        assert_eq!(g.generation, generation, "restarting {instance} rebalanced the group: {g:?}");
        assert_eq!(g.members.len(), 3);
    }
    assert_eq!(seen.len(), 450);
    assert!(seen.values().all(|n| *n == 1), "a record was consumed twice");

    // A second process with i1's instance id takes over; the first is fenced.
    let usurper = member(&addr, "i1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let fenced = loop {
        assert!(Instant::now() < deadline, "the replaced member was never fenced");
        let _ = usurper.poll(Duration::from_millis(50));
        match members[1].poll(Duration::from_millis(50)) {
            Some(Err(KafkaError::MessageConsumptionFatal(code))) | Some(Err(KafkaError::MessageConsumption(code)))
                if code == RDKafkaErrorCode::FencedInstanceId =>
            {
                break true
            }
            _ => {}
        }
        if let Some((code, _)) = members[1].client().fatal_error() {
            assert_eq!(code, RDKafkaErrorCode::FencedInstanceId);
            break true;
        }
    };
    assert!(fenced);

    // The usurper holds i1's place: it gets i1's partitions. Waiting for them also serves the assignment event
    // before the consumer is dropped: librdkafka hangs in rd_kafka_assign when a consumer is closed with that event
    // still queued (confluentinc/librdkafka#4884).
    let deadline = Instant::now() + Duration::from_secs(30);
    while usurper.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the usurper never got i1's partitions");
        let _ = usurper.poll(Duration::from_millis(50));
    }
    for c in [&members[0], &members[2]] {
        let _ = c.poll(Duration::from_millis(50));
    }
}
