//! weir's HTTP adapter, beside the Kafka one: what services that speak HTTP rather than Kafka use.
//!
//! - `records.rs`: produce, as the Confluent REST Proxy v2 accepts it (binary, JSON and plain `application/json`).
//! - `schemas.rs`: the REST Proxy's schema formats (avro, jsonschema, protobuf), through [`EmbeddedSchemas`], which
//!   the schema registry (above this crate) implements.
//! - `media.rs`: the REST Proxy's media types: a produce body's format, a fetch's `Accept`, the consumer routes'
//!   JSON types.
//! - `body.rs`: request bodies read within the limit and deserialized into the handlers' types, with errors that
//!   name the field.
//! - `topics.rs`: topic metadata, REST Proxy v2 shapes.
//! - `consumers.rs`: REST Proxy v2 consumer instances (create, subscribe, fetch, commit, delete), reaped when idle.
//! - `admin.rs`: consumer groups with lag, and `/health`.
//! - `auth.rs`: authentication over every route (HTTP Basic, bearer tokens, TLS client certificates) into a
//!   [`Principal`], the ACL checks the handlers make (Kafka's operations for the REST Proxy's routes), and
//!   [`guard_system`] for the systems' routes.
//! - `session.rs`: the web console's login, logout and "who am I and what may I do" (`/console/login`,
//!   `/console/logout`, `/console/api/me`); sessions ride in a cookie `auth.rs` accepts.
//! - `metrics.rs`: the Prometheus recorder, the request-latency layer and `/metrics`, with broker gauges taken at
//!   scrape time.
//! - `openapi.rs`: `/openapi.json`, generated from the handlers' annotations and the types their bodies deserialize
//!   into, so the document cannot drift from them.
//! - `error.rs`: every error as `{"error_code": N, "message": "..."}` with the REST Proxy's codes (one enum of them),
//!   including axum's own rejections (of any route, the systems' too), and the 413 for a declared `Content-Length`
//!   over the limit.
//! - `cluster.rs`: the API of an instance whose systems run on a Kafka cluster: the systems' routes, `/health` with
//!   the cluster's reachability, `/metrics`, and 501 for the REST Proxy routes, which need the embedded broker.
//! - `server.rs`: the listener's accept loop: TLS when configured, a cap on connections, idle and header-read
//!   timeouts, backoff when accepting fails, and the graceful stop.
//! - `testing` (feature `testing`, for tests only): calling a router in-process, the status and the body as JSON.
//!
//! # Example
//!
//! The API as a router over a broker, driven without a socket ([`HttpServer`] serves the same router): a record
//! produced as to the Confluent REST Proxy, and a client mistake answered in the error shape.
//!
//! ```
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use serde_json::Value;
//! use tower::ServiceExt; // `oneshot`
//! use weir_broker::{Broker, BrokerConfig};
//! use weir_http::{router, ErrorCode, HttpConfig};
//!
//! async fn post(api: &axum::Router, uri: &str, body: &'static str) -> (StatusCode, Value) {
//!     let request = Request::post(uri)
//!         .header("content-type", "application/vnd.kafka.json.v2+json")
//!         .body(Body::from(body))
//!         .unwrap();
//!     let response = api.clone().oneshot(request).await.unwrap();
//!     let status = response.status();
//!     let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
//!     (status, serde_json::from_slice(&bytes).unwrap())
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let broker = Broker::open(BrokerConfig::new(dir.path()))?;
//! let api = router(broker.clone(), HttpConfig::new("127.0.0.1:0".parse()?));
//!
//! // The topic is created on first use; the value is stored as its JSON text.
//! let (status, body) = post(&api, "/topics/orders", r#"{"records":[{"value":{"drink":"latte"}}]}"#).await;
//! assert_eq!(status, StatusCode::OK);
//! assert_eq!((&body["offsets"][0]["partition"], &body["offsets"][0]["offset"]), (&Value::from(0), &Value::from(0)));
//! let stored = broker.read("orders", 0, 0, 1 << 20)?.records(0)?;
//! assert_eq!(stored[0].value.as_deref(), Some(&br#"{"drink":"latte"}"#[..]));
//!
//! // Every error is `{"error_code", "message"}`, the code one of `ErrorCode`'s: its status and a detail digit.
//! let (status, body) = post(&api, "/topics/orders/partitions/9", r#"{"records":[{"value":1}]}"#).await;
//! assert_eq!(status, StatusCode::NOT_FOUND);
//! assert_eq!(ErrorCode::PartitionNotFound.status(), status);
//! assert_eq!(body["error_code"], ErrorCode::PartitionNotFound.code());
//! assert_eq!(body["message"], "Partition 9 of topic orders not found.");
//! broker.shutdown();
//! # Ok(())
//! # }
//! ```

