//! `weir repair ...`: `example` prints one of each event as JSON and its Avro schema (the origin's "events
//! examples" TODO); `simulate` drives the whole shop through its HTTP API — of a weir of its own on a fast clock by
//! default, or of a running weir (`--target`) — and reports tickets opened and closed, time to close, stuck tickets
//! and duplicate effects; `trace TICKET_ID` prints a ticket's journey across the topics with the time at each hop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{json, Value};
use weir_runtime::api_client::ApiTarget;
use weir_runtime::handler::EVENT_ID_HEADER;
use weir_runtime::system::Host;
use weir_runtime::{Bus, CommandHost, StartFrom, SystemSettings};

use crate::avro::AvroEvent;
use crate::events::{
    AppointmentBooked, PaymentRegistered, RepairType, Requester, TicketClosed, TicketOpened, Timestamp, APPOINTMENTS,
    PAYMENTS, TICKETS,
};
use crate::trace::{TraceContext, TRACEPARENT};
use crate::RepairSystem;

pub fn command() -> Command {
    Command::new("repair")
        .about("The car repair shop (seed 001): examples of its events, a simulator, a ticket's trace")
        .subcommand_required(true)
        .subcommand(Command::new("example").about("Prints one example of each event, as JSON and as its Avro schema"))
        .subcommand(
            Command::new("simulate")
                .about("Opens tickets through the shop's HTTP API and waits for every one to close; prints a report")
                .long_about(
                    "Opens --tickets tickets through POST /api/repair/tickets (in requests of --batch) and waits until \
                     every one is closed, then reports: tickets opened and closed, time to close (p50, p99), stuck \
                     tickets (not closed within --timeout) and duplicate effects (an appointment or payment given twice).\n\n\
                     Without --target it starts a weir of its own in a temporary directory (embedded broker, schema \
                     registry, SQLite or --database) whose clock runs at --speed; with --target it drives a running \
                     `weir up --systems repair` over HTTP.",
                )
                .arg(Arg::new("tickets").long("tickets").value_parser(clap::value_parser!(u64).range(1..)).default_value("1000"))
                .arg(Arg::new("speed").long("speed").default_value("max").help("The shop clock: shop seconds per real second, or max"))
                .arg(Arg::new("batch").long("batch").value_parser(clap::value_parser!(u64).range(1..=1000)).default_value("100").help("Tickets per request"))
                .arg(Arg::new("in-flight").long("in-flight").value_parser(clap::value_parser!(u64).range(1..=64)).default_value("2").help("Requests opening tickets at once (each one database transaction)"))
                .arg(Arg::new("target").long("target").value_name("HOST:PORT").help("A running weir's HTTP address"))
                .arg(Arg::new("database").long("database").value_name("URL").help("The scratch weir's database (default: SQLite in its directory)"))
                .arg(Arg::new("workers").long("workers").value_parser(clap::value_parser!(u64).range(1..=64)).help("Workers per service (scratch weir)"))
                .arg(Arg::new("bays").long("bays").value_parser(clap::value_parser!(u32).range(1..=1000)).help("Repair bays (scratch weir)"))
                .arg(Arg::new("max-batch").long("max-batch").value_parser(clap::value_parser!(u64).range(1..=10_000)).help("Records per service batch, one database transaction each (scratch weir; default 500)"))
                .arg(Arg::new("timeout").long("timeout").value_parser(clap::value_parser!(u64).range(1..)).default_value("600").help("Seconds to wait for every ticket to close"))
                .arg(Arg::new("report").long("report").value_parser(["text", "json"]).default_value("text")),
        )
        .subcommand(
            Command::new("trace")
                .about("Prints a ticket's journey: each event, the topic, its trace context and the time since the last hop")
                .arg(Arg::new("ticket").required(true).value_name("TICKET_ID"))
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("One JSON object per event")),
        )
}

pub async fn run(matches: ArgMatches, host: Arc<dyn CommandHost>) -> Result<()> {
    match matches.subcommand() {
        Some(("example", _)) => example(),
        Some(("simulate", m)) => simulate(m, host).await,
        Some(("trace", m)) => trace(m, host).await,
        _ => bail!("unknown repair command"),
    }
}

