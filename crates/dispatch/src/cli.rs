//! `weir dispatch generate N`: the origin's event generator. It writes N random detection events in one transaction
//! straight into a database (`--database URL`, with their outbound messages in the outbox, which the relay of a weir
//! on that database publishes), or sends them through a running weir's API (`--target HOST:PORT`, one transaction per
//! request of up to 10,000), printing each as the origin's generator logged it (`--quiet`: only the total).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::Value;
use weir_runtime::api_client::ApiTarget;
use weir_runtime::{CommandHost, SqlStore};

use crate::api::MAX_EVENTS_PER_REQUEST;
use crate::events::{generate as make, DetectionEvent};
use crate::store;

pub fn command() -> Command {
    Command::new("dispatch")
        .about("Dispatch (seed 003): generate detection events")
        .subcommand_required(true)
        .subcommand(
            Command::new("generate")
                .about("Writes N random detection events (the origin's value sets), in one transaction")
                .long_about(
                    "Writes N random detection events with the origin's value sets (regions NA, EU, APAC, LATAM; four \
                     rule types; five locations; severity 1-5; device_0..99, camera_0..49; unique frame references), \
                     printing each. With --database they go straight into that database in one transaction, with \
                     their events.outbound messages in the outbox (a weir running on that database publishes them); \
                     with --target they go through a running weir's POST /api/dispatch/events, one transaction per \
                     request of up to 10,000.",
                )
                .arg(
                    Arg::new("count")
                        .value_name("N")
                        .default_value("10")
                        .value_parser(clap::value_parser!(u64).range(1..=10_000_000)),
                )
                .arg(
                    Arg::new("database")
                        .long("database")
                        .value_name("URL")
                        .help("postgres://... or sqlite://...: write straight into it"),
                )
                .arg(
                    Arg::new("target")
                        .long("target")
                        .value_name("HOST:PORT")
                        .conflicts_with("database")
                        .help("A running weir's HTTP address"),
                )
                .arg(
                    Arg::new("quiet")
                        .long("quiet")
                        .action(ArgAction::SetTrue)
                        .help("Print only the total, not each event"),
                ),
        )
}

pub async fn run(matches: ArgMatches, _host: Arc<dyn CommandHost>) -> Result<()> {
    match matches.subcommand() {
        Some(("generate", m)) => generate(m).await,
        _ => bail!("unknown dispatch command"),
    }
}

async fn generate(m: &ArgMatches) -> Result<()> {
    let n = *m.get_one::<u64>("count").context("N")? as usize;
    let quiet = m.get_flag("quiet");
    let (database, target) = (m.get_one::<String>("database"), m.get_one::<String>("target"));
    if database.is_none() && target.is_none() {
        bail!("say where the events go: --database URL (straight into it) or --target HOST:PORT (a running weir)");
    }
    let events = make(n, weir_runtime::time::now_ms(), &mut rand::thread_rng());
    if !quiet {
        for e in &events {
            println!("{}", e.line());
        }
    }
    if let Some(url) = database {
        let store = SqlStore::connect(url).await.with_context(|| format!("cannot open {url}"))?;
        store::migrate(&store).await.context("cannot create dispatch's tables")?;
        let mut tx = store.begin().await?;
        // What a relay in this process would be handed; the running weir's relay reads the outbox instead.
        let _enqueued = store::insert_and_relay(&mut tx, store.dialect(), &events).await?;
        tx.commit().await.context("cannot commit the events")?;
    } else if let Some(target) = target {
        let api = ApiTarget::Http(target.clone());
        for chunk in events.chunks(MAX_EVENTS_PER_REQUEST) {
            let body = Value::Array(chunk.iter().map(outbound_json).collect::<Result<_>>()?);
            let (status, answer) = api.exchange("POST", "/api/dispatch/events", &body).await?;
            if status != 201 {
                bail!("POST /api/dispatch/events on {target} answered {status}: {answer}");
            }
        }
    }
    eprintln!("{n} events written");
    Ok(())
}

fn outbound_json(e: &DetectionEvent) -> Result<Value> {
    Ok(serde_json::to_value(e.outbound())?)
}
