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
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng;
use sqlx::Row;
use support::{broker, Db};
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
    let b = broker(&std::path::Path::new(dir).join("data"));
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
            let done = {
                let store = store.clone();
                async move {
                    while count(&store, "SELECT COUNT(*) FROM weir_outbox WHERE sent_at IS NULL").await > 0 {
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

/// Runs the child `KILLS` times, killing it at a random moment soon after its progress first moves (so the kill lands
/// mid-stream however fast the machine is), then once more to the end. `progress` says how far the work had got
/// (0 to `total`); the test insists that most kills landed mid-stream.
fn kill_repeatedly(test: &str, kind: &str, dir: &std::path::Path, url: &str, total: i64, progress: impl Fn() -> i64) {
    let exe = std::env::current_exe().unwrap();
    let spawn = || {
        Command::new(&exe)
            .args(["--exact", test, "--nocapture", "--test-threads", "1"])
            .env(CHILD, format!("{kind}|{}|{url}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let mut rng = rand::thread_rng();
    let kills = std::env::var("WEIR_TEST_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(KILLS);
    let (mut mid_stream, mut killed) = (0, 0);
    for _ in 0..kills {
        let before = progress();
        if before >= total {
            break;
        }
        let mut c = spawn();
        let round = Instant::now();
        while progress() == before && c.try_wait().unwrap().is_none() {
            if round.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                panic!("the {kind} child made no progress in 20 s after a restart (at {before} of {total})");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..40)));
        Command::new("kill").args(["-9", &c.id().to_string()]).status().unwrap();
        c.wait().unwrap();
        killed += 1;
        let after = progress();
        if after > before && after < total {
            mid_stream += 1;
        }
    }
    eprintln!("{mid_stream} of {killed} kills landed mid-stream");
    assert!(
        mid_stream >= 3 && mid_stream * 2 >= killed,
        "only {mid_stream} of {killed} kills landed mid-stream: make the work longer"
    );
    let mut c = spawn();
    let started = Instant::now();
    loop {
        if let Some(status) = c.try_wait().unwrap() {
            assert!(status.success(), "the last {kind} run failed: {status}");
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = c.kill();
            panic!("the last {kind} run did not finish in 60 s (at {} of {total})", progress());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
        let b = broker(&dir.path().join("data"));
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
        let b = broker(&dir.path().join("data"));
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
    let progress = || rt.block_on(count(&watcher, "SELECT COUNT(*) FROM weir_outbox WHERE sent_at IS NOT NULL"));
    kill_repeatedly(test, "relay", dir.path(), &url, OUTBOX_EVENTS, progress);
    rt.block_on(async {
        let b = broker(&dir.path().join("data"));
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
