//! Dispatch as a weir system: its settings (`[systems.dispatch]`, `WEIR_DISPATCH_*`, `--set dispatch.KEY=VALUE`), its
//! topics and tables, its HTTP API (`api`), `weir dispatch generate`, and its tasks:
//!
//! - the **assignment service's consumer** (group `dispatch-assignment`): `events.outbound` into its queue, exactly
//!   once into SQL, deduplicated by event id;
//! - the **assigner**, which gives waiting events out in rounds when woken (a batch received, a reviewer active or
//!   with room again) or every 250 ms (for what other instances changed);
//! - the **expirer**, once a second: takes back the assignments of reviewers whose session ended and of those not
//!   settled in time;
//! - the **relay's consumer** (group `dispatch-relay`): results from `events.inbound` into `detection_events.state`,
//!   exactly once into SQL, each applied only over an older version of its event (so a re-publication is harmless
//!   without a table of ids seen, which would grow by two rows an assignment);
//! - the **relay's sweep** on a cron schedule (`relay_schedule`, the origin's `*/15 * * * * *` by default), which
//!   wakes the outbox relay for events written by another process (`weir dispatch generate --database`) where no
//!   notification reaches it (SQLite; PostgreSQL's LISTEN/NOTIFY wakes it at once).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use weir_runtime::handler::{HandlerError, Runner, RunnerConfig, SqlHandler};
use weir_runtime::sql::{Dialect, SqlTx};
use weir_runtime::Message;
use weir_runtime::{CommandHost, SqlStore, Started, System, SystemContext, SystemError, SystemSettings, TopicSpec};

use crate::assign::{self, Changed, Rules};
use crate::events::{OutboundEvent, ResultMessage};
use crate::sessions::Sessions;
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
    /// A rejected event goes back to the queue for another reviewer (else rejecting settles it).
    #[serde(deserialize_with = "weir_runtime::system::de::flag")]
    pub requeue_rejected: bool,
    /// When the relay sweeps the outbox for events written by other processes: a cron expression, seconds first
    /// optional (`*/15 * * * * *`: every 15 seconds, the origin's), or `none`.
    pub relay_schedule: String,
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
            requeue_rejected: false,
            relay_schedule: "*/15 * * * * *".into(),
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
        s.schedule().map_err(|e| settings.invalid("relay_schedule", e))?;
        Ok(s)
    }

    /// The relay's sweep schedule (`None`: no sweep).
    pub fn schedule(&self) -> Result<Option<croner::Cron>, String> {
        if self.relay_schedule.trim() == "none" {
            return Ok(None);
        }
        croner::Cron::new(self.relay_schedule.trim()).with_seconds_optional().parse().map(Some).map_err(|e| {
            format!("{:?}: not a cron expression ({e}); e.g. \"*/15 * * * * *\", or none", self.relay_schedule)
        })
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
    pub sessions: Sessions,
    /// Wakes the assigner: new events, a reviewer active or with room again.
    pub wake: Arc<tokio::sync::Notify>,
    /// This instance's recent assignments, for the stats.
    pub recent: Arc<Mutex<Recent>>,
}

/// Assignments made in the last minute by this instance: when, and how long each event had waited.
#[derive(Debug, Default)]
pub struct Recent {
    made: VecDeque<(i64, i64)>,
    pub taken_back: u64,
}

impl Recent {
    const WINDOW_MS: i64 = 60_000;

    fn record(&mut self, now_ms: i64, waited: impl Iterator<Item = i64>) {
        self.made.extend(waited.map(|w| (now_ms, w)));
        self.trim(now_ms);
    }

    fn trim(&mut self, now_ms: i64) {
        while self.made.front().is_some_and(|(at, _)| *at <= now_ms - Self::WINDOW_MS) {
            self.made.pop_front();
        }
    }

