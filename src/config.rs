//! Gateway and campaign configuration: TOML → validated, typed config.
//!
//! Owns parsing (`gateway.toml` + `campaigns/*.toml`), validation and secret lookup.
//! `serve` and `check` load through the same [`Config::check`], so they accept and
//! refuse exactly the same files. One pass reports every problem — syntax, types,
//! unknown and missing keys, then the rules beyond the types — each at its
//! `file:line:col` with the field's path. Secrets come only from the environment
//! variables the TOML names, through an injected lookup (tests leave the process alone).
//!
//! A file is parsed by `doc` (every key and value spanned), read into the structs below
//! by `de` through their own serde derives (a wrong or missing value is noted and
//! replaced by a stand-in, so reading goes on), checked by `gateway` / `campaign` /
//! `secrets`, and each problem worded and placed by `diagnostics`.
//!
//! # Adding a key
//!
//! Add a field to its table's struct (gateway.toml's below, a campaign's in
//! `campaign.rs`) with its serde attributes; that is the whole parsing side. A field
//! that is an `Option` or has `#[serde(default = ...)]` is optional, any other required
//! ("missing required key"); `deny_unknown_fields` makes a misspelt key an error with a
//! suggestion; a wrong type or value is reported at the value. A rule beyond the type
//! (a range, a key that needs another) goes in the file's checks (`gateway::validate`,
//! `campaign::parse_campaign`): report it through `Diag` with the field's path, and
//! guard a rule that reads other keys with `Diag::sound`, so it stays silent about a
//! value already reported wrong. A new kind of value goes in `values.rs`; one parsed
//! from text also needs a non-human-readable form, which the stand-in takes (see
//! [`HumanDuration`]). Then document the key (and whether it is required) in
//! `docs/configuration.md` and the `config/` examples.

mod campaign;
mod de;
mod diagnostics;
mod doc;
mod gateway;
mod secrets;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use time::OffsetDateTime;
use toml::Spanned;

pub use campaign::{load_campaigns, valid_id, Admission, Campaign, Item};
pub use diagnostics::ConfigError;
pub use secrets::{process_env, EnvLookup, SecretSource, Secrets};
pub use values::{HumanDuration, RateSpec};

use values::de_cidrs;

// === gateway.toml ===

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    #[serde(default = "d_header_timeout")]
    pub header_read_timeout: HumanDuration,
    #[serde(default = "d_max_body")]
    pub max_body_bytes: usize,
    #[serde(default, deserialize_with = "de_cidrs")]
    pub trusted_proxies: Vec<IpNet>,
    #[serde(default = "d_max_inflight")]
    pub max_inflight: usize,
    /// Extension: how long in-flight requests may run after SIGTERM before we exit.
    #[serde(default = "d_grace")]
    pub shutdown_grace: HumanDuration,
}

fn d_header_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn d_max_body() -> usize {
    16384
}
fn d_max_inflight() -> usize {
    20000
}
fn d_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(default = "d_redis_url")]
    pub url: String,
    #[serde(default)]
    pub cluster_urls: Vec<String>,
    #[serde(default = "d_prefix")]
    pub key_prefix: String,
    #[serde(default = "d_cmd_timeout")]
    pub command_timeout: HumanDuration,
    /// Extra trust roots (PEM) for a `rediss://` Redis, on top of the system's. Only
    /// with `rediss://` URLs. Relative to the gateway file; resolved and checked by
    /// [`Config::load`].
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Extension: a payment callback is answered 2xx only once `WAIT` confirms this many
    /// replicas have its writes (0: not waited for). Asynchronous replication can lose
    /// an acknowledged write in a failover; this closes that window for paid orders.
    #[serde(default)]
    pub replica_ack: u32,
    /// Extension: Redis behind Sentinel, instead of `url`. The gateway asks the
    /// sentinels which node is the master and follows it through failovers.
    #[serde(default)]
    pub sentinel: Option<SentinelConfig>,
}

/// `redis.sentinel = { master = "…", urls = ["redis://…:26379", …] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the master under (`sentinel monitor <name> …`).
    pub master: String,
    /// The sentinels, asked in this order. The master is reached the way they are: the
    /// same scheme (`rediss://` is TLS), credentials and database.
    pub urls: Vec<String>,
}

impl RedisConfig {
    /// The URLs the gateway dials first: the sentinels, the cluster's seeds, or `url`.
    pub fn urls(&self) -> &[String] {
        match (&self.sentinel, self.cluster_urls.is_empty()) {
            (Some(s), _) => &s.urls,
            (None, false) => &self.cluster_urls,
            (None, true) => std::slice::from_ref(&self.url),
        }
    }

    /// The field [`RedisConfig::urls`] comes from, for messages.
    pub fn urls_field(&self) -> &'static str {
        match (&self.sentinel, self.cluster_urls.is_empty()) {
            (Some(_), _) => "redis.sentinel.urls",
            (None, false) => "redis.cluster_urls",
            (None, true) => "redis.url",
        }
    }
}

