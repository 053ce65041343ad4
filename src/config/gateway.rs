//! `gateway.toml`: read with every problem collected, every check `serve` relies on
//! (URLs, header names, limits, the files it names), and the campaigns it points at.
//! Whatever `serve` would refuse at start is refused here, with its position.

use std::path::{Path, PathBuf};

use http::Uri;
use serde::Deserialize;
use time::OffsetDateTime;
use toml::Spanned;

use super::campaign::check_campaigns;
use super::diagnostics::{read, syntax_errors, Diag};
use super::doc::Doc;
use super::{
    de, secrets, AdminConfig, Config, IdentityConfig, IdentityMode, JwtAlgorithm, LimitsConfig,
    OrdersConfig, PaymentConfig, RabbitmqConfig, RedisConfig, Report, SecretSource, SentinelConfig,
    ServerConfig, SinkKind, UpstreamConfig,
};

/// gateway.toml as written: its tables, each with its keys' defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GatewayFile {
    pub(super) server: ServerConfig,
    pub(super) redis: RedisConfig,
    pub(super) upstream: UpstreamConfig,
    pub(super) identity: IdentityConfig,
    #[serde(default)]
    pub(super) limits: LimitsConfig,
    #[serde(default)]
    pub(super) payment: PaymentConfig,
    #[serde(default)]
    pub(super) admin: AdminConfig,
    #[serde(default)]
    pub(super) orders: OrdersConfig,
    campaigns_dir: Option<Spanned<String>>,
}

pub(super) fn check(path: &Path, source: SecretSource<'_>, now: OffsetDateTime) -> Report {
    let src = match read(path) {
        Ok(s) => s,
        Err(e) => return Report::failed(vec![e], Vec::new()),
    };
    let doc = match Doc::parse(&src) {
        Ok(doc) => doc,
        Err(errors) => return Report::failed(syntax_errors(path, &src, errors), Vec::new()),
    };
    let read = de::read::<GatewayFile>(&doc);
    let mut d = Diag::new(path, &src, &doc, read.problems, read.flawed, None);
    let Some(mut g) = read.value else {
        let (errors, warnings) = d.finish();
        return Report::failed(errors, warnings);
    };
    validate(&mut d, &g);
    let secrets = secrets::read(&mut d, &g, source);
    let base = path.parent().unwrap_or(Path::new("."));
    resolve_files(&mut d, &mut g, base);
    // The campaigns are checked even when gateway.toml has errors: report them all.
    let dir = campaigns_dir(&mut d, &g, base);
    let (mut errors, mut warnings) = d.finish();
    let Some(campaigns_dir) = dir else {
        return Report::failed(errors, warnings);
    };
    let mut found = check_campaigns(&campaigns_dir, now);
    errors.append(&mut found.errors);
    warnings.append(&mut found.warnings);
    if !errors.is_empty() {
        return Report::failed(errors, warnings);
    }
    let config = Config {
        path: path.to_path_buf(),
        server: g.server,
        redis: g.redis,
        upstream: g.upstream,
        identity: g.identity,
        limits: g.limits,
        payment: g.payment,
        admin: g.admin,
        orders: g.orders,
        campaigns_dir,
        campaigns: found.campaigns,
        secrets,
    };
    Report {
        config: Ok(config),
        warnings,
    }
}

/// `campaigns_dir`, relative to gateway.toml: at the top level, or after `[orders]`
/// where the documented example writes it (which TOML files under `[orders]`). `None`
/// (reported) when it is wrong or not a directory.
fn campaigns_dir(d: &mut Diag<'_>, g: &GatewayFile, base: &Path) -> Option<PathBuf> {
    if !d.sound(&["campaigns_dir", "orders.campaigns_dir"]) {
        return None;
    }
    let (field, dir) = match (&g.campaigns_dir, &g.orders.campaigns_dir) {
        (Some(dir), _) => ("campaigns_dir", Some(dir)),
        (None, Some(dir)) => ("orders.campaigns_dir", Some(dir)),
        (None, None) => ("campaigns_dir", None),
    };
    let full = base.join(dir.map_or("campaigns", |d| d.get_ref()));
    if full.is_dir() {
        return Some(full);
    }
    let span = dir.map_or(0..0, |d| d.span());
    d.error(
        span,
        field,
        format!("{} is not a directory", full.display()),
    );
    None
}

