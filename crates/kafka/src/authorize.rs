//! Every Kafka request checked against the ACLs before its handler runs, answered with Kafka's error codes as
//! Kafka's `KafkaApis` does: a request about one group or transaction is refused whole (GROUP_AUTHORIZATION_FAILED,
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED); in a request about several topics or groups
//! only the refused ones fail (TOPIC_AUTHORIZATION_FAILED per partition), the rest are served; listings (all
//! topics' metadata, ListGroups, ListTransactions) leave out what the principal may not DESCRIBE.
//!
//! [`check`] takes the refused parts out of the request and returns either a [`Patch`] that [`apply`] adds back to
//! the handler's response as errors, or the whole refusal. Without an authorizer every request goes through as is.
//! The operations each API needs are Kafka's (its authorization table for ACLs); the ACL requests themselves and the
//! SCRAM credential requests check their own (`acls.rs`).

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use weir_broker::Broker;
use weir_security::{Operation, ResourceType, Security};

use crate::error_code::{
    CLUSTER_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, OPERATION_NOT_ATTEMPTED, TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
};

/// Who is asking, from where, and the store that decides.
#[derive(Clone, Copy, Debug)]
pub struct Authz<'a> {
    pub security: &'a Security,
    pub principal: &'a str,
    /// The client's IP address, matched against an ACL's host.
    pub host: &'a str,
}

impl Authz<'_> {
    pub fn allows(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.security.authorize(self.principal, self.host, operation, resource_type, name)
    }

    fn topic(&self, operation: Operation, name: &str) -> bool {
        self.allows(operation, ResourceType::Topic, name)
    }

    fn group(&self, operation: Operation, name: &str) -> bool {
        self.allows(operation, ResourceType::Group, name)
    }

    pub fn cluster(&self, operation: Operation) -> bool {
        self.allows(operation, ResourceType::Cluster, weir_security::CLUSTER)
    }

    fn transactional_id(&self, operation: Operation, id: &str) -> bool {
        self.allows(operation, ResourceType::TransactionalId, id)
    }
}

