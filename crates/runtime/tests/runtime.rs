//! The runtime as systems use it, on the embedded bus, with SQL tests run on both SQLite and PostgreSQL: retries,
//! dead letters, exactly-once sinks, dedupe by event id, the outbox, and the key-value stores (Redis included).

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Row;
use support::Db;
use weir_broker::testing::open_broker;
use weir_runtime::handler::{dlq_headers, EVENT_ID_HEADER};
use weir_runtime::kv::{JournalKv, JournalOptions, KvStore, MemoryKv, RedisKv, SqlKv};
use weir_runtime::outbox::{self, OutboxEvent, Relay};
use weir_runtime::{
    Bus, EmbeddedBus, Handler, HandlerError, Message, OutgoingMessage, Runner, RunnerConfig, SqlHandler, SqlStore,
    SqlTx, SubscribeOptions,
};

/// Resolves once `sink` holds `n` rows (or panics after a minute).
async fn until_rows(store: SqlStore, n: i64) {
    for _ in 0..600 {
        let got: i64 = sqlx::query("SELECT COUNT(*) FROM sink").fetch_one(store.pool()).await.unwrap().get(0);
        if got >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sink never reached {n} rows");
}

async fn produce(bus: &EmbeddedBus, topic: &str, values: impl IntoIterator<Item = String>) {
    let msgs = values.into_iter().map(|v| OutgoingMessage::new(topic, v)).collect();
    bus.produce_all(msgs).await.unwrap();
}

async fn read_all(bus: &EmbeddedBus, topic: &str, n: usize) -> Vec<Message> {
    let mut sub =
        bus.subscribe(SubscribeOptions::new(format!("reader-{}", rand::random::<u32>()), [topic])).await.unwrap();
    let mut out = Vec::new();
    for _ in 0..100 {
        out.extend(sub.next_batch(Duration::from_millis(200)).await.unwrap());
        if out.len() >= n {
            break;
        }
    }
    out
}

/// Fails every record whose value is in `poison`, and the others' first `flaky` attempts.
struct Flaky {
    poison: Vec<String>,
    flaky: u32,
    attempts: AtomicU32,
}

impl Flaky {
    fn check(&self, m: &Message) -> Result<(), HandlerError> {
        let v = String::from_utf8_lossy(m.value.as_deref().unwrap_or_default()).into_owned();
        if self.poison.contains(&v) {
            return Err(HandlerError::Retryable(format!("cannot handle {v}")));
        }
        if self.attempts.fetch_add(1, Ordering::SeqCst) < self.flaky {
            return Err(HandlerError::Retryable("briefly unavailable".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl SqlHandler for Flaky {
    async fn handle(&self, m: &Message, tx: &mut SqlTx) -> Result<(), HandlerError> {
        // Write first, then fail: the savepoint must undo the write of a failed attempt.
        let v = String::from_utf8_lossy(m.value.as_deref().unwrap_or_default()).into_owned();
        sqlx::query("INSERT INTO sink (v) VALUES ($1)").bind(&v).execute(&mut **tx).await?;
        self.check(m)
    }
}

#[async_trait]
impl Handler for Flaky {
    async fn handle(&self, m: &Message) -> Result<(), HandlerError> {
        self.check(m)
    }
}

fn fast_retries(config: &mut RunnerConfig) {
    config.max_attempts = 3;
    config.backoff_initial = Duration::from_millis(5);
    config.backoff_max = Duration::from_millis(20);
}

async fn poison_is_dead_lettered_while_its_partition_flows(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    b.create_topic("payments", 1, BTreeMap::new()).unwrap();
    let bus = EmbeddedBus::new(b.clone());
    produce(&bus, "payments", (0..100).map(|i| format!("p{i}"))).await;
    let store = SqlStore::connect(&db.url(dir.path()).await).await.unwrap();
    sqlx::query("CREATE TABLE sink (v TEXT NOT NULL)").execute(store.pool()).await.unwrap();

    let mut config = RunnerConfig::new("billing", ["payments"]);
    fast_retries(&mut config);
    let handler = Flaky { poison: vec!["p37".into()], flaky: 2, attempts: AtomicU32::new(0) };
    let runner = Runner::exactly_once(Arc::new(bus.clone()), config, store.clone(), handler);
    let stats = runner.run(until_rows(store.clone(), 99)).await.unwrap();
    assert_eq!((stats.dead_lettered, stats.processed), (1, 100), "{stats:?}");
    // The flaky handler fails its first two calls; the first of them only sends the batch down the careful path.
    assert!(stats.retried >= 3, "a flaky retry and two of the poison record: {stats:?}");

    let rows: Vec<String> =
        sqlx::query("SELECT v FROM sink").fetch_all(store.pool()).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(rows.len(), 99, "failed attempts' writes were rolled back");
    assert!(
        !rows.contains(&"p37".to_string()) && rows.contains(&"p38".to_string()) && rows.contains(&"p99".to_string())
    );
    let offsets = store.consumer_offsets("billing").await.unwrap();
    assert_eq!(offsets, vec![("payments".to_string(), 0, 100)]);

    let dlq = read_all(&bus, "payments.dlq", 1).await;
    assert_eq!(dlq.len(), 1);
    let h = |k: &str| String::from_utf8_lossy(dlq[0].header(k).unwrap()).into_owned();
    assert_eq!(dlq[0].value.as_deref(), Some(&b"p37"[..]));
    assert_eq!(
        (h(dlq_headers::TOPIC), h(dlq_headers::PARTITION), h(dlq_headers::OFFSET)),
        ("payments".into(), "0".into(), "37".into())
    );
    assert_eq!(h(dlq_headers::ATTEMPTS), "3");
    assert!(h(dlq_headers::ERROR).contains("cannot handle p37"));
    assert!(h(dlq_headers::FIRST_FAILURE_MS).parse::<i64>().unwrap() > 0);
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_while_its_partition_flows_sqlite() {
    poison_is_dead_lettered_while_its_partition_flows(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_while_its_partition_flows_postgres() {
    poison_is_dead_lettered_while_its_partition_flows(Db::Postgres).await;
}

/// A handler taking whole batches (one multi-row statement): batches go through `handle_batch`; the batch holding a
/// poison record is redone record by record through `handle`, the poison dead-lettered alone, nothing written twice.
/// Over several partitions, SQLite's batches span them (one transaction for all), PostgreSQL's never do.
async fn batches_go_whole_and_a_failing_one_record_by_record(db: Db, partitions: i32) {
    struct Batched {
        batches: AtomicU32,
        singles: AtomicU32,
        /// The most partitions one `handle_batch` call held records of.
        widest: AtomicU32,
    }
    fn value(m: &Message) -> String {
        String::from_utf8_lossy(m.value.as_deref().unwrap_or_default()).into_owned()
    }
    #[async_trait]
    impl SqlHandler for Batched {
        async fn handle(&self, m: &Message, tx: &mut SqlTx) -> Result<(), HandlerError> {
            self.singles.fetch_add(1, Ordering::SeqCst);
            if value(m) == "p37" {
                return Err(HandlerError::Permanent("cannot handle p37".into()));
            }
            sqlx::query("INSERT INTO sink (v) VALUES ($1)").bind(value(m)).execute(&mut **tx).await?;
            Ok(())
        }

        async fn handle_batch(&self, messages: &[&Message], tx: &mut SqlTx) -> Option<Result<(), HandlerError>> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            let spanned: std::collections::HashSet<i32> = messages.iter().map(|m| m.partition).collect();
            self.widest.fetch_max(spanned.len() as u32, Ordering::SeqCst);
            for p in &spanned {
                let offsets: Vec<i64> = messages.iter().filter(|m| m.partition == *p).map(|m| m.offset).collect();
                assert!(offsets.windows(2).all(|w| w[0] < w[1]), "partition {p} out of order: {offsets:?}");
            }
            let values: Vec<String> = messages.iter().map(|m| value(m)).collect();
            let rows: Vec<String> = (1..=values.len()).map(|i| format!("(${i})")).collect();
            let sql = format!("INSERT INTO sink (v) VALUES {}", rows.join(", "));
            let mut q = sqlx::query(&sql);
            for v in &values {
                q = q.bind(v.clone());
            }
            // Written first, then refused: the batch's writes must not survive.
            if let Err(e) = q.execute(&mut **tx).await {
                return Some(Err(e.into()));
            }
            Some(if values.iter().any(|v| v == "p37") { Err(HandlerError::Permanent("p37".into())) } else { Ok(()) })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    b.create_topic("payments", partitions, BTreeMap::new()).unwrap();
    let bus = EmbeddedBus::new(b.clone());
    let store = SqlStore::connect(&db.url(dir.path()).await).await.unwrap();
    sqlx::query("CREATE TABLE sink (v TEXT NOT NULL)").execute(store.pool()).await.unwrap();
    let mut config = RunnerConfig::new("billing", ["payments"]);
    config.batch_size = 10;
    fast_retries(&mut config);
    let handler =
        Arc::new(Batched { batches: AtomicU32::new(0), singles: AtomicU32::new(0), widest: AtomicU32::new(0) });
    struct Shared(Arc<Batched>);
    #[async_trait]
    impl SqlHandler for Shared {
        async fn handle(&self, m: &Message, tx: &mut SqlTx) -> Result<(), HandlerError> {
            self.0.handle(m, tx).await
        }
        async fn handle_batch(&self, messages: &[&Message], tx: &mut SqlTx) -> Option<Result<(), HandlerError>> {
            self.0.handle_batch(messages, tx).await
        }
    }
    let msgs = (0..100)
        .map(|i| OutgoingMessage {
            partition: Some(i % partitions),
            ..OutgoingMessage::new("payments", format!("p{i}"))
        })
        .collect();
    bus.produce_all(msgs).await.unwrap();
    let runner = Runner::exactly_once(Arc::new(bus.clone()), config, store.clone(), Shared(handler.clone()));
    let stats = runner.run(until_rows(store.clone(), 99)).await.unwrap();
    assert_eq!((stats.dead_lettered, stats.processed), (1, 100), "{stats:?}");
    let rows: Vec<String> =
        sqlx::query("SELECT v FROM sink").fetch_all(store.pool()).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(rows.len(), 99, "{db:?}: the failed batch's writes rolled back, its other records written once");
    assert!(!rows.contains(&"p37".to_string()));
    let (batches, singles) = (handler.batches.load(Ordering::SeqCst), handler.singles.load(Ordering::SeqCst));
    assert!(batches >= 10, "{db:?}: whole batches ({batches})");
    assert!(singles < 100, "{db:?}: only the failing batch record by record ({singles})");
    let dlq = read_all(&bus, "payments.dlq", 1).await;
    assert_eq!(dlq.iter().map(|m| m.value.as_deref()).collect::<Vec<_>>(), [Some(&b"p37"[..])]);
    let mut offsets = store.consumer_offsets("billing").await.unwrap();
    offsets.sort();
    let expected: Vec<(String, i32, i64)> = (0..partitions)
        .map(|p| ("payments".to_string(), p, (100 + partitions - 1 - p) as i64 / partitions as i64))
        .collect();
    assert_eq!(offsets, expected, "{db:?}: every partition's offset past its records");
    let widest = handler.widest.load(Ordering::SeqCst);
    match (db, partitions) {
        (Db::Sqlite, 3) => assert!(widest > 1, "SQLite: batches of several partitions in one transaction ({widest})"),
        _ => assert_eq!(widest, 1, "{db:?}, {partitions} partition(s): a batch per partition"),
    }
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_go_whole_and_a_failing_one_record_by_record_sqlite() {
    batches_go_whole_and_a_failing_one_record_by_record(Db::Sqlite, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_go_whole_and_a_failing_one_record_by_record_postgres() {
    batches_go_whole_and_a_failing_one_record_by_record(Db::Postgres, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_several_partitions_go_whole_and_a_failing_one_record_by_record_sqlite() {
    batches_go_whole_and_a_failing_one_record_by_record(Db::Sqlite, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_several_partitions_go_whole_and_a_failing_one_record_by_record_postgres() {
    batches_go_whole_and_a_failing_one_record_by_record(Db::Postgres, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_retries_dead_letters_permanent_errors_and_commits() {
    struct Picky(AtomicU32);
    #[async_trait]
    impl Handler for Picky {
        async fn handle(&self, m: &Message) -> Result<(), HandlerError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            match m.value.as_deref() {
                Some(b"bad") => Err(HandlerError::Permanent("unparseable".into())),
                _ => Ok(()),
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path());
    b.create_topic("orders", 3, BTreeMap::new()).unwrap();
    let bus = EmbeddedBus::new(b.clone());
    let mut values: Vec<String> = (0..300).map(|i| format!("o{i}")).collect();
    values.insert(150, "bad".into());
    produce(&bus, "orders", values).await;
    let handler = Picky(AtomicU32::new(0));
    let calls = Arc::new(handler);
    struct Shared(Arc<Picky>);
    #[async_trait]
    impl Handler for Shared {
        async fn handle(&self, m: &Message) -> Result<(), HandlerError> {
            self.0.handle(m).await
        }
    }
    let runner =
        Runner::at_least_once(Arc::new(bus.clone()), RunnerConfig::new("g", ["orders"]), Shared(calls.clone()));
    let done = {
        let b = b.clone();
        async move {
            while b
                .describe_group("g")
                .map(|d| d.offsets.iter().filter_map(|o| o.lag).sum::<i64>() != 0 || d.offsets.len() < 3)
                .unwrap_or(true)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let stats = runner.run(done).await.unwrap();
    assert_eq!((stats.processed, stats.dead_lettered, stats.retried), (301, 1, 0), "a permanent error is not retried");
    assert_eq!(calls.0.load(Ordering::SeqCst), 301);
    assert_eq!(read_all(&bus, "orders.dlq", 1).await[0].value.as_deref(), Some(&b"bad"[..]));
    b.shutdown();
}

async fn dedupe_handles_an_event_published_twice_once(db: Db) {
    struct Count;
    #[async_trait]
    impl SqlHandler for Count {
        async fn handle(&self, m: &Message, tx: &mut SqlTx) -> Result<(), HandlerError> {
            let v = String::from_utf8_lossy(m.value.as_deref().unwrap_or_default()).into_owned();
            sqlx::query("INSERT INTO sink (v) VALUES ($1)").bind(v).execute(&mut **tx).await?;
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    let bus = EmbeddedBus::new(b.clone());
    b.create_topic("events", 2, BTreeMap::new()).unwrap();
    let mut msgs = Vec::new();
    for i in 0..50 {
        for _ in 0..2 {
            // The same event twice (a producer retry, an outbox relay restart), keyed so both land in one partition.
            msgs.push(
                OutgoingMessage::new("events", format!("e{i}"))
                    .key(format!("k{i}"))
                    .header(EVENT_ID_HEADER, format!("id-{i}")),
            );
        }
    }
    bus.produce_all(msgs).await.unwrap();
    let store = SqlStore::connect(&db.url(dir.path()).await).await.unwrap();
    sqlx::query("CREATE TABLE sink (v TEXT NOT NULL)").execute(store.pool()).await.unwrap();
    let mut config = RunnerConfig::new("dedupe", ["events"]);
    config.dedupe = true;
    let runner = Runner::exactly_once(Arc::new(bus), config, store.clone(), Count);
    let done = {
        let store = store.clone();
        async move {
            loop {
                let offsets = store.consumer_offsets("dedupe").await.unwrap();
                if offsets.iter().map(|(_, _, o)| o).sum::<i64>() == 100 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let stats = runner.run(done).await.unwrap();
    assert_eq!(stats.skipped_duplicates, 50, "{stats:?}");
    let (n, distinct): (i64, i64) = {
        let r = sqlx::query("SELECT COUNT(*), COUNT(DISTINCT v) FROM sink").fetch_one(store.pool()).await.unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((n, distinct), (50, 50));
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_handles_an_event_published_twice_once_sqlite() {
    dedupe_handles_an_event_published_twice_once(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_handles_an_event_published_twice_once_postgres() {
    dedupe_handles_an_event_published_twice_once(Db::Postgres).await;
}

async fn the_outbox_publishes_committed_events_in_order_with_their_ids(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    let bus = EmbeddedBus::new(b.clone());
    b.create_topic("tickets", 1, BTreeMap::new()).unwrap();
    let store = SqlStore::connect(&db.url(dir.path()).await).await.unwrap();
    sqlx::query("CREATE TABLE tickets (id TEXT NOT NULL)").execute(store.pool()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..30 {
        // The system's own state and its event, in one transaction.
        let mut tx = store.begin().await.unwrap();
        sqlx::query("INSERT INTO tickets (id) VALUES ($1)").bind(format!("t{i}")).execute(&mut *tx).await.unwrap();
        let event = OutboxEvent {
            topic: "tickets".into(),
            payload: Some(format!("ticket_opened t{i}").into()),
            headers: vec![("type".into(), "ticket_opened".into())],
            ..Default::default()
        };
        ids.push(outbox::enqueue(&mut tx, store.dialect(), event).await.unwrap());
        tx.commit().await.unwrap();
    }
    // A rolled-back transaction's event is never published.
    let mut tx = store.begin().await.unwrap();
    outbox::enqueue(&mut tx, store.dialect(), OutboxEvent { topic: "tickets".into(), ..Default::default() })
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let mut relay = Relay::new(store.clone(), Arc::new(bus.clone()));
    relay.batch = 7;
    relay.poll_interval = Duration::from_millis(20);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async move {
        let _ = stop_rx.await;
    }));
    let got = read_all(&bus, "tickets", 30).await;
    // Events enqueued while the relay waits arrive too (woken by NOTIFY on PostgreSQL, by polling on SQLite).
    let mut tx = store.begin().await.unwrap();
    let late = outbox::enqueue(&mut tx, store.dialect(), OutboxEvent { topic: "tickets".into(), ..Default::default() })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut waited = 0;
    while b.offsets("tickets", 0).unwrap().1 < 31 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let _ = stop_tx.send(());
    assert_eq!(task.await.unwrap().unwrap(), 31);
    let published: Vec<String> =
        got.iter().map(|m| String::from_utf8_lossy(m.header(EVENT_ID_HEADER).unwrap()).into_owned()).collect();
    assert_eq!(published, ids, "every committed event, in order, with its id");
    assert_eq!(got[3].header("type").map(|v| &v[..]), Some(&b"ticket_opened"[..]));
    assert_eq!(b.offsets("tickets", 0).unwrap().1, 31, "the late event ({late}) too, and nothing else");
    assert_eq!(weir_runtime::outbox::unsent(&store).await.unwrap(), 0);
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_publishes_committed_events_in_order_with_their_ids_sqlite() {
    the_outbox_publishes_committed_events_in_order_with_their_ids(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_publishes_committed_events_in_order_with_their_ids_postgres() {
    the_outbox_publishes_committed_events_in_order_with_their_ids(Db::Postgres).await;
}

/// Events handed to the relay from memory ([`RelayWaker::committed`]) and events it must read from the table (one
/// enqueued without a hand-over, so a gap) come out once each, in commit order; on SQLite the handed ones are
/// published as handed, without reading the table back.
async fn handed_over_and_unhanded_outbox_events_are_published_once_each_in_order(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path().join("data"));
    let bus = EmbeddedBus::new(b.clone());
    b.create_topic("orders", 1, BTreeMap::new()).unwrap();
    let store = SqlStore::connect(&db.url(dir.path()).await).await.unwrap();
    let mut relay = Relay::new(store.clone(), Arc::new(bus.clone()));
    relay.batch = 10;
    let waker = relay.waker();
    let events = |n: usize, tag: &str| -> Vec<OutboxEvent> {
        (0..n)
            .map(|i| OutboxEvent {
                topic: "orders".into(),
                payload: Some(format!("{tag}{i}").into()),
                ..Default::default()
            })
            .collect()
    };
    let mut expected = Vec::new();
    // 70 rows: statements of 64, 4 and 2.
    let mut tx = store.begin().await.unwrap();
    let first = outbox::enqueue_all(&mut tx, store.dialect(), events(70, "a")).await.unwrap();
    tx.commit().await.unwrap();
    expected.extend(first.ids.clone());
    // Rewritten in the table after the commit: what SQLite's relay publishes shows which copy it read.
    sqlx::query("UPDATE weir_outbox SET payload = $1 WHERE event_id = $2")
        .bind(b"rewritten".to_vec())
        .bind(first.ids[0].clone())
        .execute(store.pool())
        .await
        .unwrap();
    waker.committed(first);
    // A row nobody hands over: the relay has to find it in the table.
    let mut tx = store.begin().await.unwrap();
    expected.push(outbox::enqueue(&mut tx, store.dialect(), events(1, "b").remove(0)).await.unwrap());
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let third = outbox::enqueue_all(&mut tx, store.dialect(), events(5, "c")).await.unwrap();
    tx.commit().await.unwrap();
    expected.extend(third.ids.clone());
    waker.committed(third);
    // Rolled back: never published, though its statements ran.
    let mut tx = store.begin().await.unwrap();
    let dropped = outbox::enqueue_all(&mut tx, store.dialect(), events(3, "d")).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(dropped.ids.len(), 3);

    let mut total = 0;
    loop {
        let n = relay.relay_once().await.unwrap();
        assert!(n <= 10, "a round publishes at most its batch");
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 76);
    let got = read_all(&bus, "orders", 76).await;
    let published: Vec<String> =
        got.iter().map(|m| String::from_utf8_lossy(m.header(EVENT_ID_HEADER).unwrap()).into_owned()).collect();
    assert_eq!(published, expected, "each committed event once, in commit order");
    // The row after the gap, and the handed-over ones behind it that the same round read from the table.
    assert_eq!(got[70].value.as_deref(), Some(&b"b0"[..]));
    assert_eq!(got[71].value.as_deref(), Some(&b"c0"[..]));
    let a0 = got[0].value.as_deref().unwrap();
    match db {
        Db::Sqlite => assert_eq!(a0, b"a0", "SQLite's relay publishes the handed-over message"),
        Db::Postgres => assert_eq!(a0, b"rewritten", "PostgreSQL's relays read the table"),
    }
    assert_eq!(b.offsets("orders", 0).unwrap().1, 76, "nothing published twice");
    assert_eq!(weir_runtime::outbox::unsent(&store).await.unwrap(), 0);
    b.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_over_and_unhanded_outbox_events_are_published_once_each_in_order_sqlite() {
    handed_over_and_unhanded_outbox_events_are_published_once_each_in_order(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_over_and_unhanded_outbox_events_are_published_once_each_in_order_postgres() {
    handed_over_and_unhanded_outbox_events_are_published_once_each_in_order(Db::Postgres).await;
}

async fn kv_contract(kv: &dyn KvStore) {
    let k = format!("session-{}", rand::random::<u32>());
    assert_eq!(kv.get(&k).await.unwrap(), None);
    kv.set(&k, b"alice", None).await.unwrap();
    assert_eq!(kv.get(&k).await.unwrap().as_deref(), Some(&b"alice"[..]));
    kv.set(&k, b"bob", Some(Duration::from_millis(300))).await.unwrap();
    assert_eq!(kv.get(&k).await.unwrap().as_deref(), Some(&b"bob"[..]));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(kv.get(&k).await.unwrap(), None, "expired");
    let c = format!("counter-{}", rand::random::<u32>());
    assert_eq!(kv.incr(&c, 2).await.unwrap(), 2);
    assert_eq!(kv.incr(&c, 40).await.unwrap(), 42);
    assert!(kv.delete(&c).await.unwrap());
    assert!(!kv.delete(&c).await.unwrap());
    kv.set(&c, b"x", None).await.unwrap();
    assert!(kv.incr(&c, 1).await.is_err(), "not an integer");

    let h = format!("hash-{}", rand::random::<u32>());
    assert!(kv.hgetall(&h).await.unwrap().is_empty());
    kv.hset(&h, &[]).await.unwrap();
    kv.hset(&h, &[("alice".into(), b"1".to_vec()), ("bob".into(), b"2".to_vec())]).await.unwrap();
    kv.hset(&h, &[("alice".into(), b"3".to_vec())]).await.unwrap();
    let mut all = kv.hgetall(&h).await.unwrap();
    all.sort();
    assert_eq!(all, [("alice".to_string(), Bytes::from_static(b"3")), ("bob".to_string(), Bytes::from_static(b"2"))]);
    assert!(!kv.hdel_if(&h, "alice", Some(b"1")).await.unwrap(), "rewritten since: kept");
    assert!(kv.hdel_if(&h, "alice", Some(b"3")).await.unwrap());
    assert!(!kv.hdel_if(&h, "alice", None).await.unwrap(), "gone");
    assert!(kv.hdel_if(&h, "bob", None).await.unwrap());
    assert!(kv.hgetall(&h).await.unwrap().is_empty());

    // Several keys in one write.
    let many: Vec<(String, Vec<u8>, Option<Duration>)> = (0..3)
        .map(|i| (format!("{k}-many-{i}"), format!("v{i}").into_bytes(), Some(Duration::from_secs(60))))
        .collect();
    kv.set_many(&many).await.unwrap();
    kv.set_many(&[]).await.unwrap();
    for (key, value, _) in &many {
        assert_eq!(kv.get(key).await.unwrap().as_deref(), Some(value.as_slice()));
    }

    // Leases: the first to set holds it until it expires; only its holder renews it.
    let l = format!("lease-{}", rand::random::<u32>());
    assert!(kv.set_nx(&l, b"a", Some(Duration::from_millis(400))).await.unwrap());
    assert!(!kv.set_nx(&l, b"b", Some(Duration::from_millis(400))).await.unwrap(), "held by a");
    assert!(!kv.set_if(&l, b"b", b"b", Some(Duration::from_millis(400))).await.unwrap(), "b does not hold it");
    assert!(kv.set_if(&l, b"a", b"a", Some(Duration::from_millis(400))).await.unwrap(), "a renews");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!kv.set_if(&l, b"a", b"a", None).await.unwrap(), "expired: nothing to renew");
    assert!(kv.set_nx(&l, b"b", None).await.unwrap(), "expired: b takes it");
    assert_eq!(kv.get(&l).await.unwrap().as_deref(), Some(&b"b"[..]));

    // Sorted sets: by score, then by member.
    let (q, p) = (format!("queue-{}", rand::random::<u32>()), format!("processing-{}", rand::random::<u32>()));
    assert_eq!((kv.zcard(&q).await.unwrap(), kv.zrank(&q, "x").await.unwrap()), (0, None));
    let big = 10i64 << 40;
    for (m, s) in [("c", 5), ("a", 7), ("b", 5), ("vip", -3), ("late", big + 1)] {
        assert!(kv.zadd_nx(&q, m, s).await.unwrap());
    }
    assert!(!kv.zadd_nx(&q, "a", 1).await.unwrap(), "already there: unchanged");
    assert_eq!(kv.zscore(&q, "a").await.unwrap(), Some(7));
    assert_eq!(kv.zscore(&q, "late").await.unwrap(), Some(big + 1), "exact above 2^40");
    let ranks = [kv.zrank(&q, "vip"), kv.zrank(&q, "b"), kv.zrank(&q, "c"), kv.zrank(&q, "a"), kv.zrank(&q, "late")];
    let mut got = Vec::new();
    for r in ranks {
        got.push(r.await.unwrap());
    }
    assert_eq!(got, [Some(0), Some(1), Some(2), Some(3), Some(4)]);
    assert_eq!(kv.zcard(&q).await.unwrap(), 5);
    assert_eq!(kv.zrange_upto(&q, 5, 10).await.unwrap(), [("vip".into(), -3), ("b".into(), 5), ("c".into(), 5)]);
    assert_eq!(kv.zrange_upto(&q, 5, 1).await.unwrap(), [("vip".to_string(), -3)]);
    // Moves take the lowest, no more than the target has room for.
    assert_eq!(kv.zmove_min(&q, &p, 2, 3, 100).await.unwrap(), [("vip".into(), -3), ("b".into(), 5)]);
    assert_eq!(kv.zmove_min(&q, &p, 5, 3, 200).await.unwrap(), [("c".to_string(), 5)], "room for one");
    assert!(kv.zmove_min(&q, &p, 5, 3, 300).await.unwrap().is_empty(), "full");
    assert_eq!((kv.zcard(&q).await.unwrap(), kv.zcard(&p).await.unwrap()), (2, 3));
    assert_eq!((kv.zscore(&p, "b").await.unwrap(), kv.zscore(&p, "c").await.unwrap()), (Some(100), Some(200)));
    assert_eq!(kv.zrank(&q, "a").await.unwrap(), Some(0));
    assert!(kv.zrem(&p, "b").await.unwrap());
    assert!(!kv.zrem(&p, "b").await.unwrap(), "removed once");
    assert_eq!(kv.zmove_min(&q, &p, 5, 4, 400).await.unwrap(), [("a".into(), 7), ("late".into(), big + 1)]);
    assert!(kv.zmove_min(&q, &p, 5, 10, 400).await.unwrap().is_empty(), "nothing left to move");
}

#[tokio::test]
async fn key_value_stores_share_one_contract() {
    kv_contract(&MemoryKv::default()).await;
    let dir = tempfile::tempdir().unwrap();
    kv_contract(&JournalKv::open(dir.path().join("kv"), JournalOptions::default()).unwrap()).await;
    let sqlite = SqlStore::connect(&Db::Sqlite.url(dir.path()).await).await.unwrap();
    kv_contract(&SqlKv::new(sqlite.clone())).await;
    let postgres = SqlStore::connect(&Db::Postgres.url(dir.path()).await).await.unwrap();
    kv_contract(&SqlKv::new(postgres)).await;
    let url = std::env::var("WEIR_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let redis = RedisKv::connect(&url, format!("weir-test-{}:", rand::random::<u32>()))
        .await
        .unwrap_or_else(|e| panic!("Redis is required at {url} (run scripts/test.sh, which starts it): {e}"));
    kv_contract(&redis).await;

    // The SQLite-backed store survives a restart.
    SqlKv::new(sqlite).set("kept", b"yes", None).await.unwrap();
    let reopened = SqlStore::connect(&Db::Sqlite.url(dir.path()).await).await.unwrap();
    assert_eq!(SqlKv::new(reopened).get("kept").await.unwrap().as_deref(), Some(&b"yes"[..]));
}

/// A stop lets the batch in hand finish and commit; a handler stuck past the shutdown deadline is abandoned, its
/// record left uncommitted for redelivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_finishes_the_batch_within_the_deadline() {
    struct Slow;
    #[async_trait]
    impl Handler for Slow {
        async fn handle(&self, m: &Message) -> Result<(), HandlerError> {
            let stuck = m.value.as_deref() == Some(&b"stuck"[..]);
            tokio::time::sleep(if stuck { Duration::from_secs(600) } else { Duration::from_millis(300) }).await;
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path());
    b.create_topic("slow", 1, BTreeMap::new()).unwrap();
    let bus = EmbeddedBus::new(b.clone());
    produce(&bus, "slow", ["a".to_string()]).await;
    let mut config = RunnerConfig::new("g", ["slow"]);
    config.shutdown_deadline = Duration::from_secs(2);
    let stop = async { tokio::time::sleep(Duration::from_millis(150)).await };
    let stats = Runner::at_least_once(Arc::new(bus.clone()), config.clone(), Slow).run(stop).await.unwrap();
    assert_eq!(stats.processed, 1, "the record in hand when the stop came was finished");
    assert_eq!(b.describe_group("g").unwrap().offsets[0].committed, Some(1), "and committed");

    produce(&bus, "slow", ["stuck".to_string()]).await;
    let started = std::time::Instant::now();
    let stop = async { tokio::time::sleep(Duration::from_millis(300)).await };
    let stats = Runner::at_least_once(Arc::new(bus), config, Slow).run(stop).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "stopped within the deadline: {:?}", started.elapsed());
    assert_eq!(stats.processed, 0);
    assert_eq!(b.describe_group("g").unwrap().offsets[0].committed, Some(1), "the stuck record stays uncommitted");
    b.shutdown();
}

/// Exactly-once offsets move by compare-and-set: a consumer that handled records from a position another consumer
/// of the group has already committed past (a second instance, around a rebalance) is refused, and two transactions
/// racing from one position are ordered by the row's lock, the second refused once the first commits.
async fn offsets_move_by_compare_and_set(db: Db) {
    use weir_runtime::sql::advance_offset;
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&db.url(dir.path()).await).await.unwrap();
    let advance = |from: i64, next: i64| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let moved = advance_offset(&mut tx, "g", "t", 0, from, next).await.unwrap();
            if moved {
                tx.commit().await.unwrap();
            }
            moved
        }
    };
    assert!(advance(0, 10).await, "the group's first commit");
    assert!(!advance(0, 5).await, "a consumer still at 0 is behind the database");
    assert!(advance(10, 20).await);
    if matches!(db, Db::Postgres) {
        let mut first = store.begin().await.unwrap();
        assert!(advance_offset(&mut first, "g", "t", 0, 20, 30).await.unwrap());
        let second = tokio::spawn(advance(20, 25));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "the second waits for the first's row lock");
        first.commit().await.unwrap();
        assert!(!second.await.unwrap(), "and is refused once the first has committed");
    } else {
        assert!(advance(20, 30).await);
    }
    assert_eq!(store.consumer_offsets("g").await.unwrap(), vec![("t".to_string(), 0, 30)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_move_by_compare_and_set_sqlite() {
    offsets_move_by_compare_and_set(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_move_by_compare_and_set_postgres() {
    offsets_move_by_compare_and_set(Db::Postgres).await;
}

/// Concurrent moves out of one sorted set never take a member twice and never fill the target past its cap, on
/// each store that several processes share (PostgreSQL, Redis) and on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sorted_set_moves_take_each_member_once_within_the_cap() {
    async fn check(kv: Arc<dyn KvStore>) {
        let (q, p) = (format!("q-{}", rand::random::<u32>()), format!("p-{}", rand::random::<u32>()));
        for i in 0..200 {
            kv.zadd_nx(&q, &format!("m{i:03}"), i).await.unwrap();
        }
        let movers: Vec<_> = (0..8)
            .map(|_| {
                let (kv, q, p) = (kv.clone(), q.clone(), p.clone());
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let moved = kv.zmove_min(&q, &p, 7, 150, 1).await.unwrap();
                        if moved.is_empty() {
                            return mine;
                        }
                        mine.extend(moved.into_iter().map(|(m, _)| m));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for m in movers {
            all.extend(m.await.unwrap());
        }
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!((before, all.len()), (150, 150), "each member moved once, 150 in all");
        assert_eq!(all.last().map(String::as_str), Some("m149"), "the lowest went first");
        assert_eq!((kv.zcard(&q).await.unwrap(), kv.zcard(&p).await.unwrap()), (50, 150));
    }
    let dir = tempfile::tempdir().unwrap();
    check(Arc::new(SqlKv::new(SqlStore::connect(&Db::Sqlite.url(dir.path()).await).await.unwrap()))).await;
    check(Arc::new(SqlKv::new(SqlStore::connect(&Db::Postgres.url(dir.path()).await).await.unwrap()))).await;
    let url = std::env::var("WEIR_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    check(Arc::new(RedisKv::connect(&url, format!("weir-test-{}:", rand::random::<u32>())).await.unwrap())).await;
    check(Arc::new(MemoryKv::default())).await;
    check(Arc::new(JournalKv::open(dir.path().join("kv"), JournalOptions::default()).unwrap())).await;
}
