//! Tests of the test harness itself (`common`): if these fail, every other
//! integration test's failure is suspect.

use std::time::Duration;

use crate::common::*;
use time::OffsetDateTime;

fn redis_conn(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .expect("redis url")
        .get_connection()
        .expect("connect to test redis")
}

fn get(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(con).expect("GET")
}

fn set(con: &mut redis::Connection, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(con)
        .expect("SET")
}

// === Redis ===

#[test]
fn redis_starts_on_its_own_port() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    assert_eq!(a.url(), format!("redis://127.0.0.1:{}/0", a.port()));
    let mut con = redis_conn(&a);
    set(&mut con, "k", "v");
    assert_eq!(get(&mut con, "k").as_deref(), Some("v"));
    assert_eq!(get(&mut redis_conn(&b), "k"), None);
}

#[test]
fn redis_stop_refuses_connections_and_restart_recovers_without_data() {
    let mut server = RedisServer::start();
    let port = server.port();
    set(&mut redis_conn(&server), "k", "v");

    server.stop();
    assert!(!server.is_running());
    let client = redis::Client::open(server.url()).unwrap();
    assert!(
        client.get_connection().is_err(),
        "stopped redis still answers"
    );

    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port, "restart must keep the port");
    // No AOF and `save ""`: a restart starts empty.
    assert_eq!(get(&mut redis_conn(&server), "k"), None);
}

#[test]
fn redis_with_aof_keeps_data_across_stop_and_crash() {
    let mut server = RedisServer::start_with_aof();
    set(&mut redis_conn(&server), "graceful", "1");
    server.stop();
    server.restart();
    assert_eq!(
        get(&mut redis_conn(&server), "graceful").as_deref(),
        Some("1")
    );

    // appendfsync always: even SIGKILL loses no acknowledged write.
    set(&mut redis_conn(&server), "crash", "2");
    server.kill();
    server.restart();
    let mut con = redis_conn(&server);
    assert_eq!(get(&mut con, "graceful").as_deref(), Some("1"));
    assert_eq!(get(&mut con, "crash").as_deref(), Some("2"));
}

#[tokio::test]
async fn redis_works_with_the_async_client() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
}

// === PostgreSQL ===

#[tokio::test]
async fn postgres_answers_select_1() {
    let pg = Postgres::start();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .expect("connect to test postgres");
    tokio::spawn(connection);
    let row = client.query_one("SELECT 1::int4", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}

// === TestStore ===

#[tokio::test]
async fn store_records_order_deliveries() {
    let store = TestStore::start().await;
    let url = format!("{}/flashgate/orders", store.url());
    let body = br#"{"order_id":"01J","status":"paid"}"#.to_vec();
    let headers = [
        ("idempotency-key", "01J"),
        ("content-type", "application/json"),
    ];

    let res = send("POST", &url, &headers, Some(body.clone())).await;
    assert_eq!(res.status, 200);
    let orders = store.wait_for_orders(1, Duration::from_secs(5)).await;
    assert_eq!(orders[0].json["order_id"], "01J");
    assert_eq!(orders[0].header("idempotency-key"), Some("01J"));
    assert_eq!(orders[0].raw, body);

    store.set_failing(true);
    let res = send("POST", &url, &headers, Some(body.clone())).await;
    assert_eq!(res.status, 503);
    assert_eq!(store.orders().len(), 1, "a failed delivery is not recorded");
    assert_eq!(store.attempts(), 2);

    store.set_failing(false);
    assert_eq!(send("POST", &url, &headers, Some(body)).await.status, 200);
    assert_eq!(
        store.orders().len(),
        2,
        "duplicates are recorded as they come"
    );
}

#[tokio::test]
async fn store_echoes_other_requests() {
    let store = TestStore::start().await;
    let url = format!("{}/products/42?color=red&size=m", store.url());
    let headers = [
        ("x-custom", "a"),
        ("x-custom", "b"),
        ("x-test-status", "418"),
    ];
    let res = send("PUT", &url, &headers, Some(b"hello".to_vec())).await;
    assert_eq!(res.status, 418);
    assert_eq!(res.header("content-type"), Some("application/json"));
    let echo = res.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/products/42?color=red&size=m");
    assert_eq!(echo["headers"]["x-custom"], "a, b");
    assert_eq!(echo["body"], "hello");
    assert!(store.orders().is_empty());
}

#[tokio::test]
async fn try_send_reports_a_closed_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    assert!(try_send("GET", &url, &[], None).await.is_err());
}

// === TestConfig ===

