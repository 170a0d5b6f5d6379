//! Produce over HTTP as the Confluent REST Proxy v2 accepts it: `POST /topics/{topic}` and
//! `POST /topics/{topic}/partitions/{partition}` with `{"records": [{"key", "value", "partition"}]}`. Keys and values
//! are base64 under `application/vnd.kafka.binary.v2+json`, and any JSON under `application/vnd.kafka.json.v2+json` or
//! plain `application/json` (stored as their JSON text). Every record is validated before any is written, so a bad
//! request stores nothing; the answer lists each record's partition and offset in request order.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use weir_broker::ProduceRecord;

use crate::error::{ApiError, ErrorBody};
use crate::AppState;

/// How keys and values are embedded in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// base64 strings
    Binary,
    /// JSON values, stored as their JSON text
    Json,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Binary => "binary",
            Format::Json => "json",
        }
    }
}

pub const BINARY_V2: &str = "application/vnd.kafka.binary.v2+json";
pub const JSON_V2: &str = "application/vnd.kafka.json.v2+json";

/// The media type without parameters, lower-cased.
pub fn media_type(headers: &HeaderMap, name: axum::http::HeaderName) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

fn produce_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let expected = format!("{BINARY_V2}, {JSON_V2} or application/json");
    match media_type(headers, axum::http::header::CONTENT_TYPE).as_deref() {
        Some(BINARY_V2) => Ok(Format::Binary),
        Some(JSON_V2) | Some("application/json") => Ok(Format::Json),
        Some(other) => Err(ApiError::unsupported_media_type(other, &expected)),
        None => Err(ApiError::unsupported_media_type("(none)", &expected)),
    }
}

/// A produce request in the binary format. Other top-level fields (the REST Proxy's schema ids) are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // parsed by hand for field-level errors; these types document the shape
pub struct BinaryProduceRequest {
    pub records: Vec<BinaryRecord>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct BinaryRecord {
    /// base64; null or absent for no key.
    #[schema(pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")]
    pub key: Option<String>,
    /// base64; null or absent for no value.
    #[schema(pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")]
    pub value: Option<String>,
    /// Send to this partition instead of choosing by key.
    #[schema(minimum = 0)]
    pub partition: Option<i32>,
}

/// A produce request in the JSON format (also plain `application/json`): keys and values are any JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct JsonProduceRequest {
    pub records: Vec<JsonRecord>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct JsonRecord {
    /// Any JSON value, stored as its JSON text; null or absent for no key.
    #[schema(value_type = Option<Value>)]
    pub key: Option<Value>,
    /// Any JSON value, stored as its JSON text; null or absent for no value.
    #[schema(value_type = Option<Value>)]
    pub value: Option<Value>,
    #[schema(minimum = 0)]
    pub partition: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProduceResponse {
    pub key_schema_id: Option<i64>,
    pub value_schema_id: Option<i64>,
    pub offsets: Vec<RecordOffset>,
}

/// Where one record went, or why it did not.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordOffset {
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub error_code: Option<u32>,
    pub error: Option<String>,
}

struct Parsed {
    key: Option<Bytes>,
    value: Option<Bytes>,
    partition: Option<i32>,
}

fn embedded(format: Format, v: Option<&Value>, what: &str, i: usize, code: u32) -> Result<Option<Bytes>, ApiError> {
    match (format, v) {
        (_, None | Some(Value::Null)) => Ok(None),
        (Format::Binary, Some(Value::String(s))) => LENIENT_BASE64
            .decode(s.as_bytes())
            .map(|b| Some(Bytes::from(b)))
            .map_err(|e| ApiError::unprocessable(code, format!("records[{i}].{what} is not valid base64: {e}"))),
        (Format::Binary, Some(_)) => {
            Err(ApiError::unprocessable(code, format!("records[{i}].{what} must be a base64 string or null")))
        }
        (Format::Json, Some(v)) => Ok(Some(Bytes::from(serde_json::to_vec(v).unwrap_or_default()))),
    }
}

/// Standard base64 that, like Java's decoder behind the REST Proxy, ignores set bits after the last whole byte.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// An integral JSON number (`3` or `3.0`).
pub fn integer(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64))
}

fn parse(format: Format, body: &[u8]) -> Result<Vec<Parsed>, ApiError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::unprocessable(42200, format!("the body is not valid JSON: {e}")))?;
    let records = doc
        .get("records")
        .ok_or_else(|| ApiError::unprocessable(42200, "the body needs a \"records\" array"))?
        .as_array()
        .ok_or_else(|| ApiError::unprocessable(42200, "\"records\" must be an array"))?;
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let Some(obj) = r.as_object() else {
            return Err(ApiError::unprocessable(42200, format!("records[{i}] must be an object")));
        };
        let partition = match obj.get("partition") {
            None | Some(Value::Null) => None,
            // JSON Schema counts 3.0 as an integer; so does this.
            Some(p) => Some(integer(p).and_then(|p| i32::try_from(p).ok()).filter(|p| *p >= 0).ok_or_else(|| {
                ApiError::unprocessable(42200, format!("records[{i}].partition must be a non-negative integer"))
            })?),
        };
        out.push(Parsed {
            key: embedded(format, obj.get("key"), "key", i, 42201)?,
            value: embedded(format, obj.get("value"), "value", i, 42202)?,
            partition,
        });
    }
    Ok(out)
}

/// The body, or 413 when it is over the limit (axum's own answer would be plain text).
pub fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, 413, "the request body is larger than the server accepts")
        }
        other => ApiError::new(StatusCode::BAD_REQUEST, 400, format!("cannot read the request body: {other}")),
    })
}

