//! `weir up`: the platform in the foreground. It opens the embedded broker (or, with `--bus kafka://`, connects to an
//! existing Kafka cluster instead), starts the selected systems on that bus, proves the pipeline with a heartbeat
//! (produce, consume, round-trip time), prints a status line every few seconds, and shuts down cleanly on Ctrl-C or
//! SIGTERM.
//!
//! Security comes first: the users and ACLs (`<data_dir>/security/`) and the TLS certificates are read before anything
//! opens or listens, so a bad file stops the start with its name rather than leaving a listener open to everyone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use weir_broker::Broker;
use weir_runtime::kv::{self, JournalKv, JournalOptions, KvStore, RedisKv, SqlKv};
use weir_runtime::sql::Dialect;
use weir_runtime::system::TaskEnd;
use weir_runtime::{
    Bus, BusError, EmbeddedBus, Host, KafkaBus, KafkaEndpoint, OutgoingMessage, SqlStore, StartFrom, SubscribeOptions,
    System, SystemSettings,
};
use weir_security::{AclFilter, AuthorizerKind, Security};

use super::{human_bytes, one_line, open_broker, shutdown_signal};
use crate::cli::UpArgs;
use crate::settings::Settings;

const HEARTBEAT_TOPIC: &str = "__weir_heartbeat";

/// How long the systems have, in all, to finish their work once asked to stop.
const SYSTEMS_STOP_DEADLINE: Duration = Duration::from_secs(30);

