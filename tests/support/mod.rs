//! What the CLI test files share: running the `weir` binary as a user would, and starting `weir up`.
// Each test file uses its own subset of these.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub fn weir(dir: &Path, args: &[impl AsRef<OsStr> + std::fmt::Debug]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.arg("--data-dir").arg(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("WEIR_") {
            c.env_remove(k);
        }
    }
    // Tests run side by side: none takes the registry's or the REST Proxy's fixed default port (those that test them
    // name one).
    c.env("WEIR_SCHEMA_REGISTRY_LISTEN", "none");
    c.env("WEIR_REST_PROXY_LISTEN", "none");
    c.env("WEIR_WAITROOM_GRPC_LISTEN", "none");
    c
}

pub fn run(dir: &Path, args: &[impl AsRef<OsStr> + std::fmt::Debug]) -> Output {
    weir(dir, args).output().unwrap()
}

pub fn ok(dir: &Path, args: &[impl AsRef<OsStr> + std::fmt::Debug]) -> String {
    let out = run(dir, args);
    assert!(out.status.success(), "weir {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn fails(dir: &Path, args: &[impl AsRef<OsStr> + std::fmt::Debug]) -> String {
    let out = run(dir, args);
    assert!(!out.status.success(), "weir {args:?} should have failed");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "weir {args:?} panicked: {err}");
    err
}

pub fn produce(dir: &Path, args: &[impl AsRef<OsStr> + std::fmt::Debug], input: &str) {
    let mut child =
        weir(dir, args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "produce failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Starts `weir up` with its Kafka listener on a free port and waits for its banner. Returns the process, the Kafka
/// address it printed, and its stderr, which must stay open while it runs (it keeps writing status lines there).
pub fn start_up(d: &Path) -> (std::process::Child, String, std::io::BufReader<std::process::ChildStderr>) {
    let (up, kafka, _http, stderr) = start_up_http(d);
    (up, kafka, stderr)
}

/// [`start_up`], also returning the HTTP API's address (both listeners on free ports).
// The caller waits for the child; a panic on the way ends the test process, and the child with its pipes.
#[allow(clippy::zombie_processes)]
pub fn start_up_http(d: &Path) -> (std::process::Child, String, String, std::io::BufReader<std::process::ChildStderr>) {
    let args = ["up", "--status-every", "1", "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    start_up_command(weir(d, &args))
}

/// [`start_up_http`] for a command of the caller's (a shell that sets limits first, say) that runs `weir up`.
#[allow(clippy::zombie_processes)]
pub fn start_up_command(
    mut command: Command,
) -> (std::process::Child, String, String, std::io::BufReader<std::process::ChildStderr>) {
    use std::io::BufRead;
    let mut up = command.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut stderr = std::io::BufReader::new(up.stderr.take().unwrap());
    let mut line = String::new();
    let mut kafka = None;
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let status = up.wait().unwrap();
            panic!("weir up exited early with {status}");
        }
        let addr = |rest: &str| rest.split_whitespace().next().expect("the line names an address").to_string();
        if let Some(rest) = line.trim().strip_prefix("kafka") {
            kafka = Some(addr(rest));
        } else if let Some(rest) = line.trim().strip_prefix("http ") {
            let http = addr(rest).trim_start_matches("http://").to_string();
            return (up, kafka.expect("the kafka line comes first"), http, stderr);
        }
    }
}

/// Starts `weir up` with `args` (which name `--http-listen 127.0.0.1:0` and usually `--kafka-listen none`: an
/// instance on a cluster), waits for its `http` banner line and returns the process and the HTTP address. Its stderr is
/// copied to the test's, each line prefixed with `label`, so it never blocks writing status lines.
#[allow(clippy::zombie_processes)]
pub fn start_instance(dir: &Path, args: &[&str], label: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut up = weir(dir, args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut stderr = std::io::BufReader::new(up.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let status = up.wait().unwrap();
            panic!("weir up ({label}) exited early with {status}");
        }
        if let Some(rest) = line.trim().strip_prefix("http ") {
            let addr = rest.split_whitespace().next().unwrap().trim_start_matches("http://").to_string();
            let label = label.to_string();
            std::thread::spawn(move || {
                for l in stderr.lines().map_while(Result::ok) {
                    eprintln!("[{label}] {l}");
                }
            });
            return (up, addr);
        }
    }
}

/// `curl -s` with `args`: the JSON body (null if it is not JSON) and the HTTP status.
pub fn curl_json(args: &[&str]) -> (serde_json::Value, String) {
    let out = Command::new("curl").args(["-s", "-m", "10", "-w", "\n%{http_code}"]).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (serde_json::from_str(body).unwrap_or(serde_json::Value::Null), status.to_string())
}

/// The value of an unlabelled counter or gauge in an instance's `/metrics` (0 if it is not there yet).
pub fn metric(http: &str, name: &str) -> f64 {
    let out = Command::new("curl").args(["-s", "-m", "10", &format!("http://{http}/metrics")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Calls `probe` until it answers `want` or 10 s pass, and returns its last answer: for changes a running weir picks up
/// within a second (store files reread, another instance's registry).
pub fn eventually(want: &str, mut probe: impl FnMut() -> String) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = probe();
        if got == want || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `weir up` running the repair shop alone on the embedded broker with its clock at full speed (no Kafka listener,
/// HTTP on a free port), plus `extra` arguments.
pub fn repair_up(dir: &Path, extra: &[&str]) -> Command {
    let args = ["up", "--systems", "repair", "--kafka-listen", "none", "--http-listen", "127.0.0.1:0"];
    weir(dir, &[&args[..], &["--set", "repair.clock_speed=max"], extra].concat())
}

/// `SELECT db` and `FLUSHDB` on the local Redis, in its protocol (no client needed); fails loudly without Redis.
pub fn flush_redis_db(db: u32) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect("127.0.0.1:6379")
        .unwrap_or_else(|e| panic!("Redis is required at 127.0.0.1:6379 (scripts/test.sh starts it): {e}"));
    let db = db.to_string();
    let command = format!("*2\r\n$6\r\nSELECT\r\n${}\r\n{db}\r\n*1\r\n$7\r\nFLUSHDB\r\n", db.len());
    conn.write_all(command.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 64];
    while answer.len() < 10 {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "Redis closed the connection: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert_eq!(answer, b"+OK\r\n+OK\r\n", "{}", String::from_utf8_lossy(&answer));
}
