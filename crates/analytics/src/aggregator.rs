//! The aggregator: tumbling one-hour windows per event type over event time, closed by a watermark (the latest event
//! time seen minus the grace period), flushed to `hourly_aggregations`. The latest event time is kept per partition
//! and the watermark follows the least of them: partitions are read in turns, and one read hours ahead must not make
//! the others' events late. As in Flink, a partition idle for `idle_timeout` (wall time) stops holding the watermark
//! back, and a newly assigned partition holds it until it sends something or goes idle.
//!
//! Memory holds only what changed since the last flush: per window and type a count, first and last event time, the
//! amount sum, the durations' sum and count, and HyperLogLogs of users and sessions. A flush adds those deltas to the stored rows, merges the sketches, marks
//! windows behind the watermark final, and saves the consumed offsets, the watermark and the totals, all in one
//! transaction. On start the aggregator resumes from the offsets in that table (the runtime's exactly-once
//! bookkeeping), so a crash loses nothing and counts nothing twice. An event whose window the watermark has already
//! passed is late: counted, optionally sent to `events.late`, never added to a window.
//!
//! Several instances (each `weir up` on one cluster and database) share the group's partitions. A flush adds to the
//! stored windows and counters rather than overwriting them, one instance at a time (a PostgreSQL advisory lock), and
//! moves each partition's offset by compare-and-set from where its records in memory start: when a rebalance handed a
//! partition to another instance that flushed it first, the flush rolls back and this instance drops its memory and
//! reads its partitions again from the stored offsets. Memory is flushed at every rebalance, so a partition changes
//! hands with its counts. Each instance's watermark follows its own partitions (and the stored one), so a window may
//! be marked final by one while another still adds to it; its counts stay exact.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, watch};
use weir_runtime::handler::StoredPositions;
use weir_runtime::sql::{advance_offset, Dialect};
use weir_runtime::{Bus, BusError, OutgoingMessage, SqlStore, StartFrom, SubscribeOptions};

use crate::event::{EventRef, LATE_TOPIC, TOPIC};
use crate::hll::Hll;
use crate::pipeline_metrics as m;
use crate::time::{format_rfc3339, parse_rfc3339};

pub const HOUR_MS: i64 = 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Runtime(#[from] weir_runtime::handler::RunnerError),
}

impl From<weir_runtime::StoreError> for AggregatorError {
    fn from(e: weir_runtime::StoreError) -> Self {
        match e {
            weir_runtime::StoreError::Db(e) => AggregatorError::Db(e),
            other => AggregatorError::Db(sqlx::Error::Protocol(other.to_string())),
        }
    }
}

/// The key of the PostgreSQL advisory lock a flush holds: instances sharing the group flush one at a time, so their
/// read-add-write of a window's row never interleaves. (SQLite has one writer anyway.)
const FLUSH_LOCK: i64 = 0x7765_6972_6167_6701; // "weiragg" and 1

#[derive(Clone, Debug)]
pub struct AggregatorConfig {
    pub group: String,
    /// The topic the events are read from (`events`; the origin's `user-activity-events`).
    pub topic: String,
    /// `GRACE_PERIOD_SECONDS`: how far behind the latest event time a window stays open.
    pub grace: Duration,
    /// `FLUSH_INTERVAL_SECONDS`.
    pub flush_interval: Duration,
    /// Send late events to `events.late` as well as counting them.
    pub route_late: bool,
    pub batch_size: usize,
    /// A partition with no records for this long no longer holds the watermark back.
    pub idle_timeout: Duration,
    /// How long the group waits for an instance that stopped answering before handing its partitions on (the
    /// origin's `session.timeout.ms`, 45 s).
    pub session_timeout: Duration,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            group: "analytics-aggregator".into(),
            topic: TOPIC.into(),
            grace: Duration::from_secs(30),
            flush_interval: Duration::from_secs(60),
            route_late: false,
            batch_size: 10_000,
            idle_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(45),
        }
    }
}

#[derive(Clone, Debug)]
struct Delta {
    count: u64,
    first: i64,
    last: i64,
    amount: f64,
    users: Hll,
    sessions: Hll,
    /// Sum of `duration_ms` and the number of events that carried one (the origin's average is their quotient).
    duration_total: i64,
    durations: i64,
    /// Events added since `processor_events_consumed_total` was last told (after each batch: per type, not per event).
    unreported: u64,
}

/// What the API shows of the aggregator's memory and counters.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Snapshot {
    /// Window and type pairs with events not yet flushed.
    pub open_windows: usize,
    pub events_in_memory: u64,
    pub events_consumed: u64,
    pub late_events: u64,
    pub invalid_events: u64,
    pub windows_flushed: u64,
    /// Events in memory per type, most first.
    pub events_by_type: Vec<(String, u64)>,
    /// The end of the earliest window memory holds events of (ms since the epoch).
    pub earliest_window_end_ms: Option<i64>,
    /// Latest event time seen, minus the grace period (ms since the epoch; `None` before the first event).
    pub watermark_ms: Option<i64>,
    pub last_flush_ms: Option<i64>,
    pub next_flush_ms: i64,
}

