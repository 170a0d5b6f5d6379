//! The HTTP API as clients of the Confluent REST Proxy use it, driven through the router (no sockets), plus one test
//! over a real socket for what only the running server does (reaping idle consumer instances).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{json, Value};
use weir_broker::testing::{scratch_broker, scratch_broker_with};
use weir_broker::{Broker, BrokerConfig};
use weir_http::{testing, HttpConfig};

const BINARY: &str = "application/vnd.kafka.binary.v2+json";
const JSON: &str = "application/vnd.kafka.json.v2+json";
const V2: &str = "application/vnd.kafka.v2+json";

struct Api {
    router: axum::Router,
    broker: Arc<Broker>,
    _dir: tempfile::TempDir,
}

fn api_with(configure: impl FnOnce(&mut BrokerConfig, &mut HttpConfig)) -> Api {
    let mut http = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    let (dir, broker) = scratch_broker_with(|broker_config| configure(broker_config, &mut http));
    Api { router: weir_http::router(broker.clone(), http), broker, _dir: dir }
}

fn api() -> Api {
    api_with(|_, _| {})
}

impl Api {
    async fn call(&self, method: &str, uri: &str, content_type: Option<&str>, body: &str) -> (StatusCode, Value) {
        self.call_with(method, uri, content_type, None, body).await
    }

    async fn call_with(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = testing::request(method.parse().unwrap(), uri);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        testing::send(&self.router, req.body(Body::from(body.to_string())).unwrap()).await
    }

    fn error_code(v: &Value) -> u64 {
        v["error_code"].as_u64().unwrap_or_else(|| panic!("not an error body: {v}"))
    }
}

#[tokio::test]
async fn the_seed_request_produces_and_the_answer_has_the_proxy_shape() {
    let api = api();
    // The seed document's request: a base64 value under the binary content type, to a topic created on demand.
    let (status, body) = api.call("POST", "/topics/test", Some(BINARY), r#"{"records":[{"value":"aGVsbG8="}]}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"key_schema_id": null, "value_schema_id": null,
               "offsets": [{"partition": 0, "offset": 0, "error_code": null, "error": null}]})
    );
    let (_, read) = api.broker.read("test", 0, 0, 1 << 20).map(|r| ((), r)).unwrap();
    assert!(read.batches.windows(5).any(|w| w == b"hello"), "the value is stored decoded");
}

