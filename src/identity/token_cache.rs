//! Verified tokens, remembered until they expire: a user's retries (the same token, as a
//! flash crowd sends them) skip the signature check — a SHA-256 of the token and a map
//! lookup instead of an HMAC, or an RSA / ECDSA verification.
//!
//! Keyed by SHA-256 of the whole token, so only a token that verified before can hit (a
//! forged one would need a hash collision). Each hit checks `exp` against the sale's clock,
//! as the verification does. Bounded: a full cache is emptied, not grown (a flood of distinct
//! valid tokens costs verification, never memory). Emptied when public keys are reloaded,
//! so a removed key stops working at once.

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::clock::Clock;

/// Most tokens remembered: about 100 bytes each.
const CAPACITY: usize = 100_000;

pub(super) struct TokenCache {
    map: DashMap<[u8; 32], Verified>,
    leeway_secs: u64,
    clock: Clock,
}

struct Verified {
    sub: String,
    exp: u64,
}

pub(super) fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    pub(super) fn new(leeway_secs: u64, clock: Clock) -> TokenCache {
        TokenCache {
            map: DashMap::new(),
            leeway_secs,
            clock,
        }
    }

    /// The subject of a token verified before and not expired since.
    pub(super) fn get(&self, key: &[u8; 32]) -> Option<String> {
        let hit = self.map.get(key)?;
        if self.clock.now_secs() > hit.exp.saturating_add(self.leeway_secs) {
            drop(hit);
            self.map.remove(key);
            return None;
        }
        Some(hit.sub.clone())
    }

    /// Remembers a token that just verified, with its `exp`.
    pub(super) fn insert(&self, key: [u8; 32], sub: &str, exp: u64) {
        if self.map.len() >= CAPACITY {
            self.map.clear();
        }
        self.map.insert(
            key,
            Verified {
                sub: sub.to_owned(),
                exp,
            },
        );
    }

    pub(super) fn clear(&self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use time::macros::datetime;

    #[test]
    fn a_hit_honours_exp_and_a_full_cache_starts_over() {
        let clock = Clock::fake(datetime!(2026-11-11 00:00 UTC));
        let c = TokenCache::new(5, clock.clone());
        let now = clock.now_secs();
        c.insert(key("a"), "alice", now + 60);
        c.insert(key("old"), "bob", now - 6);
        assert_eq!(c.get(&key("a")).as_deref(), Some("alice"));
        assert_eq!(c.get(&key("old")), None, "expired beyond the leeway");
        assert_eq!(c.get(&key("b")), None);
        // The leeway is inclusive; one second past it, the hit is gone.
        clock.advance(Duration::from_secs(65));
        assert_eq!(c.get(&key("a")).as_deref(), Some("alice"));
        clock.advance(Duration::from_secs(1));
        assert_eq!(c.get(&key("a")), None, "expired on the injected clock");
        c.insert(key("a"), "alice", clock.now_secs() + 60);
        for n in 0..CAPACITY {
            c.insert(key(&n.to_string()), "u", now + 60);
        }
        assert!(c.map.len() <= CAPACITY);
        c.clear();
        assert_eq!(c.get(&key("a")), None);
    }
}
