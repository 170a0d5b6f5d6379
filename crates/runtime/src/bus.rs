//! The `Bus`: what a weir system uses to publish and consume events, whatever runs underneath (the embedded broker
//! now; a Kafka cluster through rdkafka later). It is deliberately the shape of a Kafka client — produce returning
//! partition and offset, group subscriptions yielding records, explicit commits, seeks — so both fit it unchanged.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// An event to publish.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub topic: String,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    /// `None`: chosen by key hash (Kafka's murmur2), or spread when there is no key.
    pub partition: Option<i32>,
    /// Milliseconds since the epoch; `None` means now.
    pub timestamp: Option<i64>,
}

impl OutgoingMessage {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        OutgoingMessage { topic: topic.into(), value: Some(value.into()), ..Default::default() }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Where a published event was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// An event received from a subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// Where a group starts on partitions it has never committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

/// How to subscribe.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    pub group: String,
    pub topics: Vec<String>,
    pub start_from: StartFrom,
    pub client_id: String,
    pub session_timeout: Duration,
    /// Most messages one `next_batch` returns.
    pub max_batch: usize,
    /// Read only committed transactions, and never an aborted one's messages (Kafka's
    /// `isolation.level=read_committed`); otherwise everything written.
    pub read_committed: bool,
    /// The transactional id [`Subscription::commit_transaction`] produces under (Kafka's `transactional.id`): one
    /// per consuming instance that must not run twice; a newer subscription with the same id fences this one.
    pub transactional_id: Option<String>,
}

impl SubscribeOptions {
    pub fn new(group: impl Into<String>, topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        SubscribeOptions {
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            start_from: StartFrom::Earliest,
            client_id: "weir".into(),
            session_timeout: Duration::from_secs(45),
            max_batch: 500,
            read_committed: false,
            transactional_id: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The group rebalanced under this member: uncommitted messages will be redelivered; keep polling.
    #[error("the consumer group rebalanced; uncommitted messages will be redelivered")]
    Rebalanced,
    #[error("the bus is shutting down")]
    Closed,
    /// The cluster cannot be reached right now (every broker down, the connection lost); the client keeps trying to
    /// reconnect by itself, so the caller pauses and asks again.
    #[error("the cluster is unreachable: {0}")]
    Unavailable(String),
    /// Another producer with the same transactional id took over: this one must stop (its transaction was aborted).
    #[error("fenced: {0}")]
    Fenced(String),
    /// The principal the bus acts as may not do this (Kafka's TOPIC_, GROUP_, TRANSACTIONAL_ID_ and
    /// CLUSTER_AUTHORIZATION_FAILED): the message names the principal, the operation and the resource. Nothing of
    /// the refused call was done. See `access.rs`.
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    #[error("{0}")]
    Backend(String),
}

/// A group membership yielding messages. Drop or `close` it to leave the group.
#[async_trait]
pub trait Subscription: Send {
    /// Up to `max_batch` messages, waiting at most `max_wait`; empty when none arrived.
    async fn next_batch(&mut self, max_wait: Duration) -> Result<Vec<Message>, BusError>;
    /// Commits the position after every message returned so far.
    async fn commit(&mut self) -> Result<(), BusError>;
    /// Commits explicit next-offsets `(topic, partition, offset)`.
    async fn commit_offsets(&mut self, offsets: &[(String, i32, i64)]) -> Result<(), BusError>;
    /// Moves the position of an assigned partition.
    async fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError>;
    /// The partitions currently assigned to this member.
    fn assignment(&self) -> Vec<(String, i32)>;
    /// Publishes `messages` and commits this group's next `offsets` in one transaction (consume-transform-produce):
    /// read_committed readers see the messages and the group sees the offsets together, or neither. Needs
    /// `transactional_id` in the subscription's options. On an error nothing of it is visible (the transaction was
    /// aborted); [`BusError::Fenced`] means a newer instance with the same id took over and this one must stop.
    async fn commit_transaction(
        &mut self,
        messages: Vec<OutgoingMessage>,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), BusError> {
        let _ = (messages, offsets);
        Err(BusError::Invalid("this bus does not support transactions".into()))
    }
    /// Leaves the group.
    async fn close(self: Box<Self>) -> Result<(), BusError>;
}

/// Publishing and subscribing, independent of the backend.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes one message and waits until it is stored (as durably as the topic is configured).
    async fn produce(&self, message: OutgoingMessage) -> Result<Delivery, BusError>;
    /// Publishes several, in order, and waits for all of them.
    async fn produce_all(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<Delivery>, BusError> {
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            out.push(self.produce(m).await?);
        }
        Ok(out)
    }
    /// Joins `options.group` for `options.topics`.
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>, BusError>;
    /// Creates a topic if it does not exist yet.
    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), BusError>;
    /// Creates, if it does not exist yet, a one-partition topic that keeps the latest record of every key for good
    /// (a service's state, like the schema registry's `_schemas`): `cleanup.policy=compact`, which the embedded log
    /// honours by keeping every record (it does not compact yet), a cluster by compacting.
    async fn ensure_kept_topic(&self, topic: &str) -> Result<(), BusError>;
    /// Reads every partition of `topics` from `start_from` without joining a consumer group (Kafka's `assign`): for
    /// a service that rebuilds its state from a topic. Such a reader has nothing to commit.
    async fn read(&self, topics: &[String], start_from: StartFrom) -> Result<Box<dyn Subscription>, BusError>;
    /// The offset the next record of each partition of `topic` will get (Kafka's high watermark), by partition: with
    /// a group's committed offsets, its lag.
    async fn end_offsets(&self, topic: &str) -> Result<Vec<i64>, BusError>;
}
