//! The Protobuf format against Protobuf's and Confluent's rules: compatibility (fields by number, Confluent's
//! difference types), references and well-known types, normalization, Confluent's payload (message indexes then the
//! message) byte for byte, and hostile payloads.

// In a module named after the format, so that `cargo test -p weir-schema protobuf` selects these tests.
mod protobuf {
    use proptest::prelude::*;
    use serde_json::json;
    use weir_schema::formats::{Dependency, Parsed, SchemaType};
    use weir_schema::protobuf::ProtobufSchema;

    fn parse(text: &str) -> ProtobufSchema {
        ProtobufSchema::parse(text, &[]).unwrap_or_else(|err| panic!("{err}\n{text}"))
    }

    fn parse_with(text: &str, deps: &[(&str, &str)]) -> ProtobufSchema {
        let deps: Vec<Dependency> =
            deps.iter().map(|(name, schema)| Dependency { name: (*name).into(), schema: (*schema).into() }).collect();
        ProtobufSchema::parse(text, &deps).unwrap_or_else(|err| panic!("{err}\n{text}"))
    }

    fn p3(body: &str) -> String {
        format!("syntax = \"proto3\";\npackage shop.v1;\n{body}")
    }

    fn p2(body: &str) -> String {
        format!("syntax = \"proto2\";\npackage shop.v1;\n{body}")
    }

