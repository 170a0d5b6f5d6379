//! The SQL store the runtime and the systems write to: SQLite by default (a file in the data directory, WAL) or
//! PostgreSQL (`postgres://...`), through sqlx's `Any` driver so system code is the same on both. Every place the two
//! dialects differ is in [`Dialect`]; everything else is SQL both accept (`$1` placeholders, `ON CONFLICT ... DO
//! UPDATE`, savepoints).
//!
//! The runtime's own tables, created by [`SqlStore::connect`]:
//! - `weir_consumer_offsets`: the next offset per group, topic and partition, written in the same transaction as a
//!   handler's effects (exactly-once mode);
//! - `weir_processed_events`: event ids already handled per group (the idempotent-consumer dedupe);
//! - `weir_outbox`: events a system emits, written with its own state and published by the relay (`outbox.rs`), and
//!   `weir_outbox_relayed`, how far the relay has published on SQLite;
//! - `weir_kv`, `weir_kv_hash`, `weir_kv_zset`: the persistent embedded key-value store's keys, hashes and sorted
//!   sets (`kv.rs`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Connection, Row};

/// A transaction handlers write through.
pub type SqlTx = sqlx::Transaction<'static, sqlx::Any>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("invalid database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    Url(String),
}

/// What differs between SQLite and PostgreSQL, in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// An auto-incrementing 64-bit primary key column.
    fn serial_key(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Dialect::Postgres => "BIGSERIAL PRIMARY KEY",
        }
    }

    /// The column type for raw bytes.
    fn bytes(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
        }
    }

    /// The `n`th (from 1) bind parameter of a statement whose parameters are bound in the order they appear: `$n` on
    /// PostgreSQL, an anonymous `?` on SQLite. A multi-row INSERT wants the latter: sqlx looks every parameter up by
    /// its name, and SQLite's lookup walks the statement's list of names, so named ones cost quadratically in their
    /// number, while anonymous ones have no name to look up.
    pub fn param(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => "?".to_string(),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// `count` parameters from `first` on, as a parenthesised row of [`Dialect::param`]s.
    pub fn param_row(self, first: usize, count: usize) -> String {
        let params: Vec<String> = (first..first + count).map(|n| self.param(n)).collect();
        format!("({})", params.join(", "))
    }

    /// How a multi-row INSERT inside a transaction starts, when any error rolls the whole transaction back:
    /// `INSERT OR FAIL` on SQLite. A constraint error then ends the statement without undoing the rows it already
    /// wrote (the rollback does), so SQLite keeps no statement journal for it: otherwise every page the statement
    /// changes is first copied to a temporary file, which for an append-mostly table is most of what it writes.
    pub fn insert_in_tx(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INSERT OR FAIL",
            Dialect::Postgres => "INSERT",
        }
    }

    /// Row locks that let several relays share the outbox; SQLite has one writer and needs none.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// A SQLite URL that creates its file when it is missing, as `sqlite:///path/w.db` reads to anyone who has not met
/// sqlx's default (open an existing file only); a URL that names its own `mode` (`ro`, `rw`) or an in-memory
/// database is left as it is.
fn sqlite_creating(url: &str) -> String {
    if url.contains(":memory:") || url.contains("mode=") {
        return url.to_string();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}mode=rwc")
}

/// The rows per statement of a multi-row INSERT of `rows` rows: as many of [`ROWS_PER_INSERT`] as fit, then the
/// rest in powers of two. Every statement text is prepared once and kept in the connection's statement cache
/// (a hundred of them); a last chunk of any size from 1 to 63 would make as many texts per table, each a prepared
/// statement of up to a few hundred parameters, evicting one another and holding tens of megabytes.
pub fn insert_chunks(rows: usize) -> impl Iterator<Item = usize> {
    let full = rows / ROWS_PER_INSERT;
    let rest = rows % ROWS_PER_INSERT;
    std::iter::repeat_n(ROWS_PER_INSERT, full)
        .chain((0..usize::BITS).rev().map(|bit| 1usize << bit).filter(move |size| rest & size != 0))
}

/// The most rows [`insert_chunks`] puts in one statement (of up to 7 parameters a row, within SQLite's and
/// PostgreSQL's limits on parameters).
pub const ROWS_PER_INSERT: usize = 64;

