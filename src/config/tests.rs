//! Unit tests for `config`: the example files load, and every error names the file, the
//! line:column and the field. Positions are computed from the TOML text of each test
//! (`pos_of`), so a test reads as "the error points at this token".

use super::*;

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use time::macros::datetime;

/// A small valid gateway.toml; tests inject faults with `str::replace`.
const GATEWAY: &str = r#"[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"
header_read_timeout = "5s"
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]

[redis]
url = "redis://127.0.0.1:6379/0"

[upstream]
url = "http://127.0.0.1:3000"

[identity]
mode = "jwt"
jwt_secret_env = "FG_TEST_JWT"

[limits]
per_ip = { rate = 20, per = "1s", burst = 40 }

[orders]
sink = "http"
http_url = "http://127.0.0.1:3000/flashgate/orders"
"#;

/// A small valid campaign file.
const CAMPAIGN: &str = r#"id = "sale"
name = "Test sale"
starts_at = 2026-11-11T00:00:00+08:00
ends_at = 2026-11-11T00:30:00+08:00
payment_window = "30m"
per_user_limit = 1

[[items]]
sku = "phone-black"
stock = 10
price_cents = 99900

[[items]]
sku = "phone-white"
stock = 5
price_cents = 99900
"#;

/// Every secret the configs above (and the example config) name.
fn env(name: &str) -> Option<String> {
    match name {
        "FG_TEST_JWT"
        | "FLASHGATE_JWT_SECRET"
        | "FLASHGATE_PAYMENT_SECRET"
        | "FLASHGATE_ADMIN_TOKEN"
        | "FLASHGATE_SINK_SECRET" => Some(format!("secret-of-{name}")),
        _ => None,
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// [`env`] without the variables named in `without`.
fn env_without(without: &'static [&'static str]) -> impl Fn(&str) -> Option<String> {
    move |name| (!without.contains(&name)).then(|| env(name)).flatten()
}

/// A gateway.toml and campaign files written into a fresh temporary directory.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(gateway: &str, campaigns: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("gateway.toml"), gateway).unwrap();
        fs::create_dir(dir.path().join("campaigns")).unwrap();
        for (name, text) in campaigns {
            fs::write(dir.path().join("campaigns").join(name), text).unwrap();
        }
        Fixture { dir }
    }

    fn gateway(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    fn campaign(&self, name: &str) -> PathBuf {
        self.dir.path().join("campaigns").join(name)
    }

    fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&self.gateway(), &env)
    }

    #[track_caller]
    fn load_err(&self) -> ConfigError {
        match self.load() {
            Ok(_) => panic!("expected a configuration error, got Ok"),
            Err(e) => e,
        }
    }
}

/// Loads a faulty gateway.toml next to the valid campaign; returns the error.
#[track_caller]
fn gateway_err(gateway: &str) -> (Fixture, ConfigError) {
    let fx = Fixture::new(gateway, &[("sale.toml", CAMPAIGN)]);
    let err = fx.load_err();
    (fx, err)
}

/// Loads the valid gateway.toml with one faulty campaign; returns the error.
#[track_caller]
fn campaign_err(campaign: &str) -> (Fixture, ConfigError) {
    let fx = Fixture::new(GATEWAY, &[("sale.toml", campaign)]);
    let err = fx.load_err();
    (fx, err)
}

/// 1-based (line, column) of the first occurrence of `needle` in `src`.
#[track_caller]
fn pos_of(src: &str, needle: &str) -> (usize, usize) {
    let offset = src
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the test TOML"));
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (line, col)
}

/// 1-based (line, column) just after the first occurrence of `before` in `src`: where
/// the value of `key = ` starts.
#[track_caller]
fn pos_after(src: &str, before: &str) -> (usize, usize) {
    let (line, col) = pos_of(src, before);
    (line, col + before.chars().count())
}

/// The error is in `file` at `(line, col)`, its message names `field`, and Display
/// renders `path:line:col: message`.
#[track_caller]
fn assert_error(err: &ConfigError, file: &Path, (line, col): (usize, usize), field: &str) {
    assert_eq!(err.file, file, "wrong file in {err}");
    assert_eq!(err.position, Some((line, col)), "wrong position in {err}");
    assert!(
        err.message.contains(field),
        "message does not name the field {field:?}: {err}"
    );
    let shown = err.to_string();
    let prefix = format!("{}:{line}:{col}: ", file.display());
    assert!(
        shown.starts_with(&prefix),
        "Display {shown:?} does not start with {prefix:?}"
    );
    assert!(shown.ends_with(&err.message), "Display {shown:?}");
}

mod one_pass;

// === the example configuration ===

fn example(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(relative)
}

