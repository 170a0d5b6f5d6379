//! The broker's behaviour through its public API: topics, partitioning, producing, consuming, the data-dir lock.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_broker::partitioner::partition_for_key;
use weir_broker::testing::broker_config;
use weir_broker::{Broker, BrokerError, ConsumerConfig, OffsetReset, ProduceRecord};

#[tokio::test]
async fn topics_persist_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = Broker::open(broker_config(dir.path())).unwrap();
        let cfg = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        b.create_topic("orders", 3, cfg).unwrap();
        b.create_topic("audit", 1, BTreeMap::new()).unwrap();
        assert!(matches!(b.create_topic("orders", 1, BTreeMap::new()), Err(BrokerError::TopicExists(_))));
        assert!(matches!(b.create_topic("bad name", 1, BTreeMap::new()), Err(BrokerError::InvalidTopicName(_))));
        assert!(matches!(b.create_topic("zero", 0, BTreeMap::new()), Err(BrokerError::InvalidPartitions(0))));
        let bad_cfg = BTreeMap::from([("fsync".to_string(), "sometimes".to_string())]);
        assert!(matches!(b.create_topic("cfg", 1, bad_cfg), Err(BrokerError::InvalidConfig(_))));
        assert_eq!(b.list_topics(), vec!["audit", "orders"]);
        b.delete_topic("audit").unwrap();
        assert!(matches!(b.delete_topic("audit"), Err(BrokerError::UnknownTopic(_))));
        b.shutdown();
    }
    let b = Broker::open(broker_config(dir.path())).unwrap();
    assert_eq!(b.list_topics(), vec!["orders"]);
    let d = b.describe_topic("orders").unwrap();
    assert_eq!(d.partitions.len(), 3);
    assert_eq!(d.configs.get("retention.ms").map(String::as_str), Some("1000"));
}

#[tokio::test]
async fn one_process_owns_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(broker_config(dir.path())).unwrap();
    match Broker::open(broker_config(dir.path())) {
        Err(BrokerError::Locked { owner, .. }) => {
            assert!(owner.contains(&std::process::id().to_string()), "{owner}")
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    b.shutdown();
    drop(b);
    Broker::open(broker_config(dir.path())).unwrap();
}

#[tokio::test]
async fn keyed_records_land_where_kafka_puts_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(broker_config(dir.path())).unwrap();
    b.create_topic("t", 6, BTreeMap::new()).unwrap();
    let p = b.producer();
    for i in 0..200 {
        let key = format!("customer-{i}");
        let meta = p.send(ProduceRecord::new("t", "v").with_key(key.clone())).await.unwrap();
        assert_eq!(meta.partition, partition_for_key(key.as_bytes(), 6));
    }
    // Keyless records are spread over every partition (sticky per batch, moving on).
    let mut seen = HashSet::new();
    for _ in 0..20_000 {
        seen.insert(p.send(ProduceRecord::new("t", vec![0u8; 100])).await.unwrap().partition);
    }
    assert_eq!(seen.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_are_all_stored_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(broker_config(dir.path())).unwrap();
    b.create_topic("t", 1, BTreeMap::new()).unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let p = b.producer();
        tasks.push(tokio::spawn(async move {
            let acks: Vec<_> = (0..2000).map(|i| p.send(ProduceRecord::new("t", format!("{w}-{i}")))).collect();
            let mut offsets = Vec::new();
            for a in acks {
                offsets.push(a.await.unwrap().offset);
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let offsets = t.await.unwrap();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "one sender's records keep their order");
        all.extend(offsets);
    }
    all.sort_unstable();
    assert_eq!(all, (0..16_000).collect::<Vec<i64>>());
}

#[tokio::test]
async fn oversized_records_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(broker_config(dir.path())).unwrap();
    let cfg = BTreeMap::from([("max.message.bytes".to_string(), "1000".to_string())]);
    b.create_topic("t", 1, cfg).unwrap();
    let p = b.producer();
    let small = p.send(ProduceRecord::new("t", "ok"));
    let big = p.send(ProduceRecord::new("t", vec![0u8; 5000]));
    let small2 = p.send(ProduceRecord::new("t", "ok"));
    assert_eq!(small.await.unwrap().offset, 0);
    assert_eq!(big.await.unwrap_err().kafka_error_code(), 10);
    assert_eq!(small2.await.unwrap().offset, 1);
}

#[tokio::test]
async fn a_waiting_consumer_is_woken_by_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(broker_config(dir.path())).unwrap();
    b.create_topic("t", 2, BTreeMap::new()).unwrap();
    let mut c = b.consumer(ConsumerConfig::new(["t"])).unwrap();
    assert!(c.poll(Duration::from_millis(50)).await.unwrap().is_empty());
    let p = b.producer();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        p.send(ProduceRecord::new("t", "hello").with_key("k")).await.unwrap();
        Instant::now()
    });
    let records = c.poll(Duration::from_secs(10)).await.unwrap();
    let woke = Instant::now();
    let sent = sender.await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
    assert!(
        woke.duration_since(sent) < Duration::from_millis(100),
        "woken {:?} after the append",
        woke.duration_since(sent)
    );
}

