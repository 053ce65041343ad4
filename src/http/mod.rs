//! HTTP surfaces: the router and one file per surface. No business logic lives here:
//! handlers parse requests, call the domain modules, and map results through `problem`.

pub mod admin;
pub mod orders;
pub mod payments;
pub mod problem;
pub mod seckill;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::campaign::Registry;
use crate::identity::{ClientIp, Identity};
use crate::limit::{Inflight, Limiters};
use crate::metrics::Metrics;
use crate::orders::payment::SignatureVerifier;
use crate::proxy::Proxy;
use crate::stock::Store;
use problem::Problem;

/// The response body every handler returns: a full buffer or a streamed upstream body.
pub type ResBody = BoxBody<Bytes, hyper::Error>;

/// A complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> ResBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Everything a request handler may use. Built once in `server::start`.
pub struct App {
    pub registry: Registry,
    pub store: Store,
    pub identity: Identity,
    pub client_ip: ClientIp,
    pub limiters: Limiters,
    pub inflight: Inflight,
    pub proxy: Proxy,
    pub metrics: Metrics,
    pub payments: SignatureVerifier,
    pub admin_token: Option<String>,
    pub campaigns_dir: PathBuf,
    pub max_body: usize,
    /// Set once the campaigns' stock is in Redis (`/readyz` waits for it).
    pub stock_loaded: std::sync::atomic::AtomicBool,
    /// Bound on reading a request body (a client that stalls mid-body is cut off).
    pub body_timeout: Duration,
}

/// A JSON response.
pub fn json(status: StatusCode, body: Vec<u8>) -> Response<ResBody> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Reads a whole request body of at most `app.max_body` bytes within `app.body_timeout`.
pub async fn read_body(
    app: &App,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<Bytes, Problem> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body as u64) {
        return Err(Problem::payload_too_large(app.max_body));
    }
    match tokio::time::timeout(app.body_timeout, Limited::new(body, app.max_body).collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Problem::payload_too_large(app.max_body))
        }
        Ok(Err(_)) => Err(Problem::bad_request("could not read the request body")),
        Err(_) => Err(Problem::bad_request("timed out reading the request body")),
    }
}

/// Records the outcome and duration of a request handled by flashgate itself.
fn observe(app: &App, route: &str, started: Instant, outcome: &str) {
    app.metrics
        .requests
        .with_label_values(&[route, outcome])
        .inc();
    app.metrics
        .duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
}

/// The client's `X-Request-Id` when it sent a sane one, else a new one.
pub fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| ulid::Ulid::new().to_string(), str::to_string)
}

/// A handler's result: a response plus the outcome label for metrics.
pub struct Handled {
    pub response: Response<ResBody>,
    pub outcome: &'static str,
}

impl From<Problem> for Handled {
    fn from(p: Problem) -> Self {
        Handled {
            outcome: p.slug,
            response: p.into_response(),
        }
    }
}

impl Handled {
    pub fn ok(response: Response<ResBody>) -> Self {
        Handled {
            response,
            outcome: "ok",
        }
    }
}

/// The public listener: flashgate's own routes, everything else to the store.
pub async fn public(app: &App, req: Request<Incoming>, peer: IpAddr) -> Response<ResBody> {
    let started = Instant::now();
    // Every log line of this request carries its id; the store gets it too.
    let rid = request_id(req.headers());
    let span = tracing::info_span!("request", request_id = %rid);
    let mut res = dispatch(app, req, peer, &rid, started)
        .instrument(span)
        .await;
    if let Ok(v) = HeaderValue::from_str(&rid) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

async fn dispatch(
    app: &App,
    req: Request<Incoming>,
    peer: IpAddr,
    rid: &str,
    started: Instant,
) -> Response<ResBody> {
    let route = match (req.method(), route_of(req.uri().path())) {
        (&Method::POST, Route::Buy) => "buy",
        (&Method::GET, Route::Campaign) => "campaign",
        (&Method::GET, Route::Order) => "order_get",
        (&Method::DELETE, Route::Order) => "order_cancel",
        (&Method::POST, Route::PaymentCallback) => "payment_callback",
        _ => {
            let ip = app.client_ip.resolve(peer, req.headers());
            let res = app.proxy.forward(req, ip, Some(rid)).await;
            let outcome = if res.status().is_server_error() {
                "upstream-error"
            } else {
                "ok"
            };
            observe(app, "proxy", started, outcome);
            return res;
        }
    };
    let h = match route {
        "buy" => seckill::buy(app, req, peer).await,
        "campaign" => seckill::campaign(app, req).await,
        "order_get" => orders::get(app, req).await,
        "order_cancel" => orders::cancel(app, req).await,
        _ => payments::callback(app, req).await,
    };
    observe(app, route, started, h.outcome);
    h.response
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Buy,
    Campaign,
    Order,
    PaymentCallback,
    Other,
}

fn route_of(path: &str) -> Route {
    if path == "/payments/callback" {
        return Route::PaymentCallback;
    }
    let Some(rest) = path.strip_prefix("/seckill/") else {
        return Route::Other;
    };
    let mut parts = rest.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("campaigns"), Some(c), None, ..) if !c.is_empty() => Route::Campaign,
        (Some("campaigns"), Some(c), Some("items"), Some(s), Some("orders"), None)
            if !c.is_empty() && !s.is_empty() =>
        {
            Route::Buy
        }
        (Some("orders"), Some(o), None, ..) if !o.is_empty() => Route::Order,
        _ => Route::Other,
    }
}

/// Path segment `n` (0-based, after the leading slash).
pub fn segment(path: &str, n: usize) -> &str {
    path.trim_start_matches('/').split('/').nth(n).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route_of("/seckill/campaigns/c1/items/sku/orders"),
            Route::Buy
        );
        assert_eq!(route_of("/seckill/campaigns/c1"), Route::Campaign);
        assert_eq!(route_of("/seckill/orders/01J.c1"), Route::Order);
        assert_eq!(route_of("/payments/callback"), Route::PaymentCallback);
        assert_eq!(
            route_of("/seckill/campaigns/c1/items/sku/orders/x"),
            Route::Other
        );
        assert_eq!(
            route_of("/seckill/campaigns//items/sku/orders"),
            Route::Other
        );
        assert_eq!(route_of("/products/1"), Route::Other);
        assert_eq!(segment("/seckill/campaigns/c1/items/s/orders", 4), "s");
    }
}
