//! The transaction coordinator's durability, at the broker: a transaction whose commit decision was written but
//! whose markers were not (a crash between the two) is completed when the broker opens again, its offsets applied;
//! a prepared abort likewise; and an open transaction is aborted once its timeout passes after a restart, so no
//! partition's last stable offset stays stuck.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use weir_broker::group::{OffsetAndMetadata, TopicPartition};
use weir_broker::testing::{open_broker, read_committed};
use weir_broker::transactions::{PendingOffset, TxnMeta, TxnState};
use weir_log::{FsyncPolicy, Log, LogConfig, Record};

/// Appends transactional records of `producer` to `t-<partition>`.
fn transactional_batch(broker: &weir_broker::Broker, partition: i32, producer: i64, epoch: i16, value: &str) {
    let mut buf = Vec::new();
    weir_log::batch::encode_for_producer(
        &[Record::from_value(value.to_string())],
        weir_log::now_ms(),
        producer,
        epoch,
        0,
        true,
        &mut buf,
    );
    broker.append_batches("t", partition, buf).unwrap();
}

/// Writes `meta` into the coordinator's log of a closed broker, as the coordinator itself would have.
fn write_state(data: &std::path::Path, meta: &TxnMeta) {
    let log =
        Log::open(data.join("transactions"), LogConfig { fsync: FsyncPolicy::Always, ..LogConfig::default() }).unwrap();
    let record = Record {
        key: Some(meta.transactional_id.clone().into_bytes().into()),
        value: Some(serde_json::to_vec(meta).unwrap().into()),
        headers: Vec::new(),
        timestamp: None,
    };
    log.append(&[record]).unwrap();
    log.close().unwrap();
}

async fn committed_values(broker: &std::sync::Arc<weir_broker::Broker>) -> Vec<String> {
    let records = read_committed(broker, "t").await;
    let mut out: Vec<String> =
        records.into_iter().map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()).collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_transactions_are_completed_and_open_ones_expire_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (commit_pid, abort_pid, open_pid) = {
        let broker = open_broker(&data);
        broker.create_topic("t", 2, Default::default()).unwrap();
        let txns = broker.transactions();
        let ids: Vec<(i64, i16)> = ["commit-me", "abort-me", "left-open"]
            .iter()
            .map(|id| {
                let p =
                    txns.init_producer_id(&broker, id, if *id == "left-open" { 1000 } else { 60_000 }, None).unwrap();
                txns.add_partitions(id, p.producer_id, p.epoch, &[("t".into(), 0), ("t".into(), 1)]).unwrap();
                (p.producer_id, p.epoch)
            })
            .collect();
        for (i, (pid, epoch)) in ids.iter().enumerate() {
            transactional_batch(&broker, 0, *pid, *epoch, &format!("v{i}-0"));
            transactional_batch(&broker, 1, *pid, *epoch, &format!("v{i}-1"));
        }
        assert_eq!(broker.last_stable_offset("t", 0).unwrap(), 0, "three transactions are open");
        broker.shutdown();
        (ids[0], ids[1], ids[2])
    };
    // The decisions, as the coordinator writes them before any marker: then the crash.
    let prepared = |id: &str, (pid, epoch): (i64, i16), state| TxnMeta {
        transactional_id: id.to_string(),
        producer_id: pid,
        producer_epoch: epoch,
        timeout_ms: 60_000,
        state,
        partitions: BTreeSet::from([("t".to_string(), 0), ("t".to_string(), 1)]),
        groups: BTreeSet::from(["g".to_string()]),
        offsets: if state == TxnState::PrepareCommit {
            vec![PendingOffset {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                offset: 7,
                metadata: String::new(),
            }]
        } else {
            Vec::new()
        },
        started_ms: weir_log::now_ms(),
        updated_ms: weir_log::now_ms(),
    };
    write_state(&data, &prepared("commit-me", commit_pid, TxnState::PrepareCommit));
    write_state(&data, &prepared("abort-me", abort_pid, TxnState::PrepareAbort));

    let broker = open_broker(&data);
    let txns = broker.transactions();
    assert_eq!(txns.describe("commit-me").unwrap().state, TxnState::CompleteCommit);
    assert_eq!(txns.describe("abort-me").unwrap().state, TxnState::CompleteAbort);
    let offsets = broker.groups().fetch_offsets("g", Some(&[TopicPartition::new("t", 0)]));
    assert_eq!(offsets[0].1.as_ref().map(|o: &OffsetAndMetadata| o.offset), Some(7), "the commit's offsets applied");
    // The open transaction (1 s timeout) holds the last stable offset until the coordinator aborts it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while broker.last_stable_offset("t", 0).unwrap() < broker.offsets("t", 0).unwrap().1 {
        assert!(Instant::now() < deadline, "the open transaction was never aborted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(txns.describe("left-open").unwrap().state, TxnState::CompleteAbort);
    assert!(txns.describe("left-open").unwrap().producer_epoch > open_pid.1, "its producer is fenced");
    assert_eq!(committed_values(&broker).await, ["v0-0", "v0-1"]);
    broker.shutdown();
}
