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
use serde_json::value::RawValue;
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

/// One record, checked: its key and value are ranges of the request's one decoded buffer (see [`parse`]).
#[derive(Debug)]
struct Parsed {
    key: Option<std::ops::Range<usize>>,
    value: Option<std::ops::Range<usize>>,
    partition: Option<i32>,
}

/// Every record of a request, checked, with their keys and values decoded back to back into one buffer.
#[derive(Debug)]
struct ParsedRecords {
    records: Vec<Parsed>,
    data: Bytes,
}

impl ParsedRecords {
    fn bytes(&self, range: &Option<std::ops::Range<usize>>) -> Option<Bytes> {
        range.as_ref().map(|r| self.data.slice(r.clone()))
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

/// The top level of a produce body: only `records` matters (the REST Proxy's schema ids and anything else are
/// skipped), kept as its raw text to be walked record by record.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    records: Option<&'a RawValue>,
}

/// One record as sent, each field still raw JSON text until it is checked.
#[derive(Deserialize)]
struct WireRecord<'a> {
    #[serde(borrow, default)]
    key: Option<&'a RawValue>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(borrow, default)]
    partition: Option<&'a RawValue>,
}

/// Checks a produce body and decodes its keys and values, refusing more than `max_records` records.
///
/// Memory is the point here: a `serde_json::Value` tree costs several hundred bytes per `{"value":"aGk="}` (a map
/// node, two strings, a decoded buffer each), 50 times the 17 bytes on the wire, and glibc keeps most of it after the
/// request. So the body is walked in place: the envelope and each record borrow their fields from it as raw text,
/// base64 is decoded straight into one buffer that the records then share as slices, and the walk stops at the first
/// record past the cap, before doing its work.
fn parse(format: Format, body: &[u8], max_records: usize) -> Result<ParsedRecords, ApiError> {
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::unprocessable(42200, "the body needs a \"records\" array"),
        _ => ApiError::unprocessable(42200, format!("the body is not valid JSON: {e}")),
    })?;
    let records =
        envelope.records.ok_or_else(|| ApiError::unprocessable(42200, "the body needs a \"records\" array"))?;
    if !records.get().starts_with('[') {
        return Err(ApiError::unprocessable(42200, "\"records\" must be an array"));
    }
    let mut walk = Walk { format, max_records, records: Vec::new(), data: Vec::new(), failure: None };
    // The text was checked as JSON when the envelope was read, so the walk fails only where `failure` says why.
    let walked =
        serde::Deserializer::deserialize_seq(&mut serde_json::Deserializer::from_str(records.get()), &mut walk);
    if let Some(e) = walk.failure {
        return Err(e);
    }
    walked.map_err(|e| ApiError::unprocessable(42200, format!("\"records\": {e}")))?;
    Ok(ParsedRecords { records: walk.records, data: Bytes::from(walk.data) })
}

/// The state of [`parse`]'s walk over the records array.
struct Walk {
    format: Format,
    max_records: usize,
    records: Vec<Parsed>,
    data: Vec<u8>,
    /// Why the walk stopped, when it was a record's fault (serde's own error type cannot carry an `ApiError`).
    failure: Option<ApiError>,
}

impl<'de> serde::de::Visitor<'de> for &mut Walk {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let i = self.records.len();
            let checked = if i == self.max_records {
                Err(too_many_records(self.max_records))
            } else {
                record(self.format, raw, i, &mut self.data)
            };
            match checked {
                Ok(r) => self.records.push(r),
                Err(e) => {
                    self.failure = Some(e);
                    return Err(serde::de::Error::custom("a record was refused"));
                }
            }
        }
        Ok(())
    }
}

/// 413 for a request with more records than the server takes at once.
fn too_many_records(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        41302,
        format!("a produce request may hold at most {max} records; split it into several requests"),
    )
}

/// Checks record `i` and appends its key and value to `data`.
fn record(format: Format, raw: &RawValue, i: usize, data: &mut Vec<u8>) -> Result<Parsed, ApiError> {
    if !raw.get().starts_with('{') {
        return Err(ApiError::unprocessable(42200, format!("records[{i}] must be an object")));
    }
    let r: WireRecord<'_> =
        serde_json::from_str(raw.get()).map_err(|e| ApiError::unprocessable(42200, format!("records[{i}]: {e}")))?;
    let partition = match r.partition.map(RawValue::get) {
        None | Some("null") => None,
        // JSON Schema counts 3.0 as an integer; so does this.
        Some(p) => Some(
            serde_json::from_str::<Value>(p)
                .ok()
                .as_ref()
                .and_then(integer)
                .and_then(|p| i32::try_from(p).ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    ApiError::unprocessable(42200, format!("records[{i}].partition must be a non-negative integer"))
                })?,
        ),
    };
    Ok(Parsed {
        key: embedded(format, r.key, "key", i, 42201, data)?,
        value: embedded(format, r.value, "value", i, 42202, data)?,
        partition,
    })
}

