//! Events from the exercise's dataset files (JSON arrays; timestamps `MM:SS`, whole seconds, or RFC 3339 instants
//! read against the earliest one; none at all spreads the events over the wedding in file order), or generated at
//! random from a seed.

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::rules::{all_types, canonical_type, Ms, Priority, SECOND};
use crate::schedule::Event;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatasetError {
    #[error("not a JSON array of events: {0}")]
    Json(String),
    #[error("event {index}: {message}")]
    Event { index: usize, message: String },
}

/// `MM:SS` or whole seconds from 00:00; `None` for anything else (an RFC 3339 instant is handled by the caller).
pub fn parse_clock(v: &Value) -> Option<Ms> {
    match v {
        Value::Number(n) => n.as_u64().map(|s| s as Ms * SECOND),
        Value::String(s) => {
            let (m, sec) = s.trim().split_once(':')?;
            let (m, sec): (i64, i64) = (m.parse().ok()?, sec.parse().ok()?);
            ((0..60).contains(&sec) && m >= 0 && !s.contains('T')).then_some((m * 60 + sec) * SECOND)
        }
        _ => None,
    }
}

/// Parses one event object; `index` names it in errors, `instant` reads RFC 3339 text as milliseconds.
pub fn parse_event(
    v: &Value,
    index: usize,
    instant: &dyn Fn(&str) -> Option<i64>,
) -> Result<(Event, Option<i64>), DatasetError> {
    let err = |message: String| DatasetError::Event { index, message };
    let obj = v.as_object().ok_or_else(|| err("must be an object".into()))?;
    let raw_type = obj.get("event_type").and_then(Value::as_str).ok_or_else(|| err("event_type is missing".into()))?;
    let event_type =
        canonical_type(raw_type).ok_or_else(|| err(format!("event_type {raw_type:?} is not a known type")))?;
    let raw_priority = obj.get("priority").and_then(Value::as_str).ok_or_else(|| err("priority is missing".into()))?;
    let priority = Priority::parse(raw_priority)
        .ok_or_else(|| err(format!("priority {raw_priority:?} is not High, Medium or Low")))?;
    let (happened, absolute) = match obj.get("timestamp") {
        None | Some(Value::Null) => (-1, None),
        Some(t) => match parse_clock(t) {
            Some(ms) => (ms, None),
            None => match t.as_str().and_then(instant) {
                Some(abs) => (0, Some(abs)),
                None => return Err(err(format!("timestamp {t} is not MM:SS, seconds or an RFC 3339 instant"))),
            },
        },
    };
    let id = match obj.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => format!("e{index}"),
    };
    let description = obj.get("description").and_then(Value::as_str).unwrap_or("").to_string();
    Ok((Event { id, event_type, priority, description, happened }, absolute))
}

/// A dataset file's events, with times from 00:00.
pub fn parse(
    text: &str,
    wedding_length: Ms,
    instant: &dyn Fn(&str) -> Option<i64>,
) -> Result<Vec<Event>, DatasetError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| DatasetError::Json(e.to_string()))?;
    let items = doc.as_array().ok_or_else(|| DatasetError::Json("the top level is not an array".into()))?;
    let mut parsed = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        parsed.push(parse_event(v, i, instant)?);
    }
    // RFC 3339 instants count from the earliest of them.
    let origin = parsed.iter().filter_map(|(_, abs)| *abs).min();
    let n = parsed.len().max(1) as i64;
    Ok(parsed
        .into_iter()
        .enumerate()
        .map(|(i, (mut e, abs))| {
            if let (Some(a), Some(o)) = (abs, origin) {
                e.happened = a - o;
            } else if e.happened < 0 {
                e.happened = (i as i64 + 1) * wedding_length / n;
            }
            e
        })
        .collect())
}

/// Events as a dataset file in the exercise's format: `MM:SS` timestamps, capitalised priorities, and the
/// exercise's spelling `broken_itens`.
pub fn to_exercise_format(events: &[Event]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| {
                let secs = e.happened / SECOND;
                let ty = if e.event_type == "broken_items" { "broken_itens" } else { e.event_type };
                let p = e.priority.name();
                let priority = format!("{}{}", p[..1].to_ascii_uppercase(), &p[1..]);
                serde_json::json!({"id": e.id, "event_type": ty, "priority": priority, "description": e.description,
                    "timestamp": format!("{:02}:{:02}", secs / 60, secs % 60)})
            })
            .collect(),
    )
}

/// `n` events at random times over the wedding, from `seed`: the same seed, the same events.
pub fn generate(n: usize, wedding_length: Ms, seed: u64) -> Vec<Event> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let types: Vec<&'static str> = all_types().collect();
    let mut events: Vec<Event> = (0..n)
        .map(|i| {
            let priority = match rng.gen_range(0..10) {
                0..=2 => Priority::High,
                3..=6 => Priority::Medium,
                _ => Priority::Low,
            };
            let event_type = types[rng.gen_range(0..types.len())];
            Event {
                id: format!("e{i}"),
                event_type,
                priority,
                description: format!("{event_type} ({})", priority.name()),
                happened: rng.gen_range(1..=wedding_length / SECOND) * SECOND,
            }
        })
        .collect();
    events.sort_by_key(|e| e.happened);
    events
}
