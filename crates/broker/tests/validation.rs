//! Schema validation on the broker with a stand-in validator (the registry's is tested in weir-schema): the topic
//! settings accepted, refused, altered, described and kept across a restart; both append paths (a Kafka client's
//! RecordBatch bytes, plain and gzip-compressed, and the in-process producer's `send` and `send_all`) storing
//! nothing of a refused batch; topics without validation never asking the validator.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use weir_broker::kafka_code::INVALID_RECORD;
use weir_broker::testing::broker_config;
use weir_broker::validation::{
    KEY_STRATEGY, KEY_VALIDATION, PAYLOAD_VALIDATION, VALUE_STRATEGY, VALUE_VALIDATION, VALUE_VALIDATION_REDPANDA,
};
use weir_broker::{
    Broker, BrokerError, ConfigChange, ProduceRecord, RecordValidator, Side, SubjectNameStrategy, TopicValidation,
};
use weir_log::batch::{self, ControlType, HEADER_LEN};
use weir_log::Record;

/// Takes a key or value that starts with `ok`; counts its calls; refuses everything once told to.
#[derive(Debug, Default)]
struct Fake {
    calls: AtomicUsize,
    refuse_all: AtomicBool,
}

impl RecordValidator for Fake {
    fn check(
        &self,
        topic: &str,
        settings: &TopicValidation,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.refuse_all.load(Ordering::SeqCst) {
            return Err("everything is refused".into());
        }
        for (side, bytes) in [(Side::Key, key), (Side::Value, value)] {
            if settings.side(side).is_some() && bytes.is_some_and(|b| !b.starts_with(b"ok")) {
                return Err(format!("{side} on {topic} does not start with ok"));
            }
        }
        Ok(())
    }
}

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn record(key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> Record {
    Record { key: key.map(Bytes::from_static), value: value.map(Bytes::from_static), headers: vec![], timestamp: None }
}

fn plain_batch(records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::new();
    batch::encode(records, weir_log::now_ms(), &mut buf);
    buf
}

/// A batch as a client compressing with gzip sends it: the records section compressed, the header's codec bits,
/// length and CRC set to match.
fn gzip_batch(records: &[Record]) -> Vec<u8> {
    let plain = plain_batch(records);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain[HEADER_LEN..]).unwrap();
    let mut out = plain[..HEADER_LEN].to_vec();
    out.extend(gz.finish().unwrap());
    let attributes = i16::from_be_bytes([out[21], out[22]]) | 1;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

fn end(b: &Broker, topic: &str) -> i64 {
    b.offsets(topic, 0).unwrap().1
}

fn refused(e: &BrokerError) -> Vec<(usize, String)> {
    let inner = match e {
        BrokerError::Shared(inner) => &**inner,
        e => e,
    };
    match inner {
        BrokerError::RecordsRefused { errors, .. } => errors.iter().map(|r| (r.index, r.reason.clone())).collect(),
        other => panic!("expected RecordsRefused, got {other:?}"),
    }
}

fn open(dir: &std::path::Path) -> (Arc<Broker>, Arc<Fake>) {
    let b = Broker::open(broker_config(dir)).unwrap();
    let fake = Arc::new(Fake::default());
    b.set_record_validator(fake.clone());
    (b, fake)
}

#[tokio::test]
async fn settings_are_accepted_refused_altered_described_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(dir.path());
    for (bad, key) in [
        (&[(VALUE_VALIDATION, "maybe")][..], VALUE_VALIDATION),
        (&[(KEY_STRATEGY, "io.confluent.kafka.serializers.subject.Nope")], KEY_STRATEGY),
        (&[(PAYLOAD_VALIDATION, "1")], PAYLOAD_VALIDATION),
        (&[(VALUE_VALIDATION, "true"), (VALUE_VALIDATION_REDPANDA, "false")], VALUE_VALIDATION_REDPANDA),
        (&[("confluent.value.schema.validaton", "true")], "confluent.value.schema.validaton"),
    ] {
        match b.create_topic("t", 1, configs(bad)) {
            Err(e @ BrokerError::InvalidConfig(_)) => {
                assert_eq!(e.kafka_error_code(), weir_broker::kafka_code::INVALID_CONFIG);
                assert!(e.to_string().contains(key), "{bad:?}: {e}");
            }
            other => panic!("{bad:?} was not refused: {other:?}"),
        }
        assert!(b.topic("t").is_err(), "nothing created for {bad:?}");
    }

    let d = b
        .create_topic(
            "orders",
            1,
            configs(&[
                (VALUE_VALIDATION_REDPANDA, "true"),
                (VALUE_STRATEGY, "RecordNameStrategy"),
                ("retention.ms", "60000"),
            ]),
        )
        .unwrap();
    // Described with effective values under Confluent's names, Redpanda's alias as set, the log's settings too.
    assert_eq!(d.configs[VALUE_VALIDATION], "true");
    assert_eq!(d.configs[VALUE_VALIDATION_REDPANDA], "true");
    assert_eq!(d.configs[KEY_VALIDATION], "false");
    assert_eq!(d.configs[VALUE_STRATEGY], "io.confluent.kafka.serializers.subject.RecordNameStrategy");
    assert_eq!(d.configs[KEY_STRATEGY], "io.confluent.kafka.serializers.subject.TopicNameStrategy");
    assert_eq!(d.configs[PAYLOAD_VALIDATION], "false");
    assert_eq!(d.configs["retention.ms"], "60000");
    let v = *b.topic("orders").unwrap().validation().unwrap();
    assert_eq!(v.side(Side::Value), Some(SubjectNameStrategy::RecordName));
    assert_eq!(v.side(Side::Key), None);
    // Only what the topic sets is its own (DescribeConfigs' DYNAMIC_TOPIC_CONFIG).
    assert!(b.topic_overrides("orders").unwrap().contains_key(VALUE_VALIDATION_REDPANDA));

    // Altered: a bad value changes nothing; Set and Delete of the validation keys work, alone or with the log's.
    let bad = [ConfigChange::Set(PAYLOAD_VALIDATION.into(), "sometimes".into())];
    let e = b.alter_topic_config("orders", &bad, false, false).unwrap_err();
    assert!(e.to_string().contains(PAYLOAD_VALIDATION), "{e}");
    assert!(!b.topic("orders").unwrap().validation().unwrap().payload);
    let e = b.alter_topic_config("orders", &[ConfigChange::Delete("no.such.key".into())], false, false).unwrap_err();
    assert!(matches!(e, BrokerError::InvalidConfig(_)), "{e}");
    b.alter_topic_config(
        "orders",
        &[
            ConfigChange::Set(PAYLOAD_VALIDATION.into(), "true".into()),
            ConfigChange::Set(KEY_VALIDATION.into(), "true".into()),
            ConfigChange::Set("retention.ms".into(), "120000".into()),
        ],
        false,
        false,
    )
    .unwrap();
    let v = *b.topic("orders").unwrap().validation().unwrap();
    assert!(v.payload && v.key && v.value);
    assert_eq!(b.topic("orders").unwrap().log_config().retention_ms, Some(120_000));
    b.alter_topic_config("orders", &[ConfigChange::Delete(KEY_VALIDATION.into())], false, false).unwrap();
    assert!(!b.topic("orders").unwrap().validation().unwrap().key);
    b.shutdown();
    drop(b);

    // Reopened: the validation is read back from topic.json, not lost.
    let (b, _) = open(dir.path());
    let v = *b.topic("orders").unwrap().validation().unwrap();
    assert!(v.value && v.payload && !v.key);
    assert_eq!(v.value_strategy, SubjectNameStrategy::RecordName);
    // Every validation key deleted: the topic validates nothing again.
    let all = [VALUE_VALIDATION_REDPANDA, VALUE_STRATEGY, PAYLOAD_VALIDATION].map(|k| ConfigChange::Delete(k.into()));
    b.alter_topic_config("orders", &all, false, false).unwrap();
    assert!(b.topic("orders").unwrap().validation().is_none());
    assert_eq!(b.describe_topic("orders").unwrap().configs[VALUE_VALIDATION], "false");
}

