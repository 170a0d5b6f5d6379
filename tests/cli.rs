//! The `weir` binary as a user runs it: exit codes, messages, stdin and stdout.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{fails, ok, produce, run, start_up, weir};

#[test]
fn topics_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(ok(d, &["topics", "create", "orders", "--partitions", "3", "--config", "retention.ms=60000"])
        .contains("created"));
    assert_eq!(ok(d, &["topics", "list"]), "orders\n");
    let desc = ok(d, &["topics", "describe", "orders"]);
    assert!(desc.contains("partitions 3") && desc.contains("retention.ms=60000"), "{desc}");
    assert!(fails(d, &["topics", "create", "orders"]).contains("already exists"));
    ok(d, &["topics", "delete", "orders"]);
    assert_eq!(ok(d, &["topics", "list"]), "");
}

#[test]
fn bad_input_is_one_line_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let e = fails(d, &["topics", "create", "x", "--partitions", "0"]);
    assert!(e.contains("partition count") && e.lines().count() == 1, "{e}");
    assert!(fails(d, &["topics", "create", "bad/name"]).contains("invalid topic name"));
    assert!(fails(d, &["topics", "create", "t", "--config", "fsync=sometimes"]).contains("fsync"));
    assert!(fails(d, &["topics", "describe", "missing"]).contains("unknown topic"));
    assert!(fails(d, &["consume", "missing", "--max", "1"]).contains("unknown topic"));
    // A data dir that cannot be created.
    let file = d.join("a-file");
    std::fs::write(&file, "").unwrap();
    let e = fails(&file.join("sub"), &["topics", "list"]);
    assert!(e.contains("data directory"), "{e}");
    // A bad environment override names the variable.
    let out = weir(d, &["topics", "list"]).env("WEIR_LOG_FSYNC", "sometimes").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WEIR_LOG_FSYNC"));
}

#[test]
fn produce_lines_and_consume_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["topics", "create", "events", "--partitions", "2"]);
    produce(d, &["produce", "events", "--key-separator", ":"], "a:one\nb:two\na:three\n");
    let out = ok(d, &["consume", "events", "--from-beginning", "--max", "3", "--print-key"]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["a\tone", "a\tthree", "b\ttwo"]);
    // Same key, same partition, in order.
    let out =
        ok(d, &["consume", "events", "--from-beginning", "--idle-timeout-ms", "300", "--print-key", "--print-offset"]);
    let a: Vec<&str> = out.lines().filter(|l| l.contains("\ta\t")).collect();
    assert_eq!(a.len(), 2);
    assert!(a[0].ends_with("one") && a[1].ends_with("three"), "{a:?}");
}

#[test]
fn group_consumption_resumes_after_commit_and_shows_lag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["topics", "create", "t"]);
    produce(d, &["produce", "t"], &(0..10).map(|i| format!("m{i}\n")).collect::<String>());
    assert_eq!(ok(d, &["consume", "t", "--group", "g", "--from-beginning", "--max", "4"]), "m0\nm1\nm2\nm3\n");
    assert_eq!(ok(d, &["consume", "t", "--group", "g", "--max", "2"]), "m4\nm5\n");
    assert_eq!(ok(d, &["groups", "list"]), "g\n");
    let desc = ok(d, &["groups", "describe", "g"]);
    let row = desc.lines().find(|l| l.starts_with("t ")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, vec!["t", "0", "6", "10", "4"], "{desc}");
}

#[test]
fn generated_load_reports_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run(d, &["produce", "load", "--count", "20000", "--size", "64", "--quiet"]);
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("produced 20000 records") && err.contains("records/s"), "{err}");
    let desc = ok(d, &["topics", "describe", "load"]);
    assert!(desc.contains("20000"), "{desc}");
}

#[test]
fn consume_by_offset_and_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    produce(d, &["produce", "t"], "a\nb\nc\nd\n");
    assert_eq!(ok(d, &["consume", "t", "--offset", "2", "--max", "2"]), "c\nd\n");
    assert_eq!(ok(d, &["consume", "t", "--timestamp", "0", "--max", "1"]), "a\n");
    assert!(fails(d, &["consume", "t", "--offset", "99", "--max", "1"]).contains("out of range"));
}