    /// One row: data written with `writer`, read with `reader`; `None` when compatible, else a substring every
    /// expected reason must contain (all of them, one per row is enough to pin down what was found).
    struct Row {
        what: &'static str,
        writer: String,
        reader: String,
        incompatible: Option<&'static [&'static str]>,
    }

    fn row(what: &'static str, writer: String, reader: String, incompatible: Option<&'static [&'static str]>) -> Row {
        Row { what, writer, reader, incompatible }
    }

    #[test]
    fn compatibility_table() {
        let rows = vec![
            row(
                "identical",
                p3("message Ticket { string id = 1; int32 seats = 2; }"),
                p3("message Ticket { string id = 1; int32 seats = 2; }"),
                None,
            ),
            row(
                "a field renamed: numbers, not names, are on the wire",
                p3("message Ticket { string id = 1; int32 seats = 2; }"),
                p3("message Ticket { string id = 1; int32 places = 2; }"),
                None,
            ),
            row(
                "a field added",
                p3("message Ticket { string id = 1; }"),
                p3("message Ticket { string id = 1; int64 at = 2; }"),
                None,
            ),
            row(
                "a field removed: proto3 skips unknown fields",
                p3("message Ticket { string id = 1; int64 at = 2; }"),
                p3("message Ticket { string id = 1; }"),
                None,
            ),
            row(
                "a field's number changed alone: Confluent sees a removal and an addition, both compatible",
                p3("message Ticket { string id = 1; }"),
                p3("message Ticket { string id = 2; }"),
                None,
            ),
            row(
                "two fields' numbers swapped: each number now holds another type",
                p3("message Ticket { string id = 1; int32 seats = 2; }"),
                p3("message Ticket { int32 seats = 1; string id = 2; }"),
                Some(&[
                    "shop.v1.Ticket field 1 (seats): type changed from string to int32",
                    "FIELD_SCALAR_KIND_CHANGED",
                ]),
            ),
            row(
                "int32 to int64: the same varints",
                p3("message Ticket { int32 seats = 1; }"),
                p3("message Ticket { int64 seats = 1; }"),
                None,
            ),
            row(
                "uint64 to bool: the same varints",
                p3("message Ticket { uint64 flag = 1; }"),
                p3("message Ticket { bool flag = 1; }"),
                None,
            ),
            row(
                "sint32 to sint64: both zigzag",
                p3("message Ticket { sint32 delta = 1; }"),
                p3("message Ticket { sint64 delta = 1; }"),
                None,
            ),
            row(
                "fixed32 to sfixed32, fixed64 to sfixed64",
                p3("message Ticket { fixed32 a = 1; fixed64 b = 2; }"),
                p3("message Ticket { sfixed32 a = 1; sfixed64 b = 2; }"),
                None,
            ),
            row(
                "string to bytes",
                p3("message Ticket { string note = 1; }"),
                p3("message Ticket { bytes note = 1; }"),
                None,
            ),
            row(
                "int32 to sint32: zigzag reads plain varints wrong",
                p3("message Ticket { int32 delta = 1; }"),
                p3("message Ticket { sint32 delta = 1; }"),
                Some(&["field 1 (delta): type changed from int32 to sint32", "FIELD_SCALAR_KIND_CHANGED"]),
            ),
            row(
                "string to int32 (the brief's example)",
                p3("message Ticket { string age = 3; }"),
                p3("message Ticket { int32 age = 3; }"),
                Some(&["shop.v1.Ticket field 3 (age): type changed from string to int32"]),
            ),
            row(
                "float to double: different widths",
                p3("message Ticket { float price = 1; }"),
                p3("message Ticket { double price = 1; }"),
                Some(&["FIELD_SCALAR_KIND_CHANGED"]),
            ),
            row(
                "int32 to an enum: an enum reads like an int32",
                p3("message Ticket { int32 status = 1; }"),
                p3("message Ticket { Status status = 1; } enum Status { OPEN = 0; USED = 1; }"),
                None,
            ),
            row(
                "scalar to message",
                p3("message Ticket { int32 seat = 1; }"),
                p3("message Ticket { Seat seat = 1; } message Seat { int32 row = 1; }"),
                Some(&["field 1 (seat): type changed from int32 to shop.v1.Seat", "FIELD_KIND_CHANGED"]),
            ),
            row(
                "message field to another message type",
                p3("message Ticket { Seat seat = 1; } message Seat { int32 row = 1; }"),
                p3("message Ticket { Place seat = 1; } message Seat { int32 row = 1; } message Place { int32 row = 1; }"),
                Some(&["message shop.v1.Seat to message shop.v1.Place", "FIELD_NAMED_TYPE_CHANGED"]),
            ),
            row(
                "map value type changed",
                p3("message Ticket { map<string, int32> extras = 2; }"),
                p3("message Ticket { map<string, string> extras = 2; }"),
                Some(&["field 2 (extras): map value type changed from int32 to string"]),
            ),
            row(
                "map to a repeated message",
                p3("message Ticket { map<string, int32> extras = 2; }"),
                p3("message Ticket { repeated Extra extras = 2; } message Extra { string key = 1; int32 value = 2; }"),
                Some(&["FIELD_KIND_CHANGED"]),
            ),
            row(
                "a message removed",
                p3("message Ticket { string id = 1; } message Refund { string id = 1; }"),
                p3("message Ticket { string id = 1; }"),
                Some(&["message shop.v1.Refund was removed", "MESSAGE_REMOVED"]),
            ),
            row(
                "a message added, and the messages reordered",
                p3("message Ticket { string id = 1; }"),
                p3("message Refund { string id = 1; } message Ticket { string id = 1; }"),
                None,
            ),
            row(
                "a nested message removed",
                p3("message Ticket { string id = 1; message Seat { int32 row = 1; } }"),
                p3("message Ticket { string id = 1; }"),
                Some(&["message shop.v1.Ticket.Seat was removed"]),
            ),
            row(
                "a nested message's field changed type",
                p3("message Ticket { Seat seat = 1; message Seat { int32 row = 1; } }"),
                p3("message Ticket { Seat seat = 1; message Seat { string row = 1; } }"),
                Some(&["shop.v1.Ticket.Seat field 1 (row): type changed from int32 to string"]),
            ),
            row(
                "the package changed",
                p3("message Ticket { string id = 1; }"),
                "syntax = \"proto3\";\npackage shop.v2;\nmessage Ticket { string id = 1; }".into(),
                Some(&["package changed from shop.v1 to shop.v2", "PACKAGE_CHANGED"]),
            ),
            row(
                "enum values added, renamed and removed: all compatible for Confluent",
                p3("message Ticket { Status s = 1; } enum Status { OPEN = 0; USED = 1; VOID = 2; }"),
                p3("message Ticket { Status s = 1; } enum Status { OPEN = 0; SCANNED = 1; REFUNDED = 3; }"),
                None,
            ),
            row(
                "an enum removed with the field that used it turned into int32",
                p3("message Ticket { Status s = 1; } enum Status { OPEN = 0; }"),
                p3("message Ticket { int32 s = 1; }"),
                None,
            ),
            row(
                "one field moved into a new oneof",
                p3("message Ticket { string id = 1; string email = 2; }"),
                p3("message Ticket { string id = 1; oneof contact { string email = 2; string phone = 3; } }"),
                None,
            ),
            row(
                "two fields moved into one oneof",
                p3("message Ticket { string email = 1; string phone = 2; }"),
                p3("message Ticket { oneof contact { string email = 1; string phone = 2; } }"),
                Some(&["shop.v1.Ticket oneof contact: fields 1, 2", "MULTIPLE_FIELDS_MOVED_TO_ONEOF"]),
            ),
            row(
                "a field moved into an existing oneof",
                p3("message Ticket { string fax = 3; oneof contact { string email = 1; string phone = 2; } }"),
                p3("message Ticket { oneof contact { string email = 1; string phone = 2; string fax = 3; } }"),
                Some(&["shop.v1.Ticket oneof contact", "FIELD_MOVED_TO_EXISTING_ONEOF"]),
            ),
            row(
                "a field added to a oneof",
                p3("message Ticket { oneof contact { string email = 1; } }"),
                p3("message Ticket { oneof contact { string email = 1; string phone = 2; } }"),
                None,
            ),
            row(
                "a field removed from a oneof",
                p3("message Ticket { oneof contact { string email = 1; string phone = 2; } }"),
                p3("message Ticket { oneof contact { string email = 1; } }"),
                Some(&["shop.v1.Ticket field 2 (phone): removed from oneof contact", "ONEOF_FIELD_REMOVED"]),
            ),
            row(
                "a whole oneof deleted",
                p3("message Ticket { string id = 1; oneof contact { string email = 2; string phone = 3; } }"),
                p3("message Ticket { string id = 1; }"),
                None,
            ),
            row(
                "a oneof renamed while one of its fields changed type: matched by number anyway",
                p3("message Ticket { oneof contact { string email = 1; int32 phone = 2; } }"),
                p3("message Ticket { oneof reach { string email = 1; string phone = 2; } }"),
                Some(&["field 2 (phone): type changed from int32 to string"]),
            ),
            row(
                "a field moved out of its oneof",
                p3("message Ticket { oneof contact { string email = 1; string phone = 2; } }"),
                p3("message Ticket { string email = 1; oneof contact { string phone = 2; } }"),
                None,
            ),
            row(
                "proto2: a required field added",
                p2("message Ticket { optional string id = 1; }"),
                p2("message Ticket { optional string id = 1; required int32 seats = 2; }"),
                Some(&["field 2 (seats): a required field was added", "REQUIRED_FIELD_ADDED"]),
            ),
            row(
                "proto2: a required field removed",
                p2("message Ticket { optional string id = 1; required int32 seats = 2; }"),
                p2("message Ticket { optional string id = 1; }"),
                Some(&["field 2 (seats): a required field was removed", "REQUIRED_FIELD_REMOVED"]),
            ),
            row(
                "proto2: an optional field added and one removed",
                p2("message Ticket { optional string id = 1; optional int32 old = 2; }"),
                p2("message Ticket { optional string id = 1; optional int64 at = 3; }"),
                None,
            ),
            row(
                "a numeric field's label changed from optional to repeated",
                p3("message Ticket { optional int32 seat = 1; }"),
                p3("message Ticket { repeated int32 seat = 1; }"),
                Some(&["label changed from optional to repeated", "FIELD_NUMERIC_LABEL_CHANGED"]),
            ),
            row(
                "a string field's label changed from optional to repeated",
                p3("message Ticket { optional string tag = 1; }"),
                p3("message Ticket { repeated string tag = 1; }"),
                None,
            ),
            row(
                "a message field's label changed from optional to repeated",
                p3("message Ticket { optional Seat seat = 1; } message Seat { int32 row = 1; }"),
                p3("message Ticket { repeated Seat seat = 1; } message Seat { int32 row = 1; }"),
                None,
            ),
            row(
                "proto2 to proto3 with the same numbers: Confluent compares no syntax",
                p2("message Ticket { optional string id = 1; optional int32 seats = 2; }"),
                p3("message Ticket { string id = 1; int32 seats = 2; }"),
                None,
            ),
            row(
                "a type's reference written another way (relative or fully qualified)",
                p3("message Ticket { Seat seat = 1; message Seat { int32 row = 1; } }"),
                p3("message Ticket { .shop.v1.Ticket.Seat seat = 1; message Seat { int32 row = 1; } }"),
                None,
            ),
            row(
                "a recursive message whose recursion is untouched",
                p3("message Node { string name = 1; repeated Node children = 2; }"),
                p3("message Node { string label = 1; repeated Node children = 2; int32 depth = 3; }"),
                None,
            ),
        ];
        assert!(rows.len() >= 25);
        let mut failures = Vec::new();
        for row in &rows {
            let writer = parse(&row.writer);
            let reader = parse(&row.reader);
            let found = ProtobufSchema::incompatibilities(&reader, &writer);
            match row.incompatible {
                None if !found.is_empty() => failures.push(format!("{}: expected compatible, got {found:?}", row.what)),
                Some(_) if found.is_empty() => failures.push(format!("{}: expected incompatible, got none", row.what)),
                Some(needles) => {
                    for needle in needles {
                        if !found.iter().any(|line| line.contains(needle)) {
                            failures.push(format!("{}: no reason contains {needle:?} in {found:?}", row.what));
                        }
                    }
                }
                None => {}
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn compatibility_is_directional() {
        // Adding a required field breaks readers of old data; the other way round, a required field's removal breaks
        // them too (old readers demand it) — proto2's required is the one thing that hurts both ways.
        let old = parse(&p2("message Ticket { optional string id = 1; }"));
        let new = parse(&p2("message Ticket { optional string id = 1; required int32 seats = 2; }"));
        assert_eq!(ProtobufSchema::incompatibilities(&new, &old).len(), 1);
        let backwards = ProtobufSchema::incompatibilities(&old, &new);
        assert!(backwards.iter().any(|l| l.contains("REQUIRED_FIELD_REMOVED")), "{backwards:?}");

        // A message added is compatible one way; read the other way it is a removal.
        let one = parse(&p3("message Ticket { string id = 1; }"));
        let two = parse(&p3("message Ticket { string id = 1; } message Refund { string id = 1; }"));
        assert!(ProtobufSchema::incompatibilities(&two, &one).is_empty());
        assert_eq!(
            ProtobufSchema::incompatibilities(&one, &two),
            ["message shop.v1.Refund was removed: data written with it cannot be read [MESSAGE_REMOVED]"]
        );
    }

    #[test]
    fn the_format_independent_interface_dispatches_to_protobuf() {
        let proto = Parsed::parse(SchemaType::Protobuf, &p3("message Ticket { string id = 1; }"), &[]).unwrap();
        let found = Parsed::incompatibilities(&proto, &proto);
        assert!(found.is_empty(), "{found:?}");
    }

    const SEAT_V1: &str = "syntax = \"proto3\";\npackage venue;\nmessage Seat { int32 row = 1; int32 number = 2; }\n";
    const SEAT_V2_COMPATIBLE: &str =
        "syntax = \"proto3\";\npackage venue;\nmessage Seat { int64 row = 1; int32 number = 2; string zone = 3; }\n";
    const SEAT_V2_BROKEN: &str =
        "syntax = \"proto3\";\npackage venue;\nmessage Seat { string row = 1; int32 number = 2; }\n";

    fn ticket_importing(file: &str) -> String {
        format!(
            "syntax = \"proto3\";\npackage shop.v1;\nimport \"{file}\";\nmessage Ticket {{ string id = 1; venue.Seat seat = 2; }}\n"
        )
    }

    #[test]
    fn imported_types_are_compared_through_their_references() {
        let writer = parse_with(&ticket_importing("venue/seat.proto"), &[("venue/seat.proto", SEAT_V1)]);
        let same = parse_with(&ticket_importing("venue/seat.proto"), &[("venue/seat.proto", SEAT_V1)]);
        assert!(ProtobufSchema::incompatibilities(&same, &writer).is_empty());

        let compatible = parse_with(&ticket_importing("venue/seat.proto"), &[("venue/seat.proto", SEAT_V2_COMPATIBLE)]);
        let found = ProtobufSchema::incompatibilities(&compatible, &writer);
        assert!(found.is_empty(), "{found:?}");

        // The reference moved to another file name with a broken type: the type's field and the field using it.
        let broken = parse_with(&ticket_importing("venue/seat2.proto"), &[("venue/seat2.proto", SEAT_V2_BROKEN)]);
        let found = ProtobufSchema::incompatibilities(&broken, &writer);
        assert!(
            found.iter().any(|l| l.starts_with("venue.Seat field 1 (row): type changed from int32 to string")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|l| l.starts_with("shop.v1.Ticket field 2 (seat)") && l.contains("FIELD_NAMED_TYPE_CHANGED")),
            "{found:?}"
        );

        // An imported type moving to another package keeps its local name: compatible, as Confluent has it.
        let moved = "syntax = \"proto3\";\npackage venue2;\nmessage Seat { int32 row = 1; int32 number = 2; }\n";
        let reader = parse_with(
            "syntax = \"proto3\";\npackage shop.v1;\nimport \"v2.proto\";\nmessage Ticket { string id = 1; venue2.Seat seat = 2; }",
            &[("v2.proto", moved)],
        );
        let found = ProtobufSchema::incompatibilities(&reader, &writer);
        assert!(found.is_empty(), "{found:?}");

        // A type moved from the schema into a reference is a message removed from the schema (Confluent agrees).
        let local = parse(&p3("message Ticket { string id = 1; Seat seat = 2; } message Seat { int32 row = 1; }"));
        let imported = parse_with(
            &p3("import \"seat.proto\";\nmessage Ticket { string id = 1; Seat seat = 2; }"),
            &[("seat.proto", "syntax = \"proto3\";\npackage shop.v1;\nmessage Seat { int32 row = 1; }")],
        );
        let found = ProtobufSchema::incompatibilities(&imported, &local);
        assert!(found.iter().any(|l| l.contains("message shop.v1.Seat was removed")), "{found:?}");
        assert!(ProtobufSchema::incompatibilities(&local, &imported).is_empty(), "moved out of a reference: added");
    }

    #[test]
    fn references_resolve_and_a_missing_import_names_the_file() {
        let schema = parse_with(&ticket_importing("venue/seat.proto"), &[("venue/seat.proto", SEAT_V1)]);
        assert_eq!(schema.record_name().as_deref(), Some("shop.v1.Ticket"));

        // References of references, flattened, each after those it depends on.
        let row = "syntax = \"proto3\";\npackage venue;\nmessage Row { int32 n = 1; }\n";
        let seat = "syntax = \"proto3\";\npackage venue;\nimport \"row.proto\";\nmessage Seat { Row row = 1; }\n";
        parse_with(&ticket_importing("seat.proto"), &[("row.proto", row), ("seat.proto", seat)]);

        let err = ProtobufSchema::parse(&ticket_importing("venue/seat.proto"), &[]).unwrap_err();
        assert!(err.message.contains("venue/seat.proto"), "{}", err.message);
        assert!(err.message.contains("not found"), "{}", err.message);
        assert!(err.message.starts_with("schema.proto:3:"), "the import's line: {}", err.message);

        // A reference that does not parse: its own name and position.
        let err = ProtobufSchema::parse(
            &ticket_importing("venue/seat.proto"),
            &[Dependency { name: "venue/seat.proto".into(), schema: "syntax = \"proto3\";\nmessage {".into() }],
        )
        .unwrap_err();
        assert!(err.message.starts_with("venue/seat.proto:2:"), "{}", err.message);

        // A reference that takes the schema's usual file name does not clash with it.
        let schema = parse_with(
            "syntax = \"proto3\";\nimport \"schema.proto\";\nmessage Outer { Inner inner = 1; }",
            &[("schema.proto", "syntax = \"proto3\";\nmessage Inner { int32 x = 1; }")],
        );
        assert_eq!(schema.record_name().as_deref(), Some("Outer"));
    }

    #[test]
    fn well_known_types_resolve_and_map_to_their_json_forms() {
        let schema =
            parse(&p3("import \"google/protobuf/timestamp.proto\";\nimport \"google/protobuf/wrappers.proto\";\n\
             message Ticket { google.protobuf.Timestamp at = 1; google.protobuf.Int32Value seats = 2; }"));
        let value = json!({"at": "2024-05-01T12:00:00Z", "seats": 3});
        let payload = schema.encode_json(&value).unwrap();
        assert_eq!(schema.decode_json(&payload).unwrap(), value);
    }

    #[test]
    fn parse_errors_carry_file_line_and_column() {
        let err =
            ProtobufSchema::parse("syntax = \"proto3\";\nmessage Ticket {\n  strin id = 1;\n}\n", &[]).unwrap_err();
        assert!(err.message.starts_with("schema.proto:3:"), "{}", err.message);
        let err = ProtobufSchema::parse("syntax = \"proto3\";\nmessage Ticket { Missing m = 1; }\n", &[]).unwrap_err();
        assert!(err.message.contains("schema.proto:2:"), "{}", err.message);
        assert!(err.message.contains("Missing"), "{}", err.message);
        let err =
            ProtobufSchema::parse("syntax = \"proto3\";\nmessage T { int32 a = 1; int32 b = 1; }\n", &[]).unwrap_err();
        assert!(err.message.contains("schema.proto:2:"), "{}", err.message);
        assert!(ProtobufSchema::parse("", &[]).is_ok(), "an empty file is a valid (if useless) proto2 file");
    }

    #[test]
    fn record_name_is_the_first_message() {
        assert_eq!(
            parse(&p3("enum E { E0 = 0; } message B {} message A {}")).record_name().as_deref(),
            Some("shop.v1.B")
        );
        assert_eq!(parse("syntax = \"proto3\"; message Bare {}").record_name().as_deref(), Some("Bare"));
        assert_eq!(parse("syntax = \"proto3\"; enum Only { A = 0; }").record_name(), None);
    }

    #[test]
    fn normalization_forgets_layout_and_order_but_not_meaning() {
        let same = [
            (
                "whitespace and comments",
                "syntax = \"proto3\";\npackage shop.v1;\nmessage Ticket { string id = 1; int32 seats = 2; }",
                "// tickets\nsyntax=\"proto3\";   package shop.v1;\n\n/* the ticket */\nmessage Ticket {\n  string id = 1; // id\n  int32 seats = 2;\n}\n",
            ),
            (
                "field order",
                "syntax = \"proto3\"; message T { string a = 1; int32 b = 2; bool c = 3; }",
                "syntax = \"proto3\"; message T { bool c = 3; string a = 1; int32 b = 2; }",
            ),
            (
                "option order",
                "syntax = \"proto3\"; option java_package = \"x\"; option go_package = \"y\"; message T { int32 a = 1 [deprecated = true, json_name = \"A\"]; }",
                "syntax = \"proto3\"; option go_package = \"y\"; option java_package = \"x\"; message T { int32 a = 1 [json_name = \"A\", deprecated = true]; }",
            ),
            (
                "proto2 spelled out or implied",
                "message T { optional int32 a = 1; }",
                "syntax = \"proto2\"; message T { optional int32 a = 1; }",
            ),
            (
                "type references relative or qualified",
                "syntax = \"proto3\"; package p; message T { Inner i = 1; message Inner {} }",
                "syntax = \"proto3\"; package p; message T { .p.T.Inner i = 1; message Inner {} }",
            ),
            (
                "oneof order and fields in and around oneofs",
                "syntax = \"proto3\"; message T { oneof a { int32 x = 1; } oneof b { int32 y = 2; } string z = 3; }",
                "syntax = \"proto3\"; message T { string z = 3; oneof b { int32 y = 2; } oneof a { int32 x = 1; } }",
            ),
            (
                "enum order and proto3 enum value order",
                "syntax = \"proto3\"; enum A { A0 = 0; A1 = 1; } enum B { B0 = 0; } message T { A a = 1; B b = 2; }",
                "syntax = \"proto3\"; message T { A a = 1; B b = 2; } enum B { B0 = 0; } enum A { A0 = 0; A1 = 1; }",
            ),
            (
                "import order",
                "syntax = \"proto3\"; import \"google/protobuf/timestamp.proto\"; import \"google/protobuf/duration.proto\"; message T { google.protobuf.Timestamp t = 1; google.protobuf.Duration d = 2; }",
                "syntax = \"proto3\"; import \"google/protobuf/duration.proto\"; import \"google/protobuf/timestamp.proto\"; message T { google.protobuf.Timestamp t = 1; google.protobuf.Duration d = 2; }",
            ),
            (
                "reserved ranges and names",
                "syntax = \"proto3\"; message T { reserved 5, 2 to 3; reserved \"b\", \"a\"; int32 x = 1; }",
                "syntax = \"proto3\"; message T { int32 x = 1; reserved \"a\", \"b\"; reserved 2 to 3, 5; }",
            ),
        ];
        for (what, a, b) in same {
            assert_eq!(parse(a).normalized(), parse(b).normalized(), "{what}");
        }

        let different = [
            (
                "a field's type",
                "syntax = \"proto3\"; message T { int32 a = 1; }",
                "syntax = \"proto3\"; message T { int64 a = 1; }",
            ),
            (
                "a field's name",
                "syntax = \"proto3\"; message T { int32 a = 1; }",
                "syntax = \"proto3\"; message T { int32 b = 1; }",
            ),
            (
                "a field's number",
                "syntax = \"proto3\"; message T { int32 a = 1; }",
                "syntax = \"proto3\"; message T { int32 a = 2; }",
            ),
            (
                "the package",
                "syntax = \"proto3\"; package a; message T {}",
                "syntax = \"proto3\"; package b; message T {}",
            ),
            (
                "the syntax",
                "syntax = \"proto2\"; message T { optional int32 a = 1; }",
                "syntax = \"proto3\"; message T { optional int32 a = 1; }",
            ),
            (
                "proto3 optional",
                "syntax = \"proto3\"; message T { int32 a = 1; }",
                "syntax = \"proto3\"; message T { optional int32 a = 1; }",
            ),
            (
                "message order, which message indexes depend on",
                "syntax = \"proto3\"; message A {} message B {}",
                "syntax = \"proto3\"; message B {} message A {}",
            ),
            (
                "nested message order",
                "syntax = \"proto3\"; message T { message A {} message B {} }",
                "syntax = \"proto3\"; message T { message B {} message A {} }",
            ),
            (
                "proto2 enum value order, which picks the default",
                "enum E { A = 1; B = 2; } message T { optional E e = 1; }",
                "enum E { B = 2; A = 1; } message T { optional E e = 1; }",
            ),
            (
                "oneof membership",
                "syntax = \"proto3\"; message T { oneof o { int32 a = 1; int32 b = 2; } }",
                "syntax = \"proto3\"; message T { oneof o { int32 a = 1; } int32 b = 2; }",
            ),
            (
                "an option's value",
                "syntax = \"proto3\"; message T { int32 a = 1 [deprecated = true]; }",
                "syntax = \"proto3\"; message T { int32 a = 1 [deprecated = false]; }",
            ),
        ];
        for (what, a, b) in different {
            assert_ne!(parse(a).normalized(), parse(b).normalized(), "{what}");
        }

        // Custom options live in the normalized form too.
        let custom = |value: &str| {
            parse(&format!(
                "syntax = \"proto3\"; import \"google/protobuf/descriptor.proto\";\n\
                 extend google.protobuf.FieldOptions {{ string pii = 50001; }}\n\
                 message T {{ string email = 1 [(pii) = \"{value}\"]; }}"
            ))
            .normalized()
        };
        assert_eq!(custom("high"), custom("high"));
        assert_ne!(custom("high"), custom("low"));

        // The normalized form is the same through the format-independent interface.
        let text = "syntax = \"proto3\"; message T { int32 a = 1; }";
        assert_eq!(Parsed::parse(SchemaType::Protobuf, text, &[]).unwrap().normalized(), parse(text).normalized());
    }

    const SHOP: &str = "syntax = \"proto3\";
    package shop.v1;
    message TicketOpened {
      string id = 1;
      int32 seats = 2;
      repeated string tags = 3;
      Status status = 4;
      int64 at = 5;
      Seat seat = 6;
      map<string, int32> extras = 7;
      message Seat { int32 row = 1; int32 number = 2; }
      message Note { string text = 1; }
    }
    message TicketClosed {
      string id = 1;
      message Reason { string code = 1; message Detail { string text = 1; } }
    }
    enum Status { OPEN = 0; USED = 1; }
    ";

    #[test]
    fn encoding_is_confluents_payload_byte_for_byte() {
        let schema = parse(SHOP);
        assert_eq!(schema.record_name().as_deref(), Some("shop.v1.TicketOpened"));
        // The first message: a single 0 byte, then the message: field 1 (tag 0x0a) "a", field 2 (tag 0x10) 3.
        let payload = schema.encode_json(&json!({"id": "a", "seats": 3})).unwrap();
        assert_eq!(payload, [0x00, 0x0a, 0x01, b'a', 0x10, 0x03]);
        assert_eq!(schema.decode_json(&payload).unwrap(), json!({"id": "a", "seats": 3}));
        // The long form of [0] (count 1, index 0) is read too.
        assert_eq!(schema.decode_json(&[0x02, 0x00, 0x0a, 0x01, b'a']).unwrap(), json!({"id": "a"}));
        // The empty message: the indexes alone.
        assert_eq!(schema.encode_json(&json!({})).unwrap(), [0x00]);
        assert_eq!(schema.decode_json(&[0x00]).unwrap(), json!({}));
    }

    #[test]
    fn every_field_kind_round_trips_in_canonical_json() {
        let schema = parse(SHOP);
        let value = json!({
            "id": "t-1",
            "seats": 2,
            "tags": ["vip", "late"],
            "status": "USED",
            "at": "1714560000000",
            "seat": {"row": 4, "number": 12},
            "extras": {"parking": 1}
        });
        let payload = schema.encode_json(&value).unwrap();
        assert_eq!(payload[0], 0);
        assert_eq!(schema.decode_json(&payload).unwrap(), value);
        // Proto field names are accepted as well as the JSON names; int64 may come as a number.
        let payload = schema.encode_json(&json!({"id": "t-2", "at": 5})).unwrap();
        assert_eq!(schema.decode_json(&payload).unwrap(), json!({"id": "t-2", "at": "5"}));
    }

    #[test]
    fn nested_and_later_messages_are_named_by_their_indexes() {
        let schema = parse(SHOP);
        // [1]: TicketClosed, the second top-level message: count 1 (zigzag 2), index 1 (zigzag 2).
        let closed = [0x02, 0x02, 0x0a, 0x01, b'x'];
        assert_eq!(schema.decode_json(&closed).unwrap(), json!({"id": "x"}));
        // TicketOpened's nested messages, as the compiler lists them (as protoc does): the map entry of `extras`
        // (its field comes before the nested declarations), Seat, Note. Map entries count, as descriptor-based
        // clients count them.
        // [0, 0]: the map entry: count 2 (zigzag 4), 0, 0; key "k", value 1.
        assert_eq!(
            schema.decode_json(&[0x04, 0x00, 0x00, 0x0a, 0x01, b'k', 0x10, 0x01]).unwrap(),
            json!({"key": "k", "value": 1})
        );
        // [0, 1]: TicketOpened.Seat: count 2, 0, 1 (zigzag 2). Its field 1 is row.
        assert_eq!(schema.decode_json(&[0x04, 0x00, 0x02, 0x08, 0x07]).unwrap(), json!({"row": 7}));
        // [0, 2]: TicketOpened.Note.
        assert_eq!(schema.decode_json(&[0x04, 0x00, 0x04, 0x0a, 0x01, b'n']).unwrap(), json!({"text": "n"}));
        // [1, 0, 0]: TicketClosed.Reason.Detail, three levels down.
        assert_eq!(schema.decode_json(&[0x06, 0x02, 0x00, 0x00, 0x0a, 0x01, b'd']).unwrap(), json!({"text": "d"}));
    }

    #[test]
    fn json_that_does_not_fit_names_the_field() {
        let schema = parse(SHOP);
        let err = schema.encode_json(&json!({"id": "a", "sits": 3})).unwrap_err();
        assert!(err.message.contains("sits"), "{}", err.message);
        let err = schema.encode_json(&json!({"id": "a", "seats": "many"})).unwrap_err();
        assert!(err.message.contains("`seats`"), "{}", err.message);
        let err = schema.encode_json(&json!({"seat": {"row": "front"}})).unwrap_err();
        assert!(err.message.contains("`seat.row`"), "{}", err.message);
        let err = schema.encode_json(&json!({"status": "LOST"})).unwrap_err();
        assert!(err.message.contains("`status`"), "{}", err.message);
        let err = schema.encode_json(&json!({"tags": ["a", 1]})).unwrap_err();
        assert!(err.message.contains("`tags`"), "{}", err.message);
        let err = schema.encode_json(&json!({"seat": {"number": 1, "zone": "b"}})).unwrap_err();
        assert!(err.message.contains("seat.zone"), "{}", err.message);
        let err = schema.encode_json(&json!(["not", "an", "object"])).unwrap_err();
        assert!(err.message.contains("shop.v1.TicketOpened"), "{}", err.message);
        let err = schema.encode_json(&json!({"seats": 3_000_000_000u64})).unwrap_err();
        assert!(err.message.contains("`seats`"), "{}", err.message);

        let lists = parse(&p3("message Order { repeated Item items = 1; } message Item { int32 price = 1; }"));
        let err = lists.encode_json(&json!({"items": [{"price": 1}, {"price": "x"}]})).unwrap_err();
        assert!(err.message.contains("`items[1].price`"), "{}", err.message);

        let no_message = parse("syntax = \"proto3\"; enum Only { A = 0; }");
        assert!(no_message.encode_json(&json!({})).is_err());
        assert!(no_message.decode_json(&[0]).is_err());
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let schema = parse(SHOP);
        let cases: [(&str, &[u8]); 10] = [
            ("empty", &[]),
            ("a truncated count", &[0x80]),
            ("a count of a varint longer than 32 bits", &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            ("a negative count", &[0x01, 0x00]),
            ("a count claiming 2^31-1 indexes", &[0xfe, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00]),
            ("a top-level index out of range", &[0x02, 0x06]),
            ("a nested index out of range", &[0x04, 0x00, 0x0a]),
            ("a negative index", &[0x02, 0x01]),
            ("a truncated message", &[0x00, 0x0a, 0x05, b'a']),
            ("a wire type that is not one", &[0x00, 0x0f]),
        ];
        for (what, payload) in cases {
            assert!(schema.decode_json(payload).is_err(), "{what}: {:?}", schema.decode_json(payload));
        }
        let err = schema.decode_json(&[0x02, 0x06]).unwrap_err();
        assert!(err.message.contains("out of range"), "{}", err.message);
        let err = schema.decode_json(&[0xfe, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00]).unwrap_err();
        assert!(err.message.contains("2147483647"), "{}", err.message);
        // A string field holding bytes that are not UTF-8.
        assert!(schema.decode_json(&[0x00, 0x0a, 0x02, 0xff, 0xfe]).is_err());
    }

    #[test]
    fn deeply_nested_recursive_payloads_are_refused_not_overflowed() {
        let schema = parse(&p3("message Node { Node child = 1; int32 v = 2; }"));
        // 10,000 levels of `child`, built inside out: each level is tag 0x0a, a length, the level below.
        let mut body: Vec<u8> = vec![0x10, 0x01];
        for _ in 0..10_000 {
            let mut level = vec![0x0a];
            let mut len = body.len();
            while len >= 0x80 {
                level.push((len & 0x7f) as u8 | 0x80);
                len >>= 7;
            }
            level.push(len as u8);
            level.extend_from_slice(&body);
            body = level;
        }
        let mut payload = vec![0x00];
        payload.extend_from_slice(&body);
        assert!(schema.decode_json(&payload).is_err());
    }

    /// JSON of any shape, its keys mostly SHOP's field names so that it gets past the first unknown field.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "[A-Za-z0-9:.+-]{0,24}".prop_map(serde_json::Value::from),
            Just(json!("OPEN")),
            Just(json!("2024-05-01T12:00:00Z")),
        ];
        let key = prop_oneof![
            Just("id"),
            Just("seats"),
            Just("tags"),
            Just("status"),
            Just("at"),
            Just("seat"),
            Just("extras"),
            Just("row"),
            Just("number"),
            Just("key"),
            Just("value"),
            Just("other"),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|entries| {
                    serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let schema = parse(SHOP);
            let _ = schema.decode_json(&bytes);
        }

        #[test]
        fn random_bodies_after_valid_indexes_never_panic(
            indexes in prop_oneof![
                Just(vec![0x00u8]),
                Just(vec![0x02, 0x02]),
                Just(vec![0x04, 0x00, 0x00]),
                Just(vec![0x06, 0x02, 0x00, 0x00]),
            ],
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let schema = parse(SHOP);
            let mut payload = indexes;
            payload.extend_from_slice(&body);
            let _ = schema.decode_json(&payload);
        }

        #[test]
        fn random_json_never_panics(value in json_value()) {
            let schema = parse(SHOP);
            if let Ok(payload) = schema.encode_json(&value) {
                prop_assert!(schema.decode_json(&payload).is_ok());
            }
        }

        #[test]
        fn encoded_json_decodes_to_itself(id in "[a-z0-9]{0,12}", seats in any::<i32>(), at in any::<i64>(), row in any::<i32>()) {
            let schema = parse(SHOP);
            let value = json!({"id": id, "seats": seats, "at": at.to_string(), "seat": {"row": row}});
            let payload = schema.encode_json(&value).unwrap();
            // Canonical JSON leaves out fields at their default value (a set message field stays, even if empty).
            let mut expected = serde_json::Map::new();
            if !id.is_empty() {
                expected.insert("id".into(), json!(id));
            }
            if seats != 0 {
                expected.insert("seats".into(), json!(seats));
            }
            if at != 0 {
                expected.insert("at".into(), json!(at.to_string()));
            }
            expected.insert("seat".into(), if row == 0 { json!({}) } else { json!({"row": row}) });
            let expected = serde_json::Value::Object(expected);
            prop_assert_eq!(schema.decode_json(&payload).unwrap(), expected);
        }
    }
}

/// confluent-kafka's Python serializer registers a file as its serialized `FileDescriptorProto` in base64: it parses
/// to the same schema as its `.proto` text.
#[test]
fn a_serialized_descriptor_in_base64_is_the_same_schema_as_its_text() {
    use weir_schema::protobuf::ProtobufSchema;
    // google/protobuf/timestamp.proto as Python's timestamp_pb2.DESCRIPTOR.serialized_pb, base64.
    let serialized = "Ch9nb29nbGUvcHJvdG9idWYvdGltZXN0YW1wLnByb3RvEg9nb29nbGUucHJvdG9idWYiOwoJVGltZXN0YW1wEhgKB3NlY29uZHMYASABKANSB3NlY29uZHMSFAoFbmFub3MYAiABKAVSBW5hbm9zQoUBChNjb20uZ29vZ2xlLnByb3RvYnVmQg5UaW1lc3RhbXBQcm90b1ABWjJnb29nbGUuZ29sYW5nLm9yZy9wcm90b2J1Zi90eXBlcy9rbm93bi90aW1lc3RhbXBwYvgBAaICA0dQQqoCHkdvb2dsZS5Qcm90b2J1Zi5XZWxsS25vd25UeXBlc2IGcHJvdG8z";
    let from_descriptor = ProtobufSchema::parse(serialized, &[]).unwrap();
    assert_eq!(from_descriptor.record_name().as_deref(), Some("google.protobuf.Timestamp"));
    let text = r#"syntax = "proto3"; package google.protobuf;
        message Timestamp { int64 seconds = 1; int32 nanos = 2; }"#;
    let from_text = ProtobufSchema::parse(text, &[]).unwrap();
    assert!(ProtobufSchema::incompatibilities(&from_text, &from_descriptor).is_empty());
    // A Timestamp's JSON form is an RFC 3339 string (proto3's JSON mapping of the well-known type).
    let at = serde_json::json!("2023-11-14T22:13:20.000000005Z");
    let payload = from_descriptor.encode_json(&at).unwrap();
    assert_eq!(from_text.decode_json(&payload).unwrap(), at);
    // Not base64 of a descriptor: an error from the .proto parser, not a panic.
    assert!(ProtobufSchema::parse("bm90IGEgZGVzY3JpcHRvcg", &[]).is_err());
}
