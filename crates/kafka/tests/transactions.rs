//! Transactions with real clients against weir's listener: confluent-kafka (librdkafka 2.x) and aiokafka
//! transactional producers and read_committed consumers (the scripts in `tests/python/`), then what the broker holds
//! afterwards: the markers, the last stable offset, the group offsets a transaction committed. The Python clients must
//! be installed (`scripts/test.sh` installs them); without them these fail.

use std::process::Command;

use weir_broker::testing::broker_config;
use weir_broker::transactions::TxnState;
use weir_kafka::{BackgroundBroker, ListenerConfig};

fn run_script(name: &str, addr: &str) -> String {
    let script = format!("{}/tests/python/{name}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3").args([&script, addr]).output().expect("python3 is required");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed (are its clients installed? scripts/test.sh installs them)\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.lines().any(|l| l == "ok"), "{stdout}");
    stdout
}

#[test]
fn confluent_kafka_transactions_commit_abort_fence_expire_and_carry_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let broker = w.broker.clone();
    broker.create_topic("tx", 2, Default::default()).unwrap();
    for t in ["tx-open", "tx-expire", "tx-in", "tx-out"] {
        broker.create_topic(t, 1, Default::default()).unwrap();
    }
    let stdout = run_script("transactions_confluent.py", &w.addr.to_string());
    for scenario in ["commit-and-abort", "fencing", "last-stable-offset", "timeout", "consume-transform-produce"] {
        assert!(stdout.contains(&format!("ok {scenario}")), "{scenario} did not pass:\n{stdout}");
    }
    // Every transaction is decided: each partition's last stable offset is its end.
    for (topic, partitions) in [("tx", 2), ("tx-open", 1), ("tx-expire", 1), ("tx-out", 1)] {
        for p in 0..partitions {
            let (_, end) = broker.offsets(topic, p).unwrap();
            assert_eq!(broker.last_stable_offset(topic, p).unwrap(), end, "{topic}-{p}");
        }
    }
    // The coordinator's view, as DescribeTransactions gives it.
    let relay = broker.transactions().describe("tx-relay").unwrap();
    assert_eq!(relay.state, TxnState::CompleteCommit);
    let expired = broker.transactions().describe("tx-expire").unwrap();
    assert!(expired.producer_epoch >= 1, "the timeout bumped the epoch: {expired:?}");
    let group = broker.describe_group("relay").unwrap();
    assert_eq!(group.offsets.iter().find(|o| o.topic == "tx-in").and_then(|o| o.committed), Some(20));
}

#[test]
fn aiokafka_and_kafka_python_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let broker = w.broker.clone();
    broker.create_topic("aio", 2, Default::default()).unwrap();
    for t in ["aio-in", "aio-out", "kp"] {
        broker.create_topic(t, 1, Default::default()).unwrap();
    }
    let stdout = run_script("transactions_pure.py", &w.addr.to_string());
    for scenario in ["aiokafka-commit-and-abort", "aiokafka-fencing", "aiokafka-offsets", "kafka-python"] {
        assert!(stdout.contains(&format!("ok {scenario}")), "{scenario} did not pass:\n{stdout}");
    }
    let aio = broker.transactions().describe("aio-tx").unwrap();
    assert!(aio.producer_epoch >= 1, "the second producer bumped the epoch: {aio:?}");
}
