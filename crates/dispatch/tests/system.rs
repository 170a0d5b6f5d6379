//! Dispatch as a system on a `Host` (embedded bus, SQLite and PostgreSQL): reviewers come online, events are written
//! through the API, relayed to `events.outbound` once each and assigned within the cap; settling answers 200, then
//! 409; unknown is 404, a bad body 400 naming the field; an ended session's assignments go to the others; the
//! results come back through `events.inbound` to the events' state; the seed's root paths and Redis-style hashes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use weir_dispatch::DispatchSystem;
use weir_http::testing::call;
use weir_runtime::kv::{KvStore, SqlKv};
use weir_runtime::{Bus, EmbeddedBus, Host, SqlStore, SystemSettings};

async fn wait_for(routes: &axum::Router, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stats) = call(routes, Method::GET, "/api/dispatch/stats", None).await;
        if ok(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{what}: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn flow(database: Option<String>) {
    let (dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    let url = database.unwrap_or_else(|| SqlStore::sqlite_url(dir.path()));
    let store = SqlStore::connect(&url).await.unwrap();
    let mut host = Host::new(bus.clone(), store.clone(), Arc::new(SqlKv::new(store.clone())));
    let flags = vec![("max_open_per_user".to_string(), "10".to_string())];
    let settings = SystemSettings::layered("dispatch", &[], None, Vec::new(), &flags);
    let routes = host.start(&DispatchSystem, settings).await.unwrap();

    // Bad requests name what is wrong and write nothing.
    let (status, body) = call(
        &routes,
        Method::POST,
        "/api/dispatch/events",
        Some(json!([{"region": "EU", "ruleType": "x", "severity": 2}])),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("[0].ruleType"), "{body}");
    let (status, body) = call(
        &routes,
        Method::POST,
        "/api/dispatch/events",
        Some(json!([{"region": "EU", "ruleType": "face_detection", "severity": 9}])),
    )
    .await;
    assert_eq!((status, body["error_code"].clone()), (StatusCode::BAD_REQUEST, json!(400)), "{body}");

    for u in 0..5 {
        let (status, body) = call(&routes, Method::POST, &format!("/api/dispatch/users/u{u}/active"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // 80 events: room for 50 (5 reviewers × 10); the other 30 wait.
    let (status, body) = call(&routes, Method::POST, "/api/dispatch/events", Some(json!({"generate": 60}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let one = json!([{"region": "APAC", "ruleType": "intrusion_detection", "location": "lobby", "severity": 5,
                      "deviceId": "device_7", "cameraId": "camera_3", "frameReference": "frame_1_1"}]);
    for _ in 0..20 {
        let (status, body) = call(&routes, Method::POST, "/api/dispatch/events", Some(one.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Assigned as the relay learns it back, and the rest received by the assignment service, waiting.
    let stats = wait_for(&routes, "50 assigned", |s| s["events"]["Assigned"] == 50 && s["waiting"] == 30).await;
    assert_eq!(stats["events"]["Not Viewed"], 30, "{stats}");
    for u in 0..5 {
        assert_eq!(stats["users"][format!("u{u}")]["open"], 10, "{stats}");
    }

    // Settling: 200, then 409; unknown 404; bad status 400.
    let (_, mine) = call(&routes, Method::GET, "/api/dispatch/users/u0/assignments", None).await;
    assert_eq!(mine["open"], 10, "{mine}");
    let id = mine["assignments"][0]["assignmentId"].as_str().unwrap().to_string();
    let path = format!("/api/dispatch/assignments/{id}");
    let (status, body) = call(&routes, Method::PUT, &path, Some(json!({"status": "completed"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&routes, Method::PUT, &path, Some(json!({"status": "approved"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) =
        call(&routes, Method::PUT, "/api/dispatch/assignments/nope", Some(json!({"status": "approved"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(&routes, Method::PUT, &path, Some(json!({"status": "pending"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The freed slot is filled from the waiting events.
    wait_for(&routes, "u0 back to 10", |s| s["users"]["u0"]["open"] == 10 && s["waiting"] == 29).await;

    // u1 leaves: its 10 go to the others only when they have room; u0 settles all, so they go to u0.
    let (status, _) = call(&routes, Method::DELETE, "/api/dispatch/users/u1/active", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, mine) = call(&routes, Method::GET, "/api/dispatch/users/u0/assignments", None).await;
    for a in mine["assignments"].as_array().unwrap() {
        let path = format!("/api/dispatch/assignments/{}", a["assignmentId"].as_str().unwrap());
        let (status, body) = call(&routes, Method::PUT, &path, Some(json!({"status": "rejected"}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The results come back through events.inbound to the relay's table: 1 completed, 10 rejected, and 40 open.
    let stats = wait_for(&routes, "u1's taken back, u0 full again, the results applied", |s| {
        s["users"]["u1"]["open"] == 0
            && s["users"]["u0"]["open"] == 10
            && s["events"]["Completed"] == 1
            && s["events"]["Rejected"] == 10
            && s["events"]["Assigned"] == 40
    })
    .await;
    assert_eq!(stats["users"]["u1"]["active"], false, "{stats}");
    assert_eq!(stats["events"]["Not Viewed"], 29, "{stats}");
    assert_eq!(stats["waiting"], 29, "{stats}");
    assert!(stats["timeToAssignmentMs"]["p99"].as_i64().is_some(), "{stats}");

    // The seed's own paths at the root: a reviewer's queue and settling.
    let (status, mine) = call(&routes, Method::GET, "/users/u4/assignments", None).await;
    assert_eq!((status, mine["open"].clone(), mine["active"].clone()), (StatusCode::OK, json!(10), json!(true)));
    let path = format!("/assignments/{}", mine["assignments"][0]["assignmentId"].as_str().unwrap());
    let (status, body) = call(&routes, Method::PUT, &path, Some(json!({"status": "approved"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(&routes, Method::DELETE, "/users/u4/active", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&routes, Method::DELETE, "/users/u4/active", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no session any more");
    wait_for(&routes, "the approval applied", |s| s["events"]["Approved"] == 1).await;

    // The seed's hashes, for tools that read them: who is active (until when), and open counts.
    let kv = SqlKv::new(store.clone());
    let active: Vec<String> = kv.hgetall("active_users").await.unwrap().into_iter().map(|(u, _)| u).collect();
    assert!(active.contains(&"u0".to_string()) && !active.contains(&"u1".to_string()), "{active:?}");
    let counts = kv.hgetall("user_assignments").await.unwrap();
    let u1 = counts.iter().find(|(u, _)| u == "u1").map(|(_, n)| n.clone());
    assert_eq!(u1.as_deref(), Some(&b"0"[..]), "{counts:?}");

    // Every event on events.outbound once.
    let ends: i64 = (0..4).map(|p| broker.offsets("events.outbound", p).unwrap().1).sum();
    assert_eq!(ends, 80);
    for (name, end) in host.stop(Duration::from_secs(5)).await {
        assert!(matches!(end, weir_runtime::system::TaskEnd::Finished), "{name}: {end:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewers_get_events_within_the_cap_and_settle_them_on_sqlite() {
    flow(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewers_get_events_within_the_cap_and_settle_them_on_postgres() {
    flow(Some(weir_runtime::testing::fresh_postgres().await)).await;
}

/// A reviewer idle for the TTL loses their session and their open assignments go to those still active, on a test
/// clock; a refreshed session keeps them. With sessions in memory, in the embedded store and in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_after_the_ttl_and_its_assignments_go_to_the_others() {
    use weir_dispatch::assign::{self, Rules};
    use weir_dispatch::sessions::Sessions;
    use weir_dispatch::system::{expire_once, Dispatch};
    use weir_dispatch::DispatchSettings;
    use weir_runtime::kv::{MemoryKv, RedisKv};

    const NOW: i64 = 1_764_576_000_000;
    let dir = tempfile::tempdir().unwrap();
    let redis_url = std::env::var("WEIR_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let redis = RedisKv::connect(&redis_url, format!("weir-dispatch-test-{}:", rand::random::<u32>()))
        .await
        .unwrap_or_else(|e| panic!("Redis is required at {redis_url} (run scripts/test.sh, which starts it): {e}"));
    let kvs: Vec<(&str, Arc<dyn KvStore>, SqlStore)> = {
        let mut out: Vec<(&str, Arc<dyn KvStore>, SqlStore)> = Vec::new();
        for (name, i) in [("memory", 0), ("embedded", 1), ("redis", 2)] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(&path).unwrap();
            let store = SqlStore::connect(&SqlStore::sqlite_url(&path)).await.unwrap();
            weir_dispatch::store::migrate(&store).await.unwrap();
            let kv: Arc<dyn KvStore> = match i {
                0 => Arc::new(MemoryKv::default()),
                1 => Arc::new(SqlKv::new(store.clone())),
                _ => Arc::new(redis.clone()),
            };
            out.push((name, kv, store));
        }
        out
    };
    for (name, kv, store) in kvs {
        let settings = DispatchSettings::default();
        let ttl = settings.ttl_ms();
        let d = Dispatch {
            store: store.clone(),
            sessions: Sessions::new(kv.clone(), ttl),
            settings,
            outbox: Default::default(),
            wake: Default::default(),
            recent: Default::default(),
        };
        for u in ["a", "b"] {
            assign::register(&store, u, None).await.unwrap();
            d.sessions.start(u, None, 0, NOW).await.unwrap();
        }
        // Another instance's view, kept between readings: whatever this one starts or ends, its next one sees.
        let other = Sessions::new(kv.clone(), ttl);
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert_eq!(sorted(other.active_recent(NOW).await.unwrap()), ["a", "b"], "{name}");
        d.sessions.start("c", None, 0, NOW).await.unwrap();
        assert_eq!(sorted(other.active_recent(NOW).await.unwrap()), ["a", "b", "c"], "{name}: a start elsewhere");
        assert!(d.sessions.end("c").await.unwrap());
        assert_eq!(sorted(other.active_recent(NOW).await.unwrap()), ["a", "b"], "{name}: an end elsewhere");
        assert!(other.active_recent(NOW + ttl).await.unwrap().is_empty(), "{name}: the TTL, with nothing changed");
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
        let mut tx = store.begin().await.unwrap();
        for e in weir_dispatch::events::generate(4, NOW, &mut rng) {
            assign::receive(&mut tx, store.dialect(), &e.outbound(), NOW).await.unwrap();
        }
        tx.commit().await.unwrap();
        let active = d.sessions.active(NOW).await.unwrap();
        let made = assign::assign_waiting(&store, Rules::default(), &active, NOW, 10).await.unwrap();
        assert_eq!(made.len(), 4, "{name}");
        // b is active at 200 s (refreshed); a is not.
        d.sessions.start("b", None, 2, NOW + 200_000).await.unwrap();
        assert_eq!(expire_once(&d, NOW + ttl - 1).await.unwrap(), 0, "{name}: nobody's TTL has passed");
        assert_eq!(expire_once(&d, NOW + ttl).await.unwrap(), 2, "{name}: a's two taken back");
        assert_eq!(d.sessions.active(NOW + ttl).await.unwrap(), ["b"], "{name}");
        assert!(d.sessions.ended(NOW + ttl).await.unwrap().is_empty(), "{name}: a's session unlisted");
        let active = d.sessions.active(NOW + ttl).await.unwrap();
        let again = assign::assign_waiting(&store, Rules::default(), &active, NOW + ttl, 10).await.unwrap();
        assert_eq!(again.items.iter().filter(|a| a.user_id == "b").count(), 2, "{name}: {again:?}");
        // Then b's TTL passes too: all four wait again, none lost.
        assert_eq!(expire_once(&d, NOW + 200_000 + ttl).await.unwrap(), 4, "{name}");
        assert_eq!(assign::waiting(&store).await.unwrap(), 4, "{name}");
    }
}

/// Two dispatch instances (two hosts on one bus, one PostgreSQL database and one session store, as two `weir up
/// --bus kafka://` would be), 20 reviewers, 5,000 events written through both: nobody above 50 open at any moment
/// (watched in SQL), loads within one of each other while everyone has room, 1,000 assigned, the rest waiting,
/// nothing assigned twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_hold_the_cap_and_share_fairly() {
    use sqlx::Row;
    let (_dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker.clone()));
    let store = SqlStore::connect(&weir_runtime::testing::fresh_postgres().await).await.unwrap();
    let kv: Arc<dyn KvStore> = Arc::new(SqlKv::new(store.clone()));
    let mut hosts = Vec::new();
    let mut apis = Vec::new();
    for _ in 0..2 {
        // Each instance its own connections, as another process would have.
        let own = SqlStore::connect(store.url()).await.unwrap();
        let mut host = Host::new(bus.clone(), own, kv.clone());
        let settings = SystemSettings::layered("dispatch", &[], None, Vec::new(), &[]);
        apis.push(host.start(&DispatchSystem, settings).await.unwrap());
        hosts.push(host);
    }
    let watching = tokio::sync::watch::channel(false);
    let checker = {
        let (store, mut done) = (store.clone(), watching.1.clone());
        tokio::spawn(async move {
            let (mut highest, mut worst_spread) = (0i64, 0i64);
            while !*done.borrow() {
                let rows =
                    sqlx::query("SELECT user_id, COUNT(*) FROM assignments WHERE status = 'open' GROUP BY user_id")
                        .fetch_all(store.pool())
                        .await
                        .unwrap();
                let loads: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>(1)).collect();
                let (max, min) = (loads.iter().copied().max().unwrap_or(0), loads.iter().copied().min().unwrap_or(0));
                highest = highest.max(max);
                if loads.len() == 20 && max < 50 {
                    worst_spread = worst_spread.max(max - min);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                    _ = done.changed() => {}
                }
            }
            (highest, worst_spread)
        })
    };
    for u in 0..20 {
        let (status, body) = call(&apis[u % 2], Method::POST, &format!("/users/r{u:02}/active"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for i in 0..10 {
        let (status, body) =
            call(&apis[i % 2], Method::POST, "/api/dispatch/events", Some(json!({"generate": 500}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let stats = wait_for(&apis[0], "1,000 assigned, 4,000 waiting", |s| {
        s["assignedTotal"] == 1000 && s["waiting"] == 4000 && s["events"]["Assigned"] == 1000
    })
    .await;
    // A moment more: nothing else moves.
    tokio::time::sleep(Duration::from_millis(600)).await;
    watching.0.send(true).unwrap();
    let (highest, spread) = checker.await.unwrap();
    assert!(highest <= 50, "a reviewer held {highest} open assignments");
    assert!(spread <= 1, "loads {spread} apart while everyone had room");
    let (_, now) = call(&apis[1], Method::GET, "/api/dispatch/stats", None).await;
    assert_eq!(now["assignedTotal"], 1000, "{now}");
    for u in 0..20 {
        assert_eq!(stats["users"][format!("r{u:02}")]["open"], 50, "{stats}");
    }
    let twice: i64 = sqlx::query(
        "SELECT COUNT(*) FROM (SELECT event_id FROM assignments GROUP BY event_id HAVING COUNT(*) > 1) AS t",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
    .get(0);
    assert_eq!(twice, 0, "an event assigned twice");
    let ends: i64 = (0..4).map(|p| broker.offsets("events.outbound", p).unwrap().1).sum();
    assert_eq!(ends, 5000, "each event published once");
    for host in hosts {
        for (name, end) in host.stop(Duration::from_secs(5)).await {
            assert!(matches!(end, weir_runtime::system::TaskEnd::Finished), "{name}: {end:?}");
        }
    }
}
