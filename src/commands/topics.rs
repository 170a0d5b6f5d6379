//! `weir topics create|list|describe|delete`, on the data directory or, with `--server`, over the Kafka protocol.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use rdkafka::admin::{AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use weir_broker::{PartitionDescription, TopicDescription};

use super::kafka_client::{Remote, TIMEOUT};
use super::{human_bytes, open_broker};
use crate::cli::TopicsCommand;
use crate::settings::Settings;

pub async fn run(settings: Settings, cmd: TopicsCommand, configs: Vec<String>) -> Result<()> {
    let configs = parse_configs(configs)?;
    if let Some(server) = &settings.server {
        return run_remote(&Remote::new(server)?, cmd, configs).await;
    }
    let broker = open_broker(&settings)?;
    match cmd {
        TopicsCommand::Create { name, partitions } => {
            let partitions = weir_broker::validate_partitions(partitions)?;
            broker.create_topic(&name, partitions, configs)?;
            print_created(&name, partitions);
        }
        TopicsCommand::List => {
            for t in broker.list_topics() {
                println!("{t}");
            }
        }
        TopicsCommand::Describe { name } => print_description(&broker.describe_topic(&name)?, true),
        TopicsCommand::Delete { name } => {
            broker.delete_topic(&name)?;
            println!("deleted topic {name}");
        }
    }
    broker.shutdown();
    Ok(())
}

async fn run_remote(remote: &Remote, cmd: TopicsCommand, configs: BTreeMap<String, String>) -> Result<()> {
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
    match cmd {
        TopicsCommand::Create { name, partitions } => {
            let partitions = weir_broker::validate_partitions(partitions)?;
            let mut topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
            for (k, v) in &configs {
                topic = topic.set(k, v);
            }
            for result in remote.admin()?.create_topics([&topic], &options).await? {
                if let Err((name, code)) = result {
                    bail!("cannot create topic {name} on {}: {code}", remote.name());
                }
            }
            print_created(&name, partitions);
        }
        TopicsCommand::List => {
            let client = remote.metadata_client()?;
            for t in remote.topics(&client, None)? {
                println!("{}", t.name);
            }
        }
        TopicsCommand::Describe { name } => {
            let client = remote.metadata_client()?;
            let topic = remote.topics(&client, Some(&name))?.into_iter().next();
            let Some(topic) = topic else { bail!("unknown topic {name:?} on {}", remote.name()) };
            let mut partitions = Vec::new();
            for p in &topic.partitions {
                let (start, end) = match &p.error {
                    None => remote.watermarks(&client, &name, p.id)?,
                    Some(_) => (-1, -1),
                };
                partitions.push(PartitionDescription {
                    partition: p.id,
                    log_start_offset: start,
                    log_end_offset: end,
                    size_bytes: 0,
                    offline: p.error.clone(),
                });
            }
            let mut configs = BTreeMap::new();
            for resource in remote.admin()?.describe_configs([&ResourceSpecifier::Topic(&name)], &options).await? {
                match resource {
                    Ok(r) => {
                        for e in r.entries {
                            configs.insert(e.name, e.value.unwrap_or_default());
                        }
                    }
                    Err(code) => bail!("cannot read the settings of {name} from {}: {code}", remote.name()),
                }
            }
            // The Kafka protocol's metadata carries no partition sizes (that is DescribeLogDirs).
            print_description(&TopicDescription { name, partitions, configs }, false);
        }
        TopicsCommand::Delete { name } => {
            for result in remote.admin()?.delete_topics(&[&name], &options).await? {
                if let Err((name, code)) = result {
                    bail!("cannot delete topic {name} on {}: {code}", remote.name());
                }
            }
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

fn parse_configs(configs: Vec<String>) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for c in configs {
        let Some((k, v)) = c.split_once('=') else {
            bail!("--config takes KEY=VALUE, got {c:?}");
        };
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(map)
}

fn print_created(name: &str, partitions: i32) {
    println!("created topic {name} with {partitions} partition{}", if partitions == 1 { "" } else { "s" });
}

fn print_description(d: &TopicDescription, sizes_known: bool) {
    println!("topic {}  partitions {}", d.name, d.partitions.len());
    println!("{:>9}  {:>14}  {:>14}  {:>10}  status", "PARTITION", "START OFFSET", "END OFFSET", "SIZE");
    for p in &d.partitions {
        let status = p.offline.as_deref().map(|r| format!("OFFLINE: {r}")).unwrap_or_else(|| "online".into());
        let size = if sizes_known { human_bytes(p.size_bytes) } else { "-".into() };
        println!("{:>9}  {:>14}  {:>14}  {:>10}  {status}", p.partition, p.log_start_offset, p.log_end_offset, size);
    }
    println!("configs:");
    for (k, v) in &d.configs {
        println!("  {k}={v}");
    }
}
