//! Avro in the schema registry: a schema and its references parsed by apache-avro, its normalized text (one schema
//! written two ways gets one id), Avro's schema-resolution rules as the registry's compatibility check, and payloads
//! moved between Avro's JSON encoding (the REST Proxy's embedded format) and Avro's binary encoding.
//!
//! The binary codec walks apache-avro's parsed [`Schema`] but is our own rather than `from_avro_datum` /
//! `to_avro_datum`, because payloads come from the network and apache-avro 0.21's codec is not built for that: its
//! decoder reads a truncated string or boolean as a null instead of failing, reserves room for as many array items
//! as a block's count claims (2^28 items of 56 bytes, 15 GB, from a 5-byte payload), allocates the length a string
//! or bytes claims (up to 512 MiB) before reading it, and recurses without bound through recursive types (a stack
//! overflow); its encoder unwraps on a decimal too wide for its fixed. Nor does its JSON-to-`Value` resolution read
//! Avro's JSON encoding (a union value is `{"branch": value}`, bytes are code points 0–255). So the codec here bounds
//! every length and count by the bytes left, every nesting by a depth and the total work by a budget, and reads and
//! writes Avro's JSON encoding exactly. apache-avro's own encoder and decoder are the reference the tests hold its
//! bytes to.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use apache_avro::schema::{Alias, EnumSchema, FixedSchema, Name, RecordSchema, Schema};
use serde_json::{Map, Number, Value as Json};

use crate::formats::{Dependency, InvalidSchema, PayloadError};

/// How deep values (records, arrays, maps, unions) may nest in a payload, encoded or decoded. Recursive types let a
/// payload nest as deep as its bytes allow; this keeps the stack bounded, and keeps decoded JSON within the depth
/// serde_json parses back (128).
const MAX_DEPTH: usize = 128;
/// How deep the compatibility check may follow two schemas. References let a chain of named types (each in its own
/// dependency) nest without the JSON nesting, so this is bounded apart from the parser's JSON depth.
const MAX_COMPAT_DEPTH: usize = 256;
/// Sentences kept per comparison: a schema with a type used in many places would otherwise repeat one reason
/// without end.
const MAX_PROBLEMS: usize = 50;
/// Values a decode may produce beyond four per payload byte. Items of a type that takes no bytes (null, an empty
/// record) cost nothing to claim: without this, `[count 2^62][no bytes]` for an array of nulls would build 2^62
/// values.
const DECODE_VALUE_ALLOWANCE: usize = 1 << 20;
/// Encode calls spent trying a bare value against a union's branches, in all: nested unions of several records
/// would otherwise retry each subtree once per branch per level (exponential in the nesting).
const MAX_TRIAL_STEPS: usize = 1 << 20;
/// The largest payload an encode writes: field defaults are copied for every record that leaves them out, so a small
/// JSON array of empty objects could otherwise ask for terabytes.
const MAX_ENCODED_BYTES: usize = 64 << 20;

/// The most digits a decimal given as a JSON number may have once scaled (a 4 KB unscaled value).
const MAX_DECIMAL_DIGITS: usize = 10_000;

const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// A parsed Avro schema: apache-avro's tree, every named type it can refer to (its own and its dependencies'), and
/// its normalized text.
#[derive(Debug, Clone)]
pub struct AvroSchema {
    root: Schema,
    /// Named types by full name. apache-avro writes a type's second and later uses (and a recursive use, and a use of
    /// a dependency's type) as `Schema::Ref`, which is looked up here.
    names: HashMap<String, Schema>,
    normalized: String,
}

impl AvroSchema {
    pub fn parse(text: &str, dependencies: &[Dependency]) -> Result<Self, InvalidSchema> {
        let raw: Json =
            serde_json::from_str(text).map_err(|e| InvalidSchema::new(format!("the schema is not valid JSON: {e}")))?;
        check_names(&raw).map_err(InvalidSchema::new)?;
        let mut dependency_texts = Vec::with_capacity(dependencies.len());
        for dependency in dependencies {
            let mut dep: Json = serde_json::from_str(&dependency.schema).map_err(|e| {
                InvalidSchema::new(format!("the schema of reference '{}' is not valid JSON: {e}", dependency.name))
            })?;
            check_names(&dep)
                .map_err(|e| InvalidSchema::new(format!("in the schema of reference '{}': {e}", dependency.name)))?;
            strip_fixed_logical_types(&mut dep);
            dependency_texts.push(dep.to_string());
        }
        let mut prepared = raw.clone();
        strip_fixed_logical_types(&mut prepared);
        let prepared = prepared.to_string();

        // apache-avro unwraps in a few places of its parser (names, aliases, union defaults); check_names rules out the
        // ones we know of, and a panic from one we do not know of still becomes an invalid schema, not a dead request.
        let parsed = catch_unwind(AssertUnwindSafe(|| Schema::parse_str_with_list(&prepared, &dependency_texts)))
            .map_err(|_| InvalidSchema::new("the Avro parser failed on this schema (it is not a valid Avro schema)"))?;
        let (root, dependency_schemas) = parsed.map_err(schema_error)?;

        let mut names = HashMap::new();
        for schema in dependency_schemas.iter().chain(std::iter::once(&root)) {
            collect_names(schema, &mut names);
        }
        let mut normalized = String::new();
        write_json(&normalize(&raw, None), &mut normalized);
        Ok(AvroSchema { root, names, normalized })
    }

    /// The normalized JSON text: full names without `namespace` keys, the short form of a type without attributes,
    /// keys in one order, no whitespace, aliases sorted; defaults, aliases, docs, logical types and other attributes
    /// kept. A dependency's type stays a reference by full name.
    pub fn normalized(&self) -> String {
        self.normalized.clone()
    }

