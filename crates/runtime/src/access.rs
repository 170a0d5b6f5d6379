//! Per-service credentials and ACLs for the systems' services: what each service of a system may do on the bus, in
//! Kafka's terms (READ, WRITE or DESCRIBE on a topic, a group or a transactional id, by literal name or prefix), and
//! a bus that acts as that service and is refused everything else.
//!
//! Why: the Kafka listener holds external clients to their ACLs, but inside `weir up` every service of every system
//! shared one unrestricted bus, so a bug in one (a secretary publishing payments, a cash desk joining another
//! service's group) could write or consume anything. With an [`Access`], a system declares a [`ServiceAccount`] per
//! service, [`Access::provision`]s it when it starts and gives the service the bus [`Access::login`] returns: the
//! service then holds exactly the rights an external Kafka client with the same user and ACLs would hold, so a
//! system's services can later move out of the process (onto a cluster, behind the Kafka listener) unchanged.
//!
//! The trait names no backend, as [`Bus`] does not: a system never depends on `weir-security`.
//!
//! - [`OpenAccess`] (always available, the default in [`crate::Host`] and [`crate::SystemContext`]): like a Kafka
//!   cluster without an authorizer; provisioning does nothing and every login gets the platform's bus.
//! - `SecuredAccess` (cargo feature `security`): users and ACLs in `weir_security::Security`, the stores the Kafka
//!   and HTTP listeners use, so `weir users` and `weir acls` show and change them. Provisioning sets the user's
//!   password (SCRAM credentials) and adds an ALLOW ACL per grant for `User:<user>` from any host (`AclStore::add`
//!   never adds one twice, so provisioning at every start is idempotent; ACLs no longer granted are not removed,
//!   since an operator may have added some for the user). A login checks the password and returns an
//!   `AuthorizedBus`, which checks every call against the ACLs *whatever the listeners' authorizer setting* (system
//!   services are always held to their ACLs; super users pass), as Kafka's `KafkaApis` would: produce needs WRITE
//!   on the topic; subscribe READ on the group and on each topic; a fetch (`next_batch`) READ on each topic; an
//!   offset commit READ on the group and the topics; `commit_transaction` WRITE on the transactional id and on
//!   every message's topic, and READ on the group and the topics for its offsets; `read` READ on each topic;
//!   `ensure_topic` CREATE on the cluster or the topic. A topic needs DESCRIBE too (implied by READ and WRITE, but
//!   an explicit DENY of it refuses, as in Kafka). A refusal is [`BusError::NotAuthorized`] and nothing of the call
//!   is done: every message of a call is checked before any is sent.
//!
//! [`BusError::NotAuthorized`]: crate::BusError::NotAuthorized

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::bus::Bus;

/// An operation a [`Grant`] allows, as Kafka names it. READ and WRITE imply DESCRIBE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Read,
    Write,
    Describe,
}

/// What kind of resource a [`Grant`] names, as Kafka's ACLs do. A transactional id takes WRITE or DESCRIBE, a group
/// READ or DESCRIBE (Kafka's table; provisioning refuses the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Topic,
    Group,
    TransactionalId,
}

/// One right of a service: an operation on the resources of a type named `name`, or whose names start with `name`
/// when `prefixed` (Kafka's LITERAL and PREFIXED patterns; a literal `*` names them all).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    pub operation: Operation,
    pub resource: Resource,
    pub name: String,
    pub prefixed: bool,
}

impl Grant {
    /// `operation` on the one resource `name` (or all of them for `*`).
    pub fn literal(operation: Operation, resource: Resource, name: impl Into<String>) -> Grant {
        Grant { operation, resource, name: name.into(), prefixed: false }
    }

    /// `operation` on every resource whose name starts with `prefix`.
    pub fn prefixed(operation: Operation, resource: Resource, prefix: impl Into<String>) -> Grant {
        Grant { operation, resource, name: prefix.into(), prefixed: true }
    }
}

/// A service's user, its password and its rights. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub user: String,
    pub password: String,
    pub grants: Vec<Grant>,
}

