//! Idempotent producers, as Kafka's broker tracks them per partition: for each producer id its epoch and the sequence
//! ranges of its last few batches, with the offsets they were stored at. A retried batch (same sequences) is answered
//! with its original offsets instead of being stored twice; a gap or a step back in sequences is refused.
//!
//! The state is rebuilt from the active segment after an unclean stop (recovery scans it anyway) and saved to
//! `producer-state` on a clean close. A producer the log does not know is accepted from whatever sequence it sends,
//! as its earlier batches may have been deleted by retention.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use crate::batch::BatchHeader;
use crate::error::LogError;

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

    /// Records a batch stored at `base_offset`.
    pub(crate) fn record(&mut self, h: &BatchHeader, base_offset: i64) {
        if h.producer_id < 0 {
            return;
        }
        let p = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != p.epoch {
            p.epoch = h.producer_epoch;
            p.batches.clear();
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
    }

    /// One line per remembered batch: `producer epoch first_seq last_seq base_offset last_offset`.
    pub(crate) fn save(&self, dir: &Path) -> std::io::Result<()> {
        let mut text = String::new();
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

    /// Loads a snapshot; unreadable lines are skipped (those producers are then treated as unknown).
    pub(crate) fn load(dir: &Path) -> ProducerStates {
        let mut s = ProducerStates::default();
        let Ok(text) = std::fs::read_to_string(dir.join(SNAPSHOT_FILE)) else { return s };
        for line in text.lines() {
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
        s
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
        s.record(&h(7, 0, 0, 3), 10);
        assert_eq!(s.check(&h(7, 0, 3, 2)).unwrap(), Verdict::Append);
        s.record(&h(7, 0, 3, 2), 13);
        // The first batch again: a retry.
        assert_eq!(s.check(&h(7, 0, 0, 3)).unwrap(), Verdict::Duplicate { base_offset: 10, last_offset: 12 });
        // A gap.
        assert!(matches!(s.check(&h(7, 0, 6, 1)), Err(LogError::OutOfOrderSequence { expected: 5, got: 6, .. })));
        // An older epoch is fenced; a newer one starts again at 0.
        s.record(&h(7, 1, 0, 1), 20);
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
        s.record(&h(7, 2, 0, 3), 10);
        s.save(dir.path()).unwrap();
        let l = ProducerStates::load(dir.path());
        assert_eq!(l.check(&h(7, 2, 0, 3)).unwrap(), Verdict::Duplicate { base_offset: 10, last_offset: 12 });
        assert!(l.check(&h(7, 2, 4, 1)).is_err());
    }
}
