//! The expiry sweeper: every instance runs one. Each tick it asks `expire.lua` to close
//! due pre-orders of every campaign in batches; the script's state check makes concurrent
//! sweepers safe (an order leaves `pending_payment` once, so stock returns once).

use std::time::Duration;

use tokio::sync::watch;

use crate::campaign::Registry;
use crate::metrics::Metrics;
use crate::stock::Store;

/// Orders closed per script call; small enough to keep Redis responsive between calls.
pub const BATCH: usize = 200;

pub async fn run(
    store: Store,
    registry: Registry,
    metrics: Metrics,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if store.conn().get().is_err() {
            continue;
        }
        let campaigns = match store.known_campaigns(registry.ids()).await {
            Ok(c) => c,
            Err(e) => {
                metrics.redis_errors.inc();
                tracing::warn!(error = %e, "expiry sweep: cannot list campaigns; will retry");
                continue;
            }
        };
        for (id, keys) in &campaigns {
            loop {
                match store.expire_due(keys, BATCH).await {
                    Ok((seen, expired)) => {
                        for (sku, qty) in &expired {
                            metrics.preorder(id, sku, "expired", *qty as u64);
                        }
                        if !expired.is_empty() {
                            tracing::debug!(campaign = %id, n = expired.len(), "pre-orders expired");
                        }
                        if seen < BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        metrics.redis_errors.inc();
                        tracing::warn!(campaign = %id, error = %e, "expiry sweep failed; will retry");
                        break;
                    }
                }
            }
        }
    }
}
