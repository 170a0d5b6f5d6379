//! Schema validation on the broker (Confluent Server's `confluent.value.schema.validation`, Redpanda's
//! `redpanda.value.schema.id.validation`): a topic that asks for it refuses a record whose key or value is not in
//! Confluent's wire format or names a schema id its subject does not hold, and nothing of the batch that carried it
//! is stored.
//!
//! The broker does not know the schema registry (it sits layers above): it parses the topic's settings into a
//! [`TopicValidation`] and asks a [`RecordValidator`] the binary installs with [`Broker::set_record_validator`]. A
//! topic without these settings has no `TopicValidation` at all, so its appends cost nothing more than before.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use weir_log::{batch, LogError};

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::topics::Topic;

/// Confluent Server's switch for validating record keys.
pub const KEY_VALIDATION: &str = "confluent.key.schema.validation";
/// Confluent Server's switch for validating record values.
pub const VALUE_VALIDATION: &str = "confluent.value.schema.validation";
/// Redpanda's name for [`KEY_VALIDATION`].
pub const KEY_VALIDATION_REDPANDA: &str = "redpanda.key.schema.id.validation";
/// Redpanda's name for [`VALUE_VALIDATION`].
pub const VALUE_VALIDATION_REDPANDA: &str = "redpanda.value.schema.id.validation";
/// How the key's subject is named (Confluent's serializer class names, or their short names).
pub const KEY_STRATEGY: &str = "confluent.key.subject.name.strategy";
/// How the value's subject is named.
pub const VALUE_STRATEGY: &str = "confluent.value.subject.name.strategy";
/// Redpanda's name for [`KEY_STRATEGY`].
pub const KEY_STRATEGY_REDPANDA: &str = "redpanda.key.subject.name.strategy";
/// Redpanda's name for [`VALUE_STRATEGY`].
pub const VALUE_STRATEGY_REDPANDA: &str = "redpanda.value.subject.name.strategy";
/// weir's: also decode each payload with the schema its id names, refusing one that does not fit.
pub const PAYLOAD_VALIDATION: &str = "weir.schema.validation.payload";

/// Every topic setting this module reads: broker settings, not the log's.
pub const SETTING_KEYS: &[&str] = &[
    KEY_VALIDATION,
    VALUE_VALIDATION,
    KEY_VALIDATION_REDPANDA,
    VALUE_VALIDATION_REDPANDA,
    KEY_STRATEGY,
    VALUE_STRATEGY,
    KEY_STRATEGY_REDPANDA,
    VALUE_STRATEGY_REDPANDA,
    PAYLOAD_VALIDATION,
];

/// Whether `key` is one of this module's settings.
pub fn is_setting(key: &str) -> bool {
    SETTING_KEYS.contains(&key)
}

