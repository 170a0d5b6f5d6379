//! Consumer groups: the coordinator (`coordinator.rs`, Kafka's classic join/sync/heartbeat/leave protocol), the
//! assignors a leader runs (`assignor.rs`), Kafka's embedded consumer-protocol encoding (`consumer_protocol.rs`), the
//! durable committed-offsets store (`offsets.rs`), and the in-process member that drives the protocol for weir's own
//! consumers (`member.rs`).
//!
//! Nothing here knows about logs or topics beyond names and partition counts, so the Kafka listener can map its
//! requests straight onto [`GroupCoordinator`], and a Kafka client and an in-process consumer can share one group:
//! both speak the same protocol to the same state machine, and both encode subscriptions and assignments with
//! [`consumer_protocol`].

pub mod assignor;
pub mod consumer_group;
pub mod consumer_protocol;
mod coordinator;
mod member;
mod offsets;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use consumer_protocol::ProtocolError;
pub use coordinator::{
    GroupCoordinator, GroupDescription, GroupListing, GroupState, JoinGroupRequest, JoinGroupResponse,
    MemberDescription, SyncGroupRequest,
};
pub use member::GroupMember;
pub use offsets::OffsetAndMetadata;

/// A partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition's index within the topic.
    pub partition: i32,
}

impl TopicPartition {
    /// A partition of `topic`.
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition { topic: topic.into(), partition }
    }
}

impl fmt::Display for TopicPartition {
    /// `topic-partition`, as Kafka's tools print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// The coordinator's settings, named after the Kafka broker settings they mirror.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// The shortest session timeout a member may ask for (Kafka's `group.min.session.timeout.ms`).
    pub session_timeout_min_ms: u64,
    /// The longest session timeout a member may ask for (Kafka's `group.max.session.timeout.ms`).
    pub session_timeout_max_ms: u64,
    /// How long an empty group's first rebalance waits for more members, so a fleet starting together gets one
    /// rebalance rather than one per member (Kafka's `group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay_ms: u64,
    /// The directory holding the committed-offsets file.
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

/// Why a group request failed. Each maps to the Kafka error code a wire client expects
/// ([`GroupError::kafka_error_code`]), and the first three tell a member to rejoin.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GroupError {
    /// The member was expelled (session or rebalance timeout, or it left) or never joined: rejoin with no member id.
    #[error("unknown member id (expelled or never joined); rejoin the group")]
    UnknownMemberId,
    /// The request carries a generation the group has moved past: rejoin.
    #[error("stale generation; rejoin the group")]
    IllegalGeneration,
    /// The group is rebalancing: rejoin to take part.
    #[error("the group is rebalancing; rejoin")]
    RebalanceInProgress,
    /// The member's protocol type differs from the group's, or it shares no protocol with the other members.
    #[error("the member's protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    /// The requested session timeout is outside `session_timeout_min_ms..=session_timeout_max_ms`.
    #[error("session timeout outside the broker's allowed range")]
    InvalidSessionTimeout,
    /// No such group.
    #[error("group {0:?} not found")]
    GroupIdNotFound(String),
    /// The group still has members, so it cannot be deleted.
    #[error("the group still has members")]
    NonEmptyGroup,
    /// The group id is empty.
    #[error("invalid (empty) group id")]
    InvalidGroupId,
    /// A static member whose instance id another process took over (KIP-345): it must stop.
    #[error("fenced: another member took over this group.instance.id")]
    FencedInstanceId,
    /// A KIP-848 member's epoch is not the coordinator's: it must rejoin (epoch 0).
    #[error("the member epoch is fenced; rejoin")]
    FencedMemberEpoch,
    /// A KIP-848 subscription's regular expression that does not compile.
    #[error("invalid regular expression {0}")]
    InvalidRegex(String),
    /// An offset commit from a KIP-848 member with an epoch ahead of its own.
    #[error("stale member epoch")]
    StaleMemberEpoch,
    /// A new member must join again with the id given (KIP-394).
    #[error("join again with member id {0}")]
    MemberIdRequired(String),
    /// OffsetDelete of a topic the group's members are consuming.
    #[error("the group's members consume topic {0:?}")]
    SubscribedToTopic(String),
    /// The coordinator is shutting down.
    #[error("the group coordinator is shutting down")]
    CoordinatorNotAvailable,
    /// Subscription or assignment bytes that do not decode.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The committed-offsets store could not read or write its file.
    #[error("committed offsets store {context}: {source}")]
    Io {
        /// What the store was doing, with the path.
        context: String,
        /// Shared so that one failure can be cloned to every waiter.
        source: Arc<std::io::Error>,
    },
}

impl GroupError {
    /// The Kafka protocol error code for this error.
    pub fn kafka_error_code(&self) -> i16 {
        use crate::kafka_code::*;
        match self {
            GroupError::UnknownMemberId => UNKNOWN_MEMBER_ID,
            GroupError::IllegalGeneration => ILLEGAL_GENERATION,
            GroupError::RebalanceInProgress => REBALANCE_IN_PROGRESS,
            GroupError::InconsistentGroupProtocol => INCONSISTENT_GROUP_PROTOCOL,
            GroupError::InvalidSessionTimeout => INVALID_SESSION_TIMEOUT,
            GroupError::GroupIdNotFound(_) => GROUP_ID_NOT_FOUND,
            GroupError::NonEmptyGroup => NON_EMPTY_GROUP,
            GroupError::InvalidGroupId => INVALID_GROUP_ID,
            GroupError::SubscribedToTopic(_) => GROUP_SUBSCRIBED_TO_TOPIC,
            GroupError::FencedInstanceId => FENCED_INSTANCE_ID,
            GroupError::FencedMemberEpoch => FENCED_MEMBER_EPOCH,
            GroupError::StaleMemberEpoch => STALE_MEMBER_EPOCH,
            GroupError::InvalidRegex(_) => INVALID_REGULAR_EXPRESSION,
            GroupError::MemberIdRequired(_) => MEMBER_ID_REQUIRED,
            GroupError::CoordinatorNotAvailable => COORDINATOR_NOT_AVAILABLE,
            GroupError::Protocol(_) | GroupError::Io { .. } => UNKNOWN_SERVER_ERROR,
        }
    }

    /// Whether the member should rejoin the group (and then retry), as a Kafka client does for these codes.
    pub fn needs_rejoin(&self) -> bool {
        matches!(self, GroupError::UnknownMemberId | GroupError::IllegalGeneration | GroupError::RebalanceInProgress)
    }
}
