//! The gateway's Redis connection: one multiplexed connection that pipelines concurrent
//! requests, reconnects by itself, and never blocks a caller while Redis is away.
//!
//! The first connection is made by a background task so the gateway starts (and answers
//! 503) even when Redis is down at boot; after that, redis-rs' `ConnectionManager`
//! reconnects on the next command after an I/O error.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::StoreError;

#[derive(Clone)]
pub struct RedisConn {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    timeout: Duration,
    /// Set once, by `connect_in_background`; `ConnectionManager` handles reconnects after.
    manager: OnceCell<ConnectionManager>,
}

impl RedisConn {
    pub fn new(url: &str, timeout: Duration) -> Result<RedisConn, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(RedisConn {
            inner: Arc::new(Inner {
                client,
                timeout,
                manager: OnceCell::new(),
            }),
        })
    }

    /// The command timeout every call is bounded by.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_response_timeout(self.inner.timeout)
            .set_connection_timeout(self.inner.timeout.max(Duration::from_millis(500)))
            .set_number_of_retries(1)
            .set_factor(50)
            .set_max_delay(500)
    }

    /// Tries to connect once; returns whether a connection exists now.
    pub async fn try_connect(&self) -> bool {
        if self.inner.manager.initialized() {
            return true;
        }
        let made =
            ConnectionManager::new_with_config(self.inner.client.clone(), self.manager_config())
                .await;
        match made {
            Ok(m) => {
                let _ = self.inner.manager.set(m);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis: not reachable yet");
                false
            }
        }
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
    pub fn get(&self) -> Result<ConnectionManager, StoreError> {
        self.inner
            .manager
            .get()
            .cloned()
            .ok_or(StoreError::Unavailable("not connected".into()))
    }

    /// A separate connection for blocking or long-running background work, so it never
    /// queues behind (or in front of) the hot path's pipelined commands.
    pub async fn dedicated(&self) -> Result<ConnectionManager, StoreError> {
        let cfg = self
            .manager_config()
            .set_response_timeout(self.inner.timeout.max(Duration::from_secs(5)));
        bounded(
            self.inner.timeout * 4,
            ConnectionManager::new_with_config(self.inner.client.clone(), cfg),
        )
        .await
    }
}

/// Runs a Redis future under a deadline; a timeout means the outcome is unknown.
pub async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StoreError::from(e)),
        Err(_) => Err(StoreError::Unavailable("redis command timed out".into())),
    }
}
