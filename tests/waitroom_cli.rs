//! `weir waitroom simulate` on a weir of its own (HTTP and gRPC) and against a running `weir up --systems waitroom`
//! (`--target`: the users through its HTTP API, checkout outcomes through its REST Proxy): every user joins and ends
//! settled, the checkout maximum holds, no fairness violation. `weir up --waitroom-topics seed` names the topics as
//! the seed did; the metrics show the waitroom's counters.

mod support;

use serde_json::Value;
use support::{curl_json, fails, metric, start_instance, weir};

fn simulate(d: &std::path::Path, extra: &[&str]) -> Value {
    let mut args =
        vec!["waitroom", "simulate", "--users", "120", "--join-rate", "100/s", "--speed", "20", "--report", "json"];
    args.extend(extra);
    args.extend(["--timeout", "120"]);
    let out = weir(d, &args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn check(r: &Value, via: &str) {
    assert_eq!(
        (r["via"].as_str(), r["joined"].as_u64(), r["refused"].as_u64()),
        (Some(via), Some(120), Some(0)),
        "{r}"
    );
    let ended = ["completed", "failed", "abandoned", "expired"].iter().map(|k| r[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((ended, r["still_waiting"].as_u64()), (120, Some(0)), "every user settled: {r}");
    assert!(r["admitted"].as_u64().unwrap() + r["abandoned"].as_u64().unwrap() >= 120, "{r}");
    assert!(r["completed"].as_u64().unwrap() > 0 && r["expired"].as_u64().unwrap() > 0, "{r}");
    assert!((1..=100).contains(&r["max_in_checkout"].as_u64().unwrap_or(0)), "{r}");
    assert_eq!(r["fairness_violations"], 0, "{r}");
    assert!(r["wait_ms_p50"].as_i64().is_some(), "{r}");
}

#[test]
fn simulate_on_its_own_weir_over_http_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    check(&simulate(dir.path(), &[]), "http");
    check(&simulate(dir.path(), &["--via", "grpc"]), "grpc");
    let e = fails(dir.path(), &["waitroom", "simulate", "--checkout-rate", "1.5"]);
    assert!(e.contains("--checkout-rate"), "{e}");
    let e = fails(dir.path(), &["waitroom", "simulate", "--join-rate", "fast"]);
    assert!(e.contains("fast"), "{e}");
}

#[test]
fn simulate_against_a_running_weir_with_the_seeds_topic_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = [
        "up",
        "--systems",
        "waitroom",
        "--kafka-listen",
        "none",
        "--http-listen",
        "127.0.0.1:0",
        "--waitroom-topics",
        "seed",
        "--set",
        "waitroom.process_interval=50ms",
        "--set",
        "waitroom.jwt_expiry=3s",
    ];
    let (mut up, http) = start_instance(d, &args, "waitroom");
    let r = simulate(d, &["--target", &http, "--topics", "seed"]);
    check(&r, "http");
    let (topics, _) = curl_json(&[&format!("http://{http}/topics")]);
    let names: Vec<&str> = topics.as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for t in ["QUEUE_READY", "QUEUE_JOINED", "QUEUE_LEFT", "CHECKOUT_COMPLETED", "CHECKOUT_FAILED", "CHECKOUT_EXPIRED"]
    {
        assert!(names.contains(&t), "{t} in {names:?}");
    }
    assert!(!names.contains(&"queue.ready"), "{names:?}");
    assert_eq!(metric(&http, "waitroom_joined_total"), 120.0);
    assert!(metric(&http, "waitroom_admitted_total") >= 1.0);
    up.kill().unwrap();
    up.wait().unwrap();
}