impl ServiceAccount {
    /// An account with no rights yet; add them with [`ServiceAccount::grant`].
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> ServiceAccount {
        ServiceAccount { user: user.into(), password: password.into(), grants: Vec::new() }
    }

    pub fn grant(mut self, grant: Grant) -> ServiceAccount {
        self.grants.push(grant);
        self
    }
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("grants", &self.grants)
            .finish()
    }
}

/// Why provisioning or a login failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// An unknown user or a wrong password (Kafka's SASL_AUTHENTICATION_FAILED); names the user only.
    #[error("authentication failed for user {0:?}")]
    Authentication(String),
    /// The account cannot be provisioned as given: a bad user name, an empty password, or a grant Kafka's model does
    /// not have (READ on a transactional id, WRITE on a group).
    #[error("refused: {0}")]
    Refused(String),
    /// What holds the users and ACLs failed (a store file could not be written).
    #[error("access backend: {0}")]
    Backend(String),
}

/// Credentials and ACLs for a system's services: the platform implements it, a system uses it through
/// [`crate::SystemContext::access`].
#[async_trait]
pub trait Access: Send + Sync + fmt::Debug {
    /// Creates the account's user or updates its password, and adds its grants as ACLs allowing them. Idempotent: a
    /// system provisions its accounts at every start.
    async fn provision(&self, account: &ServiceAccount) -> Result<(), AccessError>;
    /// A bus acting as `user`, if `password` is theirs: every call is held to the user's ACLs.
    async fn login(&self, user: &str, password: &str) -> Result<Arc<dyn Bus>, AccessError>;
}

/// Access without checks, like a Kafka cluster without an authorizer: provisioning does nothing and every login,
/// whatever the credentials, gets the platform's bus itself. The default, so systems that do not use accounts and
/// their tests run as before.
#[derive(Clone)]
pub struct OpenAccess {
    bus: Arc<dyn Bus>,
}

impl OpenAccess {
    pub fn new(bus: Arc<dyn Bus>) -> OpenAccess {
        OpenAccess { bus }
    }
}

impl fmt::Debug for OpenAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAccess").finish_non_exhaustive()
    }
}

#[async_trait]
impl Access for OpenAccess {
    async fn provision(&self, _account: &ServiceAccount) -> Result<(), AccessError> {
        Ok(())
    }

    async fn login(&self, _user: &str, _password: &str) -> Result<Arc<dyn Bus>, AccessError> {
        Ok(self.bus.clone())
    }
}

#[cfg(feature = "security")]
pub use secured::{AuthorizedBus, SecuredAccess, SERVICE_HOST};

#[cfg(feature = "security")]
mod secured {
    use std::fmt;
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use weir_security::{Acl, PatternType, Permission, ResourceType, Security, SecurityError};

    use super::{Access, AccessError, Operation, Resource, ServiceAccount};
    use crate::bus::{Bus, BusError, Delivery, Message, OutgoingMessage, StartFrom, SubscribeOptions, Subscription};

    /// The host a service's calls are checked as coming from: it runs in the broker's process, as a client on the
    /// loopback would. ACLs for any host (`*`) apply to it, and so do those naming this address.
    pub const SERVICE_HOST: &str = "127.0.0.1";

    /// Users and ACLs in weir's security stores (see the module's description).
    pub struct SecuredAccess {
        security: Arc<Security>,
        bus: Arc<dyn Bus>,
    }

    impl SecuredAccess {
        /// Accounts in `security`'s stores; a login's bus wraps `bus` (the platform's).
        pub fn new(security: Arc<Security>, bus: Arc<dyn Bus>) -> SecuredAccess {
            SecuredAccess { security, bus }
        }
    }

