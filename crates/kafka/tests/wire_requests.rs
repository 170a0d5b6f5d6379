//! Requests sent on the wire as a client would, for what no client library drives easily: transactional requests out
//! of order or with bad arguments (each gets Kafka's error code, changes nothing, and the connection goes on serving:
//! one connection carries the whole test), and the admin answers of a single node (OffsetDelete of a consumed
//! topic, DescribeLogDirs, DescribeProducers, ElectLeaders, OffsetForLeaderEpoch, KIP-714's telemetry).

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, DescribeTransactionsRequest, EndTxnRequest, GroupId,
    InitProducerIdRequest, ListTransactionsRequest, ProducerId, RequestHeader, RequestKind, ResponseHeader,
    ResponseKind, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use weir_broker::testing::broker_config;
use weir_kafka::{BackgroundBroker, ListenerConfig};

struct Client {
    sock: TcpStream,
    correlation: i32,
}

impl Client {
    fn call(&mut self, api: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
        self.correlation += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(StrBytes::from_static_str("protocol-test"));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, api.request_header_version(version)).unwrap();
        body.encode(&mut buf, version).unwrap();
        self.sock.write_all(&(buf.len() as i32).to_be_bytes()).unwrap();
        self.sock.write_all(&buf).unwrap();
        let mut size = [0u8; 4];
        self.sock.read_exact(&mut size).unwrap();
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.sock.read_exact(&mut frame).unwrap();
        let mut frame = Bytes::from(frame);
        let h = ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        assert_eq!(h.correlation_id, self.correlation);
        ResponseKind::decode(api, &mut frame, version).unwrap()
    }

    fn init(&mut self, id: &str, timeout_ms: i32) -> (i16, i64, i16) {
        let mut r = InitProducerIdRequest::default();
        r.transactional_id = Some(TransactionalId(StrBytes::from_string(id.into())));
        r.transaction_timeout_ms = timeout_ms;
        r.producer_id = ProducerId(-1);
        r.producer_epoch = -1;
        let ResponseKind::InitProducerId(r) = self.call(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(r))
        else {
            panic!("not an InitProducerId response")
        };
        (r.error_code, r.producer_id.0, r.producer_epoch)
    }

    /// AddPartitionsToTxn v3: the error code of each partition, in request order.
    fn add_partitions(&mut self, id: &str, pid: i64, epoch: i16, partitions: &[(&str, i32)]) -> Vec<i16> {
        let mut r = AddPartitionsToTxnRequest::default();
        r.v3_and_below_transactional_id = TransactionalId(StrBytes::from_string(id.into()));
        r.v3_and_below_producer_id = ProducerId(pid);
        r.v3_and_below_producer_epoch = epoch;
        for (topic, p) in partitions {
            let mut t = AddPartitionsToTxnTopic::default();
            t.name = TopicName(StrBytes::from_string(topic.to_string()));
            t.partitions = vec![*p];
            r.v3_and_below_topics.push(t);
        }
        let ResponseKind::AddPartitionsToTxn(r) =
            self.call(ApiKey::AddPartitionsToTxn, 3, RequestKind::AddPartitionsToTxn(r))
        else {
            panic!("not an AddPartitionsToTxn response")
        };
        r.results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| t.results_by_partition.iter().map(|p| p.partition_error_code))
            .collect()
    }

    fn end(&mut self, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
        let mut r = EndTxnRequest::default();
        r.transactional_id = TransactionalId(StrBytes::from_string(id.into()));
        r.producer_id = ProducerId(pid);
        r.producer_epoch = epoch;
        r.committed = commit;
        let ResponseKind::EndTxn(r) = self.call(ApiKey::EndTxn, 3, RequestKind::EndTxn(r)) else {
            panic!("not an EndTxn response")
        };
        r.error_code
    }

    fn describe(&mut self, id: &str) -> (i16, String) {
        let mut r = DescribeTransactionsRequest::default();
        r.transactional_ids = vec![TransactionalId(StrBytes::from_string(id.into()))];
        let ResponseKind::DescribeTransactions(r) =
            self.call(ApiKey::DescribeTransactions, 0, RequestKind::DescribeTransactions(r))
        else {
            panic!("not a DescribeTransactions response")
        };
        let t = &r.transaction_states[0];
        (t.error_code, t.transaction_state.to_string())
    }
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

