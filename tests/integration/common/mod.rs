//! The shared integration-test harness: `crate::common` in every module of the
//! integration-test binary (`tests/integration/`).
//!
//! Real dependencies, never mocks of them: each test starts its own `redis-server`
//! ([`RedisServer`]), PostgreSQL cluster ([`Postgres`]), RabbitMQ broker ([`RabbitMq`])
//! and fake store ([`TestStore`])
//! on free loopback ports, writes its configuration as TOML ([`TestConfig`]) and talks
//! HTTP through one shared client ([`send`]). Missing system binaries make tests panic
//! with an install hint — they never skip. `./scripts/test.sh` installs them.
//!
//! Its items are `pub` for the test modules, not an API, hence the `allow`.
#![allow(unreachable_pub)]

mod client;
mod config;
mod gateway;
mod keys;
mod postgres;
mod process;
mod rabbitmq;
mod redis_cluster;
mod redis_proxy;
mod redis_sentinel;
mod redis_server;
mod store;

pub use client::{send, try_send, TestResponse};
pub use config::{CampaignSpec, TestConfig, ADMIN_TOKEN, JWT_SECRET, PAYMENT_SECRET, SINK_SECRET};
pub use gateway::Gateway;
pub use keys::{jwks, SigningKey, TestCa};
pub use postgres::Postgres;
pub use process::{sigterm, wait_or_kill};
pub use rabbitmq::{RabbitMq, Received};
pub use redis_cluster::RedisCluster;
pub use redis_proxy::RedisProxy;
pub use redis_sentinel::{in_sync, SentinelTrio};
pub use redis_server::RedisServer;
pub use store::{RecordedOrder, TestStore};

use hmac::Mac;
use sha2::Sha256;

/// An HS256 JWT for `user` (`sub`), valid for an hour, signed with [`JWT_SECRET`].
pub fn jwt(user: &str) -> String {
    jwt_with(user, JWT_SECRET, 3600)
}

/// An HS256 JWT for `user` signed with `secret`, expiring `expires_in` seconds from now
/// (negative: already expired).
pub fn jwt_with(user: &str, secret: &str, expires_in: i64) -> String {
    let claims = serde_json::json!({ "sub": user, "exp": unix_now() + expires_in });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode JWT")
}

/// `Authorization` header value for `user`.
pub fn bearer(user: &str) -> String {
    format!("Bearer {}", jwt(user))
}

/// A `Flashgate-Signature` value: `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign_callback(secret: &str, body: &[u8], t: i64) -> String {
    let mut mac = Hmac::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` (`t=..,v1=..`) is a valid signature of `body` under `secret`, for
/// checking what the gateway sends to the sink. Ignores the timestamp's age.
pub fn verify_signature(secret: &str, header: &str, body: &[u8]) -> bool {
    let t = header
        .split(',')
        .find_map(|kv| kv.strip_prefix("t="))
        .and_then(|t| t.parse::<i64>().ok());
    let Some(t) = t else { return false };
    let expected = sign_callback(secret, body, t);
    let expected_v1 = expected.split_once(",v1=").map(|(_, v)| v);
    header
        .split(',')
        .filter_map(|kv| kv.strip_prefix("v1="))
        .any(|v1| Some(v1) == expected_v1)
}

type Hmac = hmac::Hmac<Sha256>;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` naming
/// `what`. For waiting on background work (sink deliveries, expiry) without fixed sleeps.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The demo store (`examples/demo_store.rs`), built next to this test binary: `cargo test`
/// (and `scripts/test.sh`) build examples with the tests; panics with the command if not.
pub fn demo_store_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> → target/<profile>/examples/demo_store
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("examples").join("demo_store");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --release --examples` (cargo test builds it with the tests)",
        bin.display()
    );
    bin
}
