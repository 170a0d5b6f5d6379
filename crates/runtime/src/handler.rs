//! Handlers and the runner that drives them: what every system does with the records it consumes.
//!
//! A [`Runner`] subscribes a group to topics on any [`Bus`] and hands each record to a handler, keeping the records of
//! one partition in order while partitions run in parallel (bounded). A handler answers `Ok`, a retryable error
//! (retried with exponential backoff and jitter up to `max_attempts`) or a permanent one; a record that still fails
//! goes to a dead-letter topic (`<topic>.dlq`) with headers naming where it came from and why, and its partition moves
//! on, so a poison record never stalls the rest.
//!
//! Three delivery modes:
//! - **at-least-once** ([`Handler`]): offsets are committed to the bus after the batch's handlers succeed; a crash
//!   before the commit redelivers.
//! - **exactly-once on the bus** ([`TransformHandler`], consume-transform-produce): each handler returns the
//!   messages to publish; a fetched batch's outputs (dead letters included) and the group's next offsets are
//!   committed in one bus transaction ([`Subscription::commit_transaction`](crate::bus::Subscription), Kafka's
//!   transactions on either bus), and the subscription reads read_committed. A crash or a failed commit leaves none
//!   of the batch visible and redelivers it; a newer instance with the same transactional id fences this one.
//! - **exactly-once into SQL** ([`SqlHandler`]): per partition and fetched batch, one database transaction holds the
//!   handler's writes and the group's next offset (`weir_consumer_offsets`). The runner resumes from the database's
//!   offsets and skips whatever the bus redelivers below them, so a crash anywhere leaves each effect once. The
//!   offset moves by compare-and-set ([`sql::advance_offset`]): when several instances share the group and a
//!   rebalance hands a partition to another while a batch of it is still in hand, whichever commits second finds
//!   the offset moved and rolls back, so a batch is never applied twice across instances either. With
//!   `dedupe`, event ids (the `weir.event.id` header, or topic-partition-offset) are also recorded in
//!   `weir_processed_events`, so an event published twice is handled once. On SQLite, whose one writer would take
//!   the partitions' transactions one after another anyway, a batch spanning several partitions is first tried in
//!   one transaction (every partition's offset in it): a commit, not one per partition. A handler's failure or a
//!   moved offset rolls it back, and the batch is done again partition by partition as above.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::task::JoinSet;

use crate::bus::{Bus, BusError, Message, OutgoingMessage, StartFrom, SubscribeOptions};
use crate::sql::{self, SqlStore, SqlTx};
use crate::stop::StopSignal;

/// Header carrying an event's stable id (set by the outbox relay; producers may set it too).
pub const EVENT_ID_HEADER: &str = "weir.event.id";

/// Why a handler failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    /// Worth trying again (a timeout, a lock, a service briefly down).
    #[error("{0}")]
    Retryable(String),
    /// Will fail every time (bad data): dead-lettered at once.
    #[error("{0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        HandlerError::Retryable(e.to_string())
    }
}

/// An at-least-once handler.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError>;
}

/// A consume-transform-produce handler: the messages it returns are published with the consumed offset in one bus
/// transaction.
#[async_trait]
pub trait TransformHandler: Send + Sync + 'static {
    async fn handle(&self, message: &Message) -> Result<Vec<OutgoingMessage>, HandlerError>;
}

/// An exactly-once handler: its writes go through `tx`, which commits with the consumed offset.
#[async_trait]
pub trait SqlHandler: Send + Sync + 'static {
    async fn handle(&self, message: &Message, tx: &mut SqlTx) -> Result<(), HandlerError>;

    /// The records of one fetched batch at once (duplicates already skipped), for a handler that writes them in a
    /// few multi-row statements rather than a round trip each: one partition's, or on SQLite (one writer) those of
    /// every partition in the batch, each partition's in order. `None` (the default) has the runner call
    /// [`SqlHandler::handle`] for each. An error redoes the batch partition by partition, then record by record
    /// through `handle`, each in a savepoint, so that a failing record is retried or dead-lettered alone.
    async fn handle_batch(&self, _messages: &[&Message], _tx: &mut SqlTx) -> Option<Result<(), HandlerError>> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("store: {0}")]
    Store(#[from] sql::StoreError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("a handler task panicked: {0}")]
    Panicked(String),
}

