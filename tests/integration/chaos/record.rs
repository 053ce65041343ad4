//! What one chaos run recorded: every answer a client got (buys and payment callbacks,
//! with wall-clock times and latencies), the admin ledger snapshots taken during the
//! run, when the fault began and ended, and — once the run was quiet — what the store
//! received and what Redis holds. The audit and the report read only a [`Run`], so a
//! recorded run can be corrupted on purpose to prove the audit fails.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::lifecycle::Stats;

/// `status` of an exchange that got no HTTP answer (refused, reset, timed out).
pub const NO_ANSWER: u16 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Buy,
    Callback,
}

/// One request and its answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub kind: Kind,
    pub user: String,
    /// Buy: the item. Callback: empty.
    pub sku: String,
    /// Buy: its `Idempotency-Key`. Callback: the `payment_id`.
    pub key: String,
    /// This attempt repeats (same key) one that got no answer.
    pub after_no_answer: bool,
    /// Wall clock (ms since the epoch) when the request left.
    pub sent_ms: i64,
    pub latency: Duration,
    /// [`NO_ANSWER`] when there was no HTTP answer.
    pub status: u16,
    pub retry_after: bool,
    /// The problem slug of an error answer.
    pub slug: Option<String>,
    /// Buy: the order id answered. Callback: the order paid.
    pub order_id: Option<String>,
    /// Buy: the order's status. Callback: `paid` / `refund_required`.
    pub answer: Option<String>,
    /// Callback: the order's `pay_by` (ms).
    pub pay_by_ms: Option<i64>,
}

impl Exchange {
    /// Wall clock (ms) when the answer arrived.
    pub fn done_ms(&self) -> i64 {
        self.sent_ms + i64::try_from(self.latency.as_millis()).unwrap_or(i64::MAX)
    }
}

/// One item's counters from `GET /admin/campaigns`, taken during the run.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at_ms: i64,
    pub sku: String,
    pub stats: Stats,
    pub ledger_ok: bool,
}

/// One delivery the store received (duplicates included): an http request, or a message
/// in the RabbitMQ sink's queue.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// http: the `Idempotency-Key` header; rabbitmq: the `message_id`.
    pub idempotency_key: String,
    pub order_id: String,
    pub status: String,
    pub payment_id: String,
    /// http: the sink signature verifies; rabbitmq: the message carries its documented
    /// properties (persistent JSON from flashgate, the key also in `idempotency-key`).
    pub signed: bool,
}

/// A pre-order as Redis holds it once the run is quiet.
#[derive(Debug, Clone)]
pub struct StoredOrder {
    pub id: String,
    pub user: String,
    pub sku: String,
    pub qty: i64,
    pub status: String,
    /// Redis' clock (ms); `paid_at` 0 when never paid.
    pub pay_by: i64,
    pub paid_at: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Run {
    pub scenario: String,
    pub profile: String,
    pub run: usize,
    pub skus: Vec<String>,
    pub per_user_limit: i64,
    pub exchanges: Vec<Exchange>,
    pub snapshots: Vec<Snapshot>,
    /// Wall clock (ms) of the fault's start and end; `None` without a fault.
    pub fault: Option<(i64, i64)>,
    /// Outbox entries waiting when the fault ended.
    pub backlog_at_fault_end: u64,
    /// When the outbox was first empty after the fault ended.
    pub drained_ms: Option<i64>,
    /// When the run was quiet (no pending pre-order, outbox drained); `None`: never.
    pub quiet_ms: Option<i64>,
    pub deliveries: Vec<Delivery>,
    pub orders: Vec<StoredOrder>,
    /// Each user's `held` units (pending + paid) in Redis at the end.
    pub held: BTreeMap<String, i64>,
    /// Free-form lines for the report (scenario-specific measurements).
    pub notes: Vec<String>,
}