/// Each SQLite connection's settings, set whenever the pool opens one (a pragma lasts as long as its connection).
/// - `busy_timeout`: another process holding the write lock is waited for rather than failing the statement.
/// - `cache_size`: 64 MiB of pages rather than SQLite's 2 MiB; the stores' keys are often random (UUIDs), so their
///   indexes are touched all over and a small cache rereads pages from the file on every batch.
/// - `temp_store = MEMORY`: a multi-row statement's journal (kept so that a failing statement can be undone within
///   its transaction) stays in memory rather than spilling to a temporary file past 64 KiB; no bearing on
///   durability, which the write-ahead log gives.
/// - `wal_autocheckpoint = 8000`: the log is copied back into the database once it holds 8,000 pages (31 MiB) rather
///   than 1,000, so a page rewritten by many commits is copied (and fsynced) once for all of them; the log file stays
///   that size. Together, 1.13 times the events assigned a second of dispatch's end-to-end benchmark
///   (docs/BENCHMARKS.md).
const SQLITE_SESSION: [&str; 4] = [
    "PRAGMA busy_timeout = 10000",
    "PRAGMA cache_size = -65536",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA wal_autocheckpoint = 8000",
];

/// Each PostgreSQL session's settings. `random_page_cost`: 1.1 rather than the default 4, which prices an index
/// probe as a seek on a spinning disk; weir's statements look rows up by key in tables that live in memory, and at 4 the
/// planner answered `WHERE ticket_id IN (` a few hundred keys `)` with a scan of the whole table once it held some
/// tens of thousands of rows, each batch then costing as much as the table is long.
const POSTGRES_SESSION: [&str; 1] = ["SET random_page_cost = 1.1"];

/// A connection pool plus its dialect. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    url: String,
}

impl SqlStore {
    /// Checks a database URL's form without connecting; returns its dialect.
    pub fn check_url(url: &str) -> Result<Dialect, StoreError> {
        sqlx::any::install_default_drivers();
        Self::options(url).map(|(dialect, _)| dialect)
    }

