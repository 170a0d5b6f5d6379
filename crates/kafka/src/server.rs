//! The listener: accepts connections and serves each one's requests in order (Kafka clients rely on responses
//! arriving in request order on a connection). A bad frame closes that connection only.
//!
//! Connections are bounded like Kafka's `max.connections` and `connections.max.idle.ms`: past the cap a new
//! connection is closed at once (a client retries with backoff; one left waiting in the kernel's backlog would only
//! time out), one silent for the idle timeout is closed, and the conditions that refuse connections (the cap, or
//! accept failing because the process is out of file descriptors) are logged once when they start and once when they
//! clear, never per connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use weir_broker::Broker;

use crate::codec::{self, CodecError};
use crate::{groups, handlers, sasl};

/// Largest frame a connection may send before it has authenticated (Kafka's `sasl.server.max.receive.size`): the
/// SASL requests are small, and an unauthenticated client must not make the broker buffer 100 MiB.
const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;

/// How the listener is reached and what it accepts.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub listen: SocketAddr,
    /// The host and port clients are told to connect to in Metadata responses.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Largest request accepted; a larger one closes the connection (Kafka's `socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// SASL/PLAIN users (name → password); `None` leaves the listener open.
    pub users: Option<std::collections::HashMap<String, String>>,
    /// Most connections served at once (Kafka's `max.connections`); further ones are closed on arrival.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (Kafka's `connections.max.idle.ms`).
    pub idle_timeout: Duration,
}

