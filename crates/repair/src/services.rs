//! The shop's three services, each a consume-transform-produce loop over a batch at a time:
//!
//! - **secretary** reads `tickets`, books each opened ticket into the calendar, writes `appointment_booked`;
//! - **cash desk** reads `appointments` (and the `ticket_opened` records of `tickets`, to learn each repair's type:
//!   the price and how long the bay is busy), and once a repair's time has passed registers its payment
//!   (`payment_registered`); repairs still in progress wait in its table, and its till registers them when they end;
//! - **ticketing** reads `payments` and closes the ticket (`ticket_closed`).
//!
//! Exactly once, twice over. Each batch's effects go into the database in one transaction; then its output records
//! and the group's offsets go to the bus in one Kafka transaction, read read_committed downstream. If the process
//! dies between the two, the batch is redelivered, and each service is an *idempotent consumer*: its effects are
//! keyed by ticket (one appointment, one payment, one closing per ticket, enforced by primary keys), so a record seen
//! again — redelivered, or published twice — changes nothing and only produces again the same output, with the same
//! event id, which the next service absorbs the same way. Payments the till registers later (not in a consumer's
//! batch) go out through the transactional outbox, in the same database transaction as the payment.
//!
//! A service may hold records it has read but not applied (the cash desk holds a booking until its ticket comes):
//! the offsets it commits stop at the first of them ([`Hop::holding`]), so that whoever reads the partition next,
//! after a crash or a rebalance, reads them again.
//!
//! A record that cannot be decoded goes to `<topic>.dlq` in the batch's transaction, with the reason in its headers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Row;
use tokio::sync::watch;
use weir_runtime::events::Events;
use weir_runtime::handler::EVENT_ID_HEADER;
use weir_runtime::outbox::{self, OutboxEvent, RelayWaker};
use weir_runtime::sql::{Dialect, SqlTx};
use weir_runtime::{Bus, BusError, Message, OutgoingMessage, SqlStore, SubscribeOptions, SystemError};

use crate::calendar::{Calendar, Hours};
use crate::clock::ShopClock;
use crate::events::{
    self, AppointmentBooked, AvroEvent, PaymentRegistered, RepairType, TicketClosed, TicketOpened, Timestamp,
    APPOINTMENTS, PAYMENTS, TICKETS,
};
use crate::trace::{follow, follow_from, hop_span, HopKind, TraceContext, TRACEPARENT};

/// Why a batch could not be applied (it is tried again).
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store: {0}")]
    Store(#[from] weir_runtime::StoreError),
    #[error("events: {0}")]
    Events(#[from] weir_runtime::events::EventError),
}

/// What every service needs.
#[derive(Clone, Debug)]
pub struct Shop {
    pub store: SqlStore,
    pub events: Events,
    pub clock: ShopClock,
    pub hours: Hours,
    pub outbox: RelayWaker,
}

/// One service's work on a batch: its effects (in `tx`) and the records it produces.
#[async_trait]
pub trait Hop: Send + Sync + 'static {
    /// The service's name: its consumer group, its principal and the prefix of its transactional ids.
    fn name(&self) -> &'static str;
    fn topics(&self) -> Vec<String>;
    /// Events of its topics that the service has no use for: passed over undecoded (by their schema id).
    fn ignores(&self) -> &'static [&'static str] {
        &[]
    }
    async fn apply(&self, shop: &Shop, batch: &[Consumed]) -> Result<Vec<OutgoingMessage>, HopError>;
    /// The earliest record of each partition the worker still holds, unapplied, from batches it applied: the
    /// group's committed offset stays there, so that a worker taking over (or this one, restarted) reads it again.
    /// None by default.
    fn holding(&self) -> Vec<(String, i32, i64)> {
        Vec::new()
    }
    /// How the last applied batch's commit went: on success, what the batch settled of what the worker held is let
    /// go; on failure it is kept, for the batch is read again.
    fn committed(&self, _ok: bool) {}
    /// The partitions assigned to the worker now: what it holds of any other is dropped (their new owner reads it
    /// from the committed offset).
    fn assigned(&self, _partitions: &[(String, i32)]) {}
}

/// Where a consumed record was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A consumed record, decoded, and where it was.
#[derive(Debug)]
pub struct Consumed {
    pub at: At,
    pub event: Decoded,
}

/// A consumed record, decoded.
#[derive(Debug)]
pub enum Decoded {
    Opened(TicketOpened, Option<TraceContext>),
    Closed(TicketClosed),
    Booked(AppointmentBooked, Option<TraceContext>),
    Paid(PaymentRegistered, Option<TraceContext>),
}

async fn decode(events: &Events, m: &Message) -> Result<Decoded, String> {
    let bytes = m.value.as_deref().ok_or("a record without a value")?;
    let d = events.decode(bytes).await.map_err(|e| e.to_string())?;
    let parent = m.header(TRACEPARENT).and_then(|h| TraceContext::parse(h));
    fn read<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
    match d.name.as_deref() {
        Some(TicketOpened::NAME) => Ok(Decoded::Opened(read(d.value)?, parent)),
        Some(TicketClosed::NAME) => Ok(Decoded::Closed(read(d.value)?)),
        Some(AppointmentBooked::NAME) => Ok(Decoded::Booked(read(d.value)?, parent)),
        Some(PaymentRegistered::NAME) => Ok(Decoded::Paid(read(d.value)?, parent)),
        _ => Err(format!("schema id {} is not one of the shop's events", d.id)),
    }
}

