//! `redis.replica_ack` (issue 11): a payment callback is answered 200 only once `WAIT`
//! says a replica has its writes; otherwise 503, and the provider's retry is answered
//! once the replica caught up. A real primary and a real replica (`--replicaof`); the
//! replica is frozen with SIGSTOP to stand for one that lags or is cut off.

mod common;
mod lifecycle;

use std::time::Duration;

use common::*;
use lifecycle::*;

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

async fn replicating(replica: &RedisServer) {
    let port = replica.port().to_string();
    eventually(
        "the replica's link to its primary",
        Duration::from_secs(10),
        || async {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &port, "INFO", "replication"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("master_link_status:up")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_answered_only_once_a_replica_has_it() {
    let s = Setup::new(CampaignSpec::new(C).item(SKU, 10, 500)).await;
    let replica = RedisServer::start_replica_of(&s.redis);
    replicating(&replica).await;
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
    replicating(&replica).await;
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
    replicating(&replica).await;
    let gw = start(&s.cfg).await;
    let order = buy_ok(&gw, C, SKU, "cy").await;
    let _frozen = replica.freeze();
    // 200 paid while the only replica has nothing: a failover now would lose it.
    pay_ok(&gw, &order).await;
}
