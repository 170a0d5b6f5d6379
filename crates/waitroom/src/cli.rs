//! `weir waitroom simulate`: the origin's `simulate-queue` through the real API (`crate::simulate`), on a weir of
//! its own or a running one (`--target`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Arg, ArgAction, ArgMatches, Command};
use weir_runtime::api_client::ApiTarget;
use weir_runtime::{CommandHost, Host, SystemSettings};

use crate::grpc::pb::waitroom_service_client::WaitroomServiceClient;
use crate::model::Topics;
use crate::simulate::{self, Outcomes, Plan, Via};

pub fn command() -> Command {
    Command::new("waitroom")
        .about("Waitroom (seed 004): simulate a ticket sale's waiting room")
        .subcommand_required(true)
        .subcommand(
            Command::new("simulate")
                .about("Users join a sale's queue, wait, check out or leave, through the real HTTP or gRPC API")
                .long_about(
                    "Users arrive at --join-rate and join the event's queue (priorities: 70% 0, 20% 5, 10% 10) \
                     through the HTTP API or, with --via grpc, the gRPC API; while waiting each may leave \
                     (--exit-rate per minute); once admitted each checks out in about --checkout-time and \
                     completes with probability --checkout-rate, else half fail and half walk away (the waitroom \
                     expires their checkout). Outcomes are published as a checkout service would: on the bus, or \
                     through the target's REST Proxy. --speed X runs every clock X times faster. Reports what \
                     happened to the users, the wait to admission (p50, p99), the largest checkout concurrency \
                     seen and fairness violations (there must be none). Without --target it runs a weir of its \
                     own (SQLite and the embedded bus in a temporary directory).",
                )
                .arg(
                    Arg::new("users")
                        .long("users")
                        .value_name("N")
                        .default_value("300")
                        .value_parser(clap::value_parser!(u64).range(1..=10_000_000)),
                )
                .arg(
                    Arg::new("join-rate")
                        .long("join-rate")
                        .value_name("N/s")
                        .default_value("100/s")
                        .help("Users arriving per second"),
                )
                .arg(
                    Arg::new("checkout-rate")
                        .long("checkout-rate")
                        .value_name("P")
                        .default_value("0.3")
                        .help("The probability an admitted user completes checkout"),
                )
                .arg(
                    Arg::new("exit-rate")
                        .long("exit-rate")
                        .value_name("P/min")
                        .default_value("0.1/min")
                        .help("The probability per minute that a waiting user leaves"),
                )
                .arg(
                    Arg::new("checkout-time")
                        .long("checkout-time")
                        .value_name("DURATION")
                        .default_value("15s")
                        .help("How long checking out takes, on average"),
                )
                .arg(
                    Arg::new("speed")
                        .long("speed")
                        .value_name("X")
                        .default_value("1")
                        .help("Runs every clock X times faster"),
                )
                .arg(Arg::new("event").long("event").value_name("ID").default_value("sim-event").help("The event's id"))
                .arg(
                    Arg::new("via")
                        .long("via")
                        .value_name("http|grpc")
                        .default_value("http")
                        .value_parser(["http", "grpc"]),
                )
                .arg(
                    Arg::new("target")
                        .long("target")
                        .value_name("HOST:PORT")
                        .help("A running weir's HTTP address, to drive instead of a weir of its own"),
                )
                .arg(
                    Arg::new("grpc-target").long("grpc-target").value_name("HOST:PORT").requires("target").help(
                        "The running weir's gRPC address (with --via grpc; default: the target's host, port 50056)",
                    ),
                )
                .arg(
                    Arg::new("topics")
                        .long("topics")
                        .value_name("dotted|seed")
                        .default_value("dotted")
                        .value_parser(["dotted", "seed"])
                        .help("The target's topic names"),
                )
                .arg(
                    Arg::new("redis")
                        .long("redis")
                        .value_name("URL")
                        .conflicts_with("target")
                        .help("Sessions in Redis for the simulator's own weir"),
                )
                .arg(
                    Arg::new("set")
                        .long("set")
                        .value_name("KEY=VALUE")
                        .action(ArgAction::Append)
                        .conflicts_with("target")
                        .help("A waitroom setting of the simulator's own weir (waitroom.KEY=VALUE or KEY=VALUE)"),
                )
                .arg(
                    Arg::new("timeout")
                        .long("timeout")
                        .value_name("SECONDS")
                        .default_value("600")
                        .value_parser(clap::value_parser!(u64).range(1..=86_400)),
                )
                .arg(
                    Arg::new("report")
                        .long("report")
                        .value_name("text|json")
                        .default_value("text")
                        .value_parser(["text", "json"]),
                ),
        )
        .subcommand(
            Command::new("bench")
                .about("Throughput of a running weir's waitroom over gRPC: joins/s, status lookups/s, stream fan-out")
                .long_about(
                    "Against a running weir (--http for its HTTP API, --grpc for its gRPC API): pauses admission for \
                     --event, joins --joins users over gRPC (--in-flight requests at a time, spread over \
                     --connections HTTP/2 connections), looks up --lookups statuses with all of them queued, \
                     then opens --streams position streams and times how long one change to the queue takes to reach every one. Prints one JSON \
                     line per measure; --ids-out writes the joined session ids, one a line (for wrk's status \
                     lookups over HTTP in scripts/bench.sh).",
                )
                .arg(
                    Arg::new("http")
                        .long("http")
                        .value_name("HOST:PORT")
                        .required(true)
                        .help("The weir's HTTP address"),
                )
                .arg(
                    Arg::new("grpc")
                        .long("grpc")
                        .value_name("HOST:PORT")
                        .default_value("127.0.0.1:50056")
                        .help("The weir's gRPC address"),
                )
                .arg(Arg::new("event").long("event").value_name("ID").default_value("bench").help("The event to fill"))
                .arg(count("joins", "100000", 1))
                .arg(count("lookups", "100000", 1))
                .arg(count("streams", "10000", 0))
                .arg(count("in-flight", "128", 1))
                .arg(count("connections", "8", 1).help("HTTP/2 connections to spread the requests over"))
                .arg(
                    Arg::new("ids-out")
                        .long("ids-out")
                        .value_name("FILE")
                        .help("Where to write the joined session ids"),
                ),
        )
}

