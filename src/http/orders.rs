//! `GET /seckill/orders/{id}` and `DELETE /seckill/orders/{id}`: an order, to its owner only.

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::problem::Problem;
use super::{json, segment, App, Handled};
use crate::stock::CancelOutcome;

fn not_found() -> Problem {
    Problem::not_found("no such order")
}

pub async fn get(app: &App, req: Request<Incoming>) -> Handled {
    let user = match app.identity.user_id(req.headers()) {
        Ok(u) => u,
        Err(e) => return Problem::unauthenticated(e.to_string()).into(),
    };
    match app.store.get_order(segment(req.uri().path(), 2)).await {
        Ok(Some(o)) if o.user_id == user => Handled::ok(json(StatusCode::OK, o.to_json())),
        Ok(_) => not_found().into(),
        Err(e) => {
            app.metrics.redis_errors.inc();
            Problem::from(e).into()
        }
    }
}

pub async fn cancel(app: &App, req: Request<Incoming>) -> Handled {
    let user = match app.identity.user_id(req.headers()) {
        Ok(u) => u,
        Err(e) => return Problem::unauthenticated(e.to_string()).into(),
    };
    match app.store.cancel(segment(req.uri().path(), 2), &user).await {
        Ok(CancelOutcome::Cancelled(o)) => {
            tracing::info!(order_id = %o.order_id, "pre-order cancelled by its owner; stock returned");
            app.metrics
                .preorder(&o.campaign, &o.sku, "cancelled", o.quantity as u64);
            Handled::ok(json(StatusCode::OK, o.to_json()))
        }
        Ok(CancelOutcome::NotPending(_)) => Problem::not_pending().into(),
        Ok(CancelOutcome::NotFound) => not_found().into(),
        Err(e) => {
            app.metrics.redis_errors.inc();
            Problem::from(e).into()
        }
    }
}
