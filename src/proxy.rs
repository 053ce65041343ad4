//! The pass-through to the store: every request flashgate does not answer itself goes to
//! `upstream.url` with its method, path, query, headers and body intact.
//!
//! Owns the pooled keep-alive HTTP/1 client and the manners of a well-behaved proxy:
//! - Bodies are streamed both ways, frame by frame; nothing is ever buffered whole.
//! - Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every header it names, plus
//!   `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`,
//!   `Trailer`, `Transfer-Encoding`, `Upgrade`) are dropped on the way in and on the way out.
//! - Protocol upgrades (WebSocket) pass: a request whose `Connection` names `upgrade` keeps
//!   its `Upgrade` header; when the store answers 101, the client's and the store's
//!   connections are joined into a byte tunnel until either side closes. The store's
//!   other answers (a refusal) come back as usual. Only the store's 101 to a request
//!   that asked for an upgrade is honoured; any other 101 is a 502.
//! - `Host` is forwarded as the client sent it, so the store can keep virtual hosting and
//!   build its absolute links and cookies for the public name. Only a request without a
//!   `Host` gets the upstream's authority.
//! - `X-Forwarded-For` gets the client IP appended (its earlier entries are whatever the
//!   client or the proxies before us wrote); `X-Forwarded-Proto: http` is set when absent;
//!   `X-Request-Id` is set to our request id when there is one.
//! - The URI becomes the upstream's scheme and authority, with the path of `upstream.url`
//!   (when it is not `/`) put in front of the request's path.
//!
//! Failures come back as a typed [`ForwardError`] (the HTTP edge answers them), never a
//! panic: the store unreachable or the connection lost → `Unreachable` / `Failed` (502
//! `bad-gateway`); no response headers within `upstream.timeout` (counted from the start,
//! so it includes connecting and sending the request body) → `Timeout` (504).
//! A request is re-sent only when hyper saw it fail on a stale pooled connection before a
//! single byte was written, so the store never sees a request twice.
//!
//! Must never: buffer a body, parse one, or look at flash-sale routes.

use std::error::Error as StdError;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Parts, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{
    combinators::{BoxBody, UnsyncBoxBody},
    BodyExt, Empty,
};
use hyper::body::Body;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::UpstreamConfig;

/// The body of a response from the store: streamed as it arrives.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The body the pooled client sends: any incoming body, boxed once. Unsync, because
/// an incoming body need only be `Send`.
type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long an idle pooled connection to the store stays open (also its TCP keep-alive).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Always hop-by-hop; `Connection` may name more.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Why a [`Proxy`] could not be built from `[upstream]`.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream.url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("upstream.url {url:?}: https is not supported yet; use an http:// URL")]
    UnsupportedScheme { url: String },
    #[error("upstream.timeout must be greater than zero")]
    ZeroTimeout,
}

/// Why a request could not be forwarded; the store saw nothing, or the exchange broke.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error("CONNECT is not proxied")]
    ConnectMethod,
    #[error("the request target cannot be forwarded")]
    BadTarget,
    #[error("cannot connect to the store")]
    Unreachable,
    #[error("the connection to the store failed")]
    Failed,
    #[error("the store did not answer in time")]
    Timeout,
    #[error("the store switched protocols unasked")]
    UnaskedSwitch,
}

/// The pass-through to the store. Cheap to clone: one `Arc`; clones share the pool.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    /// Pooled keep-alive client; connections are reused across requests and clones.
    client: Client<HttpConnector, ReqBody>,
    /// `host:port` of the store.
    authority: Authority,
    /// The path of `upstream.url` without its trailing `/`, when it is not just `/`.
    prefix: Option<Box<str>>,
    /// Deadline for the store's response headers.
    timeout: Duration,
}

// === impl Proxy ===

