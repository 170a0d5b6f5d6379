//! The transactional outbox. A system writes the events it emits into `weir_outbox` in the same transaction as its
//! own state ([`enqueue`]); the [`Relay`] publishes them to the bus in `seq` order and then records that it did. A
//! relay that dies between publishing and recording publishes those events again on restart, with the same
//! `weir.event.id` header, so consumers dedupe (the runner's `dedupe` does); nothing is lost.
//!
//! On PostgreSQL the relay claims rows by deleting them (`DELETE ... WHERE seq IN (... FOR UPDATE SKIP LOCKED)
//! RETURNING`), publishes them, then commits the deletion: several relays can share one outbox, and a published row
//! costs one deletion rather than a second version of the row with its payload and its index entries (the
//! `sent_at` marking it replaced was the relay's costliest statement). It sleeps on `LISTEN weir_outbox` (each
//! enqueue notifies at commit) instead of waiting for the next poll. The bus is the record of what was published.
//!
//! On SQLite, where one writer at a time means rows commit in `seq` order, the relay keeps one high-water mark
//! instead (`weir_outbox_relayed`: every row up to it is published), which spares rewriting each published row a
//! second time; it polls, and it writes the mark down every [`Relay::mark_every`] while it publishes (at once when
//! idle or stopping), not once per round: a round often follows a single committed transaction, and a second commit
//! for each would double the writes. Published rows stay there for [`Relay::keep_sent`] (an hour by default), then
//! the relay deletes them.
//!
//! Either way, a writer in the same process can wake the relay at once with its [`RelayWaker`]: a system that
//! answers its client only after the event is committed should not add a poll interval to every event's way. On
//! SQLite the writer can also hand the committed messages over ([`RelayWaker::committed`] with what [`enqueue_all`]
//! returned), so the relay publishes them without reading back what was just written; the table stays the truth: a
//! gap in what was handed over (a row written by another process, a hand-over dropped because too much was waiting)
//! is read from it. [`unsent`] counts what waits.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::Row;

use crate::bus::{Bus, BusError, OutgoingMessage};
use crate::handler::EVENT_ID_HEADER;
use crate::sql::{insert_chunks, Dialect, SqlStore, SqlTx, StoreError};
use crate::stop::StopSignal;
use crate::time::now_ms;

const CHANNEL: &str = "weir_outbox";

/// An event to emit through the outbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Stable id consumers dedupe on (default: generated).
    pub id: Option<String>,
    pub topic: String,
    pub key: Option<Bytes>,
    pub payload: Option<Bytes>,
    pub headers: Vec<(String, String)>,
}

/// Writes `event` into the outbox inside `tx`; returns its id. It is published after `tx` commits, never before.
pub async fn enqueue(tx: &mut SqlTx, dialect: Dialect, event: OutboxEvent) -> Result<String, sqlx::Error> {
    let id = event.id.unwrap_or_else(new_id);
    let headers = serde_json::to_string(&event.headers).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "INSERT INTO weir_outbox (event_id, topic, event_key, payload, headers, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(&event.topic)
    .bind(event.key.map(|k| k.to_vec()))
    .bind(event.payload.map(|p| p.to_vec()))
    .bind(headers)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&mut **tx).await?;
    }
    Ok(id)
}

/// [`enqueue_all`] for the events whose ids are not in the outbox yet: a step redone after a crash enqueues its
/// event again only if the first attempt did not commit. (An id published and purged since is enqueued again;
/// consumers deduplicate on the id header.) Every event needs an id.
pub async fn enqueue_new(tx: &mut SqlTx, dialect: Dialect, events: Vec<OutboxEvent>) -> Result<Enqueued, sqlx::Error> {
    let mut ids = Vec::with_capacity(events.len());
    for e in &events {
        match &e.id {
            Some(id) => ids.push(id.as_str()),
            None => return Err(sqlx::Error::Protocol("enqueue_new: an event without an id".into())),
        }
    }
    // Which are there already: one statement for many ids (each a round trip to SQLite's worker thread otherwise).
    let mut there = std::collections::HashSet::new();
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT event_id FROM weir_outbox WHERE event_id IN ({})",
            (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut **tx).await? {
            there.insert(row.try_get::<String, _>(0)?);
        }
    }
    let new = events.into_iter().filter(|e| e.id.as_ref().is_some_and(|id| !there.contains(id))).collect();
    enqueue_all(tx, dialect, new).await
}

