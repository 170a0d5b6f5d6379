//! Serializing and deserializing through the registry, as Confluent's serializers do: a JSON value encoded with a
//! subject's schema and framed with its id, and a framed record decoded with the schema its id names. What
//! `weir produce --schema` and `weir consume --decode` use, and what a system's typed events will.

use serde_json::Value;

use crate::formats::PayloadError;
use crate::registry::{RegistryError, VersionSel};
use crate::service::SchemaService;
use crate::wire;

/// Why a value could not be serialized or a record deserialized.
#[derive(Debug, thiserror::Error)]
pub enum SerdeError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the value does not fit schema {id}: {source}")]
    Payload { id: i32, source: PayloadError },
    #[error("not in Confluent's wire format (no magic byte 0 and schema id)")]
    NotFramed,
    #[error("schema {0} is stored but does not parse, so it cannot encode or decode")]
    Unparsable(i32),
}

impl SchemaService {
    /// `value` encoded with the schema of `subject`'s version (`latest`: the newest live one) and framed with its id.
    pub fn encode(&self, subject: &str, version: VersionSel, value: &Value) -> Result<Vec<u8>, SerdeError> {
        let info = self.state().version(subject, version, false)?;
        let parsed = info.schema.parsed.clone().ok_or(SerdeError::Unparsable(info.schema.id))?;
        let payload = parsed.encode_json(value).map_err(|source| SerdeError::Payload { id: info.schema.id, source })?;
        Ok(wire::frame(info.schema.id, &payload))
    }

    /// A framed record decoded with the schema its id names: the id and the value as JSON.
    pub fn decode(&self, bytes: &[u8]) -> Result<(i32, Value), SerdeError> {
        let (id, payload) = wire::unframe(bytes).ok_or(SerdeError::NotFramed)?;
        let parsed = self.state().schema(id)?.parsed.clone().ok_or(SerdeError::Unparsable(id))?;
        let value = parsed.decode_json(payload).map_err(|source| SerdeError::Payload { id, source })?;
        Ok((id, value))
    }
}
