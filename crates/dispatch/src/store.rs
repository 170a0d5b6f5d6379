//! The relay's side, in the database (SQLite or PostgreSQL; times are milliseconds since the epoch, BIGINT on
//! both): `detection_events`, the events with their review `state` (the origin's `relay_service.events`), indexed
//! as the origin's were (by `created_at`, `state` and `rule_type`; the state's index also by `updated_at`); writing new ones with their `events.outbound`
//! messages in the outbox ([`insert_and_relay`]); and applying the results that come back on `events.inbound`
//! ([`apply_result`]), the only way an event's state moves. The assignment service's tables are in `assign`.

use sqlx::Row;
use weir_runtime::outbox::{self, Enqueued, OutboxEvent};
use weir_runtime::sql::{Dialect, SqlStore, SqlTx};

use crate::events::{DetectionEvent, ResultMessage, State};

/// Where new events go: the topic the assignment service reads (the origin's queue's name).
pub const OUTBOUND: &str = "events.outbound";
/// Where reviewers' results go back to the relay (the origin's queue's name).
pub const INBOUND: &str = "events.inbound";

pub async fn migrate(store: &SqlStore) -> Result<(), sqlx::Error> {
    let states = State::ALL.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ");
    let statements = [
        format!(
            "CREATE TABLE IF NOT EXISTS detection_events (event_id TEXT PRIMARY KEY, region TEXT NOT NULL, \
             rule_type TEXT NOT NULL, location TEXT, severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 5), \
             device_id TEXT, camera_id TEXT, frame_reference TEXT, \
             state TEXT NOT NULL DEFAULT 'Not Viewed' CHECK (state IN ({states})), \
             created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, result_version BIGINT NOT NULL DEFAULT 0)"
        ),
        "CREATE INDEX IF NOT EXISTS detection_events_created ON detection_events (created_at)".into(),
        // By state (the origin's index), then when it last changed: the stats' last change is a seek to the end of
        // each state's range, not a scan of every event.
        "CREATE INDEX IF NOT EXISTS detection_events_state_updated ON detection_events (state, updated_at)".into(),
        "DROP INDEX IF EXISTS detection_events_state".into(),
        "CREATE INDEX IF NOT EXISTS detection_events_rule ON detection_events (rule_type)".into(),
    ];
    for s in statements {
        sqlx::query(&s).execute(store.pool()).await?;
    }
    add_column(store, "detection_events", "result_version", "BIGINT NOT NULL DEFAULT 0").await?;
    crate::assign::migrate(store).await
}

/// Adds a column a table created by an earlier weir lacks (SQLite has no `ADD COLUMN IF NOT EXISTS`).
pub(crate) async fn add_column(store: &SqlStore, table: &str, column: &str, ddl: &str) -> Result<(), sqlx::Error> {
    let probe = format!("SELECT {column} FROM {table} LIMIT 0");
    if sqlx::query(&probe).execute(store.pool()).await.is_err() {
        sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {column} {ddl}")).execute(store.pool()).await?;
    }
    Ok(())
}

/// Applies a result from `events.inbound` to its event's state, unless the event already has a newer one (by the
/// result's version: a re-published or late message changes nothing); a result for an event this relay does not hold
/// (written elsewhere) changes nothing either. Returns whether it applied.
pub async fn apply_result(
    tx: &mut SqlTx,
    d: Dialect,
    result: &ResultMessage,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "UPDATE detection_events SET state = {}, updated_at = {}, result_version = {} WHERE event_id = {} \
         AND result_version < {}",
        d.param(1),
        d.param(2),
        d.param(3),
        d.param(4),
        d.param(5)
    );
    let r = sqlx::query(&sql)
        .bind(result.status.state().as_str())
        .bind(now_ms)
        .bind(result.version)
        .bind(result.event_id.clone())
        .bind(result.version)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Rows per INSERT statement: 11 parameters a row, within SQLite's and PostgreSQL's limits.
const ROWS_PER_STATEMENT: usize = 500;

