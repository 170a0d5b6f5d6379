//! The broker's error type: one line a person can act on, and a mapping to Kafka error codes for the wire adapters.

use std::path::PathBuf;

use weir_log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("data directory {path} is in use by another weir process ({owner})")]
    Locked { path: PathBuf, owner: String },
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("invalid topic name {0:?}: use 1-249 characters from a-z, A-Z, 0-9, '.', '_' and '-'")]
    InvalidTopicName(String),
    #[error("invalid partition count {0}: it must be between 1 and 100000")]
    InvalidPartitions(i64),
    #[error("topic {topic:?} has {current} partitions; asked for {requested}: the count can only grow")]
    PartitionsCannotShrink { topic: String, current: i32, requested: i32 },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("partition {topic}-{partition} is offline: {reason}")]
    PartitionOffline { topic: String, partition: i32, reason: String },
    #[error("offset {offset} is out of range for {topic}-{partition} (valid: {log_start}..{log_end})")]
    OffsetOutOfRange { topic: String, partition: i32, offset: i64, log_start: i64, log_end: i64 },
    #[error("{0}")]
    Log(#[from] LogError),
    #[error("consumer group: {0}")]
    Group(#[from] crate::group::GroupError),
    #[error("this consumer has no group; commit needs a group id")]
    NoGroup,
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("transaction: {0}")]
    Transaction(#[from] crate::transactions::TxnError),
    /// Records a topic's schema validation refused (see `validation.rs`); nothing sent with them was stored.
    #[error("{}", crate::validation::refusal_message(.errors, *.total))]
    RecordsRefused { errors: Vec<crate::validation::RecordError>, total: usize },
    /// A topic validates its records but cannot now: no validator installed, or settings that do not parse.
    #[error("schema validation is on for topic {topic} but {reason}")]
    ValidationUnavailable { topic: String, reason: String },
    /// One failure reported to several waiters (every record of a batch that could not be written).
    #[error("{0}")]
    Shared(std::sync::Arc<BrokerError>),
}

impl BrokerError {
    /// The closest Kafka protocol error code.
    pub fn kafka_error_code(&self) -> i16 {
        use crate::kafka_code::*;
        match self {
            BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => UNKNOWN_TOPIC_OR_PARTITION,
            BrokerError::TopicExists(_) => TOPIC_ALREADY_EXISTS,
            BrokerError::InvalidTopicName(_) => INVALID_TOPIC_EXCEPTION,
            BrokerError::InvalidPartitions(_) | BrokerError::PartitionsCannotShrink { .. } => INVALID_PARTITIONS,
            BrokerError::InvalidConfig(_) => INVALID_CONFIG,
            // A partition whose log could not be opened: Kafka's answer for a replica on a failed disk.
            BrokerError::PartitionOffline { .. } => KAFKA_STORAGE_ERROR,
            BrokerError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
            BrokerError::Log(LogError::RecordTooLarge { .. }) => MESSAGE_TOO_LARGE,
            BrokerError::Log(LogError::InvalidBatch(_)) => CORRUPT_MESSAGE,
            BrokerError::Log(LogError::InvalidRecord(_)) => INVALID_RECORD,
            // Not retriable, as Kafka's own record validation: the same records would be refused again.
            BrokerError::RecordsRefused { .. } | BrokerError::ValidationUnavailable { .. } => INVALID_RECORD,
            BrokerError::Log(LogError::OffsetOutOfRange { .. }) => OFFSET_OUT_OF_RANGE,
            BrokerError::Log(LogError::OutOfOrderSequence { .. }) => OUT_OF_ORDER_SEQUENCE_NUMBER,
            BrokerError::Log(LogError::InvalidProducerEpoch { .. }) => INVALID_PRODUCER_EPOCH,
            BrokerError::Log(LogError::Corrupt { .. } | LogError::Io { .. }) => KAFKA_STORAGE_ERROR,
            BrokerError::Group(e) => e.kafka_error_code(),
            BrokerError::Transaction(e) => e.kafka_error_code(),
            BrokerError::Shared(e) => e.kafka_error_code(),
            _ => UNKNOWN_SERVER_ERROR,
        }
    }
}
