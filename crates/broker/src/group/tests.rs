//! Scenario tests of the coordinator's state machine, through the raw Kafka-shaped API (as the wire listener will
//! drive it) and through [`GroupMember`] (as in-process consumers do). Timeouts run on paused tokio time, so a
//! session expiry of seconds takes milliseconds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::consumer_protocol::{self, Assignment, Subscription};
use super::*;

const SESSION_MS: u64 = 10_000;
const REBALANCE_MS: u64 = 5_000;

fn config(dir: &Path) -> GroupConfig {
    GroupConfig {
        session_timeout_min_ms: 1_000,
        session_timeout_max_ms: 60_000,
        initial_rebalance_delay_ms: 0,
        offsets_dir: dir.to_path_buf(),
    }
}

fn open(dir: &Path) -> Arc<GroupCoordinator> {
    GroupCoordinator::open(config(dir)).unwrap()
}

/// Topic "t" has 4 partitions and "u" 2; nothing else exists.
fn partitions(topic: &str) -> Option<i32> {
    match topic {
        "t" => Some(4),
        "u" => Some(2),
        _ => None,
    }
}

fn subscription(topics: &[&str]) -> Vec<u8> {
    let topics = topics.iter().map(|t| t.to_string()).collect();
    consumer_protocol::encode_subscription(&Subscription { topics, ..Subscription::default() }).unwrap()
}

fn assignment(parts: &[(&str, &[i32])]) -> Vec<u8> {
    let partitions = parts.iter().map(|(t, ps)| (t.to_string(), ps.to_vec())).collect();
    consumer_protocol::encode_assignment(&Assignment { version: 0, partitions, user_data: None }).unwrap()
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn tps(topic: &str, ps: &[i32]) -> Vec<TopicPartition> {
    ps.iter().map(|&p| tp(topic, p)).collect()
}

fn offset(offset: i64) -> OffsetAndMetadata {
    OffsetAndMetadata { offset, metadata: String::new(), commit_timestamp_ms: 1 }
}

/// A JoinGroup as a Kafka client would send it, offering `protocols` (each with a subscription to "t").
fn join_request(member_id: &str, protocols: &[&str]) -> JoinGroupRequest {
    JoinGroupRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        require_known_member_id: false,
        client_id: "rdkafka".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: protocols.iter().map(|p| (p.to_string(), subscription(&["t"]))).collect(),
    }
}

fn sync_request(member_id: &str, generation_id: i32, assignments: Vec<(String, Vec<u8>)>) -> SyncGroupRequest {
    SyncGroupRequest {
        group_id: "g".into(),
        generation_id,
        member_id: member_id.into(),
        protocol_type: None,
        protocol_name: None,
        assignments,
    }
}

fn spawn_join(c: &Arc<GroupCoordinator>, req: JoinGroupRequest) -> JoinHandle<Result<JoinGroupResponse, GroupError>> {
    let c = c.clone();
    tokio::spawn(async move { c.join_group(req).await })
}

fn spawn_sync(c: &Arc<GroupCoordinator>, req: SyncGroupRequest) -> JoinHandle<Result<Vec<u8>, GroupError>> {
    let c = c.clone();
    tokio::spawn(async move { c.sync_group(req).await })
}

/// Lets spawned tasks run up to their next wait, without moving (paused) time on by more than a millisecond.
/// A stable one-member group (generation 1) that a second member joins: returns the leader's first join and the
/// follower's join into generation 2 (the leader's rejoin is answered too, but not kept).
async fn leader_and_follower(c: &Arc<GroupCoordinator>) -> (JoinGroupResponse, JoinGroupResponse) {
    let a = c.join_group(join_request("", &["range"])).await.unwrap();
    c.sync_group(sync_request(&a.member_id, 1, vec![])).await.unwrap();
    let b = spawn_join(c, join_request("", &["range"]));
    settle().await;
    c.join_group(join_request(&a.member_id, &["range"])).await.unwrap();
    let b = b.await.unwrap().unwrap();
    (a, b)
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Runs a scenario with a deadline in (paused, so instantly passing) virtual time: a request that is never answered
/// fails the test instead of hanging it.
async fn within<T>(scenario: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(600), scenario).await.expect("the scenario hung")
}

