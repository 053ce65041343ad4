//! The buy flow, in order of cost: inflight cap, campaign lookup, per-IP
//! limit, identity, per-user limit, pause, window, admission (an instant draw decided
//! here), request checks, local sold-out flag, then ONE Redis round trip (shared with the
//! buys of the same campaign that arrive meanwhile: `stock/batch.rs`); a sold-out answer
//! arms the local flag.
//!
//! The caller hands over identity and the body as deferred work (a closure, a future), so
//! a token is verified only after the per-IP limit and a body is read only once every
//! cheap check has passed — the order above is what a flood meets.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{BadInput, Sale, SaleError};
use crate::campaign::{CampaignState, ItemState, Window};
use crate::identity::IdentityError;
use crate::stock::{HoldersUpdate, Order, ReserveOutcome, ReserveRequest};

/// One buy, as the edge parsed it.
#[derive(Debug)]
pub struct BuyRequest<'a> {
    pub campaign: &'a str,
    pub sku: &'a str,
    pub client_ip: IpAddr,
    /// The `Idempotency-Key`, or why it is unacceptable (reported in its turn).
    pub idempotency_key: Result<Option<&'a str>, BadInput>,
}

/// A successful buy.
#[derive(Debug, PartialEq, Eq)]
pub struct Bought {
    pub order: Order,
    /// `true`: a new pre-order (201); `false`: the user's existing one (200).
    pub created: bool,
}

impl Sale {
    /// Runs a buy. `authenticate` yields the user id; `quantity` reads the body's
    /// `quantity` (`None` when absent). Each is called at most once, in its turn.
    pub async fn buy(
        &self,
        req: BuyRequest<'_>,
        authenticate: impl FnOnce() -> Result<String, IdentityError>,
        quantity: impl Future<Output = Result<Option<u32>, BadInput>>,
    ) -> Result<Bought, SaleError> {
        let i = &*self.inner;
        let Some(_slot) = i.inflight.try_acquire() else {
            return Err(SaleError::Overloaded);
        };
        let c = i
            .registry
            .get(req.campaign)
            .ok_or_else(|| SaleError::UnknownCampaign(req.campaign.to_owned()))?;
        let item = c.item(req.sku).ok_or_else(|| SaleError::UnknownItem {
            campaign: req.campaign.to_owned(),
            sku: req.sku.to_owned(),
        })?;
        i.limiters
            .check_ip(&c.cfg.id, &c.cfg.limits, req.client_ip)?;
        let user = authenticate()?;
        i.limiters.check_user(&c.cfg.id, &c.cfg.limits, &user)?;
        if c.paused.load(Ordering::Relaxed) {
            return Err(SaleError::Paused);
        }
        match c.window(i.clock.now()) {
            Window::Open => {}
            Window::NotStarted { secs_to_start } => {
                return Err(SaleError::NotStarted { secs_to_start })
            }
            Window::Ended => return Err(SaleError::Ended),
        }
        let raffle_member = self.admit(&c, &user)?;
        let idem = req.idempotency_key?;
        let qty = checked_quantity(quantity.await?, c.cfg.per_user_limit)?;
        // A retry that names its Idempotency-Key goes to Redis even after a sell-out: its
        // earlier attempt may have reserved (a timeout leaves the outcome unknown). In a
        // raffle Redis answers `not-selected` before `sold-out`, so it is always asked.
        if idem.is_none()
            && raffle_member.is_none()
            && i.registry.known_sold_out(item, &user, i.clock.now_ms())
        {
            return Err(SaleError::SoldOut);
        }
        let request = ReserveRequest {
            keys: &c.keys,
            item_key: &item.key,
            campaign: &c.cfg.id,
            sku: &item.sku,
            user: &user,
            quantity: qty,
            per_user_limit: c.cfg.per_user_limit,
            payment_window: c.cfg.payment_window,
            amount_cents: item.price_cents * u64::from(qty),
            idempotency_key: idem,
            initial_stock: item.stock,
            holders_version: item.holders_version(),
            raffle_member: raffle_member.as_deref(),
        };
        match i.store.reserve(&request).await? {
            ReserveOutcome::Reserved(order) => {
                tracing::debug!(order_id = %order.order_id, user = %user, qty, "reserved");
                i.metrics
                    .preorder(&c.cfg.id, &item.sku, "reserved", u64::from(qty));
                if !c.cfg.admission.is_first_come() {
                    i.metrics.admission_event(&c.cfg.id, "claimed", 1);
                }
                Ok(Bought {
                    order,
                    created: true,
                })
            }
            ReserveOutcome::Existing(order) => Ok(Bought {
                order,
                created: false,
            }),
            ReserveOutcome::SoldOut { remaining, holders } => {
                if remaining <= 0 {
                    let now = i.clock.now_ms();
                    match holders {
                        HoldersUpdate::Unchanged => i.registry.arm_sold_out(item, None, now),
                        HoldersUpdate::Fresh(h) => i.registry.arm_sold_out(item, Some(h), now),
                        HoldersUpdate::TooMany => self.arm_sold_out_later(&c, item),
                    }
                }
                Err(SaleError::SoldOut)
            }
            ReserveOutcome::LimitReached { held } => Err(SaleError::LimitReached {
                held,
                limit: c.cfg.per_user_limit,
            }),
            ReserveOutcome::Paused => {
                c.paused.store(true, Ordering::Relaxed);
                Err(SaleError::Paused)
            }
            ReserveOutcome::IdempotencyKeyReused => Err(SaleError::IdempotencyKeyReused),
            ReserveOutcome::NotSelected(state) => Err(self.not_selected(&c, &state)),
            ReserveOutcome::TooLate => {
                tracing::warn!("a reservation reached Redis after its deadline; nothing reserved");
                Err(SaleError::TooLate)
            }
        }
    }

    /// Arms the local sold-out flag in the background, once a holders list too long to
    /// come inline is fetched (until then requests keep going to Redis, which is always right).
    fn arm_sold_out_later(&self, c: &Arc<CampaignState>, item: &ItemState) {
        if !item.begin_arming() {
            return;
        }
        let (sale, c, sku) = (self.clone(), c.clone(), item.sku.clone());
        // Owned by the sale: shutdown waits for it (`Sale::finish_tasks`).
        self.inner.tasks.spawn(async move {
            let Some(item) = c.item(&sku) else { return };
            let i = &*sale.inner;
            match i
                .store
                .holders(&c.keys, &item.key, &sku, item.holders_version())
                .await
            {
                Ok(fresh) => i.registry.arm_sold_out(item, fresh, i.clock.now_ms()),
                Err(e) => tracing::debug!(error = %e, sku, "sold-out flag not armed"),
            }
            item.end_arming();
        });
    }
}

/// The units asked for: 1 by default, at least 1, at most the per-user limit.
fn checked_quantity(asked: Option<u32>, limit: u32) -> Result<u32, BadInput> {
    match asked.unwrap_or(1) {
        0 => Err(BadInput::invalid("quantity must be at least 1")),
        q if q > limit => Err(BadInput::invalid(format!(
            "quantity must not exceed the per-user limit of {limit}"
        ))),
        q => Ok(q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(checked_quantity(None, 2), Ok(1));
        assert_eq!(checked_quantity(Some(2), 2), Ok(2));
        assert!(checked_quantity(Some(0), 2).is_err());
        assert!(checked_quantity(Some(3), 2).is_err());
    }
}
