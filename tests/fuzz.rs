//! Property-based fuzzing (proptest, stable Rust) of every parser that reads attacker
//! bytes: `X-Forwarded-For` / the client IP, `X-Request-Id` and `Host`, the
//! `Flashgate-Signature` header, the buy and callback bodies, and the config loader.
//!
//! Not part of `cargo test`: this target needs `--features fuzz`. Run it with
//! `scripts/fuzz.sh [seconds per target]`; each target runs batches of random cases until
//! its time is up (`FUZZ_SECONDS`, default 10) and prints how many it ran. A failure
//! prints the shrunk input.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use flashgate::config::Config;
use flashgate::core::Callback;
use flashgate::identity::ClientIp;
use flashgate::signature::{sign, SignatureVerifier};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

fn budget() -> Duration {
    let secs = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(secs)
}

/// Runs `check` on values of `strategy` until the budget is spent.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    const BATCH: u32 = 512;
    let started = Instant::now();
    let config = RunnerConfig {
        cases: BATCH,
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    let mut cases = 0u64;
    while started.elapsed() < budget() {
        // A runner counts its successes for good: a fresh one (fresh random seed) per batch.
        let mut runner = TestRunner::new(config.clone());
        if let Err(e) = runner.run(&strategy, &check) {
            panic!("fuzz target {name} failed: {e}");
        }
        cases += u64::from(BATCH);
    }
    eprintln!(
        "fuzz target {name}: {cases} cases in {:.0?}, no failure",
        started.elapsed()
    );
}

/// Bytes that look like what the target reads, mixed with anything at all.
fn text(alphabet: &'static str, max: usize) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => proptest::string::string_regex(&format!("[{alphabet}]{{0,{max}}}"))
            .unwrap()
            .prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..max),
    ]
    .boxed()
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        Just("127.0.0.1".parse().unwrap()),
        Just("10.1.2.3".parse().unwrap()),
        Just("::ffff:10.0.0.1".parse().unwrap()),
    ]
}

// === client IP, X-Forwarded-For, Host, X-Request-Id ===

/// An entry as a proxy may write it: `1.2.3.4`, `::1`, `[::1]`, with or without a port.
fn parse_entry(s: &str) -> Option<IpAddr> {
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

#[test]
fn client_ip_from_forwarded_for() {
    let client_ip = ClientIp::new(&[
        "127.0.0.1/32".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
        "fd00::/8".parse().unwrap(),
    ]);
    let xff = proptest::collection::vec(text("0-9a-fA-F.:\\[\\], x", 80), 0..4);
    fuzz("client_ip", (ip(), xff), |(peer, values)| {
        let mut headers = HeaderMap::new();
        for v in &values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                headers.append("x-forwarded-for", v);
            }
        }
        let origin = client_ip.origin(peer, &headers);
        let got = origin.client_ip;
        prop_assert_eq!(origin.peer_trusted, client_ip.is_trusted(peer));
        if !origin.peer_trusted {
            prop_assert_eq!(got, peer.to_canonical(), "an untrusted peer is the client");
        } else if got != peer.to_canonical() {
            // Whatever it picked was one of the header's entries.
            let entries: Vec<IpAddr> = headers
                .get_all("x-forwarded-for")
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .filter_map(|e| parse_entry(std::str::from_utf8(e).ok()?.trim()))
                .collect();
            prop_assert!(entries.contains(&got), "{} not in {:?}", got, entries);
        }
        Ok(())
    });
}

#[test]
fn request_id_and_host() {
    let id = text("A-Za-z0-9._:\\- \"=\\x00-\\x1f", 140);
    let hosts = proptest::collection::vec(text("a-z0-9.:", 20), 0..3);
    fuzz("request_id_and_host", (id, hosts), |(id, hosts)| {
        if let Ok(s) = std::str::from_utf8(&id) {
            let ok = flashgate::proxy::valid_request_id(s);
            let expected = (1..=128).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b));
            prop_assert_eq!(ok, expected);
        }
        let mut headers = HeaderMap::new();
        for h in &hosts {
            if let Ok(v) = HeaderValue::from_bytes(h) {
                headers.append("host", v);
            }
        }
        let n = headers.get_all("host").iter().count();
        let r11 = flashgate::proxy::check_host(http::Version::HTTP_11, &headers);
        prop_assert_eq!(r11.is_ok(), n == 1);
        let r10 = flashgate::proxy::check_host(http::Version::HTTP_10, &headers);
        prop_assert_eq!(r10.is_ok(), n <= 1);
        Ok(())
    });
}

// === Flashgate-Signature ===

#[test]
fn signature_header() {
    const NOW: i64 = 1_800_000_000;
    let verifier = SignatureVerifier::new(Some("fuzz-secret"), Duration::from_secs(300));
    let header = text("tv1=0-9a-f,. \\-", 160);
    let body = proptest::collection::vec(any::<u8>(), 0..256);
    fuzz(
        "signature_header",
        (header, body, -400i64..400),
        |(header, body, skew)| {
            // Anything at all: an answer, never a panic, and never a forgery accepted.
            if let Ok(h) = std::str::from_utf8(&header) {
                prop_assert!(verifier.verify(Some(h), &body, NOW).is_err());
            }
            // A real signature verifies within the tolerance, and only for its own body.
            let real = sign(b"fuzz-secret", &body, NOW + skew);
            let within = skew.abs() <= 300;
            prop_assert_eq!(verifier.verify(Some(&real), &body, NOW).is_ok(), within);
            let mut other = body.clone();
            other.push(b'x');
            prop_assert!(verifier.verify(Some(&real), &other, NOW).is_err());
            Ok(())
        },
    );
}

