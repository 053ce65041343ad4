//! One chaos run end to end: starts Redis, the store (also the http sink, or a RabbitMQ
//! broker as the sink) and the scenario's gateways as real processes; runs the crowd and the snapshotter; lets the
//! scenario's fault act mid-crowd; waits until quiet; collects what the store and Redis
//! hold into a [`Run`] for the audit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::driver::{self, Crowd, Live, Log};
use super::profile::Profile;
use super::record::{Delivery, Run, StoredOrder};
use super::scenarios::Scenario;
use crate::common::*;
use crate::lifecycle::*;

pub const CAMPAIGN: &str = "chaos";
pub const SKUS: [&str; 2] = ["red", "blue"];
const PRICE: u64 = 2_500;

/// The name the sentinels of a failover scenario monitor the master under.
const MASTER: &str = "chaos";

/// What a fault acts on.
pub struct World {
    pub profile: Profile,
    pub redis: Mutex<RedisServer>,
    /// A replica and three sentinels beside `redis` (the first primary), if any.
    pub failover: Option<SentinelTrio>,
    /// The order sink's broker, in a `rabbitmq` scenario.
    pub broker: Option<Mutex<RabbitMq>>,
    pub store: TestStore,
    pub cfg: TestConfig,
    /// The gateways started, in order (a SIGKILLed one stays, dead).
    pub gateways: Mutex<Vec<GatewayProcess>>,
    pub live: Arc<Live>,
    pub log: Arc<Log>,
    fault: Mutex<(Option<i64>, Option<i64>)>,
    backlog: Mutex<u64>,
    drained: Mutex<Option<tokio::task::JoinHandle<Option<i64>>>>,
    notes: Mutex<Vec<String>>,
    crowd_done: tokio::sync::watch::Receiver<bool>,
}

impl World {
    /// The fault begins now.
    pub fn fault_begins(&self) {
        self.fault.lock().unwrap().0 = Some(now_ms());
    }

    /// The fault is over now: from here the outbox is watched until it is empty.
    pub async fn fault_ends(&self) {
        let end = now_ms();
        self.fault.lock().unwrap().1 = Some(end);
        let mut outbox = OutboxWatch::new(self.master_url());
        let asked = Instant::now();
        let backlog = loop {
            match outbox.len().await {
                Some(n) => break n,
                None if asked.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => panic!("the outbox backlog: the master does not answer"),
            }
        };
        *self.backlog.lock().unwrap() = backlog;
        let timeout = self.profile.quiet_timeout;
        let watch = tokio::spawn(async move {
            let t = Instant::now();
            while t.elapsed() < timeout {
                if outbox.is_empty().await == Some(true) {
                    return Some(now_ms());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None
        });
        *self.drained.lock().unwrap() = Some(watch);
    }

    /// A line for the report.
    pub fn note(&self, line: String) {
        self.notes.lock().unwrap().push(line);
    }

    /// Waits until every user of the crowd is done (all buys and payments answered).
    pub async fn crowd_done(&self) {
        let mut rx = self.crowd_done.clone();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// The port of the master: the one the sentinels name, or the only Redis.
    pub fn master_port(&self) -> u16 {
        match &self.failover {
            Some(f) => f.master_port().expect("the sentinel names a master"),
            None => self.redis.lock().unwrap().port(),
        }
    }

    fn master_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.master_port())
    }

    /// A fresh direct connection to the master (one made before a Redis restart or a
    /// failover is dead).
    pub async fn probe(&self) -> Probe {
        let url = self.master_url();
        eventually("a Redis connection", Duration::from_secs(10), || async {
            Probe::connect(&url).await.ok()
        })
        .await
    }

    /// Starts one more gateway with the run's configuration and makes it live.
    pub async fn start_gateway(&self) {
        let gw = GatewayProcess::spawn(&self.cfg).await;
        self.live.add(gw.endpoints());
        self.gateways.lock().unwrap().push(gw);
    }
}

/// The Sentinel deployment of a failover scenario; `cfg` then reaches Redis through
/// its sentinels, with `replica_ack = 1`.
async fn sentinels_for(primary: &RedisServer, cfg: &mut TestConfig) -> SentinelTrio {
    let trio = SentinelTrio::start(MASTER, primary).await;
    trio.configure(cfg);
    cfg.set("redis", "replica_ack", "1");
    trio
}

/// Watches the campaign's outbox on the master through a connection of its own, opened
/// again whenever it fails: Sentinel closes the clients of every node it reconfigures
/// (`CLIENT KILL TYPE normal`), also after the failover proper.
struct OutboxWatch {
    url: String,
    probe: Option<Probe>,
}

impl OutboxWatch {
    fn new(url: String) -> OutboxWatch {
        OutboxWatch { url, probe: None }
    }