/// Writes events into the outbox on their own (not in a transaction of the caller's), many callers' at a time: a
/// task takes every request waiting when it starts a transaction and writes them all in it (group commit), so
/// callers under load share one commit instead of queueing for one each on SQLite's single connection. Each
/// request's events are enqueued with [`enqueue_new`] (ids already there are skipped) and the relay is handed
/// them on commit. Cheap to clone; the task ends when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct OutboxWriter {
    requests: tokio::sync::mpsc::Sender<WriteRequest>,
}

#[derive(Debug)]
struct WriteRequest {
    events: Vec<OutboxEvent>,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl OutboxWriter {
    /// Requests taken into one transaction at most.
    const MAX_BATCH: usize = 1024;

    /// Starts the writing task (on the current tokio runtime).
    pub fn spawn(store: SqlStore, waker: RelayWaker) -> OutboxWriter {
        let (requests, mut rx) = tokio::sync::mpsc::channel::<WriteRequest>(Self::MAX_BATCH * 4);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(Self::MAX_BATCH);
            while rx.recv_many(&mut batch, Self::MAX_BATCH).await > 0 {
                let mut seen = std::collections::HashSet::new();
                let events: Vec<OutboxEvent> = batch
                    .iter()
                    .flat_map(|r: &WriteRequest| r.events.iter())
                    .filter(|e| e.id.as_ref().is_some_and(|id| seen.insert(id.clone())))
                    .cloned()
                    .collect();
                let written = async {
                    let mut tx = store.begin().await.map_err(|e| e.to_string())?;
                    let enqueued = enqueue_new(&mut tx, store.dialect(), events).await.map_err(|e| e.to_string())?;
                    tx.commit().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>(enqueued)
                };
                let result = written.await.map(|enqueued| waker.committed(enqueued));
                for r in batch.drain(..) {
                    let _ = r.done.send(result.clone());
                }
            }
        });
        OutboxWriter { requests }
    }

    /// Writes `events` (each with an id; those already in the outbox are skipped) and returns once they are
    /// committed.
    pub async fn write(&self, events: Vec<OutboxEvent>) -> Result<(), String> {
        if let Some(e) = events.iter().find(|e| e.id.is_none()) {
            return Err(format!("an event for {} without an id", e.topic));
        }
        let (done, answer) = tokio::sync::oneshot::channel();
        self.requests.send(WriteRequest { events, done }).await.map_err(|_| "the outbox writer stopped".to_string())?;
        answer.await.map_err(|_| "the outbox writer stopped".to_string())?
    }
}

/// What [`enqueue_all`] wrote: the events' ids, in order, and (on SQLite) their messages by sequence number, for
/// [`RelayWaker::committed`] once the transaction has committed.
#[derive(Debug, Default)]
#[must_use = "hand it to `RelayWaker::committed` once the transaction has committed"]
pub struct Enqueued {
    pub ids: Vec<String>,
    messages: Vec<(i64, OutgoingMessage)>,
}

