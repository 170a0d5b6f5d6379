//! The group coordinator: Kafka's classic (eager) group membership protocol.
//!
//! A group moves Empty → PreparingRebalance (members (re)join) → CompletingRebalance (the leader computes the
//! assignment) → Stable (everyone has it), and back to PreparingRebalance whenever a member joins, leaves or misses its
//! session timeout. Each completed join bumps the generation; requests carrying an older generation are fenced with
//! ILLEGAL_GENERATION, so a member that lost its partitions can neither commit for them nor mistake itself for an owner.
//! Requests that must wait (JoinGroup until everyone rejoined, SyncGroup until the leader assigned) are answered
//! through oneshot channels when the group moves on; a ticker expires sessions and overdue rebalances.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::offsets::{OffsetAndMetadata, OffsetStore};
use super::{GroupConfig, GroupError, TopicPartition};

/// The states of a group, named as Kafka names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        })
    }
}

#[derive(Clone, Debug)]
pub struct JoinGroupRequest {
    pub group_id: String,
    /// Empty for a new member; the coordinator assigns one.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocol_type: String,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Vec<u8>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinGroupResponse {
    pub generation_id: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader_id: String,
    pub member_id: String,
    /// (member id, group instance id, metadata) — only for the leader.
    pub members: Vec<(String, Option<String>, Vec<u8>)>,
}

#[derive(Clone, Debug)]
pub struct SyncGroupRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    /// The leader's assignment per member; empty from followers.
    pub assignments: Vec<(String, Vec<u8>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the group's chosen protocol.
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub generation: i32,
    pub members: Vec<MemberDescription>,
}

type JoinTx = oneshot::Sender<Result<JoinGroupResponse, GroupError>>;
type SyncTx = oneshot::Sender<Result<Vec<u8>, GroupError>>;

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
    last_heartbeat: Instant,
    /// Waiting for the current rebalance to complete; such a member is not expired (Kafka holds its session).
    awaiting_join: Option<JoinTx>,
    awaiting_sync: Option<SyncTx>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: Option<String>,
    /// In join order (BTreeMap by a join sequence keeps the first joiner as default leader).
    members: BTreeMap<String, Member>,
    join_order: Vec<String>,
    /// When PreparingRebalance gives up on members that have not rejoined.
    rebalance_deadline: Option<Instant>,
    /// An Empty group's first rebalance waits this long for more members (Kafka's initial rebalance delay).
    not_before: Option<Instant>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: None,
            members: BTreeMap::new(),
            join_order: Vec::new(),
            rebalance_deadline: None,
            not_before: None,
        }
    }

    fn member_metadata(&self, m: &Member) -> Vec<u8> {
        m.protocols.iter().find(|(n, _)| *n == self.protocol).map(|(_, md)| md.clone()).unwrap_or_default()
    }

    /// Protocols every member supports, in no particular order.
    fn common_protocols(&self) -> Vec<String> {
        let mut iter = self.members.values();
        let Some(first) = iter.next() else {
            return Vec::new();
        };
        let mut common: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in iter {
            common.retain(|p| m.protocols.iter().any(|(n, _)| n == p));
        }
        common
    }

    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being computed is for a generation that will not be.
            for m in self.members.values_mut() {
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        if self.state == GroupState::Empty && !initial_delay.is_zero() {
            self.not_before = Some(now + initial_delay);
        }
        let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        self.rebalance_deadline = Some(now + timeout);
        self.state = GroupState::PreparingRebalance;
    }

    fn remove_member(&mut self, id: &str, why: GroupError, now: Instant, initial_delay: Duration) {
        let Some(mut m) = self.members.remove(id) else {
            return;
        };
        self.join_order.retain(|x| x != id);
        if let Some(tx) = m.awaiting_join.take() {
            let _ = tx.send(Err(why.clone()));
        }
        if let Some(tx) = m.awaiting_sync.take() {
            let _ = tx.send(Err(why));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.become_empty();
                } else {
                    self.prepare_rebalance(now, initial_delay);
                }
            }
            GroupState::PreparingRebalance if self.members.is_empty() => self.become_empty(),
            _ => {}
        }
    }

    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.generation += 1;
        self.protocol.clear();
        self.leader = None;
        self.rebalance_deadline = None;
        self.not_before = None;
    }

    /// Completes the join phase if everyone rejoined (or time is up): expels stragglers, bumps the generation, picks
    /// the protocol and the leader, and answers every waiting JoinGroup.
    fn maybe_complete_join(&mut self, now: Instant, force: bool) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.not_before.is_some_and(|t| now < t) && !force {
            return;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some());
        if !all_joined && !force {
            return;
        }
        let stragglers: Vec<String> =
            self.members.iter().filter(|(_, m)| m.awaiting_join.is_none()).map(|(id, _)| id.clone()).collect();
        for id in stragglers {
            tracing::info!(member = %id, "expelled from group: did not rejoin within the rebalance timeout");
            self.members.remove(&id);
            self.join_order.retain(|x| *x != id);
        }
        self.not_before = None;
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.generation += 1;
        // Each member votes for its most preferred protocol among those all support.
        let common = self.common_protocols();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| common.contains(n)) {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        self.protocol = votes.iter().max_by_key(|(_, v)| **v).map(|(n, _)| n.to_string()).unwrap_or_default();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.join_order.first().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        let everyone: Vec<(String, Option<String>, Vec<u8>)> = self
            .join_order
            .iter()
            .filter_map(|id| self.members.get(id).map(|m| (id.clone(), m.instance_id.clone(), self.member_metadata(m))))
            .collect();
        self.state = GroupState::CompletingRebalance;
        let (generation, protocol_type, protocol) =
            (self.generation, self.protocol_type.clone(), self.protocol.clone());
        for (id, m) in self.members.iter_mut() {
            m.assignment.clear();
            m.last_heartbeat = now;
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(Ok(JoinGroupResponse {
                    generation_id: generation,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol.clone(),
                    leader_id: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader { everyone.clone() } else { Vec::new() },
                }));
            }
        }
    }
}