pub async fn run(settings: Settings, mut args: UpArgs) -> Result<()> {
    // Every system's settings are checked before anything opens: a bad one is an error naming it, not a half start.
    let systems = chosen_systems(&settings, &args)?;
    let guard = Guard::open(&settings)?;
    if args.check {
        return check(&args, &systems, &settings, &guard);
    }
    // Before any system starts: what they record while starting (their metrics' descriptions, the wedding's desk
    // lease) must reach `/metrics`.
    weir_http::install_metrics();
    // A system serving the metrics in a shape of its own (analytics' `/api/metrics/...`) reads them through this.
    weir_runtime::exposition::set_renderer(weir_http::render_metrics);
    // Spans go to an OTLP collector when the environment names one, as with any OpenTelemetry SDK.
    let traces = weir_runtime::telemetry::init_from_env().context("cannot export traces")?;
    let limits_note = fit_connections_to_open_file_limit(&mut args);
    let (bus, broker) = open_bus(&settings, &args).await?;
    let (store, store_url) = open_store(&settings, &args).await?;
    let kv = open_kv(&settings, &store, &args).await?;
    // The registry runs when it has a listener, or when a system declares event schemas (its typed events go
    // through it).
    let mut needs_registry = false;
    for (system, system_settings) in &systems {
        needs_registry |= !system.event_schemas(system_settings)?.is_empty();
    }
    let (registry, registry_http) = start_registry(&bus, &args, &guard, needs_registry).await?;
    // Topics with schema validation ask the registry about every record. Installed before the Kafka listener
    // accepts anyone, so no producer is told there is no registry while it starts. On a cluster (`--bus kafka://`)
    // there is no broker here: the cluster validates, or not.
    if let (Some(broker), Some(service)) = (&broker, &registry) {
        broker.set_record_validator(Arc::new(weir_schema::RegistryValidator::new(service.clone())));
    }
    let kafka = match &broker {
        Some(broker) => start_kafka(broker, &args, &guard).await?,
        None => None,
    };
    let mut host = Host::new(bus.clone(), store.clone(), kv);
    if let Some(service) = &registry {
        host = host.with_schemas(Arc::new(weir_schema::Serializers::new(service.clone())));
    }
    // On weir's own broker, systems' services log in as their own users and are held to their ACLs; on a cluster
    // the platform's connection and the cluster's security apply.
    if broker.is_some() {
        host = host.with_access(Arc::new(weir_runtime::SecuredAccess::new(guard.security.clone(), bus.clone())));
    }
    let mut routes = axum::Router::new();
    for (system, system_settings) in &systems {
        let r = host
            .start(&**system, system_settings.clone())
            .await
            .with_context(|| format!("cannot start the {} system", system.name()))?;
        // Each system's routes behind its own ACL check (READ for GET and HEAD, WRITE for the rest).
        routes = routes.merge(weir_http::guard_system(system.name(), r));
    }
    // The web console at `/`, over weir's own broker or the cluster the systems run on.
    let platform: Arc<dyn weir_console::Platform> = match &broker {
        Some(broker) => Arc::new(weir_console::Embedded(broker.clone())),
        None => Arc::new(super::console_cluster::ClusterPlatform::connect(args.bus.trim(), bus.clone())?),
    };
    let info = weir_console::ConsoleInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        bus: if broker.is_some() { "embedded".into() } else { redact(args.bus.trim()) },
        systems: systems.iter().map(|(s, _)| s.name().to_string()).collect(),
        dead_letters: dead_letter_format(),
        schemas: registry.clone().map(|r| Arc::new(ConsoleSchemas::new(r)) as Arc<dyn weir_console::Schemas>),
        health: Some(Arc::new(TasksRunning(host.liveness()))),
    };
    // Held to the same users as the API, and to ACLs on the system `console`: READ to look, WRITE to act
    // (produce, create and delete topics, reset a group, replay dead letters, check a draft schema).
    let mut console = weir_console::router(platform, info);
    // The Schemas page reads the registry's own API on this port (its subject ACLs apply as on its listener).
    if let Some(service) = &registry {
        console = console.nest("/console/api/registry", weir_schema::api::router(service.clone()));
    }
    routes = routes.merge(weir_http::guard_system(super::acls::CONSOLE, console));
    // The page and its scripts hold no data: served to anyone, so a browser without credentials gets the
    // console's login page (see `open_paths` in `start_http`).
    routes = routes.merge(weir_console::assets());
    let schemas = registry.clone();
    let (http, rest_proxy) = start_http(broker.as_ref(), &bus, &args, &settings, &guard, routes, schemas).await?;
    let names: Vec<&str> = systems.iter().map(|(s, _)| s.name()).collect();
    let banner = Banner {
        settings: &settings,
        args: &args,
        limits_note: &limits_note,
        store_url: &store_url,
        guard: &guard,
        traces: traces.as_deref(),
    };
    let listeners = Listeners {
        kafka: kafka.as_ref(),
        http: http.as_ref(),
        rest_proxy: rest_proxy.as_ref(),
        registry: registry_http.as_ref(),
    };
    banner.print(broker.as_deref(), &listeners, &store, &names);

    let outcome = until_stopped(bus, broker.clone(), &args).await;
    eprintln!("weir is stopping: finishing the systems' work, flushing logs");
    for (task, end) in host.stop(SYSTEMS_STOP_DEADLINE).await {
        match end {
            TaskEnd::Finished => {}
            TaskEnd::Failed(e) => eprintln!("  {task} stopped with an error: {e}"),
            TaskEnd::Panicked(e) => eprintln!("  {task} failed: {e}"),
            TaskEnd::TimedOut => eprintln!("  {task} did not stop within {} s", SYSTEMS_STOP_DEADLINE.as_secs()),
        }
    }
    if let Some(l) = kafka {
        l.stop().await;
    }
    if let Some(h) = http {
        h.stop().await;
    }
    if let Some(h) = rest_proxy {
        h.stop().await;
    }
    if let Some(h) = registry_http {
        h.stop().await;
    }
    if let Some(broker) = &broker {
        broker.shutdown();
    }
    // The last spans, within a few seconds (an unreachable collector does not hold the stop up).
    let _ = tokio::task::spawn_blocking(weir_runtime::telemetry::shutdown).await;
    eprintln!("weir stopped");
    outcome
}

/// The systems' health as the console's overview shows it: each system's tasks, running or not.
#[derive(Debug)]
struct TasksRunning(weir_runtime::system::Liveness);

impl weir_console::SystemsHealth for TasksRunning {
    fn systems(&self) -> Vec<(String, Vec<(String, bool)>)> {
        self.0.systems()
    }
}

/// The console's use of the schema registry: framed values decoded for showing, values encoded with a subject's
/// latest schema for producing.
#[derive(Debug)]
struct ConsoleSchemas {
    service: Arc<weir_schema::SchemaService>,
    serializers: weir_schema::Serializers,
}

impl ConsoleSchemas {
    fn new(service: Arc<weir_schema::SchemaService>) -> ConsoleSchemas {
        ConsoleSchemas { serializers: weir_schema::Serializers::new(service.clone()), service }
    }
}

type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>>;

impl weir_console::Schemas for ConsoleSchemas {
    fn decode<'a>(&'a self, bytes: &'a [u8]) -> Boxed<'a, (i32, String, serde_json::Value)> {
        Box::pin(async move {
            use weir_http::EmbeddedSchemas;
            let value = self.serializers.decode(bytes).await.map_err(|e| e.to_string())?;
            let (id, _) = weir_schema::wire::unframe(bytes).ok_or("not framed with a schema id")?;
            let kind = self.service.state().schema(id).map(|s| s.schema_type.to_string()).unwrap_or_default();
            Ok((id, kind, value))
        })
    }

