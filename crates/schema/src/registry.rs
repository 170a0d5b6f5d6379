//! The registry's state — subjects and their versions, schemas by id, compatibility levels and modes — rebuilt by
//! applying `_schemas`' records in log order, and the decisions taken on it: what registering, deleting or
//! configuring would write, or the Confluent error saying why it may not. No I/O here: [`crate::service`] writes the
//! records and waits to read them back.
//!
//! Several instances may write at once (they share `_schemas` on a cluster): a record that claims a subject's version
//! already taken, or an id already holding another schema, loses to the one before it in the log, for every reader
//! alike; its writer sees that when it reads its record back and decides again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::formats::{Dependency, Parsed, SchemaType};
use crate::records::{Record, Reference, SchemaValue};

/// How a subject's new schema must relate to its earlier ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Compatibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive | Compatibility::ForwardTransitive | Compatibility::FullTransitive
        )
    }
    /// The new schema must read data written with the earlier ones.
    fn backward(self) -> bool {
        matches!(
            self,
            Compatibility::Backward
                | Compatibility::BackwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }
    /// The earlier schemas must read data written with the new one.
    fn forward(self) -> bool {
        matches!(
            self,
            Compatibility::Forward
                | Compatibility::ForwardTransitive
                | Compatibility::Full
                | Compatibility::FullTransitive
        )
    }
}

impl std::str::FromStr for Compatibility {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, RegistryError> {
        serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_uppercase()))
            .map_err(|_| RegistryError::InvalidCompatibility(s.to_string()))
    }
}

/// Whether a subject (or the registry) takes new schemas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    #[default]
    #[serde(rename = "READWRITE")]
    ReadWrite,
    #[serde(rename = "READONLY")]
    ReadOnly,
    /// Schemas are registered with the ids and versions they had elsewhere, unchecked (migrations).
    #[serde(rename = "IMPORT")]
    Import,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadWrite => "READWRITE",
            Mode::ReadOnly => "READONLY",
            Mode::Import => "IMPORT",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, RegistryError> {
        serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_uppercase()))
            .map_err(|_| RegistryError::InvalidMode(s.to_string()))
    }
}

/// The registry's errors, each with Confluent's HTTP status and error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Subject '{0}' Version {1} was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted(String, i32),
    #[error("Subject '{0}' Version {1} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted(String, i32),
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectCompatibilityNotConfigured(String),
    #[error("Subject '{0}' does not have subject-level mode configured")]
    SubjectModeNotConfigured(String),
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", .details.join("; "))]
    Incompatible { subject: String, details: Vec<String> },
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    #[error("Invalid compatibility level '{0}'. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
    InvalidCompatibility(String),
    #[error("Invalid mode '{0}'. Valid values are READWRITE, READONLY and IMPORT")]
    InvalidMode(String),
    #[error("{0}")]
    NotPermitted(String),
    #[error("One or more references exist to the schema {{subject={subject}, version={version}}}: ids {ids:?}")]
    ReferenceExists { subject: String, version: i32, ids: Vec<i32> },
    #[error("Invalid subject name {0:?}: it must be non-empty, without control characters")]
    InvalidSubject(String),
    #[error("Error in the backend data store: {0}")]
    Store(String),
    #[error("Operation timed out: {0}")]
    Timeout(String),
}

impl RegistryError {
    /// The HTTP status Confluent's registry answers with.
    pub fn status(&self) -> u16 {
        match self.code() {
            409 => 409,
            c => (c / 100) as u16,
        }
    }

    /// Confluent's `error_code`.
    pub fn code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound(_) => 40402,
            RegistryError::SchemaNotFound(_) => 40403,
            RegistryError::SubjectSoftDeleted(_) => 40404,
            RegistryError::SubjectNotSoftDeleted(_) => 40405,
            RegistryError::VersionSoftDeleted(..) => 40406,
            RegistryError::VersionNotSoftDeleted(..) => 40407,
            RegistryError::SubjectCompatibilityNotConfigured(_) => 40408,
            RegistryError::SubjectModeNotConfigured(_) => 40409,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidSchema(_) => 42201,
            RegistryError::InvalidVersion(_) => 42202,
            RegistryError::InvalidCompatibility(_) => 42203,
            RegistryError::InvalidMode(_) => 42204,
            RegistryError::NotPermitted(_) => 42205,
            RegistryError::ReferenceExists { .. } => 42206,
            RegistryError::InvalidSubject(_) => 42208,
            RegistryError::Store(_) => 50001,
            RegistryError::Timeout(_) => 50002,
        }
    }
}

/// A version as the API names it: a number, or the latest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSel {
    Latest,
    Number(i32),
}

impl std::str::FromStr for VersionSel {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, RegistryError> {
        match s {
            "latest" | "-1" => Ok(VersionSel::Latest),
            _ => match s.parse::<i32>() {
                Ok(n) if n >= 1 => Ok(VersionSel::Number(n)),
                _ => Err(RegistryError::InvalidVersion(s.to_string())),
            },
        }
    }
}

