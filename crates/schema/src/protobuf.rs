//! Protobuf schemas in the registry: a `.proto` file (proto2 or proto3) compiled with protox against its references
//! and the bundled well-known types, its normalized form, the compatibility rules Confluent's Protobuf checker
//! applies (fields matched by number, never by name), and Confluent's Protobuf payload (the message indexes, then the
//! message's bytes) to and from proto3's canonical JSON mapping.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use prost_reflect::prost::Message as _;
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, Syntax,
};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use serde_json::Value as Json;

use crate::formats::{Dependency, InvalidSchema, PayloadError};

/// The name the schema's own file gets among its references, unless one of them already has it.
const SCHEMA_FILE_NAME: &str = "schema.proto";

/// A parsed protobuf schema: the compiled file (its descriptor pool holds the references and well-known types it
/// imports) and its normalized text, computed once at parse time.
#[derive(Debug, Clone)]
pub struct ProtobufSchema {
    file: FileDescriptor,
    normalized: String,
}

impl ProtobufSchema {
    /// Compiles `text` with its references (`import "<name>";` finds the dependency named so) and the well-known
    /// types. Nothing is read from the filesystem.
    pub fn parse(text: &str, dependencies: &[Dependency]) -> Result<Self, InvalidSchema> {
        let mut files: HashMap<String, String> = HashMap::new();
        for dependency in dependencies {
            // The registry gives each transitive dependency once; should a name come twice, the first one stands.
            files.entry(dependency.name.clone()).or_insert_with(|| dependency.schema.clone());
        }
        let name = schema_file_name(&files);
        files.insert(name.clone(), text.to_owned());

        // References first, so that a reference named like a well-known file is the one the schema meant.
        let mut resolver = ChainFileResolver::new();
        resolver.add(MemoryResolver { files });
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        // protox's Debug form is the readable one: "schema.proto:3:5: message" (its Display drops the position).
        compiler.open_file(&name).map_err(|err| InvalidSchema::new(format!("{err:?}")))?;
        let pool = compiler.descriptor_pool();
        let file = pool
            .get_file_by_name(&name)
            .ok_or_else(|| InvalidSchema::new(format!("{name}: the compiled schema is missing from its own pool")))?;
        let normalized = normalize(&file).map_err(|err| InvalidSchema::new(format!("{name}: {err}")))?;
        Ok(ProtobufSchema { file, normalized })
    }

    /// The schema's descriptor as canonical JSON with everything a writer may vary without changing the schema
    /// sorted out (see `normalize` below for what is and what is not).
    pub fn normalized(&self) -> String {
        self.normalized.clone()
    }

    /// The full name of the file's first message, as RecordNameStrategy names a Protobuf schema.
    pub fn record_name(&self) -> Option<String> {
        self.file.messages().next().map(|m| m.full_name().to_owned())
    }

    /// Why data written with `writer` cannot be read with `reader`, by the rules of Confluent's Protobuf checker
    /// (its `SchemaDiff`): each sentence ends with the name Confluent gives the difference.
    pub fn incompatibilities(reader: &Self, writer: &Self) -> Vec<String> {
        let mut checker = Checker {
            writer_file: writer.file.name().to_owned(),
            reader_file: reader.file.name().to_owned(),
            found: Vec::new(),
            comparing: Vec::new(),
        };
        let (w_package, r_package) = (writer.file.package_name(), reader.file.package_name());
        if w_package != r_package {
            checker.found.push(format!(
                "package changed from {} to {}: every message's full name changes [PACKAGE_CHANGED]",
                package_display(w_package),
                package_display(r_package)
            ));
        }
        checker.compare_messages(writer.file.messages().collect(), reader.file.messages().collect());
        // A message referenced from several fields is compared once per field; say each thing once.
        let mut seen = HashSet::new();
        checker.found.retain(|line| seen.insert(line.clone()));
        checker.found
    }

    /// `value` in proto3's canonical JSON mapping as the file's first message, in Confluent's Protobuf payload.
    pub fn encode_json(&self, value: &Json) -> Result<Vec<u8>, PayloadError> {
        let desc = self.file.messages().next().ok_or_else(|| PayloadError::new("the schema defines no message"))?;
        let message = DynamicMessage::deserialize(desc.clone(), value)
            .map_err(|err| PayloadError::new(describe_json_error(&desc, value, &err)))?;
        let mut out = message_indexes(&[0]);
        out.reserve(message.encoded_len());
        message.encode(&mut out).map_err(|err| PayloadError::new(format!("{}: {err}", desc.full_name())))?;
        Ok(out)
    }