/// The result of one flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlushReport {
    pub windows_flushed: u64,
    /// Events the flushed windows' rows grew by.
    pub events_written: u64,
    pub windows_finalized: u64,
    /// Another instance of the aggregator had flushed some of these partitions' records first (it took them in a
    /// rebalance): nothing was written, memory was dropped, and the partitions are read again from the stored offsets.
    pub rewound: bool,
}

/// Talks to a running aggregator: its memory and counters, and flushes on demand.
#[derive(Clone, Debug)]
pub struct Control {
    snapshot: Arc<Mutex<Snapshot>>,
    grace_ms: i64,
    flush: mpsc::Sender<oneshot::Sender<Result<FlushReport, String>>>,
}

impl Control {
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().clone()
    }

    /// The grace period: how long after a window's end the watermark passes it.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// Flushes now and waits for it (POST /api/pipeline/flush).
    pub async fn flush(&self) -> Result<FlushReport, String> {
        let (tx, rx) = oneshot::channel();
        self.flush.send(tx).await.map_err(|_| "the aggregator is not running".to_string())?;
        rx.await.map_err(|_| "the aggregator stopped before flushing".to_string())?
    }
}

/// Creates the pipeline's tables (`hourly_aggregations` and the aggregator's own state), and adds to a table made
/// by an earlier weir the origin's columns it lacks (sessions, durations, `created_at`, `id`).
pub async fn migrate(store: &SqlStore) -> Result<(), sqlx::Error> {
    let pg = store.dialect() == Dialect::Postgres;
    let (bytes, real) = if pg { ("BYTEA", "DOUBLE PRECISION") } else { ("BLOB", "REAL") };
    // SQLite's `id INTEGER PRIMARY KEY` is its rowid; PostgreSQL's a sequence, as the origin's SERIAL.
    let id = if pg { "BIGSERIAL PRIMARY KEY" } else { "INTEGER PRIMARY KEY" };
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS hourly_aggregations (id {id}, window_start TEXT NOT NULL, \
         window_end TEXT NOT NULL, event_type TEXT NOT NULL, event_count BIGINT NOT NULL, \
         unique_users BIGINT NOT NULL, unique_user_count BIGINT NOT NULL DEFAULT 0, \
         unique_session_count BIGINT NOT NULL DEFAULT 0, total_duration_ms BIGINT NOT NULL DEFAULT 0, \
         duration_event_count BIGINT NOT NULL DEFAULT 0, avg_duration_ms {real}, \
         first_event_at TEXT NOT NULL, last_event_at TEXT NOT NULL, amount_sum {real} NOT NULL, \
         is_final INTEGER NOT NULL, created_at TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL, \
         users_sketch {bytes} NOT NULL, sessions_sketch {bytes}, UNIQUE (window_start, event_type))"
    ))
    .execute(store.pool())
    .await?;
    // Columns a table made before them lacks, and how to fill them for the rows it has.
    let added: [(&str, String, Option<&str>); 8] = [
        ("unique_user_count", "BIGINT NOT NULL DEFAULT 0".into(), Some("unique_user_count = unique_users")),
        ("unique_session_count", "BIGINT NOT NULL DEFAULT 0".into(), None),
        ("total_duration_ms", "BIGINT NOT NULL DEFAULT 0".into(), None),
        ("duration_event_count", "BIGINT NOT NULL DEFAULT 0".into(), None),
        ("avg_duration_ms", real.into(), None),
        ("created_at", "TEXT NOT NULL DEFAULT ''".into(), Some("created_at = updated_at")),
        ("sessions_sketch", bytes.into(), None),
        // SQLite cannot add a primary key: there its rowid stands in (`rowid AS id`).
        ("id", "BIGSERIAL".into(), None),
    ];
    let existing: Vec<String> = if pg {
        sqlx::query_scalar(
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
             WHERE table_name = 'hourly_aggregations' AND table_schema = current_schema()",
        )
        .fetch_all(store.pool())
        .await?
    } else {
        sqlx::query_scalar("SELECT name FROM pragma_table_info('hourly_aggregations')").fetch_all(store.pool()).await?
    };
    for (column, ddl, fill) in added {
        if existing.iter().any(|c| c == column) || (column == "id" && !pg) {
            continue;
        }
        let if_not = if pg { "IF NOT EXISTS " } else { "" };
        sqlx::query(&format!("ALTER TABLE hourly_aggregations ADD COLUMN {if_not}{column} {ddl}"))
            .execute(store.pool())
            .await?;
        if let Some(fill) = fill {
            sqlx::query(&format!("UPDATE hourly_aggregations SET {fill}")).execute(store.pool()).await?;
        }
    }
    for s in [
        "CREATE INDEX IF NOT EXISTS hourly_aggregations_type ON hourly_aggregations (event_type, window_start)",
        "CREATE INDEX IF NOT EXISTS hourly_aggregations_created ON hourly_aggregations (created_at)",
        "CREATE TABLE IF NOT EXISTS analytics_state (k TEXT PRIMARY KEY, v BIGINT NOT NULL)",
    ] {
        sqlx::query(s).execute(store.pool()).await?;
    }
    Ok(())
}

