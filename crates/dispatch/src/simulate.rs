//! `weir dispatch simulate`: the benchmark of dispatch as a whole. It brings U reviewers online, writes N events
//! through the API (`{"generate": B}` requests, K in flight: each a transaction with its outbox rows), and waits until
//! the assignment service has given every one out (relay → `events.outbound` → the service's queue → assignment
//! rounds) and the relay has learnt of each (`events.inbound` → `detection_events.state`). It reports events
//! assigned per second, the time from an event's creation to its assignment (p50, p99, as the service measured it),
//! and, on a weir of its own, the process's peak resident memory.
//!
//! Without `--target` it runs a weir of its own (`--database` or SQLite in a temporary directory, an embedded bus);
//! with `--target HOST:PORT` it drives a running weir (on any bus), whose reviewers it adds.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use weir_runtime::api_client::ApiTarget;

/// What a run measured.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// `end-to-end` (reviewers online first; from the first write) or `queued` (from the first reviewer online).
    pub mode: &'static str,
    pub events: u64,
    pub users: u64,
    /// Events given out during the run.
    pub assigned: u64,
    /// Seconds from the first write to the last assignment.
    pub seconds: f64,
    /// Seconds to write the events (their requests answered).
    pub write_seconds: f64,
    /// Seconds until the assignment service had received them all (relayed through `events.outbound`), as a poll
    /// every 250 ms noticed it.
    pub received_seconds: f64,
    pub assigned_per_second: f64,
    /// Seconds until the relay had every event's state back as Assigned.
    pub states_seconds: f64,
    /// Queued first: seconds to bring the reviewers online (from the first activation to the last answered), part
    /// of `seconds`, as each reviewer is given events the moment they are online.
    pub activate_seconds: Option<f64>,
    pub wait_p50_ms: i64,
    pub wait_p99_ms: i64,
    /// Peak resident memory of this process (a weir of its own), in bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// The run's parameters.
#[derive(Debug, Clone)]
pub struct Plan {
    pub events: u64,
    pub users: u64,
    pub batch: u64,
    pub in_flight: usize,
    pub timeout: Duration,
    /// Bring the reviewers online only once every event waits in the assignment service's queue: the figures are
    /// then the assignment service's alone (from the first reviewer online to the last assignment).
    pub queued_first: bool,
}

/// Brings `users` reviewers online, 32 requests at a time (one at a time, each would wait for the assignment round
/// in hand on a single-writer SQLite).
async fn activate(api: &ApiTarget, run: &str, users: u64) -> Result<()> {
    use futures_util::StreamExt;
    let calls = futures_util::stream::iter((0..users).map(|i| async move {
        let (status, body) =
            api.exchange("POST", &format!("/api/dispatch/users/sim-{run}-{i}/active"), &json!({})).await?;
        if status != 200 {
            bail!("POST /api/dispatch/users/.../active on {} answered {status}: {body}", api.name());
        }
        Ok(())
    }));
    let mut calls = calls.buffer_unordered(32);
    while let Some(done) = calls.next().await {
        done?;
    }
    Ok(())
}

/// How often the run asks for the stats: seldom enough not to load the weir it measures (each ask counts rows);
/// the end times come from the weir's own records, not from when a poll noticed them.
const POLL: Duration = Duration::from_millis(250);

fn int(v: &Value, path: &[&str]) -> i64 {
    path.iter().fold(v, |v, k| &v[*k]).as_i64().unwrap_or(0)
}