impl Proxy {
    /// Builds the proxy and its connection pool; connects lazily, on the first request.
    ///
    /// `upstream.url` must be an absolute `http://` URL without a query; an `https://` URL
    /// is refused with [`ProxyError::UnsupportedScheme`] (the client speaks plain HTTP only).
    pub fn new(cfg: &UpstreamConfig) -> Result<Proxy, ProxyError> {
        let invalid = |reason: &str| ProxyError::InvalidUrl {
            url: cfg.url.clone(),
            reason: reason.to_owned(),
        };
        let url: Uri = cfg.url.parse().map_err(|e| invalid(&format!("{e}")))?;
        match url.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            Some(s) if *s == Scheme::HTTPS => {
                return Err(ProxyError::UnsupportedScheme {
                    url: cfg.url.clone(),
                })
            }
            _ => return Err(invalid("must be an absolute http:// URL")),
        }
        let authority = url
            .authority()
            .cloned()
            .ok_or_else(|| invalid("has no host"))?;
        if url.query().is_some() {
            return Err(invalid("must not have a query"));
        }
        if cfg.timeout.0.is_zero() {
            return Err(ProxyError::ZeroTimeout);
        }
        let prefix = url.path().trim_end_matches('/');

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(POOL_IDLE_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Proxy {
            inner: Arc::new(Inner {
                client,
                authority,
                prefix: (!prefix.is_empty()).then(|| prefix.into()),
                timeout: cfg.timeout.0,
            }),
        })
    }

    /// Sends `req` to the store and streams its response back, or says why it could not.
    pub async fn forward<B>(
        &self,
        req: Request<B>,
        client_ip: IpAddr,
        request_id: Option<&str>,
    ) -> Result<Response<ProxyBody>, ForwardError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if req.method() == Method::CONNECT {
            return Err(ForwardError::ConnectMethod);
        }
        let (mut head, body) = req.into_parts();
        let uri = self
            .inner
            .upstream_uri(&head.uri)
            .ok_or(ForwardError::BadTarget)?;
        head.uri = uri;
        let upgrade = Upgrade::requested(&mut head);
        // Our own hop to the store: keep-alive HTTP/1.1 whatever the client spoke.
        head.version = Version::HTTP_11;
        strip_hop_by_hop(&mut head.headers);
        if let Some(u) = &upgrade {
            keep_upgrade(&mut head.headers, u.protocol.clone());
        }
        add_forwarding(&mut head.headers, client_ip, request_id);
        let req = Request::from_parts(head, body.map_err(Into::into).boxed_unsync());

        match tokio::time::timeout(self.inner.timeout, self.inner.client.request(req)).await {
            Ok(Ok(mut res)) if res.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let Some(client_side) = upgrade else {
                    tracing::warn!(request_id, "the store switched protocols unasked");
                    return Err(ForwardError::UnaskedSwitch);
                };
                let store_side = hyper::upgrade::on(&mut res);
                let (mut head, _) = res.into_parts();
                let granted = head.headers.get(header::UPGRADE).cloned();
                strip_hop_by_hop(&mut head.headers);
                if let Some(protocol) = granted {
                    keep_upgrade(&mut head.headers, protocol);
                }
                client_side.tunnel_to(store_side, request_id);
                let empty = Empty::new().map_err(|never| match never {}).boxed();
                Ok(Response::from_parts(head, empty))
            }
            Ok(Ok(res)) => {
                let (mut head, body) = res.into_parts();
                head.version = Version::HTTP_11;
                strip_hop_by_hop(&mut head.headers);
                Ok(Response::from_parts(head, body.boxed()))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = ?e, request_id, "upstream request failed");
                Err(if e.is_connect() {
                    ForwardError::Unreachable
                } else {
                    ForwardError::Failed
                })
            }
            Err(_elapsed) => {
                tracing::warn!(timeout = ?self.inner.timeout, request_id, "upstream timed out");
                Err(ForwardError::Timeout)
            }
        }
    }
}

// === upgrades ===

