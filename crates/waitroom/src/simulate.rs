//! `weir waitroom simulate`: users arriving at a ticket sale, through the real API (HTTP, or gRPC with `--via
//! grpc`). Each joins (priorities: 70 % 0, 20 % 5, 10 % 10), watches its status, may leave while waiting
//! (`--exit-rate` per minute), and once admitted checks out: it completes with probability `--checkout-rate`, else
//! half fail (`checkout.failed`) and half walk away (the waitroom expires their checkout). Outcomes are published as
//! the checkout service would: on the bus, or through a running weir's REST Proxy (`--target`). `--speed X` runs the
//! clock X times faster (the rates, the checkout time and, on the simulator's own weir, the admission interval and
//! token lifetime).
//!
//! The report: joined, admitted, completed, failed, abandoned, expired, the wait from joining to admission (p50,
//! p99, from the sessions' own timestamps), the largest checkout concurrency seen, and fairness violations: a user
//! admitted before someone who joined earlier with the same or a higher priority and was still waiting (there must
//! be none).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use parking_lot::Mutex;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use weir_runtime::api_client::ApiTarget;
use weir_runtime::{Bus, OutgoingMessage};

use crate::grpc::pb;
use crate::model::Topics;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Plan {
    pub users: u64,
    /// Joins per second (before `speed`).
    pub join_rate: f64,
    /// The probability an admitted user completes checkout.
    pub checkout_rate: f64,
    /// The probability per minute (before `speed`) that a waiting user gives up.
    pub exit_rate_per_min: f64,
    /// How long checking out takes (before `speed`), on average.
    pub checkout_time: Duration,
    pub speed: f64,
    pub event_id: String,
    pub timeout: Duration,
}

/// How the simulated users reach the waitroom.
#[derive(Clone, Debug)]
pub enum Via {
    Http(ApiTarget),
    Grpc(pb::waitroom_service_client::WaitroomServiceClient<tonic::transport::Channel>),
}

/// How the simulated checkout service publishes outcomes.
#[derive(Clone)]
pub enum Outcomes {
    Bus(Arc<dyn Bus>, Topics),
    /// A running weir's REST Proxy (`POST /topics/{topic}`).
    Rest(ApiTarget, Topics),
}

/// What happened to one user.
#[derive(Clone, Debug, Default)]
struct User {
    priority: u8,
    arrival: i64,
    queued_at_us: i64,
    admitted_at_us: Option<i64>,
    end: Option<&'static str>,
    refused: Option<String>,
}

/// The simulation's outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub via: String,
    pub users: u64,
    pub joined: u64,
    pub refused: u64,
    pub admitted: u64,
    pub completed: u64,
    pub failed: u64,
    pub abandoned: u64,
    pub expired: u64,
    pub still_waiting: u64,
    pub wait_ms_p50: Option<i64>,
    pub wait_ms_p99: Option<i64>,
    pub max_in_checkout: u64,
    pub fairness_violations: u64,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
}

fn micros(v: &Value, field: &str) -> Option<i64> {
    v.get(field)?.as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()).map(|t| t.timestamp_micros())
}

fn pb_micros(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref().map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
}

/// A status as the simulator reads it, whichever the API: (status, arrival, queued_at, admitted_at) or gone.
enum Seen {
    Status { status: String, arrival: i64, queued_at: i64, admitted_at: Option<i64> },
    Gone,
}

impl Via {
    async fn join(&self, user: &str, event: &str, priority: u8) -> Result<std::result::Result<String, String>> {
        match self {
            Via::Http(api) => {
                let body = json!({"user_id": user, "event_id": event, "priority": priority});
                let (status, v) = api.exchange("POST", "/api/v1/waitroom/join", &body).await?;
                match status {
                    201 => Ok(Ok(v["session_id"].as_str().unwrap_or_default().to_string())),
                    409 | 503 | 403 => Ok(Err(format!("{status}"))),
                    _ => bail!("join answered {status}: {v}"),
                }
            }
            Via::Grpc(client) => {
                let r = pb::JoinQueueRequest {
                    user_id: user.into(),
                    event_id: event.into(),
                    priority: i32::from(priority),
                    ..Default::default()
                };
                match client.clone().join_queue(r).await {
                    Ok(r) => Ok(Ok(r.into_inner().session_id)),
                    Err(s)
                        if matches!(
                            s.code(),
                            tonic::Code::AlreadyExists | tonic::Code::ResourceExhausted | tonic::Code::PermissionDenied
                        ) =>
                    {
                        Ok(Err(format!("{:?}", s.code())))
                    }
                    Err(s) => bail!("JoinQueue: {s}"),
                }
            }
        }
    }

