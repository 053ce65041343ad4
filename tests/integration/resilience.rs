//! Failure and recovery end to end: Redis stopped (fail closed, proxy keeps flowing),
//! Redis back (service resumes by itself), restarts that must keep stock and pre-orders,
//! an emptied script cache, stalled clients, and graceful shutdown.

use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on one request answered while Redis is away (503 at once, never a hang).
const FAIL_FAST: Duration = Duration::from_secs(2);

async fn start(cfg: &TestConfig) -> Gateway {
    let gw = Gateway::start(cfg.load()).await;
    gw.wait_ready().await;
    gw
}

fn config(redis: &RedisServer, store: &TestStore, campaign: CampaignSpec) -> TestConfig {
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(campaign);
    cfg
}

async fn buy(gw: &Gateway, campaign: &str, user: &str) -> TestResponse {
    let auth = bearer(user);
    send(
        "POST",
        &gw.buy_url(campaign, "a"),
        &[("authorization", &auth)],
        None,
    )
    .await
}

#[track_caller]
fn assert_unavailable(res: &TestResponse, what: &str) {
    assert_eq!(res.status, 503, "{what}: {}", res.text());
    assert_eq!(
        res.json()["type"],
        "urn:flashgate:problem:unavailable",
        "{what}"
    );
    let retry: u64 = res
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .parse()
        .unwrap();
    assert!(retry >= 1, "{what}: Retry-After {retry}");
}

/// Buys until the answer is not 503 (Redis is back); returns that answer.
async fn buy_when_back(gw: &Gateway, campaign: &str, user: &str) -> TestResponse {
    eventually("buys served again", Duration::from_secs(15), || async {
        let r = buy(gw, campaign, user).await;
        (r.status != 503).then_some(r)
    })
    .await
}

fn redis_client(redis: &RedisServer) -> redis::Client {
    redis::Client::open(redis.url()).unwrap()
}

// === Redis away ===

/// `flashgate_redis_circuit_open` as the admin listener exports it.
async fn circuit_open(gw: &Gateway) -> Option<i64> {
    let text = send("GET", &gw.admin_url("/metrics"), &[], None)
        .await
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix("flashgate_redis_circuit_open "))
        .and_then(|v| v.trim().parse().ok())
}

/// A dead Redis opens the circuit breaker after a few failed calls: from then on buys get
/// their 503 at once instead of waiting out a timeout each; `/readyz` and the metric say
/// so; and when Redis is back a probe closes it by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_opens_the_breaker_and_buys_fail_at_once_until_it_is_back() {
    let mut redis = RedisServer::start_with_aof();
    let store = TestStore::start().await;
    let mut cfg = config(
        &redis,
        &store,
        CampaignSpec::new("breaker").item("a", 10, 100),
    );
    cfg.set_str("redis", "command_timeout", "300ms");
    let gw = start(&cfg).await;
    assert_eq!(circuit_open(&gw).await, Some(0));
    assert_eq!(buy(&gw, "breaker", "u0").await.status, 201);

    redis.kill();
    eventually("the breaker opens", Duration::from_secs(10), || async {
        let res = buy(&gw, "breaker", "u1").await;
        assert_unavailable(&res, "buy while Redis is dead");
        (circuit_open(&gw).await == Some(1)).then_some(())
    })
    .await;
    // Open: 503 at once. One call per cool-down is let through as a probe (and may wait
    // out its timeout), so most, not all, of these are instant.
    let mut instant = 0;
    for n in 0..20 {
        let t = Instant::now();
        let res = buy(&gw, "breaker", &format!("open{n}")).await;
        assert_unavailable(&res, "buy while the breaker is open");
        instant += usize::from(t.elapsed() < Duration::from_millis(20));
    }
    assert!(
        instant >= 15,
        "only {instant} of 20 buys were answered at once"
    );
    let ready = send("GET", &gw.admin_url("/readyz"), &[], None).await;
    assert_eq!(ready.status, 503);

    redis.restart();
    let back = buy_when_back(&gw, "breaker", "back").await;
    assert_eq!(back.status, 201, "{}", back.text());
    assert_eq!(circuit_open(&gw).await, Some(0));
    let stats = gw.item_stats("breaker", "a").await;
    assert_eq!(
        stats["pending"], 2,
        "nothing answered 503 reserved: {stats}"
    );
}

