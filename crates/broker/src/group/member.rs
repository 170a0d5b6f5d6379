//! An in-process group member: what weir's own consumers use so they never hand-roll the protocol. It drives
//! join → (as leader: run the assignor) → sync exactly as a Kafka client does, encoding its subscription and the
//! assignments with [`consumer_protocol`](super::consumer_protocol), so in-process members and Kafka clients can lead
//! or follow each other in one group.

use std::sync::Arc;
use std::time::Duration;

use super::assignor;
use super::consumer_protocol::{self, Assignment, Subscription};
use super::coordinator::{GroupCoordinator, JoinGroupRequest, JoinGroupResponse, SyncGroupRequest};
use super::offsets::OffsetAndMetadata;
use super::{GroupError, TopicPartition};

/// The protocol type of consumer groups.
const PROTOCOL_TYPE: &str = "consumer";

/// One member of a consumer group, driving the group protocol for an in-process consumer.
///
/// The owner calls [`join`](GroupMember::join) to get partitions, [`heartbeat`](GroupMember::heartbeat) more often
/// than the session timeout, and `join` again whenever an error says [`GroupError::needs_rejoin`].
#[derive(Debug)]
pub struct GroupMember {
    coordinator: Arc<GroupCoordinator>,
    group_id: String,
    client_id: String,
    topics: Vec<String>,
    /// Assignor names in order of preference.
    assignors: Vec<String>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    member_id: String,
    generation: i32,
    assignment: Vec<TopicPartition>,
}

impl GroupMember {
    /// A member of `group_id` subscribed to `topics`, not yet joined.
    ///
    /// `assignors` are the preferred assignor names ("range", "roundrobin"); unknown names are dropped, and both
    /// known ones are always offered after them, so the group can agree with members that prefer either.
    pub fn new(
        coordinator: Arc<GroupCoordinator>,
        group_id: String,
        client_id: String,
        topics: Vec<String>,
        assignors: Vec<String>,
        session_timeout: Duration,
        rebalance_timeout: Duration,
    ) -> GroupMember {
        let mut preferred: Vec<String> = Vec::new();
        for name in assignors.into_iter().map(|a| a.to_ascii_lowercase()).chain(assignor::SUPPORTED.map(String::from)) {
            if assignor::SUPPORTED.contains(&name.as_str()) && !preferred.contains(&name) {
                preferred.push(name);
            }
        }
        GroupMember {
            coordinator,
            group_id,
            client_id,
            topics,
            assignors: preferred,
            session_timeout,
            rebalance_timeout,
            member_id: String::new(),
            generation: -1,
            assignment: Vec::new(),
        }
    }

