//! Prometheus metrics: the process-wide recorder (the `metrics` facade, so the broker and the log record without
//! knowing who exports), the request-latency layer, and `GET /metrics`, which adds the broker's gauges (partition
//! sizes and end offsets, group lag) at scrape time so they are never stale.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::consumers::ConsumerRecord;
use crate::AppState;

/// Bucket bounds for every latency histogram, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often recorded histogram values are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if something else installed a recorder first; then this handle renders what it has.
        let _ = metrics::set_global_recorder(recorder);
        // A histogram keeps every value recorded until upkeep folds them into its buckets; without it, a process
        // nobody scrapes grows by a few bytes per handled message, forever (tens of megabytes per million).
        let upkeep = handle.clone();
        let started = std::thread::Builder::new().name("weir-metrics".into()).spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms fold only when scraped");
        }
        handle
    })
}

/// Times every request by method and matched route (not the raw path: topic names would explode the label set).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("weir_http_request_duration_seconds", "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("weir_http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

pub fn produced(topic: &str, records: u64, body_bytes: u64, took: Duration) {
    metrics::counter!("weir_http_records_produced_total", "topic" => topic.to_string()).increment(records);
    metrics::counter!("weir_http_bytes_received_total", "topic" => topic.to_string()).increment(body_bytes);
    metrics::histogram!("weir_produce_latency_seconds", "via" => "http").record(took.as_secs_f64());
}

pub fn consumed(records: &[ConsumerRecord], took: Duration) {
    for r in records {
        metrics::counter!("weir_http_records_consumed_total", "topic" => r.topic.clone()).increment(1);
    }
    metrics::histogram!("weir_fetch_latency_seconds", "via" => "http").record(took.as_secs_f64());
}

/// Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = "admin",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"))
)]
pub async fn render(State(state): State<AppState>) -> Response {
    for t in state.broker.list_topics() {
        if let Ok(d) = state.broker.describe_topic(&t) {
            for p in d.partitions {
                let labels = [("topic", t.clone()), ("partition", p.partition.to_string())];
                metrics::gauge!("weir_partition_size_bytes", &labels).set(p.size_bytes as f64);
                metrics::gauge!("weir_partition_log_end_offset", &labels).set(p.log_end_offset as f64);
                metrics::gauge!("weir_partition_log_start_offset", &labels).set(p.log_start_offset as f64);
            }
        }
    }
    for g in state.broker.list_groups() {
        if let Ok(d) = state.broker.describe_group(&g) {
            for o in d.offsets {
                if let Some(lag) = o.lag {
                    let labels =
                        [("group", g.clone()), ("topic", o.topic.clone()), ("partition", o.partition.to_string())];
                    metrics::gauge!("weir_group_lag", &labels).set(lag as f64);
                }
            }
        }
    }
    text()
}

/// Every metric in Prometheus' text format.
pub(crate) fn text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], install().render()).into_response()
}
