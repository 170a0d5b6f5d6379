//! The broker: owns the data directory, the topic registry, the interval flusher, retention and the group coordinator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use weir_log::{Isolation, LogConfig, LogError, ReadResult};

use crate::consumer::{Consumer, ConsumerConfig};
use crate::error::BrokerError;
use crate::group::{GroupConfig, GroupCoordinator, TopicPartition};
use crate::lock::DataDirLock;
use crate::producer::Producer;
use crate::topics::{self, Topic, TopicMeta};
use crate::transactions::TransactionCoordinator;
use crate::validation::{RecordValidator, Validation};

/// How a broker is set up.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// Create a topic on first produce or subscribe, with `default_partitions` partitions.
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    /// Defaults for every topic's log; per-topic settings override them.
    pub log: LogConfig,
    pub group: GroupConfig,
    /// How often retention deletes expired segments (Kafka's `log.retention.check.interval.ms`).
    pub retention_check_interval: Duration,
}

impl BrokerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        BrokerConfig {
            group: GroupConfig { offsets_dir: data_dir.join("groups"), ..GroupConfig::default() },
            data_dir,
            auto_create_topics: true,
            default_partitions: 1,
            log: LogConfig::default(),
            retention_check_interval: Duration::from_secs(300),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig::new("weir-data")
    }
}

/// A topic as `describe` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: Vec<PartitionDescription>,
    /// Every effective setting, as `key=value` pairs.
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
    /// Why the partition is offline, if it is.
    pub offline: Option<String>,
}

/// A consumer group as `groups describe` shows it.
#[derive(Clone, Debug)]
pub struct GroupDetails {
    pub group: String,
    pub state: String,
    pub protocol: String,
    pub generation: i32,
    pub members: Vec<MemberDetails>,
    pub offsets: Vec<PartitionLag>,
}

