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

/// The media types of the REST Proxy's schema formats, and their names as a consumer instance's `format`.
const SCHEMA_MEDIA_TYPES: [&str; 3] = [crate::media::AVRO_V2, crate::media::JSONSCHEMA_V2, crate::media::PROTOBUF_V2];
const SCHEMA_FORMAT_NAMES: [&str; 3] = ["avro", "jsonschema", "protobuf"];

/// The document as this server answers: without a schema registry behind it (`HttpConfig::schemas`), the schema
/// formats are refused, so the document does not offer them.
pub fn document(schema_formats: bool) -> String {
    if schema_formats {
        return openapi_json();
    }
    let Ok(mut doc) = serde_json::to_value(ApiDoc::openapi()) else { return openapi_json() };
    strip_schema_formats(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Removes the schema formats' media types from every `content` and their names from the `Format` enum.
fn strip_schema_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(content)) = map.get_mut("content") {
                for media in SCHEMA_MEDIA_TYPES {
                    content.remove(media);
                }
            }
            if let Some(serde_json::Value::Array(names)) = map.get_mut("enum") {
                names.retain(|n| !n.as_str().is_some_and(|n| SCHEMA_FORMAT_NAMES.contains(&n)));
            }
            map.values_mut().for_each(strip_schema_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_schema_formats),
        _ => {}
    }
}

/// The document of a server with every format, as [`serve`] answers (see [`document`] for one without a registry).
pub async fn serve_document(schema_formats: bool) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], document(schema_formats)).into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "admin", responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn serve() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}
