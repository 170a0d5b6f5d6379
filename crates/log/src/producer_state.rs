//! Idempotent producers, as Kafka's broker tracks them per partition: for each producer id its epoch and the sequence
//! ranges of its last few batches, with the offsets they were stored at. A retried batch (same sequences) is answered
//! with its original offsets instead of being stored twice; a gap or a step back in sequences is refused.
//!
//! Transactional producers also have an open transaction here from their first transactional batch until the
//! marker (COMMIT or ABORT) that ends it: the earliest open one is the partition's last stable offset, below which
//! `read_committed` readers may read. Markers are checked for the epoch only (they carry no sequence) and may raise
//! it: the coordinator writes them with the epoch that fenced the producer.
//!
//! The state is saved to `producer-state` with the offset it is valid at, when a segment rolls and on a clean close;
//! after an unclean stop it is that snapshot plus the batches the recovery scan of the active segment finds after it.
//! A producer the log does not know is accepted from whatever sequence it sends, as its earlier batches may have
//! been deleted by retention.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use crate::batch::{BatchHeader, ControlType};
use crate::error::LogError;
use crate::transactions::AbortedTxn;

/// Batches remembered per producer (Kafka's limit on in-flight requests per idempotent connection).
const REMEMBERED: usize = 5;
pub(crate) const SNAPSHOT_FILE: &str = "producer-state";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchSeq {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Clone, Debug, Default)]
struct Producer {
    epoch: i16,
    batches: VecDeque<BatchSeq>,
}

/// What to do with an incoming batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Append,
    /// Already stored at these offsets: acknowledge without appending.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
}

#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, Producer>,
    /// Open transactions: producer id → offset of its first record in the transaction.
    open_txns: HashMap<i64, i64>,
}

