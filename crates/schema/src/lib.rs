//! weir's schema registry: schemas in Avro, JSON Schema and Protobuf, parsed, normalized and checked for
//! compatibility by each format's own rules ([`formats`]); the registry's state and decisions ([`registry`]) kept in
//! the `_schemas` topic ([`records`]) through the runtime's Bus ([`service`]), so one registry serves every weir
//! instance on a cluster; Confluent's REST API over it ([`api`]); Confluent's wire format for records that carry
//! a schema id ([`wire`]); the subject naming strategies ([`naming`]); the broker's schema validation of such
//! records, answered by the registry ([`validation`]); and the serializers above it: the REST Proxy's schema formats and the systems' typed events ([`serializers`]).

pub mod api;
pub mod avro;
pub mod codec;
pub mod formats;
pub mod json;
pub mod naming;
pub mod protobuf;
pub mod records;
pub mod registry;
pub mod serializers;
pub mod service;
pub mod validation;
pub mod wire;

pub use codec::SerdeError;
pub use formats::{Dependency, InvalidSchema, Parsed, PayloadError, SchemaType};
pub use naming::subject_name;
pub use registry::{Compatibility, Mode, NewSchema, Registry, RegistryError, VersionSel};
pub use serializers::Serializers;
pub use service::{SchemaService, ServiceConfig, SCHEMAS_TOPIC};
pub use validation::RegistryValidator;
