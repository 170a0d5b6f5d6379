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

/// Where tests find Tansu (a Kafka-compatible broker in Rust that keeps its data in PostgreSQL: the real cluster the
/// scale-out tests run on): `WEIR_TANSU`, by default `~/.cache/weir/tansu/bin/tansu`, where `scripts/tansu.sh`
/// installs it.
pub fn tansu_binary() -> std::path::PathBuf {
    std::env::var_os("WEIR_TANSU").map(Into::into).unwrap_or_else(|| tansu_cache().join("bin/tansu"))
}

/// Tansu's PostgreSQL schema (`etc/initdb.d/010-schema.sql` of its v0.6.0 tag): `WEIR_TANSU_SCHEMA`, by default
/// beside the binary's cache, where `scripts/tansu.sh` puts it.
pub fn tansu_schema() -> std::path::PathBuf {
    std::env::var_os("WEIR_TANSU_SCHEMA").map(Into::into).unwrap_or_else(|| tansu_cache().join("010-schema-v0.6.0.sql"))
}

fn tansu_cache() -> std::path::PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    std::path::Path::new(&home).join(".cache/weir/tansu")
}

/// A Tansu broker on a database of its own, for one test; killed when dropped.
#[derive(Debug)]
pub struct Tansu {
    /// `host:port` of its Kafka listener.
    pub address: String,
    /// The PostgreSQL URL it stores into.
    pub storage: String,
    child: std::process::Child,
}

impl Tansu {
    /// Creates a database, loads Tansu's schema into it and starts a broker on it; panics with what is missing
    /// (Tansu, PostgreSQL) rather than skipping: `scripts/test.sh` installs them. Tansu's PostgreSQL schema is not in
    /// its published crates: `scripts/tansu.sh` fetches it from GitHub, and where GitHub cannot be reached (a machine
    /// that sees only the package registries) the broker runs on Tansu's in-memory storage instead, saying so on
    /// stderr: still a separate Kafka-compatible broker, without PostgreSQL beneath it.
    pub async fn start() -> Tansu {
        let binary = tansu_binary();
        assert!(
            binary.exists(),
            "Tansu is required at {} (scripts/tansu.sh installs it; WEIR_TANSU names another)",
            binary.display()
        );
        if !tansu_schema().exists() {
            eprintln!(
                "Tansu's PostgreSQL schema is not at {} (scripts/tansu.sh could not fetch it from GitHub): this test \
                 runs Tansu on its in-memory storage",
                tansu_schema().display()
            );
            return Tansu::start_on("memory://tansu/");
        }
        Tansu::start_on_postgres().await
    }

    /// [`Tansu::start`] on PostgreSQL, failing without Tansu's schema. PostgreSQL is preferred because Tansu 0.6.0's
    /// in-memory storage serves a fetch only from the record batches that *start* at or after the fetch offset,
    /// so a consumer group resuming from an offset committed inside a batch (Kafka allows any offset) never receives
    /// the rest of that batch (fixed after 0.6.0 by tansu-io/tansu 87db6ea); its PostgreSQL storage reads records by
    /// offset.
    async fn start_on_postgres() -> Tansu {
        let (binary, schema) = (tansu_binary(), tansu_schema());
        assert!(
            binary.exists(),
            "Tansu is required at {} (scripts/tansu.sh installs it; WEIR_TANSU names another)",
            binary.display()
        );
        let ddl = std::fs::read_to_string(&schema).unwrap_or_else(|e| {
            panic!(
                "this test needs Tansu on PostgreSQL, and Tansu's schema is not at {} ({e}): put \
                 etc/initdb.d/010-schema.sql of Tansu's v0.6.0 tag there (scripts/tansu.sh fetches it from GitHub)",
                schema.display()
            )
        });
        let url = fresh_postgres().await;
        let pool = sqlx::PgPool::connect(&url).await.expect("the fresh database accepts connections");
        sqlx::raw_sql(&ddl).execute(&pool).await.unwrap_or_else(|e| panic!("loading Tansu's schema into {url}: {e}"));
        pool.close().await;
        // TLS off: the local server has none.
        let storage = format!("{url}?sslmode=disable");
        Tansu::start_on(&storage)
    }

    /// Another broker on the same storage (brokers sharing a database are one cluster).
    pub fn start_on(storage: &str) -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let address = format!("127.0.0.1:{port}");
        let listener = format!("tcp://{address}");
        let child = std::process::Command::new(tansu_binary())
            .args(["broker", "--listener-url", &listener, "--advertised-listener-url", &listener])
            .args(["--storage-engine", storage])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", tansu_binary().display()));
        let tansu = Tansu { address, storage: storage.to_string(), child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(&tansu.address).is_err() {
            assert!(std::time::Instant::now() < deadline, "Tansu did not listen on {} within 30 s", tansu.address);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        tansu
    }

    /// `kafka://host:port`, as `weir up --bus` takes it.
    pub fn bus_url(&self) -> String {
        format!("kafka://{}", self.address)
    }

    /// Kills the broker at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
