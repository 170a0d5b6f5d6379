//! Driving a wedding over the wedding's HTTP API, as the seed's simulator does: a run opened, its events sent at
//! their times on the run's clock (a virtual clock moved a wedding second at a time, or the real one), until every
//! event is handled or past its deadline; then the run's report. `weir wedding simulate` drives it from the command
//! line (over HTTP or in-process), `POST /api/wedding/simulate` in the background for the web console.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use weir_runtime::api_client::ApiTarget;

use crate::report::Report;
use crate::rules::Ms;
use crate::schedule::Event;

/// How a run is driven.
#[derive(Clone, Debug)]
pub struct DriveOptions {
    /// The body of `POST /api/wedding/start` (clock, speed, policy, workers, routines).
    pub start: Value,
    /// How many times faster than real time; infinite for as fast as the run can go (virtual clock only).
    pub speed: f64,
    /// Events per request when several happen at once.
    pub batch: usize,
    /// The virtual clock (moved here a wedding second at a time), or the real one.
    pub virtual_clock: bool,
    /// A progress line on stderr about once a second.
    pub progress: Option<Progress>,
}

/// Sends `events` to ingest, `per_request` to a request, with times in whole seconds from 00:00 as the seed does.
pub async fn post_events(api: &ApiTarget, events: &[&Event], per_request: usize) -> Result<()> {
    let body: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({"id": e.id, "event_type": e.event_type, "priority": e.priority.name(),
                "description": e.description, "timestamp": e.happened / 1000})
        })
        .collect();
    for chunk in body.chunks(per_request) {
        api.call("POST", "/api/wedding/events", &Value::Array(chunk.to_vec())).await?;
    }
    Ok(())
}

/// Runs the wedding on the weir at `api`: a new run, the events sent at their times (on the run's clock), until
/// every one is handled or past its deadline; returns the run's report.
pub async fn drive(api: &ApiTarget, events: &[Event], options: &DriveOptions) -> Result<Report> {
    let run = start(api, options).await?;
    drive_run(api, run, events, options, &mut |_| {}).await
}

/// Opens the run (`POST /api/wedding/start` with the options' body): its id.
pub async fn start(api: &ApiTarget, options: &DriveOptions) -> Result<i64> {
    let answer = api.call("POST", "/api/wedding/start", &options.start).await?;
    answer["run"].as_i64().context("no run id in the answer")
}

/// Drives the open `run` (see [`drive`]); `sent_so_far` hears how many events have been sent as they go.
pub async fn drive_run(
    api: &ApiTarget,
    run: i64,
    events: &[Event],
    options: &DriveOptions,
    sent_so_far: &mut (dyn FnMut(usize) + Send),
) -> Result<Report> {
    let mut progress = options.progress.clone();
    let mut order: Vec<&Event> = events.iter().collect();
    order.sort_by_key(|e| e.happened);
    let end = order.iter().map(|e| e.deadline()).max().unwrap_or(0);
    let started = Instant::now();
    let speed = options.speed;
    // The wall-clock moment a wedding moment is due.
    let due = |ms: Ms| speed.is_finite().then(|| Duration::from_secs_f64(ms as f64 / 1000.0 / speed));
    let wedding_now = || (started.elapsed().as_secs_f64() * 1000.0 * speed) as Ms;
    let mut sent = 0;
    if options.virtual_clock {
        // One wedding second at a time: what happens within it is sent, then the clock is moved to its end.
        let mut t: Ms = 0;
        loop {
            if let Some(wait) = due(t).and_then(|d| d.checked_sub(started.elapsed())) {
                tokio::time::sleep(wait).await;
            }
            let upto = order[sent..].partition_point(|e| e.happened <= t);
            post_events(api, &order[sent..sent + upto], options.batch).await?;
            sent += upto;
            sent_so_far(sent);
            api.call("POST", "/api/wedding/advance", &json!({"to": t})).await?;
            show(&mut progress, api, run, t, sent, order.len(), false).await?;
            if t >= end && sent == order.len() {
                break;
            }
            t += 1000;
        }
    } else {
        while sent < order.len() {
            let at = order[sent].happened;
            if let Some(wait) = due(at).and_then(|d| d.checked_sub(started.elapsed())) {
                tokio::time::sleep(wait).await;
            }
            let upto = order[sent..].partition_point(|e| e.happened <= at);
            post_events(api, &order[sent..sent + upto], options.batch).await?;
            sent += upto;
            sent_so_far(sent);
            show(&mut progress, api, run, wedding_now(), sent, order.len(), false).await?;
        }
        // Until every event is handled or past its deadline.
        let give_up = due(end).unwrap_or_default() + Duration::from_secs(30);
        loop {
            let r = api.call("GET", &format!("/api/wedding/report?run={run}&summary=true"), &Value::Null).await?;
            if r["open"] == 0 && r["events"].as_u64() == Some(order.len() as u64) {
                break;
            }
            if started.elapsed() > give_up {
                bail!("the run did not settle: {r}");
            }
            show(&mut progress, api, run, wedding_now(), sent, order.len(), false).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    show(&mut progress, api, run, end, sent, order.len(), true).await?;
    let r = api.call("GET", &format!("/api/wedding/report?run={run}"), &Value::Null).await?;
    serde_json::from_value(r.clone()).with_context(|| format!("an unexpected report: {r}"))
}

/// The progress line on stderr: wedding time, events sent, handled and missed, about once a second.
#[derive(Clone, Debug)]
pub struct Progress {
    last: Option<Instant>,
    tty: bool,
}

/// Shows progress when there is a progress line.
async fn show(
    progress: &mut Option<Progress>,
    api: &ApiTarget,
    run: i64,
    now: Ms,
    sent: usize,
    total: usize,
    last: bool,
) -> Result<()> {
    match progress {
        Some(p) => p.show(api, run, now, sent, total, last).await,
        None => Ok(()),
    }
}

impl Progress {
    pub fn stderr() -> Self {
        use std::io::IsTerminal;
        Progress { last: None, tty: std::io::stderr().is_terminal() }
    }

    async fn show(&mut self, api: &ApiTarget, run: i64, now: Ms, sent: usize, total: usize, last: bool) -> Result<()> {
        if !last && self.last.is_some_and(|l| l.elapsed() < Duration::from_secs(1)) {
            return Ok(());
        }
        self.last = Some(Instant::now());
        let r = api.call("GET", &format!("/api/wedding/report?run={run}&summary=true"), &Value::Null).await?;
        let secs = now.max(0) / 1000;
        let line = format!(
            "{:02}:{:02}  sent {sent}/{}  handled {}  missed {}  open {}",
            secs / 60,
            secs % 60,
            total,
            r["happy"].as_i64().unwrap_or(0),
            r["stress"].as_i64().unwrap_or(0),
            r["open"].as_i64().unwrap_or(0)
        );
        // On a terminal, one line redrawn in place; elsewhere (logs, CI) a line a second.
        if self.tty {
            eprint!("\r{line}   ");
            if last {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
        Ok(())
    }
}
