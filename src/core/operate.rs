//! What operators and observers ask of the sale (the campaign view, the admin API):
//! ledgers, stock adjustment, the pause switch, reload, the outbox; and readiness.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{BadInput, Sale, SaleError};
use crate::campaign::Window;
use crate::clock::unix_ms;
use crate::config::load_campaigns;
use crate::stock::order::rfc3339_ms;
use crate::stock::{Adjustment, ItemStats, StoreError, MAX_STOCK_DELTA};

/// What a reload did: how many campaigns run now, and the items whose file stock no
/// longer matches what was loaded into Redis (left as they are: stock is never re-added).
#[derive(Debug, Serialize)]
pub struct Reloaded {
    pub reloaded: usize,
    pub stock_differs: Vec<StockDiffers>,
}

/// An item whose campaign file says `file_stock` while Redis holds `initial`.
#[derive(Debug, Serialize)]
pub struct StockDiffers {
    pub campaign: String,
    pub sku: String,
    pub file_stock: u64,
    pub initial: i64,
    pub remaining: i64,
    pub hint: String,
}

/// How many dead letters one replay call moves per campaign.
const REPLAY_BATCH: usize = 10_000;

/// `GET /seckill/campaigns/{id}`: the public view of a campaign.
#[derive(Debug, Serialize)]
pub struct CampaignView {
    pub id: String,
    pub name: String,
    pub starts_at: String,
    pub ends_at: String,
    pub server_time: String,
    /// `not_started`, `open` or `ended`.
    pub state: &'static str,
    pub paused: bool,
    pub per_user_limit: u32,
    pub payment_window_seconds: u64,
    pub items: Vec<ItemView>,
    /// Raffle / instant draw: mode, commitment, and the seed once revealed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<super::AdmissionView>,
}

#[derive(Debug, Serialize)]
pub struct ItemView {
    pub sku: String,
    pub price_cents: u64,
    /// From the once-a-second refresher; `None` before its first read.
    pub remaining: Option<i64>,
}

/// One campaign's ledger (`GET /admin/campaigns`).
#[derive(Debug, Serialize)]
pub struct CampaignLedger {
    pub id: String,
    pub name: String,
    pub paused: bool,
    pub per_user_limit: u32,
    pub items: Vec<ItemLedger>,
    /// A raffle's entrants per status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<super::AdmissionLedger>,
}

#[derive(Debug, Serialize)]
pub struct ItemLedger {
    pub sku: String,
    pub price_cents: u64,
    #[serde(flatten)]
    pub stats: ItemStats,
    /// `initial + adjusted = remaining + pending + paid` and nothing negative.
    pub ledger_ok: bool,
}

/// Outbox backlog (`GET /admin/outbox`).
#[derive(Debug, Default, Serialize)]
pub struct OutboxCounts {
    pub pending: u64,
    pub dead: u64,
    pub campaigns: Vec<CampaignOutbox>,
}

#[derive(Debug, Serialize)]
pub struct CampaignOutbox {
    pub campaign: String,
    pub pending: u64,
    pub dead: u64,
}