#[test]
fn example_config_loads() {
    let path = example("gateway.toml");
    let c = Config::load(&path, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_is_example(&c, &path);
}

/// The example files, with `campaigns_dir` moved to the top level (where config.rs
/// expects it) until the bug above is settled; everything else as shipped.
fn example_fixture() -> Fixture {
    let src = fs::read_to_string(example("gateway.toml")).unwrap();
    let line = "campaigns_dir = \"campaigns\"\n";
    assert!(src.contains(line), "the example no longer has {line:?}");
    let moved = format!("{line}{}", src.replace(line, ""));
    let demo = fs::read_to_string(example("campaigns/demo.toml")).unwrap();
    Fixture::new(&moved, &[("demo.toml", &demo)])
}

#[test]
fn example_config_loads_with_campaigns_dir_at_top_level() {
    let fx = example_fixture();
    let c = fx.load().unwrap_or_else(|e| panic!("{e}"));
    assert_is_example(&c, &fx.gateway());
}

/// Every value of config/gateway.toml and config/campaigns/demo.toml.
#[track_caller]
fn assert_is_example(c: &Config, path: &Path) {
    assert_eq!(c.path, path);
    assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.server.admin_listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.server.header_read_timeout.0, Duration::from_secs(5));
    assert_eq!(c.server.max_body_bytes, 16384);
    assert_eq!(
        c.server.trusted_proxies,
        vec!["127.0.0.1/32".parse::<IpNet>().unwrap()]
    );
    assert_eq!(c.server.max_inflight, 20000);
    assert_eq!(c.redis.url, "redis://127.0.0.1:6379/0");
    assert_eq!(c.redis.key_prefix, "fg");
    assert_eq!(c.redis.command_timeout.0, Duration::from_millis(250));
    assert_eq!(c.upstream.url, "http://127.0.0.1:3000");
    assert_eq!(c.upstream.timeout.0, Duration::from_secs(10));
    assert_eq!(c.identity.mode, IdentityMode::Jwt);
    assert_eq!(
        c.limits.per_ip,
        Some(RateSpec {
            rate: 20,
            per: HumanDuration(Duration::from_secs(1)),
            burst: 40
        })
    );
    assert_eq!(
        c.limits.per_user,
        Some(RateSpec {
            rate: 5,
            per: HumanDuration(Duration::from_secs(1)),
            burst: 10
        })
    );
    assert_eq!(c.payment.tolerance.0, Duration::from_secs(300));
    assert_eq!(c.orders.sink, SinkKind::Http);
    assert_eq!(
        c.orders.http_url.as_deref(),
        Some("http://127.0.0.1:3000/flashgate/orders")
    );
    assert_eq!(c.campaigns_dir, path.parent().unwrap().join("campaigns"));

    let s = &c.secrets;
    assert_eq!(
        s.jwt_secret.as_deref(),
        Some("secret-of-FLASHGATE_JWT_SECRET")
    );
    assert_eq!(
        s.payment_secret.as_deref(),
        Some("secret-of-FLASHGATE_PAYMENT_SECRET")
    );
    assert_eq!(
        s.admin_token.as_deref(),
        Some("secret-of-FLASHGATE_ADMIN_TOKEN")
    );
    assert_eq!(
        s.sink_secret.as_deref(),
        Some("secret-of-FLASHGATE_SINK_SECRET")
    );
    assert_eq!(s.postgres_url, None);

    let [demo] = c.campaigns.as_slice() else {
        panic!("expected exactly the demo campaign: {:?}", c.campaigns);
    };
    assert_eq!(demo.id, "demo");
    assert_eq!(demo.starts_at, datetime!(2026-01-01 0:00 UTC));
    assert_eq!(demo.ends_at, datetime!(2036-01-01 0:00 UTC));
    assert_eq!(demo.payment_window, Duration::from_secs(15));
    assert_eq!(demo.per_user_limit, 1);
    assert_eq!(demo.limits, LimitsConfig::default());
    assert_eq!(
        demo.items,
        vec![
            Item {
                sku: "phone-x-128g-black".into(),
                stock: 100,
                price_cents: 99900
            },
            Item {
                sku: "phone-x-128g-white".into(),
                stock: 50,
                price_cents: 99900
            },
        ]
    );
    assert_eq!(demo.file, c.campaigns_dir.join("demo.toml"));
}

#[test]
fn secrets_never_show_in_debug() {
    let c = example_fixture().load().unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("secret-of-"), "{shown}");
    assert!(shown.contains("<set>"));
}

#[test]
fn fixture_loads_with_defaults() {
    let fx = Fixture::new(GATEWAY, &[("sale.toml", CAMPAIGN)]);
    let c = fx.load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.redis.key_prefix, "fg");
    assert_eq!(c.payment.tolerance.0, Duration::from_secs(300));
    assert_eq!(c.admin.token_env, None);
    assert_eq!(c.secrets.admin_token, None);
    assert_eq!(
        c.secrets.jwt_secret.as_deref(),
        Some("secret-of-FG_TEST_JWT")
    );
    assert_eq!(c.limits.per_user, None);
    let sale = &c.campaigns[0];
    assert_eq!(sale.starts_at, datetime!(2026-11-11 0:00 +8));
    assert_eq!(sale.ends_at, datetime!(2026-11-10 16:30 UTC));
    assert_eq!(sale.payment_window, Duration::from_secs(30 * 60));
    assert_eq!(sale.items.len(), 2);
}

#[test]
fn campaigns_load_sorted_by_file_name() {
    let second = CAMPAIGN.replace(r#"id = "sale""#, r#"id = "a-second""#);
    let fx = Fixture::new(
        GATEWAY,
        &[
            ("b.toml", CAMPAIGN),
            ("a.toml", &second),
            ("notes.txt", "not a campaign"),
        ],
    );
    let ids: Vec<_> = fx
        .load()
        .unwrap()
        .campaigns
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["a-second", "sale"]);
}

#[test]
fn header_identity_needs_no_jwt_secret() {
    let gw = GATEWAY.replace(r#"mode = "jwt""#, r#"mode = "header""#);
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    let lookup = env_without(&["FG_TEST_JWT", "FLASHGATE_JWT_SECRET"]);
    let c = Config::load(&fx.gateway(), &lookup).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.identity.mode, IdentityMode::Header);
    assert_eq!(c.identity.header, "X-User-Id");
    assert_eq!(c.secrets.jwt_secret, None);
}

// === gateway.toml errors ===

