//! Per-service credentials and ACLs (`access.rs`): two services of one system provisioned on an embedded bus with
//! weir-security's stores, each held to its grants (nothing of a refused call written), though no listener-wide
//! authorizer is configured.

use std::sync::Arc;
use std::time::Duration;

use weir_broker::testing::{read_committed, scratch_broker};
use weir_broker::Broker;
use weir_runtime::access::{Operation, Resource};
use weir_runtime::{
    Access, AccessError, Bus, BusError, EmbeddedBus, Grant, OutgoingMessage, SecuredAccess, ServiceAccount,
    SubscribeOptions,
};
use weir_security::{Acl, AclFilter, PatternType, Permission, ResourceType, Security, SecuritySettings};

fn secretary() -> ServiceAccount {
    ServiceAccount::new("secretary", "secretary-pw")
        .grant(Grant::literal(Operation::Write, Resource::Topic, "appointments"))
        .grant(Grant::literal(Operation::Read, Resource::Topic, "tickets"))
        .grant(Grant::literal(Operation::Read, Resource::Group, "secretary"))
        .grant(Grant::prefixed(Operation::Write, Resource::TransactionalId, "secretary-"))
}

fn cash_desk() -> ServiceAccount {
    ServiceAccount::new("cash-desk", "cash-desk-pw")
        .grant(Grant::literal(Operation::Write, Resource::Topic, "payments"))
        .grant(Grant::literal(Operation::Read, Resource::Topic, "appointments"))
        .grant(Grant::literal(Operation::Read, Resource::Group, "cash-desk"))
}

struct Fixture {
    _dir: tempfile::TempDir,
    broker: Arc<Broker>,
    security: Arc<Security>,
    access: SecuredAccess,
}

/// An embedded bus with the three topics, the two accounts provisioned, and no authorizer on the listeners.
async fn fixture(settings: SecuritySettings) -> Fixture {
    let (dir, broker) = scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    for t in ["appointments", "tickets", "payments"] {
        bus.ensure_topic(t, 1).await.unwrap();
    }
    let security = Security::in_memory(settings).unwrap();
    assert!(!security.authorizing(), "services are held to their ACLs without a listener-wide authorizer");
    let access = SecuredAccess::new(security.clone(), bus);
    access.provision(&secretary()).await.unwrap();
    access.provision(&cash_desk()).await.unwrap();
    Fixture { _dir: dir, broker, security, access }
}

/// The end offset of partition 0: how many records were ever written there, committed or not.
fn written(broker: &Broker, topic: &str) -> i64 {
    broker.offsets(topic, 0).unwrap().1
}

