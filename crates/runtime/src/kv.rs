//! A key-value store with TTLs, for sessions and counters. Three implementations of one trait:
//! [`SqlKv`] (the `weir_kv` table of the SQL store: embedded by default, survives restarts), [`RedisKv`] (shared
//! between processes and machines, `--redis redis://...`) and [`MemoryKv`] (in-process, for tests and scratch).
//! Expired keys read as absent everywhere. Hashes (`hset`, `hgetall`, `hdel_if`: fields of one key, as Redis's
//! hashes) hold state that tools read as a whole, such as who is active; they have no TTL.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use sqlx::Row;

use crate::sql::SqlStore;
use crate::time::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[cfg(feature = "redis")]
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("value of {0:?} is not an integer")]
    NotAnInteger(String),
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
}

fn parse_int(key: &str, v: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(v).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| KvError::NotAnInteger(key.into()))
}

/// In-process, gone with the process.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<HashMap<String, (Bytes, Option<Instant>)>>,
    hashes: Mutex<HashMap<String, HashMap<String, Bytes>>>,
}

impl MemoryKv {
    fn live(&self, key: &str) -> Option<(Bytes, Option<Instant>)> {
        let mut map = self.map.lock();
        match map.get(key) {
            Some((_, Some(exp))) if *exp <= Instant::now() => {
                map.remove(key);
                None
            }
            other => other.cloned(),
        }
    }
}

#[async_trait]
impl KvStore for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        Ok(self.live(key).map(|(v, _)| v))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        self.map.lock().insert(key.into(), (Bytes::copy_from_slice(value), ttl.map(|t| Instant::now() + t)));
        Ok(())
    }

    async fn incr(&self, key: &str, by: i64) -> Result<i64, KvError> {
        let (n, exp) = match self.live(key) {
            Some((v, exp)) => (parse_int(key, &v)? + by, exp),
            None => (by, None),
        };
        self.map.lock().insert(key.into(), (Bytes::from(n.to_string()), exp));
        Ok(n)
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.live(key).is_some() && self.map.lock().remove(key).is_some())
    }

    async fn hset(&self, key: &str, fields: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let mut hashes = self.hashes.lock();
        let hash = hashes.entry(key.into()).or_default();
        for (f, v) in fields {
            hash.insert(f.clone(), Bytes::copy_from_slice(v));
        }
        Ok(())
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, Bytes)>, KvError> {
        let hashes = self.hashes.lock();
        Ok(hashes.get(key).map(|h| h.iter().map(|(f, v)| (f.clone(), v.clone())).collect()).unwrap_or_default())
    }

    async fn hdel_if(&self, key: &str, field: &str, expected: Option<&[u8]>) -> Result<bool, KvError> {
        let mut hashes = self.hashes.lock();
        let Some(hash) = hashes.get_mut(key) else { return Ok(false) };
        match (hash.get(field), expected) {
            (Some(v), Some(e)) if v.as_ref() != e => Ok(false),
            (Some(_), _) => Ok(hash.remove(field).is_some()),
            (None, _) => Ok(false),
        }
    }
}

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
}
