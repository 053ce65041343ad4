//! `TestConfig`: writes a gateway.toml and campaign files into a temporary directory and
//! loads them through the real `flashgate::Config::load`, with fixed test secrets.
//!
//! Data-driven on purpose: the gateway file is a table of `section → key → TOML value`,
//! so a test overrides any setting with `set(section, key, value)` without this module
//! knowing about it, and the written file is exactly what a user could write.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";
pub const PAYMENT_SECRET: &str = "test-payment-secret";
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const SINK_SECRET: &str = "test-sink-secret";

/// Rate limits high enough that only tests about limits ever hit them.
const GENEROUS: &str = r#"{ rate = 100000, per = "1s", burst = 100000 }"#;

pub struct TestConfig {
    dir: TempDir,
    /// section ("" = top level) → key → TOML value, written in this order.
    sections: BTreeMap<String, BTreeMap<String, String>>,
    campaigns: Vec<CampaignSpec>,
    env: HashMap<String, String>,
}

impl TestConfig {
    /// Defaults for a test: both listeners on 127.0.0.1:0, JWT identity, generous limits,
    /// payment tolerance 5m, admin token set, http sink at `<upstream>/flashgate/orders`
    /// (where [`super::TestStore`] records orders), fast sink retries, no campaigns.
    pub fn new(redis_url: &str, upstream_url: &str) -> TestConfig {
        let upstream_url = upstream_url.trim_end_matches('/');
        let mut c = TestConfig {
            dir: tempfile::Builder::new()
                .prefix("flashgate-config-")
                .tempdir()
                .expect("tempdir for config"),
            sections: BTreeMap::new(),
            campaigns: Vec::new(),
            env: HashMap::new(),
        };
        c.set_str("", "campaigns_dir", "campaigns")
            .set_str("server", "listen", "127.0.0.1:0")
            .set_str("server", "admin_listen", "127.0.0.1:0")
            .set("server", "trusted_proxies", "[]")
            .set_str("redis", "url", redis_url)
            .set_str("upstream", "url", upstream_url)
            .set_str("upstream", "timeout", "5s")
            .set_str("identity", "mode", "jwt")
            .set_str("identity", "jwt_secret_env", "FLASHGATE_JWT_SECRET")
            .set("limits", "per_ip", GENEROUS)
            .set("limits", "per_user", GENEROUS)
            .set_str("payment", "secret_env", "FLASHGATE_PAYMENT_SECRET")
            .set_str("payment", "tolerance", "5m")
            .set_str("admin", "token_env", "FLASHGATE_ADMIN_TOKEN")
            .set_str("orders", "sink", "http")
            .set_str(
                "orders",
                "http_url",
                &format!("{upstream_url}/flashgate/orders"),
            )
            .set_str("orders", "http_secret_env", "FLASHGATE_SINK_SECRET")
            .set_str("orders", "retry_base", "50ms")
            .set_str("orders", "retry_max", "1s")
            .env("FLASHGATE_JWT_SECRET", JWT_SECRET)
            .env("FLASHGATE_PAYMENT_SECRET", PAYMENT_SECRET)
            .env("FLASHGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("FLASHGATE_SINK_SECRET", SINK_SECRET);
        c
    }

    /// Sets `key = <value>` in `[section]` (`""` = top level); `value` is TOML text.
    pub fn set(&mut self, section: &str, key: &str, value: &str) -> &mut Self {
        let s = self.sections.entry(section.to_owned()).or_default();
        s.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets `key = "<value>"`, quoting the string.
    pub fn set_str(&mut self, section: &str, key: &str, value: &str) -> &mut Self {
        self.set(section, key, &toml_str(value))
    }

    /// Removes `key` from `[section]`, so the gateway's default applies.
    pub fn unset(&mut self, section: &str, key: &str) -> &mut Self {
        if let Some(s) = self.sections.get_mut(section) {
            s.remove(key);
        }
        self
    }

    /// `limits.per_ip = { rate, per, burst }`.
    pub fn per_ip(&mut self, rate: u32, per: &str, burst: u32) -> &mut Self {
        self.set("limits", "per_ip", &rate_spec(rate, per, burst))
    }

    /// `limits.per_user = { rate, per, burst }`.
    pub fn per_user(&mut self, rate: u32, per: &str, burst: u32) -> &mut Self {
        self.set("limits", "per_user", &rate_spec(rate, per, burst))
    }

    /// `server.trusted_proxies`.
    pub fn trusted_proxies(&mut self, cidrs: &[&str]) -> &mut Self {
        let list: Vec<String> = cidrs.iter().map(|c| toml_str(c)).collect();
        self.set(
            "server",
            "trusted_proxies",
            &format!("[{}]", list.join(", ")),
        )
    }

    /// Identity from a trusted header (`identity.mode = "header"`).
    pub fn header_identity(&mut self, header: &str) -> &mut Self {
        self.set_str("identity", "mode", "header")
            .set_str("identity", "header", header)
    }

    /// Paid orders go to PostgreSQL at `url` (through `FLASHGATE_POSTGRES_URL`).
    pub fn postgres_sink(&mut self, url: &str) -> &mut Self {
        self.set_str("orders", "sink", "postgres")
            .set_str("orders", "postgres_url_env", "FLASHGATE_POSTGRES_URL")
            .env("FLASHGATE_POSTGRES_URL", url)
    }

    /// Paid orders go to the RabbitMQ broker at `url` (through `FLASHGATE_AMQP_URL`),
    /// to the default exchange and queue (`flashgate.orders`).
    pub fn rabbitmq_sink(&mut self, url: &str) -> &mut Self {
        self.set_str("orders", "sink", "rabbitmq")
            .set_str("orders", "rabbitmq_url_env", "FLASHGATE_AMQP_URL")
            .env("FLASHGATE_AMQP_URL", url)
    }

    /// No admin token: /admin/* is open.
    pub fn without_admin_token(&mut self) -> &mut Self {
        self.unset("admin", "token_env")
    }

    /// Sets an environment variable as the injected lookup sees it.
    pub fn env(&mut self, name: &str, value: &str) -> &mut Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The secrets' environment, for starting the real binary.
    pub fn env_vars(&self) -> HashMap<String, String> {
        self.env.clone()
    }

    /// Hides an environment variable from the injected lookup.
    pub fn remove_env(&mut self, name: &str) -> &mut Self {
        self.env.remove(name);
        self
    }

    /// Adds a campaign, written as `campaigns/<id>.toml`.
    pub fn campaign(&mut self, campaign: CampaignSpec) -> &mut Self {
        self.campaigns.push(campaign);
        self
    }

    /// The directory holding gateway.toml and campaigns/.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of gateway.toml.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    pub fn campaigns_dir(&self) -> PathBuf {
        self.dir.path().join("campaigns")
    }

    /// Writes gateway.toml and every campaign file; returns the gateway.toml path.
    pub fn write(&self) -> PathBuf {
        std::fs::create_dir_all(self.campaigns_dir()).expect("create campaigns dir");
        std::fs::write(self.path(), self.gateway_toml()).expect("write gateway.toml");
        for c in &self.campaigns {
            self.write_campaign(c);
        }
        self.path()
    }

    /// (Re)writes one campaign file, e.g. before `POST /admin/reload`.
    pub fn write_campaign(&self, c: &CampaignSpec) {
        self.write_campaign_file(&format!("{}.toml", c.id), &c.to_toml());
    }

    /// Writes arbitrary text as `campaigns/<file_name>` (for invalid-file tests).
    pub fn write_campaign_file(&self, file_name: &str, text: &str) {
        std::fs::create_dir_all(self.campaigns_dir()).expect("create campaigns dir");
        std::fs::write(self.campaigns_dir().join(file_name), text).expect("write campaign");
    }

    /// Deletes `campaigns/<file_name>`.
    pub fn remove_campaign_file(&self, file_name: &str) {
        std::fs::remove_file(self.campaigns_dir().join(file_name)).expect("remove campaign");
    }

    /// Writes the files and loads them; panics with the error's `file:line:col` text.
    pub fn load(&self) -> flashgate::Config {
        self.try_load()
            .unwrap_or_else(|e| panic!("test config does not load: {e}"))
    }

    /// Writes the files and loads them.
    pub fn try_load(&self) -> Result<flashgate::Config, flashgate::config::ConfigError> {
        let path = self.write();
        let lookup = |name: &str| self.env.get(name).cloned();
        flashgate::Config::load(&path, &lookup)
    }

    /// The gateway.toml text: top-level keys first, then one `[section]` per table.
    pub fn gateway_toml(&self) -> String {
        let mut out = String::from("# written by tests/integration/common/config.rs\n");
        for (section, keys) in &self.sections {
            if !section.is_empty() {
                out.push_str(&format!("\n[{section}]\n"));
            }
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }
}

/// One campaign file. Defaults: running from an hour ago to an hour from now, payment
/// window 30m, per_user_limit 1, no items.
#[derive(Clone, Debug)]
pub struct CampaignSpec {
    pub id: String,
    pub name: String,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub payment_window: String,
    pub per_user_limit: u32,
    /// `(sku, stock, price_cents)`
    pub items: Vec<(String, u64, u64)>,
    /// Extra top-level lines, e.g. `limits.per_user = { rate = 1, per = "1s", burst = 1 }`.
    pub extra: Vec<String>,
}

impl CampaignSpec {
    /// A campaign running now.
    pub fn new(id: &str) -> CampaignSpec {
        let now = OffsetDateTime::now_utc();
        CampaignSpec {
            id: id.to_owned(),
            name: format!("Test campaign {id}"),
            starts_at: now - Duration::from_secs(3600),
            ends_at: now + Duration::from_secs(3600),
            payment_window: "30m".to_owned(),
            per_user_limit: 1,
            items: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn window(mut self, starts_at: OffsetDateTime, ends_at: OffsetDateTime) -> Self {
        self.starts_at = starts_at;
        self.ends_at = ends_at;
        self
    }

    /// Ended `ago` (ran for an hour before that).
    pub fn ended_ago(self, ago: Duration) -> Self {
        let end = OffsetDateTime::now_utc() - ago;
        self.window(end - Duration::from_secs(3600), end)
    }

    /// A humantime duration: `"30m"`, `"2s"`.
    pub fn payment_window(mut self, window: &str) -> Self {
        self.payment_window = window.to_owned();
        self
    }

    pub fn per_user_limit(mut self, n: u32) -> Self {
        self.per_user_limit = n;
        self
    }

    pub fn item(mut self, sku: &str, stock: u64, price_cents: u64) -> Self {
        self.items.push((sku.to_owned(), stock, price_cents));
        self
    }

    /// Per-campaign `limits.per_user` override.
    pub fn per_user(self, rate: u32, per: &str, burst: u32) -> Self {
        self.line(&format!(
            "limits.per_user = {}",
            rate_spec(rate, per, burst)
        ))
    }

    /// Per-campaign `limits.per_ip` override.
    pub fn per_ip(self, rate: u32, per: &str, burst: u32) -> Self {
        self.line(&format!("limits.per_ip = {}", rate_spec(rate, per, burst)))
    }

    /// Adds a raw top-level TOML line.
    pub fn line(mut self, toml: &str) -> Self {
        self.extra.push(toml.to_owned());
        self
    }

    pub fn to_toml(&self) -> String {
        let mut out = format!(
            "id = {}\nname = {}\nstarts_at = {}\nends_at = {}\npayment_window = {}\nper_user_limit = {}\n",
            toml_str(&self.id),
            toml_str(&self.name),
            toml_datetime(self.starts_at),
            toml_datetime(self.ends_at),
            toml_str(&self.payment_window),
            self.per_user_limit,
        );
        for line in &self.extra {
            out.push_str(line);
            out.push('\n');
        }
        for (sku, stock, price) in &self.items {
            out.push_str(&format!(
                "\n[[items]]\nsku = {}\nstock = {stock}\nprice_cents = {price}\n",
                toml_str(sku)
            ));
        }
        out
    }
}

/// A TOML basic string (JSON string escaping is valid TOML).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

/// A TOML offset date-time (RFC 3339), e.g. `2026-11-11T00:00:00.5Z`.
fn toml_datetime(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("RFC 3339")
}

fn rate_spec(rate: u32, per: &str, burst: u32) -> String {
    format!(
        "{{ rate = {rate}, per = {}, burst = {burst} }}",
        toml_str(per)
    )
}
