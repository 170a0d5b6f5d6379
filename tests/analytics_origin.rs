//! The analytics pipeline as its origin's users run it against a real `weir up`: the origin's topic, its documented
//! curl commands and query strings answered in its shapes with exact totals in both vocabularies, its metric names
//! on `/metrics`, the shipped Prometheus files accepted by `promtool`, every metric the dashboards query present, and
//! the HighConsumerLag rule, fed the lag weir itself reports while its aggregator is stopped under load, firing after
//! five minutes (`promtool test rules`, which evaluates the real rules file over those samples), and not once the
//! aggregator has caught up.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{curl_json, start_up_command, weir};

const TOPIC: &str = "user-activity-events";
const EVENTS: u64 = 5_000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `weir up` running the analytics pipeline alone on the origin's topic, with `extra` settings; its process, Kafka
/// and HTTP addresses, and its stderr (kept open).
fn up(dir: &Path, extra: &[&str]) -> (std::process::Child, String, String, impl Sized) {
    let mut args =
        vec!["up", "--systems", "analytics", "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    for set in
        ["analytics.topic=user-activity-events", "analytics.partitions=3", "analytics.lag_update_interval_seconds=1"]
            .iter()
            .chain(extra)
    {
        args.extend(["--set", set]);
    }
    start_up_command(weir(dir, &args))
}

fn stop(mut up: std::process::Child) {
    let _ = Command::new("kill").arg("-TERM").arg(up.id().to_string()).status();
    let _ = up.wait();
}

fn metrics_text(http: &str) -> String {
    let out = Command::new("curl").args(["-s", "-m", "10", &format!("http://{http}/metrics")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The samples of `name` in a scrape: each one's label text (`{...}` or empty) and value.
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, value) = r.split_once('}')?;
                    (format!("{{{labels}}}"), value)
                }
                None if rest.starts_with(' ') => (String::new(), rest),
                None => return None,
            };
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

/// Waits up to 60 s for `ok` to hold of the instance's scrape; returns that scrape.
fn scrape_until(http: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics_text(http);
        if ok(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} never held; /metrics:\n{text}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn lag(text: &str) -> f64 {
    samples(text, "processor_consumer_lag").iter().map(|(_, v)| v).sum()
}

/// Runs the shipped alert rules with `promtool test rules` over `series` (each held at its value for 10 minutes,
/// sampled every minute), expecting HighConsumerLag to fire from 5 minutes on when `fires`, and never otherwise.
fn high_consumer_lag(dir: &Path, series: &[(String, f64)], fires: bool) {
    let rules = repo().join("deploy/prometheus/alerts.yml");
    let mut input = String::new();
    for (labels, value) in series {
        let labels = labels.trim_start_matches('{').trim_end_matches('}');
        input.push_str(&format!(
            "      - series: 'processor_consumer_lag{{job=\"processor\",{labels}}}'\n        values: '{value}x10'\n"
        ));
    }
    let total: f64 = series.iter().map(|(_, v)| v).sum();
    let expected = if fires {
        format!(
            "          - exp_labels:\n              severity: warning\n            exp_annotations:\n              \
             summary: The aggregator is falling behind\n              description: \"{total} events wait past the \
             aggregator's flushed offsets, for 5 minutes or more.\"\n"
        )
    } else {
        String::new()
    };
    let at_six = if fires { format!("\n{expected}") } else { " []\n".to_string() };
    let test = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{input}    \
         alert_rule_test:\n      - eval_time: 4m\n        alertname: HighConsumerLag\n        exp_alerts: []\n      \
         - eval_time: 6m\n        alertname: HighConsumerLag\n        exp_alerts:{at_six}",
        rules.display()
    );
    let file = dir.join(format!("high-consumer-lag-{fires}.yml"));
    std::fs::write(&file, &test).unwrap();
    let out =
        Command::new("promtool").arg("test").arg("rules").arg(&file).output().expect("promtool (Debian's prometheus)");
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric names a dashboard's or rule file's queries use (the pipeline's and weir's own prefixes).
fn queried_metrics(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| !t.ends_with('_'))
        .filter(|t| {
            ["producer_", "processor_", "events_", "aggregation_", "late_events", "weir_"]
                .iter()
                .any(|p| t.starts_with(p))
        })
        .map(|t| t.strip_suffix("_bucket").unwrap_or(t).to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn get(http: &str, path: &str) -> Value {
    let (body, status) = curl_json(&[&format!("http://{http}{path}")]);
    assert_eq!(status, "200", "GET {path}: {body}");
    body
}

#[test]
fn the_origin_vocabulary_metrics_and_alerts_hold_on_a_running_weir() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [["check", "rules"], ["check", "config"]] {
        let file = if args[1] == "rules" { "alerts.yml" } else { "prometheus.yml" };
        let out =
            Command::new("promtool").args(args).arg(repo().join("deploy/prometheus").join(file)).output().unwrap();
        assert!(out.status.success(), "promtool {args:?} {file}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // The aggregator stopped, under load: the lag weir reports climbs to what was produced and stays there.
    let (first, kafka, http, _err) = up(d, &["analytics.aggregator=false", "analytics.producer=false"]);
    let out = weir(
        d,
        &["--server", &kafka, "analytics", "produce", "--bulk", &EVENTS.to_string(), "--topic", TOPIC, "--quiet"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "produce: {}", String::from_utf8_lossy(&out.stderr));
    let text = scrape_until(&http, "the lag reaching what was produced", |t| lag(t) >= EVENTS as f64);
    let series = samples(&text, "processor_consumer_lag");
    assert_eq!(series.len(), 3, "one per partition of the origin's topic: {series:?}");
    assert_eq!(lag(&text), EVENTS as f64);
    high_consumer_lag(d, &series, true);
    stop(first);

    // The aggregator back: the lag falls to nothing and the rule stays quiet; the origin's curl commands and query
    // strings answer in its shapes, with every event counted once in either vocabulary.
    let (second, _kafka, http, _err) =
        up(d, &["analytics.producer=false", "analytics.flush_interval_seconds=1", "analytics.grace_period_seconds=0"]);
    let text = scrape_until(&http, "the lag falling to 0", |t| {
        samples(t, "processor_consumer_lag").len() == 3 && lag(t) == 0.0
    });
    high_consumer_lag(d, &samples(&text, "processor_consumer_lag"), false);
    let (flushed, status) = curl_json(&["-X", "POST", &format!("http://{http}/api/pipeline/flush")]);
    assert_eq!((status.as_str(), flushed["success"].as_bool()), ("200", Some(true)), "{flushed}");
    let health = get(&http, "/health");
    assert!(health["status"].is_string());
    let all = get(&http, "/api/aggregations?limit=1000");
    let stored: i64 = all["records"].as_array().unwrap().iter().map(|r| r["event_count"].as_i64().unwrap()).sum();
    assert_eq!(stored, EVENTS as i64, "every event once");
    assert_eq!(all["count"].as_i64(), all["total"].as_i64());
    for r in all["records"].as_array().unwrap() {
        for key in weir_analytics::api::ORIGIN_COLUMNS.iter().chain(&["unique_users"]) {
            assert!(r.get(key).is_some(), "{key} missing from {r}");
        }
    }
    let window = all["records"][0]["window_start"].as_str().unwrap().to_string();
    let hour_later =
        weir_runtime::time::format_rfc3339(weir_runtime::time::parse_rfc3339(&window).unwrap() + 3_600_000);
    let page = get(&http, &format!("/api/aggregations?event_type=page_view&from_time={window}&to_time={hour_later}"));
    assert_eq!(page["count"].as_i64(), Some(1), "{page}");
    assert_eq!(page["records"][0]["event_type"], "page_view");
    // The seed document's own query string (2024, long before these events: nothing), and its other paths.
    let old = get(&http, "/api/aggregations?start=2024-01-01T00:00:00&end=2024-01-02T00:00:00");
    assert_eq!((old["count"].as_i64(), old["total"].as_i64()), (Some(0), Some(0)));
    let latest = get(&http, "/api/aggregations/latest");
    assert!(latest["count"].as_i64().unwrap() >= 1 && latest["timestamp"].is_string(), "{latest}");
    for path in ["/api/stats", "/api/aggregations/stats"] {
        let stats = get(&http, path);
        let total: i64 = stats["stats"].as_array().unwrap().iter().map(|r| r["total_events"].as_i64().unwrap()).sum();
        assert_eq!((total, stats["events_stored"].as_i64()), (EVENTS as i64, Some(EVENTS as i64)), "{path}: {stats}");
    }
    assert_eq!(get(&http, "/api/aggregations/event-types")["event_types"].as_array().unwrap().len(), 10);
    assert_eq!(get(&http, "/api/event-types").as_array().unwrap().len(), 10);
    let memory = get(&http, "/api/pipeline/memory");
    assert_eq!((memory["total_events_in_memory"].as_i64(), memory["events_in_memory"].as_i64()), (Some(0), Some(0)));
    assert_eq!(get(&http, "/ready"), serde_json::json!({"ready": true}));
    assert_eq!(get(&http, "/admin/health"), serde_json::json!({"status": "healthy"}));
    assert!(get(&http, "/admin/status")["events_by_type"].is_object());
    let summary = get(&http, "/api/metrics/summary");
    assert_eq!(
        (summary["total_consumed"].as_f64(), summary["consumer_lag"].as_f64()),
        (Some(EVENTS as f64), Some(0.0)),
        "{summary}"
    );
    let processor = get(&http, "/api/metrics/processor");
    assert_eq!(processor["source"], "processor");
    let consumed = &processor["metrics"]["processor_events_consumed_total"];
    assert_eq!(consumed["type"], "counter", "{consumed}");
    assert_eq!(consumed["values"].as_array().unwrap().len(), 10, "one per event type: {consumed}");
    stop(second);

    // With the default producer on too, every metric the dashboards and rules query is on /metrics.
    let (third, _kafka, http, _err) = up(d, &["analytics.flush_interval_seconds=1"]);
    let mut wanted = Vec::new();
    for file in [
        "deploy/grafana/streaming-data-pipeline.json",
        "deploy/grafana/analytics-pipeline.json",
        "deploy/prometheus/alerts.yml",
    ] {
        wanted.extend(queried_metrics(&std::fs::read_to_string(repo().join(file)).unwrap()));
    }
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() >= 20, "{wanted:?}");
    let text = scrape_until(&http, "every queried metric present", |t| {
        wanted.iter().all(|m| t.lines().any(|l| l.starts_with(m.as_str())))
    });
    // Every metric name the origin's code records (its dashboard and rules use some of them).
    for name in [
        "producer_events_total",
        "producer_publish_latency_seconds",
        "producer_publish_errors_total",
        "processor_events_consumed_total",
        "processor_consume_errors_total",
        "processor_consumer_lag",
        "processor_batch_size",
        "processor_deserialize_latency_seconds",
        "processor_processing_latency_seconds",
        "processor_windows_flushed_total",
        "processor_active_windows",
        "processor_events_in_memory_total",
        "processor_events_in_memory_by_type",
        "processor_seconds_until_next_flush",
        "processor_earliest_window_end_timestamp",
        "processor_records_written_total",
        "processor_db_write_latency_seconds",
        "processor_db_write_errors_total",
    ] {
        let text = scrape_until(&http, name, |t| t.lines().any(|l| l.starts_with(name)));
        assert!(text.contains(&format!("# TYPE {name}")), "{name} has no TYPE line");
    }
    // The dashboard as Grafana imports it: its title and uid, every panel with a query on the Prometheus source.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/streaming-data-pipeline.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (dashboard["title"].as_str(), dashboard["uid"].as_str()),
        (Some("Streaming Data Pipeline"), Some("streaming-pipeline"))
    );
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["type"], "prometheus", "{panel}");
        assert!(
            panel["targets"].as_array().is_some_and(|t| !t.is_empty() && t.iter().all(|t| t["expr"].is_string())),
            "{panel}"
        );
    }
    let produced = get(&http, "/api/metrics/producer");
    assert!(
        produced["metrics"]["producer_events_total"]["values"].as_array().is_some_and(|v| !v.is_empty()),
        "{produced}"
    );
    assert!(samples(&text, "producer_publish_latency_seconds_count").iter().any(|(_, v)| *v > 0.0));
    stop(third);
}
