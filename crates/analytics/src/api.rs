//! The pipeline's HTTP API, served by weir's HTTP server in two vocabularies at once: the seed document's and its
//! origin's (data-pipeline-zeal's FastAPI service and its processor's admin port), so that scripts and dashboards
//! written for either work unchanged.
//!
//! - Paths: the document's `/api/stats` and `/api/event-types`, the origin's `/api/aggregations/stats` and
//!   `/api/aggregations/event-types`, `/ready`, `/api/metrics/{producer,processor,summary}` and
//!   `/admin/{status,health,flush}`; both name `/api/aggregations`, `/api/aggregations/latest`,
//!   `/api/pipeline/memory` and `POST /api/pipeline/flush`.
//! - Where one path serves both, the answer is a superset: the document's keys (`items`, `total`, ...) beside the
//!   origin's (`timestamp`, `count`, `records`), rows carrying both `unique_users` and `unique_user_count`.
//! - Query parameters: `start`/`end` (windows overlapping the range) and the origin's `from_time`/`to_time` (windows
//!   inside it: `window_start >= from_time`, `window_end <= to_time`).
//!
//! Bad parameters get 400 with a message naming them; a database that cannot be reached, 503.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;
use weir_runtime::sql::Dialect;
use weir_runtime::SqlStore;

use crate::aggregator::Control;
use crate::pipeline_metrics as m;
use crate::time::{format_rfc3339, parse_rfc3339};

#[derive(Clone, Debug)]
struct Api {
    store: SqlStore,
    control: Control,
}

/// The routes, ready to merge into weir's HTTP server.
pub fn routes(store: SqlStore, control: Control) -> Router {
    Router::new()
        .route("/api/aggregations", get(aggregations))
        .route("/api/aggregations/latest", get(latest))
        .route("/api/stats", get(stats))
        .route("/api/aggregations/stats", get(stats))
        .route("/api/event-types", get(event_types))
        .route("/api/aggregations/event-types", get(origin_event_types))
        .route("/api/pipeline/memory", get(memory))
        .route("/api/pipeline/flush", post(flush))
        .route("/api/metrics/producer", get(producer_metrics))
        .route("/api/metrics/processor", get(processor_metrics))
        .route("/api/metrics/summary", get(summary))
        .route("/ready", get(|| async { Json(json!({"ready": true})) }))
        .route("/admin/status", get(admin_status))
        .route("/admin/health", get(|| async { Json(json!({"status": "healthy"})) }))
        .route("/admin/flush", post(flush))
        .with_state(Api { store, control })
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}"))
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn now() -> String {
    format_rfc3339(weir_runtime::time::now_ms())
}

/// The columns of a row as the origin's API returns them (its `AggregationRecord`); [`Aggregation`] has them all.
pub const ORIGIN_COLUMNS: [&str; 10] = [
    "id",
    "window_start",
    "window_end",
    "event_type",
    "event_count",
    "unique_user_count",
    "unique_session_count",
    "total_duration_ms",
    "avg_duration_ms",
    "created_at",
];

/// A row of `hourly_aggregations`, with the columns of both vocabularies.
#[derive(Debug, Serialize)]
pub struct Aggregation {
    pub id: i64,
    pub window_start: String,
    pub window_end: String,
    pub event_type: String,
    pub event_count: i64,
    /// The seed document's name for `unique_user_count` (a HyperLogLog estimate: exact to within a few users up to
    /// about 40,000, then within 0.81 %).
    pub unique_users: i64,
    pub unique_user_count: i64,
    /// Distinct sessions, estimated as users are.
    pub unique_session_count: i64,
    pub total_duration_ms: i64,
    /// `total_duration_ms` over the events that carried a duration; `null` when none did.
    pub avg_duration_ms: Option<f64>,
    pub first_event_at: String,
    pub last_event_at: String,
    pub amount_sum: f64,
    pub is_final: bool,
    /// When the row was first written; `updated_at`, when last added to.
    pub created_at: String,
    pub updated_at: String,
}

/// The row's columns; SQLite's `id` is its rowid (a table made before the column has no `id` of its own).
fn columns(dialect: Dialect) -> String {
    let id = if dialect == Dialect::Postgres { "id" } else { "rowid" };
    format!(
        "{id}, window_start, window_end, event_type, event_count, unique_users, unique_user_count, \
         unique_session_count, total_duration_ms, avg_duration_ms, first_event_at, last_event_at, amount_sum, \
         is_final, created_at, updated_at"
    )
}

