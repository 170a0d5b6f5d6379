//! `POST /api/wedding/simulate`: a random wedding driven in the background on a virtual clock through this service's
//! own routes, as `weir wedding simulate` drives one (`drive.rs`), for the web console's "start a simulated run".
//! The run's report says how far it has got under `simulation`; its events and outcomes are the run's like any other.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use weir_runtime::api_client::ApiTarget;

use super::routes::{bad_request, run_setup, ApiError};
use super::Shared;
use crate::dataset;
use crate::drive::{drive_run, start, DriveOptions};

/// A simulated run this instance drives.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Simulation {
    pub seed: u64,
    pub events: usize,
    pub sent: usize,
    /// Times faster than real time; `null` for as fast as it goes.
    pub speed: Option<f64>,
    pub finished: bool,
    pub error: Option<String>,
}

/// Most events a simulated wedding may have.
const MAX_EVENTS: u64 = 5000;

/// `POST /api/wedding/simulate {"seed", "events", "speed", "policy", "workers", "routines", "allow_overrun"}`: opens
/// a virtual-clock run and drives a random wedding (`events`, 300 by default, from `seed`, random by default) through
/// it, `speed` times faster than real time (10 by default; `"max"` for as fast as it goes). Answers 202 with the run
/// at once; 409 while another simulated run of this instance is going.
pub(super) async fn simulate(
    State(s): State<Shared>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| bad_request(format!("the body is not valid JSON: {e}")))?
    };
    // The rules the run will play by, checked before anything starts.
    let setup = run_setup(&s, &v)?;
    let events = match v.get("events").filter(|e| !e.is_null()) {
        None => 300,
        Some(e) => e
            .as_u64()
            .filter(|e| (1..=MAX_EVENTS).contains(e))
            .ok_or_else(|| bad_request(format!("events must be a whole number from 1 to {MAX_EVENTS}, got {e}")))?,
    } as usize;
    let seed = match v.get("seed").filter(|x| !x.is_null()) {
        None => rand::random::<u32>() as u64,
        Some(x) => x.as_u64().ok_or_else(|| bad_request(format!("seed must be a whole number, got {x}")))?,
    };
    let speed = match v.get("speed") {
        None | Some(Value::Null) => 10.0,
        Some(Value::String(m)) if m == "max" => f64::INFINITY,
        Some(x) => x
            .as_f64()
            .filter(|x| *x > 0.0 && x.is_finite())
            .ok_or_else(|| bad_request(format!("speed must be a positive number or \"max\", got {x}")))?,
    };
    let mut start_body = json!({"clock": "virtual"});
    for key in ["policy", "workers", "routines", "allow_overrun"] {
        if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
            start_body[key] = x.clone();
        }
    }
    let wedding = dataset::generate(events, setup.rules.wedding_length, seed);
    let options = DriveOptions { start: start_body, speed, batch: 1000, virtual_clock: true, progress: None };
    // One simulated run at a time: a second would open a new run under the first one's events.
    let _opening = s
        .simulating
        .try_lock()
        .map_err(|_| ApiError(StatusCode::CONFLICT, "a simulated run is still going: wait for it to finish".into()))?;
    if s.simulations.lock().values().any(|sim| !sim.finished) {
        return Err(ApiError(StatusCode::CONFLICT, "a simulated run is still going: wait for it to finish".into()));
    }
    let api = ApiTarget::Router(super::routes::router(s.clone()));
    let run = start(&api, &options).await.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let simulation =
        Simulation { seed, events, sent: 0, speed: speed.is_finite().then_some(speed), finished: false, error: None };
    s.simulations.lock().insert(run, simulation.clone());
    forget_old(&s);
    let shared = s.clone();
    tokio::spawn(async move {
        let record = shared.clone();
        let mut sent = move |n: usize| {
            if let Some(sim) = record.simulations.lock().get_mut(&run) {
                sim.sent = n;
            }
        };
        let outcome = drive_run(&api, run, &wedding, &options, &mut sent).await;
        if let Err(e) = &outcome {
            tracing::warn!(run, error = %e, "the simulated wedding stopped");
        }
        if let Some(sim) = shared.simulations.lock().get_mut(&run) {
            sim.finished = true;
            sim.error = outcome.err().map(|e| e.to_string());
        }
    });
    let answer = json!({"run": run, "simulation": simulation, "wedding_length_ms": setup.rules.wedding_length});
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// How long a finished simulation's progress is kept: only the latest few matter to anyone watching.
pub(super) const KEPT: usize = 16;

/// Forgets all but the latest [`KEPT`] finished simulations.
pub(super) fn forget_old(s: &Shared) {
    let mut sims = s.simulations.lock();
    while sims.len() > KEPT {
        let Some(oldest) = sims.iter().filter(|(_, sim)| sim.finished).map(|(run, _)| *run).min() else { break };
        sims.remove(&oldest);
    }
}
