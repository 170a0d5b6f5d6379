//! The contract every system implements, so that `weir up` (and a system's own commands) can run any of them the
//! same way: a [`System`] declares its settings, topics, tables, HTTP routes, background tasks, metrics and
//! `weir <system> ...` subcommands, and the platform hands it a bus and a store and stops it through one path.
//!
//! The shape follows Iggy's connector runtime (the host owns configuration and lifecycle; a plugin only describes
//! itself and runs) and mini-redis's shutdown (one broadcast stop signal; the host waits for every task to finish).
//! A system never names a backend: it gets an `Arc<dyn Bus>` and a [`SqlStore`], so the same code runs on the
//! embedded broker or on Kafka, on SQLite or PostgreSQL.
//!
//! Settings are layered (lowest first): the system's defaults, the config file's `[systems.<name>]` table, the
//! environment (`WEIR_<NAME>_<KEY>`, and the names its seed used, from [`System::env_names`]), then `--set
//! <name>.<key>=<value>` flags. A system reads them as its own typed struct with [`SystemSettings::parse`]; an unknown
//! key or a bad value is an error that names the key and where it came from.
//!
//! A system is registered by adding one line to the binary's registry (`src/systems.rs`).
//!
//! ```
//! use weir_runtime::SystemSettings;
//!
//! #[derive(serde::Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Demo {
//!     grace_period_seconds: u64,
//! }
//! impl Default for Demo {
//!     fn default() -> Self {
//!         Demo { grace_period_seconds: 30 }
//!     }
//! }
//!
//! // The seed's own environment name, as its docker-compose file set it, over the default...
//! let env = vec![("GRACE_PERIOD_SECONDS".to_string(), "10".to_string())];
//! let names = [("GRACE_PERIOD_SECONDS", "grace_period_seconds")];
//! let settings = SystemSettings::layered("demo", &names, None, env.clone(), &[]);
//! assert_eq!(settings.parse::<Demo>().unwrap().grace_period_seconds, 10);
//! // ...and a flag over both.
//! let flags = [("grace_period_seconds".to_string(), "5".to_string())];
//! let settings = SystemSettings::layered("demo", &names, None, env, &flags);
//! assert_eq!(settings.parse::<Demo>().unwrap().grace_period_seconds, 5);
//! // A bad value names the key and where it came from.
//! let bad = SystemSettings::layered("demo", &names, None, vec![("WEIR_DEMO_GRACE_PERIOD_SECONDS".into(), "soon".into())], &[]);
//! let error = bad.parse::<Demo>().err().unwrap().to_string();
//! assert!(error.contains("grace_period_seconds") && error.contains("WEIR_DEMO_GRACE_PERIOD_SECONDS"), "{error}");
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::{Access, OpenAccess};
use crate::bus::{Bus, BusError};
use crate::events::{EventError, EventSchema, Events, SchemaRegistry};
use crate::kv::KvStore;
use crate::outbox::{Relay, RelayWaker};
use crate::sql::{SqlStore, StoreError};

/// Why a system could not be set up, or why one of its tasks stopped.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// A setting that is unknown or has a bad value; the message names it and its source.
    #[error("{0}")]
    Setting(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("events: {0}")]
    Events(#[from] EventError),
    #[error("{0}")]
    Other(String),
}

/// A topic a system needs, created (if missing) on whatever bus it runs on before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec { name: name.into(), partitions }
    }
}

