//! A log: one partition's ordered, durable sequence of batches, spread over segments in one directory.
//!
//! Appends are serialised by one lock and written with positional writes; reads never take that lock (they read below
//! the published end of each segment). Durability follows the log's [`FsyncPolicy`]; with `Always`, appenders that arrive
//! while an fsync runs are covered by the next one, so concurrent producers share fsyncs (group commit).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::batch::{self, BatchHeader, Batches, ControlType};
use crate::config::{FsyncPolicy, LogConfig, TimestampType};
use crate::error::{LogError, Result};
use crate::flusher::FlushSignal;
use crate::producer_state::{ProducerStates, Verdict};
use crate::record::{Record, StoredRecord};
use crate::segment::{Placed, ProducerBatch, Segment};
use crate::transactions::{AbortedIndex, AbortedTxn, ReadCommittedFilter};

const CLEAN_SHUTDOWN: &str = ".clean-shutdown";
/// The log start offset DeleteRecords moved past the first segment's base, when it did.
const START_OFFSET_FILE: &str = "log-start-offset";

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker time written into the batches when the log uses LogAppendTime.
    pub log_append_time: Option<i64>,
}

/// Which records a read may return (Kafka's `isolation.level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Everything written, open and aborted transactions included.
    #[default]
    ReadUncommitted,
    /// Only below the last stable offset; the read carries the aborted transactions its records overlap.
    ReadCommitted,
}

/// Whole batches read from the log, as stored.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// Concatenated complete batches; may start below the requested offset (batches are never split).
    pub batches: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// Below this offset every transaction is decided (the end offset when none is open).
    pub last_stable_offset: i64,
    /// For a read_committed read: the aborted transactions whose records the batches may hold, by first offset.
    pub aborted: Vec<AbortedTxn>,
    pub isolation: Isolation,
}

impl ReadResult {
    /// Decodes the records at or after `from_offset`: never the transaction markers, and under read_committed
    /// never an aborted transaction's records.
    pub fn records(&self, from_offset: i64) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        let mut filter = ReadCommittedFilter::new(self.aborted.clone());
        for b in Batches::new(&self.batches) {
            let (header, bytes) = b.map_err(LogError::InvalidBatch)?;
            let keep = match self.isolation {
                Isolation::ReadCommitted => filter.keep(&header, &bytes),
                Isolation::ReadUncommitted => !header.is_control(),
            };
            if keep {
                batch::decode_records(&bytes, from_offset, &mut out).map_err(LogError::InvalidBatch)?;
            }
        }
        Ok(out)
    }
}

/// What happened when the log was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous process closed the log cleanly, so only the tail structure was checked.
    pub clean_shutdown: bool,
    /// Bytes cut from the end of the active segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Why the tail was cut, with file and position.
    pub truncation: Option<String>,
}

/// Segments deleted by retention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

#[derive(Debug)]
struct SyncState {
    /// Every offset below this is on disk.
    durable_offset: i64,
    /// `written_bytes` as of the last completed sync.
    synced_bytes: u64,
    last_sync: Instant,
    in_progress: bool,
}

/// One partition's log. Shared as `Arc<Log>`.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: RwLock<LogConfig>,
    segments: RwLock<BTreeMap<i64, Arc<Segment>>>,
    appender: Mutex<()>,
    start_offset: AtomicI64,
    end_offset: AtomicI64,
    written_bytes: AtomicU64,
    sync: Mutex<SyncState>,
    synced: Condvar,
    flush_signal: OnceLock<Arc<FlushSignal>>,
    /// Segments sealed by a roll whose fsync is still owed. A roll does not wait for it (fsyncing a full 1 GiB segment
    /// under the append lock would stall every producer); the next sync or the flusher pays it.
    unsynced_sealed: Mutex<Vec<Arc<Segment>>>,
    /// Idempotent producers' recent sequences and open transactions; read and updated under the append lock.
    producers: Mutex<ProducerStates>,
    /// The first offset of the earliest open transaction (`i64::MAX` when none is open), published after each append
    /// so readers get the last stable offset without the append lock.
    first_unstable: AtomicI64,
    aborted: Mutex<AbortedIndex>,
    recovery: RecoveryReport,
}

