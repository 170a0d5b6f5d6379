//! Durable committed offsets: an append-only file of framed entries (`len u32 · crc32c u32 · JSON`), each fsynced
//! before the commit returns. On open the file is replayed up to the first torn or corrupt entry, then rewritten
//! compacted (latest offset per group and partition) through a temporary file and an atomic rename.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{GroupError, TopicPartition};

const FILE: &str = "offsets.log";

/// A committed offset: the next offset the group will read, with the client's metadata string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetAndMetadata {
    pub offset: i64,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
enum Entry {
    Commit { group: String, offsets: Vec<(String, i32, OffsetAndMetadata)> },
    DeleteTopic { topic: String },
    DeleteGroup { group: String },
}

type Offsets = BTreeMap<String, BTreeMap<TopicPartition, OffsetAndMetadata>>;

#[derive(Debug)]
pub(crate) struct OffsetStore {
    path: PathBuf,
    inner: Mutex<(File, Offsets)>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> GroupError + '_ {
    move |e| GroupError::Storage(format!("{}: {e}", path.display()))
}

fn frame(entry: &Entry) -> Vec<u8> {
    let payload = serde_json::to_vec(entry).expect("entries serialise");
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

fn apply(offsets: &mut Offsets, entry: Entry) {
    match entry {
        Entry::Commit { group, offsets: list } => {
            let g = offsets.entry(group).or_default();
            for (topic, partition, om) in list {
                g.insert(TopicPartition { topic, partition }, om);
            }
        }
        Entry::DeleteTopic { topic } => {
            for g in offsets.values_mut() {
                g.retain(|tp, _| tp.topic != topic);
            }
            offsets.retain(|_, g| !g.is_empty());
        }
        Entry::DeleteGroup { group } => {
            offsets.remove(&group);
        }
    }
}

/// Replays entries until the end or the first damaged one; returns the offsets and how many bytes were good.
fn replay(bytes: &[u8]) -> (Offsets, usize) {
    let mut offsets = Offsets::new();
    let mut pos = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
        let crc = u32::from_be_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]);
        let Some(payload) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Ok(entry) = serde_json::from_slice::<Entry>(payload) else {
            break;
        };
        apply(&mut offsets, entry);
        pos += 8 + len;
    }
    (offsets, pos)
}

impl OffsetStore {
    pub(crate) fn open(dir: &Path) -> Result<OffsetStore, GroupError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        let (offsets, good) = replay(&bytes);
        if good < bytes.len() {
            tracing::warn!(file = %path.display(), position = good, "dropped a torn or corrupt tail of committed offsets");
        }
        // Rewrite compacted: one commit entry per group.
        let tmp = dir.join("offsets.log.tmp");
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            for (group, tps) in &offsets {
                let list = tps.iter().map(|(tp, om)| (tp.topic.clone(), tp.partition, om.clone())).collect();
                f.write_all(&frame(&Entry::Commit { group: group.clone(), offsets: list })).map_err(io(&tmp))?;
            }
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io(&path))?;
        Ok(OffsetStore { path, inner: Mutex::new((file, offsets)) })
    }

    fn append(&self, entry: Entry) -> Result<(), GroupError> {
        let bytes = frame(&entry);
        let mut inner = self.inner.lock();
        let (file, offsets) = &mut *inner;
        file.write_all(&bytes).and_then(|_| file.sync_data()).map_err(io(&self.path))?;
        apply(offsets, entry);
        Ok(())
    }

    pub(crate) fn commit(&self, group: &str, list: Vec<(TopicPartition, OffsetAndMetadata)>) -> Result<(), GroupError> {
        let offsets = list.into_iter().map(|(tp, om)| (tp.topic, tp.partition, om)).collect();
        self.append(Entry::Commit { group: group.to_string(), offsets })
    }

    pub(crate) fn delete_topic(&self, topic: &str) -> Result<(), GroupError> {
        self.append(Entry::DeleteTopic { topic: topic.to_string() })
    }

    pub(crate) fn delete_group(&self, group: &str) -> Result<(), GroupError> {
        self.append(Entry::DeleteGroup { group: group.to_string() })
    }

    pub(crate) fn fetch(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Option<OffsetAndMetadata>)> {
        let inner = self.inner.lock();
        let g = inner.1.get(group);
        match partitions {
            Some(ps) => ps.iter().map(|tp| (tp.clone(), g.and_then(|g| g.get(tp)).cloned())).collect(),
            None => g.map(|g| g.iter().map(|(tp, om)| (tp.clone(), Some(om.clone()))).collect()).unwrap_or_default(),
        }
    }

    pub(crate) fn groups(&self) -> Vec<String> {
        self.inner.lock().1.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn om(offset: i64) -> OffsetAndMetadata {
        OffsetAndMetadata { offset, metadata: String::new(), commit_timestamp_ms: 0 }
    }

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition { topic: t.into(), partition: p }
    }

    #[test]
    fn offsets_survive_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = OffsetStore::open(dir.path()).unwrap();
            s.commit("g", vec![(tp("a", 0), om(5)), (tp("a", 1), om(7))]).unwrap();
            s.commit("g", vec![(tp("a", 0), om(9))]).unwrap();
            s.commit("h", vec![(tp("b", 0), om(1))]).unwrap();
            s.delete_topic("b").unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(dir.path().join(FILE)).unwrap();
        f.write_all(&[0, 0, 0, 50, 1, 2, 3]).unwrap();
        drop(f);
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.fetch("g", Some(&[tp("a", 0)]))[0].1, Some(om(9)));
        assert_eq!(s.fetch("g", None).len(), 2);
        assert!(s.fetch("h", None).is_empty());
        assert_eq!(s.groups(), vec!["g".to_string()]);
        s.commit("g", vec![(tp("a", 1), om(8))]).unwrap();
        drop(s);
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.fetch("g", Some(&[tp("a", 1)]))[0].1, Some(om(8)));
    }

    #[test]
    fn garbage_files_never_panic() {
        for garbage in [vec![], vec![0xff; 3], vec![0xff; 100], vec![0, 0, 0, 2, 0, 0, 0, 0, b'{', b'}']] {
            let (o, _) = replay(&garbage);
            assert!(o.is_empty());
        }
    }
}
