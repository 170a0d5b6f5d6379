//! The REST Proxy's schema formats (`application/vnd.kafka.{avro,jsonschema,protobuf}.v2+json`) over weir's registry,
//! called in-process: schemas given as text registered on the fly under the topic's naming strategy, or given by id;
//! records stored in Confluent's wire format; consumer instances in those formats reading them back as JSON; and the
//! proxy's errors (42201/42202 schema missing, 42203 a value that does not fit, 42205 a schema refused, 50002 a
//! stored record that cannot be decoded), none of a refused request's records stored.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use weir_broker::validation::{VALUE_STRATEGY, VALUE_VALIDATION};
use weir_broker::Broker;
use weir_http::testing::{call, call_raw, request, send};
use weir_http::HttpConfig;
use weir_runtime::{Bus, EmbeddedBus};
use weir_schema::{wire, RegistryValidator, SchemaService, Serializers, ServiceConfig};

const AVRO: &str = "application/vnd.kafka.avro.v2+json";
const JSONSCHEMA: &str = "application/vnd.kafka.jsonschema.v2+json";
const PROTOBUF: &str = "application/vnd.kafka.protobuf.v2+json";

const ORDER: &str = r#"{"type": "record", "name": "Order", "namespace": "shop",
    "fields": [{"name": "id", "type": "int"}, {"name": "note", "type": ["null", "string"], "default": null}]}"#;

