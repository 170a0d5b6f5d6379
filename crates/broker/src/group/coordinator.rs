//! The group coordinator: Kafka's classic (eager) group membership protocol, as the Kafka broker's
//! `GroupCoordinator` implements it.
//!
//! A group moves Empty → PreparingRebalance (members (re)join) → CompletingRebalance (the leader computes the
//! assignment) → Stable (everyone has it), and back to PreparingRebalance whenever a member joins, leaves, changes its
//! subscription or misses its session timeout. Each completed join bumps the generation; requests carrying an older
//! generation are fenced with ILLEGAL_GENERATION, so a member that lost its partitions can neither commit for them nor
//! mistake itself for their owner.
//!
//! Static membership (KIP-345): a member that gives a `group.instance.id` keeps its place across restarts. Rejoining
//! with that id and no member id, within its session timeout, replaces its old member id with a new one and takes
//! over its assignment without a rebalance (when its protocols are unchanged); the old member id is fenced
//! (FENCED_INSTANCE_ID), so a zombie of it cannot heartbeat, sync or commit, and a second process with the same
//! instance id fences the first. A dynamic Kafka client's first JoinGroup (v4+) gets MEMBER_ID_REQUIRED with the id it
//! must join with (KIP-394), so a client that never completes a join leaves no member behind.
//!
//! Requests that must wait (JoinGroup until everyone has rejoined, SyncGroup until the leader has assigned) park a
//! oneshot sender on their member and are answered when the group moves on. Timeouts — sessions, the rebalance
//! timeout for stragglers, the initial rebalance delay, members that never sync — are enforced by a ticker task.
//! Everything is one mutex over all groups: every operation is a few map look-ups, and the only slow thing, the
//! fsync of a commit, happens outside it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::consumer_group::{ConsumerGroup, Heartbeat, HeartbeatAnswer};
use super::offsets::{OffsetAndMetadata, OffsetStore};
use super::{GroupConfig, GroupError, TopicPartition};

/// How often sessions and deadlines are checked: the precision of every timeout here.
const TICK: Duration = Duration::from_millis(50);

/// The protocol type listed for groups known only from their committed offsets (after a restart, say).
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// The states of a group, named (and displayed) as Kafka names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members; the group may still have committed offsets.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has (or can fetch) its assignment.
    Stable,
    /// A KIP-848 group computing a new target assignment.
    Assigning,
    /// A KIP-848 group whose members are moving to their new assignments.
    Reconciling,
    /// The group does not exist (how DescribeGroups reports an unknown group).
    Dead,
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Assigning => "Assigning",
            GroupState::Reconciling => "Reconciling",
            GroupState::Dead => "Dead",
        })
    }
}

/// A JoinGroup request.
#[derive(Clone, Debug)]
pub struct JoinGroupRequest {
    /// The group to join.
    pub group_id: String,
    /// Empty for a new member (the coordinator assigns one); otherwise the id from an earlier join.
    pub member_id: String,
    /// The static instance id (KIP-345), if the member has one.
    pub group_instance_id: Option<String>,
    /// A new dynamic member must first ask for its member id (KIP-394, JoinGroup v4+): it is answered
    /// MEMBER_ID_REQUIRED with the id to join with.
    pub require_known_member_id: bool,
    /// The client's id; new member ids start with it.
    pub client_id: String,
    /// The client's address, for describing the group.
    pub client_host: String,
    /// How long the member may go without a heartbeat before it is expelled.
    pub session_timeout_ms: u64,
    /// How long a rebalance waits for this member to rejoin; 0 means the session timeout (JoinGroup v0).
    pub rebalance_timeout_ms: u64,
    /// The kind of group, such as "consumer"; every member must agree.
    pub protocol_type: String,
    /// (protocol name, metadata) in the member's order of preference; for consumers, the assignor names with the
    /// encoded subscription.
    pub protocols: Vec<(String, Vec<u8>)>,
}

impl JoinGroupRequest {
    /// The member's session and rebalance timeouts.
    fn timeouts(&self) -> (Duration, Duration) {
        let session_timeout = Duration::from_millis(self.session_timeout_ms);
        let rebalance_timeout = match self.rebalance_timeout_ms {
            0 => session_timeout,
            ms => Duration::from_millis(ms),
        };
        (session_timeout, rebalance_timeout)
    }
}

/// The answer to a JoinGroup: the generation the member is now part of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinGroupResponse {
    /// The new generation.
    pub generation_id: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The protocol (assignor) chosen for this generation.
    pub protocol_name: String,
    /// The member that must compute the assignment.
    pub leader_id: String,
    /// This member's id (newly assigned for a new member).
    pub member_id: String,
    /// (member id, group instance id, metadata for the chosen protocol) of every member — for the leader only.
    pub members: Vec<(String, Option<String>, Vec<u8>)>,
}

/// A SyncGroup request.
#[derive(Clone, Debug)]
pub struct SyncGroupRequest {
    /// The group.
    pub group_id: String,
    /// The generation the member joined.
    pub generation_id: i32,
    /// The member.
    pub member_id: String,
    /// If given (SyncGroup v5+), must match the group's protocol type.
    pub protocol_type: Option<String>,
    /// If given (SyncGroup v5+), must match the generation's protocol.
    pub protocol_name: Option<String>,
    /// The leader's assignment per member id; empty from followers. Members left out get an empty assignment.
    pub assignments: Vec<(String, Vec<u8>)>,
}

