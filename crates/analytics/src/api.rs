//! The pipeline's HTTP API, at the seed's paths, served by weir's HTTP server: aggregations (filtered, paged), the
//! latest window, statistics, event types, the aggregator's memory, and a manual flush. Bad parameters get 400 with a
//! message naming them.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use weir_runtime::SqlStore;

use crate::aggregator::Control;
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
        .route("/api/event-types", get(event_types))
        .route("/api/pipeline/memory", get(memory))
        .route("/api/pipeline/flush", post(flush))
        .with_state(Api { store, control })
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({"error": self.1}))).into_response()
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

#[derive(Debug, Serialize)]
pub struct Aggregation {
    pub window_start: String,
    pub window_end: String,
    pub event_type: String,
    pub event_count: i64,
    pub unique_users: i64,
    pub first_event_at: String,
    pub last_event_at: String,
    pub amount_sum: f64,
    pub is_final: bool,
    pub updated_at: String,
}

const COLUMNS: &str =
    "window_start, window_end, event_type, event_count, unique_users, first_event_at, last_event_at, \
                       amount_sum, is_final, updated_at";

fn row(r: &sqlx::any::AnyRow) -> Result<Aggregation, sqlx::Error> {
    Ok(Aggregation {
        window_start: r.try_get(0)?,
        window_end: r.try_get(1)?,
        event_type: r.try_get(2)?,
        event_count: r.try_get(3)?,
        unique_users: r.try_get(4)?,
        first_event_at: r.try_get(5)?,
        last_event_at: r.try_get(6)?,
        amount_sum: r.try_get(7)?,
        is_final: r.try_get::<i32, _>(8)? != 0,
        updated_at: r.try_get(9)?,
    })
}

#[derive(Debug, Deserialize)]
struct Filters {
    event_type: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

fn instant(name: &str, v: &Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) => parse_rfc3339(s)
            .map(|ms| Some(format_rfc3339(ms)))
            .ok_or_else(|| bad(format!("{name}={s:?} is not a time: use RFC 3339, e.g. 2024-01-01T00:00:00Z"))),
    }
}

async fn aggregations(
    State(api): State<Api>,
    q: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(f) = q.map_err(|e| bad(format!("bad query: {}", e.body_text())))?;
    let start = instant("start", &f.start)?;
    let end = instant("end", &f.end)?;
    if let (Some(s), Some(e)) = (&start, &end) {
        if s > e {
            return Err(bad(format!("start {s} is after end {e}")));
        }
    }
    let limit = f.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(bad("limit must be between 1 and 10000"));
    }
    let offset = f.offset.unwrap_or(0);
    if offset < 0 {
        return Err(bad("offset must not be negative"));
    }
    // Windows overlapping [start, end): those ending after start and starting before end.
    let filter = "($1 = '' OR event_type = $1) AND ($2 = '' OR window_end > $2) AND ($3 = '' OR window_start < $3)";
    let ty = f.event_type.clone().unwrap_or_default();
    let (s, e) = (start.unwrap_or_default(), end.unwrap_or_default());
    let total: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM hourly_aggregations WHERE {filter}"))
        .bind(&ty)
        .bind(&s)
        .bind(&e)
        .fetch_one(api.store.pool())
        .await?
        .get(0);
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM hourly_aggregations WHERE {filter} ORDER BY window_start DESC, event_type LIMIT $4 OFFSET $5"
    ))
    .bind(&ty)
    .bind(&s)
    .bind(&e)
    .bind(limit)
    .bind(offset)
    .fetch_all(api.store.pool())
    .await?;
    let items = rows.iter().map(row).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(serde_json::json!({"items": items, "total": total, "limit": limit, "offset": offset})))
}

async fn latest(State(api): State<Api>) -> Result<Json<Vec<Aggregation>>, ApiError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM hourly_aggregations WHERE window_start = (SELECT MAX(window_start) FROM hourly_aggregations) \
         ORDER BY event_type"
    ))
    .fetch_all(api.store.pool())
    .await?;
    Ok(Json(rows.iter().map(row).collect::<Result<Vec<_>, _>>()?))
}

async fn stats(State(api): State<Api>) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = sqlx::query(
        "SELECT event_type, CAST(SUM(event_count) AS BIGINT), COUNT(*) FROM hourly_aggregations GROUP BY event_type ORDER BY event_type",
    )
    .fetch_all(api.store.pool())
    .await?;
    let mut per_type = serde_json::Map::new();
    let mut stored = 0i64;
    for r in &rows {
        let n: i64 = r.try_get(1)?;
        stored += n;
        per_type
            .insert(r.try_get::<String, _>(0)?, serde_json::json!({"events": n, "windows": r.try_get::<i64, _>(2)?}));
    }
    let s = api.control.snapshot();
    Ok(Json(serde_json::json!({
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

async fn event_types(State(api): State<Api>) -> Result<Json<Vec<String>>, ApiError> {
    let rows = sqlx::query("SELECT DISTINCT event_type FROM hourly_aggregations ORDER BY event_type")
        .fetch_all(api.store.pool())
        .await?;
    Ok(Json(rows.iter().map(|r| r.try_get(0)).collect::<Result<Vec<String>, _>>()?))
}

async fn memory(State(api): State<Api>) -> Json<serde_json::Value> {
    let s = api.control.snapshot();
    Json(serde_json::json!({
        "open_windows": s.open_windows,
        "events_in_memory": s.events_in_memory,
        "watermark": s.watermark_ms.map(format_rfc3339),
        "next_flush_at": format_rfc3339(s.next_flush_ms),
    }))
}

async fn flush(State(api): State<Api>) -> Result<Json<crate::aggregator::FlushReport>, ApiError> {
    api.control.flush().await.map(Json).map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))
}
