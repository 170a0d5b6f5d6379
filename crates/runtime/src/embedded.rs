//! The `Bus` over the in-process broker: no network, no serialisation beyond the log's own batches.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weir_broker::transactions::TxnError;
use weir_broker::{
    partitioner, Broker, BrokerError, Consumer, ConsumerConfig, Header, Isolation, OffsetReset, ProduceRecord, Producer,
};
use weir_log::Record;

use crate::bus::{Bus, BusError, Delivery, Message, OutgoingMessage, StartFrom, SubscribeOptions, Subscription};

/// A [`Bus`] backed by an embedded [`Broker`].
#[derive(Clone, Debug)]
pub struct EmbeddedBus {
    broker: Arc<Broker>,
    producer: Producer,
}

impl EmbeddedBus {
    pub fn new(broker: Arc<Broker>) -> Self {
        let producer = broker.producer();
        EmbeddedBus { broker, producer }
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    fn send(
        &self,
        m: OutgoingMessage,
    ) -> impl Future<Output = Result<weir_broker::RecordMetadata, BrokerError>> + Send {
        self.producer.send(produce_record(m))
    }
}

fn produce_record(m: OutgoingMessage) -> ProduceRecord {
    ProduceRecord {
        topic: m.topic,
        partition: m.partition,
        key: m.key,
        value: m.value,
        headers: m.headers,
        timestamp: m.timestamp,
    }
}

fn bus_error(e: BrokerError) -> BusError {
    match e {
        // A send's shared failure: what it is decides the kind (a refused record is the caller's to fix).
        BrokerError::Shared(inner)
            if matches!(*inner, BrokerError::RecordsRefused { .. } | BrokerError::ValidationUnavailable { .. }) =>
        {
            BusError::Invalid(inner.to_string())
        }
        BrokerError::UnknownTopic(t) => BusError::UnknownTopic(t),
        BrokerError::ShuttingDown => BusError::Closed,
        BrokerError::Group(
            weir_broker::group::GroupError::RebalanceInProgress
            | weir_broker::group::GroupError::IllegalGeneration
            | weir_broker::group::GroupError::UnknownMemberId,
        ) => BusError::Rebalanced,
        e @ (BrokerError::InvalidTopicName(_)
        | BrokerError::InvalidPartitions(_)
        | BrokerError::InvalidConfig(_)
        | BrokerError::UnknownPartition { .. }
        | BrokerError::RecordsRefused { .. }
        | BrokerError::ValidationUnavailable { .. }) => BusError::Invalid(e.to_string()),
        e => BusError::Backend(e.to_string()),
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn produce(&self, message: OutgoingMessage) -> Result<Delivery, BusError> {
        let meta = self.send(message).await.map_err(bus_error)?;
        Ok(Delivery { partition: meta.partition, offset: meta.offset })
    }

    async fn produce_all(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<Delivery>, BusError> {
        // Enqueue everything first so the records share batches, then collect the acknowledgements. One send: on a
        // topic with schema validation, a refused record stores none of them.
        let pending = self.producer.send_all(messages.into_iter().map(produce_record).collect());
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            let meta = p.await.map_err(bus_error)?;
            out.push(Delivery { partition: meta.partition, offset: meta.offset });
        }
        Ok(out)
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>, BusError> {
        let mut config = ConsumerConfig::new(options.topics).group(options.group);
        config.client_id = options.client_id;
        config.session_timeout = options.session_timeout;
        config.heartbeat_interval = options.session_timeout / 3;
        config.max_poll_records = options.max_batch;
        config.auto_offset_reset = match options.start_from {
            StartFrom::Earliest => OffsetReset::Earliest,
            StartFrom::Latest => OffsetReset::Latest,
        };
        if options.read_committed {
            config.isolation = Isolation::ReadCommitted;
        }
        let group = config.group.clone().unwrap_or_default();
        let consumer = self.broker.consumer(config).map_err(bus_error)?;
        Ok(Box::new(EmbeddedSubscription {
            consumer: Some(consumer),
            broker: self.broker.clone(),
            group,
            transactional_id: options.transactional_id,
            producer: None,
        }))
    }

    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), BusError> {
        match self.broker.create_topic(topic, partitions, BTreeMap::new()) {
            Ok(_) | Err(BrokerError::TopicExists(_)) => Ok(()),
            Err(e) => Err(bus_error(e)),
        }
    }

    async fn ensure_kept_topic(&self, topic: &str) -> Result<(), BusError> {
        let kept = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        match self.broker.create_topic(topic, 1, kept) {
            Ok(_) | Err(BrokerError::TopicExists(_)) => Ok(()),
            Err(e) => Err(bus_error(e)),
        }
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<i64>, BusError> {
        let d = self.broker.describe_topic(topic).map_err(bus_error)?;
        Ok(d.partitions.iter().map(|p| p.log_end_offset).collect())
    }

    async fn read(&self, topics: &[String], start_from: StartFrom) -> Result<Box<dyn Subscription>, BusError> {
        let mut config = ConsumerConfig::new(topics.iter().cloned());
        config.auto_offset_reset = match start_from {
            StartFrom::Earliest => OffsetReset::Earliest,
            StartFrom::Latest => OffsetReset::Latest,
        };
        let consumer = self.broker.consumer(config).map_err(bus_error)?;
        Ok(Box::new(EmbeddedSubscription {
            consumer: Some(consumer),
            broker: self.broker.clone(),
            group: String::new(),
            transactional_id: None,
            producer: None,
        }))
    }
}

#[derive(Debug)]
struct EmbeddedSubscription {
    consumer: Option<Consumer>,
    broker: Arc<Broker>,
    group: String,
    transactional_id: Option<String>,
    /// The transactional producer, initialised (fencing any earlier one of the id) at the first transaction.
    producer: Option<TransactionalProducer>,
}

/// An in-process transactional producer: its id and epoch from the broker's transaction coordinator, and the next
/// sequence number per partition (the log checks them as it does a Kafka client's).
#[derive(Debug)]
struct TransactionalProducer {
    producer_id: i64,
    epoch: i16,
    sequences: HashMap<(String, i32), i32>,
}

/// What a failed transaction step means for the caller.
fn txn_error(e: BrokerError) -> BusError {
    match e {
        BrokerError::Transaction(e @ TxnError::ProducerFenced { .. })
        | BrokerError::Transaction(e @ TxnError::InvalidProducerIdMapping(_)) => BusError::Fenced(e.to_string()),
        BrokerError::Log(e @ weir_log::LogError::InvalidProducerEpoch { .. }) => BusError::Fenced(e.to_string()),
        e => bus_error(e),
    }
}

/// Runs one transaction on the embedded broker: the messages appended as transactional batches, the offsets held by
/// the coordinator, then committed; on any failure aborted. Blocking (fsyncs): call it off the async workers.
fn run_transaction(
    broker: &Broker,
    transactional_id: &str,
    group: &str,
    producer: &mut Option<TransactionalProducer>,
    messages: Vec<OutgoingMessage>,
    offsets: Vec<(String, i32, i64)>,
) -> Result<(), BusError> {
    if messages.is_empty() && offsets.is_empty() {
        return Ok(());
    }
    let txns = broker.transactions();
    let p = match producer {
        Some(p) => p,
        None => {
            let id = txns
                .init_producer_id(broker, transactional_id, TRANSACTION_TIMEOUT_MS, None)
                .map_err(|e| txn_error(e.into()))?;
            producer.insert(TransactionalProducer {
                producer_id: id.producer_id,
                epoch: id.epoch,
                sequences: HashMap::new(),
            })
        }
    };
    let (pid, epoch) = (p.producer_id, p.epoch);
    // Each partition's records, in order, chunked to stay under the topic's largest batch.
    let mut by_partition: BTreeMap<(String, i32), Vec<Vec<Record>>> = BTreeMap::new();
    let mut sizes: HashMap<(String, i32), usize> = HashMap::new();
    for m in messages {
        let topic = broker.topic_or_create(&m.topic).map_err(bus_error)?;
        let n = topic.partition_count();
        let partition = match (m.partition, &m.key) {
            (Some(p), _) => {
                topic.partition(p).map_err(bus_error)?;
                p
            }
            (None, Some(key)) => partitioner::partition_for_key(key, n),
            (None, None) => (rand::random::<u32>() % n.max(1) as u32) as i32,
        };
        let max = topic.log_config().max_message_bytes / 2;
        let size = 64
            + m.key.as_ref().map_or(0, |k| k.len())
            + m.value.as_ref().map_or(0, |v| v.len())
            + m.headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>();
        let tp = (m.topic.clone(), partition);
        let chunks = by_partition.entry(tp.clone()).or_default();
        let used = sizes.entry(tp).or_insert(usize::MAX);
        if *used == usize::MAX || *used + size > max {
            chunks.push(Vec::new());
            *used = 0;
        }
        *used += size;
        chunks.last_mut().expect("pushed above").push(Record {
            key: m.key,
            value: m.value,
            headers: m.headers.into_iter().map(|(key, value)| Header { key, value: Some(value) }).collect(),
            timestamp: m.timestamp,
        });
    }
    let mut steps = || -> Result<(), BrokerError> {
        let partitions: Vec<(String, i32)> = by_partition.keys().cloned().collect();
        if !partitions.is_empty() {
            txns.add_partitions(transactional_id, pid, epoch, &partitions)?;
        }
        if !offsets.is_empty() {
            txns.add_offsets(transactional_id, pid, epoch, group)?;
            let now = weir_log::now_ms();
            let offsets = offsets
                .iter()
                .map(|(t, part, o)| {
                    (
                        weir_broker::group::TopicPartition::new(t.clone(), *part),
                        weir_broker::group::OffsetAndMetadata {
                            offset: *o,
                            metadata: String::new(),
                            commit_timestamp_ms: now,
                        },
                    )
                })
                .collect();
            txns.commit_offsets(transactional_id, pid, epoch, group, offsets)?;
        }
        for ((topic, partition), chunks) in &by_partition {
            for records in chunks {
                let next = p.sequences.entry((topic.clone(), *partition)).or_insert(0);
                let mut buf = Vec::new();
                weir_log::batch::encode_for_producer(records, weir_log::now_ms(), pid, epoch, *next, true, &mut buf);
                broker.append_batches(topic, *partition, buf)?;
                // Sequences wrap at i32::MAX back to 0, as in Kafka.
                *next = ((*next as i64 + records.len() as i64) % (i32::MAX as i64 + 1)) as i32;
            }
        }
        txns.end_transaction(broker, transactional_id, pid, epoch, true)?;
        Ok(())
    };
    match steps() {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = txn_error(e);
            if matches!(e, BusError::Fenced(_)) {
                *producer = None;
            } else if let Err(abort) = txns.end_transaction(broker, transactional_id, pid, epoch, false) {
                tracing::warn!(transactional_id, "aborting the failed transaction: {abort}");
            }
            Err(e)
        }
    }
}

/// How long an in-process transaction may stay open before the coordinator aborts it (they last milliseconds; the
/// bound matters only if the process dies mid-transaction).
const TRANSACTION_TIMEOUT_MS: i32 = 60_000;

impl EmbeddedSubscription {
    fn consumer(&mut self) -> Result<&mut Consumer, BusError> {
        self.consumer.as_mut().ok_or(BusError::Closed)
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next_batch(&mut self, max_wait: Duration) -> Result<Vec<Message>, BusError> {
        let records = self.consumer()?.poll(max_wait).await.map_err(bus_error)?;
        Ok(records
            .into_iter()
            .map(|r| Message {
                topic: r.topic.to_string(),
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|h| (h.key, h.value.unwrap_or_default())).collect(),
            })
            .collect())
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        self.consumer()?.commit().await.map_err(bus_error)
    }

    async fn commit_offsets(&mut self, offsets: &[(String, i32, i64)]) -> Result<(), BusError> {
        let offsets = offsets
            .iter()
            .map(|(t, p, o)| (weir_broker::group::TopicPartition { topic: t.clone(), partition: *p }, *o))
            .collect();
        self.consumer()?.commit_offsets(offsets).await.map_err(bus_error)
    }

    async fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError> {
        let c = self.consumer()?;
        c.ensure_assigned().await.map_err(bus_error)?;
        c.seek(topic, partition, offset).map_err(bus_error)
    }

    fn assignment(&self) -> Vec<(String, i32)> {
        self.consumer.as_ref().map(|c| c.assignment()).unwrap_or_default()
    }

    async fn commit_transaction(
        &mut self,
        messages: Vec<OutgoingMessage>,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), BusError> {
        let id = self.transactional_id.clone().ok_or_else(|| {
            BusError::Invalid("commit_transaction needs a transactional_id in the subscription's options".into())
        })?;
        let (broker, group, offsets) = (self.broker.clone(), self.group.clone(), offsets.to_vec());
        let mut producer = self.producer.take();
        let (result, producer) = tokio::task::spawn_blocking(move || {
            let result = run_transaction(&broker, &id, &group, &mut producer, messages, offsets);
            (result, producer)
        })
        .await
        .map_err(|e| BusError::Backend(e.to_string()))?;
        self.producer = producer;
        result
    }

    async fn close(mut self: Box<Self>) -> Result<(), BusError> {
        match self.consumer.take() {
            Some(c) => c.close().await.map_err(bus_error),
            None => Ok(()),
        }
    }
}
