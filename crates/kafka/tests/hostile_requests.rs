//! Hostile requests against the Kafka decoder and listener: an element count off the wire must never turn into an
//! allocation, whatever the API, version or encoding (issue 13, F1: a 20-byte Metadata request with a topic count of
//! 0x7fffffff made the process reserve ~154 GB and abort), and a produced batch whose records are not what its header
//! says is refused rather than stored (F2).
//!
//! The test binary runs under an allocator capped at 1 GiB, so an oversized reservation aborts it (a failure) instead
//! of depending on how much the machine lets a process overcommit. The fuzz test covers every API and version weir
//! serves: a sample request with one element in every array is encoded by the protocol crate, then every position of
//! it is overwritten with huge counts (plain and compact encodings) and random mutations are decoded.

use std::alloc::System;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use cap::Cap;
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig, CreateTopicsRequest,
};
use kafka_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use kafka_protocol::messages::describe_configs_request::{DescribeConfigsRequest, DescribeConfigsResource};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    InitProducerIdRequest, ListGroupsRequest, RequestHeader, RequestKind, SaslAuthenticateRequest,
    SaslHandshakeRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;
use weir_kafka::apis::{supported, APIS};
use weir_kafka::codec::decode_request;
use weir_kafka::error_code::{INVALID_RECORD, INVALID_REQUIRED_ACKS};
use weir_kafka::{BackgroundBroker, ListenerConfig};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, 1 << 30);

