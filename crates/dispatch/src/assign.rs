//! The assignment service's side, in the database: its copy of the events it received from `events.outbound`
//! (`dispatch_queue`, deduplicated by event id: the origin's `assignment_service.events` and `dedup_events` in one),
//! the reviewers' open counts (`dispatch_reviewers`), the assignments, and the rules that give each waiting event to
//! the **active reviewer with the fewest open assignments** (ties: the one idle longest), never more than the cap
//! (50 by default) open per reviewer, an event with nobody to take it left waiting (never dropped) until someone is
//! active with room.
//!
//! Who is active comes from the sessions (`crate::sessions`), passed in; the cap holds here, whoever runs the
//! assigning: one round ([`assign_waiting`]) is one transaction that takes waiting events (on PostgreSQL `FOR UPDATE
//! SKIP LOCKED`, so two assigners take different ones), locks the reviewers with room (`FOR UPDATE`, in one order,
//! so two assigners' rounds queue behind each other rather than deadlock), shares the events out in memory, and
//! writes the assignments, the queue and the reviewers' open counts; the count's update only applies where the cap
//! still holds, and the unique index on open assignments refuses an event given twice. On SQLite one writer at a
//! time gives the same. Everything that changes a reviewer's assignments locks the reviewer first.
//!
//! Each change also puts its result message (`events.inbound`: assigned, reassigned, completed, rejected, approved)
//! in the outbox, in the same transaction: the relay learns of it exactly once, after the commit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use sqlx::Row;
use weir_runtime::outbox::{self, Enqueued, OutboxEvent};
use weir_runtime::sql::{Dialect, SqlStore, SqlTx, StoreError};
use weir_runtime::time::format_rfc3339;

use crate::events::{OutboundEvent, ResultMessage, ResultStatus};
use crate::store::INBOUND;

/// An assignment's status: `open` until the reviewer settles it (`completed`, `rejected`, `approved`: the seed's
/// values and the origin's) or it is taken back (`reassigned`: not settled in time, or its reviewer's session ended).
pub const STATUSES: [&str; 5] = ["open", "completed", "rejected", "approved", "reassigned"];

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
    /// From the event's creation to this assignment, in milliseconds.
    pub waited_ms: i64,
}

/// What a change did: the assignments it concerns, the reviewers' open counts after it (for the sessions' view),
/// and its result messages, to hand to the relay once committed.
#[derive(Debug)]
pub struct Changed<T> {
    pub items: Vec<T>,
    pub counts: Vec<(String, i64)>,
    pub enqueued: Enqueued,
}

impl<T> Default for Changed<T> {
    fn default() -> Self {
        Changed { items: Vec::new(), counts: Vec::new(), enqueued: Enqueued::default() }
    }
}

impl<T> Changed<T> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// An assignment taken back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenBack {
    pub assignment_id: String,
    pub event_id: String,
    pub user_id: String,
}

pub async fn migrate(store: &SqlStore) -> Result<(), sqlx::Error> {
    let statuses = STATUSES.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
    let statements = [
        // `waiting` is 1 while nobody holds the event; `avoid_user` is whom it was taken from for not settling it
        // (or who rejected it), to go to again only if nobody else can take it; `version` counts the event's
        // changes, and each result message carries it, so the relay applies results in order and each once.
        "CREATE TABLE IF NOT EXISTS dispatch_queue (event_id TEXT PRIMARY KEY, region TEXT NOT NULL, \
         created_at BIGINT NOT NULL, received_at BIGINT NOT NULL, waiting INTEGER NOT NULL DEFAULT 1, \
         avoid_user TEXT, version BIGINT NOT NULL DEFAULT 0)"
            .to_string(),
        "CREATE INDEX IF NOT EXISTS dispatch_queue_waiting ON dispatch_queue (created_at, event_id) \
         WHERE waiting = 1"
            .into(),
        format!(
            "CREATE TABLE IF NOT EXISTS assignments (assignment_id TEXT PRIMARY KEY, \
             event_id TEXT NOT NULL REFERENCES dispatch_queue (event_id), user_id TEXT NOT NULL, \
             status TEXT NOT NULL CHECK (status IN ({statuses})), created_at BIGINT NOT NULL, \
             updated_at BIGINT NOT NULL, reason TEXT)"
        ),
        // An event is open with one reviewer at a time: two assignment workers racing for it cannot both win.
        "CREATE UNIQUE INDEX IF NOT EXISTS assignments_one_open ON assignments (event_id) WHERE status = 'open'".into(),
        "CREATE INDEX IF NOT EXISTS assignments_user_open ON assignments (user_id) WHERE status = 'open'".into(),
        // What the expirer looks for each second: open assignments older than the reassignment limit.
        "CREATE INDEX IF NOT EXISTS assignments_open_since ON assignments (created_at) WHERE status = 'open'".into(),
        "CREATE TABLE IF NOT EXISTS dispatch_reviewers (user_id TEXT PRIMARY KEY, region TEXT, \
         open_count INTEGER NOT NULL DEFAULT 0 CHECK (open_count >= 0), last_assigned_at BIGINT NOT NULL DEFAULT 0)"
            .into(),
    ];
    for s in statements {
        sqlx::query(&s).execute(store.pool()).await?;
    }
    crate::store::add_column(store, "dispatch_queue", "version", "BIGINT NOT NULL DEFAULT 0").await
}