fn d_redis_url() -> String {
    "redis://127.0.0.1:6379/0".into()
}
fn d_prefix() -> String {
    "fg".into()
}
fn d_cmd_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(250))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub url: String,
    #[serde(default = "d_upstream_timeout")]
    pub timeout: HumanDuration,
    /// A proxied exchange (streamed body or upgraded tunnel) with no byte moving either
    /// way this long is closed on both sides.
    #[serde(default = "d_upstream_idle")]
    pub idle_timeout: HumanDuration,
    /// Extra trust roots (PEM) for an `https://` store and sink, on top of the system's.
    /// Relative to the gateway file; resolved and checked by [`Config::load`].
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn d_upstream_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn d_upstream_idle() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    Jwt,
    Header,
}

/// How JWTs are signed: HS256 with the shared secret, RS256 / ES256 with public keys.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub mode: IdentityMode,
    #[serde(default = "d_jwt_env")]
    pub jwt_secret_env: String,
    #[serde(default = "d_user_header")]
    pub header: String,
    #[serde(default)]
    pub jwt_algorithm: JwtAlgorithm,
    /// RS256 / ES256: a PEM public key or a JWKS file, relative to the gateway file;
    /// resolved and checked by [`Config::load`], re-read on reload.
    #[serde(default)]
    pub jwt_public_keys: Option<PathBuf>,
    /// When set, a token's `iss` must be this.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, a token's `aud` must name this.
    #[serde(default)]
    pub audience: Option<String>,
}

impl IdentityConfig {
    /// `mode`, with every other field at its default (for tests and examples).
    pub fn new(mode: IdentityMode) -> IdentityConfig {
        IdentityConfig {
            mode,
            jwt_secret_env: d_jwt_env(),
            header: d_user_header(),
            jwt_algorithm: JwtAlgorithm::default(),
            jwt_public_keys: None,
            issuer: None,
            audience: None,
        }
    }
}

fn d_jwt_env() -> String {
    "FLASHGATE_JWT_SECRET".into()
}
fn d_user_header() -> String {
    "X-User-Id".into()
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub per_ip: Option<RateSpec>,
    pub per_user: Option<RateSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfig {
    #[serde(default = "d_pay_env")]
    pub secret_env: String,
    #[serde(default = "d_tolerance")]
    pub tolerance: HumanDuration,
}

fn d_pay_env() -> String {
    "FLASHGATE_PAYMENT_SECRET".into()
}
fn d_tolerance() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig {
            secret_env: d_pay_env(),
            tolerance: d_tolerance(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Http,
    Postgres,
    Rabbitmq,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    #[serde(default = "d_sink")]
    pub sink: SinkKind,
    pub http_url: Option<String>,
    #[serde(default = "d_sink_env")]
    pub http_secret_env: String,
    #[serde(default = "d_pg_env")]
    pub postgres_url_env: String,
    /// Extra trust roots (PEM) for PostgreSQL over TLS (the URL's `sslmode`), on top of
    /// the system's. Only with `sink = "postgres"`. Relative to the gateway file;
    /// resolved and checked by [`Config::load`].
    #[serde(default)]
    pub postgres_ca_file: Option<PathBuf>,
    /// The variable holding the broker's `amqp://` or `amqps://` URL (it may carry a
    /// password, so never the file).
    #[serde(default = "d_amqp_env")]
    pub rabbitmq_url_env: String,
    #[serde(default)]
    pub rabbitmq: RabbitmqConfig,
    /// Extension: extra trust roots (PEM) for an `amqps://` broker, on top of the
    /// system's. Only with `sink = "rabbitmq"`; resolved like `postgres_ca_file`.
    #[serde(default)]
    pub rabbitmq_ca_file: Option<PathBuf>,
    /// Extension: how many deliveries one instance has in flight at once (sinks dedupe
    /// by order, so order does not matter).
    #[serde(default = "d_delivery_concurrency")]
    pub delivery_concurrency: usize,
    /// Extension: bound on one delivery (one request, one batch), its own and not
    /// `upstream.timeout`: a slow store must not hold the outbox for a proxy's timeout.
    #[serde(default = "d_sink_timeout")]
    pub sink_timeout: HumanDuration,
    /// Extension: an entry the sink has not taken this long after it was queued (its
    /// stream id's time) moves to the dead-letter stream. Payment providers retry for
    /// days; so do we, by time rather than by count.
    #[serde(default = "d_give_up_after")]
    pub give_up_after: HumanDuration,
    /// Extension, optional: also dead-letter after this many deliveries (unset: no bound
    /// by count, only `give_up_after`).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Extension: first retry delay; doubles per attempt (with jitter) up to `retry_max`.
    #[serde(default = "d_retry_base")]
    pub retry_base: HumanDuration,
    #[serde(default = "d_retry_max")]
    pub retry_max: HumanDuration,
    /// Extension: an entry held this long by another (possibly dead) instance is reclaimed.
    #[serde(default = "d_claim_idle")]
    pub claim_idle: HumanDuration,
    /// Extension: how often the expiry sweeper looks for due pre-orders.
    #[serde(default = "d_sweep")]
    pub sweep_interval: HumanDuration,
    /// The documented example writes `campaigns_dir` after `[orders]`, where TOML files
    /// it. Accepted here so the key is known; read by `gateway::campaigns_dir`.
    #[serde(default)]
    #[allow(dead_code)]
    campaigns_dir: Option<Spanned<String>>,
}

fn d_sink() -> SinkKind {
    SinkKind::Http
}
fn d_sink_env() -> String {
    "FLASHGATE_SINK_SECRET".into()
}
fn d_pg_env() -> String {
    "FLASHGATE_POSTGRES_URL".into()
}
fn d_amqp_env() -> String {
    "FLASHGATE_AMQP_URL".into()
}
fn d_delivery_concurrency() -> usize {
    16
}
fn d_sink_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn d_give_up_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}
fn d_retry_base() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
/// Five minutes: over a day-long outage each entry is tried ~300 times, not ~1,400, and
/// the store sees the backlog again within five minutes of coming back.
fn d_retry_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn d_claim_idle() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn d_sweep() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}