/// A record's key or its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Key,
    Value,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Key => "key",
            Side::Value => "value",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the subject a record's schema id must be registered under is named (Confluent's `SubjectNameStrategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SubjectNameStrategy {
    /// `<topic>-key` or `<topic>-value`.
    #[default]
    TopicName,
    /// The full name of the record the schema defines, whatever the topic: one topic may carry several types.
    RecordName,
    /// `<topic>-<record name>`.
    TopicRecordName,
}

const CLASS_PREFIX: &str = "io.confluent.kafka.serializers.subject.";

impl SubjectNameStrategy {
    /// Confluent's class name, as Confluent Server describes the setting.
    pub fn class_name(self) -> &'static str {
        match self {
            SubjectNameStrategy::TopicName => "io.confluent.kafka.serializers.subject.TopicNameStrategy",
            SubjectNameStrategy::RecordName => "io.confluent.kafka.serializers.subject.RecordNameStrategy",
            SubjectNameStrategy::TopicRecordName => "io.confluent.kafka.serializers.subject.TopicRecordNameStrategy",
        }
    }
}

impl std::str::FromStr for SubjectNameStrategy {
    type Err = String;
    /// The class name or the short one (Redpanda documents the short names).
    fn from_str(s: &str) -> Result<Self, String> {
        let trimmed = s.trim();
        match trimmed.strip_prefix(CLASS_PREFIX).unwrap_or(trimmed) {
            "TopicNameStrategy" => Ok(SubjectNameStrategy::TopicName),
            "RecordNameStrategy" => Ok(SubjectNameStrategy::RecordName),
            "TopicRecordNameStrategy" => Ok(SubjectNameStrategy::TopicRecordName),
            _ => Err(format!(
                "{s:?} is not a subject name strategy (TopicNameStrategy, RecordNameStrategy or \
                 TopicRecordNameStrategy, with or without {CLASS_PREFIX})"
            )),
        }
    }
}

/// A topic's schema validation settings, parsed once when the topic is created, opened or altered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopicValidation {
    pub key: bool,
    pub value: bool,
    pub key_strategy: SubjectNameStrategy,
    pub value_strategy: SubjectNameStrategy,
    /// Decode the payload with its schema too, not only check the id.
    pub payload: bool,
}

impl TopicValidation {
    /// Reads the validation settings among a topic's settings (others are ignored). A bad value is an
    /// `InvalidConfig` naming the key; so is a Confluent switch and its Redpanda alias set to disagree.
    pub fn from_settings(settings: &BTreeMap<String, String>) -> Result<TopicValidation, BrokerError> {
        Ok(TopicValidation {
            key: switch(settings, KEY_VALIDATION, KEY_VALIDATION_REDPANDA)?,
            value: switch(settings, VALUE_VALIDATION, VALUE_VALIDATION_REDPANDA)?,
            key_strategy: strategy(settings, KEY_STRATEGY, KEY_STRATEGY_REDPANDA)?,
            value_strategy: strategy(settings, VALUE_STRATEGY, VALUE_STRATEGY_REDPANDA)?,
            payload: match settings.get(PAYLOAD_VALIDATION) {
                Some(v) => boolean(PAYLOAD_VALIDATION, v)?,
                None => false,
            },
        })
    }

    /// Whether any side is validated: a topic keeps its settings only then.
    pub fn is_on(&self) -> bool {
        self.key || self.value
    }

    /// The strategy for `side`, when that side is validated.
    pub fn side(&self, side: Side) -> Option<SubjectNameStrategy> {
        match side {
            Side::Key => self.key.then_some(self.key_strategy),
            Side::Value => self.value.then_some(self.value_strategy),
        }
    }

    /// The settings as DescribeConfigs lists them: Confluent's keys with their effective values, and the payload
    /// switch. Redpanda's aliases are the caller's to add when the topic sets them.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        vec![
            (KEY_VALIDATION.to_string(), self.key.to_string()),
            (VALUE_VALIDATION.to_string(), self.value.to_string()),
            (KEY_STRATEGY.to_string(), self.key_strategy.class_name().to_string()),
            (VALUE_STRATEGY.to_string(), self.value_strategy.class_name().to_string()),
            (PAYLOAD_VALIDATION.to_string(), self.payload.to_string()),
        ]
    }
}

/// Kafka's boolean settings: `true` or `false`, in any case.
fn boolean(key: &str, value: &str) -> Result<bool, BrokerError> {
    match value.trim() {
        v if v.eq_ignore_ascii_case("true") => Ok(true),
        v if v.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(BrokerError::InvalidConfig(format!("{key} must be true or false, got {value:?}"))),
    }
}

/// A switch set under Confluent's name, Redpanda's, or both (then they must agree).
fn switch(settings: &BTreeMap<String, String>, confluent: &str, redpanda: &str) -> Result<bool, BrokerError> {
    let a = settings.get(confluent).map(|v| boolean(confluent, v)).transpose()?;
    let b = settings.get(redpanda).map(|v| boolean(redpanda, v)).transpose()?;
    match (a, b) {
        (Some(a), Some(b)) if a != b => {
            Err(BrokerError::InvalidConfig(format!("{confluent}={a} and {redpanda}={b} disagree: set one of them")))
        }
        (a, b) => Ok(a.or(b).unwrap_or(false)),
    }
}

fn strategy(
    settings: &BTreeMap<String, String>,
    confluent: &str,
    redpanda: &str,
) -> Result<SubjectNameStrategy, BrokerError> {
    let parse = |key: &str, v: &String| {
        v.parse::<SubjectNameStrategy>().map_err(|e| BrokerError::InvalidConfig(format!("{key}: {e}")))
    };
    let a = settings.get(confluent).map(|v| parse(confluent, v)).transpose()?;
    let b = settings.get(redpanda).map(|v| parse(redpanda, v)).transpose()?;
    match (a, b) {
        (Some(a), Some(b)) if a != b => Err(BrokerError::InvalidConfig(format!(
            "{confluent}={} and {redpanda}={} disagree: set one of them",
            a.class_name(),
            b.class_name()
        ))),
        (a, b) => Ok(a.or(b).unwrap_or_default()),
    }
}

/// A topic's validation as the broker holds it: `None` on the [`Topic`] when the topic validates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Validation {
    On(TopicValidation),
    /// Settings stored on disk that no longer parse (edited by hand): the topic refuses records until they are
    /// fixed, rather than storing them unchecked.
    Broken(String),
}

impl Validation {
    /// What a topic with these settings holds: `None` when they validate nothing. A parse error refuses the
    /// records (see [`Validation::Broken`]) only when some validation key is present at all.
    pub(crate) fn of(settings: &BTreeMap<String, String>) -> Option<Validation> {
        match TopicValidation::from_settings(settings) {
            Ok(v) if v.is_on() => Some(Validation::On(v)),
            Ok(_) => None,
            Err(e) => Some(Validation::Broken(e.to_string())),
        }
    }
}

/// Asks whether a record may be stored on a topic that validates its keys or values. Installed by whoever knows
/// the schema registry (the binary), with [`Broker::set_record_validator`].
pub trait RecordValidator: Send + Sync + std::fmt::Debug {
    /// `Ok` if the record may be stored under `settings`; otherwise why not, as one sentence naming the side
    /// ("value schema id 7 is not registered under subject orders-value"). A null key or value is the caller's
    /// to pass as `None`. Called for every record of a validated topic, on the append path: keep it fast.
    fn check(
        &self,
        topic: &str,
        settings: &TopicValidation,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), String>;
}

/// One refused record: its position among those sent together (in a Kafka produce, across the partition's batches:
/// Kafka's `batch_index`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    pub index: usize,
    pub reason: String,
}

/// At most this many refused records are listed (and, to Kafka clients, sent as `record_errors`); the rest are
/// counted.
pub const MAX_RECORD_ERRORS: usize = 100;

/// The message of [`BrokerError::RecordsRefused`]: the first three reasons, as Kafka's broker does, and the count.
pub(crate) fn refusal_message(errors: &[RecordError], total: usize) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().take(3).enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&format!("record {}: {}", e.index, e.reason));
    }
    if total > errors.len().min(3) {
        out.push_str(&format!(" ({total} records refused)"));
    }
    out
}

/// Collects refusals while records sent together are checked.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    errors: Vec<RecordError>,
    total: usize,
}

impl Refusals {
    pub(crate) fn push(&mut self, index: usize, reason: String) {
        self.total += 1;
        if self.errors.len() < MAX_RECORD_ERRORS {
            self.errors.push(RecordError { index, reason });
        }
    }

    pub(crate) fn into_result(self) -> Result<(), BrokerError> {
        if self.total == 0 {
            Ok(())
        } else {
            Err(BrokerError::RecordsRefused { errors: self.errors, total: self.total })
        }
    }
}

/// What checks a validated topic's records: the validator and the topic's settings.
#[derive(Clone, Debug)]
pub(crate) struct Checker {
    validator: Arc<dyn RecordValidator>,
    settings: TopicValidation,
}

impl Checker {
    /// Checks one record; `Err` is the reason.
    pub(crate) fn check(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
        self.validator.check(topic, &self.settings, key, value)
    }

    /// Checks every record of a Kafka client's RecordBatch bytes (decompressing them as needed), all of them so the
    /// client hears of every bad record at once, and hands the bytes back to be appended. A batch that cannot be decoded is refused here as the log would refuse it, never
    /// stored unchecked.
    pub(crate) fn check_batches(&self, topic: &str, bytes: Vec<u8>) -> Result<Vec<u8>, BrokerError> {
        let buf = Bytes::from(bytes);
        let mut refusals = Refusals::default();
        let mut index = 0usize;
        for b in batch::Batches::new(&buf) {
            let (header, one) = b.map_err(|e| BrokerError::Log(LogError::InvalidBatch(e)))?;
            if header.is_control() {
                // Transaction markers are the coordinator's, and the log refuses them from clients anyway.
                continue;
            }
            batch::for_each_record(&one, i64::MIN, |r| {
                if let Err(reason) = self.check(topic, r.key.as_deref(), r.value.as_deref()) {
                    refusals.push(index, reason);
                }
                index += 1;
                true
            })
            .map_err(|e| {
                // The same split the log makes: a damaged batch, or records that are not what it says.
                if batch::validate(&one).is_err() {
                    BrokerError::Log(LogError::InvalidBatch(e))
                } else {
                    BrokerError::Log(LogError::InvalidRecord(e))
                }
            })?;
        }
        refusals.into_result()?;
        // The record slices are gone: this gets the buffer back without a copy.
        Ok(Vec::from(buf))
    }
}

impl Broker {
    /// Installs what checks the records of topics with schema validation on (the schema registry's validator, set
    /// by the binary at start). Until one is installed such topics refuse every record.
    pub fn set_record_validator(&self, validator: Arc<dyn RecordValidator>) {
        *self.validator.write() = Some(validator);
    }

    /// How `topic`'s records are checked: `None` when it validates nothing (the common case: no lock taken), an
    /// error when it validates but cannot (no validator installed, settings that do not parse).
    pub(crate) fn checker(&self, topic: &Topic) -> Result<Option<Checker>, BrokerError> {
        let settings = match &topic.validation {
            None => return Ok(None),
            Some(Validation::On(settings)) => *settings,
            Some(Validation::Broken(reason)) => {
                return Err(BrokerError::ValidationUnavailable {
                    topic: topic.name().to_string(),
                    reason: format!("its settings are invalid ({reason}); fix them with an alter"),
                })
            }
        };
        match self.validator.read().clone() {
            Some(validator) => Ok(Some(Checker { validator, settings })),
            None => Err(BrokerError::ValidationUnavailable {
                topic: topic.name().to_string(),
                reason: "this broker has no schema registry".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn settings_parse_with_confluent_and_redpanda_names() {
        let none = TopicValidation::from_settings(&settings(&[("retention.ms", "1000")])).unwrap();
        assert!(!none.is_on());
        assert_eq!(none.side(Side::Value), None);
        assert_eq!(Validation::of(&settings(&[("retention.ms", "1000")])), None, "nothing to hold");

        let v = TopicValidation::from_settings(&settings(&[
            (VALUE_VALIDATION, "TRUE"),
            (VALUE_STRATEGY, "io.confluent.kafka.serializers.subject.RecordNameStrategy"),
            (KEY_STRATEGY, "TopicRecordNameStrategy"),
            (PAYLOAD_VALIDATION, "true"),
        ]))
        .unwrap();
        assert_eq!(v.side(Side::Value), Some(SubjectNameStrategy::RecordName));
        assert_eq!(v.side(Side::Key), None, "a strategy alone does not turn validation on");
        assert_eq!(v.key_strategy, SubjectNameStrategy::TopicRecordName);
        assert!(v.payload);

        let r = TopicValidation::from_settings(&settings(&[
            (KEY_VALIDATION_REDPANDA, "true"),
            (KEY_STRATEGY_REDPANDA, "RecordNameStrategy"),
        ]))
        .unwrap();
        assert_eq!(r.side(Side::Key), Some(SubjectNameStrategy::RecordName));
        assert!(!r.value && !r.payload);
        let both = settings(&[(VALUE_VALIDATION, "true"), (VALUE_VALIDATION_REDPANDA, "true")]);
        assert!(TopicValidation::from_settings(&both).unwrap().value, "aliases that agree are fine");
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        for (pairs, needle) in [
            (&[(VALUE_VALIDATION, "maybe")][..], VALUE_VALIDATION),
            (&[(KEY_VALIDATION_REDPANDA, "1")], KEY_VALIDATION_REDPANDA),
            (&[(VALUE_STRATEGY, "io.confluent.kafka.serializers.subject.NoSuchStrategy")], VALUE_STRATEGY),
            (&[(KEY_STRATEGY_REDPANDA, "")], KEY_STRATEGY_REDPANDA),
            (&[(PAYLOAD_VALIDATION, "yes")], PAYLOAD_VALIDATION),
            (&[(VALUE_VALIDATION, "true"), (VALUE_VALIDATION_REDPANDA, "false")], "disagree"),
            (&[(VALUE_STRATEGY, "RecordNameStrategy"), (VALUE_STRATEGY_REDPANDA, "TopicNameStrategy")], "disagree"),
        ] {
            let e = TopicValidation::from_settings(&settings(pairs)).unwrap_err();
            assert!(matches!(e, BrokerError::InvalidConfig(_)), "{pairs:?}: {e}");
            assert!(e.to_string().contains(needle), "{pairs:?}: {e}");
            assert!(matches!(Validation::of(&settings(pairs)), Some(Validation::Broken(_))), "{pairs:?}");
        }
    }

    #[test]
    fn describe_pairs_give_effective_values_that_parse_back() {
        let v = TopicValidation {
            key: true,
            value: false,
            key_strategy: SubjectNameStrategy::TopicRecordName,
            value_strategy: SubjectNameStrategy::TopicName,
            payload: true,
        };
        let pairs: BTreeMap<String, String> = v.to_pairs().into_iter().collect();
        assert_eq!(pairs[KEY_STRATEGY], "io.confluent.kafka.serializers.subject.TopicRecordNameStrategy");
        assert_eq!(pairs[VALUE_VALIDATION], "false");
        assert_eq!(TopicValidation::from_settings(&pairs).unwrap(), v);
        assert!(pairs.keys().all(|k| is_setting(k)));
    }

    #[test]
    fn refusal_messages_show_three_reasons_and_the_count() {
        let errors: Vec<RecordError> =
            (0..5).map(|i| RecordError { index: i * 2, reason: format!("value bad {i}") }).collect();
        assert_eq!(refusal_message(&errors[..1], 1), "record 0: value bad 0");
        assert_eq!(
            refusal_message(&errors, 5),
            "record 0: value bad 0; record 2: value bad 1; record 4: value bad 2 (5 records refused)"
        );
        assert_eq!(refusal_message(&errors[..2], 2), "record 0: value bad 0; record 2: value bad 1");
    }
}
