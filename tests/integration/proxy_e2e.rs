//! The pass-through to the store, through the real gateway to a real HTTP server
//! (`TestStore`, which echoes what it received): method, path, query, headers and body
//! intact, forwarding headers, request ids, hop-by-hop headers, and upstream failures.

use std::time::Duration;

use crate::common::*;

struct Env {
    gw: Gateway,
    _cfg: TestConfig,
    store: TestStore,
    _redis: RedisServer,
}

/// A gateway in front of a fresh `TestStore`; `upstream` overrides the store's URL.
async fn env_with(upstream: Option<&str>, tweak: impl FnOnce(&mut TestConfig)) -> Env {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let url = upstream.map_or_else(|| store.url(), str::to_owned);
    let mut cfg = TestConfig::new(&redis.url(), &url);
    cfg.campaign(CampaignSpec::new("sale").item("a", 10, 100));
    tweak(&mut cfg);
    let gw = Gateway::start(cfg.load()).await;
    gw.wait_ready().await;
    Env {
        gw,
        _cfg: cfg,
        store,
        _redis: redis,
    }
}

async fn env() -> Env {
    env_with(None, |_| {}).await
}

#[tokio::test]
async fn get_keeps_method_path_query_and_status() {
    let e = env().await;
    let path = "/products/42/reviews?color=red&size=m&q=a%20b&empty=&dup=1&dup=2";
    let res = send(
        "GET",
        &e.gw.url(path),
        &[("x-test-status", "418"), ("accept", "application/json")],
        None,
    )
    .await;
    assert_eq!(res.status, 418, "the store's status comes back");
    let echo = res.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], path);
    assert_eq!(echo["headers"]["accept"], "application/json");
    assert_eq!(echo["body"], "");

    for method in ["PUT", "PATCH", "DELETE", "OPTIONS"] {
        let res = send(method, &e.gw.url("/api/thing/1"), &[], None).await;
        assert_eq!(res.status, 200, "{method}");
        assert_eq!(res.json()["method"], method);
    }
}