/// How a runner behaves.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub group: String,
    pub topics: Vec<String>,
    /// Tries per record before it is dead-lettered (retryable errors only; permanent ones go at once).
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Dead letters go to `<topic><dlq_suffix>`.
    pub dlq_suffix: String,
    /// Partitions handled at the same time.
    pub concurrency: usize,
    /// Records per fetch.
    pub batch_size: usize,
    pub start_from: StartFrom,
    /// Exactly-once mode: also skip event ids already in `weir_processed_events`.
    pub dedupe: bool,
    /// How long a graceful stop may take to finish the batch in hand.
    pub shutdown_deadline: Duration,
    /// Exactly-once mode: notified after each batch's transaction commits, for a task that acts on what the
    /// handlers wrote (it sees the rows then, not while the batch is in hand).
    pub after_commit: Option<Arc<tokio::sync::Notify>>,
}

impl RunnerConfig {
    pub fn new(group: impl Into<String>, topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        RunnerConfig {
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            max_attempts: 5,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            dlq_suffix: DEFAULT_DLQ_SUFFIX.into(),
            concurrency: 8,
            batch_size: 2000,
            start_from: StartFrom::Earliest,
            dedupe: false,
            shutdown_deadline: Duration::from_secs(30),
            after_commit: None,
        }
    }
}

/// What a run did, for tests and the closing log line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub processed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub skipped_duplicates: u64,
    /// Batches rolled back because another consumer of the group had committed past them first (a second instance
    /// that took the partition in a rebalance): their effects are in the database once, by that consumer.
    pub fenced: u64,
}

enum Mode {
    AtLeastOnce(Arc<dyn Handler>),
    ExactlyOnce(Arc<dyn SqlHandler>, SqlStore),
    /// With the transactional id the subscription produces under.
    Transactional(Arc<dyn TransformHandler>, String),
}

impl Clone for Mode {
    fn clone(&self) -> Self {
        match self {
            Mode::AtLeastOnce(h) => Mode::AtLeastOnce(h.clone()),
            Mode::ExactlyOnce(h, s) => Mode::ExactlyOnce(h.clone(), s.clone()),
            Mode::Transactional(h, id) => Mode::Transactional(h.clone(), id.clone()),
        }
    }
}

/// Runs one handler for one group until told to stop.
pub struct Runner {
    bus: Arc<dyn Bus>,
    config: Arc<RunnerConfig>,
    mode: Mode,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("config", &self.config).finish()
    }
}

impl Runner {
    pub fn at_least_once(bus: Arc<dyn Bus>, config: RunnerConfig, handler: impl Handler) -> Runner {
        Runner { bus, config: Arc::new(config), mode: Mode::AtLeastOnce(Arc::new(handler)) }
    }

    pub fn exactly_once(bus: Arc<dyn Bus>, config: RunnerConfig, store: SqlStore, handler: impl SqlHandler) -> Runner {
        Runner { bus, config: Arc::new(config), mode: Mode::ExactlyOnce(Arc::new(handler), store) }
    }

    /// Consume-transform-produce exactly once on the bus: `transactional_id` must be one per instance (a second
    /// runner with the same id fences the first, whose `run` then ends with [`BusError::Fenced`]).
    pub fn transactional(
        bus: Arc<dyn Bus>,
        config: RunnerConfig,
        transactional_id: impl Into<String>,
        handler: impl TransformHandler,
    ) -> Runner {
        Runner { bus, config: Arc::new(config), mode: Mode::Transactional(Arc::new(handler), transactional_id.into()) }
    }

    /// Consumes until `stop` resolves, then finishes the batch in hand (within the shutdown deadline), commits, and
    /// leaves the group.
    pub async fn run(self, stop: impl Future<Output = ()> + Send + 'static) -> Result<RunStats, RunnerError> {
        self.consume(&mut StopSignal::new(stop)).await
    }

