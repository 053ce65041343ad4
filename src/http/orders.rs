//! `GET /seckill/orders/{id}` and `DELETE /seckill/orders/{id}`: an order, to its owner only.

use std::net::IpAddr;

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::{json, Edge, Handled};
use crate::core::SaleError;
use crate::stock::Order;

pub(super) async fn get(edge: &Edge, req: &Request<Incoming>, peer: IpAddr, id: &str) -> Handled {
    answer(async {
        let user = edge
            .identity
            .user_id(req.headers(), edge.client_ip.is_trusted(peer))?;
        edge.sale.order(id, &user).await
    })
    .await
}

pub(super) async fn cancel(
    edge: &Edge,
    req: &Request<Incoming>,
    peer: IpAddr,
    id: &str,
) -> Handled {
    answer(async {
        let user = edge
            .identity
            .user_id(req.headers(), edge.client_ip.is_trusted(peer))?;
        edge.sale.cancel(id, &user).await
    })
    .await
}

async fn answer(order: impl std::future::Future<Output = Result<Order, SaleError>>) -> Handled {
    match order.await {
        Ok(o) => Handled::ok(json(StatusCode::OK, o.to_json())),
        Err(e) => e.into(),
    }
}
