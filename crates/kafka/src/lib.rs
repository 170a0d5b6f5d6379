//! weir's Kafka wire-protocol listener, so Kafka clients and tools (kcat, librdkafka, kafka-python, kafkajs) work
//! against the embedded broker unchanged.
//!
//! - `apis.rs`: the one table of the APIs and versions weir serves, which ApiVersions, the decoder's version check,
//!   the SASL gate and (checked when compiling) the dispatch are all derived from.
//! - `codec.rs`: frames, request decoding and response encoding with the `kafka-protocol` crate — no I/O, fuzzable
//!   (`fuzz/` at the workspace root).
//! - `config.rs`: the listener's settings; `error_code.rs`: the Kafka error codes weir sends, by name.
//! - `handlers.rs`: one function per API, answering from the [`weir_broker::Broker`].
//! - `groups.rs`: the consumer-group APIs, mapped onto the broker's group coordinator.
//! - `sasl.rs`: SASL/PLAIN.
//! - `server.rs`: the TCP listener (the only module with sockets); requests on a connection are answered in order,
//!   and stopping drains the connections.
//!
//! Served so far: ApiVersions, Metadata, Produce (acks 0/1/all), Fetch (long poll, batches served as stored),
//! ListOffsets (earliest, latest, by timestamp), CreateTopics, DeleteTopics, and the consumer-group APIs
//! (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups), InitProducerId (idempotent producers), DescribeConfigs, and SASL/PLAIN.

pub mod apis;
pub mod codec;
mod config;
pub mod error_code;
mod groups;
pub mod handlers;
mod sasl;
mod server;

pub use config::ListenerConfig;
pub use server::{BackgroundBroker, KafkaListener};
