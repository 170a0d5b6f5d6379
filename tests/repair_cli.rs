//! `weir repair example` and `weir repair simulate` as a user runs them.

mod support;

#[test]
fn example_prints_each_event_as_json_and_its_avro_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::ok(dir.path(), &["repair", "example"]);
    for name in ["ticket_opened", "appointment_booked", "payment_registered", "ticket_closed"] {
        assert!(out.contains(&format!("# {name} (topic ")), "{name} missing:\n{out}");
    }
    assert!(out.contains("\"amount\": \"349.00\""), "the decimal shown exactly:\n{out}");
    assert!(out.contains("\"logicalType\": \"decimal\""), "{out}");
    assert!(out.contains("\"occurred_on\": \"2025-12-01T08:00:00.000Z\""), "{out}");
}

#[test]
fn simulate_closes_every_ticket_once_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        support::ok(dir.path(), &["repair", "simulate", "--tickets", "2000", "--batch", "250", "--report", "json"]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["opened"], 2000, "{report}");
    assert_eq!(report["closed"], 2000, "{report}");
    assert_eq!(report["stuck"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert!(report["close_p99_ms"].as_u64().unwrap() >= report["close_p50_ms"].as_u64().unwrap(), "{report}");
    // A bad flag is refused with a message, not a panic.
    let bad = support::run(dir.path(), &["repair", "simulate", "--speed", "fast"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a speed"), "{bad:?}");
}
