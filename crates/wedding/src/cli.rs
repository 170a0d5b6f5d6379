//! `weir wedding ...`: `simulate` sends a wedding (a dataset file, or a seeded random one) over the wedding's HTTP API
//! like the seed's simulator does, has the teams handle it on the exercise's rules, and prints the run's report:
//! stress, happiness, response times, utilisation, and how close the policy came to the best possible. `dataset`
//! prints a random wedding in the exercise's format.
//!
//! Without `--target`, `simulate` starts a weir of its own (the command host's scratch platform: an embedded broker
//! and SQLite in a temporary directory) with the wedding system on it, calls its routes in-process, and runs on a
//! virtual clock: the outcome is deterministic, and `--speed max` runs a 6-minute wedding in seconds. With `--target
//! http://HOST:PORT` it drives a running weir (`weir up`) over HTTP on that run's real clock (`--clock virtual` asks
//! for a virtual one there too). `--model` skips weir altogether and computes the outcome from the rules in-process,
//! which a virtual run reproduces decision for decision.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, FromArgMatches, Subcommand, ValueEnum};
use serde_json::json;
use weir_runtime::api_client::ApiTarget;
use weir_runtime::{CommandHost, Host, SystemSettings};

use crate::drive::{drive, DriveOptions, Progress};
use crate::report::Report;
use crate::rules::Rules;
use crate::schedule::{simulate, Event, Policy};
use crate::system::WeddingSystem;
use crate::{dataset, report};

#[derive(Debug, Subcommand)]
pub enum WeddingCommand {
    /// Send a wedding's incidents to weir at their times and print the run's report.
    Simulate(SimulateArgs),
    /// Print a random wedding as a dataset file in the exercise's format (`MM:SS` timestamps, a JSON array).
    Dataset(DatasetArgs),
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// Seed of the random wedding: the same seed, the same events (and the same as `simulate --seed`).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Events in the wedding.
    #[arg(long, alias = "rate", default_value_t = 1000)]
    events: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClockKind {
    /// The run's clock follows the wall clock, `--speed` times faster.
    Real,
    /// The run's clock moves only when the simulator says, stopping at every moment where something can happen:
    /// deterministic, whatever the machine's speed.
    Virtual,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// A dataset file: a JSON array of events (the exercise's format). Without it, a random wedding from --seed.
    #[arg(long, value_name = "FILE")]
    dataset: Option<std::path::PathBuf>,
    /// `edf` (earliest feasible deadline first) or `fifo` (the naive oldest first) [default: edf, or the target's].
    #[arg(long)]
    policy: Option<String>,
    /// Workers per team [default: 2, or the target's].
    #[arg(long)]
    workers: Option<usize>,
    /// Routines per team, e.g. `security=concentrated,waiters=intermittent` (standard|intermittent|concentrated).
    #[arg(long, value_name = "TEAM=ROUTINE,...")]
    routines: Option<String>,
    /// Let a handling run past the end of an available phase.
    #[arg(long)]
    allow_overrun: bool,
    /// Seed of the random wedding.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Events in the random wedding.
    #[arg(long, alias = "rate", default_value_t = 1000)]
    events: usize,
    /// `text` for people, or `json`: one object on the last line of stdout.
    #[arg(long, value_enum, default_value = "text")]
    report: ReportFormat,
    /// Send the events to a running weir (its HTTP address) instead of an embedded one.
    #[arg(long, value_name = "URL", conflicts_with = "model")]
    target: Option<String>,
    /// How many times faster than real time the wedding goes; `max` for as fast as the machine can.
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    speed: f64,
    /// The run's clock [default: virtual on the embedded weir, real on --target].
    #[arg(long, value_enum)]
    clock: Option<ClockKind>,
    /// Compute the outcome from the rules in-process, without weir (instant).
    #[arg(long)]
    model: bool,
    /// The embedded weir's database (e.g. postgres://...) [default: SQLite in its temporary data dir].
    #[arg(long, value_name = "URL", conflicts_with = "target")]
    database: Option<String>,
    /// Events per HTTP request when several happen at once.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(f64::INFINITY);
    }
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a positive number or `max`")),
    }
}

/// `weir wedding` as a clap command, its subcommands from [`WeddingCommand`].
pub fn command() -> clap::Command {
    WeddingCommand::augment_subcommands(
        clap::Command::new("wedding")
            .about("Wedding operations (seed 000): run a wedding through weir on the exercise's rules and report its stress level")
            .subcommand_required(true)
            .arg_required_else_help(true),
    )
}

