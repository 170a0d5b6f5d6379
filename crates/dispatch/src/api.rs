//! Dispatch's HTTP API on weir's server, the origin's assignment service's paths under `/api/dispatch`:
//! `POST /api/dispatch/events` (a list of events, or `{"generate": N}`: written with their outbound messages in one
//! transaction), `POST|DELETE /api/dispatch/users/{id}/active` (start or refresh, end a session; `{"region": ...}`
//! optional), `PUT /api/dispatch/assignments/{id}` (`{"status": "completed" | "rejected" | "approved"}`: 404 unknown,
//! 409 not open, 400 a bad body), `GET /api/dispatch/users/{id}/assignments` (refreshes the session) and
//! `GET /api/dispatch/stats`. The seed's own paths, `/users/{id}/active`, `/users/{id}/assignments` and
//! `/assignments/{id}`, are served at the root too, so its scripts and web app work unchanged. Errors are JSON:
//! `{"error_code": ..., "error": ...}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use sqlx::Row;
use weir_runtime::api_error::{bad, ApiError};

use crate::assign::{self, Outcome, SettleError};
use crate::events::{self, DetectionEvent, State as EventState, LOCATIONS, REGIONS, RULE_TYPES};
use crate::store;
use crate::system::Dispatch;

/// The routes, ready to merge into weir's HTTP server.
pub fn routes(dispatch: Dispatch) -> Router {
    let mut router =
        Router::new().route("/api/dispatch/events", post(add_events)).route("/api/dispatch/stats", get(stats));
    for prefix in ["/api/dispatch", ""] {
        router = router
            .route(&format!("{prefix}/users/{{id}}/active"), post(activate).delete(deactivate))
            .route(&format!("{prefix}/users/{{id}}/assignments"), get(assignments))
            .route(&format!("{prefix}/assignments/{{id}}"), put(settle));
    }
    router.with_state(dispatch)
}

/// Most events one request may write.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;

/// An event of a request body: the origin's camelCase fields; `eventId` optional (a new one), the state always
/// "Not Viewed".
fn event(v: &Value, at: usize, now_ms: i64) -> Result<DetectionEvent, ApiError> {
    let field = |name: &str| v.get(name).filter(|x| !x.is_null());
    let text = |name: &str, allowed: Option<&[&str]>| -> Result<Option<String>, ApiError> {
        match field(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.len() <= 255 && allowed.is_none_or(|a| a.contains(&s.as_str())) => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(bad(match allowed {
                Some(a) => format!("[{at}].{name}: must be one of {}", a.join(", ")),
                None => format!("[{at}].{name}: must be a string of at most 255 characters"),
            })),
        }
    };
    let required = |name: &str, allowed: &[&str]| -> Result<String, ApiError> {
        text(name, Some(allowed))?.ok_or_else(|| bad(format!("[{at}].{name}: missing")))
    };
    let severity = match field("severity").and_then(Value::as_i64) {
        Some(s @ 1..=5) => s as i32,
        _ => return Err(bad(format!("[{at}].severity: must be an integer from 1 to 5"))),
    };
    let event_id = match field("eventId") {
        // Time-ordered, as `generate`'s, for the indexes keyed by event id.
        None => uuid::Uuid::now_v7(),
        Some(Value::String(s)) => {
            uuid::Uuid::parse_str(s).map_err(|_| bad(format!("[{at}].eventId: must be a UUID")))?
        }
        Some(_) => return Err(bad(format!("[{at}].eventId: must be a UUID"))),
    };
    Ok(DetectionEvent {
        event_id,
        region: required("region", &REGIONS)?,
        rule_type: required("ruleType", &RULE_TYPES)?,
        location: text("location", Some(&LOCATIONS))?,
        severity,
        device_id: text("deviceId", None)?,
        camera_id: text("cameraId", None)?,
        frame_reference: text("frameReference", None)?,
        state: EventState::NotViewed,
        created_at_ms: now_ms,
    })
}

