//! The schema registry as `weir up` serves it: on its own listener (`--schema-registry-listen`), kept in the
//! `_schemas` topic so that a `kill -9` loses no registered schema, behind the same users and ACLs as the HTTP API
//! (Basic credentials; the SUBJECT resource of `weir acls`), and on a cluster (Tansu) shared by two instances.

mod support;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};

use support::{curl_json, eventually, ok, weir};

/// Starts `weir up` with the registry on a free port; the process and the registry's address from the banner.
fn start(d: &Path, before: &[&str]) -> (Child, String) {
    start_with(d, before, &[])
}

/// [`start`] with more arguments after `up`'s.
fn start_with(d: &Path, before: &[&str], after: &[&str]) -> (Child, String) {
    let (up, registry, _, _) = start_full(d, before, after);
    (up, registry)
}

/// [`start_with`], also returning the Kafka and HTTP listeners' addresses when it has them.
#[allow(clippy::zombie_processes)]
fn start_full(d: &Path, before: &[&str], after: &[&str]) -> (Child, String, Option<String>, Option<String>) {
    // No Kafka or HTTP listener unless `after` asks for one.
    let kafka_listen: &[&str] = if after.contains(&"--kafka-listen") { &[] } else { &["--kafka-listen", "none"] };
    let http_listen: &[&str] = if after.contains(&"--http-listen") { &[] } else { &["--http-listen", "none"] };
    let args = [
        before,
        &["up", "--systems", "none"],
        kafka_listen,
        http_listen,
        &["--schema-registry-listen", "127.0.0.1:0"],
        after,
    ]
    .concat();
    let mut up = weir(d, &args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut stderr = std::io::BufReader::new(up.stderr.take().unwrap());
    let mut line = String::new();
    let (mut kafka, mut http) = (None, None);
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("weir up exited early with {}", up.wait().unwrap());
        }
        let first = |rest: &str| rest.split_whitespace().next().unwrap_or_default().to_string();
        if let Some(rest) = line.trim().strip_prefix("kafka ") {
            kafka = Some(first(rest)).filter(|a| a != "disabled");
        }
        if let Some(rest) = line.trim().strip_prefix("http ") {
            http = Some(first(rest).trim_start_matches("http://").to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("schemas ") {
            let addr = first(rest).trim_start_matches("http://").to_string();
            std::thread::spawn(move || for _ in stderr.lines().map_while(Result::ok) {});
            return (up, addr, kafka, http);
        }
    }
}

fn register(registry: &str, subject: &str, schema: &str, auth: &[&str]) -> (serde_json::Value, String) {
    let body = serde_json::json!({ "schema": schema }).to_string();
    let url = format!("http://{registry}/subjects/{subject}/versions");
    let args = [auth, &["-X", "POST", "-H", "Content-Type: application/vnd.schemaregistry.v1+json", "-d", &body, &url]];
    curl_json(&args.concat())
}

fn enum_schema(n: usize) -> String {
    let symbols: Vec<String> = (0..=n).map(|i| format!("\"S{i}\"")).collect();
    format!(r#"{{"type": "enum", "name": "E", "symbols": [{}], "default": "S0"}}"#, symbols.join(","))
}

#[test]
fn registered_schemas_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut up, registry) = start(d, &[]);
    // Each answer comes after the record is in `_schemas` and read back: what was answered is kept.
    let mut ids = Vec::new();
    for n in 1..=20 {
        let (body, status) = register(&registry, "colors-value", &enum_schema(n), &[]);
        assert_eq!(status, "200", "{body}");
        ids.push(body["id"].as_i64().unwrap());
    }
    up.kill().unwrap(); // SIGKILL
    up.wait().unwrap();

    let (mut up, registry) = start(d, &[]);
    let (versions, status) = curl_json(&[&format!("http://{registry}/subjects/colors-value/versions")]);
    assert_eq!(status, "200");
    assert_eq!(versions, serde_json::json!((1..=20).collect::<Vec<_>>()));
    for (i, id) in ids.iter().enumerate() {
        let (schema, status) = curl_json(&[&format!("http://{registry}/schemas/ids/{id}")]);
        assert_eq!(status, "200");
        assert_eq!(schema["schema"].as_str().unwrap(), enum_schema(i + 1));
    }
    // The next id follows the last one: none is reused.
    let (body, _) = register(&registry, "other-value", r#""string""#, &[]);
    assert_eq!(body["id"].as_i64().unwrap(), ids.last().unwrap() + 1);
    up.kill().unwrap();
    up.wait().unwrap();
}

/// Two users, a writer and a reader, each refused what it may not do; 401 without credentials, 403 with the
/// registry's JSON error body; the list of subjects shows only those a user may see.
#[test]
fn the_registry_takes_the_http_apis_users_and_acls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("weir.toml");
    std::fs::write(&config, "[security]\nauthorizer = \"acl\"\nsuper_users = [\"User:admin\"]\n").unwrap();
    let config = config.to_str().unwrap();
    for (user, password) in [("writer", "writer-pw-1"), ("reader", "reader-pw-2"), ("admin", "admin-pw-3")] {
        ok(d, &["--config", config, "users", "add", user, "--password", password]);
    }
    let acl = |args: &[&str]| ok(d, &[&["--config", config, "acls", "add"], args].concat());
    acl(&["--allow", "User:writer", "--operation", "write", "--operation", "read", "--subject", "orders-value"]);
    acl(&["--allow", "User:reader", "--operation", "read", "--subject", "orders-", "--prefixed"]);
    let (mut up, registry) = start(d, &["--config", config]);
    let url = |path: &str| format!("http://{registry}{path}");
    let schema = r#"{"type": "record", "name": "Order", "fields": [{"name": "id", "type": "long"}]}"#;

    let (body, status) = register(&registry, "orders-value", schema, &[]);
    assert_eq!((status.as_str(), body["error_code"].as_i64()), ("401", Some(40101)), "{body}");
    let (body, status) = register(&registry, "orders-value", schema, &["-u", "writer:wrong"]);
    assert_eq!(status, "401", "{body}");
    let (body, status) = register(&registry, "orders-value", schema, &["-u", "reader:reader-pw-2"]);
    assert_eq!((status.as_str(), body["error_code"].as_i64()), ("403", Some(40301)), "{body}");
    assert!(body["message"].as_str().unwrap().contains("orders-value"), "{body}");
    let (body, status) = register(&registry, "orders-value", schema, &["-u", "writer:writer-pw-1"]);
    assert_eq!(status, "200", "{body}");
    let (body, status) = register(&registry, "payments-value", schema, &["-u", "writer:writer-pw-1"]);
    assert_eq!(status, "403", "the writer may write orders-value only: {body}");
    let (_, status) = register(&registry, "payments-value", schema, &["-u", "admin:admin-pw-3"]);
    assert_eq!(status, "200", "a super user may do anything");

    let (body, status) = curl_json(&["-u", "reader:reader-pw-2", &url("/subjects/orders-value/versions/latest")]);
    assert_eq!((status.as_str(), body["version"].as_i64()), ("200", Some(1)), "{body}");
    let (body, _) = curl_json(&["-u", "reader:reader-pw-2", &url("/subjects")]);
    assert_eq!(body, serde_json::json!(["orders-value"]), "only the subjects the reader may see");
    let (body, _) = curl_json(&["-u", "admin:admin-pw-3", &url("/subjects")]);
    assert_eq!(body, serde_json::json!(["orders-value", "payments-value"]));
    let (_, status) = curl_json(&["-u", "reader:reader-pw-2", &url("/subjects/payments-value/versions/1")]);
    assert_eq!(status, "403");
    let (_, status) = curl_json(&["-u", "reader:reader-pw-2", "-X", "DELETE", &url("/subjects/orders-value")]);
    assert_eq!(status, "403", "reading is not deleting");
    // The global level is the cluster's configuration: ALTER_CONFIGS on the cluster.
    let put = ["-X", "PUT", "-H", "Content-Type: application/json", "-d", r#"{"compatibility": "FULL"}"#];
    let (_, status) = curl_json(&[&["-u", "writer:writer-pw-1"], &put[..], &[&url("/config")]].concat());
    assert_eq!(status, "403");
    // ACLs added while it runs take effect.
    acl(&["--allow", "User:writer", "--operation", "alter_configs", "--cluster"]);
    let status =
        eventually("200", || curl_json(&[&["-u", "writer:writer-pw-1"], &put[..], &[&url("/config")]].concat()).1);
    assert_eq!(status, "200");
    up.kill().unwrap();
    up.wait().unwrap();
}

/// Two `weir up` instances on one Tansu cluster serve one registry: what one registers the other serves, a version
/// registered on the second follows the first's, and ids are not handed out twice.
#[test]
fn two_instances_on_a_cluster_serve_one_registry() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let tansu = rt.block_on(weir_runtime::testing::Tansu::start());
    let bus = tansu.bus_url();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, registry_a) = start_with(dir_a.path(), &[], &["--bus", &bus]);
    let (mut b, registry_b) = start_with(dir_b.path(), &[], &["--bus", &bus]);

    let v1 = r#"{"type": "record", "name": "T", "fields": [{"name": "a", "type": "int"}]}"#;
    let v2 = r#"{"type": "record", "name": "T", "fields": [{"name": "a", "type": "int"},
                {"name": "b", "type": "int", "default": 0}]}"#;
    let (body, status) = register(&registry_a, "tickets-value", v1, &[]);
    assert_eq!(status, "200", "{body}");
    let id1 = body["id"].as_i64().unwrap();
    let latest_on_b =
        eventually("200", || curl_json(&[&format!("http://{registry_b}/subjects/tickets-value/versions/latest")]).1);
    assert_eq!(latest_on_b, "200", "B serves what A registered");
    let (body, status) = register(&registry_b, "tickets-value", v2, &[]);
    assert_eq!(status, "200", "{body}");
    let id2 = body["id"].as_i64().unwrap();
    assert_ne!(id1, id2);
    let versions = eventually("[1,2]", || {
        curl_json(&[&format!("http://{registry_a}/subjects/tickets-value/versions")]).0.to_string()
    });
    assert_eq!(versions, "[1,2]", "A serves B's version after its own");
    let (schema, _) = curl_json(&[&format!("http://{registry_a}/schemas/ids/{id2}")]);
    assert!(schema["schema"].as_str().unwrap().contains("\"b\""), "{schema}");
    for up in [&mut a, &mut b] {
        up.kill().unwrap();
        up.wait().unwrap();
    }
    drop(tansu);
}

