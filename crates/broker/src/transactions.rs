//! The transaction coordinator (Kafka's KIP-98, as Kafka 3.x clients use it): transactional ids mapped to producer
//! ids and epochs, the partitions and groups each open transaction touches, the offsets it will commit, and the
//! two-phase end — the decision written durably first, then a COMMIT or ABORT marker on every partition of the
//! transaction, then the offsets, then the transaction marked complete.
//!
//! The coordinator's state is a log of its own (`transactions/` in the data directory, like Kafka's
//! `__transaction_state`): every change a client relies on is appended and fsynced before it is acknowledged, and
//! opening replays it (the latest record per transactional id wins). A transaction found prepared is completed on
//! open; one found open is aborted once its `transaction.timeout.ms` has passed, as while running. Aborting on a
//! timeout or a new producer's InitProducerId bumps the epoch, so the old producer is fenced everywhere: its markers
//! carry the new epoch and every partition of the transaction refuses the old one from then on.
//!
//! One broker is the coordinator of every transactional id, so FindCoordinator always answers with this broker.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weir_log::batch::ControlType;
use weir_log::{FsyncPolicy, Log, LogConfig, Record};

use crate::broker::Broker;
use crate::group::{OffsetAndMetadata, TopicPartition};
use crate::kafka_code;

/// The longest `transaction.timeout.ms` a producer may ask for (Kafka's `transaction.max.timeout.ms`).
pub const MAX_TRANSACTION_TIMEOUT_MS: i32 = 900_000;

/// Where a transactional id's current transaction stands (Kafka's `TransactionState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// The name Kafka's tools show (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    fn prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// An offset a transaction commits for a group when it commits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: String,
}

/// One transactional id's state, as stored in the coordinator's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions the current transaction wrote to (or may have).
    pub partitions: BTreeSet<(String, i32)>,
    /// The groups whose offsets it commits.
    pub groups: BTreeSet<String>,
    /// Offsets sent with TxnOffsetCommit; stored with the decision so a prepared commit can apply them after a crash.
    pub offsets: Vec<PendingOffset>,
    /// When the current transaction started (its first partition or group), ms since the epoch; -1 if none.
    pub started_ms: i64,
    pub updated_ms: i64,
}

/// Why a transactional request was refused, with the Kafka error code each maps to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("transactional id {0:?} has no producer id: call InitProducerId first")]
    InvalidProducerIdMapping(String),
    #[error(
        "producer epoch {epoch} of {transactional_id:?} is fenced by epoch {current} (a newer producer took over)"
    )]
    ProducerFenced { transactional_id: String, epoch: i16, current: i16 },
    #[error("transaction.timeout.ms {0} is outside 1..={MAX_TRANSACTION_TIMEOUT_MS}")]
    InvalidTimeout(i32),
    #[error("{0}")]
    InvalidTxnState(String),
    #[error("the previous transaction of {0:?} is still completing; retry")]
    Concurrent(String),
    #[error("unknown transactional id {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Storage(String),
    #[error("the transaction coordinator is shutting down")]
    ShuttingDown,
}

impl TxnError {
    pub fn kafka_error_code(&self) -> i16 {
        use kafka_code::*;
        match self {
            TxnError::InvalidProducerIdMapping(_) => INVALID_PRODUCER_ID_MAPPING,
            TxnError::ProducerFenced { .. } => PRODUCER_FENCED,
            TxnError::InvalidTimeout(_) => INVALID_TRANSACTION_TIMEOUT,
            TxnError::InvalidTxnState(_) => INVALID_TXN_STATE,
            TxnError::Concurrent(_) => CONCURRENT_TRANSACTIONS,
            TxnError::NotFound(_) => TRANSACTIONAL_ID_NOT_FOUND,
            TxnError::Storage(_) => KAFKA_STORAGE_ERROR,
            TxnError::ShuttingDown => COORDINATOR_NOT_AVAILABLE,
        }
    }
}

/// A producer id and epoch handed to a transactional producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdAndEpoch {
    pub producer_id: i64,
    pub epoch: i16,
}

