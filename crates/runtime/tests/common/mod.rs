//! The Bus contract, run against every backend (embedded, and Kafka through weir's own listener).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use weir_runtime::{Bus, OutgoingMessage, StartFrom, SubscribeOptions};

pub async fn drain(sub: &mut Box<dyn weir_runtime::Subscription>, n: usize) -> Vec<weir_runtime::Message> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = sub.next_batch(Duration::from_secs(5)).await.unwrap();
        assert!(!batch.is_empty(), "only {} of {n} messages arrived", out.len());
        out.extend(batch);
    }
    out
}

/// The Bus contract every backend must meet: keyed partitioning, group subscription, commits, resume, seek, latest.
pub async fn produce_subscribe_commit_and_resume(bus: Arc<dyn Bus>) {
    bus.ensure_topic("orders", 3).await.unwrap();
    bus.ensure_topic("orders", 3).await.unwrap(); // idempotent
    let mut keys = std::collections::HashMap::new();
    for i in 0..30 {
        let key = format!("customer-{}", i % 5);
        let d = bus
            .produce(OutgoingMessage::new("orders", format!("order-{i}")).key(key.clone()).header("n", i.to_string()))
            .await
            .unwrap();
        // One key, one partition.
        assert_eq!(*keys.entry(key).or_insert(d.partition), d.partition);
    }

    let mut sub = bus.subscribe(SubscribeOptions::new("billing", ["orders"])).await.unwrap();
    let first = drain(&mut sub, 30).await;
    assert_eq!(sub.assignment().len(), 3);
    assert!(first.iter().all(|m| m.header("n").is_some()));
    // Commit only what the first 10 by offset in each partition cover: offsets up to 3 per partition.
    let offsets: Vec<(String, i32, i64)> = (0..3).map(|p| ("orders".to_string(), p, 3)).collect();
    sub.commit_offsets(&offsets).await.unwrap();
    sub.close().await.unwrap();

    let mut sub = bus.subscribe(SubscribeOptions::new("billing", ["orders"])).await.unwrap();
    let again = drain(&mut sub, 30 - 9).await;
    assert!(again.iter().all(|m| m.offset >= 3), "committed messages came back");
    sub.commit().await.unwrap();
    sub.seek("orders", 0, 0).await.unwrap();
    let replay = sub.next_batch(Duration::from_secs(5)).await.unwrap();
    assert!(replay.iter().any(|m| m.partition == 0 && m.offset == 0), "seek did not rewind");
    sub.close().await.unwrap();

    let mut late = SubscribeOptions::new("audit", ["orders"]);
    late.start_from = StartFrom::Latest;
    let mut sub = bus.subscribe(late).await.unwrap();
    assert!(sub.next_batch(Duration::from_millis(200)).await.unwrap().is_empty());
    bus.produce(OutgoingMessage::new("orders", "new")).await.unwrap();
    let fresh = sub.next_batch(Duration::from_secs(5)).await.unwrap();
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].value.as_deref(), Some(&b"new"[..]));
}

/// A kept topic read without a group: every record from the start, and what is produced later; nothing to commit.
pub async fn kept_topics_read_without_a_group(bus: Arc<dyn Bus>) {
    bus.ensure_kept_topic("_state").await.unwrap();
    bus.ensure_kept_topic("_state").await.unwrap(); // idempotent
    for i in 0..5 {
        bus.produce(OutgoingMessage::new("_state", format!("v{i}")).key(format!("k{i}"))).await.unwrap();
    }
    let mut reader = bus.read(&["_state".to_string()], StartFrom::Earliest).await.unwrap();
    let seen = drain(&mut reader, 5).await;
    let values: Vec<_> = seen.iter().map(|m| m.value.clone().unwrap()).collect();
    assert_eq!(values, (0..5).map(|i| bytes::Bytes::from(format!("v{i}"))).collect::<Vec<_>>());
    bus.produce(OutgoingMessage::new("_state", "later").key("k0")).await.unwrap();
    let later = drain(&mut reader, 1).await;
    assert_eq!(later[0].offset, 5);
    // A second reader from the end sees only what comes after it started.
    let mut tail = bus.read(&["_state".to_string()], StartFrom::Latest).await.unwrap();
    assert!(tail.next_batch(Duration::from_millis(300)).await.unwrap().is_empty());
    bus.produce(OutgoingMessage::new("_state", "newest").key("k1")).await.unwrap();
    assert_eq!(drain(&mut tail, 1).await[0].value.as_deref(), Some(&b"newest"[..]));
    assert!(reader.commit().await.is_err() || reader.assignment().len() == 1, "a reader has no group to commit to");
}