#[test]
fn unknown_key_in_gateway() {
    let gw = GATEWAY.replace("[redis]\n", "[redis]\ncolour = \"red\"\n");
    let (fx, err) = gateway_err(&gw);
    assert_error(&err, &fx.gateway(), pos_of(&gw, "colour"), "colour");
}

#[test]
fn unknown_key_in_inline_table() {
    let gw = GATEWAY.replace("burst = 40 }", "burst = 40, jitter = 1 }");
    let (fx, err) = gateway_err(&gw);
    assert_error(&err, &fx.gateway(), pos_of(&gw, "jitter"), "jitter");
}

#[test]
fn unknown_section_in_gateway() {
    let gw = format!("{GATEWAY}\n[cache]\nsize = 1\n");
    let (fx, err) = gateway_err(&gw);
    assert_error(&err, &fx.gateway(), pos_of(&gw, "cache"), "cache");
}

#[test]
fn bad_duration_points_at_value() {
    let gw = GATEWAY.replace(r#""5s""#, r#""5 parsecs""#);
    let (fx, err) = gateway_err(&gw);
    let at = pos_after(&gw, "header_read_timeout = ");
    assert_error(&err, &fx.gateway(), at, "invalid duration \"5 parsecs\"");
}

#[test]
fn bad_duration_names_field() {
    let gw = GATEWAY.replace(r#""5s""#, r#""5 parsecs""#);
    let (fx, err) = gateway_err(&gw);
    let at = pos_after(&gw, "header_read_timeout = ");
    assert_error(&err, &fx.gateway(), at, "header_read_timeout");
}

#[test]
fn bad_cidr_points_at_the_element() {
    let gw = GATEWAY.replace("10.0.0.0/8", "10.0.0.0/33");
    let (fx, err) = gateway_err(&gw);
    let at = pos_of(&gw, "\"10.0.0.0/33\"");
    assert_error(&err, &fx.gateway(), at, "invalid CIDR \"10.0.0.0/33\"");
    assert!(err.message.contains("server.trusted_proxies[1]"), "{err}");
}

#[test]
fn bad_cidr_names_field() {
    let gw = GATEWAY.replace("10.0.0.0/8", "10.0.0.0/33");
    let (fx, err) = gateway_err(&gw);
    let at = pos_of(&gw, "\"10.0.0.0/33\"");
    assert_error(&err, &fx.gateway(), at, "trusted_proxies");
}

#[test]
fn missing_jwt_secret_env_var() {
    let fx = Fixture::new(GATEWAY, &[("sale.toml", CAMPAIGN)]);
    let err = Config::load(&fx.gateway(), &env_without(&["FG_TEST_JWT"])).unwrap_err();
    let at = pos_of(GATEWAY, "jwt_secret_env");
    assert_error(&err, &fx.gateway(), at, "identity.jwt_secret_env");
    assert!(err.message.contains("FG_TEST_JWT"), "{err}");
}

#[test]
fn http_sink_requires_url() {
    let gw = GATEWAY.replace(
        "http_url = \"http://127.0.0.1:3000/flashgate/orders\"\n",
        "",
    );
    let (fx, err) = gateway_err(&gw);
    assert_error(&err, &fx.gateway(), pos_of(&gw, "sink"), "orders.http_url");
}

#[test]
fn outbox_delivery_defaults() {
    let fx = Fixture::new(GATEWAY, &[("sale.toml", CAMPAIGN)]);
    let c = Config::load(&fx.gateway(), &env).expect("valid");
    assert_eq!(c.orders.delivery_concurrency, 16);
    assert_eq!(c.orders.sink_timeout.0, Duration::from_secs(5));
    assert_eq!(c.orders.give_up_after.0, Duration::from_secs(24 * 3600));
    assert_eq!(c.orders.retry_max.0, Duration::from_secs(300));
    assert_eq!(
        c.orders.max_attempts, None,
        "no bound by count unless asked"
    );
}

#[test]
fn outbox_delivery_bounds_are_checked_where_written() {
    for (line, field) in [
        ("delivery_concurrency = 0", "orders.delivery_concurrency"),
        ("delivery_concurrency = 5000", "orders.delivery_concurrency"),
        ("sink_timeout = \"0s\"", "orders.sink_timeout"),
        ("give_up_after = \"0s\"", "orders.give_up_after"),
        ("max_attempts = 0", "orders.max_attempts"),
    ] {
        let gw = format!("{GATEWAY}{line}\n");
        let (fx, err) = gateway_err(&gw);
        let key = line.split(' ').next().unwrap();
        assert_error(&err, &fx.gateway(), pos_of(&gw, key), field);
    }
    let gw = format!(
        "{GATEWAY}delivery_concurrency = 4\nsink_timeout = \"750ms\"\ngive_up_after = \"3d\"\nmax_attempts = 50\n"
    );
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    let c = Config::load(&fx.gateway(), &env).expect("valid");
    assert_eq!(c.orders.delivery_concurrency, 4);
    assert_eq!(c.orders.sink_timeout.0, Duration::from_millis(750));
    assert_eq!(c.orders.give_up_after.0, Duration::from_secs(3 * 86_400));
    assert_eq!(c.orders.max_attempts, Some(50));
}

#[test]
fn postgres_sink_requires_url_env_var() {
    let gw = GATEWAY.replace(r#"sink = "http""#, r#"sink = "postgres""#);
    let (fx, err) = gateway_err(&gw);
    // postgres_url_env is not written in the file: only the file and field can be named.
    assert_eq!(err.file, fx.gateway());
    assert!(err.message.contains("orders.postgres_url_env"), "{err}");
    assert!(err.message.contains("FLASHGATE_POSTGRES_URL"), "{err}");
}

#[test]
fn missing_campaigns_dir() {
    let gw = format!("campaigns_dir = \"nowhere\"\n{GATEWAY}");
    let fx = Fixture::new(&gw, &[]);
    let err = fx.load_err();
    let at = pos_after(&gw, "campaigns_dir = ");
    assert_error(&err, &fx.gateway(), at, "campaigns_dir");
}

#[test]
fn upstream_url_must_be_http() {
    let gw = GATEWAY.replace("\"http://127.0.0.1:3000\"", "\"ftp://127.0.0.1:3000\"");
    let (fx, err) = gateway_err(&gw);
    assert_eq!(err.file, fx.gateway());
    assert!(err.message.contains("upstream.url"), "{err}");
}

#[test]
fn upstream_url_error_points_at_upstream() {
    let gw = GATEWAY.replace("\"http://127.0.0.1:3000\"", "\"ftp://127.0.0.1:3000\"");
    let (fx, err) = gateway_err(&gw);
    let at = pos_of(&gw, "url = \"ftp://");
    assert_error(&err, &fx.gateway(), at, "upstream.url");
}

#[test]
fn zero_rate_is_refused() {
    let gw = GATEWAY.replace("rate = 20", "rate = 0");
    let (fx, err) = gateway_err(&gw);
    assert_eq!(err.file, fx.gateway());
    assert!(err.message.contains("limits.per_ip"), "{err}");
}

#[test]
fn zero_rate_error_has_position() {
    let gw = GATEWAY.replace("rate = 20", "rate = 0");
    let (fx, err) = gateway_err(&gw);
    assert_error(&err, &fx.gateway(), pos_of(&gw, "per_ip"), "limits.per_ip");
}

// === campaign errors ===

#[test]
fn unknown_key_in_campaign() {
    let c = CAMPAIGN.replace("per_user_limit = 1\n", "per_user_limit = 1\ndiscount = 5\n");
    let (fx, err) = campaign_err(&c);
    let at = pos_of(&c, "discount");
    assert_error(&err, &fx.campaign("sale.toml"), at, "discount");
}

#[test]
fn unknown_key_in_campaign_item() {
    let c = CAMPAIGN.replace("stock = 5\n", "stock = 5\ncolour = \"white\"\n");
    let (fx, err) = campaign_err(&c);
    let at = pos_of(&c, "colour");
    assert_error(&err, &fx.campaign("sale.toml"), at, "colour");
}

#[test]
fn bad_payment_window_points_at_value() {
    let c = CAMPAIGN.replace(r#""30m""#, r#""half an hour""#);
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "payment_window = ");
    assert_error(&err, &fx.campaign("sale.toml"), at, "invalid duration");
}

#[test]
fn bad_payment_window_names_field() {
    let c = CAMPAIGN.replace(r#""30m""#, r#""half an hour""#);
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "payment_window = ");
    assert_error(&err, &fx.campaign("sale.toml"), at, "payment_window");
}

#[test]
fn ends_at_before_starts_at() {
    let c = CAMPAIGN.replace("2026-11-11T00:30:00+08:00", "2026-11-10T23:59:59+08:00");
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "ends_at = ");
    assert_error(&err, &fx.campaign("sale.toml"), at, "field `ends_at`");
}

#[test]
fn ends_at_equal_to_starts_at() {
    let c = CAMPAIGN.replace("2026-11-11T00:30:00+08:00", "2026-11-10T16:00:00Z");
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "ends_at = ");
    assert_error(&err, &fx.campaign("sale.toml"), at, "field `ends_at`");
}

#[test]
fn datetime_without_offset() {
    let c = CAMPAIGN.replace("2026-11-11T00:00:00+08:00", "2026-11-11T00:00:00");
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "starts_at = ");
    assert_error(&err, &fx.campaign("sale.toml"), at, "field `starts_at`");
    assert!(err.message.contains("offset"), "{err}");
}

