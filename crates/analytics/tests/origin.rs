//! The analytics pipeline as its origin's users run it (data-pipeline-zeal), on SQLite and PostgreSQL: the origin's
//! events on `user-activity-events`, its paths, `from_time`/`to_time`, response shapes and columns beside the seed
//! document's, with totals exact in both vocabularies; and the origin's two correctness defects, kept fixed: a manual
//! (or shutdown) flush followed by the window's next flush keeps both parts, and no offset is committed for events
//! held only in memory (the SIGKILL version of the latter is `pipeline.rs`'s crash test).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use rand::SeedableRng;
use serde_json::Value;
use weir_analytics::aggregator::HOUR_MS;
use weir_analytics::api::ORIGIN_COLUMNS;
use weir_analytics::event::{Generator, EVENT_TYPES, ORIGIN_TOPIC, TOPIC};
use weir_analytics::time::format_rfc3339;
use weir_analytics::AggregatorConfig;
use weir_broker::testing::open_broker;
use weir_http::testing::call;
use weir_runtime::{Bus, EmbeddedBus, OutgoingMessage, SqlStore};

mod support;
use support::{start, store_url, stored, until_consumed, BASE};

/// What a window and type should hold, from the events as produced.
#[derive(Debug, Default)]
struct Expected {
    count: i64,
    users: BTreeSet<String>,
    sessions: BTreeSet<String>,
    duration_total: i64,
    durations: i64,
}

