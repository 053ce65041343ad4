//! The load driver: a crowd of users (each with its own JWT) buying concurrently from
//! the live gateways, with an `Idempotency-Key` per buy; a payment provider paying a
//! share of the reserved orders through signed callbacks (some at once, some right at
//! their deadline, the rest left to expire) and retrying a callback until it gets a
//! definite answer; and a snapshotter reading the admin ledger every ~150 ms. Every
//! answer is recorded as an [`Exchange`].
//!
//! A request that gets no answer (its gateway was killed) is repeated with the same key
//! on another live gateway, so the client learns what happened to it; a buy answered
//! 503 is retried with a NEW key: a 503 must have reserved nothing, and a
//! pre-order it left behind then stays one that no client was told about.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

use super::record::{Exchange, Kind, Snapshot, NO_ANSWER};
use crate::common::*;
use crate::lifecycle::*;

/// The gateways clients may talk to right now (a killed one is removed, a restarted one
/// added).
#[derive(Default)]
pub struct Live(RwLock<Vec<Endpoints>>);

impl Live {
    pub fn add(&self, e: Endpoints) {
        self.0.write().unwrap().push(e);
    }

    pub fn remove(&self, public: SocketAddr) {
        self.0.write().unwrap().retain(|e| e.public != public);
    }

    /// The `n`-th live gateway (round robin), if any is live.
    pub fn pick(&self, n: usize) -> Option<Endpoints> {
        let all = self.0.read().unwrap();
        (!all.is_empty()).then(|| all[n % all.len()])
    }

    pub fn all(&self) -> Vec<Endpoints> {
        self.0.read().unwrap().clone()
    }
}

/// What share of reserved orders is paid at once, paid right at the deadline (±150 ms,
/// racing expiry) or left to expire; the rest of 100 after `pay` and `deadline`.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub pay: u64,
    pub deadline: u64,
}

/// Everything the crowd needs, shared by its tasks.
pub struct Crowd {
    pub campaign: String,
    pub skus: Vec<String>,
    pub users: usize,
    pub per_user_limit: u32,
    /// Users arrive over this span.
    pub span: Duration,
    pub mix: Mix,
    pub live: Arc<Live>,
    pub log: Arc<Log>,
    /// A request without a definite answer is retried until this long after the crowd
    /// started (then recorded as it is).
    pub give_up: Duration,
}

/// The recorded exchanges and snapshots.
#[derive(Default)]
pub struct Log {
    pub exchanges: Mutex<Vec<Exchange>>,
    pub snapshots: Mutex<Vec<Snapshot>>,
}

impl Log {
    fn push(&self, e: Exchange) {
        self.exchanges.lock().unwrap().push(e);
    }

    /// Buys answered 201 so far.
    pub fn reserved(&self) -> usize {
        let all = self.exchanges.lock().unwrap();
        all.iter()
            .filter(|e| e.kind == Kind::Buy && e.status == 201)
            .count()
    }
}

/// Runs the crowd to its end: every user's buys and every payment (also those waiting
/// for their deadline) answered.
pub async fn run(crowd: Arc<Crowd>) {
    let started = Instant::now();
    let mut users = JoinSet::new();
    for i in 0..crowd.users {
        let crowd = crowd.clone();
        users.spawn(async move { user(crowd, i, started).await });
    }
    while let Some(r) = users.join_next().await {
        r.expect("crowd user task");
    }
}

/// One user: arrives, buys up to `per_user_limit + 1` times (the last one must be
/// refused), retrying a 503 after a short pause; each new pre-order gets its fate.
async fn user(crowd: Arc<Crowd>, i: usize, started: Instant) {
    let arrival = crowd.span.mul_f64(i as f64 / crowd.users as f64);
    tokio::time::sleep(arrival).await;
    let name = format!("u{i:04}");
    let auth = bearer(&name);
    let mut payments = JoinSet::new();
    for b in 0..=crowd.per_user_limit as usize {
        let sku = crowd.skus[(i + b) % crowd.skus.len()].clone();
        for attempt in 0.. {
            let key = format!("{name}-{b}-{attempt}");
            let path = format!("/seckill/campaigns/{}/items/{sku}/orders", crowd.campaign);
            let headers = [
                ("authorization", auth.as_str()),
                ("idempotency-key", key.as_str()),
            ];
            let req = Request {
                kind: Kind::Buy,
                user: &name,
                sku: &sku,
                key: &key,
                path: &path,
                headers: &headers,
                body: None,
                pay_by_ms: None,
            };
            let (ex, order) = answered(&crowd, &req, i + b, started).await;
            match ex.status {
                201 => {
                    let order = order.expect("a 201 has a body");
                    if let Some(at) = fate(&crowd.mix, i * 7 + b * 13, &order) {
                        let crowd = crowd.clone();
                        let who = name.clone();
                        payments.spawn(async move { pay(crowd, who, order, at, started).await });
                    }
                    break;
                }
                503 if started.elapsed() < crowd.span + Duration::from_secs(3) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => break,
            }
        }
    }
    while let Some(r) = payments.join_next().await {
        r.expect("payment task");
    }
}

