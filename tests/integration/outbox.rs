//! The durable outbox end to end: a sink outage builds a backlog
//! that drains without loss or duplicates; entries that fail too often go to the
//! dead-letter stream and come back with replay-dead; a gateway killed with SIGKILL while
//! holding undelivered entries has them delivered by another instance.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use crate::lifecycle::*;
use serde_json::Value;

const SKU: &str = "black";
const PRICE: u64 = 12_345;

async fn buy_and_pay(api: &impl Api, campaign: &str, users: &[String]) -> Vec<Value> {
    buy_and_pay_each(api, campaign, SKU, users).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_outage_backlog_drains_without_loss_or_duplicates() {
    const C: &str = "outage";
    const N: usize = 30;
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 50, PRICE)).await;
    // Never dead-letter during this outage.
    s.cfg
        .set("orders", "max_attempts", "1000")
        .set_str("orders", "retry_max", "300ms");
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;

    s.store.set_failing(true);
    let orders = buy_and_pay(&gw, C, &users("o", N)).await;
    // Every paid order is in the outbox, undelivered.
    assert_eq!(outbox_counts(&gw).await, (N as u64, 0));
    assert_eq!(probe.entries_added(&outbox_key(C)).await, N as u64);
    // The consumer keeps trying: each entry was attempted at least twice.
    eventually("retries against the failing store", WAIT, || async {
        (s.store.attempts() >= 2 * N).then_some(())
    })
    .await;
    wait_metric(&gw, "flashgate_outbox_pending", &[], N as f64).await;
    let m = metrics(&gw).await;
    assert!(
        metric(
            &m,
            "flashgate_sink_deliveries_total",
            &[("sink", "http"), ("result", "retry")]
        ) >= 2.0 * N as f64,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "flashgate_sink_deliveries_total",
            &[("result", "failed")]
        ),
        0.0
    );
    assert!(
        s.store.orders().is_empty(),
        "nothing recorded while failing"
    );
    assert_eq!(outbox_counts(&gw).await, (N as u64, 0), "backlog kept");
    assert_eq!(ledger(&gw, C, SKU).await, paid_stats(50, N as i64));

    s.store.set_failing(false);
    let delivered = wait_delivered_once(&s.store, &mut probe, C, &orders).await;
    assert!(delivered.values().all(|s| s == "paid"));
    assert_eq!(s.store.orders().len(), N, "no duplicate deliveries");
    assert_eq!(outbox_counts(&gw).await, (0, 0));
    wait_metric(&gw, "flashgate_outbox_pending", &[], 0.0).await;
    wait_metric(
        &gw,
        "flashgate_sink_deliveries_total",
        &[("sink", "http"), ("result", "ok")],
        N as f64,
    )
    .await;
    assert_eq!(ledger(&gw, C, SKU).await, paid_stats(50, N as i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_entries_are_dead_lettered_then_replayed() {
    const C: &str = "dead";
    const N: usize = 5;
    const MAX: usize = 3;
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 10, PRICE)).await;
    s.cfg
        .set("orders", "max_attempts", &MAX.to_string())
        .set_str("orders", "retry_base", "20ms")
        .set_str("orders", "retry_max", "100ms");
    let gw = start(&s.cfg).await;
    let mut probe = Probe::new(&s.redis).await;

    s.store.set_failing(true);
    let orders = buy_and_pay(&gw, C, &users("d", N)).await;
    eventually("every entry dead-lettered", WAIT, || async {
        (outbox_counts(&gw).await == (0, N as u64)).then_some(())
    })
    .await;
    // Exactly `max_attempts` deliveries each, then never again.
    assert_eq!(s.store.attempts(), N * MAX);
    assert!(s.store.orders().is_empty());
    assert_eq!(probe.pending(&outbox_key(C)).await, Vec::new());
    let dead = probe.entries(&dead_key(C)).await;
    assert_eq!(dead.len(), N);
    for (_, fields) in &dead {
        assert_eq!(fields.get("event").map(String::as_str), Some("paid"));
        assert_eq!(
            fields.get("attempts").map(String::as_str),
            Some("3"),
            "{fields:?}"
        );
        assert!(
            fields.get("last_error").is_some_and(|e| e.contains("503")),
            "{fields:?}"
        );
    }
    wait_metric(
        &gw,
        "flashgate_sink_deliveries_total",
        &[("sink", "http"), ("result", "failed")],
        N as f64,
    )
    .await;
    // Dead letters are not lost orders: the ledger still counts them paid.
    assert_eq!(ledger(&gw, C, SKU).await, paid_stats(10, N as i64));

    // The store recovers; an operator replays the dead letters.
    s.store.set_failing(false);
    let res = admin_post(&gw, "/admin/outbox/replay-dead", "").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["replayed"], N as u64);
    wait_delivered_once(&s.store, &mut probe, C, &orders).await;
    assert_eq!(outbox_counts(&gw).await, (0, 0));
    assert_eq!(probe.xlen(&dead_key(C)).await, 0);
    // Replaying again moves nothing.
    let res = admin_post(&gw, "/admin/outbox/replay-dead", "").await;
    assert_eq!(res.json()["replayed"], 0);
    assert_eq!(s.store.orders().len(), N);
    assert_eq!(ledger(&gw, C, SKU).await, paid_stats(10, N as i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_sigkilled_gateway_are_delivered_by_another_instance() {
    const C: &str = "crash";
    const N: usize = 20;
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 40, PRICE)).await;
    s.cfg
        .set("orders", "max_attempts", "1000")
        .set_str("orders", "retry_max", "300ms")
        .set_str("orders", "claim_idle", "1s");
    let mut probe = Probe::new(&s.redis).await;

    // Instance A, the real binary, takes every entry while the store is down.
    s.store.set_failing(true);
    let mut a = GatewayProcess::spawn(&s.cfg).await;
    let orders = buy_and_pay(&a, C, &users("k", N)).await;
    let marker = format!(":{}:", a.pid());
    eventually("A holding every entry", WAIT, || {
        let mut probe = probe.clone();
        let marker = marker.clone();
        async move {
            let p = probe.pending(&outbox_key(C)).await;
            (p.len() == N && p.iter().all(|(_, consumer)| consumer.contains(&marker))).then_some(())
        }
    })
    .await;
    assert!(s.store.orders().is_empty());
    a.kill();
    assert_eq!(
        probe.xlen(&outbox_key(C)).await,
        N as u64,
        "undelivered after the crash"
    );

    // Instance B starts after the crash; the store is back.
    s.store.set_failing(false);
    let b = start(&s.cfg).await;
    let delivered = wait_delivered_once(&s.store, &mut probe, C, &orders).await;
    assert!(delivered.values().all(|s| s == "paid"));
    assert_eq!(s.store.orders().len(), N);
    assert_eq!(outbox_counts(&b).await, (0, 0));
    assert_eq!(ledger(&b, C, SKU).await, paid_stats(40, N as i64));

    // A's consumer, holding nothing now, is removed from the group (3 × claim_idle of
    // silence); B's stays, and B still delivers.
    eventually("the dead instance's consumer removed", WAIT, || {
        let mut probe = probe.clone();
        let marker = marker.clone();
        async move {
            let names = probe.consumers(&outbox_key(C)).await;
            (!names.iter().any(|n| n.contains(&marker))).then_some(names)
        }
    })
    .await;
    let names = probe.consumers(&outbox_key(C)).await;
    assert_eq!(names.len(), 1, "B's consumer stays: {names:?}");
    let more = buy_and_pay(&b, C, &users("after", 1)).await;
    s.store.wait_for_orders(N + 1, WAIT).await;
    assert_eq!(
        assert_delivered_once(&s.store.orders()).len(),
        N + more.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_instances_share_the_outbox_and_deliver_each_order_once() {
    const C: &str = "shared";
    const N: usize = 45;
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 50, PRICE)).await;
    s.cfg.set_str("orders", "claim_idle", "1s");
    let gws = [
        start(&s.cfg).await,
        start(&s.cfg).await,
        start(&s.cfg).await,
    ];
    let mut probe = Probe::new(&s.redis).await;

    let all = users("s", N);
    let mut orders = Vec::new();
    for (i, chunk) in all.chunks(N / gws.len()).enumerate() {
        orders.extend(buy_and_pay(&gws[i % gws.len()], C, chunk).await);
    }
    wait_delivered_once(&s.store, &mut probe, C, &orders).await;
    assert_eq!(s.store.orders().len(), N);
    assert_eq!(probe.entries_added(&outbox_key(C)).await, N as u64);
    let mut ok = 0.0;
    for gw in &gws {
        ok += metric(
            &metrics(gw).await,
            "flashgate_sink_deliveries_total",
            &[("sink", "http"), ("result", "ok")],
        );
    }
    assert_eq!(ok, N as f64, "acknowledged deliveries across the instances");
    assert_eq!(ledger(&gws[0], C, SKU).await, paid_stats(50, N as i64));
}

