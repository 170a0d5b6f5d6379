//! What tests of the runtime and of the systems on it share: a scratch PostgreSQL database per test. PostgreSQL must
//! be reachable (scripts/test.sh starts it): a test that needs it fails loudly, never skips.

/// Where tests find PostgreSQL: `WEIR_TEST_POSTGRES` (a server URL without a database), by default the local server
/// as scripts/test.sh leaves it (trust authentication here; the password is for a fresh Debian cluster).
pub fn postgres_server() -> String {
    std::env::var("WEIR_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432".into())
}

/// Creates a fresh, empty PostgreSQL database and returns its URL; panics, naming the server, if it is unreachable.
pub async fn fresh_postgres() -> String {
    use sqlx::Connection;
    let server = postgres_server();
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required at {server} (run scripts/test.sh, which starts it): {e}"));
    let name = format!("weir_test_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create a test database on {server}: {e}"));
    format!("{server}/{name}")
}
