//! Topics and their partitions: the registry persisted as `<data-dir>/topics/<name>/topic.json`, with one
//! [`weir_log::Log`] per partition in `<data-dir>/topics/<name>/<partition>/`.
//!
//! A partition whose log cannot be opened (corruption in a sealed segment, an I/O error) is kept *offline* with the
//! reason; the topic's other partitions, and every other topic, keep serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use weir_log::{Log, LogConfig};

use crate::error::BrokerError;
use crate::validation::{self, TopicValidation, Validation};

pub(crate) const META_FILE: &str = "topic.json";

/// What `topic.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct TopicMeta {
    pub name: String,
    pub partitions: i32,
    /// Only the settings given at creation; the rest come from the broker's defaults.
    pub configs: BTreeMap<String, String>,
    /// The topic's id (Kafka's topic UUID, as clients see it in Metadata and KIP-848 assignments); given to topics
    /// created before ids existed when they are next opened.
    #[serde(default)]
    pub id: u128,
}

/// A new random topic id (a version-4 UUID, never zero).
pub(crate) fn new_topic_id() -> u128 {
    let bits = rand::random::<u128>();
    (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62)
}

/// Kafka's rule for topic names.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BrokerError::InvalidTopicName(name.to_string()))
    }
}

pub fn validate_partitions(n: i64) -> Result<i32, BrokerError> {
    if (1..=100_000).contains(&n) {
        Ok(n as i32)
    } else {
        Err(BrokerError::InvalidPartitions(n))
    }
}

/// Applies per-topic settings on top of the broker's defaults. The schema validation settings are the broker's own
/// (see [`crate::validation`]), not the log's: they are skipped here and read by [`Validation::of`].
pub(crate) fn effective_config(
    defaults: &LogConfig,
    configs: &BTreeMap<String, String>,
) -> Result<LogConfig, BrokerError> {
    let mut c = defaults.clone();
    for (k, v) in configs {
        if validation::is_setting(k) {
            continue;
        }
        if !weir_log::CONFIG_KEYS.contains(&k.as_str()) {
            return Err(unknown_setting(k));
        }
        c.set(k, v).map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
    }
    Ok(c)
}

/// A topic's settings checked whole: the log's config and the schema validation (`None`: nothing validated).
pub(crate) fn topic_settings(
    defaults: &LogConfig,
    configs: &BTreeMap<String, String>,
) -> Result<(LogConfig, Option<Validation>), BrokerError> {
    let log = effective_config(defaults, configs)?;
    let validation = TopicValidation::from_settings(configs)?;
    Ok((log, validation.is_on().then_some(Validation::On(validation))))
}

/// Whether `key` names a topic setting, the log's or the broker's.
pub(crate) fn is_topic_setting(key: &str) -> bool {
    weir_log::CONFIG_KEYS.contains(&key) || validation::is_setting(key)
}

pub(crate) fn unknown_setting(key: &str) -> BrokerError {
    BrokerError::InvalidConfig(format!(
        "unknown topic setting {key:?} (known: {}, {})",
        weir_log::CONFIG_KEYS.join(", "),
        validation::SETTING_KEYS.join(", ")
    ))
}

/// Why writes to a partition are failing: the error of the latest failed append, since when, how many failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteFailure {
    pub error: String,
    pub since_ms: i64,
    pub failures: u64,
}

/// One partition: its log (or why it is offline), the consumers waiting for it to grow, and whether writes to it are
/// failing (a full disk, an I/O error), so `/health` can say so while it lasts.
#[derive(Debug)]
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    log: Result<Arc<Log>, String>,
    waiters: Mutex<Vec<Weak<Notify>>>,
    /// Set while appends fail; `failing` lets the common case (no failure) skip the lock.
    failing: std::sync::atomic::AtomicBool,
    write_failure: Mutex<Option<WriteFailure>>,
}

impl Partition {
    pub(crate) fn new(topic: Arc<str>, index: i32, log: Result<Arc<Log>, String>) -> Partition {
        Partition {
            topic,
            index,
            log,
            waiters: Mutex::new(Vec::new()),
            failing: std::sync::atomic::AtomicBool::new(false),
            write_failure: Mutex::new(None),
        }
    }

    /// Notes the outcome of an append. A failure of the storage itself (not a client's bad batch) is logged when
    /// writes start failing and again when they succeed, not once per failed request.
    pub(crate) fn note_write<T>(&self, result: &Result<T, weir_log::LogError>) {
        use std::sync::atomic::Ordering;
        match result {
            Ok(_) => {
                if self.failing.load(Ordering::Acquire) {
                    if let Some(f) = self.write_failure.lock().take() {
                        tracing::warn!(
                            topic = %self.topic,
                            partition = self.index,
                            "writes succeed again after {} failed since {} ms ago",
                            f.failures,
                            weir_log::now_ms() - f.since_ms
                        );
                    }
                    self.failing.store(false, Ordering::Release);
                }
            }
            Err(e @ (weir_log::LogError::Io { .. } | weir_log::LogError::Corrupt { .. })) => {
                let mut slot = self.write_failure.lock();
                match slot.as_mut() {
                    Some(f) => {
                        f.failures += 1;
                        f.error = e.to_string();
                    }
                    None => {
                        tracing::error!(
                            topic = %self.topic,
                            partition = self.index,
                            "writes fail: {e}; producers get a storage error until this clears"
                        );
                        *slot = Some(WriteFailure { error: e.to_string(), since_ms: weir_log::now_ms(), failures: 1 });
                    }
                }
                self.failing.store(true, std::sync::atomic::Ordering::Release);
            }
            Err(_) => {} // the client's batch was refused; the storage is fine
        }
    }