/// Writes `events` into the outbox inside `tx`, many rows a statement; returns their ids, in order. One
/// notification for them all on PostgreSQL. On an error, roll `tx` back (dropping it does): a statement that failed
/// may have written some of its rows.
pub async fn enqueue_all(tx: &mut SqlTx, dialect: Dialect, events: Vec<OutboxEvent>) -> Result<Enqueued, sqlx::Error> {
    let mut out = Enqueued { ids: Vec::with_capacity(events.len()), messages: Vec::new() };
    let now = now_ms();
    let mut events = events.into_iter();
    for size in insert_chunks(events.len()) {
        let chunk: Vec<OutboxEvent> = events.by_ref().take(size).collect();
        // The caller's transaction is rolled back whole on any error.
        let mut sql = format!(
            "{} INTO weir_outbox (event_id, topic, event_key, payload, headers, created_at) VALUES ",
            dialect.insert_in_tx()
        );
        let rows: Vec<String> = (0..chunk.len()).map(|i| dialect.param_row(i * 6 + 1, 6)).collect();
        sql += &rows.join(", ");
        // SQLite's relay can take the messages from memory, by their sequence numbers.
        let hand_over = dialect == Dialect::Sqlite;
        let mut q = sqlx::query(&sql);
        let mut messages = Vec::with_capacity(if hand_over { chunk.len() } else { 0 });
        for e in chunk {
            let id = e.id.unwrap_or_else(new_id);
            let headers = if e.headers.is_empty() {
                "[]".into()
            } else {
                serde_json::to_string(&e.headers).unwrap_or_else(|_| "[]".into())
            };
            if hand_over {
                messages.push(message(&id, e.topic.clone(), e.key.clone(), e.payload.clone(), e.headers));
            }
            q = q
                .bind(id.clone())
                .bind(e.topic)
                .bind(e.key.map(|k| k.to_vec()))
                .bind(e.payload.map(|p| p.to_vec()))
                .bind(headers)
                .bind(now);
            out.ids.push(id);
        }
        q.execute(&mut **tx).await?;
        out.messages.extend(messages.into_iter().map(|m| (0, m)));
    }
    if dialect == Dialect::Sqlite && !out.messages.is_empty() {
        // SQLite numbers the rows one after another, in the order of the VALUES and of the statements, under the
        // write lock this transaction holds (and OR FAIL inserts every row or none): the last row's number (`seq` is
        // the rowid) gives them all, in one statement rather than a row sent back per message.
        let last: i64 = sqlx::query("SELECT last_insert_rowid()").fetch_one(&mut **tx).await?.try_get(0)?;
        let first = last - out.messages.len() as i64 + 1;
        for (seq, (slot, _)) in (first..=last).zip(out.messages.iter_mut()) {
            *slot = seq;
        }
    }
    if dialect == Dialect::Postgres && !out.ids.is_empty() {
        sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&mut **tx).await?;
    }
    Ok(out)
}

/// The message an outbox row is published as: its headers, then its event id's.
fn message(
    id: &str,
    topic: String,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<(String, String)>,
) -> OutgoingMessage {
    let mut headers: Vec<(String, Bytes)> = headers.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect();
    headers.push((EVENT_ID_HEADER.to_string(), Bytes::copy_from_slice(id.as_bytes())));
    OutgoingMessage { topic, key, value, headers, partition: None, timestamp: None }
}

/// How far SQLite's relay has published.
const RELAYED: &str = "SELECT seq FROM weir_outbox_relayed WHERE relay = 'relay'";

/// Rows not yet published.
pub async fn unsent(store: &SqlStore) -> Result<i64, sqlx::Error> {
    let sql = match store.dialect() {
        Dialect::Postgres => "SELECT COUNT(*) FROM weir_outbox WHERE sent_at IS NULL".to_string(),
        Dialect::Sqlite => format!("SELECT COUNT(*) FROM weir_outbox WHERE seq > ({RELAYED})"),
    };
    sqlx::query(&sql).fetch_one(store.pool()).await?.try_get(0)
}

