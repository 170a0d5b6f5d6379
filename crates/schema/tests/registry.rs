//! The registry as clients use it: Confluent's own client library and serializers (confluent-kafka, Python) against
//! weir's registry on the embedded bus, across a restart; and two registry instances on one bus registering at the
//! same moment, agreeing on every id and version.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use weir_broker::testing::open_broker;
use weir_http::{HttpConfig, HttpServer};
use weir_runtime::{Bus, EmbeddedBus};
use weir_schema::{NewSchema, SchemaService, ServiceConfig, VersionSel};

async fn serve(bus: Arc<dyn Bus>) -> (Arc<SchemaService>, HttpServer) {
    let service = SchemaService::start(bus, ServiceConfig::default()).await.unwrap();
    let server = HttpServer::start_app(
        HttpConfig::new("127.0.0.1:0".parse().unwrap()),
        weir_schema::api::router(service.clone()),
    )
    .await
    .unwrap();
    (service, server)
}

async fn python(url: String, phase: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/registry_confluent.py");
    let phase = phase.to_string();
    let out = tokio::task::spawn_blocking(move || Command::new("python3").args([script, &url, &phase]).output())
        .await
        .unwrap()
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "confluent-kafka against weir's registry failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_registers_evolves_and_round_trips_and_the_registry_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path());
    let (service, server) = serve(Arc::new(EmbeddedBus::new(broker.clone()))).await;
    let out = python(format!("http://{}", server.local_addr), "first").await;
    assert!(out.contains("all checks passed"), "{out}");
    server.stop().await;
    drop(service);
    broker.shutdown();
    drop(broker);

    // A new process's view: the broker reopened from its files, the registry rebuilt from `_schemas`.
    let broker = open_broker(dir.path());
    let (_service, server) = serve(Arc::new(EmbeddedBus::new(broker.clone()))).await;
    let out = python(format!("http://{}", server.local_addr), "again").await;
    assert!(out.contains("all checks passed"), "{out}");
    server.stop().await;
}

/// A record `R` with `fields` int fields named by `prefix`, each with a default: any two of them are compatible
/// both ways (a reader skips fields it does not know and fills its own from their defaults).
fn avro_record(prefix: &str, fields: usize) -> NewSchema {
    let fields: Vec<String> =
        (0..fields).map(|i| format!(r#"{{"name": "{prefix}{i}", "type": "int", "default": {i}}}"#)).collect();
    NewSchema {
        schema: format!(r#"{{"type": "record", "name": "R", "fields": [{}]}}"#, fields.join(", ")),
        ..Default::default()
    }
}

/// Two instances on one `_schemas` (as two `weir up`s on one cluster): each registers its own schemas at the same
/// moment, some under the same subject. Every registration gets a distinct id, versions run 1..n without a gap or a
/// duplicate, and both instances end with the same view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_topic_agree_on_ids_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(open_broker(dir.path())));
    let a = SchemaService::start(bus.clone(), ServiceConfig::default()).await.unwrap();
    let b = SchemaService::start(bus.clone(), ServiceConfig::default()).await.unwrap();
    let register = |service: Arc<SchemaService>, name: &'static str| async move {
        let mut out = Vec::new();
        for n in 1..=10 {
            // The same subject for both; each schema adds a field with a default (compatible).
            let schema = avro_record(name, n);
            out.push(service.register("shared-value", &schema).await.unwrap());
        }
        out
    };
    let (from_a, from_b) = tokio::join!(register(a.clone(), "a"), register(b.clone(), "b"));
    let mut ids: Vec<i32> = from_a.iter().chain(&from_b).map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every schema its own id: {from_a:?} {from_b:?}");
    let mut versions: Vec<i32> = from_a.iter().chain(&from_b).map(|(_, v)| *v).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>(), "versions 1..20, each once");

    // A's writes are read back by B and the other way round: both serve the same registry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for v in 1..=20 {
        let (x, y) = (
            a.state().version("shared-value", VersionSel::Number(v), false).unwrap(),
            b.state().version("shared-value", VersionSel::Number(v), false).unwrap(),
        );
        assert_eq!((x.schema.id, &x.schema.text), (y.schema.id, &y.schema.text), "version {v}");
    }
    // Registering what the other instance registered finds it.
    let (id, version) = b.register("shared-value", &avro_record("a", 3)).await.unwrap();
    assert_eq!((id, version), from_a[2]);
}
