//! Admission limits end to end: per-IP and per-user rate limits (429 with `Retry-After`
//! and RateLimit headers), campaign overrides, `X-Forwarded-For` from untrusted and
//! trusted peers, and `max_inflight` shedding (503).
//!
//! Rate limits here replenish one cell per minute, so a test never races the refill.

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Env {
    gw: Gateway,
    _cfg: TestConfig,
    _store: TestStore,
    _redis: RedisServer,
}

async fn env_with(campaigns: Vec<CampaignSpec>, tweak: impl FnOnce(&mut TestConfig)) -> Env {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    for c in campaigns {
        cfg.campaign(c);
    }
    tweak(&mut cfg);
    let gw = Gateway::start(cfg.load()).await;
    gw.wait_ready().await;
    Env {
        gw,
        _cfg: cfg,
        _store: store,
        _redis: redis,
    }
}

/// A campaign with plenty of stock and a per-user limit that never gets in the way.
fn roomy(id: &str) -> CampaignSpec {
    CampaignSpec::new(id)
        .per_user_limit(100)
        .item("a", 10_000, 100)
}

async fn buy(gw: &Gateway, campaign: &str, user: &str, extra: &[(&str, &str)]) -> TestResponse {
    let auth = bearer(user);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    send("POST", &gw.buy_url(campaign, "a"), &headers, None).await
}

#[track_caller]
fn assert_admitted(res: &TestResponse, what: &str) {
    assert!(
        matches!(res.status, 200 | 201),
        "{what}: expected admission, got {} {}",
        res.status,
        res.text()
    );
}

/// Asserts a 429 `rate-limited` with `Retry-After` >= 1 and the RateLimit headers of a
/// policy with burst `burst`; returns `Retry-After`.
#[track_caller]
fn assert_rate_limited(res: &TestResponse, burst: u32) -> u64 {
    assert_eq!(res.status, 429, "expected 429: {}", res.text());
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    assert_eq!(res.json()["type"], "urn:flashgate:problem:rate-limited");
    let retry: u64 = res
        .header("retry-after")
        .expect("Retry-After on a 429")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    let policy = res.header("ratelimit-policy").expect("RateLimit-Policy");
    assert!(
        policy.starts_with(&format!("\"burst\";q={burst};w=")),
        "RateLimit-Policy {policy:?}"
    );
    let state = res.header("ratelimit").expect("RateLimit");
    assert_eq!(state, format!("\"burst\";r=0;t={retry}"), "RateLimit");
    retry
}

// === per IP and per user ===

#[tokio::test]
async fn per_ip_limit_answers_429_with_retry_after_and_ratelimit_headers() {
    let e = env_with(vec![roomy("ip")], |cfg| {
        cfg.per_ip(1, "1m", 3);
    })
    .await;
    let gw = &e.gw;
    // Distinct users from one address: only the address is limited.
    for i in 0..3 {
        assert_admitted(&buy(gw, "ip", &format!("u{i}"), &[]).await, "within burst");
    }
    let res = buy(gw, "ip", "u3", &[]).await;
    let retry = assert_rate_limited(&res, 3);
    assert!((1..=60).contains(&retry), "one cell per minute: {retry}");
    assert_eq!(
        res.header("ratelimit-policy"),
        Some("\"burst\";q=3;w=180"),
        "3 cells at one per minute"
    );
    // Nothing was reserved for the refused request.
    assert_eq!(gw.item_stats("ip", "a").await["pending"], 3);

    // Proxied store traffic is not a buy: never limited here.
    for _ in 0..5 {
        assert_eq!(
            send("GET", &gw.url("/products/1"), &[], None).await.status,
            200
        );
    }
}

#[tokio::test]
async fn per_user_limit_is_keyed_by_user() {
    let e = env_with(vec![roomy("user")], |cfg| {
        cfg.per_user(1, "1m", 2);
    })
    .await;
    let gw = &e.gw;
    assert_admitted(&buy(gw, "user", "pat", &[]).await, "1st");
    assert_admitted(&buy(gw, "user", "pat", &[]).await, "2nd");
    assert_rate_limited(&buy(gw, "user", "pat", &[]).await, 2);
    assert_rate_limited(&buy(gw, "user", "pat", &[]).await, 2);
    // Another user from the same address is not affected.
    assert_admitted(&buy(gw, "user", "quinn", &[]).await, "other user");
    assert_admitted(&buy(gw, "user", "quinn", &[]).await, "other user");
    assert_rate_limited(&buy(gw, "user", "quinn", &[]).await, 2);

    let metrics = send("GET", &gw.admin_url("/metrics"), &[], None)
        .await
        .text();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("flashgate_requests_total{")
                && l.contains("route=\"buy\"")
                && l.contains("outcome=\"rate-limited\"")
        })
        .unwrap_or_else(|| panic!("no rate-limited counter:\n{metrics}"));
    assert!(line.ends_with(" 3"), "{line}");
}

