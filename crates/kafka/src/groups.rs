//! The consumer-group APIs, mapped straight onto weir's group coordinator, so a Kafka client joins the same group
//! state machine an in-process consumer does: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups.

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::{
    BrokerId, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use weir_broker::group::{self, GroupError, OffsetAndMetadata, TopicPartition};
use weir_broker::Broker;

use crate::config::ListenerConfig;
use crate::error_code::{NONE, UNKNOWN_TOPIC_OR_PARTITION};

const NODE_ID: i32 = 0;

/// Who is on the other end of a connection, as group membership records it (and DescribeGroups reports it).
#[derive(Clone, Debug)]
pub struct Client {
    pub client_id: String,
    pub host: String,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn err(r: Result<(), GroupError>) -> i16 {
    r.err().map_or(NONE, |e| e.kafka_error_code())
}

pub fn find_coordinator(config: &ListenerConfig, version: i16, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    // One broker coordinates every group (and transaction). v4 batches keys; earlier versions ask for one.
    let mut r = FindCoordinatorResponse::default();
    if version < 4 {
        r.node_id = BrokerId(NODE_ID);
        r.host = s(&config.advertised_host);
        r.port = config.advertised_port as i32;
        return r;
    }
    r.coordinators = req
        .coordinator_keys
        .into_iter()
        .map(|key| {
            let mut c = Coordinator::default();
            c.key = key;
            c.node_id = BrokerId(NODE_ID);
            c.host = s(&config.advertised_host);
            c.port = config.advertised_port as i32;
            c
        })
        .collect();
    r
}

pub async fn join_group(broker: &Broker, client: &Client, version: i16, req: JoinGroupRequest) -> JoinGroupResponse {
    let mut r = JoinGroupResponse::default();
    let result = broker
        .groups()
        .join_group(group::JoinGroupRequest {
            group_id: req.group_id.0.to_string(),
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.map(|i| i.to_string()),
            // KIP-394: from v4 a new member first learns its id.
            require_known_member_id: version >= 4,
            client_id: client.client_id.clone(),
            client_host: client.host.clone(),
            session_timeout_ms: req.session_timeout_ms.max(0) as u64,
            rebalance_timeout_ms: if req.rebalance_timeout_ms > 0 { req.rebalance_timeout_ms as u64 } else { 0 },
            protocol_type: req.protocol_type.to_string(),
            protocols: req.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata.to_vec())).collect(),
        })
        .await;
    match result {
        Ok(j) => {
            r.generation_id = j.generation_id;
            r.protocol_type = Some(s(&j.protocol_type));
            r.protocol_name = Some(s(&j.protocol_name));
            r.leader = s(&j.leader_id);
            r.member_id = s(&j.member_id);
            r.members = j
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    let mut m = JoinGroupResponseMember::default();
                    m.member_id = s(&id);
                    m.group_instance_id = instance.map(|i| s(&i));
                    m.metadata = Bytes::from(metadata);
                    m
                })
                .collect();
        }
        Err(e) => {
            r.error_code = e.kafka_error_code();
            r.generation_id = -1;
            r.member_id = match e {
                GroupError::MemberIdRequired(id) => s(&id),
                _ => req.member_id,
            };
        }
    }
    r
}

pub async fn sync_group(broker: &Broker, req: SyncGroupRequest) -> SyncGroupResponse {
    let mut r = SyncGroupResponse::default();
    r.protocol_type = req.protocol_type.clone();
    r.protocol_name = req.protocol_name.clone();
    let result = broker
        .groups()
        .sync_group(group::SyncGroupRequest {
            group_id: req.group_id.0.to_string(),
            generation_id: req.generation_id,
            member_id: req.member_id.to_string(),
            protocol_type: req.protocol_type.map(|p| p.to_string()),
            protocol_name: req.protocol_name.map(|p| p.to_string()),
            assignments: req
                .assignments
                .into_iter()
                .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
                .collect(),
        })
        .await;
    match result {
        Ok(assignment) => r.assignment = Bytes::from(assignment),
        Err(e) => r.error_code = e.kafka_error_code(),
    }
    r
}

pub fn heartbeat(broker: &Broker, req: HeartbeatRequest) -> HeartbeatResponse {
    let mut r = HeartbeatResponse::default();
    r.error_code = err(broker.groups().heartbeat(&req.group_id.0, &req.member_id, req.generation_id));
    r
}

pub async fn leave_group(broker: &Broker, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let mut r = LeaveGroupResponse::default();
    let group = req.group_id.0.to_string();
    if req.members.is_empty() {
        r.error_code = err(broker.groups().leave_group(&group, &req.member_id).await);
    } else {
        for m in req.members {
            let mut mr = MemberResponse::default();
            let instance = m.group_instance_id.as_deref();
            mr.error_code = err(broker.groups().leave_group_member(&group, &m.member_id, instance).await);
            mr.member_id = m.member_id;
            mr.group_instance_id = m.group_instance_id;
            r.members.push(mr);
        }
    }
    r
}

