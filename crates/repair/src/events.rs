//! The shop's events: the Rust types generated from `schemas/*.avsc` at build time, the topics they go to, and the
//! schemas the system registers when it starts. `tickets` carries two record types (`ticket_opened` and
//! `ticket_closed`), so its subjects follow a record naming strategy (RecordNameStrategy by default,
//! TopicRecordNameStrategy by setting) and its readers tell the types apart by schema id.
//!
//! Each subject is kept FULL-compatible. Every record carries a stable event id (`weir.event.id`, derived from the ticket: a re-published event has the
//! same id) and the W3C `traceparent` of the span that produced it.

use bytes::Bytes;
use weir_broker::SubjectNameStrategy;
use weir_runtime::events::{EventSchema, Events, SchemaKind};
use weir_runtime::handler::EVENT_ID_HEADER;
use weir_runtime::OutgoingMessage;

pub use crate::avro::{AvroEvent, Decimal, Timestamp};
use crate::trace::{TraceContext, TRACEPARENT};

include!(concat!(env!("OUT_DIR"), "/events.rs"));

pub const TICKETS: &str = "tickets";
pub const APPOINTMENTS: &str = "appointments";
pub const PAYMENTS: &str = "payments";

/// The event types, in flow order, with the topic each goes to.
pub const FLOW: [(&str, &str); 4] = [
    (TicketOpened::NAME, TICKETS),
    (AppointmentBooked::NAME, APPOINTMENTS),
    (PaymentRegistered::NAME, PAYMENTS),
    (TicketClosed::NAME, TICKETS),
];

/// The schemas registered at start, `tickets`' under `strategy`.
pub fn schemas(strategy: SubjectNameStrategy) -> Vec<EventSchema> {
    // FULL: a new version must be readable by the services already running and read what they wrote, so a
    // schema change never stops the shop (adding an optional field passes; removing a required one is refused).
    let avro = |name: &str, topic: &str, text: &str, strategy| {
        EventSchema::new(name, topic, SchemaKind::Avro, text).strategy(strategy).compatibility("FULL")
    };
    vec![
        avro(TicketOpened::NAME, TICKETS, TicketOpened::SCHEMA, strategy),
        avro(TicketClosed::NAME, TICKETS, TicketClosed::SCHEMA, strategy),
        avro(AppointmentBooked::NAME, APPOINTMENTS, AppointmentBooked::SCHEMA, SubjectNameStrategy::TopicName),
        avro(PaymentRegistered::NAME, PAYMENTS, PaymentRegistered::SCHEMA, SubjectNameStrategy::TopicName),
    ]
}

/// The stable id of event `name` about `ticket`: the same each time it is produced again.
pub fn event_id(name: &str, ticket: &uuid::Uuid) -> String {
    format!("{name}:{ticket}")
}

/// `event` about `ticket` as a record of its topic, keyed by the ticket (its events stay in one partition, in
/// order), with its event id and the producing span's `traceparent`.
pub fn message<E: AvroEvent>(
    events: &Events,
    ticket: &uuid::Uuid,
    event: &E,
    trace: &TraceContext,
) -> Result<OutgoingMessage, weir_runtime::events::EventError> {
    let mut m = events.message(E::NAME, Some(Bytes::from(ticket.to_string())), event)?;
    m.headers.push((EVENT_ID_HEADER.into(), Bytes::from(event_id(E::NAME, ticket))));
    m.headers.push((TRACEPARENT.into(), Bytes::from(trace.to_header())));
    Ok(m)
}

impl RepairType {
    /// How long the repair takes a bay, in minutes.
    pub fn minutes(self) -> i64 {
        match self {
            RepairType::Windshield => 60,
            RepairType::Bumper => 120,
            RepairType::Body => 240,
        }
    }

    /// What the cash desk charges for it.
    pub fn price(self) -> Decimal<2> {
        // In cents.
        Decimal::from_unscaled(match self {
            RepairType::Windshield => 18_990,
            RepairType::Bumper => 34_900,
            RepairType::Body => 125_050,
        })
    }

    pub fn parse(s: &str) -> Option<RepairType> {
        RepairType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}
