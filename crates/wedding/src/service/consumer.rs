//! A team's consumer group (`wedding-<team>`) over its types' topics, on the runtime's at-least-once `Runner`:
//! each message goes to the team's desk. A message that is not a wedding event is dead-lettered
//! (`wedding.<type>.dlq`); one the desk already has (a redelivery, a relay's re-publish) finds its event no longer
//! pending when the desk claims it, so it is handled once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use weir_runtime::{Bus, Handler, HandlerError, Message, Runner, RunnerConfig, StartFrom, SystemError};

use super::topic_for;
use crate::dataset::parse_event;
use crate::rules::{all_types, teams_for, Team};
use crate::schedule::Event;

/// Hands each message of a team's topics to its desk.
struct ToDesk {
    desk: mpsc::Sender<(i64, Event)>,
}

#[async_trait]
impl Handler for ToDesk {
    async fn handle(&self, m: &Message) -> Result<(), HandlerError> {
        let (run, event) = decode(m.value.as_deref().unwrap_or_default()).map_err(HandlerError::Permanent)?;
        // The desk outlives the runner (it stops when this sender is dropped), so this fails only mid-shutdown,
        // where the record stays uncommitted and is redelivered.
        self.desk.send((run, event)).await.map_err(|_| HandlerError::Retryable("the team's desk has stopped".into()))
    }
}

/// A message as ingest wrote it: the run and the event, its time in milliseconds from the run's 00:00.
fn decode(value: &[u8]) -> Result<(i64, Event), String> {
    let v: Value = serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    let run = v["run"].as_i64().ok_or("no run")?;
    let (mut event, _) = parse_event(&v, 0, &|_| None).map_err(|e| e.to_string())?;
    event.happened = v["happened_ms"].as_i64().ok_or("no happened_ms")?;
    Ok((run, event))
}

/// Runs `team`'s consumer until `stop`; a runner that fails (the bus away) is logged, counted and started again.
pub(super) async fn run(
    bus: Arc<dyn Bus>,
    team: Team,
    desk: mpsc::Sender<(i64, Event)>,
    stop: watch::Receiver<bool>,
) -> Result<(), SystemError> {
    let topics: Vec<String> = all_types().filter(|t| teams_for(t).contains(&team)).map(topic_for).collect();
    let mut config = RunnerConfig::new(format!("wedding-{}", team.name()), topics);
    // From the earliest record: a team whose group joins after the first incidents still gets them (older runs'
    // events are recognised by their run and dropped by the desk).
    config.start_from = StartFrom::Earliest;
    // One partition per topic: the desk, not the runner, decides the order events are taken in.
    config.concurrency = 4;
    config.shutdown_deadline = Duration::from_secs(5);
    loop {
        let mut until = stop.clone();
        let runner = Runner::at_least_once(bus.clone(), config.clone(), ToDesk { desk: desk.clone() });
        match runner.run(async move { super::clock::stopped(&mut until).await }).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                metrics::counter!("wedding_consumer_errors_total", "team" => team.name()).increment(1);
                tracing::warn!(team = %team, error = %e, "a wedding team's consumer failed; starting it again in 1 s");
                let mut until = stop.clone();
                tokio::select! {
                    _ = super::clock::stopped(&mut until) => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn a_message_decodes_to_its_run_and_event_and_garbage_is_refused() {
        let body = br#"{"run": 7, "id": "a", "event_type": "brawl", "priority": "High", "description": "", "happened_ms": 1500}"#;
        let (run, e) = decode(body).unwrap();
        assert_eq!((run, e.id.as_str(), e.event_type, e.happened), (7, "a", "brawl", 1500));
        assert!(decode(b"{").is_err());
        assert!(decode(br#"{"run": 1, "event_type": "karaoke", "priority": "High", "happened_ms": 0}"#).is_err());
    }
}