fn row(r: &sqlx::any::AnyRow) -> Result<Aggregation, sqlx::Error> {
    Ok(Aggregation {
        id: r.try_get(0)?,
        window_start: r.try_get(1)?,
        window_end: r.try_get(2)?,
        event_type: r.try_get(3)?,
        event_count: r.try_get(4)?,
        unique_users: r.try_get(5)?,
        unique_user_count: r.try_get(6)?,
        unique_session_count: r.try_get(7)?,
        total_duration_ms: r.try_get(8)?,
        avg_duration_ms: r.try_get(9)?,
        first_event_at: r.try_get(10)?,
        last_event_at: r.try_get(11)?,
        amount_sum: r.try_get(12)?,
        is_final: r.try_get::<i32, _>(13)? != 0,
        created_at: r.try_get(14)?,
        updated_at: r.try_get(15)?,
    })
}

/// The time range in either vocabulary, as a SQL condition over `$1` to `$4` (a `''` parameter matches all).
#[derive(Debug, Default, Deserialize)]
struct Range {
    start: Option<String>,
    end: Option<String>,
    from_time: Option<String>,
    to_time: Option<String>,
}

/// The range's four bounds, normalised to the stored form (RFC 3339, UTC, milliseconds), in the order of
/// [`RANGE_FILTER`]'s parameters.
struct Bounds {
    start: String,
    end: String,
    from_time: String,
    to_time: String,
}

/// Windows overlapping [start, end) (the document's) and inside [from_time, to_time] (the origin's).
const RANGE_FILTER: &str = "($1 = '' OR window_end > $1) AND ($2 = '' OR window_start < $2) \
                            AND ($3 = '' OR window_start >= $3) AND ($4 = '' OR window_end <= $4)";

fn instant(name: &str, v: &Option<String>) -> Result<String, ApiError> {
    match v {
        None => Ok(String::new()),
        Some(s) if s.is_empty() => Ok(String::new()),
        Some(s) => parse_rfc3339(s).map(format_rfc3339).ok_or_else(|| {
            bad(format!("{name}={s:?} is not a time: use ISO 8601 / RFC 3339, e.g. 2024-01-01T00:00:00Z"))
        }),
    }
}

impl Range {
    fn bounds(&self) -> Result<Bounds, ApiError> {
        let b = Bounds {
            start: instant("start", &self.start)?,
            end: instant("end", &self.end)?,
            from_time: instant("from_time", &self.from_time)?,
            to_time: instant("to_time", &self.to_time)?,
        };
        for (a, an, z, zn) in [(&b.start, "start", &b.end, "end"), (&b.from_time, "from_time", &b.to_time, "to_time")] {
            if !a.is_empty() && !z.is_empty() && a > z {
                return Err(bad(format!("{an} {a} is after {zn} {z}")));
            }
        }
        Ok(b)
    }
}

#[derive(Debug, Deserialize)]
struct Filters {
    event_type: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
    #[serde(flatten)]
    range: Range,
}

type Q<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn query<T>(q: Q<T>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| bad(format!("bad query: {}", e.body_text())))
}

/// `GET /api/aggregations`: rows newest window first, filtered by type and time, paged.
async fn aggregations(State(api): State<Api>, q: Q<Filters>) -> Result<Json<Value>, ApiError> {
    let f = query(q)?;
    let b = f.range.bounds()?;
    let limit = f.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(bad("limit must be between 1 and 10000"));
    }
    let offset = f.offset.unwrap_or(0);
    if offset < 0 {
        return Err(bad("offset must not be negative"));
    }
    let filter = format!("{RANGE_FILTER} AND ($5 = '' OR event_type = $5)");
    let ty = f.event_type.clone().unwrap_or_default();
    let total: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM hourly_aggregations WHERE {filter}"))
        .bind(&b.start)
        .bind(&b.end)
        .bind(&b.from_time)
        .bind(&b.to_time)
        .bind(&ty)
        .fetch_one(api.store.pool())
        .await?
        .get(0);
    let rows = sqlx::query(&format!(
        "SELECT {} FROM hourly_aggregations WHERE {filter} ORDER BY window_start DESC, event_type LIMIT $6 OFFSET $7",
        columns(api.store.dialect())
    ))
    .bind(&b.start)
    .bind(&b.end)
    .bind(&b.from_time)
    .bind(&b.to_time)
    .bind(&ty)
    .bind(limit)
    .bind(offset)
    .fetch_all(api.store.pool())
    .await?;
    let records = serde_json::to_value(rows.iter().map(row).collect::<Result<Vec<_>, _>>()?).unwrap_or_default();
    Ok(Json(json!({
        "timestamp": now(),
        "count": rows.len(),
        "records": records,
        "items": records,
        "total": total,
        "limit": limit,
        "offset": offset,
    })))
}

