//! REST Proxy v2 consumer instances: an HTTP client creates a named member of a group, subscribes it to topics, and
//! fetches and commits through it. Each instance is one group member of the embedded broker, so it shares its group
//! with Kafka-protocol and in-process members. The reaper keeps idle members' sessions alive between requests (what
//! Kafka's background heartbeat does) and closes instances unused for longer than the instance timeout.
//!
//! Under the ACLs each route is what a Kafka consumer would do: every instance route acts as a member of its group
//! (READ on the group), subscribing and fetching read the topics (READ on each), and a commit needs READ on the group
//! and on each topic committed. An instance belongs to the principal that created it: to anyone else it does not
//! exist (404), so one user cannot read through, commit for or close another's consumer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use weir_broker::group::TopicPartition;
use weir_broker::{BrokerError, ConsumedRecord, Consumer, ConsumerConfig, OffsetReset};
use weir_security::Operation;

use crate::auth::Access;
use crate::body::{self, BodyError, Offset, Partition};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::media::{self, Format};
use crate::AppState;

#[derive(Debug)]
pub struct Registry {
    instances: Mutex<HashMap<(String, String), Arc<Instance>>>,
    timeout: Duration,
    next_id: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Instance {
    /// The principal that created it, the only one that may use it.
    owner: Arc<str>,
    format: Format,
    reset: OffsetReset,
    auto_commit: bool,
    last_used: Mutex<Instant>,
    topics: Mutex<Vec<String>>,
    consumer: tokio::sync::Mutex<Option<Consumer>>,
    /// Records polled but not yet returned: by a rejoin between requests, or left over by `max_bytes`.
    buffer: Mutex<VecDeque<ConsumedRecord>>,
    /// Per partition, the offset after the last record returned to the client: what "commit everything fetched"
    /// and auto-commit commit (the consumer's own position may be ahead, over the buffer).
    returned: Mutex<HashMap<(String, i32), i64>>,
    rejoining: std::sync::atomic::AtomicBool,
}

impl Registry {
    pub fn new(timeout: Duration) -> Self {
        Registry { instances: Mutex::new(HashMap::new()), timeout, next_id: Default::default() }
    }

    /// The instance, if it exists and `access`'s principal created it; after READ on its group was checked.
    fn get(&self, access: &Access, group: &str, name: &str) -> Result<Arc<Instance>, ApiError> {
        access.group(Operation::Read, group)?;
        let i = self.instances.lock().get(&(group.to_string(), name.to_string())).cloned();
        let i = i.filter(|i| *i.owner == *access.principal());
        let i = i.ok_or_else(|| ApiError::instance_not_found(group, name))?;
        *i.last_used.lock() = Instant::now();
        Ok(i)
    }
}

/// Every few seconds: heartbeat for members between requests, and close instances idle past the timeout.
pub async fn reap(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let all: Vec<_> = registry.instances.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (key, instance) in all {
            if instance.last_used.lock().elapsed() > registry.timeout {
                registry.instances.lock().remove(&key);
                if let Some(c) = instance.consumer.lock().await.take() {
                    let _ = c.close().await;
                }
                tracing::info!(group = %key.0, instance = %key.1, "closed an idle consumer instance");
                continue;
            }
            // A request in progress is heartbeating through its poll.
            let rejoin = match instance.consumer.try_lock() {
                Ok(mut guard) => match guard.as_mut() {
                    Some(c) => {
                        let _ = c.keep_alive();
                        c.needs_rejoin()
                    }
                    None => false,
                },
                Err(_) => false,
            };
            // A rebalance waits for every member to rejoin; one nobody is fetching through would hold up the
            // others until its session expired. Rejoin it here (on its own task: joins wait for each other), keeping
            // whatever the poll returns for the client's next fetch.
            if rejoin && !instance.rejoining.swap(true, std::sync::atomic::Ordering::AcqRel) {
                let instance = instance.clone();
                tokio::spawn(async move {
                    if let Some(c) = instance.consumer.lock().await.as_mut() {
                        if let Ok(records) = c.poll(Duration::ZERO).await {
                            instance.buffer.lock().extend(records);
                        }
                    }
                    instance.rejoining.store(false, std::sync::atomic::Ordering::Release);
                });
            }
        }
    }
}

