//! The `Bus` over a Kafka cluster (or weir's own Kafka listener) through rdkafka, selected with
//! `kafka://[user:password@]host:port[,host:port]`: the same system code runs embedded or on Kafka.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use crate::bus::{Bus, BusError, Delivery, Message, OutgoingMessage, StartFrom, SubscribeOptions, Subscription};

/// A [`Bus`] on Kafka. Cheap to clone.
#[derive(Clone)]
pub struct KafkaBus {
    endpoint: KafkaEndpoint,
    producer: Arc<ThreadedProducer<Deliveries>>,
    admin: Arc<AdminClient<Observer>>,
    /// Metadata and watermarks for `end_offsets` (sampled every few seconds by the analytics lag): one client kept,
    /// rather than a connection set up on every call.
    offsets: Arc<BaseConsumer<Observer>>,
    observer: Observer,
}

/// What weir's Kafka clients do with librdkafka's logs and errors: they go to `tracing`, except a refused login,
/// which is remembered and otherwise kept quiet (librdkafka retries it at every reconnect, logging each time), so
/// [`KafkaBus::credentials_refused`] can turn it into one clear error instead of a retry loop printing forever.
#[derive(Clone, Default)]
pub struct Observer {
    refused: Arc<OnceLock<String>>,
    /// The consumer's group uses the cooperative protocol (`partition.assignment.strategy=cooperative-sticky`).
    cooperative: bool,
}

impl ClientContext for Observer {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if self.refused.get().is_some() && (fac.contains("SASL") || message.contains("uthentication")) {
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "{fac}: {message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
            // Whoever awaits `credentials_refused` reports it (`weir up` ends its start with it): logged here too,
            // it would be said twice.
            if self.refused.set(reason.to_string()).is_ok() {
                tracing::debug!("the Kafka cluster refused the credentials: {reason}");
            }
            return;
        }
        tracing::warn!(target: "librdkafka", "{error}: {reason}");
    }
}

impl ConsumerContext for Observer {
    /// Applies a group's assignment or revocation. rdkafka's default asks librdkafka which rebalance protocol the
    /// group uses, a request to the group's thread that can wait forever once the group is terminating: a consumer
    /// dropped with a rebalance pending then hangs its thread (rust-rdkafka#509; a test here stalled on it under
    /// load). The protocol follows from the consumer's own configuration, so it is not asked for.
    fn rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS as ASSIGN;
        let result = match (err, self.cooperative) {
            (ASSIGN, true) => consumer.incremental_assign(partitions),
            (ASSIGN, false) => consumer.assign(partitions),
            (_, true) => consumer.incremental_unassign(partitions),
            (_, false) => consumer.unassign(),
        };
        if let Err(e) = result {
            tracing::warn!(target: "librdkafka", "applying the group's rebalance ({err:?}) failed: {e}");
        }
    }
}

/// The producer's context: routes each delivery report to the [`Bus::produce_all`] call that sent the record. A
/// record's delivery opaque is a number, the call's id in the high 32 bits and the record's index in the low ones, so
/// sending allocates nothing per record (rdkafka's `FutureProducer` allocates a channel for each, which with the
/// futures to poll cost a producer of small records about a third of its time).
struct Deliveries {
    observer: Observer,
    calls: parking_lot::Mutex<HashMap<u32, Arc<Call>>>,
    next_call: AtomicU32,
}

/// One `produce_all` call's records: each one's outcome as its report arrives, and how many are still awaited.
struct Call {
    outcomes: Box<[OnceLock<Result<Delivery, KafkaError>>]>,
    delivered: AtomicUsize,
    progress: tokio::sync::Notify,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.observer.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.observer.error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (id, i) = ((opaque >> 32) as u32, opaque & 0xffff_ffff);
        // A call that gave up (its future dropped, or a record refused) no longer waits for its reports.
        let Some(call) = self.calls.lock().get(&id).cloned() else { return };
        let outcome = match result {
            Ok(m) => Ok(Delivery { partition: m.partition(), offset: m.offset() }),
            Err((e, _)) => Err(e.clone()),
        };
        if let Some(slot) = call.outcomes.get(i) {
            let _ = slot.set(outcome);
        }
        call.delivered.fetch_add(1, Ordering::AcqRel);
        call.progress.notify_one();
    }
}

