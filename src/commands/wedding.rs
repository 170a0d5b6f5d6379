//! `weir wedding simulate`: a wedding (a dataset file, or a seeded random one) run by the teams on the exercise's
//! rules under a scheduling policy, on a virtual clock, with the report: stress, happiness, and how close the policy
//! came to the upper bound. Deterministic: the same input, the same report.
//!
//! Without `--target` the rules run in-process, exactly and instantly. With `--target http://HOST:PORT` the events
//! go over HTTP to a running weir (`weir up`) at their times, on a clock `--speed` times real time, through its
//! topics and team consumer groups, and the report is that run's.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use weir_wedding::rules::{Routine, Rules, Team};
use weir_wedding::schedule::{simulate, Policy};
use weir_wedding::{dataset, report};

#[derive(Debug, Subcommand)]
pub enum WeddingCommand {
    /// Run a wedding on the virtual clock and print its report.
    Simulate(SimulateArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// A dataset file: a JSON array of events (the exercise's format). Without it, a random wedding from --seed.
    #[arg(long, value_name = "FILE")]
    dataset: Option<std::path::PathBuf>,
    /// `edf` (earliest feasible deadline first) or `fifo` (the naive oldest first).
    #[arg(long, default_value = "edf")]
    policy: String,
    /// Workers per team.
    #[arg(long, default_value_t = 2)]
    workers: usize,
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
    #[arg(long, default_value_t = 1000)]
    events: usize,
    #[arg(long, value_enum, default_value = "text")]
    report: ReportFormat,
    /// Send the events to a running weir (its HTTP address) instead of simulating in-process.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// With --target: how many times faster than real time the run's clock goes.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
}

pub fn run(cmd: WeddingCommand) -> Result<()> {
    let WeddingCommand::Simulate(args) = cmd;
    let Some(policy) = Policy::parse(&args.policy) else { bail!("--policy {:?}: use edf or fifo", args.policy) };
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let mut rules = Rules { workers_per_team: args.workers, allow_overrun: args.allow_overrun, ..Rules::default() };
    if let Some(spec) = &args.routines {
        for pair in spec.split(',') {
            let (team, routine) =
                pair.split_once('=').with_context(|| format!("--routines takes TEAM=ROUTINE, got {pair:?}"))?;
            let i = Team::ALL.iter().position(|t| t.name() == team.trim().replace('-', "_"));
            let Some(i) = i else { bail!("unknown team {team:?} in --routines") };
            let Some(r) = Routine::parse(routine) else {
                bail!("unknown routine {routine:?}: standard, intermittent or concentrated")
            };
            rules.routines[i] = r;
        }
    }
    let events = match &args.dataset {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            dataset::parse(&text, rules.wedding_length, &weir_runtime::time::parse_rfc3339)
                .with_context(|| format!("in {}", path.display()))?
        }
        None => dataset::generate(args.events, rules.wedding_length, args.seed),
    };
    if let Some(target) = &args.target {
        return remote(target, &events, &args);
    }
    let outcomes = simulate(&rules, &events, policy);
    let r = report::report(&rules, &events, &outcomes, policy);
    match args.report {
        ReportFormat::Text => print!("{}", r.text()),
        ReportFormat::Json => println!("{}", serde_json::to_string(&r)?),
    }
    Ok(())
}

/// A minimal HTTP/1.1 exchange (one request per connection): enough for weir's own API, without a client library.
fn http(addr: &str, method: &str, path: &str, body: &serde_json::Value) -> Result<(u16, serde_json::Value)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).with_context(|| format!("cannot reach {addr}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let payload = if body.is_null() { String::new() } else { body.to_string() };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null)))
}

fn remote(target: &str, events: &[weir_wedding::schedule::Event], args: &SimulateArgs) -> Result<()> {
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        bail!("--speed must be a positive number");
    }
    let addr = target.trim_start_matches("http://").trim_end_matches('/').to_string();
    let (status, run) = http(&addr, "POST", "/api/wedding/start", &serde_json::json!({"speed": args.speed}))?;
    if status != 200 {
        bail!("{target} refused to start a run ({status}): {run}");
    }
    let run_id = run["run"].as_i64().unwrap_or_default();
    let started = std::time::Instant::now();
    let mut order: Vec<&weir_wedding::schedule::Event> = events.iter().collect();
    order.sort_by_key(|e| e.happened);
    let wall = |ms: i64| std::time::Duration::from_secs_f64(ms as f64 / 1000.0 / args.speed);
    let mut last_progress = std::time::Instant::now();
    for (sent, e) in order.iter().enumerate() {
        if let Some(wait) = wall(e.happened).checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let body = serde_json::json!({"id": e.id, "event_type": e.event_type, "priority": e.priority.name(),
            "description": e.description, "timestamp": e.happened / 1000});
        let (status, answer) = http(&addr, "POST", "/api/wedding/events", &body)?;
        if status != 200 {
            bail!("{target} refused event {} ({status}): {answer}", e.id);
        }
        if last_progress.elapsed() >= std::time::Duration::from_secs(1) {
            progress(&addr, run_id, started, args.speed, sent + 1)?;
            last_progress = std::time::Instant::now();
        }
    }
    // Until every event is handled or past its deadline.
    let last_deadline = order.iter().map(|e| e.deadline()).max().unwrap_or(0);
    let give_up = wall(last_deadline) + std::time::Duration::from_secs(30);
    let report = loop {
        let (_, r) = http(&addr, "GET", &format!("/api/wedding/report?run={run_id}"), &serde_json::Value::Null)?;
        if r["open"] == 0 && r["events"].as_u64() == Some(order.len() as u64) {
            break r;
        }
        if started.elapsed() > give_up {
            bail!("the run did not settle: {r}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    eprintln!();
    match args.report {
        ReportFormat::Json => println!("{report}"),
        ReportFormat::Text => println!(
            "run {run_id} on {target}, policy {}: {} events, {} happy, stress level {} (upper bound on happy: {})",
            report["policy"].as_str().unwrap_or("?"),
            report["events"],
            report["happy"],
            report["stress"],
            report["upper_bound"]
        ),
    }
    Ok(())
}

fn progress(addr: &str, run: i64, started: std::time::Instant, speed: f64, sent: usize) -> Result<()> {
    let (_, r) = http(addr, "GET", &format!("/api/wedding/report?run={run}"), &serde_json::Value::Null)?;
    let clock = (started.elapsed().as_secs_f64() * speed) as u64;
    eprint!(
        "\r{:02}:{:02}  sent {sent}  handled {}  missed {}   ",
        clock / 60,
        clock % 60,
        r["happy"].as_i64().unwrap_or(0),
        r["stress"].as_i64().unwrap_or(0)
    );
    Ok(())
}
