//! The analytics pipeline (seed 002), built on weir: producers write JSON events to `events` (or the origin's
//! `user-activity-events`); the aggregator folds them into hourly windows per event type with a grace period and
//! flushes them, exactly once, to `hourly_aggregations` on SQLite or PostgreSQL; an HTTP API at the seed document's
//! paths and its origin's serves the results.
//!
//! - `event.rs`: the event format and the generator the producers share.
//! - `hll.rs`: the HyperLogLog sketch behind `unique_users` and `unique_session_count`.
//! - `aggregator.rs`: windows, watermark, late events, the flush transaction.
//! - `api.rs`: the HTTP API in both vocabularies, the seed document's and its origin's (data-pipeline-zeal):
//!   `/api/aggregations`, `/api/aggregations/latest`, `/api/stats` and `/api/aggregations/stats`, `/api/event-types`
//!   and `/api/aggregations/event-types`, `/api/pipeline/memory`, `POST /api/pipeline/flush`, `/ready`,
//!   `/api/metrics/{producer,processor,summary}` and the origin processor's `/admin/{status,health,flush}`.
//! - `pipeline_metrics.rs`: the origin's metric names, and reading Prometheus' text for `/api/metrics/...`.
//! - `lag.rs`: `processor_consumer_lag`, the aggregator's lag per partition, sampled whether or not it runs.
//! - `producer.rs`: the default producer `weir up` runs and the simulated day the benchmark sends.
//! - `system.rs`: the pipeline as a weir system (settings, topics, tables, tasks, routes, commands).
//! - `cli.rs`: `weir analytics produce`.
//!
//! The system takes a `Bus` and a `SqlStore`: it runs unchanged on the embedded broker or a Kafka cluster.

pub mod aggregator;
pub mod api;
pub mod cli;
pub mod event;
pub mod hll;
pub mod lag;
pub mod pipeline_metrics;
pub mod producer;
pub mod system;
/// Event times: RFC 3339 to and from milliseconds (shared with the other systems through the runtime).
pub use weir_runtime::time;

pub use aggregator::{Aggregator, AggregatorConfig, Control, FlushReport};
pub use system::{AnalyticsSettings, AnalyticsSystem};
