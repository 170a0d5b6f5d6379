//! The wedding services on the bus: HTTP ingest that validates incidents like the exercise's Coordinator and
//! produces each to its type's topic (`wedding.<type>`), and one desk per team, fed by a consumer group over its
//! types' topics, whose workers follow their routines on the run's clock and take events by the policy. Statuses live
//! in `wedding_events`; an event routed to two teams is claimed there once (`UPDATE ... WHERE status = 'pending'`).
//!
//! A run starts at 00:00 when `POST /api/wedding/start` is called or the first event arrives with no run open. Its
//! clock is either
//! - real: `speed` times wall-clock time (1 by default); the desks act every few milliseconds; or
//! - virtual: it moves only when `POST /api/wedding/advance` says so, and then stops at every moment where something
//!   can happen (an arrival, the start of an available phase, the end of a handling). At each moment every desk, in
//!   team order, first waits until every event sent so far has reached it through the bus, then acts. So a virtual
//!   run's outcome depends on its events alone, not on how fast the machine is: the same as the in-process
//!   simulation in `schedule.rs`, decision for decision.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::TryStreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, watch};
use weir_runtime::time::now_ms;
use weir_runtime::{Bus, BusError, OutgoingMessage, SqlStore, StartFrom, SubscribeOptions};

use crate::dataset::parse_event;
use crate::rules::{canonical_type, teams_for, Ms, Priority, Rules, Team};
use crate::schedule::{Event, Outcome, Policy};

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub rules: Rules,
    pub policy: Policy,
    /// How many times faster than real time a real-clock run goes.
    pub speed: f64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig { rules: Rules::default(), policy: Policy::Edf, speed: 1.0 }
    }
}

/// The largest message (key and value, plus [`RECORD_OVERHEAD`]) ingest sends to an event's topic. The bus cannot
/// say what its topics accept, so this stays under the default `max.message.bytes` of weir (1,048,588) and of Kafka
/// brokers, and under librdkafka's `message.max.bytes` (1,000,000). An event over it is refused with 413 before
/// anything is stored.
pub const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// How a run's clock goes.
#[derive(Clone, Copy, Debug)]
enum Clock {
    /// `speed` times real time since `started`.
    Real { started: Instant, speed: f64 },
    /// Moved by `POST /api/wedding/advance` only.
    Virtual,
}

/// The rules and policy a run plays by.
#[derive(Debug)]
struct Setup {
    rules: Rules,
    policy: Policy,
}

/// The open run.
#[derive(Debug)]
struct Run {
    id: i64,
    setup: Arc<Setup>,
    /// Wall-clock milliseconds at 00:00, to read RFC 3339 instants against.
    started_ms: i64,
    clock: Clock,
    /// Virtual runs: the moment the clock stands at (-1 before 00:00 has been acted on).
    now: Ms,
    /// Virtual runs: moments still to stop at (arrivals sent ahead, ends of handlings).
    moments: BTreeSet<Ms>,
    /// Events sent to each team (by `Team::ALL` index) in this run, so a desk knows when it has them all.
    sent: [u64; 5],
    /// Virtual runs: the latest deadline of any event sent; past it there is nothing left to decide.
    last_deadline: Ms,
}

impl Run {
    fn now(&self) -> Ms {
        match self.clock {
            Clock::Real { started, speed } => (started.elapsed().as_secs_f64() * 1000.0 * speed) as Ms,
            Clock::Virtual => self.now.max(0),
        }
    }
}

/// A desk's orders for one virtual moment.
struct Step {
    run: i64,
    setup: Arc<Setup>,
    now: Ms,
    /// How many events of the run the desk must have received before it acts.
    expect: u64,
    /// The ends of the handlings it started.
    reply: oneshot::Sender<Result<Vec<Ms>, String>>,
}

#[derive(Clone)]
struct Shared {
    bus: Arc<dyn Bus>,
    store: SqlStore,
    config: Arc<ServiceConfig>,
    run: Arc<Mutex<Option<Run>>>,
    /// The setups of the runs this process has held, for their reports.
    setups: Arc<Mutex<HashMap<i64, Arc<Setup>>>>,
    desks: Arc<Vec<mpsc::Sender<Step>>>,
    /// One advance at a time.
    advancing: Arc<tokio::sync::Mutex<()>>,
}

