//! The waitroom as a weir system: its settings (`[systems.waitroom]`, `WEIR_WAITROOM_*`, the origin's environment
//! names, `--set waitroom.KEY=VALUE`), its topics, its HTTP API (`api`), and its tasks:
//!
//! - the **admitter**: every `process_interval` (1 s), a round for each event with sessions (`Room::round`) on the
//!   instance holding that event's lease;
//! - the **gRPC API** on `grpc_listen` (`grpc`);
//! - the **checkout consumer** (group `waitroom-service`): `checkout.completed`, `checkout.failed` and
//!   `checkout.expired` settle their sessions, once each; a record that is not an outcome, or names an unknown
//!   session, goes to the topic's `.dlq` (`weir dlq replay` sends it back).
//!
//! With `kafka_enabled = false` (the origin's `KAFKA_ENABLED`) it runs with no bus: no topics, no events, no
//! consumer; sessions are then settled only by leaving or by their checkout running out.

use std::time::Duration;

use async_trait::async_trait;
use std::sync::Arc;
use weir_runtime::handler::{Handler, HandlerError, Runner, RunnerConfig};
use weir_runtime::outbox::OutboxWriter;
use weir_runtime::{
    CommandHost, Message, SqlStore, Started, System, SystemContext, SystemError, SystemSettings, TopicSpec,
};

use crate::model::{CheckoutOutcome, EventConfig, Topics};
use crate::room::{Publisher, Room, RoomError, Rules};
use crate::token::Tokens;

/// The waitroom's settings.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WaitroomSettings {
    /// How often each event admits: `1s`, `500ms` (a bare number is seconds).
    #[serde(deserialize_with = "de::duration")]
    pub process_interval: Duration,
    /// Sessions admitted per round, for events never configured.
    pub release_rate: u64,
    /// Sessions in checkout at once, for events never configured.
    pub max_concurrent: u64,
    /// Sessions waiting at once, for events never configured.
    pub capacity: u64,
    /// Events never configured accept joins.
    #[serde(deserialize_with = "weir_runtime::system::de::flag")]
    pub enabled_by_default: bool,
    /// How long a checkout token lasts.
    #[serde(deserialize_with = "de::duration")]
    pub jwt_expiry: Duration,
    /// The tokens' HS256 secret. Empty: a random one for this process (tokens then check only on it; instances
    /// that share a queue must share a secret).
    pub jwt_secret: String,
    /// How long a session is kept, and may wait.
    #[serde(deserialize_with = "de::duration")]
    pub session_ttl: Duration,
    /// Publish and consume events; false runs with no bus at all.
    #[serde(deserialize_with = "weir_runtime::system::de::flag")]
    pub kafka_enabled: bool,
    /// The checkout consumer's group.
    pub consumer_group: String,
    /// `dotted` (`queue.ready`, `checkout.completed`, ...: the origin's) or `seed` (`QUEUE_READY`, ...).
    pub topics: String,
    /// Where an admitted user checks out (given in the status as `checkout_url`; empty: none).
    pub checkout_url: String,
    /// The gRPC API's address (`waitroom.v1.WaitroomService`), or `none`. A bare port (the origin's
    /// `SERVER_GRPC_PORT`) listens on every interface.
    #[serde(deserialize_with = "de::listen")]
    pub grpc_listen: String,
}

impl Default for WaitroomSettings {
    fn default() -> Self {
        WaitroomSettings {
            process_interval: Duration::from_secs(1),
            release_rate: 10,
            max_concurrent: 100,
            capacity: 100_000,
            enabled_by_default: true,
            jwt_expiry: Duration::from_secs(15 * 60),
            jwt_secret: String::new(),
            session_ttl: Duration::from_secs(2 * 3600),
            kafka_enabled: true,
            consumer_group: "waitroom-service".into(),
            topics: "dotted".into(),
            checkout_url: "/checkout".into(),
            grpc_listen: "127.0.0.1:50056".into(),
        }
    }
}

/// The origin's environment names.
pub const ENV_NAMES: &[(&str, &str)] = &[
    ("QUEUE_PROCESS_INTERVAL", "process_interval"),
    ("QUEUE_DEFAULT_RELEASE_RATE", "release_rate"),
    ("QUEUE_DEFAULT_MAX_CONCURRENT", "max_concurrent"),
    ("JWT_SECRET", "jwt_secret"),
    ("JWT_EXPIRY", "jwt_expiry"),
    ("KAFKA_ENABLED", "kafka_enabled"),
    ("KAFKA_CONSUMER_GROUP_ID", "consumer_group"),
    ("CHECKOUT_URL", "checkout_url"),
    ("SERVER_GRPC_PORT", "grpc_listen"),
];

