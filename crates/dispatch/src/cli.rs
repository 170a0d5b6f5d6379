//! `weir dispatch generate N`: the origin's event generator. It writes N random detection events in one transaction
//! straight into a database (`--database URL`, with their outbound messages in the outbox, which the relay of a weir
//! on that database publishes), or sends them through a running weir's API (`--target HOST:PORT`, one transaction per
//! request of up to 10,000), printing each as the origin's generator logged it (`--quiet`: only the total).
//! `weir dispatch simulate`: the benchmark (`crate::simulate`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::Value;
use weir_runtime::api_client::ApiTarget;
use weir_runtime::{CommandHost, Host, SqlStore, SystemSettings};

use crate::api::MAX_EVENTS_PER_REQUEST;
use crate::events::{generate as make, DetectionEvent};
use crate::store;

pub fn command() -> Command {
    Command::new("dispatch")
        .about("Dispatch (seed 003): generate detection events, benchmark the whole flow")
        .subcommand_required(true)
        .subcommand(
            Command::new("generate")
                .about("Writes N random detection events (the origin's value sets), in one transaction")
                .long_about(
                    "Writes N random detection events with the origin's value sets (regions NA, EU, APAC, LATAM; four \
                     rule types; five locations; severity 1-5; device_0..99, camera_0..49; unique frame references), \
                     printing each. With --database they go straight into that database in one transaction, with \
                     their events.outbound messages in the outbox (a weir running on that database publishes them); \
                     with --target they go through a running weir's POST /api/dispatch/events, one transaction per \
                     request of up to 10,000.",
                )
                .arg(
                    Arg::new("count")
                        .value_name("N")
                        .default_value("10")
                        .value_parser(clap::value_parser!(u64).range(1..=10_000_000)),
                )
                .arg(
                    Arg::new("database")
                        .long("database")
                        .value_name("URL")
                        .help("postgres://... or sqlite://...: write straight into it"),
                )
                .arg(
                    Arg::new("target")
                        .long("target")
                        .value_name("HOST:PORT")
                        .conflicts_with("database")
                        .help("A running weir's HTTP address"),
                )
                .arg(
                    Arg::new("quiet")
                        .long("quiet")
                        .action(ArgAction::SetTrue)
                        .help("Print only the total, not each event"),
                ),
        )
        .subcommand(
            Command::new("simulate")
                .about("Benchmark: U reviewers online, N events written through the API, until all are assigned")
                .long_about(
                    "Brings --users reviewers online, writes --events events through POST /api/dispatch/events \
                     ({\"generate\": --batch} requests, --in-flight at a time), and waits until the assignment \
                     service has given each out and the relay has its state back. Reports events assigned per \
                     second, the time from an event's creation to its assignment (p50, p99) and, on a weir of its \
                     own, peak resident memory. Without --target it runs a weir of its own (--database, or SQLite \
                     in a temporary directory; an embedded bus). With --target it drives a running weir (any bus), \
                     adding its reviewers there, whose sessions and assignments it leaves in place. The events must \
                     fit: --users × the cap (50) open assignments.",
                )
                .arg(num("events", "N", "50000", "Events to write"))
                .arg(num("users", "U", "1000", "Reviewers online"))
                .arg(num("batch", "B", "2000", "Events per request (one transaction each, at most 10000)"))
                .arg(num("in-flight", "K", "2", "Requests in flight"))
                .arg(num("timeout", "SECONDS", "600", "Give up after this long"))
                .arg(Arg::new("queued-first").long("queued-first").action(ArgAction::SetTrue).help(
                    "Bring the reviewers online only once every event waits in the assignment service's queue: \
                     measures the assignment service alone (time to assignment then includes the wait for them)",
                ))
                .arg(
                    Arg::new("database")
                        .long("database")
                        .value_name("URL")
                        .help("The database of the simulator's own weir (default: SQLite in a temporary directory)"),
                )
                .arg(
                    Arg::new("target")
                        .long("target")
                        .value_name("HOST:PORT")
                        .conflicts_with("database")
                        .help("A running weir's HTTP address, to drive instead"),
                )
                .arg(
                    Arg::new("set")
                        .long("set")
                        .value_name("KEY=VALUE")
                        .action(ArgAction::Append)
                        .conflicts_with("target")
                        .help("A dispatch setting of the simulator's own weir, as `weir up --set` takes it (e.g. dispatch.round=4000, or round=4000)"),
                )
                .arg(
                    Arg::new("report")
                        .long("report")
                        .value_name("text|json")
                        .default_value("text")
                        .value_parser(["text", "json"]),
                ),
        )
}

