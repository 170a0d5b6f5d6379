//! Records as producers hand them to the log, and as consumers get them back.

use bytes::Bytes;

/// A record header: Kafka allows a null value, so `value` is optional.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

impl Header {
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Header { key: key.into(), value: Some(value.into()) }
    }
}

/// A record to append. `timestamp: None` means "the broker's clock at append".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record with just a value.
    pub fn from_value(value: impl Into<Bytes>) -> Self {
        Record { value: Some(value.into()), ..Default::default() }
    }
}

/// A record read back from the log, with the offset and timestamp it was stored under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}
