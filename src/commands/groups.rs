//! `weir groups list|describe`.

use anyhow::Result;

use super::open_broker;
use crate::cli::GroupsCommand;
use crate::settings::Settings;

pub async fn run(settings: Settings, cmd: GroupsCommand) -> Result<()> {
    let broker = open_broker(&settings)?;
    match cmd {
        GroupsCommand::List => {
            for g in broker.list_groups() {
                println!("{g}");
            }
        }
        GroupsCommand::Describe { group } => {
            let d = broker.describe_group(&group)?;
            println!(
                "group {}  state {}  generation {}  protocol {}",
                d.group,
                d.state,
                d.generation,
                if d.protocol.is_empty() { "-" } else { &d.protocol }
            );
            if d.members.is_empty() {
                println!("no active members");
            } else {
                println!("members:");
                for m in &d.members {
                    let assignment: Vec<String> = m
                        .assignment
                        .iter()
                        .map(|(t, ps)| {
                            format!("{t}[{}]", ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","))
                        })
                        .collect();
                    println!(
                        "  {}  client {}  host {}  assigned {}",
                        m.member_id,
                        m.client_id,
                        m.host,
                        assignment.join(" ")
                    );
                }
            }
            println!(
                "{:<30} {:>9} {:>16} {:>14} {:>10}",
                "TOPIC", "PARTITION", "COMMITTED OFFSET", "END OFFSET", "LAG"
            );
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
    }
    broker.shutdown();
    Ok(())
}
