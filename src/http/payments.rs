//! `POST /payments/callback` (SPEC §5): verify the signature over the raw body, then one
//! atomic state transition in Redis (`confirm.lua`).

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::problem::Problem;
use super::{json, read_body, App, Handled};
use crate::orders::payment::Callback;
use crate::stock::ConfirmOutcome;

fn status_body(order_id: &str, status: &str) -> Vec<u8> {
    serde_json::json!({"order_id": order_id, "status": status})
        .to_string()
        .into_bytes()
}

pub async fn callback(app: &App, req: Request<Incoming>) -> Handled {
    let (parts, body) = req.into_parts();
    let raw = match read_body(app, &parts.headers, body).await {
        Ok(b) => b,
        Err(p) => return p.into(),
    };
    let sig = parts
        .headers
        .get("flashgate-signature")
        .and_then(|v| v.to_str().ok());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Err(e) = app.payments.verify(sig, &raw, now) {
        return Problem::bad_signature(e.to_string()).into();
    }
    let cb: Callback = match serde_json::from_slice(&raw) {
        Ok(c) => c,
        Err(e) => return Problem::bad_request(format!("invalid callback body: {e}")).into(),
    };
    if cb.payment_id.is_empty() || cb.payment_id.len() > 256 {
        return Problem::bad_request("payment_id must be 1-256 characters").into();
    }
    if cb.status != "succeeded" {
        // A failed or pending payment changes nothing: the pre-order keeps its deadline.
        return match app.store.get_order(&cb.order_id).await {
            Ok(Some(o)) => Handled::ok(json(
                StatusCode::OK,
                status_body(&o.order_id, o.status.as_str()),
            )),
            Ok(None) => Problem::not_found("no such order").into(),
            Err(e) => Problem::from(e).into(),
        };
    }
    let outcome = match app
        .store
        .confirm(&cb.order_id, &cb.payment_id, cb.amount_cents)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            app.metrics.redis_errors.inc();
            return Problem::from(e).into();
        }
    };
    match outcome {
        ConfirmOutcome::Paid(o) => {
            tracing::info!(order_id = %o.order_id, payment_id = %cb.payment_id, "pre-order paid; queued for the sink");
            app.metrics
                .preorder(&o.campaign, &o.sku, "paid", o.quantity as u64);
            Handled::ok(json(StatusCode::OK, status_body(&o.order_id, "paid")))
        }
        ConfirmOutcome::AlreadyPaid(o) => {
            Handled::ok(json(StatusCode::OK, status_body(&o.order_id, "paid")))
        }
        ConfirmOutcome::RefundRequired(o) => {
            tracing::warn!(order_id = %o.order_id, payment_id = %cb.payment_id, "payment for a closed pre-order; refund queued");
            app.metrics
                .preorder(&o.campaign, &o.sku, "refund_required", o.quantity as u64);
            Handled::ok(json(
                StatusCode::OK,
                status_body(&o.order_id, "refund_required"),
            ))
        }
        ConfirmOutcome::AlreadyRefundRequired(o) => Handled::ok(json(
            StatusCode::OK,
            status_body(&o.order_id, "refund_required"),
        )),
        ConfirmOutcome::AmountMismatch(o) => {
            tracing::warn!(order_id = %o.order_id, expected = o.amount_cents, paid = cb.amount_cents, "payment amount mismatch");
            Problem::amount_mismatch().into()
        }
        ConfirmOutcome::NotFound => Problem::not_found("no such order").into(),
    }
}
