//! A consumer group's page: members and their assignment, committed and end offsets, lag per partition, lag over
//! the last hour in total and per partition (samples the server keeps, [`LagHistory`]), and resetting offsets (to the start, the end, a time
//! or an offset) while the group has no members, as Kafka allows.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::Platform;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{bad, ApiError, Console};

/// How often every group's lag is sampled on the embedded broker (see `Platform::lag_sample_every`), and how many
/// samples are kept at most (an hour's at that pace).
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SAMPLES_KEPT: usize = 720;

/// Each group's lag over the last hour, in total and per partition: (milliseconds since the epoch, lag).
#[derive(Debug, Default)]
pub(crate) struct LagHistory {
    samples: std::sync::Mutex<HashMap<String, GroupSamples>>,
}

/// A topic and partition.
type Partition = (String, i32);
/// (milliseconds since the epoch, lag) samples, oldest first.
type Samples = Vec<(i64, i64)>;

/// Most partitions of one group whose own lag is kept (in their order): an hour of samples is 720 numbers each, so
/// a group over thousands of partitions keeps its total only beyond these.
const PARTITIONS_KEPT: usize = 100;

#[derive(Debug, Default)]
struct GroupSamples {
    total: VecDeque<(i64, i64)>,
    partitions: BTreeMap<(String, i32), VecDeque<(i64, i64)>>,
}

/// How far back the samples go.
const KEPT_FOR_MS: i64 = 3_600_000;

/// Adds a sample, dropping those older than an hour (and any beyond [`SAMPLES_KEPT`]).
fn push(kept: &mut VecDeque<(i64, i64)>, sample: (i64, i64)) {
    kept.push_back(sample);
    while kept.len() > SAMPLES_KEPT || kept.front().is_some_and(|(at, _)| *at < sample.0 - KEPT_FOR_MS) {
        kept.pop_front();
    }
}

impl LagHistory {
    async fn sample(&self, platform: &dyn Platform) {
        let now = now_ms();
        let mut lags = HashMap::new();
        for g in platform.list_groups().await.unwrap_or_default() {
            if let Ok(d) = platform.describe_group(&g).await {
                let partitions: Vec<((String, i32), i64)> =
                    d.offsets.iter().filter_map(|o| o.lag.map(|lag| ((o.topic.clone(), o.partition), lag))).collect();
                lags.insert(g, partitions);
            }
        }
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.retain(|g, _| lags.contains_key(g));
        for (g, partitions) in lags {
            let kept = samples.entry(g).or_default();
            push(&mut kept.total, (now, partitions.iter().map(|(_, lag)| lag).sum()));
            kept.partitions.retain(|key, _| partitions.iter().any(|(k, _)| k == key));
            for (key, lag) in partitions {
                if kept.partitions.len() >= PARTITIONS_KEPT && !kept.partitions.contains_key(&key) {
                    continue;
                }
                push(kept.partitions.entry(key).or_default(), (now, lag));
            }
        }
    }

    /// The group's total lag samples.
    fn of(&self, group: &str) -> Vec<(i64, i64)> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.get(group).map(|s| s.total.iter().copied().collect()).unwrap_or_default()
    }

    /// Each partition's lag samples (those kept, see [`PARTITIONS_KEPT`]).
    fn per_partition(&self, group: &str) -> Vec<(Partition, Samples)> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = samples.get(group) else { return Vec::new() };
        s.partitions.iter().map(|(k, v)| (k.clone(), v.iter().copied().collect())).collect()
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Samples every group's lag until the console is gone (on a platform that says so, only while a page is open:
/// `watching` counts the pages listening to the live feed).
pub(crate) async fn keep_sampling(
    platform: Weak<dyn Platform>,
    history: Arc<LagHistory>,
    watching: Arc<tokio::sync::watch::Sender<Option<crate::Snapshot>>>,
) {
    loop {
        let Some(p) = platform.upgrade() else { return };
        if p.samples_unwatched() || watching.receiver_count() > 0 {
            history.sample(&*p).await;
        }
        let every = p.lag_sample_every();
        drop(p);
        tokio::time::sleep(every).await;
    }
}

