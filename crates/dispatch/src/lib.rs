//! Dispatch, seed 003: detection events from CCTV rules, written to a database table, relayed to `events.outbound`
//! and assigned to active reviewers (5-minute sessions, at most 50 open assignments each, least-loaded first), the
//! reviewers' results flowing back through `events.inbound`. Its origin (leandrocandido/assignment-system) ran this
//! on RabbitMQ, PostgreSQL and Redis; `../shared/origins.md` lists where its rules did not hold.
//!
//! Built so far:
//! - [`events`]: a detection event as the origin's tables and queue messages carry it, and the origin's generator
//!   (its value sets: regions, rule types, locations, devices, cameras, frame references).
//! - [`store`]: the tables (`detection_events`, `assignments`, at most one open assignment per event enforced by a
//!   unique index), writing generated events in one transaction as the origin's generator does, and
//!   [`store::insert_and_relay`]: the same with each event's `events.outbound` message in the runtime's outbox, so
//!   the relay publishes it once after the commit.
//! - [`assign`]: the assignment rules in the database (least-loaded active reviewer, ties to the longest idle, the
//!   cap, waiting when nobody has room), sessions as an expiry per reviewer, taking back an ended session's
//!   assignments, and settling one (completed, rejected, approved; only from open).
//!
//! - [`system`]: the weir system (settings, topics, the assigner and expirer tasks), [`api`], its HTTP API, and
//!   `cli`: `weir dispatch generate`.
//!
//! Still to come (issue 20): the relay's cron-style sweep, the assignment service on the bus, sessions in
//! Redis or the KV store (the seed's keys), reassignment after 15 minutes, results back through `events.inbound`,
//! and its benchmark.

pub mod api;
pub mod assign;
mod cli;
pub mod events;
pub mod sessions;
pub mod simulate;
pub mod store;
pub mod system;

pub use system::{DispatchSettings, DispatchSystem};
