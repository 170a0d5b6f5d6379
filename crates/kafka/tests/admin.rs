//! The admin APIs through a real client: confluent-kafka's AdminClient (the script `tests/python/admin_confluent.py`)
//! adds partitions, alters topic settings incrementally and wholesale, deletes records and groups' offsets and
//! groups, and describes the cluster; each refusal is checked to change nothing. The broker is checked afterwards:
//! the changes are durable across a restart.

use std::process::Command;

use weir_broker::group::{OffsetAndMetadata, TopicPartition};
use weir_broker::testing::broker_config;
use weir_broker::ProduceRecord;
use weir_kafka::{BackgroundBroker, ListenerConfig};

#[test]
fn confluent_kafka_admin_client_changes_topics_records_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    {
        let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
            .unwrap();
        let broker = w.broker.clone();
        broker.create_topic("adm", 2, Default::default()).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let p = broker.producer();
            for i in 0..30 {
                let mut r = ProduceRecord::new("adm", format!("v{i}"));
                r.partition = Some(0);
                p.send(r).await.unwrap();
            }
        });
        let om = |offset| OffsetAndMetadata { offset, metadata: String::new(), commit_timestamp_ms: 0 };
        broker
            .groups()
            .commit_offsets(
                "idle",
                "",
                -1,
                vec![(TopicPartition::new("adm", 0), om(5)), (TopicPartition::new("adm", 1), om(0))],
            )
            .unwrap();

        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/admin_confluent.py");
        let out = Command::new("python3").args([script, &w.addr.to_string()]).output().expect("python3 is required");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "admin_confluent.py failed (is confluent-kafka installed? scripts/test.sh installs it)\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for scenario in [
            "create-partitions",
            "incremental-alter-configs",
            "alter-configs",
            "delete-records",
            "groups",
            "describe-cluster",
        ] {
            assert!(stdout.contains(&format!("ok {scenario}")), "{scenario} did not pass:\n{stdout}");
        }
        assert!(broker.describe_group("idle").is_err(), "the group was deleted");
    }
    // After a restart: five partitions, the altered setting, the moved log start offset.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let broker = weir_broker::Broker::open(broker_config(dir.path())).unwrap();
        let d = broker.describe_topic("adm").unwrap();
        assert_eq!(d.partitions.len(), 5);
        assert_eq!(d.configs.get("segment.ms").map(String::as_str), Some("60000"));
        assert_eq!(broker.offsets("adm", 0).unwrap(), (10, 30));
        let records = broker.read("adm", 0, 10, 1 << 20).unwrap().records(10).unwrap();
        assert_eq!(records.first().map(|r| r.offset), Some(10));
        assert!(broker.read("adm", 0, 9, 1 << 20).is_err(), "records below the log start offset are gone");
        broker.shutdown();
    });
}
