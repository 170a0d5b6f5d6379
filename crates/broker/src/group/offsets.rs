//! Durable committed offsets: one append-only file, `offsets.log`, of framed entries
//! (`length u32 BE · crc32c u32 BE · JSON payload`). A commit appends one entry holding all of its offsets and
//! fdatasyncs before it returns, so a commit the caller saw succeed survives a crash. Deleting a topic or a group
//! appends a tombstone entry.
//!
//! On open the file is replayed up to the first torn or corrupt entry (a crash mid-append leaves at most the last one
//! damaged), then rewritten compacted — only the latest offset per group and partition — through a temporary file,
//! fsync and an atomic rename, which also cuts the damaged tail away. A file that has grown well past its compacted
//! size is compacted the same way while running.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{GroupError, TopicPartition};

const FILE: &str = "offsets.log";
const TEMP_FILE: &str = "offsets.log.tmp";
/// Frame header: payload length and CRC-32C.
const HEADER: usize = 8;
/// Below this size the log is never compacted while running; above it, once it is twice its compacted size.
const COMPACT_AT_LEAST: u64 = 8 << 20;

/// A committed offset: the next offset the group will read, with the client's metadata string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetAndMetadata {
    /// The offset of the next record to consume.
    pub offset: i64,
    /// Free-form text the committing client attached.
    pub metadata: String,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub commit_timestamp_ms: i64,
}

/// One framed entry of the file. The serde representation is the on-disk format: change it only compatibly.
#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    Commit {
        group: String,
        offsets: Vec<(String, i32, OffsetAndMetadata)>,
    },
    DeleteTopic {
        topic: String,
    },
    DeleteGroup {
        group: String,
    },
    /// OffsetDelete: some partitions of one group.
    DeletePartitions {
        group: String,
        partitions: Vec<(String, i32)>,
    },
}

/// group → partition → latest committed offset.
type Offsets = BTreeMap<String, BTreeMap<TopicPartition, OffsetAndMetadata>>;

/// The committed offsets of every group, in memory and in `offsets.log`.
#[derive(Debug)]
pub(crate) struct OffsetStore {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Opened for appending. `None` after a failed write that could not be undone: appending after a partial entry
    /// would put good entries behind one that replay stops at, so the store refuses further writes instead.
    file: Option<File>,
    /// Bytes of whole entries in the file: where a failed append is cut back to.
    len: u64,
    /// The file's size right after the last compaction.
    compacted_len: u64,
    /// A compaction's rename whose directory fsync failed: until it succeeds, appends to the new file would not
    /// survive a crash (the old name could come back), so no commit may report success.
    dir_unsynced: bool,
    offsets: Offsets,
}

fn io_error(context: impl std::fmt::Display, path: &Path) -> impl FnOnce(std::io::Error) -> GroupError {
    let context = format!("{context} {}", path.display());
    move |source| GroupError::Io { context, source: Arc::new(source) }
}