impl Default for OrdersConfig {
    fn default() -> Self {
        OrdersConfig {
            sink: d_sink(),
            http_url: None,
            http_secret_env: d_sink_env(),
            postgres_url_env: d_pg_env(),
            postgres_ca_file: None,
            rabbitmq_url_env: d_amqp_env(),
            rabbitmq: RabbitmqConfig::default(),
            rabbitmq_ca_file: None,
            delivery_concurrency: d_delivery_concurrency(),
            sink_timeout: d_sink_timeout(),
            give_up_after: d_give_up_after(),
            max_attempts: None,
            retry_base: d_retry_base(),
            retry_max: d_retry_max(),
            claim_idle: d_claim_idle(),
            sweep_interval: d_sweep(),
            campaigns_dir: None,
        }
    }
}

/// Where the `rabbitmq` sink publishes: a durable exchange, the routing key of every
/// message, and a durable queue bound to the exchange with that key. Each is declared
/// when absent; one that exists is used as it is (its type and arguments are the
/// operator's).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqConfig {
    #[serde(default = "d_amqp_exchange")]
    pub exchange: String,
    #[serde(default = "d_amqp_routing_key")]
    pub routing_key: String,
    #[serde(default = "d_amqp_queue")]
    pub queue: String,
}

fn d_amqp_exchange() -> String {
    "flashgate.orders".into()
}
fn d_amqp_routing_key() -> String {
    "paid".into()
}
fn d_amqp_queue() -> String {
    "flashgate.orders".into()
}

impl Default for RabbitmqConfig {
    fn default() -> Self {
        RabbitmqConfig {
            exchange: d_amqp_exchange(),
            routing_key: d_amqp_routing_key(),
            queue: d_amqp_queue(),
        }
    }
}

/// The whole validated configuration of one gateway.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConfig,
    pub redis: RedisConfig,
    pub upstream: UpstreamConfig,
    pub identity: IdentityConfig,
    pub limits: LimitsConfig,
    pub payment: PaymentConfig,
    pub admin: AdminConfig,
    pub orders: OrdersConfig,
    pub campaigns_dir: PathBuf,
    pub campaigns: Vec<Campaign>,
    pub secrets: Secrets,
}

/// Everything a load found: the configuration, or every error; and every warning
/// (a campaign that already ended, no campaigns at all, no admin token).
#[derive(Debug)]
pub struct Report {
    /// `Err` holds at least one error, in file order (gateway.toml, then the campaigns).
    pub config: Result<Config, Vec<ConfigError>>,
    pub warnings: Vec<ConfigError>,
}

impl Report {
    pub(crate) fn failed(errors: Vec<ConfigError>, warnings: Vec<ConfigError>) -> Report {
        debug_assert!(!errors.is_empty());
        Report {
            config: Err(errors),
            warnings,
        }
    }
}

impl Config {
    /// Loads `gateway.toml` and every campaign file; secrets come from `env`. The first
    /// error, if any: use [`Config::check`] for all of them and the warnings.
    pub fn load(path: &Path, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        Config::check(path, SecretSource::Env(env))
            .config
            .map_err(|mut errors| errors.swap_remove(0))
    }

    /// Loads and validates everything, collecting every error and warning.
    pub fn check(path: &Path, secrets: SecretSource<'_>) -> Report {
        gateway::check(path, secrets, OffsetDateTime::now_utc())
    }
}

#[cfg(test)]
mod tests;
