//! The web console in a real browser: `weir up` serves it at `/`; headless Chromium (Debian's `chromium`, driven by
//! npm's `playwright-core`, both installed by scripts/test.sh) opens it while the test produces records and a group
//! lags behind, and `tests/browser/console.js` checks each page renders without a console error, the overview's
//! numbers and chart move with the live feed, the lists find the test's topic and group (reached with the keyboard),
//! a message produced from the topic's page is found by a JSON path search, a group's lag shows and falls as it
//! consumes and then to nothing when its offsets are reset from the page, a letter the wedding dead-lettered is
//! replayed from the page and leaves the waiting ones, a simulated wedding started from its view finishes with its
//! stress against the exact optimum's, a subject's versions are compared and drafts checked, a value produced with
//! its schema shows decoded, and the dark theme holds when the page is opened again. Screenshots of each page go to `target/console-screenshots/`.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{start_up_command, weir};

fn node_modules() -> PathBuf {
    std::env::var_os("WEIR_NODE_MODULES").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/weir/node/node_modules")
    })
}

#[test]
fn the_console_shows_the_platform_live_in_a_browser() {
    let modules = node_modules();
    assert!(
        modules.join("playwright-core").exists(),
        "playwright-core is not installed in {} (scripts/test.sh installs it)",
        modules.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = ["up", "--systems", "wedding", "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    let args = [&args[..], &["--schema-registry-listen", "127.0.0.1:0"]].concat();
    let (mut up, kafka, http, _stderr) = start_up_command(weir(d, &args));
    let base = format!("http://{http}");

    // A subject with two versions (the second adds a field with a default) and a topic for values framed with it,
    // registered through the registry's API as the console serves it.
    let v1 = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"int"}]}"#;
    let v2 = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"int"},{"name":"name","type":"string","default":""}]}"#;
    for schema in [v1, v2] {
        let body = serde_json::json!({"schema": schema}).to_string();
        let answer = curl(&["-X", "POST", "-H", "content-type: application/json", "-d", &body])
            .arg(format!("{base}/console/api/registry/subjects/console-typed-value/versions"))
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&answer.stdout).contains("\"id\""), "registering: {answer:?}");
    }
    let created = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"name":"console-typed","partitions":1}"#,
    ])
    .arg(format!("{base}/console/api/topics"))
    .output()
    .unwrap();
    assert!(String::from_utf8_lossy(&created.stdout).contains("console-typed"), "creating: {created:?}");

    // Records on a wedding topic that are not wedding events: the wedding's consumer dead-letters them.
    produce_to(&base, "wedding.brawl", 3);

    // A topic with records and a group that read only some of them: lag to show.
    produce_to(&base, "console-demo", 200);
    let out = weir(d, &["--server", &kafka, "consume", "console-demo", "--group", "console-group"])
        .args(["--from-beginning", "--max", "50", "--idle-timeout-ms", "3000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "consume: {}", String::from_utf8_lossy(&out.stderr));

    // A second group, 200 records behind on a topic of its own; it reads 100 more when the page asks (a file).
    produce_to(&base, "console-lagged", 300);
    // The first read starts at the beginning; the next resumes from the group's committed offset.
    let consume_lagged = |start: &[&str]| {
        let out = weir(d, &["--server", &kafka, "consume", "console-lagged", "--group", "console-lagged"])
            .args(start)
            .args(["--max", "100", "--idle-timeout-ms", "3000"])
            .output()
            .unwrap();
        assert!(out.status.success(), "consume: {}", String::from_utf8_lossy(&out.stderr));
    };
    consume_lagged(&["--from-beginning"]);
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let _ = std::fs::remove_file(shots.join("consume-now"));

    // Records keep arriving while the browser looks.
    let running = Arc::new(AtomicBool::new(true));
    let producer = {
        let (running, base) = (running.clone(), base.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                produce_to(&base, "console-demo", 20);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.js");
    let mut browser = Command::new("node")
        .args([script, &base, shots.to_str().unwrap()])
        .env("NODE_PATH", &modules)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node is required (Debian's nodejs)");
    let asked = shots.join("consume-now");
    while browser.try_wait().unwrap().is_none() && !asked.exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    if asked.exists() {
        consume_lagged(&[]);
    }
    let out = browser.wait_with_output().unwrap();
    running.store(false, Ordering::SeqCst);
    producer.join().unwrap();
    let _ = Command::new("kill").arg(up.id().to_string()).status();
    let _ = up.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("console ok"),
        "console.js failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pages =
        ["overview", "topics", "messages", "groups", "group", "dead-letters", "wedding", "schema", "overview-dark"];
    for page in pages {
        let shot = shots.join(format!("{page}.png"));
        assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000), "no screenshot {}", shot.display());
    }
}

/// A `weir up` requiring authentication, with the ACL authorizer: the console's page asks for a login, a reader (READ on
/// the system `console` and on `wedding`) is not offered what the server would refuse, a writer is
/// (`tests/browser/login.js`).
#[test]
fn the_console_asks_for_a_login_and_offers_only_what_the_acls_allow() {
    let modules = node_modules();
    assert!(modules.join("playwright-core").exists(), "playwright-core is not installed (scripts/test.sh installs it)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("weir.toml");
    std::fs::write(&config, "[security]\nauthorizer = \"acl\"\n").unwrap();
    let config = config.to_str().unwrap();
    let with_config =
        |args: &[&str]| -> Vec<String> { ["--config", config].iter().chain(args).map(|a| a.to_string()).collect() };
    for (user, password) in [("reader", "reader-pw-2026"), ("writer", "writer-pw-2026")] {
        let mut add = weir(d, &with_config(&["users", "add", user]))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut add.stdin.take().unwrap(), format!("{password}\n").as_bytes()).unwrap();
        assert!(add.wait().unwrap().success(), "weir users add {user}");
    }
    let grants: [(&str, &str, &str); 6] = [
        ("reader", "read", "console"),
        ("reader", "read", "wedding"),
        ("writer", "read", "console"),
        ("writer", "write", "console"),
        ("writer", "read", "wedding"),
        ("writer", "write", "wedding"),
    ];
    for (user, operation, system) in grants {
        let principal = format!("User:{user}");
        let args = ["acls", "add", "--allow", &principal, "--operation", operation, "--system", system];
        let out = weir(d, &with_config(&args)).output().unwrap();
        assert!(out.status.success(), "acls add: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = weir(d, &with_config(&["topics", "create", "orders"])).output().unwrap();
    assert!(out.status.success(), "topics create: {}", String::from_utf8_lossy(&out.stderr));
    let args = ["up", "--systems", "wedding", "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    let (up, _kafka, http, _stderr) = start_up_command(weir(d, &with_config(&args)));
    run_browser_script("login", &http, up);
}

/// Each system's view, with every system running (`tests/browser/systems.js`): repair tickets and a journey,
/// analytics' windows, a reviewer approving an event from their queue, a waitroom event's queue.
#[test]
fn every_systems_view_renders_what_its_system_holds() {
    let modules = node_modules();
    assert!(modules.join("playwright-core").exists(), "playwright-core is not installed (scripts/test.sh installs it)");
    let dir = tempfile::tempdir().unwrap();
    let args = ["up", "--systems", "all", "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    let args = [&args[..], &["--set", "analytics.flush_interval_seconds=1"]].concat();
    let (up, kafka, http, _stderr) = start_up_command(weir(dir.path(), &args));
    // A bulk of the analytics generator's events (spread over a simulated day): windows for its chart.
    let out =
        weir(dir.path(), &["--server", &kafka, "analytics", "produce", "--bulk", "5000", "--quiet"]).output().unwrap();
    assert!(out.status.success(), "analytics produce: {}", String::from_utf8_lossy(&out.stderr));
    run_browser_script("systems", &http, up);
}

/// Runs `tests/browser/NAME.js` against the `weir up` at `http` (screenshots into `target/console-screenshots/`),
/// stops that `weir up`, and fails unless the script printed `NAME ok`, showing what it printed.
fn run_browser_script(name: &str, http: &str, mut up: std::process::Child) {
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/browser/{name}.js"));
    let out = Command::new("node")
        .arg(&script)
        .args([&format!("http://{http}"), shots.to_str().unwrap()])
        .env("NODE_PATH", node_modules())
        .output()
        .expect("node is required (Debian's nodejs)");
    let _ = Command::new("kill").arg(up.id().to_string()).status();
    let _ = up.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("{name} ok")),
        "{name}.js failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// curl, quiet, with a time limit.
fn curl(args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args(["-s", "-m", "10"]).args(args);
    c
}

/// Produces `n` JSON records to `topic` through the REST Proxy API.
fn produce_to(base: &str, topic: &str, n: usize) {
    let records: Vec<String> = (0..n).map(|i| format!("{{\"key\":\"k{i}\",\"value\":{{\"n\":{i}}}}}")).collect();
    let body = format!("{{\"records\":[{}]}}", records.join(","));
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "content-type: application/vnd.kafka.json.v2+json", "-d", &body])
        .arg(format!("{base}/topics/{topic}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "producing over HTTP");
}