    /// A Confluent Protobuf payload read as the message its indexes name, in proto3's canonical JSON mapping.
    pub fn decode_json(&self, payload: &[u8]) -> Result<Json, PayloadError> {
        let (desc, body) = self.message_at(payload)?;
        let message = DynamicMessage::decode(desc.clone(), body)
            .map_err(|err| PayloadError::new(format!("the payload is not a valid {}: {err}", desc.full_name())))?;
        serde_json::to_value(&message)
            .map_err(|err| PayloadError::new(format!("{} has no JSON form: {err}", desc.full_name())))
    }

    /// Reads the message indexes at the start of `payload`: the message they name and the bytes after them. Each
    /// index is looked up as soon as it is read, so a count claiming billions of indexes costs nothing: it fails at
    /// the first index out of range or at the end of the bytes.
    fn message_at<'p>(&self, payload: &'p [u8]) -> Result<(MessageDescriptor, &'p [u8]), PayloadError> {
        let mut rest = payload;
        let count = read_zigzag_varint(&mut rest)
            .map_err(|err| PayloadError::new(format!("the message indexes' count is not readable: {err}")))?;
        if count == 0 {
            // Confluent's shortcut for indexes [0], the file's first message.
            let first =
                self.file.messages().next().ok_or_else(|| PayloadError::new("the schema defines no message"))?;
            return Ok((first, rest));
        }
        let count = usize::try_from(count)
            .map_err(|_| PayloadError::new(format!("the message indexes' count is negative ({count})")))?;
        if count > rest.len() {
            return Err(PayloadError::new(format!(
                "the payload claims {count} message indexes but only {} bytes follow",
                rest.len()
            )));
        }
        let mut current: Option<MessageDescriptor> = None;
        for depth in 0..count {
            let index = read_zigzag_varint(&mut rest)
                .map_err(|err| PayloadError::new(format!("message index {depth} is not readable: {err}")))?;
            let position = usize::try_from(index)
                .map_err(|_| PayloadError::new(format!("message index {depth} is negative ({index})")))?;
            let next = match &current {
                None => self.file.messages().nth(position),
                Some(parent) => parent.child_messages().nth(position),
            };
            current = Some(next.ok_or_else(|| {
                let scope = match &current {
                    None => format!("the schema has {} top-level messages", self.file.messages().len()),
                    Some(m) => format!("{} has {} nested messages", m.full_name(), m.child_messages().len()),
                };
                PayloadError::new(format!("message index {position} at depth {depth} is out of range: {scope}"))
            })?);
        }
        let desc = current.ok_or_else(|| PayloadError::new("the payload names no message"))?;
        Ok((desc, rest))
    }
}

/// The schema's file name: [`SCHEMA_FILE_NAME`] unless a reference took it.
fn schema_file_name(files: &HashMap<String, String>) -> String {
    let mut name = SCHEMA_FILE_NAME.to_owned();
    let mut n = 0u32;
    while files.contains_key(&name) {
        n += 1;
        name = format!("schema-{n}.proto");
    }
    name
}

/// The schema and its references, by the name `import` uses.
struct MemoryResolver {
    files: HashMap<String, String>,
}

