//! The outbox consumer's heartbeat: a task of its own stamps this instance's consumer
//! alive in every campaign's `<base>consumers` hash once a [`BEAT`], so a wave of slow
//! deliveries never makes a living instance look gone. Another instance that finds the
//! stamp older than [`STALE`] reclaims the entries it holds at once, without waiting for
//! `orders.claim_idle` (see `outbox_consumer::Consumer::retry`).

use std::time::Duration;

use tokio::sync::watch;

use crate::campaign::Registry;
use crate::clock::millis;
use crate::stock::Store;

/// How often a living instance stamps its heartbeat.
pub(super) const BEAT: Duration = Duration::from_secs(1);
/// A stamp this old means the instance is gone: five beats missed, which a Redis hiccup
/// or a pause of the process does not reach. A living instance wrongly taken for gone
/// costs a repeat delivery (sinks dedupe), never a lost one.
pub(super) const STALE: Duration = Duration::from_secs(5);

/// An entry of a gone consumer was delivered to it at least this long ago (it died at
/// most one beat after its last stamp): claims with this minimum idle time never take an
/// entry another instance has just reclaimed.
pub(super) fn stale_claim_idle_ms() -> u64 {
    millis(STALE - BEAT)
}

pub(super) fn stale_ms() -> u64 {
    millis(STALE)
}

/// Stamps `me` alive every [`BEAT`] until `shutdown`.
pub(super) async fn run(
    store: Store,
    registry: Registry,
    me: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = beat(&store, &registry, &me).await {
            tracing::debug!(error = %e, "outbox heartbeat failed; will retry");
        }
    }
}

async fn beat(
    store: &Store,
    registry: &Registry,
    me: &str,
) -> Result<(), crate::stock::StoreError> {
    let mut con = store.conn().get()?;
    for (_, keys) in store.known_campaigns(registry.ids()).await? {
        store.heartbeat(&mut con, &keys, me, stale_ms()).await?;
    }
    Ok(())
}
