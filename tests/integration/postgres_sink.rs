//! The `postgres` sink end to end against a real PostgreSQL: a paid order
//! becomes one row of `flashgate_orders` with the documented columns, a refund event
//! becomes a `refund_required` row, re-delivery is a no-op, and a PostgreSQL restart in
//! the middle of a sale leaves a backlog in the outbox that drains once it is back.

use std::collections::BTreeMap;

use crate::common::*;
use crate::lifecycle::*;
use flashgate::sink::Sink;
use flashgate::stock::outbox::{Entry, Event};
use flashgate::stock::{Order, OrderStatus};
use serde_json::Value;
use tokio_postgres::NoTls;

const SKU: &str = "black";
const PRICE: u64 = 259_900;

async fn connect(pg: &Postgres) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg.url(), NoTls)
        .await
        .expect("connect to test postgres");
    tokio::spawn(connection);
    client
}

/// One `flashgate_orders` row, times as ms since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    order_id: String,
    status: String,
    campaign: String,
    sku: String,
    user_id: String,
    quantity: i32,
    amount_cents: i64,
    payment_id: Option<String>,
    created_at: i64,
    pay_by: i64,
    paid_at: Option<i64>,
    received_at: i64,
}

/// Every row by order id; `None` while the table does not exist yet.
async fn rows(db: &tokio_postgres::Client) -> Option<BTreeMap<String, Row>> {
    let ms = |c: &str| format!("round(extract(epoch from {c}) * 1000)::bigint");
    let sql = format!(
        "SELECT order_id, status, campaign, sku, user_id, quantity, amount_cents, payment_id, \
         {}, {}, {}, {} FROM flashgate_orders",
        ms("created_at"),
        ms("pay_by"),
        ms("paid_at"),
        ms("received_at")
    );
    let result = db.query(&sql, &[]).await.ok()?;
    Some(
        result
            .iter()
            .map(|r| {
                let row = Row {
                    order_id: r.get(0),
                    status: r.get(1),
                    campaign: r.get(2),
                    sku: r.get(3),
                    user_id: r.get(4),
                    quantity: r.get(5),
                    amount_cents: r.get(6),
                    payment_id: r.get(7),
                    created_at: r.get(8),
                    pay_by: r.get(9),
                    paid_at: r.get(10),
                    received_at: r.get(11),
                };
                (row.order_id.clone(), row)
            })
            .collect(),
    )
}

async fn wait_rows(db: &tokio_postgres::Client, n: usize) -> BTreeMap<String, Row> {
    eventually(&format!("{n} rows in flashgate_orders"), WAIT, || async {
        rows(db).await.filter(|r| r.len() == n)
    })
    .await
}

/// The row an order paid through the gateway must have become.
fn expected_row(order: &Value, paid: &Value, status: &str, received_at: i64) -> Row {
    Row {
        order_id: order_id(order).to_owned(),
        status: status.to_owned(),
        campaign: order["campaign"].as_str().unwrap().to_owned(),
        sku: order["sku"].as_str().unwrap().to_owned(),
        user_id: order["user_id"].as_str().unwrap().to_owned(),
        quantity: order["quantity"].as_i64().unwrap() as i32,
        amount_cents: amount(order) as i64,
        payment_id: Some(payment_id(order_id(order))),
        created_at: ms_of(&order["created_at"]),
        pay_by: ms_of(&order["pay_by"]),
        paid_at: Some(ms_of(&paid["paid_at"])),
        received_at,
    }
}

async fn setup(pg: &Postgres, campaign: &str, stock: u64) -> Setup {
    let mut s = Setup::new(CampaignSpec::new(campaign).item(SKU, stock, PRICE)).await;
    s.cfg
        .postgres_sink(&pg.url())
        .set("orders", "max_attempts", "1000")
        .set_str("orders", "retry_max", "300ms");
    s
}

