//! The waitroom's HTTP API on weir's server, the seed's paths:
//!
//! - `POST /api/v1/waitroom/join` `{user_id, event_id, priority 0–10}` → 201 `{session_id, position, queue_length,
//!   queued_at, expires_at, websocket_url}`; 409 the user already has an active session for the event, 503 the
//!   queue is full, 403 the event's queue is not enabled, 400 naming the field;
//! - `GET /api/v1/waitroom/status/{id}`: the session, its position and estimated wait while queued, its checkout
//!   token and URL once admitted; 404 unknown, 410 expired;
//! - `DELETE /api/v1/waitroom/leave/{id}`: leaves the queue (or gives the checkout slot back); 409 already settled;
//! - `GET /api/v1/waitroom/stream/{id}`: Server-Sent Events, the position now and on every change of the event's
//!   queue, ending once the session has left the queue (the join's `websocket_url`);
//! - `POST|GET /api/v1/waitroom/events/{event_id}/config` `{enabled, release_rate, max_concurrent, capacity,
//!   paused}` (fields left out keep their values; `paused`: joins taken, nobody admitted yet);
//! - `GET /api/v1/waitroom/events/{event_id}/stats`: waiting, in checkout, admissions per second, wait p50/p99;
//! - `POST /api/v1/waitroom/checkout/verify` `{token}`: the checkout side's check of a token (200 with its claims,
//!   401 invalid, expired or settled);
//! - `GET /api/v1/waitroom/health`: the origin's health (`kafka_enabled`, each component); weir's own `/health`
//!   stays the platform's.
//!
//! Errors are JSON: `{"error_code": ..., "error": ...}`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde_json::{json, Value};
use weir_runtime::api_error::{bad, ApiError};

use crate::model::{EventConfig, Status, MAX_PRIORITY};
use crate::room::{check_id, JoinRequest, Room, RoomError, View};

/// The routes, ready to merge into weir's HTTP server.
pub fn routes(room: Room) -> Router {
    Router::new()
        .route("/api/v1/waitroom/join", post(join))
        .route("/api/v1/waitroom/status/{id}", get(status))
        .route("/api/v1/waitroom/leave/{id}", delete(leave))
        .route("/api/v1/waitroom/stream/{id}", get(stream))
        .route("/api/v1/waitroom/events/{id}/config", post(set_config).get(get_config))
        .route("/api/v1/waitroom/events/{id}/stats", get(stats))
        .route("/api/v1/waitroom/checkout/verify", post(verify))
        .route("/api/v1/waitroom/health", get(health))
        .with_state(room)
}

/// The status each refusal answers with.
pub fn error(e: RoomError) -> ApiError {
    let status = match &e {
        RoomError::AlreadyJoined(_) | RoomError::Settled(..) => StatusCode::CONFLICT,
        RoomError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
        RoomError::NotEnabled(_) => StatusCode::FORBIDDEN,
        RoomError::NotFound(_) => StatusCode::NOT_FOUND,
        RoomError::Expired(_) => StatusCode::GONE,
        RoomError::Invalid(_) => StatusCode::BAD_REQUEST,
        RoomError::Kv(_) | RoomError::Outbox(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError(status, e.to_string())
}

/// A request's JSON object, whatever its Content-Type says (the seed's curl commands send none).
fn body(b: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice(b) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("the body is not JSON: {e}"))),
    }
}

fn text(v: &Value, field: &str) -> Result<String, ApiError> {
    match v.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(bad(format!("{field}: required"))),
        Some(_) => Err(bad(format!("{field}: must be a string"))),
    }
}

async fn join(
    State(room): State<Room>,
    headers: axum::http::HeaderMap,
    b: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let v = body(&b)?;
    let priority = match v.get("priority") {
        None | Some(Value::Null) => 0,
        Some(p) => match p.as_u64() {
            Some(p) if p <= u64::from(MAX_PRIORITY) => p as u8,
            _ => return Err(bad(format!("priority: an integer from 0 to {MAX_PRIORITY}, got {p}"))),
        },
    };
    let header = |name: &str| headers.get(name).and_then(|h| h.to_str().ok()).map(str::to_string);
    let req = JoinRequest {
        user_id: text(&v, "user_id")?,
        event_id: text(&v, "event_id")?,
        priority,
        user_agent: header("user-agent"),
        ip_address: header("x-forwarded-for").map(|f| f.split(',').next().unwrap_or_default().trim().to_string()),
    };
    let joined = room.join(req).await.map_err(error)?;
    Ok((StatusCode::CREATED, Json(joined)).into_response())
}

async fn status(State(room): State<Room>, Path(id): Path<String>) -> Result<Json<View>, ApiError> {
    Ok(Json(room.status(&id).await.map_err(error)?))
}

async fn leave(State(room): State<Room>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let s = room.leave(&id).await.map_err(error)?;
    Ok(Json(json!({"session_id": s.id, "status": s.status, "message": "Queue left successfully"})))
}

/// An event's settings, as its config body names them.
const FIELDS: [&str; 5] = ["enabled", "release_rate", "max_concurrent", "capacity", "paused"];

