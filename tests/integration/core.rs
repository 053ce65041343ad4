//! The sale without HTTP: `flashgate::core::Sale` on a real Redis, driven by a fake clock
//! (no wall-clock sleeps). Covers buy, cancel, confirm and expiry, and their invariants
//! under concurrency: no oversell, the per-user limit, a payment decided exactly once.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use flashgate::clock::Clock;
use flashgate::core::{BadInput, Bought, BuyRequest, Sale, SaleError};
use flashgate::stock::OrderStatus;
use time::OffsetDateTime;

use crate::common::{
    sign_callback, CampaignSpec, RedisServer, TestConfig, TestStore, PAYMENT_SECRET,
};

const SKU: &str = "phone";
const PRICE: u64 = 99_900;
const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

struct Setup {
    sale: Sale,
    clock: Clock,
    _redis: RedisServer,
    _store: TestStore,
    _cfg: TestConfig,
}

/// A sale of `campaign` on its own Redis, its clock standing at `now`.
async fn setup(campaign: CampaignSpec, now: OffsetDateTime) -> Setup {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(campaign);
    let clock = Clock::fake(now);
    let sale = Sale::from_config(&cfg.load(), clock.clone())
        .await
        .expect("sale");
    sale.connect().await;
    sale.ready()
        .await
        .expect("redis up, scripts and stock loaded");
    Setup {
        sale,
        clock,
        _redis: redis,
        _store: store,
        _cfg: cfg,
    }
}

/// A campaign with one item of `stock`, open for an hour around the real now.
fn running(id: &str, stock: u64) -> CampaignSpec {
    CampaignSpec::new(id).item(SKU, stock, PRICE)
}

async fn buy(
    sale: &Sale,
    campaign: &str,
    user: &str,
    key: Option<&str>,
) -> Result<Bought, SaleError> {
    buy_item(sale, campaign, SKU, user, key).await
}

async fn stats(sale: &Sale) -> flashgate::stock::ItemStats {
    let ledgers = sale.ledgers().await.expect("ledgers");
    let item = &ledgers[0].items[0];
    assert!(item.ledger_ok, "ledger broken: {:?}", item.stats);
    item.stats
}