impl Log {
    /// Opens the log in `dir` (creating it if needed), recovering after an unclean stop: the active segment is checked
    /// batch by batch (length, CRC, dense offsets) and a torn or corrupt tail is truncated. A corrupt sealed segment is
    /// an error naming file and position; nothing is deleted to hide it.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Arc<Log>> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(LogError::io("create log directory", &dir))?;
        let now = now_ms();
        let bases = segment_bases(&dir)?;
        let marker = dir.join(CLEAN_SHUTDOWN);
        let clean = marker.exists();
        let mut report = RecoveryReport { clean_shutdown: clean, ..Default::default() };
        let mut segments = BTreeMap::new();
        let mut scanned_tail = None;
        let last_base = *bases.last().expect("at least one base");
        for (i, &base) in bases.iter().enumerate() {
            let (seg, indexes_whole) = Segment::open(&dir, base, now)?;
            let is_last = base == last_base;
            let trusted = indexes_whole && (!is_last || clean) && seg.open_trusted()?;
            if !trusted {
                let rebuilt = recover_segment(&seg, &config, is_last, &mut report)?;
                scanned_tail = rebuilt.or(scanned_tail);
            }
            if let Some(&next_base) = bases.get(i + 1) {
                if seg.next_offset() != next_base {
                    return Err(LogError::Corrupt {
                        path: seg.path().to_owned(),
                        position: seg.size(),
                        reason: format!(
                            "segment ends at offset {} but the next one starts at {next_base}",
                            seg.next_offset()
                        ),
                    });
                }
            }
            if !is_last {
                seg.release_indexes();
            }
            segments.insert(base, Arc::new(seg));
        }
        // A clean close saved the producer state; after a crash it is the last snapshot (taken when the active
        // segment was rolled in, or at the last clean close) plus what the scan of the active segment found after it.
        let (mut producers, at) = ProducerStates::load(&dir);
        let mut aborted = AbortedIndex::load(&dir);
        if let Some(batches) = scanned_tail {
            let end = segments.values().next_back().map_or(0, |s: &Arc<Segment>| s.next_offset());
            let from = match at {
                Some(at) if at >= last_base && at <= end => at,
                _ => {
                    // No snapshot of this segment's start: only what the segment itself shows is known.
                    producers = ProducerStates::default();
                    last_base
                }
            };
            let mut found = Vec::new();
            for (h, marker) in batches.iter().filter(|(h, _)| h.base_offset >= from) {
                found.extend(producers.record(h, h.base_offset, *marker));
            }
            aborted.reconcile(end, &found)?;
        }
        if clean {
            fs::remove_file(&marker).map_err(LogError::io("remove", &marker))?;
            sync_dir(&dir)?;
        }
        let deleted_below = fs::read_to_string(dir.join(START_OFFSET_FILE)).ok().and_then(|s| s.trim().parse().ok());
        let log = Log::with_segments(dir, config, segments, producers, aborted, report);
        if let Some(start) = deleted_below {
            if start > log.start_offset() && start <= log.end_offset() {
                log.start_offset.store(start, Ordering::Release);
            }
        }
        Ok(Arc::new(log))
    }

    /// The log over segments already opened and checked, its end where the last one ends.
    fn with_segments(
        dir: PathBuf,
        config: LogConfig,
        segments: BTreeMap<i64, Arc<Segment>>,
        producers: ProducerStates,
        aborted: AbortedIndex,
        recovery: RecoveryReport,
    ) -> Log {
        let start = *segments.keys().next().expect("at least one segment");
        let end = segments.values().next_back().expect("at least one segment").next_offset();
        Log {
            dir,
            config: RwLock::new(config),
            segments: RwLock::new(segments),
            appender: Mutex::new(()),
            start_offset: AtomicI64::new(start),
            end_offset: AtomicI64::new(end),
            written_bytes: AtomicU64::new(0),
            sync: Mutex::new(SyncState {
                durable_offset: end,
                synced_bytes: 0,
                last_sync: Instant::now(),
                in_progress: false,
            }),
            synced: Condvar::new(),
            flush_signal: OnceLock::new(),
            unsynced_sealed: Mutex::new(Vec::new()),
            first_unstable: AtomicI64::new(producers.first_unstable().unwrap_or(i64::MAX)),
            producers: Mutex::new(producers),
            aborted: Mutex::new(aborted),
            recovery,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn config(&self) -> LogConfig {
        self.config.read().clone()
    }

    pub fn set_config(&self, config: LogConfig) {
        *self.config.write() = config;
    }

    /// The first offset still held (earlier ones were deleted by retention).
    pub fn start_offset(&self) -> i64 {
        self.start_offset.load(Ordering::Acquire)
    }

    /// The offset the next record will get.
    pub fn end_offset(&self) -> i64 {
        self.end_offset.load(Ordering::Acquire)
    }

    /// The last stable offset: below it every transaction is committed or aborted (the end offset when no
    /// transaction is open). read_committed readers read up to here.
    pub fn last_stable_offset(&self) -> i64 {
        let end = self.end_offset();
        self.first_unstable.load(Ordering::Acquire).min(end)
    }

    /// Every producer this partition knows (DescribeProducers): (id, epoch, last sequence or -1, first offset of its
    /// open transaction or -1).
    pub fn producers(&self) -> Vec<(i64, i16, i32, i64)> {
        self.producers.lock().describe()
    }

    /// The producers whose transactions are open here, with the first offset of each.
    pub fn open_transactions(&self) -> Vec<(i64, i64)> {
        self.producers.lock().open_transactions().collect()
    }

    /// Appends a transaction marker for `producer_id` (what the transaction coordinator writes to each partition of
    /// a transaction it commits or aborts). With `fsync=always` it returns once the marker is on disk.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: ControlType,
        coordinator_epoch: i32,
    ) -> Result<AppendInfo> {
        let mut buf = Vec::with_capacity(96);
        batch::encode_control(producer_id, producer_epoch, marker, coordinator_epoch, now_ms(), &mut buf);
        self.append_batches(buf, true)
    }

    /// Every offset below this has been fsynced.
    pub fn durable_offset(&self) -> i64 {
        self.sync.lock().durable_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.read().values().map(|s| s.size()).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    pub(crate) fn set_flush_signal(&self, signal: Arc<FlushSignal>) {
        let _ = self.flush_signal.set(signal);
    }

    /// Appends `records` as one batch. With `fsync=always` this returns only once the batch is on disk.
    pub fn append(&self, records: &[Record]) -> Result<AppendInfo> {
        if records.is_empty() {
            return Err(LogError::InvalidBatch("a batch needs at least one record".into()));
        }
        let mut buf = Vec::new();
        batch::encode(records, now_ms(), &mut buf);
        self.append_batches(buf, true)
    }

    /// Appends one or more encoded RecordBatch v2 batches (their base offsets are overwritten). `trusted` skips the CRC
    /// check for batches this process encoded itself; bytes from the network must pass `trusted = false`.
    pub fn append_batches(&self, mut buf: Vec<u8>, trusted: bool) -> Result<AppendInfo> {
        let config = self.config();
        let mut layout = check_batches(&buf, &config, trusted)?;
        let log_append_time = (config.timestamp_type == TimestampType::LogAppendTime).then(now_ms);
        if let Some(now) = log_append_time {
            for (pos, len, header) in layout.iter_mut() {
                batch::set_log_append_time(&mut buf[*pos..*pos + *len], now);
                header.max_timestamp = now;
            }
        }
        let info = self.write_batches(&config, &mut buf, &layout, log_append_time)?;
        match config.fsync {
            FsyncPolicy::Always => self.sync_to(info.last_offset + 1)?,
            FsyncPolicy::Interval { bytes, .. } => {
                if self.unsynced_bytes() >= bytes {
                    if let Some(signal) = self.flush_signal.get() {
                        signal.wake();
                    }
                }
            }
            FsyncPolicy::Never => {}
        }
        Ok(info)
    }

    /// Under the append lock: answers an idempotent producer's retry with its original offsets, or assigns offsets
    /// to the checked batches laid out in `buf` (rewriting their base offsets), writes them to the active segment in
    /// one write and publishes the new end.
    fn write_batches(
        &self,
        config: &LogConfig,
        buf: &mut [u8],
        layout: &[(usize, usize, BatchHeader)],
        log_append_time: Option<i64>,
    ) -> Result<AppendInfo> {
        let _appending = self.appender.lock();
        let mut producers = self.producers.lock();
        for (_, _, header) in layout {
            if let Verdict::Duplicate { base_offset, last_offset } = producers.check(header)? {
                if layout.len() > 1 {
                    return Err(LogError::InvalidBatch("a retried idempotent batch sent with others".into()));
                }
                // A retry of a batch already stored: acknowledge it again, store nothing.
                return Ok(AppendInfo { base_offset, last_offset, log_append_time: None });
            }
        }
        let base_offset = self.end_offset();
        let total_records: i64 = layout.iter().map(|(_, _, h)| h.last_offset_delta as i64 + 1).sum();
        let active = self.active_for_append(config, buf.len() as u64, total_records, &producers)?;
        let mut next = base_offset;
        let start_pos = active.size();
        let mut placed = Vec::with_capacity(layout.len());
        for (pos, len, header) in layout {
            batch::set_base_offset(&mut buf[*pos..], next);
            let last_offset = next + header.last_offset_delta as i64;
            placed.push(Placed {
                base_offset: next,
                last_offset,
                max_timestamp: header.max_timestamp,
                position: start_pos + *pos as u64,
                len: *len as u64,
            });
            next = last_offset + 1;
        }
        active.append(buf, &placed, config.index_interval_bytes)?;
        for ((pos, len, header), p) in layout.iter().zip(&placed) {
            let marker = if header.is_control() {
                batch::control_type(&Bytes::copy_from_slice(&buf[*pos..*pos + *len]))
            } else {
                None
            };
            if let Some(aborted) = producers.record(header, p.base_offset, marker) {
                self.aborted.lock().push(aborted)?;
            }
        }
        self.first_unstable.store(producers.first_unstable().unwrap_or(i64::MAX), Ordering::Release);
        self.written_bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.end_offset.store(next, Ordering::Release);
        Ok(AppendInfo { base_offset, last_offset: next - 1, log_append_time })
    }

    fn unsynced_bytes(&self) -> u64 {
        let written = self.written_bytes.load(Ordering::Relaxed);
        written.saturating_sub(self.sync.lock().synced_bytes)
    }

    /// The segment the next append goes to, rolling first when the active one is full, too old, or its 32-bit relative
    /// offsets would overflow. Called with the append lock held. A roll also snapshots the producers' state as of the
    /// new segment's start, so recovery after a crash need only scan the segment it lands in.
    fn active_for_append(
        &self,
        config: &LogConfig,
        len: u64,
        records: i64,
        producers: &ProducerStates,
    ) -> Result<Arc<Segment>> {
        let active = self.segments.read().values().next_back().cloned().expect("a log always has a segment");
        let size = active.size();
        let rel_after = self.end_offset() + records - active.base_offset;
        let full = size > 0 && size + len > config.segment_bytes;
        let old = size > 0 && now_ms() - active.opened_ms() >= config.segment_ms as i64;
        if !(full || old || rel_after > u32::MAX as i64) {
            return Ok(active);
        }
        active.seal()?;
        // Owed before the new segment becomes visible, so a syncer that sees the new one also sees this debt.
        self.unsynced_sealed.lock().push(active.clone());
        if let Some(signal) = self.flush_signal.get() {
            signal.wake();
        }
        let base = self.end_offset();
        producers.save(&self.dir, base).map_err(LogError::io("save producer state in", &self.dir))?;
        self.aborted.lock().sync()?;
        let (seg, _) = Segment::open(&self.dir, base, now_ms())?;
        // A leftover file at this base (from a crash during an earlier roll) holds nothing we acknowledged.
        seg.adopt_scan(&Default::default())?;
        let seg = Arc::new(seg);
        self.segments.write().insert(base, seg.clone());
        sync_dir(&self.dir)?;
        Ok(seg)
    }

    /// Blocks until every offset below `offset` is on disk. Concurrent callers share one fsync.
    pub fn sync_to(&self, offset: i64) -> Result<()> {
        let mut st = self.sync.lock();
        loop {
            if st.durable_offset >= offset {
                return Ok(());
            }
            if !st.in_progress {
                break;
            }
            self.synced.wait(&mut st);
        }
        st.in_progress = true;
        drop(st);
        // Read the end, then the active segment, then the sealed ones still owed: anything below `end` is in that
        // active segment or in one sealed before it was replaced, which is then on the owed list.
        let end = self.end_offset();
        let written = self.written_bytes.load(Ordering::Relaxed);
        let active = self.segments.read().values().next_back().cloned().expect("a log always has a segment");
        let started = Instant::now();
        let result = self.sync_sealed().and_then(|_| active.sync_data());
        metrics::histogram!("weir_log_fsync_seconds").record(started.elapsed().as_secs_f64());
        let mut st = self.sync.lock();
        st.in_progress = false;
        if result.is_ok() {
            st.durable_offset = st.durable_offset.max(end);
            st.synced_bytes = st.synced_bytes.max(written);
            st.last_sync = Instant::now();
        }
        self.synced.notify_all();
        drop(st);
        result?;
        // Another syncer may have covered less than we need if it started before our records were written.
        if end < offset {
            return self.sync_to(offset);
        }
        Ok(())
    }

    /// Fsyncs the segments sealed by rolls whose fsync is still owed.
    fn sync_sealed(&self) -> Result<()> {
        let owed: Vec<Arc<Segment>> = self.unsynced_sealed.lock().clone();
        for seg in &owed {
            seg.sync_all()?;
        }
        self.unsynced_sealed.lock().retain(|s| !owed.iter().any(|o| Arc::ptr_eq(o, s)));
        Ok(())
    }

    /// Fsyncs everything appended so far.
    pub fn flush(&self) -> Result<()> {
        self.sync_to(self.end_offset())
    }

    /// Called by the flusher: syncs if the interval policy says it is time.
    pub(crate) fn flush_if_due(&self) -> Result<()> {
        let FsyncPolicy::Interval { ms, bytes } = self.config.read().fsync else {
            // Even `never` gets rolled segments to disk, in the background.
            return self.sync_sealed();
        };
        let unsynced = self.unsynced_bytes();
        let elapsed = self.sync.lock().last_sync.elapsed().as_millis() as u64;
        if unsynced >= bytes || (unsynced > 0 && elapsed >= ms) {
            self.flush()?;
        }
        Ok(())
    }

    /// Syncs everything and marks the directory cleanly closed, so the next open skips the full tail scan.
    pub fn close(&self) -> Result<()> {
        let _appending = self.appender.lock();
        if let Some(active) = self.segments.read().values().next_back() {
            active.seal()?;
            active.sync_all()?;
        }
        self.sync_sealed()?;
        self.producers
            .lock()
            .save(&self.dir, self.end_offset())
            .map_err(LogError::io("save producer state in", &self.dir))?;
        self.aborted.lock().sync()?;
        let marker = self.dir.join(CLEAN_SHUTDOWN);
        fs::write(&marker, b"").map_err(LogError::io("write", &marker))?;
        sync_dir(&self.dir)
    }

    /// Reads whole batches starting with the one holding `offset`, up to `max_bytes` (at least one batch).
    /// At the end of the log the result is empty; outside `start..=end` it is [`LogError::OffsetOutOfRange`].
    /// Only offsets below the end published when the read starts are returned: a segment's size grows before the
    /// log's end moves past the batch just written, so reading up to the file's size could hand out a batch whose
    /// offsets are not yet part of the log (and a consumer would then sit past the end).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult> {
        self.read_isolated(offset, max_bytes, Isolation::ReadUncommitted)
    }

    /// [`Log::read`] at an isolation level: read_committed reads stop at the last stable offset (an offset between
    /// it and the end reads as empty) and carry the aborted transactions the batches returned may hold.
    pub fn read_isolated(&self, offset: i64, max_bytes: usize, isolation: Isolation) -> Result<ReadResult> {
        let (segments, end, stable) = {
            let segs = self.segments.read();
            let start = self.start_offset();
            let stable = self.last_stable_offset();
            let end = self.end_offset();
            if offset < start || offset > end {
                return Err(LogError::OffsetOutOfRange { offset, log_start: start, log_end: end });
            }
            let segments = segs
                .range(..=offset)
                .next_back()
                .into_iter()
                .chain(segs.range(offset + 1..))
                .map(|(_, s)| s.clone())
                .take(2)
                .collect::<Vec<Arc<Segment>>>();
            (segments, end, stable.min(end))
        };
        let upper = match isolation {
            Isolation::ReadUncommitted => end,
            Isolation::ReadCommitted => stable,
        };
        let mut batches = Bytes::new();
        if offset < upper {
            for seg in segments {
                if let Some(bytes) = seg.read(offset, max_bytes, seg.size(), upper)? {
                    batches = bytes;
                    break;
                }
            }
        }
        let aborted = match isolation {
            Isolation::ReadCommitted if !batches.is_empty() => {
                let last = Batches::new(&batches).filter_map(|b| b.ok()).map(|(h, _)| h.last_offset()).last();
                self.aborted.lock().overlapping(offset, last.unwrap_or(offset))
            }
            _ => Vec::new(),
        };
        Ok(ReadResult {
            batches,
            log_start_offset: self.start_offset(),
            log_end_offset: end,
            last_stable_offset: stable,
            aborted,
            isolation,
        })
    }

    /// The earliest offset whose record has a timestamp ≥ `ts`, or `None` if no record does.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<i64>> {
        let mut offset = {
            let segs = self.segments.read();
            let Some(seg) = segs.values().find(|s| s.max_timestamp() >= ts) else {
                return Ok(None);
            };
            seg.time_lookup_start(ts).max(self.start_offset())
        };
        let end = self.end_offset();
        while offset < end {
            let read = match self.read(offset, 1 << 20) {
                Ok(r) => r,
                Err(LogError::OffsetOutOfRange { log_start, .. }) if log_start > offset => {
                    offset = log_start;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if read.batches.is_empty() {
                break;
            }
            for b in Batches::new(&read.batches) {
                let (header, bytes) = b.map_err(LogError::InvalidBatch)?;
                offset = header.last_offset() + 1;
                if header.max_timestamp < ts || header.is_control() {
                    continue;
                }
                if header.is_log_append_time() {
                    return Ok(Some(header.base_offset));
                }
                let mut records = Vec::new();
                batch::decode_records(&bytes, 0, &mut records).map_err(LogError::InvalidBatch)?;
                if let Some(r) = records.iter().find(|r| r.timestamp >= ts) {
                    return Ok(Some(r.offset));
                }
            }
        }
        Ok(None)
    }

    /// DeleteRecords: moves the log start offset up to `offset` (the end at most), so nothing below it is read any
    /// more, and deletes the sealed segments wholly below it (the space is reclaimed segment by segment, as in
    /// Kafka). The new start is fsynced before it is answered and survives restarts. Returns the log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64> {
        let doomed = {
            let _appending = self.appender.lock();
            let (start, end) = (self.start_offset(), self.end_offset());
            if offset < 0 || offset > end {
                return Err(LogError::OffsetOutOfRange { offset, log_start: start, log_end: end });
            }
            if offset <= start {
                return Ok(start);
            }
            let path = self.dir.join(START_OFFSET_FILE);
            let tmp = self.dir.join(format!("{START_OFFSET_FILE}.tmp"));
            fs::write(&tmp, offset.to_string()).map_err(LogError::io("write", &tmp))?;
            fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(LogError::io("fsync", &tmp))?;
            fs::rename(&tmp, &path).map_err(LogError::io("rename", &tmp))?;
            sync_dir(&self.dir)?;
            let mut segs = self.segments.write();
            let bases: Vec<i64> = segs.keys().copied().collect();
            let doomed: Vec<Arc<Segment>> =
                bases.windows(2).filter(|w| w[1] <= offset).filter_map(|w| segs.remove(&w[0])).collect();
            self.unsynced_sealed.lock().retain(|s| !doomed.iter().any(|d| Arc::ptr_eq(d, s)));
            self.start_offset.store(offset, Ordering::Release);
            self.aborted.lock().retain_from(offset)?;
            doomed
        };
        for seg in doomed {
            seg.delete_files()?;
        }
        Ok(offset)
    }

    /// Deletes whole sealed segments that retention no longer covers: older than `retention.ms` (by their newest
    /// record) or beyond `retention.bytes` of total size. The active segment is never deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let config = self.config();
        if !config.delete {
            // A compacted log keeps its records (see `LogConfig::compact`).
            return Ok(RetentionOutcome::default());
        }
        let doomed: Vec<Arc<Segment>> = {
            let _appending = self.appender.lock();
            let mut segs = self.segments.write();
            let mut total: u64 = segs.values().map(|s| s.size()).sum();
            let sealed = segs.len().saturating_sub(1);
            let mut doomed = Vec::new();
            for seg in segs.values().take(sealed) {
                let expired = config.retention_ms.is_some_and(|r| now_ms - seg.max_timestamp() > r as i64);
                let oversize = config.retention_bytes.is_some_and(|r| total - seg.size() >= r);
                if !(expired || oversize) {
                    break;
                }
                total -= seg.size();
                doomed.push(seg.clone());
            }
            for seg in &doomed {
                segs.remove(&seg.base_offset);
            }
            self.unsynced_sealed.lock().retain(|s| !doomed.iter().any(|d| Arc::ptr_eq(d, s)));
            let start = *segs.keys().next().expect("the active segment remains");
            // Never below where DeleteRecords moved it.
            let start = start.max(self.start_offset());
            self.start_offset.store(start, Ordering::Release);
            self.aborted.lock().retain_from(start)?;
            doomed
        };
        let mut outcome = RetentionOutcome::default();
        for seg in doomed {
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += seg.size();
            seg.delete_files()?;
        }
        Ok(outcome)
    }
}

