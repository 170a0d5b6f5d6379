//! Behaviour of one log: offsets, reads, indexes, timestamps, rolling, retention, reopening.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{read_all, rec, small_segments};
use weir_log::{FsyncPolicy, Log, LogConfig, LogError, Record};

#[test]
fn offsets_are_dense_and_records_come_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let records: Vec<Record> = (0..100).map(rec).collect();
    let a = log.append(&records[..30]).unwrap();
    let b = log.append(&records[30..]).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (0, 29));
    assert_eq!((b.base_offset, b.last_offset), (30, 99));
    let back = read_all(&log).unwrap();
    assert_eq!(back.len(), 100);
    for (i, (r, s)) in records.iter().zip(&back).enumerate() {
        assert_eq!(s.offset, i as i64);
        assert_eq!(s.key, r.key);
        assert_eq!(s.value, r.value);
        assert_eq!(s.headers, r.headers);
        assert_eq!(Some(s.timestamp), r.timestamp);
    }
}

#[test]
fn reads_from_any_offset_across_rolled_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..400 {
        log.append(&[rec(i)]).unwrap();
    }
    assert!(log.segment_count() > 5, "segments: {}", log.segment_count());
    for offset in [0, 1, 57, 128, 255, 256, 399] {
        let r = log.read(offset, 1).unwrap();
        let recs = r.records(offset).unwrap();
        assert_eq!(recs.first().map(|r| r.offset), Some(offset), "reading {offset}");
        assert_eq!(recs[0].value, rec(offset as usize).value);
    }
    assert!(log.read(400, 100).unwrap().batches.is_empty());
    assert!(matches!(log.read(401, 100), Err(LogError::OffsetOutOfRange { .. })));
    assert!(matches!(log.read(-1, 100), Err(LogError::OffsetOutOfRange { .. })));
}

#[test]
fn reopening_after_a_clean_close_or_a_crash_keeps_everything() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path(), small_segments()).unwrap();
            for i in 0..300 {
                log.append(&[rec(i), rec(i + 1000)]).unwrap();
            }
            if clean {
                log.close().unwrap();
            }
        }
        let log = Log::open(dir.path(), small_segments()).unwrap();
        assert_eq!(log.recovery().clean_shutdown, clean);
        assert_eq!(log.recovery().truncated_bytes, 0);
        assert_eq!(log.end_offset(), 600);
        assert_eq!(read_all(&log).unwrap().len(), 600);
        assert_eq!(log.append(&[rec(1)]).unwrap().base_offset, 600);
        assert_eq!(read_all(&log).unwrap().len(), 601);
    }
}

#[test]
fn a_torn_tail_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        for i in 0..10 {
            log.append(&[rec(i)]).unwrap();
        }
    }
    let seg = dir.path().join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 5).unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.end_offset(), 9);
    assert!(log.recovery().truncated_bytes > 0);
    assert!(log.recovery().truncation.as_deref().unwrap().contains("00000000000000000000.log"));
    assert_eq!(log.append(&[rec(9)]).unwrap().base_offset, 9);
}

#[test]
fn corruption_in_a_sealed_segment_names_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), small_segments()).unwrap();
        for i in 0..200 {
            log.append(&[rec(i)]).unwrap();
        }
    }
    // Break the first segment's index so it must be rescanned, and its data so the rescan fails.
    let seg = dir.path().join(format!("{:020}.log", 0));
    std::fs::write(dir.path().join(format!("{:020}.index", 0)), b"xyz").unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    data[200] ^= 0xff;
    std::fs::write(&seg, &data).unwrap();
    let err = Log::open(dir.path(), small_segments()).unwrap_err();
    match &err {
        LogError::Corrupt { path, .. } => assert_eq!(path, &seg),
        other => panic!("expected corruption, got {other}"),
    }
    assert!(err.to_string().contains("at byte"), "{err}");
}

#[test]
fn timestamps_find_the_earliest_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..300 {
        log.append(&[rec(i)]).unwrap(); // record i has timestamp base + 10 i
    }
    let base = 1_600_000_000_000;
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(base + 1000).unwrap(), Some(100));
    assert_eq!(log.offset_for_timestamp(base + 1001).unwrap(), Some(101));
    assert_eq!(log.offset_for_timestamp(base + 2990).unwrap(), Some(299));
    assert_eq!(log.offset_for_timestamp(base + 2991).unwrap(), None);
    log.close().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.offset_for_timestamp(base + 1555).unwrap(), Some(156));
}