/// A schema as stored under its id.
#[derive(Debug, Clone)]
pub struct Schema {
    pub id: i32,
    pub schema_type: SchemaType,
    /// As first registered.
    pub text: String,
    pub references: Vec<Reference>,
    /// `None` when a stored schema no longer parses (written by another tool, or a reference gone): it is still
    /// served, and a compatibility check against it says so.
    pub parsed: Option<Arc<Parsed>>,
    content: ContentKey,
}

/// What makes two schemas the same schema: format, normalized text and references.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ContentKey {
    schema_type: SchemaType,
    normalized: String,
    references: Vec<Reference>,
}

/// A subject's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub id: i32,
    pub deleted: bool,
}

#[derive(Debug, Default, Clone)]
struct Subject {
    versions: BTreeMap<i32, Version>,
    compatibility: Option<Compatibility>,
    mode: Option<Mode>,
}

impl Subject {
    fn live(&self) -> impl DoubleEndedIterator<Item = (i32, Version)> + '_ {
        self.versions.iter().filter(|(_, v)| !v.deleted).map(|(n, v)| (*n, *v))
    }
}

/// A version of a subject, with its schema: what the API answers about one.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub subject: String,
    pub version: i32,
    pub schema: Schema,
    pub deleted: bool,
}

/// A schema to register or check, as a request gives it.
#[derive(Debug, Clone, Default)]
pub struct NewSchema {
    pub schema_type: SchemaType,
    pub schema: String,
    pub references: Vec<Reference>,
    /// IMPORT mode only: the id it had elsewhere.
    pub id: Option<i32>,
    /// IMPORT mode only: the version it had elsewhere.
    pub version: Option<i32>,
}

/// What registering decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Registration {
    /// The subject already has this schema.
    Exists { id: i32, version: i32 },
    /// Write this record; registered once it reads back as applied.
    Write { id: i32, version: i32, record: Record },
}

/// The outcome of applying one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Yes,
    /// A version or id already taken by an earlier record: ignored.
    Lost,
}

/// The registry's state.
#[derive(Debug, Default)]
pub struct Registry {
    subjects: BTreeMap<String, Subject>,
    schemas: BTreeMap<i32, Schema>,
    by_content: HashMap<ContentKey, i32>,
    /// The highest id ever applied: ids are never reused, even after a permanent delete.
    max_id: i32,
    compatibility: Option<Compatibility>,
    mode: Option<Mode>,
    /// The default level when none is configured (the registry's `--compatibility` setting).
    default_compatibility: Compatibility,
}

/// The largest schema text the registry takes (Confluent has no limit but its request size; this bounds what one
/// request can make every instance parse and hold).
pub const MAX_SCHEMA_BYTES: usize = 1 << 20;

impl Registry {
    pub fn new(default_compatibility: Compatibility) -> Registry {
        Registry { default_compatibility, ..Default::default() }
    }

    // ---- applying the log ----

    /// Applies one record of `_schemas`, in log order.
    pub fn apply(&mut self, record: Record) -> Applied {
        match record {
            Record::Schema { subject, version, id, value: Some(value) } => {
                self.apply_schema(subject, version, id, value)
            }
            Record::Schema { subject, version, id, value: None } => {
                if let Some(s) = self.subjects.get_mut(&subject) {
                    // A Confluent tombstone (id 0 in its key) removes the version whatever its id.
                    if s.versions.get(&version).is_some_and(|v| id == 0 || v.id == id) {
                        let removed = s.versions.remove(&version).map(|v| v.id);
                        if s.versions.is_empty() && s.compatibility.is_none() && s.mode.is_none() {
                            self.subjects.remove(&subject);
                        }
                        if let Some(id) = removed {
                            self.forget_if_unused(id);
                        }
                        return Applied::Yes;
                    }
                }
                Applied::Lost
            }
            Record::Config { subject: None, level } => {
                self.compatibility = level;
                Applied::Yes
            }
            Record::Config { subject: Some(subject), level } => {
                self.subjects.entry(subject.clone()).or_default().compatibility = level;
                self.drop_if_empty(&subject);
                Applied::Yes
            }
            Record::Mode { subject: None, mode } => {
                self.mode = mode;
                Applied::Yes
            }
            Record::Mode { subject: Some(subject), mode } => {
                self.subjects.entry(subject.clone()).or_default().mode = mode;
                self.drop_if_empty(&subject);
                Applied::Yes
            }
            Record::Noop => Applied::Yes,
        }
    }