#[derive(Debug, Deserialize)]
struct Latest {
    limit: Option<i64>,
}

/// `GET /api/aggregations/latest`: the rows most recently created (the origin's order), newest window first among
/// rows created together.
async fn latest(State(api): State<Api>, q: Q<Latest>) -> Result<Json<Value>, ApiError> {
    let limit = query(q)?.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(bad("limit must be between 1 and 100"));
    }
    let rows = sqlx::query(&format!(
        "SELECT {} FROM hourly_aggregations ORDER BY created_at DESC, window_start DESC, event_type LIMIT $1",
        columns(api.store.dialect())
    ))
    .bind(limit)
    .fetch_all(api.store.pool())
    .await?;
    let records = serde_json::to_value(rows.iter().map(row).collect::<Result<Vec<_>, _>>()?).unwrap_or_default();
    Ok(Json(json!({"timestamp": now(), "count": rows.len(), "records": records, "items": records})))
}

/// `GET /api/stats` and `GET /api/aggregations/stats`: the origin's per-type rows over the range (`stats`) and the
/// document's pipeline counters and per-type totals. `total_unique_users` and `total_unique_sessions` add up the
/// windows' distinct counts, as the origin's do: a user active in two hours counts twice.
async fn stats(State(api): State<Api>, q: Q<Range>) -> Result<Json<Value>, ApiError> {
    let range = query(q)?;
    let b = range.bounds()?;
    let rows = sqlx::query(&format!(
        "SELECT event_type, CAST(SUM(event_count) AS BIGINT), CAST(SUM(unique_user_count) AS BIGINT), \
         CAST(SUM(unique_session_count) AS BIGINT), CAST(AVG(event_count) AS DOUBLE PRECISION), COUNT(*) \
         FROM hourly_aggregations WHERE {RANGE_FILTER} GROUP BY event_type ORDER BY 2 DESC, event_type"
    ))
    .bind(&b.start)
    .bind(&b.end)
    .bind(&b.from_time)
    .bind(&b.to_time)
    .fetch_all(api.store.pool())
    .await?;
    let mut per_type = serde_json::Map::new();
    let mut stats = Vec::new();
    let mut stored = 0i64;
    for r in &rows {
        let (t, n, windows): (String, i64, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(5)?);
        stored += n;
        per_type.insert(t.clone(), json!({"events": n, "windows": windows}));
        stats.push(json!({
            "event_type": t,
            "total_events": n,
            "total_unique_users": r.try_get::<i64, _>(2)?,
            "total_unique_sessions": r.try_get::<i64, _>(3)?,
            "avg_events_per_hour": r.try_get::<f64, _>(4)?,
            "window_count": windows,
        }));
    }
    let s = api.control.snapshot();
    let given = |v: &String| (!v.is_empty()).then(|| v.clone());
    Ok(Json(json!({
        "timestamp": now(),
        "time_range_start": given(&b.from_time).or(given(&b.start)),
        "time_range_end": given(&b.to_time).or(given(&b.end)),
        "stats": stats,
        "events_consumed": s.events_consumed + s.events_in_memory,
        "events_stored": stored,
        "events_in_memory": s.events_in_memory,
        "late_events": s.late_events,
        "invalid_events": s.invalid_events,
        "windows_flushed": s.windows_flushed,
        "watermark": s.watermark_ms.map(format_rfc3339),
        "last_flush_at": s.last_flush_ms.map(format_rfc3339),
        "per_type": per_type,
    })))
}

async fn distinct_types(store: &SqlStore) -> Result<Vec<String>, ApiError> {
    let rows = sqlx::query("SELECT DISTINCT event_type FROM hourly_aggregations ORDER BY event_type")
        .fetch_all(store.pool())
        .await?;
    Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<Vec<String>, _>>()?)
}

/// `GET /api/event-types`: the document's bare list.
async fn event_types(State(api): State<Api>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(distinct_types(&api.store).await?))
}

/// `GET /api/aggregations/event-types`: the origin's object (a list cannot carry its `timestamp`).
async fn origin_event_types(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"timestamp": now(), "event_types": distinct_types(&api.store).await?})))
}

fn seconds_until(ms: i64) -> f64 {
    ((ms - weir_runtime::time::now_ms()).max(0) as f64 / 100.0).round() / 10.0
}

