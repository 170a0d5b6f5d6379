//! The admin APIs tools and consoles use, answered for weir's single node: CreatePartitions, AlterConfigs and
//! IncrementalAlterConfigs (topic settings changed live), DeleteRecords, DeleteGroups, OffsetDelete,
//! DescribeLogDirs, DescribeProducers, DescribeCluster, ElectLeaders and OffsetForLeaderEpoch (consistent answers
//! for one broker that leads every partition at epoch 0), and GetTelemetrySubscriptions/PushTelemetry (KIP-714:
//! answered with no metrics requested, so clients stop asking and never push). Each refusal is Kafka's error code
//! with a message, and a refused request changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use kafka_protocol::messages::alter_configs_response::{AlterConfigsResourceResponse, AlterConfigsResponse};
use kafka_protocol::messages::create_partitions_response::{CreatePartitionsResponse, CreatePartitionsTopicResult};
use kafka_protocol::messages::delete_groups_response::{DeletableGroupResult, DeleteGroupsResponse};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::{DescribeClusterBroker, DescribeClusterResponse};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_producers_response::{
    DescribeProducersResponse, PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{ElectLeadersResponse, PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::get_telemetry_subscriptions_response::GetTelemetrySubscriptionsResponse;
use kafka_protocol::messages::incremental_alter_configs_response::{self, IncrementalAlterConfigsResponse};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::push_telemetry_response::PushTelemetryResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, BrokerId, CreatePartitionsRequest, DeleteGroupsRequest, DeleteRecordsRequest,
    DescribeClusterRequest, DescribeLogDirsRequest, DescribeProducersRequest, ElectLeadersRequest,
    GetTelemetrySubscriptionsRequest, IncrementalAlterConfigsRequest, OffsetDeleteRequest, OffsetForLeaderEpochRequest,
    ProducerId, PushTelemetryRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use weir_broker::group::TopicPartition;
use weir_broker::{Broker, BrokerError, ConfigChange};

use crate::config::ListenerConfig;
use crate::error_code::{INVALID_REQUEST, NONE, UNKNOWN_TOPIC_OR_PARTITION};

const NODE_ID: i32 = 0;
/// Kafka's resource type of a topic in the config APIs.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn refused(e: &BrokerError) -> (i16, Option<StrBytes>) {
    let code = match e {
        BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => UNKNOWN_TOPIC_OR_PARTITION,
        e => e.kafka_error_code(),
    };
    (code, Some(s(&e.to_string())))
}

pub fn create_partitions(broker: &Broker, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut r = CreatePartitionsResponse::default();
    for t in req.topics {
        let mut tr = CreatePartitionsTopicResult::default();
        tr.name = t.name.clone();
        let result = if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            // Replica placement means nothing on one node; Kafka refuses assignments it cannot honour.
            Err((ResponseError::InvalidReplicaAssignment.code(), Some(s("weir has one node: no replica assignments"))))
        } else {
            broker.create_partitions(&t.name.0, t.count, req.validate_only).map_err(|e| refused(&e))
        };
        if let Err((code, message)) = result {
            tr.error_code = code;
            tr.error_message = message;
        }
        r.results.push(tr);
    }
    r
}

/// AlterConfigs: the resource's whole set of topic settings replaced by the ones given.
pub fn alter_configs(broker: &Broker, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut r = AlterConfigsResponse::default();
    for res in req.resources {
        let mut out = AlterConfigsResourceResponse::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let changes: Vec<ConfigChange> = res
            .configs
            .iter()
            .map(|c| match &c.value {
                Some(v) => ConfigChange::Set(c.name.to_string(), v.to_string()),
                None => ConfigChange::Delete(c.name.to_string()),
            })
            .collect();
        if let Err((code, message)) =
            alter(broker, res.resource_type, &res.resource_name, &changes, true, req.validate_only)
        {
            out.error_code = code;
            out.error_message = message;
        }
        r.responses.push(out);
    }
    r
}

/// IncrementalAlterConfigs: SET (0) and DELETE (1) per key; APPEND (2) and SUBTRACT (3) apply to list settings, of
/// which weir's topics have none, so they are refused as Kafka refuses them for a scalar setting.
pub fn incremental_alter_configs(
    broker: &Broker,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut r = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let changes: Result<Vec<ConfigChange>, (i16, Option<StrBytes>)> = res
            .configs
            .iter()
            .map(|c| match (c.config_operation, &c.value) {
                (0, Some(v)) => Ok(ConfigChange::Set(c.name.to_string(), v.to_string())),
                (0, None) => Err((INVALID_REQUEST, Some(s(&format!("SET {} needs a value", c.name))))),
                (1, _) => Ok(ConfigChange::Delete(c.name.to_string())),
                (2 | 3, _) => Err((
                    ResponseError::InvalidConfig.code(),
                    Some(s(&format!("{} is not a list setting: APPEND and SUBTRACT do not apply", c.name))),
                )),
                (op, _) => Err((INVALID_REQUEST, Some(s(&format!("unknown config operation {op}"))))),
            })
            .collect();
        let result = changes.and_then(|changes| {
            alter(broker, res.resource_type, &res.resource_name, &changes, false, req.validate_only)
        });
        if let Err((code, message)) = result {
            out.error_code = code;
            out.error_message = message;
        }
        r.responses.push(out);
    }
    r
}

