//! JSON Schema as a registry format: a schema is parsed and compiled with the `jsonschema` crate (drafts 4, 6, 7,
//! 2019-09 and 2020-12, draft 7 when `$schema` is absent, as Confluent's registry does), its Confluent references
//! are registered as resources so `"$ref": "customer.json"` resolves without any network or file access, payloads
//! are validated against it (Confluent's JSON Schema records carry plain JSON text after the 5-byte header), and
//! two versions are compared by Confluent's compatibility rules — the open, partially open and closed content
//! models of its `SchemaDiff` — walked over the schemas' JSON with `$ref`s resolved through the same registry.
//!
//! Where Confluent's rules follow from its Java object model rather than from what data a schema accepts (a schema
//! without `type` counts as whichever kind its keywords suggest, a `pattern`-matched property is looked up in the
//! first matching pattern only, `enum` beside `type` is a different "class", `anyOf` branches are paired one to
//! one), the comparison here answers the question those rules stand for: can every value the writer's schema
//! accepts be read with the reader's schema. Two of Confluent's rules are kept although validation is stricter: a
//! property made required with a `default` is compatible, and a value is taken to fit a reader's `oneOf` when it
//! fits one alternative (that it may fit two is not checked).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;

use jsonschema::{Draft, Registry, Uri, Validator};
use serde_json::{Map, Value};

use crate::formats::{Dependency, InvalidSchema, PayloadError};

/// Validation errors reported for one payload; past this the message only counts the rest (a hostile payload could
/// otherwise make a megabyte of error text).
const MAX_PAYLOAD_ERRORS: usize = 20;
/// One validation message is cut here: messages quote the offending value, which may be large.
const MAX_ERROR_CHARS: usize = 300;
/// Incompatibilities kept per compared pair of subschemas: the paths through a shared definition multiply, and one
/// answer needs only the first reasons.
const MAX_DIFFS: usize = 100;
/// Nested comparisons, following `$ref`s: deeper than this the schemas are reported as too deep to compare rather
/// than risking the stack (a chain of thousands of definitions each referring to the next is valid JSON Schema).
const MAX_DEPTH: usize = 96;
/// Pairs of subschemas compared in one check, bounding the work a pathological pair of schemas can cause.
const MAX_STEPS: usize = 50_000;
/// `$ref`s followed in a row before a subschema that is only references is taken as a loop.
const MAX_REF_CHAIN: usize = 32;

/// What a loop of `$ref`s amounts to: it accepts everything.
static TRUE_SCHEMA: Value = Value::Bool(true);

/// A parsed and compiled JSON Schema, with the references it was parsed with.
#[derive(Debug, Clone)]
pub struct JsonSchema {
    schema: Arc<Value>,
    draft: Draft,
    /// The base URI of the root: its `$id`, or the `jsonschema` crate's default `json-schema:///`.
    base: Arc<Uri<String>>,
    /// The root and every dependency, under the URIs `$ref`s reach them by.
    registry: Arc<Registry<'static>>,
    validator: Arc<Validator>,
    normalized: String,
}

impl JsonSchema {
    /// Parses `text` as a JSON Schema whose `$ref`s may name the given dependencies (Confluent's references: each
    /// registered under its name, resolved like a `$ref` against the root's base URI).
    pub fn parse(text: &str, dependencies: &[Dependency]) -> Result<Self, InvalidSchema> {
        let schema: Value =
            serde_json::from_str(text).map_err(|e| InvalidSchema::new(format!("the schema is not valid JSON: {e}")))?;
        let draft = draft_of(&schema, "the schema")?;
        let base = Arc::new(base_uri_of(&schema, draft)?);

        let mut resources = Vec::with_capacity(dependencies.len() + 1);
        for dependency in dependencies {
            let value: Value = serde_json::from_str(&dependency.schema)
                .map_err(|e| InvalidSchema::new(format!("reference {:?} is not valid JSON: {e}", dependency.name)))?;
            let dep_draft = draft_of(&value, &format!("reference {:?}", dependency.name))?;
            let uri = jsonschema::uri::resolve_against(&base.borrow(), &dependency.name).map_err(|e| {
                InvalidSchema::new(format!("reference name {:?} is not a URI reference: {e}", dependency.name))
            })?;
            resources.push((dependency.name.as_str(), uri, dep_draft, value));
        }

        // Compilation is the library's; a panic inside it (it has internal assertions about the URIs it builds from
        // `$id`s) must not take down the registry that is parsing a schema a client sent.
        let compiled = catch_unwind(AssertUnwindSafe(|| compile(&schema, draft, &base, &resources)));
        let (registry, validator) = match compiled {
            Ok(result) => result?,
            Err(_) => return Err(InvalidSchema::new("the JSON Schema compiler failed on this schema")),
        };
        let normalized = canonical_text(&schema);
        Ok(JsonSchema {
            schema: Arc::new(schema),
            draft,
            base,
            registry: Arc::new(registry),
            validator: Arc::new(validator),
            normalized,
        })
    }

    /// The schema as canonical JSON: keys sorted, no whitespace, integral numbers without a fraction, so one schema
    /// written two ways gets one text (and one id) while any difference in content stays a difference.
    pub fn normalized(&self) -> String {
        self.normalized.clone()
    }

    /// The root's `title`, the name Confluent's RecordNameStrategy gives a JSON Schema record.
    pub fn record_name(&self) -> Option<String> {
        self.schema.get("title").and_then(Value::as_str).map(str::to_string)
    }

    /// Why a value valid under `writer` may be invalid under `reader`, one sentence each naming the schema path
    /// (`#/properties/age: type narrowed from number to integer`); empty when every such value is readable.
    pub fn incompatibilities(reader: &Self, writer: &Self) -> Vec<String> {
        let mut comparer = Comparer::default();
        let diffs = comparer.compare(writer.root(), reader.root(), 0);
        let mut seen = HashSet::new();
        let mut out: Vec<String> = diffs.iter().map(Diff::render).filter(|line| seen.insert(line.clone())).collect();
        if comparer.truncated {
            out.push(format!("... (only the first {MAX_DIFFS} reasons of a subschema are listed)"));
        }
        out
    }

    /// Validates `value` and gives its compact JSON text, the payload after Confluent's header.
    pub fn encode_json(&self, value: &Value) -> Result<Vec<u8>, PayloadError> {
        self.validate(value)?;
        serde_json::to_vec(value).map_err(|e| PayloadError::new(format!("the value cannot be written as JSON: {e}")))
    }

    /// Reads a payload (after Confluent's header) as JSON and validates it. The bytes come from the network: any
    /// content gives a value or an error.
    pub fn decode_json(&self, payload: &[u8]) -> Result<Value, PayloadError> {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| PayloadError::new(format!("the payload is not valid JSON: {e}")))?;
        self.validate(&value)?;
        Ok(value)
    }

    /// Every validation error, each with the instance path it is about.
    fn validate(&self, value: &Value) -> Result<(), PayloadError> {
        let mut messages = Vec::new();
        let mut total = 0usize;
        for error in self.validator.iter_errors(value) {
            total += 1;
            if messages.len() < MAX_PAYLOAD_ERRORS {
                let message = truncate_chars(&error.to_string(), MAX_ERROR_CHARS);
                messages.push(format!("{}: {message}", instance_pointer(error.instance_path().as_str())));
            }
        }
        if messages.is_empty() {
            return Ok(());
        }
        let mut text = format!("the value does not match the schema: {}", messages.join("; "));
        if total > messages.len() {
            let _ = write!(text, "; and {} more", total - messages.len());
        }
        Err(PayloadError::new(text))
    }

    /// The root as the registry holds it, so that a `$ref` back to the root (`"#"`) meets the same value and a
    /// recursive schema's cycle is seen at once.
    fn root(&self) -> Node<'_> {
        let registered = self.registry.resolver((*self.base).clone()).lookup("#").ok();
        let value = registered.map_or(&*self.schema, |resolved| resolved.contents());
        Node { value, base: self.base.clone(), draft: self.draft, registry: &self.registry }
    }
}