/// `GET /api/pipeline/memory`: what the aggregator holds, in both vocabularies. `next_possible_db_write` is when
/// the watermark can pass the earliest window (its end plus the grace period), the earliest its row can be final.
async fn memory(State(api): State<Api>) -> Json<Value> {
    let s = api.control.snapshot();
    let by_type: Vec<Value> =
        s.events_by_type.iter().map(|(t, n)| json!({"event_type": t, "events_in_memory": n})).collect();
    Json(json!({
        "timestamp": now(),
        "total_events_in_memory": s.events_in_memory,
        "active_windows": s.open_windows,
        "events_by_type": by_type,
        "seconds_until_next_flush": seconds_until(s.next_flush_ms),
        "earliest_window_end": s.earliest_window_end_ms.map(format_rfc3339),
        "next_possible_db_write": s.earliest_window_end_ms.map(|e| format_rfc3339(e + api.control.grace_ms())),
        "open_windows": s.open_windows,
        "events_in_memory": s.events_in_memory,
        "watermark": s.watermark_ms.map(format_rfc3339),
        "next_flush_at": format_rfc3339(s.next_flush_ms),
    }))
}

/// `GET /admin/status`: the origin processor's own view of its memory.
async fn admin_status(State(api): State<Api>) -> Json<Value> {
    let s = api.control.snapshot();
    let by_type: serde_json::Map<String, Value> = s.events_by_type.iter().map(|(t, n)| (t.clone(), json!(n))).collect();
    Json(json!({
        "total_events_in_memory": s.events_in_memory,
        "active_windows": s.open_windows,
        "events_by_type": by_type,
        "seconds_until_next_flush": seconds_until(s.next_flush_ms),
        "earliest_window_end": s.earliest_window_end_ms.map(format_rfc3339),
    }))
}

/// `POST /api/pipeline/flush` and `POST /admin/flush`: writes everything in memory now, open windows included,
/// added to what their rows hold.
async fn flush(State(api): State<Api>) -> Response {
    match api.control.flush().await {
        Ok(r) => Json(json!({
            "success": true,
            "windows_flushed": r.windows_flushed,
            "events_written": r.events_written,
            "windows_finalized": r.windows_finalized,
            "rewound": r.rewound,
            "message": format!("flushed {} events in {} windows", r.events_written, r.windows_flushed),
        }))
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"success": false, "windows_flushed": 0, "events_written": 0, "message": e, "error": e})),
        )
            .into_response(),
    }
}

/// The process's metrics read from the exporter, or 503 when none is installed (the API runs without `weir up`).
fn exported() -> Result<BTreeMap<String, m::Family>, ApiError> {
    weir_runtime::exposition::render()
        .map(|text| m::parse(&text))
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "no metrics exporter in this process".into()))
}

fn metrics_of(source: &str, prefix: &str) -> Result<Json<Value>, ApiError> {
    let families: BTreeMap<String, m::Family> =
        exported()?.into_iter().filter(|(name, _)| name.starts_with(prefix)).collect();
    Ok(Json(json!({"timestamp": now(), "source": source, "metrics": families})))
}

/// `GET /api/metrics/producer`: the `producer_*` metrics as JSON, as the origin's API parsed its producer's.
async fn producer_metrics() -> Result<Json<Value>, ApiError> {
    metrics_of("producer", "producer_")
}

/// `GET /api/metrics/processor`: the `processor_*` metrics.
async fn processor_metrics() -> Result<Json<Value>, ApiError> {
    metrics_of("processor", "processor_")
}

/// `GET /api/metrics/summary`: events produced and consumed per type, lag, open windows and errors, from this
/// process's metrics (the origin asked its Prometheus).
async fn summary() -> Result<Json<Value>, ApiError> {
    let f = exported()?;
    let per_type = |name: &str| -> Vec<Value> {
        f.get(name).map_or_else(Vec::new, |family| {
            family
                .values
                .iter()
                .map(|s| {
                    json!({"event_type": s.labels.get("event_type").map_or("unknown", String::as_str), "count": s.value})
                })
                .collect()
        })
    };
    Ok(Json(json!({
        "timestamp": now(),
        "events_produced": per_type(m::EVENTS_PRODUCED),
        "events_consumed": per_type(m::EVENTS_CONSUMED),
        "total_produced": m::sum(&f, m::EVENTS_PRODUCED, &[]),
        "total_consumed": m::sum(&f, m::EVENTS_CONSUMED, &[]),
        "consumer_lag": m::sum(&f, m::CONSUMER_LAG, &[]),
        "active_windows": m::sum(&f, m::ACTIVE_WINDOWS, &[]),
        "errors": {
            "consume_errors": m::sum(&f, m::CONSUME_ERRORS, &[]),
            "publish_errors": m::sum(&f, m::PUBLISH_ERRORS, &[]),
            "db_write_errors": m::sum(&f, m::DB_WRITE_ERRORS, &[]),
        },
    })))
}
