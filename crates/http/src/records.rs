//! Produce over HTTP as the Confluent REST Proxy v2 accepts it: `POST /topics/{topic}` and
//! `POST /topics/{topic}/partitions/{partition}` with `{"records": [{"key", "value", "partition"}]}`. Keys and values
//! are base64 under `application/vnd.kafka.binary.v2+json`, and any JSON under `application/vnd.kafka.json.v2+json` or
//! plain `application/json` (stored as their JSON text), and JSON serialized through the schema registry under
//! `application/vnd.kafka.{avro,jsonschema,protobuf}.v2+json` (see `schemas.rs`). Every record is validated (and
//! serialized) before any is written, so a bad request stores nothing; the answer lists each record's partition and
//! offset in request order.
//!
//! The request types here are both what a body is deserialized into and what the OpenAPI document shows for it. They
//! borrow from the body rather than copy it (`records` stays raw text until [`parse_as`] walks it, a record's base64
//! stays in place until it is decoded), so a request of a million tiny records builds no tree.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::ops::Range;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::Json;
use base64::Engine as _;
use serde::de::{self, Deserialize, Deserializer, Unexpected};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::ToSchema;
use weir_broker::{BrokerError, ProduceRecord};
use weir_security::Operation;

use crate::auth::Access;
use crate::body::{self, BodyError, Partition};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::media::{self, Format};
use crate::AppState;

/// A produce request in the binary format. Other top-level fields (the REST Proxy's schema ids) are ignored.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct BinaryProduceRequest<'a> {
    #[serde(borrow)]
    #[schema(value_type = Vec<BinaryRecord<'static>>)]
    pub records: Records<'a, BinaryRecord<'a>>,
}

/// One record of a binary produce request.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct BinaryRecord<'a> {
    /// base64; null or absent for no key.
    #[serde(borrow)]
    #[schema(value_type = Option<String>, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")]
    pub key: Option<Base64<'a>>,
    /// base64; null or absent for no value.
    #[serde(borrow)]
    #[schema(value_type = Option<String>, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")]
    pub value: Option<Base64<'a>>,
    /// Send to this partition instead of choosing by key.
    #[schema(value_type = Option<i32>, minimum = 0)]
    pub partition: Option<Partition>,
}

/// A produce request in the JSON format (also plain `application/json`): keys and values are any JSON.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct JsonProduceRequest<'a> {
    #[serde(borrow)]
    #[schema(value_type = Vec<JsonRecord<'static>>)]
    pub records: Records<'a, JsonRecord<'a>>,
}

/// One record of a JSON produce request.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct JsonRecord<'a> {
    /// Any JSON value, stored as its JSON text; null or absent for no key.
    #[serde(borrow)]
    #[schema(value_type = Option<Value>)]
    pub key: Option<&'a RawValue>,
    /// Any JSON value, stored as its JSON text; null or absent for no value.
    #[serde(borrow)]
    #[schema(value_type = Option<Value>)]
    pub value: Option<&'a RawValue>,
    /// Send to this partition instead of choosing by key.
    #[schema(value_type = Option<i32>, minimum = 0)]
    pub partition: Option<Partition>,
}

/// A produce request in a schema format (`avro`, `jsonschema`, `protobuf`): keys and values are JSON in the format's
/// JSON form, serialized with the schemas given by text (registered on the fly under the subject the topic's naming
/// strategy gives) or by id, and stored framed with their ids.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct SchemaProduceRequest<'a> {
    /// The keys' schema, as text; registered under the key's subject if it is not there yet.
    pub key_schema: Option<String>,
    /// The keys' schema, by id (instead of `key_schema`).
    pub key_schema_id: Option<i32>,
    /// The values' schema, as text.
    pub value_schema: Option<String>,
    /// The values' schema, by id (instead of `value_schema`).
    pub value_schema_id: Option<i32>,
    #[serde(borrow)]
    #[schema(value_type = Vec<JsonRecord<'static>>)]
    pub records: Records<'a, JsonRecord<'a>>,
}

/// The schemas a produce request gives (none in the binary and JSON formats).
#[derive(Debug, Default)]
pub(crate) struct GivenSchemas {
    pub key_schema: Option<String>,
    pub key_schema_id: Option<i32>,
    pub value_schema: Option<String>,
    pub value_schema_id: Option<i32>,
}