async fn set_config(
    State(room): State<Room>,
    Path(id): Path<String>,
    b: axum::body::Bytes,
) -> Result<Json<EventConfig>, ApiError> {
    let v = body(&b)?;
    check_id("event_id", &id).map_err(error)?;
    // Fields left out keep their current values.
    let mut config = room.config(&id).await.map_err(error)?;
    if let Some(e) = v.get("enabled") {
        config.enabled = e.as_bool().ok_or_else(|| bad("enabled: must be true or false"))?;
    }
    if let Some(e) = v.get("paused") {
        config.paused = e.as_bool().ok_or_else(|| bad("paused: must be true or false"))?;
    }
    let number = |field: &str, lo: u64, hi: u64| -> Result<Option<u64>, ApiError> {
        match v.get(field) {
            None => Ok(None),
            Some(n) => match n.as_u64() {
                Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
                _ => Err(bad(format!("{field}: an integer from {lo} to {hi}, got {n}"))),
            },
        }
    };
    if let Some(n) = number("release_rate", 1, 100_000)? {
        config.release_rate = n;
    }
    if let Some(n) = number("max_concurrent", 1, 10_000_000)? {
        config.max_concurrent = n;
    }
    if let Some(n) = number("capacity", 1, 100_000_000)? {
        config.capacity = n;
    }
    if let Some(k) = v.as_object().and_then(|o| o.keys().find(|k| !FIELDS.contains(&k.as_str())).cloned()) {
        return Err(bad(format!("{k}: unknown field ({})", FIELDS.join(", "))));
    }
    room.set_config(&id, &config).await.map_err(error)?;
    Ok(Json(config))
}

async fn get_config(State(room): State<Room>, Path(id): Path<String>) -> Result<Json<EventConfig>, ApiError> {
    check_id("event_id", &id).map_err(error)?;
    Ok(Json(room.config(&id).await.map_err(error)?))
}

async fn stats(State(room): State<Room>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    check_id("event_id", &id).map_err(error)?;
    let (waiting, in_checkout) = room.counts(&id).await.map_err(error)?;
    let (rate, waits) = room.stats().lock().summary(&id, chrono::Utc::now().timestamp_millis());
    Ok(Json(json!({
        "event_id": id,
        "waiting": waiting,
        "in_checkout": in_checkout,
        "admitted_per_second": rate,
        "wait_ms_p50": waits.map(|w| w.0),
        "wait_ms_p99": waits.map(|w| w.1),
    })))
}

async fn verify(State(room): State<Room>, b: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let v = body(&b)?;
    let token = text(&v, "token")?;
    match room.verify(&token).await {
        Ok(claims) => Ok(Json(json!({"valid": true, "claims": claims}))),
        Err(e @ (RoomError::Kv(_) | RoomError::Outbox(_))) => Err(error(e)),
        Err(e) => Err(ApiError(StatusCode::UNAUTHORIZED, e.to_string())),
    }
}

async fn health(State(room): State<Room>) -> (StatusCode, Json<Value>) {
    let store = match room.active_events().await {
        Ok(_) => json!({"status": "ok"}),
        Err(e) => json!({"status": "down", "error": e.to_string()}),
    };
    let ok = store["status"] == "ok";
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "service": "waitroom",
        "version": env!("CARGO_PKG_VERSION"),
        "kafka_enabled": room.kafka_enabled(),
        "grpc": room.grpc_addr().map(|a| a.to_string()),
        "components": {
            "store": store,
            "events": if room.kafka_enabled() { json!({"status": "ok", "via": "outbox"}) } else { json!({"status": "disabled"}) },
        },
    });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

/// Position updates for one session: now, then at every change of its event's queue (at most every 100 ms), until
/// it is no longer queued (that update is the last).
pub fn positions(room: Room, id: String) -> impl Stream<Item = Result<View, RoomError>> {
    futures_util::stream::unfold((room, id, None::<tokio::sync::broadcast::Receiver<_>>, false), |state| async move {
        let (room, id, changes, done) = state;
        if done {
            return None;
        }
        let mut changes = match changes {
            Some(c) => {
                let mut c: tokio::sync::broadcast::Receiver<crate::room::Change> = c;
                let event = match room.session(&id).await {
                    Ok(Some(s)) => s.event_id,
                    Ok(None) => return Some((Err(RoomError::NotFound(id.clone())), (room, id, None, true))),
                    Err(e) => return Some((Err(e), (room, id, None, true))),
                };
                // The next change of this event (a lagging receiver just looks again), or a periodic refresh so
                // the estimated wait moves even when nothing else does.
                let wait = async {
                    loop {
                        match c.recv().await {
                            Ok(change) if change.event_id == event => return,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending().await,
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(15), wait).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                c
            }
            None => room.subscribe(),
        };
        // Drain what piled up during the pause: one update covers them.
        while changes.try_recv().is_ok() {}
        let update = room.status(&id).await;
        let done = !matches!(&update, Ok(v) if v.status == Status::Queued);
        Some((update, (room, id, Some(changes), done)))
    })
}

async fn stream(
    State(room): State<Room>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Unknown or expired sessions are refused before the stream starts.
    room.status(&id).await.map_err(error)?;
    use futures_util::StreamExt;
    let events = positions(room, id).map(|update| {
        Ok(match update {
            Ok(view) => Event::default().event("position").json_data(&view).unwrap_or_default(),
            Err(e) => Event::default().event("error").data(e.to_string()),
        })
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
