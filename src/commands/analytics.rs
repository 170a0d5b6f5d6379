//! `weir analytics produce`: the pipeline's producers (seed 002), into the data directory or, with `--server`, into
//! a running weir or Kafka cluster. `--default` sends a few events at irregular intervals until stopped (what
//! `weir up` runs), `--bulk N` sends N as fast as possible, `--simulate` sends at a steady rate (5 M a day by default)
//! on a clock that `--speed` can run faster, with event times following that clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use weir_analytics::event::{Generator, TOPIC};
use weir_runtime::time::now_ms;
use weir_runtime::{Bus, EmbeddedBus, KafkaBus, OutgoingMessage};

use super::{open_broker, shutdown_signal};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum AnalyticsCommand {
    /// Produce events to the `events` topic.
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
    /// Distinct users the events come from.
    #[arg(long, default_value_t = 10_000)]
    users: u32,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Events per `produce_all`: large enough to share batches, small enough to show progress.
const CHUNK: usize = 5_000;

pub async fn run(settings: Settings, cmd: AnalyticsCommand) -> Result<()> {
    let AnalyticsCommand::Produce(args) = cmd;
    let (bus, broker): (Arc<dyn Bus>, _) = match &settings.server {
        Some(server) => (Arc::new(KafkaBus::connect(server).map_err(|e| anyhow::anyhow!("--server: {e}"))?), None),
        None => {
            let broker = open_broker(&settings)?;
            (Arc::new(EmbeddedBus::new(broker.clone())), Some(broker))
        }
    };
    bus.ensure_topic(TOPIC, 4).await?;
    let result = if args.default {
        tokio::select! {
            r = default_producer(bus.clone(), args.users) => r,
            _ = shutdown_signal() => Ok(()),
        }
    } else if let Some(n) = args.bulk {
        let n =
            if n > 0 { n } else { std::env::var("EVENT_COUNT").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000) };
        bulk(&*bus, n, &args).await
    } else {
        simulate(&*bus, &args).await
    };
    if let Some(b) = broker {
        b.shutdown();
    }
    result
}

async fn send(
    bus: &dyn Bus,
    generator: &mut Generator<rand::rngs::StdRng>,
    times: impl Iterator<Item = i64>,
) -> Result<u64> {
    let msgs: Vec<OutgoingMessage> = times
        .map(|ts| {
            let (key, event) = generator.event_at(ts);
            OutgoingMessage::new(TOPIC, serde_json::to_vec(&event).unwrap_or_default()).key(key)
        })
        .collect();
    let n = msgs.len() as u64;
    bus.produce_all(msgs).await?;
    metrics::counter!("events_produced_total").increment(n);
    Ok(n)
}

fn generator(users: u32) -> Generator<rand::rngs::StdRng> {
    Generator::new(rand::SeedableRng::from_entropy(), users)
}

/// One to five events every 50 ms to 1 s, stamped now, forever.
pub async fn default_producer(bus: Arc<dyn Bus>, users: u32) -> Result<()> {
    let mut g = generator(users);
    loop {
        let (wait, n) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(50..1000), rng.gen_range(1..=5))
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let now = now_ms();
        send(&*bus, &mut g, (0..n).map(|_| now)).await?;
    }
}

fn bar(n: u64, quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(n) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}").expect("valid template"),
    );
    bar
}

async fn bulk(bus: &dyn Bus, n: u64, args: &ProduceArgs) -> Result<()> {
    let mut g = generator(args.users);
    let b = bar(n, args.quiet);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let chunk = (n - sent).min(CHUNK as u64);
        let now = now_ms();
        sent += send(bus, &mut g, (0..chunk).map(|_| now)).await?;
        b.set_position(sent);
    }
    b.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!("produced {sent} events to {TOPIC} in {secs:.2} s: {:.0} events/s", sent as f64 / secs.max(1e-9));
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
    let (sent, secs) = produce_simulated(bus, args.target_count, args.hours, speed, args.users, args.quiet).await?;
    eprintln!(
        "simulated {:.1} h ({} events at {} a day) in {secs:.2} s: {:.0} events/s",
        args.hours,
        sent,
        args.target_count,
        sent as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Produces `hours` of a simulated day of `target_count` events, on a clock `speed` times real time (`None`: as fast
/// as possible), event times following that clock from now. Returns the events sent and the seconds it took.
pub async fn produce_simulated(
    bus: &dyn Bus,
    target_count: u64,
    hours: f64,
    speed: Option<f64>,
    users: u32,
    quiet: bool,
) -> Result<(u64, f64)> {
    if target_count == 0 || hours.is_nan() || hours <= 0.0 {
        bail!("--target-count and --hours must be positive");
    }
    let total = (target_count as f64 * hours / 24.0).round() as u64;
    let interval_ms = 86_400_000.0 / target_count as f64;
    let start_ms = now_ms();
    let mut g = generator(users);
    let b = bar(total, quiet);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        // Everything due by now on the simulated clock (all of it at once at full speed), a chunk at a time.
        let due = match speed {
            None => total,
            Some(x) => ((started.elapsed().as_secs_f64() * 1000.0 * x / interval_ms) as u64 + 1).min(total),
        };
        if due <= sent {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let upto = due.min(sent + CHUNK as u64);
        let times = (sent..upto).map(|i| start_ms + (i as f64 * interval_ms) as i64);
        sent += send(bus, &mut g, times).await?;
        b.set_position(sent);
    }
    b.finish_and_clear();
    Ok((sent, started.elapsed().as_secs_f64()))
}