impl FileResolver for MemoryResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.files.get(name) {
            Some(text) => match serialized_descriptor(name, text) {
                Some(descriptor) => Ok(File::from_file_descriptor_proto(descriptor)),
                None => File::from_source(name, text),
            },
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// A schema given as Confluent's clients may send it instead of `.proto` text: a serialized `FileDescriptorProto` in
/// base64 (confluent-kafka's Python `ProtobufSerializer` does). Renamed to the name it is known by here, since imports
/// find it by that name. `None` for anything else: `.proto` text always holds a space or a `;`, base64 never does.
fn serialized_descriptor(name: &str, text: &str) -> Option<prost_reflect::prost_types::FileDescriptorProto> {
    use base64::Engine as _;
    let text = text.trim();
    if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == ';') {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    let mut descriptor = prost_reflect::prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok()?;
    descriptor.name = Some(name.to_string());
    Some(descriptor)
}

// ---------------------------------------------------------------------------------------------------------------
// Normalization

/// The file's descriptor as canonical proto3 JSON, after sorting out what does not change the schema: comments and
/// layout (source info is dropped), the order of fields (by number), oneofs (by their first field), imports, enums
/// (by name), enum values in proto3 (by number), reserved and extension ranges; option order vanishes by itself, the
/// descriptor keeping options by field number. Type references are already fully qualified by the compiler.
///
/// Messages keep their order, nested ones too: Confluent's message indexes count messages by position, so two files
/// with the same messages in another order are different schemas (Confluent's normalization keeps it as well). In
/// proto2 enum values keep their order too: the first one is a field's default.
fn normalize(file: &FileDescriptor) -> Result<String, String> {
    // The schema's own pool knows its custom options (they need descriptor.proto, so it is in the pool then), and
    // the descriptor decoded with it keeps them; otherwise the global pool's descriptor.proto will do.
    let desc = file
        .parent_pool()
        .get_message_by_name("google.protobuf.FileDescriptorProto")
        .or_else(|| DescriptorPool::global().get_message_by_name("google.protobuf.FileDescriptorProto"))
        .ok_or("descriptor.proto is missing")?;
    let message = DynamicMessage::decode(desc, file.encode_to_vec().as_slice()).map_err(|err| err.to_string())?;
    let mut json = serde_json::to_value(&message).map_err(|err| err.to_string())?;
    let proto3 = file.syntax() == Syntax::Proto3;
    if let Some(obj) = json.as_object_mut() {
        // The file's name is ours, not the writer's.
        obj.remove("name");
        obj.remove("sourceCodeInfo");
        if obj.get("syntax").and_then(Json::as_str) == Some("proto2") {
            // `syntax = "proto2";` spelled out or not.
            obj.remove("syntax");
        }
        normalize_imports(obj);
        for message in array_mut(obj, "messageType") {
            normalize_message(message, proto3);
        }
        normalize_enums(obj, proto3);
        sort_array(obj, "extension", |e| (text(e, "extendee"), number(e, "number")));
    }
    Ok(json.to_string())
}

fn normalize_imports(file: &mut serde_json::Map<String, Json>) {
    let imports: Vec<String> = match file.get("dependency").and_then(Json::as_array) {
        Some(list) => list.iter().filter_map(|d| d.as_str().map(str::to_owned)).collect(),
        None => return,
    };
    let mut sorted = imports.clone();
    sorted.sort();
    // publicDependency and weakDependency point into the import list: follow the imports to their new places.
    for key in ["publicDependency", "weakDependency"] {
        if let Some(Json::Array(indexes)) = file.get_mut(key) {
            let mut moved: Vec<u64> = indexes
                .iter()
                .filter_map(Json::as_u64)
                .filter_map(|i| imports.get(usize::try_from(i).ok()?))
                .filter_map(|name| sorted.iter().position(|s| s == name))
                .filter_map(|i| u64::try_from(i).ok())
                .collect();
            moved.sort_unstable();
            *indexes = moved.into_iter().map(Json::from).collect();
        }
    }
    file.insert("dependency".into(), Json::from(sorted));
}

fn normalize_message(message: &mut Json, proto3: bool) {
    let Some(obj) = message.as_object_mut() else { return };
    sort_array(obj, "field", |f| number(f, "number"));
    // Oneofs are referred to by position from their fields: order them by their lowest field number, then renumber.
    let oneof_count = obj.get("oneofDecl").and_then(Json::as_array).map_or(0, Vec::len);
    if oneof_count > 0 {
        let mut lowest = vec![i64::MAX; oneof_count];
        for field in obj.get("field").and_then(Json::as_array).into_iter().flatten() {
            if let Some(slot) = oneof_index(field).and_then(|i| lowest.get_mut(i)) {
                *slot = (*slot).min(number(field, "number"));
            }
        }
        let mut order: Vec<usize> = (0..oneof_count).collect();
        order.sort_by_key(|&i| lowest[i]);
        let mut new_index = vec![0usize; oneof_count];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new;
        }
        for field in array_mut(obj, "field") {
            if let Some(old) = oneof_index(field) {
                if let (Some(&new), Some(f)) = (new_index.get(old), field.as_object_mut()) {
                    f.insert("oneofIndex".into(), Json::from(new));
                }
            }
        }
        if let Some(Json::Array(decls)) = obj.get_mut("oneofDecl") {
            let old = std::mem::take(decls);
            let mut slots: Vec<Option<Json>> = old.into_iter().map(Some).collect();
            *decls = order.iter().filter_map(|&i| slots.get_mut(i).and_then(Option::take)).collect();
        }
    }
    for nested in array_mut(obj, "nestedType") {
        normalize_message(nested, proto3);
    }
    normalize_enums(obj, proto3);
    sort_array(obj, "extension", |e| (text(e, "extendee"), number(e, "number")));
    sort_array(obj, "extensionRange", |r| number(r, "start"));
    sort_array(obj, "reservedRange", |r| number(r, "start"));
    sort_array(obj, "reservedName", |n| n.as_str().unwrap_or_default().to_owned());
}

