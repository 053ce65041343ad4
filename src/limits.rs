//! Rate limits, checked before any Redis work: governor keyed limiters (per client IP, per user;
//! global `[limits]` or a campaign's own override) and the in-flight request cap.
//!
//! Owns the limiter state, its bounded growth (`retain_recent`, `spawn_gc`) and the
//! `RateLimit-Policy` / `RateLimit` header values of a 429. Never speaks HTTP beyond those
//! header values, never touches Redis, never sleeps: time comes from the injected clock.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderName, HeaderValue};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{LimitsConfig, RateSpec};

/// A request refused by a rate limit: what the 429 tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry after {retry_after_secs}s")]
pub struct RateLimited {
    /// Whole seconds until a request can conform, rounded up, never 0 (`Retry-After`).
    pub retry_after_secs: u64,
    /// The policy's burst size.
    pub limit: u32,
    /// Seconds to replenish a whole burst (rounded up, at least 1).
    pub window_secs: u64,
}

impl RateLimited {
    /// The IETF `draft-ietf-httpapi-ratelimit-headers` fields, current (-08 and later)
    /// syntax, chosen over the older `RateLimit-Limit/-Remaining/-Reset` trio:
    /// `RateLimit-Policy: "burst";q=<burst>;w=<window>` and
    /// `RateLimit: "burst";r=0;t=<retry_after>`. Only these two: `Retry-After` belongs to
    /// the HTTP layer, which adds it from `retry_after_secs`.
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 2] {
        let policy = format!("\"burst\";q={};w={}", self.limit, self.window_secs);
        let state = format!("\"burst\";r=0;t={}", self.retry_after_secs);
        [
            (
                HeaderName::from_static("ratelimit-policy"),
                HeaderValue::try_from(policy).expect("digits and quotes are a valid header"),
            ),
            (
                HeaderName::from_static("ratelimit"),
                HeaderValue::try_from(state).expect("digits and quotes are a valid header"),
            ),
        ]
    }
}

// === impl Limiter ===

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One keyed limiter and the spec it was built from (to notice a changed override).
struct Limiter<K: Hash + Eq + Clone, C: Clock> {
    spec: RateSpec,
    window_secs: u64,
    keyed: Keyed<K, C>,
}

impl<K: Hash + Eq + Clone, C: Clock> Limiter<K, C> {
    fn new(spec: RateSpec, clock: C) -> Self {
        let quota = quota(spec);
        Limiter {
            spec,
            window_secs: ceil_secs(quota.burst_size_replenished_in()),
            keyed: RateLimiter::new(quota, DashMapStateStore::default(), clock),
        }
    }

    fn check(&self, key: &K) -> Result<(), RateLimited> {
        self.keyed.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.keyed.clock().now());
            RateLimited {
                retry_after_secs: ceil_secs(wait),
                limit: self.spec.burst,
                window_secs: self.window_secs,
            }
        })
    }

    fn gc(&self) {
        self.keyed.retain_recent();
        self.keyed.shrink_to_fit();
    }
}