#[test]
fn out_of_order_and_invalid_transactional_requests_get_kafkas_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    w.broker.create_topic("t", 2, Default::default()).unwrap();
    let mut c = Client { sock: TcpStream::connect(w.addr).unwrap(), correlation: 0 };

    // Before InitProducerId the id is unknown.
    assert_eq!(c.add_partitions("tx", 1, 0, &[("t", 0)]), [code(ResponseError::InvalidProducerIdMapping)]);
    assert_eq!(c.end("tx", 1, 0, true), code(ResponseError::InvalidProducerIdMapping));
    assert_eq!(c.describe("tx").0, code(ResponseError::TransactionalIdNotFound));

    // A timeout outside 1..=15 min is refused.
    assert_eq!(c.init("tx", 0).0, code(ResponseError::InvalidTransactionTimeout));
    assert_eq!(c.init("tx", 900_001).0, code(ResponseError::InvalidTransactionTimeout));

    let (error, pid, epoch) = c.init("tx", 60_000);
    assert_eq!(error, 0);
    // EndTxn with no transaction open.
    assert_eq!(c.end("tx", pid, epoch, true), code(ResponseError::InvalidTxnState));
    assert_eq!(c.describe("tx"), (0, "Empty".to_string()));

    // An unknown partition fails the request: the known one is not attempted, and nothing starts.
    assert_eq!(
        c.add_partitions("tx", pid, epoch, &[("t", 0), ("t", 7)]),
        [code(ResponseError::OperationNotAttempted), code(ResponseError::UnknownTopicOrPartition)]
    );
    assert_eq!(c.describe("tx").1, "Empty");

    // TxnOffsetCommit for a group the transaction has not added.
    let mut commit = TxnOffsetCommitRequest::default();
    commit.transactional_id = TransactionalId(StrBytes::from_static_str("tx"));
    commit.group_id = GroupId(StrBytes::from_static_str("g"));
    commit.producer_id = ProducerId(pid);
    commit.producer_epoch = epoch;
    commit.generation_id = -1;
    let mut p = TxnOffsetCommitRequestPartition::default();
    p.committed_offset = 3;
    let mut t = TxnOffsetCommitRequestTopic::default();
    t.name = TopicName(StrBytes::from_static_str("t"));
    t.partitions = vec![p];
    commit.topics = vec![t];
    let ResponseKind::TxnOffsetCommit(r) =
        c.call(ApiKey::TxnOffsetCommit, 3, RequestKind::TxnOffsetCommit(commit.clone()))
    else {
        panic!()
    };
    assert_eq!(r.topics[0].partitions[0].error_code, code(ResponseError::InvalidTxnState));

    // In order: the partition and the group join, the offsets are held, the abort drops them.
    assert_eq!(c.add_partitions("tx", pid, epoch, &[("t", 1)]), [0]);
    let mut add = AddOffsetsToTxnRequest::default();
    add.transactional_id = TransactionalId(StrBytes::from_static_str("tx"));
    add.producer_id = ProducerId(pid);
    add.producer_epoch = epoch;
    add.group_id = GroupId(StrBytes::from_static_str("g"));
    let ResponseKind::AddOffsetsToTxn(r) = c.call(ApiKey::AddOffsetsToTxn, 3, RequestKind::AddOffsetsToTxn(add)) else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    let ResponseKind::TxnOffsetCommit(r) = c.call(ApiKey::TxnOffsetCommit, 3, RequestKind::TxnOffsetCommit(commit))
    else {
        panic!()
    };
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(c.describe("tx").1, "Ongoing");
    assert_eq!(c.end("tx", pid, epoch, false), 0);
    assert_eq!(c.describe("tx").1, "CompleteAbort");
    assert!(w.broker.groups().fetch_offsets("g", None).is_empty(), "an aborted transaction committed offsets");
    // The abort wrote one marker, to the one partition the transaction had.
    assert_eq!(w.broker.offsets("t", 1).unwrap().1, 1);
    assert_eq!(w.broker.offsets("t", 0).unwrap().1, 0);
    // Retrying the same EndTxn succeeds; the opposite decision is refused.
    assert_eq!(c.end("tx", pid, epoch, false), 0);
    assert_eq!(c.end("tx", pid, epoch, true), code(ResponseError::InvalidTxnState));

    // A second InitProducerId bumps the epoch: the old epoch is fenced everywhere.
    let (error, pid2, epoch2) = c.init("tx", 60_000);
    assert_eq!((error, pid2, epoch2), (0, pid, epoch + 1));
    assert_eq!(c.add_partitions("tx", pid, epoch, &[("t", 0)]), [code(ResponseError::ProducerFenced)]);
    assert_eq!(c.end("tx", pid, epoch, true), code(ResponseError::ProducerFenced));
    assert_eq!(c.add_partitions("tx", pid + 1, epoch2, &[("t", 0)]), [code(ResponseError::InvalidProducerIdMapping)]);

    // ListTransactions filters by state; an unknown state filter is reported back.
    let mut list = ListTransactionsRequest::default();
    list.state_filters = vec![StrBytes::from_static_str("Empty"), StrBytes::from_static_str("Sleeping")];
    list.duration_filter = -1;
    let ResponseKind::ListTransactions(r) = c.call(ApiKey::ListTransactions, 1, RequestKind::ListTransactions(list))
    else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    assert_eq!(r.transaction_states.len(), 1);
    assert_eq!(r.transaction_states[0].transactional_id.as_str(), "tx");
    assert_eq!(r.unknown_state_filters, [StrBytes::from_static_str("Sleeping")]);
}

