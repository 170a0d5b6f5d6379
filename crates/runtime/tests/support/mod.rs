//! What the runtime's tests share: a scratch broker, and the two SQL stores they run on. PostgreSQL must be
//! reachable (scripts/test.sh makes sure it is): a test that needs it fails, never skips, without it.
#![allow(dead_code)] // each test file uses its own subset

use std::sync::Arc;

use weir_broker::{Broker, BrokerConfig};
use weir_runtime::SqlStore;

/// Where the tests find PostgreSQL: `WEIR_TEST_POSTGRES` (a server URL without a database), by default the local
/// server as scripts/test.sh leaves it (trust authentication here; the password is for a fresh Debian cluster).
pub fn postgres_server() -> String {
    std::env::var("WEIR_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432".into())
}

/// A fresh, empty PostgreSQL database for one test; returns its URL.
pub async fn fresh_postgres() -> String {
    use sqlx::Connection;
    let server = postgres_server();
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required at {server} (run scripts/test.sh, which starts it): {e}"));
    let name = format!("weir_test_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    format!("{server}/{name}")
}

/// The store kinds every SQL test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    /// A URL for a new, empty store of this kind (SQLite inside `dir`).
    pub async fn url(self, dir: &std::path::Path) -> String {
        match self {
            Db::Sqlite => SqlStore::sqlite_url(dir),
            Db::Postgres => fresh_postgres().await,
        }
    }
}

pub fn broker(dir: &std::path::Path) -> Arc<Broker> {
    let mut config = BrokerConfig::new(dir);
    config.group.initial_rebalance_delay_ms = 0;
    Broker::open(config).unwrap()
}