/// Runs `weir wedding ...` from its parsed arguments.
pub async fn run(matches: clap::ArgMatches, host: Arc<dyn CommandHost>) -> Result<()> {
    let cmd = WeddingCommand::from_arg_matches(&matches)?;
    let args = match cmd {
        WeddingCommand::Simulate(args) => args,
        WeddingCommand::Dataset(d) => {
            let events = dataset::generate(d.events, Rules::default().wedding_length, d.seed);
            println!("{}", serde_json::to_string_pretty(&dataset::to_exercise_format(&events))?);
            return Ok(());
        }
    };
    let policy = match &args.policy {
        Some(p) => Some(Policy::parse(p).with_context(|| format!("--policy {p:?}: use edf or fifo"))?),
        None => None,
    };
    if args.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mut rules =
        Rules { workers_per_team: args.workers.unwrap_or(2), allow_overrun: args.allow_overrun, ..Rules::default() };
    if let Some(spec) = &args.routines {
        rules.set_routines(spec).map_err(|e| anyhow::anyhow!("--routines: {e}"))?;
    }
    let events = match &args.dataset {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            dataset::parse(&text, rules.wedding_length, &weir_runtime::time::parse_rfc3339)
                .with_context(|| format!("in {}", path.display()))?
        }
        None => dataset::generate(args.events, rules.wedding_length, args.seed),
    };
    if args.model {
        let policy = policy.unwrap_or(Policy::Edf);
        let outcomes = simulate(&rules, &events, policy);
        return print(&args, &report::report(&rules, &events, &outcomes, policy), None);
    }
    if let Some(target) = args.target.clone() {
        let api = ApiTarget::Http(target.trim_start_matches("http://").trim_end_matches('/').to_string());
        let options = drive_options(&args, policy, args.clock.unwrap_or(ClockKind::Real))?;
        let report = drive(&api, &events, &options).await?;
        return print(&args, &report, Some(&target));
    }
    embedded(&*host, args, policy.unwrap_or(Policy::Edf), events).await
}

/// Starts a weir of its own (the host's scratch platform, with the wedding system on it), drives the wedding through
/// its routes in-process, and stops it.
async fn embedded(host: &dyn CommandHost, args: SimulateArgs, policy: Policy, events: Vec<Event>) -> Result<()> {
    let platform = host.scratch(args.database.as_deref()).await?;
    let store = platform.store.clone().context("the scratch platform has no database")?;
    let kv = platform.kv.clone().context("the scratch platform has no key-value store")?;
    let mut systems = Host::new(platform.bus.clone(), store, kv);
    let routes = systems
        .start(&WeddingSystem, SystemSettings::defaults("wedding"))
        .await
        .context("cannot start the wedding services")?;
    let options = drive_options(&args, Some(policy), args.clock.unwrap_or(ClockKind::Virtual))?;
    let outcome = drive(&ApiTarget::Router(routes), &events, &options).await;
    systems.stop_and_warn(std::time::Duration::from_secs(10)).await;
    platform.close().await;
    print(&args, &outcome?, None)
}

fn print(args: &SimulateArgs, r: &Report, target: Option<&str>) -> Result<()> {
    match args.report {
        ReportFormat::Text => {
            if let Some(t) = target {
                println!("on {t}:");
            }
            print!("{}", r.text())
        }
        ReportFormat::Json => println!("{}", serde_json::to_string(r)?),
    }
    Ok(())
}

/// How the simulator's flags drive a run: its `POST /api/wedding/start` body, speed and batches, with progress on
/// stderr.
fn drive_options(args: &SimulateArgs, policy: Option<Policy>, clock: ClockKind) -> Result<DriveOptions> {
    let virtual_clock = clock == ClockKind::Virtual;
    let mut start = json!({"clock": if virtual_clock { "virtual" } else { "real" }});
    if args.speed.is_finite() {
        start["speed"] = json!(args.speed);
    } else if clock == ClockKind::Real {
        bail!("--speed max needs the virtual clock (--clock virtual)");
    }
    if let Some(p) = policy {
        start["policy"] = json!(p.name());
    }
    if let Some(w) = args.workers {
        start["workers"] = json!(w);
    }
    if let Some(r) = &args.routines {
        start["routines"] = json!(r);
    }
    if args.allow_overrun {
        start["allow_overrun"] = json!(true);
    }
    Ok(DriveOptions { start, speed: args.speed, batch: args.batch, virtual_clock, progress: Some(Progress::stderr()) })
}
