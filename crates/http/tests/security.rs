//! Users and ACLs over the HTTP API, as REST Proxy clients meet them: 401 without (or with wrong) credentials, Basic
//! and bearer credentials, Kafka's operations for producing, consuming and describing, 403 naming what was refused,
//! the systems' routes under their own ACLs, and `/health` and `/metrics` open to monitoring. Driven through the
//! router (no sockets; the TLS tests are in tls.rs).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use weir_broker::testing::scratch_broker;
use weir_broker::Broker;
use weir_http::{guard_system, testing, HttpConfig, Principal};
use weir_security::{
    Acl, AuthorizerKind, Operation, PatternType, Permission, ResourceType, Security, SecuritySettings,
};

const BINARY: &str = "application/vnd.kafka.binary.v2+json";
const V2: &str = "application/vnd.kafka.v2+json";

/// How a request authenticates.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
    Raw(&'a str),
}

struct Api {
    router: Router,
    security: Arc<Security>,
    broker: Arc<Broker>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn acl(principal: &str, resource_type: ResourceType, name: &str, operation: Operation) -> Acl {
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

/// A system's routes: who is calling, as the systems' handlers see it.
fn demo_system() -> Router {
    let whoami = |principal: axum::Extension<Principal>| async move { principal.0 .0.clone() };
    guard_system("demo", Router::new().route("/demo/whoami", get(whoami).post(whoami)))
}

fn api(require_authentication: bool) -> Api {
    let (broker_dir, broker) = scratch_broker();
    let security_dir = tempfile::tempdir().unwrap();
    let settings = SecuritySettings {
        authorizer: AuthorizerKind::Acl,
        super_users: vec!["User:admin".into()],
        require_authentication,
        ..Default::default()
    };
    let security = Security::open(security_dir.path(), settings).unwrap();
    for user in ["admin", "producer", "consumer", "consumer2"] {
        security.users.set_password(user, &format!("{user}-pw"), 4096).unwrap();
    }
    security
        .acls
        .add(&[
            acl("User:producer", ResourceType::Topic, "orders", Operation::Write),
            acl("User:consumer", ResourceType::Topic, "orders", Operation::Read),
            acl("User:consumer", ResourceType::Group, "g", Operation::Read),
            acl("User:consumer2", ResourceType::Topic, "orders", Operation::Read),
            acl("User:consumer2", ResourceType::Group, "g", Operation::Read),
        ])
        .unwrap();
    let mut config = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    config.security = security.clone();
    let router = weir_http::router_with(broker.clone(), config, demo_system());
    Api { router, security, broker, _dirs: (broker_dir, security_dir) }
}

impl Api {
    async fn call_full(
        &self,
        who: As<'_>,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = testing::request(method.parse().unwrap(), uri);
        req = match who {
            As::Nobody => req,
            As::Basic(user, password) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                req.header(header::AUTHORIZATION, format!("Basic {encoded}"))
            }
            As::Bearer(token) => req.header(header::AUTHORIZATION, format!("Bearer {token}")),
            As::Raw(value) => req.header(header::AUTHORIZATION, value),
        };
        let content_type = if uri.starts_with("/consumers") { V2 } else { BINARY };
        let body = match body {
            Some(b) => Body::from(b.to_string()),
            None => Body::empty(),
        };
        if method == "POST" {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        let response = tower::ServiceExt::oneshot(self.router.clone(), req.body(body).unwrap()).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, value)
    }

    async fn call(&self, who: As<'_>, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let (status, _, value) = self.call_full(who, method, uri, body).await;
        (status, value)
    }
}

const PRODUCER: As<'static> = As::Basic("producer", "producer-pw");
const CONSUMER: As<'static> = As::Basic("consumer", "consumer-pw");
const CONSUMER2: As<'static> = As::Basic("consumer2", "consumer2-pw");
const ADMIN: As<'static> = As::Basic("admin", "admin-pw");

fn assert_unauthenticated(status: StatusCode, headers: &axum::http::HeaderMap, body: &Value) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(headers[header::WWW_AUTHENTICATE], r#"Basic realm="weir""#);
    assert_eq!(body["error_code"], 40101, "{body}");
}

fn assert_forbidden(status: StatusCode, body: &Value, message: &str) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error_code"], 40301, "{body}");
    assert_eq!(body["message"], message, "{body}");
}

