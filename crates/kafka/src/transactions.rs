//! The transaction APIs (KIP-98), mapped onto the broker's transaction coordinator: InitProducerId with a
//! transactional id, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, and DescribeTransactions and
//! ListTransactions for tools. Each is blocking (the coordinator fsyncs its log, and EndTxn writes a marker to every
//! partition of the transaction): the listener runs them off the async workers.

use kafka_protocol::messages::add_offsets_to_txn_response::AddOffsetsToTxnResponse;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResponse, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{self, DescribeTransactionsResponse};
use kafka_protocol::messages::end_txn_response::EndTxnResponse;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_transactions_response::{self, ListTransactionsResponse};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, DescribeTransactionsRequest, EndTxnRequest,
    InitProducerIdRequest, ListTransactionsRequest, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use weir_broker::group::{OffsetAndMetadata, TopicPartition};
use weir_broker::transactions::{ProducerIdAndEpoch, TxnError, TxnMeta};
use weir_broker::Broker;

use crate::error_code::{NONE, UNKNOWN_TOPIC_OR_PARTITION};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(r: Result<(), TxnError>) -> i16 {
    r.err().map_or(NONE, |e| e.kafka_error_code())
}

/// InitProducerId: an idempotent producer gets a fresh id (or its epoch bumped when it asks with its current one);
/// a transactional one gets its id's producer from the coordinator, fencing any earlier producer of the id.
pub fn init_producer_id(broker: &Broker, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    let Some(transactional_id) = req.transactional_id else {
        if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX {
            r.producer_id = req.producer_id;
            r.producer_epoch = req.producer_epoch + 1;
        } else {
            r.producer_id = ProducerId(broker.allocate_producer_id());
            r.producer_epoch = 0;
        }
        return r;
    };
    let current = (req.producer_id.0 >= 0)
        .then_some(ProducerIdAndEpoch { producer_id: req.producer_id.0, epoch: req.producer_epoch });
    match broker.transactions().init_producer_id(broker, &transactional_id, req.transaction_timeout_ms, current) {
        Ok(p) => {
            r.producer_id = ProducerId(p.producer_id);
            r.producer_epoch = p.epoch;
        }
        Err(e) => r.error_code = e.kafka_error_code(),
    }
    r
}

/// AddPartitionsToTxn (v0–v3, one transaction per request): unknown partitions are refused and, as in Kafka, the
/// others then answer OPERATION_NOT_ATTEMPTED; otherwise they all join the transaction.
pub fn add_partitions_to_txn(broker: &Broker, req: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let mut wanted = Vec::new();
    let mut unknown = Vec::new();
    for t in &req.v3_and_below_topics {
        for &p in &t.partitions {
            let exists = broker.topic(&t.name.0).and_then(|topic| topic.partition(p).map(|_| ())).is_ok();
            if exists {
                wanted.push((t.name.0.to_string(), p));
            } else {
                unknown.push((t.name.0.to_string(), p));
            }
        }
    }
    let all = if unknown.is_empty() {
        code(broker.transactions().add_partitions(
            &req.v3_and_below_transactional_id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &wanted,
        ))
    } else {
        ResponseError::OperationNotAttempted.code()
    };
    let mut r = AddPartitionsToTxnResponse::default();
    for t in req.v3_and_below_topics {
        let mut tr = AddPartitionsToTxnTopicResult::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = AddPartitionsToTxnPartitionResult::default();
            pr.partition_index = p;
            let is_unknown = unknown.iter().any(|(n, i)| *n == *t.name.0 && *i == p);
            pr.partition_error_code = if is_unknown { UNKNOWN_TOPIC_OR_PARTITION } else { all };
            tr.results_by_partition.push(pr);
        }
        r.results_by_topic_v3_and_below.push(tr);
    }
    r
}

pub fn add_offsets_to_txn(broker: &Broker, req: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let mut r = AddOffsetsToTxnResponse::default();
    r.error_code = code(broker.transactions().add_offsets(
        &req.transactional_id,
        req.producer_id.0,
        req.producer_epoch,
        &req.group_id.0,
    ));
    r
}

