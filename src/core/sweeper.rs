//! The expiry sweeper: every instance runs one. Each tick it asks `expire.lua` to close
//! due pre-orders of every campaign in batches; the script's state check makes concurrent
//! sweepers safe (an order leaves `pending_payment` once, so stock returns once).

use std::time::Duration;

use tokio::sync::watch;

use super::Sale;

/// Orders closed per script call; small enough to keep Redis responsive between calls.
pub(super) const BATCH: usize = 200;

pub(super) async fn run(sale: Sale, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if sale.inner.store.conn().get().is_ok() {
            sale.sweep().await;
        }
    }
}

impl Sale {
    /// One expiry sweep over every campaign ever loaded: closes the pre-orders whose
    /// deadline is at or before the sale's clock's now (the background sweeper calls this
    /// every `orders.sweep_interval`).
    pub async fn sweep(&self) {
        let i = &*self.inner;
        let campaigns = match i.store.known_campaigns(i.registry.ids()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "expiry sweep: cannot list campaigns; will retry");
                return;
            }
        };
        for (id, keys) in &campaigns {
            loop {
                match i.store.expire_due(keys, i.clock.now_ms(), BATCH).await {
                    Ok((seen, expired)) => {
                        for (sku, qty) in &expired {
                            i.metrics.preorder(id, sku, "expired", u64::from(*qty));
                        }
                        if !expired.is_empty() {
                            tracing::debug!(campaign = %id, n = expired.len(), "pre-orders expired");
                        }
                        if seen < BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(campaign = %id, error = %e, "expiry sweep failed; will retry");
                        break;
                    }
                }
            }
        }
    }
}