/// Builds the registry (root and dependencies) and compiles the root and each dependency with it, offline: a
/// `$ref` that is neither local nor a dependency fails here, naming the URI it resolved to.
fn compile(
    schema: &Value,
    draft: Draft,
    base: &Uri<String>,
    dependencies: &[(&str, Uri<String>, Draft, Value)],
) -> Result<(Registry<'static>, Validator), InvalidSchema> {
    let unresolvable = |e: jsonschema::ReferencingError| {
        let names: Vec<&str> = dependencies.iter().map(|(name, ..)| *name).collect();
        let known = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        InvalidSchema::new(format!(
            "a $ref cannot be resolved: {e} (only local references and the schema's references resolve; references \
             given: {known})"
        ))
    };
    // The root is registered too, under its base URI, so local `#/...` references resolve when compatibility is
    // checked; meta-schemas of the known drafts are built in, nothing is retrieved.
    let mut builder = Registry::new()
        .retrieve_known_draft_meta_schemas(false)
        .add(base.as_str(), draft.create_resource(schema.clone()))
        .map_err(unresolvable)?;
    for (_, uri, dep_draft, value) in dependencies {
        builder = builder.add(uri.as_str(), dep_draft.create_resource(value.clone())).map_err(unresolvable)?;
    }
    let registry: Registry<'static> = builder.prepare().map_err(unresolvable)?;

    for (name, uri, dep_draft, value) in dependencies {
        jsonschema::options()
            .with_draft(*dep_draft)
            .with_registry(&registry)
            .with_base_uri(uri.as_str())
            .offline()
            .build(value)
            .map_err(|e| {
                InvalidSchema::new(format!(
                    "reference {name:?} is not a valid JSON Schema: at {}: {e}",
                    instance_pointer(e.instance_path().as_str())
                ))
            })?;
    }
    let validator =
        jsonschema::options().with_draft(draft).with_registry(&registry).offline().build(schema).map_err(|e| {
            InvalidSchema::new(format!(
                "not a valid JSON Schema: at {}: {e}",
                instance_pointer(e.instance_path().as_str())
            ))
        })?;
    Ok((registry, validator))
}

/// The draft a schema is written in: its `$schema`, or draft 7 (Confluent's default) without one.
fn draft_of(schema: &Value, what: &str) -> Result<Draft, InvalidSchema> {
    match schema {
        Value::Bool(_) => return Ok(Draft::Draft7),
        Value::Object(_) => {}
        other => {
            return Err(InvalidSchema::new(format!(
                "{what} is not a JSON Schema: a schema is an object or a boolean, not {}",
                json_kind(other)
            )))
        }
    }
    match schema.get("$schema") {
        None => Ok(Draft::Draft7),
        Some(Value::String(uri)) => match Draft::from_schema_uri(uri) {
            Draft::Unknown => Err(InvalidSchema::new(format!(
                "{what} names an unsupported $schema {uri:?} (supported: drafts 4, 6, 7, 2019-09 and 2020-12)"
            ))),
            draft => Ok(draft),
        },
        Some(other) => Err(InvalidSchema::new(format!("{what} has a $schema that is not a string: {other}"))),
    }
}

/// The root's base URI as the `jsonschema` crate computes it: its `$id` (`id` in draft 4; in drafts before 2019-09
/// an id beside `$ref`, or one that is only a fragment, is not a base), else `json-schema:///`.
fn base_uri_of(schema: &Value, draft: Draft) -> Result<Uri<String>, InvalidSchema> {
    let id = id_of(schema, draft).map(|id| id.trim_end_matches('#')).filter(|id| !id.is_empty());
    jsonschema::uri::from_str(id.unwrap_or("json-schema:///"))
        .map_err(|e| InvalidSchema::new(format!("the schema's $id is not a URI: {e}")))
}

fn id_of(schema: &Value, draft: Draft) -> Option<&str> {
    let object = schema.as_object()?;
    let legacy = !matches!(draft, Draft::Draft201909 | Draft::Draft202012);
    if legacy && object.contains_key("$ref") {
        return None;
    }
    let keyword = if draft == Draft::Draft4 { "id" } else { "$id" };
    let id = object.get(keyword)?.as_str()?;
    if legacy && id.starts_with('#') {
        return None;
    }
    Some(id)
}

/// Canonical JSON (the `jsonschema` crate's canonical serializer); serde_json's own text if that ever fails.
fn canonical_text(value: &Value) -> String {
    jsonschema::canonical::json::to_string(value).unwrap_or_else(|_| value.to_string())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An instance location as a URI-fragment pointer, `#` for the root.
fn instance_pointer(pointer: &str) -> String {
    format!("#{pointer}")
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// A JSON pointer segment: `~` and `/` escaped as RFC 6901 says.
fn escape_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

// ---------------------------------------------------------------------------------------------------------------
// Compatibility
// ---------------------------------------------------------------------------------------------------------------

/// One incompatibility: the schema path it is at (relative to the pair being compared, `/`-separated, escaped) and
/// what changed.
#[derive(Debug, Clone)]
struct Diff {
    path: String,
    message: String,
}

impl Diff {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Diff {
        Diff { path: path.into(), message: message.into() }
    }

    fn render(&self) -> String {
        let path = if self.path.is_empty() { "/" } else { &self.path };
        format!("#{path}: {}", self.message)
    }
}

/// A subschema with what is needed to resolve the `$ref`s inside it.
#[derive(Clone)]
struct Node<'a> {
    value: &'a Value,
    base: Arc<Uri<String>>,
    draft: Draft,
    registry: &'a Registry<'static>,
}

impl<'a> Node<'a> {
    /// A subschema of this one; an `$id` in it rebases the references below it, a `$schema` changes the draft (as
    /// the validator does).
    fn child(&self, value: &'a Value) -> Node<'a> {
        let draft = match self.draft.detect(value) {
            Draft::Unknown => self.draft,
            draft => draft,
        };
        let base = match id_of(value, draft) {
            Some(id) => self.registry.resolve_uri(&self.base.borrow(), id).unwrap_or_else(|_| self.base.clone()),
            None => self.base.clone(),
        };
        Node { value, base, draft, registry: self.registry }
    }

    fn get(&self, keyword: &str) -> Option<&'a Value> {
        self.value.as_object().and_then(|object| object.get(keyword))
    }

    fn sub(&self, keyword: &str) -> Option<Node<'a>> {
        self.get(keyword).map(|value| self.child(value))
    }

    fn map(&self, keyword: &str) -> Option<&'a Map<String, Value>> {
        self.get(keyword).and_then(Value::as_object)
    }

    fn list(&self, keyword: &str) -> Option<&'a Vec<Value>> {
        self.get(keyword).and_then(Value::as_array)
    }

    fn number(&self, keyword: &str) -> Option<f64> {
        self.get(keyword).and_then(Value::as_f64)
    }

    /// Whether this is a 2019-09/2020-12 schema with constraints beside its `$ref`: those drafts apply both (the
    /// `$ref` is then compared like a part of an `allOf`), earlier drafts ignore the siblings.
    fn ref_with_siblings(&self) -> bool {
        matches!(self.draft, Draft::Draft201909 | Draft::Draft202012)
            && self.get("$ref").is_some()
            && !is_unconstrained_except(self.value, &["$ref"])
    }

    /// The schema this one's `$ref` names.
    fn ref_target(&self) -> Result<Node<'a>, String> {
        let reference = self.get("$ref").and_then(Value::as_str).unwrap_or("#");
        let resolved = self
            .registry
            .resolver((*self.base).clone())
            .lookup(reference)
            .map_err(|e| format!("$ref {reference:?} cannot be resolved: {e}"))?;
        let (value, resolver, draft) = resolved.into_inner();
        Ok(Node { value, base: resolver.base_uri(), draft, registry: self.registry })
    }

    /// Follows `$ref`s to the schema they name (but not from a `$ref` with constraints beside it in 2019-09 and
    /// later, see `ref_with_siblings`).
    fn resolve(self) -> Result<Node<'a>, String> {
        let mut node = self;
        let mut seen: Vec<*const Value> = Vec::new();
        for _ in 0..MAX_REF_CHAIN {
            if node.get("$ref").is_none() || node.ref_with_siblings() {
                return Ok(node);
            }
            // A schema that is only references in a loop (`{"$ref": "#"}`) constrains nothing: the validator
            // accepts every value with it.
            if seen.contains(&(node.value as *const Value)) {
                return Ok(Node { value: &TRUE_SCHEMA, ..node });
            }
            seen.push(node.value);
            node = node.ref_target()?;
        }
        Err("a chain of $refs that never reaches a schema".to_string())
    }
}

