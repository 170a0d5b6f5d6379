//! The registry as the serializers above it see it: [`Serializers`] answers the REST Proxy's schema formats (avro,
//! jsonschema, protobuf: [`weir_http::EmbeddedSchemas`], installed by `weir up` in its HTTP API) and the systems'
//! typed events ([`weir_runtime::events::SchemaRegistry`], handed to the runtime's `Host`). A schema given as text is
//! registered (or found) under the subject the naming strategy gives, as Confluent's serializers and REST Proxy
//! register on the fly; one given by id must be registered and of the expected format.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use weir_broker::{Side, SubjectNameStrategy};
use weir_http::{EmbedError, EmbeddedSchemas, SchemaFormat, SchemaGiven};
use weir_runtime::events::{EventError, Registered, SchemaKind, SchemaRegistry};

use crate::codec::SerdeError;
use crate::formats::{Parsed, SchemaType};
use crate::naming::subject_name;
use crate::registry::{NewSchema, RegistryError};
use crate::service::SchemaService;
use crate::wire;

/// Schema texts remembered with their ids, at most: a client of the REST Proxy sends its schema with every request,
/// and parsing it each time would cost more than the request's records.
const MAX_REMEMBERED: usize = 1024;

/// A schema text and everything that decides the subject it is registered under.
type TextKey = (SchemaType, String, Side, SubjectNameStrategy, String);

/// The registry as serializers see it (see the module's comment).
#[derive(Debug)]
pub struct Serializers {
    service: Arc<SchemaService>,
    /// Ids of schema texts already registered, by everything that decides the subject and the schema.
    remembered: Mutex<HashMap<TextKey, (i32, String)>>,
}

impl Serializers {
    pub fn new(service: Arc<SchemaService>) -> Serializers {
        Serializers { service, remembered: Mutex::new(HashMap::new()) }
    }

    /// Registers `text` (or finds it) under the subject `strategy` names: its id and the subject.
    async fn register_text(
        &self,
        schema_type: SchemaType,
        topic: &str,
        side: Side,
        strategy: SubjectNameStrategy,
        text: &str,
    ) -> Result<(i32, String), EmbedError> {
        let key = (schema_type, topic.to_string(), side, strategy, text.to_string());
        if let Some(known) = self.remembered.lock().get(&key) {
            return Ok(known.clone());
        }
        let parsed = Parsed::parse(schema_type, text, &[]).map_err(|e| EmbedError::InvalidSchema(e.message))?;
        let subject =
            subject_name(topic, side, strategy, parsed.record_name().as_deref()).map_err(EmbedError::InvalidSchema)?;
        let new = NewSchema { schema_type, schema: text.to_string(), references: Vec::new(), id: None, version: None };
        let (id, _version) = self.service.register(&subject, &new).await.map_err(refused)?;
        let mut remembered = self.remembered.lock();
        if remembered.len() >= MAX_REMEMBERED {
            remembered.clear();
        }
        remembered.insert(key, (id, subject.clone()));
        Ok((id, subject))
    }

    /// `value` encoded with schema `id` and framed.
    fn encode_framed(&self, id: i32, value: &Value) -> Result<Vec<u8>, EmbedError> {
        let parsed = {
            let state = self.service.state();
            let schema = state.schema(id).map_err(refused)?;
            schema.parsed.clone().ok_or_else(|| EmbedError::InvalidSchema(SerdeError::Unparsable(id).to_string()))?
        };
        let payload = parsed.encode_json(value).map_err(|e| EmbedError::Conversion(e.message))?;
        Ok(wire::frame(id, &payload))
    }

    /// A framed record's id and payload decoded (`plain`: Avro's unions untagged), catching up with `_schemas` once
    /// when the id is not known here yet (registered by another instance a moment ago).
    async fn decode_framed(&self, bytes: &[u8], plain: bool) -> Result<(i32, Value), EmbedError> {
        let decode = || -> Result<(i32, Value), SerdeError> {
            let (id, payload) = wire::unframe(bytes).ok_or(SerdeError::NotFramed)?;
            let parsed = self.service.state().schema(id)?.parsed.clone().ok_or(SerdeError::Unparsable(id))?;
            let value = if plain { parsed.decode_plain_json(payload) } else { parsed.decode_json(payload) };
            value.map(|v| (id, v)).map_err(|source| SerdeError::Payload { id, source })
        };
        let decoded = match decode() {
            Err(SerdeError::Registry(RegistryError::SchemaNotFound(_))) => {
                self.service.catch_up().await.map_err(refused)?;
                decode()
            }
            other => other,
        };
        decoded.map_err(|e| EmbedError::Deserialization(e.to_string()))
    }
}

