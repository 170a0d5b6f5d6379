//! Real Kafka tooling against weir's listener: kcat (librdkafka) for metadata, produce, consume, compression and
//! timestamp lookups, plus raw bytes a client should never send. kcat must be installed (`scripts/test.sh` installs it);
//! a missing kcat fails these tests rather than skipping them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use weir_broker::partitioner::partition_for_key;
use weir_broker::testing::broker_config;
use weir_broker::Broker;
use weir_kafka::{BackgroundBroker, ListenerConfig};

/// kcat with the system's librdkafka: the test harness puts build directories on LD_LIBRARY_PATH, and the copy of
/// librdkafka built for the rdkafka crate there lacks codecs kcat's own has.
fn kcat_command() -> Command {
    let mut c = Command::new("kcat");
    c.env_remove("LD_LIBRARY_PATH");
    c
}

/// weir in the background, plus a runtime of the test's own for in-process consumers.
struct Weir {
    _dir: tempfile::TempDir,
    background: BackgroundBroker,
    broker: Arc<Broker>,
    runtime: tokio::runtime::Runtime,
}

impl Weir {
    fn start() -> Weir {
        Weir::start_with(|_| {})
    }

    fn start_with(tune: impl FnOnce(&mut ListenerConfig)) -> Weir {
        let dir = tempfile::tempdir().unwrap();
        let mut listener_config = ListenerConfig::new("127.0.0.1:0".parse().unwrap());
        tune(&mut listener_config);
        let background = BackgroundBroker::start(broker_config(dir.path()), listener_config).unwrap();
        let broker = background.broker.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        Weir { _dir: dir, background, broker, runtime }
    }

    fn addr(&self) -> SocketAddr {
        self.background.addr
    }

    fn kcat(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = kcat_command();
        cmd.arg("-b").arg(self.addr().to_string()).args(args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kcat is not installed: run scripts/test.sh, which installs it");
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kcat {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    fn kcat_text(&self, args: &[&str], stdin: Option<&str>) -> String {
        String::from_utf8(self.kcat(args, stdin).stdout).unwrap()
    }
}

#[test]
fn metadata_lists_the_broker_and_topics() {
    let w = Weir::start();
    w.broker.create_topic("orders", 3, Default::default()).unwrap();
    let out = w.kcat_text(&["-L"], None);
    assert!(out.contains(&format!("broker 0 at {}", w.addr())), "{out}");
    assert!(out.contains("topic \"orders\" with 3 partitions"), "{out}");
}

#[test]
fn produce_and_consume_keyed_records() {
    let w = Weir::start();
    w.broker.create_topic("t", 4, Default::default()).unwrap();
    let lines: String = (0..200).map(|i| format!("key{}:value{i}\n", i % 17)).collect();
    // Java's partitioner (murmur2), so weir's own partitioner must agree with where the records went.
    w.kcat(&["-P", "-t", "t", "-K:", "-X", "partitioner=murmur2_random"], Some(&lines));
    let out = w.kcat_text(&["-C", "-t", "t", "-o", "beginning", "-e", "-q", "-f", "%k %s %p %o\n"], None);
    let mut got: Vec<(String, String, i32, i64)> = out
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split(' ').collect();
            (v[0].to_string(), v[1].to_string(), v[2].parse().unwrap(), v[3].parse().unwrap())
        })
        .collect();
    assert_eq!(got.len(), 200);
    for (k, _, p, _) in &got {
        assert_eq!(*p, partition_for_key(k.as_bytes(), 4), "key {k}");
    }
    // Per key, values arrive in the order produced, at increasing offsets.
    got.sort_by_key(|(_, _, p, o)| (*p, *o));
    for key in 0..17 {
        let vals: Vec<usize> = got
            .iter()
            .filter(|(k, ..)| *k == format!("key{key}"))
            .map(|(_, v, ..)| v.trim_start_matches("value").parse().unwrap())
            .collect();
        assert!(vals.windows(2).all(|w| w[0] < w[1]), "key{key}: {vals:?}");
    }
}

#[test]
fn compressed_batches_are_stored_and_served_as_sent() {
    let w = Weir::start();
    let mut expected = 0;
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let lines: String = (0..1000).map(|i| format!("{codec}-{i}\n")).collect();
        w.kcat(&["-P", "-t", "z", "-z", codec], Some(&lines));
        expected += 1000;
    }
    let out = w.kcat_text(&["-C", "-t", "z", "-o", "beginning", "-e", "-q"], None);
    assert_eq!(out.lines().count(), expected);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        assert!(out.contains(&format!("{codec}-999\n")), "{codec} records missing");
    }
    // weir's own consumers decompress what Kafka clients compressed.
    let broker = w.broker.clone();
    let values = w.runtime.block_on(async move {
        let mut c = broker.consumer(weir_broker::ConsumerConfig::new(["z"])).unwrap();
        let mut values = Vec::new();
        loop {
            let batch = c.poll(Duration::from_millis(500)).await.unwrap();
            if batch.is_empty() {
                break values;
            }
            values.extend(batch.into_iter().map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()));
        }
    });
    assert_eq!(values.len(), expected);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        assert!(values.contains(&format!("{codec}-999")), "{codec} not decoded in-process");
    }
    assert_eq!(w.broker.offset_for_timestamp("z", 0, 0).unwrap(), Some(0));
}

