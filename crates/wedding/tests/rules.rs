//! The exercise's rules on the virtual clock, one test per rule, and the bound holding over random weddings.

use weir_wedding::dataset;
use weir_wedding::report::report;
use weir_wedding::rules::{canonical_type, Priority, Rules, Team, SECOND};
use weir_wedding::schedule::{simulate, upper_bound, Event, Policy};

fn ev(id: &str, ty: &str, priority: Priority, at_s: i64) -> Event {
    Event {
        id: id.into(),
        event_type: canonical_type(ty).unwrap(),
        priority,
        description: String::new(),
        happened: at_s * SECOND,
    }
}

#[test]
fn a_standard_team_takes_nothing_before_20_s() {
    let events = [ev("a", "brawl", Priority::High, 1), ev("b", "brawl", Priority::Low, 10)];
    let out = simulate(&Rules::default(), &events, Policy::Edf);
    assert!(!out[0].happy && out[0].started.is_none(), "nobody is available before 20 s: {:?}", out[0]);
    assert_eq!(out[1].started, Some(20 * SECOND));
    assert!(out[1].happy && out[1].team == Some(Team::Security));
}

#[test]
fn an_event_whose_team_stays_busy_is_missed_at_its_deadline() {
    // Officiant: concentrated, busy for the first 60 s.
    let events = [ev("rings", "missing_rings", Priority::Medium, 30)];
    let out = simulate(&Rules::default(), &events, Policy::Edf);
    assert_eq!((out[0].happy, out[0].started, out[0].missed_at), (false, None, Some(40 * SECOND)));
}

#[test]
fn a_handling_never_crosses_the_end_of_an_available_phase() {
    let events = [ev("late-in-phase", "brawl", Priority::Low, 23)];
    let out = simulate(&Rules::default(), &events, Policy::Edf);
    // 23 s + 3 s would end after 25 s: the next phase starts at 45 s, past the deadline (38 s).
    assert_eq!((out[0].started, out[0].happy), (None, false));
    let overrun = Rules { allow_overrun: true, ..Rules::default() };
    let out = simulate(&overrun, &events, Policy::Edf);
    assert_eq!((out[0].started, out[0].happy), (Some(23 * SECOND), true), "allowed by the setting");
}

#[test]
fn edf_saves_a_high_event_that_fifo_loses() {
    // At 20 s security's two workers each have one handling before 25 s; two old low events can no longer make it.
    let events = [
        ev("l1", "brawl", Priority::Low, 6),
        ev("l2", "brawl", Priority::Low, 7),
        ev("h", "brawl", Priority::High, 19),
    ];
    let fifo = simulate(&Rules::default(), &events, Policy::Fifo);
    let edf = simulate(&Rules::default(), &events, Policy::Edf);
    assert_eq!(fifo.iter().filter(|o| o.happy).count(), 0, "fifo spends both workers on hopeless events: {fifo:?}");
    assert!(edf[2].happy && edf[2].started == Some(20 * SECOND), "{edf:?}");
}

#[test]
fn a_type_routed_to_two_teams_is_handled_once() {
    let events: Vec<Event> = (0..6).map(|i| ev(&format!("ill{i}"), "feeling_ill", Priority::Low, 15 + i)).collect();
    let out = simulate(&Rules::default(), &events, Policy::Edf);
    let handled: Vec<_> = out.iter().filter(|o| o.started.is_some()).collect();
    // Waiters (standard) are available at 20 s, catering (concentrated) only at 60 s: two handled, once each.
    assert_eq!(handled.len(), 2);
    assert!(handled.iter().all(|o| o.team == Some(Team::Waiters)));
}