/// `GET /console/api/groups/{group}`.
pub(crate) async fn group(State(c): State<Console>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let d = c.platform.describe_group(&name).await?;
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            let assignment: Vec<String> =
                m.assignment.iter().flat_map(|(t, ps)| ps.iter().map(move |p| format!("{t}-{p}"))).collect();
            json!({"member_id": m.member_id, "client_id": m.client_id, "host": m.host, "assignment": assignment})
        })
        .collect();
    let offsets: Vec<Value> = d
        .offsets
        .iter()
        .map(|o| {
            json!({"topic": o.topic, "partition": o.partition, "committed": o.committed, "end_offset": o.log_end_offset,
                   "lag": o.lag})
        })
        .collect();
    let history: Vec<Value> =
        c.lag_history.of(&name).into_iter().map(|(at, lag)| json!({"at": at, "lag": lag})).collect();
    let partition_history: Vec<Value> = c
        .lag_history
        .per_partition(&name)
        .into_iter()
        .map(|((topic, partition), samples)| {
            let samples: Vec<[i64; 2]> = samples.into_iter().map(|(at, lag)| [at, lag]).collect();
            json!({"topic": topic, "partition": partition, "samples": samples})
        })
        .collect();
    Ok(Json(json!({
        "group": d.group,
        "state": d.state,
        "protocol": d.protocol,
        "generation": d.generation,
        "members": members,
        "offsets": offsets,
        "lag": d.offsets.iter().filter_map(|o| o.lag).sum::<i64>(),
        "history": history,
        "partition_history": partition_history,
        "sample_every_seconds": c.platform.lag_sample_every().as_secs(),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct Reset {
    /// `earliest`, `latest`, `timestamp` or `offset`.
    to: String,
    /// Only this topic's partitions (all the group has offsets on when absent).
    topic: Option<String>,
    /// With `timestamp`: milliseconds since the epoch (the first record at or after it; the end when none is).
    timestamp: Option<i64>,
    /// With `offset`: the offset, kept within each partition's start and end.
    offset: Option<i64>,
}

/// `POST /console/api/groups/{group}/reset`: moves the group's committed offsets, refused (409) while it has members.
pub(crate) async fn reset(
    State(c): State<Console>,
    Path(name): Path<String>,
    body: Result<Json<Reset>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(r) = body.map_err(|e| bad(format!("bad reset: {}", e.body_text())))?;
    if !matches!(r.to.as_str(), "earliest" | "latest" | "timestamp" | "offset") {
        return Err(bad(format!("to must be earliest, latest, timestamp or offset, not {:?}", r.to)));
    }
    if r.to == "timestamp" && r.timestamp.is_none() {
        return Err(bad("to=timestamp needs timestamp (ms since the epoch)".into()));
    }
    if r.to == "offset" && r.offset.is_none() {
        return Err(bad("to=offset needs offset".into()));
    }
    let d = c.platform.describe_group(&name).await?;
    if !d.members.is_empty() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("the group has {} member(s): offsets can be reset only while it is empty", d.members.len()),
        ));
    }
    let mut moved = Vec::new();
    for o in d.offsets.iter().filter(|o| r.topic.as_ref().is_none_or(|t| *t == o.topic)) {
        let (start, end) = c.platform.offsets(&o.topic, o.partition).await?;
        let to = match r.to.as_str() {
            "earliest" => start,
            "latest" => end,
            "offset" => r.offset.unwrap_or(start).clamp(start, end),
            _ => c.platform.offset_for_timestamp(&o.topic, o.partition, r.timestamp.unwrap_or(0)).await?.unwrap_or(end),
        };
        moved.push((o.topic.clone(), o.partition, to));
    }
    if moved.is_empty() {
        return Err(bad("the group has no committed offsets to reset (on that topic)".into()));
    }
    c.platform.commit_offsets(&name, &moved, "reset by the weir console").await?;
    let answer: Vec<Value> = moved.iter().map(|(t, p, o)| json!({"topic": t, "partition": p, "offset": o})).collect();
    Ok(Json(json!({"group": name, "offsets": answer})).into_response())
}
