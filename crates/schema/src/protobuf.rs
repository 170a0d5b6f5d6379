//! (being written) The protobuf format.

use crate::formats::{Dependency, InvalidSchema, PayloadError};

/// A parsed protobuf schema.
#[derive(Debug, Clone)]
pub struct ProtobufSchema {
    text: String,
}

impl ProtobufSchema {
    pub fn parse(text: &str, _dependencies: &[Dependency]) -> Result<Self, InvalidSchema> {
        Ok(ProtobufSchema { text: text.to_string() })
    }
    pub fn normalized(&self) -> String {
        self.text.clone()
    }
    pub fn record_name(&self) -> Option<String> {
        None
    }
    pub fn incompatibilities(_reader: &Self, _writer: &Self) -> Vec<String> {
        vec!["not written yet".into()]
    }
    pub fn encode_json(&self, _value: &serde_json::Value) -> Result<Vec<u8>, PayloadError> {
        Err(PayloadError::new("not written yet"))
    }
    pub fn decode_json(&self, _payload: &[u8]) -> Result<serde_json::Value, PayloadError> {
        Err(PayloadError::new("not written yet"))
    }
}