async fn state_value(store: &SqlStore, k: &str) -> Result<Option<i64>, sqlx::Error> {
    Ok(sqlx::query("SELECT v FROM analytics_state WHERE k = $1")
        .bind(k)
        .fetch_optional(store.pool())
        .await?
        .map(|r| r.get::<i64, _>(0)))
}

/// The latest event time per partition and the watermark, as flushes stored them. The watermark is not recomputed
/// from the partitions' times, since partitions not seen by then (holding it back) have no time stored.
async fn stored_event_times(store: &SqlStore) -> Result<(HashMap<(String, i32), i64>, Option<i64>), sqlx::Error> {
    let mut max_event_ms = HashMap::new();
    for r in
        sqlx::query("SELECT k, v FROM analytics_state WHERE k LIKE 'max_event_ms/%'").fetch_all(store.pool()).await?
    {
        let k: String = r.get(0);
        if let Some((topic, partition)) = k["max_event_ms/".len()..].rsplit_once('/') {
            if let Ok(p) = partition.parse::<i32>() {
                max_event_ms.insert((topic.to_string(), p), r.get::<i64, _>(1));
            }
        }
    }
    Ok((max_event_ms, state_value(store, "watermark_ms").await?))
}

/// The watermark with one partition's latest event time left open (see [`Aggregator::watermark_with`]).
struct Mark {
    grace: i64,
    stored: Option<i64>,
    /// No partition assigned yet: the stored watermark stands.
    unassigned: bool,
    /// The partition is in the assignment (its time takes part).
    counted: bool,
    /// Another active partition has sent nothing yet: nothing can close.
    blocked: bool,
    /// The least latest time of the other active partitions.
    least: Option<i64>,
    /// The latest time of any other partition (when every other is idle).
    latest_elsewhere: Option<i64>,
}

impl Mark {
    /// The watermark with the partition's latest event time at `latest`: what `watermark_at` computes.
    fn at(&self, latest: Option<i64>) -> Option<i64> {
        if self.unassigned || self.blocked || (self.counted && latest.is_none()) {
            return self.stored;
        }
        let own = if self.counted { latest } else { None };
        let least = match (self.least, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        least.or_else(|| self.latest_elsewhere.max(latest)).map(|m| m - self.grace).max(self.stored)
    }
}

/// How long the aggregator may go between looks at the clock (a poll's wait, a batch, a flush) before the gap
/// counts as a stall rather than as its partitions' silence.
const STALL_ALLOWANCE: Duration = Duration::from_millis(500);

/// What became of one event.
enum Absorbed {
    /// Added to its window; `advanced` when it moved its partition's latest event time (the watermark may move).
    Windowed {
        advanced: bool,
    },
    Late,
    Invalid,
}

pub struct Aggregator {
    bus: Arc<dyn Bus>,
    store: SqlStore,
    config: AggregatorConfig,
    deltas: HashMap<(i64, String), Delta>,
    /// Next offset per partition consumed into memory (saved by the next flush).
    consumed_to: HashMap<(String, i32), i64>,
    /// Per partition, the offset memory's records of it start at: what the database held at the last flush. The
    /// flush moves each partition's offset from here to `consumed_to` by compare-and-set, so a second instance that
    /// took the partition meanwhile and flushed first makes this flush roll back (and re-read) instead of counting
    /// those records twice.
    consumed_from: HashMap<(String, i32), i64>,
    /// Late and invalid events counted since the last flush (the stored totals grow by these).
    pending_late: u64,
    pending_invalid: u64,
    /// Late events per type in the current batch (for `processor_events_consumed_total`; the windowed ones are
    /// counted in their deltas).
    late_by_type: HashMap<String, u64>,
    /// The types `processor_events_in_memory_by_type` was last set for.
    types_in_memory: Vec<String>,
    positions: StoredPositions,
    /// Latest event time seen per partition.
    max_event_ms: HashMap<(String, i32), i64>,
    /// When each partition last sent a record (wall time), and when the assignment last changed.
    last_seen: HashMap<(String, i32), Instant>,
    assignment: Vec<(String, i32)>,
    assigned_at: Instant,
    /// When [`discount_stall`](Self::discount_stall) last looked at the clock.
    clock_checked: Instant,
    snapshot: Arc<Mutex<Snapshot>>,
    flush_rx: mpsc::Receiver<oneshot::Sender<Result<FlushReport, String>>>,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator").field("config", &self.config).finish()
    }
}