fn s(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

fn topic() -> TopicName {
    TopicName(s("t"))
}

/// A request of `api` with one element in every array (nested ones too) that `version` has, so every count is on
/// the wire.
fn sample(api: ApiKey, version: i16) -> RequestKind {
    match api {
        ApiKey::Produce => {
            let mut p = PartitionProduceData::default();
            p.records = Some(Bytes::from_static(b"records"));
            let mut t = TopicProduceData::default();
            t.name = topic();
            t.partition_data = vec![p];
            let mut r = ProduceRequest::default();
            r.acks = -1;
            r.topic_data = vec![t];
            RequestKind::Produce(r)
        }
        ApiKey::Fetch => {
            let mut t = FetchTopic::default();
            t.topic = topic();
            t.partitions = vec![FetchPartition::default()];
            let mut f = ForgottenTopic::default();
            f.topic = topic();
            f.partitions = vec![3];
            let mut r = FetchRequest::default();
            r.topics = vec![t];
            if version >= 7 {
                r.forgotten_topics_data = vec![f];
            }
            if version >= 11 {
                r.rack_id = s("rack");
            }
            RequestKind::Fetch(r)
        }
        ApiKey::ListOffsets => {
            let mut t = ListOffsetsTopic::default();
            t.name = topic();
            t.partitions = vec![ListOffsetsPartition::default()];
            let mut r = ListOffsetsRequest::default();
            r.topics = vec![t];
            RequestKind::ListOffsets(r)
        }
        ApiKey::Metadata => {
            let mut t = MetadataRequestTopic::default();
            t.name = Some(topic());
            let mut r = MetadataRequest::default();
            r.topics = Some(vec![t]);
            RequestKind::Metadata(r)
        }
        ApiKey::ApiVersions => {
            let mut r = ApiVersionsRequest::default();
            if version >= 3 {
                r.client_software_name = s("fuzz");
                r.client_software_version = s("1");
            }
            RequestKind::ApiVersions(r)
        }
        ApiKey::CreateTopics => {
            let mut a = CreatableReplicaAssignment::default();
            a.broker_ids = vec![kafka_protocol::messages::BrokerId(0)];
            let mut c = CreatableTopicConfig::default();
            c.name = s("retention.ms");
            c.value = Some(s("1000"));
            let mut t = CreatableTopic::default();
            t.name = topic();
            t.assignments = vec![a];
            t.configs = vec![c];
            let mut r = CreateTopicsRequest::default();
            r.topics = vec![t];
            RequestKind::CreateTopics(r)
        }
        ApiKey::DeleteTopics => {
            let mut t = DeleteTopicState::default();
            t.name = Some(topic());
            let mut r = DeleteTopicsRequest::default();
            if version >= 6 {
                r.topics = vec![t];
            } else {
                r.topic_names = vec![topic()];
            }
            RequestKind::DeleteTopics(r)
        }
        ApiKey::FindCoordinator => {
            let mut r = FindCoordinatorRequest::default();
            if version >= 4 {
                r.coordinator_keys = vec![s("g")];
            } else {
                r.key = s("g");
            }
            RequestKind::FindCoordinator(r)
        }
        ApiKey::InitProducerId => {
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = Some(kafka_protocol::messages::TransactionalId(s("tx")));
            r.transaction_timeout_ms = 60_000;
            RequestKind::InitProducerId(r)
        }
        ApiKey::DeleteRecords => {
            use kafka_protocol::messages::delete_records_request::{
                DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
            };
            let mut p = DeleteRecordsPartition::default();
            p.offset = 3;
            let mut t = DeleteRecordsTopic::default();
            t.name = TopicName(s("t"));
            t.partitions = vec![p];
            let mut r = DeleteRecordsRequest::default();
            r.topics = vec![t];
            RequestKind::DeleteRecords(r)
        }
        ApiKey::OffsetForLeaderEpoch => {
            use kafka_protocol::messages::offset_for_leader_epoch_request::{
                OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
            };
            let mut t = OffsetForLeaderTopic::default();
            t.topic = TopicName(s("t"));
            t.partitions = vec![OffsetForLeaderPartition::default()];
            let mut r = OffsetForLeaderEpochRequest::default();
            r.topics = vec![t];
            RequestKind::OffsetForLeaderEpoch(r)
        }
        ApiKey::AlterConfigs => {
            use kafka_protocol::messages::alter_configs_request::{
                AlterConfigsRequest, AlterConfigsResource, AlterableConfig,
            };
            let mut c = AlterableConfig::default();
            c.name = s("retention.ms");
            c.value = Some(s("1000"));
            let mut res = AlterConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = s("t");
            res.configs = vec![c];
            let mut r = AlterConfigsRequest::default();
            r.resources = vec![res];
            RequestKind::AlterConfigs(r)
        }
        ApiKey::DescribeLogDirs => {
            use kafka_protocol::messages::describe_log_dirs_request::{DescribableLogDirTopic, DescribeLogDirsRequest};
            let mut t = DescribableLogDirTopic::default();
            t.topic = TopicName(s("t"));
            t.partitions = vec![0];
            let mut r = DescribeLogDirsRequest::default();
            r.topics = Some(vec![t]);
            RequestKind::DescribeLogDirs(r)
        }
        ApiKey::CreatePartitions => {
            use kafka_protocol::messages::create_partitions_request::{CreatePartitionsRequest, CreatePartitionsTopic};
            let mut t = CreatePartitionsTopic::default();
            t.name = TopicName(s("t"));
            t.count = 4;
            let mut r = CreatePartitionsRequest::default();
            r.topics = vec![t];
            RequestKind::CreatePartitions(r)
        }
        ApiKey::DeleteGroups => {
            let mut r = kafka_protocol::messages::DeleteGroupsRequest::default();
            r.groups_names = vec![GroupId(s("g"))];
            RequestKind::DeleteGroups(r)
        }
        ApiKey::ElectLeaders => {
            use kafka_protocol::messages::elect_leaders_request::{ElectLeadersRequest, TopicPartitions};
            let mut t = TopicPartitions::default();
            t.topic = TopicName(s("t"));
            t.partitions = vec![0];
            let mut r = ElectLeadersRequest::default();
            r.topic_partitions = Some(vec![t]);
            RequestKind::ElectLeaders(r)
        }
        ApiKey::IncrementalAlterConfigs => {
            use kafka_protocol::messages::incremental_alter_configs_request::{
                AlterConfigsResource, AlterableConfig, IncrementalAlterConfigsRequest,
            };
            let mut c = AlterableConfig::default();
            c.name = s("retention.ms");
            c.value = Some(s("1000"));
            let mut res = AlterConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = s("t");
            res.configs = vec![c];
            let mut r = IncrementalAlterConfigsRequest::default();
            r.resources = vec![res];
            RequestKind::IncrementalAlterConfigs(r)
        }
        ApiKey::OffsetDelete => {
            use kafka_protocol::messages::offset_delete_request::{
                OffsetDeleteRequest, OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
            };
            let mut t = OffsetDeleteRequestTopic::default();
            t.name = TopicName(s("t"));
            t.partitions = vec![OffsetDeleteRequestPartition::default()];
            let mut r = OffsetDeleteRequest::default();
            r.group_id = GroupId(s("g"));
            r.topics = vec![t];
            RequestKind::OffsetDelete(r)
        }
        ApiKey::DescribeCluster => {
            RequestKind::DescribeCluster(kafka_protocol::messages::DescribeClusterRequest::default())
        }
        ApiKey::DescribeAcls => {
            let mut r = kafka_protocol::messages::DescribeAclsRequest::default();
            r.resource_type_filter = 2;
            r.resource_name_filter = Some(s("t"));
            r.pattern_type_filter = 3;
            r.operation = 1;
            r.permission_type = 1;
            RequestKind::DescribeAcls(r)
        }
        ApiKey::CreateAcls => {
            use kafka_protocol::messages::create_acls_request::{AclCreation, CreateAclsRequest};
            let mut c = AclCreation::default();
            c.resource_type = 2;
            c.resource_name = s("t");
            c.resource_pattern_type = 3;
            c.principal = s("User:alice");
            c.host = s("*");
            c.operation = 3;
            c.permission_type = 3;
            let mut r = CreateAclsRequest::default();
            r.creations = vec![c];
            RequestKind::CreateAcls(r)
        }
        ApiKey::DeleteAcls => {
            use kafka_protocol::messages::delete_acls_request::{DeleteAclsFilter, DeleteAclsRequest};
            let mut f = DeleteAclsFilter::default();
            f.resource_type_filter = 2;
            f.resource_name_filter = Some(s("t"));
            f.pattern_type_filter = 3;
            f.principal_filter = Some(s("User:alice"));
            f.operation = 1;
            f.permission_type = 1;
            let mut r = DeleteAclsRequest::default();
            r.filters = vec![f];
            RequestKind::DeleteAcls(r)
        }
        ApiKey::DescribeUserScramCredentials => {
            use kafka_protocol::messages::describe_user_scram_credentials_request::{
                DescribeUserScramCredentialsRequest, UserName,
            };
            let mut u = UserName::default();
            u.name = s("alice");
            let mut r = DescribeUserScramCredentialsRequest::default();
            r.users = Some(vec![u]);
            RequestKind::DescribeUserScramCredentials(r)
        }
        ApiKey::AlterUserScramCredentials => {
            use kafka_protocol::messages::alter_user_scram_credentials_request::{
                AlterUserScramCredentialsRequest, ScramCredentialDeletion, ScramCredentialUpsertion,
            };
            let mut u = ScramCredentialUpsertion::default();
            u.name = s("alice");
            u.mechanism = 1;
            u.iterations = 4096;
            u.salt = bytes::Bytes::from_static(b"salt");
            u.salted_password = bytes::Bytes::from_static(&[7; 32]);
            let mut d = ScramCredentialDeletion::default();
            d.name = s("bob");
            d.mechanism = 2;
            let mut r = AlterUserScramCredentialsRequest::default();
            r.upsertions = vec![u];
            r.deletions = vec![d];
            RequestKind::AlterUserScramCredentials(r)
        }
        ApiKey::DescribeProducers => {
            use kafka_protocol::messages::describe_producers_request::{DescribeProducersRequest, TopicRequest};
            let mut t = TopicRequest::default();
            t.name = TopicName(s("t"));
            t.partition_indexes = vec![0];
            let mut r = DescribeProducersRequest::default();
            r.topics = vec![t];
            RequestKind::DescribeProducers(r)
        }
        ApiKey::ConsumerGroupHeartbeat => {
            use kafka_protocol::messages::consumer_group_heartbeat_request::{
                ConsumerGroupHeartbeatRequest, TopicPartitions,
            };
            let mut tp = TopicPartitions::default();
            tp.partitions = vec![0, 1];
            let mut r = ConsumerGroupHeartbeatRequest::default();
            r.group_id = GroupId(s("g"));
            r.member_id = s("m-1");
            r.subscribed_topic_names = Some(vec![TopicName(s("t"))]);
            r.topic_partitions = Some(vec![tp]);
            RequestKind::ConsumerGroupHeartbeat(r)
        }
        ApiKey::ConsumerGroupDescribe => {
            let mut r = kafka_protocol::messages::ConsumerGroupDescribeRequest::default();
            r.group_ids = vec![GroupId(s("g"))];
            RequestKind::ConsumerGroupDescribe(r)
        }
        ApiKey::GetTelemetrySubscriptions => {
            RequestKind::GetTelemetrySubscriptions(kafka_protocol::messages::GetTelemetrySubscriptionsRequest::default())
        }
        ApiKey::PushTelemetry => {
            let mut r = kafka_protocol::messages::PushTelemetryRequest::default();
            r.metrics = bytes::Bytes::from_static(b"m");
            RequestKind::PushTelemetry(r)
        }
        ApiKey::AddPartitionsToTxn => {
            use kafka_protocol::messages::add_partitions_to_txn_request::{
                AddPartitionsToTxnRequest, AddPartitionsToTxnTopic,
            };
            let mut t = AddPartitionsToTxnTopic::default();
            t.name = TopicName(s("t"));
            t.partitions = vec![0, 1];
            let mut r = AddPartitionsToTxnRequest::default();
            r.v3_and_below_transactional_id = kafka_protocol::messages::TransactionalId(s("tx"));
            r.v3_and_below_topics = vec![t];
            RequestKind::AddPartitionsToTxn(r)
        }
        ApiKey::AddOffsetsToTxn => {
            let mut r = kafka_protocol::messages::AddOffsetsToTxnRequest::default();
            r.transactional_id = kafka_protocol::messages::TransactionalId(s("tx"));
            r.group_id = GroupId(s("g"));
            RequestKind::AddOffsetsToTxn(r)
        }
        ApiKey::EndTxn => {
            let mut r = kafka_protocol::messages::EndTxnRequest::default();
            r.transactional_id = kafka_protocol::messages::TransactionalId(s("tx"));
            r.committed = true;
            RequestKind::EndTxn(r)
        }
        ApiKey::TxnOffsetCommit => {
            use kafka_protocol::messages::txn_offset_commit_request::{
                TxnOffsetCommitRequest, TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
            };
            let mut p = TxnOffsetCommitRequestPartition::default();
            p.committed_offset = 5;
            p.committed_metadata = Some(s("m"));
            let mut t = TxnOffsetCommitRequestTopic::default();
            t.name = TopicName(s("t"));
            t.partitions = vec![p];
            let mut r = TxnOffsetCommitRequest::default();
            r.transactional_id = kafka_protocol::messages::TransactionalId(s("tx"));
            r.group_id = GroupId(s("g"));
            r.topics = vec![t];
            if version >= 3 {
                r.member_id = s("m-1");
                r.generation_id = 1;
            }
            RequestKind::TxnOffsetCommit(r)
        }
        ApiKey::DescribeTransactions => {
            let mut r = kafka_protocol::messages::DescribeTransactionsRequest::default();
            r.transactional_ids = vec![kafka_protocol::messages::TransactionalId(s("tx"))];
            RequestKind::DescribeTransactions(r)
        }
        ApiKey::ListTransactions => {
            let mut r = kafka_protocol::messages::ListTransactionsRequest::default();
            r.state_filters = vec![s("Ongoing")];
            if version >= 1 {
                r.duration_filter = 1000;
            }
            RequestKind::ListTransactions(r)
        }
        ApiKey::DescribeConfigs => {
            let mut res = DescribeConfigsResource::default();
            res.resource_type = 2;
            res.resource_name = s("t");
            res.configuration_keys = Some(vec![s("retention.ms")]);
            let mut r = DescribeConfigsRequest::default();
            r.resources = vec![res];
            RequestKind::DescribeConfigs(r)
        }
        ApiKey::SaslHandshake => {
            let mut r = SaslHandshakeRequest::default();
            r.mechanism = s("PLAIN");
            RequestKind::SaslHandshake(r)
        }
        ApiKey::SaslAuthenticate => {
            let mut r = SaslAuthenticateRequest::default();
            r.auth_bytes = Bytes::from_static(b"\0user\0password");
            RequestKind::SaslAuthenticate(r)
        }
        ApiKey::JoinGroup => {
            let mut p = JoinGroupRequestProtocol::default();
            p.name = s("range");
            p.metadata = Bytes::from_static(b"meta");
            let mut r = JoinGroupRequest::default();
            r.group_id = GroupId(s("g"));
            r.protocol_type = s("consumer");
            r.protocols = vec![p];
            RequestKind::JoinGroup(r)
        }
        ApiKey::SyncGroup => {
            let mut a = SyncGroupRequestAssignment::default();
            a.member_id = s("m");
            a.assignment = Bytes::from_static(b"assignment");
            let mut r = SyncGroupRequest::default();
            r.group_id = GroupId(s("g"));
            r.assignments = vec![a];
            RequestKind::SyncGroup(r)
        }
        ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default()),
        ApiKey::LeaveGroup => {
            let mut m = MemberIdentity::default();
            m.member_id = s("m");
            let mut r = LeaveGroupRequest::default();
            r.group_id = GroupId(s("g"));
            if version >= 3 {
                r.members = vec![m];
            } else {
                r.member_id = s("m");
            }
            RequestKind::LeaveGroup(r)
        }
        ApiKey::OffsetCommit => {
            let mut t = OffsetCommitRequestTopic::default();
            t.name = topic();
            t.partitions = vec![OffsetCommitRequestPartition::default()];
            let mut r = OffsetCommitRequest::default();
            r.group_id = GroupId(s("g"));
            r.topics = vec![t];
            RequestKind::OffsetCommit(r)
        }
        ApiKey::OffsetFetch => {
            let mut t = OffsetFetchRequestTopic::default();
            t.name = topic();
            t.partition_indexes = vec![0];
            let mut gt = OffsetFetchRequestTopics::default();
            gt.name = topic();
            gt.partition_indexes = vec![0];
            let mut g = OffsetFetchRequestGroup::default();
            g.group_id = GroupId(s("g"));
            g.topics = Some(vec![gt]);
            let mut r = OffsetFetchRequest::default();
            if version >= 8 {
                r.groups = vec![g];
            } else {
                r.group_id = GroupId(s("g"));
                r.topics = Some(vec![t]);
            }
            RequestKind::OffsetFetch(r)
        }
        ApiKey::ListGroups => {
            let mut r = ListGroupsRequest::default();
            if version >= 4 {
                r.states_filter = vec![s("Stable")];
            }
            if version >= 5 {
                r.types_filter = vec![s("classic")];
            }
            RequestKind::ListGroups(r)
        }
        ApiKey::DescribeGroups => {
            let mut r = DescribeGroupsRequest::default();
            r.groups = vec![GroupId(s("g"))];
            RequestKind::DescribeGroups(r)
        }
        other => panic!("no sample for {other:?}: add one, every served API must be fuzzed"),
    }
}

