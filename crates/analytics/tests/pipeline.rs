//! The analytics pipeline end to end on the embedded bus, on SQLite and PostgreSQL: exact totals per type and window
//! with events out of order within the grace period, late events kept out of final windows, the API's answers, and
//! exact totals after the aggregator is killed with SIGKILL again and again during a bulk ingest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use rand::{Rng, SeedableRng};
use sqlx::Row;
use weir_analytics::aggregator::HOUR_MS;
use weir_analytics::event::{Generator, TOPIC};
use weir_analytics::time::format_rfc3339;
use weir_analytics::AggregatorConfig;
use weir_broker::testing::crash::{kill_and_restart, rerun_test};
use weir_broker::testing::open_broker;
use weir_http::testing::call;
use weir_runtime::{Bus, EmbeddedBus, OutgoingMessage, SqlStore};

mod support;
use support::{start, store_url, stored, until_consumed, BASE};

/// Produces `n` events over `hours` hours starting at BASE, each up to `disorder_ms` earlier than its slot, so events
/// arrive out of order by less than that. Returns the expected count per (window start, type).
async fn produce(bus: &EmbeddedBus, n: i64, hours: i64, disorder_ms: i64, seed: u64) -> BTreeMap<(i64, String), i64> {
    let mut generator = Generator::new(rand::rngs::StdRng::seed_from_u64(seed), 500);
    let mut jitter = rand::rngs::StdRng::seed_from_u64(seed + 1);
    let mut expected = BTreeMap::new();
    let mut batch = Vec::new();
    for i in 0..n {
        let slot = BASE + i * hours * HOUR_MS / n;
        let ts = (slot - jitter.gen_range(0..=disorder_ms)).max(BASE);
        let (key, event) = generator.event_at(ts);
        *expected.entry((ts.div_euclid(HOUR_MS) * HOUR_MS, event.event_type.to_string())).or_insert(0) += 1;
        batch.push(OutgoingMessage::new(TOPIC, serde_json::to_vec(&event).unwrap()).key(key));
        if batch.len() == 5000 {
            bus.produce_all(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    bus.produce_all(batch).await.unwrap();
    expected
}

async fn exact_totals(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    b.create_topic(TOPIC, 4, BTreeMap::new()).unwrap();
    let bus = EmbeddedBus::new(b.clone());
    let n = 30_000;
    let expected = produce(&bus, n, 12, 20_000, 7).await;
    let store = SqlStore::connect(&store_url(postgres, dir.path()).await).await.unwrap();
    let config = AggregatorConfig { flush_interval: Duration::from_millis(300), ..Default::default() };
    let (control, stop, task) = start(Arc::new(bus), store.clone(), config).await;
    until_consumed(&control, n as u64).await;
    control.flush().await.unwrap();
    assert_eq!(control.snapshot().late_events, 0, "disorder within the grace period is never late");
    assert_eq!(stored(&store).await, expected, "every window and type holds exactly its events");

    // The API over the same store.
    let api = weir_analytics::api::routes(store.clone(), control.clone());
    let get = |uri: String| {
        let api = api.clone();
        async move {
            let (status, body) = call(&api, Method::GET, &uri, None).await;
            (status.as_u16(), body)
        }
    };
    let (s, stats) = get("/api/stats".into()).await;
    assert_eq!((s, stats["events_stored"].as_i64()), (200, Some(n)));
    let page_views: i64 = expected.iter().filter(|((_, t), _)| t == "page_view").map(|(_, c)| c).sum();
    assert_eq!(stats["per_type"]["page_view"]["events"].as_i64(), Some(page_views));
    let (_, page) = get(format!(
        "/api/aggregations?event_type=click&start={}&end={}&limit=5",
        format_rfc3339(BASE),
        format_rfc3339(BASE + 6 * HOUR_MS)
    ))
    .await;
    assert_eq!((page["total"].as_i64(), page["items"].as_array().unwrap().len()), (Some(6), 5));
    assert!(page["items"].as_array().unwrap().iter().all(|i| i["event_type"] == "click"));
    let (_, types) = get("/api/event-types".into()).await;
    assert!(types.as_array().unwrap().contains(&serde_json::json!("purchase")));
    let (_, latest) = get("/api/aggregations/latest".into()).await;
    assert_eq!(latest["records"][0]["window_start"], format_rfc3339(BASE + 11 * HOUR_MS));
    let (_, memory) = get("/api/pipeline/memory".into()).await;
    assert_eq!(memory["events_in_memory"], 0);
    for bad in [
        "/api/aggregations?start=yesterday",
        "/api/aggregations?start=2025-01-02T00:00:00Z&end=2025-01-01T00:00:00Z",
        "/api/aggregations?limit=0",
    ] {
        let (s, body) = get(bad.into()).await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let _ = stop.send(true);
    task.await.unwrap();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_totals_per_type_and_window_sqlite() {
    exact_totals(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_totals_per_type_and_window_postgres() {
    exact_totals(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_are_counted_and_never_enter_a_final_window() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    b.create_topic(TOPIC, 1, BTreeMap::new()).unwrap();
    let bus = EmbeddedBus::new(b.clone());
    let event = |ts: i64, user: &str| {
        let v = serde_json::json!({"event_id": format!("{ts}-{user}"), "event_type": "click", "timestamp": format_rfc3339(ts), "user_id": user, "properties": {}});
        OutgoingMessage::new(TOPIC, v.to_string())
    };
    let ten = BASE + 10 * HOUR_MS;
    bus.produce_all(vec![
        event(ten + 60_000, "a"),
        event(ten + 120_000, "b"),
        // Two hours on: the watermark (minus 30 s of grace) passes the end of hour 10.
        event(ten + 2 * HOUR_MS + 60_000, "c"),
        // Hour 10 again: late.
        event(ten + 180_000, "d"),
        // Hour 12, 10 s behind the newest: within the grace period, not late.
        event(ten + 2 * HOUR_MS + 50_000, "e"),
    ])
    .await
    .unwrap();
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let config = AggregatorConfig { route_late: true, ..Default::default() };
    let (control, stop, task) = start(Arc::new(bus.clone()), store.clone(), config).await;
    until_consumed(&control, 5).await;
    let report = control.flush().await.unwrap();
    assert_eq!(report.windows_finalized, 1, "hour 10 is behind the watermark");
    assert_eq!(control.snapshot().late_events, 1);
    let rows = sqlx::query(
        "SELECT window_start, event_count, unique_users, is_final FROM hourly_aggregations ORDER BY window_start",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let rows: Vec<(String, i64, i64, i32)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(rows, vec![(format_rfc3339(ten), 2, 2, 1), (format_rfc3339(ten + 2 * HOUR_MS), 2, 2, 0)]);
    assert_eq!(b.offsets("events.late", 0).unwrap().1, 1, "the late event was routed to events.late");
    let _ = stop.send(true);
    task.await.unwrap();
    b.shutdown();
}

/// Another instance flushed one partition's records first (it took the partition in a rebalance): this aggregator's
/// flush is refused by the offset's compare-and-set, writes nothing, and reads its partitions again from the stored
/// offsets, so in the end every event is counted once, the other instance's by it and the rest by this one.
async fn a_fenced_flush_rewinds_and_counts_the_rest_once(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    b.create_topic(TOPIC, 4, BTreeMap::new()).unwrap();
    let bus = EmbeddedBus::new(b.clone());
    let n = 4_000;
    produce(&bus, n, 3, 0, 5).await;
    let store = SqlStore::connect(&store_url(postgres, dir.path()).await).await.unwrap();
    let config = AggregatorConfig { flush_interval: Duration::from_secs(3600), ..Default::default() };
    let (control, stop, task) = start(Arc::new(bus), store.clone(), config).await;
    until_consumed(&control, n as u64).await;
    assert_eq!(control.snapshot().events_in_memory, n as u64, "nothing flushed yet");

    // The other instance: partition 0 handled and committed (its counts are its own business here).
    let partition_0 = b.offsets(TOPIC, 0).unwrap().1;
    let mut tx = store.begin().await.unwrap();
    let group = AggregatorConfig::default().group;
    assert!(weir_runtime::sql::advance_offset(&mut tx, &group, TOPIC, 0, 0, partition_0).await.unwrap());
    tx.commit().await.unwrap();

    let report = control.flush().await.unwrap();
    assert!(report.rewound && report.windows_flushed == 0, "{report:?}");
    assert_eq!(stored(&store).await.values().sum::<i64>(), 0, "the refused flush wrote nothing");
    let rest = n - partition_0;
    let started = Instant::now();
    while control.snapshot().events_in_memory < rest as u64 {
        assert!(started.elapsed() < Duration::from_secs(60), "re-read {:?} of {rest}", control.snapshot());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = control.flush().await.unwrap();
    assert!(!report.rewound, "{report:?}");
    assert_eq!(stored(&store).await.values().sum::<i64>(), rest, "the other partitions' events, each once");
    let offsets: i64 = store.consumer_offsets(&group).await.unwrap().iter().map(|(_, _, o)| o).sum();
    assert_eq!(offsets, n, "every partition consumed to its end");
    assert_eq!(control.snapshot().events_consumed, rest as u64);
    let _ = stop.send(true);
    task.await.unwrap();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_flush_rewinds_and_counts_the_rest_once_sqlite() {
    a_fenced_flush_rewinds_and_counts_the_rest_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_flush_rewinds_and_counts_the_rest_once_postgres() {
    a_fenced_flush_rewinds_and_counts_the_rest_once(true).await;
}

const CHILD: &str = "WEIR_ANALYTICS_CRASH";
const BULK: i64 = 200_000;

fn crash_test(test: &str, postgres: bool) {
    if let Ok(spec) = std::env::var(CHILD) {
        // The child: aggregate until everything produced is flushed, as if nothing had happened before.
        let (dir, url) = spec.split_once('|').unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let b = open_broker(std::path::Path::new(dir).join("data"));
            let store = SqlStore::connect(url).await.unwrap();
            // Frequent flushes, so that a kill has many transactions to land in.
            let config = AggregatorConfig { flush_interval: Duration::from_millis(25), ..Default::default() };
            let (control, stop, task) = start(Arc::new(EmbeddedBus::new(b.clone())), store.clone(), config).await;
            loop {
                let done: i64 =
                    sqlx::query("SELECT CAST(COALESCE(SUM(next_offset), 0) AS BIGINT) FROM weir_consumer_offsets")
                        .fetch_one(store.pool())
                        .await
                        .unwrap()
                        .get(0);
                if done >= BULK {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(control);
            let _ = stop.send(true);
            task.await.unwrap();
            b.shutdown();
        });
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (url, expected) = rt.block_on(async {
        let b = open_broker(dir.path().join("data"));
        b.create_topic(TOPIC, 4, BTreeMap::new()).unwrap();
        let expected = produce(&EmbeddedBus::new(b.clone()), BULK, 24, 10_000, 11).await;
        b.shutdown();
        (store_url(postgres, dir.path()).await, expected)
    });
    // One connection for every look, opened once: a new pool per look (hundreds a second) contends with the child
    // for the database's locks and its recovery after each kill.
    let watcher = rt.block_on(async {
        let store = SqlStore::connect(&url).await.unwrap();
        weir_analytics::aggregator::migrate(&store).await.unwrap();
        store
    });
    let progress = || rt.block_on(async { stored(&watcher).await.values().sum::<i64>() });
    // Each kill lands a random moment after the child's first new flush is visible, so mid-ingest however fast this
    // machine aggregates (a fixed delay once let a fast machine finish before the kill).
    let spawn = || rerun_test(test, CHILD, format!("{}|{url}", dir.path().display())).spawn().unwrap();
    kill_and_restart("the aggregator", 8, BULK, spawn, progress);
    rt.block_on(async {
        let store = SqlStore::connect(&url).await.unwrap();
        let got = stored(&store).await;
        let state: Vec<(String, i64)> = sqlx::query("SELECT k, v FROM analytics_state ORDER BY k")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(got.values().sum::<i64>(), BULK, "exactly N after the crashes; state {state:?}");
        assert_eq!(got, expected, "and exactly each window's events");
    });
}

#[test]
fn totals_stay_exact_when_the_aggregator_is_killed_sqlite() {
    crash_test("totals_stay_exact_when_the_aggregator_is_killed_sqlite", false);
}

#[test]
fn totals_stay_exact_when_the_aggregator_is_killed_postgres() {
    crash_test("totals_stay_exact_when_the_aggregator_is_killed_postgres", true);
}

/// The aggregator itself stalling (here a flush waiting 3 s for a database another connection has locked) is not
/// its partitions going quiet: with an idle timeout of 1 s, both partitions stay active through the stall, so the
/// one five hours ahead does not drag the watermark past the other and none of the other's events is late. (Before,
/// a stall longer than the idle timeout made every partition idle at once, and a benchmark run on a busy disk lost
/// about 3 % of its events as late.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_of_the_aggregator_is_not_its_partitions_going_idle() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    b.create_topic(TOPIC, 2, BTreeMap::new()).unwrap();
    let bus = EmbeddedBus::new(b.clone());
    let url = store_url(false, dir.path()).await;
    let store = SqlStore::connect(&url).await.unwrap();
    let config = AggregatorConfig {
        flush_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let (control, stop, task) = start(Arc::new(bus.clone()), store.clone(), config).await;
    // Both partitions busy all along, partition 0's events five hours ahead of partition 1's.
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let producer = {
        let (bus, running) = (bus.clone(), running.clone());
        tokio::spawn(async move {
            let mut generator = Generator::new(rand::rngs::StdRng::seed_from_u64(4), 50);
            let mut sent = 0u64;
            for i in 0.. {
                if !running.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                for (partition, at) in [(0, BASE + 5 * HOUR_MS + i * 100), (1, BASE + i * 100)] {
                    let (key, event) = generator.event_at(at);
                    let message = OutgoingMessage {
                        partition: Some(partition),
                        ..OutgoingMessage::new(TOPIC, serde_json::to_vec(&event).unwrap()).key(key)
                    };
                    bus.produce(message).await.unwrap();
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sent
        })
    };
    until_consumed(&control, 20).await;
    // The stall: another connection holds SQLite's write lock, so the next flush waits for it.
    let locker = SqlStore::connect(&url).await.unwrap();
    let mut connection = locker.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *connection).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    sqlx::query("COMMIT").execute(&mut *connection).await.unwrap();
    drop(connection);
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    let sent = producer.await.unwrap();
    until_consumed(&control, sent).await;
    control.flush().await.unwrap();
    assert_eq!(control.snapshot().late_events, 0, "no event of the partition behind is late after the stall");
    assert_eq!(stored(&store).await.values().sum::<i64>(), sent as i64);
    let _ = stop.send(true);
    task.await.unwrap();
    b.shutdown();
}
