//! One function per Kafka API: each takes the decoded request and answers from the broker. Per-partition problems
//! become Kafka error codes in the response; nothing here fails the connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::create_topics_response::{CreatableTopicResult, CreateTopicsResponse};
use kafka_protocol::messages::delete_topics_response::{DeletableTopicResult, DeleteTopicsResponse};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest, ListOffsetsRequest,
    MetadataRequest, ProduceRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;
use weir_broker::{Broker, BrokerError, Isolation};

use crate::apis::{self, APIS};
use crate::config::ListenerConfig;
use crate::error_code::{
    INVALID_REQUEST, INVALID_REQUIRED_ACKS, KAFKA_STORAGE_ERROR, NONE, UNKNOWN_TOPIC_OR_PARTITION, UNSUPPORTED_VERSION,
};

const NODE_ID: i32 = 0;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(e: &BrokerError) -> i16 {
    e.kafka_error_code()
}

/// Every API of the table with the versions weir serves; `unsupported_version` for the v0 answer to an ApiVersions
/// request at a version weir cannot parse.
pub fn api_versions(unsupported_version: bool) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = if unsupported_version { UNSUPPORTED_VERSION } else { NONE };
    r.api_keys = APIS
        .iter()
        .filter_map(|api| {
            apis::supported(api.key).map(|(min, max)| {
                let mut v = ApiVersion::default();
                v.api_key = api.key as i16;
                v.min_version = min;
                v.max_version = max;
                v
            })
        })
        .collect();
    r
}

pub fn metadata(broker: &Broker, config: &ListenerConfig, req: MetadataRequest) -> MetadataResponse {
    let mut r = MetadataResponse::default();
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(NODE_ID);
    b.host = s(&config.advertised_host);
    b.port = config.advertised_port as i32;
    r.brokers = vec![b];
    r.cluster_id = Some(s("weir"));
    r.controller_id = BrokerId(NODE_ID);
    // Topics asked for by name, or (Metadata v10+, as KIP-848 clients do) by id alone.
    let mut names: Vec<String> = Vec::new();
    match &req.topics {
        None => names = broker.list_topics(),
        Some(topics) => {
            for t in topics {
                match (&t.name, t.topic_id.is_nil()) {
                    (Some(n), _) => names.push(n.0.to_string()),
                    (None, false) => match broker.topic_by_id(t.topic_id.as_u128()) {
                        Some(topic) => names.push(topic.name().to_string()),
                        None => {
                            let mut unknown = MetadataResponseTopic::default();
                            unknown.topic_id = t.topic_id;
                            unknown.error_code = kafka_protocol::ResponseError::UnknownTopicId.code();
                            r.topics.push(unknown);
                        }
                    },
                    (None, true) => {}
                }
            }
        }
    }
    for name in names {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(s(&name)));
        t.is_internal = name.starts_with("__");
        let topic = match broker.topic(&name) {
            Ok(topic) => Ok(topic),
            Err(_) if req.allow_auto_topic_creation && req.topics.is_some() => broker.topic_or_create(&name),
            Err(e) => Err(e),
        };
        match topic {
            Ok(topic) => {
                t.topic_id = uuid::Uuid::from_u128(topic.id());
                t.partitions = topic
                    .partitions()
                    .iter()
                    .map(|p| {
                        let mut mp = MetadataResponsePartition::default();
                        mp.partition_index = p.index;
                        mp.leader_id = BrokerId(NODE_ID);
                        mp.replica_nodes = vec![BrokerId(NODE_ID)];
                        mp.isr_nodes = vec![BrokerId(NODE_ID)];
                        if p.offline_reason().is_some() {
                            mp.error_code = KAFKA_STORAGE_ERROR;
                            mp.offline_replicas = vec![BrokerId(NODE_ID)];
                        }
                        mp
                    })
                    .collect();
            }
            Err(e) => t.error_code = code(&e),
        }
        r.topics.push(t);
    }
    r
}