/// A buy answered 503 reserved nothing — even when a frozen Redis wakes up
/// and runs the reserve scripts that were queued before the gateway gave up. Each one
/// carries a deadline Redis checks against its own clock, so a late script refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_that_wakes_up_reserves_nothing_for_buys_answered_503() {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = config(
        &redis,
        &store,
        CampaignSpec::new("freeze").item("a", 1000, 100),
    );
    cfg.set_str("redis", "command_timeout", "200ms");
    let gw = start(&cfg).await;
    assert_eq!(buy(&gw, "freeze", "before").await.status, 201);

    let frozen = redis.freeze();
    let buys = (0..40).map(|n| {
        let gw = &gw;
        async move { buy(gw, "freeze", &format!("u{n}")).await }
    });
    let answers = futures_util::future::join_all(buys).await;
    for (n, res) in answers.iter().enumerate() {
        assert_unavailable(res, &format!("buy {n} while Redis is frozen"));
    }
    // Redis wakes up with the 40 scripts queued on the gateway's connection and runs them.
    drop(frozen);
    let back = buy_when_back(&gw, "freeze", "after").await;
    assert_eq!(back.status, 201, "{}", back.text());
    let stats = gw.item_stats("freeze", "a").await;
    assert_eq!(
        (stats["pending"].as_i64(), stats["remaining"].as_i64()),
        (Some(2), Some(998)),
        "only the two buys answered 201 hold units: {stats}"
    );
    assert_eq!(stats["ledger_ok"], true, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_fails_closed_fast_and_recovers_by_itself() {
    let mut redis = RedisServer::start_with_aof();
    let store = TestStore::start().await;
    let cfg = config(&redis, &store, CampaignSpec::new("down").item("a", 10, 100));
    let gw = start(&cfg).await;
    let first = buy(&gw, "down", "u0").await;
    assert_eq!(first.status, 201);
    let order_url = gw.url(&format!(
        "/seckill/orders/{}",
        first.json()["order_id"].as_str().unwrap()
    ));

    redis.stop();
    for i in 1..=3 {
        let started = Instant::now();
        let res = buy(&gw, "down", &format!("u{i}")).await;
        assert!(
            started.elapsed() < FAIL_FAST,
            "buy {i} took {:?}",
            started.elapsed()
        );
        assert_unavailable(&res, &format!("buy {i}"));
    }
    let auth = bearer("u0");
    let started = Instant::now();
    let res = send("GET", &order_url, &[("authorization", &auth)], None).await;
    assert_unavailable(&res, "GET order");
    let res = send("DELETE", &order_url, &[("authorization", &auth)], None).await;
    assert_unavailable(&res, "DELETE order");
    assert!(started.elapsed() < FAIL_FAST * 2);

    let ready = send("GET", &gw.admin_url("/readyz"), &[], None).await;
    assert_unavailable(&ready, "/readyz");
    assert_eq!(
        send("GET", &gw.admin_url("/healthz"), &[], None)
            .await
            .status,
        200
    );
    // The store's own traffic keeps flowing.
    let res = send("GET", &gw.url("/products/7?x=1"), &[], None).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["path"], "/products/7?x=1");
    let res = send("POST", &gw.url("/cart"), &[], Some(b"item=7".to_vec())).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["body"], "item=7");
    let metrics = send("GET", &gw.admin_url("/metrics"), &[], None)
        .await
        .text();
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flashgate_redis_errors_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(errors >= 3.0, "flashgate_redis_errors_total {errors}");

    redis.restart();
    let res = buy_when_back(&gw, "down", "u1").await;
    assert_eq!(res.status, 201, "{}", res.text());
    gw.wait_ready().await;
    // Nothing was reserved while Redis was away, nothing was lost.
    let item = gw.item_stats("down", "a").await;
    assert_eq!(item["ledger_ok"], true, "{item}");
    assert_eq!(
        (item["remaining"].as_i64(), item["pending"].as_i64()),
        (Some(8), Some(2)),
        "{item}"
    );
    let res = send("GET", &order_url, &[("authorization", &auth)], None).await;
    assert_eq!(res.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_before_redis_answers_503_then_serves() {
    let mut redis = RedisServer::start();
    redis.stop();
    let store = TestStore::start().await;
    let cfg = config(&redis, &store, CampaignSpec::new("late").item("a", 5, 100));
    let gw = Gateway::start(cfg.load()).await;

    let started = Instant::now();
    assert_unavailable(&buy(&gw, "late", "u1").await, "buy before redis");
    assert!(started.elapsed() < FAIL_FAST);
    assert_unavailable(
        &send("GET", &gw.admin_url("/readyz"), &[], None).await,
        "/readyz",
    );
    assert_eq!(send("GET", &gw.url("/"), &[], None).await.status, 200);

    redis.restart();
    gw.wait_ready().await;
    assert_eq!(buy(&gw, "late", "u1").await.status, 201);
    let item = gw.item_stats("late", "a").await;
    assert_eq!(
        (item["initial"].as_i64(), item["remaining"].as_i64()),
        (Some(5), Some(4))
    );
}

// === a reply lost with its connection: the 503 reserved nothing ===

const LOST: &str = "lost";

/// A buy with an `Idempotency-Key`.
async fn buy_keyed(gw: &Gateway, user: &str, key: &str) -> TestResponse {
    let auth = bearer(user);
    let headers = [("authorization", auth.as_str()), ("idempotency-key", key)];
    send("POST", &gw.buy_url(LOST, "a"), &headers, None).await
}

/// What Redis holds for `user` in campaign `lost`: units held and the pending order id.
async fn held_by(redis: &RedisServer, user: &str) -> (Option<i64>, Option<String>) {
    let mut con = redis_client(redis)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("HMGET")
        .arg(format!("fg:{{{LOST}}}:user:{user}"))
        .arg("held")
        .arg("p:a")
        .query_async(&mut con)
        .await
        .unwrap()
}

/// A gateway reaching Redis through a proxy that loses the reply to `victim`'s buy and
/// then refuses reconnections: the buy ran in Redis, its buyer is answered 503.
async fn lose_the_reply(redis: &RedisServer, store: &TestStore) -> (Gateway, RedisProxy) {
    let proxy = RedisProxy::start(redis.port()).await;
    let mut cfg = TestConfig::new(&proxy.url(), &store.url());
    cfg.campaign(CampaignSpec::new(LOST).item("a", 5, 100));
    let gw = start(&cfg).await;
    assert_eq!(buy(&gw, LOST, "first").await.status, 201);
    proxy.lose_reply_to("victim");
    proxy.set_refusing(true);
    let res = buy_keyed(&gw, "victim", "k1").await;
    assert_unavailable(&res, "a buy whose reply was lost");
    assert_eq!(proxy.replies_lost(), 1);
    // The reservation exists in Redis: the guard below has something to undo.
    let (held, order) = held_by(redis, "victim").await;
    assert_eq!(held, Some(1), "the lost call reserved");
    assert!(order.is_some());
    (gw, proxy)
}

/// A buy answered 503 reserved nothing. Its call ran in Redis (the reply was
/// lost when the connection dropped); the gateway undoes it before its lane sends
/// anything else, so the stock is back and the buyer's retry with the same key reserves
/// afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_whose_reply_was_lost_is_undone_before_the_next_buy() {
    let (redis, store) = (RedisServer::start(), TestStore::start().await);
    let (gw, proxy) = lose_the_reply(&redis, &store).await;
    proxy.set_refusing(false);
    // The first buy served after the outage was sent after the undo.
    let after = buy_when_back(&gw, LOST, "after").await;
    assert_eq!(after.status, 201, "{}", after.text());
    assert_eq!(held_by(&redis, "victim").await, (Some(0), None));
    let stats = gw.item_stats(LOST, "a").await;
    assert_eq!(
        (stats["remaining"].as_i64(), stats["pending"].as_i64()),
        (Some(3), Some(2)),
        "{stats}"
    );
    assert_eq!(stats["ledger_ok"], true, "{stats}");
    // The same Idempotency-Key now makes a new reservation (201, not a replay).
    let retry = buy_keyed(&gw, "victim", "k1").await;
    assert_eq!(retry.status, 201, "{}", retry.text());
}