/// `{rate, per, burst}` → one cell every `per / rate`, bursts of `burst`.
/// Config validation guarantees non-zero values; clamp anyway so this cannot panic.
fn quota(spec: RateSpec) -> Quota {
    let period = (spec.per.0 / spec.rate.max(1)).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(spec.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .expect("period is non-zero")
        .allow_burst(burst)
}

/// Whole seconds, rounded up, at least 1 (a `Retry-After: 0` invites a retry storm).
fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// The per-IP key: IPv4 as is; IPv6 by its /64, since one client (one home router, one
/// phone) is routinely given a whole /64 and could otherwise rotate through it freely.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

// === impl Limiters ===

/// A limiter key: a keyed 64-bit hash (SipHash with this process's random keys) of the
/// per-IP key or of the user id. A map entry is then 16 bytes with no heap allocation of
/// its own (a `String` user key cost ~80 bytes, an `IpAddr` one ~50), which is what
/// bounds memory under a crowd of distinct users and IPs; and a lookup allocates nothing.
/// Two different keys collide with probability 2^-64 per pair (about 3e-8 for a million
/// keys held at once), and nobody outside can aim for a collision: the hash keys are
/// random per process.
type Key = u64;

/// All rate limiters of the gateway. Cheap to clone: one `Arc` inside.
///
/// Generic over the governor clock, as governor is; the gateway's is its own injected
/// clock ([`crate::clock::Clock`]), so a test that moves it refills the buckets too.
pub struct Limiters<C: Clock = crate::clock::Clock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock> Clone for Limiters<C> {
    fn clone(&self) -> Self {
        Limiters {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<C: Clock> {
    /// Shared by every limiter, also those created later for campaign overrides.
    clock: C,
    /// Hashes IPs and user ids into limiter keys ([`Key`]).
    hasher: RandomState,
    /// `[limits]` of gateway.toml; `None` = no limit. Fixed for the process lifetime.
    per_ip: Option<Limiter<Key, C>>,
    per_user: Option<Limiter<Key, C>>,
    /// Campaigns with their own `limits.per_ip` / `limits.per_user`, by campaign id.
    /// Bounded by the configured campaigns; an entry whose spec no longer matches the
    /// (reloaded) campaign is replaced, and empty entries are dropped by `retain_recent`.
    campaign_ip: DashMap<String, Limiter<Key, C>>,
    campaign_user: DashMap<String, Limiter<Key, C>>,
}

impl<C: Clock + Clone> Limiters<C> {
    /// The limiters `global` describes, all reading `clock` (the sale's clock in the gateway).
    pub fn with_clock(global: &LimitsConfig, clock: C) -> Self {
        let inner = Inner {
            per_ip: global.per_ip.map(|s| Limiter::new(s, clock.clone())),
            per_user: global.per_user.map(|s| Limiter::new(s, clock.clone())),
            campaign_ip: DashMap::new(),
            campaign_user: DashMap::new(),
            hasher: RandomState::new(),
            clock,
        };
        Limiters {
            inner: Arc::new(inner),
        }
    }

    /// The per-IP rate limit of `campaign`, whose own limits are `overrides`.
    pub fn check_ip(
        &self,
        campaign: &str,
        overrides: &LimitsConfig,
        ip: IpAddr,
    ) -> Result<(), RateLimited> {
        let i = &*self.inner;
        check(
            &i.clock,
            i.per_ip.as_ref(),
            &i.campaign_ip,
            campaign,
            overrides.per_ip,
            &i.hasher.hash_one(ip_key(ip)),
        )
    }

    /// The per-user rate limit of `campaign`, whose own limits are `overrides`.
    pub fn check_user(
        &self,
        campaign: &str,
        overrides: &LimitsConfig,
        user: &str,
    ) -> Result<(), RateLimited> {
        let i = &*self.inner;
        if i.per_user.is_none() && overrides.per_user.is_none() {
            return Ok(()); // no limit: skip hashing the key
        }
        check(
            &i.clock,
            i.per_user.as_ref(),
            &i.campaign_user,
            campaign,
            overrides.per_user,
            &i.hasher.hash_one(user),
        )
    }

    /// Forgets keys whose state equals a fresh one (unused for a replenish period) and
    /// returns the memory; drops campaign limiters left with no key at all.
    pub fn retain_recent(&self) {
        let i = &*self.inner;
        if let Some(l) = &i.per_ip {
            l.gc();
        }
        if let Some(l) = &i.per_user {
            l.gc();
        }
        gc_campaigns(&i.campaign_ip);
        gc_campaigns(&i.campaign_user);
    }

    /// Total keys held by all limiters (for metrics and tests).
    pub fn len(&self) -> usize {
        let i = &*self.inner;
        i.per_ip.as_ref().map_or(0, |l| l.keyed.len())
            + i.per_user.as_ref().map_or(0, |l| l.keyed.len())
            + i.campaign_ip.iter().map(|l| l.keyed.len()).sum::<usize>()
            + i.campaign_user.iter().map(|l| l.keyed.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<C> Limiters<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    /// Runs [`Limiters::retain_recent`] now and then every `every`, on the blocking pool
    /// (it walks every key), until `shutdown` turns `true` or its sender is dropped.
    pub fn spawn_gc(&self, every: Duration, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = tick.tick() => {
                        let l = this.clone();
                        if let Err(e) = tokio::task::spawn_blocking(move || l.retain_recent()).await {
                            tracing::error!(error = %e, "rate limiter gc failed");
                        }
                    }
                    // Err = sender gone: nobody can ask us to stop any more, so stop now.
                    _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => break,
                }
            }
        })
    }
}

/// The one check path: a campaign override when set, else the global limiter, else pass.
fn check<K: Hash + Eq + Clone, C: Clock + Clone>(
    clock: &C,
    global: Option<&Limiter<K, C>>,
    per_campaign: &DashMap<String, Limiter<K, C>>,
    campaign: &str,
    spec: Option<RateSpec>,
    key: &K,
) -> Result<(), RateLimited> {
    let Some(spec) = spec else {
        return global.map_or(Ok(()), |l| l.check(key));
    };
    // Fast path: a shared shard lock and a &str lookup, no allocation.
    if let Some(l) = per_campaign.get(campaign) {
        if l.spec == spec {
            return l.check(key);
        }
    }
    // First use, or the override changed on reload: (re)build under the entry's lock.
    let l = per_campaign
        .entry(campaign.to_owned())
        .and_modify(|l| {
            if l.spec != spec {
                *l = Limiter::new(spec, clock.clone());
            }
        })
        .or_insert_with(|| Limiter::new(spec, clock.clone()));
    l.check(key)
}

fn gc_campaigns<K: Hash + Eq + Clone, C: Clock>(map: &DashMap<String, Limiter<K, C>>) {
    let mut empty = Vec::new();
    for l in map.iter() {
        l.gc();
        if l.keyed.is_empty() {
            empty.push(l.key().clone());
        }
    }
    // Re-checked under the write lock: a check may have added a key meanwhile.
    for id in empty {
        map.remove_if(&id, |_, l| l.keyed.is_empty());
    }
}

// === impl Inflight ===

/// Caps concurrent buy requests (`server.max_inflight`); beyond it, shed with 503 at once.
#[derive(Debug, Clone)]
pub struct Inflight {
    count: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted request; releases its slot when dropped.
#[must_use = "the slot is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct InflightGuard {
    count: Arc<AtomicUsize>,
}

impl Inflight {
    pub fn new(max: usize) -> Self {
        Inflight {
            count: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A slot, or `None` when `max` requests are already in flight.
    pub fn try_acquire(&self) -> Option<InflightGuard> {
        // A plain counter guards nothing else: Relaxed is enough, the RMW is still atomic.
        self.count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(InflightGuard {
            count: Arc::clone(&self.count),
        })
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;
    use time::macros::datetime;

    fn spec(rate: u32, per_ms: u64, burst: u32) -> RateSpec {
        RateSpec {
            rate,
            per: HumanDuration(Duration::from_millis(per_ms)),
            burst,
        }
    }

    fn limits(per_ip: Option<RateSpec>, per_user: Option<RateSpec>) -> LimitsConfig {
        LimitsConfig { per_ip, per_user }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn setup(global: LimitsConfig) -> (Limiters, crate::clock::Clock) {
        let clock = crate::clock::Clock::fake(datetime!(2026-11-11 00:00 UTC));
        (Limiters::with_clock(&global, clock.clone()), clock)
    }

    const NONE: LimitsConfig = LimitsConfig {
        per_ip: None,
        per_user: None,
    };

    #[test]
    fn burst_then_limited_then_refill() {
        // 2 per second (one cell every 500ms), burst 3.
        let (l, clock) = setup(limits(Some(spec(2, 1000, 3)), None));
        let a = ip("198.51.100.7");
        for _ in 0..3 {
            l.check_ip("c", &NONE, a).unwrap();
        }
        let err = l.check_ip("c", &NONE, a).unwrap_err();
        assert_eq!(
            err,
            RateLimited {
                retry_after_secs: 1,
                limit: 3,
                window_secs: 2
            }
        );
        clock.advance(Duration::from_millis(499));
        assert!(l.check_ip("c", &NONE, a).is_err());
        clock.advance(Duration::from_millis(1));
        l.check_ip("c", &NONE, a).unwrap();
        assert!(l.check_ip("c", &NONE, a).is_err());
    }

    #[test]
    fn retry_after_rounds_up() {
        // One cell every 2.5s, burst 1: the wait after one request is 2.5s → 3.
        let (l, clock) = setup(limits(None, Some(spec(2, 5000, 1))));
        l.check_user("c", &NONE, "u1").unwrap();
        let err = l.check_user("c", &NONE, "u1").unwrap_err();
        assert_eq!(err.retry_after_secs, 3);
        assert_eq!(err.window_secs, 3);
        clock.advance(Duration::from_millis(2400));
        assert_eq!(
            l.check_user("c", &NONE, "u1").unwrap_err().retry_after_secs,
            1
        );
    }

    #[test]
    fn distinct_keys_are_independent() {
        let (l, _clock) = setup(limits(Some(spec(1, 1000, 1)), Some(spec(1, 1000, 1))));
        l.check_ip("c", &NONE, ip("192.0.2.1")).unwrap();
        l.check_ip("c", &NONE, ip("192.0.2.2")).unwrap();
        assert!(l.check_ip("c", &NONE, ip("192.0.2.1")).is_err());
        l.check_user("c", &NONE, "alice").unwrap();
        l.check_user("c", &NONE, "bob").unwrap();
        assert!(l.check_user("c", &NONE, "alice").is_err());
        // The global limiter is shared by campaigns.
        assert!(l.check_user("other", &NONE, "alice").is_err());
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn ipv6_keyed_by_slash_64_and_mapped_v4_is_v4() {
        let (l, _clock) = setup(limits(Some(spec(1, 1000, 1)), None));
        l.check_ip("c", &NONE, ip("2001:db8:1:2::1")).unwrap();
        assert!(l.check_ip("c", &NONE, ip("2001:db8:1:2:ffff::9")).is_err());
        l.check_ip("c", &NONE, ip("2001:db8:1:3::1")).unwrap();
        l.check_ip("c", &NONE, ip("192.0.2.1")).unwrap();
        assert!(l.check_ip("c", &NONE, ip("::ffff:192.0.2.1")).is_err());
    }

    #[test]
    fn no_limit_at_either_level() {
        let (l, _clock) = setup(NONE);
        for _ in 0..1000 {
            l.check_ip("c", &NONE, ip("192.0.2.1")).unwrap();
            l.check_user("c", &NONE, "u").unwrap();
        }
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn campaign_override_is_used_and_replaced_on_change() {
        let (l, _clock) = setup(limits(Some(spec(1, 1000, 1)), None));
        let a = ip("192.0.2.1");
        let roomy = limits(Some(spec(5, 1000, 5)), None);
        for _ in 0..5 {
            l.check_ip("big", &roomy, a).unwrap();
        }
        let err = l.check_ip("big", &roomy, a).unwrap_err();
        assert_eq!(err.limit, 5);
        // Other campaigns still use the global limiter, untouched by "big".
        l.check_ip("small", &NONE, a).unwrap();
        assert_eq!(l.check_ip("small", &NONE, a).unwrap_err().limit, 1);
        // A user override with no global user limit.
        let users = limits(None, Some(spec(1, 1000, 2)));
        l.check_user("big", &users, "u").unwrap();
        l.check_user("big", &users, "u").unwrap();
        assert!(l.check_user("big", &users, "u").is_err());
        l.check_user("small", &NONE, "u").unwrap(); // no limit there
                                                    // Reload changes the override: a new limiter with the new quota.
        let reloaded = limits(Some(spec(2, 1000, 2)), None);
        l.check_ip("big", &reloaded, a).unwrap();
        l.check_ip("big", &reloaded, a).unwrap();
        assert_eq!(l.check_ip("big", &reloaded, a).unwrap_err().limit, 2);
    }

    #[test]
    fn retain_recent_bounds_state() {
        let (l, clock) = setup(limits(Some(spec(10, 1000, 10)), Some(spec(10, 1000, 10))));
        let over = limits(Some(spec(1, 1000, 1)), None);
        for n in 0..100u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0xC000_0200 + n));
            l.check_ip("c", &NONE, a).unwrap();
            l.check_ip("o", &over, a).unwrap();
            l.check_user("c", &NONE, &n.to_string()).unwrap();
        }
        assert_eq!(l.len(), 300);
        l.retain_recent();
        assert_eq!(l.len(), 300, "recent keys are kept");
        clock.advance(Duration::from_secs(3));
        l.retain_recent();
        assert_eq!(l.len(), 0);
        assert!(l.is_empty());
        assert!(l.inner.campaign_ip.is_empty(), "empty override dropped");
        // And a dropped override limiter comes back fresh on use.
        l.check_ip("o", &over, ip("192.0.2.1")).unwrap();
        assert!(l.check_ip("o", &over, ip("192.0.2.1")).is_err());
    }

    #[tokio::test]
    async fn gc_task_runs_and_stops_on_shutdown() {
        let (l, clock) = setup(limits(Some(spec(1, 1000, 1)), None));
        l.check_ip("c", &NONE, ip("192.0.2.1")).unwrap();
        clock.advance(Duration::from_secs(5));
        let (tx, rx) = watch::channel(false);
        // The first tick is due at once (no waiting on wall time); the next is an hour away.
        let task = l.spawn_gc(Duration::from_secs(3600), rx);
        tokio::time::timeout(Duration::from_secs(10), async {
            while !l.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("first gc pass runs");
        // Only shutdown can end the task now.
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("gc task stops on shutdown")
            .unwrap();
        // A dropped sender stops it too.
        let (tx, rx) = watch::channel(false);
        let task = l.spawn_gc(Duration::from_secs(3600), rx);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("gc task stops when the sender is gone")
            .unwrap();
    }

    #[test]
    fn headers_follow_the_draft() {
        let r = RateLimited {
            retry_after_secs: 3,
            limit: 40,
            window_secs: 2,
        };
        let [(pn, pv), (sn, sv)] = r.headers();
        assert_eq!(pn.as_str(), "ratelimit-policy");
        assert_eq!(pv, "\"burst\";q=40;w=2");
        assert_eq!(sn.as_str(), "ratelimit");
        assert_eq!(sv, "\"burst\";r=0;t=3");
        // The documented example: 20/s, burst 40 → a 2s window.
        let (l, _c) = setup(limits(Some(spec(20, 1000, 40)), None));
        for _ in 0..40 {
            l.check_ip("c", &NONE, ip("192.0.2.1")).unwrap();
        }
        let e = l.check_ip("c", &NONE, ip("192.0.2.1")).unwrap_err();
        assert_eq!((e.limit, e.window_secs, e.retry_after_secs), (40, 2, 1));
    }

    #[test]
    fn inflight_cap() {
        let f = Inflight::new(2);
        let a = f.try_acquire().unwrap();
        let b = f.clone().try_acquire().unwrap();
        assert_eq!(f.current(), 2);
        assert!(f.try_acquire().is_none());
        drop(a);
        assert_eq!(f.current(), 1);
        let c = f.try_acquire().unwrap();
        drop((b, c));
        assert_eq!(f.current(), 0);
        assert!(Inflight::new(0).try_acquire().is_none());
    }
}
