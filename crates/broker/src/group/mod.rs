//! Consumer groups: the coordinator (`coordinator.rs`, Kafka's classic join/sync/heartbeat/leave protocol), the
//! assignors a leader runs (`assignor.rs`), Kafka's embedded consumer-protocol encoding (`consumer_protocol.rs`), the
//! durable committed-offsets store (`offsets.rs`), and the in-process member that drives the protocol for weir's own
//! consumers (`member.rs`).
//!
//! Nothing here knows about logs or topics beyond names and partition counts, so the Kafka listener can map its
//! requests straight onto [`GroupCoordinator`] and a Kafka client and an in-process consumer can share one group.

pub mod assignor;
pub mod consumer_protocol;
mod coordinator;
mod member;
mod offsets;

use std::path::PathBuf;

pub use coordinator::{
    GroupCoordinator, GroupDescription, GroupListing, GroupState, JoinGroupRequest, JoinGroupResponse,
    MemberDescription, SyncGroupRequest,
};
pub use member::GroupMember;
pub use offsets::OffsetAndMetadata;

/// A partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// Kafka's `group.min.session.timeout.ms`.
    pub session_timeout_min_ms: u64,
    /// Kafka's `group.max.session.timeout.ms`.
    pub session_timeout_max_ms: u64,
    /// How long an empty group's first rebalance waits for more members (`group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay_ms: u64,
    /// Where committed offsets are stored.
    pub offsets_dir: PathBuf,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            session_timeout_min_ms: 6_000,
            session_timeout_max_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offsets_dir: PathBuf::from("weir-data/groups"),
        }
    }
}

/// Group errors, each with its Kafka error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("unknown member id (expelled or never joined); rejoin the group")]
    UnknownMemberId,
    #[error("stale generation; rejoin the group")]
    IllegalGeneration,
    #[error("the group is rebalancing; rejoin")]
    RebalanceInProgress,
    #[error("the member's protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("session timeout outside the broker's allowed range")]
    InvalidSessionTimeout,
    #[error("group {0:?} not found")]
    GroupIdNotFound(String),
    #[error("the group still has members")]
    NonEmptyGroup,
    #[error("invalid (empty) group id")]
    InvalidGroupId,
    #[error("the group coordinator is shutting down")]
    CoordinatorNotAvailable,
    #[error("cannot store committed offsets: {0}")]
    Storage(String),
}

impl GroupError {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            GroupError::UnknownMemberId => 25,
            GroupError::IllegalGeneration => 22,
            GroupError::RebalanceInProgress => 27,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::GroupIdNotFound(_) => 69,
            GroupError::NonEmptyGroup => 68,
            GroupError::InvalidGroupId => 24,
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::Storage(_) => -1,
        }
    }
}