    pub fn record_name(&self) -> Option<String> {
        match &self.root {
            Schema::Record(RecordSchema { name, .. })
            | Schema::Enum(EnumSchema { name, .. })
            | Schema::Fixed(FixedSchema { name, .. })
            | Schema::Ref { name } => Some(name.fullname(None)),
            Schema::Decimal(decimal) => match decimal.inner.as_ref() {
                Schema::Fixed(FixedSchema { name, .. }) => Some(name.fullname(None)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Why data written with `writer` cannot be read with `reader`, by the Avro specification's schema resolution
    /// (with Java's reading of it, which Confluent uses: named types match by unqualified name or a reader alias,
    /// logical types resolve as their underlying types). Each sentence starts with its location in the reader.
    pub fn incompatibilities(reader: &Self, writer: &Self) -> Vec<String> {
        let mut check = Compat { reader, writer, in_progress: HashSet::new(), done: HashMap::new() };
        check
            .check(&reader.root, &writer.root, 0)
            .into_iter()
            .map(|p| format!("{}: {}", if p.path.is_empty() { "/" } else { &p.path }, p.message))
            .collect()
    }

    pub fn encode_json(&self, value: &Json) -> Result<Vec<u8>, PayloadError> {
        let mut encoder = Encoder { schema: self, trial_steps: 0, trials: 0 };
        let mut out = Vec::new();
        encoder.encode(&self.root, value, &Path::Root, 0, false, &mut out)?;
        Ok(out)
    }

    pub fn decode_json(&self, payload: &[u8]) -> Result<Json, PayloadError> {
        self.decode_with(payload, true)
    }

    /// [`decode_json`](Self::decode_json) with a union's value as it is rather than as `{"branch": value}`: the
    /// JSON a serde type (`Option<T>` for `["null", T]`) reads, for the runtime's typed events. The encoder takes
    /// both forms.
    pub fn decode_plain_json(&self, payload: &[u8]) -> Result<Json, PayloadError> {
        self.decode_with(payload, false)
    }

    fn decode_with(&self, payload: &[u8], tag_unions: bool) -> Result<Json, PayloadError> {
        let budget = payload.len().saturating_mul(4).saturating_add(DECODE_VALUE_ALLOWANCE);
        let mut decoder = Decoder { schema: self, bytes: payload, pos: 0, values_left: budget, tag_unions };
        let value = decoder.decode(&self.root, &Path::Root, 0)?;
        if decoder.pos != payload.len() {
            return Err(PayloadError::new(format!(
                "{} bytes left over after the value ends at byte {}: the payload does not match the schema",
                payload.len() - decoder.pos,
                decoder.pos
            )));
        }
        Ok(value)
    }

    /// A named type, or a reference to one, as its definition; with logical types as their underlying types.
    fn view<'a>(&'a self, schema: &'a Schema) -> Result<View<'a>, String> {
        let mut schema = schema;
        let mut logical = Logical::None;
        // A reference leads to a definition and a decimal to its bytes or fixed: a few hops at most.
        for _ in 0..4 {
            let ty = match schema {
                Schema::Ref { name } => {
                    let full = name.fullname(None);
                    schema = self.names.get(&full).ok_or_else(|| format!("unknown type '{full}'"))?;
                    continue;
                }
                Schema::Decimal(decimal) => {
                    logical = Logical::Decimal { precision: decimal.precision, scale: decimal.scale };
                    schema = &decimal.inner;
                    continue;
                }
                Schema::Null => Ty::Null,
                Schema::Boolean => Ty::Boolean,
                Schema::Int | Schema::Date | Schema::TimeMillis => Ty::Int,
                Schema::Long
                | Schema::TimeMicros
                | Schema::TimestampMillis
                | Schema::TimestampMicros
                | Schema::TimestampNanos
                | Schema::LocalTimestampMillis
                | Schema::LocalTimestampMicros
                | Schema::LocalTimestampNanos => Ty::Long,
                Schema::Float => Ty::Float,
                Schema::Double => Ty::Double,
                Schema::Bytes | Schema::BigDecimal => Ty::Bytes,
                Schema::String => Ty::String,
                Schema::Uuid => {
                    // Only ever on a string: parse strips `uuid` from fixed types, which apache-avro would otherwise
                    // turn into this same variant, losing the fixed's name and the difference in encoding.
                    logical = Logical::Uuid;
                    Ty::String
                }
                // Likewise stripped from fixed types at parse; kept here as the fixed(12) it annotates.
                Schema::Duration => Ty::Fixed { name: None, aliases: None, size: 12 },
                Schema::Array(array) => Ty::Array(&array.items),
                Schema::Map(map) => Ty::Map(&map.types),
                Schema::Union(union) => Ty::Union(union.variants()),
                Schema::Record(record) => Ty::Record(record),
                Schema::Enum(e) => Ty::Enum(e),
                Schema::Fixed(fixed) => {
                    Ty::Fixed { name: Some(&fixed.name), aliases: fixed.aliases.as_ref(), size: fixed.size }
                }
            };
            return Ok(View { ty, logical });
        }
        Err("a type that refers to itself without end".to_string())
    }

    /// What a union calls this branch in Avro's JSON encoding: the type's name, a named type's full name (for a
    /// logical type, its underlying type's, as Java and Confluent write it).
    fn branch_name(&self, schema: &Schema) -> String {
        match self.view(schema) {
            Ok(view) => match view.ty {
                Ty::Record(r) => r.name.fullname(None),
                Ty::Enum(e) => e.name.fullname(None),
                Ty::Fixed { name: Some(name), .. } => name.fullname(None),
                ty => ty.kind().to_string(),
            },
            Err(e) => e,
        }
    }

    /// A type in a sentence: `int`, `record 'com.acme.User'`, `array of long`, `union [null, string]`.
    fn describe(&self, schema: &Schema) -> String {
        match self.view(schema) {
            Ok(view) => match view.ty {
                Ty::Record(r) => format!("record '{}'", r.name.fullname(None)),
                Ty::Enum(e) => format!("enum '{}'", e.name.fullname(None)),
                Ty::Fixed { name: Some(name), size, .. } => format!("fixed '{}' (size {size})", name.fullname(None)),
                Ty::Fixed { name: None, size, .. } => format!("fixed (size {size})"),
                Ty::Array(items) => format!("array of {}", self.branch_name(items)),
                Ty::Map(values) => format!("map of {}", self.branch_name(values)),
                Ty::Union(branches) => {
                    let names: Vec<String> = branches.iter().map(|b| self.branch_name(b)).collect();
                    format!("union [{}]", names.join(", "))
                }
                ty => ty.kind().to_string(),
            },
            Err(e) => e,
        }
    }

    /// Whether a value of this type can take no bytes at all (null, fixed(0), a record of such fields): only then
    /// may an array or map block claim more items than there are bytes left.
    fn takes_no_bytes(&self, schema: &Schema, visiting: &mut HashSet<String>) -> bool {
        // A chain of distinct record types (through references) is as long as the schema makes it.
        if visiting.len() > MAX_COMPAT_DEPTH {
            return false;
        }
        match self.view(schema) {
            Ok(View { ty: Ty::Null, .. }) | Ok(View { ty: Ty::Fixed { size: 0, .. }, .. }) => true,
            Ok(View { ty: Ty::Record(record), .. }) => {
                let full = record.name.fullname(None);
                // A record that contains itself directly has no finite value at all.
                if !visiting.insert(full.clone()) {
                    return false;
                }
                let all = record.fields.iter().all(|f| self.takes_no_bytes(&f.schema, visiting));
                visiting.remove(&full);
                all
            }
            _ => false,
        }
    }
}

/// An apache-avro parse error as the user should read it.
fn schema_error(error: apache_avro::Error) -> InvalidSchema {
    use apache_avro::error::Details;
    let unknown = |name: &str| {
        InvalidSchema::new(format!(
            "unknown type '{name}': not an Avro type, nor a named type defined in the schema or in its references"
        ))
    };
    match error.details() {
        Details::ParsePrimitive(name) => unknown(name),
        Details::SchemaResolutionError(name) => unknown(&name.fullname(None)),
        _ => InvalidSchema::new(error.to_string()),
    }
}

/// Every named type defined in `schema`, by full name (apache-avro's parsed names are already qualified), and by
/// its aliases, which apache-avro also lets a schema refer to it by.
fn collect_names(schema: &Schema, names: &mut HashMap<String, Schema>) {
    let mut define = |name: &Name, aliases: &Option<Vec<Alias>>| {
        names.insert(name.fullname(None), schema.clone());
        for alias in aliases.iter().flatten() {
            names.entry(alias.fullname(None)).or_insert_with(|| schema.clone());
        }
    };
    match schema {
        Schema::Record(record) => {
            define(&record.name, &record.aliases);
            for field in &record.fields {
                collect_names(&field.schema, names);
            }
        }
        Schema::Enum(EnumSchema { name, aliases, .. }) | Schema::Fixed(FixedSchema { name, aliases, .. }) => {
            define(name, aliases);
        }
        Schema::Decimal(decimal) => collect_names(&decimal.inner, names),
        Schema::Array(array) => collect_names(&array.items, names),
        Schema::Map(map) => collect_names(&map.types, names),
        Schema::Union(union) => {
            for branch in union.variants() {
                collect_names(branch, names);
            }
        }
        _ => {}
    }
}

// ---- Before apache-avro sees a schema ----

/// What [`for_each_type_object`] calls on each type object; an error stops the walk.
type TypeVisitor<'v> = dyn FnMut(&mut Map<String, Json>) -> Result<(), String> + 'v;

/// Calls `visit` on every object of a schema's JSON that apache-avro reads as a type: the root, `type`, `items`,
/// `values`, union branches and record fields (which it also reads as types). Not default values.
fn for_each_type_object(value: &mut Json, visit: &mut TypeVisitor<'_>) -> Result<(), String> {
    match value {
        Json::Array(branches) => branches.iter_mut().try_for_each(|b| for_each_type_object(b, visit)),
        Json::Object(object) => {
            visit(object)?;
            for key in ["type", "items", "values"] {
                if let Some(inner) = object.get_mut(key) {
                    for_each_type_object(inner, visit)?;
                }
            }
            if let Some(Json::Array(fields)) = object.get_mut("fields") {
                fields.iter_mut().try_for_each(|f| for_each_type_object(f, visit))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Names, namespaces and aliases checked before parsing: apache-avro 0.21 unwraps its own validation of a named
/// type's name and aliases (a `"name": "1x"` panics inside the parser), and a clear sentence beats its regex.
fn check_names(schema: &Json) -> Result<(), String> {
    let mut copy = schema.clone();
    for_each_type_object(&mut copy, &mut |object| {
        let Some(Json::String(kind)) = object.get("type") else { return Ok(()) };
        if !matches!(kind.as_str(), "record" | "error" | "enum" | "fixed") {
            return Ok(());
        }
        match object.get("name") {
            Some(Json::String(name)) => check_full_name(name, "name")?,
            Some(other) => return Err(format!("the name of a {kind} must be a string, not {other}")),
            None => return Err(format!("a {kind} needs a \"name\"")),
        }
        if let Some(Json::String(namespace)) = object.get("namespace") {
            if !namespace.is_empty() {
                check_full_name(namespace, "namespace")?;
            }
        }
        if let Some(Json::Array(aliases)) = object.get("aliases") {
            for alias in aliases.iter().filter_map(Json::as_str) {
                check_full_name(alias, "alias")?;
            }
        }
        Ok(())
    })
}

/// A dotted Avro full name: each part starts with a letter or `_` and has only letters, digits and `_`.
fn check_full_name(name: &str, what: &str) -> Result<(), String> {
    let part_ok = |part: &str| {
        let mut chars = part.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if name.split('.').all(part_ok) {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} '{name}': each dot-separated part must start with a letter or '_' and hold only letters, digits and '_'"
        ))
    }
}

/// `uuid` and `duration` on a fixed type become bare `Schema::Uuid` / `Schema::Duration` in apache-avro, which lose
/// the fixed's name and size (and it then encodes a fixed uuid with a length prefix, unlike Java). Parsed without
/// the annotation they stay the fixed types they are; the normalized text, made from the original, keeps it.
fn strip_fixed_logical_types(schema: &mut Json) {
    let _ = for_each_type_object(schema, &mut |object| {
        if object.get("type").and_then(Json::as_str) == Some("fixed")
            && matches!(object.get("logicalType").and_then(Json::as_str), Some("uuid" | "duration"))
        {
            object.remove("logicalType");
        }
        Ok(())
    });
}

// ---- Normalization ----

/// The schema's JSON in one form, made from the text as written (apache-avro's tree drops the attributes of
/// primitive types, such as `avro.java.string` or an unknown `logicalType`, which Confluent keeps).
fn normalize(value: &Json, namespace: Option<&str>) -> Json {
    match value {
        Json::String(name) => Json::String(qualify(name, namespace)),
        Json::Array(branches) => Json::Array(branches.iter().map(|b| normalize(b, namespace)).collect()),
        Json::Object(object) => normalize_object(object, namespace),
        other => other.clone(),
    }
}

fn normalize_object(object: &Map<String, Json>, namespace: Option<&str>) -> Json {
    let others = |skip: &[&str]| -> Map<String, Json> {
        object.iter().filter(|(k, _)| !skip.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let mut out = match object.get("type") {
        Some(Json::String(kind)) => match kind.as_str() {
            "record" | "error" | "enum" | "fixed" => {
                let full = full_name(object, namespace);
                let inner_namespace = full.rsplit_once('.').map(|(ns, _)| ns.to_string());
                let mut out = others(&["namespace", "aliases", "fields"]);
                out.insert("name".into(), Json::String(full));
                if let Some(aliases) = normalize_aliases(object.get("aliases"), inner_namespace.as_deref()) {
                    out.insert("aliases".into(), aliases);
                }
                if let Some(Json::Array(fields)) = object.get("fields") {
                    let fields = fields.iter().map(|f| normalize_field(f, inner_namespace.as_deref())).collect();
                    out.insert("fields".into(), Json::Array(fields));
                }
                out
            }
            "array" | "map" => {
                let key = if kind == "array" { "items" } else { "values" };
                let mut out = others(&[]);
                if let Some(inner) = object.get(key) {
                    out.insert(key.into(), normalize(inner, namespace));
                }
                out
            }
            name => {
                let rest = others(&["type"]);
                if rest.is_empty() {
                    // {"type": "string"} is "string"; {"type": "com.acme.Address"} is the reference.
                    return Json::String(qualify(name, namespace));
                }
                let mut out = rest;
                out.insert("type".into(), Json::String(qualify(name, namespace)));
                out
            }
        },
        Some(inner @ (Json::Object(_) | Json::Array(_))) => {
            let rest = others(&["type"]);
            if rest.is_empty() {
                // {"type": {...}} wraps a type without adding anything.
                return normalize(inner, namespace);
            }
            let mut out = rest;
            out.insert("type".into(), normalize(inner, namespace));
            out
        }
        _ => return Json::Object(object.clone()),
    };
    if out.get("logicalType").and_then(Json::as_str) == Some("decimal") && !out.contains_key("scale") {
        out.insert("scale".into(), Json::from(0));
    }
    Json::Object(out)
}

fn normalize_field(field: &Json, namespace: Option<&str>) -> Json {
    let Json::Object(field) = field else { return field.clone() };
    let mut out = Map::new();
    for (key, value) in field {
        match key.as_str() {
            "type" => {
                out.insert(key.clone(), normalize(value, namespace));
            }
            "aliases" => {
                if let Some(aliases) = normalize_aliases(Some(value), None) {
                    out.insert(key.clone(), aliases);
                }
            }
            // The default order.
            "order" if value.as_str() == Some("ascending") => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Json::Object(out)
}

/// Aliases qualified by the type's namespace (as the specification reads an unqualified alias), sorted and
/// deduplicated: their order means nothing.
fn normalize_aliases(aliases: Option<&Json>, namespace: Option<&str>) -> Option<Json> {
    let Some(Json::Array(aliases)) = aliases else { return aliases.cloned() };
    let mut names: Vec<String> = aliases.iter().filter_map(Json::as_str).map(|a| qualify(a, namespace)).collect();
    names.sort();
    names.dedup();
    (!names.is_empty()).then(|| Json::Array(names.into_iter().map(Json::String).collect()))
}

/// A named type's full name from its `name`, `namespace` and the enclosing namespace, as the specification says.
fn full_name(object: &Map<String, Json>, enclosing: Option<&str>) -> String {
    let name = object.get("name").and_then(Json::as_str).unwrap_or_default();
    if name.contains('.') {
        return name.trim_start_matches('.').to_string();
    }
    match object.get("namespace").and_then(Json::as_str).or(enclosing) {
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

/// A type name as written, qualified by the enclosing namespace unless it is a primitive or already dotted.
fn qualify(name: &str, namespace: Option<&str>) -> String {
    if PRIMITIVES.contains(&name) {
        return name.to_string();
    }
    if name.contains('.') {
        // A leading dot names the null namespace explicitly.
        return name.trim_start_matches('.').to_string();
    }
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

/// Object keys in this order, then the others alphabetically (Parsing Canonical Form's order first).
const KEY_ORDER: [&str; 16] = [
    "name",
    "type",
    "fields",
    "symbols",
    "items",
    "values",
    "size",
    "logicalType",
    "precision",
    "scale",
    "default",
    "aliases",
    "doc",
    "order",
    "namespace",
    "connect.name",
];

/// Compact JSON with keys in one order, whatever order the map keeps (serde_json's `preserve_order` feature may be
/// on in the build through another crate).
fn write_json(value: &Json, out: &mut String) {
    match value {
        Json::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort_by_key(|k| (KEY_ORDER.iter().position(|o| o == k).unwrap_or(KEY_ORDER.len()), k.as_str()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(key, out);
                out.push(':');
                if let Some(v) = object.get(key) {
                    write_json(v, out);
                }
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Json::String(s) => write_json_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---- Types as the codec and the compatibility check see them ----

#[derive(Clone, Copy)]
enum Logical {
    None,
    Decimal { precision: usize, scale: usize },
    Uuid,
}

struct View<'a> {
    ty: Ty<'a>,
    logical: Logical,
}

#[derive(Clone, Copy)]
enum Ty<'a> {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array(&'a Schema),
    Map(&'a Schema),
    Union(&'a [Schema]),
    Record(&'a RecordSchema),
    Enum(&'a EnumSchema),
    Fixed { name: Option<&'a Name>, aliases: Option<&'a Vec<Alias>>, size: usize },
}

impl Ty<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Ty::Null => "null",
            Ty::Boolean => "boolean",
            Ty::Int => "int",
            Ty::Long => "long",
            Ty::Float => "float",
            Ty::Double => "double",
            Ty::Bytes => "bytes",
            Ty::String => "string",
            Ty::Array(_) => "array",
            Ty::Map(_) => "map",
            Ty::Union(_) => "union",
            Ty::Record(_) => "record",
            Ty::Enum(_) => "enum",
            Ty::Fixed { .. } => "fixed",
        }
    }
}

// ---- Compatibility ----

/// One reason, located by a path relative to the pair of types it was found in (prefixed on the way up).
#[derive(Clone)]
struct Problem {
    path: String,
    message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { path: path.into(), message: message.into() }
    }
}

struct Compat<'a> {
    reader: &'a AvroSchema,
    writer: &'a AvroSchema,
    /// Pairs of named types being compared further up: met again (a recursive type), they are taken as compatible,
    /// as Java does, which is sound since every other part of the pair is checked on the way.
    in_progress: HashSet<(String, String)>,
    /// Pairs of named types already compared, so a type used in many places is compared once.
    done: HashMap<(String, String), Vec<Problem>>,
}

impl Compat<'_> {
    fn check(&mut self, reader: &Schema, writer: &Schema, depth: usize) -> Vec<Problem> {
        if depth > MAX_COMPAT_DEPTH {
            return vec![Problem::new(
                "",
                format!("the schemas nest deeper than {MAX_COMPAT_DEPTH} types; not checked further"),
            )];
        }
        let (r, w) = match (self.reader.view(reader), self.writer.view(writer)) {
            (Ok(r), Ok(w)) => (r, w),
            (Err(e), _) => return vec![Problem::new("", format!("the reader's {e}"))],
            (_, Err(e)) => return vec![Problem::new("", format!("the writer's {e}"))],
        };
        let mismatch = || {
            vec![Problem::new(
                "",
                format!(
                    "reader type {} is not compatible with writer type {}",
                    self.reader.describe(reader),
                    self.writer.describe(writer)
                ),
            )]
        };
        match (r.ty, w.ty) {
            // Each branch the writer may have written must be readable (by the reader's union or its only type).
            (_, Ty::Union(branches)) => {
                let mut problems = Vec::new();
                for (i, branch) in branches.iter().enumerate() {
                    problems.extend(prefixed(&format!("/{i}"), self.check(reader, branch, depth + 1)));
                }
                capped(problems)
            }
            (Ty::Union(branches), _) => {
                let mut same_kind = None;
                for branch in branches {
                    let problems = self.check(branch, writer, depth + 1);
                    if problems.is_empty() {
                        return Vec::new();
                    }
                    if self.reader.view(branch).is_ok_and(|b| same_type(&b.ty, &w.ty)) {
                        same_kind = Some(problems);
                    }
                }
                // The branch of the writer's type (and name) says best why it cannot read it.
                same_kind.unwrap_or_else(|| {
                    vec![Problem::new(
                        "",
                        format!(
                            "reader {} has no branch that can read writer type {}",
                            self.reader.describe(reader),
                            self.writer.describe(writer)
                        ),
                    )]
                })
            }
            (Ty::Null, Ty::Null)
            | (Ty::Boolean, Ty::Boolean)
            | (Ty::Int, Ty::Int)
            | (Ty::Long, Ty::Long | Ty::Int)
            | (Ty::Float, Ty::Float | Ty::Long | Ty::Int)
            | (Ty::Double, Ty::Double | Ty::Float | Ty::Long | Ty::Int)
            | (Ty::Bytes | Ty::String, Ty::Bytes | Ty::String) => Vec::new(),
            (Ty::Array(r_items), Ty::Array(w_items)) => prefixed("/items", self.check(r_items, w_items, depth + 1)),
            (Ty::Map(r_values), Ty::Map(w_values)) => prefixed("/values", self.check(r_values, w_values, depth + 1)),
            (Ty::Fixed { name: r_name, aliases, size: r_size }, Ty::Fixed { name: w_name, size: w_size, .. }) => {
                let mut problems = Vec::new();
                if let (Some(r_name), Some(w_name)) = (r_name, w_name) {
                    problems.extend(name_problem(r_name, aliases, w_name));
                }
                if r_size != w_size {
                    let label =
                        |name: Option<&Name>| name.map(|n| format!(" '{}'", n.fullname(None))).unwrap_or_default();
                    problems.push(Problem::new(
                        "/size",
                        format!(
                            "reader fixed{} has size {r_size} but writer fixed{} has size {w_size}",
                            label(r_name),
                            label(w_name)
                        ),
                    ));
                }
                problems
            }
            (Ty::Enum(r_enum), Ty::Enum(w_enum)) => {
                let key = (r_enum.name.fullname(None), w_enum.name.fullname(None));
                self.named_pair(key, |_| {
                    let mut problems: Vec<Problem> =
                        name_problem(&r_enum.name, r_enum.aliases.as_ref(), &w_enum.name).into_iter().collect();
                    let missing: Vec<&str> =
                        w_enum.symbols.iter().filter(|s| !r_enum.symbols.contains(s)).map(String::as_str).collect();
                    if !missing.is_empty() && r_enum.default.is_none() {
                        problems.push(Problem::new(
                            "/symbols",
                            format!(
                                "the writer's symbols [{}] are missing from reader enum '{}', which has no default",
                                missing.join(", "),
                                r_enum.name.fullname(None)
                            ),
                        ));
                    }
                    problems
                })
            }
            (Ty::Record(r_record), Ty::Record(w_record)) => {
                let key = (r_record.name.fullname(None), w_record.name.fullname(None));
                self.named_pair(key, |this| {
                    let mut problems: Vec<Problem> =
                        name_problem(&r_record.name, r_record.aliases.as_ref(), &w_record.name).into_iter().collect();
                    for (i, r_field) in r_record.fields.iter().enumerate() {
                        // The writer's field of the reader field's name, or of one of its aliases.
                        let w_field = w_record.fields.iter().find(|f| f.name == r_field.name).or_else(|| {
                            r_field.aliases.iter().flatten().find_map(|a| w_record.fields.iter().find(|f| &f.name == a))
                        });
                        match w_field {
                            Some(w_field) => problems.extend(prefixed(
                                &format!("/fields/{i}/type"),
                                this.check(&r_field.schema, &w_field.schema, depth + 1),
                            )),
                            None if r_field.default.is_none() => problems.push(Problem::new(
                                format!("/fields/{i}"),
                                format!("reader field '{}' has no default and is missing in the writer", r_field.name),
                            )),
                            None => {}
                        }
                    }
                    capped(problems)
                })
            }
            _ => mismatch(),
        }
    }

    /// Compares a pair of named types once, and a pair met again inside itself as compatible.
    fn named_pair(&mut self, key: (String, String), compare: impl FnOnce(&mut Self) -> Vec<Problem>) -> Vec<Problem> {
        if let Some(problems) = self.done.get(&key) {
            return problems.clone();
        }
        if !self.in_progress.insert(key.clone()) {
            return Vec::new();
        }
        let problems = compare(self);
        self.in_progress.remove(&key);
        self.done.insert(key, problems.clone());
        problems
    }
}

/// Whether two types are of one kind, and for named types of one unqualified name: a union's branch that should
/// read the writer's type.
fn same_type(a: &Ty<'_>, b: &Ty<'_>) -> bool {
    match (a, b) {
        (Ty::Record(a), Ty::Record(b)) => a.name.name == b.name.name,
        (Ty::Enum(a), Ty::Enum(b)) => a.name.name == b.name.name,
        (Ty::Fixed { name: Some(a), .. }, Ty::Fixed { name: Some(b), .. }) => a.name == b.name,
        (a, b) => a.kind() == b.kind(),
    }
}

/// Named types match by unqualified name (the specification; Java compares `getName()`), or when one of the
/// reader's aliases is the writer's full name.
fn name_problem(reader: &Name, reader_aliases: Option<&Vec<Alias>>, writer: &Name) -> Option<Problem> {
    let writer_full = writer.fullname(None);
    if reader.name == writer.name || reader_aliases.into_iter().flatten().any(|a| a.fullname(None) == writer_full) {
        return None;
    }
    Some(Problem::new(
        "/name",
        format!(
            "reader type '{}' and writer type '{writer_full}' have different names, and no alias of the reader's is '{writer_full}'",
            reader.fullname(None)
        ),
    ))
}

fn prefixed(prefix: &str, problems: Vec<Problem>) -> Vec<Problem> {
    problems.into_iter().map(|p| Problem { path: format!("{prefix}{}", p.path), message: p.message }).collect()
}

fn capped(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.truncate(MAX_PROBLEMS);
    problems
}

// ---- Payload paths ----

/// Where in a payload: `/address/zip`, `/items/3`, built on the stack and only written out for an error.
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl Path<'_> {
    fn write_to(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(parent, key) => {
                parent.write_to(f)?;
                // JSON Pointer's escapes.
                write!(f, "/{}", key.replace('~', "~0").replace('/', "~1"))
            }
            Path::Index(parent, i) => {
                parent.write_to(f)?;
                write!(f, "/{i}")
            }
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("/"),
            path => path.write_to(f),
        }
    }
}

fn payload_error(path: &Path<'_>, message: impl fmt::Display) -> PayloadError {
    PayloadError::new(format!("{path}: {message}"))
}

/// A JSON value in an error message, short.
fn brief(value: &Json) -> String {
    match value {
        Json::Array(_) => "an array".to_string(),
        Json::Object(_) => "an object".to_string(),
        other => {
            let text = other.to_string();
            if text.chars().count() > 40 {
                format!("{}…", text.chars().take(40).collect::<String>())
            } else {
                text
            }
        }
    }
}

// ---- JSON to binary ----

struct Encoder<'a> {
    schema: &'a AvroSchema,
    /// Encode calls made while trying a bare value against union branches.
    trial_steps: usize,
    /// How many union trials enclose the current call.
    trials: usize,
}

impl Encoder<'_> {
    /// Writes `value` as `schema` to `out`. In `default` mode the value is a field's default, where a union's value
    /// is its first branch's, bare (the specification's rule for defaults).
    fn encode(
        &mut self,
        schema: &Schema,
        value: &Json,
        path: &Path<'_>,
        depth: usize,
        default: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), PayloadError> {
        if depth > MAX_DEPTH {
            return Err(payload_error(path, format!("the value nests deeper than {MAX_DEPTH} levels")));
        }
        if out.len() > MAX_ENCODED_BYTES {
            return Err(payload_error(path, format!("the encoded value would be over {MAX_ENCODED_BYTES} bytes")));
        }
        if self.trials > 0 {
            self.trial_steps += 1;
            if self.trial_steps > MAX_TRIAL_STEPS {
                return Err(payload_error(
                    path,
                    "too much work matching bare values to union branches: write union values as {\"branch\": value}",
                ));
            }
        }
        let view = self.schema.view(schema).map_err(|e| payload_error(path, e))?;
        let expected = |what: &str| payload_error(path, format!("expected {what}, got {}", brief(value)));
        match view.ty {
            Ty::Null => match value {
                Json::Null => Ok(()),
                _ => Err(expected("null")),
            },
            Ty::Boolean => match value {
                Json::Bool(b) => {
                    out.push(u8::from(*b));
                    Ok(())
                }
                _ => Err(expected("a boolean")),
            },
            Ty::Int => {
                let n = json_i64(value).and_then(|n| i32::try_from(n).ok()).ok_or_else(|| expected("an int"))?;
                write_long(out, i64::from(n));
                Ok(())
            }
            Ty::Long => {
                let n = json_i64(value).ok_or_else(|| expected("a long"))?;
                write_long(out, n);
                Ok(())
            }
            Ty::Float => {
                let x = json_f64(value).ok_or_else(|| expected("a float"))?;
                let f = x as f32;
                if x.is_finite() && !f.is_finite() {
                    return Err(payload_error(path, format!("{x} is out of a float's range")));
                }
                out.extend_from_slice(&f.to_le_bytes());
                Ok(())
            }
            Ty::Double => {
                let x = json_f64(value).ok_or_else(|| expected("a double"))?;
                out.extend_from_slice(&x.to_le_bytes());
                Ok(())
            }
            Ty::Bytes => {
                let bytes = match (view.logical, value) {
                    (Logical::Decimal { precision, scale }, Json::Number(n)) => {
                        decimal_bytes(n, precision, scale).map_err(|e| payload_error(path, e))?
                    }
                    (_, Json::String(s)) => code_points_to_bytes(s).map_err(|e| payload_error(path, e))?,
                    _ => return Err(expected("bytes (a string of code points 0-255)")),
                };
                write_long(out, bytes.len() as i64);
                out.extend_from_slice(&bytes);
                Ok(())
            }
            Ty::String => {
                let s = value.as_str().ok_or_else(|| expected("a string"))?;
                if let Logical::Uuid = view.logical {
                    if !is_uuid(s) {
                        return Err(payload_error(path, format!("{} is not a UUID", brief(value))));
                    }
                }
                write_long(out, s.len() as i64);
                out.extend_from_slice(s.as_bytes());
                Ok(())
            }
            Ty::Fixed { size, .. } => {
                // A schema may declare any size; the sign extension below would allocate it.
                if size > MAX_ENCODED_BYTES {
                    return Err(payload_error(
                        path,
                        format!("a fixed of {size} bytes is over {MAX_ENCODED_BYTES} bytes"),
                    ));
                }
                let bytes = match (view.logical, value) {
                    (Logical::Decimal { precision, scale }, Json::Number(n)) => {
                        let bytes = decimal_bytes(n, precision, scale).map_err(|e| payload_error(path, e))?;
                        sign_extend(&bytes, size).ok_or_else(|| {
                            payload_error(path, format!("the decimal {n} does not fit in a fixed of {size} bytes"))
                        })?
                    }
                    (_, Json::String(s)) => code_points_to_bytes(s).map_err(|e| payload_error(path, e))?,
                    _ => return Err(expected(&format!("a fixed of {size} bytes (a string of code points 0-255)"))),
                };
                if bytes.len() != size {
                    return Err(payload_error(
                        path,
                        format!("expected {size} bytes for the fixed, got {}", bytes.len()),
                    ));
                }
                out.extend_from_slice(&bytes);
                Ok(())
            }
            Ty::Enum(e) => {
                let symbol = value.as_str().ok_or_else(|| expected("an enum symbol (a string)"))?;
                let index = e.symbols.iter().position(|s| s == symbol).ok_or_else(|| {
                    payload_error(
                        path,
                        format!(
                            "'{symbol}' is not a symbol of enum '{}' ({})",
                            e.name.fullname(None),
                            e.symbols.join(", ")
                        ),
                    )
                })?;
                write_long(out, index as i64);
                Ok(())
            }
            Ty::Array(items) => {
                let values = value.as_array().ok_or_else(|| expected("an array"))?;
                if !values.is_empty() {
                    write_long(out, values.len() as i64);
                    for (i, item) in values.iter().enumerate() {
                        self.encode(items, item, &Path::Index(path, i), depth + 1, default, out)?;
                    }
                }
                out.push(0);
                Ok(())
            }
            Ty::Map(values_schema) => {
                let entries = value.as_object().ok_or_else(|| expected("an object (a map)"))?;
                if !entries.is_empty() {
                    write_long(out, entries.len() as i64);
                    for (key, item) in entries {
                        write_long(out, key.len() as i64);
                        out.extend_from_slice(key.as_bytes());
                        self.encode(values_schema, item, &Path::Key(path, key), depth + 1, default, out)?;
                    }
                }
                out.push(0);
                Ok(())
            }
            Ty::Record(record) => {
                let object = value
                    .as_object()
                    .ok_or_else(|| expected(&format!("an object (record '{}')", record.name.fullname(None))))?;
                if let Some(unknown) = object.keys().find(|k| !record.fields.iter().any(|f| &f.name == *k)) {
                    let fields: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
                    return Err(payload_error(
                        path,
                        format!(
                            "unknown field '{unknown}': record '{}' has the fields {}",
                            record.name.fullname(None),
                            fields.join(", ")
                        ),
                    ));
                }
                for field in &record.fields {
                    let field_path = Path::Key(path, &field.name);
                    match (object.get(&field.name), &field.default) {
                        (Some(v), _) => self.encode(&field.schema, v, &field_path, depth + 1, default, out)?,
                        (None, Some(d)) => self.encode(&field.schema, d, &field_path, depth + 1, true, out)?,
                        (None, None) => {
                            return Err(payload_error(&field_path, "missing, and the field has no default"));
                        }
                    }
                }
                Ok(())
            }
            Ty::Union(branches) => self.encode_union(schema, branches, value, path, depth, default, out),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn encode_union(
        &mut self,
        schema: &Schema,
        branches: &[Schema],
        value: &Json,
        path: &Path<'_>,
        depth: usize,
        default: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), PayloadError> {
        let avro = self.schema;
        let union = || avro.describe(schema);
        if default {
            if let Some(first) = branches.first() {
                let mut buffer = Vec::new();
                if self.encode(first, value, path, depth + 1, true, &mut buffer).is_ok() {
                    write_long(out, 0);
                    out.extend_from_slice(&buffer);
                    return Ok(());
                }
            }
        }
        if value.is_null() {
            let index = branches
                .iter()
                .position(|b| matches!(self.schema.view(b), Ok(View { ty: Ty::Null, .. })))
                .ok_or_else(|| payload_error(path, format!("null is not allowed: {} has no null branch", union())))?;
            write_long(out, index as i64);
            return Ok(());
        }
        // Avro's JSON encoding: {"branch name": value}.
        if let Some((key, inner)) = value.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next()) {
            let names: Vec<String> = branches.iter().map(|b| self.schema.branch_name(b)).collect();
            let by_full = names.iter().position(|n| n == key);
            // A named branch may also be called by its short name, when that is unambiguous.
            let by_short = || {
                let short: Vec<usize> =
                    (0..names.len()).filter(|&i| names[i].rsplit('.').next() == Some(key.as_str())).collect();
                (short.len() == 1).then(|| short[0])
            };
            if let Some(index) = by_full.or_else(by_short) {
                write_long(out, index as i64);
                return self.encode(&branches[index], inner, &Path::Key(path, key), depth + 1, false, out);
            }
        }
        // A bare value, accepted when exactly one branch takes it.
        let candidates: Vec<usize> = (0..branches.len())
            .filter(|&i| !matches!(self.schema.view(&branches[i]), Ok(View { ty: Ty::Null, .. })))
            .collect();
        if let [only] = candidates[..] {
            let mut buffer = Vec::new();
            self.encode(&branches[only], value, path, depth + 1, false, &mut buffer)?;
            write_long(out, only as i64);
            out.extend_from_slice(&buffer);
            return Ok(());
        }
        let mut fits = Vec::new();
        self.trials += 1;
        for &i in &candidates {
            let mut buffer = Vec::new();
            match self.encode(&branches[i], value, path, depth + 1, false, &mut buffer) {
                Ok(()) => fits.push((i, buffer)),
                Err(e) if self.trial_steps > MAX_TRIAL_STEPS => {
                    self.trials -= 1;
                    return Err(e);
                }
                Err(_) => {}
            }
        }
        self.trials -= 1;
        match fits.len() {
            1 => {
                let (index, buffer) = fits.remove(0);
                write_long(out, index as i64);
                out.extend_from_slice(&buffer);
                Ok(())
            }
            0 => Err(payload_error(path, format!("{} fits no branch of {}", brief(value), union()))),
            _ => {
                let names: Vec<String> = fits.iter().map(|(i, _)| self.schema.branch_name(&branches[*i])).collect();
                Err(payload_error(
                    path,
                    format!(
                        "{} fits several branches of {} ({}): write it as {{\"{}\": value}}",
                        brief(value),
                        union(),
                        names.join(", "),
                        names[0]
                    ),
                ))
            }
        }
    }
}

/// Avro's variable-length zig-zag long.
fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// An integral JSON number as i64 (also `3.0`, which some JSON writers produce for integers).
fn json_i64(value: &Json) -> Option<i64> {
    let n = value.as_number()?;
    n.as_i64().or_else(|| {
        // [-2^63, 2^63): the f64 range that converts to i64 exactly when integral.
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= -9_223_372_036_854_775_808.0 && *f < 9_223_372_036_854_775_808.0)
            .map(|f| f as i64)
    })
}

/// A JSON number, or the strings Java's Avro writes for the floats JSON has no number for.
fn json_f64(value: &Json) -> Option<f64> {
    match value {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Bytes in Avro's JSON encoding: one code point 0–255 per byte.
fn code_points_to_bytes(s: &str) -> Result<Vec<u8>, String> {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            u8::try_from(u32::from(c)).map_err(|_| {
                format!("character {i} (U+{:04X}) is not a byte: bytes are written as code points 0-255", u32::from(c))
            })
        })
        .collect()
}

fn bytes_to_code_points(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// A JSON number as a decimal's unscaled value in big-endian two's complement (as Java's `BigInteger.toByteArray`
/// writes it). Exact: an integer is read as written; a number with a fraction arrives from serde_json as an f64,
/// whose shortest representation is the number as written only when it has at most 15 significant digits, so longer
/// ones are refused (the bytes string of the specification carries any decimal exactly).
fn decimal_bytes(n: &Number, precision: usize, scale: usize) -> Result<Vec<u8>, String> {
    let text = if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        let f = n.as_f64().ok_or_else(|| format!("{n} is not a number"))?;
        // Rust writes an f64 as its shortest round-trip decimal, without an exponent.
        let text = format!("{f}");
        let significant = text.trim_start_matches('-').replace('.', "");
        let significant = significant.trim_start_matches('0').trim_end_matches('0');
        if significant.len() > 15 {
            return Err(format!(
                "{n} has more significant digits than a JSON number carries exactly; give the decimal as Avro's bytes string"
            ));
        }
        text
    };
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > scale {
        return Err(format!("{n} has more than the decimal's {scale} digits after the point"));
    }
    let significant: String = whole.chars().chain(fraction.chars()).collect();
    let significant = significant.trim_start_matches('0');
    if !significant.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{n} is not a decimal number"));
    }
    if significant.is_empty() {
        return Ok(vec![0]);
    }
    // Counted before the zeros of the scale are written: a schema's scale can be any number.
    let unscaled_digits = significant.len().saturating_add(scale - fraction.len());
    if unscaled_digits > precision {
        return Err(format!("{n} has more than the decimal's precision of {precision} digits"));
    }
    if unscaled_digits > MAX_DECIMAL_DIGITS {
        return Err(format!("{n} at scale {scale} has more than {MAX_DECIMAL_DIGITS} digits"));
    }
    let mut unscaled = significant.to_string();
    unscaled.extend(std::iter::repeat_n('0', scale - fraction.len()));
    // Magnitude in base 256, big-endian, with a leading zero byte so the sign bit is free.
    let mut magnitude = vec![0u8];
    for digit in unscaled.bytes() {
        let mut carry = u32::from(digit - b'0');
        for byte in magnitude.iter_mut().rev() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            magnitude.insert(0, carry as u8);
        }
        if magnitude[0] != 0 {
            magnitude.insert(0, 0);
        }
    }
    if negative {
        // Two's complement: invert and add one.
        for byte in magnitude.iter_mut() {
            *byte = !*byte;
        }
        for byte in magnitude.iter_mut().rev() {
            let (v, overflow) = byte.overflowing_add(1);
            *byte = v;
            if !overflow {
                break;
            }
        }
    }
    // Minimal: drop a leading byte that only repeats the next one's sign bit.
    while magnitude.len() > 1
        && ((magnitude[0] == 0 && magnitude[1] & 0x80 == 0) || (magnitude[0] == 0xff && magnitude[1] & 0x80 != 0))
    {
        magnitude.remove(0);
    }
    Ok(magnitude)
}

/// Two's complement bytes widened to `size` bytes, or None when they do not fit.
fn sign_extend(bytes: &[u8], size: usize) -> Option<Vec<u8>> {
    if bytes.len() > size {
        return None;
    }
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0 };
    let mut out = vec![fill; size - bytes.len()];
    out.extend_from_slice(bytes);
    Some(out)
}

// ---- Binary to JSON ----

struct Decoder<'a> {
    schema: &'a AvroSchema,
    bytes: &'a [u8],
    pos: usize,
    /// Values this decode may still produce (see DECODE_VALUE_ALLOWANCE).
    values_left: usize,
    /// A union's value as Avro's JSON encoding writes it, `{"branch": value}`; or as it is.
    tag_unions: bool,
}

impl<'a> Decoder<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn truncated(&self, path: &Path<'_>, what: &str) -> PayloadError {
        payload_error(path, format!("the payload ends at byte {} inside {what}", self.bytes.len()))
    }

    /// `n` bytes, checked against what is left before anything is sliced or allocated.
    fn take(&mut self, n: usize, path: &Path<'_>, what: &str) -> Result<&'a [u8], PayloadError> {
        if n > self.remaining() {
            return Err(self.truncated(path, what));
        }
        let bytes = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn read_long(&mut self, path: &Path<'_>, what: &str) -> Result<i64, PayloadError> {
        let start = self.pos;
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self.bytes.get(self.pos).ok_or_else(|| self.truncated(path, what))?;
            self.pos += 1;
            // The tenth byte holds the 64th bit only.
            if shift == 63 && byte > 1 {
                return Err(payload_error(path, format!("the {what} at byte {start} overflows a long")));
            }
            z |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(payload_error(path, format!("the {what} at byte {start} overflows a long")))
    }

    /// A length (of bytes, a string): not negative, and not past the payload's end.
    fn read_len(&mut self, path: &Path<'_>, what: &str) -> Result<usize, PayloadError> {
        let n = self.read_long(path, &format!("length of a {what}"))?;
        let n = usize::try_from(n).map_err(|_| payload_error(path, format!("a {what} of negative length {n}")))?;
        if n > self.remaining() {
            return Err(self.truncated(path, &format!("a {what} of {n} bytes")));
        }
        Ok(n)
    }

    /// The item count of an array or map block (0 ends the value), bounded before anything is allocated.
    fn read_block_count(&mut self, item: &Schema, path: &Path<'_>, what: &str) -> Result<usize, PayloadError> {
        let count = self.read_long(path, &format!("{what} block count"))?;
        let count = if count < 0 {
            // A negative count is followed by the block's size in bytes, which we need not use but must read.
            let size = self.read_long(path, &format!("{what} block size"))?;
            if size < 0 || size as u64 > self.remaining() as u64 {
                return Err(payload_error(path, format!("{what} block size {size} is not within the payload")));
            }
            count.checked_neg().ok_or_else(|| payload_error(path, format!("{what} block count {count}")))?
        } else {
            count
        };
        let count = count as u64;
        // Each item takes a byte at least (a map's key takes its length), unless it can take none.
        if count > self.remaining() as u64 && (what == "map" || !self.schema.takes_no_bytes(item, &mut HashSet::new()))
        {
            return Err(self.truncated(path, &format!("{what} block of {count} items")));
        }
        if count > self.values_left as u64 {
            return Err(payload_error(
                path,
                format!("{what} block of {count} items is more than the payload can hold"),
            ));
        }
        Ok(count as usize)
    }

    fn decode(&mut self, schema: &Schema, path: &Path<'_>, depth: usize) -> Result<Json, PayloadError> {
        if depth > MAX_DEPTH {
            return Err(payload_error(path, format!("the value nests deeper than {MAX_DEPTH} levels")));
        }
        self.values_left = self
            .values_left
            .checked_sub(1)
            .ok_or_else(|| payload_error(path, "more values than the payload can hold"))?;
        let view = self.schema.view(schema).map_err(|e| payload_error(path, e))?;
        Ok(match view.ty {
            Ty::Null => Json::Null,
            Ty::Boolean => match self.take(1, path, "a boolean")?[0] {
                0 => Json::Bool(false),
                1 => Json::Bool(true),
                b => return Err(payload_error(path, format!("byte {} is {b}, not a boolean (0 or 1)", self.pos - 1))),
            },
            Ty::Int => {
                let n = self.read_long(path, "int")?;
                let n = i32::try_from(n).map_err(|_| payload_error(path, format!("{n} is out of an int's range")))?;
                Json::from(n)
            }
            Ty::Long => Json::from(self.read_long(path, "long")?),
            Ty::Float => {
                let raw = self.take(4, path, "a float")?;
                let x = f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
                // Through the float's shortest decimal, so 0.1f32 reads back as 0.1, not 0.10000000149011612.
                float_json(format!("{x}").parse::<f64>().unwrap_or(f64::from(x)))
            }
            Ty::Double => {
                let raw = self.take(8, path, "a double")?;
                let mut b = [0u8; 8];
                b.copy_from_slice(raw);
                float_json(f64::from_le_bytes(b))
            }
            Ty::Bytes => {
                let n = self.read_len(path, "bytes")?;
                Json::String(bytes_to_code_points(self.take(n, path, "bytes")?))
            }
            Ty::String => {
                let n = self.read_len(path, "string")?;
                let start = self.pos;
                let raw = self.take(n, path, "a string")?;
                let s = std::str::from_utf8(raw)
                    .map_err(|e| payload_error(path, format!("the string at byte {start} is not UTF-8: {e}")))?;
                Json::String(s.to_string())
            }
            Ty::Fixed { size, .. } => {
                Json::String(bytes_to_code_points(self.take(size, path, &format!("a fixed of {size} bytes"))?))
            }
            Ty::Enum(e) => {
                let index = self.read_long(path, "enum index")?;
                let symbol = usize::try_from(index).ok().and_then(|i| e.symbols.get(i)).ok_or_else(|| {
                    payload_error(
                        path,
                        format!(
                            "enum index {index} is out of enum '{}' ({} symbols)",
                            e.name.fullname(None),
                            e.symbols.len()
                        ),
                    )
                })?;
                Json::String(symbol.clone())
            }
            Ty::Array(items) => {
                let mut values = Vec::new();
                loop {
                    let count = self.read_block_count(items, path, "array")?;
                    if count == 0 {
                        break;
                    }
                    for _ in 0..count {
                        let item_path = Path::Index(path, values.len());
                        let item = self.decode(items, &item_path, depth + 1)?;
                        values.push(item);
                    }
                }
                Json::Array(values)
            }
            Ty::Map(values_schema) => {
                let mut entries = Map::new();
                loop {
                    let count = self.read_block_count(values_schema, path, "map")?;
                    if count == 0 {
                        break;
                    }
                    for _ in 0..count {
                        let n = self.read_len(path, "map key")?;
                        let start = self.pos;
                        let raw = self.take(n, path, "a map key")?;
                        let key = std::str::from_utf8(raw)
                            .map_err(|e| payload_error(path, format!("the map key at byte {start} is not UTF-8: {e}")))?
                            .to_string();
                        let value = self.decode(values_schema, &Path::Key(path, &key), depth + 1)?;
                        // A repeated key: the last one wins, as in Java.
                        entries.insert(key, value);
                    }
                }
                Json::Object(entries)
            }
            Ty::Record(record) => {
                let mut fields = Map::new();
                for field in &record.fields {
                    let value = self.decode(&field.schema, &Path::Key(path, &field.name), depth + 1)?;
                    fields.insert(field.name.clone(), value);
                }
                Json::Object(fields)
            }
            Ty::Union(branches) => {
                let index = self.read_long(path, "union branch index")?;
                let branch = usize::try_from(index).ok().and_then(|i| branches.get(i)).ok_or_else(|| {
                    payload_error(
                        path,
                        format!("union branch index {index} is out of {}", self.schema.describe(schema)),
                    )
                })?;
                let name = self.schema.branch_name(branch);
                let value = self.decode(branch, &Path::Key(path, &name), depth + 1)?;
                if value.is_null() || !self.tag_unions {
                    value
                } else {
                    let mut tagged = Map::new();
                    tagged.insert(name, value);
                    Json::Object(tagged)
                }
            }
        })
    }
}

/// A float as JSON: a number, or Java's strings for NaN and the infinities (JSON has no number for them).
fn float_json(x: f64) -> Json {
    match Number::from_f64(x) {
        Some(n) => Json::Number(n),
        None if x.is_nan() => Json::String("NaN".into()),
        None if x > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decimal(n: Json, precision: usize, scale: usize) -> Result<Vec<u8>, String> {
        match n {
            Json::Number(n) => decimal_bytes(&n, precision, scale),
            _ => unreachable!("test input"),
        }
    }

    #[test]
    fn avro_zigzag_longs_match_the_specification() {
        let cases: [(i64, &[u8]); 7] = [
            (0, &[0]),
            (-1, &[1]),
            (1, &[2]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (i64::MAX, &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            (i64::MIN, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ];
        let schema = AvroSchema::parse("\"long\"", &[]).expect("long");
        for (n, bytes) in cases {
            let mut out = Vec::new();
            write_long(&mut out, n);
            assert_eq!(out, bytes, "{n}");
            assert_eq!(schema.decode_json(bytes).expect("decodes"), json!(n));
        }
        // An eleventh byte, or a tenth above 1, is not a long.
        assert!(schema.decode_json(&[0xff; 10]).is_err());
        assert!(schema.decode_json(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02]).is_err());
    }

    #[test]
    fn avro_decimal_numbers_become_minimal_twos_complement() {
        assert_eq!(decimal(json!(12.34), 10, 2), Ok(vec![0x04, 0xd2]));
        assert_eq!(decimal(json!(-12.34), 10, 2), Ok(vec![0xfb, 0x2e]));
        assert_eq!(decimal(json!(0), 4, 2), Ok(vec![0]));
        assert_eq!(decimal(json!(1.28), 4, 2), Ok(vec![0x00, 0x80]), "sign bit kept free");
        assert_eq!(decimal(json!(-1.28), 4, 2), Ok(vec![0x80]));
        assert_eq!(decimal(json!(-1.29), 4, 2), Ok(vec![0xff, 0x7f]));
        assert_eq!(decimal(json!(5), 4, 2), Ok(vec![0x01, 0xf4]), "an integer is scaled");
        assert_eq!(decimal(json!(1.5), 4, 2), Ok(vec![0x00, 0x96]));
        assert!(decimal(json!(1.234), 10, 2).unwrap_err().contains("2 digits after the point"));
        assert!(decimal(json!(123.4), 4, 2).unwrap_err().contains("precision of 4"));
        assert!(decimal(json!(0.12345678901234567), 30, 20).unwrap_err().contains("significant digits"));
        // 10^30 - 1 needs 13 bytes: beyond any machine integer, exact in base 256.
        let big = decimal(json!(999_999_999_999_999u64), 40, 15).expect("fits");
        assert_eq!(big.len(), 13);
        assert_eq!(sign_extend(&[0xfb, 0x2e], 4), Some(vec![0xff, 0xff, 0xfb, 0x2e]));
        assert_eq!(sign_extend(&[0x04, 0xd2], 1), None);
    }

    #[test]
    fn avro_names_that_would_panic_the_parser_are_refused() {
        for bad in [
            r#"{"type":"record","name":"1x","fields":[]}"#,
            r#"{"type":"record","name":"a..b","fields":[]}"#,
            r#"{"type":"enum","name":"E","aliases":["no-dash"],"symbols":["A"]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":{"type":"fixed","name":"9","size":1}}]}"#,
        ] {
            let e = AvroSchema::parse(bad, &[]).expect_err(bad);
            assert!(e.message.contains("invalid"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn avro_fixed_uuid_stays_a_named_fixed() {
        let s =
            AvroSchema::parse(r#"{"type":"fixed","name":"Id","size":16,"logicalType":"uuid"}"#, &[]).expect("parses");
        assert_eq!(s.record_name().as_deref(), Some("Id"));
        assert!(s.normalized().contains("\"logicalType\":\"uuid\""), "{}", s.normalized());
        let id = "0123456789abcdef";
        let bytes = s.encode_json(&json!(id)).expect("16 code points");
        assert_eq!(bytes, id.as_bytes(), "a fixed has no length prefix");
        assert_eq!(s.decode_json(&bytes).expect("decodes"), json!(id));
    }
}
