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