#[test]
fn offsets_by_timestamp_and_from_the_end() {
    let w = Weir::start();
    w.broker.create_topic("t", 1, Default::default()).unwrap();
    let lines: String = (0..10).map(|i| format!("m{i}\n")).collect();
    w.kcat(&["-P", "-t", "t"], Some(&lines));
    assert_eq!(w.kcat_text(&["-C", "-t", "t", "-o", "-2", "-e", "-q"], None), "m8\nm9\n");
    let out = w.kcat_text(&["-Q", "-t", "t:0:0"], None);
    assert!(out.contains("t [0] offset 0"), "{out}");
    let far_future = (weir_log::now_ms() + 3_600_000).to_string();
    let out = w.kcat_text(&["-Q", "-t", &format!("t:0:{far_future}")], None);
    assert!(out.contains("offset -1"), "{out}");
}

#[test]
fn garbage_closes_only_its_own_connection() {
    let w = Weir::start();
    let healthy = w.kcat_text(&["-L"], None);
    for garbage in [
        vec![0xff, 0xff, 0xff, 0xff],                                             // negative size
        vec![0x7f, 0xff, 0xff, 0xff],                                             // absurd size
        vec![0, 0, 0, 4, 0, 1, 0, 2],                                             // truncated header
        vec![0, 0, 0, 12, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],              // unknown API key
        [&[0u8, 0, 0, 20, 0, 3, 0, 9, 0, 0, 0, 7][..], &[0xee; 12][..]].concat(), // Metadata v9 with junk body
    ] {
        let mut s = TcpStream::connect(w.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&garbage).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the connection should be closed for {garbage:?}");
    }
    assert_eq!(w.kcat_text(&["-L"], None), healthy, "the broker keeps serving others");
}

#[test]
fn a_kcat_consumer_group_commits_and_resumes() {
    let w = Weir::start();
    w.broker.create_topic("t", 4, Default::default()).unwrap();
    let lines: String = (0..300).map(|i| format!("k{i}:v{i}\n")).collect();
    w.kcat(&["-P", "-t", "t", "-K:"], Some(&lines));
    let group = ["-G", "kg", "t", "-e", "-q", "-X", "auto.offset.reset=earliest"];
    assert_eq!(w.kcat_text(&group, None).lines().count(), 300);
    let d = w.broker.describe_group("kg").unwrap();
    assert_eq!(d.offsets.iter().map(|o| o.committed.unwrap_or(0)).sum::<i64>(), 300, "{:?}", d.offsets);
    let more: String = (300..350).map(|i| format!("k{i}:v{i}\n")).collect();
    w.kcat(&["-P", "-t", "t", "-K:"], Some(&more));
    let second = w.kcat_text(&group, None);
    assert_eq!(second.lines().count(), 50, "only what arrived after the commit: {second}");
}

