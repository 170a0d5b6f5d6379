//! The JSON Schema format against Confluent's rules: a compatibility table checked in both directions (types, the
//! open, partially open and closed content models, required, enum, limits, arrays, combinators, `$ref`s and
//! recursion), references between schemas, normalization, payloads validated with their error paths, invalid
//! schemas, and hostile payloads and schemas.

// In a module named after the format, so that `cargo test -p weir-schema json` selects these tests.
mod json {
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use weir_schema::formats::{Dependency, Parsed, SchemaType};
    use weir_schema::json::JsonSchema;

    fn parse(text: &str) -> JsonSchema {
        JsonSchema::parse(text, &[]).unwrap_or_else(|err| panic!("{err}\n{text}"))
    }

    fn parse_value(value: &Value) -> JsonSchema {
        parse(&value.to_string())
    }

    fn deps(list: &[(&str, Value)]) -> Vec<Dependency> {
        list.iter().map(|(name, schema)| Dependency { name: (*name).into(), schema: schema.to_string() }).collect()
    }

    fn parse_with(value: &Value, dependencies: &[(&str, Value)]) -> JsonSchema {
        JsonSchema::parse(&value.to_string(), &deps(dependencies)).unwrap_or_else(|err| panic!("{err}\n{value}"))
    }

    fn parse_err(text: &str, dependencies: &[(&str, Value)]) -> String {
        match JsonSchema::parse(text, &deps(dependencies)) {
            Ok(_) => panic!("expected {text} to be refused"),
            Err(err) => err.message,
        }
    }

    /// Asserts what reading `writer`'s data with `reader` gives: compatible (`None`) or reasons, one of which
    /// contains the substring.
    fn check(what: &str, direction: &str, writer: &JsonSchema, reader: &JsonSchema, expected: Option<&str>) {
        let found = JsonSchema::incompatibilities(reader, writer);
        match expected {
            None => assert!(found.is_empty(), "{what} ({direction}): expected compatible, got {found:#?}"),
            Some(reason) => assert!(
                found.iter().any(|line| line.contains(reason)),
                "{what} ({direction}): expected a reason containing {reason:?}, got {found:#?}"
            ),
        }
    }

    /// One row: schemas `a` and `b`; `forward` is the verdict for data written with `a` read with `b` (a reader
    /// upgraded to `b`: BACKWARD compatibility of `b`), `backward` for data written with `b` read with `a`.
    struct Row {
        what: &'static str,
        a: Value,
        b: Value,
        forward: Option<&'static str>,
        backward: Option<&'static str>,
    }

    fn row(
        what: &'static str,
        a: Value,
        b: Value,
        forward: Option<&'static str>,
        backward: Option<&'static str>,
    ) -> Row {
        Row { what, a, b, forward, backward }
    }

    fn object(properties: Value) -> Value {
        json!({"type": "object", "properties": properties})
    }

    fn closed(properties: Value) -> Value {
        json!({"type": "object", "properties": properties, "additionalProperties": false})
    }

