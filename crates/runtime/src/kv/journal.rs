//! [`JournalKv`]: the embedded key-value store. The data is served from memory (hash maps, and sorted sets that
//! answer a rank without counting) and every change is appended to a journal file before it is acknowledged, as
//! Redis's append-only file does; a snapshot of the whole state replaces the journal once it has grown to twice the
//! last snapshot (Redis's `auto-aof-rewrite-percentage 100`), and a restart loads the snapshot and replays the
//! journal after it.
//!
//! Durability is the broker log's default: an operation returns once its record is in the kernel (a `kill -9`
//! loses nothing acknowledged), and the journal is `fdatasync`ed every `fsync_interval` (50 ms; a machine crash
//! loses at most that). Operations append their records to a buffer under the lock that orders them; the first to
//! find the file free writes everything buffered, its own and the others' (group commit, with no hand-over to another
//! thread on the way), and the others return once a write has covered theirs. A read waits the same way for the
//! writes it saw, so nobody observes a change that a crash could still take back. A background thread syncs and
//! replaces the journal with snapshots.
//!
//! Files in the directory: `journal-N` (records, each `[u32 length][u32 crc32c][effects]`), `snapshot-N` (the
//! state as of the start of `journal-N`, in the same framing; written to `.tmp`, synced, then renamed), `.lock`.
//! A record cut short by a crash ends its journal: it is dropped (it was never acknowledged) and the file truncated.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::state::{decode_all, KvState, Sink};
use super::KvError;
use crate::time::now_ms;

/// How the journal is kept.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// How often written records are forced to disk.
    pub fsync_interval: Duration,
    /// The journal is not replaced by a snapshot before it is this long.
    pub min_rewrite_bytes: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions { fsync_interval: Duration::from_millis(50), min_rewrite_bytes: 64 << 20 }
    }
}

/// The embedded key-value store (see the module's documentation). Cheap to clone; the last clone dropped writes
/// and syncs what is pending and stops the writer thread.
#[derive(Clone)]
pub struct JournalKv {
    inner: Arc<Inner>,
    _closer: Arc<Closer>,
}

impl std::fmt::Debug for JournalKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalKv").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    shared: Mutex<Shared>,
    /// The journal being written; its holder writes what is buffered.
    file: Mutex<Journal>,
    /// Wakes the background thread (to close).
    wake: Condvar,
    /// What is written; changes after every write (announced once the file is free again).
    progress: watch::Sender<Progress>,
    options: JournalOptions,
}

/// The current journal file and what the background thread needs to know about it.
struct Journal {
    file: File,
    current: u64,
    /// Bytes in the journals since the last snapshot, and that snapshot's size.
    journal_bytes: u64,
    snapshot_bytes: u64,
    unsynced: bool,
    /// The buffer swapped in for the one taken (so neither is reallocated).
    spare: Vec<u8>,
}

struct Shared {
    state: KvState,
    /// Framed records not yet written, and the sequence number of the last of them.
    buf: Vec<u8>,
    /// Records appended so far (the sequence number of the last).
    appended: u64,
    /// Set once a write failed: the state then holds changes the disk may not, so nothing more is served.
    failed: Option<Arc<str>>,
    closing: bool,
}

#[derive(Clone, Debug, Default)]
struct Progress {
    /// Records written to the journal file so far.
    written: u64,
    failed: Option<Arc<str>>,
}

/// Stops the writer thread when the last handle goes.
struct Closer {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.inner.shared.lock().closing = true;
        self.inner.wake.notify_one();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> KvError {
    KvError::Journal(format!("{what} {}: {e}", path.display()))
}

/// The numbered files of one kind in `dir` (`journal-N`, `snapshot-N`), in order.
fn numbered(dir: &Path, prefix: &str) -> Result<Vec<u64>, KvError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err("cannot list", dir, e))? {
        let entry = entry.map_err(|e| io_err("cannot list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn journal_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("journal-{n}"))
}

fn snapshot_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snapshot-{n}"))
}

/// Frames the records appended to `buf` since `start` (where 8 bytes were reserved): their length and checksum.
fn seal(buf: &mut [u8], start: usize) {
    let payload_len = buf.len() - start - 8;
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Applies a file's records to `state`; returns the length of its whole, valid records (a shorter file length
/// means a torn or damaged tail).
fn replay(bytes: &[u8], state: &mut KvState) -> usize {
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else { break };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Some(effects) = decode_all(payload) else { break };
        for e in effects {
            state.apply(e);
        }
        at += 8 + len;
    }
    at
}

fn sync_dir(dir: &Path) -> Result<(), KvError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("cannot sync", dir, e))
}

