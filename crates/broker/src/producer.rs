//! The in-process producer. `send` only enqueues; one drain per partition at a time takes everything queued, appends
//! it as one write (split into batches of at most `max.message.bytes`), fsyncs when the topic says `fsync=always`, and
//! then resolves every waiting send. Records that arrive while a drain is writing form the next batch, so concurrent
//! producers share writes and fsyncs without any linger timer.
//!
//! On a topic with schema validation (`validation.rs`) a record is checked before it is queued: a refused `send`
//! fails at once, and [`Producer::send_all`] checks every record first, so one refused record stores none of them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use weir_log::{batch, Header, Record};

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::partitioner::partition_for_key;
use crate::topics::{Partition, Topic};
use crate::validation::{Checker, Refusals};

/// A record to produce. `partition: None` picks one by key (murmur2) or, without a key, stickily.
#[derive(Clone, Debug, Default)]
pub struct ProduceRecord {
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub timestamp: Option<i64>,
}

impl ProduceRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProduceRecord { topic: topic.into(), value: Some(value.into()), ..Default::default() }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// Where a produced record was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: i32,
    pub offset: i64,
    /// The stored timestamp (the producer's, or the broker's at append).
    pub timestamp: i64,
}

type Ack = oneshot::Sender<Result<RecordMetadata, Arc<BrokerError>>>;

#[derive(Debug, Default)]
struct Queue {
    records: Vec<Record>,
    /// One per record.
    acks: Vec<Ack>,
    /// `flush` waiters: resolved once the drain round that took them (holding every record queued before) is written.
    flushes: Vec<oneshot::Sender<()>>,
    draining: bool,
}

#[derive(Debug)]
struct PartitionQueue {
    partition: Arc<Partition>,
    queue: Mutex<Queue>,
}

/// Keyless records stay on one partition until this many bytes went to it.
const STICKY_BYTES: usize = 256 * 1024;

/// What a producer remembers about a topic, so a send costs one map lookup under one lock.
#[derive(Debug)]
struct TopicRoute {
    topic: Arc<Topic>,
    queues: Vec<Arc<PartitionQueue>>,
    /// The broker's topics version this route was built at; a create or delete since makes it stale.
    version: u64,
    sticky_partition: i32,
    sticky_bytes: usize,
}

#[derive(Debug)]
struct Shared {
    broker: Arc<Broker>,
    routes: Mutex<HashMap<String, TopicRoute>>,
}

/// A cheap-to-clone handle for producing records.
#[derive(Clone, Debug)]
pub struct Producer {
    shared: Arc<Shared>,
}

