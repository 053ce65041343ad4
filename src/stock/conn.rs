//! The gateway's Redis connection: one multiplexed connection that pipelines concurrent
//! requests, reconnects by itself, and never blocks a caller while Redis is away.
//!
//! Either a single Redis (`redis.url`, through redis-rs' `ConnectionManager`), the master
//! a set of Sentinels names (`redis.sentinel`: a `ConnectionManager` to it, replaced when
//! they name another), or a Redis Cluster (`redis.cluster_urls`, through
//! `cluster_async::ClusterConnection`, which routes each command by its key's slot and
//! follows MOVED/ASK). All sit behind [`Conn`], so no caller knows which one it talks to;
//! every script and pipeline touches one campaign's keys only, which share a hash tag and
//! so one slot.
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

use arc_swap::ArcSwapOption;
use prometheus::{IntCounter, IntGauge};

use redis::aio::MultiplexedConnection;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Notify;

use super::breaker::{Breaker, Permit};
use super::sentinel::{self, MasterAddr, Sentinels};
use super::StoreError;
use crate::config::RedisConfig;

/// A cheap-to-clone handle on the shared (or a dedicated) Redis connection.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// The shared connection under Sentinel. It never reconnects by itself: an address
    /// that was the master may come back as a stale or empty one (a killed primary
    /// restarting before the sentinels demote it), so only the task that asks the
    /// sentinels, and checks `ROLE`, connects (`RedisConn::find_master`).
    Direct(MultiplexedConnection),
    /// A dedicated connection under Sentinel: reopened to the current master on its next
    /// command after a failover or after it broke, so its long-lived owner never has to
    /// notice.
    Following(Box<FollowingConn>),
}