impl JournalKv {
    /// Opens (or creates) the store in `dir`: loads the latest snapshot, replays the journal after it, and starts a
    /// new journal. Fails if another process has it open.
    pub fn open(dir: impl Into<PathBuf>, options: JournalOptions) -> Result<JournalKv, KvError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io_err("cannot create", &dir, e))?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_err("cannot open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(KvError::Journal(format!("{} is in use by another process", dir.display())))
            }
            Err(TryLockError::Error(e)) => return Err(io_err("cannot lock", &lock_path, e)),
        }
        // A snapshot that was still being written when the process stopped is incomplete: it never counted.
        for entry in std::fs::read_dir(&dir).map_err(|e| io_err("cannot list", &dir, e))?.flatten() {
            if entry.file_name().to_str().is_some_and(|n| n.ends_with(".tmp")) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let mut state = KvState::default();
        let snapshots = numbered(&dir, "snapshot-")?;
        let base = snapshots.last().copied().unwrap_or(0);
        let mut snapshot_bytes = 0u64;
        if let Some(&n) = snapshots.last() {
            let path = snapshot_path(&dir, n);
            let bytes = std::fs::read(&path).map_err(|e| io_err("cannot read", &path, e))?;
            // Synced before it was renamed into place: all of it must read back.
            if replay(&bytes, &mut state) != bytes.len() {
                return Err(KvError::Journal(format!("{} is damaged", path.display())));
            }
            snapshot_bytes = bytes.len() as u64;
        }
        let journals = numbered(&dir, "journal-")?;
        let mut journal_bytes = 0u64;
        for &n in journals.iter().filter(|&&n| n >= base) {
            let path = journal_path(&dir, n);
            let bytes = std::fs::read(&path).map_err(|e| io_err("cannot read", &path, e))?;
            let valid = replay(&bytes, &mut state);
            if valid < bytes.len() {
                tracing::warn!(
                    journal = %path.display(),
                    dropped_bytes = bytes.len() - valid,
                    "the key-value journal ends with an incomplete record (cut short by a crash): dropped"
                );
                let f = OpenOptions::new().write(true).open(&path).map_err(|e| io_err("cannot open", &path, e))?;
                f.set_len(valid as u64).and_then(|_| f.sync_all()).map_err(|e| io_err("cannot truncate", &path, e))?;
            }
            journal_bytes += valid as u64;
        }
        // What the snapshot covers, and older snapshots, are no longer needed.
        for &n in journals.iter().filter(|&&n| n < base) {
            let _ = std::fs::remove_file(journal_path(&dir, n));
        }
        for &n in snapshots.iter().filter(|&&n| n < base) {
            let _ = std::fs::remove_file(snapshot_path(&dir, n));
        }
        state.sweep(now_ms());
        let current = journals.last().copied().unwrap_or(0).max(base) + 1;
        let path = journal_path(&dir, current);
        let file =
            OpenOptions::new().append(true).create(true).open(&path).map_err(|e| io_err("cannot create", &path, e))?;
        sync_dir(&dir)?;
        tracing::debug!(dir = %dir.display(), entries = state.entries(), "key-value store loaded");
        let inner = Arc::new(Inner {
            dir,
            shared: Mutex::new(Shared { state, buf: Vec::new(), appended: 0, failed: None, closing: false }),
            file: Mutex::new(Journal {
                file,
                current,
                journal_bytes,
                snapshot_bytes,
                unsynced: false,
                spare: Vec::new(),
            }),
            wake: Condvar::new(),
            progress: watch::Sender::new(Progress::default()),
            options,
        });
        let background =
            Background { inner: inner.clone(), last_sync: Instant::now(), snapshotting: None, _lock: lock };
        let thread = std::thread::Builder::new()
            .name("weir-kv-journal".into())
            .spawn(move || background.run())
            .map_err(|e| KvError::Journal(format!("cannot start the journal's thread: {e}")))?;
        Ok(JournalKv { _closer: Arc::new(Closer { inner: inner.clone(), thread: Mutex::new(Some(thread)) }), inner })
    }

    /// Runs `op` on the state, recording its effects as one journal record; returns its result once that record
    /// (and every one before it) is written.
    async fn write<R>(&self, op: impl FnOnce(&mut KvState, i64, &mut Sink<'_>) -> R) -> Result<R, KvError> {
        let (r, seen) = {
            let mut g = self.inner.shared.lock();
            if let Some(why) = &g.failed {
                return Err(KvError::Journal(why.to_string()));
            }
            let Shared { state, buf, appended, .. } = &mut *g;
            let start = buf.len();
            buf.extend_from_slice(&[0; 8]);
            let r = op(state, now_ms(), &mut Some(&mut *buf));
            if buf.len() == start + 8 {
                buf.truncate(start); // changed nothing
            } else {
                seal(buf, start);
                *appended += 1;
            }
            (r, *appended)
        };
        self.written(seen).await?;
        Ok(r)
    }

    /// Reads the state; returns once every change it may have seen is written.
    async fn read<R>(&self, op: impl FnOnce(&KvState, i64) -> R) -> Result<R, KvError> {
        let (r, seen) = {
            let g = self.inner.shared.lock();
            if let Some(why) = &g.failed {
                return Err(KvError::Journal(why.to_string()));
            }
            (op(&g.state, now_ms()), g.appended)
        };
        self.written(seen).await?;
        Ok(r)
    }

    /// Returns once the records up to `seq` are written: by this caller, if it finds the file free, else by the
    /// caller holding it (or the next one).
    async fn written(&self, seq: u64) -> Result<(), KvError> {
        let mut rx = self.inner.progress.subscribe();
        loop {
            {
                let p = rx.borrow_and_update();
                if p.written >= seq {
                    return Ok(());
                }
                if let Some(why) = &p.failed {
                    return Err(KvError::Journal(why.to_string()));
                }
            }
            if let Some(journal) = self.inner.file.try_lock() {
                self.inner.write_buffered(journal);
                continue;
            }
            // The holder announces its write after letting the file go: this wakes, and looks again.
            rx.changed().await.map_err(|_| KvError::Journal("the journal was closed".into()))?;
        }
    }
}

