//! The HTTP API of a weir whose systems run on a Kafka cluster (`weir up --bus kafka://...`): there is no broker in
//! the process, but every instance still serves its systems' routes, `/health` (which says whether the cluster
//! answers), `/metrics`, `/openapi.json` and the web console's login. The REST Proxy routes serve the embedded broker only; here they answer
//! 501 with a JSON body saying so and what to use instead, never a refused connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{any, get};
use axum::{Json, Router};
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};
use crate::{metrics, openapi, HttpConfig};

/// Asks the cluster for something small (its metadata, a topic that exists): `Err` says why it did not answer.
pub type ClusterProbe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync + 'static>;

/// How long `/health` waits for the cluster before calling it unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
struct ClusterState {
    config: Arc<HttpConfig>,
    probe: ClusterProbe,
    started: Instant,
}

/// `/health` on a cluster: 200 when the cluster answered, else 503, both with this body.
#[derive(Debug, Serialize)]
pub struct ClusterHealth {
    /// `ok`, or `unreachable` when the cluster did not answer.
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
    /// The bus the systems use (the cluster's address, without credentials).
    pub bus: String,
    pub cluster: ClusterReach,
}

#[derive(Debug, Serialize)]
pub struct ClusterReach {
    pub reachable: bool,
    /// How long the probe took, in milliseconds.
    pub answered_in_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The API for a process on a cluster: `extra` (the systems' routes), health, metrics, the OpenAPI document, and
/// 501 for the REST Proxy's routes; limited and timed like the embedded API.
pub fn cluster_router(config: HttpConfig, probe: ClusterProbe, extra: Router) -> Router {
    let limit = config.max_body_bytes;
    let auth = crate::auth::Auth::new(&config);
    let extra = extra.merge(crate::session::routes(&config));
    let state = ClusterState { config: Arc::new(config), probe, started: Instant::now() };
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi::serve));
    for path in ["/topics", "/topics/{*rest}", "/consumers/{*rest}", "/groups", "/groups/{*rest}"] {
        router = router.route(path, any(not_on_a_cluster));
    }
    crate::finish(router, state, extra, limit, auth)
}

async fn health(State(state): State<ClusterState>) -> (StatusCode, Json<ClusterHealth>) {
    let asked = Instant::now();
    let answer = match tokio::time::timeout(PROBE_TIMEOUT, (state.probe)()).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    };
    let reachable = answer.is_ok();
    let body = ClusterHealth {
        status: if reachable { "ok" } else { "unreachable" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started.elapsed().as_secs(),
        bus: state.config.bus.clone(),
        cluster: ClusterReach { reachable, answered_in_ms: asked.elapsed().as_millis() as u64, error: answer.err() },
    };
    (if reachable { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

async fn metrics_text() -> Response {
    metrics::text()
}

async fn not_on_a_cluster(State(state): State<ClusterState>, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotOnACluster,
        format!(
            "{} is a REST Proxy route, which weir serves from its embedded broker; this instance's systems run on the \
             Kafka cluster {}. Produce and consume with a Kafka client against the cluster (or the cluster's own REST \
             Proxy), or run `weir up` on the embedded bus",
            uri.path(),
            state.config.bus
        ),
    )
}
