//! Transactions survive `kill -9` of weir. A child process runs weir's broker and listener with an rdkafka
//! transactional producer inside, committing transactions of ten records over two partitions, and is killed with
//! SIGKILL mid-work again and again (a kill can land anywhere: mid-produce, between the coordinator's decision and its
//! markers, between markers). Afterwards, under read_committed every attempt of every transaction shows all its records
//! or none, every transaction the producer saw committed is there, and no partition's last stable offset is stuck.
//! Then a child is killed with a transaction open, and weir restarted on its data aborts it once its timeout passes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use weir_broker::testing::{broker_config, crash, read_committed};
use weir_kafka::{BackgroundBroker, ListenerConfig};

const CHILD: &str = "WEIR_TXN_CRASH_CHILD";
const TRANSACTIONS: i64 = 60;
const RECORDS_PER_TXN: usize = 10;
const TOPIC: &str = "crash";

fn acked_path(dir: &Path) -> PathBuf {
    dir.join("acked")
}

fn acked(dir: &Path) -> Vec<i64> {
    std::fs::read_to_string(acked_path(dir)).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect()
}

fn producer(addr: &str, timeout_ms: u32) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("transactional.id", "crash-tx")
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("linger.ms", "1")
        .create()
        .expect("a transactional producer")
}

/// The child: weir on `dir/data` and a producer committing the transactions not yet acknowledged (or, with `open`,
/// one transaction left open, announced by the file `dir/open`, before waiting to be killed).
fn child(dir: &Path, open: bool) {
    let w =
        BackgroundBroker::start(broker_config(dir.join("data")), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
            .unwrap();
    match w.broker.create_topic(TOPIC, 2, Default::default()) {
        Ok(_) | Err(weir_broker::BrokerError::TopicExists(_)) => {}
        Err(e) => panic!("{e}"),
    }
    let attempt: u64 = rand::random();
    let p = producer(&w.addr.to_string(), if open { 2000 } else { 60_000 });
    p.init_transactions(Duration::from_secs(30)).expect("init_transactions");
    let send = |k: i64| {
        for i in 0..RECORDS_PER_TXN {
            let value = format!("{k}-{attempt}-{i}");
            p.send(BaseRecord::<(), _>::to(TOPIC).partition((i % 2) as i32).payload(&value)).expect("queued");
        }
    };
    if open {
        p.begin_transaction().unwrap();
        send(-1);
        p.flush(Duration::from_secs(10)).unwrap();
        std::fs::write(dir.join("open"), b"").unwrap();
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(acked_path(dir)).unwrap();
    let from = acked(dir).last().map_or(0, |k| k + 1);
    for k in from..TRANSACTIONS {
        p.begin_transaction().unwrap();
        send(k);
        p.commit_transaction(Duration::from_secs(30)).expect("commit_transaction");
        writeln!(log, "{k}").unwrap();
        log.sync_data().unwrap();
    }
}

/// Records a read_committed reader sees, by (transaction, attempt of it).
type Seen = BTreeMap<(i64, u64), usize>;

/// What a read_committed reader sees, and each partition's (last stable offset, end offset).
fn committed_view(data: &Path) -> (Seen, Vec<(i64, i64)>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let broker = weir_broker::Broker::open(broker_config(data)).unwrap();
        // A transaction left open is aborted by the coordinator once its timeout passes.
        let deadline = Instant::now() + Duration::from_secs(20);
        let stable = |b: &weir_broker::Broker| {
            (0..2)
                .map(|p| (b.last_stable_offset(TOPIC, p).unwrap(), b.offsets(TOPIC, p).unwrap().1))
                .collect::<Vec<_>>()
        };
        while stable(&broker).iter().any(|(lso, end)| lso < end) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let offsets = stable(&broker);
        let mut seen = BTreeMap::new();
        for r in read_committed(&broker, TOPIC).await {
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            // "{k}-{attempt}-{i}", k possibly -1.
            let mut parts = value.rsplitn(3, '-').skip(1);
            let attempt: u64 = parts.next().unwrap().parse().unwrap();
            let k: i64 = parts.next().unwrap().parse().unwrap();
            *seen.entry((k, attempt)).or_insert(0) += 1;
        }
        broker.shutdown();
        (seen, offsets)
    })
}

#[test]
fn transactions_survive_kill_9_of_weir() {
    if let Some(dir) = std::env::var_os(CHILD) {
        let dir = PathBuf::from(dir);
        child(&dir, dir.join("leave-open").exists());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let spawn = || crash::rerun_test("transactions_survive_kill_9_of_weir", CHILD, &path).spawn().unwrap();
    crash::kill_and_restart("weir with a transactional producer", 5, TRANSACTIONS, spawn, || acked(&path).len() as i64);

    let (seen, offsets) = committed_view(&path.join("data"));
    for (lso, end) in &offsets {
        assert_eq!(lso, end, "a last stable offset is stuck: {offsets:?}");
    }
    for ((k, attempt), n) in &seen {
        assert_eq!(*n, RECORDS_PER_TXN, "transaction {k} (attempt {attempt}) is partly visible");
    }
    for k in acked(&path) {
        assert!(seen.keys().any(|(t, _)| *t == k), "transaction {k} was acknowledged as committed but is not visible");
    }
    assert_eq!(acked(&path), (0..TRANSACTIONS).collect::<Vec<_>>());

    // A transaction open when weir is killed: aborted after the restart, once its 2 s timeout passes.
    std::fs::write(path.join("leave-open"), b"").unwrap();
    let mut child = spawn();
    let started = Instant::now();
    while !path.join("open").exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the child never opened its transaction");
        assert!(child.try_wait().unwrap().is_none(), "the child exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (after, offsets) = committed_view(&path.join("data"));
    for (lso, end) in &offsets {
        assert_eq!(lso, end, "the open transaction was never aborted: {offsets:?}");
    }
    assert!(!after.keys().any(|(k, _)| *k == -1), "the open transaction's records became visible");
    assert_eq!(after, seen, "the committed transactions changed");
}