impl Deliveries {
    fn register(self: &Arc<Self>, records: usize) -> Registered {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let call = Arc::new(Call {
            outcomes: (0..records).map(|_| OnceLock::new()).collect(),
            delivered: AtomicUsize::new(0),
            progress: tokio::sync::Notify::new(),
        });
        self.calls.lock().insert(id, call.clone());
        Registered { deliveries: self.clone(), id, call }
    }
}

/// A call's registration, removed when the call ends however it ends.
struct Registered {
    deliveries: Arc<Deliveries>,
    id: u32,
    call: Arc<Call>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.deliveries.calls.lock().remove(&self.id);
    }
}

impl Registered {
    /// Waits until at least `n` of the call's records have been reported.
    async fn until_delivered(&self, n: usize) {
        loop {
            let notified = self.call.progress.notified();
            if self.call.delivered.load(Ordering::Acquire) >= n {
                return;
            }
            notified.await;
        }
    }
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus").field("endpoint", &self.endpoint).finish()
    }
}

fn backend(e: KafkaError) -> BusError {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::AssignmentLost,
        ) => BusError::Rebalanced,
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => BusError::UnknownTopic(e.to_string()),
        Some(RDKafkaErrorCode::InvalidPartitions | RDKafkaErrorCode::InvalidTopic) => BusError::Invalid(e.to_string()),
        Some(
            RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::BrokerNotAvailable
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::MessageTimedOut,
        ) => BusError::Unavailable(e.to_string()),
        _ => BusError::Backend(e.to_string()),
    }
}

/// Where a Kafka cluster is and how to log in, from `kafka://[USER:PASSWORD@]HOST:PORT[,HOST:PORT][?PROPERTY=VALUE&...]`
/// (the `kafka://` prefix is optional). Credentials, when given, are sent with SASL/PLAIN, as weir's listener expects.
/// Query parameters are librdkafka properties (`compression.type=lz4`, `linger.ms=20`, ...), set on every client
/// made from the endpoint after weir's own defaults, so they override them.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaEndpoint {
    /// librdkafka's `bootstrap.servers`: `host:port,host:port`.
    pub bootstrap: String,
    pub sasl_plain: Option<(String, String)>,
    /// librdkafka properties from the URL's query.
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password: endpoints end up in logs and error messages.
        f.debug_struct("KafkaEndpoint")
            .field("bootstrap", &self.bootstrap)
            .field("user", &self.sasl_plain.as_ref().map(|(u, _)| u))
            .field("properties", &self.properties.iter().filter(|(k, _)| !k.contains("password")).collect::<Vec<_>>())
            .finish()
    }
}