/// Every (API, version) weir serves.
fn served() -> Vec<(ApiKey, i16)> {
    APIS.iter()
        .filter_map(|api| supported(api.key).map(|(min, max)| (api.key, min, max)))
        .flat_map(|(api, min, max)| (min..=max).map(move |v| (api, v)))
        .collect()
}

/// The request as a frame body (no size prefix): header, then body, as a client sends it.
fn encode(api: ApiKey, version: i16, body: &RequestKind) -> Vec<u8> {
    let mut buf = BytesMut::from(&header(api, version)[..]);
    body.encode(&mut buf, version).unwrap_or_else(|e| panic!("{api:?} v{version} sample does not encode: {e}"));
    buf.to_vec()
}

fn samples() -> Vec<(ApiKey, i16, Vec<u8>)> {
    served().into_iter().map(|(api, v)| (api, v, encode(api, v, &sample(api, v)))).collect()
}

#[test]
fn every_served_api_has_a_sample_that_round_trips() {
    let all = samples();
    assert!(all.len() > 100, "only {} API versions served?", all.len());
    for (api, version, frame) in &all {
        let request = decode_request(Bytes::from(frame.clone()), supported)
            .unwrap_or_else(|e| panic!("{api:?} v{version}: the sample does not decode: {e}"));
        assert_eq!(encode(*api, *version, &request.body), *frame, "{api:?} v{version} does not round-trip");
    }
}

