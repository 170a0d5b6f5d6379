//! The wedding services on the bus: HTTP ingest that validates incidents like the exercise's Coordinator and
//! produces each to its type's topic (`wedding.<type>`), and one service per team, a consumer group over its types'
//! topics, whose workers follow their routines on the run's clock and take events by the policy. Statuses live in
//! `wedding_events`; an event routed to two teams is claimed there once (`UPDATE ... WHERE status = 'pending'`).
//!
//! A run starts at 00:00 when `POST /api/wedding/start` is called or the first event arrives with no run open. Its
//! clock runs `speed` times real time (1 by default), so tests and demos need not wait six minutes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sqlx::Row;
use tokio::sync::watch;
use weir_runtime::time::now_ms;
use weir_runtime::{Bus, BusError, OutgoingMessage, SqlStore, StartFrom, SubscribeOptions};

use crate::dataset::parse_event;
use crate::rules::{canonical_type, teams_for, Ms, Priority, Rules, Team};
use crate::schedule::{Event, Policy};

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub rules: Rules,
    pub policy: Policy,
    /// How many times faster than real time a run's clock goes.
    pub speed: f64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig { rules: Rules::default(), policy: Policy::Edf, speed: 1.0 }
    }
}

/// The open run: its id and when its 00:00 was (wall clock).
#[derive(Clone, Copy, Debug)]
struct Run {
    id: i64,
    started: Instant,
    started_ms: i64,
    /// How many times faster than real time this run's clock goes.
    speed: f64,
}

#[derive(Clone)]
struct Shared {
    bus: Arc<dyn Bus>,
    store: SqlStore,
    config: Arc<ServiceConfig>,
    run: Arc<Mutex<Option<Run>>>,
}

impl Shared {
    fn clock(&self, run: &Run) -> Ms {
        (run.started.elapsed().as_secs_f64() * 1000.0 * run.speed) as Ms
    }
}

pub fn topic_for(event_type: &str) -> String {
    format!("wedding.{event_type}")
}

/// Creates `wedding_runs` and `wedding_events`.
pub async fn migrate(store: &SqlStore) -> Result<(), sqlx::Error> {
    for s in [
        "CREATE TABLE IF NOT EXISTS wedding_runs (run BIGINT PRIMARY KEY, started_at BIGINT NOT NULL, policy TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS wedding_events (run BIGINT NOT NULL, id TEXT NOT NULL, event_type TEXT NOT NULL, \
         priority TEXT NOT NULL, description TEXT NOT NULL, happened_at BIGINT NOT NULL, deadline BIGINT NOT NULL, \
         team TEXT, worker INTEGER, started_at BIGINT, completed_at BIGINT, status TEXT NOT NULL, PRIMARY KEY (run, id))",
    ] {
        sqlx::query(s).execute(store.pool()).await?;
    }
    Ok(())
}

/// Starts the team services and returns the HTTP routes (ingest, start, report, events).
pub async fn start(
    bus: Arc<dyn Bus>,
    store: SqlStore,
    config: ServiceConfig,
    stop: watch::Receiver<bool>,
) -> Result<(Router, Vec<tokio::task::JoinHandle<()>>), BusError> {
    migrate(&store).await.map_err(|e| BusError::Backend(e.to_string()))?;
    for t in crate::rules::all_types() {
        bus.ensure_topic(&topic_for(t), 1).await?;
    }
    let shared = Shared { bus, store, config: Arc::new(config), run: Arc::new(Mutex::new(None)) };
    let mut tasks = Vec::new();
    for team in Team::ALL {
        let (shared, stop) = (shared.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = team_service(shared, team, stop).await {
                tracing::error!(team = %team, error = %e, "a wedding team service stopped");
            }
        }));
    }
    let routes = Router::new()
        .route("/message", post(message))
        .route("/api/wedding/events", post(ingest_many).get(list_events))
        .route("/api/wedding/start", post(start_run))
        .route("/api/wedding/report", get(report))
        .with_state(shared);
    Ok((routes, tasks))
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("wedding_rejected_events_total").increment(u64::from(self.0 == StatusCode::BAD_REQUEST));
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}"))
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("bus: {e}"))
    }
}