    /// Runs `cmd`; a connection that failed is opened again next time.
    async fn ask<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let probe = match &mut self.probe {
            Some(p) => p,
            None => self.probe.insert(Probe::connect(&self.url).await?),
        };
        let r = probe.try_query(cmd).await;
        if r.as_ref().is_err_and(|e| e.code().is_none()) {
            self.probe = None; // not an error reply: the connection
        }
        r
    }

    /// Entries in the outbox; `None` when the master could not be asked.
    async fn len(&mut self) -> Option<u64> {
        self.ask(redis::cmd("XLEN").arg(outbox_key(CAMPAIGN)))
            .await
            .ok()
    }

    /// No entry in the outbox and none read but unacknowledged; `None` when the master
    /// could not be asked.
    async fn is_empty(&mut self) -> Option<bool> {
        if self.len().await? > 0 {
            return Some(false);
        }
        let key = outbox_key(CAMPAIGN);
        let pending: (i64, redis::Value, redis::Value, redis::Value) =
            match self.ask(redis::cmd("XPENDING").arg(&key).arg(GROUP)).await {
                Ok(summary) => summary,
                // no stream or no group yet: nothing pending
                Err(e) if e.code() == Some("NOGROUP") => return Some(true),
                Err(_) => return None,
            };
        Some(pending.0 == 0)
    }
}

/// Runs `sc` once and returns the recorded run (not yet audited).
pub async fn run_once(sc: &Scenario, profile: &Profile, run: usize) -> Run {
    let redis = if sc.aof {
        RedisServer::start_with_aof()
    } else {
        RedisServer::start()
    };
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    let window = format!("{}ms", profile.payment_window.as_millis());
    let mut campaign = CampaignSpec::new(CAMPAIGN)
        .payment_window(&window)
        .per_user_limit(profile.per_user_limit);
    for sku in SKUS {
        campaign = campaign.item(sku, profile.stock(), PRICE);
    }
    cfg.campaign(campaign)
        .set_str("orders", "sweep_interval", "100ms");
    (sc.configure)(&mut cfg);
    let failover = match sc.sentinel {
        true => Some(sentinels_for(&redis, &mut cfg).await),
        false => None,
    };
    let broker = sc.rabbitmq.then(|| {
        let broker = tokio::task::block_in_place(RabbitMq::start);
        cfg.rabbitmq_sink(&broker.url());
        Mutex::new(broker)
    });

    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let world = Arc::new(World {
        profile: profile.clone(),
        redis: Mutex::new(redis),
        failover,
        broker,
        store,
        cfg,
        gateways: Mutex::new(Vec::new()),
        live: Arc::new(Live::default()),
        log: Arc::new(Log::default()),
        fault: Mutex::new((None, None)),
        backlog: Mutex::new(0),
        drained: Mutex::new(None),
        notes: Mutex::new(Vec::new()),
        crowd_done: done_rx,
    });
    for _ in 0..sc.gateways {
        world.start_gateway().await;
    }

    let skus: Vec<String> = SKUS.map(str::to_owned).to_vec();
    let stop = Arc::new(AtomicBool::new(false));
    let snapper = tokio::spawn(driver::snapshots(
        world.live.clone(),
        CAMPAIGN.to_owned(),
        skus.clone(),
        world.log.clone(),
        stop.clone(),
        Duration::from_millis(150),
    ));
    let crowd = Arc::new(Crowd {
        campaign: CAMPAIGN.to_owned(),
        skus: skus.clone(),
        users: profile.users,
        per_user_limit: profile.per_user_limit,
        span: profile.crowd,
        mix: sc.mix,
        live: world.live.clone(),
        log: world.log.clone(),
        give_up: profile.crowd + profile.quiet_timeout,
    });
    let crowd_task = tokio::spawn(async move {
        driver::run(crowd).await;
        let _ = done_tx.send(true);
    });

    // The fault strikes once the crowd is under way (a quarter of it served).
    let underway = (profile.users / 4).max(1);
    let log = world.log.clone();
    eventually("the crowd under way", Duration::from_secs(30), || async {
        (log.reserved() >= underway).then_some(())
    })
    .await;
    (sc.fault)(&world).await;
    crowd_task.await.expect("the crowd");

    // Quiet: no pending pre-order, the outbox drained.
    let quiet_ms = wait_quiet(&world).await;
    let watch = world.drained.lock().unwrap().take();
    let drained_ms = match watch {
        Some(w) => w.await.expect("drain watch"),
        None => None,
    };
    // One last snapshot, of the quiet state.
    stop.store(true, Ordering::SeqCst);
    snapper.await.expect("snapshotter");
    driver::snapshots_once(&world.live, CAMPAIGN, &skus, &world.log).await;

    let mut probe = world.probe().await;
    let (orders, held) = stored_orders(&mut probe).await;
    let deliveries = match &world.broker {
        Some(broker) => queued(broker).await,
        None => world.store.orders().iter().map(delivered).collect(),
    };
    let (start, end) = *world.fault.lock().unwrap();
    let notes = world.notes.lock().unwrap().clone();
    let backlog = *world.backlog.lock().unwrap();
    let run = Run {
        scenario: sc.name.to_owned(),
        profile: profile.name.to_owned(),
        run,
        skus,
        per_user_limit: i64::from(profile.per_user_limit),
        exchanges: world.log.exchanges.lock().unwrap().clone(),
        snapshots: world.log.snapshots.lock().unwrap().clone(),
        fault: start.zip(end),
        backlog_at_fault_end: backlog,
        drained_ms,
        quiet_ms,
        deliveries,
        orders,
        held,
        notes,
    };
    drop(world);
    run
}