fn schema_type(format: SchemaFormat) -> SchemaType {
    match format {
        SchemaFormat::Avro => SchemaType::Avro,
        SchemaFormat::JsonSchema => SchemaType::Json,
        SchemaFormat::Protobuf => SchemaType::Protobuf,
    }
}

/// A registry error as the proxy reports it: the registry unreachable, or the schema refused.
fn refused(e: RegistryError) -> EmbedError {
    match e {
        RegistryError::Store(_) | RegistryError::Timeout(_) => EmbedError::Unavailable(e.to_string()),
        e => EmbedError::InvalidSchema(e.to_string()),
    }
}

#[async_trait]
impl EmbeddedSchemas for Serializers {
    async fn resolve(
        &self,
        format: SchemaFormat,
        topic: &str,
        side: Side,
        strategy: SubjectNameStrategy,
        given: SchemaGiven<'_>,
    ) -> Result<i32, EmbedError> {
        let wanted = schema_type(format);
        let text = match given {
            SchemaGiven::Id(id) => {
                let state = self.service.state();
                let schema = state
                    .schema(id)
                    .map_err(|_| EmbedError::InvalidSchema(format!("schema id {id} is not registered")))?;
                if schema.schema_type != wanted {
                    return Err(EmbedError::InvalidSchema(format!(
                        "schema id {id} is a {} schema, and this request's format takes {wanted}",
                        schema.schema_type
                    )));
                }
                return Ok(id);
            }
            SchemaGiven::Text(text) => text,
        };
        self.register_text(wanted, topic, side, strategy, text).await.map(|(id, _)| id)
    }

    fn encode(&self, id: i32, value: &Value) -> Result<Vec<u8>, EmbedError> {
        self.encode_framed(id, value)
    }

    async fn decode(&self, bytes: &[u8]) -> Result<Value, EmbedError> {
        self.decode_framed(bytes, false).await.map(|(_, value)| value)
    }
}

/// The runtime's typed events: the same registration, encoding and decoding, with Avro's unions untagged (the JSON
/// a serde type reads).
#[async_trait]
impl SchemaRegistry for Serializers {
    async fn register(
        &self,
        topic: &str,
        side: Side,
        strategy: SubjectNameStrategy,
        kind: SchemaKind,
        schema: &str,
    ) -> Result<Registered, EventError> {
        let schema_type = match kind {
            SchemaKind::Avro => SchemaType::Avro,
            SchemaKind::Json => SchemaType::Json,
            SchemaKind::Protobuf => SchemaType::Protobuf,
        };
        let (id, subject) =
            self.register_text(schema_type, topic, side, strategy, schema).await.map_err(event_error)?;
        Ok(Registered { id, subject })
    }

    async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), EventError> {
        let level: crate::Compatibility = level
            .parse()
            .map_err(|e| EventError::Schema { name: String::new(), reason: format!("compatibility {level:?}: {e}") })?;
        self.service.set_compatibility(Some(subject), level).await.map_err(|e| event_error(refused(e)))
    }

    fn encode(&self, id: i32, value: &Value) -> Result<Vec<u8>, EventError> {
        self.encode_framed(id, value).map_err(event_error)
    }

    async fn decode(&self, bytes: &[u8]) -> Result<(i32, Value), EventError> {
        self.decode_framed(bytes, true).await.map_err(event_error)
    }

    async fn subjects_of(&self, id: i32) -> Result<Vec<String>, EventError> {
        Ok(self.service.state().id_versions(id, false).into_iter().map(|(subject, _)| subject).collect())
    }
}

fn event_error(e: EmbedError) -> EventError {
    match e {
        EmbedError::InvalidSchema(reason) => EventError::Schema { name: String::new(), reason },
        EmbedError::Unavailable(reason) => EventError::Registry(reason),
        EmbedError::Conversion(reason) | EmbedError::Deserialization(reason) => EventError::Payload(reason),
    }
}