fn last_seq(h: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX back to 0, as in Kafka.
    ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerStates {
    pub(crate) fn check(&self, h: &BatchHeader) -> Result<Verdict, LogError> {
        if h.producer_id < 0 {
            return Ok(Verdict::Append);
        }
        let Some(p) = self.producers.get(&h.producer_id) else { return Ok(Verdict::Append) };
        if h.is_control() {
            // A marker from the coordinator: only a stale epoch is refused.
            return if h.producer_epoch < p.epoch {
                Err(LogError::InvalidProducerEpoch {
                    producer_id: h.producer_id,
                    epoch: h.producer_epoch,
                    current: p.epoch,
                })
            } else {
                Ok(Verdict::Append)
            };
        }
        if h.producer_epoch < p.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: p.epoch,
            });
        }
        if h.producer_epoch > p.epoch {
            return if h.base_sequence == 0 {
                Ok(Verdict::Append)
            } else {
                Err(LogError::OutOfOrderSequence { producer_id: h.producer_id, expected: 0, got: h.base_sequence })
            };
        }
        let last = last_seq(h);
        if let Some(b) = p.batches.iter().find(|b| b.first_seq == h.base_sequence && b.last_seq == last) {
            return Ok(Verdict::Duplicate { base_offset: b.base_offset, last_offset: b.last_offset });
        }
        let expected = p.batches.back().map_or(0, |b| if b.last_seq == i32::MAX { 0 } else { b.last_seq + 1 });
        if h.base_sequence != expected {
            return Err(LogError::OutOfOrderSequence { producer_id: h.producer_id, expected, got: h.base_sequence });
        }
        Ok(Verdict::Append)
    }

    /// Records a batch stored at `base_offset` (`marker`: what it marks, if it is a control batch); returns the
    /// transaction it aborted, if it is an ABORT marker ending one with records here.
    pub(crate) fn record(
        &mut self,
        h: &BatchHeader,
        base_offset: i64,
        marker: Option<ControlType>,
    ) -> Option<AbortedTxn> {
        if h.producer_id < 0 {
            return None;
        }
        let p = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != p.epoch {
            p.epoch = h.producer_epoch;
            p.batches.clear();
        }
        if h.is_control() {
            let first = self.open_txns.remove(&h.producer_id)?;
            return (marker == Some(ControlType::Abort)).then_some(AbortedTxn {
                producer_id: h.producer_id,
                first_offset: first,
                last_offset: base_offset,
            });
        }
        if h.is_transactional() {
            self.open_txns.entry(h.producer_id).or_insert(base_offset);
        }
        p.batches.push_back(BatchSeq {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            base_offset,
            last_offset: base_offset + h.last_offset_delta as i64,
        });
        while p.batches.len() > REMEMBERED {
            p.batches.pop_front();
        }
        None
    }

    /// The first offset of the earliest open transaction, if any is open.
    pub(crate) fn first_unstable(&self) -> Option<i64> {
        self.open_txns.values().min().copied()
    }

    /// Every producer the partition knows: (id, epoch, last sequence or -1, first offset of its open transaction or
    /// -1), by id.
    pub(crate) fn describe(&self) -> Vec<(i64, i16, i32, i64)> {
        let mut out: Vec<(i64, i16, i32, i64)> = self
            .producers
            .iter()
            .map(|(id, p)| {
                let last = p.batches.back().map_or(-1, |b| b.last_seq);
                (*id, p.epoch, last, self.open_txns.get(id).copied().unwrap_or(-1))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The open transactions, as (producer id, first offset).
    pub(crate) fn open_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.open_txns.iter().map(|(p, f)| (*p, *f))
    }

    /// The state as of `offset` (every batch below it recorded): a line `at offset`, one line per remembered batch
    /// `producer epoch first_seq last_seq base_offset last_offset`, one per open transaction `txn producer first`.
    pub(crate) fn save(&self, dir: &Path, offset: i64) -> std::io::Result<()> {
        let mut text = format!("at {offset}\n");
        for (id, first) in &self.open_txns {
            text.push_str(&format!("txn {id} {first}\n"));
        }
        for (id, p) in &self.producers {
            for b in &p.batches {
                text.push_str(&format!(
                    "{id} {} {} {} {} {}\n",
                    p.epoch, b.first_seq, b.last_seq, b.base_offset, b.last_offset
                ));
            }
        }
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(tmp, dir.join(SNAPSHOT_FILE))
    }

    /// Loads a snapshot and the offset it is valid at (`None` for a snapshot written before snapshots said so, or
    /// none); unreadable lines are skipped (those producers are then treated as unknown).
    pub(crate) fn load(dir: &Path) -> (ProducerStates, Option<i64>) {
        let mut s = ProducerStates::default();
        let mut at = None;
        let Ok(text) = std::fs::read_to_string(dir.join(SNAPSHOT_FILE)) else { return (s, at) };
        for line in text.lines() {
            if let Some(offset) = line.strip_prefix("at ") {
                at = offset.parse().ok();
                continue;
            }
            if let Some(txn) = line.strip_prefix("txn ") {
                if let Some((id, first)) = txn.split_once(' ') {
                    if let (Ok(id), Ok(first)) = (id.parse(), first.parse()) {
                        s.open_txns.insert(id, first);
                    }
                }
                continue;
            }
            let f: Vec<i64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
            if let [id, epoch, first, last, base, last_off] = f[..] {
                let p = s.producers.entry(id).or_default();
                p.epoch = epoch as i16;
                p.batches.push_back(BatchSeq {
                    first_seq: first as i32,
                    last_seq: last as i32,
                    base_offset: base,
                    last_offset: last_off,
                });
            }
        }
        (s, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    #[test]
    fn sequences_must_follow_and_retries_are_recognised() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&h(7, 0, 0, 3)).unwrap(), Verdict::Append);
        s.record(&h(7, 0, 0, 3), 10, None);
        assert_eq!(s.check(&h(7, 0, 3, 2)).unwrap(), Verdict::Append);
        s.record(&h(7, 0, 3, 2), 13, None);
        // The first batch again: a retry.
        assert_eq!(s.check(&h(7, 0, 0, 3)).unwrap(), Verdict::Duplicate { base_offset: 10, last_offset: 12 });
        // A gap.
        assert!(matches!(s.check(&h(7, 0, 6, 1)), Err(LogError::OutOfOrderSequence { expected: 5, got: 6, .. })));
        // An older epoch is fenced; a newer one starts again at 0.
        s.record(&h(7, 1, 0, 1), 20, None);
        assert!(matches!(s.check(&h(7, 0, 5, 1)), Err(LogError::InvalidProducerEpoch { .. })));
        assert_eq!(s.check(&h(7, 1, 1, 1)).unwrap(), Verdict::Append);
        // Non-idempotent batches and unknown producers pass.
        assert_eq!(s.check(&h(-1, -1, -1, 5)).unwrap(), Verdict::Append);
        assert_eq!(s.check(&h(99, 0, 1234, 1)).unwrap(), Verdict::Append);
    }

    #[test]
    fn snapshots_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerStates::default();
        s.record(&h(7, 2, 0, 3), 10, None);
        let mut txn = h(8, 0, 0, 1);
        txn.attributes = 0x10;
        s.record(&txn, 13, None);
        s.save(dir.path(), 14).unwrap();
        let (l, at) = ProducerStates::load(dir.path());
        assert_eq!((at, l.first_unstable()), (Some(14), Some(13)));
        assert_eq!(l.check(&h(7, 2, 0, 3)).unwrap(), Verdict::Duplicate { base_offset: 10, last_offset: 12 });
        assert!(l.check(&h(7, 2, 4, 1)).is_err());
    }

    #[test]
    fn a_transaction_is_open_from_its_first_batch_to_its_marker() {
        let mut s = ProducerStates::default();
        let mut data = h(5, 0, 0, 2);
        data.attributes = 0x10;
        s.record(&data, 3, None);
        data.base_sequence = 2;
        s.record(&data, 8, None);
        assert_eq!(s.first_unstable(), Some(3));
        // The coordinator fenced the producer: its marker carries epoch 1, which the producer's epoch-0 retry is not.
        let mut marker = h(5, 1, -1, 1);
        marker.attributes = 0x30;
        assert_eq!(s.check(&marker).unwrap(), Verdict::Append);
        let aborted = s.record(&marker, 10, Some(ControlType::Abort));
        assert_eq!(aborted, Some(AbortedTxn { producer_id: 5, first_offset: 3, last_offset: 10 }));
        assert_eq!(s.first_unstable(), None);
        assert!(matches!(s.check(&data), Err(LogError::InvalidProducerEpoch { .. })));
        // A stale marker is refused; a COMMIT of a transaction with no records here aborts nothing.
        let mut stale = marker;
        stale.producer_epoch = 0;
        assert!(s.check(&stale).is_err());
        assert_eq!(s.record(&marker, 11, Some(ControlType::Commit)), None);
    }
}
