//! The outbox against a store that misbehaves (issue 11): a store that hangs
//! gets `orders.delivery_concurrency` deliveries at once, each bounded by
//! `orders.sink_timeout` (not `upstream.timeout`), and everything is delivered once when
//! it recovers.

mod common;
mod lifecycle;

use std::time::Duration;

use common::*;
use lifecycle::*;
use serde_json::Value;

const SKU: &str = "black";
const PRICE: u64 = 4_200;

async fn pay_all(api: &impl Api, campaign: &str, prefix: &str, n: usize) -> Vec<Value> {
    buy_and_pay_each(api, campaign, SKU, &users(prefix, n)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_store_gets_the_configured_concurrency_then_everything_once() {
    const C: &str = "hang";
    const CONCURRENCY: usize = 4;
    const N: usize = 10;
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 20, PRICE)).await;
    s.cfg
        .set("orders", "delivery_concurrency", &CONCURRENCY.to_string())
        // Longer than the test: whatever the store holds stays held until released.
        .set_str("orders", "sink_timeout", "60s");
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;

    s.store.set_hanging(true);
    let orders = pay_all(&gw, C, "h", N).await;
    eventually(
        "the concurrency's worth of deliveries held",
        WAIT,
        || async { (s.store.held() == CONCURRENCY).then_some(()) },
    )
    .await;
    // Give a sequential (or unbounded) consumer the time to show itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.store.held(), CONCURRENCY);
    assert_eq!(s.store.max_held(), CONCURRENCY, "never more in flight");
    assert_eq!(s.store.attempts(), CONCURRENCY);
    assert_eq!(outbox_counts(&gw).await, (N as u64, 0));

    // The store recovers: the held ones fail, everything is retried and stored once.
    s.store.set_hanging(false);
    s.store.wait_for_orders(N, WAIT).await;
    probe.wait_drained(C).await;
    let delivered = assert_delivered_once(&s.store.orders());
    assert_eq!(delivered.keys().cloned().collect::<Vec<_>>(), ids(&orders));
    assert_eq!(s.store.orders().len(), N);
    assert!(s.store.max_held() <= CONCURRENCY);
    assert_eq!(outbox_counts(&gw).await, (0, 0));
    assert_eq!(ledger(&gw, C, SKU).await, paid_stats(20, N as i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_timeout_is_its_own_not_the_upstream_timeout() {
    const C: &str = "sinkto";
    const N: usize = 2;
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 10, PRICE)).await;
    s.cfg
        .set_str("upstream", "timeout", "120s")
        .set_str("orders", "sink_timeout", "300ms");
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;

    s.store.set_hanging(true);
    let orders = pay_all(&gw, C, "t", N).await;
    // Bounded by upstream.timeout, no entry could be tried a second time for 2 minutes.
    eventually("deliveries given up and tried again", WAIT, || async {
        (s.store.attempts() >= 3 * N).then_some(())
    })
    .await;
    assert!(s.store.orders().is_empty());
    let m = metrics(&gw).await;
    assert!(
        metric(
            &m,
            "flashgate_sink_deliveries_total",
            &[("sink", "http"), ("result", "retry")]
        ) >= 2.0 * N as f64,
        "{m}"
    );

    s.store.set_hanging(false);
    s.store.wait_for_orders(N, WAIT).await;
    probe.wait_drained(C).await;
    let delivered = assert_delivered_once(&s.store.orders());
    assert_eq!(delivered.keys().cloned().collect::<Vec<_>>(), ids(&orders));
}