impl Aggregator {
    /// Prepares the tables and restores the watermark and counters from the last flush.
    pub async fn new(
        bus: Arc<dyn Bus>,
        store: SqlStore,
        config: AggregatorConfig,
    ) -> Result<(Aggregator, Control), AggregatorError> {
        migrate(&store).await?;
        let snapshot = Snapshot {
            events_consumed: state_value(&store, "events_consumed").await?.unwrap_or(0) as u64,
            late_events: state_value(&store, "late_events").await?.unwrap_or(0) as u64,
            invalid_events: state_value(&store, "invalid_events").await?.unwrap_or(0) as u64,
            windows_flushed: state_value(&store, "windows_flushed").await?.unwrap_or(0) as u64,
            last_flush_ms: state_value(&store, "last_flush_ms").await?,
            ..Default::default()
        };
        let (max_event_ms, watermark) = stored_event_times(&store).await?;
        let snapshot = Arc::new(Mutex::new(Snapshot { watermark_ms: watermark, ..snapshot }));
        let (flush_tx, flush_rx) = mpsc::channel(16);
        let positions = StoredPositions::new(&config.group);
        let grace_ms = config.grace.as_millis() as i64;
        let aggregator = Aggregator {
            bus,
            store,
            config,
            deltas: HashMap::new(),
            consumed_to: HashMap::new(),
            consumed_from: HashMap::new(),
            pending_late: 0,
            pending_invalid: 0,
            late_by_type: HashMap::new(),
            types_in_memory: Vec::new(),
            positions,
            max_event_ms,
            last_seen: HashMap::new(),
            assignment: Vec::new(),
            assigned_at: Instant::now(),
            clock_checked: Instant::now(),
            snapshot: snapshot.clone(),
            flush_rx,
        };
        Ok((aggregator, Control { snapshot, grace_ms, flush: flush_tx }))
    }

    fn watermark(&self) -> Option<i64> {
        self.watermark_at(Instant::now())
    }

    /// The least latest-event time over the partitions still sending, minus the grace period.
    fn watermark_at(&self, now: Instant) -> Option<i64> {
        let grace = self.config.grace.as_millis() as i64;
        let idle = self.config.idle_timeout;
        if self.assignment.is_empty() {
            return self.stored_watermark(); // not consuming yet: nothing has moved
        }
        let mut least: Option<i64> = None;
        for tp in &self.assignment {
            // A partition is active if it sent something lately, or was assigned lately (it may be about to).
            let since = self.last_seen.get(tp).copied().unwrap_or(self.assigned_at);
            if now.saturating_duration_since(since) >= idle {
                continue;
            }
            match self.max_event_ms.get(tp) {
                Some(&m) => least = Some(least.map_or(m, |l| l.min(m))),
                // Active but never seen: nothing can close until it speaks or goes idle.
                None => return self.stored_watermark(),
            }
        }
        // Everything idle (the end of a bulk load): the latest time seen anywhere.
        least.or_else(|| self.max_event_ms.values().max().copied()).map(|m| m - grace).max(self.stored_watermark())
    }

    /// [`watermark_at`](Self::watermark_at) taken apart for one partition `tp` whose records are being read (so it is
    /// active): everything but `tp`'s own latest event time, which [`Mark::at`] takes.
    fn watermark_with(&self, tp: &(String, i32), now: Instant) -> Mark {
        let mut mark = Mark {
            grace: self.config.grace.as_millis() as i64,
            stored: self.stored_watermark(),
            unassigned: self.assignment.is_empty(),
            counted: self.assignment.contains(tp),
            blocked: false,
            least: None,
            latest_elsewhere: self.max_event_ms.iter().filter(|(k, _)| *k != tp).map(|(_, v)| *v).max(),
        };
        for p in self.assignment.iter().filter(|p| *p != tp) {
            let since = self.last_seen.get(p).copied().unwrap_or(self.assigned_at);
            if now.saturating_duration_since(since) >= self.config.idle_timeout {
                continue;
            }
            match self.max_event_ms.get(p) {
                Some(&m) => mark.least = Some(mark.least.map_or(m, |l: i64| l.min(m))),
                None => mark.blocked = true,
            }
        }
        mark
    }

    /// Time the aggregator itself was away from reading (a flush waiting on a busy disk or a locked database, a
    /// starved process) is not time its partitions were silent: a gap between two looks at the clock longer than
    /// [`STALL_ALLOWANCE`] moves every partition's clock on by all of it, so a stall never makes partitions look idle
    /// and lets the watermark leap past the ones that simply were not read meanwhile (their events would be late).
    fn discount_stall(&mut self) {
        let now = Instant::now();
        let away = now.saturating_duration_since(self.clock_checked);
        self.clock_checked = now;
        if away > STALL_ALLOWANCE {
            for seen in self.last_seen.values_mut() {
                *seen += away;
            }
            self.assigned_at += away;
        }
    }

    /// The watermark as the last flush left it: the least over partitions known then. It never goes back.
    fn stored_watermark(&self) -> Option<i64> {
        self.snapshot.lock().watermark_ms
    }

