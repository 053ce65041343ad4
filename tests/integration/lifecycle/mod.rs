//! Helpers for the pre-order lifecycle tests (`payments`, `expiry`, `outbox`,
//! `postgres_sink`): buying, paying through signed callbacks, the admin ledger, metrics,
//! the outbox streams (read straight from Redis), and a gateway run as the real binary.
//!
//! A test module uses it with `use crate::lifecycle::*;` — it builds on `crate::common`.
// shared helpers of the lifecycle tests, not an API
#![allow(unreachable_pub)]
// Timestamp arithmetic on values the tests made themselves.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::common::*;

/// Redis key prefix: `redis.key_prefix` is left at its default in `TestConfig`.
pub const PREFIX: &str = "fg";

/// Waits for background work (deliveries, expiry, reclaim) in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

// === where a gateway listens ===

/// A running gateway, in-process ([`Gateway`]) or as a process ([`GatewayProcess`]).
pub trait Api {
    /// Both addresses, `Copy + 'static` for spawned tasks.
    fn endpoints(&self) -> Endpoints;

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.endpoints().public)
    }
    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.endpoints().admin)
    }
}

impl Api for Gateway {
    fn endpoints(&self) -> Endpoints {
        Endpoints {
            public: self.public_addr,
            admin: self.admin_addr,
        }
    }
}

/// The addresses of a gateway, `Clone + 'static` for spawned tasks.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

impl Api for Endpoints {
    fn endpoints(&self) -> Endpoints {
        *self
    }
}

/// What every lifecycle test starts with: a Redis, a store (also the http sink) and a
/// config naming both, with one campaign.
pub struct Setup {
    pub redis: RedisServer,
    pub store: TestStore,
    pub cfg: TestConfig,
}

impl Setup {
    pub async fn new(campaign: CampaignSpec) -> Setup {
        let redis = RedisServer::start();
        let store = TestStore::start().await;
        let mut cfg = TestConfig::new(&redis.url(), &store.url());
        cfg.campaign(campaign);
        Setup { redis, store, cfg }
    }
}

/// Starts an in-process gateway and waits until `/readyz` answers 200 (Redis connected,
/// scripts loaded): before that, buys get 503.
pub async fn start(cfg: &TestConfig) -> Gateway {
    let gw = Gateway::start(cfg.load()).await;
    wait_ready(&gw).await;
    gw
}