    fn encode<'a>(&'a self, subject: &'a str, value: &'a serde_json::Value) -> Boxed<'a, (i32, Vec<u8>)> {
        Box::pin(async move {
            use weir_http::EmbeddedSchemas;
            let id = {
                let state = self.service.state();
                let latest =
                    state.version(subject, weir_schema::VersionSel::Latest, false).map_err(|e| e.to_string())?;
                latest.schema.id
            };
            let framed = self.serializers.encode(id, value).map_err(|e| e.to_string())?;
            Ok((id, framed))
        })
    }
}

/// How the runtime writes dead letters and records their replays, for the console's dead-letters page.
fn dead_letter_format() -> weir_console::DeadLetterFormat {
    use weir_runtime::handler::{dlq_headers as h, dlq_replay};
    weir_console::DeadLetterFormat {
        suffix: weir_runtime::handler::DEFAULT_DLQ_SUFFIX.into(),
        topic_header: h::TOPIC.into(),
        partition_header: h::PARTITION.into(),
        offset_header: h::OFFSET.into(),
        error_header: h::ERROR.into(),
        attempts_header: h::ATTEMPTS.into(),
        first_failure_header: h::FIRST_FAILURE_MS.into(),
        header_prefix: h::PREFIX.into(),
        replayed_from_header: h::REPLAYED_FROM.into(),
        replays_topic: dlq_replay::REPLAYS_TOPIC.into(),
        replay_group: dlq_replay::GROUP.into(),
    }
}

/// The systems `--systems` chooses, each with its settings layered and checked.
fn chosen_systems(settings: &Settings, args: &UpArgs) -> Result<Vec<(Arc<dyn System>, SystemSettings)>> {
    let mut set = args.set.clone();
    if let Some(schedule) = &args.relay_schedule {
        set.push(format!("dispatch.relay_schedule={schedule}"));
    }
    if args.dispatch_by_region {
        set.push("dispatch.by_region=true".into());
    }
    if let Some(listen) = &args.grpc_listen {
        set.push(format!("waitroom.grpc_listen={listen}"));
    }
    if let Some(topics) = &args.waitroom_topics {
        set.push(format!("waitroom.topics={topics}"));
    }
    let flags = crate::systems::parse_set_flags(&set)?;
    let mut chosen = Vec::new();
    for system in crate::systems::select(&args.systems)? {
        let own: Vec<(String, String)> =
            flags.iter().filter(|(name, _)| name == system.name()).map(|(_, kv)| kv.clone()).collect();
        let system_settings = settings.system_settings(&*system, &own);
        system.check(&system_settings)?;
        chosen.push((system, system_settings));
    }
    Ok(chosen)
}

/// What the listeners are given for security: the users and ACLs, and each listener's TLS configuration.
struct Guard {
    security: Arc<Security>,
    kafka_tls: Option<Arc<rustls::ServerConfig>>,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    /// `[security.tls] client_ca` is set: TLS clients must present a certificate, which authenticates them.
    client_certs: bool,
}

impl Guard {
    /// Reads the user and ACL files and the TLS certificates and keys; an error names the file (and line) at fault.
    fn open(settings: &Settings) -> Result<Guard> {
        let security = Security::open(&settings.security_dir(), settings.security.clone()).map_err(one_line)?;
        let (kafka_tls, http_tls, client_certs) = match &settings.tls {
            None => (None, None, false),
            Some(tls) => {
                let config = weir_security::tls::server_config(&tls.files)
                    .map_err(|e| anyhow::anyhow!("in [security.tls]: {e}"))?;
                (tls.kafka.then(|| config.clone()), tls.http.then_some(config), tls.files.client_ca.is_some())
            }
        };
        Ok(Guard { security, kafka_tls, http_tls, client_certs })
    }

    /// A listener's security protocol in Kafka's words (`security.protocol`): TLS or not, and how clients
    /// authenticate when they must (SASL, or on HTTP Basic or a bearer token; a client certificate under mTLS).
    fn protocol(&self, tls: bool) -> String {
        let required = self.security.requires_authentication();
        match (tls, required) {
            (false, false) => "PLAINTEXT".into(),
            (false, true) => "SASL_PLAINTEXT".into(),
            (true, _) if self.client_certs => "SSL, client certificates required".into(),
            (true, false) => "SSL".into(),
            (true, true) => "SASL_SSL".into(),
        }
    }

