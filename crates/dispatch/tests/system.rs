//! Dispatch as a system on a `Host` (embedded bus, SQLite and PostgreSQL): reviewers come online, events are written
//! through the API, relayed to `events.outbound` once each and assigned within the cap; settling answers 200, then
//! 409; unknown is 404, a bad body 400 naming the field; an ended session's assignments go to the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use weir_dispatch::DispatchSystem;
use weir_http::testing::call;
use weir_runtime::kv::SqlKv;
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
    let stats = wait_for(&routes, "50 assigned", |s| s["events"]["Assigned"] == 50).await;
    assert_eq!(stats["waiting"], 30, "{stats}");
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
    let stats = wait_for(&routes, "u1's taken back, u0 full again", |s| {
        s["users"]["u1"]["open"] == 0 && s["users"]["u0"]["open"] == 10
    })
    .await;
    assert_eq!(stats["users"]["u1"]["active"], false, "{stats}");
    assert_eq!(stats["events"]["Completed"], 1, "{stats}");
    assert_eq!(stats["events"]["Rejected"], 10, "{stats}");

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
