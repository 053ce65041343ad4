//! The buy endpoint and the public campaign view (SPEC §4).
//!
//! The buy path, in order of cost: inflight cap, campaign lookup, per-IP limit, identity,
//! per-user limit, pause, window, body, local sold-out flag, then ONE Redis call.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use http::{header, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use time::OffsetDateTime;

use super::problem::Problem;
use super::{json, read_body, segment, App, Handled};
use std::sync::Arc;

use crate::campaign::{CampaignState, ItemState, Window};
use crate::stock::{order::rfc3339_ms, HoldersUpdate, ReserveOutcome, ReserveRequest};

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuyBody {
    quantity: Option<u32>,
}

fn rate_limited(r: crate::limit::RateLimited) -> Handled {
    let mut res = Problem::rate_limited(r.retry_after_secs).into_response();
    for (name, value) in r.headers() {
        res.headers_mut().insert(name, value);
    }
    Handled {
        response: res,
        outcome: "rate-limited",
    }
}

fn quantity(body: &[u8], limit: u32) -> Result<u32, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(1);
    }
    let b: BuyBody = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("invalid body: {e}")))?;
    let q = b.quantity.unwrap_or(1);
    if q == 0 {
        return Err(Problem::bad_request("quantity must be at least 1"));
    }
    if q > limit {
        return Err(Problem::bad_request(format!(
            "quantity must not exceed the per-user limit of {limit}"
        )));
    }
    Ok(q)
}

fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<&str>, Problem> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k)
            if !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(k))
        }
        _ => Err(Problem::bad_request(
            "Idempotency-Key must be 1-128 visible ASCII characters",
        )),
    }
}

pub async fn buy(app: &App, req: Request<Incoming>, peer: IpAddr) -> Handled {
    let Some(_inflight) = app.inflight.try_acquire() else {
        return Problem::unavailable("the gateway is at capacity; retry shortly").into();
    };
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let (campaign_id, sku) = (segment(path, 2), segment(path, 4));
    let Some(c) = app.registry.get(campaign_id) else {
        return Problem::not_found(format!("no campaign {campaign_id:?}")).into();
    };
    let Some(item) = c.item(sku) else {
        return Problem::not_found(format!("no item {sku:?} in campaign {campaign_id:?}")).into();
    };
    let ip = app.client_ip.resolve(peer, &parts.headers);
    if let Err(r) = app.limiters.check_ip(&c.cfg.id, &c.cfg.limits, ip) {
        return rate_limited(r);
    }
    let user = match app.identity.user_id(&parts.headers) {
        Ok(u) => u,
        Err(e) => return Problem::unauthenticated(e.to_string()).into(),
    };
    if let Err(r) = app.limiters.check_user(&c.cfg.id, &c.cfg.limits, &user) {
        return rate_limited(r);
    }
    if c.paused.load(Ordering::Relaxed) {
        return Problem::paused().into();
    }
    match c.window(OffsetDateTime::now_utc()) {
        Window::Open => {}
        Window::NotStarted { secs_to_start } => return Problem::not_started(secs_to_start).into(),
        Window::Ended => return Problem::ended().into(),
    }
    let idem = match idempotency_key(&parts.headers) {
        Ok(k) => k,
        Err(p) => return p.into(),
    };
    let body = match read_body(app, &parts.headers, body).await {
        Ok(b) => b,
        Err(p) => return p.into(),
    };
    let qty = match quantity(&body, c.cfg.per_user_limit) {
        Ok(q) => q,
        Err(p) => return p.into(),
    };
    // A retry that names its Idempotency-Key goes to Redis even after a sell-out: its
    // earlier attempt may have reserved (a timeout leaves the outcome unknown).
    if idem.is_none() && app.registry.known_sold_out(item, &user) {
        return Problem::sold_out().into();
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
        amount_cents: item.price_cents * qty as u64,
        idempotency_key: idem,
        initial_stock: item.stock,
        holders_version: item.holders_version(),
    };
    match app.store.reserve(&request).await {
        Ok(ReserveOutcome::Reserved(order)) => {
            tracing::debug!(order_id = %order.order_id, user = %user, qty, "reserved");
            app.metrics
                .preorder(&c.cfg.id, &item.sku, "reserved", qty as u64);
            let mut res = json(StatusCode::CREATED, order.to_json());
            if let Ok(loc) = HeaderValue::from_str(&format!("/seckill/orders/{}", order.order_id)) {
                res.headers_mut().insert(header::LOCATION, loc);
            }
            Handled::ok(res)
        }
        Ok(ReserveOutcome::Existing(order)) => Handled::ok(json(StatusCode::OK, order.to_json())),
        Ok(ReserveOutcome::SoldOut { remaining, holders }) => {
            if remaining <= 0 {
                match holders {
                    HoldersUpdate::Unchanged => app.registry.arm_sold_out(item, None),
                    HoldersUpdate::Fresh(h) => app.registry.arm_sold_out(item, Some(h)),
                    HoldersUpdate::TooMany => arm_sold_out_later(app, &c, item),
                }
            }
            Problem::sold_out().into()
        }
        Ok(ReserveOutcome::LimitReached { held }) => Problem::limit_reached(format!(
            "you hold {held} of at most {} units in this campaign",
            c.cfg.per_user_limit
        ))
        .into(),
        Ok(ReserveOutcome::Paused) => {
            c.paused.store(true, Ordering::Relaxed);
            Problem::paused().into()
        }
        Ok(ReserveOutcome::IdempotencyKeyReused) => {
            Problem::bad_request("this Idempotency-Key was already used for another item").into()
        }
        Err(e) => {
            app.metrics.redis_errors.inc();
            Problem::from(e).into()
        }
    }
}