    /// One line on the authorizer, authentication and the stores, for the banner and `--check`.
    fn summary(&self, settings: &Settings) -> String {
        let s = self.security.settings();
        let users = self.security.users.list().len();
        let acls = self.security.acls.list(&AclFilter::any()).len();
        let authorizer = match s.authorizer {
            AuthorizerKind::None if s.require_authentication => {
                "authorizer none (an authenticated client may do everything)".to_string()
            }
            AuthorizerKind::None => "authorizer none (every client may do everything)".to_string(),
            AuthorizerKind::Acl if s.super_users.is_empty() => "authorizer acl".to_string(),
            AuthorizerKind::Acl => format!("authorizer acl (super users {})", s.super_users.join(", ")),
        };
        let auth = if s.require_authentication { "authentication required" } else { "authentication optional" };
        format!(
            "{authorizer}, {auth}, {users} user{}, {acls} ACL{} in {}",
            plural(users),
            plural(acls),
            settings.security_dir().display()
        )
    }

    /// What an operator may have overlooked: a configuration in which no client can do anything yet.
    fn warnings(&self) -> Vec<String> {
        let s = self.security.settings();
        let mut out = Vec::new();
        let certificates_authenticate = self.client_certs && (self.kafka_tls.is_some() || self.http_tls.is_some());
        if s.require_authentication && self.security.users.list().is_empty() && !certificates_authenticate {
            out.push(
                "authentication is required and there is no user yet: add one with `weir users add NAME` \
                 (a running weir sees it within a second)"
                    .into(),
            );
        }
        if s.authorizer == AuthorizerKind::Acl
            && s.super_users.is_empty()
            && self.security.acls.list(&AclFilter::any()).is_empty()
        {
            out.push(
                "the ACL authorizer is on with no ACL and no super user: every request is denied until \
                 `weir acls add` allows some, or [security] super_users names an admin"
                    .into(),
            );
        }
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `weir up --check`: what `run` would check before opening anything, and the form of every URL; one line per
/// finding on success, an error naming the first problem otherwise.
fn check(
    args: &UpArgs,
    systems: &[(Arc<dyn System>, SystemSettings)],
    settings: &Settings,
    guard: &Guard,
) -> Result<()> {
    match args.bus.trim() {
        "embedded" => {}
        url if url.starts_with("kafka://") => {
            KafkaEndpoint::parse(url).map_err(|e| anyhow::anyhow!("--bus: {e}"))?;
        }
        other => bail!("--bus {other:?}: expected `embedded` or kafka://HOST:PORT[,HOST:PORT]"),
    }
    if let Some(url) = &args.database {
        SqlStore::check_url(url).map_err(|e| anyhow::anyhow!("--database: {e}"))?;
    }
    if let Some(url) = &args.redis {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            bail!("--redis {:?}: expected redis://HOST:PORT", redact(url));
        }
    }
    let names: Vec<&str> = systems.iter().map(|(s, _)| s.name()).collect();
    println!("bus       {}", redact(args.bus.trim()));
    println!("database  {}", args.database.as_deref().map_or("SQLite in the data directory".into(), redact));
    println!("systems   {}", if names.is_empty() { "none".to_string() } else { names.join(", ") });
    println!("security  {}", guard.summary(settings));
    println!(
        "kafka     {}",
        if args.kafka_listen == "none" { "disabled".into() } else { guard.protocol(guard.kafka_tls.is_some()) }
    );
    println!(
        "http      {}",
        if args.http_listen == "none" { "disabled".into() } else { guard.protocol(guard.http_tls.is_some()) }
    );
    println!(
        "rest-proxy {}",
        match (args.rest_proxy_listen.as_str(), args.bus.trim()) {
            ("none", _) => "disabled".into(),
            (_, "embedded") => guard.protocol(guard.http_tls.is_some()),
            _ => "not on a cluster".into(),
        }
    );
    args.schema_compatibility
        .parse::<weir_schema::Compatibility>()
        .map_err(|e| anyhow::anyhow!("--schema-compatibility: {e}"))?;
    println!(
        "schemas   {}",
        if args.schema_registry_listen == "none" {
            "disabled".into()
        } else {
            format!(
                "{} (default compatibility {})",
                guard.protocol(guard.http_tls.is_some()),
                args.schema_compatibility.to_uppercase()
            )
        }
    );
    for warning in guard.warnings() {
        println!("warning   {warning}");
    }
    println!("the configuration is valid");
    Ok(())
}

/// The embedded broker on the data directory, or (`--bus kafka://...`) a Kafka cluster; the heartbeat topic on it.
async fn open_bus(settings: &Settings, args: &UpArgs) -> Result<(Arc<dyn Bus>, Option<Arc<Broker>>)> {
    match args.bus.trim() {
        "embedded" => {
            let broker = open_broker(settings)?;
            if broker.topic(HEARTBEAT_TOPIC).is_err() {
                let configs = BTreeMap::from([
                    ("retention.ms".to_string(), "3600000".to_string()),
                    ("segment.bytes".to_string(), "1048576".to_string()),
                ]);
                broker.create_topic(HEARTBEAT_TOPIC, 1, configs)?;
            }
            Ok((Arc::new(EmbeddedBus::new(broker.clone())), Some(broker)))
        }
        url if url.starts_with("kafka://") => {
            let bus = KafkaBus::connect(url).map_err(|e| anyhow::anyhow!("--bus: {e}"))?;
            let name = bus.endpoint().bootstrap.clone();
            // Wrong credentials end the start at once with the cluster's reason, rather than retrying until the
            // timeout (librdkafka would log each attempt).
            tokio::select! {
                created = tokio::time::timeout(Duration::from_secs(30), bus.ensure_topic(HEARTBEAT_TOPIC, 1)) => {
                    created
                        .map_err(|_| anyhow::anyhow!("no answer from the Kafka cluster at {name} within 30 s"))?
                        .with_context(|| format!("cannot create {HEARTBEAT_TOPIC} on {name}"))?;
                }
                reason = bus.credentials_refused() => {
                    bail!("the Kafka cluster at {name} refused the credentials in --bus: {reason}")
                }
            }
            Ok((Arc::new(bus), None))
        }
        other => bail!("--bus {other:?}: expected `embedded` or kafka://HOST:PORT[,HOST:PORT]"),
    }
}

/// `--database`, or SQLite in the data directory; returns the store and its URL.
async fn open_store(settings: &Settings, args: &UpArgs) -> Result<(SqlStore, String)> {
    let url = match &args.database {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("cannot create {}", settings.data_dir.display()))?;
            SqlStore::sqlite_url(&settings.data_dir)
        }
    };
    let store = SqlStore::connect(&url).await.with_context(|| format!("cannot open the database {}", redact(&url)))?;
    Ok((store, url))
}