/// The keywords that constrain values; a schema with none of them (only annotations, definitions or unknown
/// keywords) accepts everything.
const CONSTRAINT_KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "format",
    "items",
    "additionalItems",
    "prefixItems",
    "contains",
    "maxContains",
    "minContains",
    "maxItems",
    "minItems",
    "uniqueItems",
    "unevaluatedItems",
    "properties",
    "patternProperties",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "required",
    "maxProperties",
    "minProperties",
    "dependencies",
    "dependentRequired",
    "dependentSchemas",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "$ref",
    "$dynamicRef",
    "$recursiveRef",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

const COMBINATORS: &[&str] = &["allOf", "anyOf", "oneOf"];

fn is_false(value: &Value) -> bool {
    value == &Value::Bool(false)
}

/// Accepts every value: `true`, or an object with no constraint keyword (anything else in a schema position is not
/// a schema; the meta-schema has already rejected it, and it constrains nothing here).
fn is_unconstrained(value: &Value) -> bool {
    is_unconstrained_except(value, &[])
}

fn is_unconstrained_except(value: &Value, ignored: &[&str]) -> bool {
    match value {
        Value::Bool(accepts) => *accepts,
        Value::Object(object) => {
            object.keys().all(|key| ignored.contains(&key.as_str()) || !CONSTRAINT_KEYWORDS.contains(&key.as_str()))
        }
        _ => true,
    }
}

// The JSON types as bits, so a `type` list is a set.
const T_ARRAY: u8 = 1;
const T_BOOLEAN: u8 = 2;
const T_INTEGER: u8 = 4;
const T_NULL: u8 = 8;
const T_NUMBER: u8 = 16;
const T_OBJECT: u8 = 32;
const T_STRING: u8 = 64;
const TYPE_NAMES: [(u8, &str); 7] = [
    (T_ARRAY, "array"),
    (T_BOOLEAN, "boolean"),
    (T_INTEGER, "integer"),
    (T_NULL, "null"),
    (T_NUMBER, "number"),
    (T_OBJECT, "object"),
    (T_STRING, "string"),
];

fn type_bit(name: &str) -> u8 {
    TYPE_NAMES.iter().find(|(_, n)| *n == name).map_or(0, |(bit, _)| *bit)
}

fn value_type(value: &Value) -> u8 {
    match value {
        Value::Null => T_NULL,
        Value::Bool(_) => T_BOOLEAN,
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                T_INTEGER
            } else {
                T_NUMBER
            }
        }
        Value::String(_) => T_STRING,
        Value::Array(_) => T_ARRAY,
        Value::Object(_) => T_OBJECT,
    }
}

/// The types a schema's values can have: its `type`, else the types of its `enum`/`const` values; `None` for any.
fn value_types(node: &Node<'_>) -> Option<u8> {
    match node.get("type") {
        Some(Value::String(name)) => return Some(type_bit(name)),
        Some(Value::Array(names)) => {
            return Some(names.iter().filter_map(Value::as_str).map(type_bit).fold(0, |a, b| a | b))
        }
        _ => {}
    }
    enum_values(node).map(|values| values.iter().map(|value| value_type(value)).fold(0, |a, b| a | b))
}

/// Whether values of any of `kinds` pass a schema of these types.
fn admits(types: Option<u8>, kinds: u8) -> bool {
    types.is_none_or(|t| t & kinds != 0 || (kinds & T_INTEGER != 0 && t & T_NUMBER != 0))
}

/// A writer's type is readable when the reader lists it, or lists number for an integer.
fn type_covered(bit: u8, reader: u8) -> bool {
    reader & bit != 0 || (bit == T_INTEGER && reader & T_NUMBER != 0)
}

fn type_names(types: Option<u8>) -> String {
    let Some(types) = types else {
        return "any".to_string();
    };
    let names: Vec<&str> = TYPE_NAMES.iter().filter(|(bit, _)| types & bit != 0).map(|(_, name)| *name).collect();
    match names.as_slice() {
        [] => "none".to_string(),
        [one] => (*one).to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The values an `enum` or `const` allows.
fn enum_values<'a>(node: &Node<'a>) -> Option<Vec<&'a Value>> {
    if let Some(values) = node.list("enum") {
        return Some(values.iter().collect());
    }
    node.get("const").map(|value| vec![value])
}

/// Where a schema puts a property or array item it does not declare.
enum Slot<'a> {
    /// Anything is accepted there.
    Open,
    /// Nothing is.
    Closed,
    /// Values must match all of these subschemas (the keyword path of each, and the subschema).
    Schemas(Vec<(String, Node<'a>)>),
}

/// The `additionalProperties`-like keyword's slot: absent or `true` (or `{}`) is open, `false` closed.
fn rest_slot<'a>(node: &Node<'a>, keyword: &str, fallback: Option<&str>) -> Slot<'a> {
    let (keyword, value) = match node.get(keyword) {
        Some(value) => (keyword, value),
        None => match fallback.and_then(|fallback| node.get(fallback).map(|value| (fallback, value))) {
            Some(found) => found,
            None => return Slot::Open,
        },
    };
    if is_false(value) {
        Slot::Closed
    } else if is_unconstrained(value) {
        Slot::Open
    } else {
        Slot::Schemas(vec![(format!("/{keyword}"), node.child(value))])
    }
}

/// The shape of an array schema: its positional item schemas and what holds past them.
struct ArrayShape<'a> {
    tuple: Vec<Node<'a>>,
    tuple_keyword: &'static str,
    rest: Slot<'a>,
    rest_keyword: &'static str,
}

fn array_shape<'a>(node: &Node<'a>) -> ArrayShape<'a> {
    // 2020-12: `prefixItems` then `items`; before: `items` as an array then `additionalItems`; `items` as one schema
    // applies to every item.
    if let Some(prefix) = node.list("prefixItems") {
        return ArrayShape {
            tuple: prefix.iter().map(|item| node.child(item)).collect(),
            tuple_keyword: "prefixItems",
            rest: rest_slot(node, "items", Some("unevaluatedItems")),
            rest_keyword: "items",
        };
    }
    if let Some(items) = node.list("items") {
        return ArrayShape {
            tuple: items.iter().map(|item| node.child(item)).collect(),
            tuple_keyword: "items",
            rest: rest_slot(node, "additionalItems", Some("unevaluatedItems")),
            rest_keyword: "additionalItems",
        };
    }
    ArrayShape {
        tuple: Vec::new(),
        tuple_keyword: "items",
        rest: rest_slot(node, "items", None),
        rest_keyword: "items",
    }
}

fn canonical_eq(a: &Value, b: &Value) -> bool {
    a == b || canonical_text(a) == canonical_text(b)
}

fn show_number(value: f64) -> String {
    serde_json::Number::from_f64(value).map_or_else(|| value.to_string(), |n| canonical_text(&Value::Number(n)))
}

/// An upper or lower numeric bound: the value, whether it is exclusive, and the keyword that set it.
#[derive(Clone, Copy)]
struct Bound {
    value: f64,
    exclusive: bool,
    keyword: &'static str,
}

