//! The error a system's HTTP route answers with: a status and a message, as `{"error_code": 400, "error": "..."}`
//! (the REST Proxy's shape). A failure of what the route depends on (the database, the bus) converts into it as 503,
//! so a handler can use `?`; bad input is [`bad`], 400, with a message naming the field.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({"error_code": self.0.as_u16(), "error": self.1}))).into_response()
    }
}

impl<E: std::fmt::Display> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// 400 with `message`.
pub fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}
