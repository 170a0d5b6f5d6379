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
//! [kafka.users]                     # users with passwords kept in this file (beside `weir users`' store)
//! alice = "alice-secret"
//!
//! [security]
//! authorizer = "acl"                # "none" (default: everyone may do everything) or "acl" (`weir acls`)
//! super_users = ["User:admin"]      # allowed everything, whatever the ACLs say
//! require_authentication = true     # default: true with authorizer "acl" or [kafka.users], else false
//! http_open_paths = ["/health", "/metrics"]   # HTTP paths served without authentication (the default)
//!
//! [security.tls]                    # TLS on the listeners; `weir certs dev` writes files for local use
//! cert = "certs/server.pem"         # relative paths are relative to this file's directory
//! key = "certs/server-key.pem"
//! client_ca = "certs/ca.pem"        # optional: clients must present a certificate it signed (mutual TLS)
//! listeners = ["kafka", "http"]     # which listeners use TLS (the default: both)
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
use weir_security::tls::TlsSettings;
use weir_security::{AuthorizerKind, SecuritySettings};

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
    #[serde(default)]
    security: SecurityFileSettings,
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

/// `[security]`: what is resolved into [`SecuritySettings`], the HTTP open paths and [`TlsConfig`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecurityFileSettings {
    authorizer: Option<String>,
    #[serde(default)]
    super_users: Vec<String>,
    require_authentication: Option<bool>,
    http_open_paths: Option<Vec<String>>,
    tls: Option<TlsFileSettings>,
}

/// `[security.tls]`. Its own type rather than `TlsSettings` flattened in: serde cannot refuse unknown keys through
/// `flatten`, and a misspelt `client_ca` must not silently turn mutual TLS off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFileSettings {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    listeners: Option<Vec<String>>,
}

/// The listeners `[security.tls] listeners` may name.
pub const TLS_LISTENERS: [&str; 2] = ["kafka", "http"];

/// TLS on the listeners, from `[security.tls]`, with its paths resolved against the settings file's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub files: TlsSettings,
    /// Whether the Kafka listener uses TLS.
    pub kafka: bool,
    /// Whether the HTTP listener uses TLS.
    pub http: bool,
}

