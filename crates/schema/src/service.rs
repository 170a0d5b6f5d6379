//! The registry as a service: its state kept in the `_schemas` topic through the [`Bus`], so the embedded log keeps
//! it on one machine and the cluster keeps it when weir runs on one, where every instance serves the same registry.
//!
//! A reader task applies `_schemas` from its start, in order, to the [`Registry`]. A change is written as records,
//! then waited for until the reader has applied them: every instance decides on the same log, and a writer whose
//! record lost to another instance's (the same version, or the same id, claimed first) sees it and decides again.
//! At start an empty marker record is written and read back, so the registry serves nothing before it has caught up.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{watch, Mutex};
use weir_runtime::{Bus, BusError, OutgoingMessage, StartFrom};

use crate::records::Record;
use crate::registry::{Compatibility, Mode, NewSchema, Registration, Registry, RegistryError, VersionSel};

/// The topic Confluent's registry keeps its schemas in, and weir's.
pub const SCHEMAS_TOPIC: &str = "_schemas";

/// How the service runs.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub topic: String,
    /// The compatibility level when none is configured.
    pub default_compatibility: Compatibility,
    /// How long a write waits to be read back, and the start to catch up.
    pub timeout: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            topic: SCHEMAS_TOPIC.to_string(),
            default_compatibility: Compatibility::Backward,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The schema registry over a bus.
pub struct SchemaService {
    bus: Arc<dyn Bus>,
    config: ServiceConfig,
    state: Arc<RwLock<Registry>>,
    /// The offset after the last record applied.
    applied: watch::Receiver<i64>,
    /// One change at a time from this instance: its own writes never race each other.
    writer: Mutex<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SchemaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaService").field("topic", &self.config.topic).finish_non_exhaustive()
    }
}

impl Drop for SchemaService {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// How often a registration is decided again after losing to another instance's, before giving up.
const ATTEMPTS: u32 = 32;
/// The longest pause between two attempts. Instances registering under one subject in a tight loop would otherwise
/// keep colliding, one of them losing every time: a random pause, growing with each loss, lets one through.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

impl SchemaService {
    /// Creates `_schemas` if missing, reads it to its end and keeps reading it.
    pub async fn start(bus: Arc<dyn Bus>, config: ServiceConfig) -> Result<Arc<SchemaService>, RegistryError> {
        bus.ensure_kept_topic(&config.topic).await.map_err(store)?;
        let subscription = bus.read(std::slice::from_ref(&config.topic), StartFrom::Earliest).await.map_err(store)?;
        let state = Arc::new(RwLock::new(Registry::new(config.default_compatibility)));
        let (applied_tx, applied) = watch::channel(0i64);
        let reader = tokio::spawn(read_loop(subscription, state.clone(), applied_tx, config.topic.clone()));
        let service = Arc::new(SchemaService { bus, config, state, applied, writer: Mutex::new(()), reader });
        service.write(vec![Record::Noop]).await?;
        tracing::info!(
            topic = %service.config.topic,
            subjects = service.state.read().subjects(true, "").len(),
            "schema registry caught up"
        );
        Ok(service)
    }

    /// The registry's state, for reading. Hold it briefly: the reader waits for it.
    pub fn state(&self) -> parking_lot::RwLockReadGuard<'_, Registry> {
        self.state.read()
    }

    /// Waits until this instance has read everything written to `_schemas` before the call (a marker written and read
    /// back): what another instance registered a moment ago is then known here.
    pub async fn catch_up(&self) -> Result<(), RegistryError> {
        self.write(vec![Record::Noop]).await
    }

    /// Writes records to `_schemas` and waits until the reader has applied them.
    async fn write(&self, records: Vec<Record>) -> Result<(), RegistryError> {
        let messages = records
            .iter()
            .map(|r| {
                let (key, value) = r.encode();
                OutgoingMessage {
                    topic: self.config.topic.clone(),
                    key: Some(key.into()),
                    value: value.map(Into::into),
                    partition: Some(0),
                    ..Default::default()
                }
            })
            .collect();
        let deliveries = self.bus.produce_all(messages).await.map_err(store)?;
        let Some(last) = deliveries.iter().map(|d| d.offset).max() else { return Ok(()) };
        let mut applied = self.applied.clone();
        let caught_up = tokio::time::timeout(self.config.timeout, applied.wait_for(|next| *next > last)).await;
        match caught_up {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(RegistryError::Store("the registry's reader stopped".into())),
            Err(_) => Err(RegistryError::Timeout(format!(
                "{} was written but not read back within {:?}",
                self.config.topic, self.config.timeout
            ))),
        }
    }