/// A broker, the registry over it (also its validator), and the REST Proxy with the registry behind its formats.
async fn proxy() -> (tempfile::TempDir, Arc<Broker>, Arc<SchemaService>, Router) {
    let (dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    let service = SchemaService::start(bus, ServiceConfig::default()).await.unwrap();
    broker.set_record_validator(Arc::new(RegistryValidator::new(service.clone())));
    let mut config = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    config.schemas = Some(Arc::new(Serializers::new(service.clone())));
    let router = weir_http::router(broker.clone(), config);
    (dir, broker, service, router)
}

async fn produce(router: &Router, topic: &str, media: &str, body: Value) -> (StatusCode, Value) {
    call_raw(router, Method::POST, &format!("/topics/{topic}"), media, body.to_string()).await
}

fn end(broker: &Broker, topic: &str) -> i64 {
    broker.offsets(topic, 0).unwrap().1
}

/// Creates a consumer instance in `format` reading `topic` from the start.
async fn consumer(router: &Router, group: &str, format: &str, topic: &str) {
    let (s, b) = call(
        router,
        Method::POST,
        &format!("/consumers/{group}"),
        Some(json!({"name": "c", "format": format, "auto.offset.reset": "earliest"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let uri = format!("/consumers/{group}/instances/c/subscription");
    let (s, b) = call(router, Method::POST, &uri, Some(json!({ "topics": [topic] }))).await;
    assert_eq!(s, 204, "{b}");
}

/// Fetches until `want` records came back (or an error does).
async fn fetch(router: &Router, group: &str, accept: &str, want: usize) -> (StatusCode, Value) {
    let mut got = Vec::new();
    for _ in 0..20 {
        let uri = format!("/consumers/{group}/instances/c/records?timeout=500");
        let r = request(Method::GET, &uri).header(header::ACCEPT, accept).body(Body::empty()).unwrap();
        let (s, b) = send(router, r).await;
        if s != 200 {
            return (s, b);
        }
        got.extend(b.as_array().unwrap().iter().cloned());
        if got.len() >= want {
            break;
        }
    }
    (StatusCode::OK, Value::Array(got))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_are_registered_serialized_stored_framed_and_read_back() {
    let (_dir, broker, service, router) = proxy().await;
    let records = json!([
        {"key": "k1", "value": {"id": 1, "note": {"string": "first"}}},
        {"key": "k2", "value": {"id": 2, "note": null}, "partition": 0},
    ]);
    let (s, b) = produce(
        &router,
        "orders",
        AVRO,
        json!({"key_schema": "\"string\"", "value_schema": ORDER, "records": records}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (key_id, value_id) =
        (b["key_schema_id"].as_i64().unwrap() as i32, b["value_schema_id"].as_i64().unwrap() as i32);
    assert_eq!(b["offsets"][1]["offset"], 1, "{b}");
    {
        // Registered on the fly under TopicNameStrategy's subjects.
        let state = service.state();
        assert!(state.subject_holds_id("orders-value", value_id) && state.subject_holds_id("orders-key", key_id));
    }
    // Stored framed with the ids, in Avro's binary encoding.
    let stored = broker.read("orders", 0, 0, 1 << 20).unwrap().records(0).unwrap();
    let value = stored[0].value.as_deref().unwrap();
    assert_eq!(wire::unframe(value).unwrap().0, value_id);
    assert_eq!(service.decode(value).unwrap().1, json!({"id": 1, "note": {"string": "first"}}));
    assert_eq!(wire::unframe(stored[1].key.as_deref().unwrap()).unwrap(), (key_id, &b"\x04k2"[..]));

    // By id, the same schema; bare values in a union are taken too.
    let (s, b) = produce(
        &router,
        "orders",
        AVRO,
        json!({"value_schema_id": value_id, "records": [{"value": {"id": 3, "note": "third"}}]}),
    )
    .await;
    assert_eq!((s, b["value_schema_id"].as_i64()), (StatusCode::OK, Some(value_id as i64)), "{b}");
    assert_eq!(b["key_schema_id"], Value::Null);

    // The proxy's errors, and none of a refused request's records stored.
    let before = end(&broker, "orders");
    let cases = [
        (
            json!({"value_schema": ORDER, "records": [{"value": {"id": 4}}, {"value": {"id": "five"}}]}),
            42203,
            "records[1].value: Conversion of JSON to Object failed",
        ),
        (json!({"records": [{"value": {"id": 4}}]}), 42202, "does not include value_schema or value_schema_id"),
        (
            json!({"value_schema": ORDER, "records": [{"key": "k", "value": {"id": 4}}]}),
            42201,
            "does not include key_schema or key_schema_id",
        ),
        (
            json!({"value_schema": "{\"type\": \"record\"", "records": [{"value": 1}]}),
            42205,
            "value_schema: Invalid schema",
        ),
        (json!({"value_schema_id": 999, "records": [{"value": 1}]}), 42205, "schema id 999 is not registered"),
        // The subject's compatibility (BACKWARD) refuses a new version that cannot read the old data.
        (
            json!({"value_schema": r#"{"type": "record", "name": "Order", "namespace": "shop", "fields": [{"name": "id", "type": "string"}]}"#,
                "records": [{"value": {"id": "x"}}]}),
            42205,
            "incompatible",
        ),
    ];
    for (body, code, needle) in cases {
        let (s, b) = produce(&router, "orders", AVRO, body.clone()).await;
        assert_eq!(s, 422, "{body}: {b}");
        assert_eq!(b["error_code"], code, "{body}: {b}");
        assert!(b["message"].as_str().unwrap().contains(needle), "{body}: {b}");
    }
    // An id of another format.
    let (s, b) =
        produce(&router, "orders", JSONSCHEMA, json!({"value_schema_id": value_id, "records": [{"value": 1}]})).await;
    assert_eq!((s.as_u16(), &b["error_code"]), (422, &json!(42205)), "{b}");
    assert!(b["message"].as_str().unwrap().contains("is a AVRO schema"), "{b}");
    assert_eq!(end(&broker, "orders"), before, "nothing stored by refused requests");

    // A consumer instance in the avro format reads them back as Avro's JSON encoding.
    consumer(&router, "readers", "avro", "orders").await;
    let (s, b) = fetch(&router, "readers", AVRO, 3).await;
    assert_eq!(s, 200, "{b}");
    let got: Vec<(Value, Value)> =
        b.as_array().unwrap().iter().map(|r| (r["key"].clone(), r["value"].clone())).collect();
    assert_eq!(
        got,
        vec![
            (json!("k1"), json!({"id": 1, "note": {"string": "first"}})),
            (json!("k2"), json!({"id": 2, "note": null})),
            (Value::Null, json!({"id": 3, "note": {"string": "third"}})),
        ]
    );
    // Asking for another format than the instance's is 40601.
    let (s, b) = fetch(&router, "readers", "application/vnd.kafka.binary.v2+json", 1).await;
    assert_eq!((s.as_u16(), &b["error_code"]), (406, &json!(40601)), "{b}");

    // A record that is not framed fails the fetch that reaches it, naming where it is, and is not skipped.
    let (s, _) = call_raw(
        &router,
        Method::POST,
        "/topics/orders",
        "application/vnd.kafka.binary.v2+json",
        json!({"records": [{"value": "cGxhaW4="}]}).to_string(),
    )
    .await;
    assert_eq!(s, 200);
    for _ in 0..2 {
        let (s, b) = fetch(&router, "readers", AVRO, 1).await;
        assert_eq!((s.as_u16(), &b["error_code"]), (500, &json!(50002)), "{b}");
        let message = b["message"].as_str().unwrap();
        assert!(message.contains("the value of orders/0 at offset 3") && message.contains("wire format"), "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_and_protobuf_round_trip_and_record_names_pick_the_subject() {
    let (_dir, broker, service, router) = proxy().await;

    // JSON Schema: values checked against the schema, stored as JSON text after the header.
    let reading = r#"{"type": "object", "title": "Reading", "properties": {"sensor": {"type": "string"},
        "celsius": {"type": "number"}}, "required": ["sensor"]}"#;
    let (s, b) = produce(
        &router,
        "readings",
        JSONSCHEMA,
        json!({"value_schema": reading, "records": [{"value": {"sensor": "a", "celsius": 21.5}}]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = produce(
        &router,
        "readings",
        JSONSCHEMA,
        json!({"value_schema": reading, "records": [{"value": {"celsius": 3}}]}),
    )
    .await;
    assert_eq!((s.as_u16(), &b["error_code"]), (422, &json!(42203)), "a required property missing: {b}");
    consumer(&router, "jr", "jsonschema", "readings").await;
    let (s, b) = fetch(&router, "jr", JSONSCHEMA, 1).await;
    assert_eq!((s, &b[0]["value"]), (StatusCode::OK, &json!({"sensor": "a", "celsius": 21.5})), "{b}");

    // Protobuf: the proto's text, values in Protobuf's JSON mapping.
    let proto = "syntax = \"proto3\";\npackage plant;\nmessage Pump { string name = 1; int32 rpm = 2; bool on = 3; }\n";
    let (s, b) = produce(
        &router,
        "pumps",
        PROTOBUF,
        json!({"value_schema": proto, "records": [{"value": {"name": "p1", "rpm": 1200, "on": true}}]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(service.state().subject_holds_id("pumps-value", b["value_schema_id"].as_i64().unwrap() as i32));
    let (s, b) =
        produce(&router, "pumps", PROTOBUF, json!({"value_schema": proto, "records": [{"value": {"rpm": "fast"}}]}))
            .await;
    assert_eq!((s.as_u16(), &b["error_code"]), (422, &json!(42203)), "{b}");
    consumer(&router, "pr", "protobuf", "pumps").await;
    let (s, b) = fetch(&router, "pr", PROTOBUF, 1).await;
    assert_eq!((s, &b[0]["value"]), (StatusCode::OK, &json!({"name": "p1", "rpm": 1200, "on": true})), "{b}");

    // A topic whose values are named by RecordNameStrategy takes two record types, each under its own subject,
    // and the broker's validation (on for this topic) accepts both.
    let settings: BTreeMap<String, String> = [(VALUE_VALIDATION, "true"), (VALUE_STRATEGY, "RecordNameStrategy")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    broker.create_topic("tickets", 1, settings).unwrap();
    let opened = r#"{"type": "record", "name": "TicketOpened", "namespace": "repair", "fields": [{"name": "ticket", "type": "string"}]}"#;
    let closed = r#"{"type": "record", "name": "TicketClosed", "namespace": "repair", "fields": [{"name": "ticket", "type": "string"}, {"name": "paid", "type": "boolean"}]}"#;
    for (schema, value) in [(opened, json!({"ticket": "t1"})), (closed, json!({"ticket": "t1", "paid": true}))] {
        let (s, b) =
            produce(&router, "tickets", AVRO, json!({"value_schema": schema, "records": [{"value": value}]})).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["offsets"][0]["error_code"], Value::Null, "{b}");
    }
    let state = service.state();
    let subjects = state.subjects(false, "repair.");
    assert_eq!(subjects, vec!["repair.TicketClosed".to_string(), "repair.TicketOpened".to_string()]);
    drop(state);
    assert_eq!(end(&broker, "tickets"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_registry_the_schema_formats_are_refused_with_a_reason() {
    let (_dir, broker) = weir_broker::testing::scratch_broker();
    let router = weir_http::router(broker, HttpConfig::new("127.0.0.1:0".parse().unwrap()));
    let (s, b) =
        produce(&router, "orders", AVRO, json!({"value_schema": ORDER, "records": [{"value": {"id": 1}}]})).await;
    assert_eq!(s, 415, "{b}");
    assert!(b["message"].as_str().unwrap().contains("needs the schema registry"), "{b}");
    let (s, b) = call(&router, Method::POST, "/consumers/g", Some(json!({"format": "protobuf"}))).await;
    assert_eq!((s.as_u16(), &b["error_code"]), (422, &json!(42204)), "{b}");
}
