//! One `check` reports every problem of every file, each once, at its exact position:
//! syntax, types, unknown and missing keys and the checks beyond the types together.

use super::*;

/// Every error as `<file name>:<line>:<col>: <message>`, in the order `check` gives.
fn all_errors(fx: &Fixture, env: EnvLookup<'_>) -> Vec<String> {
    let dir = format!("{}/", fx.dir.path().display());
    let errors = errors(&check(fx, env));
    let short = |e: &String| e.replace(&dir, "").replace("campaigns/", "");
    errors.iter().map(short).collect()
}

/// `file:line:col: ` of the first occurrence of `needle` in `src`.
fn at(file: &str, src: &str, needle: &str) -> String {
    let (l, c) = pos_of(src, needle);
    format!("{file}:{l}:{c}: ")
}

#[test]
fn one_check_finds_every_kind_of_problem_in_a_campaign() {
    // A type error, a misspelt key, a too-short duration, a window that ends before it
    // starts, a bad item, a duplicate SKU and two missing keys: once took four runs.
    let c = r#"id = "sale"
starts_at = 2026-11-11T00:00:00+08:00
ends_at = 2026-11-10T00:00:00+08:00
payment_window = "500ms"
per_user_limit = "one"
discont = 5

[[items]]
sku = "a"
stock = "ten"
price_cents = 1

[[items]]
sku = "a"
stock = 1
price_cents = 1

[[items]]
sku = "b"
stock = 2
"#;
    let fx = Fixture::new(GATEWAY, &[("sale.toml", c)]);
    let f = "sale.toml";
    let errs = all_errors(&fx, &env);
    assert_eq!(
        errs,
        [
            format!("{f}:1:1: missing required key `name`"),
            format!("{}field `ends_at`: must be after starts_at", at(f, c, "2026-11-10")),
            format!("{}field `payment_window`: must be at least 1s", at(f, c, "\"500ms\"")),
            format!(
                "{}field `per_user_limit`: expected a whole number (0 or more), found the string \"one\"",
                at(f, c, "\"one\"")
            ),
            format!(
                "{}unknown key `discont` (expected one of `id`, `name`, `starts_at`, `ends_at`, `payment_window`, `per_user_limit`, `limits`, `items`, `admission`, `raffle`, `instant_draw`)",
                at(f, c, "discont")
            ),
            format!(
                "{}field `items.stock` (sku `a`): expected an integer, found the string \"ten\"",
                at(f, c, "\"ten\"")
            ),
            format!(
                "{}field `items.sku` (sku `a`): duplicate sku",
                at(f, c, "\"a\"\nstock = 1")
            ),
            format!(
                "{}in `items` (sku `b`): missing required key `price_cents`",
                at(f, c, "[[items]]\nsku = \"b\"")
            ),
        ]
    );
}

#[test]
fn a_missing_key_names_the_key_at_the_top_of_the_file() {
    let c = CAMPAIGN.replace("name = \"Test sale\"\n", "");
    let fx = Fixture::new(GATEWAY, &[("x.toml", &c)]);
    assert_eq!(
        all_errors(&fx, &env),
        ["x.toml:1:1: missing required key `name`"]
    );
}

#[test]
fn a_missing_key_of_a_table_points_at_its_header() {
    let gw = GATEWAY.replace("admin_listen = \"127.0.0.1:9090\"\n", "");
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    assert_eq!(
        all_errors(&fx, &env),
        ["gateway.toml:1:1: in `server`: missing required key `admin_listen`"]
    );
    let gw = GATEWAY.replace("[upstream]\nurl = \"http://127.0.0.1:3000\"\n", "");
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    assert_eq!(
        all_errors(&fx, &env),
        ["gateway.toml:1:1: missing required key `upstream`"]
    );
}

#[test]
fn positions_are_exact_in_multi_line_inline_tables_and_arrays() {
    let gw = GATEWAY
        .replace(
            "per_ip = { rate = 20, per = \"1s\", burst = 40 }",
            "per_ip = {\n  rate = 20,\n  per = \"1s\", burst = 40, jitter = 1,\n}",
        )
        .replace(
            "trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]",
            "trusted_proxies = [\n  \"127.0.0.1/32\",\n  \"10.0.0.0/33\",\n]",
        );
    let fx = Fixture::new(&gw, &[("sale.toml", CAMPAIGN)]);
    let g = "gateway.toml";
    assert_eq!(
        all_errors(&fx, &env),
        [
            format!(
                "{}field `server.trusted_proxies[1]`: invalid CIDR \"10.0.0.0/33\"",
                at(g, &gw, "\"10.0.0.0/33\"")
            ),
            format!(
                "{}in `limits.per_ip`: unknown key `jitter` (expected one of `rate`, `per`, `burst`)",
                at(g, &gw, "jitter")
            ),
        ]
    );
}

#[test]
fn a_wrong_value_is_reported_once() {
    // The stand-in read in place of `rate` is 0, which the rate check would refuse; the
    // stand-in `starts_at` is 1970, before which the raffle's entries would not open.
    let gw = GATEWAY.replace("rate = 20", "rate = \"20\"");
    let c = with_admission(RAFFLE).replace("2026-11-11T00:00:00+08:00", "\"soon\"");
    let fx = Fixture::new(&gw, &[("sale.toml", &c)]);
    let errs = all_errors(&fx, &env);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    has(&errs, "field `limits.per_ip.rate`: expected a whole number");
    has(&errs, "field `starts_at`: expected a date-time");
}

#[test]
fn every_syntax_error_of_a_file_is_reported() {
    let c = CAMPAIGN.replace("name = \"Test sale\"", "name = ").replace(
        "per_user_limit = 1",
        "per_user_limit = 1\nper_user_limit = 2",
    );
    let fx = Fixture::new(GATEWAY, &[("sale.toml", &c)]);
    let errs = all_errors(&fx, &env);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    has(&errs, "sale.toml:2:8: invalid TOML: ");
    has(&errs, "sale.toml:7:1: invalid TOML: duplicate key");
}

#[test]
fn check_and_load_refuse_the_same_file_with_the_same_first_error() {
    let c = CAMPAIGN.replace("stock = 5\n", "stock = \"five\"\ncolour = 1\n");
    let fx = Fixture::new(GATEWAY, &[("sale.toml", &c)]);
    let errs = all_errors(&fx, &env);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    let first = fx.load_err().to_string();
    assert!(first.ends_with(&errs[0]), "{first} vs {errs:#?}");
}
