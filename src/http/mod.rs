//! The HTTP edge: the router and one file per surface (seckill, orders, payments, admin).
//! No business logic lives here: a handler parses the request, calls the sale
//! (`crate::core`), and maps the outcome — errors through `problem`, the one map.

pub mod admin;
mod orders;
mod payments;
pub mod problem;
mod route;
mod seckill;

/// The buy body's parser, for tests/fuzz.rs.
pub use seckill::quantity as buy_quantity;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::config::Config;
use crate::core::{BadInput, Sale, SaleError};
use crate::identity::{ClientIp, Identity, IdentityError};
use crate::proxy::{CloseConnection, Proxy, ProxyError};
use problem::Problem;
use route::Route;

/// The response body every handler returns: a full buffer or a streamed upstream body.
pub type ResBody = crate::proxy::ProxyBody;

/// A complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> ResBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Why the edge could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("upstream: {0}")]
    Proxy(#[from] ProxyError),
}

/// What the HTTP surfaces need besides the sale: who is asking, the proxy to the store,
/// the admin token and the limits on reading a body. Built once in `server::start`.
pub struct Edge {
    pub sale: Sale,
    identity: Identity,
    client_ip: ClientIp,
    proxy: Proxy,
    admin_token: Option<String>,
    max_body: usize,
    /// Bound on reading a request body (a client that stalls mid-body is cut off).
    body_timeout: Duration,
    route_metrics: route::RouteMetrics,
}

impl Edge {
    pub fn new(cfg: &Config, sale: Sale) -> Result<Edge, EdgeError> {
        Ok(Edge {
            route_metrics: route::RouteMetrics::new(sale.metrics()),
            identity: Identity::from_config(&cfg.identity, &cfg.secrets, sale.clock())?,
            client_ip: ClientIp::new(&cfg.server.trusted_proxies),
            proxy: Proxy::new(&cfg.upstream)?.stripping_identity_header(&cfg.identity),
            admin_token: cfg.secrets.admin_token.clone(),
            max_body: cfg.server.max_body_bytes,
            body_timeout: cfg.server.header_read_timeout.0.max(Duration::from_secs(1)),
            sale,
        })
    }

    /// Reads a whole request body of at most `max_body` bytes within `body_timeout`.
    async fn read_body(
        &self,
        headers: &http::HeaderMap,
        body: Incoming,
    ) -> Result<Bytes, BadInput> {
        let max = self.max_body;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(BadInput::TooLarge { max });
        }
        match tokio::time::timeout(self.body_timeout, Limited::new(body, max).collect()).await {
            Ok(Ok(c)) => Ok(c.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(BadInput::TooLarge { max })
            }
            Ok(Err(_)) => Err(BadInput::invalid("could not read the request body")),
            Err(_) => Err(BadInput::invalid("timed out reading the request body")),
        }
    }

    /// Closes the proxied connections upgraded to tunnels (WebSocket) and waits until
    /// their tasks are gone (on shutdown, once the listeners are drained).
    pub async fn close_tunnels(&self) {
        self.proxy.close_tunnels().await;
    }

    /// Re-reads the campaign files and the JWT public keys; a bad file changes nothing.
    pub async fn reload(&self) -> Result<crate::core::Reloaded, SaleError> {
        let keys = self.identity.read_keys()?;
        let campaigns = self.sale.reload().await?;
        if let Some(keys) = keys {
            self.identity.use_keys(keys);
        }
        Ok(campaigns)
    }

    /// Records the outcome and duration of a request.
    fn observe(&self, route: &str, started: Instant, outcome: &str) {
        self.route_metrics
            .observe(route, outcome, started.elapsed().as_secs_f64());
    }
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

/// A JSON response of a serializable value.
fn json_of(status: StatusCode, value: &impl serde::Serialize) -> Response<ResBody> {
    json(status, serde_json::to_vec(value).unwrap_or_default())
}

/// The client's `X-Request-Id` when it is safe to log (sharing the request's bytes), else
/// a new ULID; as the header value the response carries.
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get("x-request-id") {
        if v.to_str().is_ok_and(crate::proxy::valid_request_id) {
            return v.clone();
        }
    }
    let mut buf = [0; ulid::ULID_LEN];
    let id = ulid::Ulid::new().array_to_str(&mut buf);
    HeaderValue::from_str(id).expect("a ULID is a valid header value")
}

/// A handler's result: a response plus the outcome label for metrics.
pub struct Handled {
    pub response: Response<ResBody>,
    pub outcome: &'static str,
}

impl<E: Into<Problem>> From<E> for Handled {
    fn from(e: E) -> Self {
        let p: Problem = e.into();
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
/// `close` is the connection's off switch: handed to the proxy, which fires it when a
/// proxied exchange goes idle.
pub async fn public(
    edge: &Edge,
    req: Request<Incoming>,
    peer: IpAddr,
    close: CloseConnection,
) -> Response<ResBody> {
    let started = Instant::now();
    // Every log line of this request carries its id; the store gets it too.
    let id = request_id(req.headers());
    let rid = id.to_str().unwrap_or_default();
    let span = tracing::info_span!("request", request_id = %rid);
    let mut res = dispatch(edge, req, peer, close, rid, started)
        .instrument(span)
        .await;
    res.headers_mut().insert("x-request-id", id);
    res
}

async fn dispatch(
    edge: &Edge,
    mut req: Request<Incoming>,
    peer: IpAddr,
    close: CloseConnection,
    rid: &str,
    started: Instant,
) -> Response<ResBody> {
    if let Err(why) = crate::proxy::check_host(req.version(), req.headers()) {
        return Problem::bad_request(why).into_response();
    }
    // The parsed ids borrow the URI while the request moves on: a clone shares its bytes.
    let uri = req.uri().clone();
    let route = Route::of(req.method(), uri.path());
    let h = match route {
        Route::Buy { campaign, sku } => seckill::buy(edge, req, peer, campaign, sku).await,
        Route::Campaign { id } => seckill::campaign(edge, id),
        Route::Enter { campaign } => seckill::enter(edge, &req, peer, campaign).await,
        Route::MyEntry { campaign } => seckill::my_entry(edge, &req, peer, campaign).await,
        Route::OrderGet { id } => orders::get(edge, &req, peer, id).await,
        Route::OrderCancel { id } => orders::cancel(edge, &req, peer, id).await,
        Route::PaymentCallback => payments::callback(edge, req).await,
        Route::NotFound => Problem::not_found("no such flashgate endpoint").into(),
        Route::MethodNotAllowed { allow } => Problem::method_not_allowed(allow).into(),
        Route::Proxy => {
            // Only a proxied request carries the switch: the extensions map it would
            // allocate is no cost a buy should pay.
            req.extensions_mut().insert(close);
            let origin = edge.client_ip.origin(peer, req.headers());
            let h = match edge.proxy.forward(req, origin, Some(rid)).await {
                Ok(res) => Handled::ok(res),
                Err(e) => e.into(),
            };
            // The store's answers are `ok` whatever their status; ours carry their slug.
            let outcome = if h.response.status().is_server_error() {
                "upstream-error"
            } else {
                h.outcome
            };
            edge.observe("proxy", started, outcome);
            return h.response;
        }
    };
    edge.observe(route.name(), started, h.outcome);
    h.response
}