/// A consumer route's body as a `T`: 415 for another media type, 422 naming the field that does not fit (with the
/// code `code` gives for that field). `empty` is what an empty body or `null` means, where the route allows one.
fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    empty: Option<fn() -> T>,
    code: fn(&BodyError) -> ErrorCode,
) -> Result<T, ApiError> {
    let body = body::read(body)?;
    media::check_v2_json(headers, &body)?;
    let text = body.trim_ascii();
    if text.is_empty() || text == b"null" {
        return match empty {
            Some(empty) => Ok(empty()),
            None => Err(ApiError::new(
                ErrorCode::UnprocessableEntity,
                "the body must be a JSON object (send {} for the defaults)",
            )),
        };
    }
    body::object(text).map_err(|e| {
        let code = code(&e);
        e.into_api(code)
    })
}

/// Any misfit in a body is 42200.
fn unprocessable(_: &BodyError) -> ErrorCode {
    ErrorCode::UnprocessableEntity
}

/// The body of `POST /consumers/{group}`; every field may be left out. The settings are strings, as the REST
/// Proxy's are (`"true"` included).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateConsumer {
    /// Instance name (default: generated).
    #[schema(min_length = 1, max_length = 255, pattern = "^[^/]+$")]
    pub name: Option<String>,
    /// How keys and values are embedded: base64 (`binary`, the default), JSON (`json`), or decoded through the
    /// schema registry from Confluent's wire format (`avro`, `jsonschema`, `protobuf`).
    pub format: Option<Format>,
    #[serde(rename = "auto.offset.reset")]
    pub auto_offset_reset: Option<ResetName>,
    /// `"true"` (default): each fetch first commits what the previous fetches returned.
    #[serde(rename = "auto.commit.enable")]
    pub auto_commit_enable: Option<BoolName>,
}

impl CreateConsumer {
    /// A setting that does not fit is an invalid consumer configuration (42204), anything else 42200.
    fn error_code(e: &BodyError) -> ErrorCode {
        match e.field.as_str() {
            "format" | "auto.offset.reset" | "auto.commit.enable" => ErrorCode::InvalidConsumerConfig,
            _ => ErrorCode::UnprocessableEntity,
        }
    }
}

/// Where the group starts on partitions it never committed (default `latest`; `smallest` is taken for `earliest`,
/// as older clients send it).
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
// Named for the document, read by `try_from`, as `Format` is (see there).
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum ResetName {
    Earliest,
    Latest,
}

impl TryFrom<String> for ResetName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "earliest" | "smallest" => Ok(ResetName::Earliest),
            "latest" => Ok(ResetName::Latest),
            _ => Err(format!("unknown value {s:?}: use earliest or latest")),
        }
    }
}

impl From<ResetName> for OffsetReset {
    fn from(r: ResetName) -> Self {
        match r {
            ResetName::Earliest => OffsetReset::Earliest,
            ResetName::Latest => OffsetReset::Latest,
        }
    }
}

/// A boolean setting, as the string `"true"` or `"false"`.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
// Named for the document, read by `try_from`, as `Format` is (see there).
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum BoolName {
    True,
    False,
}

impl TryFrom<String> for BoolName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "true" => Ok(BoolName::True),
            "false" => Ok(BoolName::False),
            _ => Err(format!("unknown value {s:?}: use \"true\" or \"false\"")),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedConsumer {
    pub instance_id: String,
    pub base_uri: String,
}

