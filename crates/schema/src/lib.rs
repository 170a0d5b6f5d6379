//! weir's schema registry: schemas in Avro, JSON Schema and Protobuf, parsed, normalized and checked for
//! compatibility by each format's own rules ([`formats`]), and Confluent's wire format for records that carry a
//! schema id ([`wire`]).

pub mod avro;
pub mod formats;
pub mod json;
pub mod protobuf;
pub mod wire;

pub use formats::{Dependency, InvalidSchema, Parsed, PayloadError, SchemaType};
