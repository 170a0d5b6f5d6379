//! Settings for every command, from (lowest to highest precedence) built-in defaults, a TOML file (`--config`),
//! `WEIR_*` environment variables, and command-line flags.
//!
//! The TOML file and the environment use the same names:
//!
//! ```toml
//! data_dir = "./weir-data"          # WEIR_DATA_DIR
//! auto_create_topics = true         # WEIR_AUTO_CREATE_TOPICS
//! default_partitions = 1            # WEIR_DEFAULT_PARTITIONS
//! retention_check_interval_ms = 300000   # WEIR_RETENTION_CHECK_INTERVAL_MS
//! group_initial_rebalance_delay_ms = 3000 # WEIR_GROUP_INITIAL_REBALANCE_DELAY_MS
//!
//! [log]                             # defaults for every topic; WEIR_LOG_<KEY> with dots as underscores
//! fsync = "interval"                # WEIR_LOG_FSYNC
//! "retention.ms" = 604800000        # WEIR_LOG_RETENTION_MS
//!
//! [kafka.users]                     # SASL/PLAIN users of the Kafka listener; absent: no authentication
//! alice = "alice-secret"
//!
//! [systems.wedding]                 # a system's own settings: WEIR_WEDDING_POLICY, --set wedding.policy=fifo
//! policy = "fifo"
//! ```
//!
//! A system's settings are layered by the runtime (`weir_runtime::SystemSettings`): its `[systems.<name>]` table,
//! then the environment (the names its seed used, then `WEIR_<NAME>_<KEY>`), then `weir up --set`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use weir_broker::BrokerConfig;
use weir_log::{LogConfig, CONFIG_KEYS};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    auto_create_topics: Option<bool>,
    default_partitions: Option<i32>,
    retention_check_interval_ms: Option<u64>,
    group_initial_rebalance_delay_ms: Option<u64>,
    #[serde(default)]
    log: BTreeMap<String, toml::Value>,
    #[serde(default)]
    kafka: KafkaFileSettings,
    /// `[systems.<name>]` tables, read by each system as its own type.
    #[serde(default)]
    systems: BTreeMap<String, toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaFileSettings {
    /// SASL/PLAIN users of the Kafka listener (name = password); none means no authentication.
    users: Option<BTreeMap<String, String>>,
}

/// The resolved settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub broker: BrokerConfig,
    /// SASL/PLAIN users for the Kafka listener, from `[kafka.users]`.
    pub kafka_users: Option<BTreeMap<String, String>>,
    /// `--server`: the data commands act on this Kafka-protocol server instead of the data directory.
    pub server: Option<String>,
    /// The config file's `[systems.<name>]` tables, as JSON objects.
    pub systems: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// The environment the settings were read from, for the systems' own layering.
    pub env: Vec<(String, String)>,
}

fn env_bool(name: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => bail!("{name} must be true or false, got {v:?}"),
    }
}

fn env_num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T> {
    v.trim().parse().map_err(|_| anyhow::anyhow!("{name} must be a number, got {v:?}"))
}

impl Settings {
    /// Resolves settings. `data_dir_flag` is the `--data-dir` flag (clap already folded `WEIR_DATA_DIR` into it).
    pub fn load(config_file: Option<&Path>, data_dir_flag: Option<PathBuf>) -> Result<Settings> {
        Self::load_from(config_file, data_dir_flag, std::env::vars())
    }