fn normalize_enums(scope: &mut serde_json::Map<String, Json>, proto3: bool) {
    sort_array(scope, "enumType", |e| text(e, "name"));
    for enumeration in array_mut(scope, "enumType") {
        if let Some(obj) = enumeration.as_object_mut() {
            if proto3 {
                sort_array(obj, "value", |v| (number(v, "number"), text(v, "name")));
            }
            sort_array(obj, "reservedRange", |r| number(r, "start"));
            sort_array(obj, "reservedName", |n| n.as_str().unwrap_or_default().to_owned());
        }
    }
}

fn array_mut<'a>(obj: &'a mut serde_json::Map<String, Json>, key: &str) -> impl Iterator<Item = &'a mut Json> {
    obj.get_mut(key).and_then(Json::as_array_mut).into_iter().flatten()
}

fn sort_array<K: Ord>(obj: &mut serde_json::Map<String, Json>, key: &str, by: impl FnMut(&Json) -> K) {
    if let Some(Json::Array(items)) = obj.get_mut(key) {
        items.sort_by_cached_key(by);
    }
}

fn number(value: &Json, key: &str) -> i64 {
    value.get(key).and_then(Json::as_i64).unwrap_or(0)
}

fn text(value: &Json, key: &str) -> String {
    value.get(key).and_then(Json::as_str).unwrap_or_default().to_owned()
}

/// A field's `oneofIndex` (absent from the JSON when the field is in no oneof).
fn oneof_index(field: &Json) -> Option<usize> {
    field.get("oneofIndex").and_then(Json::as_u64).and_then(|i| usize::try_from(i).ok())
}

// ---------------------------------------------------------------------------------------------------------------
// Compatibility

/// Confluent's Protobuf checker, on compiled descriptors instead of Wire's syntax tree: the writer's schema is its
/// "original", the reader's its "update". Differences Confluent counts as compatible (fields and messages added,
/// fields removed or renamed, enums changed, oneofs added or removed, string/bytes label changes, a message moved)
/// say nothing here; the others are found, one sentence each.
struct Checker {
    writer_file: String,
    reader_file: String,
    found: Vec<String>,
    /// Pairs of messages (writer's, reader's) being compared: a message type that refers to itself is compared once.
    comparing: Vec<(String, String)>,
}

/// A field's label as it is spelled in the file: Confluent compares labels only where both schemas spell one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Label {
    Optional,
    Required,
    Repeated,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Label::Optional => "optional",
            Label::Required => "required",
            Label::Repeated => "repeated",
        })
    }
}

/// Scalars in groups of wire-compatible types (Protobuf's "updating a message type" rules, as Confluent groups
/// them); an enum reads like an int32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScalarGroup {
    Varint,
    ZigZag,
    StringOrBytes,
    Fixed32,
    Fixed64,
    Float,
    Double,
}

/// What a field holds, in Confluent's three kinds.
#[derive(Debug)]
enum FieldType {
    Scalar { name: String, group: ScalarGroup },
    Message(MessageDescriptor),
    Map(Box<FieldType>, Box<FieldType>),
}

