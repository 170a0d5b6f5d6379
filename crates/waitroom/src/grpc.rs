//! The origin's gRPC API, `waitroom.v1.WaitroomService` (`proto/waitroom/v1/waitroom.proto`), over the same
//! [`Room`] as the HTTP API, with server reflection (grpcurl and other tools list and call it without the file).
//! Refusals map to gRPC codes: ALREADY_EXISTS (an active session), RESOURCE_EXHAUSTED (full), PERMISSION_DENIED
//! (not enabled), NOT_FOUND, FAILED_PRECONDITION (expired, already settled), INVALID_ARGUMENT (naming the field),
//! UNAVAILABLE (the store or the outbox failed).

use std::net::SocketAddr;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status as GrpcStatus};

use crate::model::{Status, MAX_PRIORITY};
use crate::room::{JoinRequest, Room, RoomError, View};

/// The generated messages, client and server.
pub mod pb {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("waitroom.v1");

    /// The encoded descriptors, for reflection.
    pub const DESCRIPTOR: &[u8] = tonic::include_file_descriptor_set!("waitroom_descriptor");
}

use pb::waitroom_service_server::{WaitroomService, WaitroomServiceServer};

/// The service over a room.
#[derive(Clone, Debug)]
pub struct Service {
    room: Room,
}

