//! The scenarios: one fault function and one row of [`SCENARIOS`] each. To add one
//! (say a Sentinel failover drill), write its fault (`fn(&World) -> FaultFuture`; call
//! `fault_begins` / `fault_ends` around the fault), add a row, and a three-line test in
//! `tests/integration/chaos.rs` calling [`check`] with its name.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::audit::audit;
use super::driver::Mix;
use super::profile::Profile;
use super::report;
use super::world::{run_once, World, CAMPAIGN};
use crate::common::*;
use crate::lifecycle::*;

pub type FaultFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub struct Scenario {
    pub name: &'static str,
    /// Gateways started before the crowd (real processes).
    pub gateways: usize,
    /// Redis with `appendonly yes`, `appendfsync always`.
    pub aof: bool,
    /// A replica and three sentinels too; the gateways follow the master the sentinels
    /// name (`redis.sentinel`) and answer a payment only once a replica has it
    /// (`redis.replica_ack = 1`).
    pub sentinel: bool,
    /// Orders go to a RabbitMQ broker started with the run (`orders.sink = "rabbitmq"`),
    /// not to the store's http endpoint; what it received is read from its queue.
    pub rabbitmq: bool,
    /// Audit rules whose breaches this scenario's fault causes by design; they are
    /// reported (counted, listed) but do not fail the run.
    pub tolerates: &'static [&'static str],
    pub mix: Mix,
    /// Scenario-specific settings on top of the run's configuration.
    pub configure: fn(&mut TestConfig),
    /// Runs mid-crowd; returns when the fault is over.
    pub fault: for<'a> fn(&'a World) -> FaultFuture<'a>,
}

/// What a failover loses by design (README, Durability): writes no replica confirmed.
/// Reservations are not waited for, so a pre-order a buyer was given just before the
/// kill can be gone; and the ledger, read from the old primary, can show counts a
/// failover then takes back (a payment answered 503, a reservation). A payment answered
/// 200 is never among them: `paid-not-at-store`, `store-not-paid` and the rest still
/// fail the run.
const FAILOVER_LOSSES: &[&str] = &["counter-back", "lost-order"];

const MIX: Mix = Mix {
    pay: 55,
    deadline: 20,
};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "gateway-kill",
        gateways: 2,
        aof: false,
        sentinel: false,
        rabbitmq: false,
        tolerates: &[],
        mix: MIX,
        configure: defaults,
        fault: gateway_kill,
    },
    Scenario {
        name: "redis-kill-aof",
        gateways: 1,
        aof: true,
        sentinel: false,
        rabbitmq: false,
        tolerates: &[],
        mix: MIX,
        configure: defaults,
        fault: redis_kill,
    },
    Scenario {
        name: "redis-freeze",
        gateways: 1,
        aof: false,
        sentinel: false,
        rabbitmq: false,
        tolerates: &[],
        mix: MIX,
        configure: defaults,
        fault: redis_freeze,
    },
    Scenario {
        name: "store-down",
        gateways: 1,
        aof: false,
        sentinel: false,
        rabbitmq: false,
        tolerates: &[],
        mix: MIX,
        configure: defaults,
        fault: store_down,
    },
    Scenario {
        name: "slow-store-c1",
        gateways: 1,
        aof: false,
        sentinel: false,
        rabbitmq: false,
        tolerates: &[],
        mix: Mix {
            pay: 85,
            deadline: 0,
        },
        configure: concurrency_1,
        fault: slow_store,
    },
    Scenario {
        name: "slow-store-c16",
        gateways: 1,
        aof: false,
        sentinel: false,
        rabbitmq: false,
        tolerates: &[],
        mix: Mix {
            pay: 85,
            deadline: 0,
        },
        configure: concurrency_16,
        fault: slow_store,
    },
    Scenario {
        name: "callbacks-racing-expiry",
        gateways: 1,
        aof: false,
        sentinel: false,
        rabbitmq: false,
        tolerates: &[],
        mix: Mix {
            pay: 10,
            deadline: 70,
        },
        configure: defaults,
        fault: no_fault,
    },
    Scenario {
        name: "sigterm-backlog",
        gateways: 2,
        aof: false,
        sentinel: false,
        rabbitmq: false,
        tolerates: &[],
        mix: MIX,
        configure: defaults,
        fault: sigterm_with_backlog,
    },
    Scenario {
        name: "sentinel-failover",
        gateways: 2,
        aof: false,
        sentinel: true,
        rabbitmq: false,
        tolerates: FAILOVER_LOSSES,
        mix: MIX,
        configure: defaults,
        fault: failover,
    },
    Scenario {
        name: "rabbitmq-kill",
        gateways: 2,
        aof: false,
        sentinel: false,
        rabbitmq: true,
        tolerates: &[],
        mix: MIX,
        configure: defaults,
        fault: broker_kill,
    },
];