    fn apply_schema(&mut self, subject: String, version: i32, id: i32, value: SchemaValue) -> Applied {
        if value.subject != subject || value.version != version || id <= 0 || version <= 0 {
            tracing::warn!(subject, version, id, "a _schemas record whose key and value disagree: ignored");
            return Applied::Lost;
        }
        let existing = self.subjects.get(&subject).and_then(|s| s.versions.get(&version)).copied();
        if existing.is_some_and(|v| v.id != id) {
            return Applied::Lost;
        }
        if !self.schemas.contains_key(&id) {
            let schema = self.build_schema(id, value.schema_type, value.schema, value.references);
            if self.by_content.contains_key(&schema.content) {
                // The same schema already has another id: a writer that lost a race registered it again.
                return Applied::Lost;
            }
            self.by_content.insert(schema.content.clone(), id);
            self.schemas.insert(id, schema);
        } else if self.schemas[&id].content != self.content_of(value.schema_type, &value.schema, &value.references) {
            return Applied::Lost;
        }
        self.max_id = self.max_id.max(id);
        self.subjects.entry(subject).or_default().versions.insert(version, Version { id, deleted: value.deleted });
        Applied::Yes
    }

    fn build_schema(&self, id: i32, schema_type: SchemaType, text: String, references: Vec<Reference>) -> Schema {
        let parsed = self.parse(schema_type, &text, &references);
        let normalized = match &parsed {
            Ok(p) => p.normalized(),
            Err(e) => {
                tracing::warn!(id, error = %e, "a stored schema does not parse; it is served as it is");
                text.clone()
            }
        };
        Schema {
            id,
            schema_type,
            content: ContentKey { schema_type, normalized, references: references.clone() },
            text,
            references,
            parsed: parsed.ok().map(Arc::new),
        }
    }

    fn content_of(&self, schema_type: SchemaType, text: &str, references: &[Reference]) -> ContentKey {
        let normalized = match self.parse(schema_type, text, references) {
            Ok(p) => p.normalized(),
            Err(_) => text.to_string(),
        };
        ContentKey { schema_type, normalized, references: references.to_vec() }
    }

    fn forget_if_unused(&mut self, id: i32) {
        let used = self.subjects.values().any(|s| s.versions.values().any(|v| v.id == id));
        if !used {
            if let Some(schema) = self.schemas.remove(&id) {
                self.by_content.remove(&schema.content);
            }
        }
    }

    fn drop_if_empty(&mut self, subject: &str) {
        if self
            .subjects
            .get(subject)
            .is_some_and(|s| s.versions.is_empty() && s.compatibility.is_none() && s.mode.is_none())
        {
            self.subjects.remove(subject);
        }
    }

    // ---- parsing with references ----

