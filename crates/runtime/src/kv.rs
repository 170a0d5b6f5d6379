//! A key-value store with TTLs, for sessions, counters and queues. Four implementations of one trait:
//! [`JournalKv`] (embedded, the default: served from memory, every change journaled to the data directory),
//! [`SqlKv`] (the `weir_kv` tables of the SQL store: on PostgreSQL, shared by the instances using it),
//! [`RedisKv`] (shared between processes and machines, `--redis redis://...`) and [`MemoryKv`] (in-process, gone
//! with it: tests and scratch).
//! Expired keys read as absent everywhere. Hashes (`hset`, `hgetall`, `hdel_if`: fields of one key, as Redis's
//! hashes) hold state that tools read as a whole, such as who is active; they have no TTL. Sorted sets (`zadd_nx`,
//! `zrank`, `zmove_min`, ...: members ordered by an integer score, then by member, as Redis's) hold queues: moving
//! the lowest members from one set into another is one atomic step, so two processes never take the same member
//! and a crash never loses one between the two sets. `set_nx` and `set_if` make leases.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use sqlx::Row;

use crate::sql::{Dialect, SqlStore};
use crate::time::now_ms;

mod journal;
mod state;

pub use journal::{JournalKv, JournalOptions};
use state::KvState;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[cfg(feature = "redis")]
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("value of {0:?} is not an integer")]
    NotAnInteger(String),
    #[error("the key-value journal: {0}")]
    Journal(String),
}

#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError>;
    /// Sets `key`; with a TTL it expires after it.
    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError>;
    /// Adds `by` to an integer value (absent counts as 0) and returns the result; keeps the key's TTL.
    async fn incr(&self, key: &str, by: i64) -> Result<i64, KvError>;
    /// Removes `key`; true if it was there.
    async fn delete(&self, key: &str) -> Result<bool, KvError>;
    /// Sets fields of the hash `key` (one call for many, as Redis's HSET).
    async fn hset(&self, key: &str, fields: &[(String, Vec<u8>)]) -> Result<(), KvError>;
    /// Every field of the hash `key` with its value (none when there is no such hash).
    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Bytes)>, KvError>;
    /// Removes `field` of the hash `key`, only while its value is `expected` when one is given (so that a field
    /// rewritten since it was read is kept); true if it was removed.
    async fn hdel_if(&self, key: &str, field: &str, expected: Option<&[u8]>) -> Result<bool, KvError>;
    /// Sets several keys (each with its TTL) as one write: one transaction on SQL, one round trip on Redis.
    async fn set_many(&self, entries: &[(String, Vec<u8>, Option<Duration>)]) -> Result<(), KvError>;
    /// Sets `key` only if it is absent (or expired); true if set. With a TTL, a lease: the first to set it holds it.
    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool, KvError>;
    /// Sets `key` only while its value is `expected` (a lease renewed by its holder); true if set.
    async fn set_if(&self, key: &str, expected: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool, KvError>;
    /// Adds `member` to the sorted set `key` with `score`, unless it is there already; true if added. Scores are
    /// exact up to 2^53 in magnitude (Redis keeps them as doubles).
    async fn zadd_nx(&self, key: &str, member: &str, score: i64) -> Result<bool, KvError>;
    /// `member`'s rank in `key`: 0 for the lowest score, equal scores ordered by member; None if absent.
    async fn zrank(&self, key: &str, member: &str) -> Result<Option<u64>, KvError>;
    /// `member`'s score in `key`, None if absent.
    async fn zscore(&self, key: &str, member: &str) -> Result<Option<i64>, KvError>;
    /// How many members `key` has.
    async fn zcard(&self, key: &str) -> Result<u64, KvError>;
    /// Removes `member` from `key`; true if it was there (of two concurrent removals, one sees true).
    async fn zrem(&self, key: &str, member: &str) -> Result<bool, KvError>;
    /// Up to `limit` members of `key` with a score at most `max`, lowest first, with their scores.
    async fn zrange_upto(&self, key: &str, max: i64, limit: usize) -> Result<Vec<(String, i64)>, KvError>;
    /// Moves the up to `n` lowest members of `from` into `to` with score `score`, as one atomic step, taking no
    /// more than `to` has room for below `to_cap` members; returns them with their scores in `from`, lowest first.
    async fn zmove_min(
        &self,
        from: &str,
        to: &str,
        n: u64,
        to_cap: u64,
        score: i64,
    ) -> Result<Vec<(String, i64)>, KvError>;
}

