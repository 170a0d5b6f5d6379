//! `weir up`: the platform in the foreground. It opens the embedded broker (or, with `--bus kafka://`, connects to an
//! existing Kafka cluster instead), starts the selected systems on that bus, proves the pipeline with a heartbeat
//! (produce, consume, round-trip time), prints a status line every few seconds, and shuts down cleanly on Ctrl-C or
//! SIGTERM.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weir_broker::Broker;
use weir_runtime::kv::{KvStore, RedisKv, SqlKv};
use weir_runtime::{Bus, BusError, EmbeddedBus, KafkaBus, OutgoingMessage, SqlStore, StartFrom, SubscribeOptions};

use super::{human_bytes, open_broker, shutdown_signal};
use crate::cli::UpArgs;
use crate::settings::Settings;

/// The systems `weir up` can run. Each later issue adds its system here.
pub const SYSTEMS: &[&str] = &["analytics", "wedding"];

const HEARTBEAT_TOPIC: &str = "__weir_heartbeat";

fn select_systems(spec: &str) -> Result<Vec<&'static str>> {
    match spec.trim() {
        "all" => Ok(SYSTEMS.to_vec()),
        "none" | "" => Ok(Vec::new()),
        list => list
            .split(',')
            .map(|name| {
                let name = name.trim();
                SYSTEMS.iter().copied().find(|s| *s == name).ok_or_else(|| {
                    let known = if SYSTEMS.is_empty() { "none yet".to_string() } else { SYSTEMS.join(", ") };
                    anyhow::anyhow!("unknown system {name:?} (available: {known})")
                })
            })
            .collect(),
    }
}

