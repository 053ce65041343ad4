//! The registry of running campaigns: lookup by id, window checks, the local sold-out flag
//! per item, the pause switch, and the cached `remaining` shown to the public.
//!
//! Reads are lock-free in effect: the map is an `Arc` swapped whole on reload, and readers
//! clone the `Arc` under a std `RwLock` held only for that clone (never across an await).
//! Keeps no clock of its own: callers pass the time, so tests can move it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::Campaign;
use crate::draw::Seed;
use crate::stock::{CampaignKeys, Holders};

/// After Redis says an item is sold out, answer 409 from memory for this long, then ask
/// again: stock can come back through cancellation and expiry.
pub const SOLD_OUT_RECHECK: Duration = Duration::from_millis(250);

/// One item of a running campaign.
#[derive(Debug)]
pub struct ItemState {
    pub sku: String,
    pub price_cents: u64,
    pub stock: u64,
    /// `<base>item:<sku>`, built once.
    pub key: String,
    /// Until when (unix ms, the caller's clock) the item is known sold out.
    sold_out_until: AtomicI64,
    /// Last `remaining` read from Redis by the refresher; -1 before the first read.
    pub remaining: AtomicI64,
    /// Snapshot taken when the flag was armed; read-locked only for a lookup, never across an await.
    holders: RwLock<Arc<Holders>>,
    /// One snapshot fetch at a time per item.
    arming: AtomicBool,
}

impl ItemState {
    pub fn holders_version(&self) -> Option<i64> {
        self.holders
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .version
    }

    /// Claims the right to fetch a holders snapshot; false when a fetch is under way.
    pub fn begin_arming(&self) -> bool {
        !self.arming.swap(true, Ordering::AcqRel)
    }

    pub fn end_arming(&self) {
        self.arming.store(false, Ordering::Release);
    }
}

/// One running campaign.
#[derive(Debug)]
pub struct CampaignState {
    pub cfg: Campaign,
    pub keys: CampaignKeys,
    pub items: Vec<ItemState>,
    /// Operator pause (degradation switch): buys get 503 `paused`. The source of truth is
    /// `<base>paused` in Redis (so every instance obeys it); this copy is refreshed each second.
    pub paused: AtomicBool,
    /// Fair admission's seed, once read from Redis; kept across reloads.
    pub seed: OnceLock<Seed>,
    /// When the raffle's draw was made (unix ms), once this instance has seen it; 0 before.
    pub drawn_at: AtomicI64,
}

/// Where `now` falls in a campaign's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    NotStarted { secs_to_start: u64 },
    Open,
    Ended,
}

impl CampaignState {
    pub fn item(&self, sku: &str) -> Option<&ItemState> {
        self.items.iter().find(|i| i.sku == sku)
    }

    pub fn window(&self, now: OffsetDateTime) -> Window {
        if now < self.cfg.starts_at {
            let wait = self.cfg.starts_at - now;
            // Whole seconds, rounded up: at least 1, never 0 (`Retry-After`).
            let secs = wait.whole_seconds() + i64::from(wait.subsec_nanoseconds() > 0);
            Window::NotStarted {
                secs_to_start: u64::try_from(secs).unwrap_or(1).max(1),
            }
        } else if now >= self.cfg.ends_at {
            Window::Ended
        } else {
            Window::Open
        }
    }
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    campaigns: RwLock<Arc<HashMap<String, Arc<CampaignState>>>>,
}

impl Registry {
    pub fn new(prefix: &str, campaigns: &[Campaign]) -> Registry {
        let r = Registry {
            inner: Arc::new(Inner {
                prefix: prefix.to_string(),
                campaigns: RwLock::new(Arc::default()),
            }),
        };
        r.replace(campaigns);
        r
    }

