//! Kafka's RecordBatch v2 ("magic 2") format: the unit weir stores on disk, so the Kafka listener can serve fetches from
//! the stored bytes without re-encoding.
//!
//! Layout (big-endian): baseOffset i64 · batchLength i32 · partitionLeaderEpoch i32 · magic i8 · crc u32 ·
//! attributes i16 · lastOffsetDelta i32 · baseTimestamp i64 · maxTimestamp i64 · producerId i64 ·
//! producerEpoch i16 · baseSequence i32 · recordCount i32 · records. The CRC-32C covers everything from
//! `attributes` to the end, so the broker may rewrite `baseOffset` and `partitionLeaderEpoch` without recomputing it.

use bytes::Bytes;

use crate::record::{Header, Record, StoredRecord};
use crate::varint::{get_varint, get_varlong, put_varint, put_varlong, varint_len, varlong_len};

/// Bytes before `batchLength`'s payload starts: baseOffset + batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed batch header, up to and including recordCount.
pub const HEADER_LEN: usize = 61;
pub(crate) const MAGIC: i8 = 2;

const OFF_LENGTH: usize = 8;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORD_COUNT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// What a control batch marks: the end of a producer's transaction on this partition (Kafka's `ControlRecordType`:
/// the control record's key is `version i16 · type i16`, 0 for ABORT and 1 for COMMIT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

/// The fixed fields of a batch, parsed from its first [`HEADER_LEN`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the length field; the whole batch is `LOG_OVERHEAD + batch_length` bytes.
    pub batch_length: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parses the header at the start of `b`. `None` if fewer than [`HEADER_LEN`] bytes are given.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < HEADER_LEN {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(b, 0),
            batch_length: be_i32(b, OFF_LENGTH),
            magic: b[OFF_MAGIC] as i8,
            crc: be_i32(b, OFF_CRC) as u32,
            attributes: be_i16(b, OFF_ATTRIBUTES),
            last_offset_delta: be_i32(b, OFF_LAST_OFFSET_DELTA),
            base_timestamp: be_i64(b, OFF_BASE_TIMESTAMP),
            max_timestamp: be_i64(b, OFF_MAX_TIMESTAMP),
            producer_id: be_i64(b, OFF_PRODUCER_ID),
            producer_epoch: be_i16(b, OFF_PRODUCER_EPOCH),
            base_sequence: be_i32(b, OFF_BASE_SEQUENCE),
            record_count: be_i32(b, OFF_RECORD_COUNT),
        })
    }

    /// Total bytes of the batch on disk.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }

    /// Part of a transaction (records a read_committed consumer may have to hide, or a transaction's marker).
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// A control batch: a transaction marker the broker wrote, never a client's records.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Checks what can be checked without the body: magic, a plausible length, a consistent count.
    pub fn check_shape(&self) -> Result<(), String> {
        if self.magic != MAGIC {
            return Err(format!("magic byte is {}, expected 2", self.magic));
        }
        if (self.batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(format!("batch length {} is shorter than a batch header", self.batch_length));
        }
        if self.last_offset_delta < 0 || self.record_count < 0 {
            return Err("negative record count or offset delta".into());
        }
        Ok(())
    }
}

/// Verifies the CRC-32C of a complete batch (`bytes` holds exactly one batch).
pub fn crc_matches(bytes: &[u8], header: &BatchHeader) -> bool {
    bytes.len() >= HEADER_LEN && crc32c::crc32c(&bytes[OFF_ATTRIBUTES..]) == header.crc
}

/// Validates one complete batch: shape, length and CRC.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, String> {
    let header = BatchHeader::parse(bytes).ok_or("batch shorter than its header")?;
    header.check_shape()?;
    if header.total_len() != bytes.len() {
        return Err(format!("batch length field says {} bytes, {} present", header.total_len(), bytes.len()));
    }
    if !crc_matches(bytes, &header) {
        return Err("CRC-32C mismatch".into());
    }
    Ok(header)
}