impl FieldType {
    fn of(field: &FieldDescriptor) -> FieldType {
        let scalar = |name: &str, group| FieldType::Scalar { name: name.to_owned(), group };
        match field.kind() {
            Kind::Message(entry) if field.is_map() => FieldType::Map(
                Box::new(FieldType::of(&entry.map_entry_key_field())),
                Box::new(FieldType::of(&entry.map_entry_value_field())),
            ),
            Kind::Message(message) => FieldType::Message(message),
            Kind::Enum(enumeration) => scalar(enumeration.full_name(), ScalarGroup::Varint),
            Kind::Int32 => scalar("int32", ScalarGroup::Varint),
            Kind::Int64 => scalar("int64", ScalarGroup::Varint),
            Kind::Uint32 => scalar("uint32", ScalarGroup::Varint),
            Kind::Uint64 => scalar("uint64", ScalarGroup::Varint),
            Kind::Bool => scalar("bool", ScalarGroup::Varint),
            Kind::Sint32 => scalar("sint32", ScalarGroup::ZigZag),
            Kind::Sint64 => scalar("sint64", ScalarGroup::ZigZag),
            Kind::String => scalar("string", ScalarGroup::StringOrBytes),
            Kind::Bytes => scalar("bytes", ScalarGroup::StringOrBytes),
            Kind::Fixed32 => scalar("fixed32", ScalarGroup::Fixed32),
            Kind::Sfixed32 => scalar("sfixed32", ScalarGroup::Fixed32),
            Kind::Fixed64 => scalar("fixed64", ScalarGroup::Fixed64),
            Kind::Sfixed64 => scalar("sfixed64", ScalarGroup::Fixed64),
            Kind::Float => scalar("float", ScalarGroup::Float),
            Kind::Double => scalar("double", ScalarGroup::Double),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            FieldType::Scalar { .. } => "scalar",
            FieldType::Message(_) => "message",
            FieldType::Map(..) => "map",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldType::Scalar { name, .. } => f.write_str(name),
            FieldType::Message(message) => f.write_str(message.full_name()),
            FieldType::Map(key, value) => write!(f, "map<{key}, {value}>"),
        }
    }
}

/// A field by number, with the (real, not proto3-optional) oneof it belongs to.
struct Slot {
    field: FieldDescriptor,
    oneof: Option<String>,
}

fn fields_by_number(message: &MessageDescriptor) -> BTreeMap<u32, Slot> {
    message
        .fields()
        .map(|field| {
            let oneof = field.containing_oneof().filter(|o| !o.is_synthetic()).map(|o| o.name().to_owned());
            (field.number(), Slot { field, oneof })
        })
        .collect()
}

/// The label the file spells for a field. Oneof members spell none; proto3 spells `optional` only for explicit
/// presence (Wire's parser, whose labels Confluent compares, gives proto3's bare fields no label either).
fn spelled_label(field: &FieldDescriptor) -> Option<Label> {
    if field.containing_oneof().is_some_and(|o| !o.is_synthetic()) {
        return None;
    }
    match field.cardinality() {
        Cardinality::Repeated => Some(Label::Repeated),
        Cardinality::Required => Some(Label::Required),
        Cardinality::Optional if field.parent_file().syntax() == Syntax::Proto2 => Some(Label::Optional),
        Cardinality::Optional => field.field_descriptor_proto().proto3_optional().then_some(Label::Optional),
    }
}

fn package_display(package: &str) -> String {
    if package.is_empty() {
        "(no package)".to_owned()
    } else {
        package.to_owned()
    }
}

impl Checker {
    /// Messages of one scope (the file, or a message's nested ones) matched by name. A removed message is
    /// incompatible (data written as it has no type to be read with); map entries are the compiler's, not the
    /// writer's, and come and go with their map fields.
    fn compare_messages(&mut self, writer: Vec<MessageDescriptor>, reader: Vec<MessageDescriptor>) {
        let reader_by_name: HashMap<String, MessageDescriptor> =
            reader.into_iter().filter(|m| !m.is_map_entry()).map(|m| (m.name().to_owned(), m)).collect();
        for w in writer.iter().filter(|m| !m.is_map_entry()) {
            match reader_by_name.get(w.name()) {
                Some(r) => self.compare_message(w, r),
                None => self.found.push(format!(
                    "message {} was removed: data written with it cannot be read [MESSAGE_REMOVED]",
                    w.full_name()
                )),
            }
        }
    }

    fn compare_message(&mut self, w: &MessageDescriptor, r: &MessageDescriptor) {
        let pair = (w.full_name().to_owned(), r.full_name().to_owned());
        if self.comparing.contains(&pair) {
            return;
        }
        self.comparing.push(pair);
        self.compare_fields(w, r);
        self.compare_messages(w.child_messages().collect(), r.child_messages().collect());
        self.comparing.pop();
    }

