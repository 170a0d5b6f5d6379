//! Typed events: a system declares the schemas of the events it writes ([`EventSchema`]: Avro, JSON Schema or
//! Protobuf, each for a topic, with the subject naming strategy that topic uses); they are registered when the
//! system starts, and its producers serialize and its handlers deserialize through the schema registry, in
//! Confluent's wire format (magic byte 0, the schema id, the payload). Kafka tools, Confluent's deserializers and
//! the broker's schema validation all read what a system writes this way, and one topic can carry several event
//! types told apart by their schema ids.
//!
//! The registry sits above the runtime (it keeps its state through the Bus, and serves its own API), so the runtime
//! asks it through [`SchemaRegistry`], which weir-schema implements and the platform hands to [`Host`](crate::Host).
//!
//! ```
//! # use weir_runtime::events::{EventSchema, SchemaKind};
//! # use weir_broker::SubjectNameStrategy;
//! let opened = EventSchema::new("ticket_opened", "tickets", SchemaKind::Avro, r#"{"type": "record",
//!     "name": "TicketOpened", "namespace": "repair", "fields": [{"name": "ticket_id", "type": "string"}]}"#)
//!     .strategy(SubjectNameStrategy::RecordName);
//! assert_eq!(opened.topic, "tickets");
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use weir_broker::{Side, SubjectNameStrategy};

use crate::bus::OutgoingMessage;

/// A schema's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchemaKind {
    Avro,
    Json,
    Protobuf,
}

/// One event type a system writes: its name in the system's code, the topic it goes to, and its schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSchema {
    /// What the system calls it (`ticket_opened`), to serialize one: [`Events::encode`].
    pub name: String,
    pub topic: String,
    pub kind: SchemaKind,
    /// The schema's text (an `.avsc`, a JSON Schema, a `.proto`).
    pub schema: String,
    /// How the value's subject is named: `<topic>-value` (the default), the record's name, or both (a topic that
    /// carries several event types needs one of the record strategies).
    pub strategy: SubjectNameStrategy,
    /// The compatibility level its subject keeps (`FULL`, `BACKWARD`, ... as the registry names them), set when it
    /// is registered; `None` leaves the registry's own.
    pub compatibility: Option<String>,
}

impl EventSchema {
    pub fn new(
        name: impl Into<String>,
        topic: impl Into<String>,
        kind: SchemaKind,
        schema: impl Into<String>,
    ) -> EventSchema {
        EventSchema {
            name: name.into(),
            topic: topic.into(),
            kind,
            schema: schema.into(),
            strategy: SubjectNameStrategy::TopicName,
            compatibility: None,
        }
    }

    /// Keeps the subject at compatibility `level` (`FULL`: new versions readable by old consumers and the reverse).
    pub fn compatibility(mut self, level: impl Into<String>) -> EventSchema {
        self.compatibility = Some(level.into());
        self
    }

    pub fn strategy(mut self, strategy: SubjectNameStrategy) -> EventSchema {
        self.strategy = strategy;
        self
    }
}

/// Why an event could not be registered, serialized or deserialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The registry refused the schema (it does not parse, it is incompatible with the subject's versions).
    #[error("event schema {name}: {reason}")]
    Schema { name: String, reason: String },
    /// The event type is not one the system declared.
    #[error("no event type {0} is declared")]
    Unknown(String),
    /// The value does not fit its schema, or its type does not fit the value.
    #[error("{0}")]
    Payload(String),
    /// The registry could not answer.
    #[error("the schema registry: {0}")]
    Registry(String),
    /// The system declares event schemas and the platform runs without a schema registry.
    #[error("the system declares event schemas, and this platform runs without a schema registry")]
    NoRegistry,
}

/// A schema registered under its subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub id: i32,
    pub subject: String,
}

/// What typed events need of a schema registry.
#[async_trait]
pub trait SchemaRegistry: Send + Sync + std::fmt::Debug {
    /// Registers `schema` (or finds it) under the subject `strategy` names for `topic`'s `side`. `Err` is the
    /// registry's reason, or [`EventError::Registry`] when it could not answer.
    async fn register(
        &self,
        topic: &str,
        side: Side,
        strategy: SubjectNameStrategy,
        kind: SchemaKind,
        schema: &str,
    ) -> Result<Registered, EventError>;

    /// Sets `subject`'s compatibility level (`FULL`, `BACKWARD_TRANSITIVE`, ...).
    async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), EventError>;

    /// `value` encoded with schema `id`, framed with it.
    fn encode(&self, id: i32, value: &Value) -> Result<Vec<u8>, EventError>;

    /// A framed record's schema id and value, as the JSON a serde type reads (Avro's unions untagged).
    async fn decode(&self, bytes: &[u8]) -> Result<(i32, Value), EventError>;

    /// The subjects schema `id` is registered under (a later version of an event type is under its subject).
    async fn subjects_of(&self, id: i32) -> Result<Vec<String>, EventError>;
}

