//! The runtime's typed events over weir's registry: a system declares its event schemas, the platform registers them
//! when it starts the system (under each topic's naming strategy), its producer serializes Rust values through
//! them, and a reader tells two event types on one topic apart by schema id and reads each back as its Rust type.
//! A schema the registry refuses, or no registry at all, stops the system from starting, naming why.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weir_broker::SubjectNameStrategy;
use weir_runtime::events::{EventSchema, Events, SchemaKind};
use weir_runtime::kv::SqlKv;
use weir_runtime::{
    Bus, EmbeddedBus, Host, SqlStore, StartFrom, Started, System, SystemContext, SystemError, SystemSettings, TopicSpec,
};
use weir_schema::{wire, SchemaService, Serializers, ServiceConfig};

const OPENED: &str = r#"{"type": "record", "name": "TicketOpened", "namespace": "repair", "fields": [
    {"name": "ticket_id", "type": "string"},
    {"name": "middlename", "type": ["null", "string"], "default": null},
    {"name": "age", "type": "int"}]}"#;
const CLOSED: &str = r#"{"type": "record", "name": "TicketClosed", "namespace": "repair", "fields": [
    {"name": "ticket_id", "type": "string"}]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TicketOpened {
    ticket_id: String,
    middlename: Option<String>,
    age: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TicketClosed {
    ticket_id: String,
}

/// A system writing two event types to one topic; it keeps what the platform handed it, for the test to look at.
#[derive(Default)]
struct Shop {
    opened_schema: Option<&'static str>,
    events: Arc<Mutex<Option<Events>>>,
}

#[async_trait]
impl System for Shop {
    fn name(&self) -> &'static str {
        "shop"
    }
    fn about(&self) -> &'static str {
        "a test system with typed events"
    }
    fn check(&self, _: &SystemSettings) -> Result<(), SystemError> {
        Ok(())
    }
    fn topics(&self, _: &SystemSettings) -> Result<Vec<TopicSpec>, SystemError> {
        Ok(vec![TopicSpec::new("tickets", 1)])
    }
    fn event_schemas(&self, _: &SystemSettings) -> Result<Vec<EventSchema>, SystemError> {
        let strategy = SubjectNameStrategy::RecordName;
        Ok(vec![
            EventSchema::new("ticket_opened", "tickets", SchemaKind::Avro, self.opened_schema.unwrap_or(OPENED))
                .strategy(strategy),
            EventSchema::new("ticket_closed", "tickets", SchemaKind::Avro, CLOSED).strategy(strategy),
        ])
    }
    async fn migrate(&self, _: &SqlStore) -> Result<(), SystemError> {
        Ok(())
    }
    async fn start(&self, ctx: SystemContext) -> Result<Started, SystemError> {
        let opened = TicketOpened { ticket_id: "t-1".into(), middlename: Some("Q".into()), age: 41 };
        let closed = TicketClosed { ticket_id: "t-1".into() };
        let messages = vec![
            ctx.events.message("ticket_opened", None, &opened)?,
            ctx.events.message("ticket_closed", None, &closed)?,
        ];
        ctx.bus.produce_all(messages).await?;
        *self.events.lock() = Some(ctx.events.clone());
        Ok(Started::default())
    }
}

async fn platform() -> (tempfile::TempDir, Arc<dyn Bus>, SqlStore, Arc<SchemaService>) {
    let (dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker));
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let service = SchemaService::start(bus.clone(), ServiceConfig::default()).await.unwrap();
    (dir, bus, store, service)
}