fn count(name: &'static str, default: &'static str, least: u64) -> Arg {
    Arg::new(name)
        .long(name)
        .value_name("N")
        .default_value(default)
        .value_parser(clap::value_parser!(u64).range(least..=100_000_000))
}

/// `100/s`, `100`: a rate per second; `0.1/min`: per minute.
fn rate(text: &str, unit: &str) -> Result<f64> {
    let t = text.trim();
    let n = t.strip_suffix(unit).unwrap_or(t).trim();
    match n.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => bail!("{text:?}: expected a number, as in 100{unit}"),
    }
}

pub async fn run(matches: ArgMatches, host: Arc<dyn CommandHost>) -> Result<()> {
    match matches.subcommand() {
        Some(("simulate", m)) => simulate_command(m, host).await,
        Some(("bench", m)) => bench_command(m).await,
        _ => bail!("unknown waitroom command"),
    }
}

async fn bench_command(m: &ArgMatches) -> Result<()> {
    let text = |name: &str| m.get_one::<String>(name).cloned().with_context(|| format!("--{name}"));
    let num = |name: &str| m.get_one::<u64>(name).copied().with_context(|| format!("--{name}"));
    let plan = crate::bench::Plan {
        grpc: text("grpc")?,
        http: text("http")?,
        event_id: text("event")?,
        joins: num("joins")?,
        lookups: num("lookups")?,
        streams: num("streams")?,
        in_flight: num("in-flight")? as usize,
        connections: num("connections")? as usize,
    };
    crate::room::check_id("--event", &plan.event_id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (lines, ids) = crate::bench::run(&plan).await?;
    for line in &lines {
        println!("{}", serde_json::to_string(line)?);
    }
    if let Some(path) = m.get_one::<String>("ids-out") {
        std::fs::write(path, ids.join("\n") + "\n").with_context(|| format!("cannot write {path}"))?;
    }
    Ok(())
}

async fn simulate_command(m: &ArgMatches, host: Arc<dyn CommandHost>) -> Result<()> {
    let text = |name: &str| m.get_one::<String>(name).cloned().with_context(|| format!("--{name}"));
    let speed = rate(&text("speed")?, "x")?;
    if speed <= 0.0 {
        bail!("--speed: must be above 0");
    }
    let checkout_rate = rate(&text("checkout-rate")?, "")?;
    if checkout_rate > 1.0 {
        bail!("--checkout-rate: a probability, from 0 to 1");
    }
    let plan = Plan {
        users: *m.get_one::<u64>("users").context("--users")?,
        join_rate: rate(&text("join-rate")?, "/s")?.max(0.001),
        checkout_rate,
        exit_rate_per_min: rate(&text("exit-rate")?, "/min")?,
        checkout_time: crate::system::de::parse(&text("checkout-time")?)
            .map_err(|e| anyhow::anyhow!("--checkout-time: {e}"))?,
        speed,
        event_id: text("event")?,
        timeout: Duration::from_secs(*m.get_one::<u64>("timeout").context("--timeout")?),
    };
    crate::room::check_id("--event", &plan.event_id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let grpc = text("via")? == "grpc";
    let report = match m.get_one::<String>("target") {
        Some(target) => {
            let topics = if text("topics")? == "seed" { Topics::seed() } else { Topics::dotted() };
            let via = if grpc {
                let host_part = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
                let addr = m.get_one::<String>("grpc-target").cloned().unwrap_or_else(|| format!("{host_part}:50056"));
                Via::Grpc(
                    WaitroomServiceClient::connect(format!("http://{addr}"))
                        .await
                        .with_context(|| format!("cannot reach the gRPC API at {addr}"))?,
                )
            } else {
                Via::Http(ApiTarget::Http(target.clone()))
            };
            simulate::run(
                &plan,
                via,
                Outcomes::Rest(ApiTarget::Http(target.clone()), topics),
                ApiTarget::Http(target.clone()),
            )
            .await?
        }
        None => {
            let mut flags = vec![
                ("process_interval".to_string(), format!("{}ms", (1000.0 / speed).max(10.0) as u64)),
                ("jwt_expiry".to_string(), format!("{}ms", (60_000.0 / speed).max(1000.0) as u64)),
                ("grpc_listen".to_string(), if grpc { "127.0.0.1:0" } else { "none" }.to_string()),
            ];
            for kv in m.get_many::<String>("set").into_iter().flatten() {
                let (k, v) = kv.split_once('=').with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
                let k = k.trim();
                flags.push((k.strip_prefix("waitroom.").unwrap_or(k).to_string(), v.trim().to_string()));
            }
            let settings = SystemSettings::layered("waitroom", &[], None, Vec::new(), &flags);
            let topics = crate::WaitroomSettings::read(&settings)?.topic_names().map_err(|e| anyhow::anyhow!(e))?;
            let platform = host.scratch(None).await?;
            let store = platform.store.clone().context("the scratch platform has no database")?;
            let kv = platform.kv.clone().context("the scratch platform has no key-value store")?;
            let mut systems = Host::new(platform.bus.clone(), store, kv);
            let routes = systems.start(&crate::WaitroomSystem, settings).await.context("cannot start the waitroom")?;
            let api = ApiTarget::Router(routes);
            let via = if grpc {
                let health = api.call("GET", "/api/v1/waitroom/health", &serde_json::Value::Null).await?;
                let addr = health["grpc"].as_str().context("the waitroom's gRPC address")?.to_string();
                Via::Grpc(WaitroomServiceClient::connect(format!("http://{addr}")).await?)
            } else {
                Via::Http(api.clone())
            };
            let outcome = simulate::run(&plan, via, Outcomes::Bus(platform.bus.clone(), topics), api).await;
            systems.stop_and_warn(Duration::from_secs(10)).await;
            platform.close().await;
            let mut report = outcome?;
            report.peak_rss_bytes = weir_runtime::system::peak_rss();
            report
        }
    };
    if text("report")? == "json" {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", simulate::text(&report));
    }
    if report.fairness_violations > 0 {
        bail!("{} fairness violations", report.fairness_violations);
    }
    Ok(())
}