/// A time-ordered unique id: milliseconds, then random bits.
pub fn new_id() -> String {
    format!("{:013x}-{:016x}", now_ms(), rand::random::<u64>())
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

/// Messages handed to the relay past this many wait in the table instead (the relay reads them from there): the
/// hand-over saves reading back, it must not hold a backlog in memory.
const MAX_HANDED: usize = 20_000;

/// Wakes a [`Relay`] in the same process at once (after the transaction that enqueued has committed), and hands it
/// the committed messages where it can take them from memory.
#[derive(Clone, Debug, Default)]
pub struct RelayWaker(Arc<Waker>);

#[derive(Debug, Default)]
struct Waker {
    notify: tokio::sync::Notify,
    /// Committed messages not yet published, by sequence number.
    handed: parking_lot::Mutex<BTreeMap<i64, OutgoingMessage>>,
}

impl RelayWaker {
    pub fn wake(&self) {
        self.0.notify.notify_one();
    }

    /// Wakes the relay with the messages of a committed transaction (call only once `commit` has succeeded: the
    /// relay publishes what it is handed as the rows of those sequence numbers).
    pub fn committed(&self, enqueued: Enqueued) {
        {
            let mut handed = self.0.handed.lock();
            for (seq, m) in enqueued.messages {
                if handed.len() >= MAX_HANDED {
                    break;
                }
                handed.insert(seq, m);
            }
        }
        self.wake();
    }

    /// The handed messages that follow `after` without a gap, at most `limit`; forgets those at or before it.
    fn take_after(&self, after: i64, limit: usize) -> (Vec<i64>, Vec<OutgoingMessage>) {
        let mut handed = self.0.handed.lock();
        let mut rest = handed.split_off(&(after + 1));
        std::mem::swap(&mut *handed, &mut rest); // what was at or before `after` is dropped with `rest`
        let (mut seqs, mut messages) = (Vec::new(), Vec::new());
        let mut next = after + 1;
        while seqs.len() < limit {
            match handed.first_entry() {
                Some(e) if *e.key() == next => {
                    seqs.push(next);
                    messages.push(e.remove());
                    next += 1;
                }
                _ => break,
            }
        }
        (seqs, messages)
    }
}

/// Publishes the outbox to the bus.
pub struct Relay {
    store: SqlStore,
    bus: Arc<dyn Bus>,
    waker: RelayWaker,
    mark: parking_lot::Mutex<Mark>,
    /// Rows claimed per round.
    pub batch: i64,
    /// Longest sleep between rounds when nothing wakes the relay.
    pub poll_interval: Duration,
    /// On SQLite, how long published rows are kept before the relay deletes them.
    pub keep_sent: Duration,
    /// On SQLite, how often a relay that keeps publishing writes its high-water mark down (an idle or stopping
    /// relay writes it at once). A crash re-publishes what was published since, with the same event ids: the
    /// price of not committing a second transaction for every one a writer commits.
    pub mark_every: Duration,
}

/// SQLite's high-water mark: as far as this relay has published, and as far as the table says.
#[derive(Debug)]
struct Mark {
    published: Option<i64>,
    saved: i64,
    saved_at: std::time::Instant,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("store", &self.store.dialect()).field("batch", &self.batch).finish()
    }
}

impl Relay {
    pub fn new(store: SqlStore, bus: Arc<dyn Bus>) -> Relay {
        Relay {
            store,
            bus,
            waker: RelayWaker::default(),
            mark: parking_lot::Mutex::new(Mark { published: None, saved: 0, saved_at: std::time::Instant::now() }),
            // Large rounds: each costs a read and a marking statement, whatever its size.
            batch: 5000,
            poll_interval: Duration::from_millis(200),
            keep_sent: Duration::from_secs(3600),
            mark_every: Duration::from_millis(250),
        }
    }

    /// What wakes this relay from the same process.
    pub fn waker(&self) -> RelayWaker {
        self.waker.clone()
    }