impl Shared {
    /// The open real-clock run, its time and setup, if any.
    fn real_now(&self) -> Option<(i64, Ms, Arc<Setup>)> {
        let run = self.run.lock();
        run.as_ref().filter(|r| matches!(r.clock, Clock::Real { .. })).map(|r| (r.id, r.now(), r.setup.clone()))
    }

    fn setup_of(&self, run: i64) -> Arc<Setup> {
        self.setups
            .lock()
            .get(&run)
            .cloned()
            .unwrap_or_else(|| Arc::new(Setup { rules: self.config.rules.clone(), policy: self.config.policy }))
    }
}

pub fn topic_for(event_type: &str) -> String {
    format!("wedding.{event_type}")
}

fn team_index(team: Team) -> usize {
    Team::ALL.iter().position(|t| *t == team).unwrap_or(0)
}

/// Creates `wedding_runs` and `wedding_events`.
pub async fn migrate(store: &SqlStore) -> Result<(), sqlx::Error> {
    for s in [
        "CREATE TABLE IF NOT EXISTS wedding_runs (run BIGINT PRIMARY KEY, started_at BIGINT NOT NULL, policy TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS wedding_events (run BIGINT NOT NULL, id TEXT NOT NULL, event_type TEXT NOT NULL, \
         priority TEXT NOT NULL, description TEXT NOT NULL, happened_at BIGINT NOT NULL, deadline BIGINT NOT NULL, \
         team TEXT, worker INTEGER, started_at BIGINT, completed_at BIGINT, status TEXT NOT NULL, PRIMARY KEY (run, id))",
        // The sweep for missed events looks up a run's pending events by deadline.
        "CREATE INDEX IF NOT EXISTS wedding_events_open ON wedding_events (run, status, deadline)",
    ] {
        sqlx::query(s).execute(store.pool()).await?;
    }
    Ok(())
}

/// Starts the desks and their consumers, and returns the HTTP routes (ingest, start, advance, report, events).
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
    let mut steps = Vec::new();
    let mut step_rxs = Vec::new();
    for _ in Team::ALL {
        let (tx, rx) = mpsc::channel(1);
        steps.push(tx);
        step_rxs.push(rx);
    }
    let shared = Shared {
        bus,
        store,
        config: Arc::new(config),
        run: Arc::new(Mutex::new(None)),
        setups: Arc::new(Mutex::new(HashMap::new())),
        desks: Arc::new(steps),
        advancing: Arc::new(tokio::sync::Mutex::new(())),
    };
    let mut tasks = Vec::new();
    for (team, steps) in Team::ALL.into_iter().zip(step_rxs) {
        // Generous: a desk that falls behind its consumer holds the consumer back rather than growing without bound.
        let (tx, rx) = mpsc::channel(65_536);
        let (s, stop2) = (shared.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = consume(s, team, tx, stop2).await {
                tracing::error!(team = %team, error = %e, "a wedding team's consumer stopped");
            }
        }));
        let desk = Desk::new(shared.clone(), team);
        tasks.push(tokio::spawn(desk.run(rx, steps, stop.clone())));
    }
    tasks.push(tokio::spawn(sweeper(shared.clone(), stop)));
    let routes = Router::new()
        .route("/message", post(message))
        .route("/api/wedding/events", post(ingest_many).get(list_events))
        .route("/api/wedding/start", post(start_run))
        .route("/api/wedding/advance", post(advance))
        .route("/api/wedding/report", get(report))
        .with_state(shared);
    Ok((routes, tasks))
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    /// The shape of every error weir's HTTP server answers, `{"error_code": status, "message": ...}`.
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

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("bus: {e}"))
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Opens a run now: `virtual_clock` runs wait for `advance`; others go `speed` times real time.
async fn new_run(s: &Shared, speed: f64, virtual_clock: bool, setup: Setup) -> Result<i64, ApiError> {
    let id = now_ms().max(s.run.lock().as_ref().map_or(0, |r| r.id + 1));
    sqlx::query("INSERT INTO wedding_runs (run, started_at, policy) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(now_ms())
        .bind(setup.policy.name())
        .execute(s.store.pool())
        .await?;
    let clock = if virtual_clock { Clock::Virtual } else { Clock::Real { started: Instant::now(), speed } };
    let setup = Arc::new(setup);
    s.setups.lock().insert(id, setup.clone());
    *s.run.lock() = Some(Run {
        id,
        setup,
        started_ms: now_ms(),
        clock,
        now: -1,
        moments: BTreeSet::new(),
        sent: [0; 5],
        last_deadline: -1,
    });
    Ok(id)
}

/// `POST /api/wedding/start`: a new run from 00:00 now. The optional body may set `speed` (real clock), `clock`
/// (`real` or `virtual`), `policy`, `workers` (per team), `routines` (`{"team": "routine"}` or `"team=routine,..."`)
/// and `allow_overrun`; what it leaves out comes from the service's settings.
async fn start_run(State(s): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let v = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse_body(&body)? };
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
    let speed = match v.get("speed") {
        None | Some(Value::Null) => s.config.speed,
        Some(x) => x
            .as_f64()
            .filter(|x| *x > 0.0 && x.is_finite())
            .ok_or_else(|| bad_request(format!("speed must be a positive number, got {x}")))?,
    };
    let virtual_clock = match v.get("clock").and_then(Value::as_str) {
        None => false,
        Some("real") => false,
        Some("virtual") => true,
        Some(other) => return Err(bad_request(format!("clock must be \"real\" or \"virtual\", got {other:?}"))),
    };
    let policy = setup.policy.name();
    let rules = serde_json::to_value(&setup.rules).unwrap_or_default();
    let run = new_run(&s, speed, virtual_clock, setup).await?;
    Ok(Json(json!({"run": run, "policy": policy, "rules": rules, "speed": speed,
        "clock": if virtual_clock { "virtual" } else { "real" }})))
}

