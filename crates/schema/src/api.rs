//! The Confluent Schema Registry REST API over a [`SchemaService`]: the paths, bodies, answers and error codes
//! Confluent's clients (confluent-kafka's `SchemaRegistryClient`, the Java serializers, Redpanda Console) expect, with
//! each request checked against the ACLs on its subject (weir's `SUBJECT` resource) or, for the registry's global
//! settings, on the cluster. Served by weir-http's listener, so the same users, tokens, client certificates and TLS
//! as the REST Proxy's apply.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use weir_http::Access;
use weir_security::{Operation, ResourceType};

use crate::formats::SchemaType;
use crate::records::Reference;
use crate::registry::{Compatibility, Mode, NewSchema, RegistryError, VersionInfo, VersionSel};
use crate::service::SchemaService;

/// The content type of every answer (clients also take `application/json`, which requests may use).
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// The registry's routes; `/contexts/{ctx}/...` serves the same routes within a context (see `in_context`).
pub fn router(service: Arc<SchemaService>) -> Router {
    let routes = Router::new()
        .route("/", get(|| async { answer(json!({})) }))
        .route("/contexts", get(contexts))
        .route("/schemas/types", get(types))
        .route("/schemas", get(list_schemas))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/schemas/ids/{id}/subjects", get(id_subjects))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version).delete(delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(raw_version))
        .route("/subjects/{subject}/versions/{version}/referencedby", get(referenced_by))
        .route("/config", get(get_config).put(put_config).delete(delete_config))
        .route("/config/{subject}", get(get_subject_config).put(put_subject_config).delete(delete_subject_config))
        .route("/mode", get(get_mode).put(put_mode).delete(delete_mode))
        .route("/mode/{subject}", get(get_subject_mode).put(put_subject_mode).delete(delete_subject_mode))
        .route("/compatibility/subjects/{subject}/versions", post(check_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(check_one))
        .with_state(service);
    let plain = routes.clone();
    routes.route(
        "/contexts/{ctx}/{*rest}",
        axum::routing::any(move |request: axum::extract::Request| {
            let plain = plain.clone();
            async move {
                match tower::ServiceExt::oneshot(plain, in_context(request)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        }),
    )
}

/// A request under `/contexts/{ctx}/` as the same request on qualified subjects, which is how Confluent's registry
/// defines a context's routes: `/contexts/.ctx/subjects/s/versions` is `/subjects/:.ctx:s/versions`, a context's
/// subject list is `/subjects?subjectPrefix=:.ctx:`, its `/config` and `/mode` are those of the subject `:.ctx:`,
/// and its `/schemas/...` are the registry's (ids are unique across all contexts here). The default context `.`
/// names unqualified subjects.
fn in_context(request: axum::extract::Request) -> axum::extract::Request {
    let Some(rest) = request.uri().path().strip_prefix("/contexts/") else { return request };
    let (ctx, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let ctx = percent_decode(ctx);
    let qualify = |name: &str| if ctx == "." { name.to_string() } else { format!(":{ctx}:{name}") };
    let segments: Vec<&str> = rest.split('/').collect();
    let mut query = request.uri().query().map(str::to_string);
    let path = match segments.as_slice() {
        ["subjects"] | ["subjects", ""] => {
            let prefix = format!("subjectPrefix={}", percent_encode(&qualify("")));
            query = Some(match query.take() {
                Some(q) if !q.is_empty() => format!("{q}&{prefix}"),
                _ => prefix,
            });
            "/subjects".to_string()
        }
        ["subjects", subject, more @ ..] => join(&format!("/subjects/{}", qualified_segment(&qualify, subject)), more),
        [what @ ("config" | "mode")] => {
            if ctx == "." {
                format!("/{what}")
            } else {
                format!("/{what}/{}", percent_encode(&qualify("")))
            }
        }
        [what @ ("config" | "mode"), subject] => format!("/{what}/{}", qualified_segment(&qualify, subject)),
        ["compatibility", "subjects", subject, more @ ..] => {
            join(&format!("/compatibility/subjects/{}", qualified_segment(&qualify, subject)), more)
        }
        ["schemas", ..] => format!("/{rest}"),
        // Anything else is unknown under a context too: the 404 names the path as asked.
        _ => return request,
    };
    let uri = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let Ok(uri) = uri.parse::<axum::http::Uri>() else { return request };
    // A new request rather than this one with its URI changed: this one carries the `/contexts/...` route's path
    // parameters, which the route it is passed to would read as its own. What authentication found goes along.
    let (parts, body) = request.into_parts();
    let mut forwarded = axum::extract::Request::new(body);
    *forwarded.method_mut() = parts.method;
    *forwarded.uri_mut() = uri;
    *forwarded.version_mut() = parts.version;
    *forwarded.headers_mut() = parts.headers;
    if let Some(access) = parts.extensions.get::<Access>() {
        forwarded.extensions_mut().insert(access.clone());
    }
    if let Some(principal) = parts.extensions.get::<weir_http::Principal>() {
        forwarded.extensions_mut().insert(principal.clone());
    }
    forwarded
}

fn join(base: &str, more: &[&str]) -> String {
    if more.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{}", more.join("/"))
    }
}

/// A path segment naming a subject, qualified with the context and encoded again.
fn qualified_segment(qualify: &impl Fn(&str) -> String, segment: &str) -> String {
    percent_encode(&qualify(&percent_decode(segment)))
}

fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

fn percent_encode(text: &str) -> String {
    // Everything but unreserved characters and ':' (which Confluent's clients send as it is in qualified subjects).
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b':');
    percent_encoding::utf8_percent_encode(text, SET).to_string()
}

/// `GET /contexts`: the contexts that hold subjects, the default one first.
async fn contexts(State(s): State<Arc<SchemaService>>) -> Response {
    answer(json!(s.state().contexts()))
}

// ---- answers and errors ----

fn answer(body: Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// An error in the registry's JSON form.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        if e.code() >= 50000 {
            tracing::warn!(error = %e, "schema registry request failed");
        }
        ApiError {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, json!({"error_code": self.code, "message": self.message}).to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

type Result<T> = std::result::Result<T, ApiError>;

fn unprocessable(message: String) -> ApiError {
    ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, code: 422, message }
}

/// 403 as Confluent's authorizer words it.
fn require(access: &Access, operation: Operation, resource_type: ResourceType, name: &str) -> Result<()> {
    if access.allows(operation, resource_type, name) {
        return Ok(());
    }
    let (op, kind) = (operation.to_string(), resource_type.to_string());
    Err(ApiError {
        status: StatusCode::FORBIDDEN,
        code: 40301,
        message: format!("User {} is denied operation {op} on {kind}: {name}", access.principal()),
    })
}

fn subject_access(access: &Access, operation: Operation, subject: &str) -> Result<()> {
    require(access, operation, ResourceType::Subject, subject)
}

/// The registry's global settings are the cluster's configuration, as far as ACLs go.
fn global_access(access: &Access, operation: Operation) -> Result<()> {
    require(access, operation, ResourceType::Cluster, weir_security::CLUSTER)
}

/// A JSON body, parsed by hand so a malformed one gets the registry's 422 and not a framework's answer.
fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| unprocessable(format!("the request body does not parse: {e}")))
}

