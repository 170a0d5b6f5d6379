//! `weir groups list|describe`, on the data directory or, with `--server`, over the Kafka protocol.

use anyhow::{bail, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use weir_broker::group::consumer_protocol::decode_assignment;
use weir_broker::{GroupDetails, MemberDetails, PartitionLag};

use super::kafka_client::{blocking, Remote, TIMEOUT};
use super::open_broker;
use crate::cli::GroupsCommand;
use crate::settings::Settings;

pub async fn run(settings: Settings, cmd: GroupsCommand) -> Result<()> {
    if let Some(server) = &settings.server {
        return run_remote(&Remote::new(server)?, cmd);
    }
    let broker = open_broker(&settings)?;
    match cmd {
        GroupsCommand::List => {
            for g in broker.list_groups() {
                println!("{g}");
            }
        }
        GroupsCommand::Describe { group } => print_details(&broker.describe_group(&group)?),
    }
    broker.shutdown();
    Ok(())
}

fn run_remote(remote: &Remote, cmd: GroupsCommand) -> Result<()> {
    let client = remote.metadata_client()?;
    match cmd {
        GroupsCommand::List => {
            let list = blocking(|| client.fetch_group_list(None, TIMEOUT))?;
            let mut names: Vec<&str> = list.groups().iter().map(|g| g.name()).collect();
            names.sort_unstable();
            for g in names {
                println!("{g}");
            }
        }
        GroupsCommand::Describe { group } => match describe_remote(remote, &client, &group)? {
            Some(details) => print_details(&details),
            None => bail!("unknown group {group:?} on {}", remote.name()),
        },
    }
    Ok(())
}

/// DescribeGroups for members and assignments, then OffsetFetch over every partition the cluster has (the
/// protocol has no "all of this group's offsets" call in librdkafka) and ListOffsets for the end offsets. `None` for
/// a group the cluster does not know.
pub(crate) fn describe_remote(remote: &Remote, client: &BaseConsumer, group: &str) -> Result<Option<GroupDetails>> {
    let list = blocking(|| client.fetch_group_list(Some(group), TIMEOUT))?;
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(None);
    };
    let members = info
        .members()
        .iter()
        .map(|m| MemberDetails {
            member_id: m.id().to_string(),
            client_id: m.client_id().to_string(),
            host: m.client_host().to_string(),
            assignment: m
                .assignment()
                .and_then(|a| decode_assignment(a).ok())
                .map(|a| a.partitions.into_iter().collect())
                .unwrap_or_default(),
        })
        .collect();

    let mut all = TopicPartitionList::new();
    for t in remote.topics(client, None)? {
        for p in t.partitions {
            all.add_partition(&t.name, p.id);
        }
    }
    let member: BaseConsumer = remote.create(remote.config().set("group.id", group))?;
    let committed = blocking(|| member.committed_offsets(all, TIMEOUT))?;
    let mut offsets = Vec::new();
    for e in committed.elements() {
        let Offset::Offset(committed) = e.offset() else { continue };
        let (_, end) = remote.watermarks(client, e.topic(), e.partition())?;
        offsets.push(PartitionLag {
            topic: e.topic().to_string(),
            partition: e.partition(),
            committed: Some(committed),
            log_end_offset: end,
            lag: Some((end - committed).max(0)),
        });
    }
    // Kafka reports a group nobody joined and nobody committed for as "Dead" rather than unknown.
    if info.state() == "Dead" && offsets.is_empty() {
        return Ok(None);
    }
    Ok(Some(GroupDetails {
        group: group.to_string(),
        state: info.state().to_string(),
        protocol: info.protocol().to_string(),
        generation: -1, // DescribeGroups does not carry it
        members,
        offsets,
    }))
}

fn print_details(d: &GroupDetails) {
    let generation = if d.generation < 0 { "-".to_string() } else { d.generation.to_string() };
    let protocol = if d.protocol.is_empty() { "-" } else { &d.protocol };
    println!("group {}  state {}  generation {generation}  protocol {protocol}", d.group, d.state);
    if d.members.is_empty() {
        println!("no active members");
    } else {
        println!("members:");
        for m in &d.members {
            let assignment: Vec<String> = m
                .assignment
                .iter()
                .map(|(t, ps)| format!("{t}[{}]", ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")))
                .collect();
            println!("  {}  client {}  host {}  assigned {}", m.member_id, m.client_id, m.host, assignment.join(" "));
        }
    }
    println!("{:<30} {:>9} {:>16} {:>14} {:>10}", "TOPIC", "PARTITION", "COMMITTED OFFSET", "END OFFSET", "LAG");
    for o in &d.offsets {
        let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        println!(
            "{:<30} {:>9} {:>16} {:>14} {:>10}",
            o.topic,
            o.partition,
            opt(o.committed),
            o.log_end_offset,
            opt(o.lag)
        );
    }
}