fn defaults(_: &mut TestConfig) {}

fn concurrency_1(cfg: &mut TestConfig) {
    cfg.set("orders", "delivery_concurrency", "1");
}

fn concurrency_16(cfg: &mut TestConfig) {
    cfg.set("orders", "delivery_concurrency", "16");
}

/// (1) Two gateways; one is SIGKILLed mid-crowd. Its clients move to the other; its
/// outbox entries are reclaimed once its heartbeat is stale.
fn gateway_kill(w: &World) -> FaultFuture<'_> {
    Box::pin(async move {
        w.fault_begins();
        let public = {
            let mut gws = w.gateways.lock().unwrap();
            gws[0].kill();
            gws[0].public_addr
        };
        w.live.remove(public);
        w.fault_ends().await;
    })
}

/// (2) Redis SIGKILLed mid-crowd, restarted from its AOF (`appendfsync always`) after
/// the profile's fault time.
fn redis_kill(w: &World) -> FaultFuture<'_> {
    Box::pin(async move {
        w.fault_begins();
        tokio::task::block_in_place(|| w.redis.lock().unwrap().kill());
        tokio::time::sleep(w.profile.fault).await;
        tokio::task::block_in_place(|| w.redis.lock().unwrap().restart());
        w.fault_ends().await;
    })
}

/// (3) Redis frozen (SIGSTOP) mid-crowd for the profile's fault time, then resumed: it
/// then runs what was queued, and a buy answered 503 must have reserved nothing.
fn redis_freeze(w: &World) -> FaultFuture<'_> {
    Box::pin(async move {
        w.fault_begins();
        let frozen = w.redis.lock().unwrap().freeze();
        tokio::time::sleep(w.profile.fault).await;
        drop(frozen);
        w.fault_ends().await;
    })
}

/// (4) The store answers 503 to every delivery for the fault time, then recovers.
fn store_down(w: &World) -> FaultFuture<'_> {
    Box::pin(async move {
        w.fault_begins();
        w.store.set_failing(true);
        tokio::time::sleep(w.profile.fault).await;
        w.store.set_failing(false);
        w.fault_ends().await;
    })
}

/// (5) The store hangs (holds every delivery) until the crowd is done paying, then
/// answers — slowly, `slow_delivery` each: the drain rate shows what
/// `orders.delivery_concurrency` buys against a slow store.
fn slow_store(w: &World) -> FaultFuture<'_> {
    Box::pin(async move {
        w.fault_begins();
        w.store.set_hanging(true);
        tokio::time::sleep(w.profile.fault).await;
        w.crowd_done().await;
        w.store.set_delay(w.profile.slow_delivery);
        w.store.set_hanging(false);
        w.fault_ends().await;
        w.note(format!(
            "slow store: {} ms per delivery, most held at once {}",
            w.profile.slow_delivery.as_millis(),
            w.store.max_held()
        ));
    })
}

/// (6) No outside fault: most orders are paid within ±150 ms of their deadline, racing
/// the expiry sweep.
fn no_fault(_: &World) -> FaultFuture<'_> {
    Box::pin(async {})
}

/// (7) The store fails until a backlog builds up (a tenth of the crowd, at least 5); then one of two gateways gets SIGTERM,
/// exits, and is started again; then the store recovers.
fn sigterm_with_backlog(w: &World) -> FaultFuture<'_> {
    Box::pin(async move {
        w.store.set_failing(true);
        w.fault_begins();
        let mut probe = w.probe().await;
        let want = (w.profile.users as u64 / 10).max(5);
        eventually("an outbox backlog", Duration::from_secs(30), || {
            let mut probe = probe.clone();
            async move { (probe.xlen(&outbox_key(CAMPAIGN)).await >= want).then_some(()) }
        })
        .await;
        let backlog = probe.xlen(&outbox_key(CAMPAIGN)).await;
        let mut gw = w.gateways.lock().unwrap().remove(0);
        let t = std::time::Instant::now();
        let clean = gw.terminate(Duration::from_secs(20));
        w.live.remove(gw.public_addr);
        w.note(format!(
            "SIGTERM with {backlog} outbox entries: exited {} after {} ms",
            if clean {
                "by itself"
            } else {
                "only on SIGKILL"
            },
            t.elapsed().as_millis()
        ));
        w.start_gateway().await;
        w.store.set_failing(false);
        w.fault_ends().await;
    })
}