/// A group as ListGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    /// The group's id.
    pub group_id: String,
    /// Its protocol type ("consumer" for groups known only by their committed offsets).
    pub protocol_type: String,
    /// Its state.
    pub state: GroupState,
}

/// A member as DescribeGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member's id.
    pub member_id: String,
    /// The static instance id it gave, if any.
    pub group_instance_id: Option<String>,
    /// The client id it gave.
    pub client_id: String,
    /// The address it gave.
    pub client_host: String,
    /// Its metadata for the group's protocol; empty unless the group is Stable (as Kafka reports it).
    pub metadata: Vec<u8>,
    /// Its assignment; empty unless the group is Stable.
    pub assignment: Vec<u8>,
}

/// A group as DescribeGroups reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group's id.
    pub group_id: String,
    /// Its state; Dead for an unknown group.
    pub state: GroupState,
    /// Its protocol type.
    pub protocol_type: String,
    /// The current generation's protocol; empty unless the group is Stable (as Kafka reports it).
    pub protocol: String,
    /// The current generation; -1 for a group with no live state.
    pub generation: i32,
    /// Its members, in the order they joined.
    pub members: Vec<MemberDescription>,
}

type JoinTx = oneshot::Sender<Result<JoinGroupResponse, GroupError>>;
type SyncTx = oneshot::Sender<Result<Vec<u8>, GroupError>>;

#[derive(Debug)]
struct Member {
    /// Join order: the first member to join becomes the leader, and members are listed in this order.
    seq: u64,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
    last_heartbeat: Instant,
    /// Set while its JoinGroup waits for the rebalance to complete. Such a member is not expired: its session is
    /// held, as Kafka holds it, and the rebalance timeout bounds the wait instead.
    awaiting_join: Option<JoinTx>,
    /// Set while its SyncGroup waits for the leader's assignment; also keeps the session alive.
    awaiting_sync: Option<SyncTx>,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Vec<u8> {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, md)| md.clone()).unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    /// Kafka's `shouldKeepAlive`: parked requests hold the session; otherwise heartbeats must keep coming.
    fn expired(&self, now: Instant) -> bool {
        self.awaiting_join.is_none()
            && self.awaiting_sync.is_none()
            && now.saturating_duration_since(self.last_heartbeat) > self.session_timeout
    }
}

/// The initial rebalance delay of a group that was empty: the first join completes once no new member has arrived
/// for the configured delay, or at the cap (the rebalance timeout), whichever comes first.
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    until: Instant,
    cap: Instant,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    /// Set by the first member to join; kept while the group is empty, as Kafka keeps it.
    protocol_type: Option<String>,
    /// The current generation's protocol.
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    next_seq: u64,
    /// PreparingRebalance: when members that have not rejoined are given up on.
    join_deadline: Option<Instant>,
    /// PreparingRebalance from Empty: the initial rebalance delay, used instead of `join_deadline`.
    initial_delay: Option<InitialDelay>,
    /// Members that have not sent SyncGroup for the current generation, and when they are given up on.
    pending_sync: BTreeSet<String>,
    sync_deadline: Option<Instant>,
    /// Static members: instance id → its current member id.
    static_members: BTreeMap<String, String>,
    /// Member ids a static member's restart replaced: their requests are FENCED_INSTANCE_ID.
    fenced_members: BTreeSet<String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, awaiting their JoinGroup (KIP-394), and when.
    pending_members: BTreeMap<String, Instant>,
}

