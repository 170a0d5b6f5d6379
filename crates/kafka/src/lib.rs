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
//! - `admin.rs`: the admin APIs (partitions, live topic settings, DeleteRecords, DeleteGroups, OffsetDelete, log
//!   dirs, producers, cluster, leader elections and epochs, KIP-714 telemetry), answered for one node.
//! - `transactions.rs`: the transaction APIs, mapped onto the broker's transaction coordinator.
//! - `sasl.rs`: SASL authentication: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 against `weir_security`'s users.
//! - `authorize.rs`: every request checked against the ACLs, refused parts answered with Kafka's error codes.
//! - `acls.rs`: CreateAcls, DescribeAcls, DeleteAcls, and Describe/AlterUserScramCredentials.
//! - `server.rs`: the TCP listener (the only module with sockets), with TLS when configured; requests on a
//!   connection are answered in order, and stopping drains the connections.
//!
//! Served so far: ApiVersions, Metadata, Produce (acks 0/1/all), Fetch (long poll, batches served as stored),
//! ListOffsets (earliest, latest, by timestamp), CreateTopics, DeleteTopics, and the consumer-group APIs
//! (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups), InitProducerId (idempotent and transactional producers), the transaction APIs
//! (AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, DescribeTransactions, ListTransactions) with
//! read_committed Fetch and ListOffsets, DescribeConfigs, the admin APIs of `admin.rs`, SASL (PLAIN and SCRAM) and
//! the ACL and SCRAM credential APIs.
//!
//! # Example
//!
//! The listener's decode path on bytes alone: a frame cut from a stream as it arrives, then decoded against the
//! API table. [`KafkaListener`] shows the same request answered over a socket.
//!
//! ```
//! use bytes::BytesMut;
//! use kafka_protocol::messages::{ApiKey, RequestKind};
//! use weir_kafka::codec::{self, CodecError};
//! use weir_kafka::apis;
//!
//! // ApiVersions v0, what a client sends first: a 4-byte size, then API key 18, version 0, correlation id 7,
//! // client id "kcat" (a 2-byte length and the text), and an empty body.
//! let frame = [&[0, 0, 0, 14][..], &[0, 18, 0, 0], &[0, 0, 0, 7], &[0, 4], b"kcat"].concat();
//!
//! // Nothing comes out until the whole frame has arrived.
//! let mut received = BytesMut::from(&frame[..6]);
//! assert!(codec::take_frame(&mut received, 1 << 20)?.is_none());
//! received.extend_from_slice(&frame[6..]);
//! let one = codec::take_frame(&mut received, 1 << 20)?.expect("a whole frame");
//! assert!(received.is_empty());
//!
//! let request = codec::decode_request(one, apis::supported)?;
//! assert_eq!((request.api, request.version, request.header.correlation_id), (ApiKey::ApiVersions, 0, 7));
//! assert_eq!(request.header.client_id.as_deref(), Some("kcat"));
//! assert!(matches!(request.body, RequestKind::ApiVersions(_)));
//!
//! // An API missing from the table (DescribeQuorum, key 55: weir has no KRaft quorum) is refused before its body
//! // is read, and a size prefix over the limit before anything is buffered for it.
//! let quorum = [&[0, 55, 0, 0][..], &[0, 0, 0, 8], &[0xff, 0xff]].concat();
//! assert!(matches!(codec::decode_request(quorum.into(), apis::supported), Err(CodecError::UnknownApi(55))));
//! let mut huge = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
//! assert!(matches!(codec::take_frame(&mut huge, 1 << 20), Err(CodecError::TooLarge { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod acls;
mod admin;
pub mod apis;
mod authorize;
pub mod codec;
mod config;
pub mod error_code;
mod groups;
pub mod handlers;
mod sasl;
mod server;
mod transactions;

pub use config::ListenerConfig;
pub use server::{BackgroundBroker, KafkaListener};
