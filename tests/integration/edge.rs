//! Edge hardening, each defect through the real gateway: raw sockets where a well-behaved
//! client cannot say it (two `Host` lines, a broken chunk, a reader that stops), the
//! `TestStore` echo to see what reached the store, and real Redis for the ledger.

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Env {
    gw: Gateway,
    store: TestStore,
    _cfg: TestConfig,
    _redis: RedisServer,
}

/// A gateway with campaign `sale` (item `a`, 10 units at 100) in front of a fresh store.
async fn env(tweak: impl FnOnce(&mut TestConfig)) -> Env {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(
        CampaignSpec::new("sale")
            .item("a", 10, 100)
            .per_user_limit(5),
    );
    tweak(&mut cfg);
    let gw = Gateway::start(cfg.load()).await;
    gw.wait_ready().await;
    Env {
        gw,
        store,
        _cfg: cfg,
        _redis: redis,
    }
}

/// Writes `request` on a fresh connection and reads until the gateway closes it (send
/// `Connection: close`); returns the status and the body after the head.
async fn raw(e: &Env, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(e.gw.public_addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no complete answer within 10s: {out:?}");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

fn admin_auth() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// The value of `flashgate_requests_total{route, outcome}` (0 when absent).
async fn requests_total(e: &Env, route: &str, outcome: &str) -> u64 {
    let text = send("GET", &e.gw.admin_url("/metrics"), &[], None)
        .await
        .text();
    let needle = format!("flashgate_requests_total{{outcome=\"{outcome}\",route=\"{route}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().expect("a counter"))
}

// === 1. identity.mode = "header" ===

#[tokio::test]
async fn the_identity_header_is_believed_only_from_trusted_proxies() {
    // The test client connects from 127.0.0.1: here not a trusted proxy.
    let e = env(|cfg| {
        cfg.header_identity("X-User-Id")
            .trusted_proxies(&["10.0.0.0/8"]);
    })
    .await;
    let victim = [("x-user-id", "victim")];
    let res = send("POST", &e.gw.buy_url("sale", "a"), &victim, None).await;
    assert_eq!(res.status, 401, "{}", res.text());
    assert_eq!(res.json()["type"], "urn:flashgate:problem:unauthenticated");
    for method in ["GET", "DELETE"] {
        let res = send(
            method,
            &e.gw.url("/seckill/orders/01J00000000000000000000000"),
            &victim,
            None,
        )
        .await;
        assert_eq!(res.status, 401, "{method}: {}", res.text());
    }
    assert_eq!(e.gw.item_stats("sale", "a").await["pending"], 0);
    // Proxied: the store never sees the forged header.
    let res = send("GET", &e.gw.url("/account"), &victim, None).await;
    assert_eq!(res.status, 200);
    assert!(
        res.json()["headers"].get("x-user-id").is_none(),
        "{}",
        res.text()
    );

    // Through a trusted proxy, the same header is the store's auth layer speaking.
    let trusted = env(|cfg| {
        cfg.header_identity("X-User-Id")
            .trusted_proxies(&["127.0.0.1/32"]);
    })
    .await;
    let res = send("POST", &trusted.gw.buy_url("sale", "a"), &victim, None).await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.json()["user_id"], "victim");
    let res = send("GET", &trusted.gw.url("/account"), &victim, None).await;
    assert_eq!(res.json()["headers"]["x-user-id"], "victim");
}

// === 2. upstream.idle_timeout ===

fn idle_500ms(cfg: &mut TestConfig) {
    cfg.set_str("upstream", "idle_timeout", "500ms");
}

#[tokio::test]
async fn a_client_that_stops_reading_frees_the_store_connection() {
    let e = env(idle_500ms).await;
    let mut s = TcpStream::connect(e.gw.public_addr).await.unwrap();
    s.write_all(b"GET /download HTTP/1.1\r\nHost: shop.example\r\nx-test-stream: forever\r\n\r\n")
        .await
        .unwrap();
    // Never read: socket buffers fill, then nothing moves.
    eventually(
        "the store's response dropped",
        Duration::from_secs(15),
        || async { (e.store.streams_closed() >= 1).then_some(()) },
    )
    .await;
    // The client's side is closed too: what was buffered drains, then the end.
    let mut sink = vec![0u8; 1 << 20];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client connection stayed open");
}

#[tokio::test]
async fn a_store_that_stops_writing_is_closed_on_both_sides() {
    let e = env(idle_500ms).await;
    let mut s = TcpStream::connect(e.gw.public_addr).await.unwrap();
    s.write_all(b"GET /feed HTTP/1.1\r\nHost: shop.example\r\nx-test-stream: stall\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the stalled exchange was never closed: {got:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("first chunk"), "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before the idle timeout"
    );
    eventually("the store side closed", Duration::from_secs(5), || async {
        (e.store.streams_closed() >= 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_a_busy_one_is_not() {
    let e = env(idle_500ms).await;
    let mut s = TcpStream::connect(e.gw.public_addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("101 head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // Busy for three idle timeouts: a message every 200 ms keeps it open.
    for i in 0..8 {
        let msg = format!("ping {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.expect("echo while busy");
        assert_eq!(back, msg.as_bytes());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then silent: closed on both sides.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the idle tunnel stayed open");
    eventually(
        "the store's tunnel end closed",
        Duration::from_secs(5),
        || async { (e.store.tunnels_closed() >= 1).then_some(()) },
    )
    .await;
}

// === 3. stock adjustment ===

async fn adjust(e: &Env, body: &str) -> TestResponse {
    let auth = admin_auth();
    send(
        "POST",
        &e.gw.admin_url("/admin/campaigns/sale/items/a/stock"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(body.as_bytes().to_vec()),
    )
    .await
}

/// Sets the item's `remaining` and `adjusted` in Redis directly (ledger kept: initial 10).
async fn set_counters(e: &Env, remaining: i64) {
    let sale = &e.gw.running.sale;
    let key = sale
        .registry()
        .get("sale")
        .unwrap()
        .item("a")
        .unwrap()
        .key
        .clone();
    let mut con = sale.store().conn().get().unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("remaining")
        .arg(remaining)
        .arg("adjusted")
        .arg(remaining - 10)
        .query_async(&mut con)
        .await
        .unwrap();
}

#[tokio::test]
async fn stock_adjustments_are_exact_bounded_and_all_or_nothing() {
    let e = env(|_| {}).await;
    // Beyond 2^53: Lua's doubles would have rounded it. Beyond i64: serde refuses.
    for delta in [
        "9007199254740993",
        "9223372036854775807",
        "-9223372036854775808",
        "1000000000001",
        "-1000000000001",
        "99999999999999999999",
        "1.5",
    ] {
        let res = adjust(&e, &format!(r#"{{"delta": {delta}}}"#)).await;
        assert_eq!(res.status, 400, "delta {delta}: {}", res.text());
        assert_eq!(res.json()["type"], "urn:flashgate:problem:bad-request");
    }
    let s = e.gw.item_stats("sale", "a").await;
    assert_eq!(
        (s["remaining"].as_i64(), s["adjusted"].as_i64()),
        (Some(10), Some(0))
    );

    let res = adjust(&e, r#"{"delta": 1000000000000}"#).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["remaining"], 1_000_000_000_010_i64);
    let res = adjust(&e, r#"{"delta": -1000000000000}"#).await;
    assert_eq!(res.json()["remaining"], 10);

    // Near the limit: the whole adjustment is refused before either counter moves.
    let near = 9_007_199_254_740_000_i64;
    set_counters(&e, near).await;
    let res = adjust(&e, r#"{"delta": 1000000000000}"#).await;
    assert_eq!(res.status, 400, "{}", res.text());
    let s = e.gw.item_stats("sale", "a").await;
    assert_eq!(s["remaining"].as_i64(), Some(near));
    assert_eq!(s["adjusted"].as_i64(), Some(near - 10));
    assert_eq!(s["ledger_ok"], true, "{s}");
    let res = adjust(&e, r#"{"delta": -5}"#).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["remaining"], near - 5);

    // Below zero stays a 409, and bodies must be objects with a number.
    set_counters(&e, 10).await;
    assert_eq!(adjust(&e, r#"{"delta": -11}"#).await.status, 409);
    for bad in ["[1]", "1", r#"{"delta": null}"#] {
        let res = adjust(&e, bad).await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text());
    }
    assert_eq!(e.gw.item_stats("sale", "a").await["remaining"], 10);
}

// === 4. Host ===

#[tokio::test]
async fn host_must_be_there_once_and_is_never_hop_by_hop() {
    let e = env(|_| {}).await;
    let (status, body) = raw(
        &e,
        "GET /p HTTP/1.1\r\nHost: shop.example\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad-request"), "{body}");
    let (status, body) = raw(&e, "GET /p HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 400, "{body}");
    // Flashgate's own routes follow the same rule.
    let (status, _) = raw(
        &e,
        "GET /seckill/campaigns/sale HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(e.store.echo_requests(), 0, "nothing reached the store");

    // HTTP/1.0 may omit it: the store gets its own authority.
    let (status, body) = raw(&e, "GET /p HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["host"], e.store.addr().to_string());

    // `Connection: host` cannot strip it.
    let (status, body) = raw(
        &e,
        "GET /p HTTP/1.1\r\nHost: shop.example\r\nConnection: close, host\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["host"], "shop.example");
}

// === 5. forwarding headers ===

const CLAIMS: [(&str, &str); 6] = [
    ("x-forwarded-for", "203.0.113.9"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("forwarded", "for=203.0.113.9;proto=https"),
    ("x-real-ip", "203.0.113.9"),
    ("x-forwarded-port", "443"),
];

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
    let e = env(|_| {}).await;
    let res = send("GET", &e.gw.url("/p"), &CLAIMS, None).await;
    let h = &res.json()["headers"];
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    for name in [
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
    ] {
        assert!(h.get(name).is_none(), "{name} passed: {h}");
    }
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_kept() {
    let e = env(|cfg| {
        cfg.trusted_proxies(&["127.0.0.1/32"]);
    })
    .await;
    let res = send("GET", &e.gw.url("/p"), &CLAIMS, None).await;
    let h = &res.json()["headers"];
    assert_eq!(h["x-forwarded-proto"], "https", "{h}");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-host"], "evil.example");
    assert_eq!(h["forwarded"], "for=203.0.113.9;proto=https");
    assert_eq!(h["x-real-ip"], "203.0.113.9");
    // Without a proxy's X-Forwarded-Proto, ours.
    let res = send("GET", &e.gw.url("/p"), &[], None).await;
    assert_eq!(res.json()["headers"]["x-forwarded-proto"], "http");
}

// === 6. a client's malformed body ===

#[tokio::test]
async fn a_broken_chunked_body_is_the_clients_400_not_a_502() {
    let e = env(|_| {}).await;
    let (status, body) = raw(
        &e,
        "POST /upload HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("urn:flashgate:problem:bad-request"), "{body}");
    assert_eq!(requests_total(&e, "proxy", "bad-request").await, 1);
    assert_eq!(requests_total(&e, "proxy", "upstream-error").await, 0);
}

// === 7. X-Request-Id ===

#[tokio::test]
async fn request_ids_that_could_forge_log_fields_are_replaced() {
    let e = env(|_| {}).await;
    let long = "a".repeat(129);
    for forged in [
        r#"zz" level=ERROR fake_field="x"#,
        "a b",
        "id=1",
        long.as_str(),
    ] {
        let res = send("GET", &e.gw.url("/p"), &[("x-request-id", forged)], None).await;
        let ours = res.header("x-request-id").expect("an id").to_owned();
        assert_eq!(ours.len(), 26, "a fresh ULID instead of {forged:?}: {ours}");
        assert_eq!(res.json()["headers"]["x-request-id"], ours.as_str());
    }
    let fine = "Req-1.2_3:abc";
    let res = send("GET", &e.gw.url("/p"), &[("x-request-id", fine)], None).await;
    assert_eq!(res.header("x-request-id"), Some(fine));
    assert_eq!(res.json()["headers"]["x-request-id"], fine);
}

#[tokio::test]
async fn logs_to_a_pipe_have_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.write();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashgate"))
        .args(["serve", "--config", cfg.path().to_str().unwrap()])
        .envs(cfg.env_vars())
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flashgate serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                let done = line.contains("flashgate listening");
                seen.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no `flashgate listening` line: {seen:?}");
    for line in &seen {
        assert!(
            !line.contains('\u{1b}'),
            "colour codes in a piped log: {line:?}"
        );
    }
}

// === 8. JSON bodies are objects ===

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_400() {
    let e = env(|_| {}).await;
    let auth = bearer("shape-tester");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    for body in ["[2]", "2", r#"{"quantity": null}"#] {
        let res = send(
            "POST",
            &e.gw.buy_url("sale", "a"),
            &headers,
            Some(body.into()),
        )
        .await;
        assert_eq!(res.status, 400, "{body}: {}", res.text());
        assert_eq!(res.json()["type"], "urn:flashgate:problem:bad-request");
    }
    assert_eq!(e.gw.item_stats("sale", "a").await["pending"], 0);

    // A correctly signed callback whose body is an array, for a real pending order.
    let res = send("POST", &e.gw.buy_url("sale", "a"), &headers, None).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let order_id = res.json()["order_id"].as_str().unwrap().to_owned();
    let body = serde_json::json!([order_id, "pay_1", 100, "succeeded"]).to_string();
    let sig = sign_callback(PAYMENT_SECRET, body.as_bytes(), unix_now());
    let res = send(
        "POST",
        &e.gw.url("/payments/callback"),
        &[
            ("flashgate-signature", &sig),
            ("content-type", "application/json"),
        ],
        Some(body.into_bytes()),
    )
    .await;
    assert_eq!(res.status, 400, "{}", res.text());
    let s = e.gw.item_stats("sale", "a").await;
    assert_eq!(
        (s["pending"].as_i64(), s["paid"].as_i64()),
        (Some(1), Some(0))
    );
}
