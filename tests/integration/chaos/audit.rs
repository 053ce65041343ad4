//! The audit of a recorded [`Run`], once it is quiet: every guarantee of docs/guarantees.md that a
//! client, the store or Redis can see, checked over the whole run. It collects every
//! violation (it never stops at the first) and returns them; an empty list is a pass.
//!
//! Refunds: the project has no refund stream of its own; a `refund_required` answer puts
//! a refund event in the outbox, delivered to the store as `"status": "refund_required"`
//! (docs/api.md). The audit counts those deliveries per order.

use std::collections::{BTreeMap, BTreeSet};

use super::record::{Delivery, Kind, Run, Snapshot, StoredOrder};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// A stable name, one per rule (see [`RULES`]).
    pub rule: &'static str,
    pub detail: String,
}

/// Every rule the audit checks.
pub const RULES: &[(&str, &str)] = &[
    ("ledger", "initial + adjusted = remaining + pending + paid, nothing negative, ledger_ok, on every snapshot"),
    ("counter-back", "initial, paid, expired, cancelled, refund_required never decrease"),
    ("paid-not-at-store", "every callback answered paid is at the store"),
    ("store-not-paid", "nothing at the store as paid that was not answered paid (nor is paid in Redis)"),
    ("delivery-conflict", "redeliveries of an order carry the same status and payment"),
    ("bad-delivery", "every delivery is signed (http) or carries its documented properties (rabbitmq), and is keyed by its order"),
    ("refund-missing", "one refund event at the store per order answered refund_required"),
    ("refund-unasked", "no refund event for an order never answered refund_required"),
    ("over-limit", "no user holds more than per_user_limit units (pending + paid)"),
    ("5xx", "no 5xx answer but 503"),
    ("503-no-retry-after", "every 503 carries Retry-After"),
    ("untold-order", "every pre-order in Redis or at the store was returned to a client in a 201, or in a 200 to a repeat of an unanswered request (a pre-order first seen in a 200 to a later buy was made by a buy answered 503)"),
    ("lost-order", "every pre-order a client was given exists in Redis"),
    ("paid-after-deadline", "an order is paid only by its deadline: paid_at <= pay_by in Redis, and a payment whose first callback was sent after pay_by is never answered paid"),
    ("ledger-vs-orders", "the final ledger's paid equals the paid orders in Redis"),
    ("not-quiet", "the run ends quiet: no pending pre-order, outbox drained"),
];