/// Takes an event from `events.outbound` into the queue, once: a re-publication of one already received (waiting,
/// assigned or settled) changes nothing. Returns whether it was new.
pub async fn receive(tx: &mut SqlTx, d: Dialect, event: &OutboundEvent, now_ms: i64) -> Result<bool, sqlx::Error> {
    let created = weir_runtime::time::parse_rfc3339(&event.created_at).unwrap_or(now_ms);
    let sql = format!(
        "INSERT INTO dispatch_queue (event_id, region, created_at, received_at) VALUES ({}, {}, {}, {}) \
         ON CONFLICT (event_id) DO NOTHING",
        d.param(1),
        d.param(2),
        d.param(3),
        d.param(4)
    );
    let r = sqlx::query(&sql)
        .bind(event.event_id.to_string())
        .bind(event.region.clone())
        .bind(created)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// [`receive`] for many events, a few statements for them all; returns how many were new.
pub async fn receive_all(
    tx: &mut SqlTx,
    d: Dialect,
    events: &[OutboundEvent],
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let mut new = 0;
    for chunk in events.chunks(500) {
        let rows: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 4 + 1, 4)).collect();
        let sql = format!(
            "INSERT INTO dispatch_queue (event_id, region, created_at, received_at) VALUES {} \
             ON CONFLICT (event_id) DO NOTHING",
            rows.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            let created = weir_runtime::time::parse_rfc3339(&e.created_at).unwrap_or(now_ms);
            q = q.bind(e.event_id.to_string()).bind(e.region.clone()).bind(created).bind(now_ms);
        }
        new += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(new)
}

/// Makes `user` known as a reviewer (their row holds the open count the cap applies to); a region given replaces
/// the one known. Returns their region and open count.
pub async fn register(
    store: &SqlStore,
    user: &str,
    region: Option<&str>,
) -> Result<(Option<String>, i64), sqlx::Error> {
    let d = store.dialect();
    let sql = format!(
        "INSERT INTO dispatch_reviewers (user_id, region) VALUES ({}, {}) ON CONFLICT (user_id) \
         DO UPDATE SET region = COALESCE(excluded.region, dispatch_reviewers.region) RETURNING region, open_count",
        d.param(1),
        d.param(2),
    );
    let row = sqlx::query(&sql).bind(user.to_string()).bind(region.map(str::to_string)).fetch_one(store.pool()).await?;
    Ok((row.try_get(0)?, row.try_get::<i32, _>(1)?.into()))
}

/// A reviewer's region and open count, if known.
pub async fn reviewer(store: &SqlStore, user: &str) -> Result<Option<(Option<String>, i64)>, sqlx::Error> {
    let sql = format!("SELECT region, open_count FROM dispatch_reviewers WHERE user_id = {}", store.dialect().param(1));
    let row = sqlx::query(&sql).bind(user.to_string()).fetch_optional(store.pool()).await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get::<i32, _>(1)?.into()))).transpose()
}