/// Create a consumer instance in a group.
#[utoipa::path(
    post, path = "/consumers/{group}", tag = "consumers",
    params(("group" = String, Path, description = "Consumer group")),
    request_body(content((CreateConsumer = "application/vnd.kafka.v2+json"), (CreateConsumer = "application/json"))),
    responses(
        (status = 403, description = "40301 not authorized to read the group", body = ErrorBody),
        (status = 200, body = CreatedConsumer),
        (status = 409, description = "40902 an instance of that name exists", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 400, body = ErrorBody),
        (status = 422, description = "Malformed body (42200) or setting (42204: format, auto.offset.reset, auto.commit.enable)", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Path(group): Path<String>,
    access: Access,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CreatedConsumer>, ApiError> {
    access.group(Operation::Read, &group)?;
    let request: CreateConsumer = json_body(&headers, body, None, CreateConsumer::error_code)?;
    let format = request.format.unwrap_or(Format::Binary);
    if format.schema_format().is_some() && state.config.schemas.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidConsumerConfig,
            format!(
                "format: {} needs the schema registry, which this weir runs without (--schema-registry-listen none)",
                format.name()
            ),
        ));
    }
    let reset = request.auto_offset_reset.map_or(OffsetReset::Latest, OffsetReset::from);
    let auto_commit = !matches!(request.auto_commit_enable, Some(BoolName::False));
    if group == "." || group == ".." {
        // Percent-encoding cannot help here: URL parsers read "%2E%2E" as ".." too, so no URI could name it.
        return Err(ApiError::new(ErrorCode::UnprocessableEntity, "a consumer group cannot be named . or .."));
    }
    let name = match request.name {
        Some(n) if n.is_empty() || n.len() > 255 || n.contains('/') || n == "." || n == ".." => {
            return Err(ApiError::new(
                ErrorCode::UnprocessableEntity,
                "name: must be 1-255 characters without '/', and not . or ..",
            ));
        }
        Some(n) => n,
        None => {
            let n = state.consumers.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("rest-consumer-{}-{n}", std::process::id())
        }
    };
    let instance = Arc::new(Instance {
        owner: access.principal().into(),
        format,
        reset,
        auto_commit,
        last_used: Mutex::new(Instant::now()),
        topics: Mutex::new(Vec::new()),
        consumer: tokio::sync::Mutex::new(None),
        buffer: Mutex::new(VecDeque::new()),
        returned: Mutex::new(HashMap::new()),
        rejoining: std::sync::atomic::AtomicBool::new(false),
    });
    {
        let mut all = state.consumers.instances.lock();
        let key = (group.clone(), name.clone());
        if all.contains_key(&key) {
            return Err(ApiError::new(
                ErrorCode::ConsumerAlreadyExists,
                format!("Consumer instance with the name {name} already exists in group {group}."),
            ));
        }
        all.insert(key, instance);
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let scheme = if state.config.tls.is_some() { "https" } else { "http" };
    let base_uri = format!("{scheme}://{host}/consumers/{}/instances/{}", path_segment(&group), path_segment(&name));
    Ok(Json(CreatedConsumer { instance_id: name, base_uri }))
}

/// `s` as one path segment: everything but RFC 3986's unreserved characters percent-encoded, so a group or instance
/// named `../x` or `a?b` stays one segment of the URI a client is told to use.
fn path_segment(s: &str) -> percent_encoding::PercentEncode<'_> {
    const RESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(s, RESERVED)
}

