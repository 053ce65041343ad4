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
//!   build its absolute links and cookies for the public name. RFC 9112 §3.2: two `Host`
//!   lines, or none on HTTP/1.1, are a 400; only an HTTP/1.0 request without one gets the
//!   upstream's authority. `Host` is never hop-by-hop, whatever `Connection` names.
//! - Forwarding headers follow the trust rule of `headers.rs`: a trusted proxy's
//!   `X-Forwarded-*`, `Forwarded`, `X-Real-IP` and identity header pass, and the peer is
//!   appended to its `X-Forwarded-For`; from anyone else those are dropped,
//!   `X-Forwarded-For` is the peer and `X-Forwarded-Proto` our listener's scheme.
//!   `X-Request-Id` is set to our request id when there is one.
//! - The URI becomes the upstream's scheme and authority, with the path of `upstream.url`
//!   (when it is not `/`) put in front of the request's path.
//! - `https://` stores are verified against the system's roots plus `upstream.ca_file`.
//!
//! Failures come back as a typed [`ForwardError`] (the HTTP edge answers them), never a
//! panic: the store unreachable or the connection lost → `Unreachable` / `Failed` (502
//! `bad-gateway`); no response headers within `upstream.timeout` (counted from the start,
//! so it includes connecting and sending the request body) → `Timeout` (504); the
//! client's own request body broken (bad chunk framing) → `ClientBody` (400
//! `bad-request`, the client's fault and counted as such); a bad `Host` → `BadHost` (400). A request is re-sent only when hyper saw it fail on
//! a stale pooled connection before a single byte was written, so the store never sees a
//! request twice. Once the response streams, `upstream.idle_timeout` without a byte
//! moving either way closes both connections (`idle.rs`); tunnels alike.
//!
//! Must never: buffer a body, parse one, or look at flash-sale routes.

mod headers;
mod idle;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, Parts, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{
    combinators::{BoxBody, UnsyncBoxBody},
    BodyExt, Empty,
};
use hyper::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{IdentityConfig, IdentityMode, UpstreamConfig};
use crate::identity::Origin;
use headers::{add_forwarding, keep_upgrade, strip_hop_by_hop, tokens};
pub use headers::{check_host, valid_request_id};
pub use idle::CloseConnection;
use idle::{Exchange, RequestBody, ResponseBody, TunnelSide};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The body of a response from the store: streamed as it arrives. Its error is boxed: an
/// idle timeout (`idle.rs`) ends it as well as the store connection can.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The body the pooled client sends: any incoming body, boxed once. Unsync, because
/// an incoming body need only be `Send`.
type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long an idle pooled connection to the store stays open (also its TCP keep-alive).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a [`Proxy`] could not be built from `[upstream]`.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream.url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("upstream.timeout must be greater than zero")]
    ZeroTimeout,
    #[error("upstream.idle_timeout must be greater than zero")]
    ZeroIdleTimeout,
    #[error("upstream TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Why a request could not be forwarded; the store saw nothing, or the exchange broke.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error("CONNECT is not proxied")]
    ConnectMethod,
    #[error("the request target cannot be forwarded")]
    BadTarget,
    /// RFC 9112 §3.2: two `Host` lines, or none on HTTP/1.1 (the client's fault).
    #[error("{0}")]
    BadHost(&'static str),
    /// The client's own request body broke (bad chunk framing): the client's fault,
    /// whatever error the store connection then reported.
    #[error("could not read the request body")]
    ClientBody,
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
    /// The connector speaks TLS to `https://` stores and plain TCP to `http://` ones.
    client: Client<HttpsConnector<HttpConnector>, ReqBody>,
    /// `http` or `https`.
    scheme: Scheme,
    /// `host:port` of the store.
    authority: Authority,
    /// The path of `upstream.url` without its trailing `/`, when it is not just `/`.
    prefix: Option<Box<str>>,
    /// Deadline for the store's response headers.
    timeout: Duration,
    /// No byte moving either way this long closes a streamed exchange or a tunnel.
    idle_timeout: Duration,
    /// The `identity.mode = "header"` user header, removed from untrusted peers' requests.
    identity_header: Option<HeaderName>,
    /// The tunnels' tasks: they outlive the connection that asked for them, so the
    /// proxy owns them, and [`Proxy::close_tunnels`] ends them through `closing`.
    tunnels: TaskTracker,
    closing: CancellationToken,
}

// === impl Proxy ===

impl Proxy {
    /// Builds the proxy and its connection pool; connects lazily, on the first request.
    ///
    /// `upstream.url` must be an absolute `http://` or `https://` URL without a query.
    pub fn new(cfg: &UpstreamConfig) -> Result<Proxy, ProxyError> {
        let invalid = |reason: &str| ProxyError::InvalidUrl {
            url: cfg.url.clone(),
            reason: reason.to_owned(),
        };
        let url: Uri = cfg.url.parse().map_err(|e| invalid(&format!("{e}")))?;
        let scheme = match url.scheme() {
            Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
            _ => return Err(invalid("must be an absolute http:// or https:// URL")),
        };
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
        if cfg.idle_timeout.0.is_zero() {
            return Err(ProxyError::ZeroIdleTimeout);
        }
        let prefix = url.path().trim_end_matches('/');

        // Trust roots are read only for an https store: a plain one needs none.
        let tls = if scheme == Scheme::HTTPS {
            crate::tls::client_config(cfg.ca_file.as_deref())?
        } else {
            crate::tls::no_roots()
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(POOL_IDLE_TIMEOUT));
        connector.enforce_http(false);
        let connector = crate::tls::https_connector(tls, connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Proxy {
            inner: Arc::new(Inner {
                client,
                scheme,
                authority,
                prefix: (!prefix.is_empty()).then(|| prefix.into()),
                timeout: cfg.timeout.0,
                idle_timeout: cfg.idle_timeout.0,
                identity_header: None,
                tunnels: TaskTracker::new(),
                closing: CancellationToken::new(),
            }),
        })
    }