pub async fn produce(broker: &Arc<Broker>, req: ProduceRequest) -> ProduceResponse {
    let mut r = ProduceResponse::default();
    // Kafka's acks: -1 (all), 0 (no response) or 1 (the leader); anything else is INVALID_REQUIRED_ACKS.
    let acks_valid = matches!(req.acks, -1..=1);
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let mut tr = TopicProduceResponse::default();
        tr.name = topic.name.clone();
        for part in topic.partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = part.index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            if !acks_valid {
                pr.error_code = INVALID_REQUIRED_ACKS;
                pr.error_message = Some(s(&format!("acks={} (use -1, 0 or 1)", req.acks)));
                tr.partition_responses.push(pr);
                continue;
            }
            let records = part.records.unwrap_or_default();
            let b = broker.clone();
            let n = name.clone();
            let result = match b.topic_or_create(&n) {
                Ok(_) => tokio::task::spawn_blocking(move || b.append_batches(&n, part.index, records.to_vec()))
                    .await
                    .unwrap_or(Err(BrokerError::ShuttingDown)),
                Err(e) => Err(e),
            };
            match result {
                Ok(info) => {
                    pr.base_offset = info.base_offset;
                    pr.log_append_time_ms = info.log_append_time.unwrap_or(-1);
                    pr.log_start_offset = broker.offsets(&name, part.index).map(|(s, _)| s).unwrap_or(-1);
                }
                Err(e) => {
                    pr.error_code = code(&e);
                    pr.error_message = Some(s(&e.to_string()));
                    // Which records schema validation refused, and why (sent from v8 on; older clients get the
                    // message alone).
                    if let BrokerError::RecordsRefused { errors, .. } = &e {
                        pr.record_errors = errors
                            .iter()
                            .map(|r| {
                                BatchIndexAndErrorMessage::default()
                                    .with_batch_index(i32::try_from(r.index).unwrap_or(i32::MAX))
                                    .with_batch_index_error_message(Some(s(&r.reason)))
                            })
                            .collect();
                    }
                }
            }
            tr.partition_responses.push(pr);
        }
        r.responses.push(tr);
    }
    r
}

pub async fn fetch(broker: &Arc<Broker>, req: FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let deadline = tokio::time::Instant::now() + wait;
    let notify = Arc::new(Notify::new());
    for t in &req.topics {
        if let Ok(topic) = broker.topic(&t.topic.0) {
            for p in &t.partitions {
                if let Ok(part) = topic.partition(p.partition) {
                    part.register_waiter(&notify);
                }
            }
        }
    }
    loop {
        let (response, bytes) = fetch_once(broker, &req);
        if bytes >= min_bytes.max(1) || tokio::time::Instant::now() >= deadline {
            count_served(broker, &response);
            return response;
        }
        let _ = tokio::time::timeout_at(deadline, notify.notified()).await;
    }
}

/// Counts what a fetch response hands out, per topic, in the process's metrics.
fn count_served(broker: &Broker, response: &FetchResponse) {
    for t in &response.responses {
        for p in &t.partitions {
            let Some(batches) = p.records.as_ref().filter(|b| !b.is_empty()) else { continue };
            let records = weir_log::batch::Batches::new(batches)
                .filter_map(|b| b.ok())
                .map(|(h, _)| h.record_count.max(0) as u64);
            broker.record_consumed(&t.topic.0, records.sum(), batches.len() as u64);
        }
    }
}

/// The isolation level a Fetch or ListOffsets asks for (0 read_uncommitted, 1 read_committed).
fn isolation(level: i8) -> Isolation {
    if level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    }
}

fn fetch_once(broker: &Broker, req: &FetchRequest) -> (FetchResponse, usize) {
    let mut r = FetchResponse::default();
    let isolation = isolation(req.isolation_level);
    let mut total = 0usize;
    let mut budget = if req.max_bytes > 0 { req.max_bytes as usize } else { 50 << 20 };
    for t in &req.topics {
        let name = t.topic.0.to_string();
        let mut tr = FetchableTopicResponse::default();
        tr.topic = t.topic.clone();
        for p in &t.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = p.partition;
            pd.high_watermark = -1;
            pd.last_stable_offset = -1;
            pd.log_start_offset = -1;
            let max = (p.partition_max_bytes.max(0) as usize).min(budget);
            match broker.read_isolated(&name, p.partition, p.fetch_offset, max.max(1), isolation) {
                Ok(read) => {
                    pd.high_watermark = read.log_end_offset;
                    pd.last_stable_offset = read.last_stable_offset;
                    pd.log_start_offset = read.log_start_offset;
                    if isolation == Isolation::ReadCommitted {
                        pd.aborted_transactions = Some(
                            read.aborted
                                .iter()
                                .map(|a| {
                                    let mut t = AbortedTransaction::default();
                                    t.producer_id = ProducerId(a.producer_id);
                                    t.first_offset = a.first_offset;
                                    t
                                })
                                .collect(),
                        );
                    }
                    // A first batch larger than the budget is still sent whole (KIP-74), but only if nothing was sent.
                    if !read.batches.is_empty() && (read.batches.len() <= budget || total == 0) {
                        total += read.batches.len();
                        budget = budget.saturating_sub(read.batches.len());
                        pd.records = Some(read.batches);
                    } else {
                        pd.records = Some(Bytes::new());
                    }
                }
                Err(e) => {
                    pd.error_code = code(&e);
                    if let Ok((start, end)) = broker.offsets(&name, p.partition) {
                        pd.high_watermark = end;
                        pd.last_stable_offset = broker.last_stable_offset(&name, p.partition).unwrap_or(end);
                        pd.log_start_offset = start;
                    }
                }
            }
            tr.partitions.push(pd);
        }
        r.responses.push(tr);
    }
    (r, total)
}

