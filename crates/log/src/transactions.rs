//! What a log knows of transactions (Kafka's KIP-98) so `read_committed` readers can be served: the aborted
//! transactions of the partition (Kafka's `.txnindex`), kept in one append-only file, and the filter that hides an
//! aborted transaction's records from a reader, exactly as Kafka's clients apply the list a Fetch returns.
//!
//! The open transactions, which hold the last stable offset back, live with the producers' state
//! (`producer_state.rs`); this module only remembers transactions once their ABORT marker is written.
//!
//! The file is written when a marker is appended (no fsync of its own: a crash loses at most the entries of the
//! active segment, which recovery rebuilds from its scan) and fsynced when a segment rolls and on a clean close.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{self, BatchHeader, ControlType};
use crate::error::{LogError, Result};

pub(crate) const ABORTED_FILE: &str = "aborted-transactions";

/// A transaction that was aborted on this partition: its producer's records from `first_offset` up to its ABORT
/// marker at `last_offset` are hidden from `read_committed` readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// The partition's aborted transactions in marker order, mirrored in [`ABORTED_FILE`].
#[derive(Debug)]
pub(crate) struct AbortedIndex {
    path: PathBuf,
    file: Option<File>,
    entries: Vec<AbortedTxn>,
}

impl AbortedIndex {
    /// Loads the file of `dir` (a missing file is an empty index; an unreadable line ends it, as a torn tail).
    pub(crate) fn load(dir: &Path) -> AbortedIndex {
        let path = dir.join(ABORTED_FILE);
        let mut entries = Vec::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                let f: Vec<i64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
                let [producer_id, first_offset, last_offset] = f[..] else { break };
                entries.push(AbortedTxn { producer_id, first_offset, last_offset });
            }
        }
        AbortedIndex { path, file: None, entries }
    }

    /// After recovery: forgets entries whose marker is not in the log any more (at or past `end`), adds the ones
    /// found by the scan of the active segment that the file missed, and rewrites the file when it changed.
    pub(crate) fn reconcile(&mut self, end: i64, found: &[AbortedTxn]) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(|e| e.last_offset < end);
        let mut changed = self.entries.len() != before;
        for f in found {
            if !self.entries.iter().any(|e| e.last_offset == f.last_offset) {
                self.entries.push(*f);
                changed = true;
            }
        }
        if changed {
            self.entries.sort_by_key(|e| e.last_offset);
            self.rewrite()?;
        }
        Ok(())
    }

    pub(crate) fn push(&mut self, txn: AbortedTxn) -> Result<()> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(LogError::io("open", &self.path))?;
            self.file = Some(file);
        }
        let line = format!("{} {} {}\n", txn.producer_id, txn.first_offset, txn.last_offset);
        let file = self.file.as_mut().expect("opened above");
        file.write_all(line.as_bytes()).map_err(LogError::io("append to", &self.path))?;
        self.entries.push(txn);
        Ok(())
    }

    pub(crate) fn sync(&self) -> Result<()> {
        match &self.file {
            Some(f) => f.sync_data().map_err(LogError::io("fsync", &self.path)),
            None => Ok(()),
        }
    }

    /// Forgets the transactions wholly below `start` (deleted by retention).
    pub(crate) fn retain_from(&mut self, start: i64) -> Result<()> {
        if self.entries.first().is_some_and(|e| e.last_offset < start) {
            self.entries.retain(|e| e.last_offset >= start);
            self.rewrite()?;
        }
        Ok(())
    }

    /// The aborted transactions that may hide records in `from..=to`, ordered by their first offset (what a Fetch
    /// response's `aborted_transactions` carries).
    pub(crate) fn overlapping(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let mut out: Vec<AbortedTxn> =
            self.entries.iter().filter(|e| e.last_offset >= from && e.first_offset <= to).copied().collect();
        out.sort_by_key(|e| e.first_offset);
        out
    }

    fn rewrite(&mut self) -> Result<()> {
        let text: String =
            self.entries.iter().map(|e| format!("{} {} {}\n", e.producer_id, e.first_offset, e.last_offset)).collect();
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(LogError::io("write", &tmp))?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(LogError::io("fsync", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(LogError::io("rename", &tmp))?;
        self.file = None;
        Ok(())
    }
}

/// Decides, batch by batch in log order, what a `read_committed` reader sees, from the aborted transactions that
/// overlap the read: a transactional batch of a producer whose aborted transaction has begun (and whose ABORT marker
/// has not yet been passed) is hidden, and so is every control batch (markers are not records).
#[derive(Debug)]
pub struct ReadCommittedFilter {
    pending: VecDeque<AbortedTxn>,
    aborting: HashSet<i64>,
}

impl ReadCommittedFilter {
    pub fn new(mut aborted: Vec<AbortedTxn>) -> Self {
        aborted.sort_by_key(|a| a.first_offset);
        ReadCommittedFilter { pending: aborted.into(), aborting: HashSet::new() }
    }

    /// Whether the batch (whole bytes, as read) is to be handed to the reader.
    pub fn keep(&mut self, header: &BatchHeader, bytes: &Bytes) -> bool {
        while self.pending.front().is_some_and(|a| a.first_offset <= header.last_offset()) {
            let a = self.pending.pop_front().expect("checked");
            self.aborting.insert(a.producer_id);
        }
        if header.is_control() {
            if batch::control_type(bytes) == Some(ControlType::Abort) {
                self.aborting.remove(&header.producer_id);
            }
            return false;
        }
        !(header.is_transactional() && self.aborting.contains(&header.producer_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_survives_reopening_and_reconciles_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = AbortedIndex::load(dir.path());
        index.push(AbortedTxn { producer_id: 7, first_offset: 2, last_offset: 5 }).unwrap();
        index.push(AbortedTxn { producer_id: 8, first_offset: 3, last_offset: 9 }).unwrap();
        let mut index = AbortedIndex::load(dir.path());
        assert_eq!(index.overlapping(0, 4).len(), 2);
        assert_eq!(index.overlapping(6, 20), [AbortedTxn { producer_id: 8, first_offset: 3, last_offset: 9 }]);
        // The log now ends at 8: the second marker was lost with the torn tail; the scan found another.
        index.reconcile(8, &[AbortedTxn { producer_id: 9, first_offset: 6, last_offset: 7 }]).unwrap();
        let index = AbortedIndex::load(dir.path());
        let lasts: Vec<i64> = index.entries.iter().map(|e| e.last_offset).collect();
        assert_eq!(lasts, [5, 7]);
    }
}
