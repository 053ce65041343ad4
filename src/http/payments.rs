//! `POST /payments/callback`: the raw body and its `Flashgate-Signature` go to
//! the sale, which verifies the signature over the bytes as received and pays the order.

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::{json, Edge, Handled};

pub(super) async fn callback(edge: &Edge, req: Request<Incoming>) -> Handled {
    let (parts, body) = req.into_parts();
    let raw = match edge.read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return e.into(),
    };
    let signature = parts
        .headers
        .get("flashgate-signature")
        .and_then(|v| v.to_str().ok());
    match edge.sale.confirm_payment(&raw, signature).await {
        Ok(reply) => {
            let body = serde_json::json!({"order_id": reply.order_id, "status": reply.status});
            Handled::ok(json(StatusCode::OK, body.to_string().into_bytes()))
        }
        Err(e) => e.into(),
    }
}
