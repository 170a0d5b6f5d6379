//! weir's storage engine: a durable, partitioned-by-directory log of Kafka RecordBatch v2 batches.
//! No network, no async runtime, no knowledge of what the records mean.
//!
//! - [`Log`] (`log.rs`): one partition: append, read by offset or timestamp, group-committed fsync, retention, recovery.
//! - `segment.rs`: one segment file with its sparse offset and time indexes (`index.rs`).
//! - [`batch`]: the RecordBatch v2 codec (CRC-32C, varint records), shared with the Kafka listener.
//! - [`Flusher`] (`flusher.rs`): the background thread behind `fsync=interval`.
//! - [`LogConfig`] (`config.rs`): per-log settings under their Kafka-style names.
//!
//! On disk a log directory holds `<base offset>.log` segments, each with `.index` and `.timeindex`, and a
//! `.clean-shutdown` marker while closed cleanly.

pub mod batch;
mod config;
mod error;
mod flusher;
mod index;
mod log;
mod producer_state;
mod record;
mod segment;
mod varint;

pub use config::{FsyncPolicy, LogConfig, TimestampType, CONFIG_KEYS};
pub use error::{LogError, Result};
pub use flusher::Flusher;
pub use log::{now_ms, AppendInfo, Log, ReadResult, RecoveryReport, RetentionOutcome};
pub use record::{Header, Record, StoredRecord};
