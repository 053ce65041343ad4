//! TLS to the gateway's own backends, against real servers with a CA this test makes:
//! a `redis-server` listening on `--tls-port` only (`rediss://` + `redis.ca_file`), a
//! three-primary Redis Cluster speaking TLS only (`rediss://` seeds), and a
//! PostgreSQL with `ssl = on` that refuses TCP clients without TLS (`sslmode` in the
//! URL + `orders.postgres_ca_file`). A CA that does not vouch for the server fails
//! closed: no Redis means 503 and not ready, no PostgreSQL means the entry stays in the
//! outbox.

use std::time::Duration;

use crate::common::*;
use crate::lifecycle::*;
use tokio_postgres::NoTls;

const C: &str = "tls";
const SKU: &str = "a";

/// A certificate for the loopback address the servers listen on.
fn loopback_ca() -> TestCa {
    TestCa::new(&["127.0.0.1"])
}

/// A gateway config for `redis` (its `url()`), one unit of `C/SKU` on sale, with `ca`'s
/// certificate written as `redis.ca_file`.
fn redis_config(redis: &RedisServer, store: &TestStore, ca: &TestCa) -> TestConfig {
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(CampaignSpec::new(C).item(SKU, 1, 100));
    std::fs::write(cfg.dir().join("redis-ca.pem"), &ca.ca_pem).unwrap();
    cfg.set_str("redis", "ca_file", "redis-ca.pem");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_runs_on_a_rediss_redis_the_ca_file_vouches_for() {
    let ca = loopback_ca();
    let redis = RedisServer::start_tls(&ca);
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let store = TestStore::start().await;
    let cfg = redis_config(&redis, &store, &ca);
    // The real binary: it must install the crypto provider redis-rs' TLS relies on.
    let gw = GatewayProcess::spawn(&cfg).await;

    // The hot path (scripts on the shared connection)...
    let order = buy_ok(&gw, C, SKU, "alice").await;
    let res = buy(&gw, C, SKU, "bob").await;
    assert_problem(&res, 409, "sold-out");
    // ...and the background work on dedicated connections (the outbox consumer).
    pay_ok(&gw, &order).await;
    let orders = store.wait_for_orders(1, Duration::from_secs(10)).await;
    assert_eq!(orders[0].json["order_id"], order["order_id"]);
    assert_eq!(order_status(&gw, "alice", order_id(&order)).await, "paid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rediss_redis_another_ca_vouches_for_fails_closed() {
    let redis = RedisServer::start_tls(&loopback_ca());
    let store = TestStore::start().await;
    let cfg = redis_config(&redis, &store, &loopback_ca());
    let gw = Gateway::start(cfg.load()).await;
    // Time for several connection attempts (each fails the handshake).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ready = send("GET", &gw.admin_url("/readyz"), &[], None).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    let res = buy(&gw, C, SKU, "alice").await;
    assert_eq!(res.status, 503, "{}", res.text());
    // The gateway is alive and still answering.
    let health = send("GET", &gw.admin_url("/healthz"), &[], None).await;
    assert_eq!(health.status, 200, "{}", health.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_runs_on_a_tls_redis_cluster() {
    let ca = loopback_ca();
    let cluster = RedisCluster::start_tls(3, &ca);
    assert!(
        cluster.urls()[0].starts_with("rediss://"),
        "{:?}",
        cluster.urls()
    );
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", &store.url());
    cfg.set("redis", "cluster_urls", &cluster.urls_toml());
    cfg.campaign(CampaignSpec::new(C).item(SKU, 1, 100));
    std::fs::write(cfg.dir().join("redis-ca.pem"), &ca.ca_pem).unwrap();
    cfg.set_str("redis", "ca_file", "redis-ca.pem");
    let gw = Gateway::start(cfg.load()).await;
    gw.wait_ready().await;
    let order = buy_ok(&gw, C, SKU, "alice").await;
    assert_problem(&buy(&gw, C, SKU, "bob").await, 409, "sold-out");
    pay_ok(&gw, &order).await;
    let orders = store.wait_for_orders(1, Duration::from_secs(10)).await;
    assert_eq!(orders[0].json["order_id"], order["order_id"]);
}

#[test]
fn redis_ca_file_needs_rediss_urls_and_a_pem_file() {
    let ca = loopback_ca();
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", "http://127.0.0.1:1");
    std::fs::write(cfg.dir().join("redis-ca.pem"), &ca.ca_pem).unwrap();
    cfg.set_str("redis", "ca_file", "redis-ca.pem");
    let err = cfg.try_load().unwrap_err().to_string();
    assert!(err.contains("redis.ca_file"), "{err}");
    assert!(err.contains("rediss://"), "{err}");
    assert!(err.contains("gateway.toml:"), "no file:line:column: {err}");

    cfg.set_str("redis", "url", "rediss://127.0.0.1:1/0");
    cfg.try_load()
        .expect("a rediss:// URL with a CA file loads");

    std::fs::write(cfg.dir().join("bad.pem"), "not a certificate").unwrap();
    cfg.set_str("redis", "ca_file", "bad.pem");
    let err = cfg.try_load().unwrap_err().to_string();
    assert!(err.contains("redis.ca_file"), "{err}");
    cfg.set_str("redis", "ca_file", "missing.pem");
    let err = cfg.try_load().unwrap_err().to_string();
    assert!(err.contains("redis.ca_file"), "{err}");
}

#[test]
fn postgres_ca_file_needs_the_postgres_sink_and_a_pem_file() {
    let ca = loopback_ca();
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", "http://127.0.0.1:1");
    std::fs::write(cfg.dir().join("pg-ca.pem"), &ca.ca_pem).unwrap();
    cfg.set_str("orders", "postgres_ca_file", "pg-ca.pem");
    let err = cfg.try_load().unwrap_err().to_string();
    assert!(err.contains("orders.postgres_ca_file"), "{err}");
    assert!(err.contains("gateway.toml:"), "no file:line:column: {err}");

    cfg.postgres_sink("postgres://postgres@127.0.0.1:1/postgres?sslmode=require");
    cfg.try_load()
        .expect("the postgres sink with a CA file loads");

    cfg.set_str("orders", "postgres_ca_file", "missing.pem");
    let err = cfg.try_load().unwrap_err().to_string();
    assert!(err.contains("orders.postgres_ca_file"), "{err}");
}

// === PostgreSQL ===

async fn socket_client(pg: &Postgres) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg.socket_url(), NoTls)
        .await
        .expect("connect to test postgres through its socket");
    tokio::spawn(connection);
    client
}

/// The ids in `flashgate_orders`; empty while the table does not exist.
async fn order_ids(db: &tokio_postgres::Client) -> Vec<String> {
    db.query("SELECT order_id FROM flashgate_orders", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

/// A gateway whose sink is the TLS PostgreSQL at `url`, trusting `ca` for it.
async fn pg_gateway(url: &str, ca: &TestCa) -> (Setup, Gateway) {
    let mut s = Setup::new(CampaignSpec::new(C).item(SKU, 5, 100)).await;
    std::fs::write(s.cfg.dir().join("pg-ca.pem"), &ca.ca_pem).unwrap();
    s.cfg
        .postgres_sink(url)
        .set_str("orders", "postgres_ca_file", "pg-ca.pem")
        .set("orders", "max_attempts", "1000")
        .set_str("orders", "retry_max", "300ms");
    let gw = start(&s.cfg).await;
    (s, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_server_refuses_clients_without_tls() {
    let pg = Postgres::start_tls(&loopback_ca());
    let err = tokio_postgres::connect(&pg.url_with_sslmode("disable"), NoTls)
        .await
        .err()
        .expect("a TCP client without TLS is refused");
    let msg = err.as_db_error().map(|e| e.message().to_owned());
    let msg = msg.unwrap_or_else(|| panic!("refused by the server, not {err:?}"));
    assert!(msg.contains("no encryption"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_orders_reach_postgres_over_verified_tls() {
    let ca = loopback_ca();
    let pg = Postgres::start_tls(&ca);
    let db = socket_client(&pg).await;
    for (i, mode) in ["require", "prefer"].into_iter().enumerate() {
        let (_s, gw) = pg_gateway(&pg.url_with_sslmode(mode), &ca).await;
        let order = buy_ok(&gw, C, SKU, &format!("buyer-{mode}")).await;
        pay_ok(&gw, &order).await;
        let id = order_id(&order).to_owned();
        eventually(&format!("{id} in flashgate_orders"), WAIT, || async {
            order_ids(&db).await.contains(&id).then_some(())
        })
        .await;
        assert_eq!(order_ids(&db).await.len(), i + 1);
        // The sink's connection is open, over TLS.
        let tls: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE ssl AND client_addr IS NOT NULL",
                &[],
            )
            .await
            .expect("pg_stat_ssl")
            .get(0);
        assert!(tls >= 1, "no TLS client connection ({mode})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_another_ca_vouches_for_never_gets_an_order() {
    let pg = Postgres::start_tls(&loopback_ca());
    let db = socket_client(&pg).await;
    let (_s, gw) = pg_gateway(&pg.url_with_sslmode("require"), &loopback_ca()).await;
    let order = buy_ok(&gw, C, SKU, "alice").await;
    pay_ok(&gw, &order).await;
    // Several delivery attempts fail the handshake; the entry stays in the outbox.
    eventually("failed postgres deliveries", WAIT, || async {
        let m = metrics(&gw).await;
        let labels = [("sink", "postgres"), ("result", "retry")];
        (metric(&m, "flashgate_sink_deliveries_total", &labels) >= 2.0).then_some(())
    })
    .await;
    assert_eq!(outbox_counts(&gw).await, (1, 0));
    assert!(order_ids(&db).await.is_empty());
}
