//! Deadline expiry end to end: unpaid pre-orders close within about a second
//! of `pay_by`, their stock goes back exactly once — also with several instances sweeping
//! the same Redis — and a payment callback racing the deadline ends in exactly one of
//! paid or refund_required.

use std::collections::BTreeMap;

use crate::common::*;
use crate::lifecycle::*;
use serde_json::Value;
use tokio::task::JoinSet;

const SKU: &str = "black";
const PRICE: u64 = 1_999;

fn fast_sweep(s: &mut Setup) {
    s.cfg.set_str("orders", "sweep_interval", "100ms");
}

/// Buys one unit for each of `users` at once (user `i` through `apis[i % len]`).
async fn buy_all(apis: &[Endpoints], campaign: &str, sku: &str, users: &[String]) -> Vec<Value> {
    let mut set = JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        let (api, user) = (apis[i % apis.len()], user.clone());
        let (campaign, sku) = (campaign.to_owned(), sku.to_owned());
        set.spawn(async move {
            let res = buy(&api, &campaign, &sku, &user).await;
            assert_reserved(&res, &campaign, &user)
        });
    }
    let mut out = Vec::new();
    while let Some(o) = set.join_next().await {
        out.push(o.expect("buy task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_returns_the_stock_and_the_user_may_buy_again() {
    const C: &str = "exp";
    let mut s = Setup::new(
        CampaignSpec::new(C)
            .payment_window("1s")
            .item(SKU, 1, PRICE),
    )
    .await;
    fast_sweep(&mut s);
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;

    let order = buy_ok(&gw, C, SKU, "u1").await;
    let id = order_id(&order).to_owned();
    let pay_by = ms_of(&order["pay_by"]);
    let created = ms_of(&order["created_at"]);
    assert_eq!(pay_by - created, 1000, "payment_window 1s: {order}");
    // While pending, the same user gets the same pre-order back (asked before anyone
    // sees `sold-out`: see `pending_holder_retry_after_a_sell_out_gets_the_existing_order`).
    let again = buy(&gw, C, SKU, "u1").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(order_id(&again.json()), id);
    assert_problem(&buy(&gw, C, SKU, "u2").await, 409, "sold-out");
    let held = Stats {
        initial: 1,
        pending: 1,
        ..Stats::default()
    };
    assert_eq!(ledger(&gw, C, SKU).await, held);

    eventually("the pre-order to expire", WAIT, || async {
        (order_status(&gw, "u1", &id).await == "expired").then_some(())
    })
    .await;
    let seen = now_ms();
    assert!(seen >= pay_by, "expired {} ms before pay_by", pay_by - seen);
    assert!(
        seen <= pay_by + 1500,
        "expired {} ms after pay_by (want within ~1 s)",
        seen - pay_by
    );
    let expired = Stats {
        initial: 1,
        remaining: 1,
        expired: 1,
        ..Stats::default()
    };
    assert_eq!(ledger(&gw, C, SKU).await, expired);
    wait_metric(
        &gw,
        "flashgate_preorders_total",
        &[("campaign", C), ("event", "expired")],
        1.0,
    )
    .await;

    // The unit is back on sale and u1's quota is free: u1 buys it again.
    let second = buy_ok(&gw, C, SKU, "u1").await;
    assert_ne!(order_id(&second), id);
    assert_problem(&buy(&gw, C, SKU, "u2").await, 409, "sold-out");
    let rebought = Stats {
        remaining: 0,
        pending: 1,
        ..expired
    };
    assert_eq!(ledger(&gw, C, SKU).await, rebought);

    // The first order's payment arrives late: refund, and the stock is not touched.
    let res = pay(&gw, &order).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["status"], "refund_required");
    assert_eq!(order_status(&gw, "u1", &id).await, "refund_required");
    s.store.wait_for_orders(1, WAIT).await;
    probe.wait_drained(C).await;
    assert_eq!(
        assert_delivered_once(&s.store.orders())[&id],
        "refund_required"
    );
    assert_eq!(
        ledger(&gw, C, SKU).await,
        Stats {
            refund_required: 1,
            ..rebought
        }
    );
    // The second pre-order is still payable.
    pay_ok(&gw, &second).await;
    s.store.wait_for_orders(2, WAIT).await;
    probe.wait_drained(C).await;
    let got = assert_delivered_once(&s.store.orders());
    assert_eq!(got[order_id(&second)], "paid");
    assert_eq!(
        ledger(&gw, C, SKU).await,
        Stats {
            initial: 1,
            paid: 1,
            expired: 1,
            refund_required: 1,
            ..Stats::default()
        }
    );
}

/// A user who "already holds a pending order for this item" and retries gets
/// 200 with the existing order. After another user was told `sold-out`, the local
/// sold-out flag (src/campaign.rs, 250 ms) answers 409 before Redis is asked, so the
/// holder of the last unit is told the item is sold out instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_holder_retry_after_a_sell_out_gets_the_existing_order() {
    const C: &str = "retry";
    let s = Setup::new(CampaignSpec::new(C).item(SKU, 1, PRICE)).await;
    let gw = start(&s.cfg).await;
    let order = buy_ok(&gw, C, SKU, "holder").await;
    assert_problem(&buy(&gw, C, SKU, "other").await, 409, "sold-out");
    let again = buy(&gw, C, SKU, "holder").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(order_id(&again.json()), order_id(&order));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_racing_expiry_end_exactly_once() {
    const C: &str = "race";
    const USERS: usize = 60;
    const STOCK: i64 = 80;
    let mut s = Setup::new(CampaignSpec::new(C).payment_window("2s").item(
        SKU,
        STOCK as u64,
        PRICE,
    ))
    .await;
    fast_sweep(&mut s);
    let gw = start(&s.cfg).await;
    let api = gw.endpoints();
    let mut probe = Probe::new(&s.redis).await;

    let users: Vec<String> = (0..USERS).map(|i| format!("racer{i:02}")).collect();
    let mut orders = buy_all(&[api], C, SKU, &users).await;
    orders.sort_by_key(|o| order_id(o).to_owned());
    let spread = orders.iter().map(|o| ms_of(&o["pay_by"])).max().unwrap()
        - orders.iter().map(|o| ms_of(&o["pay_by"])).min().unwrap();
    assert!(spread < 1500, "deadlines spread over {spread} ms");

    // Each callback fires at its order's pay_by + offset, offsets spread over ±200 ms.
    let mut set = JoinSet::new();
    for (i, o) in orders.iter().enumerate() {
        let offset = -200 + (400 * i as i64) / (USERS as i64 - 1);
        let at = ms_of(&o["pay_by"]) + offset;
        let id = order_id(o).to_owned();
        let body = callback_body(&id, &payment_id(&id), PRICE);
        let sig = sign_callback(PAYMENT_SECRET, &body, unix_now());
        set.spawn(async move {
            sleep_until_ms(at).await;
            let res = post_callback(&api, body, Some(&sig)).await;
            (id, offset, res)
        });
    }
    let mut answers: BTreeMap<String, String> = BTreeMap::new();
    let mut late_paid = Vec::new();
    while let Some(r) = set.join_next().await {
        let (id, offset, res) = r.expect("callback task");
        assert_eq!(res.status, 200, "{id}: {}", res.text());
        let status = res.json()["status"].as_str().unwrap_or_default().to_owned();
        assert!(
            status == "paid" || status == "refund_required",
            "{id}: {status}"
        );
        if status == "paid" && offset > 0 {
            late_paid.push((id.clone(), offset));
        }
        answers.insert(id, status);
    }
    assert_eq!(answers.len(), USERS);
    // Redis decides by its own clock, which is ours: a callback that left after pay_by
    // can never pay (the converse needs no guarantee: a request can be slow).
    assert!(late_paid.is_empty(), "paid after pay_by: {late_paid:?}");
    let paid = answers.values().filter(|s| *s == "paid").count() as i64;
    let refunds = USERS as i64 - paid;
    assert!(refunds > 0, "no callback lost the race: {answers:?}");
    assert!(paid > 0, "no callback won the race: {answers:?}");

    // Every order ended exactly once, the same way at the store, in Redis and in the answer.
    s.store.wait_for_orders(USERS, WAIT).await;
    probe.wait_drained(C).await;
    let delivered = assert_delivered_once(&s.store.orders());
    assert_eq!(
        delivered, answers,
        "store deliveries differ from the answers"
    );
    assert_eq!(probe.entries_added(&outbox_key(C)).await, USERS as u64);
    for (i, o) in orders.iter().enumerate() {
        let id = order_id(o);
        let user = o["user_id"].as_str().unwrap();
        assert_eq!(order_status(&gw, user, id).await, answers[id], "order {i}");
    }
    let end = Stats {
        initial: STOCK,
        remaining: STOCK - paid,
        paid,
        expired: refunds,
        refund_required: refunds,
        ..Stats::default()
    };
    assert_eq!(ledger(&gw, C, SKU).await, end);

    // The provider retries every callback: same answers, nothing new in the outbox.
    for o in &orders {
        let res = pay(&api, o).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.json()["status"], answers[order_id(o)].as_str());
    }
    assert_eq!(probe.entries_added(&outbox_key(C)).await, USERS as u64);
    assert_eq!(ledger(&gw, C, SKU).await, end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sweepers_never_return_stock_twice() {
    const C: &str = "multi";
    const USERS: usize = 90;
    let mut s = Setup::new(
        CampaignSpec::new(C)
            .payment_window("1s")
            .item(SKU, USERS as u64, PRICE)
            .item("white", USERS as u64, PRICE),
    )
    .await;
    s.cfg.set_str("orders", "sweep_interval", "10ms");
    let gws = [
        start(&s.cfg).await,
        start(&s.cfg).await,
        start(&s.cfg).await,
    ];
    let apis: Vec<Endpoints> = gws.iter().map(Api::endpoints).collect();

    let users: Vec<String> = (0..USERS).map(|i| format!("sweep{i:02}")).collect();
    let orders = buy_all(&apis, C, SKU, &users).await;
    assert_eq!(orders.len(), USERS);
    let last_deadline = orders.iter().map(|o| ms_of(&o["pay_by"])).max().unwrap();

    let n = USERS as i64;
    eventually("every pre-order to expire", WAIT, || async {
        (ledger(&apis[0], C, SKU).await.pending == 0).then_some(())
    })
    .await;
    assert!(now_ms() <= last_deadline + 1500, "expiry later than ~1 s");
    let expired = Stats {
        initial: n,
        remaining: n,
        expired: n,
        ..Stats::default()
    };
    for api in &apis {
        assert_eq!(ledger(api, C, SKU).await, expired);
    }
    // Each expiry was done (and counted) by exactly one of the three instances.
    let mut total = 0.0;
    for api in &apis {
        total += metric(
            &metrics(api).await,
            "flashgate_preorders_total",
            &[("campaign", C), ("event", "expired")],
        );
    }
    assert_eq!(total, n as f64, "expiries counted across the instances");

    // Quotas were freed exactly once: each user may hold one unit again — not two.
    let rebuy = buy_all(&apis, C, SKU, &users).await;
    assert_eq!(rebuy.len(), USERS);
    for (i, user) in users.iter().enumerate().step_by(9) {
        let api = &apis[(i + 1) % apis.len()];
        assert_problem(&buy(api, C, "white", user).await, 409, "limit-reached");
    }
    assert_problem(&buy(&apis[2], C, SKU, "latecomer").await, 409, "sold-out");
    assert_eq!(
        ledger(&apis[1], C, SKU).await,
        Stats {
            remaining: 0,
            pending: n,
            ..expired
        }
    );
    assert_eq!(
        ledger(&apis[1], C, "white").await,
        Stats {
            initial: n,
            remaining: n,
            ..Stats::default()
        }
    );
    // And they all expire again, once.
    eventually("the second round to expire", WAIT, || async {
        (ledger(&apis[2], C, SKU).await.pending == 0).then_some(())
    })
    .await;
    assert_eq!(
        ledger(&apis[0], C, SKU).await,
        Stats {
            expired: 2 * n,
            ..expired
        }
    );
    assert!(s.store.orders().is_empty(), "nothing unpaid is persisted");
}

/// Deadlines that pass while no gateway runs are swept by the next one to start; the
/// restart neither re-adds stock nor returns it twice. The next gateway's clock is set
/// past the deadlines: ten minutes pass without waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_passed_while_no_gateway_ran_expire_at_the_next_start() {
    const C: &str = "offline";
    const N: usize = 5;
    let mut s = Setup::new(
        CampaignSpec::new(C)
            .payment_window("10m")
            .item(SKU, 10, PRICE),
    )
    .await;
    fast_sweep(&mut s);
    let gw = start(&s.cfg).await;
    let users: Vec<String> = (0..N).map(|i| format!("off{i}")).collect();
    let orders = buy_all(&[gw.endpoints()], C, SKU, &users).await;
    let last_deadline = orders.iter().map(|o| ms_of(&o["pay_by"])).max().unwrap();
    gw.running.shutdown().await;

    // Every deadline passes with no gateway running.
    let after = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(last_deadline + 200) * 1_000_000,
    )
    .unwrap();
    let gw = Gateway::start_with_clock(s.cfg.load(), flashgate::clock::Clock::fake(after)).await;
    wait_ready(&gw).await;
    eventually("the overdue pre-orders to expire", WAIT, || async {
        (ledger(&gw, C, SKU).await.pending == 0).then_some(())
    })
    .await;
    assert_eq!(
        ledger(&gw, C, SKU).await,
        Stats {
            initial: 10,
            remaining: 10,
            expired: N as i64,
            ..Stats::default()
        }
    );
    for o in &orders {
        let user = o["user_id"].as_str().unwrap();
        assert_eq!(order_status(&gw, user, order_id(o)).await, "expired");
    }
}
