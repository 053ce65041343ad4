//! `gateway.toml`: each table read on its own (one mistake does not hide the next), every
//! check `serve` relies on (URLs, header names, limits), and the secrets the file names.
//! Whatever `serve` would refuse at start is refused here, with its position.

use std::path::Path;

use http::Uri;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use time::OffsetDateTime;
use toml::Spanned;

use super::campaign::check_campaigns;
use super::diagnostics::{part, Diag};
use super::{
    read, AdminConfig, Config, IdentityConfig, IdentityMode, JwtAlgorithm, LimitsConfig,
    OrdersConfig, PaymentConfig, RabbitmqConfig, RedisConfig, Report, SecretSource, Secrets,
    SentinelConfig, ServerConfig, SinkKind, UpstreamConfig,
};

/// The top-level keys, only to refuse an unknown one (each table is read by [`part`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read for its errors only
struct GatewayFile {
    server: Option<IgnoredAny>,
    redis: Option<IgnoredAny>,
    upstream: Option<IgnoredAny>,
    identity: Option<IgnoredAny>,
    limits: Option<IgnoredAny>,
    payment: Option<IgnoredAny>,
    admin: Option<IgnoredAny>,
    orders: Option<IgnoredAny>,
    campaigns_dir: Option<IgnoredAny>,
}

pub(super) fn check(path: &Path, source: SecretSource<'_>, now: OffsetDateTime) -> Report {
    let src = match read(path) {
        Ok(s) => s,
        Err(e) => return Report::failed(vec![e], Vec::new()),
    };
    let mut d = Diag::new(path, &src);
    if let Err(e) = src.parse::<toml::Table>() {
        d.toml_error(&e, None);
        return Report::failed(d.errors, d.warnings);
    }
    let mut parsed = parse(&mut d);
    let dir = campaigns_dir(&mut d);
    let secrets = secrets(&mut d, &parsed, source);
    validate(&mut d, &parsed);
    let base = path.parent().unwrap_or(Path::new("."));
    resolve_files(&mut d, &mut parsed, base);
    // File order, whichever check found them.
    d.errors.sort_by_key(|e| e.position);
    d.warnings.sort_by_key(|e| e.position);
    d.errors.dedup();

    // The campaigns are checked even when gateway.toml has errors: report them all.
    let dir = dir.map(|dir| {
        let full = base.join(dir.as_ref().map_or("campaigns", |d| d.get_ref()));
        if !full.is_dir() {
            let msg = format!("{} is not a directory", full.display());
            d.error(dir.map(|d| d.span()), "campaigns_dir", msg);
        }
        full
    });
    let (mut errors, mut warnings) = (d.errors, d.warnings);
    let found = dir.ok().filter(|dir| dir.is_dir()).map(|dir| {
        let mut found = check_campaigns(&dir, now);
        errors.append(&mut found.errors);
        warnings.append(&mut found.warnings);
        (dir, found.campaigns)
    });
    let config = (|| {
        let (campaigns_dir, campaigns) = found?;
        let g = parsed;
        Some(Config {
            path: path.to_path_buf(),
            server: g.server?,
            redis: g.redis?,
            upstream: g.upstream?,
            identity: g.identity?,
            limits: g.limits?,
            payment: g.payment?,
            admin: g.admin?,
            orders: g.orders?,
            campaigns_dir,
            campaigns,
            secrets,
        })
    })();
    match config {
        Some(config) if errors.is_empty() => Report {
            config: Ok(config),
            warnings,
        },
        _ => Report::failed(errors, warnings),
    }
}

/// gateway.toml's tables, each parsed on its own; `None` where it failed (reported).
struct Parsed {
    server: Option<ServerConfig>,
    redis: Option<RedisConfig>,
    upstream: Option<UpstreamConfig>,
    identity: Option<IdentityConfig>,
    limits: Option<LimitsConfig>,
    payment: Option<PaymentConfig>,
    admin: Option<AdminConfig>,
    orders: Option<OrdersConfig>,
}

fn parse(d: &mut Diag<'_>) -> Parsed {
    if let Err(e) = toml::from_str::<GatewayFile>(d.src) {
        d.toml_error(&e, None);
    }
    Parsed {
        server: required(d, "server"),
        redis: required(d, "redis"),
        upstream: required(d, "upstream"),
        identity: required(d, "identity"),
        limits: optional(d, "limits"),
        payment: optional(d, "payment"),
        admin: optional(d, "admin"),
        orders: optional(d, "orders"),
    }
}

/// `campaigns_dir`: at the top level, or after `[orders]` where the documented example puts it
/// (which TOML files under `[orders]`). Read apart from `[orders]`' other keys, so a
/// mistake there does not stop the campaigns from being checked. `Err` if it is not a
/// string (reported).
#[allow(clippy::result_unit_err)]
fn campaigns_dir(d: &mut Diag<'_>) -> Result<Option<Spanned<String>>, ()> {
    #[derive(Deserialize)]
    struct OrdersDir {
        campaigns_dir: Option<Spanned<String>>,
    }
    let top =
        part::<Spanned<String>>(d.src, "campaigns_dir").map_err(|e| d.toml_error(&e, None))?;
    if top.is_some() {
        return Ok(top);
    }
    let orders = part::<OrdersDir>(d.src, "orders").map_err(|e| d.toml_error(&e, None))?;
    Ok(orders.and_then(|o| o.campaigns_dir))
}