    /// Assigned per second over the last minute, and the p50 and p99 of the time from an event's creation to its
    /// assignment (milliseconds), if any were made.
    pub fn summary(&mut self, now_ms: i64) -> (f64, Option<(i64, i64)>) {
        self.trim(now_ms);
        let rate = self.made.len() as f64 / (Self::WINDOW_MS as f64 / 1000.0);
        if self.made.is_empty() {
            return (rate, None);
        }
        let mut waits: Vec<i64> = self.made.iter().map(|(_, w)| *w).collect();
        waits.sort_unstable();
        let at = |q: f64| waits[((waits.len() - 1) as f64 * q).round() as usize];
        (rate, Some((at(0.5), at(0.99))))
    }
}

impl Dispatch {
    /// After a change committed: its result messages to the relay, the reviewers' counts to the sessions' view.
    pub async fn committed<T>(&self, changed: Changed<T>) {
        self.outbox.committed(changed.enqueued);
        if let Err(e) = self.sessions.publish_counts(&changed.counts).await {
            tracing::warn!("dispatch: cannot write user_assignments: {e}");
        }
    }
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
        let schedule = settings.schedule().map_err(|e| ctx.settings.invalid("relay_schedule", e))?;
        let dispatch = Dispatch {
            store: ctx.store.clone(),
            sessions: Sessions::new(ctx.kv.clone(), settings.ttl_ms()),
            settings,
            outbox: ctx.outbox.clone(),
            wake: Arc::new(tokio::sync::Notify::new()),
            recent: Arc::default(),
        };
        let mut started = Started { routes: crate::api::routes(dispatch.clone()), tasks: Vec::new() };
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let mut config = RunnerConfig::new("dispatch-assignment", [OUTBOUND]);
        config.after_commit = Some(dispatch.wake.clone());
        let receiver = Runner::exactly_once(ctx.bus.clone(), config, ctx.store.clone(), Receive(ctx.store.dialect()));
        let stop = ctx.stop.clone();
        started.spawn("dispatch assignment consumer", async move {
            receiver.run(stopped(stop)).await.map(|_| ()).map_err(|e| SystemError::Other(e.to_string()))
        });
        // No deduplication table: a result applies only over an older version of its event's state.
        let config = RunnerConfig::new("dispatch-relay", [INBOUND]);
        let results =
            Runner::exactly_once(ctx.bus.clone(), config, ctx.store.clone(), ApplyResult(ctx.store.dialect()));
        let stop = ctx.stop.clone();
        started.spawn("dispatch relay consumer", async move {
            results.run(stopped(stop)).await.map(|_| ()).map_err(|e| SystemError::Other(e.to_string()))
        });
        if let Some(schedule) = schedule {
            started.spawn("dispatch relay sweep", sweeper(schedule, dispatch.outbox.clone(), ctx.stop.clone()));
        }
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
        metrics::describe_histogram!(
            "dispatch_assignment_latency_seconds",
            metrics::Unit::Seconds,
            "From an event's creation to its assignment"
        );
        metrics::describe_gauge!("dispatch_waiting_events", "Events waiting for a reviewer");
        metrics::describe_gauge!("dispatch_active_reviewers", "Reviewers whose session is running");
        metrics::describe_gauge!("dispatch_open_assignments", "Open assignments, all reviewers");
        metrics::describe_gauge!("dispatch_reviewer_open_max", "Open assignments of the reviewer holding the most");
        metrics::describe_gauge!("dispatch_reviewers_at_cap", "Reviewers holding as many open assignments as allowed");
        metrics::describe_counter!("dispatch_results_applied_total", "Results from events.inbound applied to events");
    }

    fn command(&self) -> Option<clap::Command> {
        Some(crate::cli::command())
    }

    async fn run_command(&self, matches: clap::ArgMatches, host: Arc<dyn CommandHost>) -> anyhow::Result<()> {
        crate::cli::run(matches, host).await
    }
}

/// The assignment service's consumer: each event of `events.outbound` into the queue, once.
struct Receive(Dialect);

#[async_trait]
impl SqlHandler for Receive {
    async fn handle(&self, message: &Message, tx: &mut SqlTx) -> Result<(), HandlerError> {
        let event: OutboundEvent = parse(message, "a detection event")?;
        assign::receive(tx, self.0, &event, weir_runtime::time::now_ms()).await?;
        Ok(())
    }