#[tokio::test]
async fn seeking_by_offset_and_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(broker_config(dir.path())).unwrap();
    b.create_topic("t", 1, BTreeMap::new()).unwrap();
    let p = b.producer();
    for i in 0..100i64 {
        let mut r = ProduceRecord::new("t", i.to_string());
        r.timestamp = Some(1_000_000 + i * 1000);
        p.send(r).await.unwrap();
    }
    let mut c = b.consumer(ConsumerConfig::new(["t"])).unwrap();
    c.seek_to_timestamp(1_000_000 + 42_500).await.unwrap();
    let r = c.poll(Duration::from_secs(1)).await.unwrap();
    assert_eq!(r[0].offset, 43);
    assert_eq!(r[0].timestamp, 1_043_000);
    c.seek("t", 0, 7).unwrap();
    assert_eq!(c.poll(Duration::from_secs(1)).await.unwrap()[0].offset, 7);

    let mut latest = ConsumerConfig::new(["t"]);
    latest.auto_offset_reset = OffsetReset::Latest;
    let mut c = b.consumer(latest).unwrap();
    assert!(c.poll(Duration::from_millis(50)).await.unwrap().is_empty());
    p.send(ProduceRecord::new("t", "new")).await.unwrap();
    assert_eq!(c.poll(Duration::from_secs(1)).await.unwrap()[0].offset, 100);
}

#[tokio::test]
async fn committed_offsets_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = Broker::open(broker_config(dir.path())).unwrap();
        b.create_topic("t", 1, BTreeMap::new()).unwrap();
        let p = b.producer();
        for i in 0..10 {
            p.send(ProduceRecord::new("t", i.to_string())).await.unwrap();
        }
        let mut c = b.consumer(ConsumerConfig::new(["t"]).group("g")).unwrap();
        let mut got = 0;
        while got < 6 {
            let r = c.poll(Duration::from_secs(5)).await.unwrap();
            got += r.len();
        }
        let tp = weir_broker::group::TopicPartition { topic: "t".into(), partition: 0 };
        c.commit_offsets(vec![(tp, 6)]).await.unwrap();
        c.close().await.unwrap();
        let d = b.describe_group("g").unwrap();
        assert_eq!(d.offsets[0].committed, Some(6));
        assert_eq!(d.offsets[0].lag, Some(4));
        // No clean shutdown: the broker is dropped as after a crash of everything but the kernel.
        std::mem::forget(b);
    }
    let dir2 = dir.path().to_owned();
    // The forgotten broker still holds the lock in this process; a crash would release it. Simulate by copying.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&dir2, copy.path());
    let b = Broker::open(broker_config(copy.path())).unwrap();
    let mut c = b.consumer(ConsumerConfig::new(["t"]).group("g")).unwrap();
    let r = c.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r[0].offset, 6);
    let _ = Arc::strong_count(&b);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != ".lock" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_corrupt_partition_goes_offline_and_the_rest_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = Broker::open(broker_config(dir.path())).unwrap();
        let cfg = BTreeMap::from([("segment.bytes".to_string(), "2048".to_string())]);
        b.create_topic("t", 2, cfg).unwrap();
        let p = b.producer();
        for i in 0..200 {
            p.send(ProduceRecord { partition: Some(i % 2), ..ProduceRecord::new("t", vec![b'v'; 64]) }).await.unwrap();
        }
        b.shutdown();
    }
    // Damage a sealed segment of partition 1 and its index, so it must be rescanned and the rescan finds the damage.
    let pdir = dir.path().join("topics/t/1");
    let first = pdir.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&first, bytes).unwrap();
    std::fs::write(pdir.join(format!("{:020}.index", 0)), b"x").unwrap();

    let b = Broker::open(broker_config(dir.path())).unwrap();
    let d = b.describe_topic("t").unwrap();
    let reason = d.partitions[1].offline.clone().expect("partition 1 is offline");
    assert!(reason.contains("00000000000000000000.log") && reason.contains("at byte"), "{reason}");
    assert!(d.partitions[0].offline.is_none());
    let p = b.producer();
    let meta = p.send(ProduceRecord { partition: Some(0), ..ProduceRecord::new("t", "still here") }).await.unwrap();
    assert_eq!(meta.offset, 100);
    let err = p.send(ProduceRecord { partition: Some(1), ..ProduceRecord::new("t", "x") }).await.unwrap_err();
    assert_eq!(err.kafka_error_code(), weir_broker::kafka_code::KAFKA_STORAGE_ERROR, "{err}");
    let mut c = b.consumer(ConsumerConfig { partitions: Some(vec![0]), ..ConsumerConfig::new(["t"]) }).unwrap();
    let mut got = 0;
    loop {
        let n = c.poll(Duration::from_millis(300)).await.unwrap().len();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, 101);
}