/// The seed corpus of the `decode_request` fuzz target (`fuzz/corpus/decode_request`, run by `scripts/fuzz.sh`):
/// every served API at its lowest and highest version, as frames without their size prefix. Checked here to decode
/// and to cover the API table; `WEIR_WRITE_FUZZ_CORPUS=1 cargo test -p weir-kafka --test hostile_requests corpus`
/// rewrites it from the samples (after an API is added to the table, say).
#[test]
fn the_fuzz_corpus_covers_every_served_api() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode_request");
    if std::env::var_os("WEIR_WRITE_FUZZ_CORPUS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for api in APIS {
            let (min, max) = supported(api.key).unwrap();
            for version in if min == max { vec![min] } else { vec![min, max] } {
                let frame = encode(api.key, version, &sample(api.key, version));
                std::fs::write(dir.join(format!("{}-v{version}", api.name)), frame).unwrap();
            }
        }
    }
    let mut covered = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let frame = std::fs::read(&path).unwrap();
        let request = decode_request(Bytes::from(frame), supported)
            .unwrap_or_else(|e| panic!("{} is not a request weir serves: {e}", path.display()));
        covered.insert(request.api as i16);
    }
    for api in APIS {
        assert!(covered.contains(&(api.key as i16)), "the fuzz corpus has no {} request", api.name);
    }
}

