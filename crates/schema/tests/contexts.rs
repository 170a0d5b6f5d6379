//! Schema contexts as Confluent's registry serves them, over HTTP with curl: qualified subjects (`:.staging:orders`),
//! the `/contexts/{ctx}/...` routes that name them, `GET /contexts`, `subjectPrefix` selecting a context's subjects,
//! and a context's own compatibility level, which its subjects fall back to before the registry's.

use std::process::Command;
use std::sync::Arc;

use serde_json::{json, Value};
use weir_http::{HttpConfig, HttpServer};
use weir_runtime::{Bus, EmbeddedBus};
use weir_schema::{SchemaService, ServiceConfig};

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
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker));
    let service = SchemaService::start(bus, ServiceConfig::default()).await.unwrap();
    let server = HttpServer::start_app(
        HttpConfig::new("127.0.0.1:0".parse().unwrap()),
        weir_schema::api::router(service.clone()),
    )
    .await
    .unwrap();
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
