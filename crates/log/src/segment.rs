//! One segment: a file of consecutive batches named by its base offset (`00000000000000000042.log`), with its offset
//! index (`.index`) and time index (`.timeindex`). Only the log's single appender writes to it; readers use positional
//! reads below the published `size`, so they never see a half-written batch and never take the appender's lock.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchHeader, HEADER_LEN};
use crate::error::{LogError, Result};
use crate::index::{Index, OffsetEntry, TimeEntry};

/// Where one appended batch landed, for index maintenance.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placed {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub position: u64,
    pub len: u64,
}

/// A producer's batch found by a scan, and for a control batch the transaction marker it holds.
pub(crate) type ProducerBatch = (BatchHeader, Option<batch::ControlType>);

/// What a recovery scan found.
#[derive(Debug, Default)]
pub(crate) struct ScanOutcome {
    /// Offset after the last valid batch (`None` if the segment holds no batch).
    pub next_offset: Option<i64>,
    /// Bytes of valid batches from the start.
    pub valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub invalid: Option<String>,
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    pub max_timestamp: i64,
    /// Headers of idempotent batches (producer id ≥ 0) with their base offsets, in log order, and for a control
    /// batch the transaction marker it holds.
    pub producer_batches: Vec<ProducerBatch>,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    path: PathBuf,
    file: File,
    size: AtomicU64,
    next_offset: AtomicI64,
    max_timestamp: AtomicI64,
    offset_index: Index<OffsetEntry>,
    time_index: Index<TimeEntry>,
    bytes_since_index: AtomicU64,
    bytes_since_time_index: AtomicU64,
    opened_ms: i64,
}

pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