/// Close a consumer instance (it leaves its group).
#[utoipa::path(
    delete, path = "/consumers/{group}/instances/{instance}", tag = "consumers",
    params(("group" = String, Path), ("instance" = String, Path)),
    responses(
        (status = 204, description = "Closed"),
        (status = 403, description = "40301 not authorized to read the group", body = ErrorBody),
        (status = 404, description = "40403 unknown instance", body = ErrorBody))
)]
pub async fn delete(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
    access: Access,
) -> Result<StatusCode, ApiError> {
    state.consumers.get(&access, &group, &name)?;
    let removed = state.consumers.instances.lock().remove(&(group.clone(), name.clone()));
    let instance = removed.ok_or_else(|| ApiError::instance_not_found(&group, &name))?;
    if let Some(c) = instance.consumer.lock().await.take() {
        c.close().await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The body of a subscription: the topics, by name.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Subscribe {
    // Left out, it is refused like an empty list, after a `topic_pattern` is refused for what it is.
    #[serde(default)]
    #[schema(required = true, min_items = 1)]
    pub topics: Vec<String>,
    /// The REST Proxy's other way to subscribe, which weir refuses (and so does not document): read only to say so.
    #[serde(default)]
    #[schema(ignore)]
    pub topic_pattern: Option<serde::de::IgnoredAny>,
}

/// What an instance is subscribed to (nothing after an unsubscribe).
#[derive(Debug, Serialize, ToSchema)]
pub struct Subscription {
    pub topics: Vec<String>,
}

/// Subscribe an instance to topics (replacing its subscription); it joins the group on its next fetch.
#[utoipa::path(
    post, path = "/consumers/{group}/instances/{instance}/subscription", tag = "consumers",
    params(("group" = String, Path), ("instance" = String, Path)),
    request_body(content((Subscribe = "application/vnd.kafka.v2+json"), (Subscribe = "application/json"))),
    responses(
        (status = 403, description = "40301 not authorized to read the group or a topic", body = ErrorBody),
        (status = 204, description = "Subscribed"),
        (status = 404, description = "40403 unknown instance, 40401 unknown topic", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 400, body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
    )
)]
pub async fn subscribe(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
    access: Access,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let instance = state.consumers.get(&access, &group, &name)?;
    let Subscribe { topics, topic_pattern } = json_body(&headers, body, None, unprocessable)?;
    if topic_pattern.is_some() {
        return Err(ApiError::new(ErrorCode::UnprocessableEntity, "topic_pattern: not supported; list the topics"));
    }
    if topics.is_empty() {
        return Err(ApiError::new(
            ErrorCode::UnprocessableEntity,
            "topics: a non-empty array of topic names is needed",
        ));
    }
    // Before whether they exist: who may not read a topic is not told whether it is there.
    access.topics(Operation::Read, topics.iter().map(String::as_str))?;
    for t in &topics {
        state.broker.topic(t)?;
    }
    let mut config = ConsumerConfig::new(topics.clone()).group(group);
    config.client_id = format!("rest-proxy/{name}");
    config.auto_offset_reset = instance.reset;
    let consumer = state.broker.consumer(config)?;
    let old = instance.consumer.lock().await.replace(consumer);
    if let Some(old) = old {
        let _ = old.close().await;
    }
    instance.buffer.lock().clear();
    instance.returned.lock().clear();
    *instance.topics.lock() = topics;
    Ok(StatusCode::NO_CONTENT)
}

/// The topics an instance is subscribed to.
#[utoipa::path(
    get, path = "/consumers/{group}/instances/{instance}/subscription", tag = "consumers",
    params(("group" = String, Path), ("instance" = String, Path)),
    responses(
        (status = 200, body = Subscription),
        (status = 403, description = "40301 not authorized to read the group", body = ErrorBody),
        (status = 404, description = "40403 unknown instance", body = ErrorBody))
)]
pub async fn subscription(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
    access: Access,
) -> Result<Json<Subscription>, ApiError> {
    let instance = state.consumers.get(&access, &group, &name)?;
    let topics = instance.topics.lock().clone();
    Ok(Json(Subscription { topics }))
}

/// Unsubscribe an instance: it leaves the group but stays usable.
#[utoipa::path(
    delete, path = "/consumers/{group}/instances/{instance}/subscription", tag = "consumers",
    params(("group" = String, Path), ("instance" = String, Path)),
    responses(
        (status = 204, description = "Unsubscribed"),
        (status = 403, description = "40301 not authorized to read the group", body = ErrorBody),
        (status = 404, description = "40403 unknown instance", body = ErrorBody))
)]
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
    access: Access,
) -> Result<StatusCode, ApiError> {
    let instance = state.consumers.get(&access, &group, &name)?;
    if let Some(c) = instance.consumer.lock().await.take() {
        c.close().await?;
    }
    instance.topics.lock().clear();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FetchParams {
    /// Longest wait for records, in milliseconds (default 1000). A longer one is cut to 5000, as the REST Proxy
    /// caps it by `consumer.request.timeout.ms`, rather than refused: the document must not promise a refusal.
    pub timeout: Option<u64>,
    /// Stop adding records once their keys and values reach this many bytes (default 64 MiB).
    pub max_bytes: Option<u64>,
}

/// One fetched record. Keys and values are base64 (binary instances), JSON (json instances), or the schema format's
/// JSON form, decoded with the schema their id names (avro, jsonschema and protobuf instances).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumerRecord {
    pub topic: String,
    #[schema(value_type = Option<Object>)]
    pub key: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub value: Option<Value>,
    pub partition: i32,
    pub offset: i64,
}

/// A key or value in the binary or JSON format (the schema formats are decoded before, by `schemas::deserialize`).
fn embed(format: Format, bytes: Option<&[u8]>) -> Option<Value> {
    let b = bytes?;
    Some(match format {
        Format::Json => serde_json::from_slice(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into())),
        // Data written by non-JSON producers still comes back, as a string, rather than failing the fetch.
        _ => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    })
}

