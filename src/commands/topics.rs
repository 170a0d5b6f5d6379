//! `weir topics create|list|describe|delete`.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::{human_bytes, open_broker};
use crate::cli::TopicsCommand;
use crate::settings::Settings;

pub async fn run(settings: Settings, cmd: TopicsCommand, configs: Vec<String>) -> Result<()> {
    let broker = open_broker(&settings)?;
    match cmd {
        TopicsCommand::Create { name, partitions } => {
            let partitions = weir_broker::validate_partitions(partitions)?;
            let mut map = BTreeMap::new();
            for c in configs {
                let Some((k, v)) = c.split_once('=') else {
                    bail!("--config takes KEY=VALUE, got {c:?}");
                };
                map.insert(k.trim().to_string(), v.trim().to_string());
            }
            broker.create_topic(&name, partitions, map)?;
            println!("created topic {name} with {partitions} partition{}", if partitions == 1 { "" } else { "s" });
        }
        TopicsCommand::List => {
            for t in broker.list_topics() {
                println!("{t}");
            }
        }
        TopicsCommand::Describe { name } => {
            let d = broker.describe_topic(&name)?;
            println!("topic {}  partitions {}", d.name, d.partitions.len());
            println!("{:>9}  {:>14}  {:>14}  {:>10}  status", "PARTITION", "START OFFSET", "END OFFSET", "SIZE");
            for p in &d.partitions {
                let status = p.offline.as_deref().map(|r| format!("OFFLINE: {r}")).unwrap_or_else(|| "online".into());
                println!(
                    "{:>9}  {:>14}  {:>14}  {:>10}  {status}",
                    p.partition,
                    p.log_start_offset,
                    p.log_end_offset,
                    human_bytes(p.size_bytes)
                );
            }
            println!("configs:");
            for (k, v) in &d.configs {
                println!("  {k}={v}");
            }
        }
        TopicsCommand::Delete { name } => {
            broker.delete_topic(&name)?;
            println!("deleted topic {name}");
        }
    }
    broker.shutdown();
    Ok(())
}
