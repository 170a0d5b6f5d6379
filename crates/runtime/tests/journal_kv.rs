//! The embedded key-value store's files: what a restart finds after a clean close, after snapshots replaced the
//! journal, after a crash cut a record short, and after a `kill -9` in the middle of writing (every acknowledged
//! write is there), and an older weir's key-value tables moved into it. Its answers are checked against the other
//! stores' in `runtime.rs`'s shared contract.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use weir_runtime::kv::{JournalKv, JournalOptions, KvStore};

fn files(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_reopened_store_holds_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = JournalKv::open(dir.path(), JournalOptions::default()).unwrap();
        kv.set("kept", b"yes", None).await.unwrap();
        kv.set("brief", b"gone", Some(Duration::from_millis(100))).await.unwrap();
        kv.set("deleted", b"x", None).await.unwrap();
        assert!(kv.delete("deleted").await.unwrap());
        assert_eq!(kv.incr("n", 41).await.unwrap(), 41);
        kv.hset("h", &[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())]).await.unwrap();
        assert!(kv.hdel_if("h", "b", None).await.unwrap());
        for (m, s) in [("c", 3), ("a", 1), ("b", 2)] {
            kv.zadd_nx("q", m, s).await.unwrap();
        }
        assert_eq!(kv.zmove_min("q", "p", 1, 10, 99).await.unwrap(), [("a".to_string(), 1)]);
        // A second process may not open it meanwhile.
        let err = JournalKv::open(dir.path(), JournalOptions::default()).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let kv = JournalKv::open(dir.path(), JournalOptions::default()).unwrap();
    assert_eq!(kv.get("kept").await.unwrap().as_deref(), Some(&b"yes"[..]));
    assert_eq!(kv.get("brief").await.unwrap(), None, "expired while closed");
    assert_eq!(kv.get("deleted").await.unwrap(), None);
    assert_eq!(kv.incr("n", 1).await.unwrap(), 42);
    assert_eq!(kv.hgetall("h").await.unwrap(), [("a".to_string(), bytes::Bytes::from_static(b"1"))]);
    assert_eq!(kv.zrange_upto("q", i64::MAX, 10).await.unwrap(), [("b".to_string(), 2), ("c".to_string(), 3)]);
    assert_eq!(kv.zscore("p", "a").await.unwrap(), Some(99));
    assert_eq!(kv.zrank("q", "c").await.unwrap(), Some(1));
}

#[tokio::test]
async fn snapshots_replace_the_journal_and_rebuild_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let options = JournalOptions { fsync_interval: Duration::from_millis(5), min_rewrite_bytes: 16 << 10 };
    {
        let kv = JournalKv::open(dir.path(), options.clone()).unwrap();
        // Enough to outgrow the journal many times over; members leave as well as arrive.
        for i in 0..5_000u32 {
            kv.zadd_nx("queue", &format!("m{i:05}"), i64::from(i % 97)).await.unwrap();
            kv.set(&format!("session:{i}"), format!("{{\"n\":{i}}}").as_bytes(), None).await.unwrap();
            if i % 3 == 0 {
                kv.zrem("queue", &format!("m{:05}", i / 2)).await.unwrap();
            }
        }
        // Snapshots are written in the background: wait for one to have replaced the first journals.
        for _ in 0..200 {
            if !files(dir.path(), "snapshot-").is_empty()
                && !files(dir.path(), "journal-").contains(&"journal-1".into())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!files(dir.path(), "snapshot-").is_empty(), "a snapshot: {:?}", files(dir.path(), ""));
        assert!(!files(dir.path(), "journal-").contains(&"journal-1".to_string()), "the first journal removed");
    }
    assert_eq!(files(dir.path(), "snapshot-").len(), 1, "older snapshots removed");
    let expected = {
        let mem = weir_runtime::kv::MemoryKv::default();
        for i in 0..5_000u32 {
            mem.zadd_nx("queue", &format!("m{i:05}"), i64::from(i % 97)).await.unwrap();
            if i % 3 == 0 {
                mem.zrem("queue", &format!("m{:05}", i / 2)).await.unwrap();
            }
        }
        mem.zrange_upto("queue", i64::MAX, 10_000).await.unwrap()
    };
    let kv = JournalKv::open(dir.path(), options).unwrap();
    assert_eq!(kv.zrange_upto("queue", i64::MAX, 10_000).await.unwrap(), expected);
    assert_eq!(kv.zcard("queue").await.unwrap(), expected.len() as u64);
    let (m, _) = &expected[expected.len() / 2];
    assert_eq!(kv.zrank("queue", m).await.unwrap(), Some(expected.len() as u64 / 2));
    for i in [0u32, 2_500, 4_999] {
        assert_eq!(
            kv.get(&format!("session:{i}")).await.unwrap().as_deref(),
            Some(format!("{{\"n\":{i}}}").as_bytes())
        );
    }
}