/// The query parameters the registry's paths take; each path reads those it knows and ignores the rest, as
/// Confluent's does.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Flags {
    #[serde(deserialize_with = "flag")]
    deleted: bool,
    #[serde(deserialize_with = "flag")]
    permanent: bool,
    #[serde(deserialize_with = "flag")]
    verbose: bool,
    #[serde(deserialize_with = "flag")]
    default_to_global: bool,
    #[serde(deserialize_with = "flag")]
    force: bool,
    /// Absent: every subject of every context. Empty: the default context's. `:.ctx:`: that context's. `:*:`: all.
    subject_prefix: Option<String>,
    #[serde(deserialize_with = "flag")]
    latest_only: bool,
}

impl Flags {
    /// The subjects `subjectPrefix` selects, as Confluent's registry reads it (see the field).
    fn subjects(&self, state: &crate::Registry) -> Vec<String> {
        match self.subject_prefix.as_deref() {
            None | Some(":*:") => state.subjects(self.deleted, ""),
            Some(prefix) if prefix.starts_with(':') => state.subjects(self.deleted, prefix),
            Some(prefix) => state
                .subjects(self.deleted, prefix)
                .into_iter()
                .filter(|subject| crate::registry::qualified(subject).is_none())
                .collect(),
        }
    }
}

