//! What can go wrong talking to Redis. The Redis error itself is kept (not flattened to a
//! string), so callers ask for its code instead of matching on message text.

/// A failed Redis call. Every variant means "the outcome is unknown or nothing was done":
/// the caller fails closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis command timed out")]
    Timeout,
    #[error("redis not connected")]
    NotConnected,
    #[error("redis unreachable; failing fast until a probe gets through")]
    CircuitOpen,
    #[error("redis configuration: {0}")]
    Config(String),
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    #[error("only {acked} of {wanted} replicas confirmed the write in time")]
    NotReplicated { acked: u32, wanted: u32 },
}

impl StoreError {
    /// The same failure again, for each caller that shared one failed call (a batch).
    pub fn again(&self) -> StoreError {
        match self {
            StoreError::Redis(e) => StoreError::Redis(redis::RedisError::from((
                e.kind(),
                "a batched call failed",
                e.to_string(),
            ))),
            StoreError::Timeout => StoreError::Timeout,
            StoreError::NotConnected => StoreError::NotConnected,
            StoreError::CircuitOpen => StoreError::CircuitOpen,
            StoreError::Config(m) => StoreError::Config(m.clone()),
            StoreError::Protocol(m) => StoreError::Protocol(m.clone()),
            StoreError::NotReplicated { acked, wanted } => StoreError::NotReplicated {
                acked: *acked,
                wanted: *wanted,
            },
        }
    }

    /// Whether Redis could not be reached (timeouts, I/O errors, no connection, the
    /// breaker open), as opposed to Redis answering with an error.
    pub fn unreachable(&self) -> bool {
        match self {
            StoreError::Timeout | StoreError::NotConnected | StoreError::CircuitOpen => true,
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
            }
            StoreError::Config(_) | StoreError::Protocol(_) | StoreError::NotReplicated { .. } => {
                false
            }
        }
    }

    /// Whether a call that failed so may still have run in Redis: anything but a call
    /// that was never sent (no connection, the breaker open, a bad configuration).
    pub fn may_have_run(&self) -> bool {
        !matches!(
            self,
            StoreError::NotConnected | StoreError::CircuitOpen | StoreError::Config(_)
        )
    }

    /// The server's error code (`NOGROUP`, `BUSYGROUP`, `NOSCRIPT`, …), if Redis answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            StoreError::Redis(e) => e.code(),
            _ => None,
        }
    }
}