    /// Fields matched by number across the whole message, whatever oneof they sit in, so that a oneof renamed or a
    /// field moved into or out of one cannot hide a change of type or a removal (Confluent's current rules).
    fn compare_fields(&mut self, w: &MessageDescriptor, r: &MessageDescriptor) {
        let message = r.full_name();
        let w_fields = fields_by_number(w);
        let r_fields = fields_by_number(r);
        let r_oneofs: HashSet<String> = r.oneofs().filter(|o| !o.is_synthetic()).map(|o| o.name().to_owned()).collect();

        // A oneof gone with every one of its fields is a plain deletion, compatible like removing fields; a oneof
        // that lost some fields while others live on lost data.
        let deleted_oneofs: HashSet<String> = w
            .oneofs()
            .filter(|o| !o.is_synthetic() && !r_oneofs.contains(o.name()))
            .filter(|o| o.fields().all(|f| !r_fields.contains_key(&f.number())))
            .map(|o| o.name().to_owned())
            .collect();

        // Fields the writer could set together and that the reader's oneof now holds one at a time: each of the
        // writer's oneofs is one group, each of its other fields its own; new fields were never written.
        for oneof in r.oneofs().filter(|o| !o.is_synthetic()) {
            let mut groups = BTreeSet::new();
            let mut moved_in = Vec::new();
            for field in oneof.fields() {
                match w_fields.get(&field.number()) {
                    Some(Slot { oneof: Some(name), .. }) => {
                        groups.insert(format!("oneof {name}"));
                    }
                    Some(Slot { oneof: None, .. }) => {
                        groups.insert(format!("field {}", field.number()));
                        moved_in.push(field.number().to_string());
                    }
                    None => {}
                }
            }
            if groups.len() > 1 {
                if moved_in.len() > 1 {
                    self.found.push(format!(
                        "{message} oneof {}: fields {} were outside any oneof and are now in one, so data setting \
                         several of them loses all but one [MULTIPLE_FIELDS_MOVED_TO_ONEOF]",
                        oneof.name(),
                        moved_in.join(", ")
                    ));
                } else {
                    self.found.push(format!(
                        "{message} oneof {}: a field was moved into it beside fields that already were in a oneof, \
                         so data setting both loses one [FIELD_MOVED_TO_EXISTING_ONEOF]",
                        oneof.name()
                    ));
                }
            }
        }

        let numbers: BTreeSet<u32> = w_fields.keys().chain(r_fields.keys()).copied().collect();
        for number in numbers {
            match (w_fields.get(&number), r_fields.get(&number)) {
                (Some(w_slot), None) => {
                    let name = w_slot.field.name();
                    if let Some(oneof) = &w_slot.oneof {
                        if !deleted_oneofs.contains(oneof) {
                            self.found.push(format!(
                                "{message} field {number} ({name}): removed from oneof {oneof}, so data that chose \
                                 it reads as no choice [ONEOF_FIELD_REMOVED]"
                            ));
                        }
                    } else if w_slot.field.cardinality() == Cardinality::Required {
                        self.found.push(format!(
                            "{message} field {number} ({name}): a required field was removed [REQUIRED_FIELD_REMOVED]"
                        ));
                    }
                }
                (None, Some(r_slot)) => {
                    if r_slot.oneof.is_none() && r_slot.field.cardinality() == Cardinality::Required {
                        self.found.push(format!(
                            "{message} field {number} ({}): a required field was added, which data written without \
                             it lacks [REQUIRED_FIELD_ADDED]",
                            r_slot.field.name()
                        ));
                    }
                }
                (Some(w_slot), Some(r_slot)) => {
                    let at = format!("{message} field {number} ({})", r_slot.field.name());
                    self.compare_types(
                        &at,
                        "type",
                        (spelled_label(&w_slot.field), FieldType::of(&w_slot.field)),
                        (spelled_label(&r_slot.field), FieldType::of(&r_slot.field)),
                    );
                }
                (None, None) => {}
            }
        }
    }

