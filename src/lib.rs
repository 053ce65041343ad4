//! # flashgate — a flash-sale (seckill) gateway
//!
//! Stands in front of a store: buy requests for a running campaign are answered here
//! (rate limits → one atomic Redis Lua reservation → a pre-order with a payment deadline);
//! everything else is proxied to the store untouched. `../SPEC.md` is the contract.
//!
//! # Layout
//! ```text
//! config      gateway + campaign TOML → validated Config (errors name file:line:col)
//! identity    JWT / trusted header → user id; client IP through trusted proxies
//! limit       governor keyed limiters (per IP, per user), inflight cap
//! campaign    registry of campaigns (reloadable), windows, local sold-out flags
//! stock       the only module that knows Redis keys and lua/*.lua; typed results
//! orders      pre-order lifecycle: expiry sweeper, payment confirmation, outbox consumer
//! sink        where paid orders go: http, postgres — one trait, one file each
//! proxy       pass-through to the store
//! metrics     the Prometheus registry and its families
//! http        router + one file per surface; problem.rs maps errors to problem+json
//! server      accept loops (public, admin), timeouts, graceful drain
//! ```
//! Arrows go one way: `http` → domain (`limit`, `campaign`, `stock`, `orders`) → `config`.

pub mod campaign;
pub mod config;
pub mod http;
pub mod identity;
pub mod limit;
pub mod metrics;
pub mod orders;
pub mod proxy;
pub mod server;
pub mod sink;
pub mod stock;

pub use config::Config;
pub use server::{run, start, Running};
