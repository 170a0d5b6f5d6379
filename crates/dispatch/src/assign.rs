//! Giving waiting events to reviewers: each to the **active reviewer with the fewest open assignments** (ties: the
//! one idle longest), never more than the cap (50 by default) open per reviewer, an event with nobody to take it left
//! waiting (never dropped) until someone is active with room.
//!
//! The rules hold in the database, whoever runs the assigning: one round ([`assign_waiting`]) is one transaction
//! that takes waiting events (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so two assigners take different ones), locks
//! the reviewers with room (`FOR UPDATE`, in one order, so two assigners' rounds queue behind each other rather than
//! deadlock), shares the events out in memory, and writes the assignments, the events' state and the reviewers' open
//! counts; the count's update only applies where the cap still holds, and the unique index on open assignments
//! refuses an event given twice. On SQLite one writer at a time gives the same.
//!
//! A reviewer is active while `active_until` is in the future ([`activate`], refreshed by their activity);
//! [`expire`] takes back the open assignments of reviewers whose session ended, for others to get.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use sqlx::Row;
use weir_runtime::sql::{Dialect, SqlStore, StoreError};

use crate::events::State;

/// The assignment rules.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Most open assignments a reviewer holds.
    pub cap: i64,
    /// Events go only to reviewers of their region.
    pub by_region: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules { cap: 50, by_region: false }
    }
}

/// An assignment made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub assignment_id: uuid::Uuid,
    pub event_id: String,
    pub user_id: String,
}

