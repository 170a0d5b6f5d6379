//! weir's systems on a real Kafka-compatible cluster: Tansu (brokers that keep their data in PostgreSQL), with the
//! systems' state in PostgreSQL, as a user who outgrew one machine runs them (`weir up --bus kafka://...
//! --database postgres://...`). Tansu is installed by `scripts/tansu.sh` (scripts/test.sh runs it); without it these
//! tests fail, never skip.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::Row;
use support::{metric, start_instance, weir};
use weir_runtime::testing::{fresh_postgres, Tansu};

/// What the database says of the analytics pipeline: events in windows plus late and invalid ones, and the
/// aggregator group's stored offsets summed over the partitions.
async fn analytics_totals(db: &str) -> (i64, i64) {
    let store = weir_runtime::SqlStore::connect(db).await.unwrap();
    let windowed: i64 = sqlx::query("SELECT CAST(COALESCE(SUM(event_count), 0) AS BIGINT) FROM hourly_aggregations")
        .fetch_one(store.pool())
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    let others: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(v), 0) AS BIGINT) FROM analytics_state WHERE k IN ('late_events', 'invalid_events')",
    )
    .fetch_one(store.pool())
    .await
    .map(|r| r.get(0))
    .unwrap_or(0);
    let offsets: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(next_offset), 0) AS BIGINT) FROM weir_consumer_offsets \
         WHERE group_id = 'analytics-aggregator'",
    )
    .fetch_one(store.pool())
    .await
    .map(|r| r.get(0))
    .unwrap_or(0);
    store.pool().close().await;
    (windowed + others, offsets)
}

fn produce_events(dir: &std::path::Path, server: &str, n: u64) {
    let out =
        weir(dir, &["--server", server, "analytics", "produce", "--bulk", &n.to_string(), "--quiet"]).output().unwrap();
    assert!(out.status.success(), "produce failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Two `weir up` instances on one Tansu cluster and one PostgreSQL database share the analytics aggregator's group:
/// both consume, one is killed with SIGKILL mid-stream, the other takes its partitions over, and every event is
/// counted exactly once.
#[test]
fn two_analytics_instances_on_a_cluster_share_the_work_and_count_each_event_once_through_a_kill() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let tansu = rt.block_on(Tansu::start());
    let db = rt.block_on(fresh_postgres());
    // A killed instance's partitions move after its session times out: 6 s rather than Kafka's 45.
    let bus = format!("{}?session.timeout.ms=6000", tansu.bus_url());
    let (dir_a, dir_b, producer_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = [
        "up",
        "--systems",
        "analytics",
        "--bus",
        &bus,
        "--database",
        &db,
        "--kafka-listen",
        "none",
        "--http-listen",
        "127.0.0.1:0",
        "--set",
        "analytics.flush_interval_seconds=1",
        // Only the test's events: no default producer beside each aggregator.
        "--set",
        "analytics.producer=false",
    ];
    let (mut a, http_a) = start_instance(dir_a.path(), &args, "instance a");
    let (mut b, http_b) = start_instance(dir_b.path(), &args, "instance b");

    // The first half while both run: each must take part.
    const HALF: u64 = 20_000;
    let started = Instant::now();
    let mut produced = 0;
    while metric(&http_a, "events_consumed_total") == 0.0 || metric(&http_b, "events_consumed_total") == 0.0 {
        assert!(started.elapsed() < Duration::from_secs(120), "both instances should consume a share");
        if produced < HALF {
            produce_events(producer_dir.path(), &tansu.address, HALF / 4);
            produced += HALF / 4;
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let (a_share, b_share) = (metric(&http_a, "events_consumed_total"), metric(&http_b, "events_consumed_total"));
    eprintln!("before the kill: instance a consumed {a_share}, b {b_share}");

    // Kill one mid-stream, then the second half: the survivor takes everything over.
    Command::new("kill").args(["-9", &a.id().to_string()]).status().unwrap();
    a.wait().unwrap();
    produce_events(producer_dir.path(), &tansu.address, 2 * HALF - produced);
    let total = 2 * HALF as i64;
    let started = Instant::now();
    let mut seen = (0, 0);
    while seen != (total, total) {
        assert!(started.elapsed() < Duration::from_secs(120), "counted {seen:?} of {total} (events, offsets)");
        assert!(seen.0 <= total && seen.1 <= total, "counted twice: {seen:?} of {total}");
        std::thread::sleep(Duration::from_millis(500));
        seen = rt.block_on(analytics_totals(&db));
    }
    // It stays exact: nothing redelivered is counted again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rt.block_on(analytics_totals(&db)), (total, total));
    let (stats, status) = support::curl_json(&[&format!("http://{http_b}/api/stats")]);
    assert_eq!((status.as_str(), stats["events_stored"].as_i64()), ("200", Some(total)), "{stats}");

    Command::new("kill").arg(b.id().to_string()).status().unwrap();
    assert!(b.wait().unwrap().success(), "the survivor stops cleanly");
}
