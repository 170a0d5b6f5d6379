//! ACLs in Kafka's model and the decision Kafka's `AclAuthorizer` (and KRaft's `StandardAuthorizer`) makes with them:
//! an ACL allows or denies a principal, from a host, one operation on the resources a pattern names (a literal name,
//! `*` for all, or a prefix). A request is allowed when no matching ACL denies it and one allows it; DESCRIBE is
//! implied by READ, WRITE, DELETE and ALTER, and DESCRIBE_CONFIGS by ALTER_CONFIGS, as in Kafka. Super users are
//! decided before the ACLs (see `Security::authorize`).
//!
//! Beside Kafka's resource types, `system` names one of weir's systems, whose HTTP routes it guards; Kafka clients
//! cannot express it, so the Kafka protocol's ACL requests neither show nor take it.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::files::{line_of, Lines};
use crate::SecurityError;

/// What an ACL guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
    /// A weir system's HTTP routes (weir's own; not on the Kafka wire).
    System,
    /// A schema registry subject (weir's own, as Confluent's and Redpanda's registries have theirs).
    Subject,
}

impl ResourceType {
    pub const ALL: [ResourceType; 6] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
        ResourceType::System,
        ResourceType::Subject,
    ];

    /// Kafka's code (`ResourceType` in the protocol), `None` for weir's own types.
    pub fn kafka_code(self) -> Option<i8> {
        match self {
            ResourceType::Topic => Some(2),
            ResourceType::Group => Some(3),
            ResourceType::Cluster => Some(4),
            ResourceType::TransactionalId => Some(5),
            ResourceType::System | ResourceType::Subject => None,
        }
    }

    pub fn from_kafka_code(code: i8) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.kafka_code() == Some(code))
    }

    /// The operations an ACL on this type may name (Kafka's table), besides ALL.
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[Read, Write, Create, Delete, Alter, Describe, DescribeConfigs, AlterConfigs],
            ResourceType::Group => &[Read, Delete, Describe],
            ResourceType::Cluster => {
                &[Create, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, Alter, Describe]
            }
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::System => &[Read, Write],
            ResourceType::Subject => &[Read, Write, Delete, Describe, DescribeConfigs, AlterConfigs],
        }
    }
}

/// An operation on a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

impl Operation {
    pub const ALL: [Operation; 11] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
    ];

    /// Kafka's code (`AclOperation`).
    pub fn kafka_code(self) -> i8 {
        match self {
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::ClusterAction => 9,
            Operation::DescribeConfigs => 10,
            Operation::AlterConfigs => 11,
            Operation::IdempotentWrite => 12,
        }
    }

    pub fn from_kafka_code(code: i8) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.kafka_code() == code)
    }

    /// Whether an ACL for `self` covers a request for `wanted`.
    fn covers(self, wanted: Operation) -> bool {
        use Operation::*;
        self == wanted
            || self == All
            || (wanted == Describe && matches!(self, Read | Write | Delete | Alter))
            || (wanted == DescribeConfigs && self == AlterConfigs)
    }
}

/// How an ACL's resource name matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatternType {
    /// The name itself, or `*` for every resource of the type.
    Literal,
    /// Every resource whose name starts with it.
    Prefixed,
}

impl PatternType {
    pub fn kafka_code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    Allow,
    Deny,
}

