//! Errors as the Confluent REST Proxy sends them: an HTTP status and `{"error_code": N, "message": "..."}`, where
//! `error_code` is the status followed by a detail digit or two (40401 topic not found, 42201 invalid key, ...).

use axum::http::StatusCode;
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