    /// On SQLite, deletes rows published more than [`Relay::keep_sent`] ago (and written that long ago); returns how
    /// many. PostgreSQL's relay deletes rows as it publishes them.
    pub async fn purge_sent(&self) -> Result<u64, RelayError> {
        if self.store.dialect() == Dialect::Postgres {
            return Ok(0);
        }
        let before = now_ms() - self.keep_sent.as_millis() as i64;
        let done = sqlx::query(
            "DELETE FROM weir_outbox WHERE seq <= (SELECT seq FROM weir_outbox_relayed WHERE relay = 'relay') \
             AND created_at < $1",
        )
        .bind(before)
        .execute(self.store.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Publishes one round (up to `batch` events); returns how many.
    ///
    /// On PostgreSQL the rows stay locked (`FOR UPDATE SKIP LOCKED`) from their claim to the commit of their
    /// deletion, so relays sharing the outbox never take the same rows. On SQLite the rows after the high-water mark are read, published,
    /// and the mark moved, in separate statements: the store's one connection is every writer's, and holding a
    /// transaction while the bus publishes would stall all of them for that long.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let published = match self.store.dialect() {
            Dialect::Postgres => {
                // Claim and take in one statement: the rows are deleted, locked until the commit, and skipped by
                // other relays meanwhile. A failed publish rolls the deletion back.
                let mut tx = self.store.begin().await?;
                let mut rows = sqlx::query(
                    "DELETE FROM weir_outbox WHERE seq IN (SELECT seq FROM weir_outbox WHERE sent_at IS NULL \
                     ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED) \
                     RETURNING seq, event_id, topic, event_key, payload, headers",
                )
                .bind(self.batch)
                .fetch_all(&mut *tx)
                .await?;
                if rows.is_empty() {
                    tx.rollback().await?;
                    return Ok(0);
                }
                // RETURNING promises no order; the outbox's is `seq`.
                rows.sort_by_key(|r| r.try_get::<i64, _>(0).unwrap_or_default());
                let (seqs, messages) = Self::messages(&rows)?;
                // Publish first, commit after: a crash in between leaves the rows, published again (same ids).
                self.bus.produce_all(messages).await?;
                tx.commit().await?;
                seqs.len()
            }
            Dialect::Sqlite => {
                let pool = self.store.pool();
                let known = self.mark.lock().published;
                let after = match known {
                    Some(seq) => seq,
                    None => {
                        let seq: i64 = sqlx::query(RELAYED).fetch_one(pool).await?.try_get(0)?;
                        let mut mark = self.mark.lock();
                        (mark.published, mark.saved) = (Some(seq), seq);
                        seq
                    }
                };
                // What was handed over from the mark on, else the table from the mark on.
                let (mut seqs, mut messages) = self.waker.take_after(after, self.batch as usize);
                if seqs.is_empty() {
                    let rows = sqlx::query(
                        "SELECT seq, event_id, topic, event_key, payload, headers FROM weir_outbox WHERE seq > $1 \
                         ORDER BY seq LIMIT $2",
                    )
                    .bind(after)
                    .bind(self.batch)
                    .fetch_all(pool)
                    .await?;
                    if rows.is_empty() {
                        // Idle: the table learns how far the relay got.
                        self.save_mark(true).await?;
                        return Ok(0);
                    }
                    (seqs, messages) = Self::messages(&rows)?;
                }
                // Publish first, mark after: a crash in between re-publishes (same ids), never loses.
                self.bus.produce_all(messages).await?;
                self.mark.lock().published = Some(seqs.last().copied().unwrap_or(after));
                self.save_mark(false).await?;
                seqs.len()
            }
        };
        metrics::counter!("weir_outbox_published_total").increment(published as u64);
        Ok(published)
    }

    /// Writes SQLite's high-water mark down if it moved, and [`Relay::mark_every`] has passed or `now`.
    async fn save_mark(&self, now: bool) -> Result<(), RelayError> {
        let due = {
            let mark = self.mark.lock();
            mark.published.filter(|&p| p > mark.saved && (now || mark.saved_at.elapsed() >= self.mark_every))
        };
        if let Some(seq) = due {
            sqlx::query("UPDATE weir_outbox_relayed SET seq = $1 WHERE relay = 'relay'")
                .bind(seq)
                .execute(self.store.pool())
                .await?;
            let mut mark = self.mark.lock();
            (mark.saved, mark.saved_at) = (seq, std::time::Instant::now());
        }
        Ok(())
    }

