//! The wedding's HTTP API: `POST /message` (the seed simulator's body), `POST|GET /api/wedding/events`,
//! `POST /api/wedding/start`, `POST /api/wedding/advance`, `GET /api/wedding/report`, `GET /api/wedding/runs` and
//! `POST /api/wedding/simulate` (`simulation.rs`). Errors have the shape of
//! every error weir's HTTP server answers, `{"error_code": status, "message": ...}`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::TryStreamExt;
use serde_json::{json, Value};
use sqlx::Row;

use super::clock::{self, new_run, Setup};
use super::ingest::ingest;
use super::{store, Shared};
use crate::rules::{canonical_type, Priority, Team};
use crate::schedule::{Event, Outcome, Policy};

pub(super) fn router(shared: Shared) -> Router {
    Router::new()
        .route("/message", post(message))
        .route("/api/wedding/events", post(ingest_many).get(list_events))
        .route("/api/wedding/start", post(start_run))
        .route("/api/wedding/advance", post(advance))
        .route("/api/wedding/report", get(report))
        .route("/api/wedding/runs", get(runs))
        .route("/api/wedding/simulate", post(super::simulation::simulate))
        .with_state(shared)
}

pub(super) struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("wedding_rejected_events_total").increment(u64::from(self.0 == StatusCode::BAD_REQUEST));
        (self.0, Json(json!({"error_code": self.0.as_u16(), "message": self.1}))).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}"))
    }
}

pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("the body is not valid JSON: {e}")))
}

/// `POST /message`: exactly what the seed's simulator sends, one event.
async fn message(State(s): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let v = parse_body(&body)?;
    let mut answers = ingest(&s, std::slice::from_ref(&v)).await?;
    Ok(Json(answers.pop().unwrap_or(Value::Null)))
}

/// `POST /api/wedding/events`: one event or an array; all are validated before any is stored.
async fn ingest_many(State(s): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let items = match parse_body(&body)? {
        Value::Array(a) => a,
        other => vec![other],
    };
    let out = ingest(&s, &items).await?;
    Ok(Json(json!({"accepted": out.len(), "events": out})))
}

/// `POST /api/wedding/start`: a new run from 00:00 now. The optional body may set `speed` (real clock), `clock`
/// (`real` or `virtual`), `policy`, `workers` (per team), `routines` (`{"team": "routine"}` or `"team=routine,..."`)
/// and `allow_overrun`; what it leaves out comes from the service's settings.
async fn start_run(State(s): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let v = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse_body(&body)? };
    let setup = run_setup(&s, &v)?;
    let speed = match v.get("speed") {
        None | Some(Value::Null) => s.config.speed,
        Some(x) => x
            .as_f64()
            .filter(|x| *x > 0.0 && x.is_finite())
            .ok_or_else(|| bad_request(format!("speed must be a positive number, got {x}")))?,
    };
    let virtual_clock = match v.get("clock").and_then(Value::as_str) {
        None | Some("real") => false,
        Some("virtual") => true,
        Some(other) => return Err(bad_request(format!("clock must be \"real\" or \"virtual\", got {other:?}"))),
    };
    let policy = setup.policy.name();
    let rules = serde_json::to_value(&setup.rules).unwrap_or_default();
    let run = new_run(&s, speed, virtual_clock, setup, &v).await?;
    Ok(Json(json!({"run": run, "policy": policy, "rules": rules, "speed": speed,
        "clock": if virtual_clock { "virtual" } else { "real" }})))
}

/// The rules and policy of a run `start` opens: the service's, with what the body sets.
pub(super) fn run_setup(s: &Shared, v: &Value) -> Result<Setup, ApiError> {
    let mut setup = Setup { rules: s.config.rules.clone(), policy: s.config.policy };
    if let Some(p) = v.get("policy").filter(|p| !p.is_null()) {
        setup.policy = p
            .as_str()
            .and_then(Policy::parse)
            .ok_or_else(|| bad_request(format!("policy must be \"edf\" or \"fifo\", got {p}")))?;
    }
    if let Some(w) = v.get("workers").filter(|w| !w.is_null()) {
        setup.rules.workers_per_team = w
            .as_u64()
            .filter(|w| (1..=1000).contains(w))
            .ok_or_else(|| bad_request(format!("workers must be a whole number from 1 to 1000, got {w}")))?
            as usize;
    }
    match v.get("routines") {
        None | Some(Value::Null) => {}
        Some(Value::String(spec)) => {
            setup.rules.set_routines(spec).map_err(|e| bad_request(format!("routines: {e}")))?
        }
        Some(Value::Object(map)) => {
            for (team, routine) in map {
                let routine =
                    routine.as_str().ok_or_else(|| bad_request(format!("routines.{team} must be a string")))?;
                setup
                    .rules
                    .set_routines(&format!("{team}={routine}"))
                    .map_err(|e| bad_request(format!("routines: {e}")))?;
            }
        }
        Some(other) => {
            return Err(bad_request(format!("routines must be an object or TEAM=ROUTINE text, got {other}")))
        }
    }
    if let Some(o) = v.get("allow_overrun").filter(|o| !o.is_null()) {
        setup.rules.allow_overrun =
            o.as_bool().ok_or_else(|| bad_request(format!("allow_overrun must be true or false, got {o}")))?;
    }
    Ok(setup)
}

/// `POST /api/wedding/advance {"to": MS}`: moves a virtual run's clock to `to` (see `clock::advance`).
async fn advance(State(s): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let v = parse_body(&body)?;
    let to = v.get("to").and_then(Value::as_i64).filter(|t| *t >= 0).ok_or_else(|| {
        bad_request(format!(
            "to must be a whole number of milliseconds from 00:00, got {}",
            v.get("to").unwrap_or(&Value::Null)
        ))
    })?;
    Ok(Json(clock::advance(&s, to).await?))
}