#[test]
fn date_without_time() {
    let c = CAMPAIGN.replace("2026-11-11T00:30:00+08:00", "2026-11-12");
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "ends_at = ");
    assert_error(&err, &fx.campaign("sale.toml"), at, "field `ends_at`");
}

#[test]
fn duplicate_sku() {
    let c = CAMPAIGN.replace(r#""phone-white""#, r#""phone-black""#);
    let (fx, err) = campaign_err(&c);
    // The second occurrence is the duplicate: the one followed by `stock = 5`.
    let at = pos_of(&c, "\"phone-black\"\nstock = 5");
    assert_error(&err, &fx.campaign("sale.toml"), at, "field `items.sku`");
    assert!(err.message.contains("duplicate"), "{err}");
}

#[test]
fn negative_stock() {
    let c = CAMPAIGN.replace("stock = 5", "stock = -5");
    let (fx, err) = campaign_err(&c);
    let at = pos_of(&c, "-5");
    assert_error(&err, &fx.campaign("sale.toml"), at, "field `items.stock`");
}

#[test]
fn negative_price() {
    let c = CAMPAIGN.replacen("price_cents = 99900", "price_cents = -1", 1);
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "price_cents = ");
    assert_error(
        &err,
        &fx.campaign("sale.toml"),
        at,
        "field `items.price_cents`",
    );
}

#[test]
fn per_user_limit_zero() {
    let c = CAMPAIGN.replace("per_user_limit = 1", "per_user_limit = 0");
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "per_user_limit = ");
    assert_error(
        &err,
        &fx.campaign("sale.toml"),
        at,
        "field `per_user_limit`",
    );
}

#[test]
fn invalid_campaign_id() {
    let c = CAMPAIGN.replace(r#""sale""#, r#""sale/../x""#);
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "id = ");
    assert_error(&err, &fx.campaign("sale.toml"), at, "field `id`");
}

