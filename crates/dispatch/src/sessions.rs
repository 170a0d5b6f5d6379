//! Reviewers' sessions, in the platform's key-value store: Redis with `--redis` (shared by every weir instance on
//! it), else the embedded store. The layout keeps the keys the origin's tools read (under weir's `weir:` prefix on
//! Redis):
//!
//! - `user:{id}`: the session, JSON `{id, region, assignments}`, expiring after the TTL (the origin's web app's
//!   key, whose TTL the origin lost on every assignment; here each refresh sets it again);
//! - `active_users`: a hash, field = user id, value = when the session ends (milliseconds since the epoch, as text):
//!   the seed's hash, and what the assigner reads, one call for every reviewer;
//! - `user_assignments`: a hash, field = user id, value = open assignments (the seed's hash), rewritten after each
//!   change; the count that the cap is held to lives in the database, where it changes atomically with the
//!   assignments;
//! - `active_users:changes`: a counter, moved on every change to `active_users` (a session started, refreshed or
//!   ended), after it.
//!
//! A session ends when its time passes without activity (fetching or settling assignments refreshes it) or on
//! `DELETE .../active`; [`Sessions::ended`] finds them, and the expirer takes their assignments back.
//!
//! The assigner asks who is active before every round; [`Sessions::active_recent`] reads the counter (one key) and
//! the whole `active_users` hash only when the counter moved since it last did, each session's end checked against
//! the clock either way: a thousand reviewers cost a read of a thousand fields per change, not per round, and a change
//! made by any instance is seen at the next round of every other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use weir_runtime::kv::{KvError, KvStore};

pub const ACTIVE_USERS: &str = "active_users";
pub const USER_ASSIGNMENTS: &str = "user_assignments";
pub const ACTIVE_USERS_CHANGES: &str = "active_users:changes";

/// The sessions of one dispatch system.
#[derive(Clone)]
pub struct Sessions {
    kv: Arc<dyn KvStore>,
    ttl_ms: i64,
    seen: Arc<Mutex<Seen>>,
}

/// The last reading of `active_users` (user → when the session ends), and the counter's value read before it.
#[derive(Default)]
struct Seen {
    changes: Option<i64>,
    until: HashMap<String, i64>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("ttl_ms", &self.ttl_ms).finish_non_exhaustive()
    }
}

/// A session that has ended, as [`Sessions::ended`] found it (its value, to remove it only if unchanged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub user: String,
    value: Vec<u8>,
}

impl Sessions {
    pub fn new(kv: Arc<dyn KvStore>, ttl_ms: i64) -> Sessions {
        Sessions { kv, ttl_ms, seen: Arc::default() }
    }

    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    fn session_key(user: &str) -> String {
        format!("user:{user}")
    }

    /// Starts or refreshes `user`'s session: it ends `ttl` after `now_ms` unless refreshed again.
    pub async fn start(&self, user: &str, region: Option<&str>, open: i64, now_ms: i64) -> Result<(), KvError> {
        let until = now_ms + self.ttl_ms;
        let session = json!({"id": user, "region": region, "assignments": open}).to_string();
        self.kv
            .set(&Self::session_key(user), session.as_bytes(), Some(Duration::from_millis(self.ttl_ms as u64)))
            .await?;
        self.kv.hset(ACTIVE_USERS, &[(user.to_string(), until.to_string().into_bytes())]).await?;
        self.changed().await
    }

    /// Moves `active_users:changes`, after a change to `active_users`.
    async fn changed(&self) -> Result<(), KvError> {
        self.kv.incr(ACTIVE_USERS_CHANGES, 1).await.map(|_| ())
    }

    /// Ends `user`'s session now; false if there was none.
    pub async fn end(&self, user: &str) -> Result<bool, KvError> {
        let had = self.kv.delete(&Self::session_key(user)).await?;
        let listed = self.kv.hdel_if(ACTIVE_USERS, user, None).await?;
        if listed {
            self.changed().await?;
        }
        Ok(listed || had)
    }

    /// Whether `user` has a session: one key read (the session key expires with it), not the whole
    /// `active_users` hash, as every fetch and settlement asks.
    pub async fn is_active(&self, user: &str) -> Result<bool, KvError> {
        Ok(self.kv.get(&Self::session_key(user)).await?.is_some())
    }

    /// The users whose session is running at `now_ms`, as `active_users` says now.
    pub async fn active(&self, now_ms: i64) -> Result<Vec<String>, KvError> {
        let all = self.kv.hgetall(ACTIVE_USERS).await?;
        let until: HashMap<String, i64> = all.into_iter().filter_map(|(u, v)| Some((u, until(&v)?))).collect();
        Ok(running(&until, now_ms))
    }

    /// [`Sessions::active`], reading `active_users` again only if `active_users:changes` moved since the last
    /// reading. The counter is read first: a change landing between the two reads moves it past the value kept, so
    /// the next call reads the hash again.
    pub async fn active_recent(&self, now_ms: i64) -> Result<Vec<String>, KvError> {
        let changes = match self.kv.get(ACTIVE_USERS_CHANGES).await? {
            Some(v) => until(&v).ok_or_else(|| KvError::NotAnInteger(ACTIVE_USERS_CHANGES.into()))?,
            None => 0,
        };
        {
            let seen = self.seen.lock();
            if seen.changes == Some(changes) {
                return Ok(running(&seen.until, now_ms));
            }
        }
        let all = self.kv.hgetall(ACTIVE_USERS).await?;
        let until: HashMap<String, i64> = all.into_iter().filter_map(|(u, v)| Some((u, until(&v)?))).collect();
        let active = running(&until, now_ms);
        *self.seen.lock() = Seen { changes: Some(changes), until };
        Ok(active)
    }

    /// The sessions that ended by `now_ms` and are still listed (an unreadable value counts as ended).
    pub async fn ended(&self, now_ms: i64) -> Result<Vec<Ended>, KvError> {
        let all = self.kv.hgetall(ACTIVE_USERS).await?;
        Ok(all
            .into_iter()
            .filter(|(_, v)| until(v).is_none_or(|t| t <= now_ms))
            .map(|(user, v)| Ended { user, value: v.to_vec() })
            .collect())
    }

    /// Unlists an ended session, unless it was refreshed since [`Sessions::ended`] read it; true if unlisted.
    pub async fn forget(&self, ended: &Ended) -> Result<bool, KvError> {
        let unlisted = self.kv.hdel_if(ACTIVE_USERS, &ended.user, Some(&ended.value)).await?;
        if unlisted {
            self.changed().await?;
        }
        Ok(unlisted)
    }

    /// Writes reviewers' open counts into `user_assignments` (the seed's hash).
    pub async fn publish_counts(&self, counts: &[(String, i64)]) -> Result<(), KvError> {
        let fields: Vec<(String, Vec<u8>)> =
            counts.iter().map(|(u, n)| (u.clone(), n.to_string().into_bytes())).collect();
        self.kv.hset(USER_ASSIGNMENTS, &fields).await
    }
}

/// The users of `until` whose session ends after `now_ms`.
fn running(until: &HashMap<String, i64>, now_ms: i64) -> Vec<String> {
    until.iter().filter(|(_, t)| **t > now_ms).map(|(u, _)| u.clone()).collect()
}

fn until(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}