#[tokio::test]
async fn kafka_batches_are_checked_whole_plain_and_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let (b, fake) = open(dir.path());
    b.create_topic("v", 1, configs(&[(VALUE_VALIDATION, "true")])).unwrap();
    b.create_topic("plain", 1, BTreeMap::new()).unwrap();

    for encode in [plain_batch as fn(&[Record]) -> Vec<u8>, gzip_batch] {
        let before = end(&b, "v");
        // One bad record among good ones: the batch is refused whole, with the record's index and reason.
        let bad = encode(&[
            record(None, Some(b"ok 1")),
            record(None, Some(b"nope")),
            record(None, None),
            record(None, Some(b"bad too")),
        ]);
        let e = b.append_batches("v", 0, bad).unwrap_err();
        assert_eq!(e.kafka_error_code(), INVALID_RECORD);
        assert_eq!(
            refused(&e),
            vec![(1, "value on v does not start with ok".into()), (3, "value on v does not start with ok".into())]
        );
        assert_eq!(
            e.to_string(),
            "record 1: value on v does not start with ok; record 3: value on v does not start with ok"
        );
        assert_eq!(end(&b, "v"), before, "nothing stored");
        // Good records (and a null value, a tombstone) are stored as sent.
        let good = encode(&[record(None, Some(b"ok 1")), record(Some(b"any key"), None)]);
        let info = b.append_batches("v", 0, good).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (before, before + 1));
    }

    // Two batches in one request: indexes run across them, and the good first batch is not stored either.
    let mut two = plain_batch(&[record(None, Some(b"ok a")), record(None, Some(b"ok b"))]);
    two.extend(plain_batch(&[record(None, Some(b"x"))]));
    let before = end(&b, "v");
    let e = b.append_batches("v", 0, two).unwrap_err();
    assert_eq!(refused(&e).iter().map(|r| r.0).collect::<Vec<_>>(), vec![2]);
    assert_eq!(end(&b, "v"), before);

    // A damaged batch is refused as the log refuses it, whether or not the topic validates.
    let mut damaged = plain_batch(&[record(None, Some(b"ok"))]);
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    for topic in ["v", "plain"] {
        let e = b.append_batches(topic, 0, damaged.clone()).unwrap_err();
        assert_eq!(e.kafka_error_code(), weir_broker::kafka_code::CORRUPT_MESSAGE, "{topic}: {e}");
    }

    // A topic without validation never asks the validator.
    let calls = fake.calls.load(Ordering::SeqCst);
    b.append_batches("plain", 0, plain_batch(&[record(None, Some(b"anything"))])).unwrap();
    b.producer().send(ProduceRecord::new("plain", "anything")).await.unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn keys_are_checked_when_the_topic_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(dir.path());
    b.create_topic("k", 1, configs(&[(KEY_VALIDATION, "true")])).unwrap();
    let e = b.append_batches("k", 0, plain_batch(&[record(Some(b"bad"), Some(b"ok"))])).unwrap_err();
    assert_eq!(refused(&e), vec![(0, "key on k does not start with ok".into())]);
    // Values are not checked on a key-only topic; a null key has nothing to check.
    b.append_batches("k", 0, plain_batch(&[record(Some(b"ok"), Some(b"bad")), record(None, Some(b"x"))])).unwrap();
    assert_eq!(end(&b, "k"), 2);
}

