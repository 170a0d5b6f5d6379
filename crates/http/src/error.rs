//! Errors as the Confluent REST Proxy sends them: an HTTP status and `{"error_code": N, "message": "..."}`, where
//! `error_code` is the status followed by a detail digit or two (40401 topic not found, 42201 invalid key, ...).
//! [`ErrorCode`] is the one list of those codes, each with its status; handlers name a code, never a number.
//!
//! One layer over the whole server, [`guard`], makes that hold for answers no handler writes: it turns axum's
//! plain-text rejections (a query, path or body that does not parse, an unrouted method, of any route including the
//! systems' merged in) into this shape, and answers 413 to a declared body over the limit before anyone waits for it.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use weir_broker::BrokerError;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status, or the status followed by a detail code (40401: topic not found).
    pub error_code: u32,
    pub message: String,
}

/// Every `error_code` weir sends, with its HTTP status. The detail codes follow the Confluent REST Proxy's (its
/// `Errors` class) where the case is the same; those marked "weir's" are weir's own in the same scheme (the status
/// followed by a detail number), some reusing a number whose REST Proxy case cannot arise in weir. A plain status
/// (404, 415, ...) is the code of an error with no detail, as in the REST Proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// A path, query or body that cannot be read at all.
    BadRequest = 400,
    /// No route for the path.
    NotFound = 404,
    /// No credentials where authentication is required, or credentials that are wrong or malformed (sent with
    /// `WWW-Authenticate: Basic realm="weir"`).
    Unauthenticated = 40101,
    /// The ACLs do not allow the principal this operation on a topic, group or system.
    Forbidden = 40301,
    MethodNotAllowed = 405,
    /// The body is over the server's limit.
    PayloadTooLarge = 413,
    /// A `Content-Type` the route does not take.
    UnsupportedMediaType = 415,
    TopicNotFound = 40401,
    PartitionNotFound = 40402,
    ConsumerInstanceNotFound = 40403,
    /// weir's: the REST Proxy v2 has no group routes (its 40404 is "leader not available", which one broker never
    /// is).
    GroupNotFound = 40404,
    /// A fetch whose `Accept` asks for the other embedded format than the instance was created with.
    ConsumerFormatMismatch = 40601,
    /// weir's: a topic created meanwhile by someone else (the REST Proxy's 40901 is a consumer already subscribed,
    /// which weir allows: a subscription replaces the last).
    TopicExists = 40901,
    ConsumerAlreadyExists = 40902,
    /// The REST Proxy's "illegal state": a consumer instance without a subscription, a commit the group refused.
    IllegalState = 40903,
    /// weir's: a record over the topic's `max.message.bytes`.
    RecordTooLarge = 41301,
    /// weir's: more records in one produce request than the server takes at once.
    TooManyRecords = 41302,
    /// weir's: a body that parses but does not fit its type; the message names the field.
    UnprocessableEntity = 42200,
    /// A produce record's key that does not fit the format (bad base64), or keys in a schema format without
    /// `key_schema` or `key_schema_id` (the REST Proxy's "key schema missing").
    InvalidKey = 42201,
    /// A produce record's value that does not fit the format, or values without a value schema.
    InvalidValue = 42202,
    /// A key or value that does not fit its schema (the REST Proxy's "Conversion of JSON to Object failed").
    JsonConversion = 42203,
    /// A consumer instance's settings (`format`, `auto.offset.reset`, `auto.commit.enable`) that are not valid.
    InvalidConsumerConfig = 42204,
    /// A schema a produce request gives that does not parse, is not registered, is of another format, or that the
    /// registry refuses (incompatible, read-only subject).
    InvalidSchema = 42205,
    /// weir's: anything else that went wrong inside the server.
    Internal = 50001,
    /// A stored record that a schema-format consumer cannot decode (the REST Proxy's "Kafka error" for a
    /// deserialization failure); it stays unreturned.
    Deserialization = 50002,
    /// weir's: a REST Proxy route asked of an instance whose systems run on a Kafka cluster (no broker here).
    NotOnACluster = 50101,
    /// weir's: the broker is stopping.
    ShuttingDown = 50301,
    /// weir's: the HTTP connection cap is reached (sent by the accept loop, which then closes the connection).
    TooManyConnections = 50302,
    /// weir's: the schema registry could not answer, or this weir has none.
    RegistryUnavailable = 50303,
}