impl Inner {
    /// Writes what is buffered into the journal, then lets the file go and announces how far it is written (or
    /// that the store failed).
    fn write_buffered(&self, mut journal: parking_lot::MutexGuard<'_, Journal>) {
        let (mut batch, seq) = {
            let mut g = self.shared.lock();
            let spare = std::mem::take(&mut journal.spare);
            (std::mem::replace(&mut g.buf, spare), g.appended)
        };
        let result = if batch.is_empty() {
            Ok(())
        } else {
            let written = journal.file.write_all(&batch);
            journal.journal_bytes += batch.len() as u64;
            journal.unsynced = true;
            written.map_err(|e| io_err("cannot write", &journal_path(&self.dir, journal.current), e))
        };
        batch.clear();
        journal.spare = batch;
        drop(journal);
        match result {
            Ok(()) => self.progress.send_modify(|p| p.written = p.written.max(seq)),
            Err(e) => self.fail(e),
        }
    }

    /// Runs `f` on the journal for the background thread, then announces (as every holder of the file must, once
    /// it has let it go: a caller that found the file taken waits for the next announcement to look again).
    fn with_file<R>(&self, f: impl FnOnce(&mut Journal) -> R) -> R {
        let r = f(&mut self.file.lock());
        self.progress.send_modify(|_| {});
        r
    }

    /// Stops serving: the state may hold changes the disk does not.
    fn fail(&self, e: KvError) {
        let why: Arc<str> = e.to_string().into();
        tracing::error!(error = %why, "the key-value journal cannot be written; the store stops serving");
        self.shared.lock().failed = Some(why.clone());
        self.progress.send_modify(|p| p.failed = Some(why));
    }
}

/// The background thread: syncs the journal every `fsync_interval`, replaces it with a snapshot when it has grown,
/// and writes and syncs what is left when the store closes.
struct Background {
    inner: Arc<Inner>,
    last_sync: Instant,
    snapshotting: Option<std::thread::JoinHandle<Result<u64, KvError>>>,
    /// Held for as long as the store is open.
    _lock: File,
}

impl Background {
    fn run(mut self) {
        loop {
            let closing = {
                let mut g = self.inner.shared.lock();
                if !g.closing {
                    self.inner.wake.wait_for(&mut g, self.inner.options.fsync_interval);
                }
                g.closing || g.failed.is_some()
            };
            if let Err(e) = self.step(closing) {
                self.inner.fail(e);
                return;
            }
            if closing {
                if let Some(t) = self.snapshotting.take() {
                    let _ = t.join();
                }
                return;
            }
        }
    }