fn dead_letter(m: &Message, reason: &str) -> OutgoingMessage {
    let mut headers = m.headers.clone();
    headers.push(("weir.dlq.reason".into(), Bytes::from(reason.to_string())));
    headers.push(("weir.dlq.origin".into(), Bytes::from(format!("{}/{}/{}", m.topic, m.partition, m.offset))));
    OutgoingMessage {
        topic: format!("{}.dlq", m.topic),
        key: m.key.clone(),
        value: m.value.clone(),
        headers,
        partition: None,
        timestamp: None,
    }
}

/// How one service's workers run.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// This worker's transactional id: unique per worker and process (a newer one with the same id fences it).
    /// `None`: the cluster has no transactions (Tansu 0.6 lacks EndTxn); outputs are produced, then the offsets
    /// committed — at least once, which the next service's idempotence turns into each effect once.
    pub transactional_id: Option<String>,
    pub max_batch: usize,
    /// How long the group waits for a silent worker before giving its partitions to the others.
    pub session_timeout: Duration,
}

/// Runs one worker of `hop` until `stop` turns true: fetch a batch, apply it, commit its outputs and offsets in one
/// bus transaction; a failed commit seeks back and the batch is applied again (idempotently).
pub async fn run(
    hop: Arc<dyn Hop>,
    shop: Shop,
    bus: Arc<dyn Bus>,
    config: LoopConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SystemError> {
    let name = hop.name();
    let mut options = SubscribeOptions::new(name, hop.topics());
    options.read_committed = true;
    options.transactional_id = config.transactional_id.clone();
    options.max_batch = config.max_batch;
    options.session_timeout = config.session_timeout;
    options.client_id = format!("weir-repair-{name}");
    let mut sub = bus.subscribe(options).await?;
    let ignored: HashSet<i32> =
        hop.ignores().iter().filter_map(|name| shop.events.registered(name)).map(|r| r.id).collect();
    let mut backoff = Duration::from_millis(50);
    loop {
        let stopped = *stop.borrow();
        if stopped {
            break;
        }
        let batch = tokio::select! {
            b = sub.next_batch(Duration::from_millis(200)) => b,
            _ = stop.wait_for(|s| *s) => break,
        };
        let batch = match batch {
            Ok(b) if b.is_empty() => {
                hop.assigned(&sub.assignment());
                // A worker holding records applies nothing now and then, to let go of those held too long.
                if hop.holding().is_empty() {
                    continue;
                }
                b
            }
            Ok(b) => {
                hop.assigned(&sub.assignment());
                b
            }
            Err(BusError::Rebalanced) => continue,
            Err(BusError::Unavailable(e)) => {
                tracing::warn!(service = name, "the bus is unreachable: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut firsts: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut nexts: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut decoded = Vec::with_capacity(batch.len());
        let mut outputs = Vec::new();
        for m in &batch {
            let tp = (m.topic.clone(), m.partition);
            firsts.entry(tp.clone()).or_insert(m.offset);
            nexts.insert(tp, m.offset + 1);
            if let Some([0, a, b, c, d, ..]) = m.value.as_deref() {
                if ignored.contains(&i32::from_be_bytes([*a, *b, *c, *d])) {
                    continue;
                }
            }
            match decode(&shop.events, m).await {
                Ok(event) => decoded.push(Consumed {
                    at: At { topic: m.topic.clone(), partition: m.partition, offset: m.offset },
                    event,
                }),
                Err(reason) => {
                    tracing::warn!(service = name, topic = %m.topic, offset = m.offset, "dead-lettered: {reason}");
                    metrics::counter!("repair_dead_letters_total", "service" => name).increment(1);
                    outputs.push(dead_letter(m, &reason));
                }
            }
        }
        metrics::counter!("repair_events_in_total", "service" => name).increment(batch.len() as u64);
        let began = std::time::Instant::now();
        let produced = loop {
            match hop.apply(&shop, &decoded).await {
                Ok(out) => break out,
                Err(e) => {
                    tracing::warn!(service = name, "applying a batch failed, trying again in {backoff:?}: {e}");
                    let stopped = tokio::select! {
                        _ = tokio::time::sleep(backoff) => false,
                        _ = stop.wait_for(|s| *s) => true,
                    };
                    if stopped {
                        let _ = sub.close().await;
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        backoff = Duration::from_millis(50);
        let out = produced.len() as u64;
        outputs.extend(produced);
        // Partitions of records the worker holds commit no further than the first of them.
        for (t, p, held) in hop.holding() {
            if let Some(next) = nexts.get_mut(&(t, p)) {
                *next = (*next).min(held);
            }
        }
        let offsets: Vec<(String, i32, i64)> = nexts.into_iter().map(|((t, p), o)| (t, p, o)).collect();
        let applied = began.elapsed();
        let committed = match &config.transactional_id {
            _ if outputs.is_empty() && offsets.is_empty() => Ok(()),
            Some(_) => sub.commit_transaction(outputs, &offsets).await,
            None => match bus.produce_all(outputs).await {
                Ok(_) => sub.commit_offsets(&offsets).await,
                Err(e) => Err(e),
            },
        };
        hop.committed(committed.is_ok());
        match committed {
            Ok(()) => {
                metrics::counter!("repair_events_out_total", "service" => name).increment(out);
                tracing::debug!(service = name, records = batch.len(), ?applied, committed = ?began.elapsed() - applied, "batch");
            }
            Err(e @ BusError::Fenced(_)) => {
                let _ = sub.close().await;
                return Err(e.into());
            }
            Err(e) => {
                // Nothing of it is visible: read the batch again; applying it again changes nothing.
                tracing::warn!(service = name, "the batch's transaction failed, redoing it: {e}");
                // A partition that moved to another member in the meantime is redelivered there from the committed
                // offset; a seek on it fails, and that is no reason to stop.
                for ((t, p), first) in firsts {
                    if let Err(e) = sub.seek(&t, p, first).await {
                        tracing::debug!(service = name, topic = %t, partition = p, "not sought back: {e}");
                    }
                }
            }
        }
    }
    let _ = sub.close().await;
    Ok(())
}

/// Rows per multi-row statement (and ids per `IN` list): a service's whole batch in one statement per table. At up to
/// 10 parameters a row that is 5,000 parameters, within SQLite's 32,766 and PostgreSQL's 65,535; each statement is a
/// round trip in the batch's transaction, and the batch's transaction is what the next hop waits for.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

fn placeholders(dialect: Dialect, first: usize, n: usize) -> String {
    (first..first + n).map(|i| dialect.param(i)).collect::<Vec<_>>().join(", ")
}

fn uuid_of(s: &str) -> Result<uuid::Uuid, sqlx::Error> {
    uuid::Uuid::parse_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// Tickets in order of first appearance, once each.
fn distinct<'a>(ids: impl Iterator<Item = &'a uuid::Uuid>) -> Vec<uuid::Uuid> {
    let mut seen = HashSet::new();
    ids.filter(|id| seen.insert(**id)).copied().collect()
}

/// The rows `select` (a query ending in `WHERE ticket_id IN`) gives for `tickets`, one statement per
/// [`ROWS_PER_STATEMENT`] of them.
async fn rows_for(
    tx: &mut SqlTx,
    d: Dialect,
    select: &str,
    tickets: &[uuid::Uuid],
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let mut rows = Vec::new();
    for chunk in tickets.chunks(ROWS_PER_STATEMENT) {
        let sql = format!("{select} ({})", placeholders(d, 1, chunk.len()));
        let mut q = sqlx::query(&sql);
        for t in chunk {
            q = q.bind(t.to_string());
        }
        rows.extend(q.fetch_all(&mut **tx).await?);
    }
    Ok(rows)
}

/// The secretary: books opened tickets.
#[derive(Debug)]
pub struct Secretary;

#[async_trait]
impl Hop for Secretary {
    fn name(&self) -> &'static str {
        "secretary"
    }

    fn topics(&self) -> Vec<String> {
        vec![TICKETS.into()]
    }

    fn ignores(&self) -> &'static [&'static str] {
        &[TicketClosed::NAME]
    }

    async fn apply(&self, shop: &Shop, batch: &[Consumed]) -> Result<Vec<OutgoingMessage>, HopError> {
        let started = SystemTime::now();
        let opened: Vec<(&TicketOpened, Option<&TraceContext>)> = batch
            .iter()
            .filter_map(|d| match &d.event {
                Decoded::Opened(e, t) => Some((e, t.as_ref())),
                _ => None,
            })
            .collect();
        if opened.is_empty() {
            return Ok(Vec::new());
        }
        let d = shop.store.dialect();
        let mut tx = shop.store.begin().await?;
        let mut calendar = Calendar::open(&mut tx, d, shop.hours).await?;
        let tickets = distinct(opened.iter().map(|(e, _)| &e.ticket_id));
        let mut booked = existing_appointments(&mut tx, d, &tickets).await?;
        let duplicates = booked.len();
        let now = Timestamp(shop.clock.now_us());
        let mut rows = Vec::new();
        for (e, _) in &opened {
            if booked.contains_key(&e.ticket_id) {
                continue;
            }
            let slot =
                calendar.book(Some(&mut tx), e.occurred_on.0, shop.hours.slots_for(e.repair_type.minutes())).await?;
            let appointment = AppointmentBooked {
                occurred_on: now,
                ticket_id: e.ticket_id,
                // Time-ordered, as ticket ids are (store.rs): the unique index on it grows at its end.
                appointment_id: uuid::Uuid::now_v7(),
                scheduled_at: Timestamp(slot.starts_us),
            };
            rows.push((appointment.clone(), slot));
            booked.insert(e.ticket_id, appointment);
        }
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 6 + 1, 6)).collect();
            let sql = format!(
                "INSERT INTO repair_appointments (ticket_id, appointment_id, bay, scheduled_at, ends_at, booked_at) VALUES {}",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (a, slot) in chunk {
                q = q
                    .bind(a.ticket_id.to_string())
                    .bind(a.appointment_id.to_string())
                    .bind(i64::from(slot.bay))
                    .bind(slot.starts_us)
                    .bind(slot.ends_us)
                    .bind(a.occurred_on.0);
            }
            q.execute(&mut *tx).await?;
        }
        calendar.save(&mut tx, d).await?;
        tx.commit().await?;
        if duplicates > 0 {
            metrics::counter!("repair_duplicates_total", "service" => "secretary").increment(duplicates as u64);
        }
        let mut out = Vec::with_capacity(tickets.len());
        let mut done = HashSet::new();
        for (e, parent) in opened {
            if !done.insert(e.ticket_id) {
                continue;
            }
            let (trace, link) = follow(parent);
            let _span = hop_span(
                "secretary",
                HopKind::Process { topic: TICKETS },
                &e.ticket_id,
                &trace,
                link.as_ref(),
                started,
            )
            .entered();
            out.push(events::message(&shop.events, &e.ticket_id, &booked[&e.ticket_id], &trace)?);
        }
        Ok(out)
    }
}

async fn existing_appointments(
    tx: &mut SqlTx,
    d: Dialect,
    tickets: &[uuid::Uuid],
) -> Result<HashMap<uuid::Uuid, AppointmentBooked>, sqlx::Error> {
    let mut out = HashMap::new();
    let select =
        "SELECT ticket_id, appointment_id, scheduled_at, booked_at FROM repair_appointments WHERE ticket_id IN";
    for row in rows_for(tx, d, select, tickets).await? {
        let ticket = uuid_of(&row.try_get::<String, _>(0)?)?;
        out.insert(
            ticket,
            AppointmentBooked {
                ticket_id: ticket,
                appointment_id: uuid_of(&row.try_get::<String, _>(1)?)?,
                scheduled_at: Timestamp(row.try_get(2)?),
                occurred_on: Timestamp(row.try_get(3)?),
            },
        );
    }
    Ok(out)
}

/// The cash desk: takes payments for finished repairs.
///
/// A job has two halves, the ticket's repair type (from `tickets`) and its booking (from `appointments`), and the
/// desk pays once it knows both and the repair is over. Halves that meet in memory are never written down: a booking
/// whose ticket the desk has not read yet is *held* (the group's committed offset on its partition stays at it, see
/// [`Hop::holding`]) until its ticket comes; a ticket read first is written down, and its repair type remembered
/// (see `Waiting`). A booking held longer than the desk's hold time (its ticket went to another worker, or was read
/// before a restart) is written down as a half, where its ticket's half meets it, as every half met before.
#[derive(Debug)]
pub struct CashDesk {
    /// How long a booking waits in memory for its ticket before it is written down; zero: never held.
    hold: Duration,
    state: std::sync::Mutex<DeskState>,
}

impl Default for CashDesk {
    fn default() -> Self {
        CashDesk::holding_for(Duration::from_secs(10))
    }
}

impl CashDesk {
    /// A desk whose bookings wait `hold` in memory for their ticket (one per worker: what it holds is its own).
    pub fn holding_for(hold: Duration) -> Self {
        CashDesk { hold, state: std::sync::Mutex::new(DeskState::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DeskState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a desk worker keeps in memory.
#[derive(Debug, Default)]
struct DeskState {
    waiting: Waiting,
    held: HashMap<uuid::Uuid, Held>,
    /// Held bookings the batch being committed settled (paid, left to the till, or written down): let go when its
    /// commit succeeds.
    settled: Vec<uuid::Uuid>,
}

/// A booking waiting in memory for its ticket.
#[derive(Debug)]
struct Held {
    appointment: uuid::Uuid,
    scheduled_us: i64,
    trace: Option<String>,
    at: At,
    since: std::time::Instant,
    /// Its partition left this worker: written down at the next batch, whatever its age.
    orphaned: bool,
}

impl Held {
    fn booking(&self) -> Booking {
        (self.appointment, self.scheduled_us, self.trace.clone())
    }
}

/// A job's booking half: the appointment, when it starts, and the trace context of the booking.
type Booking = (uuid::Uuid, i64, Option<String>);

/// The repair types of tickets whose row this worker wrote, committed, with no booking in it: most bookings reach
/// the worker that read their ticket, and need not read the row back. Only committed rows are noted, and a row's
/// repair type never changes, so what is here is what the table says; a booking whose ticket is not here (another
/// worker wrote it, or it was forgotten to bound the memory) reads its row.
#[derive(Debug, Default)]
struct Waiting {
    types: HashMap<uuid::Uuid, RepairType>,
    /// Insertion order, to forget the oldest first.
    order: std::collections::VecDeque<uuid::Uuid>,
}

impl Waiting {
    /// Tickets remembered at most: about 30 MB, far more than are ever between opened and booked.
    const CAPACITY: usize = 500_000;

    fn note(&mut self, ticket: uuid::Uuid, repair_type: RepairType) {
        if self.types.insert(ticket, repair_type).is_none() {
            self.order.push_back(ticket);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.types.remove(&old);
            }
        }
    }

    /// The repair type of `ticket`, forgotten: its booking has come.
    fn take(&mut self, ticket: &uuid::Uuid) -> Option<RepairType> {
        self.types.remove(ticket)
    }
}

/// Bookings held at most per worker; past it, the oldest are written down.
const HELD_CAPACITY: usize = 200_000;

#[async_trait]
impl Hop for CashDesk {
    fn name(&self) -> &'static str {
        "cash-desk"
    }

    fn topics(&self) -> Vec<String> {
        vec![APPOINTMENTS.into(), TICKETS.into()]
    }

    fn ignores(&self) -> &'static [&'static str] {
        &[TicketClosed::NAME]
    }

    fn holding(&self) -> Vec<(String, i32, i64)> {
        let state = self.state();
        let settled: HashSet<&uuid::Uuid> = state.settled.iter().collect();
        let mut first: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for (ticket, h) in &state.held {
            if !settled.contains(ticket) {
                let o = first.entry((h.at.topic.as_str(), h.at.partition)).or_insert(h.at.offset);
                *o = (*o).min(h.at.offset);
            }
        }
        first.into_iter().map(|((t, p), o)| (t.to_string(), p, o)).collect()
    }

    fn committed(&self, ok: bool) {
        let mut state = self.state();
        let settled = std::mem::take(&mut state.settled);
        if ok {
            for ticket in settled {
                state.held.remove(&ticket);
            }
        }
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        let mut state = self.state();
        for h in state.held.values_mut() {
            if !partitions.iter().any(|(t, p)| *t == h.at.topic && *p == h.at.partition) {
                h.orphaned = true;
            }
        }
    }

    async fn apply(&self, shop: &Shop, batch: &[Consumed]) -> Result<Vec<OutgoingMessage>, HopError> {
        let started = SystemTime::now();
        let d = shop.store.dialect();
        // The latest of each per ticket (a batch may hold a record twice).
        let mut types: BTreeMap<uuid::Uuid, RepairType> = BTreeMap::new();
        let mut bookings: BTreeMap<uuid::Uuid, (Booking, &At)> = BTreeMap::new();
        for item in batch {
            match &item.event {
                Decoded::Opened(e, _) => {
                    types.insert(e.ticket_id, e.repair_type);
                }
                Decoded::Booked(e, t) => {
                    let booking = (e.appointment_id, e.scheduled_at.0, t.map(|t| t.to_header()));
                    bookings.insert(e.ticket_id, (booking, &item.at));
                }
                _ => {}
            }
        }
        // What memory says: the bookings held for the tickets this batch opens, those held too long (written down
        // below), and the repair types of the tickets this batch books, noted when their rows were written.
        let mut jobs: BTreeMap<uuid::Uuid, Booking> = BTreeMap::new();
        let mut stored: HashMap<uuid::Uuid, Stored> = HashMap::new();
        let mut unread = Vec::new();
        let mut spilled = Vec::new();
        {
            let mut state = self.state();
            state.settled.clear();
            let now = std::time::Instant::now();
            let crowded = state.held.len() > HELD_CAPACITY;
            let DeskState { held, settled, waiting } = &mut *state;
            for (ticket, h) in held.iter() {
                if types.contains_key(ticket) {
                    jobs.insert(*ticket, h.booking());
                    settled.push(*ticket);
                } else if h.orphaned || crowded || now.duration_since(h.since) >= self.hold {
                    spilled.push((*ticket, None, Some(h.booking())));
                    settled.push(*ticket);
                }
            }
            for (ticket, (booking, _)) in &bookings {
                jobs.insert(*ticket, booking.clone());
                if types.contains_key(ticket) {
                    continue;
                }
                match waiting.take(ticket) {
                    Some(repair_type) => {
                        stored.insert(*ticket, Stored { repair_type: Some(repair_type), ..Stored::default() });
                    }
                    None => unread.push(*ticket),
                }
            }
        }
        if types.is_empty() && jobs.is_empty() && spilled.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = shop.store.begin().await?;
        // Bookings of tickets this desk does not know: the table may (another worker wrote it, or this one before
        // a restart).
        let select = format!("SELECT {JOB_COLUMNS} FROM repair_cash_jobs WHERE ticket_id IN");
        for row in rows_for(&mut tx, d, &select, &unread).await? {
            let (ticket, row) = Stored::read(&row)?;
            stored.insert(ticket, row);
        }
        // Each ticket, from what the batch, memory and the table say together (the batch's booking wins: it is the
        // latest). A job known in full whose repair is over is paid now and never written down; one known in full
        // whose repair is still on is left to the till (`due_at`). A ticket's half is written down; a booking's is
        // held in memory, or written down when it has waited too long. A job the till has (`due_at`) is left to it.
        let mut due_now = Vec::new();
        let mut later = Vec::new();
        let mut partial = spilled;
        let mut opened_only = Vec::new();
        let mut to_hold = Vec::new();
        let mut to_note = Vec::new();
        let mut file = |job: Job| {
            if shop.clock.has_passed(job.ends_us()) {
                due_now.push(job);
            } else {
                later.push(job);
            }
        };
        for ticket in distinct(types.keys().chain(jobs.keys())) {
            let mut known = stored.remove(&ticket).unwrap_or_default();
            if known.due {
                continue;
            }
            if let Some(repair_type) = types.get(&ticket) {
                known.repair_type = Some(*repair_type);
            }
            if let Some(b) = jobs.get(&ticket) {
                known.booking = Some(b.clone());
            }
            match (known.whole(ticket), known.repair_type, known.booking) {
                (Some(job), ..) => file(job),
                (None, Some(repair_type), None) => opened_only.push((ticket, repair_type)),
                (None, None, Some(booking)) => match bookings.get(&ticket) {
                    Some((_, at)) if !self.hold.is_zero() => to_hold.push((ticket, booking, (*at).clone())),
                    _ => partial.push((ticket, None, Some(booking))),
                },
                (None, ..) => {}
            }
        }
        // Tickets only opened: inserted where no row is, which is all of them unless a booking came first (or the
        // ticket is delivered again). A statement that inserts fewer rows than it has met a row already there, and
        // its tickets are merged instead, as below.
        for chunk in opened_only.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 2 + 1, 2)).collect();
            let sql = format!(
                "INSERT INTO repair_cash_jobs (ticket_id, repair_type) VALUES {} ON CONFLICT (ticket_id) DO NOTHING",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (ticket, repair_type) in chunk {
                q = q.bind(ticket.to_string()).bind(repair_type.as_str());
            }
            if q.execute(&mut *tx).await?.rows_affected() == chunk.len() as u64 {
                to_note.extend_from_slice(chunk);
            } else {
                partial.extend(chunk.iter().map(|(t, r)| (*t, Some(*r), None)));
            }
        }
        // Halves merged into their rows. Each upsert returns the row as it now stands, whole when the other half
        // was already there (written by another worker, or before a restart; on PostgreSQL, perhaps since the
        // select).
        for chunk in partial.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 5 + 1, 5)).collect();
            let sql = format!(
                "INSERT INTO repair_cash_jobs (ticket_id, repair_type, appointment_id, scheduled_at, trace) VALUES {} \
                 ON CONFLICT (ticket_id) DO UPDATE SET \
                 repair_type = COALESCE(excluded.repair_type, repair_cash_jobs.repair_type), \
                 appointment_id = COALESCE(excluded.appointment_id, repair_cash_jobs.appointment_id), \
                 scheduled_at = COALESCE(excluded.scheduled_at, repair_cash_jobs.scheduled_at), \
                 trace = COALESCE(excluded.trace, repair_cash_jobs.trace) RETURNING {JOB_COLUMNS}",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (ticket, repair_type, booking) in chunk {
                let (appointment, scheduled, trace) = match booking {
                    Some((a, s, t)) => (Some(a.to_string()), Some(*s), t.clone()),
                    None => (None, None, None),
                };
                q = q
                    .bind(ticket.to_string())
                    .bind(repair_type.map(|t| t.as_str()))
                    .bind(appointment)
                    .bind(scheduled)
                    .bind(trace);
            }
            for row in q.fetch_all(&mut *tx).await? {
                let (ticket, known) = Stored::read(&row)?;
                match (known.whole(ticket), known.repair_type, &known.booking, known.due) {
                    (Some(job), ..) => file(job),
                    (None, Some(repair_type), None, false) => to_note.push((ticket, repair_type)),
                    _ => {}
                }
            }
        }
        // Whole jobs still under way: written down in full, due when their repair ends, for the till.
        for chunk in later.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 6 + 1, 6)).collect();
            let sql = format!(
                "INSERT INTO repair_cash_jobs (ticket_id, repair_type, appointment_id, scheduled_at, trace, due_at) \
                 VALUES {} ON CONFLICT (ticket_id) DO UPDATE SET repair_type = excluded.repair_type, \
                 appointment_id = excluded.appointment_id, scheduled_at = excluded.scheduled_at, \
                 trace = excluded.trace, due_at = excluded.due_at",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for j in chunk {
                q = q
                    .bind(j.ticket.to_string())
                    .bind(j.repair_type.as_str())
                    .bind(j.appointment.to_string())
                    .bind(j.scheduled_us)
                    .bind(j.trace.clone())
                    .bind(j.ends_us());
            }
            q.execute(&mut *tx).await?;
        }
        let now = Timestamp(shop.clock.now_us());
        // Every payment of this batch's tickets goes out: new ones, and those a redelivered record asks for again.
        // A ticket can only have been paid once its job was whole and its repair over, so a ticket paid before is
        // one of `due_now` whose payment this insert did not create.
        let mut paid = insert_payments(&mut tx, d, &due_now, now).await?;
        if paid.len() < due_now.len() {
            let created: HashSet<uuid::Uuid> = paid.iter().map(|(p, _)| p.ticket_id).collect();
            let before: Vec<uuid::Uuid> = due_now.iter().map(|j| j.ticket).filter(|t| !created.contains(t)).collect();
            paid.extend(payments_of(&mut tx, d, &before).await?);
        }
        tx.commit().await?;
        {
            let mut state = self.state();
            for (ticket, repair_type) in to_note {
                state.waiting.note(ticket, repair_type);
            }
            let since = std::time::Instant::now();
            for (ticket, (appointment, scheduled_us, trace), at) in to_hold {
                // Held already (delivered again): it keeps its place, the earlier.
                state.held.entry(ticket).or_insert(Held {
                    appointment,
                    scheduled_us,
                    trace,
                    at,
                    since,
                    orphaned: false,
                });
            }
        }
        let mut out = Vec::with_capacity(paid.len());
        for (payment, parent) in paid {
            let (trace, link) = follow_from(parent.as_deref().map(str::as_bytes));
            let hop = HopKind::Process { topic: APPOINTMENTS };
            let _span = hop_span("cash-desk", hop, &payment.ticket_id, &trace, link.as_ref(), started).entered();
            out.push(events::message(&shop.events, &payment.ticket_id, &payment, &trace)?);
        }
        Ok(out)
    }
}