#[test]
fn campaign_without_items() {
    let c = format!(
        "{}items = []\n",
        &CAMPAIGN[..CAMPAIGN.find("[[items]]").unwrap()]
    );
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "items = ");
    assert_error(&err, &fx.campaign("sale.toml"), at, "field `items`");
}

#[test]
fn duplicate_campaign_id() {
    let fx = Fixture::new(GATEWAY, &[("a.toml", CAMPAIGN), ("b.toml", CAMPAIGN)]);
    let err = fx.load_err();
    // Files load in name order, so the second one, b.toml, is the duplicate.
    assert_error(&err, &fx.campaign("b.toml"), (1, 1), "field `id`");
    assert!(err.message.contains("\"sale\""), "{err}");
}

#[test]
fn campaign_zero_rate_is_refused() {
    let c = CAMPAIGN.replace(
        "per_user_limit = 1\n",
        "per_user_limit = 1\nlimits.per_user = { rate = 0, per = \"1s\", burst = 1 }\n",
    );
    let (fx, err) = campaign_err(&c);
    assert_eq!(err.file, fx.campaign("sale.toml"));
    assert!(err.message.contains("limits.per_user"), "{err}");
}

#[test]
fn campaign_zero_rate_error_has_position() {
    let c = CAMPAIGN.replace(
        "per_user_limit = 1\n",
        "per_user_limit = 1\nlimits.per_user = { rate = 0, per = \"1s\", burst = 1 }\n",
    );
    let (fx, err) = campaign_err(&c);
    let at = pos_of(&c, "limits.per_user");
    assert_error(&err, &fx.campaign("sale.toml"), at, "limits.per_user");
}

// === Display ===

#[test]
fn display_with_position() {
    let err = ConfigError {
        file: PathBuf::from("config/campaigns/x.toml"),
        position: Some((3, 7)),
        message: "field `ends_at`: must be after starts_at".into(),
    };
    assert_eq!(
        err.to_string(),
        "config/campaigns/x.toml:3:7: field `ends_at`: must be after starts_at"
    );
}

#[test]
fn display_without_position() {
    let err = ConfigError {
        file: PathBuf::from("config/gateway.toml"),
        position: None,
        message: "cannot read: gone".into(),
    };
    assert_eq!(err.to_string(), "config/gateway.toml: cannot read: gone");
}

#[test]
fn missing_gateway_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = Config::load(&path, &env).unwrap_err();
    assert_eq!(err.file, path);
    assert_eq!(err.position, None);
    assert!(err.message.starts_with("cannot read"), "{err}");
}

#[test]
fn bad_redis_url_points_at_it() {
    let gw = GATEWAY.replace("redis://127.0.0.1:6379/0", "http://127.0.0.1:6379");
    let (fx, err) = gateway_err(&gw);
    let at = pos_of(&gw, "url = \"http://127.0.0.1:6379");
    assert_error(&err, &fx.gateway(), at, "redis.url");
}

#[test]
fn bad_cluster_url_points_at_the_element() {
    let gw = GATEWAY.replace(
        "url = \"redis://127.0.0.1:6379/0\"",
        "url = \"redis://127.0.0.1:6379/0\"\ncluster_urls = [\"redis://127.0.0.1:7000\", \"tcp://x\"]",
    );
    let (fx, err) = gateway_err(&gw);
    let at = pos_of(&gw, "\"tcp://x\"");
    assert_error(&err, &fx.gateway(), at, "redis.cluster_urls[1]");
    assert!(err.message.contains("tcp://x"), "{err}");
}

#[test]
fn cluster_urls_load() {
    let gw = GATEWAY.replace(
        "url = \"redis://127.0.0.1:6379/0\"",
        "cluster_urls = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]",
    );
    let c = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)])
        .load()
        .expect("loads");
    assert_eq!(c.redis.cluster_urls.len(), 2);
}

#[test]
fn replica_ack_loads_and_is_refused_on_a_cluster() {
    let gw = GATEWAY.replace(
        "url = \"redis://127.0.0.1:6379/0\"",
        "url = \"redis://127.0.0.1:6379/0\"\nreplica_ack = 1",
    );
    let c = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)])
        .load()
        .expect("loads");
    assert_eq!(c.redis.replica_ack, 1);
    let gw = GATEWAY.replace(
        "url = \"redis://127.0.0.1:6379/0\"",
        "cluster_urls = [\"redis://10.0.0.1:7000\"]\nreplica_ack = 1",
    );
    let (fx, err) = gateway_err(&gw);
    assert_error(
        &err,
        &fx.gateway(),
        pos_of(&gw, "replica_ack"),
        "redis.replica_ack",
    );
}

const SENTINEL: &str = "sentinel = { master = \"fg\", urls = [\"redis://10.0.0.5:26379\", \"redis://10.0.0.6:26379\"] }";

#[test]
fn sentinel_loads_instead_of_url() {
    let gw = GATEWAY.replace("url = \"redis://127.0.0.1:6379/0\"", SENTINEL);
    let c = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)])
        .load()
        .expect("loads");
    let s = c.redis.sentinel.as_ref().expect("sentinel");
    assert_eq!((s.master.as_str(), s.urls.len()), ("fg", 2));
    assert_eq!(c.redis.urls(), s.urls.as_slice());
}

