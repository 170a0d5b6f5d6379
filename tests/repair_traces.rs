//! The repair shop's spans exported over OTLP/HTTP, as a collector (Jaeger, Tempo, the OpenTelemetry Collector)
//! receives them: `weir up` with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a collector the test runs, each ticket's
//! four hops arriving as spans of one trace, under each service's own `service.name`, every hop linked to ("follows
//! from") the span of the record it handled. Settings no exporter here can honour stop the start with a message.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{curl_json, start_up_command, weir};

/// The spans a collector received: `(service.name, span)` with span as OTLP/JSON has it.
type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// A minimal OTLP/HTTP collector (JSON encoding): answers every `POST /v1/traces` with 200 and keeps its spans.
fn collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let received: Received = Arc::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let keep = keep.clone();
            std::thread::spawn(move || serve(stream, keep));
        }
    });
    (addr, received)
}

fn serve(stream: TcpStream, received: Received) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    // One request after another on the connection (the exporter keeps it alive).
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert!(request_line.starts_with("POST /v1/traces "), "the exporter posts to /v1/traces: {request_line}");
        let export: serde_json::Value = serde_json::from_slice(&body).expect("an OTLP/JSON body");
        for resource in export["resourceSpans"].as_array().unwrap() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].as_str().unwrap().to_string())
                .expect("every resource names its service");
            for scope in resource["scopeSpans"].as_array().unwrap() {
                for span in scope["spans"].as_array().unwrap() {
                    received.lock().unwrap().push((service.clone(), span.clone()));
                }
            }
        }
        let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn ticket(i: usize) -> serde_json::Value {
    let repair_type = ["windshield", "bumper", "body"][i % 3];
    serde_json::json!({"requester": {"email": format!("t{i}@example.com"), "name": "Ada", "surname": "Lovelace",
        "age": 40}, "repair_type": repair_type})
}

#[test]
fn each_hop_is_a_span_of_the_ticket_s_trace_linked_to_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, received) = collector();
    let mut command = support::repair_up(dir.path(), &[]);
    command.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"));
    command.env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    let (mut up, _kafka, http, _stderr) = start_up_command(command);

    let list = serde_json::Value::Array((0..20).map(ticket).collect());
    let (opened, status) = curl_json(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &list.to_string(),
        &format!("http://{http}/api/repair/tickets"),
    ]);
    assert_eq!(status, "201", "{opened}");
    let tickets: Vec<String> =
        opened["tickets"].as_array().unwrap().iter().map(|t| t["ticket_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(tickets.len(), 20);

    // Each ticket's trace id, as its API view gives it.
    let by = Instant::now() + Duration::from_secs(60);
    let mut trace_of = HashMap::new();
    for t in &tickets {
        loop {
            let (view, _) = curl_json(&[&format!("http://{http}/api/repair/tickets/{t}")]);
            if view["status"] == "closed" {
                trace_of.insert(t.clone(), view["trace_id"].as_str().expect("a trace id").to_string());
                break;
            }
            assert!(Instant::now() < by, "ticket {t} did not close: {view}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Spans leave in batches, at least once a second: wait for the four hops of every ticket.
    let hops_of = |ticket: &str| -> Vec<(String, serde_json::Value)> {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, span)| {
                span["attributes"].as_array().is_some_and(|a| {
                    a.iter().any(|a| a["key"] == "repair.ticket_id" && a["value"]["stringValue"] == ticket)
                })
            })
            .cloned()
            .collect()
    };
    let by = Instant::now() + Duration::from_secs(30);
    while tickets.iter().any(|t| hops_of(t).len() < 4) {
        assert!(Instant::now() < by, "not every ticket's four spans arrived: {:?}", hops_of(&tickets[0]));
        std::thread::sleep(Duration::from_millis(100));
    }

    for t in &tickets {
        let hops = hops_of(t);
        let find = |service: &str, names: &[&str]| {
            hops.iter()
                .find(|(s, span)| s == service && names.contains(&span["name"].as_str().unwrap()))
                .map(|(_, span)| span.clone())
                .unwrap_or_else(|| panic!("no {service} span {names:?} for {t}: {hops:?}"))
        };
        let opened = find("ticketing", &["send tickets"]);
        let booked = find("secretary", &["process tickets"]);
        // Paid on receiving the appointment, or by the till once the repair's time came.
        let paid = find("cash-desk", &["process appointments", "pay due repairs"]);
        let closed = find("ticketing", &["process payments"]);
        for span in [&opened, &booked, &paid, &closed] {
            assert_eq!(span["traceId"], trace_of[t].as_str(), "one trace per ticket, the API's: {span}");
            let start: u64 = span["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
            let end: u64 = span["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
            assert!(start > 0 && end >= start, "{span}");
        }
        assert!(opened["links"].as_array().is_none_or(|l| l.is_empty()), "the root follows nothing: {opened}");
        // Each hop follows from the one before (a link, not a parent).
        for (span, before) in [(&booked, &opened), (&paid, &booked), (&closed, &paid)] {
            let links = span["links"].as_array().unwrap_or_else(|| panic!("no links: {span}"));
            assert_eq!(links.len(), 1, "{span}");
            assert_eq!(links[0]["spanId"], before["spanId"], "{} follows from {}", span["name"], before["name"]);
            assert_eq!(links[0]["traceId"], before["traceId"]);
            assert!(span["parentSpanId"].as_str().is_none_or(str::is_empty), "a link, not a parent: {span}");
        }
        // OTLP's span kinds: 4 producer, 5 consumer.
        assert_eq!(opened["kind"], 4, "{opened}");
        assert_eq!(booked["kind"], 5, "{booked}");
    }
    up.kill().unwrap();
    up.wait().unwrap();
}

#[test]
fn settings_no_exporter_here_can_honour_stop_the_start_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["up", "--systems", "repair", "--kafka-listen", "none", "--http-listen", "127.0.0.1:0"];
    let out = weir(dir.path(), &args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("gRPC") && err.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && err.contains("4318"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out =
        weir(dir.path(), &args).env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4318").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && err.contains("plain HTTP"), "{err}");
}

#[test]
fn a_collector_that_does_not_answer_costs_spans_not_tickets() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut command = support::repair_up(dir.path(), &[]);
    command.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}"));
    let (mut up, _kafka, http, _stderr) = start_up_command(command);
    let list = serde_json::Value::Array((0..10).map(ticket).collect());
    let url = format!("http://{http}/api/repair/tickets");
    let (opened, status) =
        curl_json(&["-X", "POST", "-H", "Content-Type: application/json", "-d", &list.to_string(), &url]);
    assert_eq!(status, "201", "{opened}");
    let by = Instant::now() + Duration::from_secs(60);
    loop {
        let (stats, _) = curl_json(&[&format!("http://{http}/api/repair/stats")]);
        let dropped = support::metric(&http, "weir_otlp_spans_dropped_total");
        if stats["tickets"]["closed"] == 10 && dropped >= 40.0 {
            assert!(support::metric(&http, "weir_otlp_export_errors_total") >= 1.0);
            break;
        }
        assert!(Instant::now() < by, "tickets should close and spans be counted as dropped: {stats}, {dropped}");
        std::thread::sleep(Duration::from_millis(200));
    }
    up.kill().unwrap();
    up.wait().unwrap();
}
