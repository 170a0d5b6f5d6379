//! `weir up` on a disk that fills up (issue 13): producers get clear errors, `/health` says which partitions cannot
//! be written and why (it said "ok" throughout), the condition is logged once when it starts and once when it clears
//! (nothing was logged), and everything works again once space is freed.
//!
//! The data directory is a 6 MiB tmpfs mounted in a mount namespace of the child's own (`unshare --user --map-root-user
//! --mount`), so the test needs no root and leaves nothing mounted behind.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `curl` with a JSON body; (status, body).
fn http(method: &str, url: &str, content_type: &str, body: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-m", "20", "-X", method, "-w", "\n%{http_code}", url]);
    if body.is_some() {
        c.args(["-H", &format!("Content-Type: {content_type}"), "--data-binary", "@-"]);
        c.stdin(Stdio::piped());
    }
    let mut child = c.stdout(Stdio::piped()).spawn().expect("curl is installed by scripts/test.sh");
    if let Some(b) = body {
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

const BINARY: &str = "application/vnd.kafka.binary.v2+json";

/// One HTTP produce of a 256 KiB record (base64 of zeros) to `topic`: `Ok` with its offset, or the record's error
/// (as the REST Proxy does, a request whose records fail is still a 200, each record carrying its error).
fn produce_big(http_addr: &str, topic: &str) -> Result<i64, String> {
    let value = "A".repeat(256 * 1024 / 3 * 4);
    let body = format!(r#"{{"records":[{{"value":"{value}"}}]}}"#);
    let (status, body) = http("POST", &format!("http://{http_addr}/topics/{topic}"), BINARY, Some(&body));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let record = &v["offsets"][0];
    match record["offset"].as_i64() {
        Some(offset) if record["error_code"].is_null() => Ok(offset),
        _ => Err(record.to_string()),
    }
}

fn health(http_addr: &str) -> (u16, serde_json::Value) {
    let (status, body) = http("GET", &format!("http://{http_addr}/health"), "", None);
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("/health is not JSON ({e}): {body}")))
}

#[test]
fn a_full_disk_is_reported_logged_once_and_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=6m tmpfs '{d}' && exec '{weir}' --data-dir '{d}' up --systems none --status-every 1 \
         --kafka-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --schema-registry-listen none --rest-proxy-listen none",
        d = data.display(),
        weir = env!("CARGO_BIN_EXE_weir"),
    );
    let mut up = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) runs the child in a mount namespace");
    let stderr = std::io::BufReader::new(up.stderr.take().unwrap());
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            let (mut kafka, mut sent) = (None, false);
            for line in stderr.lines().map_while(Result::ok) {
                let trimmed = line.trim();
                let addr = |rest: &str| rest.split_whitespace().next().unwrap_or("").to_string();
                if let Some(rest) = trimmed.strip_prefix("kafka") {
                    kafka = Some(addr(rest));
                } else if let Some(rest) = trimmed.strip_prefix("http ") {
                    if !sent {
                        let http = addr(rest).trim_start_matches("http://").to_string();
                        let _ = tx.send((kafka.clone().unwrap_or_default(), http));
                        sent = true;
                    }
                }
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    let (kafka, http_addr) = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(a) => a,
        Err(_) => {
            let _ = up.kill();
            panic!("weir up did not start on the tmpfs: {}", log.lock().unwrap());
        }
    };
    let stop = |up: &mut std::process::Child| {
        let _ = up.kill();
        let _ = up.wait();
    };

    // Ballast, to free later; then fill the disk through topic `a`.
    for _ in 0..6 {
        produce_big(&http_addr, "ballast").expect("the ballast fits");
    }
    let mut refused = None;
    for _ in 0..40 {
        if let Err(e) = produce_big(&http_addr, "a") {
            refused = Some(e);
            break;
        }
    }
    let Some(error) = refused else {
        stop(&mut up);
        panic!("40 records of 256 KiB fitted on a 6 MiB disk");
    };
    assert!(error.contains("No space left on device"), "the record's error says why: {error}");
    // A second failure, so "logged once" means once for the condition, not once per request.
    assert!(produce_big(&http_addr, "a").is_err());

    let (status, h) = health(&http_addr);
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    let problems = h["storage"]["problems"].as_array().unwrap();
    let a = problems.iter().find(|p| p["topic"] == "a").unwrap_or_else(|| panic!("no problem for topic a: {h}"));
    assert_eq!(a["problem"], "writes failing");
    assert!(a["error"].as_str().unwrap().contains("No space left on device"), "{a}");
    assert!(a["failures"].as_u64().unwrap() >= 2, "{a}");

    // Free the ballast; writes to `a` work again and /health recovers.
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--server", &kafka, "topics", "delete", "ballast"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if produce_big(&http_addr, "a").is_ok() && health(&http_addr).0 == 200 {
            break;
        }
        if Instant::now() > deadline {
            let h = health(&http_addr).1;
            stop(&mut up);
            panic!("still failing 20 s after space was freed: {h}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    stop(&mut up);
    let log = log.lock().unwrap().clone();
    let a_lines = |needle: &str| log.lines().filter(|l| l.contains(needle) && l.contains("topic=a")).count();
    assert_eq!(a_lines("writes fail:"), 1, "one line when writes to `a` start failing:\n{log}");
    assert_eq!(a_lines("writes succeed again"), 1, "one line when they work again:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}
