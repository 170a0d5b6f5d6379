//! The listener's settings: where it listens, what it tells clients, what it accepts. A module of its own so the
//! handlers that read them (Metadata and FindCoordinator answer with the advertised address) never depend on the
//! socket code in `server.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use weir_security::{Security, SecuritySettings};

/// How the listener is reached and what it accepts.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub listen: SocketAddr,
    /// The host and port clients are told to connect to in Metadata responses.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Largest request accepted; a larger one closes the connection (Kafka's `socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// The users and ACLs: whether clients must authenticate (SASL, or a client certificate) and what each may do.
    pub security: Arc<Security>,
    /// TLS on every connection (the SSL and SASL_SSL security protocols); `None` is plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
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
            security: Security::open_to_all(),
            tls: None,
            max_connections: 1000,
            idle_timeout: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(5),
        }
    }

    /// Requires SASL with these users (name, password), held in memory, as a settings file's `[kafka.users]` does.
    pub fn with_users(mut self, users: &[(&str, &str)]) -> Self {
        let settings = SecuritySettings {
            require_authentication: true,
            config_users: users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect(),
            ..SecuritySettings::default()
        };
        // The names and passwords come from the caller's code, not from the network.
        self.security = Security::in_memory(settings).expect("valid user names");
        self
    }
}