impl WaitroomSettings {
    /// The settings, checked; an error names the bad one and where it came from.
    pub fn read(settings: &SystemSettings) -> Result<WaitroomSettings, SystemError> {
        let s: WaitroomSettings = settings.parse()?;
        let within = |key: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(settings.invalid(key, format!("must be from {lo} to {hi}, got {v}")))
            }
        };
        within("release_rate", s.release_rate, 1, 100_000)?;
        within("max_concurrent", s.max_concurrent, 1, 10_000_000)?;
        within("capacity", s.capacity, 1, 100_000_000)?;
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        within("process_interval", ms(s.process_interval), 10, 3_600_000)?;
        within("jwt_expiry", ms(s.jwt_expiry), 1_000, 86_400_000)?;
        within("session_ttl", ms(s.session_ttl), 1_000, 7 * 86_400_000)?;
        if s.consumer_group.trim().is_empty() {
            return Err(settings.invalid("consumer_group", "must not be empty"));
        }
        s.topic_names().map_err(|e| settings.invalid("topics", e))?;
        Ok(s)
    }

    pub fn topic_names(&self) -> Result<Topics, String> {
        match self.topics.as_str() {
            "dotted" => Ok(Topics::dotted()),
            "seed" => Ok(Topics::seed()),
            other => Err(format!("{other:?}: dotted or seed")),
        }
    }

    pub fn defaults(&self) -> EventConfig {
        EventConfig {
            enabled: self.enabled_by_default,
            release_rate: self.release_rate,
            max_concurrent: self.max_concurrent,
            capacity: self.capacity,
            paused: false,
        }
    }

    pub fn rules(&self) -> Rules {
        Rules {
            defaults: self.defaults(),
            interval: self.process_interval,
            token_ttl: self.jwt_expiry,
            session_ttl: self.session_ttl,
            checkout_url: self.checkout_url.clone(),
        }
    }

    /// The token secret: the setting, or a random one for this process (with a warning).
    pub fn tokens(&self) -> Tokens {
        if self.jwt_secret.is_empty() {
            tracing::warn!(
                "waitroom: no jwt_secret (JWT_SECRET) set: checkout tokens are signed with a random secret of this \
                 process, which other instances and a restart do not know"
            );
            Tokens::new(uuid::Uuid::new_v4().as_bytes())
        } else {
            Tokens::new(self.jwt_secret.as_bytes())
        }
    }
}

/// Setting deserializers.
pub mod de {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// A duration as the origin's Go settings spell it (`1s`, `500ms`, `15m`, `2h`), or a number of seconds.
    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| serde::de::Error::custom(format!("{n}: not a number of seconds"))),
            Value::String(s) => parse(&s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("expected a duration such as 1s or 15m, got {other}"))),
        }
    }

    /// A listen address, `none`, or a bare port (every interface).
    pub fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => match n.as_u64() {
                Some(port) if port <= 65_535 => Ok(format!("0.0.0.0:{port}")),
                _ => Err(serde::de::Error::custom(format!("{n}: not a port"))),
            },
            Value::String(s) if s.trim() == "none" => Ok("none".into()),
            Value::String(s) => match s.trim().parse::<std::net::SocketAddr>() {
                Ok(_) => Ok(s.trim().to_string()),
                Err(_) => Err(serde::de::Error::custom(format!("{s:?}: expected HOST:PORT, a port, or none"))),
            },
            other => Err(serde::de::Error::custom(format!("expected HOST:PORT, a port, or none, got {other}"))),
        }
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let n: f64 = n.parse().map_err(|_| format!("{text:?}: expected a duration such as 1s, 500ms or 15m"))?;
        let seconds = match unit.trim() {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(format!("{text:?}: the unit is ms, s, m or h")),
        };
        Ok(Duration::from_secs_f64(seconds))
    }
}

/// The waitroom (seed 004).
#[derive(Clone, Copy, Debug, Default)]
pub struct WaitroomSystem;