#[test]
fn retention_deletes_whole_old_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_segments();
    config.set("retention.bytes", "8192").unwrap();
    config.set("retention.ms", "-1").unwrap(); // the records are from 2020
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..400 {
        log.append(&[rec(i)]).unwrap();
    }
    let before = log.size_bytes();
    let out = log.enforce_retention(weir_log::now_ms()).unwrap();
    assert!(out.segments_deleted > 0);
    assert!(log.size_bytes() < before);
    assert!(log.size_bytes() >= 8192 - 4096, "kept {} bytes", log.size_bytes());
    let start = log.start_offset();
    assert!(start > 0);
    assert!(matches!(log.read(0, 100), Err(LogError::OffsetOutOfRange { .. })));
    let rest = read_all(&log).unwrap();
    assert_eq!(rest.first().unwrap().offset, start);
    assert_eq!(rest.last().unwrap().offset, 399);

    // Time retention: every record is from 2020, so all sealed segments go.
    config.set("retention.ms", "1000").unwrap();
    config.retention_bytes = None;
    log.set_config(config);
    log.enforce_retention(weir_log::now_ms()).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.end_offset(), 400);
    drop(log);
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.start_offset(), read_all(&log).unwrap()[0].offset);
}

#[test]
fn oversized_and_malformed_batches_are_refused_without_damage() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LogConfig::default();
    config.set("max.message.bytes", "1000").unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    log.append(&[rec(0)]).unwrap();
    let big = Record::from_value(vec![7u8; 2000]);
    assert!(matches!(log.append(&[big]), Err(LogError::RecordTooLarge { .. })));
    assert!(matches!(log.append_batches(vec![1, 2, 3], false), Err(LogError::InvalidBatch(_))));
    let mut buf = Vec::new();
    weir_log::batch::encode(&[rec(1)], 0, &mut buf);
    let last = buf.len() - 1;
    buf[last] ^= 1;
    assert!(matches!(log.append_batches(buf, false), Err(LogError::InvalidBatch(_))));
    assert_eq!(log.end_offset(), 1);
    assert_eq!(log.append(&[rec(1)]).unwrap().base_offset, 1);
}

#[test]
fn fsync_always_group_commits_concurrent_appenders() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { fsync: FsyncPolicy::Always, ..Default::default() };
    let log = Log::open(dir.path(), config).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let info = log.append(&[Record::from_value(format!("{t}-{i}"))]).unwrap();
                        assert!(log.durable_offset() > info.last_offset, "acknowledged before fsync");
                        info.base_offset
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut offsets: Vec<i64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..400).collect::<Vec<_>>());
}

#[test]
fn the_interval_flusher_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LogConfig::default();
    config.set("fsync.interval.ms", "20").unwrap();
    let flusher = weir_log::Flusher::start().unwrap();
    let log: Arc<Log> = Log::open(dir.path(), config).unwrap();
    flusher.register(&log);
    log.append(&[Record::from_value(Bytes::from_static(b"a"))]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while log.durable_offset() < 1 {
        assert!(std::time::Instant::now() < deadline, "flusher never synced");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_segment_rolls_when_it_gets_old() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LogConfig::default();
    config.set("segment.ms", "50").unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    log.append(&[rec(0)]).unwrap();
    log.append(&[rec(1)]).unwrap();
    assert_eq!(log.segment_count(), 1);
    std::thread::sleep(std::time::Duration::from_millis(80));
    log.append(&[rec(2)]).unwrap();
    assert_eq!(log.segment_count(), 2);
    assert_eq!(read_all(&log).unwrap().len(), 3);
}

/// An encoded batch as an idempotent producer would send it.
fn idempotent_batch(producer_id: i64, epoch: i16, seq: i32, records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::new();
    weir_log::batch::encode(records, 1_700_000_000_000, &mut buf);
    buf[43..51].copy_from_slice(&producer_id.to_be_bytes());
    buf[51..53].copy_from_slice(&epoch.to_be_bytes());
    buf[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    buf
}

#[test]
fn idempotent_retries_are_stored_once_even_across_restarts() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path(), LogConfig::default()).unwrap();
            let first = log.append_batches(idempotent_batch(42, 0, 0, &[rec(0), rec(1)]), false).unwrap();
            let retry = log.append_batches(idempotent_batch(42, 0, 0, &[rec(0), rec(1)]), false).unwrap();
            assert_eq!((retry.base_offset, retry.last_offset), (first.base_offset, first.last_offset));
            assert_eq!(log.end_offset(), 2);
            log.append_batches(idempotent_batch(42, 0, 2, &[rec(2)]), false).unwrap();
            let gap = log.append_batches(idempotent_batch(42, 0, 9, &[rec(3)]), false).unwrap_err();
            assert!(matches!(gap, LogError::OutOfOrderSequence { expected: 3, got: 9, .. }), "{gap}");
            if clean {
                log.close().unwrap();
            }
        }
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let retry = log.append_batches(idempotent_batch(42, 0, 2, &[rec(2)]), false).unwrap();
        assert_eq!(retry.base_offset, 2, "clean={clean}: a retry after restart is recognised");
        assert_eq!(log.end_offset(), 3);
        assert!(log.append_batches(idempotent_batch(42, 0, 4, &[rec(3)]), false).is_err());
        log.append_batches(idempotent_batch(42, 0, 3, &[rec(3)]), false).unwrap();
        assert_eq!(read_all(&log).unwrap().len(), 4);
    }
}

