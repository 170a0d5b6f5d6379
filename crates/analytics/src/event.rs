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
    pub properties: EventProperties,
}

/// What each event type carries besides the common fields, written as its JSON object (`{}` for none). Typed rather
/// than a `serde_json::Value`, whose map and keys cost an allocation each on the producer's hot path.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EventProperties {
    Purchase { amount: f64, currency: &'static str },
    PageView { path: String },
    Search { query_length: u32 },
    None {},
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

    /// What one event draws from the generator, in the order both ways of making it use.
    fn draw(&mut self) -> Draw {
        let mut pick = self.rng.gen_range(0..self.total_weight);
        let mut event_type = TYPES[0].0;
        for (t, w) in TYPES {
            if pick < *w {
                event_type = t;
                break;
            }
            pick -= w;
        }
        let user = self.rng.gen_range(0..self.users);
        let properties = match event_type {
            "purchase" => Props::Purchase((self.rng.gen_range(100..50_000) as f64) / 100.0),
            "page_view" => Props::PageView(self.rng.gen_range(0..500)),
            "search" => Props::Search(self.rng.gen_range(1..40)),
            _ => Props::None,
        };
        Draw { event_type, user, properties, id: self.rng.gen() }
    }

    /// An event at `ts_ms`, and the key it is produced with (the user).
    pub fn event_at(&mut self, ts_ms: i64) -> (String, Event) {
        let d = self.draw();
        let user = format!("user-{}", d.user);
        let properties = match d.properties {
            Props::Purchase(amount) => EventProperties::Purchase { amount, currency: "EUR" },
            Props::PageView(page) => EventProperties::PageView { path: format!("/p/{page}") },
            Props::Search(query_length) => EventProperties::Search { query_length },
            Props::None => EventProperties::None {},
        };
        let mut event_id = Vec::with_capacity(36);
        write_uuid(&mut event_id, d.id);
        let event = Event {
            event_id: String::from_utf8(event_id).unwrap_or_default(),
            event_type: d.event_type,
            timestamp: format_rfc3339(ts_ms),
            user_id: user.clone(),
            properties,
        };
        (user, event)
    }

    /// The same event as [`event_at`](Self::event_at) makes, appended to `out` as its JSON (byte for byte what
    /// `serde_json` writes for it), allocating nothing: the bulk producer's path, where building strings and then
    /// serialising them cost more than sending. `timestamp` is the event time already formatted. Returns where in
    /// `out` the key (the user id, which the JSON holds too) is.
    pub fn write_event_at(&mut self, timestamp: &str, out: &mut Vec<u8>) -> std::ops::Range<usize> {
        let d = self.draw();
        out.extend_from_slice(b"{\"event_id\":\"");
        write_uuid(out, d.id);
        out.extend_from_slice(b"\",\"event_type\":\"");
        out.extend_from_slice(d.event_type.as_bytes());
        out.extend_from_slice(b"\",\"timestamp\":\"");
        out.extend_from_slice(timestamp.as_bytes());
        out.extend_from_slice(b"\",\"user_id\":\"");
        let key_at = out.len();
        out.extend_from_slice(b"user-");
        write_decimal(out, u64::from(d.user));
        let key = key_at..out.len();
        out.extend_from_slice(b"\",\"properties\":");
        match d.properties {
            Props::Purchase(amount) => {
                out.extend_from_slice(b"{\"amount\":");
                let _ = serde_json::to_writer(&mut *out, &amount);
                out.extend_from_slice(b",\"currency\":\"EUR\"}");
            }
            Props::PageView(page) => {
                out.extend_from_slice(b"{\"path\":\"/p/");
                write_decimal(out, u64::from(page));
                out.extend_from_slice(b"\"}");
            }
            Props::Search(n) => {
                out.extend_from_slice(b"{\"query_length\":");
                write_decimal(out, u64::from(n));
                out.push(b'}');
            }
            Props::None => out.extend_from_slice(b"{}"),
        }
        out.push(b'}');
        key
    }
}

/// One event's random draws.
struct Draw {
    event_type: &'static str,
    user: u32,
    properties: Props,
    id: u128,
}

enum Props {
    Purchase(f64),
    PageView(u32),
    Search(u32),
    None,
}

/// A version-4 UUID's text from 128 random bits (`{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}` of its fields, written
/// digit by digit: `fmt` costs more than the rest of the event here).
fn write_uuid(out: &mut Vec<u8>, id: u128) {
    let hex = |out: &mut Vec<u8>, v: u64, digits: u32| {
        for i in (0..digits).rev() {
            out.push(b"0123456789abcdef"[((v >> (4 * i)) & 0xf) as usize]);
        }
    };
    hex(out, u64::from((id >> 96) as u32), 8);
    out.push(b'-');
    hex(out, u64::from((id >> 80) as u16), 4);
    out.extend_from_slice(b"-4");
    hex(out, u64::from((id >> 68) as u16 & 0xfff), 3);
    out.push(b'-');
    hex(out, u64::from(((id >> 52) as u16 & 0x3fff) | 0x8000), 4);
    out.push(b'-');
    hex(out, id as u64 & 0xffff_ffff_ffff, 12);
}

fn write_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::EventProperties;

    #[test]
    fn the_bulk_path_writes_what_serde_writes_for_the_same_event() {
        use rand::SeedableRng;
        let mut a = super::Generator::new(rand::rngs::StdRng::seed_from_u64(9), 1000);
        let mut b = super::Generator::new(rand::rngs::StdRng::seed_from_u64(9), 1000);
        let ts = 1_735_689_600_123;
        let timestamp = crate::time::format_rfc3339(ts);
        let mut out = b"before".to_vec();
        for _ in 0..5_000 {
            let (key, event) = a.event_at(ts);
            let start = out.len();
            let fast_key = b.write_event_at(&timestamp, &mut out);
            assert_eq!(std::str::from_utf8(&out[start..]).unwrap(), serde_json::to_string(&event).unwrap());
            assert_eq!(std::str::from_utf8(&out[fast_key]).unwrap(), key);
        }
    }

    #[test]
    fn properties_are_written_as_the_objects_the_seed_sends() {
        let json = |p: EventProperties| serde_json::to_string(&p).unwrap();
        assert_eq!(json(EventProperties::None {}), "{}");
        assert_eq!(
            json(EventProperties::Purchase { amount: 12.5, currency: "EUR" }),
            r#"{"amount":12.5,"currency":"EUR"}"#
        );
        assert_eq!(json(EventProperties::PageView { path: "/p/7".into() }), r#"{"path":"/p/7"}"#);
        assert_eq!(json(EventProperties::Search { query_length: 3 }), r#"{"query_length":3}"#);
    }
}
