//! `weir analytics produce`: the pipeline's producers (seed 002), to `--topic` (`events`; the origin's
//! `user-activity-events`, or `KAFKA_TOPIC`), into the data directory or, with `--server`, into
//! a running weir or Kafka cluster (the command host's data bus). `--default` sends a few events at irregular intervals until stopped (what
//! `weir up` runs), `--bulk N` sends N as fast as possible, `--simulate` sends at a steady rate (5 M a day by default)
//! on a clock that `--speed` can run faster, with event times following that clock.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, FromArgMatches, Subcommand};
use weir_runtime::time::now_ms;
use weir_runtime::{Bus, CommandHost};

use crate::event::TOPIC;
use crate::producer::{bar, default_producer, generator, messages, produce_simulated, publish, CHUNK};

#[derive(Debug, Subcommand)]
pub enum AnalyticsCommand {
    /// Produce events to the pipeline's topic (`events`, or `--topic`).
    Produce(ProduceArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["default", "bulk", "simulate"])))]
pub struct ProduceArgs {
    /// A few events at irregular intervals, until Ctrl-C (what `weir up` runs).
    #[arg(long)]
    default: bool,
    /// N events as fast as possible (without N: EVENT_COUNT, else 100,000), with a progress bar and a summary.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0")]
    bulk: Option<u64>,
    /// Events at a steady rate on a simulated clock starting now.
    #[arg(long)]
    simulate: bool,
    /// How long the simulation runs, in simulated hours.
    #[arg(long, env = "SIMULATION_DURATION_HOURS", default_value_t = 1.0, value_name = "H")]
    hours: f64,
    /// Events per simulated day (the rate): 5,000,000 is about 58 a second.
    #[arg(long, env = "TARGET_EVENT_COUNT", default_value_t = 5_000_000, value_name = "N")]
    target_count: u64,
    /// How fast the simulated clock runs: 1 is real time, 3600 an hour a second, `max` as fast as possible.
    #[arg(long, default_value = "1", value_name = "X|max")]
    speed: String,
    /// Distinct users the events come from (`user_1` ... `user_N`; the origin's USER_POOL_SIZE).
    #[arg(long, env = "USER_POOL_SIZE", default_value_t = 10_000)]
    users: u32,
    /// The topic to produce to: the pipeline's `topic` setting, `user-activity-events` for the origin's.
    #[arg(long, env = "KAFKA_TOPIC", default_value = TOPIC)]
    topic: String,
    /// Partitions of the topic if it does not exist yet (the origin's has 3).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1000))]
    partitions: i32,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

/// `weir analytics` as a clap command, its subcommands from [`AnalyticsCommand`].
pub fn command() -> clap::Command {
    AnalyticsCommand::augment_subcommands(
        clap::Command::new("analytics")
            .about(
                "The analytics pipeline (seed 002): produce events to `events` or the origin's `user-activity-events`",
            )
            .subcommand_required(true)
            .arg_required_else_help(true),
    )
}

/// Runs `weir analytics ...` from its parsed arguments.
pub async fn run(matches: clap::ArgMatches, host: Arc<dyn CommandHost>) -> Result<()> {
    let AnalyticsCommand::Produce(args) = AnalyticsCommand::from_arg_matches(&matches)?;
    let platform = host.data_bus().await?;
    let bus = platform.bus.clone();
    bus.ensure_topic(&args.topic, args.partitions).await?;
    let result = if args.default {
        tokio::select! {
            r = default_producer(bus.clone(), &args.topic, args.users) => r,
            _ = host.shutdown_signal() => Ok(()),
        }
    } else if let Some(n) = args.bulk {
        let n =
            if n > 0 { n } else { std::env::var("EVENT_COUNT").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000) };
        bulk(&*bus, n, &args).await
    } else {
        simulate(&*bus, &args).await
    };
    platform.close().await;
    result
}

/// Chunks `--bulk` has in flight at once: on a Kafka cluster each chunk's acknowledgements take a round trip and the
/// producer's linger, which one chunk at a time would wait out with nothing to send.
const CHUNKS_IN_FLIGHT: usize = 4;

async fn bulk(bus: &dyn Bus, n: u64, args: &ProduceArgs) -> Result<()> {
    use futures_util::StreamExt;
    let mut g = generator(args.users);
    let b = bar(n, args.quiet);
    let started = Instant::now();
    let chunk = CHUNK as u64;
    let sizes = (0..n.div_ceil(chunk)).map(|i| (n - i * chunk).min(chunk));
    // A chunk's records are handed to the bus when its future is first polled, in one go unless the producer's queue
    // is full; the totals do not depend on the order of chunks anyway (windows are by event time).
    let mut acknowledged = futures_util::stream::iter(sizes)
        .map(|size| {
            let now = now_ms();
            let msgs = messages(&mut g, &args.topic, (0..size).map(|_| now));
            let counts: Vec<_> = g.take_counts().collect();
            async move { publish(bus, msgs, &counts).await.map(|_| size) }
        })
        .buffered(CHUNKS_IN_FLIGHT);
    let mut sent = 0u64;
    while let Some(size) = acknowledged.next().await {
        sent += size?;
        b.set_position(sent);
    }
    b.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!("produced {sent} events to {} in {secs:.2} s: {:.0} events/s", args.topic, sent as f64 / secs.max(1e-9));
    Ok(())
}

async fn simulate(bus: &dyn Bus, args: &ProduceArgs) -> Result<()> {
    let speed = match args.speed.as_str() {
        "max" => None,
        s => match s.parse::<f64>() {
            Ok(x) if x > 0.0 => Some(x),
            _ => bail!("--speed must be a positive number or `max`, got {s:?}"),
        },
    };
    let (sent, secs) =
        produce_simulated(bus, &args.topic, args.target_count, args.hours, speed, args.users, args.quiet).await?;
    eprintln!(
        "simulated {:.1} h ({} events at {} a day) in {secs:.2} s: {:.0} events/s",
        args.hours,
        sent,
        args.target_count,
        sent as f64 / secs.max(1e-9)
    );
    Ok(())
}
