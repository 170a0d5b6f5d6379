//! The records of the `_schemas` topic, where the registry keeps everything it knows (as Confluent's registry does):
//! one record per subject version, per compatibility or mode setting, each keyed so that a compacted topic keeps the
//! latest of each and a null value (a tombstone) removes it. JSON keys and values, in Confluent's field names.
//!
//! One addition to Confluent's key: a schema record's key also holds its id. Several instances may write a version
//! at the same moment; the first in the log wins and the others' records are ignored by every reader. With the id in
//! the key, a losing record never replaces the winner when the topic is compacted.

use serde::{Deserialize, Serialize};

use crate::formats::SchemaType;
use crate::registry::{Compatibility, Mode};

/// A schema's reference to another subject's version, by the name the schema uses for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// One record of `_schemas`, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A subject's version: its schema (`None`: removed for good).
    Schema { subject: String, version: i32, id: i32, value: Option<SchemaValue> },
    /// A compatibility level, global (`subject: None`) or a subject's (`level: None`: removed).
    Config { subject: Option<String>, level: Option<Compatibility> },
    /// A mode, global or a subject's (`mode: None`: removed).
    Mode { subject: Option<String>, mode: Option<Mode> },
    /// Written at start and read back: the reader has caught up with everything before it.
    Noop,
}

/// A schema record's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaValue {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    #[serde(default, skip_serializing_if = "is_avro")]
    pub schema_type: SchemaType,
    pub schema: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    #[serde(default)]
    pub deleted: bool,
}

fn is_avro(t: &SchemaType) -> bool {
    *t == SchemaType::Avro
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
enum Key {
    Schema {
        subject: String,
        version: i32,
        #[serde(default)]
        id: i32,
        #[serde(default)]
        magic: i32,
    },
    Config {
        subject: Option<String>,
        #[serde(default)]
        magic: i32,
    },
    Mode {
        subject: Option<String>,
        #[serde(default)]
        magic: i32,
    },
    Noop {
        #[serde(default)]
        magic: i32,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigValue {
    compatibility_level: Compatibility,
}

#[derive(Serialize, Deserialize)]
struct ModeValue {
    mode: Mode,
}

impl Record {
    /// The record's key and value as stored.
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            Record::Schema { subject, version, id, value } => (
                json(&Key::Schema { subject: subject.clone(), version: *version, id: *id, magic: 1 }),
                value.as_ref().map(json),
            ),
            Record::Config { subject, level } => (
                json(&Key::Config { subject: subject.clone(), magic: 0 }),
                level.map(|l| json(&ConfigValue { compatibility_level: l })),
            ),
            Record::Mode { subject, mode } => {
                (json(&Key::Mode { subject: subject.clone(), magic: 0 }), mode.map(|m| json(&ModeValue { mode: m })))
            }
            Record::Noop => (json(&Key::Noop { magic: 0 }), None),
        }
    }

    /// A stored record read back; an error says what did not parse (the reader logs it and goes on).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Record, String> {
        let key: Key = serde_json::from_slice(key).map_err(|e| format!("key: {e}"))?;
        let value_of = |what: &str| -> Result<Option<serde_json::Value>, String> {
            match value {
                None => Ok(None),
                Some(v) => serde_json::from_slice(v).map(Some).map_err(|e| format!("{what} value: {e}")),
            }
        };
        Ok(match key {
            Key::Schema { subject, version, id, .. } => {
                let value: Option<SchemaValue> = match value_of("schema")? {
                    None => None,
                    Some(v) => Some(serde_json::from_value(v).map_err(|e| format!("schema value: {e}"))?),
                };
                // Confluent's own records have no id in the key: the value's holds.
                let id = value.as_ref().map(|v| v.id).unwrap_or(id);
                Record::Schema { subject, version, id, value }
            }
            Key::Config { subject, .. } => {
                let level = match value_of("config")? {
                    None => None,
                    Some(v) => Some(
                        serde_json::from_value::<ConfigValue>(v)
                            .map_err(|e| format!("config value: {e}"))?
                            .compatibility_level,
                    ),
                };
                Record::Config { subject, level }
            }
            Key::Mode { subject, .. } => {
                let mode = match value_of("mode")? {
                    None => None,
                    Some(v) => {
                        Some(serde_json::from_value::<ModeValue>(v).map_err(|e| format!("mode value: {e}"))?.mode)
                    }
                };
                Record::Mode { subject, mode }
            }
            Key::Noop { .. } => Record::Noop,
        })
    }
}

/// These types hold only strings and numbers, so serializing them cannot fail.
fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Schema {
                subject: "orders-value".into(),
                version: 3,
                id: 7,
                value: Some(SchemaValue {
                    subject: "orders-value".into(),
                    version: 3,
                    id: 7,
                    schema_type: SchemaType::Protobuf,
                    schema: "syntax = \"proto3\";".into(),
                    references: vec![Reference { name: "a.proto".into(), subject: "a".into(), version: 1 }],
                    deleted: true,
                }),
            },
            Record::Schema { subject: "s".into(), version: 1, id: 2, value: None },
            Record::Config { subject: None, level: Some(Compatibility::FullTransitive) },
            Record::Config { subject: Some("s".into()), level: None },
            Record::Mode { subject: Some("s".into()), mode: Some(Mode::ReadOnly) },
            Record::Noop,
        ];
        for r in records {
            let (k, v) = r.encode();
            assert_eq!(Record::decode(&k, v.as_deref()).unwrap(), r);
        }
    }

    #[test]
    fn confluent_records_decode_and_garbage_is_an_error() {
        let key = br#"{"keytype":"SCHEMA","subject":"t-value","version":1,"magic":1}"#;
        let value = br#"{"subject":"t-value","version":1,"id":1,"schema":"\"string\"","deleted":false}"#;
        match Record::decode(key, Some(value)).unwrap() {
            Record::Schema { id: 1, value: Some(v), .. } => assert_eq!(v.schema_type, SchemaType::Avro),
            other => panic!("{other:?}"),
        }
        let (k, _) = Record::Config { subject: None, level: Some(Compatibility::Backward) }.encode();
        assert_eq!(k, br#"{"keytype":"CONFIG","subject":null,"magic":0}"#);
        assert!(Record::decode(b"not json", None).is_err());
        assert!(Record::decode(br#"{"keytype":"SCHEMA","subject":"s","version":1}"#, Some(b"[1]")).is_err());
        assert!(Record::decode(br#"{"keytype":"WHAT"}"#, None).is_err());
    }
}
