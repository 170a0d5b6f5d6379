//! Dispatch survives `kill -9`: a `weir up` is killed (SIGKILL) while the 20,000 events of `weir dispatch generate`
//! are being relayed and assigned and reviewers settle theirs, then started again on the same data. Afterwards every
//! event has reached the assignment service once and is assigned to one reviewer (open or settled) or waiting, none
//! lost, none assigned twice; every answered settlement kept; each reviewer's count true; and the relay's states
//! agree with the assignments. On SQLite with the embedded session store, and on PostgreSQL with Redis sessions.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Row;
use support::{start_instance, weir};
use weir_runtime::api_client::ApiTarget;
use weir_runtime::SqlStore;

const EVENTS: i64 = 20_000;
const USERS: usize = 40;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn stats(http: &str) -> Value {
    let (body, _) = support::curl_json(&[&format!("http://{http}/api/dispatch/stats")]);
    body
}

/// Settles assignments as reviewers would, round the users, until told to stop; counts those answered 200, and those
/// whose request failed without an answer (the weir killed: committed or not, nobody knows). Errors are expected
/// while the weir is down.
fn settler(http: Arc<Mutex<String>>, stop: Arc<AtomicBool>, settled: Arc<AtomicU64>, unanswered: Arc<AtomicU64>) {
    let rt = runtime();
    rt.block_on(async move {
        while !stop.load(Ordering::Relaxed) {
            for u in 0..USERS {
                let api = ApiTarget::Http(http.lock().unwrap().clone());
                let Ok((200, mine)) = api.exchange("GET", &format!("/users/u{u:02}/assignments"), &Value::Null).await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                for a in mine["assignments"].as_array().into_iter().flatten().take(3) {
                    let path = format!("/assignments/{}", a["assignmentId"].as_str().unwrap_or_default());
                    match api.exchange("PUT", &path, &json!({"status": "approved"})).await {
                        Ok((200, _)) => settled.fetch_add(1, Ordering::Relaxed),
                        // Status 0: the connection closed with no answer (the weir killed mid-request).
                        Ok((0, _)) | Err(_) => unanswered.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => 0,
                    };
                }
            }
        }
    });
}