/// Writes `events` inside `tx`, many rows a statement.
pub async fn insert_events(tx: &mut SqlTx, d: Dialect, events: &[DetectionEvent]) -> Result<(), sqlx::Error> {
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 11 + 1, 11)).collect();
        let sql = format!(
            "INSERT INTO detection_events (event_id, region, rule_type, location, severity, device_id, camera_id, \
             frame_reference, state, created_at, updated_at) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(e.event_id.to_string())
                .bind(e.region.clone())
                .bind(e.rule_type.clone())
                .bind(e.location.clone())
                .bind(e.severity)
                .bind(e.device_id.clone())
                .bind(e.camera_id.clone())
                .bind(e.frame_reference.clone())
                .bind(e.state.as_str())
                .bind(e.created_at_ms)
                .bind(e.created_at_ms);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Writes `events` inside `tx` with their `events.outbound` messages in the runtime's outbox: committed together,
/// each published once by the relay after the commit (keyed and identified by its event id, so a consumer dedupes a
/// re-publication on `weir.event.id`), never re-published while it waits for a reviewer as the origin's relay did
/// every 15 s. Hand what this returns to the relay's waker once `tx` has committed.
pub async fn insert_and_relay(tx: &mut SqlTx, d: Dialect, events: &[DetectionEvent]) -> Result<Enqueued, sqlx::Error> {
    insert_events(tx, d, events).await?;
    let messages = events
        .iter()
        .map(|e| {
            let id = e.event_id.to_string();
            let payload = serde_json::to_vec(&e.outbound()).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
            Ok(OutboxEvent {
                id: Some(id.clone()),
                topic: OUTBOUND.to_string(),
                key: Some(id.into()),
                payload: Some(payload.into()),
                headers: vec![("content-type".into(), "application/json".into())],
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    outbox::enqueue_all(tx, d, messages).await
}

/// When an event last changed (was written, or took a result), if any is held: the largest `updated_at` of each
/// state, each found at the end of its range of `detection_events_state_updated`.
pub async fn last_change(store: &SqlStore) -> Result<Option<i64>, sqlx::Error> {
    let per_state: Vec<String> = State::ALL
        .iter()
        .map(|s| format!("SELECT MAX(updated_at) AS m FROM detection_events WHERE state = '{}'", s.as_str()))
        .collect();
    let sql = format!("SELECT MAX(m) FROM ({}) AS per_state", per_state.join(" UNION ALL "));
    sqlx::query(&sql).fetch_one(store.pool()).await?.try_get(0)
}

/// Events per state, every state listed (zero where none).
pub async fn counts_by_state(store: &SqlStore) -> Result<Vec<(State, i64)>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT state, COUNT(*) FROM detection_events GROUP BY state").fetch_all(store.pool()).await?;
    let mut out: Vec<(State, i64)> = State::ALL.iter().map(|s| (*s, 0)).collect();
    for row in rows {
        let state: String = row.try_get(0)?;
        let n: i64 = row.try_get(1)?;
        let state = State::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown state {state:?} in detection_events").into()))?;
        if let Some(slot) = out.iter_mut().find(|(s, _)| *s == state) {
            slot.1 = n;
        }
    }
    Ok(out)
}

/// [`apply_result`] for a batch: each event takes the state of its newest result (by version), in a few statements
/// for them all. Returns how many events changed.
pub async fn apply_results(
    tx: &mut SqlTx,
    d: Dialect,
    results: &[ResultMessage],
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let mut newest: std::collections::HashMap<&str, (i64, State)> = std::collections::HashMap::new();
    for r in results {
        let slot = newest.entry(r.event_id.as_str()).or_insert((i64::MIN, r.status.state()));
        if r.version >= slot.0 {
            *slot = (r.version, r.status.state());
        }
    }
    let newest: Vec<(&str, (i64, State))> = newest.into_iter().collect();
    let mut applied = 0;
    for chunk in newest.chunks(500) {
        let rows: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 3 + 2, 3)).collect();
        let sql = format!(
            "UPDATE detection_events SET state = v.column2, result_version = v.column3, updated_at = {} \
             FROM (VALUES {}) AS v WHERE detection_events.event_id = v.column1 \
             AND detection_events.result_version < v.column3",
            d.param(1),
            rows.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(now_ms);
        for (event, (version, state)) in chunk {
            q = q.bind(event.to_string()).bind(state.as_str()).bind(*version);
        }
        applied += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(applied)
}
