//! The waitroom as a system on a `Host` (embedded bus; the embedded key-value store and Redis): joins queue by
//! priority then arrival; refusals answer as the seed lists them (409, 403, 503, 404, 410, 400 naming the field);
//! admission holds the release rate and the checkout maximum, checked from the published `queue.ready` events;
//! checkout outcomes settle sessions once and invalidate their tokens; a checkout that runs out is expired by the
//! waitroom, which publishes `checkout.expired`; bad outcomes go to the DLQ; two instances sharing Redis never
//! over-admit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use weir_broker::Broker;
use weir_http::testing::call;
use weir_runtime::kv::{JournalKv, JournalOptions, KvStore, RedisKv, SqlKv};
use weir_runtime::{Bus, EmbeddedBus, Host, OutgoingMessage, SqlStore, SystemSettings};
use weir_waitroom::WaitroomSystem;

/// The settings with `flags`; no gRPC listener unless one is named (tests run side by side).
fn settings(flags: &[(&str, &str)]) -> SystemSettings {
    let flags: Vec<(String, String)> =
        [("grpc_listen", "none")].iter().chain(flags).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    SystemSettings::layered("waitroom", &[], None, Vec::new(), &flags)
}

async fn redis(prefix: &str) -> Arc<dyn KvStore> {
    let url = std::env::var("WEIR_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let kv = RedisKv::connect(&url, format!("weir-test-{prefix}-{}:", rand::random::<u32>()))
        .await
        .unwrap_or_else(|e| panic!("Redis is required at {url} (scripts/test.sh starts it): {e}"));
    Arc::new(kv)
}

async fn join(routes: &axum::Router, user: &str, event: &str, priority: u8) -> (StatusCode, Value) {
    let body = json!({"user_id": user, "event_id": event, "priority": priority});
    call(routes, Method::POST, "/api/v1/waitroom/join", Some(body)).await
}

async fn status(routes: &axum::Router, id: &str) -> (StatusCode, Value) {
    call(routes, Method::GET, &format!("/api/v1/waitroom/status/{id}"), None).await
}

/// Every record of `topic` as (timestamp, JSON value, key).
async fn published(broker: &Arc<Broker>, topic: &str) -> Vec<(i64, Value, String)> {
    weir_broker::testing::read_committed(broker, topic)
        .await
        .into_iter()
        .map(|r| {
            let v = serde_json::from_slice(r.value.as_deref().unwrap_or_default()).unwrap();
            (r.timestamp, v, String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
        })
        .collect()
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, secs: u64, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn flow(kv: impl FnOnce(&SqlStore) -> Arc<dyn KvStore>) {
    let (dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let mut host = Host::new(bus.clone(), store.clone(), kv(&store));
    // Admission is held back (disabled) while the queue fills, so positions can be checked.
    let routes = host.start(&WaitroomSystem, settings(&[("process_interval", "100ms")])).await.unwrap();
    let (s, cfg) = call(&routes, Method::GET, "/api/v1/waitroom/events/concert/config", None).await;
    assert_eq!(
        (s, cfg),
        (
            StatusCode::OK,
            json!({"enabled": true, "release_rate": 10, "max_concurrent": 100, "capacity": 100000, "paused": false})
        )
    );
    let (s, cfg) = call(
        &routes,
        Method::POST,
        "/api/v1/waitroom/events/concert/config",
        Some(json!({"enabled": false, "release_rate": 3, "max_concurrent": 5, "capacity": 12})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{cfg}");

    // Disabled: 403. Bad bodies: 400 naming the field.
    assert_eq!(join(&routes, "u0", "concert", 0).await.0, StatusCode::FORBIDDEN);
    for (body, field) in [
        (json!({"event_id": "concert"}), "user_id"),
        (json!({"user_id": "u", "event_id": "concert", "priority": 11}), "priority"),
        (json!({"user_id": "u", "event_id": "a b"}), "event_id"),
        (json!({"user_id": 7, "event_id": "concert"}), "user_id"),
    ] {
        let (s, b) = call(&routes, Method::POST, "/api/v1/waitroom/join", Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(b["error"].as_str().unwrap().starts_with(field), "{b}");
    }
    let (s, b) = call(&routes, Method::POST, "/api/v1/waitroom/events/concert/config", Some(json!({"rate": 1}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // Joins open, admission paused (the sale has not started): positions can be checked.
    let open = json!({"enabled": true, "paused": true});
    call(&routes, Method::POST, "/api/v1/waitroom/events/concert/config", Some(open)).await;
    // Priorities: 0 (10 users), then 5 (1 user), then a VIP (10): the VIP goes first, then the 5, then FIFO.
    let mut ids = BTreeMap::new();
    for i in 0..10 {
        let (s, b) = join(&routes, &format!("u{i}"), "concert", 0).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert!(b["websocket_url"].as_str().unwrap().ends_with(b["session_id"].as_str().unwrap()));
        ids.insert(format!("u{i}"), b["session_id"].as_str().unwrap().to_string());
    }
    let (s, b) = join(&routes, "mid", "concert", 5).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    ids.insert("mid".into(), b["session_id"].as_str().unwrap().to_string());
    let (s, b) = join(&routes, "vip", "concert", 10).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    ids.insert("vip".into(), b["session_id"].as_str().unwrap().to_string());
    // Full at 12: 503. A second join of one user: 409.
    assert_eq!(join(&routes, "late", "concert", 0).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (s, b) = join(&routes, "u3", "concert", 0).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    // Unknown: 404.
    assert_eq!(status(&routes, "nope").await.0, StatusCode::NOT_FOUND);

    // Positions: VIP, mid, u0..u9.
    let order: Vec<String> =
        ["vip", "mid"].iter().map(|s| s.to_string()).chain((0..10).map(|i| format!("u{i}"))).collect();
    for (i, user) in order.iter().enumerate() {
        let v = status(&routes, &ids[user]).await.1;
        assert_eq!((v["position"].clone(), v["queue_length"].clone()), (json!(i + 1), json!(12)), "{user}: {v}");
    }
    // The sale starts: three a round, at most five in checkout.
    call(&routes, Method::POST, "/api/v1/waitroom/events/concert/config", Some(json!({"paused": false}))).await;
    wait_until("five admitted", 20, || async {
        call(&routes, Method::GET, "/api/v1/waitroom/events/concert/stats", None).await.1["in_checkout"] == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut tokens = BTreeMap::new();
    for (i, user) in order.iter().enumerate() {
        let (s, v) = status(&routes, &ids[user]).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if i < 5 {
            assert_eq!(v["status"], "admitted", "{user}: {v}");
            assert!(v["checkout_url"].as_str().unwrap().contains(&ids[user]), "{v}");
            tokens.insert(user.clone(), v["checkout_token"].as_str().unwrap().to_string());
        } else {
            assert_eq!((v["status"].clone(), v["position"].clone()), (json!("queued"), json!(i as i64 - 4)), "{user}");
            assert!(v["estimated_wait_seconds"].is_u64(), "{v}");
            assert!(v.get("checkout_token").is_none(), "{v}");
        }
    }
    // The token checks; a made-up one does not.
    let (s, b) =
        call(&routes, Method::POST, "/api/v1/waitroom/checkout/verify", Some(json!({"token": tokens["vip"]}))).await;
    assert_eq!((s, b["claims"]["session_id"].clone()), (StatusCode::OK, json!(ids["vip"])), "{b}");
    let (s, _) = call(&routes, Method::POST, "/api/v1/waitroom/checkout/verify", Some(json!({"token": "x.y.z"}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Outcomes from checkout: vip completed (twice: applied once), mid failed; a bad record and an unknown session
    // go to the DLQ. Their slots free up for u3 and u4.
    let outcome = |topic: &str, id: &str| {
        OutgoingMessage::new(
            topic,
            json!({"session_id": id, "user_id": "x", "event_id": "concert",
            "timestamp": "2024-10-02T10:00:00Z", "order_id": "order-1", "amount": 150.0})
            .to_string(),
        )
        .key("concert")
    };
    bus.produce_all(vec![
        outcome("checkout.completed", &ids["vip"]),
        outcome("checkout.completed", &ids["vip"]),
        outcome("checkout.failed", &ids["mid"]),
        OutgoingMessage::new("checkout.failed", "not json").key("concert"),
        outcome("checkout.completed", "no-such-session"),
    ])
    .await
    .unwrap();
    wait_until("vip completed", 20, || async { status(&routes, &ids["vip"]).await.1["status"] == "completed" }).await;
    wait_until("mid failed", 20, || async { status(&routes, &ids["mid"]).await.1["status"] == "failed" }).await;
    wait_until("u4 admitted", 20, || async { status(&routes, &ids["u4"]).await.1["status"] == "admitted" }).await;
    let (s, b) =
        call(&routes, Method::POST, "/api/v1/waitroom/checkout/verify", Some(json!({"token": tokens["vip"]}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a settled session's token: {b}");
    // The user may join again once settled.
    assert_eq!(join(&routes, "vip", "concert", 10).await.0, StatusCode::CREATED);
    wait_until("two dead letters", 20, || {
        let broker = broker.clone();
        async move {
            published_raw(&broker, "checkout.failed.dlq").await + published_raw(&broker, "checkout.completed.dlq").await
                == 2
        }
    })
    .await;

    // Leaving: a queued session leaves the queue (its place goes), then leaving again is 409.
    let (s, b) = call(&routes, Method::DELETE, &format!("/api/v1/waitroom/leave/{}", ids["u9"]), None).await;
    assert_eq!((s, b["status"].clone()), (StatusCode::OK, json!("abandoned")), "{b}");
    let (s, _) = call(&routes, Method::DELETE, &format!("/api/v1/waitroom/leave/{}", ids["u9"]), None).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Every queue.ready: keyed by the event, with a token, and never more than 3 admitted within any 100 ms.
    let ready = published(&broker, "queue.ready").await;
    assert!(ready.len() >= 7, "{ready:?}");
    assert!(ready.iter().all(|(_, v, k)| k == "concert" && v["checkout_token"].is_string()));
    assert_rate(&ready, 100, 3);
    let joined = published(&broker, "queue.joined").await;
    assert_eq!(joined.len(), 13);
    assert_eq!(joined[11].1["priority"], 10);
    let left = published(&broker, "queue.left").await;
    assert_eq!(left.iter().filter(|(_, v, _)| v["reason"] == "user_left").count(), 1, "{left:?}");
    host.stop(Duration::from_secs(10)).await;
}

/// At most `rate` admissions (`admitted_at` of `queue.ready`) within any window just under `interval_ms`.
fn assert_rate(ready: &[(i64, Value, String)], interval_ms: i64, rate: usize) {
    let mut at: Vec<i64> = ready
        .iter()
        .map(|(_, v, _)| {
            let t = chrono::DateTime::parse_from_rfc3339(v["admitted_at"].as_str().unwrap()).unwrap();
            t.timestamp_micros()
        })
        .collect();
    at.sort_unstable();
    for (i, t) in at.iter().enumerate() {
        let within = at[i..].iter().take_while(|u| **u < t + interval_ms * 1000 - 1000).count();
        assert!(within <= rate, "{within} admitted within {interval_ms} ms of {t} µs (rate {rate})");
    }
}

async fn published_raw(broker: &Arc<Broker>, topic: &str) -> usize {
    if broker.describe_topic(topic).is_err() {
        return 0;
    }
    weir_broker::testing::read_committed(broker, topic).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waitroom_queues_admits_and_settles_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let kv: Arc<dyn KvStore> = Arc::new(JournalKv::open(dir.path(), JournalOptions::default()).unwrap());
    flow(move |_| kv).await;
}

/// The store `weir up` keeps the sessions in with `--database postgres://...` and no `--redis` (here on SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waitroom_queues_admits_and_settles_on_the_sql_tables() {
    flow(|store| Arc::new(SqlKv::new(store.clone()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waitroom_queues_admits_and_settles_on_redis() {
    let kv = redis("flow").await;
    flow(move |_| kv).await;
}

/// A checkout that runs past its token's expiry with no outcome is expired by the waitroom: the session says so
/// (410), its slot goes to the next, and `checkout.expired` is published for the checkout side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_that_runs_out_is_expired_and_published() {
    let (dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let mut host = Host::new(bus, store.clone(), Arc::new(SqlKv::new(store)));
    let flags = [("process_interval", "100ms"), ("jwt_expiry", "1s"), ("max_concurrent", "1"), ("jwt_secret", "s3")];
    let routes = host.start(&WaitroomSystem, settings(&flags)).await.unwrap();
    let (_, a) = join(&routes, "a", "show", 0).await;
    let (_, b) = join(&routes, "b", "show", 0).await;
    let (a, b) = (a["session_id"].as_str().unwrap().to_string(), b["session_id"].as_str().unwrap().to_string());
    wait_until("a admitted", 10, || async { status(&routes, &a).await.1["status"] == "admitted" }).await;
    assert_eq!(status(&routes, &b).await.1["position"], 1, "one in checkout at most");
    wait_until("a expired", 10, || async { status(&routes, &a).await.0 == StatusCode::GONE }).await;
    wait_until("b admitted", 10, || async { status(&routes, &b).await.1["status"] == "admitted" }).await;
    let expired = published(&broker, "checkout.expired").await;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!((expired[0].1["session_id"].as_str(), expired[0].2.as_str()), (Some(a.as_str()), "show"));
    host.stop(Duration::from_secs(10)).await;
}

/// `kafka_enabled = false`: no topics, no events; joining and admission still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kafka_the_room_runs_and_publishes_nothing() {
    let (dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let mut host = Host::new(bus, store.clone(), Arc::new(SqlKv::new(store)));
    let routes = host
        .start(&WaitroomSystem, settings(&[("kafka_enabled", "false"), ("process_interval", "100ms")]))
        .await
        .unwrap();
    let (s, j) = join(&routes, "a", "show", 0).await;
    assert_eq!(s, StatusCode::CREATED, "{j}");
    let id = j["session_id"].as_str().unwrap().to_string();
    wait_until("admitted", 10, || async { status(&routes, &id).await.1["status"] == "admitted" }).await;
    let (_, h) = call(&routes, Method::GET, "/api/v1/waitroom/health", None).await;
    assert_eq!(h["kafka_enabled"], false, "{h}");
    assert!(broker.list_topics().is_empty(), "{:?}", broker.list_topics());
    host.stop(Duration::from_secs(10)).await;
}

/// Two instances sharing Redis, 300 users of three priorities joining through both: the admission lease lets one
/// instance admit per event, so at no moment are more than `max_concurrent` in checkout, each round admits at most
/// the release rate, everyone is admitted once, and within a priority in the order they joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_never_over_admit_and_keep_the_order() {
    let (dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    let kv = redis("two").await;
    let flags = [("process_interval", "50ms"), ("release_rate", "7"), ("max_concurrent", "20"), ("jwt_secret", "k")];
    let mut hosts = Vec::new();
    let mut apis = Vec::new();
    for i in 0..2 {
        // Each instance its own embedded database (its outbox), as two `weir up` would have; Redis is shared.
        let own = dir.path().join(format!("i{i}"));
        std::fs::create_dir_all(&own).unwrap();
        let store = SqlStore::connect(&SqlStore::sqlite_url(&own)).await.unwrap();
        let mut host = Host::new(bus.clone(), store, kv.clone());
        apis.push(host.start(&WaitroomSystem, settings(&flags)).await.unwrap());
        hosts.push(host);
    }
    // Checkout completes whatever is admitted, through the bus, 30 ms after it sees queue.ready.
    let done = tokio::sync::watch::channel(false);
    let checkout = {
        let (broker, bus, mut stop) = (broker.clone(), bus.clone(), done.1.clone());
        tokio::spawn(async move {
            let mut c = broker.consumer(weir_broker::ConsumerConfig::new(["queue.ready"])).unwrap();
            while !*stop.borrow_and_update() {
                for r in c.poll(Duration::from_millis(100)).await.unwrap() {
                    let v: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let m =
                        OutgoingMessage::new("checkout.completed", json!({"session_id": v["session_id"]}).to_string());
                    bus.produce(m).await.unwrap();
                }
            }
        })
    };
    // A watcher of the checkout set, every 5 ms.
    let watcher = {
        let (kv, mut stop) = (kv.clone(), done.1.clone());
        tokio::spawn(async move {
            let mut peak = 0;
            while !*stop.borrow_and_update() {
                peak = peak.max(kv.zcard("waitroom:final:processing").await.unwrap());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        })
    };
    let mut order = Vec::new();
    for i in 0..300 {
        let priority = [0u8, 5, 10][i % 3];
        let (s, b) = join(&apis[i % 2], &format!("user{i}"), "final", priority).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        order.push((priority, b["session_id"].as_str().unwrap().to_string()));
    }
    wait_until("everyone admitted", 90, || {
        let broker = broker.clone();
        async move { weir_broker::testing::read_committed(&broker, "queue.ready").await.len() >= 300 }
    })
    .await;
    let _ = done.0.send(true);
    checkout.await.unwrap();
    let ready = published(&broker, "queue.ready").await;
    let ids: Vec<String> = ready.iter().map(|(_, v, _)| v["session_id"].as_str().unwrap().to_string()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (300, 300), "each admitted once");
    // Within a priority, admitted in the order joined.
    for p in [0u8, 5, 10] {
        let joined: Vec<&String> = order.iter().filter(|(q, _)| *q == p).map(|(_, id)| id).collect();
        let admitted: Vec<&String> = ids.iter().filter(|id| joined.contains(id)).collect();
        assert_eq!(admitted, joined, "priority {p}: FIFO");
    }
    let peak = watcher.await.unwrap();
    assert!((1..=20).contains(&peak), "in checkout at most max_concurrent: {peak}");
    assert_rate(&ready, 50, 7);
    for h in hosts {
        h.stop(Duration::from_secs(10)).await;
    }
}

/// A free local port for a listener the system binds itself.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The origin's gRPC API driven by a Python grpcio client generated from the repository's `.proto`: health, joins
/// (a duplicate refused with ALREADY_EXISTS, a bad priority with INVALID_ARGUMENT), an unknown session NOT_FOUND,
/// a status with its position, a position stream that follows the session until it is admitted and then closes,
/// and leaving (again: FAILED_PRECONDITION).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_joins_streams_and_leaves() {
    use std::io::BufRead;
    let (dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker));
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let mut host = Host::new(bus, store.clone(), Arc::new(SqlKv::new(store)));
    let addr = format!("127.0.0.1:{}", free_port());
    let routes =
        host.start(&WaitroomSystem, settings(&[("grpc_listen", &addr), ("process_interval", "100ms")])).await.unwrap();
    let (_, h) = call(&routes, Method::GET, "/api/v1/waitroom/health", None).await;
    assert_eq!(h["grpc"], json!(addr), "{h}");
    call(&routes, Method::POST, "/api/v1/waitroom/events/gig/config", Some(json!({"paused": true}))).await;

    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/grpc_client.py");
    let mut child = std::process::Command::new("python3")
        .args([script, proto, &addr, "gig"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with grpcio and grpcio-tools is required (scripts/test.sh installs them)");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let read = tokio::task::spawn_blocking(move || {
        out.read_line(&mut line).unwrap();
        (out, line)
    });
    let (mut out, line) =
        tokio::time::timeout(Duration::from_secs(60), read).await.expect("the client streams").unwrap();
    assert_eq!(line.trim(), "STREAMING", "{line}");
    // The stream has its first update; admission starts and the first session is let in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    call(
        &routes,
        Method::POST,
        "/api/v1/waitroom/events/gig/config",
        Some(json!({"paused": false, "release_rate": 1})),
    )
    .await;
    let result = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        let status = child.wait_with_output().unwrap();
        (rest, status)
    });
    let (rest, output) = tokio::time::timeout(Duration::from_secs(90), result).await.unwrap().unwrap();
    assert!(output.status.success(), "the client failed: {}", String::from_utf8_lossy(&output.stderr));
    let r: Value = serde_json::from_str(rest.trim()).unwrap_or_else(|e| panic!("{e}: {rest}"));
    assert_eq!(r["health"], json!({"status": "SERVING", "service": "waitroom", "kafka_enabled": true}), "{r}");
    assert_eq!((r["joined"][0]["position"].clone(), r["joined"][1]["position"].clone()), (json!(1), json!(2)), "{r}");
    assert!(r["joined"][0]["websocket_url"].as_str().unwrap().starts_with("/api/v1/waitroom/stream/"), "{r}");
    assert_eq!(
        (r["duplicate"].as_str(), r["bad_priority"].as_str(), r["unknown"].as_str()),
        (Some("ALREADY_EXISTS"), Some("INVALID_ARGUMENT"), Some("NOT_FOUND")),
        "{r}"
    );
    assert_eq!(r["status"]["status"], "SESSION_STATUS_QUEUED", "{r}");
    assert_eq!(r["status"]["position"], 2, "{r}");
    let updates = r["updates"].as_array().unwrap();
    assert_eq!(updates.first().unwrap()["position"], 1, "{r}");
    let last = updates.last().unwrap();
    assert_eq!((last["status"].as_str(), last["token"].as_bool()), (Some("SESSION_STATUS_READY"), Some(true)), "{r}");
    assert!(updates[..updates.len() - 1].iter().all(|u| u["status"] == "SESSION_STATUS_QUEUED"), "{r}");
    assert_eq!(
        (r["left"].as_str(), r["leave_again"].as_str()),
        (Some("Queue left successfully"), Some("FAILED_PRECONDITION")),
        "{r}"
    );
    host.stop(Duration::from_secs(10)).await;
}

/// The same API through the Rust client generated from the `.proto` (tonic), and reflection lists the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_client_sees_refusals_as_grpc_codes() {
    use weir_waitroom::grpc::pb;
    let (dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker));
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let mut host = Host::new(bus, store.clone(), Arc::new(SqlKv::new(store)));
    let addr = format!("127.0.0.1:{}", free_port());
    let routes = host.start(&WaitroomSystem, settings(&[("grpc_listen", &addr)])).await.unwrap();
    let off = json!({"enabled": false});
    call(&routes, Method::POST, "/api/v1/waitroom/events/closed/config", Some(off)).await;
    call(&routes, Method::POST, "/api/v1/waitroom/events/tiny/config", Some(json!({"capacity": 1, "paused": true})))
        .await;
    let mut client =
        pb::waitroom_service_client::WaitroomServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let join = |user: &str, event: &str| pb::JoinQueueRequest {
        user_id: user.into(),
        event_id: event.into(),
        ..Default::default()
    };
    let code = |r: Result<tonic::Response<pb::JoinQueueResponse>, tonic::Status>| r.map(|_| ()).unwrap_err().code();
    assert_eq!(code(client.join_queue(join("a", "closed")).await), tonic::Code::PermissionDenied);
    client.join_queue(join("a", "tiny")).await.unwrap();
    assert_eq!(code(client.join_queue(join("b", "tiny")).await), tonic::Code::ResourceExhausted);
    assert_eq!(code(client.join_queue(join("a b", "tiny")).await), tonic::Code::InvalidArgument);
    let health = client.health_check(pb::HealthCheckRequest {}).await.unwrap().into_inner();
    assert_eq!((health.status.as_str(), health.components.get("store").map(String::as_str)), ("SERVING", Some("ok")));
    host.stop(Duration::from_secs(10)).await;
}

/// Graceful degradation: the bus (weir's Kafka listener, reached as a Kafka cluster) is stopped; joins still answer
/// 201 and admission goes on, their events waiting in the outbox; when the bus is back on the same address, every
/// `queue.joined` and `queue.ready` arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_succeed_while_the_bus_is_down_and_their_events_follow() {
    use weir_kafka::{BackgroundBroker, ListenerConfig};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("broker");
    let bus_up = |addr: &str| {
        BackgroundBroker::start(weir_broker::testing::broker_config(&data), ListenerConfig::new(addr.parse().unwrap()))
            .unwrap()
    };
    let broker = bus_up("127.0.0.1:0");
    let addr = broker.addr.to_string();
    let bus: Arc<dyn Bus> = Arc::new(weir_runtime::KafkaBus::connect(&format!("kafka://{addr}")).unwrap());
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let mut host = Host::new(bus, store.clone(), Arc::new(SqlKv::new(store)));
    let routes = host.start(&WaitroomSystem, settings(&[("process_interval", "100ms")])).await.unwrap();
    let (s, _) = join(&routes, "before", "show", 0).await;
    assert_eq!(s, StatusCode::CREATED);
    wait_until("the first queue.joined", 30, || {
        let b = broker.broker.clone();
        async move { weir_broker::testing::read_committed(&b, "queue.joined").await.len() == 1 }
    })
    .await;

    drop(broker); // The bus is down.
    let mut during = Vec::new();
    for u in ["down-1", "down-2", "down-3"] {
        let (s, b) = join(&routes, u, "show", 0).await;
        assert_eq!(s, StatusCode::CREATED, "a join while the bus is down: {b}");
        during.push(b["session_id"].as_str().unwrap().to_string());
    }
    for id in &during {
        let id = id.clone();
        wait_until("admitted while the bus is down", 30, || async {
            status(&routes, &id).await.1["status"] == "admitted"
        })
        .await;
    }

    let broker = bus_up(&addr); // Back, on the same address and data.
    let b = broker.broker.clone();
    wait_until("every event after the bus came back", 90, || {
        let b = b.clone();
        async move {
            weir_broker::testing::read_committed(&b, "queue.joined").await.len() >= 4
                && weir_broker::testing::read_committed(&b, "queue.ready").await.len() >= 4
        }
    })
    .await;
    let joined = published(&b, "queue.joined").await;
    let ready = published(&b, "queue.ready").await;
    assert_eq!((joined.len(), ready.len()), (4, 4), "each event once");
    for id in &during {
        assert!(joined.iter().any(|(_, v, _)| v["session_id"] == json!(id)), "{id} joined");
        assert!(ready.iter().any(|(_, v, _)| v["session_id"] == json!(id)), "{id} admitted");
    }
    host.stop(Duration::from_secs(10)).await;
    drop(broker);
}
