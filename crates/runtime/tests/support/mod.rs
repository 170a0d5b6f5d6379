//! What the runtime's tests share: the two SQL stores they run on. PostgreSQL must be reachable (scripts/test.sh
//! makes sure it is): a test that needs it fails, never skips, without it. Their brokers come from
//! `weir_broker::testing`.
#![allow(dead_code)] // each test file uses its own subset

use weir_runtime::SqlStore;

pub use weir_runtime::testing::fresh_postgres;

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
