//! The outbox against a store that misbehaves: a store that hangs
//! gets `orders.delivery_concurrency` deliveries at once, each bounded by
//! `orders.sink_timeout` (not `upstream.timeout`), and everything is delivered once when
//! it recovers; entries are retried by time and dead-lettered (metric + ERROR line) only
//! after `orders.give_up_after`; a SIGKILLed instance's entries are reclaimed as soon as
//! its heartbeat is stale, long before `orders.claim_idle`, while a living instance's
//! entries in flight are left alone.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use crate::lifecycle::*;
use serde_json::Value;

const SKU: &str = "black";
const PRICE: u64 = 4_200;

async fn pay_all(api: &impl Api, campaign: &str, prefix: &str, n: usize) -> Vec<Value> {
    buy_and_pay_each(api, campaign, SKU, &users(prefix, n)).await
}

/// The heartbeat stamp (Redis' clock, ms) of the consumer whose name carries `marker`.
async fn stamp_of(probe: &mut Probe, campaign: &str, marker: &str) -> Option<i64> {
    let mut cmd = redis::cmd("HGETALL");
    cmd.arg(format!("{PREFIX}:{{{campaign}}}:consumers"));
    let stamps: BTreeMap<String, i64> = probe.query(cmd).await;
    stamps
        .into_iter()
        .find_map(|(name, at)| name.contains(marker).then_some(at))
}

/// Every entry of the outbox held by the consumer whose name carries `marker`.
async fn all_held_by(probe: &mut Probe, campaign: &str, n: usize, marker: &str) -> bool {
    let p = probe.pending(&outbox_key(campaign)).await;
    p.len() == n && p.iter().all(|(_, consumer)| consumer.contains(marker))
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
    wait_delivered_once(&s.store, &mut probe, C, &orders).await;
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
    assert!(sink_deliveries(&gw, "http", "retry").await >= 2.0 * N as f64);

    s.store.set_hanging(false);
    wait_delivered_once(&s.store, &mut probe, C, &orders).await;
}

/// With the defaults (no `max_attempts`, `give_up_after` a day) an outage far longer
/// than the old ten attempts dead-letters nothing; the backlog drains once it is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_failed_attempts_before_give_up_after_dead_letter_nothing() {
    const C: &str = "patient";
    const N: usize = 3;
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 10, PRICE)).await;
    s.cfg
        .set_str("orders", "retry_base", "10ms")
        .set_str("orders", "retry_max", "50ms");
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;

    s.store.set_failing(true);
    let orders = pay_all(&gw, C, "p", N).await;
    eventually("many attempts per entry", WAIT, || async {
        (s.store.attempts() >= 15 * N).then_some(())
    })
    .await;
    assert_eq!(
        outbox_counts(&gw).await,
        (N as u64, 0),
        "nothing dead-lettered"
    );
    assert_eq!(probe.xlen(&dead_key(C)).await, 0);
    assert_eq!(sink_deliveries(&gw, "http", "failed").await, 0.0);
    assert_eq!(
        metric(&metrics(&gw).await, "flashgate_outbox_dead", &[]),
        0.0
    );

    s.store.set_failing(false);
    wait_delivered_once(&s.store, &mut probe, C, &orders).await;
}

/// `give_up_after = "2s"`: entries still failing two seconds after they were queued go
/// to the dead-letter stream — with the gauge, the `failed` count and an ERROR log line
/// from the real binary — and come back with replay-dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_older_than_give_up_after_are_dead_lettered_and_alerted() {
    const C: &str = "giveup";
    const N: usize = 3;
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 10, PRICE)).await;
    s.cfg
        .set_str("orders", "give_up_after", "2s")
        .set_str("orders", "retry_base", "20ms")
        .set_str("orders", "retry_max", "100ms");
    s.store.set_failing(true);
    let gw = GatewayProcess::spawn(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;

    let paid_at = now_ms();
    let orders = pay_all(&gw, C, "g", N).await;
    eventually("every entry dead-lettered", WAIT, || async {
        (outbox_counts(&gw).await == (0, N as u64)).then_some(())
    })
    .await;
    assert!(
        now_ms() - paid_at >= 2_000,
        "dead-lettered before give_up_after"
    );
    assert!(s.store.attempts() > N, "retried before giving up");
    wait_metric(&gw, "flashgate_outbox_dead", &[], N as f64).await;
    wait_metric(
        &gw,
        "flashgate_sink_deliveries_total",
        &[("sink", "http"), ("result", "failed")],
        N as f64,
    )
    .await;
    for (_, fields) in probe.entries(&dead_key(C)).await {
        let why = fields.get("last_error").cloned().unwrap_or_default();
        assert!(why.contains("undelivered 2s"), "{fields:?}");
        assert!(
            why.contains("503"),
            "the sink's last error kept: {fields:?}"
        );
    }
    let log = gw.log();
    let alerts = log
        .lines()
        .filter(|l| l.contains("\"ERROR\"") && l.contains("dead-letter stream"))
        .count();
    assert_eq!(alerts, N, "one ERROR line per dead letter:\n{log}");

    s.store.set_failing(false);
    let res = admin_post(&gw, "/admin/outbox/replay-dead", "").await;
    assert_eq!(res.json()["replayed"], N as u64);
    wait_delivered_once(&s.store, &mut probe, C, &orders).await;
    wait_metric(&gw, "flashgate_outbox_dead", &[], 0.0).await;
}

/// Instance A (the real binary) is delivering to a hung store when it is SIGKILLed.
/// `claim_idle` is ten minutes: B can only take A's entries over because A's heartbeat
/// went stale. Before the kill, B (running alongside) leaves the entries of a living,
/// busy A alone: the heartbeat does not wait for A's deliveries — it beats on, three
/// times while B watches, with every delivery still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_entries_are_reclaimed_once_its_heartbeat_is_stale() {
    const C: &str = "stale";
    const N: usize = 6;
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 20, PRICE)).await;
    s.cfg
        .set_str("orders", "claim_idle", "10m")
        .set_str("orders", "sink_timeout", "60s");
    let mut probe = Probe::new(&s.redis).await;

    s.store.set_hanging(true);
    let mut a = GatewayProcess::spawn(&s.cfg).await;
    let orders = pay_all(&a, C, "k", N).await;
    eventually("A's deliveries held by the store", WAIT, || async {
        (s.store.held() == N).then_some(())
    })
    .await;
    let marker = format!(":{}:", a.pid());
    assert!(all_held_by(&mut probe, C, N, &marker).await);

    // A is alive but stuck in its deliveries; B must not take its entries.
    let b = start(&s.cfg).await;
    let first = stamp_of(&mut probe, C, &marker)
        .await
        .expect("A stamps its heartbeat");
    eventually("three more beats of A's heartbeat", WAIT, || {
        let (mut probe, marker) = (probe.clone(), marker.clone());
        async move { (stamp_of(&mut probe, C, &marker).await? >= first + 3000).then_some(()) }
    })
    .await;
    assert!(s.store.held() == N, "A's deliveries still held");
    assert!(
        all_held_by(&mut probe, C, N, &marker).await,
        "a living instance's entries reclaimed: {:?}",
        probe.pending(&outbox_key(C)).await
    );
    assert!(s.store.orders().is_empty());

    a.kill();
    s.store.set_hanging(false);
    wait_delivered_once(&s.store, &mut probe, C, &orders).await;
    assert_eq!(outbox_counts(&b).await, (0, 0));
    assert_eq!(ledger(&b, C, SKU).await, paid_stats(20, N as i64));
}