    async fn handle_batch(&self, messages: &[&Message], tx: &mut SqlTx) -> Option<Result<(), HandlerError>> {
        // One record not an event fails the batch: the runner then goes record by record, dead-lettering it alone.
        let events = match parse_all(messages, "a detection event") {
            Ok(events) => events,
            Err(e) => return Some(Err(e)),
        };
        let received = assign::receive_all(tx, self.0, &events, weir_runtime::time::now_ms()).await;
        Some(received.map(|_| ()).map_err(HandlerError::from))
    }
}

/// A record's JSON value, or a permanent error saying it is not `what`.
fn parse<T: serde::de::DeserializeOwned>(message: &Message, what: &str) -> Result<T, HandlerError> {
    serde_json::from_slice(message.value.as_deref().unwrap_or_default())
        .map_err(|e| HandlerError::Permanent(format!("not {what}: {e}")))
}

fn parse_all<T: serde::de::DeserializeOwned>(messages: &[&Message], what: &str) -> Result<Vec<T>, HandlerError> {
    messages.iter().map(|m| parse(m, what)).collect()
}

/// The relay's consumer: each result of `events.inbound` onto its event's state, newest version wins.
struct ApplyResult(Dialect);

#[async_trait]
impl SqlHandler for ApplyResult {
    async fn handle(&self, message: &Message, tx: &mut SqlTx) -> Result<(), HandlerError> {
        let result: ResultMessage = parse(message, "an assignment result")?;
        if store::apply_result(tx, self.0, &result, weir_runtime::time::now_ms()).await? {
            metrics::counter!("dispatch_results_applied_total").increment(1);
        }
        Ok(())
    }

    async fn handle_batch(&self, messages: &[&Message], tx: &mut SqlTx) -> Option<Result<(), HandlerError>> {
        let results = match parse_all(messages, "an assignment result") {
            Ok(results) => results,
            Err(e) => return Some(Err(e)),
        };
        match store::apply_results(tx, self.0, &results, weir_runtime::time::now_ms()).await {
            Ok(n) => {
                metrics::counter!("dispatch_results_applied_total").increment(n);
                Some(Ok(()))
            }
            Err(e) => Some(Err(e.into())),
        }
    }
}

