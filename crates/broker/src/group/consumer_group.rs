//! KIP-848's consumer group protocol (Kafka 4's `group.protocol=consumer`): members only heartbeat
//! (ConsumerGroupHeartbeat), the coordinator computes the assignment itself (the `uniform` and `range` assignors) and
//! hands each member its share incrementally. There is no stop-the-world rebalance: a change of membership,
//! subscriptions or partition counts bumps the group epoch and a new target assignment; each member then gives up the
//! partitions it no longer has (the next heartbeat confirms it), takes the ones it gains as soon as nobody else holds
//! them, and moves to the group epoch once it holds nothing outside its target. The others keep consuming
//! throughout.
//!
//! A group is either classic or consumer: a classic JoinGroup for a consumer group (and a heartbeat for a classic
//! group with members) is refused as inconsistent, so two groups of either kind live side by side.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::GroupError;

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// How often members are asked to heartbeat (Kafka's `group.consumer.heartbeat.interval.ms` is 5 s; shorter here so
/// assignments reach members promptly on a small machine).
pub const HEARTBEAT_INTERVAL_MS: i32 = 1_000;
/// A member silent this long is removed (Kafka's `group.consumer.session.timeout.ms`).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// A ConsumerGroupHeartbeat, with topics by name.
#[derive(Clone, Debug, Default)]
pub struct Heartbeat {
    pub group_id: String,
    /// Chosen by the client (v1); empty asks the coordinator for one (v0).
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member leaving for a restart; otherwise the member's current epoch.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topics: Option<Vec<String>>,
    /// A regular expression over topic names (KIP-848 v1); `None`: unchanged, empty: none.
    pub subscribed_regex: Option<String>,
    pub assignor: Option<String>,
    /// The partitions the member holds; `None`: unchanged since the last heartbeat.
    pub owned: Option<Assignment>,
}

/// The answer: the member's id and epoch, and its assignment when it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    pub assignment: Option<Assignment>,
}

#[derive(Clone, Debug)]
pub struct ConsumerMember {
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    /// The topics it subscribes to: those named, and those its regular expression matches.
    pub subscribed: BTreeSet<String>,
    named: BTreeSet<String>,
    pub subscribed_regex: Option<String>,
    /// What the coordinator has given it (and not taken back).
    pub assigned: Assignment,
    /// What it last said it holds.
    reported: Assignment,
    /// Partitions taken back from it that it has not yet confirmed letting go: nobody else gets them before.
    revoking: Assignment,
    /// The assignment last sent, to send only changes.
    sent: Option<Assignment>,
    last_heartbeat: Instant,
}

/// One KIP-848 group.
#[derive(Clone, Debug, Default)]
pub struct ConsumerGroup {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
    /// Partition counts of the subscribed topics the target was computed for.
    partition_counts: BTreeMap<String, i32>,
}

