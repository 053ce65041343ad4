//! The sale without HTTP: `flashgate::core::Sale` on a real Redis, driven by a fake clock
//! (no wall-clock sleeps). Covers buy, cancel, confirm and expiry, and their invariants
//! under concurrency: no oversell, the per-user limit, a payment decided exactly once.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use flashgate::clock::Clock;
use flashgate::core::{BadInput, Bought, BuyRequest, Sale, SaleError};
use flashgate::stock::OrderStatus;
use time::OffsetDateTime;

use common::{sign_callback, CampaignSpec, RedisServer, TestConfig, TestStore, PAYMENT_SECRET};

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