/// A boolean query parameter as clients spell it: `true`, `True` (Python's), `TRUE`; anything else is false, as in
/// Java's `Boolean.parseBoolean`, which Confluent's registry uses.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    let s = String::deserialize(d)?;
    Ok(s.trim().eq_ignore_ascii_case("true"))
}

fn sel(version: &str) -> Result<VersionSel> {
    Ok(version.parse::<VersionSel>()?)
}

fn schema_json(info: &VersionInfo) -> Value {
    let mut v = json!({
        "subject": info.subject,
        "version": info.version,
        "id": info.schema.id,
        "schema": info.schema.text,
    });
    if info.schema.schema_type != SchemaType::Avro {
        v["schemaType"] = json!(info.schema.schema_type.as_str());
    }
    if !info.schema.references.is_empty() {
        v["references"] = json!(info.schema.references);
    }
    if info.deleted {
        v["deleted"] = json!(true);
    }
    v
}

/// A schema in a request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
    #[serde(default)]
    id: Option<i32>,
    #[serde(default)]
    version: Option<i32>,
}

impl SchemaBody {
    fn into_new(self) -> Result<NewSchema> {
        let schema_type = match self.schema_type.as_deref() {
            None | Some("") => SchemaType::Avro,
            Some(t) => t.parse::<SchemaType>().map_err(|e| ApiError::from(RegistryError::InvalidSchema(e)))?,
        };
        Ok(NewSchema {
            schema_type,
            schema: self.schema,
            references: self.references,
            id: self.id,
            version: self.version,
        })
    }
}

// ---- schemas by id ----

async fn types() -> Response {
    answer(json!(["JSON", "PROTOBUF", "AVRO"]))
}

/// Whether the principal may read some subject that holds schema `id` (a schema is read through its subjects).
fn may_read_id(access: &Access, service: &SchemaService, id: i32) -> Result<()> {
    let holders = service.state().id_versions(id, true);
    if holders.is_empty() {
        // Unknown, or kept for a reference only: 40403 either way below.
        return Ok(());
    }
    if holders.iter().any(|(subject, _)| access.allows(Operation::Read, ResourceType::Subject, subject)) {
        Ok(())
    } else {
        subject_access(access, Operation::Read, &holders[0].0)
    }
}

async fn schema_by_id(State(s): State<Arc<SchemaService>>, access: Access, Path(id): Path<i32>) -> Result<Response> {
    may_read_id(&access, &s, id)?;
    let state = s.state();
    let schema = state.schema(id)?;
    let mut v = json!({"schema": schema.text});
    if schema.schema_type != SchemaType::Avro {
        v["schemaType"] = json!(schema.schema_type.as_str());
    }
    if !schema.references.is_empty() {
        v["references"] = json!(schema.references);
    }
    Ok(answer(v))
}

async fn raw_schema_by_id(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(id): Path<i32>,
) -> Result<Response> {
    may_read_id(&access, &s, id)?;
    let text = s.state().schema(id)?.text.clone();
    Ok(raw(text))
}