#[tokio::test]
async fn the_retention_task_deletes_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = broker_config(dir.path());
    cfg.retention_check_interval = Duration::from_millis(100);
    let b = Broker::open(cfg).unwrap();
    let topic_cfg = BTreeMap::from([
        ("segment.bytes".to_string(), "4096".to_string()),
        ("retention.bytes".to_string(), "8192".to_string()),
    ]);
    b.create_topic("t", 1, topic_cfg).unwrap();
    let p = b.producer();
    for _ in 0..500 {
        p.send(ProduceRecord::new("t", vec![b'v'; 100])).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A pass may already have run while records were still arriving; wait for one after the last.
        let part = b.describe_topic("t").unwrap().partitions[0].clone();
        if part.log_start_offset > 0 && part.size_bytes < 20_000 {
            assert_eq!(part.log_end_offset, 500);
            break;
        }
        assert!(Instant::now() < deadline, "retention never brought the log under its limit: {part:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The red team's poison batch: a valid CRC over a header that claims two records and a body that holds one.
/// Appended "trusted" (as the in-process producer's own batches are), the way a batch stored before appends were
/// fully validated sits in the log.
fn store_poison_batch(b: &Broker, topic: &str) {
    let mut batch = Vec::new();
    weir_log::batch::encode(&[weir_log::Record::from_value("poison")], weir_log::now_ms(), &mut batch);
    batch[23..27].copy_from_slice(&1i32.to_be_bytes()); // last offset delta
    batch[57..61].copy_from_slice(&2i32.to_be_bytes()); // record count
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    let log = b.topic(topic).unwrap().partition(0).unwrap().log().unwrap().clone();
    log.append_batches(batch, true).unwrap();
}

/// A stored batch no reader can decode is skipped by in-process consumers, reported by the broker's health, and
/// never stops the group (issue 13, F2: it stopped the analytics aggregator after every restart).
#[tokio::test]
async fn an_undecodable_stored_batch_is_skipped_and_the_group_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(broker_config(dir.path())).unwrap();
    b.create_topic("t", 1, BTreeMap::new()).unwrap();
    let p = b.producer();
    p.send(ProduceRecord::new("t", "before")).await.unwrap();
    store_poison_batch(&b, "t");
    p.send(ProduceRecord::new("t", "after")).await.unwrap();

    let mut cfg = ConsumerConfig::new(["t"]);
    cfg.group = Some("g".into());
    let mut c = b.consumer(cfg.clone()).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(200)).await.unwrap() {
            got.push((r.offset, String::from_utf8(r.value.unwrap().to_vec()).unwrap()));
        }
    }
    assert_eq!(got, [(0, "before".to_string()), (3, "after".to_string())]);
    assert_eq!(b.health().skipped_batches, 1);
    c.commit().await.unwrap();
    c.close().await.unwrap();
    // Resuming from the commit finds nothing left: the skipped batch is behind the group.
    let mut again = b.consumer(cfg).unwrap();
    assert!(again.poll(Duration::from_millis(500)).await.unwrap().is_empty());
    assert_eq!(b.health().skipped_batches, 1);
}
