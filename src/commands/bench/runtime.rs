//! `weir bench handlers` and `weir bench outbox`: the processing runtime's throughput. A scratch broker holds
//! `--count` 100-byte records; a trivial handler consumes them at-least-once (commits to the bus) or exactly-once
//! (one database transaction per partition and fetched batch, holding the offsets); the outbox relay publishes
//! `--count` pre-written outbox rows. The database is SQLite in the scratch directory unless `--database` names
//! another (give PostgreSQL a scratch database: the runtime's tables are created in it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use clap::{Args, ValueEnum};
use weir_broker::{Broker, ProduceRecord};
use weir_runtime::outbox::{self, OutboxEvent, Relay};
use weir_runtime::{EmbeddedBus, Handler, HandlerError, Message, Runner, RunnerConfig, SqlHandler, SqlStore, SqlTx};

use super::AckWindow;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Debug, Args)]
pub struct HandlerArgs {
    #[arg(long, value_enum, default_value = "exactly-once")]
    mode: Delivery,
    #[command(flatten)]
    common: RuntimeCommon,
}

#[derive(Debug, Args)]
pub struct OutboxArgs {
    #[command(flatten)]
    common: RuntimeCommon,
}

#[derive(Debug, Args)]
pub struct RuntimeCommon {
    /// Records (or outbox events) to process.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Records per fetch (the exactly-once transaction size is this, split by partition).
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// The SQL store: sqlite://... or postgres://... (default: SQLite in the scratch directory).
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Print the result as a JSON line.
    #[arg(long)]
    json: bool,
}

struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn setup(c: &RuntimeCommon) -> Result<(Scratch, Arc<Broker>, SqlStore)> {
    let dir = std::env::temp_dir().join(format!("weir-bench-runtime-{}-{}", std::process::id(), weir_log::now_ms()));
    std::fs::create_dir_all(&dir)?;
    let scratch = Scratch(dir.clone());
    let broker = crate::commands::scratch_broker(&dir)?;
    broker.create_topic("bench", c.partitions, BTreeMap::new())?;
    let url = c.database.clone().unwrap_or_else(|| SqlStore::sqlite_url(&dir));
    let store = SqlStore::connect(&url).await.with_context(|| format!("cannot open the store {url}"))?;
    Ok((scratch, broker, store))
}

fn report(c: &RuntimeCommon, scenario: &str, store: &SqlStore, secs: f64) {
    let rate = c.count as f64 / secs;
    if c.json {
        println!(
            "{}",
            serde_json::json!({"peer": "weir", "scenario": scenario, "store": store.dialect().name(), "count": c.count,
                "partitions": c.partitions, "batch": c.batch, "records_per_s": rate, "seconds": secs})
        );
    } else {
        println!(
            "{scenario:<24} {} records, {} partitions, batch {}, {}: {rate:.0} records/s ({secs:.2} s)",
            c.count,
            c.partitions,
            c.batch,
            store.dialect().name()
        );
    }
}

struct Counting(Arc<AtomicU64>);

#[async_trait]
impl Handler for Counting {
    async fn handle(&self, _: &Message) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl SqlHandler for Counting {
    async fn handle(&self, _: &Message, _: &mut SqlTx) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

pub async fn handlers(args: HandlerArgs) -> Result<()> {
    let c = &args.common;
    let (_scratch, broker, store) = setup(c).await?;
    let producer = broker.producer();
    let mut acks = AckWindow::new(65_536);
    for _ in 0..c.count {
        acks.push(producer.send(ProduceRecord::new("bench", vec![b'x'; 100]))).await;
    }
    let totals = acks.finish().await;
    if totals.failed > 0 {
        bail!("{} records could not be produced", totals.failed);
    }
    let bus = Arc::new(EmbeddedBus::new(broker.clone()));
    let handled = Arc::new(AtomicU64::new(0));
    let mut config = RunnerConfig::new(format!("bench-{:08x}", rand::random::<u32>()), ["bench"]);
    config.batch_size = c.batch;
    let count = c.count;
    let done = {
        let handled = handled.clone();
        async move {
            while handled.load(Ordering::Relaxed) < count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let started = Instant::now();
    let (scenario, stats) = match args.mode {
        Delivery::AtLeastOnce => {
            ("handler-at-least-once", Runner::at_least_once(bus, config, Counting(handled.clone())).run(done).await?)
        }
        Delivery::ExactlyOnce => (
            "handler-exactly-once",
            Runner::exactly_once(bus, config, store.clone(), Counting(handled.clone())).run(done).await?,
        ),
    };
    let secs = started.elapsed().as_secs_f64();
    if stats.processed < c.count {
        bail!("processed {} of {} records", stats.processed, c.count);
    }
    report(c, scenario, &store, secs);
    broker.shutdown();
    Ok(())
}

pub async fn outbox(args: OutboxArgs) -> Result<()> {
    let c = &args.common;
    let (_scratch, broker, store) = setup(c).await?;
    for chunk in (0..c.count).step_by(1000) {
        let mut tx = store.begin().await?;
        for i in chunk..(chunk + 1000).min(c.count) {
            let event = OutboxEvent {
                topic: "bench".into(),
                key: Some(format!("k{}", i % 64).into()),
                payload: Some(vec![b'x'; 100].into()),
                ..Default::default()
            };
            outbox::enqueue(&mut tx, store.dialect(), event).await?;
        }
        tx.commit().await?;
    }
    let mut relay = Relay::new(store.clone(), Arc::new(EmbeddedBus::new(broker.clone())));
    relay.batch = c.batch as i64;
    let started = Instant::now();
    let mut total = 0u64;
    while total < c.count {
        let n = relay.relay_once().await?;
        if n == 0 {
            bail!("the outbox ran dry after {total} of {} events", c.count);
        }
        total += n as u64;
    }
    report(c, "outbox-relay", &store, started.elapsed().as_secs_f64());
    broker.shutdown();
    Ok(())
}