impl Permission {
    pub fn kafka_code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    pub fn from_kafka_code(code: i8) -> Option<Permission> {
        match code {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }
}

macro_rules! names {
    ($t:ty, $($v:ident => $n:literal),* $(,)?) => {
        impl $t {
            /// The name Kafka's tools print and `weir acls` takes (case-insensitive; `-` and `_` alike).
            pub fn name(self) -> &'static str {
                match self { $(<$t>::$v => $n),* }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
        impl FromStr for $t {
            type Err = SecurityError;
            fn from_str(s: &str) -> Result<Self, SecurityError> {
                let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
                [$(<$t>::$v),*].into_iter().find(|v| v.name() == wanted).ok_or_else(|| {
                    SecurityError::InvalidAcl(format!(
                        "unknown {} {s:?} (one of: {})",
                        stringify!($t),
                        [$($n),*].join(", ").to_lowercase()
                    ))
                })
            }
        }
    };
}

names!(ResourceType, Topic => "TOPIC", Group => "GROUP", Cluster => "CLUSTER",
       TransactionalId => "TRANSACTIONAL_ID", System => "SYSTEM", Subject => "SUBJECT");
names!(Operation, All => "ALL", Read => "READ", Write => "WRITE", Create => "CREATE", Delete => "DELETE",
       Alter => "ALTER", Describe => "DESCRIBE", ClusterAction => "CLUSTER_ACTION",
       DescribeConfigs => "DESCRIBE_CONFIGS", AlterConfigs => "ALTER_CONFIGS", IdempotentWrite => "IDEMPOTENT_WRITE");
names!(PatternType, Literal => "LITERAL", Prefixed => "PREFIXED");
names!(Permission, Allow => "ALLOW", Deny => "DENY");

/// One ACL (Kafka's `AclBinding`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    pub resource_type: ResourceType,
    pub pattern_type: PatternType,
    pub name: String,
    /// `User:alice`, or `User:*` for every user.
    pub principal: String,
    /// The client's IP address, or `*` for any.
    #[serde(default = "any_host")]
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

fn any_host() -> String {
    "*".into()
}

/// Checks a principal's form: `Type:name`, both non-empty.
pub fn check_principal(p: &str) -> Result<(), SecurityError> {
    match p.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok(()),
        _ => Err(SecurityError::InvalidPrincipal(p.to_string())),
    }
}

impl Acl {
    /// Refuses what Kafka refuses: a bad principal, an operation the resource type does not have, an empty name,
    /// a cluster ACL not on `kafka-cluster`.
    pub fn validate(&self) -> Result<(), SecurityError> {
        check_principal(&self.principal)?;
        if self.host.is_empty() {
            return Err(SecurityError::InvalidAcl("the host must be an address or *".into()));
        }
        if self.name.is_empty() {
            return Err(SecurityError::InvalidAcl("the resource name must not be empty".into()));
        }
        if self.resource_type == ResourceType::Cluster
            && (self.name != crate::CLUSTER || self.pattern_type != PatternType::Literal)
        {
            return Err(SecurityError::InvalidAcl(format!("the cluster resource is the literal {}", crate::CLUSTER)));
        }
        if self.operation != Operation::All && !self.resource_type.operations().contains(&self.operation) {
            return Err(SecurityError::InvalidAcl(format!(
                "{} is not an operation on a {} (those are: ALL, {})",
                self.operation,
                self.resource_type,
                self.resource_type.operations().iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }

    /// Whether this ACL's pattern covers the resource `name`.
    fn covers_resource(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => self.name == name || self.name == "*",
                PatternType::Prefixed => name.starts_with(&self.name),
            }
    }

    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == "User:*") && (self.host == host || self.host == "*")
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on {}:{}:{} from host {}",
            self.permission,
            self.principal,
            self.operation,
            self.resource_type,
            self.pattern_type,
            self.name,
            self.host
        )
    }
}

/// Which resource patterns a filter matches (Kafka's `PatternType` in a filter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any pattern type; with a name, the pattern's name must equal it.
    Any,
    /// The patterns that cover the named resource: its literal name, `*`, and every prefix of it.
    Match,
    Exactly(PatternType),
}

/// A filter over ACLs (Kafka's `AclBindingFilter`): `None` matches anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub pattern: PatternFilter,
    pub name: Option<String>,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Matches every ACL.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: None,
            pattern: PatternFilter::Any,
            name: None,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    pub fn matches(&self, acl: &Acl) -> bool {
        let name_ok = match (&self.name, self.pattern) {
            (None, PatternFilter::Any | PatternFilter::Match) => true,
            (None, PatternFilter::Exactly(t)) => acl.pattern_type == t,
            (Some(n), PatternFilter::Any) => &acl.name == n,
            (Some(n), PatternFilter::Exactly(t)) => acl.pattern_type == t && &acl.name == n,
            (Some(n), PatternFilter::Match) => match acl.pattern_type {
                PatternType::Literal => &acl.name == n || acl.name == "*",
                PatternType::Prefixed => n.starts_with(&acl.name),
            },
        };
        name_ok
            && self.resource_type.is_none_or(|t| t == acl.resource_type)
            && self.principal.as_ref().is_none_or(|p| p == &acl.principal)
            && self.host.as_ref().is_none_or(|h| h == &acl.host)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }
}

