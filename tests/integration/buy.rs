//! The buy path end to end: the real gateway, in-process, over HTTP,
//! against a real `redis-server`. Flash crowds, per-user limits, idempotent retries,
//! windows, identity, request validation, and the order endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use flashgate::clock::Clock;
use time::OffsetDateTime;
use tokio::sync::Barrier;

/// A started gateway with its Redis and store; dropped together at the end of a test.
struct Env {
    gw: Gateway,
    /// Kept alive: the gateway re-reads the campaign files from its directory.
    _cfg: TestConfig,
    _store: TestStore,
    redis: RedisServer,
}

async fn env_with(campaigns: Vec<CampaignSpec>, tweak: impl FnOnce(&mut TestConfig)) -> Env {
    env_on(Clock::system(), campaigns, tweak).await
}

/// [`env_with`], the gateway on `clock`.
async fn env_on(
    clock: Clock,
    campaigns: Vec<CampaignSpec>,
    tweak: impl FnOnce(&mut TestConfig),
) -> Env {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    for c in campaigns {
        cfg.campaign(c);
    }
    tweak(&mut cfg);
    let gw = Gateway::start_with_clock(cfg.load(), clock).await;
    gw.wait_ready().await;
    Env {
        gw,
        _cfg: cfg,
        _store: store,
        redis,
    }
}

async fn env(campaigns: Vec<CampaignSpec>) -> Env {
    env_with(campaigns, |_| {}).await
}

/// `POST` a buy as `user` with optional extra headers and body.
async fn buy_as(
    gw: &Gateway,
    user: &str,
    campaign: &str,
    sku: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
) -> TestResponse {
    let auth = bearer(user);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    send(
        "POST",
        &gw.buy_url(campaign, sku),
        &headers,
        body.map(<[u8]>::to_vec),
    )
    .await
}

async fn buy(gw: &Gateway, user: &str, campaign: &str, sku: &str) -> TestResponse {
    buy_as(gw, user, campaign, sku, &[], None).await
}

/// Asserts an RFC 9457 problem response with the contract's slug.
#[track_caller]
fn assert_problem(res: &TestResponse, status: u16, slug: &str) {
    assert_eq!(
        res.status,
        status,
        "expected {status} {slug}: {}",
        res.text()
    );
    assert_eq!(
        res.header("content-type"),
        Some("application/problem+json"),
        "{}",
        res.text()
    );
    let p = res.json();
    assert_eq!(p["type"], format!("urn:flashgate:problem:{slug}"), "{p}");
    assert_eq!(p["status"], status, "{p}");
    assert!(p["title"].is_string(), "{p}");
}

/// `<26-char Crockford ULID>.<campaign>`
#[track_caller]
fn assert_order_id(id: &str, campaign: &str) {
    let (ulid, c) = id
        .split_once('.')
        .unwrap_or_else(|| panic!("order id {id:?} is not <ulid>.<campaign>"));
    assert_eq!(c, campaign, "order id {id:?}");
    assert_eq!(ulid.len(), 26, "order id {id:?}");
    assert!(
        ulid.bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b))),
        "order id {id:?}"
    );
}

/// The ledger on one `/admin/campaigns` item.
#[track_caller]
fn assert_ledger(item: &serde_json::Value) {
    let n = |k: &str| item[k].as_i64().unwrap_or_else(|| panic!("no {k}: {item}"));
    assert_eq!(
        n("initial") + n("adjusted"),
        n("remaining") + n("pending") + n("paid"),
        "ledger broken: {item}"
    );
    assert!(n("remaining") >= 0, "{item}");
    assert_eq!(item["ledger_ok"], true, "{item}");
}

/// The value of sample `name` whose labels include all of `labels`, from a Prometheus
/// text page (0 if absent).
fn metric(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or(0.0)
}

