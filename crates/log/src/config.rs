//! Per-log settings, with the Kafka-style `key=value` names topics are configured with.

use std::fmt;

use crate::error::{LogError, Result};

/// When appended data is forced to disk.
///
/// - `Always`: an append is acknowledged only after `fdatasync`; concurrent appenders share one fsync (group commit).
/// - `Interval`: a background flusher syncs every `ms` milliseconds, or sooner once `bytes` unsynced bytes pile up. A crash
///   (of the machine, not just the process) loses at most that window; a `kill -9` of the process loses nothing the kernel
///   already accepted.
/// - `Never`: the kernel decides; data is synced only in the background after a segment rolls, and when the log closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    Always,
    Interval { ms: u64, bytes: u64 },
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval { ms: 50, bytes: 16 * 1024 * 1024 }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval { .. } => f.write_str("interval"),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

/// Which clock a record's stored timestamp comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamp (the broker's clock when the producer gave none).
    #[default]
    CreateTime,
    /// The broker's clock at append, whatever the producer said.
    LogAppendTime,
}

/// Settings of one log (one partition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment once the active one reaches this size (`segment.bytes`, default 1 GiB).
    pub segment_bytes: u64,
    /// Roll a non-empty active segment this old (`segment.ms`, default 7 days).
    pub segment_ms: u64,
    /// Bytes between sparse offset-index entries (`index.interval.bytes`, default 4096).
    pub index_interval_bytes: u32,
    pub fsync: FsyncPolicy,
    /// Delete segments whose newest record is older than this (`retention.ms`, default 7 days; `-1` keeps forever).
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while the log is larger than this (`retention.bytes`, default unlimited).
    pub retention_bytes: Option<u64>,
    /// Largest batch accepted (`max.message.bytes`, default 1 MiB + 12).
    pub max_message_bytes: usize,
    pub timestamp_type: TimestampType,
    /// `cleanup.policy` names `compact` (Kafka's, for topics that hold the latest value per key, like a schema
    /// registry's `_schemas`). weir's log does not compact yet: such a log keeps every record, so time and size
    /// retention do not apply unless the policy also names `delete`. Keeping more than compaction would is safe for
    /// a reader, which only needs the latest record of each key to be there.
    pub compact: bool,
    /// `cleanup.policy` names `delete` (the default): retention deletes old segments.
    pub delete: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            fsync: FsyncPolicy::default(),
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            compact: false,
            delete: true,
        }
    }
}

/// The `key=value` names [`LogConfig::set`] understands, for help texts and validation.
pub const CONFIG_KEYS: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "index.interval.bytes",
    "fsync",
    "fsync.interval.ms",
    "fsync.interval.bytes",
    "retention.ms",
    "retention.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "cleanup.policy",
];

fn num(key: &str, value: &str) -> Result<i64> {
    value.trim().parse::<i64>().map_err(|_| LogError::InvalidConfig(format!("{key} must be an integer, got {value:?}")))
}

fn positive(key: &str, value: &str) -> Result<u64> {
    let n = num(key, value)?;
    if n <= 0 {
        return Err(LogError::InvalidConfig(format!("{key} must be positive, got {n}")));
    }
    Ok(n as u64)
}

fn unlimited_or_positive(key: &str, value: &str) -> Result<Option<u64>> {
    match num(key, value)? {
        -1 => Ok(None),
        n if n > 0 => Ok(Some(n as u64)),
        n => Err(LogError::InvalidConfig(format!("{key} must be positive or -1 (unlimited), got {n}"))),
    }
}

