//! Operator routes: consumer groups with their members, assignments, committed offsets and lag; and `/health`.
//! Groups are Kafka's admin operations under the ACLs: listing shows the groups the principal may DESCRIBE, describing
//! one needs DESCRIBE on it, and its offsets are those of the topics the principal may DESCRIBE (Kafka's OffsetFetch).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use weir_broker::group::GroupError;
use weir_broker::BrokerError;

use crate::auth::Access;
use crate::error::{ApiError, ErrorBody};
use crate::AppState;
use weir_security::{Operation, ResourceType};

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupInfo {
    pub group: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead.
    pub state: String,
    pub protocol: String,
    pub generation: i32,
    pub members: Vec<GroupMemberInfo>,
    pub offsets: Vec<PartitionLagInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupMemberInfo {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<TopicAssignment>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopicAssignment {
    pub topic: String,
    pub partitions: Vec<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionLagInfo {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: Option<i64>,
    pub log_end_offset: i64,
    pub lag: Option<i64>,
}

/// Consumer group ids.
#[utoipa::path(get, path = "/groups", tag = "admin", responses((status = 200, body = Vec<String>)))]
pub async fn groups(State(state): State<AppState>, access: Access) -> Json<Vec<String>> {
    let mut groups = state.broker.list_groups();
    groups.retain(|g| access.allows(Operation::Describe, ResourceType::Group, g));
    Json(groups)
}

/// One group: members, assignments, committed offsets, end offsets and lag per partition.
#[utoipa::path(
    get, path = "/groups/{group}", tag = "admin",
    params(("group" = String, Path, description = "Group id")),
    responses(
        (status = 200, body = GroupInfo),
        (status = 403, description = "40301 not authorized to describe the group", body = ErrorBody),
        (status = 404, description = "40404 unknown group", body = ErrorBody)
    )
)]
pub async fn group(
    State(state): State<AppState>,
    Path(group): Path<String>,
    access: Access,
) -> Result<Json<GroupInfo>, ApiError> {
    access.group(Operation::Describe, &group)?;
    let d = match state.broker.describe_group(&group) {
        Ok(d) => d,
        Err(BrokerError::Group(GroupError::GroupIdNotFound(_))) => return Err(ApiError::group_not_found(&group)),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(GroupInfo {
        group: d.group,
        state: d.state,
        protocol: d.protocol,
        generation: d.generation,
        members: d
            .members
            .into_iter()
            .map(|m| GroupMemberInfo {
                member_id: m.member_id,
                client_id: m.client_id,
                host: m.host,
                assignment: m
                    .assignment
                    .into_iter()
                    .map(|(topic, partitions)| TopicAssignment { topic, partitions })
                    .collect(),
            })
            .collect(),
        offsets: d
            .offsets
            .into_iter()
            .filter(|o| access.allows(Operation::Describe, ResourceType::Topic, &o.topic))
            .map(|o| PartitionLagInfo {
                topic: o.topic,
                partition: o.partition,
                committed_offset: o.committed,
                log_end_offset: o.log_end_offset,
                lag: o.lag,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` (with status 503) when a partition is offline or writes to one are failing.
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
    /// The bus the systems of this process use.
    pub bus: String,
    pub storage: Storage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Storage {
    pub data_dir: String,
    pub topics: usize,
    pub partitions: usize,
    pub offline_partitions: usize,
    /// Partitions whose latest write failed in the storage (a full disk, an I/O error).
    pub failing_partitions: usize,
    pub size_bytes: u64,
    /// Stored batches that consumers could not decode and skipped since the process started.
    pub skipped_batches: u64,
    /// What is wrong, one entry a partition.
    pub problems: Vec<StorageProblem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StorageProblem {
    pub topic: String,
    pub partition: i32,
    /// `offline` (its log could not be opened) or `writes failing`.
    pub problem: String,
    pub error: String,
    /// For failing writes: when they started failing (ms since the epoch) and how many have failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u64>,
}

/// Liveness and storage state: 200 when healthy, 503 when degraded, with the same body.
#[utoipa::path(get, path = "/health", tag = "admin", responses(
    (status = 200, body = Health),
    (status = 503, description = "A partition is offline or its writes are failing", body = Health),
))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let h = state.broker.health();
    let mut size = 0;
    for t in state.broker.list_topics() {
        if let Ok(d) = state.broker.describe_topic(&t) {
            size += d.partitions.iter().map(|p| p.size_bytes).sum::<u64>();
        }
    }
    let mut problems: Vec<StorageProblem> = h
        .offline
        .iter()
        .map(|(topic, partition, reason)| StorageProblem {
            topic: topic.clone(),
            partition: *partition,
            problem: "offline".into(),
            error: reason.clone(),
            since_ms: None,
            failures: None,
        })
        .collect();
    problems.extend(h.failing_writes.iter().map(|(topic, partition, f)| StorageProblem {
        topic: topic.clone(),
        partition: *partition,
        problem: "writes failing".into(),
        error: f.error.clone(),
        since_ms: Some(f.since_ms),
        failures: Some(f.failures),
    }));
    let status = if h.ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Health {
        status: if h.ok() { "ok" } else { "degraded" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: state.started.elapsed().as_secs(),
        bus: state.config.bus.clone(),
        storage: Storage {
            data_dir: state.broker.config().data_dir.display().to_string(),
            topics: h.topics,
            partitions: h.partitions,
            offline_partitions: h.offline.len(),
            failing_partitions: h.failing_writes.len(),
            size_bytes: size,
            skipped_batches: h.skipped_batches,
            problems,
        },
    };
    (status, Json(body))
}
