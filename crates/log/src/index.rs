//! Sparse indexes beside each segment: the offset index maps a relative offset to a byte position, the time index maps
//! a running-maximum timestamp to the offset after which it was reached. Both are kept in memory (a few bytes per
//! `index.interval.bytes` of log) and appended to their files as they grow; the active segment's are rebuilt on recovery.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use crate::error::{LogError, Result};

/// One fixed-size index entry.
pub(crate) trait Entry: Copy + Send + Sync + 'static {
    const SIZE: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(b: &[u8]) -> Self;
}

/// `(relative offset, byte position)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

/// `(max timestamp of every record before rel_offset, rel_offset)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.rel_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.rel_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry { timestamp: i64::from_be_bytes(ts), rel_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]) }
    }
}

/// An index file and its in-memory copy.
#[derive(Debug)]
pub(crate) struct Index<E> {
    path: PathBuf,
    file: File,
    entries: RwLock<Vec<E>>,
}

impl<E: Entry> Index<E> {
    /// Opens (creating if missing) and loads the file. Returns the index and whether the file was whole
    /// (a length that is not a multiple of the entry size means it was torn).
    pub(crate) fn open(path: &Path) -> Result<(Self, bool)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(LogError::io("open index", path))?;
        let len = file.metadata().map_err(LogError::io("stat index", path))?.len() as usize;
        let mut raw = vec![0u8; len - len % E::SIZE];
        file.read_exact_at(&mut raw, 0).map_err(LogError::io("read index", path))?;
        let entries = raw.chunks_exact(E::SIZE).map(E::decode).collect();
        Ok((Index { path: path.to_owned(), file, entries: RwLock::new(entries) }, len.is_multiple_of(E::SIZE)))
    }

    pub(crate) fn push(&self, e: E) -> Result<()> {
        let mut entries = self.entries.write();
        let mut buf = [0u8; 16];
        e.encode(&mut buf[..E::SIZE]);
        self.file
            .write_all_at(&buf[..E::SIZE], (entries.len() * E::SIZE) as u64)
            .map_err(LogError::io("write index", &self.path))?;
        entries.push(e);
        Ok(())
    }

    /// Replaces the whole index (after recovery rebuilt it).
    pub(crate) fn reset(&self, new: Vec<E>) -> Result<()> {
        let mut buf = vec![0u8; new.len() * E::SIZE];
        for (e, out) in new.iter().zip(buf.chunks_exact_mut(E::SIZE)) {
            e.encode(out);
        }
        let mut entries = self.entries.write();
        self.file.set_len(0).map_err(LogError::io("truncate index", &self.path))?;
        self.file.write_all_at(&buf, 0).map_err(LogError::io("write index", &self.path))?;
        *entries = new;
        Ok(())
    }

    /// The last entry `e` with `before(e)` true, assuming `before` is monotone (true then false) over the entries.
    pub(crate) fn floor(&self, before: impl Fn(&E) -> bool) -> Option<E> {
        let entries = self.entries.read();
        let n = entries.partition_point(|e| before(e));
        n.checked_sub(1).map(|i| entries[i])
    }

    pub(crate) fn last(&self) -> Option<E> {
        self.entries.read().last().copied()
    }

    pub(crate) fn entries(&self) -> Vec<E> {
        self.entries.read().clone()
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(LogError::io("fsync index", &self.path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