fn raw(text: String) -> Response {
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

async fn id_versions(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(id): Path<i32>,
    Query(flags): Query<Flags>,
) -> Result<Response> {
    let state = s.state();
    state.schema(id)?;
    let versions: Vec<Value> = state
        .id_versions(id, flags.deleted)
        .into_iter()
        .filter(|(subject, _)| access.allows(Operation::Describe, ResourceType::Subject, subject))
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    Ok(answer(json!(versions)))
}

async fn id_subjects(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(id): Path<i32>,
    Query(flags): Query<Flags>,
) -> Result<Response> {
    let state = s.state();
    state.schema(id)?;
    let mut subjects: Vec<String> = state
        .id_versions(id, flags.deleted)
        .into_iter()
        .map(|(subject, _)| subject)
        .filter(|subject| access.allows(Operation::Describe, ResourceType::Subject, subject))
        .collect();
    subjects.dedup();
    Ok(answer(json!(subjects)))
}

async fn list_schemas(State(s): State<Arc<SchemaService>>, access: Access, Query(flags): Query<Flags>) -> Response {
    let state = s.state();
    let mut out = Vec::new();
    for subject in flags.subjects(&state) {
        if !access.allows(Operation::Read, ResourceType::Subject, &subject) {
            continue;
        }
        let Ok(versions) = state.versions(&subject, flags.deleted) else { continue };
        let versions = if flags.latest_only { versions.last().copied().into_iter().collect() } else { versions };
        for v in versions {
            if let Ok(info) = state.version(&subject, VersionSel::Number(v), flags.deleted) {
                out.push(schema_json(&info));
            }
        }
    }
    answer(json!(out))
}

// ---- subjects ----

async fn subjects(State(s): State<Arc<SchemaService>>, access: Access, Query(flags): Query<Flags>) -> Response {
    let subjects: Vec<String> = flags
        .subjects(&s.state())
        .into_iter()
        .filter(|subject| access.allows(Operation::Describe, ResourceType::Subject, subject))
        .collect();
    answer(json!(subjects))
}

async fn versions(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Response> {
    subject_access(&access, Operation::Read, &subject)?;
    Ok(answer(json!(s.state().versions(&subject, flags.deleted)?)))
}

async fn register(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    subject_access(&access, Operation::Write, &subject)?;
    let new = body::<SchemaBody>(&bytes)?.into_new()?;
    let (id, _version) = s.register(&subject, &new).await?;
    Ok(answer(json!({"id": id})))
}

async fn version(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
) -> Result<Response> {
    subject_access(&access, Operation::Read, &subject)?;
    let info = s.state().version(&subject, sel(&version)?, flags.deleted)?;
    Ok(answer(schema_json(&info)))
}

async fn raw_version(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
) -> Result<Response> {
    subject_access(&access, Operation::Read, &subject)?;
    let info = s.state().version(&subject, sel(&version)?, flags.deleted)?;
    Ok(raw(info.schema.text))
}

async fn referenced_by(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response> {
    subject_access(&access, Operation::Read, &subject)?;
    let state = s.state();
    let info = state.version(&subject, sel(&version)?, true)?;
    Ok(answer(json!(state.referenced_by(&subject, info.version))))
}

async fn lookup(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
    bytes: Bytes,
) -> Result<Response> {
    subject_access(&access, Operation::Read, &subject)?;
    let new = body::<SchemaBody>(&bytes)?.into_new()?;
    let info = s.state().lookup(&subject, &new, flags.deleted)?;
    Ok(answer(schema_json(&info)))
}

async fn delete_version(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
) -> Result<Response> {
    subject_access(&access, Operation::Delete, &subject)?;
    let deleted = s.delete_version(&subject, sel(&version)?, flags.permanent).await?;
    Ok(answer(json!(deleted)))
}

async fn delete_subject(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Response> {
    subject_access(&access, Operation::Delete, &subject)?;
    Ok(answer(json!(s.delete_subject(&subject, flags.permanent).await?)))
}

// ---- configuration and modes ----

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

#[derive(Deserialize)]
struct ModeBody {
    mode: String,
}

async fn get_config(State(s): State<Arc<SchemaService>>, access: Access) -> Result<Response> {
    global_access(&access, Operation::DescribeConfigs)?;
    Ok(answer(json!({"compatibilityLevel": s.state().compatibility(None, true)?.as_str()})))
}

async fn put_config(State(s): State<Arc<SchemaService>>, access: Access, bytes: Bytes) -> Result<Response> {
    global_access(&access, Operation::AlterConfigs)?;
    let level: Compatibility = body::<ConfigBody>(&bytes)?.compatibility.parse()?;
    s.set_compatibility(None, level).await?;
    Ok(answer(json!({"compatibility": level.as_str()})))
}

async fn delete_config(State(s): State<Arc<SchemaService>>, access: Access) -> Result<Response> {
    global_access(&access, Operation::AlterConfigs)?;
    let was = s.delete_compatibility(None).await?;
    Ok(answer(json!({"compatibilityLevel": was.as_str()})))
}

async fn get_subject_config(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Response> {
    subject_access(&access, Operation::DescribeConfigs, &subject)?;
    let level = s.state().compatibility(Some(&subject), flags.default_to_global)?;
    Ok(answer(json!({"compatibilityLevel": level.as_str()})))
}

async fn put_subject_config(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(subject): Path<String>,
    bytes: Bytes,
) -> Result<Response> {
    subject_access(&access, Operation::AlterConfigs, &subject)?;
    let level: Compatibility = body::<ConfigBody>(&bytes)?.compatibility.parse()?;
    s.set_compatibility(Some(&subject), level).await?;
    Ok(answer(json!({"compatibility": level.as_str()})))
}

async fn delete_subject_config(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(subject): Path<String>,
) -> Result<Response> {
    subject_access(&access, Operation::AlterConfigs, &subject)?;
    let was = s.delete_compatibility(Some(&subject)).await?;
    Ok(answer(json!({"compatibilityLevel": was.as_str()})))
}

async fn get_mode(State(s): State<Arc<SchemaService>>, access: Access) -> Result<Response> {
    global_access(&access, Operation::DescribeConfigs)?;
    Ok(answer(json!({"mode": s.state().mode(None, true)?.as_str()})))
}

async fn put_mode(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Query(flags): Query<Flags>,
    bytes: Bytes,
) -> Result<Response> {
    global_access(&access, Operation::AlterConfigs)?;
    let mode: Mode = body::<ModeBody>(&bytes)?.mode.parse()?;
    s.set_mode(None, mode, flags.force).await?;
    Ok(answer(json!({"mode": mode.as_str()})))
}

async fn delete_mode(State(s): State<Arc<SchemaService>>, access: Access) -> Result<Response> {
    global_access(&access, Operation::AlterConfigs)?;
    let was = s.delete_mode(None).await?;
    Ok(answer(json!({"mode": was.as_str()})))
}

async fn get_subject_mode(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
) -> Result<Response> {
    subject_access(&access, Operation::DescribeConfigs, &subject)?;
    Ok(answer(json!({"mode": s.state().mode(Some(&subject), flags.default_to_global)?.as_str()})))
}

async fn put_subject_mode(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
    bytes: Bytes,
) -> Result<Response> {
    subject_access(&access, Operation::AlterConfigs, &subject)?;
    let mode: Mode = body::<ModeBody>(&bytes)?.mode.parse()?;
    s.set_mode(Some(&subject), mode, flags.force).await?;
    Ok(answer(json!({"mode": mode.as_str()})))
}

async fn delete_subject_mode(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(subject): Path<String>,
) -> Result<Response> {
    subject_access(&access, Operation::AlterConfigs, &subject)?;
    let was = s.delete_mode(Some(&subject)).await?;
    Ok(answer(json!({"mode": was.as_str()})))
}

// ---- compatibility ----

async fn check_all(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path(subject): Path<String>,
    Query(flags): Query<Flags>,
    bytes: Bytes,
) -> Result<Response> {
    check(&s, &access, &subject, None, flags.verbose, &bytes)
}

async fn check_one(
    State(s): State<Arc<SchemaService>>,
    access: Access,
    Path((subject, version)): Path<(String, String)>,
    Query(flags): Query<Flags>,
    bytes: Bytes,
) -> Result<Response> {
    check(&s, &access, &subject, Some(sel(&version)?), flags.verbose, &bytes)
}

fn check(
    s: &SchemaService,
    access: &Access,
    subject: &str,
    against: Option<VersionSel>,
    verbose: bool,
    bytes: &Bytes,
) -> Result<Response> {
    subject_access(access, Operation::Read, subject)?;
    let new = body::<SchemaBody>(bytes)?.into_new()?;
    let state = s.state();
    let parsed = state.parse(new.schema_type, &new.schema, &new.references)?;
    let messages = state.incompatibilities(subject, &parsed, against)?;
    let mut v = json!({"is_compatible": messages.is_empty()});
    if verbose {
        v["messages"] = json!(messages);
    }
    Ok(answer(v))
}