    /// Consumes until `stop` turns true, flushing on the interval and on request; flushes once more before returning.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), AggregatorError> {
        let mut options = SubscribeOptions::new(self.config.group.clone(), [self.config.topic.clone()]);
        options.start_from = StartFrom::Earliest;
        options.max_batch = self.config.batch_size;
        options.client_id = "weir-analytics-aggregator".into();
        options.session_timeout = self.config.session_timeout;
        self.bus.ensure_topic(&self.config.topic, 4).await?;
        let mut sub = self.bus.subscribe(options).await?;
        let mut next_flush = Instant::now() + self.config.flush_interval;
        let mut unreachable: Option<()> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            // A short wait, then the timers: next_batch is not cancel-safe on every bus, so it is never raced.
            let batch = match sub.next_batch(Duration::from_millis(100)).await {
                Ok(b) => {
                    if unreachable.take().is_some() {
                        tracing::info!("the cluster answers again; the aggregator resumes");
                    }
                    b
                }
                Err(BusError::Rebalanced) => Vec::new(),
                // The client reconnects by itself: pause, keeping the windows and the subscription (logged once per
                // outage).
                Err(BusError::Unavailable(e)) => {
                    if unreachable.replace(()).is_none() {
                        tracing::warn!(error = %e, "the cluster is unreachable; the aggregator pauses until it answers");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let mut assignment = sub.assignment();
            assignment.sort();
            if assignment != self.assignment {
                // A rebalance: what memory holds is flushed before anything else is read, so the partitions that
                // stay are admitted from their flushed offsets and those that left are handed over with them.
                if !self.consumed_to.is_empty() {
                    self.flush(&mut *sub).await?;
                }
                self.assignment = assignment;
                self.assigned_at = Instant::now();
            }
            let batch = self.positions.admit(&self.store, &mut *sub, batch).await?;
            self.discount_stall();
            let now = Instant::now();
            // Per partition rather than per record (a batch holds runs of each partition's records): the
            // bookkeeping keyed by topic name stays off the per-event path.
            for run in batch.chunk_by(|a, b| a.partition == b.partition && a.topic == b.topic) {
                self.last_seen.insert((run[0].topic.clone(), run[0].partition), now);
            }
            let mut late = Vec::new();
            let mut consumed = 0u64;
            // Parsed first, then windowed: the origin's two latencies, each a per-event mean over the batch.
            let absorbing = Instant::now();
            let events: Vec<Option<EventRef<'_>>> = batch
                .iter()
                .map(|m| m.value.as_deref().and_then(|v| serde_json::from_slice::<EventRef<'_>>(v).ok()))
                .collect();
            let parsed = absorbing.elapsed();
            let mut events = events.into_iter();
            // A run of one partition's records at a time: its latest event time is kept in a local, and the other
            // partitions' part of the watermark is taken once per run, not once per record that moves it.
            for run in batch.chunk_by(|a, b| a.partition == b.partition && a.topic == b.topic) {
                let tp = (run[0].topic.clone(), run[0].partition);
                let mut latest = self.max_event_ms.get(&tp).copied();
                let mark = self.watermark_with(&tp, now);
                let mut watermark = mark.at(latest);
                for m in run {
                    match self.absorb(events.next().flatten(), watermark, &mut latest) {
                        Absorbed::Late => late.push(m),
                        Absorbed::Windowed { advanced } => {
                            consumed += 1;
                            if advanced {
                                watermark = mark.at(latest);
                            }
                        }
                        Absorbed::Invalid => {}
                    }
                }
                if let Some(l) = latest {
                    self.max_event_ms.insert(tp, l);
                }
            }
            metrics::counter!("events_consumed_total").increment(consumed);
            if !batch.is_empty() {
                metrics::histogram!(m::BATCH_SIZE).record(batch.len() as f64);
                metrics::histogram!(m::DESERIALIZE_LATENCY).record(parsed.as_secs_f64() / batch.len() as f64);
                metrics::histogram!(m::PROCESSING_LATENCY)
                    .record(absorbing.elapsed().as_secs_f64() / batch.len() as f64);
            }
            let mut per_type: HashMap<&str, u64> = HashMap::new();
            for ((_, event_type), d) in &mut self.deltas {
                if d.unreported > 0 {
                    *per_type.entry(event_type.as_str()).or_default() += std::mem::take(&mut d.unreported);
                }
            }
            for (event_type, n) in &self.late_by_type {
                *per_type.entry(event_type.as_str()).or_default() += n;
            }
            for (event_type, n) in per_type {
                metrics::counter!(m::EVENTS_CONSUMED, "event_type" => event_type.to_string()).increment(n);
            }
            self.late_by_type.clear();
            for run in batch.chunk_by(|a, b| a.partition == b.partition && a.topic == b.topic) {
                let last = &run[run.len() - 1];
                let tp = (last.topic.clone(), last.partition);
                self.consumed_from.entry(tp.clone()).or_insert(run[0].offset);
                self.consumed_to.insert(tp, last.offset + 1);
            }
            // What memory holds counts as handled: the next flush writes it with these offsets, and a crash before
            // that loses both together.
            for ((t, p), next) in &self.consumed_to {
                self.positions.advance(t, *p, *next);
            }
            if self.config.route_late && !late.is_empty() {
                let msgs = late
                    .into_iter()
                    .map(|m| OutgoingMessage {
                        topic: LATE_TOPIC.into(),
                        key: m.key.clone(),
                        value: m.value.clone(),
                        ..Default::default()
                    })
                    .collect();
                self.bus.produce_all(msgs).await?;
            }
            let mut requests = Vec::new();
            while let Ok(r) = self.flush_rx.try_recv() {
                requests.push(r);
            }
            if !requests.is_empty() || Instant::now() >= next_flush {
                let result = self.flush(&mut *sub).await;
                if result.is_err() {
                    metrics::counter!(m::DB_WRITE_ERRORS).increment(1);
                }
                next_flush = Instant::now() + self.config.flush_interval;
                self.publish_snapshot(next_flush);
                let reply = result.as_ref().map(|r| *r).map_err(|e| e.to_string());
                for r in requests {
                    let _ = r.send(reply.clone());
                }
                result?;
            } else {
                self.publish_snapshot(next_flush);
            }
            if stop.has_changed().unwrap_or(true) && *stop.borrow_and_update() {
                break;
            }
        }
        self.flush(&mut *sub).await?;
        let _ = sub.close().await;
        Ok(())
    }

    /// Adds one event (`None`: its value is not an event) to memory.
    /// `latest` is the latest event time of the record's partition (moved by this event if it is later).
    fn absorb(&mut self, event: Option<EventRef<'_>>, watermark: Option<i64>, latest: &mut Option<i64>) -> Absorbed {
        let Some(ev) = event else {
            self.invalid(m::DESERIALIZATION);
            return Absorbed::Invalid;
        };
        let Some(ts) = parse_rfc3339(&ev.timestamp) else {
            self.invalid(m::INVALID_TIMESTAMP);
            return Absorbed::Invalid;
        };
        let window = ts.div_euclid(HOUR_MS) * HOUR_MS;
        if watermark.is_some_and(|w| window + HOUR_MS <= w) {
            self.pending_late += 1;
            *self.late_by_type.entry(ev.event_type.into_owned()).or_default() += 1;
            self.snapshot.lock().late_events += 1;
            metrics::counter!("late_events_total").increment(1);
            return Absorbed::Late;
        }
        let advanced = match latest {
            Some(l) if *l >= ts => false,
            _ => {
                *latest = Some(ts);
                true
            }
        };
        let amount = ev.amount();
        let key = (window, ev.event_type.into_owned());
        let d = self.deltas.entry(key).or_insert_with(|| Delta {
            count: 0,
            first: ts,
            last: ts,
            amount: 0.0,
            users: Hll::default(),
            sessions: Hll::default(),
            duration_total: 0,
            durations: 0,
            unreported: 0,
        });
        d.count += 1;
        d.unreported += 1;
        d.first = d.first.min(ts);
        d.last = d.last.max(ts);
        if let Some(a) = amount {
            d.amount += a;
        }
        if let Some(u) = ev.user_id.as_deref() {
            d.users.insert(u.as_bytes());
        }
        if let Some(s) = ev.session_id.as_deref() {
            d.sessions.insert(s.as_bytes());
        }
        if let Some(ms) = ev.duration_ms {
            d.duration_total += ms.round() as i64;
            d.durations += 1;
        }
        Absorbed::Windowed { advanced }
    }

    /// Counts an event that cannot be read (`error_type` as the origin's `processor_consume_errors_total`).
    fn invalid(&mut self, error_type: &'static str) {
        self.pending_invalid += 1;
        self.snapshot.lock().invalid_events += 1;
        metrics::counter!("invalid_events_total").increment(1);
        metrics::counter!(m::CONSUME_ERRORS, "error_type" => error_type).increment(1);
    }

    fn publish_snapshot(&mut self, next_flush: Instant) {
        self.discount_stall();
        let watermark = self.watermark(); // before the lock: it reads the snapshot too
        let mut by_type: HashMap<&str, u64> = HashMap::new();
        for ((_, t), d) in &self.deltas {
            *by_type.entry(t.as_str()).or_default() += d.count;
        }
        let mut events_by_type: Vec<(String, u64)> = by_type.into_iter().map(|(t, n)| (t.to_string(), n)).collect();
        events_by_type.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let earliest_end = self.deltas.keys().map(|(w, _)| w + HOUR_MS).min();
        let until = next_flush.saturating_duration_since(Instant::now());
        let in_memory: u64 = events_by_type.iter().map(|(_, n)| n).sum();
        // The origin's gauges; a type no longer in memory goes back to 0 rather than keeping its last count.
        metrics::gauge!(m::ACTIVE_WINDOWS).set(self.deltas.len() as f64);
        metrics::gauge!(m::EVENTS_IN_MEMORY).set(in_memory as f64);
        metrics::gauge!(m::SECONDS_UNTIL_FLUSH).set(until.as_secs_f64());
        metrics::gauge!(m::EARLIEST_WINDOW_END).set(earliest_end.map_or(0.0, |e| e as f64 / 1000.0));
        for t in &self.types_in_memory {
            if !events_by_type.iter().any(|(u, _)| u == t) {
                metrics::gauge!(m::EVENTS_IN_MEMORY_BY_TYPE, "event_type" => t.clone()).set(0.0);
            }
        }
        for (t, n) in &events_by_type {
            metrics::gauge!(m::EVENTS_IN_MEMORY_BY_TYPE, "event_type" => t.clone()).set(*n as f64);
        }
        self.types_in_memory = events_by_type.iter().map(|(t, _)| t.clone()).collect();
        let mut s = self.snapshot.lock();
        s.open_windows = self.deltas.len();
        s.events_in_memory = in_memory;
        s.events_by_type = events_by_type;
        s.earliest_window_end_ms = earliest_end;
        s.watermark_ms = watermark;
        s.next_flush_ms = weir_runtime::time::now_ms() + until.as_millis() as i64;
    }

    /// One transaction: the consumed offsets (by compare-and-set), the windows' deltas, the finalised windows and the
    /// counters. Counters and windows are added to what is stored, never overwritten, so instances sharing the group
    /// (each holding some partitions) add up.
    async fn flush(&mut self, sub: &mut dyn weir_runtime::Subscription) -> Result<FlushReport, AggregatorError> {
        let started = Instant::now();
        let now = format_rfc3339(weir_runtime::time::now_ms());
        let dialect = self.store.dialect();
        let mut tx = self.store.begin().await?;
        if dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(FLUSH_LOCK).execute(&mut *tx).await?;
        }
        let mut report = FlushReport::default();
        for ((topic, partition), next) in &self.consumed_to {
            let from = self.consumed_from.get(&(topic.clone(), *partition)).copied().unwrap_or(*next);
            if !advance_offset(&mut tx, &self.config.group, topic, *partition, from, *next).await? {
                tx.rollback().await?;
                tracing::info!(topic = %topic, partition, "another aggregator flushed this partition first; reading again");
                self.rewind(sub).await?;
                return Ok(FlushReport { rewound: true, ..report });
            }
        }
        let real = if dialect == Dialect::Postgres { "DOUBLE PRECISION" } else { "REAL" };
        let upsert = format!(
            "INSERT INTO hourly_aggregations (window_start, window_end, event_type, event_count, unique_users, \
                 unique_user_count, unique_session_count, total_duration_ms, duration_event_count, avg_duration_ms, \
                 first_event_at, last_event_at, amount_sum, is_final, created_at, updated_at, users_sketch, \
                 sessions_sketch) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $10 > 0 THEN CAST($11 AS {real}) END, \
                 $12, $13, $14, 0, $15, $16, $17, $18) \
                 ON CONFLICT (window_start, event_type) DO UPDATE SET event_count = excluded.event_count, \
                 unique_users = excluded.unique_users, unique_user_count = excluded.unique_user_count, \
                 unique_session_count = excluded.unique_session_count, \
                 total_duration_ms = excluded.total_duration_ms, \
                 duration_event_count = excluded.duration_event_count, avg_duration_ms = excluded.avg_duration_ms, \
                 first_event_at = excluded.first_event_at, last_event_at = excluded.last_event_at, \
                 amount_sum = excluded.amount_sum, updated_at = excluded.updated_at, \
                 users_sketch = excluded.users_sketch, sessions_sketch = excluded.sessions_sketch"
        );
        for ((window, event_type), d) in &self.deltas {
            let start = format_rfc3339(*window);
            let row = sqlx::query(
                "SELECT event_count, first_event_at, last_event_at, amount_sum, users_sketch, sessions_sketch, \
                 total_duration_ms, duration_event_count FROM hourly_aggregations \
                 WHERE window_start = $1 AND event_type = $2",
            )
            .bind(&start)
            .bind(event_type)
            .fetch_optional(&mut *tx)
            .await?;
            let (mut count, mut first, mut last, mut amount) = (d.count as i64, d.first, d.last, d.amount);
            let (mut users, mut sessions) = (d.users.clone(), d.sessions.clone());
            let (mut duration_total, mut durations) = (d.duration_total, d.durations);
            // Added to what is stored, never put in its place: a manual flush of an open window, or a shutdown's,
            // followed by the window's next flush keeps both parts (the origin's upsert kept only the later one).
            if let Some(r) = row {
                count += r.get::<i64, _>(0);
                first = first.min(parse_rfc3339(&r.get::<String, _>(1)).unwrap_or(first));
                last = last.max(parse_rfc3339(&r.get::<String, _>(2)).unwrap_or(last));
                amount += r.get::<f64, _>(3);
                users.merge(&Hll::from_bytes(&r.get::<Vec<u8>, _>(4)));
                if let Some(stored) = r.get::<Option<Vec<u8>>, _>(5) {
                    sessions.merge(&Hll::from_bytes(&stored));
                }
                duration_total += r.get::<i64, _>(6);
                durations += r.get::<i64, _>(7);
            }
            // Bound as a number and made NULL in SQL when no event carried a duration: a NULL parameter has no type
            // the generic driver can give PostgreSQL.
            let avg_duration = if durations > 0 { duration_total as f64 / durations as f64 } else { 0.0 };
            let unique_users = users.estimate() as i64;
            sqlx::query(&upsert)
                .bind(&start)
                .bind(format_rfc3339(window + HOUR_MS))
                .bind(event_type)
                .bind(count)
                .bind(unique_users)
                .bind(unique_users)
                .bind(sessions.estimate() as i64)
                .bind(duration_total)
                .bind(durations)
                .bind(durations)
                .bind(avg_duration)
                .bind(format_rfc3339(first))
                .bind(format_rfc3339(last))
                .bind(amount)
                .bind(&now)
                .bind(&now)
                .bind(users.to_bytes())
                .bind(sessions.to_bytes())
                .execute(&mut *tx)
                .await?;
            report.windows_flushed += 1;
            report.events_written += d.count;
        }
        self.discount_stall();
        let watermark = self.watermark();
        if let Some(w) = watermark {
            let done = sqlx::query(
                "UPDATE hourly_aggregations SET is_final = 1, updated_at = $1 WHERE is_final = 0 AND window_end <= $2",
            )
            .bind(&now)
            .bind(format_rfc3339(w))
            .execute(&mut *tx)
            .await?;
            report.windows_finalized = done.rows_affected();
        }
        let in_memory: u64 = self.deltas.values().map(|d| d.count).sum();
        let mut totals = HashMap::new();
        for (k, added) in [
            ("events_consumed", in_memory),
            ("late_events", self.pending_late),
            ("invalid_events", self.pending_invalid),
            ("windows_flushed", report.windows_flushed),
        ] {
            let total: i64 = sqlx::query_scalar(
                "INSERT INTO analytics_state (k, v) VALUES ($1, $2) \
                 ON CONFLICT (k) DO UPDATE SET v = analytics_state.v + excluded.v RETURNING v",
            )
            .bind(k)
            .bind(added as i64)
            .fetch_one(&mut *tx)
            .await?;
            totals.insert(k, total.max(0) as u64);
        }
        // Times only move forward, whichever instance writes them.
        let greatest = if dialect == Dialect::Postgres { "GREATEST" } else { "MAX" };
        let mut times = vec![("last_flush_ms".to_string(), weir_runtime::time::now_ms())];
        for ((topic, partition), m) in &self.max_event_ms {
            times.push((format!("max_event_ms/{topic}/{partition}"), *m));
        }
        if let Some(w) = watermark {
            times.push(("watermark_ms".to_string(), w));
        }
        for (k, v) in times {
            sqlx::query(&format!(
                "INSERT INTO analytics_state (k, v) VALUES ($1, $2) \
                 ON CONFLICT (k) DO UPDATE SET v = {greatest}(analytics_state.v, excluded.v)"
            ))
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        {
            let mut s = self.snapshot.lock();
            s.events_consumed = totals["events_consumed"];
            s.late_events = totals["late_events"];
            s.invalid_events = totals["invalid_events"];
            s.windows_flushed = totals["windows_flushed"];
            s.last_flush_ms = Some(weir_runtime::time::now_ms());
        }
        // A hint for lag and for `groups describe`, for the partitions still assigned here; the database decides
        // where a restart resumes, so a refused hint is only logged.
        let assigned = sub.assignment();
        let commits: Vec<(String, i32, i64)> = self
            .consumed_to
            .iter()
            .filter(|(tp, _)| assigned.contains(tp))
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect();
        if !commits.is_empty() {
            match sub.commit_offsets(&commits).await {
                Ok(()) | Err(BusError::Rebalanced) => {}
                Err(BusError::Unavailable(e)) => tracing::debug!(error = %e, "offsets not committed to the bus"),
                Err(e) => tracing::warn!(error = %e, "offsets not committed to the bus (the database has them)"),
            }
        }
        self.deltas.clear();
        self.consumed_to.clear();
        self.consumed_from.clear();
        self.pending_late = 0;
        self.pending_invalid = 0;
        metrics::counter!("aggregation_windows_flushed_total").increment(report.windows_flushed);
        metrics::histogram!("aggregation_flush_duration_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!(m::WINDOWS_FLUSHED).increment(report.windows_flushed);
        metrics::counter!(m::RECORDS_WRITTEN).increment(report.events_written);
        metrics::histogram!(m::DB_WRITE_LATENCY).record(started.elapsed().as_secs_f64());
        Ok(report)
    }

    /// After a fenced flush: drops what memory holds (the counters back to what is stored) and moves every assigned
    /// partition back to where the database says it was consumed to, so it is all read again.
    async fn rewind(&mut self, sub: &mut dyn weir_runtime::Subscription) -> Result<(), AggregatorError> {
        let stored: HashMap<(String, i32), i64> =
            self.store.consumer_offsets(&self.config.group).await?.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
        for tp in sub.assignment() {
            if let Some(&at) = stored.get(&tp).or(self.consumed_from.get(&tp)) {
                sub.seek(&tp.0, tp.1, at).await?;
            }
        }
        // The event times go back with the records: read again, they must meet the watermark they met the first time
        // (from memory's times they would all be late).
        let (max_event_ms, watermark) = stored_event_times(&self.store).await?;
        self.max_event_ms = max_event_ms;
        {
            let mut s = self.snapshot.lock();
            s.late_events = s.late_events.saturating_sub(self.pending_late);
            s.invalid_events = s.invalid_events.saturating_sub(self.pending_invalid);
            s.watermark_ms = watermark;
        }
        metrics::counter!("aggregation_rewinds_total").increment(1);
        self.deltas.clear();
        self.consumed_to.clear();
        self.consumed_from.clear();
        self.pending_late = 0;
        self.pending_invalid = 0;
        self.positions.forget();
        Ok(())
    }
}