pub async fn run(settings: Settings, mut args: UpArgs) -> Result<()> {
    let systems = select_systems(&args.systems)?;
    let limits_note = fit_connections_to_open_file_limit(&mut args);
    let (bus, broker): (Arc<dyn Bus>, Option<Arc<Broker>>) = match args.bus.trim() {
        "embedded" => {
            let broker = open_broker(&settings)?;
            if broker.topic(HEARTBEAT_TOPIC).is_err() {
                let configs = BTreeMap::from([
                    ("retention.ms".to_string(), "3600000".to_string()),
                    ("segment.bytes".to_string(), "1048576".to_string()),
                ]);
                broker.create_topic(HEARTBEAT_TOPIC, 1, configs)?;
            }
            (Arc::new(EmbeddedBus::new(broker.clone())), Some(broker))
        }
        url if url.starts_with("kafka://") => {
            let bus = KafkaBus::connect(url).map_err(|e| anyhow::anyhow!("--bus: {e}"))?;
            let name = bus.endpoint().bootstrap.clone();
            tokio::time::timeout(Duration::from_secs(30), bus.ensure_topic(HEARTBEAT_TOPIC, 1))
                .await
                .map_err(|_| anyhow::anyhow!("no answer from the Kafka cluster at {name} within 30 s"))?
                .with_context(|| format!("cannot create {HEARTBEAT_TOPIC} on {name}"))?;
            (Arc::new(bus), None)
        }
        other => bail!("--bus {other:?}: expected `embedded` or kafka://HOST:PORT[,HOST:PORT]"),
    };
    let store_url = match &args.database {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("cannot create {}", settings.data_dir.display()))?;
            SqlStore::sqlite_url(&settings.data_dir)
        }
    };
    let store = SqlStore::connect(&store_url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(&store_url)))?;
    let kv: Arc<dyn KvStore> = match &args.redis {
        Some(url) => Arc::new(
            RedisKv::connect(url, "weir:").await.with_context(|| format!("cannot reach Redis at {}", redact(url)))?,
        ),
        None => Arc::new(SqlKv::new(store.clone())),
    };
    kv.set("weir:up:last_start_ms", weir_log::now_ms().to_string().as_bytes(), None)
        .await
        .context("the key-value store refused a write")?;
    let kafka = match &broker {
        Some(broker) => start_kafka(broker, &args, &settings).await?,
        None => None,
    };
    let (systems_stop, systems_stopped) = tokio::sync::watch::channel(false);
    let mut running = Vec::new();
    let mut routes = axum::Router::new();
    if systems.contains(&"analytics") {
        let (r, tasks) = start_analytics(bus.clone(), store.clone(), systems_stopped.clone()).await?;
        routes = routes.merge(r);
        running.extend(tasks);
    }
    if systems.contains(&"wedding") {
        let policy = match std::env::var("WEDDING_POLICY") {
            Ok(p) => weir_wedding::schedule::Policy::parse(&p)
                .with_context(|| format!("WEDDING_POLICY {p:?}: edf or fifo"))?,
            Err(_) => weir_wedding::schedule::Policy::Edf,
        };
        let speed = match std::env::var("WEDDING_SPEED") {
            Ok(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|x| *x > 0.0)
                .with_context(|| format!("WEDDING_SPEED {v:?} must be a positive number"))?,
            Err(_) => 1.0,
        };
        let config = weir_wedding::service::ServiceConfig { policy, speed, ..Default::default() };
        let (r, tasks) = weir_wedding::service::start(bus.clone(), store.clone(), config, systems_stopped.clone())
            .await
            .context("cannot start the wedding services")?;
        routes = routes.merge(r);
        running.extend(tasks.into_iter().map(|t| -> SystemTask {
            ("wedding team", tokio::spawn(async move { t.await.map_err(anyhow::Error::from) }))
        }));
    }
    let http = match &broker {
        Some(broker) => start_http(broker, &args, routes).await?,
        None => None,
    };
    eprintln!("weir is up");
    match &broker {
        Some(broker) => {
            eprintln!("  bus        embedded");
            eprintln!("  data dir   {}", settings.data_dir.display());
            match &kafka {
                Some(l) => eprintln!(
                    "  kafka      {} (Kafka wire protocol{})",
                    l.local_addr,
                    if settings.kafka_users.is_some() { ", SASL/PLAIN required" } else { "" }
                ),
                None => eprintln!("  kafka      disabled"),
            }
            match &http {
                Some(h) => eprintln!(
                    "  http       http://{} (REST Proxy v2 API, /health, /metrics, /openapi.json)",
                    h.local_addr
                ),
                None => eprintln!("  http       disabled"),
            }
            eprintln!(
                "  conns      at most {} Kafka, {} HTTP ({limits_note})",
                args.kafka_max_connections, args.http_max_connections
            );
            eprintln!("  topics     {}", broker.list_topics().len());
        }
        None => eprintln!("  bus        {} (no local data dir, no Kafka listener)", args.bus.trim()),
    }
    eprintln!("  database   {} ({})", redact(&store_url), store.dialect().name());
    eprintln!("  kv         {}", args.redis.as_deref().map_or("the database's weir_kv table".to_string(), redact));
    eprintln!(
        "  systems    {}",
        if systems.is_empty() { "none (the systems arrive with their issues)".to_string() } else { systems.join(", ") }
    );
    eprintln!("  Ctrl-C stops it cleanly");

    let deadline = args.run_for.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let status = status_loop(bus, broker.clone(), Duration::from_secs(args.status_every.max(1)));
    let stop = async {
        match deadline {
            Some(d) => {
                tokio::select! {
                    _ = shutdown_signal() => {}
                    _ = tokio::time::sleep_until(d) => {}
                }
            }
            None => shutdown_signal().await,
        }
    };
    let outcome = tokio::select! {
        r = status => r,
        _ = stop => Ok(()),
    };
    eprintln!("weir is stopping: finishing the systems' work, flushing logs");
    let _ = systems_stop.send(true);
    for (name, task) in running {
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("  {name} stopped with an error: {e:#}"),
            Ok(Err(e)) => eprintln!("  {name} failed: {e}"),
            Err(_) => eprintln!("  {name} did not stop within 30 s"),
        }
    }
    if let Some(l) = kafka {
        l.stop().await;
    }
    if let Some(h) = http {
        h.stop().await;
    }
    if let Some(broker) = &broker {
        broker.shutdown();
    }
    eprintln!("weir stopped");
    outcome
}