/// The counts a hostile client sends: i32 maximum and a large count in the plain encodings, and the largest
/// unsigned varint (a compact array's count is stored plus one).
const HUGE: &[&[u8]] = &[
    &[0x7f, 0xff, 0xff, 0xff],
    &[0x0f, 0xff, 0xff, 0xff],
    &[0x00, 0x10, 0x00, 0x00],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0x7f],
];

#[test]
fn a_huge_count_anywhere_is_an_error_not_an_allocation() {
    let mut decoded = 0usize;
    let mut refused = 0usize;
    for (api, version, frame) in samples() {
        for pos in 8..frame.len() {
            for huge in HUGE {
                let mut bad = frame.clone();
                let end = (pos + huge.len()).min(bad.len());
                bad[pos..end].copy_from_slice(&huge[..end - pos]);
                let before = ALLOCATOR.allocated();
                match decode_request(Bytes::from(bad), supported) {
                    Ok(_) => decoded += 1,
                    Err(_) => refused += 1,
                }
                let peak = ALLOCATOR.max_allocated();
                assert!(
                    peak < 256 << 20,
                    "{api:?} v{version}, count at byte {pos}: {peak} bytes allocated (was {before})"
                );
            }
        }
    }
    assert!(refused > decoded, "the overwritten frames mostly decoded ({decoded} decoded, {refused} refused)");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// Random damage to a valid request of any served API and version: an error or a request, never a panic or an
    /// allocation out of proportion to the frame.
    #[test]
    fn damaged_requests_never_panic_or_balloon(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let all = samples();
        let (api, version, frame) = &all[pick.index(all.len())];
        let mut bad = frame.clone();
        for (at, byte, kind) in edits {
            let i = 8 + at.index(bad.len().saturating_sub(8).max(1));
            match kind {
                0 if i < bad.len() => bad[i] = byte,
                1 if i <= bad.len() => bad.insert(i, byte),
                _ if i < bad.len() => { bad.remove(i); }
                _ => {}
            }
        }
        let _ = decode_request(Bytes::from(bad), supported);
        prop_assert!(ALLOCATOR.max_allocated() < 256 << 20, "{:?} v{}", api, version);
    }
}

