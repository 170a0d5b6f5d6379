//! The events of the pipeline and the generator the producers use.
//!
//! An event is JSON on topic `events`, keyed by user: `event_id` (a UUID), `event_type` (an open set), `timestamp`
//! (event time, RFC 3339), `user_id`, `properties` (an object; a purchase carries `amount`).

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::time::format_rfc3339;

pub const TOPIC: &str = "events";
pub const LATE_TOPIC: &str = "events.late";

/// An event as the aggregator reads it (borrowing from the record's bytes: no copy per field).
#[derive(Debug, Deserialize)]
pub struct EventRef<'a> {
    #[serde(borrow)]
    pub event_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub timestamp: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    pub user_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub properties: Option<Properties>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Properties {
    /// Summed per window (a purchase's value).
    #[serde(default)]
    pub amount: Option<f64>,
}

/// An event as producers write it.
#[derive(Debug, Serialize)]
pub struct Event {
    pub event_id: String,
    pub event_type: &'static str,
    pub timestamp: String,
    pub user_id: String,
    pub properties: serde_json::Value,
}

/// Event types and their weights: page views dominate, purchases are rare, as in the seed's producers.
const TYPES: &[(&str, u32)] =
    &[("page_view", 50), ("click", 25), ("search", 10), ("add_to_cart", 8), ("signup", 3), ("purchase", 4)];

/// Makes plausible events for a pool of users.
#[derive(Debug)]
pub struct Generator<R: Rng> {
    rng: R,
    users: u32,
    total_weight: u32,
}

impl<R: Rng> Generator<R> {
    pub fn new(rng: R, users: u32) -> Self {
        Generator { rng, users: users.max(1), total_weight: TYPES.iter().map(|(_, w)| w).sum() }
    }

    /// An event at `ts_ms`, and the key it is produced with (the user).
    pub fn event_at(&mut self, ts_ms: i64) -> (String, Event) {
        let mut pick = self.rng.gen_range(0..self.total_weight);
        let mut event_type = TYPES[0].0;
        for (t, w) in TYPES {
            if pick < *w {
                event_type = t;
                break;
            }
            pick -= w;
        }
        let user = format!("user-{}", self.rng.gen_range(0..self.users));
        let properties = match event_type {
            "purchase" => {
                serde_json::json!({"amount": (self.rng.gen_range(100..50_000) as f64) / 100.0, "currency": "EUR"})
            }
            "page_view" => serde_json::json!({"path": format!("/p/{}", self.rng.gen_range(0..500))}),
            "search" => serde_json::json!({"query_length": self.rng.gen_range(1..40)}),
            _ => serde_json::json!({}),
        };
        let id: u128 = self.rng.gen();
        let event_id = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            (id >> 96) as u32,
            (id >> 80) as u16,
            (id >> 68) as u16 & 0xfff,
            ((id >> 52) as u16 & 0x3fff) | 0x8000,
            id as u64 & 0xffff_ffff_ffff
        );
        let event = Event { event_id, event_type, timestamp: format_rfc3339(ts_ms), user_id: user.clone(), properties };
        (user, event)
    }
}