fn alter(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    changes: &[ConfigChange],
    replace: bool,
    validate_only: bool,
) -> Result<(), (i16, Option<StrBytes>)> {
    match resource_type {
        RESOURCE_TOPIC => broker.alter_topic_config(name, changes, replace, validate_only).map_err(|e| refused(&e)),
        RESOURCE_BROKER => Err((
            ResponseError::InvalidRequest.code(),
            Some(s("broker settings are weir's command line and settings file; they are not changed at run time")),
        )),
        other => Err((INVALID_REQUEST, Some(s(&format!("resource type {other} has no settings here"))))),
    }
}

/// DeleteRecords: each partition's log start offset moved to the offset given (-1: the high watermark).
pub fn delete_records(broker: &Broker, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut r = DeleteRecordsResponse::default();
    for t in req.topics {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            match broker.delete_records(&t.name.0, p.partition_index, p.offset) {
                Ok(low) => pr.low_watermark = low,
                Err(e) => {
                    pr.low_watermark = -1;
                    pr.error_code = refused(&e).0;
                }
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

pub fn delete_groups(broker: &Broker, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut r = DeleteGroupsResponse::default();
    for g in req.groups_names {
        let mut gr = DeletableGroupResult::default();
        gr.group_id = g.clone();
        if let Err(e) = broker.groups().delete_group(&g.0) {
            gr.error_code = e.kafka_error_code();
        }
        r.results.push(gr);
    }
    r
}

/// OffsetDelete: a group's committed offsets forgotten for some partitions; refused (GROUP_SUBSCRIBED_TO_TOPIC) for
/// a topic its members consume.
pub fn offset_delete(broker: &Broker, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let mut r = OffsetDeleteResponse::default();
    let mut partitions = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            partitions.push(TopicPartition::new(t.name.0.to_string(), p.partition_index));
        }
    }
    let known =
        |tp: &TopicPartition| broker.topic(&tp.topic).and_then(|t| t.partition(tp.partition).map(|_| ())).is_ok();
    let (good, _): (Vec<TopicPartition>, Vec<TopicPartition>) = partitions.iter().cloned().partition(|tp| known(tp));
    let mut per_partition = NONE;
    match broker.groups().delete_offsets(&req.group_id.0, &good) {
        Ok(()) => {}
        Err(e @ weir_broker::group::GroupError::SubscribedToTopic(_)) => per_partition = e.kafka_error_code(),
        Err(e) => r.error_code = e.kafka_error_code(),
    }
    for t in req.topics {
        let mut tr = OffsetDeleteResponseTopic::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = OffsetDeleteResponsePartition::default();
            pr.partition_index = p.partition_index;
            let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
            pr.error_code = if !known(&tp) { UNKNOWN_TOPIC_OR_PARTITION } else { per_partition };
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

/// DescribeLogDirs: the one log directory with every partition's size, and the file system's total and usable
/// bytes.
pub fn describe_log_dirs(broker: &Broker, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let mut r = DescribeLogDirsResponse::default();
    let dir = broker.config().data_dir.join("topics");
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = s(&dir.display().to_string());
    let (total, usable) = disk_space(&dir);
    result.total_bytes = total;
    result.usable_bytes = usable;
    let wanted: Vec<(String, Option<Vec<i32>>)> = match req.topics {
        None => broker.list_topics().into_iter().map(|t| (t, None)).collect(),
        Some(ts) => ts.into_iter().map(|t| (t.topic.0.to_string(), Some(t.partitions))).collect(),
    };
    for (name, partitions) in wanted {
        let Ok(topic) = broker.topic(&name) else { continue };
        let mut t = DescribeLogDirsTopic::default();
        t.name = TopicName(s(&name));
        for p in topic.partitions() {
            if partitions.as_ref().is_some_and(|ps| !ps.contains(&p.index)) {
                continue;
            }
            let Ok(log) = p.log() else { continue };
            let mut d = DescribeLogDirsPartition::default();
            d.partition_index = p.index;
            d.partition_size = log.size_bytes() as i64;
            t.partitions.push(d);
        }
        result.topics.push(t);
    }
    r.results.push(result);
    r
}

/// The file system's size and free space under `dir` (-1 when it cannot be asked).
fn disk_space(dir: &std::path::Path) -> (i64, i64) {
    match rustix::fs::statvfs(dir) {
        Ok(stat) => {
            let block = stat.f_frsize as i64;
            (stat.f_blocks as i64 * block, stat.f_bavail as i64 * block)
        }
        Err(_) => (-1, -1),
    }
}

/// DescribeProducers: every producer each partition knows, with its open transaction's first offset.
pub fn describe_producers(broker: &Broker, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let mut r = DescribeProducersResponse::default();
    for t in req.topics {
        let mut tr = TopicResponse::default();
        tr.name = t.name.clone();
        for index in t.partition_indexes {
            let mut pr = PartitionResponse::default();
            pr.partition_index = index;
            match broker.topic(&t.name.0).and_then(|topic| topic.partition(index).and_then(|p| p.log().cloned())) {
                Ok(log) => {
                    pr.active_producers = log
                        .producers()
                        .into_iter()
                        .map(|(id, epoch, last_sequence, txn_start)| {
                            let mut p = ProducerState::default();
                            p.producer_id = ProducerId(id);
                            p.producer_epoch = epoch as i32;
                            p.last_sequence = last_sequence;
                            p.last_timestamp = -1;
                            p.coordinator_epoch = 0;
                            p.current_txn_start_offset = txn_start;
                            p
                        })
                        .collect();
                }
                Err(e) => {
                    let (code, message) = refused(&e);
                    pr.error_code = code;
                    pr.error_message = message;
                }
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

pub fn describe_cluster(config: &ListenerConfig, _req: DescribeClusterRequest) -> DescribeClusterResponse {
    let mut r = DescribeClusterResponse::default();
    r.cluster_id = s("weir");
    r.controller_id = BrokerId(NODE_ID);
    r.endpoint_type = 1;
    r.cluster_authorized_operations = i32::MIN; // not computed, as Kafka says when it was not asked for them
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(NODE_ID);
    b.host = s(&config.advertised_host);
    b.port = config.advertised_port as i32;
    r.brokers = vec![b];
    r
}

/// ElectLeaders: this node leads every partition already, so each answers ELECTION_NOT_NEEDED (an unknown one
/// UNKNOWN_TOPIC_OR_PARTITION); with no partitions named, every partition is listed so.
pub fn elect_leaders(broker: &Broker, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let mut r = ElectLeadersResponse::default();
    let wanted: Vec<(String, Vec<i32>)> = match req.topic_partitions {
        Some(tps) => tps.into_iter().map(|t| (t.topic.0.to_string(), t.partitions)).collect(),
        None => broker
            .list_topics()
            .into_iter()
            .filter_map(|t| broker.topic(&t).ok().map(|topic| (t, (0..topic.partition_count()).collect())))
            .collect(),
    };
    for (topic, partitions) in wanted {
        let mut tr = ReplicaElectionResult::default();
        tr.topic = TopicName(s(&topic));
        for p in partitions {
            let mut pr = PartitionResult::default();
            pr.partition_id = p;
            let exists = broker.topic(&topic).and_then(|t| t.partition(p).map(|_| ())).is_ok();
            pr.error_code = if exists { ResponseError::ElectionNotNeeded.code() } else { UNKNOWN_TOPIC_OR_PARTITION };
            tr.partition_result.push(pr);
        }
        r.replica_election_results.push(tr);
    }
    r
}

/// OffsetForLeaderEpoch: every partition has had one leader epoch, 0, which ends at the log end; an epoch after
/// it is unknown (its end offset -1, as Kafka answers for an epoch it never had).
pub fn offset_for_leader_epoch(broker: &Broker, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let mut r = OffsetForLeaderEpochResponse::default();
    for t in req.topics {
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        for p in t.partitions {
            let mut e = EpochEndOffset::default();
            e.partition = p.partition;
            match broker.offsets(&t.topic.0, p.partition) {
                Ok((_, end)) if p.leader_epoch <= 0 => {
                    e.leader_epoch = 0;
                    e.end_offset = end;
                }
                Ok(_) => {
                    e.leader_epoch = -1;
                    e.end_offset = -1;
                }
                Err(err) => {
                    e.error_code = refused(&err).0;
                    e.leader_epoch = -1;
                    e.end_offset = -1;
                }
            }
            tr.partitions.push(e);
        }
        r.topics.push(tr);
    }
    r
}

/// GetTelemetrySubscriptions (KIP-714): no metrics are requested, which tells a client not to push any. A client
/// without an instance id gets one.
pub fn get_telemetry_subscriptions(req: GetTelemetrySubscriptionsRequest) -> GetTelemetrySubscriptionsResponse {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut r = GetTelemetrySubscriptionsResponse::default();
    r.client_instance_id = if req.client_instance_id.is_nil() {
        let now = weir_log::now_ms() as u128;
        uuid::Uuid::from_u128((now << 64) | NEXT.fetch_add(1, Ordering::Relaxed) as u128 | (1 << 63))
    } else {
        req.client_instance_id
    };
    r.subscription_id = 0;
    r.push_interval_ms = 300_000;
    r.telemetry_max_bytes = 1 << 20;
    r
}

/// PushTelemetry: accepted and dropped (no subscription asks for metrics, so a client should not send any).
pub fn push_telemetry(_req: PushTelemetryRequest) -> PushTelemetryResponse {
    PushTelemetryResponse::default()
}