    fn table() -> Vec<Row> {
        vec![
            // Types.
            row(
                "integer widened to number",
                object(json!({"age": {"type": "integer"}})),
                object(json!({"age": {"type": "number"}})),
                None,
                Some("#/properties/age: type narrowed from number to integer"),
            ),
            row(
                "null added to a type list",
                json!({"type": "string"}),
                json!({"type": ["string", "null"]}),
                None,
                Some("#/: type narrowed from [null, string] to string"),
            ),
            row(
                "type changed",
                object(json!({"id": {"type": "string"}})),
                object(json!({"id": {"type": "integer"}})),
                Some("#/properties/id: type changed from string to integer"),
                Some("#/properties/id: type changed from integer to string"),
            ),
            row(
                "type given to an unconstrained schema",
                json!({}),
                json!({"type": "string"}),
                Some("type narrowed from any to string"),
                None,
            ),
            row("true and false schemas", json!(false), json!(true), None, Some("accepts nothing")),
            // Strings.
            row(
                "maxLength raised",
                json!({"type": "string", "maxLength": 10}),
                json!({"type": "string", "maxLength": 20}),
                None,
                Some("#/maxLength: maxLength decreased from 20 to 10"),
            ),
            row(
                "maxLength added",
                json!({"type": "string"}),
                json!({"type": "string", "maxLength": 5}),
                Some("#/maxLength: maxLength added"),
                None,
            ),
            row(
                "minLength lowered",
                json!({"type": "string", "minLength": 5}),
                json!({"type": "string", "minLength": 1}),
                None,
                Some("#/minLength: minLength increased from 1 to 5"),
            ),
            row(
                "pattern added",
                json!({"type": "string"}),
                json!({"type": "string", "pattern": "^[a-z]+$"}),
                Some("#/pattern: pattern added"),
                None,
            ),
            row(
                "pattern changed",
                json!({"type": "string", "pattern": "^a"}),
                json!({"type": "string", "pattern": "^b"}),
                Some("pattern changed"),
                Some("pattern changed"),
            ),
            row(
                "format added (draft 7 asserts formats)",
                json!({"type": "string"}),
                json!({"type": "string", "format": "email"}),
                Some("#/format: format added"),
                None,
            ),
            row(
                "string limits under a number type do not matter",
                json!({"type": "integer"}),
                json!({"type": "integer", "maxLength": 3}),
                None,
                None,
            ),
            // Numbers.
            row(
                "maximum lowered",
                json!({"type": "number", "maximum": 100}),
                json!({"type": "number", "maximum": 50}),
                Some("#/maximum: maximum decreased from 100 to 50"),
                None,
            ),
            row(
                "minimum added",
                json!({"type": "number"}),
                json!({"type": "number", "minimum": 0}),
                Some("#/minimum: minimum added"),
                None,
            ),
            row(
                "exclusiveMinimum 0 loosened to minimum 0",
                json!({"type": "number", "exclusiveMinimum": 0}),
                json!({"type": "number", "minimum": 0}),
                None,
                Some("#/exclusiveMinimum: minimum 0 made exclusive"),
            ),
            row(
                "multipleOf divided",
                json!({"type": "number", "multipleOf": 10}),
                json!({"type": "number", "multipleOf": 5}),
                None,
                Some("#/multipleOf: multipleOf changed from 5 to 10"),
            ),
            row(
                "multipleOf 1 on integers",
                json!({"type": "integer"}),
                json!({"type": "integer", "multipleOf": 1}),
                None,
                None,
            ),
            // Objects: the open content model (additionalProperties absent or true).
            row(
                "property added to an open content model",
                object(json!({"a": {"type": "string"}})),
                object(json!({"a": {"type": "string"}, "b": {"type": "string"}})),
                Some("#/properties/b: property added to an open content model"),
                None,
            ),
            row(
                "property with an empty schema added to an open content model",
                object(json!({"a": {"type": "string"}})),
                object(json!({"a": {"type": "string"}, "b": {}})),
                None,
                None,
            ),
            // The closed content model (additionalProperties false).
            row(
                "property removed from a closed content model",
                closed(json!({"a": {"type": "string"}, "b": {"type": "string"}})),
                closed(json!({"a": {"type": "string"}})),
                Some("#/properties/b: property removed from a closed content model"),
                None,
            ),
            row(
                "optional property added to a closed content model, required elsewhere",
                closed(json!({"a": {"type": "string"}})),
                json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                       "required": ["b"], "additionalProperties": false}),
                Some("#/required/b: required property added"),
                Some("#/properties/b: property removed from a closed content model"),
            ),
            row(
                "required property with a default added to a closed content model",
                closed(json!({"a": {"type": "string"}})),
                json!({"type": "object", "properties": {"a": {"type": "string"},
                       "b": {"type": "string", "default": "x"}}, "required": ["b"], "additionalProperties": false}),
                None,
                Some("property removed from a closed content model"),
            ),
            row(
                "property false removed from a closed content model",
                closed(json!({"a": {"type": "string"}, "b": false})),
                closed(json!({"a": {"type": "string"}})),
                None,
                None,
            ),
            row(
                "content model closed",
                object(json!({"a": {"type": "string"}})),
                closed(json!({"a": {"type": "string"}})),
                Some("#/additionalProperties: additionalProperties removed: the content model was open and is closed"),
                None,
            ),
            // The partially open content model (additionalProperties or patternProperties with a schema).
            row(
                "property added, covered by additionalProperties",
                json!({"type": "object", "properties": {"a": {"type": "string"}},
                       "additionalProperties": {"type": "string"}}),
                json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                       "additionalProperties": {"type": "string"}}),
                None,
                None,
            ),
            row(
                "property added, not covered by additionalProperties",
                json!({"type": "object", "properties": {"a": {"type": "string"}},
                       "additionalProperties": {"type": "string"}}),
                json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
                       "additionalProperties": {"type": "string"}}),
                Some("#/properties/b: property added is not covered by the writer's partially open content model"),
                Some("#/properties/b: property removed is not covered by the reader's partially open content model"),
            ),
            row(
                "property added, covered by patternProperties",
                json!({"type": "object", "patternProperties": {"^x-": {"type": "string"}},
                       "additionalProperties": false}),
                json!({"type": "object", "properties": {"x-trace": {"type": "string", "maxLength": 64}},
                       "patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": false}),
                Some("property added is not covered by the writer's partially open content model"),
                None,
            ),
            row(
                "additionalProperties schema narrowed",
                json!({"type": "object", "additionalProperties": {"type": "number"}}),
                json!({"type": "object", "additionalProperties": {"type": "integer"}}),
                Some("#/additionalProperties: type narrowed from number to integer"),
                None,
            ),
            row(
                "additionalProperties schema given to an open model",
                json!({"type": "object"}),
                json!({"type": "object", "additionalProperties": {"type": "string"}}),
                Some("#/additionalProperties: additionalProperties narrowed"),
                None,
            ),
            // Required.
            row(
                "required added to a declared property",
                object(json!({"a": {"type": "string"}})),
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
                Some("#/required/a: required property added"),
                None,
            ),
            // Enum and const.
            row(
                "enum extended",
                json!({"type": "string", "enum": ["red", "green"]}),
                json!({"type": "string", "enum": ["red", "green", "blue"]}),
                None,
                Some("#/enum: enum narrowed: \"blue\" no longer allowed"),
            ),
            row(
                "enum added",
                json!({"type": "string"}),
                json!({"type": "string", "enum": ["a"]}),
                Some("#/enum: enum added"),
                None,
            ),
            row(
                "const changed",
                json!({"const": 1}),
                json!({"const": 2}),
                Some("#/const: const changed: 1 no longer allowed"),
                Some("#/const: const changed: 2 no longer allowed"),
            ),
            // Arrays.
            row(
                "items widened",
                json!({"type": "array", "items": {"type": "integer"}}),
                json!({"type": "array", "items": {"type": "number"}}),
                None,
                Some("#/items: type narrowed from number to integer"),
            ),
            row(
                "items schema added",
                json!({"type": "array"}),
                json!({"type": "array", "items": {"type": "string"}}),
                Some("#/items: items added"),
                None,
            ),
            row(
                "maxItems lowered",
                json!({"type": "array", "maxItems": 10}),
                json!({"type": "array", "maxItems": 5}),
                Some("#/maxItems: maxItems decreased from 10 to 5"),
                None,
            ),
            row(
                "minItems and uniqueItems added",
                json!({"type": "array"}),
                json!({"type": "array", "minItems": 1, "uniqueItems": true}),
                Some("#/uniqueItems: uniqueItems added"),
                None,
            ),
            row(
                "tuple item removed from a closed tuple",
                json!({"type": "array", "items": [{"type": "string"}, {"type": "integer"}], "additionalItems": false}),
                json!({"type": "array", "items": [{"type": "string"}], "additionalItems": false}),
                Some("#/items/1: item removed from a closed content model"),
                None,
            ),
            row(
                "tuple item added to an open tuple",
                json!({"type": "array", "items": [{"type": "string"}]}),
                json!({"type": "array", "items": [{"type": "string"}, {"type": "integer"}]}),
                Some("#/items/1: item added to an open content model"),
                None,
            ),
            row(
                "prefixItems in 2020-12",
                json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array",
                       "prefixItems": [{"type": "integer"}], "items": false}),
                json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array",
                       "prefixItems": [{"type": "number"}, {"type": "string"}], "items": false}),
                None,
                Some("#/prefixItems/1: item removed from a closed content model"),
            ),
            // Combinators.
            row(
                "a type becomes one alternative of oneOf",
                json!({"type": "string"}),
                json!({"oneOf": [{"type": "string"}, {"type": "null"}]}),
                None,
                Some("#/oneOf/1: type changed from null to string"),
            ),
            row(
                "oneOf alternative removed",
                json!({"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}),
                json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
                Some("#/oneOf/2: oneOf alternative 2 of the writer matches none of the reader's oneOf alternatives"),
                None,
            ),
            row(
                "anyOf becomes oneOf",
                json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
                json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
                Some("#/oneOf: combined type changed from anyOf to oneOf"),
                None,
            ),
            row(
                "oneOf of types and a type list",
                json!({"oneOf": [{"type": "string"}, {"type": "null"}]}),
                json!({"type": ["string", "null"]}),
                None,
                Some("#/oneOf: oneOf added: the writer's schema matches none of its alternatives"),
            ),
            row(
                "allOf part added",
                object(json!({"a": {"type": "string"}})),
                json!({"allOf": [object(json!({"a": {"type": "string"}})),
                                 {"properties": {"a": {"maxLength": 3}}}]}),
                Some("#/allOf/1/properties/a/maxLength: maxLength added"),
                None,
            ),
            row("not added", json!({}), json!({"not": {"type": "null"}}), Some("#/not: not added"), None),
            // $ref through definitions.
            row(
                "a definition narrowed",
                json!({"type": "object", "properties": {"age": {"$ref": "#/definitions/n"}},
                       "definitions": {"n": {"type": "number"}}}),
                json!({"type": "object", "properties": {"age": {"$ref": "#/definitions/n"}},
                       "definitions": {"n": {"type": "integer"}}}),
                Some("#/properties/age: type narrowed from number to integer"),
                None,
            ),
            row(
                "a reference replaced by its content",
                json!({"type": "object", "properties": {"age": {"$ref": "#/$defs/n"}},
                       "$defs": {"n": {"type": "integer"}}}),
                object(json!({"age": {"type": "integer"}})),
                None,
                None,
            ),
            row(
                "constraints beside a $ref in 2020-12 apply with it",
                json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": "#/$defs/base",
                       "$defs": {"base": object(json!({"x": {"type": "string"}, "y": {"type": "integer"}}))}}),
                json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": "#/$defs/base",
                       "required": ["x"], "properties": {"y": {"maximum": 9}},
                       "$defs": {"base": object(json!({"x": {"type": "string"}, "y": {"type": "integer"}}))}}),
                Some("#/required/x: required property added"),
                None,
            ),
            row(
                "constraints beside a $ref in draft 7 are ignored, as the validator does",
                json!({"$ref": "#/definitions/base",
                       "definitions": {"base": object(json!({"x": {"type": "string"}}))}}),
                json!({"$ref": "#/definitions/base", "required": ["x"],
                       "definitions": {"base": object(json!({"x": {"type": "string"}}))}}),
                None,
                None,
            ),
            // Annotations do not matter.
            row(
                "title, description and default changed",
                json!({"title": "A", "description": "x", "type": "string", "default": "a"}),
                json!({"title": "B", "description": "y", "type": "string", "default": "b"}),
                None,
                None,
            ),
        ]
    }

    #[test]
    fn json_compatibility_table_both_directions() {
        let rows = table();
        assert!(rows.len() >= 30);
        for row in rows {
            let a = parse_value(&row.a);
            let b = parse_value(&row.b);
            check(row.what, "a written, b reads", &a, &b, row.forward);
            check(row.what, "b written, a reads", &b, &a, row.backward);
            // Every schema reads its own data.
            check(row.what, "a reads itself", &a, &a, None);
            check(row.what, "b reads itself", &b, &b, None);
        }
    }

    #[test]
    fn json_parsed_dispatch_checks_compatibility_and_formats() {
        let writer = Parsed::parse(SchemaType::Json, r#"{"type":"integer"}"#, &[]).unwrap();
        let reader = Parsed::parse(SchemaType::Json, r#"{"type":"number"}"#, &[]).unwrap();
        assert!(Parsed::incompatibilities(&reader, &writer).is_empty());
        assert_eq!(
            Parsed::incompatibilities(&writer, &reader),
            vec!["#/: type narrowed from number to integer".to_string()]
        );
    }

    fn tree(label_type: &str) -> Value {
        json!({
            "title": "Node",
            "type": "object",
            "properties": {
                "label": {"type": label_type},
                "children": {"type": "array", "items": {"$ref": "#"}}
            },
            "additionalProperties": false
        })
    }

    #[test]
    fn json_recursive_schemas_terminate_and_report_deep_changes() {
        let integer = parse_value(&tree("integer"));
        let number = parse_value(&tree("number"));
        assert!(JsonSchema::incompatibilities(&integer, &integer).is_empty());
        assert!(JsonSchema::incompatibilities(&number, &integer).is_empty());
        let found = JsonSchema::incompatibilities(&integer, &number);
        assert_eq!(found, vec!["#/properties/label: type narrowed from number to integer".to_string()]);

        // Mutually recursive definitions, with the change reached only through the cycle.
        let mutual = |leaf: &str| {
            json!({
                "$ref": "#/definitions/a",
                "definitions": {
                    "a": {"type": "object", "properties": {"b": {"$ref": "#/definitions/b"}, "v": {"type": leaf}}},
                    "b": {"type": "object", "properties": {"a": {"$ref": "#/definitions/a"}}}
                }
            })
        };
        let writer = parse_value(&mutual("number"));
        let reader = parse_value(&mutual("integer"));
        let found = JsonSchema::incompatibilities(&reader, &writer);
        assert!(found.iter().any(|l| l == "#/properties/v: type narrowed from number to integer"), "{found:#?}");
        assert!(JsonSchema::incompatibilities(&writer, &reader).is_empty());
    }

    #[test]
    fn json_shared_definitions_do_not_explode() {
        // Each level refers to the next twice: 2^30 paths, compared once per pair of definitions.
        let mut definitions = serde_json::Map::new();
        for i in 0..30 {
            definitions.insert(
                format!("d{i}"),
                json!({"type": "object", "properties": {
                    "l": {"$ref": format!("#/definitions/d{}", i + 1)},
                    "r": {"$ref": format!("#/definitions/d{}", i + 1)}
                }}),
            );
        }
        definitions.insert("d30".into(), json!({"type": "string"}));
        let writer = parse_value(&json!({"$ref": "#/definitions/d0", "definitions": definitions}));
        definitions.insert("d30".into(), json!({"type": "string", "maxLength": 3}));
        let reader = parse_value(&json!({"$ref": "#/definitions/d0", "definitions": definitions}));
        let found = JsonSchema::incompatibilities(&reader, &writer);
        assert!(!found.is_empty());
        assert!(found.len() <= 101, "{} reasons", found.len());
        assert!(found[0].ends_with("/maxLength: maxLength added: 3"), "{found:#?}");
        assert!(JsonSchema::incompatibilities(&writer, &writer).is_empty());
    }

    #[test]
    fn json_deep_reference_chains_are_cut_not_overflowed() {
        // 300 definitions, each the only property of the one before: far deeper than any comparison goes.
        let chain = |leaf: Value| {
            let mut definitions = serde_json::Map::new();
            for i in 0..300 {
                definitions.insert(
                    format!("d{i}"),
                    json!({"type": "object", "properties": {"n": {"$ref": format!("#/definitions/d{}", i + 1)}}}),
                );
            }
            definitions.insert("d300".into(), leaf);
            parse_value(&json!({"$ref": "#/definitions/d0", "definitions": definitions}))
        };
        let writer = chain(json!({"type": "string"}));
        let reader = chain(json!({"type": "string"}));
        let found = JsonSchema::incompatibilities(&reader, &writer);
        assert!(found.iter().any(|l| l.ends_with("the schemas are nested too deeply to compare")), "{found:?}");
        // Payloads validate through the chain: a string 100 levels down, where an object belongs.
        let mut value = json!("leaf");
        for _ in 0..100 {
            value = json!({ "n": value });
        }
        let err = writer.encode_json(&value).unwrap_err().message;
        assert!(err.contains(&format!("#{}: \"leaf\" is not of type \"object\"", "/n".repeat(100))), "{err}");
    }

    fn customer(extra: Value) -> Value {
        let mut properties = json!({"name": {"type": "string"}});
        if let (Some(target), Some(more)) = (properties.as_object_mut(), extra.as_object()) {
            target.extend(more.clone());
        }
        json!({"type": "object", "properties": properties, "required": ["name"]})
    }

    fn order() -> Value {
        json!({
            "title": "Order",
            "type": "object",
            "properties": {"id": {"type": "integer"}, "customer": {"$ref": "customer.json"}},
            "required": ["id", "customer"]
        })
    }

    #[test]
    fn json_references_resolve_validate_and_compare() {
        let v1 = parse_with(&order(), &[("customer.json", customer(json!({"age": {"type": "number"}})))]);
        assert_eq!(v1.record_name().as_deref(), Some("Order"));
        // The dependency's rules apply to payloads.
        assert!(v1.encode_json(&json!({"id": 1, "customer": {"name": "Ada", "age": 36}})).is_ok());
        let err = v1.encode_json(&json!({"id": 1, "customer": {"age": "old"}})).unwrap_err().message;
        assert!(err.contains("#/customer/age"), "{err}");
        assert!(err.contains("#/customer: \"name\" is a required property"), "{err}");

        // A change inside the dependency is found through the $ref, at the referring path.
        let v2 = parse_with(&order(), &[("customer.json", customer(json!({"age": {"type": "integer"}})))]);
        assert_eq!(
            JsonSchema::incompatibilities(&v2, &v1),
            vec!["#/properties/customer/properties/age: type narrowed from number to integer".to_string()]
        );
        assert!(JsonSchema::incompatibilities(&v1, &v2).is_empty());

        // Dependencies refer to one another by relative names, and by absolute URLs with an $id.
        let address = json!({"$id": "https://example.com/address.json", "type": "object",
                             "properties": {"city": {"type": "string"}}});
        let with_address = customer(json!({"address": {"$ref": "https://example.com/address.json"}}));
        let nested =
            parse_with(&order(), &[("https://example.com/address.json", address), ("customer.json", with_address)]);
        let err = nested.encode_json(&json!({"id": 1, "customer": {"name": "A", "address": {"city": 5}}}));
        assert!(err.is_err_and(|e| e.message.contains("#/customer/address/city")));
    }

    #[test]
    fn json_missing_reference_is_invalid_and_named() {
        let err = parse_err(&order().to_string(), &[]);
        assert!(err.contains("customer.json"), "{err}");
        let err = parse_err(
            r##"{"type":"object","properties":{"a":{"$ref":"https://example.com/elsewhere.json#/definitions/x"}}}"##,
            &[("customer.json", customer(json!({})))],
        );
        assert!(err.contains("https://example.com/elsewhere.json"), "{err}");
        assert!(err.contains("customer.json"), "the message lists the references given: {err}");
        let err = parse_err(r##"{"properties":{"a":{"$ref":"#/definitions/missing"}}}"##, &[]);
        assert!(err.contains("missing"), "{err}");
        // A dependency that is not JSON, or not a schema, is named.
        let err = JsonSchema::parse(
            &order().to_string(),
            &[Dependency { name: "customer.json".into(), schema: "{nope".into() }],
        )
        .unwrap_err()
        .message;
        assert!(err.contains("\"customer.json\"") && err.contains("line 1 column 2"), "{err}");
        let err = parse_err(&order().to_string(), &[("customer.json", json!({"type": "nothing"}))]);
        assert!(err.contains("\"customer.json\" is not a valid JSON Schema"), "{err}");
    }

    #[test]
    fn json_invalid_schemas_say_why() {
        let err = parse_err("{\n  \"type\": \"string\",\n}", &[]);
        assert!(err.contains("not valid JSON") && err.contains("line 3 column 1"), "{err}");
        let err = parse_err(r#"{"type": 5}"#, &[]);
        assert!(err.contains("not a valid JSON Schema: at #/type: 5 is not valid under any of"), "{err}");
        let err = parse_err(r#"{"minLength": -1}"#, &[]);
        assert!(err.contains("#/minLength"), "{err}");
        let err = parse_err(r#"{"pattern": "(unclosed"}"#, &[]);
        assert!(err.contains("pattern") || err.contains("regex"), "{err}");
        let err = parse_err("[1, 2]", &[]);
        assert!(err.contains("an object or a boolean"), "{err}");
        let err = parse_err(r#"{"$schema": "https://example.com/custom"}"#, &[]);
        assert!(err.contains("unsupported $schema"), "{err}");
        // Draft 4's boolean exclusiveMaximum is only valid in draft 4.
        let draft4 = r#"{"$schema":"http://json-schema.org/draft-04/schema#","maximum":5,"exclusiveMaximum":true}"#;
        assert!(JsonSchema::parse(draft4, &[]).is_ok());
        assert!(JsonSchema::parse(r#"{"maximum":5,"exclusiveMaximum":true}"#, &[]).is_err());
        assert!(JsonSchema::parse("true", &[]).is_ok());
    }

    #[test]
    fn json_normalization_ignores_layout_not_content() {
        let a = parse(r#"{"type":"object","properties":{"b":{"type":"integer","maximum":10},"a":{"type":"string"}}}"#);
        let b = parse(
            "{\n  \"properties\": {\n    \"a\": {\"type\": \"string\"},\n    \"b\": {\"maximum\": 10.0, \"type\": \"integer\"}\n  },\n  \"type\": \"object\"\n}",
        );
        assert_eq!(a.normalized(), b.normalized());
        assert_eq!(
            a.normalized(),
            r#"{"properties":{"a":{"type":"string"},"b":{"maximum":10,"type":"integer"}},"type":"object"}"#
        );
        // Any difference in content stays one: a value, a key, the order of an enum or a type list.
        let different = [
            r#"{"type":"object","properties":{"b":{"type":"integer","maximum":11},"a":{"type":"string"}}}"#,
            r#"{"type":"object","properties":{"c":{"type":"integer","maximum":10},"a":{"type":"string"}}}"#,
            r#"{"type":"object","properties":{"b":{"type":"number","maximum":10},"a":{"type":"string"}}}"#,
        ];
        for text in different {
            assert_ne!(parse(text).normalized(), a.normalized(), "{text}");
        }
        assert_ne!(parse(r#"{"enum":["x","y"]}"#).normalized(), parse(r#"{"enum":["y","x"]}"#).normalized());
        // The normalized text parses to the same schema.
        let again = parse(&a.normalized());
        assert_eq!(again.normalized(), a.normalized());
    }

    fn person() -> JsonSchema {
        parse_value(&json!({
            "title": "Person",
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "age": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["name"],
            "additionalProperties": false
        }))
    }

    #[test]
    fn json_encode_validates_and_writes_compact_json() {
        let schema = person();
        let value = json!({"name": "Ada", "age": 36, "tags": ["x"]});
        let bytes = schema.encode_json(&value).unwrap();
        assert_eq!(bytes, serde_json::to_vec(&value).unwrap());
        assert_eq!(schema.decode_json(&bytes).unwrap(), value);
        assert_eq!(schema.record_name().as_deref(), Some("Person"));
        assert_eq!(parse("{}").record_name(), None);

        // Every error, each with its instance path.
        let err = schema.encode_json(&json!({"name": "", "age": -1, "tags": ["ok", 7], "extra": true})).unwrap_err();
        for path in ["#/name", "#/age", "#/tags/1", "#: Additional properties are not allowed ('extra'"] {
            assert!(err.message.contains(path), "{path} in {}", err.message);
        }
        let err = schema.encode_json(&json!({"age": 1})).unwrap_err();
        assert!(err.message.contains("#: \"name\" is a required property"), "{}", err.message);
        let err = schema.encode_json(&json!([1])).unwrap_err();
        assert!(err.message.contains("#: [1] is not of type \"object\""), "{}", err.message);
    }

    #[test]
    fn json_decode_refuses_bad_payloads_with_reasons() {
        let schema = person();
        let err = schema.decode_json(b"{\"name\": \"Ada\", \"age\": 1.5}").unwrap_err();
        assert!(err.message.contains("#/age"), "{}", err.message);
        let err = schema.decode_json(b"{\"name\": \"Ada\"} trailing").unwrap_err();
        assert!(err.message.contains("not valid JSON") && err.message.contains("column"), "{}", err.message);
        let err = schema.decode_json(b"{\"name\": \"\xff\"}").unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
        assert!(schema.decode_json(b"").is_err());
        // Deep nesting is refused by the parser, not by the stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(schema.decode_json(deep.as_bytes()).is_err());
        // Many errors are counted, not all spelled out.
        let many = parse(r#"{"type":"array","items":{"type":"string"}}"#);
        let err = many.decode_json(serde_json::to_string(&(0..100).collect::<Vec<_>>()).unwrap().as_bytes());
        assert!(err.is_err_and(|e| e.message.contains("and 80 more")));
    }

    #[test]
    fn json_ref_siblings_follow_the_draft() {
        let draft7 =
            parse(r##"{"$ref": "#/definitions/s", "maxLength": 2, "definitions": {"s": {"type": "string"}}}"##);
        assert!(draft7.encode_json(&json!("long")).is_ok());
        let draft2020 = parse(
            r##"{"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": "#/$defs/s", "maxLength": 2,
                 "$defs": {"s": {"type": "string"}}}"##,
        );
        assert!(draft2020.encode_json(&json!("long")).is_err());
        assert!(draft2020.encode_json(&json!(5)).is_err());
        let plain = parse(r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "string"}"#);
        assert_eq!(
            JsonSchema::incompatibilities(&draft2020, &plain),
            vec!["#/maxLength: maxLength added: 2".to_string()]
        );
        assert!(JsonSchema::incompatibilities(&plain, &draft2020).is_empty());
    }

    #[test]
    fn json_formats_are_asserted_in_draft_7() {
        let schema = parse(r#"{"type":"string","format":"date"}"#);
        assert!(schema.encode_json(&json!("2024-02-29")).is_ok());
        assert!(schema.encode_json(&json!("yesterday")).is_err());
    }

    /// Small schemas made of the keywords the comparison knows, nested a few levels.
    fn schema_strategy() -> impl Strategy<Value = Value> {
        schemas(true)
    }

    /// With `confluent_only`, also the constructs whose Confluent rules are knowingly looser than validation:
    /// `oneOf` (its "exactly one" is not modeled) and a required property with a `default` (compatible by
    /// Confluent's rule, though a value without it fails validation).
    fn schemas(confluent_only: bool) -> impl Strategy<Value = Value> {
        let one_of = confluent_only;
        let leaf = prop_oneof![
            Just(json!(true)),
            Just(json!(false)),
            Just(json!({})),
            prop::sample::select(vec!["string", "integer", "number", "boolean", "null", "object", "array"])
                .prop_map(|t| json!({"type": t})),
            (0u32..20).prop_map(|n| json!({"type": "string", "maxLength": n})),
            (-5i64..5).prop_map(|n| json!({"type": "number", "minimum": n, "exclusiveMaximum": n + 10})),
            prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..3).prop_map(|v| json!({"enum": v})),
            Just(json!({"type": "string", "pattern": "^[a-z]+$", "format": "email"})),
            Just(json!({"$ref": "#"})),
            Just(json!({"$ref": "#/definitions/d"})),
            (1u32..4).prop_map(|n| json!({"type": "integer", "multipleOf": n})),
            prop::sample::select(vec![0.5f64, 2.0, 2.5]).prop_map(|n| json!({"multipleOf": n, "minimum": -3})),
            prop::sample::select(vec!["a", "b"]).prop_map(|c| json!({"const": c})),
            (0u32..3, 0u32..3)
                .prop_map(|(a, b)| json!({"type": "array", "minItems": a, "maxItems": a + b, "uniqueItems": b == 1})),
            (0u32..3).prop_map(move |n| {
                let b = if one_of { json!({"default": 1}) } else { json!({}) };
                json!({"minProperties": n, "required": ["b"], "properties": {"b": b}})
            }),
            Just(json!({"type": "object", "dependencies": {"a": ["b"]}, "propertyNames": {"maxLength": 1}})),
            Just(json!({"if": {"type": "string"}, "then": {"minLength": 1}, "else": {"type": "integer"}})),
            Just(json!({"type": ["string", "null"], "minLength": 2})),
            Just(json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": "#/definitions/d",
                        "maxLength": 3, "minimum": 1})),
        ];
        leaf.prop_recursive(4, 24, 4, move |inner| {
            prop_oneof![
                (
                    prop::collection::btree_map(prop::sample::select(vec!["a", "b", "x-c"]), inner.clone(), 0..3),
                    prop::option::of(inner.clone()),
                    any::<bool>()
                )
                    .prop_map(|(properties, additional, require)| {
                        let mut schema = json!({"type": "object", "properties": properties});
                        if let Some(additional) = additional {
                            schema["additionalProperties"] = additional;
                        }
                        if require {
                            schema["required"] = json!(["a"]);
                        }
                        schema
                    }),
                (inner.clone(), prop::option::of(0u32..4)).prop_map(|(items, max)| {
                    let mut schema = json!({"type": "array", "items": items});
                    if let Some(max) = max {
                        schema["maxItems"] = json!(max);
                    }
                    schema
                }),
                prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"items": v, "additionalItems": false})),
                prop::collection::vec(inner.clone(), 1..3).prop_map(move |v| if one_of {
                    json!({"oneOf": v})
                } else {
                    json!({"anyOf": v})
                }),
                prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"anyOf": v})),
                prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({"allOf": v})),
                inner.clone().prop_map(|v| json!({"not": v})),
                inner.clone().prop_map(|v| json!({"patternProperties": {"^x-": v}})),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| json!({"type": "object",
                    "properties": {"a": a}, "patternProperties": {"^x-": b}, "additionalProperties": false})),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| json!({"type": "array", "prefixItems": [a], "items": b,
                    "$schema": "https://json-schema.org/draft/2020-12/schema"})),
                inner.clone().prop_map(|v| json!({"type": "array", "contains": v, "minContains": 1})),
                inner.clone().prop_map(|v| json!({"dependencies": {"a": v}})),
            ]
        })
    }

    fn with_definitions(schema: Value, definition: Value) -> Value {
        match schema {
            Value::Object(mut object) => {
                object.insert("definitions".into(), json!({"d": definition}));
                Value::Object(object)
            }
            // A boolean root cannot hold definitions; wrap it.
            other => json!({"allOf": [other], "definitions": {"d": definition}}),
        }
    }

    /// JSON values over the same small vocabulary as the generated schemas.
    fn value_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-20i64..20).prop_map(Value::from),
            prop::sample::select(vec![-2.5f64, 0.5, 7.25, 1e3]).prop_map(Value::from),
            prop::sample::select(vec!["", "a", "b", "c", "abc", "Abc", "x@y.org", "a-very-long-string-value"])
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(prop::sample::select(vec!["a", "b", "x-c", "d"]), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The comparison is sound: when it finds nothing, every value the writer accepts, the reader accepts
        /// (apart from the constructs `schemas(true)` adds).
        #[test]
        fn json_compatible_means_the_reader_accepts_the_writers_values(
            a in schemas(false), b in schemas(false), definition in schemas(false),
            values in prop::collection::vec(value_strategy(), 16),
        ) {
            let a = with_definitions(a, definition.clone());
            let b = with_definitions(b, definition);
            let (Ok(writer), Ok(reader)) = (JsonSchema::parse(&a.to_string(), &[]), JsonSchema::parse(&b.to_string(), &[])) else {
                return Ok(());
            };
            if JsonSchema::incompatibilities(&reader, &writer).is_empty() {
                for value in &values {
                    if writer.encode_json(value).is_ok() {
                        prop_assert!(reader.encode_json(value).is_ok(), "{value} passes {a} but not {b}");
                    }
                }
            }
        }

        #[test]
        fn json_random_bytes_never_panic_decoding(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let schema = person();
            let _ = schema.decode_json(&bytes);
            let _ = JsonSchema::parse(&String::from_utf8_lossy(&bytes), &[]);
        }

        #[test]
        fn json_random_json_text_never_panics(text in "[\\[\\]{}\",:0-9a-z\\\\ .eE+-]{0,64}") {
            let schema = person();
            let _ = schema.decode_json(text.as_bytes());
            let _ = JsonSchema::parse(&text, &[]);
        }

        #[test]
        fn json_hostile_ids_and_refs_never_panic(
            id in "[a-z:/#%.?\\[\\]@ ~-]{0,24}",
            reference in "[a-z:/#%.?\\[\\]@ ~-]{0,24}",
            name in "[a-z:/#%.?@ -]{0,16}",
        ) {
            let schema = json!({"$id": id, "properties": {"a": {"$ref": reference}}, "definitions": {"x": {"$id": reference}}});
            let dependencies = [Dependency { name, schema: "{\"type\":\"string\"}".into() }];
            if let Ok(parsed) = JsonSchema::parse(&schema.to_string(), &dependencies) {
                let _ = JsonSchema::incompatibilities(&parsed, &parsed);
                let _ = parsed.decode_json(b"{\"a\": 1}");
            }
        }

        #[test]
        fn json_generated_schemas_read_their_own_data(
            a in schema_strategy(), b in schema_strategy(), definition in schema_strategy(),
        ) {
            let a = with_definitions(a, definition.clone());
            let b = with_definitions(b, definition);
            let (Ok(a), Ok(b)) = (JsonSchema::parse(&a.to_string(), &[]), JsonSchema::parse(&b.to_string(), &[])) else {
                return Ok(());
            };
            prop_assert!(JsonSchema::incompatibilities(&a, &a).is_empty(), "{:?}", JsonSchema::incompatibilities(&a, &a));
            // Any pair compares without panicking, and reading with `{}` always works.
            let _ = JsonSchema::incompatibilities(&a, &b);
            let anything = parse("{}");
            prop_assert!(JsonSchema::incompatibilities(&anything, &a).is_empty());
            let nothing = parse("false");
            prop_assert!(JsonSchema::incompatibilities(&a, &nothing).is_empty());
        }
    }
}
