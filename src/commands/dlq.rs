//! `weir dlq list|replay TOPIC`: the dead letters the runtime wrote to `<TOPIC>.dlq`, shown with where they came from
//! and why they failed, and re-published to their original topic once the cause is fixed. Works on the data
//! directory or, with `--server`, on a running weir or Kafka cluster, through the same `Bus` the systems use.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use weir_runtime::handler::{dlq_headers, dlq_replay};
use weir_runtime::{Bus, EmbeddedBus, KafkaBus, Message, OutgoingMessage, StartFrom, SubscribeOptions};

use super::{open_broker, print_line};
use crate::cli::DlqCommand;
use crate::settings::Settings;

/// The group replays commit under, so a second replay sends only letters that arrived since.
const REPLAY_GROUP: &str = dlq_replay::GROUP;

pub async fn run(mut settings: Settings, cmd: DlqCommand) -> Result<()> {
    let (bus, broker): (Arc<dyn Bus>, _) = match &settings.server {
        Some(server) => (Arc::new(KafkaBus::connect(server).map_err(|e| anyhow::anyhow!("--server: {e}"))?), None),
        None => {
            // This process is the only member of its groups: no reason to wait for others to join.
            settings.broker.group.initial_rebalance_delay_ms = 0;
            let broker = open_broker(&settings)?;
            (Arc::new(EmbeddedBus::new(broker.clone())), Some(broker))
        }
    };
    let result = match cmd {
        DlqCommand::List { topic, suffix } => list(&*bus, &format!("{topic}{suffix}")).await,
        DlqCommand::Replay { topic, suffix, max } => replay(&*bus, &topic, &format!("{topic}{suffix}"), max).await,
    };
    if let Some(b) = broker {
        b.shutdown();
    }
    result
}

fn header(m: &Message, name: &str) -> String {
    m.header(name).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_else(|| "-".into())
}

async fn list(bus: &dyn Bus, dlq: &str) -> Result<()> {
    let mut options = SubscribeOptions::new(format!("weir-dlq-list-{:08x}", rand::random::<u32>()), [dlq]);
    options.start_from = StartFrom::Earliest;
    let mut sub = bus.subscribe(options).await.with_context(|| format!("cannot read {dlq}"))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut n = 0;
    // Nothing is committed: listing changes nothing.
    while let Some(batch) = next(&mut *sub).await? {
        for m in batch {
            let preview: String =
                String::from_utf8_lossy(m.value.as_deref().unwrap_or_default()).chars().take(80).collect();
            let line = format!(
                "{}/{}\tfrom {}/{}/{}\tattempts {}\tfirst failure {}\terror {}\tvalue {}",
                m.partition,
                m.offset,
                header(&m, dlq_headers::TOPIC),
                header(&m, dlq_headers::PARTITION),
                header(&m, dlq_headers::OFFSET),
                header(&m, dlq_headers::ATTEMPTS),
                header(&m, dlq_headers::FIRST_FAILURE_MS),
                header(&m, dlq_headers::ERROR),
                preview
            );
            if !print_line(&mut out, line.as_bytes())? {
                return Ok(());
            }
            n += 1;
        }
    }
    let _ = sub.close().await;
    eprintln!("{n} dead letter{} in {dlq}", if n == 1 { "" } else { "s" });
    Ok(())
}

/// The next batch, or `None` once the topic has been quiet for a second (everything there has been read).
async fn next(sub: &mut dyn weir_runtime::Subscription) -> Result<Option<Vec<Message>>> {
    let mut waited = Duration::ZERO;
    loop {
        let batch = match sub.next_batch(Duration::from_millis(250)).await {
            Ok(b) => b,
            Err(weir_runtime::BusError::Rebalanced) => continue,
            Err(e) => return Err(e.into()),
        };
        if !batch.is_empty() {
            return Ok(Some(batch));
        }
        waited += Duration::from_millis(250);
        // Joining the group can take a few seconds on a shared server; quiet after that means done.
        let joined = !sub.assignment().is_empty();
        if (joined && waited >= Duration::from_secs(1)) || waited >= Duration::from_secs(30) {
            return Ok(None);
        }
    }
}