impl Segment {
    /// Opens (or creates) the segment with this base offset; the caller then scans or trusts it.
    pub(crate) fn open(dir: &Path, base_offset: i64, now_ms: i64) -> Result<(Segment, bool)> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LogError::io("open segment", &path))?;
        let size = file.metadata().map_err(LogError::io("stat segment", &path))?.len();
        let (offset_index, oi_whole) = Index::open(&dir.join(file_name(base_offset, "index")))?;
        let (time_index, ti_whole) = Index::open(&dir.join(file_name(base_offset, "timeindex")))?;
        let seg = Segment {
            base_offset,
            path,
            file,
            size: AtomicU64::new(size),
            next_offset: AtomicI64::new(base_offset),
            max_timestamp: AtomicI64::new(-1),
            offset_index,
            time_index,
            bytes_since_index: AtomicU64::new(0),
            bytes_since_time_index: AtomicU64::new(0),
            opened_ms: now_ms,
        };
        Ok((seg, oi_whole && ti_whole))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    pub(crate) fn opened_ms(&self) -> i64 {
        self.opened_ms
    }

    fn read_exact(&self, pos: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, pos).map_err(LogError::io("read segment", &self.path))?;
        Ok(buf)
    }

    fn header_at(&self, pos: u64) -> Result<BatchHeader> {
        let raw = self.read_exact(pos, HEADER_LEN)?;
        let h = BatchHeader::parse(&raw).expect("HEADER_LEN bytes were read");
        h.check_shape().map_err(|reason| self.corrupt(pos, reason))?;
        Ok(h)
    }

    fn corrupt(&self, position: u64, reason: String) -> LogError {
        LogError::Corrupt { path: self.path.clone(), position, reason }
    }

    /// Reads every batch from the start, checking lengths (and CRCs when `verify_crc`), rebuilding what the indexes
    /// should hold. Stops at the first batch that is torn or invalid.
    pub(crate) fn scan(&self, index_interval: u32, verify_crc: bool) -> Result<ScanOutcome> {
        const CHUNK: usize = 8 << 20;
        let file_len = self.file.metadata().map_err(LogError::io("stat segment", &self.path))?.len();
        let mut out = ScanOutcome { max_timestamp: -1, ..Default::default() };
        let (mut since_index, mut since_time) = (u64::MAX / 2, u64::MAX / 2);
        let mut pos = 0u64;
        let mut expected_base = self.base_offset;
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_pos = 0u64; // file position of buf[0]
        while pos < file_len {
            let need_header = (pos + HEADER_LEN as u64).min(file_len);
            if need_header - pos < HEADER_LEN as u64 {
                out.invalid = Some(format!("{} trailing bytes are shorter than a batch header", file_len - pos));
                break;
            }
            // Refill the buffer when the next header is not wholly inside it.
            if pos < buf_pos || pos + HEADER_LEN as u64 > buf_pos + buf.len() as u64 {
                let len = (file_len - pos).min(CHUNK as u64) as usize;
                buf = self.read_exact(pos, len)?;
                buf_pos = pos;
            }
            let at = (pos - buf_pos) as usize;
            let header = BatchHeader::parse(&buf[at..]).expect("header bytes are buffered");
            let len = match check_in_file(&header, file_len - pos, expected_base) {
                Ok(len) => len,
                Err(reason) => {
                    out.invalid = Some(reason);
                    break;
                }
            };
            if verify_crc {
                let bytes = if at + len as usize <= buf.len() {
                    &buf[at..at + len as usize]
                } else {
                    buf = self.read_exact(pos, (len as usize).max(CHUNK.min((file_len - pos) as usize)))?;
                    buf_pos = pos;
                    &buf[..len as usize]
                };
                if !batch::crc_matches(bytes, &header) {
                    out.invalid = Some("CRC-32C mismatch".into());
                    break;
                }
            }
            let rel = (header.base_offset - self.base_offset) as u32;
            if since_index >= index_interval as u64 {
                out.offsets.push(OffsetEntry { rel_offset: rel, position: pos as u32 });
                since_index = 0;
            }
            since_index += len;
            since_time += len;
            if header.max_timestamp > out.max_timestamp {
                out.max_timestamp = header.max_timestamp;
                if since_time >= index_interval as u64 {
                    let next_rel = (header.last_offset() + 1 - self.base_offset) as u32;
                    out.times.push(TimeEntry { timestamp: out.max_timestamp, rel_offset: next_rel });
                    since_time = 0;
                }
            }
            if header.producer_id >= 0 {
                let marker = if header.is_control() {
                    batch::control_type(&Bytes::from(self.read_exact(pos, len as usize)?))
                } else {
                    None
                };
                out.producer_batches.push((header, marker));
            }
            expected_base = header.last_offset() + 1;
            out.next_offset = Some(expected_base);
            pos += len;
            out.valid_len = pos;
        }
        Ok(out)
    }

    /// Adopts a scan's result: truncates anything after the valid prefix and rewrites the indexes.
    pub(crate) fn adopt_scan(&self, scan: &ScanOutcome) -> Result<()> {
        self.file.set_len(scan.valid_len).map_err(LogError::io("truncate segment", &self.path))?;
        self.offset_index.reset(scan.offsets.clone())?;
        let mut times = scan.times.clone();
        let next = scan.next_offset.unwrap_or(self.base_offset);
        if scan.max_timestamp > times.last().map_or(-1, |t| t.timestamp) {
            times.push(TimeEntry { timestamp: scan.max_timestamp, rel_offset: (next - self.base_offset) as u32 });
        }
        self.time_index.reset(times)?;
        self.size.store(scan.valid_len, Ordering::Release);
        self.next_offset.store(next, Ordering::Release);
        self.max_timestamp.store(scan.max_timestamp, Ordering::Release);
        // Start a fresh index interval after recovery: the next append gets an entry.
        self.bytes_since_index.store(u64::MAX / 2, Ordering::Relaxed);
        self.bytes_since_time_index.store(u64::MAX / 2, Ordering::Relaxed);
        Ok(())
    }

    /// Trusts the indexes of a cleanly closed or sealed segment: checks them against the file, then walks batch
    /// headers from the last index entry to the end. `Ok(false)` means they do not fit and a scan is needed.
    pub(crate) fn open_trusted(&self) -> Result<bool> {
        let size = self.size();
        let entries = self.offset_index.entries()?;
        let sane = entries.windows(2).all(|w| w[0].rel_offset < w[1].rel_offset && w[0].position < w[1].position)
            && entries.last().is_none_or(|e| (e.position as u64) < size);
        if !sane || (size > 0 && entries.is_empty()) {
            return Ok(false);
        }
        let mut pos = entries.last().map_or(0, |e| e.position as u64);
        let mut next = self.base_offset;
        while pos < size {
            if size - pos < HEADER_LEN as u64 {
                return Ok(false);
            }
            let h = match self.header_at(pos) {
                Ok(h) => h,
                Err(_) => return Ok(false),
            };
            next = h.last_offset() + 1;
            pos += h.total_len() as u64;
        }
        if pos != size {
            return Ok(false);
        }
        let max_ts = match self.time_index.last() {
            Some(t) => t.timestamp,
            None if size == 0 => -1,
            None => return Ok(false),
        };
        self.next_offset.store(next, Ordering::Release);
        self.max_timestamp.store(max_ts, Ordering::Release);
        Ok(true)
    }

    /// Writes already-offset-assigned batches at the end. Called only by the log's appender.
    pub(crate) fn append(&self, bytes: &[u8], placed: &[Placed], index_interval: u32) -> Result<()> {
        let pos = self.size();
        if let Err(e) = self.file.write_all_at(bytes, pos) {
            // Cut off whatever part of the write landed, so the next append starts clean; recovery would too.
            let _ = self.file.set_len(pos);
            return Err(LogError::Io { op: "append to", path: self.path.clone(), source: e });
        }
        for p in placed {
            let rel = (p.base_offset - self.base_offset) as u32;
            let since = self.bytes_since_index.load(Ordering::Relaxed);
            if since >= index_interval as u64 {
                self.offset_index.push(OffsetEntry { rel_offset: rel, position: p.position as u32 })?;
                self.bytes_since_index.store(p.len, Ordering::Relaxed);
            } else {
                self.bytes_since_index.store(since + p.len, Ordering::Relaxed);
            }
            let since_time = self.bytes_since_time_index.load(Ordering::Relaxed) + p.len;
            self.bytes_since_time_index.store(since_time, Ordering::Relaxed);
            if p.max_timestamp > self.max_timestamp() {
                self.max_timestamp.store(p.max_timestamp, Ordering::Release);
                if since_time >= index_interval as u64 {
                    let next_rel = (p.last_offset + 1 - self.base_offset) as u32;
                    self.time_index.push(TimeEntry { timestamp: p.max_timestamp, rel_offset: next_rel })?;
                    self.bytes_since_time_index.store(0, Ordering::Relaxed);
                }
            }
        }
        if let Some(last) = placed.last() {
            self.next_offset.store(last.last_offset + 1, Ordering::Release);
        }
        self.size.store(pos + bytes.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Seals the segment: a final time-index entry so its max timestamp survives restart, and its indexes leave
    /// memory. Does not fsync: see [`Segment::sync_all`].
    pub(crate) fn seal(&self) -> Result<()> {
        let max_ts = self.max_timestamp();
        if max_ts > self.time_index.last().map_or(-1, |t| t.timestamp) {
            let rel = (self.next_offset() - self.base_offset) as u32;
            self.time_index.push(TimeEntry { timestamp: max_ts, rel_offset: rel })?;
        }
        self.release_indexes();
        Ok(())
    }

    /// Fsyncs the data and both indexes.
    pub(crate) fn sync_all(&self) -> Result<()> {
        self.sync_data()?;
        self.offset_index.sync()?;
        self.time_index.sync()
    }

    /// Lets a sealed segment's indexes be read from their files instead of memory.
    pub(crate) fn release_indexes(&self) {
        self.offset_index.release_to_disk();
        self.time_index.release_to_disk();
    }

    pub(crate) fn sync_data(&self) -> Result<()> {
        self.file.sync_data().map_err(LogError::io("fsync segment", &self.path))
    }

    /// Byte position of the first batch holding an offset ≥ `offset`, or `None` if no batch below `limit` does.
    fn position_of(&self, offset: i64, limit: u64) -> Result<Option<(u64, BatchHeader)>> {
        let rel = (offset - self.base_offset).max(0) as u32;
        let entry = self.offset_index.floor(|e| e.rel_offset <= rel);
        let mut pos = entry.map_or(0, |e| e.position as u64);
        let mut expected = self.base_offset + entry.map_or(0, |e| e.rel_offset as i64);
        while pos + HEADER_LEN as u64 <= limit {
            let h = self.header_at(pos)?;
            // Offsets are dense; a base offset that breaks the chain is a flipped bit the CRC does not cover.
            if h.base_offset != expected {
                return Err(
                    self.corrupt(pos, format!("batch base offset {} where {expected} was expected", h.base_offset))
                );
            }
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            expected = h.last_offset() + 1;
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Whole batches starting with the one that holds `offset`, up to `max_bytes` (but at least one batch), reading
    /// nothing at or past byte `limit` and no batch holding offsets at or past `end_offset` (the log's published end).
    pub(crate) fn read(&self, offset: i64, max_bytes: usize, limit: u64, end_offset: i64) -> Result<Option<Bytes>> {
        let Some((start, first)) = self.position_of(offset, limit)? else {
            return Ok(None);
        };
        // Batches are published whole: one starting at or past the end is not in the log yet, while one that
        // starts below the end and runs past it is damage (a flipped bit in its offset delta).
        if first.base_offset >= end_offset {
            return Ok(None);
        }
        if first.last_offset() >= end_offset {
            return Err(self.corrupt(start, format!("batch runs past the log's end offset {end_offset}")));
        }
        let first_len = first.total_len() as u64;
        if start + first_len > limit {
            return Err(self.corrupt(start, "batch runs past the end of the segment".into()));
        }
        let want = (max_bytes as u64).max(first_len).min(limit - start) as usize;
        let mut buf = BytesMut::zeroed(want);
        self.file.read_exact_at(&mut buf, start).map_err(LogError::io("read segment", &self.path))?;
        // Cut to whole batches.
        let mut end = 0usize;
        let mut expected = first.base_offset;
        while end + HEADER_LEN <= buf.len() {
            let h = BatchHeader::parse(&buf[end..]).expect("length checked");
            if h.check_shape().is_err() || h.base_offset != expected {
                return Err(self.corrupt(start + end as u64, "malformed batch header".into()));
            }
            if end + h.total_len() > buf.len() || h.base_offset >= end_offset {
                break;
            }
            if h.last_offset() >= end_offset {
                return Err(
                    self.corrupt(start + end as u64, format!("batch runs past the log's end offset {end_offset}"))
                );
            }
            expected = h.last_offset() + 1;
            end += h.total_len();
        }
        buf.truncate(end);
        Ok(Some(buf.freeze()))
    }

    /// The offset to start scanning from to find the first record with timestamp ≥ `ts`.
    pub(crate) fn time_lookup_start(&self, ts: i64) -> i64 {
        self.time_index.floor(|t| t.timestamp < ts).map_or(self.base_offset, |t| self.base_offset + t.rel_offset as i64)
    }

    /// Deletes the segment's files. Readers holding it keep reading the unlinked inode.
    pub(crate) fn delete_files(&self) -> Result<()> {
        for p in [self.path.as_path(), self.offset_index.path(), self.time_index.path()] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::Io { op: "delete", path: p.to_owned(), source: e }),
            }
        }
        Ok(())
    }
}

/// The length of the batch `header` begins, when it can be part of the log: its shape is a batch's, it ends within
/// the `left` bytes of the file, and it starts at `expected_base`, where the previous one ended. Otherwise why not,
/// which is where a scan stops.
fn check_in_file(header: &BatchHeader, left: u64, expected_base: i64) -> Result<u64, String> {
    header.check_shape()?;
    let len = header.total_len() as u64;
    if len > left {
        return Err(format!("batch of {len} bytes is torn ({left} bytes present)"));
    }
    if header.base_offset != expected_base {
        return Err(format!("batch base offset {} is not the expected {expected_base}", header.base_offset));
    }
    Ok(len)
}