fn parse_int(key: &str, v: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(v).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| KvError::NotAnInteger(key.into()))
}

/// The `KvStore` of a store over [`KvState`]: each operation is the state's, run through the store's `write` (with
/// a sink for its effects) or `read`. [`MemoryKv`] and [`JournalKv`] differ only in what those two do.
macro_rules! kv_over_state {
    ($store:ty) => {
        #[::async_trait::async_trait]
        impl $crate::kv::KvStore for $store {
            async fn get(&self, key: &str) -> Result<Option<::bytes::Bytes>, $crate::kv::KvError> {
                self.read(|s, now| s.get(key, now)).await
            }

            async fn set(
                &self,
                key: &str,
                value: &[u8],
                ttl: Option<::std::time::Duration>,
            ) -> Result<(), $crate::kv::KvError> {
                self.write(|s, now, sink| s.set(key, value, $crate::kv::expires(ttl, now), sink)).await
            }

            async fn incr(&self, key: &str, by: i64) -> Result<i64, $crate::kv::KvError> {
                self.write(|s, now, sink| s.incr(key, by, now, sink)).await?
            }

            async fn delete(&self, key: &str) -> Result<bool, $crate::kv::KvError> {
                self.write(|s, now, sink| s.delete(key, now, sink)).await
            }

            async fn hset(&self, key: &str, fields: &[(String, Vec<u8>)]) -> Result<(), $crate::kv::KvError> {
                self.write(|s, _, sink| s.hset(key, fields, sink)).await
            }

            async fn hgetall(&self, key: &str) -> Result<Vec<(String, ::bytes::Bytes)>, $crate::kv::KvError> {
                self.read(|s, _| s.hgetall(key)).await
            }

            async fn hdel_if(
                &self,
                key: &str,
                field: &str,
                expected: Option<&[u8]>,
            ) -> Result<bool, $crate::kv::KvError> {
                self.write(|s, _, sink| s.hdel_if(key, field, expected, sink)).await
            }

            async fn set_many(
                &self,
                entries: &[(String, Vec<u8>, Option<::std::time::Duration>)],
            ) -> Result<(), $crate::kv::KvError> {
                self.write(|s, now, sink| {
                    for (k, v, ttl) in entries {
                        s.set(k, v, $crate::kv::expires(*ttl, now), sink);
                    }
                })
                .await
            }

            async fn set_nx(
                &self,
                key: &str,
                value: &[u8],
                ttl: Option<::std::time::Duration>,
            ) -> Result<bool, $crate::kv::KvError> {
                self.write(|s, now, sink| s.set_nx(key, value, $crate::kv::expires(ttl, now), now, sink)).await
            }

            async fn set_if(
                &self,
                key: &str,
                expected: &[u8],
                value: &[u8],
                ttl: Option<::std::time::Duration>,
            ) -> Result<bool, $crate::kv::KvError> {
                self.write(|s, now, sink| s.set_if(key, expected, value, $crate::kv::expires(ttl, now), now, sink))
                    .await
            }

            async fn zadd_nx(&self, key: &str, member: &str, score: i64) -> Result<bool, $crate::kv::KvError> {
                self.write(|s, _, sink| s.zadd_nx(key, member, score, sink)).await
            }

            async fn zrank(&self, key: &str, member: &str) -> Result<Option<u64>, $crate::kv::KvError> {
                self.read(|s, _| s.zrank(key, member)).await
            }

            async fn zscore(&self, key: &str, member: &str) -> Result<Option<i64>, $crate::kv::KvError> {
                self.read(|s, _| s.zscore(key, member)).await
            }

            async fn zcard(&self, key: &str) -> Result<u64, $crate::kv::KvError> {
                self.read(|s, _| s.zcard(key)).await
            }

            async fn zrem(&self, key: &str, member: &str) -> Result<bool, $crate::kv::KvError> {
                self.write(|s, _, sink| s.zrem(key, member, sink)).await
            }

            async fn zrange_upto(
                &self,
                key: &str,
                max: i64,
                limit: usize,
            ) -> Result<Vec<(String, i64)>, $crate::kv::KvError> {
                self.read(|s, _| s.zrange_upto(key, max, limit)).await
            }

            async fn zmove_min(
                &self,
                from: &str,
                to: &str,
                n: u64,
                to_cap: u64,
                score: i64,
            ) -> Result<Vec<(String, i64)>, $crate::kv::KvError> {
                self.write(|s, _, sink| s.zmove_min(from, to, n, to_cap, score, sink)).await
            }
        }
    };
}
pub(crate) use kv_over_state;

