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

/// A Tansu broker and a fresh PostgreSQL database for one test's instances, and the bus URL they share (a killed
/// instance's partitions move after its session times out: 6 s rather than Kafka's 45).
async fn cluster() -> (Tansu, String, String) {
    let tansu = Tansu::start().await;
    let bus = format!("{}?session.timeout.ms=6000", tansu.bus_url());
    (tansu, fresh_postgres().await, bus)
}

/// `weir up` running `system` as one of several instances on `bus` and `db`, with `extra` arguments.
fn instance_args(system: &str, bus: &str, db: &str, extra: &[&str]) -> Vec<String> {
    let common = ["up", "--systems", system, "--bus", bus, "--database", db, "--kafka-listen", "none"];
    common.iter().chain(&["--http-listen", "127.0.0.1:0"]).chain(extra).map(|a| a.to_string()).collect()
}

fn produce_events(dir: &std::path::Path, server: &str, n: u64) {
    let out =
        weir(dir, &["--server", server, "analytics", "produce", "--bulk", &n.to_string(), "--quiet"]).output().unwrap();
    assert!(out.status.success(), "produce failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Two `weir up` instances on one Tansu cluster, one PostgreSQL database and Redis share the analytics aggregator's
/// group: both consume, one is killed with SIGKILL mid-stream, the other takes its partitions over, and every event
/// is counted exactly once.
#[test]
fn two_analytics_instances_on_a_cluster_share_the_work_and_count_each_event_once_through_a_kill() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (tansu, db, bus) = rt.block_on(cluster());
    let (dir_a, dir_b, producer_dir) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = instance_args(
        "analytics",
        &bus,
        &db,
        // Only the test's events (no default producer beside each aggregator); the key-value store on Redis, as a
        // scaled-out deployment has it.
        &[
            "--set",
            "analytics.flush_interval_seconds=1",
            "--set",
            "analytics.producer=false",
            "--set",
            "analytics.lag_update_interval_seconds=1",
            "--redis",
            "redis://127.0.0.1:6379",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
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
    // The lag the survivor reports, from the cluster's end offsets (Kafka's ListOffsets): one per partition, nothing
    // left once everything is flushed.
    let lag = support::eventually("4 partitions, lag 0", || {
        let (processor, _) = support::curl_json(&[&format!("http://{http_b}/api/metrics/processor")]);
        let values = processor["metrics"]["processor_consumer_lag"]["values"].as_array().cloned().unwrap_or_default();
        let sum: f64 = values.iter().filter_map(|v| v["value"].as_f64()).sum();
        format!("{} partitions, lag {sum}", values.len())
    });
    assert_eq!(lag, "4 partitions, lag 0");

    Command::new("kill").arg(b.id().to_string()).status().unwrap();
    assert!(b.wait().unwrap().success(), "the survivor stops cleanly");
}

/// Two `weir up` instances run the wedding on one Tansu cluster and one database: both take events over HTTP, one
/// runs the desks. Killed with SIGKILL mid-run, the desk holder's lease passes to the other, which resumes the run
/// from the database: every event is decided (handled or missed) exactly once, the ones waiting at the kill are
/// handled by the survivor, and no worker ever has two handlings at once (two desk holders would both use workers
/// 0 and 1 of each team).
#[test]
fn two_wedding_instances_on_a_cluster_take_events_and_hand_the_desks_over_through_a_kill() {
    use support::curl_json;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (_tansu, db, bus) = rt.block_on(cluster());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = instance_args("wedding", &bus, &db, &["--set", "wedding.speed=4"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (a, http_a) = start_instance(dir_a.path(), &args, "instance a");
    let (b, http_b) = start_instance(dir_b.path(), &args, "instance b");
    let mut instances = vec![(a, http_a), (b, http_b)];
    let started = Instant::now();
    let leader = loop {
        let leading: Vec<f64> = instances.iter().map(|(_, h)| metric(h, "wedding_desks_leading")).collect();
        if leading.iter().sum::<f64>() == 1.0 {
            break leading.iter().position(|l| *l == 1.0).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "one instance should hold the desks: {leading:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let post = |http: &str, i: usize| {
        let (event_type, priority) =
            [("brawl", "High"), ("dirty_table", "Medium"), ("music", "Low"), ("bad_food", "High")][i % 4];
        let body = format!(
            r#"{{"id": "e{i}", "event_type": "{event_type}", "priority": "{priority}", "description": "number {i}"}}"#
        );
        let url = format!("http://{http}/message");
        let (answer, status) = curl_json(&["-X", "POST", &url, "-H", "Content-Type: application/json", "-d", &body]);
        assert_eq!(status, "200", "{answer}");
    };
    // Phase one: events to both instances.
    for i in 0..40 {
        post(&instances[i % 2].1, i);
        std::thread::sleep(Duration::from_millis(100));
    }
    // The desk holder dies; the survivor's clock reading at that moment.
    let (mut dead, _) = instances.swap_remove(leader);
    let (mut survivor, http) = instances.pop().unwrap();
    Command::new("kill").args(["-9", &dead.id().to_string()]).status().unwrap();
    dead.wait().unwrap();
    let (summary, _) = curl_json(&[&format!("http://{http}/api/wedding/report?summary=true")]);
    let killed_at = summary["now"].as_i64().unwrap();
    // Phase two: the survivor alone, until it has handled one of them: its desks take over once the lease and the
    // group have waited out the dead instance, which on a loaded machine can outlast a short burst's deadlines (a
    // high-priority event must start within 5 s of wedding time, 1.25 s here).
    let handled_since_kill = || {
        let (list, _) = curl_json(&[&format!("http://{http}/api/wedding/events")]);
        list["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["status"] == "handled" && e["started_ms"].as_i64().is_some_and(|s| s >= killed_at))
    };
    let mut total = 40;
    let phase_two = Instant::now();
    while total < 80 || !handled_since_kill() {
        assert!(phase_two.elapsed() < Duration::from_secs(90), "the survivor handled nothing after the kill");
        post(&http, total);
        total += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    loop {
        let (summary, _) = curl_json(&[&format!("http://{http}/api/wedding/report?summary=true")]);
        if summary["open"].as_i64() == Some(0) && summary["events"].as_i64() == Some(total as i64) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "every event should be decided: {summary}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(metric(&http, "wedding_desks_leading"), 1.0, "the survivor took the desks over");

    let (list, _) = curl_json(&[&format!("http://{http}/api/wedding/events")]);
    let events = list["events"].as_array().unwrap();
    assert_eq!(events.len(), total, "{list}");
    let mut slots: std::collections::BTreeMap<(String, i64), Vec<i64>> = Default::default();
    let mut handled_after_the_kill = 0;
    for e in events {
        let status = e["status"].as_str().unwrap();
        assert!(status == "handled" || status == "missed", "{e}");
        if let (Some(team), Some(worker), Some(started)) =
            (e["team"].as_str(), e["worker"].as_i64(), e["started_ms"].as_i64())
        {
            assert!(worker < 2, "a team has two workers: {e}");
            slots.entry((team.to_string(), worker)).or_default().push(started);
            handled_after_the_kill += usize::from(status == "handled" && started >= killed_at);
        }
    }
    for ((team, worker), mut starts) in slots {
        starts.sort();
        for pair in starts.windows(2) {
            assert!(pair[1] - pair[0] >= 3_000, "{team} worker {worker} had two handlings at once: {pair:?}");
        }
    }
    assert!(handled_after_the_kill > 0, "the survivor's desks handled events after the kill (at {killed_at}): {list}");
    Command::new("kill").arg(survivor.id().to_string()).status().unwrap();
    assert!(survivor.wait().unwrap().success(), "the survivor stops cleanly");
}

/// The web console of a `weir up` whose systems run on a cluster: the same API over the Kafka protocol (topics
/// created, produced to, browsed, searched and deleted; a group's lag shown and reset; the live totals), the bus
/// named as the cluster's address and no data directory.
#[test]
fn the_console_serves_the_cluster_the_systems_run_on() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (tansu, db, bus) = rt.block_on(cluster());
    let dir = tempfile::tempdir().unwrap();
    let args = instance_args("none", &bus, &db, &[]);
    let (mut up, http) = start_instance(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>(), "console");
    let url = |path: &str| format!("http://{http}{path}");
    let post = |path: &str, body: &str| {
        support::curl_json(&["-X", "POST", "-H", "content-type: application/json", "-d", body, &url(path)])
    };
    let get = |path: &str| support::curl_json(&[&url(path)]);

    let (overview, status) = get("/console/api/overview");
    assert_eq!(status, "200", "{overview}");
    assert!(overview["bus"].as_str().is_some_and(|b| b.starts_with("kafka://")), "{overview}");
    assert_eq!(overview["data_dir"], serde_json::Value::Null);

    let (created, status) = post("/console/api/topics", r#"{"name": "console-on-cluster", "partitions": 2}"#);
    assert_eq!(status, "201", "{created}");
    assert_eq!(post("/console/api/topics", r#"{"name": "console-on-cluster", "partitions": 2}"#).1, "409");
    for i in 0..3 {
        let body = format!(r#"{{"key": "k{i}", "value": "{{\"order\": {{\"id\": \"c-{i}\"}}}}", "partition": 0}}"#);
        let (written, status) = post("/console/api/topics/console-on-cluster/messages", &body);
        assert_eq!((status.as_str(), written["partition"].as_i64()), ("200", Some(0)), "{written}");
    }
    let (topic, _) = get("/console/api/topics/console-on-cluster");
    let ends: Vec<i64> =
        topic["partitions"].as_array().unwrap().iter().map(|p| p["end_offset"].as_i64().unwrap()).collect();
    assert_eq!(ends, [3, 0], "{topic}");
    let (page, _) =
        get("/console/api/topics/console-on-cluster/messages?partition=0&from=earliest&order=oldest&limit=10");
    let ids: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value_json"]["order"]["id"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(ids, ["c-0", "c-1", "c-2"], "{page}");
    let (listed, _) = get("/console/api/topics?q=console-on");
    assert_eq!(listed["total"], 1, "{listed}");
    let search = Command::new("curl")
        .args(["-s", "-N", "-m", "30", &url("/console/api/topics/console-on-cluster/search?q=c-1&path=$.order.id")])
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&search.stdout);
    assert!(events.contains("event: done") && events.contains("\"found\":1"), "{events}");

    // A group that read 2 of the 3: its lag on the console, then reset to the end while it has no members.
    let out = weir(dir.path(), &["--server", &tansu.bus_url(), "consume", "console-on-cluster", "--group", "cc-group"])
        .args(["--from-beginning", "--max", "2", "--idle-timeout-ms", "5000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "consume: {}", String::from_utf8_lossy(&out.stderr));
    let started = Instant::now();
    let group = loop {
        let (group, status) = get("/console/api/groups/cc-group");
        if status == "200" && group["lag"] == 1 && group["members"].as_array().is_some_and(|m| m.is_empty()) {
            break group;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the group's lag: {status} {group}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(group["offsets"][0]["committed"], 2, "{group}");
    let (reset, status) = post("/console/api/groups/cc-group/reset", r#"{"to": "latest"}"#);
    assert_eq!(status, "200", "{reset}");
    assert_eq!(get("/console/api/groups/cc-group").0["lag"], 0);

    // The live totals, and the topic deleted.
    let live = Command::new("curl").args(["-s", "-N", "-m", "15", &url("/console/api/live")]).output().unwrap();
    let live = String::from_utf8_lossy(&live.stdout);
    assert!(live.contains("event: totals") && live.contains("\"topics\":"), "{live}");
    let deleted = support::curl_json(&["-X", "DELETE", &url("/console/api/topics/console-on-cluster")]);
    assert_eq!(deleted.1, "200", "{}", deleted.0);
    assert_eq!(get("/console/api/topics/console-on-cluster").1, "404");

    Command::new("kill").arg(up.id().to_string()).status().unwrap();
    let _ = up.wait();
    drop(tansu);
}
