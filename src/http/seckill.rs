//! `POST /seckill/campaigns/{c}/items/{sku}/orders` (buy), `GET /seckill/campaigns/{c}`,
//! and a raffle's `POST …/entries` and `GET …/entries/me`.
//! Parsing only: the buy itself, and the order of its checks, belong to `core::buy`.

use std::net::IpAddr;

use http::{header, HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{json, json_of, Edge, Handled};
use crate::core::{BadInput, Bought, BuyRequest};

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuyBody {
    quantity: Option<u32>,
}

pub(super) async fn buy(
    edge: &Edge,
    req: Request<Incoming>,
    peer: IpAddr,
    campaign: &str,
    sku: &str,
) -> Handled {
    let (parts, body) = req.into_parts();
    let request = BuyRequest {
        campaign,
        sku,
        client_ip: edge.client_ip.resolve(peer, &parts.headers),
        idempotency_key: idempotency_key(&parts.headers),
    };
    let authenticate = || {
        let trusted = edge.client_ip.is_trusted(peer);
        edge.identity.user_id(&parts.headers, trusted)
    };
    let quantity = async {
        let raw = edge.read_body(&parts.headers, body).await?;
        quantity(&raw)
    };
    match edge.sale.buy(request, authenticate, quantity).await {
        Ok(Bought { order, created }) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut res = json(status, order.to_json());
            let location = format!("/seckill/orders/{}", order.order_id);
            if let (true, Ok(loc)) = (created, HeaderValue::from_str(&location)) {
                res.headers_mut().insert(header::LOCATION, loc);
            }
            Handled::ok(res)
        }
        Err(e) => e.into(),
    }
}

/// The body's `quantity`: `None` for an empty body or `{}`.
pub fn quantity(body: &[u8]) -> Result<Option<u32>, BadInput> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let b: BuyBody =
        crate::json::object(body).map_err(|e| BadInput::invalid(format!("invalid body: {e}")))?;
    Ok(b.quantity)
}

fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<&str>, BadInput> {
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
        _ => Err(BadInput::invalid(
            "Idempotency-Key must be 1-128 visible ASCII characters",
        )),
    }
}

/// `POST /seckill/campaigns/{c}/entries`: enter a raffle (201 new, 200 the same entry).
/// No body is read: an entry carries nothing but the user.
pub(super) async fn enter(
    edge: &Edge,
    req: &Request<Incoming>,
    peer: IpAddr,
    campaign: &str,
) -> Handled {
    let headers = req.headers();
    let authenticate = || {
        edge.identity
            .user_id(headers, edge.client_ip.is_trusted(peer))
    };
    let client_ip = edge.client_ip.resolve(peer, headers);
    match edge.sale.enter(campaign, client_ip, authenticate).await {
        Ok((entry, created)) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Handled::ok(json_of(status, &entry))
        }
        Err(e) => e.into(),
    }
}

/// `GET /seckill/campaigns/{c}/entries/me`: the caller's raffle entry and where it stands.
pub(super) async fn my_entry(
    edge: &Edge,
    req: &Request<Incoming>,
    peer: IpAddr,
    campaign: &str,
) -> Handled {
    let authenticate = || {
        edge.identity
            .user_id(req.headers(), edge.client_ip.is_trusted(peer))
    };
    match edge.sale.my_entry(campaign, authenticate).await {
        Ok(entry) => Handled::ok(json_of(StatusCode::OK, &entry)),
        Err(e) => e.into(),
    }
}

/// `GET /seckill/campaigns/{id}`: window, server time and per-item `remaining`.
pub(super) fn campaign(edge: &Edge, id: &str) -> Handled {
    match edge.sale.campaign_view(id) {
        Ok(view) => Handled::ok(json_of(StatusCode::OK, &view)),
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity(b"").unwrap(), None);
        assert_eq!(quantity(b" \n").unwrap(), None);
        assert_eq!(quantity(b"{}").unwrap(), None);
        assert_eq!(quantity(br#"{"quantity":2}"#).unwrap(), Some(2));
        for bad in [
            &br#"{"quantity":-1}"#[..],
            br#"{"quantity":1.5}"#,
            br#"{"quantity":"1"}"#,
            b"{",
            br#"{"qty":1}"#,
            b"[]",
        ] {
            assert!(quantity(bad).is_err(), "{:?}", std::str::from_utf8(bad));
        }
    }
}
