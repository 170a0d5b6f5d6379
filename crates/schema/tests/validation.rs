//! Schema validation on the broker, answered by the registry, as real clients meet it: confluent-kafka's producer
//! and Confluent's Avro serializer (`python/validation_confluent.py`) against a broker with a Kafka listener whose
//! validator is weir's registry; records in the wire format with registered ids stored, the rest refused with
//! INVALID_RECORD and nothing of their batch stored; RecordNameStrategy taking two record types on one topic;
//! payload validation; keys; bad settings refused. Then the in-process paths (a Bus's `produce_all`) and the
//! validator's own reasons.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use weir_broker::testing::broker_config;
use weir_broker::validation::{KEY_VALIDATION, PAYLOAD_VALIDATION, VALUE_STRATEGY, VALUE_VALIDATION};
use weir_broker::{Broker, BrokerError, RecordValidator, Side, SubjectNameStrategy, TopicValidation};
use weir_http::{HttpConfig, HttpServer};
use weir_kafka::{BackgroundBroker, ListenerConfig};
use weir_runtime::{Bus, BusError, EmbeddedBus, OutgoingMessage};
use weir_schema::validation::Refusal;
use weir_schema::{wire, NewSchema, Parsed, RegistryValidator, SchemaService, SchemaType, ServiceConfig};

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The registry over `broker`, installed as its validator, and its REST API.
async fn registry(broker: &Arc<Broker>) -> (Arc<SchemaService>, HttpServer) {
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    let service = SchemaService::start(bus, ServiceConfig::default()).await.unwrap();
    broker.set_record_validator(Arc::new(RegistryValidator::new(service.clone())));
    let server = HttpServer::start_app(
        HttpConfig::new("127.0.0.1:0".parse().unwrap()),
        weir_schema::api::router(service.clone()),
    )
    .await
    .unwrap();
    (service, server)
}

