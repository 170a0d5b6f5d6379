//! Ingest: every item validated as the exercise's Coordinator does, placed on the run's clock, then stored as
//! pending with its topic's message in the outbox, in one transaction. The relay publishes the messages after the
//! commit, so an event the client was told is accepted reaches its topic even if the process dies right after, and
//! no message reaches a topic without its row.

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{json, Value};

use super::clock::{ensure_run, Clock, LATEST_VIRTUAL_EVENT};
use super::routes::{bad_request, ApiError};
use super::store::{self, NewEvent};
use super::{team_index, topic_for, Shared, MAX_MESSAGE_BYTES};
use crate::dataset::parse_event;
use crate::rules::{teams_for, Ms};
use crate::schedule::Event;

/// What a record costs in its topic besides its key and value: a batch header (61 bytes) and the record's own
/// varints and attributes, rounded up.
const RECORD_OVERHEAD: usize = 128;

/// The open run's id, clock reading, 00:00 instant, speed and whether it is virtual; opens a real-clock run first if
/// none is open.
async fn open_run(s: &Shared) -> Result<(i64, Ms, i64, f64, bool), ApiError> {
    ensure_run(s).await?;
    let guard = s.run.lock();
    let r = guard.as_ref().ok_or_else(|| ApiError(StatusCode::CONFLICT, "the run was closed".into()))?;
    let (speed, virtual_clock) = match r.clock {
        Clock::Real { speed, .. } => (speed, false),
        Clock::Virtual => (1.0, true),
    };
    Ok((r.id, r.now(), r.started_ms, speed, virtual_clock))
}

/// Validates every item, then stores them (nothing if any is refused); returns one answer per item.
pub(super) async fn ingest(s: &Shared, items: &[Value]) -> Result<Vec<Value>, ApiError> {
    let mut events = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let parsed = parse_event(v, i, &instant_ms).map_err(|e| bad_request(e.to_string()))?;
        events.push((parsed, v.get("id").is_some()));
    }
    let (run_id, now, started_ms, speed, virtual_clock) = open_run(s).await?;
    let clock = RunClock { run_id, now, started_ms, speed, virtual_clock };
    let ready = events
        .into_iter()
        .map(|((event, absolute), has_id)| clock.place(event, absolute, has_id))
        .collect::<Result<Vec<Event>, ApiError>>()?;
    let rows: Vec<NewEvent<'_>> = ready
        .iter()
        .map(|e| {
            let body = json!({"run": run_id, "id": e.id, "event_type": e.event_type, "priority": e.priority.name(),
                "description": e.description, "happened_ms": e.happened});
            NewEvent { event: e, topic: topic_for(e.event_type), message: Bytes::from(body.to_string()) }
        })
        .collect();
    check_sizes(&rows)?;
    let inserted = store::insert_events(&s.store, &s.outbox, run_id, &rows)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; nothing of this request was kept")))?;
    // What a virtual run's advance needs: how many events each desk must wait for, and when they happen. Only what
    // this request inserted is published; a retried id was counted the first time.
    if let Some(r) = s.run.lock().as_mut().filter(|r| r.id == run_id) {
        for e in inserted.iter().map(|&i| &ready[i]) {
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

/// Refuses a request with a message over [`MAX_MESSAGE_BYTES`], before the transaction: once a row is committed the
/// relay has to be able to publish it.
fn check_sizes(rows: &[NewEvent<'_>]) -> Result<(), ApiError> {
    for (i, n) in rows.iter().enumerate() {
        let size = n.event.id.len() + n.message.len() + RECORD_OVERHEAD;
        if size > MAX_MESSAGE_BYTES {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "event {i} ({}) would be a {size}-byte message, over the {MAX_MESSAGE_BYTES} bytes its topic {} \
                     takes (max.message.bytes): shorten its description",
                    n.event.id, n.topic
                ),
            ));
        }
    }
    Ok(())
}

/// The open run's clock, as a request's events are placed on it.
struct RunClock {
    run_id: i64,
    now: Ms,
    started_ms: i64,
    speed: f64,
    virtual_clock: bool,
}

impl RunClock {
    /// An event's time from the run's 00:00 (an RFC 3339 instant read against it, no time at all meaning now), and an
    /// id if the client gave none.
    fn place(&self, mut event: Event, absolute: Option<i64>, has_id: bool) -> Result<Event, ApiError> {
        event.happened = match absolute {
            // An instant counts from the run's 00:00 on the run's clock.
            Some(abs) => ((abs - self.started_ms) as f64 * self.speed) as Ms,
            None if event.happened < 0 => self.now,
            None => event.happened,
        }
        .max(0);
        if self.virtual_clock && event.happened > LATEST_VIRTUAL_EVENT {
            return Err(bad_request(format!(
                "timestamp of event {}: {} ms is more than 24 h after the virtual run's 00:00",
                event.id, event.happened
            )));
        }
        if !has_id {
            event.id = format!("{}-{}", self.run_id, rand::random::<u64>());
        }
        Ok(event)
    }
}

fn instant_ms(text: &str) -> Option<i64> {
    weir_runtime::time::parse_rfc3339(text)
}