#[test]
fn a_second_process_is_refused_with_the_owner_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut up, _kafka, _stderr) = start_up(d);
    let e = fails(d, &["topics", "list"]);
    assert!(e.contains("in use by another weir process") && e.contains(&format!("pid {}", up.id())), "{e}");
    // SIGTERM stops it cleanly.
    Command::new("kill").arg(up.id().to_string()).status().unwrap();
    let status = up.wait().unwrap();
    assert!(status.success(), "weir up exited with {status}");
    ok(d, &["topics", "list"]);
}

/// A write that fails mid-append (here the file-size limit standing in for a full disk) gives a one-line error and a
/// non-zero exit, and leaves the log readable and appendable.
#[test]
fn a_failing_disk_write_is_an_error_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["topics", "create", "t"]);
    // `trap '' XFSZ` makes the kernel return EFBIG instead of killing the process; `ulimit -f` counts 512-byte blocks.
    let script = format!(
        "trap '' XFSZ; ulimit -f 400; exec {} --data-dir {} produce t --count 100000 --size 100 --quiet",
        env!("CARGO_BIN_EXE_weir"),
        d.display()
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    assert!(!out.status.success(), "produce past the limit should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:") && err.contains("File too large"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let desc = ok(d, &["topics", "describe", "t"]);
    let stored: i64 = desc.lines().nth(2).unwrap().split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(stored > 0 && stored < 100_000, "{desc}");
    let all = ok(d, &["consume", "t", "--from-beginning", "--idle-timeout-ms", "300"]);
    assert_eq!(all.lines().count() as i64, stored);
    produce(d, &["produce", "t"], "after\n");
    let last = ok(d, &["consume", "t", "--offset", &stored.to_string(), "--max", "1"]);
    assert_eq!(last, "after\n");
}

#[test]
fn global_options_work_after_the_subcommand_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_weir")).args(["topics", "create", "late", "--data-dir", d]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        Command::new(env!("CARGO_BIN_EXE_weir")).args(["topics", "list"]).env("WEIR_DATA_DIR", d).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "late\n");
    // A settings file given after the subcommand.
    let file = dir.path().join("weir.toml");
    std::fs::write(&file, format!("data_dir = {d:?}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["topics", "list", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "late\n");
}

/// The README's first command with a real Kafka client: `weir up` serves kcat, and what kcat wrote is in the log
/// after a clean stop.
#[test]
fn weir_up_serves_kafka_clients() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut up, addr, _stderr) = start_up(d);
    let kcat = |args: &[&str], input: Option<&str>| {
        let mut c = Command::new("kcat");
        c.env_remove("LD_LIBRARY_PATH").arg("-b").arg(&addr).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = c.spawn().expect("kcat is not installed: run scripts/test.sh, which installs it");
        if let Some(i) = input {
            child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kcat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    kcat(&["-P", "-t", "from-kcat", "-K:"], Some("a:1\nb:2\n"));
    assert_eq!(kcat(&["-C", "-t", "from-kcat", "-o", "beginning", "-e", "-q", "-f", "%k=%s\n"], None), "a=1\nb=2\n");
    Command::new("kill").arg(up.id().to_string()).status().unwrap();
    assert!(up.wait().unwrap().success());
    assert_eq!(ok(d, &["consume", "from-kcat", "--from-beginning", "--max", "2", "--print-key"]), "a\t1\nb\t2\n");
}

/// `weir dlq`: dead letters listed with their origin and error, replayed to their topic once, and never one the web
/// console replayed already.
#[test]
fn dead_letters_are_listed_and_replayed_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = weir_broker::Broker::open(weir_broker::BrokerConfig::new(d)).unwrap();
        let producer = broker.producer();
        // poison-c was replayed already, one by one from the web console, which recorded it as its contract says.
        for (offset, value) in [(5, "poison-a"), (7, "poison-c"), (9, "poison-b")] {
            let headers = [
                ("weir.dlq.topic", "orders".to_string()),
                ("weir.dlq.partition", "0".into()),
                ("weir.dlq.offset", offset.to_string()),
                ("weir.dlq.error", "boom".into()),
                ("weir.dlq.attempts", "3".into()),
                ("weir.dlq.first_failure_ms", "1700000000000".into()),
                ("trace", "t1".into()),
            ];
            let mut r = weir_broker::ProduceRecord::new("orders.dlq", value);
            r.headers = headers.iter().map(|(k, v)| (k.to_string(), bytes::Bytes::from(v.clone()))).collect();
            producer.send(r).await.unwrap();
        }
        let note =
            r#"{"dlq":"orders.dlq","partition":0,"offset":1,"to":"orders","at_ms":1700000000000,"by":"console"}"#;
        let mut replayed = weir_broker::ProduceRecord::new("__weir_dlq_replays", note);
        replayed.key = Some(bytes::Bytes::from("orders.dlq/0/1"));
        producer.send(replayed).await.unwrap();
        broker.shutdown();
    });
    let listed = ok(d, &["dlq", "list", "orders"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(
        listed.contains("from orders/0/5") && listed.contains("attempts 3") && listed.contains("error boom"),
        "{listed}"
    );
    let out = support::run(d, &["dlq", "replay", "orders"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("replayed 2 dead letters"));
    assert_eq!(ok(d, &["consume", "orders", "--from-beginning", "--idle-timeout-ms", "500"]), "poison-a\npoison-b\n");
    let again = support::run(d, &["dlq", "replay", "orders"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to replay"), "a second replay sends nothing");
    assert_eq!(ok(d, &["dlq", "list", "orders"]).lines().count(), 3, "listing is not consuming");
}

#[test]
fn an_unreachable_database_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let e = fails(
        dir.path(),
        &[
            "up",
            "--kafka-listen",
            "none",
            "--http-listen",
            "none",
            "--database",
            "postgres://app:s3cret@127.0.0.1:1/db",
        ],
    );
    assert!(e.contains("cannot open the database postgres://app:***@127.0.0.1:1/db") && e.contains("refused"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
    let e = fails(dir.path(), &["up", "--kafka-listen", "none", "--http-listen", "none", "--database", "mysql://x"]);
    assert!(e.contains("sqlite://") && e.contains("postgres://"), "{e}");
}

/// The analytics producers: bulk and a simulated hour into the data directory, each event valid JSON with the
/// seed's fields; bad options refused.
#[test]
fn analytics_producers_write_the_seed_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = support::run(d, &["analytics", "produce", "--bulk", "1500", "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("produced 1500 events"));
    // One simulated hour at 24,000 a day is 1,000 events, sent at once at --speed max.
    let out = support::run(
        d,
        &["analytics", "produce", "--simulate", "--hours", "1", "--target-count", "24000", "--speed", "max", "--quiet"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = ok(d, &["consume", "events", "--from-beginning", "--idle-timeout-ms", "500"]);
    assert_eq!(events.lines().count(), 2500);
    for line in events.lines().take(50) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in ["event_id", "event_type", "timestamp", "user_id", "session_id"] {
            assert!(!v[field].is_null(), "{field} missing in {line}");
        }
        // The origin's optional fields are there, null when the type has none.
        for field in ["page_url", "duration_ms", "metadata"] {
            assert!(v.get(field).is_some(), "{field} missing in {line}");
        }
    }
    // The origin's topic, named as its producers name it (KAFKA_TOPIC) or with --topic.
    let out = support::weir(d, &["analytics", "produce", "--bulk", "300", "--partitions", "3", "--quiet"])
        .env("KAFKA_TOPIC", "user-activity-events")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = support::run(d, &["analytics", "produce", "--bulk", "200", "--topic", "user-activity-events", "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let origin = ok(d, &["consume", "user-activity-events", "--from-beginning", "--idle-timeout-ms", "500"]);
    assert_eq!(origin.lines().count(), 500);
    let e = fails(d, &["analytics", "produce", "--bulk", "1", "--topic", "no spaces"]);
    assert!(e.contains("no spaces") || e.contains("topic"), "{e}");
    let e = fails(d, &["analytics", "produce", "--simulate", "--speed", "fast"]);
    assert!(e.contains("--speed"), "{e}");
    let e = fails(d, &["analytics", "produce"]);
    assert!(e.contains("--default") || e.contains("required"), "{e}");
}

/// `weir wedding simulate`: an embedded weir on the virtual clock at full speed gives a deterministic report, the same
/// as the in-process model's, whose happy count never exceeds the bound; datasets in the exercise's format; bad input
/// named.
#[test]
fn wedding_simulations_report_against_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = ok(d, &[&["wedding", "simulate", "--speed", "max", "--report", "json"], args].concat());
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    let edf = json(&["--seed", "7"]);
    let fifo = json(&["--seed", "7", "--policy", "fifo"]);
    for r in [&edf, &fifo] {
        assert_eq!(r["events"], 1000);
        assert!(r["happy"].as_u64() <= r["upper_bound"].as_u64(), "{r}");
        for key in ["stress", "policy", "by_team", "by_priority", "by_type"] {
            assert!(!r[key].is_null(), "{key} missing");
        }
    }
    assert!(edf["happy"].as_u64() >= fifo["happy"].as_u64());
    let mut again = json(&["--seed", "7"]);
    again["run"] = edf["run"].clone();
    assert_eq!(again, edf, "the same wedding, the same report");
    let mut model = json(&["--seed", "7", "--model"]);
    model["run"] = edf["run"].clone();
    assert_eq!(model, edf, "the run through weir decides as the model does");
    assert_eq!(edf["upper_bound_kind"], "exact");
    // The same wedding as a dataset file in the exercise's format, sent from the file: the same report.
    let file = d.join("seed7.json");
    std::fs::write(&file, ok(d, &["wedding", "dataset", "--seed", "7"])).unwrap();
    assert!(std::fs::read_to_string(&file).unwrap().contains("\"timestamp\": \""), "MM:SS timestamps");
    let mut from_file = json(&["--dataset", file.to_str().unwrap()]);
    from_file["run"] = edf["run"].clone();
    assert_eq!(from_file, edf, "a generated dataset round-trips through the exercise's format");

    let file = d.join("wedding.json");
    std::fs::write(
        &file,
        r#"[{"event_type":"brawl","priority":"Low","description":"x","timestamp":"00:10"},
        {"event_type":"broken_itens","priority":"High","description":"y","timestamp":"00:21"}]"#,
    )
    .unwrap();
    let r = json(&["--dataset", file.to_str().unwrap()]);
    assert_eq!((r["events"].as_u64(), r["happy"].as_u64()), (Some(2), Some(2)));
    std::fs::write(&file, r#"[{"event_type":"karaoke","priority":"Low"}]"#).unwrap();
    let e = fails(d, &["wedding", "simulate", "--dataset", file.to_str().unwrap()]);
    assert!(e.contains("event 0") && e.contains("karaoke"), "{e}");
    assert!(fails(d, &["wedding", "simulate", "--policy", "random"]).contains("--policy"));
    assert!(fails(d, &["wedding", "simulate", "--speed", "fast"]).contains("--speed"));
    assert!(fails(d, &["wedding", "simulate", "--routines", "security=sometimes"]).contains("sometimes"));
}

/// A system's settings: a bad value or an unknown key, from a flag, the seed's environment name, `WEIR_<SYSTEM>_*` or
/// the config file, is refused before `weir up` opens anything, naming the setting and where it came from.
#[test]
fn bad_system_settings_are_refused_naming_the_setting_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = ["up", "--kafka-listen", "none", "--http-listen", "none", "--run-for", "1"];
    fn with<'a>(up: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [up, extra].concat()
    }
    let e = fails(d, &with(&up, &["--set", "wedding.policy=random"]));
    assert!(e.contains("wedding.policy") && e.contains("--set wedding.policy"), "{e}");
    let e = fails(d, &with(&up, &["--set", "wedding.colour=blue"]));
    assert!(e.contains("colour"), "{e}");
    let e = fails(d, &with(&up, &["--set", "bakery.oven=hot"]));
    assert!(e.contains("bakery"), "{e}");
    let e = fails(d, &with(&up, &["--set", "wedding.policy"]));
    assert!(e.contains("SYSTEM.KEY=VALUE"), "{e}");
    let out = weir(d, &up).env("GRACE_PERIOD_SECONDS", "soon").output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("grace_period_seconds") && e.contains("GRACE_PERIOD_SECONDS"), "{e}");
    let out = weir(d, &up).env("WEIR_WEDDING_SPEED", "-1").output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("wedding.speed") && e.contains("WEIR_WEDDING_SPEED"), "{e}");
    let file = d.join("weir.toml");
    std::fs::write(&file, "[systems.wedding]\nworkers = 0\n").unwrap();
    let e = fails(d, &with(&up, &["--config", file.to_str().unwrap()]));
    assert!(e.contains("wedding.workers") && e.contains("config file"), "{e}");
    std::fs::write(&file, "[systems.bakery]\noven = \"hot\"\n").unwrap();
    let e = fails(d, &with(&up, &["--config", file.to_str().unwrap()]));
    assert!(e.contains("[systems.bakery]"), "{e}");
    // A good file table and a flag over it: weir up starts and stops.
    std::fs::write(&file, "[systems.wedding]\npolicy = \"fifo\"\n").unwrap();
    let out = weir(d, &with(&up, &["--config", file.to_str().unwrap(), "--set", "analytics.producer=false"]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