/// (8) The failover drill: the primary SIGKILLed mid-payments; the sentinels promote the
/// replica and the gateways follow. The old primary comes back as the new master's
/// replica (it has no persistence: brought back empty as a master, a sentinel once made
/// the new master its replica and everything was lost), so `WAIT 1` can be met again and
/// the payments answered 503 meanwhile are retried into paid orders.
fn failover(w: &World) -> FaultFuture<'_> {
    Box::pin(async move {
        w.fault_begins();
        tokio::task::block_in_place(|| w.redis.lock().unwrap().kill());
        let t = std::time::Instant::now();
        let promoted = w
            .failover
            .as_ref()
            .expect("a sentinel scenario")
            .replica
            .port();
        eventually(
            "the sentinels promote the replica",
            Duration::from_secs(60),
            || async { (w.master_port() == promoted).then_some(()) },
        )
        .await;
        w.note(format!(
            "the sentinels named the replica {} ms after the kill",
            t.elapsed().as_millis()
        ));
        tokio::task::block_in_place(|| w.redis.lock().unwrap().restart_as_replica_of(promoted));
        w.fault_ends().await;
    })
}

/// (9) The RabbitMQ sink's broker SIGKILLed mid-crowd (deliveries in flight, confirms
/// outstanding) and started again on its port and data after the profile's fault time
/// (plus its own start-up, seconds): the outbox holds what it did not confirm.
fn broker_kill(w: &World) -> FaultFuture<'_> {
    Box::pin(async move {
        w.fault_begins();
        let broker = w.broker.as_ref().expect("a rabbitmq scenario");
        tokio::task::block_in_place(|| broker.lock().unwrap().kill());
        tokio::time::sleep(w.profile.fault).await;
        let t = std::time::Instant::now();
        tokio::task::block_in_place(|| broker.lock().unwrap().restart());
        w.note(format!(
            "the broker took {} ms to start again",
            t.elapsed().as_millis()
        ));
        w.fault_ends().await;
    })
}

/// Runs scenario `name` the profile's number of times, audits and reports each run, and
/// fails listing every violation.
pub async fn check(name: &str) {
    let profile = Profile::from_env();
    let sc = SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}"));
    let mut failed = Vec::new();
    for run in 1..=profile.runs {
        let mut rec = run_once(sc, &profile, run).await;
        let (tolerated, violations): (Vec<_>, Vec<_>) = audit(&rec)
            .into_iter()
            .partition(|v| sc.tolerates.contains(&v.rule));
        for rule in sc.tolerates {
            let hits: Vec<&str> = tolerated
                .iter()
                .filter(|v| v.rule == *rule)
                .map(|v| v.detail.as_str())
                .collect();
            rec.notes.push(format!(
                "tolerated by design, `{rule}`: {} ({})",
                hits.len(),
                hits.join("; ")
            ));
        }
        report::publish(&report::render(&rec, &violations));
        report::dump(&rec);
        if !violations.is_empty() {
            failed.push(format!(
                "run {run}: {} violation(s):\n{}",
                violations.len(),
                violations
                    .iter()
                    .map(|v| format!("  {}: {}", v.rule, v.detail))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(failed.is_empty(), "{name}:\n{}", failed.join("\n"));
}

/// A small calm run (no fault) for the audit's own test.
pub async fn calm_run() -> super::record::Run {
    let profile = Profile {
        name: "calm",
        users: 16,
        crowd: Duration::from_millis(400),
        payment_window: Duration::from_secs(1),
        ..Profile::smoke()
    };
    let calm = Scenario {
        name: "calm",
        gateways: 1,
        aof: false,
        sentinel: false,
        rabbitmq: false,
        tolerates: &[],
        mix: Mix {
            pay: 50,
            deadline: 30,
        },
        configure: defaults,
        fault: no_fault,
    };
    run_once(&calm, &profile, 1).await
}