#[async_trait]
impl System for WaitroomSystem {
    fn name(&self) -> &'static str {
        "waitroom"
    }

    fn about(&self) -> &'static str {
        "Waitroom (seed 004): a fair, rate-limited queue in front of ticket checkout, settled by events"
    }

    fn env_names(&self) -> &'static [(&'static str, &'static str)] {
        ENV_NAMES
    }

    fn check(&self, settings: &SystemSettings) -> Result<(), SystemError> {
        WaitroomSettings::read(settings).map(|_| ())
    }

    fn topics(&self, settings: &SystemSettings) -> Result<Vec<TopicSpec>, SystemError> {
        let s = WaitroomSettings::read(settings)?;
        if !s.kafka_enabled {
            return Ok(Vec::new());
        }
        let topics = s.topic_names().map_err(|e| settings.invalid("topics", e))?;
        Ok(topics.all().iter().map(|(name, partitions)| TopicSpec::new(*name, *partitions)).collect())
    }

    async fn migrate(&self, _store: &SqlStore) -> Result<(), SystemError> {
        // Its state is in the key-value store; its events use the runtime's outbox table.
        Ok(())
    }

    fn describe_metrics(&self) {
        metrics::describe_counter!("waitroom_joined_total", "Sessions that joined a queue");
        metrics::describe_counter!("waitroom_admitted_total", "Sessions admitted to checkout");
        metrics::describe_counter!("waitroom_left_total", "Sessions that left a queue or checkout, by reason");
        metrics::describe_counter!("waitroom_settled_total", "Checkouts settled by an outcome event, by outcome");
        metrics::describe_counter!(
            "waitroom_checkouts_expired_total",
            "Checkouts whose token ran out with no outcome (checkout.expired published)"
        );
        metrics::describe_histogram!("waitroom_wait_seconds", metrics::Unit::Seconds, "From joining to admission");
        metrics::describe_histogram!(
            "waitroom_estimated_wait_error_seconds",
            metrics::Unit::Seconds,
            "The wait to admission less the wait the queue's length at the join predicted (positive: the estimate was short)"
        );
        metrics::describe_gauge!("waitroom_admitted_per_second", "Admissions a second over the last minute, per event");
        metrics::describe_gauge!(
            "waitroom_wait_p50_seconds",
            "Median wait to admission over the last minute, per event"
        );
        metrics::describe_gauge!(
            "waitroom_wait_p99_seconds",
            "99th percentile wait to admission over the last minute, per event"
        );
        metrics::describe_gauge!("waitroom_queue_length", "Sessions waiting, per event");
        metrics::describe_gauge!("waitroom_in_checkout", "Sessions in checkout, per event");
    }

    fn command(&self) -> Option<clap::Command> {
        Some(crate::cli::command())
    }

    async fn run_command(&self, matches: clap::ArgMatches, host: Arc<dyn CommandHost>) -> anyhow::Result<()> {
        crate::cli::run(matches, host).await
    }

    async fn start(&self, ctx: SystemContext) -> Result<Started, SystemError> {
        let settings = WaitroomSettings::read(&ctx.settings)?;
        let topics = settings.topic_names().map_err(|e| ctx.settings.invalid("topics", e))?;
        let publisher = settings.kafka_enabled.then(|| Publisher {
            outbox: OutboxWriter::spawn(ctx.store.clone(), ctx.outbox.clone()),
            topics: topics.clone(),
        });
        let room = Room::new(ctx.kv.clone(), publisher, settings.tokens(), settings.rules());
        let mut started = Started { routes: crate::api::routes(room.clone()), tasks: Vec::new() };
        if settings.kafka_enabled {
            let names = [topics.completed.clone(), topics.failed.clone(), topics.expired.clone()];
            let config = RunnerConfig::new(settings.consumer_group.clone(), names);
            let consumer = Runner::at_least_once(ctx.bus.clone(), config, Settle { room: room.clone(), topics });
            let mut stop = ctx.stop.clone();
            started.spawn("waitroom checkout consumer", async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                consumer.run(stopped).await.map(|_| ()).map_err(|e| SystemError::Other(e.to_string()))
            });
        }
        if settings.grpc_listen != "none" {
            let (listener, addr) = crate::grpc::bind(&settings.grpc_listen).await.map_err(SystemError::Other)?;
            room.set_grpc_addr(addr);
            tracing::info!("waitroom: gRPC (waitroom.v1.WaitroomService, with reflection) on {addr}");
            let (room, stop) = (room.clone(), ctx.stop.clone());
            started.spawn("waitroom gRPC", async move {
                crate::grpc::serve(room, listener, stop).await.map_err(|e| SystemError::Other(e.to_string()))
            });
        }
        started.spawn("waitroom admitter", admitter(room, ctx.stop.clone()));
        Ok(started)
    }
}