/// A kcat member and an in-process member are one group: they split the partitions, and when kcat leaves the
/// in-process member takes them all.
#[test]
fn kcat_and_an_in_process_consumer_share_one_group() {
    let w = Weir::start();
    w.broker.create_topic("t", 4, Default::default()).unwrap();
    let mut kcat = kcat_command()
        .args(["-b", &w.addr().to_string(), "-G", "mix", "t", "-q", "-X", "auto.offset.reset=earliest"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kcat is not installed: run scripts/test.sh, which installs it");
    let wait_for = |what: &str, check: &mut dyn FnMut() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("kcat to join", &mut || {
        w.broker.describe_group("mix").is_ok_and(|d| d.state == "Stable" && d.members.len() == 1)
    });

    let broker = w.broker.clone();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<(String, i32)>>();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let member = w.runtime.spawn(async move {
        let mut config = weir_broker::ConsumerConfig::new(["t"]).group("mix");
        config.heartbeat_interval = Duration::from_millis(200);
        let mut c = broker.consumer(config).unwrap();
        while !stop2.load(std::sync::atomic::Ordering::Acquire) {
            c.poll(Duration::from_millis(100)).await.unwrap();
            let _ = tx.send(c.assignment());
        }
        c.close().await.unwrap();
    });
    let mut last = Vec::new();
    wait_for("the in-process member to get half", &mut || {
        while let Ok(a) = rx.try_recv() {
            last = a;
        }
        last.len() == 2
    });
    let d = w.broker.describe_group("mix").unwrap();
    assert_eq!(d.members.len(), 2);
    let kcat_member = d.members.iter().find(|m| m.host != "in-process").expect("kcat's member");
    assert_eq!(kcat_member.assignment.iter().map(|(_, ps)| ps.len()).sum::<usize>(), 2, "{d:?}");

    // SIGTERM: kcat leaves the group on its way out.
    Command::new("kill").arg(kcat.id().to_string()).status().unwrap();
    kcat.wait().unwrap();
    wait_for("the in-process member to take every partition", &mut || {
        while let Ok(a) = rx.try_recv() {
            last = a;
        }
        last.len() == 4
    });
    stop.store(true, std::sync::atomic::Ordering::Release);
    w.runtime.block_on(member).unwrap();
}

#[test]
fn an_idempotent_kcat_producer_is_stored_once() {
    let w = Weir::start();
    w.broker.create_topic("t", 2, Default::default()).unwrap();
    let lines: String = (0..2000).map(|i| format!("k{}:v{i}\n", i % 10)).collect();
    w.kcat(&["-P", "-t", "t", "-K:", "-X", "enable.idempotence=true", "-X", "acks=all"], Some(&lines));
    let out = w.kcat_text(&["-C", "-t", "t", "-o", "beginning", "-e", "-q"], None);
    let mut values: Vec<&str> = out.lines().collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), 2000);
    assert_eq!(out.lines().count(), 2000);
}

#[test]
fn sasl_plain_admits_only_configured_users() {
    let w = Weir::start_with(|c| *c = c.clone().with_users(&[("alice", "s3cret")]));
    let sasl = |user: &str, password: &str| {
        kcat_command()
            .args(["-b", &w.addr().to_string(), "-L", "-m", "5"])
            .args(["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN"])
            .args(["-X", &format!("sasl.username={user}"), "-X", &format!("sasl.password={password}")])
            .output()
            .expect("kcat is not installed: run scripts/test.sh, which installs it")
    };
    let good = sasl("alice", "s3cret");
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    assert!(String::from_utf8_lossy(&good.stdout).contains("1 brokers"));
    let bad = sasl("alice", "wrong");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Authentication failed"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    // No SASL at all: the listener refuses to talk.
    let none = kcat_command().args(["-b", &w.addr().to_string(), "-L", "-m", "5"]).output().unwrap();
    assert!(!none.status.success());
}

#[test]
fn describe_configs_reports_effective_topic_settings() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::DescribeConfigsRequest;
    use kafka_protocol::protocol::StrBytes;
    let w = Weir::start();
    let cfg = [("retention.ms".to_string(), "123456".to_string())].into();
    w.broker.create_topic("t", 1, cfg).unwrap();
    let mut res = DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = StrBytes::from_static_str("t");
    let mut missing = DescribeConfigsResource::default();
    missing.resource_type = 2;
    missing.resource_name = StrBytes::from_static_str("nope");
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![res, missing];
    let r = weir_kafka::handlers::describe_configs(&w.broker, req);
    let retention = r.results[0].configs.iter().find(|c| &*c.name == "retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("123456"));
    assert_eq!(r.results[1].error_code, weir_kafka::error_code::UNKNOWN_TOPIC_OR_PARTITION);
}