pub fn audit(run: &Run) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut bad = |rule: &'static str, detail: String| {
        debug_assert!(RULES.iter().any(|(r, _)| *r == rule), "unknown rule {rule}");
        v.push(Violation { rule, detail });
    };

    // --- the ledger on every snapshot, and counters never going back ---
    let mut last: BTreeMap<&str, &Snapshot> = BTreeMap::new();
    let mut snaps: Vec<_> = run.snapshots.iter().collect();
    snaps.sort_by_key(|s| s.at_ms);
    for s in snaps {
        let t = &s.stats;
        if t.initial + t.adjusted != t.remaining + t.pending + t.paid
            || t.remaining < 0
            || t.pending < 0
            || t.paid < 0
            || !s.ledger_ok
        {
            bad(
                "ledger",
                format!("{} at {}: {t:?} ledger_ok={}", s.sku, s.at_ms, s.ledger_ok),
            );
        }
        if let Some(p) = last.get(s.sku.as_str()) {
            let (a, b) = (&p.stats, t);
            for (name, before, after) in [
                ("initial", a.initial, b.initial),
                ("paid", a.paid, b.paid),
                ("expired", a.expired, b.expired),
                ("cancelled", a.cancelled, b.cancelled),
                ("refund_required", a.refund_required, b.refund_required),
            ] {
                if after < before {
                    bad(
                        "counter-back",
                        format!(
                            "{} {name} {before} at {} -> {after} at {}",
                            s.sku, p.at_ms, s.at_ms
                        ),
                    );
                }
            }
        }
        last.insert(&s.sku, s);
    }

    // --- what clients were told ---
    let mut told: BTreeSet<&str> = BTreeSet::new();
    let mut answered_paid: BTreeSet<&str> = BTreeSet::new();
    let mut answered_refund: BTreeSet<&str> = BTreeSet::new();
    let mut first_sent: BTreeMap<&str, i64> = BTreeMap::new();
    // Where each order id was returned to a buyer: (status, key, after_no_answer).
    let mut returned: BTreeMap<&str, Vec<(u16, &str, bool)>> = BTreeMap::new();
    for e in &run.exchanges {
        let first = first_sent.entry(&e.key).or_insert(e.sent_ms);
        *first = (*first).min(e.sent_ms);
        if let (Kind::Buy, Some(id)) = (e.kind, e.order_id.as_deref()) {
            let how = (e.status, e.key.as_str(), e.after_no_answer);
            returned.entry(id).or_default().push(how);
        }
    }
    for e in &run.exchanges {
        if e.status >= 500 && e.status != 503 {
            bad(
                "5xx",
                format!(
                    "{:?} {} {} by {} at {}: {} {:?}",
                    e.kind, e.sku, e.key, e.user, e.sent_ms, e.status, e.slug
                ),
            );
        }
        if e.status == 503 && !e.retry_after {
            bad(
                "503-no-retry-after",
                format!("{:?} {} by {} at {}", e.kind, e.key, e.user, e.sent_ms),
            );
        }
        let Some(id) = e.order_id.as_deref() else {
            continue;
        };
        match (e.kind, e.status, e.answer.as_deref()) {
            (Kind::Buy, 201, _) => {
                told.insert(id);
            }
            (Kind::Buy, 200, _) if e.after_no_answer => {
                told.insert(id);
            }
            (Kind::Callback, 200, Some("paid")) => {
                answered_paid.insert(id);
                // A retry of a callback whose first attempt paid in time (its answer
                // lost) is answered paid as a duplicate: judge the payment's first one.
                let first = first_sent.get(e.key.as_str()).copied().unwrap_or(e.sent_ms);
                if e.pay_by_ms.is_some_and(|d| first > d) {
                    bad(
                        "paid-after-deadline",
                        format!(
                            "{id}: first sent at {first}, after pay_by {:?}",
                            e.pay_by_ms
                        ),
                    );
                }
            }
            (Kind::Callback, 200, Some("refund_required")) => {
                answered_refund.insert(id);
            }
            _ => {}
        }
    }

    // --- the store ---
    let mut paid_at_store: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    let mut refunds_at_store: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    for d in &run.deliveries {
        let key_ok = d.idempotency_key == d.order_id
            || d.idempotency_key == format!("{}:{}", d.order_id, d.payment_id);
        if !d.signed || !key_ok {
            bad(
                "bad-delivery",
                format!(
                    "{} key {} signed={}",
                    d.order_id, d.idempotency_key, d.signed
                ),
            );
        }
        match d.status.as_str() {
            "paid" => paid_at_store.entry(&d.order_id).or_default().push(d),
            "refund_required" => refunds_at_store.entry(&d.order_id).or_default().push(d),
            other => bad(
                "bad-delivery",
                format!("{} with status {other:?}", d.order_id),
            ),
        }
    }
    for (id, ds) in paid_at_store.iter().chain(refunds_at_store.iter()) {
        if ds.iter().any(|d| d.payment_id != ds[0].payment_id) {
            bad(
                "delivery-conflict",
                format!(
                    "{id}: payments {:?}",
                    ds.iter().map(|d| &d.payment_id).collect::<Vec<_>>()
                ),
            );
        }
    }
    let redis: BTreeMap<&str, &StoredOrder> =
        run.orders.iter().map(|o| (o.id.as_str(), o)).collect();
    for id in &answered_paid {
        if !paid_at_store.contains_key(id) {
            bad("paid-not-at-store", (*id).to_owned());
        }
    }
    for id in paid_at_store.keys() {
        let paid_in_redis = redis.get(id).is_some_and(|o| o.status == "paid");
        if !answered_paid.contains(id) && !paid_in_redis {
            bad("store-not-paid", (*id).to_owned());
        }
    }
    for id in &answered_refund {
        if !refunds_at_store.contains_key(id) {
            bad("refund-missing", (*id).to_owned());
        }
    }
    for id in refunds_at_store.keys() {
        if !answered_refund.contains(id) {
            bad("refund-unasked", (*id).to_owned());
        }
    }

    // --- Redis: who was told, who holds what ---
    for o in &run.orders {
        if !told.contains(o.id.as_str()) {
            let seen = match returned.get(o.id.as_str()) {
                Some(how) => format!("; only returned later as {how:?} (status, key, after no answer): made by a buy answered 503"),
                None => "; never returned to anyone".to_owned(),
            };
            bad(
                "untold-order",
                format!(
                    "{} in Redis ({}, {} by {}){seen}",
                    o.id, o.status, o.sku, o.user
                ),
            );
        }
        if o.status == "paid" && o.paid_at > o.pay_by {
            bad(
                "paid-after-deadline",
                format!("{}: paid_at {} > pay_by {}", o.id, o.paid_at, o.pay_by),
            );
        }
    }
    for id in paid_at_store.keys().chain(refunds_at_store.keys()) {
        if !told.contains(id) && !redis.contains_key(id) {
            bad("untold-order", format!("{id} at the store"));
        }
    }
    for id in &told {
        if !redis.contains_key(id) {
            bad("lost-order", (*id).to_owned());
        }
    }
    let mut holds: BTreeMap<&str, i64> = BTreeMap::new();
    for o in &run.orders {
        if o.status == "paid" || o.status == "pending_payment" {
            *holds.entry(&o.user).or_default() += o.qty;
        }
        if o.status == "pending_payment" {
            bad("not-quiet", format!("{} still pending", o.id));
        }
    }
    for (user, n) in holds
        .iter()
        .map(|(u, n)| (*u, *n))
        .chain(run.held.iter().map(|(u, n)| (u.as_str(), *n)))
    {
        if n > run.per_user_limit {
            bad(
                "over-limit",
                format!("{user} holds {n} > {}", run.per_user_limit),
            );
        }
    }
    for sku in &run.skus {
        let paid: i64 = run
            .orders
            .iter()
            .filter(|o| &o.sku == sku && o.status == "paid")
            .map(|o| o.qty)
            .sum();
        match last.get(sku.as_str()) {
            Some(s) if s.stats.paid != paid => {
                bad(
                    "ledger-vs-orders",
                    format!(
                        "{sku}: ledger paid {} at {}, Redis holds {paid} paid orders",
                        s.stats.paid, s.at_ms
                    ),
                );
            }
            None => bad("ledger-vs-orders", format!("{sku}: no snapshot at all")),
            _ => {}
        }
    }
    if run.quiet_ms.is_none() {
        bad(
            "not-quiet",
            "no quiet state within the profile's quiet_timeout".into(),
        );
    }
    v
}