/// Produce records to a topic (partition by key, or spread when keyless).
#[utoipa::path(
    post, path = "/topics/{topic}", tag = "produce",
    params(("topic" = String, Path, description = "Topic name", pattern = "^[a-zA-Z0-9._-]{1,249}$")),
    request_body(content(
        (BinaryProduceRequest = "application/vnd.kafka.binary.v2+json"),
        (JsonProduceRequest = "application/vnd.kafka.json.v2+json"),
        (JsonProduceRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "Each record's partition and offset, in request order", body = ProduceResponse),
        (status = 400, description = "Unreadable body", body = ErrorBody),
        (status = 404, description = "Unknown topic (40401) or partition (40402)", body = ErrorBody),
        (status = 413, description = "Body over the limit, or a record over max.message.bytes", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Type", body = ErrorBody),
        (status = 422, description = "Malformed JSON, base64 (42201 key, 42202 value) or field", body = ErrorBody),
    )
)]
pub async fn produce_to_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ProduceResponse>, ApiError> {
    produce(state, topic, None, headers, body).await
}

/// Produce records to one partition.
#[utoipa::path(
    post, path = "/topics/{topic}/partitions/{partition}", tag = "produce",
    params(("topic" = String, Path, description = "Topic name", pattern = "^[a-zA-Z0-9._-]{1,249}$"), ("partition" = i32, Path, description = "Partition")),
    request_body(content(
        (BinaryProduceRequest = "application/vnd.kafka.binary.v2+json"),
        (JsonProduceRequest = "application/vnd.kafka.json.v2+json"),
        (JsonProduceRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "Each record's partition and offset, in request order", body = ProduceResponse),
        (status = 400, description = "Unreadable body or path", body = ErrorBody),
        (status = 404, description = "Unknown topic (40401) or partition (40402)", body = ErrorBody),
        (status = 413, description = "Body over the limit, or a record over max.message.bytes", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Type", body = ErrorBody),
        (status = 422, description = "Malformed JSON, base64 (42201 key, 42202 value) or field", body = ErrorBody),
    )
)]
pub async fn produce_to_partition(
    State(state): State<AppState>,
    path: Result<Path<(String, i32)>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ProduceResponse>, ApiError> {
    let Path((topic, partition)) = path.map_err(crate::topics::bad_path)?;
    produce(state, topic, Some(partition), headers, body).await
}

async fn produce(
    state: AppState,
    topic_name: String,
    partition: Option<i32>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ProduceResponse>, ApiError> {
    let started = Instant::now();
    let format = produce_format(&headers)?;
    let body = body_or_error(body)?;
    let records = parse(format, &body)?;
    let topic = state.broker.topic_or_create(&topic_name)?;
    for r in &records {
        if let Some(p) = partition.or(r.partition) {
            topic.partition(p)?;
        }
    }
    let acks: Vec<_> = records
        .into_iter()
        .map(|r| {
            state.producer.send(ProduceRecord {
                topic: topic_name.clone(),
                partition: partition.or(r.partition),
                key: r.key,
                value: r.value,
                ..Default::default()
            })
        })
        .collect();
    let mut offsets = Vec::with_capacity(acks.len());
    let (mut count, mut bytes) = (0u64, 0u64);
    for ack in acks {
        offsets.push(match ack.await {
            Ok(meta) => {
                count += 1;
                RecordOffset {
                    partition: Some(meta.partition),
                    offset: Some(meta.offset),
                    error_code: None,
                    error: None,
                }
            }
            Err(e) => {
                let e = ApiError::from(&e);
                RecordOffset { partition: None, offset: None, error_code: Some(e.error_code), error: Some(e.message) }
            }
        });
    }
    bytes += body.len() as u64;
    crate::metrics::produced(&topic_name, count, bytes, started.elapsed());
    Ok(Json(ProduceResponse { key_schema_id: None, value_schema_id: None, offsets }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_field_by_field() {
        let ok =
            parse(Format::Binary, br#"{"records":[{"value":"aGVsbG8="},{"key":"aw==","value":null,"partition":2}]}"#)
                .unwrap();
        assert_eq!(ok[0].value.as_deref(), Some(&b"hello"[..]));
        assert_eq!((ok[1].key.as_deref(), ok[1].value.as_deref(), ok[1].partition), (Some(&b"k"[..]), None, Some(2)));
        let json = parse(Format::Json, br#"{"records":[{"key":{"id":1},"value":[1,"x"]}]}"#).unwrap();
        assert_eq!(json[0].key.as_deref(), Some(&br#"{"id":1}"#[..]));
        for (body, code, needle) in [
            (&br#"{"records":[{"value":"%%%"}]}"#[..], 42202, "records[0].value"),
            (br#"{"records":[{"key":"!","value":"aA=="}]}"#, 42201, "records[0].key"),
            (br#"{"records":[{"value":5}]}"#, 42202, "base64 string"),
            (br#"{"records":[{"partition":-1}]}"#, 42200, "partition"),
            (br#"{"records":{}}"#, 42200, "array"),
            (br#"{"recs":[]}"#, 42200, "records"),
            (br#"{"records":[1]}"#, 42200, "records[0]"),
            (b"{not json", 42200, "not valid JSON"),
        ] {
            let e = parse(Format::Binary, body).err().unwrap();
            assert_eq!(e.error_code, code, "{}", String::from_utf8_lossy(body));
            assert!(e.message.contains(needle), "{}: {}", String::from_utf8_lossy(body), e.message);
        }
    }
}
