//! The Kafka requests that manage security: CreateAcls, DescribeAcls and DeleteAcls (what confluent-kafka's
//! AdminClient and `kafka-acls.sh` send), and DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554:
//! the client salts the password, so it never crosses the wire). They need ALTER (changes) or DESCRIBE on the
//! cluster; the ACL requests answer SECURITY_DISABLED when no authorizer is configured, as Kafka does. The stores
//! write through to their files (an fsync each): these requests are rare administration.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use weir_security::{
    Acl, AclFilter, Mechanism, Operation, PatternFilter, PatternType, Permission, ResourceType, ScramCredential,
};

use crate::authorize::Authz;
use crate::error_code::{
    CLUSTER_AUTHORIZATION_FAILED, DUPLICATE_RESOURCE, INVALID_REQUEST, RESOURCE_NOT_FOUND, SECURITY_DISABLED,
    UNACCEPTABLE_CREDENTIAL, UNSUPPORTED_SASL_MECHANISM,
};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Why the principal may not manage ACLs, if it may not.
fn acl_refusal(a: &Authz<'_>, operation: Operation) -> Option<(i16, &'static str)> {
    if !a.security.authorizing() {
        Some((SECURITY_DISABLED, "No authorizer is configured (set [security] authorizer = \"acl\")."))
    } else if !a.cluster(operation) {
        Some((CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed."))
    } else {
        None
    }
}

pub fn create_acls(a: &Authz<'_>, req: CreateAclsRequest) -> CreateAclsResponse {
    let mut r = CreateAclsResponse::default();
    let refusal = acl_refusal(a, Operation::Alter);
    for c in req.creations {
        let mut result = create_acls_response::AclCreationResult::default();
        let outcome = match refusal {
            Some(refused) => Err(refused.0),
            None => binding(&c).map_err(|_| INVALID_REQUEST).and_then(|acl| {
                a.security.acls.add(&[acl]).map_err(|e| {
                    tracing::warn!("CreateAcls: {e}");
                    INVALID_REQUEST
                })
            }),
        };
        if let Err(code) = outcome {
            result.error_code = code;
            result.error_message = Some(s(match refusal {
                Some((_, why)) => why,
                None => "Invalid ACL: a resource type, pattern type, operation or permission Kafka does not allow here",
            }));
        }
        r.results.push(result);
    }
    r
}

/// An ACL from a CreateAcls creation; refused when it names something weir does not know or Kafka forbids.
fn binding(c: &create_acls_request::AclCreation) -> Result<Acl, ()> {
    let pattern_type = match c.resource_pattern_type {
        3 => PatternType::Literal,
        4 => PatternType::Prefixed,
        _ => return Err(()),
    };
    let acl = Acl {
        resource_type: ResourceType::from_kafka_code(c.resource_type).ok_or(())?,
        pattern_type,
        name: c.resource_name.to_string(),
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Operation::from_kafka_code(c.operation).ok_or(())?,
        permission: Permission::from_kafka_code(c.permission_type).ok_or(())?,
    };
    acl.validate().map_err(|_| ())?;
    Ok(acl)
}

/// A filter from Kafka's filter fields (resource type 1 / operation 1 / permission 1 / pattern type 1 are ANY);
/// refused when a field holds a value Kafka does not define.
#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern_type: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, ()> {
    Ok(AclFilter {
        resource_type: match resource_type {
            1 => None,
            code => Some(ResourceType::from_kafka_code(code).ok_or(())?),
        },
        pattern: match pattern_type {
            1 => PatternFilter::Any,
            2 => PatternFilter::Match,
            3 => PatternFilter::Exactly(PatternType::Literal),
            4 => PatternFilter::Exactly(PatternType::Prefixed),
            _ => return Err(()),
        },
        name: name.map(|n| n.to_string()),
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation: match operation {
            1 => None,
            code => Some(Operation::from_kafka_code(code).ok_or(())?),
        },
        permission: match permission {
            1 => None,
            code => Some(Permission::from_kafka_code(code).ok_or(())?),
        },
    })
}

pub fn describe_acls(a: &Authz<'_>, req: DescribeAclsRequest) -> DescribeAclsResponse {
    let mut r = DescribeAclsResponse::default();
    if let Some((code, why)) = acl_refusal(a, Operation::Describe) {
        r.error_code = code;
        r.error_message = Some(s(why));
        return r;
    }
    let Ok(f) = filter(
        req.resource_type_filter,
        req.resource_name_filter.as_ref(),
        req.pattern_type_filter,
        req.principal_filter.as_ref(),
        req.host_filter.as_ref(),
        req.operation,
        req.permission_type,
    ) else {
        r.error_code = INVALID_REQUEST;
        r.error_message = Some(s("Invalid ACL filter"));
        return r;
    };
    // Grouped by resource pattern, as Kafka answers; weir's own resource types cannot be expressed on the wire.
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<describe_acls_response::AclDescription>> = BTreeMap::new();
    for acl in a.security.acls.list(&f) {
        let Some(type_code) = acl.resource_type.kafka_code() else {
            continue;
        };
        let mut d = describe_acls_response::AclDescription::default();
        d.principal = s(&acl.principal);
        d.host = s(&acl.host);
        d.operation = acl.operation.kafka_code();
        d.permission_type = acl.permission.kafka_code();
        by_resource.entry((type_code, acl.name.clone(), acl.pattern_type.kafka_code())).or_default().push(d);
    }
    for ((resource_type, name, pattern_type), acls) in by_resource {
        let mut res = describe_acls_response::DescribeAclsResource::default();
        res.resource_type = resource_type;
        res.resource_name = s(&name);
        res.pattern_type = pattern_type;
        res.acls = acls;
        r.resources.push(res);
    }
    r
}

pub fn delete_acls(a: &Authz<'_>, req: DeleteAclsRequest) -> DeleteAclsResponse {
    let mut r = DeleteAclsResponse::default();
    let refusal = acl_refusal(a, Operation::Alter);
    for f in req.filters {
        let mut result = delete_acls_response::DeleteAclsFilterResult::default();
        if let Some((code, why)) = refusal {
            result.error_code = code;
            result.error_message = Some(s(why));
            r.filter_results.push(result);
            continue;
        }
        let parsed = filter(
            f.resource_type_filter,
            f.resource_name_filter.as_ref(),
            f.pattern_type_filter,
            f.principal_filter.as_ref(),
            f.host_filter.as_ref(),
            f.operation,
            f.permission_type,
        );
        // A filter of weir's own resource types is not possible on the wire: never delete those from here.
        let removed = parsed.map_err(|_| INVALID_REQUEST).and_then(|mut filter| {
            let wire_types: Vec<ResourceType> = match filter.resource_type {
                Some(t) => vec![t],
                None => ResourceType::ALL.into_iter().filter(|t| t.kafka_code().is_some()).collect(),
            };
            let mut removed = Vec::new();
            for t in wire_types {
                filter.resource_type = Some(t);
                removed.extend(a.security.acls.remove(&filter).map_err(|e| {
                    tracing::warn!("DeleteAcls: {e}");
                    INVALID_REQUEST
                })?);
            }
            Ok(removed)
        });
        match removed {
            Ok(acls) => {
                for acl in acls {
                    let mut m = delete_acls_response::DeleteAclsMatchingAcl::default();
                    m.resource_type = acl.resource_type.kafka_code().unwrap_or(0);
                    m.resource_name = s(&acl.name);
                    m.pattern_type = acl.pattern_type.kafka_code();
                    m.principal = s(&acl.principal);
                    m.host = s(&acl.host);
                    m.operation = acl.operation.kafka_code();
                    m.permission_type = acl.permission.kafka_code();
                    result.matching_acls.push(m);
                }
            }
            Err(code) => {
                result.error_code = code;
                result.error_message = Some(s("Invalid ACL filter"));
            }
        }
        r.filter_results.push(result);
    }
    r
}

pub fn describe_user_scram_credentials(
    a: &Authz<'_>,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let mut r = DescribeUserScramCredentialsResponse::default();
    if !a.cluster(Operation::Describe) {
        r.error_code = CLUSTER_AUTHORIZATION_FAILED;
        r.error_message = Some(s("Cluster authorization failed."));
        return r;
    }
    let users = a.security.users.list();
    let described = |name: &str| users.iter().find(|u| u.name == name && !u.mechanisms.is_empty());
    let result = |name: &str| {
        let mut res = describe_user_scram_credentials_response::DescribeUserScramCredentialsResult::default();
        res.user = s(name);
        match described(name) {
            Some(u) => {
                res.credential_infos = u
                    .mechanisms
                    .iter()
                    .map(|(m, iterations)| {
                        let mut c = describe_user_scram_credentials_response::CredentialInfo::default();
                        c.mechanism = m.kafka_code();
                        c.iterations = *iterations as i32;
                        c
                    })
                    .collect();
            }
            None => {
                res.error_code = RESOURCE_NOT_FOUND;
                res.error_message =
                    Some(s(&format!("Attempt to describe a user credential that does not exist: {name}")));
            }
        }
        res
    };
    match req.users {
        // Null or empty: every user with a credential.
        None => r.results = users.iter().filter(|u| !u.mechanisms.is_empty()).map(|u| result(&u.name)).collect(),
        Some(names) if names.is_empty() => {
            r.results = users.iter().filter(|u| !u.mechanisms.is_empty()).map(|u| result(&u.name)).collect()
        }
        Some(names) => {
            let mut seen = BTreeSet::new();
            let duplicated: BTreeSet<String> =
                names.iter().map(|n| n.name.to_string()).filter(|n| !seen.insert(n.clone())).collect();
            let mut answered = BTreeSet::new();
            for n in names {
                let name = n.name.to_string();
                if !answered.insert(name.clone()) {
                    continue;
                }
                if duplicated.contains(&name) {
                    let mut res =
                        describe_user_scram_credentials_response::DescribeUserScramCredentialsResult::default();
                    res.user = s(&name);
                    res.error_code = DUPLICATE_RESOURCE;
                    res.error_message =
                        Some(s(&format!("Cannot describe SCRAM credentials for the same user twice: {name}")));
                    r.results.push(res);
                } else {
                    r.results.push(result(&name));
                }
            }
        }
    }
    r
}

pub fn alter_user_scram_credentials(
    a: &Authz<'_>,
    req: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut r = AlterUserScramCredentialsResponse::default();
    let allowed = a.cluster(Operation::Alter);
    // Kafka refuses a user named in two alterations of the same mechanism.
    let mut count: BTreeMap<(String, i8), usize> = BTreeMap::new();
    for d in &req.deletions {
        *count.entry((d.name.to_string(), d.mechanism)).or_default() += 1;
    }
    for u in &req.upsertions {
        *count.entry((u.name.to_string(), u.mechanism)).or_default() += 1;
    }
    let mut results: BTreeMap<String, (i16, Option<String>)> = BTreeMap::new();
    let mut record = |user: String, outcome: Result<(), (i16, String)>| {
        let entry = results.entry(user).or_insert((0, None));
        if let Err((code, why)) = outcome {
            if entry.0 == 0 {
                *entry = (code, Some(why));
            }
        }
    };
    for d in req.deletions {
        let user = d.name.to_string();
        let outcome = (|| {
            if !allowed {
                return Err((CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.".to_string()));
            }
            if count[&(user.clone(), d.mechanism)] > 1 {
                return Err((
                    DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request".into(),
                ));
            }
            let m = Mechanism::from_kafka_code(d.mechanism)
                .ok_or((UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism".to_string()))?;
            match a.security.users.delete_scram(&user, m) {
                Ok(true) => Ok(()),
                Ok(false) => Err((
                    RESOURCE_NOT_FOUND,
                    format!("Attempt to delete a user credential that does not exist: {user}"),
                )),
                Err(e) => Err((UNACCEPTABLE_CREDENTIAL, e.to_string())),
            }
        })();
        record(user, outcome);
    }
    for u in req.upsertions {
        let user = u.name.to_string();
        let outcome = (|| {
            if !allowed {
                return Err((CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.".to_string()));
            }
            if count[&(user.clone(), u.mechanism)] > 1 {
                return Err((
                    DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request".into(),
                ));
            }
            let m = Mechanism::from_kafka_code(u.mechanism)
                .ok_or((UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism".to_string()))?;
            if u.salt.is_empty() || u.salted_password.is_empty() || u.iterations <= 0 {
                return Err((UNACCEPTABLE_CREDENTIAL, "The salt, salted password and iterations are required".into()));
            }
            let credential =
                ScramCredential::from_salted_password(m, u.salt.to_vec(), u.iterations as u32, &u.salted_password);
            a.security.users.set_scram(&user, credential).map_err(|e| (UNACCEPTABLE_CREDENTIAL, e.to_string()))
        })();
        record(user, outcome);
    }
    for (user, (code, why)) in results {
        let mut res = alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default();
        res.user = s(&user);
        res.error_code = code;
        res.error_message = why.map(|w| s(&w));
        r.results.push(res);
    }
    r
}
