//! What the analytics pipeline's test files share: a store on SQLite or PostgreSQL, an aggregator running in the
//! test, waiting for it to consume, and the stored counts.
// Each test file uses its own subset of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Row;
use weir_analytics::{Aggregator, AggregatorConfig, Control};
use weir_runtime::{Bus, SqlStore};

pub const BASE: i64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z

pub async fn store_url(postgres: bool, dir: &std::path::Path) -> String {
    if !postgres {
        return SqlStore::sqlite_url(dir);
    }
    weir_runtime::testing::fresh_postgres().await
}

pub async fn stored(store: &SqlStore) -> BTreeMap<(i64, String), i64> {
    let rows = sqlx::query("SELECT window_start, event_type, event_count FROM hourly_aggregations")
        .fetch_all(store.pool())
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let ws = weir_analytics::time::parse_rfc3339(&r.get::<String, _>(0)).unwrap();
            ((ws, r.get::<String, _>(1)), r.get::<i64, _>(2))
        })
        .collect()
}

pub async fn start(
    bus: Arc<dyn Bus>,
    store: SqlStore,
    config: AggregatorConfig,
) -> (Control, tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (aggregator, control) = Aggregator::new(bus, store, config).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { aggregator.run(stopped).await.unwrap() });
    (control, stop, task)
}

pub async fn until_consumed(control: &Control, n: u64) {
    let started = Instant::now();
    loop {
        let s = control.snapshot();
        if s.events_consumed + s.events_in_memory + s.late_events >= n {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "consumed only {:?}", s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
