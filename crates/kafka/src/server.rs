//! The listener: accepts connections and serves each one's requests in order (Kafka clients rely on responses
//! arriving in request order on a connection). A bad frame closes that connection only. Each request goes to its
//! handler through [`apis::dispatch!`], whose arms the compiler checks against the API table.
//!
//! Connections are bounded like Kafka's `max.connections` and `connections.max.idle.ms`: past the cap a new
//! connection is closed at once (a client retries with backoff; one left waiting in the kernel's backlog would only
//! time out), one silent for the idle timeout is closed, and the conditions that refuse connections (the cap, or
//! accept failing because the process is out of file descriptors) are logged once when they start and once when they
//! clear, never per connection.
//!
//! Stopping drains: accepting ends (new connections are refused), a connection waiting for its next request closes,
//! and one in the middle of a request answers it and then closes, for up to `drain_timeout`; connections still busy
//! after that are closed unanswered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use weir_broker::Broker;

use crate::apis::{self, dispatch};
use crate::authorize::{self, Authz, Verdict};
use crate::codec::{self, CodecError};
use crate::config::ListenerConfig;
use crate::groups::{self, Client};
use crate::{acls, admin, handlers, sasl, transactions};

/// Largest frame a connection may send before it has authenticated (Kafka's `sasl.server.max.receive.size`): the
/// SASL requests are small, and an unauthenticated client must not make the broker buffer 100 MiB.
const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;

/// How long a failed authentication waits before it is answered and the connection closed (Kafka's
/// `connection.failed.authentication.delay.ms`): a client guessing passwords, or one retrying a wrong one in a loop,
/// gets ten tries a second per connection rather than as many as the CPU allows.
const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(100);

/// How long a TLS handshake may take before the connection is closed (a client that connects and sends nothing
/// must not hold a connection slot).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running listener. Dropping it closes the listener and every connection at once; [`KafkaListener::stop`] drains.
///
/// # Example
///
/// A broker served on a free port, asked which APIs it serves as a client's first request does.
///
/// ```
/// use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
/// use weir_broker::{Broker, BrokerConfig};
/// use weir_kafka::{apis, KafkaListener, ListenerConfig};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(BrokerConfig::new(dir.path()))?;
/// let listener = KafkaListener::start(broker.clone(), ListenerConfig::new("127.0.0.1:0".parse()?)).await?;
///
/// // ApiVersions v0: size, API key 18, version 0, correlation id 7, client id "doc", no body.
/// let mut stream = tokio::net::TcpStream::connect(listener.local_addr).await?;
/// stream.write_all(&[0, 0, 0, 13, 0, 18, 0, 0, 0, 0, 0, 7, 0, 3, b'd', b'o', b'c']).await?;
/// let size = stream.read_i32().await? as usize;
/// let mut response = vec![0; size];
/// stream.read_exact(&mut response).await?;
///
/// // The correlation id, error code 0, then the API table: a count and (key, min, max) per API.
/// assert_eq!(response[..4], 7i32.to_be_bytes());
/// assert_eq!(response[4..6], 0i16.to_be_bytes());
/// assert_eq!(response[6..10], (apis::APIS.len() as i32).to_be_bytes());
/// assert_eq!(size, 10 + 6 * apis::APIS.len());
///
/// listener.stop().await; // answers what is in flight, then closes every connection
/// assert_eq!(stream.read(&mut [0; 1]).await?, 0, "the connection is closed");
/// broker.shutdown();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct KafkaListener {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
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
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, broker, config, stopped));
        Ok(KafkaListener { local_addr, stop, task })
    }

    /// Stops accepting, lets the requests in flight be answered (for up to the config's `drain_timeout`), closes
    /// every connection, and returns once they are all closed.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        // The accept loop bounds the drain itself; it only fails if it panicked or was aborted.
        if let Err(e) = (&mut self.task).await {
            tracing::warn!("the Kafka listener did not stop cleanly: {e}");
        }
    }
}