/// Wakes the outbox relay at each time of `schedule`.
async fn sweeper(
    schedule: croner::Cron,
    outbox: weir_runtime::outbox::RelayWaker,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), SystemError> {
    while !*stop.borrow() {
        let now = chrono::Utc::now();
        let Ok(next) = schedule.find_next_occurrence(&now, false) else {
            return Ok(()); // a schedule with no future time: nothing more to sweep
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => outbox.wake(),
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    Ok(())
}

/// Gives waiting events out, a round at a time, while rounds assign something; then waits to be woken (or 250 ms,
/// for what other instances changed).
async fn assigner(d: Dispatch, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), SystemError> {
    while !*stop.borrow() {
        let now = weir_runtime::time::now_ms();
        let round = async {
            let active = d.sessions.active_recent(now).await.map_err(|e| e.to_string())?;
            metrics::gauge!("dispatch_active_reviewers").set(active.len() as f64);
            assign::assign_waiting(&d.store, d.settings.rules(), &active, now, d.settings.round)
                .await
                .map_err(|e| e.to_string())
        };
        match round.await {
            Ok(made) if !made.is_empty() => {
                metrics::counter!("dispatch_assigned_total").increment(made.len() as u64);
                for a in &made.items {
                    metrics::histogram!("dispatch_assignment_latency_seconds").record(a.waited_ms as f64 / 1000.0);
                }
                d.recent.lock().record(now, made.items.iter().map(|a| a.waited_ms));
                d.committed(made).await;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("dispatch assigner: {e}"),
        }
        if let Ok(n) = assign::waiting(&d.store).await {
            metrics::gauge!("dispatch_waiting_events").set(n as f64);
        }
        // Open assignments per reviewer, with a bounded number of series: their sum, the largest, how many at the cap.
        if let Ok((open, most, at_cap)) = assign::load(&d.store, d.settings.max_open_per_user).await {
            metrics::gauge!("dispatch_open_assignments").set(open as f64);
            metrics::gauge!("dispatch_reviewer_open_max").set(most as f64);
            metrics::gauge!("dispatch_reviewers_at_cap").set(at_cap as f64);
        }
        tokio::select! {
            _ = d.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    Ok(())
}

/// Once a second: takes back the assignments of reviewers whose session ended (listed as ended, or holding
/// assignments without a session at all), then those not settled in time.
async fn expirer(d: Dispatch, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), SystemError> {
    while !*stop.borrow() {
        let now = weir_runtime::time::now_ms();
        if let Err(e) = expire_once(&d, now).await {
            tracing::warn!("dispatch expirer: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    Ok(())
}

/// One pass of the expirer at `now_ms`; returns how many assignments it took back.
pub async fn expire_once(d: &Dispatch, now_ms: i64) -> Result<u64, String> {
    // Holders before sessions: a reviewer who comes online and is given events between the two reads is then
    // seen active, not taken back.
    let holders = assign::holders(&d.store).await.map_err(|e| e.to_string())?;
    let ended = d.sessions.ended(now_ms).await.map_err(|e| e.to_string())?;
    let active: std::collections::HashSet<String> =
        d.sessions.active(now_ms).await.map_err(|e| e.to_string())?.into_iter().collect();
    let gone: Vec<String> = holders.into_iter().filter(|u| !active.contains(u)).collect();
    let mut taken = 0;
    let back = assign::take_back(&d.store, &gone, now_ms).await.map_err(|e| e.to_string())?;
    if !back.is_empty() {
        taken += back.len() as u64;
        metrics::counter!("dispatch_taken_back_total", "reason" => "session ended").increment(back.len() as u64);
        d.committed(back).await;
    }
    for e in &ended {
        d.sessions.forget(e).await.map_err(|e| e.to_string())?;
    }
    let after_ms = d.settings.reassign_after_seconds as i64 * 1000;
    let stale = assign::reassign_stale(&d.store, now_ms, after_ms).await.map_err(|e| e.to_string())?;
    if !stale.is_empty() {
        taken += stale.len() as u64;
        metrics::counter!("dispatch_taken_back_total", "reason" => "not settled in time").increment(stale.len() as u64);
        d.committed(stale).await;
    }
    if taken > 0 {
        d.recent.lock().taken_back += taken;
        d.wake.notify_one();
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> SystemSettings {
        let flags: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        SystemSettings::layered("dispatch", &[], None, Vec::new(), &flags)
    }

    #[test]
    fn the_relay_schedule_is_a_cron_expression_or_none() {
        let s = DispatchSettings::read(&settings(&[])).unwrap();
        assert_eq!(s.relay_schedule, "*/15 * * * * *");
        let cron = s.schedule().unwrap().unwrap();
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-05T08:00:01Z").unwrap().with_timezone(&chrono::Utc);
        let next = cron.find_next_occurrence(&at, false).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-12-05T08:00:15+00:00");
        // Five fields: minutes first, as crontab.
        let s = DispatchSettings::read(&settings(&[("relay_schedule", "*/2 * * * *")])).unwrap();
        let next = s.schedule().unwrap().unwrap().find_next_occurrence(&at, false).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-12-05T08:02:00+00:00");
        assert!(DispatchSettings::read(&settings(&[("relay_schedule", "none")]))
            .unwrap()
            .schedule()
            .unwrap()
            .is_none());
        let e = DispatchSettings::read(&settings(&[("relay_schedule", "every minute")])).unwrap_err().to_string();
        assert!(e.contains("relay_schedule") && e.contains("not a cron expression"), "{e}");
    }

    #[test]
    fn recent_assignments_give_a_rate_and_percentiles_over_the_last_minute() {
        let mut r = Recent::default();
        r.record(1_000, (1..=100).map(|w| w * 10));
        let (rate, latency) = r.summary(2_000);
        assert!((rate - 100.0 / 60.0).abs() < 1e-9, "{rate}");
        assert_eq!(latency, Some((510, 990)));
        assert_eq!(r.summary(61_001), (0.0, None), "a minute later, forgotten");
    }
}
