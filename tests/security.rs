//! Security as an operator meets it through the binary: `weir users`, `weir acls` and `weir certs dev`, the
//! `[security]` settings, `weir up` refusing bad store files, and a running `weir up` serving TLS, checking
//! credentials and ACLs, and picking up what the CLI changed while it runs.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{curl_json, eventually, fails, ok, weir};

/// `weir users add` with the password on stdin, as a script would pipe it.
fn add_user(d: &Path, args: &[&str], password: &str) -> std::process::Output {
    let mut child = weir(d, args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn users_add_list_token_remove() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = add_user(d, &["users", "add", "alice"], "alice-pw-7d1e\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = add_user(d, &["users", "add", "bob", "--password-stdin", "--iterations", "8192"], "bob-pw-55aa\r\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ok(d, &["users", "add", "carol", "--password", "carol-pw-0b0b"]);

    let out = weir(d, &["users", "token", "robot"]).output().unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.strip_suffix('\n').expect("one line");
    assert!(token.starts_with("weir_") && !token.contains(char::is_whitespace), "the token alone on stdout: {token:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("only this once"));

    let list = ok(d, &["users", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    assert!(lines[0].starts_with("alice ") && lines[0].contains("SCRAM-SHA-256=iterations=4096"), "{list}");
    assert!(lines[0].contains("SCRAM-SHA-512=iterations=4096"), "{list}");
    assert!(lines[1].starts_with("bob ") && lines[1].contains("SCRAM-SHA-512=iterations=8192"), "{list}");
    assert!(lines[3].starts_with("robot ") && lines[3].contains(&token[..13]), "the token's id: {list}");
    assert!(!list.contains(token), "never the whole token again: {list}");

    let file = std::fs::read_to_string(d.join("security/users.jsonl")).unwrap();
    for secret in ["alice-pw-7d1e", "bob-pw-55aa", "carol-pw-0b0b", token] {
        assert!(!file.contains(secret), "users.jsonl holds no password nor token: {file}");
    }

    // Setting a password again changes it; the settings file's users are listed, and are changed there only.
    let out = add_user(d, &["users", "add", "alice"], "alice-pw-2\n");
    assert!(String::from_utf8_lossy(&out.stdout).contains("password changed"));
    let config = d.join("weir.toml");
    std::fs::write(&config, "[kafka.users]\nsvc = \"svc-pw-9c9c\"\n").unwrap();
    let config = config.to_str().unwrap();
    let list = ok(d, &["--config", config, "users", "list"]);
    let svc = list.lines().find(|l| l.starts_with("svc ")).expect("svc is listed");
    assert!(svc.ends_with("(settings file)") && !list.contains("svc-pw-9c9c"), "{list}");
    assert!(fails(d, &["--config", config, "users", "remove", "svc"]).contains("[kafka.users]"));

    assert!(ok(d, &["users", "remove", "alice"]).contains("removed"));
    assert!(fails(d, &["users", "remove", "alice"]).contains("no user"));
    let names: Vec<String> =
        ok(d, &["users", "list"]).lines().map(|l| l.split_whitespace().next().unwrap().to_string()).collect();
    assert_eq!(names, ["bob", "carol", "robot"]);
}

#[test]
fn users_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = add_user(d, &["users", "add", "alice"], "");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no password"));
    let e = fails(d, &["users", "add", "alice", "--password", "pw", "--iterations", "100"]);
    assert!(e.contains("iterations"), "{e}");
    let e = fails(d, &["users", "add", "", "--password", "pw"]);
    assert!(e.contains("invalid user name"), "{e}");
    // --password and --password-stdin are one or the other.
    fails(d, &["users", "add", "alice", "--password", "pw", "--password-stdin"]);
    // A remote --server is not what these commands change.
    let e = fails(d, &["--server", "127.0.0.1:9092", "users", "list"]);
    assert!(e.contains("--data-dir"), "{e}");
    assert_eq!(ok(d, &["users", "list"]), "", "nothing was added");
}

#[test]
fn acls_add_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let added = ok(
        d,
        &["acls", "add", "--allow", "User:alice", "--allow", "User:bob", "--operation", "write", "--topic", "orders"],
    );
    assert!(
        added.contains("User:alice has ALLOW permission for operations: WRITE from hosts: * on TOPIC:LITERAL:orders"),
        "{added}"
    );
    ok(
        d,
        &[
            "acls",
            "add",
            "--deny",
            "User:bob",
            "--host",
            "10.0.0.9",
            "--operation",
            "read",
            "--topic",
            "ord",
            "--prefixed",
        ],
    );
    ok(d, &["acls", "add", "--allow", "User:*", "--operation", "describe", "--operation", "read", "--group", "*"]);
    ok(d, &["acls", "add", "--allow", "User:ops", "--operation", "create", "--cluster"]);
    ok(d, &["acls", "add", "--allow", "User:alice", "--operation", "read", "--system", "wedding"]);
    ok(d, &["acls", "add", "--allow", "User:alice", "--operation", "write", "--transactional-id", "tx-1"]);

    let all = ok(d, &["acls", "list"]);
    assert_eq!(all.lines().count(), 8, "{all}");
    assert!(
        all.contains("User:bob has DENY permission for operations: READ from hosts: 10.0.0.9 on TOPIC:PREFIXED:ord")
    );
    assert!(all.contains(
        "User:ops has ALLOW permission for operations: CREATE from hosts: * on CLUSTER:LITERAL:kafka-cluster"
    ));
    assert!(all.contains("on SYSTEM:LITERAL:wedding") && all.contains("on TRANSACTIONAL_ID:LITERAL:tx-1"));

    assert_eq!(ok(d, &["acls", "list", "--principal", "User:alice"]).lines().count(), 3);
    assert_eq!(ok(d, &["acls", "list", "--topic", "orders"]).lines().count(), 2, "literal ACLs by default");
    let matching = ok(d, &["acls", "list", "--topic", "orders", "--matching"]);
    assert_eq!(matching.lines().count(), 3, "the prefix `ord` applies too: {matching}");
    assert_eq!(ok(d, &["acls", "list", "--topic", "ord", "--prefixed"]).lines().count(), 1);

    // Removing everything takes --all; a selector removes only what it matches.
    let e = fails(d, &["acls", "remove"]);
    assert!(e.contains("--all"), "{e}");
    let removed = ok(d, &["acls", "remove", "--principal", "User:bob"]);
    assert_eq!(removed.lines().filter(|l| l.starts_with("User:bob")).count(), 2, "{removed}");
    assert!(!ok(d, &["acls", "list"]).contains("User:bob"));
    ok(d, &["acls", "remove", "--all"]);
    assert_eq!(ok(d, &["acls", "list"]), "");
}

#[test]
fn acls_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let add = |extra: &[&str]| {
        let mut args = vec!["acls", "add"];
        args.extend_from_slice(extra);
        fails(d, &args)
    };
    let e = add(&["--allow", "User:a", "--operation", "nope", "--topic", "t"]);
    assert!(e.contains("nope") && e.contains("idempotent_write"), "names the operations: {e}");
    let e = add(&["--allow", "User:a", "--operation", "idempotent-write", "--topic", "t"]);
    assert!(e.contains("IDEMPOTENT_WRITE is not an operation on a TOPIC"), "{e}");
    let e = add(&["--allow", "User:a", "--operation", "write", "--group", "g"]);
    assert!(e.contains("WRITE is not an operation on a GROUP"), "{e}");
    let e = add(&["--allow", "alice", "--operation", "read", "--topic", "t"]);
    assert!(e.contains("invalid principal") && e.contains("User:alice"), "{e}");
    let e = add(&["--allow", "User:a", "--operation", "read"]);
    assert!(e.contains("--topic"), "a resource is required: {e}");
    add(&["--operation", "read", "--topic", "t"]);
    add(&["--allow", "User:a", "--operation", "read", "--topic", "t", "--group", "g"]);
    let e = add(&["--allow", "User:a", "--operation", "read", "--system", "nosuch"]);
    assert!(e.contains("nosuch") && e.contains("wedding"), "{e}");
    let e = add(&["--allow", "User:a", "--operation", "read", "--topic", "t", "--host", "db.example.com"]);
    assert!(e.contains("IP address"), "{e}");
    // One bad ACL of several: none is added.
    add(&["--allow", "User:a", "--allow", "bad", "--operation", "read", "--topic", "t"]);
    let e = fails(d, &["acls", "list", "--principal", "nobody"]);
    assert!(e.contains("invalid principal"), "{e}");
    assert_eq!(ok(d, &["acls", "list"]), "", "nothing was added");
}

#[test]
fn weir_up_stops_at_a_malformed_store_file_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let security = d.join("security");
    std::fs::create_dir_all(&security).unwrap();
    let up = ["up", "--systems", "none", "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];

    std::fs::write(
        security.join("acls.jsonl"),
        "# weir's ACLs\n\
         {\"resource_type\":\"TOPIC\",\"pattern_type\":\"LITERAL\",\"name\":\"t\",\"principal\":\"User:a\",\
         \"operation\":\"READ\",\"permission\":\"ALLOW\"}\n\
         {\"resource_type\":\"TOPIC\", oops\n",
    )
    .unwrap();
    for args in [&up[..], &["up", "--check"]] {
        let started = Instant::now();
        let e = fails(d, args);
        assert!(e.contains("acls.jsonl:3:") && e.lines().count() == 1, "{args:?}: {e}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
    // The other CLI commands refuse it too, and fixing it is editing the file.
    assert!(fails(d, &["acls", "list"]).contains("acls.jsonl:3:"));
    std::fs::remove_file(security.join("acls.jsonl")).unwrap();

    std::fs::write(security.join("users.jsonl"), "{\"user\":\"a\"}\n{\"user\":\"b\",\"password\":\"x\"}\n").unwrap();
    let e = fails(d, &up);
    assert!(e.contains("users.jsonl:2:") && e.contains("password"), "{e}");
    assert!(fails(d, &["users", "list"]).contains("users.jsonl:2:"));
    // Nothing was opened: no broker data was created by the refused starts.
    assert!(!d.join("weir.db").exists());
}

#[test]
fn security_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("weir.toml");
    let refused = |text: &str| {
        std::fs::write(&config, text).unwrap();
        fails(d, &["--config", config.to_str().unwrap(), "topics", "list"])
    };
    let e = refused("[security]\nauthorizer = \"bogus\"\n");
    assert!(e.contains("authorizer") && e.contains("bogus"), "{e}");
    let e = refused("[security]\nsuper_user = [\"User:admin\"]\n");
    assert!(e.contains("super_user"), "unknown keys are refused: {e}");
    let e = refused("[security]\nsuper_users = [\"admin\"]\n");
    assert!(e.contains("admin"), "{e}");
    let e = refused("[security.tls]\ncert = \"a.pem\"\nkey = \"b.pem\"\nlisteners = [\"grpc\"]\n");
    assert!(e.contains("grpc"), "{e}");

    // TLS files are read by `weir up --check`; a missing one is named, relative to the settings file's directory.
    std::fs::write(&config, "[security.tls]\ncert = \"certs/nope.pem\"\nkey = \"certs/nope-key.pem\"\n").unwrap();
    let e = fails(d, &["--config", config.to_str().unwrap(), "up", "--check"]);
    assert!(e.contains(&d.join("certs/nope.pem").display().to_string()), "{e}");
}

#[test]
fn certs_dev_writes_what_up_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(d, &["certs", "dev"]);
    let certs = d.join("certs");
    for name in ["ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem"] {
        let path = certs.join(name);
        assert!(std::fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false), "{name} written");
        assert!(out.contains(&std::fs::canonicalize(&path).unwrap().display().to_string()), "{name} named: {out}");
    }
    assert!(out.contains("kcat") && out.contains("curl"), "{out}");

    // The printed [security.tls] table, pasted into a settings file, is one `weir up --check` accepts.
    let start = out.find("[security.tls]").unwrap();
    let table: String = out[start..].lines().take_while(|l| !l.trim().is_empty()).map(|l| format!("{l}\n")).collect();
    let config = d.join("weir.toml");
    std::fs::write(&config, format!("[security]\nauthorizer = \"acl\"\nsuper_users = [\"User:admin\"]\n\n{table}"))
        .unwrap();
    let check = ok(d, &["--config", config.to_str().unwrap(), "up", "--check"]);
    assert!(check.contains("SSL, client certificates required"), "{check}");
    assert!(check.contains("authorizer acl"), "{check}");

    // --dir, --host and --client.
    let other = d.join("other");
    ok(d, &["certs", "dev", "--dir", other.to_str().unwrap(), "--host", "weir.internal", "--client", "svc"]);
    assert!(other.join("client.pem").exists() && other.join("server-key.pem").exists());
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A running `weir up` with TLS on HTTP and the ACL authorizer: open paths need nothing, other routes credentials,
/// and users, tokens and ACLs added with the CLI while it runs take effect without a restart.
#[test]
fn a_running_weir_serves_tls_and_enforces_what_the_cli_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["certs", "dev"]);
    // Relative paths: relative to the settings file's directory, not weir's working directory.
    let config = d.join("weir.toml");
    std::fs::write(
        &config,
        "[security]\nauthorizer = \"acl\"\n\n[security.tls]\ncert = \"certs/server.pem\"\nkey = \"certs/server-key.pem\"\n\
         listeners = [\"http\"]\n",
    )
    .unwrap();
    ok(d, &["topics", "create", "orders"]);
    let out = add_user(d, &["users", "add", "alice"], "alice-pw-31\n");
    assert!(out.status.success());

    let args = [
        "--config",
        config.to_str().unwrap(),
        "up",
        "--systems",
        "wedding",
        "--kafka-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    let (mut up, _kafka, http, _stderr) = support::start_up_command(weir(d, &args));
    let http = http.strip_prefix("https://").expect("the banner says https").to_string();
    let ca = d.join("certs/ca.pem");
    let ca = ca.to_str().unwrap();
    let status = |path: &str, extra: &[&str]| {
        let url = format!("https://{http}{path}");
        let mut args = vec!["--cacert", ca];
        args.extend_from_slice(extra);
        args.push(&url);
        curl_json(&args).1
    };

    assert_eq!(status("/health", &[]), "200", "an open path");
    assert_eq!(status("/topics/orders", &[]), "401", "credentials required");
    assert_eq!(status("/topics/orders", &["-u", "alice:wrong"]), "401");
    assert_eq!(status("/topics/orders", &["-u", "alice:alice-pw-31"]), "403", "no ACL yet");
    let plain = curl_json(&[&format!("http://{http}/health")]).1;
    assert_ne!(plain, "200", "plaintext HTTP is not served on the TLS port");

    ok(d, &["acls", "add", "--allow", "User:alice", "--operation", "describe", "--topic", "orders"]);
    assert_eq!(eventually("200", || status("/topics/orders", &["-u", "alice:alice-pw-31"])), "200");

    // A system's routes are guarded by ACLs on the system.
    let body = r#"{"event_type": "brawl", "priority": "High", "description": "acl test"}"#;
    let post = ["-u", "alice:alice-pw-31", "-X", "POST", "-H", "Content-Type: application/json", "-d", body];
    assert_eq!(status("/message", &post), "403");
    ok(d, &["acls", "add", "--allow", "User:alice", "--operation", "write", "--system", "wedding"]);
    assert_eq!(eventually("200", || status("/message", &post)), "200");

    // The web console: the same users, and ACLs on the system `console` (READ to look, WRITE to act). Its page
    // holds no data and is served to anyone (it shows a login form); its API needs credentials.
    assert_eq!(status("/", &[]), "200", "the console's page is open");
    assert_eq!(status("/console/app.js", &[]), "200");
    assert_eq!(status("/console/api/topics", &[]), "401", "the console's API needs credentials");
    let alice = ["-u", "alice:alice-pw-31"];
    assert_eq!(status("/console/api/topics", &alice), "403");
    ok(d, &["acls", "add", "--allow", "User:alice", "--operation", "read", "--system", "console"]);
    assert_eq!(eventually("200", || status("/console/api/topics", &alice)), "200");
    assert_eq!(status("/", &alice), "200");
    let topic = r#"{"name": "scratch", "partitions": 1}"#;
    let create = ["-u", "alice:alice-pw-31", "-X", "POST", "-H", "Content-Type: application/json", "-d", topic];
    assert_eq!(status("/console/api/topics", &create), "403");
    assert_eq!(
        status("/console/api/topics/orders", &["-u", "alice:alice-pw-31", "-X", "DELETE"]),
        "403",
        "still there"
    );
    ok(d, &["acls", "add", "--allow", "User:alice", "--operation", "write", "--system", "console"]);
    assert_eq!(eventually("201", || status("/console/api/topics", &create)), "201");

    // Logging in to the console: a session cookie, which the API takes instead of credentials; a change made with
    // it must carry the console's header (a forged cross-site request cannot); logging out ends it.
    let login = |password: &str| {
        let body = format!(r#"{{"user": "alice", "password": "{password}"}}"#);
        let url = format!("https://{http}/console/login");
        let out = Command::new("curl")
            .args(["-s", "-m", "10", "-i", "--cacert", ca, "-X", "POST", "-H", "Content-Type: application/json"])
            .args(["-d", &body, &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let refused = login("wrong");
    assert!(refused.starts_with("HTTP/1.1 401") || refused.starts_with("HTTP/2 401"), "{refused}");
    assert!(!refused.to_lowercase().contains("www-authenticate"), "no browser dialog for the console: {refused}");
    let answer = login("alice-pw-31");
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {answer}"))
        .to_string();
    let attributes = answer.lines().find(|l| l.to_lowercase().starts_with("set-cookie:")).unwrap().to_lowercase();
    assert!(attributes.contains("httponly") && attributes.contains("samesite=strict") && attributes.contains("secure"));
    let with_cookie = ["-H", &format!("Cookie: {cookie}")];
    assert_eq!(status("/console/api/topics", &with_cookie), "200", "the session stands for alice");
    let me = curl_json(&[
        "--cacert",
        ca,
        "-H",
        &format!("Cookie: {cookie}"),
        &format!("https://{http}/console/api/me?systems=console,dispatch"),
    ]);
    assert_eq!((me.0["principal"].as_str(), me.0["session"].as_bool()), (Some("User:alice"), Some(true)), "{}", me.0);
    assert_eq!(me.0["systems"]["console"], serde_json::json!({"read": true, "write": true}));
    assert_eq!(me.0["systems"]["dispatch"], serde_json::json!({"read": false, "write": false}), "no ACL on dispatch");
    let other = r#"{"name": "scratch2", "partitions": 1}"#;
    let forged =
        ["-H", &format!("Cookie: {cookie}"), "-X", "POST", "-H", "Content-Type: application/json", "-d", other];
    assert_eq!(status("/console/api/topics", &forged), "403", "a cookie alone may not change anything");
    let from_console = [&forged[..], &["-H", "X-Weir-Console: 1"]].concat();
    assert_eq!(status("/console/api/topics", &from_console), "201");
    let logout = ["-H", &format!("Cookie: {cookie}"), "-H", "X-Weir-Console: 1", "-X", "POST"];
    assert_eq!(status("/console/logout", &logout), "200");
    assert_eq!(status("/console/api/topics", &with_cookie), "401", "logged out");

    // A token issued while it runs authenticates; removing the user revokes it.
    let token = ok(d, &["users", "token", "robot"]);
    let bearer = format!("Authorization: Bearer {}", token.trim());
    assert_eq!(eventually("403", || status("/topics/orders", &["-H", &bearer])), "403", "authenticated, no ACL");
    ok(d, &["users", "remove", "robot"]);
    assert_eq!(eventually("401", || status("/topics/orders", &["-H", &bearer])), "401");

    Command::new("kill").arg(up.id().to_string()).status().unwrap();
    assert!(up.wait().unwrap().success());
}

/// kcat against `weir up` with TLS on the Kafka listener: SASL_SSL with SCRAM and the ACL authorizer, then mutual TLS,
/// where the client certificate is the principal.
#[test]
fn kafka_clients_connect_over_sasl_ssl_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["certs", "dev"]);
    ok(d, &["topics", "create", "orders"]);
    assert!(add_user(d, &["users", "add", "alice"], "alice-pw-k1\n").status.success());
    let ca = d.join("certs/ca.pem").display().to_string();
    let kcat = |kafka: &str, args: &[&str]| {
        // The system's librdkafka, with OpenSSL: cargo puts the build's copy (built for the rdkafka crate, without
        // it) on LD_LIBRARY_PATH.
        let out = Command::new("kcat")
            .env_remove("LD_LIBRARY_PATH")
            .args(["-b", kafka, "-m", "5", "-X", &format!("ssl.ca.location={ca}")])
            .args(args)
            .output()
            .expect("kcat is not installed: run scripts/test.sh, which installs it");
        let stderr = String::from_utf8_lossy(&out.stderr);
        (out.status.success(), format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)))
    };
    let start = |config: &str| {
        let path = d.join("weir.toml");
        std::fs::write(&path, config).unwrap();
        let args = ["--config", path.to_str().unwrap(), "up", "--systems", "none"];
        let args = [&args[..], &["--kafka-listen", "127.0.0.1:0", "--http-listen", "none"]].concat();
        support::start_up_command(weir(d, &args))
    };

    let (mut up, kafka, _, _stderr) = start(
        "[security]\nauthorizer = \"acl\"\n[security.tls]\ncert = \"certs/server.pem\"\nkey = \"certs/server-key.pem\"\n",
    );
    let scram = |password: &str| -> Vec<String> {
        let args = ["-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X"];
        let args =
            [&args[..], &["sasl.username=alice", "-X", &format!("sasl.password={password}"), "-L", "-t", "orders"]];
        args.concat().into_iter().map(String::from).collect()
    };
    let (connected, listing) = kcat(&kafka, &as_strs(&scram("alice-pw-k1")));
    assert!(connected && listing.contains("Topic authorization failed"), "authenticated, no ACL yet: {listing}");
    ok(d, &["acls", "add", "--allow", "User:alice", "--operation", "describe", "--topic", "orders"]);
    let listing = eventually("allowed", || {
        let (_, listing) = kcat(&kafka, &as_strs(&scram("alice-pw-k1")));
        if listing.contains("with 1 partitions") {
            "allowed".into()
        } else {
            listing
        }
    });
    assert_eq!(listing, "allowed");
    assert!(!kcat(&kafka, &as_strs(&scram("wrong"))).0, "a wrong password");
    assert!(!kcat(&kafka, &["-L"]).0, "plaintext is not served on the TLS listener");
    Command::new("kill").arg(up.id().to_string()).status().unwrap();
    assert!(up.wait().unwrap().success());

    // Mutual TLS: the certificate authenticates (User:CN=client,O=weir); without one there is no connection.
    let (mut up, kafka, _, _stderr) = start(
        "[security]\nauthorizer = \"acl\"\nsuper_users = [\"User:CN=client,O=weir\"]\n\
         [security.tls]\ncert = \"certs/server.pem\"\nkey = \"certs/server-key.pem\"\nclient_ca = \"certs/ca.pem\"\n",
    );
    let cert = format!("ssl.certificate.location={}", d.join("certs/client.pem").display());
    let key = format!("ssl.key.location={}", d.join("certs/client-key.pem").display());
    let (connected, listing) =
        kcat(&kafka, &["-X", "security.protocol=SSL", "-X", &cert, "-X", &key, "-L", "-t", "orders"]);
    assert!(connected && listing.contains("with 1 partitions"), "a super user by its certificate: {listing}");
    assert!(!kcat(&kafka, &["-X", "security.protocol=SSL", "-L"]).0, "no client certificate");
    Command::new("kill").arg(up.id().to_string()).status().unwrap();
    assert!(up.wait().unwrap().success());
}
