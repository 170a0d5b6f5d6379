//! The HTTP server under hostile clients (issue 13), over real sockets: a cap on connections with one log line per
//! condition (F8: 300 idle connections exhausted the file descriptors), idle and header-read timeouts (slowloris),
//! a declared 1 TB body refused at once instead of waited for, too many records in one produce refused (F6), an
//! unencoded `base_uri`, and extractor rejections in plain text.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::Value;
use weir_broker::{Broker, BrokerConfig};
use weir_http::testing::{call, call_raw};
use weir_http::{HttpConfig, HttpServer};

#[path = "../../../testing/net.rs"]
mod net;

use net::{closed_by_server, CapturedLogs};

async fn server(configure: impl FnOnce(&mut HttpConfig)) -> (tempfile::TempDir, Arc<Broker>, HttpServer) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    let mut config = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    configure(&mut config);
    let server = HttpServer::start(broker.clone(), config).await.unwrap();
    (dir, broker, server)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response (head and a `content-length` body): (status, body), or `None` if the connection closed first.
fn response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((status, String::from_utf8_lossy(&body).to_string()))
}

/// GET /health on a kept-alive connection: the status, or `None` if the server closed it.
fn health(s: &mut TcpStream) -> Option<u16> {
    s.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n").ok()?;
    response(s).map(|(status, _)| status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_new_connections_get_503_and_the_others_are_served() {
    let log = CapturedLogs::install();
    let (_dir, _broker, server) = server(|c| c.max_connections = 3).await;
    let addr = server.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut held: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
        for s in &mut held {
            assert_eq!(health(s), Some(200));
        }
        for _ in 0..10 {
            let mut extra = connect(addr);
            let started = Instant::now();
            let (status, body) = response(&mut extra).expect("a refused connection is told why");
            assert_eq!(status, 503);
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error_code"], 50302);
            assert!(closed_by_server(&mut extra), "and then closed");
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        for s in &mut held {
            assert_eq!(health(s), Some(200), "the connections within the cap are still served");
        }
        drop(held.pop());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if health(&mut connect(addr)) == Some(200) {
                break;
            }
            assert!(Instant::now() < deadline, "no slot freed within 10 s of a connection closing");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert_eq!(log.count("HTTP connections at the limit"), 1, "one line for the condition, not one per connection");
    assert_eq!(log.count("below the limit again"), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slow_request_heads_are_closed() {
    let (_dir, _broker, server) = server(|c| {
        c.idle_timeout = Duration::from_millis(1500);
        c.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = server.local_addr;
    tokio::task::spawn_blocking(move || {
        // Idle after a request: closed after the idle timeout; one sending requests meanwhile stays open.
        let (mut idle, mut busy) = (connect(addr), connect(addr));
        assert_eq!(health(&mut idle), Some(200));
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(3000) {
            assert_eq!(health(&mut busy), Some(200), "a connection in use stays open");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(closed_by_server(&mut idle), "the idle connection was closed");
        // Slowloris: a request head begun and never finished is closed after the header-read timeout, well before
        // the idle timeout would have.
        let mut slow = connect(addr);
        slow.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n").unwrap();
        let started = Instant::now();
        assert!(closed_by_server(&mut slow), "a head never finished is closed");
        assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_at_once() {
    let (_dir, broker, server) = server(|_| {}).await;
    let addr = server.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut s = connect(addr);
        s.write_all(
            b"POST /topics/t HTTP/1.1\r\nhost: t\r\ncontent-type: application/vnd.kafka.binary.v2+json\r\n\
              content-length: 999999999999\r\n\r\n{\"records\":",
        )
        .unwrap();
        let started = Instant::now();
        let (status, body) = response(&mut s).expect("an answer without the body");
        assert_eq!(status, 413);
        assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error_code"], 413, "{body}");
    })
    .await
    .unwrap();
    assert!(broker.topic("t").is_err(), "nothing was created");
    server.stop().await;
}

#[tokio::test]
async fn a_produce_over_the_record_cap_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    let mut config = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    config.max_records_per_request = 1000;
    let router = weir_http::router(broker.clone(), config);
    let body = |n: usize| format!("{{\"records\":[{}]}}", vec![r#"{"value":"aGk="}"#; n].join(","));
    let binary = "application/vnd.kafka.binary.v2+json";
    let (s, e) = call_raw(&router, Method::POST, "/topics/t", binary, body(1001)).await;
    assert_eq!(s, 413, "{e}");
    assert_eq!(e["error_code"], 41302);
    assert!(e["message"].as_str().unwrap().contains("at most 1000 records"), "{e}");
    assert!(broker.topic("t").is_err(), "nothing stored, not even the topic");
    let (s, r) = call_raw(&router, Method::POST, "/topics/t", binary, body(1000)).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["offsets"].as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn group_names_stay_one_path_segment_and_rejections_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    let extra = axum::Router::new().route(
        "/typed",
        axum::routing::get(|q: axum::extract::Query<std::collections::HashMap<String, u32>>| async move {
            format!("{}", q.len())
        }),
    );
    let router = weir_http::router_with(broker, HttpConfig::new("127.0.0.1:0".parse().unwrap()), extra);
    let v2 = "application/vnd.kafka.v2+json";
    let (s, r) = call_raw(&router, Method::POST, "/consumers/..%2Fx", v2, r#"{"name":"a b"}"#).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["base_uri"], "http://weir.test/consumers/..%2Fx/instances/a%20b");
    let (s, r) = call_raw(&router, Method::POST, "/consumers/..", v2, "{}").await;
    assert_eq!(s, 422, "no URI could name a group called ..: {r}");
    // A route's own extractor rejection (a system's route, merged in) comes back in the error shape.
    let (s, r) = call(&router, Method::GET, "/typed?n=abc", None).await;
    assert_eq!(s, 400);
    assert_eq!(r["error_code"], 400, "{r}");
    assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
}