fn required<T: DeserializeOwned>(d: &mut Diag<'_>, table: &str) -> Option<T> {
    match part::<T>(d.src, table) {
        Ok(Some(t)) => Some(t),
        Ok(None) => {
            let msg = format!("missing table [{table}]");
            d.errors.push(super::ConfigError::whole(d.file, msg));
            None
        }
        Err(e) => {
            d.toml_error(&e, None);
            None
        }
    }
}

fn optional<T: DeserializeOwned + Default>(d: &mut Diag<'_>, table: &str) -> Option<T> {
    part::<T>(d.src, table)
        .map(Option::unwrap_or_default)
        .map_err(|e| d.toml_error(&e, None))
        .ok()
}

// === checks beyond the types ===

/// Each table that parsed, checked on its own.
fn validate(d: &mut Diag<'_>, g: &Parsed) {
    if g.server.as_ref().is_some_and(|s| s.max_body_bytes == 0) {
        d.error_at_key("server.max_body_bytes", "must be > 0");
    }
    if let Some(limits) = &g.limits {
        check_limits(d, limits);
    }
    if let Some(redis) = &g.redis {
        check_redis(d, redis);
    }
    if let Some(upstream) = &g.upstream {
        check_upstream(d, upstream);
    }
    if let Some(identity) = &g.identity {
        if let Err(e) = http::HeaderName::from_bytes(identity.header.as_bytes()) {
            let msg = format!("{:?} is not a valid HTTP header name: {e}", identity.header);
            d.error_at_key("identity.header", msg);
        }
    }
    if let Some(orders) = &g.orders {
        check_orders(d, orders);
    }
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
    let urls = std::iter::once(("redis.url", &redis.url))
        .chain(redis.cluster_urls.iter().map(|u| ("redis.cluster_urls", u)))
        .chain(
            redis
                .sentinel
                .iter()
                .flat_map(|s| &s.urls)
                .map(|u| ("redis.sentinel", u)),
        );
    for (field, url) in urls {
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            d.error_at_key(field, format!("invalid Redis URL {url:?}: {e}"));
        }
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

/// One way to reach Redis: the sentinels replace `url` and exclude a cluster, and the
/// master is reached like the sentinels, so they all speak TLS or none does.
fn check_sentinel(d: &mut Diag<'_>, redis: &RedisConfig, s: &SentinelConfig) {
    let field = "redis.sentinel";
    if super::diagnostics::find_key(d.src, "redis.url").is_some() {
        d.error_at_key(
            "redis.url",
            "redis.sentinel replaces redis.url: set one of them",
        );
    }
    if !redis.cluster_urls.is_empty() {
        d.error_at_key(field, "Sentinel and redis.cluster_urls exclude each other");
    }
    if s.master.trim().is_empty() {
        d.error_at_key(field, "master must name the master the sentinels monitor");
    }
    if s.urls.is_empty() {
        d.error_at_key(field, "urls must list at least one sentinel");
    }
    let tls = |u: &String| u.starts_with("rediss://");
    if s.urls.iter().any(tls) && !s.urls.iter().all(tls) {
        d.error_at_key(field, "urls mix rediss:// and other schemes: the master is reached like the sentinels, so use one");
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
/// `upstream.ca_file`, `redis.ca_file`, `orders.postgres_ca_file`,
/// `orders.rabbitmq_ca_file` and `identity.jwt_public_keys`.
fn resolve_files(d: &mut Diag<'_>, g: &mut Parsed, base: &Path) {
    let (pg_ca, amqp_ca) = match g.orders.as_mut() {
        Some(o) => (Some(&mut o.postgres_ca_file), Some(&mut o.rabbitmq_ca_file)),
        None => (None, None),
    };
    let ca_files = [
        (
            "upstream.ca_file",
            g.upstream.as_mut().map(|u| &mut u.ca_file),
        ),
        ("redis.ca_file", g.redis.as_mut().map(|r| &mut r.ca_file)),
        ("orders.postgres_ca_file", pg_ca),
        ("orders.rabbitmq_ca_file", amqp_ca),
    ];
    for (field, ca) in ca_files {
        if let Some(ca) = ca.and_then(Option::as_mut) {
            *ca = base.join(&*ca);
            if let Err(e) = crate::tls::read_ca_file(ca) {
                d.error_at_key(field, e);
            }
        }
    }
    if let Some(identity) = g.identity.as_mut() {
        if let Err(m) = check_public_keys(identity, base) {
            const FIELD: &str = "identity.jwt_public_keys";
            // At the key when it is there, else at the algorithm that asks for it.
            let span = d
                .key_span(FIELD)
                .or_else(|| d.key_span("identity.jwt_algorithm"));
            d.error(span, FIELD, m);
        }
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
        let field = format!("orders.rabbitmq.{key}");
        // `[orders.rabbitmq]` written as a table, else the inline `rabbitmq = { .. }`.
        let span = d.key_span(&field).or_else(|| d.key_span("orders.rabbitmq"));
        d.error(span, &field, problem);
    }
}

/// What is wrong with the broker URL, in words that never repeat it (it may hold a
/// password): the scheme, AMQP's own parse, and a host.
fn check_amqp_url(url: &str) -> Result<(), String> {
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

// === secrets ===

/// Whether identity needs the HMAC secret (`identity.jwt_secret_env`): HS256 JWTs only.
fn needs_jwt_secret(identity: &IdentityConfig) -> bool {
    identity.mode == IdentityMode::Jwt && identity.jwt_algorithm == JwtAlgorithm::HS256
}

/// Reads every secret the configuration names and uses. A named variable that is unset
/// or empty is an error at the key that names it: the gateway never runs with
/// an open admin API or an unsigned hand-off by accident.
fn secrets(d: &mut Diag<'_>, g: &Parsed, source: SecretSource<'_>) -> Secrets {
    let mut need = |field: &str, var: &str, what: &str| -> Option<String> {
        if var.trim().is_empty() {
            d.error_at_key(field, "must name an environment variable");
            return None;
        }
        let SecretSource::Env(lookup) = source else {
            return None;
        };
        let value = lookup(var).filter(|v| !v.trim().is_empty());
        if value.is_none() {
            let msg = format!("environment variable {var} is not set or empty; it holds {what}");
            d.error_at_key(field, msg);
        }
        value
    };
    let mut s = Secrets::default();
    if let Some(identity) = g.identity.as_ref().filter(|i| needs_jwt_secret(i)) {
        s.jwt_secret = need(
            "identity.jwt_secret_env",
            &identity.jwt_secret_env,
            "the key that verifies buyers' JWTs (identity.mode = \"jwt\")",
        );
    }
    if let Some(payment) = &g.payment {
        s.payment_secret = need(
            "payment.secret_env",
            &payment.secret_env,
            "the key that verifies payment callbacks",
        );
    }
    if let Some(var) = g.admin.as_ref().and_then(|a| a.token_env.as_ref()) {
        s.admin_token = need(
            "admin.token_env",
            var,
            "the token /admin/* requires (remove `token_env` to run the admin API without auth)",
        );
    }
    let orders = g.orders.as_ref();
    match orders.map(|o| o.sink) {
        Some(SinkKind::Http) => {
            s.sink_secret = need(
                "orders.http_secret_env",
                orders.map_or("", |o| &o.http_secret_env),
                "the key that signs the orders sent to orders.http_url",
            );
        }
        Some(SinkKind::Postgres) => {
            s.postgres_url = need(
                "orders.postgres_url_env",
                orders.map_or("", |o| &o.postgres_url_env),
                "the PostgreSQL connection URL (orders.sink = \"postgres\")",
            );
        }
        Some(SinkKind::Rabbitmq) => {
            s.rabbitmq_url = need(
                "orders.rabbitmq_url_env",
                orders.map_or("", |o| &o.rabbitmq_url_env),
                "the broker's amqp:// or amqps:// URL (orders.sink = \"rabbitmq\")",
            );
        }
        None => {}
    }
    if let (Some(url), Some(o)) = (&s.rabbitmq_url, orders) {
        if let Err(m) = check_amqp_url(url) {
            let var = &o.rabbitmq_url_env;
            d.error_at_key("orders.rabbitmq_url_env", format!("{var} {m}"));
        }
    }
    if let (Some(url), Some(o)) = (&s.postgres_url, orders) {
        // Never echo the value: it may hold a password.
        let var = &o.postgres_url_env;
        match url.parse::<tokio_postgres::Config>() {
            Err(e) => d.error_at_key(
                "orders.postgres_url_env",
                format!("{var} is not a PostgreSQL connection URL: {e}"),
            ),
            Ok(pg) if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Disable => {
                if o.postgres_ca_file.is_some() {
                    let span = d.key_span("orders.postgres_ca_file");
                    let msg = format!(
                        "orders.postgres_ca_file is not used: {var} has sslmode=disable (no TLS)"
                    );
                    d.warn(span, msg);
                }
            }
            Ok(_) => {}
        }
    }
    if g.admin.as_ref().is_some_and(|a| a.token_env.is_none()) {
        let span = super::diagnostics::find_table(d.src, "admin");
        let listen = g.server.as_ref().map(|s| s.admin_listen.to_string());
        let msg = format!(
            "no `admin.token_env`: /admin/* (reload, stock, pause, replay) is open to anyone who reaches admin_listen {}",
            listen.as_deref().unwrap_or("")
        );
        d.warn(span, msg);
    }
    s
}
