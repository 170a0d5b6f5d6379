//! The shop's tables, one set per service (each service writes only its own): ticketing's `repair_tickets` and
//! `repair_closures`, the secretary's `repair_appointments` and calendar, the cash desk's `repair_cash_jobs` and
//! `repair_payments`. Times are microseconds since the epoch in shop time; `*_real_ms` columns are wall-clock
//! milliseconds, for the end-to-end time to close.
//!
//! Opening a ticket is ticketing's transactional outbox: the ticket's row and its `ticket_opened` record, already
//! serialized with its schema id, commit together.

use std::time::SystemTime;

use sqlx::Row;
use weir_runtime::outbox;
use weir_runtime::sql::Dialect;
use weir_runtime::{SqlStore, StoreError};

use crate::crypto::FieldKey;
use crate::events::{Requester, TicketOpened, Timestamp, TICKETS};
use crate::services::{outbox_event, HopError, Shop, ROWS_PER_STATEMENT};
use crate::trace::{hop_span, HopKind, TraceContext};

pub async fn migrate(store: &SqlStore) -> Result<(), sqlx::Error> {
    let statements = [
        "CREATE TABLE IF NOT EXISTS repair_tickets (ticket_id TEXT PRIMARY KEY, opened_at BIGINT NOT NULL, \
         opened_real_ms BIGINT NOT NULL, email TEXT NOT NULL, name TEXT NOT NULL, middlename TEXT, surname TEXT NOT NULL, \
         age INTEGER NOT NULL, repair_type TEXT NOT NULL, trace_id TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS repair_tickets_opened ON repair_tickets (opened_at)",
        "CREATE TABLE IF NOT EXISTS repair_closures (ticket_id TEXT PRIMARY KEY, payment_id TEXT NOT NULL, \
         amount TEXT NOT NULL, closed_at BIGINT NOT NULL, closed_real_ms BIGINT NOT NULL)",
        // What `weir repair simulate` polls (`closed_since`): a count over this index rather than a join of every
        // table.
        "CREATE INDEX IF NOT EXISTS repair_closures_closed_real ON repair_closures (closed_real_ms)",
        "CREATE TABLE IF NOT EXISTS repair_appointments (ticket_id TEXT PRIMARY KEY, appointment_id TEXT NOT NULL UNIQUE, \
         bay INTEGER NOT NULL, scheduled_at BIGINT NOT NULL, ends_at BIGINT NOT NULL, booked_at BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS repair_calendar (day BIGINT NOT NULL, bay INTEGER NOT NULL, used BIGINT NOT NULL, \
         PRIMARY KEY (day, bay))",
        "CREATE TABLE IF NOT EXISTS repair_calendar_cursor (slots INTEGER PRIMARY KEY, day BIGINT NOT NULL)",
        "INSERT INTO repair_calendar_cursor (slots, day) VALUES (0, 0) ON CONFLICT (slots) DO NOTHING",
        "CREATE TABLE IF NOT EXISTS repair_cash_jobs (ticket_id TEXT PRIMARY KEY, repair_type TEXT, appointment_id TEXT, \
         scheduled_at BIGINT, due_at BIGINT, trace TEXT)",
        // Only the till's jobs (most rows are halves waiting for the other, with no due time): an index of all rows
        // would be written at every half. The first version indexed every row.
        "DROP INDEX IF EXISTS repair_cash_jobs_due",
        "CREATE INDEX IF NOT EXISTS repair_cash_jobs_till ON repair_cash_jobs (due_at) WHERE due_at IS NOT NULL",
        "CREATE TABLE IF NOT EXISTS repair_payments (ticket_id TEXT PRIMARY KEY, payment_id TEXT NOT NULL UNIQUE, \
         appointment_id TEXT NOT NULL, amount TEXT NOT NULL, paid_at BIGINT NOT NULL, trace TEXT)",
    ];
    for s in statements {
        sqlx::query(s).execute(store.pool()).await?;
    }
    Ok(())
}