/// A repair type as the cash desk's table holds it.
fn repair_type(s: &str) -> Result<RepairType, sqlx::Error> {
    RepairType::parse(s).ok_or_else(|| sqlx::Error::Decode(format!("unknown repair type {s:?}").into()))
}

/// A repair the cash desk knows in full.
#[derive(Debug)]
struct Job {
    ticket: uuid::Uuid,
    appointment: uuid::Uuid,
    repair_type: RepairType,
    scheduled_us: i64,
    trace: Option<String>,
}

/// A row of `repair_cash_jobs`: what the cash desk knows of a ticket's job.
#[derive(Debug, Default)]
struct Stored {
    repair_type: Option<RepairType>,
    /// The appointment, when it starts, and the trace context of the booking.
    booking: Option<(uuid::Uuid, i64, Option<String>)>,
    /// The till has the job (its repair was still on when it became whole).
    due: bool,
}

impl Stored {
    /// A row of [`JOB_COLUMNS`].
    fn read(row: &sqlx::any::AnyRow) -> Result<(uuid::Uuid, Stored), sqlx::Error> {
        let ticket = uuid_of(&row.try_get::<String, _>(0)?)?;
        let (appointment, ty, scheduled, due): (Option<String>, Option<String>, Option<i64>, Option<i64>) =
            (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(5)?);
        let booking = match (appointment, scheduled) {
            (Some(a), Some(s)) => Some((uuid_of(&a)?, s, row.try_get(4)?)),
            _ => None,
        };
        Ok((ticket, Stored { repair_type: ty.as_deref().map(repair_type).transpose()?, booking, due: due.is_some() }))
    }