/// What a system is given to start with.
#[derive(Clone)]
pub struct SystemContext {
    pub bus: Arc<dyn Bus>,
    pub store: SqlStore,
    pub kv: Arc<dyn KvStore>,
    pub settings: SystemSettings,
    /// The platform's outbox relay: after committing a transaction that enqueued events, hand it what
    /// `outbox::enqueue_all` returned (`committed`), so they are published at once, without being read back, rather
    /// than at the next poll.
    pub outbox: RelayWaker,
    /// Turns true when the platform stops: every task of the system returns soon after.
    pub stop: watch::Receiver<bool>,
    /// The schema registry, when the platform runs one: [`launch`] registers the system's
    /// [`System::event_schemas`] in it.
    pub schemas: Option<Arc<dyn SchemaRegistry>>,
    /// The system's event types, registered ([`launch`] fills it in): what its producers serialize and its
    /// handlers deserialize with.
    pub events: Events,
    /// Credentials and ACLs for the system's services (see [`crate::access`]): a service provisions its
    /// [`ServiceAccount`](crate::access::ServiceAccount) and uses the bus its login returns, held to its ACLs when
    /// the platform secures them. [`OpenAccess`] over `bus` unless the [`Host`] was given another.
    pub access: Arc<dyn Access>,
}

impl std::fmt::Debug for SystemContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemContext")
            .field("settings", &self.settings)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// A system's background task: its name (for the stop report) and its handle.
pub type SystemTask = (String, JoinHandle<Result<(), SystemError>>);

/// A started system: the HTTP routes the platform serves for it and the tasks it stops.
#[derive(Debug, Default)]
pub struct Started {
    pub routes: axum::Router,
    pub tasks: Vec<SystemTask>,
}

impl Started {
    /// Adds a task, named for the stop report.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        task: impl Future<Output = Result<(), SystemError>> + Send + 'static,
    ) {
        self.tasks.push((name.into(), tokio::spawn(task)));
    }
}

/// The platform as a command of a system sees it (the binary implements it): where its data commands send, and a
/// weir of its own for commands that run a whole system (a simulator, a benchmark).
#[async_trait]
pub trait CommandHost: Send + Sync {
    /// The bus the data commands use: the data directory's broker, or the cluster named by `--server`.
    async fn data_bus(&self) -> anyhow::Result<Platform>;
    /// A weir of the command's own in a temporary directory: an embedded bus whose groups join at once (they will
    /// never have other members), and the database at `database` or SQLite in that directory.
    async fn scratch(&self, database: Option<&str>) -> anyhow::Result<Platform>;
    /// Resolves when the user asks the command to stop (Ctrl-C, SIGTERM).
    fn shutdown_signal(&self) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A bus (and, for a scratch weir, a store) lent to a command; [`Platform::close`] releases what backs them.
pub struct Platform {
    pub bus: Arc<dyn Bus>,
    pub store: Option<SqlStore>,
    pub kv: Option<Arc<dyn KvStore>>,
    /// A schema registry over `bus`, for systems whose events are typed (a scratch weir has one).
    pub schemas: Option<Arc<dyn SchemaRegistry>>,
    closer: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Platform {
    /// `closer` runs on [`Platform::close`]: a broker shut down, a temporary directory removed. Dropped unclosed,
    /// what it holds is dropped with it (a temporary directory is still removed).
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Option<SqlStore>,
        kv: Option<Arc<dyn KvStore>>,
        closer: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        Platform { bus, store, kv, schemas: None, closer: Some(Box::pin(closer)) }
    }

    /// The schema registry systems started on this platform register their event schemas in.
    pub fn with_schemas(mut self, registry: Arc<dyn SchemaRegistry>) -> Self {
        self.schemas = Some(registry);
        self
    }

