//! The cash desk one batch at a time, on SQLite and PostgreSQL: a ticket's `ticket_opened` and its
//! `appointment_booked` may come in one batch or in either order over two, and the ticket is paid once either way; a
//! job whose two halves meet in one batch is paid without being written down; a batch delivered again sends the same
//! payment again and registers nothing more; a repair still under way is left to the till, due when it ends. A
//! booking that comes before its ticket is held in memory, its offset uncommitted, and written down when it has
//! waited too long or its partition leaves the worker.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use weir_broker::SubjectNameStrategy;
use weir_repair::calendar::Hours;
use weir_repair::clock::{ShopClock, Speed};
use weir_repair::events::{
    self, AppointmentBooked, AvroEvent, PaymentRegistered, RepairType, Requester, TicketOpened, Timestamp,
};
use weir_repair::services::{At, CashDesk, Consumed, Decoded, Hop, Shop};
use weir_runtime::events::{Events, SchemaRegistry};
use weir_runtime::outbox::RelayWaker;
use weir_runtime::{Bus, EmbeddedBus, OutgoingMessage, SqlStore};
use weir_schema::{SchemaService, Serializers, ServiceConfig};

const HOUR_US: i64 = 3_600_000_000;

async fn shop(database: Option<String>) -> (tempfile::TempDir, Shop) {
    let (dir, broker) = weir_broker::testing::scratch_broker();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(broker));
    let url = database.unwrap_or_else(|| SqlStore::sqlite_url(dir.path()));
    let store = SqlStore::connect(&url).await.unwrap();
    weir_repair::store::migrate(&store).await.unwrap();
    let service = SchemaService::start(bus, ServiceConfig::default()).await.unwrap();
    let registry = Arc::new(Serializers::new(service)) as Arc<dyn SchemaRegistry>;
    let events = Events::register(registry, &events::schemas(SubjectNameStrategy::RecordName)).await.unwrap();
    let shop = Shop {
        store,
        events,
        // Real time: a repair booked in the past is over, one booked tomorrow is not.
        clock: ShopClock::new(Speed::Times(1.0)),
        hours: Hours::default(),
        outbox: RelayWaker::default(),
    };
    (dir, shop)
}

static NEXT_OFFSET: AtomicI64 = AtomicI64::new(0);

/// A record of `topic`'s partition 0, at the next offset.
fn at(topic: &str) -> At {
    At { topic: topic.into(), partition: 0, offset: NEXT_OFFSET.fetch_add(1, Ordering::Relaxed) }
}

fn opened(ticket: uuid::Uuid, repair_type: RepairType) -> Consumed {
    let requester = Requester {
        email: "ada@example.com".into(),
        name: "Ada".into(),
        middlename: None,
        surname: "Lovelace".into(),
        age: 36,
    };
    let e = TicketOpened { occurred_on: Timestamp(0), ticket_id: ticket, requester, repair_type };
    Consumed { at: at(events::TICKETS), event: Decoded::Opened(e, None) }
}

fn booked(ticket: uuid::Uuid, appointment: uuid::Uuid, scheduled_us: i64) -> Consumed {
    let e = AppointmentBooked {
        occurred_on: Timestamp(scheduled_us - HOUR_US),
        ticket_id: ticket,
        appointment_id: appointment,
        scheduled_at: Timestamp(scheduled_us),
    };
    Consumed { at: at(events::APPOINTMENTS), event: Decoded::Booked(e, None) }
}

/// Applies `batch` and commits it, as the service loop does; the records it sent.
async fn apply(desk: &CashDesk, shop: &Shop, batch: &[Consumed]) -> Vec<OutgoingMessage> {
    let out = desk.apply(shop, batch).await.unwrap();
    desk.committed(true);
    out
}

/// The payments a batch sent: (ticket, payment id, amount).
async fn payments(shop: &Shop, out: &[OutgoingMessage]) -> Vec<(String, String, String)> {
    let mut paid = Vec::new();
    for m in out {
        assert_eq!(m.topic, events::PAYMENTS);
        let p: PaymentRegistered =
            shop.events.decode_as(PaymentRegistered::NAME, m.value.as_deref().unwrap()).await.unwrap();
        paid.push((p.ticket_id.to_string(), p.payment_id.to_string(), p.amount.to_string()));
    }
    paid
}

