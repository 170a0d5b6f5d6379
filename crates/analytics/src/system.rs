//! The analytics pipeline as a weir system: its settings (`[systems.analytics]`, `WEIR_ANALYTICS_*`, the seed's
//! `GRACE_PERIOD_SECONDS`, `FLUSH_INTERVAL_SECONDS` and `ROUTE_LATE_EVENTS` and its origin's `KAFKA_TOPIC` and
//! `LAG_UPDATE_INTERVAL_SECONDS`, `--set analytics.KEY=VALUE`), its topics, its tables, the aggregator, the lag
//! sampler and the default producer, its HTTP API and `weir analytics ...`.
//!
//! The aggregator is not a runtime `Runner`: it commits offsets with a windowed flush (every flush interval, in the
//! same transaction as the windows it closes), not per record, so it drives its subscription itself and keeps the
//! runtime's exactly-once bookkeeping through `StoredPositions`, as the `Runner` does in its exactly-once mode.

use std::time::Duration;

use async_trait::async_trait;
use weir_runtime::{CommandHost, SqlStore, Started, System, SystemContext, SystemError, SystemSettings, TopicSpec};

use crate::event::{LATE_TOPIC, TOPIC};
use crate::pipeline_metrics;
use crate::{Aggregator, AggregatorConfig};

/// The pipeline's settings.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsSettings {
    /// How far behind the latest event time a window stays open (`GRACE_PERIOD_SECONDS`).
    pub grace_period_seconds: u64,
    /// How often closed windows are flushed to `hourly_aggregations` (`FLUSH_INTERVAL_SECONDS`).
    pub flush_interval_seconds: u64,
    /// Send late events to `events.late` as well as counting them (`ROUTE_LATE_EVENTS`).
    #[serde(deserialize_with = "weir_runtime::system::de::flag")]
    pub route_late_events: bool,
    /// Run the default producer (a few events at irregular intervals) beside the aggregator.
    #[serde(deserialize_with = "weir_runtime::system::de::flag")]
    pub producer: bool,
    /// Distinct users the default producer's events come from.
    pub users: u32,
    /// Partitions of the topic when it is created.
    pub partitions: i32,
    /// The topic events are produced to and aggregated from (`KAFKA_TOPIC`): `events` as the seed document says,
    /// `user-activity-events` as its origin's code.
    pub topic: String,
    /// Run the aggregator here (off on an instance that only serves the API or produces, or to stop it).
    #[serde(deserialize_with = "weir_runtime::system::de::flag")]
    pub aggregator: bool,
    /// How often `processor_consumer_lag` is sampled (`LAG_UPDATE_INTERVAL_SECONDS`).
    pub lag_update_interval_seconds: u64,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        AnalyticsSettings {
            grace_period_seconds: 30,
            flush_interval_seconds: 60,
            route_late_events: false,
            producer: true,
            users: 10_000,
            partitions: 4,
            topic: TOPIC.into(),
            aggregator: true,
            lag_update_interval_seconds: 10,
        }
    }
}

impl AnalyticsSettings {
    /// The settings, checked; an error names the bad one and where it came from.
    pub fn read(settings: &SystemSettings) -> Result<AnalyticsSettings, SystemError> {
        let s: AnalyticsSettings = settings.parse()?;
        if s.flush_interval_seconds == 0 {
            return Err(settings.invalid("flush_interval_seconds", "must be at least 1"));
        }
        if !(1..=1000).contains(&s.partitions) {
            return Err(settings.invalid("partitions", format!("must be from 1 to 1000, got {}", s.partitions)));
        }
        if s.users == 0 {
            return Err(settings.invalid("users", "must be at least 1"));
        }
        if s.lag_update_interval_seconds == 0 {
            return Err(settings.invalid("lag_update_interval_seconds", "must be at least 1"));
        }
        // Kafka's rule for topic names.
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if s.topic.is_empty() || s.topic.len() > 249 || !s.topic.chars().all(legal) || s.topic == "." || s.topic == ".."
        {
            return Err(
                settings.invalid("topic", format!("{:?} is not a topic name (1-249 of a-z A-Z 0-9 . _ -)", s.topic))
            );
        }
        Ok(s)
    }

    pub fn aggregator_config(&self) -> AggregatorConfig {
        AggregatorConfig {
            grace: Duration::from_secs(self.grace_period_seconds),
            flush_interval: Duration::from_secs(self.flush_interval_seconds),
            route_late: self.route_late_events,
            topic: self.topic.clone(),
            ..Default::default()
        }
    }
}

/// The analytics pipeline (seed 002).
#[derive(Clone, Copy, Debug, Default)]
pub struct AnalyticsSystem;

#[async_trait]
impl System for AnalyticsSystem {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn about(&self) -> &'static str {
        "The analytics pipeline (seed 002): events folded into hourly windows, flushed exactly once to SQL"
    }

    fn env_names(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("GRACE_PERIOD_SECONDS", "grace_period_seconds"),
            ("FLUSH_INTERVAL_SECONDS", "flush_interval_seconds"),
            ("ROUTE_LATE_EVENTS", "route_late_events"),
            ("KAFKA_TOPIC", "topic"),
            ("LAG_UPDATE_INTERVAL_SECONDS", "lag_update_interval_seconds"),
        ]
    }

    fn check(&self, settings: &SystemSettings) -> Result<(), SystemError> {
        AnalyticsSettings::read(settings).map(|_| ())
    }

    fn topics(&self, settings: &SystemSettings) -> Result<Vec<TopicSpec>, SystemError> {
        let s = AnalyticsSettings::read(settings)?;
        let mut topics = vec![TopicSpec::new(&s.topic, s.partitions)];
        if s.route_late_events {
            topics.push(TopicSpec::new(LATE_TOPIC, 1));
        }
        Ok(topics)
    }

    async fn migrate(&self, store: &SqlStore) -> Result<(), SystemError> {
        Ok(crate::aggregator::migrate(store).await?)
    }

    fn describe_metrics(&self) {
        pipeline_metrics::describe();
    }

    async fn start(&self, ctx: SystemContext) -> Result<Started, SystemError> {
        let s = AnalyticsSettings::read(&ctx.settings)?;
        let config = s.aggregator_config();
        let (aggregator, control) = Aggregator::new(ctx.bus.clone(), ctx.store.clone(), config.clone())
            .await
            .map_err(|e| SystemError::Other(format!("cannot start the aggregator: {e}")))?;
        let mut started = Started { routes: crate::api::routes(ctx.store.clone(), control), tasks: Vec::new() };
        if s.aggregator {
            let stop = ctx.stop.clone();
            started.spawn("analytics aggregator", async move {
                aggregator.run(stop).await.map_err(|e| SystemError::Other(format!("aggregator: {e}")))
            });
        }
        let (bus, store, stop) = (ctx.bus.clone(), ctx.store.clone(), ctx.stop.clone());
        let every = Duration::from_secs(s.lag_update_interval_seconds);
        started.spawn("analytics lag", async move {
            crate::lag::run(bus, store, config.group, config.topic, every, stop).await;
            Ok(())
        });
        if s.producer {
            let (bus, mut stop, topic) = (ctx.bus.clone(), ctx.stop.clone(), s.topic.clone());
            started.spawn("analytics producer", async move {
                tokio::select! {
                    r = crate::producer::default_producer(bus, &topic, s.users) => r.map_err(|e| SystemError::Other(format!("producer: {e:#}"))),
                    _ = stop.wait_for(|s| *s) => Ok(()),
                }
            });
        }
        Ok(started)
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