/// Readers racing an appender never get a batch at or past the end offset the same read reports, and never see the
/// end go backwards (issue 13, F4: a segment's new size was published before the log's end offset, so a read could
/// return a batch whose offset was not yet the end, and a consumer then sat past the end, got OffsetOutOfRange and
/// reset to 0).
#[test]
fn reads_never_run_ahead_of_the_end_offset() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { fsync: FsyncPolicy::Never, segment_bytes: 256 << 10, ..LogConfig::default() };
    let log = Log::open(dir.path(), config).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut pos, mut reads) = (0i64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = log.read(pos, 1 << 16).unwrap_or_else(|e| panic!("read at {pos} after {reads} reads: {e}"));
                    reads += 1;
                    for b in weir_log::batch::Batches::new(&r.batches) {
                        let (h, _) = b.unwrap();
                        assert!(
                            h.last_offset() < r.log_end_offset,
                            "read {reads} returned offsets {}..={} with the end at {}",
                            h.base_offset,
                            h.last_offset(),
                            r.log_end_offset
                        );
                        pos = pos.max(h.last_offset() + 1);
                    }
                }
                reads
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let mut appended = 0usize;
    while started.elapsed() < std::time::Duration::from_secs(3) {
        log.append(&[rec(appended), rec(appended + 1)]).unwrap();
        appended += 2;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 10_000, "only {reads} reads raced {appended} appends");
}

/// A batch whose CRC is right but whose records are not what its header says is refused on append (Kafka's
/// INVALID_RECORD), and nothing of it is stored (issue 13, F2: one that claimed two records and held one was
/// accepted, and stopped every consumer that reached it).
#[test]
fn batches_whose_records_disagree_with_their_header_are_refused() {
    use common::{forge_batch, raw_record, varint};
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let one = raw_record(0, b"hi");
    let two = [raw_record(0, b"a"), raw_record(1, b"b")].concat();
    let huge_value = {
        // A value length of 2^40: no such record fits in a batch.
        let mut body = vec![0u8];
        varint(&mut body, 0);
        varint(&mut body, 0);
        varint(&mut body, -1);
        varint(&mut body, 1 << 40);
        body.extend_from_slice(b"hi");
        varint(&mut body, 0);
        let mut r = Vec::new();
        varint(&mut r, body.len() as i64);
        r.extend(body);
        r
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("two records claimed, one present", forge_batch(&one, 2, 1, 0)),
        ("a count of 2^31-1", forge_batch(&one, i32::MAX, i32::MAX - 1, 0)),
        ("a value length of 2^40", forge_batch(&huge_value, 1, 0, 0)),
        ("gzip claimed over plain records", forge_batch(&one, 1, 0, 1)),
        ("an unknown codec", forge_batch(&one, 1, 0, 6)),
        ("offset deltas 0, 0", forge_batch(&[raw_record(0, b"a"), raw_record(0, b"b")].concat(), 2, 1, 0)),
        ("bytes after the last record", forge_batch(&[one.clone(), vec![0, 0, 0]].concat(), 1, 0, 0)),
        ("one record claimed, two present", forge_batch(&two, 1, 0, 0)),
        ("a control batch from a client", forge_batch(&one, 1, 0, 0x20)),
    ];
    for (what, batch) in cases {
        match log.append_batches(batch, false) {
            Err(LogError::InvalidRecord(reason) | LogError::InvalidBatch(reason)) => {
                assert!(!reason.is_empty(), "{what}")
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(log.end_offset(), 0, "{what}: nothing stored");
    }
    // The same shapes, well formed, are accepted, compressed ones too (checked after decompressing).
    assert_eq!(log.append_batches(forge_batch(&two, 2, 1, 0), false).unwrap().last_offset, 1);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &two).unwrap();
    let info = log.append_batches(forge_batch(&gz.finish().unwrap(), 2, 1, 1), false).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (2, 3));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &one).unwrap();
    assert!(matches!(
        log.append_batches(forge_batch(&gz.finish().unwrap(), 2, 1, 1), false),
        Err(LogError::InvalidRecord(_))
    ));
    let values: Vec<_> = read_all(&log).unwrap().into_iter().map(|r| r.value.unwrap()).collect();
    assert_eq!(values, ["a", "b", "a", "b"].map(|v| Bytes::from_static(v.as_bytes())));
}