    async fn consume(&self, stopped: &mut StopSignal) -> Result<RunStats, RunnerError> {
        let c = &self.config;
        let mut options = SubscribeOptions::new(c.group.clone(), c.topics.clone());
        options.start_from = c.start_from;
        options.max_batch = c.batch_size;
        options.client_id = format!("weir-runner/{}", c.group);
        if let Mode::Transactional(_, id) = &self.mode {
            options.read_committed = true;
            options.transactional_id = Some(id.clone());
        }
        let mut sub = self.bus.subscribe(options).await?;
        let mut stats = RunStats::default();
        let mut positions = StoredPositions::new(&c.group);
        let mut unreachable: Option<()> = None;
        loop {
            let batch = tokio::select! {
                biased;
                _ = stopped.wait() => break,
                b = sub.next_batch(Duration::from_millis(500)) => b,
            };
            let mut batch = match batch {
                Ok(b) => {
                    if unreachable.take().is_some() {
                        tracing::info!(group = %c.group, "the cluster answers again; consuming");
                    }
                    b
                }
                Err(BusError::Rebalanced) => continue,
                // The client reconnects by itself: pause (logged once per outage), keep the subscription.
                Err(BusError::Unavailable(e)) => {
                    if unreachable.replace(()).is_none() {
                        tracing::warn!(group = %c.group, error = %e, "the cluster is unreachable; pausing until it answers");
                    }
                    tokio::select! {
                        _ = stopped.wait() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
                Err(e) => return Err(e.into()),
            };
            if let Mode::ExactlyOnce(_, store) = &self.mode {
                batch = positions.admit(store, &mut *sub, batch).await?;
            }
            if batch.is_empty() {
                continue;
            }
            let by_partition = group_by_partition(batch);
            // A stop arriving mid-batch lets the batch finish, for at most the shutdown deadline; past it the batch
            // is abandoned uncommitted (its transactions roll back) and will be redelivered.
            let mut stop = stopped.receiver();
            let deadline = async move {
                let _ = stop.wait_for(|s| *s).await;
                tokio::time::sleep(c.shutdown_deadline).await;
            };
            let done = tokio::select! {
                done = self.process(by_partition) => done?,
                _ = deadline => {
                    tracing::warn!(group = %c.group, "shutdown deadline passed; the batch in hand will be redelivered");
                    break;
                }
            };
            let mut commits = Vec::with_capacity(done.len());
            // What the batch did counts only once it is committed: a failed transaction redoes it.
            let before = stats.clone();
            let mut outputs = Vec::new();
            let mut firsts = Vec::new();
            for (tp, first, next, s, out) in done {
                outputs.extend(out);
                firsts.push((tp.0.clone(), tp.1, first));
                stats.processed += s.processed;
                stats.retried += s.retried;
                stats.dead_lettered += s.dead_lettered;
                stats.skipped_duplicates += s.skipped_duplicates;
                stats.fenced += s.fenced;
                if s.fenced > 0 {
                    // The database is ahead of what this consumer knew: read it again before the next batch.
                    tracing::info!(group = %c.group, topic = %tp.0, partition = tp.1,
                        "another consumer of the group committed this partition first; its batch here is dropped");
                    positions.forget();
                    continue;
                }
                positions.advance(&tp.0, tp.1, next);
                commits.push((tp.0, tp.1, next));
            }
            if let Mode::Transactional(..) = &self.mode {
                match sub.commit_transaction(outputs, &commits).await {
                    Ok(()) => {}
                    Err(e @ BusError::Fenced(_)) => {
                        tracing::warn!(group = %c.group, "a newer instance with this transactional id took over: {e}");
                        let _ = tokio::time::timeout(c.shutdown_deadline, sub.close()).await;
                        return Err(e.into());
                    }
                    Err(e) => {
                        // Nothing of the batch is visible: consume it again from its start.
                        tracing::warn!(group = %c.group, "the batch's transaction failed, redoing it: {e}");
                        for (t, p, first) in firsts {
                            match sub.seek(&t, p, first).await {
                                Ok(()) | Err(BusError::Rebalanced) => {}
                                Err(e) => return Err(e.into()),
                            }
                        }
                        stats = before;
                    }
                }
            } else if !commits.is_empty() {
                // In exactly-once mode this is only a hint for lag and for other consumers; the database decides.
                match sub.commit_offsets(&commits).await {
                    Ok(()) | Err(BusError::Rebalanced) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let _ = tokio::time::timeout(c.shutdown_deadline, sub.close()).await;
        Ok(stats)
    }

    /// Handles each partition's records in order, partitions in parallel; returns each partition's first and next
    /// offsets, and (transactional mode) the messages to publish.
    async fn process(
        &self,
        by_partition: BTreeMap<(String, i32), Vec<Message>>,
    ) -> Result<Vec<Processed>, RunnerError> {
        if let Mode::ExactlyOnce(handler, store) = &self.mode {
            if store.dialect() == sql::Dialect::Sqlite && by_partition.len() > 1 {
                if let Some(done) = together_exactly_once(&**handler, store, &self.config, &by_partition).await? {
                    return Ok(done);
                }
            }
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(self.config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for (tp, msgs) in by_partition {
            if msgs.is_empty() {
                continue;
            }
            let (mode, config, bus, limit) = (self.mode.clone(), self.config.clone(), self.bus.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let next = msgs.last().map(|m| m.offset + 1).unwrap_or_default();
                let first = msgs.first().map(|m| m.offset).unwrap_or_default();
                let (stats, out) = match mode {
                    Mode::AtLeastOnce(h) => (partition_at_least_once(&*h, &config, &*bus, &msgs).await?, Vec::new()),
                    Mode::ExactlyOnce(h, store) => {
                        (partition_exactly_once(&*h, &store, &config, &*bus, &tp, &msgs, next).await?, Vec::new())
                    }
                    Mode::Transactional(h, _) => partition_transactional(&*h, &config, &msgs).await,
                };
                Ok::<_, RunnerError>((tp, first, next, stats, out))
            });
        }
        let mut out = Vec::new();
        while let Some(r) = tasks.join_next().await {
            out.push(r.map_err(|e| RunnerError::Panicked(e.to_string()))??);
        }
        Ok(out)
    }
}

/// One partition's share of a batch, handled: (topic, partition), its first and next offsets, what it did, and the
/// messages it publishes (transactional mode).
type Processed = ((String, i32), i64, i64, RunStats, Vec<OutgoingMessage>);

/// A batch's records by partition, each partition's in order. A batch holds runs of one partition's records, so a
/// record usually joins the group of the one before it; the topic's name is copied once per partition, not per record.
fn group_by_partition(batch: Vec<Message>) -> BTreeMap<(String, i32), Vec<Message>> {
    let mut groups: Vec<Vec<Message>> = Vec::new();
    for m in batch {
        let same = |g: &Vec<Message>| g[0].partition == m.partition && g[0].topic == m.topic;
        match groups.iter().rposition(same) {
            Some(i) => groups[i].push(m),
            None => groups.push(vec![m]),
        }
    }
    groups.into_iter().map(|g| ((g[0].topic.clone(), g[0].partition), g)).collect()
}

/// Exactly-once bookkeeping for a consumer whose offsets live in the SQL store: on every assignment change it loads
/// the group's offsets from the database, drops redelivered records below them, and seeks back where the bus is ahead
/// of the database (its commit landed, the database's did not). Used by the [`Runner`] and by consumers that commit
/// on their own schedule (a windowed aggregator flushing every minute).
#[derive(Debug, Default)]
pub struct StoredPositions {
    group: String,
    offsets: HashMap<(String, i32), i64>,
    assignment: Vec<(String, i32)>,
}

impl StoredPositions {
    pub fn new(group: &str) -> Self {
        StoredPositions { group: group.to_string(), ..Default::default() }
    }

    /// The records of `batch` not yet reflected in the database, in order.
    pub async fn admit(
        &mut self,
        store: &SqlStore,
        sub: &mut dyn crate::bus::Subscription,
        mut batch: Vec<Message>,
    ) -> Result<Vec<Message>, RunnerError> {
        let mut assignment = sub.assignment();
        assignment.sort();
        if assignment != self.assignment {
            self.offsets =
                store.consumer_offsets(&self.group).await?.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
            self.assignment = assignment;
        }
        // Per partition: drop what the database already has, keep the consecutive run from its offset on, and on a
        // gap (the bus is ahead) drop the rest and seek back.
        let mut expected: HashMap<(String, i32), i64> = HashMap::new();
        let mut rewind: HashMap<(String, i32), i64> = HashMap::new();
        batch.retain(|m| {
            let tp = (m.topic.clone(), m.partition);
            if rewind.contains_key(&tp) {
                return false;
            }
            let Some(&stored) = self.offsets.get(&tp) else { return true };
            let want = *expected.entry(tp.clone()).or_insert(stored);
            if m.offset < want {
                return false;
            }
            if m.offset > want {
                rewind.insert(tp, want);
                return false;
            }
            expected.insert(tp, want + 1);
            true
        });
        for ((t, p), next) in rewind {
            sub.seek(&t, p, next).await?;
        }
        Ok(batch)
    }

    /// Drops what was loaded, so the next [`admit`](Self::admit) reads the database again: after a commit was
    /// fenced ([`sql::advance_offset`] answered false), another consumer has moved the group's offsets.
    pub fn forget(&mut self) {
        self.assignment.clear();
        self.offsets.clear();
    }

    /// Records that the database now holds everything of `topic`/`partition` below `next`.
    pub fn advance(&mut self, topic: &str, partition: i32, next: i64) {
        self.offsets.insert((topic.to_string(), partition), next);
    }
}

fn backoff(config: &RunnerConfig, attempt: u32) -> Duration {
    let exp = config.backoff_initial.saturating_mul(1u32 << attempt.min(20).saturating_sub(1));
    let capped = exp.min(config.backoff_max);
    // Full jitter: a random wait up to the exponential bound, so retrying consumers do not move in lockstep.
    capped.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// Labels for a handler's metrics.
fn labels(config: &RunnerConfig, topic: &str) -> [(&'static str, String); 2] {
    [("group", config.group.clone()), ("topic", topic.to_string())]
}

async fn partition_at_least_once(
    handler: &dyn Handler,
    config: &RunnerConfig,
    bus: &dyn Bus,
    msgs: &[Message],
) -> Result<RunStats, RunnerError> {
    let mut stats = RunStats::default();
    let observer = Observer::new(config, msgs.first().map_or("", |m| m.topic.as_str()));
    for m in msgs {
        let started = Instant::now();
        let mut attempt = 1;
        let mut first_failure = None;
        loop {
            match handler.handle(m).await {
                Ok(()) => break,
                Err(e) => {
                    if retry_or_dead_letter(bus, config, m, &e, &mut attempt, &mut first_failure, &mut stats).await? {
                        continue;
                    }
                    break;
                }
            }
        }
        stats.processed += 1;
        observer.record(started);
    }
    Ok(stats)
}

/// One partition's records through a [`TransformHandler`]: retried like the at-least-once mode, and a record that
/// still fails becomes a dead letter among the outputs, so it is published in the same transaction.
async fn partition_transactional(
    handler: &dyn TransformHandler,
    config: &RunnerConfig,
    msgs: &[Message],
) -> (RunStats, Vec<OutgoingMessage>) {
    let mut stats = RunStats::default();
    let mut out = Vec::new();
    let observer = Observer::new(config, msgs.first().map_or("", |m| m.topic.as_str()));
    for m in msgs {
        let started = Instant::now();
        let mut attempt = 1;
        let first = crate::time::now_ms();
        loop {
            match handler.handle(m).await {
                Ok(messages) => {
                    out.extend(messages);
                    break;
                }
                Err(e) => {
                    metrics::counter!("weir_handler_failed_total", &labels(config, &m.topic)).increment(1);
                    if matches!(e, HandlerError::Retryable(_)) && attempt < config.max_attempts {
                        stats.retried += 1;
                        metrics::counter!("weir_handler_retried_total", &labels(config, &m.topic)).increment(1);
                        tokio::time::sleep(backoff(config, attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    out.push(dead_letter_message(config, m, &e, attempt, first));
                    stats.dead_lettered += 1;
                    break;
                }
            }
        }
        stats.processed += 1;
        observer.record(started);
    }
    (stats, out)
}

async fn partition_exactly_once(
    handler: &dyn SqlHandler,
    store: &SqlStore,
    config: &RunnerConfig,
    bus: &dyn Bus,
    tp: &(String, i32),
    msgs: &[Message],
    next: i64,
) -> Result<RunStats, RunnerError> {
    // Fast path: the whole batch in one transaction, no per-record savepoints (they cost two round trips each on
    // PostgreSQL), duplicates found in one statement, and the records handed over at once where the handler takes
    // batches. Only if a handler fails is the batch redone record by record, each in its own savepoint.
    let mut tx = store.begin().await?;
    let mut stats = RunStats::default();
    let observer = Observer::new(config, &tp.0);
    let fresh: Vec<&Message> = if config.dedupe {
        let ids: Vec<String> = msgs.iter().map(event_id).collect();
        let mut new = sql::first_times(&mut tx, store.dialect(), &config.group, &ids).await?;
        let mut fresh = Vec::with_capacity(msgs.len());
        for (m, id) in msgs.iter().zip(&ids) {
            // A set's membership once: an id twice in the batch is handled at its first.
            if new.remove(id) {
                fresh.push(m);
            } else {
                stats.skipped_duplicates += 1;
            }
        }
        fresh
    } else {
        msgs.iter().collect()
    };
    let started = Instant::now();
    let failed = match handler.handle_batch(&fresh, &mut tx).await {
        Some(Ok(())) => {
            for _ in &fresh {
                observer.record(started);
            }
            stats.processed += fresh.len() as u64;
            false
        }
        Some(Err(_)) => true,
        None => {
            let mut failed = false;
            for m in fresh {
                let started = Instant::now();
                if handler.handle(m, &mut tx).await.is_err() {
                    failed = true;
                    break;
                }
                stats.processed += 1;
                observer.record(started);
            }
            failed
        }
    };
    if !failed {
        return commit_or_fenced(tx, config, tp, msgs, next, stats).await;
    }
    tx.rollback().await?;
    careful_exactly_once(handler, store, config, bus, tp, msgs, next).await
}

/// Every partition's share of a batch in one transaction, for a store with one writer: the handler's writes and
/// every partition's next offset, committed together. `None` when it rolled back (a handler failed, or another
/// consumer of the group moved an offset first): the caller then does the batch partition by partition, where a
/// failing record is retried or dead-lettered alone and a moved offset drops only its partition's share.
async fn together_exactly_once(
    handler: &dyn SqlHandler,
    store: &SqlStore,
    config: &RunnerConfig,
    by_partition: &BTreeMap<(String, i32), Vec<Message>>,
) -> Result<Option<Vec<Processed>>, RunnerError> {
    let mut tx = store.begin().await?;
    let all: Vec<&Message> = by_partition.values().flatten().collect();
    let mut skipped: HashMap<(&str, i32), u64> = HashMap::new();
    let fresh: Vec<&Message> = if config.dedupe {
        let ids: Vec<String> = all.iter().map(|m| event_id(m)).collect();
        let mut new = sql::first_times(&mut tx, store.dialect(), &config.group, &ids).await?;
        let mut fresh = Vec::with_capacity(all.len());
        for (m, id) in all.iter().zip(&ids) {
            if new.remove(id) {
                fresh.push(*m);
            } else {
                *skipped.entry((m.topic.as_str(), m.partition)).or_default() += 1;
            }
        }
        fresh
    } else {
        all
    };
    let started = Instant::now();
    let handled = match handler.handle_batch(&fresh, &mut tx).await {
        Some(result) => result.is_ok(),
        None => {
            let mut ok = true;
            for m in &fresh {
                if handler.handle(m, &mut tx).await.is_err() {
                    ok = false;
                    break;
                }
            }
            ok
        }
    };
    if !handled {
        tx.rollback().await?;
        return Ok(None);
    }
    let mut done = Vec::with_capacity(by_partition.len());
    for (tp, msgs) in by_partition {
        let (Some(first), Some(last)) = (msgs.first(), msgs.last()) else { continue };
        if !sql::advance_offset(&mut tx, &config.group, &tp.0, tp.1, first.offset, last.offset + 1).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let skipped = skipped.get(&(tp.0.as_str(), tp.1)).copied().unwrap_or(0);
        let stats =
            RunStats { processed: msgs.len() as u64 - skipped, skipped_duplicates: skipped, ..RunStats::default() };
        done.push((tp.clone(), first.offset, last.offset + 1, stats, Vec::new()));
    }
    tx.commit().await?;
    for (tp, _, _, stats, _) in &done {
        let observer = Observer::new(config, &tp.0);
        for _ in 0..stats.processed {
            observer.record(started);
        }
    }
    if let Some(notify) = &config.after_commit {
        notify.notify_one();
    }
    Ok(Some(done))
}

/// The batch again, each record's attempts in a savepoint: a failed attempt's partial writes are undone, the others
/// kept, and a record that keeps failing is dead-lettered.
async fn careful_exactly_once(
    handler: &dyn SqlHandler,
    store: &SqlStore,
    config: &RunnerConfig,
    bus: &dyn Bus,
    tp: &(String, i32),
    msgs: &[Message],
    next: i64,
) -> Result<RunStats, RunnerError> {
    let mut stats = RunStats::default();
    let observer = Observer::new(config, &tp.0);
    let mut tx = store.begin().await?;
    for m in msgs {
        let started = Instant::now();
        if config.dedupe && !sql::first_time(&mut tx, &config.group, &event_id(m)).await? {
            stats.skipped_duplicates += 1;
            continue;
        }
        let mut attempt = 1;
        let mut first_failure = None;
        loop {
            sqlx::query("SAVEPOINT weir_record").execute(&mut *tx).await?;
            match handler.handle(m, &mut tx).await {
                Ok(()) => {
                    sqlx::query("RELEASE SAVEPOINT weir_record").execute(&mut *tx).await?;
                    break;
                }
                Err(e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT weir_record").execute(&mut *tx).await?;
                    sqlx::query("RELEASE SAVEPOINT weir_record").execute(&mut *tx).await?;
                    // A dead letter is published before the transaction commits: a crash in between re-sends it,
                    // and its headers name the original record so it can be told apart.
                    if retry_or_dead_letter(bus, config, m, &e, &mut attempt, &mut first_failure, &mut stats).await? {
                        continue;
                    }
                    break;
                }
            }
        }
        stats.processed += 1;
        observer.record(started);
    }
    commit_or_fenced(tx, config, tp, msgs, next, stats).await
}

/// Commits a partition's batch with the group's offset moved past it, unless another consumer of the group moved
/// that offset first: then everything of `tx` is rolled back and `stats` says the batch was fenced.
async fn commit_or_fenced(
    mut tx: SqlTx,
    config: &RunnerConfig,
    tp: &(String, i32),
    msgs: &[Message],
    next: i64,
    stats: RunStats,
) -> Result<RunStats, RunnerError> {
    let from = msgs.first().map_or(next, |m| m.offset);
    if sql::advance_offset(&mut tx, &config.group, &tp.0, tp.1, from, next).await? {
        tx.commit().await?;
        if let Some(notify) = &config.after_commit {
            notify.notify_one();
        }
        return Ok(stats);
    }
    tx.rollback().await?;
    metrics::counter!("weir_runner_fenced_batches_total", &labels(config, &tp.0)).increment(1);
    Ok(RunStats { fenced: 1, ..RunStats::default() })
}

/// After a failed attempt: waits out the backoff and returns true to try again, or dead-letters the record and
/// returns false (a permanent error, or the last attempt).
async fn retry_or_dead_letter(
    bus: &dyn Bus,
    config: &RunnerConfig,
    m: &Message,
    e: &HandlerError,
    attempt: &mut u32,
    first_failure: &mut Option<i64>,
    stats: &mut RunStats,
) -> Result<bool, RunnerError> {
    let first = *first_failure.get_or_insert_with(crate::time::now_ms);
    metrics::counter!("weir_handler_failed_total", &labels(config, &m.topic)).increment(1);
    if matches!(e, HandlerError::Retryable(_)) && *attempt < config.max_attempts {
        stats.retried += 1;
        metrics::counter!("weir_handler_retried_total", &labels(config, &m.topic)).increment(1);
        tokio::time::sleep(backoff(config, *attempt)).await;
        *attempt += 1;
        return Ok(true);
    }
    dead_letter(bus, config, m, e, *attempt, first).await?;
    stats.dead_lettered += 1;
    Ok(false)
}

/// The handler metrics of one partition's records, registered once for the batch: looking a labelled metric up
/// costs an allocation and a hash of its labels, which per record showed in the wedding's profile.
struct Observer {
    processed: metrics::Counter,
    seconds: metrics::Histogram,
}

impl Observer {
    fn new(config: &RunnerConfig, topic: &str) -> Observer {
        let labels = labels(config, topic);
        Observer {
            processed: metrics::counter!("weir_handler_processed_total", &labels),
            seconds: metrics::histogram!("weir_handler_seconds", &labels),
        }
    }

    fn record(&self, started: Instant) {
        self.processed.increment(1);
        self.seconds.record(started.elapsed().as_secs_f64());
    }
}

/// The event's stable id: its `weir.event.id` header, else where it is stored.
pub fn event_id(m: &Message) -> String {
    match m.header(EVENT_ID_HEADER) {
        Some(id) => String::from_utf8_lossy(id).into_owned(),
        None => format!("{}-{}-{}", m.topic, m.partition, m.offset),
    }
}

/// A dead-letter topic is named its origin's name with this, unless a runner sets another (`dlq_suffix`).
pub const DEFAULT_DLQ_SUFFIX: &str = ".dlq";

/// Headers of a dead letter.
pub mod dlq_headers {
    pub const TOPIC: &str = "weir.dlq.topic";
    pub const PARTITION: &str = "weir.dlq.partition";
    pub const OFFSET: &str = "weir.dlq.offset";
    pub const ERROR: &str = "weir.dlq.error";
    pub const ATTEMPTS: &str = "weir.dlq.attempts";
    pub const FIRST_FAILURE_MS: &str = "weir.dlq.first_failure_ms";
    /// What every header above starts with: a replayed copy leaves them behind.
    pub const PREFIX: &str = "weir.dlq.";
    /// On a replayed copy: `<dlq>/<partition>/<offset>` it was replayed from.
    pub const REPLAYED_FROM: &str = "weir.dlq.replayed_from";
}

/// Replaying dead letters (`weir dlq replay`, the web console): what records which letters were sent back.
pub mod dlq_replay {
    /// The group `weir dlq replay` commits under: letters below its offsets were replayed.
    pub const GROUP: &str = "weir-dlq-replay";
    /// A kept topic where each letter replayed one by one (the console) is recorded, keyed `<dlq>/<partition>/
    /// <offset>`, its value `{"dlq", "partition", "offset", "to", "at_ms"}`: neither sends a letter the other sent.
    pub const REPLAYS_TOPIC: &str = "__weir_dlq_replays";
}

async fn dead_letter(
    bus: &dyn Bus,
    config: &RunnerConfig,
    m: &Message,
    e: &HandlerError,
    attempts: u32,
    first_failure_ms: i64,
) -> Result<(), RunnerError> {
    bus.produce(dead_letter_message(config, m, e, attempts, first_failure_ms)).await?;
    Ok(())
}

/// The dead letter of a record that failed for good: its key, value and headers, and headers saying where it came
/// from and why (counted and logged here).
fn dead_letter_message(
    config: &RunnerConfig,
    m: &Message,
    e: &HandlerError,
    attempts: u32,
    first_failure_ms: i64,
) -> OutgoingMessage {
    let topic = format!("{}{}", m.topic, config.dlq_suffix);
    let mut headers = m.headers.clone();
    headers.extend([
        (dlq_headers::TOPIC.to_string(), Bytes::from(m.topic.clone())),
        (dlq_headers::PARTITION.to_string(), Bytes::from(m.partition.to_string())),
        (dlq_headers::OFFSET.to_string(), Bytes::from(m.offset.to_string())),
        (dlq_headers::ERROR.to_string(), Bytes::from(e.to_string())),
        (dlq_headers::ATTEMPTS.to_string(), Bytes::from(attempts.to_string())),
        (dlq_headers::FIRST_FAILURE_MS.to_string(), Bytes::from(first_failure_ms.to_string())),
    ]);
    metrics::counter!("weir_handler_dead_lettered_total", &labels(config, &m.topic)).increment(1);
    tracing::warn!(topic = %m.topic, partition = m.partition, offset = m.offset, error = %e, attempts, "dead-lettered");
    OutgoingMessage {
        topic,
        key: m.key.clone(),
        value: m.value.clone(),
        headers,
        partition: None,
        timestamp: Some(m.timestamp),
    }
}