/// Rewrites a batch's base offset in place (not covered by the CRC).
pub fn set_base_offset(bytes: &mut [u8], base_offset: i64) {
    bytes[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Marks a batch as LogAppendTime with `now_ms` as its timestamp, recomputing the CRC.
pub fn set_log_append_time(bytes: &mut [u8], now_ms: i64) {
    let attrs = be_i16(bytes, OFF_ATTRIBUTES) | ATTR_LOG_APPEND_TIME;
    bytes[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    bytes[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[OFF_ATTRIBUTES..]);
    bytes[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Facts about a batch the encoder produced.
#[derive(Clone, Copy, Debug)]
pub struct EncodedInfo {
    pub record_count: i32,
    pub max_timestamp: i64,
}

fn record_body_len(r: &Record, ts_delta: i64, offset_delta: i32) -> usize {
    let mut n = 1 + varlong_len(ts_delta) + varint_len(offset_delta);
    n += match &r.key {
        Some(k) => varint_len(k.len() as i32) + k.len(),
        None => 1,
    };
    n += match &r.value {
        Some(v) => varint_len(v.len() as i32) + v.len(),
        None => 1,
    };
    n += varint_len(r.headers.len() as i32);
    for h in &r.headers {
        n += varint_len(h.key.len() as i32) + h.key.len();
        n += match &h.value {
            Some(v) => varint_len(v.len() as i32) + v.len(),
            None => 1,
        };
    }
    n
}

fn put_nullable(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.extend_from_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

/// Appends one uncompressed batch holding `records` to `buf`, with base offset 0 (the log assigns the real one).
/// Records without a timestamp get `now_ms`. `records` must not be empty.
pub fn encode(records: &[Record], now_ms: i64, buf: &mut Vec<u8>) -> EncodedInfo {
    debug_assert!(!records.is_empty());
    let start = buf.len();
    let ts = |r: &Record| r.timestamp.unwrap_or(now_ms);
    let base_ts = records.first().map(ts).unwrap_or(now_ms);
    let max_ts = records.iter().map(ts).max().unwrap_or(now_ms);
    buf.reserve(HEADER_LEN + records.len() * 16);
    buf.extend_from_slice(&0i64.to_be_bytes()); // base offset
    buf.extend_from_slice(&0i32.to_be_bytes()); // batch length, patched below
    buf.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    buf.push(MAGIC as u8);
    buf.extend_from_slice(&0u32.to_be_bytes()); // crc, patched below
    buf.extend_from_slice(&0i16.to_be_bytes()); // attributes: uncompressed, CreateTime
    buf.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
    buf.extend_from_slice(&base_ts.to_be_bytes());
    buf.extend_from_slice(&max_ts.to_be_bytes());
    buf.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    buf.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    buf.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    buf.extend_from_slice(&(records.len() as i32).to_be_bytes());
    for (i, r) in records.iter().enumerate() {
        let ts_delta = ts(r) - base_ts;
        let body = record_body_len(r, ts_delta, i as i32);
        buf.reserve(body + 5);
        put_varint(buf, body as i32);
        buf.push(0); // record attributes
        put_varlong(buf, ts_delta);
        put_varint(buf, i as i32);
        put_nullable(buf, r.key.as_deref());
        put_nullable(buf, r.value.as_deref());
        put_varint(buf, r.headers.len() as i32);
        for h in &r.headers {
            put_nullable(buf, Some(h.key.as_bytes()));
            put_nullable(buf, h.value.as_deref());
        }
    }
    let len = (buf.len() - start - LOG_OVERHEAD) as i32;
    buf[start + OFF_LENGTH..start + OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&buf[start + OFF_ATTRIBUTES..]);
    buf[start + OFF_CRC..start + OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    EncodedInfo { record_count: records.len() as i32, max_timestamp: max_ts }
}

/// Appends one batch of `records` from an idempotent producer (`producer_id` at `producer_epoch`, its first record
/// numbered `base_sequence`), marked transactional when `transactional`: what a Kafka client's idempotent or
/// transactional producer sends, for in-process producers that take part in transactions.
pub fn encode_for_producer(
    records: &[Record],
    now_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    buf: &mut Vec<u8>,
) -> EncodedInfo {
    let start = buf.len();
    let info = encode(records, now_ms, buf);
    let b = &mut buf[start..];
    if transactional {
        b[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&ATTR_TRANSACTIONAL.to_be_bytes());
    }
    b[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    b[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    b[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[OFF_ATTRIBUTES..]);
    b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    info
}

/// Appends a control batch ending `producer_id`'s transaction (a COMMIT or ABORT marker, as Kafka's transaction
/// coordinator writes them): one record whose key is `version 0 · type` and whose value is `version 0 ·
/// coordinator_epoch`, in a batch marked transactional and control, with base sequence -1.
pub fn encode_control(
    producer_id: i64,
    producer_epoch: i16,
    marker: ControlType,
    coordinator_epoch: i32,
    now_ms: i64,
    buf: &mut Vec<u8>,
) {
    let kind: i16 = match marker {
        ControlType::Abort => 0,
        ControlType::Commit => 1,
    };
    let key = [0i16.to_be_bytes(), kind.to_be_bytes()].concat();
    let value = [&0i16.to_be_bytes()[..], &coordinator_epoch.to_be_bytes()].concat();
    let start = buf.len();
    encode(
        &[Record { key: Some(key.into()), value: Some(value.into()), headers: Vec::new(), timestamp: None }],
        now_ms,
        buf,
    );
    let b = &mut buf[start..];
    let attrs = ATTR_TRANSACTIONAL | ATTR_CONTROL;
    b[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    b[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    b[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    let crc = crc32c::crc32c(&b[OFF_ATTRIBUTES..]);
    b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The marker a control batch holds, read from its first record's key; `None` if `batch` is not a control batch or
/// its key is not a known control type.
pub fn control_type(batch: &Bytes) -> Option<ControlType> {
    let header = BatchHeader::parse(batch)?;
    if !header.is_control() || header.compression() != 0 {
        return None;
    }
    let mut kind = None;
    parse_records(&header, batch, HEADER_LEN, i64::MIN, |r| {
        kind = match r.key.as_deref() {
            Some([0, 0, 0, 0]) => Some(ControlType::Abort),
            Some([0, 0, 0, 1]) => Some(ControlType::Commit),
            _ => None,
        };
        false
    })
    .ok()?;
    kind
}

/// Iterates over the complete batches in a buffer of concatenated batches, such as a read result.
/// A trailing partial batch is ignored; a malformed header ends the iteration with an error.
#[derive(Debug)]
pub struct Batches<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a Bytes) -> Self {
        Batches { buf, pos: 0 }
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<(BatchHeader, Bytes), String>;
    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        let header = BatchHeader::parse(rest)?;
        if let Err(e) = header.check_shape() {
            self.pos = self.buf.len();
            return Some(Err(e));
        }
        let len = header.total_len();
        if rest.len() < len {
            return None;
        }
        let bytes = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Some(Ok((header, bytes)))
    }
}

/// Decodes the records of one complete batch, skipping those below `min_offset`. The CRC is verified first.
pub fn decode_records(batch: &Bytes, min_offset: i64, out: &mut Vec<StoredRecord>) -> Result<(), String> {
    out.reserve(BatchHeader::parse(batch).map_or(0, |h| h.record_count.clamp(0, 1 << 16) as usize));
    for_each_record(batch, min_offset, |r| {
        out.push(r);
        true
    })
}

/// Hands each record of one complete batch at or after `min_offset` to `f`, without collecting them; `f` returns
/// `false` to stop early. The CRC is verified first, so a damaged batch yields nothing.
pub fn for_each_record(batch: &Bytes, min_offset: i64, f: impl FnMut(StoredRecord) -> bool) -> Result<(), String> {
    let header = validate(batch)?;
    match header.compression() {
        0 => parse_records(&header, batch, HEADER_LEN, min_offset, f),
        codec => {
            // Clients compress the records section; the batch header stays plain.
            let records = Bytes::from(decompress(codec, &batch[HEADER_LEN..])?);
            parse_records(&header, &records, 0, min_offset, f)
        }
    }
}

/// The most a compressed batch may expand to; a larger one is refused rather than exhausting memory.
const MAX_DECOMPRESSED: u64 = 256 << 20;

fn read_capped(r: impl std::io::Read, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(MAX_DECOMPRESSED + 1).read_to_end(&mut out).map_err(|e| format!("{what} decompression failed: {e}"))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(format!("{what} batch expands past {MAX_DECOMPRESSED} bytes"));
    }
    Ok(out)
}

/// Decompresses a records section with Kafka's codecs: 1 gzip, 2 snappy (raw, or Java's xerial framing),
/// 3 lz4 (frame format), 4 zstd.
fn decompress(codec: i16, data: &[u8]) -> Result<Vec<u8>, String> {
    const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
    match codec {
        1 => read_capped(flate2::read::GzDecoder::new(data), "gzip"),
        2 if data.starts_with(XERIAL_MAGIC) => {
            // Magic, version, compatible version, then blocks of (big-endian length, raw snappy block).
            let mut pos = XERIAL_MAGIC.len() + 8;
            let mut out = Vec::new();
            while pos < data.len() {
                let len_bytes = data.get(pos..pos + 4).ok_or("truncated snappy block length")?;
                let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
                let block = data.get(pos + 4..pos + 4 + len).ok_or("truncated snappy block")?;
                let n = snap::raw::decompress_len(block).map_err(|e| format!("snappy: {e}"))?;
                if (out.len() + n) as u64 > MAX_DECOMPRESSED {
                    return Err("snappy batch expands too far".into());
                }
                out.extend(snap::raw::Decoder::new().decompress_vec(block).map_err(|e| format!("snappy: {e}"))?);
                pos += 4 + len;
            }
            Ok(out)
        }
        2 => {
            let n = snap::raw::decompress_len(data).map_err(|e| format!("snappy: {e}"))?;
            if n as u64 > MAX_DECOMPRESSED {
                return Err("snappy batch expands too far".into());
            }
            snap::raw::Decoder::new().decompress_vec(data).map_err(|e| format!("snappy: {e}"))
        }
        3 => read_capped(lz4_flex::frame::FrameDecoder::new(data), "lz4"),
        4 => read_capped(zstd::stream::read::Decoder::new(data).map_err(|e| format!("zstd: {e}"))?, "zstd"),
        other => Err(format!("unknown compression codec {other}")),
    }
}

/// One record's fields as positions in the records section, before anything is copied out of it.
#[derive(Clone, Copy, Debug)]
struct RawRecord {
    ts_delta: i64,
    offset_delta: i32,
    key: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
    header_count: usize,
    /// Where the headers start; they end where the record does.
    headers_at: usize,
    end: usize,
}

/// Walks the records of a batch's (decompressed) records section `b` from `start`, checking that they are what the
/// header claims: exactly `record_count` of them with offset deltas 0, 1, 2…, each record's length matching its
/// fields, header keys present and UTF-8, and nothing after the last record. `f` gets each record and returns false
/// to stop early (the rest is then not checked).
fn walk_records(
    header: &BatchHeader,
    b: &[u8],
    start: usize,
    mut f: impl FnMut(&RawRecord) -> bool,
) -> Result<(), String> {
    let bad = |what: &str| format!("malformed record in batch at offset {}: {what}", header.base_offset);
    let mut pos = start;
    for i in 0..header.record_count {
        let len = get_varint(b, &mut pos).ok_or_else(|| bad("length"))?;
        if len < 0 || len as usize > b.len() - pos {
            return Err(bad("length past end of batch"));
        }
        let end = pos + len as usize;
        if pos == end {
            return Err(bad("empty record"));
        }
        pos += 1; // attributes: unused in v2
        let ts_delta = get_varlong(&b[..end], &mut pos).ok_or_else(|| bad("timestamp"))?;
        let offset_delta = get_varint(&b[..end], &mut pos).ok_or_else(|| bad("offset delta"))?;
        if offset_delta != i {
            return Err(bad(&format!("offset delta {offset_delta} where {i} was expected")));
        }
        let key = nullable_at(b, &mut pos, end).ok_or_else(|| bad("key"))?;
        let value = nullable_at(b, &mut pos, end).ok_or_else(|| bad("value"))?;
        let n_headers = get_varint(&b[..end], &mut pos).ok_or_else(|| bad("header count"))?;
        if n_headers < 0 || n_headers as usize > end - pos {
            return Err(bad("header count"));
        }
        let headers_at = pos;
        for _ in 0..n_headers {
            let (k0, k1) = nullable_at(b, &mut pos, end).flatten().ok_or_else(|| bad("header key"))?;
            std::str::from_utf8(&b[k0..k1]).map_err(|_| bad("header key is not UTF-8"))?;
            nullable_at(b, &mut pos, end).ok_or_else(|| bad("header value"))?;
        }
        if pos != end {
            return Err(bad("record length disagrees with its fields"));
        }
        let raw = RawRecord { ts_delta, offset_delta, key, value, header_count: n_headers as usize, headers_at, end };
        if !f(&raw) {
            return Ok(());
        }
    }
    if pos != b.len() {
        return Err(bad(&format!("{} bytes after the last of its {} records", b.len() - pos, header.record_count)));
    }
    Ok(())
}

/// Parses the records of a batch from `buf` starting at `start`, handing those at or after `min_offset` to `f`.
fn parse_records(
    header: &BatchHeader,
    buf: &Bytes,
    start: usize,
    min_offset: i64,
    mut f: impl FnMut(StoredRecord) -> bool,
) -> Result<(), String> {
    let log_append = header.is_log_append_time();
    let slice = |r: Option<(usize, usize)>| r.map(|(a, b)| buf.slice(a..b));
    walk_records(header, buf, start, |raw| {
        let offset = header.base_offset + raw.offset_delta as i64;
        if offset < min_offset {
            return true;
        }
        let mut headers = Vec::with_capacity(raw.header_count);
        let mut pos = raw.headers_at;
        for _ in 0..raw.header_count {
            // Checked by the walk: the key is present and UTF-8.
            let (k0, k1) = nullable_at(buf, &mut pos, raw.end).flatten().unwrap_or((0, 0));
            let value = nullable_at(buf, &mut pos, raw.end).flatten();
            let key = String::from_utf8_lossy(&buf[k0..k1]).into_owned();
            headers.push(Header { key, value: slice(value) });
        }
        let timestamp = if log_append { header.max_timestamp } else { header.base_timestamp + raw.ts_delta };
        f(StoredRecord { offset, timestamp, key: slice(raw.key), value: slice(raw.value), headers })
    })
}

/// Checks the records of a batch from a client (whose CRC the caller has checked) before it is appended, as Kafka's
/// broker does: a known codec, no control batch, and records that match the header (see `walk_records`); a
/// compressed batch is decompressed to check them. A batch that passes can be decoded by every reader.
pub fn validate_records(bytes: &[u8], header: &BatchHeader) -> Result<(), String> {
    if header.attributes & ATTR_CONTROL != 0 {
        return Err("a client's batch cannot hold control records".into());
    }
    if header.record_count == 0 || header.last_offset_delta != header.record_count - 1 {
        return Err("record count and last offset delta disagree".into());
    }
    match header.compression() {
        0 => walk_records(header, bytes, HEADER_LEN, |_| true),
        codec => walk_records(header, &decompress(codec, &bytes[HEADER_LEN..])?, 0, |_| true),
    }
}

/// Reads a varint-length-prefixed nullable byte string ending by `end`, as its byte range; `Some(None)` is a null.
fn nullable_at(b: &[u8], pos: &mut usize, end: usize) -> Option<Option<(usize, usize)>> {
    let len = get_varint(&b[..end], pos)?;
    if len < 0 {
        return Some(None);
    }
    let stop = pos.checked_add(len as usize)?;
    if stop > end {
        return None;
    }
    let range = (*pos, stop);
    *pos = stop;
    Some(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            proptest::collection::vec(
                ("[a-z]{0,8}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))),
                0..3,
            ),
            proptest::option::of(0i64..4_000_000_000_000),
        )
            .prop_map(|(k, v, h, ts)| Record {
                key: k.map(Bytes::from),
                value: v.map(Bytes::from),
                headers: h.into_iter().map(|(k, v)| Header { key: k, value: v.map(Bytes::from) }).collect(),
                timestamp: ts,
            })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(records in proptest::collection::vec(arb_record(), 1..20), base in 0i64..1_000_000) {
            let mut buf = Vec::new();
            encode(&records, 1_700_000_000_000, &mut buf);
            set_base_offset(&mut buf, base);
            let bytes = Bytes::from(buf);
            let header = validate(&bytes).unwrap();
            prop_assert_eq!(header.record_count as usize, records.len());
            let mut out = Vec::new();
            decode_records(&bytes, 0, &mut out).unwrap();
            prop_assert_eq!(out.len(), records.len());
            for (i, (r, s)) in records.iter().zip(&out).enumerate() {
                prop_assert_eq!(s.offset, base + i as i64);
                prop_assert_eq!(s.timestamp, r.timestamp.unwrap_or(1_700_000_000_000));
                prop_assert_eq!(&s.key, &r.key);
                prop_assert_eq!(&s.value, &r.value);
                prop_assert_eq!(&s.headers, &r.headers);
            }
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let bytes = Bytes::from(bytes);
            let mut out = Vec::new();
            let _ = decode_records(&bytes, 0, &mut out);
            for b in Batches::new(&bytes) { let _ = b; }
        }

        /// A batch whose CRC is right but whose compressed records are garbage is an error, for every codec.
        #[test]
        fn garbage_compressed_records_are_an_error(codec in 1i16..=4, junk in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = Vec::new();
            encode(&[Record::from_value(Bytes::from_static(b"x"))], 0, &mut buf);
            buf.truncate(HEADER_LEN);
            buf.extend_from_slice(&junk);
            let len = (buf.len() - LOG_OVERHEAD) as i32;
            buf[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
            buf[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&codec.to_be_bytes());
            let crc = crc32c::crc32c(&buf[OFF_ATTRIBUTES..]);
            buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
            let mut out = Vec::new();
            let _ = decode_records(&Bytes::from(buf), 0, &mut out);
        }

        #[test]
        fn a_flipped_bit_is_caught(records in proptest::collection::vec(arb_record(), 1..5), bit in any::<usize>()) {
            let mut buf = Vec::new();
            encode(&records, 0, &mut buf);
            // Base offset and leader epoch are outside the CRC by design; flip anywhere after them.
            let covered = buf.len() - 16;
            let i = 16 + (bit / 8) % covered;
            buf[i] ^= 1 << (bit % 8);
            prop_assert!(validate(&buf).is_err());
        }
    }
}