/// The key-value store: `--redis`; else, with the embedded database, the embedded store in `<data-dir>/kv` (taking
/// over what an older weir kept in the database's key-value tables); else those tables (on PostgreSQL, shared by
/// the instances using it). Proven with a write.
async fn open_kv(settings: &Settings, store: &SqlStore, args: &UpArgs) -> Result<Arc<dyn KvStore>> {
    let kv: Arc<dyn KvStore> = match &args.redis {
        Some(url) => Arc::new(
            RedisKv::connect(url, "weir:").await.with_context(|| format!("cannot reach Redis at {}", redact(url)))?,
        ),
        None if store.dialect() == Dialect::Sqlite => {
            let dir = settings.data_dir.join("kv");
            let journal = JournalKv::open(&dir, JournalOptions::default())
                .with_context(|| format!("cannot open the key-value store in {}", dir.display()))?;
            let moved = kv::import_sql(store, &journal).await.context("cannot move the old key-value tables")?;
            if moved > 0 {
                tracing::info!(entries = moved, "key-value entries moved from the database into {}", dir.display());
            }
            Arc::new(journal)
        }
        None => Arc::new(SqlKv::new(store.clone())),
    };
    kv.set("weir:up:last_start_ms", weir_log::now_ms().to_string().as_bytes(), None)
        .await
        .context("the key-value store refused a write")?;
    Ok(kv)
}

/// The listeners `weir up` started, for its banner.
struct Listeners<'a> {
    kafka: Option<&'a weir_kafka::KafkaListener>,
    http: Option<&'a weir_http::HttpServer>,
    rest_proxy: Option<&'a weir_http::HttpServer>,
    registry: Option<&'a weir_http::HttpServer>,
}

/// What `weir up` prints once everything is listening.
struct Banner<'a> {
    settings: &'a Settings,
    args: &'a UpArgs,
    limits_note: &'a str,
    store_url: &'a str,
    guard: &'a Guard,
    /// The OTLP endpoint spans go to, when one is set.
    traces: Option<&'a str>,
}