    /// Swaps in a new, already validated, campaign set. Pause flags carry over.
    pub fn replace(&self, campaigns: &[Campaign]) {
        let old = self.snapshot();
        let map = campaigns
            .iter()
            .map(|c| {
                let keys = CampaignKeys::new(&self.inner.prefix, &c.id);
                let items = c
                    .items
                    .iter()
                    .map(|i| {
                        let prev = old.get(&c.id).and_then(|o| o.item(&i.sku));
                        ItemState {
                            sku: i.sku.clone(),
                            price_cents: i.price_cents,
                            stock: i.stock,
                            key: keys.item(&i.sku),
                            sold_out_until: AtomicI64::new(0),
                            remaining: AtomicI64::new(
                                prev.map_or(-1, |p| p.remaining.load(Ordering::Relaxed)),
                            ),
                            holders: RwLock::default(),
                            arming: AtomicBool::new(false),
                        }
                    })
                    .collect();
                let paused = old
                    .get(&c.id)
                    .is_some_and(|o| o.paused.load(Ordering::Relaxed));
                let prev = old.get(&c.id);
                let seed = OnceLock::new();
                if let Some(s) = prev.and_then(|p| p.seed.get()) {
                    let _ = seed.set(s.clone());
                }
                let state = CampaignState {
                    cfg: c.clone(),
                    keys,
                    items,
                    paused: AtomicBool::new(paused),
                    seed,
                    drawn_at: AtomicI64::new(
                        prev.map_or(0, |p| p.drawn_at.load(Ordering::Relaxed)),
                    ),
                };
                (c.id.clone(), Arc::new(state))
            })
            .collect();
        *self
            .inner
            .campaigns
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }

    pub fn snapshot(&self) -> Arc<HashMap<String, Arc<CampaignState>>> {
        self.inner
            .campaigns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ids of the running campaigns.
    pub fn ids(&self) -> Vec<String> {
        self.snapshot().keys().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<CampaignState>> {
        self.inner
            .campaigns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// True while a recent reserve said this item is sold out and `user` held no pending
    /// order of it then (a holder's retry must reach Redis to get its order back).
    pub fn known_sold_out(&self, item: &ItemState, user: &str, now_ms: i64) -> bool {
        item.sold_out_until.load(Ordering::Relaxed) > now_ms
            && !item
                .holders
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .users
                .contains(user)
    }

    /// Arms the flag until `now_ms` + [`SOLD_OUT_RECHECK`], with a fresh holders snapshot
    /// when the holders changed.
    pub fn arm_sold_out(&self, item: &ItemState, fresh: Option<Holders>, now_ms: i64) {
        if let Some(h) = fresh {
            *item.holders.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(h);
        }
        let recheck = i64::try_from(SOLD_OUT_RECHECK.as_millis()).unwrap_or(i64::MAX);
        item.sold_out_until
            .store(now_ms.saturating_add(recheck), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn campaign() -> Campaign {
        Campaign {
            id: "c1".into(),
            name: "c".into(),
            starts_at: datetime!(2026-11-11 00:00 UTC),
            ends_at: datetime!(2026-11-11 00:30 UTC),
            payment_window: Duration::from_secs(60),
            per_user_limit: 1,
            limits: Default::default(),
            items: vec![crate::config::Item {
                sku: "a".into(),
                stock: 3,
                price_cents: 100,
            }],
            admission: crate::config::Admission::FirstCome,
            file: "c1.toml".into(),
        }
    }

    #[test]
    fn windows() {
        let r = Registry::new("fg", &[campaign()]);
        let c = r.get("c1").unwrap();
        assert_eq!(
            c.window(datetime!(2026-11-10 23:59:58.5 UTC)),
            Window::NotStarted { secs_to_start: 2 }
        );
        assert_eq!(c.window(datetime!(2026-11-11 00:00 UTC)), Window::Open);
        assert_eq!(c.window(datetime!(2026-11-11 00:30 UTC)), Window::Ended);
    }

    #[test]
    fn sold_out_flag_expires_and_pause_survives_reload() {
        let r = Registry::new("fg", &[campaign()]);
        let c = r.get("c1").unwrap();
        let item = c.item("a").unwrap();
        let now = 1_800_000_000_000;
        assert!(!r.known_sold_out(item, "u", now));
        let holders = Holders {
            version: Some(1),
            users: ["holder".to_string()].into(),
        };
        r.arm_sold_out(item, Some(holders), now);
        assert!(r.known_sold_out(item, "u", now));
        assert!(r.known_sold_out(item, "u", now + 249));
        assert!(
            !r.known_sold_out(item, "u", now + 250),
            "after 250 ms the next buy asks Redis again"
        );
        assert!(
            !r.known_sold_out(item, "holder", now),
            "a holder's retry goes to Redis"
        );
        assert_eq!(item.holders_version(), Some(1));
        c.paused.store(true, Ordering::Relaxed);
        r.replace(&[campaign()]);
        assert!(r.get("c1").unwrap().paused.load(Ordering::Relaxed));
        assert_eq!(c.keys.base, "fg:{c1}:");
        assert_eq!(item.key, "fg:{c1}:item:a");
    }
}