/// What authorization decided about a request.
#[derive(Debug)]
pub enum Verdict {
    /// Run the handler on what is left of the request, then add the patch's errors to its response.
    Go(Patch),
    /// Answer this instead of running the handler.
    Refuse(ResponseKind),
    /// Close the connection (a refused Produce with acks=0, whose client reads no response: Kafka closes it so the
    /// client notices).
    Close(&'static str),
}

/// The parts of a request taken out because they were refused, to answer as errors.
#[derive(Debug, Default)]
pub struct Patch {
    /// Topic, partitions and the error for each.
    partitions: Vec<(StrBytes, Vec<i32>, i16)>,
    /// A refused topic, group or transactional id by name, with its error.
    names: Vec<(StrBytes, i16)>,
    /// A refused config resource: its type, name and error.
    resources: Vec<(i8, StrBytes, i16)>,
    /// Leave out of a listing what the principal may not describe.
    filter: bool,
}

fn go(patch: Patch) -> Verdict {
    Verdict::Go(patch)
}

/// Takes the elements `keep` refuses out of `items` and returns them.
fn split<T>(items: &mut Vec<T>, mut keep: impl FnMut(&T) -> bool) -> Vec<T> {
    let (kept, refused): (Vec<T>, Vec<T>) = std::mem::take(items).into_iter().partition(|t| keep(t));
    *items = kept;
    refused
}

/// Config resource types: 2 is a topic, 4 a broker (the cluster, for ACLs), 8 a broker's loggers.
fn config_resource_allowed(a: &Authz<'_>, resource_type: i8, name: &str, operation: Operation) -> Result<(), i16> {
    match resource_type {
        2 if a.topic(operation, name) => Ok(()),
        2 => Err(TOPIC_AUTHORIZATION_FAILED),
        _ if a.cluster(operation) => Ok(()),
        _ => Err(CLUSTER_AUTHORIZATION_FAILED),
    }
}

/// Checks a request; see the module's description. `broker` resolves topic ids to names.
pub fn check(a: &Authz<'_>, broker: &Broker, version: i16, body: &mut RequestKind) -> Verdict {
    use Operation::*;
    if !a.security.authorizing() {
        return go(Patch::default());
    }
    let mut patch = Patch::default();
    match body {
        RequestKind::Produce(r) => {
            if let Some(id) = &r.transactional_id {
                if !a.transactional_id(Write, &id.0) {
                    if r.acks == 0 {
                        return Verdict::Close("a transactional produce the ACLs refuse, with acks=0");
                    }
                    let mut resp = ProduceResponse::default();
                    for t in &r.topic_data {
                        let mut tr = produce_response::TopicProduceResponse::default();
                        tr.name = t.name.clone();
                        tr.partition_responses = t
                            .partition_data
                            .iter()
                            .map(|p| produce_partition(p.index, TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
                            .collect();
                        resp.responses.push(tr);
                    }
                    return Verdict::Refuse(ResponseKind::Produce(resp));
                }
            }
            for t in split(&mut r.topic_data, |t| a.topic(Write, &t.name.0)) {
                let parts = t.partition_data.iter().map(|p| p.index).collect();
                patch.partitions.push((t.name.0, parts, TOPIC_AUTHORIZATION_FAILED));
            }
            if r.acks == 0 && !patch.partitions.is_empty() {
                return Verdict::Close("a produce the ACLs refuse, with acks=0");
            }
        }
        RequestKind::Fetch(r) => {
            for t in split(&mut r.topics, |t| a.topic(Read, &topic_name(broker, &t.topic, t.topic_id))) {
                let parts = t.partitions.iter().map(|p| p.partition).collect();
                patch.partitions.push((t.topic.0, parts, TOPIC_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::ListOffsets(r) => {
            for t in split(&mut r.topics, |t| a.topic(Describe, &t.name.0)) {
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                patch.partitions.push((t.name.0, parts, TOPIC_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::Metadata(r) => {
            patch.filter = true;
            if let Some(topics) = &mut r.topics {
                for t in split(topics, |t| t.name.as_ref().is_none_or(|n| a.topic(Describe, &n.0))) {
                    if let Some(n) = t.name {
                        patch.names.push((n.0, TOPIC_AUTHORIZATION_FAILED));
                    }
                }
                if r.allow_auto_topic_creation
                    && !a.cluster(Create)
                    && topics.iter().any(|t| t.name.as_ref().is_some_and(|n| !a.topic(Create, &n.0)))
                {
                    r.allow_auto_topic_creation = false;
                }
            }
        }
        RequestKind::OffsetCommit(r) => {
            if !a.group(Read, &r.group_id.0) {
                let mut resp = OffsetCommitResponse::default();
                for t in &r.topics {
                    let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                    resp.topics.push(commit_topic(t.name.0.clone(), parts, GROUP_AUTHORIZATION_FAILED));
                }
                return Verdict::Refuse(ResponseKind::OffsetCommit(resp));
            }
            for t in split(&mut r.topics, |t| a.topic(Read, &t.name.0)) {
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                patch.partitions.push((t.name.0, parts, TOPIC_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::OffsetFetch(r) => {
            patch.filter = true;
            if version < 8 {
                if !a.group(Describe, &r.group_id.0) {
                    let mut resp = OffsetFetchResponse::default();
                    resp.error_code = GROUP_AUTHORIZATION_FAILED;
                    return Verdict::Refuse(ResponseKind::OffsetFetch(resp));
                }
                if let Some(topics) = &mut r.topics {
                    for t in split(topics, |t| a.topic(Describe, &t.name.0)) {
                        patch.partitions.push((t.name.0, t.partition_indexes, TOPIC_AUTHORIZATION_FAILED));
                    }
                }
            } else {
                for g in split(&mut r.groups, |g| a.group(Describe, &g.group_id.0)) {
                    patch.names.push((g.group_id.0, GROUP_AUTHORIZATION_FAILED));
                }
            }
        }
        RequestKind::FindCoordinator(r) => {
            let allowed = |key: &str| match r.key_type {
                1 => a.transactional_id(Describe, key).then_some(()).ok_or(TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
                _ => a.group(Describe, key).then_some(()).ok_or(GROUP_AUTHORIZATION_FAILED),
            };
            if version < 4 {
                if let Err(code) = allowed(&r.key) {
                    let mut resp = FindCoordinatorResponse::default();
                    resp.error_code = code;
                    resp.node_id = BrokerId(-1);
                    resp.port = -1;
                    return Verdict::Refuse(ResponseKind::FindCoordinator(resp));
                }
            } else {
                let keys = std::mem::take(&mut r.coordinator_keys);
                for key in keys {
                    match allowed(&key) {
                        Ok(()) => r.coordinator_keys.push(key),
                        Err(code) => patch.names.push((key, code)),
                    }
                }
            }
        }
        RequestKind::JoinGroup(r) if !a.group(Read, &r.group_id.0) => {
            let mut resp = JoinGroupResponse::default();
            resp.error_code = GROUP_AUTHORIZATION_FAILED;
            resp.generation_id = -1;
            return Verdict::Refuse(ResponseKind::JoinGroup(resp));
        }
        RequestKind::SyncGroup(r) if !a.group(Read, &r.group_id.0) => {
            let mut resp = SyncGroupResponse::default();
            resp.error_code = GROUP_AUTHORIZATION_FAILED;
            return Verdict::Refuse(ResponseKind::SyncGroup(resp));
        }
        RequestKind::Heartbeat(r) if !a.group(Read, &r.group_id.0) => {
            let mut resp = HeartbeatResponse::default();
            resp.error_code = GROUP_AUTHORIZATION_FAILED;
            return Verdict::Refuse(ResponseKind::Heartbeat(resp));
        }
        RequestKind::LeaveGroup(r) if !a.group(Read, &r.group_id.0) => {
            let mut resp = LeaveGroupResponse::default();
            resp.error_code = GROUP_AUTHORIZATION_FAILED;
            return Verdict::Refuse(ResponseKind::LeaveGroup(resp));
        }
        RequestKind::DescribeGroups(r) => {
            for g in split(&mut r.groups, |g| a.group(Describe, &g.0)) {
                patch.names.push((g.0, GROUP_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::ListGroups(_) => patch.filter = !a.cluster(Describe),
        RequestKind::CreateTopics(r) => {
            let cluster = a.cluster(Create);
            for t in split(&mut r.topics, |t| cluster || a.topic(Create, &t.name.0)) {
                patch.names.push((t.name.0, TOPIC_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::DeleteTopics(r) => {
            for n in split(&mut r.topic_names, |n| a.topic(Delete, &n.0)) {
                patch.names.push((n.0, TOPIC_AUTHORIZATION_FAILED));
            }
            for t in split(&mut r.topics, |t| {
                let name = t.name.as_ref().map(|n| n.0.to_string());
                let name = name.or_else(|| broker.topic_by_id(id_of(t.topic_id)).map(|t| t.name().to_string()));
                // A topic id that names no topic is left to the handler, which answers UNKNOWN_TOPIC_ID.
                name.is_none_or(|n| a.topic(Delete, &n))
            }) {
                let name = t.name.map(|n| n.0).unwrap_or_default();
                patch.names.push((name, TOPIC_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::DeleteRecords(r) => {
            for t in split(&mut r.topics, |t| a.topic(Delete, &t.name.0)) {
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                patch.partitions.push((t.name.0, parts, TOPIC_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::InitProducerId(r) => {
            let refused = match &r.transactional_id {
                Some(id) if !a.transactional_id(Write, &id.0) => Some(TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
                Some(_) => None,
                // An idempotent producer: IDEMPOTENT_WRITE on the cluster, or WRITE on some topic (KIP-679).
                None if a.cluster(IdempotentWrite)
                    || a.security.authorize_any(a.principal, a.host, Write, ResourceType::Topic) =>
                {
                    None
                }
                None => Some(CLUSTER_AUTHORIZATION_FAILED),
            };
            if let Some(code) = refused {
                let mut resp = InitProducerIdResponse::default();
                resp.error_code = code;
                resp.producer_id = ProducerId(-1);
                resp.producer_epoch = -1;
                return Verdict::Refuse(ResponseKind::InitProducerId(resp));
            }
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            for t in split(&mut r.topics, |t| a.topic(Describe, &t.topic.0)) {
                let parts = t.partitions.iter().map(|p| p.partition).collect();
                patch.partitions.push((t.topic.0, parts, TOPIC_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::AddPartitionsToTxn(r) => {
            // v3 and below: one transaction. Kafka fails the whole request when any part is refused, the refused
            // partitions with their error and the others OPERATION_NOT_ATTEMPTED.
            let txn_ok = a.transactional_id(Write, &r.v3_and_below_transactional_id.0);
            let topics_ok = r.v3_and_below_topics.iter().all(|t| a.topic(Write, &t.name.0));
            if !txn_ok || !topics_ok {
                let mut resp = AddPartitionsToTxnResponse::default();
                for t in &r.v3_and_below_topics {
                    let code = if !txn_ok {
                        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                    } else if !a.topic(Write, &t.name.0) {
                        TOPIC_AUTHORIZATION_FAILED
                    } else {
                        OPERATION_NOT_ATTEMPTED
                    };
                    let mut tr = add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default();
                    tr.name = t.name.clone();
                    tr.results_by_partition = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut pr = add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default();
                            pr.partition_index = *p;
                            pr.partition_error_code = code;
                            pr
                        })
                        .collect();
                    resp.results_by_topic_v3_and_below.push(tr);
                }
                return Verdict::Refuse(ResponseKind::AddPartitionsToTxn(resp));
            }
        }
        RequestKind::AddOffsetsToTxn(r) => {
            let code = if !a.transactional_id(Write, &r.transactional_id.0) {
                TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            } else if !a.group(Read, &r.group_id.0) {
                GROUP_AUTHORIZATION_FAILED
            } else {
                return go(patch);
            };
            let mut resp = AddOffsetsToTxnResponse::default();
            resp.error_code = code;
            return Verdict::Refuse(ResponseKind::AddOffsetsToTxn(resp));
        }
        RequestKind::EndTxn(r) if !a.transactional_id(Write, &r.transactional_id.0) => {
            let mut resp = EndTxnResponse::default();
            resp.error_code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
            resp.producer_id = ProducerId(-1);
            resp.producer_epoch = -1;
            return Verdict::Refuse(ResponseKind::EndTxn(resp));
        }
        RequestKind::TxnOffsetCommit(r) => {
            let whole = if !a.transactional_id(Write, &r.transactional_id.0) {
                Some(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            } else if !a.group(Read, &r.group_id.0) {
                Some(GROUP_AUTHORIZATION_FAILED)
            } else {
                None
            };
            if let Some(code) = whole {
                let mut resp = TxnOffsetCommitResponse::default();
                for t in &r.topics {
                    let mut tr = txn_offset_commit_response::TxnOffsetCommitResponseTopic::default();
                    tr.name = t.name.clone();
                    tr.partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut pr = txn_offset_commit_response::TxnOffsetCommitResponsePartition::default();
                            pr.partition_index = p.partition_index;
                            pr.error_code = code;
                            pr
                        })
                        .collect();
                    resp.topics.push(tr);
                }
                return Verdict::Refuse(ResponseKind::TxnOffsetCommit(resp));
            }
            for t in split(&mut r.topics, |t| a.topic(Read, &t.name.0)) {
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                patch.partitions.push((t.name.0, parts, TOPIC_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::DescribeConfigs(r) => {
            let refused = split(&mut r.resources, |c| {
                config_resource_allowed(a, c.resource_type, &c.resource_name, DescribeConfigs).is_ok()
            });
            for c in refused {
                let code = config_resource_allowed(a, c.resource_type, &c.resource_name, DescribeConfigs).unwrap_err();
                patch.resources.push((c.resource_type, c.resource_name, code));
            }
        }
        RequestKind::AlterConfigs(r) => {
            let refused = split(&mut r.resources, |c| {
                config_resource_allowed(a, c.resource_type, &c.resource_name, AlterConfigs).is_ok()
            });
            for c in refused {
                let code = config_resource_allowed(a, c.resource_type, &c.resource_name, AlterConfigs).unwrap_err();
                patch.resources.push((c.resource_type, c.resource_name, code));
            }
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            let refused = split(&mut r.resources, |c| {
                config_resource_allowed(a, c.resource_type, &c.resource_name, AlterConfigs).is_ok()
            });
            for c in refused {
                let code = config_resource_allowed(a, c.resource_type, &c.resource_name, AlterConfigs).unwrap_err();
                patch.resources.push((c.resource_type, c.resource_name, code));
            }
        }
        RequestKind::DescribeLogDirs(_) if !a.cluster(Describe) => {
            let mut resp = DescribeLogDirsResponse::default();
            resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
            return Verdict::Refuse(ResponseKind::DescribeLogDirs(resp));
        }
        RequestKind::CreatePartitions(r) => {
            for t in split(&mut r.topics, |t| a.topic(Alter, &t.name.0)) {
                patch.names.push((t.name.0, TOPIC_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::DeleteGroups(r) => {
            for g in split(&mut r.groups_names, |g| a.group(Delete, &g.0)) {
                patch.names.push((g.0, GROUP_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::ElectLeaders(_) if !a.cluster(Alter) => {
            let mut resp = ElectLeadersResponse::default();
            resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
            return Verdict::Refuse(ResponseKind::ElectLeaders(resp));
        }
        RequestKind::OffsetDelete(r) => {
            if !a.group(Delete, &r.group_id.0) {
                let mut resp = OffsetDeleteResponse::default();
                resp.error_code = GROUP_AUTHORIZATION_FAILED;
                return Verdict::Refuse(ResponseKind::OffsetDelete(resp));
            }
            for t in split(&mut r.topics, |t| a.topic(Read, &t.name.0)) {
                let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                patch.partitions.push((t.name.0, parts, TOPIC_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::DescribeCluster(_) if !a.cluster(Describe) => {
            let mut resp = DescribeClusterResponse::default();
            resp.error_code = CLUSTER_AUTHORIZATION_FAILED;
            resp.controller_id = BrokerId(-1);
            return Verdict::Refuse(ResponseKind::DescribeCluster(resp));
        }
        RequestKind::DescribeProducers(r) => {
            for t in split(&mut r.topics, |t| a.topic(Read, &t.name.0)) {
                patch.partitions.push((t.name.0, t.partition_indexes, TOPIC_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::DescribeTransactions(r) => {
            for id in split(&mut r.transactional_ids, |id| a.transactional_id(Describe, &id.0)) {
                patch.names.push((id.0, TRANSACTIONAL_ID_AUTHORIZATION_FAILED));
            }
        }
        RequestKind::ListTransactions(_) => patch.filter = true,
        RequestKind::ConsumerGroupHeartbeat(r) if !a.group(Read, &r.group_id.0) => {
            let mut resp = ConsumerGroupHeartbeatResponse::default();
            resp.error_code = GROUP_AUTHORIZATION_FAILED;
            return Verdict::Refuse(ResponseKind::ConsumerGroupHeartbeat(resp));
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            for g in split(&mut r.group_ids, |g| a.group(Describe, &g.0)) {
                patch.names.push((g.0, GROUP_AUTHORIZATION_FAILED));
            }
        }
        // Allowed to all: ApiVersions, the SASL requests and KIP-714's telemetry, and the group requests above
        // whose guard passed. The ACL and SCRAM requests check their own operations.
        _ => {}
    }
    go(patch)
}

/// The name of a topic given by name or (Fetch v13+) by id alone.
fn topic_name(broker: &Broker, name: &TopicName, id: uuid::Uuid) -> String {
    if name.0.is_empty() && !id.is_nil() {
        if let Some(t) = broker.topic_by_id(id_of(id)) {
            return t.name().to_string();
        }
    }
    name.0.to_string()
}

fn id_of(id: uuid::Uuid) -> u128 {
    id.as_u128()
}

fn produce_partition(index: i32, code: i16) -> produce_response::PartitionProduceResponse {
    let mut p = produce_response::PartitionProduceResponse::default();
    p.index = index;
    p.error_code = code;
    p.base_offset = -1;
    p.log_append_time_ms = -1;
    p.log_start_offset = -1;
    p
}

fn commit_topic(name: StrBytes, parts: Vec<i32>, code: i16) -> offset_commit_response::OffsetCommitResponseTopic {
    let mut t = offset_commit_response::OffsetCommitResponseTopic::default();
    t.name = TopicName(name);
    t.partitions = parts
        .into_iter()
        .map(|i| {
            let mut p = offset_commit_response::OffsetCommitResponsePartition::default();
            p.partition_index = i;
            p.error_code = code;
            p
        })
        .collect();
    t
}

/// Adds a patch's refusals to the handler's response, and leaves out of a listing what may not be described.
pub fn apply(a: &Authz<'_>, patch: Patch, response: &mut ResponseKind) {
    use Operation::*;
    let Patch { partitions, names, resources, filter } = patch;
    match response {
        ResponseKind::Produce(r) => {
            for (name, parts, code) in partitions {
                let mut t = produce_response::TopicProduceResponse::default();
                t.name = TopicName(name);
                t.partition_responses = parts.into_iter().map(|i| produce_partition(i, code)).collect();
                r.responses.push(t);
            }
        }
        ResponseKind::Fetch(r) => {
            for (name, parts, code) in partitions {
                let mut t = fetch_response::FetchableTopicResponse::default();
                t.topic = TopicName(name);
                t.partitions = parts
                    .into_iter()
                    .map(|i| {
                        let mut p = fetch_response::PartitionData::default();
                        p.partition_index = i;
                        p.error_code = code;
                        p.high_watermark = -1;
                        p.last_stable_offset = -1;
                        p.log_start_offset = -1;
                        p
                    })
                    .collect();
                r.responses.push(t);
            }
        }
        ResponseKind::ListOffsets(r) => {
            for (name, parts, code) in partitions {
                let mut t = list_offsets_response::ListOffsetsTopicResponse::default();
                t.name = TopicName(name);
                t.partitions = parts
                    .into_iter()
                    .map(|i| {
                        let mut p = list_offsets_response::ListOffsetsPartitionResponse::default();
                        p.partition_index = i;
                        p.error_code = code;
                        p.timestamp = -1;
                        p.offset = -1;
                        p.leader_epoch = -1;
                        p
                    })
                    .collect();
                r.topics.push(t);
            }
        }
        ResponseKind::Metadata(r) => {
            if filter {
                r.topics.retain(|t| t.name.as_ref().is_some_and(|n| a.topic(Describe, &n.0)));
            }
            for (name, code) in names {
                let mut t = metadata_response::MetadataResponseTopic::default();
                t.name = Some(TopicName(name));
                t.error_code = code;
                r.topics.push(t);
            }
        }
        ResponseKind::OffsetCommit(r) => {
            for (name, parts, code) in partitions {
                r.topics.push(commit_topic(name, parts, code));
            }
        }
        ResponseKind::OffsetFetch(r) => {
            if filter {
                r.topics.retain(|t| a.topic(Describe, &t.name.0));
                for g in &mut r.groups {
                    g.topics.retain(|t| a.topic(Describe, &t.name.0));
                }
            }
            for (name, parts, code) in partitions {
                let mut t = offset_fetch_response::OffsetFetchResponseTopic::default();
                t.name = TopicName(name);
                t.partitions = parts
                    .into_iter()
                    .map(|i| {
                        let mut p = offset_fetch_response::OffsetFetchResponsePartition::default();
                        p.partition_index = i;
                        p.committed_offset = -1;
                        p.error_code = code;
                        p
                    })
                    .collect();
                r.topics.push(t);
            }
            for (group, code) in names {
                let mut g = offset_fetch_response::OffsetFetchResponseGroup::default();
                g.group_id = GroupId(group);
                g.error_code = code;
                r.groups.push(g);
            }
        }
        ResponseKind::FindCoordinator(r) => {
            for (key, code) in names {
                let mut c = find_coordinator_response::Coordinator::default();
                c.key = key;
                c.node_id = BrokerId(-1);
                c.port = -1;
                c.error_code = code;
                r.coordinators.push(c);
            }
        }
        ResponseKind::DescribeGroups(r) => {
            for (group, code) in names {
                let mut g = describe_groups_response::DescribedGroup::default();
                g.group_id = GroupId(group);
                g.error_code = code;
                r.groups.push(g);
            }
        }
        ResponseKind::ListGroups(r) if filter => r.groups.retain(|g| a.group(Describe, &g.group_id.0)),
        ResponseKind::CreateTopics(r) => {
            for (name, code) in names {
                let mut t = create_topics_response::CreatableTopicResult::default();
                t.name = TopicName(name);
                t.error_code = code;
                t.num_partitions = -1;
                t.replication_factor = -1;
                r.topics.push(t);
            }
        }
        ResponseKind::DeleteTopics(r) => {
            for (name, code) in names {
                let mut t = delete_topics_response::DeletableTopicResult::default();
                t.name = Some(TopicName(name));
                t.error_code = code;
                r.responses.push(t);
            }
        }
        ResponseKind::DeleteRecords(r) => {
            for (name, parts, code) in partitions {
                let mut t = delete_records_response::DeleteRecordsTopicResult::default();
                t.name = TopicName(name);
                t.partitions = parts
                    .into_iter()
                    .map(|i| {
                        let mut p = delete_records_response::DeleteRecordsPartitionResult::default();
                        p.partition_index = i;
                        p.low_watermark = -1;
                        p.error_code = code;
                        p
                    })
                    .collect();
                r.topics.push(t);
            }
        }
        ResponseKind::OffsetForLeaderEpoch(r) => {
            for (name, parts, code) in partitions {
                let mut t = offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default();
                t.topic = TopicName(name);
                t.partitions = parts
                    .into_iter()
                    .map(|i| {
                        let mut p = offset_for_leader_epoch_response::EpochEndOffset::default();
                        p.partition = i;
                        p.error_code = code;
                        p.leader_epoch = -1;
                        p.end_offset = -1;
                        p
                    })
                    .collect();
                r.topics.push(t);
            }
        }
        ResponseKind::TxnOffsetCommit(r) => {
            for (name, parts, code) in partitions {
                let mut t = txn_offset_commit_response::TxnOffsetCommitResponseTopic::default();
                t.name = TopicName(name);
                t.partitions = parts
                    .into_iter()
                    .map(|i| {
                        let mut p = txn_offset_commit_response::TxnOffsetCommitResponsePartition::default();
                        p.partition_index = i;
                        p.error_code = code;
                        p
                    })
                    .collect();
                r.topics.push(t);
            }
        }
        ResponseKind::DescribeConfigs(r) => {
            for (resource_type, resource_name, code) in resources {
                let mut c = describe_configs_response::DescribeConfigsResult::default();
                c.resource_type = resource_type;
                c.resource_name = resource_name;
                c.error_code = code;
                r.results.push(c);
            }
        }
        ResponseKind::AlterConfigs(r) => {
            for (resource_type, resource_name, code) in resources {
                let mut c = alter_configs_response::AlterConfigsResourceResponse::default();
                c.resource_type = resource_type;
                c.resource_name = resource_name;
                c.error_code = code;
                r.responses.push(c);
            }
        }
        ResponseKind::IncrementalAlterConfigs(r) => {
            for (resource_type, resource_name, code) in resources {
                let mut c = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
                c.resource_type = resource_type;
                c.resource_name = resource_name;
                c.error_code = code;
                r.responses.push(c);
            }
        }
        ResponseKind::CreatePartitions(r) => {
            for (name, code) in names {
                let mut t = create_partitions_response::CreatePartitionsTopicResult::default();
                t.name = TopicName(name);
                t.error_code = code;
                r.results.push(t);
            }
        }
        ResponseKind::DeleteGroups(r) => {
            for (group, code) in names {
                let mut g = delete_groups_response::DeletableGroupResult::default();
                g.group_id = GroupId(group);
                g.error_code = code;
                r.results.push(g);
            }
        }
        ResponseKind::OffsetDelete(r) => {
            for (name, parts, code) in partitions {
                let mut t = offset_delete_response::OffsetDeleteResponseTopic::default();
                t.name = TopicName(name);
                t.partitions = parts
                    .into_iter()
                    .map(|i| {
                        let mut p = offset_delete_response::OffsetDeleteResponsePartition::default();
                        p.partition_index = i;
                        p.error_code = code;
                        p
                    })
                    .collect();
                r.topics.push(t);
            }
        }
        ResponseKind::DescribeProducers(r) => {
            for (name, parts, code) in partitions {
                let mut t = describe_producers_response::TopicResponse::default();
                t.name = TopicName(name);
                t.partitions = parts
                    .into_iter()
                    .map(|i| {
                        let mut p = describe_producers_response::PartitionResponse::default();
                        p.partition_index = i;
                        p.error_code = code;
                        p
                    })
                    .collect();
                r.topics.push(t);
            }
        }
        ResponseKind::DescribeTransactions(r) => {
            for (id, code) in names {
                let mut t = describe_transactions_response::TransactionState::default();
                t.transactional_id = TransactionalId(id);
                t.error_code = code;
                t.producer_id = ProducerId(-1);
                t.producer_epoch = -1;
                r.transaction_states.push(t);
            }
        }
        ResponseKind::ListTransactions(r) if filter => {
            r.transaction_states.retain(|t| a.transactional_id(Describe, &t.transactional_id.0))
        }
        ResponseKind::ConsumerGroupDescribe(r) => {
            for (group, code) in names {
                let mut g = consumer_group_describe_response::DescribedGroup::default();
                g.group_id = GroupId(group);
                g.error_code = code;
                r.groups.push(g);
            }
        }
        _ => {}
    }
}