    /// Registers a schema under a subject: its id and version (the existing ones when the subject has it already).
    pub async fn register(&self, subject: &str, new: &NewSchema) -> Result<(i32, i32), RegistryError> {
        let _one = self.writer.lock().await;
        for attempt in 0..ATTEMPTS {
            let plan = self.state.read().plan_register(subject, new)?;
            match plan {
                Registration::Exists { id, version } => return Ok((id, version)),
                Registration::Write { id, version, record } => {
                    self.write(vec![record]).await?;
                    if self.state.read().holds(subject, version, id, new) {
                        metrics::counter!("weir_schema_registrations_total").increment(1);
                        return Ok((id, version));
                    }
                    tracing::debug!(subject, version, id, "another instance registered first; deciding again");
                    let ceiling = Duration::from_millis(1 << attempt.min(8)).min(MAX_BACKOFF);
                    tokio::time::sleep(ceiling.mul_f64(rand::random::<f64>())).await;
                }
            }
        }
        Err(RegistryError::Store(format!("other instances kept registering under {subject:?}; try again")))
    }

    /// Deletes a version (soft, or for good once soft); the version deleted.
    pub async fn delete_version(&self, subject: &str, sel: VersionSel, permanent: bool) -> Result<i32, RegistryError> {
        let _one = self.writer.lock().await;
        let (version, record) = self.state.read().plan_delete_version(subject, sel, permanent)?;
        self.write(vec![record]).await?;
        Ok(version)
    }

    /// Deletes a subject's versions (soft, or for good once soft); the versions deleted.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<i32>, RegistryError> {
        let _one = self.writer.lock().await;
        let (versions, records) = self.state.read().plan_delete_subject(subject, permanent)?;
        self.write(records).await?;
        Ok(versions)
    }

    /// Sets the compatibility level, global or a subject's.
    pub async fn set_compatibility(&self, subject: Option<&str>, level: Compatibility) -> Result<(), RegistryError> {
        if let Some(s) = subject {
            crate::registry::validate_subject(s)?;
        }
        let _one = self.writer.lock().await;
        self.write(vec![Record::Config { subject: subject.map(str::to_string), level: Some(level) }]).await
    }

    /// Removes a compatibility level; the one it was.
    pub async fn delete_compatibility(&self, subject: Option<&str>) -> Result<Compatibility, RegistryError> {
        let _one = self.writer.lock().await;
        let was = self.state.read().compatibility(subject, subject.is_none())?;
        self.write(vec![Record::Config { subject: subject.map(str::to_string), level: None }]).await?;
        Ok(was)
    }

    /// Sets a mode, global or a subject's.
    pub async fn set_mode(&self, subject: Option<&str>, mode: Mode, force: bool) -> Result<(), RegistryError> {
        let _one = self.writer.lock().await;
        let record = self.state.read().plan_mode(subject, mode, force)?;
        self.write(vec![record]).await
    }

    /// Removes a mode; the one it was.
    pub async fn delete_mode(&self, subject: Option<&str>) -> Result<Mode, RegistryError> {
        let _one = self.writer.lock().await;
        let was = self.state.read().mode(subject, subject.is_none())?;
        self.write(vec![Record::Mode { subject: subject.map(str::to_string), mode: None }]).await?;
        Ok(was)
    }
}

/// Applies `_schemas` to the state as it grows, and says how far it got.
async fn read_loop(
    mut subscription: Box<dyn weir_runtime::Subscription>,
    state: Arc<RwLock<Registry>>,
    applied: watch::Sender<i64>,
    topic: String,
) {
    let mut outage = false;
    loop {
        let batch = match subscription.next_batch(Duration::from_millis(200)).await {
            Ok(batch) => {
                if outage {
                    tracing::info!(topic, "the schema registry reads its topic again");
                    outage = false;
                }
                batch
            }
            Err(BusError::Closed) => return,
            Err(BusError::Rebalanced) => continue,
            Err(e) => {
                if !outage {
                    tracing::warn!(topic, error = %e, "the schema registry cannot read its topic; retrying");
                    outage = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Some(last) = batch.last().map(|m| m.offset) else { continue };
        {
            let mut state = state.write();
            for m in batch {
                let Some(key) = m.key.as_deref() else {
                    tracing::warn!(topic, offset = m.offset, "a record without a key: ignored");
                    continue;
                };
                match Record::decode(key, m.value.as_deref()) {
                    Ok(record) => {
                        state.apply(record);
                    }
                    Err(e) => {
                        tracing::warn!(topic, offset = m.offset, error = %e, "a record that does not parse: ignored")
                    }
                }
            }
        }
        applied.send_replace(last + 1);
    }
}

fn store(e: BusError) -> RegistryError {
    match e {
        BusError::Unavailable(m) => RegistryError::Store(format!("the cluster is unreachable: {m}")),
        other => RegistryError::Store(other.to_string()),
    }
}
