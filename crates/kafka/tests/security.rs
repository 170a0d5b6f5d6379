//! Security on the Kafka listener with real clients: SCRAM-SHA-256/512 and PLAIN with kcat; the ACL matrix, ACL
//! management and SCRAM credentials with confluent-kafka (`python/security_confluent.py`); TLS with kcat (SSL,
//! SASL_SSL, and client certificates as principals); and what the log says about a failed authentication (the
//! user and the reason, never the password).

use std::io::Write;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

use weir_broker::testing::broker_config;
use weir_kafka::{BackgroundBroker, ListenerConfig};
use weir_security::{
    Acl, AuthorizerKind, Operation, PatternType, Permission, ResourceType, Security, SecuritySettings,
};

fn kcat(args: &[&str]) -> Output {
    let mut c = Command::new("kcat");
    c.env_remove("LD_LIBRARY_PATH");
    c.args(args).output().expect("kcat is required (scripts/test.sh installs it)")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Everything logged by the process at debug level, for the no-secrets check.
fn captured_log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        log
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn secured(users: &[(&str, &str)], authorizer: bool) -> Arc<Security> {
    Security::in_memory(SecuritySettings {
        authorizer: if authorizer { AuthorizerKind::Acl } else { AuthorizerKind::None },
        super_users: vec!["User:admin".into()],
        require_authentication: true,
        config_users: users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect(),
    })
    .unwrap()
}

fn start(dir: &std::path::Path, security: Arc<Security>, tls: Option<Arc<rustls::ServerConfig>>) -> BackgroundBroker {
    let mut config = ListenerConfig::new("127.0.0.1:0".parse().unwrap());
    config.security = security;
    config.tls = tls;
    BackgroundBroker::start(broker_config(dir), config).unwrap()
}

fn acl(principal: &str, operation: Operation, resource_type: ResourceType, name: &str) -> Acl {
    Acl {
        resource_type,
        pattern_type: PatternType::Literal,
        name: name.into(),
        principal: principal.into(),
        host: "*".into(),
        operation,
        permission: Permission::Allow,
    }
}

#[test]
fn kcat_authenticates_with_scram_and_plain_and_a_wrong_password_fails_once_without_being_logged() {
    let log = captured_log();
    let dir = tempfile::tempdir().unwrap();
    let security = secured(&[("alice", "alice-pw")], false);
    security.users.set_password("bob", "bob-pw-2", 4096).unwrap();
    let w = start(dir.path(), security, None);
    let addr = w.addr.to_string();
    let sasl = |mechanism: &str, user: &str, password: &str| {
        kcat(&[
            "-b",
            &addr,
            "-L",
            "-m",
            "5",
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            &format!("sasl.mechanisms={mechanism}"),
            "-X",
            &format!("sasl.username={user}"),
            "-X",
            &format!("sasl.password={password}"),
        ])
    };
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
        for (user, password) in [("alice", "alice-pw"), ("bob", "bob-pw-2")] {
            let out = sasl(mechanism, user, password);
            assert!(out.status.success(), "{mechanism} {user}: {}", text(&out));
            assert!(text(&out).contains("1 brokers"), "{}", text(&out));
        }
        let out = sasl(mechanism, "alice", "hunter2-wrong");
        assert!(!out.status.success(), "{mechanism} with a wrong password succeeded");
        let t = text(&out);
        assert!(t.contains("Authentication failed") || t.contains("SASL authentication"), "{mechanism}: {t}");
    }
    let unknown = sasl("SCRAM-SHA-256", "mallory", "hunter2-wrong");
    assert!(!unknown.status.success());

    let logged = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    assert!(logged.contains("SASL/SCRAM-SHA-256 authentication failed"), "the failure is logged:\n{logged}");
    assert!(logged.contains("SASL/PLAIN authentication failed"), "{logged}");
    for secret in ["hunter2-wrong", "alice-pw", "bob-pw-2"] {
        assert!(!logged.contains(secret), "{secret} appears in the log:\n{logged}");
    }
}

