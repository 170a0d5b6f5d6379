//! The events of the pipeline and the generator the producers use.
//!
//! An event is JSON, keyed by its user, in the origin's format (`UserActivityEvent` of data-pipeline-zeal):
//! `event_id` (a UUID), `user_id` (`user_1` … `user_N`), `event_type`, `timestamp` (event time, RFC 3339),
//! `session_id` (a UUID), `page_url`, `duration_ms` and `metadata` (each `null` when the type has none; a purchase's
//! metadata carries `amount`, a search's `query`). The aggregator also takes the seed document's `properties`
//! object in place of `metadata`.
//!
//! The generator follows the origin's rules: ten event types drawn uniformly; each user keeps a session, renewed with
//! probability 0.1 per event; `page_url` only for page views, clicks and scrolls; `duration_ms` (100–30,000) only for
//! page views and video plays; `{"query": "sample_query_K"}` (K in 1–50) for searches, `{"amount": A}` (10.00–500.00)
//! for purchases.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::time::format_rfc3339;

/// The topic the seed document's pipeline reads (`[systems.analytics] topic` sets another).
pub const TOPIC: &str = "events";
/// The origin's topic (3 partitions there): `topic = "user-activity-events"`, or `KAFKA_TOPIC` as the origin reads.
pub const ORIGIN_TOPIC: &str = "user-activity-events";
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
    #[serde(borrow, default)]
    pub session_id: Option<std::borrow::Cow<'a, str>>,
    /// Summed per window with the number of events carrying it (the origin's `total_duration_ms`, `avg_duration_ms`).
    #[serde(default)]
    pub duration_ms: Option<f64>,
    /// The origin's name for what the seed document calls `properties`.
    #[serde(default)]
    pub metadata: Option<Properties>,
    #[serde(default)]
    pub properties: Option<Properties>,
}

impl EventRef<'_> {
    /// A purchase's value, from `metadata` or `properties`.
    pub fn amount(&self) -> Option<f64> {
        self.metadata.as_ref().and_then(|m| m.amount).or_else(|| self.properties.as_ref().and_then(|p| p.amount))
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Properties {
    /// Summed per window (a purchase's value).
    #[serde(default)]
    pub amount: Option<f64>,
}

/// An event as producers write it, field for field the origin's `UserActivityEvent.to_dict()`.
#[derive(Debug, Serialize)]
pub struct Event {
    pub event_id: String,
    pub user_id: String,
    pub event_type: &'static str,
    pub timestamp: String,
    pub session_id: String,
    pub page_url: Option<&'static str>,
    pub duration_ms: Option<u32>,
    pub metadata: Option<Metadata>,
}

/// A search's query or a purchase's amount.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Metadata {
    Search { query: String },
    Purchase { amount: f64 },
}

/// The origin's event types, drawn uniformly.
pub const EVENT_TYPES: [&str; 10] = [
    "page_view",
    "click",
    "scroll",
    "form_submit",
    "video_play",
    "video_pause",
    "purchase",
    "add_to_cart",
    "search",
    "logout",
];

/// The pages a page view, click or scroll is on.
const PAGES: [&str; 8] = ["/home", "/products", "/products/123", "/cart", "/checkout", "/profile", "/search", "/help"];

/// Makes plausible events for a pool of users, and counts them per type for the producers' metrics.
#[derive(Debug)]
pub struct Generator<R: Rng> {
    rng: R,
    users: u32,
    /// Each user's current session (a UUID's bits; 0 before its first event), indexed by user: 16 bytes per user,
    /// grown to the highest user drawn.
    sessions: Vec<u128>,
    /// Events made per type (index into [`EVENT_TYPES`]) since [`take_counts`](Self::take_counts).
    counts: [u64; EVENT_TYPES.len()],
}

impl<R: Rng> Generator<R> {
    pub fn new(rng: R, users: u32) -> Self {
        Generator { rng, users: users.max(1), sessions: Vec::new(), counts: [0; EVENT_TYPES.len()] }
    }