// === buy and callback bodies ===

/// JSON-ish text: real JSON values of every shape, and broken fragments.
fn json_like() -> BoxedStrategy<Vec<u8>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z_]{0,12}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("quantity".to_string()),
                    Just("order_id".to_string()),
                    Just("payment_id".to_string()),
                    Just("amount_cents".to_string()),
                    Just("status".to_string()),
                    "[a-z]{1,6}".boxed(),
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        4 => value.prop_map(|v| v.to_string().into_bytes()),
        1 => text("{}\\[\\]\":,0-9a-z \\-.", 64),
    ]
    .boxed()
}

fn first_non_space(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

#[test]
fn buy_body() {
    fuzz("buy_body", json_like(), |body| {
        if flashgate::http::buy_quantity(&body).is_ok() {
            // Accepted: an empty body or a JSON object, never an array or a bare value.
            let starts = first_non_space(&body);
            prop_assert!(
                starts.is_none() || starts == Some(b'{'),
                "accepted {:?}",
                body
            );
        }
        Ok(())
    });
}

#[test]
fn callback_body() {
    fuzz("callback_body", json_like(), |body| {
        if let Ok(cb) = flashgate::json::object::<Callback>(&body) {
            prop_assert_eq!(first_non_space(&body), Some(b'{'));
            // What was accepted reads back the same.
            let again = serde_json::json!({
                "order_id": cb.order_id, "payment_id": cb.payment_id,
                "amount_cents": cb.amount_cents, "status": cb.status,
            });
            let back: Callback = flashgate::json::object(again.to_string().as_bytes()).unwrap();
            prop_assert_eq!(back, cb);
        }
        Ok(())
    });
}

// === the config loader ===

const GATEWAY: &str = r#"campaigns_dir = "campaigns"

[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
header_read_timeout = "5s"
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]

[redis]
url = "redis://127.0.0.1:6379/0"

[upstream]
url = "http://127.0.0.1:3000"
idle_timeout = "60s"

[identity]
mode = "jwt"

[limits]
per_ip = { rate = 20, per = "1s", burst = 40 }

[orders]
sink = "http"
http_url = "http://127.0.0.1:3000/flashgate/orders"
"#;

const CAMPAIGN: &str = r#"id = "fuzz"
name = "Fuzz"
starts_at = 2026-11-11T00:00:00+08:00
ends_at = 2026-11-11T00:30:00+08:00
payment_window = "30m"
per_user_limit = 1

[[items]]
sku = "a"
stock = 10
price_cents = 100
"#;

/// A valid file with one line replaced, inserted or cut, or a few bytes changed.
fn mutated(base: &'static str) -> BoxedStrategy<String> {
    let lines = base.lines().count();
    let line = prop_oneof![
        proptest::string::string_regex("[a-z_.]{1,20} = .{0,30}").unwrap(),
        proptest::string::string_regex("\\[[a-z_.\\[\\]]{0,12}\\]").unwrap(),
        proptest::string::string_regex(".{0,40}").unwrap(),
    ];
    prop_oneof![
        (0..lines, line.clone()).prop_map(move |(i, l)| {
            let mut v: Vec<String> = base.lines().map(str::to_owned).collect();
            v[i] = l;
            v.join("\n")
        }),
        (0..=lines, line).prop_map(move |(i, l)| {
            let mut v: Vec<String> = base.lines().map(str::to_owned).collect();
            v.insert(i, l);
            v.join("\n")
        }),
        (0..base.len(), 0..base.len()).prop_map(move |(a, b)| {
            let (a, b) = (a.min(b), a.max(b));
            format!("{}{}", &base[..a], &base[b..])
        }),
        proptest::collection::vec((0..base.len(), any::<u8>()), 1..4).prop_map(move |edits| {
            let mut bytes = base.as_bytes().to_vec();
            for (i, b) in edits {
                bytes[i] = b;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }),
    ]
    .boxed()
}

fn load(dir: &Path, gateway: &str, campaign: &str) -> Result<Config, String> {
    std::fs::write(dir.join("gateway.toml"), gateway).unwrap();
    std::fs::write(dir.join("campaigns/fuzz.toml"), campaign).unwrap();
    let env = |name: &str| (name == "FLASHGATE_JWT_SECRET").then(|| "s".to_string());
    Config::load(&dir.join("gateway.toml"), &env).map_err(|e| {
        // Every position names a line of the file it points into.
        if let Some((line, col)) = e.position {
            let src = std::fs::read_to_string(&e.file).unwrap_or_default();
            assert!(
                line >= 1 && line <= src.lines().count() + 1,
                "line {line} of {e}"
            );
            assert!(col >= 1, "{e}");
        }
        e.to_string()
    })
}

#[test]
fn config_loader() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("campaigns")).unwrap();
    load(dir.path(), GATEWAY, CAMPAIGN).expect("the base files are valid");
    let files = prop_oneof![
        mutated(GATEWAY).prop_map(|g| (g, CAMPAIGN.to_string())),
        mutated(CAMPAIGN).prop_map(|c| (GATEWAY.to_string(), c)),
    ];
    fuzz("config_loader", files, |(gateway, campaign)| {
        let _ = load(dir.path(), &gateway, &campaign);
        Ok(())
    });
}