impl KafkaEndpoint {
    pub fn parse(url: &str) -> Result<KafkaEndpoint, BusError> {
        let rest = url.trim().strip_prefix("kafka://").unwrap_or(url.trim());
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut properties = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if !k.is_empty() => properties.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(BusError::Invalid(format!(
                        "{pair:?} in {url:?} is not PROPERTY=VALUE (a librdkafka property, e.g. compression.type=lz4)"
                    )))
                }
            }
        }
        let (sasl_plain, hosts) = match rest.rsplit_once('@') {
            Some((creds, hosts)) => {
                let (user, password) = creds.split_once(':').ok_or_else(|| {
                    BusError::Invalid(format!("credentials in {url:?} must be USER:PASSWORD@ before the hosts"))
                })?;
                (Some((user.to_string(), password.to_string())), hosts)
            }
            None => (None, rest),
        };
        let hosts = hosts.trim_end_matches('/');
        if hosts.is_empty() {
            return Err(BusError::Invalid(format!("no brokers in {url:?}; expected kafka://HOST:PORT[,HOST:PORT]")));
        }
        for host in hosts.split(',') {
            let port = host.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
            if !matches!(port, Some((h, Ok(_))) if !h.is_empty()) {
                return Err(BusError::Invalid(format!("{host:?} in {url:?} is not HOST:PORT")));
            }
        }
        Ok(KafkaEndpoint { bootstrap: hosts.to_string(), sasl_plain, properties })
    }

    /// A librdkafka configuration reaching this endpoint, with the URL's properties; callers add what their client
    /// needs.
    pub fn client_config(&self) -> ClientConfig {
        self.client_config_with(&[])
    }

    /// [`KafkaEndpoint::client_config`] with `defaults` set first, so the URL's properties override them.
    pub fn client_config_with(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        self.client_config_for(None, defaults)
    }

    /// The configuration of one kind of client: the URL's properties that only the other kind reads are left out
    /// (one URL names both kinds' settings; librdkafka would warn about each on every start).
    pub fn client_config_for(&self, role: Option<ClientRole>, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        if let Some((user, password)) = &self.sasl_plain {
            c.set("security.protocol", "SASL_PLAINTEXT")
                .set("sasl.mechanism", "PLAIN")
                .set("sasl.username", user)
                .set("sasl.password", password);
        }
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            let only = if CONSUMER_ONLY.iter().any(|p| property_matches(k, p)) {
                Some(ClientRole::Consumer)
            } else if PRODUCER_ONLY.iter().any(|p| property_matches(k, p)) {
                Some(ClientRole::Producer)
            } else {
                None
            };
            if role.is_none() || only.is_none() || only == role {
                c.set(k, v);
            }
        }
        c
    }
}

/// Which kind of client a configuration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRole {
    Producer,
    Consumer,
    Admin,
}

/// librdkafka properties only consumers read (a trailing `*` matches a prefix).
const CONSUMER_ONLY: &[&str] = &[
    "group.*",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "auto.commit.*",
    "enable.auto.*",
    "queued.*",
    "fetch.*",
    "isolation.level",
    "partition.assignment.strategy",
    "enable.partition.eof",
    "check.crcs",
];

/// librdkafka properties only producers read.
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "request.required.acks",
    "linger.ms",
    "queue.buffering.*",
    "batch.size",
    "batch.num.messages",
    "compression.*",
    "enable.idempotence",
    "retries",
    "message.send.max.retries",
    "delivery.timeout.ms",
    "message.timeout.ms",
    "transactional.id",
    "transaction.timeout.ms",
    "partitioner",
    "sticky.partitioning.linger.ms",
];

fn property_matches(key: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => key == pattern,
    }
}

/// weir's producer settings, before the URL's: every record acknowledged by all in-sync replicas, exactly once per
/// partition in order (idempotence), batched for up to 5 ms, with librdkafka's queue bounded at 64 MiB.
const PRODUCER_DEFAULTS: &[(&str, &str)] =
    &[("acks", "all"), ("enable.idempotence", "true"), ("linger.ms", "5"), ("queue.buffering.max.kbytes", "65536")];

/// weir's consumer settings, before the URL's: a deep local queue, refilled without librdkafka's default pause of up
/// to a second, so a consumer keeps up with its partitions instead of waiting on its own queue.
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[("queued.min.messages", "1000000"), ("fetch.queue.backoff.ms", "1")];

impl KafkaBus {
    /// `url` is `kafka://[USER:PASSWORD@]HOST:PORT[,HOST:PORT]` (or the bare broker list); see [`KafkaEndpoint`].
    pub fn connect(url: &str) -> Result<KafkaBus, BusError> {
        let endpoint = KafkaEndpoint::parse(url)?;
        let observer = Observer::default();
        let deliveries = Deliveries {
            observer: observer.clone(),
            calls: parking_lot::Mutex::new(HashMap::new()),
            next_call: AtomicU32::new(0),
        };
        let producer = endpoint
            .client_config_for(Some(ClientRole::Producer), PRODUCER_DEFAULTS)
            .create_with_context(deliveries)
            .map_err(backend)?;
        let admin = endpoint
            .client_config_for(Some(ClientRole::Admin), &[])
            .create_with_context(observer.clone())
            .map_err(backend)?;
        let offsets = endpoint
            .client_config_for(Some(ClientRole::Consumer), CONSUMER_DEFAULTS)
            .create_with_context(observer.clone())
            .map_err(backend)?;
        Ok(KafkaBus {
            endpoint,
            producer: Arc::new(producer),
            admin: Arc::new(admin),
            offsets: Arc::new(offsets),
            observer,
        })
    }