/// The tightest upper (or lower) bound a schema sets, from `maximum`/`exclusiveMaximum` in either the draft 4 form
/// (a boolean beside `maximum`) or the later one (a number of its own).
fn bound(node: &Node<'_>, upper: bool) -> Option<Bound> {
    let (inclusive_kw, exclusive_kw) =
        if upper { ("maximum", "exclusiveMaximum") } else { ("minimum", "exclusiveMinimum") };
    let tighter = |a: Bound, b: Bound| {
        let strictly = if upper { a.value < b.value } else { a.value > b.value };
        strictly || (a.value == b.value && a.exclusive && !b.exclusive)
    };
    let mut best: Option<Bound> = None;
    if let Some(value) = node.number(inclusive_kw) {
        let exclusive = node.get(exclusive_kw) == Some(&Value::Bool(true));
        best = Some(Bound { value, exclusive, keyword: if exclusive { exclusive_kw } else { inclusive_kw } });
    }
    if let Some(value) = node.number(exclusive_kw) {
        let candidate = Bound { value, exclusive: true, keyword: exclusive_kw };
        best = match best {
            Some(current) if !tighter(candidate, current) => Some(current),
            _ => Some(candidate),
        };
    }
    best
}

/// The comparison of two schemas: a writer's (what was written) and a reader's (what must accept it). Pairs of
/// subschemas are memoized by identity (definitions shared by many paths are compared once) and a pair met again
/// below itself while it is being compared is a recursive schema's cycle, taken as compatible, as Confluent does.
#[derive(Default)]
struct Comparer {
    memo: HashMap<(usize, usize), Rc<Vec<Diff>>>,
    in_progress: HashSet<(usize, usize)>,
    /// The values each side's comparisons in progress stand at, outermost first.
    writer_path: Vec<usize>,
    reader_path: Vec<usize>,
    /// Where in the paths the current value begins: entries before it are values further up.
    writer_from: usize,
    reader_from: usize,
    steps: usize,
    /// Whether some list of reasons was cut at `MAX_DIFFS`.
    truncated: bool,
    /// `patternProperties` patterns compiled (by the validator's regex engine) to match property names.
    patterns: HashMap<String, Option<Validator>>,
}

fn address(value: &Value) -> usize {
    value as *const Value as usize
}

fn prefixed<'d>(prefix: &str, diffs: &'d [Diff]) -> impl Iterator<Item = Diff> + 'd {
    let prefix = prefix.to_string();
    diffs.iter().map(move |d| Diff::new(format!("{prefix}{}", d.path), d.message.clone()))
}