async fn start_kafka(
    broker: &Arc<Broker>,
    args: &UpArgs,
    settings: &Settings,
) -> Result<Option<weir_kafka::KafkaListener>> {
    if args.kafka_listen == "none" {
        return Ok(None);
    }
    let listen: std::net::SocketAddr = args
        .kafka_listen
        .parse()
        .with_context(|| format!("--kafka-listen {:?} is not HOST:PORT", args.kafka_listen))?;
    let mut config = weir_kafka::ListenerConfig::new(listen);
    config.users = settings.kafka_users.clone().map(|u| u.into_iter().collect());
    config.max_request_bytes = args.kafka_max_request_bytes;
    config.max_connections = args.kafka_max_connections.max(1);
    config.idle_timeout = Duration::from_millis(args.kafka_idle_timeout_ms.max(1));
    if let Some(adv) = &args.kafka_advertised {
        let (host, port) =
            adv.rsplit_once(':').with_context(|| format!("--kafka-advertised {adv:?} is not HOST:PORT"))?;
        config.advertised_host = host.to_string();
        config.advertised_port = port.parse().with_context(|| format!("bad port in --kafka-advertised {adv:?}"))?;
    }
    let listener = weir_kafka::KafkaListener::start(broker.clone(), config)
        .await
        .with_context(|| format!("cannot listen for Kafka clients on {listen}"))?;
    Ok(Some(listener))
}

/// Raises the open-file soft limit to the hard one (as servers do; many shells start at 1,024), then lowers the
/// connection caps if, with the listeners' caps together, connections could take over half of the descriptors: the
/// rest are for segment files (three per segment), the database and the outgoing connections. The caps are what
/// keeps a flood of idle connections from exhausting descriptors, so they must fit under the limit. Returns the
/// banner's line about it.
fn fit_connections_to_open_file_limit(args: &mut UpArgs) -> String {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => return format!("open-file limit unknown ({e}); caps as set"),
    };
    let wanted = (args.kafka_max_connections + args.http_max_connections) as u64;
    let room = limit / 2;
    if wanted <= room {
        return format!("open-file limit {limit}");
    }
    let scale = |n: usize| ((n as u64 * room / wanted) as usize).max(1);
    let (kafka, http) = (scale(args.kafka_max_connections), scale(args.http_max_connections));
    let note = format!(
        "open-file limit {limit}: caps lowered from {} and {} (raise `ulimit -n` for more)",
        args.kafka_max_connections, args.http_max_connections
    );
    args.kafka_max_connections = kafka;
    args.http_max_connections = http;
    note
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

