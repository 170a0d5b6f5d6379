//! Runs and their clocks: a real clock (`speed` times wall-clock time) or a virtual one that moves only on
//! `advance`, stopping at every moment where something can happen; and the sweep that marks events still pending at
//! their deadline as missed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// `speed` times real time since `started`.
    Real { started: Instant, speed: f64 },
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
            Clock::Real { started, speed } => (started.elapsed().as_secs_f64() * 1000.0 * speed) as Ms,
            Clock::Virtual => self.now.max(0),
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

/// Opens a run now: `virtual_clock` runs wait for `advance`; others go `speed` times real time.
pub(super) async fn new_run(s: &Shared, speed: f64, virtual_clock: bool, setup: Setup) -> Result<i64, ApiError> {
    let _one = s.opening.lock().await;
    open(s, speed, virtual_clock, setup).await
}

/// Opens a real-clock run on the service's settings if none is open (the first event of a `weir up`).
pub(super) async fn ensure_run(s: &Shared) -> Result<(), ApiError> {
    if s.run.lock().is_some() {
        return Ok(());
    }
    // Two first events at once must not open two runs (they would get the same id).
    let _one = s.opening.lock().await;
    if s.run.lock().is_none() {
        let setup = Setup { rules: s.config.rules.clone(), policy: s.config.policy };
        open(s, s.config.speed, false, setup).await?;
    }
    Ok(())
}

async fn open(s: &Shared, speed: f64, virtual_clock: bool, setup: Setup) -> Result<i64, ApiError> {
    let id = now_ms().max(s.run.lock().as_ref().map_or(0, |r| r.id + 1));
    store::insert_run(&s.store, id, setup.policy.name()).await?;
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

/// Moves the open virtual run's clock to `to`, stopping at every moment on the way where something can happen; at
/// each, every desk in team order acts once it has every event sent so far.
pub(super) async fn advance(s: &Shared, to: Ms) -> Result<Value, ApiError> {
    let _one = s.advancing.lock().await;
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
    let mut stops = 0u64;
    while let Some((t, sent)) = next_moment(s, run_id, &setup, to)? {
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
        store::sweep(&s.store, run_id, t).await?;
        if let Some(r) = s.run.lock().as_mut().filter(|r| r.id == run_id) {
            r.now = t;
        }
        stops += 1;
    }
    store::sweep(&s.store, run_id, to).await?;
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
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return Ok(()),
            _ = tick.tick() => {
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