#[tokio::test]
async fn credentials_are_required_except_for_health_and_metrics() {
    // Before any request: what is recorded before the recorder exists is lost.
    weir_http::install_metrics();
    let api = api(true);
    for uri in ["/topics", "/topics/orders", "/groups", "/openapi.json", "/no/such/route", "/demo/whoami"] {
        let (s, h, b) = api.call_full(As::Nobody, "GET", uri, None).await;
        assert_unauthenticated(s, &h, &b);
        assert!(b["message"].as_str().unwrap().contains("Authentication required"), "{b}");
    }
    let (s, h, b) =
        api.call_full(As::Nobody, "POST", "/topics/orders", Some(r#"{"records":[{"value":"aGk="}]}"#)).await;
    assert_unauthenticated(s, &h, &b);
    assert!(api.broker.topic("orders").is_err(), "nothing was created");

    // Wrong credentials: 401, never echoing what was sent.
    for who in [
        As::Basic("producer", "guessed-pw"),
        As::Basic("nobody", "producer-pw"),
        As::Bearer("weir_0000"),
        As::Raw("Basic not-base64!"),
        As::Raw("Digest username=\"producer\""),
    ] {
        let (s, h, b) = api.call_full(who, "GET", "/topics", None).await;
        assert_unauthenticated(s, &h, &b);
        let message = b["message"].as_str().unwrap();
        assert!(message.starts_with("Authentication failed"), "{b}");
        assert!(!message.contains("guessed") && !message.contains("pw") && !message.contains("weir_0"), "{b}");
    }

    // Monitoring needs no credentials, and stale ones do not break it.
    for uri in ["/health", "/metrics"] {
        let (s, b) = api.call(As::Nobody, "GET", uri, None).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {b}");
        let (s, b) = api.call(As::Basic("producer", "old-pw"), "GET", uri, None).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {b}");
    }
    // The failures are counted by reason, and no credential reaches the metrics.
    let (_, metrics) = api.call(As::Nobody, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("weir_http_authentication_failures_total{reason=\"wrong_password\"}"), "{metrics}");
    assert!(!metrics.contains("guessed-pw") && !metrics.contains("producer-pw"));

    let (s, b) = api.call(ADMIN, "GET", "/openapi.json", None).await;
    assert_eq!((s, b["openapi"].is_string()), (StatusCode::OK, true));
}

#[tokio::test]
async fn produce_and_consume_follow_the_acls() {
    let api = api(true);
    let records = r#"{"records":[{"value":"b25l"},{"value":"dHdv"}]}"#;
    // The producer writes; the topic is created by a super user first (the producer may not create topics).
    let (s, b) = api.call(ADMIN, "POST", "/topics/orders", Some(r#"{"records":[{"value":"emVybw=="}]}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api.call(ADMIN, "POST", "/topics/secret", Some(records)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api.call(PRODUCER, "POST", "/topics/orders", Some(records)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["offsets"][1]["offset"], 2);
    let (s, b) =
        api.call(PRODUCER, "POST", "/topics/orders/partitions/0", Some(r#"{"records":[{"value":"dGhyZWU="}]}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api.call(PRODUCER, "POST", "/topics/secret", Some(records)).await;
    assert_forbidden(s, &b, "Not authorized to access topics: [secret]");
    let (s, b) = api.call(PRODUCER, "POST", "/topics/new-topic", Some(records)).await;
    assert_forbidden(s, &b, "Not authorized to access topics: [new-topic]");
    assert!(api.broker.topic("new-topic").is_err(), "not created");
    // WRITE without CREATE on a topic that does not exist yet: the message says what is missing.
    api.security.acls.add(&[acl("User:producer", ResourceType::Topic, "fresh", Operation::Write)]).unwrap();
    let (s, b) = api.call(PRODUCER, "POST", "/topics/fresh", Some(records)).await;
    assert_forbidden(
        s,
        &b,
        "Not authorized to create topic fresh: it does not exist, and creating it needs CREATE on the cluster or the \
         topic",
    );
    assert!(api.broker.topic("fresh").is_err(), "not created");
    // Refused before the body is looked at: a malformed body to a forbidden topic is still 403.
    let (s, b) = api.call(PRODUCER, "POST", "/topics/secret", Some("{not json")).await;
    assert_forbidden(s, &b, "Not authorized to access topics: [secret]");

    // Metadata: each sees the topics it may describe (WRITE and READ imply DESCRIBE).
    for (who, topics) in [(PRODUCER, json!(["orders"])), (CONSUMER, json!(["orders"]))] {
        let (s, mut b) = api.call(who, "GET", "/topics", None).await;
        assert_eq!(s, StatusCode::OK);
        b.as_array_mut().unwrap().sort_by_key(|v| v.to_string());
        assert_eq!(b, topics);
    }
    let (s, b) = api.call(ADMIN, "GET", "/topics", None).await;
    assert_eq!((s, b.as_array().unwrap().len()), (StatusCode::OK, 2), "{b}");
    let (s, b) = api.call(CONSUMER, "GET", "/topics/orders", None).await;
    assert_eq!((s, &b["name"]), (StatusCode::OK, &json!("orders")), "{b}");
    for uri in ["/topics/secret", "/topics/secret/partitions", "/topics/secret/partitions/0", "/topics/missing"] {
        let (s, b) = api.call(CONSUMER, "GET", uri, None).await;
        let name = uri.split('/').nth(2).unwrap();
        assert_forbidden(s, &b, &format!("Not authorized to access topics: [{name}]"));
    }

    // The producer cannot consume: no READ on the group.
    let (s, b) = api.call(PRODUCER, "POST", "/consumers/g", Some(r#"{"name":"p"}"#)).await;
    assert_forbidden(s, &b, "Not authorized to access group: g");

    // The consumer reads what the producer wrote, and commits.
    let create = r#"{"name":"c1","format":"binary","auto.offset.reset":"earliest","auto.commit.enable":"false"}"#;
    let (s, b) = api.call(CONSUMER, "POST", "/consumers/g", Some(create)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api.call(CONSUMER, "POST", "/consumers/other-group", Some(r#"{"name":"x"}"#)).await;
    assert_forbidden(s, &b, "Not authorized to access group: other-group");
    let instance = "/consumers/g/instances/c1";
    let sub = format!("{instance}/subscription");
    let (s, b) = api.call(CONSUMER, "POST", &sub, Some(r#"{"topics":["orders","secret","missing"]}"#)).await;
    assert_forbidden(s, &b, "Not authorized to access topics: [missing, secret]");
    let (s, b) = api.call(CONSUMER, "POST", &sub, Some(r#"{"topics":["orders"]}"#)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let mut values = Vec::new();
    for _ in 0..20 {
        let (s, b) = api.call(CONSUMER, "GET", &format!("{instance}/records?timeout=500"), None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        values.extend(b.as_array().unwrap().iter().map(|r| r["value"].as_str().unwrap().to_string()));
        if values.len() == 4 {
            break;
        }
    }
    assert_eq!(values, ["emVybw==", "b25l", "dHdv", "dGhyZWU="]);
    let (s, b) = api.call(CONSUMER, "POST", &format!("{instance}/offsets"), Some("{}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b) = api
        .call(
            CONSUMER,
            "POST",
            &format!("{instance}/offsets"),
            Some(r#"{"offsets":[{"topic":"secret","partition":0,"offset":0}]}"#),
        )
        .await;
    assert_forbidden(s, &b, "Not authorized to access topics: [secret]");

    // Someone else's instance: the producer lacks READ on the group; another reader of the group does not see it.
    let (s, b) = api.call(PRODUCER, "GET", &format!("{instance}/records"), None).await;
    assert_forbidden(s, &b, "Not authorized to access group: g");
    for (method, uri) in
        [("GET", format!("{instance}/records")), ("GET", sub.clone()), ("DELETE", instance.to_string())]
    {
        let (s, b) = api.call(CONSUMER2, method, &uri, None).await;
        assert_eq!((s, &b["error_code"]), (StatusCode::NOT_FOUND, &json!(40403)), "{method} {uri}: {b}");
    }

    // The consumer cannot produce.
    let (s, b) = api.call(CONSUMER, "POST", "/topics/orders", Some(records)).await;
    assert_forbidden(s, &b, "Not authorized to access topics: [orders]");

    // Groups: listed and described with DESCRIBE (READ implies it); the committed offsets are there.
    let (s, b) = api.call(CONSUMER, "GET", "/groups", None).await;
    assert_eq!((s, b), (StatusCode::OK, json!(["g"])));
    let (s, b) = api.call(PRODUCER, "GET", "/groups", None).await;
    assert_eq!((s, b), (StatusCode::OK, json!([])));
    let (s, b) = api.call(CONSUMER, "GET", "/groups/g", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["offsets"][0]["committed_offset"], 4, "{b}");
    let (s, b) = api.call(PRODUCER, "GET", "/groups/g", None).await;
    assert_forbidden(s, &b, "Not authorized to access group: g");

    // Revoking READ on the topic stops the fetching at once.
    api.security
        .acls
        .add(&[Acl {
            permission: Permission::Deny,
            ..acl("User:consumer", ResourceType::Topic, "orders", Operation::Read)
        }])
        .unwrap();
    let (s, b) = api.call(CONSUMER, "GET", &format!("{instance}/records"), None).await;
    assert_forbidden(s, &b, "Not authorized to access topics: [orders]");
    let (s, b) = api.call(CONSUMER, "DELETE", instance, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
}

#[tokio::test]
async fn bearer_tokens_authenticate_and_acls_apply_to_them() {
    let api = api(true);
    let token = api.security.users.issue_token("robot").unwrap();
    let (s, b) = api.call(As::Bearer(&token), "GET", "/topics", None).await;
    assert_eq!((s, b), (StatusCode::OK, json!([])));
    let records = r#"{"records":[{"value":"aGk="}]}"#;
    let (s, b) = api.call(As::Bearer(&token), "POST", "/topics/orders", Some(records)).await;
    assert_forbidden(s, &b, "Not authorized to access topics: [orders]");
    api.security
        .acls
        .add(&[
            acl("User:robot", ResourceType::Topic, "orders", Operation::Write),
            acl("User:robot", ResourceType::Topic, "orders", Operation::Create),
        ])
        .unwrap();
    let (s, b) = api.call(As::Bearer(&token), "POST", "/topics/orders", Some(records)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(api.broker.topic("orders").is_ok(), "created with CREATE on the topic");
    let (s, b) = api.call(As::Raw(&format!("bearer  {token} ")), "GET", "/topics", None).await;
    assert_eq!((s, b), (StatusCode::OK, json!(["orders"])));
}

#[tokio::test]
async fn systems_routes_are_guarded_by_system_acls() {
    let api = api(true);
    let (s, b) = api.call(CONSUMER, "GET", "/demo/whoami", None).await;
    assert_forbidden(s, &b, "Not authorized to access system: demo");
    api.security.acls.add(&[acl("User:consumer", ResourceType::System, "demo", Operation::Read)]).unwrap();
    let (s, b) = api.call(CONSUMER, "GET", "/demo/whoami", None).await;
    assert_eq!((s, b), (StatusCode::OK, json!("User:consumer")));
    let (s, b) = api.call(CONSUMER, "POST", "/demo/whoami", Some("{}")).await;
    assert_forbidden(s, &b, "Not authorized to access system: demo");
    let (s, b) = api.call(ADMIN, "POST", "/demo/whoami", Some("{}")).await;
    assert_eq!((s, b), (StatusCode::OK, json!("User:admin")));
    api.security.acls.add(&[acl("User:producer", ResourceType::System, "demo", Operation::Write)]).unwrap();
    let (s, b) = api.call(PRODUCER, "POST", "/demo/whoami", Some("{}")).await;
    assert_eq!((s, b), (StatusCode::OK, json!("User:producer")));
    let (s, b) = api.call(PRODUCER, "GET", "/demo/whoami", None).await;
    assert_forbidden(s, &b, "Not authorized to access system: demo");
}

/// Authentication optional, the authorizer on: a client without credentials is `User:ANONYMOUS`, which the ACLs
/// decide for like anyone else; credentials sent are still checked.
#[tokio::test]
async fn without_required_authentication_anonymous_is_a_principal_like_any_other() {
    let api = api(false);
    let (s, b) = api.call(ADMIN, "POST", "/topics/orders", Some(r#"{"records":[{"value":"aGk="}]}"#)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api.call(As::Nobody, "GET", "/topics/orders", None).await;
    assert_forbidden(s, &b, "Not authorized to access topics: [orders]");
    let (s, h, b) = api.call_full(As::Basic("producer", "wrong"), "GET", "/topics/orders", None).await;
    assert_unauthenticated(s, &h, &b);
    api.security
        .acls
        .add(&[acl(weir_security::ANONYMOUS, ResourceType::Topic, "orders", Operation::Describe)])
        .unwrap();
    let (s, b) = api.call(As::Nobody, "GET", "/topics/orders", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api.call(As::Nobody, "GET", "/demo/whoami", None).await;
    assert_forbidden(s, &b, "Not authorized to access system: demo");
}

/// The defaults: no authentication, no authorizer, as before security existed.
#[tokio::test]
async fn by_default_everything_is_open() {
    let (_dir, broker) = scratch_broker();
    let router = weir_http::router_with(broker, HttpConfig::new("127.0.0.1:0".parse().unwrap()), demo_system());
    let (s, b) = testing::call(&router, "POST".parse().unwrap(), "/demo/whoami", Some(json!({}))).await;
    assert_eq!((s, b), (StatusCode::OK, json!(weir_security::ANONYMOUS)));
    let (s, b) =
        testing::call_raw(&router, "POST".parse().unwrap(), "/topics/t", BINARY, r#"{"records":[{"value":"aGk="}]}"#)
            .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}