/// Arms the local sold-out flag in the background, once a holders list too long to come
/// inline is fetched (until then requests keep going to Redis, which is always right).
fn arm_sold_out_later(app: &App, c: &Arc<CampaignState>, item: &ItemState) {
    if !item.begin_arming() {
        return;
    }
    let (store, registry, c, sku) = (
        app.store.clone(),
        app.registry.clone(),
        c.clone(),
        item.sku.clone(),
    );
    tokio::spawn(async move {
        let Some(item) = c.item(&sku) else { return };
        match store
            .holders(&c.keys, &item.key, &sku, item.holders_version())
            .await
        {
            Ok(fresh) => registry.arm_sold_out(item, fresh),
            Err(e) => tracing::debug!(error = %e, sku, "sold-out flag not armed"),
        }
        item.end_arming();
    });
}

/// `GET /seckill/campaigns/{id}`: window, server time and per-item `remaining`
/// (from the once-a-second refresher, so it may lag by up to a second).
pub async fn campaign(app: &App, req: Request<Incoming>) -> Handled {
    let id = segment(req.uri().path(), 2);
    let Some(c) = app.registry.get(id) else {
        return Problem::not_found(format!("no campaign {id:?}")).into();
    };
    let now = OffsetDateTime::now_utc();
    let state = match c.window(now) {
        Window::NotStarted { .. } => "not_started",
        Window::Open => "open",
        Window::Ended => "ended",
    };
    let ms = |t: OffsetDateTime| rfc3339_ms((t.unix_timestamp_nanos() / 1_000_000) as i64);
    let items: Vec<_> = c
        .items
        .iter()
        .map(|i| {
            let r = i.remaining.load(Ordering::Relaxed);
            serde_json::json!({"sku": i.sku, "price_cents": i.price_cents, "remaining": (r >= 0).then_some(r)})
        })
        .collect();
    let body = serde_json::json!({
        "id": c.cfg.id,
        "name": c.cfg.name,
        "starts_at": ms(c.cfg.starts_at),
        "ends_at": ms(c.cfg.ends_at),
        "server_time": ms(now),
        "state": state,
        "paused": c.paused.load(Ordering::Relaxed),
        "per_user_limit": c.cfg.per_user_limit,
        "payment_window_seconds": c.cfg.payment_window.as_secs(),
        "items": items,
    });
    Handled::ok(json(StatusCode::OK, body.to_string().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity(b"", 2).unwrap(), 1);
        assert_eq!(quantity(b"{}", 2).unwrap(), 1);
        assert_eq!(quantity(br#"{"quantity":2}"#, 2).unwrap(), 2);
        for bad in [
            &br#"{"quantity":0}"#[..],
            br#"{"quantity":3}"#,
            br#"{"quantity":-1}"#,
            br#"{"quantity":1.5}"#,
            br#"{"quantity":"1"}"#,
            b"{",
            br#"{"qty":1}"#,
            b"[]",
        ] {
            assert_eq!(
                quantity(bad, 2).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{:?}",
                std::str::from_utf8(bad)
            );
        }
    }
}