    fn compare_types(
        &mut self,
        at: &str,
        what: &str,
        (w_label, w_type): (Option<Label>, FieldType),
        (r_label, r_type): (Option<Label>, FieldType),
    ) {
        match (w_type, r_type) {
            (
                FieldType::Scalar { name: w_name, group: w_group },
                FieldType::Scalar { name: r_name, group: r_group },
            ) => {
                if w_group != r_group {
                    self.found.push(format!(
                        "{at}: {what} changed from {w_name} to {r_name}, which is not wire-compatible \
                         [FIELD_SCALAR_KIND_CHANGED]"
                    ));
                } else if let (Some(w_label), Some(r_label)) = (w_label, r_label) {
                    // One string or bytes read where several were written keeps the last; numbers change their
                    // encoding with the label (packed repeated), so Confluent refuses their label changes.
                    if w_label != r_label && w_group != ScalarGroup::StringOrBytes {
                        self.found.push(format!(
                            "{at}: label changed from {w_label} to {r_label} on a numeric field \
                             [FIELD_NUMERIC_LABEL_CHANGED]"
                        ));
                    }
                }
            }
            (FieldType::Message(w_message), FieldType::Message(r_message)) => {
                self.compare_message_types(at, what, &w_message, &r_message);
            }
            (FieldType::Map(w_key, w_value), FieldType::Map(r_key, r_value)) => {
                self.compare_types(at, "map key type", (None, *w_key), (None, *r_key));
                self.compare_types(at, "map value type", (None, *w_value), (None, *r_value));
            }
            (w_type, r_type) => self.found.push(format!(
                "{at}: {what} changed from {w_type} to {r_type}, a {} where a {} was [FIELD_KIND_CHANGED]",
                r_type.kind(),
                w_type.kind()
            )),
        }
    }

    /// Message types match by name within their package (a referenced file may change its package). Types the
    /// schema defines itself are compared by the pass over its messages; a type from a reference is compared here,
    /// and a difference in it makes the field's type differ too, as Confluent reports it.
    fn compare_message_types(&mut self, at: &str, what: &str, w: &MessageDescriptor, r: &MessageDescriptor) {
        if local_name(w) != local_name(r) {
            self.found.push(format!(
                "{at}: {what} changed from message {} to message {} [FIELD_NAMED_TYPE_CHANGED]",
                w.full_name(),
                r.full_name()
            ));
            return;
        }
        let w_own = w.parent_file().name() == self.writer_file;
        let r_own = r.parent_file().name() == self.reader_file;
        if w_own && r_own {
            return;
        }
        let before = self.found.len();
        self.compare_message(w, r);
        if self.found.len() > before {
            self.found.push(format!(
                "{at}: {what} {} changed incompatibly (above) [FIELD_NAMED_TYPE_CHANGED]",
                r.full_name()
            ));
        }
    }
}

/// A message's name without its package: `outer.Inner` for `pkg.outer.Inner`.
fn local_name(message: &MessageDescriptor) -> &str {
    let full = message.full_name();
    let package = message.package_name();
    if package.is_empty() {
        return full;
    }
    full.strip_prefix(package).and_then(|rest| rest.strip_prefix('.')).unwrap_or(full)
}

// ---------------------------------------------------------------------------------------------------------------
// Payloads

/// Confluent's message indexes: the path from the file to a message, a top-level message's position then a nested
/// one's position in its parent and so on, written as a count then each index, all zigzag varints (Kafka's
/// `ByteUtils.writeVarint`), except `[0]`, the file's first message, written as one 0 byte (a count of 0).
/// Positions count the messages the compiler sees, map entries included, as Confluent's clients built on
/// descriptors (Go, Python, Java's generated classes) count them.
fn message_indexes(indexes: &[i32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + indexes.len());
    if indexes == [0] {
        out.push(0);
        return out;
    }
    let count = i32::try_from(indexes.len()).unwrap_or(i32::MAX);
    write_zigzag_varint(&mut out, count);
    for &index in indexes {
        write_zigzag_varint(&mut out, index);
    }
    out
}

fn write_zigzag_varint(out: &mut Vec<u8>, value: i32) {
    let mut v = ((value << 1) ^ (value >> 31)) as u32;
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A zigzag varint of at most 32 bits (5 bytes, as Kafka's `ByteUtils.readVarint` reads them) from the front of
/// `bytes`, which moves past it.
fn read_zigzag_varint(bytes: &mut &[u8]) -> Result<i32, &'static str> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let Some((&byte, rest)) = bytes.split_first() else {
            return Err("the bytes end inside a varint");
        };
        *bytes = rest;
        if i == 4 && byte > 0x0f {
            return Err("a varint longer than 32 bits");
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value >> 1) as i32 ^ -((value & 1) as i32));
        }
    }
    Err("a varint longer than 32 bits")
}

/// The JSON that did not fit, named by its path (`items[2].price`) when it can be found: serde's errors say what
/// was wrong but not where.
fn describe_json_error(desc: &MessageDescriptor, value: &Json, err: &serde_json::Error) -> String {
    locate_json_error(desc, value, "", 0).unwrap_or_else(|| format!("{}: {err}", desc.full_name()))
}