pub async fn migrate(store: &SqlStore) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS dispatch_reviewers (user_id TEXT PRIMARY KEY, region TEXT, \
         open_count INTEGER NOT NULL DEFAULT 0 CHECK (open_count >= 0), active_until BIGINT NOT NULL, \
         last_assigned_at BIGINT NOT NULL DEFAULT 0)",
    )
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Starts or refreshes `user`'s session until `now_ms + ttl_ms`; a region given replaces the one known.
pub async fn activate(
    store: &SqlStore,
    user: &str,
    region: Option<&str>,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<(), sqlx::Error> {
    let d = store.dialect();
    let sql = format!(
        "INSERT INTO dispatch_reviewers (user_id, region, active_until) VALUES ({}, {}, {}) ON CONFLICT (user_id) \
         DO UPDATE SET active_until = excluded.active_until, \
         region = COALESCE(excluded.region, dispatch_reviewers.region)",
        d.param(1),
        d.param(2),
        d.param(3)
    );
    sqlx::query(&sql)
        .bind(user.to_string())
        .bind(region.map(str::to_string))
        .bind(now_ms + ttl_ms)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Ends `user`'s session now (their open assignments go back at the next [`expire`]).
pub async fn deactivate(store: &SqlStore, user: &str) -> Result<bool, sqlx::Error> {
    let sql = format!("UPDATE dispatch_reviewers SET active_until = 0 WHERE user_id = {}", store.dialect().param(1));
    Ok(sqlx::query(&sql).bind(user.to_string()).execute(store.pool()).await?.rows_affected() > 0)
}

/// One round: up to `limit` waiting events, oldest first, given out by the rules. Returns what it assigned; an
/// empty result with events still waiting means nobody active has room (for them).
pub async fn assign_waiting(
    store: &SqlStore,
    rules: Rules,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<Assignment>, StoreError> {
    let d = store.dialect();
    let lock = |what: &str| if d == Dialect::Postgres { what.to_string() } else { String::new() };
    let mut tx = store.begin().await?;
    let sql = format!(
        "SELECT event_id, region, avoid_user FROM detection_events WHERE state = {} ORDER BY created_at, event_id \
         LIMIT {} {}",
        d.param(1),
        d.param(2),
        lock("FOR UPDATE SKIP LOCKED")
    );
    let waiting: Vec<(String, String, Option<String>)> = sqlx::query(&sql)
        .bind(State::NotViewed.as_str())
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    if waiting.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT user_id, region, open_count, last_assigned_at FROM dispatch_reviewers \
         WHERE active_until > {} AND open_count < {} ORDER BY user_id {}",
        d.param(1),
        d.param(2),
        lock("FOR UPDATE")
    );
    let rows = sqlx::query(&sql).bind(now_ms).bind(rules.cap).fetch_all(&mut *tx).await?;
    // Per region (one pool for all without regions): reviewers by (open, last assigned, id), least first.
    type Queue = BinaryHeap<Reverse<(i64, i64, String)>>;
    let mut queues: HashMap<Option<String>, Queue> = HashMap::new();
    for r in &rows {
        let (user, region, open, last): (String, Option<String>, i64, i64) =
            (r.try_get(0)?, r.try_get(1)?, r.try_get::<i32, _>(2)?.into(), r.try_get(3)?);
        let key = if rules.by_region { region } else { None };
        queues.entry(key).or_default().push(Reverse((open, last, user)));
    }
    let mut made = Vec::new();
    let mut added: HashMap<String, i64> = HashMap::new();
    // Within the round, a reviewer just given one counts as idle for the shortest time.
    let mut tick = 0i64;
    for (event, region, avoid) in waiting {
        let key = if rules.by_region { Some(region) } else { None };
        let Some(queue) = queues.get_mut(&key) else { continue };
        let Some(Reverse(mut pick)) = queue.pop() else { continue };
        // Taken back from this reviewer for not settling it: someone else, if anyone else has room.
        if avoid.as_deref() == Some(pick.2.as_str()) {
            if let Some(Reverse(next)) = queue.pop() {
                queue.push(Reverse(std::mem::replace(&mut pick, next)));
            }
        }
        let (open, _, user) = pick;
        tick += 1;
        *added.entry(user.clone()).or_default() += 1;
        if open + 1 < rules.cap {
            queue.push(Reverse((open + 1, now_ms.saturating_mul(1000) + tick, user.clone())));
        }
        made.push(Assignment { assignment_id: uuid::Uuid::new_v4(), event_id: event, user_id: user });
    }
    if made.is_empty() {
        return Ok(Vec::new());
    }
    for chunk in made.chunks(500) {
        let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 6 + 1, 6)).collect();
        let sql = format!(
            "INSERT INTO assignments (assignment_id, event_id, user_id, status, created_at, updated_at) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for a in chunk {
            q = q
                .bind(a.assignment_id.to_string())
                .bind(a.event_id.clone())
                .bind(a.user_id.clone())
                .bind("open")
                .bind(now_ms)
                .bind(now_ms);
        }
        q.execute(&mut *tx).await?;
        let sql = format!(
            "UPDATE detection_events SET state = {}, updated_at = {} WHERE event_id IN ({})",
            d.param(1),
            d.param(2),
            (3..3 + chunk.len()).map(|i| d.param(i)).collect::<Vec<_>>().join(", ")
        );
        let mut q = sqlx::query(&sql).bind(State::Assigned.as_str()).bind(now_ms);
        for a in chunk {
            q = q.bind(a.event_id.clone());
        }
        q.execute(&mut *tx).await?;
    }
    let added: Vec<(String, i64)> = added.into_iter().collect();
    for chunk in added.chunks(500) {
        // Parameters in the order they appear (SQLite's are positional); the cap is a number of ours, inlined.
        let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 2 + 2, 2)).collect();
        let sql = format!(
            "UPDATE dispatch_reviewers SET open_count = open_count + v.column2, last_assigned_at = {now} \
             FROM (VALUES {}) AS v WHERE dispatch_reviewers.user_id = v.column1 \
             AND dispatch_reviewers.open_count + v.column2 <= {cap}",
            values.join(", "),
            now = d.param(1),
            cap = rules.cap,
        );
        let mut q = sqlx::query(&sql).bind(now_ms);
        for (user, n) in chunk {
            q = q.bind(user.clone()).bind(*n);
        }
        let updated = q.execute(&mut *tx).await?.rows_affected();
        if updated != chunk.len() as u64 {
            // The rows were locked (or, on SQLite, the database): only a bug gets here. Nothing is written.
            return Err(StoreError::Db(sqlx::Error::Protocol(format!(
                "assigning would have taken {} reviewer(s) past the cap of {}",
                chunk.len() as u64 - updated,
                rules.cap
            ))));
        }
    }
    tx.commit().await?;
    Ok(made)
}

