//! The waiting room's rules over the platform's key-value store (Redis with `--redis`, shared by instances; else the
//! embedded store), with the origin's key layout:
//!
//! - `waitroom:session:{id}`: the session (JSON), kept `session_ttl` (2 h);
//! - `waitroom:user_session:{user}:{event}`: the user's session for the event, set only if absent, so two joins of
//!   one user never both succeed (409);
//! - `waitroom:{event}:queue`: a sorted set, score = priority class then arrival (`model::score`);
//! - `waitroom:{event}:processing`: a sorted set of the sessions in checkout, score = when their token expires;
//! - `waitroom:{event}:seq`: the arrival counter; `waitroom:{event}:admitter`: the admission lease;
//! - `waitroom:active_events`: a hash of the events with sessions; `waitroom:config:{event}`: an event's settings;
//! - `waitroom:token:blacklist:{sha256(token)}`: settled sessions' tokens, until they would expire.
//!
//! Who may change a session is decided by the sorted sets: admission moves sessions from the queue into processing
//! in one atomic step (within `max_concurrent`), and leaving, settling and expiring each start by removing the
//! session from its set, which only one of them can do. A crash between that step and writing the session leaves
//! it in a set, where the next round finds it: none is lost, none admitted twice, no checkout slot leaked.
//!
//! Events (`queue.joined`, `queue.left`, `queue.ready`, `checkout.expired`) go through the runtime's outbox, so a
//! join succeeds while the bus is down and its event follows when it is back; with `kafka_enabled = false` none is
//! published.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use weir_runtime::kv::{KvError, KvStore};
use weir_runtime::outbox::{OutboxEvent, OutboxWriter};

use crate::model::{
    score, CheckoutOutcome, EventConfig, QueueJoined, QueueLeft, QueueReady, Session, Status, Topics, MAX_PRIORITY,
};
use crate::token::{fingerprint, Claims, Tokens};

/// Why a request was refused; the API maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error("the user already has an active session for this event: {0}")]
    AlreadyJoined(String),
    #[error("the queue of event {0} is full")]
    Full(String),
    #[error("the waiting room is not enabled for event {0}")]
    NotEnabled(String),
    #[error("no session {0}")]
    NotFound(String),
    #[error("session {0} has expired")]
    Expired(String),
    #[error("session {0} is already {1}")]
    Settled(String, &'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("the key-value store: {0}")]
    Kv(#[from] KvError),
    #[error("the outbox: {0}")]
    Outbox(String),
}

/// How the room runs: the platform's settings for it.
#[derive(Clone, Debug)]
pub struct Rules {
    /// For events never configured.
    pub defaults: EventConfig,
    /// How often each event admits (the origin's `QUEUE_PROCESS_INTERVAL`).
    pub interval: Duration,
    /// How long a checkout token lasts (`JWT_EXPIRY`).
    pub token_ttl: Duration,
    /// How long a session is kept, and how long one may wait.
    pub session_ttl: Duration,
    /// Where an admitted user checks out: `{checkout_url}?session_id=...` (empty: none given).
    pub checkout_url: String,
}

fn ready_topic(t: &Topics) -> &String {
    &t.ready
}

/// An event to publish: its topic, key, value and id.
type Pending = (fn(&Topics) -> &String, String, serde_json::Value, String);

/// A change to an event's queue, for the position streams.
#[derive(Clone, Debug)]
pub struct Change {
    pub event_id: String,
}

/// What a join answers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Joined {
    pub session_id: String,
    pub position: i64,
    pub queue_length: u64,
    pub queued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub websocket_url: String,
    /// Seconds until admission at the event's release rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_wait_seconds: Option<u64>,
}

/// A session as its status lookup shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct View {
    pub session_id: String,
    pub user_id: String,
    pub event_id: String,
    pub status: Status,
    pub priority: u8,
    /// The order of arrival at the event (1 for the first to join): with the priority, the session's place.
    pub arrival: i64,
    /// 1 for the next to be admitted; -1 once out of the queue.
    pub position: i64,
    pub queue_length: u64,
    pub queued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Seconds until admission at the event's release rate, while queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_wait_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// What one admission round did for an event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub admitted: u64,
    pub expired: u64,
    /// Admissions a crashed round left half done, finished.
    pub recovered: u64,
    /// Admissions that failed and went back to the front of their class.
    pub returned: u64,
    /// This instance did not hold the event's lease.
    pub not_leader: bool,
    /// The last round ended less than an interval ago.
    pub not_due: bool,
}