#[tokio::test]
async fn a_campaign_override_replaces_the_global_limit() {
    let e = env_with(
        vec![roomy("strict").per_user(1, "1m", 1), roomy("lenient")],
        |cfg| {
            cfg.per_user(1, "1m", 4);
        },
    )
    .await;
    let gw = &e.gw;
    assert_admitted(&buy(gw, "strict", "ray", &[]).await, "strict 1st");
    assert_rate_limited(&buy(gw, "strict", "ray", &[]).await, 1);
    // The global policy (burst 4) still governs the other campaign.
    for i in 0..4 {
        assert_admitted(
            &buy(gw, "lenient", "ray", &[]).await,
            &format!("lenient {i}"),
        );
    }
    assert_rate_limited(&buy(gw, "lenient", "ray", &[]).await, 4);
}

#[tokio::test]
async fn a_campaign_per_ip_override_applies_to_that_campaign_only() {
    let e = env_with(
        vec![roomy("narrow").per_ip(1, "1m", 2), roomy("wide")],
        |cfg| {
            cfg.per_ip(1, "1m", 5);
        },
    )
    .await;
    let gw = &e.gw;
    assert_admitted(&buy(gw, "narrow", "s1", &[]).await, "narrow 1st");
    assert_admitted(&buy(gw, "narrow", "s2", &[]).await, "narrow 2nd");
    assert_rate_limited(&buy(gw, "narrow", "s3", &[]).await, 2);
    for i in 0..5 {
        assert_admitted(&buy(gw, "wide", &format!("w{i}"), &[]).await, "wide");
    }
    assert_rate_limited(&buy(gw, "wide", "w5", &[]).await, 5);
}

// === X-Forwarded-For ===

#[tokio::test]
async fn xff_from_an_untrusted_peer_does_not_dodge_the_per_ip_limit() {
    let e = env_with(vec![roomy("xff")], |cfg| {
        cfg.per_ip(1, "1m", 3).trusted_proxies(&["10.0.0.0/8"]);
    })
    .await;
    let gw = &e.gw;
    // 127.0.0.1 is not a trusted proxy: every rotating XFF value is ignored.
    for i in 0..3 {
        let xff = format!("198.51.100.{i}");
        let res = buy(gw, "xff", &format!("u{i}"), &[("x-forwarded-for", &xff)]).await;
        assert_admitted(&res, "within burst");
    }
    for i in 3..6 {
        let xff = format!("198.51.100.{i}, 10.1.2.3");
        let res = buy(gw, "xff", &format!("u{i}"), &[("x-forwarded-for", &xff)]).await;
        assert_rate_limited(&res, 3);
    }
}