impl Conn {
    /// Under Sentinel, which master this connection reached last (it counts the masters
    /// followed, so it changes at each failover); 0 for a connection that follows none.
    pub fn generation(&self) -> u64 {
        match self {
            Conn::Following(c) => c.generation,
            _ => 0,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Following(c) => Box::pin(async move {
                let r = c.current().await?.req_packed_command(cmd).await;
                c.note(&r);
                r
            }),
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
            Conn::Direct(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Following(c) => Box::pin(async move {
                let r = c
                    .current()
                    .await?
                    .req_packed_commands(cmd, offset, count)
                    .await;
                c.note(&r);
                r
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
            Conn::Following(c) => c.con.get_db(),
        }
    }
}

/// See [`Conn::Following`].
#[derive(Clone)]
pub struct FollowingConn {
    home: RedisConn,
    /// The [`MasterNode::generation`] `con` is connected to.
    generation: u64,
    con: MultiplexedConnection,
    /// The connection failed (dropped, refused): reopen before the next command.
    broken: bool,
}

impl FollowingConn {
    /// The connection to the current master, reopened first if the master changed or
    /// the connection broke.
    async fn current(&mut self) -> redis::RedisResult<&mut MultiplexedConnection> {
        if self.broken {
            // Ask the sentinels first: the address it had may be a dead master that came
            // back empty or stale before they demoted it.
            self.home.find_master_now().await;
        }
        if let Some(node) = self.home.master() {
            if self.broken || node.generation != self.generation {
                self.con = self.home.direct(&node.client, true).await?;
                self.generation = node.generation;
                self.broken = false;
            }
        }
        Ok(&mut self.con)
    }

    fn note<T>(&mut self, r: &redis::RedisResult<T>) {
        if let Err(e) = r {
            self.broken |=
                e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal();
        }
    }
}

enum Client {
    Single(redis::Client),
    /// One client per response timeout: the hot path's, and the longer one of dedicated
    /// connections (the cluster builder fixes the timeout per client).
    Cluster(Box<ClusterClients>),
    Sentinel(Box<Following>),
}

/// Under Sentinel: who to ask, and the master they named last.
struct Following {
    sentinels: Sentinels,
    master: ArcSwapOption<MasterNode>,
}

struct MasterNode {
    addr: MasterAddr,
    client: redis::Client,
    /// Counts the masters followed so far, so a dedicated connection sees it moved.
    generation: u64,
}

/// How often the sentinels are asked who the master is while all is well; after a
/// failed call they are asked at once, then at most this often.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
const FOLLOW_GAP: Duration = Duration::from_millis(100);

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
    /// Set by `try_connect`; the connection handles reconnects after. Under Sentinel it
    /// is replaced by one to the new master after a failover.
    shared: ArcSwapOption<Conn>,
    /// Woken by a failed call: under Sentinel, time to ask who the master is.
    trouble: Notify,
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
    /// A single Redis at `redis.url`, the master `redis.sentinel` names, or a cluster
    /// reached through any of `redis.cluster_urls`. Failed calls count in `errors`.
    pub fn new(cfg: &RedisConfig, metrics: RedisMetrics) -> Result<RedisConn, StoreError> {
        let timeout = cfg.command_timeout.0;
        let config = |e: redis::RedisError| StoreError::Config(e.to_string());
        // redis-rs builds its rustls configuration from the process-wide provider.
        crate::tls::install_default_provider();
        let urls = cfg.urls();
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
        let client = if let Some(s) = &cfg.sentinel {
            let sentinels = Sentinels::new(s, certs).map_err(config)?;
            Client::Sentinel(Box::new(Following {
                sentinels,
                master: ArcSwapOption::empty(),
            }))
        } else if cfg.cluster_urls.is_empty() {
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
                shared: ArcSwapOption::empty(),
                trouble: Notify::new(),
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

    /// A connection manager for `client`; a dedicated one waits longer for replies.
    async fn manager(
        &self,
        client: &redis::Client,
        dedicated: bool,
    ) -> redis::RedisResult<ConnectionManager> {
        let response = if dedicated {
            dedicated_timeout(self.inner.timeout)
        } else {
            self.inner.timeout
        };
        let cfg = self.manager_config(response);
        ConnectionManager::new_with_config(client.clone(), cfg).await
    }

    /// A plain multiplexed connection to `client` (no reconnecting of its own).
    async fn direct(
        &self,
        client: &redis::Client,
        dedicated: bool,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let response = if dedicated {
            dedicated_timeout(self.inner.timeout)
        } else {
            self.inner.timeout
        };
        let cfg = AsyncConnectionConfig::new()
            .set_response_timeout(response)
            .set_connection_timeout(connect_timeout(self.inner.timeout));
        client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }

    /// Opens a new connection (for the hot path, or a dedicated one).
    async fn open(&self, dedicated: bool) -> redis::RedisResult<Conn> {
        match &self.inner.client {
            Client::Single(client) => self.manager(client, dedicated).await.map(Conn::Single),
            Client::Cluster(c) => {
                let client = if dedicated { &c.dedicated } else { &c.shared };
                client.get_async_connection().await.map(Conn::Cluster)
            }
            Client::Sentinel(_) => {
                let Some(node) = self.master() else {
                    let e = (redis::ErrorKind::IoError, "no master found yet");
                    return Err(e.into());
                };
                let con = self.direct(&node.client, dedicated).await?;
                Ok(match dedicated {
                    true => Conn::Following(Box::new(FollowingConn {
                        home: self.clone(),
                        generation: node.generation,
                        con,
                        broken: false,
                    })),
                    false => Conn::Direct(con),
                })
            }
        }
    }

    /// Under Sentinel, the master followed now.
    fn master(&self) -> Option<Arc<MasterNode>> {
        match &self.inner.client {
            Client::Sentinel(f) => f.master.load_full(),
            _ => None,
        }
    }

    /// Asks the sentinels who the master is; when it is a new one (and it agrees), the
    /// shared connection moves to it, and dedicated ones follow on their next command.
    async fn find_master(&self, f: &Following) -> Result<(), String> {
        let i = &*self.inner;
        let limit = connect_timeout(i.timeout);
        let addr = f.sentinels.master_addr(limit).await?;
        let current = f.master.load_full();
        if current.as_ref().is_some_and(|n| n.addr == addr) && self.shared_answers(limit).await {
            return Ok(());
        }
        let client = f
            .sentinels
            .master_client(&addr)
            .map_err(|e| e.to_string())?;
        let fail = |e: String| format!("master {addr}: {e}");
        let mut con = tokio::time::timeout(limit * 2, self.direct(&client, false))
            .await
            .map_err(|_| fail("connect timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        match tokio::time::timeout(limit, sentinel::is_master(&mut con)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Err(fail("not a master (yet)".into())),
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail("ROLE timed out".into())),
        }
        let generation = current.map_or(1, |n| n.generation + 1);
        tracing::warn!(master = %addr, generation, "redis: following the master the sentinels name");
        f.master.store(Some(Arc::new(MasterNode {
            addr,
            client,
            generation,
        })));
        i.shared.store(Some(Arc::new(Conn::Direct(con))));
        // A new node: the old one's failures say nothing about it.
        i.breaker.reset();
        i.circuit_open.set(0);
        Ok(())
    }

    /// Under Sentinel, asks the sentinels now (for a connection that broke).
    async fn find_master_now(&self) {
        if let Client::Sentinel(f) = &self.inner.client {
            if let Err(why) = self.find_master(f).await {
                tracing::warn!(error = %why, "redis: no master from the sentinels yet");
            }
        }
    }

    /// Whether the shared connection is there and answers `PING` within `limit`.
    async fn shared_answers(&self, limit: Duration) -> bool {
        let Ok(mut con) = self.get() else {
            return false;
        };
        let ping = redis::cmd("PING");
        let answer = tokio::time::timeout(limit, ping.query_async::<()>(&mut con)).await;
        matches!(answer, Ok(Ok(())))
    }

    /// Asks the sentinels about once a second, and soon after a call failed, for ever.
    async fn follow_master(self) {
        let Client::Sentinel(f) = &self.inner.client else {
            return;
        };
        loop {
            if let Err(why) = self.find_master(f).await {
                tracing::warn!(error = %why, "redis: no master from the sentinels yet");
            }
            let trouble = tokio::select! {
                _ = tokio::time::sleep(FOLLOW_EVERY) => false,
                _ = self.inner.trouble.notified() => true,
            };
            if trouble {
                tokio::time::sleep(FOLLOW_GAP).await;
            }
        }
    }

    /// Tries to connect once; returns whether a connection exists now.
    pub async fn try_connect(&self) -> bool {
        if self.inner.shared.load().is_some() {
            return true;
        }
        if let Client::Sentinel(f) = &self.inner.client {
            return match self.find_master(f).await {
                Ok(()) => true,
                Err(why) => {
                    tracing::warn!(error = %why, "redis: no master from the sentinels yet");
                    false
                }
            };
        }
        let limit = connect_timeout(self.inner.timeout) * 2;
        let why = match tokio::time::timeout(limit, self.open(false)).await {
            Ok(Ok(c)) => {
                self.inner.shared.store(Some(Arc::new(c)));
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "connect timed out".to_owned(),
        };
        tracing::warn!(error = %why, "redis: not reachable yet");
        false
    }

    /// Keeps trying to make the first connection until it succeeds; under Sentinel,
    /// keeps following the master for as long as the process runs.
    pub fn connect_in_background(&self) {
        let me = self.clone();
        if let Client::Sentinel(_) = &self.inner.client {
            tokio::spawn(me.follow_master());
            return;
        }
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
            .load()
            .as_deref()
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
        let permit = i.breaker.permit();
        if permit == Permit::Refuse {
            return Err(StoreError::CircuitOpen);
        }
        let result = match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        };
        if let Err(e) = &result {
            i.errors.inc();
            i.trouble.notify_one();
            tracing::warn!(error = %e, "redis call failed; failing closed");
        }
        if i.breaker.record(&permit, &result) {
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