/// The latest an event of a virtual run may happen, from its 00:00: a wedding lasts minutes, and the virtual clock
/// stops at every phase start up to the last deadline. (A real-clock run opened by `weir up` may well be days old.)
const LATEST_VIRTUAL_EVENT: Ms = 24 * 3600 * 1000;

/// Rows per INSERT statement (7 parameters a row stays well under SQLite's and PostgreSQL's limits).
const ROWS_PER_INSERT: usize = 50;

/// What a record costs in its topic besides its key and value: a batch header (61 bytes) and the record's own
/// varints and attributes, rounded up.
const RECORD_OVERHEAD: usize = 128;

/// After a failed produce: removes the rows this request inserted that no desk has taken, and returns the error
/// the client gets.
///
/// Their messages may not have reached the topics (some may have: `produce_all` stops at the first failure), and a
/// pending row that no desk holds would be swept as missed at its deadline: stress for an event the teams never
/// saw. The client is told the request failed, so it is taken back whole, as a refused request stores nothing, and
/// a retry starts clean. A message that did get through finds no pending row, so no desk can claim it. Marking the
/// rows instead (`failed`) would keep them in the report's totals as events that never happened.
async fn withdraw(s: &Shared, run: i64, inserted: &[String], cause: BusError) -> ApiError {
    let mut removed = Ok(0u64);
    for chunk in inserted.chunks(ROWS_PER_INSERT) {
        let marks: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "DELETE FROM wedding_events WHERE run = $1 AND status = 'pending' AND id IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(run);
        for id in chunk {
            q = q.bind(id.clone());
        }
        removed = match (removed, q.execute(s.store.pool()).await) {
            (Ok(n), Ok(done)) => Ok(n + done.rows_affected()),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    match removed {
        Ok(n) => {
            tracing::warn!(error = %cause, withdrawn = n, "wedding ingest could not produce its events; withdrew them");
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("bus: {cause}; nothing of this request was kept, retry it"),
            )
        }
        Err(db) => {
            tracing::error!(error = %cause, database = %db, ids = ?inserted,
                "wedding ingest could not produce its events nor withdraw them: they stay pending until swept as missed");
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("bus: {cause}; withdrawing the stored events also failed ({db}): they will show as missed"),
            )
        }
    }
}

