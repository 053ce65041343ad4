//! Operating a running sale: hot reload (admin API and SIGHUP), stock
//! adjustment, pause/resume shared by every instance. Real Redis, real HTTP.

use std::time::Duration;

use crate::common::*;
use serde_json::Value;

fn admin_auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {ADMIN_TOKEN}"))
}

async fn admin(gw: &Gateway, method: &str, path: &str, body: Option<&str>) -> TestResponse {
    let (k, v) = admin_auth();
    send(
        method,
        &gw.admin_url(path),
        &[(k, &v)],
        body.map(|b| b.as_bytes().to_vec()),
    )
    .await
}

async fn item(gw: &Gateway, campaign: &str, sku: &str) -> Value {
    let all = admin(gw, "GET", "/admin/campaigns", None).await.json();
    let c = all["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == campaign)
        .cloned();
    let c = c.unwrap_or_else(|| panic!("no campaign {campaign} in {all}"));
    c["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sku"] == sku)
        .cloned()
        .expect("item")
}

async fn buy(gw: &Gateway, campaign: &str, sku: &str, user: &str) -> TestResponse {
    let url = gw.url(&format!("/seckill/campaigns/{campaign}/items/{sku}/orders"));
    send("POST", &url, &[("authorization", &bearer(user))], None).await
}

