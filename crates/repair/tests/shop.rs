//! The repair shop end to end, on the embedded broker with weir's schema registry, on SQLite and PostgreSQL: tickets
//! opened through the API reach closed through the three services; each effect applied once (checked in SQL and in
//! what read_committed consumers see); an event published again changes nothing; `tickets` carries two record
//! types told apart by schema id; the till registers payments of repairs that end later, through the outbox; bad
//! requests get 400 naming the field.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Row;
use weir_http::testing::call;
use weir_repair::crypto::FieldKey;
use weir_repair::events::{AvroEvent, TicketClosed, TicketOpened, APPOINTMENTS, PAYMENTS, TICKETS};
use weir_repair::RepairSystem;
use weir_runtime::events::{Events, SchemaRegistry};
use weir_runtime::kv::SqlKv;
use weir_runtime::{Bus, EmbeddedBus, Host, OutgoingMessage, SqlStore, StartFrom, SystemSettings};
use weir_schema::{SchemaService, Serializers, ServiceConfig};

struct Shop {
    _dir: tempfile::TempDir,
    bus: Arc<dyn Bus>,
    store: SqlStore,
    registry: Arc<Serializers>,
    service: Arc<SchemaService>,
    host: Option<Host>,
    routes: axum::Router,
}

async fn shop(database: Option<String>, flags: &[(&str, &str)]) -> Shop {
    shop_with(database, flags, None, None).await
}

async fn shop_with(
    database: Option<String>,
    flags: &[(&str, &str)],
    security: Option<Arc<weir_security::Security>>,
    file: Option<serde_json::Map<String, Value>>,
) -> Shop {
    let (dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker));
    let url = database.unwrap_or_else(|| SqlStore::sqlite_url(dir.path()));
    let store = SqlStore::connect(&url).await.unwrap();
    let service = SchemaService::start(bus.clone(), ServiceConfig::default()).await.unwrap();
    let registry = Arc::new(Serializers::new(service.clone()));
    let mut host = Host::new(bus.clone(), store.clone(), Arc::new(SqlKv::new(store.clone())))
        .with_schemas(registry.clone() as Arc<dyn SchemaRegistry>);
    if let Some(security) = security {
        host = host.with_access(Arc::new(weir_runtime::SecuredAccess::new(security, bus.clone())));
    }
    let flags: Vec<(String, String)> = flags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let settings = SystemSettings::layered("repair", &[], file, Vec::new(), &flags);
    let routes = host.start(&RepairSystem, settings).await.unwrap();
    Shop { _dir: dir, bus, store, registry, service, host: Some(host), routes }
}

fn ticket(i: usize, repair_type: &str) -> Value {
    json!({"requester": {"email": format!("driver{i}@example.com"), "name": "Ada", "middlename": null,
           "surname": "Lovelace", "age": 30 + (i % 40)}, "repair_type": repair_type})
}