type SystemTask = (&'static str, tokio::task::JoinHandle<Result<()>>);

/// The analytics pipeline: its aggregator (settings from the seed's environment variables), the default producer,
/// and its HTTP routes.
async fn start_analytics(
    bus: Arc<dyn Bus>,
    store: SqlStore,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(axum::Router, Vec<SystemTask>)> {
    let seconds = |name: &str, default: u64| -> Result<Duration> {
        match std::env::var(name) {
            Ok(v) => v
                .trim()
                .parse()
                .map(Duration::from_secs)
                .with_context(|| format!("{name} must be whole seconds, got {v:?}")),
            Err(_) => Ok(Duration::from_secs(default)),
        }
    };
    let route_late = std::env::var("ROUTE_LATE_EVENTS").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
    let config = weir_analytics::AggregatorConfig {
        grace: seconds("GRACE_PERIOD_SECONDS", 30)?,
        flush_interval: seconds("FLUSH_INTERVAL_SECONDS", 60)?,
        route_late,
        ..Default::default()
    };
    let (aggregator, control) = weir_analytics::Aggregator::new(bus.clone(), store.clone(), config)
        .await
        .context("cannot start the analytics aggregator")?;
    let routes = weir_analytics::api::routes(store, control);
    let mut stop_producer = stop.clone();
    let aggregate = tokio::spawn(async move { aggregator.run(stop).await.map_err(anyhow::Error::from) });
    let produce = tokio::spawn(async move {
        tokio::select! {
            r = super::analytics::default_producer(bus, 10_000) => r,
            _ = stop_producer.wait_for(|s| *s) => Ok(()),
        }
    });
    Ok((routes, vec![("analytics producer", produce), ("analytics aggregator", aggregate)]))
}

async fn start_http(
    broker: &Arc<Broker>,
    args: &UpArgs,
    routes: axum::Router,
) -> Result<Option<weir_http::HttpServer>> {
    if args.http_listen == "none" {
        return Ok(None);
    }
    let listen: std::net::SocketAddr =
        args.http_listen.parse().with_context(|| format!("--http-listen {:?} is not HOST:PORT", args.http_listen))?;
    let mut config = weir_http::HttpConfig::new(listen);
    config.max_body_bytes = args.http_max_body_bytes;
    config.max_records_per_request = args.http_max_records.max(1);
    config.max_connections = args.http_max_connections.max(1);
    config.idle_timeout = Duration::from_millis(args.http_idle_timeout_ms.max(1));
    config.bus = args.bus.trim().to_string();
    let server = weir_http::HttpServer::start_with(broker.clone(), config, routes)
        .await
        .with_context(|| format!("cannot listen for HTTP on {listen}"))?;
    Ok(Some(server))
}

/// Every `every`, sends a heartbeat through the bus, waits for it to come back through a group subscription, and
/// prints the round trip (and, on the embedded bus, what the broker holds). The subscription reads from the earliest
/// record and recognises its own heartbeats by their text, so no heartbeat can slip past an offset reset.
async fn status_loop(bus: Arc<dyn Bus>, broker: Option<Arc<Broker>>, every: Duration) -> Result<()> {
    let me = format!("__weir_heartbeat-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let mut options = SubscribeOptions::new(me.clone(), [HEARTBEAT_TOPIC]);
    options.start_from = StartFrom::Earliest;
    options.client_id = "weir-up-heartbeat".into();
    let mut sub = bus.subscribe(options).await?;
    // Join the group first, so the first round trip measures the pipeline rather than the join.
    let joined_by = Instant::now() + Duration::from_secs(60);
    while sub.assignment().is_empty() {
        if Instant::now() > joined_by {
            bail!("the heartbeat subscription was given no partition within 60 s");
        }
        match sub.next_batch(Duration::from_millis(200)).await {
            Ok(_) | Err(BusError::Rebalanced) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut last_total: Option<(i64, Instant)> = None;
    let mut tick = tokio::time::interval(every);
    for seq in 1u64.. {
        tick.tick().await;
        let payload = bytes::Bytes::from(format!("{me} {seq}"));
        let sent = Instant::now();
        let delivery = bus.produce(OutgoingMessage::new(HEARTBEAT_TOPIC, payload.clone())).await?;
        loop {
            let waited = sent.elapsed();
            if waited > Duration::from_secs(30) {
                bail!("heartbeat at offset {} was stored but never came back", delivery.offset);
            }
            match sub.next_batch(Duration::from_secs(30) - waited).await {
                Ok(batch) if batch.iter().any(|m| m.value.as_ref() == Some(&payload)) => break,
                Ok(_) | Err(BusError::Rebalanced) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let round_trip = sent.elapsed();
        let Some(broker) = &broker else {
            eprintln!("[status] heartbeat round trip {:.2} ms", round_trip.as_secs_f64() * 1e3);
            continue;
        };
        let (mut records, mut bytes, mut partitions) = (0i64, 0u64, 0usize);
        let topics = broker.list_topics();
        for t in &topics {
            if let Ok(d) = broker.describe_topic(t) {
                for p in d.partitions {
                    partitions += 1;
                    records += (p.log_end_offset - p.log_start_offset).max(0);
                    bytes += p.size_bytes;
                }
            }
        }
        let rate = last_total
            .map(|(n, at)| (records - n) as f64 / at.elapsed().as_secs_f64().max(1e-3))
            .map_or(String::new(), |r| format!(", {r:.0} records/s"));
        last_total = Some((records, Instant::now()));
        eprintln!(
            "[status] {} topics, {partitions} partitions, {records} records ({}){rate}; heartbeat round trip {:.2} ms",
            topics.len(),
            human_bytes(bytes),
            round_trip.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
