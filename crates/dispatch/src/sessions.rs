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
//!   assignments.
//!
//! A session ends when its time passes without activity (fetching or settling assignments refreshes it) or on
//! `DELETE .../active`; [`Sessions::ended`] finds them, and the expirer takes their assignments back.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use weir_runtime::kv::{KvError, KvStore};

pub const ACTIVE_USERS: &str = "active_users";
pub const USER_ASSIGNMENTS: &str = "user_assignments";

/// The sessions of one dispatch system.
#[derive(Clone)]
pub struct Sessions {
    kv: Arc<dyn KvStore>,
    ttl_ms: i64,
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
        Sessions { kv, ttl_ms }
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
        self.kv.hset(ACTIVE_USERS, &[(user.to_string(), until.to_string().into_bytes())]).await
    }

    /// Ends `user`'s session now; false if there was none.
    pub async fn end(&self, user: &str) -> Result<bool, KvError> {
        let had = self.kv.delete(&Self::session_key(user)).await?;
        Ok(self.kv.hdel_if(ACTIVE_USERS, user, None).await? || had)
    }

    /// Whether `user` has a session: one key read (the session key expires with it), not the whole
    /// `active_users` hash, as every fetch and settlement asks.
    pub async fn is_active(&self, user: &str) -> Result<bool, KvError> {
        Ok(self.kv.get(&Self::session_key(user)).await?.is_some())
    }

    /// The users whose session is running at `now_ms`.
    pub async fn active(&self, now_ms: i64) -> Result<Vec<String>, KvError> {
        let all = self.kv.hgetall(ACTIVE_USERS).await?;
        Ok(all.into_iter().filter(|(_, v)| until(v).is_some_and(|t| t > now_ms)).map(|(u, _)| u).collect())
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
        self.kv.hdel_if(ACTIVE_USERS, &ended.user, Some(&ended.value)).await
    }

    /// Writes reviewers' open counts into `user_assignments` (the seed's hash).
    pub async fn publish_counts(&self, counts: &[(String, i64)]) -> Result<(), KvError> {
        let fields: Vec<(String, Vec<u8>)> =
            counts.iter().map(|(u, n)| (u.clone(), n.to_string().into_bytes())).collect();
        self.kv.hset(USER_ASSIGNMENTS, &fields).await
    }
}

fn until(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}
