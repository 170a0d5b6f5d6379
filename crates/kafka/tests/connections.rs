//! The listener's connection limits (issue 13, F8: 300 idle connections exhausted the file descriptors and made the
//! broker unreachable): a cap past which new connections are closed at once while the others keep being served, an
//! idle timeout, and one log line per condition rather than one per refused connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use weir_kafka::{BackgroundBroker, ListenerConfig};

#[path = "../../../testing/net.rs"]
mod net;

use net::{closed_by_server, CapturedLogs};

fn start(max_connections: usize, idle_timeout: Duration) -> (tempfile::TempDir, BackgroundBroker) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ListenerConfig::new("127.0.0.1:0".parse().unwrap());
    config.max_connections = max_connections;
    config.idle_timeout = idle_timeout;
    let broker = BackgroundBroker::start(weir_broker::BrokerConfig::new(dir.path()), config).unwrap();
    (dir, broker)
}

/// An ApiVersions v0 request (correlation id 9, client id "t").
const API_VERSIONS: &[u8] = &[0, 0, 0, 11, 0, 18, 0, 0, 0, 0, 0, 9, 0, 1, b't'];

/// Sends ApiVersions on `sock` and reads the answer; false if the connection was closed instead.
fn answers(sock: &mut TcpStream) -> bool {
    if sock.write_all(API_VERSIONS).is_err() {
        return false;
    }
    let mut size = [0u8; 4];
    if sock.read_exact(&mut size).is_err() {
        return false;
    }
    let mut rest = vec![0u8; i32::from_be_bytes(size) as usize];
    sock.read_exact(&mut rest).is_ok() && rest[..4] == 9i32.to_be_bytes()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock
}

#[test]
fn past_the_cap_new_connections_are_closed_and_the_others_served() {
    let log = CapturedLogs::install();
    let (_dir, broker) = start(5, Duration::from_secs(600));
    let mut held: Vec<TcpStream> = (0..5).map(|_| connect(broker.addr)).collect();
    for s in &mut held {
        assert!(answers(s), "a connection within the cap is served");
    }
    for _ in 0..20 {
        let mut extra = connect(broker.addr);
        let started = Instant::now();
        assert!(closed_by_server(&mut extra), "a connection past the cap is closed");
        assert!(started.elapsed() < Duration::from_secs(5), "closed at once, not after a timeout");
    }
    for s in &mut held {
        assert!(answers(s), "the connections within the cap are still served");
    }
    // One closes: a new connection gets its slot (the server notices the close asynchronously).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = connect(broker.addr);
        if answers(&mut again) {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed within 10 s of a connection closing");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(log.count("at its limit of 5 connections"), 1, "one line for the condition, not one per connection");
    assert_eq!(log.count("below its connection limit again"), 1);
}

#[test]
fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
    let (_dir, broker) = start(100, Duration::from_millis(1500));
    let mut idle = connect(broker.addr);
    let mut busy = connect(broker.addr);
    assert!(answers(&mut idle) && answers(&mut busy));
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3000) {
        assert!(answers(&mut busy), "a connection sending requests stays open");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(closed_by_server(&mut idle), "the idle connection was closed");
}

#[test]
fn an_unauthenticated_client_cannot_make_the_broker_buffer_a_large_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ListenerConfig::new("127.0.0.1:0".parse().unwrap());
    config.users = Some([("alice".to_string(), "secret".to_string())].into());
    let broker = BackgroundBroker::start(weir_broker::BrokerConfig::new(dir.path()), config).unwrap();
    // A Metadata request's size prefix of 50 MiB, before any SASL exchange: refused on its size alone.
    let mut sock = connect(broker.addr);
    sock.write_all(&(50i32 << 20).to_be_bytes()).unwrap();
    sock.write_all(&[0, 3, 0, 1, 0, 0, 0, 1]).unwrap();
    assert!(closed_by_server(&mut sock), "an unauthenticated 50 MiB frame closes the connection");
    // A small request other than ApiVersions or SASL is refused before its body is even decoded.
    let mut sock = connect(broker.addr);
    sock.write_all(&[0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff]).unwrap();
    assert!(closed_by_server(&mut sock));
    let mut sock = connect(broker.addr);
    assert!(answers(&mut sock), "ApiVersions is still answered before authentication");
}
