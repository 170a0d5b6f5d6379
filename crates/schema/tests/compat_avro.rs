//! The Avro format module against the Avro specification: schema resolution as a table of writer/reader pairs,
//! references, normalization, payloads between Avro's JSON encoding and binary (checked against apache-avro's own
//! encoder and decoder), and hostile payloads. Test names start with `avro_` so `cargo test -p weir-schema avro`
//! runs them.

use apache_avro::types::Value as AvroValue;
use apache_avro::{from_avro_datum, to_avro_datum, Decimal, Schema, Uuid};
use proptest::prelude::*;
use serde_json::{json, Value};
use weir_schema::avro::AvroSchema;
use weir_schema::{Dependency, Parsed, SchemaType};

fn avro(text: &str) -> AvroSchema {
    AvroSchema::parse(text, &[]).unwrap_or_else(|e| panic!("{text} should parse: {e}"))
}

fn with_deps(text: &str, deps: &[(&str, &str)]) -> AvroSchema {
    let deps: Vec<Dependency> =
        deps.iter().map(|(name, schema)| Dependency { name: name.to_string(), schema: schema.to_string() }).collect();
    AvroSchema::parse(text, &deps).unwrap_or_else(|e| panic!("{text} should parse: {e}"))
}

/// A record named `name` with the fields given as JSON text.
fn record(name: &str, fields: &str) -> String {
    format!(r#"{{"type":"record","name":"{name}","fields":[{fields}]}}"#)
}

// ---- Schema resolution ----

struct Row {
    writer: String,
    reader: String,
    compatible: bool,
    /// A part of one of the reasons (empty when compatible).
    reason: &'static str,
}

fn ok(writer: impl Into<String>, reader: impl Into<String>) -> Row {
    Row { writer: writer.into(), reader: reader.into(), compatible: true, reason: "" }
}

fn bad(writer: impl Into<String>, reader: impl Into<String>, reason: &'static str) -> Row {
    Row { writer: writer.into(), reader: reader.into(), compatible: false, reason }
}

fn q(primitive: &str) -> String {
    format!("\"{primitive}\"")
}

fn linked_list(value_type: &str, extra: &str) -> String {
    record(
        "Node",
        &format!(
            r#"{{"name":"value","type":"{value_type}"}},{{"name":"next","type":["null","Node"],"default":null}}{extra}"#
        ),
    )
}

fn table() -> Vec<Row> {
    let user_v1 = record("User", r#"{"name":"name","type":"string"}"#);
    let user_age_default = record("User", r#"{"name":"name","type":"string"},{"name":"age","type":"int","default":0}"#);
    let user_age = record("User", r#"{"name":"name","type":"string"},{"name":"age","type":"int"}"#);
    let renamed_with_alias = record("User", r#"{"name":"fullname","type":"string","aliases":["name"]}"#);
    let renamed = record("User", r#"{"name":"fullname","type":"string"}"#);
    let age_int = record("User", r#"{"name":"age","type":"int"}"#);
    let age_long = record("User", r#"{"name":"age","type":"long"}"#);
    let enum_abc = r#"{"type":"enum","name":"Suit","symbols":["A","B","C"]}"#;
    let enum_ab = r#"{"type":"enum","name":"Suit","symbols":["A","B"]}"#;
    let enum_ab_default = r#"{"type":"enum","name":"Suit","symbols":["A","B"],"default":"A"}"#;
    let enum_other = r#"{"type":"enum","name":"Colour","symbols":["A","B","C"]}"#;
    let fixed = |name: &str, size: usize| format!(r#"{{"type":"fixed","name":"{name}","size":{size}}}"#);
    let array = |items: &str| format!(r#"{{"type":"array","items":"{items}"}}"#);
    let map = |values: &str| format!(r#"{{"type":"map","values":"{values}"}}"#);
    let nested = |address_fields: &str| {
        record("Customer", &format!(r#"{{"name":"address","type":{}}}"#, record("Address", address_fields)))
    };
    let logical = |ty: &str, lt: &str| format!(r#"{{"type":"{ty}","logicalType":"{lt}"}}"#);
    let tree = |value_type: &str| {
        record(
            "Tree",
            &format!(
                r#"{{"name":"value","type":"{value_type}"}},{{"name":"children","type":{{"type":"array","items":"Tree"}}}}"#
            ),
        )
    };

    vec![
        // Primitives and the promotions the specification allows, and their reverses.
        ok(q("null"), q("null")),
        ok(q("int"), q("long")),
        ok(q("int"), q("float")),
        ok(q("int"), q("double")),
        ok(q("long"), q("float")),
        ok(q("long"), q("double")),
        ok(q("float"), q("double")),
        ok(q("string"), q("bytes")),
        ok(q("bytes"), q("string")),
        bad(q("long"), q("int"), "reader type int is not compatible with writer type long"),
        bad(q("double"), q("float"), "reader type float is not compatible with writer type double"),
        bad(q("float"), q("long"), "writer type float"),
        bad(q("double"), q("long"), "writer type double"),
        bad(q("string"), q("int"), "writer type string"),
        bad(q("int"), q("string"), "reader type string"),
        bad(q("boolean"), q("int"), "writer type boolean"),
        bad(q("int"), q("boolean"), "reader type boolean"),
        bad(q("null"), q("string"), "writer type null"),
        // Records: a reader field the writer lacks needs a default; extra writer fields are skipped.
        ok(&user_v1, &user_age_default),
        bad(&user_v1, &user_age, "/fields/1: reader field 'age' has no default and is missing in the writer"),
        ok(&user_age, &user_v1),
        ok(&user_age_default, &user_v1),
        // A reader field found by its alias, and the same without the alias.
        ok(&user_v1, &renamed_with_alias),
        bad(&user_v1, &renamed, "reader field 'fullname' has no default and is missing in the writer"),
        // Field types resolve recursively.
        ok(&age_int, &age_long),
        bad(&age_long, &age_int, "/fields/0/type: reader type int is not compatible with writer type long"),
        bad(
            nested(r#"{"name":"street","type":"string"}"#),
            nested(r#"{"name":"street","type":"string"},{"name":"zip","type":"string"}"#),
            "/fields/0/type/fields/1: reader field 'zip' has no default",
        ),
        ok(
            nested(r#"{"name":"street","type":"string"},{"name":"zip","type":"string"}"#),
            nested(r#"{"name":"street","type":"string"}"#),
        ),
        // Names: unqualified names must match, or a reader alias must name the writer's type.
        bad(
            record("A", r#"{"name":"x","type":"int"}"#),
            record("B", r#"{"name":"x","type":"int"}"#),
            "/name: reader type 'B' and writer type 'A' have different names",
        ),
        ok(
            record("A", r#"{"name":"x","type":"int"}"#),
            r#"{"type":"record","name":"B","aliases":["A"],"fields":[{"name":"x","type":"int"}]}"#,
        ),
        ok(
            r#"{"type":"record","name":"User","namespace":"a","fields":[{"name":"x","type":"int"}]}"#,
            r#"{"type":"record","name":"User","namespace":"b","fields":[{"name":"x","type":"int"}]}"#,
        ),
        bad(
            record("A", r#"{"name":"x","type":"int"}"#),
            enum_ab,
            "reader type enum 'Suit' is not compatible with writer type record 'A'",
        ),
        // Enums: a writer symbol the reader lacks needs the reader's default.
        bad(
            enum_abc,
            enum_ab,
            "/symbols: the writer's symbols [C] are missing from reader enum 'Suit', which has no default",
        ),
        ok(enum_abc, enum_ab_default),
        ok(enum_ab, enum_abc),
        bad(enum_abc, enum_other, "/name: reader type 'Colour' and writer type 'Suit'"),
        // Fixed: name and size.
        ok(fixed("Hash", 16), fixed("Hash", 16)),
        bad(
            fixed("Hash", 8),
            fixed("Hash", 16),
            "/size: reader fixed 'Hash' has size 16 but writer fixed 'Hash' has size 8",
        ),
        bad(fixed("Hash", 16), fixed("Digest", 16), "/name: reader type 'Digest' and writer type 'Hash'"),
        bad(fixed("Hash", 16), q("bytes"), "reader type bytes is not compatible with writer type fixed 'Hash'"),
        // Arrays and maps by their items and values.
        ok(array("int"), array("long")),
        bad(array("long"), array("int"), "/items: reader type int is not compatible with writer type long"),
        ok(map("int"), map("double")),
        bad(map("string"), map("int"), "/values: reader type int"),
        bad(array("int"), map("int"), "reader type map of int is not compatible with writer type array of int"),
        // Unions: every writer branch must resolve; a non-union writer must fit a reader branch; a union writer
        // against a non-union reader, branch by branch.
        ok(r#"["null","string"]"#, r#"["null","string","int"]"#),
        bad(
            r#"["null","string","int"]"#,
            r#"["null","string"]"#,
            "/2: reader union [null, string] has no branch that can read writer type int",
        ),
        ok(q("string"), r#"["null","string"]"#),
        ok(q("int"), r#"["null","long"]"#),
        bad(
            q("int"),
            r#"["null","string"]"#,
            "/: reader union [null, string] has no branch that can read writer type int",
        ),
        bad(r#"["null","string"]"#, q("string"), "/0: reader type string is not compatible with writer type null"),
        ok(r#"["int","long"]"#, q("double")),
        bad(r#"["int","string"]"#, q("long"), "/1: reader type long is not compatible with writer type string"),
        ok(r#"["null",{"type":"enum","name":"Suit","symbols":["A","B"]}]"#, format!(r#"["null",{enum_abc}]"#)),
        bad(
            format!(r#"["null",{enum_abc}]"#),
            format!(r#"["null",{enum_ab}]"#),
            "/1/symbols: the writer's symbols [C] are missing from reader enum 'Suit'",
        ),
        // Logical types resolve as their underlying types.
        ok(logical("long", "timestamp-micros"), q("long")),
        ok(q("long"), logical("long", "timestamp-millis")),
        ok(logical("int", "date"), logical("long", "timestamp-millis")),
        bad(logical("long", "timestamp-millis"), q("int"), "reader type int is not compatible with writer type long"),
        ok(logical("string", "uuid"), q("string")),
        ok(logical("string", "uuid"), q("bytes")),
        ok(r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}"#, q("bytes")),
        bad(r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}"#, q("int"), "writer type bytes"),
        // Recursive types are compared once per pair of names, without looping.
        ok(linked_list("int", ""), linked_list("int", "")),
        ok(linked_list("int", ""), linked_list("long", "")),
        bad(
            linked_list("long", ""),
            linked_list("int", ""),
            "/fields/0/type: reader type int is not compatible with writer type long",
        ),
        bad(
            linked_list("int", ""),
            linked_list("int", r#",{"name":"tag","type":"string"}"#),
            "/fields/2: reader field 'tag' has no default",
        ),
        ok(tree("int"), tree("double")),
        bad(tree("string"), tree("int"), "/fields/0/type: reader type int"),
    ]
}

#[test]
fn avro_compatibility_table_follows_schema_resolution() {
    let rows = table();
    assert!(rows.len() >= 30, "the table has {} rows", rows.len());
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let writer = avro(&row.writer);
        let reader = avro(&row.reader);
        let reasons = AvroSchema::incompatibilities(&reader, &writer);
        let as_expected = if row.compatible {
            reasons.is_empty()
        } else {
            !reasons.is_empty() && reasons.iter().any(|r| r.contains(row.reason))
        };
        if !as_expected {
            failures.push(format!(
                "row {i}: writer {} reader {}: expected {}, got {reasons:?}",
                row.writer,
                row.reader,
                if row.compatible { "compatible".to_string() } else { format!("a reason with {:?}", row.reason) }
            ));
        }
        // Every reason says where, as a path in the reader.
        for reason in &reasons {
            assert!(reason.starts_with('/'), "row {i}: {reason}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn avro_compatibility_through_parsed_and_against_other_formats() {
    let writer = Parsed::parse(SchemaType::Avro, r#""int""#, &[]).expect("parses");
    let reader = Parsed::parse(SchemaType::Avro, r#""long""#, &[]).expect("parses");
    assert!(Parsed::incompatibilities(&reader, &writer).is_empty());
    assert_eq!(Parsed::incompatibilities(&writer, &reader).len(), 1);
}

#[test]
fn avro_a_type_used_many_times_is_reported_once_per_use_and_checked_quickly() {
    // Eight levels of a record holding two fields of the level below: 256 paths to the bottom, which the check
    // must not walk one by one (it compares each pair of names once).
    let mut writer = record("L0", r#"{"name":"v","type":"long"}"#);
    let mut reader = record("L0", r#"{"name":"v","type":"int"}"#);
    for level in 1..=8 {
        let wrap = |inner: &str| {
            record(
                &format!("L{level}"),
                &format!(r#"{{"name":"a","type":{inner}}},{{"name":"b","type":"L{}"}}"#, level - 1),
            )
        };
        writer = wrap(&writer);
        reader = wrap(&reader);
    }
    let reasons = AvroSchema::incompatibilities(&avro(&reader), &avro(&writer));
    assert!(!reasons.is_empty());
    assert!(reasons.len() <= 50, "{} reasons", reasons.len());
    assert!(reasons[0].starts_with("/fields/0/type/fields/0/type"), "{}", reasons[0]);
    assert!(reasons[0].ends_with("reader type int is not compatible with writer type long"), "{}", reasons[0]);
}

// ---- References ----

const ADDRESS: &str = r#"{"type":"record","name":"Address","namespace":"com.acme",
    "fields":[{"name":"street","type":"string"},{"name":"zip","type":"string"}]}"#;
const USER: &str = r#"{"type":"record","name":"User","namespace":"com.acme",
    "fields":[{"name":"name","type":"string"},{"name":"address","type":"Address"}]}"#;

#[test]
fn avro_references_resolve_by_full_name_and_stay_references() {
    let user = with_deps(USER, &[("com.acme.Address", ADDRESS)]);
    assert_eq!(user.record_name().as_deref(), Some("com.acme.User"));
    let normalized = user.normalized();
    assert!(normalized.contains(r#"{"name":"address","type":"com.acme.Address"}"#), "{normalized}");
    assert!(!normalized.contains("street"), "the dependency is not inlined: {normalized}");

    // The full name works as well as the name relative to the namespace, and normalizes the same.
    let by_full_name = with_deps(
        &USER.replace(r#""type":"Address""#, r#""type":"com.acme.Address""#),
        &[("com.acme.Address", ADDRESS)],
    );
    assert_eq!(by_full_name.normalized(), normalized);

    // Payloads go through the dependency's type.
    let value = json!({"name": "Ada", "address": {"street": "1 Main St", "zip": "12345"}});
    let bytes = user.encode_json(&value).expect("encodes");
    assert_eq!(bytes[0], 6, "the name's length first");
    assert_eq!(user.decode_json(&bytes).expect("decodes"), value);
    let error = user.encode_json(&json!({"name": "Ada", "address": {"street": "x"}})).unwrap_err();
    assert!(error.message.contains("/address/zip"), "{error}");
}

#[test]
fn avro_a_missing_reference_is_an_invalid_schema_naming_the_type() {
    let error = AvroSchema::parse(USER, &[]).unwrap_err();
    assert!(error.message.contains("com.acme.Address"), "{error}");
    assert!(error.message.contains("unknown type"), "{error}");
    let error = AvroSchema::parse(&record("R", r#"{"name":"x","type":"Nowhere"}"#), &[]).unwrap_err();
    assert!(error.message.contains("'Nowhere'"), "{error}");
}

#[test]
fn avro_transitive_references_and_compatibility_across_them() {
    let country = r#"{"type":"enum","name":"Country","namespace":"geo","symbols":["FR","NL"]}"#;
    let address_v1 = r#"{"type":"record","name":"Address","namespace":"com.acme",
        "fields":[{"name":"street","type":"string"},{"name":"country","type":"geo.Country"}]}"#;
    let address_v2 = r#"{"type":"record","name":"Address","namespace":"com.acme",
        "fields":[{"name":"street","type":"string"},{"name":"country","type":"geo.Country"},{"name":"zip","type":"string"}]}"#;
    let writer = with_deps(USER, &[("geo.Country", country), ("com.acme.Address", address_v1)]);
    let reader = with_deps(USER, &[("geo.Country", country), ("com.acme.Address", address_v2)]);
    let value = json!({"name": "Ada", "address": {"street": "Dam 1", "country": "NL"}});
    assert_eq!(writer.decode_json(&writer.encode_json(&value).expect("encodes")).expect("decodes"), value);
    let reasons = AvroSchema::incompatibilities(&reader, &writer);
    assert_eq!(
        reasons,
        vec!["/fields/1/type/fields/2: reader field 'zip' has no default and is missing in the writer".to_string()]
    );
    assert!(AvroSchema::incompatibilities(&writer, &reader).is_empty());
    // The same text with other references is another schema: the reference is not inlined, so the normalized
    // text is the same (the registry tells them apart by their references).
    assert_eq!(writer.normalized(), reader.normalized());
}

#[test]
fn avro_a_type_referred_to_by_its_alias() {
    let schema = avro(
        r#"{"type":"record","name":"Pair","namespace":"p","fields":[
            {"name":"a","type":{"type":"enum","name":"Side","aliases":["OldSide"],"symbols":["L","R"]}},
            {"name":"b","type":"OldSide"}]}"#,
    );
    let value = json!({"a": "L", "b": "R"});
    assert_eq!(schema.encode_json(&value).expect("encodes"), vec![0, 2]);
    assert_eq!(schema.decode_json(&[0, 2]).expect("decodes"), value);
}

#[test]
fn avro_record_name_is_the_top_level_named_type() {
    assert_eq!(
        avro(r#"{"type":"record","name":"com.acme.User","fields":[]}"#).record_name().as_deref(),
        Some("com.acme.User")
    );
    assert_eq!(
        avro(r#"{"type":"enum","name":"Suit","namespace":"cards","symbols":["A"]}"#).record_name().as_deref(),
        Some("cards.Suit")
    );
    assert_eq!(avro(r#"{"type":"fixed","name":"Hash","size":4}"#).record_name().as_deref(), Some("Hash"));
    assert_eq!(avro(r#""string""#).record_name(), None);
    assert_eq!(avro(r#"["null","string"]"#).record_name(), None);
    assert_eq!(avro(r#"{"type":"array","items":"int"}"#).record_name(), None);
}

#[test]
fn avro_invalid_schemas_say_why() {
    for (text, part) in [
        ("{not json", "not valid JSON"),
        (r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":"x"}]}"#, "default"),
        (r#"{"type":"enum","name":"E","symbols":["A","A"]}"#, "A"),
        (r#"{"type":"recrod","name":"R","fields":[]}"#, "recrod"),
        (r#"{"type":"record","name":"1R","fields":[]}"#, "invalid name '1R'"),
    ] {
        let error = AvroSchema::parse(text, &[]).expect_err(text);
        assert!(error.message.contains(part), "{text}: {error}");
    }
}

// ---- Normalization ----

#[test]
fn avro_two_writings_of_one_schema_normalize_to_one_text() {
    let compact = r#"{"type":"record","name":"User","namespace":"com.acme","fields":[
        {"name":"id","type":"long"},
        {"name":"email","type":{"type":"string"}},
        {"name":"address","type":{"type":"record","name":"Address","fields":[{"name":"street","type":"string"}]}},
        {"name":"home","type":["null","Address"],"default":null},
        {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B"],"default":"A"},"aliases":["k","category"]},
        {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":10},"order":"ascending"}]}"#;
    let other = r#"
    {
        "fields": [
            {"type": "long", "name": "id"},
            {"name": "email", "type": "string"},
            {"name": "address", "type": {"namespace": "com.acme", "name": "Address", "type": "record",
                                         "fields": [{"type": {"type": "string"}, "name": "street"}]}},
            {"default": null, "name": "home", "type": ["null", "com.acme.Address"]},
            {"aliases": ["category", "k"], "name": "kind",
             "type": {"default": "A", "symbols": ["A", "B"], "name": "com.acme.Kind", "type": "enum"}},
            {"name": "price", "type": {"scale": 0, "precision": 10, "logicalType": "decimal", "type": "bytes"}}
        ],
        "name": "com.acme.User",
        "type": "record"
    }"#;
    let a = avro(compact).normalized();
    let b = avro(other).normalized();
    assert_eq!(a, b);
    // Full names, no namespace keys, no whitespace; what parsing canonical form drops is kept.
    assert!(a.starts_with(r#"{"name":"com.acme.User","type":"record","fields":[{"name":"id","type":"long"},{"name":"email","type":"string"}"#), "{a}");
    assert!(!a.contains("namespace") && !a.contains(' '), "{a}");
    for kept in [
        r#""default":null"#,
        r#""default":"A""#,
        r#""aliases":["category","k"]"#,
        r#""logicalType":"decimal""#,
        r#""scale":0"#,
    ] {
        assert!(a.contains(kept), "{kept} in {a}");
    }
    // The normalized text is a schema, and normalizes to itself.
    assert_eq!(avro(&a).normalized(), a);
    // Parsing canonical form alone would not tell these apart from schemas without the defaults.
    assert_eq!(
        Schema::parse_str(compact).expect("parses").canonical_form(),
        Schema::parse_str(&compact.replace(r#","default":null"#, "")).expect("parses").canonical_form()
    );
}

#[test]
fn avro_schemas_that_differ_normalize_differently() {
    let base = record("R", r#"{"name":"a","type":"int","default":0}"#);
    let pairs = [
        (base.clone(), record("R", r#"{"name":"a","type":"int","default":1}"#), "another default"),
        (base.clone(), record("R", r#"{"name":"a","type":"int"}"#), "no default"),
        (base.clone(), record("R", r#"{"name":"a","type":"int","default":0,"aliases":["b"]}"#), "a field alias"),
        (base.clone(), record("R", r#"{"name":"a","type":"long","default":0}"#), "another type"),
        (base.clone(), record("S", r#"{"name":"a","type":"int","default":0}"#), "another name"),
        (
            record("R", r#"{"name":"t","type":"long"}"#),
            record("R", r#"{"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}}"#),
            "a logical type",
        ),
        (
            r#"{"type":"enum","name":"E","symbols":["A","B"]}"#.to_string(),
            r#"{"type":"enum","name":"E","symbols":["A","B"],"default":"B"}"#.to_string(),
            "an enum default",
        ),
        (
            r#"{"type":"enum","name":"E","symbols":["A","B"]}"#.to_string(),
            r#"{"type":"enum","name":"E","symbols":["B","A"]}"#.to_string(),
            "symbol order",
        ),
        (
            record("R", r#"{"name":"a","type":"int"}"#),
            r#"{"type":"record","name":"R","aliases":["Old"],"fields":[{"name":"a","type":"int"}]}"#.to_string(),
            "a type alias",
        ),
        (
            record("R", r#"{"name":"a","type":"int"}"#),
            r#"{"type":"record","name":"R","doc":"a record","fields":[{"name":"a","type":"int"}]}"#.to_string(),
            "a doc (docs are kept)",
        ),
        (q("string"), r#"{"type":"string","avro.java.string":"String"}"#.to_string(), "a property"),
        (
            r#"{"type":"record","name":"R","namespace":"a","fields":[]}"#.to_string(),
            r#"{"type":"record","name":"R","namespace":"b","fields":[]}"#.to_string(),
            "another namespace",
        ),
    ];
    for (a, b, what) in pairs {
        assert_ne!(avro(&a).normalized(), avro(&b).normalized(), "{what}: {a} vs {b}");
    }
}

// ---- Payloads ----

const ORDER: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
    {"name":"id","type":{"type":"string","logicalType":"uuid"}},
    {"name":"created","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
    {"name":"price","type":{"type":"fixed","name":"Price","size":8,"logicalType":"decimal","precision":18,"scale":4}},
    {"name":"status","type":{"type":"enum","name":"Status","symbols":["NEW","PAID","SHIPPED"]}},
    {"name":"tags","type":{"type":"array","items":"string"}},
    {"name":"counts","type":{"type":"map","values":"long"}},
    {"name":"note","type":["null","string"],"default":null},
    {"name":"customer","type":{"type":"record","name":"Customer","fields":[
        {"name":"name","type":"string"},
        {"name":"age","type":["null","int"],"default":null},
        {"name":"vip","type":"boolean","default":false}]}},
    {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
        {"name":"sku","type":"string"},{"name":"qty","type":"int"}]}}},
    {"name":"ratio","type":"float"},
    {"name":"score","type":"double"},
    {"name":"raw","type":"bytes"},
    {"name":"digest","type":{"type":"fixed","name":"Digest","size":4}},
    {"name":"extra","type":["null","Customer","Line"],"default":null}]}"#;

fn order_json() -> Value {
    json!({
        "id": "6f1c1d0e-8a53-4e0b-9d52-2b1f0c9a7e11",
        "created": 1_700_000_000_123_456i64,
        "amount": "\u{4}\u{d2}",
        "price": "\u{0}\u{0}\u{0}\u{0}\u{0}\u{1}\u{e2}\u{40}",
        "status": "PAID",
        "tags": ["a", "b"],
        "counts": {"x": 1, "y": -2},
        "note": {"string": "fragile"},
        "customer": {"name": "Ada", "age": {"int": 36}, "vip": true},
        "lines": [{"sku": "S1", "qty": 2}, {"sku": "S2", "qty": 1}],
        "ratio": 0.1,
        "score": -2.5,
        "raw": "\u{0}\u{ff}\u{80}",
        "digest": "abcd",
        "extra": {"shop.Line": {"sku": "S3", "qty": 3}}
    })
}

#[test]
fn avro_payloads_round_trip_in_avros_json_encoding() {
    let order = avro(ORDER);
    let value = order_json();
    let bytes = order.encode_json(&value).expect("encodes");
    assert_eq!(order.decode_json(&bytes).expect("decodes"), value);
}

#[test]
fn avro_payloads_agree_with_apache_avros_encoder_and_decoder() {
    let order = avro(ORDER);
    let bytes = order.encode_json(&order_json()).expect("encodes");
    let schema = Schema::parse_str(ORDER).expect("parses");
    let decoded = from_avro_datum(&schema, &mut &bytes[..], None).expect("apache-avro decodes our bytes");
    let AvroValue::Record(fields) = decoded else { panic!("a record: {decoded:?}") };
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).expect(name);
    assert_eq!(field("id"), AvroValue::Uuid(Uuid::parse_str("6f1c1d0e-8a53-4e0b-9d52-2b1f0c9a7e11").expect("uuid")));
    assert_eq!(field("created"), AvroValue::TimestampMicros(1_700_000_000_123_456));
    assert_eq!(field("amount"), AvroValue::Decimal(Decimal::from(vec![0x04, 0xd2])));
    assert_eq!(field("status"), AvroValue::Enum(1, "PAID".into()));
    assert_eq!(field("tags"), AvroValue::Array(vec![AvroValue::String("a".into()), AvroValue::String("b".into())]));
    assert_eq!(field("note"), AvroValue::Union(1, Box::new(AvroValue::String("fragile".into()))));
    assert_eq!(field("ratio"), AvroValue::Float(0.1));
    assert_eq!(field("raw"), AvroValue::Bytes(vec![0, 0xff, 0x80]));
    assert_eq!(field("digest"), AvroValue::Fixed(4, b"abcd".to_vec()));
    assert!(matches!(field("extra"), AvroValue::Union(2, _)));

    // And the other way: apache-avro's bytes, read by us.
    let simple = r#"{"type":"record","name":"Event","fields":[
        {"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
        {"name":"who","type":["null","string"]},
        {"name":"tags","type":{"type":"map","values":"int"}},
        {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":6,"scale":2}}]}"#;
    let schema = Schema::parse_str(simple).expect("parses");
    let value = AvroValue::Record(vec![
        ("at".into(), AvroValue::TimestampMicros(-5)),
        ("who".into(), AvroValue::Union(1, Box::new(AvroValue::String("bob".into())))),
        ("tags".into(), AvroValue::Map([("k".to_string(), AvroValue::Int(7))].into_iter().collect())),
        ("amount".into(), AvroValue::Decimal(Decimal::from(vec![0xfb, 0x2e]))),
    ]);
    let theirs = to_avro_datum(&schema, value).expect("apache-avro encodes");
    let ours = avro(simple);
    let expected = json!({"at": -5, "who": {"string": "bob"}, "tags": {"k": 7}, "amount": "\u{fb}\u{2e}"});
    assert_eq!(ours.decode_json(&theirs).expect("decodes"), expected);
    assert_eq!(ours.encode_json(&expected).expect("encodes"), theirs);
}

#[test]
fn avro_friendly_inputs_bare_union_values_defaults_and_decimal_numbers() {
    let order = avro(ORDER);
    let mut value = order_json();
    value["note"] = json!("fragile");
    value["customer"] = json!({"name": "Ada", "age": 36, "vip": true});
    value["extra"] = json!({"sku": "S3", "qty": 3});
    value["amount"] = json!(12.34);
    value["price"] = json!(12.3456);
    assert_eq!(
        order.encode_json(&value).expect("bare values and numbers"),
        order.encode_json(&order_json()).expect("the spec's encoding"),
        "a bare union value, and a decimal given as a number, encode as their Avro JSON encodings do"
    );
    // Fields left out take their defaults (a union's default is its first branch's).
    let mut sparse = order_json();
    let object = sparse.as_object_mut().expect("object");
    object.remove("note");
    object.remove("extra");
    sparse["customer"] = json!({"name": "Ada"});
    let decoded = order.decode_json(&order.encode_json(&sparse).expect("encodes")).expect("decodes");
    assert_eq!(decoded["note"], Value::Null);
    assert_eq!(decoded["extra"], Value::Null);
    assert_eq!(decoded["customer"], json!({"name": "Ada", "age": null, "vip": false}));
    // A named branch may be named by its short name.
    let mut short = order_json();
    short["extra"] = json!({"Line": {"sku": "S3", "qty": 3}});
    assert_eq!(order.encode_json(&short).expect("encodes"), order.encode_json(&order_json()).expect("encodes"));
    // Negative decimals, in bytes and in a sign-extended fixed.
    let mut negative = order_json();
    negative["amount"] = json!(-12.34);
    negative["price"] = json!(-1);
    let decoded = order.decode_json(&order.encode_json(&negative).expect("encodes")).expect("decodes");
    assert_eq!(decoded["amount"], json!("\u{fb}\u{2e}"));
    assert_eq!(decoded["price"], json!("\u{ff}\u{ff}\u{ff}\u{ff}\u{ff}\u{ff}\u{d8}\u{f0}"));
}

#[test]
fn avro_floats_and_specials_round_trip() {
    let s = avro(r#"{"type":"record","name":"F","fields":[{"name":"f","type":"float"},{"name":"d","type":"double"}]}"#);
    for (f, d) in [
        (json!(0.1), json!(0.1)),
        (json!("NaN"), json!("Infinity")),
        (json!("-Infinity"), json!(-0.0)),
        (json!(3.0e38), json!(1e300)),
    ] {
        let value = json!({"f": f, "d": d});
        assert_eq!(s.decode_json(&s.encode_json(&value).expect("encodes")).expect("decodes"), value);
    }
    assert!(s.encode_json(&json!({"f": 1e39, "d": 0})).unwrap_err().message.contains("/f"));
}

#[test]
fn avro_wrong_values_name_the_field() {
    let order = avro(ORDER);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/customer/name", json!({"name": 5}), "expected a string, got 5"),
        ("/customer", json!({"nme": "Ada"}), "unknown field 'nme'"),
        ("/customer/name", json!({}), "missing, and the field has no default"),
        ("/status", json!("LOST"), "'LOST' is not a symbol of enum 'shop.Status'"),
        ("/raw", json!("\u{100}"), "is not a byte"),
        ("/digest", json!("abc"), "expected 4 bytes"),
        ("/lines/1/qty", json!([{"sku": "a", "qty": 1}, {"sku": "b", "qty": 3_000_000_000i64}]), "expected an int"),
        ("/id", json!("not-a-uuid"), "is not a UUID"),
        ("/amount", json!(1.234), "more than the decimal's 2 digits after the point"),
        ("/amount", json!(123456789.0), "precision of 10"),
        ("/note", json!(7), "expected a string, got 7"),
        ("/note/string", json!({"string": 7}), "expected a string"),
        ("/extra", json!({"sku": "S3"}), "fits no branch of union [null, shop.Customer, shop.Line]"),
        ("/counts/x", json!({"x": "1"}), "expected a long"),
    ];
    for (path, bad_value, message) in cases {
        let field = path.split('/').nth(1).expect("a field");
        let mut value = order_json();
        value[field] = bad_value;
        let error = order.encode_json(&value).expect_err(path);
        assert!(error.message.starts_with(&format!("{path}: ")), "{path}: {error}");
        assert!(error.message.contains(message), "{path}: {error}");
    }
    let ambiguous = avro(r#"["null","int","long"]"#).encode_json(&json!(5)).unwrap_err();
    assert!(
        ambiguous.message.contains("fits several branches") && ambiguous.message.contains(r#"{"int": value}"#),
        "{ambiguous}"
    );
    assert_eq!(avro(r#"["null","int","long"]"#).encode_json(&json!({"long": 5})).expect("tagged"), vec![4, 10]);
    let no_null = avro(r#"["int","string"]"#).encode_json(&Value::Null).unwrap_err();
    assert!(no_null.message.contains("no null branch"), "{no_null}");
}

// ---- Hostile payloads ----

#[test]
fn avro_truncated_and_overlong_payloads_are_errors() {
    let order = avro(ORDER);
    let bytes = order.encode_json(&order_json()).expect("encodes");
    for end in 0..bytes.len() {
        let error = order.decode_json(&bytes[..end]).expect_err("a strict prefix is truncated");
        assert!(error.message.contains("ends at byte"), "{end}: {error}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let error = order.decode_json(&longer).unwrap_err();
    assert!(error.message.contains("1 bytes left over"), "{error}");
}

/// Avro's zig-zag varint, to forge payloads.
fn long(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
    out
}

#[test]
fn avro_forged_lengths_and_counts_fail_fast_without_allocating() {
    let bytes_schema = avro(r#""bytes""#);
    let error = bytes_schema.decode_json(&long(1 << 60)).unwrap_err();
    assert!(error.message.contains("a bytes of 1152921504606846976 bytes"), "{error}");
    assert!(bytes_schema.decode_json(&long(-1)).unwrap_err().message.contains("negative length"));
    let string = avro(r#""string""#);
    assert!(string.decode_json(&[4, 0xff, 0xfe]).unwrap_err().message.contains("not UTF-8"));

    // Items of a type that takes no bytes: the count alone could claim 2^62 of them.
    let nulls = avro(r#"{"type":"array","items":"null"}"#);
    let error = nulls.decode_json(&[long(1 << 62), vec![0]].concat()).unwrap_err();
    assert!(error.message.contains("more than the payload can hold"), "{error}");
    assert_eq!(nulls.decode_json(&[long(3), vec![0]].concat()).expect("three nulls"), json!([null, null, null]));
    let ints = avro(r#"{"type":"array","items":"int"}"#);
    assert!(ints.decode_json(&[long(1 << 40), vec![2, 0]].concat()).unwrap_err().message.contains("ends at byte"));
    // A negative count carries the block's size in bytes.
    assert_eq!(ints.decode_json(&[long(-2), long(2), vec![2, 4, 0]].concat()).expect("sized block"), json!([1, 2]));
    assert!(ints.decode_json(&[long(i64::MIN), long(0), vec![0]].concat()).is_err());
    let map = avro(r#"{"type":"map","values":"null"}"#);
    assert!(map.decode_json(&[long(1 << 50), vec![0]].concat()).unwrap_err().message.contains("ends at byte"));

    let union = avro(r#"["null","string"]"#);
    assert!(union.decode_json(&long(2)).unwrap_err().message.contains("union branch index 2"));
    assert!(union.decode_json(&long(-1)).unwrap_err().message.contains("union branch index -1"));
    let suit = avro(r#"{"type":"enum","name":"Suit","symbols":["A","B"]}"#);
    assert!(suit.decode_json(&long(2)).unwrap_err().message.contains("enum index 2"));
    assert!(avro(r#""boolean""#).decode_json(&[2]).unwrap_err().message.contains("not a boolean"));
    assert!(avro(r#""int""#).decode_json(&long(1 << 40)).unwrap_err().message.contains("out of an int's range"));
    let huge_fixed = avro(r#"{"type":"fixed","name":"Huge","size":1000000000000}"#);
    assert!(huge_fixed.decode_json(&[0; 8]).unwrap_err().message.contains("ends at byte 8"));
}

#[test]
fn avro_deep_recursion_is_bounded() {
    let list = avro(&linked_list("int", ""));
    // 100 000 nodes deep: each is a value (int 0) and the union's second branch.
    let mut payload = Vec::new();
    for _ in 0..100_000 {
        payload.extend_from_slice(&[0, 2]);
    }
    payload.extend_from_slice(&[0, 0]);
    let error = list.decode_json(&payload).unwrap_err();
    assert!(error.message.contains("nests deeper than"), "{error}");
    // A few levels are fine, and round trip.
    let value = json!({"value": 1, "next": {"Node": {"value": 2, "next": null}}});
    assert_eq!(list.decode_json(&list.encode_json(&value).expect("encodes")).expect("decodes"), value);
    // A JSON value nested past the bound is refused on the way in too.
    let mut deep = json!({"value": 0, "next": null});
    for _ in 0..200 {
        deep = json!({"value": 0, "next": {"Node": deep}});
    }
    assert!(list.encode_json(&deep).unwrap_err().message.contains("nests deeper than"));
}

proptest! {
    #[test]
    fn avro_random_bytes_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
        let order = avro(ORDER);
        let _ = order.decode_json(&payload);
        let list = avro(&linked_list("string", ""));
        let _ = list.decode_json(&payload);
    }

    #[test]
    fn avro_corrupted_payloads_never_panic(position in 0usize..200, byte in any::<u8>(), cut in 0usize..200) {
        let order = avro(ORDER);
        let mut bytes = order.encode_json(&order_json()).expect("encodes");
        let position = position % bytes.len();
        bytes[position] = byte;
        bytes.truncate(bytes.len() - cut % bytes.len());
        let _ = order.decode_json(&bytes);
    }

    #[test]
    fn avro_generated_records_round_trip_and_match_apache_avro(
        id in any::<i64>(),
        name in ".{0,20}",
        tags in proptest::collection::vec("[a-z]{0,5}", 0..5),
        age in proptest::option::of(any::<i32>()),
        score in any::<f64>().prop_filter("finite", |f| f.is_finite()),
        raw in proptest::collection::vec(any::<u8>(), 0..10),
    ) {
        let text = r#"{"type":"record","name":"P","fields":[
            {"name":"id","type":"long"},{"name":"name","type":"string"},
            {"name":"tags","type":{"type":"array","items":"string"}},
            {"name":"age","type":["null","int"]},{"name":"score","type":"double"},{"name":"raw","type":"bytes"}]}"#;
        let schema = avro(text);
        let raw_text: String = raw.iter().map(|&b| char::from(b)).collect();
        let value = json!({
            "id": id, "name": name, "tags": tags,
            "age": age.map(|a| json!({"int": a})), "score": score, "raw": raw_text,
        });
        let bytes = schema.encode_json(&value).expect("encodes");
        prop_assert_eq!(schema.decode_json(&bytes).expect("decodes"), value);
        let theirs = to_avro_datum(&Schema::parse_str(text).expect("parses"), AvroValue::Record(vec![
            ("id".into(), AvroValue::Long(id)),
            ("name".into(), AvroValue::String(name.clone())),
            ("tags".into(), AvroValue::Array(tags.iter().map(|t| AvroValue::String(t.clone())).collect())),
            ("age".into(), match age {
                Some(a) => AvroValue::Union(1, Box::new(AvroValue::Int(a))),
                None => AvroValue::Union(0, Box::new(AvroValue::Null)),
            }),
            ("score".into(), AvroValue::Double(score)),
            ("raw".into(), AvroValue::Bytes(raw.clone())),
        ])).expect("apache-avro encodes");
        prop_assert_eq!(bytes, theirs);
    }

    #[test]
    fn avro_random_json_never_panics(value in json_value()) {
        let order = avro(ORDER);
        let _ = order.encode_json(&value);
        let _ = avro(r#"["null","int","string",{"type":"array","items":"long"},{"type":"map","values":"bytes"}]"#).encode_json(&value);
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::hash_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
