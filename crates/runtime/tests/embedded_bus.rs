//! The Bus over the embedded broker, used the way a system uses it: through the trait object only.

mod common;

use std::sync::Arc;

use weir_broker::testing::open_broker;
use weir_runtime::{Bus, EmbeddedBus, OutgoingMessage};

fn bus(dir: &std::path::Path) -> Arc<dyn Bus> {
    Arc::new(EmbeddedBus::new(open_broker(dir)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_subscribe_commit_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    common::produce_subscribe_commit_and_resume(bus(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_topics_read_without_a_group() {
    let dir = tempfile::tempdir().unwrap();
    common::kept_topics_read_without_a_group(bus(dir.path())).await;
}

#[tokio::test]
async fn bad_requests_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus(dir.path());
    assert!(matches!(bus.ensure_topic("bad name", 1).await, Err(weir_runtime::BusError::Invalid(_))));
    assert!(matches!(bus.ensure_topic("t", 0).await, Err(weir_runtime::BusError::Invalid(_))));
    bus.ensure_topic("t", 1).await.unwrap();
    let m = OutgoingMessage { partition: Some(5), ..OutgoingMessage::new("t", "x") };
    assert!(matches!(bus.produce(m).await, Err(weir_runtime::BusError::Invalid(_))));
}