mod admin;
mod auth;
mod body;
pub mod cluster;
mod consumers;
mod error;
mod media;
mod metrics;

/// Installs the process's Prometheus recorder (once; the HTTP server does it too). Call it before anything records a
/// metric: a value recorded before the recorder exists is lost, and a gauge set once at start would read 0 forever.
pub fn install_metrics() {
    metrics::install();
}

/// Every metric the process recorded, in Prometheus' text format (what `GET /metrics` serves, without the broker's
/// gauges that a scrape refreshes first).
pub fn render_metrics() -> String {
    metrics::install().render()
}
mod openapi;
mod records;
pub mod schemas;
mod server;
mod session;
#[cfg(feature = "testing")]
pub mod testing;
mod topics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;
use weir_broker::Broker;

pub use auth::{guard_system, Access, Principal};
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use openapi::openapi_json;
pub use schemas::{EmbedError, EmbeddedSchemas, SchemaFormat, SchemaGiven};

/// How the HTTP listener behaves.
#[derive(Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413 (at once when `Content-Length` says so).
    pub max_body_bytes: usize,
    /// Most records one produce request may hold; more get 413 (41302) before any is parsed past the cap. Each
    /// record in flight costs a few hundred bytes besides its data, so this bounds a request's memory where the body
    /// limit alone would not: 64 MiB of `{},` is 22 million records.
    pub max_records_per_request: usize,
    /// Most HTTP connections open at once; past it a new connection gets 503 and is closed. The default is 1,024,
    /// or a quarter of the process's open-file limit if that is lower.
    pub max_connections: usize,
    /// A connection with no request in progress is closed after this long without receiving a byte.
    pub idle_timeout: Duration,
    /// A request's head (request line and headers) must arrive within this long of its first byte (slowloris).
    pub header_read_timeout: Duration,
    /// A consumer instance not used for this long is closed and removed (the REST Proxy's
    /// `consumer.instance.timeout.ms`).
    pub consumer_instance_timeout: Duration,
    /// Named in `/health`: which bus the systems of this process use.
    pub bus: String,
    /// Users, ACLs and whether they are enforced, shared with the Kafka listener. Default: open to all (no
    /// authentication required, no authorizer).
    pub security: Arc<weir_security::Security>,
    /// TLS on the listener (`weir_security::tls::server_config`); with a client CA, clients must present a
    /// certificate, whose subject becomes their principal. `None`: plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Paths served without credentials and without ACL checks even when authentication is required: health checks
    /// and Prometheus scrapes. Exact paths.
    pub open_paths: Vec<String>,
    /// The schema registry behind the REST Proxy's avro, jsonschema and protobuf formats; `None`: those formats are
    /// refused (415 to produce, 42204 to create a consumer instance).
    pub schemas: Option<Arc<dyn EmbeddedSchemas>>,
}

/// By hand: `security` holds the user store (SCRAM keys, digests of recent passwords), which has no business in a
/// log line that prints the configuration; only whether authentication and the authorizer are on is shown.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let HttpConfig {
            listen,
            max_body_bytes,
            max_records_per_request,
            max_connections,
            idle_timeout,
            header_read_timeout,
            consumer_instance_timeout,
            bus,
            security,
            tls,
            open_paths,
            schemas,
        } = self;
        f.debug_struct("HttpConfig")
            .field("listen", listen)
            .field("max_body_bytes", max_body_bytes)
            .field("max_records_per_request", max_records_per_request)
            .field("max_connections", max_connections)
            .field("idle_timeout", idle_timeout)
            .field("header_read_timeout", header_read_timeout)
            .field("consumer_instance_timeout", consumer_instance_timeout)
            .field("bus", bus)
            .field("require_authentication", &security.requires_authentication())
            .field("authorizer", &security.settings().authorizer)
            .field("tls", &tls.is_some())
            .field("open_paths", open_paths)
            .field("schema_registry", &schemas.is_some())
            .finish()
    }
}

