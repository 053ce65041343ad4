//! Chaos profiles: how big the crowd is and how long a fault lasts. `CHAOS_PROFILE=smoke`
//! (the default, run by CI inside `cargo test`) keeps the whole binary well under 90 s on
//! two cores; `CHAOS_PROFILE=full` (what `loadtest/chaos/run.sh` runs) is bigger and
//! longer. `CHAOS_RUNS=n` runs each scenario n times in a row.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: &'static str,
    /// Users in the crowd; user `i` arrives at `crowd * i / users`.
    pub users: usize,
    /// Over how long the users arrive.
    pub crowd: Duration,
    /// How long a lasting fault (Redis down or frozen, store down or hung) lasts.
    pub fault: Duration,
    /// The campaign's `payment_window`: unpaid pre-orders expire this long after.
    pub payment_window: Duration,
    pub per_user_limit: u32,
    /// Each scenario runs this many times in a row.
    pub runs: usize,
    /// Bound on waiting until quiet (no pending pre-order, outbox drained) after a run.
    pub quiet_timeout: Duration,
    /// What a slow store takes per delivery (scenario `slow-store`).
    pub slow_delivery: Duration,
}

impl Profile {
    pub fn smoke() -> Profile {
        Profile {
            name: "smoke",
            users: 48,
            crowd: Duration::from_millis(2_500),
            fault: Duration::from_millis(1_000),
            payment_window: Duration::from_secs(2),
            per_user_limit: 2,
            runs: 1,
            quiet_timeout: Duration::from_secs(40),
            slow_delivery: Duration::from_millis(20),
        }
    }

    pub fn full() -> Profile {
        Profile {
            name: "full",
            users: 400,
            crowd: Duration::from_secs(8),
            fault: Duration::from_secs(3),
            payment_window: Duration::from_secs(3),
            per_user_limit: 2,
            runs: 1,
            quiet_timeout: Duration::from_secs(90),
            slow_delivery: Duration::from_millis(20),
        }
    }

    /// From `CHAOS_PROFILE` (default `smoke`) and `CHAOS_RUNS` (default 1).
    pub fn from_env() -> Profile {
        let name = std::env::var("CHAOS_PROFILE").unwrap_or_else(|_| "smoke".into());
        let mut p = match name.as_str() {
            "smoke" | "" => Profile::smoke(),
            "full" => Profile::full(),
            other => panic!("CHAOS_PROFILE={other:?}: use smoke or full"),
        };
        if let Ok(runs) = std::env::var("CHAOS_RUNS") {
            p.runs = runs
                .parse()
                .ok()
                .filter(|&n| n >= 1)
                .unwrap_or_else(|| panic!("CHAOS_RUNS={runs:?}: a count of at least 1"));
        }
        p
    }

    /// Units on sale per item: a bit less than the crowd wants, so some buys sell out.
    pub fn stock(&self) -> u64 {
        (self.users as u64 * u64::from(self.per_user_limit)) * 3 / 8
    }
}