async fn open_run(s: &Shared) -> Result<Run, ApiError> {
    if let Some(r) = *s.run.lock() {
        return Ok(r);
    }
    new_run(s, s.config.speed).await
}

async fn new_run(s: &Shared, speed: f64) -> Result<Run, ApiError> {
    let run = Run { id: now_ms(), started: Instant::now(), started_ms: now_ms(), speed };
    sqlx::query("INSERT INTO wedding_runs (run, started_at, policy) VALUES ($1, $2, $3)")
        .bind(run.id)
        .bind(run.started_ms)
        .bind(s.config.policy.name())
        .execute(s.store.pool())
        .await?;
    *s.run.lock() = Some(run);
    Ok(run)
}

/// `POST /api/wedding/start`, optionally with `{"speed": X}`: a new run from 00:00 now.
async fn start_run(State(s): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let speed = if body.iter().all(u8::is_ascii_whitespace) {
        s.config.speed
    } else {
        let v = parse_body(&body)?;
        match v.get("speed") {
            None | Some(Value::Null) => s.config.speed,
            Some(x) => x.as_f64().filter(|x| *x > 0.0 && x.is_finite()).ok_or_else(|| {
                ApiError(StatusCode::BAD_REQUEST, format!("speed must be a positive number, got {x}"))
            })?,
        }
    };
    let run = new_run(&s, speed).await?;
    Ok(Json(json!({"run": run.id, "policy": s.config.policy.name(), "speed": speed})))
}

/// Validates, stores as pending and produces one event; its answer.
async fn ingest(s: &Shared, v: &Value, index: usize) -> Result<Value, ApiError> {
    let run = open_run(s).await?;
    let clock = s.clock(&run);
    let instant = |text: &str| instant_ms(text);
    let (mut event, absolute) =
        parse_event(v, index, &instant).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    event.happened = match absolute {
        // An instant counts from the run's 00:00 on the run's clock.
        Some(abs) => ((abs - run.started_ms) as f64 * run.speed) as Ms,
        None if event.happened < 0 => clock,
        None => event.happened,
    }
    .max(0);
    if v.get("id").is_none() {
        event.id = format!("{}-{}", run.id, rand::random::<u32>());
    }
    let deadline = event.deadline();
    sqlx::query(
        "INSERT INTO wedding_events (run, id, event_type, priority, description, happened_at, deadline, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending') ON CONFLICT (run, id) DO NOTHING",
    )
    .bind(run.id)
    .bind(&event.id)
    .bind(event.event_type)
    .bind(event.priority.name())
    .bind(&event.description)
    .bind(event.happened)
    .bind(deadline)
    .execute(s.store.pool())
    .await?;
    let body = json!({"run": run.id, "id": event.id, "event_type": event.event_type, "priority": event.priority.name(),
        "description": event.description, "happened_ms": event.happened});
    s.bus.produce(OutgoingMessage::new(topic_for(event.event_type), body.to_string()).key(event.id.clone())).await?;
    metrics::counter!("wedding_events_total", "type" => event.event_type).increment(1);
    Ok(
        json!({"status": "accepted", "run": run.id, "id": event.id, "topic": topic_for(event.event_type), "deadline_ms": deadline}),
    )
}

fn instant_ms(text: &str) -> Option<i64> {
    weir_runtime::time::parse_rfc3339(text)
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {e}")))
}

/// `POST /message`: exactly what the seed's simulator sends, one event.
async fn message(State(s): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let v = parse_body(&body)?;
    Ok(Json(ingest(&s, &v, 0).await?))
}

/// `POST /api/wedding/events`: one event or an array; all are validated before any is stored.
async fn ingest_many(State(s): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let v = parse_body(&body)?;
    let items = match &v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    for (i, item) in items.iter().enumerate() {
        parse_event(item, i, &instant_ms).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(ingest(&s, item, i).await?);
    }
    Ok(Json(json!({"accepted": out.len(), "events": out})))
}