/// When to pay `order` (wall ms; `None`: never, it expires). `n` picks the fate.
fn fate(mix: &Mix, n: usize, order: &Value) -> Option<i64> {
    let roll = (n as u64 * 37 + 11) % 100;
    let pay_by = ms_of(&order["pay_by"]);
    if roll < mix.pay {
        Some(now_ms() + (n as i64 % 5) * 60)
    } else if roll < mix.pay + mix.deadline {
        Some(pay_by - 150 + (n as i64 * 53) % 301)
    } else {
        None
    }
}

/// The provider pays `order` at `at` (wall ms) and retries until it gets a definite
/// answer (anything but a 503 or no answer).
async fn pay(crowd: Arc<Crowd>, user: String, order: Value, at: i64, started: Instant) {
    sleep_until_ms(at).await;
    let id = order_id(&order).to_owned();
    let pid = payment_id(&id);
    let body = callback_body(&id, &pid, amount(&order));
    let pay_by = ms_of(&order["pay_by"]);
    let n = user.bytes().map(usize::from).sum::<usize>();
    loop {
        let sig = sign_callback(PAYMENT_SECRET, &body, unix_now());
        let headers = [
            ("content-type", "application/json"),
            ("flashgate-signature", sig.as_str()),
        ];
        let req = Request {
            kind: Kind::Callback,
            user: &user,
            sku: "",
            key: &pid,
            path: "/payments/callback",
            headers: &headers,
            body: Some(&body),
            pay_by_ms: Some(pay_by),
        };
        let (ex, _) = answered(&crowd, &req, n, started).await;
        if ex.status != 503 || started.elapsed() > crowd.give_up {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Request<'a> {
    kind: Kind,
    user: &'a str,
    sku: &'a str,
    key: &'a str,
    path: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: Option<&'a [u8]>,
    pay_by_ms: Option<i64>,
}

/// Sends `req` to a live gateway until some gateway answers it (a request that got no
/// answer is repeated with the same key on the next one); records every attempt.
async fn answered(
    crowd: &Crowd,
    req: &Request<'_>,
    mut n: usize,
    started: Instant,
) -> (Exchange, Option<Value>) {
    let mut after_no_answer = false;
    loop {
        let Some(gw) = crowd.live.pick(n) else {
            assert!(
                started.elapsed() < crowd.give_up,
                "no live gateway for {}s",
                crowd.give_up.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (ex, body) = exchange(gw, req, after_no_answer).await;
        crowd.log.push(ex.clone());
        if ex.status != NO_ANSWER || started.elapsed() > crowd.give_up {
            return (ex, body);
        }
        after_no_answer = true;
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn exchange(
    gw: Endpoints,
    req: &Request<'_>,
    after_no_answer: bool,
) -> (Exchange, Option<Value>) {
    let sent_ms = now_ms();
    let t = Instant::now();
    let res = try_send(
        "POST",
        &gw.url(req.path),
        req.headers,
        req.body.map(<[u8]>::to_vec),
    )
    .await;
    let latency = t.elapsed();
    let mut ex = Exchange {
        kind: req.kind,
        user: req.user.to_owned(),
        sku: req.sku.to_owned(),
        key: req.key.to_owned(),
        after_no_answer,
        sent_ms,
        latency,
        status: NO_ANSWER,
        retry_after: false,
        slug: None,
        order_id: None,
        answer: None,
        pay_by_ms: req.pay_by_ms,
    };
    let Ok(res) = res else { return (ex, None) };
    ex.status = res.status;
    ex.retry_after = res.header("retry-after").is_some();
    let body: Option<Value> = serde_json::from_slice(&res.body).ok();
    if let Some(b) = &body {
        let text = |k: &str| b[k].as_str().map(str::to_owned);
        ex.slug =
            text("type").and_then(|t| t.strip_prefix("urn:flashgate:problem:").map(str::to_owned));
        ex.order_id = text("order_id");
        ex.answer = text("status");
    }
    (ex, body)
}

/// Reads the admin ledger of every item from the first live gateway that answers, every
/// `every`, until `stop`.
pub async fn snapshots(
    live: Arc<Live>,
    campaign: String,
    skus: Vec<String>,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
    every: Duration,
) {
    while !stop.load(Ordering::SeqCst) {
        snapshots_once(&live, &campaign, &skus, &log).await;
        tokio::time::sleep(every).await;
    }
}

/// One snapshot of every item, from the first live gateway that answers 200.
pub async fn snapshots_once(live: &Live, campaign: &str, skus: &[String], log: &Log) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for gw in live.all() {
        let url = gw.admin_url("/admin/campaigns");
        let Ok(res) = try_send("GET", &url, &[("authorization", &auth)], None).await else {
            continue;
        };
        let Ok(all) = serde_json::from_slice::<Value>(&res.body) else {
            continue;
        };
        if res.status != 200 {
            continue;
        }
        let at_ms = now_ms();
        let mut snaps = log.snapshots.lock().unwrap();
        for sku in skus {
            if let Some((stats, ledger_ok)) = item_stats(&all, campaign, sku) {
                let sku = sku.clone();
                snaps.push(Snapshot {
                    at_ms,
                    sku,
                    stats,
                    ledger_ok,
                });
            }
        }
        return;
    }
}