pub async fn wait_ready(api: &impl Api) {
    let url = api.admin_url("/readyz");
    eventually("gateway /readyz", WAIT, || async {
        let r = try_send("GET", &url, &[], None).await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
}

// === buying and paying ===

pub async fn buy(api: &impl Api, campaign: &str, sku: &str, user: &str) -> TestResponse {
    let url = api.url(&format!("/seckill/campaigns/{campaign}/items/{sku}/orders"));
    send("POST", &url, &[("authorization", &bearer(user))], None).await
}

/// Buys and asserts a new pre-order (201, `pending_payment`); returns the order JSON.
#[track_caller]
pub fn assert_reserved(res: &TestResponse, campaign: &str, user: &str) -> Value {
    assert_eq!(res.status, 201, "buy for {user}: {}", res.text());
    let o = res.json();
    assert_eq!(o["status"], "pending_payment", "{o}");
    assert_eq!(o["user_id"], user, "{o}");
    let id = o["order_id"].as_str().expect("order_id");
    assert!(
        id.ends_with(&format!(".{campaign}")),
        "order id {id} is not <ULID>.{campaign}"
    );
    o
}

pub async fn buy_ok(api: &impl Api, campaign: &str, sku: &str, user: &str) -> Value {
    let res = buy(api, campaign, sku, user).await;
    assert_reserved(&res, campaign, user)
}

pub fn order_id(order: &Value) -> &str {
    order["order_id"].as_str().expect("order has an order_id")
}

pub fn amount(order: &Value) -> u64 {
    order["amount_cents"]
        .as_u64()
        .expect("order has amount_cents")
}

/// `payment_id` used for an order by [`pay`].
pub fn payment_id(order_id: &str) -> String {
    format!("pay_{}", order_id.split('.').next().unwrap_or(order_id))
}

/// A callback body as docs/api.md gives it.
pub fn callback_body(order_id: &str, payment_id: &str, amount_cents: u64) -> Vec<u8> {
    serde_json::json!({
        "order_id": order_id,
        "payment_id": payment_id,
        "amount_cents": amount_cents,
        "status": "succeeded",
    })
    .to_string()
    .into_bytes()
}

/// `POST /payments/callback` with `body` and, when given, `Flashgate-Signature: sig`.
pub async fn post_callback(api: &impl Api, body: Vec<u8>, sig: Option<&str>) -> TestResponse {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(sig) = sig {
        headers.push(("flashgate-signature", sig));
    }
    send("POST", &api.url("/payments/callback"), &headers, Some(body)).await
}

/// A callback signed now with the payment secret.
pub async fn signed_callback(api: &impl Api, body: Vec<u8>) -> TestResponse {
    let sig = sign_callback(PAYMENT_SECRET, &body, unix_now());
    post_callback(api, body, Some(&sig)).await
}

/// Pays `order` in full (`succeeded`, the right amount).
pub async fn pay(api: &impl Api, order: &Value) -> TestResponse {
    let id = order_id(order);
    signed_callback(api, callback_body(id, &payment_id(id), amount(order))).await
}

/// Pays `order` and asserts `200 {"order_id", "status": "paid"}`.
pub async fn pay_ok(api: &impl Api, order: &Value) {
    let res = pay(api, order).await;
    assert_eq!(res.status, 200, "callback: {}", res.text());
    let body = res.json();
    assert_eq!(body["status"], "paid", "{body}");
    assert_eq!(body["order_id"], order_id(order), "{body}");
}

pub async fn get_order(api: &impl Api, user: &str, id: &str) -> TestResponse {
    let url = api.url(&format!("/seckill/orders/{id}"));
    send("GET", &url, &[("authorization", &bearer(user))], None).await
}

/// The order's `status` as its owner sees it.
pub async fn order_status(api: &impl Api, user: &str, id: &str) -> String {
    let res = get_order(api, user, id).await;
    assert_eq!(res.status, 200, "GET order {id}: {}", res.text());
    res.json()["status"].as_str().unwrap_or_default().to_owned()
}

/// The `<slug>` of a problem+json response (`type = urn:flashgate:problem:<slug>`).
#[track_caller]
pub fn slug(res: &TestResponse) -> String {
    assert_eq!(
        res.header("content-type"),
        Some("application/problem+json"),
        "not a problem: {} {}",
        res.status,
        res.text()
    );
    let t = res.json()["type"].as_str().unwrap_or_default().to_owned();
    t.strip_prefix("urn:flashgate:problem:")
        .unwrap_or_else(|| panic!("problem type {t:?}"))
        .to_owned()
}

/// Asserts a problem response with `status` and `slug`.
#[track_caller]
pub fn assert_problem(res: &TestResponse, status: u16, want: &str) {
    assert_eq!(res.status, status, "{}", res.text());
    assert_eq!(slug(res), want, "{}", res.text());
}

// === admin ===

pub async fn admin_get(api: &impl Api, path: &str) -> TestResponse {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    send(
        "GET",
        &api.admin_url(path),
        &[("authorization", &auth)],
        None,
    )
    .await
}

pub async fn admin_post(api: &impl Api, path: &str, body: &str) -> TestResponse {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    send("POST", &api.admin_url(path), &headers, Some(body.into())).await
}

/// One item's counters from `GET /admin/campaigns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub initial: i64,
    pub adjusted: i64,
    pub remaining: i64,
    pub pending: i64,
    pub paid: i64,
    pub expired: i64,
    pub cancelled: i64,
    pub refund_required: i64,
}

/// An item's counters and `ledger_ok` from a `GET /admin/campaigns` body; `None` when
/// the campaign, the item or a counter is missing.
pub fn item_stats(all: &Value, campaign: &str, sku: &str) -> Option<(Stats, bool)> {
    let c = all["campaigns"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == campaign)?;
    let i = c["items"].as_array()?.iter().find(|i| i["sku"] == sku)?;
    let n = |k: &str| i[k].as_i64();
    let s = Stats {
        initial: n("initial")?,
        adjusted: n("adjusted")?,
        remaining: n("remaining")?,
        pending: n("pending")?,
        paid: n("paid")?,
        expired: n("expired")?,
        cancelled: n("cancelled")?,
        refund_required: n("refund_required")?,
    };
    Some((s, i["ledger_ok"] == true))
}

/// Reads an item's counters and asserts the ledger:
/// `initial + adjusted = remaining + pending + paid`, nothing negative, `ledger_ok`.
pub async fn ledger(api: &impl Api, campaign: &str, sku: &str) -> Stats {
    let res = admin_get(api, "/admin/campaigns").await;
    assert_eq!(res.status, 200, "{}", res.text());
    let all = res.json();
    let (s, ledger_ok) = item_stats(&all, campaign, sku)
        .unwrap_or_else(|| panic!("no counters of {campaign}/{sku} in {all}"));
    assert_eq!(
        s.initial + s.adjusted,
        s.remaining + s.pending + s.paid,
        "ledger broken for {campaign}/{sku}: {s:?}"
    );
    assert!(
        s.remaining >= 0 && s.pending >= 0 && s.paid >= 0,
        "negative counter: {s:?}"
    );
    assert!(ledger_ok, "ledger_ok false for {campaign}/{sku}: {all}");
    s
}

/// `GET /admin/outbox` → (pending, dead).
pub async fn outbox_counts(api: &impl Api) -> (u64, u64) {
    let res = admin_get(api, "/admin/outbox").await;
    assert_eq!(res.status, 200, "{}", res.text());
    let b = res.json();
    (
        b["pending"].as_u64().expect("pending"),
        b["dead"].as_u64().expect("dead"),
    )
}

// === metrics ===

pub async fn metrics(api: &impl Api) -> String {
    let res = send("GET", &api.admin_url("/metrics"), &[], None).await;
    assert_eq!(res.status, 200);
    res.text()
}

/// Sum of the samples of `name` whose labels include `labels` (0 when none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, set) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let have: HashMap<&str, &str> = set
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            labels
                .iter()
                .all(|(k, v)| have.get(k) == Some(v))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// `flashgate_sink_deliveries_total{sink, result}` now.
pub async fn sink_deliveries(api: &impl Api, sink: &str, result: &str) -> f64 {
    metric(
        &metrics(api).await,
        "flashgate_sink_deliveries_total",
        &[("sink", sink), ("result", result)],
    )
}

/// Polls `/metrics` until `name{labels}` equals `want`.
pub async fn wait_metric(api: &impl Api, name: &str, labels: &[(&str, &str)], want: f64) {
    let what = format!("{name}{labels:?} == {want}");
    eventually(&what, WAIT, || async {
        (metric(&metrics(api).await, name, labels) == want).then_some(())
    })
    .await;
}

// === Redis, read directly ===

/// Stream key names tests rely on: `<prefix>:{<campaign>}:outbox|dead`.
pub fn outbox_key(campaign: &str) -> String {
    format!("{PREFIX}:{{{campaign}}}:outbox")
}

pub fn dead_key(campaign: &str) -> String {
    format!("{PREFIX}:{{{campaign}}}:dead")
}

/// The consumer group the gateways read the outbox with.
pub const GROUP: &str = "flashgate";

/// A direct connection to the test Redis, to look at the outbox streams.
#[derive(Clone)]
pub struct Probe {
    con: redis::aio::MultiplexedConnection,
}

impl Probe {
    pub async fn new(redis: &RedisServer) -> Probe {
        Probe::connect(&redis.url())
            .await
            .expect("connect to test redis")
    }

    /// Connects to the Redis at `url`.
    pub async fn connect(url: &str) -> redis::RedisResult<Probe> {
        let client = redis::Client::open(url)?;
        let con = client.get_multiplexed_async_connection().await?;
        Ok(Probe { con })
    }

    /// Entries ever added to `stream` (XINFO STREAM `entries-added`, Redis ≥ 7): counts
    /// XADDs even after the consumer deleted the delivered entries. 0 when absent.
    pub async fn entries_added(&mut self, stream: &str) -> u64 {
        let info: redis::RedisResult<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(stream)
            .query_async(&mut self.con)
            .await;
        match info {
            Ok(m) => match m.get("entries-added") {
                Some(redis::Value::Int(n)) => *n as u64,
                other => panic!("XINFO STREAM {stream}: entries-added is {other:?}"),
            },
            Err(e) if e.to_string().contains("no such key") => 0,
            Err(e) => panic!("XINFO STREAM {stream}: {e}"),
        }
    }

    pub async fn xlen(&mut self, stream: &str) -> u64 {
        redis::cmd("XLEN")
            .arg(stream)
            .query_async(&mut self.con)
            .await
            .expect("XLEN")
    }

    /// Entries read by some consumer of the group but not acknowledged, with their
    /// consumer: `XPENDING <stream> flashgate - + 10000`.
    pub async fn pending(&mut self, stream: &str) -> Vec<(String, String)> {
        let reply: redis::RedisResult<redis::streams::StreamPendingCountReply> =
            redis::cmd("XPENDING")
                .arg(stream)
                .arg(GROUP)
                .arg("-")
                .arg("+")
                .arg(10_000)
                .query_async(&mut self.con)
                .await;
        match reply {
            Ok(r) => r.ids.into_iter().map(|p| (p.id, p.consumer)).collect(),
            // no stream or no group yet: nothing pending
            Err(e) if e.to_string().contains("NOGROUP") => Vec::new(),
            Err(e) => panic!("XPENDING {stream}: {e}"),
        }
    }

    /// Runs any command; the error is the caller's (a connection Sentinel closed).
    pub async fn try_query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        cmd.query_async(&mut self.con).await
    }

    /// Runs any command.
    pub async fn query<T: redis::FromRedisValue>(&mut self, cmd: redis::Cmd) -> T {
        cmd.query_async(&mut self.con)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", cmd.args_iter().next()))
    }

    /// The names of the consumer group's consumers (XINFO CONSUMERS).
    pub async fn consumers(&mut self, stream: &str) -> Vec<String> {
        let reply = self.consumer_info(stream).await;
        reply.consumers.into_iter().map(|c| c.name).collect()
    }

    /// How long (ms, Redis' clock) the group's consumer `name` has been idle.
    pub async fn idle_ms(&mut self, stream: &str, name: &str) -> Option<usize> {
        let reply = self.consumer_info(stream).await;
        reply
            .consumers
            .into_iter()
            .find_map(|c| (c.name == name).then_some(c.idle))
    }

    async fn consumer_info(&mut self, stream: &str) -> redis::streams::StreamInfoConsumersReply {
        redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(GROUP)
            .query_async(&mut self.con)
            .await
            .expect("XINFO CONSUMERS")
    }

    /// Every entry of `stream` as (id, field → value).
    pub async fn entries(&mut self, stream: &str) -> Vec<(String, BTreeMap<String, String>)> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query_async(&mut self.con)
            .await
            .expect("XRANGE");
        reply
            .ids
            .into_iter()
            .map(|e| {
                let fields = e
                    .map
                    .iter()
                    .map(|(k, v)| {
                        let v: String = redis::from_redis_value(v).expect("text field");
                        (k.clone(), v)
                    })
                    .collect();
                (e.id, fields)
            })
            .collect()
    }

    /// Appends an entry with exactly these fields (a verbatim copy, for re-delivery tests).
    pub async fn xadd(&mut self, stream: &str, fields: &BTreeMap<String, String>) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        cmd.query_async(&mut self.con).await.expect("XADD")
    }

    /// Waits until the campaign's outbox is empty and nothing is pending in the group:
    /// every entry was delivered and acknowledged (or dead-lettered).
    pub async fn wait_drained(&mut self, campaign: &str) {
        let stream = outbox_key(campaign);
        eventually(&format!("{stream} drained"), WAIT, || {
            let mut probe = self.clone();
            let stream = stream.clone();
            async move {
                let n = probe.xlen(&stream).await;
                let p = probe.pending(&stream).await.len();
                (n == 0 && p == 0).then_some(())
            }
        })
        .await;
    }
}

