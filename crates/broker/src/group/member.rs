//! An in-process group member: drives join → (leader: assign) → sync with Kafka's consumer protocol, so in-process
//! consumers and Kafka clients can lead or follow each other in one group.

use std::sync::Arc;
use std::time::Duration;

use super::assignor;
use super::consumer_protocol::{self, Assignment, Subscription};
use super::coordinator::{GroupCoordinator, JoinGroupRequest, SyncGroupRequest};
use super::offsets::OffsetAndMetadata;
use super::{GroupError, TopicPartition};

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
}

impl GroupMember {
    pub fn new(
        coordinator: Arc<GroupCoordinator>,
        group_id: String,
        client_id: String,
        topics: Vec<String>,
        assignors: Vec<String>,
        session_timeout: Duration,
        rebalance_timeout: Duration,
    ) -> Self {
        let mut assignors: Vec<String> =
            assignors.into_iter().filter(|a| assignor::assign(a, &[], &|_| None).is_some()).collect();
        // Offer both, so the group can agree with members preferring either.
        for a in [assignor::RANGE, assignor::ROUND_ROBIN] {
            if !assignors.iter().any(|x| x == a) {
                assignors.push(a.to_string());
            }
        }
        GroupMember {
            coordinator,
            group_id,
            client_id,
            topics,
            assignors,
            session_timeout,
            rebalance_timeout,
            member_id: String::new(),
            generation: -1,
        }
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Joins (or rejoins) and returns this member's partitions for the new generation.
    pub async fn join(
        &mut self,
        partitions_per_topic: impl Fn(&str) -> Option<i32>,
    ) -> Result<Vec<TopicPartition>, GroupError> {
        let metadata = consumer_protocol::encode_subscription(&Subscription {
            version: 0,
            topics: self.topics.clone(),
            generation_id: -1,
            ..Default::default()
        });
        loop {
            let joined = self
                .coordinator
                .join_group(JoinGroupRequest {
                    group_id: self.group_id.clone(),
                    member_id: self.member_id.clone(),
                    group_instance_id: None,
                    client_id: self.client_id.clone(),
                    client_host: "in-process".into(),
                    session_timeout_ms: self.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: self.rebalance_timeout.as_millis() as u64,
                    protocol_type: "consumer".into(),
                    protocols: self.assignors.iter().map(|a| (a.clone(), metadata.clone())).collect(),
                })
                .await;
            let joined = match joined {
                Ok(j) => j,
                Err(GroupError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.member_id = joined.member_id.clone();
            self.generation = joined.generation_id;
            let assignments = if joined.leader_id == joined.member_id {
                self.assign(&joined.protocol_name, &joined.members, &partitions_per_topic)?
            } else {
                Vec::new()
            };
            let synced = self
                .coordinator
                .sync_group(SyncGroupRequest {
                    group_id: self.group_id.clone(),
                    generation_id: self.generation,
                    member_id: self.member_id.clone(),
                    assignments,
                })
                .await;
            match synced {
                Ok(bytes) => {
                    let a =
                        consumer_protocol::decode_assignment(&bytes).map_err(|e| GroupError::Storage(e.to_string()))?;
                    return Ok(a
                        .partitions
                        .into_iter()
                        .flat_map(|(topic, ps)| {
                            ps.into_iter().map(move |p| TopicPartition { topic: topic.clone(), partition: p })
                        })
                        .collect());
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

    /// The leader's job: decode every member's subscription and run the agreed assignor.
    fn assign(
        &self,
        protocol: &str,
        members: &[(String, Option<String>, Vec<u8>)],
        partitions_per_topic: &dyn Fn(&str) -> Option<i32>,
    ) -> Result<Vec<(String, Vec<u8>)>, GroupError> {
        let subs: Vec<(String, Vec<String>)> = members
            .iter()
            .map(|(id, _, md)| {
                // A member whose metadata cannot be read still gets an (empty) assignment rather than stalling the group.
                let topics = consumer_protocol::decode_subscription(md).map(|s| s.topics).unwrap_or_default();
                (id.clone(), topics)
            })
            .collect();
        let result =
            assignor::assign(protocol, &subs, partitions_per_topic).ok_or(GroupError::InconsistentGroupProtocol)?;
        Ok(result
            .into_iter()
            .map(|(member, partitions)| {
                (member, consumer_protocol::encode_assignment(&Assignment { version: 0, partitions, user_data: None }))
            })
            .collect())
    }

    pub fn heartbeat(&self) -> Result<(), GroupError> {
        if self.member_id.is_empty() {
            return Err(GroupError::UnknownMemberId);
        }
        self.coordinator.heartbeat(&self.group_id, &self.member_id, self.generation)
    }

    pub fn commit(&self, offsets: Vec<(TopicPartition, OffsetAndMetadata)>) -> Result<(), GroupError> {
        self.coordinator.commit_offsets(&self.group_id, &self.member_id, self.generation, offsets)
    }

    pub async fn leave(self) -> Result<(), GroupError> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        match self.coordinator.leave_group(&self.group_id, &self.member_id).await {
            Ok(()) | Err(GroupError::UnknownMemberId) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