fn refused<T>(result: Result<T, BusError>, what: &str) -> String {
    match result {
        Err(BusError::NotAuthorized(m)) => m,
        Err(e) => panic!("{what}: expected NotAuthorized, got {e}"),
        Ok(_) => panic!("{what}: expected NotAuthorized, it was allowed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_need_the_right_password() {
    let f = fixture(SecuritySettings::default()).await;
    assert!(
        matches!(f.access.login("secretary", "wrong-pw").await, Err(AccessError::Authentication(u)) if u == "secretary")
    );
    assert!(matches!(f.access.login("nobody", "secretary-pw").await, Err(AccessError::Authentication(_))));
    assert!(f.access.login("secretary", "secretary-pw").await.is_ok());

    // Provisioning again with another password changes it; the old one no longer logs in.
    f.access.provision(&ServiceAccount { password: "secretary-pw-2".into(), ..secretary() }).await.unwrap();
    assert!(matches!(f.access.login("secretary", "secretary-pw").await, Err(AccessError::Authentication(_))));
    assert!(f.access.login("secretary", "secretary-pw-2").await.is_ok());

    // A grant Kafka's model has not (READ on a transactional id) is refused, and nothing of that account is created.
    let bad =
        ServiceAccount::new("bad", "bad-pw").grant(Grant::literal(Operation::Read, Resource::TransactionalId, "x"));
    assert!(matches!(f.access.provision(&bad).await, Err(AccessError::Refused(_))));
    assert!(matches!(f.access.login("bad", "bad-pw").await, Err(AccessError::Authentication(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_produces_only_where_it_may() {
    let f = fixture(SecuritySettings::default()).await;
    let bus = f.access.login("secretary", "secretary-pw").await.unwrap();

    bus.produce(OutgoingMessage::new("appointments", "a1")).await.unwrap();
    assert_eq!(written(&f.broker, "appointments"), 1);

    let m = refused(bus.produce(OutgoingMessage::new("payments", "p1")).await, "produce to payments");
    assert!(
        m.contains("User:secretary")
            && m.contains("WRITE")
            && m.contains("payments")
            && m.contains("TOPIC_AUTHORIZATION_FAILED"),
        "{m}"
    );
    // A batch with one refused message writes none of them, the allowed ones included.
    let batch = vec![OutgoingMessage::new("appointments", "a2"), OutgoingMessage::new("payments", "p2")];
    refused(bus.produce_all(batch).await, "produce_all with payments");
    assert_eq!(written(&f.broker, "payments"), 0);
    assert_eq!(written(&f.broker, "appointments"), 1);
    assert!(read_committed(&f.broker, "payments").await.is_empty());

    // Creating topics needs CREATE.
    refused(bus.ensure_topic("appointments-2", 1).await, "ensure_topic");
    refused(bus.ensure_kept_topic("_secretary_state").await, "ensure_kept_topic");
    assert!(f.broker.topic("appointments-2").is_err());

    // The other service is held to its own grants.
    let cash = f.access.login("cash-desk", "cash-desk-pw").await.unwrap();
    cash.produce(OutgoingMessage::new("payments", "p3")).await.unwrap();
    refused(cash.produce(OutgoingMessage::new("appointments", "a3")).await, "cash desk to appointments");
    assert_eq!(written(&f.broker, "payments"), 1);

    // An operator's DENY wins over the service's grant, as in Kafka.
    f.security
        .acls
        .add(&[Acl {
            resource_type: ResourceType::Topic,
            pattern_type: PatternType::Literal,
            name: "appointments".into(),
            principal: "User:secretary".into(),
            host: "*".into(),
            operation: weir_security::Operation::Write,
            permission: Permission::Deny,
        }])
        .unwrap();
    refused(bus.produce(OutgoingMessage::new("appointments", "a4")).await, "denied appointments");
    assert_eq!(written(&f.broker, "appointments"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_consumes_only_its_topics_in_its_group() {
    let f = fixture(SecuritySettings::default()).await;
    let platform: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(f.broker.clone()));
    platform.produce(OutgoingMessage::new("tickets", "t1")).await.unwrap();
    platform.produce(OutgoingMessage::new("payments", "p1")).await.unwrap();
    let bus = f.access.login("secretary", "secretary-pw").await.unwrap();

    let m = refused(bus.subscribe(SubscribeOptions::new("secretary", ["payments"])).await, "subscribe to payments");
    assert!(m.contains("READ") && m.contains("payments"), "{m}");
    let m = refused(bus.subscribe(SubscribeOptions::new("cash-desk", ["tickets"])).await, "the cash desk's group");
    assert!(m.contains("GROUP_AUTHORIZATION_FAILED") && m.contains("cash-desk"), "{m}");
    refused(bus.read(&["payments".to_string()], weir_runtime::StartFrom::Earliest).await, "read payments");
    // Neither refused subscription joined the group.
    assert!(f.broker.describe_group("cash-desk").map(|g| g.members.is_empty()).unwrap_or(true));

    let mut sub = bus.subscribe(SubscribeOptions::new("secretary", ["tickets"])).await.unwrap();
    let batch = sub.next_batch(Duration::from_secs(5)).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].value.as_deref(), Some(&b"t1"[..]));
    // Offsets of a topic it may not read are not committed; its own are.
    refused(sub.commit_offsets(&[("payments".to_string(), 0, 1)]).await, "commit payments' offset");
    sub.commit_offsets(&[("tickets".to_string(), 0, 1)]).await.unwrap();
    sub.close().await.unwrap();

    let mut reader = bus.read(&["tickets".to_string()], weir_runtime::StartFrom::Earliest).await.unwrap();
    assert_eq!(reader.next_batch(Duration::from_secs(5)).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_leaves_nothing_visible() {
    let f = fixture(SecuritySettings::default()).await;
    let platform: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(f.broker.clone()));
    platform.produce(OutgoingMessage::new("tickets", "t1")).await.unwrap();
    let bus = f.access.login("secretary", "secretary-pw").await.unwrap();
    let options = |id: &str| SubscribeOptions {
        transactional_id: Some(id.to_string()),
        read_committed: true,
        ..SubscribeOptions::new("secretary", ["tickets"])
    };

    let mut sub = bus.subscribe(options("secretary-1")).await.unwrap();
    assert_eq!(sub.next_batch(Duration::from_secs(5)).await.unwrap().len(), 1);
    let offsets = [("tickets".to_string(), 0, 1)];
    let messages = vec![OutgoingMessage::new("appointments", "a1"), OutgoingMessage::new("payments", "p1")];
    let m = refused(sub.commit_transaction(messages, &offsets).await, "a transaction writing payments");
    assert!(m.contains("payments"), "{m}");
    assert_eq!(written(&f.broker, "payments"), 0);
    assert_eq!(written(&f.broker, "appointments"), 0, "the allowed message of the transaction was not written either");
    assert!(read_committed(&f.broker, "appointments").await.is_empty());
    sub.close().await.unwrap();

    // Nor were the offsets committed: the group gets the ticket again. A transactional id outside its prefix is
    // refused too.
    let mut sub = bus.subscribe(options("other-1")).await.unwrap();
    assert_eq!(
        sub.next_batch(Duration::from_secs(5)).await.unwrap().len(),
        1,
        "the refused offsets were not committed"
    );
    let m = refused(
        sub.commit_transaction(vec![OutgoingMessage::new("appointments", "a1")], &offsets).await,
        "another transactional id",
    );
    assert!(m.contains("TRANSACTIONAL_ID_AUTHORIZATION_FAILED") && m.contains("other-1"), "{m}");
    sub.close().await.unwrap();

    // What it may do commits, messages and offsets together.
    let mut sub = bus.subscribe(options("secretary-1")).await.unwrap();
    assert_eq!(sub.next_batch(Duration::from_secs(5)).await.unwrap().len(), 1);
    sub.commit_transaction(vec![OutgoingMessage::new("appointments", "a1")], &offsets).await.unwrap();
    sub.close().await.unwrap();
    let visible = read_committed(&f.broker, "appointments").await;
    assert_eq!(visible.len(), 1);
    assert_eq!(visible[0].value.as_deref(), Some(&b"a1"[..]));
    let mut sub = bus.subscribe(options("secretary-2")).await.unwrap();
    assert!(sub.next_batch(Duration::from_millis(500)).await.unwrap().is_empty(), "the offsets were committed");
    sub.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_twice_adds_nothing() {
    let f = fixture(SecuritySettings::default()).await;
    let of =
        |user: &str| f.security.acls.list(&AclFilter { principal: Some(format!("User:{user}")), ..AclFilter::any() });
    let before = of("secretary");
    assert_eq!(before.len(), secretary().grants.len());
    assert!(before.iter().all(|a| a.permission == Permission::Allow && a.host == "*"));
    assert!(before.iter().any(|a| a.resource_type == ResourceType::TransactionalId
        && a.pattern_type == PatternType::Prefixed
        && a.name == "secretary-"));
    f.access.provision(&secretary()).await.unwrap();
    f.access.provision(&secretary()).await.unwrap();
    assert_eq!(of("secretary"), before);
    assert_eq!(of("cash-desk").len(), cash_desk().grants.len());
    assert_eq!(f.security.users.list().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_super_user_is_let_through() {
    let settings = SecuritySettings { super_users: vec!["User:admin".into()], ..SecuritySettings::default() };
    let f = fixture(settings).await;
    f.access.provision(&ServiceAccount::new("admin", "admin-pw")).await.unwrap();
    let admin = f.access.login("admin", "admin-pw").await.unwrap();
    admin.produce(OutgoingMessage::new("payments", "p1")).await.unwrap();
    admin.ensure_topic("audit", 1).await.unwrap();
    let mut sub = admin.subscribe(SubscribeOptions::new("cash-desk", ["payments"])).await.unwrap();
    assert_eq!(sub.next_batch(Duration::from_secs(5)).await.unwrap().len(), 1);
    sub.close().await.unwrap();
    assert_eq!(written(&f.broker, "payments"), 1);
    assert!(f.broker.topic("audit").is_ok());

    // Being a super user is the principal's, not everyone's.
    let secretary = f.access.login("secretary", "secretary-pw").await.unwrap();
    refused(secretary.produce(OutgoingMessage::new("payments", "p2")).await, "the secretary to payments");
}