#[test]
fn no_policy_beats_the_bound_and_edf_beats_fifo() {
    let rules = Rules::default();
    for seed in 1..=5 {
        let events = dataset::generate(1000, rules.wedding_length, seed);
        let bound = upper_bound(&rules, &events);
        let fifo = report(&rules, &events, &simulate(&rules, &events, Policy::Fifo), Policy::Fifo);
        let edf = report(&rules, &events, &simulate(&rules, &events, Policy::Edf), Policy::Edf);
        assert!(
            edf.happy <= bound && fifo.happy <= bound,
            "seed {seed}: bound {bound}, edf {}, fifo {}",
            edf.happy,
            fifo.happy
        );
        assert!(edf.happy >= fifo.happy, "seed {seed}: edf {} < fifo {}", edf.happy, fifo.happy);
        assert_eq!(edf.happy + edf.stress, 1000);
        // Deterministic: the same wedding, the same report.
        let again = report(&rules, &events, &simulate(&rules, &events, Policy::Edf), Policy::Edf);
        assert_eq!((again.happy, again.by_team.clone()), (edf.happy, edf.by_team.clone()));
    }
}

/// A 1,000-event dataset in the exercise's format (`MM:SS`, `broken_itens`, capitalised priorities), made with
/// `weir wedding dataset --seed 11`.
#[test]
fn a_thousand_event_dataset_in_the_exercise_format() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/wedding-1000.json")).unwrap();
    assert!(text.contains("broken_itens") && text.contains("\"05:"), "the exercise's spellings and clock");
    let events = dataset::parse(&text, 360_000, &|_| None).unwrap();
    assert_eq!(events.len(), 1000);
    assert!(events.iter().all(|e| (1_000..=360_000).contains(&e.happened)));
    for p in [Priority::High, Priority::Medium, Priority::Low] {
        assert!(events.iter().filter(|e| e.priority == p).count() > 200, "mixed priorities");
    }
    let rules = Rules::default();
    let edf = report(&rules, &events, &simulate(&rules, &events, Policy::Edf), Policy::Edf);
    assert_eq!(edf.upper_bound_kind, "exact");
    assert!(edf.happy <= edf.upper_bound && edf.happy as f64 >= 0.99 * edf.upper_bound as f64, "{edf:?}");
}

#[test]
fn datasets_in_the_exercise_format_parse_and_bad_ones_name_the_field() {
    let text = r#"[
        {"id": 1, "event_type": "broken_itens", "priority": "HIGH", "description": "a glass", "timestamp": "00:21"},
        {"event_type": "Music-Too-Loud", "priority": "low", "description": "", "timestamp": 75},
        {"event_type": "brawl", "priority": "Medium", "description": "", "timestamp": "05:37"}
    ]"#;
    let events = dataset::parse(text, 360_000, &|_| None).unwrap();
    assert_eq!(events[0].event_type, "broken_items");
    assert_eq!((events[0].id.as_str(), events[0].happened, events[0].priority), ("1", 21_000, Priority::High));
    assert_eq!((events[1].event_type, events[1].happened), ("music", 75_000));
    assert_eq!(events[2].happened, 337_000);
    let bad = dataset::parse(r#"[{"event_type": "karaoke", "priority": "high"}]"#, 360_000, &|_| None).unwrap_err();
    assert!(bad.to_string().contains("event_type") && bad.to_string().contains("karaoke"), "{bad}");
    let bad = dataset::parse(r#"[{"event_type": "brawl", "priority": "urgent"}]"#, 360_000, &|_| None).unwrap_err();
    assert!(bad.to_string().contains("priority"), "{bad}");
    let bad =
        dataset::parse(r#"[{"event_type": "brawl", "priority": "low", "timestamp": "99:99"}]"#, 360_000, &|_| None)
            .unwrap_err();
    assert!(bad.to_string().contains("timestamp"), "{bad}");
    // No timestamps: spread over the wedding in file order.
    let spread = dataset::parse(
        r#"[{"event_type": "brawl", "priority": "low"}, {"event_type": "brawl", "priority": "low"}]"#,
        360_000,
        &|_| None,
    )
    .unwrap();
    assert_eq!((spread[0].happened, spread[1].happened), (180_000, 360_000));
}