impl ErrorCode {
    /// The number sent as `error_code`.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The HTTP status sent with it, which the code starts with.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            BadRequest => StatusCode::BAD_REQUEST,
            Unauthenticated => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            NotFound | TopicNotFound | PartitionNotFound | ConsumerInstanceNotFound | GroupNotFound => {
                StatusCode::NOT_FOUND
            }
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ConsumerFormatMismatch => StatusCode::NOT_ACCEPTABLE,
            TopicExists | ConsumerAlreadyExists | IllegalState => StatusCode::CONFLICT,
            PayloadTooLarge | RecordTooLarge | TooManyRecords => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UnprocessableEntity
            | InvalidKey
            | InvalidValue
            | JsonConversion
            | InvalidConsumerConfig
            | InvalidSchema => StatusCode::UNPROCESSABLE_ENTITY,
            Internal | Deserialization => StatusCode::INTERNAL_SERVER_ERROR,
            NotOnACluster => StatusCode::NOT_IMPLEMENTED,
            ShuttingDown | TooManyConnections | RegistryUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub error_code: u32,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status: code.status(), error_code: code.code(), message: message.into() }
    }

    /// An error with only an HTTP status, which is also its code (what the REST Proxy sends for errors it has no
    /// detail code for): axum's rejections as the server's error layer (`guard`) rewrites them.
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, error_code: u32::from(status.as_u16()), message: message.into() }
    }

    pub fn topic_not_found(topic: &str) -> Self {
        Self::new(ErrorCode::TopicNotFound, format!("Topic {topic} not found."))
    }

    pub fn partition_not_found(topic: &str, partition: i32) -> Self {
        Self::new(ErrorCode::PartitionNotFound, format!("Partition {partition} of topic {topic} not found."))
    }

    pub fn instance_not_found(group: &str, instance: &str) -> Self {
        Self::new(
            ErrorCode::ConsumerInstanceNotFound,
            format!("Consumer instance {instance} of group {group} not found."),
        )
    }

    pub fn group_not_found(group: &str) -> Self {
        Self::new(ErrorCode::GroupNotFound, format!("Consumer group {group} not found."))
    }

    pub fn unsupported_media_type(got: &str, expected: &str) -> Self {
        Self::new(
            ErrorCode::UnsupportedMediaType,
            format!("Content-Type {got:?} is not supported here; send {expected}."),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        ApiError::from(&e)
    }
}

impl From<&BrokerError> for ApiError {
    fn from(e: &BrokerError) -> Self {
        match e {
            BrokerError::Shared(inner) => ApiError::from(&**inner),
            BrokerError::Log(weir_log::LogError::RecordTooLarge { .. }) => {
                ApiError::new(ErrorCode::RecordTooLarge, e.to_string())
            }
            BrokerError::UnknownTopic(t) => ApiError::topic_not_found(t),
            BrokerError::UnknownPartition { topic, partition } => ApiError::partition_not_found(topic, *partition),
            BrokerError::InvalidTopicName(_) | BrokerError::InvalidPartitions(_) | BrokerError::InvalidConfig(_) => {
                ApiError::new(ErrorCode::UnprocessableEntity, e.to_string())
            }
            BrokerError::TopicExists(_) => ApiError::new(ErrorCode::TopicExists, e.to_string()),
            // The topic's schema validation refused the request's records: they do not fit what the topic takes.
            BrokerError::RecordsRefused { .. } | BrokerError::ValidationUnavailable { .. } => {
                ApiError::new(ErrorCode::UnprocessableEntity, e.to_string())
            }
            BrokerError::ShuttingDown => ApiError::new(ErrorCode::ShuttingDown, e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error_code: self.error_code, message: self.message };
        (self.status, Json(body)).into_response()
    }
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("No route for {}.", uri.path()))
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}.", uri.path()))
}

/// The one layer every request of the server passes (one layer, not two: each `from_fn` layer costs a boxed future
/// per request). Before the handler, a request whose `Content-Length` is over `limit` gets 413 at once: otherwise the
/// server would wait for (and a slow client could trickle) a body it will refuse anyway; bodies without a declared
/// length are cut at the limit by axum's `DefaultBodyLimit` as they arrive. After it, an error answer that is not
/// JSON (axum's extractor rejections are plain text, an unrouted method's 405 has no body) is rewritten into
/// [`ErrorBody`], with the status as `error_code` and the text as `message`, headers such as `Allow` kept: one
/// mapping for every route of every crate.
pub async fn guard(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).map(HeaderValue::to_str).and_then(Result::ok);
    if declared.and_then(|v| v.trim().parse::<u64>().ok()).is_some_and(|len| len > limit as u64) {
        let mut response = ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than the server accepts ({limit} bytes)"),
        )
        .into_response();
        // The body is never read, so the connection cannot carry another request.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // A rejection is one line; anything longer than this is not one and is cut rather than buffered.
    let text = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        format!("{} ({method} {})", status.canonical_reason().unwrap_or("error"), uri.path())
    } else {
        text
    };
    let mut json = ApiError::from_status(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().append(name, value.clone());
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use super::ErrorCode::{self, *};

    /// A code is its status followed by the detail: clients that only look at the first three digits get it right.
    #[test]
    fn every_code_starts_with_its_status() {
        let all: [ErrorCode; 25] = [
            BadRequest,
            NotFound,
            Unauthenticated,
            Forbidden,
            MethodNotAllowed,
            PayloadTooLarge,
            UnsupportedMediaType,
            TopicNotFound,
            PartitionNotFound,
            ConsumerInstanceNotFound,
            GroupNotFound,
            ConsumerFormatMismatch,
            TopicExists,
            ConsumerAlreadyExists,
            IllegalState,
            RecordTooLarge,
            TooManyRecords,
            UnprocessableEntity,
            InvalidKey,
            InvalidValue,
            InvalidConsumerConfig,
            Internal,
            NotOnACluster,
            ShuttingDown,
            TooManyConnections,
        ];
        for code in all {
            let status = u32::from(code.status().as_u16());
            assert!(code.code() == status || code.code() / 100 == status, "{code:?} {} {status}", code.code());
        }
    }
}
