//! Accept loops (public, admin), connection timeouts, background tasks and graceful drain.
//!
//! `start` binds both listeners (port 0 works, for tests), spawns everything and returns
//! the bound addresses; `run` is `start` + wait for a shutdown signal + drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::campaign::Registry;
use crate::http::{self, App};
use crate::identity::{ClientIp, Identity};
use crate::limit::{Inflight, Limiters};
use crate::metrics::Metrics;
use crate::orders::payment::SignatureVerifier;
use crate::orders::{outbox, sweeper};
use crate::proxy::Proxy;
use crate::stock::Store;
use crate::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::IdentityError),
    #[error("upstream: {0}")]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("redis: {0}")]
    Store(#[from] crate::stock::StoreError),
    #[error("orders sink: {0}")]
    Sink(#[from] crate::sink::SinkError),
}

/// A started gateway: its bound addresses and the handle to stop it.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish under the grace period, stops the
    /// background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for h in self.listeners {
            let _ = h.await;
        }
        for h in self.background {
            let _ = h.await;
        }
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

pub async fn start(cfg: Config) -> Result<Running, StartError> {
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

    let store = Store::new(&cfg.redis)?;
    let metrics = Metrics::new();
    let registry = Registry::new(&cfg.redis.key_prefix, &cfg.campaigns);
    let limiters = Limiters::new(&cfg.limits);
    let sink = crate::sink::from_config(&cfg).await?;
    let app = Arc::new(App {
        identity: Identity::from_config(&cfg.identity, &cfg.secrets)?,
        client_ip: ClientIp::new(&cfg.server.trusted_proxies),
        inflight: Inflight::new(cfg.server.max_inflight),
        proxy: Proxy::new(&cfg.upstream)?,
        payments: SignatureVerifier::new(
            cfg.secrets.payment_secret.as_deref(),
            cfg.payment.tolerance.0,
        ),
        admin_token: cfg.secrets.admin_token.clone(),
        campaigns_dir: cfg.campaigns_dir.clone(),
        max_body: cfg.server.max_body_bytes,
        body_timeout: cfg.server.header_read_timeout.0.max(Duration::from_secs(1)),
        registry: registry.clone(),
        store: store.clone(),
        limiters: limiters.clone(),
        metrics: metrics.clone(),
        stock_loaded: Default::default(),
    });
    if cfg.secrets.payment_secret.is_none() {
        tracing::warn!(env = %cfg.payment.secret_env, "no payment secret set: every payment callback will get 401");
    }

    let (shutdown, rx) = watch::channel(false);
    // Connect before serving when Redis is there (no 503s at boot); when it is not, serve
    // anyway (failing closed) and keep trying in the background.
    let connected = store.conn().try_connect().await;
    if !connected {
        store.conn().connect_in_background();
    } else if app.store.ready().await.is_ok() && http::admin::load_stock(&app).await.is_ok() {
        app.stock_loaded
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let background = vec![
        tokio::spawn(bootstrap(app.clone(), rx.clone())), // returns at once when start() loaded stock
        tokio::spawn(refresh(app.clone(), rx.clone())),
        tokio::spawn(sweeper::run(
            store.clone(),
            registry.clone(),
            metrics.clone(),
            cfg.orders.sweep_interval.0,
            rx.clone(),
        )),
        tokio::spawn(
            outbox::Consumer {
                store,
                registry,
                metrics,
                sink,
                cfg: cfg.orders.clone(),
                name: outbox::consumer_name(),
            }
            .run(rx.clone()),
        ),
        limiters.spawn_gc(Duration::from_secs(10), rx.clone()),
    ];
    let timeout = cfg.server.header_read_timeout.0;
    let grace = cfg.server.shutdown_grace.0;
    let listeners = vec![
        tokio::spawn(accept(
            public,
            Surface::Public,
            app.clone(),
            timeout,
            grace,
            rx.clone(),
        )),
        tokio::spawn(accept(
            admin,
            Surface::Admin,
            app.clone(),
            timeout,
            grace,
            rx,
        )),
    ];
    tracing::info!(%public_addr, %admin_addr, campaigns = cfg.campaigns.len(), "flashgate listening");
    Ok(Running {
        public_addr,
        admin_addr,
        app,
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
    let running = start(cfg).await?;
    let app = running.app.clone();
    let hup = tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            if let Err(e) = http::admin::reload(&app).await {
                tracing::error!(error = %e, "reload refused; the running campaigns are unchanged");
            }
        }
    });
    signal.await;
    tracing::info!("shutting down: draining in-flight requests");
    hup.abort();
    running.shutdown().await;
    Ok(())
}

async fn accept(
    listener: TcpListener,
    surface: Surface,
    app: Arc<App>,
    header_timeout: Duration,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // hyper-util's GracefulShutdown cannot watch a connection with upgrades; this is the
    // same mechanism: a receiver per connection task, a send to start the drain.
    let (drain, _) = watch::channel(());
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
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc = service_fn(move |req| {
            let app = app.clone();
            async move {
                Ok::<_, Infallible>(match surface {
                    Surface::Public => http::public(&app, req, peer.ip()).await,
                    Surface::Admin => http::admin::handle(&app, req).await,
                })
            }
        });
        // With upgrades: a proxied WebSocket (101 from the store) becomes a tunnel.
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let mut draining = drain.subscribe();
        tokio::spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = draining.changed() => {}
            }
            // Finish the request in flight, then close; an idle keep-alive closes at once.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
            drop(draining);
        });
    }
    drop(listener);
    // Every connection task holds a receiver: once all are gone, the drain is complete.
    let _ = drain.send(());
    if tokio::time::timeout(grace, drain.closed()).await.is_err() {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
}

/// Once Redis answers: load scripts and the campaigns' stock (only where absent).
async fn bootstrap(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if app.stock_loaded.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if app.store.ready().await.is_ok() && http::admin::load_stock(&app).await.is_ok() {
            app.stock_loaded
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Once a second: per-item `remaining` for the public view and the gauges.
async fn refresh(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        app.metrics.inflight.set(app.inflight.current() as i64);
        app.metrics.limiter_keys.set(app.limiters.len() as i64);
        if app.store.conn().get().is_err() {
            continue;
        }
        let snapshot = app.registry.snapshot();
        for c in snapshot.values() {
            if let Ok(paused) = app.store.paused(&c.keys).await {
                c.paused.store(paused, std::sync::atomic::Ordering::Relaxed);
            }
            let keys: Vec<String> = c.items.iter().map(|i| i.key.clone()).collect();
            if let Ok(stats) = app.store.item_stats(&keys).await {
                for (i, s) in c.items.iter().zip(stats) {
                    i.remaining
                        .store(s.remaining, std::sync::atomic::Ordering::Relaxed);
                    app.metrics
                        .stock_remaining
                        .with_label_values(&[&c.cfg.id, &i.sku])
                        .set(s.remaining);
                }
            }
        }
        let (mut pending, mut dead) = (0, 0);
        for (_, keys) in app
            .store
            .known_campaigns(app.registry.ids())
            .await
            .unwrap_or_default()
        {
            if let Ok((p, d)) = app.store.outbox_counts(&keys).await {
                pending += p;
                dead += d;
            }
        }
        app.metrics.outbox_pending.set(pending as i64);
        app.metrics.outbox_dead.set(dead as i64);
    }
}
