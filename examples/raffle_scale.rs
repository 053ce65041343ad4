//! `raffle_scale` — a raffle at scale on a real Redis, through the gateway's own scripts:
//! N entrants enter (`lua/enter.lua`), then the draw and the selection of `units` run
//! (`lua/draw.lua`, in steps of 2,000), timed, with Redis' memory before and after.
//!
//! Usage: `raffle_scale <redis url> <entrants> <units>...` — one draw per `units` value, each
//! on its own copy of the entrants (e.g. `redis://127.0.0.1:6399/0 1000000 500 1000000`).
//! It writes keys under `scale:`; use a throwaway Redis.

use std::time::{Duration, Instant};

use flashgate::config::RedisConfig;
use flashgate::draw::Seed;
use flashgate::stock::{RedisMetrics, Store};
use futures_util::stream::{self, StreamExt};

async fn used_memory(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(con)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: raffle_scale <redis url> <entrants> <units>...");
        std::process::exit(2);
    }
    let (url, entrants): (&str, u64) = (&args[1], args[2].parse().expect("entrants"));
    let cfg: RedisConfig = toml::from_str(&format!(
        "url = {url:?}\nkey_prefix = \"scale\"\ncommand_timeout = \"30s\""
    ))
    .expect("redis config");
    let metrics = flashgate::metrics::Metrics::new();
    let redis_metrics = RedisMetrics {
        errors: metrics.redis_errors.clone(),
        circuit_open: metrics.redis_circuit_open.clone(),
    };
    let store = Store::new(&cfg, redis_metrics).expect("store");
    assert!(
        store.conn().try_connect().await,
        "Redis at {url} does not answer"
    );
    store.ready().await.expect("scripts load");
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for units in args[3..].iter().map(|u| u.parse::<u64>().expect("units")) {
        let campaign = format!("c{units}");
        let keys = store.keys(&campaign);
        let seed = Seed::random().unwrap();
        let before = used_memory(&mut con).await;
        let t = Instant::now();
        let far = i64::MAX / 2;
        stream::iter(0..entrants)
            .map(|n| {
                let (store, keys, seed) = (&store, &keys, &seed);
                async move {
                    let user = format!("user-{n:07}");
                    let member = seed.ticket(&user).ranking_member(&user);
                    store.enter(keys, &user, &member, far).await.expect("enter");
                }
            })
            .buffer_unordered(512)
            .collect::<Vec<_>>()
            .await;
        let entered = t.elapsed();
        let after = used_memory(&mut con).await;
        let item = keys.item("a");
        let t = Instant::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let step = store
            .draw(
                &keys,
                &[(item.as_str(), units)],
                (now - 1000, now + 3_600_000),
                600_000,
            )
            .await
            .expect("draw");
        let drawn = t.elapsed();
        let selected_mem = used_memory(&mut con).await;
        println!(
            "entrants {entrants}: entered in {:.1} s ({:.0}/s); entries use {:.1} MiB ({:.0} B each); \
             draw + selection of {} in {} ms (selection records +{:.1} MiB)",
            entered.as_secs_f64(),
            entrants as f64 / entered.as_secs_f64(),
            mib(after - before),
            (after - before) as f64 / entrants as f64,
            step.selected,
            drawn.as_millis(),
            mib(selected_mem.saturating_sub(after)),
        );
        assert_eq!(step.selected, units.min(entrants), "selected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