async fn add_events(State(d): State<Dispatch>, body: Option<Json<Value>>) -> Result<Response, ApiError> {
    let Some(Json(body)) = body else {
        return Err(bad("the body must be JSON: a list of events or {\"generate\": N}"));
    };
    let now = weir_runtime::time::now_ms();
    let list = match &body {
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_EVENTS_PER_REQUEST {
                return Err(bad(format!("from 1 to {MAX_EVENTS_PER_REQUEST} events a request")));
            }
            items.iter().enumerate().map(|(i, v)| event(v, i, now)).collect::<Result<Vec<_>, _>>()?
        }
        Value::Object(o) if o.contains_key("generate") => match o["generate"].as_u64() {
            Some(n @ 1..) if n as usize <= MAX_EVENTS_PER_REQUEST => {
                events::generate(n as usize, now, &mut rand::thread_rng())
            }
            _ => return Err(bad(format!("generate: must be from 1 to {MAX_EVENTS_PER_REQUEST}"))),
        },
        _ => return Err(bad("the body must be a list of events or {\"generate\": N}")),
    };
    let mut tx = d.store.begin().await?;
    let enqueued = store::insert_and_relay(&mut tx, d.store.dialect(), &list).await.map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError(StatusCode::CONFLICT, "an event with one of these eventIds exists".into())
        }
        _ => ApiError::from(e),
    })?;
    tx.commit().await?;
    d.outbox.committed(enqueued);
    d.wake.notify_one();
    let ids: Vec<String> = list.iter().map(|e| e.event_id.to_string()).collect();
    Ok((StatusCode::CREATED, Json(json!({"written": ids.len(), "eventIds": ids}))).into_response())
}

async fn activate(
    State(d): State<Dispatch>,
    Path(user): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let user = user_id(&user)?;
    // The body is optional (the origin's clients send none, or an empty one with a JSON content type).
    let body: Option<Value> = match body.iter().all(u8::is_ascii_whitespace) {
        true => None,
        false => Some(serde_json::from_slice(&body).map_err(|e| bad(format!("the body must be JSON: {e}")))?),
    };
    let region = match body.as_ref().and_then(|b| b.get("region")) {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if REGIONS.contains(&r.as_str()) => Some(r.clone()),
        Some(_) => return Err(bad(format!("region: must be one of {}", REGIONS.join(", ")))),
    };
    let now = weir_runtime::time::now_ms();
    let (region, open) = assign::register(&d.store, &user, region.as_deref()).await?;
    d.sessions.start(&user, region.as_deref(), open, now).await.map_err(unavailable)?;
    d.wake.notify_one();
    Ok(Json(json!({
        "userId": user,
        "active": true,
        "region": region,
        "open": open,
        "expiresInSeconds": d.settings.session_ttl_seconds,
    })))
}

fn unavailable(e: weir_runtime::kv::KvError) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("sessions: {e}"))
}

/// Ends a session: its open assignments go back to the queue at once.
async fn deactivate(State(d): State<Dispatch>, Path(user): Path<String>) -> Result<Json<Value>, ApiError> {
    let user = user_id(&user)?;
    if !d.sessions.end(&user).await.map_err(unavailable)? {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no session for user {user}")));
    }
    let back = assign::take_back(&d.store, std::slice::from_ref(&user), weir_runtime::time::now_ms()).await?;
    let returned = back.len();
    if returned > 0 {
        metrics::counter!("dispatch_taken_back_total", "reason" => "session ended").increment(returned as u64);
        d.committed(back).await;
        d.wake.notify_one();
    }
    Ok(Json(json!({"userId": user, "active": false, "returned": returned})))
}

/// Refreshes a reviewer's session on their activity, if they have one (settling after it ended does not revive it).
async fn refresh(d: &Dispatch, user: &str, now_ms: i64) -> Result<bool, ApiError> {
    if !d.sessions.is_active(user).await.map_err(unavailable)? {
        return Ok(false);
    }
    let (region, open) = assign::reviewer(&d.store, user).await?.unwrap_or((None, 0));
    d.sessions.start(user, region.as_deref(), open, now_ms).await.map_err(unavailable)?;
    Ok(true)
}

fn user_id(s: &str) -> Result<String, ApiError> {
    if s.is_empty() || s.len() > 100 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("userId: 1 to 100 characters, no spaces"));
    }
    Ok(s.to_string())
}