    pub async fn close(mut self) {
        if let Some(c) = self.closer.take() {
            c.await;
        }
    }
}

/// A system: one crate, one value of a type implementing this, one line in the binary's registry.
#[async_trait]
pub trait System: Send + Sync + 'static {
    /// Its name: `weir up --systems NAME`, `[systems.NAME]`, `WEIR_NAME_*`, `weir NAME ...`.
    fn name(&self) -> &'static str;
    /// One line for `--help` and the banner.
    fn about(&self) -> &'static str;
    /// Environment names its seed used, and the setting key each sets (`("GRACE_PERIOD_SECONDS",
    /// "grace_period_seconds")`): the seed's docker-compose files keep working.
    fn env_names(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Checks the settings without starting anything (`weir up` refuses bad ones before it opens a port).
    fn check(&self, settings: &SystemSettings) -> Result<(), SystemError>;
    /// The topics it reads and writes, with their partition counts.
    fn topics(&self, settings: &SystemSettings) -> Result<Vec<TopicSpec>, SystemError>;
    /// The schemas of the events it writes, registered in the schema registry before it starts (see
    /// [`crate::events`]); none by default.
    fn event_schemas(&self, settings: &SystemSettings) -> Result<Vec<EventSchema>, SystemError> {
        let _ = settings;
        Ok(Vec::new())
    }
    /// Creates or upgrades its tables (idempotent).
    async fn migrate(&self, store: &SqlStore) -> Result<(), SystemError>;
    /// Describes its metrics to the recorder (names, units, help), so they show before the first sample.
    fn describe_metrics(&self) {}
    /// Starts its tasks and returns its HTTP routes. Topics exist and tables are migrated by then ([`launch`]).
    async fn start(&self, ctx: SystemContext) -> Result<Started, SystemError>;
    /// Its `weir NAME ...` subcommands, if any (a clap command named [`System::name`]).
    fn command(&self) -> Option<clap::Command> {
        None
    }
    /// Runs one of its subcommands (`matches` are those of the command named [`System::name`]).
    async fn run_command(&self, matches: clap::ArgMatches, host: Arc<dyn CommandHost>) -> anyhow::Result<()> {
        let _ = (matches, host);
        anyhow::bail!("{} has no commands", self.name())
    }
}

/// Sets a system up on a platform and starts it: its settings checked, its topics created, its event schemas
/// registered, its tables migrated.
pub async fn launch(system: &dyn System, mut ctx: SystemContext) -> Result<Started, SystemError> {
    system.check(&ctx.settings)?;
    for t in system.topics(&ctx.settings)? {
        ctx.bus.ensure_topic(&t.name, t.partitions).await?;
    }
    let schemas = system.event_schemas(&ctx.settings)?;
    if !schemas.is_empty() {
        let registry = ctx.schemas.clone().ok_or(EventError::NoRegistry)?;
        ctx.events = Events::register(registry, &schemas).await?;
    }
    // One instance at a time changes the schema (several may start together on one database).
    let lock = ctx.store.lock_schema().await?;
    system.migrate(&ctx.store).await?;
    lock.release().await?;
    system.describe_metrics();
    system.start(ctx).await
}

/// Systems running on one platform (a bus, a store, a key-value store): it runs the outbox relay they share,
/// starts each system through [`launch`], and stops them all through one signal. `weir up`, the systems' own
/// commands and their tests all run systems through it.
pub struct Host {
    bus: Arc<dyn Bus>,
    store: SqlStore,
    kv: Arc<dyn KvStore>,
    outbox: RelayWaker,
    running: Running,
    schemas: Option<Arc<dyn SchemaRegistry>>,
    access: Arc<dyn Access>,
    liveness: Liveness,
}

/// Whether each started system's tasks are still running, readable while the host runs them (the web console's
/// overview shows it): a task that ended before the platform stopped (it failed, or panicked) means its system is
/// not doing all its work.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    tasks: Arc<std::sync::Mutex<Vec<(String, String, tokio::task::AbortHandle)>>>,
}

impl Liveness {
    /// Each system with its tasks, `(task, running)`, in the order they started.
    pub fn systems(&self) -> Vec<(String, Vec<(String, bool)>)> {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, Vec<(String, bool)>)> = Vec::new();
        for (system, task, handle) in tasks.iter() {
            let state = (task.clone(), !handle.is_finished());
            match out.iter_mut().find(|(s, _)| s == system) {
                Some((_, states)) => states.push(state),
                None => out.push((system.clone(), vec![state])),
            }
        }
        out
    }
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("store", &self.store).field("running", &self.running).finish_non_exhaustive()
    }
}

