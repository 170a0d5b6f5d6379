//! `weir schemas list|get|register|check|delete`: the schema registry from the command line. It runs the registry
//! itself over the `_schemas` topic — on --data-dir's embedded log, or with --server over the Kafka protocol (a running
//! weir, whose registry reads the change at once, or a cluster weir instances share) — so what it registers is
//! checked and stored exactly as the REST API's registrations are.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use weir_runtime::{Bus, EmbeddedBus, KafkaBus};
use weir_schema::records::Reference;
use weir_schema::{NewSchema, SchemaService, SchemaType, ServiceConfig, VersionSel};

use super::{open_broker, print_line};
use crate::cli::{SchemaSource, SchemasCommand};
use crate::settings::Settings;

pub async fn run(settings: Settings, cmd: SchemasCommand) -> Result<()> {
    let (bus, broker): (Arc<dyn Bus>, _) = match &settings.server {
        Some(server) => (Arc::new(KafkaBus::connect(server).map_err(|e| anyhow::anyhow!("--server: {e}"))?), None),
        None => {
            let broker = open_broker(&settings)?;
            (Arc::new(EmbeddedBus::new(broker.clone())), Some(broker))
        }
    };
    let result = async {
        let service = SchemaService::start(bus, ServiceConfig::default()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        execute(&service, cmd).await
    }
    .await;
    if let Some(b) = broker {
        b.shutdown();
    }
    result
}

async fn execute(service: &SchemaService, cmd: SchemasCommand) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        SchemasCommand::List { deleted, prefix } => {
            let state = service.state();
            for subject in state.subjects(deleted, &prefix) {
                let latest = state.version(&subject, VersionSel::Latest, deleted).map_err(registry)?;
                let line = format!(
                    "{subject}\tversion {}\tid {}\t{}{}",
                    latest.version,
                    latest.schema.id,
                    latest.schema.schema_type,
                    if latest.deleted { "\tdeleted" } else { "" }
                );
                if !print_line(&mut out, line.as_bytes())? {
                    break;
                }
            }
        }
        SchemasCommand::Get { subject, version, id } => {
            let state = service.state();
            let text = match (subject, id) {
                (_, Some(id)) => state.schema(id).map_err(registry)?.text.clone(),
                (Some(subject), None) => {
                    let sel: VersionSel = version.parse().map_err(registry)?;
                    state.version(&subject, sel, false).map_err(registry)?.schema.text
                }
                (None, None) => bail!("name a subject or give --id"),
            };
            print_line(&mut out, text.as_bytes())?;
        }
        SchemasCommand::Register { subject, source } => {
            let new = read_source(&source)?;
            let (id, version) = service.register(&subject, &new).await.map_err(registry)?;
            print_line(&mut out, format!("registered {subject} version {version} as id {id}").as_bytes())?;
        }
        SchemasCommand::Check { subject, source, version } => {
            let new = read_source(&source)?;
            let against = version.as_deref().map(str::parse::<VersionSel>).transpose().map_err(registry)?;
            let reasons = {
                let state = service.state();
                let parsed = state.parse(new.schema_type, &new.schema, &new.references).map_err(registry)?;
                state.incompatibilities(&subject, &parsed, against).map_err(registry)?
            };
            if reasons.is_empty() {
                print_line(&mut out, format!("compatible with {subject}").as_bytes())?;
            } else {
                for r in &reasons {
                    print_line(&mut out, r.as_bytes())?;
                }
                bail!("incompatible with {subject}: {} reason(s) above", reasons.len());
            }
        }
        SchemasCommand::Delete { subject, version, permanent } => {
            let how = if permanent { "deleted for good" } else { "soft-deleted" };
            let versions = match version {
                Some(v) => {
                    let sel: VersionSel = v.parse().map_err(registry)?;
                    vec![service.delete_version(&subject, sel, permanent).await.map_err(registry)?]
                }
                None => service.delete_subject(&subject, permanent).await.map_err(registry)?,
            };
            let list: Vec<String> = versions.iter().map(i32::to_string).collect();
            print_line(&mut out, format!("{how}: {subject} version(s) {}", list.join(", ")).as_bytes())?;
        }
    }
    Ok(())
}

/// The registry's error as one line with its code, as the REST API would answer it.
fn registry(e: weir_schema::RegistryError) -> anyhow::Error {
    anyhow::anyhow!("{e} (error {})", e.code())
}

fn read_source(source: &SchemaSource) -> Result<NewSchema> {
    let schema = if source.file == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the schema from stdin")?
    } else {
        std::fs::read_to_string(&source.file).with_context(|| format!("cannot read {}", source.file))?
    };
    let schema_type = match &source.schema_type {
        Some(t) => t.parse::<SchemaType>().map_err(|e| anyhow::anyhow!("--type: {e}"))?,
        None if source.file.ends_with(".proto") => SchemaType::Protobuf,
        None => SchemaType::Avro,
    };
    let references = source.references.iter().map(|r| parse_reference(r)).collect::<Result<Vec<_>>>()?;
    Ok(NewSchema { schema_type, schema, references, id: None, version: None })
}

fn parse_reference(text: &str) -> Result<Reference> {
    let bad = || anyhow::anyhow!("--reference {text:?}: expected NAME=SUBJECT:VERSION");
    let (name, rest) = text.split_once('=').ok_or_else(bad)?;
    let (subject, version) = rest.rsplit_once(':').ok_or_else(bad)?;
    let version: i32 = version.parse().map_err(|_| bad())?;
    if name.is_empty() || subject.is_empty() || version < 1 {
        return Err(bad());
    }
    Ok(Reference { name: name.to_string(), subject: subject.to_string(), version })
}