pub fn offset_commit(broker: &Broker, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let now = weir_log::now_ms();
    let offsets: Vec<(TopicPartition, OffsetAndMetadata)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    TopicPartition { topic: t.name.0.to_string(), partition: p.partition_index },
                    OffsetAndMetadata {
                        offset: p.committed_offset,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                        commit_timestamp_ms: now,
                    },
                )
            })
        })
        .collect();
    // Unknown topics or partitions are refused per partition; the rest commit together.
    let unknown =
        |tp: &TopicPartition| broker.topic(&tp.topic).and_then(|t| t.partition(tp.partition).map(|_| ())).is_err();
    let (bad, good): (Vec<_>, Vec<_>) = offsets.into_iter().partition(|(tp, _)| unknown(tp));
    let code = if good.is_empty() {
        NONE
    } else {
        err(broker.groups().commit_offsets(&req.group_id.0, &req.member_id, req.generation_id_or_member_epoch, good))
    };
    let mut r = OffsetCommitResponse::default();
    for t in req.topics {
        let mut tr = OffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            let is_bad = bad.iter().any(|(tp, _)| tp.topic == *t.name.0 && tp.partition == p.partition_index);
            pr.error_code = if is_bad { UNKNOWN_TOPIC_OR_PARTITION } else { code };
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

pub fn offset_fetch(broker: &Broker, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let group = req.group_id.0.to_string();
    let wanted: Option<Vec<TopicPartition>> = req.topics.map(|ts| {
        ts.iter()
            .flat_map(|t| {
                t.partition_indexes.iter().map(move |p| TopicPartition { topic: t.name.0.to_string(), partition: *p })
            })
            .collect()
    });
    let found = broker.groups().fetch_offsets(&group, wanted.as_deref());
    // KIP-447: a read_committed consumer asks for stable offsets; one a transaction still holds is not, yet.
    let unstable = |tp: &TopicPartition| {
        req.require_stable && broker.transactions().has_pending_offsets(&group, &tp.topic, tp.partition)
    };
    let mut r = OffsetFetchResponse::default();
    let mut by_topic: std::collections::BTreeMap<String, Vec<OffsetFetchResponsePartition>> = Default::default();
    for (tp, om) in found {
        let mut p = OffsetFetchResponsePartition::default();
        p.partition_index = tp.partition;
        p.committed_leader_epoch = -1;
        if unstable(&tp) {
            p.error_code = kafka_protocol::ResponseError::UnstableOffsetCommit.code();
        }
        match om {
            Some(om) => {
                p.committed_offset = om.offset;
                p.metadata = Some(s(&om.metadata));
            }
            None => {
                p.committed_offset = -1;
                p.metadata = Some(s(""));
            }
        }
        by_topic.entry(tp.topic).or_default().push(p);
    }
    for (topic, partitions) in by_topic {
        let mut t = OffsetFetchResponseTopic::default();
        t.name = TopicName(s(&topic));
        t.partitions = partitions;
        r.topics.push(t);
    }
    r
}

pub fn list_groups(broker: &Broker, req: ListGroupsRequest) -> ListGroupsResponse {
    let mut r = ListGroupsResponse::default();
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    for g in broker.groups().list_groups() {
        let state = g.state.to_string();
        if !states.is_empty() && !states.contains(&state.to_lowercase()) {
            continue;
        }
        let mut l = ListedGroup::default();
        l.group_id = GroupId(s(&g.group_id));
        l.protocol_type = s(&g.protocol_type);
        l.group_state = s(&state);
        l.group_type = s("classic");
        r.groups.push(l);
    }
    r
}

pub fn describe_groups(broker: &Broker, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    for id in req.groups {
        let d = broker.groups().describe_group(&id.0);
        let mut g = DescribedGroup::default();
        g.group_id = id;
        g.group_state = s(&d.state.to_string());
        g.protocol_type = s(&d.protocol_type);
        g.protocol_data = s(&d.protocol);
        g.members = d
            .members
            .into_iter()
            .map(|m| {
                let mut dm = DescribedGroupMember::default();
                dm.member_id = s(&m.member_id);
                dm.group_instance_id = m.group_instance_id.map(|i| s(&i));
                dm.client_id = s(&m.client_id);
                dm.client_host = s(&m.client_host);
                dm.member_metadata = Bytes::from(m.metadata);
                dm.member_assignment = Bytes::from(m.assignment);
                dm
            })
            .collect();
        r.groups.push(g);
    }
    r
}

/// The consumer group protocol (KIP-848): heartbeats carry subscriptions and owned partitions by topic id, and get
/// back the member's epoch and, when it changed, its assignment.
pub fn consumer_group_heartbeat(
    broker: &Broker,
    client: &Client,
    req: kafka_protocol::messages::ConsumerGroupHeartbeatRequest,
) -> kafka_protocol::messages::ConsumerGroupHeartbeatResponse {
    use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
    let mut r = kafka_protocol::messages::ConsumerGroupHeartbeatResponse::default();
    let owned = req.topic_partitions.map(|tps| {
        let mut a = group::consumer_group::Assignment::new();
        for tp in tps {
            if let Some(topic) = broker.topic_by_id(tp.topic_id.as_u128()) {
                a.entry(topic.name().to_string()).or_default().extend(tp.partitions);
            }
        }
        a
    });
    let hb = group::consumer_group::Heartbeat {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|i| i.to_string()),
        client_id: client.client_id.clone(),
        client_host: client.host.clone(),
        subscribed_topics: req.subscribed_topic_names.map(|ts| ts.into_iter().map(|t| t.0.to_string()).collect()),
        subscribed_regex: req.subscribed_topic_regex.map(|r| r.to_string()),
        assignor: req.server_assignor.map(|a| a.to_string()),
        owned,
    };
    let partitions = |t: &str| broker.topic(t).ok().map(|t| t.partition_count());
    match broker.groups().consumer_heartbeat(hb, partitions, || broker.list_topics()) {
        Ok(answer) => {
            r.member_id = Some(s(&answer.member_id));
            r.member_epoch = answer.member_epoch;
            r.heartbeat_interval_ms = answer.heartbeat_interval_ms;
            r.assignment = answer.assignment.map(|a| {
                let mut out = Assignment::default();
                out.topic_partitions = a
                    .into_iter()
                    .filter_map(|(topic, ps)| {
                        let t = broker.topic(&topic).ok()?;
                        let mut tp = TopicPartitions::default();
                        tp.topic_id = uuid::Uuid::from_u128(t.id());
                        tp.partitions = ps.into_iter().collect();
                        Some(tp)
                    })
                    .collect();
                out
            });
        }
        Err(e) => {
            r.error_code = e.kafka_error_code();
            r.error_message = Some(s(&e.to_string()));
        }
    }
    r
}