fn crash_and_check(database: &str, redis: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut args = vec!["up", "--systems", "dispatch", "--kafka-listen", "none", "--http-listen", "127.0.0.1:0"];
    args.extend(["--database", database, "--status-every", "60"]);
    if let Some(url) = redis {
        args.extend(["--redis", url]);
    }
    let (mut up, http) = start_instance(d, &args, "dispatch");
    for u in 0..USERS {
        let (body, status) = support::curl_json(&["-X", "POST", &format!("http://{http}/users/u{u:02}/active")]);
        assert_eq!(status, "200", "{body}");
    }
    let out =
        weir(d, &["dispatch", "generate", &EVENTS.to_string(), "--database", database, "--quiet"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let address = Arc::new(Mutex::new(http.clone()));
    let (stop, settled) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let unanswered = Arc::new(AtomicU64::new(0));
    let settling = {
        let (a, s, n, u) = (address.clone(), stop.clone(), settled.clone(), unanswered.clone());
        std::thread::spawn(move || settler(a, s, n, u))
    };
    // Killed mid-flow: assignments made, some settled, most events still on their way.
    let deadline = Instant::now() + Duration::from_secs(120);
    while settled.load(Ordering::Relaxed) < 100 || stats(&http)["assignedTotal"].as_i64().unwrap_or(0) < 1000 {
        assert!(Instant::now() < deadline, "no progress before the kill: {}", stats(&http));
        std::thread::sleep(Duration::from_millis(20));
    }
    up.kill().unwrap(); // SIGKILL
    up.wait().unwrap();
    let before_restart = settled.load(Ordering::Relaxed);

    let (mut up, http) = start_instance(d, &args, "dispatch, restarted");
    *address.lock().unwrap() = http.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    while settled.load(Ordering::Relaxed) < before_restart + 300 {
        assert!(Instant::now() < deadline, "no settling after the restart: {}", stats(&http));
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    settling.join().unwrap();
    let settled = settled.load(Ordering::Relaxed) as i64;
    let settled = settled..=settled + unanswered.load(Ordering::Relaxed) as i64;

    // Quiet: every event received, the reviewers full, the relay's states caught up.
    let rt = runtime();
    let store = rt.block_on(SqlStore::connect(database)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let report = loop {
        let report = rt.block_on(check(&store));
        if report.settled_ok(&settled) || Instant::now() > deadline {
            break report;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    up.kill().unwrap();
    up.wait().unwrap();
    assert_eq!(report.received, EVENTS, "{database}: events lost on the way to the assignment service: {report:?}");
    assert_eq!(report.assigned_twice, 0, "{database}: {report:?}");
    assert_eq!(report.neither, 0, "{database}: events neither assigned nor waiting: {report:?}");
    assert_eq!(report.both, 0, "{database}: events assigned and waiting: {report:?}");
    assert!(settled.contains(&report.approved), "{database}: settlements lost or extra ({settled:?}): {report:?}");
    assert_eq!(report.bad_counts, 0, "{database}: reviewers' counts untrue: {report:?}");
    assert_eq!(report.states_off, 0, "{database}: the relay's states disagree: {report:?}");
    assert_eq!(report.open, (USERS * 50) as i64, "{database}: reviewers not full while events wait: {report:?}");
}

#[derive(Debug, Default)]
struct Report {
    received: i64,
    assigned_twice: i64,
    neither: i64,
    both: i64,
    approved: i64,
    open: i64,
    bad_counts: i64,
    states_off: i64,
}

impl Report {
    fn settled_ok(&self, settled: &std::ops::RangeInclusive<i64>) -> bool {
        self.received == EVENTS
            && self.states_off == 0
            && settled.contains(&self.approved)
            && self.open == (USERS * 50) as i64
            && self.bad_counts == 0
    }
}

async fn check(store: &SqlStore) -> Report {
    let one = |sql: &'static str| async move {
        sqlx::query(sql).fetch_one(store.pool()).await.map(|r| r.get::<i64, _>(0)).unwrap_or(-1)
    };
    Report {
        received: one("SELECT COUNT(*) FROM dispatch_queue").await,
        // Held (open or settled) by more than one assignment: assigned twice.
        assigned_twice: one("SELECT COUNT(*) FROM (SELECT event_id FROM assignments WHERE status <> 'reassigned' \
             GROUP BY event_id HAVING COUNT(*) > 1) AS t")
        .await,
        neither: one("SELECT COUNT(*) FROM dispatch_queue q WHERE q.waiting = 0 AND NOT EXISTS \
             (SELECT 1 FROM assignments a WHERE a.event_id = q.event_id AND a.status <> 'reassigned')")
        .await,
        both: one("SELECT COUNT(*) FROM dispatch_queue q WHERE q.waiting = 1 AND EXISTS \
             (SELECT 1 FROM assignments a WHERE a.event_id = q.event_id AND a.status <> 'reassigned')")
        .await,
        approved: one("SELECT COUNT(*) FROM assignments WHERE status = 'approved'").await,
        open: one("SELECT COUNT(*) FROM assignments WHERE status = 'open'").await,
        bad_counts: one("SELECT COUNT(*) FROM dispatch_reviewers r WHERE r.open_count <> \
             (SELECT COUNT(*) FROM assignments a WHERE a.user_id = r.user_id AND a.status = 'open')")
        .await,
        states_off: one("SELECT COUNT(*) FROM detection_events e JOIN dispatch_queue q ON q.event_id = e.event_id \
             LEFT JOIN assignments a ON a.event_id = e.event_id AND a.status <> 'reassigned' \
             WHERE e.state <> CASE WHEN a.status IS NULL THEN 'Not Viewed' WHEN a.status = 'open' THEN 'Assigned' \
             WHEN a.status = 'approved' THEN 'Approved' WHEN a.status = 'completed' THEN 'Completed' \
             ELSE 'Rejected' END")
        .await,
    }
}

#[test]
fn killed_mid_flow_on_sqlite_with_embedded_sessions_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("dispatch.db").display());
    crash_and_check(&database, None);
}

#[test]
fn killed_mid_flow_on_postgres_with_redis_sessions_loses_and_doubles_nothing() {
    let rt = runtime();
    let database = rt.block_on(weir_runtime::testing::fresh_postgres());
    // A Redis database of this test's own (weir keeps its keys under `weir:`), emptied first.
    let redis = "redis://127.0.0.1:6379/11";
    support::flush_redis_db(11);
    crash_and_check(&database, Some(redis));
}