/// Validates every item, then stores them as pending in one transaction and produces each to its type's topic.
async fn ingest(s: &Shared, items: &[Value]) -> Result<Vec<Value>, ApiError> {
    let mut events = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let parsed = parse_event(v, i, &instant_ms).map_err(|e| bad_request(e.to_string()))?;
        events.push((parsed, v.get("id").is_some()));
    }
    if s.run.lock().is_none() {
        new_run(s, s.config.speed, false, Setup { rules: s.config.rules.clone(), policy: s.config.policy }).await?;
    }
    let (run_id, now, started_ms, speed, virtual_clock) = {
        let guard = s.run.lock();
        let r = guard.as_ref().ok_or_else(|| ApiError(StatusCode::CONFLICT, "the run was closed".into()))?;
        let (speed, virtual_clock) = match r.clock {
            Clock::Real { speed, .. } => (speed, false),
            Clock::Virtual => (1.0, true),
        };
        (r.id, r.now(), r.started_ms, speed, virtual_clock)
    };
    let mut ready = Vec::with_capacity(events.len());
    for ((mut event, absolute), has_id) in events {
        event.happened = match absolute {
            // An instant counts from the run's 00:00 on the run's clock.
            Some(abs) => ((abs - started_ms) as f64 * speed) as Ms,
            None if event.happened < 0 => now,
            None => event.happened,
        }
        .max(0);
        if virtual_clock && event.happened > LATEST_VIRTUAL_EVENT {
            return Err(bad_request(format!(
                "timestamp of event {}: {} ms is more than 24 h after the virtual run's 00:00",
                event.id, event.happened
            )));
        }
        if !has_id {
            event.id = format!("{run_id}-{}", rand::random::<u64>());
        }
        ready.push(event);
    }
    let messages: Vec<OutgoingMessage> = ready
        .iter()
        .map(|e| {
            let body = json!({"run": run_id, "id": e.id, "event_type": e.event_type, "priority": e.priority.name(),
                "description": e.description, "happened_ms": e.happened});
            OutgoingMessage::new(topic_for(e.event_type), body.to_string()).key(e.id.clone())
        })
        .collect();
    // Refused here, before the transaction: once a row is committed its message has to reach the topic.
    for (i, m) in messages.iter().enumerate() {
        let size = m.key.as_ref().map_or(0, |k| k.len()) + m.value.as_ref().map_or(0, |v| v.len()) + RECORD_OVERHEAD;
        if size > MAX_MESSAGE_BYTES {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "event {i} ({}) would be a {size}-byte message, over the {} bytes its topic {} takes \
                     (max.message.bytes): shorten its description",
                    ready[i].id, MAX_MESSAGE_BYTES, m.topic
                ),
            ));
        }
    }
    // Many rows a statement: each statement is a round trip to the database's worker.
    let mut tx = s.store.begin().await.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    // The ids this request inserted (not those already stored, which a retry sends again).
    let mut inserted: Vec<String> = Vec::with_capacity(ready.len());
    for chunk in ready.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO wedding_events (run, id, event_type, priority, description, happened_at, deadline, status) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 7;
            sql += &format!(
                "{}(${}, ${}, ${}, ${}, ${}, ${}, ${}, 'pending')",
                if i == 0 { "" } else { ", " },
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7
            );
        }
        sql += " ON CONFLICT (run, id) DO NOTHING RETURNING id";
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(run_id)
                .bind(e.id.clone())
                .bind(e.event_type)
                .bind(e.priority.name())
                .bind(e.description.clone())
                .bind(e.happened)
                .bind(e.deadline());
        }
        inserted.extend(q.fetch_all(&mut *tx).await?.iter().map(|r| r.get::<String, _>(0)));
    }
    tx.commit().await?;
    if let Err(e) = s.bus.produce_all(messages).await {
        return Err(withdraw(s, run_id, &inserted, e).await);
    }
    // What a virtual run's advance needs: how many events each desk must wait for, and when they happen.
    if let Some(r) = s.run.lock().as_mut().filter(|r| r.id == run_id) {
        for e in &ready {
            for &t in teams_for(e.event_type) {
                r.sent[team_index(t)] += 1;
            }
            r.moments.insert(e.happened);
            r.last_deadline = r.last_deadline.max(e.deadline());
        }
    }
    Ok(ready
        .iter()
        .map(|e| {
            metrics::counter!("wedding_events_total", "type" => e.event_type).increment(1);
            json!({"status": "accepted", "run": run_id, "id": e.id, "topic": topic_for(e.event_type),
                "happened_ms": e.happened, "deadline_ms": e.deadline()})
        })
        .collect())
}

