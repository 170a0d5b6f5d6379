//! The listener's settings: where it listens, what it tells clients, what it accepts. A module of its own so the
//! handlers that read them (Metadata and FindCoordinator answer with the advertised address) never depend on the
//! socket code in `server.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

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
    pub users: Option<HashMap<String, String>>,
    /// Most connections served at once (Kafka's `max.connections`); further ones are closed on arrival.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (Kafka's `connections.max.idle.ms`).
    pub idle_timeout: Duration,
    /// How long stopping the listener waits for the requests in flight to be answered before it closes their
    /// connections anyway (a long-poll Fetch or a JoinGroup waiting for a rebalance can take much longer).
    pub drain_timeout: Duration,
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
            drain_timeout: Duration::from_secs(5),
        }
    }
}
