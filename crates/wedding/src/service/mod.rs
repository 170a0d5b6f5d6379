//! The wedding services on the bus: HTTP ingest that validates incidents like the exercise's Coordinator and stores
//! each with an outbox row in one transaction (the platform's relay publishes it to its type's topic,
//! `wedding.<type>`), and one desk per team, fed by a consumer group over its types' topics, whose workers follow
//! their routines on the run's clock and take events by the policy. Statuses live in `wedding_events`; an event routed
//! to two teams is claimed there once (`UPDATE ... WHERE status = 'pending'`).
//!
//! A run starts at 00:00 when `POST /api/wedding/start` is called or the first event arrives with no run open. Its
//! clock is either
//! - real: `speed` times wall-clock time (1 by default); the desks act every few milliseconds; or
//! - virtual: it moves only when `POST /api/wedding/advance` says so, and then stops at every moment where something
//!   can happen (an arrival, the start of an available phase, the end of a handling). At each moment every desk, in
//!   team order, first waits until every event sent so far has reached it through the bus, then acts. So a virtual
//!   run's outcome depends on its events alone, not on how fast the machine is: the same as the in-process
//!   simulation in `schedule.rs`, decision for decision.
//!
//! The files: `routes.rs` (the HTTP API), `ingest.rs` (validation, then the event rows and their outbox rows in one
//! transaction), `store.rs` (every SQL statement), `clock.rs` (runs, their clocks, the virtual clock's advance),
//! `consumer.rs` (a team's consumer group, on the runtime's `Runner`), `desk.rs` (a team's workers and queue).

mod clock;
mod consumer;
mod desk;
mod ingest;
mod routes;
mod store;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use weir_runtime::outbox::RelayWaker;
use weir_runtime::{SqlStore, Started, SystemContext, SystemError};

use crate::rules::{Rules, Team};
use crate::schedule::Policy;
use clock::{Run, Setup, Step};
pub use store::migrate;

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub rules: Rules,
    pub policy: Policy,
    /// How many times faster than real time a real-clock run goes.
    pub speed: f64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig { rules: Rules::default(), policy: Policy::Edf, speed: 1.0 }
    }
}

/// The largest message (key and value, plus a record's overhead) ingest accepts for an event's topic. The bus cannot
/// say what its topics accept, so this stays under the default `max.message.bytes` of weir (1,048,588) and of Kafka
/// brokers, and under librdkafka's `message.max.bytes` (1,000,000). An event over it is refused with 413 before
/// anything is stored: once committed, the relay must be able to publish it.
pub const MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The topic of an event type.
pub fn topic_for(event_type: &str) -> String {
    format!("wedding.{event_type}")
}

fn team_index(team: Team) -> usize {
    Team::ALL.iter().position(|t| *t == team).unwrap_or(0)
}

/// What the routes, the desks and the sweeper share.
#[derive(Clone)]
struct Shared {
    store: SqlStore,
    /// Wakes the outbox relay after ingest commits.
    outbox: RelayWaker,
    config: Arc<ServiceConfig>,
    run: Arc<Mutex<Option<Run>>>,
    /// The setups of the runs this process has held, for their reports.
    setups: Arc<Mutex<HashMap<i64, Arc<Setup>>>>,
    desks: Arc<Vec<mpsc::Sender<Step>>>,
    /// One advance at a time.
    advancing: Arc<tokio::sync::Mutex<()>>,
    /// One run opened at a time.
    opening: Arc<tokio::sync::Mutex<()>>,
}

impl Shared {
    /// The open real-clock run, its time and setup, if any.
    fn real_now(&self) -> Option<(i64, crate::rules::Ms, Arc<Setup>)> {
        let run = self.run.lock();
        run.as_ref().filter(|r| r.is_real()).map(|r| (r.id, r.now(), r.setup.clone()))
    }

    fn setup_of(&self, run: i64) -> Arc<Setup> {
        self.setups
            .lock()
            .get(&run)
            .cloned()
            .unwrap_or_else(|| Arc::new(Setup { rules: self.config.rules.clone(), policy: self.config.policy }))
    }
}

/// Starts the desks, their consumer groups and the sweeper, and returns them with the HTTP routes (ingest, start,
/// advance, report, events). The topics and tables must exist (`WeddingSystem` declares them).
pub async fn start(ctx: SystemContext, config: ServiceConfig) -> Result<Started, SystemError> {
    let mut step_txs = Vec::new();
    let mut step_rxs = Vec::new();
    for _ in Team::ALL {
        let (tx, rx) = mpsc::channel(1);
        step_txs.push(tx);
        step_rxs.push(rx);
    }
    let shared = Shared {
        store: ctx.store.clone(),
        outbox: ctx.outbox.clone(),
        config: Arc::new(config),
        run: Arc::new(Mutex::new(None)),
        setups: Arc::new(Mutex::new(HashMap::new())),
        desks: Arc::new(step_txs),
        advancing: Arc::new(tokio::sync::Mutex::new(())),
        opening: Arc::new(tokio::sync::Mutex::new(())),
    };
    let mut started = Started::default();
    for (team, steps) in Team::ALL.into_iter().zip(step_rxs) {
        // Generous: a desk that falls behind its consumer holds the consumer back rather than growing without bound.
        let (tx, rx) = mpsc::channel(65_536);
        started.spawn(format!("wedding {team} consumer"), consumer::run(ctx.bus.clone(), team, tx, ctx.stop.clone()));
        let desk = desk::Desk::new(shared.clone(), team);
        started.spawn(format!("wedding {team} desk"), async move {
            desk.run(rx, steps).await;
            Ok(())
        });
    }
    started.spawn("wedding sweeper", clock::sweeper(shared.clone(), ctx.stop.clone()));
    started.routes = routes::router(shared);
    Ok(started)
}
