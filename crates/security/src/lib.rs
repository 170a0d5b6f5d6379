//! Who may connect to weir and what they may do, shared by every listener (Kafka, HTTP, and the ones to come) so a
//! user, a password and an ACL mean the same thing everywhere.
//!
//! - `scram.rs`: SCRAM-SHA-256/512 (RFC 5802, 7677): credentials stored salted and hashed, and the server side of
//!   the exchange. A PLAIN or HTTP Basic password is checked against the same stored credential.
//! - `users.rs`: the durable user store (`users.jsonl` in the data directory): SCRAM credentials and bearer tokens
//!   (only their SHA-256 digests are kept), managed by `weir users` and Kafka's AlterUserScramCredentials.
//! - `acl.rs`: ACLs in Kafka's model (principal, host, operation, allow/deny on a literal or prefixed resource
//!   pattern), the durable ACL store (`acls.jsonl`) and the decision Kafka's `AclAuthorizer` makes.
//! - `files.rs`: the JSON-lines files both stores live in: read with the line of any error, rewritten atomically,
//!   and re-read when another process (the CLI) changed them.
//! - `sessions.rs`: the web console's browser sessions (in memory, by the digest of their ids).
//! - `tls.rs`: rustls server configs from PEM files, the principal of a client certificate, and `weir certs dev`.
//!
//! [`Security`] bundles the stores with the settings that turn them on; a listener asks it to authenticate a
//! password, a SCRAM exchange or a token, and to authorize a principal's operation on a resource.

pub mod acl;
mod error;
mod files;
pub mod scram;
pub mod sessions;
pub mod tls;
pub mod users;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use acl::{Acl, AclFilter, AclStore, Operation, PatternFilter, PatternType, Permission, ResourceType};
pub use error::SecurityError;
pub use scram::{Mechanism, ScramCredential, ScramServer};
pub use users::UserStore;

/// The principal of a client that did not authenticate (Kafka's name for it).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// The name of the one cluster resource (Kafka's).
pub const CLUSTER: &str = "kafka-cluster";

/// Which authorizer decides requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthorizerKind {
    /// Every client may do everything (weir's behaviour before ACLs).
    #[default]
    None,
    /// Deny what no ACL allows; super users may do everything.
    Acl,
}

/// How security is configured (`[security]` and `[kafka.users]` in the settings file).
#[derive(Clone, Default)]
pub struct SecuritySettings {
    pub authorizer: AuthorizerKind,
    /// Principals (`User:name`) allowed everything, whatever the ACLs say.
    pub super_users: Vec<String>,
    /// Whether clients must authenticate (SASL on Kafka, Basic/bearer on HTTP, or a client certificate).
    pub require_authentication: bool,
    /// Users with plaintext passwords from the settings file (`[kafka.users]`): held in memory as SCRAM
    /// credentials, never written to disk.
    pub config_users: BTreeMap<String, String>,
}

impl std::fmt::Debug for SecuritySettings {
    // The settings file's users' passwords are never shown: settings end up in logs and error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecuritySettings")
            .field("authorizer", &self.authorizer)
            .field("super_users", &self.super_users)
            .field("require_authentication", &self.require_authentication)
            .field("config_users", &self.config_users.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The users, the ACLs and the settings that say whether they are enforced: one per process, shared by every
/// listener. Its `Debug` (through `UserStore`'s) shows no credential.
#[derive(Debug)]
pub struct Security {
    pub users: UserStore,
    pub acls: AclStore,
    /// The web console's logged-in browsers.
    pub sessions: sessions::Sessions,
    settings: SecuritySettings,
}

impl Security {
    /// Opens the stores in `dir` (created if missing). A file that does not parse is an error naming it and the
    /// line.
    pub fn open(dir: &Path, settings: SecuritySettings) -> Result<Arc<Security>, SecurityError> {
        let users = UserStore::open(&dir.join("users.jsonl"), &settings.config_users)?;
        let acls = AclStore::open(&dir.join("acls.jsonl"))?;
        for s in &settings.super_users {
            acl::check_principal(s)?;
        }
        Ok(Arc::new(Security { users, acls, sessions: Default::default(), settings }))
    }

    /// The stores in memory only (for tests and tools): `settings` as given, nothing read or written.
    pub fn in_memory(settings: SecuritySettings) -> Result<Arc<Security>, SecurityError> {
        let users = UserStore::in_memory_with(&settings.config_users)?;
        for s in &settings.super_users {
            acl::check_principal(s)?;
        }
        Ok(Arc::new(Security { users, acls: AclStore::in_memory(), sessions: Default::default(), settings }))
    }

    /// No authentication, no authorizer, no stores on disk: every client may do everything.
    pub fn open_to_all() -> Arc<Security> {
        Arc::new(Security {
            users: UserStore::in_memory(),
            acls: AclStore::in_memory(),
            sessions: Default::default(),
            settings: Default::default(),
        })
    }

    pub fn settings(&self) -> &SecuritySettings {
        &self.settings
    }

    /// Whether clients must authenticate before anything else.
    pub fn requires_authentication(&self) -> bool {
        self.settings.require_authentication
    }

    /// Whether requests are checked against the ACLs.
    pub fn authorizing(&self) -> bool {
        self.settings.authorizer == AuthorizerKind::Acl
    }

    /// Whether `principal` may do `operation` on the resource, from `host` (the client's address). Always true
    /// without an authorizer.
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.authorizing() || self.settings.super_users.iter().any(|s| s == principal) {
            return true;
        }
        self.acls.allows(principal, host, operation, resource_type, name)
    }

    /// Whether `principal` may do `operation` on some resource of the type (Kafka's `authorizeByResourceType`: an
    /// idempotent producer needs WRITE on some topic, KIP-679).
    pub fn authorize_any(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.authorizing() || self.settings.super_users.iter().any(|s| s == principal) {
            return true;
        }
        self.acls.allows_some(principal, host, operation, resource_type)
    }

    /// The principal `User:name` if `password` is the user's (SASL/PLAIN, HTTP Basic).
    pub fn check_password(&self, user: &str, password: &str) -> Option<String> {
        self.users.check_password(user, password).then(|| format!("User:{user}"))
    }

    /// [`check_password`](Security::check_password) answered from the digest of the password that last matched,
    /// without PBKDF2: `None` when it cannot tell (see `UserStore::check_remembered`).
    pub fn check_remembered_password(&self, user: &str, password: &str) -> Option<String> {
        self.users.check_remembered(user, password).then(|| format!("User:{user}"))
    }

    /// The principal of a live web console session whose user still has a password: a user removed (or their
    /// password deleted) since they logged in, by another process too, is logged out.
    pub fn check_session(&self, id: &str) -> Option<String> {
        let principal = self.sessions.check(id)?;
        let user = principal.strip_prefix("User:").unwrap_or(&principal);
        if Mechanism::ALL.into_iter().any(|m| self.users.scram(user, m).is_some()) {
            Some(principal)
        } else {
            self.sessions.end(id);
            None
        }
    }

    /// The principal a bearer token was issued to.
    pub fn check_token(&self, token: &str) -> Option<String> {
        self.users.check_token(token).map(|user| format!("User:{user}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_holds_no_password_or_credential() {
        let settings = SecuritySettings {
            config_users: BTreeMap::from([("alice".to_string(), "alice-secret-pw".to_string())]),
            ..SecuritySettings::default()
        };
        let security = Security::in_memory(settings.clone()).unwrap();
        security.users.set_password("bob", "bob-secret-pw", 4096).unwrap();
        let shown = format!("{settings:?} {security:?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("secret-pw") && !shown.contains("stored_key"), "{shown}");
    }
}