/// One of each event, typed, as the services produce them.
pub fn examples() -> (TicketOpened, AppointmentBooked, PaymentRegistered, TicketClosed) {
    let ticket = uuid::Uuid::parse_str("4f7a1c9e-2b3d-4e5f-8a6b-7c8d9e0f1a2b").unwrap_or_default();
    let appointment = uuid::Uuid::parse_str("9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d").unwrap_or_default();
    let payment = uuid::Uuid::parse_str("1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e").unwrap_or_default();
    let t0 = 1_764_576_000_000_000; // 2025-12-01T08:00:00Z
    (
        TicketOpened {
            occurred_on: Timestamp(t0),
            ticket_id: ticket,
            requester: Requester {
                email: "ada.lovelace@example.com".into(),
                name: "Ada".into(),
                middlename: Some("Augusta".into()),
                surname: "Lovelace".into(),
                age: 36,
            },
            repair_type: RepairType::Bumper,
        },
        AppointmentBooked {
            occurred_on: Timestamp(t0 + 2_000),
            ticket_id: ticket,
            appointment_id: appointment,
            scheduled_at: Timestamp(t0 + 3_600_000_000),
        },
        PaymentRegistered {
            ticket_id: ticket,
            appointment_id: appointment,
            payment_id: payment,
            occurred_on: Timestamp(t0 + 3 * 3_600_000_000),
            amount: RepairType::Bumper.price(),
        },
        TicketClosed { occurred_on: Timestamp(t0 + 3 * 3_600_000_000 + 5_000), ticket_id: ticket },
    )
}

/// An event as people read it: timestamps as RFC 3339, the decimal as its digits.
pub fn readable(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), &v) {
                        ("occurred_on" | "scheduled_at", Value::Number(n)) => {
                            json!(Timestamp(n.as_i64().unwrap_or_default()).to_string())
                        }
                        _ => readable(v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

fn example() -> Result<()> {
    let (opened, booked, paid, closed) = examples();
    let show = |name: &str, topic: &str, mut value: Value, schema: &str| -> Result<()> {
        value = readable(value);
        println!("# {name} (topic {topic})\n{}\n", serde_json::to_string_pretty(&value)?);
        let schema: Value = serde_json::from_str(schema)?;
        println!("## Avro schema\n{}\n", serde_json::to_string_pretty(&schema)?);
        Ok(())
    };
    show(TicketOpened::NAME, TICKETS, serde_json::to_value(&opened)?, TicketOpened::SCHEMA)?;
    show(AppointmentBooked::NAME, APPOINTMENTS, serde_json::to_value(&booked)?, AppointmentBooked::SCHEMA)?;
    let mut paid_json = serde_json::to_value(&paid)?;
    paid_json["amount"] = json!(paid.amount.to_string());
    show(PaymentRegistered::NAME, PAYMENTS, paid_json, PaymentRegistered::SCHEMA)?;
    show(TicketClosed::NAME, TICKETS, serde_json::to_value(&closed)?, TicketClosed::SCHEMA)?;
    Ok(())
}

/// What `simulate` reports.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub opened: u64,
    pub closed: u64,
    pub stuck: u64,
    pub duplicates: u64,
    pub close_p50_ms: u64,
    pub close_p99_ms: u64,
    pub seconds: f64,
    /// Seconds until the last ticket was opened (the API's share of `seconds`).
    pub open_seconds: f64,
    pub tickets_per_second: f64,
}

async fn simulate(m: &ArgMatches, host: Arc<dyn CommandHost>) -> Result<()> {
    let tickets = *m.get_one::<u64>("tickets").context("--tickets")?;
    let batch = *m.get_one::<u64>("batch").context("--batch")?;
    let in_flight = *m.get_one::<u64>("in-flight").context("--in-flight")? as usize;
    let timeout = Duration::from_secs(*m.get_one::<u64>("timeout").context("--timeout")?);
    let speed = m.get_one::<String>("speed").context("--speed")?.clone();
    speed.parse::<crate::clock::Speed>().map_err(anyhow::Error::msg)?;
    let json_report = m.get_one::<String>("report").map(String::as_str) == Some("json");
    let report = match m.get_one::<String>("target") {
        Some(target) => {
            for flag in ["database", "workers", "bays", "max-batch"] {
                if m.contains_id(flag) && m.value_source(flag) == Some(clap::parser::ValueSource::CommandLine) {
                    bail!("--{flag} sets up the simulator's own weir; a --target weir has its own settings");
                }
            }
            let api = ApiTarget::Http(target.clone());
            drive(&api, tickets, batch, in_flight, timeout).await?
        }
        None => {
            let platform = host.scratch(m.get_one::<String>("database").map(String::as_str)).await?;
            let store = platform.store.clone().context("the scratch platform has no database")?;
            let kv = platform.kv.clone().context("the scratch platform has no key-value store")?;
            let registry = platform.schemas.clone().context("the scratch platform has no schema registry")?;
            let mut systems = Host::new(platform.bus.clone(), store, kv).with_schemas(registry);
            let mut flags = vec![
                ("clock_speed".to_string(), speed.clone()),
                ("encryption_key".to_string(), crate::crypto::FieldKey::generate()),
            ];
            if let Some(w) = m.get_one::<u64>("workers") {
                flags.push(("workers".into(), w.to_string()));
            }
            if let Some(b) = m.get_one::<u32>("bays") {
                flags.push(("bays".into(), b.to_string()));
            }
            if let Some(b) = m.get_one::<u64>("max-batch") {
                flags.push(("max_batch".into(), b.to_string()));
            }
            let settings = SystemSettings::layered("repair", &[], None, Vec::new(), &flags);
            let routes = systems.start(&RepairSystem, settings).await.context("cannot start the repair shop")?;
            let outcome = drive(&ApiTarget::Router(routes), tickets, batch, in_flight, timeout).await;
            // The bus's own account: each ticket booked and paid once, in what consumers read.
            let bus_duplicates = match &outcome {
                Ok(_) => committed_duplicates(&*platform.bus).await,
                Err(_) => Ok(0),
            };
            systems.stop_and_warn(Duration::from_secs(10)).await;
            platform.close().await;
            let mut report = outcome?;
            report.duplicates += bus_duplicates?;
            report
        }
    };
    if json_report {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "tickets opened {}, closed {}, stuck {}, duplicate effects {}\ntime to close: p50 {} ms, p99 {} ms\n{:.1} s ({:.1} s to open them all), {:.0} tickets/s closed",
            report.opened,
            report.closed,
            report.stuck,
            report.duplicates,
            report.close_p50_ms,
            report.close_p99_ms,
            report.seconds,
            report.open_seconds,
            report.tickets_per_second
        );
    }
    if report.stuck > 0 || report.duplicates > 0 {
        bail!("{} tickets stuck, {} duplicate effects", report.stuck, report.duplicates);
    }
    Ok(())
}