    /// The job, if the cash desk knows it in full (its repair type and its appointment) and has not already left it
    /// to the till.
    fn whole(&self, ticket: uuid::Uuid) -> Option<Job> {
        match (self.due, self.repair_type, &self.booking) {
            (false, Some(repair_type), Some((appointment, scheduled_us, trace))) => Some(Job {
                ticket,
                appointment: *appointment,
                repair_type,
                scheduled_us: *scheduled_us,
                trace: trace.clone(),
            }),
            _ => None,
        }
    }
}

/// The columns [`Stored::read`] reads, as a select or an upsert of `repair_cash_jobs` returns them.
const JOB_COLUMNS: &str = "ticket_id, appointment_id, repair_type, scheduled_at, trace, due_at";

impl Job {
    fn read(row: &sqlx::any::AnyRow) -> Result<Job, sqlx::Error> {
        let ty: String = row.try_get(2)?;
        Ok(Job {
            ticket: uuid_of(&row.try_get::<String, _>(0)?)?,
            appointment: uuid_of(&row.try_get::<String, _>(1)?)?,
            repair_type: repair_type(&ty)?,
            scheduled_us: row.try_get(3)?,
            trace: row.try_get(4)?,
        })
    }

    fn ends_us(&self) -> i64 {
        self.scheduled_us + self.repair_type.minutes() * 60_000_000
    }
}

