//! The in-process consumer: standalone (every partition of its topics) or a member of a consumer group, in which case
//! it joins through the group coordinator exactly like a Kafka client would, so in-process members and Kafka clients
//! can share one group.
//!
//! `poll` returns records from the assigned partitions in offset order per partition, waiting (without spinning) for
//! appends when there is nothing to read. Positions advance as records are returned; `commit` stores them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use weir_log::Header;

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::group::{GroupError, GroupMember, OffsetAndMetadata, TopicPartition};

/// Where to start when a partition has no committed offset (or the committed one is gone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffsetReset {
    #[default]
    Earliest,
    Latest,
}

impl std::str::FromStr for OffsetReset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            other => Err(format!("auto.offset.reset must be earliest or latest, got {other:?}")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// The consumer group; `None` reads every partition of `topics` with no group and no commits.
    pub group: Option<String>,
    pub topics: Vec<String>,
    pub client_id: String,
    pub auto_offset_reset: OffsetReset,
    /// Most records one `poll` returns.
    pub max_poll_records: usize,
    /// Bytes read from one partition per fetch.
    pub max_partition_fetch_bytes: usize,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Partition assignor preference: "range" or "roundrobin".
    pub assignor: String,
    /// Standalone consumers only: read just these partitions of each topic.
    pub partitions: Option<Vec<i32>>,
    /// read_committed reads only decided transactions and hides aborted ones (Kafka's `isolation.level`);
    /// transaction markers are never handed out at either level.
    pub isolation: weir_log::Isolation,
}

impl ConsumerConfig {
    pub fn new(topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ConsumerConfig {
            group: None,
            topics: topics.into_iter().map(Into::into).collect(),
            client_id: "weir".into(),
            auto_offset_reset: OffsetReset::Earliest,
            max_poll_records: 500,
            max_partition_fetch_bytes: 1 << 20,
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(3),
            assignor: "range".into(),
            partitions: None,
            isolation: weir_log::Isolation::ReadUncommitted,
        }
    }

    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    pub fn isolation(mut self, isolation: weir_log::Isolation) -> Self {
        self.isolation = isolation;
        self
    }
}

/// A record as a consumer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<bytes::Bytes>,
    pub value: Option<bytes::Bytes>,
    pub headers: Vec<Header>,
}

#[derive(Debug)]
pub struct Consumer {
    broker: Arc<Broker>,
    config: ConsumerConfig,
    member: Option<GroupMember>,
    /// Assigned partitions and the next offset to return from each.
    positions: Vec<(TopicPartition, i64)>,
    assigned: bool,
    /// Round-robin start, so one busy partition cannot starve the others.
    cursor: usize,
    notify: Arc<Notify>,
    next_heartbeat: Instant,
    /// Positions where reading failed, so each is logged once rather than at every poll.
    read_failures: std::collections::HashSet<(TopicPartition, i64)>,
}

impl Consumer {
    pub(crate) fn new(broker: Arc<Broker>, config: ConsumerConfig) -> Result<Self, BrokerError> {
        if config.group.is_some() && config.partitions.is_some() {
            return Err(BrokerError::InvalidConfig("explicit partitions and a group exclude each other".into()));
        }
        if config.topics.is_empty() {
            return Err(BrokerError::InvalidConfig("a consumer needs at least one topic".into()));
        }
        for t in &config.topics {
            crate::topics::validate_topic_name(t)?;
        }
        let member = config.group.as_ref().map(|g| {
            GroupMember::new(
                broker.groups().clone(),
                g.clone(),
                config.client_id.clone(),
                config.topics.clone(),
                vec![config.assignor.clone()],
                config.session_timeout,
                config.rebalance_timeout,
            )
        });
        Ok(Consumer {
            broker,
            config,
            member,
            positions: Vec::new(),
            assigned: false,
            cursor: 0,
            notify: Arc::new(Notify::new()),
            next_heartbeat: Instant::now(),
            read_failures: Default::default(),
        })
    }