    /// The id the coordinator gave this member; empty before the first join.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The generation of the last join; -1 before the first.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The group's id.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The partitions of the last completed join.
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.assignment
    }

    /// Joins (or rejoins) the group and returns this member's partitions for the new generation. As leader it runs
    /// the agreed assignor over every member's subscription, asking `partitions_per_topic` for partition counts
    /// (`None`: unknown topic, left unassigned). Rebalances that start meanwhile are joined again transparently.
    pub async fn join(
        &mut self,
        partitions_per_topic: impl Fn(&str) -> Option<i32>,
    ) -> Result<Vec<TopicPartition>, GroupError> {
        // Eager protocol: everything owned is given up by rejoining, so the subscription claims nothing.
        let metadata = consumer_protocol::encode_subscription(&Subscription {
            version: 0,
            topics: self.topics.clone(),
            ..Subscription::default()
        })?;
        self.assignment.clear();
        loop {
            let joined = self.coordinator.join_group(self.join_request(&metadata)).await;
            let joined = match joined {
                Ok(joined) => joined,
                Err(GroupError::UnknownMemberId) if !self.member_id.is_empty() => {
                    // Expelled: join again as a new member.
                    self.member_id.clear();
                    continue;
                }
                Err(GroupError::RebalanceInProgress) => continue,
                Err(e) => return Err(e),
            };
            self.member_id = joined.member_id.clone();
            self.generation = joined.generation_id;
            let assignments = if joined.leader_id == joined.member_id {
                self.assign(&joined, &partitions_per_topic)?
            } else {
                Vec::new()
            };
            let synced = self
                .coordinator
                .sync_group(SyncGroupRequest {
                    group_id: self.group_id.clone(),
                    generation_id: self.generation,
                    member_id: self.member_id.clone(),
                    protocol_type: Some(joined.protocol_type.clone()),
                    protocol_name: Some(joined.protocol_name.clone()),
                    assignments,
                })
                .await;
            match synced {
                Ok(bytes) => {
                    self.assignment = consumer_protocol::decode_assignment(&bytes)?.topic_partitions();
                    return Ok(self.assignment.clone());
                }
                Err(GroupError::RebalanceInProgress | GroupError::IllegalGeneration) => continue,
                Err(GroupError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn join_request(&self, metadata: &[u8]) -> JoinGroupRequest {
        JoinGroupRequest {
            group_id: self.group_id.clone(),
            member_id: self.member_id.clone(),
            group_instance_id: None,
            require_known_member_id: false,
            client_id: self.client_id.clone(),
            client_host: "in-process".into(),
            session_timeout_ms: u64::try_from(self.session_timeout.as_millis()).unwrap_or(u64::MAX),
            rebalance_timeout_ms: u64::try_from(self.rebalance_timeout.as_millis()).unwrap_or(u64::MAX),
            protocol_type: PROTOCOL_TYPE.into(),
            protocols: self.assignors.iter().map(|a| (a.clone(), metadata.to_vec())).collect(),
        }
    }

    /// The leader's job: decode every member's subscription (whoever sent it) and run the agreed assignor.
    fn assign(
        &self,
        joined: &JoinGroupResponse,
        partitions_per_topic: &dyn Fn(&str) -> Option<i32>,
    ) -> Result<Vec<(String, Vec<u8>)>, GroupError> {
        let subscriptions: Vec<(String, Vec<String>)> = joined
            .members
            .iter()
            .map(|(id, _, metadata)| {
                // A member whose subscription cannot be read gets nothing rather than stalling the whole group.
                let topics = consumer_protocol::decode_subscription(metadata)
                    .map(|s| s.topics)
                    .inspect_err(|e| tracing::warn!(member = %id, "unreadable subscription: {e}"))
                    .unwrap_or_default();
                (id.clone(), topics)
            })
            .collect();
        let assignments = assignor::assign(&joined.protocol_name, &subscriptions, partitions_per_topic)
            .ok_or(GroupError::InconsistentGroupProtocol)?;
        assignments
            .into_iter()
            .map(|(member, partitions)| {
                let bytes =
                    consumer_protocol::encode_assignment(&Assignment { version: 0, partitions, user_data: None })?;
                Ok((member, bytes))
            })
            .collect()
    }

    /// Keeps the session alive. An error that [needs a rejoin](GroupError::needs_rejoin) means: call
    /// [`join`](GroupMember::join) again.
    pub fn heartbeat(&self) -> Result<(), GroupError> {
        if self.member_id.is_empty() {
            return Err(GroupError::UnknownMemberId);
        }
        self.coordinator.heartbeat(&self.group_id, &self.member_id, self.generation)
    }

    /// Commits offsets durably as this member of its current generation; a member that has been rebalanced away
    /// from its partitions is refused.
    pub fn commit(&self, offsets: Vec<(TopicPartition, OffsetAndMetadata)>) -> Result<(), GroupError> {
        if self.member_id.is_empty() {
            return Err(GroupError::UnknownMemberId);
        }
        self.coordinator.commit_offsets(&self.group_id, &self.member_id, self.generation, offsets)
    }

    /// Leaves the group, so the others rebalance now rather than after this member's session timeout.
    pub async fn leave(self) -> Result<(), GroupError> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        match self.coordinator.leave_group(&self.group_id, &self.member_id).await {
            // Already expelled: nothing to leave.
            Ok(()) | Err(GroupError::UnknownMemberId) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