#[test]
fn confluent_kafka_acl_matrix_acl_management_and_scram_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let security = secured(&[("admin", "admin-pw"), ("producer", "producer-pw"), ("consumer", "consumer-pw")], true);
    let w = start(dir.path(), security.clone(), None);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/security_confluent.py");
    let out = Command::new("python3").args([script, &w.addr.to_string()]).output().expect("python3 is required");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "security_confluent.py failed (is confluent-kafka installed? scripts/test.sh installs it)\nstdout:\n{stdout}\n\
         stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for scenario in [
        "create-describe-acls",
        "producer-only",
        "consumer-only",
        "acls-need-the-cluster",
        "scram-credentials",
        "delete-acls",
    ] {
        assert!(stdout.contains(&format!("ok {scenario}")), "{scenario} did not pass:\n{stdout}");
    }
    // What the clients did is what the broker holds: the producer's five and the admin's one, the consumer group's
    // commit, and dora's credential, salted by the client.
    assert_eq!(w.broker.offsets("orders", 0).unwrap().1, 6);
    assert!(w.broker.topic("other").is_err(), "the refused producer did not create `other`");
    let users = security.users.list();
    let dora = users.iter().find(|u| u.name == "dora").expect("dora was added");
    assert_eq!(dora.mechanisms, vec![(weir_security::Mechanism::Sha256, 8192)]);
    assert!(security.check_password("dora", "dora-pw").is_some());
}

