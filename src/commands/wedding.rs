//! `weir wedding simulate`: a wedding (a dataset file, or a seeded random one) run by the teams on the exercise's
//! rules under a scheduling policy, on a virtual clock, with the report: stress, happiness, and how close the policy
//! came to the upper bound. Deterministic: the same input, the same report.
//!
//! This runs the rules engine in-process; sending the events over HTTP through topics to team consumer groups
//! (`--target`, `weir up`) is still to come.

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
    let outcomes = simulate(&rules, &events, policy);
    let r = report::report(&rules, &events, &outcomes, policy);
    match args.report {
        ReportFormat::Text => print!("{}", r.text()),
        ReportFormat::Json => println!("{}", serde_json::to_string(&r)?),
    }
    Ok(())
}