/// The resolved settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub broker: BrokerConfig,
    /// Users, ACLs and authentication (`[security]`, with `[kafka.users]` as its `config_users`).
    pub security: SecuritySettings,
    /// HTTP paths served without authentication (`[security] http_open_paths`).
    pub http_open_paths: Vec<String>,
    /// `[security.tls]`, if present.
    pub tls: Option<TlsConfig>,
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
        // Relative TLS paths are relative to the settings file, so a deployment's file and its certificates move
        // together whatever directory weir is started from.
        let base = config_file.and_then(Path::parent).unwrap_or(Path::new(""));
        let (security, http_open_paths, tls) =
            resolve_security(file.security, file.kafka.users, base).context("in [security] of the config file")?;
        Ok(Settings { data_dir, broker, security, http_open_paths, tls, server: None, systems, env })
    }

    /// Where `weir users`, `weir acls` and `weir up` keep the user and ACL stores.
    pub fn security_dir(&self) -> PathBuf {
        self.data_dir.join("security")
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

/// `[security]` and `[kafka.users]` resolved, with the defaults that keep a file without `[security]` behaving as
/// before: no authorizer, and authentication only if `[kafka.users]` is present.
fn resolve_security(
    file: SecurityFileSettings,
    config_users: Option<BTreeMap<String, String>>,
    base: &Path,
) -> Result<(SecuritySettings, Vec<String>, Option<TlsConfig>)> {
    let authorizer = match file.authorizer.as_deref().map(str::trim) {
        None => AuthorizerKind::None,
        Some(a) if a.eq_ignore_ascii_case("none") => AuthorizerKind::None,
        Some(a) if a.eq_ignore_ascii_case("acl") => AuthorizerKind::Acl,
        Some(other) => bail!("authorizer = {other:?}: expected \"acl\" (deny what no ACL allows) or \"none\""),
    };
    for principal in &file.super_users {
        weir_security::acl::check_principal(principal).context("in super_users")?;
    }
    let require_authentication =
        file.require_authentication.unwrap_or(authorizer == AuthorizerKind::Acl || config_users.is_some());
    let http_open_paths = file.http_open_paths.unwrap_or_else(|| vec!["/health".into(), "/metrics".into()]);
    if let Some(bad) = http_open_paths.iter().find(|p| !p.starts_with('/')) {
        bail!("http_open_paths: {bad:?} is not a path (it must start with /)");
    }
    let tls = match file.tls {
        None => None,
        Some(t) => {
            let listeners = t.listeners.unwrap_or_else(|| TLS_LISTENERS.map(String::from).to_vec());
            if let Some(bad) = listeners.iter().find(|l| !TLS_LISTENERS.contains(&l.as_str())) {
                bail!("[security.tls] listeners: unknown listener {bad:?} (known: {})", TLS_LISTENERS.join(", "));
            }
            let files = TlsSettings {
                cert: base.join(t.cert),
                key: base.join(t.key),
                client_ca: t.client_ca.map(|p| base.join(p)),
            };
            let uses = |name: &str| listeners.iter().any(|l| l == name);
            Some(TlsConfig { files, kafka: uses("kafka"), http: uses("http") })
        }
    };
    let security = SecuritySettings {
        authorizer,
        super_users: file.super_users,
        require_authentication,
        config_users: config_users.unwrap_or_default(),
    };
    Ok((security, http_open_paths, tls))
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

    fn load_toml(text: &str) -> Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, text).unwrap();
        Settings::load_from(Some(&file), None, env(&[]))
    }

    #[test]
    fn security_defaults_keep_todays_behaviour() {
        let s = load_toml("").unwrap();
        assert_eq!(s.security.authorizer, AuthorizerKind::None);
        assert!(!s.security.require_authentication);
        assert!(s.security.super_users.is_empty() && s.security.config_users.is_empty());
        assert_eq!(s.http_open_paths, ["/health", "/metrics"]);
        assert_eq!(s.tls, None);

        // `[kafka.users]` alone: authentication as before, no authorizer.
        let s = load_toml("[kafka.users]\nalice = \"pw\"\n").unwrap();
        assert!(s.security.require_authentication);
        assert_eq!(s.security.authorizer, AuthorizerKind::None);
        assert_eq!(s.security.config_users.get("alice").map(String::as_str), Some("pw"));
        // Even empty, it asks for authentication (no one can log in until `weir users add`).
        assert!(load_toml("[kafka.users]\n").unwrap().security.require_authentication);
    }

    #[test]
    fn the_security_table_is_read_and_resolved() {
        let s = load_toml(
            "[security]\nauthorizer = \"acl\"\nsuper_users = [\"User:admin\"]\nhttp_open_paths = [\"/health\"]\n",
        )
        .unwrap();
        assert_eq!(s.security.authorizer, AuthorizerKind::Acl);
        assert!(s.security.require_authentication, "the default with the ACL authorizer");
        assert_eq!(s.security.super_users, ["User:admin"]);
        assert_eq!(s.http_open_paths, ["/health"]);
        let s = load_toml("[security]\nauthorizer = \"acl\"\nrequire_authentication = false\n").unwrap();
        assert!(!s.security.require_authentication, "said explicitly");
        let s = load_toml("[security]\nauthorizer = \"none\"\nrequire_authentication = true\n").unwrap();
        assert!(s.security.require_authentication && s.security.authorizer == AuthorizerKind::None);
    }

    #[test]
    fn tls_paths_are_relative_to_the_settings_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(
            &file,
            "[security.tls]\ncert = \"certs/server.pem\"\nkey = \"/etc/weir/server-key.pem\"\nclient_ca = \"ca.pem\"\n",
        )
        .unwrap();
        let tls = Settings::load_from(Some(&file), None, env(&[])).unwrap().tls.unwrap();
        assert_eq!(tls.files.cert, dir.path().join("certs/server.pem"));
        assert_eq!(tls.files.key, PathBuf::from("/etc/weir/server-key.pem"), "absolute paths stay");
        assert_eq!(tls.files.client_ca, Some(dir.path().join("ca.pem")));
        assert!(tls.kafka && tls.http, "both listeners by default");

        let s = load_toml("[security.tls]\ncert = \"c\"\nkey = \"k\"\nlisteners = [\"http\"]\n").unwrap();
        let tls = s.tls.unwrap();
        assert!(tls.http && !tls.kafka && tls.files.client_ca.is_none());
    }

    #[test]
    fn bad_security_settings_are_refused_with_their_name() {
        let message = |text: &str| format!("{:#}", load_toml(text).unwrap_err());
        let e = message("[security]\nauthorizer = \"bogus\"\n");
        assert!(e.contains("authorizer") && e.contains("bogus"), "{e}");
        let e = message("[security]\nsuper_users = [\"admin\"]\n");
        assert!(e.contains("super_users") && e.contains("admin"), "{e}");
        let e = message("[security]\nauthoriser = \"acl\"\n");
        assert!(e.contains("authoriser"), "unknown keys are refused: {e}");
        let e = message("[security.tls]\ncert = \"c\"\nkey = \"k\"\nclient-ca = \"ca.pem\"\n");
        assert!(e.contains("client-ca"), "a misspelt client_ca does not turn mTLS off silently: {e}");
        let e = message("[security.tls]\ncert = \"c\"\n");
        assert!(e.contains("key"), "{e}");
        let e = message("[security.tls]\ncert = \"c\"\nkey = \"k\"\nlisteners = [\"kafka\", \"grpc\"]\n");
        assert!(e.contains("grpc"), "{e}");
        let e = message("[security]\nhttp_open_paths = [\"health\"]\n");
        assert!(e.contains("health"), "{e}");
    }
}
