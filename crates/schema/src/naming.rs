//! Subject naming strategies (Confluent's `SubjectNameStrategy`): the subject a record's schema is registered under,
//! from the topic, whether it is the key or the value, and the record name the schema defines. One function, for
//! every place weir serializes (the REST Proxy, the runtime's typed events, the CLI); the broker's validation builds
//! the same names without allocating (`validation.rs`).

use weir_broker::{Side, SubjectNameStrategy};

/// The subject for `topic`'s key or value under `strategy`; `record_name` is what the schema defines (see
/// [`Parsed::record_name`](crate::Parsed::record_name)). `Err` says why a record strategy has no name to use.
pub fn subject_name(
    topic: &str,
    side: Side,
    strategy: SubjectNameStrategy,
    record_name: Option<&str>,
) -> Result<String, String> {
    let name = || {
        record_name.ok_or_else(|| {
            format!(
                "{} needs a record name, and the schema defines none (an Avro record, enum or fixed; a Protobuf \
                 message; a JSON Schema with a title)",
                strategy.class_name().rsplit('.').next().unwrap_or_default()
            )
        })
    };
    Ok(match strategy {
        SubjectNameStrategy::TopicName => format!("{topic}-{side}"),
        SubjectNameStrategy::RecordName => name()?.to_string(),
        SubjectNameStrategy::TopicRecordName => format!("{topic}-{}", name()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_strategy_names_its_subject() {
        use SubjectNameStrategy::*;
        assert_eq!(subject_name("orders", Side::Value, TopicName, Some("shop.Order")).unwrap(), "orders-value");
        assert_eq!(subject_name("orders", Side::Key, TopicName, None).unwrap(), "orders-key");
        assert_eq!(subject_name("orders", Side::Value, RecordName, Some("shop.Order")).unwrap(), "shop.Order");
        assert_eq!(
            subject_name("orders", Side::Value, TopicRecordName, Some("shop.Order")).unwrap(),
            "orders-shop.Order"
        );
        let e = subject_name("orders", Side::Value, RecordName, None).unwrap_err();
        assert!(e.starts_with("RecordNameStrategy needs a record name"), "{e}");
    }
}
