//! Browser sessions for the web console: a user who logs in with their password gets a random session id, kept in an
//! HttpOnly cookie, that stands for their principal until they log out or it expires. Only the SHA-256 digest of an
//! id is held, in memory: a restart logs everyone out, and nothing of a session is written to disk.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// How long a session lasts after its login, used or not.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Most sessions held at once: past it, logging in ends the oldest (a flood of logins cannot grow memory).
const MAX_SESSIONS: usize = 10_000;

/// The sessions of logged-in browsers, by the digest of their ids.
#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

struct Session {
    principal: String,
    expires: Instant,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("held", &self.by_digest.lock().len()).finish()
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// A new session for `principal`: its id, to hand to the browser once.
    pub fn start(&self, principal: &str) -> String {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let id: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut held = self.by_digest.lock();
        held.retain(|_, s| s.expires > now);
        if held.len() >= MAX_SESSIONS {
            if let Some(oldest) = held.iter().min_by_key(|(_, s)| s.expires).map(|(d, _)| *d) {
                held.remove(&oldest);
            }
        }
        held.insert(digest(&id), Session { principal: principal.to_string(), expires: now + SESSION_LIFETIME });
        id
    }

    /// The principal of a live session.
    pub fn check(&self, id: &str) -> Option<String> {
        let mut held = self.by_digest.lock();
        let d = digest(id);
        match held.get(&d) {
            Some(s) if s.expires > Instant::now() => Some(s.principal.clone()),
            Some(_) => {
                held.remove(&d);
                None
            }
            None => None,
        }
    }

    /// Ends a session (logging out); false if there was none.
    pub fn end(&self, id: &str) -> bool {
        self.by_digest.lock().remove(&digest(id)).is_some()
    }

    /// Ends every session of `principal` (its user was removed).
    pub fn end_all_of(&self, principal: &str) {
        self.by_digest.lock().retain(|_, s| s.principal != principal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stands_for_its_principal_until_it_ends() {
        let sessions = Sessions::default();
        let id = sessions.start("User:alice");
        assert_eq!(id.len(), 64);
        assert_eq!(sessions.check(&id).as_deref(), Some("User:alice"));
        assert_ne!(sessions.start("User:alice"), id, "every login its own id");
        assert_eq!(sessions.check("not-a-session"), None);
        assert!(sessions.end(&id));
        assert_eq!(sessions.check(&id), None);
        assert!(!sessions.end(&id));
        let bob = sessions.start("User:bob");
        sessions.end_all_of("User:bob");
        assert_eq!(sessions.check(&bob), None);
    }
}
