//! The open-loop driver of the `latency` scenario, shared by every peer (and built like `weir bench latency`).
//!
//! Record `i` has a fixed intended send time, `start + i / rate`, whatever happened to earlier records; an OS thread
//! paces the sends (tokio's timer has millisecond granularity, far coarser than the 100 us between records at
//! 10k/s, and would send in bursts), and each ack's latency is taken from the intended send time, so a stall of the
//! peer shows up in the percentiles instead of silently slowing the sender (no coordinated omission).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;

/// Sends `rate * seconds` requests made by `send`, each on its own tokio task, and returns the histogram of ack
/// latencies in microseconds together with the time from the first intended send to the last ack.
pub async fn run<F, Fut>(rate: u64, seconds: u64, send: F) -> Result<(Histogram<u64>, Duration)>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let total = rate.checked_mul(seconds).context("--rate x --seconds overflows")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<tokio::task::JoinHandle<Result<u64>>>();
    let handle = tokio::runtime::Handle::current();
    let start = Instant::now() + Duration::from_millis(10);
    let pacer = std::thread::spawn(move || {
        for i in 0..total {
            let offset_ns = u128::from(i) * 1_000_000_000 / u128::from(rate);
            let intended = start + Duration::from_nanos(offset_ns as u64);
            loop {
                let now = Instant::now();
                if now >= intended {
                    break;
                }
                let left = intended - now;
                if left > Duration::from_micros(60) {
                    std::thread::sleep(left - Duration::from_micros(50));
                } else {
                    std::hint::spin_loop();
                }
            }
            let fut = send();
            let task = handle.spawn(async move {
                fut.await?;
                Ok(Instant::now().saturating_duration_since(intended).as_micros() as u64)
            });
            if tx.send(task).is_err() {
                break; // the collector gave up after an error
            }
        }
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while let Some(task) = rx.recv().await {
        let micros = task.await.context("a send task panicked")??;
        hist.saturating_record(micros.max(1));
    }
    let elapsed = start.elapsed();
    pacer.join().map_err(|_| anyhow!("the pacer thread panicked"))?;
    Ok((hist, elapsed))
}