/// The letters of `dlq` replayed one by one (by the web console), as recorded in the replays topic: not sent again.
async fn replayed_one_by_one(bus: &dyn Bus, dlq: &str) -> Result<std::collections::HashSet<(i32, i64)>> {
    let mut done = std::collections::HashSet::new();
    let end = match bus.end_offsets(dlq_replay::REPLAYS_TOPIC).await {
        Ok(end) => end.first().copied().unwrap_or(0),
        // Nothing was ever replayed one by one.
        Err(weir_runtime::BusError::UnknownTopic(_)) => return Ok(done),
        Err(e) => return Err(e).context("cannot read which dead letters were replayed"),
    };
    if end == 0 {
        return Ok(done);
    }
    let mut sub = bus.read(&[dlq_replay::REPLAYS_TOPIC.to_string()], StartFrom::Earliest).await?;
    let mut read_up_to = 0;
    let started = std::time::Instant::now();
    while read_up_to < end {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("cannot read {} to its end within 30 s", dlq_replay::REPLAYS_TOPIC);
        }
        for m in sub.next_batch(Duration::from_millis(250)).await? {
            read_up_to = read_up_to.max(m.offset + 1);
            let Some(v) = m.value.as_deref().and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok()) else {
                continue;
            };
            if let (Some(d), Some(p), Some(o)) = (v["dlq"].as_str(), v["partition"].as_i64(), v["offset"].as_i64()) {
                if d == dlq {
                    done.insert((p as i32, o));
                }
            }
        }
    }
    let _ = sub.close().await;
    Ok(done)
}

async fn replay(bus: &dyn Bus, topic: &str, dlq: &str, max: Option<u64>) -> Result<()> {
    let already = replayed_one_by_one(bus, dlq).await?;
    let mut options = SubscribeOptions::new(REPLAY_GROUP, [dlq]);
    options.start_from = StartFrom::Earliest;
    let mut sub = bus.subscribe(options).await.with_context(|| format!("cannot read {dlq}"))?;
    let max = max.unwrap_or(u64::MAX);
    let mut n = 0u64;
    'outer: while let Some(batch) = next(&mut *sub).await? {
        let mut commits = Vec::new();
        for m in batch {
            if n >= max {
                break 'outer;
            }
            if already.contains(&(m.partition, m.offset)) {
                commits.push((m.topic.clone(), m.partition, m.offset + 1));
                continue;
            }
            let original = m.header(dlq_headers::TOPIC).map(|t| String::from_utf8_lossy(t).into_owned());
            let target = original.unwrap_or_else(|| topic.to_string());
            let mut headers: Vec<(String, Bytes)> =
                m.headers.iter().filter(|(k, _)| !k.starts_with(dlq_headers::PREFIX)).cloned().collect();
            headers
                .push((dlq_headers::REPLAYED_FROM.into(), Bytes::from(format!("{dlq}/{}/{}", m.partition, m.offset))));
            let msg = OutgoingMessage {
                topic: target,
                key: m.key.clone(),
                value: m.value.clone(),
                headers,
                partition: None,
                timestamp: None,
            };
            bus.produce(msg).await.context("cannot re-publish a dead letter")?;
            commits.push((m.topic.clone(), m.partition, m.offset + 1));
            n += 1;
        }
        sub.commit_offsets(&commits).await?;
    }
    let _ = sub.close().await;
    if n == 0 && max > 0 {
        eprintln!("nothing to replay in {dlq} (letters replayed before are not sent again)");
    } else {
        eprintln!("replayed {n} dead letter{} from {dlq}", if n == 1 { "" } else { "s" });
    }
    if max == 0 {
        bail!("--max 0 replays nothing");
    }
    Ok(())
}
