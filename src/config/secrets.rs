//! The secrets gateway.toml names: read from the environment variables it gives, never
//! from the file. A named variable that is unset or empty is an error at the key that
//! names it: the gateway never runs with an open admin API or an unsigned hand-off by
//! accident.

use std::fmt;

use super::diagnostics::Diag;
use super::gateway::GatewayFile;
use super::{IdentityConfig, IdentityMode, JwtAlgorithm, SinkKind};

/// Looks up an environment variable; injectable for tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, ignoring empty values.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// What `check` does with the secrets the config names.
#[derive(Clone, Copy)]
pub enum SecretSource<'a> {
    /// Read each from the environment; a named one that is unset or empty is an error.
    Env(EnvLookup<'a>),
    /// Read none (`check --no-secrets`, for CI of campaign files): only the names are checked.
    Skip,
}

/// Secrets, looked up from the environment variables named by the config.
#[derive(Clone, Default)]
pub struct Secrets {
    pub jwt_secret: Option<String>,
    pub payment_secret: Option<String>,
    pub admin_token: Option<String>,
    pub sink_secret: Option<String>,
    pub postgres_url: Option<String>,
    pub rabbitmq_url: Option<String>,
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
            .field("rabbitmq_url", &set(&self.rabbitmq_url))
            .finish()
    }
}

/// Whether identity needs the HMAC secret (`identity.jwt_secret_env`): HS256 JWTs only.
fn needs_jwt_secret(identity: &IdentityConfig) -> bool {
    identity.mode == IdentityMode::Jwt && identity.jwt_algorithm == JwtAlgorithm::HS256
}

/// Reads every secret the configuration names and uses, and warns when /admin/* is open.
pub(super) fn read(d: &mut Diag<'_>, g: &GatewayFile, source: SecretSource<'_>) -> Secrets {
    let need = |d: &mut Diag<'_>, field: &str, var: &str, what: &str| -> Option<String> {
        if !d.sound(&[field]) {
            return None;
        }
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
    let identity = &g.identity;
    if d.sound(&["identity.mode", "identity.jwt_algorithm"]) && needs_jwt_secret(identity) {
        s.jwt_secret = need(
            d,
            "identity.jwt_secret_env",
            &identity.jwt_secret_env,
            "the key that verifies buyers' JWTs (identity.mode = \"jwt\")",
        );
    }
    s.payment_secret = need(
        d,
        "payment.secret_env",
        &g.payment.secret_env,
        "the key that verifies payment callbacks",
    );
    if let Some(var) = &g.admin.token_env {
        s.admin_token = need(
            d,
            "admin.token_env",
            var,
            "the token /admin/* requires (remove `token_env` to run the admin API without auth)",
        );
    }
    let orders = &g.orders;
    match orders.sink {
        _ if !d.sound(&["orders.sink"]) => {}
        SinkKind::Http => {
            s.sink_secret = need(
                d,
                "orders.http_secret_env",
                &orders.http_secret_env,
                "the key that signs the orders sent to orders.http_url",
            );
        }
        SinkKind::Postgres => {
            s.postgres_url = need(
                d,
                "orders.postgres_url_env",
                &orders.postgres_url_env,
                "the PostgreSQL connection URL (orders.sink = \"postgres\")",
            );
        }
        SinkKind::Rabbitmq => {
            s.rabbitmq_url = need(
                d,
                "orders.rabbitmq_url_env",
                &orders.rabbitmq_url_env,
                "the broker's amqp:// or amqps:// URL (orders.sink = \"rabbitmq\")",
            );
        }
    }
    if let Some(url) = &s.rabbitmq_url {
        if let Err(m) = super::gateway::check_amqp_url(url) {
            let var = &orders.rabbitmq_url_env;
            d.error_at_key("orders.rabbitmq_url_env", format!("{var} {m}"));
        }
    }
    if let Some(url) = &s.postgres_url {
        check_postgres_url(d, g, url);
    }
    if g.admin.token_env.is_none() && d.sound(&["admin"]) {
        let listen = if d.sound(&["server.admin_listen"]) {
            g.server.admin_listen.to_string()
        } else {
            String::new()
        };
        let msg = format!(
            "no `admin.token_env`: /admin/* (reload, stock, pause, replay) is open to anyone who reaches admin_listen {listen}"
        );
        d.warn(d.key_span("admin"), "admin", msg);
    }
    s
}

/// The PostgreSQL URL parses; a CA file beside a URL without TLS is a warning.
fn check_postgres_url(d: &mut Diag<'_>, g: &GatewayFile, url: &str) {
    // Never echo the value: it may hold a password.
    let var = &g.orders.postgres_url_env;
    match url.parse::<tokio_postgres::Config>() {
        Err(e) => d.error_at_key(
            "orders.postgres_url_env",
            format!("{var} is not a PostgreSQL connection URL: {e}"),
        ),
        Ok(pg) if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Disable => {
            if g.orders.postgres_ca_file.is_some() {
                let field = "orders.postgres_ca_file";
                let msg = format!("{field} is not used: {var} has sslmode=disable (no TLS)");
                d.warn(d.key_span(field), field, msg);
            }
        }
        Ok(_) => {}
    }
}
