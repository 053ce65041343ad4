//! A pre-order after its reservation: its owner reads or cancels it; the payment
//! provider's signed callback pays it.

use serde::Deserialize;

use super::{BadInput, Sale, SaleError};
use crate::stock::{CancelOutcome, ConfirmOutcome, Order, OrderStatus};

/// Longest `payment_id` accepted (it is stored with the order and sent to the sink).
const MAX_PAYMENT_ID: usize = 256;

/// The callback body (docs/api.md, "Payment callback"); unknown members are refused.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    pub order_id: String,
    pub payment_id: String,
    pub amount_cents: u64,
    pub status: String,
}

/// What a callback is answered: the order and its status after the callback.
#[derive(Debug, PartialEq, Eq)]
pub struct PaymentReply {
    pub order_id: String,
    pub status: OrderStatus,
}

impl Sale {
    /// The order `order_id`, to its owner only (anyone else: `UnknownOrder`).
    pub async fn order(&self, order_id: &str, user: &str) -> Result<Order, SaleError> {
        match self.inner.store.get_order(order_id).await? {
            Some(o) if o.user_id == user => Ok(o),
            _ => Err(SaleError::UnknownOrder),
        }
    }

    /// The owner cancels a pending order; its units go back on sale.
    pub async fn cancel(&self, order_id: &str, user: &str) -> Result<Order, SaleError> {
        match self.inner.store.cancel(order_id, user).await? {
            CancelOutcome::Cancelled(o) => {
                tracing::info!(order_id = %o.order_id, "pre-order cancelled by its owner; stock returned");
                self.inner.metrics.preorder(
                    &o.campaign,
                    &o.sku,
                    "cancelled",
                    u64::from(o.quantity),
                );
                Ok(o)
            }
            CancelOutcome::NotPending(_) => Err(SaleError::NotPending),
            CancelOutcome::NotFound => Err(SaleError::UnknownOrder),
        }
    }

    /// A payment callback: `raw` is the body exactly as received, `signature` the
    /// `Flashgate-Signature` header. Verified first, then one atomic transition in Redis.
    pub async fn confirm_payment(
        &self,
        raw: &[u8],
        signature: Option<&str>,
    ) -> Result<PaymentReply, SaleError> {
        let i = &*self.inner;
        let now = i.clock.now().unix_timestamp();
        i.payments.verify(signature, raw, now)?;
        let cb: Callback = crate::json::object(raw)
            .map_err(|e| BadInput::invalid(format!("invalid callback body: {e}")))?;
        if cb.payment_id.is_empty() || cb.payment_id.len() > MAX_PAYMENT_ID {
            return Err(BadInput::invalid("payment_id must be 1-256 characters").into());
        }
        if cb.status != "succeeded" {
            // A failed or pending payment changes nothing: the pre-order keeps its deadline.
            let o = i
                .store
                .get_order(&cb.order_id)
                .await?
                .ok_or(SaleError::UnknownOrder)?;
            return Ok(reply(&o, o.status));
        }
        let outcome = i
            .store
            .confirm(&cb.order_id, &cb.payment_id, cb.amount_cents)
            .await?;
        // The two transitions made now are counted; repeats answer what was decided before.
        let (o, status) = match outcome {
            ConfirmOutcome::Paid(o) => {
                tracing::info!(order_id = %o.order_id, payment_id = %cb.payment_id, "pre-order paid; queued for the sink");
                (o, OrderStatus::Paid)
            }
            ConfirmOutcome::AlreadyPaid(o) => return Ok(reply(&o, OrderStatus::Paid)),
            // Not a pre-order transition (the order stays paid), so not counted in
            // flashgate_preorders_total; the refund itself is the outbox entry.
            ConfirmOutcome::SecondCharge(o) => {
                tracing::warn!(
                    order_id = %o.order_id,
                    paid_payment_id = o.payment_id.as_deref().unwrap_or(""),
                    payment_id = %cb.payment_id,
                    amount_cents = cb.amount_cents,
                    "second charge of a paid order; refund of this payment queued"
                );
                return Ok(reply(&o, OrderStatus::RefundRequired));
            }
            ConfirmOutcome::AlreadySecondCharge(o) => {
                return Ok(reply(&o, OrderStatus::RefundRequired))
            }
            ConfirmOutcome::RefundRequired(o) => {
                tracing::warn!(order_id = %o.order_id, payment_id = %cb.payment_id, "payment for a closed pre-order; refund queued");
                (o, OrderStatus::RefundRequired)
            }
            ConfirmOutcome::AlreadyRefundRequired(o) => {
                return Ok(reply(&o, OrderStatus::RefundRequired))
            }
            ConfirmOutcome::AmountMismatch(o) => {
                tracing::warn!(order_id = %o.order_id, expected = o.amount_cents, paid = cb.amount_cents, "payment amount mismatch");
                return Err(SaleError::AmountMismatch);
            }
            ConfirmOutcome::NotFound => return Err(SaleError::UnknownOrder),
        };
        i.metrics
            .preorder(&o.campaign, &o.sku, status.as_str(), u64::from(o.quantity));
        Ok(reply(&o, status))
    }
}

fn reply(o: &Order, status: OrderStatus) -> PaymentReply {
    PaymentReply {
        order_id: o.order_id.clone(),
        status,
    }
}
