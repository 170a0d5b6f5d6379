//! The web console in a real browser: `weir up` serves it at `/`; headless Chromium (Debian's `chromium`, driven by
//! npm's `playwright-core`, both installed by scripts/test.sh) opens it while the test produces records and a group
//! lags behind, and `tests/browser/console.js` checks each page renders without a console error, the overview's
//! numbers and chart move with the live feed, the lists find the test's topic and group (reached with the keyboard),
//! a message produced from the topic's page is found by a JSON path search, and the dark theme holds when the page
//! is opened again. Screenshots of each page go to `target/console-screenshots/`.

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
    let args = ["up", "--systems", "none", "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    let (mut up, kafka, http, _stderr) = start_up_command(weir(d, &args));
    let base = format!("http://{http}");

    // A topic with records and a group that read only some of them: lag to show.
    produce(&base, 200);
    let out = weir(d, &["--server", &kafka, "consume", "console-demo", "--group", "console-group"])
        .args(["--from-beginning", "--max", "50", "--idle-timeout-ms", "3000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "consume: {}", String::from_utf8_lossy(&out.stderr));

    // Records keep arriving while the browser looks.
    let running = Arc::new(AtomicBool::new(true));
    let producer = {
        let (running, base) = (running.clone(), base.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                produce(&base, 20);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/console.js");
    let out = Command::new("node")
        .args([script, &base, shots.to_str().unwrap()])
        .env("NODE_PATH", &modules)
        .output()
        .expect("node is required (Debian's nodejs)");
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
    for page in ["overview", "topics", "messages", "groups", "overview-dark"] {
        let shot = shots.join(format!("{page}.png"));
        assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000), "no screenshot {}", shot.display());
    }
}

/// Produces `n` JSON records to `console-demo` through the REST Proxy API.
fn produce(base: &str, n: usize) {
    let records: Vec<String> = (0..n).map(|i| format!("{{\"key\":\"k{i}\",\"value\":{{\"n\":{i}}}}}")).collect();
    let body = format!("{{\"records\":[{}]}}", records.join(","));
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "content-type: application/vnd.kafka.json.v2+json", "-d", &body])
        .arg(format!("{base}/topics/console-demo"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "producing over HTTP");
}
