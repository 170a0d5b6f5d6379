//! The Kafka backend of the Bus (rdkafka), against weir's own Kafka listener: the same contract as the embedded one.

mod common;

use std::sync::Arc;

use weir_broker::{Broker, BrokerConfig};
use weir_kafka::{KafkaListener, ListenerConfig};
use weir_runtime::{Bus, KafkaBus};

/// weir with its listener on its own runtime, so blocking client calls cannot starve it.
fn weir(dir: std::path::PathBuf) -> (String, std::sync::mpsc::Sender<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (broker, listener): (Arc<Broker>, KafkaListener) = runtime.block_on(async {
            let mut config = BrokerConfig::new(&dir);
            config.group.initial_rebalance_delay_ms = 0;
            let broker = Broker::open(config).unwrap();
            let listener = KafkaListener::start(broker.clone(), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
                .await
                .unwrap();
            (broker, listener)
        });
        tx.send(listener.local_addr.to_string()).unwrap();
        let _ = stop_rx.recv();
        listener.stop();
        broker.shutdown();
    });
    (rx.recv().unwrap(), stop_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_bus_meets_the_bus_contract() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = weir(dir.path().to_owned());
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::connect(&format!("kafka://{addr}")).unwrap());
    common::produce_subscribe_commit_and_resume(bus).await;
}
