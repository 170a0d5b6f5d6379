//! The HTTP listener over TLS, driven with curl as an operator would: the dev certificates (`weir certs dev`), a
//! plaintext client on the TLS port refused and logged while the server keeps serving, mutual TLS where the client
//! certificate is the principal the ACLs name, Basic credentials over TLS, and ACL hosts matched against the
//! client's address. One test per process state: the log capture is process-wide.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_broker::testing::scratch_broker;
use weir_http::{HttpConfig, HttpServer};
use weir_security::tls::{dev_certs, dev_certs_valid, server_config, DevCerts, TlsSettings};
use weir_security::{
    Acl, AuthorizerKind, Operation, PatternType, Permission, ResourceType, Security, SecuritySettings,
};

#[path = "../../../testing/net.rs"]
mod net;

use net::CapturedLogs;

/// curl's exit code, the HTTP status it got (0 if none) and the body.
struct Curl {
    exit: i32,
    status: u16,
    body: String,
    stderr: String,
}

async fn curl(args: &[&str]) -> Curl {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"]).args(args);
    let out = tokio::task::spawn_blocking(move || command.output().expect("curl is installed")).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn acl(principal: &str, host: &str, resource_type: ResourceType, name: &str, operation: Operation) -> Acl {
    Acl {
        resource_type,
        pattern_type: PatternType::Literal,
        name: name.into(),
        principal: principal.into(),
        host: host.into(),
        operation,
        permission: Permission::Allow,
    }
}

async fn start(certs: &DevCerts, client_ca: bool, security: Arc<Security>) -> (tempfile::TempDir, HttpServer) {
    let (dir, broker) = scratch_broker();
    let settings = TlsSettings {
        cert: certs.server_cert.clone(),
        key: certs.server_key.clone(),
        client_ca: client_ca.then(|| certs.ca_cert.clone()),
    };
    let mut config = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    config.tls = Some(server_config(&settings).unwrap());
    config.security = security;
    config.header_read_timeout = Duration::from_secs(2);
    broker.create_topic("orders", 1, Default::default()).unwrap();
    let server = HttpServer::start(broker, config).await.unwrap();
    (dir, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_with_curl() {
    let log = CapturedLogs::install();
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &["localhost".into(), "127.0.0.1".into()], "alice").unwrap();
    let security_dir = tempfile::tempdir().unwrap();
    let settings =
        SecuritySettings { authorizer: AuthorizerKind::Acl, require_authentication: true, ..Default::default() };
    let security = Security::open(security_dir.path(), settings).unwrap();
    security.users.set_password("producer", "producer-pw", 4096).unwrap();
    let cert_user = "User:CN=alice,O=weir";
    security
        .acls
        .add(&[
            // Only from the loopback address the test connects from.
            acl(cert_user, "127.0.0.1", ResourceType::Topic, "orders", Operation::Describe),
            acl(cert_user, "*", ResourceType::Group, "g", Operation::Read),
            acl("User:producer", "*", ResourceType::Topic, "orders", Operation::Write),
            // From an address the test never connects from: never matches.
            acl("User:producer", "10.9.9.9", ResourceType::Topic, "elsewhere", Operation::Describe),
        ])
        .unwrap();
    let ca = path(&certs.ca_cert);

    // Server authentication only.
    let (_data, server) = start(&certs, false, security.clone()).await;
    let https = format!("https://127.0.0.1:{}", server.local_addr.port());
    let r = curl(&["--cacert", ca, &format!("{https}/health")]).await;
    assert_eq!((r.exit, r.status), (0, 200), "{} {}", r.body, r.stderr);
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["status"], "ok");

    // Plaintext to the TLS port: no answer, one warning naming the peer and rustls's reason, and the server serves on.
    let r = curl(&[&format!("http://127.0.0.1:{}/health", server.local_addr.port())]).await;
    assert!(r.exit != 0 || r.status != 200, "plaintext must not be served: {} {}", r.status, r.body);
    let r = curl(&["--cacert", ca, &format!("{https}/health")]).await;
    assert_eq!((r.exit, r.status), (0, 200), "{}", r.stderr);
    // A client that does not trust the server's certificate gives up; the server logs it and serves on.
    let r = curl(&[&format!("{https}/health")]).await;
    assert_ne!(r.exit, 0, "curl without the CA must refuse the dev certificate");

    // Basic credentials over TLS; ACLs with a host match the client's address, and only it.
    let records = r#"{"records":[{"value":"aGk="}]}"#;
    let produce = |who: &'static str| {
        let url = format!("{https}/topics/orders");
        async move {
            curl(&[
                "--cacert",
                ca,
                "-u",
                who,
                "-H",
                "content-type: application/vnd.kafka.binary.v2+json",
                "-d",
                records,
                &url,
            ])
            .await
        }
    };
    let r = produce("producer:producer-pw").await;
    assert_eq!((r.exit, r.status), (0, 200), "{} {}", r.body, r.stderr);
    let r = produce("producer:wrong").await;
    assert_eq!(r.status, 401, "{}", r.body);
    // 403, not 404: the ACL for 10.9.9.9 does not apply to 127.0.0.1, so the topic's absence is not told.
    let r = curl(&["--cacert", ca, "-u", "producer:producer-pw", &format!("{https}/topics/elsewhere")]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    server.stop().await;

    // Mutual TLS: the client certificate is the principal.
    let (_data, server) = start(&certs, true, security.clone()).await;
    let https = format!("https://127.0.0.1:{}", server.local_addr.port());
    let with_cert = ["--cacert", ca, "--cert", path(&certs.client_cert), "--key", path(&certs.client_key)];
    let r = curl(&[&with_cert[..], &[&format!("{https}/topics/orders")]].concat()).await;
    assert_eq!((r.exit, r.status), (0, 200), "{} {}", r.body, r.stderr);
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["name"], "orders");
    let r = curl(&[&with_cert[..], &[&format!("{https}/topics/other")]].concat()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("Not authorized to access topics: [other]"), "{}", r.body);
    // A consumer instance's address is https, as the client reached it.
    let create = ["-H", "content-type: application/vnd.kafka.v2+json", "-d", r#"{"name":"c"}"#];
    let r = curl(&[&with_cert[..], &create[..], &[&format!("{https}/consumers/g")]].concat()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let base_uri = serde_json::from_str::<Value>(&r.body).unwrap()["base_uri"].clone();
    assert_eq!(base_uri, format!("{https}/consumers/g/instances/c"));
    // Basic credentials over a client certificate: the header says who the request is from.
    let r = curl(&[&with_cert[..], &["-u", "producer:producer-pw", &format!("{https}/topics")]].concat()).await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"["orders"]"#));
    // Without a client certificate the handshake fails; the server logs it and serves the next client.
    let r = curl(&["--cacert", ca, &format!("{https}/health")]).await;
    assert!(r.exit != 0 && r.status == 0, "no certificate, no connection: {} {} {}", r.exit, r.status, r.stderr);
    let r = curl(&[&with_cert[..], &[&format!("{https}/health")]].concat()).await;
    assert_eq!((r.exit, r.status), (0, 200), "{}", r.stderr);
    server.stop().await;

    // Each failed handshake is one warning with the peer and the reason; a success is not logged.
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.count("TLS handshake failed") < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        log.count("TLS handshake failed"),
        3,
        "plaintext, untrusted server certificate, missing client certificate"
    );
    assert_eq!(log.count("TLS handshake failed; closing the connection peer=127.0.0.1:"), 3, "with the peer");
    assert!(log.count("InvalidContentType") + log.count("corrupt message") >= 1, "the plaintext client's reason");
    assert_eq!(log.count("peer sent no certificates"), 1, "the missing client certificate's reason");
    assert_eq!(log.count("producer-pw"), 0, "no password in the logs");

    // An expired client certificate from the listener's own CA fails the handshake, logged as expired. (That set's
    // server certificate has expired too, so curl is told not to check it.)
    let day = Duration::from_secs(24 * 60 * 60);
    let now = std::time::SystemTime::now();
    let expired =
        dev_certs_valid(&dir.path().join("expired"), &["127.0.0.1".into()], "late", now - 2 * day, now - day).unwrap();
    let (_stale_dir, stale) = start(&expired, true, Security::open_to_all()).await;
    let url = format!("https://127.0.0.1:{}/health", stale.local_addr.port());
    let r = curl(&["-k", "--cert", path(&expired.client_cert), "--key", path(&expired.client_key), &url]).await;
    assert!(
        r.exit != 0 && r.status == 0,
        "an expired certificate, no connection: {} {} {}",
        r.exit,
        r.status,
        r.stderr
    );
    stale.stop().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.count("TLS handshake failed") < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log.count("TLS handshake failed"), 4, "the expired certificate's handshake is logged");
    assert!(log.count("xpired") >= 1, "with the reason: the certificate expired");
}