impl HttpConfig {
    pub fn new(listen: SocketAddr) -> Self {
        HttpConfig {
            listen,
            max_body_bytes: 64 << 20,
            // Ten times the largest batch the REST Proxy's own clients send by default (librdkafka's
            // batch.num.messages is 10,000): about 30 MB of bookkeeping at most.
            max_records_per_request: 100_000,
            max_connections: server::default_max_connections(),
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            consumer_instance_timeout: Duration::from_secs(300),
            bus: "embedded".into(),
            security: weir_security::Security::open_to_all(),
            tls: None,
            open_paths: vec!["/health".into(), "/metrics".into()],
            schemas: None,
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
    router_with(broker, config, Router::new())
}

/// [`router`] with `extra` routes merged in, as [`HttpServer::start_with`] serves them.
pub fn router_with(broker: Arc<Broker>, config: HttpConfig, extra: Router) -> Router {
    build(AppState::new(broker, config), extra)
}

/// The REST Proxy's routes alone (topics, produce, consumer instances) over `broker`, with the same layers as
/// [`router`] (authentication, errors, limits, metrics), as [`HttpServer::start_rest_proxy`] serves them.
pub fn rest_proxy_router(broker: Arc<Broker>, config: HttpConfig) -> Router {
    build_rest_proxy(AppState::new(broker, config))
}

/// The REST Proxy over a broker, as one or more listeners serve it: its consumer instances (reaped while a listener
/// serves it) and its producer. [`HttpServer::start_api`] serves the whole API from it and
/// [`HttpServer::start_rest_proxy`] the REST Proxy's routes alone, on another address (as Confluent's REST Proxy on
/// 8082); both share its instances, so a consumer created through one listener answers through the other, and the
/// names it generates for instances are unique across both.
#[derive(Clone, Debug)]
pub struct RestProxy {
    state: AppState,
    reaper: Arc<parking_lot::Mutex<Reaper>>,
}

/// The consumer-instance reaper of a [`RestProxy`]: running while at least one listener serves it.
#[derive(Debug, Default)]
struct Reaper {
    listeners: usize,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RestProxy {
    pub fn new(broker: Arc<Broker>, config: HttpConfig) -> Self {
        RestProxy { state: AppState::new(broker, config), reaper: Default::default() }
    }

    /// A listener serves it: the reaper runs (started by the first).
    fn serving(&self) {
        let mut r = self.reaper.lock();
        r.listeners += 1;
        if r.task.is_none() {
            r.task = Some(tokio::spawn(consumers::reap(self.state.consumers.clone())));
        }
    }

    /// A listener stopped: the last one stops the reaper.
    fn stopped(&self) {
        let mut r = self.reaper.lock();
        r.listeners = r.listeners.saturating_sub(1);
        if r.listeners == 0 {
            if let Some(task) = r.task.take() {
                task.abort();
            }
        }
    }
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
    let auth = auth::Auth::new(&state.config);
    let schema_formats = state.config.schemas.is_some();
    let routes = rest_proxy_routes()
        .route("/groups", get(admin::groups))
        .route("/groups/{group}", get(admin::group))
        .route("/health", get(admin::health))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(move || openapi::serve_document(schema_formats)));
    let extra = extra.merge(session::routes(&state.config));
    finish(routes, state, extra, limit, auth)
}

/// The REST Proxy's routes alone, behind the same layers as [`build`]'s.
fn build_rest_proxy(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let auth = auth::Auth::new(&state.config);
    finish(rest_proxy_routes(), state, Router::new(), limit, auth)
}

/// The Confluent REST Proxy v2 routes: topics, produce, consumer instances.
fn rest_proxy_routes() -> Router<AppState> {
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
}

/// What every API router ends with, over the embedded broker or on a cluster: JSON answers for unknown paths and
/// methods, the systems' routes, and the layers, innermost first: the guard refuses a declared oversized body and
/// makes rejections JSON, authentication refuses a request without valid credentials before anything else looks at
/// it (an unknown path too: what exists is not told to strangers), and the metrics see every answer as the client
/// gets it, 401s included.
pub(crate) fn finish<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    state: S,
    extra: Router,
    limit: usize,
    auth: auth::Auth,
) -> Router {
    routes
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
        .merge(extra)
        .layer(axum::middleware::from_fn_with_state(limit, error::guard))
        .layer(axum::middleware::from_fn_with_state(auth, auth::authenticate))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(limit))
}

/// A running HTTP listener. Dropping it does not stop it; call [`stop`](HttpServer::stop).
#[derive(Debug)]
pub struct HttpServer {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The REST Proxy it serves, whose consumer-instance reaper runs while it does (none on a cluster).
    proxy: Option<RestProxy>,
}

impl HttpServer {
    /// Binds `config.listen` and serves the API until [`stop`](HttpServer::stop).
    pub async fn start(broker: Arc<Broker>, config: HttpConfig) -> std::io::Result<HttpServer> {
        Self::start_with(broker, config, Router::new()).await
    }

    /// [`start`](HttpServer::start), also serving `extra`: the systems' own routes (their paths must not collide
    /// with the API's), timed and limited like the rest.
    pub async fn start_with(broker: Arc<Broker>, config: HttpConfig, extra: Router) -> std::io::Result<HttpServer> {
        Self::start_api(&RestProxy::new(broker, config), extra).await
    }

    /// [`start_with`](HttpServer::start_with) over a [`RestProxy`] that other listeners may serve too: the whole
    /// API, with `extra`, on the proxy's `config.listen`.
    pub async fn start_api(proxy: &RestProxy, extra: Router) -> std::io::Result<HttpServer> {
        let config = (*proxy.state.config).clone();
        Self::serve(config, build(proxy.state.clone(), extra), Some(proxy.clone())).await
    }