/// Every group of the broker, and their committed offsets. Shared as `Arc<GroupCoordinator>`.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: Mutex<BTreeMap<String, Group>>,
    offsets: OffsetStore,
    next_member: AtomicU64,
    stopped: AtomicBool,
}

/// How often sessions and rebalance deadlines are checked.
const TICK: Duration = Duration::from_millis(50);

impl GroupCoordinator {
    /// Loads committed offsets and, inside a tokio runtime, starts the ticker that expires sessions.
    pub fn open(config: GroupConfig) -> Result<Arc<GroupCoordinator>, GroupError> {
        let offsets = OffsetStore::open(&config.offsets_dir)?;
        let c = Arc::new(GroupCoordinator {
            config,
            groups: Mutex::new(BTreeMap::new()),
            offsets,
            next_member: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(ticker(Arc::downgrade(&c)));
        }
        Ok(c)
    }

    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        let mut groups = self.groups.lock();
        for g in groups.values_mut() {
            for m in g.members.values_mut() {
                if let Some(tx) = m.awaiting_join.take() {
                    let _ = tx.send(Err(GroupError::CoordinatorNotAvailable));
                }
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(Err(GroupError::CoordinatorNotAvailable));
                }
            }
        }
    }

    fn initial_delay(&self) -> Duration {
        Duration::from_millis(self.config.initial_rebalance_delay_ms)
    }

    fn check_running(&self) -> Result<(), GroupError> {
        if self.stopped.load(Ordering::Acquire) {
            Err(GroupError::CoordinatorNotAvailable)
        } else {
            Ok(())
        }
    }

    pub async fn join_group(&self, req: JoinGroupRequest) -> Result<JoinGroupResponse, GroupError> {
        self.check_running()?;
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if !(self.config.session_timeout_min_ms..=self.config.session_timeout_max_ms).contains(&req.session_timeout_ms)
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let now = Instant::now();
        let rx = {
            let mut groups = self.groups.lock();
            let group = groups.entry(req.group_id.clone()).or_insert_with(Group::new);
            // A joiner must speak the group's protocol type and share a protocol with everyone else in it.
            let others: Vec<&Member> =
                group.members.iter().filter(|(id, _)| **id != req.member_id).map(|(_, m)| m).collect();
            if !others.is_empty() {
                let compatible = req
                    .protocols
                    .iter()
                    .any(|(name, _)| others.iter().all(|m| m.protocols.iter().any(|(n, _)| n == name)));
                if group.protocol_type != req.protocol_type || !compatible {
                    return Err(GroupError::InconsistentGroupProtocol);
                }
            }
            let member_id = if req.member_id.is_empty() {
                let n = self.next_member.fetch_add(1, Ordering::Relaxed);
                let id = format!(
                    "{}-{:016x}-{n}",
                    if req.client_id.is_empty() { "member" } else { &req.client_id },
                    rand::random::<u64>()
                );
                group.join_order.push(id.clone());
                group.members.insert(
                    id.clone(),
                    Member {
                        instance_id: req.group_instance_id.clone(),
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        session_timeout: Duration::ZERO,
                        rebalance_timeout: Duration::ZERO,
                        protocols: Vec::new(),
                        assignment: Vec::new(),
                        last_heartbeat: now,
                        awaiting_join: None,
                        awaiting_sync: None,
                    },
                );
                id
            } else if group.members.contains_key(&req.member_id) {
                req.member_id.clone()
            } else {
                return Err(GroupError::UnknownMemberId);
            };
            group.protocol_type = req.protocol_type.clone();
            let (tx, rx) = oneshot::channel();
            let m = group.members.get_mut(&member_id).expect("member just ensured");
            m.session_timeout = Duration::from_millis(req.session_timeout_ms);
            m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms.max(req.session_timeout_ms));
            m.protocols = req.protocols;
            m.client_id = req.client_id;
            m.client_host = req.client_host;
            m.last_heartbeat = now;
            if let Some(old) = m.awaiting_join.replace(tx) {
                let _ = old.send(Err(GroupError::UnknownMemberId));
            }
            if let Some(old) = m.awaiting_sync.take() {
                let _ = old.send(Err(GroupError::RebalanceInProgress));
            }
            if group.state != GroupState::PreparingRebalance {
                group.prepare_rebalance(now, self.initial_delay());
            }
            group.maybe_complete_join(now, false);
            rx
        };
        rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable))
    }

    pub async fn sync_group(&self, req: SyncGroupRequest) -> Result<Vec<u8>, GroupError> {
        self.check_running()?;
        let rx = {
            let mut groups = self.groups.lock();
            let group = groups.get_mut(&req.group_id).ok_or(GroupError::UnknownMemberId)?;
            if !group.members.contains_key(&req.member_id) {
                return Err(GroupError::UnknownMemberId);
            }
            if req.generation_id != group.generation {
                return Err(GroupError::IllegalGeneration);
            }
            match group.state {
                GroupState::PreparingRebalance => return Err(GroupError::RebalanceInProgress),
                GroupState::Stable => return Ok(group.members[&req.member_id].assignment.clone()),
                GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
                GroupState::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            group.members.get_mut(&req.member_id).expect("checked").awaiting_sync = Some(tx);
            if group.leader.as_deref() == Some(req.member_id.as_str()) {
                let mut given: BTreeMap<String, Vec<u8>> = req.assignments.into_iter().collect();
                group.state = GroupState::Stable;
                for (id, m) in group.members.iter_mut() {
                    m.assignment = given.remove(id).unwrap_or_default();
                    if let Some(tx) = m.awaiting_sync.take() {
                        let _ = tx.send(Ok(m.assignment.clone()));
                    }
                }
            }
            rx
        };
        rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable))
    }

    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation_id: i32) -> Result<(), GroupError> {
        self.check_running()?;
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
        let state = group.state;
        let generation = group.generation;
        let m = group.members.get_mut(member_id).ok_or(GroupError::UnknownMemberId)?;
        m.last_heartbeat = Instant::now();
        match state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ if generation_id != generation => Err(GroupError::IllegalGeneration),
            _ => Ok(()),
        }
    }

    pub async fn leave_group(&self, group_id: &str, member_id: &str) -> Result<(), GroupError> {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
        if !group.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        group.remove_member(member_id, GroupError::UnknownMemberId, now, self.initial_delay());
        group.maybe_complete_join(now, false);
        Ok(())
    }

    /// Stores offsets durably. `generation_id < 0` with an empty member id is a "simple" commit, allowed only while
    /// the group has no members.
    pub fn commit_offsets(
        &self,
        group_id: &str,
        member_id: &str,
        generation_id: i32,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Result<(), GroupError> {
        self.check_running()?;
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        {
            let groups = self.groups.lock();
            match groups.get(group_id) {
                None if generation_id < 0 => {}
                None => return Err(GroupError::IllegalGeneration),
                Some(g) if g.members.is_empty() && generation_id < 0 => {}
                Some(g) => {
                    if !g.members.contains_key(member_id) {
                        return Err(GroupError::UnknownMemberId);
                    }
                    if generation_id != g.generation {
                        return Err(GroupError::IllegalGeneration);
                    }
                    if g.state == GroupState::CompletingRebalance {
                        return Err(GroupError::RebalanceInProgress);
                    }
                }
            }
        }
        self.offsets.commit(group_id, offsets)
    }

    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Option<OffsetAndMetadata>)> {
        self.offsets.fetch(group_id, partitions)
    }

    pub fn list_groups(&self) -> Vec<GroupListing> {
        let mut out: BTreeMap<String, GroupListing> = BTreeMap::new();
        for g in self.offsets.groups() {
            out.insert(
                g.clone(),
                GroupListing { group_id: g, protocol_type: "consumer".into(), state: GroupState::Empty },
            );
        }
        for (id, g) in self.groups.lock().iter() {
            if g.members.is_empty() && !out.contains_key(id) {
                continue;
            }
            out.insert(
                id.clone(),
                GroupListing { group_id: id.clone(), protocol_type: g.protocol_type.clone(), state: g.state },
            );
        }
        out.into_values().collect()
    }

    /// A group's state and members; an unknown group is described as Dead with no members, as Kafka does.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let groups = self.groups.lock();
        match groups.get(group_id) {
            None => GroupDescription {
                group_id: group_id.to_string(),
                state: if self.offsets.groups().iter().any(|g| g == group_id) {
                    GroupState::Empty
                } else {
                    GroupState::Dead
                },
                protocol_type: String::new(),
                protocol: String::new(),
                generation: -1,
                members: Vec::new(),
            },
            Some(g) => GroupDescription {
                group_id: group_id.to_string(),
                state: g.state,
                protocol_type: g.protocol_type.clone(),
                protocol: g.protocol.clone(),
                generation: g.generation,
                members: g
                    .join_order
                    .iter()
                    .filter_map(|id| g.members.get(id).map(|m| (id, m)))
                    .map(|(id, m)| MemberDescription {
                        member_id: id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: g.member_metadata(m),
                        assignment: m.assignment.clone(),
                    })
                    .collect(),
            },
        }
    }

    /// Forgets committed offsets of a deleted topic.
    pub fn delete_topic(&self, topic: &str) {
        if let Err(e) = self.offsets.delete_topic(topic) {
            tracing::error!(topic, "cannot forget committed offsets of deleted topic: {e}");
        }
    }

    /// Deletes an empty group and its committed offsets.
    pub fn delete_group(&self, group_id: &str) -> Result<(), GroupError> {
        let mut groups = self.groups.lock();
        if groups.get(group_id).is_some_and(|g| !g.members.is_empty()) {
            return Err(GroupError::NonEmptyGroup);
        }
        groups.remove(group_id);
        self.offsets.delete_group(group_id)
    }

    /// Expires members whose session timed out and completes rebalances whose time is up.
    fn tick(&self, now: Instant) {
        let delay = self.initial_delay();
        let mut groups = self.groups.lock();
        for (gid, g) in groups.iter_mut() {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
                .filter(|(_, m)| now.duration_since(m.last_heartbeat) > m.session_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %gid, member = %id, "member session expired");
                g.remove_member(&id, GroupError::UnknownMemberId, now, delay);
            }
            let overdue = g.rebalance_deadline.is_some_and(|d| now >= d);
            g.maybe_complete_join(now, overdue);
        }
    }
}

async fn ticker(c: Weak<GroupCoordinator>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(c) = c.upgrade() else { return };
        if c.stopped.load(Ordering::Acquire) {
            return;
        }
        c.tick(Instant::now());
    }
}