#[tokio::test]
async fn a_record_cut_short_is_dropped_and_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = JournalKv::open(dir.path(), JournalOptions::default()).unwrap();
        kv.set("a", b"1", None).await.unwrap();
        kv.set("b", b"2", None).await.unwrap();
    }
    // What a crash in the middle of a write leaves: the start of a record.
    let last = files(dir.path(), "journal-").into_iter().max_by_key(|n| n[8..].parse::<u64>().unwrap()).unwrap();
    let path = dir.path().join(&last);
    let whole = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
    let kv = JournalKv::open(dir.path(), JournalOptions::default()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole, "truncated to its whole records");
    assert_eq!(kv.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(kv.get("b").await.unwrap().as_deref(), Some(&b"2"[..]));
    kv.set("c", b"3", None).await.unwrap();
    drop(kv);
    let kv = JournalKv::open(dir.path(), JournalOptions::default()).unwrap();
    assert_eq!(kv.get("c").await.unwrap().as_deref(), Some(&b"3"[..]));
}

const CHILD: &str = "WEIR_JOURNAL_KV_CHILD";

/// Killed with `kill -9` while many tasks write (snapshots included): every write a task saw acknowledged is
/// there after the restart, and each queue member is in exactly one of its two sets.
#[test]
fn a_kill_loses_no_acknowledged_write() {
    if let Ok(dir) = std::env::var(CHILD) {
        return child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_kill_loses_no_acknowledged_write", "--nocapture", "--test-threads", "1"])
            .env(CHILD, dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = Vec::new();
        // Acknowledged writes, as "task key": kill once a few thousand are in.
        while acked.len() < 3_000 {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("acked ") => acked.push(l["acked ".len()..].to_string()),
                Some(Ok(_)) => {}
                _ => panic!("round {round}: the child stopped before it was killed"),
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let kv = JournalKv::open(dir.path(), JournalOptions::default()).unwrap();
            for key in &acked {
                assert!(kv.get(key).await.unwrap().is_some(), "round {round}: acknowledged {key} lost");
                let (q, p) = (kv.zscore("queue", key).await.unwrap(), kv.zscore("taken", key).await.unwrap());
                assert!(q.is_some() != p.is_some(), "round {round}: {key} in queue {q:?} and taken {p:?}");
            }
        });
    }
}

fn child(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let options = JournalOptions { fsync_interval: Duration::from_millis(50), min_rewrite_bytes: 256 << 10 };
        let kv = JournalKv::open(dir, options).unwrap();
        let run = uuid_like();
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let kv = kv.clone();
                let run = run.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let key = format!("{run}-{t}-{i}");
                        kv.set(&key, &[7u8; 200], None).await.unwrap();
                        kv.zadd_nx("queue", &key, i).await.unwrap();
                        kv.zmove_min("queue", "taken", 1, u64::MAX, 0).await.unwrap();
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "acked {key}");
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}

fn uuid_like() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

/// What an older weir kept in the database's key-value tables moves into the journal once, TTLs and all.
#[tokio::test]
async fn the_old_key_value_tables_move_into_the_journal() {
    use weir_runtime::kv::{import_sql, SqlKv};
    use weir_runtime::SqlStore;
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let old = SqlKv::new(store.clone());
    old.set("session", b"s1", Some(Duration::from_secs(3600))).await.unwrap();
    old.set("gone", b"x", Some(Duration::from_millis(1))).await.unwrap();
    old.hset("active", &[("show".into(), b"1".to_vec())]).await.unwrap();
    old.zadd_nx("queue", "a", 2).await.unwrap();
    old.zadd_nx("queue", "b", 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let kv = JournalKv::open(dir.path().join("kv"), JournalOptions::default()).unwrap();
    assert_eq!(import_sql(&store, &kv).await.unwrap(), 4, "the live key, the field and two members");
    assert_eq!(kv.get("session").await.unwrap().as_deref(), Some(&b"s1"[..]));
    assert_eq!(kv.get("gone").await.unwrap(), None);
    assert_eq!(kv.hgetall("active").await.unwrap(), [("show".to_string(), bytes::Bytes::from_static(b"1"))]);
    assert_eq!(kv.zrange_upto("queue", 10, 10).await.unwrap(), [("b".to_string(), 1), ("a".to_string(), 2)]);
    assert_eq!(import_sql(&store, &kv).await.unwrap(), 0, "the tables were emptied");
    assert_eq!(old.zcard("queue").await.unwrap(), 0);
}
