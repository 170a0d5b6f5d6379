//! The registry as clients use it: Confluent's own client library and serializers (confluent-kafka, Python) against
//! weir's registry on the embedded bus, across a restart; and two registry instances on one bus registering at the
//! same moment, agreeing on every id and version; and schema contexts as Confluent's registry serves them, over HTTP
//! with curl: qualified subjects (`:.staging:orders`), the `/contexts/{ctx}/...` routes that name them,
//! `GET /contexts`, `subjectPrefix` selecting a context's subjects, and a context's own compatibility level.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
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

/// `curl` with a JSON body (when given): the answer as JSON and the status.
fn http(method: &str, url: &str, body: Option<Value>) -> (Value, u16) {
    let mut command = Command::new("curl");
    command.args(["-s", "-m", "10", "-w", "\n%{http_code}", "-X", method, url]);
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/vnd.schemaregistry.v1+json", "-d", &body.to_string()]);
    }
    let out = command.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (serde_json::from_str(body).unwrap_or(Value::Null), status.parse().unwrap_or(0))
}

fn record(field_type: &str) -> Value {
    json!({ "schema": json!({"type": "record", "name": "Order", "fields": [{"name": "id", "type": field_type}]}).to_string() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_namespace_subjects_and_their_compatibility() {
    let (_dir, broker) = weir_broker::testing::scratch_broker();
    let (_service, server) = serve(Arc::new(EmbeddedBus::new(broker))).await;
    let base = format!("http://{}", server.local_addr);
    let url = move |path: &str| format!("{base}{path}");
    tokio::task::spawn_blocking(move || {
        // The same subject name in two contexts: two subjects.
        let (b, s) = http("POST", &url("/contexts/.staging/subjects/orders-value/versions"), Some(record("int")));
        assert_eq!(s, 200, "{b}");
        let staged = b["id"].as_i64().unwrap();
        let (b, s) = http("POST", &url("/subjects/orders-value/versions"), Some(record("string")));
        assert_eq!(s, 200, "a subject of the default context, apart from the staging one: {b}");

        assert_eq!(http("GET", &url("/contexts"), None).0, json!([".", ".staging"]));
        assert_eq!(http("GET", &url("/subjects"), None).0, json!([":.staging:orders-value", "orders-value"]));
        assert_eq!(http("GET", &url("/subjects?subjectPrefix="), None).0, json!(["orders-value"]));
        assert_eq!(http("GET", &url("/subjects?subjectPrefix=:*:"), None).0.as_array().unwrap().len(), 2);
        assert_eq!(http("GET", &url("/contexts/.staging/subjects"), None).0, json!([":.staging:orders-value"]));
        let (b, _) = http("GET", &url("/subjects/:.staging:orders-value/versions/1"), None);
        assert_eq!((&b["subject"], &b["id"]), (&json!(":.staging:orders-value"), &json!(staged)), "{b}");
        let (b, _) = http("GET", &url("/contexts/.staging/subjects/orders-value/versions/latest"), None);
        assert_eq!(b["id"], staged, "the context's route names the qualified subject: {b}");
        let (b, s) = http("GET", &url(&format!("/contexts/.staging/schemas/ids/{staged}")), None);
        assert_eq!(s, 200, "{b}");

        // The staging context takes anything; the default context keeps BACKWARD.
        let (b, s) = http("PUT", &url("/contexts/.staging/config"), Some(json!({"compatibility": "NONE"})));
        assert_eq!(s, 200, "{b}");
        let (b, _) = http("GET", &url("/config/:.staging:orders-value?defaultToGlobal=true"), None);
        assert_eq!(b["compatibilityLevel"], "NONE", "{b}");
        let (b, _) = http("GET", &url("/config/orders-value?defaultToGlobal=true"), None);
        assert_eq!(b["compatibilityLevel"], "BACKWARD", "{b}");
        let (b, s) = http("POST", &url("/contexts/.staging/subjects/orders-value/versions"), Some(record("boolean")));
        assert_eq!(s, 200, "NONE in the staging context: {b}");
        let (b, s) = http("POST", &url("/subjects/orders-value/versions"), Some(record("boolean")));
        assert_eq!((s, &b["error_code"]), (409, &json!(409)), "BACKWARD in the default one: {b}");

        // A path a context does not have is a 404 in the registry's error shape.
        let (b, s) = http("GET", &url("/contexts/.staging/nothing"), None);
        assert_eq!(s, 404, "{b}");
    })
    .await
    .unwrap();
    server.stop().await;
}