/// Cuts `buf` into batches, as (position, length, header), checking each as the log will rely on it: its shape and
/// size, and, unless `trusted` (encoded by this process), its CRC and records.
fn check_batches(buf: &[u8], config: &LogConfig, trusted: bool) -> Result<Vec<(usize, usize, BatchHeader)>> {
    let mut layout = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let header = BatchHeader::parse(&buf[pos..])
            .ok_or_else(|| LogError::InvalidBatch("trailing bytes shorter than a batch header".into()))?;
        header.check_shape().map_err(LogError::InvalidBatch)?;
        let len = header.total_len();
        if pos + len > buf.len() {
            return Err(LogError::InvalidBatch(format!("batch claims {len} bytes, {} present", buf.len() - pos)));
        }
        if len > config.max_message_bytes {
            return Err(LogError::RecordTooLarge { size: len, max: config.max_message_bytes });
        }
        if header.record_count == 0 || header.last_offset_delta != header.record_count - 1 {
            return Err(LogError::InvalidBatch("record count and last offset delta disagree".into()));
        }
        if !trusted {
            // Everything a reader will rely on, checked before the batch becomes part of the log: one whose
            // header promises records its body does not hold would stop every consumer that reaches it.
            let bytes = &buf[pos..pos + len];
            if !batch::crc_matches(bytes, &header) {
                return Err(LogError::InvalidBatch("CRC-32C mismatch".into()));
            }
            batch::validate_records(bytes, &header).map_err(LogError::InvalidRecord)?;
        }
        layout.push((pos, len, header));
        pos += len;
    }
    if layout.is_empty() {
        return Err(LogError::InvalidBatch("no batch to append".into()));
    }
    Ok(layout)
}

