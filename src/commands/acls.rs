//! `weir acls`: add, list and remove ACLs in the data directory's ACL store (`<data_dir>/security/acls.jsonl`),
//! which a running `weir up` re-reads within a second. The flags and the printed lines follow kafka-acls.sh.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use weir_security::{Acl, AclFilter, AclStore, Operation, PatternFilter, PatternType, Permission, ResourceType};

use super::one_line;
use crate::cli::{AclFilterArgs, AclResource, AclsCommand};
use crate::settings::Settings;

pub fn run(settings: Settings, cmd: AclsCommand) -> Result<()> {
    // Only the ACL file: a user store that does not parse has nothing to do with ACLs and should not block fixing
    // them.
    let store = AclStore::open(&settings.security_dir().join("acls.jsonl")).map_err(one_line)?;
    match cmd {
        AclsCommand::Add { principals, host, operation, resource, prefixed } => {
            let (resource_type, name) = resource_of(&resource)?.context(
                "say which resource: --topic, --group, --cluster, --transactional-id, --system or --subject",
            )?;
            let pattern_type = if prefixed { PatternType::Prefixed } else { PatternType::Literal };
            if resource_type == ResourceType::System && pattern_type == PatternType::Literal {
                check_system(&name)?;
            }
            let operations = operation.iter().map(|o| parse_operation(o)).collect::<Result<Vec<_>>>()?;
            for h in &host {
                check_host(h)?;
            }
            let by_permission = [(Permission::Allow, &principals.allow), (Permission::Deny, &principals.deny)];
            let mut acls = Vec::new();
            for (permission, principals) in by_permission {
                for principal in principals {
                    for host in &host {
                        for &operation in &operations {
                            let acl = Acl {
                                resource_type,
                                pattern_type,
                                name: name.clone(),
                                principal: principal.clone(),
                                host: host.clone(),
                                operation,
                                permission,
                            };
                            // Each one checked before any is written: all of them are added, or none.
                            acl.validate().map_err(one_line)?;
                            acls.push(acl);
                        }
                    }
                }
            }
            store.add(&acls).map_err(one_line)?;
            println!("Added ACLs:");
            for acl in &acls {
                println!("{}", kafka_line(acl));
            }
        }
        AclsCommand::List { filter } => {
            for acl in sorted(store.list(&to_filter(&filter)?)) {
                println!("{}", kafka_line(&acl));
            }
        }
        AclsCommand::Remove { filter, all } => {
            let filter = to_filter(&filter)?;
            if !all && filter == AclFilter::any() {
                bail!(
                    "that would remove every ACL: say which (--principal, --host, --operation, --topic, --group, \
                     --cluster, --transactional-id, --system, --subject), or give --all"
                );
            }
            let removed = sorted(store.remove(&filter).map_err(one_line)?);
            if removed.is_empty() {
                eprintln!("no ACL matched: nothing removed");
            } else {
                println!("Removed ACLs:");
            }
            for acl in &removed {
                println!("{}", kafka_line(acl));
            }
        }
    }
    Ok(())
}

/// An ACL as kafka-acls.sh printed it before Kafka 2.0, which fits one line and a `grep`:
/// `User:alice has ALLOW permission for operations: WRITE from hosts: * on TOPIC:LITERAL:orders`.
fn kafka_line(acl: &Acl) -> String {
    format!(
        "{} has {} permission for operations: {} from hosts: {} on {}:{}:{}",
        acl.principal, acl.permission, acl.operation, acl.host, acl.resource_type, acl.pattern_type, acl.name
    )
}

/// By resource, then principal: the order kafka-acls.sh groups its listing in.
fn sorted(mut acls: Vec<Acl>) -> Vec<Acl> {
    acls.sort_by(|a, b| {
        (a.resource_type, &a.name, a.pattern_type, &a.principal, &a.host, a.permission, a.operation).cmp(&(
            b.resource_type,
            &b.name,
            b.pattern_type,
            &b.principal,
            &b.host,
            b.permission,
            b.operation,
        ))
    });
    acls
}