#[test]
fn single_node_admin_answers() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    use kafka_protocol::messages::{
        DescribeLogDirsRequest, DescribeProducersRequest, ElectLeadersRequest, GetTelemetrySubscriptionsRequest,
        OffsetDeleteRequest, OffsetForLeaderEpochRequest,
    };

    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    w.broker.create_topic("t", 2, Default::default()).unwrap();
    let mut c = Client { sock: TcpStream::connect(w.addr).unwrap(), correlation: 0 };

    // A transaction left open on t-1: DescribeProducers shows its producer and where its transaction starts.
    let (_, pid, epoch) = c.init("tx", 60_000);
    assert_eq!(c.add_partitions("tx", pid, epoch, &[("t", 1)]), [0]);
    w.broker.append_marker("t", 1, pid, epoch, weir_log::batch::ControlType::Abort).unwrap();
    let mut r = DescribeProducersRequest::default();
    let mut t = TopicRequest::default();
    t.name = TopicName(StrBytes::from_static_str("t"));
    t.partition_indexes = vec![1, 9];
    r.topics = vec![t];
    let ResponseKind::DescribeProducers(r) = c.call(ApiKey::DescribeProducers, 0, RequestKind::DescribeProducers(r))
    else {
        panic!()
    };
    let parts = &r.topics[0].partitions;
    assert_eq!(parts[0].active_producers.len(), 1);
    assert_eq!(parts[0].active_producers[0].producer_id.0, pid);
    assert_eq!(parts[1].error_code, code(ResponseError::UnknownTopicOrPartition));

    // DescribeLogDirs: one directory, every partition's size.
    let mut r = DescribeLogDirsRequest::default();
    let mut t = DescribableLogDirTopic::default();
    t.topic = TopicName(StrBytes::from_static_str("t"));
    t.partitions = vec![0, 1];
    r.topics = Some(vec![t]);
    let ResponseKind::DescribeLogDirs(r) = c.call(ApiKey::DescribeLogDirs, 4, RequestKind::DescribeLogDirs(r)) else {
        panic!()
    };
    assert_eq!(r.results.len(), 1);
    assert!(r.results[0].total_bytes > 0 && r.results[0].usable_bytes > 0);
    let sizes: Vec<i64> = r.results[0].topics[0].partitions.iter().map(|p| p.partition_size).collect();
    assert_eq!(sizes.len(), 2);
    assert!(sizes[1] > 0, "the marker takes space: {sizes:?}");

    // ElectLeaders: nothing to elect on one node.
    let mut r = ElectLeadersRequest::default();
    let mut t = TopicPartitions::default();
    t.topic = TopicName(StrBytes::from_static_str("t"));
    t.partitions = vec![0, 5];
    r.topic_partitions = Some(vec![t]);
    let ResponseKind::ElectLeaders(r) = c.call(ApiKey::ElectLeaders, 2, RequestKind::ElectLeaders(r)) else { panic!() };
    let codes: Vec<i16> = r.replica_election_results[0].partition_result.iter().map(|p| p.error_code).collect();
    assert_eq!(codes, [code(ResponseError::ElectionNotNeeded), code(ResponseError::UnknownTopicOrPartition)]);

    // OffsetForLeaderEpoch: epoch 0 ends at the log end; a later epoch is unknown.
    let mut r = OffsetForLeaderEpochRequest::default();
    let mut t = OffsetForLeaderTopic::default();
    t.topic = TopicName(StrBytes::from_static_str("t"));
    let mut p0 = OffsetForLeaderPartition::default();
    p0.partition = 1;
    let mut p1 = OffsetForLeaderPartition::default();
    p1.partition = 1;
    p1.leader_epoch = 3;
    t.partitions = vec![p0, p1];
    r.topics = vec![t];
    let ResponseKind::OffsetForLeaderEpoch(r) =
        c.call(ApiKey::OffsetForLeaderEpoch, 4, RequestKind::OffsetForLeaderEpoch(r))
    else {
        panic!()
    };
    let ends: Vec<(i32, i64)> = r.topics[0].partitions.iter().map(|p| (p.leader_epoch, p.end_offset)).collect();
    assert_eq!(ends, [(0, 1), (-1, -1)]);

    // KIP-714: an instance id handed out, and no metrics asked for.
    let ResponseKind::GetTelemetrySubscriptions(r) = c.call(
        ApiKey::GetTelemetrySubscriptions,
        0,
        RequestKind::GetTelemetrySubscriptions(GetTelemetrySubscriptionsRequest::default()),
    ) else {
        panic!()
    };
    assert_eq!(r.error_code, 0);
    assert!(!r.client_instance_id.is_nil());
    assert!(r.requested_metrics.is_empty());

    // OffsetDelete of a topic a live member consumes: GROUP_SUBSCRIBED_TO_TOPIC, and the offsets stay.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let member = runtime.block_on(async {
        let mut m = w.broker.consumer(weir_broker::ConsumerConfig::new(["t"]).group("live")).unwrap();
        m.poll(std::time::Duration::from_millis(500)).await.unwrap();
        m.commit_offsets(vec![(weir_broker::group::TopicPartition::new("t", 0), 0)]).await.unwrap();
        m
    });
    let mut r = OffsetDeleteRequest::default();
    r.group_id = GroupId(StrBytes::from_static_str("live"));
    let mut t = OffsetDeleteRequestTopic::default();
    t.name = TopicName(StrBytes::from_static_str("t"));
    t.partitions = vec![OffsetDeleteRequestPartition::default()];
    r.topics = vec![t];
    let ResponseKind::OffsetDelete(resp) = c.call(ApiKey::OffsetDelete, 0, RequestKind::OffsetDelete(r.clone())) else {
        panic!()
    };
    assert_eq!(resp.topics[0].partitions[0].error_code, code(ResponseError::GroupSubscribedToTopic));
    assert_eq!(w.broker.groups().fetch_offsets("live", None).len(), 1);
    // Once the member has left, the offsets can go.
    runtime.block_on(async { member.close().await.unwrap() });
    let ResponseKind::OffsetDelete(resp) = c.call(ApiKey::OffsetDelete, 0, RequestKind::OffsetDelete(r)) else {
        panic!()
    };
    assert_eq!((resp.error_code, resp.topics[0].partitions[0].error_code), (0, 0));
    assert!(w.broker.groups().fetch_offsets("live", None).is_empty());
}
