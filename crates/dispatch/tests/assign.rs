//! The assignment rules, on SQLite and PostgreSQL: the cap under two concurrent assigners, fairness, waiting when
//! nobody has room, ended sessions taken back, settling only what is open, regions, and each change's result
//! message in the outbox.

use std::collections::HashMap;
use std::time::Duration;

use rand::SeedableRng;
use sqlx::Row;
use weir_dispatch::assign::{self, Outcome, Rules, SettleError};
use weir_dispatch::events::generate;
use weir_dispatch::store;
use weir_runtime::SqlStore;

const NOW: i64 = 1_764_576_000_000;

async fn fresh(db: &str) -> (SqlStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match db {
        "sqlite" => SqlStore::sqlite_url(dir.path()),
        _ => weir_runtime::testing::fresh_postgres().await,
    };
    let store = SqlStore::connect(&url).await.unwrap();
    store::migrate(&store).await.unwrap();
    (store, dir)
}

/// `n` generated events received by the assignment service (as its consumer takes them from `events.outbound`).
async fn add_events(store: &SqlStore, n: usize, seed: u64) -> Vec<String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let events = generate(n, NOW, &mut rng);
    let mut tx = store.begin().await.unwrap();
    for e in &events {
        assert!(assign::receive(&mut tx, store.dialect(), &e.outbound(), NOW).await.unwrap());
        // A re-publication changes nothing.
        assert!(!assign::receive(&mut tx, store.dialect(), &e.outbound(), NOW).await.unwrap());
    }
    tx.commit().await.unwrap();
    events.iter().map(|e| e.event_id.to_string()).collect()
}

/// Registers reviewers (no region) and returns them, the active list the sessions would give.
async fn reviewers(store: &SqlStore, names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut active = Vec::new();
    for u in names {
        assign::register(store, &u, None).await.unwrap();
        active.push(u);
    }
    active
}

fn users(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|u| format!("user-{u:02}"))
}

/// Result messages waiting in the outbox for `events.inbound`, by status.
async fn results(store: &SqlStore) -> HashMap<String, i64> {
    let rows = sqlx::query("SELECT payload FROM weir_outbox WHERE topic = 'events.inbound'")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let mut out = HashMap::new();
    for r in rows {
        let payload: Vec<u8> = r.get(0);
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        *out.entry(v["status"].as_str().unwrap().to_string()).or_default() += 1;
    }
    out
}

/// Open assignments per user, from the assignments themselves.
async fn open_per_user(store: &SqlStore) -> HashMap<String, i64> {
    sqlx::query("SELECT user_id, COUNT(*) FROM assignments WHERE status = 'open' GROUP BY user_id")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect()
}

async fn waiting(store: &SqlStore) -> i64 {
    assign::waiting(store).await.unwrap()
}

