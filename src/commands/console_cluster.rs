//! The web console's platform on a Kafka cluster (`weir up --bus kafka://...`): what its pages read and change, over
//! the Kafka protocol with librdkafka, as the `--server` commands do (`kafka_client.rs`, `groups.rs`). Records are
//! produced through the systems' own bus. The cluster does not tell partition sizes (that is DescribeLogDirs), so
//! they show as 0; the live totals are taken every five seconds rather than every second, and the groups' lag every
//! 30 s rather than 5, since each costs requests per topic and group.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::admin::{AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use weir_broker::{GroupDetails, PartitionDescription, ProduceRecord, TopicDescription};
use weir_console::{Platform, PlatformError, Written};
use weir_log::{Header, StoredRecord};
use weir_runtime::{Bus, OutgoingMessage};

use super::kafka_client::{blocking, short, Remote, TIMEOUT};

/// A Kafka cluster as the console's platform.
pub struct ClusterPlatform {
    remote: Remote,
    /// Metadata, watermarks and timestamps (a consumer outside any group).
    metadata: BaseConsumer,
    /// Reads records: assigned one partition at a time.
    reader: Mutex<BaseConsumer>,
    /// Produces records: the systems' bus.
    bus: Arc<dyn Bus>,
}

impl std::fmt::Debug for ClusterPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPlatform").field("cluster", &self.remote.name()).finish_non_exhaustive()
    }
}

impl ClusterPlatform {
    /// The cluster the `url` (`kafka://...`, as `--bus` takes it) names; `bus` produces to it.
    pub fn connect(url: &str, bus: Arc<dyn Bus>) -> anyhow::Result<ClusterPlatform> {
        let remote = Remote::new(url)?;
        let metadata = remote.metadata_client()?;
        let reader = remote.create(
            remote
                .config()
                .set("group.id", "weir-console-reader")
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("allow.auto.create.topics", "false"),
        )?;
        Ok(ClusterPlatform { remote, metadata, reader: Mutex::new(reader), bus })
    }

    fn options() -> AdminOptions {
        AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT))
    }
}

/// A librdkafka error as the console reports it.
fn kafka(e: &KafkaError) -> PlatformError {
    code(e.rdkafka_error_code(), short(e))
}

fn code(code: Option<RDKafkaErrorCode>, message: String) -> PlatformError {
    use RDKafkaErrorCode as C;
    match code {
        Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::GroupIdNotFound) => {
            PlatformError::NotFound(message)
        }
        Some(C::TopicAlreadyExists) => PlatformError::Exists(message),
        Some(
            C::InvalidTopic
            | C::InvalidPartitions
            | C::InvalidConfig
            | C::InvalidRequest
            | C::PolicyViolation
            | C::InvalidReplicationFactor,
        ) => PlatformError::Invalid(message),
        Some(C::UnknownMemberId | C::IllegalGeneration | C::RebalanceInProgress | C::NonEmptyGroup) => {
            PlatformError::Conflict(message)
        }
        _ => PlatformError::Unavailable(message),
    }
}

fn unavailable(e: anyhow::Error) -> PlatformError {
    PlatformError::Unavailable(format!("{e:#}"))
}

#[async_trait]
impl Platform for ClusterPlatform {
    fn data_dir(&self) -> Option<String> {
        None
    }

    fn snapshot_every(&self) -> Duration {
        Duration::from_secs(5)
    }

    /// Every 30 s rather than 5: each sample describes every group, which costs a consumer and an offset fetch over
    /// every partition apiece on a cluster.
    fn lag_sample_every(&self) -> Duration {
        Duration::from_secs(30)
    }

    /// Only while a console page is open (see the trait).
    fn samples_unwatched(&self) -> bool {
        false
    }

