//! Test fixtures for the broker and every crate above it, behind the `testing` feature (not part of a release build's
//! API): a broker set up as tests want it, in a scratch directory or one of the test's, and the crash tests'
//! kill-and-restart harness (from weir-log, re-exported so crates above need only this one dev-dependency).

use std::path::PathBuf;
use std::sync::Arc;

pub use weir_log::testing::crash;

use crate::{Broker, BrokerConfig};

/// A broker configuration for tests over `data_dir`: the defaults, except that a group's first rebalance does not
/// wait `group.initial_rebalance_delay_ms` for more members (3 s by default, as in Kafka). A test's consumers join
/// when it says so; waiting for others only makes it slow.
pub fn broker_config(data_dir: impl Into<PathBuf>) -> BrokerConfig {
    let mut config = BrokerConfig::new(data_dir);
    config.group.initial_rebalance_delay_ms = 0;
    config
}

/// Opens a broker over `data_dir` with [`broker_config`], for a test that reopens a directory it owns (after a
/// crash, say) or keeps other files beside it. Panics if it cannot.
pub fn open_broker(data_dir: impl Into<PathBuf>) -> Arc<Broker> {
    Broker::open(broker_config(data_dir)).expect("the test broker opens")
}

/// A broker with [`broker_config`] in a new temporary directory, which is deleted when the returned `TempDir` is
/// dropped (keep it alive as long as the broker). The broker's data lives in its `data` subdirectory, so the test
/// may keep files of its own beside it (a SQLite store, say).
pub fn scratch_broker() -> (tempfile::TempDir, Arc<Broker>) {
    scratch_broker_with(|_| {})
}

/// [`scratch_broker`], with the configuration changed by `configure` first (shorter timeouts, no topic
/// auto-creation...).
pub fn scratch_broker_with(configure: impl FnOnce(&mut BrokerConfig)) -> (tempfile::TempDir, Arc<Broker>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = broker_config(dir.path().join("data"));
    configure(&mut config);
    let broker = Broker::open(config).expect("the test broker opens");
    (dir, broker)
}

/// Every record a read_committed reader finds on `topic` (all partitions, from the start), in the order read: it
/// reads until three polls of 200 ms in a row bring nothing. For tests checking what transactions left visible.
pub async fn read_committed(broker: &Arc<Broker>, topic: &str) -> Vec<crate::ConsumedRecord> {
    let config = crate::ConsumerConfig::new([topic]).isolation(weir_log::Isolation::ReadCommitted);
    let mut consumer = broker.consumer(config).expect("a read_committed consumer");
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 3 {
        let records = consumer.poll(std::time::Duration::from_millis(200)).await.expect("a read_committed poll");
        idle = if records.is_empty() { idle + 1 } else { 0 };
        out.extend(records);
    }
    out
}