#[derive(Debug, serde::Deserialize)]
struct RunQuery {
    run: Option<i64>,
    status: Option<String>,
    team: Option<String>,
    /// `report?summary=true`: the counts only (cheap enough to poll).
    #[serde(default)]
    summary: bool,
}

/// The run a query names, by default the open one (whichever instance opened it).
async fn run_id(s: &Shared, q: &RunQuery) -> Result<i64, ApiError> {
    if let Some(r) = q.run {
        return Ok(r);
    }
    match store::latest_run(&s.store).await? {
        Some(r) => Ok(r.run),
        None => Err(ApiError(StatusCode::NOT_FOUND, "no run yet: POST /api/wedding/start or send an event".into())),
    }
}

async fn list_events(State(s): State<Shared>, Query(q): Query<RunQuery>) -> Result<Json<Value>, ApiError> {
    let run = run_id(&s, &q).await?;
    let rows = store::list_events(
        &s.store,
        run,
        q.status.as_deref().unwrap_or_default(),
        q.team.as_deref().unwrap_or_default(),
    )
    .await?;
    let events: Vec<Value> = rows
        .iter()
        .map(|r| {
            let event_type = r.get::<String, _>(1);
            // The teams its type is routed to: who would have handled one nobody took.
            let teams: Vec<&str> =
                canonical_type(&event_type).map(crate::rules::teams_for).unwrap_or_default().iter().map(|t| t.name()).collect();
            json!({"id": r.get::<String, _>(0), "event_type": event_type, "teams": teams, "priority": r.get::<String, _>(2),
                "happened_ms": r.get::<i64, _>(3), "deadline_ms": r.get::<i64, _>(4), "team": r.get::<Option<String>, _>(5),
                "worker": r.get::<Option<i32>, _>(6), "started_ms": r.get::<Option<i64>, _>(7),
                "completed_ms": r.get::<Option<i64>, _>(8), "status": r.get::<String, _>(9)})
        })
        .collect();
    Ok(Json(json!({"run": run, "events": events})))
}

#[derive(Debug, serde::Deserialize)]
struct RunsQuery {
    limit: Option<i64>,
}

/// `GET /api/wedding/runs?limit=N`: the latest runs (10 unless given, at most 1,000), newest first, each with its
/// clock and the setup it was started with; `[]` before the first.
async fn runs(State(s): State<Shared>, Query(q): Query<RunsQuery>) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(10);
    if !(1..=1000).contains(&limit) {
        return Err(bad_request(format!("limit must be from 1 to 1000, got {limit}")));
    }
    let rows = store::recent_runs(&s.store, limit).await?;
    let runs: Vec<Value> = rows
        .iter()
        .map(|r| {
            let setup: Value = serde_json::from_str(&r.setup).unwrap_or(Value::Null);
            json!({"run": r.run, "started_ms": r.started_at, "clock": if r.virtual_clock { "virtual" } else { "real" },
                "speed": r.speed, "setup": setup, "simulation": s.simulations.lock().get(&r.run).cloned()})
        })
        .collect();
    Ok(Json(json!({"runs": runs})))
}

/// `GET /api/wedding/report`: the run's report (as `weir wedding simulate` prints it) from its rows, with `open`
/// (events neither handled nor missed yet) and the clock's `now`.
async fn report(State(s): State<Shared>, Query(q): Query<RunQuery>) -> Result<Json<Value>, ApiError> {
    let run = run_id(&s, &q).await?;
    let now = s.clock_of(run).await?;
    if q.summary {
        let counts: HashMap<String, i64> = store::status_counts(&s.store, run).await?;
        let get = |k: &str| counts.get(k).copied().unwrap_or(0);
        let simulation = s.simulations.lock().get(&run).cloned();
        return Ok(Json(
            json!({"run": run, "now": now, "events": counts.values().sum::<i64>(), "happy": get("handled"),
            "stress": get("missed"), "open": get("pending") + get("in_progress"), "simulation": simulation}),
        ));
    }
    let mut rows = store::report_rows(&s.store, run);
    let mut events = Vec::new();
    let mut outcomes = Vec::new();
    let mut open = 0;
    while let Some(r) = rows.try_next().await? {
        let (Some(t), Some(p)) = (canonical_type(&r.get::<String, _>(1)), Priority::parse(&r.get::<String, _>(2)))
        else {
            continue;
        };
        events.push(Event { id: r.get(0), event_type: t, priority: p, description: String::new(), happened: r.get(3) });
        let status: String = r.get(4);
        let team = r.get::<Option<String>, _>(5).and_then(|n| Team::ALL.into_iter().find(|t| t.name() == n));
        open += usize::from(status == "pending" || status == "in_progress");
        outcomes.push(Outcome {
            team,
            worker: r.get::<Option<i32>, _>(6).map(|w| w as usize),
            started: r.get(7),
            completed: r.get(8),
            happy: status == "handled",
            missed_at: (status == "missed").then(|| r.get(9)),
        });
    }
    drop(rows);
    let setup = s.setup_of(run).await?;
    let mut full = crate::report::report(&setup.rules, &events, &outcomes, setup.policy);
    full.run = Some(run);
    let mut v = serde_json::to_value(&full).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    v["open"] = json!(open);
    v["now"] = json!(now);
    v["simulation"] = json!(s.simulations.lock().get(&run).cloned());
    Ok(Json(v))
}
