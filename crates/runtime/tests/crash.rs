//! Exactly-once and the outbox under `kill -9`, on SQLite and on PostgreSQL.
//!
//! - A consumer in exactly-once mode is killed many times mid-stream; when it has finished, the sink holds every event
//!   once and the amounts add up to what was produced.
//! - The outbox relay is killed many times mid-batch; when it has finished, every outbox event is on the topic (some
//!   perhaps twice, always with the same id), none missing.
//!
//! The child is this test binary re-executed with `WEIR_RUNTIME_CRASH` set; it owns the data directory (broker and
//! SQLite file) while it runs, so every kill also crashes the broker under it.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use support::Db;
use weir_broker::testing::crash::{kill_and_restart, rerun_test};
use weir_broker::testing::open_broker;
use weir_runtime::handler::EVENT_ID_HEADER;
use weir_runtime::outbox::{self, OutboxEvent, Relay};
use weir_runtime::{
    Bus, EmbeddedBus, HandlerError, Message, OutgoingMessage, Runner, RunnerConfig, SqlHandler, SqlStore, SqlTx,
    SubscribeOptions,
};

const CHILD: &str = "WEIR_RUNTIME_CRASH";
const EVENTS: i64 = 200_000;
const OUTBOX_EVENTS: i64 = 50_000;
const KILLS: usize = 12;

struct Sink;