    /// A schema's references, resolved to the texts they name, every transitive one once, each after its own.
    pub fn dependencies(&self, references: &[Reference]) -> Result<Vec<Dependency>, RegistryError> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        self.collect(references, &mut out, &mut seen, 0)?;
        Ok(out)
    }

    fn collect(
        &self,
        references: &[Reference],
        out: &mut Vec<Dependency>,
        seen: &mut BTreeSet<String>,
        depth: usize,
    ) -> Result<(), RegistryError> {
        // References form a DAG by construction (a version can only name earlier ones); the bound guards a log
        // written by something else.
        if depth > 64 {
            return Err(RegistryError::InvalidSchema("references nest more than 64 deep".into()));
        }
        for r in references {
            if seen.contains(&r.name) {
                continue;
            }
            let schema = self
                .subjects
                .get(&r.subject)
                .and_then(|s| s.versions.get(&r.version))
                .and_then(|v| self.schemas.get(&v.id))
                .ok_or_else(|| {
                    RegistryError::InvalidSchema(format!(
                        "reference {:?} names subject {:?} version {}, which does not exist",
                        r.name, r.subject, r.version
                    ))
                })?;
            self.collect(&schema.references, out, seen, depth + 1)?;
            seen.insert(r.name.clone());
            out.push(Dependency { name: r.name.clone(), schema: schema.text.clone() });
        }
        Ok(())
    }

    /// Parses a schema with its references resolved.
    pub fn parse(
        &self,
        schema_type: SchemaType,
        text: &str,
        references: &[Reference],
    ) -> Result<Parsed, RegistryError> {
        if text.len() > MAX_SCHEMA_BYTES {
            return Err(RegistryError::InvalidSchema(format!(
                "the schema is {} bytes; at most {MAX_SCHEMA_BYTES} are taken",
                text.len()
            )));
        }
        let dependencies = self.dependencies(references)?;
        Parsed::parse(schema_type, text, &dependencies).map_err(|e| RegistryError::InvalidSchema(e.message))
    }

    // ---- reading ----

    /// The contexts that hold subjects (a qualified subject `:.ctx:name` is in `.ctx`), the default context `.`
    /// first.
    pub fn contexts(&self) -> Vec<String> {
        let mut contexts: BTreeSet<String> = self
            .subjects
            .iter()
            .filter(|(_, s)| !s.versions.is_empty())
            .filter_map(|(name, _)| qualified(name).map(|(ctx, _)| ctx.to_string()))
            .collect();
        contexts.remove(".");
        std::iter::once(".".to_string()).chain(contexts).collect()
    }

    pub fn subjects(&self, deleted: bool, prefix: &str) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(name, s)| name.starts_with(prefix) && s.versions.values().any(|v| deleted || !v.deleted))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn subject(&self, subject: &str) -> Result<&Subject, RegistryError> {
        self.subjects
            .get(subject)
            .filter(|s| !s.versions.is_empty())
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_string()))
    }

    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i32>, RegistryError> {
        let s = self.subject(subject)?;
        let versions: Vec<i32> = s.versions.iter().filter(|(_, v)| deleted || !v.deleted).map(|(n, _)| *n).collect();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        Ok(versions)
    }

    pub fn version(&self, subject: &str, sel: VersionSel, deleted: bool) -> Result<VersionInfo, RegistryError> {
        let s = self.subject(subject)?;
        let found = match sel {
            VersionSel::Latest => s.versions.iter().rev().find(|(_, v)| deleted || !v.deleted).map(|(n, v)| (*n, *v)),
            VersionSel::Number(n) => s.versions.get(&n).filter(|v| deleted || !v.deleted).map(|v| (n, *v)),
        };
        let (version, v) = match found {
            Some(found) => found,
            None if sel == VersionSel::Latest && !deleted => {
                return Err(RegistryError::SubjectNotFound(subject.to_string()))
            }
            None => {
                return Err(RegistryError::VersionNotFound(match sel {
                    VersionSel::Latest => "latest".into(),
                    VersionSel::Number(n) => n.to_string(),
                }))
            }
        };
        let schema = self.schemas.get(&v.id).ok_or_else(|| RegistryError::SchemaNotFound(v.id.to_string()))?;
        Ok(VersionInfo { subject: subject.to_string(), version, schema: schema.clone(), deleted: v.deleted })
    }

    pub fn schema(&self, id: i32) -> Result<&Schema, RegistryError> {
        self.schemas.get(&id).ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    /// Whether a live (not soft-deleted) version of `subject` holds schema `id`: what the broker's schema validation
    /// asks for every record, so it allocates nothing.
    pub fn subject_holds_id(&self, subject: &str, id: i32) -> bool {
        self.subjects.get(subject).is_some_and(|s| s.versions.values().any(|v| v.id == id && !v.deleted))
    }

    /// The subjects' versions that hold schema `id`.
    pub fn id_versions(&self, id: i32, deleted: bool) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for (name, s) in &self.subjects {
            for (n, v) in &s.versions {
                if v.id == id && (deleted || !v.deleted) {
                    out.push((name.clone(), *n));
                }
            }
        }
        out
    }

    /// Ids of the schemas whose references name this subject's version.
    pub fn referenced_by(&self, subject: &str, version: i32) -> Vec<i32> {
        self.schemas
            .values()
            .filter(|s| s.references.iter().any(|r| r.subject == subject && r.version == version))
            .filter(|s| !self.id_versions(s.id, false).is_empty())
            .map(|s| s.id)
            .collect()
    }

    /// The subject's version holding this schema (the same schema written any way).
    pub fn lookup(&self, subject: &str, new: &NewSchema, deleted: bool) -> Result<VersionInfo, RegistryError> {
        let s = self.subject(subject)?;
        let parsed = self.parse(new.schema_type, &new.schema, &new.references)?;
        let content = ContentKey {
            schema_type: new.schema_type,
            normalized: parsed.normalized(),
            references: new.references.clone(),
        };
        let id = self.by_content.get(&content).ok_or_else(|| RegistryError::SchemaNotFound("".into()))?;
        let (version, v) = s
            .versions
            .iter()
            .rev()
            .find(|(_, v)| v.id == *id && (deleted || !v.deleted))
            .ok_or_else(|| RegistryError::SchemaNotFound("".into()))?;
        Ok(VersionInfo {
            subject: subject.to_string(),
            version: *version,
            schema: self.schemas[id].clone(),
            deleted: v.deleted,
        })
    }

    // ---- configuration ----

    pub fn compatibility(
        &self,
        subject: Option<&str>,
        default_to_global: bool,
    ) -> Result<Compatibility, RegistryError> {
        match subject {
            None => Ok(self.compatibility.unwrap_or(self.default_compatibility)),
            Some(name) => match self.subjects.get(name).and_then(|s| s.compatibility) {
                Some(level) => Ok(level),
                None if default_to_global => Ok(self
                    .context_setting(name, |s| s.compatibility)
                    .or(self.compatibility)
                    .unwrap_or(self.default_compatibility)),
                None => Err(RegistryError::SubjectCompatibilityNotConfigured(name.to_string())),
            },
        }
    }

    pub fn mode(&self, subject: Option<&str>, default_to_global: bool) -> Result<Mode, RegistryError> {
        match subject {
            None => Ok(self.mode.unwrap_or_default()),
            Some(name) => match self.subjects.get(name).and_then(|s| s.mode) {
                Some(mode) => Ok(mode),
                None if default_to_global => {
                    Ok(self.context_setting(name, |s| s.mode).or(self.mode).unwrap_or_default())
                }
                None => Err(RegistryError::SubjectModeNotConfigured(name.to_string())),
            },
        }
    }

    /// A setting of the context a qualified subject is in, configured on the context itself (as Confluent's
    /// registry takes it: on the subject `:.ctx:`, the context's name with nothing after it).
    fn context_setting<T>(&self, subject: &str, get: impl Fn(&Subject) -> Option<T>) -> Option<T> {
        let (ctx, name) = qualified(subject)?;
        if name.is_empty() {
            return None;
        }
        self.subjects.get(&format!(":{ctx}:")).and_then(get)
    }

    /// The record that sets a mode. IMPORT on a registry (or subject) that already holds schemas needs `force`:
    /// imported ids could collide with the ones there.
    pub fn plan_mode(&self, subject: Option<&str>, mode: Mode, force: bool) -> Result<Record, RegistryError> {
        if let Some(s) = subject {
            validate_subject(s)?;
        }
        if mode == Mode::Import && !force {
            let holds = match subject {
                None => !self.schemas.is_empty(),
                Some(s) => self.subjects.get(s).is_some_and(|s| !s.versions.is_empty()),
            };
            if holds {
                return Err(RegistryError::NotPermitted(
                    "Cannot import since found existing subjects; set force=true to import anyway".into(),
                ));
            }
        }
        Ok(Record::Mode { subject: subject.map(str::to_string), mode: Some(mode) })
    }

    // ---- registering ----

    /// Why `new` may not follow the subject's versions under its compatibility level (all of them if transitive,
    /// else the latest; or only `against` when given): empty when it may.
    pub fn incompatibilities(
        &self,
        subject: &str,
        new: &Parsed,
        against: Option<VersionSel>,
    ) -> Result<Vec<String>, RegistryError> {
        let level = self.compatibility(Some(subject), true)?;
        let Some(s) = self.subjects.get(subject) else { return Ok(Vec::new()) };
        let earlier: Vec<(i32, Version)> = match against {
            Some(sel) => vec![{
                let info = self.version(subject, sel, false)?;
                (info.version, Version { id: info.schema.id, deleted: false })
            }],
            None if level.transitive() => s.live().rev().collect(),
            None => s.live().next_back().into_iter().collect(),
        };
        if level == Compatibility::None {
            return Ok(Vec::new());
        }
        let mut reasons = Vec::new();
        for (version, v) in earlier {
            let Some(old) = self.schemas.get(&v.id).and_then(|s| s.parsed.clone()) else {
                reasons.push(format!("version {version}: its stored schema does not parse"));
                continue;
            };
            if level.backward() {
                for r in Parsed::incompatibilities(new, &old) {
                    reasons.push(format!("version {version} (backward): {r}"));
                }
            }
            if level.forward() {
                for r in Parsed::incompatibilities(&old, new) {
                    reasons.push(format!("version {version} (forward): {r}"));
                }
            }
        }
        Ok(reasons)
    }

    /// What registering `new` under `subject` takes.
    pub fn plan_register(&self, subject: &str, new: &NewSchema) -> Result<Registration, RegistryError> {
        validate_subject(subject)?;
        let mode = self.mode(Some(subject), true)?;
        if mode == Mode::ReadOnly {
            return Err(RegistryError::NotPermitted(format!("Subject {subject} is in read-only mode")));
        }
        if mode != Mode::Import && (new.id.is_some() || new.version.is_some()) {
            return Err(RegistryError::NotPermitted(format!(
                "An id or version may be given only in IMPORT mode; subject {subject} is in {} mode",
                mode.as_str()
            )));
        }
        let parsed = self.parse(new.schema_type, &new.schema, &new.references)?;
        let content = ContentKey {
            schema_type: new.schema_type,
            normalized: parsed.normalized(),
            references: new.references.clone(),
        };
        let known = self.by_content.get(&content).copied();
        let subject_state = self.subjects.get(subject);
        if let (Some(id), Some(s)) = (known, subject_state) {
            if let Some((version, _)) = s.live().rev().find(|(_, v)| v.id == id) {
                if new.id.is_none_or(|given| given == id) && new.version.is_none_or(|given| given == version) {
                    return Ok(Registration::Exists { id, version });
                }
            }
        }
        let id = match (mode, new.id) {
            (Mode::Import, Some(given)) => {
                if given <= 0 {
                    return Err(RegistryError::NotPermitted(format!("schema id {given} is not positive")));
                }
                if self.schemas.get(&given).is_some_and(|s| s.content != content) {
                    return Err(RegistryError::NotPermitted(format!(
                        "Overwrite new schema with id {given} is not permitted: it holds another schema"
                    )));
                }
                given
            }
            (Mode::Import, None) => {
                return Err(RegistryError::NotPermitted(format!(
                    "Subject {subject} is in IMPORT mode: a schema must be registered with its id"
                )))
            }
            _ => {
                if mode != Mode::Import {
                    let reasons = self.incompatibilities(subject, &parsed, None)?;
                    if !reasons.is_empty() {
                        return Err(RegistryError::Incompatible { subject: subject.to_string(), details: reasons });
                    }
                }
                known.unwrap_or(self.max_id.saturating_add(1))
            }
        };
        let next = subject_state.and_then(|s| s.versions.keys().next_back()).map_or(1, |v| v.saturating_add(1));
        let version = match new.version {
            Some(v) if v <= 0 => return Err(RegistryError::InvalidVersion(v.to_string())),
            Some(v) => {
                if subject_state.is_some_and(|s| s.versions.get(&v).is_some_and(|old| old.id != id)) {
                    return Err(RegistryError::NotPermitted(format!(
                        "Subject {subject} already has a version {v} with another schema"
                    )));
                }
                v
            }
            None => next,
        };
        let record = Record::Schema {
            subject: subject.to_string(),
            version,
            id,
            value: Some(SchemaValue {
                subject: subject.to_string(),
                version,
                id,
                schema_type: new.schema_type,
                schema: new.schema.clone(),
                references: new.references.clone(),
                deleted: false,
            }),
        };
        Ok(Registration::Write { id, version, record })
    }

    /// Whether the subject's `version` now holds `new` under `id`, live: a registration's record was applied (and not
    /// another instance's that claimed the same version and id for another schema first).
    pub fn holds(&self, subject: &str, version: i32, id: i32, new: &NewSchema) -> bool {
        let live =
            self.subjects.get(subject).and_then(|s| s.versions.get(&version)).is_some_and(|v| v.id == id && !v.deleted);
        live && self
            .schemas
            .get(&id)
            .is_some_and(|s| s.content == self.content_of(new.schema_type, &new.schema, &new.references))
    }

    // ---- deleting ----

    fn refuse_if_referenced(&self, subject: &str, version: i32) -> Result<(), RegistryError> {
        let ids = self.referenced_by(subject, version);
        if ids.is_empty() {
            Ok(())
        } else {
            Err(RegistryError::ReferenceExists { subject: subject.to_string(), version, ids })
        }
    }

    fn schema_record(&self, subject: &str, version: i32, v: Version, deleted: Option<bool>) -> Record {
        let schema = &self.schemas[&v.id];
        Record::Schema {
            subject: subject.to_string(),
            version,
            id: v.id,
            value: deleted.map(|deleted| SchemaValue {
                subject: subject.to_string(),
                version,
                id: v.id,
                schema_type: schema.schema_type,
                schema: schema.text.clone(),
                references: schema.references.clone(),
                deleted,
            }),
        }
    }

    /// The record that deletes one version: marked deleted (soft), or removed for good (`permanent`, once soft).
    pub fn plan_delete_version(
        &self,
        subject: &str,
        sel: VersionSel,
        permanent: bool,
    ) -> Result<(i32, Record), RegistryError> {
        self.refuse_read_only(subject)?;
        let s = self.subject(subject)?;
        let (version, v) = match sel {
            VersionSel::Latest => s.versions.iter().next_back().map(|(n, v)| (*n, *v)),
            VersionSel::Number(n) => s.versions.get(&n).map(|v| (n, *v)),
        }
        .ok_or_else(|| RegistryError::VersionNotFound(format!("{sel:?}")))?;
        if !self.schemas.contains_key(&v.id) {
            return Err(RegistryError::SchemaNotFound(v.id.to_string()));
        }
        self.refuse_if_referenced(subject, version)?;
        match (permanent, v.deleted) {
            (false, true) => Err(RegistryError::VersionSoftDeleted(subject.to_string(), version)),
            (true, false) => Err(RegistryError::VersionNotSoftDeleted(subject.to_string(), version)),
            (false, false) => Ok((version, self.schema_record(subject, version, v, Some(true)))),
            (true, true) => Ok((version, self.schema_record(subject, version, v, None))),
        }
    }

    /// The records that delete a subject's versions: all marked deleted (soft), or removed for good
    /// (`permanent`, once all are soft-deleted); with the versions affected.
    pub fn plan_delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<(Vec<i32>, Vec<Record>), RegistryError> {
        self.refuse_read_only(subject)?;
        let s = self.subject(subject)?;
        let live: Vec<(i32, Version)> = s.live().collect();
        if !permanent && live.is_empty() {
            return Err(RegistryError::SubjectSoftDeleted(subject.to_string()));
        }
        if permanent && !live.is_empty() {
            return Err(RegistryError::SubjectNotSoftDeleted(subject.to_string()));
        }
        let affected: Vec<(i32, Version)> =
            if permanent { s.versions.iter().map(|(n, v)| (*n, *v)).collect() } else { live };
        let mut versions = Vec::new();
        let mut records = Vec::new();
        for (version, v) in affected {
            self.refuse_if_referenced(subject, version)?;
            if !self.schemas.contains_key(&v.id) {
                continue;
            }
            versions.push(version);
            records.push(self.schema_record(subject, version, v, if permanent { None } else { Some(true) }));
        }
        if permanent {
            // The subject's own settings go with it, as Confluent's do.
            if s.compatibility.is_some() {
                records.push(Record::Config { subject: Some(subject.to_string()), level: None });
            }
            if s.mode.is_some() {
                records.push(Record::Mode { subject: Some(subject.to_string()), mode: None });
            }
        }
        Ok((versions, records))
    }

    fn refuse_read_only(&self, subject: &str) -> Result<(), RegistryError> {
        if self.mode(Some(subject), true)? == Mode::ReadOnly {
            return Err(RegistryError::NotPermitted(format!("Subject {subject} is in read-only mode")));
        }
        Ok(())
    }
}