/// A produce request's `records`: the array, still as its raw text in the body, read one `R` at a time by
/// [`parse_as`] rather than all at once.
#[derive(Debug)]
pub struct Records<'a, R> {
    raw: &'a RawValue,
    record: PhantomData<fn() -> R>,
}

impl<'de: 'a, 'a, R> Deserialize<'de> for Records<'a, R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        match raw.get().as_bytes()[0] {
            b'[' => Ok(Records { raw, record: PhantomData }),
            first => Err(de::Error::invalid_type(Unexpected::Other(body::kind(first)), &"an array of records")),
        }
    }
}

/// A binary record's key or value: base64 text, borrowed from the body (base64 needs no escapes; a sender that
/// escapes `/` anyway gets its own copy).
#[derive(Debug)]
pub struct Base64<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Base64<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> de::Visitor<'de> for Text {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string or null")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_string()))
            }
        }
        d.deserialize_str(Text).map(Base64)
    }
}

/// One request type per format: which records it holds, how one becomes bytes, and the schemas it gives.
trait ProduceRequest<'a>: Deserialize<'a> {
    type Record: Deserialize<'a> + Record;
    fn split(self) -> (Records<'a, Self::Record>, GivenSchemas);
}

impl<'a> ProduceRequest<'a> for BinaryProduceRequest<'a> {
    type Record = BinaryRecord<'a>;
    fn split(self) -> (Records<'a, BinaryRecord<'a>>, GivenSchemas) {
        (self.records, GivenSchemas::default())
    }
}

impl<'a> ProduceRequest<'a> for JsonProduceRequest<'a> {
    type Record = JsonRecord<'a>;
    fn split(self) -> (Records<'a, JsonRecord<'a>>, GivenSchemas) {
        (self.records, GivenSchemas::default())
    }
}

/// Its records are read as the JSON format's (their keys and values kept as compact JSON text), then serialized with
/// the schemas (see `schemas.rs`).
impl<'a> ProduceRequest<'a> for SchemaProduceRequest<'a> {
    type Record = JsonRecord<'a>;
    fn split(self) -> (Records<'a, JsonRecord<'a>>, GivenSchemas) {
        let SchemaProduceRequest { key_schema, key_schema_id, value_schema, value_schema_id, records } = self;
        (records, GivenSchemas { key_schema, key_schema_id, value_schema, value_schema_id })
    }
}

/// A record as sent, turned into what is stored.
trait Record {
    /// Record `i`, its key and value appended to `data`.
    fn decode(self, i: usize, data: &mut Vec<u8>) -> Result<Parsed, ApiError>;
}

impl Record for BinaryRecord<'_> {
    fn decode(self, i: usize, data: &mut Vec<u8>) -> Result<Parsed, ApiError> {
        let mut field = |text: Option<Base64<'_>>, what: &str, code: ErrorCode| -> Result<_, ApiError> {
            let Some(Base64(text)) = text else { return Ok(None) };
            let start = data.len();
            LENIENT_BASE64
                .decode_vec(text.as_bytes(), data)
                .map_err(|e| ApiError::new(code, format!("records[{i}].{what} is not valid base64: {e}")))?;
            Ok(Some(start..data.len()))
        };
        Ok(Parsed {
            key: field(self.key, "key", ErrorCode::InvalidKey)?,
            value: field(self.value, "value", ErrorCode::InvalidValue)?,
            partition: self.partition.map(|p| p.0),
        })
    }
}

impl Record for JsonRecord<'_> {
    fn decode(self, i: usize, data: &mut Vec<u8>) -> Result<Parsed, ApiError> {
        // Stored as serde_json writes it (compact, escapes normalised), whatever the spacing of the request. The
        // tree lives only for this one value.
        let mut field = |raw: Option<&RawValue>, what: &str, code: ErrorCode| -> Result<_, ApiError> {
            let Some(raw) = raw else { return Ok(None) };
            let start = data.len();
            let v: Value = serde_json::from_str(raw.get())
                .map_err(|e| ApiError::new(code, format!("records[{i}].{what}: {e}")))?;
            serde_json::to_writer(&mut *data, &v)
                .map_err(|e| ApiError::internal(format!("cannot re-encode records[{i}].{what}: {e}")))?;
            Ok(Some(start..data.len()))
        };
        Ok(Parsed {
            key: field(self.key, "key", ErrorCode::InvalidKey)?,
            value: field(self.value, "value", ErrorCode::InvalidValue)?,
            partition: self.partition.map(|p| p.0),
        })
    }
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
pub(crate) struct Parsed {
    pub key: Option<Range<usize>>,
    pub value: Option<Range<usize>>,
    pub partition: Option<i32>,
}