fn frame(entry: &Entry) -> Result<Vec<u8>, GroupError> {
    let invalid = |e: String| GroupError::Io {
        context: "cannot encode an entry".into(),
        source: Arc::new(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
    };
    let payload = serde_json::to_vec(entry).map_err(|e| invalid(e.to_string()))?;
    let len = u32::try_from(payload.len()).map_err(|_| invalid(format!("entry of {} bytes", payload.len())))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn apply(offsets: &mut Offsets, entry: Entry) {
    match entry {
        Entry::Commit { group, offsets: list } => {
            let committed = offsets.entry(group).or_default();
            for (topic, partition, om) in list {
                committed.insert(TopicPartition { topic, partition }, om);
            }
        }
        Entry::DeleteTopic { topic } => {
            for committed in offsets.values_mut() {
                committed.retain(|tp, _| tp.topic != topic);
            }
            offsets.retain(|_, committed| !committed.is_empty());
        }
        Entry::DeleteGroup { group } => {
            offsets.remove(&group);
        }
        Entry::DeletePartitions { group, partitions } => {
            if let Some(committed) = offsets.get_mut(&group) {
                for (topic, partition) in partitions {
                    committed.remove(&TopicPartition { topic, partition });
                }
                if committed.is_empty() {
                    offsets.remove(&group);
                }
            }
        }
    }
}

/// Replays entries up to the end or the first damaged one; returns the offsets and how many leading bytes were good.
fn replay(bytes: &[u8]) -> (Offsets, usize) {
    let mut offsets = Offsets::new();
    let mut pos = 0;
    while let Some((entry, next)) = read_entry(bytes, pos) {
        apply(&mut offsets, entry);
        pos = next;
    }
    (offsets, pos)
}

/// The entry at `pos` and where the next one starts, or `None` at the end or at a torn or corrupt entry.
fn read_entry(bytes: &[u8], pos: usize) -> Option<(Entry, usize)> {
    let header = bytes.get(pos..pos.checked_add(HEADER)?)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let start = pos + HEADER;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let payload = bytes.get(start..end)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let entry = serde_json::from_slice(payload).ok()?;
    Some((entry, end))
}

/// Writes `offsets` as a fresh file (one commit entry per group) and renames it over the log. Returns the new file,
/// open for appending, and its length. The rename is not yet durable: the caller syncs the directory.
///
/// Until the rename the old file is untouched, so on error the caller carries on with it.
fn write_compacted(dir: &Path, offsets: &Offsets) -> Result<(File, u64), GroupError> {
    let tmp = dir.join(TEMP_FILE);
    let path = dir.join(FILE);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("cannot remove stale", &tmp)(e)),
    }
    // Append mode, so that cutting a failed append back with set_len leaves later writes at the true end.
    let mut file =
        OpenOptions::new().create_new(true).append(true).open(&tmp).map_err(io_error("cannot create", &tmp))?;
    let mut len = 0u64;
    for (group, committed) in offsets {
        let list = committed.iter().map(|(tp, om)| (tp.topic.clone(), tp.partition, om.clone())).collect();
        let bytes = frame(&Entry::Commit { group: group.clone(), offsets: list })?;
        file.write_all(&bytes).map_err(io_error("cannot write", &tmp))?;
        len += bytes.len() as u64;
    }
    file.sync_all().map_err(io_error("cannot sync", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_error("cannot rename into place", &path))?;
    // The handle follows the renamed inode, so it now appends to the live file.
    Ok((file, len))
}

/// Makes a rename or create in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), GroupError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("cannot sync directory", dir))
}

