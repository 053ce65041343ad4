//! The outbox consumer: every instance runs one. It hands paid orders and refund events
//! to the sink and acknowledges an entry only after the sink confirms.
//!
//! Each round settles the deliveries that finished and gathers new work from every
//! campaign's stream, as much as there is room for (`delivery`: the sink's batches, at
//! most `orders.delivery_concurrency` in flight; a slow one never holds up the reading):
//! - new entries: XREADGROUP `>`;
//! - this consumer's failed entries: retried when idle for `retry_base * 2^(n-1)` (capped
//!   at `retry_max`, with jitter) — the retry is an XCLAIM to ourselves, which counts the
//!   attempt;
//! - entries held by another consumer: claimed at once when its heartbeat is stale (the
//!   instance is gone, see `heartbeat`), else once idle longer than `claim_idle` (a
//!   living instance that stopped delivering, or one without a heartbeat);
//! - an entry still undelivered `give_up_after` after it was queued (its stream id's
//!   time, Redis' clock) — or after `max_attempts` deliveries, when set — moves to the
//!   dead-letter stream, with a metric and an error log line. Never dropped;
//! - every `claim_idle`, consumers of instances that are gone (nothing pending, no
//!   heartbeat for 3 × `claim_idle`) are removed from the group, atomically with the check.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::delivery::{Deliveries, Work};
use super::heartbeat;
use crate::campaign::Registry;
use crate::clock::{millis, Clock};
use crate::config::OrdersConfig;
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::stock::outbox::{self, PendingEntry};
use crate::stock::{CampaignKeys, Conn, Store, StoreError};

/// Pending entries looked at per stream and round, at least.
const BATCH: usize = 64;
/// Entries read per stream and round at most, whatever the room: they sit in memory.
const MAX_READ: usize = 2_000;
/// Sleep between polls when there was nothing to do.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// A consumer holding nothing and silent for this many `claim_idle` periods belongs to an
/// instance that is gone: it is removed from the group, so restarts and crashes do not
/// pile up consumers.
const FORGET_AFTER_CLAIMS: u32 = 3;

/// What the consumer loop carries from one round to the next.
struct RoundState {
    /// Streams whose consumer group is known to exist.
    grouped: Vec<String>,
    /// The last sink error per entry id, for the dead-letter record.
    last_error: HashMap<String, String>,
    /// When this consumer last looked for gone consumers to forget.
    forgot_at: Instant,
    /// Per stream: the consumers found stale, and when (asked at most once a beat).
    stale: HashMap<String, (Instant, HashSet<String>)>,
    /// Entries read but not started: `redis.replica_ack` replicas did not confirm them
    /// yet, and a sink must never hold a paid order a failover could take back.
    unconfirmed: Vec<Work>,
}

pub(super) struct Consumer {
    pub(super) store: Store,
    pub(super) registry: Registry,
    pub(super) metrics: Metrics,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) cfg: OrdersConfig,
    /// For the age of an entry (with the store's estimate of Redis' clock).
    pub(super) clock: Clock,
    /// Unique per process: `host:pid:random`.
    pub(super) name: String,
}

/// A consumer name unique to this process.
pub(super) fn consumer_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        ulid::Ulid::new().random() & 0xffff_ffff
    )
}

impl Consumer {
    /// Exponential back-off with a jitter of ±20%, stable per (entry, attempt) so a poll
    /// loop re-evaluating it does not skew it short.
    fn backoff(&self, id: &str, deliveries: u64) -> u64 {
        let base = millis(self.cfg.retry_base.0);
        let exp = base.saturating_mul(1u64 << deliveries.saturating_sub(1).min(20));
        let capped = exp.min(millis(self.cfg.retry_max.0));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (id, deliveries).hash(&mut h);
        let jitter = 80 + h.finish() % 41; // 80..=120 %
        capped * jitter / 100
    }

    /// Why a due entry is given up, if it is: too old, or (when bounded) too many tries.
    fn give_up(&self, p: &PendingEntry) -> Option<String> {
        let age = outbox::queued_at_ms(&p.id)
            .and_then(|at| u64::try_from(self.store.redis_now_ms(&self.clock) - at).ok());
        let limit = self.cfg.give_up_after.0;
        if age.is_some_and(|a| a >= millis(limit)) {
            return Some(format!(
                "undelivered {} after it was queued",
                humantime::format_duration(limit)
            ));
        }
        match self.cfg.max_attempts {
            Some(max) if p.deliveries >= u64::from(max) => {
                Some(format!("{} delivery attempts exhausted", p.deliveries))
            }
            _ => None,
        }
    }