/// Why the gateway is not ready to sell.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("loading campaign stock")]
    LoadingStock,
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl Sale {
    /// Ready when Redis answers, every script is loaded and the campaigns' stock is in.
    pub async fn ready(&self) -> Result<(), NotReady> {
        self.inner.store.ready().await?;
        if !self.inner.stock_loaded.load(Ordering::Relaxed) {
            return Err(NotReady::LoadingStock);
        }
        Ok(())
    }

    pub fn campaign_view(&self, id: &str) -> Result<CampaignView, SaleError> {
        let c = self
            .inner
            .registry
            .get(id)
            .ok_or_else(|| SaleError::UnknownCampaign(id.to_owned()))?;
        let now = self.inner.clock.now();
        let state = match c.window(now) {
            Window::NotStarted { .. } => "not_started",
            Window::Open => "open",
            Window::Ended => "ended",
        };
        let items = c
            .items
            .iter()
            .map(|i| {
                let r = i.remaining.load(Ordering::Relaxed);
                ItemView {
                    sku: i.sku.clone(),
                    price_cents: i.price_cents,
                    remaining: (r >= 0).then_some(r),
                }
            })
            .collect();
        Ok(CampaignView {
            id: c.cfg.id.clone(),
            name: c.cfg.name.clone(),
            starts_at: rfc3339_ms(unix_ms(c.cfg.starts_at)),
            ends_at: rfc3339_ms(unix_ms(c.cfg.ends_at)),
            server_time: rfc3339_ms(unix_ms(now)),
            state,
            paused: c.paused.load(Ordering::Relaxed),
            per_user_limit: c.cfg.per_user_limit,
            payment_window_seconds: c.cfg.payment_window.as_secs(),
            items,
            admission: self.admission_view(&c),
        })
    }

    /// Every running campaign's ledger, sorted by id.
    pub async fn ledgers(&self) -> Result<Vec<CampaignLedger>, SaleError> {
        let snapshot = self.inner.registry.snapshot();
        let mut ids: Vec<_> = snapshot.keys().collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let c = &snapshot[id];
            let keys: Vec<String> = c.items.iter().map(|i| i.key.clone()).collect();
            let stats = self.inner.store.item_stats(&keys).await?;
            let items = c
                .items
                .iter()
                .zip(stats)
                .map(|(i, stats)| ItemLedger {
                    sku: i.sku.clone(),
                    price_cents: i.price_cents,
                    ledger_ok: stats.ledger_holds(),
                    stats,
                })
                .collect();
            out.push(CampaignLedger {
                id: c.cfg.id.clone(),
                name: c.cfg.name.clone(),
                paused: c.paused.load(Ordering::Relaxed),
                per_user_limit: c.cfg.per_user_limit,
                items,
                admission: self.admission_ledger(c).await?,
            });
        }
        Ok(out)
    }

    /// Outbox backlog over every campaign ever loaded.
    pub async fn outbox(&self) -> Result<OutboxCounts, SaleError> {
        let store = &self.inner.store;
        let mut counts = OutboxCounts::default();
        for (campaign, keys) in store.known_campaigns(self.inner.registry.ids()).await? {
            let (pending, dead) = store.outbox_counts(&keys).await?;
            counts.pending += pending;
            counts.dead += dead;
            counts.campaigns.push(CampaignOutbox {
                campaign,
                pending,
                dead,
            });
        }
        Ok(counts)
    }

    /// Re-queues dead letters of every campaign; returns how many moved.
    pub async fn replay_dead(&self) -> Result<u64, SaleError> {
        let store = &self.inner.store;
        let mut moved = 0;
        for (_, keys) in store.known_campaigns(self.inner.registry.ids()).await? {
            moved += store.replay_dead(&keys, REPLAY_BATCH).await?;
        }
        Ok(moved)
    }

    /// Atomic stock adjustment of one item; returns the new `remaining`.
    pub async fn adjust_stock(
        &self,
        campaign: &str,
        sku: &str,
        delta: i64,
    ) -> Result<i64, SaleError> {
        let c = self
            .inner
            .registry
            .get(campaign)
            .ok_or_else(|| SaleError::UnknownCampaign(campaign.to_owned()))?;
        let item = c.item(sku).ok_or_else(|| SaleError::UnknownItem {
            campaign: campaign.to_owned(),
            sku: sku.to_owned(),
        })?;
        let remaining = match self
            .inner
            .store
            .adjust(&c.keys, &item.sku, delta, item.stock)
            .await?
        {
            Adjustment::Applied { remaining } => remaining,
            Adjustment::WouldGoNegative { remaining } => {
                return Err(SaleError::StockConflict { remaining })
            }
            Adjustment::OutOfRange => return Err(BadInput::invalid(format!(
                "delta must be within ±{MAX_STOCK_DELTA}, and keep the item's counters within ±(2^53 - 1)"
            )).into()),
        };
        item.remaining.store(remaining, Ordering::Relaxed);
        tracing::info!(campaign, sku, delta, remaining, "stock adjusted");
        Ok(remaining)
    }

    /// Sets or clears one campaign's pause switch (shared by every instance through Redis).
    pub async fn set_paused(&self, campaign: &str, paused: bool) -> Result<(), SaleError> {
        let c = self
            .inner
            .registry
            .get(campaign)
            .ok_or_else(|| SaleError::UnknownCampaign(campaign.to_owned()))?;
        self.inner.store.set_paused(&c.keys, paused).await?;
        c.paused.store(paused, Ordering::Relaxed);
        tracing::info!(campaign, paused, "campaign pause switch");
        Ok(())
    }

    /// Sets or clears every running campaign's pause switch; returns their ids, sorted.
    pub async fn set_paused_all(&self, paused: bool) -> Result<Vec<String>, SaleError> {
        let mut ids = self.inner.registry.ids();
        ids.sort();
        for id in &ids {
            self.set_paused(id, paused).await?;
        }
        Ok(ids)
    }

    /// Re-reads every campaign file; a bad file leaves the running set untouched. Stock
    /// of new items is loaded into Redis (only if absent); existing stock is never re-added,
    /// and an item whose file stock differs from its loaded `initial` is reported (and
    /// logged), so an edited number is not silently ignored.
    pub async fn reload(&self) -> Result<Reloaded, SaleError> {
        let campaigns = load_campaigns(&self.inner.campaigns_dir)?;
        self.inner.registry.replace(&campaigns);
        self.inner.metrics.prime_campaigns(&campaigns);
        let stock_differs = match self.load_stock().await {
            Ok(()) => self.stock_differs().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not compare file stock with Redis");
                Vec::new()
            }),
            Err(e) => {
                tracing::warn!(error = %e, "stock not loaded yet; the first buy of each item loads it");
                Vec::new()
            }
        };
        tracing::info!(campaigns = campaigns.len(), "campaigns reloaded");
        Ok(Reloaded {
            reloaded: campaigns.len(),
            stock_differs,
        })
    }

    /// Items of the running campaigns whose file `stock` is not their `initial` in Redis
    /// (every item exists there: called after `load_stock`). One WARN line each.
    async fn stock_differs(&self) -> Result<Vec<StockDiffers>, StoreError> {
        let snapshot = self.inner.registry.snapshot();
        let mut ids: Vec<_> = snapshot.keys().collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let c = &snapshot[id];
            let keys: Vec<String> = c.items.iter().map(|i| i.key.clone()).collect();
            let stats = self.inner.store.item_stats(&keys).await?;
            for (item, s) in c.items.iter().zip(stats) {
                if i64::try_from(item.stock).ok() == Some(s.initial) {
                    continue;
                }
                let hint = format!(
                    "stock is never re-added on reload; use POST /admin/campaigns/{}/items/{}/stock with {{\"delta\": n}}",
                    c.cfg.id, item.sku
                );
                tracing::warn!(
                    campaign = %c.cfg.id,
                    sku = %item.sku,
                    file_stock = item.stock,
                    initial = s.initial,
                    remaining = s.remaining,
                    "campaign file stock differs from the loaded stock; not re-added ({hint})"
                );
                out.push(StockDiffers {
                    campaign: c.cfg.id.clone(),
                    sku: item.sku.clone(),
                    file_stock: item.stock,
                    initial: s.initial,
                    remaining: s.remaining,
                    hint,
                });
            }
        }
        Ok(out)
    }

    /// Loads the running campaigns' stock into Redis where it is absent (never re-adds it).
    pub async fn load_stock(&self) -> Result<(), StoreError> {
        let i = &*self.inner;
        i.store.remember_campaigns(&i.registry.ids()).await?;
        for c in i.registry.snapshot().values() {
            for item in &c.items {
                i.store.init_item(&c.keys, &item.sku, item.stock).await?;
            }
        }
        Ok(())
    }
}