// === checks beyond the types ===

/// The rules beyond the types, table by table. `Diag` keeps each silent about a value
/// reading already reported; a rule that reads another key asks [`Diag::sound`] first.
fn validate(d: &mut Diag<'_>, g: &GatewayFile) {
    if g.server.max_body_bytes == 0 {
        d.error_at_key("server.max_body_bytes", "must be > 0");
    }
    check_limits(d, &g.limits);
    check_redis(d, &g.redis);
    check_upstream(d, &g.upstream);
    let header = &g.identity.header;
    if let Err(e) = http::HeaderName::from_bytes(header.as_bytes()) {
        let msg = format!("{header:?} is not a valid HTTP header name: {e}");
        d.error_at_key("identity.header", msg);
    }
    check_orders(d, &g.orders);
}

fn check_limits(d: &mut Diag<'_>, limits: &LimitsConfig) {
    for (field, spec) in [
        ("limits.per_ip", limits.per_ip),
        ("limits.per_user", limits.per_user),
    ] {
        if let Some(Err(m)) = spec.map(|s| s.check()) {
            d.error_at_key(field, m);
        }
    }
}

fn check_redis(d: &mut Diag<'_>, redis: &RedisConfig) {
    if redis.key_prefix.is_empty() || redis.key_prefix.contains(['{', '}']) {
        d.error_at_key("redis.key_prefix", "must be non-empty, without braces");
    }
    let sentinels = redis.sentinel.iter().flat_map(|s| &s.urls);
    let urls = std::iter::once(("redis.url".to_owned(), &redis.url))
        .chain(indexed("redis.cluster_urls", &redis.cluster_urls))
        .chain(indexed("redis.sentinel.urls", sentinels));
    for (field, url) in urls {
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            d.error_at_key(&field, format!("invalid Redis URL {url:?}: {e}"));
        }
    }
    if !d.sound(&["redis.sentinel", "redis.cluster_urls", "redis.url"]) {
        return;
    }
    if let Some(s) = &redis.sentinel {
        check_sentinel(d, redis, s);
    }
    // A ca_file nobody would use means someone believes the connection is TLS: refuse.
    if redis.ca_file.is_some() {
        let field = redis.urls_field();
        if let Some(url) = redis.urls().iter().find(|u| !u.starts_with("rediss://")) {
            let msg = format!("only for rediss:// (TLS) URLs, and {field} has {url:?}");
            d.error_at_key("redis.ca_file", msg);
        }
    }
    if redis.replica_ack > 0 && !redis.cluster_urls.is_empty() {
        let msg = "not supported with redis.cluster_urls yet (a callback's WAIT must run on the node that owns its campaign)";
        d.error_at_key("redis.replica_ack", msg);
    }
}