fn ledger_holds(i: &Value) -> bool {
    let n = |k: &str| i[k].as_i64().unwrap();
    n("initial") + n("adjusted") == n("remaining") + n("pending") + n("paid")
        && i["ledger_ok"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_validates_first_never_readds_stock_and_applies_new_settings() {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(CampaignSpec::new("sale").item("a", 5, 1000));
    let gw = Gateway::start(cfg.load()).await;
    assert_eq!(buy(&gw, "sale", "a", "u1").await.status, 201);

    // A broken file: refused with file:line, the running set is untouched.
    cfg.write_campaign_file(
        "broken.toml",
        "id = \"broken\"\nname = \"x\"\nstarts_at = 2026-01-01T00:00:00Z\nends_at = 2036-01-01T00:00:00Z\npayment_window = \"1m\"\nper_user_limit = 1\nbogus = 1\n[[items]]\nsku = \"a\"\nstock = 1\nprice_cents = 1\n",
    );
    let r = admin(&gw, "POST", "/admin/reload", None).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("broken.toml:"), "{detail}");
    assert!(detail.contains("bogus"), "{detail}");
    assert_eq!(
        buy(&gw, "sale", "a", "u2").await.status,
        201,
        "running campaign still sells"
    );
    cfg.remove_campaign_file("broken.toml");

    // Stock raised in the file, price changed, a new campaign added.
    cfg.write_campaign(&CampaignSpec::new("sale").item("a", 50, 2000));
    cfg.write_campaign(&CampaignSpec::new("fresh").item("b", 3, 10));
    let r = admin(&gw, "POST", "/admin/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = item(&gw, "sale", "a").await;
    assert_eq!(a["initial"], 5, "stock is never re-added by a reload");
    assert_eq!(a["remaining"], 3);
    assert!(ledger_holds(&a));
    let o = buy(&gw, "sale", "a", "u3").await;
    assert_eq!(o.status, 201);
    assert_eq!(
        o.json()["amount_cents"],
        2000,
        "new prices apply to new reservations"
    );
    assert_eq!(
        buy(&gw, "fresh", "b", "u1").await.status,
        201,
        "a new campaign starts"
    );
    assert_eq!(item(&gw, "fresh", "b").await["initial"], 3);

    // A restart (new gateway on the same Redis) does not re-add stock either.
    gw.running.shutdown().await;
    let gw = Gateway::start(cfg.load()).await;
    let a = item(&gw, "sale", "a").await;
    assert_eq!(
        (
            a["initial"].as_i64(),
            a["remaining"].as_i64(),
            a["pending"].as_i64()
        ),
        (Some(5), Some(2), Some(3))
    );
    gw.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reports_a_changed_file_stock_and_keeps_the_live_stock() {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(
        CampaignSpec::new("sale")
            .item("a", 10, 1000)
            .item("b", 4, 500),
    );
    let gw = Gateway::start(cfg.load()).await;

    // Nothing changed: nothing to report.
    let r = admin(&gw, "POST", "/admin/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["stock_differs"],
        serde_json::json!([]),
        "{}",
        r.text()
    );

    cfg.write_campaign(
        &CampaignSpec::new("sale")
            .item("a", 20, 1000)
            .item("b", 4, 500),
    );
    let r = admin(&gw, "POST", "/admin/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["reloaded"], 1, "{body}");
    let differs = body["stock_differs"].as_array().expect("stock_differs");
    assert_eq!(differs.len(), 1, "only the changed item: {body}");
    let d = &differs[0];
    assert_eq!(d["campaign"], "sale");
    assert_eq!(d["sku"], "a");
    assert_eq!(d["file_stock"], 20);
    assert_eq!(d["initial"], 10);
    assert_eq!(d["remaining"], 10);
    let hint = d["hint"].as_str().expect("hint");
    assert!(
        hint.contains("never re-added") && hint.contains("/admin/campaigns/sale/items/a/stock"),
        "{hint}"
    );

    let a = item(&gw, "sale", "a").await;
    assert_eq!(
        (a["initial"].as_i64(), a["remaining"].as_i64()),
        (Some(10), Some(10)),
        "the live stock stays as loaded"
    );
    gw.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_adjustment_is_atomic_and_never_below_zero() {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(CampaignSpec::new("sale").item("a", 10, 1000));
    let gw = Gateway::start(cfg.load()).await;
    let path = "/admin/campaigns/sale/items/a/stock";

    for u in 0..4 {
        assert_eq!(buy(&gw, "sale", "a", &format!("u{u}")).await.status, 201);
    }
    let r = admin(&gw, "POST", path, Some(r#"{"delta": 5}"#)).await;
    assert_eq!((r.status, r.json()["remaining"].as_i64()), (200, Some(11)));
    let r = admin(&gw, "POST", path, Some(r#"{"delta": -12}"#)).await;
    assert_eq!(r.status, 409, "remaining never below zero: {}", r.text());
    assert_eq!(
        item(&gw, "sale", "a").await["remaining"],
        11,
        "a refused adjustment changes nothing"
    );

    // Concurrent adjustments and buys: the ledger holds, remaining never negative.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (url, user, auth) = (
            gw.admin_url(path),
            gw.url("/seckill/campaigns/sale/items/a/orders"),
            admin_auth().1,
        );
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                send(
                    "POST",
                    &url,
                    &[("authorization", &auth)],
                    Some(br#"{"delta": -1}"#.to_vec()),
                )
                .await
                .status
            } else {
                send(
                    "POST",
                    &user,
                    &[("authorization", &bearer(&format!("c{i}")))],
                    None,
                )
                .await
                .status
            }
        }));
    }
    for t in tasks {
        assert!([200, 201, 409].contains(&t.await.unwrap()));
    }
    let a = item(&gw, "sale", "a").await;
    assert!(ledger_holds(&a), "{a}");
    assert!(a["remaining"].as_i64().unwrap() >= 0);
    assert_eq!(a["remaining"], 0, "11 units, 40 takers");

    for (body, status) in [
        ("{", 400),
        (r#"{"delta":"1"}"#, 400),
        (r#"{"delta":1,"x":2}"#, 400),
    ] {
        assert_eq!(
            admin(&gw, "POST", path, Some(body)).await.status,
            status,
            "{body}"
        );
    }
    assert_eq!(
        admin(
            &gw,
            "POST",
            "/admin/campaigns/nope/items/a/stock",
            Some(r#"{"delta":1}"#)
        )
        .await
        .status,
        404
    );
    assert_eq!(
        admin(
            &gw,
            "POST",
            "/admin/campaigns/sale/items/zz/stock",
            Some(r#"{"delta":1}"#)
        )
        .await
        .status,
        404
    );
    let anon = send(
        "POST",
        &gw.admin_url(path),
        &[],
        Some(br#"{"delta":1}"#.to_vec()),
    )
    .await;
    assert_eq!(anon.status, 401, "admin endpoints need the token");
    gw.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_is_obeyed_by_every_instance() {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(CampaignSpec::new("sale").item("a", 10, 1000));
    let one = Gateway::start(cfg.load()).await;
    let two = Gateway::start(cfg.load()).await;

    assert_eq!(
        admin(&one, "POST", "/admin/campaigns/sale/pause", None)
            .await
            .status,
        200
    );
    let r = buy(&one, "sale", "a", "u1").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["type"], "urn:flashgate:problem:paused");
    assert!(r.header("retry-after").is_some());
    eventually(
        "the other instance obeys the pause",
        Duration::from_secs(3),
        || async { (buy(&two, "sale", "a", "u2").await.status == 503).then_some(()) },
    )
    .await;
    assert_eq!(
        item(&one, "sale", "a").await["remaining"],
        10,
        "nothing sold while paused"
    );

    assert_eq!(
        admin(&two, "POST", "/admin/campaigns/sale/resume", None)
            .await
            .status,
        200
    );
    assert_eq!(buy(&two, "sale", "a", "u3").await.status, 201);
    eventually(
        "the first instance resumes too",
        Duration::from_secs(3),
        || async { (buy(&one, "sale", "a", "u4").await.status == 201).then_some(()) },
    )
    .await;
    one.running.shutdown().await;
    two.running.shutdown().await;
}

#[test]
fn sighup_reloads_the_real_binary() {
    let redis = RedisServer::start();
    let mut cfg = TestConfig::new(&redis.url(), "http://127.0.0.1:9");
    cfg.campaign(CampaignSpec::new("sale").item("a", 5, 1000));
    let admin_port = free_port();
    cfg.set_str("server", "admin_listen", &format!("127.0.0.1:{admin_port}"));
    let path = cfg.write();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flashgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .envs(cfg.env_vars())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start flashgate");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://127.0.0.1:{admin_port}/admin/campaigns");
    let auth = admin_auth().1;
    let count = || async {
        match try_send("GET", &url, &[("authorization", &auth)], None).await {
            Ok(r) if r.status == 200 => r.json()["campaigns"].as_array().map(|a| a.len()),
            _ => None,
        }
    };
    rt.block_on(eventually(
        "the gateway up",
        Duration::from_secs(10),
        || {
            let n = count();
            async move { (n.await == Some(1)).then_some(()) }
        },
    ));
    cfg.write_campaign(&CampaignSpec::new("second").item("b", 1, 1));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    rt.block_on(eventually(
        "the campaigns reloaded on SIGHUP",
        Duration::from_secs(10),
        || {
            let n = count();
            async move { (n.await == Some(2)).then_some(()) }
        },
    ));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
