//! kafka-python against weir's listener: a producer with acks=all and a two-member consumer group (the script is
//! `tests/python/group.py`). kafka-python must be installed (`scripts/test.sh` installs it); without it this fails.

use std::process::Command;

use weir_broker::testing::broker_config;
use weir_kafka::{BackgroundBroker, ListenerConfig};

#[test]
fn kafka_python_producer_and_two_member_group() {
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let broker = w.broker.clone();
    broker.create_topic("py", 4, Default::default()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/group.py");
    let out = Command::new("python3").args([script, &w.addr.to_string(), "py"]).output().expect("python3 is required");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kafka-python run failed (is kafka-python installed? scripts/test.sh installs it)\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.lines().any(|l| l == "ok"), "{stdout}");
    assert_eq!(broker.offsets("py", 0).unwrap().0, 0);
    let total: i64 = (0..4).map(|p| broker.offsets("py", p).unwrap().1).sum();
    assert_eq!(total, 400);
    let d = broker.describe_group("py-group").unwrap();
    assert_eq!(d.offsets.iter().filter_map(|o| o.committed).sum::<i64>(), 400, "{:?}", d.offsets);
}