/// Redis restarted without persistence (or the stream deleted by hand) loses the
/// consumer group: the consumer must create it again, not fail on NOGROUP forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_resume_after_redis_loses_the_consumer_group() {
    const C: &str = "nogroup";
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 10, PRICE)).await;
    let gw = start(&s.cfg).await;
    let before = buy_and_pay(&gw, C, &users("before", 1)).await;
    s.store.wait_for_orders(1, WAIT).await;

    s.redis.restart(); // no AOF: everything is gone, the group too
    wait_ready(&gw).await;
    let mut probe = Probe::new(&s.redis).await;
    let after = buy_and_pay(&gw, C, &users("after", 1)).await;
    s.store.wait_for_orders(2, WAIT).await;
    probe.wait_drained(C).await;
    let delivered = assert_delivered_once(&s.store.orders());
    let mut want = ids(&before);
    want.extend(ids(&after));
    want.sort();
    assert_eq!(delivered.keys().cloned().collect::<Vec<_>>(), want);
}

/// A campaign file removed (and reloaded) while paid orders of that campaign still wait
/// in its outbox: the consumer only reads the streams of campaigns in the registry, so
/// those paid orders are never delivered (and `/admin/outbox` no longer counts them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_campaign_does_not_strand_its_paid_orders() {
    const C: &str = "gone";
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 10, PRICE)).await;
    s.cfg
        .campaign(CampaignSpec::new("stays").item(SKU, 10, PRICE))
        .set("orders", "max_attempts", "1000");
    let gw = start(&s.cfg).await;
    s.store.set_failing(true);
    let orders = buy_and_pay(&gw, C, &users("g", 3)).await;
    assert_eq!(outbox_counts(&gw).await, (3, 0));

    s.cfg.remove_campaign_file(&format!("{C}.toml"));
    let res = admin_post(&gw, "/admin/reload", "").await;
    assert_eq!(res.status, 200, "{}", res.text());
    s.store.set_failing(false);
    s.store.wait_for_orders(3, WAIT).await;
    let delivered = assert_delivered_once(&s.store.orders());
    assert_eq!(delivered.keys().cloned().collect::<Vec<_>>(), ids(&orders));
}

