//! Errors as the Confluent REST Proxy sends them: an HTTP status and `{"error_code": N, "message": "..."}`, where
//! `error_code` is the status followed by a detail digit or two (40401 topic not found, 42201 invalid key, ...).
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

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub error_code: u32,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error_code: u32, message: impl Into<String>) -> Self {
        ApiError { status, error_code, message: message.into() }
    }

    pub fn topic_not_found(topic: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40401, format!("Topic {topic} not found."))
    }

    pub fn partition_not_found(topic: &str, partition: i32) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40402, format!("Partition {partition} of topic {topic} not found."))
    }

    pub fn instance_not_found(group: &str, instance: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40403, format!("Consumer instance {instance} of group {group} not found."))
    }

    pub fn group_not_found(group: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 40404, format!("Consumer group {group} not found."))
    }

    /// 422 for a body that parses but says something invalid; `field` names where.
    pub fn unprocessable(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unsupported_media_type(got: &str, expected: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            format!("Content-Type {got:?} is not supported here; send {expected}."),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, 50001, message)
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
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, 41301, e.to_string())
            }
            BrokerError::UnknownTopic(t) => ApiError::topic_not_found(t),
            BrokerError::UnknownPartition { topic, partition } => ApiError::partition_not_found(topic, *partition),
            BrokerError::InvalidTopicName(_) | BrokerError::InvalidPartitions(_) | BrokerError::InvalidConfig(_) => {
                ApiError::unprocessable(42200, e.to_string())
            }
            BrokerError::TopicExists(_) => ApiError::new(StatusCode::CONFLICT, 40901, e.to_string()),
            BrokerError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, 50301, e.to_string()),
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
    ApiError::new(StatusCode::NOT_FOUND, 404, format!("No route for {}.", uri.path()))
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, 405, format!("{method} is not allowed on {}.", uri.path()))
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
            StatusCode::PAYLOAD_TOO_LARGE,
            413,
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
    let mut json = ApiError::new(status, u32::from(status.as_u16()), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().append(name, value.clone());
        }
    }
    json
}