    async fn status(&self, id: &str) -> Result<Seen> {
        match self {
            Via::Http(api) => {
                let (status, v) = api.exchange("GET", &format!("/api/v1/waitroom/status/{id}"), &Value::Null).await?;
                match status {
                    200 => Ok(Seen::Status {
                        status: v["status"].as_str().unwrap_or_default().to_string(),
                        arrival: v["arrival"].as_i64().unwrap_or_default(),
                        queued_at: micros(&v, "queued_at").unwrap_or_default(),
                        admitted_at: micros(&v, "admitted_at"),
                    }),
                    410 => Ok(Seen::Gone),
                    _ => bail!("status answered {status}: {v}"),
                }
            }
            Via::Grpc(client) => {
                let r = pb::GetQueueStatusRequest { session_id: id.into() };
                match client.clone().get_queue_status(r).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let status = match pb::SessionStatus::try_from(r.status) {
                            Ok(pb::SessionStatus::Queued) => "queued",
                            Ok(pb::SessionStatus::Ready) => "admitted",
                            Ok(pb::SessionStatus::Completed) => "completed",
                            Ok(pb::SessionStatus::Failed) => "failed",
                            Ok(pb::SessionStatus::Expired) => "expired",
                            Ok(pb::SessionStatus::Cancelled) => "abandoned",
                            _ => "unknown",
                        };
                        Ok(Seen::Status {
                            status: status.into(),
                            arrival: r.arrival,
                            queued_at: pb_micros(&r.queued_at).unwrap_or_default(),
                            admitted_at: pb_micros(&r.admitted_at),
                        })
                    }
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(Seen::Gone),
                    Err(s) => bail!("GetQueueStatus: {s}"),
                }
            }
        }
    }

    async fn leave(&self, id: &str) -> Result<bool> {
        match self {
            Via::Http(api) => {
                let (status, _) = api.exchange("DELETE", &format!("/api/v1/waitroom/leave/{id}"), &Value::Null).await?;
                Ok(status == 200)
            }
            Via::Grpc(client) => {
                Ok(client.clone().leave_queue(pb::LeaveQueueRequest { session_id: id.into() }).await.is_ok())
            }
        }
    }
}

