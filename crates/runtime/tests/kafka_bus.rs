//! The Kafka backend of the Bus (rdkafka), against weir's own Kafka listener: the same contract as the embedded one.

mod common;

use std::sync::Arc;

use weir_broker::testing::broker_config;
use weir_kafka::{BackgroundBroker, ListenerConfig};
use weir_runtime::{Bus, KafkaBus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_bus_meets_the_bus_contract() {
    let dir = tempfile::tempdir().unwrap();
    // Its own runtime and threads, so blocking client calls cannot starve it.
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::connect(&format!("kafka://{}", w.addr)).unwrap());
    common::produce_subscribe_commit_and_resume(bus.clone()).await;
    common::kept_topics_read_without_a_group(bus).await;
}
