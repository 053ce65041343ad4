//! The only module that knows Redis keys and `lua/*.lua`. Every operation on stock,
//! pre-orders and the outbox is one script call (or one pipeline) with a typed result.
//!
//! Every key a script touches that can be known before the call is passed in `KEYS`;
//! only keys derived from an order id stored in Redis are built inside a script.
//!
//! Must never: build a key outside `CampaignKeys`, make more than one round trip for a
//! buy, or answer a Redis failure with anything but a `StoreError` (the caller fails
//! closed). Every call goes through `RedisConn::bounded`, which counts failures.

mod batch;
mod breaker;
mod conn;
mod error;
mod keys;
pub mod order;
pub mod outbox;
mod raffle;
mod redis_clock;
mod reply;
mod reserve;
mod scripts;
mod sentinel;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{millis, Clock};
use redis::FromRedisValue;
use redis_clock::RedisClock;

pub use conn::{Conn, RedisConn, RedisMetrics};
pub use error::StoreError;
pub use keys::{CampaignKeys, Holders};
pub use order::{Order, OrderStatus};
pub use raffle::{AdmissionCounts, DrawStep, EnterOutcome, EntryState, Pick, Selection};
pub use reserve::{HoldersUpdate, ReserveOutcome, ReserveRequest};
use scripts::Scripts;

/// Dedicated connections kept for callbacks that WAIT for replicas.
const MAX_WAITING_CONNS: usize = 8;

/// How long a closed (paid, expired, cancelled) order stays readable in Redis.
pub const RETAIN_CLOSED: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled(Order),
    NotPending(Order),
    NotFound,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Paid(Order),
    AlreadyPaid(Order),
    /// Paid before with another payment id: a refund of this one is queued (the order is
    /// returned as stored, still paid with its first payment id).
    SecondCharge(Order),
    /// That second charge was reported before; nothing new queued.
    AlreadySecondCharge(Order),
    RefundRequired(Order),
    AlreadyRefundRequired(Order),
    AmountMismatch(Order),
    NotFound,
}

/// Largest stock adjustment in one call, either way: far beyond any real stock, and
/// small enough that `lua/adjust.lua` computes exactly with Lua's doubles.
pub const MAX_STOCK_DELTA: i64 = 1_000_000_000_000;

/// What an operator's stock adjustment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    Applied {
        remaining: i64,
    },
    /// Nothing changed: remaining would go below zero.
    WouldGoNegative {
        remaining: i64,
    },
    /// Nothing changed: |delta| > [`MAX_STOCK_DELTA`], or a counter would leave the range
    /// of exact integers (±(2^53 - 1)).
    OutOfRange,
}

/// Counters of one item (units). Ledger: initial + adjusted = remaining + pending + paid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ItemStats {
    pub initial: i64,
    pub adjusted: i64,
    pub remaining: i64,
    pub pending: i64,
    pub paid: i64,
    pub expired: i64,
    pub cancelled: i64,
    pub refund_required: i64,
}

impl ItemStats {
    pub fn ledger_holds(&self) -> bool {
        self.initial + self.adjusted == self.remaining + self.pending + self.paid
            && self.remaining >= 0
    }
}

/// Units expired by one sweep: (sku, quantity) per order.
pub type Expired = Vec<(String, u32)>;

/// Cheap `Clone` handle over the Redis connection and the scripts.
#[derive(Clone)]
pub struct Store {
    conn: RedisConn,
    pub(crate) scripts: Arc<Scripts>,
    prefix: Arc<str>,
    /// The estimate of Redis' clock behind each reservation's deadline.
    redis_clock: Arc<RedisClock>,
    /// Group commit of reservations, one lane per campaign.
    batcher: Arc<batch::Batcher>,
    /// `flashgate_reserve_batch_size`, when observed.
    batch_sizes: Option<prometheus::Histogram>,
    /// `redis.replica_ack`: replicas a payment's writes must reach before it is answered.
    replica_ack: u32,
    /// Dedicated connections for callbacks that `WAIT` (each used by one call at a time:
    /// a `WAIT` blocks its connection).
    waiting_conns: Arc<std::sync::Mutex<Vec<Conn>>>,
}

type Reply = Vec<Option<String>>;

fn tag(r: &Reply) -> &str {
    r.first().and_then(|v| v.as_deref()).unwrap_or("")
}

fn order_in(r: &Reply) -> Result<Order, StoreError> {
    Order::from_fields(&r[1..])
        .ok_or_else(|| StoreError::Protocol(format!("bad order fields: {r:?}")))
}

