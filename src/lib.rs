//! # flashgate — a flash-sale (seckill) gateway
//!
//! Stands in front of a store: buy requests for a running campaign are answered here
//! (rate limits → one atomic Redis Lua reservation → a pre-order with a payment deadline);
//! everything else is proxied to the store untouched. `docs/api.md` is the manual of the
//! HTTP contract, `docs/configuration.md` of the command line and configuration.
//!
//! # Layout
//! ```text
//! main        the binary: command line, logging, load config, run
//! server      accept loops (public, admin), connection timeouts, graceful drain; wires it up
//! http        the edge: router + one file per surface (seckill, orders, payments, admin);
//!             problem.rs is the ONE map from errors to status + problem+json
//! core        the sale below HTTP: `Sale` (buy, order, cancel, confirm_payment,
//!             adjust_stock, pause/resume, reload, load_stock, ledgers, outbox) and its
//!             background work (bootstrap, refresh, expiry sweeper, outbox consumer)
//! campaign    registry of running campaigns (reloadable), windows, local sold-out flags
//! limits      rate limits: governor keyed limiters (per IP, per user), inflight cap
//! identity    JWT (HS256 / RS256 / ES256) / trusted header → user id; client IP through
//!             trusted proxies; identity/jwks.rs: RS256 / ES256 public keys (PEM or JWKS)
//! json        request bodies are JSON objects: the one parser handlers use
//! stock       the only module that knows Redis keys and lua/*.lua; typed results
//! sink        where paid orders go: http, postgres, rabbitmq — one trait, one file each
//! proxy       pass-through to the store; typed errors the edge maps; the trust rule for
//!             forwarding headers; the idle timeout
//! draw        the draws' arithmetic: the seed, its commitment, tickets, the instant
//!             draw's threshold; the raffle itself is core/raffle.rs, stock/raffle.rs
//!             and lua/draw.lua
//! tls         rustls: roots (system + ca_file) for an https store and sink, rediss:// Redis,
//!             PostgreSQL, amqps:// RabbitMQ
//! signature   the Flashgate-Signature HMAC scheme (callbacks in, sink requests out)
//! metrics     the Prometheus registry and its families
//! clock       injected wall clock (system, or a fake tests move)
//! config      gateway + campaign TOML → validated Config (errors name file:line:col)
//! ```
//! Imports run one way: `main → server → http → core → {campaign, limits, identity,
//! stock, sink, proxy} → config`; `draw`, `signature`, `metrics`, `clock`, `json`
//! and `tls` are leaves anyone may use. Where to find a behaviour of docs/api.md: the buy and its order of checks in
//! `core/buy.rs`; orders and payments in `core/orders.rs`; admin actions in
//! `core/operate.rs`; status codes and slugs in `http/problem.rs`; Redis keys and
//! scripts in `stock/` and `lua/`.

// Numeric casts that can truncate, wrap or drop a sign are spelled out (`try_from`) or
// allowed where the value is known to fit, with the reason beside the allow. Product code
// only: the tests' arithmetic is on numbers they made themselves.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

pub mod campaign;
pub mod clock;
pub mod config;
pub mod core;
pub mod draw;
pub mod http;
pub mod identity;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod signature;
pub mod sink;
pub mod stock;
pub mod tls;

pub use config::Config;
pub use server::{run, run_with_clock, start, start_with_clock, Running};