/// What the room's events are published through.
#[derive(Clone, Debug)]
pub struct Publisher {
    /// Group-commits the events of concurrent requests into the outbox.
    pub outbox: OutboxWriter,
    pub topics: Topics,
}

/// The waiting room: cheap to clone, shared by the API, the gRPC service and the tasks.
#[derive(Clone)]
pub struct Room {
    kv: Arc<dyn KvStore>,
    /// In an `Arc`, with the tokens' keys: a room is cloned for every request.
    publisher: Option<Arc<Publisher>>,
    tokens: Arc<Tokens>,
    rules: Arc<Rules>,
    /// This instance, as the admission lease names it.
    instance: String,
    changes: tokio::sync::broadcast::Sender<Change>,
    stats: Arc<Mutex<Stats>>,
    /// Where the gRPC API listens, once it does.
    grpc: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room").field("instance", &self.instance).field("rules", &self.rules).finish_non_exhaustive()
    }
}

/// This instance's recent admissions and waits, per event (for the metrics and the simulator's report).
#[derive(Debug, Default)]
pub struct Stats {
    /// (when, how long the session waited) of the last minute's admissions, per event.
    admitted: HashMap<String, VecDeque<(i64, i64)>>,
}

impl Stats {
    const WINDOW_MS: i64 = 60_000;

    fn record(&mut self, event: &str, now_ms: i64, waited_ms: i64) {
        let q = self.admitted.entry(event.to_string()).or_default();
        q.push_back((now_ms, waited_ms));
        while q.front().is_some_and(|(at, _)| *at <= now_ms - Self::WINDOW_MS) {
            q.pop_front();
        }
    }

    /// Admissions per second over the last minute, and the p50 and p99 wait (ms), for `event`.
    pub fn summary(&mut self, event: &str, now_ms: i64) -> (f64, Option<(i64, i64)>) {
        let Some(q) = self.admitted.get_mut(event) else { return (0.0, None) };
        while q.front().is_some_and(|(at, _)| *at <= now_ms - Self::WINDOW_MS) {
            q.pop_front();
        }
        let rate = q.len() as f64 / (Self::WINDOW_MS as f64 / 1000.0);
        if q.is_empty() {
            return (rate, None);
        }
        let mut waits: Vec<i64> = q.iter().map(|(_, w)| *w).collect();
        waits.sort_unstable();
        let at = |p: f64| waits[((waits.len() - 1) as f64 * p).round() as usize];
        (rate, Some((at(0.5), at(0.99))))
    }
}

fn session_key(id: &str) -> String {
    format!("waitroom:session:{id}")
}
fn user_key(user: &str, event: &str) -> String {
    format!("waitroom:user_session:{user}:{event}")
}
fn queue_key(event: &str) -> String {
    format!("waitroom:{event}:queue")
}
fn processing_key(event: &str) -> String {
    format!("waitroom:{event}:processing")
}
const ACTIVE_EVENTS: &str = "waitroom:active_events";

/// A join's request.
#[derive(Clone, Debug, Default)]
pub struct JoinRequest {
    pub user_id: String,
    pub event_id: String,
    pub priority: u8,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
}

