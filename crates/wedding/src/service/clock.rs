//! Runs and their clocks: a real clock (`speed` times wall-clock time) or a virtual one that moves only on
//! `advance`, stopping at every moment where something can happen; and the sweep that marks events still pending at
//! their deadline as missed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use weir_runtime::time::now_ms;
use weir_runtime::SystemError;

use super::routes::ApiError;
use super::{store, Shared};
use crate::rules::{Ms, Rules, Team};
use crate::schedule::Policy;

/// The latest an event of a virtual run may happen, from its 00:00: a wedding lasts minutes, and the virtual clock
/// stops at every phase start up to the last deadline. (A real-clock run opened by `weir up` may well be days old.)
pub(super) const LATEST_VIRTUAL_EVENT: Ms = 24 * 3600 * 1000;

/// How a run's clock goes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Clock {
    /// `speed` times wall-clock time since the run's 00:00 (`Run::started_ms`): every instance reads the same time.
    Real { speed: f64 },
    /// Moved by `POST /api/wedding/advance` only.
    Virtual,
}

/// The rules and policy a run plays by.
#[derive(Debug)]
pub(super) struct Setup {
    pub rules: Rules,
    pub policy: Policy,
}

/// The open run.
#[derive(Debug)]
pub(super) struct Run {
    pub id: i64,
    pub setup: Arc<Setup>,
    /// Wall-clock milliseconds at 00:00, to read RFC 3339 instants against.
    pub started_ms: i64,
    pub clock: Clock,
    /// Virtual runs: the moment the clock stands at (-1 before 00:00 has been acted on).
    pub now: Ms,
    /// Virtual runs: moments still to stop at (arrivals sent ahead, ends of handlings).
    pub moments: BTreeSet<Ms>,
    /// Events sent to each team (by `Team::ALL` index) in this run, so a desk knows when it has them all.
    pub sent: [u64; 5],
    /// Virtual runs: the latest deadline of any event sent; past it there is nothing left to decide.
    pub last_deadline: Ms,
}

impl Run {
    pub fn now(&self) -> Ms {
        match self.clock {
            Clock::Real { speed } => ((now_ms() - self.started_ms).max(0) as f64 * speed) as Ms,
            Clock::Virtual => self.now.max(0),
        }
    }

    /// The run its row describes, as an instance that did not open it (or takes its desks over) holds it. A virtual
    /// run's moments and counts are read again from the database by `advance`.
    pub(super) fn from_row(row: &store::RunRow, setup: Arc<Setup>) -> Run {
        Run {
            id: row.run,
            setup,
            started_ms: row.started_at,
            clock: if row.virtual_clock { Clock::Virtual } else { Clock::Real { speed: row.speed } },
            now: row.clock_ms,
            moments: BTreeSet::new(),
            sent: [0; 5],
            last_deadline: -1,
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self.clock, Clock::Real { .. })
    }
}

/// A desk's orders for one virtual moment.
pub(super) struct Step {
    pub run: i64,
    pub setup: Arc<Setup>,
    pub now: Ms,
    /// How many events of the run the desk must have received before it acts.
    pub expect: u64,
    /// The ends of the handlings it started.
    pub reply: oneshot::Sender<Result<Vec<Ms>, String>>,
}

/// Opens a run now: `virtual_clock` runs wait for `advance`; others go `speed` times real time. `body` is the start
/// request's setup (kept with the run, so every instance plays it by the same rules).
pub(super) async fn new_run(
    s: &Shared,
    speed: f64,
    virtual_clock: bool,
    setup: Setup,
    body: &Value,
) -> Result<i64, ApiError> {
    let _one = s.opening.lock().await;
    let row = store::open_run(&s.store, false, virtual_clock, speed, &body.to_string(), setup.policy.name()).await?;
    adopt(s, &row, Arc::new(setup));
    Ok(row.run)
}

/// Makes sure a run is open (the first event of a `weir up` opens a real-clock one on the service's settings) and
/// that this instance holds the latest one, whichever instance opened it.
pub(super) async fn ensure_run(s: &Shared) -> Result<(), ApiError> {
    // On SQLite this process is the only one (it holds the data directory), so the run it holds is the open one;
    // reading it back would add a statement to every request on SQLite's single connection (a quarter of `/message`'s
    // throughput). On PostgreSQL another instance may have opened a newer run.
    if s.store.dialect() == weir_runtime::sql::Dialect::Sqlite && s.run.lock().is_some() {
        return Ok(());
    }
    match store::latest_run(&s.store).await? {
        Some(row) => follow(s, &row),
        None => {
            // Two first events at once (here or at another instance) must not open two runs.
            let _one = s.opening.lock().await;
            let row = store::open_run(&s.store, true, false, s.config.speed, "{}", s.config.policy.name()).await?;
            follow(s, &row);
        }
    }
    Ok(())
}

/// Holds `row`'s run if it is not the one held already.
fn follow(s: &Shared, row: &store::RunRow) {
    if s.run.lock().as_ref().is_some_and(|r| r.id == row.run) {
        return;
    }
    let setup = s.setup_from(row);
    adopt(s, row, setup);
}

fn adopt(s: &Shared, row: &store::RunRow, setup: Arc<Setup>) {
    s.setups.lock().insert(row.run, setup.clone());
    let mut held = s.run.lock();
    // A later run replaces the held one; an older row (read before another instance opened a run) never does.
    if held.as_ref().is_none_or(|r| r.id < row.run) {
        *held = Some(Run::from_row(row, setup));
    }
}

