//! weir's Kafka wire-protocol listener, so Kafka clients and tools (kcat, librdkafka, kafka-python, kafkajs) work
//! against the embedded broker unchanged.
//!
//! - `codec.rs`: frames, request decoding and response encoding with the `kafka-protocol` crate — no I/O, fuzzable.
//! - `handlers.rs`: one function per API, answering from the [`weir_broker::Broker`]; the versions weir serves.
//! - `groups.rs`: the consumer-group APIs, mapped onto the broker's group coordinator.
//! - `server.rs`: the TCP listener; requests on a connection are answered in order.
//!
//! Served so far: ApiVersions, Metadata, Produce (acks 0/1/all), Fetch (long poll, batches served as stored),
//! ListOffsets (earliest, latest, by timestamp), CreateTopics, DeleteTopics, and the consumer-group APIs
//! (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups), InitProducerId (idempotent producers), DescribeConfigs, and SASL/PLAIN (`sasl.rs`).

pub mod codec;
mod groups;
pub mod handlers;
mod sasl;
mod server;

pub use server::{BackgroundBroker, KafkaListener, ListenerConfig};