    /// Resolves, with the cluster's reason, once it has refused this bus's credentials (a wrong password, an unknown
    /// user); pending while none of its clients has been refused.
    pub async fn credentials_refused(&self) -> String {
        loop {
            if let Some(reason) = self.observer.refused.get() {
                return reason.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn endpoint(&self) -> &KafkaEndpoint {
        &self.endpoint
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn produce(&self, m: OutgoingMessage) -> Result<Delivery, BusError> {
        let mut one = self.produce_all(vec![m]).await?;
        one.pop().ok_or_else(|| BusError::Backend("no delivery report".into()))
    }

    /// Hands every record to librdkafka, which batches them per partition, and then awaits their delivery reports.
    /// At most 50,000 await at once (and librdkafka's own queue is bounded), so a large call keeps memory flat; a
    /// full queue waits for reports. Order within a partition holds, retries included (idempotence is on). An error
    /// names the first record it is about: records after it may have been delivered.
    async fn produce_all(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<Delivery>, BusError> {
        let total = messages.len();
        let registered = self.producer.context().register(total);
        for (i, m) in messages.iter().enumerate() {
            let opaque = ((registered.id as usize) << 32) | i;
            loop {
                match self.producer.send(record(m, opaque)) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // librdkafka's queue is full: wait for one more of ours to be reported, or (none of ours
                        // in it: other calls' records) a moment.
                        let delivered = registered.call.delivered.load(Ordering::Acquire);
                        if i > delivered {
                            registered.until_delivered(delivered + 1).await;
                        } else {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    Err((e, _)) => return Err(about_record(i, total, backend(e))),
                }
            }
            if i + 1 >= MAX_IN_FLIGHT {
                registered.until_delivered(i + 1 - MAX_IN_FLIGHT).await;
            }
        }
        registered.until_delivered(total).await;
        let mut out = Vec::with_capacity(total);
        for (i, slot) in registered.call.outcomes.iter().enumerate() {
            match slot.get() {
                Some(Ok(d)) => out.push(*d),
                Some(Err(e)) => return Err(about_record(i, total, backend(e.clone()))),
                None => return Err(about_record(i, total, BusError::Backend("no delivery report".into()))),
            }
        }
        Ok(out)
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>, BusError> {
        let mut config = self.endpoint.client_config_for(Some(ClientRole::Consumer), CONSUMER_DEFAULTS);
        config
            .set("isolation.level", if options.read_committed { "read_committed" } else { "read_uncommitted" })
            .set("group.id", &options.group)
            .set("client.id", &options.client_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", if options.start_from == StartFrom::Earliest { "earliest" } else { "latest" });
        // The URL's `session.timeout.ms` (how soon a dead instance's partitions move to the others) wins.
        if config.get("session.timeout.ms").is_none() {
            config.set("session.timeout.ms", options.session_timeout.as_millis().to_string());
        }
        let cooperative = config.get("partition.assignment.strategy").is_some_and(|s| s.contains("cooperative"));
        let observer = Observer { cooperative, ..self.observer.clone() };
        let consumer: StreamConsumer<Observer> = config.create_with_context(observer).map_err(backend)?;
        let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(backend)?;
        Ok(Box::new(KafkaSubscription {
            consumer: Arc::new(consumer),
            max_batch: options.max_batch.max(1),
            endpoint: self.endpoint.clone(),
            transactional_id: options.transactional_id,
            producer: None,
        }))
    }

    async fn ensure_kept_topic(&self, topic: &str) -> Result<(), BusError> {
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
        self.create(new).await
    }

    async fn read(&self, topics: &[String], start_from: StartFrom) -> Result<Box<dyn Subscription>, BusError> {
        let mut config = self.endpoint.client_config_for(Some(ClientRole::Consumer), CONSUMER_DEFAULTS);
        // librdkafka's assign() needs a group id, though an assigned consumer never joins the group nor, with the
        // start given explicitly and nothing committed, asks it for offsets.
        config
            .set("group.id", "weir-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: StreamConsumer<Observer> = config.create_with_context(self.observer.clone()).map_err(backend)?;
        let consumer = Arc::new(consumer);
        let start = if start_from == StartFrom::Earliest { Offset::Beginning } else { Offset::End };
        let (topics, reader) = (topics.to_vec(), consumer.clone());
        // Metadata and assign are blocking librdkafka calls.
        tokio::task::spawn_blocking(move || -> Result<(), BusError> {
            let mut tpl = TopicPartitionList::new();
            for topic in &topics {
                let metadata = reader.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(backend)?;
                let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
                if partitions == 0 {
                    return Err(BusError::UnknownTopic(topic.clone()));
                }
                for p in 0..partitions as i32 {
                    tpl.add_partition_offset(topic, p, start).map_err(backend)?;
                }
            }
            reader.assign(&tpl).map_err(backend)
        })
        .await
        .map_err(|e| BusError::Backend(e.to_string()))??;
        Ok(Box::new(KafkaSubscription {
            consumer,
            max_batch: 500,
            endpoint: self.endpoint.clone(),
            transactional_id: None,
            producer: None,
        }))
    }

    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), BusError> {
        self.create(NewTopic::new(topic, partitions, TopicReplication::Fixed(1))).await
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<i64>, BusError> {
        let client = self.offsets.clone();
        let topic = topic.to_string();
        // Metadata and watermarks are blocking librdkafka calls.
        tokio::task::spawn_blocking(move || -> Result<Vec<i64>, BusError> {
            let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(10)).map_err(backend)?;
            let partitions = metadata.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
            if partitions == 0 {
                return Err(BusError::UnknownTopic(topic));
            }
            (0..partitions as i32)
                .map(|p| {
                    client.fetch_watermarks(&topic, p, Duration::from_secs(10)).map(|(_, high)| high).map_err(backend)
                })
                .collect()
        })
        .await
        .map_err(|e| BusError::Backend(e.to_string()))?
    }
}

impl KafkaBus {
    /// Creates a topic; one that exists already is fine.
    async fn create(&self, new: NewTopic<'_>) -> Result<(), BusError> {
        let results = self.admin.create_topics([&new], &AdminOptions::new()).await.map_err(backend)?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(BusError::Invalid(format!("cannot create topic {name}: {code}"))),
            }
        }
        Ok(())
    }
}

/// Deliveries [`KafkaBus::produce_all`] awaits at most at once.
const MAX_IN_FLIGHT: usize = 50_000;

/// A message as librdkafka takes it (borrowing its bytes).
fn record(m: &OutgoingMessage, opaque: usize) -> BaseRecord<'_, [u8], [u8], usize> {
    let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&m.topic, opaque);
    // librdkafka allocates a header list even for none.
    if !m.headers.is_empty() {
        let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
        for (k, v) in &m.headers {
            headers = headers.insert(Header { key: k, value: Some(v.as_ref()) });
        }
        record = record.headers(headers);
    }
    if let Some(k) = &m.key {
        record = record.key(k.as_ref());
    }
    if let Some(v) = &m.value {
        record = record.payload(v.as_ref());
    }
    if let Some(p) = m.partition {
        record = record.partition(p);
    }
    if let Some(ts) = m.timestamp {
        record = record.timestamp(ts);
    }
    record
}

fn about_record(i: usize, total: usize, e: BusError) -> BusError {
    match e {
        BusError::Backend(m) => BusError::Backend(format!("record {i} of {total}: {m}")),
        BusError::Invalid(m) => BusError::Invalid(format!("record {i} of {total}: {m}")),
        BusError::UnknownTopic(m) => BusError::UnknownTopic(format!("record {i} of {total}: {m}")),
        BusError::Unavailable(m) => BusError::Unavailable(format!("record {i} of {total}: {m}")),
        other => other,
    }
}

struct KafkaSubscription {
    consumer: Arc<StreamConsumer<Observer>>,
    max_batch: usize,
    endpoint: KafkaEndpoint,
    transactional_id: Option<String>,
    /// The transactional producer, created and initialised (fencing any earlier one of the id) at the first
    /// transaction, and dropped when fenced or failed fatally so the next one starts afresh.
    producer: Option<Arc<BaseProducer<Failures>>>,
}

/// Counts a transactional producer's failed deliveries: any failure aborts the transaction.
#[derive(Default)]
struct Failures {
    observer: Observer,
    failed: AtomicUsize,
    first: parking_lot::Mutex<Option<KafkaError>>,
}

impl ClientContext for Failures {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.observer.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.observer.error(error, reason);
    }
}

impl ProducerContext for Failures {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, _: usize) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::AcqRel);
            self.first.lock().get_or_insert_with(|| e.clone());
        }
    }
}