/// A ticket to open, validated.
#[derive(Clone, Debug)]
pub struct NewTicket {
    pub requester: Requester,
    pub repair_type: crate::events::RepairType,
}

/// Opens `tickets` in one transaction: their rows and their `ticket_opened` records (personal data encrypted with
/// `key` when there is one) in the outbox, serialized before they enter it. Returns the events.
pub async fn open_tickets(
    shop: &Shop,
    key: Option<&FieldKey>,
    tickets: Vec<NewTicket>,
) -> Result<Vec<TicketOpened>, HopError> {
    let started = SystemTime::now();
    let d = shop.store.dialect();
    let now = Timestamp(shop.clock.now_us());
    let now_real = weir_runtime::time::now_ms();
    let mut opened = Vec::with_capacity(tickets.len());
    let mut rows = Vec::with_capacity(tickets.len());
    for t in tickets {
        // Time-ordered (v7): every table of the shop is keyed by ticket, and a batch of random ids would touch pages
        // all over each index, which SQLite's write-ahead log then rewrites at every commit (docs/BENCHMARKS.md).
        let ticket_id = uuid::Uuid::now_v7();
        let mut requester = t.requester;
        if let Some(key) = key {
            requester.email = key.encrypt(&ticket_id, &requester.email);
            requester.name = key.encrypt(&ticket_id, &requester.name);
            requester.surname = key.encrypt(&ticket_id, &requester.surname);
        }
        let event = TicketOpened { occurred_on: now, ticket_id, requester, repair_type: t.repair_type };
        let trace = TraceContext::root();
        rows.push(outbox_event(&shop.events, &ticket_id, &event, &trace)?);
        opened.push((event, trace));
    }
    let mut tx = shop.store.begin().await?;
    for chunk in opened.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 10 + 1, 10)).collect();
        let sql = format!(
            "INSERT INTO repair_tickets (ticket_id, opened_at, opened_real_ms, email, name, middlename, surname, age, \
             repair_type, trace_id) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for (e, trace) in chunk {
            q = q
                .bind(e.ticket_id.to_string())
                .bind(e.occurred_on.0)
                .bind(now_real)
                .bind(e.requester.email.clone())
                .bind(e.requester.name.clone())
                .bind(e.requester.middlename.clone())
                .bind(e.requester.surname.clone())
                .bind(e.requester.age)
                .bind(e.repair_type.as_str())
                .bind(trace.trace_hex());
        }
        q.execute(&mut *tx).await?;
    }
    let enqueued = outbox::enqueue_all(&mut tx, d, rows).await?;
    tx.commit().await?;
    shop.outbox.committed(enqueued);
    metrics::counter!("repair_tickets_opened_total").increment(opened.len() as u64);
    for (e, trace) in &opened {
        // The root of each ticket's trace: the request that wrote it to the outbox.
        let _span = hop_span("ticketing", HopKind::Send { topic: TICKETS }, &e.ticket_id, trace, None, started);
    }
    Ok(opened.into_iter().map(|(e, _)| e).collect())
}

/// A ticket as the API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TicketView {
    pub ticket_id: String,
    pub status: &'static str,
    pub repair_type: String,
    pub opened_at: String,
    pub requester: serde_json::Value,
    pub appointment: Option<serde_json::Value>,
    pub payment: Option<serde_json::Value>,
    pub closed_at: Option<String>,
}

const VIEW: &str = "SELECT t.ticket_id, t.repair_type, t.opened_at, t.email, t.name, t.middlename, t.surname, t.age, \
    a.appointment_id, a.bay, a.scheduled_at, a.ends_at, p.payment_id, p.amount, p.paid_at, c.closed_at \
    FROM repair_tickets t LEFT JOIN repair_appointments a ON a.ticket_id = t.ticket_id \
    LEFT JOIN repair_payments p ON p.ticket_id = t.ticket_id LEFT JOIN repair_closures c ON c.ticket_id = t.ticket_id";

/// The states a ticket goes through, in order.
pub const STATUSES: [&str; 4] = ["opened", "booked", "paid", "closed"];

