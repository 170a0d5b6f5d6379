//! The broker's schema validation, answered by the registry: [`RegistryValidator`] is the
//! [`weir_broker::RecordValidator`] `weir up` installs on its embedded broker. For each validated side of a record
//! (key or value) it checks Confluent's framing (magic byte 0, a 4-byte schema id), that the id is one of the live
//! versions of the subject the topic's naming strategy gives, and, when the topic asks for it, that the payload
//! decodes with that schema.
//!
//! It is on every produce path of a validated topic, so the common case allocates nothing: the subject's name is
//! built in a per-thread buffer, the registry is read under its lock without copying, and record names (which the
//! record strategies need, and whose computation allocates) are cached by id. An id's schema never changes and ids
//! are never reused, so a cached name stays right; only ids the registry holds are cached, which bounds the cache.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use weir_broker::{RecordValidator, Side, SubjectNameStrategy, TopicValidation};

use crate::registry::Registry;
use crate::service::SchemaService;
use crate::wire;

/// Why a record's key or value is refused, as the sentence the producer gets (after the broker's `record N: `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{side} is not in Confluent's wire format (no magic byte 0 and schema id)")]
    NotFramed { side: Side },
    #[error("{side} schema id {id} is not a registered schema")]
    UnknownId { side: Side, id: i32 },
    #[error("{side} schema id {id} has no record name, which {strategy} needs (an Avro record, enum or fixed; a Protobuf message; a JSON Schema with a title)")]
    NoRecordName { side: Side, id: i32, strategy: &'static str },
    #[error("{side} schema id {id} is not registered under subject {subject}")]
    NotInSubject { side: Side, id: i32, subject: String },
    #[error("{side} schema id {id} does not parse in this registry, so its payload cannot be checked")]
    Unparsed { side: Side, id: i32 },
    #[error("{side} does not fit schema id {id}: {reason}")]
    Payload { side: Side, id: i32, reason: String },
}

/// Checks records against the registry's state (see the module's comment).
#[derive(Debug)]
pub struct RegistryValidator {
    service: Arc<SchemaService>,
    /// Record names by schema id (`None`: the schema names no record).
    record_names: RwLock<HashMap<i32, Option<Arc<str>>>>,
}

thread_local! {
    /// The subject being looked up, reused so a record costs no allocation for it.
    static SUBJECT: RefCell<String> = const { RefCell::new(String::new()) };
}

fn strategy_name(strategy: SubjectNameStrategy) -> &'static str {
    match strategy {
        SubjectNameStrategy::TopicName => "TopicNameStrategy",
        SubjectNameStrategy::RecordName => "RecordNameStrategy",
        SubjectNameStrategy::TopicRecordName => "TopicRecordNameStrategy",
    }
}

impl RegistryValidator {
    pub fn new(service: Arc<SchemaService>) -> RegistryValidator {
        RegistryValidator { service, record_names: RwLock::new(HashMap::new()) }
    }

    /// Checks one side of a record; a null key or value (a tombstone) has nothing to check.
    pub fn check_side(
        &self,
        topic: &str,
        side: Side,
        strategy: SubjectNameStrategy,
        payload_too: bool,
        bytes: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        let Some(bytes) = bytes else { return Ok(()) };
        let (id, payload) = wire::unframe(bytes).ok_or(Refusal::NotFramed { side })?;
        let parsed = {
            let state = self.service.state();
            let record_name = match strategy {
                SubjectNameStrategy::TopicName => None,
                _ => Some(self.record_name(&state, side, id, strategy)?),
            };
            let held = SUBJECT.with_borrow_mut(|subject| {
                subject.clear();
                match (strategy, &record_name) {
                    (SubjectNameStrategy::RecordName, Some(name)) => subject.push_str(name),
                    (SubjectNameStrategy::TopicRecordName, Some(name)) => {
                        subject.push_str(topic);
                        subject.push('-');
                        subject.push_str(name);
                    }
                    _ => {
                        subject.push_str(topic);
                        subject.push('-');
                        subject.push_str(side.as_str());
                    }
                }
                if state.subject_holds_id(subject, id) {
                    Ok(())
                } else {
                    Err(Refusal::NotInSubject { side, id, subject: subject.clone() })
                }
            });
            held?;
            if !payload_too {
                return Ok(());
            }
            // Registered under the subject, so the id's schema is there.
            state.schema(id).ok().and_then(|s| s.parsed.clone()).ok_or(Refusal::Unparsed { side, id })?
        };
        // Decoded outside the registry's lock: a large payload must not hold up the registry's reader.
        parsed.decode_json(payload).map(drop).map_err(|e| Refusal::Payload { side, id, reason: e.message })
    }

    /// The record name of schema `id`, for the record strategies.
    fn record_name(
        &self,
        state: &Registry,
        side: Side,
        id: i32,
        strategy: SubjectNameStrategy,
    ) -> Result<Arc<str>, Refusal> {
        let no_name = || Refusal::NoRecordName { side, id, strategy: strategy_name(strategy) };
        if let Some(cached) = self.record_names.read().get(&id) {
            return cached.clone().ok_or_else(no_name);
        }
        let schema = state.schema(id).map_err(|_| Refusal::UnknownId { side, id })?;
        let name: Option<Arc<str>> = schema.parsed.as_ref().and_then(|p| p.record_name()).map(Arc::from);
        self.record_names.write().insert(id, name.clone());
        name.ok_or_else(no_name)
    }
}

impl RecordValidator for RegistryValidator {
    fn check(
        &self,
        topic: &str,
        settings: &TopicValidation,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), String> {
        for (side, bytes) in [(Side::Key, key), (Side::Value, value)] {
            if let Some(strategy) = settings.side(side) {
                self.check_side(topic, side, strategy, settings.payload, bytes).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}