/// Every record of a request, checked, with their keys and values decoded back to back into one buffer.
#[derive(Debug)]
pub(crate) struct ParsedRecords {
    pub records: Vec<Parsed>,
    pub data: Bytes,
    /// The schemas the request gives, for the schema formats.
    pub schemas: GivenSchemas,
}

impl ParsedRecords {
    pub fn bytes(&self, range: &Option<Range<usize>>) -> Option<Bytes> {
        range.as_ref().map(|r| self.data.slice(r.clone()))
    }
}

/// Standard base64 that, like Java's decoder behind the REST Proxy, ignores set bits after the last whole byte.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Checks a produce body and decodes its keys and values, refusing more than `max_records` records.
fn parse(format: Format, body: &[u8], max_records: usize) -> Result<ParsedRecords, ApiError> {
    match format {
        Format::Binary => parse_as::<BinaryProduceRequest<'_>>(body, max_records),
        Format::Json => parse_as::<JsonProduceRequest<'_>>(body, max_records),
        Format::Avro | Format::Jsonschema | Format::Protobuf => parse_as::<SchemaProduceRequest<'_>>(body, max_records),
    }
}

/// [`parse`] for the request type of one format.
///
/// Memory is the point here: a `serde_json::Value` tree costs several hundred bytes per `{"value":"aGk="}` (a map
/// node, two strings, a decoded buffer each), 50 times the 17 bytes on the wire, and glibc keeps most of it after the
/// request. So the body is walked in place: the request keeps `records` as its raw text, each record borrows its
/// fields from it, base64 is decoded straight into one buffer that the records then share as slices, and the walk
/// stops at the first record past the cap, before doing its work.
fn parse_as<'a, T: ProduceRequest<'a>>(body: &'a [u8], max_records: usize) -> Result<ParsedRecords, ApiError> {
    let request: T = body::object(body).map_err(|e| e.into_api(ErrorCode::UnprocessableEntity))?;
    let (records, schemas) = request.split();
    let mut walk =
        Walk::<T::Record> { max_records, records: Vec::new(), data: Vec::new(), failure: None, record: PhantomData };
    // The text was checked as JSON when the request was read, so the walk fails only where `failure` says why.
    let walked =
        de::Deserializer::deserialize_seq(&mut serde_json::Deserializer::from_str(records.raw.get()), &mut walk);
    if let Some(e) = walk.failure {
        return Err(e);
    }
    walked.map_err(|e| ApiError::new(ErrorCode::UnprocessableEntity, format!("records: {e}")))?;
    Ok(ParsedRecords { records: walk.records, data: Bytes::from(walk.data), schemas })
}

/// The state of [`parse_as`]'s walk over the records array.
struct Walk<R> {
    max_records: usize,
    records: Vec<Parsed>,
    data: Vec<u8>,
    /// Why the walk stopped, when it was a record's fault (serde's own error type cannot carry an `ApiError`).
    failure: Option<ApiError>,
    record: PhantomData<fn() -> R>,
}

impl<'de, R: Deserialize<'de> + Record> de::Visitor<'de> for &mut Walk<R> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let i = self.records.len();
            let checked = if i == self.max_records {
                Err(too_many_records(self.max_records))
            } else {
                body::object_str::<R>(raw.get())
                    .map_err(|e| record_error(i, e))
                    .and_then(|r| r.decode(i, &mut self.data))
            };
            match checked {
                Ok(r) => self.records.push(r),
                Err(e) => {
                    self.failure = Some(e);
                    return Err(de::Error::custom("a record was refused"));
                }
            }
        }
        Ok(())
    }
}

/// Record `i` does not fit its type: the REST Proxy's codes for a bad key or value, 42200 for the rest.
fn record_error(i: usize, e: BodyError) -> ApiError {
    let code = match e.field.as_str() {
        "key" => ErrorCode::InvalidKey,
        "value" => ErrorCode::InvalidValue,
        _ => ErrorCode::UnprocessableEntity,
    };
    e.within(&format!("records[{i}]")).into_api(code)
}