    fn step(&mut self, closing: bool) -> Result<(), KvError> {
        if closing {
            // Whatever a caller appended without waiting for it (none does) goes in before the last sync.
            self.inner.write_buffered(self.inner.file.lock());
        }
        let due = closing || self.last_sync.elapsed() >= self.inner.options.fsync_interval;
        let sync = self.inner.with_file(|j| {
            let path = journal_path(&self.inner.dir, j.current);
            if !(j.unsynced && due) {
                return Ok(None);
            }
            // On a second handle, so that writers go on meanwhile; what they add is synced next time.
            let file = j.file.try_clone().map_err(|e| io_err("cannot sync", &path, e))?;
            j.unsynced = false;
            Ok::<_, KvError>(Some((file, path)))
        })?;
        if let Some((file, path)) = sync {
            file.sync_data().map_err(|e| io_err("cannot sync", &path, e))?;
            self.last_sync = Instant::now();
        }
        if let Some(t) = self.snapshotting.take_if(|t| t.is_finished()) {
            let size = match t.join() {
                Ok(Ok(size)) => Some(size),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a key-value snapshot failed; the journal is kept");
                    None
                }
                Err(_) => {
                    tracing::warn!("a key-value snapshot's thread panicked; the journal is kept");
                    None
                }
            };
            if let Some(size) = size {
                self.inner.with_file(|j| j.snapshot_bytes = size);
            }
        }
        if self.snapshotting.is_none() && !closing {
            let inner = self.inner.clone();
            let mut j = inner.file.lock();
            let due = j.journal_bytes >= inner.options.min_rewrite_bytes.max(2 * j.snapshot_bytes);
            let rotated = if due { self.rotate(&mut j) } else { Ok(()) };
            drop(j);
            // Callers that found the file taken look again.
            inner.progress.send_modify(|_| {});
            rotated?;
        }
        Ok(())
    }

    /// Starts a new journal and writes the state as of its start as a snapshot, on a thread of its own; once that
    /// is in place, the older files are removed.
    fn rotate(&mut self, j: &mut Journal) -> Result<(), KvError> {
        let (mut batch, state, seq) = {
            let mut g = self.inner.shared.lock();
            // Expired keys read as absent and replay as expired: memory is the only reason to drop them, and now
            // is when the whole state is walked anyway.
            g.state.sweep(now_ms());
            (std::mem::take(&mut g.buf), g.state.clone(), g.appended)
        };
        // What was appended before the copy belongs to the old journal.
        let old = journal_path(&self.inner.dir, j.current);
        if !batch.is_empty() {
            j.file.write_all(&batch).map_err(|e| io_err("cannot write", &old, e))?;
            batch.clear();
        }
        j.file.sync_data().map_err(|e| io_err("cannot sync", &old, e))?;
        self.inner.progress.send_modify(|p| p.written = p.written.max(seq));
        let next = j.current + 1;
        let path = journal_path(&self.inner.dir, next);
        j.file =
            OpenOptions::new().append(true).create(true).open(&path).map_err(|e| io_err("cannot create", &path, e))?;
        sync_dir(&self.inner.dir)?;
        j.current = next;
        j.journal_bytes = 0;
        j.unsynced = false;
        self.last_sync = Instant::now();
        let dir = self.inner.dir.clone();
        self.snapshotting = Some(
            std::thread::Builder::new()
                .name("weir-kv-snapshot".into())
                .spawn(move || write_snapshot(&dir, next, &state))
                .map_err(|e| KvError::Journal(format!("cannot start a snapshot: {e}")))?,
        );
        Ok(())
    }
}

/// Writes `snapshot-{n}` (the state at the start of `journal-{n}`) and removes what it replaces; returns its size.
fn write_snapshot(dir: &Path, n: u64, state: &KvState) -> Result<u64, KvError> {
    let started = Instant::now();
    let tmp = dir.join(format!("snapshot-{n}.tmp"));
    let file = File::create(&tmp).map_err(|e| io_err("cannot create", &tmp, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut record = Vec::with_capacity(1024);
    let mut size = 0u64;
    let mut failed = None;
    record.extend_from_slice(&[0; 8]);
    state.write_snapshot(now_ms(), &mut record, |record| {
        // One record an entry: a snapshot is read back whole, so the framing only has to catch damage.
        seal(record, 0);
        if failed.is_none() {
            if let Err(e) = out.write_all(record) {
                failed = Some(e);
            }
        }
        size += record.len() as u64;
        record.truncate(8);
    });
    if let Some(e) = failed {
        return Err(io_err("cannot write", &tmp, e));
    }
    let file = out.into_inner().map_err(|e| io_err("cannot write", &tmp, e.into_error()))?;
    file.sync_all().map_err(|e| io_err("cannot sync", &tmp, e))?;
    let path = snapshot_path(dir, n);
    std::fs::rename(&tmp, &path).map_err(|e| io_err("cannot rename", &tmp, e))?;
    sync_dir(dir)?;
    for old in numbered(dir, "journal-")?.into_iter().filter(|&j| j < n) {
        let _ = std::fs::remove_file(journal_path(dir, old));
    }
    for old in numbered(dir, "snapshot-")?.into_iter().filter(|&s| s < n) {
        let _ = std::fs::remove_file(snapshot_path(dir, old));
    }
    tracing::debug!(snapshot = %path.display(), bytes = size, took_ms = started.elapsed().as_millis() as u64, "key-value snapshot written");
    Ok(size)
}

super::kv_over_state!(JournalKv);