#[test]
fn test_config_loads_campaigns() {
    let starts = OffsetDateTime::now_utc() + Duration::from_secs(90);
    let ends = starts + Duration::from_secs(600);
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", "http://127.0.0.1:2/");
    cfg.per_user(2, "1s", 3)
        .trusted_proxies(&["127.0.0.1/32", "10.0.0.0/8"])
        .campaign(
            CampaignSpec::new("phone")
                .window(starts, ends)
                .payment_window("2s")
                .per_user_limit(2)
                .item("black", 10, 99900)
                .item("white", 0, 89900),
        )
        .campaign(
            CampaignSpec::new("past")
                .ended_ago(Duration::from_secs(60))
                .item("x", 1, 1)
                .per_user(1, "1s", 1),
        );
    let config = cfg.load();

    assert_eq!(config.server.listen.port(), 0);
    assert_eq!(config.server.admin_listen.port(), 0);
    assert_eq!(config.server.trusted_proxies.len(), 2);
    assert_eq!(config.redis.url, "redis://127.0.0.1:1/0");
    assert_eq!(config.upstream.url, "http://127.0.0.1:2");
    assert_eq!(
        config.orders.http_url.as_deref(),
        Some("http://127.0.0.1:2/flashgate/orders")
    );
    assert_eq!(config.payment.tolerance.0, Duration::from_secs(300));
    assert_eq!(config.limits.per_user.unwrap().burst, 3);
    assert_eq!(config.limits.per_ip.unwrap().rate, 100_000);
    assert_eq!(config.secrets.jwt_secret.as_deref(), Some(JWT_SECRET));
    assert_eq!(
        config.secrets.payment_secret.as_deref(),
        Some(PAYMENT_SECRET)
    );
    assert_eq!(config.secrets.admin_token.as_deref(), Some(ADMIN_TOKEN));
    assert_eq!(config.secrets.sink_secret.as_deref(), Some(SINK_SECRET));

    let ids: Vec<&str> = config.campaigns.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["past", "phone"]);
    let phone = &config.campaigns[1];
    assert_eq!(phone.starts_at, starts);
    assert_eq!(phone.ends_at, ends);
    assert_eq!(phone.payment_window, Duration::from_secs(2));
    assert_eq!(phone.per_user_limit, 2);
    let items: Vec<_> = phone
        .items
        .iter()
        .map(|i| (i.sku.as_str(), i.stock, i.price_cents))
        .collect();
    assert_eq!(items, [("black", 10, 99900), ("white", 0, 89900)]);
    let past = &config.campaigns[0];
    assert!(past.ends_at < OffsetDateTime::now_utc());
    assert_eq!(past.limits.per_user.unwrap().rate, 1);
}

#[test]
fn test_config_overrides_and_errors() {
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", "http://127.0.0.1:2");
    cfg.header_identity("X-User")
        .without_admin_token()
        .set("server", "max_body_bytes", "1024");
    let config = cfg.load();
    assert_eq!(config.identity.header, "X-User");
    assert_eq!(config.admin.token_env, None);
    assert_eq!(config.server.max_body_bytes, 1024);

    cfg.write_campaign_file("broken.toml", "id = \"broken\"\nbogus = 1\n");
    let err = cfg.try_load().unwrap_err();
    assert!(err.to_string().contains("broken.toml:"), "{err}");
}

#[test]
fn postgres_sink_config_uses_injected_url() {
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", "http://127.0.0.1:2");
    cfg.postgres_sink("postgres://postgres@127.0.0.1:5/postgres");
    let config = cfg.load();
    assert_eq!(config.orders.sink, flashgate::config::SinkKind::Postgres);
    assert_eq!(
        config.secrets.postgres_url.as_deref(),
        Some("postgres://postgres@127.0.0.1:5/postgres")
    );
}

// === signing ===

#[test]
fn jwt_verifies_with_the_test_secret() {
    let token = jwt("u123");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .expect("valid token");
    assert_eq!(data.claims["sub"], "u123");
    assert!(data.claims["exp"].as_i64().unwrap() > unix_now() + 3000);
    assert_eq!(bearer("u123"), format!("Bearer {token}"));
}

#[test]
fn sign_callback_matches_openssl() {
    // printf '%s' '1700000000.{"order_id":"01J","amount_cents":99900}' \
    //   | openssl dgst -sha256 -hmac whsec_test
    let body = br#"{"order_id":"01J","amount_cents":99900}"#;
    assert_eq!(
        sign_callback("whsec_test", body, 1_700_000_000),
        "t=1700000000,v1=7451c413740dd4a69d42c9ab6be1446ad7554d749fa45774c440265ad63ad73b"
    );
    let sig = sign_callback(SINK_SECRET, body, unix_now());
    assert!(verify_signature(SINK_SECRET, &sig, body));
    assert!(!verify_signature(SINK_SECRET, &sig, b"{}"));
    assert!(!verify_signature("other", &sig, body));
}
