//! The wedding services on the embedded bus, on a run clock 5 times real time: the seed simulator's body through
//! `POST /message`, validation, topics per type, team consumer groups, statuses in the database, the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Row;
use weir_broker::testing::{open_broker, scratch_broker};
use weir_broker::Broker;
use weir_http::testing::call;
use weir_runtime::kv::SqlKv;
use weir_runtime::{Bus, EmbeddedBus, Host, SqlStore, SystemSettings};
use weir_wedding::WeddingSystem;

/// The wedding system on `broker` and `store`, as `weir up` runs it, with `settings` (`key=value`, as `--set`).
async fn start(broker: &Arc<Broker>, store: &SqlStore, settings: &[(&str, &str)]) -> (axum::Router, Host) {
    start_on(Arc::new(EmbeddedBus::new(broker.clone())), store, settings).await
}

/// The wedding system on any bus.
async fn start_on(bus: Arc<dyn Bus>, store: &SqlStore, settings: &[(&str, &str)]) -> (axum::Router, Host) {
    let mut host = Host::new(bus, store.clone(), Arc::new(SqlKv::new(store.clone())));
    let flags: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let routes = host.start(&WeddingSystem, SystemSettings::layered("wedding", &[], None, Vec::new(), &flags)).await;
    (routes.expect("the wedding system starts"), host)
}