#[test]
fn kcat_over_tls_ssl_sasl_ssl_and_client_certificates() {
    let log = captured_log();
    let dir = tempfile::tempdir().unwrap();
    let certs =
        weir_security::tls::dev_certs(&dir.path().join("certs"), &["localhost".into(), "127.0.0.1".into()], "kcat")
            .unwrap();
    let ca = certs.ca_cert.to_str().unwrap().to_string();

    // SSL, and SASL_SSL with SCRAM, on a listener without client certificates.
    let tls = weir_security::tls::server_config(&weir_security::tls::TlsSettings {
        cert: certs.server_cert.clone(),
        key: certs.server_key.clone(),
        client_ca: None,
    })
    .unwrap();
    let open = start(&dir.path().join("open"), Security::open_to_all(), Some(tls.clone()));
    let addr = open.addr.to_string();
    let out =
        kcat(&["-b", &addr, "-L", "-m", "5", "-X", "security.protocol=ssl", "-X", &format!("ssl.ca.location={ca}")]);
    assert!(out.status.success() && text(&out).contains("1 brokers"), "SSL: {}", text(&out));
    let plaintext = kcat(&["-b", &addr, "-L", "-m", "3"]);
    assert!(!plaintext.status.success(), "a plaintext client on the TLS port: {}", text(&plaintext));
    let out =
        kcat(&["-b", &addr, "-L", "-m", "5", "-X", "security.protocol=ssl", "-X", &format!("ssl.ca.location={ca}")]);
    assert!(out.status.success(), "the listener serves TLS after a plaintext client: {}", text(&out));
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    assert!(
        logged.contains("TLS handshake on the Kafka listener failed") && logged.contains("speaking plaintext"),
        "the failed handshake is logged with a hint: {logged}"
    );

    let sasl_ssl = start(&dir.path().join("sasl"), secured(&[("alice", "alice-pw")], false), Some(tls));
    let out = kcat(&[
        "-b",
        &sasl_ssl.addr.to_string(),
        "-L",
        "-m",
        "5",
        "-X",
        "security.protocol=sasl_ssl",
        "-X",
        &format!("ssl.ca.location={ca}"),
        "-X",
        "sasl.mechanisms=SCRAM-SHA-512",
        "-X",
        "sasl.username=alice",
        "-X",
        "sasl.password=alice-pw",
    ]);
    assert!(out.status.success(), "SASL_SSL: {}", text(&out));

    // Client certificates required: the certificate's subject is the principal the ACLs name.
    let mtls = weir_security::tls::server_config(&weir_security::tls::TlsSettings {
        cert: certs.server_cert.clone(),
        key: certs.server_key.clone(),
        client_ca: Some(certs.ca_cert.clone()),
    })
    .unwrap();
    let security = secured(&[], true);
    let principal = "User:CN=kcat,O=weir";
    security.acls.add(&[acl(principal, Operation::Write, ResourceType::Topic, "certified")]).unwrap();
    security.acls.add(&[acl(principal, Operation::Create, ResourceType::Cluster, weir_security::CLUSTER)]).unwrap();
    let w = start(&dir.path().join("mtls"), security, Some(mtls));
    let addr = w.addr.to_string();
    let with_cert = |topic: &str| {
        let mut c = Command::new("kcat");
        c.env_remove("LD_LIBRARY_PATH");
        c.args(["-b", &addr, "-P", "-t", topic, "-X", "security.protocol=ssl"]);
        c.args(["-X", &format!("ssl.ca.location={ca}")]);
        c.args(["-X", &format!("ssl.certificate.location={}", certs.client_cert.display())]);
        c.args(["-X", &format!("ssl.key.location={}", certs.client_key.display())]);
        c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"one\ntwo\n").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = with_cert("certified");
    assert!(out.status.success(), "mTLS produce: {}", text(&out));
    assert_eq!(w.broker.offsets("certified", 0).unwrap().1, 2, "both records arrived");
    let out = with_cert("uncertified");
    assert!(
        text(&out).contains("Authorization failed") || text(&out).contains("authorization failed"),
        "a topic the certificate's principal may not write: {}",
        text(&out)
    );
    assert!(w.broker.topic("uncertified").map(|_| w.broker.offsets("uncertified", 0).unwrap().1 == 0).unwrap_or(true));
    let no_cert =
        kcat(&["-b", &addr, "-L", "-m", "3", "-X", "security.protocol=ssl", "-X", &format!("ssl.ca.location={ca}")]);
    assert!(!no_cert.status.success(), "no client certificate: {}", text(&no_cert));

    // A client certificate from another CA: the handshake fails and the log says why.
    let stranger =
        weir_security::tls::dev_certs(&dir.path().join("stranger"), &["localhost".into()], "stranger").unwrap();
    let wrong = kcat(&[
        "-b",
        &addr,
        "-L",
        "-m",
        "3",
        "-X",
        "security.protocol=ssl",
        "-X",
        &format!("ssl.ca.location={ca}"),
        "-X",
        &format!("ssl.certificate.location={}", stranger.client_cert.display()),
        "-X",
        &format!("ssl.key.location={}", stranger.client_key.display()),
    ]);
    assert!(!wrong.status.success(), "a certificate from another CA: {}", text(&wrong));
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    assert!(
        logged.lines().any(|l| l.contains("TLS handshake on the Kafka listener failed") && l.contains("invalid peer certificate")),
        "the refused certificate is logged: {logged}"
    );

    // An expired client certificate from the listener's own CA: refused, and the log says it expired. (The
    // server's certificate of that set has expired too, so kcat is told not to check it.)
    let day = std::time::Duration::from_secs(24 * 60 * 60);
    let now = std::time::SystemTime::now();
    let expired = weir_security::tls::dev_certs_valid(
        &dir.path().join("expired"),
        &["localhost".into()],
        "late",
        now - 2 * day,
        now - day,
    )
    .unwrap();
    let stale = weir_security::tls::server_config(&weir_security::tls::TlsSettings {
        cert: expired.server_cert.clone(),
        key: expired.server_key.clone(),
        client_ca: Some(expired.ca_cert.clone()),
    })
    .unwrap();
    let w = start(&dir.path().join("stale"), secured(&[], false), Some(stale));
    let out = kcat(&[
        "-b",
        &w.addr.to_string(),
        "-L",
        "-m",
        "3",
        "-X",
        "security.protocol=ssl",
        "-X",
        "enable.ssl.certificate.verification=false",
        "-X",
        &format!("ssl.certificate.location={}", expired.client_cert.display()),
        "-X",
        &format!("ssl.key.location={}", expired.client_key.display()),
    ]);
    assert!(!out.status.success(), "an expired client certificate: {}", text(&out));
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    assert!(
        logged.lines().any(|l| l.contains("TLS handshake on the Kafka listener failed")
            && l.contains("invalid peer certificate")
            && l.to_lowercase().contains("expired")),
        "the expired certificate is logged as such: {logged}"
    );
}