impl OffsetStore {
    /// Loads the offsets in `dir` (creating it if needed), dropping a damaged tail, and compacts the file.
    pub(crate) fn open(dir: &Path) -> Result<OffsetStore, GroupError> {
        std::fs::create_dir_all(dir).map_err(io_error("cannot create", dir))?;
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error("cannot read", &path)(e)),
        };
        let (offsets, good) = replay(&bytes);
        if good < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                position = good,
                dropped_bytes = bytes.len() - good,
                "dropped a torn or corrupt tail of the committed offsets (a crash during a commit that never returned)"
            );
        }
        let (file, len) = write_compacted(dir, &offsets)?;
        sync_dir(dir)?;
        Ok(OffsetStore {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner { file: Some(file), len, compacted_len: len, dir_unsynced: false, offsets }),
        })
    }

    /// Appends one entry durably, then applies it in memory: readers never see an offset that is not on disk.
    fn append(&self, entry: Entry) -> Result<(), GroupError> {
        let bytes = frame(&entry)?;
        let path = self.dir.join(FILE);
        let mut inner = self.inner.lock();
        let Inner { file, len, compacted_len, dir_unsynced, offsets } = &mut *inner;
        let Some(f) = file.as_mut() else {
            return Err(io_error("refuses writes after an earlier failure in", &path)(std::io::Error::other(
                "a failed append could not be cut back; restart to recover",
            )));
        };
        if let Err(e) = f.write_all(&bytes).and_then(|()| f.sync_data()) {
            if let Err(cut) = f.set_len(*len).and_then(|()| f.sync_data()) {
                tracing::error!(file = %path.display(), "cannot cut back a failed append ({cut}); refusing further commits");
                *file = None;
            }
            return Err(io_error("cannot append to", &path)(e));
        }
        *len += bytes.len() as u64;
        if *dir_unsynced {
            // The entry is in the file but the file's name may not survive a crash: not durable yet.
            sync_dir(&self.dir)?;
            *dir_unsynced = false;
        }
        apply(offsets, entry);
        if *len > COMPACT_AT_LEAST && *len > 2 * *compacted_len {
            match write_compacted(&self.dir, offsets) {
                Ok((f, n)) => {
                    (*file, *len, *compacted_len) = (Some(f), n, n);
                    if let Err(e) = sync_dir(&self.dir) {
                        tracing::warn!("cannot sync the directory after compacting committed offsets: {e}");
                        *dir_unsynced = true;
                    }
                }
                // The uncompacted file is still complete and correct; try again after the next commit.
                Err(e) => tracing::warn!("cannot compact committed offsets: {e}"),
            }
        }
        Ok(())
    }

    /// Stores `list` for `group` durably, as one entry. An empty list writes nothing.
    pub(crate) fn commit(&self, group: &str, list: Vec<(TopicPartition, OffsetAndMetadata)>) -> Result<(), GroupError> {
        if list.is_empty() {
            return Ok(());
        }
        let offsets = list.into_iter().map(|(tp, om)| (tp.topic, tp.partition, om)).collect();
        self.append(Entry::Commit { group: group.to_string(), offsets })
    }

    /// Forgets every group's offsets for `topic`.
    pub(crate) fn delete_topic(&self, topic: &str) -> Result<(), GroupError> {
        let known = self.inner.lock().offsets.values().any(|c| c.keys().any(|tp| tp.topic == topic));
        if !known {
            return Ok(());
        }
        self.append(Entry::DeleteTopic { topic: topic.to_string() })
    }

    /// Forgets `group`'s offsets; false if it had none.
    pub(crate) fn delete_group(&self, group: &str) -> Result<bool, GroupError> {
        if !self.has_group(group) {
            return Ok(false);
        }
        self.append(Entry::DeleteGroup { group: group.to_string() })?;
        Ok(true)
    }

    /// Forgets `group`'s offsets of `partitions` (those it has), durably.
    pub(crate) fn delete_partitions(&self, group: &str, partitions: &[TopicPartition]) -> Result<(), GroupError> {
        let list: Vec<(String, i32)> = {
            let inner = self.inner.lock();
            let Some(committed) = inner.offsets.get(group) else { return Ok(()) };
            partitions
                .iter()
                .filter(|tp| committed.contains_key(*tp))
                .map(|tp| (tp.topic.clone(), tp.partition))
                .collect()
        };
        if list.is_empty() {
            return Ok(());
        }
        self.append(Entry::DeletePartitions { group: group.to_string(), partitions: list })
    }

    /// The committed offsets of `partitions` (`None` for unknown ones), or of every partition the group committed.
    pub(crate) fn fetch(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Option<OffsetAndMetadata>)> {
        let inner = self.inner.lock();
        let committed = inner.offsets.get(group);
        match partitions {
            Some(ps) => ps.iter().map(|tp| (tp.clone(), committed.and_then(|c| c.get(tp)).cloned())).collect(),
            None => {
                committed.map(|c| c.iter().map(|(tp, om)| (tp.clone(), Some(om.clone()))).collect()).unwrap_or_default()
            }
        }
    }

    /// Whether `group` has committed offsets.
    pub(crate) fn has_group(&self, group: &str) -> bool {
        self.inner.lock().offsets.contains_key(group)
    }

    /// Every group with committed offsets, in name order.
    pub(crate) fn groups(&self) -> Vec<String> {
        self.inner.lock().offsets.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn om(offset: i64) -> OffsetAndMetadata {
        OffsetAndMetadata { offset, metadata: format!("m{offset}"), commit_timestamp_ms: offset * 10 }
    }

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    fn append_raw(dir: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(dir.join(FILE)).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn offsets_survive_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = OffsetStore::open(dir.path()).unwrap();
            s.commit("g", vec![(tp("a", 0), om(5)), (tp("a", 1), om(7))]).unwrap();
            s.commit("g", vec![(tp("a", 0), om(9))]).unwrap();
            s.commit("h", vec![(tp("b", 0), om(1))]).unwrap();
            s.commit("k", vec![(tp("a", 3), om(4))]).unwrap();
            assert!(s.delete_group("k").unwrap());
            s.delete_topic("b").unwrap();
        }
        // A commit torn mid-write: a header promising more payload than follows.
        append_raw(dir.path(), &[0, 0, 0, 50, 1, 2, 3, 4, b'{']);
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.fetch("g", None), vec![(tp("a", 0), Some(om(9))), (tp("a", 1), Some(om(7)))]);
        assert_eq!(s.fetch("g", Some(&[tp("a", 1), tp("a", 2)])), vec![(tp("a", 1), Some(om(7))), (tp("a", 2), None)]);
        assert!(s.fetch("h", None).is_empty());
        assert!(s.fetch("k", None).is_empty());
        assert_eq!(s.groups(), vec!["g".to_string()]);

        // The damaged tail was cut away, so what is committed now lands where replay will find it.
        s.commit("g", vec![(tp("a", 1), om(8))]).unwrap();
        drop(s);
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.fetch("g", None), vec![(tp("a", 0), Some(om(9))), (tp("a", 1), Some(om(8)))]);
    }

    #[test]
    fn a_corrupt_entry_ends_replay() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path()).unwrap();
        s.commit("g", vec![(tp("a", 0), om(1))]).unwrap();
        drop(s);
        // A whole frame with a bad checksum, then a good one behind it: the good one is unreachable (as after a crash
        // that tore an entry), so neither is applied.
        let mut bad = frame(&Entry::Commit { group: "g".into(), offsets: vec![("a".into(), 0, om(2))] }).unwrap();
        bad[5] ^= 0xff;
        append_raw(dir.path(), &bad);
        append_raw(
            dir.path(),
            &frame(&Entry::Commit { group: "g".into(), offsets: vec![("a".into(), 0, om(3))] }).unwrap(),
        );
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.fetch("g", None), vec![(tp("a", 0), Some(om(1)))]);
    }

    #[test]
    fn reopening_compacts_to_the_latest_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path()).unwrap();
        for i in 0..100 {
            s.commit("g", vec![(tp("a", 0), om(i)), (tp("a", 1), om(i))]).unwrap();
        }
        let grown = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        drop(s);
        let s = OffsetStore::open(dir.path()).unwrap();
        let compacted = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
        assert!(compacted * 50 < grown, "{compacted} bytes after compaction, {grown} before");
        assert_eq!(s.fetch("g", None), vec![(tp("a", 0), Some(om(99))), (tp("a", 1), Some(om(99)))]);
        assert!(!dir.path().join(TEMP_FILE).exists());
    }

    #[test]
    fn garbage_never_panics() {
        let good = frame(&Entry::DeleteGroup { group: "g".into() }).unwrap();
        let cases = [
            vec![],
            vec![0xff; 3],
            vec![0xff; 100],
            // Valid checksum over a payload that is not an entry.
            [&[0, 0, 0, 2][..], &crc32c::crc32c(b"{}").to_be_bytes(), b"{}"].concat(),
            [&good[..], &[0xff; 8]].concat(),
        ];
        for garbage in cases {
            let (offsets, good_len) = replay(&garbage);
            assert!(offsets.is_empty());
            assert!(good_len <= garbage.len());
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), [7u8; 1000]).unwrap();
        let s = OffsetStore::open(dir.path()).unwrap();
        assert!(s.groups().is_empty());
    }
}