async fn settle(
    State(d): State<Dispatch>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Result<Json<Value>, ApiError> {
    let status = body.as_ref().and_then(|Json(b)| b.get("status")).and_then(Value::as_str);
    let Some(outcome) = status.and_then(Outcome::parse) else {
        return Err(bad("status: must be completed, rejected or approved"));
    };
    let now = weir_runtime::time::now_ms();
    match assign::settle(&d.store, &id, outcome, now, d.settings.requeue_rejected).await {
        Ok(settled) => {
            d.outbox.committed(settled.enqueued);
            let counts = [(settled.user_id.clone(), settled.open)];
            if let Err(e) = d.sessions.publish_counts(&counts).await {
                tracing::warn!("dispatch: cannot write user_assignments: {e}");
            }
            // Settled and committed: the answer says so whatever happens to the session's refresh.
            if let Err(e) = refresh(&d, &settled.user_id, now).await {
                tracing::warn!("dispatch: cannot refresh {}'s session: {}", settled.user_id, e.1);
            }
            d.wake.notify_one();
            Ok(Json(json!({
                "assignmentId": id,
                "eventId": settled.event_id,
                "userId": settled.user_id,
                "status": outcome.as_str(),
                "requeued": settled.requeued,
            })))
        }
        Err(SettleError::Unknown(_)) => Err(ApiError(StatusCode::NOT_FOUND, format!("no assignment {id}"))),
        Err(e @ SettleError::NotOpen { .. }) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
        Err(e) => Err(e.into()),
    }
}

async fn assignments(State(d): State<Dispatch>, Path(user): Path<String>) -> Result<Json<Value>, ApiError> {
    let user = user_id(&user)?;
    let active = refresh(&d, &user, weir_runtime::time::now_ms()).await?;
    let p = d.store.dialect().param(1);
    let sql = format!(
        "SELECT a.assignment_id, a.event_id, a.status, a.created_at, e.region, e.rule_type, e.severity \
         FROM assignments a LEFT JOIN detection_events e ON e.event_id = a.event_id \
         WHERE a.user_id = {p} AND a.status = 'open' ORDER BY a.created_at, a.assignment_id"
    );
    let rows = sqlx::query(&sql).bind(user.clone()).fetch_all(d.store.pool()).await?;
    let list = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "assignmentId": r.try_get::<String, _>(0)?,
                "eventId": r.try_get::<String, _>(1)?,
                "status": r.try_get::<String, _>(2)?,
                "assignedAt": weir_runtime::time::format_rfc3339(r.try_get(3)?),
                "region": r.try_get::<Option<String>, _>(4)?,
                "ruleType": r.try_get::<Option<String>, _>(5)?,
                "severity": r.try_get::<Option<i32>, _>(6)?,
            }))
        })
        .collect::<Result<Vec<Value>, sqlx::Error>>()?;
    Ok(Json(json!({"userId": user, "active": active, "open": list.len(), "assignments": list})))
}

async fn stats(State(d): State<Dispatch>) -> Result<Json<Value>, ApiError> {
    let states = store::counts_by_state(&d.store).await?;
    let waiting = assign::waiting(&d.store).await?;
    let row = sqlx::query("SELECT COUNT(*), MAX(created_at) FROM assignments").fetch_one(d.store.pool()).await?;
    let (total, last_assigned): (i64, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
    let last_change = store::last_change(&d.store).await?;
    let now = weir_runtime::time::now_ms();
    // As the assigner sees them: the hash read again only when it changed, as the stats are asked for often.
    let active: std::collections::HashSet<String> =
        d.sessions.active_recent(now).await.map_err(unavailable)?.into_iter().collect();
    let rows = sqlx::query("SELECT user_id, open_count FROM dispatch_reviewers ORDER BY user_id LIMIT 1000")
        .fetch_all(d.store.pool())
        .await?;
    let mut users = serde_json::Map::new();
    for r in &rows {
        let (user, open): (String, i32) = (r.try_get(0)?, r.try_get(1)?);
        users.insert(user.clone(), json!({"open": open, "active": active.contains(&user)}));
    }
    let (rate, latency, taken_back) = {
        let mut recent = d.recent.lock();
        let (rate, latency) = recent.summary(now);
        (rate, latency.map(|(p50, p99)| json!({"p50": p50, "p99": p99})), recent.taken_back)
    };
    Ok(Json(json!({
        "events": states.iter().map(|(s, n)| (s.as_str().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "waiting": waiting,
        "assignedTotal": total,
        "lastAssignedAtMs": last_assigned,
        "lastStateChangeAtMs": last_change,
        "activeUsers": active.len(),
        "users": users,
        "assignedPerSecond": rate,
        "timeToAssignmentMs": latency,
        "takenBack": taken_back,
    })))
}