#[test]
fn sentinel_with_url_or_a_cluster_is_refused() {
    let both = GATEWAY.replace(
        "url = \"redis://127.0.0.1:6379/0\"",
        &format!("url = \"redis://127.0.0.1:6379/0\"\n{SENTINEL}"),
    );
    let (fx, err) = gateway_err(&both);
    assert_error(&err, &fx.gateway(), pos_of(&both, "url ="), "redis.url");
    assert!(err.message.contains("replaces redis.url"), "{err}");

    let cluster = GATEWAY.replace(
        "url = \"redis://127.0.0.1:6379/0\"",
        &format!("cluster_urls = [\"redis://10.0.0.1:7000\"]\n{SENTINEL}"),
    );
    let (fx, err) = gateway_err(&cluster);
    assert_error(
        &err,
        &fx.gateway(),
        pos_of(&cluster, "sentinel"),
        "redis.sentinel",
    );
}

#[test]
fn a_sentinel_without_master_or_urls_or_with_mixed_schemes_is_refused() {
    for (table, want) in [
        (
            "{ master = \"\", urls = [\"redis://a:26379\"] }",
            "master must name",
        ),
        ("{ master = \"fg\", urls = [] }", "at least one sentinel"),
        (
            "{ master = \"fg\", urls = [\"redis://a:26379\", \"rediss://b:26379\"] }",
            "mix rediss://",
        ),
        (
            "{ master = \"fg\", urls = [\"tcp://a\"] }",
            "invalid Redis URL",
        ),
        ("{ master = \"fg\", url = \"redis://a:26379\" }", "url"),
    ] {
        let gw = GATEWAY.replace(
            "url = \"redis://127.0.0.1:6379/0\"",
            &format!("sentinel = {table}"),
        );
        let (fx, err) = gateway_err(&gw);
        assert!(err.message.contains(want), "{table}: {err}");
        assert_eq!(err.file, fx.gateway(), "{table}");
        let line = err.position.map(|(line, _)| line);
        assert_eq!(line, Some(pos_of(&gw, "sentinel").0), "{table}: {err}");
    }
}

// === every problem, secrets, warnings (Config::check) ===

fn check(fx: &Fixture, env: EnvLookup<'_>) -> Report {
    Config::check(&fx.gateway(), SecretSource::Env(env))
}

