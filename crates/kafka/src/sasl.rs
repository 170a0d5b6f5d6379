//! SASL/PLAIN authentication (KIP-43 handshake, then SaslAuthenticate), against the users of the listener's config.
//! When users are configured, a connection may send only the APIs the API table marks as allowed before
//! authentication (ApiVersions, SaslHandshake, SaslAuthenticate) until it has authenticated; anything else closes it,
//! as Kafka's SASL listeners do.

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::messages::sasl_authenticate_response::SaslAuthenticateResponse;
use kafka_protocol::messages::sasl_handshake_response::SaslHandshakeResponse;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;

use crate::error_code::{ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM};

/// Where a connection is in authenticating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthState {
    /// No users configured: everything is allowed.
    Open,
    AwaitingHandshake,
    AwaitingAuthenticate,
    /// After a v0 handshake the client sends the PLAIN token as a bare size-prefixed frame, not a Kafka request.
    AwaitingRawToken,
    Authenticated(String),
}

impl AuthState {
    pub fn new(users: &Option<HashMap<String, String>>) -> Self {
        if users.is_some() {
            AuthState::AwaitingHandshake
        } else {
            AuthState::Open
        }
    }

    pub fn allows_requests(&self) -> bool {
        matches!(self, AuthState::Open | AuthState::Authenticated(_))
    }
}

pub fn handshake(state: &mut AuthState, version: i16, req: SaslHandshakeRequest) -> SaslHandshakeResponse {
    let mut r = SaslHandshakeResponse::default();
    r.mechanisms = vec![StrBytes::from_static_str("PLAIN")];
    if *req.mechanism != *"PLAIN" {
        r.error_code = UNSUPPORTED_SASL_MECHANISM;
    } else if *state != AuthState::AwaitingHandshake {
        r.error_code = ILLEGAL_SASL_STATE;
    } else if version == 0 {
        *state = AuthState::AwaitingRawToken;
    } else {
        *state = AuthState::AwaitingAuthenticate;
    }
    r
}

/// Checks a PLAIN token; on success the state becomes Authenticated, otherwise AwaitingHandshake.
pub fn check_plain(state: &mut AuthState, users: &Option<HashMap<String, String>>, token: &[u8]) -> bool {
    let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
    let user = match (parts.as_slice(), users) {
        ([authz, user, password], Some(users)) => {
            let user = String::from_utf8_lossy(user).to_string();
            let ok = (authz.is_empty() || *authz == user.as_bytes())
                && users.get(&user).is_some_and(|p| p.as_bytes() == *password);
            ok.then_some(user)
        }
        _ => None,
    };
    match user {
        Some(u) => {
            *state = AuthState::Authenticated(u);
            true
        }
        None => {
            *state = AuthState::AwaitingHandshake;
            false
        }
    }
}

/// Checks `\0user\0password` (RFC 4616; an authorization identity, if given, must equal the user).
pub fn authenticate(
    state: &mut AuthState,
    users: &Option<HashMap<String, String>>,
    req: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let mut r = SaslAuthenticateResponse::default();
    r.auth_bytes = Bytes::new();
    if *state != AuthState::AwaitingAuthenticate {
        r.error_code = ILLEGAL_SASL_STATE;
        r.error_message = Some(StrBytes::from_static_str("SaslAuthenticate before SaslHandshake"));
        return r;
    }
    let ok = check_plain(state, users, &req.auth_bytes);
    if !ok {
        r.error_code = SASL_AUTHENTICATION_FAILED;
        r.error_message = Some(StrBytes::from_static_str("Authentication failed: invalid username or password"));
    }
    r
}