/// The red team's reproductions over a real socket: each gets its connection closed and the listener keeps serving.
#[test]
fn the_listener_survives_the_red_team_requests() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BackgroundBroker::start(
        weir_broker::BrokerConfig::new(dir.path()),
        ListenerConfig::new("127.0.0.1:0".parse().unwrap()),
    )
    .unwrap();
    // (api key, version): the APIs the report names, in their plain and flexible (compact) encodings.
    let cases: &[(ApiKey, i16)] = &[
        (ApiKey::Metadata, 1),
        (ApiKey::Metadata, 12),
        (ApiKey::Produce, 3),
        (ApiKey::Produce, 9),
        (ApiKey::ListOffsets, 1),
        (ApiKey::ListOffsets, 7),
        (ApiKey::CreateTopics, 2),
        (ApiKey::CreateTopics, 7),
        (ApiKey::DeleteTopics, 1),
        (ApiKey::DeleteTopics, 6),
        (ApiKey::DescribeConfigs, 1),
        (ApiKey::DescribeConfigs, 4),
        (ApiKey::DescribeGroups, 0),
        (ApiKey::DescribeGroups, 5),
    ];
    for &(api, version) in cases {
        let flexible = api.request_header_version(version) >= 2;
        let mut body = header(api, version);
        // The scalar fields before each body's first array.
        match api {
            ApiKey::Produce if flexible => body.extend_from_slice(&[0, 0, 1, 0, 0, 0x13, 0x88]),
            ApiKey::Produce => body.extend_from_slice(&[0xff, 0xff, 0, 1, 0, 0, 0x13, 0x88]),
            ApiKey::ListOffsets if version >= 2 => body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0]),
            ApiKey::ListOffsets => body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]),
            _ => {}
        }
        // The first array's count: i32::MAX, or the largest varint in the compact encoding.
        if flexible {
            body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]);
        } else {
            body.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
        }
        let mut sock = TcpStream::connect(broker.addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = BytesMut::new();
        out.put_i32(body.len() as i32);
        out.extend_from_slice(&body);
        sock.write_all(&out).unwrap();
        let mut reply = [0u8; 16];
        let n = sock.read(&mut reply).unwrap_or(0);
        assert_eq!(n, 0, "{api:?} v{version}: expected the connection closed, got {n} bytes");
        assert_still_serving(broker.addr);
    }
}