    fn options(url: &str) -> Result<(Dialect, AnyConnectOptions), StoreError> {
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let url = &match dialect {
            Dialect::Sqlite => sqlite_creating(url),
            Dialect::Postgres => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(url).map_err(|_| StoreError::Url(url.to_string()))?;
        Ok((dialect, options))
    }

    /// Connects (creating a SQLite file if needed) and creates the runtime's tables.
    pub async fn connect(url: &str) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        let (dialect, mut options) = Self::options(url)?;
        options = options.log_statements(tracing::log::LevelFilter::Trace);
        // A long statement is often a big job done on purpose (a report over a million rows): a debug line, not a
        // warning on the operator's console.
        options = options.log_slow_statements(tracing::log::LevelFilter::Debug, std::time::Duration::from_secs(1));
        // One connection first: an unreachable server or a bad password says so now, rather than as a pool timeout.
        sqlx::AnyConnection::connect_with(&options).await?.close().await?;
        let pool = match dialect {
            Dialect::Sqlite => {
                // One writer at a time is SQLite's rule; a pool of one avoids "database is locked" between our own
                // connections, and WAL lets readers in other processes proceed.
                let pool = AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            for pragma in SQLITE_SESSION {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?;
                sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
                pool
            }
            Dialect::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            for setting in POSTGRES_SESSION {
                                sqlx::query(setting).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
        };
        let store = SqlStore { pool, dialect, url: url.to_string() };
        let lock = store.lock_schema().await?;
        store.migrate().await?;
        lock.release().await?;
        Ok(store)
    }

    /// Holds the database's schema lock until the guard is released: instances starting together on one PostgreSQL
    /// would otherwise race their `CREATE TABLE IF NOT EXISTS` (PostgreSQL lets two of them collide on its
    /// catalog's unique index and fail the start). A session-level advisory lock on one pooled connection, so the
    /// statements may run on any other; a crashed holder's session ends and frees it. SQLite, one writer at a time,
    /// needs none.
    pub async fn lock_schema(&self) -> Result<SchemaLock, StoreError> {
        if self.dialect != Dialect::Postgres {
            return Ok(SchemaLock(None));
        }
        let mut conn = self.pool.acquire().await?;
        sqlx::query("SELECT CAST(pg_advisory_lock($1) AS TEXT)").bind(SCHEMA_LOCK).execute(&mut *conn).await?;
        Ok(SchemaLock(Some(conn)))
    }

    /// `sqlite://<dir>/weir.db`, the default store inside a data directory.
    pub fn sqlite_url(dir: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", dir.join("weir.db").display())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let d = self.dialect;
        let statements = [
            "CREATE TABLE IF NOT EXISTS weir_consumer_offsets (group_id TEXT NOT NULL, topic TEXT NOT NULL, \
             partition_id INTEGER NOT NULL, next_offset BIGINT NOT NULL, PRIMARY KEY (group_id, topic, partition_id))"
                .to_string(),
            "CREATE TABLE IF NOT EXISTS weir_processed_events (group_id TEXT NOT NULL, event_id TEXT NOT NULL, \
             processed_at BIGINT NOT NULL, PRIMARY KEY (group_id, event_id))"
                .to_string(),
            format!(
                "CREATE TABLE IF NOT EXISTS weir_outbox (seq {}, event_id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, \
                 event_key {b}, payload {b}, headers TEXT NOT NULL, created_at BIGINT NOT NULL, sent_at BIGINT)",
                d.serial_key(),
                b = d.bytes()
            ),
            // No index for unsent rows: PostgreSQL's relays delete what they publish (every row there is unsent, and
            // the primary key orders them), SQLite's keeps a high-water mark. An index whose predicate names
            // `sent_at` also made every marking of a row a full new row version (never HOT): the relay's costliest
            // statement.
            "DROP INDEX IF EXISTS weir_outbox_unsent".to_string(),
            // SQLite's relay marks how far it has published (`outbox.rs`); an outbox of an older weir starts from its
            // last row marked sent.
            "CREATE TABLE IF NOT EXISTS weir_outbox_relayed (relay TEXT PRIMARY KEY, seq BIGINT NOT NULL)".to_string(),
            "INSERT INTO weir_outbox_relayed (relay, seq) SELECT 'relay', COALESCE(MAX(seq), 0) FROM weir_outbox \
             WHERE sent_at IS NOT NULL ON CONFLICT (relay) DO NOTHING"
                .to_string(),
            // Rows an older weir's PostgreSQL relay marked sent were published: they go. (SQLite's lie below the
            // high-water mark just set from them, and its relay purges them.)
            match d {
                Dialect::Postgres => "DELETE FROM weir_outbox WHERE sent_at IS NOT NULL",
                Dialect::Sqlite => "SELECT 1",
            }
            .to_string(),
            format!("CREATE TABLE IF NOT EXISTS weir_kv (k TEXT PRIMARY KEY, v {}, expires_at BIGINT)", d.bytes()),
            format!(
                "CREATE TABLE IF NOT EXISTS weir_kv_hash (k TEXT NOT NULL, f TEXT NOT NULL, v {} NOT NULL, \
                 PRIMARY KEY (k, f))",
                d.bytes()
            ),
            "CREATE TABLE IF NOT EXISTS weir_kv_zset (k TEXT NOT NULL, m TEXT NOT NULL, s BIGINT NOT NULL, \
             PRIMARY KEY (k, m))"
                .to_string(),
            "CREATE INDEX IF NOT EXISTS weir_kv_zset_order ON weir_kv_zset (k, s, m)".to_string(),
        ];
        for s in statements {
            sqlx::query(&s).execute(&self.pool).await?;
        }
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn begin(&self) -> Result<SqlTx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// The next offsets a group has committed in this database, `(topic, partition) -> offset`.
    pub async fn consumer_offsets(&self, group: &str) -> Result<Vec<(String, i32, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT topic, partition_id, next_offset FROM weir_consumer_offsets WHERE group_id = $1")
                .bind(group)
                .fetch_all(&self.pool)
                .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((r.try_get::<String, _>(0)?, r.try_get::<i32, _>(1)?, r.try_get::<i64, _>(2)?));
        }
        Ok(out)
    }
}

/// The key of the PostgreSQL advisory lock [`SqlStore::lock_schema`] takes ("weirddl" and 1).
const SCHEMA_LOCK: i64 = 0x7765_6972_6464_6c01;

/// The schema lock, held until [`release`](SchemaLock::release)d. Dropped unreleased (an error on the way), its
/// connection is closed rather than returned to the pool still holding the lock.
#[derive(Debug)]
pub struct SchemaLock(Option<sqlx::pool::PoolConnection<sqlx::Any>>);

impl SchemaLock {
    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(mut conn) = self.0.take() {
            sqlx::query("SELECT CAST(pg_advisory_unlock($1) AS TEXT)").bind(SCHEMA_LOCK).execute(&mut *conn).await?;
        }
        Ok(())
    }
}

impl Drop for SchemaLock {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}

/// Moves a group's offset for `topic`/`partition` from `from` to `next` inside `tx`, the exactly-once commit of what
/// was handled from `from` on. It is a compare-and-set: it succeeds only if the database still holds `from` (or no
/// offset at all), and answers `false` otherwise, when another consumer of the group (a second instance that got
/// the partition in a rebalance) has already committed past it. The caller must then roll `tx` back: those records'
/// effects are in the database once, by the other consumer's transaction. Two transactions racing on one row are
/// ordered by its lock (PostgreSQL re-checks the condition on the committed row) or by SQLite's single writer.
pub async fn advance_offset(
    tx: &mut SqlTx,
    group: &str,
    topic: &str,
    partition: i32,
    from: i64,
    next: i64,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE weir_consumer_offsets SET next_offset = $1 \
         WHERE group_id = $2 AND topic = $3 AND partition_id = $4 AND next_offset = $5",
    )
    .bind(next)
    .bind(group)
    .bind(topic)
    .bind(partition)
    .bind(from)
    .execute(&mut **tx)
    .await?;
    if moved.rows_affected() == 1 {
        return Ok(true);
    }
    // No row moved: either none exists yet (this is the group's first commit here) or it holds another offset.
    let inserted = sqlx::query(
        "INSERT INTO weir_consumer_offsets (group_id, topic, partition_id, next_offset) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (group_id, topic, partition_id) DO NOTHING",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .bind(next)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Marks `event_id` processed for `group` inside `tx`; false if it already was (the event is a duplicate).
pub async fn first_time(tx: &mut SqlTx, group: &str, event_id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO weir_processed_events (group_id, event_id, processed_at) VALUES ($1, $2, $3) \
         ON CONFLICT (group_id, event_id) DO NOTHING",
    )
    .bind(group)
    .bind(event_id)
    .bind(crate::time::now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// [`first_time`] for many at once, a few statements for them all: marks `event_ids` processed for `group` inside
/// `tx` and returns those that were not already (the others are duplicates).
pub async fn first_times(
    tx: &mut SqlTx,
    dialect: Dialect,
    group: &str,
    event_ids: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut new = std::collections::HashSet::with_capacity(event_ids.len());
    let now = crate::time::now_ms();
    for chunk in event_ids.chunks(500) {
        let rows: Vec<String> = (0..chunk.len()).map(|i| dialect.param_row(i * 3 + 1, 3)).collect();
        let sql = format!(
            "INSERT INTO weir_processed_events (group_id, event_id, processed_at) VALUES {} \
             ON CONFLICT (group_id, event_id) DO NOTHING RETURNING event_id",
            rows.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(group).bind(id.as_str()).bind(now);
        }
        for row in q.fetch_all(&mut **tx).await? {
            new.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::{insert_chunks, sqlite_creating, SqlStore, ROWS_PER_INSERT};

    #[test]
    fn sqlite_urls_create_their_file_unless_they_say_otherwise() {
        assert_eq!(sqlite_creating("sqlite:///d/w.db"), "sqlite:///d/w.db?mode=rwc");
        assert_eq!(sqlite_creating("sqlite:///d/w.db?cache=shared"), "sqlite:///d/w.db?cache=shared&mode=rwc");
        assert_eq!(sqlite_creating("sqlite:///d/w.db?mode=ro"), "sqlite:///d/w.db?mode=ro");
        assert_eq!(sqlite_creating("sqlite::memory:"), "sqlite::memory:");
    }

    #[tokio::test]
    async fn a_plain_sqlite_url_opens_a_new_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.db");
        let store = SqlStore::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        store.pool().close().await;
        assert!(path.exists());
    }

    #[test]
    fn insert_chunks_cover_every_row_with_few_statement_sizes() {
        let mut sizes = std::collections::BTreeSet::new();
        for rows in 0..1000 {
            let chunks: Vec<usize> = insert_chunks(rows).collect();
            assert_eq!(chunks.iter().sum::<usize>(), rows, "{rows} rows: {chunks:?}");
            assert!(chunks.iter().all(|&c| c > 0 && c <= ROWS_PER_INSERT));
            sizes.extend(chunks);
        }
        // So a table's INSERT has seven texts to prepare and cache, whatever the batches.
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), [1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(insert_chunks(1000).collect::<Vec<_>>().len(), 15 + 2);
    }
}