/// The buyer retried on another instance before the undo could run and was shown the
/// order: from then on it is theirs, and the undo leaves it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reservation_a_retry_was_shown_is_kept() {
    let (redis, store) = (RedisServer::start(), TestStore::start().await);
    let (gw, proxy) = lose_the_reply(&redis, &store).await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(CampaignSpec::new(LOST).item("a", 5, 100));
    let other = start(&cfg).await;
    let shown = buy_keyed(&other, "victim", "k1").await;
    assert_eq!(
        shown.status,
        200,
        "the retry replays the order: {}",
        shown.text()
    );
    let id = shown.json()["order_id"].as_str().unwrap().to_owned();

    proxy.set_refusing(false);
    assert_eq!(buy_when_back(&gw, LOST, "after").await.status, 201);
    assert_eq!(held_by(&redis, "victim").await, (Some(1), Some(id)));
    let stats = gw.item_stats(LOST, "a").await;
    assert_eq!(stats["pending"].as_i64(), Some(3), "{stats}");
}

/// Up to two calls of one campaign are in flight, and a 503 reserves nothing for both. While
/// Redis has run one call whose reply is held back, the next buyer's call goes at once;
/// more buyers queue behind them. Then the connection drops with both replies: both
/// buyers are answered 503 and both calls are undone, so each retry with the same
/// Idempotency-Key reserves afresh (201, never a replay of an order its buyer was told
/// was not made); every queued buyer gets exactly one unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_in_flight_lost_together_are_both_undone() {
    const QUEUED: usize = 40;
    let (redis, store) = (RedisServer::start(), TestStore::start().await);
    let proxy = RedisProxy::start(redis.port()).await;
    let mut cfg = TestConfig::new(&proxy.url(), &store.url());
    cfg.campaign(CampaignSpec::new(LOST).item("a", 1000, 100));
    cfg.set_str("redis", "command_timeout", "5s");
    let gw = start(&cfg).await;
    assert_eq!(buy(&gw, LOST, "warm").await.status, 201);

    proxy.hold_replies(true);
    let ran = |user: &'static str| {
        let redis = &redis;
        async move {
            eventually(
                &format!("{user}'s call ran while the other waits for its reply"),
                Duration::from_secs(3),
                || async { (held_by(redis, user).await.0 == Some(1)).then_some(()) },
            )
            .await
        }
    };
    let lost = async {
        let first = buy_keyed(&gw, "first", "k-first");
        let rest = async {
            ran("first").await;
            let second = buy_keyed(&gw, "second", "k-second");
            let rest = async {
                ran("second").await;
                let queued = (0..QUEUED).map(|n| {
                    let gw = &gw;
                    async move {
                        let user = format!("queued-{n}");
                        eventually("buys served again", Duration::from_secs(15), || async {
                            let r = buy_keyed(gw, &user, "k").await;
                            (r.status != 503).then_some(r)
                        })
                        .await
                    }
                });
                let queued = futures_util::future::join_all(queued);
                let cut = async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    proxy.cut();
                    proxy.hold_replies(false);
                };
                tokio::join!(queued, cut).0
            };
            tokio::join!(second, rest)
        };
        let (first, (second, queued)) = tokio::join!(first, rest);
        (first, second, queued)
    };
    let (first, second, queued) = lost.await;
    assert_unavailable(&first, "the first call, its reply lost");
    assert_unavailable(&second, "the second call, its reply lost");
    for (n, res) in queued.iter().enumerate() {
        assert_eq!(res.status, 201, "queued buyer {n}: {}", res.text());
    }
    for user in ["first", "second"] {
        let retry = buy_keyed(&gw, user, &format!("k-{user}")).await;
        assert_eq!(
            retry.status,
            201,
            "{user}'s retry reserves afresh: {}",
            retry.text()
        );
        let id = retry.json()["order_id"].as_str().unwrap().to_owned();
        assert_eq!(held_by(&redis, user).await, (Some(1), Some(id)));
    }
    let stats = gw.item_stats(LOST, "a").await;
    let held = QUEUED as i64 + 3;
    assert_eq!(
        (stats["pending"].as_i64(), stats["remaining"].as_i64()),
        (Some(held), Some(1000 - held)),
        "{stats}"
    );
    assert_eq!(stats["ledger_ok"], true, "{stats}");
}