/// A transaction's error: fenced (another producer of the id took over, or the coordinator aborted ours on its
/// timeout), or any other.
fn txn_backend(e: KafkaError) -> BusError {
    if e.rdkafka_error_code().is_some_and(fencing_code) {
        BusError::Fenced(e.to_string())
    } else {
        backend(e)
    }
}

/// The codes that mean another producer of the transactional id took over (or the coordinator ended ours).
fn fencing_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::InvalidProducerIdMapping
    )
}

/// How long closing a subscription waits for librdkafka to let go of its consumer.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// How long a transaction step (init, commit) may take before it is given up.
const TRANSACTION_STEP: Duration = Duration::from_secs(30);

/// One transaction through librdkafka's transactional producer, polled on this (blocking) thread in short steps:
/// rust-rdkafka's `commit_transaction` would otherwise wait out librdkafka's ~100 ms internal wake-up after the last
/// delivery report, capping a relay at ten transactions a second.
fn kafka_transaction(
    producer: &BaseProducer<Failures>,
    consumer: &StreamConsumer<Observer>,
    messages: &[OutgoingMessage],
    offsets: &[(String, i32, i64)],
) -> Result<(), BusError> {
    producer.context().failed.store(0, Ordering::Release);
    producer.begin_transaction().map_err(txn_backend)?;
    let result = (|| {
        for (i, m) in messages.iter().enumerate() {
            loop {
                match producer.send(record(m, i)) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        producer.poll(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(about_record(i, messages.len(), txn_backend(e))),
                }
            }
        }
        let started = std::time::Instant::now();
        while producer.in_flight_count() > 0 {
            if started.elapsed() > TRANSACTION_STEP {
                return Err(BusError::Backend("the transaction's messages were not acknowledged in 30 s".into()));
            }
            producer.poll(Duration::from_millis(1));
        }
        if producer.context().failed.load(Ordering::Acquire) > 0 {
            let first = producer.context().first.lock().take();
            return Err(first.map_or_else(|| BusError::Backend("a delivery failed".into()), txn_backend));
        }
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (t, p, o) in offsets {
                tpl.add_partition_offset(t, *p, Offset::Offset(*o)).map_err(backend)?;
            }
            let metadata = consumer
                .group_metadata()
                .ok_or_else(|| BusError::Backend("the consumer has no group metadata".into()))?;
            producer.send_offsets_to_transaction(&tpl, &metadata, TRANSACTION_STEP).map_err(txn_backend)?;
        }
        producer.commit_transaction(TRANSACTION_STEP).map_err(txn_backend)
    })();
    // A fenced producer fails fatally, and librdkafka then purges what it holds: the deliveries' errors say
    // "purged", the fatal error says why.
    let result = match (result, producer.client().fatal_error()) {
        (Err(_), Some((code, reason))) if fencing_code(code) => Err(BusError::Fenced(format!("{code:?}: {reason}"))),
        (Err(_), Some((code, reason))) => Err(BusError::Backend(format!("{code:?}: {reason}"))),
        (result, _) => result,
    };
    if result.is_err() {
        // Nothing of it may become visible; a fenced producer's abort fails too, which changes nothing.
        let _ = producer.abort_transaction(TRANSACTION_STEP);
    }
    result
}

