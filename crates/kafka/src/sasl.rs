//! SASL authentication of a connection (KIP-43's SaslHandshake, then SaslAuthenticate, or after a v0 handshake the
//! bare tokens): PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, against the users of `weir_security`. When the listener
//! requires authentication a connection may send only the APIs the API table marks as allowed before it (ApiVersions
//! and the SASL requests) until it has authenticated; anything else closes it, as Kafka's SASL listeners do. A failed
//! authentication is answered once with SASL_AUTHENTICATION_FAILED and the connection closed; the log names the user
//! and mechanism, never the password or the proof.

use bytes::Bytes;
use kafka_protocol::messages::sasl_authenticate_response::SaslAuthenticateResponse;
use kafka_protocol::messages::sasl_handshake_response::SaslHandshakeResponse;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use weir_security::{Mechanism, ScramServer, Security};

use crate::error_code::{ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM};

/// The mechanisms offered, in the order SaslHandshake lists them.
pub const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// A connection's identity and where it is in authenticating.
#[derive(Debug)]
pub struct Session {
    /// Who the connection acts as: `None` until it authenticates when the listener requires it; otherwise
    /// `User:ANONYMOUS`, or a client certificate's subject (mTLS), until SASL names someone else.
    pub principal: Option<String>,
    state: State,
}

#[derive(Debug)]
enum State {
    /// No SASL exchange yet (or it ended): a handshake may start one.
    Idle,
    /// After the handshake: the mechanism's messages follow, in SaslAuthenticate requests or (`raw`, after a v0
    /// handshake) as bare size-prefixed frames.
    Plain {
        raw: bool,
    },
    Scram {
        server: Box<ScramServer>,
        raw: bool,
        first_done: bool,
    },
    /// Authenticated by SASL: Kafka allows one exchange per connection (without KIP-368 re-authentication).
    Done,
}

/// What a SASL message leads to.
#[derive(Debug)]
pub enum Step {
    /// Send this token back; the exchange goes on, or has succeeded.
    Continue(Vec<u8>),
    /// Authentication failed: answer the failure, then close the connection.
    Failed(&'static str),
}

impl Session {
    /// A new connection's session; `certificate` is the principal of its verified client certificate, if any.
    pub fn new(security: &Security, certificate: Option<String>) -> Session {
        let principal = match certificate {
            Some(p) => Some(p),
            None if security.requires_authentication() => None,
            None => Some(weir_security::ANONYMOUS.to_string()),
        };
        Session { principal, state: State::Idle }
    }

    pub fn allows_requests(&self) -> bool {
        self.principal.is_some()
    }

    /// Whether the next frame is a bare SASL token rather than a request (after a v0 handshake).
    pub fn awaits_raw_token(&self) -> bool {
        matches!(self.state, State::Plain { raw: true } | State::Scram { raw: true, .. })
    }

    pub fn handshake(&mut self, version: i16, req: SaslHandshakeRequest) -> SaslHandshakeResponse {
        let mut r = SaslHandshakeResponse::default();
        r.mechanisms = MECHANISMS.iter().map(|m| StrBytes::from_static_str(m)).collect();
        let raw = version == 0;
        if !matches!(self.state, State::Idle) {
            r.error_code = ILLEGAL_SASL_STATE;
        } else if &*req.mechanism == "PLAIN" {
            self.state = State::Plain { raw };
        } else if let Some(m) = Mechanism::from_name(&req.mechanism) {
            self.state = State::Scram { server: Box::new(ScramServer::new(m)), raw, first_done: false };
        } else {
            r.error_code = UNSUPPORTED_SASL_MECHANISM;
        }
        r
    }

    /// Takes one SASL message of the mechanism the handshake chose.
    pub fn step(&mut self, security: &Security, peer: &str, token: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Plain { .. } => match check_plain(security, token) {
                Ok(principal) => {
                    self.principal = Some(principal);
                    self.state = State::Done;
                    Step::Continue(Vec::new())
                }
                Err(user) => {
                    tracing::info!(%peer, user, "SASL/PLAIN authentication failed: wrong user name or password");
                    Step::Failed("Authentication failed: invalid username or password")
                }
            },
            State::Scram { mut server, raw, first_done: false } => {
                let m = server.mechanism();
                match server.client_first(token, |user| security.users.scram(user, m)) {
                    Ok(first) => {
                        self.state = State::Scram { server, raw, first_done: true };
                        Step::Continue(first)
                    }
                    Err(e) => {
                        tracing::info!(%peer, "SASL/{} authentication failed: {e}", m.name());
                        Step::Failed("Authentication failed during authentication due to a malformed SCRAM message")
                    }
                }
            }
            State::Scram { mut server, first_done: true, .. } => {
                let m = server.mechanism();
                match server.client_final(token) {
                    Ok((last, user)) => {
                        self.principal = Some(format!("User:{user}"));
                        self.state = State::Done;
                        Step::Continue(last)
                    }
                    Err(e) => {
                        tracing::info!(%peer, "SASL/{} authentication failed: {e}", m.name());
                        Step::Failed("Authentication failed during authentication due to invalid credentials")
                    }
                }
            }
            state @ (State::Idle | State::Done) => {
                self.state = state;
                Step::Failed("SaslAuthenticate before SaslHandshake")
            }
        }
    }

    /// SaslAuthenticate: a step of the exchange in a request. The `bool` is true when the connection must close.
    pub fn authenticate(
        &mut self,
        security: &Security,
        peer: &str,
        req: SaslAuthenticateRequest,
    ) -> (SaslAuthenticateResponse, bool) {
        let mut r = SaslAuthenticateResponse::default();
        if !matches!(self.state, State::Plain { raw: false } | State::Scram { raw: false, .. }) {
            r.error_code = ILLEGAL_SASL_STATE;
            r.error_message = Some(StrBytes::from_static_str("SaslAuthenticate before SaslHandshake"));
            return (r, true);
        }
        match self.step(security, peer, &req.auth_bytes) {
            Step::Continue(token) => {
                r.auth_bytes = Bytes::from(token);
                (r, false)
            }
            Step::Failed(why) => {
                r.error_code = SASL_AUTHENTICATION_FAILED;
                r.error_message = Some(StrBytes::from_static_str(why));
                (r, true)
            }
        }
    }
}

/// Checks a PLAIN token, `authzid\0user\0password` (RFC 4616; an authorization identity, if given, must equal the
/// user): the principal, or the user name tried (for the log).
fn check_plain(security: &Security, token: &[u8]) -> Result<String, String> {
    let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
    let [authz, user, password] = parts.as_slice() else {
        return Err(String::new());
    };
    let user = String::from_utf8_lossy(user).to_string();
    let password = String::from_utf8_lossy(password);
    if !(authz.is_empty() || *authz == user.as_bytes()) {
        return Err(user);
    }
    security.check_password(&user, &password).ok_or(user)
}
