//! Schema validation's answer on the wire, with a stand-in validator (the registry's is tested with real clients in
//! weir-schema): a refused Produce gets INVALID_RECORD with the reasons as the error message, and from v8 the
//! refused records' indexes in `record_errors`; older versions get the code alone; nothing of the refused batch is
//! stored.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{ApiKey, ProduceResponse, RequestHeader, RequestKind, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use weir_broker::testing::broker_config;
use weir_broker::validation::VALUE_VALIDATION;
use weir_broker::{RecordValidator, TopicValidation};
use weir_kafka::error_code::{INVALID_RECORD, NONE};
use weir_kafka::{BackgroundBroker, ListenerConfig};

/// Takes values that start with `ok`.
#[derive(Debug)]
struct StartsWithOk;

impl RecordValidator for StartsWithOk {
    fn check(&self, _: &str, _: &TopicValidation, _: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
        match value {
            Some(v) if !v.starts_with(b"ok") => Err("value does not start with ok".into()),
            _ => Ok(()),
        }
    }
}

fn batch(values: &[&'static str]) -> Bytes {
    let records: Vec<weir_log::Record> = values.iter().map(|v| weir_log::Record::from_value(*v)).collect();
    let mut b = Vec::new();
    weir_log::batch::encode(&records, 1_700_000_000_000, &mut b);
    Bytes::from(b)
}

/// One Produce of `records` to `checked`-0 at `version`, over a socket; the partition's answer.
fn produce(addr: std::net::SocketAddr, records: Bytes, version: i16) -> PartitionProduceResponse {
    let mut p = PartitionProduceData::default();
    p.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str("checked"));
    t.partition_data = vec![p];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data = vec![t];
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Produce as i16;
    header.request_api_version = version;
    header.correlation_id = 1;
    let mut frame = BytesMut::new();
    header.encode(&mut frame, ApiKey::Produce.request_header_version(version)).unwrap();
    RequestKind::Produce(request).encode(&mut frame, version).unwrap();

    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sock.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
    sock.write_all(&frame).unwrap();
    let mut size = [0u8; 4];
    sock.read_exact(&mut size).unwrap();
    let mut rest = vec![0u8; i32::from_be_bytes(size) as usize];
    sock.read_exact(&mut rest).unwrap();
    let header_len = if ApiKey::Produce.response_header_version(version) >= 1 { 5 } else { 4 };
    let mut body = Bytes::from(rest).slice(header_len..);
    let mut response = ProduceResponse::decode(&mut body, version).unwrap();
    response.responses.remove(0).partition_responses.remove(0)
}

#[test]
fn a_refused_produce_names_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let w = BackgroundBroker::start(broker_config(dir.path()), ListenerConfig::new("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    w.broker.set_record_validator(Arc::new(StartsWithOk));
    let settings = [(VALUE_VALIDATION.to_string(), "true".to_string())].into();
    w.broker.create_topic("checked", 1, settings).unwrap();

    let bad = || batch(&["ok 0", "nope", "ok 2", "nope either"]);
    let answer = produce(w.addr, bad(), 9);
    assert_eq!(answer.error_code, INVALID_RECORD);
    assert_eq!(
        answer.error_message.as_deref(),
        Some("record 1: value does not start with ok; record 3: value does not start with ok")
    );
    let errors: Vec<(i32, Option<&str>)> =
        answer.record_errors.iter().map(|e| (e.batch_index, e.batch_index_error_message.as_deref())).collect();
    assert_eq!(errors, vec![(1, Some("value does not start with ok")), (3, Some("value does not start with ok"))]);
    assert_eq!(answer.base_offset, -1);

    // Before v8 the answer has no message or record fields: it still encodes, with the code.
    let old = produce(w.addr, bad(), 3);
    assert_eq!(old.error_code, INVALID_RECORD);
    assert!(old.record_errors.is_empty());
    assert_eq!(w.broker.offsets("checked", 0).unwrap(), (0, 0), "nothing of the refused batches stored");

    let good = produce(w.addr, batch(&["ok a", "ok b"]), 9);
    assert_eq!((good.error_code, good.base_offset, good.record_errors.len()), (NONE, 0, 0));
    assert_eq!(w.broker.offsets("checked", 0).unwrap(), (0, 2));
}