#[derive(Debug, serde::Deserialize)]
struct RunQuery {
    run: Option<i64>,
    status: Option<String>,
    team: Option<String>,
}

async fn run_id(s: &Shared, q: &RunQuery) -> Result<i64, ApiError> {
    match q.run.or_else(|| s.run.lock().map(|r| r.id)) {
        Some(r) => Ok(r),
        None => Err(ApiError(StatusCode::NOT_FOUND, "no run yet: POST /api/wedding/start or send an event".into())),
    }
}

async fn list_events(State(s): State<Shared>, Query(q): Query<RunQuery>) -> Result<Json<Value>, ApiError> {
    let run = run_id(&s, &q).await?;
    let rows = sqlx::query(
        "SELECT id, event_type, priority, happened_at, deadline, team, worker, started_at, completed_at, status \
         FROM wedding_events WHERE run = $1 AND ($2 = '' OR status = $2) AND ($3 = '' OR team = $3) ORDER BY happened_at, id",
    )
    .bind(run)
    .bind(q.status.clone().unwrap_or_default())
    .bind(q.team.clone().unwrap_or_default())
    .fetch_all(s.store.pool())
    .await?;
    let events: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"id": r.get::<String, _>(0), "event_type": r.get::<String, _>(1), "priority": r.get::<String, _>(2),
                "happened_ms": r.get::<i64, _>(3), "deadline_ms": r.get::<i64, _>(4), "team": r.get::<Option<String>, _>(5),
                "worker": r.get::<Option<i32>, _>(6), "started_ms": r.get::<Option<i64>, _>(7),
                "completed_ms": r.get::<Option<i64>, _>(8), "status": r.get::<String, _>(9)})
        })
        .collect();
    Ok(Json(json!({"run": run, "events": events})))
}

async fn report(State(s): State<Shared>, Query(q): Query<RunQuery>) -> Result<Json<Value>, ApiError> {
    let run = run_id(&s, &q).await?;
    let rows = sqlx::query(
        "SELECT id, event_type, priority, description, happened_at, status FROM wedding_events WHERE run = $1",
    )
    .bind(run)
    .fetch_all(s.store.pool())
    .await?;
    let mut events = Vec::new();
    let (mut happy, mut missed, mut open) = (0, 0, 0);
    for r in &rows {
        let (Some(t), Some(p)) = (canonical_type(&r.get::<String, _>(1)), Priority::parse(&r.get::<String, _>(2)))
        else {
            continue;
        };
        events.push(Event { id: r.get(0), event_type: t, priority: p, description: r.get(3), happened: r.get(4) });
        match r.get::<String, _>(5).as_str() {
            "handled" => happy += 1,
            "missed" => missed += 1,
            _ => open += 1,
        }
    }
    let bound = crate::schedule::upper_bound(&s.config.rules, &events);
    Ok(Json(json!({"run": run, "events": events.len(), "happy": happy, "stress": missed, "open": open,
        "upper_bound": bound, "policy": s.config.policy.name()})))
}