fn host(bus: &Arc<dyn Bus>, store: &SqlStore, service: Option<&Arc<SchemaService>>) -> Host {
    let host = Host::new(bus.clone(), store.clone(), Arc::new(SqlKv::new(store.clone())));
    match service {
        Some(s) => host.with_schemas(Arc::new(Serializers::new(s.clone()))),
        None => host,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_s_events_are_registered_at_start_and_read_back_as_their_types() {
    let (_dir, bus, store, service) = platform().await;
    let shop = Shop::default();
    let mut host = host(&bus, &store, Some(&service));
    let _routes = host.start(&shop, SystemSettings::defaults("shop")).await.expect("the system starts");
    let events = shop.events.lock().clone().unwrap();

    // Registered under RecordNameStrategy's subjects, one per record type.
    let (opened_id, closed_id) =
        (events.registered("ticket_opened").unwrap().id, events.registered("ticket_closed").unwrap().id);
    assert_eq!(events.registered("ticket_opened").unwrap().subject, "repair.TicketOpened");
    assert_eq!(events.registered("ticket_closed").unwrap().subject, "repair.TicketClosed");
    assert!(service.state().subject_holds_id("repair.TicketOpened", opened_id));
    assert_ne!(opened_id, closed_id);

    // One topic, two types: a reader tells them apart by schema id, and reads each as its Rust type.
    let mut reader = bus.read(&["tickets".to_string()], StartFrom::Earliest).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(reader.next_batch(Duration::from_secs(5)).await.unwrap());
    }
    let first = got[0].value.as_deref().unwrap();
    assert_eq!(wire::unframe(first).unwrap().0, opened_id, "Confluent's wire format");
    let decoded = events.decode(first).await.unwrap();
    assert_eq!(decoded.name.as_deref(), Some("ticket_opened"));
    assert_eq!(decoded.value["middlename"], "Q", "Avro's union untagged for serde: {}", decoded.value);
    let opened: TicketOpened = events.decode_as("ticket_opened", first).await.unwrap();
    assert_eq!(opened, TicketOpened { ticket_id: "t-1".into(), middlename: Some("Q".into()), age: 41 });
    let second = got[1].value.as_deref().unwrap();
    assert_eq!(events.decode(second).await.unwrap().name.as_deref(), Some("ticket_closed"));
    let closed: TicketClosed = events.decode_as("ticket_closed", second).await.unwrap();
    assert_eq!(closed.ticket_id, "t-1");
    // Read as the wrong type: refused, naming both.
    let e = events.decode_as::<TicketClosed>("ticket_closed", first).await.unwrap_err().to_string();
    assert!(e.contains("is ticket_opened, not ticket_closed"), "{e}");
    // Confluent's deserializers read the same bytes: Avro's JSON encoding, the union tagged.
    assert_eq!(service.decode(first).unwrap().1["middlename"], serde_json::json!({"string": "Q"}));

    // A value its schema does not take, and an event type never declared.
    let e = events.encode("ticket_closed", &serde_json::json!({"ticket_id": 7})).unwrap_err().to_string();
    assert!(e.contains("ticket_id"), "{e}");
    let e = events.encode("ticket_lost", &closed).unwrap_err().to_string();
    assert_eq!(e, "no event type ticket_lost is declared");
    host.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_schema_or_no_registry_stops_the_system_from_starting() {
    let (_dir, bus, store, service) = platform().await;
    let mut first = host(&bus, &store, Some(&service));
    let _routes = first.start(&Shop::default(), SystemSettings::defaults("shop")).await.unwrap();
    first.stop(Duration::from_secs(5)).await;

    // The next version drops a field without a default: BACKWARD refuses it, and the error names the event.
    let changed = r#"{"type": "record", "name": "TicketOpened", "namespace": "repair", "fields": [
        {"name": "ticket_id", "type": "string"}, {"name": "age", "type": "int"}, {"name": "email", "type": "string"}]}"#;
    let shop = Shop { opened_schema: Some(changed), ..Default::default() };
    let mut second = host(&bus, &store, Some(&service));
    let e = second.start(&shop, SystemSettings::defaults("shop")).await.unwrap_err().to_string();
    assert!(e.contains("event schema ticket_opened") && e.contains("incompatible"), "{e}");
    assert!(shop.events.lock().is_none(), "the system did not start");

    let mut bare = host(&bus, &store, None);
    let e = bare.start(&Shop::default(), SystemSettings::defaults("shop")).await.unwrap_err().to_string();
    assert!(e.contains("without a schema registry"), "{e}");
}