// === many orders ===

/// Buys and pays one unit of `sku` for each user, ten at a time; returns the orders.
pub async fn buy_and_pay_each(
    api: &impl Api,
    campaign: &str,
    sku: &str,
    users: &[String],
) -> Vec<Value> {
    let mut out = Vec::new();
    for chunk in users.chunks(10) {
        let mut set = tokio::task::JoinSet::new();
        for user in chunk {
            let api = api.endpoints();
            let (campaign, sku, user) = (campaign.to_owned(), sku.to_owned(), user.clone());
            set.spawn(async move {
                let order = buy_ok(&api, &campaign, &sku, &user).await;
                pay_ok(&api, &order).await;
                order
            });
        }
        while let Some(o) = set.join_next().await {
            out.push(o.expect("buy+pay task"));
        }
    }
    out
}

/// `n` user names: `<prefix>00`, `<prefix>01`, …
pub fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

/// The orders' ids, sorted.
pub fn ids(orders: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = orders.iter().map(|o| order_id(o).to_owned()).collect();
    v.sort();
    v
}

/// The ledger of an item of which `paid` units were paid and nothing else happened.
pub fn paid_stats(initial: i64, paid: i64) -> Stats {
    Stats {
        initial,
        remaining: initial - paid,
        paid,
        ..Stats::default()
    }
}