/// Each element of an array with its path (`redis.cluster_urls[1]`).
fn indexed<'a, T: 'a>(
    field: &'a str,
    elements: impl IntoIterator<Item = &'a T> + 'a,
) -> impl Iterator<Item = (String, &'a T)> + 'a {
    let elements = elements.into_iter().enumerate();
    elements.map(move |(i, e)| (format!("{field}[{i}]"), e))
}

/// One way to reach Redis: the sentinels replace `url` and exclude a cluster, and the
/// master is reached like the sentinels, so they all speak TLS or none does.
fn check_sentinel(d: &mut Diag<'_>, redis: &RedisConfig, s: &SentinelConfig) {
    if d.is_written("redis.url") {
        let msg = "redis.sentinel replaces redis.url: set one of them";
        d.error_at_key("redis.url", msg);
    }
    if !redis.cluster_urls.is_empty() {
        let msg = "Sentinel and redis.cluster_urls exclude each other";
        d.error_at_key("redis.sentinel", msg);
    }
    if s.master.trim().is_empty() {
        let msg = "master must name the master the sentinels monitor";
        d.error_at_key("redis.sentinel.master", msg);
    }
    let field = "redis.sentinel.urls";
    if s.urls.is_empty() {
        d.error_at_key(field, "urls must list at least one sentinel");
    }
    let tls = |u: &String| u.starts_with("rediss://");
    if s.urls.iter().any(tls) && !s.urls.iter().all(tls) {
        let msg = "urls mix rediss:// and other schemes: the master is reached like the sentinels, so use one";
        d.error_at_key(field, msg);
    }
}

/// What `proxy::Proxy::new` needs: an absolute http:// or https:// URL with a host and
/// no query, and a timeout.
fn check_upstream(d: &mut Diag<'_>, upstream: &UpstreamConfig) {
    let field = "upstream.url";
    if let Err(m) = absolute_url(&upstream.url, &["http", "https"]) {
        d.error_at_key(field, format!("{:?} {m}", upstream.url));
    } else if upstream
        .url
        .parse::<Uri>()
        .is_ok_and(|u| u.query().is_some())
    {
        d.error_at_key(field, format!("{:?} must not have a query", upstream.url));
    }
    if upstream.timeout.0.is_zero() {
        d.error_at_key("upstream.timeout", "must be greater than zero");
    }
    if upstream.idle_timeout.0.is_zero() {
        d.error_at_key("upstream.idle_timeout", "must be greater than zero");
    }
}

/// The files gateway.toml names, made relative to it and read now, so a missing or
/// broken one is a configuration error with its key, not a failure at start:
/// `upstream.ca_file`, `redis.ca_file`, `orders.postgres_ca_file`, `orders.rabbitmq_ca_file` and
/// `identity.jwt_public_keys`.
fn resolve_files(d: &mut Diag<'_>, g: &mut GatewayFile, base: &Path) {
    let ca_files = [
        ("upstream.ca_file", &mut g.upstream.ca_file),
        ("redis.ca_file", &mut g.redis.ca_file),
        ("orders.postgres_ca_file", &mut g.orders.postgres_ca_file),
        ("orders.rabbitmq_ca_file", &mut g.orders.rabbitmq_ca_file),
    ];
    for (field, ca) in ca_files {
        if let Some(ca) = ca.as_mut().filter(|_| d.sound(&[field])) {
            *ca = base.join(&*ca);
            if let Err(e) = crate::tls::read_ca_file(ca) {
                d.error_at_key(field, e);
            }
        }
    }
    const FIELD: &str = "identity.jwt_public_keys";
    if !d.sound(&["identity.mode", "identity.jwt_algorithm", FIELD]) {
        return;
    }
    if let Err(m) = check_public_keys(&mut g.identity, base) {
        // At the key when it is there, else at the algorithm that asks for it.
        let key = if d.is_written(FIELD) {
            FIELD
        } else {
            "identity.jwt_algorithm"
        };
        d.error(d.key_span(key), FIELD, m);
    }
}

/// RS256 / ES256 need `jwt_public_keys`, resolved against `base` and loadable; HS256
/// takes none.
fn check_public_keys(identity: &mut IdentityConfig, base: &Path) -> Result<(), String> {
    if identity.mode != IdentityMode::Jwt {
        return Ok(());
    }
    let alg = match identity.jwt_algorithm {
        JwtAlgorithm::HS256 if identity.jwt_public_keys.is_some() => {
            return Err("only for RS256 and ES256".into())
        }
        JwtAlgorithm::HS256 => return Ok(()),
        JwtAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        JwtAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
    };
    let Some(path) = &identity.jwt_public_keys else {
        return Err(format!("required with jwt_algorithm = \"{alg:?}\""));
    };
    let path = base.join(path);
    if let Err(e) = crate::identity::jwks::KeySet::load(&path, alg) {
        return Err(format!("{}: {e}", path.display()));
    }
    identity.jwt_public_keys = Some(path);
    Ok(())
}

/// More deliveries in flight than this is a typo, not a tuning: each holds a request (or a
/// share of the PostgreSQL batch) and its memory.
const MAX_DELIVERY_CONCURRENCY: usize = 1024;

/// The delivery bounds, and what `sink::http::HttpSink::new` needs: an absolute http://
/// or https:// URL with a host.
fn check_orders(d: &mut Diag<'_>, orders: &OrdersConfig) {
    if orders.max_attempts == Some(0) {
        d.error_at_key(
            "orders.max_attempts",
            "must be > 0 (leave it out for no bound)",
        );
    }
    if !(1..=MAX_DELIVERY_CONCURRENCY).contains(&orders.delivery_concurrency) {
        d.error_at_key(
            "orders.delivery_concurrency",
            format!("must be between 1 and {MAX_DELIVERY_CONCURRENCY}"),
        );
    }
    for (field, bound) in [
        ("orders.sink_timeout", orders.sink_timeout),
        ("orders.give_up_after", orders.give_up_after),
    ] {
        if bound.0.is_zero() {
            d.error_at_key(field, "must be greater than zero");
        }
    }
    if !d.sound(&["orders.sink", "orders.http_url"]) {
        return;
    }
    match (&orders.http_url, orders.sink) {
        (None, SinkKind::Http) => {
            let span = d.key_span("orders.sink");
            d.error(span, "orders.http_url", "required when sink = \"http\"");
        }
        (Some(url), _) => {
            if let Err(m) = absolute_url(url, &["http", "https"]) {
                d.error_at_key("orders.http_url", format!("{url:?} {m}"));
            }
        }
        (None, _) => {}
    }
    if orders.postgres_ca_file.is_some() && orders.sink != SinkKind::Postgres {
        d.error_at_key("orders.postgres_ca_file", "only for sink = \"postgres\"");
    }
    if orders.rabbitmq_ca_file.is_some() && orders.sink != SinkKind::Rabbitmq {
        d.error_at_key("orders.rabbitmq_ca_file", "only for sink = \"rabbitmq\"");
    }
    check_rabbitmq_names(d, &orders.rabbitmq);
}

/// AMQP names are short strings: at most 255 bytes. The exchange and the queue are
/// named (an empty name is the default exchange, or a queue the broker names itself).
fn check_rabbitmq_names(d: &mut Diag<'_>, names: &RabbitmqConfig) {
    for (key, value, may_be_empty) in [
        ("exchange", &names.exchange, false),
        ("routing_key", &names.routing_key, true),
        ("queue", &names.queue, false),
    ] {
        let problem = if value.is_empty() && !may_be_empty {
            "must not be empty"
        } else if value.len() > 255 {
            "must be at most 255 bytes"
        } else {
            continue;
        };
        // Placed at the key, or the nearest table written (`[orders.rabbitmq]` or the
        // inline `rabbitmq = { .. }`) when the default is what is wrong.
        d.error_at_key(&format!("orders.rabbitmq.{key}"), problem);
    }
}

/// What is wrong with the broker URL, in words that never repeat it (it may hold a
/// password): the scheme, AMQP's own parse, and a host.
pub(super) fn check_amqp_url(url: &str) -> Result<(), String> {
    match url.split_once("://") {
        Some(("amqp" | "amqps", _)) => {}
        _ => return Err("must be an amqp:// or amqps:// URL".into()),
    }
    if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
        let e = if e.contains(url) {
            "malformed".into()
        } else {
            e
        };
        return Err(format!("is not an AMQP URL: {e}"));
    }
    match url.parse::<Uri>() {
        Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => Err("has no host".into()),
    }
}

/// `url` parses, has one of `schemes` and a host.
fn absolute_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let wanted = schemes
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ");
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("is not a URL ({e}); expected {wanted}"))?;
    match uri.scheme_str() {
        Some(s) if schemes.contains(&s) => {}
        _ => return Err(format!("must be an absolute {wanted} URL")),
    }
    if uri.authority().is_none() {
        return Err("has no host".into());
    }
    Ok(())
}
