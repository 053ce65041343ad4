//! `TestStore`: a stand-in for the store flashgate fronts, on 127.0.0.1:<free port>.
//!
//! - `POST /flashgate/orders` records the delivery (headers, raw body, JSON) and answers
//!   200 — or 503 while `set_failing(true)`; failed attempts are counted, not recorded.
//!   While `set_hanging(true)` it answers nothing: the request is held (counted in
//!   `held`, the most at once in `max_held`) until `set_hanging(false)`, then answered
//!   503 and not recorded — a store that hung and gave up. `set_delay(d)` makes it slow:
//!   each delivery is answered `d` after it arrived.
//! - Any other request is echoed back as JSON:
//!   `{"method", "path" (with query), "headers": {name: value}, "body": text}`.
//!   Test knobs on the request: `x-test-status: <code>` sets the status,
//!   `x-test-delay-ms: <n>` delays the answer (for upstream timeout tests). Echoed
//!   requests are counted on arrival (`echo_requests`), so a test can wait for a slow one.
//! - A request with `Upgrade: echo` (and `Connection: upgrade`) on any path but
//!   `/refuse-upgrade` is answered 101 and the connection then echoes every byte back
//!   (a stand-in for a WebSocket); `/refuse-upgrade` answers 403.
//! - `x-test-stream: forever` streams 64 KiB chunks for as long as they are taken;
//!   `x-test-stream: stall` sends one chunk (`first chunk\n`) and then nothing. Either
//!   counts in `streams_closed` once the gateway drops the response (for idle tests);
//!   an echo tunnel counts in `tunnels_closed` once it ends.
//! - [`TestStore::start_tls`] serves the same over TLS with a given certificate.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One delivery the gateway made to the sink endpoint.
#[derive(Debug, Clone)]
pub struct RecordedOrder {
    pub headers: http::HeaderMap,
    /// The raw body, as signed by `Flashgate-Signature`.
    pub raw: Bytes,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: serde_json::Value,
}

impl RecordedOrder {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Shared {
    /// A std Mutex: held only to push or clone, never across an await.
    orders: Mutex<Vec<RecordedOrder>>,
    failing: AtomicBool,
    /// Every POST /flashgate/orders, including those answered 503.
    attempts: AtomicUsize,
    /// Every other (echoed) request, counted on arrival, before any `x-test-delay-ms`.
    echoed: AtomicUsize,
    /// `x-test-stream` responses whose receiver (the gateway's connection) went away.
    streams_closed: AtomicUsize,
    /// Echo tunnels that ended.
    tunnels_closed: AtomicUsize,
    /// `true` while order deliveries are held unanswered.
    hanging: tokio::sync::watch::Sender<bool>,
    /// Milliseconds each order delivery waits before it is answered (a slow store).
    delay_ms: AtomicU64,
    /// Order deliveries held right now, and the most held at once.
    held: AtomicUsize,
    max_held: AtomicUsize,
}

/// One held delivery, counted while it lasts (also when the gateway gives up on it).
struct Held<'a>(&'a Shared);