async fn wait_closed(shop: &Shop, n: i64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    // Polled as `weir repair simulate` polls: the counts alone; then the whole stats once.
    let (status, body) = call(&shop.routes, Method::GET, "/api/repair/stats?only=everything", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("only"), "{body}");
    loop {
        let (status, counts) = call(&shop.routes, Method::GET, "/api/repair/stats?only=tickets", None).await;
        assert_eq!(status, StatusCode::OK, "{counts}");
        assert!(counts.get("close_ms").is_none() && counts.get("duplicates").is_none(), "{counts}");
        if counts["tickets"]["closed"].as_i64() == Some(n) {
            let (status, stats) = call(&shop.routes, Method::GET, "/api/repair/stats", None).await;
            assert_eq!(status, StatusCode::OK, "{stats}");
            assert_eq!(stats["tickets"], counts["tickets"], "{stats}");
            // What the simulate polls: tickets closed since a moment, whenever opened (here all of them).
            let (status, closed) = call(&shop.routes, Method::GET, "/api/repair/stats?only=closed", None).await;
            assert_eq!(status, StatusCode::OK, "{closed}");
            assert_eq!(closed, json!({"closed_since": n}));
            let later = weir_runtime::time::now_ms() + 60_000;
            let uri = format!("/api/repair/stats?only=closed&since_ms={later}");
            let (_, none) = call(&shop.routes, Method::GET, &uri, None).await;
            assert_eq!(none, json!({"closed_since": 0}));
            return stats;
        }
        assert!(Instant::now() < deadline, "not every ticket closed in {within:?}: {counts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(store: &SqlStore, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(store.pool()).await.unwrap().try_get(0).unwrap()
}

async fn read_all(bus: &dyn Bus, topic: &str) -> Vec<weir_runtime::Message> {
    let mut sub = bus.read(&[topic.to_string()], StartFrom::Earliest).await.unwrap();
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 3 {
        let batch = sub.next_batch(Duration::from_millis(100)).await.unwrap();
        idle = if batch.is_empty() { idle + 1 } else { 0 };
        out.extend(batch);
    }
    out
}

/// Each ticket's effects, once: one appointment, one payment at its repair type's price, one closing on that payment;
/// no bay holds two jobs at once.
async fn assert_once_each(store: &SqlStore, n: i64) {
    assert_eq!(count(store, "SELECT COUNT(*) FROM repair_tickets").await, n);
    assert_eq!(count(store, "SELECT COUNT(*) FROM repair_appointments").await, n);
    assert_eq!(count(store, "SELECT COUNT(*) FROM repair_payments").await, n);
    assert_eq!(count(store, "SELECT COUNT(*) FROM repair_closures").await, n);
    assert_eq!(
        count(store, "SELECT COUNT(*) FROM repair_closures c JOIN repair_payments p ON p.ticket_id = c.ticket_id AND p.payment_id = c.payment_id").await,
        n
    );
    assert_eq!(
        count(
            store,
            "SELECT COUNT(*) FROM repair_payments p JOIN repair_tickets t ON t.ticket_id = p.ticket_id WHERE \
             (t.repair_type = 'windshield' AND p.amount = '189.90') OR (t.repair_type = 'bumper' AND p.amount = '349.00') \
             OR (t.repair_type = 'body' AND p.amount = '1250.50')"
        )
        .await,
        n,
        "every payment at its repair type's price"
    );
    assert_eq!(
        count(
            store,
            "SELECT COUNT(*) FROM repair_appointments a JOIN repair_appointments b ON a.bay = b.bay \
             AND a.ticket_id < b.ticket_id AND a.scheduled_at < b.ends_at AND b.scheduled_at < a.ends_at"
        )
        .await,
        0,
        "two jobs overlap in one bay"
    );
}

async fn whole_flow(database: Option<String>, transactions: &str) {
    let key = FieldKey::generate();
    let flags = [("clock_speed", "max"), ("encryption_key", &key), ("workers", "2"), ("transactions", transactions)];
    let mut shop = shop(database, &flags).await;
    let n = 300usize;
    // One ticket alone, the rest in lists.
    let (status, one) = call(&shop.routes, Method::POST, "/api/repair/tickets", Some(ticket(0, "body"))).await;
    assert_eq!(status, StatusCode::CREATED, "{one}");
    assert_eq!(one["status"], "opened");
    for chunk in (1..n).collect::<Vec<_>>().chunks(100) {
        let list: Vec<Value> = chunk.iter().map(|&i| ticket(i, ["windshield", "bumper", "body"][i % 3])).collect();
        let (status, body) = call(&shop.routes, Method::POST, "/api/repair/tickets", Some(Value::Array(list))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["tickets"].as_array().unwrap().len(), chunk.len());
    }
    let stats = wait_closed(&shop, n as i64, Duration::from_secs(120)).await;
    assert_eq!(stats["duplicates"], 0, "{stats}");
    assert_once_each(&shop.store, n as i64).await;

    // The ticket's page: its state, journey and trace, the requester decrypted for ticketing.
    let id = one["ticket_id"].as_str().unwrap();
    let (status, page) = call(&shop.routes, Method::GET, &format!("/api/repair/tickets/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["status"], "closed");
    assert_eq!(page["requester"]["email"], "driver0@example.com");
    assert_eq!(page["payment"]["amount"], "1250.50");
    assert_eq!(page["events"].as_array().unwrap().len(), 4, "{page}");
    assert_eq!(page["trace_id"].as_str().unwrap().len(), 32);
    // At rest and on the topic the personal data is ciphertext.
    let stored: String = sqlx::query("SELECT email FROM repair_tickets WHERE ticket_id = $1")
        .bind(id)
        .fetch_one(shop.store.pool())
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("enc:v1:"), "{stored}");

    // `tickets` carries both record types; a reader tells them apart by schema id, as the origin's notebooks do.
    let mut events = Events::register(
        shop.registry.clone(),
        &weir_repair::events::schemas(weir_broker::SubjectNameStrategy::RecordName),
    )
    .await
    .unwrap();
    let tickets = read_all(&*shop.bus, TICKETS).await;
    let mut by_type: HashMap<Option<String>, usize> = HashMap::new();
    let mut ids = HashMap::new();
    for m in &tickets {
        let d = events.decode(m.value.as_deref().unwrap()).await.unwrap();
        ids.insert(d.name.clone(), d.id);
        *by_type.entry(d.name).or_default() += 1;
    }
    assert_eq!(by_type.get(&Some(TicketOpened::NAME.to_string())), Some(&n), "{by_type:?}");
    assert_eq!(by_type.get(&Some(TicketClosed::NAME.to_string())), Some(&n), "{by_type:?}");
    assert_ne!(ids[&Some(TicketOpened::NAME.to_string())], ids[&Some(TicketClosed::NAME.to_string())]);
    let opened: TicketOpened =
        events.decode_as(TicketOpened::NAME, tickets[0].value.as_deref().unwrap()).await.unwrap();
    assert!(opened.requester.email.starts_with("enc:v1:"), "the topic holds ciphertext: {}", opened.requester.email);
    for m in &tickets {
        let tp = m.header("traceparent").expect("every record carries its trace context");
        assert_eq!(tp.len(), 55);
    }

    // An idempotent consumer: the same events published again (as a relay restarted mid-way would) change nothing.
    let again: Vec<OutgoingMessage> = tickets
        .iter()
        .take(20)
        .chain(read_all(&*shop.bus, PAYMENTS).await.iter().take(20))
        .map(|m| OutgoingMessage {
            topic: m.topic.clone(),
            key: m.key.clone(),
            value: m.value.clone(),
            headers: m.headers.clone(),
            partition: None,
            timestamp: None,
        })
        .collect();
    shop.bus.produce_all(again).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_once_each(&shop.store, n as i64).await;
    // Every ticket's effects once on the bus too: one appointment and one payment value per ticket.
    for topic in [APPOINTMENTS, PAYMENTS] {
        let mut values: HashMap<Vec<u8>, std::collections::HashSet<Vec<u8>>> = HashMap::new();
        for m in read_all(&*shop.bus, topic).await {
            values.entry(m.key.unwrap().to_vec()).or_default().insert(m.value.unwrap().to_vec());
        }
        assert_eq!(values.len(), n, "{topic}");
        assert!(values.values().all(|v| v.len() == 1), "{topic}: a ticket with two different effects");
    }
    events = Events::default();
    drop(events);
    for (task, end) in shop.host.take().unwrap().stop(Duration::from_secs(10)).await {
        assert!(matches!(end, weir_runtime::system::TaskEnd::Finished), "{task}: {end:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_reach_closed_once_each_on_sqlite() {
    whole_flow(None, "true").await;
}

/// On a cluster without transactions (Tansu 0.6): at least once on the bus, each effect still once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_reach_closed_once_each_without_bus_transactions() {
    whole_flow(None, "false").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_reach_closed_once_each_on_postgres() {
    whole_flow(Some(weir_runtime::testing::fresh_postgres().await), "true").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repairs_that_end_later_are_paid_by_the_till_through_the_outbox() {
    // A shop day in about 2 s: jobs are booked hours ahead and paid when they end.
    let shop = shop(None, &[("clock_speed", "20000"), ("bays", "5")]).await;
    let list: Vec<Value> = (0..30).map(|i| ticket(i, ["windshield", "bumper", "body"][i % 3])).collect();
    let (status, body) = call(&shop.routes, Method::POST, "/api/repair/tickets", Some(Value::Array(list))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Booked first, not paid at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stats) = call(&shop.routes, Method::GET, "/api/repair/stats", None).await;
        let booked = stats["tickets"]["booked"].as_i64().unwrap_or(0)
            + stats["tickets"]["paid"].as_i64().unwrap_or(0)
            + stats["tickets"]["closed"].as_i64().unwrap_or(0);
        if booked == 30 {
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, calendar) = call(&shop.routes, Method::GET, "/api/repair/calendar?limit=100", None).await;
    assert_eq!(calendar["bays"], 5);
    wait_closed(&shop, 30, Duration::from_secs(120)).await;
    assert_once_each(&shop.store, 30).await;
    // Paid by the till, not in the consumer's batch: through the outbox.
    let relayed = count(&shop.store, "SELECT COUNT(*) FROM weir_outbox WHERE topic = 'payments'").await;
    assert!(relayed > 0, "no payment went through the outbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tickets_get_400_naming_the_field_and_open_nothing() {
    let shop = shop(None, &[]).await;
    let cases = [
        (
            json!({"requester": {"email": "not-an-email", "name": "A", "surname": "B", "age": 30}, "repair_type": "body"}),
            "requester.email",
        ),
        (
            json!({"requester": {"email": "a@b.co", "name": "A", "surname": "B", "age": 7}, "repair_type": "body"}),
            "requester.age",
        ),
        (
            json!({"requester": {"email": "a@b.co", "name": "A", "surname": "B", "age": 30}, "repair_type": "engine"}),
            "repair_type",
        ),
        (json!({"requester": {"email": "a@b.co", "surname": "B", "age": 30}, "repair_type": "body"}), "requester.name"),
        (json!({"repair_type": "body"}), "requester"),
        (
            json!([ticket(0, "body"), {"requester": {"email": "a@b", "name": "A", "surname": "B", "age": 30}, "repair_type": "body"}]),
            "[1].requester.email",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = call(&shop.routes, Method::POST, "/api/repair/tickets", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert!(answer["error"].as_str().unwrap().starts_with(field), "{field}: {answer}");
    }
    assert_eq!(count(&shop.store, "SELECT COUNT(*) FROM repair_tickets").await, 0, "a refused list opens none of it");
    let (status, _) = call(&shop.routes, Method::GET, "/api/repair/tickets?status=lost", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&shop.routes, Method::GET, "/api/repair/tickets/not-a-uuid", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) =
        call(&shop.routes, Method::GET, &format!("/api/repair/tickets/{}", uuid::Uuid::new_v4()), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_runs_as_its_own_user_held_to_its_acls() {
    let security = weir_security::Security::in_memory(Default::default()).unwrap();
    let file: serde_json::Map<String, Value> =
        serde_json::from_value(json!({"passwords": {"secretary": "s3cret-secretary"}})).unwrap();
    let shop = shop_with(None, &[("clock_speed", "max")], Some(security.clone()), Some(file)).await;
    // The shop works under its services' ACLs.
    let list: Vec<Value> = (0..20).map(|i| ticket(i, "windshield")).collect();
    let (status, body) = call(&shop.routes, Method::POST, "/api/repair/tickets", Some(Value::Array(list))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    wait_closed(&shop, 20, Duration::from_secs(60)).await;
    assert_once_each(&shop.store, 20).await;
    // Each service has its own ACLs in the platform's store.
    let acls = security.acls.list(&weir_security::AclFilter::any());
    for user in ["User:ticketing", "User:secretary", "User:cash-desk"] {
        assert!(acls.iter().any(|a| a.principal == user), "no ACL for {user}: {acls:?}");
    }
    let access = weir_runtime::SecuredAccess::new(security.clone(), shop.bus.clone());
    use weir_runtime::Access;
    // Wrong credentials get nothing.
    assert!(matches!(access.login("secretary", "guess").await, Err(weir_runtime::AccessError::Authentication(_))));
    assert!(access.login("mallory", "s3cret-secretary").await.is_err());
    // The secretary may write appointments, not payments, nor read as the cash desk.
    let secretary = access.login("secretary", "s3cret-secretary").await.unwrap();
    let before = read_all(&*shop.bus, PAYMENTS).await.len();
    let refused = secretary.produce(OutgoingMessage::new(PAYMENTS, "a forged payment")).await;
    assert!(matches!(refused, Err(weir_runtime::BusError::NotAuthorized(_))), "{refused:?}");
    assert_eq!(read_all(&*shop.bus, PAYMENTS).await.len(), before, "nothing was written");
    let options = weir_runtime::SubscribeOptions::new("cash-desk", [APPOINTMENTS]);
    let refused = secretary.subscribe(options).await.err();
    assert!(matches!(refused, Some(weir_runtime::BusError::NotAuthorized(_))), "{refused:?}");
    let refused = secretary.subscribe(weir_runtime::SubscribeOptions::new("secretary", [PAYMENTS])).await.err();
    assert!(matches!(refused, Some(weir_runtime::BusError::NotAuthorized(_))), "{refused:?}");
    secretary.produce(OutgoingMessage::new(APPOINTMENTS, "allowed").key("k")).await.expect("its own topic");
    // Not an event the cash desk can read: dead-lettered, with the reason, in the cash desk's transaction.
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = read_all(&*shop.bus, "appointments.dlq").await;
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
    };
    assert_eq!(dead.len(), 1);
    assert!(dead[0].header("weir.dlq.reason").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_opened_evolves_compatibly_and_old_consumers_keep_working() {
    let shop = shop(None, &[("clock_speed", "max")]).await;
    let server = weir_http::HttpServer::start_app(
        weir_http::HttpConfig::new("127.0.0.1:0".parse().unwrap()),
        weir_schema::api::router(shop.service.clone()),
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr);
    let subject = "repair.ticketing.TicketOpened";
    let (config, status) = curl("GET", &format!("{base}/config/{subject}"), None);
    assert_eq!((status, config["compatibilityLevel"].as_str()), (200, Some("FULL")), "{config}");
    // v2 adds an optional field: accepted.
    let mut v2: Value = serde_json::from_str(TicketOpened::SCHEMA).unwrap();
    v2["fields"].as_array_mut().unwrap().push(json!({"name": "notes", "type": ["null", "string"], "default": null}));
    let (answer, status) =
        curl("POST", &format!("{base}/subjects/{subject}/versions"), Some(json!({"schema": v2.to_string()})));
    assert_eq!(status, 200, "{answer}");
    let v2_id = answer["id"].as_i64().unwrap() as i32;
    // A producer on v2 (as a newer ticketing would be): the running secretary, built on v1, still books it.
    let ticket = uuid::Uuid::new_v4();
    let value = json!({"occurred_on": 1_764_576_000_000_000i64, "ticket_id": ticket.to_string(),
        "requester": {"email": "a@b.co", "name": "A", "middlename": null, "surname": "B", "age": 30},
        "repair_type": "bumper", "notes": "rear left"});
    let bytes = SchemaRegistry::encode(&*shop.registry, v2_id, &value).unwrap();
    shop.bus.produce(OutgoingMessage::new(TICKETS, bytes).key(ticket.to_string())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&shop.store, &format!("SELECT COUNT(*) FROM repair_appointments WHERE ticket_id = '{ticket}'")).await
        == 0
    {
        assert!(Instant::now() < deadline, "the v1 secretary did not book a v2 ticket");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Removing a required field would break the running consumers: refused.
    let mut broken: Value = serde_json::from_str(TicketOpened::SCHEMA).unwrap();
    broken["fields"].as_array_mut().unwrap().retain(|f| f["name"] != "repair_type");
    let (answer, status) =
        curl("POST", &format!("{base}/subjects/{subject}/versions"), Some(json!({"schema": broken.to_string()})));
    assert_eq!(status, 409, "{answer}");
    server.stop().await;
}

/// One request to the registry's HTTP API with curl: the JSON answer and the status.
fn curl(method: &str, url: &str, body: Option<Value>) -> (Value, u16) {
    let mut command = std::process::Command::new("curl");
    command.args(["-s", "-m", "10", "-w", "\n%{http_code}", "-X", method, url]);
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/vnd.schemaregistry.v1+json", "-d", &body.to_string()]);
    }
    let out = command.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (serde_json::from_str(body).unwrap_or(Value::Null), status.parse().unwrap_or(0))
}