/// A round for each event with sessions once the last ended an interval ago (looked at ten times an interval);
/// every hundredth look, half-done admissions are looked for too.
pub async fn admitter(room: Room, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), SystemError> {
    let mut tick = tokio::time::interval((room.rules().interval / 10).max(std::time::Duration::from_millis(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        n += 1;
        let events = match room.active_events().await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!("waitroom: cannot list the active events: {e}");
                continue;
            }
        };
        for event in events {
            match room.round(&event, n.is_multiple_of(100)).await {
                Ok(round) if round.not_due || round.not_leader => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(event = %event, "waitroom: admission round failed, tried again next time: {e}")
                }
            }
            if let Ok((waiting, in_checkout)) = room.counts(&event).await {
                metrics::gauge!("waitroom_queue_length", "event" => event.clone()).set(waiting as f64);
                metrics::gauge!("waitroom_in_checkout", "event" => event.clone()).set(in_checkout as f64);
            }
            let (rate, waits) = room.stats().lock().summary(&event, chrono::Utc::now().timestamp_millis());
            metrics::gauge!("waitroom_admitted_per_second", "event" => event.clone()).set(rate);
            if let Some((p50, p99)) = waits {
                metrics::gauge!("waitroom_wait_p50_seconds", "event" => event.clone()).set(p50 as f64 / 1000.0);
                metrics::gauge!("waitroom_wait_p99_seconds", "event" => event.clone()).set(p99 as f64 / 1000.0);
            }
        }
    }
}

/// The checkout consumer: an outcome settles its session, once.
struct Settle {
    room: Room,
    topics: Topics,
}

#[async_trait]
impl Handler for Settle {
    async fn handle(&self, m: &Message) -> Result<(), HandlerError> {
        let outcome = self
            .topics
            .outcome(&m.topic)
            .ok_or_else(|| HandlerError::Permanent(format!("{} is not a checkout topic", m.topic)))?;
        let msg: CheckoutOutcome = serde_json::from_slice(m.value.as_deref().unwrap_or_default())
            .map_err(|e| HandlerError::Permanent(format!("not a checkout outcome: {e}")))?;
        match self.room.settle(outcome, &msg).await {
            Ok(_) => Ok(()),
            Err(e @ (RoomError::NotFound(_) | RoomError::Invalid(_))) => Err(HandlerError::Permanent(e.to_string())),
            Err(e) => Err(HandlerError::Retryable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_the_origin_spells_them() {
        assert_eq!(de::parse("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(de::parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(de::parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(de::parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(de::parse("3").unwrap(), Duration::from_secs(3));
        assert!(de::parse("soon").is_err() && de::parse("5 days").is_err());
    }

    #[test]
    fn settings_take_the_origins_environment_and_refuse_bad_values() {
        let env = vec![
            ("QUEUE_PROCESS_INTERVAL".to_string(), "250ms".to_string()),
            ("QUEUE_DEFAULT_RELEASE_RATE".to_string(), "20".to_string()),
            ("KAFKA_ENABLED".to_string(), "false".to_string()),
            ("JWT_EXPIRY".to_string(), "5m".to_string()),
            ("SERVER_GRPC_PORT".to_string(), "50070".to_string()),
        ];
        let s = WaitroomSettings::read(&SystemSettings::layered("waitroom", ENV_NAMES, None, env, &[])).unwrap();
        assert_eq!(s.process_interval, Duration::from_millis(250));
        assert_eq!((s.release_rate, s.kafka_enabled, s.jwt_expiry), (20, false, Duration::from_secs(300)));
        assert_eq!(s.grpc_listen, "0.0.0.0:50070");
        let bad = |k: &str, v: &str| {
            let flags = vec![(k.to_string(), v.to_string())];
            WaitroomSettings::read(&SystemSettings::layered("waitroom", ENV_NAMES, None, Vec::new(), &flags))
                .unwrap_err()
                .to_string()
        };
        assert!(bad("release_rate", "0").contains("release_rate"));
        assert!(bad("topics", "lower").contains("dotted or seed"));
        assert!(bad("process_interval", "1 fortnight").contains("process_interval"));
        assert!(bad("grpc_listen", "localhost").contains("HOST:PORT"));
    }
}
