//! The three schema formats behind one interface: parse a schema with its references, give its normalized form (the
//! same schema written two ways normalizes to one text, so it gets one id), say why data written with one schema
//! cannot be read with another, and move payloads between JSON and the format's binary encoding (the REST Proxy's
//! embedded formats, `weir produce --schema`, full validation on the broker).

use serde::{Deserialize, Serialize};

use crate::avro::AvroSchema;
use crate::json::JsonSchema;
use crate::protobuf::ProtobufSchema;

/// A schema's format, spelled as the registry's `schemaType` field spells it (absent means AVRO).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    #[default]
    Avro,
    Json,
    Protobuf,
}

impl SchemaType {
    pub const ALL: [SchemaType; 3] = [SchemaType::Avro, SchemaType::Json, SchemaType::Protobuf];

    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }
}

impl std::fmt::Display for SchemaType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SchemaType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "AVRO" => Ok(SchemaType::Avro),
            "JSON" => Ok(SchemaType::Json),
            "PROTOBUF" => Ok(SchemaType::Protobuf),
            _ => Err(format!("unknown schema type {s:?} (AVRO, JSON or PROTOBUF)")),
        }
    }
}

/// A schema another one refers to, resolved by the registry: the name the referring schema uses for it (for Avro
/// the full name of a type it defines, for JSON Schema the `$ref` URL, for Protobuf the import path) and its text.
/// A schema's dependencies are given flattened, every transitive one once, each after those it depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub schema: String,
}

/// A schema that does not parse, with the parser's message (and the position, where the parser gives one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSchema {
    pub message: String,
}

impl InvalidSchema {
    pub fn new(message: impl Into<String>) -> Self {
        InvalidSchema { message: message.into() }
    }
}

/// A payload that does not fit its schema (JSON to encode, or bytes to decode).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PayloadError {
    pub message: String,
}

impl PayloadError {
    pub fn new(message: impl Into<String>) -> Self {
        PayloadError { message: message.into() }
    }
}

/// A parsed schema of any format.
#[derive(Debug, Clone)]
pub enum Parsed {
    Avro(AvroSchema),
    Json(JsonSchema),
    Protobuf(ProtobufSchema),
}

impl Parsed {
    pub fn parse(schema_type: SchemaType, text: &str, dependencies: &[Dependency]) -> Result<Parsed, InvalidSchema> {
        Ok(match schema_type {
            SchemaType::Avro => Parsed::Avro(AvroSchema::parse(text, dependencies)?),
            SchemaType::Json => Parsed::Json(JsonSchema::parse(text, dependencies)?),
            SchemaType::Protobuf => Parsed::Protobuf(ProtobufSchema::parse(text, dependencies)?),
        })
    }

    pub fn schema_type(&self) -> SchemaType {
        match self {
            Parsed::Avro(_) => SchemaType::Avro,
            Parsed::Json(_) => SchemaType::Json,
            Parsed::Protobuf(_) => SchemaType::Protobuf,
        }
    }

    /// The normalized text: two writings of one schema give the same text.
    pub fn normalized(&self) -> String {
        match self {
            Parsed::Avro(s) => s.normalized(),
            Parsed::Json(s) => s.normalized(),
            Parsed::Protobuf(s) => s.normalized(),
        }
    }

    /// The record name RecordNameStrategy and TopicRecordNameStrategy use: an Avro record's full name, a Protobuf
    /// file's first message's full name, a JSON Schema's `title`.
    pub fn record_name(&self) -> Option<String> {
        match self {
            Parsed::Avro(s) => s.record_name(),
            Parsed::Json(s) => s.record_name(),
            Parsed::Protobuf(s) => s.record_name(),
        }
    }

    /// Why data written with `writer` cannot be read with `reader`, one sentence each; empty when it can. Schemas
    /// of different formats are never compatible.
    pub fn incompatibilities(reader: &Parsed, writer: &Parsed) -> Vec<String> {
        match (reader, writer) {
            (Parsed::Avro(r), Parsed::Avro(w)) => AvroSchema::incompatibilities(r, w),
            (Parsed::Json(r), Parsed::Json(w)) => JsonSchema::incompatibilities(r, w),
            (Parsed::Protobuf(r), Parsed::Protobuf(w)) => ProtobufSchema::incompatibilities(r, w),
            _ => vec![format!(
                "a {} schema cannot read data written with a {} schema",
                reader.schema_type(),
                writer.schema_type()
            )],
        }
    }

    /// A JSON value as the payload this schema's format writes (after Confluent's 5-byte header; for Protobuf it
    /// starts with the message indexes).
    pub fn encode_json(&self, value: &serde_json::Value) -> Result<Vec<u8>, PayloadError> {
        match self {
            Parsed::Avro(s) => s.encode_json(value),
            Parsed::Json(s) => s.encode_json(value),
            Parsed::Protobuf(s) => s.encode_json(value),
        }
    }

    /// [`decode_json`](Self::decode_json), with Avro's unions untagged: the JSON a serde type reads.
    pub fn decode_plain_json(&self, payload: &[u8]) -> Result<serde_json::Value, PayloadError> {
        match self {
            Parsed::Avro(s) => s.decode_plain_json(payload),
            other => other.decode_json(payload),
        }
    }

    /// A payload (after Confluent's 5-byte header) read with this schema, as JSON; an error when it does not fit.
    pub fn decode_json(&self, payload: &[u8]) -> Result<serde_json::Value, PayloadError> {
        match self {
            Parsed::Avro(s) => s.decode_json(payload),
            Parsed::Json(s) => s.decode_json(payload),
            Parsed::Protobuf(s) => s.decode_json(payload),
        }
    }
}
