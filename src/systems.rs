//! The registry of systems `weir` runs, and what their commands are given to run on. Adding a system is adding its
//! crate and one line to [`all`]: `weir up` starts it (`--systems`), its settings come from `[systems.<name>]`, the
//! environment and `--set`, and its subcommands appear as `weir <name> ...`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use weir_runtime::kv::{JournalKv, JournalOptions, KvStore, SqlKv};
use weir_runtime::system::Platform;
use weir_runtime::{CommandHost, EmbeddedBus, KafkaBus, SqlStore, System};

use crate::commands::{open_broker, shutdown_signal};
use crate::settings::Settings;

/// Every system, in the order `weir up` starts them.
pub fn all() -> Vec<Arc<dyn System>> {
    vec![
        Arc::new(weir_analytics::AnalyticsSystem),
        Arc::new(weir_wedding::WeddingSystem),
        Arc::new(weir_repair::RepairSystem),
        Arc::new(weir_dispatch::DispatchSystem),
        Arc::new(weir_waitroom::WaitroomSystem),
    ]
}

/// The system named `name`.
pub fn find(name: &str) -> Option<Arc<dyn System>> {
    all().into_iter().find(|s| s.name() == name)
}

/// `--systems all|none|a,b`: the systems chosen, in registry order.
pub fn select(spec: &str) -> Result<Vec<Arc<dyn System>>> {
    let known = || all().iter().map(|s| s.name()).collect::<Vec<_>>().join(", ");
    match spec.trim() {
        "all" => Ok(all()),
        "none" | "" => Ok(Vec::new()),
        list => {
            let mut chosen = Vec::new();
            for name in list.split(',').map(str::trim) {
                let system = find(name).with_context(|| format!("unknown system {name:?} (available: {})", known()))?;
                if !chosen.iter().any(|s: &Arc<dyn System>| s.name() == name) {
                    chosen.push(system);
                }
            }
            Ok(chosen)
        }
    }
}

/// `--set NAME.KEY=VALUE` flags, grouped by system (checked: the system exists, the flag has a key and a value).
pub fn parse_set_flags(flags: &[String]) -> Result<Vec<(String, (String, String))>> {
    flags
        .iter()
        .map(|flag| {
            let (path, value) =
                flag.split_once('=').with_context(|| format!("--set {flag:?}: expected SYSTEM.KEY=VALUE"))?;
            let (system, key) =
                path.split_once('.').with_context(|| format!("--set {flag:?}: expected SYSTEM.KEY=VALUE"))?;
            find(system).with_context(|| format!("--set {flag:?}: there is no system {system:?}"))?;
            Ok((system.to_string(), (key.trim().to_string(), value.to_string())))
        })
        .collect()
}

/// Refuses a `[systems.<name>]` table of the config file that names no system.
pub fn check_file_tables(settings: &Settings) -> Result<()> {
    for name in settings.systems.keys() {
        if find(name).is_none() {
            let known = all().iter().map(|s| s.name()).collect::<Vec<_>>().join(", ");
            anyhow::bail!("[systems.{name}] in the config file: there is no system {name:?} (available: {known})");
        }
    }
    Ok(())
}

/// What a system's commands run on, from the binary's settings.
pub struct Commands {
    pub settings: Settings,
}

#[async_trait]
impl CommandHost for Commands {
    async fn data_bus(&self) -> Result<Platform> {
        match &self.settings.server {
            Some(server) => {
                let bus = KafkaBus::connect(server).map_err(|e| anyhow::anyhow!("--server: {e}"))?;
                Ok(Platform::new(Arc::new(bus), None, None, async {}))
            }
            None => {
                let broker = open_broker(&self.settings)?;
                let bus = Arc::new(EmbeddedBus::new(broker.clone()));
                Ok(Platform::new(bus, None, None, async move { broker.shutdown() }))
            }
        }
    }

    async fn scratch(&self, database: Option<&str>) -> Result<Platform> {
        let dir = tempfile::tempdir().context("cannot create a temporary data dir")?;
        let broker = crate::commands::scratch_broker(dir.path())?;
        let url = database.map_or_else(|| SqlStore::sqlite_url(dir.path()), str::to_string);
        let store = SqlStore::connect(&url).await.context("cannot open the scratch weir's database")?;
        // The key-value store `weir up` would have: the embedded journal, or the tables of a database given.
        let kv: Arc<dyn KvStore> = if database.is_some() {
            Arc::new(SqlKv::new(store.clone()))
        } else {
            Arc::new(JournalKv::open(dir.path().join("kv"), JournalOptions::default())?)
        };
        let bus: Arc<dyn weir_runtime::Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
        // A registry of its own, for systems whose events are typed.
        let registry = weir_schema::SchemaService::start(bus.clone(), weir_schema::ServiceConfig::default())
            .await
            .map_err(|e| anyhow::anyhow!("the scratch weir's schema registry: {e}"))?;
        let schemas = Arc::new(weir_schema::Serializers::new(registry));
        Ok(Platform::new(bus, Some(store), Some(kv), async move {
            broker.shutdown();
            drop(dir);
        })
        .with_schemas(schemas))
    }

    fn shutdown_signal(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(shutdown_signal())
    }
}
