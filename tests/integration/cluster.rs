//! `redis.cluster_urls`: the gateway on a real three-primary Redis Cluster.
//! Campaigns are picked so their hash tags live on different nodes, and every path that
//! touches Redis is driven across them: a flash crowd, pay → outbox → store, expiry,
//! cancel, pause, stock adjustment, script loss on every node, and the admin views.
//! `redis.url` points at a closed port throughout: only the cluster can be answering.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::common::*;
use crate::lifecycle::*;
use tokio::sync::Barrier;

const SKU: &str = "phone";
const PRICE: u64 = 99_900;

/// Campaign ids whose `{id}` hash tags are served by `n` different nodes.
fn ids_on_distinct_nodes(cluster: &RedisCluster, n: usize) -> Vec<String> {
    let mut ports = BTreeSet::new();
    let mut ids = Vec::new();
    for i in 0..1000 {
        let id = format!("sale{i}");
        if ports.insert(cluster.port_for_key(&format!("{{{id}}}"))) {
            ids.push(id);
        }
        if ids.len() == n {
            return ids;
        }
    }
    panic!("no {n} campaign ids on distinct nodes among 1000")
}

struct ClusterEnv {
    cluster: RedisCluster,
    store: TestStore,
    cfg: TestConfig,
    ids: Vec<String>,
}