fn random_ticket(i: u64) -> Value {
    let names = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken"];
    let surnames = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson"];
    let n = names[(i % 8) as usize];
    let s = surnames[((i / 8) % 8) as usize];
    json!({
        "requester": {
            "email": format!("{}.{}{i}@example.com", n.to_lowercase(), s.to_lowercase()),
            "name": n,
            "middlename": if i.is_multiple_of(3) { Value::Null } else { json!("Q") },
            "surname": s,
            "age": 18 + (i % 60),
        },
        "repair_type": RepairType::ALL[(i % 3) as usize].as_str(),
    })
}

async fn drive(api: &ApiTarget, tickets: u64, batch: u64, in_flight: usize, timeout: Duration) -> Result<Report> {
    use futures_util::stream::{self, StreamExt};
    let since_ms = weir_runtime::time::now_ms();
    let started = Instant::now();
    let mut opened = 0u64;
    let progress = indicatif_free_progress(tickets);
    // Up to `in_flight` requests at once, as several front desks would send them: one request at a time leaves the
    // shop idle while each is parsed, encrypted and committed.
    let requests = (0..tickets).step_by(batch as usize).map(|first| {
        let n = batch.min(tickets - first);
        let body = Value::Array((first..first + n).map(random_ticket).collect());
        async move { (n, api.exchange("POST", "/api/repair/tickets", &body).await) }
    });
    let mut answers = stream::iter(requests).buffer_unordered(in_flight);
    while let Some((n, answer)) = answers.next().await {
        let (status, answer) = answer?;
        if status != 201 {
            bail!("POST /api/repair/tickets on {} answered {status}: {answer}", api.name());
        }
        opened += n;
        progress(opened, "opened");
    }
    let open_seconds = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + timeout;
    // Progress is polled with one cheap count, the tickets closed since the run began (`only=closed`): the counts
    // per status join every table, a cost that grows with the run and, ten times a second, took a quarter of
    // PostgreSQL's time (and on SQLite, whose one connection the shop shares, most of the shop's) from the shop
    // being measured. Tickets of an earlier run closing now count too, so the exact stats confirm the end.
    let (stats, seconds) = loop {
        let (status, polled) =
            api.exchange("GET", &format!("/api/repair/stats?since_ms={since_ms}&only=closed"), &Value::Null).await?;
        if status != 200 {
            bail!("GET /api/repair/stats on {} answered {status}: {polled}", api.name());
        }
        let closed = polled["closed_since"].as_u64().unwrap_or(0);
        progress(closed.min(tickets), "closed");
        let timed_out = Instant::now() >= deadline;
        if closed >= tickets || timed_out {
            let seconds = started.elapsed().as_secs_f64();
            let (status, stats) =
                api.exchange("GET", &format!("/api/repair/stats?since_ms={since_ms}"), &Value::Null).await?;
            if status != 200 {
                bail!("GET /api/repair/stats on {} answered {status}: {stats}", api.name());
            }
            if stats["tickets"]["closed"].as_u64().unwrap_or(0) >= tickets || timed_out {
                break (stats, seconds);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let closed = stats["tickets"]["closed"].as_u64().unwrap_or(0);
    Ok(Report {
        opened,
        closed,
        stuck: opened.saturating_sub(closed),
        duplicates: stats["duplicates"].as_u64().unwrap_or(0),
        close_p50_ms: stats["close_ms"]["p50"].as_u64().unwrap_or(0),
        close_p99_ms: stats["close_ms"]["p99"].as_u64().unwrap_or(0),
        seconds,
        open_seconds,
        tickets_per_second: closed as f64 / seconds.max(1e-9),
    })
}

/// Progress on stderr, only when it is a terminal (reports stay clean in scripts).
fn indicatif_free_progress(total: u64) -> impl Fn(u64, &str) {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    move |n, what| {
        if tty {
            eprint!("\r{n}/{total} {what}   ");
            if n >= total && what == "closed" {
                eprintln!();
            }
        }
    }
}

/// Tickets booked or paid more than once in what read_committed consumers of `appointments` and `payments` see:
/// two different appointment ids, or payment ids, for one ticket.
async fn committed_duplicates(bus: &dyn Bus) -> Result<u64> {
    let mut duplicates = 0;
    for topic in [APPOINTMENTS, PAYMENTS] {
        let mut per_ticket: HashMap<String, HashSet<Vec<u8>>> = HashMap::new();
        for m in read_all(bus, topic).await? {
            let (Some(k), Some(v)) = (m.key, m.value) else { continue };
            // The value after the schema id: the ids are the first fields of both records.
            per_ticket.entry(String::from_utf8_lossy(&k).into_owned()).or_default().insert(v.to_vec());
        }
        duplicates += per_ticket.values().filter(|ids| ids.len() > 1).count() as u64;
    }
    Ok(duplicates)
}

/// Every record of `topic` now.
async fn read_all(bus: &dyn Bus, topic: &str) -> Result<Vec<weir_runtime::Message>> {
    let mut sub = bus.read(&[topic.to_string()], StartFrom::Earliest).await?;
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 3 {
        let batch = sub.next_batch(Duration::from_millis(200)).await?;
        if batch.is_empty() {
            idle += 1;
        } else {
            idle = 0;
            out.extend(batch);
        }
    }
    let _ = sub.close().await;
    Ok(out)
}

async fn trace(m: &ArgMatches, host: Arc<dyn CommandHost>) -> Result<()> {
    let ticket = m.get_one::<String>("ticket").context("TICKET_ID")?;
    let ticket = uuid::Uuid::parse_str(ticket).with_context(|| format!("{ticket:?} is not a ticket id (a UUID)"))?;
    let as_json = m.get_flag("json");
    let platform = host.data_bus().await?;
    let key = ticket.to_string();
    let mut hops = Vec::new();
    for topic in [TICKETS, APPOINTMENTS, PAYMENTS] {
        for msg in read_all(&*platform.bus, topic).await? {
            if msg.key.as_deref() == Some(key.as_bytes()) {
                hops.push(msg);
            }
        }
    }
    platform.close().await;
    if hops.is_empty() {
        bail!("no event of ticket {ticket} on {TICKETS}, {APPOINTMENTS} or {PAYMENTS}");
    }
    hops.sort_by_key(|m| (m.timestamp, m.topic.clone(), m.offset));
    let mut previous: Option<i64> = None;
    let mut seen = HashSet::new();
    for msg in &hops {
        let id = msg.header(EVENT_ID_HEADER).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
        let event = id.split(':').next().unwrap_or("?").to_string();
        let again = !seen.insert(id.clone());
        let trace = msg.header(TRACEPARENT).and_then(|h| TraceContext::parse(h));
        let since = previous.map(|p| msg.timestamp - p);
        previous = Some(msg.timestamp);
        if as_json {
            println!(
                "{}",
                json!({"event": event, "topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
                       "at": weir_runtime::time::format_rfc3339(msg.timestamp), "since_previous_ms": since,
                       "trace_id": trace.map(|t| t.trace_hex()), "span_id": trace.map(|t| t.span_hex()),
                       "republished": again})
            );
        } else {
            println!(
                "{}  {:<20} {:<13} {}  {}{}",
                weir_runtime::time::format_rfc3339(msg.timestamp),
                event,
                format!("{}/{}@{}", msg.topic, msg.partition, msg.offset),
                since.map_or_else(|| "      start".to_string(), |ms| format!("{:>+8} ms", ms)),
                trace.map_or_else(
                    || "no trace".to_string(),
                    |t| format!("trace {} span {}", t.trace_hex(), t.span_hex())
                ),
                if again { "  (published again: applied once)" } else { "" },
            );
        }
    }
    Ok(())
}