/// Takes back the open assignments of reviewers whose session ended before `now_ms`: their events wait again (for
/// someone else), the assignments are kept as `reassigned` with the reason. Returns how many were taken back.
pub async fn expire(store: &SqlStore, now_ms: i64) -> Result<u64, StoreError> {
    let d = store.dialect();
    let mut tx = store.begin().await?;
    let lock = if d == Dialect::Postgres { "FOR UPDATE" } else { "" };
    let sql = format!(
        "SELECT user_id FROM dispatch_reviewers WHERE active_until <= {} AND open_count > 0 ORDER BY user_id {lock}",
        d.param(1)
    );
    let users: Vec<String> = sqlx::query(&sql)
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut taken = 0;
    for user in users {
        let sql = format!(
            "UPDATE detection_events SET state = {}, updated_at = {} WHERE event_id IN \
             (SELECT event_id FROM assignments WHERE user_id = {} AND status = 'open')",
            d.param(1),
            d.param(2),
            d.param(3)
        );
        sqlx::query(&sql).bind(State::NotViewed.as_str()).bind(now_ms).bind(user.clone()).execute(&mut *tx).await?;
        let sql = format!(
            "UPDATE assignments SET status = 'reassigned', reason = 'session ended', updated_at = {} \
             WHERE user_id = {} AND status = 'open'",
            d.param(1),
            d.param(2)
        );
        taken += sqlx::query(&sql).bind(now_ms).bind(user.clone()).execute(&mut *tx).await?.rows_affected();
        let sql = format!("UPDATE dispatch_reviewers SET open_count = 0 WHERE user_id = {}", d.param(1));
        sqlx::query(&sql).bind(user).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(taken)
}

/// Takes back assignments open since before `now_ms - after_ms` (not settled in time): each event waits again, to go
/// to another reviewer where another has room (`avoid_user`), the assignment kept as `reassigned`. Returns how many.
pub async fn reassign_stale(store: &SqlStore, now_ms: i64, after_ms: i64) -> Result<u64, StoreError> {
    let d = store.dialect();
    let cutoff = now_ms - after_ms;
    let mut tx = store.begin().await?;
    let stale = format!("SELECT user_id FROM assignments WHERE status = 'open' AND created_at <= {}", d.param(1));
    if d == Dialect::Postgres {
        // The reviewers first, as everything that changes their assignments locks them.
        let sql =
            format!("SELECT user_id FROM dispatch_reviewers WHERE user_id IN ({stale}) ORDER BY user_id FOR UPDATE");
        sqlx::query(&sql).bind(cutoff).execute(&mut *tx).await?;
    }
    let sql = format!(
        "UPDATE detection_events SET state = {}, updated_at = {}, avoid_user = (SELECT a.user_id FROM assignments a \
         WHERE a.event_id = detection_events.event_id AND a.status = 'open') WHERE event_id IN \
         (SELECT event_id FROM assignments WHERE status = 'open' AND created_at <= {})",
        d.param(1),
        d.param(2),
        d.param(3)
    );
    sqlx::query(&sql).bind(State::NotViewed.as_str()).bind(now_ms).bind(cutoff).execute(&mut *tx).await?;
    let sql = format!(
        "UPDATE dispatch_reviewers SET open_count = open_count - (SELECT COUNT(*) FROM assignments a \
         WHERE a.user_id = dispatch_reviewers.user_id AND a.status = 'open' AND a.created_at <= {}) \
         WHERE user_id IN (SELECT user_id FROM assignments WHERE status = 'open' AND created_at <= {})",
        d.param(1),
        d.param(2)
    );
    sqlx::query(&sql).bind(cutoff).bind(cutoff).execute(&mut *tx).await?;
    let sql = format!(
        "UPDATE assignments SET status = 'reassigned', reason = 'not settled in time', updated_at = {} \
         WHERE status = 'open' AND created_at <= {}",
        d.param(1),
        d.param(2)
    );
    let taken = sqlx::query(&sql).bind(now_ms).bind(cutoff).execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(taken)
}

/// How a reviewer settles an assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Rejected,
    Approved,
}