/// A delivery the store (the http sink) received.
fn delivered(o: &RecordedOrder) -> Delivery {
    Delivery {
        idempotency_key: o.header("idempotency-key").unwrap_or_default().to_owned(),
        order_id: o.json["order_id"].as_str().unwrap_or_default().to_owned(),
        status: o.json["status"].as_str().unwrap_or_default().to_owned(),
        payment_id: o.json["payment_id"].as_str().unwrap_or_default().to_owned(),
        signed: o
            .header("flashgate-signature")
            .is_some_and(|sig| verify_signature(SINK_SECRET, sig, &o.raw)),
    }
}

/// Every message in the broker's queue (duplicates included), as deliveries: keyed by
/// `message_id`, "signed" when it carries the properties the docs promise.
async fn queued(broker: &Mutex<RabbitMq>) -> Vec<Delivery> {
    // Taken out of the lock: the broker is not restarted any more once quiet.
    let url = broker.lock().unwrap().url();
    let messages = RabbitMq::take_all_at(&url, "flashgate.orders").await;
    messages
        .iter()
        .map(|m| {
            let body = m.json();
            let id = m.message_id.clone().unwrap_or_default();
            Delivery {
                signed: m.content_type.as_deref() == Some("application/json")
                    && m.delivery_mode == Some(2)
                    && m.app_id.as_deref() == Some("flashgate")
                    && m.idempotency_key.as_deref() == Some(id.as_str()),
                idempotency_key: id,
                order_id: body["order_id"].as_str().unwrap_or_default().to_owned(),
                status: body["status"].as_str().unwrap_or_default().to_owned(),
                payment_id: body["payment_id"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// Waits until a live gateway reports no pending pre-order and the outbox is empty and
/// unclaimed; returns when (`None`: not within the profile's quiet timeout).
async fn wait_quiet(world: &World) -> Option<i64> {
    let mut outbox = OutboxWatch::new(world.master_url());
    let t = Instant::now();
    while t.elapsed() < world.profile.quiet_timeout {
        let pending = pending_total(world).await;
        if pending == Some(0) && outbox.is_empty().await == Some(true) {
            return Some(now_ms());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn pending_total(world: &World) -> Option<i64> {
    let gw = world.live.pick(0)?;
    let res = try_send(
        "GET",
        &gw.admin_url("/admin/campaigns"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        None,
    )
    .await
    .ok()?;
    let all: serde_json::Value = serde_json::from_slice(&res.body).ok()?;
    SKUS.iter()
        .map(|sku| item_stats(&all, CAMPAIGN, sku).map(|(s, _)| s.pending))
        .sum()
}

/// Every pre-order in Redis, and every user's `held`.
async fn stored_orders(probe: &mut Probe) -> (Vec<StoredOrder>, BTreeMap<String, i64>) {
    let base = format!("{PREFIX}:{{{CAMPAIGN}}}:");
    let keys: Vec<String> = probe
        .query(redis::cmd("KEYS").arg(format!("{base}*")).clone())
        .await;
    let mut orders = Vec::new();
    let mut held = BTreeMap::new();
    for key in keys {
        if let Some(id) = key.strip_prefix(&format!("{base}order:")) {
            let h: BTreeMap<String, String> =
                probe.query(redis::cmd("HGETALL").arg(&key).clone()).await;
            let f = |k: &str| h.get(k).cloned().unwrap_or_default();
            orders.push(StoredOrder {
                id: id.to_owned(),
                user: f("user"),
                sku: f("sku"),
                qty: f("qty").parse().unwrap_or(0),
                status: f("status"),
                pay_by: f("pay_by").parse().unwrap_or(0),
                paid_at: f("paid_at").parse().unwrap_or(0),
            });
        } else if let Some(user) = key.strip_prefix(&format!("{base}user:")) {
            let n: Option<i64> = probe
                .query(redis::cmd("HGET").arg(&key).arg("held").clone())
                .await;
            held.insert(user.to_owned(), n.unwrap_or(0));
        }
    }
    (orders, held)
}