/// `weir schemas` on the data directory, then with `--server` against a running weir whose registry serves what the
/// CLI registers: the same checks and errors as the REST API, one line each, a non-zero exit on refusal.
#[test]
fn weir_schemas_registers_checks_lists_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v1 = d.join("v1.avsc");
    let v2 = d.join("v2.avsc");
    let bad = d.join("bad.avsc");
    std::fs::write(&v1, r#"{"type": "record", "name": "O", "fields": [{"name": "id", "type": "long"}]}"#).unwrap();
    std::fs::write(
        &v2,
        r#"{"type": "record", "name": "O", "fields": [{"name": "id", "type": "long"},
            {"name": "note", "type": "string", "default": ""}]}"#,
    )
    .unwrap();
    std::fs::write(&bad, r#"{"type": "record", "name": "O", "fields": [{"name": "id", "type": "string"}]}"#).unwrap();
    let (v1, v2, bad) = (v1.to_str().unwrap(), v2.to_str().unwrap(), bad.to_str().unwrap());

    assert_eq!(ok(d, &["schemas", "register", "orders-value", v1]), "registered orders-value version 1 as id 1\n");
    assert_eq!(ok(d, &["schemas", "register", "orders-value", v1]), "registered orders-value version 1 as id 1\n");
    assert_eq!(ok(d, &["schemas", "check", "orders-value", v2]), "compatible with orders-value\n");
    let out = support::run(d, &["schemas", "check", "orders-value", bad]);
    assert_eq!(out.status.code(), Some(1));
    let why = String::from_utf8_lossy(&out.stdout);
    assert!(why.contains("/fields/0") && why.contains("string"), "the reason names where and what: {why}");
    let e = support::fails(d, &["schemas", "register", "orders-value", bad]);
    assert!(e.contains("incompatible") && e.contains("409") && e.lines().count() == 1, "{e}");
    assert_eq!(ok(d, &["schemas", "register", "orders-value", v2]), "registered orders-value version 2 as id 2\n");
    assert!(ok(d, &["schemas", "get", "orders-value", "--version", "1"]).contains(r#""name": "O""#));
    assert!(ok(d, &["schemas", "get", "--id", "2"]).contains("note"));
    let e = support::fails(d, &["schemas", "get", "nobody-value"]);
    assert!(e.contains("40401"), "{e}");
    let e = support::fails(d, &["schemas", "register", "x-value", v1, "--reference", "broken"]);
    assert!(e.contains("NAME=SUBJECT:VERSION"), "{e}");
    let e = support::fails(d, &["schemas", "register", "y-value", v1, "--type", "yaml"]);
    assert!(e.contains("--type"), "{e}");
    assert_eq!(ok(d, &["schemas", "list"]), "orders-value\tversion 2\tid 2\tAVRO\n");
    assert!(ok(d, &["schemas", "delete", "orders-value", "--version", "2"]).contains("soft-deleted"));
    let e = support::fails(d, &["schemas", "delete", "orders-value", "--version", "1", "--permanent"]);
    assert!(e.contains("40407"), "permanent before soft: {e}");

    // A running weir: the CLI talks Kafka to it, and its REST API serves what the CLI registered.
    let (mut up, registry, kafka, _) = start_full(d, &[], &["--kafka-listen", "127.0.0.1:0"]);
    let kafka = kafka.expect("the banner names the Kafka listener");
    let (body, _) = curl_json(&[&format!("http://{registry}/subjects/orders-value/versions")]);
    assert_eq!(body, serde_json::json!([1]), "the CLI's registrations and deletes, served");
    let out = ok(d, &["--server", &kafka, "schemas", "register", "payments-value", v1]);
    assert_eq!(out, "registered payments-value version 1 as id 1\n", "the same schema, the same id");
    let (body, _) = curl_json(&[&format!("http://{registry}/subjects/payments-value/versions/latest")]);
    assert_eq!(body["id"], 1, "{body}");
    up.kill().unwrap();
    up.wait().unwrap();
}

/// `weir produce --schema` encodes JSON lines with a subject's schema as Confluent's serializers do, and `weir consume
/// --decode` prints them back as JSON; a line that does not fit stops the producer, naming it.
#[test]
fn produce_with_a_schema_and_consume_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let schema = d.join("order.avsc");
    std::fs::write(
        &schema,
        r#"{"type": "record", "name": "Order", "fields": [{"name": "id", "type": "long"},
            {"name": "note", "type": ["null", "string"], "default": null}]}"#,
    )
    .unwrap();
    ok(d, &["schemas", "register", "orders-value", schema.to_str().unwrap()]);
    // The topic checks what producers send: framed records pass, plain ones are refused.
    ok(d, &["topics", "create", "orders", "--config", "confluent.value.schema.validation=true"]);
    support::produce(
        d,
        &["produce", "orders", "--schema", "orders-value"],
        "{\"id\": 1, \"note\": null}\n{\"id\": 2, \"note\": {\"string\": \"gift\"}}\n",
    );
    let read = ["consume", "orders", "--from-beginning", "--idle-timeout-ms", "1000"];
    let decoded = ok(d, &[&read[..], &["--decode"]].concat());
    assert_eq!(decoded, "{\"id\":1,\"note\":null}\n{\"id\":2,\"note\":{\"string\":\"gift\"}}\n");
    let raw = support::run(d, &read).stdout;
    assert_eq!(&raw[..5], &[0, 0, 0, 0, 1], "framed with schema id 1");

    let mut child = weir(d, &["produce", "orders", "--schema", "orders-value"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"{\"id\": 3}\n{\"id\": \"four\"}\n{\"id\": 5}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("line 2") && e.contains("/id"), "{e}");
    let decoded = ok(d, &[&read[..], &["--decode"]].concat());
    assert_eq!(decoded.lines().count(), 3, "the line before the bad one was sent, none after: {decoded}");
    let mut plain = weir(d, &["produce", "orders"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut plain.stdin.take().unwrap(), b"not framed\n").unwrap();
    let out = plain.wait_with_output().unwrap();
    assert!(!out.status.success(), "an unframed record on a validating topic is refused");
    let e = support::fails(d, &["produce", "orders", "--schema", "nobody-value"]);
    assert!(e.contains("40401") || e.contains("not found"), "{e}");
}

/// `weir produce --schema-file` registers the file's schema under the subject its strategy names, as Confluent's
/// serializers do: two record types on one topic under RecordNameStrategy, each under its record's name, both
/// passing the topic's validation; a strategy that needs a record name the schema lacks is refused before anything
/// is sent.
#[test]
fn produce_with_a_schema_file_under_a_record_strategy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let opened = d.join("opened.avsc");
    std::fs::write(&opened, r#"{"type": "record", "name": "TicketOpened", "namespace": "repair", "fields": [{"name": "ticket", "type": "string"}]}"#).unwrap();
    let closed = d.join("closed.avsc");
    std::fs::write(&closed, r#"{"type": "record", "name": "TicketClosed", "namespace": "repair", "fields": [{"name": "ticket", "type": "string"}, {"name": "paid", "type": "boolean"}]}"#).unwrap();
    ok(
        d,
        &[
            "topics",
            "create",
            "tickets",
            "--config",
            "confluent.value.schema.validation=true",
            "--config",
            "confluent.value.subject.name.strategy=io.confluent.kafka.serializers.subject.RecordNameStrategy",
        ],
    );
    let with = |file: &Path| {
        ["produce", "tickets", "--schema-file", file.to_str().unwrap(), "--subject-strategy", "record"]
            .map(String::from)
    };
    support::produce(d, &with(&opened), "{\"ticket\": \"t1\"}\n");
    support::produce(d, &with(&closed), "{\"ticket\": \"t1\", \"paid\": true}\n");
    // Again: found under its subject, not registered twice.
    support::produce(d, &with(&opened), "{\"ticket\": \"t2\"}\n");
    let subjects = ok(d, &["schemas", "list"]);
    assert!(subjects.contains("repair.TicketOpened") && subjects.contains("repair.TicketClosed"), "{subjects}");
    assert!(!subjects.contains("tickets-value"), "{subjects}");
    let read = ["consume", "tickets", "--from-beginning", "--idle-timeout-ms", "1000", "--decode"];
    // serde_json writes an object's keys sorted.
    assert_eq!(ok(d, &read), "{\"ticket\":\"t1\"}\n{\"paid\":true,\"ticket\":\"t1\"}\n{\"ticket\":\"t2\"}\n");
    let plain = d.join("count.avsc");
    std::fs::write(&plain, r#""long""#).unwrap();
    let e = support::fails(
        d,
        &["produce", "tickets", "--schema-file", plain.to_str().unwrap(), "--subject-strategy", "record"],
    );
    assert!(e.contains("RecordNameStrategy needs a record name"), "{e}");
    let e = support::fails(
        d,
        &["produce", "tickets", "--schema-file", plain.to_str().unwrap(), "--subject-strategy", "by-name"],
    );
    assert!(e.contains("--subject-strategy"), "{e}");
}

/// The REST Proxy's avro format under `weir up`, with Confluent's own client on the other side: records produced
/// over HTTP with a schema are read by confluent-kafka's AvroDeserializer over the Kafka protocol, and records
/// written by its AvroSerializer are read back decoded by an avro consumer instance over HTTP.
#[test]
fn the_rest_proxy_avro_format_meets_confluent_s_serializers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut up, registry, kafka, http) =
        start_full(d, &[], &["--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]);
    let (kafka, http) = (kafka.expect("a Kafka listener"), http.expect("an HTTP listener"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/rest_proxy_avro.py");
    let out = std::process::Command::new("python3").args([script, &kafka, &registry, &http]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("all checks passed"), "{text}");
    up.kill().unwrap();
    up.wait().unwrap();
}
