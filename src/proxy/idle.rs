//! `upstream.idle_timeout`: a proxied exchange in which no byte moves either way for that
//! long is closed on both sides, so a client that stops reading (or a store that stops
//! writing) cannot pin a store connection and a client connection forever.
//!
//! Bytes are seen where they move: a frame of the client's request body taken by the
//! store connection, a frame of the store's response body taken by the client connection
//! (hyper takes the next frame only once the client's socket accepted the previous ones,
//! so a client that stops reading stops the clock), and reads and writes of an upgraded
//! tunnel. One [`Exchange`] per proxied request holds the time of the last move.
//!
//! Closing: a watchdog task per streamed response waits for the deadline. When it passes,
//! the response body fails on its next poll and the [`CloseConnection`] signal the
//! server put into the request's extensions fires; the server then drops the client
//! connection, which drops the response body and with it the store connection. A tunnel
//! owns both of its connections and simply drops them.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client connection's off switch. The server makes one per connection; the edge puts
/// a clone into each proxied request's extensions, and the proxy fires it to have the
/// connection dropped (neither side of a stalled exchange can be closed from inside hyper).
#[derive(Clone, Default)]
pub struct CloseConnection(Arc<Notify>);

impl CloseConnection {
    pub fn fire(&self) {
        // `notify_one` keeps a permit when nobody waits yet: a signal is never lost.
        self.0.notify_one();
    }

    /// Resolves once [`fire`](Self::fire) was called.
    pub async fn fired(&self) {
        self.0.notified().await;
    }
}

/// The shared state of one proxied exchange.
#[derive(Clone)]
pub(super) struct Exchange(Arc<State>);

struct State {
    started: Instant,
    /// Milliseconds from `started` to the last byte moved (atomics: both bodies and the
    /// watchdog touch it from different tasks).
    last_move_ms: AtomicU64,
    /// The watchdog gave up on the exchange.
    expired: AtomicBool,
    /// The client's request body failed (bad chunk framing, a reset): the client's fault,
    /// whatever error the store connection then reports.
    client_body_failed: AtomicBool,
}

impl Exchange {
    pub(super) fn new() -> Exchange {
        Exchange(Arc::new(State {
            started: Instant::now(),
            last_move_ms: AtomicU64::new(0),
            expired: AtomicBool::new(false),
            client_body_failed: AtomicBool::new(false),
        }))
    }

    pub(super) fn moved(&self) {
        // Saturates after 584 million years.
        let ms = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_move_ms.store(ms, Ordering::Relaxed);
    }

    fn deadline(&self, idle: Duration) -> Instant {
        let last = Duration::from_millis(self.0.last_move_ms.load(Ordering::Relaxed));
        self.0.started + last + idle
    }

    pub(super) fn client_body_failed(&self) -> bool {
        self.0.client_body_failed.load(Ordering::Relaxed)
    }

    /// Resolves once nothing has moved for `idle`.
    pub(super) async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.deadline(idle);
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Watches a streamed response: when it has been idle too long, its body fails and
    /// `close` fires. Ends when the body ends or is dropped (`done`).
    pub(super) fn watch(
        &self,
        idle: Duration,
        close: Option<CloseConnection>,
        request_id: Option<&str>,
    ) -> oneshot::Sender<()> {
        let (done, mut finished) = oneshot::channel::<()>();
        let exchange = self.clone();
        let request_id = request_id.map(str::to_owned);
        // Detached: it ends with the body it watches (`done`), which the connection's
        // task owns, so it never outlives that task by more than a wake-up.
        tokio::spawn(async move {
            tokio::select! {
                // Sent or dropped: the body is done either way.
                _ = &mut finished => {}
                _ = exchange.idle_for(idle) => {
                    // The body may have ended in the same instant: then the connection
                    // is healthy, and firing would cut its next request.
                    if !matches!(finished.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
                        return;
                    }
                    exchange.0.expired.store(true, Ordering::Relaxed);
                    if let Some(close) = close {
                        close.fire();
                    }
                    tracing::info!(?idle, request_id, "proxied exchange idle too long; closed");
                }
            }
        });
        done
    }
}

// === bodies ===

pin_project_lite::pin_project! {
    /// The client's request body on its way to the store: counts moves and remembers a
    /// failure.
    pub(super) struct RequestBody<B> {
        #[pin]
        inner: B,
        exchange: Exchange,
    }
}

impl<B> RequestBody<B> {
    pub(super) fn new(inner: B, exchange: Exchange) -> Self {
        RequestBody { inner, exchange }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.exchange.moved();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.exchange
                    .0
                    .client_body_failed
                    .store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(e.into())))
            }
            other => other.map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no bytes moved within upstream.idle_timeout")]
pub(super) struct IdleTimeout;

pin_project_lite::pin_project! {
    /// The store's response body on its way to the client: counts moves, fails once the
    /// watchdog expired the exchange, and tells the watchdog when it is done.
    pub(super) struct ResponseBody<B> {
        #[pin]
        inner: B,
        exchange: Exchange,
        done: Option<oneshot::Sender<()>>,
    }
}

impl<B> ResponseBody<B> {
    pub(super) fn new(inner: B, exchange: Exchange, done: oneshot::Sender<()>) -> Self {
        ResponseBody {
            inner,
            exchange,
            done: Some(done),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes, Error = hyper::Error>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if this.exchange.0.expired.load(Ordering::Relaxed) {
            this.done.take();
            return Poll::Ready(Some(Err(IdleTimeout.into())));
        }
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => this.exchange.moved(),
            Poll::Ready(None | Some(Err(_))) => {
                this.done.take();
            }
            Poll::Pending => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === tunnels ===

/// One side of an upgraded tunnel: counts every byte read or written.
pub(super) struct TunnelSide<T> {
    io: T,
    exchange: Exchange,
}

impl<T> TunnelSide<T> {
    pub(super) fn new(io: T, exchange: Exchange) -> Self {
        TunnelSide { io, exchange }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TunnelSide<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.exchange.moved();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TunnelSide<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.exchange.moved();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