impl Banner<'_> {
    fn print(&self, broker: Option<&Broker>, listeners: &Listeners<'_>, store: &SqlStore, systems: &[&str]) {
        let (settings, args, guard) = (self.settings, self.args, self.guard);
        let Listeners { kafka, http, rest_proxy, registry } = *listeners;
        let http_line =
            |h: &weir_http::HttpServer, what: &str| listener_line("http", h, guard, &settings.http_open_paths, what);
        let registry_line = match registry {
            Some(r) => {
                listener_line("schemas", r, guard, &[], "Confluent Schema Registry API, kept in the _schemas topic")
            }
            None => "  schemas    disabled".to_string(),
        };
        eprintln!("weir is up");
        match broker {
            Some(broker) => {
                eprintln!("  bus        embedded");
                eprintln!("  data dir   {}", settings.data_dir.display());
                match kafka {
                    Some(l) => eprintln!(
                        "  kafka      {} (Kafka wire protocol, {})",
                        l.local_addr,
                        guard.protocol(guard.kafka_tls.is_some())
                    ),
                    None => eprintln!("  kafka      disabled"),
                }
                match http {
                    Some(h) => eprintln!("{}", http_line(h, "REST Proxy v2 API, /health, /metrics, /openapi.json")),
                    None => eprintln!("  http       disabled"),
                }
                match rest_proxy {
                    Some(h) => {
                        // Of the open paths, those it serves.
                        let open: Vec<String> = (settings.http_open_paths.iter())
                            .filter(|p| p.starts_with("/topics") || p.starts_with("/consumers"))
                            .cloned()
                            .collect();
                        let what = "REST Proxy v2 API alone: topics, produce, consumers";
                        eprintln!("{}", listener_line("rest-proxy", h, guard, &open, what));
                    }
                    None => eprintln!("  rest-proxy disabled"),
                }
                eprintln!(
                    "  conns      at most {} Kafka, {} HTTP ({})",
                    args.kafka_max_connections, args.http_max_connections, self.limits_note
                );
                eprintln!("  topics     {}", broker.list_topics().len());
            }
            None => {
                eprintln!("  bus        {} (no local data dir, no Kafka listener)", redact(args.bus.trim()));
                match http {
                    Some(h) => eprintln!(
                        "{}",
                        http_line(
                            h,
                            "the systems' routes, /health with the cluster's reachability, /metrics; the REST Proxy \
                             routes answer 501 on a cluster"
                        )
                    ),
                    None => eprintln!("  http       disabled"),
                }
                if args.rest_proxy_listen != "none" {
                    eprintln!("  rest-proxy not on a cluster (the REST Proxy serves the embedded broker)");
                }
            }
        }
        eprintln!("{registry_line}");
        eprintln!("  database   {} ({})", redact(self.store_url), store.dialect().name());
        eprintln!("  kv         {}", args.redis.as_deref().map_or("the database's weir_kv table".to_string(), redact));
        eprintln!("  systems    {}", if systems.is_empty() { "none".to_string() } else { systems.join(", ") });
        eprintln!("  security   {}", guard.summary(settings));
        if let Some(endpoint) = self.traces {
            eprintln!("  traces     OTLP/HTTP to {}", redact(endpoint));
        }
        for warning in guard.warnings() {
            eprintln!("  warning    {warning}");
        }
        eprintln!("  Ctrl-C stops it cleanly");
    }
}

/// One HTTP listener's banner line: its URL, protocol, how a client authenticates (in HTTP's terms beside Kafka's
/// protocol name) and what it serves.
fn listener_line(label: &str, h: &weir_http::HttpServer, guard: &Guard, open_paths: &[String], what: &str) -> String {
    let tls = guard.http_tls.is_some();
    let how = if tls && guard.client_certs {
        String::new()
    } else if guard.security.requires_authentication() {
        let except =
            if open_paths.is_empty() { String::new() } else { format!(" except on {}", open_paths.join(", ")) };
        format!(": Basic or bearer credentials{except}")
    } else {
        String::new()
    };
    let scheme = if tls { "https" } else { "http" };
    format!("  {label:<10} {scheme}://{} ({}{how}; {what})", h.local_addr, guard.protocol(tls))
}

