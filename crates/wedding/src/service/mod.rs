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
//! transaction), `store.rs` (every SQL statement), `clock.rs` (runs, their clocks, the virtual clock's advance), `simulation.rs` (a random
//! wedding driven in the background for the web console),
//! `consumer.rs` (a team's consumer group, on the runtime's `Runner`), `desk.rs` (a team's workers and queue).

mod clock;
mod consumer;
mod desk;
mod ingest;
mod routes;
mod simulation;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use weir_runtime::outbox::RelayWaker;
use weir_runtime::{Bus, SqlStore, Started, SystemContext, SystemError};

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
    /// The open run as this instance holds it (the database has the truth; `clock::refresh` follows it).
    run: Arc<Mutex<Option<Run>>>,
    /// The setups of the runs this process has held, for their reports.
    setups: Arc<Mutex<HashMap<i64, Arc<Setup>>>>,
    /// Whether this instance runs the desks (holds their lease); the others stand by.
    leading: Arc<AtomicBool>,
    /// The desks' step channels, while this instance runs them.
    desks: Arc<Mutex<Vec<mpsc::Sender<Step>>>>,
    /// One advance at a time.
    advancing: Arc<tokio::sync::Mutex<()>>,
    /// One run opened at a time.
    opening: Arc<tokio::sync::Mutex<()>>,
    /// The simulated runs this instance drives (`POST /api/wedding/simulate`), by run.
    simulations: Arc<Mutex<HashMap<i64, simulation::Simulation>>>,
    /// One simulated run started at a time.
    simulating: Arc<tokio::sync::Mutex<()>>,
}

impl Shared {
    /// The open real-clock run, its time and setup, if any.
    fn real_now(&self) -> Option<(i64, crate::rules::Ms, Arc<Setup>)> {
        let run = self.run.lock();
        run.as_ref().filter(|r| r.is_real()).map(|r| (r.id, r.now(), r.setup.clone()))
    }

    /// The rules and policy of `run`, from its row when this instance has not held it.
    async fn setup_of(&self, run: i64) -> Result<Arc<Setup>, sqlx::Error> {
        if let Some(setup) = self.setups.lock().get(&run).cloned() {
            return Ok(setup);
        }
        Ok(match store::find_run(&self.store, run).await? {
            Some(row) => self.setup_from(&row),
            None => Arc::new(Setup { rules: self.config.rules.clone(), policy: self.config.policy }),
        })
    }

    /// The setup a run's row records (its start request's body, read as `start` read it then).
    fn setup_from(&self, row: &store::RunRow) -> Arc<Setup> {
        let body = serde_json::from_str(&row.setup).unwrap_or(serde_json::Value::Null);
        let setup = routes::run_setup(self, &body)
            .unwrap_or_else(|_| Setup { rules: self.config.rules.clone(), policy: self.config.policy });
        Arc::new(setup)
    }

    /// Where `run`'s clock stands now, if it is known.
    async fn clock_of(&self, run: i64) -> Result<Option<crate::rules::Ms>, sqlx::Error> {
        if let Some(now) = self.run.lock().as_ref().filter(|r| r.id == run).map(Run::now) {
            return Ok(Some(now));
        }
        Ok(store::find_run(&self.store, run).await?.map(|row| Run::from_row(&row, self.setup_from(&row)).now()))
    }
}

/// Starts the wedding's HTTP routes (ingest, start, advance, report, events) and its desks. The topics and tables
/// must exist (`WeddingSystem` declares them).
///
/// Instances sharing one database share the work this way: every instance takes events over HTTP (stored with their
/// outbox rows, published by whichever relay), and one of them at a time runs the desks, their consumer groups and
/// the sweeper: the one holding the desks' lease (`store::try_lease_desks`). The others stand by and take the lease
/// over when its holder dies; the new desks resume the open run from the database (its clock, the handlings under
/// way, the events still waiting), so no event is lost or handled twice, and a team never has more workers than its
/// rules give it.
pub async fn start(ctx: SystemContext, config: ServiceConfig) -> Result<Started, SystemError> {
    let shared = Shared {
        store: ctx.store.clone(),
        outbox: ctx.outbox.clone(),
        config: Arc::new(config),
        run: Arc::new(Mutex::new(None)),
        setups: Arc::new(Mutex::new(HashMap::new())),
        leading: Arc::new(AtomicBool::new(false)),
        desks: Arc::new(Mutex::new(Vec::new())),
        advancing: Arc::new(tokio::sync::Mutex::new(())),
        opening: Arc::new(tokio::sync::Mutex::new(())),
        simulations: Arc::new(Mutex::new(HashMap::new())),
        simulating: Arc::new(tokio::sync::Mutex::new(())),
    };
    let mut started = Started::default();
    started.spawn("wedding desks", lead(ctx.bus.clone(), shared.clone(), ctx.stop.clone()));
    started.routes = routes::router(shared);
    Ok(started)
}