    impl fmt::Debug for SecuredAccess {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SecuredAccess").field("security", &self.security).finish_non_exhaustive()
        }
    }

    fn store_error(e: SecurityError) -> AccessError {
        match e {
            SecurityError::Io { .. } | SecurityError::Parse { .. } | SecurityError::Tls(_) => {
                AccessError::Backend(e.to_string())
            }
            e => AccessError::Refused(e.to_string()),
        }
    }

    fn acl(principal: &str, grant: &super::Grant) -> Acl {
        Acl {
            resource_type: match grant.resource {
                Resource::Topic => ResourceType::Topic,
                Resource::Group => ResourceType::Group,
                Resource::TransactionalId => ResourceType::TransactionalId,
            },
            pattern_type: if grant.prefixed { PatternType::Prefixed } else { PatternType::Literal },
            name: grant.name.clone(),
            principal: principal.to_string(),
            host: "*".into(),
            operation: match grant.operation {
                Operation::Read => weir_security::Operation::Read,
                Operation::Write => weir_security::Operation::Write,
                Operation::Describe => weir_security::Operation::Describe,
            },
            permission: Permission::Allow,
        }
    }

    /// Provisioning, blocking (PBKDF2, the store files written and synced): everything is checked before anything
    /// is changed.
    fn provision(security: &Security, account: &ServiceAccount) -> Result<(), AccessError> {
        weir_security::users::check_name(&account.user).map_err(store_error)?;
        if account.password.is_empty() {
            return Err(AccessError::Refused(format!("the password of {:?} must not be empty", account.user)));
        }
        let principal = format!("User:{}", account.user);
        let acls: Vec<Acl> = account.grants.iter().map(|g| acl(&principal, g)).collect();
        for a in &acls {
            a.validate().map_err(store_error)?;
        }
        // The same password again is not rewritten (a new salt each time would rewrite the users file at every
        // start for nothing).
        if !security.users.check_password(&account.user, &account.password) {
            security
                .users
                .set_password(&account.user, &account.password, weir_security::scram::MIN_ITERATIONS)
                .map_err(store_error)?;
        }
        security.acls.add(&acls).map_err(store_error)
    }

    #[async_trait]
    impl Access for SecuredAccess {
        async fn provision(&self, account: &ServiceAccount) -> Result<(), AccessError> {
            let (security, account) = (self.security.clone(), account.clone());
            tokio::task::spawn_blocking(move || provision(&security, &account))
                .await
                .map_err(|e| AccessError::Backend(e.to_string()))?
        }

        async fn login(&self, user: &str, password: &str) -> Result<Arc<dyn Bus>, AccessError> {
            let (security, name, password) = (self.security.clone(), user.to_string(), password.to_string());
            // PBKDF2: off the async workers.
            let principal = tokio::task::spawn_blocking(move || security.check_password(&name, &password))
                .await
                .map_err(|e| AccessError::Backend(e.to_string()))?
                .ok_or_else(|| AccessError::Authentication(user.to_string()))?;
            let authz = Authz { security: self.security.clone(), principal: principal.into() };
            Ok(Arc::new(AuthorizedBus { inner: self.bus.clone(), authz }))
        }
    }

    /// Who a bus acts as, and the stores that decide what it may do.
    #[derive(Clone)]
    struct Authz {
        security: Arc<Security>,
        principal: Arc<str>,
    }

    impl Authz {
        fn allowed(&self, operation: weir_security::Operation, resource: ResourceType, name: &str) -> bool {
            // The listeners' authorizer setting is not consulted: services are always held to their ACLs.
            self.security.settings().super_users.iter().any(|s| **s == *self.principal)
                || self.security.acls.allows(&self.principal, SERVICE_HOST, operation, resource, name)
        }

        fn refused(&self, operation: weir_security::Operation, resource: ResourceType, name: &str) -> BusError {
            let code = match resource {
                ResourceType::Topic => "TOPIC_AUTHORIZATION_FAILED",
                ResourceType::Group => "GROUP_AUTHORIZATION_FAILED",
                ResourceType::TransactionalId => "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
                _ => "CLUSTER_AUTHORIZATION_FAILED",
            };
            BusError::NotAuthorized(format!("{} may not {operation} {resource} {name:?} ({code})", self.principal))
        }

        fn check(
            &self,
            operation: weir_security::Operation,
            resource: ResourceType,
            name: &str,
        ) -> Result<(), BusError> {
            if self.allowed(operation, resource, name) {
                Ok(())
            } else {
                Err(self.refused(operation, resource, name))
            }
        }

        /// `operation` on each topic, and DESCRIBE (a Kafka client's metadata request).
        fn topics<'a>(
            &self,
            operation: weir_security::Operation,
            names: impl IntoIterator<Item = &'a str>,
        ) -> Result<(), BusError> {
            for name in names {
                self.check(operation, ResourceType::Topic, name)?;
                self.check(weir_security::Operation::Describe, ResourceType::Topic, name)?;
            }
            Ok(())
        }

        fn group(&self, name: &str) -> Result<(), BusError> {
            self.check(weir_security::Operation::Read, ResourceType::Group, name)
        }

        /// Kafka's CreateTopics: CREATE on the cluster, else on the topic.
        fn create_topic(&self, name: &str) -> Result<(), BusError> {
            let create = weir_security::Operation::Create;
            if self.allowed(create, ResourceType::Cluster, weir_security::CLUSTER) {
                return Ok(());
            }
            self.check(create, ResourceType::Topic, name)
        }
    }

    /// A bus acting as one principal (from `SecuredAccess::login`): every call is checked against the ACLs first,
    /// and a refused call does nothing ([`BusError::NotAuthorized`]).
    pub struct AuthorizedBus {
        inner: Arc<dyn Bus>,
        authz: Authz,
    }

    impl AuthorizedBus {
        /// The principal it acts as (`User:<name>`).
        pub fn principal(&self) -> &str {
            &self.authz.principal
        }
    }

    impl fmt::Debug for AuthorizedBus {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("AuthorizedBus").field("principal", &self.authz.principal).finish_non_exhaustive()
        }
    }

    fn wrap(
        inner: Box<dyn Subscription>,
        authz: &Authz,
        group: Option<String>,
        topics: Vec<String>,
        transactional_id: Option<String>,
    ) -> Box<dyn Subscription> {
        Box::new(AuthorizedSubscription { inner, authz: authz.clone(), group, topics, transactional_id })
    }

    #[async_trait]
    impl Bus for AuthorizedBus {
        async fn produce(&self, message: OutgoingMessage) -> Result<Delivery, BusError> {
            self.authz.topics(weir_security::Operation::Write, [message.topic.as_str()])?;
            self.inner.produce(message).await
        }

        async fn produce_all(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<Delivery>, BusError> {
            self.authz.topics(weir_security::Operation::Write, messages.iter().map(|m| m.topic.as_str()))?;
            self.inner.produce_all(messages).await
        }

        async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Subscription>, BusError> {
            self.authz.group(&options.group)?;
            self.authz.topics(weir_security::Operation::Read, options.topics.iter().map(String::as_str))?;
            let (group, topics, id) = (options.group.clone(), options.topics.clone(), options.transactional_id.clone());
            let inner = self.inner.subscribe(options).await?;
            Ok(wrap(inner, &self.authz, Some(group), topics, id))
        }

        async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), BusError> {
            self.authz.create_topic(topic)?;
            self.inner.ensure_topic(topic, partitions).await
        }

        async fn ensure_kept_topic(&self, topic: &str) -> Result<(), BusError> {
            self.authz.create_topic(topic)?;
            self.inner.ensure_kept_topic(topic).await
        }

        async fn read(&self, topics: &[String], start_from: StartFrom) -> Result<Box<dyn Subscription>, BusError> {
            self.authz.topics(weir_security::Operation::Read, topics.iter().map(String::as_str))?;
            let inner = self.inner.read(topics, start_from).await?;
            Ok(wrap(inner, &self.authz, None, topics.to_vec(), None))
        }

        /// Kafka's ListOffsets: DESCRIBE on the topic.
        async fn end_offsets(&self, topic: &str) -> Result<Vec<i64>, BusError> {
            self.authz.topics(weir_security::Operation::Describe, [topic])?;
            self.inner.end_offsets(topic).await
        }
    }

    /// A subscription (or a group-less reader, `group: None`) whose fetches, commits and transactions are checked.
    struct AuthorizedSubscription {
        inner: Box<dyn Subscription>,
        authz: Authz,
        group: Option<String>,
        topics: Vec<String>,
        transactional_id: Option<String>,
    }

    impl fmt::Debug for AuthorizedSubscription {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("AuthorizedSubscription")
                .field("principal", &self.authz.principal)
                .field("group", &self.group)
                .field("topics", &self.topics)
                .finish_non_exhaustive()
        }
    }

    impl AuthorizedSubscription {
        /// Kafka's OffsetCommit (and TxnOffsetCommit): READ on the group and on each topic. A reader without a group
        /// is left to its bus, which has nothing to commit it to.
        fn check_offsets<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> Result<(), BusError> {
            if let Some(group) = &self.group {
                self.authz.group(group)?;
                self.authz.topics(weir_security::Operation::Read, topics)?;
            }
            Ok(())
        }
    }

    #[async_trait]
    impl Subscription for AuthorizedSubscription {
        async fn next_batch(&mut self, max_wait: Duration) -> Result<Vec<Message>, BusError> {
            // Every fetch, as Kafka's: an ACL removed since the subscription stops the reading.
            self.authz.topics(weir_security::Operation::Read, self.topics.iter().map(String::as_str))?;
            self.inner.next_batch(max_wait).await
        }

        async fn commit(&mut self) -> Result<(), BusError> {
            self.check_offsets(self.topics.iter().map(String::as_str))?;
            self.inner.commit().await
        }

        async fn commit_offsets(&mut self, offsets: &[(String, i32, i64)]) -> Result<(), BusError> {
            self.check_offsets(offsets.iter().map(|(t, _, _)| t.as_str()))?;
            self.inner.commit_offsets(offsets).await
        }

        async fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<(), BusError> {
            self.inner.seek(topic, partition, offset).await
        }

        fn assignment(&self) -> Vec<(String, i32)> {
            self.inner.assignment()
        }

        async fn commit_transaction(
            &mut self,
            messages: Vec<OutgoingMessage>,
            offsets: &[(String, i32, i64)],
        ) -> Result<(), BusError> {
            // Without a transactional id the bus refuses it by itself.
            if let Some(id) = &self.transactional_id {
                let write = weir_security::Operation::Write;
                // InitProducerId and AddPartitionsToTxn, then AddOffsetsToTxn and TxnOffsetCommit.
                self.authz.check(write, ResourceType::TransactionalId, id)?;
                self.authz.topics(write, messages.iter().map(|m| m.topic.as_str()))?;
                if !offsets.is_empty() {
                    self.check_offsets(offsets.iter().map(|(t, _, _)| t.as_str()))?;
                }
            }
            self.inner.commit_transaction(messages, offsets).await
        }

        async fn close(self: Box<Self>) -> Result<(), BusError> {
            self.inner.close().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmbeddedBus;

    #[test]
    fn an_accounts_debug_hides_its_password() {
        let account = ServiceAccount::new("secretary", "very-secret-pw").grant(Grant::literal(
            Operation::Write,
            Resource::Topic,
            "appointments",
        ));
        let shown = format!("{account:?}");
        assert!(shown.contains("secretary") && shown.contains("appointments"), "{shown}");
        assert!(!shown.contains("very-secret-pw"), "{shown}");
    }

    #[tokio::test]
    async fn open_access_provisions_nothing_and_lends_the_platforms_bus() {
        let (_dir, broker) = weir_broker::testing::scratch_broker();
        let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker));
        let access = OpenAccess::new(bus.clone());
        access.provision(&ServiceAccount::new("anyone", "pw")).await.unwrap();
        let lent = access.login("anyone", "not-even-provisioned").await.unwrap();
        assert!(std::ptr::addr_eq(Arc::as_ptr(&lent), Arc::as_ptr(&bus)), "the same bus, unwrapped");
    }
}
