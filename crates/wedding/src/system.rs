//! The wedding as a weir system: its settings (`[systems.wedding]`, `WEIR_WEDDING_*`, the seed's `WEDDING_POLICY`
//! and `WEDDING_SPEED`, `--set wedding.KEY=VALUE`), a topic per event type, its tables, the services of
//! `service/`, its metrics and `weir wedding ...`.

use async_trait::async_trait;
use weir_runtime::{CommandHost, SqlStore, Started, System, SystemContext, SystemError, SystemSettings, TopicSpec};

use crate::rules::{all_types, Rules};
use crate::schedule::Policy;
use crate::service::{self, topic_for, ServiceConfig};

/// The wedding's settings; what a run's `POST /api/wedding/start` leaves out comes from here.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeddingSettings {
    /// `edf` (earliest feasible deadline first) or `fifo`.
    pub policy: String,
    /// How many times faster than real time a real-clock run goes.
    pub speed: f64,
    /// Workers per team.
    pub workers: usize,
    /// Routines per team, `TEAM=ROUTINE,...` (standard, intermittent, concentrated).
    pub routines: Option<String>,
    /// Let a handling run past the end of an available phase.
    #[serde(deserialize_with = "weir_runtime::system::de::flag")]
    pub allow_overrun: bool,
}

impl Default for WeddingSettings {
    fn default() -> Self {
        let rules = Rules::default();
        WeddingSettings {
            policy: "edf".into(),
            speed: 1.0,
            workers: rules.workers_per_team,
            routines: None,
            allow_overrun: rules.allow_overrun,
        }
    }
}

impl WeddingSettings {
    /// The services' configuration, or an error naming the bad setting.
    pub fn service_config(settings: &SystemSettings) -> Result<ServiceConfig, SystemError> {
        let w: WeddingSettings = settings.parse()?;
        let policy = Policy::parse(&w.policy).ok_or_else(|| settings.invalid("policy", "use edf or fifo"))?;
        if !(w.speed > 0.0 && w.speed.is_finite()) {
            return Err(settings.invalid("speed", format!("must be a positive number, got {}", w.speed)));
        }
        if !(1..=1000).contains(&w.workers) {
            return Err(settings.invalid("workers", format!("must be from 1 to 1000, got {}", w.workers)));
        }
        let mut rules = Rules { workers_per_team: w.workers, allow_overrun: w.allow_overrun, ..Rules::default() };
        if let Some(spec) = &w.routines {
            rules.set_routines(spec).map_err(|e| settings.invalid("routines", e))?;
        }
        Ok(ServiceConfig { rules, policy, speed: w.speed })
    }
}

/// Wedding operations (seed 000).
#[derive(Clone, Copy, Debug, Default)]
pub struct WeddingSystem;

#[async_trait]
impl System for WeddingSystem {
    fn name(&self) -> &'static str {
        "wedding"
    }

    fn about(&self) -> &'static str {
        "Wedding operations (seed 000): incidents routed to teams on the exercise's rules, with a stress report"
    }

    fn env_names(&self) -> &'static [(&'static str, &'static str)] {
        &[("WEDDING_POLICY", "policy"), ("WEDDING_SPEED", "speed")]
    }

    fn check(&self, settings: &SystemSettings) -> Result<(), SystemError> {
        WeddingSettings::service_config(settings).map(|_| ())
    }

    fn topics(&self, _: &SystemSettings) -> Result<Vec<TopicSpec>, SystemError> {
        // One partition each: a team's desk sees its events in the order they were stored.
        Ok(all_types().map(|t| TopicSpec::new(topic_for(t), 1)).collect())
    }

    async fn migrate(&self, store: &SqlStore) -> Result<(), SystemError> {
        Ok(service::migrate(store).await?)
    }

    fn describe_metrics(&self) {
        metrics::describe_counter!("wedding_events_total", "Incidents accepted, by type");
        metrics::describe_counter!("wedding_rejected_events_total", "Incidents refused as invalid (HTTP 400)");
        metrics::describe_counter!(
            "wedding_db_errors_total",
            "Database statements of the desks and the sweeper that failed (tried again later), by statement"
        );
        metrics::describe_counter!("wedding_consumer_errors_total", "Team consumers restarted after a bus error");
        metrics::describe_gauge!(
            "wedding_desks_leading",
            "1 on the instance running the desks (holding their lease), 0 on those standing by"
        );
    }

    async fn start(&self, ctx: SystemContext) -> Result<Started, SystemError> {
        let config = WeddingSettings::service_config(&ctx.settings)?;
        service::start(ctx, config).await
    }

    fn command(&self) -> Option<clap::Command> {
        Some(crate::cli::command())
    }

    async fn run_command(
        &self,
        matches: clap::ArgMatches,
        host: std::sync::Arc<dyn CommandHost>,
    ) -> anyhow::Result<()> {
        crate::cli::run(matches, host).await
    }
}