/// The columns [`read_payment`] reads.
const PAYMENT_COLUMNS: &str = "ticket_id, payment_id, appointment_id, amount, paid_at, trace";

/// Registers the payments of `jobs`; a ticket already paid keeps its one payment. Returns the payments it created
/// (with the trace context of the appointment each followed), not those that were there.
async fn insert_payments(
    tx: &mut SqlTx,
    d: Dialect,
    jobs: &[Job],
    now: Timestamp,
) -> Result<Vec<(PaymentRegistered, Option<String>)>, sqlx::Error> {
    let mut created = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 6 + 1, 6)).collect();
        let sql = format!(
            "INSERT INTO repair_payments ({PAYMENT_COLUMNS}) VALUES {} ON CONFLICT (ticket_id) DO NOTHING \
             RETURNING {PAYMENT_COLUMNS}",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for j in chunk {
            q = q
                .bind(j.ticket.to_string())
                .bind(uuid::Uuid::now_v7().to_string()) // the payment id, time-ordered as ticket ids are
                .bind(j.appointment.to_string())
                .bind(j.repair_type.price().to_string())
                .bind(now.0)
                .bind(j.trace.clone());
        }
        for row in q.fetch_all(&mut **tx).await? {
            created.push(read_payment(&row)?);
        }
    }
    Ok(created)
}