fn status_sql(status: &str) -> &'static str {
    match status {
        "opened" => "a.ticket_id IS NULL",
        "booked" => "a.ticket_id IS NOT NULL AND p.ticket_id IS NULL",
        "paid" => "p.ticket_id IS NOT NULL AND c.ticket_id IS NULL",
        _ => "c.ticket_id IS NOT NULL",
    }
}

fn ts(us: i64) -> String {
    Timestamp(us).to_string()
}

fn view(row: &sqlx::any::AnyRow, key: Option<&FieldKey>) -> Result<TicketView, sqlx::Error> {
    let ticket_id: String = row.try_get(0)?;
    let id = uuid::Uuid::parse_str(&ticket_id).unwrap_or_default();
    let clear = |field: String| match key {
        Some(k) => k.decrypt(&id, &field).unwrap_or(field),
        None => field,
    };
    let appointment: Option<String> = row.try_get(8)?;
    let payment: Option<String> = row.try_get(12)?;
    let closed_at: Option<i64> = row.try_get(15)?;
    let status = if closed_at.is_some() {
        "closed"
    } else if payment.is_some() {
        "paid"
    } else if appointment.is_some() {
        "booked"
    } else {
        "opened"
    };
    Ok(TicketView {
        ticket_id,
        status,
        repair_type: row.try_get(1)?,
        opened_at: ts(row.try_get(2)?),
        requester: serde_json::json!({
            "email": clear(row.try_get(3)?),
            "name": clear(row.try_get(4)?),
            "middlename": row.try_get::<Option<String>, _>(5)?,
            "surname": clear(row.try_get(6)?),
            "age": row.try_get::<i32, _>(7)?,
        }),
        appointment: match appointment {
            Some(a) => Some(serde_json::json!({
                "appointment_id": a,
                "bay": row.try_get::<i32, _>(9)?,
                "scheduled_at": ts(row.try_get(10)?),
                "ends_at": ts(row.try_get(11)?),
            })),
            None => None,
        },
        payment: match payment {
            Some(p) => Some(serde_json::json!({
                "payment_id": p,
                "amount": row.try_get::<String, _>(13)?,
                "paid_at": ts(row.try_get(14)?),
            })),
            None => None,
        },
        closed_at: closed_at.map(ts),
    })
}

