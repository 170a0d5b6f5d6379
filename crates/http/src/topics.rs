//! Topic metadata in the REST Proxy v2 shapes: `GET /topics`, `/topics/{topic}`, `/topics/{topic}/partitions` and
//! `/topics/{topic}/partitions/{partition}`. weir is one broker (id 0), the leader and only replica of everything.
//! As in Kafka's metadata, the list holds the topics the principal may DESCRIBE, and describing one needs DESCRIBE.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use weir_broker::PartitionDescription;

use crate::auth::Access;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::AppState;
use weir_security::{Operation, ResourceType};

#[derive(Debug, Serialize, ToSchema)]
pub struct TopicInfo {
    pub name: String,
    /// Every effective setting.
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<Replica>,
    /// weir's addition: the partition's offsets and size on disk.
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
    /// Why the partition is offline, if it is.
    pub offline: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replica {
    pub broker: i32,
    pub leader: bool,
    pub in_sync: bool,
}

fn partition_info(p: &PartitionDescription) -> PartitionInfo {
    PartitionInfo {
        partition: p.partition,
        leader: 0,
        replicas: vec![Replica { broker: 0, leader: true, in_sync: p.offline.is_none() }],
        log_start_offset: p.log_start_offset,
        log_end_offset: p.log_end_offset,
        size_bytes: p.size_bytes,
        offline: p.offline.clone(),
    }
}

/// 400 for a path parameter that does not parse (a partition that is not a number).
pub fn bad_path(e: PathRejection) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, format!("bad path: {}", e.body_text()))
}

/// Topic names (those the caller may describe).
#[utoipa::path(get, path = "/topics", tag = "topics", responses((status = 200, body = Vec<String>)))]
pub async fn list(State(state): State<AppState>, access: Access) -> Json<Vec<String>> {
    let mut topics = state.broker.list_topics();
    topics.retain(|t| access.allows(Operation::Describe, ResourceType::Topic, t));
    Json(topics)
}

/// One topic: settings and partitions.
#[utoipa::path(
    get, path = "/topics/{topic}", tag = "topics",
    params(("topic" = String, Path, description = "Topic name")),
    responses(
        (status = 200, body = TopicInfo),
        (status = 403, description = "40301 not authorized to describe the topic", body = ErrorBody),
        (status = 404, description = "40401 unknown topic", body = ErrorBody)
    )
)]
pub async fn get_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    access: Access,
) -> Result<Json<TopicInfo>, ApiError> {
    access.topic(Operation::Describe, &topic)?;
    let d = state.broker.describe_topic(&topic)?;
    Ok(Json(TopicInfo {
        name: d.name,
        configs: d.configs,
        partitions: d.partitions.iter().map(partition_info).collect(),
    }))
}

/// A topic's partitions.
#[utoipa::path(
    get, path = "/topics/{topic}/partitions", tag = "topics",
    params(("topic" = String, Path, description = "Topic name")),
    responses(
        (status = 200, body = Vec<PartitionInfo>),
        (status = 403, description = "40301 not authorized to describe the topic", body = ErrorBody),
        (status = 404, description = "40401 unknown topic", body = ErrorBody)
    )
)]
pub async fn partitions(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    access: Access,
) -> Result<Json<Vec<PartitionInfo>>, ApiError> {
    access.topic(Operation::Describe, &topic)?;
    let d = state.broker.describe_topic(&topic)?;
    Ok(Json(d.partitions.iter().map(partition_info).collect()))
}

/// One partition.
#[utoipa::path(
    get, path = "/topics/{topic}/partitions/{partition}", tag = "topics",
    params(("topic" = String, Path, description = "Topic name"), ("partition" = i32, Path, description = "Partition")),
    responses(
        (status = 200, body = PartitionInfo),
        (status = 400, description = "The partition is not a number", body = ErrorBody),
        (status = 403, description = "40301 not authorized to describe the topic", body = ErrorBody),
        (status = 404, description = "40401 unknown topic, 40402 unknown partition", body = ErrorBody)
    )
)]
pub async fn partition(
    State(state): State<AppState>,
    path: Result<Path<(String, i32)>, PathRejection>,
    access: Access,
) -> Result<Json<PartitionInfo>, ApiError> {
    let Path((topic, partition)) = path.map_err(bad_path)?;
    access.topic(Operation::Describe, &topic)?;
    let d = state.broker.describe_topic(&topic)?;
    let p = d.partitions.iter().find(|p| p.partition == partition);
    p.map(|p| Json(partition_info(p))).ok_or_else(|| ApiError::partition_not_found(&topic, partition))
}
