//! weir's storage engine: a durable, partitioned-by-directory log of Kafka RecordBatch v2 batches.
//! No network, no async runtime, no knowledge of what the records mean.
//!
//! - [`Log`] (`log.rs`): one partition: append, read by offset or timestamp, group-committed fsync, retention, recovery.
//! - `segment.rs`: one segment file with its sparse offset and time indexes (`index.rs`).
//! - [`batch`]: the RecordBatch v2 codec (CRC-32C, varint records), shared with the Kafka listener.
//! - `producer_state.rs`: idempotent producers' sequences and open transactions (the last stable offset);
//!   `transactions.rs`: the aborted transactions and the [`ReadCommittedFilter`] that hides them.
//! - [`Flusher`] (`flusher.rs`): the background thread behind `fsync=interval`.
//! - [`LogConfig`] (`config.rs`): per-log settings under their Kafka-style names.
//! - `testing` (feature `testing`, for tests only): the kill-and-restart harness of the crash tests.
//!
//! On disk a log directory holds `<base offset>.log` segments, each with `.index` and `.timeindex`, the producers'
//! `producer-state` snapshot, the `aborted-transactions` index, and a `.clean-shutdown` marker while closed cleanly.
//!
//! # Example
//!
//! A log in a directory of its own: append, read back by offset, close, and reopen as after a restart.
//!
//! ```
//! use weir_log::{Log, LogConfig, LogError, Record};
//!
//! let dir = tempfile::tempdir()?;
//! let mut config = LogConfig::default();
//! config.set("fsync", "always")?; // acknowledged means on disk
//!
//! let log = Log::open(dir.path(), config.clone())?;
//! let first = log.append(&[Record::from_value("a"), Record::from_value("b")])?;
//! assert_eq!((first.base_offset, first.last_offset), (0, 1));
//! let keyed = Record { key: Some("user-7".into()), ..Record::from_value("c") };
//! assert_eq!(log.append(&[keyed])?.base_offset, 2);
//! assert_eq!((log.end_offset(), log.durable_offset()), (3, 3));
//!
//! // Reads return whole stored batches, so offset 1 comes with the batch that starts at 0;
//! // `records(from)` decodes only those at or after `from`.
//! let read = log.read(1, 1 << 20)?;
//! let records = read.records(1)?;
//! let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
//! assert_eq!(offsets, [1, 2]);
//! assert_eq!(records[1].key.as_deref(), Some(&b"user-7"[..]));
//! assert_eq!(records[1].value.as_deref(), Some(&b"c"[..]));
//! // Past the end is an error, not an empty read.
//! assert!(matches!(log.read(4, 1 << 20), Err(LogError::OffsetOutOfRange { .. })));
//!
//! log.close()?;
//! drop(log);
//! let log = Log::open(dir.path(), config)?;
//! assert!(log.recovery().clean_shutdown);
//! assert_eq!(log.end_offset(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod batch;
mod config;
mod error;
mod flusher;
mod index;
mod log;
mod producer_state;
mod record;
mod segment;
#[cfg(feature = "testing")]
pub mod testing;
mod transactions;
mod varint;

pub use config::{FsyncPolicy, LogConfig, TimestampType, CONFIG_KEYS};
pub use error::{LogError, Result};
pub use flusher::Flusher;
pub use log::{now_ms, AppendInfo, Isolation, Log, ReadResult, RecoveryReport, RetentionOutcome};
pub use record::{Header, Record, StoredRecord};
pub use transactions::{AbortedTxn, ReadCommittedFilter};
