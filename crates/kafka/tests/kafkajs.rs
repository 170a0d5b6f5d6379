//! kafkajs (a pure-JavaScript Kafka client) against weir's listener: transactions with read_committed consumers and
//! offsets sent to the transaction, and its admin client (the script `tests/node/kafkajs.js`). kafkajs is installed by
//! `scripts/test.sh` into `~/.cache/weir/node` (or `$WEIR_NODE_MODULES`); without it this fails.

use std::path::PathBuf;
use std::process::Command;

use weir_broker::testing::broker_config;
use weir_broker::ProduceRecord;
use weir_kafka::{BackgroundBroker, ListenerConfig};

fn node_modules() -> PathBuf {
    match std::env::var_os("WEIR_NODE_MODULES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/weir/node/node_modules"),
    }
}

#[test]
fn kafkajs_transactions_and_admin() {
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let broker = w.broker.clone();
    broker.create_topic("js", 2, Default::default()).unwrap();
    broker.create_topic("js-in", 1, Default::default()).unwrap();
    broker.create_topic("js-out", 1, Default::default()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let p = broker.producer();
        for i in 0..20 {
            p.send(ProduceRecord::new("js-in", format!("in-{i}"))).await.unwrap();
        }
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/kafkajs.js");
    let modules = node_modules();
    assert!(
        modules.join("kafkajs").exists(),
        "kafkajs is not installed in {} (scripts/test.sh installs it)",
        modules.display()
    );
    let out = Command::new("node")
        .args([script, &w.addr.to_string()])
        .env("NODE_PATH", &modules)
        .output()
        .expect("node is required (Debian's nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kafkajs.js failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for scenario in [
        "kafkajs-commit-and-abort",
        "kafkajs-offsets",
        "kafkajs-create-partitions",
        "kafkajs-alter-configs",
        "kafkajs-delete-records",
        "kafkajs-groups-and-cluster",
    ] {
        assert!(stdout.contains(&format!("ok {scenario}")), "{scenario} did not pass:\n{stdout}");
    }
    assert_eq!(broker.describe_topic("js").unwrap().partitions.len(), 4);
}
