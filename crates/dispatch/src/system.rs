//! Dispatch as a weir system: its settings (`[systems.dispatch]`, `WEIR_DISPATCH_*`, `--set dispatch.KEY=VALUE`), its
//! topics and tables, its HTTP API (`api`) and its two background tasks: the assigner, which gives waiting events out
//! in rounds, and the expirer, which takes back the assignments of sessions that ended; and `weir dispatch
//! generate`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weir_runtime::{CommandHost, SqlStore, Started, System, SystemContext, SystemError, SystemSettings, TopicSpec};

use crate::assign::{self, Rules};
use crate::store::{self, INBOUND, OUTBOUND};

/// Dispatch's settings.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchSettings {
    /// Partitions of `events.outbound` and `events.inbound` when they are created.
    pub partitions: i32,
    /// Most open assignments a reviewer holds at once.
    pub max_open_per_user: i64,
    /// How long a session lasts without activity, in seconds.
    pub session_ttl_seconds: u64,
    /// Events go only to reviewers of their region.
    #[serde(deserialize_with = "weir_runtime::system::de::flag")]
    pub by_region: bool,
    /// Events given out per round (one transaction).
    pub round: i64,
    /// An assignment not settled within this many seconds is taken back and given to another reviewer.
    pub reassign_after_seconds: u64,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            partitions: 4,
            max_open_per_user: 50,
            session_ttl_seconds: 300,
            by_region: false,
            round: 2000,
            reassign_after_seconds: 900,
        }
    }
}

impl DispatchSettings {
    /// The settings, checked; an error names the bad one and where it came from.
    pub fn read(settings: &SystemSettings) -> Result<DispatchSettings, SystemError> {
        let s: DispatchSettings = settings.parse()?;
        if !(1..=1000).contains(&s.partitions) {
            return Err(settings.invalid("partitions", format!("must be from 1 to 1000, got {}", s.partitions)));
        }
        if !(1..=100_000).contains(&s.max_open_per_user) {
            return Err(settings.invalid("max_open_per_user", "must be from 1 to 100000"));
        }
        if !(1..=86_400).contains(&s.session_ttl_seconds) {
            return Err(settings.invalid("session_ttl_seconds", "must be from 1 to 86400"));
        }
        if !(1..=604_800).contains(&s.reassign_after_seconds) {
            return Err(settings.invalid("reassign_after_seconds", "must be from 1 to 604800"));
        }
        if !(1..=10_000).contains(&s.round) {
            return Err(settings.invalid("round", "must be from 1 to 10000"));
        }
        Ok(s)
    }

    pub fn rules(&self) -> Rules {
        Rules { cap: self.max_open_per_user, by_region: self.by_region }
    }

    pub fn ttl_ms(&self) -> i64 {
        self.session_ttl_seconds as i64 * 1000
    }
}

/// What the API and the tasks share.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub store: SqlStore,
    pub settings: DispatchSettings,
    pub outbox: weir_runtime::outbox::RelayWaker,
    /// Wakes the assigner: new events, a reviewer active or with room again.
    pub wake: Arc<tokio::sync::Notify>,
}

/// Dispatch (seed 003).
#[derive(Clone, Copy, Debug, Default)]
pub struct DispatchSystem;

#[async_trait]
impl System for DispatchSystem {
    fn name(&self) -> &'static str {
        "dispatch"
    }

    fn about(&self) -> &'static str {
        "Dispatch (seed 003): detection events relayed from the database and assigned to active reviewers"
    }

    fn check(&self, settings: &SystemSettings) -> Result<(), SystemError> {
        DispatchSettings::read(settings).map(|_| ())
    }

    fn topics(&self, settings: &SystemSettings) -> Result<Vec<TopicSpec>, SystemError> {
        let s = DispatchSettings::read(settings)?;
        Ok(vec![TopicSpec::new(OUTBOUND, s.partitions), TopicSpec::new(INBOUND, s.partitions)])
    }

    async fn migrate(&self, store: &SqlStore) -> Result<(), SystemError> {
        Ok(store::migrate(store).await?)
    }

    async fn start(&self, ctx: SystemContext) -> Result<Started, SystemError> {
        let settings = DispatchSettings::read(&ctx.settings)?;
        let dispatch = Dispatch {
            store: ctx.store.clone(),
            settings,
            outbox: ctx.outbox.clone(),
            wake: Arc::new(tokio::sync::Notify::new()),
        };
        let mut started = Started { routes: crate::api::routes(dispatch.clone()), tasks: Vec::new() };
        started.spawn("dispatch assigner", assigner(dispatch.clone(), ctx.stop.clone()));
        started.spawn("dispatch expirer", expirer(dispatch, ctx.stop.clone()));
        Ok(started)
    }

    fn describe_metrics(&self) {
        metrics::describe_counter!("dispatch_assigned_total", "Events given to a reviewer");
        metrics::describe_counter!(
            "dispatch_taken_back_total",
            "Open assignments taken back: their reviewer's session ended, or they were not settled in time"
        );
    }

    fn command(&self) -> Option<clap::Command> {
        Some(crate::cli::command())
    }

    async fn run_command(&self, matches: clap::ArgMatches, host: Arc<dyn CommandHost>) -> anyhow::Result<()> {
        crate::cli::run(matches, host).await
    }
}

/// Gives waiting events out, a round at a time, while rounds assign something; then waits to be woken (or 250 ms,
/// for events written by another process).
async fn assigner(d: Dispatch, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), SystemError> {
    while !*stop.borrow() {
        let now = weir_runtime::time::now_ms();
        match assign::assign_waiting(&d.store, d.settings.rules(), now, d.settings.round).await {
            Ok(made) if !made.is_empty() => {
                metrics::counter!("dispatch_assigned_total").increment(made.len() as u64);
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("dispatch assigner: {e}"),
        }
        tokio::select! {
            _ = d.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    Ok(())
}

/// Takes back the assignments of ended sessions, and those not settled in time, once a second.
async fn expirer(d: Dispatch, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), SystemError> {
    let after_ms = d.settings.reassign_after_seconds as i64 * 1000;
    while !*stop.borrow() {
        let now = weir_runtime::time::now_ms();
        match assign::expire(&d.store, now).await {
            Ok(n) if n > 0 => {
                metrics::counter!("dispatch_taken_back_total", "reason" => "session ended").increment(n);
                d.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("dispatch expirer: {e}"),
        }
        match assign::reassign_stale(&d.store, now, after_ms).await {
            Ok(n) if n > 0 => {
                metrics::counter!("dispatch_taken_back_total", "reason" => "not settled in time").increment(n);
                d.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("dispatch expirer: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    Ok(())
}