/// `events.inbound` messages for `items` (assignment, event, reviewer, the event's version after the change), keyed
/// by event id (one event's results in order on one partition) and identified by assignment and status.
fn results<'a>(
    items: impl Iterator<Item = (&'a str, &'a str, &'a str, i64)>,
    status: ResultStatus,
    now_ms: i64,
) -> Result<Vec<OutboxEvent>, sqlx::Error> {
    items
        .map(|(assignment, event, user, version)| {
            let message = ResultMessage {
                assignment_id: assignment.to_string(),
                event_id: event.to_string(),
                user_id: user.to_string(),
                status,
                occurred_at: format_rfc3339(now_ms),
                version,
            };
            let payload = serde_json::to_vec(&message).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            Ok(OutboxEvent {
                id: Some(format!("{assignment}:{}", status.as_str())),
                topic: INBOUND.to_string(),
                key: Some(event.to_string().into()),
                payload: Some(payload.into()),
                headers: vec![("content-type".into(), "application/json".into())],
            })
        })
        .collect()
}

fn params(d: Dialect, from: usize, n: usize) -> String {
    (from..from + n).map(|i| d.param(i)).collect::<Vec<_>>().join(", ")
}

/// Locks the reviewers `users` (PostgreSQL; SQLite has one writer), in one order.
async fn lock_reviewers(tx: &mut SqlTx, d: Dialect, users: &[String]) -> Result<(), sqlx::Error> {
    if d != Dialect::Postgres || users.is_empty() {
        return Ok(());
    }
    let mut sorted = users.to_vec();
    sorted.sort();
    for chunk in sorted.chunks(1000) {
        let sql = format!(
            "SELECT user_id FROM dispatch_reviewers WHERE user_id IN ({}) ORDER BY user_id FOR UPDATE",
            params(d, 1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for u in chunk {
            q = q.bind(u.clone());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// One round: up to `limit` waiting events, oldest first, given out by the rules to the reviewers of `active` (the
/// users whose session is running). An empty result with events still waiting means nobody active has room (for
/// them).
pub async fn assign_waiting(
    store: &SqlStore,
    rules: Rules,
    active: &[String],
    now_ms: i64,
    limit: i64,
) -> Result<Changed<Assignment>, StoreError> {
    if active.is_empty() {
        return Ok(Changed::default());
    }
    let d = store.dialect();
    let lock = |what: &str| if d == Dialect::Postgres { what.to_string() } else { String::new() };
    let mut tx = store.begin().await?;
    // The rows are this transaction's until it ends (locked on PostgreSQL, the one writer on SQLite), so each
    // version read here is the one the update below moves on by one.
    let sql = format!(
        "SELECT event_id, region, avoid_user, created_at, version FROM dispatch_queue WHERE waiting = 1 \
         ORDER BY created_at, event_id LIMIT {} {}",
        d.param(1),
        lock("FOR UPDATE SKIP LOCKED")
    );
    let mut versions: HashMap<String, i64> = HashMap::new();
    let waiting: Vec<(String, String, Option<String>, i64)> = sqlx::query(&sql)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            let event: String = r.try_get(0)?;
            versions.insert(event.clone(), r.try_get::<i64, _>(4)? + 1);
            Ok((event, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    if waiting.is_empty() {
        return Ok(Changed::default());
    }
    // Per region (one pool for all without regions): reviewers by (open, last assigned, id), least first.
    type Queue = BinaryHeap<Reverse<(i64, i64, String)>>;
    let mut queues: HashMap<Option<String>, Queue> = HashMap::new();
    let mut open_before: HashMap<String, i64> = HashMap::new();
    let mut sorted = active.to_vec();
    sorted.sort();
    for chunk in sorted.chunks(1000) {
        let sql = format!(
            "SELECT user_id, region, open_count, last_assigned_at FROM dispatch_reviewers \
             WHERE open_count < {} AND user_id IN ({}) ORDER BY user_id {}",
            d.param(1),
            params(d, 2, chunk.len()),
            lock("FOR UPDATE")
        );
        let mut q = sqlx::query(&sql).bind(rules.cap);
        for u in chunk {
            q = q.bind(u.clone());
        }
        for r in q.fetch_all(&mut *tx).await? {
            let (user, region, open, last): (String, Option<String>, i64, i64) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get::<i32, _>(2)?.into(), r.try_get(3)?);
            let key = if rules.by_region { region } else { None };
            open_before.insert(user.clone(), open);
            queues.entry(key).or_default().push(Reverse((open, last, user)));
        }
    }
    let mut made = Vec::new();
    let mut added: HashMap<String, i64> = HashMap::new();
    // Within the round, a reviewer just given one counts as idle for the shortest time.
    let mut tick = 0i64;
    for (event, region, avoid, created) in waiting {
        let key = if rules.by_region { Some(region) } else { None };
        let Some(queue) = queues.get_mut(&key) else { continue };
        let Some(Reverse(mut pick)) = queue.pop() else { continue };
        // Taken back from (or rejected by) this reviewer: someone else, if anyone else has room.
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
        made.push(Assignment {
            // Time-ordered (UUIDv7): the primary key's inserts land at its end rather than all over it.
            assignment_id: uuid::Uuid::now_v7(),
            event_id: event,
            user_id: user,
            waited_ms: (now_ms - created).max(0),
        });
    }
    if made.is_empty() {
        return Ok(Changed::default());
    }
    for chunk in made.chunks(500) {
        // Three parameters a row; the status and the time (a number of ours) are written into the statement.
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                format!(
                    "({}, {}, {}, 'open', {now_ms}, {now_ms})",
                    d.param(i * 3 + 1),
                    d.param(i * 3 + 2),
                    d.param(i * 3 + 3)
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO assignments (assignment_id, event_id, user_id, status, created_at, updated_at) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for a in chunk {
            q = q.bind(a.assignment_id.to_string()).bind(a.event_id.clone()).bind(a.user_id.clone());
        }
        q.execute(&mut *tx).await?;
        let sql = format!(
            "UPDATE dispatch_queue SET waiting = 0, version = version + 1 WHERE event_id IN ({})",
            params(d, 1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for a in chunk {
            q = q.bind(a.event_id.clone());
        }
        q.execute(&mut *tx).await?;
    }
    let added: Vec<(String, i64)> = added.into_iter().collect();
    let mut counts = Vec::with_capacity(added.len());
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
        let updated = q.execute(&mut *tx).await?.rows_affected() as usize;
        if updated != chunk.len() {
            // The rows were locked (or, on SQLite, the database): only a bug gets here. Nothing is written.
            return Err(StoreError::Db(sqlx::Error::Protocol(format!(
                "assigning would have taken {} reviewer(s) past the cap of {}",
                chunk.len() - updated,
                rules.cap
            ))));
        }
        // The same rows read under the same lock: their counts now are those plus what this round added.
        for (user, n) in chunk {
            counts.push((user.clone(), open_before.get(user).copied().unwrap_or(0) + n));
        }
    }
    let ids: Vec<String> = made.iter().map(|a| a.assignment_id.to_string()).collect();
    let messages = results(
        made.iter().zip(&ids).map(|(a, id)| {
            (id.as_str(), a.event_id.as_str(), a.user_id.as_str(), versions.get(&a.event_id).copied().unwrap_or(0))
        }),
        ResultStatus::Assigned,
        now_ms,
    )?;
    let enqueued = outbox::enqueue_all(&mut tx, d, messages).await?;
    tx.commit().await?;
    Ok(Changed { items: made, counts, enqueued })
}

/// Reads the rows an `UPDATE assignments ... RETURNING assignment_id, event_id, user_id` returned.
fn taken(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<TakenBack>, sqlx::Error> {
    rows.iter()
        .map(|r| Ok(TakenBack { assignment_id: r.try_get(0)?, event_id: r.try_get(1)?, user_id: r.try_get(2)? }))
        .collect()
}

/// Puts taken-back events back in the queue, each to avoid the reviewer it was taken from when `avoid` says so;
/// returns each event's version after it.
async fn requeue(
    tx: &mut SqlTx,
    d: Dialect,
    items: &[TakenBack],
    avoid: bool,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut versions = HashMap::with_capacity(items.len());
    for chunk in items.chunks(500) {
        let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 2 + 1, 2)).collect();
        let avoid_user = if avoid { "v.column2" } else { "NULL" };
        let sql = format!(
            "UPDATE dispatch_queue SET waiting = 1, avoid_user = {avoid_user}, version = version + 1 \
             FROM (VALUES {}) AS v WHERE dispatch_queue.event_id = v.column1 \
             RETURNING dispatch_queue.event_id, dispatch_queue.version",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for t in chunk {
            q = q.bind(t.event_id.clone()).bind(t.user_id.clone());
        }
        for r in q.fetch_all(&mut **tx).await? {
            versions.insert(r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?);
        }
    }
    Ok(versions)
}

/// Lowers reviewers' open counts by what was taken from them; returns the counts after.
async fn release(tx: &mut SqlTx, d: Dialect, items: &[TakenBack]) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut per_user: HashMap<&str, i64> = HashMap::new();
    for t in items {
        *per_user.entry(t.user_id.as_str()).or_default() += 1;
    }
    let per_user: Vec<(&str, i64)> = per_user.into_iter().collect();
    let mut counts = Vec::new();
    for chunk in per_user.chunks(500) {
        let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 2 + 1, 2)).collect();
        let sql = format!(
            "UPDATE dispatch_reviewers SET open_count = open_count - v.column2 FROM (VALUES {}) AS v \
             WHERE dispatch_reviewers.user_id = v.column1 RETURNING dispatch_reviewers.user_id, open_count",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for (user, n) in chunk {
            q = q.bind(user.to_string()).bind(*n);
        }
        for r in q.fetch_all(&mut **tx).await? {
            counts.push((r.try_get(0)?, r.try_get::<i32, _>(1)?.into()));
        }
    }
    Ok(counts)
}

/// Takes back every open assignment of `users` (their sessions ended): the events wait again, for anyone; the
/// assignments are kept as `reassigned` with the reason.
pub async fn take_back(store: &SqlStore, users: &[String], now_ms: i64) -> Result<Changed<TakenBack>, StoreError> {
    if users.is_empty() {
        return Ok(Changed::default());
    }
    let d = store.dialect();
    let mut tx = store.begin().await?;
    lock_reviewers(&mut tx, d, users).await?;
    let mut items = Vec::new();
    for chunk in users.chunks(1000) {
        let sql = format!(
            "UPDATE assignments SET status = 'reassigned', reason = 'session ended', updated_at = {} \
             WHERE status = 'open' AND user_id IN ({}) RETURNING assignment_id, event_id, user_id",
            d.param(1),
            params(d, 2, chunk.len())
        );
        let mut q = sqlx::query(&sql).bind(now_ms);
        for u in chunk {
            q = q.bind(u.clone());
        }
        items.extend(taken(q.fetch_all(&mut *tx).await?)?);
    }
    finish_taking_back(tx, d, items, false, now_ms).await
}

async fn finish_taking_back(
    mut tx: SqlTx,
    d: Dialect,
    items: Vec<TakenBack>,
    avoid: bool,
    now_ms: i64,
) -> Result<Changed<TakenBack>, StoreError> {
    if items.is_empty() {
        tx.rollback().await?;
        return Ok(Changed::default());
    }
    let versions = requeue(&mut tx, d, &items, avoid).await?;
    let counts = release(&mut tx, d, &items).await?;
    let messages = results(
        items.iter().map(|t| {
            let version = versions.get(&t.event_id).copied().unwrap_or(0);
            (t.assignment_id.as_str(), t.event_id.as_str(), t.user_id.as_str(), version)
        }),
        ResultStatus::Reassigned,
        now_ms,
    )?;
    let enqueued = outbox::enqueue_all(&mut tx, d, messages).await?;
    tx.commit().await?;
    Ok(Changed { items, counts, enqueued })
}

/// Reviewers holding open assignments, for the expirer to compare with who is active.
pub async fn holders(store: &SqlStore) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT user_id FROM dispatch_reviewers WHERE open_count > 0 ORDER BY user_id")
        .fetch_all(store.pool())
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect()
}

/// Takes back assignments open since before `now_ms - after_ms` (not settled in time): each event waits again, to go
/// to another reviewer where another has room, the assignment kept as `reassigned`.
pub async fn reassign_stale(store: &SqlStore, now_ms: i64, after_ms: i64) -> Result<Changed<TakenBack>, StoreError> {
    let d = store.dialect();
    let cutoff = now_ms - after_ms;
    let mut tx = store.begin().await?;
    if d == Dialect::Postgres {
        // The reviewers first, as everything that changes their assignments locks them.
        let sql = "SELECT user_id FROM dispatch_reviewers WHERE user_id IN \
                   (SELECT user_id FROM assignments WHERE status = 'open' AND created_at <= $1) ORDER BY user_id \
                   FOR UPDATE";
        sqlx::query(sql).bind(cutoff).execute(&mut *tx).await?;
    }
    let sql = format!(
        "UPDATE assignments SET status = 'reassigned', reason = 'not settled in time', updated_at = {} \
         WHERE status = 'open' AND created_at <= {} RETURNING assignment_id, event_id, user_id",
        d.param(1),
        d.param(2)
    );
    let items = taken(sqlx::query(&sql).bind(now_ms).bind(cutoff).fetch_all(&mut *tx).await?)?;
    finish_taking_back(tx, d, items, true, now_ms).await
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
        self.result().as_str()
    }

    /// The result message it sends back.
    pub fn result(self) -> ResultStatus {
        match self {
            Outcome::Completed => ResultStatus::Completed,
            Outcome::Rejected => ResultStatus::Rejected,
            Outcome::Approved => ResultStatus::Approved,
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

/// An assignment settled.
#[derive(Debug)]
pub struct Settled {
    pub event_id: String,
    pub user_id: String,
    /// The reviewer's open assignments after it.
    pub open: i64,
    /// Rejected, and back in the queue for another reviewer.
    pub requeued: bool,
    pub enqueued: Enqueued,
}

/// Settles an open assignment: its status, the reviewer's count and its result message, in one transaction; a
/// rejected one goes back to the queue for another reviewer when `requeue_rejected`.
pub async fn settle(
    store: &SqlStore,
    assignment: &str,
    outcome: Outcome,
    now_ms: i64,
    requeue_rejected: bool,
) -> Result<Settled, SettleError> {
    let d = store.dialect();
    let mut tx = store.begin().await?;
    let sql = format!("SELECT user_id FROM assignments WHERE assignment_id = {}", d.param(1));
    let Some(found) = sqlx::query(&sql).bind(assignment.to_string()).fetch_optional(&mut *tx).await? else {
        return Err(SettleError::Unknown(assignment.to_string()));
    };
    lock_reviewers(&mut tx, d, &[found.try_get(0)?]).await?;
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
    let requeued = outcome == Outcome::Rejected && requeue_rejected;
    let version = if requeued {
        let item = TakenBack { assignment_id: assignment.to_string(), event_id: event.clone(), user_id: user.clone() };
        requeue(&mut tx, d, &[item], true).await?.get(&event).copied().unwrap_or(0)
    } else {
        let sql = format!(
            "UPDATE dispatch_queue SET version = version + 1 WHERE event_id = {} RETURNING version",
            d.param(1)
        );
        sqlx::query(&sql).bind(event.clone()).fetch_one(&mut *tx).await?.try_get(0)?
    };
    let sql = format!(
        "UPDATE dispatch_reviewers SET open_count = open_count - 1 WHERE user_id = {} RETURNING open_count",
        d.param(1)
    );
    let open: i64 = sqlx::query(&sql).bind(user.clone()).fetch_one(&mut *tx).await?.try_get::<i32, _>(0)?.into();
    let messages =
        results(std::iter::once((assignment, event.as_str(), user.as_str(), version)), outcome.result(), now_ms)?;
    let enqueued = outbox::enqueue_all(&mut tx, d, messages).await?;
    tx.commit().await?;
    Ok(Settled { event_id: event, user_id: user, open, requeued, enqueued })
}

/// Events waiting for a reviewer.
pub async fn waiting(store: &SqlStore) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) FROM dispatch_queue WHERE waiting = 1").fetch_one(store.pool()).await?.try_get(0)
}

/// Reviewers' load for the metrics: open assignments in all, the most one reviewer holds, and how many are at `cap`.
pub async fn load(store: &SqlStore, cap: i64) -> Result<(i64, i64, i64), sqlx::Error> {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(open_count), 0) AS BIGINT), CAST(COALESCE(MAX(open_count), 0) AS BIGINT), \
         COUNT(CASE WHEN open_count >= {cap} THEN 1 END) FROM dispatch_reviewers"
    );
    let r = sqlx::query(&sql).fetch_one(store.pool()).await?;
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
}