/// Stops the system: every task must end cleanly.
async fn stop(host: Host) {
    for (task, end) in host.stop(Duration::from_secs(20)).await {
        assert!(matches!(end, weir_runtime::system::TaskEnd::Finished), "{task}: {end:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_flow_from_http_through_topics_to_the_teams() {
    let (dir, broker) = scratch_broker();
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let (app, host) = start(&broker, &store, &[("speed", "5")]).await;
    // Let the team groups join before the first event.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (s, run) = call(&app, Method::POST, "/api/wedding/start", Some(json!({}))).await;
    assert_eq!(s, 200, "{run}");
    // What the seed's simulator sends: an RFC 3339 instant, read against the run's start.
    let now = weir_runtime::time::format_rfc3339(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
    );
    let (s, ok) = call(
        &app,
        Method::POST,
        "/message",
        Some(json!({"event_type": "brawl", "priority": "Low", "description": "two uncles", "timestamp": now})),
    )
    .await;
    assert_eq!((s, ok["topic"].as_str()), (StatusCode::OK, Some("wedding.brawl")), "{ok}");
    // A type shared by catering and waiters, and one nobody can handle in time (officiant is busy for 60 s).
    let (s, _) = call(
        &app,
        Method::POST,
        "/api/wedding/events",
        Some(json!([
            {"id": "ill", "event_type": "feeling-ill", "priority": "low", "description": "", "timestamp": "00:10"},
            {"id": "rings", "event_type": "missing_rings", "priority": "high", "description": "", "timestamp": "00:01"},
            {"id": "b2", "event_type": "Brawl", "priority": "LOW", "description": "", "timestamp": "00:10"}
        ])),
    )
    .await;
    assert_eq!(s, 200);

    for (body, field) in [
        (json!({"event_type": "karaoke", "priority": "low"}), "event_type"),
        (json!({"event_type": "brawl", "priority": "urgent"}), "priority"),
        (json!({"event_type": "brawl", "priority": "low", "timestamp": "yesterday"}), "timestamp"),
    ] {
        let (s, e) = call(&app, Method::POST, "/message", Some(body)).await;
        assert_eq!(s, 400);
        assert!(e["message"].as_str().unwrap().contains(field), "{e}");
    }
    let (s, _) = call(
        &app,
        Method::POST,
        "/api/wedding/events",
        Some(json!([{"event_type": "brawl", "priority": "low"}, {"event_type": "nope", "priority": "low"}])),
    )
    .await;
    assert_eq!(s, 400, "a bad event in a batch stores none of it");

    // Run clock at 5x: security and waiters are free from 20 s (4 s of wall time); deadlines pass by 25 s.
    let started = Instant::now();
    let report = loop {
        let (_, r) = call(&app, Method::GET, "/api/wedding/report", None).await;
        if r["open"] == 0 && r["events"] == 4 {
            break r;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let (_, all) = call(&app, Method::GET, "/api/wedding/events", None).await;
            panic!("still open: {r}\n{all}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The brawl sent "now" (00:00, low: 15 s) is missed, as nobody in security is free before 20 s; the one at
    // 00:10 (deadline 25 s) is handled from 20 s.
    let (_, all) = call(&app, Method::GET, "/api/wedding/events", None).await;
    assert_eq!((report["happy"].as_i64(), report["stress"].as_i64()), (Some(2), Some(2)), "{report}\n{all}");
    assert!(report["happy"].as_i64() <= report["upper_bound"].as_i64());
    let rows =
        sqlx::query("SELECT id, team, status FROM wedding_events ORDER BY id").fetch_all(store.pool()).await.unwrap();
    let rows: BTreeMap<String, (Option<String>, String)> =
        rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
    assert_eq!(rows["ill"], (Some("waiters".to_string()), "handled".to_string()), "taken once, by the team free first");
    assert_eq!(rows["rings"], (None, "missed".to_string()));
    assert_eq!(rows["b2"], (Some("security".to_string()), "handled".to_string()));
    let (_, listed) = call(&app, Method::GET, "/api/wedding/events?status=handled", None).await;
    assert_eq!(listed["events"].as_array().unwrap().len(), 2);

    stop(host).await;
    broker.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_run_makes_the_simulations_decisions_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path().join("data"));
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let (app, host) = start(&broker, &store, &[]).await;
    virtual_run(&app, false).await;
    stop(host).await;
    broker.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_run_makes_the_simulations_decisions_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path().join("data"));
    let store = SqlStore::connect(&weir_runtime::testing::fresh_postgres().await).await.unwrap();
    let (app, host) = start(&broker, &store, &[]).await;
    virtual_run(&app, false).await;
    stop(host).await;
    broker.shutdown();
}

/// The same run on a real Kafka-compatible cluster (Tansu, its data in PostgreSQL) and PostgreSQL, as `weir up --bus
/// kafka://...` runs it: the same decisions, event for event. The events are sent ahead of their times under both
/// policies (one advance), since every stop of the clock waits for a round trip through the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_run_on_a_kafka_cluster_makes_the_simulations_decisions() {
    let tansu = weir_runtime::testing::Tansu::start().await;
    let bus = Arc::new(weir_runtime::KafkaBus::connect(&tansu.bus_url()).unwrap());
    let store = SqlStore::connect(&weir_runtime::testing::fresh_postgres().await).await.unwrap();
    let (app, host) = start_on(bus, &store, &[]).await;
    virtual_run(&app, true).await;
    stop(host).await;
}

/// A virtual run through the bus (ingest, topics, team groups, desks, database) makes the same decisions as the
/// in-process simulation, event for event, under both policies; sending events ahead of their times changes nothing.
/// `only_ahead` sends every run's events at once.
async fn virtual_run(app: &axum::Router, only_ahead: bool) {
    use weir_wedding::rules::Rules;
    use weir_wedding::schedule::{simulate, Policy};
    let app = app.clone();
    let rules = Rules::default();
    let events = weir_wedding::dataset::generate(600, rules.wedding_length, 4);
    for (policy, ahead) in [(Policy::Edf, only_ahead), (Policy::Fifo, true)] {
        let (s, run) =
            call(&app, Method::POST, "/api/wedding/start", Some(json!({"clock": "virtual", "policy": policy.name()})))
                .await;
        assert_eq!(s, 200, "{run}");
        let body = |es: &[&weir_wedding::schedule::Event]| {
            Value::Array(
                es.iter()
                    .map(|e| {
                        json!({"id": e.id, "event_type": e.event_type, "priority": e.priority.name(),
                        "timestamp": e.happened / 1000})
                    })
                    .collect(),
            )
        };
        if ahead {
            // The whole wedding at once: desks must not act on events before they happen.
            let all: Vec<_> = events.iter().collect();
            assert_eq!(call(&app, Method::POST, "/api/wedding/events", Some(body(&all))).await.0, 200);
            let (s, a) = call(&app, Method::POST, "/api/wedding/advance", Some(json!({"to": 400_000}))).await;
            assert_eq!(s, 200, "{a}");
        } else {
            let mut sent = 0;
            for t in (0..=400).map(|s| s * 1000) {
                let upto = events[sent..].partition_point(|e| e.happened <= t);
                let batch: Vec<_> = events[sent..sent + upto].iter().collect();
                sent += upto;
                if !batch.is_empty() {
                    assert_eq!(call(&app, Method::POST, "/api/wedding/events", Some(body(&batch))).await.0, 200);
                }
                let (s, a) = call(&app, Method::POST, "/api/wedding/advance", Some(json!({"to": t}))).await;
                assert_eq!(s, 200, "{a}");
            }
        }
        let expected = simulate(&rules, &events, policy);
        let (_, rows) = call(&app, Method::GET, &format!("/api/wedding/events?run={}", run["run"]), None).await;
        let rows: BTreeMap<String, Value> = rows["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
            .collect();
        assert_eq!(rows.len(), events.len());
        for (e, o) in events.iter().zip(&expected) {
            let r = &rows[&e.id];
            let status = if o.happy { "handled" } else { "missed" };
            assert_eq!(
                (r["status"].as_str(), r["team"].as_str(), r["started_ms"].as_i64()),
                (Some(status), o.team.map(|t| t.name()), o.started),
                "{policy:?}: event {e:?}"
            );
        }
        let (_, report) = call(&app, Method::GET, &format!("/api/wedding/report?run={}", run["run"]), None).await;
        assert_eq!(report["happy"].as_u64(), Some(expected.iter().filter(|o| o.happy).count() as u64));
        assert_eq!((report["open"].as_u64(), report["upper_bound_kind"].as_str()), (Some(0), Some("exact")));
        // Far past the last deadline nothing is left to decide: the clock jumps there at once.
        let far = tokio::time::timeout(
            Duration::from_secs(5),
            call(&app, Method::POST, "/api/wedding/advance", Some(json!({"to": i64::MAX}))),
        )
        .await
        .expect("advancing to the end of time must not walk every phase");
        assert_eq!(far.0, 200, "{}", far.1);
    }

    // What a virtual run refuses.
    call(&app, Method::POST, "/api/wedding/start", Some(json!({"clock": "virtual"}))).await;
    let (s, e) = call(
        &app,
        Method::POST,
        "/message",
        Some(json!({"event_type": "brawl", "priority": "low", "timestamp": 90_000})),
    )
    .await;
    assert!(s == 400 && e["message"].as_str().unwrap().contains("24 h"), "{e}");
    let (s, e) = call(&app, Method::POST, "/api/wedding/advance", Some(json!({"to": -5}))).await;
    assert!(s == 400 && e["message"].as_str().unwrap().contains("to"), "{e}");
    call(&app, Method::POST, "/api/wedding/start", Some(json!({}))).await;
    let (s, e) = call(&app, Method::POST, "/api/wedding/advance", Some(json!({"to": 1000}))).await;
    assert!(s == 409 && e["message"].as_str().unwrap().contains("virtual"), "a real-clock run is not advanced: {e}");
    for (body, field) in [
        (json!({"policy": "random"}), "policy"),
        (json!({"workers": 0}), "workers"),
        (json!({"routines": {"security": "sometimes"}}), "routine"),
        (json!({"clock": "sundial"}), "clock"),
        (json!({"speed": -1}), "speed"),
    ] {
        let (s, e) = call(&app, Method::POST, "/api/wedding/start", Some(body)).await;
        assert!(s == 400 && e["message"].as_str().unwrap().contains(field), "{field}: {e}");
    }
}

/// What the red team found (issue 13): an oversized description got 503 after committing a `pending` row that never
/// reached its topic (F3: now 413 before anything is stored), the virtual clock could be moved backwards (F5: now
/// 409), and a bad query got a plain-text 400 (now JSON, through weir's router as `weir up` serves the routes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_store_nothing_and_the_clock_never_goes_back() {
    let (dir, broker) = scratch_broker();
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let (routes, host) = start(&broker, &store, &[]).await;
    let app =
        weir_http::router_with(broker.clone(), weir_http::HttpConfig::new("127.0.0.1:0".parse().unwrap()), routes);
    let rows = || async {
        sqlx::query("SELECT COUNT(*) FROM wedding_events").fetch_one(store.pool()).await.unwrap().get::<i64, _>(0)
    };
    let (s, _) = call(&app, Method::POST, "/api/wedding/start", Some(json!({"clock": "virtual"}))).await;
    assert_eq!(s, 200);

    let huge = "d".repeat(2_000_000);
    let (s, e) = call(
        &app,
        Method::POST,
        "/message",
        Some(json!({"event_type": "bride", "priority": "Low", "description": huge})),
    )
    .await;
    assert_eq!(s, 413, "{e}");
    assert!(e["message"].as_str().unwrap().contains("max.message.bytes"), "{e}");
    let batch = json!([
        {"event_type": "brawl", "priority": "low", "description": "fine"},
        {"event_type": "bride", "priority": "low", "description": "d".repeat(1_000_000)},
    ]);
    let (s, _) = call(&app, Method::POST, "/api/wedding/events", Some(batch)).await;
    assert_eq!(s, 413, "a batch with one oversized event is refused whole");
    assert_eq!(rows().await, 0, "nothing of a refused request is stored");

    let (s, _) = call(
        &app,
        Method::POST,
        "/message",
        Some(json!({"event_type": "brawl", "priority": "low", "timestamp": 1000})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(rows().await, 1);

    let (s, a) = call(&app, Method::POST, "/api/wedding/advance", Some(json!({"to": 60_000}))).await;
    assert_eq!(s, 200, "{a}");
    let (s, e) = call(&app, Method::POST, "/api/wedding/advance", Some(json!({"to": 1000}))).await;
    assert_eq!(s, 409, "{e}");
    assert!(e["message"].as_str().unwrap().contains("never goes back"), "{e}");
    let (s, a) = call(&app, Method::POST, "/api/wedding/advance", Some(json!({"to": 60_000}))).await;
    assert_eq!(s, 200, "advancing to where the clock is stays possible: {a}");
    assert_eq!(a["now"], 60_000, "{a}");

    let (s, body) = call(&app, Method::GET, "/api/wedding/report?run=abc", None).await;
    assert_eq!(s, 400);
    assert!(body.is_object(), "a bad query is answered in JSON: {body}");
    assert_eq!(body["error_code"], 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("run"), "{body}");
    stop(host).await;
    broker.shutdown();
}

/// `POST /api/wedding/simulate` (the web console's "start a simulated run"): a random wedding driven in the background
/// on a virtual clock finishes with the in-process model's outcome, its progress in the report and the runs list;
/// a second one is refused while it goes, and bad settings are refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_run_started_over_http_finishes_with_the_models_outcome() {
    use weir_wedding::rules::Rules;
    use weir_wedding::schedule::{simulate, Policy};
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path().join("data"));
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let (app, host) = start(&broker, &store, &[]).await;
    let (s, none) = call(&app, Method::GET, "/api/wedding/runs", None).await;
    assert_eq!((s, none), (StatusCode::OK, json!({"runs": []})));
    for bad in [json!({"events": 0}), json!({"speed": -1}), json!({"speed": "fast"}), json!({"policy": "lifo"})] {
        let (s, e) = call(&app, Method::POST, "/api/wedding/simulate", Some(bad.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }

    let body = json!({"events": 150, "seed": 11, "speed": "max", "policy": "edf"});
    let (s, started) = call(&app, Method::POST, "/api/wedding/simulate", Some(body.clone())).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    let run = started["run"].as_i64().unwrap();
    assert_eq!(
        (started["simulation"]["events"].as_u64(), started["simulation"]["seed"].as_u64()),
        (Some(150), Some(11))
    );
    let (s, busy) = call(&app, Method::POST, "/api/wedding/simulate", Some(body)).await;
    assert_eq!(s, StatusCode::CONFLICT, "a second simulated run while the first goes: {busy}");
    let (_, runs) = call(&app, Method::GET, "/api/wedding/runs?limit=5", None).await;
    assert_eq!((runs["runs"][0]["run"].as_i64(), runs["runs"][0]["clock"].as_str()), (Some(run), Some("virtual")));

    let deadline = Instant::now() + Duration::from_secs(120);
    let summary = loop {
        let (_, summary) = call(&app, Method::GET, &format!("/api/wedding/report?run={run}&summary=true"), None).await;
        if summary["simulation"]["finished"] == true {
            break summary;
        }
        assert!(Instant::now() < deadline, "the simulated run did not finish: {summary}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(summary["simulation"]["error"], Value::Null, "{summary}");
    assert_eq!((summary["simulation"]["sent"].as_u64(), summary["open"].as_u64()), (Some(150), Some(0)), "{summary}");
    let (_, report) = call(&app, Method::GET, &format!("/api/wedding/report?run={run}"), None).await;
    let rules = Rules::default();
    let events = weir_wedding::dataset::generate(150, rules.wedding_length, 11);
    let model = weir_wedding::report::report(&rules, &events, &simulate(&rules, &events, Policy::Edf), Policy::Edf);
    assert_eq!((report["events"].as_u64(), report["stress"].as_u64()), (Some(150), Some(model.stress as u64)));
    assert_eq!(report["upper_bound"].as_u64(), Some(model.upper_bound as u64), "the optimum is the model's");
    stop(host).await;
    broker.shutdown();
}