fn int_at(r: &Reply, i: usize) -> i64 {
    r.get(i)
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Store {
    /// A store on the Redis `cfg` names, keeping `metrics`.
    pub fn new(
        cfg: &crate::config::RedisConfig,
        metrics: RedisMetrics,
    ) -> Result<Store, StoreError> {
        Ok(Store {
            conn: RedisConn::new(cfg, metrics)?,
            scripts: Arc::new(Scripts::new()),
            prefix: cfg.key_prefix.as_str().into(),
            redis_clock: Arc::default(),
            batcher: Arc::default(),
            batch_sizes: None,
            replica_ack: cfg.replica_ack,
            waiting_conns: Arc::default(),
        })
    }

    /// Observes the size of every reserve batch in `h`.
    pub fn observing_batches(mut self, h: prometheus::Histogram) -> Store {
        self.batch_sizes = Some(h);
        self
    }

    pub fn conn(&self) -> &RedisConn {
        &self.conn
    }

    pub fn keys(&self, campaign: &str) -> CampaignKeys {
        CampaignKeys::new(&self.prefix, campaign)
    }

    fn limit(&self) -> Duration {
        // One command's own timeout plus a NOSCRIPT reload-and-retry.
        self.conn.timeout() * 3
    }

    /// One script call on the shared connection (NOSCRIPT reloads and retries once).
    async fn run<T: FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.run_within(self.limit(), inv).await
    }

    /// [`Store::run`] given up after `limit`.
    async fn run_within<T: FromRedisValue>(
        &self,
        limit: Duration,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.conn
            .bounded(limit, async {
                let mut con = self.conn.get()?;
                Ok(inv.invoke_async(&mut con).await?)
            })
            .await
    }

    /// One script call whose writes must reach `redis.replica_ack` replicas: the script
    /// and a `WAIT` on one dedicated connection (a `WAIT` covers its own connection's
    /// writes and blocks that connection, so never the shared one).
    async fn run_replicated(&self, inv: redis::ScriptInvocation<'_>) -> Result<Reply, StoreError> {
        let pooled = self
            .waiting_conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let mut con = match pooled {
            Some(c) => c,
            None => self.conn.dedicated().await?,
        };
        let wanted = self.replica_ack;
        let wait = self.wait_for_replicas();
        let result = self
            .conn
            .bounded(self.limit() + self.conn.timeout(), async {
                let reply: Reply = inv.invoke_async(&mut con).await?;
                let acked: u32 = wait.query_async(&mut con).await?;
                Ok((reply, acked))
            })
            .await;
        if result.is_ok() {
            let mut pool = self.waiting_conns.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < MAX_WAITING_CONNS {
                pool.push(con);
            }
        }
        let (reply, acked) = result?;
        if acked < wanted {
            tracing::warn!(acked, wanted, "a payment's writes did not reach enough replicas in time; answering 503 so the provider retries");
            return Err(StoreError::NotReplicated { acked, wanted });
        }
        Ok(reply)
    }

    /// Whether `redis.replica_ack` replicas hold every write made so far on `con` (a
    /// dedicated connection: `WAIT` blocks it); always true when not asked for.
    pub async fn replicated(&self, con: &mut Conn) -> Result<bool, StoreError> {
        if self.replica_ack == 0 {
            return Ok(true);
        }
        let wait = self.wait_for_replicas();
        let acked: u32 = self
            .conn
            .bounded(self.limit(), async { Ok(wait.query_async(con).await?) })
            .await?;
        Ok(acked >= self.replica_ack)
    }

    /// `WAIT` for `redis.replica_ack` replicas, at most `command_timeout`: how many hold
    /// every write made so far on the connection it is sent on.
    fn wait_for_replicas(&self) -> redis::Cmd {
        redis::cmd("WAIT")
            .arg(self.replica_ack)
            .arg(millis(self.conn.timeout()))
            .clone()
    }

    /// One command on the shared connection.
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.conn
            .bounded(self.limit(), async {
                let mut con = self.conn.get()?;
                Ok(cmd.query_async(&mut con).await?)
            })
            .await
    }

    /// One pipeline on the shared connection.
    async fn query_pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        self.conn
            .bounded(self.limit(), async {
                let mut con = self.conn.get()?;
                Ok(pipe.query_async(&mut con).await?)
            })
            .await
    }

    /// Loads an item's stock once; returns whether it was created now.
    pub async fn init_item(
        &self,
        keys: &CampaignKeys,
        sku: &str,
        stock: u64,
    ) -> Result<bool, StoreError> {
        let mut inv = self.scripts.init.prepare_invoke();
        inv.key(keys.item(sku)).arg(stock);
        let created: i64 = self.run(inv).await?;
        Ok(created == 1)
    }

    pub async fn get_order(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        let Some(campaign) = order::campaign_of(order_id) else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys(campaign).order(order_id))
            .arg(&order::FIELD_NAMES);
        let v: Reply = self.query(&cmd).await?;
        Ok(Order::from_fields(&v))
    }

    /// The owner cancels a pending order.
    pub async fn cancel(&self, order_id: &str, user: &str) -> Result<CancelOutcome, StoreError> {
        let Some(campaign) = order::campaign_of(order_id) else {
            return Ok(CancelOutcome::NotFound);
        };
        let keys = self.keys(campaign);
        let mut inv = self.scripts.cancel.prepare_invoke();
        inv.key(keys.order(order_id)).key(&keys.deadlines);
        inv.arg(&keys.base).arg(user).arg(millis(RETAIN_CLOSED));
        let reply: Reply = self.run(inv).await?;
        Ok(match tag(&reply) {
            "cancelled" => CancelOutcome::Cancelled(order_in(&reply)?),
            "not_pending" => CancelOutcome::NotPending(order_in(&reply)?),
            _ => CancelOutcome::NotFound,
        })
    }

    /// Applies a verified payment callback.
    pub async fn confirm(
        &self,
        order_id: &str,
        payment_id: &str,
        amount_cents: u64,
    ) -> Result<ConfirmOutcome, StoreError> {
        let Some(campaign) = order::campaign_of(order_id) else {
            return Ok(ConfirmOutcome::NotFound);
        };
        let keys = self.keys(campaign);
        let mut inv = self.scripts.confirm.prepare_invoke();
        inv.key(keys.order(order_id))
            .key(&keys.outbox)
            .key(&keys.deadlines);
        inv.arg(&keys.base)
            .arg(payment_id)
            .arg(amount_cents)
            .arg(millis(RETAIN_CLOSED))
            .arg(if self.replica_ack > 0 { "1" } else { "" });
        let reply: Reply = if self.replica_ack > 0 {
            self.run_replicated(inv).await?
        } else {
            self.run(inv).await?
        };
        Ok(match tag(&reply) {
            "paid" => ConfirmOutcome::Paid(order_in(&reply)?),
            "paid_dup" => ConfirmOutcome::AlreadyPaid(order_in(&reply)?),
            "second" => ConfirmOutcome::SecondCharge(order_in(&reply)?),
            "second_dup" => ConfirmOutcome::AlreadySecondCharge(order_in(&reply)?),
            "refund" => ConfirmOutcome::RefundRequired(order_in(&reply)?),
            "refund_dup" => ConfirmOutcome::AlreadyRefundRequired(order_in(&reply)?),
            "mismatch" => ConfirmOutcome::AmountMismatch(order_in(&reply)?),
            _ => ConfirmOutcome::NotFound,
        })
    }

    /// Expires up to `batch` pre-orders of one campaign whose deadline is at or before
    /// `now_ms` (the caller's clock); returns (due seen, expired).
    pub async fn expire_due(
        &self,
        keys: &CampaignKeys,
        now_ms: i64,
        batch: usize,
    ) -> Result<(usize, Expired), StoreError> {
        let mut inv = self.scripts.expire.prepare_invoke();
        inv.key(&keys.deadlines)
            .arg(&keys.base)
            .arg(batch)
            .arg(millis(RETAIN_CLOSED))
            .arg(now_ms);
        let reply: Reply = self.run(inv).await?;
        let seen = usize::try_from(int_at(&reply, 0)).unwrap_or(0);
        let expired = reply[1..]
            .chunks_exact(2)
            .filter_map(|p| Some((p[0].clone()?, p[1].as_deref()?.parse().ok()?)))
            .collect();
        Ok((seen, expired))
    }

    /// Operator stock adjustment (`lua/adjust.lua`). A `delta` beyond
    /// ±[`MAX_STOCK_DELTA`] is refused here without asking Redis.
    pub async fn adjust(
        &self,
        keys: &CampaignKeys,
        sku: &str,
        delta: i64,
        initial: u64,
    ) -> Result<Adjustment, StoreError> {
        if delta.unsigned_abs() > MAX_STOCK_DELTA.unsigned_abs() {
            return Ok(Adjustment::OutOfRange);
        }
        let mut inv = self.scripts.adjust.prepare_invoke();
        inv.key(keys.item(sku)).arg(delta).arg(initial);
        let reply: Reply = self.run(inv).await?;
        let remaining = int_at(&reply, 1);
        Ok(match tag(&reply) {
            "ok" => Adjustment::Applied { remaining },
            "negative" => Adjustment::WouldGoNegative { remaining },
            _ => Adjustment::OutOfRange,
        })
    }

    /// Counters of several items in one pipeline; a missing item reads as zeros.
    pub async fn item_stats(&self, item_keys: &[String]) -> Result<Vec<ItemStats>, StoreError> {
        let mut pipe = redis::pipe();
        for k in item_keys {
            pipe.cmd("HMGET").arg(k).arg(&[
                "initial",
                "adjusted",
                "remaining",
                "pending",
                "paid",
                "expired",
                "cancelled",
                "refund_required",
            ]);
        }
        let rows: Vec<Vec<Option<i64>>> = self.query_pipe(&pipe).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let g = |i: usize| r.get(i).copied().flatten().unwrap_or(0);
                ItemStats {
                    initial: g(0),
                    adjusted: g(1),
                    remaining: g(2),
                    pending: g(3),
                    paid: g(4),
                    expired: g(5),
                    cancelled: g(6),
                    refund_required: g(7),
                }
            })
            .collect())
    }

    /// `<prefix>:campaigns`: every campaign id any instance has loaded. Background work
    /// (expiry, outbox) covers these too, so removing a campaign file never strands its
    /// paid orders or pending deadlines. Not hash-tagged: it is only read by plain commands.
    fn campaigns_key(&self) -> String {
        format!("{}:campaigns", self.prefix)
    }

    pub async fn remember_campaigns(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("SADD");
        cmd.arg(self.campaigns_key()).arg(ids);
        self.query(&cmd).await
    }

    /// The running campaigns plus every campaign ever loaded, sorted, with their keys.
    pub async fn known_campaigns(
        &self,
        running: Vec<String>,
    ) -> Result<Vec<(String, CampaignKeys)>, StoreError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.campaigns_key());
        let mut ids: Vec<String> = self.query(&cmd).await?;
        ids.extend(running);
        ids.sort();
        ids.dedup();
        Ok(ids
            .into_iter()
            .map(|id| {
                let keys = self.keys(&id);
                (id, keys)
            })
            .collect())
    }

    /// The users holding a pending order of an item, unless its holder version is still
    /// `known` (then `None`: the caller's snapshot is current).
    pub async fn holders(
        &self,
        keys: &CampaignKeys,
        item_key: &str,
        sku: &str,
        known: Option<i64>,
    ) -> Result<Option<Holders>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(item_key).arg("hv");
        let version = self.query::<Option<i64>>(&cmd).await?.unwrap_or(0);
        if known == Some(version) {
            return Ok(None);
        }
        let mut cmd = redis::cmd("HKEYS");
        cmd.arg(keys.holders(sku));
        let users: Vec<String> = self.query(&cmd).await?;
        Ok(Some(Holders {
            version: Some(version),
            users: users.into_iter().collect(),
        }))
    }

    /// Sets or clears a campaign's shared pause switch.
    pub async fn set_paused(&self, keys: &CampaignKeys, paused: bool) -> Result<(), StoreError> {
        let mut cmd = if paused {
            redis::cmd("SET")
        } else {
            redis::cmd("DEL")
        };
        cmd.arg(&keys.paused);
        if paused {
            cmd.arg(1);
        }
        self.query(&cmd).await
    }

    /// Whether a campaign's shared pause switch is set.
    pub async fn paused(&self, keys: &CampaignKeys) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(&keys.paused);
        self.query(&cmd).await
    }

    /// Redis' clock now, as estimated at the last `sync_clock` and carried on by the
    /// time elapsed since; `clock` itself before the first measurement.
    pub fn redis_now_ms(&self, clock: &Clock) -> i64 {
        self.redis_clock
            .now_ms(std::time::Instant::now())
            .unwrap_or_else(|| clock.now_ms())
    }

    /// Measures Redis' clock (one `TIME`) against the time elapsed here, for
    /// reservation deadlines. Elapsed time, not the sale's clock: Redis keeps real time
    /// however a test moves that clock, and a deadline guards a real wait.
    pub async fn sync_clock(&self) -> Result<(), StoreError> {
        let before = std::time::Instant::now();
        let (secs, micros): (i64, i64) = self.query(&redis::cmd("TIME")).await?;
        let after = std::time::Instant::now();
        self.redis_clock
            .record(before, after, secs * 1000 + micros / 1000);
        Ok(())
    }

    /// Loads every script (after connect or a Redis restart) and checks Redis answers.
    pub async fn ready(&self) -> Result<(), StoreError> {
        // A plain command, not a pipeline: on a cluster it goes to every primary and the
        // answers are AND-ed, so a script missing on any node is loaded (on all of them).
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("EXISTS");
        for s in self.scripts.all() {
            cmd.arg(s.get_hash());
        }
        let loaded: Vec<i64> = self.query(&cmd).await?;
        for (s, ok) in self.scripts.all().into_iter().zip(loaded) {
            if ok == 0 {
                self.conn
                    .bounded(self.limit(), async {
                        let mut con = self.conn.get()?;
                        Ok(s.prepare_invoke().load_async(&mut con).await?)
                    })
                    .await?;
            }
        }
        Ok(())
    }
}