impl Producer {
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        Producer { shared: Arc::new(Shared { broker, routes: Mutex::new(HashMap::new()) }) }
    }

    /// Enqueues `record` now (so sends from one task keep their order) and returns a future that resolves once it is
    /// stored — and on disk, for `fsync=always` topics. Dropping the future does not cancel the send.
    pub fn send(
        &self,
        record: ProduceRecord,
    ) -> impl Future<Output = Result<RecordMetadata, BrokerError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let enqueued = self.place(record).and_then(|placed| {
            if let Some(topic) = &placed.validated {
                let checker = self.shared.broker.checker(topic)?;
                let refused = checker.and_then(|c| c.check(topic.name(), placed.key(), placed.value()).err());
                if let Some(reason) = refused {
                    let mut refusals = Refusals::default();
                    refusals.push(0, reason);
                    return refusals.into_result();
                }
            }
            placed.push(tx);
            Ok(())
        });
        pending(enqueued, rx)
    }

    /// Sends records together, as one request (the REST Proxy's, a Bus's `produce_all`): one future per record, in
    /// order, as [`Producer::send`] gives. Every record bound for a topic with schema validation is checked before
    /// any is queued; if one is refused, none is stored and every future fails with the refusals (their indexes are
    /// positions in `records`). Other failures (an unknown partition, a record over `max.message.bytes`) stay the
    /// failing record's own, as with `send`.
    pub fn send_all(
        &self,
        records: Vec<ProduceRecord>,
    ) -> Vec<impl Future<Output = Result<RecordMetadata, BrokerError>> + Send + 'static> {
        let placed: Vec<Result<Placed, BrokerError>> = records.into_iter().map(|r| self.place(r)).collect();
        match self.check_placed(&placed) {
            Ok(()) => placed
                .into_iter()
                .map(|p| {
                    let (tx, rx) = oneshot::channel();
                    pending(p.map(|p| p.push(tx)), rx)
                })
                .collect(),
            Err(refused) => {
                let refused = Arc::new(refused);
                placed
                    .into_iter()
                    .map(|p| {
                        // Nothing is queued; the receiver's sender is dropped unused.
                        let (_, rx) = oneshot::channel();
                        let own = p.err().unwrap_or_else(|| BrokerError::Shared(refused.clone()));
                        pending(Err(own), rx)
                    })
                    .collect()
            }
        }
    }

    /// Checks the placed records bound for validated topics; `Err` is what refuses the whole send.
    fn check_placed(&self, placed: &[Result<Placed, BrokerError>]) -> Result<(), BrokerError> {
        let mut refusals = Refusals::default();
        // Records of one send mostly share a topic: look its checker up once.
        let mut last: Option<(&Arc<Topic>, Checker)> = None;
        for (index, p) in placed.iter().enumerate() {
            let Ok(p @ Placed { validated: Some(topic), .. }) = p else { continue };
            let checker = match &last {
                Some((t, c)) if Arc::ptr_eq(t, topic) => c.clone(),
                _ => match self.shared.broker.checker(topic)? {
                    Some(c) => {
                        last = Some((topic, c.clone()));
                        c
                    }
                    None => continue,
                },
            };
            if let Err(reason) = checker.check(topic.name(), p.key(), p.value()) {
                refusals.push(index, reason);
            }
        }
        refusals.into_result()
    }

    fn route<'a>(
        &self,
        routes: &'a mut HashMap<String, TopicRoute>,
        name: &str,
    ) -> Result<&'a mut TopicRoute, BrokerError> {
        let version = self.shared.broker.topics_version();
        if routes.values().any(|r| r.version != version) {
            // Topics were created or deleted: forget the routes of deleted ones, whose open segment files would
            // otherwise keep their disk space until this producer happened to send to that name again.
            let broker = &self.shared.broker;
            routes.retain(|n, r| broker.topic(n).is_ok_and(|t| Arc::ptr_eq(&t, &r.topic)));
            for r in routes.values_mut() {
                r.version = version;
            }
        }
        let fresh = routes.get(name).is_some_and(|r| r.version == version);
        if !fresh {
            let topic = self.shared.broker.topic_or_create(name)?;
            let queues = topic
                .partitions()
                .iter()
                .map(|p| Arc::new(PartitionQueue { partition: p.clone(), queue: Mutex::new(Queue::default()) }))
                .collect();
            let sticky_partition = rand::Rng::gen_range(&mut rand::thread_rng(), 0..topic.partition_count());
            // Keep the old queues when the topic itself did not change, so in-flight drains keep their order.
            let route = match routes.remove(name) {
                Some(old) if Arc::ptr_eq(&old.topic, &topic) => TopicRoute { version, ..old },
                _ => TopicRoute { topic, queues, version, sticky_partition, sticky_bytes: 0 },
            };
            routes.insert(name.to_string(), route);
        }
        Ok(routes.get_mut(name).expect("route just ensured"))
    }

    /// Chooses the record's partition queue (and checks what can be checked of it alone), without queueing it.
    fn place(&self, record: ProduceRecord) -> Result<Placed, BrokerError> {
        let rec = Record {
            key: record.key,
            value: record.value,
            headers: record.headers.into_iter().map(|(k, v)| Header { key: k, value: Some(v) }).collect(),
            timestamp: record.timestamp,
        };
        let size = batch::HEADER_LEN + encoded_size_bound(&rec);
        let (queue, validated) = {
            let mut routes = self.shared.routes.lock();
            let route = self.route(&mut routes, &record.topic)?;
            // Refuse an oversized record here, alone, rather than failing the whole batch it would join.
            let max = route.topic.log_config().max_message_bytes;
            if size > max {
                return Err(BrokerError::Log(weir_log::LogError::RecordTooLarge { size, max }));
            }
            let n = route.topic.partition_count();
            let partition = match (record.partition, &rec.key) {
                (Some(p), _) => {
                    route.topic.partition(p)?;
                    p
                }
                (None, Some(key)) => partition_for_key(key, n),
                (None, None) => {
                    if route.sticky_bytes >= STICKY_BYTES {
                        route.sticky_partition = (route.sticky_partition + 1) % n;
                        route.sticky_bytes = 0;
                    }
                    route.sticky_bytes += size;
                    route.sticky_partition
                }
            };
            // The topic comes along only when its records are to be checked (an `Arc` clone, no more).
            let validated = route.topic.validation.is_some().then(|| route.topic.clone());
            (route.queues[partition as usize].clone(), validated)
        };
        Ok(Placed { queue, record: rec, validated })
    }

    /// Waits until every record sent before this call is stored.
    pub async fn flush(&self) -> Result<(), BrokerError> {
        let queues: Vec<Arc<PartitionQueue>> =
            self.shared.routes.lock().values().flat_map(|r| r.queues.iter().cloned()).collect();
        let mut waits = Vec::new();
        for q in queues {
            let (tx, rx) = oneshot::channel();
            let mut guard = q.queue.lock();
            if guard.records.is_empty() && !guard.draining {
                continue;
            }
            guard.flushes.push(tx);
            drop(guard);
            waits.push(rx);
        }
        for rx in waits {
            let _ = rx.await;
        }
        Ok(())
    }
}