/// The schema registry over the bus, on its own listener (the HTTP API's security and TLS), unless `none`; with
/// `none`, still the registry without a listener when `needed` (a system's typed events go through it).
async fn start_registry(
    bus: &Arc<dyn Bus>,
    args: &UpArgs,
    guard: &Guard,
    needed: bool,
) -> Result<(Option<Arc<weir_schema::SchemaService>>, Option<weir_http::HttpServer>)> {
    let listen: Option<std::net::SocketAddr> = match args.schema_registry_listen.as_str() {
        "none" => None,
        text => Some(text.parse().with_context(|| format!("--schema-registry-listen {text:?} is not HOST:PORT"))?),
    };
    if listen.is_none() && !needed {
        return Ok((None, None));
    }
    let level: weir_schema::Compatibility =
        args.schema_compatibility.parse().map_err(|e| anyhow::anyhow!("--schema-compatibility: {e}"))?;
    let config = weir_schema::ServiceConfig { default_compatibility: level, ..Default::default() };
    let service = weir_schema::SchemaService::start(bus.clone(), config)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the schema registry: {e}"))?;
    let Some(listen) = listen else { return Ok((Some(service), None)) };
    let mut http = weir_http::HttpConfig::new(listen);
    http.max_connections = args.http_max_connections.max(1);
    http.idle_timeout = Duration::from_millis(args.http_idle_timeout_ms.max(1));
    http.security = guard.security.clone();
    http.tls = guard.http_tls.clone();
    http.open_paths = Vec::new();
    let server = weir_http::HttpServer::start_app(http, weir_schema::api::router(service.clone()))
        .await
        .with_context(|| format!("cannot listen for the schema registry on {listen} (--schema-registry-listen)"))?;
    Ok((Some(service), Some(server)))
}

/// Runs the status loop until Ctrl-C, SIGTERM or `--run-for`; returns the status loop's error, if it failed.
async fn until_stopped(bus: Arc<dyn Bus>, broker: Option<Arc<Broker>>, args: &UpArgs) -> Result<()> {
    let deadline = args.run_for.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let status = status_loop(bus, broker, Duration::from_secs(args.status_every.max(1)));
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
    tokio::select! {
        r = status => r,
        _ = stop => Ok(()),
    }
}

async fn start_kafka(broker: &Arc<Broker>, args: &UpArgs, guard: &Guard) -> Result<Option<weir_kafka::KafkaListener>> {
    if args.kafka_listen == "none" {
        return Ok(None);
    }
    let listen: std::net::SocketAddr = args
        .kafka_listen
        .parse()
        .with_context(|| format!("--kafka-listen {:?} is not HOST:PORT", args.kafka_listen))?;
    let mut config = weir_kafka::ListenerConfig::new(listen);
    config.security = guard.security.clone();
    config.tls = guard.kafka_tls.clone();
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
        .with_context(|| format!("cannot listen for Kafka clients on {listen} (--kafka-listen)"))?;
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

/// A URL without its password (nor the value of a query parameter naming a password or secret), for messages.
fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &base[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &base[..scheme + 3], &base[at..])
        }
        _ => base.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.contains("password") || k.contains("secret") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{out}?{}", pairs.join("&"));
    }
    out
}