/// The coordinator of every transactional id of the broker. Shared as `Arc<TransactionCoordinator>`.
#[derive(Debug)]
pub struct TransactionCoordinator {
    log: Arc<Log>,
    /// Each id's state behind a lock of its own, so transactions of different ids proceed side by side; the map's
    /// lock is held only to find or insert an entry.
    txns: Mutex<HashMap<String, Arc<Mutex<TxnMeta>>>>,
    stopped: AtomicBool,
}

impl TransactionCoordinator {
    /// Opens (replaying) the coordinator's log in `dir`. Prepared transactions are completed by the broker once
    /// its topics are open ([`TransactionCoordinator::recover`]).
    pub(crate) fn open(dir: &Path) -> Result<Arc<TransactionCoordinator>, TxnError> {
        let storage = |e: weir_log::LogError| TxnError::Storage(format!("transaction log {}: {e}", dir.display()));
        let config = LogConfig { fsync: FsyncPolicy::Always, ..LogConfig::default() };
        let log = Log::open(dir, config).map_err(storage)?;
        let mut latest: HashMap<String, TxnMeta> = HashMap::new();
        let mut offset = log.start_offset();
        while offset < log.end_offset() {
            let read = log.read(offset, 4 << 20).map_err(storage)?;
            let records = read.records(offset).map_err(storage)?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for r in records {
                let Some(value) = r.value else { continue };
                match serde_json::from_slice::<TxnMeta>(&value) {
                    Ok(meta) => {
                        latest.insert(meta.transactional_id.clone(), meta);
                    }
                    Err(e) => tracing::error!("skipping an unreadable transaction record at offset {}: {e}", r.offset),
                }
            }
        }
        let txns = latest.into_iter().map(|(id, meta)| (id, Arc::new(Mutex::new(meta)))).collect();
        Ok(Arc::new(TransactionCoordinator { log, txns: Mutex::new(txns), stopped: AtomicBool::new(false) }))
    }

    /// Completes the transactions the log shows prepared (a crash came between the decision and its markers), and
    /// starts the task that aborts transactions open past their timeout.
    pub(crate) fn recover(self: &Arc<Self>, broker: &Arc<Broker>) {
        for entry in self.entries() {
            let mut meta = entry.lock();
            if meta.state.prepared() {
                let commit = meta.state == TxnState::PrepareCommit;
                tracing::info!(transactional_id = %meta.transactional_id, commit, "completing a prepared transaction");
                if let Err(e) = self.finish(broker, &mut meta, commit) {
                    tracing::error!(transactional_id = %meta.transactional_id, "cannot complete the transaction yet: {e}");
                }
            }
        }
        tokio::spawn(expiry_loop(Arc::downgrade(self), Arc::downgrade(broker)));
    }

