//! `weir dispatch generate` against a running `weir up --systems dispatch`: through its API (`--target`) and straight
//! into its database (`--database`, relayed by the running weir's outbox relay); the events reach `events.outbound`
//! once each and go to the reviewers online. Without a destination it fails before writing anything.

mod support;

use std::process::Stdio;

use support::{curl_json, eventually, fails, metric, start_instance, weir};

#[test]
fn generate_through_the_api_and_into_the_database_reaches_reviewers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let database = format!("sqlite://{}?mode=rwc", d.join("dispatch.db").display());
    let args = [
        "up",
        "--systems",
        "dispatch",
        "--kafka-listen",
        "none",
        "--http-listen",
        "127.0.0.1:0",
        "--database",
        &database,
    ];
    let (mut up, http) = start_instance(d, &args, "dispatch");
    for u in ["ana", "bo"] {
        let (body, status) = curl_json(&["-X", "POST", &format!("http://{http}/api/dispatch/users/{u}/active")]);
        assert_eq!(status, "200", "{body}");
    }
    let out = weir(d, &["dispatch", "generate", "30", "--target", &http]).stderr(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.lines().filter(|l| l.starts_with("event ") && l.contains("frame=frame_")).count(),
        30,
        "{printed}"
    );
    let out = weir(d, &["dispatch", "generate", "40", "--database", &database, "--quiet"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "--quiet prints no events");

    // All 70 assigned (two reviewers, room for 50 each), loads within one.
    let stats = eventually("70", || {
        let (stats, _) = curl_json(&[&format!("http://{http}/api/dispatch/stats")]);
        stats["events"]["Assigned"].to_string()
    });
    assert_eq!(stats, "70");
    let (stats, _) = curl_json(&[&format!("http://{http}/api/dispatch/stats")]);
    let (a, b) = (stats["users"]["ana"]["open"].as_i64().unwrap(), stats["users"]["bo"]["open"].as_i64().unwrap());
    assert_eq!((a + b, (a - b).abs() <= 1), (70, true), "{stats}");
    // The metrics: what was assigned, what waits, the reviewers' load (bounded series: sum, most, at the cap).
    let open = eventually("70", || metric(&http, "dispatch_open_assignments").to_string());
    assert_eq!(open, "70");
    assert_eq!(metric(&http, "dispatch_assigned_total"), 70.0);
    assert_eq!(metric(&http, "dispatch_waiting_events"), 0.0);
    assert_eq!(metric(&http, "dispatch_reviewer_open_max"), 35.0);
    assert_eq!(metric(&http, "dispatch_active_reviewers"), 2.0);
    up.kill().unwrap();
    up.wait().unwrap();
    // Each event on events.outbound once (the data directory's broker, read after the weir stopped).
    let out = weir(d, &["consume", "events.outbound", "--from-beginning", "--max", "70", "--idle-timeout-ms", "5000"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: std::collections::HashSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["eventId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 70, "{text}");

    let message = fails(d, &["dispatch", "generate", "5"]);
    assert!(message.contains("--database") && message.contains("--target"), "{message}");
}

/// `weir dispatch simulate` on a weir of its own: every event assigned, the report's figures present; both ways; and
/// a plan that cannot fit (more events than reviewers × the cap) refused before anything runs, with the cap set either
/// way `--set` takes it.
#[test]
fn simulate_assigns_every_event_and_refuses_a_plan_that_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for extra in [&[][..], &["--queued-first"][..]] {
        let args = [
            &["dispatch", "simulate", "--events", "600", "--users", "12", "--batch", "200", "--report", "json"][..],
            extra,
        ]
        .concat();
        let out = weir(d, &args).output().unwrap();
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
        assert_eq!(report["assigned"], 600, "{report}");
        assert_eq!(report["mode"], if extra.is_empty() { "end-to-end" } else { "queued" }, "{report}");
        assert!(report["assigned_per_second"].as_f64().unwrap() > 0.0, "{report}");
        assert!(report["wait_p99_ms"].as_i64().unwrap() >= report["wait_p50_ms"].as_i64().unwrap(), "{report}");
        assert!(report["peak_rss_bytes"].as_u64().unwrap() > 0, "{report}");
    }
    let err = fails(d, &["dispatch", "simulate", "--events", "1000", "--users", "10"]);
    assert!(err.contains("room for 500") && err.contains("--users"), "{err}");
    // A setting named as `weir up --set` names it, or bare: the cap read either way.
    for set in ["dispatch.max_open_per_user=20", "max_open_per_user=20"] {
        let err = fails(d, &["dispatch", "simulate", "--events", "1000", "--users", "10", "--set", set]);
        assert!(err.contains("room for 200"), "{set}: {err}");
    }
    let err = fails(d, &["dispatch", "simulate", "--set", "dispatch.no_such_setting=1"]);
    assert!(err.contains("no_such_setting"), "{err}");
}