    pub fn load_from(
        config_file: Option<&Path>,
        data_dir_flag: Option<PathBuf>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings> {
        let file: FileSettings = match config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileSettings::default(),
        };
        let mut auto_create = file.auto_create_topics.unwrap_or(true);
        let mut default_partitions = file.default_partitions.unwrap_or(1);
        let mut retention_ms = file.retention_check_interval_ms.unwrap_or(300_000);
        let mut rebalance_delay_ms = file.group_initial_rebalance_delay_ms;
        let mut data_dir = file.data_dir;
        let mut log = LogConfig::default();
        for (k, v) in &file.log {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            log.set(k, &v).context("in [log] of the config file")?;
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        for (name, value) in &env {
            let Some(key) = name.strip_prefix("WEIR_") else {
                continue;
            };
            match key {
                "DATA_DIR" => data_dir = Some(PathBuf::from(value)),
                "AUTO_CREATE_TOPICS" => auto_create = env_bool(name, value)?,
                "DEFAULT_PARTITIONS" => default_partitions = env_num(name, value)?,
                "RETENTION_CHECK_INTERVAL_MS" => retention_ms = env_num(name, value)?,
                "GROUP_INITIAL_REBALANCE_DELAY_MS" => rebalance_delay_ms = Some(env_num(name, value)?),
                // The tracing filter of `--log-level`, not a log (storage) setting.
                "LOG" | "LOG_LEVEL" => {}
                _ => {
                    if let Some(log_key) = key.strip_prefix("LOG_") {
                        let dotted = log_key.to_ascii_lowercase().replace('_', ".");
                        // message.timestamp.type's value is case-sensitive; the key is matched without case.
                        let known = CONFIG_KEYS.iter().find(|k| **k == dotted);
                        match known {
                            Some(k) => log.set(k, value).with_context(|| format!("in {name}"))?,
                            None => bail!("{name} is not a log setting (known: {})", CONFIG_KEYS.join(", ")),
                        }
                    }
                    // Other WEIR_* variables belong to later subsystems or the test suite; ignore them.
                }
            }
        }
        if let Some(flag) = data_dir_flag {
            data_dir = Some(flag);
        }
        let data_dir = data_dir.unwrap_or_else(|| PathBuf::from("weir-data"));
        weir_broker::validate_partitions(default_partitions as i64)?;
        let mut broker = BrokerConfig::new(&data_dir);
        broker.auto_create_topics = auto_create;
        broker.default_partitions = default_partitions;
        broker.log = log;
        broker.retention_check_interval = Duration::from_millis(retention_ms.max(1));
        if let Some(ms) = rebalance_delay_ms {
            broker.group.initial_rebalance_delay_ms = ms;
        }
        let mut systems = BTreeMap::new();
        for (name, table) in file.systems {
            let json =
                serde_json::to_value(&table).with_context(|| format!("in [systems.{name}] of the config file"))?;
            if let serde_json::Value::Object(map) = json {
                systems.insert(name, map);
            }
        }
        Ok(Settings { data_dir, broker, kafka_users: file.kafka.users, server: None, systems, env })
    }

    /// `system`'s settings, layered: its `[systems.<name>]` table, the environment, then `flags` (`key=value` pairs of
    /// `--set <name>.key=value`).
    pub fn system_settings(
        &self,
        system: &dyn weir_runtime::System,
        flags: &[(String, String)],
    ) -> weir_runtime::SystemSettings {
        weir_runtime::SystemSettings::layered(
            system.name(),
            system.env_names(),
            self.systems.get(system.name()).cloned(),
            self.env.iter().cloned(),
            flags,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(
            &file,
            "data_dir = \"from-file\"\ndefault_partitions = 3\n[log]\nfsync = \"never\"\n\"retention.ms\" = 1000\n",
        )
        .unwrap();
        let s = Settings::load_from(Some(&file), None, env(&[])).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("from-file"));
        assert_eq!(s.broker.default_partitions, 3);
        assert_eq!(s.broker.log.fsync, weir_log::FsyncPolicy::Never);
        assert_eq!(s.broker.log.retention_ms, Some(1000));

        let e = env(&[("WEIR_DATA_DIR", "from-env"), ("WEIR_LOG_FSYNC", "always"), ("WEIR_DEFAULT_PARTITIONS", "5")]);
        let s = Settings::load_from(Some(&file), None, e.clone()).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("from-env"));
        assert_eq!(s.broker.log.fsync, weir_log::FsyncPolicy::Always);
        assert_eq!(s.broker.default_partitions, 5);

        let s = Settings::load_from(Some(&file), Some("from-flag".into()), e).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("from-flag"));
        assert_eq!(s.broker.group.offsets_dir, PathBuf::from("from-flag").join("groups"));
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        let e = Settings::load_from(None, None, env(&[("WEIR_LOG_FSYNC", "sometimes")])).unwrap_err();
        assert!(format!("{e:#}").contains("WEIR_LOG_FSYNC"), "{e:#}");
        let e = Settings::load_from(None, None, env(&[("WEIR_LOG_NOPE", "1")])).unwrap_err();
        assert!(format!("{e:#}").contains("WEIR_LOG_NOPE"), "{e:#}");
        assert!(Settings::load_from(None, None, env(&[("WEIR_LOG_LEVEL", "debug")])).is_ok());
        let e = Settings::load_from(None, None, env(&[("WEIR_DEFAULT_PARTITIONS", "0")])).unwrap_err();
        assert!(format!("{e:#}").contains("partition"), "{e:#}");
    }
}