// === what the store received ===

/// Deliveries per `order_id` (from the body), in arrival order.
pub fn by_order(orders: &[RecordedOrder]) -> BTreeMap<String, Vec<RecordedOrder>> {
    let mut m: BTreeMap<String, Vec<RecordedOrder>> = BTreeMap::new();
    for o in orders {
        let id = o.json["order_id"].as_str().unwrap_or("<none>").to_owned();
        m.entry(id).or_default().push(o.clone());
    }
    m
}

/// Asserts that the store received each order exactly once, with a valid sink
/// signature and `Idempotency-Key = order_id`; returns order_id → event status.
#[track_caller]
pub fn assert_delivered_once(orders: &[RecordedOrder]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (id, deliveries) in by_order(orders) {
        assert_eq!(
            deliveries.len(),
            1,
            "order {id} delivered {} times",
            deliveries.len()
        );
        let d = &deliveries[0];
        assert_eq!(d.header("idempotency-key"), Some(id.as_str()));
        let sig = d.header("flashgate-signature").expect("signed delivery");
        assert!(
            verify_signature(SINK_SECRET, sig, &d.raw),
            "bad sink signature on {id}"
        );
        let status = d.json["status"].as_str().unwrap_or_default().to_owned();
        out.insert(id, status);
    }
    out
}

