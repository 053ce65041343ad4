//! The gateway's clock: wall time for campaign windows, the local sold-out flag and the
//! expiry sweep. Injected, so tests move time instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

/// System time in production; a fake that only moves when told to in tests. Cheap to
/// clone; clones of a fake share its time.
#[derive(Clone, Debug)]
pub struct Clock {
    /// `None`: the system clock. `Some`: fake unix milliseconds.
    fake: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { fake: None }
    }

    /// A clock standing still at `at` until [`Clock::advance`] or [`Clock::set`].
    pub fn fake(at: OffsetDateTime) -> Clock {
        Clock {
            fake: Some(Arc::new(AtomicI64::new(unix_ms(at)))),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.fake {
            Some(ms) => ms.load(Ordering::Relaxed),
            None => unix_ms(OffsetDateTime::now_utc()),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        match &self.fake {
            Some(ms) => OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(ms.load(Ordering::Relaxed)) * 1_000_000,
            )
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            None => OffsetDateTime::now_utc(),
        }
    }

    /// Moves a fake clock forward; the system clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let Some(ms) = &self.fake {
            let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            ms.fetch_add(by, Ordering::Relaxed);
        }
    }

    /// Sets a fake clock; the system clock ignores it.
    pub fn set(&self, at: OffsetDateTime) {
        if let Some(ms) = &self.fake {
            ms.store(unix_ms(at), Ordering::Relaxed);
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
}