    pub(crate) fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Err(e) = self.log.close() {
            tracing::error!("closing the transaction log: {e}");
        }
    }

    fn check_running(&self) -> Result<(), TxnError> {
        if self.stopped.load(Ordering::Acquire) {
            Err(TxnError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    fn entries(&self) -> Vec<Arc<Mutex<TxnMeta>>> {
        self.txns.lock().values().cloned().collect()
    }

    fn entry(&self, transactional_id: &str) -> Option<Arc<Mutex<TxnMeta>>> {
        self.txns.lock().get(transactional_id).cloned()
    }

    /// Appends the state and waits for the fsync: nothing is acknowledged before it is durable.
    fn persist(&self, meta: &mut TxnMeta) -> Result<(), TxnError> {
        meta.updated_ms = weir_log::now_ms();
        let value = serde_json::to_vec(meta).map_err(|e| TxnError::Storage(e.to_string()))?;
        let record = Record {
            key: Some(meta.transactional_id.clone().into_bytes().into()),
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        };
        self.log.append(&[record]).map_err(|e| TxnError::Storage(format!("transaction log: {e}")))?;
        Ok(())
    }

    /// InitProducerId with a transactional id: a producer id for a new id; for a known one, its open transaction
    /// aborted and the epoch bumped, which fences every earlier producer of the id. A producer re-initialising
    /// itself passes its current id and epoch (KIP-360); anything older is fenced.
    pub fn init_producer_id(
        &self,
        broker: &Broker,
        transactional_id: &str,
        timeout_ms: i32,
        current: Option<ProducerIdAndEpoch>,
    ) -> Result<ProducerIdAndEpoch, TxnError> {
        self.check_running()?;
        if transactional_id.is_empty() {
            return Err(TxnError::InvalidTxnState("an empty transactional id".into()));
        }
        if !(1..=MAX_TRANSACTION_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(TxnError::InvalidTimeout(timeout_ms));
        }
        let entry = {
            let mut txns = self.txns.lock();
            txns.entry(transactional_id.to_string())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(TxnMeta {
                        transactional_id: transactional_id.to_string(),
                        producer_id: -1,
                        producer_epoch: -1,
                        timeout_ms,
                        state: TxnState::Empty,
                        partitions: BTreeSet::new(),
                        groups: BTreeSet::new(),
                        offsets: Vec::new(),
                        started_ms: -1,
                        updated_ms: -1,
                    }))
                })
                .clone()
        };
        let mut meta = entry.lock();
        if let Some(c) = current {
            if meta.producer_id >= 0 && (c.producer_id != meta.producer_id || c.epoch != meta.producer_epoch) {
                return Err(TxnError::ProducerFenced {
                    transactional_id: transactional_id.to_string(),
                    epoch: c.epoch,
                    current: meta.producer_epoch,
                });
            }
        }
        if meta.state.prepared() {
            // Completed synchronously by EndTxn; only a failed marker write leaves one here. Try again now.
            let commit = meta.state == TxnState::PrepareCommit;
            self.finish(broker, &mut meta, commit).map_err(|_| TxnError::Concurrent(transactional_id.to_string()))?;
        }
        if meta.state == TxnState::Ongoing {
            // A new producer takes over: the old one's transaction is aborted under a bumped epoch.
            bump_epoch(&mut meta, broker);
            self.abort_in_place(broker, &mut meta)?;
        }
        bump_epoch(&mut meta, broker);
        meta.timeout_ms = timeout_ms;
        meta.state = TxnState::Empty;
        meta.partitions.clear();
        meta.groups.clear();
        meta.offsets.clear();
        meta.started_ms = -1;
        self.persist(&mut meta)?;
        Ok(ProducerIdAndEpoch { producer_id: meta.producer_id, epoch: meta.producer_epoch })
    }

    /// The entry of a transactional id for a request from producer `producer_id` at `epoch`, checked.
    fn checked(&self, transactional_id: &str, producer_id: i64, epoch: i16) -> Result<Arc<Mutex<TxnMeta>>, TxnError> {
        self.check_running()?;
        let entry =
            self.entry(transactional_id).ok_or_else(|| TxnError::InvalidProducerIdMapping(transactional_id.into()))?;
        let meta = entry.lock();
        check_producer(&meta, producer_id, epoch)?;
        drop(meta);
        Ok(entry)
    }

    /// AddPartitionsToTxn: the partitions join the transaction (starting it if none is open), durably, before the
    /// producer writes to them. `partitions` must exist (the caller checks).
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), TxnError> {
        let entry = self.checked(transactional_id, producer_id, epoch)?;
        let mut meta = entry.lock();
        check_producer(&meta, producer_id, epoch)?;
        let new: Vec<&(String, i32)> = partitions.iter().filter(|p| !meta.partitions.contains(*p)).collect();
        if new.is_empty() && meta.state == TxnState::Ongoing {
            return Ok(());
        }
        begin(&mut meta)?;
        meta.partitions.extend(new.into_iter().cloned());
        self.persist(&mut meta)
    }

    /// AddOffsetsToTxn: the group's offsets will be committed with the transaction.
    pub fn add_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), TxnError> {
        let entry = self.checked(transactional_id, producer_id, epoch)?;
        let mut meta = entry.lock();
        check_producer(&meta, producer_id, epoch)?;
        if meta.state == TxnState::Ongoing && meta.groups.contains(group) {
            return Ok(());
        }
        begin(&mut meta)?;
        meta.groups.insert(group.to_string());
        self.persist(&mut meta)
    }

    /// TxnOffsetCommit: offsets held with the transaction until it ends; applied to the group only if it commits.
    pub fn commit_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Result<(), TxnError> {
        let entry = self.checked(transactional_id, producer_id, epoch)?;
        let mut meta = entry.lock();
        check_producer(&meta, producer_id, epoch)?;
        if meta.state != TxnState::Ongoing || !meta.groups.contains(group) {
            return Err(TxnError::InvalidTxnState(format!(
                "TxnOffsetCommit for group {group:?} before AddOffsetsToTxn added it to the transaction"
            )));
        }
        for (tp, om) in offsets {
            meta.offsets.retain(|o| !(o.group == group && o.topic == tp.topic && o.partition == tp.partition));
            meta.offsets.push(PendingOffset {
                group: group.to_string(),
                topic: tp.topic,
                partition: tp.partition,
                offset: om.offset,
                metadata: om.metadata,
            });
        }
        Ok(())
    }

    /// Whether a transaction not yet complete holds offsets for the group's partition (OffsetFetch with
    /// `require_stable` then answers UNSTABLE_OFFSET_COMMIT, so the consumer waits for the decision).
    pub fn has_pending_offsets(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.entries().iter().any(|e| {
            let m = e.lock();
            m.offsets.iter().any(|o| o.group == group && o.topic == topic && o.partition == partition)
        })
    }

    /// EndTxn: commits or aborts the open transaction. Returns once the decision is durable, every partition has
    /// its marker, and (on commit) the offsets are stored. A retried EndTxn of a completed transaction succeeds.
    pub fn end_transaction(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), TxnError> {
        let entry = self.checked(transactional_id, producer_id, epoch)?;
        let mut meta = entry.lock();
        check_producer(&meta, producer_id, epoch)?;
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => {}
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => return Ok(()),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {}
            (state, _) => {
                let verb = if commit { "commit" } else { "abort" };
                return Err(TxnError::InvalidTxnState(format!(
                    "cannot {verb}: the transaction of {transactional_id:?} is {}",
                    state.name()
                )));
            }
        }
        if !commit {
            return self.abort_in_place(broker, &mut meta);
        }
        meta.state = TxnState::PrepareCommit;
        self.persist(&mut meta)?;
        self.finish(broker, &mut meta, true)
    }

    /// Writes the abort decision, the markers, and the completion.
    fn abort_in_place(&self, broker: &Broker, meta: &mut TxnMeta) -> Result<(), TxnError> {
        meta.state = TxnState::PrepareAbort;
        meta.offsets.clear();
        self.persist(meta)?;
        self.finish(broker, meta, false)
    }

    /// From a prepared state: every partition's marker, the offsets (on commit), then complete. A marker that
    /// cannot be written leaves the transaction prepared, to be finished by the expiry task or the next restart.
    fn finish(&self, broker: &Broker, meta: &mut TxnMeta, commit: bool) -> Result<(), TxnError> {
        let marker = if commit { ControlType::Commit } else { ControlType::Abort };
        for (topic, partition) in &meta.partitions {
            match broker.append_marker(topic, *partition, meta.producer_id, meta.producer_epoch, marker) {
                Ok(()) => {}
                // A topic deleted since holds nothing to mark.
                Err(crate::BrokerError::UnknownTopic(_) | crate::BrokerError::UnknownPartition { .. }) => {}
                Err(e) => return Err(TxnError::Storage(format!("marker for {topic}-{partition}: {e}"))),
            }
        }
        if commit {
            let mut by_group: BTreeMap<&str, Vec<(TopicPartition, OffsetAndMetadata)>> = BTreeMap::new();
            let now = weir_log::now_ms();
            for o in &meta.offsets {
                by_group.entry(&o.group).or_default().push((
                    TopicPartition::new(o.topic.clone(), o.partition),
                    OffsetAndMetadata { offset: o.offset, metadata: o.metadata.clone(), commit_timestamp_ms: now },
                ));
            }
            for (group, offsets) in by_group {
                broker
                    .groups()
                    .commit_transactional_offsets(group, offsets)
                    .map_err(|e| TxnError::Storage(format!("offsets of group {group}: {e}")))?;
            }
        }
        meta.state = if commit { TxnState::CompleteCommit } else { TxnState::CompleteAbort };
        meta.partitions.clear();
        meta.groups.clear();
        meta.offsets.clear();
        self.persist(meta)
    }

    /// Aborts, under a bumped epoch, every transaction open longer than its timeout, and retries prepared ones
    /// whose markers could not be written.
    fn expire(&self, broker: &Broker) {
        let now = weir_log::now_ms();
        for entry in self.entries() {
            let mut meta = entry.lock();
            let result = match meta.state {
                TxnState::Ongoing if meta.started_ms >= 0 && now - meta.started_ms > meta.timeout_ms as i64 => {
                    tracing::info!(
                        transactional_id = %meta.transactional_id,
                        timeout_ms = meta.timeout_ms,
                        "aborting a transaction open past its timeout"
                    );
                    bump_epoch(&mut meta, broker);
                    self.abort_in_place(broker, &mut meta)
                }
                TxnState::PrepareCommit => self.finish(broker, &mut meta, true),
                TxnState::PrepareAbort => self.finish(broker, &mut meta, false),
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::error!(transactional_id = %meta.transactional_id, "cannot end the transaction yet: {e}");
            }
        }
    }

    /// DescribeTransactions: the state of one transactional id.
    pub fn describe(&self, transactional_id: &str) -> Result<TxnMeta, TxnError> {
        let entry = self.entry(transactional_id).ok_or_else(|| TxnError::NotFound(transactional_id.to_string()))?;
        let meta = entry.lock().clone();
        Ok(meta)
    }

    /// ListTransactions: every transactional id, in id order.
    pub fn list(&self) -> Vec<TxnMeta> {
        let mut all: Vec<TxnMeta> = self.entries().iter().map(|e| e.lock().clone()).collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }
}