impl Comparer {
    /// The incompatibilities between a writer's and a reader's subschema, with paths relative to them.
    fn compare<'a>(&mut self, writer: Node<'a>, reader: Node<'a>, depth: usize) -> Rc<Vec<Diff>> {
        // A side "moved" when it is not the value its enclosing comparison stands at (a branch, a `$ref`'s target).
        let writer_moved = self.writer_path.last() != Some(&address(writer.value));
        let reader_moved = self.reader_path.last() != Some(&address(reader.value));
        let (writer, reader) = match (writer.resolve(), reader.resolve()) {
            (Ok(w), Ok(r)) => (w, r),
            (Err(e), _) => return Rc::new(vec![Diff::new("", format!("the writer's {e}"))]),
            (_, Err(e)) => return Rc::new(vec![Diff::new("", format!("the reader's {e}"))]),
        };
        // Nothing is written under `false`; everything is read under `{}`.
        if is_false(writer.value) || is_unconstrained(reader.value) {
            return Rc::new(Vec::new());
        }
        // Back at a value of the same side without going one value down (`{"anyOf": [{"$ref": "#"}]}`): a loop,
        // which constrains nothing (the validator accepts every value through it). The reader reads anything there;
        // the writer may have written anything.
        if reader_moved && self.reader_path[self.reader_from..].contains(&address(reader.value)) {
            return Rc::new(Vec::new());
        }
        let writer = if writer_moved && self.writer_path[self.writer_from..].contains(&address(writer.value)) {
            Node { value: &TRUE_SCHEMA, ..writer }
        } else {
            writer
        };
        let key = (address(writer.value), address(reader.value));
        if let Some(known) = self.memo.get(&key) {
            return known.clone();
        }
        // The same pair again, one value down or more: a recursive structure, compatible as far as it goes
        // (Confluent's rule for cycles).
        if self.in_progress.contains(&key) {
            return Rc::new(Vec::new());
        }
        if depth > MAX_DEPTH {
            return Rc::new(vec![Diff::new("", "the schemas are nested too deeply to compare")]);
        }
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Rc::new(vec![Diff::new("", "the schemas are too large to compare")]);
        }
        self.in_progress.insert(key);
        self.writer_path.push(key.0);
        self.reader_path.push(key.1);
        let mut diffs = self.compare_resolved(&writer, &reader, depth + 1);
        self.writer_path.pop();
        self.reader_path.pop();
        self.in_progress.remove(&key);
        if diffs.len() > MAX_DIFFS {
            diffs.truncate(MAX_DIFFS);
            self.truncated = true;
        }
        let diffs = Rc::new(diffs);
        self.memo.insert(key, diffs.clone());
        diffs
    }

    /// A comparison one value down (a property, an item, a property name): loops are looked for from here on, and
    /// meeting an enclosing pair again below is a recursive structure.
    fn compare_child<'a>(&mut self, writer: Node<'a>, reader: Node<'a>, depth: usize) -> Rc<Vec<Diff>> {
        let saved = (self.writer_from, self.reader_from);
        self.writer_from = self.writer_path.len();
        self.reader_from = self.reader_path.len();
        let diffs = self.compare(writer, reader, depth);
        (self.writer_from, self.reader_from) = saved;
        diffs
    }

    fn child_compatible<'a>(&mut self, writer: Node<'a>, reader: Node<'a>, depth: usize) -> bool {
        self.compare_child(writer, reader, depth).is_empty()
    }

    /// A comparison with the roles exchanged (`not`: the reader's excluded values against the writer's).
    fn compare_swapped<'a>(&mut self, writer: Node<'a>, reader: Node<'a>, depth: usize) -> Rc<Vec<Diff>> {
        self.swap_sides();
        let diffs = self.compare(writer, reader, depth);
        self.swap_sides();
        diffs
    }

    fn swap_sides(&mut self) {
        std::mem::swap(&mut self.writer_path, &mut self.reader_path);
        std::mem::swap(&mut self.writer_from, &mut self.reader_from);
    }

    fn compare_resolved<'a>(&mut self, w: &Node<'a>, r: &Node<'a>, depth: usize) -> Vec<Diff> {
        let mut out = Vec::new();
        let reader_combines = COMBINATORS.iter().any(|k| r.get(k).is_some()) || r.ref_with_siblings();
        let writer_combines = COMBINATORS.iter().any(|k| w.get(k).is_some()) || w.ref_with_siblings();
        // A sufficient condition whatever the reader is, checked before the reader's `false` (a writer whose allOf
        // has a `false` part writes nothing either).
        if writer_combines && self.writer_combination_fits(w, r, depth, !reader_combines, &mut out) {
            return out;
        }
        if is_false(r.value) {
            out.push(Diff::new("", "the reader's schema is false and accepts nothing"));
            return out;
        }
        self.compare_combinators(w, r, depth, &mut out);
        self.compare_not(w, r, depth, &mut out);
        self.compare_conditional(w, r, &mut out);
        self.compare_enum(w, r, &mut out);

        let writer_types = value_types(w);
        let reader_types = value_types(r);
        Self::compare_types(writer_types, reader_types, &mut out);
        let both = |kinds: u8| admits(writer_types, kinds) && admits(reader_types, kinds);
        if both(T_STRING) {
            Self::compare_string(w, r, &mut out);
        }
        if both(T_NUMBER | T_INTEGER) {
            Self::compare_number(w, r, writer_types, &mut out);
        }
        if both(T_OBJECT) {
            self.compare_object(w, r, depth, &mut out);
        }
        if both(T_ARRAY) {
            self.compare_array(w, r, depth, &mut out);
        }
        out
    }

    /// A writer with `anyOf`/`oneOf`/`allOf`: readable when every alternative of the writer is (or, for `allOf`, one
    /// of its parts is). Returns whether that settled the comparison (when `report`, a writer that is only the
    /// combinator settles it with the alternatives' reasons).
    fn writer_combination_fits<'a>(
        &mut self,
        w: &Node<'a>,
        r: &Node<'a>,
        depth: usize,
        report: bool,
        out: &mut Vec<Diff>,
    ) -> bool {
        // A reader with alternatives of its own is matched alternative by alternative (with Confluent's rule on
        // anyOf becoming oneOf) in `compare_combinators`.
        let reader_alternatives = r.get("anyOf").is_some() || r.get("oneOf").is_some();
        for keyword in ["anyOf", "oneOf"] {
            let Some(branches) = w.list(keyword).filter(|_| !reader_alternatives) else { continue };
            let mut failures = Vec::new();
            for (i, branch) in branches.iter().enumerate() {
                let diffs = self.compare(w.child(branch), r.clone(), depth);
                if !diffs.is_empty() {
                    failures.extend(prefixed(&format!("/{keyword}/{i}"), &diffs));
                }
            }
            if failures.is_empty() && !branches.is_empty() {
                return true;
            }
            // When the alternatives are all the writer says and the reader has no combinator of its own to match
            // them against, their failures are the reasons; otherwise the comparison goes on.
            if report && is_unconstrained_except(w.value, &[keyword]) {
                out.extend(failures);
                return true;
            }
        }
        // A `$ref` beside other constraints is one more part of an implicit allOf.
        if w.ref_with_siblings() {
            if let Ok(target) = w.ref_target() {
                if self.compare(target, r.clone(), depth).is_empty() {
                    return true;
                }
            }
        }
        if let Some(parts) = w.list("allOf") {
            let mut closest: Option<Rc<Vec<Diff>>> = None;
            for part in parts {
                let diffs = self.compare(w.child(part), r.clone(), depth);
                if diffs.is_empty() {
                    return true;
                }
                if closest.as_ref().is_none_or(|c| diffs.len() < c.len()) {
                    closest = Some(diffs);
                }
            }
            if report && is_unconstrained_except(w.value, &["allOf"]) {
                match closest {
                    Some(diffs) => out.extend(diffs.iter().cloned()),
                    None => out.push(Diff::new("", "the writer's allOf is empty and the reader constrains values")),
                }
                return true;
            }
        }
        false
    }

    fn compare_combinators<'a>(&mut self, w: &Node<'a>, r: &Node<'a>, depth: usize, out: &mut Vec<Diff>) {
        // Every part of the reader's allOf (and its `$ref` beside other constraints) must accept what was written.
        if r.ref_with_siblings() {
            match r.ref_target() {
                Ok(target) => {
                    // The target applies to the same value: its reasons are at this path, as a plain `$ref`'s are.
                    let diffs = self.compare(w.clone(), target, depth);
                    out.extend(diffs.iter().cloned());
                }
                Err(e) => out.push(Diff::new("/$ref", format!("the reader's {e}"))),
            }
        }
        if let Some(parts) = r.list("allOf") {
            for (i, part) in parts.iter().enumerate() {
                let diffs = self.compare(w.clone(), r.child(part), depth);
                out.extend(prefixed(&format!("/allOf/{i}"), &diffs));
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            let Some(branches) = r.list(keyword) else { continue };
            let other = if keyword == "anyOf" { "oneOf" } else { "anyOf" };
            let writer_sum = w.list(keyword).map(|b| (keyword, b)).or_else(|| w.list(other).map(|b| (other, b)));
            match writer_sum {
                Some((writer_keyword, writer_branches)) => {
                    // Confluent: oneOf may become anyOf (it only loosens), anyOf becomes oneOf only from a single
                    // alternative (two of them could both match a value).
                    if keyword == "oneOf" && writer_keyword == "anyOf" && writer_branches.len() > 1 {
                        out.push(Diff::new("/oneOf", "combined type changed from anyOf to oneOf"));
                    }
                    for (i, writer_branch) in writer_branches.iter().enumerate() {
                        let found = self.closest_branch(w.child(writer_branch), r, branches, depth);
                        if let Some(reason) = found {
                            out.push(Diff::new(
                                format!("/{writer_keyword}/{i}"),
                                format!(
                                    "{writer_keyword} alternative {i} of the writer matches none of the reader's \
                                     {keyword} alternatives{reason}"
                                ),
                            ));
                        }
                    }
                }
                None => {
                    if let Some(reason) = self.closest_branch(w.clone(), r, branches, depth) {
                        out.push(Diff::new(
                            format!("/{keyword}"),
                            format!("{keyword} added: the writer's schema matches none of its alternatives{reason}"),
                        ));
                    }
                }
            }
        }
    }

    /// `None` when one of the reader's `branches` reads everything `writer` accepts; else the closest branch's first
    /// reason, for the message.
    fn closest_branch<'a>(
        &mut self,
        writer: Node<'a>,
        r: &Node<'a>,
        branches: &'a [Value],
        depth: usize,
    ) -> Option<String> {
        let mut closest: Option<(usize, Rc<Vec<Diff>>)> = None;
        for (i, branch) in branches.iter().enumerate() {
            let diffs = self.compare(writer.clone(), r.child(branch), depth);
            if diffs.is_empty() {
                return None;
            }
            if closest.as_ref().is_none_or(|(_, c)| diffs.len() < c.len()) {
                closest = Some((i, diffs));
            }
        }
        Some(match closest {
            Some((i, diffs)) => match diffs.first() {
                Some(first) => format!(" (closest, alternative {i}: {})", first.render()),
                None => String::new(),
            },
            None => " (it has none)".to_string(),
        })
    }

    /// `not`: the reader may exclude only what the writer already excluded (the two are compared the other way).
    fn compare_not<'a>(&mut self, w: &Node<'a>, r: &Node<'a>, depth: usize, out: &mut Vec<Diff>) {
        let Some(reader_not) = r.sub("not") else { return };
        if is_false(reader_not.value) {
            return;
        }
        match w.sub("not") {
            None => out.push(Diff::new("/not", "not added: the reader excludes values the writer may have written")),
            Some(writer_not) => {
                if !self.compare_swapped(reader_not, writer_not, depth).is_empty() {
                    out.push(Diff::new("/not", "not extended: the reader excludes values the writer may have written"));
                }
            }
        }
    }

    /// `if`/`then`/`else` are compared as a whole: the reader's must be the writer's, or absent.
    fn compare_conditional(&mut self, w: &Node<'_>, r: &Node<'_>, out: &mut Vec<Diff>) {
        let keywords = ["if", "then", "else"];
        if keywords.iter().all(|k| r.get(k).is_none()) {
            return;
        }
        let same = keywords.iter().all(|k| match (w.get(k), r.get(k)) {
            (None, None) => true,
            (Some(a), Some(b)) => canonical_eq(a, b),
            _ => false,
        });
        if !same {
            let what = if keywords.iter().all(|k| w.get(k).is_none()) { "added" } else { "changed" };
            out.push(Diff::new("/if", format!("conditional (if/then/else) {what}")));
        }
    }

    fn compare_enum(&mut self, w: &Node<'_>, r: &Node<'_>, out: &mut Vec<Diff>) {
        let Some(reader_values) = enum_values(r) else { return };
        let keyword = if r.get("enum").is_some() { "enum" } else { "const" };
        match enum_values(w) {
            None => out.push(Diff::new(
                format!("/{keyword}"),
                format!("{keyword} added: only {} allowed", show_values(&reader_values)),
            )),
            Some(writer_values) => {
                let missing: Vec<&Value> = writer_values
                    .iter()
                    .copied()
                    .filter(|wv| !reader_values.iter().any(|rv| canonical_eq(wv, rv)))
                    .collect();
                if !missing.is_empty() {
                    let extended = reader_values.iter().any(|rv| !writer_values.iter().any(|wv| canonical_eq(wv, rv)));
                    let how = if extended { "changed" } else { "narrowed" };
                    out.push(Diff::new(
                        format!("/{keyword}"),
                        format!("{keyword} {how}: {} no longer allowed", show_values(&missing)),
                    ));
                }
            }
        }
    }

    fn compare_types(writer: Option<u8>, reader: Option<u8>, out: &mut Vec<Diff>) {
        let Some(reader) = reader else { return };
        let all = TYPE_NAMES.iter().fold(0, |acc, (bit, _)| acc | bit);
        let uncovered = match writer {
            None => all & !reader & !(if reader & T_NUMBER != 0 { T_INTEGER } else { 0 }),
            Some(writer) => TYPE_NAMES
                .iter()
                .filter(|(bit, _)| writer & bit != 0 && !type_covered(*bit, reader))
                .fold(0, |a, (b, _)| a | b),
        };
        if uncovered == 0 {
            return;
        }
        // Narrowed: the reader only dropped types (or kept integer of number); changed: it also has other ones.
        let narrowed = match writer {
            None => true,
            Some(writer) => TYPE_NAMES.iter().all(|(bit, _)| reader & bit == 0 || type_covered(*bit, writer)),
        };
        let how = if narrowed { "narrowed" } else { "changed" };
        out.push(Diff::new("", format!("type {how} from {} to {}", type_names(writer), type_names(Some(reader)))));
    }

    fn compare_string(w: &Node<'_>, r: &Node<'_>, out: &mut Vec<Diff>) {
        compare_max(w, r, "maxLength", out);
        compare_min(w, r, "minLength", out);
        match (w.get("pattern"), r.get("pattern")) {
            (_, None) => {}
            (None, Some(pattern)) => out.push(Diff::new("/pattern", format!("pattern added: {pattern}"))),
            (Some(before), Some(after)) if before != after => {
                out.push(Diff::new("/pattern", format!("pattern changed from {before} to {after}")))
            }
            _ => {}
        }
        // `format` asserts only where the validator checks it: drafts 4 to 7 (later drafts make it an annotation).
        if matches!(r.draft, Draft::Draft4 | Draft::Draft6 | Draft::Draft7) {
            match (w.get("format"), r.get("format")) {
                (_, None) => {}
                (None, Some(format)) => out.push(Diff::new("/format", format!("format added: {format}"))),
                (Some(before), Some(after)) if before != after => {
                    out.push(Diff::new("/format", format!("format changed from {before} to {after}")))
                }
                _ => {}
            }
        }
    }

    fn compare_number(w: &Node<'_>, r: &Node<'_>, writer_types: Option<u8>, out: &mut Vec<Diff>) {
        for upper in [true, false] {
            let Some(reader_bound) = bound(r, upper) else { continue };
            let (direction, word) = if upper { ("decreased", "maximum") } else { ("increased", "minimum") };
            match bound(w, upper) {
                None => out.push(Diff::new(
                    format!("/{}", reader_bound.keyword),
                    format!("{word} added: {} {}", reader_bound.keyword, show_number(reader_bound.value)),
                )),
                Some(writer_bound) => {
                    let tighter = if upper {
                        reader_bound.value < writer_bound.value
                    } else {
                        reader_bound.value > writer_bound.value
                    };
                    let made_exclusive =
                        reader_bound.value == writer_bound.value && reader_bound.exclusive && !writer_bound.exclusive;
                    if tighter {
                        out.push(Diff::new(
                            format!("/{}", reader_bound.keyword),
                            format!(
                                "{word} {direction} from {} to {}",
                                show_number(writer_bound.value),
                                show_number(reader_bound.value)
                            ),
                        ));
                    } else if made_exclusive {
                        out.push(Diff::new(
                            format!("/{}", reader_bound.keyword),
                            format!("{word} {} made exclusive", show_number(reader_bound.value)),
                        ));
                    }
                }
            }
        }
        let Some(reader_step) = r.number("multipleOf") else { return };
        let divides = |step: f64, of: f64| {
            let ratio = of / step;
            ratio.is_finite() && ratio >= 1.0 - 1e-9 && (ratio - ratio.round()).abs() < 1e-9
        };
        match w.number("multipleOf") {
            // Integers are multiples of 1 (and of its divisors): no constraint for an integer-only writer.
            None if writer_types == Some(T_INTEGER) && divides(reader_step, 1.0) => {}
            None => out.push(Diff::new("/multipleOf", format!("multipleOf added: {}", show_number(reader_step)))),
            Some(writer_step) if !divides(reader_step, writer_step) => out.push(Diff::new(
                "/multipleOf",
                format!("multipleOf changed from {} to {}", show_number(writer_step), show_number(reader_step)),
            )),
            Some(_) => {}
        }
    }

    fn compare_object<'a>(&mut self, w: &Node<'a>, r: &Node<'a>, depth: usize, out: &mut Vec<Diff>) {
        let empty = Map::new();
        let writer_properties = w.map("properties").unwrap_or(&empty);
        let reader_properties = r.map("properties").unwrap_or(&empty);

        for (name, writer_property) in writer_properties {
            let path = format!("/properties/{}", escape_segment(name));
            let writer_node = w.child(writer_property);
            match reader_properties.get(name) {
                Some(reader_property) => {
                    let diffs = self.compare_child(writer_node, r.child(reader_property), depth);
                    out.extend(prefixed(&path, &diffs));
                }
                // Removed in the reader: it now falls to the reader's patternProperties/additionalProperties.
                None => match self.undeclared_slot(r, name) {
                    Slot::Open => {}
                    Slot::Closed => {
                        if !is_false(writer_property) {
                            out.push(Diff::new(path, "property removed from a closed content model"));
                        }
                    }
                    Slot::Schemas(schemas) => {
                        for (keyword, schema) in schemas {
                            let diffs = self.compare_child(writer_node.clone(), schema, depth);
                            if let Some(first) = diffs.first() {
                                out.push(Diff::new(
                                    path.clone(),
                                    format!(
                                        "property removed is not covered by the reader's partially open content \
                                         model ({}: {})",
                                        keyword.trim_start_matches('/'),
                                        first.render()
                                    ),
                                ));
                            }
                        }
                    }
                },
            }
        }
        for (name, reader_property) in reader_properties {
            if writer_properties.contains_key(name) {
                continue;
            }
            let path = format!("/properties/{}", escape_segment(name));
            let reader_node = r.child(reader_property);
            // Added in the reader: what the writer may have put under this name is what its
            // patternProperties/additionalProperties allowed.
            match self.undeclared_slot(w, name) {
                Slot::Closed => {}
                Slot::Open => {
                    if !is_unconstrained(reader_property) {
                        out.push(Diff::new(
                            path,
                            "property added to an open content model (the writer may have written it with any value)",
                        ));
                    }
                }
                Slot::Schemas(schemas) => {
                    // The written value matched every one of the writer's schemas: one that fits is enough.
                    let mut first_reason = None;
                    let mut fits = false;
                    for (_, schema) in schemas {
                        let diffs = self.compare_child(schema, reader_node.clone(), depth);
                        if diffs.is_empty() {
                            fits = true;
                            break;
                        }
                        if first_reason.is_none() {
                            first_reason = diffs.first().map(Diff::render);
                        }
                    }
                    if !fits {
                        out.push(Diff::new(
                            path,
                            format!(
                                "property added is not covered by the writer's partially open content model ({})",
                                first_reason.unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
        }

        // Newly required properties: the writer may have left them out. A default makes it compatible (Confluent).
        let writer_required: HashSet<&str> =
            w.list("required").map(|names| names.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        if let Some(names) = r.list("required") {
            for name in names.iter().filter_map(Value::as_str) {
                if writer_required.contains(name) {
                    continue;
                }
                let has_default = reader_properties.get(name).is_some_and(|p| p.get("default").is_some());
                if !has_default {
                    out.push(Diff::new(format!("/required/{}", escape_segment(name)), "required property added"));
                }
            }
        }

        self.compare_rest(w, r, "additionalProperties", Some("unevaluatedProperties"), depth, out);
        self.compare_pattern_properties(w, r, writer_properties, depth, out);

        if let Some(reader_names) = r.sub("propertyNames") {
            if !is_unconstrained(reader_names.value) {
                match w.sub("propertyNames") {
                    Some(writer_names) => {
                        let diffs = self.compare_child(writer_names, reader_names, depth);
                        out.extend(prefixed("/propertyNames", &diffs));
                    }
                    None => out.push(Diff::new("/propertyNames", "propertyNames added")),
                }
            }
        }
        self.compare_dependencies(w, r, depth, out);
        compare_max(w, r, "maxProperties", out);
        compare_min(w, r, "minProperties", out);
    }

    /// What a schema says of a property it does not declare: every matching `patternProperties` entry, else
    /// `additionalProperties`.
    fn undeclared_slot<'a>(&mut self, node: &Node<'a>, name: &str) -> Slot<'a> {
        let mut schemas = Vec::new();
        if let Some(patterns) = node.map("patternProperties") {
            for (pattern, schema) in patterns {
                if self.pattern_matches(pattern, name) {
                    schemas.push((format!("/patternProperties/{}", escape_segment(pattern)), node.child(schema)));
                }
            }
        }
        if schemas.is_empty() {
            return rest_slot(node, "additionalProperties", Some("unevaluatedProperties"));
        }
        if schemas.iter().any(|(_, schema)| is_false(schema.value)) {
            return Slot::Closed;
        }
        schemas.retain(|(_, schema)| !is_unconstrained(schema.value));
        if schemas.is_empty() {
            Slot::Open
        } else {
            Slot::Schemas(schemas)
        }
    }

    /// `additionalProperties` (or an array's rest of items) on both sides: Confluent's content-model change rules.
    fn compare_rest<'a>(
        &mut self,
        w: &Node<'a>,
        r: &Node<'a>,
        keyword: &str,
        fallback: Option<&str>,
        depth: usize,
        out: &mut Vec<Diff>,
    ) {
        let path = format!("/{keyword}");
        match (rest_slot(w, keyword, fallback), rest_slot(r, keyword, fallback)) {
            (_, Slot::Open) | (Slot::Closed, _) => {}
            (Slot::Open, Slot::Closed) => {
                out.push(Diff::new(path, format!("{keyword} removed: the content model was open and is closed")))
            }
            (Slot::Schemas(_), Slot::Closed) => out.push(Diff::new(
                path,
                format!("{keyword} removed: the content model was partially open and is closed"),
            )),
            (Slot::Open, Slot::Schemas(_)) => out
                .push(Diff::new(path, format!("{keyword} narrowed: the content model was open and is partially open"))),
            (Slot::Schemas(writer), Slot::Schemas(reader)) => {
                for ((_, writer_schema), (_, reader_schema)) in writer.into_iter().zip(reader) {
                    let diffs = self.compare_child(writer_schema, reader_schema, depth);
                    out.extend(prefixed(&path, &diffs));
                }
            }
        }
    }

    fn compare_pattern_properties<'a>(
        &mut self,
        w: &Node<'a>,
        r: &Node<'a>,
        writer_properties: &'a Map<String, Value>,
        depth: usize,
        out: &mut Vec<Diff>,
    ) {
        let empty = Map::new();
        let writer_patterns = w.map("patternProperties").unwrap_or(&empty);
        let reader_patterns = r.map("patternProperties").unwrap_or(&empty);
        for (pattern, reader_schema) in reader_patterns {
            let path = format!("/patternProperties/{}", escape_segment(pattern));
            let reader_node = r.child(reader_schema);
            if let Some(writer_schema) = writer_patterns.get(pattern) {
                let diffs = self.compare_child(w.child(writer_schema), reader_node, depth);
                out.extend(prefixed(&path, &diffs));
                continue;
            }
            if is_unconstrained(reader_schema) {
                continue;
            }
            // A new pattern applies to the writer's undeclared properties, governed by its additionalProperties...
            match rest_slot(w, "additionalProperties", Some("unevaluatedProperties")) {
                Slot::Closed => {}
                Slot::Open => out.push(Diff::new(path.clone(), "pattern property added to an open content model")),
                Slot::Schemas(schemas) => {
                    for (_, schema) in schemas {
                        if !self.child_compatible(schema, reader_node.clone(), depth) {
                            out.push(Diff::new(
                                path.clone(),
                                "pattern property added is not covered by the writer's additionalProperties",
                            ));
                        }
                    }
                }
            }
            // ...and to its declared properties whose names match.
            for (name, writer_property) in writer_properties {
                if self.pattern_matches(pattern, name) {
                    let diffs = self.compare_child(w.child(writer_property), reader_node.clone(), depth);
                    if let Some(first) = diffs.first() {
                        out.push(Diff::new(
                            format!("/properties/{}", escape_segment(name)),
                            format!(
                                "the reader's pattern property {pattern:?} does not accept it ({})",
                                first.render()
                            ),
                        ));
                    }
                }
            }
        }
        // A pattern the reader dropped: the writer's matching properties fall to the reader's additionalProperties.
        for (pattern, writer_schema) in writer_patterns {
            if reader_patterns.contains_key(pattern) || is_false(writer_schema) {
                continue;
            }
            let path = format!("/patternProperties/{}", escape_segment(pattern));
            match rest_slot(r, "additionalProperties", Some("unevaluatedProperties")) {
                Slot::Open => {}
                Slot::Closed => out.push(Diff::new(path, "pattern property removed from a closed content model")),
                Slot::Schemas(schemas) => {
                    for (_, schema) in schemas {
                        if !self.child_compatible(w.child(writer_schema), schema, depth) {
                            out.push(Diff::new(
                                path.clone(),
                                "pattern property removed is not covered by the reader's additionalProperties",
                            ));
                        }
                    }
                }
            }
        }
    }

    /// `dependencies` (drafts 4-7), `dependentRequired` and `dependentSchemas` (2019-09 on): a reader may drop or
    /// narrow them, not add or extend them.
    fn compare_dependencies<'a>(&mut self, w: &Node<'a>, r: &Node<'a>, depth: usize, out: &mut Vec<Diff>) {
        for keyword in ["dependencies", "dependentRequired", "dependentSchemas"] {
            let Some(reader_dependencies) = r.map(keyword) else { continue };
            let writer_dependencies = w.map(keyword);
            for (name, reader_dependency) in reader_dependencies {
                let path = format!("/{keyword}/{}", escape_segment(name));
                let writer_dependency = writer_dependencies.and_then(|d| d.get(name));
                match (writer_dependency, reader_dependency) {
                    (writer, Value::Array(reader_names)) => {
                        let writer_names: Vec<&Value> =
                            writer.and_then(Value::as_array).map(|names| names.iter().collect()).unwrap_or_default();
                        let added: Vec<&Value> =
                            reader_names.iter().filter(|name| !writer_names.contains(name)).collect();
                        if writer.is_none() {
                            out.push(Diff::new(path, "dependency added"));
                        } else if !added.is_empty() {
                            out.push(Diff::new(
                                path,
                                format!("dependency extended: {} also required", show_values(&added)),
                            ));
                        }
                    }
                    (None, reader_schema) => {
                        if !is_unconstrained(reader_schema) {
                            out.push(Diff::new(path, "dependency schema added"));
                        }
                    }
                    (Some(writer_schema), reader_schema) => {
                        let diffs = self.compare(w.child(writer_schema), r.child(reader_schema), depth);
                        out.extend(prefixed(&path, &diffs));
                    }
                }
            }
        }
    }

    fn compare_array<'a>(&mut self, w: &Node<'a>, r: &Node<'a>, depth: usize, out: &mut Vec<Diff>) {
        let writer = array_shape(w);
        let reader = array_shape(r);
        let positions = writer.tuple.len().max(reader.tuple.len());
        for i in 0..positions {
            let path =
                format!("/{}/{i}", if i < reader.tuple.len() { reader.tuple_keyword } else { writer.tuple_keyword });
            match (writer.tuple.get(i), reader.tuple.get(i)) {
                (Some(writer_item), Some(reader_item)) => {
                    let diffs = self.compare_child(writer_item.clone(), reader_item.clone(), depth);
                    out.extend(prefixed(&path, &diffs));
                }
                // Dropped by the reader: that position falls to the reader's rest of items.
                (Some(writer_item), None) => match &reader.rest {
                    Slot::Open => {}
                    Slot::Closed => {
                        if !is_false(writer_item.value) {
                            out.push(Diff::new(path, "item removed from a closed content model"));
                        }
                    }
                    Slot::Schemas(schemas) => {
                        for (_, schema) in schemas {
                            if !self.child_compatible(writer_item.clone(), schema.clone(), depth) {
                                out.push(Diff::new(
                                    path.clone(),
                                    "item removed is not covered by the reader's partially open content model",
                                ));
                            }
                        }
                    }
                },
                // Added by the reader: the writer put there whatever its rest of items allowed.
                (None, Some(reader_item)) => match &writer.rest {
                    Slot::Closed => {}
                    Slot::Open => {
                        if !is_unconstrained(reader_item.value) {
                            out.push(Diff::new(path, "item added to an open content model"));
                        }
                    }
                    Slot::Schemas(schemas) => {
                        for (_, schema) in schemas {
                            if !self.child_compatible(schema.clone(), reader_item.clone(), depth) {
                                out.push(Diff::new(
                                    path.clone(),
                                    "item added is not covered by the writer's partially open content model",
                                ));
                            }
                        }
                    }
                },
                (None, None) => {}
            }
        }
        let rest_path = format!("/{}", reader.rest_keyword);
        match (writer.rest, reader.rest) {
            (_, Slot::Open) | (Slot::Closed, _) => {}
            (Slot::Open, Slot::Closed) | (Slot::Schemas(_), Slot::Closed) => out.push(Diff::new(
                rest_path,
                format!("{} removed: the reader accepts no further items", reader.rest_keyword),
            )),
            (Slot::Open, Slot::Schemas(_)) => out.push(Diff::new(
                rest_path,
                format!("{} added: the writer's items were unconstrained", reader.rest_keyword),
            )),
            (Slot::Schemas(writer_rest), Slot::Schemas(reader_rest)) => {
                for ((_, writer_schema), (_, reader_schema)) in writer_rest.into_iter().zip(reader_rest) {
                    let diffs = self.compare_child(writer_schema, reader_schema, depth);
                    out.extend(prefixed(&rest_path, &diffs));
                }
            }
        }
        compare_max(w, r, "maxItems", out);
        compare_min(w, r, "minItems", out);
        if r.get("uniqueItems") == Some(&Value::Bool(true)) && w.get("uniqueItems") != Some(&Value::Bool(true)) {
            out.push(Diff::new("/uniqueItems", "uniqueItems added"));
        }
        if let Some(reader_contains) = r.sub("contains") {
            match w.sub("contains") {
                Some(writer_contains) => {
                    let diffs = self.compare_child(writer_contains, reader_contains, depth);
                    out.extend(prefixed("/contains", &diffs));
                    compare_max(w, r, "maxContains", out);
                    compare_min(w, r, "minContains", out);
                }
                None => out.push(Diff::new("/contains", "contains added")),
            }
        }
    }

    /// Whether `name` matches `pattern` by the validator's own regular expressions (ECMA 262, unanchored); an
    /// uncompilable pattern matches nothing (the schema's compilation already accepted it).
    fn pattern_matches(&mut self, pattern: &str, name: &str) -> bool {
        let validator = self.patterns.entry(pattern.to_string()).or_insert_with(|| {
            jsonschema::options().with_draft(Draft::Draft7).build(&serde_json::json!({ "pattern": pattern })).ok()
        });
        validator.as_ref().is_some_and(|v| v.is_valid(&Value::String(name.to_string())))
    }
}

