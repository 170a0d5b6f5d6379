//! `processor_consumer_lag{partition}`: how many events of the topic lie past the aggregator's flushed offset, per
//! partition, sampled on an interval by a task of its own (as the origin's processor did every
//! `LAG_UPDATE_INTERVAL_SECONDS`). Its own task, not the aggregator's loop: when the aggregator is stopped or stuck
//! the lag keeps rising, and the HighConsumerLag alert fires; the origin's processor, sampling inside its loop,
//! reported nothing once stopped.
//!
//! The flushed offset is the one in the database (the runtime's `weir_consumer_offsets`, moved by each flush in the
//! transaction that writes the windows): events read into memory but not yet flushed still count as lag.

use std::time::Duration;

use tokio::sync::watch;
use weir_runtime::{Bus, SqlStore};

use crate::pipeline_metrics::CONSUMER_LAG;

/// The lag of `group` on each partition of `topic`: its end offset minus the group's flushed offset (the whole
/// partition before the first flush).
pub async fn sample(bus: &dyn Bus, store: &SqlStore, group: &str, topic: &str) -> anyhow::Result<Vec<(i32, i64)>> {
    let ends = bus.end_offsets(topic).await?;
    let flushed = store.consumer_offsets(group).await?;
    Ok(ends
        .iter()
        .enumerate()
        .map(|(p, end)| {
            let p = p as i32;
            let at = flushed.iter().find(|(t, q, _)| t == topic && *q == p).map_or(0, |(_, _, o)| *o);
            (p, (end - at).max(0))
        })
        .collect())
}

/// Sets `processor_consumer_lag` every `every` until `stop`; a failed sample is logged (once per run of failures)
/// and the gauges keep their last values.
pub async fn run(
    bus: std::sync::Arc<dyn Bus>,
    store: SqlStore,
    group: String,
    topic: String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        match sample(&*bus, &store, &group, &topic).await {
            Ok(lags) => {
                failing = false;
                for (partition, lag) in lags {
                    metrics::gauge!(CONSUMER_LAG, "partition" => partition.to_string()).set(lag as f64);
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, topic = %topic, "cannot sample the aggregator's lag; trying again");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