    async fn list_topics(&self) -> Result<Vec<String>, PlatformError> {
        let topics = self.remote.topics(&self.metadata, None).map_err(unavailable)?;
        Ok(topics.into_iter().map(|t| t.name).collect())
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicDescription, PlatformError> {
        let md = blocking(|| self.metadata.fetch_metadata(Some(name), TIMEOUT)).map_err(|e| kafka(&e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == name) else {
            return Err(PlatformError::NotFound(format!("unknown topic {name:?}")));
        };
        if let Some(e) = t.error() {
            let e = RDKafkaErrorCode::from(e);
            return Err(code(Some(e), format!("topic {name:?}: {e}")));
        }
        let mut partitions = Vec::new();
        let mut ids: Vec<(i32, Option<String>)> =
            t.partitions().iter().map(|p| (p.id(), p.error().map(|e| RDKafkaErrorCode::from(e).to_string()))).collect();
        ids.sort_by_key(|(id, _)| *id);
        for (id, error) in ids {
            let (start, end) = match &error {
                None => blocking(|| self.metadata.fetch_watermarks(name, id, TIMEOUT)).map_err(|e| kafka(&e))?,
                Some(_) => (-1, -1),
            };
            partitions.push(PartitionDescription {
                partition: id,
                log_start_offset: start,
                log_end_offset: end,
                size_bytes: 0,
                offline: error,
            });
        }
        let mut configs = BTreeMap::new();
        let admin = self.remote.admin().map_err(unavailable)?;
        let described =
            admin.describe_configs([&ResourceSpecifier::Topic(name)], &Self::options()).await.map_err(|e| kafka(&e))?;
        // A cluster refusing DescribeConfigs still shows the topic, with no settings.
        for r in described.into_iter().flatten() {
            for e in r.entries {
                configs.insert(e.name, e.value.unwrap_or_default());
            }
        }
        Ok(TopicDescription { name: name.to_string(), partitions, configs })
    }

    async fn list_groups(&self) -> Result<Vec<String>, PlatformError> {
        let list = blocking(|| self.metadata.fetch_group_list(None, TIMEOUT)).map_err(|e| kafka(&e))?;
        let mut names: Vec<String> = list.groups().iter().map(|g| g.name().to_string()).collect();
        names.sort();
        Ok(names)
    }

    async fn describe_group(&self, name: &str) -> Result<GroupDetails, PlatformError> {
        match super::groups::describe_remote(&self.remote, &self.metadata, name).map_err(unavailable)? {
            Some(details) => Ok(details),
            None => Err(PlatformError::NotFound(format!("no consumer group {name:?}"))),
        }
    }

    async fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), PlatformError> {
        blocking(|| self.metadata.fetch_watermarks(topic, partition, TIMEOUT)).map_err(|e| kafka(&e))
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp_ms: i64,
    ) -> Result<Option<i64>, PlatformError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(timestamp_ms)).map_err(|e| kafka(&e))?;
        let found = blocking(|| self.metadata.offsets_for_times(tpl, TIMEOUT)).map_err(|e| kafka(&e))?;
        Ok(found.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        }))
    }

    async fn read(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, PlatformError> {
        if from >= to || limit == 0 {
            return Ok(Vec::new());
        }
        // One read at a time: a poisoned lock (a panic elsewhere mid-read) still holds a usable consumer.
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(|e| kafka(&e))?;
        reader.assign(&tpl).map_err(|e| kafka(&e))?;
        let mut out = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        // Until the limit, the end asked for, or a quiet moment past the deadline (a compacted gap at the end).
        while out.len() < limit && Instant::now() < deadline {
            let Some(polled) = blocking(|| reader.poll(Duration::from_millis(100))) else { continue };
            let m = match polled {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(_)) => break,
                Err(e) => {
                    let _ = reader.unassign();
                    return Err(kafka(&e));
                }
            };
            if m.topic() != topic || m.partition() != partition || m.offset() < from {
                continue;
            }
            if m.offset() >= to {
                break;
            }
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| Header { key: h.key.to_string(), value: h.value.map(Bytes::copy_from_slice) })
                        .collect()
                })
                .unwrap_or_default();
            let done = m.offset() + 1 >= to;
            out.push(StoredRecord {
                offset: m.offset(),
                timestamp: m.timestamp().to_millis().unwrap_or(0),
                key: m.key().map(Bytes::copy_from_slice),
                value: m.payload().map(Bytes::copy_from_slice),
                headers,
            });
            if done {
                break;
            }
        }
        let _ = reader.unassign();
        Ok(out)
    }

    async fn produce(&self, record: ProduceRecord) -> Result<Written, PlatformError> {
        let message = OutgoingMessage {
            topic: record.topic,
            key: record.key,
            value: record.value,
            headers: record.headers,
            partition: record.partition,
            timestamp: record.timestamp,
        };
        let at = weir_runtime::time::now_ms();
        match self.bus.produce(message).await {
            Ok(d) => Ok((d.partition, d.offset, at)),
            Err(weir_runtime::BusError::UnknownTopic(t)) => {
                Err(PlatformError::NotFound(format!("unknown topic {t:?}")))
            }
            Err(e) => Err(PlatformError::Unavailable(e.to_string())),
        }
    }

    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<i32, PlatformError> {
        weir_broker::validate_topic_name(name).map_err(|e| PlatformError::Invalid(e.to_string()))?;
        let partitions =
            weir_broker::validate_partitions(partitions as i64).map_err(|e| PlatformError::Invalid(e.to_string()))?;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in &configs {
            topic = topic.set(k, v);
        }
        let admin = self.remote.admin().map_err(unavailable)?;
        for result in admin.create_topics([&topic], &Self::options()).await.map_err(|e| kafka(&e))? {
            if let Err((name, c)) = result {
                return Err(code(Some(c), format!("cannot create topic {name}: {c}")));
            }
        }
        Ok(partitions)
    }

    async fn delete_topic(&self, name: &str) -> Result<(), PlatformError> {
        let admin = self.remote.admin().map_err(unavailable)?;
        for result in admin.delete_topics(&[name], &Self::options()).await.map_err(|e| kafka(&e))? {
            if let Err((name, c)) = result {
                return Err(code(Some(c), format!("cannot delete topic {name}: {c}")));
            }
        }
        Ok(())
    }

    async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, i64)],
        _metadata: &str,
    ) -> Result<(), PlatformError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o)).map_err(|e| kafka(&e))?;
        }
        // A consumer that never joins: its commit is Kafka's "simple" one, accepted while the group has no members.
        let committer: BaseConsumer = self
            .remote
            .create(self.remote.config().set("group.id", group).set("enable.auto.commit", "false"))
            .map_err(unavailable)?;
        blocking(|| committer.commit(&tpl, CommitMode::Sync)).map_err(|e| kafka(&e))
    }
}
