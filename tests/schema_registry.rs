//! The schema registry as `weir up` serves it: on its own listener (`--schema-registry-listen`), kept in the
//! `_schemas` topic so that a `kill -9` loses no registered schema, behind the same users and ACLs as the HTTP API
//! (Basic credentials; the SUBJECT resource of `weir acls`), and on a cluster (Tansu) shared by two instances.

mod support;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{curl_json, ok, weir};

/// Starts `weir up` with the registry on a free port; the process and the registry's address from the banner.
fn start(d: &Path, before: &[&str]) -> (Child, String) {
    start_with(d, before, &[])
}

/// [`start`] with more arguments after `up`'s.
#[allow(clippy::zombie_processes)]
fn start_with(d: &Path, before: &[&str], after: &[&str]) -> (Child, String) {
    let args = [
        before,
        &["up", "--systems", "none", "--kafka-listen", "none", "--http-listen", "none"],
        &["--schema-registry-listen", "127.0.0.1:0"],
        after,
    ]
    .concat();
    let mut up = weir(d, &args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut stderr = std::io::BufReader::new(up.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("weir up exited early with {}", up.wait().unwrap());
        }
        if let Some(rest) = line.trim().strip_prefix("schemas ") {
            let addr = rest.split_whitespace().next().unwrap().trim_start_matches("http://").to_string();
            std::thread::spawn(move || for _ in stderr.lines().map_while(Result::ok) {});
            return (up, addr);
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

fn eventually(want: &str, mut probe: impl FnMut() -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = probe();
        if got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
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
