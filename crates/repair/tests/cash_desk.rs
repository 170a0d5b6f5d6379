//! The cash desk one batch at a time, on SQLite and PostgreSQL: a ticket's `ticket_opened` and its
//! `appointment_booked` may come in one batch or in either order over two, and the ticket is paid once either way; a
//! job whose two halves meet in one batch is paid without being written down; a batch delivered again sends the same
//! payment again and registers nothing more; a repair still under way is left to the till, due when it ends.

use std::sync::Arc;

use sqlx::Row;
use weir_broker::SubjectNameStrategy;
use weir_repair::calendar::Hours;
use weir_repair::clock::{ShopClock, Speed};
use weir_repair::events::{
    self, AppointmentBooked, AvroEvent, PaymentRegistered, RepairType, Requester, TicketOpened, Timestamp,
};
use weir_repair::services::{CashDesk, Decoded, Hop, Shop};
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

fn opened(ticket: uuid::Uuid, repair_type: RepairType) -> Decoded {
    let requester = Requester {
        email: "ada@example.com".into(),
        name: "Ada".into(),
        middlename: None,
        surname: "Lovelace".into(),
        age: 36,
    };
    Decoded::Opened(TicketOpened { occurred_on: Timestamp(0), ticket_id: ticket, requester, repair_type }, None)
}

fn booked(ticket: uuid::Uuid, appointment: uuid::Uuid, scheduled_us: i64) -> Decoded {
    let e = AppointmentBooked {
        occurred_on: Timestamp(scheduled_us - HOUR_US),
        ticket_id: ticket,
        appointment_id: appointment,
        scheduled_at: Timestamp(scheduled_us),
    };
    Decoded::Booked(e, None)
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
    let desk = CashDesk;
    let past = shop.clock.now_us() - 8 * HOUR_US;
    let rows = "SELECT COUNT(*) FROM repair_cash_jobs WHERE ticket_id = $1";
    let paid = "SELECT COUNT(*) FROM repair_payments WHERE ticket_id = $1";

    // Both halves in one batch, the repair over: paid at once, nothing written down.
    let (t1, a1) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let out = desk.apply(&shop, &[opened(t1, RepairType::Windshield), booked(t1, a1, past)]).await.unwrap();
    let sent = payments(&shop, &out).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, t1.to_string());
    assert_eq!(count(&shop.store, rows, t1).await, 0, "a job known in full in one batch is not written down");
    assert_eq!(count(&shop.store, paid, t1).await, 1);

    // The booking first, then the ticket: the booking waits in the table, the ticket completes it.
    let (t2, a2) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    assert!(desk.apply(&shop, &[booked(t2, a2, past)]).await.unwrap().is_empty());
    assert_eq!(count(&shop.store, rows, t2).await, 1);
    let out = desk.apply(&shop, &[opened(t2, RepairType::Body)]).await.unwrap();
    let sent2 = payments(&shop, &out).await;
    assert_eq!(sent2.len(), 1);
    assert_eq!(sent2[0].0, t2.to_string());
    assert_eq!(sent2[0].2, "1250.50", "the body repair's price");

    // The ticket first, then the booking; and the booking's batch delivered twice: one payment, sent again as is.
    let (t3, a3) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    assert!(desk.apply(&shop, &[opened(t3, RepairType::Bumper)]).await.unwrap().is_empty());
    let first = payments(&shop, &desk.apply(&shop, &[booked(t3, a3, past)]).await.unwrap()).await;
    let again = payments(&shop, &desk.apply(&shop, &[booked(t3, a3, past)]).await.unwrap()).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first, again, "a redelivered booking sends the same payment again");
    assert_eq!(count(&shop.store, paid, t3).await, 1);
    // The whole first batch again, too.
    let again =
        payments(&shop, &desk.apply(&shop, &[opened(t1, RepairType::Windshield), booked(t1, a1, past)]).await.unwrap())
            .await;
    assert_eq!(again, sent);
    assert_eq!(count(&shop.store, paid, t1).await, 1);

    // A repair still under way: nothing paid now, the job left to the till, due when the repair ends.
    let (t4, a4) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let tomorrow = shop.clock.now_us() + 24 * HOUR_US;
    let out = desk.apply(&shop, &[booked(t4, a4, tomorrow), opened(t4, RepairType::Bumper)]).await.unwrap();
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
    assert!(desk.apply(&shop, &[booked(t4, a4, tomorrow)]).await.unwrap().is_empty());
    assert_eq!(count(&shop.store, paid, t4).await, 0);
    assert_eq!(count(&shop.store, "SELECT COUNT(*) FROM repair_payments WHERE ticket_id <> $1", t4).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_pays_once_on_sqlite() {
    each_order_pays_once(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_pays_once_on_postgres() {
    each_order_pays_once(Some(weir_runtime::testing::fresh_postgres().await)).await;
}
