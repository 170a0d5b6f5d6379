//! The pipeline's producers (seed 002): the default one `weir up` runs (a few events at irregular intervals), and a
//! simulated day at a steady rate, as fast as possible or on a clock running `speed` times real time, which `weir
//! analytics produce --simulate` and `weir bench analytics` use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use weir_runtime::time::now_ms;
use weir_runtime::{Bus, OutgoingMessage};

use crate::event::Generator;
use crate::pipeline_metrics as m;

/// Events per `produce_all`: large enough to share batches, small enough to show progress.
pub const CHUNK: usize = 5_000;

/// Produces one event per time in `times` to `topic`; returns how many.
pub async fn send(
    bus: &dyn Bus,
    topic: &str,
    generator: &mut Generator<rand::rngs::StdRng>,
    times: impl Iterator<Item = i64>,
) -> Result<u64> {
    let msgs = messages(generator, topic, times);
    let counts: Vec<_> = generator.take_counts().collect();
    publish(bus, msgs, &counts).await
}

/// Publishes a chunk of events and records the producers' metrics: the seed document's `events_produced_total` and
/// the origin's `producer_events_total{event_type}` (from `counts`, the generator's), the call's latency and, when it
/// fails, its events as `producer_publish_errors_total`.
pub async fn publish(bus: &dyn Bus, msgs: Vec<OutgoingMessage>, counts: &[(&'static str, u64)]) -> Result<u64> {
    let n = msgs.len() as u64;
    let started = Instant::now();
    if let Err(e) = bus.produce_all(msgs).await {
        metrics::counter!(m::PUBLISH_ERRORS).increment(n);
        return Err(e.into());
    }
    metrics::histogram!(m::PUBLISH_LATENCY).record(started.elapsed().as_secs_f64());
    metrics::counter!("events_produced_total").increment(n);
    for (event_type, k) in counts {
        metrics::counter!(m::EVENTS_PRODUCED, "event_type" => *event_type).increment(*k);
    }
    Ok(n)
}

/// One event per time in `times`, keyed by its user, for `topic`.
pub fn messages(
    generator: &mut Generator<rand::rngs::StdRng>,
    topic: &str,
    times: impl Iterator<Item = i64>,
) -> Vec<OutgoingMessage> {
    // The chunk's events go into one buffer and each message's value and key are slices of it: no allocation per
    // event for either. A chunk's events mostly share their time: its text is made once per distinct time.
    let mut stamp = (i64::MIN, String::new());
    let (low, _) = times.size_hint();
    // About 330 bytes an event (the origin's format, with its session and event ids): no reallocation on the way.
    let mut buffer = Vec::with_capacity(low * 384);
    let mut spans = Vec::with_capacity(low);
    for ts in times {
        if stamp.0 != ts {
            stamp = (ts, crate::time::format_rfc3339(ts));
        }
        let start = buffer.len();
        let key = generator.write_event_at(&stamp.1, &mut buffer);
        spans.push((start..buffer.len(), key));
    }
    let buffer = bytes::Bytes::from(buffer);
    spans
        .into_iter()
        .map(|(value, key)| OutgoingMessage::new(topic, buffer.slice(value)).key(buffer.slice(key)))
        .collect()
}

/// A generator of events from `users` users, seeded from entropy.
pub fn generator(users: u32) -> Generator<rand::rngs::StdRng> {
    Generator::new(rand::SeedableRng::from_entropy(), users)
}

/// One to five events every 50 ms to 1 s, stamped now, to `topic`, forever.
pub async fn default_producer(bus: Arc<dyn Bus>, topic: &str, users: u32) -> Result<()> {
    let mut g = generator(users);
    loop {
        let (wait, n) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(50..1000), rng.gen_range(1..=5))
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let now = now_ms();
        send(&*bus, topic, &mut g, (0..n).map(|_| now)).await?;
    }
}

/// A progress bar of `n` events (hidden when `quiet`).
pub fn bar(n: u64, quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(n) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}").expect("valid template"),
    );
    bar
}

/// Produces `hours` of a simulated day of `target_count` events, on a clock `speed` times real time (`None`: as fast
/// as possible), event times following that clock from now. Returns the events sent and the seconds it took.
pub async fn produce_simulated(
    bus: &dyn Bus,
    topic: &str,
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
        sent += send(bus, topic, &mut g, times).await?;
        b.set_position(sent);
    }
    b.finish_and_clear();
    Ok((sent, started.elapsed().as_secs_f64()))
}
