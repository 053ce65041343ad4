//! The gateway's one clock: wall time for campaign windows, the local sold-out flag, token
//! expiry, payment timestamps and the expiry sweep, and the monotonic time of the rate
//! limiters (governor reads it through [`governor::clock::Clock`]). Injected, so a test
//! moves time for all of them at once instead of sleeping.
//!
//! Timeouts of I/O (Redis calls, proxied exchanges, connection reads) are not the clock's:
//! they guard real waits and stay on Tokio's timer.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, QuantaClock, QuantaInstant, Reference};
use governor::nanos::Nanos;
use time::OffsetDateTime;

/// System time in production; a fake that only moves when told to in tests. Cheap to
/// clone; clones of a fake share its time.
#[derive(Clone, Debug)]
pub struct Clock {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    /// Wall time from the OS; the limiters' monotonic time from quanta (what governor
    /// uses by default: a counter read, no system call), counted from `origin`.
    System {
        monotonic: QuantaClock,
        origin: QuantaInstant,
    },
    /// Unix milliseconds, moved only by [`Clock::advance`] and [`Clock::set`].
    Fake(Arc<AtomicI64>),
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        let monotonic = QuantaClock::default();
        let origin = monotonic.now();
        Clock {
            kind: Kind::System { monotonic, origin },
        }
    }

    /// A clock standing still at `at` until [`Clock::advance`] or [`Clock::set`].
    pub fn fake(at: OffsetDateTime) -> Clock {
        Clock {
            kind: Kind::Fake(Arc::new(AtomicI64::new(unix_ms(at)))),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.kind {
            Kind::Fake(ms) => ms.load(Ordering::Relaxed),
            Kind::System { .. } => unix_ms(OffsetDateTime::now_utc()),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        match &self.kind {
            Kind::Fake(ms) => OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(ms.load(Ordering::Relaxed)) * 1_000_000,
            )
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            Kind::System { .. } => OffsetDateTime::now_utc(),
        }
    }

    /// Seconds since the Unix epoch (0 before it), as JWT claims count them.
    pub fn now_secs(&self) -> u64 {
        u64::try_from(self.now_ms() / 1000).unwrap_or(0)
    }

    /// Moves a fake clock forward; the system clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let Kind::Fake(ms) = &self.kind {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            ms.fetch_add(by, Ordering::Relaxed);
        }
    }

    /// Sets a fake clock; the system clock ignores it.
    pub fn set(&self, at: OffsetDateTime) {
        if let Kind::Fake(ms) = &self.kind {
            ms.store(unix_ms(at), Ordering::Relaxed);
        }
    }
}

// === impl governor::clock::Clock ===

/// The rate limiters' time: monotonic for the system clock (a wall clock stepped back by
/// NTP must not refill or drain a bucket), the fake's own milliseconds for a fake, so a
/// test that advances the clock refills the buckets by as much.
impl governor::clock::Clock for Clock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match &self.kind {
            Kind::System { monotonic, origin } => monotonic.now().duration_since(*origin),
            Kind::Fake(ms) => {
                let ms = u64::try_from(ms.load(Ordering::Relaxed)).unwrap_or(0);
                Nanos::new(ms.saturating_mul(1_000_000))
            }
        }
    }
}

/// A duration in whole milliseconds, saturating (no configured duration comes near).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch (saturating far outside any sale's lifetime).
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_fake_clock_moves_only_when_told() {
        let c = Clock::fake(datetime!(2026-11-11 00:00 UTC));
        let shared = c.clone();
        assert_eq!(c.now(), datetime!(2026-11-11 00:00 UTC));
        shared.advance(Duration::from_millis(1500));
        assert_eq!(c.now(), datetime!(2026-11-11 00:00:01.5 UTC));
        assert_eq!(c.now_ms(), unix_ms(datetime!(2026-11-11 00:00:01.5 UTC)));
        c.set(datetime!(2026-11-12 00:00 UTC));
        assert_eq!(shared.now(), datetime!(2026-11-12 00:00 UTC));
        let sys = Clock::system();
        sys.advance(Duration::from_secs(3600));
        assert!((sys.now() - OffsetDateTime::now_utc()).abs() < time::Duration::seconds(5));
    }

    #[test]
    fn the_limiters_time_follows_a_fake_and_runs_on_for_the_system() {
        use governor::clock::Clock as Limiters;
        let c = Clock::fake(datetime!(2026-11-11 00:00 UTC));
        let before = Limiters::now(&c);
        c.advance(Duration::from_millis(250));
        let after = Limiters::now(&c);
        assert_eq!(
            Duration::from(after.duration_since(before)),
            Duration::from_millis(250)
        );
        let sys = Clock::system();
        let a = Limiters::now(&sys);
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(2) {}
        let b = Limiters::now(&sys);
        assert!(Duration::from(b.duration_since(a)) >= Duration::from_millis(1));
    }
}