/// Waits until the store has a delivery of each of `orders` and the campaign's outbox is
/// drained; asserts that each arrived exactly once (as `assert_delivered_once`) and
/// nothing else did. Returns order_id → event status.
pub async fn wait_delivered_once(
    store: &TestStore,
    probe: &mut Probe,
    campaign: &str,
    orders: &[Value],
) -> BTreeMap<String, String> {
    store.wait_for_orders(orders.len(), WAIT).await;
    probe.wait_drained(campaign).await;
    let delivered = assert_delivered_once(&store.orders());
    assert_eq!(delivered.keys().cloned().collect::<Vec<_>>(), ids(orders));
    delivered
}

// === time ===

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Milliseconds since the epoch of an RFC 3339 text (the order's `pay_by` etc.).
#[track_caller]
pub fn ms_of(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    let t = OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Sleeps until the wall clock reads `at_ms` (at once when that has passed).
pub async fn sleep_until_ms(at_ms: i64) {
    let d = at_ms - now_ms();
    if d > 0 {
        tokio::time::sleep(Duration::from_millis(d as u64)).await;
    }
}

// === the real binary ===

/// `flashgate serve` as a child process (for crash tests), logging JSON to a pipe that a
/// thread drains. Killed (SIGKILL) on drop.
pub struct GatewayProcess {
    child: Child,
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Api for GatewayProcess {
    fn endpoints(&self) -> Endpoints {
        Endpoints {
            public: self.public_addr,
            admin: self.admin_addr,
        }
    }
}

impl GatewayProcess {
    /// Writes `cfg` and starts the binary with the test secrets in its environment;
    /// returns once it logged its addresses and `/readyz` answers.
    pub async fn spawn(cfg: &TestConfig) -> GatewayProcess {
        let path = cfg.write();
        let mut child = Command::new(env!("CARGO_BIN_EXE_flashgate"))
            .arg("--log-format")
            .arg("json")
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .env("FLASHGATE_JWT_SECRET", JWT_SECRET)
            .env("FLASHGATE_PAYMENT_SECRET", PAYMENT_SECRET)
            .env("FLASHGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("FLASHGATE_SINK_SECRET", SINK_SECRET)
            // And whatever else the test set (a sink's URL).
            .envs(cfg.env_vars())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the flashgate binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addrs) = listening(&line) {
                    let _ = tx.send(addrs);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addrs = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT))
            .await
            .expect("join");
        let (public_addr, admin_addr) = match addrs {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "flashgate did not log its addresses; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let p = GatewayProcess {
            child,
            public_addr,
            admin_addr,
            log,
        };
        wait_ready(&p).await;
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to `grace` for the exit (SIGKILL after that); returns
    /// whether it exited on its own. Blocks the thread: call it from a multi-thread runtime.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        sigterm(&self.child);
        tokio::task::block_in_place(|| wait_or_kill(&mut self.child, grace))
    }

    /// SIGKILL: no drain, no shutdown work at all.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The addresses from the `flashgate listening` JSON log line.
fn listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let f = &v["fields"];
    if f["message"] != "flashgate listening" {
        return None;
    }
    Some((
        f["public_addr"].as_str()?.parse().ok()?,
        f["admin_addr"].as_str()?.parse().ok()?,
    ))
}