fn num(name: &'static str, value: &'static str, default: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .value_name(value)
        .default_value(default)
        .value_parser(clap::value_parser!(u64).range(1..=10_000_000))
        .help(help)
}

pub async fn run(matches: ArgMatches, host: Arc<dyn CommandHost>) -> Result<()> {
    match matches.subcommand() {
        Some(("generate", m)) => generate(m).await,
        Some(("simulate", m)) => simulate(m, host).await,
        _ => bail!("unknown dispatch command"),
    }
}

async fn generate(m: &ArgMatches) -> Result<()> {
    let n = *m.get_one::<u64>("count").context("N")? as usize;
    let quiet = m.get_flag("quiet");
    let (database, target) = (m.get_one::<String>("database"), m.get_one::<String>("target"));
    if database.is_none() && target.is_none() {
        bail!("say where the events go: --database URL (straight into it) or --target HOST:PORT (a running weir)");
    }
    let events = make(n, weir_runtime::time::now_ms(), &mut rand::thread_rng());
    if !quiet {
        for e in &events {
            println!("{}", e.line());
        }
    }
    if let Some(url) = database {
        let store = SqlStore::connect(url).await.with_context(|| format!("cannot open {url}"))?;
        store::migrate(&store).await.context("cannot create dispatch's tables")?;
        let mut tx = store.begin().await?;
        // What a relay in this process would be handed; the running weir's relay reads the outbox instead.
        let _enqueued = store::insert_and_relay(&mut tx, store.dialect(), &events).await?;
        tx.commit().await.context("cannot commit the events")?;
    } else if let Some(target) = target {
        let api = ApiTarget::Http(target.clone());
        for chunk in events.chunks(MAX_EVENTS_PER_REQUEST) {
            let body = Value::Array(chunk.iter().map(outbound_json).collect::<Result<_>>()?);
            let (status, answer) = api.exchange("POST", "/api/dispatch/events", &body).await?;
            if status != 201 {
                bail!("POST /api/dispatch/events on {target} answered {status}: {answer}");
            }
        }
    }
    eprintln!("{n} events written");
    Ok(())
}

fn outbound_json(e: &DetectionEvent) -> Result<Value> {
    Ok(serde_json::to_value(e.outbound())?)
}

async fn simulate(m: &ArgMatches, host: Arc<dyn CommandHost>) -> Result<()> {
    use crate::simulate::{self, Plan};
    let get = |name: &str| m.get_one::<u64>(name).copied().with_context(|| format!("--{name}"));
    let plan = Plan {
        events: get("events")?,
        users: get("users")?,
        batch: get("batch")?.min(MAX_EVENTS_PER_REQUEST as u64),
        in_flight: get("in-flight")? as usize,
        timeout: Duration::from_secs(get("timeout")?),
        queued_first: m.get_flag("queued-first"),
    };
    let report = match m.get_one::<String>("target") {
        Some(target) => {
            let report = simulate::drive(&ApiTarget::Http(target.clone()), &plan).await?;
            report
        }
        None => {
            let mut flags = Vec::new();
            for kv in m.get_many::<String>("set").into_iter().flatten() {
                let (k, v) = kv.split_once('=').with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
                // `dispatch.KEY` as `weir up --set` takes it, or the bare KEY.
                let k = k.trim();
                flags.push((k.strip_prefix("dispatch.").unwrap_or(k).to_string(), v.trim().to_string()));
            }
            let settings = SystemSettings::layered("dispatch", &[], None, Vec::new(), &flags);
            let cap = crate::DispatchSettings::read(&settings)?.max_open_per_user;
            simulate::check(&plan, cap)?;
            let platform = host.scratch(m.get_one::<String>("database").map(String::as_str)).await?;
            let store = platform.store.clone().context("the scratch platform has no database")?;
            let kv = platform.kv.clone().context("the scratch platform has no key-value store")?;
            let mut systems = Host::new(platform.bus.clone(), store, kv);
            let routes = systems.start(&crate::DispatchSystem, settings).await.context("cannot start dispatch")?;
            let outcome = simulate::drive(&ApiTarget::Router(routes), &plan).await;
            systems.stop_and_warn(Duration::from_secs(10)).await;
            platform.close().await;
            let mut report = outcome?;
            report.peak_rss_bytes = weir_runtime::system::peak_rss();
            report
        }
    };
    if m.get_one::<String>("report").map(String::as_str) == Some("json") {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", simulate::text(&report));
    }
    Ok(())
}
