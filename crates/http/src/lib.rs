//! weir's HTTP adapter, beside the Kafka one: what services that speak HTTP rather than Kafka use.
//!
//! - `records.rs`: produce, as the Confluent REST Proxy v2 accepts it (binary, JSON and plain `application/json`).
//! - `topics.rs`: topic metadata, REST Proxy v2 shapes.
//! - `consumers.rs`: REST Proxy v2 consumer instances (create, subscribe, fetch, commit, delete), reaped when idle.
//! - `admin.rs`: consumer groups with lag, and `/health`.
//! - `metrics.rs`: the Prometheus recorder, the request-latency layer and `/metrics`, with broker gauges taken at
//!   scrape time.
//! - `openapi.rs`: `/openapi.json`, generated from the handlers' annotations, so the document cannot drift from them.
//! - `error.rs`: every error as `{"error_code": N, "message": "..."}` with the REST Proxy's codes.

mod admin;
mod consumers;
mod error;
mod metrics;
mod openapi;
mod records;
mod topics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;
use weir_broker::Broker;

pub use error::ApiError;
pub use openapi::openapi_json;

/// How the HTTP listener behaves.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// A consumer instance not used for this long is closed and removed (the REST Proxy's
    /// `consumer.instance.timeout.ms`).
    pub consumer_instance_timeout: Duration,
    /// Named in `/health`: which bus the systems of this process use.
    pub bus: String,
}

impl HttpConfig {
    pub fn new(listen: SocketAddr) -> Self {
        HttpConfig {
            listen,
            max_body_bytes: 64 << 20,
            consumer_instance_timeout: Duration::from_secs(300),
            bus: "embedded".into(),
        }
    }
}

/// What every handler sees.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub broker: Arc<Broker>,
    pub producer: weir_broker::Producer,
    pub consumers: Arc<consumers::Registry>,
    pub started: Instant,
    pub config: Arc<HttpConfig>,
}

/// The whole API as an axum router over `broker` (the listener is [`HttpServer`]; tests drive the router directly).
pub fn router(broker: Arc<Broker>, config: HttpConfig) -> Router {
    build(AppState::new(broker, config), Router::new())
}

impl AppState {
    fn new(broker: Arc<Broker>, config: HttpConfig) -> Self {
        AppState {
            producer: broker.producer(),
            consumers: Arc::new(consumers::Registry::new(config.consumer_instance_timeout)),
            broker,
            started: Instant::now(),
            config: Arc::new(config),
        }
    }
}

fn build(state: AppState, extra: Router) -> Router {
    let limit = state.config.max_body_bytes;
    let instance = "/consumers/{group}/instances/{instance}";
    Router::new()
        .route("/topics", get(topics::list))
        .route("/topics/{topic}", get(topics::get_topic).post(records::produce_to_topic))
        .route("/topics/{topic}/partitions", get(topics::partitions))
        .route("/topics/{topic}/partitions/{partition}", get(topics::partition).post(records::produce_to_partition))
        .route("/consumers/{group}", post(consumers::create))
        .route(instance, axum::routing::delete(consumers::delete))
        .route(
            &format!("{instance}/subscription"),
            get(consumers::subscription).post(consumers::subscribe).delete(consumers::unsubscribe),
        )
        .route(&format!("{instance}/records"), get(consumers::records))
        .route(&format!("{instance}/offsets"), post(consumers::commit))
        .route("/groups", get(admin::groups))
        .route("/groups/{group}", get(admin::group))
        .route("/health", get(admin::health))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::serve))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
        .merge(extra)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(limit))
}

/// A running HTTP listener. Dropping it does not stop it; call [`stop`](HttpServer::stop).
#[derive(Debug)]
pub struct HttpServer {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    reaper: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Binds `config.listen` and serves the API until [`stop`](HttpServer::stop).
    pub async fn start(broker: Arc<Broker>, config: HttpConfig) -> std::io::Result<HttpServer> {
        Self::start_with(broker, config, Router::new()).await
    }

    /// [`start`](HttpServer::start), also serving `extra`: the systems' own routes (their paths must not collide
    /// with the API's), timed and limited like the rest.
    pub async fn start_with(broker: Arc<Broker>, config: HttpConfig, extra: Router) -> std::io::Result<HttpServer> {
        metrics::install();
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let state = AppState::new(broker, config);
        let reaper = tokio::spawn(consumers::reap(state.consumers.clone()));
        let app = build(state, extra);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "the HTTP listener failed");
            }
        });
        Ok(HttpServer { local_addr, stop, task, reaper })
    }

    /// Stops accepting, lets requests in flight finish (up to 5 s), and closes consumer instances.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.reaper.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}
