//! The gateway's Redis connection: one multiplexed connection that pipelines concurrent
//! requests, reconnects by itself, and never blocks a caller while Redis is away.
//!
//! Either a single Redis (`redis.url`, through redis-rs' `ConnectionManager`) or a Redis
//! Cluster (`redis.cluster_urls`, through `cluster_async::ClusterConnection`, which routes
//! each command by its key's slot and follows MOVED/ASK). Both sit behind [`Conn`], so no
//! caller knows which one it talks to; every script and pipeline touches one campaign's
//! keys only, which share a hash tag and so one slot.
//!
//! `rediss://` URLs speak TLS (rustls, `ring`), verified against the system's roots plus
//! `redis.ca_file`; `redis://` ones plain TCP.
//!
//! The first connection is made by a background task so the gateway starts (and answers
//! 503) even when Redis is down at boot; after that, the connection reconnects by itself
//! on the next command after an I/O error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

use super::breaker::{Admit, Breaker};
use super::StoreError;
use crate::config::RedisConfig;

/// A cheap-to-clone handle on the shared (or a dedicated) Redis connection.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Client {
    Single(redis::Client),
    /// One client per response timeout: the hot path's, and the longer one of dedicated
    /// connections (the cluster builder fixes the timeout per client).
    Cluster(Box<ClusterClients>),
}

struct ClusterClients {
    shared: ClusterClient,
    dedicated: ClusterClient,
}

#[derive(Clone)]
pub struct RedisConn {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    timeout: Duration,
    /// Set once, by `try_connect`; the connection handles reconnects after.
    shared: OnceCell<Conn>,
    /// `flashgate_redis_errors_total`: every failed call passes through
    /// [`RedisConn::bounded`], the one place it is counted.
    errors: IntCounter,
    /// Fails calls fast while Redis is unreachable; `circuit_open` shows its state.
    breaker: Breaker,
    circuit_open: IntGauge,
}

/// The metrics a Redis connection keeps.
#[derive(Clone)]
pub struct RedisMetrics {
    /// `flashgate_redis_errors_total`
    pub errors: IntCounter,
    /// `flashgate_redis_circuit_open`: 1 while the breaker refuses calls.
    pub circuit_open: IntGauge,
}

impl RedisConn {
    /// A single Redis at `redis.url`, or a cluster reached through any of
    /// `redis.cluster_urls` (when that list is not empty). Failed calls count in `errors`.
    pub fn new(cfg: &RedisConfig, metrics: RedisMetrics) -> Result<RedisConn, StoreError> {
        let timeout = cfg.command_timeout.0;
        let config = |e: redis::RedisError| StoreError::Config(e.to_string());
        // redis-rs builds its rustls configuration from the process-wide provider.
        crate::tls::install_default_provider();
        let urls = match cfg.cluster_urls.is_empty() {
            true => std::slice::from_ref(&cfg.url),
            false => cfg.cluster_urls.as_slice(),
        };
        // redis-rs takes the roots as PEM and trusts only those it is given: the same set
        // as the store's (system + ca_file). It still reads the system store itself on
        // each connect (and refuses to connect if a certificate there cannot be read).
        let certs = if urls.iter().any(|u| u.starts_with("rediss://")) {
            let roots = crate::tls::roots_pem(cfg.ca_file.as_deref())
                .map_err(|e| StoreError::Config(format!("redis TLS: {e}")))?;
            Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(roots),
            })
        } else {
            None
        };
        let client = if cfg.cluster_urls.is_empty() {
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(cfg.url.as_str(), certs),
                None => redis::Client::open(cfg.url.as_str()),
            };
            Client::Single(client.map_err(config)?)
        } else {
            let build = |response: Duration| {
                let mut builder = ClusterClientBuilder::new(cfg.cluster_urls.clone())
                    .connection_timeout(connect_timeout(timeout))
                    .response_timeout(response)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(200);
                if let Some(certs) = &certs {
                    builder = builder.certs(certs.clone());
                }
                builder.build().map_err(config)
            };
            Client::Cluster(Box::new(ClusterClients {
                shared: build(timeout)?,
                dedicated: build(dedicated_timeout(timeout))?,
            }))
        };
        Ok(RedisConn {
            inner: Arc::new(Inner {
                client,
                timeout,
                shared: OnceCell::new(),
                errors: metrics.errors,
                breaker: Breaker::new(cfg.cluster_urls.is_empty()),
                circuit_open: metrics.circuit_open,
            }),
        })
    }

    /// The command timeout every call is bounded by.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    fn manager_config(&self, response: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_response_timeout(response)
            .set_connection_timeout(connect_timeout(self.inner.timeout))
            .set_number_of_retries(1)
            .set_factor(50)
            .set_max_delay(500)
    }

    /// Opens a new connection whose commands time out after `response`.
    async fn open(&self, dedicated: bool) -> redis::RedisResult<Conn> {
        match &self.inner.client {
            Client::Single(client) => {
                let response = if dedicated {
                    dedicated_timeout(self.inner.timeout)
                } else {
                    self.inner.timeout
                };
                let cfg = self.manager_config(response);
                ConnectionManager::new_with_config(client.clone(), cfg)
                    .await
                    .map(Conn::Single)
            }
            Client::Cluster(c) => {
                let client = if dedicated { &c.dedicated } else { &c.shared };
                client.get_async_connection().await.map(Conn::Cluster)
            }
        }
    }

    /// Tries to connect once; returns whether a connection exists now.
    pub async fn try_connect(&self) -> bool {
        if self.inner.shared.initialized() {
            return true;
        }
        let limit = connect_timeout(self.inner.timeout) * 2;
        let why = match tokio::time::timeout(limit, self.open(false)).await {
            Ok(Ok(c)) => {
                let _ = self.inner.shared.set(c);
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_owned(),
        };
        tracing::warn!(error = %why, "redis: not reachable yet");
        false
    }

    /// Keeps trying to make the first connection until it succeeds.
    pub fn connect_in_background(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            while !me.try_connect().await {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }

    /// A handle to the shared connection, or `Unavailable` at once when there is none yet.
    pub fn get(&self) -> Result<Conn, StoreError> {
        self.inner
            .shared
            .get()
            .cloned()
            .ok_or(StoreError::NotConnected)
    }

    /// A separate connection for blocking or long-running background work, so it never
    /// queues behind (or in front of) the hot path's pipelined commands.
    pub async fn dedicated(&self) -> Result<Conn, StoreError> {
        self.bounded(self.inner.timeout * 4, async { Ok(self.open(true).await?) })
            .await
    }

    /// Runs a Redis call under a deadline; a timeout means the outcome is unknown. The
    /// one place failed calls are counted, so `flashgate_redis_errors_total` is exact,
    /// and the circuit breaker's gate: while it is open, calls fail at once.
    pub async fn bounded<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let i = &*self.inner;
        let admitted = i.breaker.admit();
        if admitted == Admit::Refuse {
            return Err(StoreError::CircuitOpen);
        }
        let result = match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        };
        if let Err(e) = &result {
            i.errors.inc();
            tracing::warn!(error = %e, "redis call failed; failing closed");
        }
        if i.breaker.record(&admitted, &result) {
            tracing::warn!(
                "redis unreachable: circuit open, buys get 503 at once until a probe succeeds"
            );
        }
        i.circuit_open.set(i64::from(i.breaker.is_open()));
        result
    }
}

fn connect_timeout(command: Duration) -> Duration {
    command.max(Duration::from_millis(500))
}

fn dedicated_timeout(command: Duration) -> Duration {
    command.max(Duration::from_secs(5))
}
