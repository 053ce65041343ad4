//! An `https://` store: the proxy and the `http` sink speak TLS to it, verified against
//! `upstream.ca_file` (a CA this test makes) on top of the system's roots.

use std::time::Duration;

use crate::common::*;

struct Env {
    gw: Gateway,
    store: TestStore,
    _cfg: TestConfig,
    _redis: RedisServer,
}

/// A gateway in front of a TLS store with a certificate for `names`; `trust` writes the
/// test CA as `upstream.ca_file`.
async fn env(names: &[&str], trust: bool) -> Env {
    let ca = TestCa::new(names);
    let redis = RedisServer::start();
    let store = TestStore::start_tls(ca.server.clone()).await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(CampaignSpec::new("sale").item("a", 10, 100));
    if trust {
        std::fs::write(cfg.dir().join("store-ca.pem"), &ca.ca_pem).unwrap();
        cfg.set_str("upstream", "ca_file", "store-ca.pem");
    }
    let gw = Gateway::start(cfg.load()).await;
    gw.wait_ready().await;
    Env {
        gw,
        store,
        _cfg: cfg,
        _redis: redis,
    }
}

#[tokio::test]
async fn proxy_and_sink_speak_tls_to_a_store_the_ca_file_vouches_for() {
    let e = env(&["127.0.0.1", "localhost"], true).await;
    assert!(e.store.url().starts_with("https://"));
    let res = send(
        "POST",
        &e.gw.url("/cart?x=1"),
        &[("x-custom", "1")],
        Some(b"hello".to_vec()),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let echo = res.json();
    assert_eq!(echo["path"], "/cart?x=1");
    assert_eq!(echo["body"], "hello");

    // A paid order reaches the https sink.
    let auth = bearer("tls-buyer");
    let res = send(
        "POST",
        &e.gw.buy_url("sale", "a"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let order = res.json();
    let body = serde_json::json!({
        "order_id": order["order_id"], "payment_id": "pay_tls",
        "amount_cents": 100, "status": "succeeded"
    })
    .to_string();
    let sig = sign_callback(PAYMENT_SECRET, body.as_bytes(), unix_now());
    let res = send(
        "POST",
        &e.gw.url("/payments/callback"),
        &[("flashgate-signature", &sig)],
        Some(body.into_bytes()),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let orders = e.store.wait_for_orders(1, Duration::from_secs(10)).await;
    assert_eq!(orders[0].json["order_id"], order["order_id"]);
}

#[tokio::test]
async fn a_store_nobody_vouches_for_is_a_502() {
    // The system's roots do not know the test CA.
    let e = env(&["127.0.0.1"], false).await;
    let res = send("GET", &e.gw.url("/p"), &[], None).await;
    assert_eq!(res.status, 502, "{}", res.text());
    assert_eq!(e.store.echo_requests(), 0);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_502() {
    let e = env(&["shop.example"], true).await;
    let res = send("GET", &e.gw.url("/p"), &[], None).await;
    assert_eq!(res.status, 502, "{}", res.text());
    assert_eq!(e.store.echo_requests(), 0);
}

#[test]
fn a_ca_file_that_is_not_pem_is_a_config_error() {
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", "https://127.0.0.1:1");
    std::fs::write(cfg.dir().join("ca.pem"), "not a certificate").unwrap();
    cfg.set_str("upstream", "ca_file", "ca.pem");
    let err = cfg.try_load().unwrap_err().to_string();
    assert!(err.contains("upstream.ca_file"), "{err}");
    cfg.set_str("upstream", "ca_file", "missing.pem");
    let err = cfg.try_load().unwrap_err().to_string();
    assert!(err.contains("upstream.ca_file"), "{err}");
}
