//! Each service's own credentials and rights (the origin's "auth (more than one set of credentials)" TODO): the
//! shop provisions a user per service when it starts and runs each service on a bus logged in as that user, so
//! weir's broker holds it to its ACLs — the secretary cannot write `payments`, the cash desk cannot join the
//! secretary's group. With `weir up` on the embedded broker the ACLs are weir's own (listed by `weir acls list`,
//! Kafka's DescribeAcls); on a cluster the platform's connection and the cluster's own security apply.

use weir_runtime::access::{Grant, Operation, Resource};
use weir_runtime::ServiceAccount;

use crate::events::{APPOINTMENTS, PAYMENTS, TICKETS};

/// A service's reads and writes.
struct Rights {
    user: &'static str,
    reads: &'static [&'static str],
    writes: &'static [&'static str],
}

const SERVICES: [Rights; 3] = [
    Rights { user: "ticketing", reads: &[PAYMENTS], writes: &[TICKETS] },
    Rights { user: "secretary", reads: &[TICKETS], writes: &[APPOINTMENTS] },
    Rights { user: "cash-desk", reads: &[APPOINTMENTS, TICKETS], writes: &[PAYMENTS] },
];

/// The dead-letter topic of a topic a service reads (it writes what it cannot decode there).
pub fn dlq(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// The account of service `user` (its consumer group and transactional ids are named after it), with `password`.
pub fn account(user: &str, password: &str) -> Option<ServiceAccount> {
    let rights = SERVICES.iter().find(|r| r.user == user)?;
    let mut account = ServiceAccount::new(user, password)
        .grant(Grant::literal(Operation::Read, Resource::Group, user))
        .grant(Grant::prefixed(Operation::Write, Resource::TransactionalId, format!("{user}-")));
    for topic in rights.reads {
        account = account.grant(Grant::literal(Operation::Read, Resource::Topic, *topic)).grant(Grant::literal(
            Operation::Write,
            Resource::Topic,
            dlq(topic),
        ));
    }
    for topic in rights.writes {
        account = account.grant(Grant::literal(Operation::Write, Resource::Topic, *topic));
    }
    Some(account)
}

/// The services' names.
pub fn services() -> impl Iterator<Item = &'static str> {
    SERVICES.iter().map(|r| r.user)
}