impl Outcome {
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "completed" => Some(Outcome::Completed),
            "rejected" => Some(Outcome::Rejected),
            "approved" => Some(Outcome::Approved),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Rejected => "rejected",
            Outcome::Approved => "approved",
        }
    }

    /// The event's state once its assignment is settled so.
    pub fn state(self) -> State {
        match self {
            Outcome::Completed => State::Completed,
            Outcome::Rejected => State::Rejected,
            Outcome::Approved => State::Approved,
        }
    }
}

/// Why an assignment could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("no assignment {0}")]
    Unknown(String),
    #[error("assignment {id} is {status}, not open")]
    NotOpen { id: String, status: String },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Settles an open assignment: its status, its event's state, its reviewer's count, in one transaction. Returns the
/// event and the reviewer.
pub async fn settle(
    store: &SqlStore,
    assignment: &str,
    outcome: Outcome,
    now_ms: i64,
) -> Result<(String, String), SettleError> {
    let d = store.dialect();
    let mut tx = store.begin().await?;
    // The reviewer is locked first, as `expire` and `assign_waiting` lock reviewers before the rows they change, so
    // settling beside them waits rather than deadlocks.
    let sql = format!("SELECT user_id FROM assignments WHERE assignment_id = {}", d.param(1));
    let Some(found) = sqlx::query(&sql).bind(assignment.to_string()).fetch_optional(&mut *tx).await? else {
        return Err(SettleError::Unknown(assignment.to_string()));
    };
    let user: String = found.try_get(0)?;
    if d == Dialect::Postgres {
        sqlx::query("SELECT 1 FROM dispatch_reviewers WHERE user_id = $1 FOR UPDATE")
            .bind(user.clone())
            .execute(&mut *tx)
            .await?;
    }
    // Settling only what is open, in one statement: two requests for one assignment cannot both settle it.
    let sql = format!(
        "UPDATE assignments SET status = {}, updated_at = {} WHERE assignment_id = {} AND status = 'open' \
         RETURNING event_id, user_id",
        d.param(1),
        d.param(2),
        d.param(3)
    );
    let row = sqlx::query(&sql)
        .bind(outcome.as_str())
        .bind(now_ms)
        .bind(assignment.to_string())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        let sql = format!("SELECT status FROM assignments WHERE assignment_id = {}", d.param(1));
        let status: String = sqlx::query(&sql).bind(assignment.to_string()).fetch_one(&mut *tx).await?.try_get(0)?;
        return Err(SettleError::NotOpen { id: assignment.to_string(), status });
    };
    let (event, user): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    let sql = format!(
        "UPDATE detection_events SET state = {}, updated_at = {} WHERE event_id = {}",
        d.param(1),
        d.param(2),
        d.param(3)
    );
    sqlx::query(&sql).bind(outcome.state().as_str()).bind(now_ms).bind(event.clone()).execute(&mut *tx).await?;
    let sql = format!("UPDATE dispatch_reviewers SET open_count = open_count - 1 WHERE user_id = {}", d.param(1));
    sqlx::query(&sql).bind(user.clone()).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok((event, user))
}