// === restarts never reset stock ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_keep_stock_and_pre_orders() {
    let mut redis = RedisServer::start_with_aof();
    let store = TestStore::start().await;
    let cfg = config(&redis, &store, CampaignSpec::new("keep").item("a", 20, 100));
    let gw = start(&cfg).await;
    let mut orders = Vec::new();
    for i in 0..7 {
        let user = format!("k{i}");
        let res = buy(&gw, "keep", &user).await;
        assert_eq!(res.status, 201);
        orders.push((user, res.json()));
    }
    // One is cancelled: its unit is back in `remaining`.
    let (u0, o0) = &orders[0];
    let url0 = gw.url(&format!(
        "/seckill/orders/{}",
        o0["order_id"].as_str().unwrap()
    ));
    let res = send("DELETE", &url0, &[("authorization", &bearer(u0))], None).await;
    assert_eq!(res.status, 200);
    let before = gw.item_stats("keep", "a").await;
    assert_eq!(
        (
            before["remaining"].as_i64(),
            before["pending"].as_i64(),
            before["cancelled"].as_i64()
        ),
        (Some(14), Some(6), Some(1)),
        "{before}"
    );

    // Stop the gateway AND restart Redis (graceful: AOF flushed), then a new gateway.
    gw.running.shutdown().await;
    redis.restart();
    let gw = start(&cfg).await;
    let after = gw.item_stats("keep", "a").await;
    assert_eq!(after, before, "a restart must not touch the ledger");

    for (user, order) in &orders {
        let url = gw.url(&format!(
            "/seckill/orders/{}",
            order["order_id"].as_str().unwrap()
        ));
        let res = send("GET", &url, &[("authorization", &bearer(user))], None).await;
        assert_eq!(res.status, 200, "{user}: {}", res.text());
        let got = res.json();
        if user == u0 {
            assert_eq!(got["status"], "cancelled");
        } else {
            assert_eq!(&got, order, "the pre-order survives as it was");
        }
    }
    // A holder's pending order is still theirs; a new buyer gets a new unit.
    let res = buy(&gw, "keep", "k3").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["order_id"], orders[3].1["order_id"]);
    assert_eq!(buy(&gw, "keep", "new").await.status, 201);

    // A reload with a bigger stock in the file does not re-add stock either.
    cfg.write_campaign(&CampaignSpec::new("keep").item("a", 50, 100));
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let res = send(
        "POST",
        &gw.admin_url("/admin/reload"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let item = gw.item_stats("keep", "a").await;
    assert_eq!(
        (item["initial"].as_i64(), item["remaining"].as_i64()),
        (Some(20), Some(13)),
        "{item}"
    );

    // Crash Redis this time, and come back with a campaign file that says stock 50:
    // the stock in Redis is loaded once and never re-added.
    gw.running.shutdown().await;
    redis.kill();
    redis.restart();
    let mut bigger = TestConfig::new(&redis.url(), &store.url());
    bigger.campaign(CampaignSpec::new("keep").item("a", 50, 100));
    let gw = start(&bigger).await;
    let item = gw.item_stats("keep", "a").await;
    assert_eq!(
        (
            item["initial"].as_i64(),
            item["remaining"].as_i64(),
            item["pending"].as_i64()
        ),
        (Some(20), Some(13), Some(7)),
        "{item}"
    );
    assert_eq!(item["ledger_ok"], true);
    gw.running.shutdown().await;
}

// === the script cache is not data ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_script_cache_is_reloaded_on_noscript() {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let cfg = config(&redis, &store, CampaignSpec::new("ns").item("a", 10, 100));
    let gw = start(&cfg).await;
    assert_eq!(buy(&gw, "ns", "n0").await.status, 201);

    let mut con = redis_client(&redis)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let flush = || redis::cmd("SCRIPT").arg("FLUSH").clone();
    let _: () = flush().query_async(&mut con).await.unwrap();
    let res = buy(&gw, "ns", "n1").await;
    assert_eq!(
        res.status,
        201,
        "reserve after SCRIPT FLUSH: {}",
        res.text()
    );

    let _: () = flush().query_async(&mut con).await.unwrap();
    let url = gw.url(&format!(
        "/seckill/orders/{}",
        res.json()["order_id"].as_str().unwrap()
    ));
    let res = send("DELETE", &url, &[("authorization", &bearer("n1"))], None).await;
    assert_eq!(res.status, 200, "cancel after SCRIPT FLUSH: {}", res.text());

    let _: () = flush().query_async(&mut con).await.unwrap();
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let res = send(
        "POST",
        &gw.admin_url("/admin/campaigns/ns/items/a/stock"),
        &[("authorization", &auth)],
        Some(br#"{"delta": 5}"#.to_vec()),
    )
    .await;
    assert_eq!(res.status, 200, "adjust after SCRIPT FLUSH: {}", res.text());

    let _: () = flush().query_async(&mut con).await.unwrap();
    assert_eq!(
        send("GET", &gw.admin_url("/readyz"), &[], None)
            .await
            .status,
        200
    );
    let item = gw.item_stats("ns", "a").await;
    assert_eq!(item["ledger_ok"], true, "{item}");
    assert_eq!(
        (
            item["remaining"].as_i64(),
            item["pending"].as_i64(),
            item["adjusted"].as_i64()
        ),
        (Some(14), Some(1), Some(5)),
        "{item}"
    );
}

// === stalled clients ===

/// Reads until the peer closes; returns what arrived and when it closed.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), s.read(&mut buf)).await
        {
            Err(_) => panic!(
                "still open after {limit:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_mid_request_is_cut_off() {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = config(&redis, &store, CampaignSpec::new("slow").item("a", 10, 100));
    cfg.set_str("server", "header_read_timeout", "1s");
    let gw = start(&cfg).await;

    // Half a request line, then nothing; nothing at all; a keep-alive connection left
    // idle after one request: each is disconnected after the header timeout.
    let stall = |first: &'static [u8]| async move {
        let mut s = TcpStream::connect(gw.public_addr).await.unwrap();
        s.write_all(first).await.unwrap();
        let (got, after) = read_to_close(&mut s, Duration::from_secs(5)).await;
        (String::from_utf8_lossy(&got).into_owned(), after)
    };
    let (half, silent, idle) = tokio::join!(
        stall(b"GET /seckill/campa"),
        stall(b""),
        stall(b"GET /products/1 HTTP/1.1\r\nHost: x\r\n\r\n"),
    );
    for (what, (got, after)) in [("half a request line", &half), ("silent", &silent)] {
        assert!(
            *after >= Duration::from_millis(800) && *after <= Duration::from_millis(2500),
            "{what}: closed after {after:?}"
        );
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 408"),
            "{what}: unexpected answer {got:?}"
        );
    }
    let (got, after) = idle;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        after <= Duration::from_millis(2500),
        "idle keep-alive: {after:?}"
    );

    // Complete headers but a stalled body on a buy: refused after the body timeout.
    let mut s = TcpStream::connect(gw.public_addr).await.unwrap();
    let head = format!(
        "POST /seckill/campaigns/slow/items/a/orders HTTP/1.1\r\nHost: x\r\n\
         Authorization: {}\r\nContent-Length: 15\r\n\r\n{{\"quan",
        bearer("staller")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer to a stalled body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("urn:flashgate:problem:bad-request"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(gw.item_stats("slow", "a").await["pending"], 0);

    // Meanwhile the gateway serves everyone else.
    assert_eq!(buy(&gw, "slow", "fine").await.status, 201);
}

// === graceful shutdown ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_an_in_flight_proxied_request() {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = config(&redis, &store, CampaignSpec::new("bye").item("a", 10, 100));
    cfg.set_str("server", "shutdown_grace", "10s");
    let gw = start(&cfg).await;
    let url = gw.url("/slow/page?n=1");
    let slow =
        tokio::spawn(async move { send("GET", &url, &[("x-test-delay-ms", "1500")], None).await });
    eventually(
        "the slow request reached the store",
        Duration::from_secs(5),
        || async { (store.echo_requests() == 1).then_some(()) },
    )
    .await;

    let public = gw.public_addr;
    let started = Instant::now();
    gw.running.shutdown().await;
    let took = started.elapsed();
    let res = slow.await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["path"], "/slow/page?n=1");
    assert!(
        took >= Duration::from_millis(1000),
        "shutdown did not wait for the request: {took:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "shutdown waited for more than the request: {took:?}"
    );
    // No longer accepting.
    let res = try_send("GET", &format!("http://{public}/"), &[], None).await;
    assert!(res.is_err(), "still serving after shutdown: {res:?}");
}