fn code(e: RoomError) -> GrpcStatus {
    let message = e.to_string();
    match e {
        RoomError::AlreadyJoined(_) => GrpcStatus::already_exists(message),
        RoomError::Full(_) => GrpcStatus::resource_exhausted(message),
        RoomError::NotEnabled(_) => GrpcStatus::permission_denied(message),
        RoomError::NotFound(_) => GrpcStatus::not_found(message),
        RoomError::Expired(_) | RoomError::Settled(..) => GrpcStatus::failed_precondition(message),
        RoomError::Invalid(_) => GrpcStatus::invalid_argument(message),
        RoomError::Kv(_) | RoomError::Outbox(_) => GrpcStatus::unavailable(message),
    }
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

fn status_code(s: Status) -> i32 {
    (match s {
        Status::Queued => pb::SessionStatus::Queued,
        Status::Admitted => pb::SessionStatus::Ready,
        Status::Completed => pb::SessionStatus::Completed,
        Status::Expired => pb::SessionStatus::Expired,
        Status::Failed => pb::SessionStatus::Failed,
        Status::Abandoned => pb::SessionStatus::Cancelled,
    }) as i32
}

fn update(v: View) -> pb::PositionUpdate {
    pb::PositionUpdate {
        session_id: v.session_id,
        position: v.position,
        queue_length: v.queue_length as i64,
        status: status_code(v.status),
        updated_at: Some(ts(chrono::Utc::now())),
        checkout_token: v.checkout_token.unwrap_or_default(),
        checkout_url: v.checkout_url.unwrap_or_default(),
        estimated_wait_seconds: v.estimated_wait_seconds.map_or(-1, |w| w as i64),
    }
}

type PositionStream = Pin<Box<dyn Stream<Item = Result<pb::PositionUpdate, GrpcStatus>> + Send>>;

#[tonic::async_trait]
impl WaitroomService for Service {
    async fn join_queue(
        &self,
        request: Request<pb::JoinQueueRequest>,
    ) -> Result<Response<pb::JoinQueueResponse>, GrpcStatus> {
        let r = request.into_inner();
        if !(0..=i32::from(MAX_PRIORITY)).contains(&r.priority) {
            return Err(GrpcStatus::invalid_argument(format!(
                "priority: from 0 to {MAX_PRIORITY}, got {}",
                r.priority
            )));
        }
        let some = |s: String| (!s.is_empty()).then_some(s);
        let joined = self
            .room
            .join(JoinRequest {
                user_id: r.user_id,
                event_id: r.event_id,
                priority: r.priority as u8,
                user_agent: some(r.user_agent),
                ip_address: some(r.ip_address),
            })
            .await
            .map_err(code)?;
        Ok(Response::new(pb::JoinQueueResponse {
            session_id: joined.session_id,
            position: joined.position,
            queue_length: joined.queue_length as i64,
            queued_at: Some(ts(joined.queued_at)),
            expires_at: Some(ts(joined.expires_at)),
            websocket_url: joined.websocket_url,
        }))
    }

    async fn get_queue_status(
        &self,
        request: Request<pb::GetQueueStatusRequest>,
    ) -> Result<Response<pb::GetQueueStatusResponse>, GrpcStatus> {
        let v = self.room.status(&request.into_inner().session_id).await.map_err(code)?;
        Ok(Response::new(pb::GetQueueStatusResponse {
            session_id: v.session_id,
            status: status_code(v.status),
            position: v.position,
            queue_length: v.queue_length as i64,
            queued_at: Some(ts(v.queued_at)),
            expires_at: Some(ts(v.expires_at)),
            checkout_token: v.checkout_token.unwrap_or_default(),
            checkout_url: v.checkout_url.unwrap_or_default(),
            checkout_expires_at: v.checkout_expires_at.map(ts),
            admitted_at: v.admitted_at.map(ts),
            estimated_wait_seconds: v.estimated_wait_seconds.map_or(-1, |w| w as i64),
            priority: i32::from(v.priority),
            arrival: v.arrival,
        }))
    }

    async fn leave_queue(
        &self,
        request: Request<pb::LeaveQueueRequest>,
    ) -> Result<Response<pb::LeaveQueueResponse>, GrpcStatus> {
        let s = self.room.leave(&request.into_inner().session_id).await.map_err(code)?;
        Ok(Response::new(pb::LeaveQueueResponse { session_id: s.id, message: "Queue left successfully".into() }))
    }

    type StreamQueuePositionStream = PositionStream;

    async fn stream_queue_position(
        &self,
        request: Request<pb::StreamQueuePositionRequest>,
    ) -> Result<Response<PositionStream>, GrpcStatus> {
        let id = request.into_inner().session_id;
        // Unknown or expired sessions are refused before the stream starts.
        self.room.status(&id).await.map_err(code)?;
        let updates = crate::api::positions(self.room.clone(), id).map(|u| u.map(update).map_err(code));
        Ok(Response::new(Box::pin(updates)))
    }

    async fn health_check(
        &self,
        _request: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, GrpcStatus> {
        let mut components = std::collections::HashMap::new();
        let store = match self.room.active_events().await {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("down: {e}"),
        };
        let ok = store == "ok";
        components.insert("store".to_string(), store);
        let events = if self.room.kafka_enabled() { "ok (outbox)" } else { "disabled" };
        components.insert("events".to_string(), events.to_string());
        Ok(Response::new(pb::HealthCheckResponse {
            status: if ok { "SERVING" } else { "NOT_SERVING" }.into(),
            service: "waitroom".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kafka_enabled: self.room.kafka_enabled(),
            components,
        }))
    }
}

/// Serves the API (and reflection) on `listener` until `stop` turns true.
pub async fn serve(
    room: Room,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::DESCRIPTOR)
        .build_v1()
        .map_err(|e| {
            // The descriptors are generated with the code: a failure here is a build defect, reported as such.
            tracing::error!("waitroom: gRPC reflection cannot start: {e}");
            e
        });
    let mut server = tonic::transport::Server::builder();
    let mut router = server.add_service(WaitroomServiceServer::new(Service { room }));
    if let Ok(reflection) = reflection {
        router = router.add_service(reflection);
    }
    // Answers go out as they are ready, not held back to coalesce with the next (Nagle): a stream's updates and
    // unary answers are small frames. (tonic sets this itself only on listeners it binds.)
    use futures_util::StreamExt;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|c| {
            let _ = c.set_nodelay(true);
        })
    });
    router
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

/// Binds the gRPC address, with an error that says which setting to change.
pub async fn bind(addr: &str) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr} for the waitroom's gRPC API: {e} (set waitroom.grpc_listen to another address, or none)")
    })?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, local))
}
