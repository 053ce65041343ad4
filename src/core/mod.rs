//! The sale itself, below HTTP: one cheap `Clone` handle, [`Sale`], owning the campaign
//! registry, the Redis store, the rate limiters, the inflight cap, the metrics, the
//! payment-signature verifier and an injected clock. Every behaviour of a buy, an
//! order, a payment or an operator action is one method here, with typed inputs and
//! outcomes and one error type, [`SaleError`].
//!
//! Must never: speak HTTP (no hyper/http types in or out), or make more than one Redis
//! round trip for a buy.

mod background;
mod buy;
mod delivery;
mod error;
mod heartbeat;
mod operate;
mod orders;
mod outbox_consumer;
mod raffle;
mod sweeper;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use buy::{Bought, BuyRequest};
pub use error::{BadInput, SaleError};
pub use operate::{
    CampaignLedger, CampaignOutbox, CampaignView, ItemLedger, ItemView, NotReady, OutboxCounts,
    Reloaded, StockDiffers,
};
pub use orders::{Callback, PaymentReply};
pub use raffle::{
    AdmissionLedger, AdmissionView, EntriesExport, EntryStatus, EntryView, ExportedEntrant, Refusal,
};

use crate::campaign::Registry;
use crate::clock::Clock;
use crate::config::{Config, OrdersConfig};
use crate::limits::{Inflight, Limiters};
use crate::metrics::Metrics;
use crate::signature::SignatureVerifier;
use crate::sink::{Sink, SinkError};
use crate::stock::{RedisMetrics, Store, StoreError};

/// Why a sale could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("redis: {0}")]
    Store(#[from] StoreError),
    #[error("orders sink: {0}")]
    Sink(#[from] SinkError),
}

/// The sale. Cheap to clone: one `Arc` inside.
#[derive(Clone)]
pub struct Sale {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    store: Store,
    limiters: Limiters,
    inflight: Inflight,
    metrics: Metrics,
    clock: Clock,
    payments: SignatureVerifier,
    /// Where paid orders go; used by the outbox consumer.
    sink: Arc<dyn Sink>,
    orders: OrdersConfig,
    /// Re-read on reload.
    campaigns_dir: PathBuf,
    /// Set once the campaigns' stock is in Redis (`/readyz` waits for it).
    stock_loaded: AtomicBool,
    /// Short-lived tasks a request starts and does not wait for (arming a sold-out
    /// flag): shutdown waits for them, see `Sale::finish_tasks`.
    tasks: tokio_util::task::TaskTracker,
}

impl Sale {
    /// A sale as `cfg` describes it, on `clock`. Connects to nothing yet: see
    /// [`Sale::connect`] and [`Sale::spawn_background`].
    pub async fn from_config(cfg: &Config, clock: Clock) -> Result<Sale, SetupError> {
        let metrics = Metrics::new();
        let sink = crate::sink::from_config(cfg).await?;
        metrics.prime_sink(sink.name());
        metrics.prime_campaigns(&cfg.campaigns);
        if cfg.secrets.payment_secret.is_none() {
            tracing::warn!(env = %cfg.payment.secret_env, "no payment secret set: every payment callback will get 401");
        }
        Ok(Sale {
            inner: Arc::new(Inner {
                store: Store::new(
                    &cfg.redis,
                    RedisMetrics {
                        errors: metrics.redis_errors.clone(),
                        circuit_open: metrics.redis_circuit_open.clone(),
                    },
                )?
                .observing_batches(metrics.reserve_batch_size.clone()),
                registry: Registry::new(&cfg.redis.key_prefix, &cfg.campaigns),
                limiters: Limiters::with_clock(&cfg.limits, clock.clone()),
                inflight: Inflight::new(cfg.server.max_inflight),
                payments: SignatureVerifier::new(
                    cfg.secrets.payment_secret.as_deref(),
                    cfg.payment.tolerance.0,
                ),
                sink,
                orders: cfg.orders.clone(),
                campaigns_dir: cfg.campaigns_dir.clone(),
                stock_loaded: AtomicBool::new(false),
                tasks: tokio_util::task::TaskTracker::new(),
                metrics,
                clock,
            }),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn inflight(&self) -> &Inflight {
        &self.inner.inflight
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }
}
