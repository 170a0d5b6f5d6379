//! `weir bench analytics`: a simulated day of the analytics pipeline at the seed's rate (5 M events), produced as
//! fast as possible while the aggregator consumes it, until the last window is flushed; the wall time end to end and
//! the events per second, checked against exact totals in `hourly_aggregations`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use sqlx::Row;
use weir_analytics::event::TOPIC;
use weir_analytics::{Aggregator, AggregatorConfig};
use weir_runtime::{Bus, EmbeddedBus, SqlStore};

#[derive(Debug, Args)]
pub struct AnalyticsArgs {
    /// Events in the simulated day.
    #[arg(long, default_value_t = 5_000_000)]
    events: u64,
    /// Partitions of `events`.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// The SQL store (default: SQLite in the scratch directory).
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Print the result as a JSON line.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: AnalyticsArgs) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("weir-bench-analytics-{}-{}", std::process::id(), weir_log::now_ms()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(args: &AnalyticsArgs, dir: &std::path::Path) -> Result<()> {
    let broker = crate::commands::scratch_broker(dir)?;
    broker.create_topic(TOPIC, args.partitions, BTreeMap::new())?;
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    let url = args.database.clone().unwrap_or_else(|| SqlStore::sqlite_url(dir));
    let store = SqlStore::connect(&url).await.with_context(|| format!("cannot open {url}"))?;
    let config = AggregatorConfig { flush_interval: Duration::from_secs(2), ..Default::default() };
    let (aggregator, control) = Aggregator::new(bus.clone(), store.clone(), config).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(aggregator.run(stopped));
    let (sent, produce_secs) =
        weir_analytics::producer::produce_simulated(&*bus, TOPIC, args.events, 24.0, None, 10_000, args.json).await?;
    // Consumed and flushed: every event is in memory or stored, then one last flush.
    loop {
        let s = control.snapshot();
        if s.events_consumed + s.events_in_memory + s.late_events + s.invalid_events >= sent {
            break;
        }
        if task.is_finished() {
            bail!("the aggregator stopped early");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    control.flush().await.map_err(anyhow::Error::msg)?;
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    task.await.context("aggregator task")??;
    let stored: i64 = sqlx::query("SELECT CAST(COALESCE(SUM(event_count), 0) AS BIGINT) FROM hourly_aggregations")
        .fetch_one(store.pool())
        .await?
        .get(0);
    if stored != sent as i64 {
        let s = control.snapshot();
        bail!(
            "hourly_aggregations holds {stored} events, {sent} were produced ({} late, {} invalid, watermark {:?})",
            s.late_events,
            s.invalid_events,
            s.watermark_ms.map(weir_analytics::time::format_rfc3339)
        );
    }
    let rate = sent as f64 / secs;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"peer": "weir", "scenario": "analytics-day", "store": store.dialect().name(), "events": sent,
                "seconds": secs, "produce_seconds": produce_secs, "events_per_s": rate, "exact": true})
        );
    } else {
        println!(
            "a simulated day: {sent} events produced and aggregated into hourly windows ({}) in {secs:.2} s end to end ({rate:.0} events/s; producing alone {produce_secs:.2} s); totals exact",
            store.dialect().name()
        );
    }
    broker.shutdown();
    Ok(())
}
