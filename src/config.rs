//! Gateway and campaign configuration: TOML → validated, typed config.
//!
//! Owns parsing (`gateway.toml` + `campaigns/*.toml`), validation and secret lookup.
//! Every error names the file, line:column and field. Unknown keys are errors.
//! Never reads secrets from TOML: only from the environment variables the TOML names,
//! through an injected lookup so tests need not touch the process environment.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;
use toml::Spanned;

/// A configuration error: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the error points into the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl ConfigError {
    fn at(file: &Path, src: &str, span: Option<std::ops::Range<usize>>, message: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position: span.map(|s| line_col(src, s.start)),
            message,
        }
    }
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

// === durations, rates ===

/// A humantime duration ("250ms", "30m").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

/// `{ rate = 20, per = "1s", burst = 40 }`: `rate` requests per `per`, bursts up to `burst`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub rate: u32,
    pub per: HumanDuration,
    pub burst: u32,
}

impl RateSpec {
    fn check(&self) -> Result<(), String> {
        if self.rate == 0 || self.burst == 0 || self.per.0.is_zero() {
            return Err("rate, burst and per must all be greater than zero".into());
        }
        Ok(())
    }
}

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

fn de_cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("invalid CIDR {s:?}")))
        })
        .collect()
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
    /// Extension: deliveries tried before an entry moves to the dead-letter stream.
    #[serde(default = "d_max_attempts")]
    pub max_attempts: u32,
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
    /// SPEC §3's example writes `campaigns_dir` after `[orders]`, where TOML files it.
    #[serde(default)]
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
fn d_max_attempts() -> u32 {
    10
}
fn d_retry_base() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn d_retry_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
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
            max_attempts: d_max_attempts(),
            retry_base: d_retry_base(),
            retry_max: d_retry_max(),
            claim_idle: d_claim_idle(),
            sweep_interval: d_sweep(),
            campaigns_dir: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    server: ServerConfig,
    redis: RedisConfig,
    upstream: UpstreamConfig,
    identity: IdentityConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    payment: PaymentConfig,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    orders: OrdersConfig,
    campaigns_dir: Option<Spanned<String>>,
}

// === campaigns/*.toml ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignFile {
    id: Spanned<String>,
    name: String,
    starts_at: Spanned<toml::value::Datetime>,
    ends_at: Spanned<toml::value::Datetime>,
    payment_window: Spanned<HumanDuration>,
    per_user_limit: Spanned<u32>,
    #[serde(default)]
    limits: LimitsConfig,
    items: Spanned<Vec<ItemFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemFile {
    sku: Spanned<String>,
    stock: Spanned<i64>,
    price_cents: Spanned<i64>,
}

/// One item on sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub sku: String,
    pub stock: u64,
    pub price_cents: u64,
}

/// One campaign, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub payment_window: Duration,
    pub per_user_limit: u32,
    pub limits: LimitsConfig,
    pub items: Vec<Item>,
    pub file: PathBuf,
}

/// Secrets, looked up from the environment variables named by the config.
#[derive(Clone, Default)]
pub struct Secrets {
    pub jwt_secret: Option<String>,
    pub payment_secret: Option<String>,
    pub admin_token: Option<String>,
    pub sink_secret: Option<String>,
    pub postgres_url: Option<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Secrets")
            .field("jwt_secret", &set(&self.jwt_secret))
            .field("payment_secret", &set(&self.payment_secret))
            .field("admin_token", &set(&self.admin_token))
            .field("sink_secret", &set(&self.sink_secret))
            .field("postgres_url", &set(&self.postgres_url))
            .finish()
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

/// Looks up an environment variable; injectable for tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, ignoring empty values.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        position: None,
        message: format!("cannot read: {e}"),
    })
}

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, src: &str) -> Result<T, ConfigError> {
    toml::from_str(src).map_err(|e| {
        let msg = e.message().trim();
        let msg = match e.span().and_then(|s| field_at(src, s.start)) {
            Some(field) => format!("field `{field}`: {msg}"),
            None => msg.to_string(),
        };
        ConfigError::at(path, src, e.span(), msg)
    })
}