/// A request header as a client sends it (correlation id 7, client id "fuzz").
fn header(api: ApiKey, version: i16) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = 7;
    header.client_id = Some(s("fuzz"));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, api.request_header_version(version)).expect("header encodes");
    buf.to_vec()
}

fn assert_still_serving(addr: std::net::SocketAddr) {
    let frame = encode(ApiKey::Metadata, 1, &RequestKind::Metadata(MetadataRequest::default()));
    let mut sock = TcpStream::connect(addr).expect("the listener still accepts");
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
    sock.write_all(&frame).unwrap();
    let mut size = [0u8; 4];
    sock.read_exact(&mut size).expect("a Metadata answer");
    let mut rest = vec![0u8; i32::from_be_bytes(size) as usize];
    sock.read_exact(&mut rest).unwrap();
    assert_eq!(&rest[..4], &7i32.to_be_bytes(), "the answer carries the request's correlation id");
}

/// Sends one request and decodes the Produce answer's first partition: (error code, base offset).
fn produce_once(addr: std::net::SocketAddr, request: &ProduceRequest, version: i16) -> (i16, i64) {
    use kafka_protocol::messages::ProduceResponse;
    use kafka_protocol::protocol::Decodable;
    let frame = encode(ApiKey::Produce, version, &RequestKind::Produce(request.clone()));
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
    sock.write_all(&frame).unwrap();
    let mut size = [0u8; 4];
    sock.read_exact(&mut size).unwrap();
    let mut rest = vec![0u8; i32::from_be_bytes(size) as usize];
    sock.read_exact(&mut rest).unwrap();
    // The correlation id, and in flexible versions (response header v1) an empty tagged-field section.
    let header_len = if ApiKey::Produce.response_header_version(version) >= 1 { 5 } else { 4 };
    let mut body = Bytes::from(rest).slice(header_len..);
    let response = ProduceResponse::decode(&mut body, version).unwrap();
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// The red team's F2 batch (valid CRC, header claiming two records, body holding one) gets INVALID_RECORD and is not
/// stored; acks=5 gets INVALID_REQUIRED_ACKS; the same batch made honest is stored.
#[test]
fn produce_refuses_batches_that_lie_and_acks_kafka_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BackgroundBroker::start(
        weir_broker::BrokerConfig::new(dir.path()),
        ListenerConfig::new("127.0.0.1:0".parse().unwrap()),
    )
    .unwrap();
    let batch = |claimed: i32| {
        let mut b = Vec::new();
        weir_log::batch::encode(&[weir_log::Record::from_value("hi")], 1_700_000_000_000, &mut b);
        b[23..27].copy_from_slice(&(claimed - 1).to_be_bytes());
        b[57..61].copy_from_slice(&claimed.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    };
    let request = |acks: i16, records: Bytes| {
        let mut p = PartitionProduceData::default();
        p.records = Some(records);
        let mut t = TopicProduceData::default();
        t.name = TopicName(s("events"));
        t.partition_data = vec![p];
        let mut r = ProduceRequest::default();
        r.acks = acks;
        r.timeout_ms = 5000;
        r.topic_data = vec![t];
        r
    };
    assert_eq!(produce_once(broker.addr, &request(1, batch(2)), 3).0, INVALID_RECORD);
    assert_eq!(produce_once(broker.addr, &request(-1, batch(2)), 9).0, INVALID_RECORD, "flexible version");
    assert_eq!(produce_once(broker.addr, &request(5, batch(1)), 3).0, INVALID_REQUIRED_ACKS);
    assert_eq!(broker.broker.offsets("events", 0).unwrap(), (0, 0), "nothing stored");
    assert_eq!(produce_once(broker.addr, &request(-1, batch(1)), 9), (weir_kafka::error_code::NONE, 0));
    assert_eq!(broker.broker.offsets("events", 0).unwrap(), (0, 1));
}
