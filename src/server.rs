//! Accept loops (public, admin), connection timeouts and graceful drain; `start` wires
//! the sale (`core`) and its HTTP edge together and starts the sale's background work.
//!
//! `start` binds both listeners (port 0 works, for tests), spawns everything and returns
//! the bound addresses; `run` is `start` + wait for a shutdown signal + drain. Both run on
//! the system clock; `start_with_clock` and `run_with_clock` take the one clock the whole
//! gateway reads (a fake one in tests, moved instead of slept).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::Clock;
use crate::core::{Sale, SetupError};
use crate::http::{self, Edge, EdgeError};
use crate::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Edge(#[from] EdgeError),
}

/// A started gateway: its bound addresses, its sale, and the handle to stop it.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub sale: Sale,
    /// The HTTP edge (identity, proxy): SIGHUP reloads its JWT keys with the campaigns.
    edge: Arc<Edge>,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish under the grace period (then
    /// closes the connections left), closes upgraded connections, stops the background
    /// tasks and waits for the sale's short-lived ones: once it returns, no task of this
    /// gateway is left running.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for h in self.listeners {
            let _ = h.await;
        }
        // A tunnel is no request in flight: nothing to finish, so closed once those are.
        self.edge.close_tunnels().await;
        for h in self.background {
            let _ = h.await;
        }
        self.sale.finish_tasks().await;
    }
}

#[derive(Clone, Copy)]
enum Surface {
    Public,
    Admin,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Starts the gateway on the system clock.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    start_with_clock(cfg, Clock::system()).await
}

/// Starts the gateway on `clock`: campaign windows, rate limits, token expiry, payment
/// timestamps and the expiry sweep all read it.
pub async fn start_with_clock(cfg: Config, clock: Clock) -> Result<Running, StartError> {
    let public = bind(cfg.server.listen).await?;
    let admin = bind(cfg.server.admin_listen).await?;
    let public_addr = public.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.server.listen,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.server.admin_listen,
        source,
    })?;

    let sale = Sale::from_config(&cfg, clock).await?;
    let edge = Arc::new(Edge::new(&cfg, sale.clone())?);
    let (shutdown, rx) = watch::channel(false);
    sale.connect().await;
    let background = sale.spawn_background(&rx);
    let timeout = cfg.server.header_read_timeout.0;
    let grace = cfg.server.shutdown_grace.0;
    let listeners = vec![
        tokio::spawn(accept(
            public,
            Surface::Public,
            edge.clone(),
            timeout,
            grace,
            rx.clone(),
        )),
        tokio::spawn(accept(
            admin,
            Surface::Admin,
            edge.clone(),
            timeout,
            grace,
            rx,
        )),
    ];
    tracing::info!(%public_addr, %admin_addr, campaigns = cfg.campaigns.len(), "flashgate listening");
    Ok(Running {
        public_addr,
        admin_addr,
        sale,
        edge,
        shutdown,
        listeners,
        background,
    })
}

/// Runs until `signal` resolves, then drains. SIGHUP reloads the campaign files.
pub async fn run(
    cfg: Config,
    signal: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    run_with_clock(cfg, Clock::system(), signal).await
}

/// [`run`] on `clock`.
pub async fn run_with_clock(
    cfg: Config,
    clock: Clock,
    signal: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let running = start_with_clock(cfg, clock).await?;
    let edge = running.edge.clone();
    let hup = tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            if let Err(e) = edge.reload().await {
                tracing::error!(error = %e, "reload refused; the running campaigns are unchanged");
            }
        }
    });
    signal.await;
    tracing::info!("shutting down: draining in-flight requests");
    hup.abort();
    let _ = hup.await;
    running.shutdown().await;
    Ok(())
}

async fn accept(
    listener: TcpListener,
    surface: Surface,
    edge: Arc<Edge>,
    header_timeout: Duration,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // hyper-util's GracefulShutdown cannot watch a connection with upgrades; this is the
    // same mechanism: a receiver per connection task, a send to start the drain.
    let (drain, _) = watch::channel(());
    // Every connection's task, so the drain can wait for them and end those left.
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            // Reaps finished connections, so the set holds only the open ones.
            Some(_) = connections.join_next() => continue,
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        // The proxy fires it to drop a connection whose exchange went idle (proxy/idle.rs).
        let close = crate::proxy::CloseConnection::default();
        let svc = service_fn({
            let close = close.clone();
            move |req: hyper::Request<hyper::body::Incoming>| {
                let (edge, close) = (edge.clone(), close.clone());
                async move {
                    Ok::<_, Infallible>(match surface {
                        Surface::Public => http::public(&edge, req, peer.ip(), close).await,
                        Surface::Admin => http::admin::handle(&edge, req).await,
                    })
                }
            }
        });
        // With upgrades: a proxied WebSocket (101 from the store) becomes a tunnel.
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let mut draining = drain.subscribe();
        connections.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = close.fired() => return,
                _ = draining.changed() => {}
            }
            // Finish the request in flight, then close; an idle keep-alive closes at once.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn => {}
                _ = close.fired() => {}
            }
        });
    }
    drop(listener);
    let _ = drain.send(());
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
        connections.shutdown().await;
    }
}
