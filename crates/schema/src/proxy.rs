//! The REST Proxy's schema formats (avro, jsonschema, protobuf), answered by the registry: [`ProxySchemas`] is the
//! [`weir_http::EmbeddedSchemas`] `weir up` installs in its HTTP API. A schema given as text is registered (or found)
//! under the subject the topic's naming strategy gives, as Confluent's REST Proxy registers on the fly; one given by
//! id must be registered and of the request's format.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use weir_broker::{Side, SubjectNameStrategy};
use weir_http::{EmbedError, EmbeddedSchemas, SchemaFormat, SchemaGiven};

use crate::codec::SerdeError;
use crate::formats::{Parsed, SchemaType};
use crate::naming::subject_name;
use crate::registry::{NewSchema, RegistryError};
use crate::service::SchemaService;
use crate::wire;

/// Schema texts remembered with their ids, at most: a client of the REST Proxy sends its schema with every request,
/// and parsing it each time would cost more than the request's records.
const MAX_REMEMBERED: usize = 1024;

/// The registry as the REST Proxy's schema formats see it.
#[derive(Debug)]
pub struct ProxySchemas {
    service: Arc<SchemaService>,
    /// Ids of schema texts already registered, by everything that decides the subject and the schema.
    remembered: Mutex<HashMap<(SchemaFormat, String, Side, SubjectNameStrategy, String), i32>>,
}

impl ProxySchemas {
    pub fn new(service: Arc<SchemaService>) -> ProxySchemas {
        ProxySchemas { service, remembered: Mutex::new(HashMap::new()) }
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
impl EmbeddedSchemas for ProxySchemas {
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
        let key = (format, topic.to_string(), side, strategy, text.to_string());
        if let Some(id) = self.remembered.lock().get(&key) {
            return Ok(*id);
        }
        let parsed = Parsed::parse(wanted, text, &[]).map_err(|e| EmbedError::InvalidSchema(e.message))?;
        let subject =
            subject_name(topic, side, strategy, parsed.record_name().as_deref()).map_err(EmbedError::InvalidSchema)?;
        let new = NewSchema {
            schema_type: wanted,
            schema: text.to_string(),
            references: Vec::new(),
            id: None,
            version: None,
        };
        let (id, _version) = self.service.register(&subject, &new).await.map_err(refused)?;
        let mut remembered = self.remembered.lock();
        if remembered.len() >= MAX_REMEMBERED {
            remembered.clear();
        }
        remembered.insert(key, id);
        Ok(id)
    }

    fn encode(&self, id: i32, value: &Value) -> Result<Vec<u8>, EmbedError> {
        let parsed = {
            let state = self.service.state();
            let schema = state.schema(id).map_err(refused)?;
            schema.parsed.clone().ok_or_else(|| EmbedError::InvalidSchema(SerdeError::Unparsable(id).to_string()))?
        };
        let payload = parsed.encode_json(value).map_err(|e| EmbedError::Conversion(e.message))?;
        Ok(wire::frame(id, &payload))
    }

    async fn decode(&self, bytes: &[u8]) -> Result<Value, EmbedError> {
        let decoded = match self.service.decode(bytes) {
            // An id registered by another instance a moment ago may not have been read here yet.
            Err(SerdeError::Registry(RegistryError::SchemaNotFound(_))) => {
                self.service.catch_up().await.map_err(refused)?;
                self.service.decode(bytes)
            }
            other => other,
        };
        decoded.map(|(_, value)| value).map_err(|e| EmbedError::Deserialization(e.to_string()))
    }
}