#[tokio::test]
async fn without_a_validator_a_validated_topic_refuses_records() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::open(broker_config(dir.path())).unwrap();
    b.create_topic("v", 1, configs(&[(VALUE_VALIDATION, "true")])).unwrap();
    let e = b.append_batches("v", 0, plain_batch(&[record(None, Some(b"ok"))])).unwrap_err();
    assert_eq!(e.to_string(), "schema validation is on for topic v but this broker has no schema registry");
    assert_eq!(e.kafka_error_code(), INVALID_RECORD);
    let e = b.producer().send(ProduceRecord::new("v", "ok")).await.unwrap_err();
    assert!(matches!(e, BrokerError::ValidationUnavailable { .. }), "{e:?}");
    let sends = b.producer().send_all(vec![ProduceRecord::new("v", "ok")]);
    for s in sends {
        let e = s.await.unwrap_err();
        assert!(e.to_string().contains("no schema registry"), "{e}");
    }
    assert_eq!(end(&b, "v"), 0);
    // Once one is installed, the same records go in.
    b.set_record_validator(Arc::new(Fake::default()));
    b.append_batches("v", 0, plain_batch(&[record(None, Some(b"ok"))])).unwrap();
    assert_eq!(end(&b, "v"), 1);
}

#[tokio::test]
async fn the_producer_checks_before_queueing_and_send_all_stores_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = open(dir.path());
    b.create_topic("v", 2, configs(&[(VALUE_VALIDATION, "true")])).unwrap();
    b.create_topic("plain", 1, BTreeMap::new()).unwrap();
    let producer = b.producer();
    let stored = |b: &Broker| b.offsets("v", 0).unwrap().1 + b.offsets("v", 1).unwrap().1;

    let e = producer.send(ProduceRecord::new("v", "not ok")).await.unwrap_err();
    assert_eq!(e.kafka_error_code(), INVALID_RECORD);
    assert_eq!(e.to_string(), "record 0: value on v does not start with ok");
    producer.send(ProduceRecord::new("v", "ok one")).await.unwrap();
    assert_eq!(stored(&b), 1);

    // One refused record among many (over two topics, both partitions): every future fails, nothing is stored,
    // not even on the topic without validation.
    let batch = vec![
        ProduceRecord::new("v", "ok a").with_key("a"),
        ProduceRecord::new("plain", "free"),
        ProduceRecord::new("v", "refused").with_key("b"),
        ProduceRecord::new("v", "ok c").with_key("c"),
    ];
    let results: Vec<_> = futures_join(producer.send_all(batch)).await;
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert_eq!(refused(e), vec![(2, "value on v does not start with ok".into())]);
    }
    producer.flush().await.unwrap();
    assert_eq!(stored(&b), 1);
    assert_eq!(end(&b, "plain"), 0);

    // All good: each future gets its own record's place, in order.
    let batch =
        vec![ProduceRecord::new("v", "ok a"), ProduceRecord::new("plain", "free"), ProduceRecord::new("v", "ok b")];
    let results: Vec<_> = futures_join(producer.send_all(batch)).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(stored(&b), 3);
    assert_eq!(end(&b, "plain"), 1);

    // A record's own failure (no such partition) stays its own; the others are stored.
    let mut wrong = ProduceRecord::new("v", "ok");
    wrong.partition = Some(9);
    let results = futures_join(producer.send_all(vec![wrong, ProduceRecord::new("v", "ok d")])).await;
    assert!(matches!(results[0], Err(BrokerError::UnknownPartition { .. })), "{results:?}");
    assert!(results[1].is_ok());

    // Turning validation on for a topic a producer already sends to takes effect on its next send.
    producer.send(ProduceRecord::new("plain", "anything")).await.unwrap();
    b.alter_topic_config("plain", &[ConfigChange::Set(VALUE_VALIDATION.into(), "true".into())], false, false).unwrap();
    let e = producer.send(ProduceRecord::new("plain", "anything")).await.unwrap_err();
    assert!(matches!(e, BrokerError::RecordsRefused { .. }), "{e:?}");
}

#[tokio::test]
async fn transaction_markers_are_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (b, fake) = open(dir.path());
    b.create_topic("v", 1, configs(&[(VALUE_VALIDATION, "true")])).unwrap();
    let pid = b.allocate_producer_id();
    let mut buf = Vec::new();
    batch::encode_for_producer(
        &[record(None, Some(b"ok in a transaction"))],
        weir_log::now_ms(),
        pid,
        0,
        0,
        true,
        &mut buf,
    );
    b.append_batches("v", 0, buf).unwrap();
    // Whatever the validator would say now, the coordinator's marker goes in.
    fake.refuse_all.store(true, Ordering::SeqCst);
    let calls = fake.calls.load(Ordering::SeqCst);
    b.append_marker("v", 0, pid, 0, ControlType::Commit).unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), calls);
    assert_eq!(end(&b, "v"), 2);
    assert_eq!(b.last_stable_offset("v", 0).unwrap(), 2);
}

/// Awaits the futures in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.await);
    }
    out
}