impl ListenerConfig {
    pub fn new(listen: SocketAddr) -> Self {
        ListenerConfig {
            listen,
            advertised_host: listen.ip().to_string(),
            advertised_port: listen.port(),
            max_request_bytes: 100 << 20,
            users: None,
            max_connections: 1000,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Who is on the other end of a connection, as group membership records it.
#[derive(Clone, Debug)]
pub struct Client {
    pub client_id: String,
    pub host: String,
}

/// A running listener.
#[derive(Debug)]
pub struct KafkaListener {
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl KafkaListener {
    /// Binds and starts serving. With port 0 the advertised port becomes the one bound.
    pub async fn start(broker: Arc<Broker>, mut config: ListenerConfig) -> std::io::Result<KafkaListener> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        if config.advertised_port == 0 {
            config.advertised_port = local_addr.port();
        }
        let config = Arc::new(config);
        let task = tokio::spawn(accept_loop(listener, broker, config));
        Ok(KafkaListener { local_addr, task })
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for KafkaListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A condition that refuses connections, logged when it starts and when it clears with how many it refused.
#[derive(Debug, Default)]
struct Condition {
    refused: AtomicU64,
}

impl Condition {
    /// Counts one refusal; true for the first since the condition last cleared (the caller logs it).
    fn hit(&self) -> bool {
        self.refused.fetch_add(1, Ordering::Relaxed) == 0
    }

    /// How many were refused if the condition held until now (and resets it), else `None`.
    fn clear(&self) -> Option<u64> {
        match self.refused.swap(0, Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }
}

async fn accept_loop(listener: TcpListener, broker: Arc<Broker>, config: Arc<ListenerConfig>) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let (at_cap, out_of_fds) = (Condition::default(), Condition::default());
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE) or another transient failure: accepting again at once
                // would spin on the same error, so wait, longer each time, until an accept succeeds.
                if out_of_fds.hit() {
                    tracing::error!(
                        "the Kafka listener cannot accept connections: {e}; retrying with backoff (raise `ulimit -n` \
                         or lower --kafka-max-connections if this is the file-descriptor limit)"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        if let Some(n) = out_of_fds.clear() {
            tracing::warn!("the Kafka listener accepts connections again ({n} accept attempts failed meanwhile)");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if at_cap.hit() {
                tracing::warn!(
                    max = config.max_connections,
                    "the Kafka listener is at its limit of {} connections; closing new ones until some close \
                     (--kafka-max-connections)",
                    config.max_connections
                );
            }
            drop(stream);
            continue;
        };
        if let Some(n) = at_cap.clear() {
            tracing::warn!("the Kafka listener is below its connection limit again ({n} connections were refused)");
        }
        let (broker, config) = (broker.clone(), config.clone());
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = serve(stream, peer, broker, config).await {
                tracing::debug!(%peer, "kafka connection closed: {e}");
            }
        });
    }
}

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    config: Arc<ListenerConfig>,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut auth = sasl::AuthState::new(&config.users);
    loop {
        loop {
            let max_frame = if auth.allows_requests() {
                config.max_request_bytes
            } else {
                config.max_request_bytes.min(MAX_UNAUTHENTICATED_FRAME)
            };
            let Some(frame) = codec::take_frame(&mut buf, max_frame)? else {
                break;
            };
            if auth == sasl::AuthState::AwaitingRawToken {
                if !sasl::check_plain(&mut auth, &config.users, &frame) {
                    anyhow::bail!("SASL authentication failed");
                }
                stream.write_all(&0i32.to_be_bytes()).await?; // an empty server token
                continue;
            }
            let peek = codec::peek(&frame)?;
            // Before authenticating, only the SASL requests (and ApiVersions) are even decoded.
            if !auth.allows_requests() && !sasl::allowed_before_authentication(peek.api_key) {
                anyhow::bail!("API key {} before SASL authentication", peek.api_key);
            }
            let request = match codec::decode_request(frame, handlers::supported) {
                Ok(r) => r,
                Err(CodecError::UnsupportedVersion { api: ApiKey::ApiVersions, .. }) => {
                    // Kafka answers an ApiVersions it cannot parse with v0 and UNSUPPORTED_VERSION, so the client
                    // retries with a version both know.
                    let body = ResponseKind::ApiVersions(handlers::api_versions(true));
                    let out = codec::encode_response(ApiKey::ApiVersions, 0, peek.correlation_id, &body)?;
                    stream.write_all(&out).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let (api, version, correlation_id) = (request.api, request.version, request.header.correlation_id);
            let client = Client {
                client_id: request.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
                host: format!("/{}", peer.ip()),
            };
            let allowed = matches!(
                request.body,
                RequestKind::ApiVersions(_) | RequestKind::SaslHandshake(_) | RequestKind::SaslAuthenticate(_)
            );
            if !allowed && !auth.allows_requests() {
                anyhow::bail!("{api:?} before SASL authentication");
            }
            let body = match request.body {
                RequestKind::SaslHandshake(r) => ResponseKind::SaslHandshake(sasl::handshake(&mut auth, version, r)),
                RequestKind::SaslAuthenticate(r) => {
                    let response = sasl::authenticate(&mut auth, &config.users, r);
                    let failed = response.error_code != 0;
                    let out = codec::encode_response(
                        api,
                        version,
                        correlation_id,
                        &ResponseKind::SaslAuthenticate(response),
                    )?;
                    stream.write_all(&out).await?;
                    if failed {
                        anyhow::bail!("SASL authentication failed");
                    }
                    continue;
                }
                RequestKind::DescribeConfigs(r) => {
                    ResponseKind::DescribeConfigs(handlers::describe_configs(&broker, r))
                }
                RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(handlers::api_versions(false)),
                RequestKind::Metadata(r) => ResponseKind::Metadata(handlers::metadata(&broker, &config, r)),
                RequestKind::Produce(r) => {
                    let acks = r.acks;
                    let response = handlers::produce(&broker, r).await;
                    if acks == 0 {
                        continue; // acks=0: the client expects no response at all
                    }
                    ResponseKind::Produce(response)
                }
                RequestKind::Fetch(r) => ResponseKind::Fetch(handlers::fetch(&broker, r).await),
                RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(handlers::list_offsets(&broker, r)),
                RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(handlers::create_topics(&broker, r)),
                RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(handlers::delete_topics(&broker, r)),
                RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(handlers::init_producer_id(&broker, r)),
                RequestKind::FindCoordinator(r) => {
                    ResponseKind::FindCoordinator(groups::find_coordinator(&config, version, r))
                }
                RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(groups::join_group(&broker, &client, r).await),
                RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync_group(&broker, r).await),
                RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(&broker, r)),
                RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave_group(&broker, r).await),
                RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(groups::offset_commit(&broker, r)),
                RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(groups::offset_fetch(&broker, r)),
                RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list_groups(&broker, r)),
                RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(groups::describe_groups(&broker, r)),
                other => anyhow::bail!("no handler for {other:?}"),
            };
            let out = codec::encode_response(api, version, correlation_id, &body)?;
            stream.write_all(&out).await?;
        }
        match tokio::time::timeout(config.idle_timeout, stream.read_buf(&mut buf)).await {
            Ok(read) => {
                if read? == 0 {
                    return Ok(());
                }
            }
            Err(_) => {
                tracing::debug!(%peer, "closing a Kafka connection idle for {:?}", config.idle_timeout);
                return Ok(());
            }
        }
    }
}

/// A broker and its Kafka listener on a runtime and threads of their own, for tests and tools that drive blocking
/// Kafka clients (librdkafka's synchronous commits, child processes) from the same process: those clients can then
/// never starve the broker that must answer them. Dropping it stops the listener and shuts the broker down.
#[derive(Debug)]
pub struct BackgroundBroker {
    pub broker: Arc<Broker>,
    pub addr: SocketAddr,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundBroker {
    pub fn start(broker_config: weir_broker::BrokerConfig, listener_config: ListenerConfig) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("weir-background".into()).spawn(move || {
            let started = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| {
                    let (broker, listener) = runtime.block_on(async {
                        let broker = Broker::open(broker_config)?;
                        let listener = KafkaListener::start(broker.clone(), listener_config).await?;
                        anyhow::Ok((broker, listener))
                    })?;
                    Ok((runtime, broker, listener))
                });
            match started {
                Ok((runtime, broker, listener)) => {
                    let _ = ready_tx.send(Ok((broker.clone(), listener.local_addr)));
                    let _ = stop_rx.recv();
                    listener.stop();
                    broker.shutdown();
                    drop(runtime);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
        let (broker, addr) = ready_rx.recv().map_err(|_| anyhow::anyhow!("the background broker thread died"))??;
        Ok(BackgroundBroker { broker, addr, stop: Some(stop_tx), thread: Some(thread) })
    }
}

impl Drop for BackgroundBroker {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
