//! The Prometheus registry and its families (names documented in docs/api.md), served on the admin listener.
//!
//! Label sets on the buy path are few and fixed; `with_label_values` on them is a hashed
//! read-locked lookup, cheap next to the Redis round trip.
//!
//! Every series whose labels the configuration determines is created at 0 up front (the
//! `prime_*` calls), so `rate()` and alerts work before the first event.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub stock_remaining: IntGaugeVec,
    pub preorders: IntCounterVec,
    pub admission: IntCounterVec,
    pub reserve_batch_size: Histogram,
    pub outbox_pending: IntGauge,
    pub outbox_dead: IntGauge,
    pub sink_deliveries: IntCounterVec,
    pub redis_errors: IntCounter,
    pub redis_circuit_open: IntGauge,
    pub inflight: IntGauge,
    pub limiter_keys: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "flashgate_requests_total",
                "Requests by route and outcome (problem slug, or ok)",
            ),
            &["route", "outcome"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "flashgate_request_duration_seconds",
                "Request duration by route",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 10.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let stock_remaining = IntGaugeVec::new(
            Opts::new(
                "flashgate_stock_remaining",
                "Units on sale per item (refreshed every second)",
            ),
            &["campaign", "sku"],
        )
        .expect("valid metric");
        let preorders = IntCounterVec::new(
            Opts::new(
                "flashgate_preorders_total",
                "Pre-order lifecycle events seen by this instance",
            ),
            &["campaign", "sku", "event"],
        )
        .expect("valid metric");
        let outbox_pending = IntGauge::new(
            "flashgate_outbox_pending",
            "Outbox entries not yet acknowledged by the sink",
        )
        .expect("valid metric");
        let outbox_dead = IntGauge::new(
            "flashgate_outbox_dead",
            "Entries in the dead-letter streams",
        )
        .expect("valid metric");
        let sink_deliveries = IntCounterVec::new(
            Opts::new(
                "flashgate_sink_deliveries_total",
                "Sink delivery attempts by result (ok, retry, failed)",
            ),
            &["sink", "result"],
        )
        .expect("valid metric");
        let redis_errors =
            IntCounter::new("flashgate_redis_errors_total", "Redis calls that failed")
                .expect("valid metric");
        let admission = IntCounterVec::new(
            Opts::new(
                "flashgate_admission_total",
                "Fair-admission events seen by this instance (raffle entries, selections, claims, lapses; refusals of users not selected)",
            ),
            &["campaign", "event"],
        )
        .expect("valid metric");
        let reserve_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "flashgate_reserve_batch_size",
                "Buys sent to Redis in one reserve call (group commit)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )
        .expect("valid metric");
        let redis_circuit_open = IntGauge::new(
            "flashgate_redis_circuit_open",
            "1 while Redis is unreachable and calls fail at once (circuit breaker open)",
        )
        .expect("valid metric");
        let inflight = IntGauge::new("flashgate_inflight_requests", "Buy requests in flight")
            .expect("valid metric");
        let limiter_keys = IntGauge::new(
            "flashgate_limiter_keys",
            "Keys held by the per-IP and per-user rate limiters",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(stock_remaining.clone()),
            Box::new(preorders.clone()),
            Box::new(admission.clone()),
            Box::new(reserve_batch_size.clone()),
            Box::new(outbox_pending.clone()),
            Box::new(outbox_dead.clone()),
            Box::new(sink_deliveries.clone()),
            Box::new(redis_errors.clone()),
            Box::new(redis_circuit_open.clone()),
            Box::new(inflight.clone()),
            Box::new(limiter_keys.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            registry,
            requests,
            duration,
            stock_remaining,
            preorders,
            admission,
            reserve_batch_size,
            outbox_pending,
            outbox_dead,
            sink_deliveries,
            redis_errors,
            redis_circuit_open,
            inflight,
            limiter_keys,
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }

    /// The gathered `flashgate_requests_total` family (for the status page).
    pub fn requests_family(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector;
        self.requests.collect()
    }

    /// `flashgate_preorders_total{event}` values.
    pub const PREORDER_EVENTS: [&'static str; 5] = [
        "reserved",
        "paid",
        "expired",
        "cancelled",
        "refund_required",
    ];

    /// Creates each campaign's item series at 0: pre-order events and remaining stock.
    pub fn prime_campaigns(&self, campaigns: &[crate::config::Campaign]) {
        for c in campaigns {
            for i in &c.items {
                for event in Self::PREORDER_EVENTS {
                    self.preorders.with_label_values(&[&c.id, &i.sku, event]);
                }
                self.stock_remaining.with_label_values(&[&c.id, &i.sku]);
            }
            if !c.admission.is_first_come() {
                for event in Self::ADMISSION_EVENTS {
                    self.admission.with_label_values(&[&c.id, event]);
                }
            }
        }
    }

    /// `flashgate_admission_total{event}` values.
    pub const ADMISSION_EVENTS: [&'static str; 5] =
        ["entered", "selected", "claimed", "lapsed", "not-selected"];

    pub fn admission_event(&self, campaign: &str, event: &str, n: u64) {
        if n > 0 {
            self.admission
                .with_label_values(&[campaign, event])
                .inc_by(n);
        }
    }

    /// Creates the sink's delivery series at 0.
    pub fn prime_sink(&self, sink: &str) {
        for result in ["ok", "retry", "failed"] {
            self.sink_deliveries.with_label_values(&[sink, result]);
        }
    }

    pub fn preorder(&self, campaign: &str, sku: &str, event: &str, units: u64) {
        self.preorders
            .with_label_values(&[campaign, sku, event])
            .inc_by(units);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