/// The table a line opens (`[server]`, `[[items]]`), if it is a header.
fn table_header(line: &str) -> Option<&str> {
    let t = line.trim();
    let inner = t.strip_prefix("[[").and_then(|r| r.split("]]").next());
    inner
        .or_else(|| t.strip_prefix('[').and_then(|r| r.split(']').next()))
        .map(str::trim)
}

/// The dotted path (`server.header_read_timeout`) of the key whose value holds `offset`.
fn field_at(src: &str, offset: usize) -> Option<String> {
    let mut table = "";
    let mut key: Option<&str> = None;
    let mut start = 0;
    for line in src.split_inclusive('\n') {
        if start > offset {
            break;
        }
        if let Some(t) = table_header(line) {
            table = t;
            key = None;
        } else if let Some((k, _)) = line.split_once('=') {
            let k = k.trim();
            if !k.is_empty() && !k.starts_with('#') {
                key = Some(k);
            }
        }
        start += line.len();
    }
    let key = key?;
    Some(if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    })
}

impl Config {
    /// Loads `gateway.toml` and every campaign file; secrets come from `env`.
    pub fn load(path: &Path, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let src = read(path)?;
        let g: GatewayFile = parse_toml(path, &src)?;
        let err =
            |span: Option<std::ops::Range<usize>>, m: String| ConfigError::at(path, &src, span, m);

        for (field, spec) in [
            ("limits.per_ip", g.limits.per_ip),
            ("limits.per_user", g.limits.per_user),
        ] {
            if let Some(Err(m)) = spec.map(|s| s.check()) {
                return Err(err(find_key(&src, field), format!("field `{field}`: {m}")));
            }
        }
        if !(g.upstream.url.starts_with("http://") || g.upstream.url.starts_with("https://")) {
            return Err(err(
                find_key(&src, "upstream.url"),
                "field `upstream.url`: must be an http:// or https:// URL".into(),
            ));
        }
        if g.upstream.idle_timeout.0.is_zero() {
            return Err(err(
                find_key(&src, "upstream.idle_timeout"),
                "field `upstream.idle_timeout`: must be > 0".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut upstream = g.upstream.clone();
        if let Some(ca) = &upstream.ca_file {
            let ca = base.join(ca);
            if let Err(e) = crate::tls::read_ca_file(&ca) {
                return Err(err(
                    find_key(&src, "upstream.ca_file"),
                    format!("field `upstream.ca_file`: {e}"),
                ));
            }
            upstream.ca_file = Some(ca);
        }
        if g.server.max_body_bytes == 0 {
            return Err(err(
                find_key(&src, "server.max_body_bytes"),
                "field `server.max_body_bytes`: must be > 0".into(),
            ));
        }
        if g.redis.key_prefix.is_empty() || g.redis.key_prefix.contains(['{', '}']) {
            return Err(err(
                find_key(&src, "redis.key_prefix"),
                "field `redis.key_prefix`: must be non-empty, without braces".into(),
            ));
        }
        for (field, url) in std::iter::once(("redis.url", &g.redis.url)).chain(
            g.redis
                .cluster_urls
                .iter()
                .map(|u| ("redis.cluster_urls", u)),
        ) {
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                return Err(err(
                    find_key(&src, field),
                    format!("field `{field}`: invalid Redis URL {url:?}: {e}"),
                ));
            }
        }
        if g.orders.max_attempts == 0 {
            return Err(err(
                find_key(&src, "orders.max_attempts"),
                "field `orders.max_attempts`: must be > 0".into(),
            ));
        }
        let secrets = Secrets {
            jwt_secret: env(&g.identity.jwt_secret_env),
            payment_secret: env(&g.payment.secret_env),
            admin_token: g.admin.token_env.as_deref().and_then(env),
            sink_secret: env(&g.orders.http_secret_env),
            postgres_url: env(&g.orders.postgres_url_env),
        };
        let mut identity = g.identity.clone();
        if let Some(m) = check_public_keys(&mut identity, base) {
            return Err(err(
                find_key(&src, "identity.jwt_public_keys")
                    .or_else(|| find_key(&src, "identity.jwt_algorithm")),
                m,
            ));
        }
        if g.identity.mode == IdentityMode::Jwt
            && g.identity.jwt_algorithm == JwtAlgorithm::HS256
            && secrets.jwt_secret.is_none()
        {
            return Err(err(
                find_key(&src, "identity.jwt_secret_env")
                    .or_else(|| find_key(&src, "identity.mode")),
                format!(
                    "field `identity.jwt_secret_env`: environment variable {} is not set",
                    g.identity.jwt_secret_env
                ),
            ));
        }
        match g.orders.sink {
            SinkKind::Http if g.orders.http_url.is_none() => {
                return Err(err(
                    find_key(&src, "orders.sink"),
                    "field `orders.http_url`: required when sink = \"http\"".into(),
                ));
            }
            SinkKind::Postgres if secrets.postgres_url.is_none() => {
                return Err(err(
                    find_key(&src, "orders.postgres_url_env")
                        .or_else(|| find_key(&src, "orders.sink")),
                    format!(
                        "field `orders.postgres_url_env`: environment variable {} is not set",
                        g.orders.postgres_url_env
                    ),
                ));
            }
            _ => {}
        }

        let dir = g.campaigns_dir.as_ref().or(g.orders.campaigns_dir.as_ref());
        let campaigns_dir = base.join(dir.map_or("campaigns", |d| d.get_ref().as_str()));
        if !campaigns_dir.is_dir() {
            let span = dir.map(|d| d.span());
            return Err(err(
                span,
                format!(
                    "field `campaigns_dir`: {} is not a directory",
                    campaigns_dir.display()
                ),
            ));
        }
        let campaigns = load_campaigns(&campaigns_dir)?;
        Ok(Config {
            path: path.to_path_buf(),
            server: g.server,
            redis: g.redis,
            upstream,
            identity,
            limits: g.limits,
            payment: g.payment,
            admin: g.admin,
            orders: g.orders,
            campaigns_dir,
            campaigns,
            secrets,
        })
    }
}

/// RS256 / ES256 need `jwt_public_keys`, resolved against `base` and loadable; HS256
/// takes none. The error message, if any.
fn check_public_keys(identity: &mut IdentityConfig, base: &Path) -> Option<String> {
    if identity.mode != IdentityMode::Jwt {
        return None;
    }
    let alg = match identity.jwt_algorithm {
        JwtAlgorithm::HS256 if identity.jwt_public_keys.is_some() => {
            return Some("field `identity.jwt_public_keys`: only for RS256 and ES256".into())
        }
        JwtAlgorithm::HS256 => return None,
        JwtAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        JwtAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
    };
    let Some(path) = &identity.jwt_public_keys else {
        return Some(format!(
            "field `identity.jwt_public_keys`: required with jwt_algorithm = \"{alg:?}\""
        ));
    };
    let path = base.join(path);
    if let Err(e) = crate::jwks::KeySet::load(&path, alg) {
        return Some(format!(
            "field `identity.jwt_public_keys`: {}: {e}",
            path.display()
        ));
    }
    identity.jwt_public_keys = Some(path);
    None
}

/// Points at `key =` inside `[table]` (or at a dotted `table.key =`), for errors found
/// after parsing. `path` is `table.key`, or `key` for a top-level key.
fn find_key(src: &str, path: &str) -> Option<std::ops::Range<usize>> {
    let (table, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut current = "";
    let mut offset = 0;
    for line in src.split_inclusive('\n') {
        if let Some(t) = table_header(line) {
            current = t;
        } else {
            let t = line.trim_start();
            let indent = line.len() - t.len();
            let wanted = if current == table {
                Some(key)
            } else if current.is_empty() {
                Some(path)
            } else {
                None
            };
            if let Some(rest) = wanted.and_then(|w| t.strip_prefix(w).map(|r| (w, r))) {
                if rest.1.trim_start().starts_with('=') {
                    return Some(offset + indent..offset + indent + rest.0.len());
                }
            }
        }
        offset += line.len();
    }
    None
}

/// Loads and validates every `*.toml` in `dir`, sorted by file name.
pub fn load_campaigns(dir: &Path) -> Result<Vec<Campaign>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigError {
        file: dir.to_path_buf(),
        position: None,
        message: format!("cannot list campaigns: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let src = read(&f)?;
        let c = parse_campaign(&f, &src)?;
        if !seen.insert(c.id.clone()) {
            return Err(ConfigError::at(
                &f,
                &src,
                find_key(&src, "id"),
                format!("field `id`: campaign {:?} is defined twice", c.id),
            ));
        }
        out.push(c);
    }
    Ok(out)
}

/// Ids and SKUs appear in URLs and Redis keys: keep them to a safe alphabet.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn to_offset(dt: &toml::value::Datetime) -> Result<OffsetDateTime, String> {
    if dt.offset.is_none() || dt.date.is_none() || dt.time.is_none() {
        return Err("must be an offset date-time such as 2026-11-11T00:00:00+08:00".into());
    }
    OffsetDateTime::parse(
        &dt.to_string(),
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|e| e.to_string())
}

fn parse_campaign(path: &Path, src: &str) -> Result<Campaign, ConfigError> {
    let c: CampaignFile = parse_toml(path, src)?;
    let err = |span: std::ops::Range<usize>, field: &str, m: &str| {
        ConfigError::at(path, src, Some(span), format!("field `{field}`: {m}"))
    };
    if !valid_id(c.id.get_ref()) {
        return Err(err(
            c.id.span(),
            "id",
            "must be 1-64 characters of A-Z a-z 0-9 - _",
        ));
    }
    let starts_at =
        to_offset(c.starts_at.get_ref()).map_err(|m| err(c.starts_at.span(), "starts_at", &m))?;
    let ends_at =
        to_offset(c.ends_at.get_ref()).map_err(|m| err(c.ends_at.span(), "ends_at", &m))?;
    if ends_at <= starts_at {
        return Err(err(c.ends_at.span(), "ends_at", "must be after starts_at"));
    }
    if c.payment_window.get_ref().0 < Duration::from_secs(1) {
        return Err(err(
            c.payment_window.span(),
            "payment_window",
            "must be at least 1s",
        ));
    }
    if *c.per_user_limit.get_ref() == 0 {
        return Err(err(
            c.per_user_limit.span(),
            "per_user_limit",
            "must be at least 1",
        ));
    }
    for (field, spec) in [
        ("limits.per_ip", c.limits.per_ip),
        ("limits.per_user", c.limits.per_user),
    ] {
        if let Some(Err(m)) = spec.map(|s| s.check()) {
            return Err(ConfigError::at(
                path,
                src,
                find_key(src, field),
                format!("field `{field}`: {m}"),
            ));
        }
    }
    if c.items.get_ref().is_empty() {
        return Err(err(
            c.items.span(),
            "items",
            "a campaign needs at least one item",
        ));
    }
    let mut skus = HashSet::new();
    let mut items = Vec::with_capacity(c.items.get_ref().len());
    for it in c.items.into_inner() {
        if !valid_id(it.sku.get_ref()) {
            return Err(err(
                it.sku.span(),
                "items.sku",
                "must be 1-64 characters of A-Z a-z 0-9 - _",
            ));
        }
        if !skus.insert(it.sku.get_ref().clone()) {
            return Err(err(it.sku.span(), "items.sku", "duplicate sku"));
        }
        if *it.stock.get_ref() < 0 {
            return Err(err(it.stock.span(), "items.stock", "must not be negative"));
        }
        if *it.price_cents.get_ref() < 0 {
            return Err(err(
                it.price_cents.span(),
                "items.price_cents",
                "must not be negative",
            ));
        }
        items.push(Item {
            sku: it.sku.into_inner(),
            stock: it.stock.into_inner().unsigned_abs(), // checked >= 0 above
            price_cents: it.price_cents.into_inner().unsigned_abs(),
        });
    }
    Ok(Campaign {
        id: c.id.into_inner(),
        name: c.name,
        starts_at,
        ends_at,
        payment_window: c.payment_window.into_inner().0,
        per_user_limit: c.per_user_limit.into_inner(),
        limits: c.limits,
        items,
        file: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests;