/// A record whose partition queue is chosen, not yet queued.
#[derive(Debug)]
struct Placed {
    queue: Arc<PartitionQueue>,
    record: Record,
    /// The record's topic, when it validates its records.
    validated: Option<Arc<Topic>>,
}

impl Placed {
    fn key(&self) -> Option<&[u8]> {
        self.record.key.as_deref()
    }

    fn value(&self) -> Option<&[u8]> {
        self.record.value.as_deref()
    }

    /// Queues the record, starting its partition's drain if none is running.
    fn push(self, ack: Ack) {
        let Placed { queue, record, .. } = self;
        let start_drain = {
            let mut q = queue.queue.lock();
            q.records.push(record);
            q.acks.push(ack);
            !std::mem::replace(&mut q.draining, true)
        };
        if start_drain {
            // Appends block (write, maybe fsync): keep them off the async workers.
            tokio::task::spawn_blocking(move || drain(&queue));
        }
    }
}

/// A send's outcome: its error if it was not queued, else what the drain that writes it reports.
async fn pending(
    enqueued: Result<(), BrokerError>,
    rx: oneshot::Receiver<Result<RecordMetadata, Arc<BrokerError>>>,
) -> Result<RecordMetadata, BrokerError> {
    enqueued?;
    match rx.await {
        Ok(Ok(meta)) => Ok(meta),
        Ok(Err(e)) => Err(BrokerError::Shared(e)),
        Err(_) => Err(BrokerError::ShuttingDown),
    }
}

/// Upper bound of a record's encoded size: its bytes plus the worst case of its varints.
fn encoded_size_bound(r: &Record) -> usize {
    r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers.iter().map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 10).sum::<usize>()
        + 40
}

/// Takes and writes everything queued for one partition until the queue is empty.
fn drain(q: &PartitionQueue) {
    loop {
        let (records, acks, flushes) = {
            let mut guard = q.queue.lock();
            if guard.records.is_empty() && guard.flushes.is_empty() {
                drop(guard);
                // Under sustained load the next record is microseconds away: linger briefly rather than hand the
                // queue back and pay a thread hand-off for every batch.
                if linger(q) {
                    continue;
                }
                let mut guard = q.queue.lock();
                if guard.records.is_empty() && guard.flushes.is_empty() {
                    guard.draining = false;
                    return;
                }
                continue;
            }
            (std::mem::take(&mut guard.records), std::mem::take(&mut guard.acks), std::mem::take(&mut guard.flushes))
        };
        let result = write(&q.partition, &records);
        if result.is_ok() {
            q.partition.notify_appended();
        }
        match result {
            Ok(metas) => {
                for (ack, meta) in acks.into_iter().zip(metas) {
                    let _ = ack.send(Ok(meta));
                }
            }
            Err(e) => {
                for ack in acks {
                    let _ = ack.send(Err(e.clone()));
                }
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// How long a drain waits for more records before giving the queue back.
const LINGER: std::time::Duration = std::time::Duration::from_micros(50);

/// Waits up to [`LINGER`] for records to arrive; true if some did.
fn linger(q: &PartitionQueue) -> bool {
    let until = std::time::Instant::now() + LINGER;
    while std::time::Instant::now() < until {
        std::thread::yield_now();
        if q.queue.try_lock().is_some_and(|g| !g.records.is_empty() || !g.flushes.is_empty()) {
            return true;
        }
    }
    false
}

/// Encodes `records` into batches no larger than the topic allows and appends them in one write.
fn write(p: &Partition, records: &[Record]) -> Result<Vec<RecordMetadata>, Arc<BrokerError>> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let log = p.log().map_err(Arc::new)?;
    let max = log.config().max_message_bytes;
    let now = weir_log::now_ms();
    let mut buf = Vec::with_capacity(records.len() * 64);
    let mut timestamps = Vec::with_capacity(records.len());
    let mut start = 0;
    let mut size = batch::HEADER_LEN;
    for (i, r) in records.iter().enumerate() {
        let rsize = encoded_size_bound(r);
        if i > start && size + rsize > max {
            batch::encode(&records[start..i], now, &mut buf);
            start = i;
            size = batch::HEADER_LEN;
        }
        size += rsize;
        timestamps.push(r.timestamp.unwrap_or(now));
    }
    batch::encode(&records[start..], now, &mut buf);
    let len = buf.len() as u64;
    let result = log.append_batches(buf, true);
    p.note_write(&result);
    let info = result.map_err(|e| Arc::new(BrokerError::Log(e)))?;
    p.record_appended(records.len() as u64, len);
    Ok(timestamps
        .into_iter()
        .enumerate()
        .map(|(i, ts)| RecordMetadata {
            partition: p.index,
            offset: info.base_offset + i as i64,
            timestamp: info.log_append_time.unwrap_or(ts),
        })
        .collect())
}
