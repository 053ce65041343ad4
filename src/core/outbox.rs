//! The outbox consumer: every instance runs one. It hands paid orders and refund events
//! to the sink and acknowledges an entry only after the sink confirms.
//!
//! - new entries: XREADGROUP `>`, delivered at once;
//! - this consumer's failed entries: retried when idle for `retry_base * 2^(n-1)` (capped,
//!   with jitter) — the retry is an XCLAIM to ourselves, which counts the attempt;
//! - entries held by another consumer idle longer than `claim_idle` (a crashed instance):
//!   claimed and delivered here;
//! - after `max_attempts` deliveries: moved to the dead-letter stream, with a metric and
//!   an error log line. Never dropped;
//! - every `claim_idle`, a heartbeat; consumers of instances that are gone (nothing
//!   pending, no heartbeat for 3 × `claim_idle`) are removed from the group, atomically
//!   with the check.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::campaign::Registry;
use crate::clock::millis;
use crate::config::OrdersConfig;
use crate::metrics::Metrics;
use crate::sink::Sink;
use crate::stock::outbox::{self, Entry};
use crate::stock::{CampaignKeys, Conn, Store, StoreError};

/// Entries read per call.
const BATCH: usize = 64;
/// Sleep between polls when there was nothing to do.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// A consumer holding nothing and silent for this many `claim_idle` periods belongs to an
/// instance that is gone (a living one stamps a heartbeat every `claim_idle`): it is
/// removed from the group, so restarts and crashes do not pile up consumers.
const FORGET_AFTER_CLAIMS: u32 = 3;

/// What the consumer loop carries from one round to the next.
struct RoundState {
    /// Streams whose consumer group is known to exist.
    grouped: Vec<String>,
    /// The last sink error per entry id, for the dead-letter record.
    last_error: HashMap<String, String>,
    /// When this consumer last stamped its heartbeat and looked for gone ones.
    forgot_at: Instant,
}

pub(super) struct Consumer {
    pub(super) store: Store,
    pub(super) registry: Registry,
    pub(super) metrics: Metrics,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) cfg: OrdersConfig,
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
        };
        loop {
            if *shutdown.borrow() {
                return;
            }
            let worked = match self.round(&mut con, &mut st).await {
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
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }

    /// One pass over every campaign's outbox; returns how many entries it handled.
    async fn round(&self, con: &mut Conn, st: &mut RoundState) -> Result<usize, StoreError> {
        let campaigns = self.store.known_campaigns(self.registry.ids()).await?;
        let claim_idle = self.cfg.claim_idle.0;
        let forget = st.forgot_at.elapsed() >= claim_idle;
        let mut handled = 0;
        // One stream per read: each campaign's stream lives in its own cluster slot.
        for (_, keys) in &campaigns {
            if !st.grouped.contains(&keys.outbox) {
                self.store.ensure_group(con, keys).await?;
                st.grouped.push(keys.outbox.clone());
            }
            for e in self
                .store
                .read_new(con, &keys.outbox, &self.name, BATCH)
                .await?
            {
                self.handle(con, keys, &keys.outbox, &e, 1, &mut st.last_error)
                    .await?;
                handled += 1;
            }
            handled += self.retry(con, keys, &mut st.last_error).await?;
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
        Ok(handled)
    }

    /// Retries this consumer's due failures and reclaims entries of dead consumers.
    async fn retry(
        &self,
        con: &mut Conn,
        keys: &CampaignKeys,
        last_error: &mut HashMap<String, String>,
    ) -> Result<usize, StoreError> {
        let claim_idle = millis(self.cfg.claim_idle.0);
        let mut handled = 0;
        for p in self.store.pending(con, &keys.outbox, BATCH).await? {
            let due = if p.consumer == self.name {
                self.backoff(&p.id, p.deliveries)
            } else {
                claim_idle
            };
            if p.idle_ms < due {
                continue;
            }
            if p.deliveries >= self.cfg.max_attempts as u64 {
                let why = last_error
                    .remove(&p.id)
                    .unwrap_or_else(|| "delivery attempts exhausted".into());
                self.store
                    .dead_letter(con, keys, &p.id, p.deliveries, &why)
                    .await?;
                self.metrics
                    .sink_deliveries
                    .with_label_values(&[self.sink.name(), "failed"])
                    .inc();
                tracing::error!(stream = %keys.outbox, id = %p.id, attempts = p.deliveries, error = %why,
                    "outbox entry moved to the dead-letter stream");
                handled += 1;
                continue;
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
            for e in claimed {
                self.handle(con, keys, &keys.outbox, &e, p.deliveries + 1, last_error)
                    .await?;
                handled += 1;
            }
        }
        Ok(handled)
    }

    async fn handle(
        &self,
        con: &mut Conn,
        keys: &CampaignKeys,
        stream: &str,
        raw: &redis::streams::StreamId,
        attempt: u64,
        last_error: &mut HashMap<String, String>,
    ) -> Result<(), StoreError> {
        let entry: Entry = match outbox::parse(stream, raw) {
            Ok(e) => e,
            Err(why) => {
                tracing::error!(stream, id = %raw.id, error = %why, "malformed outbox entry; dead-lettering it");
                self.metrics
                    .sink_deliveries
                    .with_label_values(&[self.sink.name(), "failed"])
                    .inc();
                return self
                    .store
                    .dead_letter(con, keys, &raw.id, attempt, &why)
                    .await;
            }
        };
        match self.sink.deliver(&entry).await {
            Ok(()) => {
                self.store.ack(con, stream, &entry.id).await?;
                last_error.remove(&entry.id);
                self.metrics
                    .sink_deliveries
                    .with_label_values(&[self.sink.name(), "ok"])
                    .inc();
                tracing::info!(order_id = %entry.order.order_id, event = entry.event.as_str(), "order handed to the sink");
            }
            Err(e) => {
                self.metrics
                    .sink_deliveries
                    .with_label_values(&[self.sink.name(), "retry"])
                    .inc();
                tracing::warn!(order_id = %entry.order.order_id, attempt, error = %e, "sink delivery failed; will retry");
                // Only a hint for the dead-letter record; entries finished by another
                // instance never come back here, so keep the map bounded.
                if last_error.len() >= 10_000 {
                    last_error.clear();
                }
                last_error.insert(entry.id.clone(), e.to_string());
            }
        }
        Ok(())
    }
}