/// An upper limit (`maxLength`, `maxItems`, ...): a reader may raise or drop it, not add or lower it.
fn compare_max(w: &Node<'_>, r: &Node<'_>, keyword: &str, out: &mut Vec<Diff>) {
    match (w.number(keyword), r.number(keyword)) {
        (_, None) => {}
        (None, Some(limit)) => {
            out.push(Diff::new(format!("/{keyword}"), format!("{keyword} added: {}", show_number(limit))))
        }
        (Some(before), Some(after)) if after < before => out.push(Diff::new(
            format!("/{keyword}"),
            format!("{keyword} decreased from {} to {}", show_number(before), show_number(after)),
        )),
        _ => {}
    }
}

/// A lower limit (`minLength`, `minItems`, ...): a reader may lower or drop it, not add or raise it.
fn compare_min(w: &Node<'_>, r: &Node<'_>, keyword: &str, out: &mut Vec<Diff>) {
    match (w.number(keyword), r.number(keyword)) {
        (_, None) => {}
        // A minimum of 0 constrains nothing.
        (None, Some(limit)) if limit <= 0.0 => {}
        (None, Some(limit)) => {
            out.push(Diff::new(format!("/{keyword}"), format!("{keyword} added: {}", show_number(limit))))
        }
        (Some(before), Some(after)) if after > before => out.push(Diff::new(
            format!("/{keyword}"),
            format!("{keyword} increased from {} to {}", show_number(before), show_number(after)),
        )),
        _ => {}
    }
}