/// `forget_idle_consumers` against consumers set up by hand: one holding an entry however
/// long it has been silent is kept (deleting it would orphan the entry), an empty one is
/// removed, and the caller itself is never removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_silent_consumers_holding_nothing_are_forgotten() {
    let s = Setup::new(CampaignSpec::new("forget").item(SKU, 1, PRICE)).await;
    let cfg = s.cfg.load();
    let m = flashgate::metrics::Metrics::new();
    let metrics = flashgate::stock::RedisMetrics {
        errors: m.redis_errors.clone(),
        circuit_open: m.redis_circuit_open.clone(),
    };
    let store = flashgate::stock::Store::new(&cfg.redis, metrics).expect("store");
    assert!(store.conn().try_connect().await);
    let mut con = store.conn().dedicated().await.expect("connection");
    let keys = store.keys("forget");
    let mut probe = Probe::new(&s.redis).await;
    store.ensure_group(&mut con, &keys).await.expect("group");

    let entry = BTreeMap::from([("event".to_owned(), "paid".to_owned())]);
    probe.xadd(&keys.outbox, &entry).await;
    for (consumer, read) in [("holder", true), ("empty", false), ("me", false)] {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATECONSUMER")
            .arg(&keys.outbox)
            .arg(GROUP)
            .arg(consumer);
        probe.query::<i64>(cmd).await;
        if read {
            let got = store
                .read_new(&mut con, &keys.outbox, consumer, 10)
                .await
                .expect("read");
            assert_eq!(got.len(), 1);
        }
    }
    eventually("the empty consumer 20 ms idle", WAIT, || {
        let (mut probe, stream) = (probe.clone(), keys.outbox.clone());
        async move { (probe.idle_ms(&stream, "empty").await? >= 20).then_some(()) }
    })
    .await;
    let gone = store
        .forget_idle_consumers(&mut con, &keys, "me", 20)
        .await
        .expect("forget");
    assert_eq!(gone, 1);
    let mut names = probe.consumers(&keys.outbox).await;
    names.sort();
    assert_eq!(names, ["holder", "me"]);
    assert_eq!(
        probe.pending(&keys.outbox).await.len(),
        1,
        "the entry is still held"
    );
    // Not idle long enough: nothing goes.
    let gone = store
        .forget_idle_consumers(&mut con, &keys, "nobody", 60_000)
        .await
        .expect("forget");
    assert_eq!(gone, 0);
}