/// The connection cap and the timeouts hold under TLS too: a client that connects and never starts its handshake
/// holds its place only until the header-read timeout; past the cap a TLS client is closed at once (it could not
/// read a plaintext 503); the graceful stop ends the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_are_capped_and_stalled_handshakes_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path(), &["127.0.0.1".into()], "bob").unwrap();
    let (_data, broker) = scratch_broker();
    let settings = TlsSettings { cert: certs.server_cert.clone(), key: certs.server_key.clone(), client_ca: None };
    let mut config = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    config.tls = Some(server_config(&settings).unwrap());
    config.max_connections = 1;
    config.header_read_timeout = Duration::from_secs(1);
    let server = HttpServer::start(broker, config).await.unwrap();
    let addr = server.local_addr;
    let ca = path(&certs.ca_cert);
    let url = format!("https://127.0.0.1:{}/health", addr.port());

    let mut stalled = std::net::TcpStream::connect(addr).unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    // The only place is taken: the next client is closed without an answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = curl(&["--cacert", ca, &url]).await;
    assert!(r.exit != 0 && r.status == 0, "past the cap: {} {} {}", r.exit, r.status, r.stderr);
    let closed = tokio::task::spawn_blocking(move || net::closed_by_server(&mut stalled)).await.unwrap();
    assert!(closed, "a handshake never started is closed");
    assert!(started.elapsed() < Duration::from_secs(3), "closed after {:?}", started.elapsed());
    // Its place is free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = curl(&["--cacert", ca, &url]).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed: {} {}", r.exit, r.stderr);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopping = Instant::now();
    server.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(2), "stopped after {:?}", stopping.elapsed());
    assert!(std::net::TcpStream::connect(addr).is_err(), "the listener is closed");
}