impl Host {
    /// Starts the outbox relay on `store` and `bus`.
    pub fn new(bus: Arc<dyn Bus>, store: SqlStore, kv: Arc<dyn KvStore>) -> Host {
        let relay = Relay::new(store.clone(), bus.clone());
        let outbox = relay.waker();
        let mut running = Running::new();
        let mut stop = running.signal();
        let relay = tokio::spawn(async move {
            relay
                .run(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .map(|_| ())
                .map_err(|e| SystemError::Other(format!("outbox relay: {e}")))
        });
        running.add(vec![("outbox relay".to_string(), relay)]);
        let access = Arc::new(OpenAccess::new(bus.clone()));
        Host { bus, store, kv, outbox, running, schemas: None, access, liveness: Liveness::default() }
    }

    /// The schema registry the systems' typed events go through (without one, a system that declares event
    /// schemas does not start).
    pub fn with_schemas(mut self, registry: Arc<dyn SchemaRegistry>) -> Host {
        self.schemas = Some(registry);
        self
    }

    /// The credentials and ACLs the systems' services log in with ([`SystemContext::access`]); [`OpenAccess`] over
    /// the host's bus by default.
    pub fn with_access(mut self, access: Arc<dyn Access>) -> Host {
        self.access = access;
        self
    }

    /// Sets `system` up (settings checked, topics, tables) and starts it; returns its HTTP routes.
    pub async fn start(&mut self, system: &dyn System, settings: SystemSettings) -> Result<axum::Router, SystemError> {
        let ctx = SystemContext {
            bus: self.bus.clone(),
            store: self.store.clone(),
            kv: self.kv.clone(),
            settings,
            outbox: self.outbox.clone(),
            stop: self.running.signal(),
            schemas: self.schemas.clone(),
            events: Events::default(),
            access: self.access.clone(),
        };
        let started = launch(system, ctx).await?;
        {
            let mut live = self.liveness.tasks.lock().unwrap_or_else(|e| e.into_inner());
            for (task, handle) in &started.tasks {
                live.push((system.name().to_string(), task.clone(), handle.abort_handle()));
            }
        }
        self.running.add(started.tasks);
        Ok(started.routes)
    }

    /// The started systems' tasks, running or not, to watch while the host runs them.
    pub fn liveness(&self) -> Liveness {
        self.liveness.clone()
    }

    /// Stops every system and the relay, waiting up to `deadline` in all; reports how each task ended.
    pub async fn stop(self, deadline: Duration) -> Vec<(String, TaskEnd)> {
        self.running.stop(deadline).await
    }

    /// [`Host::stop`] for a command that ran systems of its own (a simulator) and has nothing to do with the report
    /// but say which task did not stop cleanly, as a warning.
    pub async fn stop_and_warn(self, deadline: Duration) {
        for (task, end) in self.stop(deadline).await {
            if !matches!(end, TaskEnd::Finished) {
                tracing::warn!(task, end = ?end, "a task did not stop cleanly");
            }
        }
    }
}

/// This process's peak resident memory (Linux's VmHWM), if it can be read: what the simulators report.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How one task ended when the systems were stopped.
#[derive(Debug)]
pub enum TaskEnd {
    Finished,
    Failed(SystemError),
    Panicked(String),
    /// Still running at the deadline; it was aborted.
    TimedOut,
}

/// The running systems' tasks and the one signal that stops them all.
#[derive(Debug)]
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<SystemTask>,
}

impl Running {
    /// A stop signal for systems about to start: give [`Running::signal`] to each, then [`Running::add`] their tasks.
    pub fn new() -> Self {
        Running { stop: watch::channel(false).0, tasks: Vec::new() }
    }

    pub fn signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub fn add(&mut self, tasks: Vec<SystemTask>) {
        self.tasks.extend(tasks);
    }