fn show_values(values: &[&Value]) -> String {
    let shown: Vec<String> = values.iter().take(10).map(|value| truncate_chars(&value.to_string(), 60)).collect();
    let mut text = shown.join(", ");
    if values.len() > shown.len() {
        let _ = write!(text, " and {} more", values.len() - shown.len());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> JsonSchema {
        match JsonSchema::parse(text, &[]) {
            Ok(schema) => schema,
            Err(e) => panic!("{text} does not parse: {e}"),
        }
    }

    #[test]
    fn json_schema_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<JsonSchema>();
    }

    #[test]
    fn pointer_segments_are_escaped() {
        assert_eq!(escape_segment("a/b~c"), "a~1b~0c");
        let writer = parse(r#"{"type":"object","properties":{"a/b":{"type":"number"}}}"#);
        let reader = parse(r#"{"type":"object","properties":{"a/b":{"type":"integer"}}}"#);
        assert_eq!(
            JsonSchema::incompatibilities(&reader, &writer),
            vec!["#/properties/a~1b: type narrowed from number to integer".to_string()]
        );
    }

    #[test]
    fn draft_defaults_to_7_and_follows_schema() {
        assert_eq!(parse("{}").draft, Draft::Draft7);
        assert_eq!(parse(r#"{"$schema":"http://json-schema.org/draft-04/schema#"}"#).draft, Draft::Draft4);
        assert_eq!(parse(r#"{"$schema":"https://json-schema.org/draft/2020-12/schema"}"#).draft, Draft::Draft202012);
        let unknown = JsonSchema::parse(r#"{"$schema":"https://example.com/my-meta"}"#, &[]);
        assert!(unknown.is_err_and(|e| e.message.contains("unsupported $schema")));
    }

    #[test]
    fn types_read_from_enum_when_absent() {
        let schema = parse(r#"{"enum":["a", 1, 2.5, null]}"#);
        assert_eq!(value_types(&schema.root()), Some(T_STRING | T_INTEGER | T_NUMBER | T_NULL));
    }

    #[test]
    fn bounds_take_the_tightest_form() {
        let schema = parse(r#"{"maximum": 10, "exclusiveMaximum": 10}"#);
        let upper = bound(&schema.root(), true).map(|b| (b.value, b.exclusive, b.keyword));
        assert_eq!(upper, Some((10.0, true, "exclusiveMaximum")));
        let draft4 =
            parse(r#"{"$schema":"http://json-schema.org/draft-04/schema#","minimum": 3, "exclusiveMinimum": true}"#);
        let lower = bound(&draft4.root(), false).map(|b| (b.value, b.exclusive));
        assert_eq!(lower, Some((3.0, true)));
    }

    #[test]
    fn long_messages_are_cut_on_char_boundaries() {
        assert_eq!(truncate_chars("ééé", 2), "éé...");
        assert_eq!(truncate_chars("ab", 2), "ab");
    }
}
