//! weir's processing runtime: what the systems are built from, independent of where they run.
//!
//! - [`Bus`] (`bus.rs`): publish and subscribe, shaped like a Kafka client; [`EmbeddedBus`] (`embedded.rs`) over the
//!   in-process broker and [`KafkaBus`] (`kafka.rs`) over a Kafka cluster. A system takes a `Bus` and never names a
//!   backend. Both run transactions (`Subscription::commit_transaction`: messages and the group's offsets together).
//! - [`events`]: typed events, serialized and deserialized through the schema registry in Confluent's wire format,
//!   the schemas declared by each system and registered when it starts.
//! - [`exposition`]: the process's metrics as Prometheus text, for a system that serves them as JSON.
//! - [`handler`]: the [`Runner`] driving handlers with per-partition order, retries with backoff, dead letters, and
//!   at-least-once, exactly-once-into-SQL or exactly-once-on-the-bus (transactional) delivery.
//! - [`sql`]: the SQL store (SQLite or PostgreSQL through one driver) and the runtime's tables.
//! - [`outbox`]: the transactional outbox and its relay.
//! - [`kv`]: key-value stores with TTLs (SQL-backed, Redis, in-memory).
//! - [`api_client`]: a system's command calling a weir's HTTP API, over HTTP or in-process.
//! - [`stop`]: stopping long-running loops on a caller's future without holding its resources in a `select!`.
//! - [`time`]: RFC 3339 instants to and from milliseconds, for event times on hot paths.
//! - [`access`]: per-service credentials and ACLs for the systems' services: [`Access`] provisions a
//!   [`ServiceAccount`] and logs it in to a bus held to its grants; [`OpenAccess`] (the default) checks nothing,
//!   `SecuredAccess` (feature `security`) uses weir-security's users and ACLs, always enforced.
//! - [`telemetry`]: spans with the ids a system's records carry, exported over OTLP/HTTP when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (feature `otlp`).
//! - [`system`]: the contract every system implements (settings, topics, tables, routes, tasks, commands) and the
//!   one path that starts and stops them.
//! - `testing` (feature `testing`): a scratch PostgreSQL database per test, for this crate's tests and the systems'.
//!
//! Features: `kafka` ([`KafkaBus`], over librdkafka) and `redis` (`kv::RedisKv`), both on by default; `security`
//! (`SecuredAccess`, over weir-security) and `otlp` (span export, telemetry.rs), off by default. A system
//! depends on this crate without them (`default-features = false`), so building it alone never compiles
//! librdkafka; the binary turns them on.

pub mod access;
pub mod api_client;
pub mod api_error;
mod bus;
mod embedded;
pub mod events;
pub mod exposition;
pub mod handler;
#[cfg(feature = "kafka")]
mod kafka;
pub mod kv;
pub mod outbox;
pub mod sql;
pub mod stop;
pub mod system;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;

pub use access::{Access, AccessError, Grant, OpenAccess, ServiceAccount};
#[cfg(feature = "security")]
pub use access::{AuthorizedBus, SecuredAccess};
pub use bus::{Bus, BusError, Delivery, Message, OutgoingMessage, StartFrom, SubscribeOptions, Subscription};
pub use embedded::EmbeddedBus;
pub use handler::{Handler, HandlerError, RunStats, Runner, RunnerConfig, SqlHandler, TransformHandler};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaBus, KafkaEndpoint};
pub use sql::{SqlStore, SqlTx, StoreError};
pub use system::{CommandHost, Host, Started, System, SystemContext, SystemError, SystemSettings, TopicSpec};