    /// Signals every task to stop and waits for each, up to `deadline` in all; reports how each ended.
    pub async fn stop(self, deadline: Duration) -> Vec<(String, TaskEnd)> {
        let _ = self.stop.send(true);
        let until = tokio::time::Instant::now() + deadline;
        let mut ends = Vec::with_capacity(self.tasks.len());
        for (name, mut task) in self.tasks {
            let end = match tokio::time::timeout_at(until, &mut task).await {
                Ok(Ok(Ok(()))) => TaskEnd::Finished,
                Ok(Ok(Err(e))) => TaskEnd::Failed(e),
                Ok(Err(e)) => TaskEnd::Panicked(e.to_string()),
                Err(_) => {
                    task.abort();
                    TaskEnd::TimedOut
                }
            };
            ends.push((name, end));
        }
        ends
    }
}

impl Default for Running {
    fn default() -> Self {
        Self::new()
    }
}

/// One system's settings, layered from its sources; [`SystemSettings::parse`] reads them as the system's own type.
#[derive(Clone, Debug, Default)]
pub struct SystemSettings {
    system: String,
    values: Map<String, Value>,
    /// Where each key's value came from, for error messages.
    sources: BTreeMap<String, String>,
}

impl SystemSettings {
    /// Settings with no source but the defaults.
    pub fn defaults(system: &str) -> Self {
        SystemSettings { system: system.to_string(), ..Default::default() }
    }

    /// Layers the sources (each later one wins): `file` (the `[systems.<name>]` table), the environment
    /// (`WEIR_<NAME>_<KEY>` and `env_names`), and `flags` (`key=value` pairs from `--set <name>.key=value`).
    pub fn layered(
        system: &str,
        env_names: &[(&str, &str)],
        file: Option<Map<String, Value>>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[(String, String)],
    ) -> Self {
        let mut s = Self::defaults(system);
        for (k, v) in file.unwrap_or_default() {
            s.set(k.clone(), v, format!("[systems.{system}] {k} in the config file"));
        }
        let prefix = format!("WEIR_{}_", system.to_ascii_uppercase().replace('-', "_"));
        // The seed's names first, so that a WEIR_ name set as well wins.
        let env: Vec<(String, String)> = env.into_iter().collect();
        for (name, value) in &env {
            if let Some((_, key)) = env_names.iter().find(|(n, _)| n == name) {
                s.set(key.to_string(), scalar(value), name.clone());
            }
        }
        for (name, value) in &env {
            if let Some(key) = name.strip_prefix(&prefix) {
                s.set(key.to_ascii_lowercase(), scalar(value), name.clone());
            }
        }
        for (key, value) in flags {
            s.set(key.clone(), scalar(value), format!("--set {system}.{key}"));
        }
        s
    }

    fn set(&mut self, key: String, value: Value, source: String) {
        self.sources.insert(key.clone(), source);
        self.values.insert(key, value);
    }

    /// The system's name.
    pub fn system(&self) -> &str {
        &self.system
    }

    /// Reads the settings as `T` (whose `Default` gives the defaults; use `#[serde(default, deny_unknown_fields)]`).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, SystemError> {
        let value = Value::Object(self.values.clone());
        serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let key = key.split('.').next().unwrap_or("").to_string();
            let from = self.sources.get(&key).map_or_else(String::new, |s| format!(" (from {s})"));
            let inner = e.into_inner();
            let text = inner.to_string();
            // An unknown key has no path of its own: name it from the message.
            if key.is_empty() || key == "?" {
                SystemError::Setting(format!("settings of {}: {text}", self.system))
            } else {
                SystemError::Setting(format!("setting {}.{key}{from}: {text}", self.system))
            }
        })
    }

    /// An error about one setting's value, naming where it came from (for checks beyond its type).
    pub fn invalid(&self, key: &str, message: impl std::fmt::Display) -> SystemError {
        let from = self.sources.get(key).map_or_else(String::new, |s| format!(" (from {s})"));
        SystemError::Setting(format!("setting {}.{key}{from}: {message}", self.system))
    }
}