/// The payments of `tickets`, with the trace context of the appointment each followed.
async fn payments_of(
    tx: &mut SqlTx,
    d: Dialect,
    tickets: &[uuid::Uuid],
) -> Result<Vec<(PaymentRegistered, Option<String>)>, sqlx::Error> {
    let select = format!("SELECT {PAYMENT_COLUMNS} FROM repair_payments WHERE ticket_id IN");
    rows_for(tx, d, &select, tickets).await?.iter().map(read_payment).collect()
}

fn read_payment(row: &sqlx::any::AnyRow) -> Result<(PaymentRegistered, Option<String>), sqlx::Error> {
    let amount: String = row.try_get(3)?;
    Ok((
        PaymentRegistered {
            ticket_id: uuid_of(&row.try_get::<String, _>(0)?)?,
            payment_id: uuid_of(&row.try_get::<String, _>(1)?)?,
            appointment_id: uuid_of(&row.try_get::<String, _>(2)?)?,
            amount: amount.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            occurred_on: Timestamp(row.try_get(4)?),
        },
        row.try_get(5)?,
    ))
}

/// The cash desk's till: registers the payments of repairs that were still in progress when their appointment was
/// consumed, once they end, and sends them through the outbox in the same transaction.
pub async fn till(shop: Shop, mut stop: watch::Receiver<bool>) -> Result<(), SystemError> {
    let d = shop.store.dialect();
    loop {
        let stopped = *stop.borrow();
        if stopped {
            break;
        }
        match till_once(&shop, d).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!("cash desk till: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    Ok(())
}

/// One round of the till: how many payments it registered.
pub async fn till_once(shop: &Shop, d: Dialect) -> Result<usize, HopError> {
    let started = SystemTime::now();
    let now = shop.clock.now_us();
    let due_before = if shop.clock.has_passed(i64::MAX) { i64::MAX } else { now };
    let mut tx = shop.store.begin().await?;
    let lock = if d == Dialect::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    let rows = sqlx::query(&format!(
        "SELECT ticket_id, appointment_id, repair_type, scheduled_at, trace FROM repair_cash_jobs \
         WHERE due_at IS NOT NULL AND due_at <= $1 ORDER BY due_at LIMIT 500{lock}"
    ))
    .bind(due_before)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let jobs: Vec<Job> = rows.iter().map(Job::read).collect::<Result<_, _>>()?;
    let tickets: Vec<uuid::Uuid> = jobs.iter().map(|j| j.ticket).collect();
    // Only the payments this round creates go out (an existing one was sent when it was made).
    let created = insert_payments(&mut tx, d, &jobs, Timestamp(now)).await?;
    let sql =
        format!("UPDATE repair_cash_jobs SET due_at = NULL WHERE ticket_id IN ({})", placeholders(d, 1, tickets.len()));
    let mut q = sqlx::query(&sql);
    for t in &tickets {
        q = q.bind(t.to_string());
    }
    q.execute(&mut *tx).await?;
    let mut outbox_events = Vec::new();
    for (payment, parent) in created {
        let (trace, link) = follow_from(parent.as_deref().map(str::as_bytes));
        let hop = HopKind::Internal { name: "pay due repairs" };
        let _span = hop_span("cash-desk", hop, &payment.ticket_id, &trace, link.as_ref(), started).entered();
        outbox_events.push(outbox_event(&shop.events, &payment.ticket_id, &payment, &trace)?);
    }
    let n = outbox_events.len();
    let enqueued = outbox::enqueue_all(&mut tx, d, outbox_events).await?;
    tx.commit().await?;
    shop.outbox.committed(enqueued);
    metrics::counter!("repair_events_out_total", "service" => "cash-desk").increment(n as u64);
    Ok(n)
}

/// `event` serialized now, its schema id fixed, as an outbox row (see the README: before serialization, not after).
pub fn outbox_event<E: AvroEvent>(
    events: &Events,
    ticket: &uuid::Uuid,
    event: &E,
    trace: &TraceContext,
) -> Result<OutboxEvent, weir_runtime::events::EventError> {
    let m = events::message(events, ticket, event, trace)?;
    let id = m.headers.iter().find(|(k, _)| k == EVENT_ID_HEADER).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    Ok(OutboxEvent {
        id,
        topic: m.topic,
        key: m.key,
        payload: m.value,
        headers: m
            .headers
            .into_iter()
            .filter(|(k, _)| k != EVENT_ID_HEADER)
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
    })
}

/// Ticketing's closing desk: closes paid tickets.
#[derive(Debug)]
pub struct Ticketing;

#[async_trait]
impl Hop for Ticketing {
    fn name(&self) -> &'static str {
        "ticketing"
    }

    fn topics(&self) -> Vec<String> {
        vec![PAYMENTS.into()]
    }

    async fn apply(&self, shop: &Shop, batch: &[Consumed]) -> Result<Vec<OutgoingMessage>, HopError> {
        let started = SystemTime::now();
        let mut paid: BTreeMap<uuid::Uuid, (&PaymentRegistered, Option<&TraceContext>)> = BTreeMap::new();
        for item in batch {
            if let Decoded::Paid(p, t) = &item.event {
                paid.insert(p.ticket_id, (p, t.as_ref()));
            }
        }
        if paid.is_empty() {
            return Ok(Vec::new());
        }
        let d = shop.store.dialect();
        let now = shop.clock.now_us();
        let now_real = weir_runtime::time::now_ms();
        let mut tx = shop.store.begin().await?;
        let rows: Vec<_> = paid.values().collect();
        let mut closed = Vec::with_capacity(rows.len());
        // A closing, and (closed by this batch) its ticket's whole journey, wall clock.
        let read = |row: &sqlx::any::AnyRow| -> Result<TicketClosed, sqlx::Error> {
            let (closed_real, opened_real): (i64, Option<i64>) = (row.try_get(2)?, row.try_get(3)?);
            if let (true, Some(opened)) = (closed_real == now_real, opened_real) {
                metrics::histogram!("repair_close_seconds").record((closed_real - opened) as f64 / 1000.0);
            }
            Ok(TicketClosed {
                ticket_id: uuid_of(&row.try_get::<String, _>(0)?)?,
                occurred_on: Timestamp(row.try_get(1)?),
            })
        };
        // The closings this batch makes come back from the insert, each with when its ticket was opened.
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 5 + 1, 5)).collect();
            let sql = format!(
                "INSERT INTO repair_closures (ticket_id, payment_id, amount, closed_at, closed_real_ms) VALUES {} \
                 ON CONFLICT (ticket_id) DO NOTHING RETURNING ticket_id, closed_at, closed_real_ms, \
                 (SELECT t.opened_real_ms FROM repair_tickets t WHERE t.ticket_id = repair_closures.ticket_id)",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (p, _) in chunk {
                q = q
                    .bind(p.ticket_id.to_string())
                    .bind(p.payment_id.to_string())
                    .bind(p.amount.to_string())
                    .bind(now)
                    .bind(now_real);
            }
            for row in q.fetch_all(&mut *tx).await? {
                closed.push(read(&row)?);
            }
        }
        // Tickets closed before (a payment seen again): their closing is sent again, as it was.
        if closed.len() < rows.len() {
            let new: HashSet<uuid::Uuid> = closed.iter().map(|c| c.ticket_id).collect();
            let before: Vec<uuid::Uuid> = paid.keys().filter(|t| !new.contains(t)).copied().collect();
            let select = "SELECT ticket_id, closed_at, closed_real_ms, CAST(NULL AS BIGINT) FROM repair_closures \
                          WHERE ticket_id IN";
            for row in rows_for(&mut tx, d, select, &before).await? {
                closed.push(read(&row)?);
            }
        }
        tx.commit().await?;
        let duplicates = closed.iter().filter(|c| c.occurred_on.0 != now).count();
        if duplicates > 0 {
            metrics::counter!("repair_duplicates_total", "service" => "ticketing").increment(duplicates as u64);
        }
        let mut out = Vec::with_capacity(closed.len());
        for c in closed {
            let parent = paid.get(&c.ticket_id).and_then(|(_, t)| *t);
            let (trace, link) = follow(parent);
            let _span = hop_span(
                "ticketing",
                HopKind::Process { topic: PAYMENTS },
                &c.ticket_id,
                &trace,
                link.as_ref(),
                started,
            )
            .entered();
            out.push(events::message(&shop.events, &c.ticket_id, &c, &trace)?);
        }
        Ok(out)
    }
}