/// In-process, gone with the process: [`JournalKv`]'s state without the journal.
#[derive(Debug, Default)]
pub struct MemoryKv {
    state: Mutex<KvState>,
}

/// A TTL as the state keeps it: the wall-clock time it ends.
pub(crate) fn expires(ttl: Option<Duration>, now: i64) -> Option<i64> {
    ttl.map(|t| now + t.as_millis() as i64)
}

impl MemoryKv {
    async fn write<R>(&self, op: impl FnOnce(&mut KvState, i64, &mut state::Sink<'_>) -> R) -> Result<R, KvError> {
        Ok(op(&mut self.state.lock(), now_ms(), &mut None))
    }

    async fn read<R>(&self, op: impl FnOnce(&KvState, i64) -> R) -> Result<R, KvError> {
        Ok(op(&self.state.lock(), now_ms()))
    }
}

kv_over_state!(MemoryKv);

/// The `weir_kv` table: embedded (SQLite in the data directory) and durable, or on PostgreSQL.
#[derive(Clone, Debug)]
pub struct SqlKv {
    store: SqlStore,
}

impl SqlKv {
    pub fn new(store: SqlStore) -> Self {
        SqlKv { store }
    }
}

#[async_trait]
impl KvStore for SqlKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        let row = sqlx::query("SELECT v FROM weir_kv WHERE k = $1 AND (expires_at IS NULL OR expires_at > $2)")
            .bind(key)
            .bind(now_ms())
            .fetch_optional(self.store.pool())
            .await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        sqlx::query(
            "INSERT INTO weir_kv (k, v, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (k) DO UPDATE SET v = excluded.v, expires_at = excluded.expires_at",
        )
        .bind(key)
        .bind(value.to_vec())
        .bind(ttl.map(|t| now_ms() + t.as_millis() as i64))
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    async fn incr(&self, key: &str, by: i64) -> Result<i64, KvError> {
        let mut tx = self.store.pool().begin().await?;
        let now = now_ms();
        let row =
            sqlx::query("SELECT v, expires_at FROM weir_kv WHERE k = $1 AND (expires_at IS NULL OR expires_at > $2)")
                .bind(key)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
        let (current, exp) = match row {
            Some(r) => (parse_int(key, &r.try_get::<Vec<u8>, _>(0)?)?, r.try_get::<Option<i64>, _>(1)?),
            None => (0, None),
        };
        let n = current + by;
        sqlx::query(
            "INSERT INTO weir_kv (k, v, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (k) DO UPDATE SET v = excluded.v, expires_at = excluded.expires_at",
        )
        .bind(key)
        .bind(n.to_string().into_bytes())
        .bind(exp)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let r = sqlx::query("DELETE FROM weir_kv WHERE k = $1 AND (expires_at IS NULL OR expires_at > $2)")
            .bind(key)
            .bind(now_ms())
            .execute(self.store.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn hset(&self, key: &str, fields: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        // Many rows a statement, in one transaction: all the fields or none.
        let d = self.store.dialect();
        let mut tx = self.store.pool().begin().await?;
        for chunk in fields.chunks(500) {
            let rows: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 3 + 1, 3)).collect();
            let sql = format!(
                "INSERT INTO weir_kv_hash (k, f, v) VALUES {} ON CONFLICT (k, f) DO UPDATE SET v = excluded.v",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (f, v) in chunk {
                q = q.bind(key).bind(f.as_str()).bind(v.as_slice());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Bytes)>, KvError> {
        let rows =
            sqlx::query("SELECT f, v FROM weir_kv_hash WHERE k = $1").bind(key).fetch_all(self.store.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, Bytes::from(r.try_get::<Vec<u8>, _>(1)?)))).collect()
    }

    async fn hdel_if(&self, key: &str, field: &str, expected: Option<&[u8]>) -> Result<bool, KvError> {
        let r = match expected {
            Some(e) => {
                sqlx::query("DELETE FROM weir_kv_hash WHERE k = $1 AND f = $2 AND v = $3")
                    .bind(key)
                    .bind(field)
                    .bind(e.to_vec())
                    .execute(self.store.pool())
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM weir_kv_hash WHERE k = $1 AND f = $2")
                    .bind(key)
                    .bind(field)
                    .execute(self.store.pool())
                    .await?
            }
        };
        Ok(r.rows_affected() > 0)
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>, Option<Duration>)]) -> Result<(), KvError> {
        let d = self.store.dialect();
        let now = now_ms();
        let mut tx = self.store.pool().begin().await?;
        for chunk in entries.chunks(500) {
            let rows: Vec<String> = (0..chunk.len()).map(|i| d.param_row(i * 3 + 1, 3)).collect();
            let sql = format!(
                "INSERT INTO weir_kv (k, v, expires_at) VALUES {} \
                 ON CONFLICT (k) DO UPDATE SET v = excluded.v, expires_at = excluded.expires_at",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (k, v, ttl) in chunk {
                q = q.bind(k.as_str()).bind(v.as_slice()).bind(ttl.map(|t| now + t.as_millis() as i64));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool, KvError> {
        // Inserted, or an expired row replaced; a live one is left alone (no row changed).
        let now = now_ms();
        let r = sqlx::query(
            "INSERT INTO weir_kv (k, v, expires_at) VALUES ($1, $2, $3) ON CONFLICT (k) DO UPDATE \
             SET v = excluded.v, expires_at = excluded.expires_at \
             WHERE weir_kv.expires_at IS NOT NULL AND weir_kv.expires_at <= $4",
        )
        .bind(key)
        .bind(value.to_vec())
        .bind(ttl.map(|t| now + t.as_millis() as i64))
        .bind(now)
        .execute(self.store.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn set_if(&self, key: &str, expected: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool, KvError> {
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE weir_kv SET v = $1, expires_at = $2 WHERE k = $3 AND v = $4 \
             AND (expires_at IS NULL OR expires_at > $5)",
        )
        .bind(value.to_vec())
        .bind(ttl.map(|t| now + t.as_millis() as i64))
        .bind(key)
        .bind(expected.to_vec())
        .bind(now)
        .execute(self.store.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn zadd_nx(&self, key: &str, member: &str, score: i64) -> Result<bool, KvError> {
        let r = sqlx::query("INSERT INTO weir_kv_zset (k, m, s) VALUES ($1, $2, $3) ON CONFLICT (k, m) DO NOTHING")
            .bind(key)
            .bind(member)
            .bind(score)
            .execute(self.store.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn zrank(&self, key: &str, member: &str) -> Result<Option<u64>, KvError> {
        // A count over the (k, s, m) index up to the member's place.
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM weir_kv_zset o WHERE o.k = z.k AND (o.s < z.s OR (o.s = z.s AND o.m < z.m))) \
             FROM weir_kv_zset z WHERE z.k = $1 AND z.m = $2",
        )
        .bind(key)
        .bind(member)
        .fetch_optional(self.store.pool())
        .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.map(|n| n as u64))
    }

    async fn zscore(&self, key: &str, member: &str) -> Result<Option<i64>, KvError> {
        let row = sqlx::query("SELECT s FROM weir_kv_zset WHERE k = $1 AND m = $2")
            .bind(key)
            .bind(member)
            .fetch_optional(self.store.pool())
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }

    async fn zcard(&self, key: &str) -> Result<u64, KvError> {
        let row = sqlx::query("SELECT COUNT(*) FROM weir_kv_zset WHERE k = $1")
            .bind(key)
            .fetch_one(self.store.pool())
            .await?;
        Ok(row.try_get::<i64, _>(0)? as u64)
    }

    async fn zrem(&self, key: &str, member: &str) -> Result<bool, KvError> {
        let r = sqlx::query("DELETE FROM weir_kv_zset WHERE k = $1 AND m = $2")
            .bind(key)
            .bind(member)
            .execute(self.store.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn zrange_upto(&self, key: &str, max: i64, limit: usize) -> Result<Vec<(String, i64)>, KvError> {
        let rows = sqlx::query("SELECT m, s FROM weir_kv_zset WHERE k = $1 AND s <= $2 ORDER BY s, m LIMIT $3")
            .bind(key)
            .bind(max)
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(self.store.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
    }

    async fn zmove_min(
        &self,
        from: &str,
        to: &str,
        n: u64,
        to_cap: u64,
        score: i64,
    ) -> Result<Vec<(String, i64)>, KvError> {
        let mut tx = self.store.pool().begin().await?;
        if self.store.dialect() == Dialect::Postgres {
            // Moves out of or into the same sets wait for each other (in one order, so two never deadlock): the
            // room counted below stays true until this commits. SQLite has a single writer.
            let (a, b) = if from <= to { (from, to) } else { (to, from) };
            for k in [a, b] {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))").bind(k).execute(&mut *tx).await?;
            }
        }
        let held: i64 = sqlx::query("SELECT COUNT(*) FROM weir_kv_zset WHERE k = $1")
            .bind(to)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let take = n.min(to_cap.saturating_sub(held.max(0) as u64));
        if take == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT m, s FROM weir_kv_zset WHERE k = $1 ORDER BY s, m LIMIT $2")
            .bind(from)
            .bind(take.min(i64::MAX as u64) as i64)
            .fetch_all(&mut *tx)
            .await?;
        let moved: Vec<(String, i64)> = rows
            .iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect::<Result<_, KvError>>()?;
        for (m, _) in &moved {
            sqlx::query("DELETE FROM weir_kv_zset WHERE k = $1 AND m = $2")
                .bind(from)
                .bind(m)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO weir_kv_zset (k, m, s) VALUES ($1, $2, $3) ON CONFLICT (k, m) DO UPDATE SET s = excluded.s",
            )
            .bind(to)
            .bind(m)
            .bind(score)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }
}

/// Redis, shared by every process that points at it (the `redis` feature, on by default).
#[cfg(feature = "redis")]
#[derive(Clone)]
pub struct RedisKv {
    conn: redis::aio::MultiplexedConnection,
    prefix: String,
}

#[cfg(feature = "redis")]
impl std::fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKv").field("prefix", &self.prefix).finish()
    }
}

#[cfg(feature = "redis")]
impl RedisKv {
    /// Connects to `url` (`redis://host:port/db`); every key is stored under `prefix`.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<RedisKv, KvError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(RedisKv { conn, prefix: prefix.into() })
    }

    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl KvStore for RedisKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        let v: Option<Vec<u8>> = redis::cmd("GET").arg(self.key(key)).query_async(&mut self.conn.clone()).await?;
        Ok(v.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(t) = ttl {
            cmd.arg("PX").arg(t.as_millis().max(1) as u64);
        }
        let () = cmd.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn incr(&self, key: &str, by: i64) -> Result<i64, KvError> {
        let n: i64 = redis::cmd("INCRBY").arg(self.key(key)).arg(by).query_async(&mut self.conn.clone()).await?;
        Ok(n)
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        let n: i64 = redis::cmd("DEL").arg(self.key(key)).query_async(&mut self.conn.clone()).await?;
        Ok(n > 0)
    }

    async fn hset(&self, key: &str, fields: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.key(key));
        for (f, v) in fields {
            cmd.arg(f).arg(v);
        }
        let _: i64 = cmd.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Bytes)>, KvError> {
        let all: Vec<(String, Vec<u8>)> =
            redis::cmd("HGETALL").arg(self.key(key)).query_async(&mut self.conn.clone()).await?;
        Ok(all.into_iter().map(|(f, v)| (f, Bytes::from(v))).collect())
    }

    async fn hdel_if(&self, key: &str, field: &str, expected: Option<&[u8]>) -> Result<bool, KvError> {
        let n: i64 = match expected {
            // Compare and delete in one step on the server: another process may rewrite the field in between.
            Some(e) => {
                redis::cmd("EVAL")
                    .arg(
                        "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then \
                         return redis.call('HDEL', KEYS[1], ARGV[1]) else return 0 end",
                    )
                    .arg(1)
                    .arg(self.key(key))
                    .arg(field)
                    .arg(e)
                    .query_async(&mut self.conn.clone())
                    .await?
            }
            None => redis::cmd("HDEL").arg(self.key(key)).arg(field).query_async(&mut self.conn.clone()).await?,
        };
        Ok(n > 0)
    }
    async fn set_many(&self, entries: &[(String, Vec<u8>, Option<Duration>)]) -> Result<(), KvError> {
        if entries.is_empty() {
            return Ok(());
        }
        // One transaction (MULTI/EXEC) in one round trip.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (k, v, ttl) in entries {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(k)).arg(v.as_slice());
            if let Some(t) = ttl {
                cmd.arg("PX").arg(t.as_millis().max(1) as u64);
            }
            pipe.add_command(cmd).ignore();
        }
        let () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool, KvError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value).arg("NX");
        if let Some(t) = ttl {
            cmd.arg("PX").arg(t.as_millis().max(1) as u64);
        }
        let set: Option<String> = cmd.query_async(&mut self.conn.clone()).await?;
        Ok(set.is_some())
    }

    async fn set_if(&self, key: &str, expected: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool, KvError> {
        // Compare and set in one step on the server. A PX of 0 means no TTL.
        let n: i64 = redis::cmd("EVAL")
            .arg(
                "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end \
                 if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) \
                 else redis.call('SET', KEYS[1], ARGV[2]) end return 1",
            )
            .arg(1)
            .arg(self.key(key))
            .arg(expected)
            .arg(value)
            .arg(ttl.map_or(0, |t| t.as_millis().max(1) as u64))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n > 0)
    }

    async fn zadd_nx(&self, key: &str, member: &str, score: i64) -> Result<bool, KvError> {
        let n: i64 = redis::cmd("ZADD")
            .arg(self.key(key))
            .arg("NX")
            .arg(score)
            .arg(member)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n > 0)
    }

    async fn zrank(&self, key: &str, member: &str) -> Result<Option<u64>, KvError> {
        Ok(redis::cmd("ZRANK").arg(self.key(key)).arg(member).query_async(&mut self.conn.clone()).await?)
    }

    async fn zscore(&self, key: &str, member: &str) -> Result<Option<i64>, KvError> {
        let s: Option<f64> =
            redis::cmd("ZSCORE").arg(self.key(key)).arg(member).query_async(&mut self.conn.clone()).await?;
        Ok(s.map(|s| s as i64))
    }

    async fn zcard(&self, key: &str) -> Result<u64, KvError> {
        Ok(redis::cmd("ZCARD").arg(self.key(key)).query_async(&mut self.conn.clone()).await?)
    }

    async fn zrem(&self, key: &str, member: &str) -> Result<bool, KvError> {
        let n: i64 = redis::cmd("ZREM").arg(self.key(key)).arg(member).query_async(&mut self.conn.clone()).await?;
        Ok(n > 0)
    }

    async fn zrange_upto(&self, key: &str, max: i64, limit: usize) -> Result<Vec<(String, i64)>, KvError> {
        let found: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.key(key))
            .arg("-inf")
            .arg(max)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(found.into_iter().map(|(m, s)| (m, s as i64)).collect())
    }

    async fn zmove_min(
        &self,
        from: &str,
        to: &str,
        n: u64,
        to_cap: u64,
        score: i64,
    ) -> Result<Vec<(String, i64)>, KvError> {
        // One script: Redis runs it whole, so no other client sees a member in neither set, or in both.
        let found: Vec<(String, f64)> = redis::cmd("EVAL")
            .arg(
                "local room = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[2]) \
                 local take = math.min(tonumber(ARGV[1]), room) \
                 if take <= 0 then return {} end \
                 local popped = redis.call('ZPOPMIN', KEYS[1], take) \
                 for i = 1, #popped, 2 do redis.call('ZADD', KEYS[2], ARGV[3], popped[i]) end \
                 return popped",
            )
            .arg(2)
            .arg(self.key(from))
            .arg(self.key(to))
            .arg(n)
            .arg(to_cap)
            .arg(score)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(found.into_iter().map(|(m, s)| (m, s as i64)).collect())
    }
}

