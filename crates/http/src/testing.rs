//! Calling a router in-process from tests, behind the `testing` feature (not part of a release build's API): a
//! request goes through the whole router (its layers, extractors and error mapping, as `weir up` serves it) without
//! a socket, and comes back as its status and its body as JSON. Every system's routes are served by this crate's
//! router, so their tests call them here too.

use axum::body::Body;
use axum::http::{header, request, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

/// The host every request names: the REST Proxy's answers build absolute URLs (a consumer's `base_uri`) from it.
pub const HOST: &str = "weir.test";

/// A request builder for `method` and `uri`, with the `Host` header set to [`HOST`]; add headers and a body, then
/// [`send`] it.
pub fn request(method: Method, uri: &str) -> request::Builder {
    Request::builder().method(method).uri(uri).header(header::HOST, HOST)
}

/// Sends `request` through `router`: the status, and the body as JSON: `Null` if it is empty, a JSON string of its
/// text if it is not JSON (a plain-text rejection or `/metrics`), so a failing assertion can still show it.
pub async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.expect("a router's service never fails");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("the response body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

/// `method uri` with `body`, if any, as `application/json`: the status and the answer as [`send`] returns them.
pub async fn call(router: &Router, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let request = match body {
        Some(body) => {
            request(method, uri).header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string()))
        }
        None => request(method, uri).body(Body::empty()),
    };
    send(router, request.expect("a valid request")).await
}

/// `method uri` with a body of any media type, as given (malformed on purpose, say, or one of the REST Proxy's
/// `application/vnd.kafka.*` types): the status and the answer as [`send`] returns them.
pub async fn call_raw(
    router: &Router,
    method: Method,
    uri: &str,
    content_type: &str,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let request = request(method, uri).header(header::CONTENT_TYPE, content_type).body(body.into());
    send(router, request.expect("a valid request")).await
}
