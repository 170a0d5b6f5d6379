//! Waitroom, seed 004: users join a queue per ticket-sale event with a priority, are admitted to checkout at a
//! controlled rate with a signed token, and checkout outcomes come back as events that settle their sessions. Its
//! origin (vogiaan1904/ticketbottle-waitroom, Go) ran on Kafka and Redis; `../shared/origins.md` lists where its
//! promises did not hold (priority ignored, duplicate joins, failed admissions dropped, no `checkout.expired`).
//!
//! - [`model`]: sessions, statuses, an event's settings, the topics and the events' payloads;
//! - [`token`]: HS256 checkout tokens and their blacklist fingerprint;
//! - [`room`]: the rules over the platform's key-value store (Redis with `--redis`, or embedded) — joining,
//!   status, leaving, admission rounds under a lease, settling and expiring — with events through the outbox;
//! - [`api`]: the HTTP API (the seed's paths) and its position stream (Server-Sent Events);
//! - [`grpc`]: the origin's gRPC API, `waitroom.v1.WaitroomService`, with reflection;
//! - [`bench`](mod@bench): `weir waitroom bench`, joins, lookups and stream fan-out over gRPC;
//! - [`simulate`]: `weir waitroom simulate`, users through the real API;
//! - [`system`]: the weir system (settings, topics, the admitter and the checkout consumer).

pub mod api;
pub mod bench;
mod cli;
pub mod grpc;
pub mod model;
pub mod room;
pub mod simulate;
pub mod system;
pub mod token;

pub use room::Room;
pub use system::{WaitroomSettings, WaitroomSystem};