fn member(c: &Arc<GroupCoordinator>, client: &str, topics: &[&str]) -> GroupMember {
    GroupMember::new(
        c.clone(),
        "g".into(),
        client.into(),
        topics.iter().map(|t| t.to_string()).collect(),
        vec!["range".into()],
        Duration::from_millis(SESSION_MS),
        Duration::from_millis(REBALANCE_MS),
    )
}

/// Brings `a` (already joined, alone) and a new `b` into one generation: b's join starts a rebalance, a rejoins.
async fn join_second(a: &mut GroupMember, b: &mut GroupMember) -> (Vec<TopicPartition>, Vec<TopicPartition>) {
    let (rb, ra) = tokio::join!(b.join(partitions), async {
        settle().await; // b's join first, so a's heartbeat sees the rebalance
        assert!(matches!(a.heartbeat(), Err(GroupError::RebalanceInProgress)));
        a.join(partitions).await
    });
    (ra.unwrap(), rb.unwrap())
}

#[tokio::test(start_paused = true)]
async fn two_members_join_the_leader_assigns_and_generations_increase() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());

        // Alone, the first member's join completes at once: generation 1, and it leads.
        let a = c.join_group(join_request("", &["range"])).await.unwrap();
        assert_eq!((a.generation_id, a.protocol_name.as_str(), a.protocol_type.as_str()), (1, "range", "consumer"));
        assert_eq!(a.leader_id, a.member_id);
        assert!(a.member_id.starts_with("rdkafka-"), "{}", a.member_id);
        assert_eq!(a.members.len(), 1);
        let got = c.sync_group(sync_request(
            &a.member_id,
            1,
            vec![(a.member_id.clone(), assignment(&[("t", &[0, 1, 2, 3])]))],
        ));
        assert_eq!(got.await.unwrap(), assignment(&[("t", &[0, 1, 2, 3])]));
        assert_eq!(c.describe_group("g").state, GroupState::Stable);

        // A second member's join waits for the first to rejoin, which its heartbeat tells it to.
        let b = spawn_join(&c, join_request("", &["range"]));
        settle().await;
        assert!(!b.is_finished());
        assert_eq!(c.describe_group("g").state, GroupState::PreparingRebalance);
        assert!(matches!(c.heartbeat("g", &a.member_id, 1), Err(GroupError::RebalanceInProgress)));
        let a2 = c.join_group(join_request(&a.member_id, &["range"])).await.unwrap();
        let b = b.await.unwrap().unwrap();
        assert_eq!((a2.generation_id, b.generation_id), (2, 2));
        assert_eq!((a2.leader_id.as_str(), b.leader_id.as_str()), (a.member_id.as_str(), a.member_id.as_str()));
        assert_ne!(a.member_id, b.member_id);
        // Only the leader learns the members, with their subscriptions, in join order.
        let ids: Vec<&str> = a2.members.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(ids, [a.member_id.as_str(), b.member_id.as_str()]);
        assert!(a2.members.iter().all(|(_, _, md)| *md == subscription(&["t"])));
        assert!(b.members.is_empty());
        assert_eq!(c.describe_group("g").state, GroupState::CompletingRebalance);

        // Both get their assignment once the leader syncs; the previous generation is fenced.
        let b_sync = spawn_sync(&c, sync_request(&b.member_id, 2, vec![]));
        let plan = vec![
            (a.member_id.clone(), assignment(&[("t", &[0, 1])])),
            (b.member_id.clone(), assignment(&[("t", &[2, 3])])),
        ];
        assert!(matches!(
            c.sync_group(sync_request(&a.member_id, 1, plan.clone())).await,
            Err(GroupError::IllegalGeneration)
        ));
        assert_eq!(c.sync_group(sync_request(&a.member_id, 2, plan)).await.unwrap(), assignment(&[("t", &[0, 1])]));
        assert_eq!(b_sync.await.unwrap().unwrap(), assignment(&[("t", &[2, 3])]));
        c.heartbeat("g", &a.member_id, 2).unwrap();
        c.heartbeat("g", &b.member_id, 2).unwrap();
        assert!(matches!(c.heartbeat("g", &b.member_id, 1), Err(GroupError::IllegalGeneration)));

        let d = c.describe_group("g");
        assert_eq!((d.state, d.generation, d.protocol.as_str()), (GroupState::Stable, 2, "range"));
        let members: Vec<(String, Vec<u8>, Vec<u8>)> =
            d.members.into_iter().map(|m| (m.member_id, m.metadata, m.assignment)).collect();
        assert_eq!(
            members,
            [
                (a.member_id.clone(), subscription(&["t"]), assignment(&[("t", &[0, 1])])),
                (b.member_id.clone(), subscription(&["t"]), assignment(&[("t", &[2, 3])])),
            ]
        );
        assert_eq!(
            c.list_groups(),
            vec![GroupListing { group_id: "g".into(), protocol_type: "consumer".into(), state: GroupState::Stable }]
        );
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_followers_sync_waits_for_the_leader() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let (a, b) = leader_and_follower(&c).await;

        let waiting = spawn_sync(&c, sync_request(&b.member_id, 2, vec![]));
        tokio::time::sleep(Duration::from_millis(REBALANCE_MS / 2)).await;
        assert!(!waiting.is_finished(), "a follower's sync must wait for the leader's");
        // Waiting does not cost the follower its session, and heartbeats are fine meanwhile.
        c.heartbeat("g", &b.member_id, 2).unwrap();
        // The leader may leave members out: they get an empty assignment.
        let plan = vec![(b.member_id.clone(), assignment(&[("t", &[3])]))];
        assert_eq!(c.sync_group(sync_request(&a.member_id, 2, plan)).await.unwrap(), Vec::<u8>::new());
        assert_eq!(waiting.await.unwrap().unwrap(), assignment(&[("t", &[3])]));
        // A late sync in the Stable group just returns the assignment.
        assert_eq!(c.sync_group(sync_request(&b.member_id, 2, vec![])).await.unwrap(), assignment(&[("t", &[3])]));
        // SyncGroup v5+ names the protocol; a mismatch is refused.
        let mut wrong = sync_request(&b.member_id, 2, vec![]);
        wrong.protocol_name = Some("roundrobin".into());
        assert!(matches!(c.sync_group(wrong).await, Err(GroupError::InconsistentGroupProtocol)));
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_silent_member_is_expelled_after_its_session_timeout() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let mut a = member(&c, "a", &["t"]);
        let mut b = member(&c, "b", &["t"]);
        assert_eq!(a.join(partitions).await.unwrap(), tps("t", &[0, 1, 2, 3]));
        let (pa, pb) = join_second(&mut a, &mut b).await;
        assert_eq!((pa.len(), pb.len()), (2, 2));
        assert_eq!((a.generation(), b.generation()), (2, 2));

        // b stops heartbeating (it crashed); a keeps going and is told to rejoin once b's session is over.
        let started = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match a.heartbeat() {
                Ok(()) => assert!(started.elapsed() <= Duration::from_millis(SESSION_MS + 1_000), "b never expired"),
                Err(GroupError::RebalanceInProgress) => break,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(started.elapsed() > Duration::from_millis(SESSION_MS));
        assert_eq!(a.join(partitions).await.unwrap(), tps("t", &[0, 1, 2, 3]));
        assert_eq!(a.generation(), 3);
        assert_eq!(c.describe_group("g").members.len(), 1);
        assert!(matches!(b.heartbeat(), Err(GroupError::UnknownMemberId)));
        assert!(matches!(b.commit(vec![(tp("t", 0), offset(1))]), Err(GroupError::UnknownMemberId)));
        // The expelled member rejoins as a new member, which rebalances the group again.
        let (pa, pb) = join_second(&mut a, &mut b).await;
        assert_eq!((pa.len(), pb.len(), a.generation()), (2, 2, 4));
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn the_last_member_expiring_empties_the_group() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let mut a = member(&c, "a", &["t"]);
        a.join(partitions).await.unwrap();
        tokio::time::sleep(Duration::from_millis(SESSION_MS + 500)).await;
        let d = c.describe_group("g");
        assert_eq!((d.state, d.generation, d.members.len()), (GroupState::Empty, 2, 0));
        // An empty group takes simple commits again.
        c.commit_offsets("g", "", -1, vec![(tp("t", 0), offset(7))]).unwrap();
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn members_that_do_not_rejoin_in_time_are_expelled() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let mut a = member(&c, "a", &["t"]);
        let mut b = member(&c, "b", &["t"]);
        a.join(partitions).await.unwrap();
        join_second(&mut a, &mut b).await;

        // A third member arrives; a rejoins; b keeps heartbeating (so its session is fine) but never rejoins.
        let mut third = member(&c, "c", &["t"]);
        let started = tokio::time::Instant::now();
        let (pc, pa, expelled_after) = tokio::join!(
            third.join(partitions),
            async {
                settle().await;
                assert!(matches!(a.heartbeat(), Err(GroupError::RebalanceInProgress)));
                let joined = a.join(partitions).await;
                // The join waited out the rebalance timeout for b (not b's longer session), then went on without it.
                let waited = started.elapsed();
                assert!(waited >= Duration::from_millis(REBALANCE_MS), "{waited:?}");
                assert!(waited < Duration::from_millis(REBALANCE_MS + 500), "{waited:?}");
                joined
            },
            async {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match b.heartbeat() {
                        Err(GroupError::RebalanceInProgress) => {}
                        Err(GroupError::UnknownMemberId) => break started.elapsed(),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        );
        assert!(expelled_after < Duration::from_millis(SESSION_MS));
        assert_eq!((pa.unwrap().len(), pc.unwrap().len()), (2, 2));
        assert_eq!((a.generation(), third.generation()), (3, 3));
        assert_eq!(c.describe_group("g").members.len(), 2);
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn leaving_rebalances_the_rest() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let mut a = member(&c, "a", &["t"]);
        let mut b = member(&c, "b", &["t"]);
        a.join(partitions).await.unwrap();
        join_second(&mut a, &mut b).await;
        let b_id = b.member_id().to_string();
        b.leave().await.unwrap();
        assert!(matches!(c.heartbeat("g", &b_id, 2), Err(GroupError::UnknownMemberId)));
        assert!(matches!(c.leave_group("g", &b_id).await, Err(GroupError::UnknownMemberId)));
        assert!(matches!(a.heartbeat(), Err(GroupError::RebalanceInProgress)));
        assert_eq!(a.join(partitions).await.unwrap(), tps("t", &[0, 1, 2, 3]));
        assert_eq!(a.generation(), 3);
        let a_id = a.member_id().to_string();
        a.leave().await.unwrap();
        let d = c.describe_group("g");
        assert_eq!((d.state, d.generation), (GroupState::Empty, 4));
        assert!(matches!(c.heartbeat("g", &a_id, 3), Err(GroupError::UnknownMemberId)));
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn commits_are_fenced_by_member_generation_and_state() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let commit =
            |m: &str, generation: i32, o: i64| c.commit_offsets("g", m, generation, vec![(tp("t", 0), offset(o))]);

        // No group yet: only a simple commit.
        assert!(matches!(commit("", 3, 1), Err(GroupError::IllegalGeneration)));
        commit("", -1, 1).unwrap();
        assert!(matches!(c.commit_offsets("", "", -1, vec![]), Err(GroupError::InvalidGroupId)));

        let a = c.join_group(join_request("", &["range"])).await.unwrap();
        let a_id = a.member_id.clone();
        // CompletingRebalance: the assignment is being decided.
        assert!(matches!(commit(&a_id, 1, 2), Err(GroupError::RebalanceInProgress)));
        c.sync_group(sync_request(&a_id, 1, vec![])).await.unwrap();
        commit(&a_id, 1, 2).unwrap();
        // A simple commit while the group has members, or a commit by a stranger.
        assert!(matches!(commit("", -1, 3), Err(GroupError::UnknownMemberId)));
        assert!(matches!(commit("nobody", 1, 3), Err(GroupError::UnknownMemberId)));

        // A rebalance starts: a still owns its partitions until it rejoins, so it may commit them.
        let b = spawn_join(&c, join_request("", &["range"]));
        settle().await;
        commit(&a_id, 1, 3).unwrap();
        let a2 = c.join_group(join_request(&a_id, &["range"])).await.unwrap();
        b.await.unwrap().unwrap();
        // Generation 2 now: the old generation is stale.
        assert!(matches!(commit(&a_id, 1, 4), Err(GroupError::IllegalGeneration)));
        c.sync_group(sync_request(&a_id, a2.generation_id, vec![])).await.unwrap();
        assert!(matches!(commit(&a_id, 1, 4), Err(GroupError::IllegalGeneration)));
        commit(&a_id, 2, 5).unwrap();
        assert_eq!(c.fetch_offsets("g", None), vec![(tp("t", 0), Some(offset(5)))]);
        assert_eq!(c.fetch_offsets("g", Some(&[tp("t", 1)])), vec![(tp("t", 1), None)]);
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn joins_are_validated() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let with = |f: &dyn Fn(&mut JoinGroupRequest)| {
            let mut r = join_request("", &["range"]);
            f(&mut r);
            r
        };
        let coordinator = &c;
        let err = |r| async move { coordinator.join_group(r).await.unwrap_err() };
        assert!(matches!(err(with(&|r| r.group_id.clear())).await, GroupError::InvalidGroupId));
        assert!(matches!(err(with(&|r| r.session_timeout_ms = 999)).await, GroupError::InvalidSessionTimeout));
        assert!(matches!(err(with(&|r| r.session_timeout_ms = 60_001)).await, GroupError::InvalidSessionTimeout));
        assert!(matches!(err(with(&|r| r.protocols.clear())).await, GroupError::InconsistentGroupProtocol));
        assert!(matches!(err(with(&|r| r.protocol_type.clear())).await, GroupError::InconsistentGroupProtocol));
        assert!(matches!(err(join_request("made-up", &["range"])).await, GroupError::UnknownMemberId));
        assert!(c.list_groups().is_empty(), "failed joins leave no group behind");

        let a = c.join_group(join_request("", &["range", "roundrobin"])).await.unwrap();
        assert!(matches!(err(join_request("made-up", &["range"])).await, GroupError::UnknownMemberId));
        assert!(matches!(err(join_request("", &["sticky"])).await, GroupError::InconsistentGroupProtocol));
        assert!(matches!(
            err(with(&|r| r.protocol_type = "connect".into())).await,
            GroupError::InconsistentGroupProtocol
        ));
        assert_eq!(c.describe_group("g").members.len(), 1);
        // The only member may change its protocols freely.
        let a2 = c.join_group(join_request(&a.member_id, &["roundrobin"])).await.unwrap();
        assert_eq!((a2.generation_id, a2.protocol_name.as_str()), (2, "roundrobin"));
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn the_protocol_is_the_one_most_members_prefer() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let a = c.join_group(join_request("", &["roundrobin", "range"])).await.unwrap();
        assert_eq!(a.protocol_name, "roundrobin");
        c.sync_group(sync_request(&a.member_id, 1, vec![])).await.unwrap();

        // b prefers range: one vote each, and the tie goes to the leader's preference.
        let b = spawn_join(&c, join_request("", &["range", "roundrobin"]));
        settle().await;
        let a2 = c.join_group(join_request(&a.member_id, &["roundrobin", "range"])).await.unwrap();
        let b = b.await.unwrap().unwrap();
        assert_eq!((a2.protocol_name.as_str(), b.protocol_name.as_str()), ("roundrobin", "roundrobin"));
        c.sync_group(sync_request(&a.member_id, 2, vec![])).await.unwrap();

        // A third member that only speaks range: the only common protocol.
        let d = spawn_join(&c, join_request("", &["range"]));
        settle().await;
        let a3 = spawn_join(&c, join_request(&a.member_id, &["roundrobin", "range"]));
        let b3 = c.join_group(join_request(&b.member_id, &["range", "roundrobin"])).await.unwrap();
        assert_eq!(b3.protocol_name, "range");
        assert_eq!(a3.await.unwrap().unwrap().protocol_name, "range");
        assert_eq!(d.await.unwrap().unwrap().generation_id, 3);
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_follower_rejoining_gets_the_current_generation() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let mut a = member(&c, "a", &["t"]);
        let mut b = member(&c, "b", &["t"]);
        a.join(partitions).await.unwrap();
        let (_, pb) = join_second(&mut a, &mut b).await;
        // A follower that lost its JoinGroup answer asks again: no rebalance, same generation and partitions.
        assert_eq!(b.join(partitions).await.unwrap(), pb);
        assert_eq!((b.generation(), c.describe_group("g").state), (2, GroupState::Stable));
        a.heartbeat().unwrap();
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_changed_follower_or_a_rejoining_leader_rebalances() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let (a, b) = leader_and_follower(&c).await;
        c.sync_group(sync_request(&a.member_id, 2, vec![])).await.unwrap();

        // The follower subscribes to more topics.
        let mut changed = join_request(&b.member_id, &["range"]);
        changed.protocols[0].1 = subscription(&["t", "u"]);
        let b3 = spawn_join(&c, changed);
        settle().await;
        assert_eq!(c.describe_group("g").state, GroupState::PreparingRebalance);
        let a3 = c.join_group(join_request(&a.member_id, &["range"])).await.unwrap();
        assert_eq!(b3.await.unwrap().unwrap().generation_id, 3);
        let subscriptions: Vec<Vec<u8>> = a3.members.iter().map(|(_, _, md)| md.clone()).collect();
        assert_eq!(subscriptions, [subscription(&["t"]), subscription(&["t", "u"])]);
        c.sync_group(sync_request(&a.member_id, 3, vec![])).await.unwrap();

        // The leader rejoining unchanged still rebalances: it may want to reassign (new partitions, say).
        let a4 = spawn_join(&c, join_request(&a.member_id, &["range"]));
        settle().await;
        assert!(!a4.is_finished());
        assert!(matches!(c.heartbeat("g", &b.member_id, 3), Err(GroupError::RebalanceInProgress)));
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_never_syncs_is_expelled() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let (a, b) = leader_and_follower(&c).await;
        let b_sync = spawn_sync(&c, sync_request(&b.member_id, 2, vec![]));
        // The leader heartbeats (that is allowed while the assignment is pending), so its session never expires,
        // but it never syncs: the rebalance timeout, not the session timeout, must end the wait.
        let started = tokio::time::Instant::now();
        let expelled = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match c.heartbeat("g", &a.member_id, 2) {
                Ok(()) => {
                    assert!(started.elapsed() < Duration::from_millis(SESSION_MS), "the leader was never expelled")
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(expelled, GroupError::UnknownMemberId));
        assert!(started.elapsed() > Duration::from_millis(REBALANCE_MS));
        assert!(matches!(b_sync.await.unwrap(), Err(GroupError::RebalanceInProgress)));
        let b2 = c.join_group(join_request(&b.member_id, &["range"])).await.unwrap();
        assert_eq!((b2.generation_id, b2.leader_id.as_str()), (3, b.member_id.as_str()));
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn the_initial_rebalance_delay_gathers_a_starting_group() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c =
            GroupCoordinator::open(GroupConfig { initial_rebalance_delay_ms: 3_000, ..config(dir.path()) }).unwrap();
        let started = tokio::time::Instant::now();
        let a = spawn_join(&c, join_request("", &["range"]));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!a.is_finished());
        let b = spawn_join(&c, join_request("", &["range"]));
        let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
        // One generation for both, after the delay restarted by b, capped by the rebalance timeout.
        assert_eq!((a.generation_id, b.generation_id), (1, 1));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(REBALANCE_MS) && waited < Duration::from_millis(REBALANCE_MS + 200),
            "{waited:?}"
        );
        // The delay applies only to an empty group's first rebalance.
        c.sync_group(sync_request(&a.leader_id, 1, vec![])).await.unwrap();
        let third = spawn_join(&c, join_request("", &["range"]));
        settle().await;
        let at = tokio::time::Instant::now();
        let (a2, b2) = tokio::join!(
            c.join_group(join_request(&a.member_id, &["range"])),
            c.join_group(join_request(&b.member_id, &["range"]))
        );
        assert_eq!((a2.unwrap().generation_id, b2.unwrap().generation_id), (2, 2));
        assert_eq!(third.await.unwrap().unwrap().generation_id, 2);
        assert!(at.elapsed() < Duration::from_millis(100));
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn in_process_members_and_kafka_clients_lead_each_other() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());

        // A Kafka client leads (it joined first) and assigns with its own assignor; the in-process member follows.
        let kafka = c.join_group(join_request("", &["roundrobin", "range"])).await.unwrap();
        c.sync_group(sync_request(&kafka.member_id, 1, vec![])).await.unwrap();
        let mut ours = member(&c, "weir", &["t"]);
        let (ours_partitions, kafka2) = tokio::join!(ours.join(partitions), async {
            settle().await;
            let joined = c.join_group(join_request(&kafka.member_id, &["roundrobin", "range"])).await.unwrap();
            // The in-process member's subscription decodes like any client's.
            let subs: Vec<Subscription> =
                joined.members.iter().map(|(_, _, md)| consumer_protocol::decode_subscription(md).unwrap()).collect();
            assert!(subs.iter().all(|s| s.topics == ["t"]));
            let plan = joined
                .members
                .iter()
                .map(|(id, _, _)| {
                    let mine = *id == joined.member_id;
                    (id.clone(), assignment(&[("t", if mine { &[0, 1] } else { &[2, 3] })]))
                })
                .collect();
            c.sync_group(sync_request(&joined.member_id, joined.generation_id, plan)).await.unwrap();
            joined
        });
        // One vote each (the Kafka client prefers roundrobin, ours range); the tie goes to the leader's preference.
        assert_eq!(kafka2.protocol_name, "roundrobin");
        assert_eq!(ours_partitions.unwrap(), tps("t", &[2, 3]));

        // The Kafka client leaves; the in-process member now leads and assigns to a new Kafka client.
        c.leave_group("g", &kafka.member_id).await.unwrap();
        let newcomer = spawn_join(&c, join_request("", &["range"]));
        settle().await;
        assert!(matches!(ours.heartbeat(), Err(GroupError::RebalanceInProgress)));
        let (mine, theirs) = tokio::join!(ours.join(partitions), async {
            let joined = newcomer.await.unwrap().unwrap();
            c.sync_group(sync_request(&joined.member_id, joined.generation_id, vec![])).await.unwrap()
        });
        let theirs = consumer_protocol::decode_assignment(&theirs).unwrap();
        let mut all = mine.unwrap();
        all.extend(theirs.topic_partitions());
        all.sort();
        assert_eq!(all, tps("t", &[0, 1, 2, 3]));
        assert_eq!(theirs.topic_partitions().len(), 2);
    })
    .await
}

