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

/// Creates `wedding_runs` and `wedding_events`. A run's row holds all of its clock and setup, so any instance sharing
/// the database can serve it and another can take its desks over.
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
    // Columns added since the table's first version (a database of an older weir gets them with their defaults):
    // the clock (`real` or `virtual`), its speed, the virtual clock's reading, and the setup the run was started with.
    let real = if store.dialect() == weir_runtime::sql::Dialect::Postgres { "DOUBLE PRECISION" } else { "REAL" };
    let columns: Vec<String> = match store.dialect() {
        weir_runtime::sql::Dialect::Postgres => sqlx::query(
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns WHERE table_name = 'wedding_runs'",
        ),
        weir_runtime::sql::Dialect::Sqlite => sqlx::query("SELECT name FROM pragma_table_info('wedding_runs')"),
    }
    .fetch_all(store.pool())
    .await?
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    for (name, ty) in [
        ("clock", "TEXT NOT NULL DEFAULT 'real'".to_string()),
        ("speed", format!("{real} NOT NULL DEFAULT 1")),
        ("clock_ms", "BIGINT NOT NULL DEFAULT -1".to_string()),
        ("setup", "TEXT NOT NULL DEFAULT '{}'".to_string()),
    ] {
        if !columns.iter().any(|c| c == name) {
            sqlx::query(&format!("ALTER TABLE wedding_runs ADD COLUMN {name} {ty}")).execute(store.pool()).await?;
        }
    }
    Ok(())
}

/// A run as its row holds it.
#[derive(Clone, Debug)]
pub(super) struct RunRow {
    pub run: i64,
    /// Wall-clock milliseconds at the run's 00:00.
    pub started_at: i64,
    pub virtual_clock: bool,
    pub speed: f64,
    /// A virtual run's clock reading (-1 before 00:00 has been acted on).
    pub clock_ms: Ms,
    /// The body of the `start` request that opened it (policy, workers, routines, ...), `{}` for the defaults.
    pub setup: String,
}

const RUN_COLUMNS: &str = "run, started_at, clock, CAST(speed AS DOUBLE PRECISION), clock_ms, setup";

fn run_row(r: &AnyRow) -> Result<RunRow, sqlx::Error> {
    Ok(RunRow {
        run: r.try_get(0)?,
        started_at: r.try_get(1)?,
        virtual_clock: r.try_get::<String, _>(2)? == "virtual",
        speed: r.try_get(3)?,
        clock_ms: r.try_get(4)?,
        setup: r.try_get(5)?,
    })
}

/// The open run: the latest one opened, by any instance.
pub(super) async fn latest_run(store: &SqlStore) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM wedding_runs ORDER BY run DESC LIMIT 1"))
        .fetch_optional(store.pool())
        .await?
        .as_ref()
        .map(run_row)
        .transpose()
}

/// The latest `limit` runs, newest first.
pub(super) async fn recent_runs(store: &SqlStore, limit: i64) -> Result<Vec<RunRow>, sqlx::Error> {
    let rows = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM wedding_runs ORDER BY run DESC LIMIT $1"))
        .bind(limit)
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(run_row).collect()
}

pub(super) async fn find_run(store: &SqlStore, run: i64) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM wedding_runs WHERE run = $1"))
        .bind(run)
        .fetch_optional(store.pool())
        .await?
        .as_ref()
        .map(run_row)
        .transpose()
}

/// The key of the PostgreSQL advisory lock that orders run openings across instances ("weirrun" and 1).
const RUNS_LOCK: i64 = 0x7765_6972_7275_6e01;
/// The key of the lock the instance running the desks holds ("weirdsk" and 1).
const DESKS_LOCK: i64 = 0x7765_6972_6473_6b01;