/// A value from the environment or a flag as the setting types read it: numbers as numbers, `true`/`false` as
/// booleans, anything else as text (settings that are text are never all digits).
fn scalar(text: &str) -> Value {
    let t = text.trim();
    if let Ok(b) = t.parse::<bool>() {
        return Value::Bool(b);
    }
    if let Ok(n) = t.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(x) = t.parse::<f64>() {
        if x.is_finite() {
            return Value::from(x);
        }
    }
    Value::String(text.to_string())
}

/// Deserializers for setting fields whose sources spell them loosely.
pub mod de {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// A yes/no setting: `true`/`false`, `1`/`0`, or `yes`/`no`/`on`/`off` (as docker-compose files write them).
    pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(b),
            Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
            Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "yes" | "on" | "y" => Ok(true),
                "no" | "off" | "n" | "" => Ok(false),
                other => Err(serde::de::Error::custom(format!("expected true or false, got {other:?}"))),
            },
            other => Err(serde::de::Error::custom(format!("expected true or false, got {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        grace_seconds: u64,
        #[serde(deserialize_with = "de::flag")]
        route_late: bool,
        policy: String,
    }

    impl Default for Demo {
        fn default() -> Self {
            Demo { grace_seconds: 30, route_late: false, policy: "edf".into() }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const NAMES: &[(&str, &str)] = &[("GRACE", "grace_seconds"), ("ROUTE_LATE", "route_late")];

    #[test]
    fn flags_beat_weir_env_beat_seed_env_beat_file_beat_defaults() {
        let s = SystemSettings::layered("demo", NAMES, None, env(&[]), &[]);
        assert_eq!(s.parse::<Demo>().unwrap(), Demo::default());

        let file: Map<String, Value> = serde_json::from_str(r#"{"grace_seconds": 5, "policy": "fifo"}"#).unwrap();
        let s = SystemSettings::layered("demo", NAMES, Some(file.clone()), env(&[]), &[]);
        assert_eq!(s.parse::<Demo>().unwrap(), Demo { grace_seconds: 5, route_late: false, policy: "fifo".into() });

        let e = env(&[("GRACE", "7"), ("ROUTE_LATE", "yes")]);
        let s = SystemSettings::layered("demo", NAMES, Some(file.clone()), e.clone(), &[]);
        assert_eq!(s.parse::<Demo>().unwrap().grace_seconds, 7);
        assert!(s.parse::<Demo>().unwrap().route_late);

        let mut e2 = e.clone();
        e2.push(("WEIR_DEMO_GRACE_SECONDS".into(), "8".into()));
        let s = SystemSettings::layered("demo", NAMES, Some(file.clone()), e2.clone(), &[]);
        assert_eq!(s.parse::<Demo>().unwrap().grace_seconds, 8);

        let flags = vec![("grace_seconds".to_string(), "9".to_string())];
        let s = SystemSettings::layered("demo", NAMES, Some(file), e2, &flags);
        assert_eq!(s.parse::<Demo>().unwrap().grace_seconds, 9);
    }

    #[test]
    fn bad_and_unknown_settings_name_the_key_and_its_source() {
        let s = SystemSettings::layered("demo", NAMES, None, env(&[("GRACE", "soon")]), &[]);
        let e = s.parse::<Demo>().unwrap_err().to_string();
        assert!(e.contains("grace_seconds") && e.contains("GRACE"), "{e}");

        let s = SystemSettings::layered("demo", NAMES, None, env(&[("WEIR_DEMO_NOPE", "1")]), &[]);
        let e = s.parse::<Demo>().unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");

        let s = SystemSettings::layered("demo", NAMES, None, env(&[("ROUTE_LATE", "perhaps")]), &[]);
        let e = s.parse::<Demo>().unwrap_err().to_string();
        assert!(e.contains("route_late") && e.contains("perhaps"), "{e}");
    }
}
