//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! body types, so it describes what the code does. CI fuzzes the API against it with schemathesis.

use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use crate::{admin, consumers, error, metrics, records, topics};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "weir HTTP API",
        description = "Produce and consume over HTTP (Confluent REST Proxy v2 compatible), topic and group metadata, health and metrics."
    ),
    paths(
        records::produce_to_topic,
        records::produce_to_partition,
        topics::list,
        topics::get_topic,
        topics::partitions,
        topics::partition,
        consumers::create,
        consumers::delete,
        consumers::subscribe,
        consumers::subscription,
        consumers::unsubscribe,
        consumers::records,
        consumers::commit,
        admin::groups,
        admin::group,
        admin::health,
        metrics::render,
        serve,
    ),
    components(schemas(error::ErrorBody)),
    tags(
        (name = "produce", description = "Write records (REST Proxy v2)"),
        (name = "topics", description = "Topic metadata (REST Proxy v2)"),
        (name = "consumers", description = "Consumer instances (REST Proxy v2)"),
        (name = "admin", description = "Groups, health, metrics"),
    )
)]
struct ApiDoc;

/// The document as JSON text.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "admin", responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn serve() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}
