//! weir's Kafka wire-protocol listener, so Kafka clients and tools (kcat, librdkafka, kafka-python, kafkajs) work
//! against the embedded broker unchanged.
//!
//! - `codec.rs`: frames, request decoding and response encoding with the `kafka-protocol` crate — no I/O, fuzzable.
//! - `handlers.rs`: one function per API, answering from the [`weir_broker::Broker`]; the versions weir serves.
//! - `server.rs`: the TCP listener; requests on a connection are answered in order.
//!
//! Served so far: ApiVersions, Metadata, Produce (acks 0/1/all), Fetch (long poll, batches served as stored),
//! ListOffsets (earliest, latest, by timestamp), CreateTopics, DeleteTopics. Consumer-group APIs, idempotent
//! producers and SASL come next.

pub mod codec;
pub mod handlers;
mod server;

pub use server::{KafkaListener, ListenerConfig};