/// The resource the flags name, if any.
fn resource_of(r: &AclResource) -> Result<Option<(ResourceType, String)>> {
    let named = [
        (ResourceType::Topic, &r.topic),
        (ResourceType::Group, &r.group),
        (ResourceType::TransactionalId, &r.transactional_id),
        (ResourceType::System, &r.system),
        (ResourceType::Subject, &r.subject),
    ];
    if r.cluster {
        return Ok(Some((ResourceType::Cluster, weir_security::CLUSTER.to_string())));
    }
    for (resource_type, name) in named {
        if let Some(name) = name {
            if name.is_empty() {
                bail!("the {} name must not be empty", resource_type.name().to_lowercase().replace('_', " "));
            }
            return Ok(Some((resource_type, name.clone())));
        }
    }
    Ok(None)
}

fn parse_operation(s: &str) -> Result<Operation> {
    s.parse::<Operation>().map_err(|_| {
        let names: Vec<String> = Operation::ALL.iter().map(|o| o.name().to_lowercase()).collect();
        anyhow::anyhow!("--operation {s:?}: no such operation (one of: {})", names.join(", "))
    })
}

/// The web console's routes are guarded as this system's (`weir up`): READ to look, WRITE to act.
pub const CONSOLE: &str = "console";

/// Kafka matches an ACL's host against the client's IP address, so a host name would never match: refused.
fn check_host(host: &str) -> Result<()> {
    if host != "*" && host.parse::<IpAddr>().is_err() {
        bail!("--host {host:?}: expected an IP address or * (ACLs match the client's address, not a host name)");
    }
    Ok(())
}

/// A literal system name must be one weir has, the web console (`console`, guarded as a system), or `*`: an ACL
/// for a misspelt system would guard nothing.
fn check_system(name: &str) -> Result<()> {
    if name != "*" && name != CONSOLE && crate::systems::find(name).is_none() {
        let mut known: Vec<String> = crate::systems::all().iter().map(|s| s.name().to_string()).collect();
        known.push(CONSOLE.into());
        bail!("--system {name:?}: there is no such system (known: {}, or * for all)", known.join(", "));
    }
    Ok(())
}

/// `weir acls list/remove`'s selectors as a filter. With a resource name, its literal ACLs by default (as
/// kafka-acls.sh's `--resource-pattern-type` defaults to LITERAL), `--prefixed` ones, or with `--matching` every ACL
/// that applies to it.
fn to_filter(args: &AclFilterArgs) -> Result<AclFilter> {
    let mut filter = AclFilter::any();
    if let Some(p) = &args.principal {
        weir_security::acl::check_principal(p).map_err(one_line)?;
        filter.principal = Some(p.clone());
    }
    if let Some(h) = &args.host {
        check_host(h)?;
        filter.host = Some(h.clone());
    }
    if let Some(o) = &args.operation {
        filter.operation = Some(parse_operation(o)?);
    }
    if let Some((resource_type, name)) = resource_of(&args.resource)? {
        filter.resource_type = Some(resource_type);
        filter.name = Some(name);
        filter.pattern = if args.matching {
            PatternFilter::Match
        } else if args.prefixed {
            PatternFilter::Exactly(PatternType::Prefixed)
        } else {
            PatternFilter::Exactly(PatternType::Literal)
        };
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_kafka_acls_prints_them() {
        let acl = Acl {
            resource_type: ResourceType::Topic,
            pattern_type: PatternType::Literal,
            name: "orders".into(),
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        };
        assert_eq!(
            kafka_line(&acl),
            "User:alice has ALLOW permission for operations: WRITE from hosts: * on TOPIC:LITERAL:orders"
        );
    }

    #[test]
    fn hosts_are_addresses() {
        assert!(check_host("*").is_ok() && check_host("10.0.0.1").is_ok() && check_host("::1").is_ok());
        assert!(check_host("db.example.com").is_err());
    }
}