/// Finds the first field of `value` that does not fit `desc` by deserializing the fields one at a time, going down
/// into messages, lists of messages and maps of messages. Only called once the whole value failed.
fn locate_json_error(desc: &MessageDescriptor, value: &Json, path: &str, depth: usize) -> Option<String> {
    // serde_json's parser stops at 128 levels; this keeps a hand-built value from recursing without end.
    if depth > 128 || desc.full_name().starts_with("google.protobuf.") {
        // Well-known types have JSON forms of their own: the error is reported at the field holding one.
        return None;
    }
    let object = value.as_object()?;
    for (key, field_value) in object {
        let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let Some(field) = desc.get_field_by_json_name(key).or_else(|| desc.get_field_by_name(key)) else {
            return Some(format!("unknown field `{here}`: {} has no field {key:?}", desc.full_name()));
        };
        let mut single = serde_json::Map::new();
        single.insert(key.clone(), field_value.clone());
        let Err(err) = DynamicMessage::deserialize(desc.clone(), &Json::Object(single)) else {
            continue;
        };
        if let Kind::Message(inner) = field.kind() {
            let deeper = if field.is_map() {
                match (inner.map_entry_value_field().kind(), field_value.as_object()) {
                    (Kind::Message(value_desc), Some(entries)) => entries
                        .iter()
                        .find_map(|(k, v)| locate_json_error(&value_desc, v, &format!("{here}[{k:?}]"), depth + 1)),
                    _ => None,
                }
            } else if field.is_list() {
                field_value.as_array().and_then(|items| {
                    items
                        .iter()
                        .enumerate()
                        .find_map(|(i, item)| locate_json_error(&inner, item, &format!("{here}[{i}]"), depth + 1))
                })
            } else {
                locate_json_error(&inner, field_value, &here, depth + 1)
            };
            if deeper.is_some() {
                return deeper;
            }
        }
        return Some(format!("field `{here}` of {}: {err}", desc.full_name()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_indexes_are_zigzag_varints_with_the_first_message_as_one_byte() {
        assert_eq!(message_indexes(&[0]), [0]);
        assert_eq!(message_indexes(&[1]), [2, 2]);
        assert_eq!(message_indexes(&[1, 0]), [4, 2, 0]);
        assert_eq!(message_indexes(&[0, 0]), [4, 0, 0], "only [0] itself takes the shortcut");
        assert_eq!(message_indexes(&[64]), [2, 0x80, 0x01], "64 zigzags to 128, two varint bytes");
    }

    #[test]
    fn zigzag_varints_round_trip_and_bad_ones_are_refused() {
        for value in [0, 1, -1, 63, -64, 64, 300, i32::MAX, i32::MIN] {
            let mut bytes = Vec::new();
            write_zigzag_varint(&mut bytes, value);
            let mut rest = bytes.as_slice();
            assert_eq!(read_zigzag_varint(&mut rest), Ok(value), "{value}");
            assert!(rest.is_empty());
        }
        assert!(read_zigzag_varint(&mut &[][..]).is_err(), "nothing to read");
        assert!(read_zigzag_varint(&mut &[0x80, 0x80][..]).is_err(), "truncated");
        assert!(read_zigzag_varint(&mut &[0xff, 0xff, 0xff, 0xff, 0x1f][..]).is_err(), "33 bits");
        assert!(read_zigzag_varint(&mut &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01][..]).is_err(), "6 bytes");
        let mut rest = &[0xfe, 0xff, 0xff, 0xff, 0x0f, 9][..];
        assert_eq!(read_zigzag_varint(&mut rest), Ok(i32::MAX));
        assert_eq!(rest, [9], "the bytes after the varint are left");
    }

    #[test]
    fn local_names_drop_the_package_only() {
        let schema = ProtobufSchema::parse(
            "syntax = \"proto3\"; package a.b; message Outer { message Inner { int32 x = 1; } }",
            &[],
        )
        .unwrap();
        let inner = schema.file.parent_pool().get_message_by_name("a.b.Outer.Inner").unwrap();
        assert_eq!(local_name(&inner), "Outer.Inner");
    }

    #[test]
    fn the_schema_file_name_steps_aside_for_a_reference_named_like_it() {
        let mut files = HashMap::new();
        assert_eq!(schema_file_name(&files), "schema.proto");
        files.insert("schema.proto".to_owned(), String::new());
        assert_eq!(schema_file_name(&files), "schema-1.proto");
    }
}