async fn count(store: &SqlStore, sql: &str, ticket: uuid::Uuid) -> i64 {
    sqlx::query(sql).bind(ticket.to_string()).fetch_one(store.pool()).await.unwrap().try_get(0).unwrap()
}

async fn each_order_pays_once(database: Option<String>) {
    let (_dir, shop) = shop(database).await;
    let desk = CashDesk::default();
    let past = shop.clock.now_us() - 8 * HOUR_US;
    let rows = "SELECT COUNT(*) FROM repair_cash_jobs WHERE ticket_id = $1";
    let paid = "SELECT COUNT(*) FROM repair_payments WHERE ticket_id = $1";

    // Both halves in one batch, the repair over: paid at once, nothing written down.
    let (t1, a1) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let sent =
        payments(&shop, &apply(&desk, &shop, &[opened(t1, RepairType::Windshield), booked(t1, a1, past)]).await).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, t1.to_string());
    assert_eq!(count(&shop.store, rows, t1).await, 0, "a job known in full in one batch is not written down");
    assert_eq!(count(&shop.store, paid, t1).await, 1);

    // The booking first, then the ticket: the booking is held in memory, its partition's committed offset kept at
    // it, until the ticket comes; nothing is written down.
    let (t2, a2) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let b2 = booked(t2, a2, past);
    let b2_offset = b2.at.offset;
    assert!(apply(&desk, &shop, &[b2]).await.is_empty());
    assert_eq!(count(&shop.store, rows, t2).await, 0);
    assert_eq!(desk.holding(), vec![(events::APPOINTMENTS.to_string(), 0, b2_offset)]);
    // The ticket's batch fails to commit: the booking is still held, and the batch applied again pays once.
    let first = payments(&shop, &desk.apply(&shop, &[opened(t2, RepairType::Body)]).await.unwrap()).await;
    assert!(desk.holding().is_empty(), "settled by the batch being committed");
    desk.committed(false);
    assert_eq!(desk.holding().len(), 1, "the failed commit keeps it");
    let sent2 = payments(&shop, &apply(&desk, &shop, &[opened(t2, RepairType::Body)]).await).await;
    assert_eq!(sent2.len(), 1);
    assert_eq!(sent2, first, "the same payment, sent again");
    assert_eq!(sent2[0].2, "1250.50", "the body repair's price");
    assert!(desk.holding().is_empty());
    assert_eq!(count(&shop.store, paid, t2).await, 1);
    assert_eq!(count(&shop.store, rows, t2).await, 0);

    // The ticket first, then the booking; and the booking's batch delivered twice: one payment, sent again as is.
    let (t3, a3) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    assert!(apply(&desk, &shop, &[opened(t3, RepairType::Bumper)]).await.is_empty());
    assert_eq!(count(&shop.store, rows, t3).await, 1, "the ticket's half is written down");
    let first = payments(&shop, &apply(&desk, &shop, &[booked(t3, a3, past)]).await).await;
    let again = payments(&shop, &apply(&desk, &shop, &[booked(t3, a3, past)]).await).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first, again, "a redelivered booking sends the same payment again");
    assert_eq!(count(&shop.store, paid, t3).await, 1);

    // The ticket opened through one worker, its booking consumed by another (which never saw the ticket and reads
    // its row): paid once.
    let (t5, a5) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    assert!(apply(&desk, &shop, &[opened(t5, RepairType::Windshield)]).await.is_empty());
    let other = CashDesk::default();
    let sent5 = payments(&shop, &apply(&other, &shop, &[booked(t5, a5, past)]).await).await;
    assert_eq!(sent5.len(), 1);
    assert_eq!(sent5[0].0, t5.to_string());
    assert_eq!(count(&shop.store, paid, t5).await, 1);
    assert!(other.holding().is_empty());

    // The whole first batch again, too.
    let again =
        payments(&shop, &apply(&desk, &shop, &[opened(t1, RepairType::Windshield), booked(t1, a1, past)]).await).await;
    assert_eq!(again, sent);
    assert_eq!(count(&shop.store, paid, t1).await, 1);

    // A repair still under way: nothing paid now, the job left to the till, due when the repair ends.
    let (t4, a4) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let tomorrow = shop.clock.now_us() + 24 * HOUR_US;
    let out = apply(&desk, &shop, &[booked(t4, a4, tomorrow), opened(t4, RepairType::Bumper)]).await;
    assert!(out.is_empty());
    let due: Option<i64> = sqlx::query("SELECT due_at FROM repair_cash_jobs WHERE ticket_id = $1")
        .bind(t4.to_string())
        .fetch_one(shop.store.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(due, Some(tomorrow + 2 * HOUR_US), "a bumper takes two hours");
    // Delivered again, it stays the till's: still nothing paid, still due then.
    assert!(apply(&desk, &shop, &[booked(t4, a4, tomorrow)]).await.is_empty());
    assert_eq!(count(&shop.store, paid, t4).await, 0);
    assert_eq!(count(&shop.store, "SELECT COUNT(*) FROM repair_payments WHERE ticket_id <> $1", t4).await, 4);
    assert!(desk.holding().is_empty());
}