#[tokio::test]
async fn xff_from_a_trusted_peer_names_the_client() {
    let e = env_with(vec![roomy("trusted")], |cfg| {
        cfg.per_ip(1, "1m", 2)
            .trusted_proxies(&["127.0.0.1/32", "10.0.0.0/8"]);
    })
    .await;
    let gw = &e.gw;
    // Distinct clients behind the trusted proxy each get their own bucket.
    for i in 0..10 {
        let xff = format!("203.0.113.{i}");
        let res = buy(
            gw,
            "trusted",
            &format!("c{i}"),
            &[("x-forwarded-for", &xff)],
        )
        .await;
        assert_admitted(&res, &format!("client {xff}"));
    }
    // The right-most untrusted hop is the client: trusted hops after it are skipped, and
    // whatever the client wrote to the left of it changes nothing.
    for i in 0..2 {
        let xff = format!("192.0.2.{i}, 198.51.100.7, 10.0.0.1");
        let res = buy(
            gw,
            "trusted",
            &format!("s{i}"),
            &[("x-forwarded-for", &xff)],
        )
        .await;
        assert_admitted(&res, "within burst");
    }
    let res = buy(
        gw,
        "trusted",
        "s2",
        &[("x-forwarded-for", "192.0.2.99, 198.51.100.7")],
    )
    .await;
    assert_rate_limited(&res, 2);
    // Several XFF lines form one list: the last line's last entry is the right-most.
    let res = send(
        "POST",
        &gw.buy_url("trusted", "a"),
        &[
            ("authorization", &bearer("m0")),
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "192.0.2.50"),
        ],
        None,
    )
    .await;
    assert_admitted(&res, "192.0.2.50 is a new client");
    // IPv6 clients are keyed by their /64: one host cannot rotate through its prefix.
    for (i, ip) in ["2001:db8:1:2::1", "2001:db8:1:2::ffff"].iter().enumerate() {
        let res = buy(gw, "trusted", &format!("v{i}"), &[("x-forwarded-for", ip)]).await;
        assert_admitted(&res, ip);
    }
    let res = buy(
        gw,
        "trusted",
        "v2",
        &[("x-forwarded-for", "2001:db8:1:2:abcd::9")],
    )
    .await;
    assert_rate_limited(&res, 2);
    let res = buy(
        gw,
        "trusted",
        "v3",
        &[("x-forwarded-for", "2001:db8:1:3::1")],
    )
    .await;
    assert_admitted(&res, "another /64");
    // The proxy itself (no XFF) is one more client.
    assert_admitted(
        &buy(gw, "trusted", "p0", &[]).await,
        "the proxy's own address",
    );
}

// === max_inflight ===

#[tokio::test]
async fn max_inflight_zero_sheds_every_buy_but_not_other_traffic() {
    let e = env_with(vec![roomy("shed")], |cfg| {
        cfg.set("server", "max_inflight", "0");
    })
    .await;
    let gw = &e.gw;
    for user in ["a1", "a2", "a3"] {
        let res = buy(gw, "shed", user, &[]).await;
        assert_eq!(res.status, 503, "{}", res.text());
        assert_eq!(res.json()["type"], "urn:flashgate:problem:unavailable");
        assert!(res.header("retry-after").is_some());
    }
    assert_eq!(gw.item_stats("shed", "a").await["pending"], 0);
    assert_eq!(
        send("GET", &gw.url("/products/1"), &[], None).await.status,
        200
    );
    assert_eq!(
        send("GET", &gw.url("/seckill/campaigns/shed"), &[], None)
            .await
            .status,
        200
    );
}

/// Reads from `s` until the end of the response head; returns the status line.
async fn read_status_line(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response within 10s")
            .expect("read");
        assert!(
            n > 0,
            "connection closed: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_inflight_sheds_buys_beyond_the_cap_with_503() {
    let e = env_with(vec![roomy("cap")], |cfg| {
        cfg.set("server", "max_inflight", "1")
            .set_str("server", "header_read_timeout", "10s");
    })
    .await;
    let gw = &e.gw;

    // Hold one buy in flight: its head is sent, its 2-byte body is not (yet).
    let mut held = TcpStream::connect(gw.public_addr).await.unwrap();
    let head = format!(
        "POST /seckill/campaigns/cap/items/a/orders HTTP/1.1\r\nHost: flashgate\r\n\
         Authorization: {}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n",
        bearer("holder")
    );
    held.write_all(head.as_bytes()).await.unwrap();
    let sale = gw.running.sale.clone();
    eventually("one buy in flight", Duration::from_secs(5), || async {
        (sale.inflight().current() == 1).then_some(())
    })
    .await;

    for user in ["b1", "b2"] {
        let res = buy(gw, "cap", user, &[]).await;
        assert_eq!(res.status, 503, "{}", res.text());
        assert_eq!(res.json()["type"], "urn:flashgate:problem:unavailable");
        assert!(res.header("retry-after").is_some());
    }

    // Let the held buy finish: it is served, and its slot is released.
    held.write_all(b"{}").await.unwrap();
    let status = read_status_line(&mut held).await;
    assert!(status.starts_with("HTTP/1.1 201"), "{status}");
    eventually("the slot is released", Duration::from_secs(5), || async {
        (sale.inflight().current() == 0).then_some(())
    })
    .await;
    assert_eq!(buy(gw, "cap", "b1", &[]).await.status, 201);
    assert_eq!(gw.item_stats("cap", "a").await["pending"], 2);
}
