//! The car repair shop of seed 001, built as its origin (primait/kafka-playground) meant to and never did: a
//! ticketing system, a secretary and a cash desk passing Avro events, registered in the schema registry, exactly once.
//!
//! - `schemas/*.avsc` and `build.rs`: the four events, and their Rust types generated at build time ([`events`]).
//! - [`avro`]: the logical types those types use (an exact decimal, a microsecond timestamp).
//! - [`services`]: the three services' consume-transform-produce loops and the cash desk's till.
//! - [`calendar`]: the secretary's bays and working hours.
//! - [`clock`]: the shop's time, real or fast.
//! - [`crypto`]: AES-GCM encryption of the requester's personal data.
//! - [`trace`]: W3C trace context across the hops, each consumer span following from its producer's.
//! - [`accounts`]: each service's user and ACLs, provisioned at start.
//! - [`store`]: the tables and the ticket opening outbox; [`api`]: the HTTP API; [`system`]: the weir system;
//!   `cli`: `weir repair example|simulate|trace`.

pub mod accounts;
pub mod api;
pub mod avro;
pub mod calendar;
mod cli;
pub mod clock;
pub mod crypto;
pub mod events;
pub mod services;
pub mod store;
pub mod system;
pub mod trace;

pub use system::{RepairSettings, RepairSystem};