/// A decoded event: which type it is (`None`: a schema id the system did not declare) and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub id: i32,
    pub name: Option<String>,
    pub value: Value,
}

/// A system's event types, registered: what its producers serialize and its handlers deserialize with.
#[derive(Clone, Debug, Default)]
pub struct Events {
    registry: Option<Arc<dyn SchemaRegistry>>,
    by_name: HashMap<String, (EventSchema, Registered)>,
    by_id: HashMap<i32, String>,
}

impl Events {
    /// Registers each declared schema under its subject (in order; the first refused stops it, naming the event).
    pub async fn register(registry: Arc<dyn SchemaRegistry>, schemas: &[EventSchema]) -> Result<Events, EventError> {
        let mut events = Events { registry: Some(registry.clone()), ..Default::default() };
        for s in schemas {
            let registered =
                registry.register(&s.topic, Side::Value, s.strategy, s.kind, &s.schema).await.map_err(|e| match e {
                    EventError::Payload(reason) | EventError::Schema { reason, .. } => {
                        EventError::Schema { name: s.name.clone(), reason }
                    }
                    other => other,
                })?;
            if let Some(level) = &s.compatibility {
                registry.set_compatibility(&registered.subject, level).await.map_err(|e| match e {
                    EventError::Payload(reason) | EventError::Schema { reason, .. } => {
                        EventError::Schema { name: s.name.clone(), reason }
                    }
                    other => other,
                })?;
            }
            tracing::debug!(event = %s.name, subject = %registered.subject, id = registered.id, "event schema registered");
            events.by_id.insert(registered.id, s.name.clone());
            events.by_name.insert(s.name.clone(), (s.clone(), registered));
        }
        Ok(events)
    }

    /// The subject and schema id of event type `name`.
    pub fn registered(&self, name: &str) -> Option<&Registered> {
        self.by_name.get(name).map(|(_, r)| r)
    }

    fn registry(&self) -> Result<&Arc<dyn SchemaRegistry>, EventError> {
        self.registry.as_ref().ok_or(EventError::NoRegistry)
    }

    /// `event` serialized as event type `name`: framed with its schema id.
    pub fn encode<T: Serialize>(&self, name: &str, event: &T) -> Result<Vec<u8>, EventError> {
        let (_, registered) = self.by_name.get(name).ok_or_else(|| EventError::Unknown(name.to_string()))?;
        let value = serde_json::to_value(event).map_err(|e| EventError::Payload(format!("{name}: {e}")))?;
        self.registry()?.encode(registered.id, &value)
    }

    /// `event` as a message to event type `name`'s topic.
    pub fn message<T: Serialize>(
        &self,
        name: &str,
        key: Option<Bytes>,
        event: &T,
    ) -> Result<OutgoingMessage, EventError> {
        let value = self.encode(name, event)?;
        let (schema, _) = &self.by_name[name];
        Ok(OutgoingMessage { topic: schema.topic.clone(), key, value: Some(value.into()), ..Default::default() })
    }

    /// A framed record: its schema id, the event type that id is, and its value. A schema id the system did not
    /// register itself is still its event type when it is a version of that type's subject (a newer producer's):
    /// the value is read by the type's fields, so a compatible evolution keeps this consumer working.
    pub async fn decode(&self, bytes: &[u8]) -> Result<Decoded, EventError> {
        let registry = self.registry()?;
        let (id, value) = registry.decode(bytes).await?;
        let name = match self.by_id.get(&id) {
            Some(name) => Some(name.clone()),
            None => {
                let subjects = registry.subjects_of(id).await?;
                self.by_name.iter().find(|(_, (_, r))| subjects.contains(&r.subject)).map(|(name, _)| name.clone())
            }
        };
        Ok(Decoded { id, name, value })
    }

    /// A framed record read as `T`, which must be event type `name`.
    pub async fn decode_as<T: DeserializeOwned>(&self, name: &str, bytes: &[u8]) -> Result<T, EventError> {
        let decoded = self.decode(bytes).await?;
        if decoded.name.as_deref() != Some(name) {
            return Err(EventError::Payload(format!(
                "schema id {} is {}, not {name}",
                decoded.id,
                decoded.name.as_deref().unwrap_or("no declared event type")
            )));
        }
        serde_json::from_value(decoded.value).map_err(|e| EventError::Payload(format!("{name}: {e}")))
    }
}
