//! Helpers shared by the log's integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use weir_log::{Log, LogConfig, Record, StoredRecord};

pub fn small_segments() -> LogConfig {
    let mut c = LogConfig::default();
    c.set("segment.bytes", "4096").unwrap();
    c.set("index.interval.bytes", "256").unwrap();
    c
}

pub fn rec(i: usize) -> Record {
    Record {
        key: Some(Bytes::from(format!("k{}", i % 7))),
        value: Some(Bytes::from(format!("value-{i}-{}", "x".repeat(i % 50)))),
        headers: vec![weir_log::Header::new("n", i.to_string())],
        timestamp: Some(1_600_000_000_000 + i as i64 * 10),
    }
}

/// Every record from the start to the end, decoded and CRC-checked.
pub fn read_all(log: &Arc<Log>) -> weir_log::Result<Vec<StoredRecord>> {
    let mut out = Vec::new();
    let mut offset = log.start_offset();
    while offset < log.end_offset() {
        let r = log.read(offset, 7000)?;
        let recs = r.records(offset)?;
        let Some(last) = recs.last() else { break };
        offset = last.offset + 1;
        out.extend(recs);
    }
    Ok(out)
}

/// Zig-zag varint, as the record format writes it.
pub fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// One record of the records section, by hand: no key, `value`, no headers.
pub fn raw_record(offset_delta: i64, value: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8]; // attributes
    varint(&mut body, 0); // timestamp delta
    varint(&mut body, offset_delta);
    varint(&mut body, -1); // null key
    varint(&mut body, value.len() as i64);
    body.extend_from_slice(value);
    varint(&mut body, 0); // no headers
    let mut out = Vec::new();
    varint(&mut out, body.len() as i64);
    out.extend(body);
    out
}

/// A batch around any records section, with whatever header counts and attributes a hostile client chooses and a
/// correct CRC, so only the records' own checks can refuse it.
pub fn forge_batch(records: &[u8], record_count: i32, last_offset_delta: i32, attributes: i16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes()); // batch length
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&last_offset_delta.to_be_bytes());
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&record_count.to_be_bytes());
    b.extend_from_slice(records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}