impl ConsumerGroup {
    /// Kafka's names for a consumer group's states.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self.members.values().any(|m| m.member_epoch != self.group_epoch) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Handles one heartbeat. `partitions` gives a topic's partition count (`None`: no such topic); `topics` lists
    /// every topic, for regular-expression subscriptions.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        partitions: impl Fn(&str) -> Option<i32>,
        topics: impl Fn() -> Vec<String>,
        now: Instant,
    ) -> Result<HeartbeatAnswer, GroupError> {
        if let Some(re) = hb.subscribed_regex.as_deref().filter(|r| !r.is_empty()) {
            // Kafka takes RE2/J syntax; Rust's regex crate reads the same expressions clients send.
            if let Err(e) = regex::Regex::new(re) {
                return Err(GroupError::InvalidRegex(format!("{re:?}: {e}")));
            }
        }
        let member_id = match hb.member_epoch {
            -1 | -2 => {
                if self.members.remove(&hb.member_id).is_some() {
                    self.target.remove(&hb.member_id);
                    self.group_epoch += 1;
                }
                return Ok(HeartbeatAnswer {
                    member_id: hb.member_id,
                    member_epoch: hb.member_epoch,
                    heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
                    assignment: None,
                });
            }
            0 => {
                let member_id = if hb.member_id.is_empty() { new_member_id() } else { hb.member_id.clone() };
                // A static member restarting takes the place of its previous incarnation.
                if let Some(instance) = &hb.instance_id {
                    let old: Vec<String> = self
                        .members
                        .iter()
                        .filter(|(id, m)| m.instance_id.as_ref() == Some(instance) && **id != member_id)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in old {
                        self.members.remove(&id);
                        self.target.remove(&id);
                    }
                }
                self.members.insert(
                    member_id.clone(),
                    ConsumerMember {
                        instance_id: hb.instance_id.clone(),
                        client_id: hb.client_id.clone(),
                        client_host: hb.client_host.clone(),
                        member_epoch: 0,
                        subscribed: BTreeSet::new(),
                        named: BTreeSet::new(),
                        subscribed_regex: None,
                        assigned: Assignment::new(),
                        reported: Assignment::new(),
                        revoking: Assignment::new(),
                        sent: None,
                        last_heartbeat: now,
                    },
                );
                self.group_epoch += 1;
                member_id
            }
            epoch => {
                let m = self.members.get(&hb.member_id).ok_or(GroupError::UnknownMemberId)?;
                if epoch != m.member_epoch {
                    return Err(GroupError::FencedMemberEpoch);
                }
                hb.member_id.clone()
            }
        };
        let m = self.members.get_mut(&member_id).expect("present");
        m.last_heartbeat = now;
        if let Some(named) = hb.subscribed_topics {
            m.named = named.into_iter().collect();
        }
        if let Some(re) = hb.subscribed_regex {
            m.subscribed_regex = Some(re).filter(|r| !r.is_empty());
        }
        // The regular expression is matched against the topics as they are now: a topic created later joins the
        // subscription at the member's next heartbeat.
        let mut subscribed = m.named.clone();
        if let Some(re) = m.subscribed_regex.as_deref().and_then(|r| regex::Regex::new(&format!("^(?:{r})$")).ok()) {
            subscribed.extend(topics().into_iter().filter(|t| re.is_match(t)));
        }
        if subscribed != m.subscribed {
            m.subscribed = subscribed;
            self.group_epoch += 1;
        }
        if let Some(owned) = hb.owned {
            // What it no longer holds is released.
            for (t, ps) in m.revoking.iter_mut() {
                ps.retain(|p| owned.get(t).is_some_and(|o| o.contains(p)));
            }
            m.revoking.retain(|_, ps| !ps.is_empty());
            m.reported = owned;
        }
        if let Some(a) = hb.assignor.filter(|a| !a.is_empty()) {
            self.assignor = a;
        }
        // The subscribed topics' partition counts: a topic created or grown changes the target.
        let counts: BTreeMap<String, i32> = self
            .members
            .values()
            .flat_map(|m| m.subscribed.iter())
            .filter_map(|t| partitions(t).map(|n| (t.clone(), n)))
            .collect();
        if counts != self.partition_counts {
            self.partition_counts = counts;
            self.group_epoch += 1;
        }
        if self.assignment_epoch != self.group_epoch {
            self.target = match self.assignor.as_str() {
                "range" => range(&self.members, &self.partition_counts),
                _ => uniform(&self.members, &self.partition_counts),
            };
            self.assignment_epoch = self.group_epoch;
        }
        Ok(self.reconcile(&member_id))
    }

    /// Moves one member towards its target: partitions it no longer has are taken back at once, new ones given as
    /// soon as no other member holds (or still reports) them; at its target it reaches the group epoch.
    fn reconcile(&mut self, member_id: &str) -> HeartbeatAnswer {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let mut held_by_others: BTreeSet<(String, i32)> = BTreeSet::new();
        for (id, m) in &self.members {
            if id != member_id {
                for (t, ps) in m.assigned.iter().chain(m.reported.iter()).chain(m.revoking.iter()) {
                    held_by_others.extend(ps.iter().map(|p| (t.clone(), *p)));
                }
            }
        }
        let group_epoch = self.group_epoch;
        let m = self.members.get_mut(member_id).expect("present");
        for (t, ps) in m.assigned.iter_mut() {
            let (keep, lose): (BTreeSet<i32>, BTreeSet<i32>) =
                ps.iter().partition(|p| target.get(t).is_some_and(|tps| tps.contains(p)));
            if !lose.is_empty() {
                m.revoking.entry(t.clone()).or_default().extend(lose);
            }
            *ps = keep;
        }
        m.assigned.retain(|_, ps| !ps.is_empty());
        for (t, ps) in &target {
            for p in ps {
                if !held_by_others.contains(&(t.clone(), *p)) {
                    m.assigned.entry(t.clone()).or_default().insert(*p);
                }
            }
        }
        // The member is at the new epoch once it holds nothing outside its target (it has revoked what it lost);
        // partitions still held by others come to it later, at that epoch.
        let revoked_all = m.revoking.is_empty()
            && m.reported.iter().all(|(t, ps)| ps.iter().all(|p| target.get(t).is_some_and(|x| x.contains(p))));
        if revoked_all {
            m.member_epoch = group_epoch;
        }
        let changed = m.sent.as_ref() != Some(&m.assigned);
        if changed {
            m.sent = Some(m.assigned.clone());
        }
        HeartbeatAnswer {
            member_id: member_id.to_string(),
            member_epoch: m.member_epoch,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            assignment: changed.then(|| m.assigned.clone()),
        }
    }

    /// Removes members silent past the session timeout; true if any was.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.members.len();
        self.members.retain(|_, m| now.saturating_duration_since(m.last_heartbeat) <= SESSION_TIMEOUT);
        let expired = self.members.len() != before;
        if expired {
            self.target.retain(|id, _| self.members.contains_key(id));
            self.group_epoch += 1;
        }
        expired
    }

    /// OffsetCommit from a member: known, and not from an epoch ahead of its own.
    pub fn validate_commit(&self, member_id: &str, epoch: i32) -> Result<(), GroupError> {
        let m = self.members.get(member_id).ok_or(GroupError::UnknownMemberId)?;
        if epoch > m.member_epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }
}