fn instant_ms(text: &str) -> Option<i64> {
    weir_runtime::time::parse_rfc3339(text)
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
    let v = parse_body(&body)?;
    let items = match v {
        Value::Array(a) => a,
        other => vec![other],
    };
    let out = ingest(&s, &items).await?;
    Ok(Json(json!({"accepted": out.len(), "events": out})))
}

/// `POST /api/wedding/advance {"to": MS}`: moves a virtual run's clock to `to`, stopping at every moment on the way
/// where something can happen; at each, every desk in team order acts once it has every event sent so far.
async fn advance(State(s): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let v = parse_body(&body)?;
    let to = v.get("to").and_then(Value::as_i64).filter(|t| *t >= 0).ok_or_else(|| {
        bad_request(format!(
            "to must be a whole number of milliseconds from 00:00, got {}",
            v.get("to").unwrap_or(&Value::Null)
        ))
    })?;
    let _one = s.advancing.lock().await;
    let (run_id, setup) = match &*s.run.lock() {
        // Decisions already made at later moments cannot be unmade: the clock only goes forward.
        Some(r) if matches!(r.clock, Clock::Virtual) && to < r.now => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("the run's clock is at {} ms and never goes back: advance to {} or later", r.now, r.now),
            ))
        }
        Some(r) if matches!(r.clock, Clock::Virtual) => (r.id, r.setup.clone()),
        _ => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "no virtual run is open: POST /api/wedding/start {\"clock\": \"virtual\"}".into(),
            ))
        }
    };
    let mut stops = 0u64;
    loop {
        let (t, sent) = {
            let guard = s.run.lock();
            let Some(r) = guard.as_ref().filter(|r| r.id == run_id) else {
                return Err(ApiError(StatusCode::CONFLICT, "the run was replaced while advancing".into()));
            };
            let next = r.moments.range(r.now + 1..).next().copied().unwrap_or(Ms::MAX);
            let next = next.min(
                Team::ALL.iter().map(|&t| setup.rules.routine(t).next_start_after(r.now)).min().unwrap_or(Ms::MAX),
            );
            // Phases keep starting forever; past the last deadline (and every handling's end) they decide nothing.
            let settled = r.last_deadline.max(r.moments.last().copied().unwrap_or(-1));
            (if next > settled { Ms::MAX } else { next }, r.sent)
        };
        if t > to || t == Ms::MAX {
            break;
        }
        for (k, desk) in s.desks.iter().enumerate() {
            let (reply, answer) = oneshot::channel();
            desk.send(Step { run: run_id, setup: setup.clone(), now: t, expect: sent[k], reply })
                .await
                .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the team desks have stopped".into()))?;
            let ends = answer
                .await
                .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "a team desk stopped".into()))?
                .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e))?;
            if let Some(r) = s.run.lock().as_mut().filter(|r| r.id == run_id) {
                r.moments.extend(ends);
            }
        }
        sweep(&s.store, run_id, t).await?;
        if let Some(r) = s.run.lock().as_mut().filter(|r| r.id == run_id) {
            r.now = t;
        }
        stops += 1;
    }
    sweep(&s.store, run_id, to).await?;
    if let Some(r) = s.run.lock().as_mut().filter(|r| r.id == run_id) {
        r.now = r.now.max(to);
    }
    Ok(Json(json!({"run": run_id, "now": to, "moments": stops})))
}

/// Events still pending at or past their deadline are stress marks.
async fn sweep(store: &SqlStore, run: i64, now: Ms) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE wedding_events SET status = 'missed' WHERE run = $1 AND status = 'pending' AND deadline <= $2")
        .bind(run)
        .bind(now)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Sweeps the open real-clock run as its time passes (virtual runs are swept by `advance`).
async fn sweeper(s: Shared, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                if let Some((run, now, _)) = s.real_now() {
                    if let Err(e) = sweep(&s.store, run, now).await {
                        tracing::warn!(error = %e, "cannot mark missed wedding events");
                    }
                }
            }
        }
    }
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

fn run_id(s: &Shared, q: &RunQuery) -> Result<i64, ApiError> {
    match q.run.or_else(|| s.run.lock().as_ref().map(|r| r.id)) {
        Some(r) => Ok(r),
        None => Err(ApiError(StatusCode::NOT_FOUND, "no run yet: POST /api/wedding/start or send an event".into())),
    }
}

