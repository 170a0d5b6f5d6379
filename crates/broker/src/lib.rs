//! weir's in-process broker: topics of partitioned logs, Kafka-compatible partitioning, consumer groups with durable
//! committed offsets, and the in-process producer and consumer the rest of weir builds on.
//!
//! - [`Broker`] (`broker.rs`): owns the data directory (`lock.rs`), the topic registry (`topics.rs`), the interval
//!   flusher, retention and the group coordinator.
//! - [`Producer`] (`producer.rs`): `send` enqueues; one drain per partition batches whatever is queued into one append
//!   (and one fsync under `fsync=always`), so concurrent sends share writes.
//! - [`Consumer`] (`consumer.rs`): standalone, or a group member that joins through [`group`] like a Kafka client.
//! - [`partitioner`]: murmur2 exactly as Kafka's Java client, so keys land where they would in Kafka.
//! - [`group`]: the group coordinator (join, sync, heartbeat, leave, assignors, offsets store).
//!
//! Data directory layout: `.lock`, `topics/<name>/topic.json`, `topics/<name>/<partition>/<segments>`, `groups/`.

mod broker;
mod consumer;
mod error;
pub mod group;
mod lock;
pub mod partitioner;
mod producer;
mod topics;

pub use broker::{
    Broker, BrokerConfig, BrokerHealth, GroupDetails, MemberDetails, PartitionDescription, PartitionLag,
    TopicDescription,
};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, OffsetReset};
pub use error::BrokerError;
pub use lock::DataDirLock;
pub use producer::{ProduceRecord, Producer, RecordMetadata};
pub use topics::{validate_partitions, validate_topic_name, Partition, Topic, WriteFailure};
pub use weir_log::{FsyncPolicy, Header, LogConfig};