/// TxnOffsetCommit: the sender is checked against the group (KIP-447: a zombie member's generation is refused) and
/// the offsets are held by the transaction until it ends.
pub fn txn_offset_commit(broker: &Broker, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let now = weir_log::now_ms();
    let group = req.group_id.0.to_string();
    let mut unknown = Vec::new();
    let mut offsets = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
            if broker.topic(&tp.topic).and_then(|topic| topic.partition(tp.partition).map(|_| ())).is_err() {
                unknown.push(tp);
                continue;
            }
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
            offsets.push((tp, OffsetAndMetadata { offset: p.committed_offset, metadata, commit_timestamp_ms: now }));
        }
    }
    let all = match broker.groups().validate_transactional_member(&group, &req.member_id, req.generation_id) {
        Err(e) => e.kafka_error_code(),
        Ok(()) if offsets.is_empty() => NONE,
        Ok(()) => code(broker.transactions().commit_offsets(
            &req.transactional_id,
            req.producer_id.0,
            req.producer_epoch,
            &group,
            offsets,
        )),
    };
    let mut r = TxnOffsetCommitResponse::default();
    for t in req.topics {
        let mut tr = TxnOffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = TxnOffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            let is_unknown = unknown.iter().any(|tp| tp.topic == *t.name.0 && tp.partition == p.partition_index);
            pr.error_code = if is_unknown { UNKNOWN_TOPIC_OR_PARTITION } else { all };
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

pub fn end_txn(broker: &Broker, req: EndTxnRequest) -> EndTxnResponse {
    let mut r = EndTxnResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    r.error_code = code(broker.transactions().end_transaction(
        broker,
        &req.transactional_id,
        req.producer_id.0,
        req.producer_epoch,
        req.committed,
    ));
    r
}

pub fn describe_transactions(broker: &Broker, req: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let mut r = DescribeTransactionsResponse::default();
    for id in req.transactional_ids {
        let mut t = describe_transactions_response::TransactionState::default();
        t.transactional_id = id.clone();
        t.producer_id = ProducerId(-1);
        t.producer_epoch = -1;
        match broker.transactions().describe(&id) {
            Ok(meta) => {
                t.transaction_state = s(meta.state.name());
                t.transaction_timeout_ms = meta.timeout_ms;
                t.transaction_start_time_ms = meta.started_ms;
                t.producer_id = ProducerId(meta.producer_id);
                t.producer_epoch = meta.producer_epoch;
                t.topics = topics_of(&meta);
            }
            Err(e) => t.error_code = e.kafka_error_code(),
        }
        r.transaction_states.push(t);
    }
    r
}

/// The transaction's partitions grouped by topic, as DescribeTransactions lists them.
fn topics_of(meta: &TxnMeta) -> Vec<describe_transactions_response::TopicData> {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (topic, p) in &meta.partitions {
        by_topic.entry(topic).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            let mut d = describe_transactions_response::TopicData::default();
            d.topic = TopicName(s(topic));
            d.partitions = partitions;
            d
        })
        .collect()
}

/// ListTransactions, filtered as asked by state, producer id, how long they have been open (v1) and, as Kafka 3.8+
/// does, a transactional-id pattern (a regular expression over the whole id).
pub fn list_transactions(broker: &Broker, req: ListTransactionsRequest) -> ListTransactionsResponse {
    const STATES: [&str; 6] = ["Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort"];
    let mut r = ListTransactionsResponse::default();
    r.unknown_state_filters = req.state_filters.iter().filter(|f| !STATES.contains(&f.as_str())).cloned().collect();
    let pattern = match req.transactional_id_pattern.as_deref().filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => match regex_lite_match(p) {
            Some(re) => Some(re),
            None => {
                r.error_code = crate::error_code::INVALID_REQUEST;
                return r;
            }
        },
    };
    let now = weir_log::now_ms();
    for meta in broker.transactions().list() {
        if !req.state_filters.is_empty() && !req.state_filters.iter().any(|f| f.as_str() == meta.state.name()) {
            continue;
        }
        if !req.producer_id_filters.is_empty() && !req.producer_id_filters.contains(&ProducerId(meta.producer_id)) {
            continue;
        }
        if req.duration_filter >= 0 && (meta.started_ms < 0 || now - meta.started_ms < req.duration_filter) {
            continue;
        }
        if pattern.as_ref().is_some_and(|re| !re(&meta.transactional_id)) {
            continue;
        }
        let mut t = list_transactions_response::TransactionState::default();
        t.transactional_id = TransactionalId(s(&meta.transactional_id));
        t.producer_id = ProducerId(meta.producer_id);
        t.transaction_state = s(meta.state.name());
        r.transaction_states.push(t);
    }
    r
}

/// A matcher for ListTransactions' id pattern. Kafka takes a Java regular expression; weir accepts the literal
/// id, `*` wildcards, and `.*`, which cover what the tools send. `None` for anything else.
fn regex_lite_match(pattern: &str) -> Option<impl Fn(&str) -> bool> {
    let glob = pattern.replace(".*", "*");
    if glob.chars().any(|c| "()[]{}?+|^$\\".contains(c)) {
        return None;
    }
    let parts: Vec<String> = glob.split('*').map(str::to_string).collect();
    Some(move |id: &str| wildcard(&parts, id))
}

fn wildcard(parts: &[String], id: &str) -> bool {
    match parts {
        [] => id.is_empty(),
        [only] => id == only,
        [first, rest @ ..] => {
            let Some(mut tail) = id.strip_prefix(first.as_str()) else { return false };
            let (last, middle) = rest.split_last().expect("two or more parts");
            for m in middle {
                match tail.find(m.as_str()) {
                    Some(i) => tail = &tail[i + m.len()..],
                    None => return false,
                }
            }
            tail.len() >= last.len() && tail.ends_with(last.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_patterns() {
        let m = regex_lite_match("relay-.*").unwrap();
        assert!(m("relay-1") && m("relay-") && !m("other"));
        let m = regex_lite_match("a*b*c").unwrap();
        assert!(m("abc") && m("a-b-c") && !m("a-c") && !m("abcd"));
        assert!(regex_lite_match("exact").unwrap()("exact"));
        assert!(regex_lite_match("(x|y)").is_none());
    }
}