impl Drop for KafkaListener {
    fn drop(&mut self) {
        // Dropping the accept loop's task drops its connections' tasks too (they are in its `JoinSet`).
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

/// Accepts until `stop`, each connection served on a task of its own while a slot under the cap is free, then
/// drains the connections (see [`drain`]).
async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: Arc<ListenerConfig>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut connections = JoinSet::new();
    let (at_cap, out_of_fds) = (Condition::default(), Condition::default());
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        // Reap the connections that ended, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
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
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        if let Some(n) = out_of_fds.clear() {
            tracing::warn!("the Kafka listener accepts connections again ({n} accept attempts failed meanwhile)");
        }
        let Some(slot) = take_slot(&slots, &at_cap, config.max_connections) else {
            drop(stream);
            continue;
        };
        let (broker, config, stop) = (broker.clone(), config.clone(), stop.clone());
        connections.spawn(async move {
            let _slot = slot;
            if let Err(e) = open(stream, peer, broker, config, stop).await {
                tracing::debug!(%peer, "kafka connection closed: {e}");
            }
        });
    }
    // New connections are refused from here on; each open one saw `stop` too and closes once it is between requests.
    drop(listener);
    drain(connections, config.drain_timeout).await;
}

/// A slot for a new connection, or `None` at the cap (logged when the listener reaches it and when it is below it
/// again, not per connection).
fn take_slot(slots: &Arc<Semaphore>, at_cap: &Condition, max: usize) -> Option<OwnedSemaphorePermit> {
    let Ok(slot) = slots.clone().try_acquire_owned() else {
        if at_cap.hit() {
            tracing::warn!(
                max,
                "the Kafka listener is at its limit of {max} connections; closing new ones until some close \
                 (--kafka-max-connections)"
            );
        }
        return None;
    };
    if let Some(n) = at_cap.clear() {
        tracing::warn!("the Kafka listener is below its connection limit again ({n} connections were refused)");
    }
    Some(slot)
}

/// Waits up to `timeout` for the connections to finish the requests they are answering and close, then closes the
/// ones still busy.
async fn drain(mut connections: JoinSet<()>, timeout: Duration) {
    let drained = tokio::time::timeout(timeout, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            "closing {} Kafka connections still busy {timeout:?} after the listener stopped",
            connections.len()
        );
        connections.shutdown().await;
    }
}

/// One connection's state between its requests.
#[derive(Debug)]
struct Connection {
    broker: Arc<Broker>,
    config: Arc<ListenerConfig>,
    peer: SocketAddr,
    /// The peer's IP address, as ACLs name hosts.
    host: String,
    session: sasl::Session,
}

/// Serves one accepted connection: over TLS when the listener has it (the client certificate, if one was verified,
/// gives the principal), else in plaintext.
async fn open(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    config: Arc<ListenerConfig>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let host = peer.ip().to_string();
    let Some(tls) = config.tls.clone() else {
        let session = sasl::Session::new(&config.security, None);
        return serve(stream, Connection { broker, config, peer, host, session }, stop).await;
    };
    let accepted =
        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tokio_rustls::TlsAcceptor::from(tls).accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // Logged for every failure: a wrong or expired certificate, or a client speaking plaintext to a TLS port.
            let hint = if e.to_string().contains("InvalidContentType") {
                " (is the client speaking plaintext? It needs security.protocol=SSL or SASL_SSL)"
            } else {
                ""
            };
            tracing::warn!(%peer, "a TLS handshake on the Kafka listener failed: {e}{hint}");
            return Ok(());
        }
        Err(_) => {
            tracing::warn!(%peer, "a TLS handshake on the Kafka listener took over {TLS_HANDSHAKE_TIMEOUT:?}; closed");
            return Ok(());
        }
    };
    let certificate = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
    let principal = certificate.as_deref().and_then(weir_security::tls::principal_of);
    let session = sasl::Session::new(&config.security, principal);
    serve(stream, Connection { broker, config, peer, host, session }, stop).await
}

