//! Durability under `kill -9`: a child process appends with `fsync=always` from several threads and prints each
//! acknowledged offset; the parent kills it at random moments, many times over, and after every restart checks that each
//! acknowledged record is present, exactly once, in order.
//!
//! The child is this same test binary, re-executed with `WEIR_CRASH_CHILD` set.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use weir_log::testing::crash::rerun_test;
use weir_log::{FsyncPolicy, Log, LogConfig, Record};

const CHILD_ENV: &str = "WEIR_CRASH_CHILD";
const ROUNDS: usize = 25;
const WRITERS: usize = 4;

fn config() -> LogConfig {
    let mut c = LogConfig { fsync: FsyncPolicy::Always, ..Default::default() };
    c.set("segment.bytes", "65536").unwrap(); // roll often, so kills land mid-roll too
    c
}

fn child(dir: &str) -> ! {
    let log = Log::open(dir, config()).expect("child opens the log");
    let round: usize = std::env::var("WEIR_CRASH_ROUND").unwrap().parse().unwrap();
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let log: Arc<Log> = log.clone();
            std::thread::spawn(move || {
                let mut out = std::io::stdout();
                for seq in 0.. {
                    let value = format!("{round}:{w}:{seq}");
                    let info = log.append(&[Record::from_value(value.clone())]).expect("append");
                    let line = format!("{} {value}\n", info.base_offset);
                    out.write_all(line.as_bytes()).expect("stdout");
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(0)
}

#[test]
fn acknowledged_records_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<i64, String> = HashMap::new();
    let mut rng = rand::thread_rng();
    for round in 0..ROUNDS {
        // Killed after a random time rather than by `kill_and_restart`: the child's progress shows only on its
        // stdout, which is read whole once it is dead.
        let mut child = rerun_test("acknowledged_records_survive_sigkill", CHILD_ENV, dir.path())
            .env("WEIR_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader =
            std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>());
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            // Only whole lines were acknowledged; a line cut by the kill has no value part.
            if let Some((offset, value)) = line.split_once(' ') {
                if let Ok(offset) = offset.parse::<i64>() {
                    if value.split(':').count() == 3 {
                        acked.insert(offset, value.to_string());
                    }
                }
            }
        }

        let started = Instant::now();
        let log = Log::open(dir.path(), config()).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10), "recovery took {:?}", started.elapsed());
        let mut offset = 0;
        let mut seen = HashSet::new();
        let mut last_seq: HashMap<String, i64> = HashMap::new();
        let mut stored: HashMap<i64, String> = HashMap::new();
        while offset < log.end_offset() {
            let recs = log.read(offset, 1 << 20).unwrap().records(offset).unwrap();
            for r in &recs {
                assert_eq!(r.offset, offset, "offsets are dense");
                let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
                assert!(seen.insert(v.clone()), "record {v} stored twice");
                let (writer, seq) = v.rsplit_once(':').unwrap();
                let seq: i64 = seq.parse().unwrap();
                let prev = last_seq.insert(writer.to_string(), seq);
                assert_eq!(prev.map_or(0, |p| p + 1), seq, "writer {writer} out of order or with a gap");
                stored.insert(r.offset, v);
                offset += 1;
            }
        }
        for (offset, value) in &acked {
            assert_eq!(stored.get(offset), Some(value), "acknowledged record at {offset} lost after round {round}");
        }
    }
    assert!(acked.len() > ROUNDS * 10, "too few acknowledged records ({}) for the test to mean anything", acked.len());
}