#[async_trait]
impl SqlHandler for Sink {
    async fn handle(&self, m: &Message, tx: &mut SqlTx) -> Result<(), HandlerError> {
        let v = String::from_utf8_lossy(m.value.as_deref().unwrap_or_default()).into_owned();
        let (id, amount) = v.split_once(',').ok_or_else(|| HandlerError::Permanent(format!("bad event {v}")))?;
        let amount: i64 = amount.parse().map_err(|_| HandlerError::Permanent(format!("bad amount in {v}")))?;
        sqlx::query("INSERT INTO sink (event_id, amount) VALUES ($1, $2)")
            .bind(id)
            .bind(amount)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

async fn count(store: &SqlStore, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(store.pool()).await.unwrap().get::<i64, _>(0)
}

/// The child: consume (or relay) until done, as if nothing had happened before.
async fn child(kind: &str, dir: &str, url: &str) {
    let b = open_broker(std::path::Path::new(dir).join("data"));
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(b.clone()));
    let store = SqlStore::connect(url).await.unwrap();
    match kind {
        "consume" => {
            let mut config = RunnerConfig::new("sink", ["payments"]);
            config.batch_size = 500;
            let done = {
                let store = store.clone();
                async move {
                    while count(
                        &store,
                        "SELECT CAST(COALESCE(SUM(next_offset), 0) AS BIGINT) FROM weir_consumer_offsets",
                    )
                    .await
                        < EVENTS
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            };
            Runner::exactly_once(bus, config, store, Sink).run(done).await.unwrap();
        }
        "relay" => {
            let mut relay = Relay::new(store.clone(), bus);
            relay.batch = 250;
            relay.poll_interval = Duration::from_millis(20);
            // SQLite's mark (the progress the parent watches) written often, so kills land between marks mid-work;
            // what is published after the last mark is published again on restart, which the check below allows.
            relay.mark_every = Duration::from_millis(5);
            let done = {
                let store = store.clone();
                async move {
                    while weir_runtime::outbox::unsent(&store).await.unwrap() > 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            };
            relay.run(done).await.unwrap();
        }
        other => panic!("unknown child {other}"),
    }
    b.shutdown();
}

/// Kills the child `KILLS` times mid-stream, then lets it finish (see `kill_and_restart`). `progress` says how far
/// the work had got (0 to `total`).
fn kill_repeatedly(test: &str, kind: &str, dir: &std::path::Path, url: &str, total: i64, progress: impl Fn() -> i64) {
    let spawn = || rerun_test(test, CHILD, format!("{kind}|{}|{url}", dir.display())).spawn().unwrap();
    kill_and_restart(&format!("the {kind} child"), KILLS, total, spawn, progress);
}

fn child_if_asked() -> bool {
    let Ok(spec) = std::env::var(CHILD) else { return false };
    let mut parts = spec.splitn(3, '|');
    let (kind, dir, url) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(child(kind, dir, url));
    true
}

fn exactly_once_survives_sigkill(test: &str, db: Db) {
    if child_if_asked() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (url, expected_sum) = rt.block_on(async {
        let b = open_broker(dir.path().join("data"));
        b.create_topic("payments", 4, BTreeMap::new()).unwrap();
        let bus = EmbeddedBus::new(b.clone());
        let msgs: Vec<_> = (0..EVENTS)
            .map(|i| OutgoingMessage::new("payments", format!("e{i},{}", i % 97)).key(format!("u{}", i % 13)))
            .collect();
        bus.produce_all(msgs).await.unwrap();
        b.shutdown();
        let url = db.url(dir.path()).await;
        let store = SqlStore::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE sink (event_id TEXT NOT NULL, amount BIGINT NOT NULL)")
            .execute(store.pool())
            .await
            .unwrap();
        (url, (0..EVENTS).map(|i| i % 97).sum::<i64>())
    });
    // One connection for every look, opened once: a new pool per look (hundreds a second) contends with the child
    // for SQLite's locks and its recovery after each kill.
    let watcher = rt.block_on(SqlStore::connect(&url)).unwrap();
    let progress = || rt.block_on(count(&watcher, "SELECT COUNT(*) FROM sink"));
    kill_repeatedly(test, "consume", dir.path(), &url, EVENTS, progress);
    rt.block_on(async {
        let store = SqlStore::connect(&url).await.unwrap();
        let rows = count(&store, "SELECT COUNT(*) FROM sink").await;
        let distinct = count(&store, "SELECT COUNT(DISTINCT event_id) FROM sink").await;
        let sum = count(&store, "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM sink").await;
        assert_eq!((rows, distinct, sum), (EVENTS, EVENTS, expected_sum), "each event exactly once");
    });
}

#[test]
fn exactly_once_survives_sigkill_sqlite() {
    exactly_once_survives_sigkill("exactly_once_survives_sigkill_sqlite", Db::Sqlite);
}

#[test]
fn exactly_once_survives_sigkill_postgres() {
    exactly_once_survives_sigkill("exactly_once_survives_sigkill_postgres", Db::Postgres);
}

fn the_outbox_relay_loses_nothing_under_sigkill(test: &str, db: Db) {
    if child_if_asked() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (url, ids) = rt.block_on(async {
        let b = open_broker(dir.path().join("data"));
        b.create_topic("tickets", 3, BTreeMap::new()).unwrap();
        b.shutdown();
        let url = db.url(dir.path()).await;
        let store = SqlStore::connect(&url).await.unwrap();
        let mut ids = HashSet::new();
        for chunk in 0..OUTBOX_EVENTS / 500 {
            let mut tx = store.begin().await.unwrap();
            for i in 0..500 {
                let event = OutboxEvent {
                    topic: "tickets".into(),
                    key: Some(format!("k{}", i % 7).into()),
                    payload: Some(format!("ticket {chunk}-{i}").into()),
                    ..Default::default()
                };
                ids.insert(outbox::enqueue(&mut tx, store.dialect(), event).await.unwrap());
            }
            tx.commit().await.unwrap();
        }
        (url, ids)
    });
    let watcher = rt.block_on(SqlStore::connect(&url)).unwrap();
    let progress = || OUTBOX_EVENTS - rt.block_on(weir_runtime::outbox::unsent(&watcher)).unwrap();
    kill_repeatedly(test, "relay", dir.path(), &url, OUTBOX_EVENTS, progress);
    rt.block_on(async {
        let b = open_broker(dir.path().join("data"));
        let bus = EmbeddedBus::new(b.clone());
        let total: i64 = (0..3).map(|p| b.offsets("tickets", p).unwrap().1).sum();
        let mut sub = bus.subscribe(SubscribeOptions::new("check", ["tickets"])).await.unwrap();
        let mut seen = Vec::new();
        while (seen.len() as i64) < total {
            let batch = sub.next_batch(Duration::from_secs(5)).await.unwrap();
            assert!(!batch.is_empty(), "stalled after {} of {total}", seen.len());
            seen.extend(batch.iter().map(|m| String::from_utf8_lossy(m.header(EVENT_ID_HEADER).unwrap()).into_owned()));
        }
        let distinct: HashSet<String> = seen.iter().cloned().collect();
        assert!(distinct.is_subset(&ids), "only outbox events, with their ids");
        assert_eq!(
            distinct.len(),
            ids.len(),
            "every outbox event reached the bus ({} records, duplicates allowed)",
            seen.len()
        );
        b.shutdown();
    });
}

#[test]
fn the_outbox_relay_loses_nothing_under_sigkill_sqlite() {
    the_outbox_relay_loses_nothing_under_sigkill("the_outbox_relay_loses_nothing_under_sigkill_sqlite", Db::Sqlite);
}

#[test]
fn the_outbox_relay_loses_nothing_under_sigkill_postgres() {
    the_outbox_relay_loses_nothing_under_sigkill("the_outbox_relay_loses_nothing_under_sigkill_postgres", Db::Postgres);
}