/// What a handled request leaves to send.
#[derive(Debug)]
enum Reply {
    Send(ResponseKind),
    /// Nothing: a Produce with acks=0, whose client expects no response at all.
    Silence,
    /// The response, then the connection is closed for this reason (a failed SASL authentication).
    SendAndClose(ResponseKind, &'static str),
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Serves one connection until the client closes it, it idles past the timeout, the listener stops, or a request
/// is malformed (the error).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    mut conn: Connection,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        // Every complete request received so far, in order; once the listener stops, none is started (a request
        // being answered is finished first: this checks only between requests).
        while !stopping(&stop) {
            let max_frame = if conn.session.allows_requests() {
                conn.config.max_request_bytes
            } else {
                conn.config.max_request_bytes.min(MAX_UNAUTHENTICATED_FRAME)
            };
            let Some(frame) = codec::take_frame(&mut buf, max_frame)? else {
                break;
            };
            answer(&mut stream, &mut conn, frame).await?;
        }
        if stopping(&stop) {
            return Ok(());
        }
        tokio::select! {
            read = tokio::time::timeout(conn.config.idle_timeout, stream.read_buf(&mut buf)) => match read {
                Ok(read) => {
                    if read? == 0 {
                        return Ok(());
                    }
                }
                Err(_) => {
                    let idle = conn.config.idle_timeout;
                    tracing::debug!(peer = %conn.peer, "closing a Kafka connection idle for {idle:?}");
                    return Ok(());
                }
            },
            // Waiting for the next request (or the rest of one): nothing is in flight, so close now.
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// Answers one request frame (or, in SASL's v0 form, takes the raw token it is). An error closes the connection.
async fn answer<S: AsyncWrite + Unpin>(stream: &mut S, conn: &mut Connection, frame: Bytes) -> anyhow::Result<()> {
    if conn.session.awaits_raw_token() {
        // After a v0 handshake: the token is the whole frame, and so is the answer (an empty one for PLAIN).
        match conn.session.step(&conn.config.security, &conn.host, &frame) {
            sasl::Step::Continue(token) => {
                let mut out = Vec::with_capacity(4 + token.len());
                out.extend_from_slice(&(token.len() as i32).to_be_bytes());
                out.extend_from_slice(&token);
                stream.write_all(&out).await?;
                return Ok(());
            }
            sasl::Step::Failed(why) => {
                tokio::time::sleep(FAILED_AUTHENTICATION_DELAY).await;
                anyhow::bail!("SASL authentication failed: {why}")
            }
        }
    }
    let peek = codec::peek(&frame)?;
    // Before authenticating, only the APIs the table allows then are even decoded.
    if !conn.session.allows_requests() && !apis::allowed_before_authentication(peek.api_key) {
        anyhow::bail!("API key {} before SASL authentication", peek.api_key);
    }
    let request = match codec::decode_request(frame, apis::supported) {
        Ok(r) => r,
        Err(CodecError::UnsupportedVersion { api: ApiKey::ApiVersions, .. }) => {
            // Kafka answers an ApiVersions it cannot parse with v0 and UNSUPPORTED_VERSION, so the client
            // retries with a version both know.
            let body = ResponseKind::ApiVersions(handlers::api_versions(true));
            let out = codec::encode_response(ApiKey::ApiVersions, 0, peek.correlation_id, &body)?;
            stream.write_all(&out).await?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let (api, version, correlation_id) = (request.api, request.version, request.header.correlation_id);
    let (body, close) = match handle(conn, request).await? {
        Reply::Send(body) => (body, None),
        Reply::Silence => return Ok(()),
        Reply::SendAndClose(body, why) => (body, Some(why)),
    };
    let out = codec::encode_response(api, version, correlation_id, &body)?;
    if close.is_some() {
        tokio::time::sleep(FAILED_AUTHENTICATION_DELAY).await;
    }
    stream.write_all(&out).await?;
    if let Some(why) = close {
        anyhow::bail!(why);
    }
    Ok(())
}

/// Answers one decoded request. The dispatch's arms are checked against the API table when the crate compiles.
async fn handle(conn: &mut Connection, request: codec::Request) -> anyhow::Result<Reply> {
    let codec::Request { version, header, mut body, .. } = request;
    let Connection { broker, config, peer, host, session } = conn;
    let client = || Client {
        client_id: header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        host: format!("/{}", peer.ip()),
    };
    // Only ApiVersions and the SASL requests come this far unauthenticated, and the ACLs do not apply to them.
    let principal = session.principal.clone().unwrap_or_default();
    let security = config.security.clone();
    let authz = Authz { security: &security, principal: &principal, host };
    let patch = match authorize::check(&authz, broker, version, &mut body) {
        Verdict::Go(patch) => patch,
        Verdict::Refuse(response) => return Ok(Reply::Send(response)),
        Verdict::Close(why) => anyhow::bail!(why),
    };
    let reply = dispatch!(body, {
        Produce(r) => {
            let acks = r.acks;
            let response = handlers::produce(broker, r).await;
            if acks == 0 { Reply::Silence } else { Reply::Send(ResponseKind::Produce(response)) }
        },
        Fetch(r) => Reply::Send(ResponseKind::Fetch(handlers::fetch(broker, r).await)),
        ListOffsets(r) => Reply::Send(ResponseKind::ListOffsets(handlers::list_offsets(broker, r))),
        Metadata(r) => Reply::Send(ResponseKind::Metadata(handlers::metadata(broker, config, r))),
        OffsetCommit(r) => Reply::Send(ResponseKind::OffsetCommit(groups::offset_commit(broker, r))),
        OffsetFetch(r) => Reply::Send(ResponseKind::OffsetFetch(groups::offset_fetch(broker, r))),
        FindCoordinator(r) => {
            Reply::Send(ResponseKind::FindCoordinator(groups::find_coordinator(config, version, r)))
        },
        JoinGroup(r) => Reply::Send(ResponseKind::JoinGroup(groups::join_group(broker, &client(), version, r).await)),
        Heartbeat(r) => Reply::Send(ResponseKind::Heartbeat(groups::heartbeat(broker, r))),
        LeaveGroup(r) => Reply::Send(ResponseKind::LeaveGroup(groups::leave_group(broker, r).await)),
        SyncGroup(r) => Reply::Send(ResponseKind::SyncGroup(groups::sync_group(broker, r).await)),
        DescribeGroups(r) => Reply::Send(ResponseKind::DescribeGroups(groups::describe_groups(broker, r))),
        ListGroups(r) => Reply::Send(ResponseKind::ListGroups(groups::list_groups(broker, r))),
        SaslHandshake(r) => Reply::Send(ResponseKind::SaslHandshake(session.handshake(version, r))),
        ApiVersions(_) => Reply::Send(ResponseKind::ApiVersions(handlers::api_versions(false))),
        CreateTopics(r) => Reply::Send(ResponseKind::CreateTopics(handlers::create_topics(broker, r))),
        DeleteTopics(r) => Reply::Send(ResponseKind::DeleteTopics(handlers::delete_topics(broker, r))),
        InitProducerId(r) => {
            Reply::Send(ResponseKind::InitProducerId(blocking(broker, |b| transactions::init_producer_id(b, r)).await?))
        },
        AddPartitionsToTxn(r) => Reply::Send(ResponseKind::AddPartitionsToTxn(
            blocking(broker, |b| transactions::add_partitions_to_txn(b, r)).await?,
        )),
        AddOffsetsToTxn(r) => Reply::Send(ResponseKind::AddOffsetsToTxn(
            blocking(broker, |b| transactions::add_offsets_to_txn(b, r)).await?,
        )),
        EndTxn(r) => Reply::Send(ResponseKind::EndTxn(blocking(broker, |b| transactions::end_txn(b, r)).await?)),
        TxnOffsetCommit(r) => Reply::Send(ResponseKind::TxnOffsetCommit(
            blocking(broker, |b| transactions::txn_offset_commit(b, r)).await?,
        )),
        DeleteRecords(r) => {
            Reply::Send(ResponseKind::DeleteRecords(blocking(broker, |b| admin::delete_records(b, r)).await?))
        },
        OffsetForLeaderEpoch(r) => {
            Reply::Send(ResponseKind::OffsetForLeaderEpoch(admin::offset_for_leader_epoch(broker, r)))
        },
        AlterConfigs(r) => Reply::Send(ResponseKind::AlterConfigs(blocking(broker, |b| admin::alter_configs(b, r)).await?)),
        DescribeLogDirs(r) => Reply::Send(ResponseKind::DescribeLogDirs(admin::describe_log_dirs(broker, r))),
        CreatePartitions(r) => {
            Reply::Send(ResponseKind::CreatePartitions(blocking(broker, |b| admin::create_partitions(b, r)).await?))
        },
        DeleteGroups(r) => Reply::Send(ResponseKind::DeleteGroups(blocking(broker, |b| admin::delete_groups(b, r)).await?)),
        ElectLeaders(r) => Reply::Send(ResponseKind::ElectLeaders(admin::elect_leaders(broker, r))),
        IncrementalAlterConfigs(r) => Reply::Send(ResponseKind::IncrementalAlterConfigs(
            blocking(broker, |b| admin::incremental_alter_configs(b, r)).await?,
        )),
        OffsetDelete(r) => Reply::Send(ResponseKind::OffsetDelete(blocking(broker, |b| admin::offset_delete(b, r)).await?)),
        DescribeCluster(r) => Reply::Send(ResponseKind::DescribeCluster(admin::describe_cluster(config, r))),
        DescribeProducers(r) => Reply::Send(ResponseKind::DescribeProducers(admin::describe_producers(broker, r))),
        ConsumerGroupHeartbeat(r) => {
            Reply::Send(ResponseKind::ConsumerGroupHeartbeat(groups::consumer_group_heartbeat(broker, &client(), r)))
        },
        ConsumerGroupDescribe(r) => {
            Reply::Send(ResponseKind::ConsumerGroupDescribe(groups::consumer_group_describe(broker, r)))
        },
        GetTelemetrySubscriptions(r) => {
            Reply::Send(ResponseKind::GetTelemetrySubscriptions(admin::get_telemetry_subscriptions(r)))
        },
        PushTelemetry(r) => Reply::Send(ResponseKind::PushTelemetry(admin::push_telemetry(r))),
        DescribeTransactions(r) => {
            Reply::Send(ResponseKind::DescribeTransactions(transactions::describe_transactions(broker, r)))
        },
        ListTransactions(r) => Reply::Send(ResponseKind::ListTransactions(transactions::list_transactions(broker, r))),
        DescribeConfigs(r) => Reply::Send(ResponseKind::DescribeConfigs(handlers::describe_configs(broker, r))),
        SaslAuthenticate(r) => {
            let (response, close) = session.authenticate(&security, host, r);
            let response = ResponseKind::SaslAuthenticate(response);
            if close { Reply::SendAndClose(response, "SASL authentication failed") } else { Reply::Send(response) }
        },
        DescribeAcls(r) => Reply::Send(ResponseKind::DescribeAcls(acls::describe_acls(&authz, r))),
        CreateAcls(r) => Reply::Send(ResponseKind::CreateAcls(acls::create_acls(&authz, r))),
        DeleteAcls(r) => Reply::Send(ResponseKind::DeleteAcls(acls::delete_acls(&authz, r))),
        DescribeUserScramCredentials(r) => Reply::Send(ResponseKind::DescribeUserScramCredentials(
            acls::describe_user_scram_credentials(&authz, r),
        )),
        AlterUserScramCredentials(r) => Reply::Send(ResponseKind::AlterUserScramCredentials(
            acls::alter_user_scram_credentials(&authz, r),
        )),
    });
    Ok(match reply {
        Reply::Send(mut response) => {
            authorize::apply(&authz, patch, &mut response);
            Reply::Send(response)
        }
        other => other,
    })
}

/// Runs a handler that blocks (fsyncs, marker writes) on the blocking pool, so the connection's async worker is free.
async fn blocking<T: Send + 'static>(
    broker: &Arc<Broker>,
    f: impl FnOnce(&Broker) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let broker = broker.clone();
    Ok(tokio::task::spawn_blocking(move || f(&broker)).await?)
}

/// A broker and its Kafka listener on a runtime and threads of their own, for tests and tools that drive blocking
/// Kafka clients (librdkafka's synchronous commits, child processes) from the same process: those clients can then
/// never starve the broker that must answer them. Dropping it stops the listener (draining its connections, see
/// [`KafkaListener::stop`]) and shuts the broker down.
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
                    runtime.block_on(listener.stop());
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