// === flash crowds ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_crowd_of_600_buyers_gets_exactly_the_stock_of_100() {
    const BUYERS: usize = 600;
    let e = env(vec![CampaignSpec::new("crowd").item("phone", 100, 99900)]).await;
    let gw = Arc::new(e.gw);

    // Tokens are made up front so the crowd is released at once on the Barrier.
    let barrier = Arc::new(Barrier::new(BUYERS));
    let tasks: Vec<_> = (0..BUYERS)
        .map(|i| {
            let (gw, barrier) = (gw.clone(), barrier.clone());
            let user = format!("crowd-user-{i}");
            let auth = bearer(&user);
            tokio::spawn(async move {
                let url = gw.buy_url("crowd", "phone");
                barrier.wait().await;
                let res = send("POST", &url, &[("authorization", &auth)], None).await;
                (user, res)
            })
        })
        .collect();
    let mut created = BTreeMap::new();
    let mut statuses = BTreeMap::<(u16, String), usize>::new();
    for t in tasks {
        let (user, res) = t.await.expect("buyer task");
        let slug = if res.status == 201 {
            let o = res.json();
            assert_eq!(o["user_id"], user.as_str());
            assert_eq!(o["status"], "pending_payment");
            assert_eq!(o["quantity"], 1);
            let id = o["order_id"].as_str().unwrap().to_owned();
            assert_order_id(&id, "crowd");
            assert!(created.insert(id, user).is_none(), "order id issued twice");
            String::new()
        } else {
            assert_problem(&res, 409, "sold-out");
            "sold-out".into()
        };
        *statuses.entry((res.status, slug)).or_default() += 1;
    }
    assert_eq!(
        statuses,
        BTreeMap::from([
            ((201, String::new()), 100),
            ((409, "sold-out".into()), BUYERS - 100)
        ])
    );
    let buyers: BTreeSet<_> = created.values().collect();
    assert_eq!(buyers.len(), 100, "one unit per winning user");

    let item = gw.item_stats("crowd", "phone").await;
    assert_ledger(&item);
    assert_eq!(item["initial"], 100);
    assert_eq!(item["remaining"], 0);
    assert_eq!(item["pending"], 100);
    assert_eq!(item["paid"], 0);

    let metrics = send("GET", &gw.admin_url("/metrics"), &[], None)
        .await
        .text();
    let reserved = [
        ("campaign", "crowd"),
        ("sku", "phone"),
        ("event", "reserved"),
    ];
    assert_eq!(
        metric(&metrics, "flashgate_preorders_total", &reserved),
        100.0,
        "{metrics}"
    );
    let buy_ok = [("route", "buy"), ("outcome", "ok")];
    assert_eq!(metric(&metrics, "flashgate_requests_total", &buy_ok), 100.0);
    let sold_out = [("route", "buy"), ("outcome", "sold-out")];
    assert_eq!(
        metric(&metrics, "flashgate_requests_total", &sold_out),
        (BUYERS - 100) as f64
    );

    // The public view catches up within its one-second refresh.
    let url = gw.url("/seckill/campaigns/crowd");
    eventually("public remaining 0", Duration::from_secs(5), || async {
        let v = send("GET", &url, &[], None).await.json();
        (v["items"][0]["remaining"] == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_never_oversell_mixed_quantities() {
    const BUYERS: usize = 400;
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(
        CampaignSpec::new("twin")
            .per_user_limit(2)
            .item("a", 150, 10),
    );
    let gws = [
        Arc::new(Gateway::start(cfg.load()).await),
        Arc::new(Gateway::start(cfg.load()).await),
    ];
    for gw in &gws {
        gw.wait_ready().await;
    }

    let barrier = Arc::new(Barrier::new(BUYERS));
    let tasks: Vec<_> = (0..BUYERS)
        .map(|i| {
            let (gw, barrier) = (gws[i % 2].clone(), barrier.clone());
            let auth = bearer(&format!("twin-{i}"));
            let quantity = 1 + i % 2;
            tokio::spawn(async move {
                let url = gw.buy_url("twin", "a");
                let body = format!(r#"{{"quantity":{quantity}}}"#).into_bytes();
                barrier.wait().await;
                send("POST", &url, &[("authorization", &auth)], Some(body)).await
            })
        })
        .collect();
    let mut sold = 0;
    let mut created = 0;
    for t in tasks {
        let res = t.await.expect("buyer task");
        if res.status == 201 {
            created += 1;
            sold += res.json()["quantity"].as_i64().unwrap();
        } else {
            assert_problem(&res, 409, "sold-out");
        }
    }
    // Exactly the stock: while 1 unit is left, a 2-unit request is refused without setting
    // the local sold-out flag, and there are more 1-unit requests than units.
    assert_eq!(sold, 150, "sold {sold} units in {created} orders");
    // Both instances read the same ledger.
    for gw in &gws {
        let item = gw.item_stats("twin", "a").await;
        assert_ledger(&item);
        assert_eq!(item["pending"], sold, "{item}");
        assert_eq!(item["remaining"], 150 - sold, "{item}");
    }
}

/// Fires `n` buys at once as `user`, cycling through `skus`; returns the responses.
async fn parallel_buys(
    gw: &Arc<Gateway>,
    user: &str,
    campaign: &str,
    skus: &[&str],
    n: usize,
) -> Vec<TestResponse> {
    let barrier = Arc::new(Barrier::new(n));
    let auth = bearer(user);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, auth) = (barrier.clone(), auth.clone());
            let url = gw.buy_url(campaign, skus[i % skus.len()]);
            tokio::spawn(async move {
                barrier.wait().await;
                send("POST", &url, &[("authorization", &auth)], None).await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("buy task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_firing_50_parallel_buys_gets_one_order_at_limit_1() {
    let e = env(vec![CampaignSpec::new("solo")
        .per_user_limit(1)
        .item("a", 100, 1000)])
    .await;
    let gw = Arc::new(e.gw);
    let res = parallel_buys(&gw, "greedy", "solo", &["a"], 50).await;

    let mut ids = BTreeSet::new();
    let mut created = 0;
    for r in &res {
        // The first is 201; every other one finds the user's pending order: 200, same order.
        assert!(matches!(r.status, 200 | 201), "{} {}", r.status, r.text());
        created += usize::from(r.status == 201);
        ids.insert(r.json()["order_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let item = gw.item_stats("solo", "a").await;
    assert_ledger(&item);
    assert_eq!(item["pending"], 1);
    assert_eq!(item["remaining"], 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_firing_50_parallel_buys_across_items_never_exceeds_limit_2() {
    let e = env(vec![CampaignSpec::new("duo")
        .per_user_limit(2)
        .item("a", 100, 1000)
        .item("b", 100, 1000)
        .item("c", 100, 1000)])
    .await;
    let gw = Arc::new(e.gw);
    let res = parallel_buys(&gw, "greedy", "duo", &["a", "b", "c"], 50).await;

    let mut orders = BTreeMap::new();
    let mut created = 0;
    for r in &res {
        match r.status {
            200 | 201 => {
                let o = r.json();
                created += usize::from(r.status == 201);
                let id = o["order_id"].as_str().unwrap().to_owned();
                let sku = o["sku"].as_str().unwrap().to_owned();
                if let Some(prev) = orders.insert(id.clone(), sku.clone()) {
                    assert_eq!(prev, sku, "order {id} changed sku");
                }
            }
            _ => assert_problem(r, 409, "limit-reached"),
        }
    }
    assert_eq!(created, 2, "exactly per_user_limit new orders");
    assert_eq!(orders.len(), 2, "{orders:?}");
    let skus: BTreeSet<_> = orders.values().collect();
    assert_eq!(skus.len(), 2, "one pending order per item: {orders:?}");

    let mut pending = 0;
    for sku in ["a", "b", "c"] {
        let item = gw.item_stats("duo", sku).await;
        assert_ledger(&item);
        pending += item["pending"].as_i64().unwrap();
    }
    assert_eq!(pending, 2);
}

// === idempotency and per-user limits ===

#[tokio::test]
async fn idempotent_retries_answer_200_with_the_same_order() {
    let e = env(vec![CampaignSpec::new("idem")
        .per_user_limit(1)
        .item("a", 1, 500)
        .item("b", 10, 500)])
    .await;
    let gw = &e.gw;
    let key = [("idempotency-key", "retry-key-1")];

    let first = buy_as(gw, "alice", "idem", "a", &key, None).await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert!(first.header("location").is_some());
    let order = first.json();
    let id = order["order_id"].as_str().unwrap();

    let again = buy_as(gw, "alice", "idem", "a", &key, None).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json(), order, "the retry returns the very same order");

    // A second buy without a key while the order is pending: the same order.
    let no_key = buy(gw, "alice", "idem", "a").await;
    assert_eq!(no_key.status, 200, "{}", no_key.text());
    assert_eq!(no_key.json()["order_id"], id);

    // The same key for another item is a client bug.
    let other = buy_as(gw, "alice", "idem", "b", &key, None).await;
    assert_problem(&other, 400, "bad-request");

    // Item a is now sold out; bob learns it from Redis, which sets the local flag...
    assert_problem(&buy(gw, "bob", "idem", "a").await, 409, "sold-out");
    // ...but a retry naming its Idempotency-Key still reaches Redis and gets its order.
    let after = buy_as(gw, "alice", "idem", "a", &key, None).await;
    assert_eq!(after.status, 200, "{}", after.text());
    assert_eq!(after.json()["order_id"], id);

    // Another user's identical key is a different key.
    let bob = buy_as(gw, "bob", "idem", "b", &key, None).await;
    assert_eq!(bob.status, 201, "{}", bob.text());
    assert_ne!(bob.json()["order_id"], id);

    for sku in ["a", "b"] {
        let item = gw.item_stats("idem", sku).await;
        assert_ledger(&item);
        assert_eq!(item["pending"], 1, "{item}");
    }
}

#[tokio::test]
async fn per_user_limit_spans_the_items_of_a_campaign() {
    let e = env(vec![
        CampaignSpec::new("pair")
            .per_user_limit(1)
            .item("a", 10, 100)
            .item("b", 10, 100),
        CampaignSpec::new("other")
            .per_user_limit(1)
            .item("a", 10, 100),
    ])
    .await;
    let gw = &e.gw;

    let a = buy(gw, "carol", "pair", "a").await;
    assert_eq!(a.status, 201, "{}", a.text());
    assert_problem(&buy(gw, "carol", "pair", "b").await, 409, "limit-reached");
    // The limit is per campaign: another campaign's item is fine.
    assert_eq!(buy(gw, "carol", "other", "a").await.status, 201);

    // Cancelling frees the quota.
    let id = a.json()["order_id"].as_str().unwrap().to_owned();
    let auth = bearer("carol");
    let res = send(
        "DELETE",
        &gw.url(&format!("/seckill/orders/{id}")),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(buy(gw, "carol", "pair", "b").await.status, 201);

    let a = gw.item_stats("pair", "a").await;
    let b = gw.item_stats("pair", "b").await;
    assert_ledger(&a);
    assert_ledger(&b);
    assert_eq!(
        (a["pending"].as_i64(), a["cancelled"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(b["pending"], 1);
}

#[tokio::test]
async fn quantity_up_to_the_limit_reserves_that_many_units() {
    let e = env(vec![CampaignSpec::new("multi")
        .per_user_limit(3)
        .item("a", 5, 250)])
    .await;
    let gw = &e.gw;
    let res = buy_as(gw, "dave", "multi", "a", &[], Some(br#"{"quantity": 3}"#)).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let o = res.json();
    assert_eq!(o["quantity"], 3);
    assert_eq!(o["amount_cents"], 750);

    // 2 left: a request for 3 is sold out, not partially filled.
    let res = buy_as(gw, "erin", "multi", "a", &[], Some(br#"{"quantity": 3}"#)).await;
    assert_problem(&res, 409, "sold-out");
    let res = buy_as(gw, "erin", "multi", "a", &[], Some(br#"{"quantity": 2}"#)).await;
    assert_eq!(res.status, 201, "{}", res.text());

    let item = gw.item_stats("multi", "a").await;
    assert_ledger(&item);
    assert_eq!(
        (item["remaining"].as_i64(), item["pending"].as_i64()),
        (Some(0), Some(5))
    );
}

#[tokio::test]
async fn stock_returned_by_a_cancel_goes_back_on_sale() {
    let e = env(vec![CampaignSpec::new("back").item("a", 1, 100)]).await;
    let gw = &e.gw;
    let first = buy(gw, "frank", "back", "a").await;
    assert_eq!(first.status, 201);
    assert_problem(&buy(gw, "grace", "back", "a").await, 409, "sold-out");

    let id = first.json()["order_id"].as_str().unwrap().to_owned();
    let auth = bearer("frank");
    let url = gw.url(&format!("/seckill/orders/{id}"));
    assert_eq!(
        send("DELETE", &url, &[("authorization", &auth)], None)
            .await
            .status,
        200
    );

    // The local sold-out flag lasts ~250 ms; after it the unit is for sale again.
    let res = eventually(
        "grace buys the returned unit",
        Duration::from_secs(3),
        || async {
            let r = buy(gw, "grace", "back", "a").await;
            (r.status != 409).then_some(r)
        },
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let item = gw.item_stats("back", "a").await;
    assert_ledger(&item);
    assert_eq!(item["pending"], 1);
}

/// `EVALSHA` + `EVAL` calls Redis has served since the last `CONFIG RESETSTAT`.
async fn script_calls(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sell_out_the_local_flag_spares_redis() {
    let e = env_with(vec![CampaignSpec::new("flag").item("a", 1, 100)], |cfg| {
        // No expiry sweeps during the count: only buys run scripts.
        cfg.set_str("orders", "sweep_interval", "1h");
    })
    .await;
    let gw = &e.gw;
    assert_eq!(buy(gw, "winner", "flag", "a").await.status, 201);

    let mut con = redis::Client::open(e.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut con)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for i in 0..40 {
        assert_problem(
            &buy(gw, &format!("late-{i}"), "flag", "a").await,
            409,
            "sold-out",
        );
    }
    let windows = flashgate::clock::millis(started.elapsed()) / 250 + 1;
    let calls = script_calls(&mut con).await;
    assert!(
        (1..=windows).contains(&calls),
        "40 sold-out answers in {:?} asked Redis {calls} times (at most one per 250 ms)",
        started.elapsed()
    );

    // A retry that names an Idempotency-Key always reaches Redis.
    for i in 0..5 {
        let key = format!("k{i}");
        let res = buy_as(
            gw,
            &format!("late-{i}"),
            "flag",
            "a",
            &[("idempotency-key", &key)],
            None,
        )
        .await;
        assert_problem(&res, 409, "sold-out");
    }
    assert_eq!(script_calls(&mut con).await, calls + 5);
}

// === windows and lookups ===

/// Time is the subject here: the gateway runs on a fake clock the test moves, from
/// before a campaign opens to after it ends, without waiting.
#[tokio::test]
async fn campaign_windows_not_started_ended_and_opening() {
    // Whole seconds: the campaign file and the fake clock both hold the instants exactly.
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let clock = Clock::fake(now);
    let secs = |n: u64| Duration::from_secs(n);
    let hour = secs(3600);
    let e = env_on(
        clock.clone(),
        vec![
            CampaignSpec::new("later")
                .window(now + secs(120), now + secs(120) + hour)
                .item("a", 5, 100),
            CampaignSpec::new("past")
                .window(now - secs(60) - hour, now - secs(60))
                .item("a", 5, 100),
            CampaignSpec::new("soon")
                .window(now + secs(2), now + secs(2) + hour)
                .item("a", 5, 100),
        ],
        |_| {},
    )
    .await;
    let gw = &e.gw;
    let retry_after =
        |res: &TestResponse| -> u64 { res.header("retry-after").unwrap().parse().unwrap() };

    let res = buy(gw, "henry", "later", "a").await;
    assert_problem(&res, 403, "not-started");
    assert_eq!(retry_after(&res), 120);
    assert_problem(&buy(gw, "henry", "past", "a").await, 410, "ended");

    // Half a second before the start: still closed, and due in a second (rounded up).
    clock.advance(Duration::from_millis(1500));
    let res = buy(gw, "henry", "soon", "a").await;
    assert_problem(&res, 403, "not-started");
    assert_eq!(retry_after(&res), 1);
    clock.advance(Duration::from_millis(500));
    let res = buy(gw, "henry", "soon", "a").await;
    assert_eq!(res.status, 201, "open at its start: {}", res.text());

    for id in ["later", "past"] {
        let item = gw.item_stats(id, "a").await;
        assert_eq!(
            (item["remaining"].as_i64(), item["pending"].as_i64()),
            (Some(5), Some(0))
        );
    }
    let states = || {
        futures_util::future::join_all(["later", "past", "soon"].map(|id| async move {
            let url = gw.url(&format!("/seckill/campaigns/{id}"));
            send("GET", &url, &[], None).await.json()["state"].clone()
        }))
    };
    assert_eq!(states().await, ["not_started", "ended", "open"]);

    // An hour on, "soon" is at its end (ended) and "later" is open.
    clock.advance(hour);
    assert_problem(&buy(gw, "ida", "soon", "a").await, 410, "ended");
    assert_eq!(buy(gw, "ida", "later", "a").await.status, 201);
    assert_eq!(states().await, ["open", "ended", "ended"]);
}

#[tokio::test]
async fn unknown_campaign_or_sku_is_404() {
    let e = env(vec![CampaignSpec::new("real").item("a", 5, 100)]).await;
    let gw = &e.gw;
    assert_problem(&buy(gw, "ivan", "nope", "a").await, 404, "not-found");
    assert_problem(&buy(gw, "ivan", "real", "nope").await, 404, "not-found");
    let res = send("GET", &gw.url("/seckill/campaigns/nope"), &[], None).await;
    assert_problem(&res, 404, "not-found");
    let auth = bearer("ivan");
    for id in [
        "garbage",
        "01J0000000000000000000000.real",
        "01J0000000000000000000000.nope",
    ] {
        let res = send(
            "GET",
            &gw.url(&format!("/seckill/orders/{id}")),
            &[("authorization", &auth)],
            None,
        )
        .await;
        assert_problem(&res, 404, "not-found");
    }
}

#[tokio::test]
async fn buys_without_a_valid_identity_are_401() {
    let e = env(vec![CampaignSpec::new("auth").item("a", 5, 100)]).await;
    let gw = &e.gw;
    let url = gw.buy_url("auth", "a");
    let expired = format!("Bearer {}", jwt_with("jane", JWT_SECRET, -120));
    let wrong = format!("Bearer {}", jwt_with("jane", "not-the-secret", 3600));
    let cases: [(&str, Option<&str>); 6] = [
        ("missing", None),
        ("garbage", Some("Bearer garbage.not.ajwt")),
        ("expired", Some(&expired)),
        ("wrong secret", Some(&wrong)),
        ("not bearer", Some("Basic amFuZTpwdw==")),
        ("empty bearer", Some("Bearer ")),
    ];
    for (what, auth) in cases {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let res = send("POST", &url, &headers, None).await;
        assert_eq!(res.status, 401, "{what}: {}", res.text());
        assert_problem(&res, 401, "unauthenticated");
    }
    let item = gw.item_stats("auth", "a").await;
    assert_eq!(item["remaining"], 5);

    // The order endpoints need an identity too.
    let res = send(
        "GET",
        &gw.url("/seckill/orders/01J0000000000000000000000.auth"),
        &[],
        None,
    )
    .await;
    assert_problem(&res, 401, "unauthenticated");
    let res = send(
        "DELETE",
        &gw.url("/seckill/orders/01J0000000000000000000000.auth"),
        &[],
        None,
    )
    .await;
    assert_problem(&res, 401, "unauthenticated");
}

#[tokio::test]
async fn bad_bodies_and_quantities_are_400_and_oversized_bodies_413() {
    let e = env_with(
        vec![CampaignSpec::new("body")
            .per_user_limit(2)
            .item("a", 5, 100)],
        |cfg| {
            cfg.set("server", "max_body_bytes", "256");
        },
    )
    .await;
    let gw = &e.gw;
    let bad: [&[u8]; 10] = [
        b"{",
        br#"{"quantity":0}"#,
        br#"{"quantity":-1}"#,
        br#"{"quantity":"1"}"#,
        br#"{"quantity":1.5}"#,
        br#"{"quantity":3}"#,
        br#"{"quantity":1,"color":"red"}"#,
        br#"{"quantity":99999999999}"#,
        b"[]",
        b"null",
    ];
    for body in bad {
        let res = buy_as(gw, "kate", "body", "a", &[], Some(body)).await;
        assert_eq!(
            res.status,
            400,
            "{}: {}",
            String::from_utf8_lossy(body),
            res.text()
        );
        assert_problem(&res, 400, "bad-request");
    }
    let big = format!(r#"{{"quantity":1,"pad":"{}"}}"#, "x".repeat(1024));
    let res = buy_as(gw, "kate", "body", "a", &[], Some(big.as_bytes())).await;
    assert_eq!(res.status, 413, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/problem+json"));

    // A bad Idempotency-Key is a bad request too.
    let res = buy_as(
        gw,
        "kate",
        "body",
        "a",
        &[("idempotency-key", "has space")],
        None,
    )
    .await;
    assert_problem(&res, 400, "bad-request");

    let item = gw.item_stats("body", "a").await;
    assert_eq!(
        (item["remaining"].as_i64(), item["pending"].as_i64()),
        (Some(5), Some(0))
    );

    // Empty and `{}` bodies mean quantity 1; an explicit one works.
    let res = buy_as(gw, "kate", "body", "a", &[], Some(b"{}")).await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.json()["quantity"], 1);
    let res = buy_as(gw, "liam", "body", "a", &[], Some(br#"{"quantity":2}"#)).await;
    assert_eq!(res.status, 201, "{}", res.text());
    let item = gw.item_stats("body", "a").await;
    assert_ledger(&item);
    assert_eq!(item["pending"], 3);
}

// === the order endpoints ===

#[tokio::test]
async fn orders_are_shown_to_their_owner_only_and_cancel_returns_stock() {
    let e = env(vec![CampaignSpec::new("own")
        .payment_window("10m")
        .item("a", 3, 1999)])
    .await;
    let gw = &e.gw;
    let res = buy(gw, "mia", "own", "a").await;
    assert_eq!(res.status, 201);
    let order = res.json();
    let id = order["order_id"].as_str().unwrap().to_owned();
    assert_order_id(&id, "own");
    assert_eq!(
        res.header("location").map(str::to_owned),
        Some(format!("/seckill/orders/{id}"))
    );
    assert_eq!(order["campaign"], "own");
    assert_eq!(order["sku"], "a");
    assert_eq!(order["user_id"], "mia");
    assert_eq!(order["amount_cents"], 1999);
    assert_eq!(order["status"], "pending_payment");
    let ts = |k: &str| {
        time::OffsetDateTime::parse(
            order[k].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("{k}: {e}: {order}"))
    };
    assert_eq!(ts("pay_by") - ts("created_at"), time::Duration::minutes(10));
    let age = time::OffsetDateTime::now_utc() - ts("created_at");
    assert!(age.abs() < time::Duration::seconds(10), "created_at {age}");

    let url = gw.url(&format!("/seckill/orders/{id}"));
    let (mia, noah) = (bearer("mia"), bearer("noah"));
    let res = send("GET", &url, &[("authorization", &mia)], None).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), order);
    assert_problem(
        &send("GET", &url, &[("authorization", &noah)], None).await,
        404,
        "not-found",
    );
    assert_problem(
        &send("DELETE", &url, &[("authorization", &noah)], None).await,
        404,
        "not-found",
    );
    assert_eq!(gw.item_stats("own", "a").await["pending"], 1);

    let res = send("DELETE", &url, &[("authorization", &mia)], None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["order_id"], id.as_str());
    assert_eq!(res.json()["status"], "cancelled");
    let item = gw.item_stats("own", "a").await;
    assert_ledger(&item);
    assert_eq!(
        (
            item["remaining"].as_i64(),
            item["pending"].as_i64(),
            item["cancelled"].as_i64()
        ),
        (Some(3), Some(0), Some(1))
    );

    assert_problem(
        &send("DELETE", &url, &[("authorization", &mia)], None).await,
        409,
        "not-pending",
    );
    let res = send("GET", &url, &[("authorization", &mia)], None).await;
    assert_eq!(res.json()["status"], "cancelled");
    assert_eq!(
        gw.item_stats("own", "a").await["cancelled"],
        1,
        "cancelled once"
    );

    // The owner may buy again: a new order.
    let res = buy(gw, "mia", "own", "a").await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_ne!(res.json()["order_id"], id.as_str());
}

#[tokio::test]
async fn public_campaign_view_has_window_time_and_items() {
    let e = env(vec![CampaignSpec::new("view")
        .per_user_limit(2)
        .payment_window("15m")
        .item("a", 7, 1500)
        .item("b", 0, 2500)])
    .await;
    let gw = &e.gw;
    assert_eq!(buy(gw, "olga", "view", "a").await.status, 201);
    let url = gw.url("/seckill/campaigns/view");
    let v = eventually(
        "remaining 6 in the public view",
        Duration::from_secs(5),
        || async {
            let v = send("GET", &url, &[], None).await.json();
            (v["items"][0]["remaining"] == 6).then_some(v)
        },
    )
    .await;
    assert_eq!(v["id"], "view");
    assert_eq!(v["name"], "Test campaign view");
    assert_eq!(v["state"], "open");
    assert_eq!(v["per_user_limit"], 2);
    assert_eq!(v["payment_window_seconds"], 900);
    for k in ["starts_at", "ends_at", "server_time"] {
        let t = v[k].as_str().unwrap_or_else(|| panic!("{k}: {v}"));
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{k} {t:?}: {e}"));
    }
    assert_eq!(
        v["items"],
        serde_json::json!([
            {"sku": "a", "price_cents": 1500, "remaining": 6},
            {"sku": "b", "price_cents": 2500, "remaining": 0},
        ])
    );
    // An item with stock 0 is sold out from the start.
    assert_problem(&buy(gw, "olga", "view", "b").await, 409, "sold-out");
}
