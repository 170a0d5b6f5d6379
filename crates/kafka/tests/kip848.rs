//! KIP-848 (Kafka 4's consumer group protocol) with librdkafka's `group.protocol=consumer` (confluent-kafka, the script
//! `tests/python/kip848.py`): a group formed by ConsumerGroupHeartbeat with the assignment computed by weir, beside a
//! classic group on the same topic; a third member joining takes a share without the others stopping. The broker's
//! view is checked afterwards: committed offsets for both groups.

use std::process::Command;

use weir_broker::testing::broker_config;
use weir_broker::ProduceRecord;
use weir_kafka::{BackgroundBroker, ListenerConfig};

#[test]
fn a_kip848_group_and_a_classic_group_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let broker = w.broker.clone();
    broker.create_topic("kt", 4, Default::default()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let p = broker.producer();
        for i in 0..200 {
            p.send(ProduceRecord::new("kt", format!("r{i}")).with_key(format!("k{i}"))).await.unwrap();
        }
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kip848.py");
    let out = Command::new("python3").args([script, &w.addr.to_string()]).output().expect("python3 is required");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kip848.py failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for scenario in ["side-by-side", "server-side-assignment", "incremental-rebalance", "regex-subscription"] {
        assert!(stdout.contains(&format!("ok {scenario}")), "{scenario} did not pass:\n{stdout}");
    }
    for group in ["kip848", "classic"] {
        let committed: i64 = broker.describe_group(group).unwrap().offsets.iter().filter_map(|o| o.committed).sum();
        assert_eq!(committed, 200, "{group}");
    }
}
