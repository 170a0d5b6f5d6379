//! The broker's administrative operations, as Kafka's admin APIs ask for them: more partitions for a topic, topic
//! settings changed live, records deleted below an offset. Each validates first and changes nothing when it refuses;
//! each change is durable (the topic's `topic.json`, the log's start offset) before it is answered.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::topics::{self, Partition, Topic};

/// One change to a topic's settings (IncrementalAlterConfigs' operations; AlterConfigs is a `Replace`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    /// Back to the broker's default.
    Delete(String),
}

impl Broker {
    /// CreatePartitions: grows `topic` to `total` partitions. Kafka never shrinks a topic (keys would move), so a
    /// count not above the current one is refused with INVALID_PARTITIONS. With `validate_only`, nothing changes.
    pub fn create_partitions(&self, topic: &str, total: i32, validate_only: bool) -> Result<(), BrokerError> {
        let _admin = self.admin.lock();
        let current = self.topic(topic)?;
        let total = topics::validate_partitions(total as i64)?;
        if total <= current.partition_count() {
            return Err(BrokerError::PartitionsCannotShrink {
                topic: topic.to_string(),
                current: current.partition_count(),
                requested: total,
            });
        }
        if validate_only {
            return Ok(());
        }
        let mut meta = current.meta.clone();
        meta.partitions = total;
        Topic::write_meta(&current.dir, &meta)?;
        let name: Arc<str> = Arc::from(topic);
        let mut partitions: Vec<Arc<Partition>> = current.partitions.clone();
        for i in current.partition_count()..total {
            partitions.push(Arc::new(Topic::open_partition(&current.dir, &name, i, &current.config, &self.flusher)));
        }
        let grown = Topic {
            meta,
            dir: current.dir.clone(),
            config: current.config.clone(),
            validation: current.validation.clone(),
            partitions,
        };
        self.topics.write().insert(topic.to_string(), Arc::new(grown));
        self.topics_version.fetch_add(1, Ordering::AcqRel);
        tracing::info!(topic, partitions = total, "added partitions");
        Ok(())
    }

    /// IncrementalAlterConfigs (and AlterConfigs, as `replace`): applies `changes` to the topic's own settings
    /// (`replace` drops every setting not named first), checks the result as a whole, stores it, and applies it to
    /// every partition's log at once, and the schema validation settings to the next record appended. An unknown key
    /// or a bad value refuses the whole change.
    pub fn alter_topic_config(
        &self,
        topic: &str,
        changes: &[ConfigChange],
        replace: bool,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _admin = self.admin.lock();
        let current = self.topic(topic)?;
        let mut configs: BTreeMap<String, String> =
            if replace { BTreeMap::new() } else { current.meta.configs.clone() };
        for change in changes {
            match change {
                ConfigChange::Set(k, v) => {
                    configs.insert(k.clone(), v.clone());
                }
                ConfigChange::Delete(k) => {
                    if !topics::is_topic_setting(k) {
                        return Err(topics::unknown_setting(k));
                    }
                    configs.remove(k);
                }
            }
        }
        let (config, validation) = topics::topic_settings(&self.config.log, &configs)?;
        if validate_only {
            return Ok(());
        }
        let mut meta = current.meta.clone();
        meta.configs = configs;
        Topic::write_meta(&current.dir, &meta)?;
        for p in &current.partitions {
            if let Ok(log) = p.log() {
                log.set_config(config.clone());
            }
        }
        // A new `Topic`: producers notice it (the topics version moves) and pick up the new validation at once.
        let altered =
            Topic { meta, dir: current.dir.clone(), config, validation, partitions: current.partitions.clone() };
        self.topics.write().insert(topic.to_string(), Arc::new(altered));
        self.topics_version.fetch_add(1, Ordering::AcqRel);
        tracing::info!(topic, "altered topic settings");
        Ok(())
    }

    /// The settings set on the topic itself (not the broker's defaults), for DescribeConfigs' sources.
    pub fn topic_overrides(&self, topic: &str) -> Result<BTreeMap<String, String>, BrokerError> {
        Ok(self.topic(topic)?.meta.configs.clone())
    }

    /// DeleteRecords: moves the partition's log start offset to `offset` (-1: its end), see
    /// [`weir_log::Log::delete_records_before`]. Returns the new log start offset.
    pub fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, BrokerError> {
        self.check_open()?;
        let log = self.topic(topic)?.partition(partition)?.log()?.clone();
        let offset = if offset == -1 { log.end_offset() } else { offset };
        log.delete_records_before(offset).map_err(|e| match e {
            weir_log::LogError::OffsetOutOfRange { offset, log_start, log_end } => {
                BrokerError::OffsetOutOfRange { topic: topic.to_string(), partition, offset, log_start, log_end }
            }
            e => BrokerError::Log(e),
        })
    }
}