/// The positions after what the client has been given, to commit.
fn returned_offsets(instance: &Instance) -> Vec<(TopicPartition, i64)> {
    instance.returned.lock().iter().map(|((t, p), o)| (TopicPartition::new(t.clone(), *p), *o)).collect()
}

/// The records of `polled` that fit in `max_bytes` of keys and values (the first always does), embedded in the
/// instance's format (or as `decoded`, for the records a schema format decoded, in order) and noted as returned;
/// the rest go back to the front of its buffer, in order, for the next fetch.
fn hand_out(
    instance: &Instance,
    polled: Vec<ConsumedRecord>,
    decoded: Option<Vec<(Option<Value>, Option<Value>)>>,
    max_bytes: u64,
) -> Vec<ConsumerRecord> {
    let mut out = Vec::with_capacity(polled.len());
    let mut size = 0u64;
    let mut left = VecDeque::new();
    let mut decoded = decoded.map(Vec::into_iter);
    for r in polled {
        let len = (r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())) as u64;
        // Over the limit: this record and the rest wait for the next fetch, in order.
        if !left.is_empty() || (!out.is_empty() && size + len > max_bytes) {
            left.push_back(r);
            continue;
        }
        let (key, value) = match decoded.as_mut() {
            Some(decoded) => match decoded.next() {
                Some(kv) => kv,
                // Past the last record decoded: this one failed to decode, and waits with the rest.
                None => {
                    left.push_back(r);
                    continue;
                }
            },
            None => (embed(instance.format, r.key.as_deref()), embed(instance.format, r.value.as_deref())),
        };
        size += len;
        instance.returned.lock().insert((r.topic.to_string(), r.partition), r.offset + 1);
        out.push(ConsumerRecord { topic: r.topic.to_string(), key, value, partition: r.partition, offset: r.offset });
    }
    if !left.is_empty() {
        let mut buffer = instance.buffer.lock();
        for r in left.into_iter().rev() {
            buffer.push_front(r);
        }
    }
    out
}