async fn cluster_env(stock: u64, payment_window: &str) -> ClusterEnv {
    let cluster = RedisCluster::start(3);
    let ids = ids_on_distinct_nodes(&cluster, 3);
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", &store.url());
    cfg.set("redis", "cluster_urls", &cluster.urls_toml());
    for id in &ids {
        cfg.campaign(
            CampaignSpec::new(id)
                .item(SKU, stock, PRICE)
                .payment_window(payment_window),
        );
    }
    ClusterEnv {
        cluster,
        store,
        cfg,
        ids,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_crowd_on_a_cluster_sells_exactly_the_stock_of_each_campaign() {
    const BUYERS: usize = 450;
    const STOCK: u64 = 40;
    let e = cluster_env(STOCK, "5m").await;
    let gw = Arc::new(start(&e.cfg).await);

    let barrier = Arc::new(Barrier::new(BUYERS));
    let tasks: Vec<_> = (0..BUYERS)
        .map(|i| {
            let (gw, barrier) = (gw.clone(), barrier.clone());
            let campaign = e.ids[i % e.ids.len()].clone();
            tokio::spawn(async move {
                let user = format!("crowd-{i}");
                barrier.wait().await;
                let res = buy(&*gw, &campaign, SKU, &user).await;
                (campaign, user, res)
            })
        })
        .collect();
    let mut winners: BTreeSet<(String, String)> = BTreeSet::new();
    for t in tasks {
        let (campaign, user, res) = t.await.expect("buyer task");
        match res.status {
            201 => {
                assert_reserved(&res, &campaign, &user);
                assert!(winners.insert((campaign, user)), "one order per user");
            }
            409 => assert_problem(&res, 409, "sold-out"),
            other => panic!("buy answered {other}: {}", res.text()),
        }
    }
    for id in &e.ids {
        let won = winners.iter().filter(|(c, _)| c == id).count();
        assert_eq!(won as u64, STOCK, "campaign {id} sold exactly its stock");
        let s = ledger(&*gw, id, SKU).await;
        assert_eq!(
            (s.remaining, s.pending),
            (0, i64::try_from(STOCK).unwrap()),
            "{id}: {s:?}"
        );
        // The campaign's keys really are on the node its hash tag maps to.
        let port = e.cluster.port_for_key(&format!("{{{id}}}"));
        let key = format!("{PREFIX}:{{{id}}}:item:{SKU}");
        let exists = e.cluster.cli(port, &["EXISTS", &key]);
        assert_eq!(exists.trim(), "1", "{key} on node {port}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_order_lifecycle_runs_on_a_cluster() {
    let e = cluster_env(5, "2s").await;
    let gw = start(&e.cfg).await;
    let (a, b, c) = (&e.ids[0], &e.ids[1], &e.ids[2]);

    // Paid in every campaign: each outbox stream lives on its own node.
    let mut paid = BTreeSet::new();
    for id in &e.ids {
        let order = buy_ok(&gw, id, SKU, "payer").await;
        pay_ok(&gw, &order).await;
        paid.insert(order_id(&order).to_owned());
    }
    // Retried buy → the same order; cancel returns the unit.
    let first = buy_ok(&gw, a, SKU, "canceller").await;
    let again = buy(&gw, a, SKU, "canceller").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["order_id"], first["order_id"]);
    let url = gw.url(&format!("/seckill/orders/{}", order_id(&first)));
    let cancelled = send(
        "DELETE",
        &url,
        &[("authorization", &bearer("canceller"))],
        None,
    )
    .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    // Left unpaid: expires after 2 s and its unit goes back on sale.
    let unpaid = buy_ok(&gw, b, SKU, "late").await;

    let delivered = eventually("paid orders at the store", WAIT, || async {
        let got: BTreeSet<String> = e
            .store
            .orders()
            .iter()
            .map(|o| o.json["order_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        (got == paid).then_some(got)
    })
    .await;
    assert_eq!(delivered.len(), 3);
    eventually("the unpaid order expired", WAIT, || async {
        (order_status(&gw, "late", order_id(&unpaid)).await == "expired").then_some(())
    })
    .await;

    let sa = ledger(&gw, a, SKU).await;
    assert_eq!((sa.remaining, sa.paid, sa.cancelled), (4, 1, 1), "{sa:?}");
    let sb = ledger(&gw, b, SKU).await;
    assert_eq!((sb.remaining, sb.paid, sb.expired), (4, 1, 1), "{sb:?}");
    let sc = ledger(&gw, c, SKU).await;
    assert_eq!((sc.remaining, sc.paid), (4, 1), "{sc:?}");
    eventually("outbox drained", WAIT, || async {
        (outbox_counts(&gw).await == (0, 0)).then_some(())
    })
    .await;
    assert_eq!(
        e.store.orders().len(),
        3,
        "each order reached the store once"
    );

    // Operator switches, each on its own node.
    let pause = admin_post(&gw, &format!("/admin/campaigns/{c}/pause"), "").await;
    assert_eq!(pause.status, 200, "{}", pause.text());
    assert_problem(&buy(&gw, c, SKU, "during-pause").await, 503, "paused");
    let resume = admin_post(&gw, &format!("/admin/campaigns/{c}/resume"), "").await;
    assert_eq!(resume.status, 200, "{}", resume.text());
    let path = format!("/admin/campaigns/{c}/items/{SKU}/stock");
    let adjusted = admin_post(&gw, &path, r#"{"delta": 3}"#).await;
    assert_eq!(adjusted.status, 200, "{}", adjusted.text());
    buy_ok(&gw, c, SKU, "after-resume").await;
    let sc = ledger(&gw, c, SKU).await;
    assert_eq!((sc.adjusted, sc.remaining, sc.pending), (3, 6, 1), "{sc:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_flushed_on_every_node_are_reloaded() {
    let e = cluster_env(10, "5m").await;
    let gw = start(&e.cfg).await;
    for id in &e.ids {
        buy_ok(&gw, id, SKU, "before").await;
    }
    for node in &e.cluster.nodes {
        assert!(e
            .cluster
            .cli(node.port(), &["SCRIPT", "FLUSH"])
            .contains("OK"));
    }
    for id in &e.ids {
        buy_ok(&gw, id, SKU, "after").await;
        let s = ledger(&gw, id, SKU).await;
        assert_eq!((s.remaining, s.pending), (8, 2), "{id}: {s:?}");
    }
    // /readyz loads every script on every node (SCRIPT EXISTS is asked of all of them).
    // Every node has them all after a first /readyz; then one node loses them, so a
    // check asked of one (random) node would usually say all is loaded and miss it.
    let ready = send("GET", &gw.admin_url("/readyz"), &[], None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    e.cluster
        .cli(e.cluster.nodes[2].port(), &["SCRIPT", "FLUSH"]);
    let ready = send("GET", &gw.admin_url("/readyz"), &[], None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    for node in &e.cluster.nodes {
        let info = e.cluster.cli(node.port(), &["INFO", "memory"]);
        let cached: usize = info
            .lines()
            .find_map(|l| l.strip_prefix("number_of_cached_scripts:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no number_of_cached_scripts in {info}"));
        assert!(cached >= 8, "node {} caches {cached} scripts", node.port());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_fails_its_campaigns_closed_and_they_recover() {
    let mut e = cluster_env(10, "5m").await;
    let gw = start(&e.cfg).await;
    for id in &e.ids {
        buy_ok(&gw, id, SKU, "before").await;
    }
    let down = e.ids[0].clone();
    let port = e.cluster.port_for_key(&format!("{{{down}}}"));
    let node = e
        .cluster
        .nodes
        .iter_mut()
        .find(|n| n.port() == port)
        .expect("the node serving the campaign");
    node.stop();

    let asked = std::time::Instant::now();
    let res = buy(&gw, &down, SKU, "during").await;
    assert_problem(&res, 503, "unavailable");
    assert!(
        res.header("retry-after").is_some(),
        "503 without Retry-After"
    );
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(3),
        "503 took {:?}",
        asked.elapsed()
    );

    node.restart();
    eventually("the campaign sells again", WAIT, || async {
        let r = buy(&gw, &down, SKU, "after").await;
        (r.status == 201).then_some(())
    })
    .await;
    // Nothing was taken twice or lost: the failed attempt left no trace.
    for id in &e.ids {
        let s = ledger(&gw, id, SKU).await;
        let want = if *id == down { (8, 2) } else { (9, 1) };
        assert_eq!((s.remaining, s.pending), want, "{id}: {s:?}");
    }
    let ready = send("GET", &gw.admin_url("/readyz"), &[], None).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
}
