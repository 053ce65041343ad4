//! Shutdown leaves nothing running: a gateway started and stopped in-process, again and
//! again, on a Tokio runtime of its own, leaves that runtime with no task alive once
//! `Running::shutdown` has returned — whatever it did meanwhile (a buy, a payment
//! delivered through the outbox, a proxied WebSocket-style tunnel left open) and
//! whichever Redis it spoke to: one server, Sentinel or Cluster.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;
use crate::lifecycle::*;

const C: &str = "tasks";
const SKU: &str = "phone";
const CYCLES: usize = 5;

fn campaign() -> CampaignSpec {
    CampaignSpec::new(C).item(SKU, 100, 1_000)
}

/// Tasks alive on the current runtime (the gateway's own: nothing else runs there).
fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Starts and stops a gateway configured by `cfg` [`CYCLES`] times on a runtime that
/// runs nothing else, and asserts after each stop that no task is left on it. The
/// servers it talks to run on the test's own runtime.
async fn leaves_no_task(cfg: &TestConfig) {
    let configs: Vec<flashgate::Config> = (0..CYCLES).map(|_| cfg.load()).collect();
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the gateway");
        rt.block_on(async {
            assert_eq!(alive(), 0, "a fresh runtime runs no task");
            for (cycle, config) in configs.into_iter().enumerate() {
                let gw = Gateway::start(config).await;
                gw.wait_ready().await;
                let tunnel = work(&gw, cycle).await;
                gw.running.shutdown().await;
                closed_by_the_gateway(tunnel).await;
                eventually(
                    &format!("no task left after stop {cycle} (alive: {})", alive()),
                    Duration::from_secs(10),
                    || async { (alive() == 0).then_some(()) },
                )
                .await;
            }
        });
    })
    .await
    .expect("the gateway's runtime");
}

/// What a gateway does in a cycle: a buy, its payment delivered to the store through
/// the outbox, and a tunnel to the store left open. Returns the tunnel.
async fn work(gw: &Gateway, cycle: usize) -> TcpStream {
    let order = buy_ok(gw, C, SKU, &format!("u{cycle}")).await;
    pay_ok(gw, &order).await;
    eventually("the payment delivered", WAIT, || async {
        (outbox_counts(gw).await == (0, 0)).then_some(())
    })
    .await;
    let mut s = TcpStream::connect(gw.public_addr).await.expect("connect");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.expect("the response head"));
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).await.expect("the echo");
    assert_eq!(&echo, b"ping");
    s
}

/// The gateway closed the tunnel on shutdown: its end reads EOF (or a reset).
async fn closed_by_the_gateway(mut tunnel: TcpStream) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), tunnel.read(&mut byte))
        .await
        .expect("the tunnel closed by shutdown");
    assert!(matches!(read, Ok(0) | Err(_)), "the tunnel still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_one_redis_leaves_no_task_after_shutdown() {
    let s = Setup::new(campaign()).await;
    leaves_no_task(&s.cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "following the Sentinel master (stock) does not stop at shutdown yet: Store::shutdown is on the house-redis branch, not merged"]
async fn a_gateway_on_sentinel_leaves_no_task_after_shutdown() {
    let mut s = Setup::new(campaign()).await;
    let trio = SentinelTrio::start("tasks", &s.redis).await;
    trio.configure(&mut s.cfg);
    leaves_no_task(&s.cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_a_cluster_leaves_no_task_after_shutdown() {
    let cluster = RedisCluster::start(3);
    let store = TestStore::start().await;
    // `redis.url` at a closed port: only the cluster can be answering.
    let mut cfg = TestConfig::new("redis://127.0.0.1:1/0", &store.url());
    cfg.set("redis", "cluster_urls", &cluster.urls_toml())
        .campaign(campaign());
    leaves_no_task(&cfg).await;
}