/// A signed `succeeded` callback for `order_id`, stamped with the sale's clock.
async fn pay(
    s: &Setup,
    order_id: &str,
    payment_id: &str,
    amount: u64,
) -> Result<OrderStatus, SaleError> {
    let body = serde_json::json!({
        "order_id": order_id, "payment_id": payment_id,
        "amount_cents": amount, "status": "succeeded",
    })
    .to_string();
    let sig = sign_callback(
        PAYMENT_SECRET,
        body.as_bytes(),
        s.clock.now().unix_timestamp(),
    );
    s.sale
        .confirm_payment(body.as_bytes(), Some(&sig))
        .await
        .map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_follows_the_injected_clock() {
    // Whole seconds: the campaign file and the fake clock (milliseconds) both hold it exactly.
    let start = (OffsetDateTime::now_utc() + Duration::from_secs(3600))
        .replace_nanosecond(0)
        .unwrap();
    let spec = CampaignSpec::new("window")
        .item(SKU, 5, PRICE)
        .window(start, start + Duration::from_secs(1800));
    let s = setup(spec, start - Duration::from_millis(1500)).await;

    match buy(&s.sale, "window", "u1", None).await {
        Err(SaleError::NotStarted { secs_to_start }) => assert_eq!(secs_to_start, 2),
        other => panic!("expected not-started, got {other:?}"),
    }
    s.clock.advance(Duration::from_millis(1500));
    let bought = buy(&s.sale, "window", "u1", None)
        .await
        .expect("open at starts_at");
    assert!(bought.created);
    s.clock.advance(Duration::from_secs(1800));
    assert!(matches!(
        buy(&s.sale, "window", "u2", None).await,
        Err(SaleError::Ended)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_never_oversells_and_one_user_never_exceeds_the_limit() {
    let s = setup(running("crowd", 20), OffsetDateTime::now_utc()).await;
    // 100 distinct users plus one user trying 20 times at once, all concurrently.
    let mut tasks = Vec::new();
    for n in 0..100 {
        let sale = s.sale.clone();
        tasks.push(tokio::spawn(async move {
            buy(&sale, "crowd", &format!("u{n}"), None).await
        }));
    }
    for _ in 0..20 {
        let sale = s.sale.clone();
        tasks.push(tokio::spawn(async move {
            buy(&sale, "crowd", "greedy", None).await
        }));
    }
    let (mut created, mut greedy_orders) = (0, std::collections::HashSet::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(b) => {
                if b.created {
                    created += 1;
                }
                if b.order.user_id == "greedy" {
                    greedy_orders.insert(b.order.order_id);
                }
            }
            Err(SaleError::SoldOut) => {}
            Err(e) => panic!("unexpected outcome: {e:?}"),
        }
    }
    assert_eq!(created, 20, "exactly the stock is reserved");
    assert!(
        greedy_orders.len() <= 1,
        "one user, one order: {greedy_orders:?}"
    );
    let st = stats(&s.sale).await;
    assert_eq!((st.remaining, st.pending), (0, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sold_out_flag_lasts_250ms_of_the_injected_clock() {
    let s = setup(running("flag", 1), OffsetDateTime::now_utc()).await;
    let holder = buy(&s.sale, "flag", "holder", None).await.unwrap().order;
    assert!(matches!(
        buy(&s.sale, "flag", "late", None).await,
        Err(SaleError::SoldOut)
    ));
    // The unit comes back, but the local flag answers for 250 ms without asking Redis.
    s.sale.cancel(&holder.order_id, "holder").await.unwrap();
    assert!(matches!(
        buy(&s.sale, "flag", "late", None).await,
        Err(SaleError::SoldOut)
    ));
    s.clock.advance(Duration::from_millis(249));
    assert!(matches!(
        buy(&s.sale, "flag", "late", None).await,
        Err(SaleError::SoldOut)
    ));
    s.clock.advance(Duration::from_millis(1));
    let b = buy(&s.sale, "flag", "late", None)
        .await
        .expect("flag expired: Redis says in stock");
    assert!(b.created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_idempotency_keys_get_the_same_order() {
    let s = setup(running("idem", 5), OffsetDateTime::now_utc()).await;
    let first = buy(&s.sale, "idem", "u1", Some("k1")).await.unwrap();
    assert!(first.created);
    let again = buy(&s.sale, "idem", "u1", Some("k1")).await.unwrap();
    assert_eq!((again.created, &again.order), (false, &first.order));
    let plain = buy(&s.sale, "idem", "u1", None).await.unwrap();
    assert_eq!(
        (plain.created, plain.order.order_id),
        (false, first.order.order_id)
    );
    assert_eq!(stats(&s.sale).await.pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_decided_once_and_a_cancel_returns_stock() {
    let s = setup(running("pay", 2), OffsetDateTime::now_utc()).await;
    let a = buy(&s.sale, "pay", "a", None).await.unwrap().order;
    assert_eq!(
        pay(&s, &a.order_id, "p1", PRICE).await.unwrap(),
        OrderStatus::Paid
    );
    assert_eq!(
        pay(&s, &a.order_id, "p1", PRICE).await.unwrap(),
        OrderStatus::Paid
    );
    assert!(matches!(
        s.sale.cancel(&a.order_id, "a").await,
        Err(SaleError::NotPending)
    ));
    assert!(matches!(
        pay(&s, &a.order_id, "p1", PRICE + 1).await,
        Ok(OrderStatus::Paid)
    ));

    let b = buy(&s.sale, "pay", "b", None).await.unwrap().order;
    assert!(matches!(
        pay(&s, &b.order_id, "p2", PRICE - 1).await,
        Err(SaleError::AmountMismatch)
    ));
    assert!(matches!(
        s.sale.cancel(&b.order_id, "someone-else").await,
        Err(SaleError::UnknownOrder)
    ));
    assert!(matches!(
        s.sale.order(&b.order_id, "someone-else").await,
        Err(SaleError::UnknownOrder)
    ));
    let cancelled = s.sale.cancel(&b.order_id, "b").await.unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(
        pay(&s, &b.order_id, "p2", PRICE).await.unwrap(),
        OrderStatus::RefundRequired,
        "money for a cancelled pre-order goes back"
    );
    let st = stats(&s.sale).await;
    assert_eq!(
        (st.remaining, st.pending, st.paid, st.cancelled),
        (1, 0, 1, 1)
    );

    let stale = s.clock.now().unix_timestamp() - 3600;
    let body = br#"{"order_id":"x","payment_id":"p","amount_cents":1,"status":"succeeded"}"#;
    let sig = sign_callback(PAYMENT_SECRET, body, stale);
    assert!(matches!(
        s.sale.confirm_payment(body, Some(&sig)).await,
        Err(SaleError::BadSignature(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_racing_cancel_ends_in_exactly_one() {
    let s = setup(running("race", 50), OffsetDateTime::now_utc()).await;
    let mut orders = Vec::new();
    for n in 0..50 {
        orders.push(
            buy(&s.sale, "race", &format!("u{n}"), None)
                .await
                .unwrap()
                .order,
        );
    }
    let mut tasks = Vec::new();
    for o in &orders {
        let (sale, id, user) = (s.sale.clone(), o.order_id.clone(), o.user_id.clone());
        tasks.push(tokio::spawn(async move {
            sale.cancel(&id, &user).await.is_ok()
        }));
    }
    let mut paid = 0;
    for o in &orders {
        if pay(&s, &o.order_id, &format!("pay-{}", o.order_id), PRICE)
            .await
            .unwrap()
            == OrderStatus::Paid
        {
            paid += 1;
        }
    }
    let cancelled = futures_count(tasks).await;
    assert_eq!(
        paid + cancelled,
        50,
        "each order is either paid or cancelled, never both"
    );
    let st = stats(&s.sale).await;
    assert_eq!((st.paid, st.cancelled, st.pending), (paid, cancelled, 0));
}

async fn futures_count(tasks: Vec<tokio::task::JoinHandle<bool>>) -> i64 {
    let mut n = 0;
    for t in tasks {
        n += i64::from(t.await.unwrap());
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_expires_by_the_injected_clock() {
    let spec = running("expiry", 3).payment_window("10m");
    let s = setup(spec, OffsetDateTime::now_utc()).await;
    let o = buy(&s.sale, "expiry", "u1", None).await.unwrap().order;
    s.sale.sweep().await;
    assert_eq!(stats(&s.sale).await.pending, 1, "not due yet");
    s.clock.advance(Duration::from_secs(601));
    s.sale.sweep().await;
    let st = stats(&s.sale).await;
    assert_eq!((st.remaining, st.pending, st.expired), (3, 0, 1));
    let gone = s.sale.order(&o.order_id, "u1").await.unwrap();
    assert_eq!(gone.status, OrderStatus::Expired);
}

// === group commit: buys of one campaign share reserve calls (src/stock/batch.rs) ===

/// A buy of `sku`, with an optional Idempotency-Key.
async fn buy_item(
    sale: &Sale,
    campaign: &str,
    sku: &str,
    user: &str,
    key: Option<&str>,
) -> Result<Bought, SaleError> {
    let req = BuyRequest {
        campaign,
        sku,
        client_ip: IP,
        idempotency_key: Ok(key),
    };
    let user = user.to_owned();
    sale.buy(req, move || Ok(user), async { Ok::<_, BadInput>(None) })
        .await
}

/// (count, sum) of `flashgate_reserve_batch_size`: sum > count means some call carried
/// more than one buy.
fn batches(sale: &Sale) -> (u64, f64) {
    let h = &sale.metrics().reserve_batch_size;
    (h.get_sample_count(), h.get_sample_sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_buyers_in_batches_reserve_exactly_the_stock_with_scripts_flushed_midway() {
    let s = setup(running("batched", 100), OffsetDateTime::now_utc()).await;
    let crowd = |from: usize, to: usize| {
        (from..to)
            .map(|n| {
                let sale = s.sale.clone();
                tokio::spawn(async move { buy(&sale, "batched", &format!("b{n}"), None).await })
            })
            .collect::<Vec<_>>()
    };
    let count = |tasks: Vec<tokio::task::JoinHandle<Result<Bought, SaleError>>>| async move {
        let mut created = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(b) => created += usize::from(b.created),
                Err(SaleError::SoldOut) => {}
                Err(e) => panic!("unexpected outcome: {e:?}"),
            }
        }
        created
    };
    let first = count(crowd(0, 400)).await;
    // Redis forgets every script (a restart, a failover): the next batch reloads it.
    let mut con = s.sale.store().conn().get().unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    let second = count(crowd(400, 1000)).await;
    assert_eq!(first + second, 100, "exactly the stock is reserved");
    let st = stats(&s.sale).await;
    assert_eq!((st.remaining, st.pending), (0, 100));
    let (calls, buys) = batches(&s.sale);
    assert!(
        buys > calls as f64,
        "no call carried more than one buy: {calls} calls, {buys} buys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_shared_batches_a_user_keeps_the_limit_and_a_key_its_one_order() {
    let s = setup(
        CampaignSpec::new("limits")
            .per_user_limit(2)
            .item("a", 50, PRICE)
            .item("b", 50, PRICE)
            .item("c", 50, PRICE),
        OffsetDateTime::now_utc(),
    )
    .await;
    // One user: 30 buys of each of three items at once (limit 2), among 90 other buyers,
    // and one Idempotency-Key sent 40 times at once by another user.
    let mut tasks = Vec::new();
    for n in 0..90 {
        let (sale, sku) = (s.sale.clone(), ["a", "b", "c"][n % 3]);
        tasks.push(tokio::spawn(async move {
            (
                "greedy",
                buy_item(&sale, "limits", sku, "greedy", None).await,
            )
        }));
        let sale = s.sale.clone();
        tasks.push(tokio::spawn(async move {
            (
                "other",
                buy_item(&sale, "limits", sku, &format!("o{n}"), None).await,
            )
        }));
    }
    for _ in 0..40 {
        let sale = s.sale.clone();
        tasks.push(tokio::spawn(async move {
            (
                "keyed",
                buy_item(&sale, "limits", "a", "keyed", Some("press-1")).await,
            )
        }));
    }
    let mut greedy = std::collections::HashSet::new();
    let mut keyed = std::collections::HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            ("greedy", Ok(b)) => {
                greedy.insert(b.order.order_id);
            }
            ("greedy", Err(SaleError::LimitReached { held, limit })) => {
                assert_eq!((held, limit), (2, 2));
            }
            ("keyed", Ok(b)) => {
                keyed.insert(b.order.order_id);
            }
            ("other", Ok(b)) => assert!(b.created),
            (who, r) => panic!("{who}: unexpected outcome {r:?}"),
        }
    }
    assert_eq!(greedy.len(), 2, "one user, at most the limit: {greedy:?}");
    assert_eq!(keyed.len(), 1, "one key, one order: {keyed:?}");
    // A retry of the key long after its batch answers the same order.
    let again = buy_item(&s.sale, "limits", "a", "keyed", Some("press-1"))
        .await
        .unwrap();
    assert!(!again.created);
    assert!(keyed.contains(&again.order.order_id));
    let ledgers = s.sale.ledgers().await.unwrap();
    let pending: i64 = ledgers[0].items.iter().map(|i| i.stats.pending).sum();
    assert!(ledgers[0].items.iter().all(|i| i.ledger_ok));
    assert_eq!(
        pending,
        90 + 2 + 1,
        "every other buyer, the limit, the key's one order"
    );
    let (calls, buys) = batches(&s.sale);
    assert!(
        buys > calls as f64,
        "no call carried more than one buy: {calls} calls, {buys} buys"
    );
}

/// `lua/reserve.lua` for one batch of `users`, each buying one unit of an item that starts
/// with `stock`, on Redis itself (as `src/stock/batch.rs` sends it): one reply per buy.
async fn reserve_lua_batch(redis: &RedisServer, stock: u64, users: &[&str]) -> Vec<redis::Value> {
    let script = redis::Script::new(concat!(
        include_str!("../../lua/lib.lua"),
        "\n",
        include_str!("../../lua/reserve.lua")
    ));
    let b = "fg:{lua}:";
    let mut inv = script.prepare_invoke();
    for k in [
        "deadlines",
        "paused",
        "claims",
        "selection",
        "admission",
        "entrants",
        "ranking",
    ] {
        inv.key(format!("{b}{k}"));
    }
    inv.arg(b).arg("lua");
    for (n, user) in users.iter().enumerate() {
        inv.key(format!("{b}item:{SKU}"))
            .key(format!("{b}user:{user}"))
            .key(format!("{b}holders:{SKU}"))
            .key(format!("{b}order:o{n}"));
        inv.arg(SKU)
            .arg(*user)
            .arg(1)
            .arg(1)
            .arg(format!("o{n}"))
            .arg(600_000);
        inv.arg(PRICE)
            .arg("")
            .arg(stock)
            .arg("")
            .arg("")
            .arg("")
            .arg("");
    }
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    inv.invoke_async(&mut con).await.unwrap()
}

#[tokio::test]
async fn reserve_lua_writes_each_batch_as_if_each_buy_wrote_its_own() {
    // The script keeps an item's counters, new holders and deadlines in Lua and writes
    // them once per batch: a buy that finds the item sold out must still see the holders
    // this batch made, and every pre-order must have its counters and its deadline.
    let redis = RedisServer::start();
    let replies = reserve_lua_batch(&redis, 2, &["u1", "u2", "u3", "u4"]).await;
    let strings = |v: &redis::Value| -> Vec<String> {
        redis::from_redis_value::<Vec<redis::Value>>(v)
            .unwrap()
            .iter()
            .map(|x| redis::from_redis_value::<String>(x).unwrap())
            .collect()
    };
    let kinds: Vec<String> = replies.iter().map(|r| strings(r)[0].clone()).collect();
    assert_eq!(kinds, ["reserved", "reserved", "sold_out", "sold_out"]);
    let third = strings(&replies[2]);
    assert_eq!(third[1..4], ["0", "2", "holders"], "{third:?}");
    let mut named = third[4..].to_vec();
    named.sort();
    assert_eq!(named, ["u1", "u2"], "the batch's own holders");
    assert_eq!(
        strings(&replies[3]).len(),
        6,
        "holders again: the caller sent no version"
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let item: Vec<i64> = redis::cmd("HMGET")
        .arg(format!("fg:{{lua}}:item:{SKU}"))
        .arg(&["remaining", "pending", "hv"])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(item, [0, 2, 2]);
    let due: Vec<String> = redis::cmd("ZRANGE")
        .arg("fg:{lua}:deadlines")
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(due, ["o0", "o1"], "each pre-order's deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_sells_out_names_its_own_holders_and_every_order_gets_its_deadline() {
    // reserve.lua writes an item's counters, its holders and the deadlines once per batch:
    // the sold-out answer must still name the holders the same batch just made, and each
    // pre-order must still expire.
    let spec = running("sellout", 20).payment_window("10m");
    let s = setup(spec, OffsetDateTime::now_utc()).await;
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let sale = s.sale.clone();
            tokio::spawn(async move { (n, buy(&sale, "sellout", &format!("s{n}"), None).await) })
        })
        .collect();
    let mut holders = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (n, Ok(b)) => holders.push((format!("s{n}"), b.order.order_id)),
            (_, Err(SaleError::SoldOut)) => {}
            (_, Err(e)) => panic!("unexpected outcome: {e:?}"),
        }
    }
    assert_eq!(holders.len(), 20, "exactly the stock");
    let (calls, buys) = batches(&s.sale);
    assert!(buys > calls as f64, "{calls} calls, {buys} buys");
    // The local sold-out flag now answers; a holder pressing buy again must get the order
    // (200), which it only does when the flag's snapshot names the holder.
    for (user, order_id) in &holders {
        let again = buy(&s.sale, "sellout", user, None)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e:?}"));
        assert_eq!((again.created, &again.order.order_id), (false, order_id));
    }
    s.clock.advance(Duration::from_secs(601));
    s.sale.sweep().await;
    let st = stats(&s.sale).await;
    assert_eq!((st.remaining, st.pending, st.expired), (20, 0, 20));
}