#[tokio::test]
async fn post_keeps_its_body_and_headers() {
    let e = env().await;
    // Larger than max_body_bytes (16 KiB): the limit is for buys, not for the store.
    let body: String = (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let res = send(
        "POST",
        &e.gw.url("/checkout?step=2"),
        &[
            ("content-type", "text/plain; charset=utf-8"),
            ("cookie", "session=abc; theme=dark"),
            ("authorization", "Bearer store-token"),
            ("x-custom", "one"),
            ("x-custom", "two"),
        ],
        Some(body.clone().into_bytes()),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let echo = res.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/checkout?step=2");
    assert_eq!(echo["body"].as_str().map(str::len), Some(body.len()));
    assert_eq!(echo["body"], body.as_str());
    let h = &echo["headers"];
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    assert_eq!(h["content-length"], body.len().to_string());
    assert_eq!(h["cookie"], "session=abc; theme=dark");
    assert_eq!(h["authorization"], "Bearer store-token");
    assert_eq!(h["x-custom"], "one, two");
}

#[tokio::test]
async fn forwarding_headers_and_request_id() {
    let e = env().await;
    let gw = &e.gw;

    let res = send("GET", &gw.url("/"), &[("host", "shop.example")], None).await;
    let h = &res.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["host"], "shop.example", "Host is kept for the store");
    let generated = h["x-request-id"]
        .as_str()
        .expect("a generated X-Request-Id");
    assert_eq!(generated.len(), 26, "a ULID: {generated}");

    let res = send("GET", &gw.url("/"), &[], None).await;
    let again = res.json()["headers"]["x-request-id"].clone();
    assert_ne!(again, generated, "a new id per request");

    // The peer is not a trusted proxy: its forwarding claims are replaced by what we saw
    // (`edge` covers a trusted proxy's, which are kept).
    let res = send(
        "GET",
        &gw.url("/"),
        &[
            ("x-forwarded-for", "203.0.113.9, 198.51.100.1"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "req-abc-123"),
        ],
        None,
    )
    .await;
    let h = &res.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http", "our listener's scheme");
    assert_eq!(h["x-request-id"], "req-abc-123");
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped() {
    let e = env().await;
    let res = send(
        "GET",
        &e.gw.url("/hop"),
        &[
            ("connection", "keep-alive, x-hop-secret"),
            ("x-hop-secret", "must not pass"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("x-end-to-end", "kept"),
        ],
        None,
    )
    .await;
    assert_eq!(res.status, 200);
    let h = res.json()["headers"].clone();
    for name in [
        "x-hop-secret",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(h.get(name).is_none(), "{name} was forwarded: {h}");
    }
    if let Some(c) = h.get("connection") {
        assert!(
            !c.as_str().unwrap_or_default().contains("x-hop-secret"),
            "{h}"
        );
    }
    assert_eq!(h["x-end-to-end"], "kept");
    // The store's response reaches the client without hop-by-hop headers of its own.
    assert!(res.header("keep-alive").is_none());
}

/// `/seckill/` and `/payments/` belong to flashgate. A path there that matches no
/// route is 404 and a known path with another method is 405 with `Allow` — never proxied
/// (a guessed `POST …/cancel` answered 200 by the store would make a client believe it
/// cancelled). Paths merely starting with the same letters are the store's.
#[tokio::test]
async fn flash_sale_paths_are_never_proxied_but_their_neighbours_are() {
    let e = env().await;
    let gw = &e.gw;
    let res = send("GET", &gw.url("/seckill/campaigns/sale"), &[], None).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["id"], "sale");
    let echoed = e.store.echo_requests();
    for (method, path) in [
        ("GET", "/seckill/campaigns/sale/items/a/orders/x"),
        (
            "POST",
            "/seckill/orders/01JZZZZZZZZZZZZZZZZZZZZZZZ.sale/cancel",
        ),
        ("GET", "/seckill/"),
        ("POST", "/payments/refund"),
    ] {
        let res = send(method, &gw.url(path), &[], None).await;
        assert_eq!(res.status, 404, "{method} {path}: {}", res.text());
        assert_eq!(res.json()["type"], "urn:flashgate:problem:not-found");
    }
    for (method, path, allow) in [
        ("GET", "/seckill/campaigns/sale/items/a/orders", "POST"),
        ("POST", "/seckill/orders/x.sale", "GET, DELETE"),
        ("GET", "/payments/callback", "POST"),
        ("PUT", "/seckill/campaigns/sale", "GET"),
    ] {
        let res = send(method, &gw.url(path), &[], None).await;
        assert_eq!(res.status, 405, "{method} {path}: {}", res.text());
        assert_eq!(res.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(
            res.json()["type"],
            "urn:flashgate:problem:method-not-allowed"
        );
    }
    assert_eq!(
        e.store.echo_requests(),
        echoed,
        "none of these reached the store"
    );
    for path in ["/seckillfoo", "/payments-help", "/products/seckill"] {
        let res = send("GET", &gw.url(path), &[], None).await;
        assert_eq!(res.json()["path"], path, "{path} is the store's");
    }
    assert_eq!(e.gw.item_stats("sale", "a").await["pending"], 0);
}

#[tokio::test]
async fn store_down_is_502_bad_gateway() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = env_with(Some(&closed), |_| {}).await;
    for (method, path) in [("GET", "/products/1?x=y"), ("POST", "/cart")] {
        let res = send(method, &e.gw.url(path), &[], Some(b"x".to_vec())).await;
        assert_eq!(res.status, 502, "{method} {path}: {}", res.text());
        assert_eq!(res.header("content-type"), Some("application/problem+json"));
        assert_eq!(res.json()["type"], "urn:flashgate:problem:bad-gateway");
    }
    // Buys do not depend on the store.
    let auth = bearer("buyer");
    let res = send(
        "POST",
        &e.gw.buy_url("sale", "a"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
}

#[tokio::test]
async fn store_too_slow_is_504_gateway_timeout() {
    let e = env_with(None, |cfg| {
        cfg.set_str("upstream", "timeout", "300ms");
    })
    .await;
    let started = std::time::Instant::now();
    let res = send(
        "GET",
        &e.gw.url("/slow"),
        &[("x-test-delay-ms", "3000")],
        None,
    )
    .await;
    assert_eq!(res.status, 504, "{}", res.text());
    assert_eq!(res.json()["type"], "urn:flashgate:problem:gateway-timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Within the timeout, it is served.
    let res = send(
        "GET",
        &e.gw.url("/quick"),
        &[("x-test-delay-ms", "10")],
        None,
    )
    .await;
    assert_eq!(res.status, 200);
}

/// Reads from `s` until the end of a response head; returns the head.
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("response head in time")
            .expect("read");
        assert_eq!(n, 1, "connection closed mid-head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

async fn upgrade_request(e: &Env, path: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(e.gw.public_addr)
        .await
        .expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let head = read_head(&mut s).await;
    (s, head)
}

#[tokio::test]
async fn websocket_style_upgrades_become_a_tunnel_to_the_store() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let e = env().await;
    let (mut s, head) = upgrade_request(&e, "/ws/chat?room=1").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("\r\nupgrade: echo\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    for msg in [&b"hello"[..], b"second frame", &[0u8, 159, 146, 150, 255]] {
        s.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(back, msg, "bytes pass both ways unchanged");
    }
    // The gateway keeps serving while a tunnel is open.
    let res = send("GET", &e.gw.url("/products/1"), &[], None).await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn a_refused_upgrade_is_answered_as_the_store_answered() {
    let e = env().await;
    let (_s, head) = upgrade_request(&e, "/refuse-upgrade").await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(!head.contains("\r\nupgrade:"), "{head}");
}
