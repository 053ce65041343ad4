//! The chaos suite: real gateway processes, a real Redis and the test store
//! as the http order sink, a crowd buying and paying through faults — gateway SIGKILL,
//! Redis SIGKILL and AOF restart, Redis frozen, store down, store slow, callbacks racing
//! expiry, SIGTERM with an outbox backlog, a Sentinel failover with `replica_ack = 1`,
//! the RabbitMQ sink's broker SIGKILLed and restarted —
//! then, once quiet, an audit of docs/guarantees.md over
//! everything recorded, and a report in `target/chaos/report.md`.
//!
//! `CHAOS_PROFILE=smoke` (default; CI) or `full`, `CHAOS_RUNS=n`: see
//! `loadtest/chaos/README.md`. Modules under `tests/integration/chaos/`.

// The modules under chaos/ share items with each other, not an API.
#![allow(unreachable_pub)]

mod audit;
mod driver;
mod profile;
mod record;
mod report;
mod scenarios;
mod world;

use scenarios::check;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_kill() {
    check("gateway-kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_and_aof_restart() {
    check("redis-kill-aof").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_freeze() {
    check("redis-freeze").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down() {
    check("store-down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_store_delivery_concurrency_1() {
    check("slow-store-c1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_store_delivery_concurrency_16() {
    check("slow-store-c16").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_racing_expiry() {
    check("callbacks-racing-expiry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_outbox_backlog() {
    check("sigterm-backlog").await;
}

/// The audit can fail: a calm recorded run passes, and each way of corrupting it is
/// reported under its rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_with_replica_ack() {
    check("sentinel-failover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_broker_kill() {
    check("rabbitmq-kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_reports_a_corrupted_run() {
    use record::{Delivery, Kind, Run};

    let run = scenarios::calm_run().await;
    let clean = audit::audit(&run);
    assert!(clean.is_empty(), "the calm run itself: {clean:#?}");
    type Corrupt = fn(&mut Run);
    let cases: Vec<(&str, &str, Corrupt)> = vec![
        ("an extra order at the store", "store-not-paid", |r| {
            r.deliveries.push(Delivery {
                idempotency_key: "01EXTRA.chaos".into(),
                order_id: "01EXTRA.chaos".into(),
                status: "paid".into(),
                payment_id: "pay_01EXTRA".into(),
                signed: true,
            });
        }),
        (
            "an order at the store nobody was told about",
            "untold-order",
            |r| {
                r.deliveries.push(Delivery {
                    idempotency_key: "01GHOST.chaos".into(),
                    order_id: "01GHOST.chaos".into(),
                    status: "paid".into(),
                    payment_id: "pay_01GHOST".into(),
                    signed: true,
                });
            },
        ),
        ("a 503 without Retry-After", "503-no-retry-after", |r| {
            let i = created(r);
            let mut e = r.exchanges[i].clone();
            (e.status, e.retry_after, e.order_id) = (503, false, None);
            r.exchanges.push(e);
        }),
        ("a 500", "5xx", |r| {
            let mut e = r.exchanges[0].clone();
            (e.status, e.order_id) = (500, None);
            r.exchanges.push(e);
        }),
        ("a reservation answered 503", "untold-order", |r| {
            let i = created(r);
            let e = &mut r.exchanges[i];
            (e.status, e.retry_after) = (503, true);
        }),
        ("a ledger snapshot off by one", "ledger", |r| {
            let n = r.snapshots.len() / 2;
            r.snapshots[n].stats.remaining += 1;
        }),
        ("a counter going back", "counter-back", |r| {
            let mut s = paid_snapshot(r);
            s.at_ms += 1;
            s.stats.paid -= 1;
            s.stats.remaining += 1;
            r.snapshots.push(s);
        }),
        (
            "a paid order missing at the store",
            "paid-not-at-store",
            |r| {
                let paid = r
                    .exchanges
                    .iter()
                    .find(|e| e.kind == Kind::Callback && e.answer.as_deref() == Some("paid"))
                    .and_then(|e| e.order_id.clone())
                    .expect("a paid callback");
                r.deliveries.retain(|d| d.order_id != paid);
            },
        ),
        (
            "an order paid after its deadline",
            "paid-after-deadline",
            |r| {
                let o = r.orders.iter_mut().find(|o| o.status == "paid");
                let o = o.expect("a paid order in Redis");
                o.paid_at = o.pay_by + 1;
            },
        ),
        ("a user over the limit", "over-limit", |r| {
            let limit = r.per_user_limit;
            r.held.insert("u0000".into(), limit + 1);
        }),
    ];
    let mut missed = Vec::new();
    for (what, rule, corrupt) in cases {
        let mut bad = run.clone();
        corrupt(&mut bad);
        let found = audit::audit(&bad);
        if !found.iter().any(|v| v.rule == rule) {
            missed.push(format!("{what}: no `{rule}` in {found:?}"));
        }
    }
    assert!(
        missed.is_empty(),
        "the audit missed:\n{}",
        missed.join("\n")
    );
}

/// The first buy answered 201 in `r`.
fn created(r: &record::Run) -> usize {
    r.exchanges
        .iter()
        .position(|e| e.kind == record::Kind::Buy && e.status == 201)
        .expect("a 201 in the calm run")
}

/// The last snapshot with a paid unit.
fn paid_snapshot(r: &record::Run) -> record::Snapshot {
    let s = r.snapshots.iter().rev().find(|s| s.stats.paid > 0);
    s.cloned().expect("a snapshot with a paid unit")
}
