//! The live status page (`GET /admin/`) in a real browser: headless Chromium loads it
//! during a small crowd; the numbers it renders must match `/admin/campaigns`. A
//! screenshot is kept in `target/test-artifacts/status_page.png`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use base64::Engine;

fn chromium() -> PathBuf {
    // The real binary first: Debian's /usr/bin/chromium shell wrapper exits without a
    // word under cargo's test environment.
    for c in [
        "/usr/lib/chromium/chromium",
        "/usr/bin/chromium",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(c).exists() {
            return c.into();
        }
    }
    panic!(
        "chromium not found: install it (apt-get install -y chromium); ./scripts/test.sh does this"
    );
}

/// Runs headless Chromium on `url` with extra `args`; returns stdout.
fn headless(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    // A clean environment: cargo's test environment (LD_LIBRARY_PATH and friends) is not
    // the browser's business.
    let out = Command::new(chromium())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", profile.path())
        .env("LANG", "C.UTF-8")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {stderr}");
    format!(
        "{}\n<!-- chromium stderr:\n{stderr}\n-->",
        String::from_utf8_lossy(&out.stdout)
    )
}

/// The text of the page's cell for (field, campaign, sku).
fn cell(dom: &str, field: &str, campaign: &str, sku: &str) -> i64 {
    let needle = format!(r#"data-field="{field}" data-campaign="{campaign}" data-sku="{sku}">"#);
    let at = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("no {needle} in the rendered page:\n{dom}"))
        + needle.len();
    let text = &dom[at..at + dom[at..].find('<').expect("cell end")];
    text.parse()
        .unwrap_or_else(|_| panic!("cell {field} is {text:?}"))
}

async fn buy(gw: &Gateway, user: &str, sku: &str) -> TestResponse {
    let url = gw.url(&format!("/seckill/campaigns/live/items/{sku}/orders"));
    send("POST", &url, &[("authorization", &bearer(user))], None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_the_ledger_in_a_real_browser() {
    let redis = RedisServer::start();
    let store = TestStore::start().await;
    let mut cfg = TestConfig::new(&redis.url(), &store.url());
    cfg.campaign(
        CampaignSpec::new("live")
            .item("phone", 60, 99_900)
            .item("case", 10, 1_500),
    );
    let gw = Gateway::start(cfg.load()).await;
    // What an operator types: Basic credentials (the token as password) in the URL.
    let page = format!("http://ops:{ADMIN_TOKEN}@{}/admin/", gw.admin_addr);

    // Without credentials the page asks for them (Basic, so a browser can log in).
    let anon = send("GET", &gw.admin_url("/admin/"), &[], None).await;
    assert_eq!(anon.status, 401);
    assert!(anon
        .header("www-authenticate")
        .unwrap_or("")
        .starts_with("Basic"));
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ops:{ADMIN_TOKEN}"))
    );
    let html = send(
        "GET",
        &gw.admin_url("/admin/"),
        &[("authorization", &basic)],
        None,
    )
    .await;
    assert_eq!(html.status, 200);
    assert!(html.text().contains("flashgate — live sale"));
    let text = html.text();
    for external in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "src=\"//",
        "href=\"//",
        "@import",
    ] {
        assert!(
            !text.contains(external),
            "the page must not load external assets ({external})"
        );
    }

    // A small crowd, with the page open (screenshot) while it runs.
    let crowd = {
        let gw_url = gw.url("");
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for i in 0..60 {
                let url = format!(
                    "{gw_url}/seckill/campaigns/live/items/{}/orders",
                    if i % 4 == 0 { "case" } else { "phone" }
                );
                tasks.push(tokio::spawn(async move {
                    send(
                        "POST",
                        &url,
                        &[("authorization", &bearer(&format!("crowd-{i}")))],
                        None,
                    )
                    .await
                    .status
                }));
            }
            let mut codes = Vec::new();
            for t in tasks {
                codes.push(t.await.unwrap());
            }
            codes
        })
    };
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status_page.png");
    let page2 = page.clone();
    let shot2 = shot.clone();
    let screenshot = tokio::task::spawn_blocking(move || {
        headless(
            &page2,
            &[
                "--window-size=1280,1000",
                &format!("--screenshot={}", shot2.display()),
            ],
        )
    });
    let codes = crowd.await.unwrap();
    assert!(codes.iter().all(|c| *c == 201 || *c == 409), "{codes:?}");
    let log = screenshot.await.unwrap();
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot at {} ({size} bytes); chromium said:\n{log}",
        shot.display()
    );

    // Make the numbers non-trivial: a cancellation.
    let o = buy(&gw, "late-1", "phone").await;
    assert_eq!(o.status, 201);
    {
        let id = o.json()["order_id"].as_str().unwrap().to_string();
        let r = send(
            "DELETE",
            &gw.url(&format!("/seckill/orders/{id}")),
            &[("authorization", &bearer("late-1"))],
            None,
        )
        .await;
        assert_eq!(r.status, 200);
    }

    // The page, rendered after the crowd, must agree with the admin API.
    let dom = tokio::task::spawn_blocking(move || headless(&page, &["--dump-dom"]))
        .await
        .unwrap();
    assert!(
        dom.contains(r#"data-ready="1""#),
        "the page never rendered data:\n{dom}"
    );
    let admin = send(
        "GET",
        &gw.admin_url("/admin/campaigns"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        None,
    )
    .await
    .json();
    let items = admin["campaigns"][0]["items"].as_array().unwrap();
    for it in items {
        let sku = it["sku"].as_str().unwrap();
        for field in [
            "initial",
            "remaining",
            "pending",
            "paid",
            "expired",
            "cancelled",
        ] {
            assert_eq!(
                cell(&dom, field, "live", sku),
                it[field].as_i64().unwrap(),
                "{sku}.{field} on the page"
            );
        }
        assert!(it["ledger_ok"].as_bool().unwrap());
    }
    let phone = items.iter().find(|i| i["sku"] == "phone").unwrap();
    assert_eq!(
        phone["cancelled"].as_i64(),
        Some(1),
        "the late buyer's cancellation"
    );
    assert_eq!(
        phone["pending"].as_i64().unwrap() + phone["remaining"].as_i64().unwrap(),
        60
    );
    assert!(
        dom.contains(r#"data-route="buy" data-outcome="ok""#),
        "request outcomes missing"
    );
    gw.running.shutdown().await;
    drop(store);
}
