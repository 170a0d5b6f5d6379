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

/// Where an index's entries are read from: memory while its segment is active, the file once it is sealed, so
/// resident memory stays flat however large the log grows (the page cache keeps hot index pages anyway).
#[derive(Debug)]
enum Store<E> {
    Memory(Vec<E>),
    Disk { len: usize },
}

/// An index file, with its entries in memory until [`Index::release_to_disk`].
#[derive(Debug)]
pub(crate) struct Index<E> {
    path: PathBuf,
    file: File,
    store: RwLock<Store<E>>,
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
        let entries = read_all(&file, path, len / E::SIZE)?;
        let index = Index { path: path.to_owned(), file, store: RwLock::new(Store::Memory(entries)) };
        Ok((index, len.is_multiple_of(E::SIZE)))
    }

    pub(crate) fn push(&self, e: E) -> Result<()> {
        let mut store = self.store.write();
        let mut buf = [0u8; 16];
        e.encode(&mut buf[..E::SIZE]);
        let len = match &*store {
            Store::Memory(v) => v.len(),
            Store::Disk { len } => *len,
        };
        self.file
            .write_all_at(&buf[..E::SIZE], (len * E::SIZE) as u64)
            .map_err(LogError::io("write index", &self.path))?;
        match &mut *store {
            Store::Memory(v) => v.push(e),
            Store::Disk { len } => *len += 1,
        }
        Ok(())
    }

    /// Replaces the whole index (after recovery rebuilt it).
    pub(crate) fn reset(&self, new: Vec<E>) -> Result<()> {
        let mut buf = vec![0u8; new.len() * E::SIZE];
        for (e, out) in new.iter().zip(buf.chunks_exact_mut(E::SIZE)) {
            e.encode(out);
        }
        let mut store = self.store.write();
        self.file.set_len(0).map_err(LogError::io("truncate index", &self.path))?;
        self.file.write_all_at(&buf, 0).map_err(LogError::io("write index", &self.path))?;
        *store = Store::Memory(new);
        Ok(())
    }

    /// Drops the in-memory copy; lookups then binary-search the file.
    pub(crate) fn release_to_disk(&self) {
        let mut store = self.store.write();
        if let Store::Memory(v) = &*store {
            *store = Store::Disk { len: v.len() };
        }
    }

    fn read_entry(&self, i: usize) -> Option<E> {
        let mut buf = [0u8; 16];
        self.file.read_exact_at(&mut buf[..E::SIZE], (i * E::SIZE) as u64).ok()?;
        Some(E::decode(&buf[..E::SIZE]))
    }

    /// The last entry `e` with `before(e)` true, assuming `before` is monotone (true then false) over the entries.
    /// An unreadable on-disk entry ends the search early: the caller then scans from an earlier position, which is
    /// slower but still correct.
    pub(crate) fn floor(&self, before: impl Fn(&E) -> bool) -> Option<E> {
        match &*self.store.read() {
            Store::Memory(entries) => {
                let n = entries.partition_point(|e| before(e));
                n.checked_sub(1).map(|i| entries[i])
            }
            Store::Disk { len } => {
                let (mut lo, mut hi) = (0usize, *len);
                let mut best = None;
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    let e = self.read_entry(mid)?;
                    if before(&e) {
                        best = Some(e);
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                best
            }
        }
    }

    pub(crate) fn last(&self) -> Option<E> {
        match &*self.store.read() {
            Store::Memory(entries) => entries.last().copied(),
            Store::Disk { len } => len.checked_sub(1).and_then(|i| self.read_entry(i)),
        }
    }

    pub(crate) fn entries(&self) -> Result<Vec<E>> {
        match &*self.store.read() {
            Store::Memory(entries) => Ok(entries.clone()),
            Store::Disk { len } => read_all(&self.file, &self.path, *len),
        }
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(LogError::io("fsync index", &self.path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn read_all<E: Entry>(file: &File, path: &Path, n: usize) -> Result<Vec<E>> {
    let mut raw = vec![0u8; n * E::SIZE];
    file.read_exact_at(&mut raw, 0).map_err(LogError::io("read index", path))?;
    Ok(raw.chunks_exact(E::SIZE).map(E::decode).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Lookups answer the same from memory and from the file.
        #[test]
        fn floor_is_the_same_in_memory_and_on_disk(gaps in proptest::collection::vec(1u32..50, 0..200), probes in proptest::collection::vec(0u32..12_000, 1..30)) {
            let dir = tempfile::tempdir().unwrap();
            let (index, _) = Index::<OffsetEntry>::open(&dir.path().join("x.index")).unwrap();
            let mut rel = 0;
            for (i, g) in gaps.iter().enumerate() {
                rel += g;
                index.push(OffsetEntry { rel_offset: rel, position: i as u32 * 100 }).unwrap();
            }
            let in_memory: Vec<_> = probes.iter().map(|p| index.floor(|e| e.rel_offset <= *p)).collect();
            let last = index.last();
            index.release_to_disk();
            let on_disk: Vec<_> = probes.iter().map(|p| index.floor(|e| e.rel_offset <= *p)).collect();
            prop_assert_eq!(in_memory, on_disk);
            prop_assert_eq!(last, index.last());
            prop_assert_eq!(index.entries().unwrap().len(), gaps.len());
        }
    }
}