/// Ids are 1 to 128 characters of letters, digits and `-_.:@` (they are parts of keys).
pub fn check_id(field: &str, v: &str) -> Result<(), RoomError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(RoomError::Invalid(format!("{field}: 1 to 128 letters, digits or -_.:@, got {v:?}")))
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Room {
    pub fn new(kv: Arc<dyn KvStore>, publisher: Option<Publisher>, tokens: Tokens, rules: Rules) -> Room {
        Room {
            kv,
            publisher: publisher.map(Arc::new),
            tokens: Arc::new(tokens),
            rules: Arc::new(rules),
            instance: uuid::Uuid::new_v4().to_string(),
            changes: tokio::sync::broadcast::channel(4096).0,
            stats: Arc::default(),
            grpc: Arc::default(),
        }
    }

    pub fn set_grpc_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.grpc.set(addr);
    }

    /// Where the gRPC API listens (None: it does not).
    pub fn grpc_addr(&self) -> Option<std::net::SocketAddr> {
        self.grpc.get().copied()
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn kafka_enabled(&self) -> bool {
        self.publisher.is_some()
    }

    pub fn stats(&self) -> &Arc<Mutex<Stats>> {
        &self.stats
    }

    /// Changes to queues, for whoever streams positions.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn changed(&self, event_id: &str) {
        let _ = self.changes.send(Change { event_id: event_id.to_string() });
    }

    /// An event's settings: what was configured, else the defaults.
    pub async fn config(&self, event_id: &str) -> Result<EventConfig, RoomError> {
        match self.kv.get(&format!("waitroom:config:{event_id}")).await? {
            Some(v) => serde_json::from_slice(&v).map_err(|e| RoomError::Invalid(format!("stored config: {e}"))),
            None => Ok(self.rules.defaults.clone()),
        }
    }

    pub async fn set_config(&self, event_id: &str, config: &EventConfig) -> Result<(), RoomError> {
        check_id("event_id", event_id)?;
        let v = serde_json::to_vec(config).map_err(|e| RoomError::Invalid(e.to_string()))?;
        self.kv.set(&format!("waitroom:config:{event_id}"), &v, None).await?;
        self.changed(event_id);
        Ok(())
    }

    pub async fn session(&self, id: &str) -> Result<Option<Session>, RoomError> {
        match self.kv.get(&session_key(id)).await? {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| RoomError::Invalid(format!("stored session {id}: {e}")))?,
            )),
            None => Ok(None),
        }
    }

    /// A session's key, value and TTL: kept until the later of its expiry and its token's, so a settled session
    /// can still be looked up.
    fn encoded(&self, s: &Session) -> Result<(String, Vec<u8>, Option<Duration>), RoomError> {
        let v = serde_json::to_vec(s).map_err(|e| RoomError::Invalid(e.to_string()))?;
        let until = s.expires_at.max(s.checkout_expires_at.unwrap_or(s.expires_at));
        let ttl = (until - Utc::now()).to_std().unwrap_or_default().max(Duration::from_secs(60));
        Ok((session_key(&s.id), v, Some(ttl)))
    }

    async fn save(&self, s: &Session) -> Result<(), RoomError> {
        let (k, v, ttl) = self.encoded(s)?;
        self.kv.set(&k, &v, ttl).await?;
        Ok(())
    }

    /// Publishes one event through the outbox, keyed by its event id, unless the room runs without a bus.
    /// `id` names the event (`{session}:{what}`): a step redone after a crash writes it again only if the first
    /// write did not commit, and consumers deduplicate on it.
    async fn publish(
        &self,
        topic: fn(&Topics) -> &String,
        key: &str,
        value: serde_json::Value,
        id: String,
    ) -> Result<(), RoomError> {
        self.publish_all(vec![(topic, key.to_string(), value, id)]).await
    }

    /// [`Room::publish`] for several events, in one transaction.
    async fn publish_all(&self, events: Vec<Pending>) -> Result<(), RoomError> {
        let Some(p) = &self.publisher else { return Ok(()) };
        if events.is_empty() {
            return Ok(());
        }
        let now = Utc::now().to_rfc3339();
        let events: Vec<OutboxEvent> = events
            .into_iter()
            .map(|(topic, key, value, id)| OutboxEvent {
                id: Some(id),
                topic: topic(&p.topics).clone(),
                key: Some(key.into_bytes().into()),
                payload: Some(value.to_string().into_bytes().into()),
                headers: vec![("timestamp".into(), now.clone())],
            })
            .collect();
        p.outbox.write(events).await.map_err(RoomError::Outbox)?;
        Ok(())
    }

    /// The session is waiting or in checkout, in its set. A session marked queued in neither set is a join that
    /// stopped before the queue had it (the process died): it answered no one, and holds no place.
    async fn holds_a_place(&self, id: &str) -> Result<bool, RoomError> {
        let Some(s) = self.session(id).await? else { return Ok(false) };
        Ok(match s.status {
            Status::Queued => {
                self.kv.zscore(&queue_key(&s.event_id), id).await?.is_some()
                    || self.kv.zscore(&processing_key(&s.event_id), id).await?.is_some()
            }
            Status::Admitted => true,
            _ => false,
        })
    }

    /// Joins `req.user_id` to `req.event_id`'s queue.
    pub async fn join(&self, req: JoinRequest) -> Result<Joined, RoomError> {
        check_id("user_id", &req.user_id)?;
        check_id("event_id", &req.event_id)?;
        if req.priority > MAX_PRIORITY {
            return Err(RoomError::Invalid(format!("priority: from 0 to {MAX_PRIORITY}, got {}", req.priority)));
        }
        let event = req.event_id.as_str();
        let config = self.config(event).await?;
        if !config.enabled {
            return Err(RoomError::NotEnabled(event.into()));
        }
        let ukey = user_key(&req.user_id, event);
        // A user already waiting or in checkout hears so (409) before hearing that the queue is full.
        if let Some(old) = self.kv.get(&ukey).await? {
            let old = String::from_utf8_lossy(&old).into_owned();
            if self.holds_a_place(&old).await? {
                return Err(RoomError::AlreadyJoined(old));
            }
        }
        let waiting = self.kv.zcard(&queue_key(event)).await?;
        if waiting >= config.capacity {
            return Err(RoomError::Full(event.into()));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let ttl = self.rules.session_ttl;
        // One active session per user and event: the user's key is set only if absent, or taken over from a
        // session that has ended; of two joins at once, one does.
        if !self.kv.set_nx(&ukey, id.as_bytes(), Some(ttl)).await? {
            let held = self.kv.get(&ukey).await?.map(|v| String::from_utf8_lossy(&v).into_owned());
            let taken = match held {
                Some(old) => {
                    if self.holds_a_place(&old).await? {
                        return Err(RoomError::AlreadyJoined(old));
                    }
                    self.kv.set_if(&ukey, old.as_bytes(), id.as_bytes(), Some(ttl)).await?
                }
                None => self.kv.set_nx(&ukey, id.as_bytes(), Some(ttl)).await?,
            };
            if !taken {
                let now = self.kv.get(&ukey).await?.map(|v| String::from_utf8_lossy(&v).into_owned());
                return Err(RoomError::AlreadyJoined(now.unwrap_or_default()));
            }
        }
        let seq = self.kv.incr(&format!("waitroom:{event}:seq"), 1).await?;
        let now = Utc::now();
        let session = Session {
            id: id.clone(),
            user_id: req.user_id.clone(),
            event_id: event.into(),
            priority: req.priority,
            status: Status::Queued,
            score: score(req.priority, seq),
            queued_at: now,
            expires_at: now + chrono::Duration::from_std(ttl).unwrap_or_default(),
            admitted_at: None,
            checkout_token: None,
            checkout_expires_at: None,
            completed_at: None,
            token_invalidated: false,
            token_invalidated_reason: None,
            attempt_count: 0,
            // Kept with the session to measure against the wait at admission, from the queue's length here (the
            // wait of the last in line: exact at priority 0, an upper bound above it), so the join writes the
            // session once.
            estimated_wait_seconds: self.estimate(&config, waiting as i64 + 1),
            user_agent: req.user_agent,
            ip_address: req.ip_address,
            updated_at: now,
        };
        self.save(&session).await?;
        self.kv.zadd_nx(&queue_key(event), &id, session.score).await?;
        // After the queue has it: the admitter drops an event whose queue it found empty only if it still is.
        self.kv.hset(ACTIVE_EVENTS, &[(event.to_string(), b"1".to_vec())]).await?;
        let position = self.kv.zrank(&queue_key(event), &id).await?.map_or(-1, |r| r as i64 + 1);
        let queue_length = self.kv.zcard(&queue_key(event)).await?;
        let estimated_wait_seconds = self.estimate(&config, position);
        let joined = QueueJoined {
            session_id: id.clone(),
            user_id: session.user_id.clone(),
            event_id: event.into(),
            position,
            priority: session.priority,
            joined_at: now,
            timestamp: now,
        };
        self.publish(|t| &t.joined, event, serde_json::to_value(&joined).unwrap_or_default(), format!("{id}:joined"))
            .await?;
        metrics::counter!("waitroom_joined_total").increment(1);
        self.changed(event);
        Ok(Joined {
            estimated_wait_seconds,
            websocket_url: format!("/api/v1/waitroom/stream/{id}"),
            session_id: id,
            position,
            queue_length,
            queued_at: now,
            expires_at: session.expires_at,
        })
    }

    /// A session's status; a session that waited past its expiry leaves the queue now (410).
    pub async fn status(&self, id: &str) -> Result<View, RoomError> {
        let s = self.session(id).await?.ok_or_else(|| RoomError::NotFound(id.into()))?;
        if s.status == Status::Queued && s.expires_at <= Utc::now() {
            if self.kv.zrem(&queue_key(&s.event_id), id).await? {
                self.end(s, Status::Expired, "timeout").await?;
            }
            return Err(RoomError::Expired(id.into()));
        }
        if s.status == Status::Admitted
            && s.checkout_expires_at.is_some_and(|e| e <= Utc::now())
            && self.kv.zscore(&processing_key(&s.event_id), id).await?.is_none()
        {
            // Taken out of checkout by an expiry that stopped before writing the session: finished here.
            self.expire_checkout(s).await?;
            return Err(RoomError::Expired(id.into()));
        }
        if s.status == Status::Expired {
            return Err(RoomError::Expired(id.into()));
        }
        self.view(s).await
    }

    /// The view of a session (no expiry check).
    pub async fn view(&self, s: Session) -> Result<View, RoomError> {
        let queue = queue_key(&s.event_id);
        let queue_length = self.kv.zcard(&queue).await?;
        let position = if s.status == Status::Queued {
            self.kv.zrank(&queue, &s.id).await?.map_or(-1, |r| r as i64 + 1)
        } else {
            -1
        };
        let estimated_wait_seconds =
            if position > 0 { self.estimate(&self.config(&s.event_id).await?, position) } else { None };
        let admitted = s.status == Status::Admitted && !s.token_invalidated;
        let checkout_url = (admitted && !self.rules.checkout_url.is_empty())
            .then(|| format!("{}?session_id={}&event_id={}", self.rules.checkout_url, s.id, s.event_id));
        Ok(View {
            session_id: s.id,
            user_id: s.user_id,
            event_id: s.event_id,
            status: s.status,
            priority: s.priority,
            arrival: s.score & ((1 << 40) - 1),
            position,
            queue_length,
            queued_at: s.queued_at,
            expires_at: s.expires_at,
            estimated_wait_seconds,
            admitted_at: s.admitted_at,
            checkout_token: if admitted { s.checkout_token } else { None },
            checkout_url,
            checkout_expires_at: s.checkout_expires_at,
            completed_at: s.completed_at,
        })
    }

    /// Seconds until a session at `position` is admitted, at the event's release rate (one round an interval).
    fn estimate(&self, config: &EventConfig, position: i64) -> Option<u64> {
        if position < 1 {
            return None;
        }
        let per_second = config.release_rate.max(1) as f64 / self.rules.interval.as_secs_f64().max(0.001);
        Some(((position - 1) as f64 / per_second).ceil() as u64)
    }

    /// Leaves: a waiting session leaves the queue, an admitted one gives its checkout slot back.
    pub async fn leave(&self, id: &str) -> Result<Session, RoomError> {
        let s = self.session(id).await?.ok_or_else(|| RoomError::NotFound(id.into()))?;
        if !s.status.is_active() {
            return Err(RoomError::Settled(id.into(), s.status.as_str()));
        }
        if self.kv.zrem(&queue_key(&s.event_id), id).await? {
            return self.end(s, Status::Abandoned, "user_left").await;
        }
        if self.kv.zrem(&processing_key(&s.event_id), id).await? {
            // Read again: its admission may have finished since.
            let s = self.session(id).await?.unwrap_or(s);
            return self.end(s, Status::Abandoned, "user_left").await;
        }
        // Another step took it out of its set first (admitted, settled, expired): what it did stands.
        let now = self.session(id).await?.ok_or_else(|| RoomError::NotFound(id.into()))?;
        Err(RoomError::Settled(id.into(), now.status.as_str()))
    }

    /// Ends a session this caller took out of its set: its status, its token blacklisted, `queue.left`.
    async fn end(&self, mut s: Session, status: Status, reason: &str) -> Result<Session, RoomError> {
        let now = Utc::now();
        s.status = status;
        s.updated_at = now;
        self.invalidate(&mut s, reason).await?;
        self.save(&s).await?;
        let left = QueueLeft {
            session_id: s.id.clone(),
            user_id: s.user_id.clone(),
            event_id: s.event_id.clone(),
            reason: reason.into(),
            left_at: now,
            timestamp: now,
        };
        self.publish(
            |t| &t.left,
            &s.event_id,
            serde_json::to_value(&left).unwrap_or_default(),
            format!("{}:left", s.id),
        )
        .await?;
        metrics::counter!("waitroom_left_total", "reason" => reason.to_string()).increment(1);
        self.changed(&s.event_id);
        Ok(s)
    }

    /// Blacklists the session's token (if any) until it would have expired.
    async fn invalidate(&self, s: &mut Session, reason: &str) -> Result<(), RoomError> {
        if let (Some(token), false) = (&s.checkout_token, s.token_invalidated) {
            let left = s.checkout_expires_at.map(|e| e - Utc::now()).and_then(|d| d.to_std().ok());
            let ttl = left.unwrap_or_default().max(Duration::from_secs(1));
            self.kv
                .set(&format!("waitroom:token:blacklist:{}", fingerprint(token)), reason.as_bytes(), Some(ttl))
                .await?;
            s.token_invalidated = true;
            s.token_invalidated_reason = Some(reason.into());
        }
        Ok(())
    }

    /// Checks a checkout token: signed by this room, not expired, not blacklisted, its session in checkout.
    pub async fn verify(&self, token: &str) -> Result<Claims, RoomError> {
        let claims = self.tokens.check(token).map_err(|e| RoomError::Invalid(e.to_string()))?;
        if self.kv.get(&format!("waitroom:token:blacklist:{}", fingerprint(token))).await?.is_some() {
            return Err(RoomError::Invalid("the checkout token was invalidated: its session is settled".into()));
        }
        match self.session(&claims.session_id).await? {
            Some(s) if s.status == Status::Admitted && s.checkout_token.as_deref() == Some(token) => Ok(claims),
            Some(s) => Err(RoomError::Settled(s.id, s.status.as_str())),
            None => Err(RoomError::NotFound(claims.session_id)),
        }
    }

    /// Applies a checkout outcome, once: the session leaves checkout (its slot freed), its token is blacklisted.
    /// Ok(false): already applied, or the session left checkout another way first. An unknown session or one never
    /// admitted is an error (the consumer dead-letters it).
    pub async fn settle(&self, outcome: Status, msg: &CheckoutOutcome) -> Result<bool, RoomError> {
        let id = &msg.session_id;
        let s = self.session(id).await?.ok_or_else(|| RoomError::NotFound(id.clone()))?;
        if msg.event_id.as_deref().is_some_and(|e| e != s.event_id) {
            return Err(RoomError::Invalid(format!(
                "session {id} is for event {}, not {:?}",
                s.event_id, msg.event_id
            )));
        }
        if !self.kv.zrem(&processing_key(&s.event_id), id).await? {
            match s.status {
                Status::Queued => {
                    return Err(RoomError::Invalid(format!("session {id} was never admitted to checkout")));
                }
                // Out of checkout but not settled: this outcome's first delivery stopped between the two (the
                // process died); its redelivery finishes it.
                Status::Admitted => {}
                _ => return Ok(false),
            }
        }
        let mut s = self.session(id).await?.unwrap_or(s);
        let now = Utc::now();
        s.status = outcome;
        s.completed_at = Some(now);
        s.updated_at = now;
        self.invalidate(&mut s, outcome.as_str()).await?;
        self.save(&s).await?;
        metrics::counter!("waitroom_settled_total", "outcome" => outcome.as_str()).increment(1);
        self.changed(&s.event_id);
        Ok(true)
    }

    /// The events with sessions.
    pub async fn active_events(&self) -> Result<Vec<String>, RoomError> {
        Ok(self.kv.hgetall(ACTIVE_EVENTS).await?.into_iter().map(|(e, _)| e).collect())
    }

    /// How many wait and how many are in checkout.
    pub async fn counts(&self, event_id: &str) -> Result<(u64, u64), RoomError> {
        Ok((self.kv.zcard(&queue_key(event_id)).await?, self.kv.zcard(&processing_key(event_id)).await?))
    }

    /// One admission round for `event_id`, if this instance holds (or takes) its lease: checkouts past their
    /// token's expiry are expired (`checkout.expired`), then up to the release rate are admitted while fewer than
    /// the maximum are in checkout. Every `recover` rounds, half-done admissions are finished.
    pub async fn round(&self, event_id: &str, recover: bool) -> Result<Round, RoomError> {
        let mut round = Round::default();
        let lease = format!("waitroom:{event_id}:admitter");
        let ttl = (self.rules.interval * 3).max(Duration::from_secs(3));
        let me = self.instance.as_bytes();
        if !self.kv.set_if(&lease, me, me, Some(ttl)).await? && !self.kv.set_nx(&lease, me, Some(ttl)).await? {
            round.not_leader = true;
            return Ok(round);
        }
        // Rounds are an interval apart from the end of the last one, whichever instance ran it: the release rate
        // holds over any interval, however long a round takes.
        let last_key = format!("waitroom:{event_id}:last_round");
        let last = self.kv.get(&last_key).await?.and_then(|v| String::from_utf8_lossy(&v).parse::<i64>().ok());
        if last.is_some_and(|l| ms(Utc::now()) < l + self.rules.interval.as_millis() as i64) {
            round.not_due = true;
            return Ok(round);
        }
        let now = Utc::now();
        let processing = processing_key(event_id);
        // Expired checkouts first: they free slots for this round.
        for (id, until) in self.kv.zrange_upto(&processing, ms(now), 1000).await? {
            if self.kv.zrem(&processing, &id).await? {
                let Some(mut s) = self.session(&id).await? else { continue };
                if s.status == Status::Queued {
                    // An admission cut short (the process died after the move) whose checkout time ran out before
                    // it was redone: it is finished first, as it would have been (the same token, its queue.ready
                    // written once), so the session is admitted once and then expired, never silently dropped.
                    self.finish_admissions(std::slice::from_mut(&mut s), at(until)).await?;
                    round.recovered += 1;
                }
                self.expire_checkout(s).await?;
                round.expired += 1;
            }
        }
        if recover {
            round.recovered = self.recover(event_id).await?;
        }
        let config = self.config(event_id).await?;
        if config.enabled && !config.paused {
            // Whole milliseconds, as the processing set keeps it: a redone admission computes the same times.
            let until = at(ms(now + chrono::Duration::from_std(self.rules.token_ttl).unwrap_or_default()));
            let moved = self
                .kv
                .zmove_min(&queue_key(event_id), &processing, config.release_rate, config.max_concurrent, ms(until))
                .await?;
            // The round's sessions are admitted together: their queue.ready events in one transaction, the
            // sessions in one write.
            let mut batch = Vec::with_capacity(moved.len());
            let mut scores = HashMap::with_capacity(moved.len());
            for (id, old_score) in moved {
                match self.session(&id).await {
                    Ok(Some(s)) if s.status == Status::Queued && s.expires_at > now => {
                        scores.insert(id, old_score);
                        batch.push(s);
                    }
                    Ok(Some(s)) if s.status == Status::Queued => {
                        if self.kv.zrem(&processing, &id).await? {
                            self.end(s, Status::Expired, "timeout").await?;
                        }
                    }
                    // Settled meanwhile (it left): nothing to admit.
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        self.kv.zrem(&processing, &id).await?;
                    }
                    Err(e) => {
                        tracing::warn!(session = %id, "waitroom: cannot read a session to admit, it goes back: {e}");
                        self.kv.zrem(&processing, &id).await?;
                        self.kv.zadd_nx(&queue_key(event_id), &id, old_score).await?;
                        round.returned += 1;
                    }
                }
            }
            if let Err(e) = self.finish_admissions(&mut batch, until).await {
                // Back to the front of their class (their old scores), never lost.
                tracing::warn!(event = %event_id, "waitroom: admission failed, {} sessions go back: {e}", batch.len());
                for s in &batch {
                    self.kv.zrem(&processing, &s.id).await?;
                    self.kv.zadd_nx(&queue_key(event_id), &s.id, scores[&s.id]).await?;
                    round.returned += 1;
                }
            } else {
                round.admitted += batch.len() as u64;
            }
        }
        if round.admitted + round.expired > 0 {
            metrics::counter!("waitroom_admitted_total").increment(round.admitted);
            self.changed(event_id);
        }
        let ended = ms(Utc::now()).to_string();
        self.kv.set(&last_key, ended.as_bytes(), Some(self.rules.interval * 10)).await?;
        let (waiting, in_checkout) = self.counts(event_id).await?;
        if waiting == 0 && in_checkout == 0 && self.kv.hdel_if(ACTIVE_EVENTS, event_id, None).await? {
            // A join may have come in between: it is put back.
            if self.kv.zcard(&queue_key(event_id)).await? > 0 {
                self.kv.hset(ACTIVE_EVENTS, &[(event_id.to_string(), b"1".to_vec())]).await?;
            }
        }
        Ok(round)
    }

    /// Finishes the admission of a session moved into processing: its token, its status, `queue.ready`. False if
    /// it was not waiting any more (it is taken out of processing when it is gone or no longer queued).
    async fn admit(&self, event_id: &str, id: &str, until: DateTime<Utc>) -> Result<bool, RoomError> {
        let processing = processing_key(event_id);
        let Some(mut s) = self.session(id).await? else {
            self.kv.zrem(&processing, id).await?;
            return Ok(false);
        };
        if s.status != Status::Queued {
            return Ok(false);
        }
        if s.expires_at <= Utc::now() {
            if self.kv.zrem(&processing, id).await? {
                self.end(s, Status::Expired, "timeout").await?;
            }
            return Ok(false);
        }
        self.finish_admissions(std::slice::from_mut(&mut s), until).await?;
        Ok(true)
    }

    /// Admits queued sessions moved into processing with their tokens expiring at `until`: their `queue.ready`
    /// events (one transaction), then the sessions (one write). Everything follows from when they were moved (the
    /// token's expiry less its lifetime): redone after a crash, an admission mints the same token and writes the
    /// same event, whose second write its id skips. A crash between the two writes leaves the sessions queued in
    /// processing, where the next rounds find them.
    async fn finish_admissions(&self, sessions: &mut [Session], until: DateTime<Utc>) -> Result<(), RoomError> {
        let now = Utc::now();
        let moved = until - chrono::Duration::from_std(self.rules.token_ttl).unwrap_or_default();
        let mut events = Vec::with_capacity(sessions.len());
        for s in sessions.iter_mut() {
            let claims = Claims {
                session_id: s.id.clone(),
                user_id: s.user_id.clone(),
                event_id: s.event_id.clone(),
                iat: moved.timestamp(),
                exp: until.timestamp(),
            };
            let token = self.tokens.mint(&claims);
            let ready = QueueReady {
                session_id: s.id.clone(),
                user_id: s.user_id.clone(),
                event_id: s.event_id.clone(),
                checkout_token: token.clone(),
                admitted_at: moved,
                expires_at: until,
                timestamp: now,
            };
            let value = serde_json::to_value(&ready).unwrap_or_default();
            events.push((ready_topic as fn(&Topics) -> &String, s.event_id.clone(), value, format!("{}:ready", s.id)));
            s.attempt_count += 1;
            s.status = Status::Admitted;
            s.admitted_at = Some(moved);
            s.checkout_token = Some(token);
            s.checkout_expires_at = Some(until);
            s.updated_at = now;
        }
        self.publish_all(events).await?;
        let mut writes = Vec::with_capacity(sessions.len());
        for s in sessions.iter() {
            writes.push(self.encoded(s)?);
        }
        self.kv.set_many(&writes).await?;
        let mut stats = self.stats.lock();
        for s in sessions.iter() {
            stats.record(&s.event_id, ms(moved), ms(moved) - ms(s.queued_at));
            let waited = (moved - s.queued_at).as_seconds_f64();
            metrics::histogram!("waitroom_wait_seconds").record(waited);
            if let Some(estimate) = s.estimated_wait_seconds {
                metrics::histogram!("waitroom_estimated_wait_error_seconds").record(waited - estimate as f64);
            }
        }
        Ok(())
    }

    /// Sessions in processing still marked queued whose move is over 5 s old: a round stopped between moving them
    /// and admitting them. Admitted now.
    async fn recover(&self, event_id: &str) -> Result<u64, RoomError> {
        let token_ms = self.rules.token_ttl.as_millis() as i64;
        let cutoff = Utc::now().timestamp_millis() - 5_000;
        let mut done = 0;
        for (id, until) in self.kv.zrange_upto(&processing_key(event_id), i64::MAX, 100_000).await? {
            if until - token_ms > cutoff {
                continue;
            }
            if let Some(s) = self.session(&id).await? {
                if s.status == Status::Queued && self.admit(event_id, &id, at(until)).await? {
                    done += 1;
                }
            }
        }
        Ok(done)
    }

    /// A checkout whose token ran out with no outcome: expired, and `checkout.expired` published for the checkout
    /// side (nothing in the origin does).
    async fn expire_checkout(&self, mut s: Session) -> Result<(), RoomError> {
        let now = Utc::now();
        s.status = Status::Expired;
        s.completed_at = Some(now);
        s.updated_at = now;
        self.invalidate(&mut s, "expired").await?;
        self.save(&s).await?;
        let expired = CheckoutOutcome {
            session_id: s.id.clone(),
            user_id: Some(s.user_id.clone()),
            event_id: Some(s.event_id.clone()),
            timestamp: Some(now.to_rfc3339()),
            expired_at: Some(now.to_rfc3339()),
        };
        self.publish(
            |t| &t.expired,
            &s.event_id,
            serde_json::to_value(&expired).unwrap_or_default(),
            format!("{}:expired", s.id),
        )
        .await?;
        metrics::counter!("waitroom_checkouts_expired_total").increment(1);
        Ok(())
    }
}