#[tokio::test]
async fn binary_json_and_plain_json_records_land_in_order_with_keys_and_partitions() {
    let api = api();
    api.broker.create_topic("t", 4, BTreeMap::new()).unwrap();
    let (s, b) = api
        .call(
            "POST",
            "/topics/t",
            Some(BINARY),
            r#"{"records":[{"key":"azE=","value":"YQ=="},{"key":"azE=","value":"Yg=="},{"value":null,"partition":3}]}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let offsets = b["offsets"].as_array().unwrap();
    assert_eq!(offsets[0]["partition"], offsets[1]["partition"], "same key, same partition");
    assert_eq!(offsets[1]["offset"].as_i64().unwrap(), offsets[0]["offset"].as_i64().unwrap() + 1);
    assert_eq!(offsets[2]["partition"], 3);

    let (s, b) = api
        .call("POST", "/topics/t/partitions/2", Some(JSON), r#"{"records":[{"key":{"id":7},"value":[1,"two"]}]}"#)
        .await;
    assert_eq!((s, b["offsets"][0]["partition"].as_i64()), (StatusCode::OK, Some(2)));
    let (s, b) = api
        .call(
            "POST",
            "/topics/t/partitions/2",
            Some("application/json; charset=utf-8"),
            r#"{"records":[{"value":"plain"}]}"#,
        )
        .await;
    assert_eq!((s, b["offsets"][0]["offset"].as_i64()), (StatusCode::OK, Some(1)));

    // Read back through a JSON consumer instance: values come back as the JSON that was sent.
    let (s, _) = api
        .call("POST", "/consumers/readers", Some(V2), r#"{"name":"r","format":"json","auto.offset.reset":"earliest"}"#)
        .await;
    assert_eq!(s, StatusCode::OK);
    api.call("POST", "/consumers/readers/instances/r/subscription", Some(V2), r#"{"topics":["t"]}"#).await;
    let mut got = Vec::new();
    for _ in 0..20 {
        let (s, b) =
            api.call_with("GET", "/consumers/readers/instances/r/records?timeout=500", None, Some(JSON), "").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        got.extend(b.as_array().unwrap().iter().filter(|r| r["partition"] == 2).cloned());
        if got.len() == 2 {
            break;
        }
    }
    assert_eq!(got.len(), 2);
    assert_eq!((&got[0]["key"], &got[0]["value"]), (&json!({"id": 7}), &json!([1, "two"])));
    assert_eq!(got[1]["value"], json!("plain"));
}

#[tokio::test]
async fn client_mistakes_get_4xx_with_the_proxy_codes_and_nothing_is_stored() {
    let api = api_with(|b, h| {
        b.auto_create_topics = false;
        h.max_body_bytes = 1024;
    });
    api.broker.create_topic("t", 2, BTreeMap::new()).unwrap();
    let good = r#"{"records":[{"value":"aGk="}]}"#;
    for (ct, body, status, code) in [
        (None, good, 415, 415),
        (Some("text/plain"), good, 415, 415),
        (Some("application/vnd.kafka.avro.v2+json"), good, 415, 415),
        (Some(BINARY), "{nope", 422, 42200),
        (Some(BINARY), r#"{"records":[{"value":"aGk="},{"key":"***","value":"aGk="}]}"#, 422, 42201),
        (Some(BINARY), r#"{"records":[{"value":"not base64!"}]}"#, 422, 42202),
        (Some(BINARY), r#"{"records":[{"value":"aGk=","partition":9}]}"#, 404, 40402),
        (Some(BINARY), r#"{"records":[{"value":"aGk=","partition":"x"}]}"#, 422, 42200),
    ] {
        let (s, b) = api.call("POST", "/topics/t", ct, body).await;
        assert_eq!((s.as_u16(), Api::error_code(&b)), (status, code), "{ct:?} {body}: {b}");
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(api.broker.offsets("t", 0).unwrap().1 + api.broker.offsets("t", 1).unwrap().1, 0, "nothing stored");

    let (s, b) = api.call("POST", "/topics/missing", Some(BINARY), good).await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (404, 40401));
    let (s, b) = api
        .call("POST", "/topics/t", Some(BINARY), &format!(r#"{{"records":[{{"value":"{}"}}]}}"#, "A".repeat(2000)))
        .await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (413, 413));
    let (s, b) = api.call("POST", "/topics/t/partitions/abc", Some(BINARY), good).await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (400, 400));
    let (s, b) = api.call("GET", "/topics/missing", None, "").await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (404, 40401));
    let (s, b) = api.call("GET", "/topics/t/partitions/5", None, "").await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (404, 40402));
    let (s, b) = api.call("GET", "/no/such/route", None, "").await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (404, 404));
    let (s, b) = api.call("DELETE", "/topics", None, "").await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (405, 405));
    let (s, b) = api.call("GET", "/consumers/g/instances/nobody/records", None, "").await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (404, 40403));
    let (s, b) = api.call("GET", "/groups/nobody", None, "").await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (404, 40404));
}

/// A body that does not fit its type gets 422 with the REST Proxy's error body, its message naming the field.
#[tokio::test]
async fn bodies_that_do_not_fit_their_type_name_the_field() {
    let api = api();
    for (uri, ct, body, code, names) in [
        (
            "/consumers/g",
            V2,
            r#"{"name":"a","auto.offset.reset":5}"#,
            42204,
            "auto.offset.reset: invalid type: integer `5`",
        ),
        (
            "/consumers/g",
            V2,
            r#"{"auto.offset.reset":"oldest"}"#,
            42204,
            r#"auto.offset.reset: unknown value "oldest""#,
        ),
        ("/consumers/g", V2, r#"{"format":"avro"}"#, 42204, "format: avro needs the schema registry"),
        ("/consumers/g", V2, r#"{"format":"xml"}"#, 42204, "format: unsupported format"),
        ("/consumers/g", V2, r#"{"auto.commit.enable":true}"#, 42204, "auto.commit.enable: invalid type: boolean"),
        ("/consumers/g", V2, r#"{"name":7}"#, 42200, "name: invalid type: integer `7`"),
        ("/consumers/g", V2, r#"{"name":""}"#, 42200, "name: must be 1-255 characters"),
        ("/consumers/g", V2, r#"[]"#, 42200, "expected a JSON object"),
        ("/consumers/g", V2, r#"{"name":"a""#, 42200, "not valid JSON"),
        ("/consumers/g", V2, "", 42200, "must be a JSON object"),
        (
            "/topics/t",
            BINARY,
            r#"{"records":{"value":"aGk="}}"#,
            42200,
            "records: invalid type: an object, expected an array",
        ),
        ("/topics/t", BINARY, r#"{"value":"aGk="}"#, 42200, "missing field `records`"),
        (
            "/topics/t",
            BINARY,
            r#"{"records":[{"value":"aGk="},{"partition":"0"}]}"#,
            42200,
            "records[1].partition: invalid type: string",
        ),
        ("/topics/t", BINARY, r#"{"records":[{"key":[1]}]}"#, 42201, "records[0].key: invalid type: sequence"),
        (
            "/topics/t",
            JSON,
            r#"{"records":[{"value":{},"partition":1.5}]}"#,
            42200,
            "records[0].partition: invalid value",
        ),
    ] {
        let (s, b) = api.call("POST", uri, Some(ct), body).await;
        assert_eq!((s.as_u16(), Api::error_code(&b)), (422, code), "{uri} {body}: {b}");
        let message = b["message"].as_str().unwrap();
        assert!(message.contains(names), "{uri} {body}: {message}");
    }
    assert!(api.broker.topic("t").is_err(), "no produce got as far as creating the topic");

    api.call("POST", "/consumers/g", Some(V2), r#"{"name":"one"}"#).await;
    let instance = "/consumers/g/instances/one";
    for (path, body, names) in [
        ("subscription", r#"{"topics":["a",5]}"#, "topics[1]: invalid type: integer `5`, expected a string"),
        ("subscription", r#"{"topics":[]}"#, "topics: a non-empty array"),
        ("subscription", r#"{}"#, "topics: a non-empty array"),
        ("subscription", r#"{"topic_pattern":"a.*"}"#, "topic_pattern: not supported"),
        (
            "offsets",
            r#"{"offsets":[{"topic":"a","partition":0,"offset":-1}]}"#,
            "offsets[0].offset: invalid value: integer `-1`",
        ),
        ("offsets", r#"{"offsets":[{"topic":"a","offset":1}]}"#, "offsets[0]: missing field `partition`"),
        ("offsets", r#"{"offsets":"all"}"#, "offsets: invalid type: string"),
    ] {
        let (s, b) = api.call("POST", &format!("{instance}/{path}"), Some(V2), body).await;
        assert_eq!((s.as_u16(), Api::error_code(&b)), (422, 42200), "{path} {body}: {b}");
        let message = b["message"].as_str().unwrap();
        assert!(message.contains(names), "{path} {body}: {message}");
    }
    // What is well-formed still works: `smallest` for `earliest`, as older clients say it, and a commit of `null`.
    let (s, b) = api.call("POST", "/consumers/g", Some(V2), r#"{"name":"two","auto.offset.reset":"smallest"}"#).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    api.broker.create_topic("a", 1, BTreeMap::new()).unwrap();
    let (s, _) = api.call("POST", &format!("{instance}/subscription"), Some(V2), r#"{"topics":["a"]}"#).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = api.call("POST", &format!("{instance}/offsets"), Some(V2), "null").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
}

#[tokio::test]
async fn a_consumer_instance_joins_fetches_commits_and_leaves() {
    let api = api();
    api.broker.create_topic("orders", 2, BTreeMap::new()).unwrap();
    let records: Vec<Value> = (0..10).map(|i| json!({"key": "aw==", "value": base64(&format!("order-{i}"))})).collect();
    let (s, _) = api.call("POST", "/topics/orders", Some(BINARY), &json!({"records": records}).to_string()).await;
    assert_eq!(s, StatusCode::OK);

    let (s, b) = api
        .call(
            "POST",
            "/consumers/billing",
            Some(V2),
            r#"{"name":"one","auto.offset.reset":"earliest","auto.commit.enable":"false"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b, json!({"instance_id": "one", "base_uri": "http://weir.test/consumers/billing/instances/one"}));
    let (s, b) = api.call("POST", "/consumers/billing", Some(V2), r#"{"name":"one"}"#).await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (409, 40902));
    let (s, b) = api.call("GET", "/consumers/billing/instances/one/records", None, "").await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (409, 40903), "fetch before subscribing");
    let (s, _) =
        api.call("POST", "/consumers/billing/instances/one/subscription", Some(V2), r#"{"topics":["orders"]}"#).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, b) = api.call("GET", "/consumers/billing/instances/one/subscription", None, "").await;
    assert_eq!(b, json!({"topics": ["orders"]}));
    let (s, b) = api.call_with("GET", "/consumers/billing/instances/one/records", None, Some(JSON), "").await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (406, 40601), "a binary instance refuses a JSON Accept");

    // max_bytes: records past the limit come back on the next fetch, none lost.
    let mut seen = Vec::new();
    for _ in 0..30 {
        let (s, b) = api
            .call_with(
                "GET",
                "/consumers/billing/instances/one/records?timeout=300&max_bytes=20",
                None,
                Some(BINARY),
                "",
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let batch = b.as_array().unwrap().clone();
        assert!(batch.len() <= 2, "20 bytes hold at most two 8-byte records: {}", batch.len());
        seen.extend(batch);
        if seen.len() == 10 {
            break;
        }
    }
    let mut values: Vec<String> = seen.iter().map(|r| unbase64(r["value"].as_str().unwrap())).collect();
    values.sort();
    assert_eq!(values, (0..10).map(|i| format!("order-{i}")).collect::<Vec<_>>());

    // Commit the last record: the group's committed offset is after it, lag zero.
    let last = seen.last().unwrap();
    let commit = json!({"offsets": [{"topic": "orders", "partition": last["partition"], "offset": last["offset"]}]});
    let (s, _) = api.call("POST", "/consumers/billing/instances/one/offsets", Some(V2), &commit.to_string()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api.call("POST", "/consumers/billing/instances/one/offsets", None, "").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "an empty body commits everything fetched");
    let (_, g) = api.call("GET", "/groups/billing", None, "").await;
    assert_eq!(g["state"], "Stable");
    assert_eq!(g["members"][0]["client_id"], "rest-proxy/one");
    // Partitions nothing was fetched from have no committed offset (no lag figure), as in Kafka.
    let lag: i64 = g["offsets"].as_array().unwrap().iter().filter_map(|o| o["lag"].as_i64()).sum();
    assert_eq!(lag, 0, "{g}");
    let (_, groups) = api.call("GET", "/groups", None, "").await;
    assert_eq!(groups, json!(["billing"]));

    let (s, _) = api.call("DELETE", "/consumers/billing/instances/one", None, "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = api.call("GET", "/consumers/billing/instances/one/records", None, "").await;
    assert_eq!((s.as_u16(), Api::error_code(&b)), (404, 40403));
    let (_, g) = api.call("GET", "/groups/billing", None, "").await;
    assert_eq!(g["members"], json!([]), "deleting the instance left the group");
}

#[tokio::test]
async fn health_metrics_and_openapi_describe_the_server() {
    let api = api();
    api.call("POST", "/topics/m", Some(BINARY), r#"{"records":[{"value":"aGk="}]}"#).await;
    let (s, h) = api.call("GET", "/health", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((h["status"].as_str(), h["bus"].as_str()), (Some("ok"), Some("embedded")));
    assert_eq!(h["storage"]["topics"], 1);

    weir_http::HttpServer::start(api.broker.clone(), HttpConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap()
        .stop()
        .await; // installs the recorder, as `weir up` does
    api.call("POST", "/topics/m", Some(BINARY), r#"{"records":[{"value":"aGk="}]}"#).await;
    let (s, text) = api.call("GET", "/metrics", None, "").await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap().to_string();
    for name in [
        "weir_http_requests_total",
        "weir_http_request_duration_seconds_bucket",
        "weir_records_produced_total{topic=\"m\"}",
        "weir_bytes_produced_total",
        "weir_produce_latency_seconds",
        "weir_partition_size_bytes{topic=\"m\",partition=\"0\"}",
        "weir_partition_log_end_offset",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }

    let (s, doc) = api.call("GET", "/openapi.json", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for p in
        ["/topics/{topic}", "/consumers/{group}/instances/{instance}/records", "/groups/{group}", "/metrics", "/health"]
    {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
}

/// The running server closes consumer instances nobody used for the instance timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_consumer_instances_are_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    let mut config = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    config.consumer_instance_timeout = Duration::from_millis(1500);
    let server = weir_http::HttpServer::start(broker, config).await.unwrap();
    let addr = server.local_addr;
    let request = |raw: String| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let body = r#"{"name":"idle"}"#;
    let created = request(format!(
        "POST /consumers/g HTTP/1.1\r\nHost: x\r\nContent-Type: {V2}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
    .await;
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    let get = "GET /consumers/g/instances/idle/subscription HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert!(request(get.to_string()).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let gone = request(get.to_string()).await;
    assert!(gone.starts_with("HTTP/1.1 404") && gone.contains("40403"), "{gone}");
    server.stop().await;
}

/// Over a socket, with the reaper running: a member joining a group whose other member is idle between requests
/// gets its partitions within seconds (the reaper rejoins the idle one), and no record is lost to that rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_does_not_hold_up_a_rebalance() {
    let (_dir, broker) = scratch_broker();
    broker.create_topic("t", 2, BTreeMap::new()).unwrap();
    let producer = broker.producer();
    for i in 0..20 {
        producer.send(weir_broker::ProduceRecord::new("t", format!("r{i}")).with_key(format!("k{i}"))).await.unwrap();
    }
    let server = weir_http::HttpServer::start(broker, HttpConfig::new("127.0.0.1:0".parse().unwrap())).await.unwrap();
    let addr = server.local_addr;
    let call = |method: &'static str, path: String, body: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {V2}\r\nAccept: {BINARY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (out, body)
    };
    for name in ["a", "b"] {
        let body = if name == "a" {
            r#"{"name":"a","auto.offset.reset":"earliest"}"#
        } else {
            r#"{"name":"b","auto.offset.reset":"earliest"}"#
        };
        assert!(call("POST", "/consumers/g".into(), body).await.0.starts_with("HTTP/1.1 200"));
        call("POST", format!("/consumers/g/instances/{name}/subscription"), r#"{"topics":["t"]}"#).await;
    }
    // a joins alone and takes everything it is given.
    let (_, first) = call("GET", "/consumers/g/instances/a/records?timeout=2000".into(), "").await;
    assert!(!serde_json::from_str::<Vec<Value>>(&first).unwrap().is_empty(), "{first}");
    // b's join starts a rebalance that needs a again; a is idle, so only the reaper can bring it back.
    let started = std::time::Instant::now();
    let (resp, _) = call("GET", "/consumers/g/instances/b/records?timeout=1000".into(), "").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(started.elapsed() < Duration::from_secs(15), "b waited {:?} for the rebalance", started.elapsed());
    server.stop().await;
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unbase64(s: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}