/// The uniform assignor: every subscribed partition to one member, counts as even as they can be, each member
/// keeping what it holds as far as that allows (sticky), then the rest to the least loaded.
fn uniform(members: &BTreeMap<String, ConsumerMember>, counts: &BTreeMap<String, i32>) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members.keys().map(|id| (id.clone(), Assignment::new())).collect();
    let partitions: Vec<(String, i32)> =
        counts.iter().flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p))).collect();
    if members.is_empty() {
        return out;
    }
    // Each member holds `base` partitions, and `extra` of them one more.
    let (base, mut extra) = (partitions.len() / members.len(), partitions.len() % members.len());
    let mut load: BTreeMap<&String, usize> = members.keys().map(|id| (id, 0)).collect();
    let holder = |t: &str, p: i32| {
        members.iter().find(|(_, m)| m.subscribed.contains(t) && m.assigned.get(t).is_some_and(|ps| ps.contains(&p)))
    };
    let give =
        |out: &mut BTreeMap<String, Assignment>, load: &mut BTreeMap<&String, usize>, id: &String, t: &str, p| {
            *load.get_mut(id).expect("known") += 1;
            out.get_mut(id).expect("known").entry(t.to_string()).or_default().insert(p);
        };
    // Sticky: a member keeps what it holds up to `base`, then (while extras last) one more.
    let mut unplaced = Vec::new();
    for (t, p) in &partitions {
        match holder(t, *p) {
            Some((id, _)) if load[id] < base => give(&mut out, &mut load, id, t, *p),
            _ => unplaced.push((t.clone(), *p)),
        }
    }
    let mut free = Vec::new();
    for (t, p) in unplaced {
        match holder(&t, p) {
            Some((id, _)) if load[id] == base && extra > 0 => {
                extra -= 1;
                give(&mut out, &mut load, id, &t, p);
            }
            _ => free.push((t, p)),
        }
    }
    // The rest to the least loaded subscriber.
    for (t, p) in free {
        let least = members
            .iter()
            .filter(|(_, m)| m.subscribed.contains(&t))
            .min_by_key(|(id, _)| (load[id], (*id).clone()))
            .map(|(id, _)| id);
        if let Some(id) = least {
            give(&mut out, &mut load, id, &t, p);
        }
    }
    out
}

/// The range assignor: per topic, its subscribers (by member id) take contiguous ranges, the first ones one more.
fn range(members: &BTreeMap<String, ConsumerMember>, counts: &BTreeMap<String, i32>) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members.keys().map(|id| (id.clone(), Assignment::new())).collect();
    for (t, n) in counts {
        let subs: Vec<&String> = members.iter().filter(|(_, m)| m.subscribed.contains(t)).map(|(id, _)| id).collect();
        if subs.is_empty() {
            continue;
        }
        let (each, extra) = (*n as usize / subs.len(), *n as usize % subs.len());
        let mut next = 0;
        for (i, id) in subs.iter().enumerate() {
            let take = each + usize::from(i < extra);
            let entry = out.get_mut(*id).expect("known").entry(t.clone()).or_default();
            entry.extend((next..next + take).map(|p| p as i32));
            next += take;
        }
    }
    out.retain(|_, a| {
        a.retain(|_, ps| !ps.is_empty());
        true
    });
    out
}