impl Outcomes {
    async fn publish(&self, completed: bool, session: &str, user: &str, event: &str) -> Result<()> {
        let value = json!({"session_id": session, "user_id": user, "event_id": event,
                           "timestamp": chrono::Utc::now().to_rfc3339()});
        match self {
            Outcomes::Bus(bus, topics) => {
                let topic = if completed { &topics.completed } else { &topics.failed };
                bus.produce(OutgoingMessage::new(topic.clone(), value.to_string()).key(event.to_string())).await?;
            }
            Outcomes::Rest(api, topics) => {
                let topic = if completed { &topics.completed } else { &topics.failed };
                let body = json!({"records": [{"key": event, "value": value}]});
                let (status, v) = api.exchange("POST", &format!("/topics/{topic}"), &body).await?;
                if status != 200 {
                    bail!("POST /topics/{topic} answered {status}: {v}");
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcomes::Bus(_, topics) => f.debug_tuple("Bus").field(topics).finish(),
            Outcomes::Rest(api, topics) => f.debug_tuple("Rest").field(&api.name()).field(topics).finish(),
        }
    }
}

/// How many are in checkout, from the HTTP API's stats (gRPC has no such call).
async fn in_checkout(api: &ApiTarget, event: &str) -> Option<u64> {
    let (status, v) =
        api.exchange("GET", &format!("/api/v1/waitroom/events/{event}/stats"), &Value::Null).await.ok()?;
    (status == 200).then(|| v["in_checkout"].as_u64()).flatten()
}

/// Runs the simulation to its end; `stats` is the waitroom's HTTP API, watched for the checkout concurrency
/// whichever API the users take.
pub async fn run(plan: &Plan, via: Via, outcomes: Outcomes, stats: ApiTarget) -> Result<Report> {
    let started = Instant::now();
    let speed = plan.speed.max(0.001);
    let users: Arc<Mutex<HashMap<String, User>>> = Arc::default();
    let max_in_checkout = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    // The largest checkout concurrency, sampled every 50 ms.
    let monitor = {
        let (api, event, max, mut done) = (stats, plan.event_id.clone(), max_in_checkout.clone(), done_rx.clone());
        tokio::spawn(async move {
            while !*done.borrow_and_update() {
                if let Some(n) = in_checkout(&api, &event).await {
                    max.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Polls are spaced so the simulator asks at most ~2,000 statuses a second however many wait (the waits it
    // reports come from the sessions' own timestamps, not from when it looked).
    let poll = Duration::from_secs_f64((plan.users as f64 / 2000.0).max(0.1 / speed).max(0.02));
    let gap = Duration::from_secs_f64(1.0 / (plan.join_rate * speed).max(0.001));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..plan.users {
        let at = started + gap.mul_f64(n as f64);
        let (via, outcomes, users, plan) = (via.clone(), outcomes.clone(), users.clone(), plan.clone());
        tasks.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let name = format!("sim-user-{n}");
            user(&name, &plan, poll, &via, &outcomes, &users).await.with_context(|| name.clone())
        });
    }
    let deadline = tokio::time::sleep(plan.timeout);
    tokio::pin!(deadline);
    let mut first_error = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => { first_error.get_or_insert(e); tasks.abort_all(); }
                Some(Err(e)) if e.is_cancelled() => {}
                Some(Err(e)) => { first_error.get_or_insert(anyhow::anyhow!("a simulated user failed: {e}")); }
            },
            _ = &mut deadline => { tasks.abort_all(); while tasks.join_next().await.is_some() {} break; }
        }
    }
    let _ = done_tx.send(true);
    let _ = monitor.await;
    if let Some(e) = first_error {
        return Err(e);
    }
    let users = users.lock().clone();
    let mut report = summarize(&users, plan.users);
    report.max_in_checkout = max_in_checkout.load(std::sync::atomic::Ordering::Relaxed);
    report.via = match via {
        Via::Http(_) => "http".into(),
        Via::Grpc(_) => "grpc".into(),
    };
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One user's life: join, wait (maybe leave), check out (complete, fail or walk away), until settled.
async fn user(
    name: &str,
    plan: &Plan,
    poll: Duration,
    via: &Via,
    outcomes: &Outcomes,
    users: &Mutex<HashMap<String, User>>,
) -> Result<()> {
    let priority = {
        let r: f64 = rand::thread_rng().gen();
        if r < 0.1 {
            10
        } else if r < 0.3 {
            5
        } else {
            0
        }
    };
    let id = match via.join(name, &plan.event_id, priority).await? {
        Ok(id) => id,
        Err(why) => {
            users.lock().insert(name.into(), User { priority, refused: Some(why), ..Default::default() });
            return Ok(());
        }
    };
    users.lock().insert(name.into(), User { priority, ..Default::default() });
    let speed = plan.speed.max(0.001);
    let leave_per_poll = plan.exit_rate_per_min * speed * poll.as_secs_f64() / 60.0;
    let mut checked_out = false;
    loop {
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        tokio::time::sleep(poll.mul_f64(jitter)).await;
        let seen = via.status(&id).await?;
        let status = {
            let mut all = users.lock();
            let u = all.get_mut(name).context("the user's record")?;
            match seen {
                Seen::Gone => {
                    u.end = Some("expired");
                    return Ok(());
                }
                Seen::Status { status, arrival, queued_at, admitted_at } => {
                    u.arrival = arrival;
                    u.queued_at_us = queued_at;
                    if u.admitted_at_us.is_none() {
                        u.admitted_at_us = admitted_at;
                    }
                    let end = match status.as_str() {
                        "completed" => Some("completed"),
                        "failed" => Some("failed"),
                        "expired" => Some("expired"),
                        "abandoned" => Some("abandoned"),
                        _ => None,
                    };
                    if end.is_some() {
                        u.end = end;
                        return Ok(());
                    }
                    status
                }
            }
        };
        match status.as_str() {
            "queued" => {
                if rand::thread_rng().gen::<f64>() < leave_per_poll && via.leave(&id).await? {
                    users.lock().get_mut(name).context("the user's record")?.end = Some("abandoned");
                    return Ok(());
                }
            }
            "admitted" if !checked_out => {
                checked_out = true;
                let took = plan.checkout_time.mul_f64(rand::thread_rng().gen_range(0.5..1.5) / speed);
                tokio::time::sleep(took).await;
                let r: f64 = rand::thread_rng().gen();
                if r < plan.checkout_rate {
                    outcomes.publish(true, &id, name, &plan.event_id).await?;
                } else if r < plan.checkout_rate + (1.0 - plan.checkout_rate) / 2.0 {
                    outcomes.publish(false, &id, name, &plan.event_id).await?;
                }
                // Else the user walks away: the waitroom expires the checkout.
            }
            "admitted" => {}
            other => bail!("an unknown status {other:?}"),
        }
    }
}

fn summarize(users: &HashMap<String, User>, planned: u64) -> Report {
    let mut r = Report { users: planned, ..Default::default() };
    let mut waits = Vec::new();
    for u in users.values() {
        if u.refused.is_some() {
            r.refused += 1;
            continue;
        }
        r.joined += 1;
        if let Some(a) = u.admitted_at_us {
            r.admitted += 1;
            waits.push((a - u.queued_at_us) / 1000);
        }
        match u.end {
            Some("completed") => r.completed += 1,
            Some("failed") => r.failed += 1,
            Some("abandoned") => r.abandoned += 1,
            Some("expired") => r.expired += 1,
            _ => r.still_waiting += 1,
        }
    }
    waits.sort_unstable();
    let at = |q: f64| waits.get(((waits.len().max(1) - 1) as f64 * q).round() as usize).copied();
    (r.wait_ms_p50, r.wait_ms_p99) = (at(0.5), at(0.99));
    r.fairness_violations = violations(users.values().filter(|u| u.refused.is_none()));
    r
}

/// Users admitted before someone who joined earlier with the same or a higher priority and had not left by then:
/// for each user (latest first), the earliest admission among later arrivals of each priority.
fn violations<'a>(users: impl Iterator<Item = &'a User>) -> u64 {
    let mut all: Vec<&User> = users.collect();
    all.sort_by_key(|u| u.arrival);
    let mut earliest_later = [i64::MAX; 11];
    let mut n = 0;
    for u in all.iter().rev() {
        // Someone who left or expired while waiting had no claim on a place.
        let waited_out = u.admitted_at_us.is_none() && matches!(u.end, Some("abandoned") | Some("expired"));
        if !waited_out {
            let mine = u.admitted_at_us.unwrap_or(i64::MAX);
            let overtaken = earliest_later[..=usize::from(u.priority.min(10))].iter().any(|t| *t < mine);
            if overtaken {
                n += 1;
            }
        }
        if let Some(a) = u.admitted_at_us {
            let slot = &mut earliest_later[usize::from(u.priority.min(10))];
            *slot = (*slot).min(a);
        }
    }
    n
}

/// The report as a person reads it.
pub fn text(r: &Report) -> String {
    let ms = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| format!("{v} ms"));
    let mut out = format!(
        "waitroom simulation over {} ({:.1} s): {} users, {} joined ({} refused)\n\
         admitted {}, completed {}, failed {}, abandoned {}, expired {}, still waiting {}\n\
         wait to admission: p50 {}, p99 {}; largest checkout concurrency seen {}; fairness violations {}",
        r.via,
        r.seconds,
        r.users,
        r.joined,
        r.refused,
        r.admitted,
        r.completed,
        r.failed,
        r.abandoned,
        r.expired,
        r.still_waiting,
        ms(r.wait_ms_p50),
        ms(r.wait_ms_p99),
        r.max_in_checkout,
        r.fairness_violations
    );
    if let Some(rss) = r.peak_rss_bytes {
        out += &format!("\npeak resident memory {:.1} MiB", rss as f64 / 1048576.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(priority: u8, arrival: i64, admitted: Option<i64>, end: Option<&'static str>) -> User {
        User { priority, arrival, admitted_at_us: admitted, end, ..Default::default() }
    }

    #[test]
    fn an_overtaking_is_a_violation_and_priority_is_not() {
        // A VIP arriving later goes first: fine. Same priority, later arrival first: one violation.
        let fine = [u(0, 1, Some(20), None), u(10, 2, Some(10), None), u(0, 3, Some(30), None)];
        assert_eq!(violations(fine.iter()), 0);
        let unfair = [u(0, 1, Some(30), None), u(0, 2, Some(10), None)];
        assert_eq!(violations(unfair.iter()), 1);
        // Still waiting while a later equal got in: a violation; one who left first: none.
        assert_eq!(violations([u(5, 1, None, None), u(0, 2, Some(5), None)].iter()), 1);
        assert_eq!(violations([u(5, 1, None, Some("abandoned")), u(0, 2, Some(5), None)].iter()), 0);
    }
}
