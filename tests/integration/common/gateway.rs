//! `Gateway`: a flashgate started in-process through the library (`flashgate::start`),
//! on the ports its config names (127.0.0.1:0 in [`super::TestConfig`]).

use std::net::SocketAddr;
use std::time::Duration;

use super::{eventually, send, ADMIN_TOKEN};

pub struct Gateway {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub running: flashgate::Running,
}

impl Gateway {
    /// Starts the gateway on the current Tokio runtime; panics if it does not start.
    pub async fn start(config: flashgate::Config) -> Gateway {
        Gateway::start_with_clock(config, flashgate::clock::Clock::system()).await
    }

    /// [`Gateway::start`] on `clock`: a fake one makes time the test's to move.
    pub async fn start_with_clock(
        config: flashgate::Config,
        clock: flashgate::clock::Clock,
    ) -> Gateway {
        let running = flashgate::start_with_clock(config, clock)
            .await
            .unwrap_or_else(|e| panic!("flashgate did not start: {e}"));
        Gateway {
            public_addr: running.public_addr,
            admin_addr: running.admin_addr,
            running,
        }
    }

    /// `http://<public addr><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public_addr)
    }

    /// `http://<admin addr><path>`
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// `http://<public addr>/seckill/campaigns/<campaign>/items/<sku>/orders`
    pub fn buy_url(&self, campaign: &str, sku: &str) -> String {
        self.url(&format!("/seckill/campaigns/{campaign}/items/{sku}/orders"))
    }

    /// Waits until `/readyz` answers 200 (Redis connected, scripts loaded) and every
    /// campaign item's stock is in Redis (the start-up bootstrap ran); panics after 10 s.
    ///
    /// The bootstrap re-reads the campaign files: keep the `TestConfig` (its temporary
    /// directory) alive for as long as the gateway runs.
    pub async fn wait_ready(&self) {
        let url = self.admin_url("/readyz");
        eventually("/readyz 200", Duration::from_secs(10), || async {
            (send("GET", &url, &[], None).await.status == 200).then_some(())
        })
        .await;
        let sale = &self.running.sale;
        eventually(
            "every campaign item's stock loaded into Redis",
            Duration::from_secs(10),
            || async {
                let mut con = sale.store().conn().get().ok()?;
                for c in sale.registry().snapshot().values() {
                    for item in &c.items {
                        let exists: i64 = redis::cmd("EXISTS")
                            .arg(&item.key)
                            .query_async(&mut con)
                            .await
                            .ok()?;
                        if exists == 0 {
                            return None;
                        }
                    }
                }
                Some(())
            },
        )
        .await
    }

    /// One item of `GET /admin/campaigns` (`initial`, `remaining`, `pending`, `paid`, ...,
    /// `ledger_ok`); panics if the campaign or item is not listed.
    pub async fn item_stats(&self, campaign: &str, sku: &str) -> serde_json::Value {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let res = send(
            "GET",
            &self.admin_url("/admin/campaigns"),
            &[("authorization", &auth)],
            None,
        )
        .await;
        assert_eq!(res.status, 200, "GET /admin/campaigns: {}", res.text());
        let all = res.json();
        let c = all["campaigns"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["id"] == campaign))
            .unwrap_or_else(|| panic!("campaign {campaign:?} not in /admin/campaigns: {all}"));
        c["items"]
            .as_array()
            .and_then(|is| is.iter().find(|i| i["sku"] == sku))
            .cloned()
            .unwrap_or_else(|| panic!("item {sku:?} not in campaign {campaign:?}: {c}"))
    }
}
