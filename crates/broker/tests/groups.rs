//! Consumer groups under churn: members join, leave and crash while records flow. Afterwards nothing was skipped,
//! nothing committed was delivered again, and within a generation every partition had exactly one owner.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use weir_broker::testing::scratch_broker_with;
use weir_broker::{Broker, ConsumerConfig, ProduceRecord};

const PARTITIONS: i32 = 6;

#[derive(Debug, Clone)]
enum Event {
    /// A member saw this assignment in this generation.
    Owned {
        generation: i32,
        member: String,
        partitions: Vec<i32>,
    },
    Delivered {
        member: String,
        partition: i32,
        offset: i64,
    },
    /// A member committed `next` for a partition (everything below is done).
    Committed {
        partition: i32,
        next: i64,
    },
}

#[derive(Default)]
struct Journal {
    seq: AtomicU64,
    events: Mutex<Vec<(u64, Event)>>,
}

impl Journal {
    fn push(&self, e: Event) {
        let mut ev = self.events.lock();
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        ev.push((n, e));
    }
}

/// Polls and commits until `stop`; `crash` makes it vanish without leaving, as a killed process would.
async fn member(broker: Arc<Broker>, journal: Arc<Journal>, stop: Arc<AtomicBool>, crash: bool) {
    let mut config = ConsumerConfig::new(["churn"]).group("g");
    config.session_timeout = Duration::from_millis(1500);
    config.heartbeat_interval = Duration::from_millis(200);
    config.rebalance_timeout = Duration::from_secs(3);
    config.max_poll_records = 50;
    let mut c = broker.consumer(config).unwrap();
    while !stop.load(Ordering::Acquire) {
        let records = match c.poll(Duration::from_millis(100)).await {
            Ok(r) => r,
            Err(e) => panic!("poll failed: {e}"),
        };
        let id = c.member_id().unwrap_or_default().to_string();
        if let Some(generation) = c.generation() {
            let partitions = c.assignment().into_iter().map(|(_, p)| p).collect();
            journal.push(Event::Owned { generation, member: id.clone(), partitions });
        }
        for r in &records {
            journal.push(Event::Delivered { member: id.clone(), partition: r.partition, offset: r.offset });
        }
        let positions: Vec<(i32, i64)> =
            c.assignment().into_iter().filter_map(|(t, p)| c.position(&t, p).map(|o| (p, o))).collect();
        if c.commit().await.is_ok() {
            for (partition, next) in positions {
                journal.push(Event::Committed { partition, next });
            }
        }
    }
    if crash {
        std::mem::forget(c); // no leave, no more heartbeats
    } else {
        c.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_skips_nothing_and_each_partition_has_one_owner_per_generation() {
    let (_dir, broker) = scratch_broker_with(|config| config.group.session_timeout_min_ms = 100);
    broker.create_topic("churn", PARTITIONS, BTreeMap::new()).unwrap();
    let journal = Arc::new(Journal::default());

    let producing = {
        let p = broker.producer();
        tokio::spawn(async move {
            for i in 0..6000u32 {
                p.send(ProduceRecord::new("churn", i.to_string()).with_key(i.to_string())).await.unwrap();
                if i % 200 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };

    let spawn = |crash: bool| {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(member(broker.clone(), journal.clone(), stop.clone(), crash));
        (stop, task)
    };
    let (stop_a, a) = spawn(false);
    let (stop_b, b) = spawn(true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (stop_c, c) = spawn(false);
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop_a.store(true, Ordering::Release); // leaves cleanly
    a.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_b.store(true, Ordering::Release); // crashes: expelled after its session timeout
    b.await.unwrap();
    let (stop_d, d) = spawn(false);
    producing.await.unwrap();

    // Let the survivors drain and commit everything.
    let ends: Vec<i64> = (0..PARTITIONS).map(|p| broker.offsets("churn", p).unwrap().1).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let committed = broker.describe_group("g").unwrap();
        let done = committed.offsets.iter().filter(|o| o.committed == Some(ends[o.partition as usize])).count();
        if done == PARTITIONS as usize {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "group never caught up: {:?}", committed.offsets);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_c.store(true, Ordering::Release);
    stop_d.store(true, Ordering::Release);
    c.await.unwrap();
    d.await.unwrap();

    let events = journal.events.lock().clone();
    // 1. Within a generation, each partition has exactly one owner.
    let mut owners: HashMap<(i32, i32), HashSet<String>> = HashMap::new();
    for (_, e) in &events {
        if let Event::Owned { generation, member, partitions } = e {
            for p in partitions {
                owners.entry((*generation, *p)).or_default().insert(member.clone());
            }
        }
    }
    for ((generation, p), members) in &owners {
        assert_eq!(members.len(), 1, "partition {p} had owners {members:?} in generation {generation}");
    }
    let generations: HashSet<i32> = owners.keys().map(|(g, _)| *g).collect();
    assert!(generations.len() >= 3, "expected several rebalances, saw generations {generations:?}");

    // 2. Nothing skipped: every offset of every partition was delivered.
    let mut delivered: HashMap<i32, HashSet<i64>> = HashMap::new();
    for (_, e) in &events {
        if let Event::Delivered { partition, offset, .. } = e {
            delivered.entry(*partition).or_default().insert(*offset);
        }
    }
    for p in 0..PARTITIONS {
        let got = delivered.get(&p).map_or(0, |s| s.len()) as i64;
        assert_eq!(got, ends[p as usize], "partition {p}: delivered {got} distinct offsets of {}", ends[p as usize]);
    }

    // 3. Nothing committed is delivered again.
    let mut committed: HashMap<i32, i64> = HashMap::new();
    for (seq, e) in &events {
        match e {
            Event::Committed { partition, next } => {
                let c = committed.entry(*partition).or_insert(0);
                *c = (*c).max(*next);
            }
            Event::Delivered { partition, offset, member } => {
                let c = committed.get(partition).copied().unwrap_or(0);
                assert!(*offset >= c, "event {seq}: {member} got {partition}@{offset} after {c} was committed");
            }
            Event::Owned { .. } => {}
        }
    }
}