/// How long a member id handed out with MEMBER_ID_REQUIRED waits for its JoinGroup.
const PENDING_MEMBER_TTL: Duration = Duration::from_secs(300);
/// Replaced static member ids remembered for fencing (the oldest are forgotten first).
const FENCED_REMEMBERED: usize = 1000;

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            next_seq: 0,
            join_deadline: None,
            initial_delay: None,
            pending_sync: BTreeSet::new(),
            sync_deadline: None,
            static_members: BTreeMap::new(),
            fenced_members: BTreeSet::new(),
            pending_members: BTreeMap::new(),
        }
    }

    /// Member ids in join order.
    fn member_ids_in_join_order(&self) -> Vec<&String> {
        let mut ids: Vec<(&u64, &String)> = self.members.iter().map(|(id, m)| (&m.seq, id)).collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default()
    }

    /// A member joining for the first time: it gets a new id (or the one MEMBER_ID_REQUIRED gave it) and its
    /// JoinGroup (`tx`) waits for the rebalance.
    fn add_member(&mut self, req: JoinGroupRequest, tx: JoinTx, now: Instant) {
        let (session_timeout, rebalance_timeout) = req.timeouts();
        let member_id =
            if req.member_id.is_empty() { new_member_id(&req.client_id, self) } else { req.member_id.clone() };
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), member_id.clone());
        }
        tracing::debug!(group = %req.group_id, member = %member_id, "new member joining");
        let seq = self.next_seq;
        self.next_seq += 1;
        self.members.insert(
            member_id,
            Member {
                seq,
                instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout,
                rebalance_timeout,
                protocols: req.protocols,
                assignment: Vec::new(),
                last_heartbeat: now,
                awaiting_join: Some(tx),
                awaiting_sync: None,
            },
        );
        // The first member sets the group's protocol type; later ones were checked against it.
        if self.members.len() == 1 {
            self.protocol_type = Some(req.protocol_type);
        }
    }

    /// A known member joining again, its settings updated. Answered at once (`Some`, the current generation) when
    /// its protocols are unchanged and the group is completing a rebalance, or stable and the member not its leader:
    /// it probably lost the earlier answer, as Kafka assumes. Otherwise its JoinGroup (`tx`) waits for the rebalance.
    fn rejoin(
        &mut self,
        req: JoinGroupRequest,
        tx: JoinTx,
        now: Instant,
    ) -> Result<Option<JoinGroupResponse>, GroupError> {
        let (session_timeout, rebalance_timeout) = req.timeouts();
        let state = self.state;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        let Some(m) = self.members.get_mut(&req.member_id) else {
            return Err(GroupError::UnknownMemberId);
        };
        m.session_timeout = session_timeout;
        m.rebalance_timeout = rebalance_timeout;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.instance_id = req.group_instance_id;
        m.last_heartbeat = now;
        let unchanged = m.protocols == req.protocols;
        let answer_now = match state {
            GroupState::CompletingRebalance => unchanged,
            GroupState::Stable => unchanged && !is_leader,
            GroupState::PreparingRebalance
            | GroupState::Empty
            | GroupState::Dead
            | GroupState::Assigning
            | GroupState::Reconciling => false,
        };
        if answer_now {
            return Ok(Some(self.current_join_response(&req.member_id)));
        }
        m.protocols = req.protocols;
        if let Some(old) = m.awaiting_join.replace(tx) {
            // A retried JoinGroup supersedes the first; whoever still listens to the first should rejoin.
            let _ = old.send(Err(GroupError::RebalanceInProgress));
        }
        // A sole member has nobody to agree with, so it may change even the protocol type.
        if self.members.len() == 1 {
            self.protocol_type = Some(req.protocol_type);
        }
        Ok(None)
    }

    /// A static member restarting (its instance id known, no member id given): it takes the place of `old` under a
    /// new member id, `old` is fenced, and with unchanged protocols in a Stable or CompletingRebalance group it gets
    /// the current generation at once, keeping its assignment: no rebalance. Otherwise it waits for one.
    fn replace_static_member(
        &mut self,
        old: &str,
        req: JoinGroupRequest,
        tx: JoinTx,
        now: Instant,
        initial_delay: Duration,
    ) -> Option<JoinGroupResponse> {
        let mut m = self.members.remove(old)?;
        if let Some(t) = m.awaiting_join.take() {
            let _ = t.send(Err(GroupError::FencedInstanceId));
        }
        if let Some(t) = m.awaiting_sync.take() {
            let _ = t.send(Err(GroupError::FencedInstanceId));
        }
        let new_id = new_member_id(&req.client_id, self);
        tracing::info!(member = %new_id, replaced = %old, instance = ?req.group_instance_id, "static member rejoined");
        if self.fenced_members.len() >= FENCED_REMEMBERED {
            self.fenced_members.pop_first();
        }
        self.fenced_members.insert(old.to_string());
        let (session_timeout, rebalance_timeout) = req.timeouts();
        m.session_timeout = session_timeout;
        m.rebalance_timeout = rebalance_timeout;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.last_heartbeat = now;
        let unchanged = m.protocols == req.protocols;
        if self.leader.as_deref() == Some(old) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old) {
            self.pending_sync.insert(new_id.clone());
        }
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        let answer_now = unchanged && matches!(self.state, GroupState::Stable | GroupState::CompletingRebalance);
        if !answer_now {
            m.protocols = req.protocols;
            m.awaiting_join = Some(tx);
        }
        self.members.insert(new_id.clone(), m);
        if answer_now {
            return Some(self.current_join_response(&new_id));
        }
        self.rebalance_for_join(now, initial_delay);
        self.try_complete_join(now);
        None
    }

    /// Kafka's `supportsProtocols`: a joiner must use the group's protocol type and share at least one protocol
    /// with every other member. `joiner` is excluded so that a member may change its own protocols.
    fn supports_protocols(&self, joiner: &str, protocol_type: &str, protocols: &[(String, Vec<u8>)]) -> bool {
        let mut others = self.members.iter().filter(|(id, _)| id.as_str() != joiner).map(|(_, m)| m).peekable();
        if others.peek().is_none() {
            return true;
        }
        let others: Vec<&Member> = others.collect();
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| others.iter().all(|m| m.supports(name)))
    }

    /// Starts (or restarts) a rebalance: everyone must rejoin.
    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being computed is for a generation that will not be: its waiters must rejoin.
            for m in self.members.values_mut() {
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        let timeout = self.max_rebalance_timeout();
        if self.state == GroupState::Empty && !initial_delay.is_zero() {
            let cap = now + timeout;
            self.initial_delay = Some(InitialDelay { until: (now + initial_delay).min(cap), cap });
            self.join_deadline = None;
        } else {
            self.join_deadline = Some(now + timeout);
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        self.state = GroupState::PreparingRebalance;
    }

    /// A member joined or changed: rebalance, or, if one is already gathering members, just let it wait.
    fn rebalance_for_join(&mut self, now: Instant, initial_delay: Duration) {
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(d) = &mut self.initial_delay {
                    d.until = (now + initial_delay).min(d.cap);
                }
            }
            _ => self.prepare_rebalance(now, initial_delay),
        }
    }

    /// Removes a member, answering its parked requests with `why`, and rebalances the rest.
    fn remove_member(&mut self, id: &str, why: GroupError, now: Instant, initial_delay: Duration) {
        let Some(mut m) = self.members.remove(id) else {
            return;
        };
        if let Some(tx) = m.awaiting_join.take() {
            let _ = tx.send(Err(why.clone()));
        }
        if let Some(tx) = m.awaiting_sync.take() {
            let _ = tx.send(Err(why));
        }
        self.pending_sync.remove(id);
        self.static_members.retain(|_, member| member != id);
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now, initial_delay),
            // The join may now be complete; the caller checks.
            GroupState::PreparingRebalance
            | GroupState::Empty
            | GroupState::Dead
            | GroupState::Assigning
            | GroupState::Reconciling => {}
        }
    }

    /// Completes the join phase if it is time: everyone has rejoined (and any initial delay is over), or the
    /// rebalance timeout has expired.
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let ready = if self.members.is_empty() {
            true
        } else if let Some(d) = self.initial_delay {
            now >= d.until
        } else {
            self.members.values().all(|m| m.awaiting_join.is_some()) || self.join_deadline.is_some_and(|d| now >= d)
        };
        if ready {
            self.complete_join(now);
        }
    }

    /// Kafka's `onCompleteJoin`: expels members that did not rejoin, starts the next generation, picks its leader
    /// and protocol, and answers every parked JoinGroup.
    fn complete_join(&mut self, now: Instant) {
        let stragglers: Vec<String> =
            self.members.iter().filter(|(_, m)| m.awaiting_join.is_none()).map(|(id, _)| id.clone()).collect();
        for id in stragglers {
            tracing::info!(member = %id, "expelled from group: did not rejoin within the rebalance timeout");
            self.members.remove(&id);
            self.static_members.retain(|_, member| *member != id);
        }
        self.join_deadline = None;
        self.initial_delay = None;
        self.generation = self.generation.wrapping_add(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        // The leader stays if it rejoined; otherwise the longest-standing member leads.
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.member_ids_in_join_order().first().map(|id| id.to_string());
        }
        let leader = self.leader.clone().unwrap_or_default();
        let Some(protocol) = self.select_protocol(&leader) else {
            // Unreachable while joins are validated, but a group must never be left waiting on it.
            let ids: Vec<String> = self.members.keys().cloned().collect();
            for id in ids {
                if let Some(tx) = self.members.remove(&id).and_then(|mut m| m.awaiting_join.take()) {
                    let _ = tx.send(Err(GroupError::InconsistentGroupProtocol));
                }
            }
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        };
        self.protocol = Some(protocol.clone());
        self.state = GroupState::CompletingRebalance;
        self.pending_sync = self.members.keys().cloned().collect();
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        let everyone = self.members_metadata(&protocol);
        let protocol_type = self.protocol_type.clone().unwrap_or_default();
        for (id, m) in self.members.iter_mut() {
            m.assignment.clear();
            m.last_heartbeat = now;
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(Ok(JoinGroupResponse {
                    generation_id: self.generation,
                    protocol_type: protocol_type.clone(),
                    protocol_name: protocol.clone(),
                    leader_id: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader { everyone.clone() } else { Vec::new() },
                }));
            }
        }
    }

    /// Kafka's `selectProtocol`: of the protocols every member supports, each member votes for the one it prefers
    /// most, and the most votes win. Ties, which Kafka breaks arbitrarily, go to the leader's preference.
    fn select_protocol(&self, leader: &str) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .get(leader)?
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m.protocols.iter().find_map(|(name, _)| candidates.iter().position(|c| *c == name)) {
                votes[i] += 1;
            }
        }
        // max_by_key keeps the last maximum; reversing makes that the leader's most preferred of the tied.
        let (best, _) = votes.iter().enumerate().rev().max_by_key(|(_, v)| **v)?;
        candidates.get(best).map(|name| name.to_string())
    }

    fn members_metadata(&self, protocol: &str) -> Vec<(String, Option<String>, Vec<u8>)> {
        self.member_ids_in_join_order()
            .into_iter()
            .filter_map(|id| self.members.get(id).map(|m| (id.clone(), m.instance_id.clone(), m.metadata(protocol))))
            .collect()
    }

    /// The JoinGroup answer for the current generation, for a member rejoining without changes.
    fn current_join_response(&self, member_id: &str) -> JoinGroupResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        JoinGroupResponse {
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            members: if leader == member_id { self.members_metadata(&protocol) } else { Vec::new() },
            protocol_name: protocol,
            leader_id: leader,
            member_id: member_id.to_string(),
        }
    }

    /// Kafka's `validateCurrentMember`, shared by heartbeat, sync and commit.
    fn validate_member(&self, member_id: &str, generation_id: i32) -> Result<(), GroupError> {
        if !self.members.contains_key(member_id) {
            if self.fenced_members.contains(member_id) {
                return Err(GroupError::FencedInstanceId);
            }
            return Err(GroupError::UnknownMemberId);
        }
        if generation_id != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }
}