async fn cap_holds_under_two_concurrent_assigners(db: &str) {
    let (store, _dir) = fresh(db).await;
    let active = reviewers(&store, users(20)).await;
    add_events(&store, 5000, 1).await;
    let watching = tokio::sync::watch::channel(false);
    // Nobody above 50 at any moment: watched in SQL while the assigners run.
    let checker = {
        let (store, mut done) = (store.clone(), watching.1.clone());
        tokio::spawn(async move {
            let mut highest = 0;
            while !*done.borrow() {
                highest = highest.max(open_per_user(&store).await.values().copied().max().unwrap_or(0));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = done.changed() => {}
                }
            }
            highest
        })
    };
    let assigner = |store: SqlStore, active: Vec<String>| {
        tokio::spawn(async move {
            let mut made = 0;
            loop {
                let round = assign::assign_waiting(&store, Rules::default(), &active, NOW, 100).await.unwrap();
                if round.is_empty() {
                    return made;
                }
                made += round.len();
            }
        })
    };
    let (a, b) = (assigner(store.clone(), active.clone()), assigner(store.clone(), active.clone()));
    let made = a.await.unwrap() + b.await.unwrap();
    watching.0.send(true).unwrap();
    let highest = checker.await.unwrap();
    assert!(highest <= 50, "{db}: a reviewer held {highest} open assignments");
    assert_eq!(made, 1000, "{db}: 20 reviewers × 50");
    let open = open_per_user(&store).await;
    assert_eq!(open.len(), 20, "{db}: {open:?}");
    assert!(open.values().all(|&n| n == 50), "{db}: {open:?}");
    assert_eq!(waiting(&store).await, 4000, "{db}: the rest waits, none dropped");
    // The reviewers' counts agree with the assignments, and each assignment's result is on its way to the relay.
    let counts: i64 = sqlx::query("SELECT CAST(SUM(open_count) AS BIGINT) FROM dispatch_reviewers")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(counts, 1000, "{db}");
    assert_eq!(results(&store).await, HashMap::from([("assigned".to_string(), 1000)]), "{db}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_under_two_concurrent_assigners_sqlite() {
    cap_holds_under_two_concurrent_assigners("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_under_two_concurrent_assigners_postgres() {
    cap_holds_under_two_concurrent_assigners("postgres").await;
}

async fn fairness_waiting_and_sessions(db: &str) {
    let (store, _dir) = fresh(db).await;
    let rules = Rules::default();
    // Nobody active: the events wait.
    add_events(&store, 500, 2).await;
    assert!(assign::assign_waiting(&store, rules, &[], NOW, 1000).await.unwrap().is_empty(), "{db}");
    assert_eq!(waiting(&store).await, 500, "{db}");
    // Twenty reviewers with room for all: loads within one of each other.
    let mut active = reviewers(&store, users(20)).await;
    let made = assign::assign_waiting(&store, rules, &active, NOW, 1000).await.unwrap();
    assert_eq!(made.len(), 500, "{db}");
    assert_eq!(waiting(&store).await, 0, "{db}");
    let open = open_per_user(&store).await;
    let (low, high) = (open.values().min().copied().unwrap(), open.values().max().copied().unwrap());
    assert!(high - low <= 1 && open.len() == 20, "{db}: {open:?}");
    // The round reports every reviewer's count after it.
    assert_eq!(made.counts.iter().map(|(_, n)| n).sum::<i64>(), 500, "{db}");

    // The least loaded gets the next one: user-00 settles three, then holds the fewest.
    let mine: Vec<_> = made.items.iter().filter(|a| a.user_id == "user-00").collect();
    for a in &mine[..3] {
        let s = assign::settle(&store, &a.assignment_id.to_string(), Outcome::Completed, NOW + 1, false).await.unwrap();
        assert!(!s.requeued);
    }
    add_events(&store, 1, 3).await;
    let next = assign::assign_waiting(&store, rules, &active, NOW + 2, 10).await.unwrap();
    assert_eq!(next.items.iter().map(|a| a.user_id.as_str()).collect::<Vec<_>>(), ["user-00"], "{db}");

    // Settling: only from open; unknown is unknown.
    let a = mine[0].assignment_id.to_string();
    assert!(matches!(
        assign::settle(&store, &a, Outcome::Rejected, NOW + 3, false).await,
        Err(SettleError::NotOpen { status, .. }) if status == "completed"
    ));
    assert!(matches!(
        assign::settle(&store, "nope", Outcome::Approved, NOW, false).await,
        Err(SettleError::Unknown(_))
    ));
    assert_eq!(results(&store).await.get("completed"), Some(&3), "{db}");

    // A session that ends: its open assignments are taken back and go to the others, not to it.
    let before = open_per_user(&store).await["user-05"];
    assert!(before > 0);
    active.retain(|u| u != "user-05");
    let back = assign::take_back(&store, &["user-05".to_string()], NOW + 4).await.unwrap();
    assert_eq!(back.len() as i64, before, "{db}");
    assert_eq!(back.counts, [("user-05".to_string(), 0)], "{db}");
    assert!(!open_per_user(&store).await.contains_key("user-05"), "{db}");
    assert_eq!(assign::holders(&store).await.unwrap().len(), 19, "{db}");
    let again = assign::assign_waiting(&store, rules, &active, NOW + 5, 1000).await.unwrap();
    assert_eq!(again.len() as i64, before, "{db}");
    assert!(again.items.iter().all(|a| a.user_id != "user-05"), "{db}");
    let kept: i64 = sqlx::query("SELECT COUNT(*) FROM assignments WHERE status = 'reassigned'")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, before, "{db}: the history is kept");
    assert_eq!(results(&store).await.get("reassigned"), Some(&before), "{db}");
    // Everyone's session ends: all their assignments wait again.
    let open_now: i64 = open_per_user(&store).await.values().sum();
    let back = assign::take_back(&store, &active, NOW + 6).await.unwrap();
    assert_eq!(back.len() as i64, open_now, "{db}");
    assert!(assign::assign_waiting(&store, rules, &[], NOW + 7, 1000).await.unwrap().is_empty(), "{db}");
    assert_eq!(waiting(&store).await, open_now, "{db}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fairness_waiting_settling_and_sessions_sqlite() {
    fairness_waiting_and_sessions("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fairness_waiting_settling_and_sessions_postgres() {
    fairness_waiting_and_sessions("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_region_events_go_only_to_reviewers_of_their_region() {
    for db in ["sqlite", "postgres"] {
        let (store, _dir) = fresh(db).await;
        let rules = Rules { by_region: true, ..Rules::default() };
        assign::register(&store, "eu-reviewer", Some("EU")).await.unwrap();
        add_events(&store, 400, 4).await;
        let made = assign::assign_waiting(&store, rules, &["eu-reviewer".to_string()], NOW, 1000).await.unwrap();
        let regions: HashMap<String, String> = sqlx::query("SELECT event_id, region FROM dispatch_queue")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let eu = regions.values().filter(|r| *r == "EU").count().min(50);
        assert_eq!(made.len(), eu, "{db}");
        assert!(made.items.iter().all(|a| regions[&a.event_id] == "EU"), "{db}");
    }
}

/// Settling and taking back at once, on PostgreSQL's row locks: each either settles an assignment or finds it taken
/// back, and neither fails (no deadlock between them); the counts stay true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_while_sessions_end_neither_fails_and_counts_stay_true() {
    let (store, _dir) = fresh("postgres").await;
    let active = reviewers(&store, (0..4).map(|u| format!("user-{u}"))).await;
    add_events(&store, 200, 5).await;
    let made = assign::assign_waiting(&store, Rules::default(), &active, NOW, 1000).await.unwrap();
    assert_eq!(made.len(), 200);
    let settler = {
        let (store, made) = (store.clone(), made.items.clone());
        tokio::spawn(async move {
            let mut settled = 0;
            for a in &made {
                match assign::settle(&store, &a.assignment_id.to_string(), Outcome::Approved, NOW + 1, false).await {
                    Ok(_) => settled += 1,
                    Err(SettleError::NotOpen { status, .. }) => assert_eq!(status, "reassigned"),
                    Err(e) => panic!("settling failed: {e}"),
                }
            }
            settled
        })
    };
    // Sessions end one by one while the settler works through the assignments.
    let mut taken = 0;
    for u in &active {
        tokio::time::sleep(Duration::from_millis(15)).await;
        taken += assign::take_back(&store, std::slice::from_ref(u), NOW + 1).await.unwrap().len();
    }
    let settled = settler.await.unwrap();
    assert_eq!(settled + taken, 200, "each assignment settled or taken back, once");
    assert_eq!(waiting(&store).await as usize, taken);
    let r = results(&store).await;
    let count = |status: &str| r.get(status).copied().unwrap_or(0) as usize;
    assert_eq!((count("approved"), count("reassigned")), (settled, taken), "{r:?}");
    let counts: i64 = sqlx::query("SELECT CAST(SUM(open_count) AS BIGINT) FROM dispatch_reviewers")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(counts, 0);
}

/// Assignments not settled in time are taken back and go to another reviewer where one has room, to the same one
/// only when nobody else can take them; the history is kept. A rejected one goes to another reviewer when so set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsettled_assignments_go_to_another_reviewer_after_the_limit() {
    const LIMIT: i64 = 900_000;
    for db in ["sqlite", "postgres"] {
        let (store, _dir) = fresh(db).await;
        let active = reviewers(&store, ["a", "b", "c"].map(String::from)).await;
        add_events(&store, 6, 6).await;
        let first = assign::assign_waiting(&store, Rules::default(), &active, NOW, 100).await.unwrap();
        assert_eq!(first.len(), 6, "{db}");
        // Settled one in time; not yet at the limit, nothing moves.
        let id = first.items[0].assignment_id.to_string();
        assign::settle(&store, &id, Outcome::Completed, NOW + 1, false).await.unwrap();
        assert!(assign::reassign_stale(&store, NOW + LIMIT - 1, LIMIT).await.unwrap().is_empty(), "{db}");
        // Past it: the other five are taken back, each to someone else.
        assert_eq!(assign::reassign_stale(&store, NOW + LIMIT, LIMIT).await.unwrap().len(), 5, "{db}");
        assert!(open_per_user(&store).await.is_empty(), "{db}");
        let again = assign::assign_waiting(&store, Rules::default(), &active, NOW + LIMIT + 1, 100).await.unwrap();
        assert_eq!(again.len(), 5, "{db}");
        let before: HashMap<&str, &str> =
            first.items.iter().map(|a| (a.event_id.as_str(), a.user_id.as_str())).collect();
        for a in &again.items {
            assert_ne!(before[a.event_id.as_str()], a.user_id, "{db}: {} went back to the same reviewer", a.event_id);
        }
        let kept: i64 = sqlx::query("SELECT COUNT(*) FROM assignments WHERE reason = 'not settled in time'")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(kept, 5, "{db}");
        // Rejected, to be requeued: it goes to someone other than who rejected it.
        let r = &again.items[0];
        let settled = assign::settle(&store, &r.assignment_id.to_string(), Outcome::Rejected, NOW + LIMIT + 2, true)
            .await
            .unwrap();
        assert!(settled.requeued, "{db}");
        let next = assign::assign_waiting(&store, Rules::default(), &active, NOW + LIMIT + 3, 100).await.unwrap();
        assert_eq!(next.len(), 1, "{db}");
        assert_ne!(next.items[0].user_id, r.user_id, "{db}: the rejecting reviewer got it back");
        // With one reviewer left, an event goes back to them rather than wait.
        let last_one = ["a".to_string()];
        assign::take_back(&store, &["b".to_string(), "c".to_string()], NOW + LIMIT + 4).await.unwrap();
        assert!(!assign::reassign_stale(&store, NOW + 3 * LIMIT, LIMIT).await.unwrap().is_empty(), "{db}");
        let last = assign::assign_waiting(&store, Rules::default(), &last_one, NOW + 3 * LIMIT + 1, 100).await.unwrap();
        assert_eq!(last.len(), 5, "{db}");
        assert!(last.items.iter().all(|a| a.user_id == "a"), "{db}: {last:?}");
    }
}
