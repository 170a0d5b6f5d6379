//! The repair shop as a weir system: its settings (`[systems.repair]`, `WEIR_REPAIR_*`, `--set repair.KEY=VALUE`),
//! its topics and event schemas, its tables, its three services and the cash desk's till, its HTTP API and
//! `weir repair ...`.

use std::sync::Arc;

use async_trait::async_trait;
use weir_broker::SubjectNameStrategy;
use weir_runtime::events::EventSchema;
use weir_runtime::{CommandHost, SqlStore, Started, System, SystemContext, SystemError, SystemSettings, TopicSpec};

use crate::calendar::Hours;
use crate::clock::{ShopClock, Speed};
use crate::crypto::FieldKey;
use crate::events::{APPOINTMENTS, PAYMENTS, TICKETS};
use crate::services::{self, CashDesk, Hop, LoopConfig, Secretary, Shop, Ticketing};

/// The shop's settings.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepairSettings {
    /// Partitions of `tickets`, `appointments` and `payments` when they are created.
    pub partitions: i32,
    /// Workers per service (each its own group member and transactional id).
    pub workers: usize,
    /// Records a worker takes per batch (and per transaction).
    pub max_batch: usize,
    /// Repair bays.
    pub bays: u32,
    pub opens_hour: u32,
    pub closes_hour: u32,
    pub slot_minutes: u32,
    /// Shop seconds per real second, or `max` (every repair ends as soon as it is booked).
    pub clock_speed: serde_json::Value,
    /// AES-256 key (base64) for the requester's personal data; empty: not encrypted.
    pub encryption_key: String,
    /// Subject naming of `tickets`, which carries two record types: `record` or `topic-record`.
    pub tickets_subject_strategy: String,
    /// How long a service's group waits for a worker that went silent (a killed process) before its partitions
    /// move to the others, in milliseconds.
    pub session_timeout_ms: u64,
    /// Each hop consumes and produces in one Kafka transaction; `false` on a cluster without transactions
    /// (Tansu 0.6): outputs first, then offsets, each effect still once through the services' idempotence.
    #[serde(deserialize_with = "weir_runtime::system::de::flag")]
    pub transactions: bool,
    /// Each service's password (`[systems.repair.passwords] secretary = "..."`); a service without one gets a random
    /// password at each start.
    pub passwords: Passwords,
}

impl Default for RepairSettings {
    fn default() -> Self {
        RepairSettings {
            partitions: 4,
            workers: 1,
            max_batch: 500,
            bays: 3,
            opens_hour: 8,
            closes_hour: 18,
            slot_minutes: 30,
            clock_speed: serde_json::Value::from(1),
            encryption_key: String::new(),
            tickets_subject_strategy: "record".into(),
            passwords: Default::default(),
            transactions: true,
            session_timeout_ms: 10_000,
        }
    }
}

impl RepairSettings {
    /// The settings, checked; an error names the bad one and where it came from.
    pub fn read(settings: &SystemSettings) -> Result<RepairSettings, SystemError> {
        let s: RepairSettings = settings.parse()?;
        if !(1..=1000).contains(&s.partitions) {
            return Err(settings.invalid("partitions", format!("must be from 1 to 1000, got {}", s.partitions)));
        }
        if !(1..=64).contains(&s.workers) {
            return Err(settings.invalid("workers", format!("must be from 1 to 64, got {}", s.workers)));
        }
        if !(1..=10_000).contains(&s.max_batch) {
            return Err(settings.invalid("max_batch", format!("must be from 1 to 10000, got {}", s.max_batch)));
        }
        if !(1000..=300_000).contains(&s.session_timeout_ms) {
            return Err(settings.invalid("session_timeout_ms", "must be from 1000 to 300000"));
        }
        s.hours().check().map_err(|e| settings.invalid("bays", e))?;
        s.speed().map_err(|e| settings.invalid("clock_speed", e))?;
        s.key().map_err(|e| settings.invalid("encryption_key", e))?;
        s.strategy().map_err(|e| settings.invalid("tickets_subject_strategy", e))?;
        if let Some(unknown) = s.passwords.0.keys().find(|k| !crate::accounts::services().any(|n| n == k.as_str())) {
            let known = crate::accounts::services().collect::<Vec<_>>().join(", ");
            return Err(settings.invalid("passwords", format!("{unknown:?} is not a service ({known})")));
        }
        Ok(s)
    }

    pub fn hours(&self) -> Hours {
        Hours {
            bays: self.bays,
            opens_hour: self.opens_hour,
            closes_hour: self.closes_hour,
            slot_minutes: self.slot_minutes,
        }
    }

    pub fn speed(&self) -> Result<Speed, String> {
        match &self.clock_speed {
            serde_json::Value::String(s) => s.parse(),
            other => other.to_string().parse(),
        }
    }

    pub fn key(&self) -> Result<Option<FieldKey>, String> {
        if self.encryption_key.trim().is_empty() {
            return Ok(None);
        }
        FieldKey::from_base64(&self.encryption_key).map(Some).map_err(|e| e.to_string())
    }