/// 413 for a request with more records than the server takes at once.
fn too_many_records(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::TooManyRecords,
        format!("a produce request may hold at most {max} records; split it into several requests"),
    )
}

/// Produce records to a topic (partition by key, or spread when keyless).
#[utoipa::path(
    post, path = "/topics/{topic}", tag = "produce",
    params(("topic" = String, Path, description = "Topic name", pattern = "^[a-zA-Z0-9._-]{1,249}$")),
    request_body(content(
        (BinaryProduceRequest<'_> = "application/vnd.kafka.binary.v2+json"),
        (JsonProduceRequest<'_> = "application/vnd.kafka.json.v2+json"),
        (JsonProduceRequest<'_> = "application/json"),
        (SchemaProduceRequest<'_> = "application/vnd.kafka.avro.v2+json"),
        (SchemaProduceRequest<'_> = "application/vnd.kafka.jsonschema.v2+json"),
        (SchemaProduceRequest<'_> = "application/vnd.kafka.protobuf.v2+json"),
    )),
    responses(
        (status = 403, description = "40301 not authorized to write to the topic (or to create it)", body = ErrorBody),
        (status = 200, description = "Each record's partition and offset, in request order", body = ProduceResponse),
        (status = 400, description = "Unreadable body", body = ErrorBody),
        (status = 404, description = "Unknown topic (40401) or partition (40402)", body = ErrorBody),
        (status = 413, description = "Body over the limit, or a record over max.message.bytes", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Type", body = ErrorBody),
        (status = 422, description = "Malformed JSON, base64 (42201 key, 42202 value) or field; in a schema format, keys or values without their schema (42201, 42202), a value that does not fit its schema (42203) or a schema refused (42205)", body = ErrorBody),
        (status = 503, description = "50303 the schema registry cannot answer", body = ErrorBody),
    )
)]
pub async fn produce_to_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    access: Access,
    request: Request,
) -> Result<Json<ProduceResponse>, ApiError> {
    produce(state, access, topic, None, request).await
}

/// Produce records to one partition.
#[utoipa::path(
    post, path = "/topics/{topic}/partitions/{partition}", tag = "produce",
    params(("topic" = String, Path, description = "Topic name", pattern = "^[a-zA-Z0-9._-]{1,249}$"), ("partition" = i32, Path, description = "Partition")),
    request_body(content(
        (BinaryProduceRequest<'_> = "application/vnd.kafka.binary.v2+json"),
        (JsonProduceRequest<'_> = "application/vnd.kafka.json.v2+json"),
        (JsonProduceRequest<'_> = "application/json"),
        (SchemaProduceRequest<'_> = "application/vnd.kafka.avro.v2+json"),
        (SchemaProduceRequest<'_> = "application/vnd.kafka.jsonschema.v2+json"),
        (SchemaProduceRequest<'_> = "application/vnd.kafka.protobuf.v2+json"),
    )),
    responses(
        (status = 403, description = "40301 not authorized to write to the topic (or to create it)", body = ErrorBody),
        (status = 200, description = "Each record's partition and offset, in request order", body = ProduceResponse),
        (status = 400, description = "Unreadable body or path", body = ErrorBody),
        (status = 404, description = "Unknown topic (40401) or partition (40402)", body = ErrorBody),
        (status = 413, description = "Body over the limit, or a record over max.message.bytes", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Type", body = ErrorBody),
        (status = 422, description = "Malformed JSON, base64 (42201 key, 42202 value) or field; in a schema format, keys or values without their schema (42201, 42202), a value that does not fit its schema (42203) or a schema refused (42205)", body = ErrorBody),
        (status = 503, description = "50303 the schema registry cannot answer", body = ErrorBody),
    )
)]
pub async fn produce_to_partition(
    State(state): State<AppState>,
    path: Result<Path<(String, i32)>, axum::extract::rejection::PathRejection>,
    access: Access,
    request: Request,
) -> Result<Json<ProduceResponse>, ApiError> {
    let Path((topic, partition)) = path.map_err(crate::topics::bad_path)?;
    produce(state, access, topic, Some(partition), request).await
}

/// Kafka's checks come first, before the body is read: WRITE on the topic, and CREATE (on the cluster or the topic)
/// when it is missing and would be created.
async fn produce(
    state: AppState,
    access: Access,
    topic_name: String,
    partition: Option<i32>,
    request: Request,
) -> Result<Json<ProduceResponse>, ApiError> {
    let started = Instant::now();
    access.topic(Operation::Write, &topic_name)?;
    if state.broker.config().auto_create_topics
        && matches!(state.broker.topic(&topic_name), Err(BrokerError::UnknownTopic(_)))
    {
        access.create_topic(&topic_name)?;
    }
    let format = media::produce_format(request.headers())?;
    let registry = match format.schema_format() {
        None => None,
        Some(schema_format) => Some((schema_format, crate::schemas::registry(&state.config, format)?)),
    };
    let body = body::read(Bytes::from_request(request, &()).await)?;
    let mut parsed = parse(format, &body, state.config.max_records_per_request)?;
    let topic = state.broker.topic_or_create(&topic_name)?;
    for r in &parsed.records {
        if let Some(p) = partition.or(r.partition) {
            topic.partition(p)?;
        }
    }
    let mut schema_ids = (None, None);
    if let Some((schema_format, registry)) = registry {
        let strategies = topic.validation().map(|v| (v.key_strategy, v.value_strategy)).unwrap_or_default();
        let serialized = crate::schemas::serialize(&**registry, schema_format, &topic_name, strategies, parsed).await?;
        schema_ids = (serialized.1, serialized.2);
        parsed = serialized.0;
    }
    // One send for the request: on a topic with schema validation, one refused record stores none of them.
    let acks = state.producer.send_all(
        parsed
            .records
            .iter()
            .map(|r| ProduceRecord {
                topic: topic_name.clone(),
                partition: partition.or(r.partition),
                key: parsed.bytes(&r.key),
                value: parsed.bytes(&r.value),
                ..Default::default()
            })
            .collect(),
    );
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
    Ok(Json(ProduceResponse {
        key_schema_id: schema_ids.0.map(i64::from),
        value_schema_id: schema_ids.1.map(i64::from),
        offsets,
    }))
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
        use ErrorCode::*;
        for (body, code, needle) in [
            (&br#"{"records":[{"value":"%%%"}]}"#[..], InvalidValue, "records[0].value"),
            (br#"{"records":[{"key":"!","value":"aA=="}]}"#, InvalidKey, "records[0].key"),
            (br#"{"records":[{"value":5}]}"#, InvalidValue, "base64 string"),
            (br#"{"records":[{"partition":-1}]}"#, UnprocessableEntity, "partition"),
            (br#"{"records":[{"partition":"1"}]}"#, UnprocessableEntity, "partition"),
            (br#"{"records":{}}"#, UnprocessableEntity, "array"),
            (br#"{"recs":[]}"#, UnprocessableEntity, "records"),
            (br#"[1]"#, UnprocessableEntity, "expected a JSON object"),
            (br#"{"records":null}"#, UnprocessableEntity, "records: invalid type: null, expected an array of records"),
            (br#"{"records":[{},1]}"#, UnprocessableEntity, "records[1]"),
            (b"{not json", UnprocessableEntity, "not valid JSON"),
            (br#"{"records":[{"value":"aGk="}"#, UnprocessableEntity, "not valid JSON"),
            (br#"{"records":[{},{},{},{}]}"#, TooManyRecords, "at most 3 records"),
        ] {
            let e = parse(Format::Binary, body, 3).err().unwrap();
            assert_eq!(e.error_code, code.code(), "{}", String::from_utf8_lossy(body));
            assert!(e.message.contains(needle), "{}: {}", String::from_utf8_lossy(body), e.message);
        }
    }

    /// A binary record's key and value are read in place: copied only when the sender escaped a character.
    #[test]
    fn base64_is_borrowed_from_the_body() {
        let r: BinaryRecord<'_> = body::object_str(r#"{"key":"aw==","value":"aGk\/"}"#).unwrap();
        assert!(matches!(r.key, Some(Base64(Cow::Borrowed("aw==")))), "{r:?}");
        assert!(matches!(r.value, Some(Base64(Cow::Owned(ref v))) if v == "aGk/"), "{r:?}");
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