    /// The rows' sequence numbers and their messages, each with its event id header.
    fn messages(rows: &[sqlx::any::AnyRow]) -> Result<(Vec<i64>, Vec<OutgoingMessage>), RelayError> {
        let mut seqs = Vec::with_capacity(rows.len());
        let mut messages = Vec::with_capacity(rows.len());
        for r in rows {
            seqs.push(r.try_get::<i64, _>(0)?);
            let id: String = r.try_get(1)?;
            let text: String = r.try_get(5)?;
            let headers: Vec<(String, String)> =
                if text == "[]" { Vec::new() } else { serde_json::from_str(&text).unwrap_or_default() };
            messages.push(message(
                &id,
                r.try_get(2)?,
                r.try_get::<Option<Vec<u8>>, _>(3)?.map(Bytes::from),
                r.try_get::<Option<Vec<u8>>, _>(4)?.map(Bytes::from),
                headers,
            ));
        }
        Ok((seqs, messages))
    }

    /// Relays until `stop` resolves. A failed round (bus or database away) is logged and retried, not returned:
    /// only failing to start (PostgreSQL's LISTEN) is an error.
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) -> Result<u64, RelayError> {
        let total = self.relay_until(&mut StopSignal::new(stop)).await?;
        // What a restart need not publish again.
        if let Err(e) = self.save_mark(true).await {
            tracing::warn!(error = %e, "the outbox relay cannot record how far it published; a restart re-publishes");
        }
        Ok(total)
    }

    async fn relay_until(&self, stopped: &mut StopSignal) -> Result<u64, RelayError> {
        let mut listener = match self.store.dialect() {
            Dialect::Postgres => {
                let mut l = sqlx::postgres::PgListener::connect(self.store.url()).await?;
                l.listen(CHANNEL).await?;
                Some(l)
            }
            Dialect::Sqlite => None,
        };
        let mut total = 0u64;
        let mut failing: Option<()> = None;
        let mut purged_at = tokio::time::Instant::now();
        loop {
            if stopped.is_stopped() {
                return Ok(total);
            }
            if purged_at.elapsed() >= Duration::from_secs(60) {
                purged_at = tokio::time::Instant::now();
                if let Err(e) = self.purge_sent().await {
                    tracing::warn!(error = %e, "the outbox relay cannot delete published rows");
                }
            }
            let n = match self.relay_once().await {
                Ok(n) => {
                    if failing.take().is_some() {
                        tracing::info!("the outbox relay publishes again");
                    }
                    n
                }
                // A bus or database that is briefly away must not stop the relay: what is unsent stays in the
                // table, and the next round tries again. Logged once per outage, counted always.
                Err(e) => {
                    metrics::counter!("weir_outbox_errors_total").increment(1);
                    if failing.replace(()).is_none() {
                        tracing::warn!(error = %e, "the outbox relay cannot publish; retrying");
                    }
                    tokio::select! {
                        _ = stopped.wait() => return Ok(total),
                        _ = tokio::time::sleep(self.poll_interval.max(Duration::from_secs(1))) => {}
                    }
                    continue;
                }
            };
            total += n as u64;
            if n as i64 >= self.batch {
                continue; // more waiting
            }
            let wake = async {
                match listener.as_mut() {
                    Some(l) => {
                        let _ = tokio::time::timeout(self.poll_interval.max(Duration::from_secs(1)), l.recv()).await;
                    }
                    None => tokio::time::sleep(self.poll_interval).await,
                }
            };
            tokio::select! {
                _ = stopped.wait() => return Ok(total),
                _ = self.waker.0.notify.notified() => {}
                _ = wake => {}
            }
        }
    }
}