    pub fn strategy(&self) -> Result<SubjectNameStrategy, String> {
        match self.tickets_subject_strategy.as_str() {
            "record" => Ok(SubjectNameStrategy::RecordName),
            "topic-record" => Ok(SubjectNameStrategy::TopicRecordName),
            other => Err(format!("{other:?}: `tickets` carries two record types, so record or topic-record")),
        }
    }
}

/// Services' passwords by service; `Debug` shows only the names.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Passwords(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// The car repair shop (seed 001).
#[derive(Clone, Copy, Debug, Default)]
pub struct RepairSystem;

#[async_trait]
impl System for RepairSystem {
    fn name(&self) -> &'static str {
        "repair"
    }

    fn about(&self) -> &'static str {
        "The car repair shop (seed 001): ticketing, secretary and cash desk exchanging Avro events, exactly once"
    }

    fn check(&self, settings: &SystemSettings) -> Result<(), SystemError> {
        RepairSettings::read(settings).map(|_| ())
    }

    fn topics(&self, settings: &SystemSettings) -> Result<Vec<TopicSpec>, SystemError> {
        let s = RepairSettings::read(settings)?;
        let mut topics: Vec<TopicSpec> =
            [TICKETS, APPOINTMENTS, PAYMENTS].into_iter().map(|t| TopicSpec::new(t, s.partitions)).collect();
        topics
            .extend([TICKETS, APPOINTMENTS, PAYMENTS].into_iter().map(|t| TopicSpec::new(crate::accounts::dlq(t), 1)));
        Ok(topics)
    }

    fn event_schemas(&self, settings: &SystemSettings) -> Result<Vec<EventSchema>, SystemError> {
        let s = RepairSettings::read(settings)?;
        Ok(crate::events::schemas(s.strategy().map_err(SystemError::Setting)?))
    }

    async fn migrate(&self, store: &SqlStore) -> Result<(), SystemError> {
        Ok(crate::store::migrate(store).await?)
    }

    fn describe_metrics(&self) {
        metrics::describe_counter!("repair_events_in_total", "Records a repair shop service consumed");
        metrics::describe_counter!("repair_events_out_total", "Events a repair shop service produced");
        metrics::describe_counter!(
            "repair_duplicates_total",
            "Records a repair shop service had already applied (redelivered or published twice): applied once"
        );
        metrics::describe_counter!("repair_dead_letters_total", "Records a repair shop service could not decode");
        metrics::describe_counter!("repair_tickets_opened_total", "Tickets opened");
        metrics::describe_histogram!(
            "repair_close_seconds",
            metrics::Unit::Seconds,
            "Wall-clock time from a ticket's opening to its closing (consumer lag per service: weir_group_lag)"
        );
    }

    async fn start(&self, ctx: SystemContext) -> Result<Started, SystemError> {
        let s = RepairSettings::read(&ctx.settings)?;
        let shop = Shop {
            store: ctx.store.clone(),
            events: ctx.events.clone(),
            clock: ShopClock::new(s.speed().map_err(SystemError::Setting)?),
            hours: s.hours(),
            outbox: ctx.outbox.clone(),
        };
        let key = s.key().map_err(SystemError::Setting)?;
        let mut started = Started { routes: crate::api::routes(shop.clone(), key), tasks: Vec::new() };
        // Transactional ids unique to this process: two `weir up` on one cluster split the work, never fence each other.
        let instance = format!("{:08x}", rand::random::<u32>());
        // A hop per worker: the cash desk's holds what its worker read.
        let hops: [fn() -> Arc<dyn Hop>; 3] =
            [|| Arc::new(Secretary), || Arc::new(CashDesk::default()), || Arc::new(Ticketing)];
        for make in hops {
            let hop = make();
            // The service's own user: its bus is held to the service's ACLs. A password of this process's own
            // unless the settings give one (another process may then log in as the service, e.g. over Kafka).
            let password = s.passwords.0.get(hop.name()).cloned().unwrap_or_else(crate::crypto::FieldKey::generate);
            let account = crate::accounts::account(hop.name(), &password)
                .ok_or_else(|| SystemError::Other(format!("no account for {}", hop.name())))?;
            let access = |e: weir_runtime::AccessError| SystemError::Other(format!("{}: {e}", hop.name()));
            ctx.access.provision(&account).await.map_err(access)?;
            let service_bus = ctx.access.login(&account.user, &password).await.map_err(access)?;
            for worker in 0..s.workers {
                let config = LoopConfig {
                    transactional_id: s.transactions.then(|| format!("{}-{instance}-{worker}", hop.name())),
                    max_batch: s.max_batch,
                    session_timeout: std::time::Duration::from_millis(s.session_timeout_ms),
                };
                let (hop, shop, bus, stop) = (make(), shop.clone(), service_bus.clone(), ctx.stop.clone());
                started.spawn(
                    format!("repair {} worker {worker}", hop.name()),
                    services::run(hop, shop, bus, config, stop),
                );
            }
        }
        started.spawn("repair cash desk till", services::till(shop, ctx.stop.clone()));
        Ok(started)
    }

    fn command(&self) -> Option<clap::Command> {
        Some(crate::cli::command())
    }

    async fn run_command(&self, matches: clap::ArgMatches, host: Arc<dyn CommandHost>) -> anyhow::Result<()> {
        crate::cli::run(matches, host).await
    }
}
