//! The waitroom survives `kill -9`: a `weir up` is killed (SIGKILL) while 10,000 users join through its API and it
//! admits them, checkouts completing (through the REST Proxy) or running out, then started again on the same data.
//! Afterwards every session a join was answered for is settled (none lost), each was admitted with one token at most
//! (none admitted twice: read from `queue.ready` with kcat), and nothing is left in checkout (no slot leaked). On
//! the embedded store, and on Redis.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::weir;
use weir_runtime::api_client::ApiTarget;

const USERS: u64 = 10_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// `weir up` with the waitroom only, both listeners on free ports: the process, its Kafka and HTTP addresses.
fn start(d: &std::path::Path, redis: Option<&str>) -> (std::process::Child, String, String) {
    let mut args = vec!["up", "--systems", "waitroom", "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    args.extend(["--status-every", "60"]);
    for set in [
        "waitroom.process_interval=50ms",
        "waitroom.release_rate=100",
        "waitroom.max_concurrent=1000",
        "waitroom.jwt_expiry=2s",
        "waitroom.jwt_secret=crash-test",
    ] {
        args.extend(["--set", set]);
    }
    if let Some(url) = redis {
        args.extend(["--redis", url]);
    }
    let (up, kafka, http, stderr) = support::start_up_command(weir(d, &args));
    // Its status lines go on being written: drained so it never blocks.
    std::thread::spawn(move || std::io::copy(&mut std::io::BufReader::new(stderr), &mut std::io::sink()));
    (up, kafka, http)
}

/// Joins users `from..USERS`, 8 requests at a time, until told to stop; each answered session id goes in `joined`.
/// A request the weir died in the middle of is counted, not retried (its session may or may not exist).
fn joiner(http: Arc<Mutex<String>>, next: Arc<AtomicU64>, joined: Arc<Mutex<Vec<String>>>, unanswered: Arc<AtomicU64>) {
    runtime().block_on(async move {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (http, next, joined, unanswered) = (http.clone(), next.clone(), joined.clone(), unanswered.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= USERS {
                        return;
                    }
                    let priority = [0, 5, 10][n as usize % 3];
                    let body = json!({"user_id": format!("fan-{n}"), "event_id": "final", "priority": priority});
                    let api = ApiTarget::Http(http.lock().unwrap().clone());
                    match api.exchange("POST", "/api/v1/waitroom/join", &body).await {
                        Ok((201, v)) => joined.lock().unwrap().push(v["session_id"].as_str().unwrap().to_string()),
                        Ok((0, _)) | Err(_) => {
                            unanswered.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Ok((status, v)) => panic!("join answered {status}: {v}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Completes, through the REST Proxy, the checkout of every other session it sees admitted, until told to stop.
fn checkout(http: Arc<Mutex<String>>, joined: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) {
    runtime().block_on(async move {
        let mut done = BTreeSet::new();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let id = {
                let all = joined.lock().unwrap();
                if all.is_empty() {
                    None
                } else {
                    i = (i + 2) % all.len();
                    Some(all[i].clone())
                }
            };
            let Some(id) = id else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let api = ApiTarget::Http(http.lock().unwrap().clone());
            if let Ok((200, v)) = api.exchange("GET", &format!("/api/v1/waitroom/status/{id}"), &Value::Null).await {
                if v["status"] == "admitted" && done.insert(id.clone()) {
                    let record =
                        json!({"records": [{"key": "final", "value": {"session_id": id, "event_id": "final"}}]});
                    let _ = api.exchange("POST", "/topics/checkout.completed", &record).await;
                }
            }
        }
    });
}

fn stats(http: &str) -> Value {
    let (body, _) = support::curl_json(&[&format!("http://{http}/api/v1/waitroom/events/final/stats")]);
    body
}

fn crash_and_check(redis: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let started = Instant::now();
    let (mut up, _kafka, http) = start(d, redis);
    let address = Arc::new(Mutex::new(http.clone()));
    let (next, joined, unanswered) =
        (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicU64::new(0)));
    let joining = {
        let (a, n, j, u) = (address.clone(), next.clone(), joined.clone(), unanswered.clone());
        std::thread::spawn(move || joiner(a, n, j, u))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let checking_out = {
        let (a, j, s) = (address.clone(), joined.clone(), stop.clone());
        std::thread::spawn(move || checkout(a, j, s))
    };
    // Killed mid-flow: thousands joined, hundreds admitted, most still to come.
    let deadline = Instant::now() + Duration::from_secs(180);
    while joined.lock().unwrap().len() < 3000 || stats(&http)["in_checkout"].as_u64().unwrap_or(0) < 100 {
        assert!(
            Instant::now() < deadline,
            "no progress before the kill: {} joined, {}",
            joined.lock().unwrap().len(),
            stats(&http)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    up.kill().unwrap(); // SIGKILL
    up.wait().unwrap();
    eprintln!("killed at {:?} with {} joined", started.elapsed(), joined.lock().unwrap().len());
    let (mut up, kafka, http) = start(d, redis);
    *address.lock().unwrap() = http.clone();
    joining.join().unwrap();

    eprintln!("joined by {:?}", started.elapsed());
    // Quiet: nothing waiting, nothing in checkout; then every answered session settled (completed or expired).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = stats(&http);
        if s["waiting"] == 0 && s["in_checkout"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never quiet, a slot leaked or a session stuck: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("quiet by {:?}", started.elapsed());
    let rt = runtime();
    let api = ApiTarget::Http(http.clone());
    let ids = joined.lock().unwrap().clone();
    let unsettled: Vec<(String, u16, Value)> = rt.block_on(async {
        let mut out = Vec::new();
        for id in &ids {
            let (status, v) =
                api.exchange("GET", &format!("/api/v1/waitroom/status/{id}"), &Value::Null).await.unwrap();
            let settled =
                status == 410 || (status == 200 && matches!(v["status"].as_str(), Some("completed" | "expired")));
            if !settled {
                out.push((id.clone(), status, v));
            }
        }
        out
    });
    assert!(unsettled.is_empty(), "{} sessions not settled, e.g. {:?}", unsettled.len(), unsettled.first());
    stop.store(true, Ordering::Relaxed);
    checking_out.join().unwrap();
    let s = stats(&http);
    assert_eq!((s["waiting"].as_u64(), s["in_checkout"].as_u64()), (Some(0), Some(0)), "a slot leaked: {s}");

    // Each session admitted with one token: queue.ready read back with kcat.
    let out = std::process::Command::new("kcat")
        .args(["-b", &kafka, "-C", "-t", "queue.ready", "-e", "-q", "-f", "%s\n"])
        .output()
        .expect("kcat is required (scripts/test.sh installs it)");
    assert!(out.status.success(), "kcat: {}", String::from_utf8_lossy(&out.stderr));
    let mut tokens: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        tokens
            .entry(v["session_id"].as_str().unwrap().to_string())
            .or_default()
            .insert(v["checkout_token"].as_str().unwrap().to_string());
    }
    let twice: Vec<_> = tokens.iter().filter(|(_, t)| t.len() > 1).collect();
    assert!(twice.is_empty(), "sessions admitted twice (two tokens): {twice:?}");
    let answered: BTreeSet<&String> = ids.iter().collect();
    let admitted = answered.iter().filter(|id| tokens.contains_key(**id)).count();
    // Every answered session was let in at some point (nobody left the queue, and the queue emptied).
    assert_eq!(admitted, answered.len(), "answered sessions never admitted (queue.ready missing)");
    up.kill().unwrap();
    up.wait().unwrap();
    eprintln!(
        "{} joined ({} unanswered at the kill), {} admitted once each",
        ids.len(),
        unanswered.load(Ordering::Relaxed),
        admitted
    );
}

#[test]
fn killed_mid_sale_on_the_embedded_store_loses_and_doubles_nothing() {
    crash_and_check(None);
}

#[test]
fn killed_mid_sale_with_redis_sessions_loses_and_doubles_nothing() {
    support::flush_redis_db(12);
    crash_and_check(Some("redis://127.0.0.1:6379/12"));
}