    /// The REST Proxy's routes alone (topics, produce, consumer instances; not `/health`, `/metrics`, the groups or
    /// any system's routes) on `listen`, with the proxy's limits, TLS and authentication.
    pub async fn start_rest_proxy(proxy: &RestProxy, listen: SocketAddr) -> std::io::Result<HttpServer> {
        let config = HttpConfig { listen, ..(*proxy.state.config).clone() };
        Self::serve(config, build_rest_proxy(proxy.state.clone()), Some(proxy.clone())).await
    }

    /// Serves another API than the REST Proxy's on a listener of its own (the schema registry's), behind the same
    /// connection cap, timeouts, TLS, authentication and metrics; its handlers check ACLs through [`Access`].
    pub async fn start_app(config: HttpConfig, app: Router) -> std::io::Result<HttpServer> {
        let auth = auth::Auth::new(&config);
        let app = finish(Router::new(), (), app, config.max_body_bytes, auth);
        Self::serve(config, app, None).await
    }

    /// Serves the API of an instance whose systems run on a Kafka cluster ([`cluster::cluster_router`]): `extra`,
    /// health (asking the cluster through `probe`), metrics, and 501 for the REST Proxy routes.
    pub async fn start_on_cluster(
        config: HttpConfig,
        probe: cluster::ClusterProbe,
        extra: Router,
    ) -> std::io::Result<HttpServer> {
        let app = cluster::cluster_router(config.clone(), probe, extra);
        Self::serve(config, app, None).await
    }

    async fn serve(config: HttpConfig, app: Router, proxy: Option<RestProxy>) -> std::io::Result<HttpServer> {
        metrics::install();
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let soft = server::open_files_soft_limit();
        if soft.is_some_and(|soft| config.max_connections as u64 > soft / 2) {
            tracing::warn!(
                max_connections = config.max_connections,
                open_files_limit = soft,
                "the HTTP connection cap is over half the open-file limit: the process may run out of descriptors \
                 before the cap is reached"
            );
        }
        let limits = server::Limits {
            max_connections: config.max_connections.max(1),
            idle_timeout: config.idle_timeout,
            header_read_timeout: config.header_read_timeout,
        };
        let (stop, stopped) = watch::channel(false);
        let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(server::serve(listener, app, limits, tls, stopped));
        if let Some(p) = &proxy {
            p.serving();
        }
        Ok(HttpServer { local_addr, stop, task, proxy })
    }

    /// Stops accepting, lets requests in flight finish (up to 5 s, then closes what is left), and stops reaping
    /// consumer instances unless another listener still serves them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(p) = &self.proxy {
            p.stopped();
        }
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.task).await.is_err() {
            // Dropping the accept loop's task drops its connections.
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    use weir_broker::{Broker, BrokerConfig};

    use super::*;

    async fn call(app: &Router, method: &str, uri: &str, content_type: &str, body: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "weir.test")
            .header("content-type", content_type)
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The REST Proxy's own listener serves its routes and nothing else, and shares consumer instances with the
    /// whole API's.
    #[tokio::test]
    async fn the_rest_proxy_alone_serves_its_routes_and_shares_instances_with_the_api() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
        let proxy = RestProxy::new(broker.clone(), HttpConfig::new("127.0.0.1:0".parse().unwrap()));
        let (rest, api) = (build_rest_proxy(proxy.state.clone()), build(proxy.state.clone(), Router::new()));

        let binary = "application/vnd.kafka.binary.v2+json";
        let (status, body) = call(&rest, "POST", "/topics/t", binary, r#"{"records":[{"value":"dGVzdA=="}]}"#).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            broker.read("t", 0, 0, 1 << 20).unwrap().records(0).unwrap()[0].value.as_deref(),
            Some(&b"test"[..])
        );
        for path in ["/health", "/metrics", "/groups", "/openapi.json"] {
            let (status, body) = call(&rest, "GET", path, "application/json", "").await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
            assert_eq!(call(&api, "GET", path, "application/json", "").await.0, StatusCode::OK, "{path}");
        }

        let json = "application/vnd.kafka.v2+json";
        let (status, body) = call(&rest, "POST", "/consumers/g", json, r#"{"format":"binary"}"#).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let created: serde_json::Value = serde_json::from_str(&body).unwrap();
        let subscription = format!("/consumers/g/instances/{}/subscription", created["instance_id"].as_str().unwrap());
        let (status, body) = call(&api, "POST", &subscription, json, r#"{"topics":["t"]}"#).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "the instance created on one listener answers on the other: {body}");
        broker.shutdown();
    }
}
