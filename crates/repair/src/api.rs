//! The shop's HTTP API on weir's server: open tickets (one, or a list in one transaction), list them by status,
//! show one (its state, its journey, its trace id), the calendar of bays, and counts per status. A bad request gets
//! 400 with `{"error": ...}` naming the field.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use weir_runtime::api_error::{bad, ApiError};

use crate::crypto::FieldKey;
use crate::events::{RepairType, Requester, Timestamp};
use crate::services::Shop;
use crate::store::{self, NewTicket};

#[derive(Clone, Debug)]
struct Api {
    shop: Shop,
    key: Option<FieldKey>,
}

/// The routes, ready to merge into weir's HTTP server.
pub fn routes(shop: Shop, key: Option<FieldKey>) -> Router {
    Router::new()
        .route("/api/repair/tickets", get(list).post(open))
        .route("/api/repair/tickets/{id}", get(one))
        .route("/api/repair/calendar", get(calendar))
        .route("/api/repair/stats", get(stats))
        .with_state(Api { shop, key })
}

/// Most tickets one request may open.
pub const MAX_TICKETS_PER_REQUEST: usize = 1000;

fn text(v: &Value, at: &str, max: usize) -> Result<String, ApiError> {
    match v.get(at.rsplit('.').next().unwrap_or(at)) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= max => Ok(s.trim().to_string()),
        Some(Value::String(_)) => Err(bad(format!("{at}: must be 1 to {max} characters"))),
        None | Some(Value::Null) => Err(bad(format!("{at}: missing"))),
        Some(_) => Err(bad(format!("{at}: must be a string"))),
    }
}

/// Whether `s` looks like an email address: one `@`, a local part, a domain with a dot, no spaces.
pub fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && local.len() <= 64
        && s.len() <= 254
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Youngest and oldest requester the shop serves.
pub const AGES: std::ops::RangeInclusive<i64> = 16..=120;

/// A request's ticket, validated; `at` prefixes the field names of errors (`tickets[3].`).
fn parse_ticket(v: &Value, at: &str) -> Result<NewTicket, ApiError> {
    if !v.is_object() {
        return Err(bad(format!("{}: must be an object", at.trim_end_matches('.'))));
    }
    let r = match v.get("requester") {
        Some(r @ Value::Object(_)) => r,
        None | Some(Value::Null) => return Err(bad(format!("{at}requester: missing"))),
        Some(_) => return Err(bad(format!("{at}requester: must be an object"))),
    };
    let email = text(r, &format!("{at}requester.email"), 254)?;
    if !valid_email(&email) {
        return Err(bad(format!("{at}requester.email: {email:?} is not an email address")));
    }
    let name = text(r, &format!("{at}requester.name"), 100)?;
    let surname = text(r, &format!("{at}requester.surname"), 100)?;
    let middlename = match r.get("middlename") {
        None | Some(Value::Null) => None,
        Some(_) => Some(text(r, &format!("{at}requester.middlename"), 100)?),
    };
    let age = match r.get("age") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(a) if AGES.contains(&a) => a as i32,
            _ => return Err(bad(format!("{at}requester.age: must be a whole number from 16 to 120, got {n}"))),
        },
        None | Some(Value::Null) => return Err(bad(format!("{at}requester.age: missing"))),
        Some(_) => return Err(bad(format!("{at}requester.age: must be a number"))),
    };
    let known = RepairType::ALL.map(RepairType::as_str).join(", ");
    let repair_type = match v.get("repair_type") {
        Some(Value::String(s)) => {
            RepairType::parse(s).ok_or_else(|| bad(format!("{at}repair_type: {s:?} is not a repair type ({known})")))?
        }
        None | Some(Value::Null) => return Err(bad(format!("{at}repair_type: missing ({known})"))),
        Some(_) => return Err(bad(format!("{at}repair_type: must be a string ({known})"))),
    };
    Ok(NewTicket { requester: Requester { email, name, middlename, surname, age }, repair_type })
}

async fn open(State(api): State<Api>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let v: Value = serde_json::from_slice(&body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let (tickets, many) = match &v {
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_TICKETS_PER_REQUEST {
                return Err(bad(format!("a list of 1 to {MAX_TICKETS_PER_REQUEST} tickets, got {}", items.len())));
            }
            let parsed = items
                .iter()
                .enumerate()
                .map(|(i, t)| parse_ticket(t, &format!("[{i}].")))
                .collect::<Result<Vec<_>, _>>()?;
            (parsed, true)
        }
        other => (vec![parse_ticket(other, "")?], false),
    };
    let opened = store::open_tickets(&api.shop, api.key.as_ref(), tickets).await?;
    let shown: Vec<Value> = opened
        .iter()
        .map(|t| {
            json!({"ticket_id": t.ticket_id, "status": "opened", "repair_type": t.repair_type.as_str(),
                   "opened_at": t.occurred_on.to_string()})
        })
        .collect();
    let body = if many { json!({"tickets": shown}) } else { shown.into_iter().next().unwrap_or_default() };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
}

