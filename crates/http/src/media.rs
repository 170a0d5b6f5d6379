//! The REST Proxy v2 media types and what each route makes of them: which embedded format a produce body's
//! `Content-Type` means, which one a fetch's `Accept` asks for, and the JSON types the consumer routes take.

use axum::http::header::{self, HeaderName};
use axum::http::HeaderMap;

use crate::error::ApiError;
use crate::schemas::SchemaFormat;

/// Produce bodies and fetched records with keys and values as base64 strings.
pub const BINARY_V2: &str = "application/vnd.kafka.binary.v2+json";
/// Produce bodies and fetched records with keys and values as any JSON.
pub const JSON_V2: &str = "application/vnd.kafka.json.v2+json";
/// Produce bodies and fetched records with keys and values as Avro's JSON encoding, stored framed with a schema id.
pub const AVRO_V2: &str = "application/vnd.kafka.avro.v2+json";
/// Keys and values as JSON checked against a JSON Schema, stored framed with its id.
pub const JSONSCHEMA_V2: &str = "application/vnd.kafka.jsonschema.v2+json";
/// Keys and values as Protobuf's JSON mapping, stored as Protobuf framed with the schema id.
pub const PROTOBUF_V2: &str = "application/vnd.kafka.protobuf.v2+json";
/// The consumer routes' bodies, which embed no keys or values.
pub const V2: &str = "application/vnd.kafka.v2+json";
/// Taken wherever a v2 JSON type is (as the JSON format for produce bodies).
pub const JSON: &str = "application/json";

/// How keys and values are embedded in JSON: base64 strings (`binary`), any JSON stored as its JSON text (`json`),
/// or JSON serialized through the schema registry (`avro`, `jsonschema`, `protobuf`; see `schemas.rs`). A consumer
/// instance's `format` setting names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
// `rename_all` names the variants in the OpenAPI document; `try_from` reads them, so that a value of the wrong type
// is answered "expected a string" (serde_json's own enum reading says only "expected value").
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Format {
    Binary,
    Json,
    Avro,
    Jsonschema,
    Protobuf,
}

impl TryFrom<String> for Format {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "binary" => Ok(Format::Binary),
            "json" => Ok(Format::Json),
            "avro" => Ok(Format::Avro),
            "jsonschema" => Ok(Format::Jsonschema),
            "protobuf" => Ok(Format::Protobuf),
            _ => Err(format!("unsupported format {s:?}: use binary, json, avro, jsonschema or protobuf")),
        }
    }
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Binary => "binary",
            Format::Json => "json",
            Format::Avro => "avro",
            Format::Jsonschema => "jsonschema",
            Format::Protobuf => "protobuf",
        }
    }

    /// The schema format behind it, for the formats that go through the schema registry.
    pub fn schema_format(self) -> Option<SchemaFormat> {
        match self {
            Format::Binary | Format::Json => None,
            Format::Avro => Some(SchemaFormat::Avro),
            Format::Jsonschema => Some(SchemaFormat::JsonSchema),
            Format::Protobuf => Some(SchemaFormat::Protobuf),
        }
    }

    /// The media type of fetched records in this format.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Binary => BINARY_V2,
            Format::Json => JSON_V2,
            Format::Avro => AVRO_V2,
            Format::Jsonschema => JSONSCHEMA_V2,
            Format::Protobuf => PROTOBUF_V2,
        }
    }
}

/// The media type of header `name` without parameters, lower-cased.
pub fn media_type(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// The format of a produce body, from its `Content-Type` (plain `application/json` is the JSON format); 415 for
/// any other type or none.
pub fn produce_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    match media_type(headers, header::CONTENT_TYPE).as_deref() {
        Some(BINARY_V2) => Ok(Format::Binary),
        Some(JSON_V2) | Some(JSON) => Ok(Format::Json),
        Some(AVRO_V2) => Ok(Format::Avro),
        Some(JSONSCHEMA_V2) => Ok(Format::Jsonschema),
        Some(PROTOBUF_V2) => Ok(Format::Protobuf),
        other => Err(ApiError::unsupported_media_type(
            other.unwrap_or("(none)"),
            &format!("{BINARY_V2}, {JSON_V2}, {JSON}, {AVRO_V2}, {JSONSCHEMA_V2} or {PROTOBUF_V2}"),
        )),
    }
}

/// The format a fetch's `Accept` asks for, if it names one (anything else, `*/*` included, takes the instance's).
pub fn accepted_format(headers: &HeaderMap) -> Option<Format> {
    match media_type(headers, header::ACCEPT).as_deref() {
        Some(BINARY_V2) => Some(Format::Binary),
        Some(JSON_V2) => Some(Format::Json),
        Some(AVRO_V2) => Some(Format::Avro),
        Some(JSONSCHEMA_V2) => Some(Format::Jsonschema),
        Some(PROTOBUF_V2) => Some(Format::Protobuf),
        _ => None,
    }
}

/// A consumer route's body must be `application/vnd.kafka.v2+json` or `application/json`; 415 otherwise. An empty
/// body (a commit of everything fetched) needs no type.
pub fn check_v2_json(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    match media_type(headers, header::CONTENT_TYPE).as_deref() {
        Some(V2) | Some(JSON) => Ok(()),
        other => Err(ApiError::unsupported_media_type(other.unwrap_or("(none)"), &format!("{V2} or {JSON}"))),
    }
}
