//! Replication and failover. `redis.replica_ack`: a payment callback is
//! answered 200 only once `WAIT` says a replica has its writes; otherwise 503, and the
//! provider's retry is answered once the replica caught up. `redis.sentinel`: the gateway
//! follows the master three real sentinels name through a kill -9 failover, and with
//! `replica_ack = 1` no payment it acknowledged is missing on the promoted replica.
//! A real primary and a real replica (`--replicaof`); the replica is frozen with SIGSTOP
//! (and its link closed) to stand for one that lags or is cut off.

use std::time::Duration;

use crate::common::*;
use crate::lifecycle::*;

const C: &str = "acked";
const SKU: &str = "phone";

/// The order's `status` as the replica holds it.
fn on_replica(replica: &RedisServer, order_id: &str) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &replica.port().to_string(), "HGET"])
        .arg(format!("fg:{{{C}}}:order:{order_id}"))
        .arg("status")
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_answered_only_once_a_replica_has_it() {
    let s = Setup::new(CampaignSpec::new(C).item(SKU, 10, 500)).await;
    let replica = RedisServer::start_replica_of(&s.redis);
    in_sync(&replica).await;
    let mut cfg = s.cfg;
    cfg.set("redis", "replica_ack", "1")
        .set_str("redis", "command_timeout", "300ms");
    let gw = start(&cfg).await;

    // A replica that keeps up: paid, and the replica already holds it when we hear so.
    let order = buy_ok(&gw, C, SKU, "ann").await;
    pay_ok(&gw, &order).await;
    assert_eq!(on_replica(&replica, order_id(&order)), "paid");

    // A replica that does not answer: the payment is recorded on the primary but not
    // acknowledged, so the provider is told to retry (503 + Retry-After).
    let order = buy_ok(&gw, C, SKU, "bob").await;
    let frozen = replica.freeze();
    let res = pay(&gw, &order).await;
    assert_problem(&res, 503, "unavailable");
    assert!(res.header("retry-after").is_some());
    drop(frozen);
    in_sync(&replica).await;
    // The retry: the same callback, answered paid once the replica has it; one paid
    // event in all (a repeat queues nothing).
    pay_ok(&gw, &order).await;
    assert_eq!(on_replica(&replica, order_id(&order)), "paid");
    let l = ledger(&gw, C, SKU).await;
    assert_eq!((l.paid, l.pending, l.remaining), (2, 0, 8), "{l:?}");
    eventually(
        "both paid orders at the store",
        Duration::from_secs(10),
        || async { (s.store.orders().len() == 2).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replica_ack_a_payment_is_answered_before_any_replica_has_it() {
    let s = Setup::new(CampaignSpec::new(C).item(SKU, 10, 500)).await;
    let replica = RedisServer::start_replica_of(&s.redis);
    in_sync(&replica).await;
    let gw = start(&s.cfg).await;
    let order = buy_ok(&gw, C, SKU, "cy").await;
    let _frozen = replica.freeze();
    // 200 paid while the only replica has nothing: a failover now would lose it.
    pay_ok(&gw, &order).await;
}

// === the failover drill: primary + replica + three sentinels, kill -9 the primary ===

const MASTER: &str = "fg-master";
/// Reserved before the drill; the first `BEFORE` are paid while the replica keeps up,
/// the rest while it is cut off.
const ORDERS: usize = 15;
const BEFORE: usize = 5;

/// What a drill ends with.
struct Failover {
    /// What each payment made while the replica was cut off was answered.
    cut_answers: Vec<u16>,
    /// Payments answered 200 that the promoted replica does not hold as paid.
    lost: Vec<String>,
    /// Orders at the store, before the provider retried, that the promoted replica held
    /// as unpaid (nothing unpaid reaches the sink).
    unpaid_at_store: Vec<String>,
    store: TestStore,
    ids: Vec<String>,
    /// The gateway, the nodes and the config stay up until the test is done: the
    /// deliveries of the last payments may still be under way when the drill returns.
    _running: (Gateway, SentinelTrio, RedisServer, TestConfig),
}

/// Runs the drill: reservations every node has, `BEFORE` payments with the replica in
/// sync, the rest with the replica frozen and its link closed, then kill -9 of the
/// primary. Sentinel promotes the replica; the gateway must follow it, the provider
/// retries whatever it was not answered 200 for, and we count the acknowledged payments
/// the new master lacks.
async fn failover_drill(replica_ack: bool) -> Failover {
    let campaign = CampaignSpec::new(C)
        .item(SKU, 100, 500)
        .payment_window("10m");
    let mut s = Setup::new(campaign).await;
    let trio = SentinelTrio::start(MASTER, &s.redis).await;
    let replica = &trio.replica;
    let mut cfg = s.cfg;
    trio.configure(&mut cfg);
    cfg.set_str("redis", "command_timeout", "300ms");
    if replica_ack {
        cfg.set("redis", "replica_ack", "1");
    }
    let gw = start(&cfg).await;

    let mut orders = Vec::new();
    for u in 0..ORDERS {
        orders.push(buy_ok(&gw, C, SKU, &format!("u{u}")).await);
    }
    let mut probe = Probe::new(&s.redis).await;
    let synced: i64 = probe
        .query(redis::cmd("WAIT").arg(1).arg(5000).clone())
        .await;
    assert_eq!(synced, 1, "the replica holds the reservations");
    for o in &orders[..BEFORE] {
        pay_ok(&gw, o).await;
    }

    // Cut the replica off: frozen, and its link closed so nothing more reaches it.
    let frozen = replica.freeze();
    let _: i64 = probe
        .query(
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("replica")
                .clone(),
        )
        .await;
    let mut payments = Vec::new();
    for o in &orders[BEFORE..] {
        let (api, o) = (gw.endpoints(), o.clone());
        payments.push(tokio::spawn(async move { pay(&api, &o).await }));
    }
    let mut cut = Vec::new();
    for p in payments {
        cut.push(p.await.expect("payment task"));
    }
    s.redis.kill();
    let killed = std::time::Instant::now();
    drop(frozen);

    eventually(
        "buys succeed again, on the promoted replica",
        Duration::from_secs(40),
        || async { (buy(&gw, C, SKU, "after").await.status == 201).then_some(()) },
    )
    .await;
    eprintln!(
        "failover: buys succeed again {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(trio.master_port(), Some(replica.port()));

    // The old primary comes back as a replica of the new master (it has no persistence:
    // never bring it back empty as a master), so a `WAIT 1` can be satisfied again.
    s.redis.restart_as_replica_of(replica.port());
    // Before any retry: the payments the new master never saw are not paid there, so
    // their outbox entries (read from the old primary, never confirmed by a replica)
    // must not reach the store, now that `WAIT` on the new master can succeed.
    in_sync(&s.redis).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let unpaid_at_store = s
        .store
        .orders()
        .iter()
        .filter_map(|o| o.json["order_id"].as_str())
        .filter(|id| on_replica(replica, id) != "paid")
        .map(str::to_owned)
        .collect();
    // The provider retries every callback it was not answered 200 for.
    for (o, res) in orders[BEFORE..].iter().zip(&cut) {
        if res.status != 200 {
            assert!(
                res.header("retry-after").is_some(),
                "503 without Retry-After"
            );
            eventually(
                "a retried payment answered",
                Duration::from_secs(20),
                || async { (pay(&gw, o).await.status == 200).then_some(()) },
            )
            .await;
        }
    }
    let acked = orders[..BEFORE].iter().chain(
        orders[BEFORE..]
            .iter()
            .zip(&cut)
            .filter(|(_, r)| r.status == 200)
            .map(|(o, _)| o),
    );
    let lost = acked
        .filter(|o| on_replica(replica, order_id(o)) != "paid")
        .map(|o| order_id(o).to_owned())
        .collect();
    Failover {
        cut_answers: cut.iter().map(|r| r.status).collect(),
        lost,
        unpaid_at_store,
        store: s.store,
        ids: orders.iter().map(|o| order_id(o).to_owned()).collect(),
        _running: (gw, trio, s.redis, cfg),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_ack_a_sentinel_failover_loses_no_acknowledged_payment() {
    let f = failover_drill(true).await;
    assert!(
        f.cut_answers.iter().all(|&s| s == 503),
        "payments the replica could not confirm were acknowledged: {:?}",
        f.cut_answers
    );
    assert!(
        f.lost.is_empty(),
        "acknowledged payments lost: {:?}",
        f.lost
    );
    assert!(
        f.unpaid_at_store.is_empty(),
        "orders at the store the new master holds unpaid: {:?}",
        f.unpaid_at_store
    );
    // Every order was paid in the end, and each is at the store.
    eventually(
        "every paid order at the store",
        Duration::from_secs(60),
        || async {
            let at_store: std::collections::BTreeSet<String> = f
                .store
                .orders()
                .iter()
                .map(|o| o.json["order_id"].as_str().unwrap_or_default().to_owned())
                .collect();
            f.ids.iter().all(|id| at_store.contains(id)).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replica_ack_a_sentinel_failover_loses_the_payments_the_replica_missed() {
    let f = failover_drill(false).await;
    assert!(
        f.cut_answers.iter().all(|&s| s == 200),
        "{:?}",
        f.cut_answers
    );
    // Exactly the payments made while the replica was cut off: the provider was told
    // they succeeded, and the promoted replica still holds them as unpaid.
    assert_eq!(f.lost, f.ids[BEFORE..].to_vec(), "lost payments");
    eprintln!(
        "without replica_ack: {} of {} acknowledged payments lost in the failover",
        f.lost.len(),
        ORDERS
    );
}