/// One team: pending events from its topics, its workers on the run's clock, statuses in the database.
async fn team_service(s: Shared, team: Team, mut stop: watch::Receiver<bool>) -> Result<(), BusError> {
    let topics: Vec<String> =
        crate::rules::all_types().filter(|t| teams_for(t).contains(&team)).map(topic_for).collect();
    let mut options = SubscribeOptions::new(format!("wedding-{}", team.name()), topics);
    // From the earliest record: a team whose group joins after the first incidents still gets them (older runs'
    // events are recognised by their run and dropped).
    options.start_from = StartFrom::Earliest;
    let mut sub = s.bus.subscribe(options).await?;
    let rules = &s.config.rules;
    let mut pending: Vec<(i64, Event)> = Vec::new();
    let mut free_at: Vec<(i64, Ms)> = vec![(0, 0); rules.workers_per_team];
    let mut finishing: Vec<(i64, String, Ms, Ms)> = Vec::new(); // run, id, done at, deadline
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        let batch = match sub.next_batch(Duration::from_millis(20)).await {
            Ok(b) => b,
            Err(BusError::Rebalanced) => Vec::new(),
            Err(e) => return Err(e),
        };
        for m in batch {
            let Ok(v) = serde_json::from_slice::<Value>(m.value.as_deref().unwrap_or_default()) else { continue };
            let (Some(run), Ok((mut e, _))) = (v["run"].as_i64(), parse_event(&v, 0, &|_| None)) else { continue };
            e.happened = v["happened_ms"].as_i64().unwrap_or(0);
            pending.push((run, e));
        }
        sub.commit().await.ok();
        let Some(run) = *s.run.lock() else { continue };
        let now = s.clock(&run);
        // Finish handlings whose 3 s are up.
        let mut still = Vec::new();
        for (r, id, done, deadline) in finishing.drain(..) {
            if done > now {
                still.push((r, id, done, deadline));
                continue;
            }
            let status = if done <= deadline { "handled" } else { "missed" };
            let _ = sqlx::query("UPDATE wedding_events SET status = $1, completed_at = $2 WHERE run = $3 AND id = $4")
                .bind(status)
                .bind(done)
                .bind(r)
                .bind(&id)
                .execute(s.store.pool())
                .await;
        }
        finishing = still;
        // Whatever is still pending past its deadline is a stress mark, whether or not a team ever saw it (one
        // team's service sweeps for all).
        if team == Team::ALL[0] {
            let _ = sqlx::query(
                "UPDATE wedding_events SET status = 'missed' WHERE run = $1 AND status = 'pending' AND deadline <= $2",
            )
            .bind(run.id)
            .bind(now)
            .execute(s.store.pool())
            .await;
        }
        // Events of older runs, or past their deadline, leave the queue; the latter as stress marks.
        let mut keep = Vec::new();
        for (r, e) in pending.drain(..) {
            if r != run.id {
                continue;
            }
            if e.deadline() <= now {
                let _ = sqlx::query(
                    "UPDATE wedding_events SET status = 'missed' WHERE run = $1 AND id = $2 AND status = 'pending'",
                )
                .bind(r)
                .bind(&e.id)
                .execute(s.store.pool())
                .await;
                continue;
            }
            keep.push((r, e));
        }
        pending = keep;
        for (w, slot) in free_at.iter_mut().enumerate() {
            if (slot.0 == run.id && slot.1 > now) || !rules.can_start(team, now) {
                continue;
            }
            // Only what has happened by now on the run's clock (a dataset may send its events ahead of time).
            let candidates = pending.iter().enumerate().filter(|(_, (_, e))| e.happened <= now);
            let pick = match s.config.policy {
                Policy::Fifo => candidates.min_by_key(|(_, (_, e))| (e.happened, e.id.clone())),
                Policy::Edf => candidates
                    .filter(|(_, (_, e))| now + rules.handling <= e.deadline())
                    .min_by_key(|(_, (_, e))| (e.deadline(), e.happened, e.id.clone())),
            };
            let Some((i, _)) = pick else { continue };
            let (r, e) = pending.swap_remove(i);
            // Shared types sit in two teams' queues: the database decides who has it.
            let claimed = sqlx::query(
                "UPDATE wedding_events SET status = 'in_progress', team = $1, worker = $2, started_at = $3 \
                 WHERE run = $4 AND id = $5 AND status = 'pending'",
            )
            .bind(team.name())
            .bind(w as i32)
            .bind(now)
            .bind(r)
            .bind(&e.id)
            .execute(s.store.pool())
            .await
            .map(|d| d.rows_affected() == 1)
            .unwrap_or(false);
            if claimed {
                *slot = (r, now + rules.handling);
                finishing.push((r, e.id.clone(), now + rules.handling, e.deadline()));
            }
        }
    }
    let _ = sub.close().await;
    Ok(())
}
