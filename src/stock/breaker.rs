//! The circuit breaker in front of Redis: after consecutive failures to reach Redis it
//! opens, and calls fail at once (503 in microseconds instead of a timeout each) until a
//! cool-down has passed; then one call goes through as a probe — success closes it,
//! failure opens it again.
//!
//! Only failures to reach Redis count (timeouts, I/O errors, no connection); an error
//! reply means Redis answered. One breaker per connection, i.e. per Redis node for a
//! single Redis or a Sentinel-managed one. On a Cluster the breaker stays closed: a node
//! down must fail only its own campaigns, which the per-call timeout already does.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::StoreError;

/// Consecutive failures that open the breaker.
const OPEN_AFTER: u32 = 3;
/// How long an open breaker refuses calls before letting a probe through.
const COOL_DOWN: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct Breaker {
    enabled: bool,
    epoch: Instant,
    failures: AtomicU32,
    /// While open: until when (ms since `epoch`) calls are refused; 0 when closed.
    open_until_ms: AtomicU64,
    /// One probe at a time once the cool-down is over.
    probing: AtomicBool,
}

/// What the breaker lets a call do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Closed: go ahead.
    Call,
    /// Half-open: go ahead as the probe; report the outcome.
    Probe,
    /// Open: fail at once.
    Refuse,
}

impl Breaker {
    pub(crate) fn new(enabled: bool) -> Breaker {
        Breaker {
            enabled,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        crate::clock::millis(self.epoch.elapsed())
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Relaxed) != 0
    }

    /// Closes the breaker: calls now go to another node (a failover was followed).
    pub(crate) fn reset(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.open_until_ms.store(0, Ordering::Relaxed);
    }

    pub(crate) fn permit(&self) -> Permit {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return Permit::Call;
        }
        if self.now_ms() >= until && !self.probing.swap(true, Ordering::AcqRel) {
            return Permit::Probe;
        }
        Permit::Refuse
    }

    /// Records a call's outcome; returns true when this call opened the breaker.
    pub(crate) fn record<T>(&self, permit: &Permit, result: &Result<T, StoreError>) -> bool {
        if *permit == Permit::Probe {
            self.probing.store(false, Ordering::Release);
        }
        let reached = match result {
            Ok(_) => true,
            Err(e) => !e.unreachable(),
        };
        if reached {
            self.failures.store(0, Ordering::Relaxed);
            self.open_until_ms.store(0, Ordering::Relaxed);
            return false;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.enabled && (failures >= OPEN_AFTER || *permit == Permit::Probe) {
            let was_open = self.is_open();
            let until = self.now_ms() + crate::clock::millis(COOL_DOWN);
            self.open_until_ms.store(until.max(1), Ordering::Relaxed);
            return !was_open;
        }
        false
    }
}

/// Whether an error means Redis could not be reached (as opposed to Redis answering).
#[cfg(test)]
mod tests {
    use super::*;

    /// A breaker whose clock has run a while, so "the cool-down ended at ms 1" is past.
    fn breaker(enabled: bool) -> Breaker {
        let mut b = Breaker::new(enabled);
        b.epoch -= Duration::from_secs(60);
        b
    }

    #[test]
    fn opens_after_consecutive_failures_and_closes_on_a_good_probe() {
        let b = breaker(true);
        let fail: Result<(), StoreError> = Err(StoreError::Timeout);
        let answered: Result<(), StoreError> = Err(StoreError::Protocol("odd reply".into()));
        for _ in 0..OPEN_AFTER - 1 {
            assert_eq!(b.permit(), Permit::Call);
            assert!(!b.record(&Permit::Call, &fail));
        }
        // An error reply is Redis answering: the count starts over.
        assert!(!b.record(&Permit::Call, &answered));
        for _ in 0..OPEN_AFTER - 1 {
            assert!(!b.record(&Permit::Call, &fail));
        }
        assert!(
            b.record(&Permit::Call, &fail),
            "the third in a row opens it"
        );
        assert_eq!(b.permit(), Permit::Refuse);
        b.open_until_ms.store(1, Ordering::Relaxed); // the cool-down is over
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.permit(), Permit::Refuse, "one probe at a time");
        b.record(&Permit::Probe, &Ok::<(), StoreError>(()));
        assert!(!b.is_open());
        assert_eq!(b.permit(), Permit::Call);
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_a_disabled_breaker_never_opens() {
        let b = breaker(true);
        b.open_until_ms.store(1, Ordering::Relaxed);
        assert_eq!(b.permit(), Permit::Probe);
        b.record(&Permit::Probe, &Err::<(), _>(StoreError::NotConnected));
        assert_eq!(b.permit(), Permit::Refuse);
        let off = breaker(false);
        for _ in 0..10 {
            off.record(&Permit::Call, &Err::<(), _>(StoreError::Timeout));
        }
        assert_eq!(off.permit(), Permit::Call);
    }
}