/// ConsumerGroupDescribe: KIP-848 groups with their epochs, members, assignments and targets.
pub fn consumer_group_describe(
    broker: &Broker,
    req: kafka_protocol::messages::ConsumerGroupDescribeRequest,
) -> kafka_protocol::messages::ConsumerGroupDescribeResponse {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup, Member, TopicPartitions,
    };
    let to_assignment = |a: &group::consumer_group::Assignment| {
        let mut out = Assignment::default();
        out.topic_partitions = a
            .iter()
            .map(|(topic, ps)| {
                let mut tp = TopicPartitions::default();
                tp.topic_name = TopicName(s(topic));
                tp.topic_id = broker.topic(topic).map(|t| uuid::Uuid::from_u128(t.id())).unwrap_or_default();
                tp.partitions = ps.iter().copied().collect();
                tp
            })
            .collect();
        out
    };
    let mut r = kafka_protocol::messages::ConsumerGroupDescribeResponse::default();
    for id in req.group_ids {
        let mut d = DescribedGroup::default();
        d.group_id = id.clone();
        d.authorized_operations = i32::MIN;
        match broker.groups().consumer_group(&id.0) {
            Some(g) => {
                d.group_state = s(g.state());
                d.group_epoch = g.group_epoch;
                d.assignment_epoch = g.assignment_epoch;
                d.assignor_name = s(if g.assignor.is_empty() { "uniform" } else { &g.assignor });
                d.members = g
                    .members
                    .iter()
                    .map(|(member_id, m)| {
                        let mut out = Member::default();
                        out.member_id = s(member_id);
                        out.instance_id = m.instance_id.as_deref().map(s);
                        out.member_epoch = m.member_epoch;
                        out.client_id = s(&m.client_id);
                        out.client_host = s(&m.client_host);
                        out.subscribed_topic_names = m.subscribed.iter().map(|t| TopicName(s(t))).collect();
                        out.subscribed_topic_regex = m.subscribed_regex.as_deref().map(s);
                        out.assignment = to_assignment(&m.assigned);
                        out.target_assignment = to_assignment(&g.target.get(member_id).cloned().unwrap_or_default());
                        out.member_type = 1; // consumer protocol
                        out
                    })
                    .collect();
            }
            None => d.error_code = kafka_protocol::ResponseError::GroupIdNotFound.code(),
        }
        r.groups.push(d);
    }
    r
}