/// Fetch records for an instance (joining its group first if needed).
#[utoipa::path(
    get, path = "/consumers/{group}/instances/{instance}/records", tag = "consumers",
    params(("group" = String, Path), ("instance" = String, Path), FetchParams),
    responses(
        (status = 403, description = "40301 not authorized to read the group or a topic", body = ErrorBody),
        (status = 200, description = "Records, possibly none", content(
            (Vec<ConsumerRecord> = "application/vnd.kafka.binary.v2+json"),
            (Vec<ConsumerRecord> = "application/vnd.kafka.json.v2+json"),
            (Vec<ConsumerRecord> = "application/vnd.kafka.avro.v2+json"),
            (Vec<ConsumerRecord> = "application/vnd.kafka.jsonschema.v2+json"),
            (Vec<ConsumerRecord> = "application/vnd.kafka.protobuf.v2+json"),
        )),
        (status = 500, description = "50002 the next record cannot be decoded with its schema (schema formats)", body = ErrorBody),
        (status = 400, description = "Bad query parameters", body = ErrorBody),
        (status = 404, description = "40403 unknown instance", body = ErrorBody),
        (status = 406, description = "40601 the Accept header asks for the other format", body = ErrorBody),
        (status = 409, description = "40903 the instance has no subscription", body = ErrorBody),
    )
)]
pub async fn records(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
    params: Result<Query<FetchParams>, axum::extract::rejection::QueryRejection>,
    access: Access,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("bad query: {}", e.body_text())))?;
    let instance = state.consumers.get(&access, &group, &name)?;
    // Checked again at each fetch: an ACL removed since the subscription stops the reading.
    access.topics(Operation::Read, instance.topics.lock().iter().map(String::as_str))?;
    if media::accepted_format(&headers).is_some_and(|w| w != instance.format) {
        return Err(ApiError::new(
            ErrorCode::ConsumerFormatMismatch,
            format!("this instance was created with the {} format", instance.format.name()),
        ));
    }
    let timeout = Duration::from_millis(params.timeout.unwrap_or(1000).min(5_000));
    let max_bytes = params.max_bytes.unwrap_or(64 << 20);
    let started = Instant::now();
    let mut guard = instance.consumer.lock().await;
    let Some(consumer) = guard.as_mut() else {
        return Err(ApiError::new(ErrorCode::IllegalState, "the consumer instance has no subscription"));
    };
    if instance.auto_commit {
        // Kafka's auto-commit: what earlier fetches returned is committed when the next one starts.
        let offsets = returned_offsets(&instance);
        if !offsets.is_empty() {
            if let Err(e) = consumer.commit_offsets(offsets).await {
                tracing::debug!(error = %e, "auto-commit before fetch failed; the group is rebalancing");
            }
        }
    }
    let buffered: Vec<ConsumedRecord> = instance.buffer.lock().drain(..).collect();
    let polled = if !buffered.is_empty() {
        buffered
    } else {
        match consumer.poll(timeout).await {
            Ok(r) => r,
            // The group is rebalancing: nothing this time, the next fetch rejoins.
            Err(BrokerError::Group(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        }
    };
    // The schema formats decode up to the first record that cannot be: the ones before it are returned, and it waits
    // at the front of the buffer, failing the next fetch that reaches it (nothing is skipped).
    let (decoded, failure) = match instance.format.schema_format() {
        None => (None, None),
        Some(_) => {
            let registry = crate::schemas::registry(&state.config, instance.format)?;
            let (decoded, failure) = crate::schemas::deserialize(&**registry, &polled).await;
            (Some(decoded), failure)
        }
    };
    let out = hand_out(&instance, polled, decoded, max_bytes);
    drop(guard);
    if let (true, Some(e)) = (out.is_empty(), failure) {
        return Err(e);
    }
    crate::metrics::consumed(&out, started.elapsed());
    Ok(([(header::CONTENT_TYPE, instance.format.media_type())], Json(out)).into_response())
}

/// The body of a commit; an empty body, `null` or `{}` commits everything fetched so far.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CommitRequest {
    /// Records to commit (the group resumes after each); absent or empty commits everything fetched so far.
    pub offsets: Option<Vec<CommitOffset>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CommitOffset {
    pub topic: String,
    #[schema(value_type = i32, minimum = 0)]
    pub partition: Partition,
    /// The offset of the last record processed.
    #[schema(value_type = i64, minimum = 0, maximum = 9007199254740991_i64)]
    pub offset: Offset,
}

/// Commit offsets for an instance's group.
#[utoipa::path(
    post, path = "/consumers/{group}/instances/{instance}/offsets", tag = "consumers",
    params(("group" = String, Path), ("instance" = String, Path)),
    request_body(content((Option<CommitRequest> = "application/vnd.kafka.v2+json"), (Option<CommitRequest> = "application/json"))),
    responses(
        (status = 403, description = "40301 not authorized to read the group or a topic", body = ErrorBody),
        (status = 204, description = "Committed"),
        (status = 404, description = "40403 unknown instance", body = ErrorBody),
        (status = 409, description = "40903 no subscription, or the group rebalanced", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 400, body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
    )
)]
pub async fn commit(
    State(state): State<AppState>,
    Path((group, name)): Path<(String, String)>,
    access: Access,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let instance = state.consumers.get(&access, &group, &name)?;
    let request: CommitRequest = json_body(&headers, body, Some(CommitRequest::default), unprocessable)?;
    // REST Proxy v2 commits the record's offset + 1: the position after it.
    let offsets: Vec<(TopicPartition, i64)> = request
        .offsets
        .unwrap_or_default()
        .into_iter()
        .map(|o| (TopicPartition::new(o.topic, o.partition.0), o.offset.0 + 1))
        .collect();
    let mut guard = instance.consumer.lock().await;
    let Some(consumer) = guard.as_mut() else {
        return Err(ApiError::new(ErrorCode::IllegalState, "the consumer instance has no subscription"));
    };
    let offsets = if offsets.is_empty() { returned_offsets(&instance) } else { offsets };
    access.topics(Operation::Read, offsets.iter().map(|(tp, _)| tp.topic.as_str()))?;
    let result = if offsets.is_empty() { Ok(()) } else { consumer.commit_offsets(offsets).await };
    match result {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(BrokerError::Group(e)) => Err(ApiError::new(ErrorCode::IllegalState, format!("commit refused: {e}"))),
        Err(e) => Err(e.into()),
    }
}