/// A booking whose ticket does not come to its worker: written down as a half once it has waited its time (or at
/// once when its partition leaves the worker), where the ticket's half, written by another worker, meets it.
async fn a_held_booking_is_written_down(database: Option<String>) {
    let (_dir, shop) = shop(database).await;
    let past = shop.clock.now_us() - 8 * HOUR_US;
    let rows = "SELECT COUNT(*) FROM repair_cash_jobs WHERE ticket_id = $1 AND appointment_id IS NOT NULL";
    let paid = "SELECT COUNT(*) FROM repair_payments WHERE ticket_id = $1";

    // Held for its time, then written down by a batch with nothing in it (the loop's idle round).
    let desk = CashDesk::holding_for(Duration::from_millis(50));
    let (t1, a1) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    assert!(apply(&desk, &shop, &[booked(t1, a1, past)]).await.is_empty());
    assert!(apply(&desk, &shop, &[]).await.is_empty());
    assert_eq!(count(&shop.store, rows, t1).await, 0, "not yet: it has not waited its time");
    assert_eq!(desk.holding().len(), 1);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(apply(&desk, &shop, &[]).await.is_empty());
    assert_eq!(count(&shop.store, rows, t1).await, 1);
    assert!(desk.holding().is_empty(), "written down, its offset may be committed");
    let other = CashDesk::default();
    let sent = payments(&shop, &apply(&other, &shop, &[opened(t1, RepairType::Windshield)]).await).await;
    assert_eq!(sent.len(), 1, "the ticket's half completes the job written down");
    assert_eq!(count(&shop.store, paid, t1).await, 1);

    // Its partition assigned elsewhere: written down at the next round, whatever its age.
    let desk = CashDesk::default();
    let (t2, a2) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    assert!(apply(&desk, &shop, &[booked(t2, a2, past)]).await.is_empty());
    desk.assigned(&[(events::APPOINTMENTS.to_string(), 0)]);
    assert!(apply(&desk, &shop, &[]).await.is_empty());
    assert_eq!(desk.holding().len(), 1, "its partition is still the worker's");
    desk.assigned(&[(events::TICKETS.to_string(), 0)]);
    assert!(apply(&desk, &shop, &[]).await.is_empty());
    assert!(desk.holding().is_empty());
    assert_eq!(count(&shop.store, rows, t2).await, 1);

    // Never held: a desk that holds nothing writes every half down at once, and the other half completes it.
    let desk = CashDesk::holding_for(Duration::ZERO);
    let (t3, a3) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    assert!(apply(&desk, &shop, &[booked(t3, a3, past)]).await.is_empty());
    assert_eq!(count(&shop.store, rows, t3).await, 1);
    let sent = payments(&shop, &apply(&desk, &shop, &[opened(t3, RepairType::Bumper)]).await).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(count(&shop.store, paid, t3).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_booking_is_written_down_on_sqlite() {
    a_held_booking_is_written_down(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_booking_is_written_down_on_postgres() {
    a_held_booking_is_written_down(Some(weir_runtime::testing::fresh_postgres().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_pays_once_on_sqlite() {
    each_order_pays_once(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_pays_once_on_postgres() {
    each_order_pays_once(Some(weir_runtime::testing::fresh_postgres().await)).await;
}