const HEADER: &str =
    "weir's ACLs, one JSON object per line: managed with `weir acls` and Kafka's CreateAcls/DeleteAcls.";

/// The durable ACLs (`acls.jsonl`).
#[derive(Debug)]
pub struct AclStore {
    lines: Lines<Acl>,
}

impl AclStore {
    /// Opens the store at `path`; every ACL in it is validated, and the first bad one is an error with its line.
    pub fn open(path: &Path) -> Result<AclStore, SecurityError> {
        let lines = Lines::<Acl>::open(path, HEADER)?;
        for (i, acl) in lines.get().iter().enumerate() {
            acl.validate().map_err(|e| SecurityError::Parse {
                path: path.to_path_buf(),
                line: line_of(path, i),
                message: e.to_string(),
            })?;
        }
        Ok(AclStore { lines })
    }

    pub fn in_memory() -> AclStore {
        AclStore { lines: Lines::in_memory() }
    }

    pub fn path(&self) -> Option<&Path> {
        self.lines.path()
    }

    /// Adds ACLs (each validated first; one already there is not added twice).
    pub fn add(&self, acls: &[Acl]) -> Result<(), SecurityError> {
        for acl in acls {
            acl.validate()?;
        }
        self.lines.modify(|all| {
            for acl in acls {
                if !all.contains(acl) {
                    all.push(acl.clone());
                }
            }
            Ok(())
        })
    }

    /// Removes the ACLs `filter` matches and returns them.
    pub fn remove(&self, filter: &AclFilter) -> Result<Vec<Acl>, SecurityError> {
        self.lines.modify(|all| {
            let (gone, kept) = all.drain(..).partition(|a| filter.matches(a));
            *all = kept;
            Ok(gone)
        })
    }

    pub fn list(&self, filter: &AclFilter) -> Vec<Acl> {
        self.lines.get().iter().filter(|a| filter.matches(a)).cloned().collect()
    }

    /// Kafka's decision without super users: denied if a matching ACL denies, else allowed if one allows.
    pub fn allows(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let acls = self.lines.get();
        let matching = || {
            acls.iter().filter(|a| {
                a.covers_resource(resource_type, name) && a.applies_to(principal, host) && a.operation.covers(operation)
            })
        };
        if matching()
            .any(|a| a.permission == Permission::Deny && (a.operation == operation || a.operation == Operation::All))
        {
            return false;
        }
        matching().any(|a| a.permission == Permission::Allow)
    }
}