impl KafkaSubscription {
    /// librdkafka's commits block; keep them off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StreamConsumer<Observer>) -> Result<T, KafkaError> + Send + 'static,
    ) -> Result<T, BusError> {
        let c = self.consumer.clone();
        tokio::task::spawn_blocking(move || f(&c)).await.map_err(|e| BusError::Backend(e.to_string()))?.map_err(backend)
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next_batch(&mut self, max_wait: Duration) -> Result<Vec<Message>, BusError> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + max_wait;
        while out.len() < self.max_batch {
            // After the first message, take only what is already there.
            let wait_until = if out.is_empty() { deadline } else { tokio::time::Instant::now() };
            let msg = match tokio::time::timeout_at(wait_until, self.consumer.recv()).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => return Err(backend(e)),
                Err(_) => break,
            };
            out.push(Message {
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp: msg.timestamp().to_millis().unwrap_or(-1),
                key: msg.key().map(bytes::Bytes::copy_from_slice),
                value: msg.payload().map(bytes::Bytes::copy_from_slice),
                headers: msg
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), bytes::Bytes::copy_from_slice(h.value.unwrap_or_default())))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        match self.blocking(|c| c.commit_consumer_state(CommitMode::Sync)).await {
            // Nothing consumed since the last commit.
            Err(BusError::Backend(e)) if e.contains("No offset stored") => Ok(()),
            other => other,
        }
    }

    async fn commit_offsets(&mut self, offsets: &[(String, i32, i64)]) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o)).map_err(backend)?;
        }
        self.blocking(move |c| c.commit(&tpl, CommitMode::Sync)).await
    }

    async fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError> {
        // The partition must be assigned first: poll until the group has given us something.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.assignment().is_empty() && tokio::time::Instant::now() < deadline {
            if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await {
                // Rewind so this message is not lost to the seek below or a later poll.
                let (t, p, o) = (m.topic().to_string(), m.partition(), m.offset());
                drop(m);
                let _ = self.consumer.seek(&t, p, Offset::Offset(o), Duration::from_secs(5));
            }
        }
        let (t, p) = (topic.to_string(), partition);
        self.blocking(move |c| c.seek(&t, p, Offset::Offset(offset), Duration::from_secs(10))).await
    }

    fn assignment(&self) -> Vec<(String, i32)> {
        self.consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect())
            .unwrap_or_default()
    }

    async fn commit_transaction(
        &mut self,
        messages: Vec<OutgoingMessage>,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), BusError> {
        if messages.is_empty() && offsets.is_empty() {
            return Ok(());
        }
        let id = self.transactional_id.clone().ok_or_else(|| {
            BusError::Invalid("commit_transaction needs a transactional_id in the subscription's options".into())
        })?;
        let producer = match &self.producer {
            Some(p) => p.clone(),
            None => {
                let mut config = self.endpoint.client_config_for(Some(ClientRole::Producer), PRODUCER_DEFAULTS);
                config.set("transactional.id", &id);
                let producer: BaseProducer<Failures> =
                    config.create_with_context(Failures::default()).map_err(backend)?;
                let producer = Arc::new(producer);
                let p = producer.clone();
                tokio::task::spawn_blocking(move || p.init_transactions(TRANSACTION_STEP))
                    .await
                    .map_err(|e| BusError::Backend(e.to_string()))?
                    .map_err(txn_backend)?;
                self.producer = Some(producer.clone());
                producer
            }
        };
        let (consumer, offsets, p) = (self.consumer.clone(), offsets.to_vec(), producer.clone());
        let result = tokio::task::spawn_blocking(move || kafka_transaction(&p, &consumer, &messages, &offsets))
            .await
            .map_err(|e| BusError::Backend(e.to_string()))?;
        if matches!(result, Err(BusError::Fenced(_))) {
            self.producer = None;
        }
        result
    }

    async fn close(self: Box<Self>) -> Result<(), BusError> {
        self.consumer.unsubscribe();
        // The revocation is served here, while the group is alive, rather than in the drop's close.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            let consumer = self.consumer.clone();
            let assigned = tokio::task::spawn_blocking(move || consumer.assignment().map(|a| a.count()).unwrap_or(0))
                .await
                .unwrap_or(0);
            if assigned == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await;
        }
        // Dropping librdkafka's clients leaves the group and joins their threads, which blocks and, with a broker
        // that does not answer, has no bound (rdkafka polls until the consumer is closed). That runs on a thread of
        // its own, awaited for a while; a close that outlasts it is reported and left to finish there, rather than
        // holding this task (and an async worker) forever.
        let KafkaSubscription { consumer, producer, .. } = *self;
        let (done, closed) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new().name("weir-kafka-close".into()).spawn(move || {
            drop(producer);
            drop(consumer);
            let _ = done.send(());
        });
        if spawned.is_err() {
            return Err(BusError::Backend("no thread could be started to close the Kafka consumer".into()));
        }
        if tokio::time::timeout(CLOSE_WAIT, closed).await.is_err() {
            tracing::warn!(
                "the Kafka consumer had not closed after {} s; it goes on closing in the background",
                CLOSE_WAIT.as_secs()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::KafkaEndpoint;

    #[test]
    fn endpoints_parse_with_and_without_prefix_and_credentials() {
        let e = KafkaEndpoint::parse("kafka://a:9092,b:9093").unwrap();
        assert_eq!(e.bootstrap, "a:9092,b:9093");
        assert_eq!(e.sasl_plain, None);
        assert_eq!(KafkaEndpoint::parse("127.0.0.1:9092").unwrap().bootstrap, "127.0.0.1:9092");
        let e = KafkaEndpoint::parse("kafka://alice:s3:cr@t@host:1/").unwrap();
        assert_eq!(e.bootstrap, "host:1");
        assert_eq!(e.sasl_plain, Some(("alice".into(), "s3:cr@t".into())));
        assert!(!format!("{e:?}").contains("s3:cr"), "the password must not be printed");
        let e = KafkaEndpoint::parse("kafka://h:1?compression.type=lz4&linger.ms=20").unwrap();
        assert_eq!(e.bootstrap, "h:1");
        assert_eq!(e.properties, [("compression.type".into(), "lz4".into()), ("linger.ms".into(), "20".into())]);
        assert_eq!(e.client_config_with(&[("linger.ms", "5"), ("acks", "all")]).get("linger.ms"), Some("20"));
        for bad in ["", "kafka://", "host", "host:port", ":9092", "kafka://user@host:1", "a:1,b", "h:1?lz4", "h:1?=x"] {
            assert!(KafkaEndpoint::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn each_client_gets_the_urls_properties_that_apply_to_it() {
        use super::ClientRole::{Admin, Consumer, Producer};
        let e =
            KafkaEndpoint::parse("kafka://h:1?session.timeout.ms=6000&linger.ms=20&client.rack=r1&fetch.min.bytes=9")
                .unwrap();
        let get = |role, key| e.client_config_for(Some(role), &[]).get(key).map(str::to_string);
        assert_eq!(get(Consumer, "session.timeout.ms").as_deref(), Some("6000"));
        assert_eq!(get(Consumer, "fetch.min.bytes").as_deref(), Some("9"));
        assert_eq!(get(Consumer, "linger.ms"), None);
        assert_eq!(get(Producer, "linger.ms").as_deref(), Some("20"));
        assert_eq!(get(Producer, "session.timeout.ms"), None);
        assert_eq!((get(Admin, "linger.ms"), get(Admin, "fetch.min.bytes")), (None, None));
        for role in [Producer, Consumer, Admin] {
            assert_eq!(get(role, "client.rack").as_deref(), Some("r1"), "a property of every client");
        }
    }
}
