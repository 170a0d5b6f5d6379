//! The log's error type. Every failure names the file (and, for corruption, the byte position) so an operator can act on it.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error while trying to {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt { path: PathBuf, position: u64, reason: String },
    #[error("offset {offset} is out of range (log holds offsets {log_start}..{log_end})")]
    OffsetOutOfRange { offset: i64, log_start: i64, log_end: i64 },
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    /// The batch is intact (its CRC matches) but its records are not what its header says.
    #[error("invalid records: {0}")]
    InvalidRecord(String),
    #[error("record batch of {size} bytes exceeds max.message.bytes ({max})")]
    RecordTooLarge { size: usize, max: usize },
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("producer {producer_id}: sequence {got} out of order (expected {expected})")]
    OutOfOrderSequence { producer_id: i64, expected: i32, got: i32 },
    #[error("producer {producer_id}: epoch {epoch} is fenced by epoch {current}")]
    InvalidProducerEpoch { producer_id: i64, epoch: i16, current: i16 },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { op, path, source }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