impl AclStore {
    /// Whether some ACL allows `principal` `operation` on a resource of the type (and no ACL denies it on every
    /// resource of the type).
    pub fn allows_some(&self, principal: &str, host: &str, operation: Operation, resource_type: ResourceType) -> bool {
        let acls = self.lines.get();
        let applies = |a: &&Acl| a.resource_type == resource_type && a.applies_to(principal, host);
        let denied_everywhere = acls.iter().filter(applies).any(|a| {
            a.permission == Permission::Deny
                && (a.operation == operation || a.operation == Operation::All)
                && a.pattern_type == PatternType::Literal
                && a.name == "*"
        });
        !denied_everywhere
            && acls.iter().filter(applies).any(|a| a.permission == Permission::Allow && a.operation.covers(operation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(principal: &str, op: Operation, perm: Permission, t: ResourceType, p: PatternType, name: &str) -> Acl {
        Acl {
            resource_type: t,
            pattern_type: p,
            name: name.into(),
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    #[test]
    fn kafkas_decision() {
        let store = AclStore::in_memory();
        store
            .add(&[
                acl("User:alice", Write, Allow, Topic, Literal, "orders"),
                acl("User:bob", Read, Allow, Topic, Prefixed, "ord"),
                acl("User:bob", Read, Deny, Topic, Literal, "ordinary"),
                acl("User:*", Describe, Allow, Group, Literal, "*"),
                acl("User:carol", All, Allow, Topic, Literal, "*"),
                acl("User:carol", All, Deny, Topic, Literal, "secret"),
            ])
            .unwrap();
        assert!(store.allows("User:alice", "1.2.3.4", Write, Topic, "orders"));
        assert!(store.allows("User:alice", "1.2.3.4", Describe, Topic, "orders"), "WRITE implies DESCRIBE");
        assert!(!store.allows("User:alice", "1.2.3.4", Read, Topic, "orders"));
        assert!(!store.allows("User:alice", "1.2.3.4", Write, Topic, "orders2"), "literal is exact");
        assert!(store.allows("User:bob", "h", Read, Topic, "orders"), "prefixed");
        assert!(!store.allows("User:bob", "h", Read, Topic, "ordinary"), "deny wins");
        assert!(!store.allows("User:bob", "h", Write, Topic, "orders"));
        assert!(store.allows("User:dave", "h", Describe, Group, "g1"), "User:* and the * name");
        assert!(!store.allows("User:dave", "h", Read, Group, "g1"));
        assert!(store.allows("User:carol", "h", AlterConfigs, Topic, "x"));
        assert!(!store.allows("User:carol", "h", Read, Topic, "secret"), "DENY ALL");
        assert!(!store.allows("User:alice", "h", Write, Group, "orders"), "another resource type");
    }

    #[test]
    fn filters_match_as_kafkas_do() {
        let a = acl("User:bob", Read, Allow, Topic, Prefixed, "ord");
        let mut f = AclFilter::any();
        assert!(f.matches(&a));
        f.name = Some("orders".into());
        assert!(!f.matches(&a), "ANY with a name: the name must be equal");
        f.pattern = PatternFilter::Match;
        assert!(f.matches(&a), "MATCH: the prefixed pattern covers orders");
        f.pattern = PatternFilter::Exactly(Literal);
        assert!(!f.matches(&a));
        let f = AclFilter { principal: Some("User:alice".into()), ..AclFilter::any() };
        assert!(!f.matches(&a));
    }

    #[test]
    fn invalid_acls_are_refused() {
        assert!(acl("alice", Read, Allow, Topic, Literal, "t").validate().is_err(), "no principal type");
        assert!(acl("User:a", IdempotentWrite, Allow, Topic, Literal, "t").validate().is_err());
        assert!(acl("User:a", Read, Allow, Cluster, Literal, "x").validate().is_err());
        assert!(acl("User:a", Create, Allow, Cluster, Literal, "kafka-cluster").validate().is_ok());
        assert!(acl("User:a", Read, Allow, Topic, Literal, "").validate().is_err());
        assert_eq!("transactional-id".parse::<ResourceType>().unwrap(), TransactionalId);
        assert_eq!("describe_configs".parse::<Operation>().unwrap(), DescribeConfigs);
        assert!("nope".parse::<Operation>().is_err());
    }

    #[test]
    fn the_store_is_durable_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acls.jsonl");
        let store = AclStore::open(&path).unwrap();
        let a = acl("User:alice", Write, Allow, Topic, Literal, "orders");
        store.add(&[a.clone(), a.clone()]).unwrap();
        let again = AclStore::open(&path).unwrap();
        assert_eq!(again.list(&AclFilter::any()), vec![a.clone()]);
        assert_eq!(
            again.remove(&AclFilter { principal: Some("User:alice".into()), ..AclFilter::any() }).unwrap(),
            vec![a]
        );
        assert!(AclStore::open(&path).unwrap().list(&AclFilter::any()).is_empty());

        std::fs::write(&path, "# c\n\n{\"resource_type\":\"TOPIC\"}\n").unwrap();
        let e = AclStore::open(&path).unwrap_err().to_string();
        assert!(e.contains("acls.jsonl:3:"), "{e}");
        std::fs::write(
            &path,
            "{\"resource_type\":\"TOPIC\",\"pattern_type\":\"LITERAL\",\"name\":\"t\",\"principal\":\"User:a\",\
             \"operation\":\"READ\",\"permission\":\"ALLOW\"}\n\
             {\"resource_type\":\"GROUP\",\"pattern_type\":\"LITERAL\",\"name\":\"g\",\"principal\":\"User:a\",\
             \"operation\":\"WRITE\",\"permission\":\"ALLOW\"}\n",
        )
        .unwrap();
        let e = AclStore::open(&path).unwrap_err().to_string();
        assert!(e.contains("acls.jsonl:2:") && e.contains("WRITE is not an operation on a GROUP"), "{e}");
    }
}
