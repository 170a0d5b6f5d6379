//! `weir waitroom bench`: the waitroom's throughput against a running weir, over gRPC (tonic, `--connections`
//! HTTP/2 connections, requests multiplexed on them: one connection is one task on each side, which bounds a
//! client long before the server): joins a second, status lookups a second with the queue full of the
//! joined (admission paused), and the position stream's fan-out: how long until every one of S subscribers has
//! heard of one change to the queue. Over HTTP the same API is measured with wrk (`scripts/bench.sh waitroom`),
//! fed the session ids this writes (`--ids-out`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use weir_runtime::api_client::ApiTarget;

use crate::grpc::pb;
use crate::grpc::pb::waitroom_service_client::WaitroomServiceClient;

/// What to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    pub grpc: String,
    pub http: String,
    pub event_id: String,
    pub joins: u64,
    pub lookups: u64,
    pub streams: u64,
    pub in_flight: usize,
    /// HTTP/2 connections the requests and streams are spread over.
    pub connections: usize,
}

/// One result line.
#[derive(Clone, Debug, Serialize)]
pub struct Line {
    pub peer: &'static str,
    pub transport: &'static str,
    pub scenario: &'static str,
    pub count: u64,
    pub seconds: f64,
    pub per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

/// Runs `n` calls of `call` with `in_flight` at a time; the time taken and each call's latency (µs).
async fn drive<F, Fut>(n: u64, in_flight: usize, call: F) -> Result<(Duration, Vec<u64>)>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let (call, next) = (call.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                call(i).await?;
                latencies.push(t.elapsed().as_micros() as u64);
            }
        });
    }
    let mut all = Vec::with_capacity(n as usize);
    while let Some(done) = tasks.join_next().await {
        all.extend(done.context("a bench task")??);
    }
    Ok((started.elapsed(), all))
}

fn p99_ms(mut latencies: Vec<u64>) -> Option<f64> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    Some(latencies[(latencies.len() - 1) * 99 / 100] as f64 / 1000.0)
}