/// Produces `n` of the origin generator's events to `topic`, evenly over `hours` from `from`; returns what each
/// (window start, type) should hold.
async fn produce(
    bus: &EmbeddedBus,
    topic: &str,
    n: i64,
    from: i64,
    hours: i64,
    seed: u64,
) -> BTreeMap<(i64, String), Expected> {
    let mut generator = Generator::new(rand::rngs::StdRng::seed_from_u64(seed), 500);
    let mut expected: BTreeMap<(i64, String), Expected> = BTreeMap::new();
    let mut batch = Vec::new();
    for i in 0..n {
        let ts = from + i * hours * HOUR_MS / n;
        let (key, event) = generator.event_at(ts);
        let e = expected.entry((ts.div_euclid(HOUR_MS) * HOUR_MS, event.event_type.to_string())).or_default();
        e.count += 1;
        e.users.insert(event.user_id.clone());
        e.sessions.insert(event.session_id.clone());
        if let Some(ms) = event.duration_ms {
            e.duration_total += i64::from(ms);
            e.durations += 1;
        }
        batch.push(OutgoingMessage::new(topic, serde_json::to_vec(&event).unwrap()).key(key));
        if batch.len() == 5000 {
            bus.produce_all(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    bus.produce_all(batch).await.unwrap();
    expected
}

/// Calls the API's router as an HTTP client would: status and JSON body.
async fn request(api: &axum::Router, method: Method, uri: &str) -> (u16, Value) {
    let (status, body) = call(api, method, uri, None).await;
    (status.as_u16(), body)
}

/// A distinct count from a HyperLogLog against the exact one: within 2 % (and 2) of it.
fn close(estimate: &Value, exact: usize) -> bool {
    let e = estimate.as_i64().unwrap();
    (e - exact as i64).unsigned_abs() as f64 <= 2.0 + exact as f64 * 0.02
}

async fn origin_vocabulary(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    b.create_topic(ORIGIN_TOPIC, 3, BTreeMap::new()).unwrap();
    let bus = EmbeddedBus::new(b.clone());
    let n = 20_000;
    let expected = produce(&bus, ORIGIN_TOPIC, n, BASE, 6, 5).await;
    let store = SqlStore::connect(&store_url(postgres, dir.path()).await).await.unwrap();
    let config = AggregatorConfig {
        topic: ORIGIN_TOPIC.into(),
        flush_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let (control, stop, task) = start(Arc::new(bus), store.clone(), config).await;
    until_consumed(&control, n as u64).await;
    let api = weir_analytics::api::routes(store.clone(), control.clone());

    // The origin's admin port, then its manual flush, which answers in its shape.
    let (s, status) = request(&api, Method::GET, "/admin/status").await;
    assert_eq!((s, status["total_events_in_memory"].as_i64()), (200, Some(n)));
    assert_eq!(status["events_by_type"].as_object().unwrap().values().map(|v| v.as_i64().unwrap()).sum::<i64>(), n);
    assert_eq!(status["earliest_window_end"], format_rfc3339(BASE + HOUR_MS));
    let (s, memory) = request(&api, Method::GET, "/api/pipeline/memory").await;
    assert_eq!(
        (s, memory["total_events_in_memory"].as_i64(), memory["events_in_memory"].as_i64()),
        (200, Some(n), Some(n))
    );
    assert_eq!(memory["events_by_type"].as_array().unwrap().len(), 10);
    assert_eq!(memory["next_possible_db_write"], format_rfc3339(BASE + HOUR_MS + 30_000));
    let (s, flushed) = request(&api, Method::POST, "/admin/flush").await;
    assert_eq!((s, flushed["success"].as_bool(), flushed["events_written"].as_i64()), (200, Some(true), Some(n)));
    assert_eq!(flushed["windows_flushed"].as_i64(), Some(60));
    assert!(flushed["message"].as_str().is_some_and(|m| !m.is_empty()));

    // The origin's documented query strings: naive times, windows inside [from_time, to_time].
    let (s, page) =
        request(&api, Method::GET, "/api/aggregations?from_time=2025-01-01T01:00:00&to_time=2025-01-01T04:00:00").await;
    assert_eq!(s, 200, "{page}");
    let records = page["records"].as_array().unwrap();
    assert_eq!((page["count"].as_u64(), records.len(), page["total"].as_i64()), (Some(30), 30, Some(30)));
    assert_eq!(page["items"], page["records"], "the seed document's key holds the same rows");
    assert!(page["timestamp"].as_str().is_some());
    for r in records {
        for key in ORIGIN_COLUMNS.iter().chain(&["unique_users", "is_final", "amount_sum"]) {
            assert!(r.get(key).is_some(), "{key} missing from {r}");
        }
        let window = weir_analytics::time::parse_rfc3339(r["window_start"].as_str().unwrap()).unwrap();
        assert!((BASE + HOUR_MS..BASE + 4 * HOUR_MS).contains(&window), "{r}");
        let e = &expected[&(window, r["event_type"].as_str().unwrap().to_string())];
        assert_eq!(r["event_count"].as_i64(), Some(e.count), "{r}");
        assert_eq!(r["unique_user_count"], r["unique_users"]);
        assert!(close(&r["unique_user_count"], e.users.len()), "{r} against {} users", e.users.len());
        assert!(close(&r["unique_session_count"], e.sessions.len()), "{r} against {} sessions", e.sessions.len());
        assert_eq!(r["total_duration_ms"].as_i64(), Some(e.duration_total), "{r}");
        match e.durations {
            0 => assert!(r["avg_duration_ms"].is_null(), "{r}"),
            k => assert!((r["avg_duration_ms"].as_f64().unwrap() - e.duration_total as f64 / k as f64).abs() < 1e-6),
        }
    }
    let in_range: i64 = expected
        .iter()
        .filter(|((w, _), _)| (BASE + HOUR_MS..BASE + 4 * HOUR_MS).contains(w))
        .map(|(_, e)| e.count)
        .sum();
    assert_eq!(records.iter().map(|r| r["event_count"].as_i64().unwrap()).sum::<i64>(), in_range);
    // The document's start/end beside them: windows overlapping the range.
    let (_, page) = request(
        &api,
        Method::GET,
        "/api/aggregations?start=2025-01-01T01:30:00Z&end=2025-01-01T02:30:00Z&event_type=click",
    )
    .await;
    assert_eq!(page["count"].as_u64(), Some(2), "{page}");
    let (_, page) = request(&api, Method::GET, "/api/aggregations?limit=1000&offset=55").await;
    assert_eq!((page["count"].as_u64(), page["total"].as_i64()), (Some(5), Some(60)));

    let (s, latest) = request(&api, Method::GET, "/api/aggregations/latest").await;
    assert_eq!((s, latest["count"].as_u64()), (200, Some(10)), "the origin's default of 10");
    assert_eq!(latest["records"][0]["window_start"], format_rfc3339(BASE + 5 * HOUR_MS));
    let (_, latest) = request(&api, Method::GET, "/api/aggregations/latest?limit=3").await;
    assert_eq!(latest["records"].as_array().unwrap().len(), 3);

    // Stats in the origin's shape over a range, and the document's counters; totals exact both ways.
    let (s, stats) = request(
        &api,
        Method::GET,
        "/api/aggregations/stats?from_time=2025-01-01T01:00:00Z&to_time=2025-01-01T04:00:00Z",
    )
    .await;
    assert_eq!(s, 200, "{stats}");
    assert_eq!(stats["time_range_start"], "2025-01-01T01:00:00.000Z");
    let rows = stats["stats"].as_array().unwrap();
    assert_eq!(rows.len(), 10);
    assert_eq!(rows.iter().map(|r| r["total_events"].as_i64().unwrap()).sum::<i64>(), in_range);
    for r in rows {
        assert_eq!(r["window_count"].as_i64(), Some(3), "{r}");
        let avg = r["avg_events_per_hour"].as_f64().unwrap();
        assert!((avg - r["total_events"].as_f64().unwrap() / 3.0).abs() < 1e-6, "{r}");
        assert!(r["total_unique_users"].as_i64().unwrap() > 0 && r["total_unique_sessions"].as_i64().unwrap() > 0);
    }
    for path in ["/api/stats", "/api/aggregations/stats"] {
        let (_, all) = request(&api, Method::GET, path).await;
        assert_eq!(all["events_stored"].as_i64(), Some(n), "{path}");
        assert_eq!(
            all["stats"].as_array().unwrap().iter().map(|r| r["total_events"].as_i64().unwrap()).sum::<i64>(),
            n
        );
    }
    let (_, types) = request(&api, Method::GET, "/api/aggregations/event-types").await;
    let mut origin_types: Vec<&str> = EVENT_TYPES.to_vec();
    origin_types.sort();
    assert_eq!(types["event_types"], serde_json::json!(origin_types));
    let (_, list) = request(&api, Method::GET, "/api/event-types").await;
    assert_eq!(list, serde_json::json!(origin_types), "the document's bare list");
    assert_eq!(request(&api, Method::GET, "/ready").await, (200, serde_json::json!({"ready": true})));
    assert_eq!(request(&api, Method::GET, "/admin/health").await, (200, serde_json::json!({"status": "healthy"})));

    for bad in [
        "/api/aggregations?from_time=yesterday",
        "/api/aggregations?from_time=2025-01-02T00:00:00&to_time=2025-01-01T00:00:00",
        "/api/aggregations?limit=0",
        "/api/aggregations?offset=-1",
        "/api/aggregations/latest?limit=101",
        "/api/aggregations/latest?limit=ten",
        "/api/aggregations/stats?to_time=noon",
    ] {
        let (s, body) = request(&api, Method::GET, bad).await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad}: {body}");
    }
    let _ = stop.send(true);
    task.await.unwrap();
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_vocabulary_answers_in_its_shapes_sqlite() {
    origin_vocabulary(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_vocabulary_answers_in_its_shapes_postgres() {
    origin_vocabulary(true).await;
}

/// The row of one window and type, as the API shows it.
async fn window_row(api: &axum::Router, window: i64, event_type: &str) -> Value {
    let uri = format!(
        "/api/aggregations?event_type={event_type}&from_time={}&to_time={}",
        format_rfc3339(window),
        format_rfc3339(window + HOUR_MS)
    );
    let (_, page) = request(api, Method::GET, &uri).await;
    page["records"][0].clone()
}

/// The origin's upsert put the later counts in place of the stored ones, so a manual flush of an open window (or a
/// shutdown's) followed by that window's next flush kept only the second part. Here each flush adds to the row.
async fn flushes_add_up(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    b.create_topic(TOPIC, 1, BTreeMap::new()).unwrap();
    let bus = EmbeddedBus::new(b.clone());
    let store = SqlStore::connect(&store_url(postgres, dir.path()).await).await.unwrap();
    // Only manual flushes (and the one at shutdown); every event in the window [BASE, BASE + 1 h), which stays open:
    // the latest event time is 10 minutes into it.
    let config = || AggregatorConfig { flush_interval: Duration::from_secs(3600), ..Default::default() };
    let at = BASE + 10 * 60_000;
    let mut parts: Vec<BTreeMap<(i64, String), Expected>> = Vec::new();
    let (control, stop, task) = start(Arc::new(bus.clone()), store.clone(), config()).await;
    let api = weir_analytics::api::routes(store.clone(), control.clone());
    parts.push(produce(&bus, TOPIC, 300, at, 0, 1).await);
    until_consumed(&control, 300).await;
    let (_, first) = request(&api, Method::POST, "/api/pipeline/flush").await;
    assert_eq!(first["events_written"].as_i64(), Some(300), "{first}");
    let click = window_row(&api, BASE, "click").await;
    assert_eq!(click["event_count"].as_i64(), Some(parts[0][&(BASE, "click".to_string())].count));

    parts.push(produce(&bus, TOPIC, 200, at, 0, 2).await);
    until_consumed(&control, 500).await;
    let (_, second) = request(&api, Method::POST, "/admin/flush").await;
    assert_eq!(second["events_written"].as_i64(), Some(200), "{second}");
    // Then a shutdown's flush, and a new aggregator's flush of the same window.
    parts.push(produce(&bus, TOPIC, 100, at, 0, 3).await);
    until_consumed(&control, 600).await;
    let _ = stop.send(true);
    task.await.unwrap();
    let (control, stop, task) = start(Arc::new(bus.clone()), store.clone(), config()).await;
    parts.push(produce(&bus, TOPIC, 50, at, 0, 4).await);
    until_consumed(&control, 650).await;
    let _ = stop.send(true);
    task.await.unwrap();

    let api = weir_analytics::api::routes(store.clone(), control);
    let mut want: HashMap<String, (i64, i64, i64)> = HashMap::new();
    for part in &parts {
        for ((_, t), e) in part {
            let w = want.entry(t.clone()).or_default();
            *w = (w.0 + e.count, w.1 + e.duration_total, w.2 + e.durations);
        }
    }
    for (t, (count, duration_total, durations)) in &want {
        let row = window_row(&api, BASE, t).await;
        assert_eq!(row["event_count"].as_i64(), Some(*count), "{t}: {row}");
        assert_eq!(row["total_duration_ms"].as_i64(), Some(*duration_total), "{t}: {row}");
        if *durations > 0 {
            let avg = row["avg_duration_ms"].as_f64().unwrap();
            assert!((avg - *duration_total as f64 / *durations as f64).abs() < 1e-6, "{t}: {row}");
        }
        // Sessions and users merge: at least as many as any part saw.
        let most = parts.iter().filter_map(|p| p.get(&(BASE, t.clone()))).map(|e| e.sessions.len()).max().unwrap();
        assert!(row["unique_session_count"].as_i64().unwrap() as usize >= most, "{t}: {row}");
        assert_eq!(row["is_final"], false, "the window is still open");
    }
    assert_eq!(stored(&store).await.values().sum::<i64>(), 650);
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_flush_then_the_next_one_keep_both_parts_sqlite() {
    flushes_add_up(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_flush_then_the_next_one_keep_both_parts_postgres() {
    flushes_add_up(true).await;
}

/// The origin committed, after each flush, every offset consumed so far, events of still-open windows included: a
/// crash then lost them. Here no offset moves, in the database or on the bus, for events held only in memory; an
/// aggregator that dies without flushing leaves them to be read again.
async fn memory_is_not_committed(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    b.create_topic(TOPIC, 2, BTreeMap::new()).unwrap();
    let bus = EmbeddedBus::new(b.clone());
    let store = SqlStore::connect(&store_url(postgres, dir.path()).await).await.unwrap();
    // A short session: the second aggregator takes the partitions over once the first, gone without leaving the
    // group, is given up on.
    let config = || AggregatorConfig {
        flush_interval: Duration::from_secs(3600),
        session_timeout: Duration::from_secs(6),
        ..Default::default()
    };
    let expected = produce(&bus, TOPIC, 1_000, BASE, 3, 8).await;
    let (control, _stop, task) = start(Arc::new(bus.clone()), store.clone(), config()).await;
    until_consumed(&control, 1_000).await;
    assert_eq!(control.snapshot().events_in_memory, 1_000);
    let group = AggregatorConfig::default().group;
    assert_eq!(store.consumer_offsets(&group).await.unwrap(), vec![], "nothing flushed, nothing committed");
    if let Ok(g) = b.describe_group(&group) {
        assert!(g.offsets.iter().all(|o| o.committed.is_none()), "the bus has no offset either: {:?}", g.offsets);
    }
    // Dies without flushing.
    task.abort();
    let _ = task.await;
    drop(control);

    let (control, stop, task) = start(Arc::new(bus.clone()), store.clone(), config()).await;
    until_consumed(&control, 1_000).await;
    let _ = stop.send(true);
    task.await.unwrap();
    let want: BTreeMap<(i64, String), i64> = expected.iter().map(|(k, e)| (k.clone(), e.count)).collect();
    assert_eq!(stored(&store).await, want, "every event once, none lost with the first aggregator's memory");
    let committed: i64 = store.consumer_offsets(&group).await.unwrap().iter().map(|(_, _, o)| o).sum();
    assert_eq!(committed, 1_000);
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_not_committed_for_events_held_only_in_memory_sqlite() {
    memory_is_not_committed(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_not_committed_for_events_held_only_in_memory_postgres() {
    memory_is_not_committed(true).await;
}