    /// The partitions this consumer currently reads.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.positions.iter().map(|(tp, _)| (tp.topic.clone(), tp.partition)).collect()
    }

    /// The next offset `poll` returns for a partition.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.positions.iter().find(|(tp, _)| tp.topic == topic && tp.partition == partition).map(|(_, o)| *o)
    }

    pub fn member_id(&self) -> Option<&str> {
        self.member.as_ref().map(|m| m.member_id())
    }

    pub fn generation(&self) -> Option<i32> {
        self.member.as_ref().map(|m| m.generation())
    }

    fn reset_offset(&self, tp: &TopicPartition) -> i64 {
        match self.broker.offsets(&tp.topic, tp.partition) {
            Ok((start, end)) => match self.config.auto_offset_reset {
                OffsetReset::Earliest => start,
                OffsetReset::Latest => end,
            },
            Err(_) => 0,
        }
    }

    /// Joins (or rejoins) the group, or for a standalone consumer takes every partition, and sets positions from the
    /// committed offsets or the reset policy.
    async fn assign(&mut self) -> Result<(), BrokerError> {
        let partitions: Vec<TopicPartition> = match self.member.as_mut() {
            None => {
                let mut v = Vec::new();
                for t in &self.config.topics {
                    let n = match self.broker.topic_or_create(t) {
                        Ok(topic) => topic.partition_count(),
                        Err(e) => return Err(e),
                    };
                    let wanted = |p: &i32| self.config.partitions.as_ref().is_none_or(|only| only.contains(p));
                    v.extend((0..n).filter(wanted).map(|p| TopicPartition { topic: t.clone(), partition: p }));
                }
                v
            }
            Some(_) => {
                // Our own topics must exist; the leader may also have to assign topics only other members want.
                for t in &self.config.topics {
                    self.broker.topic_or_create(t)?;
                }
                let broker = self.broker.clone();
                let member = self.member.as_mut().expect("checked above");
                member.join(move |t: &str| broker.topic(t).ok().map(|t| t.partition_count())).await?
            }
        };
        let committed: HashMap<TopicPartition, i64> = match &self.config.group {
            Some(g) => self
                .broker
                .groups()
                .fetch_offsets(g, Some(&partitions))
                .into_iter()
                .filter_map(|(tp, om)| om.map(|o| (tp, o.offset)))
                .collect(),
            None => HashMap::new(),
        };
        self.positions = partitions
            .into_iter()
            .map(|tp| {
                let valid = committed.get(&tp).copied().filter(|&c| {
                    self.broker.offsets(&tp.topic, tp.partition).is_ok_and(|(start, end)| (start..=end).contains(&c))
                });
                let pos = valid.unwrap_or_else(|| self.reset_offset(&tp));
                (tp, pos)
            })
            .collect();
        for (tp, _) in &self.positions {
            if let Ok(t) = self.broker.topic(&tp.topic) {
                if let Ok(p) = t.partition(tp.partition) {
                    p.register_waiter(&self.notify);
                }
            }
        }
        self.assigned = true;
        self.next_heartbeat = Instant::now() + self.config.heartbeat_interval;
        Ok(())
    }

    /// Keeps a group membership alive between polls (Kafka's background heartbeat): for owners that poll only when
    /// asked to, such as an HTTP consumer instance. A rebalance it learns of makes the next poll rejoin.
    pub fn keep_alive(&mut self) -> Result<(), BrokerError> {
        self.heartbeat_if_due()
    }

    /// A group member that lost its assignment to a rebalance and rejoins on its next poll.
    pub fn needs_rejoin(&self) -> bool {
        self.member.is_some() && !self.assigned
    }

    /// Heartbeats when due; a rebalance makes the next poll rejoin.
    fn heartbeat_if_due(&mut self) -> Result<(), BrokerError> {
        let Some(member) = &self.member else {
            return Ok(());
        };
        if Instant::now() < self.next_heartbeat {
            return Ok(());
        }
        self.next_heartbeat = Instant::now() + self.config.heartbeat_interval;
        match member.heartbeat() {
            Ok(()) => Ok(()),
            Err(GroupError::RebalanceInProgress | GroupError::IllegalGeneration | GroupError::UnknownMemberId) => {
                self.assigned = false;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Returns the next records, waiting up to `timeout` for some to arrive. Empty on timeout.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumedRecord>, BrokerError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.heartbeat_if_due()?;
            if !self.assigned {
                self.assign().await?;
            }
            let records = self.fetch()?;
            if !records.is_empty() {
                return Ok(records);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(records);
            }
            let wake = if self.member.is_some() { deadline.min(self.next_heartbeat) } else { deadline };
            let _ = tokio::time::timeout_at(wake, self.notify.notified()).await;
        }
    }

    /// Up to `max_poll_records` records, taking the partitions in turn from the cursor so that one busy partition
    /// cannot starve the others.
    fn fetch(&mut self) -> Result<Vec<ConsumedRecord>, BrokerError> {
        let mut out = Vec::new();
        let n = self.positions.len();
        for i in 0..n {
            if out.len() >= self.config.max_poll_records {
                break;
            }
            self.fetch_partition((self.cursor + i) % n, &mut out);
        }
        if n > 0 {
            self.cursor = (self.cursor + 1) % n;
        }
        Ok(out)
    }

    /// Adds the records of the partition at `positions[idx]` to `out` (up to `max_poll_records` in all) and moves
    /// its position past them. A partition that cannot be read is passed over: the others go on.
    fn fetch_partition(&mut self, idx: usize, out: &mut Vec<ConsumedRecord>) {
        let (tp, pos) = self.positions[idx].clone();
        let max = self.config.max_partition_fetch_bytes;
        let read = match self.broker.read_isolated(&tp.topic, tp.partition, pos, max, self.config.isolation) {
            Ok(r) => r,
            Err(BrokerError::OffsetOutOfRange { .. }) => {
                let reset = self.reset_offset(&tp);
                tracing::warn!(topic = %tp.topic, partition = tp.partition, from = pos, to = reset, "offset out of range; resetting");
                self.positions[idx].1 = reset;
                return;
            }
            Err(BrokerError::PartitionOffline { .. }) => return,
            Err(e) => {
                // Damage the log found on reading (or an I/O error): this partition waits, the others and the
                // group go on. Logged once per position, not at every poll.
                if self.read_failures.insert((tp.clone(), pos)) {
                    tracing::error!(topic = %tp.topic, partition = tp.partition, offset = pos, "cannot read: {e}");
                }
                return;
            }
        };
        if read.batches.is_empty() {
            return;
        }
        let topic: Arc<str> = Arc::from(tp.topic.as_str());
        let mut next = pos;
        let mut committed = weir_log::ReadCommittedFilter::new(read.aborted.clone());
        for b in weir_log::batch::Batches::new(&read.batches) {
            let Ok((header, bytes)) = b else {
                break; // the log checked every header it returned; nothing more can be read here
            };
            let room = self.config.max_poll_records - out.len();
            if room == 0 {
                break;
            }
            let keep = match read.isolation {
                weir_log::Isolation::ReadCommitted => committed.keep(&header, &bytes),
                weir_log::Isolation::ReadUncommitted => !header.is_control(),
            };
            if !keep {
                // A transaction marker, or an aborted transaction's records: passed over, never handed out.
                next = next.max(header.last_offset() + 1);
                continue;
            }
            out.reserve((header.record_count.max(0) as usize).min(room));
            let kept = out.len();
            let decoded = weir_log::batch::for_each_record(&bytes, pos, |r| {
                next = r.offset + 1;
                out.push(ConsumedRecord {
                    topic: topic.clone(),
                    partition: tp.partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
                out.len() < self.config.max_poll_records
            });
            if let Err(reason) = decoded {
                // A batch that cannot be decoded (stored before appends were fully validated, or damaged in a
                // way its CRC cannot tell) is skipped whole: a consumer retrying it forever would stop its
                // group. None of its records is handed out.
                out.truncate(kept);
                self.broker.note_skipped_batch(
                    &tp.topic,
                    tp.partition,
                    (header.base_offset, header.last_offset()),
                    &reason,
                );
                next = next.max(header.last_offset() + 1);
            }
        }
        self.broker.record_consumed(&tp.topic, (next - pos).max(0) as u64, read.batches.len() as u64);
        self.positions[idx].1 = next;
    }

    /// Commits the current positions of every assigned partition (the offsets after the records polled so far).
    pub async fn commit(&mut self) -> Result<(), BrokerError> {
        let offsets = self.positions.clone();
        self.commit_offsets(offsets).await
    }

    /// Commits the given next-offsets.
    pub async fn commit_offsets(&mut self, offsets: Vec<(TopicPartition, i64)>) -> Result<(), BrokerError> {
        let member = self.member.as_ref().ok_or(BrokerError::NoGroup)?;
        let now = weir_log::now_ms();
        let offsets = offsets
            .into_iter()
            .map(|(tp, offset)| (tp, OffsetAndMetadata { offset, metadata: String::new(), commit_timestamp_ms: now }))
            .collect();
        match member.commit(offsets) {
            Ok(()) => Ok(()),
            Err(
                e @ (GroupError::RebalanceInProgress | GroupError::IllegalGeneration | GroupError::UnknownMemberId),
            ) => {
                self.assigned = false;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Moves a partition's position; the partition must be assigned.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BrokerError> {
        let slot = self
            .positions
            .iter_mut()
            .find(|(tp, _)| tp.topic == topic && tp.partition == partition)
            .ok_or_else(|| BrokerError::UnknownPartition { topic: topic.to_string(), partition })?;
        slot.1 = offset;
        Ok(())
    }

    /// Moves every assigned partition to its first record at or after `ts_ms` (the end if there is none).
    /// Assigns first if the consumer has not polled yet.
    pub async fn seek_to_timestamp(&mut self, ts_ms: i64) -> Result<(), BrokerError> {
        if !self.assigned {
            self.assign().await?;
        }
        for i in 0..self.positions.len() {
            let tp = self.positions[i].0.clone();
            let offset = match self.broker.offset_for_timestamp(&tp.topic, tp.partition, ts_ms)? {
                Some(o) => o,
                None => self.broker.offsets(&tp.topic, tp.partition)?.1,
            };
            self.positions[i].1 = offset;
        }
        Ok(())
    }

    /// Assigns (joining the group if any) without fetching, so positions can be set before the first poll.
    pub async fn ensure_assigned(&mut self) -> Result<(), BrokerError> {
        if !self.assigned {
            self.assign().await?;
        }
        Ok(())
    }

    /// Leaves the group (if any). Commit first if the positions should be kept.
    pub async fn close(mut self) -> Result<(), BrokerError> {
        if let Some(member) = self.member.take() {
            member.leave().await?;
        }
        Ok(())
    }
}