impl<'a> Held<'a> {
    fn new(shared: &'a Shared) -> Held<'a> {
        let now = shared.held.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_held.fetch_max(now, Ordering::SeqCst);
        Held(shared)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct TestStore {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl TestStore {
    /// Binds 127.0.0.1:0 and serves on the current Tokio runtime until dropped.
    pub async fn start() -> TestStore {
        Self::serve(None).await
    }

    /// Like [`start`](Self::start), over TLS: `url()` is `https://127.0.0.1:<port>`.
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> TestStore {
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> TestStore {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind store");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // e.g. out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let state = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let builder = http1::Builder::new();
                    match tls {
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            let _ = conn.with_upgrades().await;
                        }
                        Some(tls) => {
                            // A failed handshake (say, a client that does not trust us)
                            // just ends the connection.
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), svc);
                            let _ = conn.with_upgrades().await;
                        }
                    }
                });
            }
        });
        TestStore {
            addr,
            scheme,
            shared,
            accept,
        }
    }

    /// `http://127.0.0.1:<port>` (`https://` for [`TestStore::start_tls`])
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `x-test-stream` responses the gateway has dropped so far.
    pub fn streams_closed(&self) -> usize {
        self.shared.streams_closed.load(Ordering::SeqCst)
    }

    /// Echo tunnels that have ended so far.
    pub fn tunnels_closed(&self) -> usize {
        self.shared.tunnels_closed.load(Ordering::SeqCst)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every successful delivery so far, in arrival order (duplicates included).
    pub fn orders(&self) -> Vec<RecordedOrder> {
        self.shared.orders.lock().unwrap().clone()
    }

    /// Delivery attempts so far, failed ones included.
    pub fn attempts(&self) -> usize {
        self.shared.attempts.load(Ordering::SeqCst)
    }

    /// Echo requests received so far, counted on arrival (a delayed one counts at once).
    pub fn echo_requests(&self) -> usize {
        self.shared.echoed.load(Ordering::SeqCst)
    }

    /// While failing, `POST /flashgate/orders` answers 503 and records nothing.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// While hanging, `POST /flashgate/orders` is held unanswered; on `false` the held
    /// ones are answered 503 (not recorded) and new ones served as usual.
    pub fn set_hanging(&self, hanging: bool) {
        self.shared.hanging.send_replace(hanging);
    }

    /// A slow store: each order delivery is answered `delay` after it arrived (after
    /// any hang), as usual otherwise. `Duration::ZERO` ends it.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Order deliveries held unanswered right now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// The most order deliveries held at once so far.
    pub fn max_held(&self) -> usize {
        self.shared.max_held.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` deliveries arrived; panics after `timeout`.
    pub async fn wait_for_orders(&self, n: usize, timeout: Duration) -> Vec<RecordedOrder> {
        super::eventually(&format!("{n} order deliveries"), timeout, || async {
            let orders = self.orders();
            (orders.len() >= n).then_some(orders)
        })
        .await
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

type StoreBody = BoxBody<Bytes, Infallible>;

/// A response body fed from a channel, so the test store sees when it is dropped.
struct ChanBody(mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// `x-test-stream: forever | stall`: see the module doc.
fn stream(shared: Arc<Shared>, forever: bool) -> Response<StoreBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        if forever {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            while tx.send(chunk.clone()).await.is_ok() {}
        } else if tx.send(Bytes::from_static(b"first chunk\n")).await.is_ok() {
            tx.closed().await;
        }
        shared.streams_closed.fetch_add(1, Ordering::SeqCst);
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .body(ChanBody(rx).boxed())
        .expect("valid response")
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<StoreBody>, Infallible> {
    let res = handle_full(shared, req).await?;
    Ok(res.map(|b| match b {
        Either::Left(full) => full.boxed(),
        Either::Right(body) => body,
    }))
}

async fn handle_full(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Either<Full<Bytes>, StoreBody>>, Infallible> {
    match req.headers().get("x-test-stream").map(|v| v.as_bytes()) {
        Some(b"forever") => return Ok(stream(shared, true).map(Either::Right)),
        Some(b"stall") => return Ok(stream(shared, false).map(Either::Right)),
        _ => {}
    }
    let res = handle_inner(shared, req).await?;
    Ok(res.map(Either::Left))
}

async fn handle_inner(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let wants_echo = req.headers().get("upgrade").is_some_and(|v| v == "echo")
        && req
            .headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"upgrade"));
    if wants_echo {
        if req.uri().path() == "/refuse-upgrade" {
            return Ok(reply(403, r#"{"error":"no upgrade here"}"#));
        }
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
            shared.tunnels_closed.fetch_add(1, Ordering::SeqCst);
        });
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        res.headers_mut()
            .insert("upgrade", http::HeaderValue::from_static("echo"));
        res.headers_mut()
            .insert("connection", http::HeaderValue::from_static("upgrade"));
        return Ok(res);
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if parts.method == http::Method::POST && parts.uri.path() == "/flashgate/orders" {
        shared.attempts.fetch_add(1, Ordering::SeqCst);
        if *shared.hanging.borrow() {
            let _held = Held::new(&shared);
            let mut hanging = shared.hanging.subscribe();
            let _ = hanging.wait_for(|h| !*h).await;
            return Ok(reply(503, r#"{"error":"hung, then gave up"}"#));
        }
        let delay = shared.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if shared.failing.load(Ordering::SeqCst) {
            return Ok(reply(503, r#"{"error":"failing on purpose"}"#));
        }
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        shared.orders.lock().unwrap().push(RecordedOrder {
            headers: parts.headers,
            raw: body,
            json,
        });
        return Ok(reply(200, r#"{"ok":true}"#));
    }

    shared.echoed.fetch_add(1, Ordering::SeqCst);
    let knob = |name: &str| -> Option<u64> { parts.headers.get(name)?.to_str().ok()?.parse().ok() };
    if let Some(ms) = knob("x-test-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = knob("x-test-status").map_or(200, |s| u16::try_from(s).unwrap_or(500));
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Ok(reply(status, &echo.to_string()))
}

fn reply(status: u16, json: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_owned())))
        .expect("valid response")
}