/// Moves what the SQL store's key-value tables hold into `into`, then empties them; returns how many entries moved.
/// An embedded weir kept its key-value data there before [`JournalKv`]; `weir up` calls this once the journal is
/// open, so an upgrade keeps sessions, queues and leases. Run again after a crash midway, it writes the same again.
pub async fn import_sql(store: &SqlStore, into: &dyn KvStore) -> Result<u64, KvError> {
    let now = now_ms();
    let mut moved = 0u64;
    let rows = sqlx::query("SELECT k, v, expires_at FROM weir_kv WHERE expires_at IS NULL OR expires_at > $1")
        .bind(now)
        .fetch_all(store.pool())
        .await?;
    for r in &rows {
        let ttl = r.try_get::<Option<i64>, _>(2)?.map(|e| Duration::from_millis((e - now).max(1) as u64));
        into.set(&r.try_get::<String, _>(0)?, &r.try_get::<Vec<u8>, _>(1)?, ttl).await?;
        moved += 1;
    }
    let rows = sqlx::query("SELECT k, f, v FROM weir_kv_hash").fetch_all(store.pool()).await?;
    for r in &rows {
        into.hset(&r.try_get::<String, _>(0)?, &[(r.try_get::<String, _>(1)?, r.try_get::<Vec<u8>, _>(2)?)]).await?;
        moved += 1;
    }
    let rows = sqlx::query("SELECT k, m, s FROM weir_kv_zset").fetch_all(store.pool()).await?;
    for r in &rows {
        into.zadd_nx(&r.try_get::<String, _>(0)?, &r.try_get::<String, _>(1)?, r.try_get::<i64, _>(2)?).await?;
        moved += 1;
    }
    if moved > 0 {
        let mut tx = store.pool().begin().await?;
        for table in ["weir_kv", "weir_kv_hash", "weir_kv_zset"] {
            sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(moved)
}