async fn list_events(State(s): State<Shared>, Query(q): Query<RunQuery>) -> Result<Json<Value>, ApiError> {
    let run = run_id(&s, &q)?;
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

/// `GET /api/wedding/report`: the run's report (as `weir wedding simulate` prints it) from its rows, with `open`
/// (events neither handled nor missed yet) and the clock's `now`.
async fn report(State(s): State<Shared>, Query(q): Query<RunQuery>) -> Result<Json<Value>, ApiError> {
    let run = run_id(&s, &q)?;
    let now = s.run.lock().as_ref().filter(|r| r.id == run).map(Run::now);
    if q.summary {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM wedding_events WHERE run = $1 GROUP BY status")
            .bind(run)
            .fetch_all(s.store.pool())
            .await?;
        let mut counts: HashMap<String, i64> = HashMap::new();
        for r in &rows {
            counts.insert(r.get(0), r.get(1));
        }
        let get = |k: &str| counts.get(k).copied().unwrap_or(0);
        return Ok(Json(
            json!({"run": run, "now": now, "events": counts.values().sum::<i64>(), "happy": get("handled"),
            "stress": get("missed"), "open": get("pending") + get("in_progress")}),
        ));
    }
    // Streamed, not fetched whole: a run may hold a million events. Descriptions play no part in the report.
    let mut rows = sqlx::query(
        "SELECT id, event_type, priority, happened_at, status, team, worker, started_at, completed_at, deadline \
         FROM wedding_events WHERE run = $1 ORDER BY happened_at, id",
    )
    .bind(run)
    .fetch(s.store.pool());
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
    let setup = s.setup_of(run);
    let mut full = crate::report::report(&setup.rules, &events, &outcomes, setup.policy);
    full.run = Some(run);
    let mut v = serde_json::to_value(&full).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    v["open"] = json!(open);
    v["now"] = json!(now);
    Ok(Json(v))
}

/// Reads a team's topics and hands the run's events to its desk, in order.
async fn consume(
    s: Shared,
    team: Team,
    desk: mpsc::Sender<(i64, Event)>,
    stop: watch::Receiver<bool>,
) -> Result<(), BusError> {
    let topics: Vec<String> =
        crate::rules::all_types().filter(|t| teams_for(t).contains(&team)).map(topic_for).collect();
    let mut options = SubscribeOptions::new(format!("wedding-{}", team.name()), topics);
    // From the earliest record: a team whose group joins after the first incidents still gets them (older runs'
    // events are recognised by their run and dropped by the desk).
    options.start_from = StartFrom::Earliest;
    let mut sub = s.bus.subscribe(options).await?;
    while !*stop.borrow() {
        let batch = match sub.next_batch(Duration::from_millis(100)).await {
            Ok(b) => b,
            Err(BusError::Rebalanced) => continue,
            Err(e) => return Err(e),
        };
        if batch.is_empty() {
            continue;
        }
        for m in batch {
            let Ok(v) = serde_json::from_slice::<Value>(m.value.as_deref().unwrap_or_default()) else { continue };
            let (Some(run), Ok((mut e, _))) = (v["run"].as_i64(), parse_event(&v, 0, &|_| None)) else { continue };
            e.happened = v["happened_ms"].as_i64().unwrap_or(0);
            if desk.send((run, e)).await.is_err() {
                break;
            }
        }
        sub.commit().await.ok();
    }
    let _ = sub.close().await;
    Ok(())
}

/// One team's workers and the events waiting for them.
struct Desk {
    s: Shared,
    team: Team,
    pending: Vec<(i64, Event)>,
    /// Per worker: the run and the moment it is free again.
    workers: Vec<(i64, Ms)>,
    /// Handlings under way: run, event id, when they end, the event's deadline.
    finishing: Vec<(i64, String, Ms, Ms)>,
    received: HashMap<i64, u64>,
}

impl Desk {
    fn new(s: Shared, team: Team) -> Desk {
        Desk { workers: Vec::new(), s, team, pending: Vec::new(), finishing: Vec::new(), received: HashMap::new() }
    }

    fn absorb(&mut self, run: i64, e: Event) {
        *self.received.entry(run).or_default() += 1;
        self.pending.push((run, e));
    }

    async fn run(
        mut self,
        mut events: mpsc::Receiver<(i64, Event)>,
        mut steps: mpsc::Receiver<Step>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                Some((run, e)) = events.recv() => self.absorb(run, e),
                Some(step) = steps.recv() => {
                    let result = self.step(&mut events, &step).await;
                    let _ = step.reply.send(result);
                }
                _ = tick.tick() => {
                    if let Some((run, now, setup)) = self.s.real_now() {
                        self.act(run, now, &setup).await;
                    }
                }
            }
        }
    }

    /// A virtual moment: every event sent so far first, then the decisions.
    async fn step(&mut self, events: &mut mpsc::Receiver<(i64, Event)>, step: &Step) -> Result<Vec<Ms>, String> {
        let (run, expect) = (step.run, step.expect);
        let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.received.get(&run).copied().unwrap_or(0) < expect {
            match tokio::time::timeout_at(give_up, events.recv()).await {
                Ok(Some((r, e))) => self.absorb(r, e),
                Ok(None) => return Err(format!("{}'s consumer has stopped", self.team)),
                Err(_) => {
                    return Err(format!(
                        "{} has {} of the {expect} events sent to it after 30 s (is another process in its group?)",
                        self.team,
                        self.received.get(&run).copied().unwrap_or(0)
                    ))
                }
            }
        }
        Ok(self.act(run, step.now, &step.setup).await)
    }

    /// Everything due at `now`: handlings that have ended recorded, expired events dropped (the sweep marks them),
    /// free available workers given events by the policy. Returns when the handlings it started will end.
    async fn act(&mut self, run: i64, now: Ms, setup: &Setup) -> Vec<Ms> {
        let (store, rules) = (self.s.store.clone(), &setup.rules);
        if self.workers.len() != rules.workers_per_team || self.workers.iter().any(|(r, _)| *r != run && *r != 0) {
            // A new run (or new rules): every worker starts free.
            self.workers = vec![(0, 0); rules.workers_per_team];
        }
        let mut still = Vec::new();
        for (r, id, done, deadline) in std::mem::take(&mut self.finishing) {
            if done > now && r == run {
                still.push((r, id, done, deadline));
                continue;
            }
            let status = if done <= deadline { "handled" } else { "missed" };
            let _ = sqlx::query("UPDATE wedding_events SET status = $1, completed_at = $2 WHERE run = $3 AND id = $4")
                .bind(status)
                .bind(done)
                .bind(r)
                .bind(&id)
                .execute(store.pool())
                .await;
        }
        self.finishing = still;
        self.pending.retain(|(r, e)| *r == run && e.deadline() > now);
        self.received.retain(|r, _| *r == run);
        let mut ends = Vec::new();
        for w in 0..self.workers.len() {
            let (r, free_at) = self.workers[w];
            if (r == run && free_at > now) || !rules.can_start(self.team, now) {
                continue;
            }
            // Shared types sit in two teams' queues: the database decides who has it, and a worker that loses an
            // event to the other team picks again.
            while let Some(i) = self.pick(now, setup) {
                let (r, e) = self.pending.swap_remove(i);
                let claimed = sqlx::query(
                    "UPDATE wedding_events SET status = 'in_progress', team = $1, worker = $2, started_at = $3 \
                     WHERE run = $4 AND id = $5 AND status = 'pending'",
                )
                .bind(self.team.name())
                .bind(w as i32)
                .bind(now)
                .bind(r)
                .bind(&e.id)
                .execute(store.pool())
                .await
                .map(|d| d.rows_affected() == 1)
                .unwrap_or(false);
                if claimed {
                    let done = now + rules.handling;
                    self.workers[w] = (r, done);
                    self.finishing.push((r, e.id.clone(), done, e.deadline()));
                    ends.push(done);
                    break;
                }
            }
        }
        ends
    }

    /// The pending event the policy hands a worker free at `now`, if any: only what has happened by now counts (a
    /// dataset may be sent ahead of its times), and the choice is `Policy::choose`, the model's own.
    fn pick(&self, now: Ms, setup: &Setup) -> Option<usize> {
        let candidates =
            self.pending.iter().enumerate().filter(|(_, (_, e))| e.happened <= now).map(|(i, (_, e))| (i, e));
        setup.policy.choose(&setup.rules, now, candidates)
    }
}