/// Sums `flashgate_sink_deliveries_total{sink="postgres",result}`.
async fn deliveries(api: &impl Api, result: &str) -> f64 {
    sink_deliveries(api, "postgres", result).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_order_becomes_one_row_and_redelivery_is_a_noop() {
    const C: &str = "pgc";
    let pg = Postgres::start();
    let s = setup(&pg, C, 10).await;
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;
    let db = connect(&pg).await;

    // A pending pre-order is never persisted.
    let pending = buy_ok(&gw, C, SKU, "carol").await;
    let order = buy_ok(&gw, C, SKU, "alice").await;
    pay_ok(&gw, &order).await;
    let got = wait_rows(&db, 1).await;
    probe.wait_drained(C).await;
    let paid = get_order(&gw, "alice", order_id(&order)).await.json();
    assert_eq!(paid["status"], "paid");
    let row = &got[order_id(&order)];
    assert_eq!(*row, expected_row(&order, &paid, "paid", row.received_at));
    assert!(
        (row.received_at - now_ms()).abs() < 60_000,
        "received_at {}",
        row.received_at
    );
    assert!(!got.contains_key(order_id(&pending)));

    // The table is as documented: order_id is the primary key.
    let pk: Vec<String> = db
        .query(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = 'flashgate_orders'::regclass AND i.indisprimary",
            &[],
        )
        .await
        .expect("primary key")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pk, ["order_id"]);

    // Re-delivery through the sink (what an outbox retry does) changes nothing, even
    // when the second copy differs: the first delivery wins.
    let entry = Entry {
        stream: outbox_key(C),
        id: "0-1".into(),
        event: Event::Paid,
        order: Order {
            order_id: row.order_id.clone(),
            campaign: row.campaign.clone(),
            sku: row.sku.clone(),
            user_id: row.user_id.clone(),
            quantity: row.quantity as u32,
            amount_cents: row.amount_cents as u64,
            status: OrderStatus::Paid,
            created_at: row.created_at,
            pay_by: row.pay_by,
            payment_id: row.payment_id.clone(),
            paid_at: row.paid_at,
        },
    };
    let sink = flashgate::sink::postgres::PostgresSink::new(
        &pg.url(),
        std::time::Duration::from_secs(5),
        None,
    )
    .expect("sink");
    let all_stored = |results: Vec<Result<(), flashgate::sink::SinkError>>, n: usize| {
        assert_eq!(results.len(), n, "one result per entry");
        for r in results {
            r.expect("re-delivery succeeds");
        }
    };
    all_stored(sink.deliver(std::slice::from_ref(&entry)).await, 1);
    let mut changed = entry.clone();
    changed.order.payment_id = Some("pay_other".into());
    changed.order.amount_cents += 1;
    // One batch (one multi-row INSERT) holding the order twice and a differing copy.
    all_stored(
        sink.deliver(&[entry.clone(), entry.clone(), changed.clone()])
            .await,
        3,
    );
    let after = rows(&db).await.expect("table");
    assert_eq!(after, got, "re-delivery must be a no-op");

    // A refund event is a row too, with its status.
    let bob = buy_ok(&gw, C, SKU, "bob").await;
    let del = send(
        "DELETE",
        &gw.url(&format!("/seckill/orders/{}", order_id(&bob))),
        &[("authorization", &bearer("bob"))],
        None,
    )
    .await;
    assert_eq!(del.status, 200, "{}", del.text());
    let res = pay(&gw, &bob).await;
    assert_eq!(res.json()["status"], "refund_required", "{}", res.text());
    let got = wait_rows(&db, 2).await;
    probe.wait_drained(C).await;
    let refunded = get_order(&gw, "bob", order_id(&bob)).await.json();
    let row = &got[order_id(&bob)];
    assert_eq!(
        *row,
        expected_row(&bob, &refunded, "refund_required", row.received_at)
    );

    assert_eq!(
        ledger(&gw, C, SKU).await,
        Stats {
            initial: 10,
            remaining: 8,
            pending: 1,
            paid: 1,
            cancelled: 1,
            refund_required: 1,
            ..Stats::default()
        }
    );
    assert_eq!(deliveries(&gw, "ok").await, 2.0);
    assert!(
        s.store.orders().is_empty(),
        "the http endpoint is not used by the postgres sink"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_leaves_a_backlog_that_drains() {
    const C: &str = "pgdown";
    const N: usize = 10;
    let pg = Postgres::start();
    let s = setup(&pg, C, 20).await;
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;

    // The sink is connected and working.
    let first = buy_ok(&gw, C, SKU, "first").await;
    pay_ok(&gw, &first).await;
    {
        let db = connect(&pg).await;
        wait_rows(&db, 1).await;
    }
    probe.wait_drained(C).await;

    // PostgreSQL goes away; paying goes on and the outbox keeps every paid order.
    pg.stop();
    let mut orders = vec![first];
    for i in 0..N {
        let o = buy_ok(&gw, C, SKU, &format!("buyer{i}")).await;
        pay_ok(&gw, &o).await;
        orders.push(o);
    }
    assert_eq!(outbox_counts(&gw).await, (N as u64, 0));
    let retried_before = deliveries(&gw, "retry").await;
    eventually("failed postgres deliveries", WAIT, || async {
        (deliveries(&gw, "retry").await >= retried_before + N as f64).then_some(())
    })
    .await;
    assert_eq!(outbox_counts(&gw).await, (N as u64, 0), "backlog kept");
    wait_metric(&gw, "flashgate_outbox_pending", &[], N as f64).await;
    let backlog = probe.entries(&outbox_key(C)).await;
    assert_eq!(backlog.len(), N);
    let (_, copy) = backlog[0].clone();

    // It comes back: the backlog drains, every paid order is one row.
    pg.restart();
    let db = connect(&pg).await;
    let got = wait_rows(&db, N + 1).await;
    probe.wait_drained(C).await;
    let mut want: Vec<String> = orders.iter().map(|o| order_id(o).to_owned()).collect();
    want.sort();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want);
    assert!(got.values().all(|r| r.status == "paid"));
    assert_eq!(outbox_counts(&gw).await, (0, 0));
    wait_metric(&gw, "flashgate_outbox_pending", &[], 0.0).await;

    // The same outbox entry delivered again (as after a crash between the INSERT and
    // the XACK) is a no-op.
    let ok_before = deliveries(&gw, "ok").await;
    probe.xadd(&outbox_key(C), &copy).await;
    eventually("the copy delivered", WAIT, || async {
        (deliveries(&gw, "ok").await == ok_before + 1.0).then_some(())
    })
    .await;
    probe.wait_drained(C).await;
    assert_eq!(rows(&db).await.expect("table"), got);
    assert_eq!(deliveries(&gw, "failed").await, 0.0);
    assert_eq!(ledger(&gw, C, SKU).await, {
        let paid = (N + 1) as i64;
        Stats {
            initial: 20,
            remaining: 20 - paid,
            paid,
            ..Stats::default()
        }
    });
}

/// SIGCONTs a process on drop, so a stopped PostgreSQL backend never outlives the test
/// (`pg_ctl stop` would wait for it).
struct Stopped(i32);

impl Stopped {
    fn signal(pid: i32, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    fn stop(pid: i32) -> Stopped {
        Self::signal(pid, "-STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        Self::signal(self.0, "-CONT");
    }
}

/// A connection that stops answering (the server host froze, a half-open TCP
/// connection) must not stall the sink: the delivery times out, the sink reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_postgres_connection_does_not_stall_deliveries() {
    const C: &str = "pghang";
    let pg = Postgres::start();
    let s = setup(&pg, C, 10).await;
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;
    let db = connect(&pg).await;

    let first = buy_ok(&gw, C, SKU, "first").await;
    pay_ok(&gw, &first).await;
    wait_rows(&db, 1).await;
    probe.wait_drained(C).await;

    // Freeze the backend serving the gateway's (now idle) sink connection.
    let pids: Vec<i32> = db
        .query(
            "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
             AND query LIKE 'INSERT INTO flashgate_orders%'",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pids.len(), 1, "one sink connection: {pids:?}");
    let _frozen = Stopped::stop(pids[0]);

    let second = buy_ok(&gw, C, SKU, "second").await;
    pay_ok(&gw, &second).await;
    let got = wait_rows(&db, 2).await;
    assert!(got.contains_key(order_id(&second)));
    probe.wait_drained(C).await;
    assert!(deliveries(&gw, "retry").await >= 1.0);
    assert_eq!(ledger(&gw, C, SKU).await.paid, 2);
}

/// `flashgate_refunds` rows, payment_id → (order_id, amount_cents, created_at ms).
async fn refund_rows(db: &tokio_postgres::Client) -> Option<BTreeMap<String, (String, i64, i64)>> {
    let rows = db
        .query(
            "SELECT payment_id, order_id, amount_cents, \
             (extract(epoch from created_at) * 1000)::bigint FROM flashgate_refunds",
            &[],
        )
        .await
        .ok()?;
    Some(
        rows.iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_charge_becomes_one_refund_row_keyed_by_payment() {
    const C: &str = "pgref";
    let pg = Postgres::start();
    let s = setup(&pg, C, 10).await;
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;
    let db = connect(&pg).await;

    let order = buy_ok(&gw, C, SKU, "alice").await;
    let id = order_id(&order).to_owned();
    pay_ok(&gw, &order).await;
    let p2 = "pay_second".to_owned();
    let from = now_ms();
    for _ in 0..3 {
        let res = signed_callback(&gw, callback_body(&id, &p2, PRICE)).await;
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["status"], "refund_required", "{}", res.text());
    }
    let refunds = eventually("one row in flashgate_refunds", WAIT, || async {
        refund_rows(&db).await.filter(|r| r.len() == 1)
    })
    .await;
    probe.wait_drained(C).await;
    let (order_id_col, amount_col, created) = &refunds[&p2];
    assert_eq!(order_id_col, &id);
    assert_eq!(*amount_col, PRICE as i64);
    assert!(
        *created >= from - 1_000 && *created <= now_ms() + 1_000,
        "{created}"
    );

    // The order's own row is the paid one, with its first payment id.
    let got = wait_rows(&db, 1).await;
    assert_eq!(got[&id].status, "paid");
    assert_eq!(got[&id].payment_id, Some(payment_id(&id)));

    // The table is as documented: payment_id is the primary key.
    let pk: Vec<String> = db
        .query(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = 'flashgate_refunds'::regclass AND i.indisprimary",
            &[],
        )
        .await
        .expect("primary key")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pk, ["payment_id"]);
    assert_eq!(deliveries(&gw, "ok").await, 2.0);
    assert_eq!(rows(&db).await.expect("table").len(), 1);
    assert_eq!(refund_rows(&db).await.expect("table").len(), 1);
}

/// An outbox entry made by hand, for delivering straight through the sink.
fn hand_entry(order_id: &str, event: Event, payment_id: &str) -> Entry {
    let status = match event {
        Event::Paid => OrderStatus::Paid,
        Event::RefundRequired | Event::SecondCharge => OrderStatus::RefundRequired,
    };
    Entry {
        stream: outbox_key("batch"),
        id: format!("1-{order_id}"),
        event,
        order: Order {
            order_id: order_id.to_owned(),
            campaign: "batch".into(),
            sku: SKU.into(),
            user_id: format!("user-{order_id}"),
            quantity: 1,
            amount_cents: PRICE,
            status,
            created_at: 1_700_000_000_000,
            pay_by: 1_700_000_600_000,
            payment_id: Some(payment_id.to_owned()),
            paid_at: Some(1_700_000_100_000),
        },
    }
}

/// Counts the INSERT statements on the sink's tables (a statement trigger), by table.
async fn count_statements(db: &tokio_postgres::Client) {
    db.batch_execute(
        "CREATE TABLE statements (tbl text NOT NULL);
         CREATE FUNCTION count_statement() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO statements VALUES (TG_TABLE_NAME); RETURN NULL; END $$;
         CREATE TRIGGER counted AFTER INSERT ON flashgate_orders
           FOR EACH STATEMENT EXECUTE FUNCTION count_statement();
         CREATE TRIGGER counted AFTER INSERT ON flashgate_refunds
           FOR EACH STATEMENT EXECUTE FUNCTION count_statement();",
    )
    .await
    .expect("statement trigger");
}

async fn statements(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one("SELECT count(*) FROM statements WHERE tbl = $1", &[&table])
        .await
        .expect("count statements")
        .get(0)
}

/// A batch is one multi-row INSERT … ON CONFLICT DO NOTHING per table (orders, refunds),
/// and each entry gets its own answer: one that no retry can store fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_insert_per_table_and_a_bad_entry_fails_alone() {
    let pg = Postgres::start();
    let db = connect(&pg).await;
    let sink = flashgate::sink::postgres::PostgresSink::new(
        &pg.url(),
        std::time::Duration::from_secs(5),
        None,
    )
    .expect("sink");
    assert!(sink.batch_size() > 1, "the postgres sink takes batches");
    // The first delivery creates the tables.
    let first = hand_entry("o0", Event::Paid, "pay0");
    assert!(sink.deliver(std::slice::from_ref(&first)).await[0].is_ok());
    count_statements(&db).await;

    let mut batch: Vec<Entry> = (1..=5)
        .map(|i| hand_entry(&format!("o{i}"), Event::Paid, &format!("pay{i}")))
        .collect();
    batch.push(hand_entry("o6", Event::RefundRequired, "pay6"));
    batch.push(hand_entry("o1", Event::SecondCharge, "pay1b"));
    batch.push(hand_entry("o2", Event::SecondCharge, "pay2b"));
    let mut bad = hand_entry("o7", Event::Paid, "pay7");
    bad.order.quantity = u32::MAX; // beyond the integer column
    batch.push(bad);
    batch.push(first); // stored already: skipped by ON CONFLICT

    let results = sink.deliver(&batch).await;
    assert_eq!(results.len(), batch.len());
    for (e, r) in batch.iter().zip(&results) {
        if e.order.order_id == "o7" {
            assert!(r.is_err(), "the bad entry is refused");
        } else {
            assert!(r.is_ok(), "{}: {r:?}", e.order.order_id);
        }
    }
    assert_eq!(statements(&db, "flashgate_orders").await, 1);
    assert_eq!(statements(&db, "flashgate_refunds").await, 1);
    let got = rows(&db).await.expect("table");
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["o0", "o1", "o2", "o3", "o4", "o5", "o6"]
    );
    assert_eq!(got["o6"].status, "refund_required");
    assert_eq!(got["o1"].payment_id.as_deref(), Some("pay1"));
    let refunds = refund_rows(&db).await.expect("refunds table");
    assert_eq!(
        refunds.keys().cloned().collect::<Vec<_>>(),
        ["pay1b", "pay2b"]
    );

    // Delivered again (after a crash before the XACK): one statement per table, no rows.
    let again: Vec<Entry> = batch
        .into_iter()
        .filter(|e| e.order.order_id != "o7")
        .collect();
    assert!(sink.deliver(&again).await.iter().all(Result::is_ok));
    assert_eq!(statements(&db, "flashgate_orders").await, 2);
    assert_eq!(rows(&db).await.expect("table"), got);
    assert_eq!(refund_rows(&db).await.expect("refunds table"), refunds);
}