    pub(super) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut con = loop {
            if self.store.conn().get().is_ok() {
                if let Ok(c) = self.store.conn().dedicated().await {
                    break c;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => return,
            }
        };
        let mut st = RoundState {
            grouped: Vec::new(),
            last_error: HashMap::new(),
            forgot_at: Instant::now(),
            stale: HashMap::new(),
            unconfirmed: Vec::new(),
        };
        let mut flying = Deliveries::new(
            self.sink.clone(),
            self.metrics.clone(),
            self.cfg.delivery_concurrency,
        );
        loop {
            if *shutdown.borrow() {
                return;
            }
            let worked = match self.round(&mut con, &mut st, &mut flying).await {
                Ok(n) => n > 0,
                Err(e) => {
                    // The group is gone (Redis restarted without persistence, the stream
                    // was deleted): create it again next round, not fail on NOGROUP forever.
                    if e.code() == Some("NOGROUP") {
                        st.grouped.clear();
                    }
                    tracing::warn!(error = %e, "outbox: redis call failed; will retry");
                    false
                }
            };
            if !worked {
                // Nothing to start: wait for a delivery to finish, or poll again.
                let done = tokio::select! {
                    done = flying.next(), if !flying.is_empty() => done,
                    _ = tokio::time::sleep(IDLE_POLL) => None,
                    _ = shutdown.changed() => return,
                };
                if let Some(done) = done {
                    let settled = flying
                        .settle(&self.store, &mut con, done, &mut st.last_error)
                        .await;
                    if let Err(e) = settled {
                        // Unacknowledged entries stay pending: delivered again, deduped.
                        tracing::warn!(error = %e, "outbox: redis call failed; will retry");
                    }
                }
            }
        }
    }

    /// One pass over every campaign's outbox: settles finished deliveries, starts new
    /// ones while there is room. Returns how many entries it handled.
    async fn round(
        &self,
        con: &mut Conn,
        st: &mut RoundState,
        flying: &mut Deliveries,
    ) -> Result<usize, StoreError> {
        let mut handled = flying
            .settle_finished(&self.store, con, &mut st.last_error)
            .await?;
        let campaigns = self.store.known_campaigns(self.registry.ids()).await?;
        let claim_idle = self.cfg.claim_idle.0;
        let forget = st.forgot_at.elapsed() >= claim_idle;
        let mut work = std::mem::take(&mut st.unconfirmed);
        // One stream per read: each campaign's stream lives in its own cluster slot.
        for (_, keys) in &campaigns {
            if !st.grouped.contains(&keys.outbox) {
                self.store.ensure_group(con, keys).await?;
                st.grouped.push(keys.outbox.clone());
            }
            // Read only what can start now: entries read are ours until delivered.
            let room = flying.room().saturating_sub(work.len()).min(MAX_READ);
            if room > 0 {
                let new = self
                    .store
                    .read_new(con, &keys.outbox, &self.name, room)
                    .await?;
                for raw in new {
                    handled += self.take(con, keys, &raw, 1, &mut work).await?;
                }
            }
            handled += self.retry(con, keys, st, flying, &mut work).await?;
            if forget {
                let min_idle = millis(claim_idle * FORGET_AFTER_CLAIMS);
                let gone = self
                    .store
                    .forget_idle_consumers(con, keys, &self.name, min_idle)
                    .await?;
                if gone > 0 {
                    tracing::info!(stream = %keys.outbox, consumers = gone,
                        "outbox: removed consumers of instances that are gone");
                }
            }
        }
        if forget {
            st.forgot_at = Instant::now();
        }
        // Replication is in order: once the replicas hold this connection's last write
        // (the read that took these entries), they hold the entries too.
        if !work.is_empty() && !self.store.replicated(con).await? {
            tracing::warn!(
                entries = work.len(),
                "outbox: replicas have not confirmed these entries; not delivering them yet"
            );
            st.unconfirmed = work;
            return Ok(handled);
        }
        // ...but only for entries read from the master `WAIT` asked. Those read from one
        // since replaced (Sentinel) may be gone with it; those the new master holds are
        // read again from it.
        let master = con.generation();
        let before = work.len();
        work.retain(|w| w.read_from == master);
        if work.len() < before {
            tracing::warn!(
                entries = before - work.len(),
                "outbox: entries read from a master since replaced; reading them again from the new one"
            );
        }
        flying.start(work);
        Ok(handled)
    }

