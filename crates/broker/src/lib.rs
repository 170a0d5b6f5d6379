//! weir's in-process broker: topics of partitioned logs, Kafka-compatible partitioning, consumer groups with durable
//! committed offsets, and the in-process producer and consumer the rest of weir builds on.
//!
//! - [`Broker`] (`broker.rs`): owns the data directory (`lock.rs`), the topic registry (`topics.rs`), the interval
//!   flusher, retention and the group coordinator.
//! - `admin.rs`: the admin operations (partitions added, topic settings altered live, records deleted).
//! - [`Producer`] (`producer.rs`): `send` enqueues; one drain per partition batches whatever is queued into one append
//!   (and one fsync under `fsync=always`), so concurrent sends share writes.
//! - [`Consumer`] (`consumer.rs`): standalone, or a group member that joins through [`group`] like a Kafka client.
//! - [`partitioner`]: murmur2 exactly as Kafka's Java client, so keys land where they would in Kafka.
//! - [`transactions`]: the transaction coordinator (transactional ids, two-phase commit with markers, its own
//!   durable log, timeouts).
//! - [`group`]: the group coordinator (join, sync, heartbeat, leave, assignors, offsets store).
//! - [`validation`]: schema validation of a topic's records (Confluent's `confluent.value.schema.validation`),
//!   through a [`RecordValidator`] the schema registry provides.
//! - [`kafka_code`]: the Kafka protocol error codes its errors map to, by name.
//! - `testing` (feature `testing`, for tests only): a broker set up for tests, and the crash tests' harness.
//!
//! Data directory layout: `.lock`, `topics/<name>/topic.json`, `topics/<name>/<partition>/<segments>`, `groups/`,
//! `transactions/` (the transaction coordinator's log).
//!
//! # Example
//!
//! A broker on a data directory: a topic, a keyed record produced, read back by a group member and committed.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use weir_broker::{partitioner, Broker, BrokerConfig, ConsumerConfig, ProduceRecord};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let mut config = BrokerConfig::new(dir.path());
//! config.group.initial_rebalance_delay_ms = 0; // one member: no need to wait for others
//! let broker = Broker::open(config)?;
//! broker.create_topic("orders", 3, BTreeMap::new())?;
//!
//! // A keyed record lands on the partition Kafka's Java client would choose.
//! let sent = broker.producer().send(ProduceRecord::new("orders", "two lattes").with_key("table-4")).await?;
//! assert_eq!(sent.partition, partitioner::partition_for_key(b"table-4", 3));
//! assert_eq!(sent.offset, 0);
//!
//! // The group's only member is assigned all three partitions.
//! let mut consumer = broker.consumer(ConsumerConfig::new(["orders"]).group("kitchen"))?;
//! let records = consumer.poll(Duration::from_secs(10)).await?;
//! assert_eq!(records.len(), 1);
//! assert_eq!((records[0].partition, records[0].offset), (sent.partition, 0));
//! assert_eq!(records[0].key.as_deref(), Some(&b"table-4"[..]));
//! assert_eq!(records[0].value.as_deref(), Some(&b"two lattes"[..]));
//!
//! // Committing stores the position after the record: the group has nothing left to read there.
//! consumer.commit().await?;
//! consumer.close().await?;
//! let group = broker.describe_group("kitchen")?;
//! let lag = group.offsets.iter().find(|p| p.partition == sent.partition).expect("a committed partition");
//! assert_eq!((lag.committed, lag.lag), (Some(1), Some(0)));
//! broker.shutdown();
//! # Ok(())
//! # }
//! ```

mod admin;
mod broker;
mod consumer;
mod error;
pub mod group;
pub mod kafka_code;
mod lock;
pub mod partitioner;
mod producer;
#[cfg(feature = "testing")]
pub mod testing;
mod topics;
pub mod transactions;
pub mod validation;

pub use admin::ConfigChange;
pub use broker::{
    Broker, BrokerConfig, BrokerHealth, GroupDetails, MemberDetails, PartitionDescription, PartitionLag,
    TopicDescription,
};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, OffsetReset};
pub use error::BrokerError;
pub use lock::DataDirLock;
pub use producer::{ProduceRecord, Producer, RecordMetadata};
pub use topics::{validate_partitions, validate_topic_name, Partition, Topic, WriteFailure};
pub use validation::{RecordValidator, Side, SubjectNameStrategy, TopicValidation};
pub use weir_log::{FsyncPolicy, Header, Isolation, LogConfig};