    /// Closes every tunnel (both of its connections) and waits until their tasks are
    /// gone. Tunnels that open afterwards close at once.
    pub async fn close_tunnels(&self) {
        self.inner.closing.cancel();
        self.inner.tunnels.close();
        self.inner.tunnels.wait().await;
    }

    /// In `identity.mode = "header"`, the user header is removed from what untrusted
    /// peers send to the store (the store would otherwise believe a forged identity).
    pub fn stripping_identity_header(self, cfg: &IdentityConfig) -> Proxy {
        let name = (cfg.mode == IdentityMode::Header)
            .then(|| HeaderName::from_bytes(cfg.header.as_bytes()).ok())
            .flatten();
        let Ok(mut inner) = Arc::try_unwrap(self.inner) else {
            unreachable!("called right after new(), before any clone")
        };
        inner.identity_header = name;
        Proxy {
            inner: Arc::new(inner),
        }
    }

    /// Sends `req` to the store and streams its response back, or says why it could not.
    pub async fn forward<B>(
        &self,
        req: Request<B>,
        origin: Origin,
        request_id: Option<&str>,
    ) -> Result<Response<ProxyBody>, ForwardError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if req.method() == Method::CONNECT {
            return Err(ForwardError::ConnectMethod);
        }
        check_host(req.version(), req.headers()).map_err(ForwardError::BadHost)?;
        let (mut head, body) = req.into_parts();
        let uri = self
            .inner
            .upstream_uri(&head.uri)
            .ok_or(ForwardError::BadTarget)?;
        head.uri = uri;
        let upgrade = Upgrade::requested(&mut head);
        let close = head.extensions.remove::<CloseConnection>();
        // Our own hop to the store: keep-alive HTTP/1.1 whatever the client spoke.
        head.version = Version::HTTP_11;
        strip_hop_by_hop(&mut head.headers);
        if let Some(u) = &upgrade {
            keep_upgrade(&mut head.headers, u.protocol.clone());
        }
        let identity_header = self.inner.identity_header.as_ref();
        add_forwarding(&mut head.headers, origin, identity_header, request_id);
        let exchange = Exchange::new();
        let body = RequestBody::new(body, exchange.clone());
        let req = Request::from_parts(head, body.boxed_unsync());

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
                client_side.tunnel_to(store_side, &self.inner, request_id);
                let empty = Empty::new().map_err(|never| match never {}).boxed();
                Ok(Response::from_parts(head, empty))
            }
            Ok(Ok(res)) => {
                let (mut head, body) = res.into_parts();
                head.version = Version::HTTP_11;
                strip_hop_by_hop(&mut head.headers);
                if body.is_end_stream() {
                    return Ok(Response::from_parts(head, body.map_err(Into::into).boxed()));
                }
                // The head has arrived: the idle clock starts now.
                exchange.moved();
                let done = exchange.watch(self.inner.idle_timeout, close, request_id);
                let body = ResponseBody::new(body, exchange, done);
                Ok(Response::from_parts(head, body.boxed()))
            }
            Ok(Err(_)) if exchange.client_body_failed() => {
                tracing::debug!(request_id, "the client's request body is malformed");
                Err(ForwardError::ClientBody)
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
    ///
    /// The tunnel ends when either side closes, when no byte moved either way for
    /// `upstream.idle_timeout`, or when the proxy closes its tunnels; both connections
    /// are dropped (closed) then.
    fn tunnel_to(self, store: hyper::upgrade::OnUpgrade, proxy: &Inner, request_id: Option<&str>) {
        let client = self.on;
        let request_id = request_id.map(str::to_owned);
        let (idle, closing) = (proxy.idle_timeout, proxy.closing.clone());
        proxy.tunnels.spawn(async move {
            let tunnel = async {
                match tokio::try_join!(client, store) {
                    Ok((client, store)) => {
                        let exchange = Exchange::new();
                        let mut client = TunnelSide::new(TokioIo::new(client), exchange.clone());
                        let mut store = TunnelSide::new(TokioIo::new(store), exchange.clone());
                        tokio::select! {
                            copied = tokio::io::copy_bidirectional(&mut client, &mut store) => {
                                tracing::debug!(?copied, request_id, "upgraded connection closed");
                            }
                            _ = exchange.idle_for(idle) => {
                                tracing::info!(?idle, request_id, "upgraded connection idle too long; closed");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, request_id, "upgrade failed"),
                }
            };
            tokio::select! {
                _ = tunnel => {}
                _ = closing.cancelled() => {
                    tracing::debug!(request_id, "upgraded connection closed on shutdown");
                }
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
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).ok()
    }
}

#[cfg(test)]
mod tests;