/// Reads the open run again (another instance may have opened one): the desks and the sweeper follow it.
pub(super) async fn refresh(s: &Shared) -> Result<(), sqlx::Error> {
    if let Some(row) = store::latest_run(&s.store).await? {
        follow(s, &row);
    }
    Ok(())
}

/// Brings the held virtual run up to date with the database: what every instance has sent to it, and the ends of
/// the handlings under way (a desk that took over started none of them).
async fn catch_up(s: &Shared, run_id: i64, setup: &Setup) -> Result<(), ApiError> {
    let now = s.run.lock().as_ref().filter(|r| r.id == run_id).map_or(-1, |r| r.now);
    let (counts, arrivals, last_deadline, started) = store::virtual_run_state(&s.store, run_id, now).await?;
    let mut sent = [0u64; 5];
    for (event_type, n) in counts {
        if let Some(t) = crate::rules::canonical_type(&event_type) {
            for &team in crate::rules::teams_for(t) {
                sent[super::team_index(team)] += n as u64;
            }
        }
    }
    if let Some(r) = s.run.lock().as_mut().filter(|r| r.id == run_id) {
        for (held, stored) in r.sent.iter_mut().zip(sent) {
            *held = (*held).max(stored);
        }
        r.moments.extend(arrivals);
        r.moments.extend(started.into_iter().map(|t| t + setup.rules.handling));
        r.last_deadline = r.last_deadline.max(last_deadline);
    }
    Ok(())
}

/// Moves the open virtual run's clock to `to`, stopping at every moment on the way where something can happen; at
/// each, every desk in team order acts once it has every event sent so far.
pub(super) async fn advance(s: &Shared, to: Ms) -> Result<Value, ApiError> {
    let _one = s.advancing.lock().await;
    // An instance just started takes the lease within moments when nobody holds it: wait for that, not for longer.
    let waiting = tokio::time::Instant::now();
    while !s.leading.load(std::sync::atomic::Ordering::SeqCst) && waiting.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !s.leading.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this instance is standing by: the desks, and the virtual clock with them, run on the instance that \
             holds their lease; send advance there"
                .into(),
        ));
    }
    refresh(s).await?;
    let (run_id, setup) = match &*s.run.lock() {
        // Decisions already made at later moments cannot be unmade: the clock only goes forward.
        Some(r) if !r.is_real() && to < r.now => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("the run's clock is at {} ms and never goes back: advance to {} or later", r.now, r.now),
            ))
        }
        Some(r) if !r.is_real() => (r.id, r.setup.clone()),
        _ => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "no virtual run is open: POST /api/wedding/start {\"clock\": \"virtual\"}".into(),
            ))
        }
    };
    catch_up(s, run_id, &setup).await?;
    let mut stops = 0u64;
    let desks = s.desks.lock().clone();
    while let Some((t, sent)) = next_moment(s, run_id, &setup, to)? {
        for (k, desk) in desks.iter().enumerate() {
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
        store::sweep(&s.store, run_id, t).await?;
        store::set_clock(&s.store, run_id, t).await?;
        if let Some(r) = s.run.lock().as_mut().filter(|r| r.id == run_id) {
            r.now = t;
        }
        stops += 1;
    }
    store::sweep(&s.store, run_id, to).await?;
    store::set_clock(&s.store, run_id, to).await?;
    if let Some(r) = s.run.lock().as_mut().filter(|r| r.id == run_id) {
        r.now = r.now.max(to);
    }
    Ok(json!({"run": run_id, "now": to, "moments": stops}))
}

/// The next moment after the run's clock, up to `to`, where something can happen, and the events sent to each desk
/// by then; `None` when there is none.
fn next_moment(s: &Shared, run_id: i64, setup: &Setup, to: Ms) -> Result<Option<(Ms, [u64; 5])>, ApiError> {
    let guard = s.run.lock();
    let Some(r) = guard.as_ref().filter(|r| r.id == run_id) else {
        return Err(ApiError(StatusCode::CONFLICT, "the run was replaced while advancing".into()));
    };
    let next = r.moments.range(r.now + 1..).next().copied().unwrap_or(Ms::MAX);
    let next =
        next.min(Team::ALL.iter().map(|&t| setup.rules.routine(t).next_start_after(r.now)).min().unwrap_or(Ms::MAX));
    // Phases keep starting forever; past the last deadline (and every handling's end) they decide nothing.
    let settled = r.last_deadline.max(r.moments.last().copied().unwrap_or(-1));
    let t = if next > settled { Ms::MAX } else { next };
    Ok((t <= to && t != Ms::MAX).then_some((t, r.sent)))
}

/// Sweeps the open real-clock run as its time passes (virtual runs are swept by `advance`). A failed sweep is
/// logged and counted; the next tick sweeps again (the events stay pending until then).
pub(super) async fn sweeper(s: Shared, mut stop: watch::Receiver<bool>) -> Result<(), SystemError> {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return Ok(()),
            _ = tick.tick() => {
                // A run opened at another instance: the desks follow it within a quarter of a second.
                ticks += 1;
                if ticks.is_multiple_of(5) {
                    if let Err(e) = refresh(&s).await {
                        store::db_error("refresh", &e);
                    }
                }
                if let Some((run, now, _)) = s.real_now() {
                    if let Err(e) = store::sweep(&s.store, run, now).await {
                        store::db_error("sweep", &e);
                    }
                }
            }
        }
    }
}

/// Resolves once the platform stops.
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
