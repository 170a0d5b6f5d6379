//! What the waitroom stores and publishes: a session (the origin's `waitroom:session:{id}` JSON), its statuses, an
//! event's queue settings, the topics (dotted, as the origin has them now, or the seed's UPPER_CASE names) and the
//! events' payloads (the origin's fields, keyed by `event_id`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a session is: waiting, in checkout, or settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    /// Let into checkout, with a token (the origin's proto calls it READY).
    Admitted,
    Completed,
    Failed,
    /// The checkout's time ran out (or the session waited past its expiry).
    Expired,
    /// The user left (the proto's CANCELLED).
    Abandoned,
}

impl Status {
    /// Waiting or in checkout: a user has at most one such session per event.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Queued | Status::Admitted)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Admitted => "admitted",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Abandoned => "abandoned",
        }
    }
}

/// A user's place in one event's waiting room.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub event_id: String,
    /// 0 to 10; higher goes first.
    pub priority: u8,
    pub status: Status,
    /// Its score in the event's queue: priority class, then arrival. A failed admission puts it back with it.
    pub score: i64,
    pub queued_at: DateTime<Utc>,
    /// When a session still waiting gives up its place.
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub token_invalidated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_invalidated_reason: Option<String>,
    #[serde(default)]
    pub attempt_count: u32,
    /// The wait estimated when it joined (seconds) from the queue's length then, to measure the estimates against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_wait_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// How an event's waiting room runs: `POST /api/v1/waitroom/events/{id}/config`. An event never configured runs
/// with the defaults (the platform's settings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventConfig {
    /// Joins are refused (403) while false.
    pub enabled: bool,
    /// Most sessions let into checkout per admission round (every `process_interval`).
    pub release_rate: u64,
    /// Most sessions in checkout at once.
    pub max_concurrent: u64,
    /// Most sessions waiting; a join beyond it is refused (503).
    pub capacity: u64,
    /// Joins are taken but nobody is admitted yet (a queue opened before the sale starts).
    #[serde(default)]
    pub paused: bool,
}

/// Highest priority a join may ask for.
pub const MAX_PRIORITY: u8 = 10;

/// A queue score: the priority class first (higher priority, lower score), then the arrival sequence, so nobody is
/// overtaken by a later arrival of the same or a lower priority. Exact below 2^53 (Redis keeps doubles): classes
/// are 2^40 apart, room for a trillion joins per event.
pub fn score(priority: u8, seq: i64) -> i64 {
    (i64::from(MAX_PRIORITY - priority.min(MAX_PRIORITY)) << 40) + seq
}

/// The topics' names: the origin's dotted ones (default) or the seed's UPPER_CASE ones (`topics = "seed"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    pub ready: String,
    pub joined: String,
    pub left: String,
    pub completed: String,
    pub failed: String,
    pub expired: String,
}

impl Topics {
    pub fn dotted() -> Topics {
        Topics {
            ready: "queue.ready".into(),
            joined: "queue.joined".into(),
            left: "queue.left".into(),
            completed: "checkout.completed".into(),
            failed: "checkout.failed".into(),
            expired: "checkout.expired".into(),
        }
    }

    pub fn seed() -> Topics {
        Topics {
            ready: "QUEUE_READY".into(),
            joined: "QUEUE_JOINED".into(),
            left: "QUEUE_LEFT".into(),
            completed: "CHECKOUT_COMPLETED".into(),
            failed: "CHECKOUT_FAILED".into(),
            expired: "CHECKOUT_EXPIRED".into(),
        }
    }

    /// Each topic with its partition count (the origin's `create-kafka-topics.sh`).
    pub fn all(&self) -> [(&str, i32); 6] {
        [
            (&self.ready, 10),
            (&self.joined, 5),
            (&self.left, 5),
            (&self.completed, 10),
            (&self.failed, 10),
            (&self.expired, 10),
        ]
    }

    /// The checkout outcome a consumed topic carries.
    pub fn outcome(&self, topic: &str) -> Option<Status> {
        if topic == self.completed {
            Some(Status::Completed)
        } else if topic == self.failed {
            Some(Status::Failed)
        } else if topic == self.expired {
            Some(Status::Expired)
        } else {
            None
        }
    }
}

/// `queue.joined`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueJoined {
    pub session_id: String,
    pub user_id: String,
    pub event_id: String,
    pub position: i64,
    pub priority: u8,
    pub joined_at: DateTime<Utc>,
    pub timestamp: DateTime<Utc>,
}

/// `queue.left`: `reason` is `user_left`, `timeout` (waited past the session's expiry) or `expired`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueLeft {
    pub session_id: String,
    pub user_id: String,
    pub event_id: String,
    pub reason: String,
    pub left_at: DateTime<Utc>,
    pub timestamp: DateTime<Utc>,
}

/// `queue.ready`: a session let into checkout, with its token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueReady {
    pub session_id: String,
    pub user_id: String,
    pub event_id: String,
    pub checkout_token: String,
    pub admitted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub timestamp: DateTime<Utc>,
}

/// A checkout outcome as consumed: the origin's fields now (`session_id`, `user_id`, `event_id`, `timestamp`) and the
/// seed's extra ones (order, tickets, payment, amount, reason), which are accepted and not needed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckoutOutcome {
    pub session_id: String,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    /// `checkout.expired` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_order_by_priority_then_arrival() {
        assert!(score(10, 1_000_000) < score(9, 1), "a VIP arriving later still goes first");
        assert!(score(5, 1) < score(5, 2), "FIFO within a class");
        assert!(score(0, (1 << 40) - 1) < (1i64 << 53), "exact in a double");
    }

    #[test]
    fn topic_names_map_to_outcomes() {
        let t = Topics::seed();
        assert_eq!(t.outcome("CHECKOUT_FAILED"), Some(Status::Failed));
        assert_eq!(Topics::dotted().outcome("checkout.expired"), Some(Status::Expired));
        assert_eq!(t.outcome("queue.ready"), None);
    }
}
