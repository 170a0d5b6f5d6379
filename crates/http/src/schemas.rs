//! The REST Proxy's schema formats (`avro`, `jsonschema`, `protobuf`): keys and values sent and fetched as JSON, stored
//! in Confluent's wire format (magic byte 0, the schema id, the payload in the schema's encoding).
//!
//! The schema registry sits above this crate (it keeps its state through the runtime's Bus and serves its own API),
//! so the proxy asks it through [`EmbeddedSchemas`], which weir-schema implements and the binary installs in
//! [`HttpConfig::schemas`](crate::HttpConfig::schemas). Without one, these formats are refused with a message that
//! says so.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use weir_broker::{ConsumedRecord, Side, SubjectNameStrategy};

use crate::error::{ApiError, ErrorCode};
use crate::media::Format;
use crate::records::{GivenSchemas, Parsed, ParsedRecords};
use crate::HttpConfig;

/// A schema format of the REST Proxy, and of the registry's `schemaType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchemaFormat {
    Avro,
    JsonSchema,
    Protobuf,
}

/// The schema a produce request gives for its keys or its values.
#[derive(Clone, Copy, Debug)]
pub enum SchemaGiven<'a> {
    /// `key_schema_id` / `value_schema_id`: a registered schema.
    Id(i32),
    /// `key_schema` / `value_schema`: a schema's text, registered (or found) under the subject the topic's naming
    /// strategy gives, as the REST Proxy registers on the fly.
    Text(&'a str),
}

/// Why a schema could not be resolved, a value serialized or a record deserialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// The schema given does not parse, is unknown, is of another format, or the registry refused it (incompatible
    /// with the subject's versions, the subject read-only).
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// A value that does not fit its schema.
    #[error("Conversion of JSON to Object failed: {0}")]
    Conversion(String),
    /// A stored record that its schema cannot read (or not in the wire format at all).
    #[error("{0}")]
    Deserialization(String),
    /// The registry could not answer (its topic unreachable, a write not read back in time).
    #[error("the schema registry: {0}")]
    Unavailable(String),
}

impl EmbedError {
    /// The proxy's answer: 42205 for a schema, 42203 for a value (as Confluent's REST Proxy answers), 50002 for a
    /// stored record that cannot be read, 503 when the registry cannot answer.
    pub fn into_api(self, what: &str) -> ApiError {
        let code = match &self {
            EmbedError::InvalidSchema(_) => ErrorCode::InvalidSchema,
            EmbedError::Conversion(_) => ErrorCode::JsonConversion,
            EmbedError::Deserialization(_) => ErrorCode::Deserialization,
            EmbedError::Unavailable(_) => ErrorCode::RegistryUnavailable,
        };
        ApiError::new(code, if what.is_empty() { self.to_string() } else { format!("{what}: {self}") })
    }
}

/// What the schema formats need of a schema registry.
#[async_trait]
pub trait EmbeddedSchemas: Send + Sync + std::fmt::Debug {
    /// The id of the schema for one side of a produce request to `topic`: an id checked to be registered and of
    /// `format`, or a text registered under the subject `strategy` names (its existing id when it is there already).
    async fn resolve(
        &self,
        format: SchemaFormat,
        topic: &str,
        side: Side,
        strategy: SubjectNameStrategy,
        given: SchemaGiven<'_>,
    ) -> Result<i32, EmbedError>;

    /// `value` (the format's JSON form) encoded with schema `id` and framed with it. `id` came from
    /// [`resolve`](Self::resolve).
    fn encode(&self, id: i32, value: &Value) -> Result<Vec<u8>, EmbedError>;

    /// A stored key or value, framed with its schema id, decoded to the format's JSON form; one that is not framed,
    /// names an unknown id or does not fit its schema is a [`EmbedError::Deserialization`].
    async fn decode(&self, bytes: &[u8]) -> Result<Value, EmbedError>;
}

/// The registry a schema format needs; 415 when this weir runs without one.
pub(crate) fn registry(config: &HttpConfig, format: Format) -> Result<&Arc<dyn EmbeddedSchemas>, ApiError> {
    config.schemas.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "the {} format needs the schema registry, which this weir runs without (--schema-registry-listen none)",
                format.name()
            ),
        )
    })
}