    /// How many events of each type were made since the last call, by type name; resets the counts.
    pub fn take_counts(&mut self) -> impl Iterator<Item = (&'static str, u64)> {
        let counts = std::mem::take(&mut self.counts);
        EVENT_TYPES.into_iter().zip(counts).filter(|(_, n)| *n > 0)
    }

    /// What one event draws from the generator, in the order both ways of making it use.
    fn draw(&mut self) -> Draw {
        let user = self.rng.gen_range(1..=self.users);
        let renew = self.rng.gen_bool(0.1);
        let fresh: u128 = self.rng.gen();
        let i = user as usize;
        if i >= self.sessions.len() {
            self.sessions.resize(i + 1, 0);
        }
        let session = &mut self.sessions[i];
        if *session == 0 || renew {
            *session = fresh | 1; // never 0, which means none yet
        }
        let session = *session;
        let kind = self.rng.gen_range(0..EVENT_TYPES.len());
        self.counts[kind] += 1;
        let event_type = EVENT_TYPES[kind];
        let page_url = matches!(event_type, "page_view" | "click" | "scroll").then(|| PAGES[self.rng.gen_range(0..8)]);
        let duration_ms = matches!(event_type, "page_view" | "video_play").then(|| self.rng.gen_range(100..=30_000));
        let metadata = match event_type {
            "search" => Meta::Query(self.rng.gen_range(1..=50)),
            "purchase" => Meta::Amount(f64::from(self.rng.gen_range(1_000u32..=50_000)) / 100.0),
            _ => Meta::None,
        };
        Draw { event_type, user, session, page_url, duration_ms, metadata, id: self.rng.gen() }
    }