/// Forgetting consumers under churn never strands a paid order: three
/// instances with `claim_idle` 100 ms look for consumers to forget every 100 ms (and
/// forget after 300 ms of silence) while orders are paid through all of them, the store
/// flaps between failing and working (entries are held, retried, reclaimed across
/// instances), and consumers of "gone" instances keep appearing. Every paid order
/// reaches the store; the ghosts go, the three living consumers stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_consumers_under_churn_loses_no_paid_order() {
    const C: &str = "churn";
    const N: usize = 60;
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, N as u64, PRICE)).await;
    s.cfg
        .set("orders", "max_attempts", "1000")
        .set_str("orders", "retry_base", "20ms")
        .set_str("orders", "retry_max", "100ms")
        .set_str("orders", "claim_idle", "100ms");
    let gws = [
        start(&s.cfg).await,
        start(&s.cfg).await,
        start(&s.cfg).await,
    ];
    let mut probe = Probe::new(&s.redis).await;
    // One order first: once it is delivered, the consumer group exists.
    let mut orders = buy_and_pay(&gws[0], C, &users("first", 1)).await;
    s.store.wait_for_orders(1, WAIT).await;

    let all = users("c", N - 1);
    let endpoints: Vec<Endpoints> = gws.iter().map(|g| g.endpoints()).collect();
    let paying = tokio::spawn(async move {
        let mut orders = Vec::new();
        for (i, chunk) in all.chunks(all.len().div_ceil(3)).enumerate() {
            orders.extend(buy_and_pay(&endpoints[i], C, chunk).await);
        }
        orders
    });
    let mut i = 0u32;
    while !paying.is_finished() || i < 8 {
        s.store.set_failing(i.is_multiple_of(2));
        let mut ghost = redis::cmd("XGROUP");
        ghost
            .arg("CREATECONSUMER")
            .arg(outbox_key(C))
            .arg(GROUP)
            .arg(format!("ghost-{i}"));
        probe.query::<i64>(ghost).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(70)).await;
    }
    s.store.set_failing(false);
    orders.extend(paying.await.expect("paying task"));

    s.store.wait_for_orders(N, WAIT).await;
    probe.wait_drained(C).await;
    let delivered: Vec<String> = by_order(&s.store.orders()).keys().cloned().collect();
    assert_eq!(
        delivered,
        ids(&orders),
        "every paid order reached the store"
    );
    assert!(probe.pending(&outbox_key(C)).await.is_empty());
    // The living instances' consumers (those that have read something: before Redis 7.2
    // an empty XREADGROUP creates no consumer) outlive the ghosts, also after several
    // quiet forget periods, thanks to their heartbeats.
    let living: std::collections::BTreeSet<String> = (probe.consumers(&outbox_key(C)).await)
        .into_iter()
        .filter(|n| !n.starts_with("ghost-"))
        .collect();
    assert!(!living.is_empty());
    eventually("the ghosts forgotten", WAIT, || {
        let mut probe = probe.clone();
        async move {
            let names = probe.consumers(&outbox_key(C)).await;
            (!names.iter().any(|n| n.starts_with("ghost-"))).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let names: std::collections::BTreeSet<String> =
        probe.consumers(&outbox_key(C)).await.into_iter().collect();
    assert_eq!(names, living, "the living consumers stay");
    assert_eq!(
        ledger(&gws[0], C, SKU).await,
        paid_stats(N as i64, N as i64)
    );
}