impl LogConfig {
    /// Applies one Kafka-style setting, e.g. `("retention.ms", "3600000")` or `("fsync", "always")`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "segment.bytes" => {
                let n = positive(key, value)?;
                // Index entries hold 32-bit positions.
                if !(1024..=(i32::MAX as u64)).contains(&n) {
                    return Err(LogError::InvalidConfig(format!(
                        "segment.bytes must be between 1024 and {}",
                        i32::MAX
                    )));
                }
                self.segment_bytes = n;
            }
            "segment.ms" => self.segment_ms = positive(key, value)?,
            "index.interval.bytes" => {
                self.index_interval_bytes = u32::try_from(positive(key, value)?)
                    .map_err(|_| LogError::InvalidConfig("index.interval.bytes is too large".into()))?
            }
            "fsync" => self.fsync = self.fsync_policy(value)?,
            "fsync.interval.ms" | "fsync.interval.bytes" => self.set_fsync_interval(key, positive(key, value)?),
            "retention.ms" => self.retention_ms = unlimited_or_positive(key, value)?,
            "retention.bytes" => self.retention_bytes = unlimited_or_positive(key, value)?,
            "max.message.bytes" => self.max_message_bytes = positive(key, value)? as usize,
            "message.timestamp.type" => {
                self.timestamp_type = match value.trim() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    other => {
                        return Err(LogError::InvalidConfig(format!(
                            "message.timestamp.type must be CreateTime or LogAppendTime, got {other:?}"
                        )))
                    }
                }
            }
            "cleanup.policy" => {
                let (mut compact, mut delete) = (false, false);
                for policy in value.split(',').map(str::trim) {
                    match policy {
                        "compact" => compact = true,
                        "delete" => delete = true,
                        other => {
                            return Err(LogError::InvalidConfig(format!(
                                "cleanup.policy must be delete, compact or both (comma-separated), got {other:?}"
                            )))
                        }
                    }
                }
                (self.compact, self.delete) = (compact, delete);
            }
            other => {
                return Err(LogError::InvalidConfig(format!(
                    "unknown config {other:?} (known: {})",
                    CONFIG_KEYS.join(", ")
                )))
            }
        }
        Ok(())
    }

    /// The policy `fsync=value` names; `interval` keeps the interval's parameters if they were set first.
    fn fsync_policy(&self, value: &str) -> Result<FsyncPolicy> {
        match value.trim() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            "interval" => match self.fsync {
                p @ FsyncPolicy::Interval { .. } => Ok(p),
                _ => Ok(FsyncPolicy::default()),
            },
            other => Err(LogError::InvalidConfig(format!("fsync must be always, interval or never, got {other:?}"))),
        }
    }

    /// `fsync.interval.ms` or `fsync.interval.bytes` set to `n`. Only the interval policy has these parameters: under
    /// `always` or `never` (chosen explicitly, the default being `interval`) the setting is ignored.
    fn set_fsync_interval(&mut self, key: &str, n: u64) {
        if let FsyncPolicy::Interval { ms, bytes } = &mut self.fsync {
            if key == "fsync.interval.ms" {
                *ms = n
            } else {
                *bytes = n
            }
        }
    }

    /// The settings as `key=value` pairs, the inverse of [`LogConfig::set`].
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "-1".into());
        let mut pairs = vec![
            ("segment.bytes".to_string(), self.segment_bytes.to_string()),
            ("segment.ms".into(), self.segment_ms.to_string()),
            ("index.interval.bytes".into(), self.index_interval_bytes.to_string()),
            ("fsync".into(), self.fsync.to_string()),
        ];
        if let FsyncPolicy::Interval { ms, bytes } = self.fsync {
            pairs.push(("fsync.interval.ms".into(), ms.to_string()));
            pairs.push(("fsync.interval.bytes".into(), bytes.to_string()));
        }
        pairs.push(("retention.ms".into(), opt(self.retention_ms)));
        pairs.push(("retention.bytes".into(), opt(self.retention_bytes)));
        pairs.push(("max.message.bytes".into(), self.max_message_bytes.to_string()));
        let ts = match self.timestamp_type {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        };
        pairs.push(("message.timestamp.type".into(), ts.into()));
        let policy = match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        };
        pairs.push(("cleanup.policy".into(), policy.into()));
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_pairs() {
        let mut c = LogConfig::default();
        c.set("fsync", "always").unwrap();
        c.set("retention.bytes", "1000000").unwrap();
        c.set("message.timestamp.type", "LogAppendTime").unwrap();
        c.set("cleanup.policy", "compact").unwrap();
        assert!(c.compact && !c.delete);
        let mut d = LogConfig::default();
        for (k, v) in c.to_pairs() {
            d.set(&k, &v).unwrap();
        }
        assert_eq!(c, d);
    }

    #[test]
    fn bad_values_are_rejected_with_the_key_named() {
        let mut c = LogConfig::default();
        let e = c.set("retention.ms", "soon").unwrap_err().to_string();
        assert!(e.contains("retention.ms"), "{e}");
        assert!(c.set("fsync", "sometimes").is_err());
        assert!(c.set("segment.bytes", "10").is_err());
        assert!(c.set("no.such.key", "1").is_err());
        assert!(c.set("cleanup.policy", "compact,sometimes").is_err());
        assert_eq!(c, LogConfig::default());
    }

    /// The interval's parameters belong to the interval policy: kept when it is named after them, ignored under
    /// another policy.
    #[test]
    fn interval_parameters_apply_only_to_the_interval_policy() {
        let mut c = LogConfig::default();
        c.set("fsync.interval.ms", "20").unwrap();
        c.set("fsync.interval.bytes", "4096").unwrap();
        c.set("fsync", "interval").unwrap();
        assert_eq!(c.fsync, FsyncPolicy::Interval { ms: 20, bytes: 4096 });
        c.set("fsync", "never").unwrap();
        c.set("fsync.interval.ms", "30").unwrap();
        assert_eq!(c.fsync, FsyncPolicy::Never);
        c.set("fsync", "interval").unwrap();
        assert_eq!(c.fsync, FsyncPolicy::default());
        assert!(c.set("fsync.interval.ms", "0").is_err());
    }
}
