//! The sale's background work, one task each, all stopped by the shutdown signal:
//! bootstrap (scripts + stock once Redis answers), refresh (the public `remaining`, the
//! pause switch and the gauges, once a second), the expiry sweeper, the outbox consumer
//! and its heartbeat, fair admission's draws and the rate limiters' garbage collection.
//! The short-lived tasks a buy starts are the sale's too: [`Sale::finish_tasks`] waits
//! for them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{heartbeat, outbox_consumer, sweeper, Sale};

/// How often bootstrap retries while Redis is away.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(250);
/// How often raffles are drawn, lapsed and re-selected (docs/api.md: "within about a second").
const ADMISSION_TICK: Duration = Duration::from_secs(1);
/// How often the rate limiters forget idle keys.
const LIMITER_GC: Duration = Duration::from_secs(10);

impl Sale {
    /// Connects to Redis once; when it answers, loads scripts and stock before returning
    /// (no 503s at boot). When it does not, keeps connecting in the background: the sale
    /// fails closed until then. (Under Sentinel the background task also follows the
    /// master through failovers.)
    pub async fn connect(&self) {
        let conn = self.inner.store.conn();
        let up = conn.try_connect().await;
        conn.connect_in_background();
        if up && self.load_scripts_and_stock().await {
            self.inner.stock_loaded.store(true, Ordering::Relaxed);
        }
    }

    /// Starts the background tasks; each stops when `shutdown` turns `true`.
    pub fn spawn_background(&self, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let i = &*self.inner;
        let consumer = outbox_consumer::Consumer {
            store: i.store.clone(),
            registry: i.registry.clone(),
            metrics: i.metrics.clone(),
            sink: i.sink.clone(),
            cfg: i.orders.clone(),
            clock: i.clock.clone(),
            name: outbox_consumer::consumer_name(),
        };
        let heartbeat = heartbeat::run(
            i.store.clone(),
            i.registry.clone(),
            consumer.name.clone(),
            shutdown.clone(),
        );
        vec![
            tokio::spawn(self.clone().bootstrap(shutdown.clone())),
            tokio::spawn(self.clone().refresh(shutdown.clone())),
            tokio::spawn(sweeper::run(
                self.clone(),
                i.orders.sweep_interval.0,
                shutdown.clone(),
            )),
            tokio::spawn(consumer.run(shutdown.clone())),
            tokio::spawn(self.clone().admission(shutdown.clone())),
            tokio::spawn(heartbeat),
            i.limiters.spawn_gc(LIMITER_GC, shutdown.clone()),
        ]
    }

    /// Waits for the short-lived tasks requests started (a sold-out flag being armed:
    /// one bounded Redis call). Call once no request can start more: the listeners are
    /// drained.
    pub async fn finish_tasks(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    async fn load_scripts_and_stock(&self) -> bool {
        let store = &self.inner.store;
        store.ready().await.is_ok()
            && store.sync_clock().await.is_ok()
            && self.load_stock().await.is_ok()
    }

    /// Once Redis answers: load scripts and the campaigns' stock (only where absent).
    /// Returns at once when `connect` already did.
    async fn bootstrap(self, mut shutdown: watch::Receiver<bool>) {
        while !self.inner.stock_loaded.load(Ordering::Relaxed) {
            if self.load_scripts_and_stock().await {
                self.inner.stock_loaded.store(true, Ordering::Relaxed);
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(BOOTSTRAP_RETRY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Fair admission, about once a second and at the instant a raffle starts: seeds,
    /// draws, lapses and re-selection (`Sale::admission_tick`).
    async fn admission(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let wait = match self.admission_tick().await {
                Some(to_start) => to_start.min(ADMISSION_TICK),
                None => ADMISSION_TICK,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Once a second: per-item `remaining` for the public view and the gauges, the pause
    /// switch, the outbox gauges.
    async fn refresh(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            self.refresh_once().await;
        }
    }

    async fn refresh_once(&self) {
        let i = &*self.inner;
        i.metrics.inflight.set(gauge(i.inflight.current()));
        i.metrics.limiter_keys.set(gauge(i.limiters.len()));
        if i.store.conn().get().is_err() {
            return;
        }
        // Clocks drift: keep the reservation deadlines' estimate of Redis' clock fresh.
        let _ = i.store.sync_clock().await;
        for c in i.registry.snapshot().values() {
            if let Ok(paused) = i.store.paused(&c.keys).await {
                c.paused.store(paused, Ordering::Relaxed);
            }
            let keys: Vec<String> = c.items.iter().map(|i| i.key.clone()).collect();
            if let Ok(stats) = i.store.item_stats(&keys).await {
                for (item, s) in c.items.iter().zip(stats) {
                    item.remaining.store(s.remaining, Ordering::Relaxed);
                    i.metrics
                        .stock_remaining
                        .with_label_values(&[&c.cfg.id, &item.sku])
                        .set(s.remaining);
                }
            }
        }
        if let Ok(outbox) = self.outbox().await {
            i.metrics.outbox_pending.set(gauge(outbox.pending));
            i.metrics.outbox_dead.set(gauge(outbox.dead));
        }
    }
}

/// A count as a gauge value (saturating; no count here comes near i64::MAX).
fn gauge(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}