/// A schema-format request's records (keys and values still their JSON text) serialized with the schemas it gives:
/// the records as they will be stored, and the key and value schema ids. Every record is serialized before any is
/// stored, so one that does not fit stores none.
pub(crate) async fn serialize(
    registry: &dyn EmbeddedSchemas,
    format: SchemaFormat,
    topic: &str,
    (key_strategy, value_strategy): (SubjectNameStrategy, SubjectNameStrategy),
    parsed: ParsedRecords,
) -> Result<(ParsedRecords, Option<i32>, Option<i32>), ApiError> {
    let has_keys = parsed.records.iter().any(|r| r.key.is_some());
    let has_values = parsed.records.iter().any(|r| r.value.is_some());
    let (given, ctx) = (&parsed.schemas, (registry, format, topic));
    let key_id = if has_keys {
        Some(side_id(ctx, Side::Key, key_strategy, given.key_schema_id, given.key_schema.as_deref()).await?)
    } else {
        None
    };
    let value_id = if has_values {
        Some(side_id(ctx, Side::Value, value_strategy, given.value_schema_id, given.value_schema.as_deref()).await?)
    } else {
        None
    };
    let mut data = Vec::with_capacity(parsed.data.len() + parsed.records.len() * 10);
    let mut records = Vec::with_capacity(parsed.records.len());
    for (i, r) in parsed.records.iter().enumerate() {
        let mut field = |range: &Option<Range<usize>>, id: Option<i32>, what: &str| -> Result<_, ApiError> {
            let (Some(range), Some(id)) = (range, id) else { return Ok(None) };
            let what = format!("records[{i}].{what}");
            // The walk stored it as compact JSON text, so it parses.
            let value: Value = serde_json::from_slice(&parsed.data[range.clone()])
                .map_err(|e| ApiError::internal(format!("{what} no longer parses: {e}")))?;
            let framed = registry.encode(id, &value).map_err(|e| e.into_api(&what))?;
            let start = data.len();
            data.extend_from_slice(&framed);
            Ok(Some(start..data.len()))
        };
        records.push(Parsed {
            key: field(&r.key, key_id, "key")?,
            value: field(&r.value, value_id, "value")?,
            partition: r.partition,
        });
    }
    let serialized = ParsedRecords { records, data: Bytes::from(data), schemas: GivenSchemas::default() };
    Ok((serialized, key_id, value_id))
}

/// The schema id for the keys or the values of a request that has some: by id, or by text (the id first, as
/// Confluent's proxy takes it); 42201 or 42202 when the request gives neither.
async fn side_id(
    (registry, format, topic): (&dyn EmbeddedSchemas, SchemaFormat, &str),
    side: Side,
    strategy: SubjectNameStrategy,
    id: Option<i32>,
    text: Option<&str>,
) -> Result<i32, ApiError> {
    let (given, what) = match (id, text) {
        (Some(id), _) => (SchemaGiven::Id(id), format!("{side}_schema_id")),
        (None, Some(text)) => (SchemaGiven::Text(text), format!("{side}_schema")),
        (None, None) => {
            let (code, plural) = match side {
                Side::Key => (ErrorCode::InvalidKey, "keys"),
                Side::Value => (ErrorCode::InvalidValue, "values"),
            };
            return Err(ApiError::new(
                code,
                format!("Request includes {plural} but does not include {side}_schema or {side}_schema_id"),
            ));
        }
    };
    registry.resolve(format, topic, side, strategy, given).await.map_err(|e| e.into_api(&what))
}

/// Fetched records' keys and values decoded, in order, up to the first that cannot be: the decoded ones (keys and
/// values as JSON) and, when one failed, why (naming its partition and offset).
pub(crate) async fn deserialize(
    registry: &dyn EmbeddedSchemas,
    records: &[ConsumedRecord],
) -> (Vec<(Option<Value>, Option<Value>)>, Option<ApiError>) {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let decoded = async {
            let key = decode_side(registry, r, r.key.as_deref(), Side::Key).await?;
            let value = decode_side(registry, r, r.value.as_deref(), Side::Value).await?;
            Ok::<_, ApiError>((key, value))
        };
        match decoded.await {
            Ok(kv) => out.push(kv),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

async fn decode_side(
    registry: &dyn EmbeddedSchemas,
    r: &ConsumedRecord,
    bytes: Option<&[u8]>,
    side: Side,
) -> Result<Option<Value>, ApiError> {
    let Some(bytes) = bytes else { return Ok(None) };
    registry.decode(bytes).await.map(Some).map_err(|e| {
        ApiError::new(
            ErrorCode::Deserialization,
            format!(
                "Error deserializing the {side} of {}/{} at offset {}: {e}; a consumer instance in the binary format \
                 reads it as it is",
                r.topic, r.partition, r.offset
            ),
        )
    })
}
