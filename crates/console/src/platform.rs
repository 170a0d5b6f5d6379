//! What the console reads and changes, whichever bus the systems run on: [`Platform`], implemented here over the
//! embedded broker ([`Embedded`]) and by the binary over a Kafka cluster (the console cannot know the cluster's
//! client, which sits above it). The descriptions are the broker's own types, which a cluster's answers fill in too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weir_broker::{Broker, BrokerError, GroupDetails, ProduceRecord, TopicDescription};
use weir_log::StoredRecord;

/// Why the platform refused or could not answer, as the console's API reports it (404, 409, 400, 503).
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    /// Not now: a group with members, say.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<BrokerError> for PlatformError {
    fn from(e: BrokerError) -> Self {
        use weir_broker::group::GroupError;
        match e {
            BrokerError::UnknownTopic(_)
            | BrokerError::UnknownPartition { .. }
            | BrokerError::Group(GroupError::GroupIdNotFound(_))
            | BrokerError::Group(GroupError::InvalidGroupId) => PlatformError::NotFound(e.to_string()),
            BrokerError::InvalidTopicName(_) | BrokerError::InvalidPartitions(_) | BrokerError::InvalidConfig(_) => {
                PlatformError::Invalid(e.to_string())
            }
            BrokerError::TopicExists(_) => PlatformError::Exists(e.to_string()),
            BrokerError::Group(_) => PlatformError::Conflict(e.to_string()),
            e => PlatformError::Unavailable(e.to_string()),
        }
    }
}

/// Where a produced record went: partition, offset, timestamp.
pub type Written = (i32, i64, i64);

/// The platform the console shows: topics, their records, consumer groups. Every call is answered from the bus the
/// systems use, the embedded broker or a Kafka cluster.
#[async_trait]
pub trait Platform: Send + Sync + std::fmt::Debug {
    /// The embedded broker's data directory; none on a cluster.
    fn data_dir(&self) -> Option<String>;
    /// How often the live totals are taken: every second on the embedded broker, less often on a cluster, where
    /// they cost a request per topic and group.
    fn snapshot_every(&self) -> Duration;
    /// How often every group's lag is sampled for the groups' charts (an hour of samples is kept): on a cluster each
    /// sample describes every group, a few requests each.
    fn lag_sample_every(&self) -> Duration {
        crate::groups::SAMPLE_EVERY
    }
    /// Whether the groups' lag is sampled while no console page is open. On a cluster it is not: each sample reads
    /// every group's offsets through a client of that group's id, traffic the systems' own groups should not see
    /// from an instance nobody is looking at.
    fn samples_unwatched(&self) -> bool {
        true
    }
    async fn list_topics(&self) -> Result<Vec<String>, PlatformError>;
    /// Partitions with their offsets (size 0 where the cluster does not tell) and the effective settings.
    async fn describe_topic(&self, name: &str) -> Result<TopicDescription, PlatformError>;
    async fn list_groups(&self) -> Result<Vec<String>, PlatformError>;
    /// State, members and their assignment, committed offsets with the end offsets and lag.
    async fn describe_group(&self, name: &str) -> Result<GroupDetails, PlatformError>;
    /// A partition's first and end offsets.
    async fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), PlatformError>;
    /// The first offset at or after `timestamp_ms`, none when every record is older.
    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp_ms: i64,
    ) -> Result<Option<i64>, PlatformError>;
    /// Up to `limit` records of a partition from `from` (inclusive) to `to` (exclusive).
    async fn read(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, PlatformError>;
    async fn produce(&self, record: ProduceRecord) -> Result<Written, PlatformError>;
    /// The partitions created.
    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<i32, PlatformError>;
    async fn delete_topic(&self, name: &str) -> Result<(), PlatformError>;
    /// Commits `offsets` (topic, partition, offset) for a group with no members, as Kafka's tools reset them.
    async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, i64)],
        metadata: &str,
    ) -> Result<(), PlatformError>;
}

/// The embedded broker as the console's platform.
#[derive(Clone, Debug)]
pub struct Embedded(pub Arc<Broker>);

/// Runs broker work that may touch the disk off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BrokerError> + Send + 'static,
) -> Result<T, PlatformError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(PlatformError::from),
        Err(e) => Err(PlatformError::Unavailable(e.to_string())),
    }
}

#[async_trait]
impl Platform for Embedded {
    fn data_dir(&self) -> Option<String> {
        Some(self.0.config().data_dir.display().to_string())
    }

    fn snapshot_every(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn list_topics(&self) -> Result<Vec<String>, PlatformError> {
        Ok(self.0.list_topics())
    }

    async fn describe_topic(&self, name: &str) -> Result<TopicDescription, PlatformError> {
        Ok(self.0.describe_topic(name)?)
    }

    async fn list_groups(&self) -> Result<Vec<String>, PlatformError> {
        Ok(self.0.list_groups())
    }

    async fn describe_group(&self, name: &str) -> Result<GroupDetails, PlatformError> {
        if !self.0.list_groups().iter().any(|g| g == name) {
            return Err(PlatformError::NotFound(format!("no consumer group {name:?}")));
        }
        Ok(self.0.describe_group(name)?)
    }

    async fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64), PlatformError> {
        Ok(self.0.offsets(topic, partition)?)
    }

    async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        timestamp_ms: i64,
    ) -> Result<Option<i64>, PlatformError> {
        let (b, topic) = (self.0.clone(), topic.to_string());
        blocking(move || b.offset_for_timestamp(&topic, partition, timestamp_ms)).await
    }

    async fn read(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, PlatformError> {
        let (b, topic) = (self.0.clone(), topic.to_string());
        blocking(move || read_range(&b, &topic, partition, from, to, limit)).await
    }

    async fn produce(&self, record: ProduceRecord) -> Result<Written, PlatformError> {
        let m = self.0.producer().send(record).await?;
        Ok((m.partition, m.offset, m.timestamp))
    }

    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<i32, PlatformError> {
        let (b, name) = (self.0.clone(), name.to_string());
        let d = blocking(move || b.create_topic(&name, partitions, configs)).await?;
        Ok(d.partitions.len() as i32)
    }

    async fn delete_topic(&self, name: &str) -> Result<(), PlatformError> {
        let (b, name) = (self.0.clone(), name.to_string());
        blocking(move || b.delete_topic(&name)).await
    }

    async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, i64)],
        metadata: &str,
    ) -> Result<(), PlatformError> {
        use weir_broker::group::{OffsetAndMetadata, TopicPartition};
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let offsets = offsets
            .iter()
            .map(|(t, p, o)| {
                let meta = OffsetAndMetadata { offset: *o, metadata: metadata.to_string(), commit_timestamp_ms: now };
                (TopicPartition { topic: t.clone(), partition: *p }, meta)
            })
            .collect();
        // A "simple" commit (no member, generation -1): accepted only while the group has no members.
        self.0.groups().commit_offsets(group, "", -1, offsets).map_err(|e| PlatformError::from(BrokerError::from(e)))
    }
}

/// Records of one partition from `from` (inclusive) up to `to` (exclusive), at most `limit`.
fn read_range(
    broker: &Broker,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<StoredRecord>, BrokerError> {
    let mut out = Vec::new();
    let mut at = from;
    while out.len() < limit && at < to {
        let records = broker.read(topic, partition, at, 1 << 20)?.records(at).map_err(BrokerError::from)?;
        let Some(last) = records.last().map(|r| r.offset) else { break };
        out.extend(records.into_iter().filter(|r| r.offset >= at && r.offset < to).take(limit - out.len()));
        if last < at {
            break;
        }
        at = last + 1;
    }
    Ok(out)
}