/// Tickets, newest first, optionally in one status.
pub async fn tickets(
    store: &SqlStore,
    key: Option<&FieldKey>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<TicketView>, StoreError> {
    let filter = status.map(|s| format!(" WHERE {}", status_sql(s))).unwrap_or_default();
    let sql = format!("{VIEW}{filter} ORDER BY t.opened_at DESC LIMIT {}", limit.clamp(1, 10_000));
    let rows = sqlx::query(&sql).fetch_all(store.pool()).await?;
    Ok(rows.iter().map(|r| view(r, key)).collect::<Result<_, _>>()?)
}

pub async fn ticket(
    store: &SqlStore,
    key: Option<&FieldKey>,
    id: &uuid::Uuid,
) -> Result<Option<TicketView>, StoreError> {
    let d = store.dialect();
    let sql = format!("{VIEW} WHERE t.ticket_id = {}", d.param(1));
    let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(store.pool()).await?;
    Ok(row.map(|r| view(&r, key)).transpose()?)
}

/// Tickets opened since `since_ms` (wall clock) per status: one pass over the join, each status a sum of its rows
/// (the statuses are exclusive, so a ticket counts once).
pub async fn counts(store: &SqlStore, since_ms: i64) -> Result<Vec<(&'static str, i64)>, StoreError> {
    let sums: Vec<String> =
        STATUSES.iter().map(|s| format!("COALESCE(SUM(CASE WHEN {} THEN 1 ELSE 0 END), 0)", status_sql(s))).collect();
    let sql = format!(
        "SELECT {} FROM repair_tickets t LEFT JOIN repair_appointments a ON a.ticket_id = t.ticket_id \
         LEFT JOIN repair_payments p ON p.ticket_id = t.ticket_id LEFT JOIN repair_closures c ON c.ticket_id = t.ticket_id \
         WHERE t.opened_real_ms >= {}",
        sums.join(", "),
        store.dialect().param(1)
    );
    let row = sqlx::query(&sql).bind(since_ms).fetch_one(store.pool()).await?;
    let mut out = Vec::with_capacity(STATUSES.len());
    for (i, s) in STATUSES.iter().enumerate() {
        out.push((*s, row.try_get::<i64, _>(i)?));
    }
    Ok(out)
}

/// Tickets closed at or after `since_ms` (wall clock), whenever they were opened: one count over an index, cheap
/// enough to poll ten times a second while the shop is at full load. (The counts per status join every table, a cost
/// that grows with the run and was a quarter of PostgreSQL's time when polled that often.)
pub async fn closed_since(store: &SqlStore, since_ms: i64) -> Result<i64, StoreError> {
    let sql = format!("SELECT COUNT(*) FROM repair_closures WHERE closed_real_ms >= {}", store.dialect().param(1));
    Ok(sqlx::query(&sql).bind(since_ms).fetch_one(store.pool()).await?.try_get(0)?)
}

/// Bookings from `from_us` on, by start: (bay, ticket, starts, ends).
pub async fn calendar(store: &SqlStore, from_us: i64, limit: i64) -> Result<Vec<(i32, String, i64, i64)>, StoreError> {
    let d: Dialect = store.dialect();
    let sql = format!(
        "SELECT bay, ticket_id, scheduled_at, ends_at FROM repair_appointments WHERE ends_at > {} \
         ORDER BY scheduled_at, bay LIMIT {}",
        d.param(1),
        limit.clamp(1, 10_000)
    );
    let rows = sqlx::query(&sql).bind(from_us).fetch_all(store.pool()).await?;
    Ok(rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect::<Result<_, sqlx::Error>>()?)
}

/// The trace a ticket's journey runs in.
pub async fn trace_id(store: &SqlStore, id: &uuid::Uuid) -> Result<Option<String>, StoreError> {
    let sql = format!("SELECT trace_id FROM repair_tickets WHERE ticket_id = {}", store.dialect().param(1));
    let row = sqlx::query(&sql).bind(id.to_string()).fetch_optional(store.pool()).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// Wall-clock milliseconds from opening to closing of the tickets opened since `since_ms` and closed.
pub async fn close_times_ms(store: &SqlStore, since_ms: i64) -> Result<Vec<i64>, StoreError> {
    let sql = format!(
        "SELECT c.closed_real_ms - t.opened_real_ms FROM repair_tickets t JOIN repair_closures c ON c.ticket_id = t.ticket_id \
         WHERE t.opened_real_ms >= {}",
        store.dialect().param(1)
    );
    let rows = sqlx::query(&sql).bind(since_ms).fetch_all(store.pool()).await?;
    Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
}

/// Effects applied twice among tickets opened since `since_ms`: a ticket closed on a payment other than the one the
/// cash desk registered for it (the cash desk charged twice), or a payment for an appointment other than the one the
/// secretary booked (booked twice).
pub async fn duplicate_effects(store: &SqlStore, since_ms: i64) -> Result<i64, StoreError> {
    let sql = format!(
        "SELECT (SELECT COUNT(*) FROM repair_closures c JOIN repair_payments p ON p.ticket_id = c.ticket_id \
           JOIN repair_tickets t ON t.ticket_id = c.ticket_id WHERE c.payment_id <> p.payment_id AND t.opened_real_ms >= {p}) \
         + (SELECT COUNT(*) FROM repair_payments p JOIN repair_appointments a ON a.ticket_id = p.ticket_id \
           JOIN repair_tickets t ON t.ticket_id = p.ticket_id WHERE p.appointment_id <> a.appointment_id AND t.opened_real_ms >= {p})",
        p = store.dialect().param(1)
    );
    Ok(sqlx::query(&sql).bind(since_ms).fetch_one(store.pool()).await?.try_get(0)?)
}