fn check_producer(meta: &TxnMeta, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
    if meta.producer_id != producer_id {
        return Err(TxnError::InvalidProducerIdMapping(meta.transactional_id.clone()));
    }
    if epoch != meta.producer_epoch {
        return Err(TxnError::ProducerFenced {
            transactional_id: meta.transactional_id.clone(),
            epoch,
            current: meta.producer_epoch,
        });
    }
    Ok(())
}

/// Starts a transaction if none is open; refuses while the previous one is still completing.
fn begin(meta: &mut TxnMeta) -> Result<(), TxnError> {
    match meta.state {
        TxnState::Ongoing => Ok(()),
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(TxnError::Concurrent(meta.transactional_id.clone())),
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            meta.state = TxnState::Ongoing;
            meta.partitions.clear();
            meta.groups.clear();
            meta.offsets.clear();
            meta.started_ms = weir_log::now_ms();
            Ok(())
        }
    }
}

/// The next epoch of the id's producer, or a new producer id when the epoch would run out (as Kafka does).
fn bump_epoch(meta: &mut TxnMeta, broker: &Broker) {
    if meta.producer_id < 0 || meta.producer_epoch >= i16::MAX - 1 {
        meta.producer_id = broker.allocate_producer_id();
        meta.producer_epoch = 0;
    } else {
        meta.producer_epoch += 1;
    }
}

/// How often open transactions are checked against their timeouts (Kafka's
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s there; finer here as it costs nothing).
const EXPIRY_INTERVAL: Duration = Duration::from_millis(500);

async fn expiry_loop(coordinator: Weak<TransactionCoordinator>, broker: Weak<Broker>) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        tick.tick().await;
        let (Some(c), Some(b)) = (coordinator.upgrade(), broker.upgrade()) else { return };
        if c.stopped.load(Ordering::Acquire) {
            return;
        }
        // Marker writes block (fsync): off the async workers.
        let _ = tokio::task::spawn_blocking(move || c.expire(&b)).await;
    }
}