/// ListOffsets' special timestamps (Kafka's `ListOffsetsRequest.LATEST_TIMESTAMP` and the others).
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub fn list_offsets(broker: &Broker, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut r = ListOffsetsResponse::default();
    let committed = isolation(req.isolation_level) == Isolation::ReadCommitted;
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            // The latest, the earliest, the record with the largest timestamp (answered as latest), or a timestamp.
            let answer = match p.timestamp {
                EARLIEST_TIMESTAMP => broker.offsets(&name, p.partition_index).map(|(s, _)| Some(s)),
                // read_committed's latest is the last stable offset: a consumer starts below undecided data.
                LATEST_TIMESTAMP if committed => broker.last_stable_offset(&name, p.partition_index).map(Some),
                LATEST_TIMESTAMP | MAX_TIMESTAMP => broker.offsets(&name, p.partition_index).map(|(_, e)| Some(e)),
                ts => broker.offset_for_timestamp(&name, p.partition_index, ts),
            };
            match answer {
                Ok(Some(o)) => pr.offset = o,
                Ok(None) => {}
                Err(e) => pr.error_code = code(&e),
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

pub fn create_topics(broker: &Broker, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut r = CreateTopicsResponse::default();
    for t in req.topics {
        let mut tr = CreatableTopicResult::default();
        tr.name = t.name.clone();
        let partitions = if t.num_partitions < 0 { broker.config().default_partitions } else { t.num_partitions };
        let configs: BTreeMap<String, String> =
            t.configs.iter().filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string()))).collect();
        tr.num_partitions = partitions;
        tr.replication_factor = 1;
        let result = if req.validate_only {
            weir_broker::validate_topic_name(&t.name.0)
                .and_then(|_| weir_broker::validate_partitions(partitions as i64).map(|_| ()))
        } else {
            broker.create_topic(&t.name.0, partitions, configs).map(|_| ())
        };
        if let Err(e) = result {
            tr.error_code = code(&e);
            tr.error_message = Some(s(&e.to_string()));
        }
        r.topics.push(tr);
    }
    r
}

pub fn delete_topics(broker: &Broker, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut r = DeleteTopicsResponse::default();
    let names: Vec<TopicName> = if !req.topic_names.is_empty() {
        req.topic_names
    } else {
        req.topics.into_iter().filter_map(|t| t.name).collect()
    };
    for name in names {
        let mut tr = DeletableTopicResult::default();
        tr.name = Some(name.clone());
        if let Err(e) = broker.delete_topic(&name.0) {
            tr.error_code =
                if matches!(e, BrokerError::UnknownTopic(_)) { UNKNOWN_TOPIC_OR_PARTITION } else { code(&e) };
            tr.error_message = Some(s(&e.to_string()));
        }
        r.responses.push(tr);
    }
    r
}

/// DescribeConfigs' resource types and config sources, as Kafka numbers them.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

/// Topic settings as weir applies them (every key, with its effective value); a few broker settings.
pub fn describe_configs(broker: &Broker, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut r = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let pairs: Result<Vec<(String, String)>, (i16, String)> = match res.resource_type {
            RESOURCE_TOPIC => broker
                .describe_topic(&res.resource_name)
                .map(|d| d.configs.into_iter().collect())
                .map_err(|e| (code(&e), e.to_string())),
            RESOURCE_BROKER => Ok(vec![
                ("auto.create.topics.enable".into(), broker.config().auto_create_topics.to_string()),
                ("num.partitions".into(), broker.config().default_partitions.to_string()),
                ("log.dirs".into(), broker.config().data_dir.display().to_string()),
            ]),
            other => Err((INVALID_REQUEST, format!("resource type {other} is not supported"))),
        };
        // The settings the topic itself sets (at creation or altered since), reported as the topic's own.
        let overrides = match res.resource_type {
            RESOURCE_TOPIC => broker.topic_overrides(&res.resource_name).unwrap_or_default(),
            _ => Default::default(),
        };
        match pairs {
            Ok(pairs) => {
                // Null (or, as some clients send, empty) means every key.
                let wanted = res.configuration_keys.as_ref().filter(|w| !w.is_empty());
                out.configs = pairs
                    .into_iter()
                    .filter(|(k, _)| wanted.is_none_or(|w| w.iter().any(|x| **x == **k)))
                    .map(|(k, v)| {
                        let mut c = DescribeConfigsResourceResult::default();
                        c.name = s(&k);
                        c.value = Some(s(&v));
                        let own = overrides.contains_key(&k);
                        c.config_source = if own { DYNAMIC_TOPIC_CONFIG } else { DEFAULT_CONFIG };
                        c
                    })
                    .collect();
            }
            Err((error, message)) => {
                out.error_code = error;
                out.error_message = Some(s(&message));
            }
        }
        r.results.push(out);
    }
    r
}