/// The base offsets of the segments in `dir`, ascending; `[0]` for a new log.
fn segment_bases(dir: &Path) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(LogError::io("list log directory", dir))? {
        let entry = entry.map_err(LogError::io("list log directory", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(base) = stem.parse::<i64>() {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    if bases.is_empty() {
        bases.push(0);
    }
    Ok(bases)
}

/// Rescans a segment whose indexes cannot be trusted and rebuilds them. Damage in a sealed segment is an error
/// naming file and position (it held acknowledged records: cutting it would lose them silently); in the active one
/// it is a torn or corrupt tail, cut off and noted in `report`. For the active segment, also returns its producers'
/// batches (with the marker of each control batch), from which their state is rebuilt.
fn recover_segment(
    seg: &Segment,
    config: &LogConfig,
    is_last: bool,
    report: &mut RecoveryReport,
) -> Result<Option<Vec<ProducerBatch>>> {
    let scan = seg.scan(config.index_interval_bytes, true)?;
    if let Some(reason) = &scan.invalid {
        if !is_last {
            return Err(LogError::Corrupt {
                path: seg.path().to_owned(),
                position: scan.valid_len,
                reason: reason.clone(),
            });
        }
        report.truncated_bytes = seg.size() - scan.valid_len;
        report.truncation = Some(format!("{} at byte {}: {reason}", seg.path().display(), scan.valid_len));
        tracing::warn!(
            segment = %seg.path().display(),
            position = scan.valid_len,
            truncated_bytes = report.truncated_bytes,
            "recovery truncated the log tail: {reason}"
        );
    }
    seg.adopt_scan(&scan)?;
    Ok(is_last.then_some(scan.producer_batches))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(LogError::io("fsync directory", dir))
}