    /// An event at `ts_ms`, and the key it is produced with (the user).
    pub fn event_at(&mut self, ts_ms: i64) -> (String, Event) {
        let d = self.draw();
        let user = format!("user_{}", d.user);
        let metadata = match d.metadata {
            Meta::Query(k) => Some(Metadata::Search { query: format!("sample_query_{k}") }),
            Meta::Amount(amount) => Some(Metadata::Purchase { amount }),
            Meta::None => None,
        };
        let uuid = |bits| {
            let mut out = Vec::with_capacity(36);
            write_uuid(&mut out, bits);
            String::from_utf8(out).unwrap_or_default()
        };
        let event = Event {
            event_id: uuid(d.id),
            user_id: user.clone(),
            event_type: d.event_type,
            timestamp: format_rfc3339(ts_ms),
            session_id: uuid(d.session),
            page_url: d.page_url,
            duration_ms: d.duration_ms,
            metadata,
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
        out.extend_from_slice(b"\",\"user_id\":\"");
        let key_at = out.len();
        out.extend_from_slice(b"user_");
        write_decimal(out, u64::from(d.user));
        let key = key_at..out.len();
        out.extend_from_slice(b"\",\"event_type\":\"");
        out.extend_from_slice(d.event_type.as_bytes());
        out.extend_from_slice(b"\",\"timestamp\":\"");
        out.extend_from_slice(timestamp.as_bytes());
        out.extend_from_slice(b"\",\"session_id\":\"");
        write_uuid(out, d.session);
        out.extend_from_slice(b"\",\"page_url\":");
        match d.page_url {
            Some(page) => {
                out.push(b'"');
                out.extend_from_slice(page.as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"duration_ms\":");
        match d.duration_ms {
            Some(ms) => write_decimal(out, u64::from(ms)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"metadata\":");
        match d.metadata {
            Meta::Query(k) => {
                out.extend_from_slice(b"{\"query\":\"sample_query_");
                write_decimal(out, u64::from(k));
                out.extend_from_slice(b"\"}");
            }
            Meta::Amount(amount) => {
                out.extend_from_slice(b"{\"amount\":");
                let _ = serde_json::to_writer(&mut *out, &amount);
                out.push(b'}');
            }
            Meta::None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        key
    }
}

/// One event's random draws.
struct Draw {
    event_type: &'static str,
    user: u32,
    session: u128,
    page_url: Option<&'static str>,
    duration_ms: Option<u32>,
    metadata: Meta,
    id: u128,
}

enum Meta {
    Query(u32),
    Amount(f64),
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
    use std::collections::{HashMap, HashSet};

    use rand::SeedableRng;

    #[test]
    fn the_bulk_path_writes_what_serde_writes_for_the_same_event() {
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

    /// The origin's rules, checked over many events: which types carry a page, a duration or metadata, their ranges,
    /// uniform types, and sessions renewed about one event in ten.
    #[test]
    fn events_follow_the_origin_generator_rules() {
        let mut g = super::Generator::new(rand::rngs::StdRng::seed_from_u64(3), 100);
        let n = 100_000;
        let mut per_type: HashMap<String, u64> = HashMap::new();
        let mut session_of: HashMap<String, String> = HashMap::new();
        let (mut renewals, mut repeats) = (0u64, 0u64);
        let mut sessions = HashSet::new();
        for _ in 0..n {
            let (key, e) = g.event_at(0);
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(v.as_object().unwrap().len(), 8, "{v}");
            assert_eq!(v["user_id"], key);
            let user: u32 = key.strip_prefix("user_").unwrap().parse().unwrap();
            assert!((1..=100).contains(&user));
            let t = e.event_type;
            *per_type.entry(t.to_string()).or_default() += 1;
            assert_eq!(v["page_url"].is_string(), matches!(t, "page_view" | "click" | "scroll"), "{v}");
            assert_eq!(v["duration_ms"].is_u64(), matches!(t, "page_view" | "video_play"), "{v}");
            if let Some(ms) = v["duration_ms"].as_u64() {
                assert!((100..=30_000).contains(&ms));
            }
            match t {
                "search" => assert!(v["metadata"]["query"].as_str().unwrap().starts_with("sample_query_")),
                "purchase" => assert!((10.0..=500.0).contains(&v["metadata"]["amount"].as_f64().unwrap())),
                _ => assert!(v["metadata"].is_null()),
            }
            sessions.insert(e.session_id.clone());
            if let Some(before) = session_of.insert(key, e.session_id.clone()) {
                repeats += 1;
                renewals += u64::from(before != e.session_id);
            }
        }
        assert_eq!(per_type.len(), 10);
        for (t, c) in &per_type {
            assert!((9_000..11_000).contains(c), "{t}: {c} of {n}, not uniform");
        }
        let share = renewals as f64 / repeats as f64;
        assert!((0.09..0.11).contains(&share), "sessions renewed on {share} of events");
        assert_eq!(sessions.len() as u64, 100 + renewals);
        let counted: u64 = g.take_counts().map(|(_, n)| n).sum();
        assert_eq!(counted, n);
        assert_eq!(g.take_counts().count(), 0, "taking the counts resets them");
    }

    #[test]
    fn the_aggregator_reads_both_vocabularies() {
        let origin: super::EventRef<'_> = serde_json::from_str(
            r#"{"event_id":"e","user_id":"user_1","event_type":"purchase","timestamp":"2025-01-01T00:00:00.5+00:00",
                "session_id":"s","page_url":null,"duration_ms":null,"metadata":{"amount":12.5}}"#,
        )
        .unwrap();
        assert_eq!((origin.amount(), origin.session_id.as_deref()), (Some(12.5), Some("s")));
        let seed: super::EventRef<'_> = serde_json::from_str(
            r#"{"event_type":"purchase","timestamp":"2025-01-01T00:00:00Z","user_id":"u","properties":{"amount":3.0}}"#,
        )
        .unwrap();
        assert_eq!((seed.amount(), seed.session_id), (Some(3.0), None));
    }
}
