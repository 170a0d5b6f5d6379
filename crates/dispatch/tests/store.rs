//! Dispatch's tables on SQLite and PostgreSQL: generated events written in one transaction, every rule the tables
//! hold (severity, states, one open assignment per event) refused when broken.

use rand::SeedableRng;
use weir_dispatch::events::{generate, State};
use weir_dispatch::store;
use weir_runtime::SqlStore;

async fn stores() -> Vec<(SqlStore, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqlStore::connect(&SqlStore::sqlite_url(dir.path())).await.unwrap();
    let postgres = SqlStore::connect(&weir_runtime::testing::fresh_postgres().await).await.unwrap();
    vec![(sqlite, dir), (postgres, tempfile::tempdir().unwrap())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_events_are_written_in_one_transaction_and_the_tables_hold_their_rules() {
    for (store, _dir) in stores().await {
        let d = store.dialect();
        store::migrate(&store).await.unwrap();
        store::migrate(&store).await.unwrap(); // twice: a restart
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let events = generate(1234, 1_764_576_000_000, &mut rng);

        // Rolled back: nothing written.
        let mut tx = store.begin().await.unwrap();
        store::insert_events(&mut tx, d, &events).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(store::counts_by_state(&store).await.unwrap()[0], (State::NotViewed, 0), "{d:?}");

        let mut tx = store.begin().await.unwrap();
        store::insert_events(&mut tx, d, &events).await.unwrap();
        tx.commit().await.unwrap();
        let counts = store::counts_by_state(&store).await.unwrap();
        assert_eq!(counts[0], (State::NotViewed, 1234), "{d:?}");
        assert!(counts[1..].iter().all(|(_, n)| *n == 0), "{counts:?}");

        // A severity out of 1-5 and an unknown state are refused.
        let mut bad = generate(1, 1, &mut rng);
        bad[0].severity = 6;
        let mut tx = store.begin().await.unwrap();
        assert!(store::insert_events(&mut tx, d, &bad).await.is_err(), "{d:?}: severity 6 accepted");
        drop(tx);
        let sql = "UPDATE detection_events SET state = 'Viewed' WHERE event_id = $1";
        let e = events[0].event_id.to_string();
        assert!(sqlx::query(sql).bind(&e).execute(store.pool()).await.is_err(), "{d:?}: state Viewed accepted");

        // One open assignment per event: a second is refused, a settled one does not count. (Assignments are of
        // the assignment service's copy of the event.)
        let mut tx = store.begin().await.unwrap();
        weir_dispatch::assign::receive(&mut tx, d, &events[0].outbound(), 1).await.unwrap();
        tx.commit().await.unwrap();
        let assign = |id: &str, user: &str, status: &str| {
            sqlx::query(
                "INSERT INTO assignments (assignment_id, event_id, user_id, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 1, 1)",
            )
            .bind(id.to_string())
            .bind(e.clone())
            .bind(user.to_string())
            .bind(status.to_string())
        };
        assign("a1", "u1", "open").execute(store.pool()).await.unwrap();
        assert!(assign("a2", "u2", "open").execute(store.pool()).await.is_err(), "{d:?}: two open assignments");
        assign("a3", "u2", "reassigned").execute(store.pool()).await.unwrap();
        assert!(assign("a4", "u3", "pending").execute(store.pool()).await.is_err(), "{d:?}: status pending accepted");
        // The seed's "completed" is a status the table takes (the origin's CHECK refused it with a 500).
        sqlx::query("UPDATE assignments SET status = 'completed' WHERE assignment_id = 'a1'")
            .execute(store.pool())
            .await
            .unwrap();
        assign("a5", "u2", "open").execute(store.pool()).await.unwrap();
    }
}

/// New events reach `events.outbound` through the runtime's outbox: each once, as the origin's camelCase message,
/// keyed and identified by its event id; a rolled-back write publishes nothing; nothing is published again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_events_are_relayed_to_events_outbound_once_each() {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;
    use std::time::Duration;
    use weir_dispatch::events::OutboundEvent;
    use weir_runtime::outbox::Relay;
    use weir_runtime::{Bus, EmbeddedBus, SubscribeOptions};

    for (store, _dir) in stores().await {
        let d = store.dialect();
        store::migrate(&store).await.unwrap();
        let (_broker_dir, broker) = weir_broker::testing::scratch_broker();
        broker.create_topic(store::OUTBOUND, 3, BTreeMap::new()).unwrap();
        let bus = EmbeddedBus::new(broker.clone());
        let relay = Relay::new(store.clone(), Arc::new(bus.clone()));
        let waker = relay.waker();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let events = generate(700, 1_764_576_000_000, &mut rng);

        let mut tx = store.begin().await.unwrap();
        let dropped = store::insert_and_relay(&mut tx, d, &generate(5, 1, &mut rng)).await.unwrap();
        tx.rollback().await.unwrap();
        drop(dropped);
        let mut tx = store.begin().await.unwrap();
        let enqueued = store::insert_and_relay(&mut tx, d, &events).await.unwrap();
        tx.commit().await.unwrap();
        waker.committed(enqueued);
        let mut published = 0;
        loop {
            let n = relay.relay_once().await.unwrap();
            if n == 0 {
                break;
            }
            published += n;
        }
        assert_eq!(published, 700, "{d:?}");
        assert_eq!(relay.relay_once().await.unwrap(), 0, "{d:?}: nothing again");

        let mut sub = bus.subscribe(SubscribeOptions::new("check", [store::OUTBOUND])).await.unwrap();
        let mut seen: HashMap<String, OutboundEvent> = HashMap::new();
        while seen.len() < 700 {
            let batch = sub.next_batch(Duration::from_secs(5)).await.unwrap();
            assert!(!batch.is_empty(), "{d:?}: stalled at {}", seen.len());
            for m in batch {
                let event: OutboundEvent = serde_json::from_slice(m.value.as_deref().unwrap()).unwrap();
                let id = event.event_id.to_string();
                assert_eq!(m.key.as_deref(), Some(id.as_bytes()));
                assert_eq!(m.header(weir_runtime::handler::EVENT_ID_HEADER).map(|h| &h[..]), Some(id.as_bytes()));
                assert!(seen.insert(id, event).is_none(), "{d:?}: published twice");
            }
        }
        for e in &events {
            assert_eq!(seen[&e.event_id.to_string()], e.outbound(), "{d:?}");
        }
        let ends: i64 = (0..3).map(|p| broker.offsets(store::OUTBOUND, p).unwrap().1).sum();
        assert_eq!(ends, 700, "{d:?}: the rolled-back five never published");
    }
}

/// Results from `events.inbound` apply newest first whatever order they come in: an older or repeated one (a
/// re-publication after a crash) changes nothing, one by one or in a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_apply_by_version_so_a_late_or_repeated_one_changes_nothing() {
    use weir_dispatch::events::{ResultMessage, ResultStatus};
    for (store, _dir) in stores().await {
        let d = store.dialect();
        store::migrate(&store).await.unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let events = generate(2, 1_764_576_000_000, &mut rng);
        let mut tx = store.begin().await.unwrap();
        store::insert_events(&mut tx, d, &events).await.unwrap();
        tx.commit().await.unwrap();
        let (a, b) = (events[0].event_id.to_string(), events[1].event_id.to_string());
        let result = |event: &str, status, version| ResultMessage {
            assignment_id: "x".into(),
            event_id: event.to_string(),
            user_id: "u".into(),
            status,
            occurred_at: "2025-12-01T08:00:00.000Z".into(),
            version,
        };
        let state = |event: String| {
            let store = store.clone();
            async move {
                let sql = format!("SELECT state FROM detection_events WHERE event_id = '{event}'");
                let row = sqlx::query(&sql).fetch_one(store.pool()).await.unwrap();
                sqlx::Row::get::<String, _>(&row, 0)
            }
        };
        let mut tx = store.begin().await.unwrap();
        assert!(store::apply_result(&mut tx, d, &result(&a, ResultStatus::Assigned, 1), 1).await.unwrap());
        assert!(store::apply_result(&mut tx, d, &result(&a, ResultStatus::Approved, 2), 2).await.unwrap());
        // The assignment's message again (re-published), then an unknown event: nothing changes.
        assert!(!store::apply_result(&mut tx, d, &result(&a, ResultStatus::Assigned, 1), 3).await.unwrap());
        assert!(!store::apply_result(&mut tx, d, &result("nope", ResultStatus::Assigned, 1), 3).await.unwrap());
        // A batch, out of order and with a repeat: the newest per event wins.
        let batch = [
            result(&b, ResultStatus::Reassigned, 2),
            result(&b, ResultStatus::Assigned, 3),
            result(&b, ResultStatus::Assigned, 1),
            result(&a, ResultStatus::Assigned, 1),
        ];
        assert_eq!(store::apply_results(&mut tx, d, &batch, 4).await.unwrap(), 1, "{d:?}: only b changes");
        tx.commit().await.unwrap();
        assert_eq!(state(a).await, State::Approved.as_str(), "{d:?}");
        assert_eq!(state(b).await, State::Assigned.as_str(), "{d:?}");
    }
}