#[derive(Clone, Debug)]
pub struct MemberDetails {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<(String, Vec<i32>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub log_end_offset: i64,
    pub lag: Option<i64>,
}

/// The broker's state as `/health` reports it.
#[derive(Clone, Debug, Default)]
pub struct BrokerHealth {
    pub topics: usize,
    pub partitions: usize,
    /// Partitions whose log could not be opened: (topic, partition, reason).
    pub offline: Vec<(String, i32, String)>,
    /// Partitions whose latest append failed in the storage (a full disk, an I/O error).
    pub failing_writes: Vec<(String, i32, crate::topics::WriteFailure)>,
    /// Stored batches consumers could not decode and skipped since the process started.
    pub skipped_batches: u64,
}

impl BrokerHealth {
    /// Healthy: nothing offline, no write failing. Skipped batches are reported but do not make it unhealthy: the
    /// consumers went on.
    pub fn ok(&self) -> bool {
        self.offline.is_empty() && self.failing_writes.is_empty()
    }
}

/// The in-process broker. Always shared as `Arc<Broker>`.
#[derive(Debug)]
pub struct Broker {
    pub(crate) config: BrokerConfig,
    pub(crate) topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Bumped on every create and delete, so producers can cache topic lookups and notice when they go stale.
    pub(crate) topics_version: std::sync::atomic::AtomicU64,
    /// Serialises create, delete and the admin changes (`admin.rs`) so two of them cannot race.
    pub(crate) admin: Mutex<()>,
    pub(crate) flusher: weir_log::Flusher,
    groups: Arc<GroupCoordinator>,
    transactions: Arc<TransactionCoordinator>,
    lock: Mutex<Option<DataDirLock>>,
    closed: AtomicBool,
    /// Batches in-process consumers could not decode and skipped (see [`Broker::note_skipped_batch`]).
    skipped_batches: std::sync::atomic::AtomicU64,
    /// Next idempotent-producer id. Seeded from the clock (ms × 1000) so ids stay unique across restarts without a
    /// file, as long as fewer than 1000 are handed out per millisecond on average.
    next_producer_id: std::sync::atomic::AtomicI64,
    /// What checks the records of topics with schema validation on (`validation.rs`); read only for those topics.
    pub(crate) validator: RwLock<Option<Arc<dyn RecordValidator>>>,
}

impl Broker {
    /// Takes the data-dir lock, opens (recovering) every topic, and starts retention and group session tasks.
    /// Must be called inside a tokio runtime.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let topics_dir = config.data_dir.join("topics");
        let dir_err = |source| BrokerError::DataDir { path: topics_dir.clone(), source };
        std::fs::create_dir_all(&topics_dir).map_err(dir_err)?;
        let _ = std::fs::remove_dir_all(config.data_dir.join("trash"));
        let flusher = weir_log::Flusher::start()
            .map_err(|source| BrokerError::DataDir { path: config.data_dir.clone(), source })?;
        let mut topics = BTreeMap::new();
        for entry in std::fs::read_dir(&topics_dir).map_err(dir_err)? {
            let dir = entry.map_err(dir_err)?.path();
            if !dir.is_dir() {
                continue;
            }
            let mut meta = match Topic::read_meta(&dir) {
                Ok(meta) => meta,
                Err(e) => {
                    tracing::error!("skipping topic directory {}: {e}", dir.display());
                    continue;
                }
            };
            if meta.id == 0 {
                // A topic from before topic ids: it gets one now, kept from here on.
                meta.id = topics::new_topic_id();
                if let Err(e) = Topic::write_meta(&dir, &meta) {
                    tracing::error!("cannot record topic {}'s new id: {e}", meta.name);
                }
            }
            let log_config = match topics::effective_config(&config.log, &meta.configs) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("topic {} has an invalid stored config ({e}); using defaults", meta.name);
                    config.log.clone()
                }
            };
            let validation = Validation::of(&meta.configs);
            if let Some(Validation::Broken(e)) = &validation {
                tracing::error!("topic {} has invalid schema validation settings ({e}); it refuses records", meta.name);
            }
            let topic = Topic::open(&dir, meta, log_config, validation, &flusher);
            topics.insert(topic.meta.name.clone(), Arc::new(topic));
        }
        let groups = GroupCoordinator::open(config.group.clone())?;
        let transactions = TransactionCoordinator::open(&config.data_dir.join("transactions")).map_err(|e| {
            BrokerError::DataDir { path: config.data_dir.join("transactions"), source: std::io::Error::other(e) }
        })?;
        let broker = Arc::new(Broker {
            config,
            topics: RwLock::new(topics),
            topics_version: std::sync::atomic::AtomicU64::new(0),
            admin: Mutex::new(()),
            flusher,
            groups,
            transactions,
            lock: Mutex::new(Some(lock)),
            closed: AtomicBool::new(false),
            next_producer_id: std::sync::atomic::AtomicI64::new(weir_log::now_ms() * 1000),
            skipped_batches: std::sync::atomic::AtomicU64::new(0),
            validator: RwLock::new(None),
        });
        tokio::spawn(retention_loop(Arc::downgrade(&broker), broker.config.retention_check_interval));
        broker.transactions.recover(&broker);
        Ok(broker)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    pub fn transactions(&self) -> &Arc<TransactionCoordinator> {
        &self.transactions
    }

    pub(crate) fn check_open(&self) -> Result<(), BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            Err(BrokerError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicDescription, BrokerError> {
        self.check_open()?;
        topics::validate_topic_name(name)?;
        let partitions = topics::validate_partitions(partitions as i64)?;
        let (log_config, validation) = topics::topic_settings(&self.config.log, &configs)?;
        let _admin = self.admin.lock();
        if self.topics.read().contains_key(name) {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let dir = self.config.data_dir.join("topics").join(name);
        let meta = TopicMeta { name: name.to_string(), partitions, configs, id: topics::new_topic_id() };
        Topic::write_meta(&dir, &meta)?;
        let topic = Topic::open(&dir, meta, log_config, validation, &self.flusher);
        self.topics.write().insert(name.to_string(), Arc::new(topic));
        self.topics_version.fetch_add(1, Ordering::AcqRel);
        tracing::info!(topic = name, partitions, "created topic");
        self.describe_topic(name)
    }

    /// Deletes a topic, its data and its groups' committed offsets.
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.check_open()?;
        let _admin = self.admin.lock();
        let topic = self.topics.write().remove(name).ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        self.topics_version.fetch_add(1, Ordering::AcqRel);
        let trash = self.config.data_dir.join("trash");
        let err = |source| BrokerError::DataDir { path: topic.dir.clone(), source };
        std::fs::create_dir_all(&trash).map_err(err)?;
        // Rename first so a crash mid-delete cannot leave a half-deleted topic that reappears on restart.
        let doomed = trash.join(format!("{name}-{}", weir_log::now_ms()));
        std::fs::rename(&topic.dir, &doomed).map_err(err)?;
        let _ = std::fs::remove_dir_all(&doomed);
        self.groups.delete_topic(name);
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    pub(crate) fn topics_version(&self) -> u64 {
        self.topics_version.load(Ordering::Acquire)
    }

    /// The topic with this id (Kafka's topic UUID), if any.
    pub fn topic_by_id(&self, id: u128) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.meta.id == id).cloned()
    }

    pub fn list_topics(&self) -> Vec<String> {
        self.topics.read().keys().cloned().collect()
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.topics.read().get(name).cloned().ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
    }

    /// The topic, created with the default partition count if it is missing and auto-creation is on.
    pub fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        match self.topic(name) {
            Err(BrokerError::UnknownTopic(_)) if self.config.auto_create_topics => {
                match self.create_topic(name, self.config.default_partitions, BTreeMap::new()) {
                    Ok(_) | Err(BrokerError::TopicExists(_)) => self.topic(name),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription, BrokerError> {
        let topic = self.topic(name)?;
        let partitions = topic
            .partitions
            .iter()
            .map(|p| match p.log() {
                Ok(log) => PartitionDescription {
                    partition: p.index,
                    log_start_offset: log.start_offset(),
                    log_end_offset: log.end_offset(),
                    size_bytes: log.size_bytes(),
                    offline: None,
                },
                Err(_) => PartitionDescription {
                    partition: p.index,
                    log_start_offset: -1,
                    log_end_offset: -1,
                    size_bytes: 0,
                    offline: p.offline_reason().map(str::to_string),
                },
            })
            .collect();
        let mut configs: BTreeMap<String, String> = topic.config.to_pairs().into_iter().collect();
        // The schema validation settings with their effective values (the stored ones can only fail to parse if
        // edited by hand: then they are shown as stored), and Redpanda's aliases where the topic uses them.
        if let Ok(v) = crate::validation::TopicValidation::from_settings(&topic.meta.configs) {
            configs.extend(v.to_pairs());
        }
        for (k, v) in &topic.meta.configs {
            if crate::validation::is_setting(k) && !configs.contains_key(k) {
                configs.insert(k.clone(), v.clone());
            }
        }
        Ok(TopicDescription { name: name.to_string(), partitions, configs })
    }

    /// Reads stored batches from one partition (see [`weir_log::Log::read`]).
    pub fn read(&self, topic: &str, partition: i32, offset: i64, max_bytes: usize) -> Result<ReadResult, BrokerError> {
        self.read_isolated(topic, partition, offset, max_bytes, Isolation::ReadUncommitted)
    }

    /// Reads stored batches at an isolation level (see [`weir_log::Log::read_isolated`]).
    pub fn read_isolated(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
    ) -> Result<ReadResult, BrokerError> {
        let t = self.topic(topic)?;
        let log = t.partition(partition)?.log()?;
        log.read_isolated(offset, max_bytes, isolation).map_err(|e| match e {
            LogError::OffsetOutOfRange { offset, log_start, log_end } => {
                BrokerError::OffsetOutOfRange { topic: topic.to_string(), partition, offset, log_start, log_end }
            }
            e => BrokerError::Log(e),
        })
    }

    /// Appends RecordBatch v2 bytes as a client sent them (CRC checked, offsets assigned, stored as sent) and wakes
    /// the partition's consumers. On a topic with schema validation every record is checked first, and one refused
    /// record refuses them all ([`BrokerError::RecordsRefused`]). Blocks for the fsync under `fsync=always`: call it
    /// off the async workers.
    pub fn append_batches(
        &self,
        topic: &str,
        partition: i32,
        bytes: Vec<u8>,
    ) -> Result<weir_log::AppendInfo, BrokerError> {
        self.check_open()?;
        let t = self.topic(topic)?;
        let p = t.partition(partition)?;
        let log = p.log()?;
        let bytes = match self.checker(&t)? {
            None => bytes,
            Some(checker) => checker.check_batches(topic, bytes)?,
        };
        let len = bytes.len() as u64;
        let result = log.append_batches(bytes, false);
        p.note_write(&result);
        let info = result?;
        p.notify_appended();
        p.record_appended((info.last_offset - info.base_offset + 1) as u64, len);
        Ok(info)
    }

    /// Appends a transaction marker (the coordinator's COMMIT or ABORT) to a partition and wakes its consumers: a
    /// read_committed reader's last stable offset may have moved.
    pub fn append_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        marker: weir_log::batch::ControlType,
    ) -> Result<(), BrokerError> {
        self.check_open()?;
        let t = self.topic(topic)?;
        let p = t.partition(partition)?;
        let result = p.log()?.append_marker(producer_id, producer_epoch, marker, 0);
        p.note_write(&result);
        result?;
        p.notify_appended();
        Ok(())
    }

    /// Counts records and bytes handed to a consumer (`weir_records_consumed_total`, `weir_bytes_consumed_total`):
    /// the Kafka listener calls it with the batches it serves, the in-process consumer with what it decoded.
    pub fn record_consumed(&self, topic: &str, records: u64, bytes: u64) {
        metrics::counter!("weir_records_consumed_total", "topic" => topic.to_string()).increment(records);
        metrics::counter!("weir_bytes_consumed_total", "topic" => topic.to_string()).increment(bytes);
    }

    /// Records that a consumer skipped a stored batch it could not decode (`weir_consumer_skipped_batches_total`),
    /// logging it: the records are lost to that consumer, which is better than a group stuck on them forever.
    pub fn note_skipped_batch(&self, topic: &str, partition: i32, offsets: (i64, i64), reason: &str) {
        self.skipped_batches.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("weir_consumer_skipped_batches_total", "topic" => topic.to_string()).increment(1);
        tracing::error!(
            topic,
            partition,
            "skipping the undecodable batch at offsets {}..={}: {reason}",
            offsets.0,
            offsets.1
        );
    }

    /// What `/health` reports: partitions offline or failing writes, and batches consumers had to skip.
    pub fn health(&self) -> BrokerHealth {
        let mut h =
            BrokerHealth { skipped_batches: self.skipped_batches.load(Ordering::Relaxed), ..Default::default() };
        for topic in self.topics.read().values() {
            for p in &topic.partitions {
                h.partitions += 1;
                if let Some(reason) = p.offline_reason() {
                    h.offline.push((topic.meta.name.clone(), p.index, reason.to_string()));
                }
                if let Some(f) = p.write_failure() {
                    h.failing_writes.push((topic.meta.name.clone(), p.index, f));
                }
            }
        }
        h.topics = self.topics.read().len();
        h
    }

    /// A fresh producer id for an idempotent producer (Kafka's InitProducerId).
    pub fn allocate_producer_id(&self) -> i64 {
        self.next_producer_id.fetch_add(1, Ordering::AcqRel)
    }

    pub fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), BrokerError> {
        let t = self.topic(topic)?;
        let log = t.partition(partition)?.log()?;
        Ok((log.start_offset(), log.end_offset()))
    }

    /// The partition's last stable offset: below it every transaction is decided.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Result<i64, BrokerError> {
        Ok(self.topic(topic)?.partition(partition)?.log()?.last_stable_offset())
    }

    pub fn offset_for_timestamp(&self, topic: &str, partition: i32, ts_ms: i64) -> Result<Option<i64>, BrokerError> {
        let t = self.topic(topic)?;
        Ok(t.partition(partition)?.log()?.offset_for_timestamp(ts_ms)?)
    }

    pub fn producer(self: &Arc<Self>) -> Producer {
        Producer::new(self.clone())
    }

    pub fn consumer(self: &Arc<Self>, config: ConsumerConfig) -> Result<Consumer, BrokerError> {
        self.check_open()?;
        Consumer::new(self.clone(), config)
    }

    pub fn list_groups(&self) -> Vec<String> {
        let mut g: Vec<String> = self.groups.list_groups().into_iter().map(|g| g.group_id).collect();
        g.sort();
        g.dedup();
        g
    }

    /// Members, assignments, committed offsets and lag of a group.
    pub fn describe_group(&self, group: &str) -> Result<GroupDetails, BrokerError> {
        let d = self.groups.describe_group(group);
        let committed = self.groups.fetch_offsets(group, None);
        if d.members.is_empty() && committed.is_empty() && !self.list_groups().iter().any(|g| g == group) {
            return Err(BrokerError::Group(crate::group::GroupError::GroupIdNotFound(group.to_string())));
        }
        let members = d
            .members
            .iter()
            .map(|m| MemberDetails {
                member_id: m.member_id.clone(),
                client_id: m.client_id.clone(),
                host: m.client_host.clone(),
                assignment: crate::group::consumer_protocol::decode_assignment(&m.assignment)
                    .map(|a| a.partitions.into_iter().collect())
                    .unwrap_or_default(),
            })
            .collect::<Vec<_>>();
        // Lag for every partition the group has committed to or is assigned.
        let mut parts: BTreeMap<TopicPartition, Option<i64>> = BTreeMap::new();
        for (tp, om) in committed {
            parts.insert(tp, om.map(|o| o.offset));
        }
        for m in &members {
            for (topic, ps) in &m.assignment {
                for &p in ps {
                    parts.entry(TopicPartition { topic: topic.clone(), partition: p }).or_insert(None);
                }
            }
        }
        let offsets = parts
            .into_iter()
            .map(|(tp, committed)| {
                let end = self.offsets(&tp.topic, tp.partition).map(|(_, e)| e).unwrap_or(-1);
                PartitionLag {
                    lag: committed.filter(|_| end >= 0).map(|c| (end - c).max(0)),
                    topic: tp.topic,
                    partition: tp.partition,
                    committed,
                    log_end_offset: end,
                }
            })
            .collect();
        Ok(GroupDetails {
            group: group.to_string(),
            state: d.state.to_string(),
            protocol: d.protocol.clone(),
            generation: d.generation,
            members,
            offsets,
        })
    }

    /// Flushes and closes every log cleanly and releases the data directory.
    pub fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.transactions.shutdown();
        self.groups.shutdown();
        for topic in self.topics.read().values() {
            topic.close();
        }
        self.lock.lock().take();
    }

    pub(crate) fn retention_pass(&self) {
        let now = weir_log::now_ms();
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        for topic in topics {
            for p in topic.partitions() {
                if let Ok(log) = p.log() {
                    match log.enforce_retention(now) {
                        Ok(o) if o.segments_deleted > 0 => tracing::info!(
                            topic = topic.name(),
                            partition = p.index,
                            segments = o.segments_deleted,
                            bytes = o.bytes_deleted,
                            "retention deleted segments"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::error!(topic = topic.name(), partition = p.index, "retention failed: {e}"),
                    }
                }
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn retention_loop(broker: Weak<Broker>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(b) = broker.upgrade() else { return };
        if b.closed.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || b.retention_pass()).await;
    }
}
