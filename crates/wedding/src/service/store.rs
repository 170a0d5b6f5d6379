//! Every SQL statement of the wedding services, on `wedding_runs` and `wedding_events` (SQLite or PostgreSQL).
//! Ingest writes an event's row and its outbox row in one transaction, so an acknowledged event always reaches its
//! topic (the relay publishes it) and a message on a topic always has its row.

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use sqlx::any::AnyRow;
use sqlx::Row;
use weir_runtime::outbox::{self, OutboxEvent, RelayWaker};
use weir_runtime::sql::insert_chunks;
use weir_runtime::SqlStore;

use crate::rules::Ms;
use crate::schedule::Event;

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

/// Logs a failed statement of a background task and counts it in `wedding_db_errors_total`; the caller keeps what
/// it was doing recoverable (the statement is tried again later).
pub(super) fn db_error(what: &'static str, e: &sqlx::Error) {
    metrics::counter!("wedding_db_errors_total", "statement" => what).increment(1);
    tracing::warn!(statement = what, error = %e, "a wedding database statement failed; it will be tried again");
}

pub(super) async fn insert_run(store: &SqlStore, run: i64, policy: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO wedding_runs (run, started_at, policy) VALUES ($1, $2, $3)")
        .bind(run)
        .bind(weir_runtime::time::now_ms())
        .bind(policy)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// An event ready to store, with the message its topic gets.
pub(super) struct NewEvent<'a> {
    pub event: &'a Event,
    pub topic: String,
    pub message: Bytes,
}

/// Stores `events` of `run` as pending and their messages in the outbox, in one transaction, and hands the messages
/// to `relay` once committed; returns the positions in `events` of those it inserted. An id already stored (a
/// client's retry, or named twice in one request) is neither inserted nor enqueued again: its message was enqueued
/// with it the first time.
pub(super) async fn insert_events(
    store: &SqlStore,
    relay: &RelayWaker,
    run: i64,
    events: &[NewEvent<'_>],
) -> Result<Vec<usize>, weir_runtime::StoreError> {
    let mut tx = store.begin().await?;
    let mut inserted: Vec<String> = Vec::with_capacity(events.len());
    let dialect = store.dialect();
    let mut rest = events;
    for size in insert_chunks(events.len()) {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        // Any error drops `tx`, which rolls back every statement of it.
        let mut sql = format!(
            "{} INTO wedding_events (run, id, event_type, priority, description, happened_at, deadline, status) VALUES ",
            dialect.insert_in_tx()
        );
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = |k: usize| dialect.param(i * 7 + k);
                format!("({}, {}, {}, {}, {}, {}, {}, 'pending')", p(1), p(2), p(3), p(4), p(5), p(6), p(7))
            })
            .collect();
        sql += &rows.join(", ");
        sql += " ON CONFLICT (run, id) DO NOTHING RETURNING id";
        let mut q = sqlx::query(&sql);
        for n in chunk {
            let e = n.event;
            q = q
                .bind(run)
                .bind(e.id.clone())
                .bind(e.event_type)
                .bind(e.priority.name())
                .bind(e.description.clone())
                .bind(e.happened)
                .bind(e.deadline());
        }
        let rows = q.fetch_all(&mut *tx).await?;
        inserted.extend(rows.iter().map(|r| r.get::<String, _>(0)));
    }
    // The first occurrence of each inserted id (the second row of an id named twice was not inserted).
    let mut fresh: std::collections::HashSet<&str> = inserted.iter().map(String::as_str).collect();
    let positions: Vec<usize> = (0..events.len()).filter(|&i| fresh.remove(events[i].event.id.as_str())).collect();
    let messages: Vec<OutboxEvent> = positions
        .iter()
        .map(|&i| &events[i])
        .map(|n| OutboxEvent {
            // The outbox's own time-ordered id: its unique index grows at one end. (An id made of the run and the
            // event's id would land at random places in it, a page written per event: client ids are anything.)
            id: None,
            topic: n.topic.clone(),
            key: Some(Bytes::from(n.event.id.clone())),
            payload: Some(n.message.clone()),
            headers: Vec::new(),
        })
        .collect();
    let enqueued = outbox::enqueue_all(&mut tx, store.dialect(), messages).await?;
    tx.commit().await?;
    relay.committed(enqueued);
    Ok(positions)
}

/// Events still pending at or past their deadline are stress marks.
pub(super) async fn sweep(store: &SqlStore, run: i64, now: Ms) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE wedding_events SET status = 'missed' WHERE run = $1 AND status = 'pending' AND deadline <= $2")
        .bind(run)
        .bind(now)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Takes a pending event for `team`'s `worker`: `Ok(false)` when it is no longer pending (the other team of a
/// shared type has it, or it was swept).
pub(super) async fn claim(
    store: &SqlStore,
    run: i64,
    id: &str,
    team: &str,
    worker: usize,
    now: Ms,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE wedding_events SET status = 'in_progress', team = $1, worker = $2, started_at = $3 \
         WHERE run = $4 AND id = $5 AND status = 'pending'",
    )
    .bind(team)
    .bind(worker as i32)
    .bind(now)
    .bind(run)
    .bind(id)
    .execute(store.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the end of a handling: `handled` by its deadline, else `missed`.
pub(super) async fn complete(store: &SqlStore, run: i64, id: &str, status: &str, at: Ms) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE wedding_events SET status = $1, completed_at = $2 WHERE run = $3 AND id = $4")
        .bind(status)
        .bind(at)
        .bind(run)
        .bind(id)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// A run's events, optionally of one status and one team, in the order they happened.
pub(super) async fn list_events(
    store: &SqlStore,
    run: i64,
    status: &str,
    team: &str,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    sqlx::query(
        "SELECT id, event_type, priority, happened_at, deadline, team, worker, started_at, completed_at, status \
         FROM wedding_events WHERE run = $1 AND ($2 = '' OR status = $2) AND ($3 = '' OR team = $3) ORDER BY happened_at, id",
    )
    .bind(run)
    .bind(status.to_string())
    .bind(team.to_string())
    .fetch_all(store.pool())
    .await
}

/// How many of a run's events have each status.
pub(super) async fn status_counts(store: &SqlStore, run: i64) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows = sqlx::query("SELECT status, COUNT(*) FROM wedding_events WHERE run = $1 GROUP BY status")
        .bind(run)
        .fetch_all(store.pool())
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A run's events for its report, streamed (a run may hold a million; descriptions play no part in the report):
/// id, event_type, priority, happened_at, status, team, worker, started_at, completed_at, deadline.
pub(super) fn report_rows(store: &SqlStore, run: i64) -> BoxStream<'_, Result<AnyRow, sqlx::Error>> {
    sqlx::query(
        "SELECT id, event_type, priority, happened_at, status, team, worker, started_at, completed_at, deadline \
         FROM wedding_events WHERE run = $1 ORDER BY happened_at, id",
    )
    .bind(run)
    .fetch(store.pool())
}
