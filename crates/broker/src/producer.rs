//! The in-process producer. `send` only enqueues; one drain per partition at a time takes everything queued, appends
//! it as one write (split into batches of at most `max.message.bytes`), fsyncs when the topic says `fsync=always`, and
//! then resolves every waiting send. Records that arrive while a drain is writing form the next batch, so concurrent
//! producers share writes and fsyncs without any linger timer.

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
    acks: Vec<Ack>,
    draining: bool,
}

#[derive(Debug)]
struct PartitionQueue {
    partition: Arc<Partition>,
    queue: Mutex<Queue>,
}

/// Keyless records stay on one partition until this many bytes went to it.
const STICKY_BYTES: usize = 16 * 1024;

#[derive(Debug, Default)]
struct Sticky {
    partition: i32,
    bytes: usize,
}

/// Queues by (topic, partition).
type Queues = HashMap<(Arc<str>, i32), Arc<PartitionQueue>>;

#[derive(Debug)]
struct Shared {
    broker: Arc<Broker>,
    queues: Mutex<Queues>,
    sticky: Mutex<HashMap<String, Sticky>>,
}

/// A cheap-to-clone handle for producing records.
#[derive(Clone, Debug)]
pub struct Producer {
    shared: Arc<Shared>,
}

impl Producer {
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        Producer {
            shared: Arc::new(Shared { broker, queues: Mutex::new(HashMap::new()), sticky: Mutex::new(HashMap::new()) }),
        }
    }

    /// Enqueues `record` now (so sends from one task keep their order) and returns a future that resolves once it is
    /// stored — and on disk, for `fsync=always` topics. Dropping the future does not cancel the send.
    pub fn send(
        &self,
        record: ProduceRecord,
    ) -> impl Future<Output = Result<RecordMetadata, BrokerError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let enqueued = self.enqueue(record, tx);
        async move {
            enqueued?;
            match rx.await {
                Ok(Ok(meta)) => Ok(meta),
                Ok(Err(e)) => Err(BrokerError::Shared(e)),
                Err(_) => Err(BrokerError::ShuttingDown),
            }
        }
    }

    fn enqueue(&self, record: ProduceRecord, ack: Ack) -> Result<(), BrokerError> {
        let topic = self.shared.broker.topic_or_create(&record.topic)?;
        let partition = self.choose_partition(&topic, &record)?;
        let queue = self.queue(&topic, partition)?;
        let rec = Record {
            key: record.key,
            value: record.value,
            headers: record.headers.into_iter().map(|(k, v)| Header { key: k, value: Some(v) }).collect(),
            timestamp: record.timestamp,
        };
        // Refuse an oversized record here, alone, rather than failing the whole batch it would join.
        let max = topic.log_config().max_message_bytes;
        let size = batch::HEADER_LEN + encoded_size_bound(&rec);
        if size > max {
            return Err(BrokerError::Log(weir_log::LogError::RecordTooLarge { size, max }));
        }
        let start_drain = {
            let mut q = queue.queue.lock();
            q.records.push(rec);
            q.acks.push(ack);
            !std::mem::replace(&mut q.draining, true)
        };
        if start_drain {
            // Appends block (write, maybe fsync): keep them off the async workers.
            tokio::task::spawn_blocking(move || drain(&queue));
        }
        Ok(())
    }

    fn choose_partition(&self, topic: &Topic, record: &ProduceRecord) -> Result<i32, BrokerError> {
        let n = topic.partition_count();
        if let Some(p) = record.partition {
            topic.partition(p)?;
            return Ok(p);
        }
        if let Some(key) = &record.key {
            return Ok(partition_for_key(key, n));
        }
        let size = record.value.as_ref().map_or(0, |v| v.len()) + 16;
        let mut sticky = self.shared.sticky.lock();
        let s = sticky
            .entry(topic.name().to_string())
            .or_insert_with(|| Sticky { partition: rand::Rng::gen_range(&mut rand::thread_rng(), 0..n), bytes: 0 });
        if s.bytes >= STICKY_BYTES || s.partition >= n {
            s.partition = (s.partition + 1) % n;
            s.bytes = 0;
        }
        s.bytes += size;
        Ok(s.partition)
    }

    fn queue(&self, topic: &Topic, partition: i32) -> Result<Arc<PartitionQueue>, BrokerError> {
        let p = topic.partition(partition)?;
        let mut queues = self.shared.queues.lock();
        let q = queues
            .entry((p.topic.clone(), partition))
            .or_insert_with(|| Arc::new(PartitionQueue { partition: p.clone(), queue: Mutex::new(Queue::default()) }));
        // A topic deleted and recreated under the same name has new partitions.
        if !Arc::ptr_eq(&q.partition, p) {
            *q = Arc::new(PartitionQueue { partition: p.clone(), queue: Mutex::new(Queue::default()) });
        }
        Ok(q.clone())
    }

    /// Waits until every record sent before this call is stored.
    pub async fn flush(&self) -> Result<(), BrokerError> {
        let queues: Vec<Arc<PartitionQueue>> = self.shared.queues.lock().values().cloned().collect();
        let mut waits = Vec::new();
        for q in queues {
            let (tx, rx) = oneshot::channel();
            let mut guard = q.queue.lock();
            if guard.records.is_empty() && !guard.draining {
                continue;
            }
            // A marker ack with no record: resolved when the drain holding the records before it finishes.
            guard.acks.push(tx);
            drop(guard);
            waits.push(rx);
        }
        for rx in waits {
            let _ = rx.await;
        }
        Ok(())
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
        let (records, acks) = {
            let mut guard = q.queue.lock();
            if guard.acks.is_empty() {
                guard.draining = false;
                return;
            }
            (std::mem::take(&mut guard.records), std::mem::take(&mut guard.acks))
        };
        let result = write(&q.partition, &records);
        if result.is_ok() {
            q.partition.notify_appended();
        }
        // `acks` may hold flush markers (no record) after the records: they get any answer.
        let mut metas = match &result {
            Ok(m) => m.iter(),
            Err(_) => [].iter(),
        };
        for ack in acks {
            let answer = match &result {
                Ok(_) => {
                    Ok(metas.next().copied().unwrap_or(RecordMetadata { partition: -1, offset: -1, timestamp: -1 }))
                }
                Err(e) => Err(e.clone()),
            };
            let _ = ack.send(answer);
        }
    }
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
    let info = log.append_batches(buf, true).map_err(|e| Arc::new(BrokerError::Log(e)))?;
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