/// Stands by until this instance holds the desks' lease, then runs them until the platform stops or the lease is
/// lost (its database connection broke: another instance may hold it by now), and stands by again.
async fn lead(bus: Arc<dyn Bus>, s: Shared, mut stop: watch::Receiver<bool>) -> Result<(), SystemError> {
    let mut said_standing_by = false;
    loop {
        let lease = tokio::select! {
            _ = clock::stopped(&mut stop) => return Ok(()),
            lease = store::try_lease_desks(&s.store) => lease,
        };
        let mut lease = match lease {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                if !std::mem::replace(&mut said_standing_by, true) {
                    tracing::info!("another instance runs the wedding's desks; this one takes events and stands by");
                }
                tokio::select! {
                    _ = clock::stopped(&mut stop) => return Ok(()),
                    _ = tokio::time::sleep(LEASE_POLL) => continue,
                }
            }
            Err(e) => {
                store::db_error("lease", &e);
                tokio::select! {
                    _ = clock::stopped(&mut stop) => return Ok(()),
                    _ = tokio::time::sleep(LEASE_POLL) => continue,
                }
            }
        };
        if said_standing_by {
            tracing::info!("this instance took the wedding's desks over");
        }
        said_standing_by = false;
        if let Err(e) = clock::refresh(&s).await {
            store::db_error("refresh", &e);
        }
        let (desks_stop, desks_stopped) = watch::channel(false);
        let mut desks = run_desks(&bus, &s, desks_stopped).await;
        // Only now: `advance` needs the desks' step channels.
        s.leading.store(true, Ordering::SeqCst);
        metrics::gauge!("wedding_desks_leading").set(1.0);
        let mut check = tokio::time::interval(LEASE_CHECK);
        let lost = loop {
            tokio::select! {
                _ = clock::stopped(&mut stop) => break false,
                _ = check.tick() => {
                    if !lease.holds().await {
                        break true;
                    }
                }
                // A desk task ended early (its consumer failed for good): stop the rest and start again.
                Some(ended) = desks.join_next() => {
                    tracing::warn!(?ended, "a wedding desk task ended; restarting the desks");
                    break true;
                }
            }
        };
        s.leading.store(false, Ordering::SeqCst);
        metrics::gauge!("wedding_desks_leading").set(0.0);
        let _ = desks_stop.send(true);
        while let Some(ended) = desks.join_next().await {
            if let Ok(Err(e)) = ended {
                tracing::warn!(error = %e, "a wedding desk task stopped with an error");
            }
        }
        drop(lease);
        if !lost {
            return Ok(());
        }
        tracing::warn!("the wedding's desks stopped here (their lease or a task was lost); standing by");
    }
}

/// How often a standing-by instance tries for the desks' lease, and how often its holder checks it still holds it.
const LEASE_POLL: Duration = Duration::from_millis(500);
const LEASE_CHECK: Duration = Duration::from_secs(1);

/// The desks, one per team with its consumer group, and the sweeper, stopped by `stop`.
async fn run_desks(
    bus: &Arc<dyn Bus>,
    s: &Shared,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinSet<Result<(), SystemError>> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut steps = Vec::new();
    for team in Team::ALL {
        let (step_tx, step_rx) = mpsc::channel(1);
        steps.push(step_tx);
        // Generous: a desk that falls behind its consumer holds the consumer back rather than growing without bound.
        let (tx, rx) = mpsc::channel(65_536);
        tasks.spawn(consumer::run(bus.clone(), team, tx, stop.clone()));
        let mut desk = desk::Desk::new(s.clone(), team);
        tasks.spawn(async move {
            desk.resume().await;
            desk.run(rx, step_rx).await;
            Ok(())
        });
    }
    *s.desks.lock() = steps;
    tasks.spawn(clock::sweeper(s.clone(), stop));
    tasks
}