/// Runs the three measurements; returns their lines and the joined session ids.
pub async fn run(plan: &Plan) -> Result<(Vec<Line>, Vec<String>)> {
    let http = ApiTarget::Http(plan.http.clone());
    let config = json!({"enabled": true, "paused": true, "capacity": 100_000_000});
    http.call("POST", &format!("/api/v1/waitroom/events/{}/config", plan.event_id), &config).await?;
    let mut clients = Vec::new();
    for _ in 0..plan.connections.max(1) {
        clients.push(
            WaitroomServiceClient::connect(format!("http://{}", plan.grpc))
                .await
                .with_context(|| format!("cannot reach the waitroom's gRPC API at {}", plan.grpc))?,
        );
    }
    let clients = Arc::new(clients);
    let pick = |clients: &Arc<Vec<WaitroomServiceClient<tonic::transport::Channel>>>, i: u64| {
        clients[(i % clients.len() as u64) as usize].clone()
    };
    let client = clients[0].clone();
    let mut lines = Vec::new();

    // Joins.
    let ids = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(plan.joins as usize)));
    let run_tag = uuid::Uuid::new_v4().simple().to_string();
    let (took, latencies) = {
        let (clients, ids, event) = (clients.clone(), ids.clone(), plan.event_id.clone());
        drive(plan.joins, plan.in_flight, move |i| {
            let (mut client, ids, event, tag) = (pick(&clients, i), ids.clone(), event.clone(), run_tag.clone());
            async move {
                let request = pb::JoinQueueRequest {
                    user_id: format!("b{}-{i}", &tag[..8]),
                    event_id: event,
                    priority: (i % 11) as i32,
                    ..Default::default()
                };
                let joined = client.join_queue(request).await.context("JoinQueue")?.into_inner();
                ids.lock().push(joined.session_id);
                Ok(())
            }
        })
        .await?
    };
    lines.push(Line {
        peer: "weir",
        transport: "grpc",
        scenario: "waitroom_join",
        count: plan.joins,
        seconds: took.as_secs_f64(),
        per_second: plan.joins as f64 / took.as_secs_f64(),
        queued: None,
        p99_ms: p99_ms(latencies),
    });
    let ids: Vec<String> = ids.lock().clone();
    if ids.is_empty() {
        bail!("no session joined");
    }

    // Status lookups, the queue holding everyone joined.
    let queued = http
        .call("GET", &format!("/api/v1/waitroom/events/{}/stats", plan.event_id), &serde_json::Value::Null)
        .await?["waiting"]
        .as_u64();
    let shared = Arc::new(ids.clone());
    let (took, latencies) = {
        let (clients, shared) = (clients.clone(), shared.clone());
        drive(plan.lookups, plan.in_flight, move |i| {
            let (mut client, shared) = (pick(&clients, i), shared.clone());
            async move {
                // Spread over the queue (a multiplicative hash of i), not the same few.
                let id = shared[(i.wrapping_mul(2_654_435_761) % shared.len() as u64) as usize].clone();
                client
                    .get_queue_status(pb::GetQueueStatusRequest { session_id: id })
                    .await
                    .context("GetQueueStatus")?;
                Ok(())
            }
        })
        .await?
    };
    lines.push(Line {
        peer: "weir",
        transport: "grpc",
        scenario: "waitroom_status",
        count: plan.lookups,
        seconds: took.as_secs_f64(),
        per_second: plan.lookups as f64 / took.as_secs_f64(),
        queued,
        p99_ms: p99_ms(latencies),
    });

    // Fan-out: S streams on the last S sessions, each past its first update; then one change (the first in the
    // queue leaves): the time until every stream has its next update.
    let s = plan.streams.min(ids.len() as u64 - 1) as usize;
    if s > 0 {
        let heard = Arc::new(AtomicU64::new(0));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(s);
        let mut streams = tokio::task::JoinSet::new();
        let opening = Instant::now();
        for (i, id) in ids[ids.len() - s..].iter().cloned().enumerate() {
            let (mut client, heard, ready) = (pick(&clients, i as u64), heard.clone(), ready_tx.clone());
            streams.spawn(async move {
                let mut stream = client
                    .stream_queue_position(pb::StreamQueuePositionRequest { session_id: id })
                    .await
                    .context("StreamQueuePosition")?
                    .into_inner();
                stream.next().await.context("the first update")?.context("the first update")?;
                let _ = ready.send(()).await;
                stream.next().await.context("the second update")?.context("the second update")?;
                heard.fetch_add(1, Ordering::Relaxed);
                anyhow::Ok(())
            });
        }
        drop(ready_tx);
        for _ in 0..s {
            ready_rx.recv().await.context("a stream ended before its first update")?;
        }
        let opened = opening.elapsed();
        let changed = Instant::now();
        client.clone().leave_queue(pb::LeaveQueueRequest { session_id: ids[0].clone() }).await.context("LeaveQueue")?;
        let all_heard = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(done) = streams.join_next().await {
                done.context("a stream task")??;
            }
            anyhow::Ok(())
        })
        .await
        .context("the streams did not all hear the change within 120 s")?;
        all_heard?;
        let fan_out = changed.elapsed();
        lines.push(Line {
            peer: "weir",
            transport: "grpc",
            scenario: "waitroom_stream_open",
            count: s as u64,
            seconds: opened.as_secs_f64(),
            per_second: s as f64 / opened.as_secs_f64(),
            queued,
            p99_ms: None,
        });
        lines.push(Line {
            peer: "weir",
            transport: "grpc",
            scenario: "waitroom_stream_fan_out",
            count: heard.load(Ordering::Relaxed),
            seconds: fan_out.as_secs_f64(),
            per_second: s as f64 / fan_out.as_secs_f64(),
            queued,
            p99_ms: None,
        });
    }
    Ok((lines, ids))
}