async fn list(State(api): State<Api>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    if let Some(s) = &q.status {
        if !store::STATUSES.contains(&s.as_str()) {
            return Err(bad(format!("status: {s:?} is not one of {}", store::STATUSES.join(", "))));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(bad("limit: must be from 1 to 10000"));
    }
    let tickets = store::tickets(&api.shop.store, api.key.as_ref(), q.status.as_deref(), limit).await?;
    Ok(Json(json!({"count": tickets.len(), "tickets": tickets})))
}

async fn one(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| bad(format!("{id:?} is not a ticket id (a UUID)")))?;
    let Some(t) = store::ticket(&api.shop.store, api.key.as_ref(), &id).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no ticket {id}")));
    };
    let mut journey = vec![json!({"event": "ticket_opened", "service": "ticketing", "at": t.opened_at})];
    if let Some(a) = &t.appointment {
        journey.push(json!({"event": "appointment_booked", "service": "secretary", "scheduled_at": a["scheduled_at"]}));
    }
    if let Some(p) = &t.payment {
        journey.push(
            json!({"event": "payment_registered", "service": "cash-desk", "at": p["paid_at"], "amount": p["amount"]}),
        );
    }
    if let Some(c) = &t.closed_at {
        journey.push(json!({"event": "ticket_closed", "service": "ticketing", "at": c}));
    }
    let trace_id = store::trace_id(&api.shop.store, &id).await?;
    let mut body = serde_json::to_value(&t).unwrap_or_default();
    body["events"] = Value::Array(journey);
    body["trace_id"] = json!(trace_id);
    Ok(Json(body))
}

#[derive(Debug, serde::Deserialize)]
struct CalendarQuery {
    from: Option<String>,
    limit: Option<i64>,
}

async fn calendar(State(api): State<Api>, Query(q): Query<CalendarQuery>) -> Result<Json<Value>, ApiError> {
    let from_us = match &q.from {
        Some(s) => weir_runtime::time::parse_rfc3339(s)
            .ok_or_else(|| bad(format!("from: {s:?} is not an RFC 3339 time")))?
            .saturating_mul(1000),
        None => api.shop.clock.now_us(),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(bad("limit: must be from 1 to 10000"));
    }
    let h = api.shop.hours;
    let bookings: Vec<Value> = store::calendar(&api.shop.store, from_us, limit)
        .await?
        .into_iter()
        .map(|(bay, ticket, s, e)| {
            json!({"bay": bay, "ticket_id": ticket, "starts_at": Timestamp(s).to_string(), "ends_at": Timestamp(e).to_string()})
        })
        .collect();
    Ok(Json(json!({
        "bays": h.bays,
        "opens": format!("{:02}:00", h.opens_hour),
        "closes": format!("{:02}:00", h.closes_hour),
        "slot_minutes": h.slot_minutes,
        "now": Timestamp(api.shop.clock.now_us()).to_string(),
        "bookings": bookings,
    })))
}

#[derive(Debug, serde::Deserialize)]
struct StatsQuery {
    since_ms: Option<i64>,
    /// `tickets`: only the counts per status; `closed`: only `closed_since`, the tickets closed since `since_ms`
    /// whenever opened (one count over an index: what a poller watching a run's progress needs). The time to close
    /// and the duplicate check read every closed ticket.
    only: Option<String>,
}

/// Tickets per status, time to close (wall clock, p50/p99/max) and duplicate effects, for tickets opened since
/// `since_ms` (all by default).
async fn stats(State(api): State<Api>, Query(q): Query<StatsQuery>) -> Result<Json<Value>, ApiError> {
    let since = q.since_ms.unwrap_or(0);
    let counts_only = match q.only.as_deref() {
        None => false,
        Some("tickets") => true,
        Some("closed") => {
            return Ok(Json(json!({ "closed_since": store::closed_since(&api.shop.store, since).await? })));
        }
        Some(other) => {
            return Err(bad(format!("only: {other:?} is not a part of the stats (tickets, closed)")));
        }
    };
    let counts = store::counts(&api.shop.store, since).await?;
    let by_status: serde_json::Map<String, Value> =
        counts.into_iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
    if counts_only {
        return Ok(Json(json!({ "tickets": by_status })));
    }
    let mut close = store::close_times_ms(&api.shop.store, since).await?;
    close.sort_unstable();
    let pct = |p: f64| close.get(((close.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied();
    Ok(Json(json!({
        "tickets": by_status,
        "close_ms": {"count": close.len(), "p50": pct(0.5), "p99": pct(0.99), "max": close.last()},
        "duplicates": store::duplicate_effects(&api.shop.store, since).await?,
    })))
}