    /// Why writes to this partition are failing, while they are.
    pub fn write_failure(&self) -> Option<WriteFailure> {
        if !self.failing.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.write_failure.lock().clone()
    }

    /// Counts an append in the process's metrics (`weir_records_produced_total`, `weir_bytes_produced_total`).
    pub(crate) fn record_appended(&self, records: u64, bytes: u64) {
        metrics::counter!("weir_records_produced_total", "topic" => self.topic.to_string()).increment(records);
        metrics::counter!("weir_bytes_produced_total", "topic" => self.topic.to_string()).increment(bytes);
    }

    pub fn log(&self) -> Result<&Arc<Log>, BrokerError> {
        self.log.as_ref().map_err(|reason| BrokerError::PartitionOffline {
            topic: self.topic.to_string(),
            partition: self.index,
            reason: reason.clone(),
        })
    }

    pub fn offline_reason(&self) -> Option<&str> {
        self.log.as_ref().err().map(String::as_str)
    }

    /// Registers a consumer's notifier, woken after each append to this partition.
    pub fn register_waiter(&self, notify: &Arc<Notify>) {
        let mut w = self.waiters.lock();
        w.retain(|n| n.strong_count() > 0);
        if !w.iter().any(|n| n.as_ptr() == Arc::as_ptr(notify)) {
            w.push(Arc::downgrade(notify));
        }
    }

    pub(crate) fn notify_appended(&self) {
        let w = self.waiters.lock();
        for n in w.iter().filter_map(Weak::upgrade) {
            n.notify_one();
        }
    }
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    pub(crate) meta: TopicMeta,
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    /// `None` unless the topic validates its records' keys or values against the schema registry.
    pub(crate) validation: Option<Validation>,
    pub(crate) partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn partition_count(&self) -> i32 {
        self.meta.partitions
    }

    /// The topic's id (a UUID as 128 bits).
    pub fn id(&self) -> u128 {
        self.meta.id
    }

    pub fn partition(&self, p: i32) -> Result<&Arc<Partition>, BrokerError> {
        usize::try_from(p)
            .ok()
            .and_then(|i| self.partitions.get(i))
            .ok_or_else(|| BrokerError::UnknownPartition { topic: self.meta.name.clone(), partition: p })
    }

    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    pub fn log_config(&self) -> &LogConfig {
        &self.config
    }

    /// The topic's schema validation, when it validates keys or values (and its settings parse).
    pub fn validation(&self) -> Option<&TopicValidation> {
        match &self.validation {
            Some(Validation::On(v)) => Some(v),
            _ => None,
        }
    }

    /// Opens the partitions of a topic directory. Partition failures are recorded, not returned.
    pub(crate) fn open(
        dir: &Path,
        meta: TopicMeta,
        config: LogConfig,
        validation: Option<Validation>,
        flusher: &weir_log::Flusher,
    ) -> Topic {
        let name: Arc<str> = Arc::from(meta.name.as_str());
        let partitions =
            (0..meta.partitions).map(|i| Arc::new(Topic::open_partition(dir, &name, i, &config, flusher))).collect();
        Topic { meta, dir: dir.to_owned(), config, validation, partitions }
    }

    /// Opens (or creates) partition `i` of the topic in `dir`; a failure leaves it offline with the reason.
    pub(crate) fn open_partition(
        dir: &Path,
        name: &Arc<str>,
        i: i32,
        config: &LogConfig,
        flusher: &weir_log::Flusher,
    ) -> Partition {
        let log = Log::open(dir.join(i.to_string()), config.clone()).map_err(|e| e.to_string());
        match &log {
            Ok(log) => {
                flusher.register(log);
                if let Some(t) = &log.recovery().truncation {
                    tracing::warn!(topic = %name, partition = i, "recovered by truncating {t}");
                }
            }
            Err(e) => tracing::error!(topic = %name, partition = i, "partition offline: {e}"),
        }
        Partition::new(name.clone(), i, log)
    }

    pub(crate) fn write_meta(dir: &Path, meta: &TopicMeta) -> Result<(), BrokerError> {
        let err = |source| BrokerError::DataDir { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(err)?;
        let json = serde_json::to_vec_pretty(meta).expect("topic metadata serialises");
        let tmp = dir.join("topic.json.tmp");
        std::fs::write(&tmp, json).map_err(err)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(err)?;
        std::fs::rename(&tmp, dir.join(META_FILE)).map_err(err)?;
        std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(err)
    }

    pub(crate) fn read_meta(dir: &Path) -> Result<TopicMeta, String> {
        let path = dir.join(META_FILE);
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("cannot parse {}: {e}", path.display()))
    }

    /// Closes every online partition cleanly.
    pub(crate) fn close(&self) {
        for p in &self.partitions {
            if let Ok(log) = p.log() {
                if let Err(e) = log.close() {
                    tracing::error!(topic = %self.meta.name, partition = p.index, "close failed: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        for ok in ["orders", "a.b_c-d", "X1", &"a".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"a".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