/// Runs `plan` against `api`, whose dispatch must have room for the events (users × its cap).
pub async fn drive(api: &ApiTarget, plan: &Plan) -> Result<Report> {
    let run = format!("{:08x}", rand::random::<u32>());
    if !plan.queued_first {
        activate(api, &run, plan.users).await?;
    }
    let before = api.call("GET", "/api/dispatch/stats", &Value::Null).await?;
    let (assigned_before, state_before) = (int(&before, &["assignedTotal"]), int(&before, &["events", "Assigned"]));
    let waiting_before = int(&before, &["waiting"]);

    let mut started = Instant::now();
    let mut start_ms = weir_runtime::time::now_ms();
    let mut sizes = Vec::new();
    let mut left = plan.events;
    while left > 0 {
        let n = left.min(plan.batch);
        sizes.push(n);
        left -= n;
    }
    let progress = indicatif::ProgressBar::new(plan.events);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message("writing events");
    let writes = futures_util::stream::iter(sizes.into_iter().map(|n| async move {
        let (status, body) = api.exchange("POST", "/api/dispatch/events", &json!({"generate": n})).await?;
        if status != 201 {
            bail!("POST /api/dispatch/events on {} answered {status}: {body}", api.name());
        }
        Ok::<u64, anyhow::Error>(n)
    }));
    use futures_util::StreamExt;
    let mut writes = writes.buffer_unordered(plan.in_flight.max(1));
    while let Some(n) = writes.next().await {
        progress.inc(n?);
    }
    drop(writes);
    let written = started.elapsed();
    progress.set_position(0);
    progress.set_message("assigned");

    let deadline = started + plan.timeout;
    let target = plan.events as i64;
    let (mut assigned_at, mut states_at, mut received_at, mut activated) = (None, None, None, None);
    if plan.queued_first {
        progress.set_message("received");
        loop {
            let stats = api.call("GET", "/api/dispatch/stats", &Value::Null).await?;
            let received = int(&stats, &["waiting"]) - waiting_before;
            progress.set_position(received.max(0) as u64);
            if received >= target {
                received_at = Some(started.elapsed());
                break;
            }
            if Instant::now() > deadline {
                bail!("after {:?}: {received} of {target} events received", plan.timeout);
            }
            tokio::time::sleep(POLL).await;
        }
        progress.set_message("assigned");
        started = Instant::now();
        start_ms = weir_runtime::time::now_ms();
        activate(api, &run, plan.users).await?;
        activated = Some(started.elapsed().as_secs_f64());
    }
    let mut stats;
    loop {
        stats = api.call("GET", "/api/dispatch/stats", &Value::Null).await?;
        let assigned = int(&stats, &["assignedTotal"]) - assigned_before;
        progress.set_position(assigned.max(0) as u64);
        if assigned + int(&stats, &["waiting"]) - waiting_before >= target && received_at.is_none() {
            received_at = Some(started.elapsed());
        }
        // When it happened, as the weir recorded it: this poll only notices it.
        let since_start = |key: &str| Duration::from_millis((int(&stats, &[key]) - start_ms).max(0) as u64);
        if assigned >= target && assigned_at.is_none() {
            assigned_at = Some(since_start("lastAssignedAtMs"));
        }
        if int(&stats, &["events", "Assigned"]) - state_before >= target && states_at.is_none() {
            states_at = Some(since_start("lastStateChangeAtMs"));
        }
        if assigned_at.is_some() && states_at.is_some() {
            break;
        }
        if Instant::now() > deadline {
            progress.abandon();
            bail!(
                "after {:?}: {assigned} of {target} events assigned, {} states back (is there room: users × the cap?)",
                plan.timeout,
                int(&stats, &["events", "Assigned"]) - state_before
            );
        }
        tokio::time::sleep(POLL).await;
    }
    progress.finish_and_clear();
    let seconds = assigned_at.unwrap_or_default().as_secs_f64();
    Ok(Report {
        mode: if plan.queued_first { "queued" } else { "end-to-end" },
        events: plan.events,
        users: plan.users,
        assigned: (int(&stats, &["assignedTotal"]) - assigned_before) as u64,
        seconds,
        write_seconds: written.as_secs_f64(),
        received_seconds: received_at.unwrap_or_default().as_secs_f64(),
        assigned_per_second: plan.events as f64 / seconds.max(1e-9),
        states_seconds: states_at.unwrap_or_default().as_secs_f64(),
        activate_seconds: activated,
        wait_p50_ms: int(&stats, &["timeToAssignmentMs", "p50"]),
        wait_p99_ms: int(&stats, &["timeToAssignmentMs", "p99"]),
        peak_rss_bytes: None,
    })
}

/// The report as a person reads it.
pub fn text(r: &Report) -> String {
    format!(
        "{}: {} events to {} reviewers: {} assigned in {:.2} s (written in {:.2} s, received in {:.2} s), {:.0} assigned/s; states back in \
         {:.2} s\ntime to assignment: p50 {} ms, p99 {} ms{}",
        r.mode,
        r.events,
        r.users,
        r.assigned,
        r.seconds,
        r.write_seconds,
        r.received_seconds,
        r.assigned_per_second,
        r.states_seconds,
        r.wait_p50_ms,
        r.wait_p99_ms,
        r.peak_rss_bytes.map(|b| format!("\npeak resident memory: {} MiB", b >> 20)).unwrap_or_default()
    )
}

/// Checks a plan against the cap before anything is written.
pub fn check(plan: &Plan, cap: i64) -> Result<()> {
    let room = plan.users.saturating_mul(cap as u64);
    if plan.events > room {
        bail!(
            "{} events cannot all be assigned: {} reviewers × {cap} open each is room for {room} (raise --users)",
            plan.events,
            plan.users
        );
    }
    Ok(())
}