/// A member id for a v0 client that asked for one (a UUID, as Kafka gives).
fn new_member_id() -> String {
    let bits = rand::random::<u128>();
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(member: &str, epoch: i32, topics: Option<&[&str]>, owned: Option<&[(&str, i32)]>) -> Heartbeat {
        Heartbeat {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            subscribed_topics: topics.map(|ts| ts.iter().map(|t| t.to_string()).collect()),
            owned: owned.map(|ps| {
                let mut a = Assignment::new();
                for (t, p) in ps {
                    a.entry(t.to_string()).or_default().insert(*p);
                }
                a
            }),
            ..Default::default()
        }
    }

    fn count(a: &Option<Assignment>) -> usize {
        a.as_ref().map_or(0, |a| a.values().map(|p| p.len()).sum())
    }

    #[test]
    fn a_second_member_gets_half_once_the_first_gives_it_up() {
        let parts = |t: &str| (t == "t").then_some(4);
        let now = Instant::now();
        let mut g = ConsumerGroup::default();
        let a = g.heartbeat(hb("a", 0, Some(&["t"]), Some(&[])), parts, || vec!["t".to_string()], now).unwrap();
        assert_eq!((a.member_epoch, count(&a.assignment)), (3, 4));
        // b joins: the target splits 2/2. b is at the new epoch at once, but a still holds everything.
        let b = g.heartbeat(hb("b", 0, Some(&["t"]), Some(&[])), parts, || vec!["t".to_string()], now).unwrap();
        assert_eq!((b.member_epoch, count(&b.assignment)), (5, 0));
        assert_eq!(g.state(), "Reconciling");
        // a's next heartbeat takes two back; a stays at its epoch until it confirms it let them go.
        let a2 = g.heartbeat(hb("a", 3, None, None), parts, || vec!["t".to_string()], now).unwrap();
        assert_eq!((a2.member_epoch, count(&a2.assignment)), (3, 2));
        assert_eq!(g.heartbeat(hb("b", 5, None, None), parts, || vec!["t".to_string()], now).unwrap().assignment, None);
        let kept: Vec<(&str, i32)> = a2.assignment.as_ref().unwrap()["t"].iter().map(|p| ("t", *p)).collect();
        let a3 = g.heartbeat(hb("a", 3, None, Some(&kept)), parts, || vec!["t".to_string()], now).unwrap();
        assert_eq!((a3.member_epoch, a3.assignment), (5, None));
        let b2 = g.heartbeat(hb("b", 5, None, None), parts, || vec!["t".to_string()], now).unwrap();
        assert_eq!((b2.member_epoch, count(&b2.assignment)), (5, 2));
        assert_eq!(g.state(), "Stable");
        // A stale epoch is fenced; an unknown member is told so; a member leaving rebalances the other.
        assert!(matches!(
            g.heartbeat(hb("a", 3, None, None), parts, || vec!["t".to_string()], now),
            Err(GroupError::FencedMemberEpoch)
        ));
        assert!(matches!(
            g.heartbeat(hb("zz", 5, None, None), parts, || vec!["t".to_string()], now),
            Err(GroupError::UnknownMemberId)
        ));
        g.heartbeat(hb("a", -1, None, None), parts, || vec!["t".to_string()], now).unwrap();
        let b3 = g.heartbeat(hb("b", 5, None, None), parts, || vec!["t".to_string()], now).unwrap();
        assert_eq!((b3.member_epoch, count(&b3.assignment)), (6, 4));
    }

    #[test]
    fn uniform_is_balanced_and_sticky() {
        let now = Instant::now();
        let parts = |t: &str| (t == "t").then_some(4);
        let mut g = ConsumerGroup::default();
        for id in ["a", "b"] {
            g.heartbeat(hb(id, 0, Some(&["t"]), Some(&[])), parts, || vec!["t".to_string()], now).unwrap();
        }
        for _ in 0..3 {
            for id in ["a", "b"] {
                let e = g.members[id].member_epoch;
                let owned: Vec<(String, i32)> =
                    g.members[id].assigned.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p))).collect();
                let owned: Vec<(&str, i32)> = owned.iter().map(|(t, p)| (t.as_str(), *p)).collect();
                g.heartbeat(hb(id, e, None, Some(&owned)), parts, || vec!["t".to_string()], now).unwrap();
            }
        }
        let before = g.target.clone();
        g.heartbeat(hb("c", 0, Some(&["t"]), Some(&[])), parts, || vec!["t".to_string()], now).unwrap();
        let sizes: Vec<usize> = g.target.values().map(|a| a.values().map(|p| p.len()).sum()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 4);
        assert!(sizes.iter().all(|n| (1..=2).contains(n)), "{sizes:?}");
        // a and b each keep partitions they had.
        for id in ["a", "b"] {
            assert!(g.target[id]["t"].iter().all(|p| before[id]["t"].contains(p)), "{id} moved");
        }
    }

    #[test]
    fn range_gives_contiguous_ranges_per_topic() {
        let mut members = BTreeMap::new();
        for id in ["a", "b"] {
            members.insert(
                id.to_string(),
                ConsumerMember {
                    instance_id: None,
                    client_id: String::new(),
                    client_host: String::new(),
                    member_epoch: 0,
                    subscribed: ["t".to_string()].into(),
                    named: ["t".to_string()].into(),
                    subscribed_regex: None,
                    assigned: Assignment::new(),
                    reported: Assignment::new(),
                    revoking: Assignment::new(),
                    sent: None,
                    last_heartbeat: Instant::now(),
                },
            );
        }
        let out = range(&members, &[("t".to_string(), 5)].into());
        assert_eq!(out["a"]["t"], [0, 1, 2].into());
        assert_eq!(out["b"]["t"], [3, 4].into());
    }
}