    /// Gathers this consumer's due failures and the entries of gone (or stuck)
    /// consumers, claiming them; dead-letters the entries it gives up. Returns how many.
    async fn retry(
        &self,
        con: &mut Conn,
        keys: &CampaignKeys,
        st: &mut RoundState,
        flying: &Deliveries,
        work: &mut Vec<Work>,
    ) -> Result<usize, StoreError> {
        let claim_idle = millis(self.cfg.claim_idle.0);
        let mut handled = 0;
        for p in self
            .store
            .pending(con, &keys.outbox, BATCH.max(flying.room()).min(MAX_READ))
            .await?
        {
            if flying.in_flight(&p.id) {
                continue;
            }
            let due = if p.consumer == self.name {
                self.backoff(&p.id, p.deliveries)
            } else if p.idle_ms >= claim_idle {
                claim_idle
            } else if self.is_stale(con, keys, st, &p.consumer).await? {
                heartbeat::stale_claim_idle_ms()
            } else {
                continue;
            };
            if p.idle_ms < due {
                continue;
            }
            if let Some(why) = self.give_up(&p) {
                // Dead-lettered even with no room: it needs no delivery slot.
                let why = match st.last_error.remove(&p.id) {
                    Some(last) => format!("{why}; last error: {last}"),
                    None => why,
                };
                self.store
                    .dead_letter(con, keys, &p.id, p.deliveries, &why)
                    .await?;
                self.dead_lettered(&keys.outbox, &p.id, p.deliveries, &why);
                handled += 1;
                continue;
            }
            if work.len() >= flying.room() {
                continue; // no room: claimed in a later round
            }
            let claimed = self
                .store
                .claim(
                    con,
                    &keys.outbox,
                    &self.name,
                    due,
                    std::slice::from_ref(&p.id),
                )
                .await?;
            if p.consumer != self.name && !claimed.is_empty() {
                tracing::info!(stream = %keys.outbox, id = %p.id, from = %p.consumer,
                    "outbox: reclaimed an entry of another instance");
            }
            for raw in claimed {
                handled += self.take(con, keys, &raw, p.deliveries + 1, work).await?;
            }
        }
        Ok(handled)
    }

    /// Whether `consumer`'s heartbeat is stale (its instance is gone). Asked only when
    /// another consumer holds an entry not yet `claim_idle` old — the rare case, after a
    /// crash — and at most once a beat per stream.
    async fn is_stale(
        &self,
        con: &mut Conn,
        keys: &CampaignKeys,
        st: &mut RoundState,
        consumer: &str,
    ) -> Result<bool, StoreError> {
        let fresh = st
            .stale
            .get(&keys.outbox)
            .is_some_and(|(at, _)| at.elapsed() < heartbeat::BEAT);
        if !fresh {
            let names = self
                .store
                .heartbeat(con, keys, &self.name, heartbeat::stale_ms())
                .await?;
            st.stale.insert(
                keys.outbox.clone(),
                (Instant::now(), names.into_iter().collect()),
            );
        }
        Ok(st
            .stale
            .get(&keys.outbox)
            .is_some_and(|(_, names)| names.contains(consumer)))
    }

    /// Queues one read or claimed entry for the wave; a malformed one is dead-lettered at
    /// once (no retry can fix it). Returns 1: the entry was handled either way.
    async fn take(
        &self,
        con: &mut Conn,
        keys: &CampaignKeys,
        raw: &redis::streams::StreamId,
        attempt: u64,
        work: &mut Vec<Work>,
    ) -> Result<usize, StoreError> {
        match outbox::parse(&keys.outbox, raw) {
            Ok(entry) => work.push(Work {
                entry,
                attempt,
                read_from: con.generation(),
            }),
            Err(why) => {
                self.store
                    .dead_letter(con, keys, &raw.id, attempt, &why)
                    .await?;
                self.dead_lettered(&keys.outbox, &raw.id, attempt, &format!("malformed: {why}"));
            }
        }
        Ok(1)
    }

    /// The alert side of a dead letter: the `failed` count and an ERROR line. (The
    /// `flashgate_outbox_dead` gauge follows from the stream's length.)
    fn dead_lettered(&self, stream: &str, id: &str, attempts: u64, why: &str) {
        self.metrics
            .sink_deliveries
            .with_label_values(&[self.sink.name(), "failed"])
            .inc();
        tracing::error!(stream, id, attempts, error = %why,
            "outbox entry moved to the dead-letter stream; replay it with POST /admin/outbox/replay-dead");
    }
}