/// Every group of the broker and their committed offsets; Send + Sync, shared as `Arc<GroupCoordinator>`.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: Mutex<BTreeMap<String, Group>>,
    /// KIP-848 groups (`consumer_group.rs`); a group id is in one map or the other.
    consumer_groups: Mutex<BTreeMap<String, ConsumerGroup>>,
    offsets: OffsetStore,
    stopped: AtomicBool,
}

impl GroupCoordinator {
    /// Loads the committed offsets from `config.offsets_dir` and, when called inside a tokio runtime, starts the
    /// ticker that expires sessions and enforces rebalance timeouts. (Outside a runtime — an offline tool reading
    /// offsets, say — nothing ever times out.) The ticker stops with [`GroupCoordinator::shutdown`] or the last
    /// `Arc`.
    pub fn open(config: GroupConfig) -> Result<Arc<GroupCoordinator>, GroupError> {
        let offsets = OffsetStore::open(&config.offsets_dir)?;
        let coordinator = Arc::new(GroupCoordinator {
            config,
            groups: Mutex::new(BTreeMap::new()),
            consumer_groups: Mutex::new(BTreeMap::new()),
            offsets,
            stopped: AtomicBool::new(false),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(ticker(Arc::downgrade(&coordinator)));
        }
        Ok(coordinator)
    }

    /// Stops the ticker and answers every parked request with COORDINATOR_NOT_AVAILABLE; later requests get the
    /// same. Committed offsets are already durable.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
        let mut groups = self.groups.lock();
        for m in groups.values_mut().flat_map(|g| g.members.values_mut()) {
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(Err(GroupError::CoordinatorNotAvailable));
            }
            if let Some(tx) = m.awaiting_sync.take() {
                let _ = tx.send(Err(GroupError::CoordinatorNotAvailable));
            }
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &GroupConfig {
        &self.config
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

    /// JoinGroup: completes when the rebalance does — every member has rejoined, or the rebalance timeout (the
    /// longest of the members') expired and those that did not rejoin were expelled. A member rejoining a Stable or
    /// CompletingRebalance group with unchanged protocols, other than the leader, is answered at once with the
    /// current generation (it probably lost the earlier answer), as Kafka does.
    pub async fn join_group(&self, req: JoinGroupRequest) -> Result<JoinGroupResponse, GroupError> {
        let rx = match self.join_or_park(req)? {
            Joined::Now(response) => return Ok(response),
            Joined::Later(rx) => rx,
        };
        rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable))
    }

