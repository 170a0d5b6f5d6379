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
    /// One failure reported to several waiters (every record of a batch that could not be written).
    #[error("{0}")]
    Shared(std::sync::Arc<BrokerError>),
}

impl BrokerError {
    /// The closest Kafka protocol error code.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => 3, // UNKNOWN_TOPIC_OR_PARTITION
            BrokerError::TopicExists(_) => 36,                                        // TOPIC_ALREADY_EXISTS
            BrokerError::InvalidTopicName(_) => 17,                                   // INVALID_TOPIC_EXCEPTION
            BrokerError::InvalidPartitions(_) => 37,                                  // INVALID_PARTITIONS
            BrokerError::InvalidConfig(_) => 40,                                      // INVALID_CONFIG
            BrokerError::PartitionOffline { .. } => 39,                               // KAFKA_STORAGE_ERROR
            BrokerError::OffsetOutOfRange { .. } => 1,                                // OFFSET_OUT_OF_RANGE
            BrokerError::Log(LogError::RecordTooLarge { .. }) => 10,                  // MESSAGE_TOO_LARGE
            BrokerError::Log(LogError::InvalidBatch(_)) => 2,                         // CORRUPT_MESSAGE
            BrokerError::Log(LogError::InvalidRecord(_)) => 87,                       // INVALID_RECORD
            BrokerError::Log(LogError::OffsetOutOfRange { .. }) => 1,
            BrokerError::Log(LogError::OutOfOrderSequence { .. }) => 45, // OUT_OF_ORDER_SEQUENCE_NUMBER
            BrokerError::Log(LogError::InvalidProducerEpoch { .. }) => 47, // INVALID_PRODUCER_EPOCH
            BrokerError::Log(LogError::Corrupt { .. } | LogError::Io { .. }) => 56, // KAFKA_STORAGE_ERROR
            BrokerError::Group(e) => e.kafka_error_code(),
            BrokerError::Shared(e) => e.kafka_error_code(),
            _ => -1, // UNKNOWN_SERVER_ERROR
        }
    }
}
