//! The gateway's estimate of Redis' clock, so a reservation can carry a deadline that
//! Redis itself checks (docs/guarantees.md: a buy answered 503 has reserved nothing,
//! even when a frozen Redis wakes up and runs the scripts queued before the gateway gave
//! up).
//!
//! Measured by `TIME` now and then: offset = Redis' time minus the midpoint of the
//! gateway's elapsed time around the call; the half round trip is the estimate's
//! uncertainty. Elapsed (monotonic) time, not the sale's injected clock: Redis keeps
//! real time however a test moves that clock, a deadline guards a real wait, and a wall
//! clock stepped by NTP between two readings must not move a deadline either.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::millis;

/// Half round trips up to this always refresh the estimate.
const NOISY_HALF_RTT_MS: i64 = 5;

#[derive(Debug)]
pub(crate) struct RedisClock {
    /// Where the gateway's elapsed milliseconds count from.
    epoch: Instant,
    /// Redis ms minus the gateway's ms since `epoch`.
    offset_ms: AtomicI64,
    /// Half the round trip of the measurement, ms (at least 1).
    uncertainty_ms: AtomicI64,
    measured: AtomicBool,
}

impl Default for RedisClock {
    fn default() -> Self {
        RedisClock {
            epoch: Instant::now(),
            offset_ms: AtomicI64::default(),
            uncertainty_ms: AtomicI64::default(),
            measured: AtomicBool::default(),
        }
    }
}

impl RedisClock {
    /// Milliseconds from `epoch` to `at` (saturating far beyond any process lifetime).
    fn ms(&self, at: Instant) -> i64 {
        i64::try_from(millis(at.saturating_duration_since(self.epoch))).unwrap_or(i64::MAX)
    }

    /// Records one `TIME` reading taken between the gateway's `before` and `after`. A
    /// reading slowed by load (a round trip over 10 ms, and slower than the one held)
    /// is ignored: it would shrink every deadline for nothing, and clocks drift by
    /// microseconds between readings.
    pub(crate) fn record(&self, before: Instant, after: Instant, redis_ms: i64) {
        let (before_ms, after_ms) = (self.ms(before), self.ms(after));
        let half_rtt = ((after_ms - before_ms) / 2).max(1);
        let held = self.uncertainty_ms.load(Ordering::Relaxed);
        if self.measured.load(Ordering::Relaxed) && half_rtt > held.max(NOISY_HALF_RTT_MS) {
            return;
        }
        let mid = before_ms + (after_ms - before_ms) / 2;
        self.offset_ms.store(redis_ms - mid, Ordering::Relaxed);
        self.uncertainty_ms.store(half_rtt, Ordering::Relaxed);
        self.measured.store(true, Ordering::Relaxed);
    }

    /// Redis' time at the gateway's instant `at`, or `None` before the first measurement.
    pub(crate) fn now_ms(&self, at: Instant) -> Option<i64> {
        self.measured.load(Ordering::Relaxed).then(|| {
            self.ms(at)
                .saturating_add(self.offset_ms.load(Ordering::Relaxed))
        })
    }

    /// The deadline (Redis' clock, ms) for a script sent at `sent`, or `None` before the
    /// first measurement (no check: Redis has not answered yet anyway).
    ///
    /// The connection gives up on a call after `command_timeout`. The script must start
    /// within half of it (less the estimate's uncertainty), which leaves its reply the
    /// other half to arrive: a script that runs is answered in time, and one whose caller
    /// was answered 503 never ran.
    pub(crate) fn deadline(&self, sent: Instant, command_timeout: Duration) -> Option<i64> {
        let budget = i64::try_from(millis(command_timeout / 2)).unwrap_or(i64::MAX);
        let redis_now = self.now_ms(sent)?;
        Some(
            redis_now
                .saturating_add(budget)
                .saturating_sub(self.uncertainty_ms.load(Ordering::Relaxed)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_in_redis_time_less_the_uncertainty() {
        let c = RedisClock::default();
        let at = |ms: u64| c.epoch + Duration::from_millis(ms);
        let timeout = Duration::from_millis(250);
        assert_eq!(c.deadline(at(1_000), timeout), None);
        assert_eq!(c.now_ms(at(1_000)), None);
        // Redis runs 5 s ahead; the reading took 10 ms.
        c.record(at(1_000), at(1_010), 6_005);
        assert_eq!(c.deadline(at(2_000), timeout), Some(7120));
        assert_eq!(c.now_ms(at(2_000)), Some(7_000));
        // A slow reading does not replace a good one; a good one does.
        c.record(at(3_000), at(3_400), 9_000);
        assert_eq!(c.deadline(at(2_000), timeout), Some(7120));
        c.record(at(3_000), at(3_002), 8_001);
        assert_eq!(c.deadline(at(2_000), timeout), Some(7124));
    }
}