/// A client's request to switch protocols (`Connection: upgrade` + `Upgrade: …`).
struct Upgrade {
    /// The `Upgrade` header to pass on (it is hop-by-hop, so stripping removes it).
    protocol: HeaderValue,
    /// The client's side of the connection once hyper hands it over.
    on: hyper::upgrade::OnUpgrade,
}

impl Upgrade {
    /// Takes the upgrade out of a request that asks for one (HTTP/1.1, `Connection` names
    /// `upgrade`, an `Upgrade` header, and a server connection able to upgrade).
    fn requested(head: &mut http::request::Parts) -> Option<Upgrade> {
        let protocol = head.headers.get(header::UPGRADE)?.clone();
        let asks = head.version == Version::HTTP_11
            && (head.headers.get_all(header::CONNECTION).iter())
                .flat_map(tokens)
                .any(|t| t.eq_ignore_ascii_case(b"upgrade"));
        if !asks {
            return None;
        }
        let on = head.extensions.remove::<hyper::upgrade::OnUpgrade>()?;
        Some(Upgrade { protocol, on })
    }

    /// Joins the client's connection and the store's into one tunnel, in the background:
    /// both upgrades complete only after the 101 has been written to the client.
    fn tunnel_to(self, store: hyper::upgrade::OnUpgrade, request_id: Option<&str>) {
        let client = self.on;
        let request_id = request_id.map(str::to_owned);
        tokio::spawn(async move {
            match tokio::try_join!(client, store) {
                Ok((client, store)) => {
                    let (mut client, mut store) = (TokioIo::new(client), TokioIo::new(store));
                    let copied = tokio::io::copy_bidirectional(&mut client, &mut store).await;
                    tracing::debug!(?copied, request_id, "upgraded connection closed");
                }
                Err(e) => tracing::warn!(error = %e, request_id, "upgrade failed"),
            }
        });
    }
}

// === impl Inner ===

impl Inner {
    /// The request's path and query on the store; `None` if they cannot form a URI.
    fn upstream_uri(&self, uri: &Uri) -> Option<Uri> {
        let path_and_query = match (&self.prefix, uri.path_and_query()) {
            (None, Some(pq)) => pq.clone(),
            (None, None) => PathAndQuery::from_static("/"),
            // `OPTIONS *` asks about the server, not a path: no prefix.
            (Some(_), Some(pq)) if pq.as_str() == "*" => pq.clone(),
            (Some(prefix), pq) => {
                let pq = pq.map_or("/", PathAndQuery::as_str);
                PathAndQuery::try_from(format!("{prefix}{pq}")).ok()?
            }
        };
        let mut parts = Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).ok()
    }
}

// === headers ===

/// The comma-separated tokens of a `Connection` header value, trimmed.
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
}

/// Removes the hop-by-hop headers, including those named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Cloning the values (cheap, shared bytes) frees the map for removal; the Vec
    // allocates only when a `Connection` header is present.
    let named: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .cloned()
        .collect();
    for name in named.iter().flat_map(tokens) {
        // An invalid name matches nothing and is ignored.
        if let Ok(name) = std::str::from_utf8(name) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Puts `Connection: upgrade` and the `Upgrade` header back after stripping: the one
/// hop-by-hop pair a tunnel needs on both of its hops.
fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Appends the client to `X-Forwarded-For` (all earlier lines folded into one), sets
/// `X-Forwarded-Proto` when absent and `X-Request-Id` when we have one.
fn add_forwarding(headers: &mut HeaderMap, client_ip: IpAddr, request_id: Option<&str>) {
    let mut xff = Vec::with_capacity(64);
    for value in headers.get_all(X_FORWARDED_FOR) {
        if !value.is_empty() {
            xff.extend_from_slice(value.as_bytes());
            xff.extend_from_slice(b", ");
        }
    }
    // Writing to a Vec cannot fail.
    let _ = write!(xff, "{client_ip}");
    // Earlier values were valid header values, so their concatenation is one too.
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(xff)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static("http"));
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(X_REQUEST_ID, id);
    }
}

#[cfg(test)]
mod tests;