#[tokio::test]
async fn offsets_survive_reopening_and_a_torn_last_entry() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = open(dir.path());
        c.commit_offsets("g", "", -1, vec![(tp("t", 0), offset(10)), (tp("t", 1), offset(11))]).unwrap();
        c.commit_offsets("g", "", -1, vec![(tp("t", 0), offset(12))]).unwrap();
        c.commit_offsets("other", "", -1, vec![(tp("u", 0), offset(1))]).unwrap();
        c.shutdown();
    }
    // A crash in the middle of appending another commit.
    let mut file = std::fs::OpenOptions::new().append(true).open(dir.path().join("offsets.log")).unwrap();
    std::io::Write::write_all(&mut file, &[0, 0, 1, 0, 0xde, 0xad, b'{', b'"']).unwrap();
    drop(file);

    let c = open(dir.path());
    assert_eq!(c.fetch_offsets("g", None), vec![(tp("t", 0), Some(offset(12))), (tp("t", 1), Some(offset(11)))]);
    let listed: Vec<(String, GroupState)> = c.list_groups().into_iter().map(|g| (g.group_id, g.state)).collect();
    assert_eq!(listed, [("g".to_string(), GroupState::Empty), ("other".to_string(), GroupState::Empty)]);
    assert_eq!(c.describe_group("g").state, GroupState::Empty);
    assert_eq!(c.describe_group("nope").state, GroupState::Dead);

    // Deleting a topic and a group is durable too.
    c.delete_topic("u");
    assert!(matches!(c.delete_group("nope"), Err(GroupError::GroupIdNotFound(_))));
    c.commit_offsets("gone", "", -1, vec![(tp("t", 0), offset(1))]).unwrap();
    c.delete_group("gone").unwrap();
    drop(c);
    let c = open(dir.path());
    assert!(c.fetch_offsets("other", None).is_empty());
    assert!(c.fetch_offsets("gone", None).is_empty());
    assert_eq!(c.list_groups().len(), 1);
    assert_eq!(c.fetch_offsets("g", None).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_group_with_members_cannot_be_deleted() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let mut a = member(&c, "a", &["t"]);
        a.join(partitions).await.unwrap();
        a.commit(vec![(tp("t", 0), offset(3))]).unwrap();
        assert!(matches!(c.delete_group("g"), Err(GroupError::NonEmptyGroup)));
        a.leave().await.unwrap();
        c.delete_group("g").unwrap();
        assert!(c.fetch_offsets("g", None).is_empty());
        assert_eq!(c.describe_group("g").state, GroupState::Dead);
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_waiting_requests() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let a = c.join_group(join_request("", &["range"])).await.unwrap();
        c.sync_group(sync_request(&a.member_id, 1, vec![])).await.unwrap();
        let b = spawn_join(&c, join_request("", &["range"]));
        settle().await;
        c.shutdown();
        assert!(matches!(b.await.unwrap(), Err(GroupError::CoordinatorNotAvailable)));
        assert!(matches!(c.heartbeat("g", &a.member_id, 1), Err(GroupError::CoordinatorNotAvailable)));
        assert_eq!(GroupError::CoordinatorNotAvailable.kafka_error_code(), 15);
    })
    .await
}

#[test]
fn the_coordinator_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Arc<GroupCoordinator>>();
    shareable::<GroupMember>();
}

#[test]
fn error_codes_and_state_names_are_kafkas() {
    let codes = [
        (GroupError::UnknownMemberId, 25),
        (GroupError::IllegalGeneration, 22),
        (GroupError::RebalanceInProgress, 27),
        (GroupError::InconsistentGroupProtocol, 23),
        (GroupError::InvalidSessionTimeout, 26),
        (GroupError::GroupIdNotFound("g".into()), 69),
        (GroupError::NonEmptyGroup, 68),
        (GroupError::InvalidGroupId, 24),
        (GroupError::CoordinatorNotAvailable, 15),
        (GroupError::Io { context: "x".into(), source: Arc::new(std::io::Error::other("disk")) }, -1),
    ];
    for (e, code) in codes {
        assert_eq!(e.kafka_error_code(), code, "{e}");
    }
    let names: Vec<String> = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, ["Empty", "PreparingRebalance", "CompletingRebalance", "Stable", "Dead"]);
}