    fn join_or_park(&self, req: JoinGroupRequest) -> Result<Joined, GroupError> {
        self.check_join_request(&req)?;
        let now = Instant::now();
        let delay = self.initial_delay();
        let mut groups = self.groups.lock();
        // Checked under the lock: shutdown drains parked requests under it, so none can park after the drain.
        self.check_running()?;
        if !groups.contains_key(&req.group_id) && !req.member_id.is_empty() {
            return Err(GroupError::UnknownMemberId);
        }
        if self.consumer_groups.lock().get(&req.group_id).is_some_and(|g| !g.members.is_empty()) {
            // The group uses KIP-848's protocol: a classic member cannot join it.
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let group = groups.entry(req.group_id.clone()).or_insert_with(Group::new);
        group.pending_members.retain(|_, since| now.saturating_duration_since(*since) < PENDING_MEMBER_TTL);
        let registered = req.group_instance_id.as_ref().and_then(|i| group.static_members.get(i).cloned());
        if let Some(current) = &registered {
            if !req.member_id.is_empty() && req.member_id != *current {
                // Another process took this instance id over: this one is the zombie.
                return Err(GroupError::FencedInstanceId);
            }
        }
        let joiner = registered.as_deref().unwrap_or(&req.member_id);
        if !group.supports_protocols(joiner, &req.protocol_type, &req.protocols) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let (tx, rx) = oneshot::channel();
        if let (Some(current), true) = (&registered, req.member_id.is_empty()) {
            return match group.replace_static_member(current, req, tx, now, delay) {
                Some(response) => Ok(Joined::Now(response)),
                None => Ok(Joined::Later(rx)),
            };
        }
        if req.member_id.is_empty() {
            if req.require_known_member_id && req.group_instance_id.is_none() {
                let id = new_member_id(&req.client_id, group);
                group.pending_members.insert(id.clone(), now);
                return Err(GroupError::MemberIdRequired(id));
            }
            group.add_member(req, tx, now);
        } else if group.pending_members.remove(&req.member_id).is_some() {
            group.add_member(req, tx, now);
        } else if let Some(response) = group.rejoin(req, tx, now)? {
            return Ok(Joined::Now(response));
        }
        group.rebalance_for_join(now, delay);
        group.try_complete_join(now);
        Ok(Joined::Later(rx))
    }

    /// What a JoinGroup is refused for whatever the group's state: no group id, a session timeout outside the
    /// configured range, no protocol.
    fn check_join_request(&self, req: &JoinGroupRequest) -> Result<(), GroupError> {
        if req.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let timeouts = self.config.session_timeout_min_ms..=self.config.session_timeout_max_ms;
        if !timeouts.contains(&req.session_timeout_ms) {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        Ok(())
    }

    /// SyncGroup: the leader hands in the assignment (completing the rebalance: the group becomes Stable) and every
    /// member gets its own; a follower's request waits for the leader's.
    pub async fn sync_group(&self, req: SyncGroupRequest) -> Result<Vec<u8>, GroupError> {
        let rx = {
            let now = Instant::now();
            let mut groups = self.groups.lock();
            self.check_running()?; // under the lock, as in join_or_park
            let group = groups.get_mut(&req.group_id).ok_or(GroupError::UnknownMemberId)?;
            group.validate_member(&req.member_id, req.generation_id)?;
            if req.protocol_type.as_ref().is_some_and(|t| group.protocol_type.as_ref() != Some(t))
                || req.protocol_name.as_ref().is_some_and(|p| group.protocol.as_ref() != Some(p))
            {
                return Err(GroupError::InconsistentGroupProtocol);
            }
            let is_leader = group.leader.as_deref() == Some(req.member_id.as_str());
            let state = group.state;
            group.pending_sync.remove(&req.member_id);
            if group.pending_sync.is_empty() {
                group.sync_deadline = None;
            }
            let Some(m) = group.members.get_mut(&req.member_id) else {
                return Err(GroupError::UnknownMemberId);
            };
            m.last_heartbeat = now;
            match state {
                GroupState::PreparingRebalance => return Err(GroupError::RebalanceInProgress),
                GroupState::Stable => return Ok(m.assignment.clone()),
                // A classic group is never Assigning or Reconciling (those are KIP-848 states).
                GroupState::Empty | GroupState::Dead | GroupState::Assigning | GroupState::Reconciling => {
                    return Err(GroupError::UnknownMemberId)
                }
                GroupState::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            if let Some(old) = m.awaiting_sync.replace(tx) {
                let _ = old.send(Err(GroupError::RebalanceInProgress));
            }
            if is_leader {
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

    /// Heartbeat: keeps the member's session alive. RebalanceInProgress tells it to rejoin.
    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation_id: i32) -> Result<(), GroupError> {
        self.check_running()?;
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
        group.validate_member(member_id, generation_id)?;
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = Instant::now();
        }
        match group.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
            GroupState::Empty | GroupState::Dead | GroupState::Assigning | GroupState::Reconciling => {
                Err(GroupError::UnknownMemberId)
            }
        }
    }

    /// LeaveGroup: removes the member at once (rather than after its session timeout) and rebalances the rest.
    pub async fn leave_group(&self, group_id: &str, member_id: &str) -> Result<(), GroupError> {
        self.check_running()?;
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMemberId)?;
        if !group.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        tracing::debug!(group = group_id, member = member_id, "member left");
        group.remove_member(member_id, GroupError::UnknownMemberId, now, self.initial_delay());
        group.try_complete_join(now);
        Ok(())
    }

    /// LeaveGroup v3+ for one member, possibly static: by instance id (its registered member, which `member_id`, if
    /// given, must be: otherwise FENCED_INSTANCE_ID), or by member id.
    pub async fn leave_group_member(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        let Some(instance) = group_instance_id else { return self.leave_group(group_id, member_id).await };
        let registered = {
            let groups = self.groups.lock();
            let group = groups.get(group_id).ok_or(GroupError::UnknownMemberId)?;
            group.static_members.get(instance).cloned().ok_or(GroupError::UnknownMemberId)?
        };
        if !member_id.is_empty() && member_id != registered {
            return Err(GroupError::FencedInstanceId);
        }
        self.leave_group(group_id, &registered).await
    }

    /// OffsetCommit: stores offsets durably (fsynced before this returns).
    ///
    /// A member commits with its id and generation, and may do so while the group gathers members for a rebalance
    /// (it still owns its partitions until it rejoins) but not while the leader assigns. `generation_id < 0` with an
    /// empty member id is a "simple" commit by a client outside the group protocol, allowed only while the group has
    /// no members, as in Kafka.
    pub fn commit_offsets(
        &self,
        group_id: &str,
        member_id: &str,
        generation_id: i32,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.check_running()?;
        // A KIP-848 member commits with its member epoch (checked under the lock, committed outside it).
        let kip848 = self
            .consumer_groups
            .lock()
            .get(group_id)
            .filter(|g| !g.members.is_empty())
            .map(|g| g.validate_commit(member_id, generation_id));
        if let Some(valid) = kip848 {
            valid?;
            return self.offsets.commit(group_id, offsets);
        }
        {
            let mut groups = self.groups.lock();
            let simple = generation_id < 0 && member_id.is_empty();
            match groups.get_mut(group_id) {
                None if simple => {}
                None => return Err(GroupError::IllegalGeneration),
                Some(g) if simple && g.members.is_empty() => {}
                Some(g) => {
                    g.validate_member(member_id, generation_id)?;
                    if g.state == GroupState::CompletingRebalance {
                        return Err(GroupError::RebalanceInProgress);
                    }
                    // A commit is a sign of life, as in Kafka.
                    if let Some(m) = g.members.get_mut(member_id) {
                        m.last_heartbeat = Instant::now();
                    }
                }
            }
        }
        self.offsets.commit(group_id, offsets)
    }

    /// ConsumerGroupHeartbeat (KIP-848): joins, leaves or keeps a member of a consumer-protocol group, and hands it
    /// its assignment as it changes. `partitions` gives a topic's partition count. Refused for a classic group with
    /// members.
    pub fn consumer_heartbeat(
        &self,
        hb: Heartbeat,
        partitions: impl Fn(&str) -> Option<i32>,
        topics: impl Fn() -> Vec<String>,
    ) -> Result<HeartbeatAnswer, GroupError> {
        if hb.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.check_running()?;
        if self.groups.lock().get(&hb.group_id).is_some_and(|g| !g.members.is_empty()) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let mut groups = self.consumer_groups.lock();
        let group = groups.entry(hb.group_id.clone()).or_default();
        group.heartbeat(hb, partitions, topics, Instant::now())
    }

    /// A KIP-848 group, as ConsumerGroupDescribe reports it.
    pub fn consumer_group(&self, group_id: &str) -> Option<ConsumerGroup> {
        self.consumer_groups.lock().get(group_id).cloned()
    }

    /// TxnOffsetCommit's check of the sender (KIP-447): a consumer that gives its member id and generation must be
    /// the group's current member at that generation, so a zombie's transaction cannot commit offsets for
    /// partitions since reassigned. Without them (an older client) the commit is taken as it comes.
    pub fn validate_transactional_member(
        &self,
        group_id: &str,
        member_id: &str,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.check_running()?;
        if generation_id < 0 && member_id.is_empty() {
            return Ok(());
        }
        if let Some(g) = self.consumer_groups.lock().get(group_id).filter(|g| !g.members.is_empty()) {
            return g.validate_commit(member_id, generation_id);
        }
        match self.groups.lock().get(group_id) {
            Some(g) => g.validate_member(member_id, generation_id),
            None => Err(GroupError::IllegalGeneration),
        }
    }

    /// Stores the offsets a committed transaction carried (their senders were checked when they were sent).
    pub fn commit_transactional_offsets(
        &self,
        group_id: &str,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Result<(), GroupError> {
        self.check_running()?;
        self.offsets.commit(group_id, offsets)
    }

    /// OffsetFetch: the committed offsets of `partitions` (`None` for those never committed), or with `None`, every
    /// partition the group has committed.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Option<OffsetAndMetadata>)> {
        self.offsets.fetch(group_id, partitions)
    }

    /// ListGroups: every group with live state or committed offsets, in id order.
    pub fn list_groups(&self) -> Vec<GroupListing> {
        let mut out: BTreeMap<String, GroupListing> = self
            .offsets
            .groups()
            .into_iter()
            .map(|group_id| {
                let listing = GroupListing {
                    group_id: group_id.clone(),
                    protocol_type: CONSUMER_PROTOCOL_TYPE.into(),
                    state: GroupState::Empty,
                };
                (group_id, listing)
            })
            .collect();
        for (id, g) in self.groups.lock().iter() {
            let protocol_type = g.protocol_type.clone().unwrap_or_else(|| CONSUMER_PROTOCOL_TYPE.into());
            out.insert(id.clone(), GroupListing { group_id: id.clone(), protocol_type, state: g.state });
        }
        for (id, g) in self.consumer_groups.lock().iter().filter(|(_, g)| !g.members.is_empty()) {
            let state = consumer_group_state(g);
            out.insert(
                id.clone(),
                GroupListing { group_id: id.clone(), protocol_type: CONSUMER_PROTOCOL_TYPE.into(), state },
            );
        }
        out.into_values().collect()
    }

    /// DescribeGroups: a group's state and members. An unknown group is described as Dead with no members, as Kafka
    /// does; one known only by its committed offsets as Empty.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        if let Some(g) = self.consumer_groups.lock().get(group_id).filter(|g| !g.members.is_empty()) {
            // A KIP-848 group, in the classic terms: its epoch as the generation, assignments encoded as the
            // classic consumer protocol encodes them.
            return GroupDescription {
                group_id: group_id.to_string(),
                state: consumer_group_state(g),
                protocol_type: CONSUMER_PROTOCOL_TYPE.into(),
                protocol: g.assignor.clone(),
                generation: g.group_epoch,
                members: g
                    .members
                    .iter()
                    .map(|(id, m)| MemberDescription {
                        member_id: id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: Vec::new(),
                        assignment: super::consumer_protocol::encode_assignment(
                            &super::consumer_protocol::Assignment {
                                partitions: m
                                    .assigned
                                    .iter()
                                    .map(|(t, ps)| (t.clone(), ps.iter().copied().collect()))
                                    .collect(),
                                ..Default::default()
                            },
                        )
                        .unwrap_or_default(),
                    })
                    .collect(),
            };
        }
        let groups = self.groups.lock();
        let Some(g) = groups.get(group_id) else {
            let known = self.offsets.has_group(group_id);
            return GroupDescription {
                group_id: group_id.to_string(),
                state: if known { GroupState::Empty } else { GroupState::Dead },
                protocol_type: if known { CONSUMER_PROTOCOL_TYPE.into() } else { String::new() },
                protocol: String::new(),
                generation: -1,
                members: Vec::new(),
            };
        };
        // Like Kafka, metadata and assignments are only shown for a Stable group: otherwise they are in flux.
        let stable_protocol = g.protocol.as_deref().filter(|_| g.state == GroupState::Stable);
        GroupDescription {
            group_id: group_id.to_string(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: stable_protocol.unwrap_or_default().to_string(),
            generation: g.generation,
            members: g
                .member_ids_in_join_order()
                .into_iter()
                .filter_map(|id| g.members.get(id).map(|m| (id, m)))
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: stable_protocol.map(|p| m.metadata(p)).unwrap_or_default(),
                    assignment: if stable_protocol.is_some() { m.assignment.clone() } else { Vec::new() },
                })
                .collect(),
        }
    }

    /// Forgets every group's committed offsets for a deleted topic, so a topic re-created with the name starts
    /// fresh. A failure to record that is logged: the topic is gone either way.
    pub fn delete_topic(&self, topic: &str) {
        if let Err(e) = self.offsets.delete_topic(topic) {
            tracing::error!(topic, "cannot forget committed offsets of deleted topic: {e}");
        }
    }

    /// DeleteGroups: deletes a group without members, with its committed offsets.
    pub fn delete_group(&self, group_id: &str) -> Result<(), GroupError> {
        // The lock is held across the fsync so that nobody joins a group while it is being deleted.
        let mut groups = self.groups.lock();
        if groups.get(group_id).is_some_and(|g| !g.members.is_empty()) {
            return Err(GroupError::NonEmptyGroup);
        }
        let live = groups.remove(group_id).is_some();
        let had_offsets = self.offsets.delete_group(group_id)?;
        if !live && !had_offsets {
            return Err(GroupError::GroupIdNotFound(group_id.to_string()));
        }
        Ok(())
    }

    /// OffsetDelete: forgets the group's committed offsets of `partitions`. Refused for the topics the group's live
    /// members are assigned (their positions are in use), as Kafka refuses with GROUP_SUBSCRIBED_TO_TOPIC.
    pub fn delete_offsets(&self, group_id: &str, partitions: &[TopicPartition]) -> Result<(), GroupError> {
        let groups = self.groups.lock();
        let live = groups.get(group_id);
        if live.is_none() && !self.offsets.has_group(group_id) {
            return Err(GroupError::GroupIdNotFound(group_id.to_string()));
        }
        if let Some(g) = live {
            let subscribed: std::collections::BTreeSet<String> = g
                .members
                .values()
                .filter_map(|m| super::consumer_protocol::decode_assignment(&m.assignment).ok())
                .flat_map(|a| a.partitions.into_keys())
                .collect();
            if let Some(tp) = partitions.iter().find(|tp| subscribed.contains(&tp.topic)) {
                return Err(GroupError::SubscribedToTopic(tp.topic.clone()));
            }
        }
        self.offsets.delete_partitions(group_id, partitions)
    }

    /// Expires members whose session timed out, gives up on members that never synced, and completes rebalances
    /// whose time has come.
    fn tick(&self, now: Instant) {
        for (gid, g) in self.consumer_groups.lock().iter_mut() {
            if g.expire(now) {
                tracing::info!(group = %gid, "consumer group member expelled: session timed out");
            }
        }
        let delay = self.initial_delay();
        let mut groups = self.groups.lock();
        for (gid, g) in groups.iter_mut() {
            let expired: Vec<String> =
                g.members.iter().filter(|(_, m)| m.expired(now)).map(|(id, _)| id.clone()).collect();
            for id in expired {
                tracing::info!(group = %gid, member = %id, "member expelled: session timed out");
                g.remove_member(&id, GroupError::UnknownMemberId, now, delay);
            }
            if g.sync_deadline.is_some_and(|d| now >= d) {
                // Kafka's pending-sync timeout: a leader that never assigns, or a member that never fetches its
                // assignment while heartbeating, would otherwise hold the group forever.
                for id in std::mem::take(&mut g.pending_sync) {
                    tracing::info!(group = %gid, member = %id, "member expelled: never sent SyncGroup");
                    g.remove_member(&id, GroupError::UnknownMemberId, now, delay);
                }
                g.sync_deadline = None;
            }
            g.try_complete_join(now);
        }
    }
}

enum Joined {
    Now(JoinGroupResponse),
    Later(oneshot::Receiver<Result<JoinGroupResponse, GroupError>>),
}

async fn ticker(coordinator: Weak<GroupCoordinator>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(c) = coordinator.upgrade() else { return };
        if c.stopped.load(Ordering::Acquire) {
            return;
        }
        c.tick(Instant::now());
    }
}

/// A KIP-848 group's state in the classic listing's terms.
fn consumer_group_state(g: &ConsumerGroup) -> GroupState {
    match g.state() {
        "Empty" => GroupState::Empty,
        "Assigning" => GroupState::Assigning,
        "Reconciling" => GroupState::Reconciling,
        _ => GroupState::Stable,
    }
}

/// Kafka's member id: the client id, a dash and a random UUID.
fn new_member_id(client_id: &str, group: &Group) -> String {
    loop {
        let bits = rand::random::<u128>();
        // Version 4 (random) and the RFC 4122 variant, so it reads as the UUID it imitates.
        let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
        let hex = format!("{bits:032x}");
        let id = format!("{client_id}-{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
        if !group.members.contains_key(&id) {
            return id;
        }
    }
}