/// Decodes a key or value (base64 text, or any JSON stored as its compact text) onto the end of `data`.
fn embedded(
    format: Format,
    raw: Option<&RawValue>,
    what: &str,
    i: usize,
    code: u32,
    data: &mut Vec<u8>,
) -> Result<Option<std::ops::Range<usize>>, ApiError> {
    let Some(raw) = raw.map(RawValue::get).filter(|r| *r != "null") else { return Ok(None) };
    let start = data.len();
    match format {
        Format::Binary => {
            if !raw.starts_with('"') {
                return Err(ApiError::unprocessable(
                    code,
                    format!("records[{i}].{what} must be a base64 string or null"),
                ));
            }
            // base64 needs no escapes, so the text between the quotes is the string; a sender that escapes `/`
            // anyway is read through serde.
            let unescaped;
            let text = if raw.contains('\\') {
                unescaped = serde_json::from_str::<String>(raw)
                    .map_err(|e| ApiError::unprocessable(code, format!("records[{i}].{what}: {e}")))?;
                unescaped.as_str()
            } else {
                &raw[1..raw.len() - 1]
            };
            LENIENT_BASE64
                .decode_vec(text.as_bytes(), data)
                .map_err(|e| ApiError::unprocessable(code, format!("records[{i}].{what} is not valid base64: {e}")))?;
        }
        // Stored as serde_json writes it (compact, escapes normalised), as before this parser, whatever the spacing
        // of the request. The tree lives only for this one value.
        Format::Json => {
            let v: Value = serde_json::from_str(raw)
                .map_err(|e| ApiError::unprocessable(code, format!("records[{i}].{what}: {e}")))?;
            serde_json::to_writer(&mut *data, &v)
                .map_err(|e| ApiError::internal(format!("cannot re-encode records[{i}].{what}: {e}")))?;
        }
    }
    Ok(Some(start..data.len()))
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
    let parsed = parse(format, &body, state.config.max_records_per_request)?;
    let topic = state.broker.topic_or_create(&topic_name)?;
    for r in &parsed.records {
        if let Some(p) = partition.or(r.partition) {
            topic.partition(p)?;
        }
    }
    let acks: Vec<_> = parsed
        .records
        .iter()
        .map(|r| {
            state.producer.send(ProduceRecord {
                topic: topic_name.clone(),
                partition: partition.or(r.partition),
                key: parsed.bytes(&r.key),
                value: parsed.bytes(&r.value),
                ..Default::default()
            })
        })
        .collect();
    let body_len = body.len() as u64;
    // The body and the parse are no longer needed while the records are written.
    drop((body, parsed));
    let mut offsets = Vec::with_capacity(acks.len());
    let mut count = 0u64;
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
    crate::metrics::produced(&topic_name, count, body_len, started.elapsed());
    Ok(Json(ProduceResponse { key_schema_id: None, value_schema_id: None, offsets }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(p: &ParsedRecords) -> Vec<(Option<Bytes>, Option<Bytes>, Option<i32>)> {
        p.records.iter().map(|r| (p.bytes(&r.key), p.bytes(&r.value), r.partition)).collect()
    }

    #[test]
    fn bodies_are_checked_field_by_field() {
        let body = br#"{"key_schema_id":null,"records":[{"value":"aGVsbG8="},{"key":"aw==","value":null,"partition":2},
            {"value":"aGk\/","partition":3.0}]}"#;
        let ok = values(&parse(Format::Binary, body, 10).unwrap());
        assert_eq!(ok[0], (None, Some(Bytes::from_static(b"hello")), None));
        assert_eq!(ok[1], (Some(Bytes::from_static(b"k")), None, Some(2)));
        assert_eq!(ok[2], (None, Some(Bytes::from_static(b"hi?")), Some(3)), "an escaped / is still base64");
        // JSON values are stored as their compact text, however they were spaced.
        let json = parse(Format::Json, br#"{"records":[{"key": { "id" : 1 },"value":[1, "x"]}, {"value":"s"}]}"#, 10);
        let json = values(&json.unwrap());
        assert_eq!(json[0].0.as_deref(), Some(&br#"{"id":1}"#[..]));
        assert_eq!(json[0].1.as_deref(), Some(&br#"[1,"x"]"#[..]));
        assert_eq!(json[1].1.as_deref(), Some(&br#""s""#[..]));
        for (body, code, needle) in [
            (&br#"{"records":[{"value":"%%%"}]}"#[..], 42202, "records[0].value"),
            (br#"{"records":[{"key":"!","value":"aA=="}]}"#, 42201, "records[0].key"),
            (br#"{"records":[{"value":5}]}"#, 42202, "base64 string"),
            (br#"{"records":[{"partition":-1}]}"#, 42200, "partition"),
            (br#"{"records":[{"partition":"1"}]}"#, 42200, "partition"),
            (br#"{"records":{}}"#, 42200, "array"),
            (br#"{"recs":[]}"#, 42200, "records"),
            (br#"[1]"#, 42200, "records"),
            (br#"{"records":[{},1]}"#, 42200, "records[1]"),
            (b"{not json", 42200, "not valid JSON"),
            (br#"{"records":[{"value":"aGk="}"#, 42200, "not valid JSON"),
            (br#"{"records":[{},{},{},{}]}"#, 41302, "at most 3 records"),
        ] {
            let e = parse(Format::Binary, body, 3).err().unwrap();
            assert_eq!(e.error_code, code, "{}", String::from_utf8_lossy(body));
            assert!(e.message.contains(needle), "{}: {}", String::from_utf8_lossy(body), e.message);
        }
    }

    /// Every key and value of a request lives in one buffer, whatever the number of records.
    #[test]
    fn records_share_one_buffer() {
        let body = format!("{{\"records\":[{}]}}", vec![r#"{"key":"aw==","value":"aGk="}"#; 1000].join(","));
        let p = parse(Format::Binary, body.as_bytes(), 1000).unwrap();
        assert_eq!(p.records.len(), 1000);
        assert_eq!(p.data.len(), 3000, "one key byte and two value bytes a record, back to back");
        let v = p.bytes(&p.records[999].value).unwrap();
        assert_eq!((&v[..], v.as_ptr()), (&b"hi"[..], p.data[2998..].as_ptr()), "a slice of the buffer, not a copy");
    }
}
