//! The `Bus` over the in-process broker: no network, no serialisation beyond the log's own batches.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weir_broker::{Broker, BrokerError, Consumer, ConsumerConfig, OffsetReset, ProduceRecord, Producer};

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
        self.producer.send(ProduceRecord {
            topic: m.topic,
            partition: m.partition,
            key: m.key,
            value: m.value,
            headers: m.headers,
            timestamp: m.timestamp,
        })
    }
}

fn bus_error(e: BrokerError) -> BusError {
    match e {
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
        | BrokerError::UnknownPartition { .. }) => BusError::Invalid(e.to_string()),
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
        // Enqueue everything first so the records share batches, then collect the acknowledgements.
        let pending: Vec<_> = messages.into_iter().map(|m| self.send(m)).collect();
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
        let consumer = self.broker.consumer(config).map_err(bus_error)?;
        Ok(Box::new(EmbeddedSubscription { consumer: Some(consumer) }))
    }

    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), BusError> {
        match self.broker.create_topic(topic, partitions, BTreeMap::new()) {
            Ok(_) | Err(BrokerError::TopicExists(_)) => Ok(()),
            Err(e) => Err(bus_error(e)),
        }
    }
}

#[derive(Debug)]
struct EmbeddedSubscription {
    consumer: Option<Consumer>,
}

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

    async fn close(mut self: Box<Self>) -> Result<(), BusError> {
        match self.consumer.take() {
            Some(c) => c.close().await.map_err(bus_error),
            None => Ok(()),
        }
    }
}
