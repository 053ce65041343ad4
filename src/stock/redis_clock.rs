//! The gateway's estimate of Redis' clock, so a reservation can carry a deadline that
//! Redis itself checks (docs/guarantees.md: a buy answered 503 has reserved nothing,
//! even when a frozen Redis wakes up and runs the scripts queued before the gateway gave
//! up).
//!
//! Measured by `TIME` now and then: offset = Redis' time minus the midpoint of the
//! gateway's clock around the call; the half round trip is the estimate's uncertainty.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::millis;

/// Half round trips up to this always refresh the estimate.
const NOISY_HALF_RTT_MS: i64 = 5;

#[derive(Debug, Default)]
pub(crate) struct RedisClock {
    /// Redis ms minus gateway ms.
    offset_ms: AtomicI64,
    /// Half the round trip of the measurement, ms (at least 1).
    uncertainty_ms: AtomicI64,
    measured: AtomicBool,
}

impl RedisClock {
    /// Records one `TIME` reading taken between the gateway's `before` and `after`. A
    /// reading slowed by load (a round trip over 10 ms, and slower than the one held)
    /// is ignored: it would shrink every deadline for nothing, and clocks drift by
    /// microseconds between readings.
    pub(crate) fn record(&self, before_ms: i64, after_ms: i64, redis_ms: i64) {
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

    /// Redis' time at the gateway's `now_ms`: the gateway's time until measured.
    pub(crate) fn now_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// The deadline (Redis' clock, ms) for a script sent at the gateway's `now_ms`, or
    /// `None` before the first measurement (no check: Redis has not answered yet anyway).
    ///
    /// The connection gives up on a call after `command_timeout`. The script must start
    /// within half of it (less the estimate's uncertainty), which leaves its reply the
    /// other half to arrive: a script that runs is answered in time, and one whose caller
    /// was answered 503 never ran.
    pub(crate) fn deadline(&self, now_ms: i64, command_timeout: Duration) -> Option<i64> {
        if !self.measured.load(Ordering::Relaxed) {
            return None;
        }
        let budget = i64::try_from(millis(command_timeout / 2)).unwrap_or(i64::MAX);
        let deadline = now_ms
            .saturating_add(self.offset_ms.load(Ordering::Relaxed))
            .saturating_add(budget)
            .saturating_sub(self.uncertainty_ms.load(Ordering::Relaxed));
        Some(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_in_redis_time_less_the_uncertainty() {
        let c = RedisClock::default();
        assert_eq!(c.deadline(1_000, Duration::from_millis(250)), None);
        // Redis runs 5 s ahead; the reading took 10 ms.
        c.record(1_000, 1_010, 6_005);
        assert_eq!(c.deadline(2_000, Duration::from_millis(250)), Some(7120));
        // A slow reading does not replace a good one; a good one does.
        c.record(3_000, 3_400, 9_000);
        assert_eq!(c.deadline(2_000, Duration::from_millis(250)), Some(7120));
        c.record(3_000, 3_002, 8_001);
        assert_eq!(c.deadline(2_000, Duration::from_millis(250)), Some(7124));
    }
}