/// A qualified subject's context and name (`:.ctx:name` is `(".ctx", "name")`); `None` for an unqualified one, which
/// is in the default context `.`.
pub fn qualified(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix(':')?;
    let (ctx, name) = rest.split_once(':')?;
    ctx.starts_with('.').then_some((ctx, name))
}

/// Subject names: anything printable, as Confluent takes (a context prefix `:.ctx:` included).
pub fn validate_subject(subject: &str) -> Result<(), RegistryError> {
    if subject.is_empty() || subject.len() > 1024 || subject.chars().any(char::is_control) {
        return Err(RegistryError::InvalidSubject(subject.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(schema: &str) -> NewSchema {
        NewSchema { schema: schema.to_string(), ..Default::default() }
    }

    /// Registers as the service does: plan, then apply the record as the reader would.
    fn register(r: &mut Registry, subject: &str, new: &NewSchema) -> Result<(i32, i32), RegistryError> {
        match r.plan_register(subject, new)? {
            Registration::Exists { id, version } => Ok((id, version)),
            Registration::Write { id, version, record } => {
                assert_eq!(r.apply(record), Applied::Yes);
                Ok((id, version))
            }
        }
    }

    const V1: &str = r#"{"type":"record","name":"P","fields":[{"name":"a","type":"int"}]}"#;
    const V2: &str =
        r#"{"type":"record","name":"P","fields":[{"name":"a","type":"int"},{"name":"b","type":"int","default":0}]}"#;
    const BAD: &str = r#"{"type":"record","name":"P","fields":[{"name":"a","type":"int"},{"name":"c","type":"int"}]}"#;

    #[test]
    fn ids_are_shared_by_content_and_never_reused() {
        let mut r = Registry::new(Compatibility::Backward);
        assert_eq!(register(&mut r, "a", &avro(V1)).unwrap(), (1, 1));
        assert_eq!(register(&mut r, "a", &avro(V1)).unwrap(), (1, 1), "the same schema again: nothing new");
        assert_eq!(register(&mut r, "b", &avro(V1)).unwrap(), (1, 1), "another subject shares the id");
        assert_eq!(register(&mut r, "a", &avro(V2)).unwrap(), (2, 2));
        // Gone for good from every subject: its id is not handed out again.
        let (_, soft) = r.plan_delete_version("a", VersionSel::Number(2), false).unwrap();
        r.apply(soft);
        let (_, hard) = r.plan_delete_version("a", VersionSel::Number(2), true).unwrap();
        r.apply(hard);
        assert!(matches!(r.schema(2), Err(RegistryError::SchemaNotFound(_))));
        let (id, version) = register(&mut r, "c", &avro(r#""string""#)).unwrap();
        assert_eq!((id, version), (3, 1));
        // A version removed for good is free again (as in Confluent's registry); its id is not.
        assert_eq!(register(&mut r, "a", &avro(V2)).unwrap(), (4, 2));
    }

    #[test]
    fn compatibility_levels_refuse_with_reasons() {
        let mut r = Registry::new(Compatibility::Backward);
        register(&mut r, "s", &avro(V1)).unwrap();
        match register(&mut r, "s", &avro(BAD)) {
            Err(RegistryError::Incompatible { details, .. }) => assert!(details.join(" ").contains('c'), "{details:?}"),
            other => panic!("{other:?}"),
        }
        r.apply(Record::Config { subject: Some("s".into()), level: Some(Compatibility::None) });
        assert!(register(&mut r, "s", &avro(BAD)).is_ok());
        assert_eq!(r.compatibility(Some("s"), false).unwrap(), Compatibility::None);
        assert!(matches!(r.compatibility(Some("t"), false), Err(RegistryError::SubjectCompatibilityNotConfigured(_))));
        assert_eq!(r.compatibility(Some("t"), true).unwrap(), Compatibility::Backward);
        assert_eq!("full_transitive".parse::<Compatibility>().unwrap(), Compatibility::FullTransitive);
        assert_eq!("SIDEWAYS".parse::<Compatibility>().unwrap_err().code(), 42203);
    }

    #[test]
    fn deletes_go_soft_then_permanent_and_respect_references() {
        let mut r = Registry::new(Compatibility::Backward);
        register(&mut r, "s", &avro(V1)).unwrap();
        let err = r.plan_delete_version("s", VersionSel::Number(1), true).unwrap_err();
        assert_eq!(err.code(), 40407, "permanent before soft");
        let (_, record) = r.plan_delete_version("s", VersionSel::Number(1), false).unwrap();
        r.apply(record);
        assert_eq!(r.plan_delete_version("s", VersionSel::Number(1), false).unwrap_err().code(), 40406);
        assert_eq!(r.versions("s", false).unwrap_err().code(), 40401, "no live version: not found");
        assert_eq!(r.versions("s", true).unwrap(), vec![1]);
        assert!(r.subjects(false, "").is_empty() && r.subjects(true, "") == vec!["s".to_string()]);
        assert_eq!(r.plan_delete_subject("s", false).unwrap_err().code(), 40404);

        // A referenced version may not be deleted.
        register(&mut r, "addr", &avro(r#"{"type":"record","name":"A","fields":[{"name":"c","type":"string"}]}"#))
            .unwrap();
        let using = NewSchema {
            schema: r#"{"type":"record","name":"U","fields":[{"name":"a","type":"A"}]}"#.into(),
            references: vec![Reference { name: "A".into(), subject: "addr".into(), version: 1 }],
            ..Default::default()
        };
        register(&mut r, "user", &using).unwrap();
        assert_eq!(r.plan_delete_version("addr", VersionSel::Latest, false).unwrap_err().code(), 42206);
        assert_eq!(r.plan_delete_subject("addr", false).unwrap_err().code(), 42206);
        let missing = NewSchema {
            references: vec![Reference { name: "A".into(), subject: "nowhere".into(), version: 1 }],
            ..using.clone()
        };
        assert_eq!(register(&mut r, "user2", &missing).unwrap_err().code(), 42201);
    }

    #[test]
    fn modes_gate_writes_and_import_keeps_given_ids() {
        let mut r = Registry::new(Compatibility::Backward);
        register(&mut r, "s", &avro(V1)).unwrap();
        r.apply(r.plan_mode(Some("s"), Mode::ReadOnly, false).unwrap());
        assert_eq!(register(&mut r, "s", &avro(V2)).unwrap_err().code(), 42205);
        assert_eq!(r.plan_delete_subject("s", false).unwrap_err().code(), 42205);
        assert_eq!(
            r.plan_mode(None, Mode::Import, false).unwrap_err().code(),
            42205,
            "import over schemas needs force"
        );
        r.apply(r.plan_mode(Some("imported"), Mode::Import, false).unwrap());
        let given = NewSchema { id: Some(100), version: Some(7), ..avro(BAD) };
        assert_eq!(register(&mut r, "imported", &given).unwrap(), (100, 7), "unchecked, with its id and version");
        assert_eq!(register(&mut r, "imported", &avro(V2)).unwrap_err().code(), 42205, "IMPORT needs the id");
        let clash = NewSchema { id: Some(1), version: Some(8), ..avro(V2) };
        assert_eq!(register(&mut r, "imported", &clash).unwrap_err().code(), 42205, "id 1 holds another schema");
        r.apply(Record::Mode { subject: Some("imported".into()), mode: None });
        assert_eq!(register(&mut r, "fresh", &avro(r#""int""#)).unwrap().0, 101, "new ids follow imported ones");
        assert_eq!("readonly".parse::<Mode>().unwrap(), Mode::ReadOnly);
        assert_eq!("sometimes".parse::<Mode>().unwrap_err().code(), 42204);
    }

    /// Two writers decided on the same state: the second record in the log loses, whatever it claims.
    #[test]
    fn a_record_that_lost_a_race_is_ignored() {
        let mut r = Registry::new(Compatibility::None);
        let first = r.plan_register("s", &avro(V1)).unwrap();
        let second = r.plan_register("s", &avro(r#""string""#)).unwrap();
        let (Registration::Write { record: a, .. }, Registration::Write { record: b, id, version }) = (first, second)
        else {
            panic!("both write")
        };
        assert_eq!(r.apply(a), Applied::Yes);
        assert_eq!(r.apply(b), Applied::Lost, "version 1 and id 1 were taken");
        assert!(!r.holds("s", version, id, &avro(r#""string""#)));
        assert!(r.holds("s", 1, 1, &avro(V1)));
        // Decided again, on the new state: version 2, id 2.
        assert_eq!(register(&mut r, "s", &avro(r#""string""#)).unwrap(), (2, 2));
    }

    #[test]
    fn versions_and_subjects_are_validated() {
        assert_eq!("0".parse::<VersionSel>().unwrap_err().code(), 42202);
        assert_eq!("abc".parse::<VersionSel>().unwrap_err().code(), 42202);
        assert_eq!("-1".parse::<VersionSel>().unwrap(), VersionSel::Latest);
        assert!(validate_subject("").is_err() && validate_subject("a\nb").is_err());
        assert!(validate_subject(":.ctx:orders-value").is_ok());
        let r = Registry::new(Compatibility::Backward);
        assert_eq!(r.plan_register("", &avro(V1)).unwrap_err().status(), 422);
        assert_eq!(RegistryError::SubjectNotFound("x".into()).status(), 404);
        assert_eq!(RegistryError::Incompatible { subject: "x".into(), details: vec![] }.status(), 409);
    }
}