#[track_caller]
fn errors(report: &Report) -> Vec<String> {
    match &report.config {
        Ok(_) => panic!("expected errors, the config loaded"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[track_caller]
fn has(lines: &[String], needle: &str) {
    assert!(
        lines.iter().any(|l| l.contains(needle)),
        "no line contains {needle:?}: {lines:#?}"
    );
}

#[test]
fn every_missing_secret_is_an_error_at_the_key_naming_it() {
    let gw =
        format!("{GATEWAY}\n[payment]\nsecret_env = \"PAY\"\n\n[admin]\ntoken_env = \"ADMIN\"\n");
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    let report = check(&fx, &no_env);
    let errs = errors(&report);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    let at = |needle: &str| {
        let (l, c) = pos_of(&gw, needle);
        format!("gateway.toml:{l}:{c}: ")
    };
    has(
        &errs,
        &format!("{}field `identity.jwt_secret_env`", at("jwt_secret_env")),
    );
    has(&errs, "FG_TEST_JWT");
    has(
        &errs,
        &format!("{}field `payment.secret_env`", at("secret_env = \"PAY")),
    );
    has(
        &errs,
        &format!("{}field `admin.token_env`", at("token_env")),
    );
    has(&errs, "ADMIN is not set");
    // The sink secret's key is not written: the error points at [orders].
    has(
        &errs,
        &format!("{}field `orders.http_secret_env`", at("[orders]")),
    );
    has(&errs, "FLASHGATE_SINK_SECRET");
}

#[test]
fn an_empty_secret_is_missing() {
    let fx = Fixture::new(GATEWAY, &[("sale.toml", CAMPAIGN)]);
    let lookup = |name: &str| match name {
        "FLASHGATE_SINK_SECRET" => Some(" ".to_string()),
        _ => env(name),
    };
    let errs = errors(&check(&fx, &lookup));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    has(&errs, "FLASHGATE_SINK_SECRET is not set or empty");
}

#[test]
fn a_postgres_url_that_does_not_parse_is_refused_without_echoing_it() {
    let gw = GATEWAY.replace(r#"sink = "http""#, r#"sink = "postgres""#);
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    let lookup = |name: &str| match name {
        "FLASHGATE_POSTGRES_URL" => Some("postgres://u:hunter2@h/db?sslmode=bogus".into()),
        _ => env(name),
    };
    let errs = errors(&check(&fx, &lookup));
    has(
        &errs,
        "FLASHGATE_POSTGRES_URL is not a PostgreSQL connection URL",
    );
    assert!(!errs.iter().any(|e| e.contains("hunter2")), "{errs:#?}");
}

#[test]
fn without_secrets_nothing_is_read() {
    let fx = Fixture::new(GATEWAY, &[("sale.toml", CAMPAIGN)]);
    let c = Config::check(&fx.gateway(), SecretSource::Skip)
        .config
        .unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(c.secrets.jwt_secret, None);
    assert_eq!(c.secrets.payment_secret, None);
}

#[test]
fn without_secrets_an_empty_variable_name_is_still_an_error() {
    let gw = GATEWAY.replace(
        r#"jwt_secret_env = "FG_TEST_JWT""#,
        r#"jwt_secret_env = """#,
    );
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    let errs = errors(&Config::check(&fx.gateway(), SecretSource::Skip));
    has(
        &errs,
        "field `identity.jwt_secret_env`: must name an environment variable",
    );
}

#[test]
fn no_admin_token_env_is_a_warning() {
    let fx = Fixture::new(GATEWAY, &[("sale.toml", CAMPAIGN)]);
    let report = check(&fx, &env);
    assert!(report.config.is_ok());
    let w: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
    has(&w, "no `admin.token_env`: /admin/*");
}

#[test]
fn errors_of_every_table_and_every_file_are_reported() {
    let gw = GATEWAY
        .replace(r#""5s""#, r#""5 parsecs""#)
        .replace("[redis]\n", "[redis]\ncolour = \"red\"\n")
        .replace("rate = 20", "rate = 0");
    let bad_item = CAMPAIGN.replace("stock = 5\n", "stock = \"five\"\n");
    let bad_window = CAMPAIGN
        .replace(r#"id = "sale""#, r#"id = "other""#)
        .replace(r#""30m""#, r#""30 fortnights""#);
    let fx = Fixture::new(&gw, &[("a.toml", &bad_item), ("b.toml", &bad_window)]);
    let errs = errors(&check(&fx, &env));
    has(&errs, "field `server.header_read_timeout`");
    has(&errs, "unknown key `colour`");
    has(&errs, "field `limits.per_ip`");
    has(&errs, "a.toml:");
    has(&errs, "b.toml:");
    assert_eq!(errs.len(), 5, "{errs:#?}");
}

#[test]
fn every_bad_item_is_reported_with_its_sku() {
    let c = CAMPAIGN
        .replace("stock = 10\n", "stock = \"ten\"\n")
        .replace("stock = 5\n", "stock = -5\n");
    let fx = Fixture::new(GATEWAY, &[("sale.toml", &c)]);
    let errs = errors(&check(&fx, &env));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    let (l, col) = pos_after(&c, "stock = ");
    has(
        &errs,
        &format!(
            "sale.toml:{l}:{col}: field `items.stock` (sku `phone-black`): expected an integer, found the string \"ten\""
        ),
    );
    has(
        &errs,
        "field `items.stock` (sku `phone-white`): must not be negative",
    );
}

#[test]
fn a_type_error_is_in_plain_words() {
    let gw = GATEWAY.replace("[limits]\nper_ip = {", "[limits]\nper_user = 5\nper_ip = {");
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    let errs = errors(&check(&fx, &env));
    has(
        &errs,
        "field `limits.per_user`: expected a table, found the integer 5",
    );
    assert!(!errs.iter().any(|e| e.contains("struct")), "{errs:#?}");
}

#[test]
fn a_misspelt_key_gets_a_suggestion() {
    let gw = GATEWAY.replace("header_read_timeout", "header_read_timout");
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    let errs = errors(&check(&fx, &env));
    has(
        &errs,
        "unknown key `header_read_timout`: did you mean `header_read_timeout`?",
    );
}

#[test]
fn a_duplicate_campaign_id_names_both_files() {
    let fx = Fixture::new(GATEWAY, &[("a.toml", CAMPAIGN), ("b.toml", CAMPAIGN)]);
    let errs = errors(&check(&fx, &env));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let first = format!("{}:1:1", fx.campaign("a.toml").display());
    assert!(errs[0].starts_with(&fx.campaign("b.toml").display().to_string()));
    has(&errs, &format!("also in {first}"));
}

#[test]
fn an_ended_campaign_is_a_warning() {
    let c = CAMPAIGN;
    let fx = Fixture::new(GATEWAY, &[("sale.toml", c)]);
    let after = datetime!(2027-01-01 0:00 UTC);
    let report = gateway::check(&fx.gateway(), SecretSource::Env(&env), after);
    assert!(report.config.is_ok());
    let w: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
    let (l, col) = pos_after(c, "ends_at = ");
    has(
        &w,
        &format!("sale.toml:{l}:{col}: campaign `sale` ended at 2026-11-11T00:30:00+08:00"),
    );
}

#[test]
fn an_empty_campaigns_dir_is_a_warning() {
    let fx = Fixture::new(GATEWAY, &[]);
    let report = check(&fx, &env);
    assert!(report.config.is_ok());
    let w: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
    has(&w, "no campaign files");
}

#[test]
fn an_https_upstream_is_accepted() {
    let gw = GATEWAY.replace("\"http://127.0.0.1:3000\"", "\"https://shop.example\"");
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    assert!(fx.load().is_ok());
}

#[test]
fn an_upstream_with_a_query_is_refused() {
    let gw = GATEWAY.replace(
        "\"http://127.0.0.1:3000\"",
        "\"http://127.0.0.1:3000/?a=1\"",
    );
    let (fx, err) = gateway_err(&gw);
    assert_error(
        &err,
        &fx.gateway(),
        pos_of(&gw, "url = \"http://127.0.0.1:3000/?"),
        "upstream.url",
    );
}

#[test]
fn a_sink_url_must_be_http_or_https() {
    let gw = GATEWAY.replace(
        "http_url = \"http://127.0.0.1:3000",
        "http_url = \"ftp://127.0.0.1:3000",
    );
    let (fx, err) = gateway_err(&gw);
    assert_error(
        &err,
        &fx.gateway(),
        pos_of(&gw, "http_url"),
        "orders.http_url",
    );
    assert!(err.message.contains("http://"), "{err}");
}

#[test]
fn a_bad_identity_header_is_refused() {
    let gw = GATEWAY.replace(
        "jwt_secret_env = \"FG_TEST_JWT\"\n",
        "jwt_secret_env = \"FG_TEST_JWT\"\nheader = \"X User\"\n",
    );
    let (fx, err) = gateway_err(&gw);
    assert_error(
        &err,
        &fx.gateway(),
        pos_of(&gw, "header = "),
        "identity.header",
    );
}

// === admission (raffle, instant draw) ===

const RAFFLE: &str = "admission = \"raffle\"\n\n[raffle]\nentries_open = 2026-11-10T20:00:00+08:00\nclaim_window = \"10m\"\n\n";

/// CAMPAIGN with `extra` inserted before its first `[[items]]`.
fn with_admission(extra: &str) -> String {
    CAMPAIGN.replacen("[[items]]", &format!("{extra}[[items]]"), 1)
}

#[test]
fn raffle_and_instant_draw_load() {
    let fx = Fixture::new(GATEWAY, &[("sale.toml", &with_admission(RAFFLE))]);
    let c = &fx.load().unwrap().campaigns[0];
    assert_eq!(
        c.admission,
        Admission::Raffle {
            entries_open: datetime!(2026-11-10 12:00 UTC),
            claim_window: Duration::from_secs(600),
        }
    );
    let draw = "admission = \"instant-draw\"\n[instant_draw]\nwin_probability = 0.05\n";
    let fx = Fixture::new(GATEWAY, &[("sale.toml", &with_admission(draw))]);
    let c = &fx.load().unwrap().campaigns[0];
    assert_eq!(
        c.admission,
        Admission::InstantDraw {
            win_probability: 0.05
        }
    );
    let fx = Fixture::new(GATEWAY, &[("sale.toml", CAMPAIGN)]);
    assert_eq!(
        fx.load().unwrap().campaigns[0].admission,
        Admission::FirstCome
    );
}

#[test]
fn entries_open_after_starts_at_is_an_error() {
    let c = with_admission(&RAFFLE.replace("2026-11-10T20:00:00", "2026-11-11T00:00:01"));
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "entries_open = ");
    assert_error(&err, &fx.campaign("sale.toml"), at, "raffle.entries_open");
    assert!(err.message.contains("before starts_at"), "{err}");
}

#[test]
fn a_probability_outside_zero_to_one_is_an_error() {
    for p in ["0.0", "1.5", "-0.1", "nan"] {
        let c = with_admission(&format!(
            "admission = \"instant-draw\"\n[instant_draw]\nwin_probability = {p}\n"
        ));
        let (fx, err) = campaign_err(&c);
        let at = pos_after(&c, "win_probability = ");
        assert_error(
            &err,
            &fx.campaign("sale.toml"),
            at,
            "instant_draw.win_probability",
        );
    }
}

#[test]
fn a_raffle_table_on_a_first_come_campaign_is_an_error() {
    let c = with_admission(&RAFFLE.replace("admission = \"raffle\"\n", ""));
    let (fx, err) = campaign_err(&c);
    assert!(err.message.contains("admission = \"raffle\""), "{err}");
    assert_eq!(err.file, fx.campaign("sale.toml"));
    assert_eq!(
        err.position.map(|p| p.0),
        Some(pos_of(&c, "[raffle]").0),
        "{err}"
    );
}

#[test]
fn a_raffle_without_its_table_or_a_bad_mode_is_an_error() {
    let c = with_admission("admission = \"raffle\"\n");
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "admission = ");
    assert_error(&err, &fx.campaign("sale.toml"), at, "[raffle]");
    let c = with_admission("admission = \"lottery\"\n");
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "admission = ");
    assert_error(&err, &fx.campaign("sale.toml"), at, "raffle");
    let c = with_admission(&RAFFLE.replace(
        "claim_window = \"10m\"",
        "claim_window = \"10m\"\nseats = 3",
    ));
    let (fx, err) = campaign_err(&c);
    assert_error(
        &err,
        &fx.campaign("sale.toml"),
        pos_of(&c, "seats"),
        "seats",
    );
}

#[test]
fn tls_ca_files_resolve_next_to_the_gateway_file_and_an_unused_one_is_a_warning() {
    let gw = GATEWAY
        .replace(
            "url = \"redis://127.0.0.1:6379/0\"\n",
            "url = \"rediss://127.0.0.1:6379/0\"\nca_file = \"redis-ca.pem\"\n",
        )
        .replace(
            r#"sink = "http""#,
            "sink = \"postgres\"\npostgres_ca_file = \"pg-ca.pem\"",
        );
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    let ca = rcgen::generate_simple_self_signed(vec!["db.example".into()]).unwrap();
    for name in ["redis-ca.pem", "pg-ca.pem"] {
        fs::write(fx.dir.path().join(name), ca.cert.pem()).unwrap();
    }
    let lookup = |name: &str| match name {
        "FLASHGATE_POSTGRES_URL" => Some("postgres://u@h/db?sslmode=disable".into()),
        _ => env(name),
    };
    let report = check(&fx, &lookup);
    let w: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
    has(
        &w,
        "orders.postgres_ca_file is not used: FLASHGATE_POSTGRES_URL has sslmode=disable",
    );
    let c = report.config.unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(c.redis.ca_file, Some(fx.dir.path().join("redis-ca.pem")));
    let pg_ca = fx.dir.path().join("pg-ca.pem");
    assert_eq!(c.orders.postgres_ca_file, Some(pg_ca));
}

#[test]
fn a_stock_beyond_exact_script_arithmetic_is_an_error() {
    let c = CAMPAIGN.replace("stock = 10\n", "stock = 9007199254740992\n");
    let (fx, err) = campaign_err(&c);
    let at = pos_after(&c, "stock = 9");
    let at = (at.0, at.1 - 1);
    assert_error(&err, &fx.campaign("sale.toml"), at, "items.stock");
    let ok = CAMPAIGN.replace("stock = 10\n", "stock = 9007199254740991\n");
    Fixture::new(GATEWAY, &[("sale.toml", &ok)])
        .load()
        .expect("2^53 - 1 loads");
}