fn end(broker: &Broker, topic: &str) -> i64 {
    broker.offsets(topic, 0).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_producers_meet_schema_validation() {
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let broker = w.broker.clone();
    let (service, server) = registry(&broker).await;
    broker.create_topic("orders", 1, configs(&[(VALUE_VALIDATION, "true")])).unwrap();
    broker
        .create_topic(
            "events",
            1,
            configs(&[
                (VALUE_VALIDATION, "true"),
                (VALUE_STRATEGY, "io.confluent.kafka.serializers.subject.RecordNameStrategy"),
            ]),
        )
        .unwrap();
    broker.create_topic("strict", 1, configs(&[(VALUE_VALIDATION, "true"), (PAYLOAD_VALIDATION, "true")])).unwrap();
    broker.create_topic("keyed", 1, configs(&[(KEY_VALIDATION, "true")])).unwrap();
    // Created here with a bad value: refused, naming the key, nothing made.
    let e = broker.create_topic("bad", 1, configs(&[(VALUE_VALIDATION, "maybe")])).unwrap_err();
    assert!(matches!(&e, BrokerError::InvalidConfig(m) if m.contains(VALUE_VALIDATION)), "{e}");
    assert!(broker.topic("bad").is_err());

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/validation_confluent.py");
    let (addr, url) = (w.addr.to_string(), format!("http://{}", server.local_addr));
    let out = tokio::task::spawn_blocking(move || Command::new("python3").args([script, &addr, &url]).output())
        .await
        .unwrap()
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("all checks passed"), "confluent-kafka against validation:\n{text}");

    // The broker's own count agrees with what the client saw: 2 good records and 1 corrupt-but-registered on
    // orders, 3 on events, 1 on strict, 1 on keyed; every refused batch left nothing.
    for (topic, expected) in [("orders", 3), ("events", 3), ("strict", 1), ("keyed", 1)] {
        assert_eq!(end(&broker, topic), expected, "{topic}");
        assert!(text.contains(&format!("offsets {topic} {expected}\n")), "{topic}: {text}");
    }
    server.stop().await;
    drop(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_produce_all_with_one_refused_record_stores_none() {
    let (_dir, broker) = weir_broker::testing::scratch_broker();
    let (service, server) = registry(&broker).await;
    broker.create_topic("orders", 2, configs(&[(VALUE_VALIDATION, "true")])).unwrap();
    let (id, _) =
        service.register("orders-value", &avro(r#"{"type": "record", "name": "O", "fields": []}"#)).await.unwrap();
    let bus = EmbeddedBus::new(broker.clone());
    let message = |value: Vec<u8>| OutgoingMessage {
        topic: "orders".into(),
        value: Some(value.into()),
        partition: Some(1),
        ..Default::default()
    };
    let refused = bus
        .produce_all(vec![message(wire::frame(id, b"")), message(b"plain".to_vec()), message(wire::frame(id, b""))])
        .await
        .unwrap_err();
    match &refused {
        BusError::Invalid(m) => assert_eq!(
            m, "record 1: value is not in Confluent's wire format (no magic byte 0 and schema id)",
            "the index is the record's place in the call"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(broker.offsets("orders", 1).unwrap().1, 0, "none of the three stored");
    let sent = bus.produce_all(vec![message(wire::frame(id, b"")), message(wire::frame(id, b""))]).await.unwrap();
    assert_eq!(sent.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![0, 1]);
    server.stop().await;
}

/// The REST Proxy sends a request's records together: one refused record stores none, and every record's answer
/// says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_proxy_request_with_one_refused_record_stores_none() {
    use base64::Engine;
    let (_dir, broker) = weir_broker::testing::scratch_broker();
    let (service, server) = registry(&broker).await;
    broker.create_topic("orders", 1, configs(&[(VALUE_VALIDATION, "true")])).unwrap();
    let (id, _) =
        service.register("orders-value", &avro(r#"{"type": "record", "name": "O", "fields": []}"#)).await.unwrap();
    let router = weir_http::router(broker.clone(), HttpConfig::new("127.0.0.1:0".parse().unwrap()));
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let produce = |values: Vec<String>| {
        let records: Vec<serde_json::Value> = values.iter().map(|v| serde_json::json!({ "value": v })).collect();
        let request = weir_http::testing::request("POST".parse().unwrap(), "/topics/orders")
            .header("content-type", "application/vnd.kafka.binary.v2+json")
            .body(axum::body::Body::from(serde_json::json!({ "records": records }).to_string()))
            .unwrap();
        let router = router.clone();
        async move { weir_http::testing::send(&router, request).await }
    };
    let (status, body) = produce(vec![b64(&wire::frame(id, b"")), b64(b"plain"), b64(&wire::frame(id, b""))]).await;
    assert_eq!(status, 200, "{body}");
    let offsets = body["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 3);
    for o in offsets {
        assert_eq!(o["error_code"], 42200, "{body}");
        assert_eq!(
            o["error"], "record 1: value is not in Confluent's wire format (no magic byte 0 and schema id)",
            "{body}"
        );
    }
    assert_eq!(end(&broker, "orders"), 0, "none of the three stored");
    let (status, body) = produce(vec![b64(&wire::frame(id, b"")), b64(&wire::frame(id, b""))]).await;
    assert_eq!(status, 200);
    assert_eq!(body["offsets"][1]["offset"], 1, "{body}");
    assert_eq!(end(&broker, "orders"), 2);
    server.stop().await;
}

fn avro(schema: &str) -> NewSchema {
    NewSchema { schema_type: SchemaType::Avro, schema: schema.to_string(), ..Default::default() }
}

fn validation(strategy: SubjectNameStrategy, payload: bool) -> TopicValidation {
    TopicValidation { value: true, value_strategy: strategy, payload, ..Default::default() }
}

/// The validator's decisions and reasons, one rule at a time, over the registry's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validator_names_what_is_wrong() {
    let (_dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    let service = SchemaService::start(bus, ServiceConfig::default()).await.unwrap();
    let v = RegistryValidator::new(service.clone());
    let person =
        r#"{"type": "record", "name": "Person", "namespace": "shop", "fields": [{"name": "age", "type": "int"}]}"#;
    let (person_id, _) = service.register("t-value", &avro(person)).await.unwrap();
    let (string_id, _) = service.register("s-value", &avro(r#""string""#)).await.unwrap();
    let (by_name, _) = service.register("shop.Person", &avro(person)).await.unwrap();
    assert_eq!(by_name, person_id, "one schema, one id");
    let payload = Parsed::parse(SchemaType::Avro, person, &[]).unwrap().encode_json(&serde_json::json!({"age": 3}));
    let good = wire::frame(person_id, &payload.unwrap());
    let topic_name = validation(SubjectNameStrategy::TopicName, false);

    let check = |topic: &str, settings: &TopicValidation, value: &[u8]| v.check(topic, settings, None, Some(value));
    assert_eq!(check("t", &topic_name, &good), Ok(()));
    assert_eq!(v.check("t", &topic_name, None, None), Ok(()), "a tombstone has nothing to check");
    assert_eq!(
        check("t", &topic_name, b"\x01\x00\x00\x00\x01").unwrap_err(),
        "value is not in Confluent's wire format (no magic byte 0 and schema id)"
    );
    assert_eq!(
        check("t", &topic_name, b"\x00\x00\x00").unwrap_err(),
        Refusal::NotFramed { side: Side::Value }.to_string()
    );
    assert_eq!(
        check("u", &topic_name, &good).unwrap_err(),
        format!("value schema id {person_id} is not registered under subject u-value")
    );
    // RecordNameStrategy: the subject is the record's name; a schema without one cannot be placed.
    let record_name = validation(SubjectNameStrategy::RecordName, false);
    assert_eq!(check("anything", &record_name, &good), Ok(()));
    assert_eq!(
        check("anything", &record_name, &wire::frame(string_id, b"\x02a")).unwrap_err(),
        Refusal::NoRecordName { side: Side::Value, id: string_id, strategy: "RecordNameStrategy" }.to_string()
    );
    assert_eq!(
        check("t", &record_name, &wire::frame(4242, b"")).unwrap_err(),
        "value schema id 4242 is not a registered schema"
    );
    // TopicRecordNameStrategy: `<topic>-<record name>`.
    let topic_record = validation(SubjectNameStrategy::TopicRecordName, false);
    assert_eq!(
        check("t", &topic_record, &good).unwrap_err(),
        format!("value schema id {person_id} is not registered under subject t-shop.Person")
    );
    service.register("t-shop.Person", &avro(person)).await.unwrap();
    assert_eq!(check("t", &topic_record, &good), Ok(()));
    // Payloads, when asked: the framed bytes must decode with the schema.
    let with_payload = validation(SubjectNameStrategy::TopicName, true);
    assert_eq!(check("t", &with_payload, &good), Ok(()));
    let e = check("t", &with_payload, &wire::frame(person_id, b"\x80")).unwrap_err();
    assert!(e.starts_with(&format!("value does not fit schema id {person_id}: ")), "{e}");
    // A soft-deleted version no longer counts.
    service.delete_subject("t-value", false).await.unwrap();
    assert_eq!(
        check("t", &topic_name, &good).unwrap_err(),
        format!("value schema id {person_id} is not registered under subject t-value")
    );
    // Keys are checked with their own side's settings and named as keys.
    let keys = TopicValidation { key: true, ..Default::default() };
    assert_eq!(
        v.check("t", &keys, Some(b"plain"), Some(b"anything")).unwrap_err(),
        "key is not in Confluent's wire format (no magic byte 0 and schema id)"
    );
}
