//! The payment callback end to end: real Redis, the gateway in-process, the
//! http sink posting to a `TestStore`. Every scenario ends with the ledger check, and
//! "nothing new in the outbox" is checked on the stream itself (`entries-added`).

use crate::common::*;
use crate::lifecycle::*;
use tokio::task::JoinSet;

const C: &str = "phone";
const SKU: &str = "black";
const PRICE: u64 = 99_900;

fn campaign() -> CampaignSpec {
    CampaignSpec::new(C).item(SKU, 10, PRICE)
}

fn stats(remaining: i64, pending: i64, paid: i64) -> Stats {
    Stats {
        initial: 10,
        remaining,
        pending,
        paid,
        ..Stats::default()
    }
}

/// Fires `n` copies of the same signed callback at once; returns every response.
async fn concurrent_callbacks(api: Endpoints, body: Vec<u8>, n: usize) -> Vec<TestResponse> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let body = body.clone();
        set.spawn(async move { signed_callback(&api, body).await });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        out.push(r.expect("callback task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_order_reaches_the_store_once_signed_with_the_sink_secret() {
    let s = Setup::new(campaign()).await;
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;

    let order = buy_ok(&gw, C, SKU, "alice").await;
    let id = order_id(&order).to_owned();
    assert_eq!(amount(&order), PRICE);
    assert_eq!(ledger(&gw, C, SKU).await, stats(9, 1, 0));
    assert!(
        s.store.orders().is_empty(),
        "a pre-order is never persisted"
    );

    let paid_from = now_ms();
    pay_ok(&gw, &order).await;
    let paid_until = now_ms();

    let delivered = s.store.wait_for_orders(1, WAIT).await;
    let d = &delivered[0];
    assert_eq!(d.header("idempotency-key"), Some(id.as_str()));
    assert_eq!(d.header("content-type"), Some("application/json"));
    let sig = d.header("flashgate-signature").expect("signed");
    assert!(verify_signature(SINK_SECRET, sig, &d.raw), "{sig}");
    assert!(!verify_signature(PAYMENT_SECRET, sig, &d.raw));
    let t: i64 = sig
        .split(',')
        .find_map(|kv| kv.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .expect("t=");
    assert!((t - unix_now()).abs() <= 60, "sink signature t={t}");

    let b = &d.json;
    assert_eq!(b["order_id"], id.as_str());
    assert_eq!(b["status"], "paid");
    assert_eq!(b["payment_id"], payment_id(&id).as_str());
    assert_eq!(b["campaign"], C);
    assert_eq!(b["sku"], SKU);
    assert_eq!(b["user_id"], "alice");
    assert_eq!(b["quantity"], 1);
    assert_eq!(b["amount_cents"], PRICE);
    assert_eq!(b["created_at"], order["created_at"]);
    assert_eq!(b["pay_by"], order["pay_by"]);
    let paid_at = ms_of(&b["paid_at"]);
    assert!(
        paid_from - 5 <= paid_at && paid_at <= paid_until + 5,
        "paid_at {paid_at} outside [{paid_from}, {paid_until}]"
    );

    let res = get_order(&gw, "alice", &id).await;
    assert_eq!(res.json()["status"], "paid");
    assert_eq!(res.json()["payment_id"], payment_id(&id).as_str());

    probe.wait_drained(C).await;
    assert_eq!(probe.entries_added(&outbox_key(C)).await, 1);
    assert_eq!(ledger(&gw, C, SKU).await, stats(9, 0, 1));

    // The provider retries: 200 paid, nothing new in the outbox.
    for _ in 0..3 {
        let dup = pay(&gw, &order).await;
        assert_eq!(dup.status, 200, "{}", dup.text());
        assert_eq!(dup.json()["status"], "paid");
    }
    assert_eq!(probe.entries_added(&outbox_key(C)).await, 1);
    assert_eq!(probe.xlen(&outbox_key(C)).await, 0);
    assert_eq!(s.store.orders().len(), 1);

    // A paid order cannot be cancelled; its unit stays sold.
    let del = send(
        "DELETE",
        &gw.url(&format!("/seckill/orders/{id}")),
        &[("authorization", &bearer("alice"))],
        None,
    )
    .await;
    assert_problem(&del, 409, "not-pending");
    assert_eq!(ledger(&gw, C, SKU).await, stats(9, 0, 1));

    let m = metrics(&gw).await;
    let ev = |e: &str| {
        metric(
            &m,
            "flashgate_preorders_total",
            &[("campaign", C), ("event", e)],
        )
    };
    assert_eq!((ev("reserved"), ev("paid")), (1.0, 1.0), "{m}");
    wait_metric(
        &gw,
        "flashgate_sink_deliveries_total",
        &[("sink", "http"), ("result", "ok")],
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_duplicate_callbacks_make_one_outbox_entry() {
    let s = Setup::new(campaign()).await;
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;
    let order = buy_ok(&gw, C, SKU, "bob").await;
    let id = order_id(&order).to_owned();

    let body = callback_body(&id, &payment_id(&id), PRICE);
    for res in concurrent_callbacks(gw.endpoints(), body, 20).await {
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["status"], "paid", "{}", res.text());
    }

    assert_eq!(
        probe.entries_added(&outbox_key(C)).await,
        1,
        "one XADD for 20 callbacks"
    );
    s.store.wait_for_orders(1, WAIT).await;
    probe.wait_drained(C).await;
    let got = assert_delivered_once(&s.store.orders());
    assert_eq!(got.len(), 1);
    assert_eq!(got[&id], "paid");
    assert_eq!(s.store.orders().len(), 1);
    assert_eq!(ledger(&gw, C, SKU).await, stats(9, 0, 1));
    let m = metrics(&gw).await;
    assert_eq!(
        metric(&m, "flashgate_preorders_total", &[("event", "paid")]),
        1.0,
        "one transition to paid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_missing_signatures_get_401() {
    let s = Setup::new(campaign()).await;
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;
    let order = buy_ok(&gw, C, SKU, "carol").await;
    let id = order_id(&order).to_owned();
    let body = callback_body(&id, &payment_id(&id), PRICE);
    let now = unix_now();
    let good = sign_callback(PAYMENT_SECRET, &body, now);
    let good_v1 = good.split_once(",v1=").unwrap().1.to_owned();
    let other = callback_body(&id, &payment_id(&id), PRICE + 1);

    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("empty header", Some(String::new())),
        ("garbage", Some("garbage".into())),
        ("no v1", Some(format!("t={now}"))),
        ("no t", Some(format!("v1={good_v1}"))),
        ("forged v1", Some(format!("t={now},v1={}", "ab".repeat(32)))),
        (
            "wrong secret",
            Some(sign_callback("not-the-secret", &body, now)),
        ),
        ("sink secret", Some(sign_callback(SINK_SECRET, &body, now))),
        (
            "signature of another body",
            Some(sign_callback(PAYMENT_SECRET, &other, now)),
        ),
        (
            "t changed after signing",
            Some(format!("t={},v1={good_v1}", now - 1)),
        ),
        (
            "stale t (tolerance 5m)",
            Some(sign_callback(PAYMENT_SECRET, &body, now - 330)),
        ),
        (
            "very stale t",
            Some(sign_callback(PAYMENT_SECRET, &body, now - 86_400)),
        ),
        (
            "t from the future",
            Some(sign_callback(PAYMENT_SECRET, &body, now + 330)),
        ),
    ];
    for (what, sig) in &cases {
        let res = post_callback(&gw, body.clone(), sig.as_deref()).await;
        assert_eq!(res.status, 401, "{what}: {}", res.text());
        assert_eq!(slug(&res), "bad-signature", "{what}");
    }
    // The signature is checked before anything else: no oracle for order ids or bodies.
    let unknown = callback_body(&format!("{}.{C}", ulid::Ulid::new()), "pay_x", PRICE);
    let forged = format!("t={now},v1={}", "00".repeat(32));
    assert_problem(
        &post_callback(&gw, unknown, Some(&forged)).await,
        401,
        "bad-signature",
    );
    assert_problem(
        &post_callback(&gw, b"not json".to_vec(), None).await,
        401,
        "bad-signature",
    );

    assert_eq!(order_status(&gw, "carol", &id).await, "pending_payment");
    assert_eq!(probe.entries_added(&outbox_key(C)).await, 0);
    assert_eq!(ledger(&gw, C, SKU).await, stats(9, 1, 0));

    // Within the tolerance and correctly signed: accepted.
    let res = post_callback(
        &gw,
        body.clone(),
        Some(&sign_callback(PAYMENT_SECRET, &body, now - 240)),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["status"], "paid");
    s.store.wait_for_orders(1, WAIT).await;
    probe.wait_drained(C).await;
    assert_eq!(assert_delivered_once(&s.store.orders())[&id], "paid");
    assert_eq!(ledger(&gw, C, SKU).await, stats(9, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_mismatched_callbacks() {
    let s = Setup::new(campaign()).await;
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;
    let order = buy_ok(&gw, C, SKU, "dave").await;
    let id = order_id(&order).to_owned();
    let pid = payment_id(&id);

    // Validly signed, but not a callback body.
    let malformed: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        serde_json::json!({"order_id": id}).to_string().into(),
        serde_json::json!({"order_id": id, "payment_id": pid, "status": "succeeded"})
            .to_string()
            .into(),
        serde_json::json!({"order_id": id, "payment_id": pid, "amount_cents": "99900", "status": "succeeded"})
            .to_string()
            .into(),
        serde_json::json!({"order_id": id, "payment_id": pid, "amount_cents": -1, "status": "succeeded"})
            .to_string()
            .into(),
        serde_json::json!({"order_id": id, "payment_id": "", "amount_cents": PRICE, "status": "succeeded"})
            .to_string()
            .into(),
        serde_json::json!({"order_id": 7, "payment_id": pid, "amount_cents": PRICE, "status": "succeeded"})
            .to_string()
            .into(),
        // An unknown member: the manual promises 400 for every body flashgate reads.
        serde_json::json!({"order_id": id, "payment_id": pid, "amount_cents": PRICE, "status": "succeeded", "currency": "usd"})
            .to_string()
            .into(),
    ];
    for body in malformed {
        let text = String::from_utf8_lossy(&body).into_owned();
        let res = signed_callback(&gw, body).await;
        assert_eq!(res.status, 400, "{text}: {}", res.text());
        assert_eq!(slug(&res), "bad-request", "{text}");
    }

    // Unknown orders: a well-formed id nobody reserved, an unknown campaign, garbage.
    for unknown in [
        format!("{}.{C}", ulid::Ulid::new()),
        format!("{}.no-such-campaign", ulid::Ulid::new()),
        "nope".to_owned(),
    ] {
        let res = signed_callback(&gw, callback_body(&unknown, "pay_1", PRICE)).await;
        assert_eq!(res.status, 404, "{unknown}: {}", res.text());
        assert_eq!(slug(&res), "not-found", "{unknown}");
    }

    // Wrong amount: 409, and the order stays pending with its unit held.
    for wrong in [PRICE - 1, PRICE + 1, 0] {
        let res = signed_callback(&gw, callback_body(&id, &pid, wrong)).await;
        assert_eq!(res.status, 409, "amount {wrong}: {}", res.text());
        assert_eq!(slug(&res), "amount-mismatch");
        assert_eq!(order_status(&gw, "dave", &id).await, "pending_payment");
    }
    assert_eq!(probe.entries_added(&outbox_key(C)).await, 0);
    assert_eq!(ledger(&gw, C, SKU).await, stats(9, 1, 0));
    assert!(s.store.orders().is_empty());

    // The right amount still pays it.
    pay_ok(&gw, &order).await;
    s.store.wait_for_orders(1, WAIT).await;
    probe.wait_drained(C).await;
    assert_eq!(assert_delivered_once(&s.store.orders())[&id], "paid");
    assert_eq!(probe.entries_added(&outbox_key(C)).await, 1);
    assert_eq!(ledger(&gw, C, SKU).await, stats(9, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_for_a_cancelled_order_makes_exactly_one_refund_event() {
    let s = Setup::new(campaign()).await;
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;
    let order = buy_ok(&gw, C, SKU, "erin").await;
    let id = order_id(&order).to_owned();

    let del = send(
        "DELETE",
        &gw.url(&format!("/seckill/orders/{id}")),
        &[("authorization", &bearer("erin"))],
        None,
    )
    .await;
    assert_eq!(del.status, 200, "{}", del.text());
    assert_eq!(del.json()["status"], "cancelled");
    let cancelled = Stats {
        cancelled: 1,
        ..stats(10, 0, 0)
    };
    assert_eq!(ledger(&gw, C, SKU).await, cancelled);

    // The provider's callback arrives anyway, and is retried, some of it concurrently.
    let body = callback_body(&id, &payment_id(&id), PRICE);
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(signed_callback(&gw, body.clone()).await);
    }
    answers.extend(concurrent_callbacks(gw.endpoints(), body.clone(), 10).await);
    answers.push(signed_callback(&gw, body).await);
    for res in &answers {
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["status"], "refund_required", "{}", res.text());
    }
    assert_eq!(probe.entries_added(&outbox_key(C)).await, 1);

    s.store.wait_for_orders(1, WAIT).await;
    probe.wait_drained(C).await;
    let orders = s.store.orders();
    assert_eq!(assert_delivered_once(&orders)[&id], "refund_required");
    assert_eq!(orders.len(), 1);
    let b = &orders[0].json;
    assert_eq!(b["payment_id"], payment_id(&id).as_str());
    assert_eq!(b["amount_cents"], PRICE);
    assert_eq!(b["user_id"], "erin");

    assert_eq!(order_status(&gw, "erin", &id).await, "refund_required");
    // Stock is not touched by the refund: the unit went back at the cancellation.
    let refunded = Stats {
        refund_required: 1,
        ..cancelled
    };
    assert_eq!(ledger(&gw, C, SKU).await, refunded);
    let m = metrics(&gw).await;
    let ev = |e: &str| {
        metric(
            &m,
            "flashgate_preorders_total",
            &[("campaign", C), ("event", e)],
        )
    };
    assert_eq!(
        (
            ev("reserved"),
            ev("cancelled"),
            ev("refund_required"),
            ev("paid")
        ),
        (1.0, 1.0, 1.0, 0.0),
        "{m}"
    );
    // The user may buy again: the cancellation freed the quota.
    buy_ok(&gw, C, SKU, "erin").await;
    assert_eq!(
        ledger(&gw, C, SKU).await,
        Stats {
            remaining: 9,
            pending: 1,
            ..refunded
        }
    );
}

/// Pays an order with its usual payment id, then reports a second charge `p2` of it
/// `retries` times in a row and `parallel` times at once: every answer is
/// refund_required, one refund event for `p2` is queued, the order stays paid.
async fn second_charge_scenario(user: &str, retries: usize, parallel: usize) {
    let s = Setup::new(campaign()).await;
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;
    let order = buy_ok(&gw, C, SKU, user).await;
    let id = order_id(&order).to_owned();
    let p1 = payment_id(&id);
    pay_ok(&gw, &order).await;
    assert_eq!(probe.entries_added(&outbox_key(C)).await, 1);

    let p2 = format!("{p1}_again");
    let body = callback_body(&id, &p2, PRICE);
    let mut answers = Vec::new();
    for _ in 0..retries {
        answers.push(signed_callback(&gw, body.clone()).await);
    }
    if parallel > 0 {
        answers.extend(concurrent_callbacks(gw.endpoints(), body, parallel).await);
    }
    for res in &answers {
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.json()["status"], "refund_required", "{}", res.text());
        assert_eq!(res.json()["order_id"], id.as_str(), "{}", res.text());
    }
    assert_eq!(
        probe.entries_added(&outbox_key(C)).await,
        2,
        "the paid order and ONE refund of the second charge"
    );

    // The first payment again is a plain duplicate: paid, nothing new.
    let again = signed_callback(&gw, callback_body(&id, &p1, PRICE)).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["status"], "paid", "{}", again.text());
    assert_eq!(probe.entries_added(&outbox_key(C)).await, 2);

    s.store.wait_for_orders(2, WAIT).await;
    probe.wait_drained(C).await;
    let got = s.store.orders();
    assert_eq!(got.len(), 2, "{got:?}");
    let key = |k: &str| {
        got.iter()
            .filter(|d| d.header("idempotency-key") == Some(k))
            .collect::<Vec<_>>()
    };
    let paid = key(&id);
    assert_eq!(paid.len(), 1, "the paid order exactly once");
    assert_eq!(paid[0].json["status"], "paid");
    assert_eq!(paid[0].json["payment_id"], p1.as_str());
    let refund = key(&format!("{id}:{p2}"));
    assert_eq!(refund.len(), 1, "one refund of the second charge");
    let r = &refund[0];
    assert!(verify_signature(
        SINK_SECRET,
        r.header("flashgate-signature").expect("signed"),
        &r.raw
    ));
    assert_eq!(r.json["order_id"], id.as_str());
    assert_eq!(r.json["status"], "refund_required");
    assert_eq!(r.json["payment_id"], p2.as_str());
    assert_eq!(r.json["amount_cents"], PRICE);
    assert_eq!(r.json["user_id"], user);

    // The order itself is untouched: still paid with p1, ledger and stock as after payment.
    assert_eq!(order_status(&gw, user, &id).await, "paid");
    let o = get_order(&gw, user, &id).await.json();
    assert_eq!(o["payment_id"], p1.as_str());
    assert_eq!(ledger(&gw, C, SKU).await, stats(9, 0, 1));
    let m = metrics(&gw).await;
    let ev = |e: &str| metric(&m, "flashgate_preorders_total", &[("event", e)]);
    assert_eq!((ev("paid"), ev("refund_required")), (1.0, 0.0), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_charge_of_a_paid_order_makes_one_refund_keyed_by_its_payment() {
    second_charge_scenario("frank", 4, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_second_charge_callbacks_make_one_refund_event() {
    second_charge_scenario("grace", 0, 10).await;
}
