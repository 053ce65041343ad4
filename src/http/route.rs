//! The public router: method + path → a route carrying its parsed ids. Paths under
//! `/seckill/` and `/payments/` are flashgate's: one that matches no route is
//! 404, a known path with another method is 405 with `Allow`; nothing there is proxied.

use http::Method;
use prometheus::{Histogram, IntCounter};

use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route<'a> {
    Buy { campaign: &'a str, sku: &'a str },
    Campaign { id: &'a str },
    Enter { campaign: &'a str },
    MyEntry { campaign: &'a str },
    OrderGet { id: &'a str },
    OrderCancel { id: &'a str },
    PaymentCallback,
    NotFound,
    MethodNotAllowed { allow: &'static str },
    Proxy,
}

/// Every outcome label a route of ours can record (`flashgate_requests_total`), so the
/// series exist at 0 from the start.
const ROUTES: [(&str, &[&str]); 9] = [
    (
        "buy",
        &[
            "ok",
            "unauthenticated",
            "rate-limited",
            "not-started",
            "ended",
            "sold-out",
            "limit-reached",
            "not-found",
            "bad-request",
            "unavailable",
            "paused",
            "not-selected",
        ],
    ),
    ("campaign", &["ok", "not-found"]),
    (
        "entry",
        &[
            "ok",
            "unauthenticated",
            "rate-limited",
            "not-started",
            "entries-closed",
            "not-found",
            "unavailable",
        ],
    ),
    (
        "entry_me",
        &["ok", "unauthenticated", "not-found", "unavailable"],
    ),
    (
        "order_get",
        &["ok", "unauthenticated", "not-found", "unavailable"],
    ),
    (
        "order_cancel",
        &[
            "ok",
            "unauthenticated",
            "not-found",
            "not-pending",
            "unavailable",
        ],
    ),
    (
        "payment_callback",
        &[
            "ok",
            "bad-signature",
            "bad-request",
            "not-found",
            "amount-mismatch",
            "unavailable",
        ],
    ),
    ("no_route", &["not-found", "method-not-allowed"]),
    ("proxy", &["ok", "upstream-error"]),
];

/// Every route's request series, created at 0 and resolved once: recording a request is
/// then two handle updates, not two label lookups (a hash and a lock each) per request.
pub(super) struct RouteMetrics {
    routes: Vec<RouteSeries>,
    /// For a route or outcome missing from [`ROUTES`].
    all: Metrics,
}

/// One route's label, its duration histogram and its counter per outcome.
type RouteSeries = (&'static str, Histogram, Vec<(&'static str, IntCounter)>);

impl RouteMetrics {
    pub(super) fn new(metrics: &Metrics) -> RouteMetrics {
        let routes = ROUTES
            .iter()
            .map(|&(route, outcomes)| {
                let counters = outcomes
                    .iter()
                    .map(|&o| (o, metrics.requests.with_label_values(&[route, o])))
                    .collect();
                (
                    route,
                    metrics.duration.with_label_values(&[route]),
                    counters,
                )
            })
            .collect();
        RouteMetrics {
            routes,
            all: metrics.clone(),
        }
    }

    /// Counts a request of `route` that ended with `outcome` after `secs`.
    pub(super) fn observe(&self, route: &str, outcome: &str, secs: f64) {
        let known = self.routes.iter().find(|r| r.0 == route);
        match known {
            Some((_, duration, _)) => duration.observe(secs),
            None => self.all.duration.with_label_values(&[route]).observe(secs),
        }
        match known.and_then(|r| r.2.iter().find(|c| c.0 == outcome)) {
            Some((_, counter)) => counter.inc(),
            None => self.all.requests.with_label_values(&[route, outcome]).inc(),
        }
    }
}

impl<'a> Route<'a> {
    pub(super) fn of(method: &Method, path: &'a str) -> Route<'a> {
        let (route, allow) = match path_route(path) {
            PathRoute::Buy { campaign, sku } => (Route::Buy { campaign, sku }, "POST"),
            PathRoute::Campaign { id } => (Route::Campaign { id }, "GET"),
            PathRoute::Entries { campaign } => (Route::Enter { campaign }, "POST"),
            PathRoute::MyEntry { campaign } => (Route::MyEntry { campaign }, "GET"),
            PathRoute::Order { id } => match *method {
                Method::DELETE => return Route::OrderCancel { id },
                _ => (Route::OrderGet { id }, "GET, DELETE"),
            },
            PathRoute::PaymentCallback => (Route::PaymentCallback, "POST"),
            PathRoute::Ours => return Route::NotFound,
            PathRoute::Theirs => return Route::Proxy,
        };
        let expected = match route {
            Route::Buy { .. } | Route::Enter { .. } | Route::PaymentCallback => Method::POST,
            _ => Method::GET,
        };
        if *method == expected {
            route
        } else {
            Route::MethodNotAllowed { allow }
        }
    }

    /// The `route` label in metrics.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Route::Buy { .. } => "buy",
            Route::Campaign { .. } => "campaign",
            Route::Enter { .. } => "entry",
            Route::MyEntry { .. } => "entry_me",
            Route::OrderGet { .. } => "order_get",
            Route::OrderCancel { .. } => "order_cancel",
            Route::PaymentCallback => "payment_callback",
            Route::NotFound | Route::MethodNotAllowed { .. } => "no_route",
            Route::Proxy => "proxy",
        }
    }
}

enum PathRoute<'a> {
    Buy {
        campaign: &'a str,
        sku: &'a str,
    },
    Campaign {
        id: &'a str,
    },
    Entries {
        campaign: &'a str,
    },
    MyEntry {
        campaign: &'a str,
    },
    Order {
        id: &'a str,
    },
    PaymentCallback,
    /// Under `/seckill/` or `/payments/`, but no route of ours.
    Ours,
    Theirs,
}

fn path_route(path: &str) -> PathRoute<'_> {
    if path == "/payments/callback" {
        return PathRoute::PaymentCallback;
    }
    if path == "/payments" || path.starts_with("/payments/") {
        return PathRoute::Ours;
    }
    let rest = match path.strip_prefix("/seckill") {
        Some("") => return PathRoute::Ours,
        Some(rest) => match rest.strip_prefix('/') {
            Some(rest) => rest,
            None => return PathRoute::Theirs, // `/seckillfoo` is the store's
        },
        None => return PathRoute::Theirs,
    };
    let mut parts = rest.split('/');
    let segments = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    );
    match segments {
        (Some("campaigns"), Some(id), None, ..) if !id.is_empty() => PathRoute::Campaign { id },
        (Some("campaigns"), Some(campaign), Some("entries"), None, ..) if !campaign.is_empty() => {
            PathRoute::Entries { campaign }
        }
        (Some("campaigns"), Some(campaign), Some("entries"), Some("me"), None, ..)
            if !campaign.is_empty() =>
        {
            PathRoute::MyEntry { campaign }
        }
        (Some("campaigns"), Some(campaign), Some("items"), Some(sku), Some("orders"), None)
            if !campaign.is_empty() && !sku.is_empty() =>
        {
            PathRoute::Buy { campaign, sku }
        }
        (Some("orders"), Some(id), None, ..) if !id.is_empty() => PathRoute::Order { id },
        _ => PathRoute::Ours,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route<'a>(method: &str, path: &'a str) -> Route<'a> {
        Route::of(&method.parse().unwrap(), path)
    }

    #[test]
    fn routes_carry_their_ids() {
        assert_eq!(
            route("POST", "/seckill/campaigns/c1/items/sku/orders"),
            Route::Buy {
                campaign: "c1",
                sku: "sku"
            }
        );
        assert_eq!(
            route("GET", "/seckill/campaigns/c1"),
            Route::Campaign { id: "c1" }
        );
        assert_eq!(
            route("GET", "/seckill/orders/01J.c1"),
            Route::OrderGet { id: "01J.c1" }
        );
        assert_eq!(
            route("DELETE", "/seckill/orders/01J.c1"),
            Route::OrderCancel { id: "01J.c1" }
        );
        assert_eq!(route("POST", "/payments/callback"), Route::PaymentCallback);
    }

    #[test]
    fn our_paths_never_reach_the_store() {
        for path in [
            "/seckill/campaigns/c1/items/sku/orders/x",
            "/seckill/campaigns//items/sku/orders",
            "/seckill/orders/01J.c1/cancel",
            "/seckill/",
            "/seckill",
            "/payments/refund",
            "/payments",
        ] {
            assert_eq!(route("POST", path), Route::NotFound, "{path}");
        }
        assert_eq!(
            route("GET", "/seckill/campaigns/c1/items/sku/orders"),
            Route::MethodNotAllowed { allow: "POST" }
        );
        assert_eq!(
            route("POST", "/seckill/orders/o"),
            Route::MethodNotAllowed {
                allow: "GET, DELETE"
            }
        );
        assert_eq!(
            route("GET", "/payments/callback"),
            Route::MethodNotAllowed { allow: "POST" }
        );
        for path in ["/products/1", "/seckillfoo", "/", "/paymentsx"] {
            assert_eq!(route("GET", path), Route::Proxy, "{path}");
        }
    }

    #[test]
    fn route_metrics_count_known_and_unknown_labels() {
        let m = Metrics::new();
        let rm = RouteMetrics::new(&m);
        let count =
            |route: &str, outcome: &str| m.requests.with_label_values(&[route, outcome]).get();
        assert_eq!(count("buy", "sold-out"), 0, "primed at 0");
        rm.observe("buy", "sold-out", 0.001);
        rm.observe("buy", "sold-out", 0.001);
        rm.observe("buy", "teapot", 0.001);
        rm.observe("elsewhere", "ok", 0.001);
        assert_eq!(count("buy", "sold-out"), 2);
        assert_eq!(
            count("buy", "teapot"),
            1,
            "an outcome not listed still counts"
        );
        assert_eq!(
            count("elsewhere", "ok"),
            1,
            "a route not listed still counts"
        );
        let timed = |route: &str| m.duration.with_label_values(&[route]).get_sample_count();
        assert_eq!((timed("buy"), timed("elsewhere")), (3, 1));
    }
}
