//! The listener's connection limits (issue 13, F8: 300 idle connections exhausted the file descriptors and made the
//! broker unreachable): a cap past which new connections are closed at once while the others keep being served, an
//! idle timeout, and one log line per condition rather than one per refused connection. And stopping drains (issue
//! 14): new connections are refused, a request in flight is answered before its connection closes, and one that takes
//! longer than the drain timeout is cut off.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::{ApiKey, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
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
    let config = ListenerConfig::new("127.0.0.1:0".parse().unwrap()).with_users(&[("alice", "secret")]);
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

/// A Fetch v4 of topic `t` partition 0 from offset 0 that long-polls up to `max_wait_ms` for a first byte, as a frame.
fn long_poll_fetch(correlation_id: i32, max_wait_ms: i32) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Fetch as i16;
    header.request_api_version = 4;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("t"));
    let mut partition = FetchPartition::default();
    partition.partition_max_bytes = 1 << 20;
    let mut topic = FetchTopic::default();
    topic.topic = TopicName(StrBytes::from_static_str("t"));
    topic.partitions = vec![partition];
    let mut fetch = FetchRequest::default();
    fetch.max_wait_ms = max_wait_ms;
    fetch.min_bytes = 1;
    fetch.max_bytes = 1 << 20;
    fetch.topics = vec![topic];
    let mut body = BytesMut::new();
    header.encode(&mut body, ApiKey::Fetch.request_header_version(4)).unwrap();
    fetch.encode(&mut body, 4).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    frame.to_vec()
}

/// Reads one response frame and returns its correlation id, or `None` if the connection closed first.
fn response_correlation_id(sock: &mut TcpStream) -> Option<i32> {
    let mut size = [0u8; 4];
    sock.read_exact(&mut size).ok()?;
    let mut rest = vec![0u8; i32::from_be_bytes(size) as usize];
    sock.read_exact(&mut rest).ok()?;
    Some(i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]))
}

/// Waits until connecting to `addr` is refused (the listener is closed); panics after `within`.
fn refused_within(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        assert!(Instant::now() < deadline, "the listener still accepts connections {within:?} after stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stopping_refuses_new_connections_and_answers_the_request_in_flight_before_closing() {
    let (_dir, broker) = start(100, Duration::from_secs(600));
    broker.broker.create_topic("t", 1, Default::default()).unwrap();
    let addr = broker.addr;
    let mut idle = connect(addr);
    assert!(answers(&mut idle));
    // A Fetch on an empty partition waits its 2 s out: it is in flight when the listener stops.
    let mut busy = connect(addr);
    busy.write_all(&long_poll_fetch(42, 2000)).unwrap();
    let sent = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    // Dropping the background broker stops its listener and waits for the drain.
    let stopper = std::thread::spawn(move || drop(broker));
    refused_within(addr, Duration::from_secs(1));
    assert!(sent.elapsed() < Duration::from_millis(1800), "new connections were refused while the Fetch was in flight");
    assert!(closed_by_server(&mut idle), "a connection between requests is closed at once");
    assert_eq!(response_correlation_id(&mut busy), Some(42), "the request in flight is answered");
    assert!(sent.elapsed() >= Duration::from_millis(1900), "the answer is the Fetch's own, after its wait");
    assert!(closed_by_server(&mut busy), "then its connection is closed");
    stopper.join().unwrap();
}

#[test]
fn a_request_outlasting_the_drain_timeout_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ListenerConfig::new("127.0.0.1:0".parse().unwrap());
    config.drain_timeout = Duration::from_millis(500);
    let broker = BackgroundBroker::start(weir_broker::BrokerConfig::new(dir.path()), config).unwrap();
    broker.broker.create_topic("t", 1, Default::default()).unwrap();
    let mut busy = connect(broker.addr);
    busy.write_all(&long_poll_fetch(42, 60_000)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    drop(broker);
    assert!(started.elapsed() < Duration::from_secs(5), "stop waited {:?}, not the drain timeout", started.elapsed());
    assert_eq!(response_correlation_id(&mut busy), None, "the minute-long Fetch is closed unanswered");
}