/// Opens a run (`only_if_none`: only if no run is open yet, returning the open one otherwise), one instance at a
/// time, so two first events arriving at two instances open one run between them.
pub(super) async fn open_run(
    store: &SqlStore,
    only_if_none: bool,
    virtual_clock: bool,
    speed: f64,
    setup: &str,
    policy: &str,
) -> Result<RunRow, sqlx::Error> {
    let mut tx = store.begin().await.map_err(|e| match e {
        weir_runtime::StoreError::Db(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    })?;
    if store.dialect() == weir_runtime::sql::Dialect::Postgres {
        sqlx::query("SELECT CAST(pg_advisory_xact_lock($1) AS TEXT)").bind(RUNS_LOCK).execute(&mut *tx).await?;
    }
    let latest = sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM wedding_runs ORDER BY run DESC LIMIT 1"))
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(run_row)
        .transpose()?;
    if let Some(open) = latest.as_ref().filter(|_| only_if_none) {
        return Ok(open.clone());
    }
    let now = weir_runtime::time::now_ms();
    let row = RunRow {
        run: now.max(latest.map_or(0, |r| r.run + 1)),
        started_at: now,
        virtual_clock,
        speed,
        clock_ms: -1,
        setup: setup.to_string(),
    };
    sqlx::query(
        "INSERT INTO wedding_runs (run, started_at, policy, clock, speed, clock_ms, setup) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(row.run)
    .bind(row.started_at)
    .bind(policy)
    .bind(if virtual_clock { "virtual" } else { "real" })
    .bind(speed)
    .bind(row.clock_ms)
    .bind(setup)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// Records where a virtual run's clock stands, so an instance taking the desks over resumes there.
pub(super) async fn set_clock(store: &SqlStore, run: i64, at: Ms) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE wedding_runs SET clock_ms = $1 WHERE run = $2 AND clock_ms < $1")
        .bind(at)
        .bind(run)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// The lease on the desks: held by one instance at a time (a PostgreSQL advisory lock on a connection of its own,
/// freed when that connection closes, so a killed instance's lease ends with it). On SQLite, which one process uses
/// at a time, it is always granted.
pub(super) struct DeskLease(Option<sqlx::pool::PoolConnection<sqlx::Any>>);

impl DeskLease {
    /// Whether the lease still holds: its connection answers (a connection that broke took the lock with it).
    pub async fn holds(&mut self) -> bool {
        match &mut self.0 {
            None => true,
            Some(conn) => sqlx::query("SELECT 1").execute(&mut **conn).await.is_ok(),
        }
    }
}

impl Drop for DeskLease {
    fn drop(&mut self) {
        // Closed, not returned to the pool holding the lock.
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// Takes the desks' lease if no other instance holds it.
pub(super) async fn try_lease_desks(store: &SqlStore) -> Result<Option<DeskLease>, sqlx::Error> {
    if store.dialect() != weir_runtime::sql::Dialect::Postgres {
        return Ok(Some(DeskLease(None)));
    }
    let mut conn = store.pool().acquire().await?;
    let got: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(DESKS_LOCK).fetch_one(&mut *conn).await?;
    Ok(got.then_some(DeskLease(Some(conn))))
}

/// What a desk taking over a run needs of it for `types`: every event (id, type, priority, happened, status, worker,
/// started_at), pending or not.
pub(super) async fn run_events_of_types(
    store: &SqlStore,
    run: i64,
    types: &[&str],
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let list = types.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    sqlx::query(&format!(
        "SELECT id, event_type, priority, description, happened_at, status, team, worker, started_at          FROM wedding_events WHERE run = $1 AND event_type IN ({list})"
    ))
    .bind(run)
    .fetch_all(store.pool())
    .await
}

/// What a virtual run's advance needs to know of the events sent so far, by any instance: how many of each type,
/// the moments they happen after `after`, the latest deadline, and when the handlings under way end.
pub(super) async fn virtual_run_state(
    store: &SqlStore,
    run: i64,
    after: Ms,
) -> Result<(Vec<(String, i64)>, Vec<Ms>, Ms, Vec<Ms>), sqlx::Error> {
    let counts = sqlx::query("SELECT event_type, COUNT(*) FROM wedding_events WHERE run = $1 GROUP BY event_type")
        .bind(run)
        .fetch_all(store.pool())
        .await?
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect();
    let arrivals = sqlx::query("SELECT DISTINCT happened_at FROM wedding_events WHERE run = $1 AND happened_at > $2")
        .bind(run)
        .bind(after)
        .fetch_all(store.pool())
        .await?
        .iter()
        .map(|r| r.get::<i64, _>(0))
        .collect();
    let last_deadline: i64 =
        sqlx::query("SELECT CAST(COALESCE(MAX(deadline), -1) AS BIGINT) FROM wedding_events WHERE run = $1")
            .bind(run)
            .fetch_one(store.pool())
            .await?
            .get(0);
    let started = sqlx::query("SELECT started_at FROM wedding_events WHERE run = $1 AND status = 'in_progress'")
        .bind(run)
        .fetch_all(store.pool())
        .await?
        .iter()
        .filter_map(|r| r.get::<Option<i64>, _>(0))
        .collect();
    Ok((counts, arrivals, last_deadline, started))
}

/// Logs a failed statement of a background task and counts it in `wedding_db_errors_total`; the caller keeps what
/// it was doing recoverable (the statement is tried again later).
pub(super) fn db_error(what: &'static str, e: &sqlx::Error) {
    metrics::counter!("wedding_db_errors_total", "statement" => what).increment(1);
    tracing::warn!(statement = what, error = %e, "a wedding database statement failed; it will be tried again");
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