/// The HTTP API (`--http-listen`): over the embedded broker, or, on a cluster, the systems' routes with health and
/// metrics; and, over the embedded broker, the REST Proxy's routes alone on `--rest-proxy-listen`, sharing the API's
/// consumer instances. On a cluster there is no REST Proxy listener, as there is no Kafka listener.
async fn start_http(
    broker: Option<&Arc<Broker>>,
    bus: &Arc<dyn Bus>,
    args: &UpArgs,
    settings: &Settings,
    guard: &Guard,
    routes: axum::Router,
    schemas: Option<Arc<weir_schema::SchemaService>>,
) -> Result<(Option<weir_http::HttpServer>, Option<weir_http::HttpServer>)> {
    let listen = |flag: &str, text: &str| -> Result<Option<std::net::SocketAddr>> {
        match text {
            "none" => Ok(None),
            text => Ok(Some(text.parse().with_context(|| format!("--{flag} {text:?} is not HOST:PORT"))?)),
        }
    };
    let http_listen = listen("http-listen", &args.http_listen)?;
    // Checked on a cluster too, where it is not served.
    let rest_proxy_listen = listen("rest-proxy-listen", &args.rest_proxy_listen)?.filter(|_| broker.is_some());
    let Some(config_listen) = http_listen.or(rest_proxy_listen) else { return Ok((None, None)) };
    let mut config = weir_http::HttpConfig::new(config_listen);
    config.max_body_bytes = args.http_max_body_bytes;
    config.max_records_per_request = args.http_max_records.max(1);
    config.max_connections = args.http_max_connections.max(1);
    config.idle_timeout = Duration::from_millis(args.http_idle_timeout_ms.max(1));
    config.bus = redact(args.bus.trim());
    config.security = guard.security.clone();
    config.tls = guard.http_tls.clone();
    config.open_paths = settings.http_open_paths.clone();
    // The web console's page and scripts (no data in them), so a browser without credentials reaches its login.
    config.open_paths.extend(weir_console::ASSET_PATHS.iter().map(|p| p.to_string()));
    // The REST Proxy's avro, jsonschema and protobuf formats serialize through the registry.
    config.schemas = schemas.map(|s| Arc::new(weir_schema::Serializers::new(s)) as Arc<dyn weir_http::EmbeddedSchemas>);
    let Some(broker) = broker else {
        let Some(listen) = http_listen else { return Ok((None, None)) };
        // The cluster answers if it can confirm the heartbeat topic (created at start) exists.
        let bus = bus.clone();
        let probe: weir_http::cluster::ClusterProbe = Arc::new(move || {
            let bus = bus.clone();
            Box::pin(async move { bus.ensure_topic(HEARTBEAT_TOPIC, 1).await.map_err(|e| e.to_string()) })
        });
        let server = weir_http::HttpServer::start_on_cluster(config, probe, routes)
            .await
            .with_context(|| format!("cannot listen for HTTP on {listen} (--http-listen)"))?;
        return Ok((Some(server), None));
    };
    // One REST Proxy behind both listeners: a consumer instance created through one answers through the other.
    let proxy = weir_http::RestProxy::new(broker.clone(), config);
    let http = match http_listen {
        Some(listen) => Some(
            weir_http::HttpServer::start_api(&proxy, routes)
                .await
                .with_context(|| format!("cannot listen for HTTP on {listen} (--http-listen)"))?,
        ),
        None => None,
    };
    let rest_proxy = match rest_proxy_listen {
        Some(listen) => Some(
            weir_http::HttpServer::start_rest_proxy(&proxy, listen)
                .await
                .with_context(|| format!("cannot listen for the REST Proxy on {listen} (--rest-proxy-listen)"))?,
        ),
        None => None,
    };
    Ok((http, rest_proxy))
}

/// Sends `text` through the heartbeat topic and waits (up to 30 s) until the subscription sees it come back.
async fn heartbeat(bus: &dyn Bus, sub: &mut dyn weir_runtime::Subscription, text: &str) -> Result<()> {
    let payload = bytes::Bytes::from(text.to_string());
    let sent = Instant::now();
    let delivery = bus.produce(OutgoingMessage::new(HEARTBEAT_TOPIC, payload.clone())).await?;
    loop {
        let waited = sent.elapsed();
        if waited > Duration::from_secs(30) {
            bail!("heartbeat at offset {} was stored but did not come back within 30 s", delivery.offset);
        }
        match sub.next_batch(Duration::from_secs(30) - waited).await {
            Ok(batch) if batch.iter().any(|m| m.value.as_ref() == Some(&payload)) => return Ok(()),
            Ok(_) | Err(BusError::Rebalanced) => {}
            Err(e) => return Err(e.into()),
        }
    }
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
            // A cluster that went away right after the start: the heartbeats below report it while it is away.
            Err(BusError::Unavailable(_)) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let mut last_total: Option<(i64, Instant)> = None;
    let mut tick = tokio::time::interval(every);
    // Once running, a heartbeat that fails is reported, not fatal: on a cluster that is briefly away the systems
    // pause and resume, and so does this loop (one line when it starts failing, one when it recovers).
    let mut failing: Option<()> = None;
    for seq in 1u64.. {
        tick.tick().await;
        let sent = Instant::now();
        if let Err(e) = heartbeat(&*bus, &mut *sub, &format!("{me} {seq}")).await {
            if failing.replace(()).is_none() {
                eprintln!("[status] heartbeat failed: {e:#}; the systems pause where they need the bus");
            }
            continue;
        }
        if failing.take().is_some() {
            eprintln!("[status] the bus answers again");
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

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_lose_their_passwords_and_secret_parameters_in_messages() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("kafka://h:1"), "kafka://h:1");
        assert_eq!(
            redact("kafka://a:b@h:1?compression.type=lz4&sasl.password=x&ssl.key.password=y"),
            "kafka://a:***@h:1?compression.type=lz4&sasl.password=***&ssl.key.password=***"
        );
    }
}
