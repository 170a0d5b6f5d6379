//! rdkafka (librdkafka, the C client behind confluent-kafka and most non-Java clients) against weir's listener:
//! acks=all and idempotent production, a group of three with a member leaving mid-stream, commit and resume, and
//! seeking by timestamp.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use weir_broker::testing::broker_config;
use weir_kafka::{BackgroundBroker, ListenerConfig};

/// weir on its own runtime and threads: the clients below block (synchronous commits), and must not be able to starve
/// the broker that has to answer them.
fn weir() -> (tempfile::TempDir, BackgroundBroker) {
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    (dir, w)
}

fn producer(addr: &str, idempotent: bool) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("enable.idempotence", if idempotent { "true" } else { "false" })
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

fn consumer(addr: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .create()
        .unwrap()
}

async fn produce(p: &FutureProducer, topic: &str, n: usize, ts: Option<i64>) -> Vec<(i32, i64)> {
    let mut out = Vec::new();
    for i in 0..n {
        let key = format!("k{}", i % 23);
        let value = format!("v{i}");
        let mut record = FutureRecord::to(topic).key(&key).payload(&value);
        if let Some(ts) = ts {
            record = record.timestamp(ts + i as i64);
        }
        let d = p.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
        out.push((d.partition, d.offset));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_and_idempotent_production_store_each_record_once() {
    let (_dir, w) = weir();
    let broker = w.broker.clone();
    broker.create_topic("t", 3, Default::default()).unwrap();
    let addr = w.addr.to_string();
    for idempotent in [false, true] {
        let acks = produce(&producer(&addr, idempotent), "t", 300, None).await;
        let mut unique = acks.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 300, "idempotent={idempotent}: every record got its own offset");
    }
    let total: i64 = (0..3).map(|p| broker.offsets("t", p).unwrap().1).sum();
    assert_eq!(total, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_loses_nothing_when_a_member_leaves() {
    let (_dir, w) = weir();
    let broker = w.broker.clone();
    broker.create_topic("t", 6, Default::default()).unwrap();
    let addr = w.addr.to_string();

    // (member, partition, offset) of every record handed to the application, and each member's commits.
    let seen = Arc::new(Mutex::new(Vec::<(usize, i32, i64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for m in 0..3usize {
        let (addr, seen, stop) = (addr.clone(), seen.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = consumer(&addr, "rg");
            c.subscribe(&["t"]).unwrap();
            let mut mine = 0;
            while !stop.load(Ordering::Acquire) {
                // Member 0 leaves after 60 records, mid-stream.
                if m == 0 && mine >= 60 {
                    break;
                }
                let msg = match tokio::time::timeout(Duration::from_millis(300), c.recv()).await {
                    Ok(Ok(msg)) => msg,
                    Ok(Err(e)) => panic!("member {m}: {e}"),
                    Err(_) => continue,
                };
                seen.lock().push((m, msg.partition(), msg.offset()));
                mine += 1;
                // Commit what was processed before taking the next one: nothing committed may come back.
                c.commit_message(&msg, CommitMode::Sync).unwrap();
            }
            c.unsubscribe();
        }));
    }
    // Records flow once all three share the partitions, so the one that leaves has some of them mid-stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !broker.describe_group("rg").is_ok_and(|d| d.state == "Stable" && d.members.len() == 3) {
        assert!(tokio::time::Instant::now() < deadline, "the three members never formed a stable group");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produce(&producer(&addr, true), "t", 600, None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let distinct: std::collections::HashSet<(i32, i64)> = seen.lock().iter().map(|(_, p, o)| (*p, *o)).collect();
        if distinct.len() == 600 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {} of 600 records consumed", distinct.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().clone();
    let mut count: HashMap<(i32, i64), usize> = HashMap::new();
    for (_, p, o) in &seen {
        *count.entry((*p, *o)).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "records delivered again after being committed: {twice:?}");
    assert!(seen.iter().any(|(m, ..)| *m == 0) && seen.iter().any(|(m, ..)| *m != 0));
    let d = broker.describe_group("rg").unwrap();
    assert_eq!(d.offsets.iter().filter_map(|o| o.committed).sum::<i64>(), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_resume_and_seek_by_timestamp() {
    let (_dir, w) = weir();
    let broker = w.broker.clone();
    broker.create_topic("t", 1, Default::default()).unwrap();
    let addr = w.addr.to_string();
    let base = 1_700_000_000_000i64;
    produce(&producer(&addr, false), "t", 100, Some(base)).await;

    let c = consumer(&addr, "resume");
    c.subscribe(&["t"]).unwrap();
    for i in 0..40 {
        let msg = tokio::time::timeout(Duration::from_secs(10), c.recv()).await.unwrap().unwrap();
        assert_eq!(msg.offset(), i);
    }
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    c.unsubscribe();
    drop(c);

    let c = consumer(&addr, "resume");
    c.subscribe(&["t"]).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), c.recv()).await.unwrap().unwrap();
    assert_eq!(msg.offset(), 40, "resumes after the commit");
    drop(msg);
    drop(c);

    // Seek by timestamp: the first record at or after base + 72 is offset 72.
    let c = consumer(&addr, "seek");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("t", 0, Offset::Offset(base + 72)).unwrap();
    let found = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
    let offset = found.find_partition("t", 0).unwrap().offset();
    assert_eq!(offset, Offset::Offset(72));
    let mut assign = TopicPartitionList::new();
    assign.add_partition_offset("t", 0, offset).unwrap();
    c.assign(&assign).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), c.recv()).await.unwrap().unwrap();
    assert_eq!((msg.offset(), msg.payload()), (72, Some(&b"v72"[..])));
}
